//! Adaptive capacity, the mechanism: what each class of each CPU did (kept
//! in the region itself, beside the headers), and applying the policy of
//! `capacity` to a class's header, in a stopped region or through a
//! section.

use rseq_sys::slab_layout::Header;

use super::capacity::{self, Activity, MAX_BATCH, Resize, batch};
use super::counters::{COUNTERS, Counters};
use super::protocol;
use super::region::{
    self, LAYOUT, RawRegion, class_state, fill, header, move_stack, regions, replace_header_here, with_stopped,
};
use crate::central::CENTRAL;
use crate::os;
use crate::size_class::{CLASSES, SIZES};
use crate::sync::{AtomicIntOps, AtomicOps, AtomicU32};

/// Objects a refill of `class` on `cpu` takes (`capacity::refill_moves`,
/// from a read of the header that may be stale: it only sizes the batch).
pub(super) fn refill_batch(cpu: Option<u32>, class: usize) -> usize {
    capacity_on(cpu, class).map_or(batch(class), |capacity| capacity::refill_moves(class, capacity))
}

/// Objects a drain of `class` on `cpu` moves at most (`capacity::drain_moves`).
pub(super) fn drain_batch(cpu: Option<u32>, class: usize) -> usize {
    capacity_on(cpu, class).map_or(batch(class), |capacity| capacity::drain_moves(class, capacity))
}

/// The current capacity of `class` on `cpu` (a racy read of its header),
/// if `cpu` has a region.
fn capacity_on(cpu: Option<u32>, class: usize) -> Option<usize> {
    let cpu = cpu.filter(|&c| c < regions().unwrap_or(0))?;
    Some(fill(class, header(region::at(cpu), class).load_relaxed()).1)
}

/// Which way a miss went.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    /// An allocation found the cache empty.
    Refill = 1,
    /// A free found it full.
    Drain = 2,
}

/// Halves a miss counter; returns its value before (a racy update: a miss
/// counted meanwhile may be lost, which only delays a decision).
fn decay(counter: &AtomicU32) -> u32 {
    let value = counter.load_relaxed();
    counter.store_relaxed(value / 2);
    value
}

/// A class's run of misses packed in one word: the way (`Flow as u32`, 0
/// before the first miss) in the low two bits, the misses that way in a row
/// above. Returns the word after a miss going `flow`, and, if that miss
/// turned, the length of the run it ended.
fn step_run(run: u32, flow: Flow) -> (u32, Option<u32>) {
    const WAY: u32 = 3;
    const ONE: u32 = 1 << 2;
    if run & WAY == flow as u32 { (run + ONE, None) } else { (flow as u32 | ONE, (run != 0).then_some(run / ONE)) }
}

/// Counts a miss of `class` on `cpu` (slow paths only) and says what to do
/// about its capacity (`capacity::on_miss`).
pub(super) fn count_miss(cpu: Option<u32>, class: usize, flow: Flow) -> Resize {
    let Some(cpu) = cpu else { return Resize::Keep };
    let Some(state) = class_state(cpu, class) else { return Resize::Keep };
    let (mut refills, mut drains) = (state.refills.load_relaxed(), state.drains.load_relaxed());
    match flow {
        Flow::Refill => refills = state.refills.fetch_add_relaxed(1) + 1,
        Flow::Drain => drains = state.drains.fetch_add_relaxed(1) + 1,
    }
    let (run, turn) = step_run(state.run.load_relaxed(), flow);
    state.run.store_relaxed(run);
    // A swing is one thread's: a turn by another thread than the miss
    // before it is two flows meeting on this CPU (a producer refilling
    // after its consumer drained), which more room would only fill.
    let me = thread_tag();
    let same_thread = state.last_thread.load_relaxed() == me;
    state.last_thread.store_relaxed(me);
    let turn = turn.filter(|_| same_thread);
    let capacity = capacity_on(Some(cpu), class).unwrap_or(0);
    // The run this miss ends went the other way: each of its misses moved
    // what one that way moves at this capacity.
    let moved_per_miss = match flow {
        Flow::Refill => capacity::drain_moves(class, capacity),
        Flow::Drain => capacity::refill_moves(class, capacity),
    };
    let shortfall = turn.map(|run| run as usize * moved_per_miss);
    match capacity::on_miss(class, capacity, refills, drains, shortfall) {
        // A class already as large as it may be does not read the clock,
        // a system call.
        Resize::Grow(_) if !may_grow(cpu, class) => Resize::Keep,
        Resize::Grow(objects) => {
            let now = (os::precise_ns() / 1000) as u32;
            let last = state.last_turn.swap_relaxed(now);
            let run = turn.unwrap_or(0);
            if capacity::swings_often(now.wrapping_sub(last), run) { Resize::Grow(objects) } else { Resize::Keep }
        }
        resize => resize,
    }
}

/// The calling thread, as a class's state records it: the low half of its
/// thread pointer (two live threads share it only if their thread control
/// blocks are a multiple of 4 GiB apart, and then a turn between them
/// merely counts as a swing).
fn thread_tag() -> u32 {
    crate::sync::current_thread() as u32
}

/// Whether `class` on `cpu` may grow by an object: it has less than the
/// largest capacity it may have, and the CPU's budget has room for one more
/// (racy reads of the headers; false for a dormant class).
fn may_grow(cpu: u32, class: usize) -> bool {
    let header = Header::unpack(header(region::at(cpu), class).load_relaxed());
    LAYOUT.stack_begin(class, header).is_some_and(|begin| header.end - begin < LAYOUT.reserved[class])
        && capacity_bytes(cpu) + SIZES[class] as usize <= capacity::CPU_BUDGET
}

/// What a resize does to a class's stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    /// A new header, for the stack where it is.
    Header(Header),
    /// A move out of its home, to its growth range with this capacity.
    Move(u32),
}

/// What `resize` does to `class` on `cpu`, whose header reads `word`, if
/// anything: shrunk to its outflow capacity (never below `current`: the
/// objects above stay), or grown as asked, up to its room and as far as
/// the CPU's budget allows; a class that outgrows its home moves.
/// `None` for a dormant class, or a word read from a region never opened
/// (the thread moved to another CPU since its miss).
fn resized(cpu: u32, word: u64, class: usize, resize: Resize) -> Option<Change> {
    let header = Header::unpack(word);
    let begin = LAYOUT.stack_begin(class, header)?;
    let capacity = (header.end - begin) as usize;
    let end = match resize {
        Resize::Keep => return None,
        Resize::Shrink => (begin + capacity::outflow(class) as u32).max(header.current),
        Resize::Grow(objects) => {
            let room_in_budget = capacity::CPU_BUDGET.saturating_sub(capacity_bytes(cpu)) / SIZES[class] as usize;
            let grown = (capacity + objects.min(room_in_budget)).min(LAYOUT.reserved[class] as usize);
            if grown <= capacity {
                return None;
            }
            if grown > LAYOUT.room(class, begin) as usize {
                return Some(Change::Move(grown as u32));
            }
            begin + grown as u32
        }
    };
    (end != header.end).then_some(Change::Header(Header { current: header.current, end }))
}

/// Bytes of objects `cpu`'s region is sized for (a racy read of its headers).
fn capacity_bytes(cpu: u32) -> usize {
    let region = region::at(cpu);
    (1..=CLASSES).map(|class| fill(class, header(region, class).load_relaxed()).1 * SIZES[class] as usize).sum()
}

/// Applies `resize` to `class` on the CPU this thread runs on (read on
/// `cpu`; if the thread has moved, the compare fails or finds the same
/// header, which the new one suits as well). A move out of the class's
/// home stops and fences `cpu`'s region, as a drain does.
pub(super) fn resize_here(cpu: u32, class: usize, resize: Resize) {
    let word = header(region::at(cpu), class).load_relaxed();
    match resized(cpu, word, class, resize) {
        Some(Change::Header(new)) => {
            replace_header_here(class, word, new);
        }
        Some(Change::Move(capacity)) => {
            with_stopped(cpu, |raw| {
                // If still at home (a drain may have moved it meanwhile),
                // where it holds fewer objects than `capacity`.
                let now = Header::unpack(header(raw.0, class).load_relaxed());
                if LAYOUT.stack_begin(class, now) == Some(LAYOUT.home[class]) {
                    move_stack(raw.0, class, LAYOUT.begin[class], capacity);
                }
            });
        }
        None => {}
    }
}

/// Applies `resize` to `class` in a region this thread holds.
pub(super) fn resize_held(region: &RawRegion, class: usize, resize: Resize) {
    let word = header(region.0, class).load_relaxed();
    match resized(region.cpu(), word, class, resize) {
        Some(Change::Header(new)) => header(region.0, class).store_relaxed(new.pack()),
        Some(Change::Move(capacity)) => move_stack(region.0, class, LAYOUT.begin[class], capacity),
        None => {}
    }
}

/// Re-sizes `cpu`'s classes by what they did since the last round: reads
/// the activity without stopping anyone, and stops and fences the region
/// (as a drain does) only if some capacity changes; objects beyond a
/// shrunk class's new end go to the central lists.
pub(super) fn rebalance(cpu: u32) {
    let region = region::at(cpu);
    let mut activity = [Activity::default(); CLASSES + 1];
    let mut capacity = [0usize; CLASSES + 1];
    for class in 1..=CLASSES {
        let Some(state) = class_state(cpu, class) else { return };
        let word = header(region, class).load_relaxed();
        // Dormant classes (capacity 0) stay so: `plan` leaves them alone.
        capacity[class] = fill(class, word).1;
        let current = Header::unpack(word).current;
        activity[class] = Activity {
            refills: decay(&state.refills),
            drains: decay(&state.drains),
            active: state.last_current.swap_relaxed(current) != current,
        };
    }
    let old = capacity;
    capacity::plan(&mut capacity, &activity);
    if capacity == old {
        return;
    }
    if with_stopped(cpu, |raw| resize_stopped(raw, cpu, &capacity, &old)).is_some() {
        Counters::add(&COUNTERS.rebalances, 1);
    }
}

/// Gives the classes of a region stopped by [`rebalance`] their planned
/// capacity (where it differs from `old`), moving the objects beyond it to
/// the central lists and a class that fits its home again back there.
fn resize_stopped(raw: &RawRegion, cpu: u32, capacity: &[usize; CLASSES + 1], old: &[usize; CLASSES + 1]) {
    let region = raw.0;
    let mut moved = [0usize; MAX_BATCH];
    for class in (1..=CLASSES).filter(|&c| capacity[c] != old[c]) {
        // Where the stack is now (a drain may have sent it home since).
        let Some(begin) = LAYOUT.stack_begin(class, Header::unpack(header(region, class).load_relaxed())) else {
            continue;
        };
        let capacity = capacity[class].min(LAYOUT.room(class, begin) as usize) as u32;
        let end = (begin + capacity) as usize;
        loop {
            let current = Header::unpack(header(region, class).load_relaxed()).current as usize;
            let excess = current.saturating_sub(end).min(MAX_BATCH);
            if excess == 0 {
                break;
            }
            let mut n = 0;
            while n < excess
                && let Some(object) = protocol::pop(raw, class)
            {
                moved[n] = object;
                n += 1;
            }
            CENTRAL.give(class, &moved[..n]);
        }
        if !LAYOUT.is_home(class, begin) && capacity <= LAYOUT.initial[class] {
            // Small enough for its home again.
            move_stack(region, class, LAYOUT.home[class], capacity);
        } else {
            let mut hdr = Header::unpack(header(region, class).load_relaxed());
            hdr.end = end as u32;
            header(region, class).store_relaxed(hdr.pack());
        }
        let hdr = Header::unpack(header(region, class).load_relaxed());
        if let Some(state) = class_state(cpu, class) {
            state.last_current.store_relaxed(hdr.current);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_count_misses_the_same_way_and_a_turn_reports_the_run_it_ends() {
        let mut run = 0;
        let mut turns = Vec::new();
        for flow in [Flow::Refill, Flow::Refill, Flow::Refill, Flow::Drain, Flow::Drain, Flow::Refill] {
            let (next, turn) = step_run(run, flow);
            run = next;
            turns.extend(turn);
        }
        assert_eq!(turns, [3, 2], "the first miss turns nothing");
        assert_eq!(step_run(run, Flow::Refill), (Flow::Refill as u32 | 2 << 2, None));
    }

    /// A miss reads the header of the CPU it then runs on, which may be a
    /// region never opened (all zeros): no resize may come of it (the
    /// capacity computed from it underflowed and aborted the fuzzer).
    #[test]
    fn a_header_never_written_is_not_resized() {
        for class in 1..=CLASSES {
            for resize in [Resize::Grow(batch(class)), Resize::Shrink, Resize::Keep] {
                assert_eq!(resized(0, 0, class, resize), None, "class {class}, {resize:?}");
            }
        }
    }
}
