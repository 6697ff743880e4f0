//! The one lock the allocator has, for slow paths only, and the waits it
//! is built from: system calls normally, loom's scheduler under
//! `cfg(rseq_alloc_loom)`.

#[cfg(not(rseq_alloc_loom))]
use crate::os;
use crate::sync::{AtomicBool, AtomicOps, AtomicU32, AtomicUsize, current_thread};

/// A mutual-exclusion lock for slow paths (central lists, page heap): a few
/// spins, then `futex` sleep, so a holder that is preempted costs waiters a
/// sleep, not a burnt time slice. It never allocates and has no poisoning.
///
/// The lock word *is* the holder's identity (its thread pointer), taken by
/// one compare-and-swap, so "this thread holds it" is exact at every
/// instruction, even to a signal handler that interrupted the holder. Two
/// things need that: `fork` from such a handler (the prepare handler must not
/// wait for its own thread), and a handler that allocates while its thread
/// is inside a slow path, which is reported and aborts instead of hanging
/// (only the rseq fast path, which holds no lock, is async-signal-safe).
///
/// A lock taken for `fork` ([`lock_for_fork`](Lock::lock_for_fork)) lets
/// its own thread back in until the fork is over: the other fork handlers
/// run on that thread between our prepare and release handlers, and may
/// allocate (ours can run first: it is registered lazily, see `fork`).
/// That is safe because the prepare handler took the lock between two
/// critical sections, so what it guards is consistent.
pub struct Lock {
    /// 0 when free, else the holder's identity.
    holder: AtomicUsize,
    /// 1 when a waiter may be asleep on it (the futex word).
    sleepers: AtomicU32,
    /// Whether the holder took it for `fork`: written by the holder only,
    /// read only by a thread that finds itself the holder.
    held_for_fork: AtomicBool,
}

impl Lock {
    /// An unlocked lock.
    #[cfg(not(rseq_alloc_loom))]
    pub const fn new() -> Lock {
        Lock { holder: AtomicUsize::new(0), sleepers: AtomicU32::new(0), held_for_fork: AtomicBool::new(false) }
    }

    /// An unlocked lock.
    #[cfg(rseq_alloc_loom)]
    pub fn new() -> Lock {
        Lock { holder: AtomicUsize::new(0), sleepers: AtomicU32::new(0), held_for_fork: AtomicBool::new(false) }
    }

    /// Takes the lock; it is released when the guard drops (unless this
    /// thread holds it for `fork`: then the release handler releases it).
    #[inline]
    pub fn lock(&self) -> LockGuard<'_> {
        let me = current_thread();
        let owned = self.holder.cas_acquire(0, me).is_ok() || self.lock_contended(me);
        LockGuard { lock: self, owned }
    }

    /// Waits for the lock and takes it (returns true), or finds this thread
    /// holding it for `fork` (returns false: the guard must not release it).
    #[cold]
    fn lock_contended(&self, me: usize) -> bool {
        if self.holder.load_relaxed() == me {
            if self.held_for_fork.load_relaxed() {
                return false;
            }
            #[cfg(not(rseq_alloc_loom))]
            os::fatal(
                b"rseq-alloc: allocation in a signal handler interrupted this thread's own allocator slow path; \
                  only the per-CPU fast path is async-signal-safe\n",
            );
        }
        for _ in 0..64 {
            if self.holder.load_relaxed() == 0 && self.holder.cas_acquire(0, me).is_ok() {
                return true;
            }
            spin_hint();
        }
        // Announce a sleeper, then try once more before sleeping: an unlock
        // that clears `holder` and then finds `sleepers` set wakes us, and one
        // that found it clear left `holder` free for the retry (both sides
        // are SeqCst, so one of them sees the other's store).
        loop {
            self.sleepers.store_seq_cst(1);
            if self.holder.cas_seq_cst(0, me).is_ok() {
                return true;
            }
            wait_while(&self.sleepers, 1);
        }
    }

    /// Takes the lock for `fork` and keeps it past this call, unless this
    /// very thread already holds it: then `fork` was called from a signal
    /// handler that interrupted this thread inside a slow path, and that
    /// slow path will finish (and release the lock) when the handler
    /// returns, in the parent and in the child alike. Returns whether it took it.
    #[cfg_attr(rseq_alloc_loom, allow(dead_code))]
    pub(crate) fn lock_for_fork(&self) -> bool {
        if self.held_here() {
            return false;
        }
        core::mem::forget(self.lock());
        self.held_for_fork.store_relaxed(true);
        true
    }

    /// Whether this very thread holds the lock (exact, even in a signal
    /// handler that interrupted the holder).
    #[cfg_attr(rseq_alloc_loom, allow(dead_code))]
    pub(crate) fn held_here(&self) -> bool {
        self.holder.load_relaxed() == current_thread()
    }

    /// Releases a lock that [`lock_for_fork`](Self::lock_for_fork) took,
    /// waking a waiter as a guard's drop would.
    ///
    /// # Safety
    /// This thread took the lock with `lock_for_fork`, which returned true.
    #[cfg_attr(rseq_alloc_loom, allow(dead_code))]
    pub(crate) unsafe fn unlock_after_fork(&self) {
        self.held_for_fork.store_relaxed(false);
        drop(LockGuard { lock: self, owned: true });
    }
}

/// Proof that a [`Lock`] is held.
pub struct LockGuard<'a> {
    lock: &'a Lock,
    /// False when the lock is held for `fork` by this thread, which only
    /// borrowed it.
    owned: bool,
}

impl Drop for LockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        self.lock.holder.store_seq_cst(0);
        if self.lock.sleepers.swap_seq_cst(0) != 0 {
            wake_one(&self.lock.sleepers);
        }
    }
}

/// Lets another thread run (a wait for a holder that may be preempted).
#[cfg(not(rseq_alloc_loom))]
pub(crate) fn yield_now() {
    os::yield_now();
}

/// Lets another model thread run.
#[cfg(rseq_alloc_loom)]
pub(crate) fn yield_now() {
    loom::thread::yield_now();
}

#[cfg(not(rseq_alloc_loom))]
fn spin_hint() {
    core::hint::spin_loop();
}

#[cfg(rseq_alloc_loom)]
fn spin_hint() {
    loom::thread::yield_now();
}

#[cfg(not(rseq_alloc_loom))]
fn wait_while(word: &AtomicU32, value: u32) {
    os::futex_wait(word, value);
}

#[cfg(not(rseq_alloc_loom))]
fn wake_one(word: &AtomicU32) {
    os::futex_wake_one(word);
}

#[cfg(rseq_alloc_loom)]
fn wait_while(_: &AtomicU32, _: u32) {
    loom::thread::yield_now();
}

#[cfg(rseq_alloc_loom)]
fn wake_one(_: &AtomicU32) {}
