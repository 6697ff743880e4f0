//! `fork` from a multithreaded process: the child has one thread, so a lock
//! held by any other thread at the moment of `fork` would stay held forever.
//! Before `fork` we take every lock, in the order the allocator nests them,
//! and both sides release them after:
//!
//! 0. stdio's list lock (glibc's `_IO_list_lock`), before any lock of ours:
//!    glibc's `fork` takes it itself only after the prepare handlers, and a
//!    thread holding it (`fflush(NULL)`) may wait for a FILE's lock whose
//!    holder waits in our `realloc` (`getline`): holding our locks while
//!    waiting for the list lock would close that circle. glibc's own malloc
//!    takes its locks after the list lock for this reason (glibc bug
//!    19431). The lock is recursive, so glibc's `fork` takes it again; in
//!    the child glibc resets it, so only the parent releases ours. Where
//!    libc has no such lock (not glibc), this step is skipped;
//! 1. the openings lock, so that no region is opened from here on;
//! 2. every per-CPU region, waiting for any that another thread holds (a
//!    fallback-mode thread at work in it, a drain, an opening): a region
//!    held by a thread the child does not have would stay closed in the
//!    child, with its cached objects, for good (`fallback::hold_for_fork`);
//!    a holder may wait for the locks of step 3, so the handler waits only
//!    if its own thread holds none of them (see below: if it does, a region
//!    busy at that moment stays closed in the child);
//! 3. the drain lock, the central lists, the page heap, then the huge-block
//!    cache, which nests in none.
//!
//! Sections need nothing: in rseq mode the child inherits a consistent copy
//! of a region (a section interrupted by `fork` is restarted in the child,
//! as after any preemption, and another thread's is not in the child).
//! A lock or region the forking thread itself holds is skipped: `fork` was
//! called from a signal handler that interrupted that thread's slow path,
//! which finishes and releases it when the handler returns, on both sides
//! (glibc gives the same guarantee; allocators that take the lock anyway
//! hang there).
//!
//! # When the handlers are registered
//!
//! `pthread_atfork` lives among the fork code of libc, which a program that
//! never forks never touches: registering at initialisation made every
//! program map those 64 KiB of libc (fault-around maps 16 pages at a time),
//! a sixth of our whole fixed cost. So the preload library, whose `fork`,
//! `daemon` and `forkpty` wrap libc's ([`fork`], [`daemon`], [`forkpty`]),
//! registers from those wrappers, on the first fork (`daemon` and `forkpty`
//! fork inside libc, past our `fork`; so does sunrpc's obsolete `key_call`,
//! not wrapped); those are the calls a program forks by that run fork
//! handlers at all (`vfork`, `_Fork`,
//! `posix_spawn` and so `system` and `popen` run none, and their children
//! must not allocate). A Rust program, which links the allocator without
//! the wrappers, registers at initialisation as before.
//!
//! Registered late, our prepare handler runs before the handlers of
//! libraries that registered earlier (prepare handlers run last-registered
//! first), and theirs may allocate on the forking thread while we hold
//! every lock: [`Lock`](crate::lock::Lock) lets that thread through a lock
//! it holds for `fork`. Two threads may register at once: the handlers then
//! run twice per fork, and [`DEPTH`] makes the inner pair do nothing; two
//! threads that fork at once take turns ([`FORKER`]).

use core::ffi::{CStr, c_char, c_int, c_void};
use core::marker::PhantomData;

use crate::central::CENTRAL;
use crate::os;
use crate::percpu::{DRAIN_LOCK, OPENINGS};
use crate::segment::PAGE_HEAP;
use crate::sync::{AtomicBool, AtomicIntOps, AtomicOps, AtomicU32, AtomicU64, AtomicUsize};

// Which locks `prepare` took: written and read only by the forking thread
// between `prepare` and its parent/child handler (a second forking thread
// waits in `prepare` for the first one's locks).
static TAKEN_CENTRAL: AtomicU128Cell = AtomicU128Cell::new();
static TAKEN_PAGE_HEAP: AtomicBool = AtomicBool::new(false);
static TAKEN_DRAIN: AtomicBool = AtomicBool::new(false);
static TAKEN_OPENINGS: AtomicBool = AtomicBool::new(false);
static TAKEN_HUGE: AtomicBool = AtomicBool::new(false);

/// How many of our prepare handlers have run in the fork under way, less
/// the release handlers that have: only the outermost pair takes and
/// releases the locks. Only the thread in [`FORKER`] touches it.
static DEPTH: AtomicU32 = AtomicU32::new(0);

/// The thread whose fork holds the locks (0: none), set once it holds the
/// first of them. Two threads may fork at once (glibc runs the handlers
/// without a lock of its own): only the first finds itself here; the
/// other waits in `prepare` for the locks, and so for the first fork's
/// release. A signal handler that forks on the forking thread finds
/// itself here too, and leaves the locks to the fork it interrupted.
static FORKER: AtomicUsize = AtomicUsize::new(0);

extern "C" fn prepare() {
    let me = crate::sync::current_thread();
    if FORKER.load_relaxed() == me {
        DEPTH.fetch_add_relaxed(1);
        return;
    }
    if let Some(lock) = STDIO_LIST.lock() {
        // SAFETY: glibc's `_IO_list_lock`: no arguments, and recursive for
        // a thread that holds it already.
        unsafe { lock() };
        TAKEN_STDIO.store_relaxed(true);
    }
    TAKEN_OPENINGS.store_relaxed(OPENINGS.lock_for_fork());
    FORKER.store_relaxed(me);
    DEPTH.store_relaxed(1);
    // A region's holder may wait for any of the locks below: if this thread
    // holds one (it forks from a signal handler that interrupted it in a
    // slow path), waiting for the holder could wait forever.
    let interrupted_slow_path =
        DRAIN_LOCK.held_here() || CENTRAL.any_held_here() || PAGE_HEAP.held_here() || crate::huge::held_here();
    crate::percpu::hold_regions_for_fork(!interrupted_slow_path);
    TAKEN_DRAIN.store_relaxed(DRAIN_LOCK.lock_for_fork());
    TAKEN_CENTRAL.set(CENTRAL.lock_all_for_fork());
    TAKEN_PAGE_HEAP.store_relaxed(PAGE_HEAP.lock_for_fork());
    TAKEN_HUGE.store_relaxed(crate::huge::lock_for_fork());
}

extern "C" fn release_in_parent() {
    release(false);
}

extern "C" fn release_in_child() {
    crate::upkeep::forget_thread_in_child();
    release(true);
}

fn release(child: bool) {
    if DEPTH.load_relaxed() != 1 {
        DEPTH.fetch_sub_relaxed(1);
        return;
    }
    // SAFETY: `prepare` took exactly these locks on this thread, and `fork`
    // runs exactly one of the parent/child handlers on each side.
    unsafe {
        if TAKEN_HUGE.load_relaxed() {
            crate::huge::unlock_after_fork();
        }
        if TAKEN_PAGE_HEAP.load_relaxed() {
            PAGE_HEAP.unlock_after_fork();
        }
        CENTRAL.unlock_all_after_fork(TAKEN_CENTRAL.get());
        if TAKEN_DRAIN.load_relaxed() {
            DRAIN_LOCK.unlock_after_fork();
        }
        crate::percpu::release_regions_after_fork();
    }
    // Only now, with the regions released (a `fork` from a signal handler
    // that interrupted the release until here leaves them to it, where it
    // would otherwise wait forever for them), and before the first lock
    // another forking thread may be waiting for.
    FORKER.store_relaxed(0);
    DEPTH.store_relaxed(0);
    if TAKEN_OPENINGS.load_relaxed() {
        // SAFETY: as above.
        unsafe { OPENINGS.unlock_after_fork() };
    }
    // In the child glibc has reset the list lock already.
    if TAKEN_STDIO.swap_relaxed(false)
        && !child
        && let Some(unlock) = STDIO_LIST.unlock()
    {
        // SAFETY: `prepare` took the list lock on this thread.
        unsafe { unlock() };
    }
}

/// stdio's list lock and unlock functions, found at registration (0: libc has none).
struct StdioList {
    lock: AtomicUsize,
    unlock: AtomicUsize,
}

static STDIO_LIST: StdioList = StdioList { lock: AtomicUsize::new(0), unlock: AtomicUsize::new(0) };
/// Whether `prepare` took the list lock (only the forking thread reads it).
static TAKEN_STDIO: AtomicBool = AtomicBool::new(false);

impl StdioList {
    /// Looks the functions up (both or neither).
    fn find(&self) {
        let (lock, unlock) = (os::global_symbol(c"_IO_list_lock"), os::global_symbol(c"_IO_list_unlock"));
        if lock != 0 && unlock != 0 {
            self.lock.store_relaxed(lock);
            self.unlock.store_relaxed(unlock);
        }
    }

    fn lock(&self) -> Option<unsafe extern "C" fn()> {
        Self::function(self.lock.load_relaxed())
    }

    fn unlock(&self) -> Option<unsafe extern "C" fn()> {
        Self::function(self.unlock.load_relaxed())
    }

    fn function(address: usize) -> Option<unsafe extern "C" fn()> {
        // SAFETY: a non-zero address `find` got from libc for a function
        // that takes nothing and returns nothing.
        (address != 0).then(|| unsafe { core::mem::transmute::<usize, unsafe extern "C" fn()>(address) })
    }
}

/// A `u128` kept in two relaxed atomic words (only the forking thread uses it).
struct AtomicU128Cell([AtomicU64; 2]);

impl AtomicU128Cell {
    const fn new() -> Self {
        AtomicU128Cell([AtomicU64::new(0), AtomicU64::new(0)])
    }

    fn set(&self, value: u128) {
        self.0[0].store_relaxed(value as u64);
        self.0[1].store_relaxed((value >> 64) as u64);
    }

    fn get(&self) -> u128 {
        u128::from(self.0[0].load_relaxed()) | u128::from(self.0[1].load_relaxed()) << 64
    }
}

/// Whether the handlers are registered.
static REGISTERED: AtomicBool = AtomicBool::new(false);
/// Whether this process runs the preload library's wrappers (its
/// constructor says so, see [`wrappers_loaded`]).
static WRAPPED: AtomicBool = AtomicBool::new(false);

/// Installs the handlers, unless they are (only after initialisation:
/// `pthread_atfork` may allocate, through us).
pub(crate) fn register() {
    if REGISTERED.load_acquire() {
        return;
    }
    STDIO_LIST.find();
    os::at_fork(prepare, release_in_parent, release_in_child);
    REGISTERED.store_release(true);
}

/// At initialisation: registers the handlers now, unless the fork wrappers
/// will, at the first fork.
pub(crate) fn register_unless_wrapped() {
    if !WRAPPED.load_acquire() {
        register();
    }
}

/// Called by the preload library's constructor, before `main`, with the
/// address of its `fork`: if that is the `fork` the program calls (the
/// library was preloaded, not opened with `dlopen` after libc), its wrappers
/// will register the handlers, and initialisation need not. Resolves libc's
/// functions now, so that a `fork` from a signal handler needs no `dlsym`.
pub fn wrappers_loaded(own_fork: usize) {
    let global_fork = os::global_symbol(c"fork");
    let resolved = NEXT_FORK.resolve() != 0 && NEXT_DAEMON.resolve() != 0 && NEXT_FORKPTY.resolve() != 0;
    if global_fork == own_fork && resolved {
        WRAPPED.store_release(true);
    }
}

/// The definition of a C function, of type `F` (an `extern "C" fn`), that
/// comes after ours (libc's, or another wrapper's), found once by
/// `dlsym(RTLD_NEXT)`.
struct Next<F> {
    name: &'static CStr,
    address: AtomicUsize,
    kind: PhantomData<F>,
}

impl<F: Copy> Next<F> {
    const fn new(name: &'static CStr) -> Next<F> {
        Next { name, address: AtomicUsize::new(0), kind: PhantomData }
    }

    /// Its address, or 0 if no later object defines it.
    fn resolve(&self) -> usize {
        let known = self.address.load_acquire();
        if known != 0 {
            return known;
        }
        let found = os::next_symbol(self.name);
        self.address.store_release(found);
        found
    }

    /// What every wrapper does first: registers the handlers, then finds
    /// the function it wraps (`None`, with `errno = ENOSYS`, if no later
    /// object defines it).
    fn before_forking(&self) -> Option<F> {
        const { assert!(core::mem::size_of::<F>() == core::mem::size_of::<usize>()) };
        register();
        match self.resolve() {
            0 => {
                os::set_errno(libc::ENOSYS);
                None
            }
            // SAFETY: `F` is the type of the C function named `name` (each
            // static below says which), a function pointer of one word.
            address => Some(unsafe { core::mem::transmute_copy::<usize, F>(&address) }),
        }
    }
}

type ForkPty = unsafe extern "C" fn(*mut c_int, *mut c_char, *const c_void, *const c_void) -> libc::pid_t;

static NEXT_FORK: Next<unsafe extern "C" fn() -> libc::pid_t> = Next::new(c"fork");
static NEXT_DAEMON: Next<unsafe extern "C" fn(c_int, c_int) -> c_int> = Next::new(c"daemon");
static NEXT_FORKPTY: Next<ForkPty> = Next::new(c"forkpty");

/// `fork`, as the preload library exports it: registers the handlers, then
/// calls the next `fork` (libc's).
///
/// # Safety
/// `fork`'s contract.
pub unsafe fn fork() -> libc::pid_t {
    // SAFETY: the caller keeps fork's contract.
    NEXT_FORK.before_forking().map_or(-1, |next| unsafe { next() })
}

/// `daemon`, which forks inside libc, past our `fork`: registers the
/// handlers, then calls the next `daemon`.
///
/// # Safety
/// `daemon`'s contract.
pub unsafe fn daemon(nochdir: c_int, noclose: c_int) -> c_int {
    // SAFETY: the caller keeps daemon's contract.
    NEXT_DAEMON.before_forking().map_or(-1, |next| unsafe { next(nochdir, noclose) })
}

/// `forkpty`, which forks inside libc, past our `fork`: registers the
/// handlers, then calls the next `forkpty`. The terminal structures pass
/// through as opaque pointers.
///
/// # Safety
/// `forkpty`'s contract: `amaster` points to an int; `name` is null or has
/// room for a terminal name; `termp` and `winp` are null or valid.
pub unsafe fn forkpty(
    amaster: *mut c_int,
    name: *mut c_char,
    termp: *const c_void,
    winp: *const c_void,
) -> libc::pid_t {
    // SAFETY: the caller keeps forkpty's contract.
    NEXT_FORKPTY.before_forking().map_or(-1, |next| unsafe { next(amaster, name, termp, winp) })
}
