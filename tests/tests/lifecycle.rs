//! Processes and threads coming and going around rseq-alloc, this test
//! binary's `#[global_allocator]`: `fork` from a multithreaded program and
//! while every cache is being drained, thousands of short-lived threads,
//! thread-local destructors that allocate, and a constructor that allocates
//! before `main`. The binary's tests run again in every other mode
//! (`mode_suites!`).

#![cfg(not(rseq_alloc_loom))]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use rseq_alloc::RseqAlloc;
use rseq_alloc_tests::stress::Rng;
use rseq_alloc_tests::{SetOnDrop, exclusive, scaled};

#[global_allocator]
static GLOBAL: RseqAlloc = RseqAlloc;

rseq_alloc_tests::mode_suites!();

/// `fork` and short-lived threads while another thread drains every CPU's
/// cache in a loop and a third allocates: the child of a fork taken
/// mid-drain, or while the allocating thread held a region (fallback mode),
/// must find every region usable (the fork handlers wait for both), so its
/// own trim empties them all; threads that come and go while their CPU is
/// stopped fall back to the central lists.
#[test]
fn fork_and_thread_churn_while_draining() {
    let _serial = exclusive();
    let stop = AtomicBool::new(false);
    let trims = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                rseq_alloc::trim();
                trims.fetch_add(1, Ordering::Relaxed);
            }
        });
        scope.spawn(|| {
            let mut rng = Rng::new(5);
            let mut keep = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                keep.push(vec![5u8; rng.below(3000)]);
                if keep.len() > 200 {
                    keep.clear();
                }
            }
        });
        let _stop_helpers = SetOnDrop(&stop);
        for round in 0..scaled(20) {
            let churn: usize = (0..8)
                .map(|t| {
                    std::thread::spawn(move || (0..500).map(|i| vec![t as u8; (i * 7) % 900].len()).sum::<usize>())
                })
                .map(|h| h.join().unwrap())
                .sum();
            assert!(churn > 0);
            rseq_alloc_tests::fork_and_check(&format!("round {round}"), || {
                let v: Vec<Vec<u8>> = (0..5000).map(|i| vec![1; i % 700]).collect();
                let from_thread =
                    rseq_alloc_tests::raw_thread(|| (0..5000).map(|i| vec![2u8; i % 300].len()).sum::<usize>());
                drop(v);
                rseq_alloc::trim();
                let left = rseq_alloc::stats().cpu_cached_bytes;
                assert_eq!(left, 0, "bytes left in the per-CPU caches after the child's trim");
                from_thread > 0
            });
        }
    });
    assert!(trims.load(Ordering::Relaxed) > 0);
}

#[test]
fn fork_child_of_a_multithreaded_program_allocates() {
    let _serial = exclusive();
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        for t in 0..4 {
            let stop = &stop;
            scope.spawn(move || {
                let mut rng = Rng::new(t);
                let mut keep = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    keep.push(vec![t as u8; rng.below(5000)]);
                    if keep.len() > 100 {
                        keep.clear();
                    }
                }
            });
        }
        let _stop_allocators = SetOnDrop(&stop);
        for _ in 0..scaled(5) {
            rseq_alloc_tests::fork_and_check("fork", || {
                let n = scaled(10_000);
                let v: Vec<Vec<u8>> = (0..n).map(|i| vec![1; i % 700]).collect();
                let from_thread =
                    rseq_alloc_tests::raw_thread(move || (0..n).map(|i| vec![2u8; i % 300].len()).sum::<usize>());
                v.len() == n && from_thread > 0
            });
        }
    });
}

#[test]
fn ten_thousand_short_threads_allocate() {
    let _serial = exclusive();
    let threads = scaled(10_000);
    let before = rseq_alloc::stats().mapped_bytes;
    for _ in 0..threads.div_ceil(50) {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                std::thread::spawn(move || {
                    let blocks: Vec<Vec<u8>> = (0..20).map(|j| vec![i as u8; j * 37]).collect();
                    blocks.iter().map(|b| b.len()).sum::<usize>()
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().unwrap(), 37 * 190);
        }
    }
    let grown = rseq_alloc::stats().mapped_bytes.saturating_sub(before);
    assert!(grown < 64 << 20, "mapped memory grew by {grown} bytes over {threads} threads");
}

struct AllocatesOnDrop(Vec<u8>);

impl Drop for AllocatesOnDrop {
    fn drop(&mut self) {
        let copy: Vec<u8> = self.0.iter().map(|b| b.wrapping_add(1)).collect();
        let boxed = Box::new(copy);
        assert_eq!(boxed.len(), self.0.len());
        DESTRUCTORS_RAN.fetch_add(1, Ordering::Relaxed);
    }
}

static DESTRUCTORS_RAN: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static TLS_VALUE: std::cell::RefCell<Option<AllocatesOnDrop>> = const { std::cell::RefCell::new(None) };
}

#[test]
fn tls_destructors_allocate_and_free() {
    let before = DESTRUCTORS_RAN.load(Ordering::Relaxed);
    let handles: Vec<_> = (0..32)
        .map(|i| {
            std::thread::spawn(move || {
                TLS_VALUE.with(|v| *v.borrow_mut() = Some(AllocatesOnDrop(vec![i as u8; 1000 + i])));
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(DESTRUCTORS_RAN.load(Ordering::Relaxed) - before, 32);
}

// A constructor that allocates before `main` (and before the test harness):
// initialisation must be safe there.
static BEFORE_MAIN: AtomicUsize = AtomicUsize::new(0);

extern "C" fn allocate_before_main() {
    let v: Vec<u64> = (0..1000).collect();
    let s = format!("{}", v.iter().sum::<u64>());
    BEFORE_MAIN.store(s.parse().unwrap(), Ordering::Release);
}

#[used]
#[unsafe(link_section = ".init_array")]
static CONSTRUCTOR: extern "C" fn() = allocate_before_main;

#[test]
fn allocation_before_main_worked() {
    assert_eq!(BEFORE_MAIN.load(Ordering::Acquire), 499_500);
}
