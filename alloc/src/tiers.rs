//! The tiers as the front sees them: what a block is from its address alone
//! (segment map, page class, span head), where a request of a given size
//! and alignment is served, the per-CPU caches' slow paths (which drive the
//! upkeep's clock), medium spans, and giving a checked block back to the
//! tier it came from.

use core::ptr::null_mut;

use crate::geometry::{ADDRESS_LIMIT, MAX_MEDIUM};
use crate::huge;
use crate::medium;
use crate::percpu::{self, Marks};
use crate::report::{self, Call};
use crate::segment::{
    Kind, PAGE_HEAP, PAGE_MEDIUM, PAGE_SHIFT, PAGE_SIZE, Segment, TAIL_PAGE, is_ours, small_class_in,
};
use crate::size_class::{CLASSES, SIZES, class_for, starts_object};
use crate::sync::AtomicOps;
use crate::upkeep;

/// What a block is, found from its address alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Block {
    /// An object of a small class.
    Small(usize),
    /// A medium span: its segment and head page.
    Medium(*mut Segment, usize),
    /// A huge block: its segment.
    Huge(*mut Segment),
}

/// Finds what `ptr` is; aborts, naming `call`, if it is not a block the
/// allocator handed out: not in a segment of ours, not the start of an
/// object or span (an interior pointer), or in a free page. What it cannot
/// see here, a small object freed twice, is caught when the object reaches
/// the central list, and at once in hardened mode.
#[inline]
pub(crate) fn classify(ptr: usize, call: Call) -> Block {
    match lookup(ptr) {
        Some(block) => block,
        None => report::invalid_pointer(call, ptr),
    }
}

/// What the block starting at `ptr` is, or `None` if no block of ours can
/// start there. Safe for any address: it reads only the segment map and,
/// for addresses in a segment of ours, that segment's header.
#[inline]
pub(crate) fn lookup(ptr: usize) -> Option<Block> {
    let Some(class) = page_class(ptr) else { return lookup_far(ptr) };
    if let Some(small) = small_class_in(class) {
        return starts_object(small, span_offset(ptr)).then_some(Block::Small(small));
    }
    lookup_other(Segment::containing(ptr), Segment::page_index(ptr), class, ptr)
}

/// The class byte of the page holding `ptr`, if `ptr` is in a segment of
/// ours (0: a free page or a huge segment; [`PAGE_MEDIUM`]: a medium span).
#[inline(always)]
fn page_class(ptr: usize) -> Option<u8> {
    if !is_ours(ptr) {
        return None;
    }
    let seg = Segment::containing(ptr);
    // SAFETY: the segment is ours, so its header page is mapped; huge
    // segments read 0 in `page_class` (never written).
    Some(unsafe { (*seg).page_class[Segment::page_index(ptr)].load_acquire() })
}

/// Whether a page class byte names a small class at its span's head page:
/// the positive bytes (a tail page's and a medium span's have the top bit
/// set), as a signed test (one instruction fewer on `free` than a range check).
#[inline(always)]
fn is_small(class: u8) -> bool {
    const _: () = assert!(CLASSES < 128 && (PAGE_MEDIUM as i8) < 0 && (TAIL_PAGE as i8) < 0);
    (class as i8) > 0
}

/// Whether `ptr`, in the head page of a small span of `class`
/// ([`small_class_of`]), is where one of its objects starts.
#[inline(always)]
pub(crate) fn starts_small_object(class: usize, ptr: usize) -> bool {
    starts_object(class, ptr & (PAGE_SIZE - 1))
}

/// Offset of `ptr` from the start of the span covering it (a span of ours).
#[inline(always)]
pub(crate) fn span_offset(ptr: usize) -> usize {
    let seg = Segment::containing(ptr);
    // SAFETY: the segment is ours; `page_head` is written before the page's
    // class is published (release), which the caller has read (acquire).
    let head = unsafe { (*seg).page_head[Segment::page_index(ptr)] } as usize;
    ptr - Segment::page_start(seg, head)
}

/// A far huge block, whose header is in the segment unit before it (see `huge`).
#[cold]
fn lookup_far(ptr: usize) -> Option<Block> {
    huge::far_segment(ptr).map(Block::Huge)
}

#[cold]
fn lookup_other(seg: *mut Segment, page: usize, class: u8, ptr: usize) -> Option<Block> {
    // SAFETY: the segment is ours; `kind` is always written at creation.
    match unsafe { (*seg).kind } {
        // SAFETY: as above.
        Kind::Huge if unsafe { huge::is_block(seg, ptr) } => Some(Block::Huge(seg)),
        // SAFETY: as above; `page_head` is written with the page class.
        Kind::Spans if class == PAGE_MEDIUM && unsafe { (*seg).page_head[page] } as usize == page => {
            (ptr == Segment::page_start(seg, page)).then_some(Block::Medium(seg, page))
        }
        _ => None,
    }
}

/// Where a request of a given size and alignment is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// A small class.
    Small(usize),
    /// A medium span from the page heap.
    Medium,
    /// A segment of its own.
    Huge,
}

/// The one place that decides where `size` bytes aligned to `align` live;
/// `realloc` keeps a block in place only if this answer does not change,
/// so that a later sized free finds it where it is (with the two
/// exceptions the front's `realloc` states).
#[inline]
pub(crate) fn route(size: usize, align: usize) -> Route {
    match class_for(size, align) {
        Some(class) => Route::Small(class),
        None if size <= MAX_MEDIUM && align <= PAGE_SIZE => Route::Medium,
        None => Route::Huge,
    }
}

/// A medium block, and whether it is zero-filled.
pub(crate) fn alloc_medium(size: usize) -> (*mut u8, bool) {
    let pages = size.max(1).div_ceil(PAGE_SIZE);
    if let Some(span) = medium::take(pages) {
        // SAFETY: the span is ours now.
        unsafe { note_medium_size(span, size) };
        return (span as *mut u8, false);
    }
    let block = match PAGE_HEAP.alloc_span(pages, PAGE_MEDIUM) {
        Some(span) => (Segment::page_start(span.seg, span.head) as *mut u8, span.zeroed),
        None => (null_mut(), false),
    };
    if !block.0.is_null() {
        // SAFETY: as above.
        unsafe { note_medium_size(block.0 as usize, size) };
    }
    upkeep::after_page_heap_trip(true);
    block
}

/// Records that the medium span at `span` now holds a block of `size`
/// bytes, for `malloc_usable_size` to report (to 4 KiB) rather than the
/// span's pages: a program that accounts for its memory by usable sizes,
/// as redis does, would count 64 KiB for a buffer of 5.
///
/// # Safety
/// `span` starts a live medium span that the caller holds.
pub(crate) unsafe fn note_medium_size(span: usize, size: usize) {
    let (seg, head) = (Segment::containing(span), Segment::page_index(span));
    // SAFETY: forwarded from the caller.
    unsafe { note_span_size(seg, head, size) }
}

/// [`note_medium_size`] of the span at `head` in `seg`.
///
/// # Safety
/// As [`note_medium_size`].
#[inline(always)]
pub(crate) unsafe fn note_span_size(seg: *mut Segment, head: usize, size: usize) {
    // SAFETY: the span is live, so its descriptor is; only its holder
    // writes this field.
    unsafe { (*seg).spans[head].usable_4k = size.div_ceil(4096) as u16 };
}

/// The class of `ptr` if it passes the checks `free` can afford on every
/// call: 16-aligned, in a segment of ours, in the head page of a small span
/// (a pointer in one of its other pages gets `None`, and [`lookup`] then
/// finds its class).
///
/// Whether it starts an object is [`starts_small_object`]'s question, which
/// C's `free` asks too; Rust's `dealloc`, whose layout the language
/// guarantees, does not.
#[inline(always)]
pub(crate) fn small_class_of(ptr: usize) -> Option<usize> {
    // Alignment and the segment map's range in one test (three instructions
    // where the two tests apart took six).
    const NOT_SMALL: usize = 15 | !(ADDRESS_LIMIT - 1);
    if ptr & NOT_SMALL != 0 {
        return None;
    }
    let class = page_class(ptr)?;
    is_small(class).then_some(class as usize)
}

/// An object of `class` when this CPU's cache missed (or the fast path is
/// off): the per-CPU slow path, then the upkeep if its trip to the central
/// list made one due. Null if memory ran out.
#[inline(never)]
pub(crate) fn alloc_small_slow(class: usize, marks: Marks) -> *mut u8 {
    let (object, trip) = percpu::alloc_slow(class, marks);
    upkeep::after_alloc(trip);
    object
}

/// Frees `ptr`, an object of `class`, when this CPU's cache did not take it
/// (or the fast path is off); as [`alloc_small_slow`].
#[inline(never)]
pub(crate) fn free_small_slow(class: usize, ptr: *mut u8, marks: Marks) {
    upkeep::after_free(percpu::free_slow(class, ptr as usize, marks));
}

/// Gives a checked block back to its tier (hardened mode has done its
/// checks already, or is off).
///
/// # Safety
/// `block` is what `ptr` is, and `ptr` is not used afterwards.
pub(crate) unsafe fn free_block(ptr: usize, block: Block) {
    match block {
        Block::Small(class) => {
            if percpu::push(class, ptr).is_err() {
                free_small_slow(class, ptr as *mut u8, Marks::Kept);
            }
        }
        Block::Medium(seg, head) => {
            // SAFETY: classify checked that `head` starts a medium span of `seg`.
            let pages = unsafe { (*seg).spans[head].pages } as usize;
            // SAFETY: the caller gives the block up.
            if unsafe { medium::keep(ptr, pages) } {
                return;
            }
            // SAFETY: as above.
            unsafe { PAGE_HEAP.free_span(seg, head, pages) };
            upkeep::after_page_heap_trip(false);
        }
        Block::Huge(seg) => {
            // SAFETY: the caller gives the block up.
            unsafe { huge::free(seg) };
            upkeep::after_page_heap_trip(false);
        }
    }
}

/// Bytes `malloc_usable_size` reports for `block` (at least what was asked
/// for): a small block's class size; a medium span's size last noted
/// ([`note_medium_size`], to 4 KiB); a huge block's size last asked for,
/// to 4 KiB.
///
/// # Safety
/// `block` is what [`classify`] found for a live block.
pub(crate) unsafe fn usable(block: Block) -> usize {
    match block {
        // SAFETY: classify checked the span; its holder noted its size.
        Block::Medium(seg, head) => unsafe {
            let s = &raw const (*seg).spans[head];
            ((*s).usable_4k as usize * 4096).min(((*s).pages as usize) << PAGE_SHIFT)
        },
        // A huge block may sit in a larger cached mapping: what was asked
        // for, to 4 KiB, as for a medium span.
        // SAFETY: classify checked the segment; its holder set `huge_asked`.
        Block::Huge(seg) => unsafe { (*seg).huge_asked.next_multiple_of(4096).min(huge::usable_size(seg)) },
        // SAFETY: forwarded from the caller.
        _ => unsafe { capacity(block) },
    }
}

/// Bytes in `block` (at least what was asked for, hardened mode's overhead included).
///
/// # Safety
/// `block` is what [`classify`] found for a live block.
pub(crate) unsafe fn capacity(block: Block) -> usize {
    match block {
        Block::Small(class) => SIZES[class] as usize,
        // SAFETY: classify checked the span.
        Block::Medium(seg, head) => (unsafe { (*seg).spans[head].pages } as usize) << PAGE_SHIFT,
        // SAFETY: classify checked the segment.
        Block::Huge(seg) => unsafe { huge::usable_size(seg) },
    }
}
