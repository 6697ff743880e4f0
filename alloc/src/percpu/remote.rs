//! Stopping a region from outside, as only a thread other than its users
//! can: remote drains (`trim`, an idle CPU), the upkeep's re-sizing, and
//! the fork handlers' hold on every region. In rseq mode a stop is followed
//! by a `membarrier` fence of that CPU, so no section that read OPEN can
//! still commit.

use rseq_sys::slab_layout::STATE_OPEN;

use super::adapt;
use super::capacity::MAX_BATCH;
use super::counters::{COUNTERS, Counters};
use super::protocol;
use super::region::{self, RawRegion, fill, geometry, header, regions, send_home, state, upkeep_state};
pub(crate) use super::region::{DRAIN_LOCK, OPENINGS};
use super::{MODE, MODE_RSEQ};
use crate::central::CENTRAL;
use crate::size_class::{CLASSES, SIZES};
use crate::sync::AtomicOps;

// Draining a region from any thread (trim, idle CPUs).

/// The fork prepare handler's step after it took [`OPENINGS`] and before
/// any other lock: waits (if `wait`) for every region another thread holds
/// and holds it (`protocol::hold_for_fork`), so that the child inherits
/// none held by a thread it does not have. In either mode; until
/// [`release_regions_after_fork`], sections miss and fallback threads find
/// every region busy, and both go to the central lists.
pub(crate) fn hold_regions_for_fork(wait: bool) {
    let Some(count) = regions() else { return };
    for cpu in 0..count {
        protocol::hold_for_fork(&RawRegion(region::at(cpu)), wait);
    }
}

/// Undoes [`hold_regions_for_fork`] (the fork's parent and child handlers).
pub(crate) fn release_regions_after_fork() {
    let Some(count) = regions() else { return };
    for cpu in 0..count {
        protocol::release_after_fork(&RawRegion(region::at(cpu)));
    }
}

/// Moves every object cached in `cpu`'s region to the central lists (the
/// protocol is `protocol::drain_remote`; in rseq mode the stop is followed by a
/// `membarrier` rseq fence of that CPU). While it runs, sections on that CPU
/// miss and their threads use the central lists; fallback threads use other
/// regions. Returns the bytes moved (0 if the region was busy, never opened,
/// or could not be fenced: a kernel before 5.10 or a seccomp filter).
pub(crate) fn drain_remote(cpu: u32) -> usize {
    if cpu >= regions().unwrap_or(0) {
        return 0;
    }
    let _guard = DRAIN_LOCK.lock();
    let rseq = MODE.load_acquire() == MODE_RSEQ;
    let mut batch = [0usize; MAX_BATCH];
    let mut bytes = 0;
    let drained = protocol::drain_remote(
        &RawRegion(region::at(cpu)),
        geometry(),
        &mut batch,
        || !rseq || rseq_sys::fence_cpu(cpu).is_ok(),
        |class, objects| {
            CENTRAL.give(class, objects);
            bytes += objects.len() * SIZES[class] as usize;
        },
        |raw| send_home(raw.0),
    );
    Counters::add(&COUNTERS.drained_objects, drained.unwrap_or(0) as u64);
    bytes
}

/// Drains every CPU's region; returns the bytes moved.
pub(crate) fn drain_all_remote() -> usize {
    (0..regions().unwrap_or(0)).map(drain_remote).sum()
}

/// A digest of `cpu`'s region that changes whenever a section or a holder
/// changes a class's fill; 0 for a region that holds nothing.
fn fingerprint(cpu: u32) -> u64 {
    let region = region::at(cpu);
    if state(region).load_acquire() != STATE_OPEN {
        return 0;
    }
    let mut digest = 0u64;
    let mut cached = 0usize;
    for class in 1..=CLASSES {
        let word = header(region, class).load_relaxed();
        cached += fill(class, word).0;
        digest = (digest ^ word).wrapping_mul(0x100_0000_01b3);
    }
    if cached == 0 { 0 } else { digest | 1 }
}

/// Upkeep of every region: drains the regions of CPUs that did nothing
/// since the last round (their fingerprint did not change) and still cache
/// objects, and re-sizes the classes of the others (`capacity::plan`). A
/// CPU that allocates and frees in perfect balance looks idle too, and pays
/// one refill per period for it. True if a region still caches objects.
pub(crate) fn upkeep() -> bool {
    let Some(count) = regions() else { return false };
    let mut cached = false;
    for cpu in 0..count {
        let Some(last) = upkeep_state(cpu).map(|s| &s.fingerprint) else { return cached };
        let now = fingerprint(cpu);
        if now != 0 && now == last.load_relaxed() {
            drain_remote(cpu);
            Counters::add(&COUNTERS.idle_drains, 1);
        } else if now != 0 {
            adapt::rebalance(cpu);
        }
        // Written only if it changed: the state of a CPU never used is a
        // page never touched.
        let after = fingerprint(cpu);
        if after != last.load_relaxed() {
            last.store_relaxed(after);
        }
        cached |= after != 0;
    }
    cached
}
