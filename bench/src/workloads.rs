//! Allocator micro-workloads, generic over any `GlobalAlloc` instance so the
//! same code times `RseqAlloc`, `System` and any other allocator, called
//! directly (the benchmark binary's own global allocator is not involved).

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::time::Instant;

/// rseq-alloc through its C entry points (`malloc`, `free`, `realloc`):
/// `free` finds the block's class from the pointer instead of the layout.
#[derive(Clone, Copy, Debug, Default)]
pub struct CEntryPoints;

// SAFETY: `c_api` returns 16-aligned blocks of at least the requested size
// (and honours larger alignments through `aligned_alloc`); blocks are freed
// with `free`, which accepts every one of them.
unsafe impl GlobalAlloc for CEntryPoints {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= 16 {
            rseq_alloc::c_api::malloc(layout.size()).cast()
        } else {
            rseq_alloc::c_api::aligned_alloc(layout.align(), layout.size()).cast()
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _: Layout) {
        // SAFETY: `ptr` came from `alloc` above.
        unsafe { rseq_alloc::c_api::free(ptr.cast()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, _: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from `alloc` above.
        unsafe { rseq_alloc::c_api::realloc(ptr.cast(), new_size).cast() }
    }
}

/// Sizes the pair benchmarks walk: small classes from 16 B to 32 KiB.
pub const PAIR_SIZES: [usize; 8] = [16, 32, 64, 128, 256, 1024, 4096, 32768];

/// `n` alloc/free pairs of `size` bytes; returns ns per pair.
pub fn pairs<A: GlobalAlloc>(alloc: &A, size: usize, n: u64) -> f64 {
    let layout = Layout::from_size_align(size, 8).expect("layout");
    let start = Instant::now();
    for _ in 0..n {
        // SAFETY: a valid layout; the block is freed with it at once.
        unsafe {
            let p = alloc.alloc(layout);
            black_box(p);
            alloc.dealloc(p, layout);
        }
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

/// Allocates `batch` blocks of `size` bytes, then frees them all, `rounds`
/// times: misses the per-CPU cache on purpose. Returns ns per block.
pub fn batches<A: GlobalAlloc>(alloc: &A, size: usize, batch: usize, rounds: u64) -> f64 {
    let layout = Layout::from_size_align(size, 8).expect("layout");
    let mut blocks = vec![std::ptr::null_mut(); batch];
    let start = Instant::now();
    for _ in 0..rounds {
        for slot in blocks.iter_mut() {
            // SAFETY: a valid layout.
            *slot = unsafe { alloc.alloc(layout) };
        }
        for &p in blocks.iter() {
            // SAFETY: allocated above with this layout.
            unsafe { alloc.dealloc(p, layout) };
        }
    }
    start.elapsed().as_nanos() as f64 / (rounds * batch as u64) as f64
}

/// Grows a buffer by `realloc` from 16 B to `max` bytes, doubling; returns
/// ns per doubling step.
pub fn vec_growth<A: GlobalAlloc>(alloc: &A, max: usize, rounds: u64) -> f64 {
    grow(alloc, max, rounds, |size| size * 2, false)
}

/// Grows a buffer by `realloc` from 16 B to `max` bytes in steps of half
/// its size (a growth factor of 1.5, as many vectors and string builders
/// use), touching its first and last byte after each step; returns ns per
/// step.
pub fn growth_by_half<A: GlobalAlloc>(alloc: &A, max: usize, rounds: u64) -> f64 {
    grow(alloc, max, rounds, |size| (size + size / 2).min(max), true)
}

/// Grows a buffer by `realloc` from 16 B to `max` bytes, `next` giving each
/// size from the one before, writing its first byte before each step (and
/// its last after, if `touch_last`), `rounds` times; returns ns per step.
fn grow<A: GlobalAlloc>(alloc: &A, max: usize, rounds: u64, next: impl Fn(usize) -> usize, touch_last: bool) -> f64 {
    let mut steps = 0u64;
    let start = Instant::now();
    for _ in 0..rounds {
        let mut size = 16;
        // SAFETY: valid layouts; the block is always freed with its current size.
        unsafe {
            let mut p = black_box(alloc.alloc(Layout::from_size_align(size, 8).expect("layout")));
            while size < max {
                let grown = next(size);
                p.write(size as u8);
                // black_box: without it the optimiser may see through a
                // `System` (or C `realloc`) chain and delete it whole.
                p = black_box(alloc.realloc(p, Layout::from_size_align(size, 8).expect("layout"), grown));
                if touch_last {
                    p.add(grown - 1).write(1);
                }
                size = grown;
                steps += 1;
            }
            alloc.dealloc(p, Layout::from_size_align(size, 8).expect("layout"));
        }
    }
    start.elapsed().as_nanos() as f64 / steps as f64
}

/// One thread allocates `n` blocks of `size` bytes in batches of 256 and
/// hands them to another, which frees them: every free is remote. Returns
/// ns per block (wall clock).
pub fn cross_thread_free<A: GlobalAlloc + Sync>(alloc: &A, size: usize, n: usize) -> f64 {
    let layout = Layout::from_size_align(size, 8).expect("layout");
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<usize>>(4);
    let start = Instant::now();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for batch in rx {
                for p in batch {
                    // SAFETY: allocated by the producer with this layout.
                    unsafe { alloc.dealloc(p as *mut u8, layout) };
                }
            }
        });
        for _ in 0..n / 256 {
            // SAFETY: a valid layout.
            let batch: Vec<usize> = (0..256).map(|_| unsafe { alloc.alloc(layout) } as usize).collect();
            tx.send(batch).expect("consumer alive");
        }
        drop(tx);
    });
    start.elapsed().as_nanos() as f64 / n as f64
}

/// `RseqAlloc::alloc` for a 16-aligned request of `size` bytes, not inlined,
/// so its fast path can be read in the disassembly.
#[inline(never)]
pub fn probe_alloc(size: usize) -> *mut u8 {
    // SAFETY: the caller passes a size that makes a valid layout.
    unsafe { rseq_alloc::RseqAlloc.alloc(Layout::from_size_align_unchecked(size, 16)) }
}

/// `RseqAlloc::dealloc`, not inlined (see [`probe_alloc`]).
///
/// # Safety
/// `ptr` came from [`probe_alloc`] with the same `size`.
#[inline(never)]
pub unsafe fn probe_dealloc(ptr: *mut u8, size: usize) {
    // SAFETY: forwarded from the caller.
    unsafe { rseq_alloc::RseqAlloc.dealloc(ptr, Layout::from_size_align_unchecked(size, 16)) }
}
