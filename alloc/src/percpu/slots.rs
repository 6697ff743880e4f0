//! Where each class's stack lives in a per-CPU region (slot numbers as in
//! `rseq_sys::slab_layout`).
//!
//! A class wakes at its *home*: [`capacity::initial`] slots in a zone packed
//! right after the headers, so that the classes a CPU uses share a few pages
//! (sixteen classes of a small program touch 3 pages there, where a range of
//! their own each touched 16). A class that grows past its home moves,
//! objects and all, to its *growth range* of [`capacity::max`] slots, further
//! up; it moves back when its cache is emptied or shrinks to fit at home
//! again, and a region whose classes are all at home can give its growth
//! pages back to the system.
//!
//! The sections need none of this: the sentinel below a stack marks its
//! bottom, wherever it is. The slow paths tell the two places apart by the
//! header's `end`, which is at most [`Layout::home_end`] at home and above
//! [`Layout::growth_start`] in the growth range.

use rseq_sys::slab_layout::{Header, SLOT_BYTES, STATE_OFFSET, first_free_slot};

use super::capacity;
use crate::size_class::CLASSES;

/// The slots of every class, the same in every region.
pub(crate) struct Layout {
    /// First slot of the bytes kept for the CPU's upkeep state: the
    /// region's first, below the slab's state word, on the first page with
    /// the headers (a page of its own elsewhere was one more page resident
    /// in every program).
    pub(crate) state_slot: u32,
    /// First slot of each class's home (its sentinel is the slot below).
    pub(crate) home: [u32; CLASSES + 1],
    /// Slots of each class's home.
    pub(crate) initial: [u32; CLASSES + 1],
    /// Slots of each class woken by a free ([`capacity::outflow`]).
    pub(crate) freed: [u32; CLASSES + 1],
    /// First slot of each class's growth range (its sentinel is the slot below).
    pub(crate) begin: [u32; CLASSES + 1],
    /// Slots of each class's growth range.
    pub(crate) reserved: [u32; CLASSES + 1],
    /// One past the last home slot.
    pub(crate) home_end: u32,
    /// The first slot of the growth zone, on a page boundary.
    pub(crate) growth_start: u32,
    /// One past the last slot of the growth zone.
    pub(crate) growth_end: usize,
}

const PAGE_SLOTS: usize = 4096 / SLOT_BYTES;

const fn build(region_slots: usize, state_bytes: usize) -> Layout {
    let mut layout = Layout {
        state_slot: 0,
        home: [0; CLASSES + 1],
        initial: [0; CLASSES + 1],
        freed: [0; CLASSES + 1],
        begin: [0; CLASSES + 1],
        reserved: [0; CLASSES + 1],
        home_end: 0,
        growth_start: 0,
        growth_end: 0,
    };
    // The upkeep state fills the slots below the slab's state word. The
    // first free slot after the headers is the sentinel dormant classes
    // share (`protocol::Geometry::shared_sentinel`; their empty stacks start
    // and end right above it, so no section reads or writes past it); then
    // the homes, each with its own sentinel below it.
    assert!(state_bytes <= STATE_OFFSET, "the upkeep state fits below the slab's state word");
    layout.state_slot = 0;
    let mut slot = first_free_slot(CLASSES + 1) + 2;
    let mut class = 1;
    while class <= CLASSES {
        layout.home[class] = slot as u32;
        layout.initial[class] = capacity::initial(class) as u32;
        layout.freed[class] = capacity::outflow(class) as u32;
        slot += capacity::initial(class) + 1;
        class += 1;
    }
    layout.home_end = (slot - 1) as u32;
    // Growth ranges, from the next page on (so that the zone can be given
    // back whole).
    slot = (slot - 1).div_ceil(PAGE_SLOTS) * PAGE_SLOTS;
    layout.growth_start = slot as u32;
    class = 1;
    while class <= CLASSES {
        layout.begin[class] = (slot + 1) as u32;
        layout.reserved[class] = capacity::max(class) as u32;
        slot += 1 + capacity::max(class);
        class += 1;
    }
    layout.growth_end = slot;
    assert!(slot <= region_slots && slot <= u32::MAX as usize);
    layout
}

/// The layout of a region of `1 << shift` bytes that keeps `state_bytes`
/// of upkeep state (8-aligned, at [`Layout::state_slot`]).
pub(crate) const fn layout(shift: u32, state_bytes: usize) -> Layout {
    build((1 << shift) / SLOT_BYTES, state_bytes)
}

impl Layout {
    /// Where `class`'s stack starts in a region whose header for it reads
    /// `header`: its home or its growth range, by `end`. `None` if the
    /// header is no stack of its own: a dormant class, or a region never
    /// opened (all zeros).
    pub(crate) fn stack_begin(&self, class: usize, header: Header) -> Option<u32> {
        let begin = if header.end <= self.home_end { self.home[class] } else { self.begin[class] };
        (begin <= header.current && header.current <= header.end).then_some(begin)
    }

    /// Whether a stack that starts at `begin` is `class`'s home.
    pub(crate) fn is_home(&self, class: usize, begin: u32) -> bool {
        begin == self.home[class]
    }

    /// The most slots `class` may have where its stack starts at `begin`.
    pub(crate) fn room(&self, class: usize, begin: u32) -> u32 {
        if self.is_home(class, begin) { self.initial[class] } else { self.reserved[class] }
    }

    /// The growth zone, in slots: what a region with every class at home
    /// does not use.
    pub(crate) fn growth_zone(&self) -> core::ops::Range<usize> {
        self.growth_start as usize..self.growth_end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::percpu::SLAB_SHIFT;
    use crate::percpu::state::UPKEEP_STATE_BYTES as STATE_BYTES;

    /// Homes and growth ranges are disjoint, in order, and every stack a
    /// header can describe is found where it is.
    #[test]
    fn homes_are_packed_and_every_stack_is_found_where_it_is() {
        let layout = layout(SLAB_SHIFT, STATE_BYTES);
        let shared = first_free_slot(CLASSES + 1) as u32;
        let state_end = layout.state_slot as usize * SLOT_BYTES + STATE_BYTES;
        assert!(state_end <= STATE_OFFSET, "the upkeep state ends below the slab's state word");
        assert_eq!(layout.home[1], shared + 2, "class 1's sentinel follows the shared one");
        for class in 2..=CLASSES {
            assert_eq!(layout.home[class], layout.home[class - 1] + layout.initial[class - 1] + 1);
            assert!(layout.begin[class] > layout.begin[class - 1] + layout.reserved[class - 1]);
        }
        assert!(layout.home_end < layout.growth_start && (layout.growth_start as usize).is_multiple_of(PAGE_SLOTS));
        for class in 1..=CLASSES {
            let (home, begin) = (layout.home[class], layout.begin[class]);
            for (first, room) in [(home, layout.initial[class]), (begin, layout.reserved[class])] {
                for (current, end) in [(first, first), (first, first + room), (first + room / 2, first + room)] {
                    let header = Header { current, end };
                    assert_eq!(layout.stack_begin(class, header), Some(first), "class {class}, {header:?}");
                    assert_eq!(layout.room(class, first), room);
                }
            }
            assert_eq!(layout.stack_begin(class, Header { current: 0, end: 0 }), None, "a region never opened");
            if class > 1 {
                let dormant = Header { current: shared + 1, end: shared + 1 };
                assert_eq!(layout.stack_begin(class, dormant), None, "dormant class {class}");
            }
        }
        // Sixteen classes of up to 256 bytes wake within 3 pages of the headers.
        let woken = layout.home[16] as usize + layout.initial[16] as usize;
        assert!(woken <= 3 * PAGE_SLOTS, "{woken} slots");
    }
}
