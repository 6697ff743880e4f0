//! Coarse classes: while a program is small, C's `malloc` serves each size
//! group from one class.
//!
//! A size-class allocator pays at least one page per class a program uses,
//! where a single heap packs a few blocks of many sizes into one: `tight`
//! (one block at a time of each of sixteen sizes) kept sixteen pages of
//! objects and three more of per-CPU stacks, against glibc's one. So a
//! *group*, the classes between two powers of two up to [`COARSE_UP_TO`]
//! (16, 32, 48–64, 80–128, …, 576–1024 bytes: seven groups), starts
//! *coarse*: every request in it goes to the group's largest class, its
//! *representative*, and those sixteen sizes share five classes (16 and
//! 32 are groups of one; five groups have more). Each
//! block then wastes up to half its size, which is why a group turns
//! *fine* for good (exact classes, as Rust always gets) once its
//! representative takes a second span from the page heap: past one span,
//! a group's rounding would cost more than the pages it saves. The waste is
//! bounded by that span (64 KiB) per group.
//!
//! Only C's allocations (`malloc`, `calloc`, `realloc`) are served coarse:
//! a C `free` finds a block's class by its page, and the sized frees and
//! `realloc` accept a block of the group's representative for any size of
//! the group ([`fits`]). Rust's `dealloc` trusts its layout to name the
//! class, so `GlobalAlloc` reads the exact table alone.
//!
//! Any entry of [`TABLE`] is, at any moment, a size's exact class or its
//! group's representative, both big enough; a request racing a group's
//! turn gets either, so the entries are relaxed atomics and the turn takes
//! no lock.

use crate::size_class::{CLASSES, LUT_LEN, build_lut, build_sizes, class_by_index, lut_index};
use crate::sync::{AtomicU8, AtomicU32, Ordering};

/// Largest representative: groups of larger classes start fine. A block of
/// 1 KiB or more fills a quarter page by itself, so sharing a class saves
/// little there, and rounding a block up costs its pages.
pub(crate) const COARSE_UP_TO: usize = 1024;

const SIZES: [u32; CLASSES + 1] = build_sizes();

/// Each class's representative: the class of the power of two at or above
/// its size (every power of two from 16 is a class's size), or the class
/// itself above [`COARSE_UP_TO`].
const fn build_representatives() -> [u8; CLASSES + 1] {
    let mut rep = [0u8; CLASSES + 1];
    let mut class = 1;
    while class <= CLASSES {
        let top = (SIZES[class] as usize).next_power_of_two();
        rep[class] = if top > COARSE_UP_TO { class as u8 } else { class_of_size(top) };
        class += 1;
    }
    rep
}

const fn class_of_size(size: usize) -> u8 {
    let mut class = 1;
    while (SIZES[class] as usize) != size {
        class += 1;
    }
    class as u8
}

const REPRESENTATIVES: [u8; CLASSES + 1] = build_representatives();
static REPRESENTATIVE: [u8; CLASSES + 1] = REPRESENTATIVES;

/// Whether a C program's first requests can reach `class`: it is a class
/// no coarse group hides (its own representative). The per-CPU regions
/// give these the first homes, so that a small program's stacks share
/// pages too (`class_slots`).
pub(crate) const fn first_served(class: usize) -> bool {
    REPRESENTATIVES[class] as usize == class
}

/// The class C's allocations use, by [`lut_index`]: the representative of
/// the size's exact class while its group is coarse, the exact class after.
static TABLE: [AtomicU8; LUT_LEN] = {
    let (rep, exact) = (REPRESENTATIVES, build_lut());
    let mut table = [const { AtomicU8::new(0) }; LUT_LEN];
    let mut i = 0;
    while i < LUT_LEN {
        table[i] = AtomicU8::new(rep[exact[i] as usize]);
        i += 1;
    }
    table
};

/// Bit `c` set: representative `c` has taken a span since the start.
static SPANNED: AtomicU32 = AtomicU32::new(0);
/// Bit `c` set: representative `c`'s group has turned fine.
static FINE: AtomicU32 = AtomicU32::new(0);

/// The class C's allocation of `size` bytes (`size <= MAX_SMALL`) uses now.
#[inline(always)]
pub(crate) fn class_of(size: usize) -> usize {
    TABLE[lut_index(size)].load(Ordering::Relaxed) as usize
}

/// Whether a block of `class` may stand for a request whose exact class is
/// `exact`: it is that class, or its group's representative.
#[inline]
pub(crate) fn fits(class: usize, exact: usize) -> bool {
    class == exact || class == REPRESENTATIVE[exact] as usize
}

/// Whether `class` is the representative of a group of more than one
/// class (only those have a bit in [`SPANNED`] and [`FINE`]).
fn leads_a_group(class: usize) -> bool {
    class > 1 && REPRESENTATIVE[class - 1] as usize == class
}

/// The central list of `class` took a fresh span from the page heap (slow
/// path): a representative's second turns its group fine.
pub(crate) fn took_span(class: usize) {
    if !leads_a_group(class) {
        return;
    }
    let bit = 1 << class;
    if SPANNED.fetch_or(bit, Ordering::Relaxed) & bit != 0 && FINE.fetch_or(bit, Ordering::Relaxed) & bit == 0 {
        for (i, entry) in TABLE.iter().enumerate() {
            if entry.load(Ordering::Relaxed) as usize == class {
                entry.store(class_by_index(i), Ordering::Relaxed);
            }
        }
    }
}

/// Groups still coarse, and groups there are (statistics).
pub(crate) fn coarse_groups() -> (u32, u32) {
    let groups = (1..=CLASSES).filter(|&c| leads_a_group(c)).count() as u32;
    (groups - FINE.load(Ordering::Relaxed).count_ones(), groups)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::size_class::{MAX_SMALL, class_of as exact_class};

    #[test]
    fn representatives_hold_their_group_and_at_most_double_it() {
        for size in 1..=MAX_SMALL {
            let exact = exact_class(size);
            let rep = REPRESENTATIVE[exact] as usize;
            assert!(fits(rep, exact) && rep >= exact);
            if SIZES[exact] as usize > COARSE_UP_TO {
                assert_eq!(rep, exact, "size {size}");
            } else {
                assert_eq!(SIZES[rep] as usize, size.next_power_of_two().max(16), "size {size}");
            }
        }
        // 16, 32, 64, ..., 1024: seven groups, five of them with more than
        // one class (16 and 32 are groups of one).
        let reps: Vec<usize> = (1..=CLASSES).filter(|&c| leads_a_group(c)).map(|c| SIZES[c] as usize).collect();
        assert_eq!(reps, [64, 128, 256, 512, 1024]);
    }

    #[test]
    fn the_table_starts_coarse_where_groups_are() {
        for size in [1, 16, 17, 32, 33, 48, 64, 80, 100, 128, 144, 200, 256, 1000, 1024, 1025, 4096, MAX_SMALL] {
            let expected = REPRESENTATIVE[exact_class(size)] as usize;
            assert_eq!(TABLE[lut_index(size)].load(Ordering::Relaxed) as usize, expected, "size {size}");
        }
    }
}
