//! Huge blocks (larger than a medium span): each gets a segment of its own,
//! mapped for it, unmapped when it is freed, and grown or shrunk with
//! `mremap` so that `realloc` never copies it.
//!
//! The segment header sits in the first OS page; the block starts at
//! `huge_offset` (one page, or the requested alignment if larger), inside the
//! first 4 MiB so that masking a block pointer finds the header.
//!
//! A few freed segments (at most [`CACHE_SLOTS`], [`CACHE_MAX_BYTES`] in all)
//! are kept mapped for the next huge request that fits, so a program that
//! allocates and frees big buffers in a loop does not pay `mmap`, `munmap`
//! and a page fault per page every time (measured: 16.8 s against glibc's
//! 0.07 s on the `large` workload before this cache). A cached segment is
//! unmarked in the segment map, so freeing its block again is still
//! reported as an invalid free.

use crate::os::{self, OS_PAGE};
use crate::segment::{self, Kind, PAGE_HEAP, SEGMENT_SIZE, Segment};
use crate::sync::{AtomicUsize, Ordering};

/// Freed huge segments kept for reuse.
pub(crate) const CACHE_SLOTS: usize = 8;
/// Most bytes the cache keeps mapped.
pub(crate) const CACHE_MAX_BYTES: usize = 64 << 20;

static CACHE: [AtomicUsize; CACHE_SLOTS] = [const { AtomicUsize::new(0) }; CACHE_SLOTS];
/// Huge allocations so far, and their count at the last upkeep.
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static ALLOCS_AT_UPKEEP: AtomicUsize = AtomicUsize::new(0);

/// Upkeep: unmaps the cache if no huge block was asked for in a whole period.
pub(crate) fn decay() {
    let now = ALLOCS.load(Ordering::Relaxed);
    if ALLOCS_AT_UPKEEP.swap(now, Ordering::Relaxed) == now {
        release_cache();
    }
}
static CACHED_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Bytes held in the cache of freed huge segments.
pub(crate) fn cached_bytes() -> usize {
    CACHED_BYTES.load(Ordering::Relaxed)
}

/// A cached segment whose mapping holds `offset + size` bytes without
/// wasting more than a quarter of it, taken out of the cache.
fn take_cached(offset: usize, size: usize) -> Option<*mut Segment> {
    let need = offset.checked_add(size)?;
    for slot in &CACHE {
        let seg = slot.load(Ordering::Acquire);
        if seg == 0 {
            continue;
        }
        // SAFETY: a cached segment stays mapped until taken out of its slot.
        let len = unsafe { (*(seg as *mut Segment)).huge_len };
        if len < need || len / 4 * 3 > need {
            continue;
        }
        if slot.compare_exchange(seg, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            CACHED_BYTES.fetch_sub(len, Ordering::Relaxed);
            return Some(seg as *mut Segment);
        }
    }
    None
}

/// Puts a freed segment in the cache if it has room; false if not.
fn cache(seg: *mut Segment, len: usize) -> bool {
    if CACHED_BYTES.fetch_add(len, Ordering::Relaxed) + len > CACHE_MAX_BYTES {
        CACHED_BYTES.fetch_sub(len, Ordering::Relaxed);
        return false;
    }
    for slot in &CACHE {
        if slot.compare_exchange(0, seg as usize, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            return true;
        }
    }
    CACHED_BYTES.fetch_sub(len, Ordering::Relaxed);
    false
}

/// Unmaps every cached segment (for trimming); returns the bytes released.
pub(crate) fn release_cache() -> usize {
    let mut released = 0;
    for slot in &CACHE {
        let seg = slot.swap(0, Ordering::AcqRel);
        if seg != 0 {
            // SAFETY: taken out of the cache: nobody else refers to it.
            let len = unsafe { (*(seg as *mut Segment)).huge_len };
            CACHED_BYTES.fetch_sub(len, Ordering::Relaxed);
            PAGE_HEAP.mapped.fetch_sub(len, Ordering::Relaxed);
            // SAFETY: as above.
            unsafe { os::unmap(seg as *mut u8, len) };
            released += len;
        }
    }
    PAGE_HEAP.released.fetch_add(released, Ordering::Relaxed);
    released
}

/// Largest alignment a huge block honours: the block must start in the
/// first 4 MiB unit of its segment.
pub(crate) const MAX_ALIGN: usize = SEGMENT_SIZE / 2;

fn layout(size: usize, align: usize) -> Option<(usize, usize)> {
    let offset = align.max(OS_PAGE);
    let len = offset.checked_add(size)?.checked_next_multiple_of(OS_PAGE)?;
    Some((offset, len))
}

/// A huge block of `size` bytes aligned to `align` (zero-filled if `zeroed`);
/// null if the OS refuses or the request cannot be represented.
pub(crate) fn alloc(size: usize, align: usize, zeroed: bool) -> *mut u8 {
    if align > MAX_ALIGN {
        return core::ptr::null_mut();
    }
    let Some((offset, len)) = layout(size, align) else { return core::ptr::null_mut() };
    ALLOCS.fetch_add(1, Ordering::Relaxed);
    if let Some(seg) = take_cached(offset, size) {
        // SAFETY: the segment came out of the cache, so it is ours alone;
        // its mapping holds `offset + size` bytes (checked when taken).
        unsafe {
            (*seg).huge_offset = offset;
            let block = (seg as usize + offset) as *mut u8;
            if zeroed {
                block.write_bytes(0, size);
            }
            segment::mark(seg);
            return block;
        }
    }
    let Some(seg) = os::map_aligned(len, SEGMENT_SIZE) else { return core::ptr::null_mut() };
    let seg = seg.as_ptr().cast::<Segment>();
    // SAFETY: a fresh mapping of ours, at least one page long; only the header
    // fields in the first page are written.
    unsafe {
        (&raw mut (*seg).kind).write(Kind::Huge);
        (&raw mut (*seg).huge_len).write(len);
        (&raw mut (*seg).huge_offset).write(offset);
    }
    segment::mark(seg);
    PAGE_HEAP.mapped.fetch_add(len, Ordering::Relaxed);
    (seg as usize + offset) as *mut u8
}

/// Usable bytes of the huge block in `seg`.
///
/// # Safety
/// `seg` is a live huge segment.
pub(crate) unsafe fn usable_size(seg: *mut Segment) -> usize {
    // SAFETY: the caller vouches for the header.
    unsafe { (*seg).huge_len - (*seg).huge_offset }
}

/// Frees the huge block in `seg`: into the cache if it has room, else back
/// to the OS.
///
/// # Safety
/// `seg` is a live huge segment whose block nobody uses any more.
pub(crate) unsafe fn free(seg: *mut Segment) {
    // SAFETY: the caller vouches for the header.
    let len = unsafe { (*seg).huge_len };
    segment::unmark(seg);
    if cache(seg, len) {
        return;
    }
    PAGE_HEAP.mapped.fetch_sub(len, Ordering::Relaxed);
    // SAFETY: the whole mapping is ours and unused.
    unsafe { os::unmap(seg.cast(), len) };
}

/// Resizes the huge block in `seg` to `new_size` without copying: in place
/// if the mapping can grow or shrink there, else by moving its pages to a
/// new aligned address. Returns the block's (possibly new) address, or null
/// if neither worked (the block is then unchanged).
///
/// # Safety
/// `seg` is a live huge segment.
pub(crate) unsafe fn resize(seg: *mut Segment, new_size: usize) -> *mut u8 {
    // SAFETY: the caller vouches for the header.
    let (offset, len) = unsafe { ((*seg).huge_offset, (*seg).huge_len) };
    let Some(new_len) = offset.checked_add(new_size).and_then(|n| n.checked_next_multiple_of(OS_PAGE)) else {
        return core::ptr::null_mut();
    };
    if new_len == len {
        return (seg as usize + offset) as *mut u8;
    }
    // SAFETY: the mapping is ours; in place never moves it.
    if unsafe { os::remap_in_place(seg.cast(), len, new_len) } {
        // SAFETY: the header is still mapped (the first page never goes away).
        unsafe { (*seg).huge_len = new_len };
        account(len, new_len);
        return (seg as usize + offset) as *mut u8;
    }
    let Some(target) = os::map_aligned(new_len, SEGMENT_SIZE) else { return core::ptr::null_mut() };
    // SAFETY: `target` is a fresh reservation of ours of `new_len` bytes.
    if !unsafe { os::remap_to(seg.cast(), len, target.as_ptr(), new_len) } {
        // SAFETY: the reservation is unused.
        unsafe { os::unmap(target.as_ptr(), new_len) };
        return core::ptr::null_mut();
    }
    let moved = target.as_ptr().cast::<Segment>();
    // The header travelled with the pages.
    // SAFETY: the moved mapping is ours.
    unsafe { (*moved).huge_len = new_len };
    segment::mark(moved);
    segment::unmark(seg);
    account(len, new_len);
    (moved as usize + offset) as *mut u8
}

fn account(old: usize, new: usize) {
    if new > old {
        PAGE_HEAP.mapped.fetch_add(new - old, Ordering::Relaxed);
    } else {
        PAGE_HEAP.mapped.fetch_sub(old - new, Ordering::Relaxed);
    }
}
