//! What the per-CPU layer counts, in one place: misses (refills and drains,
//! per class) and the rarer events of regions, drains and re-sizing. All
//! on slow paths, relaxed: statistics, and the upkeep's clock.

use super::CentralTrip;
use crate::size_class::CLASSES;
use crate::sync::{AtomicIntOps, AtomicOps, AtomicU64};

/// The per-CPU layer's counters ([`COUNTERS`]).
pub(crate) struct Counters {
    /// Per class: allocations that found the cache empty and went to the central list.
    pub(crate) refills: [AtomicU64; CLASSES + 1],
    /// Per class: frees that found the cache full and went to the central list.
    pub(crate) drains: [AtomicU64; CLASSES + 1],
    /// Regions opened.
    pub(crate) regions_opened: AtomicU64,
    /// Objects moved from regions to the central lists by remote drains.
    pub(crate) drained_objects: AtomicU64,
    /// Regions drained because their CPU was idle.
    pub(crate) idle_drains: AtomicU64,
    /// Regions whose classes were re-sized by the upkeep.
    pub(crate) rebalances: AtomicU64,
    /// Class stacks moved between their home and their growth range.
    pub(crate) stack_moves: AtomicU64,
}

/// The process's counters.
pub(crate) static COUNTERS: Counters = Counters {
    refills: [const { AtomicU64::new(0) }; CLASSES + 1],
    drains: [const { AtomicU64::new(0) }; CLASSES + 1],
    regions_opened: AtomicU64::new(0),
    drained_objects: AtomicU64::new(0),
    idle_drains: AtomicU64::new(0),
    rebalances: AtomicU64::new(0),
    stack_moves: AtomicU64::new(0),
};

impl Counters {
    /// Counts a refill of `class`: the trip it is.
    pub(crate) fn refill(&self, class: usize) -> CentralTrip {
        CentralTrip::after(self.refills[class].fetch_add_relaxed(1))
    }

    /// Counts a drain of `class`: the trip it is.
    pub(crate) fn drain(&self, class: usize) -> CentralTrip {
        CentralTrip::after(self.drains[class].fetch_add_relaxed(1))
    }

    /// Adds `n` to `counter`.
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add_relaxed(n);
    }

    /// Reads `counter`.
    pub(crate) fn read(counter: &AtomicU64) -> u64 {
        counter.load_relaxed()
    }
}
