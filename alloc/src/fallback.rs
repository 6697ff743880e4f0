//! The fallback path's protocol, written once over any region storage, so
//! that the loom models in `tests/` check this very code (over loom atomics)
//! while the allocator runs it over raw mapped memory.
//!
//! Without rseq, a per-CPU region is held by a thread through its state word:
//! compare-and-swap OPEN→BUSY (or UNINIT→BUSY, and format it), work on it
//! with plain atomic loads and stores, store OPEN with release ordering. A
//! thread that finds a region busy moves on to the next one, and to the
//! central lists when every region is busy, so it never waits for a holder
//! that has been preempted. A held region is a private stack, so there is no
//! ABA: nothing is ever compared against a value that may have been recycled.

use rseq_sys::slab_layout::{Header, SENTINEL_BIT, STATE_BUSY, STATE_OPEN, STATE_UNINIT, first_free_slot};

use crate::sync::{AtomicU32, AtomicUsize, Ordering};

/// Where a region's state word, headers and slots live.
pub trait RegionStore {
    /// The region's state word.
    fn state(&self) -> &AtomicU32;
    /// `class`'s header.
    fn header(&self, class: usize) -> &AtomicU32;
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
    pub home: &'a [u16],
    /// Slots of each class at home.
    pub capacity: &'a [u16],
}

impl Geometry<'_> {
    /// The sentinel slot dormant classes share.
    pub fn shared_sentinel(&self) -> usize {
        first_free_slot(self.home.len())
    }

    /// The header of a class that has no slots of its own yet in a region
    /// (see `rseq_sys::slab_layout`): every pop and push misses.
    pub fn dormant(&self) -> Header {
        let above = (self.shared_sentinel() + 1) as u16;
        Header { current: above, end: above }
    }

    /// The header of `class` when it wakes: empty, with its full capacity.
    pub fn awake(&self, class: usize) -> Header {
        let home = self.home[class];
        debug_assert!(home as usize > self.shared_sentinel());
        Header { current: home, end: home + self.capacity[class] }
    }
}

/// Formats a region this thread holds BUSY: every class dormant, so the
/// only memory written is the first page (headers and the shared
/// sentinel); a class's slots are touched when it first wakes there.
pub fn format<R: RegionStore>(region: &R, geometry: Geometry<'_>) {
    region.slot(geometry.shared_sentinel()).store(SENTINEL_BIT, Ordering::Relaxed);
    for class in 1..geometry.home.len() {
        region.header(class).store(geometry.dormant().pack(), Ordering::Relaxed);
    }
}

/// Gives dormant `class` its own slots in a held region; false if it was
/// awake already.
pub fn wake<R: RegionStore>(region: &R, geometry: Geometry<'_>, class: usize) -> bool {
    if region.header(class).load(Ordering::Relaxed) != geometry.dormant().pack() {
        return false;
    }
    let awake = geometry.awake(class);
    region.slot(awake.current as usize - 1).store(SENTINEL_BIT, Ordering::Relaxed);
    region.header(class).store(awake.pack(), Ordering::Relaxed);
    true
}

/// Takes `region` BUSY if it is open, or never initialised (then formats
/// it); false if someone else holds it.
pub fn try_hold<R: RegionStore>(region: &R, geometry: Geometry<'_>) -> bool {
    let state = region.state();
    match state.compare_exchange(STATE_OPEN, STATE_BUSY, Ordering::Acquire, Ordering::Relaxed) {
        Ok(_) => true,
        Err(STATE_UNINIT) => {
            let won = state.compare_exchange(STATE_UNINIT, STATE_BUSY, Ordering::Acquire, Ordering::Relaxed).is_ok();
            if won {
                format(region, geometry);
            }
            won
        }
        Err(_) => false,
    }
}

/// Takes an open region BUSY from outside (to drain or re-size it), then
/// runs `after_stop` (in rseq mode, the fence); false, with the region left
/// as it was, if it was not open or `after_stop` failed. Undo with [`release`].
pub fn stop<R: RegionStore>(region: &R, after_stop: impl FnOnce() -> bool) -> bool {
    if region.state().compare_exchange(STATE_OPEN, STATE_BUSY, Ordering::AcqRel, Ordering::Relaxed).is_err() {
        return false;
    }
    if !after_stop() {
        release(region);
        return false;
    }
    true
}

/// Empties a region from outside: takes it OPEN→BUSY (a region never
/// initialised has nothing to drain; one held by someone else is left
/// alone), hands every cached item of every class to `sink` in batches of at
/// most `batch.len()`, runs `emptied` on the empty region, and reopens it.
/// `after_stop` runs between the stop and the first pop: in rseq mode it is
/// the fence that keeps a section which read OPEN before the stop from
/// committing; if it fails the region is reopened untouched. Returns how
/// many items were drained, `None` if the region was not drained.
pub fn drain<R: RegionStore>(
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

/// Lets go of a region taken with [`try_hold`].
pub fn release<R: RegionStore>(region: &R) {
    region.state().store(STATE_OPEN, Ordering::Release);
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
    fn state(&self) -> &AtomicU32 {
        (**self).state()
    }

    fn header(&self, class: usize) -> &AtomicU32 {
        (**self).header(class)
    }

    fn slot(&self, index: usize) -> &AtomicUsize {
        (**self).slot(index)
    }
}

/// Pops the top item of `class` from a held region.
pub fn pop<R: RegionStore>(region: &R, class: usize) -> Option<usize> {
    let mut header = Header::unpack(region.header(class).load(Ordering::Relaxed));
    // The slot below `current` is an item, or the sentinel below an empty
    // (or dormant) class's stack, as the pop section sees it.
    let item = region.slot(header.current as usize - 1).load(Ordering::Relaxed);
    if item & SENTINEL_BIT != 0 {
        return None;
    }
    header.current -= 1;
    region.header(class).store(header.pack(), Ordering::Relaxed);
    Some(item)
}

/// Pushes `item` onto `class` of a held region, waking the class if it is
/// dormant; false if it is full.
pub fn push<R: RegionStore>(region: &R, geometry: Geometry<'_>, class: usize, item: usize) -> bool {
    let mut header = Header::unpack(region.header(class).load(Ordering::Relaxed));
    if header.current == header.end {
        if !wake(region, geometry, class) {
            return false;
        }
        header = geometry.awake(class);
    }
    region.slot(header.current as usize).store(item, Ordering::Relaxed);
    header.current += 1;
    region.header(class).store(header.pack(), Ordering::Relaxed);
    true
}
