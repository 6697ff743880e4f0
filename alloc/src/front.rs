//! The front door: every request, from `GlobalAlloc`, the C API and
//! `signal_safe`, enters here. A small request pops from this CPU's cache
//! ([`pop`], one inlined critical section); everything else, and every
//! miss, goes out of line: hardened mode's gate, the per-CPU slow paths
//! (whose central trips drive the upkeep's clock), the page heap's medium
//! spans and huge segments (`tiers`), and `realloc`'s policy.

use core::ptr::null_mut;

use crate::geometry::{MAX_MEDIUM, MAX_SMALL};
use crate::hardened;
use crate::huge;
use crate::percpu::{self, Marks};
use crate::report::{self, Call};
use crate::runtime;
use crate::segment::{PAGE_HEAP, PAGE_SIZE};
use crate::size_class::{SIZES, class_for, class_of};
use crate::tiers::{self, Block, Route, alloc_medium, classify, free_block, lookup, route, small_class_of};

/// The class of a request the fast path serves at once: at most
/// [`MAX_SMALL`] bytes aligned to at most 16 (every class's alignment).
#[inline(always)]
pub(crate) fn fast_class(size: usize, align: usize) -> Option<usize> {
    (size <= MAX_SMALL && align <= 16).then(|| class_of(size))
}

/// The fast path of every allocation: an object of `class` from this CPU's
/// cache, or `None` (empty, stopped, or the fast path is off).
#[inline(always)]
pub(crate) fn pop(class: usize) -> Option<*mut u8> {
    percpu::pop(class).ok().map(|object| object as *mut u8)
}

/// The fast path of every free: `ptr` onto this CPU's cache of `class`;
/// false if it did not take it (full, stopped, or the fast path is off).
#[inline(always)]
pub(crate) fn push(class: usize, ptr: *mut u8) -> bool {
    percpu::push(class, ptr as usize).is_ok()
}

/// Allocates a small object of `class`, for a request of `size` bytes
/// aligned to `align` (which only hardened mode needs).
#[inline(always)]
pub(crate) fn alloc_small(class: usize, size: usize, align: usize, call: Call) -> *mut u8 {
    match pop(class) {
        Some(object) => object,
        None => alloc_small_missed(class, size, align, call, Marks::Kept),
    }
}

/// Allocates a small object of `class` for Rust's `alloc` and `realloc`
/// (`size` bytes aligned to 16 or less): as [`alloc_small`], without
/// clearing the freed mark ([`Marks::Skipped`]).
#[inline(always)]
pub(crate) fn alloc_small_unmarked(class: usize, size: usize, call: Call) -> *mut u8 {
    match percpu::pop_unmarked(class) {
        Ok(object) => object as *mut u8,
        Err(_) => alloc_small_missed(class, size, 16, call, Marks::Skipped),
    }
}

/// [`alloc_small`] after the per-CPU pop missed (or the fast path is off).
#[cold]
#[inline(never)]
pub(crate) fn alloc_small_missed(class: usize, size: usize, align: usize, call: Call, marks: Marks) -> *mut u8 {
    if runtime::hardened() {
        return hardened::alloc(size, align, false, call);
    }
    tiers::alloc_small_slow(class, marks)
}

/// Frees a small object of `class`; `size` is the caller's size, if known
/// (hardened mode checks it).
#[inline(always)]
pub(crate) fn free_small(class: usize, ptr: *mut u8, size: Option<usize>, call: Call) {
    if !push(class, ptr) {
        free_small_missed(class, ptr, size, call, Marks::Kept);
    }
}

/// Frees a small object of `class` for Rust's `dealloc` (`size` is its
/// layout's): as [`free_small`], without the freed mark
/// ([`percpu::push_unmarked`]).
#[inline(always)]
pub(crate) fn dealloc_small(class: usize, ptr: *mut u8, size: usize) {
    if percpu::push_unmarked(class, ptr as usize).is_err() {
        free_small_missed(class, ptr, Some(size), Call::Free, Marks::Skipped);
    }
}

#[cold]
#[inline(never)]
fn free_small_missed(class: usize, ptr: *mut u8, size: Option<usize>, call: Call, marks: Marks) {
    if runtime::hardened() {
        // SAFETY: the caller of `free_small` gives the block up.
        return unsafe { hardened::free(ptr, size, call) };
    }
    tiers::free_small_slow(class, ptr, marks);
}

/// Allocates `size` bytes aligned to `align` (a power of two); null on failure.
#[inline]
pub(crate) fn alloc(size: usize, align: usize) -> *mut u8 {
    match route(size, align) {
        Route::Small(class) => alloc_small(class, size, align, Call::Malloc),
        _ if runtime::hardened() => hardened::alloc(size, align, false, Call::Malloc),
        Route::Medium => alloc_medium(size).0,
        Route::Huge => huge::alloc(size, align, false),
    }
}

/// Allocates `size` zero bytes aligned to `align`; fresh pages from the OS
/// are not zeroed again.
pub(crate) fn alloc_zeroed(size: usize, align: usize) -> *mut u8 {
    let ptr = match route(size, align) {
        Route::Small(class) => alloc_small(class, size, align, Call::Calloc),
        _ if runtime::hardened() => return hardened::alloc(size, align, true, Call::Calloc),
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
/// `dealloc`, whose layout the language guarantees, so it is trusted. A
/// block that `realloc` made medium although its size is small goes, like
/// any block of that size, to its class's cache, which may hand it out
/// again as such; the central list gives it back to the page heap
/// ([`PROMOTE_MEDIUM_FROM`]).
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

/// Whether `class` is one that serves only blocks aligned to more than a
/// line, and a block of `size` bytes so aligned would get it: `free_sized`
/// of a `posix_memalign`ed block states its size but not its alignment,
/// and the class that size names unaligned is the one a line larger.
fn fits_aligned_class(class: usize, size: usize) -> bool {
    crate::size_class::aliases(SIZES[class]) && size <= SIZES[class] as usize && size > SIZES[class - 1] as usize
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
    let block = match small_class_of(ptr as usize) {
        Some(class) if tiers::starts_small_object(class, ptr as usize) => Some(Block::Small(class)),
        // Past a span's head page, in a medium or huge block, or no block.
        _ => lookup(ptr as usize),
    };
    match block {
        Some(Block::Small(class))
            if class_for(size, align) == Some(class) || fits_aligned_class(class, size) || runtime::hardened() =>
        {
            free_small(class, ptr, Some(size), call)
        }
        Some(Block::Small(class)) => report::size_mismatch(call, ptr as usize, size, SIZES[class] as usize),
        _ => {
            if !runtime::hardened()
                && let Some(block) = block
                && !matches!(
                    (route(size, align), block),
                    (Route::Medium, Block::Medium(..)) | (Route::Huge, Block::Huge(_))
                )
                && !(matches!(block, Block::Huge(_)) && stays_huge(size, align))
                && !(matches!(block, Block::Medium(..)) && (stays_medium(size, align) || may_be_parked(size, align)))
            {
                // SAFETY: as above.
                report::size_mismatch(call, ptr as usize, size, unsafe { tiers::capacity(block) });
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
    // instructions fewer on every hit. A pointer into a small block but not
    // at its start would put a second, overlapping object in the cache: it
    // goes to `free_other`, which reports it.
    match small_class_of(ptr as usize) {
        Some(class) if tiers::starts_small_object(class, ptr as usize) => free_small(class, ptr, None, Call::Free),
        // SAFETY: forwarded from the caller.
        _ => unsafe { free_other(ptr, None, Call::Free) },
    }
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
        _ if runtime::hardened() => unsafe { hardened::free(ptr, size, call) },
        // SAFETY: forwarded from the caller.
        block => unsafe { free_block(ptr as usize, block) },
    }
}

/// Bytes usable in the block at `ptr` (at least what was asked for).
///
/// # Safety
/// `ptr` is a live block of this allocator.
pub(crate) unsafe fn usable_size(ptr: *mut u8) -> usize {
    if runtime::hardened() {
        return hardened::usable_size(ptr);
    }
    // SAFETY: classify found what the block is.
    unsafe { tiers::usable(classify(ptr as usize, Call::UsableSize)) }
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
    size >= PROMOTE_AT && align <= huge::MAX_NEAR_ALIGN
}

/// Blocks that `realloc` grows to this size or more, but that would be small by
/// their size, become medium instead: a medium span grows in place over the
/// free pages after it, where a small block is copied at every class it
/// crosses. C's `free` finds such a block by its address. Rust's `dealloc`
/// trusts its layout and, like `signal_safe`'s, puts it in the cache of the
/// class its size names, off its fast path's way: a span of one page
/// (no block of a small size has more) holds any object of that class.
/// The cache may hand it out again, and when it gives it to the central
/// list, that list gives the span back to the page heap. Only the caches of
/// classes of this size or more can hold such a span, so a stated size
/// whose class is smaller names what the block is.
pub(crate) use crate::geometry::PROMOTE_MEDIUM_FROM;

/// Whether a block requested as `size` bytes aligned to `align` may be a
/// medium span handed out as an object of its small class (see
/// [`PROMOTE_MEDIUM_FROM`]).
fn may_be_parked(size: usize, align: usize) -> bool {
    class_for(size, align).is_some_and(|class| SIZES[class] as usize >= PROMOTE_MEDIUM_FROM)
}

/// Whether a block that `realloc` moves or resizes to `size` bytes is (or
/// stays) medium although `route` would make it small.
fn stays_medium(size: usize, align: usize) -> bool {
    (PROMOTE_MEDIUM_FROM..=MAX_MEDIUM).contains(&size) && align <= PAGE_SIZE
}

/// The size `malloc_usable_size` reports for a medium span that `realloc`
/// made or resized to `size` bytes aligned to `align`: at least the size
/// of the class a small size names with a stated old size (Rust's), whose
/// `dealloc` leaves the span in that class's cache, which may hand it out
/// for any size of the class.
fn noted_size(size: usize, align: usize, old_size: Option<usize>) -> usize {
    match old_size.and_then(|_| class_for(size, align)) {
        Some(class) => size.max(SIZES[class] as usize),
        None => size,
    }
}

/// Pages a medium span of `pages` that must grow to `least` grows to in
/// place if the pages after it are free: twice its size (at most a medium
/// span's), so that a buffer grown step by step takes the page heap's lock
/// once per doubling, not once per page count. A `realloc` that shrinks it
/// gives pages back only below half (the headroom a growth left stays).
fn grown_pages(pages: usize, least: usize) -> usize {
    least.max(pages * 2).min(MAX_MEDIUM / PAGE_SIZE)
}

/// The first class `class_of` gives whose cache may hold a medium span
/// ([`PROMOTE_MEDIUM_FROM`]): every class it gives below holds less than 4 KiB.
const FIRST_PARKING_CLASS: usize = crate::size_class::smallest_class_at_least(PROMOTE_MEDIUM_FROM) as usize;

/// Rust's `realloc`: a block whose layout (`old_size`, `align` ≤ 16) names
/// a small class that cannot hold a medium span, moved to another small
/// size, is popped, copied and pushed as `alloc` and `dealloc` would do it,
/// without [`realloc`]'s lookups; everything else goes there.
///
/// # Safety
/// `ptr` is a live block of this allocator allocated with `old_size` bytes
/// aligned to `align`.
#[inline]
pub(crate) unsafe fn realloc_sized(ptr: *mut u8, old_size: usize, align: usize, new_size: usize) -> *mut u8 {
    if align <= 16 && old_size <= MAX_SMALL && new_size < PROMOTE_MEDIUM_FROM && !runtime::hardened() {
        let (old, new) = (class_of(old_size), class_of(new_size));
        if old < FIRST_PARKING_CLASS {
            // SAFETY: the caller's block is a live object of `old` holding `old_size` bytes.
            return unsafe { move_small(ptr, old, old_size, new, new_size, Marks::Skipped) };
        }
    }
    // SAFETY: forwarded from the caller.
    unsafe { realloc(ptr, Some(old_size), align, new_size) }
}

/// C's `realloc` (the block's size is not stated, its alignment is 16): a
/// small object moved to a size below [`PROMOTE_MEDIUM_FROM`] (so a small
/// one too) is looked up as `free` does, then popped, copied and pushed as
/// `malloc` and `free` would do it, without [`realloc`]'s full lookup and
/// routing; everything else goes there.
///
/// # Safety
/// `ptr` is a live block of this allocator (anything else is reported).
#[inline]
pub(crate) unsafe fn realloc_unstated(ptr: *mut u8, new_size: usize) -> *mut u8 {
    if new_size < PROMOTE_MEDIUM_FROM
        && !runtime::hardened()
        && let Some(old) = small_class_of(ptr as usize).filter(|&class| tiers::starts_small_object(class, ptr as usize))
    {
        // SAFETY: `small_class_of` and `starts_small_object` found a live
        // object of `old` (the caller vouches it is live), its whole size ours.
        return unsafe { move_small(ptr, old, SIZES[old] as usize, class_of(new_size), new_size, Marks::Kept) };
    }
    // SAFETY: forwarded from the caller.
    unsafe { realloc(ptr, None, 16, new_size) }
}

/// The small-to-small move of both `realloc` fast paths: `ptr` itself if
/// `new` is its class `old`, else an object of `new` popped as an
/// allocation would, the first `old_size.min(new_size)` bytes copied, and
/// `ptr` pushed as a free would, with or without C's freed mark (`marks`);
/// null (the block untouched) if memory ran out.
///
/// # Safety
/// `ptr` is a live object of `old` of which at least `old_size` bytes are
/// the caller's, and is not used afterwards unless it is returned.
#[inline(always)]
unsafe fn move_small(ptr: *mut u8, old: usize, old_size: usize, new: usize, new_size: usize, marks: Marks) -> *mut u8 {
    if old == new {
        return ptr;
    }
    let moved = match marks {
        Marks::Kept => alloc_small(new, new_size, 16, Call::Realloc),
        Marks::Skipped => alloc_small_unmarked(new, new_size, Call::Realloc),
    };
    if moved.is_null() {
        return null_mut();
    }
    // SAFETY: both blocks are live and distinct; the copy fits both.
    unsafe { core::ptr::copy_nonoverlapping(ptr, moved, old_size.min(new_size)) };
    match marks {
        Marks::Kept => free_small(old, ptr, None, Call::Realloc),
        Marks::Skipped => dealloc_small(old, ptr, old_size),
    }
    moved
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
    if runtime::hardened() {
        // SAFETY: forwarded from the caller.
        return unsafe { hardened::realloc(ptr, old_size, align, new_size) };
    }
    // A stated size names the block only if its class's cache cannot hold
    // a medium span.
    let block = match old_size.filter(|&size| !may_be_parked(size, align)).and_then(|size| class_for(size, align)) {
        Some(class) => Block::Small(class),
        None => classify(ptr as usize, Call::Realloc),
    };
    let new_route = route(new_size, align);
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
            if new_route == Route::Medium || stays_medium(new_size, align) {
                let new_pages = new_size.div_ceil(PAGE_SIZE);
                let in_place = if new_pages > pages {
                    // SAFETY: the span is live; growing only claims free pages after it.
                    unsafe { PAGE_HEAP.grow_span(seg, head, pages, new_pages, grown_pages(pages, new_pages)) }
                } else {
                    if new_pages * 2 <= pages {
                        // SAFETY: the span is live and the caller gives up its bytes past `new_size`.
                        unsafe { PAGE_HEAP.shrink_span(seg, head, pages, new_pages) };
                    }
                    true
                };
                if in_place {
                    // SAFETY: the span is live and the caller's.
                    unsafe { tiers::note_span_size(seg, head, noted_size(new_size, align, old_size)) };
                    return ptr;
                }
            }
            // What the caller may have written: the usable size noted last.
            // SAFETY: classify checked the span.
            unsafe { tiers::usable(block) }
        }
        Block::Huge(seg) => {
            if new_route == Route::Huge || stays_huge(new_size, align) {
                // SAFETY: classify checked the segment.
                let resized = unsafe { huge::resize(seg, new_size) };
                if !resized.is_null() {
                    return resized;
                }
            }
            // What the caller may have written: the usable size reported.
            // SAFETY: as above.
            unsafe { tiers::usable(block) }
        }
    };
    let new = if new_size > old_usable && stays_huge(new_size, align) {
        huge::alloc(new_size, align, false)
    } else if new_size > old_usable && stays_medium(new_size, align) {
        let (new, _) = alloc_medium(new_size);
        if !new.is_null() && old_size.is_some() {
            // SAFETY: a live medium span, the caller's.
            unsafe { tiers::note_medium_size(new as usize, noted_size(new_size, align, old_size)) };
        }
        new
    } else {
        alloc(new_size, align)
    };
    if new.is_null() {
        return null_mut();
    }
    // A stated size bounds what the caller may have written: a medium
    // block moved with its whole span's pages copied would copy up to
    // 64 KiB of nothing per page.
    let kept = old_size.map_or(old_usable, |size| size.min(old_usable));
    // SAFETY: both blocks are live and distinct; the copy fits both.
    unsafe { core::ptr::copy_nonoverlapping(ptr, new, kept.min(new_size)) };
    // SAFETY: the caller gives the old block up.
    unsafe { free_block(ptr as usize, block) };
    new
}
