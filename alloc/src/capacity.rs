//! How many objects each CPU may cache per class, and how that changes.
//!
//! Every class has slots reserved in each region for [`max`] objects, but
//! may use only its current capacity (the header's `end`): [`initial`] at
//! first. Once per upkeep period, for each CPU, [`plan`] looks at what each
//! class did since the last round:
//! - a class that missed (found its cache empty or full) [`GROW_AT`] times
//!   or more doubles its capacity, up to [`max`];
//! - a class that did nothing at all (its header did not change) halves
//!   it, down to [`min`], and its objects beyond the new end go back to the
//!   central lists;
//! - while the CPU's capacity in bytes exceeds [`CPU_BUDGET`], the class
//!   with the fewest misses (the biggest, of equals) is halved.
//!
//! So hot classes get room, cold ones give it back, and no CPU can hold
//! more than the budget (plus what is in flight) in its cache. A class
//! never used on a CPU stays dormant there (capacity 0, no slots touched)
//! until its first miss wakes it with [`initial`].

use crate::size_class::{CLASSES, SIZES};

/// Most bytes of objects one CPU's cache may be sized for. (Capacity, not
/// use: classes nobody uses are sized down first, at no cost.)
pub(crate) const CPU_BUDGET: usize = 2 << 20;
/// Misses per period that make a class grow.
pub(crate) const GROW_AT: u32 = 4;
/// Largest batch moved between a region and the central lists.
pub(crate) const MAX_BATCH: usize = 32;

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

/// Capacity a class starts with: 64 KiB worth, 8 to 512 objects.
pub(crate) const fn initial(class: usize) -> usize {
    clamp_by_bytes(64 * 1024, class, 8, 512)
}

/// Slots reserved per class: 128 KiB worth, 16 to 1024 objects.
pub(crate) const fn max(class: usize) -> usize {
    clamp_by_bytes(128 * 1024, class, 16, 1024)
}

/// Objects moved per refill or drain of `class`.
pub(crate) const fn batch(class: usize) -> usize {
    let half = initial(class) / 2;
    if half > MAX_BATCH { MAX_BATCH } else { half }
}

/// Smallest capacity: 8 KiB worth, at least 2 objects and at most a batch
/// and one (a refill or drain moves fewer when the capacity is small).
pub(crate) const fn min(class: usize) -> usize {
    clamp_by_bytes(8 * 1024, class, 2, batch(class) + 1)
}

/// What one class of one CPU did since the last round.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Activity {
    /// Refills and drains.
    pub(crate) misses: u32,
    /// Whether its header changed at all.
    pub(crate) active: bool,
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
        if a.misses >= GROW_AT {
            capacity[class] = (capacity[class] * 2).min(max(class));
        } else if !a.active && a.misses == 0 {
            capacity[class] = (capacity[class] / 2).max(min(class));
        }
    }
    let bytes =
        |capacity: &[usize; CLASSES + 1]| -> usize { (1..=CLASSES).map(|c| capacity[c] * SIZES[c] as usize).sum() };
    while bytes(capacity) > CPU_BUDGET {
        let victim = (1..=CLASSES)
            .filter(|&c| capacity[c] > min(c))
            .min_by_key(|&c| (activity[c].misses, usize::MAX - capacity[c] * SIZES[c] as usize));
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
            assert!(batch(c) >= 1 && min(c) >= 2 && min(c) <= batch(c) + 1);
        }
    }

    #[test]
    fn a_missing_class_grows_and_an_idle_one_shrinks() {
        let mut capacity = initial_capacities();
        let mut activity = [Activity { misses: 0, active: true }; CLASSES + 1];
        activity[3] = Activity { misses: 10, active: true };
        activity[20] = Activity { misses: 0, active: false };
        plan(&mut capacity, &activity);
        assert_eq!(capacity[3], (initial(3) * 2).min(max(3)), "grown, and never the budget's victim");
        assert!(capacity[20] <= (initial(20) / 2).max(min(20)), "shrunk");
        let bytes: usize = (1..=CLASSES).map(|c| capacity[c] * SIZES[c] as usize).sum();
        assert!(bytes <= CPU_BUDGET, "{bytes}");
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
        let mut activity = [Activity { misses: 1, active: true }; CLASSES + 1];
        activity[40] = Activity { misses: 100, active: true };
        plan(&mut capacity, &activity);
        let bytes: usize = (1..=CLASSES).map(|c| capacity[c] * SIZES[c] as usize).sum();
        assert!(bytes <= CPU_BUDGET, "{bytes}");
        assert_eq!(capacity[40], max(40), "the hottest class keeps its room");
    }
}
