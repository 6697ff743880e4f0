//! The size-class and page-map functions' invariants:
//! - `class_for(size, align)` is the smallest class that holds `size` bytes
//!   and whose size is a multiple of `align` (for `align` up to 64, not a
//!   class for blocks aligned to more only), and `route` agrees with it;
//! - `starts_object(class, offset)` holds exactly at multiples of the class
//!   size inside the span;
//! - `lookup(addr)` finds a block exactly at the start of a live block, of
//!   the tier `route` chose (or a medium span, from the cache of a class
//!   of `PROMOTE_MEDIUM_FROM` bytes or more) and with room for the request, and
//!   nothing at an address inside a block, on the stack, in `.data`, or in
//!   memory from another allocator, and never faults, whatever the address.

use std::alloc::{GlobalAlloc, Layout, System};

use rseq_alloc::RseqAlloc;
use rseq_alloc::internals::{
    CLASSES, MAX_SMALL, PROMOTE_MEDIUM_FROM, Tier, class_for, class_is_for_aligned_only, class_size, lookup,
    objects_per_span, request_overhead, route, starts_object,
};

use crate::Input;

const MAX_ACTIONS: usize = 1024;
static IN_DATA: [u64; 4] = [1, 2, 3, 4];

fn check_class(size: usize, align: usize) {
    let tier = route(size, align);
    match class_for(size, align) {
        Some(class) => {
            assert!((1..=CLASSES).contains(&class), "class {class} out of range");
            let bytes = class_size(class);
            assert!(bytes >= size.max(1), "class {class} ({bytes} B) too small for {size}");
            assert!(bytes.is_multiple_of(align), "class {class} ({bytes} B) not a multiple of {align}");
            let serves =
                |c: usize| class_size(c).is_multiple_of(align) && (align > 64 || !class_is_for_aligned_only(c));
            assert!(serves(class), "class {class} ({bytes} B) is not for {size}/{align}");
            for smaller in 1..class {
                let b = class_size(smaller);
                assert!(b < size.max(1) || !serves(smaller), "class {smaller} would do for {size}/{align}");
            }
            assert_eq!(tier, Tier::Small(class));
        }
        None => {
            assert!(size.max(align) > MAX_SMALL, "no class for {size}/{align}");
            assert_ne!(tier, Tier::Small(0));
            assert!(!matches!(tier, Tier::Small(_)));
        }
    }
}

fn check_object_start(class: usize, offset: usize) {
    let size = class_size(class);
    let expected = offset.is_multiple_of(size) && offset / size < objects_per_span(class);
    assert_eq!(starts_object(class, offset), expected, "class {class} offset {offset}");
}

/// Checks the page map around a fresh block of `size` bytes aligned to `align`.
fn check_block(size: usize, align: usize, probe: usize) {
    let Ok(layout) = Layout::from_size_align(size.max(1), align) else { return };
    if layout.size() > 16 << 20 {
        return;
    }
    // SAFETY: a non-zero-sized layout; freed below with it.
    let ptr = unsafe { RseqAlloc.alloc(layout) };
    if ptr.is_null() {
        assert!(align > 2 << 20, "alloc({layout:?}) failed");
        return;
    }
    let (tier, capacity) = lookup(ptr as usize).unwrap_or_else(|| panic!("no block found at {ptr:p}"));
    let routed = route(layout.size() + request_overhead(), align);
    // A block another target's `realloc` promoted, parked in its class's cache.
    let parked =
        tier == Tier::Medium && matches!(routed, Tier::Small(class) if class_size(class) >= PROMOTE_MEDIUM_FROM);
    assert!(tier == routed || parked, "{layout:?}: {tier:?}, routed {routed:?}");
    assert!(capacity >= layout.size(), "{layout:?}: capacity {capacity}");
    let inside = 1 + probe % (capacity - 1).max(1);
    if inside < capacity {
        assert_eq!(lookup(ptr as usize + inside), None, "{layout:?}: a block at {ptr:p} + {inside}");
    }
    // SAFETY: allocated above with `layout`.
    unsafe { RseqAlloc.dealloc(ptr, layout) };
}

/// Runs the checks `data` encodes.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let on_stack = 0u64;
    for _ in 0..MAX_ACTIONS {
        if input.is_empty() {
            break;
        }
        match input.byte() % 5 {
            0 => check_class(input.size(), input.align()),
            1 => {
                let class = input.byte() as usize % CLASSES + 1;
                let span = objects_per_span(class) * class_size(class);
                check_object_start(class, input.bits(3) as usize % (span + 4096));
            }
            2 => check_block(input.size(), input.align(), input.bits(4) as usize),
            3 => {
                // Addresses that are not ours, and any address at all.
                assert_eq!(lookup(&raw const on_stack as usize), None);
                assert_eq!(lookup(IN_DATA.as_ptr() as usize), None);
                let layout = Layout::from_size_align(64, 16).unwrap();
                // SAFETY: a non-zero-sized layout, freed below.
                let foreign = unsafe { System.alloc(layout) };
                assert_eq!(lookup(foreign as usize), None);
                // SAFETY: allocated above.
                unsafe { System.dealloc(foreign, layout) };
                let _ = lookup(input.bits(8) as usize);
            }
            _ => {
                // An address near a live block: lookup may say anything but must not fault.
                let layout = Layout::from_size_align(input.size().clamp(1, 1 << 20), 16).unwrap();
                // SAFETY: a non-zero-sized layout, freed below.
                let ptr = unsafe { RseqAlloc.alloc(layout) };
                assert!(!ptr.is_null());
                let delta = input.bits(4) as i32 as isize;
                let _ = lookup((ptr as usize).wrapping_add_signed(delta));
                // SAFETY: allocated above.
                unsafe { RseqAlloc.dealloc(ptr, layout) };
            }
        }
    }
}
