//! Medium blocks freed and kept whole for the next request of their size:
//! a few spans of up to [`KEPT_PAGES`] pages, one atomic swap to keep or
//! take, where the page heap takes its lock twice per block (to free the
//! span, and to find and claim it again). A program that allocates and
//! frees buffers of a few pages in a loop then never touches the lock.
//!
//! A kept span stays a live medium span to every lookup (its pages name it),
//! so it must never be kept twice: keeping it checks the other slots of its
//! size and reports a second free of the same span. The upkeep gives the
//! kept spans back to the page heap if none was taken for a whole period,
//! and `trim` always does.

use crate::report::{self, Call};
use crate::segment::{PAGE_HEAP, Segment};
use crate::sync::{AtomicBool, AtomicOps, AtomicUsize};

/// Largest span kept, in pages (256 KiB).
pub(crate) const KEPT_PAGES: usize = 4;
/// Spans kept per size: at most 1.25 MiB in all.
const SLOTS: usize = 2;

/// Per page count, the addresses of kept spans (0: an empty slot).
static KEPT: [[AtomicUsize; SLOTS]; KEPT_PAGES + 1] =
    [const { [const { AtomicUsize::new(0) }; SLOTS] }; KEPT_PAGES + 1];
/// A span was taken since the last upkeep.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// A kept span of `pages` pages, if there is one; it is the caller's now.
#[inline]
pub(crate) fn take(pages: usize) -> Option<usize> {
    let slots = KEPT.get(pages)?;
    for slot in slots {
        if slot.load_relaxed() != 0 {
            let span = slot.swap_acq_rel(0);
            if span != 0 {
                if !TAKEN.load_relaxed() {
                    TAKEN.store_relaxed(true);
                }
                return Some(span);
            }
        }
    }
    None
}

/// Keeps the medium span at `span` (`pages` long) for a later [`take`];
/// false if there is no room (the caller gives it to the page heap).
///
/// # Safety
/// `span` starts a live medium span of `pages` pages that the caller gives up.
#[inline]
pub(crate) unsafe fn keep(span: usize, pages: usize) -> bool {
    let Some(slots) = KEPT.get(pages) else { return false };
    if slots.iter().any(|slot| slot.load_relaxed() == span) {
        report::double_free(Call::Free, span);
    }
    slots.iter().any(|slot| slot.load_relaxed() == 0 && slot.cas_release(0, span).is_ok())
}

/// Gives every kept span back to the page heap; returns their bytes.
pub(crate) fn release_all() -> usize {
    let mut bytes = 0;
    for (pages, slots) in KEPT.iter().enumerate() {
        for slot in slots {
            let span = slot.swap_acq_rel(0);
            if span != 0 {
                let (seg, head) = (Segment::containing(span), Segment::page_index(span));
                // SAFETY: a kept span is a live medium span nobody uses, and
                // the swap made it ours alone.
                unsafe { PAGE_HEAP.free_span(seg, head, pages) };
                bytes += pages << crate::segment::PAGE_SHIFT;
            }
        }
    }
    bytes
}

/// Upkeep: gives the kept spans back if none was taken in a whole period;
/// true if spans are still kept.
pub(crate) fn decay() -> bool {
    if !TAKEN.swap_relaxed(false) {
        release_all();
    }
    kept_bytes() != 0
}

/// Bytes in kept spans.
pub(crate) fn kept_bytes() -> usize {
    KEPT.iter()
        .enumerate()
        .map(|(pages, slots)| {
            slots.iter().filter(|s| s.load_relaxed() != 0).count() * (pages << crate::segment::PAGE_SHIFT)
        })
        .sum()
}
