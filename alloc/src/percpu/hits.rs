//! Fast-path hits, counted only with `RSEQ_ALLOC_STATS` set: per CPU, one
//! counter per class and direction, bumped with an rseq increment (or an
//! atomic add in fallback mode).

use super::{COUNT_HITS, FAST, Index};
use crate::size_class::CLASSES;
use crate::sync::{AtomicIntOps, AtomicOps, AtomicPtr, AtomicU64};

/// Each CPU's counters: `[alloc; CLASSES + 1]`, then `[free; CLASSES + 1]`.
const SHIFT: u32 = 11;
const _: () = assert!(2 * (CLASSES + 1) * 8 <= 1 << SHIFT);

static COUNTERS: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());
static FALLBACK: [[AtomicU64; CLASSES + 1]; 2] = [const { [const { AtomicU64::new(0) }; CLASSES + 1] }; 2];

/// Maps the counters; false if that failed (hits are then not counted).
pub(crate) fn init(ncpus: u32) -> bool {
    match crate::os::map((ncpus as usize) << SHIFT) {
        Some(mapped) => {
            COUNTERS.store_release(mapped.as_ptr());
            true
        }
        None => false,
    }
}

/// Whether hits are counted in this process (`RSEQ_ALLOC_STATS=1`).
pub(crate) fn counted() -> bool {
    !COUNTERS.load_acquire().is_null()
}

/// Counts hit `index`; `flags` is what the caller read from `FAST.flags`
/// (0 in fallback mode, where no section runs).
fn count(flags: u32, index: usize) {
    let counters = COUNTERS.load_acquire();
    if counters.is_null() {
        return;
    }
    if flags & COUNT_HITS != 0 {
        let slabs = &FAST.slabs;
        let (offset, ncpus) = (slabs.rseq_offset.load_relaxed(), slabs.count.load_relaxed());
        // SAFETY: with the flag set, the offset is the registered area's;
        // the counters cover `ncpus << SHIFT` bytes; `index` is inside one
        // CPU's block; only sections touch them.
        let done = unsafe { rseq_sys::percpu_add::<Index, SHIFT>(offset, counters.add(index * 8), ncpus, 1) };
        if done.is_ok() {
            return;
        }
    }
    FALLBACK[index / (CLASSES + 1)][index % (CLASSES + 1)].fetch_add_relaxed(1);
}

pub(crate) fn count_alloc(flags: u32, class: usize) {
    count(flags, class);
}

pub(crate) fn count_free(flags: u32, class: usize) {
    count(flags, CLASSES + 1 + class);
}

/// Hits so far for `class`: (allocations, frees), summed over CPUs.
pub(crate) fn total(class: usize) -> (u64, u64) {
    let mut alloc = FALLBACK[0][class].load_relaxed();
    let mut free = FALLBACK[1][class].load_relaxed();
    let counters = COUNTERS.load_acquire();
    if !counters.is_null() {
        for cpu in 0..FAST.slabs.count.load_relaxed() as usize {
            // SAFETY: reading counters inside the mapping; a racy snapshot is fine for statistics.
            unsafe {
                let block = counters.add(cpu << SHIFT).cast::<u64>();
                alloc += block.add(class).read_volatile();
                free += block.add(CLASSES + 1 + class).read_volatile();
            }
        }
    }
    (alloc, free)
}
