//! rseq-alloc as the `#[global_allocator]` of this whole test binary (the
//! test harness included) under stress: random blocks freed across threads
//! and CPUs while a migrator moves the workers and a signal storm's
//! handlers allocate with `signal_safe`, huge blocks moving while others
//! map and unmap, and `signal_safe` kept to its fast path. The binary's
//! tests run again in every other mode (`mode_suites!`).

#![cfg(not(rseq_alloc_loom))]

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
            900..=979 => rng.below(64 * 1024) + 1,
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
