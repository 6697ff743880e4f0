//! The freed mark (rseq mode): C's `free` writes a per-process secret into
//! the second word of the object it caches and C's allocations clear it, so
//! a free that finds the mark on its object is probably freeing it twice
//! (Rust's calls skip it: [`super::Marks`]). It
//! then looks for the object among the free ones (every CPU's cache of its
//! class, its central list) and reports it if there: the mark is only a
//! hint (a program may happen to store the secret), the search decides. A
//! block freed twice with other frees in between is so refused before it
//! can be handed out twice. Both modes keep it (in fallback mode, on the
//! region the thread holds); hardened mode, which has its own exact check
//! and fills free blocks with poison, does not.

use super::region::{self, fill, header, regions, slot};
use crate::central::CENTRAL;
use crate::os;
use crate::sync::{AtomicOps, AtomicUsize};

/// The secret (never 0 when on: a fresh object's zeroes are no mark); 0:
/// off (hardened mode).
static MARK: AtomicUsize = AtomicUsize::new(0);

/// Draws the secret, once, before the first object is cached.
pub(super) fn init(hardened: bool) {
    if !hardened {
        let _ = MARK.cas_relaxed(0, os::random_u64() as usize | 1);
    }
}

/// Whether objects are marked (not in hardened mode).
#[inline(always)]
pub(super) fn enabled() -> bool {
    MARK.load_relaxed() != 0
}

/// The mark's word in `object`, a small object of at least 16 bytes.
///
/// # Safety
/// `object` is a small object the caller owns (freeing it, or just handed it).
#[inline(always)]
unsafe fn word(object: usize) -> *mut usize {
    (object + 8) as *mut usize
}

/// Whether `object` carries the mark.
///
/// # Safety
/// As [`word`].
#[inline(always)]
pub(super) unsafe fn is_marked(object: usize) -> bool {
    // SAFETY: the second word of an object of 16 bytes or more, owned by the caller.
    unsafe { word(object).read() == MARK.load_relaxed() }
}

/// Marks `object` as freed unless it carries the mark already; true if it
/// did (the secret read once: two atomic loads are two instructions on
/// every `free`).
///
/// # Safety
/// As [`word`].
#[inline(always)]
pub(super) unsafe fn mark_unless_marked(object: usize) -> bool {
    let mark = MARK.load_relaxed();
    // SAFETY: as in `is_marked`.
    unsafe {
        if word(object).read() == mark {
            return true;
        }
        word(object).write(mark);
    }
    false
}

/// Marks `object` as freed (before it is pushed: once pushed it is no
/// longer the caller's).
///
/// # Safety
/// As [`word`].
#[inline(always)]
pub(super) unsafe fn mark(object: usize) {
    // SAFETY: as in `is_marked`.
    unsafe { word(object).write(MARK.load_relaxed()) };
}

/// Clears the mark of an object just handed out.
///
/// # Safety
/// As [`word`].
#[inline(always)]
pub(super) unsafe fn clear(object: usize) {
    // SAFETY: as in `is_marked`.
    unsafe { word(object).write(0) };
}

/// Whether `object` of `class` is free now: in some CPU's cache, or free
/// in its central list (a racy look at the caches: an object moving
/// between them meanwhile may be missed, never invented).
#[cold]
#[inline(never)]
pub(super) fn is_free(class: usize, object: usize) -> bool {
    let cached = (0..regions().unwrap_or(0)).any(|cpu| {
        let region = region::at(cpu);
        let word = header(region, class).load_relaxed();
        let (count, _) = fill(class, word);
        let top = rseq_sys::slab_layout::Header::unpack(word).current as usize;
        (top - count..top).any(|index| slot(region, index).load_relaxed() == object)
    });
    cached || CENTRAL.holds_free(class, object)
}
