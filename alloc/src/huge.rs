//! Huge blocks (larger than a medium span): each gets a segment of its own,
//! mapped for it, unmapped when it is freed, and grown or shrunk with
//! `mremap` so that `realloc` never copies it.
//!
//! The segment header sits in the first OS page; the block starts at
//! `huge_offset`: half a page into the next page, or the requested
//! alignment if larger than half a page (a page at least), inside the
//! first 4 MiB so that masking a block pointer finds the header. A block
//! aligned to more than [`MAX_NEAR_ALIGN`] starts one whole segment unit
//! after its header instead (a *far* block, `huge_offset == SEGMENT_SIZE`),
//! at an address the mapping is placed for; a pointer whose own unit is not
//! ours is looked up in the unit before it (`tiers::lookup`). Any
//! power-of-two alignment the address space allows is served so. A far
//! block resizes in place only (a move would lose its alignment) and is not
//! cached when freed.
//!
//! Freed segments (at most [`CACHE_SLOTS`], [`CACHE_MAX_BYTES`] in all) are
//! kept mapped for the next huge requests, so a program that allocates and
//! frees big buffers in a loop, one or a hundred at a time, does not pay
//! `mmap`, `munmap` and a page fault per page every time; the upkeep unmaps
//! those that no request took for a whole period, and a sixteenth of a period
//! unused gives their pages back before that (`purge_idle`). A request takes
//! the smallest cached mapping that holds it with at most [`REUSE_SLACK`] (or
//! the request's own size, if larger) to spare; if every cached mapping is
//! too small, the largest is grown with `mremap`, keeping the pages it
//! already has. So a loop over varied sizes settles on one mapping whose
//! touched pages are reused, as glibc's heap top is, instead of one per size.
//! A cached segment stays marked in the segment map, its header saying it
//! holds no block (`huge_offset` 0), so freeing its block again is still
//! reported as an invalid free; a segment is unmarked only before its mapping
//! goes away or moves. Marking and unmarking are atomic instructions, which
//! wait for every store the program has pending: a program that writes a big
//! buffer and frees it would pay for the writes at the free.

use core::cell::UnsafeCell;

use crate::lock::Lock;
use crate::os::{self, Charge, OS_PAGE};
use crate::segment::{self, Kind, PAGE_HEAP, SEGMENT_SIZE, Segment};
use crate::sync::{AtomicIntOps, AtomicOps, AtomicUsize};

/// Most freed huge segments kept for reuse: a working set of a hundred big
/// buffers freed and allocated again fits.
pub(crate) const CACHE_SLOTS: usize = 256;
/// Most bytes the cache keeps mapped (for a period at most, unless reused).
pub(crate) const CACHE_MAX_BYTES: usize = 1 << 30;
/// How much of a cached mapping a request may leave unused, at least: the
/// spare pages cost address space and whatever the previous user touched.
pub(crate) const REUSE_SLACK: usize = 2 * SEGMENT_SIZE;

/// A cached mapping: the segment's address and length, whether an upkeep
/// round found it in the cache already (it goes at the next), and since
/// when its pages have been unused (monotonic ns, from the first look at
/// the clock after its free: [`UNSTAMPED`] until then; [`GIVEN_BACK`]).
#[derive(Clone, Copy)]
struct Entry {
    seg: usize,
    len: usize,
    aged: bool,
    resident_since: u64,
}

const FREE: Entry = Entry { seg: 0, len: 0, aged: false, resident_since: GIVEN_BACK };
/// `resident_since` of a mapping cached since the last look at the clock: a
/// free reads no clock (a system call).
const UNSTAMPED: u64 = u64::MAX;
/// `resident_since` of a mapping whose pages were given back.
const GIVEN_BACK: u64 = 0;

/// A cached mapping whose pages stay unused for the upkeep period divided
/// by this (from the first look at the clock after the free) gives them
/// back, keeping the mapping for reuse: a freed huge block is often the
/// program's largest buffer, which kept resident for a period may set its
/// peak, while a program that reuses its big buffers takes them back within
/// microseconds, and faulting a buffer in again costs a small part of the
/// time it sat unused.
const PERIOD_PER_IDLE_PAGES: u64 = 16;

/// The cache: its entries packed at the front of an array, behind a lock
/// held only for loads and stores (never across a system call), taken by
/// `fork` with the others.
struct Cache {
    lock: Lock,
    entries: UnsafeCell<Entries>,
    /// Bytes of the entries: written with the lock held, read without.
    bytes: AtomicUsize,
}

struct Entries {
    slots: [Entry; CACHE_SLOTS],
    /// Entries in use: `slots[..used]`.
    used: usize,
}

impl Entries {
    /// Takes out entry `i` (below `used`), moving the last one into its place.
    fn remove(&mut self, i: usize) -> Entry {
        self.used -= 1;
        let last = self.slots[self.used];
        core::mem::replace(&mut self.slots[i], last)
    }
}

// SAFETY: `entries` is only touched with `lock` held.
unsafe impl Sync for Cache {}

static CACHE: Cache = Cache {
    lock: Lock::new(),
    entries: UnsafeCell::new(Entries { slots: [FREE; CACHE_SLOTS], used: 0 }),
    bytes: AtomicUsize::new(0),
};

impl Cache {
    /// Runs `f` on the entries, with the lock held.
    fn with<T>(&self, f: impl FnOnce(&mut Entries) -> T) -> T {
        let _guard = self.lock.lock();
        // SAFETY: the lock is held.
        f(unsafe { &mut *self.entries.get() })
    }

    /// Takes out the entry `pick` chooses (an index into those in use).
    fn take_where(&self, pick: impl FnOnce(&[Entry]) -> Option<usize>) -> Option<Entry> {
        self.with(|entries| {
            let taken = entries.remove(pick(&entries.slots[..entries.used])?);
            self.bytes.store_relaxed(self.bytes.load_relaxed() - taken.len);
            Some(taken)
        })
    }

    /// Takes out the entry a request of `need` bytes of mapping should use:
    /// the smallest that holds it within the slack, else the largest
    /// smaller one (to be grown); `None` if neither exists.
    fn take(&self, need: usize) -> Option<Entry> {
        let slack = REUSE_SLACK.max(need);
        self.take_where(|entries| {
            let listed = || entries.iter().enumerate();
            let best = listed().filter(|(_, e)| e.len >= need && e.len - need <= slack).min_by_key(|(_, e)| e.len);
            best.or_else(|| listed().filter(|(_, e)| e.len < need).max_by_key(|(_, e)| e.len)).map(|(i, _)| i)
        })
    }

    /// Keeps `entry` if there is room; false if not.
    fn put(&self, entry: Entry) -> bool {
        self.with(|entries| {
            if entries.used == CACHE_SLOTS || self.bytes.load_relaxed() + entry.len > CACHE_MAX_BYTES {
                return false;
            }
            entries.slots[entries.used] = entry;
            entries.used += 1;
            self.bytes.store_relaxed(self.bytes.load_relaxed() + entry.len);
            true
        })
    }

    /// Marks every entry as found by an upkeep round.
    fn age(&self) {
        self.with(|entries| entries.slots[..entries.used].iter_mut().for_each(|e| e.aged = true));
    }
}

/// Upkeep: unmaps the cached segments that no request took since the last
/// round, and marks the others; true if the cache still holds one.
pub(crate) fn decay() -> bool {
    let mut released = 0;
    while let Some(entry) = CACHE.take_where(|entries| entries.iter().position(|e| e.aged)) {
        released += unmap_cached(entry);
    }
    PAGE_HEAP.released.fetch_add_relaxed(released);
    CACHE.age();
    cached_bytes() != 0
}

/// At a look at the clock (`now`, monotonic ns): gives back the pages of
/// the cached mappings unused for `period` / [`PERIOD_PER_IDLE_PAGES`],
/// keeping the mappings, and stamps those cached since the last look.
pub(crate) fn purge_idle(now: u64, period: u64) {
    if cached_bytes() == 0 {
        return;
    }
    CACHE.with(|entries| {
        for e in entries.slots[..entries.used].iter_mut().filter(|e| e.resident_since == UNSTAMPED) {
            e.resident_since = now;
        }
    });
    let since = now.saturating_sub(period / PERIOD_PER_IDLE_PAGES);
    let idle = |e: &Entry| e.resident_since != GIVEN_BACK && e.resident_since <= since;
    let mut released = 0;
    while let Some(mut entry) = CACHE.take_where(|entries| entries.iter().position(idle)) {
        // SAFETY: out of the cache, the mapping is ours alone; its pages
        // after the header's hold no block.
        unsafe { os::purge((entry.seg + OS_PAGE) as *mut u8, entry.len - OS_PAGE) };
        released += entry.len - OS_PAGE;
        entry.resident_since = GIVEN_BACK;
        if !CACHE.put(entry) {
            unmap_cached(entry);
        }
    }
    PAGE_HEAP.released.fetch_add_relaxed(released);
}

/// Bytes held in the cache of freed huge segments.
pub(crate) fn cached_bytes() -> usize {
    CACHE.bytes.load_relaxed()
}

/// Unmaps every cached segment (for trimming); returns the bytes released.
pub(crate) fn release_cache() -> usize {
    let mut released = 0;
    while let Some(entry) = CACHE.take_where(|entries| entries.len().checked_sub(1)) {
        released += unmap_cached(entry);
    }
    PAGE_HEAP.released.fetch_add_relaxed(released);
    released
}

/// Unmaps a segment taken out of the cache; returns its length.
fn unmap_cached(entry: Entry) -> usize {
    segment::unmark(entry.seg as *mut Segment);
    PAGE_HEAP.mapped.fetch_sub_relaxed(entry.len);
    // SAFETY: taken out of the cache: nobody else refers to it.
    unsafe { os::unmap(entry.seg as *mut u8, entry.len) };
    entry.len
}

/// Whether this thread holds the cache's lock.
pub(crate) fn held_here() -> bool {
    CACHE.lock.held_here()
}

/// Takes the cache's lock for `fork`, unless this thread holds it already;
/// true if it took it.
pub(crate) fn lock_for_fork() -> bool {
    CACHE.lock.lock_for_fork()
}

/// Releases the lock taken by [`lock_for_fork`].
///
/// # Safety
/// This thread took it with `lock_for_fork`, which returned true.
pub(crate) unsafe fn unlock_after_fork() {
    // SAFETY: forwarded from the caller.
    unsafe { CACHE.lock.unlock_after_fork() };
}

/// Largest alignment a block keeps in its header's segment unit; larger
/// ones make a far block (see the module's documentation).
pub(crate) const MAX_NEAR_ALIGN: usize = SEGMENT_SIZE / 2;

/// Where in its page a block aligned to at most this starts (see `layout`).
const MID_PAGE: usize = OS_PAGE / 2;

/// Where the block of a request starts in its mapping, and the mapping's
/// length. A block that may start anywhere in a page starts in the middle
/// of the page after the header's: a loop that touches a buffer a page
/// apart (first touches, an array of page-sized records) is slowest when
/// it lands on the first or last lines of the pages.
fn layout(size: usize, align: usize) -> Option<(usize, usize)> {
    let offset = if align <= MID_PAGE {
        OS_PAGE + MID_PAGE
    } else if align <= MAX_NEAR_ALIGN {
        align.max(OS_PAGE)
    } else {
        SEGMENT_SIZE
    };
    let len = offset.checked_add(size)?.checked_next_multiple_of(OS_PAGE)?;
    Some((offset, len))
}

/// Whether `ptr` is the block of huge segment `seg` (a cached segment
/// has none).
///
/// # Safety
/// `seg` is a huge segment of ours.
pub(crate) unsafe fn is_block(seg: *mut Segment, ptr: usize) -> bool {
    // SAFETY: the caller vouches for the header.
    let offset = unsafe { (*seg).huge_offset };
    offset != 0 && ptr == seg as usize + offset
}

/// Whether the block in `seg` is a far one.
///
/// # Safety
/// `seg` is a huge segment of ours.
unsafe fn is_far(seg: *mut Segment) -> bool {
    // SAFETY: the caller vouches for the header.
    unsafe { (*seg).huge_offset >= SEGMENT_SIZE }
}

/// The huge segment whose far block starts at `ptr`, if there is one: the
/// segment unit before `ptr` is ours, huge, and says so. Safe for any address.
pub(crate) fn far_segment(ptr: usize) -> Option<*mut Segment> {
    if !ptr.is_multiple_of(SEGMENT_SIZE) || ptr < SEGMENT_SIZE || !segment::is_ours(ptr - SEGMENT_SIZE) {
        return None;
    }
    let seg = (ptr - SEGMENT_SIZE) as *mut Segment;
    // SAFETY: the segment is ours, so its header page is mapped; `kind` is
    // always written at creation, and `huge_offset` for huge segments.
    let far = unsafe { (*seg).kind == Kind::Huge && is_far(seg) };
    far.then_some(seg)
}

/// A huge block of `size` bytes aligned to `align` (a power of two;
/// zero-filled if `zeroed`); null if the OS refuses or the request cannot
/// be represented.
pub(crate) fn alloc(size: usize, align: usize, zeroed: bool) -> *mut u8 {
    let Some((offset, len)) = layout(size, align) else { return core::ptr::null_mut() };
    // A cached segment is placed for near blocks only.
    let cached = if align <= MAX_NEAR_ALIGN { take_cached(len) } else { None };
    if let Some((seg, reads_zero)) = cached {
        // SAFETY: the segment came out of the cache, so it is ours alone,
        // and its mapping holds `len >= offset + size` bytes.
        unsafe {
            (*seg).huge_offset = offset;
            (*seg).huge_asked = size;
            let block = (seg as usize + offset) as *mut u8;
            if zeroed && !reads_zero {
                // Fresh zero pages, rather than writing zeroes over pages
                // that may never have been touched; zeroes written up to
                // the first page boundary, which a block starting inside a
                // page has before it.
                let pages = offset.next_multiple_of(OS_PAGE);
                block.write_bytes(0, pages - offset);
                os::purge((seg as usize + pages) as *mut u8, (*seg).huge_len - pages);
            }
            return block;
        }
    }
    // Placed so that the header is a segment unit's start and the block is
    // aligned: a near block's offset is a multiple of its alignment.
    let map = || {
        if align <= MAX_NEAR_ALIGN {
            os::map_aligned_at(len, SEGMENT_SIZE, 0, Charge::AtMap)
        } else {
            os::map_aligned_at(len, align, offset, Charge::AtMap)
        }
    };
    // Out of address space or memory: the empty segments the page heap
    // keeps for reuse and the cached huge mappings may be what is in the way.
    let placed = map().or_else(|| (PAGE_HEAP.release_empty_segments() + release_cache() > 0).then(map).flatten());
    let Some(seg) = placed else { return core::ptr::null_mut() };
    let seg = seg.as_ptr().cast::<Segment>();
    // SAFETY: a fresh mapping of ours, at least one page long; only the header
    // fields in the first page are written.
    unsafe {
        (&raw mut (*seg).kind).write(Kind::Huge);
        (&raw mut (*seg).huge_len).write(len);
        (&raw mut (*seg).huge_offset).write(offset);
        (&raw mut (*seg).huge_asked).write(size);
    }
    segment::mark(seg);
    PAGE_HEAP.mapped.fetch_add_relaxed(len);
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
    // Far blocks are rare and their alignment is theirs alone: not cached.
    // SAFETY: as above.
    if !unsafe { is_far(seg) } {
        // No block until a request takes it out of the cache (before it
        // is in the cache, where a request may take it at once).
        // SAFETY: as above; the segment is ours alone until it is put.
        unsafe { (*seg).huge_offset = 0 };
        if CACHE.put(Entry { seg: seg as usize, len, aged: false, resident_since: UNSTAMPED }) {
            return;
        }
    }
    segment::unmark(seg);
    PAGE_HEAP.mapped.fetch_sub_relaxed(len);
    // SAFETY: the whole mapping is ours and unused.
    unsafe { os::unmap(seg.cast(), len) };
}

/// A cached segment whose mapping holds `need` bytes, taken out of the
/// cache (grown if it was the largest but too small), and whether its pages
/// after the header's read zero (they were given back).
fn take_cached(need: usize) -> Option<(*mut Segment, bool)> {
    let entry = CACHE.take(need)?;
    let seg = entry.seg as *mut Segment;
    let reads_zero = entry.resident_since == GIVEN_BACK;
    if entry.len >= need {
        return Some((seg, reads_zero));
    }
    // Unmarked while it may move (see `resize`).
    segment::unmark(seg);
    // SAFETY: out of the cache, the segment is ours alone; its header says
    // `entry.len`.
    let grown = unsafe { remap(seg, entry.len, need, true) };
    if let Some(grown) = grown {
        segment::mark(grown);
    } else {
        // No address space to grow it: let it go rather than keep a
        // mapping that failed to serve.
        PAGE_HEAP.mapped.fetch_sub_relaxed(entry.len);
        // SAFETY: as above; nothing refers to it.
        unsafe { os::unmap(seg.cast(), entry.len) };
    }
    grown.map(|grown| (grown, reads_zero))
}

/// Changes the mapping of huge segment `seg` from `len` to `new_len` bytes,
/// in place if the address space allows, else (if `may_move`) by moving its
/// pages (never copying them) to a new aligned address. Updates the header
/// and the mapped-bytes count; returns the segment's (possibly new)
/// address, or `None` with the segment unchanged. The segment map is the
/// caller's.
///
/// # Safety
/// `seg` is a huge segment of ours whose mapping is `len` bytes long, and
/// nothing else changes it meanwhile.
unsafe fn remap(seg: *mut Segment, len: usize, new_len: usize, may_move: bool) -> Option<*mut Segment> {
    // SAFETY: the mapping is ours; in place never moves it.
    let moved = if unsafe { os::remap_in_place(seg.cast(), len, new_len) } {
        seg
    } else if !may_move {
        return None;
    } else {
        // SAFETY: as above; the caller keeps everyone else off it.
        unsafe { os::remap_aligned(seg.cast(), len, new_len, SEGMENT_SIZE) }?.as_ptr().cast::<Segment>()
    };
    // SAFETY: the header travelled with the first page, which never goes away.
    unsafe { (*moved).huge_len = new_len };
    account(len, new_len);
    Some(moved)
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
    let (offset, len, asked) = unsafe { ((*seg).huge_offset, (*seg).huge_len, (*seg).huge_asked) };
    let Some(new_len) = offset.checked_add(new_size).and_then(|n| n.checked_next_multiple_of(OS_PAGE)) else {
        return core::ptr::null_mut();
    };
    // The mapping stays as it is if it holds a grown block (a block from
    // the cache may be larger than asked for: a buffer growing in steps
    // through it would otherwise shrink it at its first step and fault the
    // pages back in at the next ones), or a shrunk one with no more to
    // spare than the new size itself, and at most `REUSE_SLACK`.
    let grows = new_size >= asked;
    if new_len <= len && (grows || len - new_len <= new_len.min(REUSE_SLACK)) {
        // SAFETY: as above.
        unsafe { (*seg).huge_asked = new_size };
        return (seg as usize + offset) as *mut u8;
    }
    // Unmarked while it may move: once its pages leave, another thread may
    // map a segment of its own at the old address and mark it, and an
    // unmark after the move would then disown that segment.
    segment::unmark(seg);
    // SAFETY: a live segment: only this call changes its mapping.
    let resized = unsafe { remap(seg, len, new_len, !is_far(seg)) };
    segment::mark(resized.unwrap_or(seg));
    match resized {
        Some(moved) => {
            // SAFETY: the header travelled with the first page.
            unsafe { (*moved).huge_asked = new_size };
            (moved as usize + offset) as *mut u8
        }
        None => core::ptr::null_mut(),
    }
}

fn account(old: usize, new: usize) {
    if new > old {
        PAGE_HEAP.mapped.fetch_add_relaxed(new - old);
    } else {
        PAGE_HEAP.mapped.fetch_sub_relaxed(old - new);
    }
}
