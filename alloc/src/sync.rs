//! The only module that imports atomics: `core`'s normally, loom's under
//! `cfg(rseq_alloc_loom)`, so the models in `tests/` check the real code.

#[cfg(rseq_alloc_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

#[cfg(not(rseq_alloc_loom))]
pub(crate) use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// This thread's identity in a lock word or a region's state word: its
/// thread pointer (on targets without rseq sections, `pthread_self`),
/// never 0, and aligned (never one of the states' small constants).
#[cfg(not(rseq_alloc_loom))]
pub(crate) fn current_thread() -> usize {
    let me = rseq_sys::thread_pointer();
    debug_assert_ne!(me, 0);
    me
}

/// Loom runs every model thread on one OS thread: use the address of a
/// loom thread-local instead.
#[cfg(rseq_alloc_loom)]
pub(crate) fn current_thread() -> usize {
    loom::thread_local! {
        static MARK: u64 = 0;
    }
    MARK.with(|mark| mark as *const u64 as usize)
}
