//! The only module that imports atomics: `core`'s normally, loom's under
//! `cfg(rseq_alloc_loom)`, so the models in `tests/` check the real code.
//! It also owns the one lock the allocator has, for slow paths only.

#[cfg(rseq_alloc_loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

#[cfg(not(rseq_alloc_loom))]
pub(crate) use core::sync::atomic::{AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// A mutual-exclusion lock for slow paths (central lists, page heap): a few
/// spins, then `futex` sleep, so a holder that is preempted costs waiters a
/// sleep, not a burnt time slice. It never allocates and has no poisoning.
///
/// It records its holder (the thread pointer), because the one way to
/// deadlock on it is a signal handler that allocates while its own thread
/// was inside a slow path holding it: that is reported and aborts instead of
/// hanging. (The rseq fast path, which holds no lock, is safe in handlers.)
pub struct Lock {
    // 0: free; 1: held; 2: held and someone may sleep on it.
    state: AtomicU32,
    // Thread pointer of the holder, 0 when free (best effort: set after taking).
    holder: AtomicUsize,
}

impl Lock {
    /// An unlocked lock.
    #[cfg(not(rseq_alloc_loom))]
    pub const fn new() -> Lock {
        Lock { state: AtomicU32::new(0), holder: AtomicUsize::new(0) }
    }

    /// An unlocked lock.
    #[cfg(rseq_alloc_loom)]
    pub fn new() -> Lock {
        Lock { state: AtomicU32::new(0), holder: AtomicUsize::new(0) }
    }

    /// Takes the lock; it is released when the guard drops.
    #[inline]
    pub fn lock(&self) -> LockGuard<'_> {
        if self.state.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed).is_err() {
            self.lock_contended();
        }
        self.holder.store(current_thread(), Ordering::Relaxed);
        LockGuard { lock: self }
    }

    #[cold]
    fn lock_contended(&self) {
        if self.holder.load(Ordering::Relaxed) == current_thread() && current_thread() != 0 {
            #[cfg(not(rseq_alloc_loom))]
            crate::os::fatal(
                b"rseq-alloc: allocation in a signal handler interrupted this thread's own allocator slow path; \
                  only the per-CPU fast path is async-signal-safe\n",
            );
        }
        for _ in 0..64 {
            if self.state.load(Ordering::Relaxed) == 0
                && self.state.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed).is_ok()
            {
                return;
            }
            spin_hint();
        }
        while self.state.swap(2, Ordering::Acquire) != 0 {
            wait_while(&self.state, 2);
        }
    }

    /// Releases a lock whose guard was forgotten (the `fork` handlers take
    /// locks in one callback and release them in another), waking a waiter
    /// as a guard's drop would.
    ///
    /// # Safety
    /// This thread took the lock and forgot its guard.
    #[cfg_attr(rseq_alloc_loom, allow(dead_code))]
    pub(crate) unsafe fn unlock_forgotten(&self) {
        drop(LockGuard { lock: self });
    }
}

/// Proof that a [`Lock`] is held.
pub struct LockGuard<'a> {
    lock: &'a Lock,
}

impl Drop for LockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.lock.holder.store(0, Ordering::Relaxed);
        if self.lock.state.swap(0, Ordering::Release) == 2 {
            wake_one(&self.lock.state);
        }
    }
}

/// This thread's identity for the re-entry check: its thread pointer (loom
/// runs every model thread on one OS thread, so the check is off there).
#[cfg(not(rseq_alloc_loom))]
fn current_thread() -> usize {
    rseq_sys::thread_pointer()
}

#[cfg(rseq_alloc_loom)]
fn current_thread() -> usize {
    0
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
    // SAFETY: FUTEX_WAIT_PRIVATE on a live u32; it returns at once if the
    // value has changed, and spurious wake-ups are handled by the caller's loop.
    let _ = unsafe {
        rseq_sys::syscall::syscall4(
            libc::SYS_futex,
            word.as_ptr() as usize,
            (libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG) as usize,
            value as usize,
            0,
        )
    };
}

#[cfg(not(rseq_alloc_loom))]
fn wake_one(word: &AtomicU32) {
    // SAFETY: FUTEX_WAKE_PRIVATE on a live u32.
    let _ = unsafe {
        rseq_sys::syscall::syscall4(
            libc::SYS_futex,
            word.as_ptr() as usize,
            (libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG) as usize,
            1,
            0,
        )
    };
}

#[cfg(rseq_alloc_loom)]
fn wait_while(_: &AtomicU32, _: u32) {
    loom::thread::yield_now();
}

#[cfg(rseq_alloc_loom)]
fn wake_one(_: &AtomicU32) {}
