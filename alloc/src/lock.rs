//! The one lock the allocator has, for slow paths only, and the waits it
//! is built from: system calls normally, loom's scheduler under
//! `cfg(rseq_alloc_loom)`.

use core::sync::atomic::{Ordering, compiler_fence};

#[cfg(not(rseq_alloc_loom))]
use crate::os;
use crate::sync::{AtomicBool, AtomicIntOps, AtomicOps, AtomicU32, AtomicUsize, current_thread};

/// A mutual-exclusion lock for slow paths (central lists, page heap): a few
/// spins, then `futex` sleep, so a holder that is preempted costs waiters a
/// sleep, not a burnt time slice. It never allocates and has no poisoning.
/// Uncontended, a lock and an unlock are one atomic instruction each, and
/// none at all while the process has a single thread (glibc's
/// `__libc_single_threaded`, which its own `malloc` trusts too): an atomic
/// instruction waits for every store the program has pending, and a program
/// that has just written a large block pays for all of them at the lock.
/// The word is written all the same, so "this thread holds it" stays exact.
/// A second thread can only come from this one (`pthread_create`, never
/// called with a lock of ours held), so no other thread can race the plain
/// accesses; a signal handler that interrupts them finds the lock as a
/// thread would.
///
/// The lock word *is* the holder's identity (its thread pointer), taken by
/// one compare-and-swap, so "this thread holds it" is exact at every
/// instruction, even to a signal handler that interrupted the holder. Two
/// things need that: `fork` from such a handler (the prepare handler must not
/// wait for its own thread), and a handler that allocates while its thread
/// is inside a slow path, which is reported and aborts instead of hanging
/// (only the rseq fast path, which holds no lock, is async-signal-safe).
///
/// Waiters that go to sleep set [`SLEEPERS`] in the lock word (thread
/// pointers are aligned, so bit 0 is free) and sleep on `wakeups`; an
/// unlock swaps the word to 0 and, if the bit was set, bumps `wakeups` and
/// wakes one. A waiter reads `wakeups` before it looks at the word, so an
/// unlock that came after that look changes `wakeups` and the sleep returns
/// at once: no wake-up is lost (every access involved is `SeqCst`).
///
/// A lock taken for `fork` ([`lock_for_fork`](Lock::lock_for_fork)) lets
/// its own thread back in until the fork is over: the other fork handlers
/// run on that thread between our prepare and release handlers, and may
/// allocate (ours can run first: it is registered lazily, see `fork`).
/// That is safe because the prepare handler took the lock between two
/// critical sections, so what it guards is consistent.
pub struct Lock {
    /// 0 when free, else the holder's identity, with [`SLEEPERS`] set if a
    /// waiter may be asleep.
    word: AtomicUsize,
    /// Bumped by each unlock that finds [`SLEEPERS`] set; waiters sleep on it.
    wakeups: Futex,
    /// Whether the holder took it for `fork`: written by the holder only,
    /// read only by a thread that finds itself the holder.
    held_for_fork: AtomicBool,
}

/// The lock word's bit for "a waiter may be asleep".
const SLEEPERS: usize = 1;

/// Tries before a waiter sleeps (one under loom, whose models then reach
/// the sleeping path).
const SPINS: u32 = if cfg!(rseq_alloc_loom) { 1 } else { 64 };

impl Lock {
    /// An unlocked lock.
    #[cfg(not(rseq_alloc_loom))]
    pub const fn new() -> Lock {
        Lock {
            word: AtomicUsize::new(0),
            wakeups: Futex { word: AtomicU32::new(0) },
            held_for_fork: AtomicBool::new(false),
        }
    }

    /// An unlocked lock.
    #[cfg(rseq_alloc_loom)]
    pub fn new() -> Lock {
        let wakeups = Futex { word: AtomicU32::new(0), model: Default::default() };
        Lock { word: AtomicUsize::new(0), wakeups, held_for_fork: AtomicBool::new(false) }
    }

    /// Takes the lock; it is released when the guard drops (unless this
    /// thread holds it for `fork`: then the release handler releases it).
    #[inline]
    pub fn lock(&self) -> LockGuard<'_> {
        let me = current_thread();
        debug_assert_eq!(me & SLEEPERS, 0);
        if single_threaded() && self.word.load_relaxed() == 0 {
            self.word.store_relaxed(me);
            // The guarded accesses stay after the store, where a signal
            // handler on this thread sees the lock held.
            compiler_fence(Ordering::SeqCst);
            return LockGuard { lock: self, owned: true };
        }
        let owned = self.word.cas_acquire(0, me).is_ok() || self.lock_contended(me);
        LockGuard { lock: self, owned }
    }

    /// The holder's identity (0 if free).
    fn holder(&self) -> usize {
        self.word.load_relaxed() & !SLEEPERS
    }

    /// Waits for the lock and takes it (returns true), or finds this thread
    /// holding it for `fork` (returns false: the guard must not release it).
    #[cold]
    fn lock_contended(&self, me: usize) -> bool {
        if self.holder() == me {
            if self.held_for_fork.load_relaxed() {
                return false;
            }
            #[cfg(not(rseq_alloc_loom))]
            os::fatal(
                b"rseq-alloc: allocation in a signal handler interrupted this thread's own allocator slow path; \
                  only the per-CPU fast path is async-signal-safe\n",
            );
        }
        for _ in 0..SPINS {
            if self.word.load_relaxed() == 0 && self.word.cas_acquire(0, me).is_ok() {
                return true;
            }
            spin_hint();
        }
        loop {
            let wakeups = self.wakeups.word.load_seq_cst();
            let word = self.word.load_seq_cst();
            if word == 0 {
                // Taken with the bit set: other waiters may be asleep, and
                // this unlock must wake the next.
                if self.word.cas_seq_cst(0, me | SLEEPERS).is_ok() {
                    return true;
                }
                continue;
            }
            if word & SLEEPERS == 0 && self.word.cas_seq_cst(word, word | SLEEPERS).is_err() {
                continue;
            }
            self.wakeups.wait_while(wakeups);
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
        self.holder() == current_thread()
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
        if single_threaded() && self.lock.word.load_relaxed() & SLEEPERS == 0 {
            compiler_fence(Ordering::SeqCst);
            self.lock.word.store_relaxed(0);
            return;
        }
        if self.lock.word.swap_seq_cst(0) & SLEEPERS != 0 {
            self.lock.wakeups.bump();
        }
    }
}

/// Whether the process has had only one thread so far (see [`Lock`]).
#[cfg(not(rseq_alloc_loom))]
#[inline(always)]
fn single_threaded() -> bool {
    rseq_sys::glibc_single_threaded().is_some_and(|flag| flag.load(Ordering::Relaxed) != 0)
}

/// Loom's threads are no `pthread`s: every model takes the atomic path.
#[cfg(rseq_alloc_loom)]
fn single_threaded() -> bool {
    false
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

/// A word threads sleep on until it changes: a futex, or under loom a
/// model of one (a condition variable, so that a lost wake-up leaves the
/// model's threads blocked, which loom reports as a deadlock).
struct Futex {
    word: AtomicU32,
    #[cfg(rseq_alloc_loom)]
    model: (loom::sync::Mutex<()>, loom::sync::Condvar),
}

impl Futex {
    /// Adds one to the word and wakes a thread that sleeps on it.
    fn bump(&self) {
        self.word.fetch_add_seq_cst(1);
        #[cfg(not(rseq_alloc_loom))]
        os::futex_wake_one(&self.word);
        #[cfg(rseq_alloc_loom)]
        {
            // Taken so that a sleeper between its check and its wait is not missed.
            drop(self.model.0.lock().unwrap());
            self.model.1.notify_one();
        }
    }

    /// Sleeps unless the word has changed from `value` (and may return early).
    fn wait_while(&self, value: u32) {
        #[cfg(not(rseq_alloc_loom))]
        os::futex_wait(&self.word, value);
        #[cfg(rseq_alloc_loom)]
        {
            let guard = self.model.0.lock().unwrap();
            if self.word.load_seq_cst() == value {
                drop(self.model.1.wait(guard).unwrap());
            }
        }
    }
}
