//! Upkeep on a clock: at most once per period (`RSEQ_ALLOC_DECAY_MS`,
//! default 1000; 0 turns it off and has the page heap unmap segments as
//! they empty), a round
//! - drains the cache of every CPU that has gone idle (its region did not
//!   change for a whole period) to the central lists, and re-sizes the
//!   classes of the others (`capacity`);
//! - gives back to the OS the free pages and empty segments that stayed
//!   unused for a whole period, the central lists' spare spans that went
//!   unused, and the cache of freed huge blocks if no huge block was asked
//!   for. What the round's own drains free has sat unused for a period
//!   already, and goes back in the same round.
//!
//! Every look at the clock also gives back the pages of cached huge
//! mappings unused for a sixteenth of the period (`huge::purge_idle`).
//!
//! Two kinds of thread run rounds. A program's thread whose miss went to
//! the central lists or the page heap anyway runs one when it is due (the
//! front calls [`after`] once the miss is served, holding nothing): the
//! fast path pays nothing, and the check reads the clock once every
//! [`CHECK_EVERY`] trips. And, in a program that has threads of its own
//! and has mapped a few segments, a thread of ours (started by an
//! allocation's slow path) runs a round when the program's threads have
//! not run one for a period: a program that stops allocating gets its free
//! memory back within about two periods. It
//! sleeps until the next round is due, so a program whose slow paths keep
//! the clock wakes it once a period for nothing more than a look at the
//! clock, and it parks for good (woken by the next slow path that finds it
//! parked) once a round finds nothing left to give back.
//!
//! A single-threaded program gets no thread: it would stop being
//! single-threaded, which glibc relies on (it takes no locks then, so that
//! a signal handler may fork in the middle of `printf` or `malloc`) and
//! the program may too. Its free memory goes back at its first slow path
//! after a period. `RSEQ_ALLOC_BACKGROUND=0` keeps the thread from starting
//! in any program (one that must stay single-threaded even with threads
//! come and gone, such as one that calls `unshare(CLONE_NEWUSER)`).

use core::ffi::c_void;

use crate::central::CENTRAL;
use crate::huge;
use crate::medium;
use crate::os;
use crate::percpu::{self, CentralTrip};
use crate::segment::{self, DECAY_WANTED, PAGE_HEAP, SEGMENT_SIZE};
use crate::sync::{AtomicIntOps, AtomicOps, AtomicU32, AtomicU64};

/// Slow-path events between two looks at the clock.
pub(crate) const CHECK_EVERY: u64 = 32;

/// The period in nanoseconds; 0: not read from the environment yet;
/// `u64::MAX`: off.
static PERIOD_NS: AtomicU64 = AtomicU64::new(0);
/// When the last round ran (monotonic nanoseconds; 0: the clock has not
/// started).
static LAST_RUN: AtomicU64 = AtomicU64::new(0);
/// Rounds run so far, and how many of them ran on the background thread.
pub(crate) static RUNS: AtomicU64 = AtomicU64::new(0);
pub(crate) static BACKGROUND_RUNS: AtomicU64 = AtomicU64::new(0);
/// Trips to the page heap for medium and huge blocks, which tick the clock
/// as the central trips do.
static PAGE_HEAP_TRIPS: AtomicU64 = AtomicU64::new(0);

/// The background thread's state.
static THREAD: AtomicU32 = AtomicU32::new(NOT_STARTED);
const NOT_STARTED: u32 = 0;
const RUNNING: u32 = 1;
const PARKED: u32 = 2;
/// Turned off by the environment, or the system refused the thread.
const UNAVAILABLE: u32 = 3;
/// Bytes of stack the background thread gets: a round is a few frames deep
/// and calls nothing that recurses.
const THREAD_STACK: usize = 128 << 10;

fn period_ns() -> u64 {
    match PERIOD_NS.load_relaxed() {
        0 => configure(os::env_u64(c"RSEQ_ALLOC_DECAY_MS"), true),
        ns => ns,
    }
}

/// Sets the period (`decay_ms`, default 1000; 0: no upkeep) and whether a
/// background thread may run rounds, before the first block is handed out;
/// returns the period in nanoseconds.
pub(crate) fn configure(decay_ms: Option<u64>, background: bool) -> u64 {
    let ms = decay_ms.unwrap_or(1000);
    let ns = if ms == 0 { u64::MAX } else { ms.saturating_mul(1_000_000) };
    PERIOD_NS.store_relaxed(ns);
    if !background || ns == u64::MAX {
        THREAD.store_relaxed(UNAVAILABLE);
    }
    PAGE_HEAP.keep_empty_segments_until_decay(ns != u64::MAX);
    ns
}

/// Called after an allocation's slow path with the central trip it made,
/// if any; runs a round if one is due, and starts the background thread if
/// it should run. The caller holds no lock and no region.
#[inline]
pub(crate) fn after_alloc(trip: CentralTrip) {
    after_free(trip);
    if THREAD.load_relaxed() == NOT_STARTED {
        start_thread_if_worth_it();
    }
}

/// Called after a free's slow path; as [`after_alloc`], but never starts
/// the thread: libc frees memory while it holds locks of its own that
/// `pthread_create` takes (the thread-stack cache's, when it frees a dead
/// thread's TLS), where it never allocates.
#[inline]
pub(crate) fn after_free(trip: CentralTrip) {
    if let Some(count) = trip.count()
        && count.is_multiple_of(CHECK_EVERY)
    {
        maybe_run();
    } else if DECAY_WANTED.load_relaxed() {
        wanted();
    }
}

/// Called after a medium or huge block came from (`alloc`) or went back to
/// the page heap; as [`after_alloc`] or [`after_free`], reading the clock
/// once every [`PAGE_HEAP_CHECK_EVERY`] trips: a trip costs a fraction of a
/// central one, and the clock is a system call.
#[inline]
pub(crate) fn after_page_heap_trip(alloc: bool) {
    // Counted without an atomic addition (which would wait for the
    // program's pending stores to the block just freed): a count lost to a
    // race only moves the next look at the clock.
    let trips = PAGE_HEAP_TRIPS.load_relaxed();
    PAGE_HEAP_TRIPS.store_relaxed(trips.wrapping_add(1));
    if trips.is_multiple_of(PAGE_HEAP_CHECK_EVERY) {
        maybe_run();
    } else if DECAY_WANTED.load_relaxed() {
        wanted();
    }
    if alloc && THREAD.load_relaxed() == NOT_STARTED {
        start_thread_if_worth_it();
    }
}

/// Page heap trips between two looks at the clock.
const PAGE_HEAP_CHECK_EVERY: u64 = 256;

/// Mapped memory from which a program with threads gets the background
/// thread: below it, what a round could give back is not worth a thread.
const THREAD_FROM_MAPPED: usize = 2 * SEGMENT_SIZE;

#[cold]
#[inline(never)]
fn start_thread_if_worth_it() {
    // A single-threaded process stays one: glibc and programs rely on it
    // (glibc takes no locks then, so that a signal handler may fork in the
    // middle of `printf` or `malloc`).
    if PAGE_HEAP.mapped_bytes() < THREAD_FROM_MAPPED || period_ns() == u64::MAX || os::single_threaded() {
        return;
    }
    if THREAD.cas_relaxed(NOT_STARTED, RUNNING).is_ok() && !os::spawn_thread(background, THREAD_STACK) {
        THREAD.store_relaxed(UNAVAILABLE);
    }
}

/// The page heap keeps memory that only a round gives back: wake the
/// thread if it parked.
#[cold]
#[inline(never)]
fn wanted() {
    DECAY_WANTED.store_relaxed(false);
    wake_thread();
}

#[cold]
#[inline(never)]
fn maybe_run() {
    let period = period_ns();
    if period == u64::MAX {
        return;
    }
    DECAY_WANTED.store_relaxed(false);
    wake_thread();
    let now = os::monotonic_ns();
    huge::purge_idle(now, period);
    let last = LAST_RUN.load_relaxed();
    if now.saturating_sub(last) < period {
        return;
    }
    // One thread runs it (or, at the first check, starts the clock: there
    // is nothing to keep up yet); the others go on at once.
    if LAST_RUN.cas_relaxed(last, now).is_ok() && last != 0 && run() {
        wake_thread();
    }
}

/// One round of upkeep (also what tests call directly); true if free
/// memory is left that a later round may give back.
pub(crate) fn run() -> bool {
    RUNS.fetch_add_relaxed(1);
    segment::age_frees_of_this_thread(true);
    let cached = percpu::upkeep();
    let spares = CENTRAL.age_spares();
    segment::age_frees_of_this_thread(false);
    let kept = medium::decay();
    let pages = PAGE_HEAP.decay().holding;
    let huge = huge::decay();
    cached || spares || kept || pages || huge
}

/// Wakes the background thread if it parked.
fn wake_thread() {
    if THREAD.load_relaxed() == PARKED && THREAD.cas_relaxed(PARKED, RUNNING).is_ok() {
        os::futex_wake_one(&THREAD);
    }
}

/// The background thread: runs a round whenever one is due and no other
/// thread ran it, and parks once a round finds nothing left to give back.
extern "C" fn background(_: *mut c_void) -> *mut c_void {
    os::name_this_thread(c"rseq-alloc");
    let period = period_ns();
    loop {
        let last = LAST_RUN.load_relaxed();
        let now = os::monotonic_ns();
        let due = if last == 0 { now } else { last.saturating_add(period) };
        if now < due {
            os::futex_wait_for(&THREAD, RUNNING, due - now);
            continue;
        }
        if LAST_RUN.cas_relaxed(last, now).is_err() {
            continue;
        }
        BACKGROUND_RUNS.fetch_add_relaxed(1);
        if !run() && THREAD.cas_relaxed(RUNNING, PARKED).is_ok() {
            while THREAD.load_relaxed() == PARKED {
                os::futex_wait(&THREAD, PARKED);
            }
        }
    }
}

/// In a child after `fork`: the background thread did not come along;
/// the next slow path that needs it starts another.
pub(crate) fn forget_thread_in_child() {
    if THREAD.load_relaxed() != UNAVAILABLE {
        THREAD.store_relaxed(NOT_STARTED);
    }
}
