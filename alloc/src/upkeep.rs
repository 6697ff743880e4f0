//! Upkeep on a clock, paid by slow paths: at most once per period
//! (`RSEQ_ALLOC_DECAY_MS`, default 1000; 0 turns it off), a thread whose
//! miss went to the central lists anyway (the front calls [`after`] once
//! the miss is served, holding nothing)
//! - drains the cache of every CPU that has gone idle (its region did not
//!   change for a whole period) to the central lists, and re-sizes the
//!   classes of the others (`capacity`);
//! - gives back to the OS the free pages that stayed free for a whole
//!   period (`madvise`), the central lists' spare spans that went unused,
//!   and the cache of freed huge blocks if no huge block was asked for.
//!
//! The fast path pays nothing: the check rides on the counters that refills
//! and drains already bump ([`CentralTrip`]), and reads the clock once
//! every [`CHECK_EVERY`] of them. A process that stops allocating altogether
//! keeps what it holds until it allocates again or calls `trim`: there is no
//! thread of ours to do it behind the program's back.

use crate::central::CENTRAL;
use crate::huge;
use crate::os;
use crate::percpu::{self, CentralTrip};
use crate::segment::PAGE_HEAP;
use crate::sync::{AtomicIntOps, AtomicOps, AtomicU64};

/// Slow-path events between two looks at the clock.
pub(crate) const CHECK_EVERY: u64 = 32;

/// The period in nanoseconds; 0: not read from the environment yet;
/// `u64::MAX`: off.
static PERIOD_NS: AtomicU64 = AtomicU64::new(0);
/// When the last upkeep ran (monotonic nanoseconds).
static LAST_RUN: AtomicU64 = AtomicU64::new(0);
/// Upkeeps run so far.
pub(crate) static RUNS: AtomicU64 = AtomicU64::new(0);

fn period_ns() -> u64 {
    match PERIOD_NS.load_relaxed() {
        0 => {
            let ms = os::env_u64(c"RSEQ_ALLOC_DECAY_MS").unwrap_or(1000);
            let ns = if ms == 0 { u64::MAX } else { ms.saturating_mul(1_000_000) };
            PERIOD_NS.store_relaxed(ns);
            ns
        }
        ns => ns,
    }
}

/// Called after a slow path with the central trip it made, if any; runs
/// the upkeep if it is due. The caller holds no lock and no region.
#[inline]
pub(crate) fn after(trip: CentralTrip) {
    if let Some(count) = trip.count()
        && count.is_multiple_of(CHECK_EVERY)
    {
        maybe_run();
    }
}

#[cold]
#[inline(never)]
fn maybe_run() {
    let period = period_ns();
    if period == u64::MAX {
        return;
    }
    let now = os::monotonic_ns();
    let last = LAST_RUN.load_relaxed();
    if now.saturating_sub(last) < period {
        return;
    }
    // One thread runs it (or, at the first check, starts the clock: there
    // is nothing to keep up yet); the others go on at once.
    if LAST_RUN.cas_relaxed(last, now).is_ok() && last != 0 {
        run();
    }
}

/// One round of upkeep (also what tests call directly).
pub(crate) fn run() {
    RUNS.fetch_add_relaxed(1);
    percpu::upkeep();
    CENTRAL.age_spares();
    PAGE_HEAP.decay();
    huge::decay();
}
