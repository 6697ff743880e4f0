//! Allocation from signal handlers.
//!
//! `malloc` is not async-signal-safe, ours no more than glibc's: its slow
//! paths take locks, and a handler that interrupted its own thread inside
//! one cannot take them again (ours reports that and aborts rather than
//! hang). A handler cannot know whether the fast path will serve it, since
//! another thread, a drain or the upkeep may have emptied its CPU's cache
//! a moment before.
//!
//! These two functions are the fast path and nothing else: one restartable
//! sequence on this CPU's cache, no lock, no system call, no other state.
//! Where `GlobalAlloc` would go on to a slow path they fail instead: the
//! cache of that class on this CPU is empty (or full), stopped by a drain,
//! the thread has no rseq area, the process runs in fallback or hardened
//! mode or counts hits, or the block is not a small one. Their blocks are
//! ordinary small blocks: one from [`alloc`] may be freed with
//! `GlobalAlloc::dealloc` or `free` outside the handler, and the other way
//! round.

use core::alloc::Layout;

use crate::front;
use crate::tiers::{Route, route};

/// A block for `layout` from this CPU's cache, or null if the fast path
/// cannot serve it (see the module's documentation). Async-signal-safe.
#[inline]
pub fn alloc(layout: Layout) -> *mut u8 {
    match route(layout.size().max(1), layout.align()) {
        Route::Small(class) => front::pop(class).unwrap_or(core::ptr::null_mut()),
        _ => core::ptr::null_mut(),
    }
}

/// Gives `ptr` back to this CPU's cache; false if the fast path cannot
/// take it (see the module's documentation): the block is then still the
/// caller's, to free later, here or outside the handler. Async-signal-safe.
///
/// # Safety
/// `ptr` is a live block of this allocator for `layout` (from [`alloc`] or
/// from `GlobalAlloc::alloc` with the same layout), and the caller gives it
/// up if this returns true.
#[inline]
pub unsafe fn dealloc(ptr: *mut u8, layout: Layout) -> bool {
    match route(layout.size().max(1), layout.align()) {
        Route::Small(class) => front::push(class, ptr),
        _ => false,
    }
}
