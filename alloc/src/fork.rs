//! `fork` from a multithreaded process: the child has one thread, so a lock
//! held by any other thread at the moment of `fork` would stay held forever.
//! Before `fork` we take every lock, in the order the allocator nests them
//! (the drain lock, central lists, the page heap, then the huge-block
//! cache, which nests in none), and both sides release them after. Taking
//! the drain lock first means no child inherits a region that a drain in
//! another thread held stopped.
//! A lock the forking thread itself holds is skipped: `fork` was called from
//! a signal handler that interrupted that thread's slow path, which finishes
//! and releases it when the handler returns, on both sides (glibc gives the
//! same guarantee; allocators that take the lock anyway hang there).
//!
//! The per-CPU regions need nothing: in rseq mode the child inherits a
//! consistent copy (a section interrupted by `fork` is restarted in the
//! child, as after any preemption), and in fallback mode a region another
//! thread held busy stays busy in the child, which simply uses the others.

use crate::central::CENTRAL;
use crate::percpu::DRAIN_LOCK;
use crate::segment::PAGE_HEAP;
use crate::sync::{AtomicBool, AtomicU64, Ordering};

// Which locks `prepare` took: written and read only by the forking thread
// between `prepare` and its parent/child handler (a second forking thread
// waits in `prepare` for the first one's locks).
static TAKEN_CENTRAL: AtomicU128Cell = AtomicU128Cell::new();
static TAKEN_PAGE_HEAP: AtomicBool = AtomicBool::new(false);
static TAKEN_DRAIN: AtomicBool = AtomicBool::new(false);
static TAKEN_HUGE: AtomicBool = AtomicBool::new(false);

extern "C" fn prepare() {
    TAKEN_DRAIN.store(DRAIN_LOCK.lock_for_fork(), Ordering::Relaxed);
    TAKEN_CENTRAL.set(CENTRAL.lock_all_for_fork());
    TAKEN_PAGE_HEAP.store(PAGE_HEAP.lock_for_fork(), Ordering::Relaxed);
    TAKEN_HUGE.store(crate::huge::lock_for_fork(), Ordering::Relaxed);
}

extern "C" fn release() {
    // SAFETY: `prepare` took exactly these locks on this thread, and `fork`
    // runs exactly one of the parent/child handlers on each side.
    unsafe {
        if TAKEN_HUGE.load(Ordering::Relaxed) {
            crate::huge::unlock_after_fork();
        }
        if TAKEN_PAGE_HEAP.load(Ordering::Relaxed) {
            PAGE_HEAP.unlock_after_fork();
        }
        CENTRAL.unlock_all_after_fork(TAKEN_CENTRAL.get());
        if TAKEN_DRAIN.load(Ordering::Relaxed) {
            DRAIN_LOCK.unlock_after_fork();
        }
    }
}

/// A `u128` kept in two relaxed atomic words (only the forking thread uses it).
struct AtomicU128Cell([AtomicU64; 2]);

impl AtomicU128Cell {
    const fn new() -> Self {
        AtomicU128Cell([AtomicU64::new(0), AtomicU64::new(0)])
    }

    fn set(&self, value: u128) {
        self.0[0].store(value as u64, Ordering::Relaxed);
        self.0[1].store((value >> 64) as u64, Ordering::Relaxed);
    }

    fn get(&self) -> u128 {
        u128::from(self.0[0].load(Ordering::Relaxed)) | u128::from(self.0[1].load(Ordering::Relaxed)) << 64
    }
}

/// Installs the handlers (once, after initialisation: `pthread_atfork` may
/// allocate, through us).
pub(crate) fn register() {
    // SAFETY: plain functions that only take and release our own locks.
    unsafe { libc::pthread_atfork(Some(prepare), Some(release), Some(release)) };
}
