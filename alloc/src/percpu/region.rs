//! The regions as the slow paths see them: one `1 << SLAB_SHIFT`-byte
//! region per possible CPU in one mapping, its state word, class headers
//! and slots, and what a holder does to them (open, move a stack, read a
//! class's fill).

use rseq_sys::slab_layout::{Header, SENTINEL_BIT, SLOT_BYTES, STATE_OFFSET, STATE_OPEN, STATE_UNINIT, header_offset};

use super::counters::{COUNTERS, Counters};
use super::protocol;
use super::slots::{self, Layout};
use super::state::{ClassState, UPKEEP_STATE_BYTES, UpkeepState};
use super::{FAST, Index, MODE, MODE_RSEQ, SLAB_SHIFT};
use crate::lock::Lock;
use crate::os;
use crate::size_class::{CLASSES, SIZES};
use crate::sync::{AtomicOps, AtomicU64, AtomicUsize};

/// Where each class's stack is in every region (its home, or its growth range).
pub(super) static LAYOUT: Layout = slots::layout(SLAB_SHIFT, UPKEEP_STATE_BYTES);

// Regions, as seen from slow paths.

pub(super) fn at(cpu: u32) -> *mut u8 {
    let slabs = FAST.slabs.base.load_acquire();
    debug_assert!(!slabs.is_null() && cpu < FAST.slabs.count.load_relaxed());
    // SAFETY: `cpu < ncpus`, so the region is inside the mapping.
    unsafe { slabs.add((cpu as usize) << SLAB_SHIFT) }
}

pub(super) fn state(region: *mut u8) -> &'static AtomicU64 {
    // SAFETY: the state word is an 8-aligned word of every region, only
    // accessed atomically (sections read it with a plain load, which is
    // atomic on x86-64).
    unsafe { &*region.add(STATE_OFFSET).cast::<AtomicU64>() }
}

pub(super) fn header(region: *mut u8, class: usize) -> &'static AtomicU64 {
    // SAFETY: headers are 4-aligned words inside the region.
    unsafe { &*region.add(header_offset(class)).cast::<AtomicU64>() }
}

pub(super) fn slot(region: *mut u8, index: usize) -> &'static AtomicUsize {
    debug_assert!(index < 1 << (SLAB_SHIFT - 3));
    // SAFETY: slots are 8-aligned words inside the region.
    unsafe { &*region.add(index * SLOT_BYTES).cast::<AtomicUsize>() }
}

/// Held by every opening of a region (`protocol::open`), and by the fork
/// handlers while they hold the regions.
pub(crate) static OPENINGS: Lock = Lock::new();

/// Opens region `cpu` if it was never initialised; true if it is OPEN now.
pub(super) fn open(cpu: u32) -> bool {
    let region = RawRegion(at(cpu));
    if protocol::open(&region, geometry()) {
        Counters::add(&COUNTERS.regions_opened, 1);
        protocol::release(&region);
        return true;
    }
    state(region.0).load_acquire() == STATE_OPEN
}

// The fallback: the same regions behind a CAS try-lock (`protocol`).

/// A region in the mapping, as the fallback protocol sees it.
pub(super) struct RawRegion(pub(super) *mut u8);

impl RawRegion {
    /// The CPU this region belongs to.
    pub(super) fn cpu(&self) -> u32 {
        ((self.0 as usize - FAST.slabs.base.load_relaxed() as usize) >> SLAB_SHIFT) as u32
    }
}

impl protocol::RegionStore for RawRegion {
    fn state(&self) -> &AtomicU64 {
        state(self.0)
    }

    fn openings(&self) -> &Lock {
        &OPENINGS
    }

    fn header(&self, class: usize) -> &AtomicU64 {
        header(self.0, class)
    }

    fn slot(&self, index: usize) -> &AtomicUsize {
        slot(self.0, index)
    }
}

pub(super) fn geometry() -> protocol::Geometry<'static> {
    protocol::Geometry { home: &LAYOUT.home, capacity: &LAYOUT.initial, freed_capacity: &LAYOUT.freed }
}

/// Runs `f` on a region this thread holds: the one for its CPU if free,
/// else the next free one; `None` if every region is busy (or there are none).
pub(super) fn with_held<T>(f: impl FnOnce(&RawRegion) -> T) -> Option<T> {
    let ncpus = FAST.slabs.count.load_acquire() as usize;
    if FAST.slabs.base.load_acquire().is_null() || ncpus == 0 {
        return None;
    }
    let start = os::current_cpu() as usize % ncpus;
    protocol::with_region(ncpus, start, |cpu| RawRegion(at(cpu as u32)), geometry(), f)
}

/// How many regions there are, if they are mapped.
pub(super) fn regions() -> Option<u32> {
    let count = FAST.slabs.count.load_acquire();
    (!FAST.slabs.base.load_acquire().is_null() && count > 0).then_some(count)
}

/// In an emptied region this thread holds: moves every class home, and
/// gives the growth zone's pages back if any class was there (nothing
/// touches them again until a class grows, under `DRAIN_LOCK` or a hold).
pub(super) fn send_home(region: *mut u8) {
    let mut moved = false;
    for class in 1..=CLASSES {
        let hdr = Header::unpack(header(region, class).load_relaxed());
        if LAYOUT.stack_begin(class, hdr).is_some_and(|begin| !LAYOUT.is_home(class, begin)) {
            move_stack(region, class, LAYOUT.home[class], LAYOUT.initial[class]);
            moved = true;
        }
    }
    if moved {
        let zone = LAYOUT.growth_zone();
        // SAFETY: the growth zone is page-aligned inside this region's
        // mapping, and with every class at home it holds nothing.
        unsafe { os::purge(region.add(zone.start * SLOT_BYTES), zone.len() * SLOT_BYTES) };
    }
}

/// Moves `class`'s stack, objects and all, to `to` (its home or its growth
/// range) with room for `capacity` objects, in a region this thread holds
/// (busy, and fenced in rseq mode). The caller leaves at most `capacity`
/// objects in it.
pub(super) fn move_stack(region: *mut u8, class: usize, to: u32, capacity: u32) {
    let hdr = Header::unpack(header(region, class).load_relaxed());
    let Some(from) = LAYOUT.stack_begin(class, hdr).filter(|&from| from != to) else { return };
    let count = hdr.current - from;
    debug_assert!(count <= capacity && capacity <= LAYOUT.room(class, to));
    slot(region, to as usize - 1).store_relaxed(SENTINEL_BIT);
    for i in 0..count as usize {
        slot(region, to as usize + i).store_relaxed(slot(region, from as usize + i).load_relaxed());
    }
    header(region, class).store_relaxed(Header { current: to + count, end: to + capacity }.pack());
    Counters::add(&COUNTERS.stack_moves, 1);
}

/// `class`'s objects cached and capacity, from its header (0 and 0 for a
/// class with no stack of its own).
pub(super) fn fill(class: usize, word: u64) -> (usize, usize) {
    let hdr = Header::unpack(word);
    match LAYOUT.stack_begin(class, hdr) {
        Some(begin) => ((hdr.current - begin) as usize, (hdr.end - begin) as usize),
        None => (0, 0),
    }
}

/// Per class, summed over the opened regions: the objects they may cache
/// now, and the objects they do (a racy snapshot).
pub(crate) fn occupancy() -> ([usize; CLASSES + 1], [usize; CLASSES + 1]) {
    let (mut capacity, mut cached) = ([0usize; CLASSES + 1], [0usize; CLASSES + 1]);
    if FAST.slabs.base.load_acquire().is_null() {
        return (capacity, cached);
    }
    for cpu in 0..FAST.slabs.count.load_acquire() {
        let region = at(cpu);
        if state(region).load_acquire() == STATE_UNINIT {
            continue;
        }
        for class in 1..=CLASSES {
            let (count, room) = fill(class, header(region, class).load_relaxed());
            capacity[class] += room;
            cached[class] += count;
        }
    }
    (capacity, cached)
}

/// Bytes of free objects cached in every region (a racy snapshot).
pub(crate) fn cached_bytes() -> usize {
    let (_, cached) = occupancy();
    cached.iter().zip(SIZES).map(|(&count, size)| count * size as usize).sum()
}

/// Bytes mapped for the regions.
pub(crate) fn mapped_bytes() -> usize {
    if FAST.slabs.base.load_acquire().is_null() { 0 } else { (FAST.slabs.count.load_relaxed() as usize) << SLAB_SHIFT }
}

/// The upkeep state of `cpu`'s region, if it has one.
pub(super) fn upkeep_state(cpu: u32) -> Option<&'static UpkeepState> {
    if cpu >= regions()? {
        return None;
    }
    // SAFETY: `cpu` has a region, and `UPKEEP_STATE_BYTES` from slot
    // `state_slot` are kept for the state (no section or stack reaches
    // them: `slots`); the slot is 8-aligned, and all zeros is a
    // valid `UpkeepState` (atomics only).
    Some(unsafe { &*at(cpu).add(LAYOUT.state_slot as usize * SLOT_BYTES).cast::<UpkeepState>() })
}

pub(super) fn class_state(cpu: u32, class: usize) -> Option<&'static ClassState> {
    upkeep_state(cpu).map(|state| &state.classes[class])
}

/// Held while draining: one drain at a time (`fork` takes it after the
/// regions, see `fork`).
pub(crate) static DRAIN_LOCK: Lock = Lock::new();

/// Runs `f` on `cpu`'s region stopped from outside, as a drain does: under
/// `DRAIN_LOCK`, taken OPEN→busy and, in rseq mode, fenced so that no
/// section which read OPEN can still commit; reopened after. `None` if the
/// region was not open (held, never opened) or could not be fenced.
pub(super) fn with_stopped<T>(cpu: u32, f: impl FnOnce(&RawRegion) -> T) -> Option<T> {
    let _guard = DRAIN_LOCK.lock();
    let raw = RawRegion(at(cpu));
    let rseq = MODE.load_acquire() == MODE_RSEQ;
    if !protocol::stop(&raw, || !rseq || rseq_sys::fence_cpu(cpu).is_ok()) {
        return None;
    }
    let result = f(&raw);
    protocol::release(&raw);
    Some(result)
}

/// Replaces `class`'s header on the CPU this thread runs on by `new` if it
/// reads `expected`, writing the class's own sentinel first (a wake, or a
/// move of `end`); true if it did.
///
/// Sound for any `new` that keeps the class's slots within the place its
/// stack is (home or growth range, `slots`), with `begin <= current
/// <= end`: the sentinel slot, `begin - 1`, is read by nobody while the
/// class is dormant, and otherwise (or for class 1, whose sentinel is the
/// shared one) already holds the value written;
/// and moving `end` needs no stop, since sections write above `current`
/// only speculatively and commit only a header they read.
pub(super) fn replace_header_here(class: usize, expected: u64, new: Header) -> bool {
    let Some(begin) = LAYOUT.stack_begin(class, new) else {
        debug_assert!(false, "{new:?} is no stack of class {class}");
        return false;
    };
    debug_assert!(new.end - begin <= LAYOUT.room(class, begin));
    // SAFETY: as in `pop_section`; `new` keeps the layout's invariants and
    // the sentinel write is unobservable (see above).
    let replaced = unsafe {
        rseq_sys::slab_replace_header::<Index, SLAB_SHIFT>(&FAST.slabs, class, expected, new.pack(), begin as usize - 1)
    };
    replaced == Ok(true)
}
