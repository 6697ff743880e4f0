//! How many objects each CPU may cache per class, and how that changes.
//!
//! Every class has slots reserved in each region for [`max`] objects, but
//! may use only its current capacity (the header's `end`): [`initial`] at
//! first. Each CPU counts, per class, its refills (allocations that found
//! the cache empty) and drains (frees that found it full), halving both at
//! every upkeep round, and at each miss the slow path applies [`on_miss`]:
//! - a class whose misses turn (a refill after a run of drains, or a drain
//!   after a run of refills) grows by the objects that run's misses moved
//!   (half its capacity each, at most a batch; a drain at the smallest
//!   capacity moves all of it), if the turn before came within
//!   [`GROW_WINDOW_US`] or after misses at least every [`MISS_SPACING_US`],
//!   and the thread that turned is the one that missed
//!   before, up to [`max`] and within [`CPU_BUDGET`]: the cache swings
//!   between allocating and freeing, and fell short by about that much. A
//!   swing wider than [`max`] (a working set allocated and freed again,
//!   larger than any cache) grows it to [`max`]: then each trip moves a
//!   larger batch. Only one thread's turns count, not misses both ways in a
//!   period: a turn between two threads is two flows meeting on one CPU,
//!   and a consumer that once shared a CPU with its producer would grow
//!   that CPU's classes to hold what only passes through (`prodcons`' bad
//!   runs);
//! - a class that mostly overflowed ([`SHRINK_AT`] drains or more, and
//!   [`ONE_WAY`] times as many drains as refills) shrinks to [`outflow`]:
//!   objects flow through it, freed here and allocated elsewhere, so room
//!   would only hold memory, and a drain then moves what the cache holds.
//!   (A consumer's caches held a batch and a half per class, the largest
//!   share of `prodcons`' memory after its live blocks.) A class that
//!   mostly underflowed ([`ONE_WAY`] times as many refills as drains, and
//!   [`SHRINK_AT`] or more: a producer's) grows to a [`batch`] if its
//!   misses come often, and no further: its cache is empty anyway, and the
//!   capacity sizes its refills (half of it each), so that a producer makes
//!   one trip per half a batch and what a refill brings is allocated next.
//!
//! Once per upkeep period, for each CPU, [`plan`] looks at the round:
//! - a class that did nothing at all (its header did not change) halves
//!   its capacity, down to [`min`], and its objects beyond the new end go
//!   back to the central lists;
//! - while the CPU's capacity in bytes exceeds [`CPU_BUDGET`], the class
//!   with the fewest misses (the biggest, of equals) is halved.
//!
//! So hot classes get room, cold ones give it back, and no CPU can hold
//! more than the budget (plus what is in flight) in its cache. A class
//! never used on a CPU stays dormant there (capacity 0, no slots touched)
//! until its first miss wakes it: with [`initial`] if an allocation missed,
//! with [`outflow`] if a free did, since a CPU whose first use of a class
//! is a free may be a consumer's, where room only holds memory (it grows
//! at its turns like any other): a consumer's classes woken at [`initial`]
//! would fill to the brim before any drain could tell, while the producer
//! carved fresh objects for all they held.

use crate::size_class::{CLASSES, SIZES};

/// Most bytes of objects one CPU's cache may be sized for. (Capacity, not
/// use: classes nobody uses are sized down first, at no cost.) A program
/// with many busy classes (`pareto`) misses twice as often with a third of
/// this. Only a program whose classes keep swinging grows to it; idle
/// classes halve at every upkeep.
pub(crate) const CPU_BUDGET: usize = 6 << 20;
/// Drains per period before a class can count as one that only overflows.
pub(crate) const SHRINK_AT: u32 = 4;
/// A class grows at a turn of its misses only if the turn before came
/// within this long, or its misses in between came at least one per
/// [`MISS_SPACING_US`] ([`swings_often`]): swings slower than that cost a
/// negligible share of a CPU's time, so that one that swings a few times a
/// second loses nothing worth the memory.
pub(crate) const GROW_WINDOW_US: u32 = 1_000;
/// See [`GROW_WINDOW_US`]: a wide swing (a working set of a million objects
/// allocated and freed again) takes longer than the window between its
/// turns, but misses all along.
pub(crate) const MISS_SPACING_US: u32 = 10;

/// Whether a turn that came `elapsed_us` after the one before, ending a
/// run of `run` misses, is one of a swing worth growing for.
pub(crate) const fn swings_often(elapsed_us: u32, run: u32) -> bool {
    elapsed_us < GROW_WINDOW_US || elapsed_us / MISS_SPACING_US < run
}

/// How lopsided a class's misses must be for its flow to count as one-way
/// (a thread that migrates now and then refills once in a while on a CPU
/// where it otherwise only frees).
pub(crate) const ONE_WAY: u32 = 8;
/// Largest batch moved between a region and the central lists: each trip
/// costs a lock and a slow path's bookkeeping, which a cycle through more
/// objects than a cache holds pays per batch.
pub(crate) const MAX_BATCH: usize = 256;
/// Most objects of the smallest capacity ([`min`]).
const MIN_CEILING: usize = 64;

const fn clamp_by_bytes(bytes: usize, class: usize, low: usize, high: usize) -> usize {
    let n = bytes / SIZES_CONST[class] as usize;
    if n < low {
        low
    } else if n > high {
        high
    } else {
        n
    }
}

const SIZES_CONST: [u32; CLASSES + 1] = crate::size_class::build_sizes();

/// `clamp_by_bytes(bytes, class, low, high[class])` for every class, at
/// compile time: slow paths read these at every miss, where a division each
/// time showed in profiles.
const fn table(bytes: usize, low: usize, high: [usize; CLASSES + 1]) -> [u16; CLASSES + 1] {
    let mut table = [0; CLASSES + 1];
    let mut class = 1;
    while class <= CLASSES {
        table[class] = clamp_by_bytes(bytes, class, low, high[class]) as u16;
        class += 1;
    }
    table
}

const INITIAL: [u16; CLASSES + 1] = table(16 * 1024, 8, [64; CLASSES + 1]);
const MAX: [u16; CLASSES + 1] = table(4 << 20, 128, [16 * 1024; CLASSES + 1]);
const BATCH: [u16; CLASSES + 1] = table(1024 * 1024, 16, [MAX_BATCH; CLASSES + 1]);
const MIN: [u16; CLASSES + 1] = table(8 * 1024, 2, [MIN_CEILING; CLASSES + 1]);

/// Capacity a class wakes with at an allocation: 16 KiB worth, 8 to 64
/// objects. Small, because a class whose objects only flow through a CPU
/// (freed there, allocated elsewhere) fills its cache to the brim before
/// anything can tell, and because the homes of the classes a CPU uses share
/// pages (`slots`): smaller homes keep a small program's classes on fewer
/// pages, at the price of busy classes moving out of their homes sooner.
/// A class that needs more grows at its misses ([`on_miss`]).
pub(crate) const fn initial(class: usize) -> usize {
    INITIAL[class] as usize
}

/// Slots reserved per class: 4 MiB worth, 128 to 16,384 objects, so that a
/// working set of ten thousand small objects cycles in one CPU's cache
/// (within [`CPU_BUDGET`]). Every class's reservation together sizes the
/// regions (`SLAB_SHIFT`).
pub(crate) const fn max(class: usize) -> usize {
    MAX[class] as usize
}

/// Most objects moved per refill or drain of `class`: 1 MiB worth, 16 to
/// [`MAX_BATCH`]. Each trip costs fences (the counter, the lock) that wait
/// for the program's pending stores to cold blocks, about a memory latency
/// whatever the objects' size, so the classes of blocks of kilobytes move
/// as many of them at a time as those of smaller ones. A trip moves fewer from a
/// smaller cache: half its capacity (`adapt::refill_batch`,
/// `adapt::drain_batch`), so that the cache is left half full after a
/// drain and half empty after a refill.
pub(crate) const fn batch(class: usize) -> usize {
    BATCH[class] as usize
}

/// Objects a refill of `class` moves at `capacity`: half of it, at most a
/// batch (the cache is left half full).
pub(crate) const fn refill_moves(class: usize, capacity: usize) -> usize {
    let half = capacity / 2;
    let n = if half < batch(class) { half } else { batch(class) };
    if n == 0 { 1 } else { n }
}

/// Objects a drain of `class` moves at `capacity`: as a refill, but all of
/// a cache at the smallest capacity (a class whose objects flow out of this
/// CPU: the next allocation is not here).
pub(crate) const fn drain_moves(class: usize, capacity: usize) -> usize {
    if capacity <= min(class) { if capacity == 0 { 1 } else { capacity } } else { refill_moves(class, capacity) }
}

/// Smallest capacity: 8 KiB worth, 2 to 64 objects.
pub(crate) const fn min(class: usize) -> usize {
    MIN[class] as usize
}

/// Capacity of a class whose objects only leave this CPU (freed here,
/// allocated elsewhere), and of one a free wakes: the smallest, [`min`];
/// each drain then moves what the cache holds, up to 64 objects (8 KiB
/// worth), to the central lists, where the CPU that allocates them finds
/// them: a smaller one would hold a few KiB less for more trips, each
/// writing lines that the allocating CPU's refills then pull back.
pub(crate) const fn outflow(class: usize) -> usize {
    min(class)
}

/// What one class of one CPU did since the last round.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Activity {
    /// Refills (allocations that found the cache empty), decayed.
    pub(crate) refills: u32,
    /// Drains (frees that found it full), decayed.
    pub(crate) drains: u32,
    /// Whether its header changed at all since the last round.
    pub(crate) active: bool,
}

impl Activity {
    fn misses(&self) -> u32 {
        self.refills + self.drains
    }
}

/// What a class should do about its capacity right after a miss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Resize {
    Keep,
    /// By this many objects, up to [`max`] and within the CPU's budget.
    Grow(usize),
    /// Down to [`outflow`].
    Shrink,
}

/// The slow path's decision after a miss of `class`, from its refills and
/// drains on this CPU (decayed counts, this miss included) and, if the
/// miss went the other way from the one before it there, how many objects
/// the misses of the run it ends moved (`shortfall`: by how much the cache
/// fell short of the swing).
pub(crate) const fn on_miss(
    class: usize,
    capacity: usize,
    refills: u32,
    drains: u32,
    shortfall: Option<usize>,
) -> Resize {
    if drains >= SHRINK_AT && drains >= ONE_WAY * refills {
        return Resize::Shrink;
    }
    if refills >= ONE_WAY * drains {
        // Objects flow in (a producer's): room for a batch, so that each
        // refill moves half of one, and no more (what a refill brings is
        // allocated next).
        let inflow = batch(class);
        return if refills >= SHRINK_AT && capacity < inflow { Resize::Grow(inflow - capacity) } else { Resize::Keep };
    }
    match shortfall {
        Some(objects) => Resize::Grow(if objects < max(class) { objects } else { max(class) }),
        None => Resize::Keep,
    }
}

/// The new capacities of one CPU's classes (index 0 unused), from the
/// current ones and what each class did.
pub(crate) fn plan(capacity: &mut [usize; CLASSES + 1], activity: &[Activity; CLASSES + 1]) {
    for class in 1..=CLASSES {
        let a = activity[class];
        if capacity[class] == 0 {
            // Dormant: never used on this CPU, so it has no slots to size.
            continue;
        }
        if !a.active {
            capacity[class] = (capacity[class] / 2).max(min(class));
        }
    }
    let bytes =
        |capacity: &[usize; CLASSES + 1]| -> usize { (1..=CLASSES).map(|c| capacity[c] * SIZES[c] as usize).sum() };
    while bytes(capacity) > CPU_BUDGET {
        let victim = (1..=CLASSES)
            .filter(|&c| capacity[c] > min(c))
            .min_by_key(|&c| (activity[c].misses(), usize::MAX - capacity[c] * SIZES[c] as usize));
        match victim {
            Some(c) => capacity[c] = (capacity[c] / 2).max(min(c)),
            None => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn initial_capacities() -> [usize; CLASSES + 1] {
        let mut capacity = [0; CLASSES + 1];
        (1..=CLASSES).for_each(|c| capacity[c] = initial(c));
        capacity
    }

    #[test]
    fn bounds_are_ordered() {
        for c in 1..=CLASSES {
            assert!(min(c) <= initial(c) && initial(c) <= max(c), "class {c}");
            assert!(batch(c) >= 1 && batch(c) <= MAX_BATCH && min(c) >= 2 && min(c) <= MIN_CEILING);
            assert!(outflow(c) >= 2 && outflow(c) <= min(c), "class {c}");
        }
    }

    #[test]
    fn an_idle_class_shrinks_and_busy_ones_keep_their_capacity() {
        let mut capacity = initial_capacities();
        let mut activity = [Activity { refills: 0, drains: 0, active: true }; CLASSES + 1];
        activity[3] = Activity { refills: 5, drains: 5, active: true };
        activity[20] = Activity { refills: 0, drains: 0, active: false };
        activity[21] = Activity { refills: 10, drains: 0, active: true };
        plan(&mut capacity, &activity);
        assert_eq!(capacity[3], initial(3), "kept, and never the budget's victim");
        assert!(capacity[20] <= (initial(20) / 2).max(min(20)), "shrunk");
        assert_eq!(capacity[21], initial(21), "a busy class is the slow path's business");
        let bytes: usize = (1..=CLASSES).map(|c| capacity[c] * SIZES[c] as usize).sum();
        assert!(bytes <= CPU_BUDGET, "{bytes}");
    }

    #[test]
    fn swings_grow_flows_do_not_and_one_way_out_shrinks() {
        let c = 5;
        let inflow = batch(c);
        assert_eq!(on_miss(c, initial(c), SHRINK_AT - 1, 0, None), Resize::Keep, "a few refills");
        assert_eq!(
            on_miss(c, initial(c), SHRINK_AT, 0, None),
            Resize::Grow(inflow - initial(c)),
            "only underflows: room for refills of whole batches"
        );
        assert_eq!(on_miss(c, inflow, SHRINK_AT, 0, None), Resize::Keep, "and no more");
        assert_eq!(
            on_miss(c, inflow, ONE_WAY * 3, 3, Some(batch(c))),
            Resize::Keep,
            "mostly underflows, even at a turn"
        );
        assert_eq!(on_miss(c, initial(c), 0, SHRINK_AT - 1, None), Resize::Keep);
        assert_eq!(on_miss(c, initial(c), 0, SHRINK_AT, None), Resize::Shrink, "only overflows");
        assert_eq!(on_miss(c, initial(c), 3, ONE_WAY * 3, Some(1)), Resize::Shrink, "mostly overflows, even at a turn");
        assert_eq!(on_miss(c, initial(c), 20, 20, None), Resize::Keep, "both ways, but no turn now");
        assert_eq!(on_miss(c, initial(c), 2, 2, Some(batch(c))), Resize::Grow(batch(c)), "a turn after one miss");
        assert_eq!(
            on_miss(c, initial(c), 9, 9, Some(3 * batch(c))),
            Resize::Grow(3 * batch(c)),
            "by what the run moved"
        );
        assert_eq!(
            on_miss(c, initial(c), 500, 500, Some(5 * max(c))),
            Resize::Grow(max(c)),
            "a swing wider than any cache"
        );
    }

    #[test]
    fn trips_move_half_the_capacity_up_to_a_batch_and_a_smallest_cache_drains_whole() {
        for c in 1..=CLASSES {
            assert_eq!(refill_moves(c, 4 * batch(c)), batch(c), "class {c}");
            assert_eq!(refill_moves(c, batch(c)), batch(c) / 2, "class {c}");
            assert_eq!(refill_moves(c, 1), 1, "class {c}: at least one");
            assert_eq!(drain_moves(c, min(c)), min(c), "class {c}");
            assert_eq!(drain_moves(c, 4 * batch(c)), batch(c), "class {c}");
        }
    }

    #[test]
    fn a_swing_counts_if_its_turns_or_its_misses_come_often() {
        assert!(swings_often(GROW_WINDOW_US - 1, 1), "turns within the window");
        assert!(!swings_often(GROW_WINDOW_US, 1), "one miss in a whole window");
        assert!(swings_often(50_000, 30_000), "a wide swing missing all along");
        assert!(!swings_often(10_000_000, 30_000), "a miss every 333 µs");
    }

    #[test]
    fn dormant_classes_stay_dormant() {
        let mut capacity = [0; CLASSES + 1];
        let activity = [Activity { refills: 9, drains: 9, active: true }; CLASSES + 1];
        plan(&mut capacity, &activity);
        assert!(capacity.iter().all(|&c| c == 0));
    }

    #[test]
    fn the_smallest_capacities_fit_the_budget() {
        let bytes: usize = (1..=CLASSES).map(|c| min(c) * SIZES[c] as usize).sum();
        assert!(bytes < CPU_BUDGET / 2, "{bytes}");
    }

    #[test]
    fn the_budget_is_kept_by_shrinking_the_least_missing_classes() {
        let mut capacity = [0; CLASSES + 1];
        (1..=CLASSES).for_each(|c| capacity[c] = max(c));
        let mut activity = [Activity { refills: 1, drains: 0, active: true }; CLASSES + 1];
        activity[40] = Activity { refills: 50, drains: 50, active: true };
        plan(&mut capacity, &activity);
        let bytes: usize = (1..=CLASSES).map(|c| capacity[c] * SIZES[c] as usize).sum();
        assert!(bytes <= CPU_BUDGET, "{bytes}");
        // The hottest class gives room up only once every other one is
        // down to its smallest.
        let others_smallest = (1..=CLASSES).all(|c| c == 40 || capacity[c] == min(c));
        assert!(capacity[40] == max(40) || others_smallest, "the hottest class shrank first: {}", capacity[40]);
    }
}
