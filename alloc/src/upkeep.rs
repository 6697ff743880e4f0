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
//! Two kinds of thread run rounds. A program's thread whose miss went to
//! the central lists or the page heap anyway runs one when it is due (the
//! front calls [`after`] once the miss is served, holding nothing): the
//! fast path pays nothing, and the check reads the clock once every
//! [`CHECK_EVERY`] trips. And a thread of ours, started the first time the
//! page heap keeps an empty segment or a round finds free memory held,
//! runs a round when the program's threads have not run one for a period:
//! a program that stops allocating gets its free memory back within about
//! two periods. It sleeps until the next round is due, so a program whose
//! slow paths keep the clock wakes it once a period for nothing more than a
//! look at the clock, and it parks for good (woken by the next slow path
//! that finds it parked) once a round finds nothing left to give back.
//! `RSEQ_ALLOC_BACKGROUND=0` keeps it from starting (for a program that
//! must stay single-threaded, such as one that calls
//! `unshare(CLONE_NEWUSER)`).

use core::ffi::c_void;

use crate::central::CENTRAL;
use crate::huge;
use crate::os;
use crate::percpu::{self, CentralTrip};
use crate::segment::{self, DECAY_WANTED, PAGE_HEAP};
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

/// Called after a slow path with the central trip it made, if any; runs a
/// round if one is due. The caller holds no lock and no region.
#[inline]
pub(crate) fn after(trip: CentralTrip) {
    if let Some(count) = trip.count()
        && count.is_multiple_of(CHECK_EVERY)
    {
        maybe_run();
    } else if DECAY_WANTED.load_relaxed() {
        wanted();
    }
}

/// Called after a medium or huge block went to or came from the page heap;
/// as [`after`].
#[inline]
pub(crate) fn after_page_heap_trip() {
    after(CentralTrip::after(PAGE_HEAP_TRIPS.fetch_add_relaxed(1)));
}

/// The page heap keeps memory that only a round gives back: make sure one
/// will come.
#[cold]
#[inline(never)]
fn wanted() {
    DECAY_WANTED.store_relaxed(false);
    wake_or_start_thread();
}

#[cold]
#[inline(never)]
fn maybe_run() {
    let period = period_ns();
    if period == u64::MAX {
        return;
    }
    if DECAY_WANTED.load_relaxed() {
        DECAY_WANTED.store_relaxed(false);
        wake_or_start_thread();
    } else if THREAD.load_relaxed() == PARKED {
        wake_or_start_thread();
    }
    let now = os::monotonic_ns();
    let last = LAST_RUN.load_relaxed();
    if now.saturating_sub(last) < period {
        return;
    }
    // One thread runs it (or, at the first check, starts the clock: there
    // is nothing to keep up yet); the others go on at once.
    if LAST_RUN.cas_relaxed(last, now).is_ok() && last != 0 && run() {
        wake_or_start_thread();
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
    let pages = PAGE_HEAP.decay().holding;
    let huge = huge::decay();
    cached || spares || pages || huge
}

/// Starts the background thread if it may run and has not started, or
/// wakes it if it parked.
fn wake_or_start_thread() {
    match THREAD.load_relaxed() {
        NOT_STARTED => {
            if THREAD.cas_relaxed(NOT_STARTED, RUNNING).is_ok() && !os::spawn_thread(background, THREAD_STACK) {
                THREAD.store_relaxed(UNAVAILABLE);
            }
        }
        PARKED => {
            if THREAD.cas_relaxed(PARKED, RUNNING).is_ok() {
                os::futex_wake_one(&THREAD);
            }
        }
        _ => {}
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
