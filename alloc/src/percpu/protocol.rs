//! The fallback path's protocol, written once over any region storage, so
//! that the loom models in `tests/` check this very code (over loom atomics)
//! while the allocator runs it over raw mapped memory.
//!
//! Without rseq, a per-CPU region is held by a thread through its state word:
//! compare-and-swap OPEN→holder (or UNINIT→holder, and format it), work on
//! it with plain atomic loads and stores, store OPEN with release ordering.
//! A thread that finds a region busy moves on to the next one, and to the
//! central lists when every region is busy, so it never waits for a holder
//! that has been preempted. A held region is a private stack, so there is no
//! ABA: nothing is ever compared against a value that may have been recycled.
//!
//! The busy value is the holder's identity (its thread pointer), as in the
//! slow-path lock, so that "this thread holds it" is exact at every
//! instruction. The fork handlers need that: before `fork` they stop new
//! openings, then wait for every region another thread holds and take it
//! ([`hold_for_fork`]), so that the child, which has only the forking
//! thread, inherits no region held by a thread it does not have (its
//! cached objects would be lost to it, the region closed for good). A
//! region the forking thread holds itself (`fork` from a signal handler
//! that interrupted its hold) is left to the hold, which finishes on both
//! sides when the handler returns.
//!
//! Openings take a lock ([`RegionStore::openings`]) because a region never
//! initialised must stay so while a fork is prepared, and writing every
//! such region's state word to close it would make each one's first page
//! resident; the lock is what the fork handlers take instead.

use rseq_sys::slab_layout::{Header, SENTINEL_BIT, STATE_OPEN, STATE_UNINIT, first_free_slot};

use crate::lock::{self, Lock};
use crate::sync::{self, AtomicOps, AtomicU64, AtomicUsize};

/// The busy value of a region the fork handlers hold (never a thread
/// pointer: those are aligned).
const FORK_HELD: u64 = 2;

/// This thread's busy value.
fn me() -> u64 {
    sync::current_thread() as u64
}

/// Where a region's state word, headers and slots live.
pub trait RegionStore {
    /// The region's state word.
    fn state(&self) -> &AtomicU64;
    /// The lock every opening of a region of this slab holds (one for the
    /// whole slab): the fork handlers hold it while they hold the regions.
    fn openings(&self) -> &Lock;
    /// `class`'s header.
    fn header(&self, class: usize) -> &AtomicU64;
    /// Slot `index` (slot numbers as in `rseq_sys::slab_layout`).
    fn slot(&self, index: usize) -> &AtomicUsize;
}

/// Where each class wakes: `home[c]` is its first slot (the sentinel is at
/// `home[c] - 1`), `capacity[c]` how many it gets there. Class 0 is unused.
/// Class 1's home starts right after the headers, and its sentinel is the
/// one dormant classes share, written when the region is formatted.
///
/// The protocol never needs to know where a class's stack is beyond that:
/// the sentinel below it says where it ends, so the owner may move a
/// stack it holds elsewhere (the allocator moves a class that grows out of
/// its home).
#[derive(Clone, Copy, Debug)]
pub struct Geometry<'a> {
    /// First slot of each class's home.
    pub home: &'a [u32],
    /// Slots of each class at home when an allocation wakes it.
    pub capacity: &'a [u32],
    /// Slots of each class at home when a free wakes it: fewer, since its
    /// objects may only pass through (freed here, allocated elsewhere), and
    /// a cache filling to the brim before anything could tell held a
    /// consumer's memory.
    pub freed_capacity: &'a [u32],
}

/// What woke a dormant class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WokenBy {
    /// An allocation (a refill): [`Geometry::capacity`].
    Allocation,
    /// A free: [`Geometry::freed_capacity`].
    Free,
}

impl Geometry<'_> {
    /// The sentinel slot dormant classes share.
    pub fn shared_sentinel(&self) -> usize {
        first_free_slot(self.home.len())
    }

    /// The header of a class that has no slots of its own yet in a region
    /// (see `rseq_sys::slab_layout`): every pop and push misses.
    pub fn dormant(&self) -> Header {
        let above = (self.shared_sentinel() + 1) as u32;
        Header { current: above, end: above }
    }

    /// The header of `class` when it wakes: empty, with the capacity of
    /// what woke it.
    pub fn awake(&self, class: usize, by: WokenBy) -> Header {
        let home = self.home[class];
        debug_assert!(home as usize > self.shared_sentinel());
        let capacity = match by {
            WokenBy::Allocation => self.capacity[class],
            WokenBy::Free => self.freed_capacity[class],
        };
        Header { current: home, end: home + capacity }
    }
}

/// Formats a region this thread holds: every class dormant, so the
/// only memory written is the first page (headers and the shared
/// sentinel); a class's slots are touched when it first wakes there.
pub fn format<R: RegionStore>(region: &R, geometry: Geometry<'_>) {
    region.slot(geometry.shared_sentinel()).store_relaxed(SENTINEL_BIT);
    for class in 1..geometry.home.len() {
        region.header(class).store_relaxed(geometry.dormant().pack());
    }
}

/// Gives dormant `class` its own slots in a held region; false if it was
/// awake already.
pub fn wake<R: RegionStore>(region: &R, geometry: Geometry<'_>, class: usize, by: WokenBy) -> bool {
    if region.header(class).load_relaxed() != geometry.dormant().pack() {
        return false;
    }
    let awake = geometry.awake(class, by);
    region.slot(awake.current as usize - 1).store_relaxed(SENTINEL_BIT);
    region.header(class).store_relaxed(awake.pack());
    true
}

/// Holds `region` if it is open, or never initialised (then formats it);
/// false if someone else holds it, or it cannot be opened now.
pub fn try_hold<R: RegionStore>(region: &R, geometry: Geometry<'_>) -> bool {
    match region.state().cas_acquire(STATE_OPEN, me()) {
        Ok(_) => true,
        Err(STATE_UNINIT) => open(region, geometry),
        Err(_) => false,
    }
}

/// Holds a region never initialised and formats it, under the slab's
/// openings lock (it waits while a fork is being prepared); false if
/// another thread opened it first.
pub fn open<R: RegionStore>(region: &R, geometry: Geometry<'_>) -> bool {
    // Most callers found the region closed, not new: no lock for them.
    if region.state().load_relaxed() != STATE_UNINIT {
        return false;
    }
    let _opening = region.openings().lock();
    let won = region.state().cas_acquire(STATE_UNINIT, me()).is_ok();
    if won {
        format(region, geometry);
    }
    won
}

/// Holds an open region from outside (to drain or re-size it), then runs
/// `after_stop` (in rseq mode, the fence); false, with the region left as
/// it was, if it was not open or `after_stop` failed. Undo with [`release`].
pub fn stop<R: RegionStore>(region: &R, after_stop: impl FnOnce() -> bool) -> bool {
    if region.state().cas_acq_rel_fail_relaxed(STATE_OPEN, me()).is_err() {
        return false;
    }
    if !after_stop() {
        release(region);
        return false;
    }
    true
}

/// Empties a region from outside: takes it OPEN→busy (a region never
/// initialised has nothing to drain; one held by someone else is left
/// alone), hands every cached item of every class to `sink` in batches of at
/// most `batch.len()`, runs `emptied` on the empty region, and reopens it.
/// `after_stop` runs between the stop and the first pop: in rseq mode it is
/// the fence that keeps a section which read OPEN before the stop from
/// committing; if it fails the region is reopened untouched. Returns how
/// many items were drained, `None` if the region was not drained.
pub fn drain_remote<R: RegionStore>(
    region: &R,
    geometry: Geometry<'_>,
    batch: &mut [usize],
    after_stop: impl FnOnce() -> bool,
    mut sink: impl FnMut(usize, &[usize]),
    emptied: impl FnOnce(&R),
) -> Option<usize> {
    if !stop(region, after_stop) {
        return None;
    }
    let mut drained = 0;
    for class in 1..geometry.home.len() {
        loop {
            let mut n = 0;
            while n < batch.len() {
                match pop(region, class) {
                    Some(item) => batch[n] = item,
                    None => break,
                }
                n += 1;
            }
            if n == 0 {
                break;
            }
            sink(class, &batch[..n]);
            drained += n;
        }
    }
    emptied(region);
    release(region);
    Some(drained)
}

/// Lets go of a region taken with [`try_hold`], [`open`] or [`stop`].
pub fn release<R: RegionStore>(region: &R) {
    region.state().store_release(STATE_OPEN);
}

/// The fork prepare handler's part, on the forking thread, for one region
/// of a slab whose openings lock it holds: waits while another thread
/// holds the region (if `wait`), then takes it if it is open, so that no
/// thread is inside it while the child is copied. Nothing needs fencing:
/// the holder changes nothing in it, and a section another thread runs is
/// not in the child. A region never initialised is left alone (none can be
/// opened while the lock is held), and so is one this very thread holds
/// (see the module's documentation). Undo with [`release_after_fork`].
pub fn hold_for_fork<R: RegionStore>(region: &R, wait: bool) {
    loop {
        let state = region.state().load_acquire();
        if state == STATE_UNINIT || state == me() {
            return;
        }
        if state == STATE_OPEN {
            if region.state().cas_acquire(STATE_OPEN, FORK_HELD).is_ok() {
                return;
            }
            continue;
        }
        // Held by another thread, which never waits for the openings lock
        // while it holds a region (a thread opens one only when it holds
        // none), nor for the locks the fork handlers take after this, but
        // may wait for one this thread holds, if it holds any.
        if !wait {
            return;
        }
        lock::yield_now();
    }
}

/// Reopens a region [`hold_for_fork`] took (on both sides of the fork);
/// leaves any other alone.
pub fn release_after_fork<R: RegionStore>(region: &R) {
    if region.state().load_relaxed() == FORK_HELD {
        release(region);
    }
}

/// Runs `f` on the first of `count` regions, from `start` on, that this
/// thread can hold; `None` if all are busy.
pub fn with_region<R: RegionStore, T>(
    count: usize,
    start: usize,
    region: impl Fn(usize) -> R,
    geometry: Geometry<'_>,
    f: impl FnOnce(&R) -> T,
) -> Option<T> {
    for k in 0..count {
        let r = region((start + k) % count);
        if try_hold(&r, geometry) {
            let result = f(&r);
            release(&r);
            return Some(result);
        }
    }
    None
}

impl<R: RegionStore> RegionStore for &R {
    fn state(&self) -> &AtomicU64 {
        (**self).state()
    }

    fn openings(&self) -> &Lock {
        (**self).openings()
    }

    fn header(&self, class: usize) -> &AtomicU64 {
        (**self).header(class)
    }

    fn slot(&self, index: usize) -> &AtomicUsize {
        (**self).slot(index)
    }
}

/// The top item of `class` in a held region, if it has one.
pub fn top<R: RegionStore>(region: &R, class: usize) -> Option<usize> {
    let header = Header::unpack(region.header(class).load_relaxed());
    let item = region.slot(header.current as usize - 1).load_relaxed();
    (item & SENTINEL_BIT == 0).then_some(item)
}

/// Pops the top item of `class` from a held region.
pub fn pop<R: RegionStore>(region: &R, class: usize) -> Option<usize> {
    let mut header = Header::unpack(region.header(class).load_relaxed());
    // The slot below `current` is an item, or the sentinel below an empty
    // (or dormant) class's stack, as the pop section sees it.
    let item = region.slot(header.current as usize - 1).load_relaxed();
    if item & SENTINEL_BIT != 0 {
        return None;
    }
    header.current -= 1;
    region.header(class).store_relaxed(header.pack());
    Some(item)
}

/// Pushes `item` onto `class` of a held region, waking the class (as a
/// free does) if it is dormant; false if it is full.
pub fn push<R: RegionStore>(region: &R, geometry: Geometry<'_>, class: usize, item: usize) -> bool {
    let mut header = Header::unpack(region.header(class).load_relaxed());
    if header.current == header.end {
        if !wake(region, geometry, class, WokenBy::Free) {
            return false;
        }
        header = geometry.awake(class, WokenBy::Free);
    }
    region.slot(header.current as usize).store_relaxed(item);
    header.current += 1;
    region.header(class).store_relaxed(header.pack());
    true
}
