//! The front: routes every request by size and alignment to the per-CPU
//! caches (small), the page heap (medium) or a segment of its own (huge),
//! and finds what an unsized pointer is. `GlobalAlloc` and the C API are
//! thin layers over these functions.

use core::ptr::null_mut;

use crate::geometry::{ADDRESS_LIMIT, MAX_MEDIUM};
use crate::hardened;
use crate::huge;
use crate::percpu;
use crate::report::{self, Call};
use crate::segment::{Kind, PAGE_HEAP, PAGE_MEDIUM, PAGE_SHIFT, PAGE_SIZE, Segment, is_ours};
use crate::size_class::{CLASSES, SIZES, class_for, starts_object};
use crate::sync::Ordering;

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
    let class = page_class(ptr)?;
    if is_small(class) {
        let class = class as usize;
        return starts_object(class, span_offset(ptr)).then_some(Block::Small(class));
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
    Some(unsafe { (*seg).page_class[Segment::page_index(ptr)].load(Ordering::Acquire) })
}

/// Whether a page class byte names a small class: the positive bytes, as a
/// signed test (one instruction fewer on `free` than a range check).
#[inline(always)]
fn is_small(class: u8) -> bool {
    const _: () = assert!(CLASSES < 128 && (PAGE_MEDIUM as i8) < 0);
    (class as i8) > 0
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

#[cold]
fn lookup_other(seg: *mut Segment, page: usize, class: u8, ptr: usize) -> Option<Block> {
    // SAFETY: the segment is ours; `kind` is always written at creation.
    match unsafe { (*seg).kind } {
        // SAFETY: as above.
        Kind::Huge if ptr == seg as usize + unsafe { (*seg).huge_offset } => Some(Block::Huge(seg)),
        // SAFETY: as above; `page_head` is written with the page class.
        Kind::Spans if class == PAGE_MEDIUM && unsafe { (*seg).page_head[page] } as usize == page => {
            (ptr == Segment::page_start(seg, page)).then_some(Block::Medium(seg, page))
        }
        _ => None,
    }
}

/// Allocates a small object of `class`, for a request of `size` bytes
/// aligned to `align` (which only hardened mode needs).
#[inline(always)]
pub(crate) fn alloc_small(class: usize, size: usize, align: usize, call: Call) -> *mut u8 {
    match percpu::pop(class) {
        Ok(object) => object as *mut u8,
        Err(_) => alloc_small_missed(class, size, align, call),
    }
}

/// [`alloc_small`] after the per-CPU pop missed (or the fast path is off).
#[cold]
#[inline(never)]
pub(crate) fn alloc_small_missed(class: usize, size: usize, align: usize, call: Call) -> *mut u8 {
    if hardened::enabled() {
        return hardened::alloc(size, align, false, call);
    }
    percpu::alloc_slow(class)
}

/// Frees a small object of `class`; `size` is the caller's size, if known
/// (hardened mode checks it).
#[inline(always)]
pub(crate) fn free_small(class: usize, ptr: *mut u8, size: Option<usize>, call: Call) {
    if percpu::push(class, ptr as usize).is_err() {
        free_small_missed(class, ptr, size, call);
    }
}

#[cold]
#[inline(never)]
fn free_small_missed(class: usize, ptr: *mut u8, size: Option<usize>, call: Call) {
    if hardened::enabled() {
        // SAFETY: the caller of `free_small` gives the block up.
        return unsafe { hardened::free(ptr, size, call) };
    }
    percpu::free_slow(class, ptr as usize);
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
/// so that a later sized free finds it where it is, with two exceptions: a
/// block `realloc` grows past [`PROMOTE_AT`] is huge ([`stays_huge`]), and
/// one C's `realloc` grows past [`C_PROMOTE_MEDIUM_AT`] is medium
/// ([`stays_medium`]).
#[inline]
pub(crate) fn route(size: usize, align: usize) -> Route {
    match class_for(size, align) {
        Some(class) => Route::Small(class),
        None if size <= MAX_MEDIUM && align <= PAGE_SIZE => Route::Medium,
        None => Route::Huge,
    }
}

/// Allocates `size` bytes aligned to `align` (a power of two); null on failure.
#[inline]
pub(crate) fn alloc(size: usize, align: usize) -> *mut u8 {
    match route(size, align) {
        Route::Small(class) => alloc_small(class, size, align, Call::Malloc),
        _ if hardened::enabled() => hardened::alloc(size, align, false, Call::Malloc),
        Route::Medium => alloc_medium(size).0,
        Route::Huge => huge::alloc(size, align, false),
    }
}

/// A medium block, and whether it is zero-filled.
pub(crate) fn alloc_medium(size: usize) -> (*mut u8, bool) {
    let pages = size.max(1).div_ceil(PAGE_SIZE);
    match PAGE_HEAP.alloc_span(pages, PAGE_MEDIUM) {
        Some(span) => (Segment::page_start(span.seg, span.head) as *mut u8, span.zeroed),
        None => (null_mut(), false),
    }
}

/// Allocates `size` zero bytes aligned to `align`; fresh pages from the OS
/// are not zeroed again.
pub(crate) fn alloc_zeroed(size: usize, align: usize) -> *mut u8 {
    let ptr = match route(size, align) {
        Route::Small(class) => alloc_small(class, size, align, Call::Calloc),
        _ if hardened::enabled() => return hardened::alloc(size, align, true, Call::Calloc),
        Route::Medium => match alloc_medium(size) {
            (ptr, true) => return ptr,
            (ptr, false) => ptr,
        },
        Route::Huge => return huge::alloc(size, align, true),
    };
    if !ptr.is_null() {
        // SAFETY: the block holds at least `size` bytes.
        unsafe { ptr.write_bytes(0, size) };
    }
    ptr
}

/// Frees a block whose size and alignment the caller knows: Rust's
/// `dealloc`, whose layout the language guarantees, so it is trusted.
///
/// # Safety
/// `ptr` was returned by [`alloc`] (or a sibling) with this size and
/// alignment, and is not used afterwards.
#[inline]
pub(crate) unsafe fn dealloc(ptr: *mut u8, size: usize, align: usize, call: Call) {
    match class_for(size, align) {
        Some(class) => free_small(class, ptr, Some(size), call),
        // SAFETY: forwarded from the caller.
        None => unsafe { free_checked(ptr, Some(size), call) },
    }
}

/// Frees a block whose size and alignment a C caller states (`free_sized`,
/// `free_aligned_sized`, C++ sized `delete`): checked like `free`, and a
/// size that does not fit the block is reported rather than trusted (a
/// wrong one would put the block in another class's cache).
///
/// # Safety
/// `ptr` is a block of this allocator (anything else is reported) and is not
/// used afterwards.
#[inline]
pub(crate) unsafe fn free_stated(ptr: *mut u8, size: usize, align: usize, call: Call) {
    match small_class_of(ptr as usize) {
        Some(class) if class_for(size, align) == Some(class) || hardened::enabled() => {
            free_small(class, ptr, Some(size), call)
        }
        Some(class) => report::size_mismatch(call, ptr as usize, size, SIZES[class] as usize),
        None => {
            if !hardened::enabled()
                && let Some(block) = lookup(ptr as usize)
                && !matches!(
                    (route(size, align), block),
                    (Route::Medium, Block::Medium(..)) | (Route::Huge, Block::Huge(_))
                )
                && !(matches!(block, Block::Huge(_)) && stays_huge(size, align))
                && !(matches!(block, Block::Medium(..)) && stays_medium(size, align, true))
            {
                // SAFETY: as above.
                report::size_mismatch(call, ptr as usize, size, unsafe { capacity(block) });
            }
            // SAFETY: forwarded from the caller.
            unsafe { free_other(ptr, Some(size), call) }
        }
    }
}

/// Frees a block of unknown size (C's `free`).
///
/// # Safety
/// `ptr` is null or was returned by this allocator and is not used afterwards;
/// anything else is reported and aborts, when it can be detected.
#[inline]
pub(crate) unsafe fn free(ptr: *mut u8) {
    // Null is tested only after the lookup fails, as it does for null (no
    // segment of ours starts at address 0), by `free_other`: two
    // instructions fewer on every hit.
    // SAFETY: forwarded from the caller.
    unsafe { free_checked(ptr, None, Call::Free) }
}

/// # Safety
/// As [`free`]; `size` is the caller's size, if known.
#[inline(always)]
unsafe fn free_checked(ptr: *mut u8, size: Option<usize>, call: Call) {
    match small_class_of(ptr as usize) {
        Some(class) => free_small(class, ptr, size, call),
        // SAFETY: forwarded from the caller.
        None => unsafe { free_other(ptr, size, call) },
    }
}

/// The class of `ptr` if it passes the checks `free` can afford on every
/// call: 16-aligned, in a segment of ours, in a page of a small span.
///
/// Whether it starts an object is checked later, when the object reaches
/// the central list, and at once in hardened mode and for every other
/// call: doing it here (`starts_object`, a multiply and two table loads)
/// cost 10% on the `tight` workload and 3% on `larson` (medians of 7
/// interleaved rounds), where this alignment test costs nothing measurable.
#[inline(always)]
fn small_class_of(ptr: usize) -> Option<usize> {
    // Alignment and the segment map's range in one test (three instructions
    // where the two tests apart took six).
    const NOT_SMALL: usize = 15 | !(ADDRESS_LIMIT - 1);
    if ptr & NOT_SMALL != 0 {
        return None;
    }
    let class = page_class(ptr)?;
    is_small(class).then_some(class as usize)
}

/// `free` of anything but a small object that passed [`small_class_of`]:
/// null (nothing to do), medium and huge blocks, and every invalid pointer
/// (reported here).
///
/// # Safety
/// As [`free_checked`].
#[inline(never)]
unsafe fn free_other(ptr: *mut u8, size: Option<usize>, call: Call) {
    if ptr.is_null() {
        return;
    }
    match classify(ptr as usize, call) {
        Block::Small(class) => free_small(class, ptr, size, call),
        // SAFETY: forwarded from the caller.
        _ if hardened::enabled() => unsafe { hardened::free(ptr, size, call) },
        // SAFETY: forwarded from the caller.
        block => unsafe { free_block(ptr as usize, block) },
    }
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
                percpu::free_slow(class, ptr);
            }
        }
        Block::Medium(seg, head) => {
            // SAFETY: classify checked that `head` starts a medium span of `seg`.
            let pages = unsafe { (*seg).spans[head].pages } as usize;
            // SAFETY: the caller gives the block up.
            unsafe { PAGE_HEAP.free_span(seg, head, pages) };
        }
        // SAFETY: the caller gives the block up.
        Block::Huge(seg) => unsafe { huge::free(seg) },
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

/// Bytes usable in the block at `ptr` (at least what was asked for).
///
/// # Safety
/// `ptr` is a live block of this allocator.
pub(crate) unsafe fn usable_size(ptr: *mut u8) -> usize {
    if hardened::enabled() {
        return hardened::usable_size(ptr);
    }
    // SAFETY: classify found what the block is.
    unsafe { capacity(classify(ptr as usize, Call::UsableSize)) }
}

/// Blocks that `realloc` has grown to this size or more, but that would be
/// medium by their size, become huge instead (a segment of their own): a
/// block grown this far is usually a buffer that keeps growing, and a huge
/// one grows by `mremap`, without a copy and without old and new copies
/// resident at once.
pub(crate) const PROMOTE_AT: usize = 256 << 10;

/// Whether a block that `realloc` moves or resizes to `size` bytes is (or
/// stays) huge although `route` would make it medium.
fn stays_huge(size: usize, align: usize) -> bool {
    size >= PROMOTE_AT && align <= huge::MAX_ALIGN
}

/// Blocks that C's `realloc` grows to this size or more, but that would be
/// small by their size, become medium instead: a medium span grows in
/// place over the free pages after it, where a small block is copied at
/// every class it crosses (a vector doubling from 16 B to 1 MiB was copied
/// eleven times). Only for C's `realloc`, which does not state the old
/// size: every later free of the block finds it by its address, where
/// Rust's `dealloc` trusts its layout to name the block's class.
pub(crate) const C_PROMOTE_MEDIUM_AT: usize = 4096;

/// Whether a block that C's `realloc` (`c_caller`) moves or resizes to
/// `size` bytes is (or stays) medium although `route` would make it small.
fn stays_medium(size: usize, align: usize, c_caller: bool) -> bool {
    c_caller && (C_PROMOTE_MEDIUM_AT..=MAX_MEDIUM).contains(&size) && align <= PAGE_SIZE
}

/// Resizes the block at `ptr` to `new_size` bytes aligned to `align`:
/// in place when the block's kind and capacity allow it, by `mremap` for huge
/// blocks, else by allocating, copying and freeing. Returns null (leaving the
/// block untouched) on failure.
///
/// # Safety
/// `ptr` is a live block of this allocator, allocated with alignment `align`;
/// `old_size`, when known, is its requested size.
pub(crate) unsafe fn realloc(ptr: *mut u8, old_size: Option<usize>, align: usize, new_size: usize) -> *mut u8 {
    if hardened::enabled() {
        // SAFETY: forwarded from the caller.
        return unsafe { hardened::realloc(ptr, old_size, align, new_size) };
    }
    let block = match old_size.and_then(|size| class_for(size, align)) {
        Some(class) => Block::Small(class),
        None => classify(ptr as usize, Call::Realloc),
    };
    let new_route = route(new_size, align);
    let c_caller = old_size.is_none();
    let old_usable = match block {
        Block::Small(class) => {
            if new_route == Route::Small(class) {
                return ptr;
            }
            SIZES[class] as usize
        }
        Block::Medium(seg, head) => {
            // SAFETY: classify checked the span.
            let pages = unsafe { (*seg).spans[head].pages } as usize;
            if new_route == Route::Medium || stays_medium(new_size, align, c_caller) {
                let new_pages = new_size.div_ceil(PAGE_SIZE);
                let in_place = match new_pages.cmp(&pages) {
                    core::cmp::Ordering::Equal => true,
                    core::cmp::Ordering::Less => {
                        // SAFETY: the span is live and the caller gives up its bytes past `new_size`.
                        unsafe { PAGE_HEAP.shrink_span(seg, head, pages, new_pages) };
                        true
                    }
                    // SAFETY: the span is live; growing only claims free pages after it.
                    core::cmp::Ordering::Greater => unsafe { PAGE_HEAP.grow_span(seg, head, pages, new_pages) },
                };
                if in_place {
                    return ptr;
                }
            }
            pages << PAGE_SHIFT
        }
        Block::Huge(seg) => {
            if new_route == Route::Huge || stays_huge(new_size, align) {
                // SAFETY: classify checked the segment.
                let resized = unsafe { huge::resize(seg, new_size) };
                if !resized.is_null() {
                    return resized;
                }
            }
            // SAFETY: as above.
            unsafe { huge::usable_size(seg) }
        }
    };
    let new = if new_size > old_usable && stays_huge(new_size, align) {
        huge::alloc(new_size, align, false)
    } else if new_size > old_usable && stays_medium(new_size, align, c_caller) {
        alloc_medium(new_size).0
    } else {
        alloc(new_size, align)
    };
    if new.is_null() {
        return null_mut();
    }
    // SAFETY: both blocks are live and distinct; the copy fits both.
    unsafe { core::ptr::copy_nonoverlapping(ptr, new, old_usable.min(new_size)) };
    // SAFETY: the caller gives the old block up.
    unsafe { free_block(ptr as usize, block) };
    new
}
