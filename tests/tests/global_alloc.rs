#![cfg(not(rseq_alloc_loom))]
//! rseq-alloc as the `#[global_allocator]` of this whole test binary (the
//! test harness included), under migration and signals, in whichever mode
//! the process runs; `suite_*` tests run the file again with our own rseq
//! registration, with the fallback forced, and under valgrind.

use std::alloc::{GlobalAlloc, Layout};
use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use rseq_alloc::{Mode, RseqAlloc};
use rseq_alloc_tests::modes;
use rseq_alloc_tests::stress::{self, Conditions, Rng};
use rseq_alloc_tests::{SetOnDrop, exclusive, scaled};

#[global_allocator]
static GLOBAL: RseqAlloc = RseqAlloc;

rseq_alloc_tests::mode_suites!();

// ---------------------------------------------------------------------------
// The stress test.

/// A live block: where, its layout, and the seed of the pattern written in it.
#[derive(Clone, Copy)]
struct Block {
    ptr: usize,
    size: usize,
    align: usize,
    seed: u64,
}

impl Block {
    fn new(rng: &mut Rng) -> Block {
        // Mostly small, some medium, a few huge; mostly 16-aligned.
        let size = match rng.below(1000) {
            0..=899 => rng.below(512) + 1,
            900..=979 => rng.below(32 * 1024) + 1,
            980..=997 => rng.below(1 << 20) + 1,
            _ => rng.below(4 << 20) + 1,
        };
        let align = match rng.below(20) {
            0 => 1 << (5 + rng.below(8)),  // 32 B to 4 KiB
            1 => 1 << (13 + rng.below(8)), // 8 KiB to 1 MiB
            2 => 8,
            _ => 16,
        };
        let seed = rng.next_u64();
        let layout = Layout::from_size_align(size, align).unwrap();
        // SAFETY: a non-zero-size layout.
        let ptr = unsafe { GLOBAL.alloc(layout) };
        assert!(!ptr.is_null(), "allocation of {size} bytes aligned {align} failed");
        assert_eq!(ptr as usize % align, 0, "{size} bytes not aligned to {align}");
        let block = Block { ptr: ptr as usize, size, align, seed };
        block.fill();
        block
    }

    /// The pattern: a word derived from the seed and the offset, at the
    /// start, the end and every 4 KiB (enough to catch two blocks overlapping).
    fn positions(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.size).step_by(4096).chain(self.size.saturating_sub(8)..self.size)
    }

    fn byte_at(&self, offset: usize) -> u8 {
        (self.seed.wrapping_mul(offset as u64 + 1) >> 24) as u8
    }

    fn fill(&self) {
        for offset in self.positions() {
            // SAFETY: offset < size, inside the live block.
            unsafe { *((self.ptr + offset) as *mut u8) = self.byte_at(offset) };
        }
    }

    fn check_and_free(self) {
        for offset in self.positions() {
            // SAFETY: as in `fill`.
            let got = unsafe { *((self.ptr + offset) as *const u8) };
            assert_eq!(got, self.byte_at(offset), "block {:#x}+{offset} ({} bytes) overwritten", self.ptr, self.size);
        }
        // SAFETY: allocated with this layout, freed once.
        unsafe { GLOBAL.dealloc(self.ptr as *mut u8, Layout::from_size_align(self.size, self.align).unwrap()) };
    }
}

/// Every live block's address, sharded: inserting one that is already there
/// is a block handed out twice.
struct LiveSet {
    shards: Vec<Mutex<HashSet<usize>>>,
    duplicates: AtomicU64,
}

impl LiveSet {
    fn new() -> LiveSet {
        LiveSet { shards: (0..64).map(|_| Mutex::new(HashSet::new())).collect(), duplicates: AtomicU64::new(0) }
    }

    fn shard(&self, ptr: usize) -> &Mutex<HashSet<usize>> {
        &self.shards[(ptr >> 4) % self.shards.len()]
    }

    fn insert(&self, ptr: usize) {
        if !self.shard(ptr).lock().unwrap().insert(ptr) {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn remove(&self, ptr: usize) {
        assert!(self.shard(ptr).lock().unwrap().remove(&ptr), "freeing {ptr:#x}, which is not live");
    }
}

/// Blocks handed between threads: a thread swaps one of its blocks in and
/// frees whatever it got out, so most blocks die on another thread (and CPU).
struct Exchange {
    slots: Vec<AtomicPtr<Block>>,
}

impl Exchange {
    fn new(n: usize) -> Exchange {
        Exchange { slots: (0..n).map(|_| AtomicPtr::new(std::ptr::null_mut())).collect() }
    }

    fn swap(&self, index: usize, block: Option<Block>) -> Option<Block> {
        let new = block.map_or(std::ptr::null_mut(), |b| Box::into_raw(Box::new(b)));
        let old = self.slots[index % self.slots.len()].swap(new, Ordering::AcqRel);
        // SAFETY: every non-null slot value came from Box::into_raw above.
        (!old.is_null()).then(|| *unsafe { Box::from_raw(old) })
    }
}

/// What signal handlers allocate, through `rseq_alloc::signal_safe` (the
/// only allocation a handler may do): workers use this class too, so the
/// handlers' blocks are interleaved with theirs in the same caches.
const HANDLER_SIZE: usize = 200;
static HANDLER_ALLOCS: AtomicU64 = AtomicU64::new(0);
static HANDLER_MISSES: AtomicU64 = AtomicU64::new(0);
/// Blocks a handler allocated but could not give back on the fast path
/// (its CPU's cache was full or stopped): the next handler that misses
/// takes one, and the test frees what is left. A block that finds no room
/// here stays allocated (counted: the test reports it).
static HANDLER_STASH: [AtomicUsize; 64] = [const { AtomicUsize::new(0) }; 64];
static HANDLER_LEAKS: AtomicU64 = AtomicU64::new(0);

fn handler_layout() -> Layout {
    Layout::from_size_align(HANDLER_SIZE, 8).unwrap()
}

fn allocate_in_signal_handler() {
    let layout = handler_layout();
    let mut p = rseq_alloc::signal_safe::alloc(layout);
    if p.is_null() {
        HANDLER_MISSES.fetch_add(1, Ordering::Relaxed);
        let Some(stashed) = HANDLER_STASH.iter().map(|s| s.swap(0, Ordering::Acquire)).find(|&b| b != 0) else {
            return;
        };
        p = stashed as *mut u8;
    }
    // SAFETY: `p` is a live block of HANDLER_SIZE bytes, this handler's alone.
    unsafe { p.write_bytes(0x5a, HANDLER_SIZE) };
    HANDLER_ALLOCS.fetch_add(1, Ordering::Relaxed);
    // SAFETY: a block of ours for this layout, given up if this returns true.
    if unsafe { rseq_alloc::signal_safe::dealloc(p, layout) } {
        return;
    }
    let stashed =
        HANDLER_STASH.iter().any(|s| s.compare_exchange(0, p as usize, Ordering::Release, Ordering::Relaxed).is_ok());
    if !stashed {
        HANDLER_LEAKS.fetch_add(1, Ordering::Relaxed);
    }
}

/// Frees the blocks handlers left in the stash.
fn free_handler_stash() {
    for slot in &HANDLER_STASH {
        let p = slot.swap(0, Ordering::Acquire);
        if p != 0 {
            // SAFETY: a stashed block is live, of this layout, and now ours.
            unsafe { GLOBAL.dealloc(p as *mut u8, handler_layout()) };
        }
    }
}

/// Puts a few free objects of the handler's class in every CPU's cache, so
/// that handlers find some on the fast path.
fn warm_handler_class() {
    let layout = handler_layout();
    std::thread::spawn(move || {
        for cpu in stress::allowed_cpus() {
            stress::pin(0, &[cpu]);
            // SAFETY: valid layout; blocks freed right after.
            let blocks: Vec<*mut u8> = (0..16).map(|_| unsafe { GLOBAL.alloc(layout) }).collect();
            for p in blocks {
                // SAFETY: allocated just above with this layout.
                unsafe { GLOBAL.dealloc(p, layout) };
            }
        }
    })
    .join()
    .unwrap();
}

/// `signal_safe` never leaves the fast path: once `trim` has emptied every
/// CPU's cache it fails where `alloc` refills (slow path), and after that
/// refill it is served; without a fast path (fallback, hardened) it always
/// fails. In children (no other test may refill this CPU's cache in
/// between), pinned to one CPU.
#[test]
fn suite_signal_safe_allocation_stays_on_the_fast_path() {
    modes::child_passes("signal_safe_child", &[("RSEQ_TEST_SIGNAL_SAFE_CHILD", "1")]);
    modes::child_passes(
        "signal_safe_child",
        &[("RSEQ_TEST_SIGNAL_SAFE_CHILD", "1"), ("RSEQ_ALLOC_FORCE_FALLBACK", "1")],
    );
    modes::child_passes("signal_safe_child", &[("RSEQ_TEST_SIGNAL_SAFE_CHILD", "1"), ("RSEQ_ALLOC_HARDENED", "1")]);
}

#[test]
fn signal_safe_child() {
    if std::env::var_os("RSEQ_TEST_SIGNAL_SAFE_CHILD").is_none() {
        return;
    }
    stress::pin_to_current_cpu().expect("pin to the current CPU");
    let layout = handler_layout();
    // SAFETY: valid layout; every block is freed once with it.
    unsafe {
        GLOBAL.dealloc(GLOBAL.alloc(layout), layout);
        rseq_alloc::trim();
        let after_trim = rseq_alloc::signal_safe::alloc(layout);
        let refilled = GLOBAL.alloc(layout);
        let after_refill = rseq_alloc::signal_safe::alloc(layout);
        let gave_back = !after_refill.is_null() && rseq_alloc::signal_safe::dealloc(after_refill, layout);
        let stats = rseq_alloc::stats();
        eprintln!(
            "signal_safe_child: mode {}{}: after trim {after_trim:?}, after a refill {after_refill:?} (given back: \
             {gave_back})",
            stats.mode,
            if stats.hardened { ", hardened" } else { "" }
        );
        assert!(after_trim.is_null(), "served from an empty cache");
        assert!(!refilled.is_null());
        GLOBAL.dealloc(refilled, layout);
        if matches!(stats.mode, Mode::RseqGlibcArea | Mode::RseqOwnArea) && !stats.hardened {
            assert!(!after_refill.is_null(), "the fast path did not serve a refilled cache");
            assert!(gave_back, "the fast path did not take a block back");
        } else {
            assert!(after_refill.is_null(), "served without a fast path");
        }
    }
}

/// Huge blocks grown by `realloc` (so their mappings move, and their old
/// addresses free up) while other threads map, cache and unmap huge blocks
/// of their own: a segment mapped at an address another segment just left
/// must stay ours (else its free aborts as an invalid pointer), and every
/// block keeps its contents.
#[test]
fn huge_blocks_moving_while_others_map_and_unmap() {
    let threads = stress::default_threads();
    let rounds = scaled(200);
    std::thread::scope(|scope| {
        for t in 0..threads {
            scope.spawn(move || {
                let mut rng = Rng::new(t as u64 + 77);
                for round in 0..rounds {
                    let align = 4096 << rng.below(8);
                    let mut size = (1 + rng.below(4)) << 20;
                    let stamp = (t * 131 + round) as u8;
                    // SAFETY: valid layouts; every block is used inside its size and freed with its layout.
                    unsafe {
                        let mut p = GLOBAL.alloc(Layout::from_size_align(size, align).unwrap());
                        assert!(!p.is_null());
                        p.write(stamp);
                        for _ in 0..2 {
                            let grown = size * 2;
                            p = GLOBAL.realloc(p, Layout::from_size_align(size, align).unwrap(), grown);
                            assert!(!p.is_null());
                            assert_eq!(p.read(), stamp, "contents lost in a move");
                            p.add(grown - 1).write(stamp);
                            size = grown;
                        }
                        GLOBAL.dealloc(p, Layout::from_size_align(size, align).unwrap());
                    }
                }
            });
        }
    });
}

/// Random blocks under migrations and a signal storm whose handlers
/// allocate (with `signal_safe`, so their sections interrupt the workers').
#[test]
fn stress_random_blocks_freed_across_threads_and_cpus() {
    stress_with(false);
}

/// The same stress while another thread trims all along, draining every
/// CPU's cache to the central lists under the workers' (and the handlers')
/// feet.
#[test]
fn stress_while_every_cache_is_drained_throughout() {
    stress_with(true);
}

fn stress_with(drainer: bool) {
    let _serial = exclusive();
    warm_handler_class();
    let (allocs_before, misses_before) =
        (HANDLER_ALLOCS.load(Ordering::Relaxed), HANDLER_MISSES.load(Ordering::Relaxed));
    let live = LiveSet::new();
    let exchange = Exchange::new(256);
    let iterations = scaled(30_000);
    let total = AtomicUsize::new(0);
    stress::set_signal_hook(Some(allocate_in_signal_handler as fn()));
    let done = AtomicBool::new(false);
    let trims = AtomicUsize::new(0);
    let drained_before = rseq_alloc::stats().drained_objects;
    let report = std::thread::scope(|scope| {
        if drainer {
            scope.spawn(|| {
                while !done.load(Ordering::Acquire) {
                    rseq_alloc::trim();
                    trims.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let _stop_drainer = SetOnDrop(&done);
        stress_workers(&live, &exchange, iterations, &total)
    });
    stress::set_signal_hook(None);
    free_handler_stash();
    for i in 0..256 {
        if let Some(block) = exchange.swap(i, None) {
            live.remove(block.ptr);
            block.check_and_free();
        }
    }
    let stats = rseq_alloc::stats();
    let handler_allocs = HANDLER_ALLOCS.load(Ordering::Relaxed) - allocs_before;
    let handler_misses = HANDLER_MISSES.load(Ordering::Relaxed) - misses_before;
    eprintln!(
        "{report:?}; {} blocks; {handler_allocs} handler allocations ({handler_misses} misses, {} blocks left \
         allocated); {} trims draining {} objects; mode {}; aborts {}; mapped {} KiB",
        total.load(Ordering::Relaxed),
        HANDLER_LEAKS.load(Ordering::Relaxed),
        trims.load(Ordering::Relaxed),
        stats.drained_objects - drained_before,
        stats.mode,
        stats.rseq_aborts,
        stats.mapped_bytes >> 10
    );
    assert_eq!(live.duplicates.load(Ordering::Relaxed), 0, "a live block was handed out twice");
    assert!(live.shards.iter().all(|s| s.lock().unwrap().is_empty()));
    let fast_path = matches!(stats.mode, Mode::RseqGlibcArea | Mode::RseqOwnArea) && !stats.hardened;
    if fast_path && report.signals_sent > 0 {
        assert!(handler_allocs > 0, "no handler was served on the fast path");
    }
    if drainer {
        assert!(trims.load(Ordering::Relaxed) > 0);
        assert!(stats.drained_objects > drained_before, "the drains moved nothing");
    }
}

/// The stress workers: random blocks, a third handed to other threads
/// through `exchange`, every one checked at free.
fn stress_workers(live: &LiveSet, exchange: &Exchange, iterations: usize, total: &AtomicUsize) -> stress::Report {
    stress::run(stress::default_threads(), Conditions::HOSTILE, |worker| {
        let mut rng = Rng::new(worker.index as u64 * 7919 + 1);
        let mut mine: Vec<Block> = Vec::new();
        let mut i = 0;
        while worker.keep_going(i, iterations) {
            i += 1;
            let block = Block::new(&mut rng);
            live.insert(block.ptr);
            match rng.below(3) {
                0 => {
                    if let Some(other) = exchange.swap(rng.below(1 << 20), Some(block)) {
                        live.remove(other.ptr);
                        other.check_and_free();
                    }
                }
                _ => mine.push(block),
            }
            if mine.len() > 64 || (rng.below(8) == 0 && !mine.is_empty()) {
                let victim = mine.swap_remove(rng.below(mine.len()));
                live.remove(victim.ptr);
                victim.check_and_free();
            }
        }
        for block in mine {
            live.remove(block.ptr);
            block.check_and_free();
        }
        total.fetch_add(i, Ordering::Relaxed);
    })
}

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

// ---------------------------------------------------------------------------
// realloc, zeroing, alignment.

#[test]
fn realloc_keeps_contents_across_every_kind_of_block() {
    let mut v: Vec<u8> = Vec::new();
    let mut expected_len = 0;
    for step in 0..26 {
        let target = 1usize << step;
        while v.len() < target {
            v.push((v.len() % 251) as u8);
        }
        expected_len = v.len();
        assert!(v.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8), "contents lost at {target}");
    }
    assert_eq!(v.len(), expected_len);
    v.truncate(100);
    v.shrink_to_fit();
    assert!(v.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
}

/// C's `realloc` of a buffer that keeps doubling (what `compare`'s
/// `realloc` workload does): past 4 KiB the block becomes a medium span and
/// grows in place over the free pages after it, past 256 KiB a huge block
/// that grows by `mremap`, so it moves at most twice on its way to 8 MiB
/// after 4 KiB, its contents intact, and `free_sized` with its last size
/// accepts it. Rust's `realloc` keeps
/// small blocks small, since `dealloc` trusts the layout's class. In a
/// child, so that no other test's spans take the pages the buffer grows
/// over.
#[test]
fn suite_c_realloc_promotes_a_growing_buffer() {
    modes::child_passes("c_realloc_child", &[("RSEQ_TEST_C_REALLOC_CHILD", "1")]);
}

#[test]
fn c_realloc_child() {
    use rseq_alloc::c_api;
    if std::env::var_os("RSEQ_TEST_C_REALLOC_CHILD").is_none() {
        return;
    }
    // SAFETY: every block is used within its size and freed once.
    unsafe {
        let mut p = c_api::malloc(16).cast::<u8>();
        p.write(0xab);
        let mut size = 16;
        let mut moves_from_4k = 0;
        while size < 8 << 20 {
            size *= 2;
            let q = c_api::realloc(p.cast(), size).cast::<u8>();
            assert!(!q.is_null());
            // Past 2 MiB the block is huge and grows by `mremap`, which moves
            // it (without copying: see the test below) whenever the address
            // space above it is taken, as the process's layout decides.
            if q != p && size > 4096 && size <= 2 << 20 {
                moves_from_4k += 1;
            }
            assert_eq!(q.read(), 0xab, "contents lost at {size}");
            q.add(size - 1).write(1);
            p = q;
        }
        eprintln!("c_realloc_child: moved {moves_from_4k} times from 4 KiB to 2 MiB");
        // A medium span grows in place; the one move is the promotion to a
        // huge block. Hardened mode moves every small block it
        // reallocates, on purpose.
        if !rseq_alloc::stats().hardened {
            assert!(moves_from_4k <= 1, "moved {moves_from_4k} times from 4 KiB to 2 MiB");
        }
        c_api::free_sized(p.cast(), size);
        let rust = Layout::from_size_align(8, 8).unwrap();
        let small = GLOBAL.alloc(rust);
        let grown = GLOBAL.realloc(small, rust, 8192);
        assert!(c_api::malloc_usable_size(grown.cast()) < 65536, "a Rust realloc made a small block medium");
        GLOBAL.dealloc(grown, Layout::from_size_align(8192, 8).unwrap());
    }
}

#[test]
fn small_realloc_within_a_class_stays_in_place_and_huge_growth_does_not_copy() {
    let layout = Layout::from_size_align(100, 8).unwrap();
    // SAFETY: valid layouts throughout; every block is freed with its final layout.
    unsafe {
        let p = GLOBAL.alloc(layout);
        let q = GLOBAL.realloc(p, layout, 110);
        // Hardened mode always moves small blocks (a stale pointer then hits poison).
        if !rseq_alloc::stats().hardened {
            assert_eq!(p, q, "100 and 110 bytes share a class");
        }
        let r = GLOBAL.realloc(q, Layout::from_size_align(110, 8).unwrap(), 1000);
        assert_ne!(r, q);
        GLOBAL.dealloc(r, Layout::from_size_align(1000, 8).unwrap());

        // A huge block grows by mremap: 64 MiB of pattern survives growth to 1 GiB.
        let mut size = 64 << 20;
        let mut p = GLOBAL.alloc(Layout::from_size_align(size, 16).unwrap());
        for offset in (0..size).step_by(4096) {
            *p.add(offset) = (offset >> 12) as u8;
        }
        while size < 1 << 30 {
            let grown = size * 2;
            p = GLOBAL.realloc(p, Layout::from_size_align(size, 16).unwrap(), grown);
            assert!(!p.is_null());
            size = grown;
        }
        for offset in (0..64 << 20).step_by(4096) {
            assert_eq!(*p.add(offset), (offset >> 12) as u8);
        }
        let stats = rseq_alloc::stats();
        assert!(stats.process_resident_bytes < 512 << 20, "growth touched the new pages: it copied");
        GLOBAL.dealloc(p, Layout::from_size_align(size, 16).unwrap());
    }
}

#[test]
fn alloc_zeroed_is_zero_even_on_reused_memory() {
    // The last two: a cached 9 MiB mapping, written all over, serves 2 MiB.
    for size in [1, 24, 100, 4000, 30_000, 40_000, 500_000, 3 << 20, 9 << 20, 2 << 20] {
        let layout = Layout::from_size_align(size, 16).unwrap();
        // SAFETY: valid layouts; blocks freed with them.
        unsafe {
            let dirty = GLOBAL.alloc(layout);
            dirty.write_bytes(0xff, size);
            GLOBAL.dealloc(dirty, layout);
            for _ in 0..3 {
                let p = GLOBAL.alloc_zeroed(layout);
                assert!(std::slice::from_raw_parts(p, size).iter().all(|&b| b == 0), "{size} bytes not zeroed");
                p.write_bytes(0xee, size);
                GLOBAL.dealloc(p, layout);
            }
        }
    }
}

#[test]
fn every_power_of_two_alignment_up_to_2_mib() {
    for shift in 0..=21 {
        let align = 1usize << shift;
        for size in [1, align / 2 + 1, align, 3 * align, 100_000] {
            let layout = Layout::from_size_align(size.max(1), align).unwrap();
            // SAFETY: valid layout, freed with it.
            unsafe {
                let p = GLOBAL.alloc(layout);
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0, "size {size} align {align}");
                p.write_bytes(1, layout.size());
                GLOBAL.dealloc(p, layout);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// fork, thread churn, TLS destructors.

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

#[test]
fn stats_report_traffic_and_the_mode() {
    let blocks: Vec<Vec<u8>> = (0..10_000).map(|i| vec![0; 16 + i % 64]).collect();
    drop(blocks);
    let s = rseq_alloc::stats();
    assert_ne!(s.mode, Mode::Undecided);
    assert!(s.mapped_bytes > 0);
    assert!(s.process_resident_bytes > 0, "resident size not read from /proc/self/statm");
    assert!(s.classes.iter().map(|c| c.central_taken).sum::<u64>() > 0);
    assert!(s.classes.iter().map(|c| c.alloc_misses).sum::<u64>() > 0);
}

/// Run as a child by the next test: allocates with hit counting on.
#[test]
fn exercise_for_stats_child() {
    if std::env::var_os("RSEQ_TEST_STATS_CHILD").is_none() {
        return;
    }
    let blocks: Vec<Box<[u8; 48]>> = (0..100_000).map(|_| Box::new([1; 48])).collect();
    drop(blocks);
    let class = rseq_alloc::stats().classes.iter().find(|c| c.size == 48).copied().unwrap();
    assert!(class.alloc_hits > 50_000 && class.free_hits > 50_000, "{class:?}");
}

#[test]
fn suite_stats_at_exit_name_the_mode_and_count_hits() {
    for (force, mode) in [(false, "rseq with"), (true, "fallback")] {
        let mut command = std::process::Command::new(std::env::current_exe().unwrap());
        command.args(["--exact", "exercise_for_stats_child", "--test-threads", "1"]);
        command.env("RSEQ_ALLOC_STATS", "1").env("RSEQ_TEST_STATS_CHILD", "1");
        if force {
            command.env("RSEQ_ALLOC_FORCE_FALLBACK", "1");
        }
        let output = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "child failed:\n{stderr}");
        let first = stderr.lines().find(|l| l.starts_with("rseq-alloc:")).unwrap_or("");
        assert!(first.starts_with(&format!("rseq-alloc: mode: {mode}")), "first line: {first}\n{stderr}");
        let row = stderr
            .lines()
            .find(|l| l.split_whitespace().nth(2) == Some("48"))
            .unwrap_or_else(|| panic!("no row for 48-byte objects:\n{stderr}"));
        let hits: u64 = row.split_whitespace().nth(3).unwrap().parse().unwrap();
        assert!(hits > 50_000, "{row}");
    }
}

/// A write into a freed block cannot redirect an allocation: no freelist
/// link lives in object memory (the per-CPU caches are arrays of pointers
/// in their own mappings, the central lists keep bitmaps in segment headers).
/// Overwrite freed blocks with a pointer to memory of the test's, as an
/// attacker with a use-after-free would, then allocate: nothing of ours may
/// come back. (Hardened mode reports the write instead: not tested here.)
#[test]
fn writes_into_freed_blocks_cannot_redirect_allocations() {
    if rseq_alloc::stats().hardened {
        return;
    }
    let mut target = [0u8; 4096];
    let target_range = target.as_mut_ptr() as usize..target.as_mut_ptr() as usize + target.len();
    // Small classes whose per-CPU caches hold all 32 victims, so their spans
    // stay mapped (a medium span or a drained span may go back to the OS,
    // and a write there would be a plain fault).
    for size in [16usize, 48, 256, 1024] {
        let layout = Layout::from_size_align(size, 16).unwrap();
        // SAFETY: valid layouts; every block is freed once, with its layout;
        // the writes into freed blocks are the point of the test (they stay
        // mapped, in the CPU's cache, so the writes are not faults).
        unsafe {
            let victims: Vec<*mut u8> = (0..32).map(|_| GLOBAL.alloc(layout)).collect();
            for &v in &victims {
                GLOBAL.dealloc(v, layout);
            }
            for &v in &victims {
                let words = (size / 8).min(64);
                for i in 0..words {
                    v.cast::<usize>().add(i).write_volatile(target_range.start + 64);
                }
            }
            let fresh: Vec<*mut u8> = (0..256).map(|_| GLOBAL.alloc(layout)).collect();
            for &f in &fresh {
                assert!(!target_range.contains(&(f as usize)), "{size}: allocation redirected to {f:p}");
            }
            for f in fresh {
                GLOBAL.dealloc(f, layout);
            }
        }
    }
    assert!(target.iter().all(|&b| b == 0), "the target was written through a forged link");
}

/// Without hardened mode, a double free is caught when the object reaches
/// the central list. In a child pinned to one CPU: fill the cache of a
/// class to its capacity (both read from the statistics, since capacity
/// adapts at every miss), free the victim, which goes to the central list
/// with the drain it starts, fill the cache again and free the victim
/// again: the central list must refuse it, naming it.
#[test]
fn suite_double_free_is_caught_when_the_cache_drains() {
    let output = modes::run_test_in_child("double_free_child", &[("RSEQ_TEST_DOUBLE_FREE_CHILD", "1")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(output.status.signal(), Some(libc::SIGABRT), "{}\n{stderr}", output.status);
    let victim = stderr.lines().find_map(|l| l.strip_prefix("victim=")).expect("victim named");
    assert!(stderr.contains(&format!("rseq-alloc: free(): double free of {victim}\n")), "{stderr}");
}

#[test]
fn double_free_child() {
    if std::env::var_os("RSEQ_TEST_DOUBLE_FREE_CHILD").is_none() {
        return;
    }
    stress::pin_to_current_cpu().expect("pin to the current CPU");
    let layout = Layout::from_size_align(3000, 8).unwrap();
    let class = rseq_alloc::stats().classes.iter().position(|c| c.size >= 3000).unwrap();
    let class_stats = || rseq_alloc::stats().classes[class];
    // SAFETY: valid layouts; blocks are freed with them (the victim twice: the point).
    unsafe {
        let victim = RseqAlloc.alloc(layout);
        let blocks: Vec<*mut u8> = (0..400).map(|_| RseqAlloc.alloc(layout)).collect();
        let mut next = blocks.into_iter();
        let mut fill_cache = || {
            while class_stats().cpu_cached < class_stats().cpu_capacity {
                RseqAlloc.dealloc(next.next().expect("enough blocks"), layout);
            }
        };
        fill_cache();
        let drains = class_stats().free_misses;
        RseqAlloc.dealloc(victim, layout);
        assert_eq!(class_stats().free_misses, drains + 1, "the victim went to the central list with a drain");
        fill_cache();
        eprintln!("victim={victim:p}");
        RseqAlloc.dealloc(victim, layout);
    }
    panic!("the double free was not caught");
}

/// Free everything, trim, and the process's resident memory (from
/// `/proc/self/statm`) falls back to near where it started: in a child, so
/// that no other test's memory is counted.
#[test]
fn suite_trim_gives_memory_back() {
    modes::child_passes("trim_child", &[("RSEQ_TEST_TRIM_CHILD", "1")]);
}

fn resident_kib() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 4
}

#[test]
fn trim_child() {
    if std::env::var_os("RSEQ_TEST_TRIM_CHILD").is_none() {
        return;
    }
    let start = resident_kib();
    let mut blocks: Vec<Box<[u8; 256]>> = Vec::with_capacity(1 << 20);
    for i in 0..(256 << 20) / 256 {
        blocks.push(Box::new([i as u8; 256]));
    }
    let mixed: Vec<Vec<u8>> = (0..2000).map(|i| vec![3u8; 1 + (i * 997) % 200_000]).collect();
    let peak = resident_kib();
    drop(blocks);
    drop(mixed);
    let freed = resident_kib();
    let released = rseq_alloc::trim();
    let after = resident_kib();
    let stats = rseq_alloc::stats();
    eprintln!(
        "trim_child: resident {start} KiB at start, {peak} at peak, {freed} after free, {after} after trim ({released} bytes given back; {} KiB still in free pages)",
        stats.free_page_bytes >> 10
    );
    assert!(peak - start > 200 << 10, "the blocks were not resident");
    assert!(after - start.min(after) < (peak - start) / 20, "trim left over 5% of the peak resident");
    assert!(released > 0 && stats.released_bytes >= released);
}

/// Huge blocks of varied sizes, allocated, touched and freed in a loop (the
/// `large` workload's pattern), settle on one cached mapping that grows by
/// `mremap` when a request needs more: resident memory stays near one
/// block's touched pages instead of one mapping's per size. In a child, so
/// that no other test's blocks are counted.
#[test]
fn suite_huge_blocks_of_varied_sizes_reuse_one_mapping() {
    modes::child_passes("huge_reuse_child", &[("RSEQ_TEST_HUGE_REUSE_CHILD", "1")]);
}

#[test]
fn huge_reuse_child() {
    if std::env::var_os("RSEQ_TEST_HUGE_REUSE_CHILD").is_none() {
        return;
    }
    let start = resident_kib();
    let mut rng = Rng::new(9);
    for _ in 0..2000 {
        let size = (1 + rng.below(8)) << 20;
        let layout = Layout::from_size_align(size, 16).unwrap();
        // SAFETY: a valid layout; the block is written inside its size and freed with it.
        unsafe {
            let p = GLOBAL.alloc(layout);
            assert!(!p.is_null());
            for offset in (0..size).step_by(64 << 10) {
                p.add(offset).write(offset as u8);
            }
            GLOBAL.dealloc(p, layout);
        }
    }
    let grown = resident_kib().saturating_sub(start);
    let cached = rseq_alloc::stats().huge_cached_bytes;
    eprintln!("huge_reuse_child: resident grew by {grown} KiB, {} KiB cached", cached >> 10);
    assert!(cached <= (8 << 20) + (64 << 10), "more than one mapping kept: {cached} bytes");
    // One 8 MiB block touched every 64 KiB is 128 pages (512 KiB).
    assert!(grown < 1536, "resident grew by {grown} KiB");
}

/// Without any call to `trim`: a CPU whose thread went quiet has its cache
/// drained, and free pages go back to the OS after the decay period, paid
/// for by another thread's slow paths. In a child, with a 50 ms period.
#[test]
fn suite_upkeep_drains_idle_cpus_and_decays_free_pages() {
    if stress::allowed_cpus().len() < 2 {
        eprintln!("one CPU: skipped");
        return;
    }
    modes::child_passes("upkeep_child", &[("RSEQ_TEST_UPKEEP_CHILD", "1"), ("RSEQ_ALLOC_DECAY_MS", "50")]);
}

#[test]
fn upkeep_child() {
    if std::env::var_os("RSEQ_TEST_UPKEEP_CHILD").is_none() {
        return;
    }
    let cpus = stress::allowed_cpus();
    // SAFETY: no preconditions.
    let tid = unsafe { libc::gettid() };
    assert!(stress::pin(tid, &cpus[1..2]));
    // A thread on the other CPU fills its cache, then waits, idle.
    let (quiet_tx, quiet_rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let idle = std::thread::spawn(move || {
        // SAFETY: no preconditions.
        assert!(stress::pin(unsafe { libc::gettid() }, &cpus[0..1]));
        let blocks: Vec<Box<[u8; 64]>> = (0..200).map(|i| Box::new([i as u8; 64])).collect();
        drop(blocks);
        quiet_tx.send(()).unwrap();
        done_rx.recv().unwrap();
    });
    quiet_rx.recv().unwrap();
    // Memory freed into pages: 64 MiB of 256-byte blocks.
    let blocks: Vec<Box<[u8; 256]>> = (0..(64 << 20) / 256).map(|i| Box::new([i as u8; 256])).collect();
    drop(blocks);
    let before = rseq_alloc::stats();
    // Slow paths on this CPU (bursts that overflow and empty its cache)
    // until the upkeep has done both, or 10 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let layout = Layout::from_size_align(48, 8).unwrap();
    let mut after = before;
    while std::time::Instant::now() < deadline {
        // SAFETY: valid layout; every block freed with it.
        unsafe {
            let burst: Vec<*mut u8> = (0..2000).map(|_| RseqAlloc.alloc(layout)).collect();
            burst.into_iter().for_each(|p| RseqAlloc.dealloc(p, layout));
        }
        after = rseq_alloc::stats();
        if after.idle_drains > before.idle_drains
            && after.released_bytes > before.released_bytes
            && after.free_page_bytes == 0
        {
            break;
        }
    }
    done_tx.send(()).unwrap();
    idle.join().unwrap();
    eprintln!(
        "upkeep_child: {} upkeeps, {} idle drains, {} KiB given back, {} KiB left in free pages (was {} KiB)",
        after.upkeeps - before.upkeeps,
        after.idle_drains - before.idle_drains,
        (after.released_bytes - before.released_bytes) >> 10,
        after.free_page_bytes >> 10,
        before.free_page_bytes >> 10,
    );
    assert!(after.upkeeps > before.upkeeps, "no upkeep ran");
    assert!(after.idle_drains > before.idle_drains, "the idle CPU's cache was not drained");
    assert!(after.released_bytes > before.released_bytes, "no free page was given back");
    assert_eq!(after.free_page_bytes, 0, "free pages still hold data");
}

/// Adaptive capacity: a class whose bursts overflow its cache drains at
/// first; its misses turn (refills, then drains) and each turn grows it by
/// the run before, and the same bursts then fit: the next ten drain at most
/// a quarter as often, each, as the first. In a child on one CPU, all its
/// threads, so that the class wakes on no other CPU between the child's
/// readings and changes what they count.
#[test]
fn suite_capacity_grows_for_a_class_that_keeps_missing() {
    modes::child_passes_on_one_cpu(
        "capacity_child",
        &[("RSEQ_TEST_CAPACITY_CHILD", "1"), ("RSEQ_ALLOC_DECAY_MS", "50")],
    );
}

/// The class the capacity children watch (96 B): its layout and its index
/// in the statistics.
fn watched_class() -> (Layout, usize) {
    let class = rseq_alloc::stats().classes.iter().position(|c| c.size == 96).unwrap();
    (Layout::from_size_align(96, 8).unwrap(), class)
}

#[test]
fn capacity_child() {
    if std::env::var_os("RSEQ_TEST_CAPACITY_CHILD").is_none() {
        return;
    }
    stress::pin_to_current_cpu().expect("pin to the current CPU");
    let (layout, class) = watched_class();
    let class_stats = || rseq_alloc::stats().classes[class];
    // One burst: 900 blocks allocated, then all freed: more than the cache
    // holds when the class wakes, less than it may grow to (`INITIAL` and
    // `MAX` in `alloc/src/capacity.rs`).
    let burst = || {
        let before = class_stats().free_misses;
        // SAFETY: valid layout; every block freed with it.
        unsafe {
            let blocks: Vec<*mut u8> = (0..900).map(|_| RseqAlloc.alloc(layout)).collect();
            blocks.into_iter().for_each(|p| RseqAlloc.dealloc(p, layout));
        }
        class_stats().free_misses - before
    };
    // SAFETY: valid layout; the block is freed with it.
    unsafe { RseqAlloc.dealloc(RseqAlloc.alloc(layout), layout) };
    let home = class_stats().cpu_capacity;
    let moves_before = rseq_alloc::stats().stack_moves;
    let first = burst();
    let capacity_before = class_stats().cpu_capacity;
    let last: u64 = (0..10).map(|_| burst()).sum();
    let stats = rseq_alloc::stats();
    // A trim empties the cache and sends the class home, with its home's room.
    rseq_alloc::trim();
    let trimmed = rseq_alloc::stats();
    eprintln!(
        "capacity_child: drains in the first burst {first}, in the next ten {last}; capacity {home} -> \
         {capacity_before} -> {} -> {} after a trim; class stacks moved {}",
        stats.classes[class].cpu_capacity,
        trimmed.classes[class].cpu_capacity,
        trimmed.stack_moves - moves_before
    );
    assert!(stats.classes[class].cpu_capacity > capacity_before, "the class did not grow");
    assert!(last * 4 <= first * 10, "bursts still drain: {first} in the first, {last} in the next ten");
    assert!(stats.stack_moves > moves_before, "the class grew in its home");
    assert_eq!(trimmed.classes[class].cpu_capacity, home, "the trim did not send the class home");
    assert_eq!(trimmed.classes[class].cpu_cached, 0);
    assert!(trimmed.stack_moves > stats.stack_moves, "the class did not move home");
    // It grows again, out of its home, and nothing was lost on the way:
    // every block is distinct and ours.
    // SAFETY: valid layout; every block freed once with it.
    unsafe {
        let blocks: Vec<*mut u8> = (0..900).map(|_| RseqAlloc.alloc(layout)).collect();
        let distinct: HashSet<usize> = blocks.iter().map(|&p| p as usize).collect();
        assert_eq!(distinct.len(), blocks.len(), "a block handed out twice after the moves");
        blocks.into_iter().for_each(|p| RseqAlloc.dealloc(p, layout));
    }
}

/// Adaptive capacity, the other way: the same bursts, allocated by one
/// thread and freed by another on the same CPU (a producer and its
/// consumer), turn the class's misses as often, but a turn between two
/// threads is two flows meeting, no swing: the class keeps the capacity it
/// woke with. In a child on one CPU, as above.
#[test]
fn suite_capacity_stays_for_bursts_handed_between_threads() {
    modes::child_passes_on_one_cpu(
        "capacity_handoff_child",
        &[("RSEQ_TEST_CAPACITY_HANDOFF_CHILD", "1"), ("RSEQ_ALLOC_DECAY_MS", "50")],
    );
}

#[test]
fn capacity_handoff_child() {
    if std::env::var_os("RSEQ_TEST_CAPACITY_HANDOFF_CHILD").is_none() {
        return;
    }
    stress::pin_to_current_cpu().expect("pin to the current CPU");
    let (layout, class) = watched_class();
    let class_stats = || rseq_alloc::stats().classes[class];
    // SAFETY: valid layout; the block is freed with it.
    unsafe { RseqAlloc.dealloc(RseqAlloc.alloc(layout), layout) };
    let (home, before) = (class_stats().cpu_capacity, class_stats());
    let (to_consumer, bursts) = std::sync::mpsc::channel::<Vec<usize>>();
    let (to_producer, consumed) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for blocks in bursts {
                // SAFETY: each block was allocated with `layout`, and is freed once.
                blocks.into_iter().for_each(|p| unsafe { RseqAlloc.dealloc(p as *mut u8, layout) });
                to_producer.send(()).unwrap();
            }
        });
        scope.spawn(move || {
            for _ in 0..11 {
                // SAFETY: valid layout; the consumer frees every block with it.
                let blocks: Vec<usize> = (0..900).map(|_| unsafe { RseqAlloc.alloc(layout) } as usize).collect();
                to_consumer.send(blocks).unwrap();
                consumed.recv().unwrap();
            }
        });
    });
    let after = class_stats();
    let (refills, drains) = (after.alloc_misses - before.alloc_misses, after.free_misses - before.free_misses);
    eprintln!(
        "capacity_handoff_child: {refills} refills and {drains} drains in 11 bursts; capacity {home} -> {}",
        after.cpu_capacity
    );
    assert!(refills >= 11 && drains >= 11, "the bursts did not turn the class's misses");
    assert_eq!(after.cpu_capacity, home, "bursts handed between threads grew the class");
}

/// Refills draw from fuller spans first: of four spans, two nearly empty
/// and two nearly full (their frees reaching the central lists in the order
/// full, full, empty, empty), new objects come from the nearly full ones,
/// so the nearly empty ones can empty and go back. In a child, pinned.
#[test]
fn suite_refills_prefer_fuller_spans() {
    modes::child_passes("fuller_spans_child", &[("RSEQ_TEST_FULLER_CHILD", "1"), ("RSEQ_ALLOC_DECAY_MS", "0")]);
}

#[test]
fn fuller_spans_child() {
    if std::env::var_os("RSEQ_TEST_FULLER_CHILD").is_none() {
        return;
    }
    stress::pin_to_current_cpu().expect("pin to the current CPU");
    // 256-byte objects: 256 to a one-page (64 KiB) span.
    let layout = Layout::from_size_align(256, 16).unwrap();
    let span_of = |p: usize| p >> 16;
    // SAFETY: valid layout throughout; every block is freed once with it.
    unsafe {
        let blocks: Vec<usize> = (0..1536).map(|_| RseqAlloc.alloc(layout) as usize).collect();
        let mut by_span: std::collections::BTreeMap<usize, Vec<usize>> = std::collections::BTreeMap::new();
        for &b in &blocks {
            by_span.entry(span_of(b)).or_default().push(b);
        }
        let full: Vec<Vec<usize>> = by_span.into_values().filter(|v| v.len() == 256).take(4).collect();
        assert_eq!(full.len(), 4, "four spans of our own");
        let (c, d, a, b) = (&full[0], &full[1], &full[2], &full[3]);
        let mut freed = std::collections::HashSet::new();
        // Nearly full spans get a few frees, nearly empty ones most; each
        // span's frees reach the central list (trim drains) before the next's.
        for (span, count) in [(c, 40), (d, 40), (a, 240), (b, 240)] {
            for &p in &span[..count] {
                RseqAlloc.dealloc(p as *mut u8, layout);
                freed.insert(p);
            }
            rseq_alloc::trim();
        }
        // A few refills' worth from an empty cache.
        let fresh: Vec<usize> = (0..64).map(|_| RseqAlloc.alloc(layout) as usize).collect();
        let emptying = [span_of(a[0]), span_of(b[0])];
        let from_emptying = fresh.iter().filter(|&&p| emptying.contains(&span_of(p))).count();
        eprintln!("fuller_spans_child: {from_emptying} of 64 new objects from the nearly empty spans");
        assert_eq!(from_emptying, 0, "refills drew from nearly empty spans");
        for p in fresh {
            RseqAlloc.dealloc(p as *mut u8, layout);
        }
        for &p in blocks.iter().filter(|p| !freed.contains(p)) {
            RseqAlloc.dealloc(p as *mut u8, layout);
        }
    }
}

// ---------------------------------------------------------------------------
// Out of memory.

/// Out of address space (`RLIMIT_AS`), in a child: `try_reserve` gets an
/// error and the program goes on; everything freed, as much fits again; an
/// infallible allocation ends in `handle_alloc_error`'s message and abort.
#[test]
fn suite_out_of_memory_in_rust() {
    let output = modes::run_test_in_child("out_of_memory_child", &[("RSEQ_TEST_OOM_CHILD", "1")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(output.status.signal(), Some(libc::SIGABRT), "{}\n{stderr}", output.status);
    assert!(stderr.contains("out_of_memory_child: recovered"), "{stderr}");
    assert!(stderr.contains("memory allocation of 17179869184 bytes failed"), "{stderr}");
}

#[test]
fn out_of_memory_child() {
    if std::env::var_os("RSEQ_TEST_OOM_CHILD").is_none() {
        return;
    }
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let in_use: u64 = statm.split_whitespace().next().unwrap().parse::<u64>().unwrap() * 4096;
    let limit = libc::rlimit { rlim_cur: in_use + (256 << 20), rlim_max: in_use + (256 << 20) };
    // SAFETY: setrlimit reads a valid struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) }, 0);
    let mut v: Vec<u8> = Vec::new();
    assert!(v.try_reserve(1 << 34).is_err());
    let fill = || {
        let mut kept: Vec<Vec<u8>> = Vec::with_capacity(1024);
        loop {
            let mut chunk: Vec<u8> = Vec::new();
            if chunk.try_reserve_exact(1 << 20).is_err() {
                return kept;
            }
            chunk.resize(1 << 20, 1);
            kept.push(chunk);
        }
    };
    let first = fill();
    assert!(first.len() > 64, "{}", first.len());
    let n = first.len();
    drop(first);
    let again = fill();
    assert!(again.len() >= n - n / 10, "{n} then {}", again.len());
    drop(again);
    eprintln!("out_of_memory_child: recovered ({n} MiB fit twice)");
    let big = vec![0u8; 1 << 34];
    println!("unreachable: {}", big.len());
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
