//! `fork` from a multithreaded process: the child has one thread, so a lock
//! held by any other thread at the moment of `fork` would stay held forever.
//! Before `fork` we take every lock, in the order the allocator nests them
//! (central lists, then the page heap), and both sides release them after.
//!
//! The per-CPU regions need nothing: in rseq mode the child inherits a
//! consistent copy (a section interrupted by `fork` is restarted in the
//! child, as after any preemption), and in fallback mode a region another
//! thread held busy stays busy in the child, which simply uses the others.

use crate::central::CENTRAL;
use crate::segment::PAGE_HEAP;

extern "C" fn prepare() {
    CENTRAL.lock_all_for_fork();
    core::mem::forget(PAGE_HEAP.lock_for_fork());
}

extern "C" fn release() {
    // SAFETY: `prepare` took every one of these locks on this thread, and
    // `fork` runs exactly one of the parent/child handlers on each side.
    unsafe {
        PAGE_HEAP.unlock_after_fork();
        CENTRAL.unlock_all_after_fork();
    }
}

/// Installs the handlers (once, after initialisation: `pthread_atfork` may
/// allocate, through us).
pub(crate) fn register() {
    // SAFETY: plain functions that only take and release our own locks.
    unsafe { libc::pthread_atfork(Some(prepare), Some(release), Some(release)) };
}
