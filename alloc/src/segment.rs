//! Segments and the page heap: where every byte the allocator hands out lives.
//!
//! A *segment* is [`SEGMENT_SIZE`] bytes (4 MiB) aligned to its size, so any
//! pointer finds its segment by masking. A normal segment is cut into
//! [`PAGES`] pages of [`PAGE_SIZE`] (64 KiB); page 0 holds the [`Segment`]
//! header, the others are handed out as *spans* of contiguous pages: a small
//! class's span holds many objects, a medium span is one block. A *huge*
//! segment is one mapping holding one block, larger than a medium span.
//!
//! Invariants (a segment `s`, a page `p` of it):
//! - `s` is ours iff its bit is set in [`SEGMENT_MAP`];
//! - `s.page_class[p]` is 0 for a free page, the class for a small span's
//!   head page and the class with [`TAIL_PAGE`] set for its other pages,
//!   [`PAGE_MEDIUM`] for a medium span's, and is set before any object of
//!   the span is handed out;
//! - `s.page_head[p]` is the first page of the span covering `p`, and the
//!   [`Span`] describing it is `s.spans[s.page_head[p]]`;
//! - bit `p` of `s.free_pages` is set iff page `p` is in no span
//!   (page heap lock); bit `p` of `s.dirty_pages` is set iff page `p` may hold
//!   non-zero bytes;
//! - `s.huge_pages` is set only while `s` was advised `MADV_HUGEPAGE` and
//!   holds only spans that fill their pages ([`Pool`]).

use crate::geometry::{ADDRESS_BITS, MAX_OBJECTS, SEGMENT_SHIFT};
pub(crate) use crate::geometry::{PAGE_SHIFT, PAGE_SIZE, PAGES, SEGMENT_SIZE};
use crate::list::{Linked, Links, List};
use crate::lock::Lock;
use crate::os;
use crate::sync::{AtomicBool, AtomicIntOps, AtomicOps, AtomicU8, AtomicU64, AtomicUsize};

/// `free_pages` of an empty segment: every page but the header's.
const ALL_USABLE: u64 = !1;
/// `page_class` of a medium span's pages.
pub(crate) const PAGE_MEDIUM: u8 = 255;
/// Set in `page_class` on a small span's pages after its head: `free`'s
/// fast path, which reads the class byte alone, then takes only pointers
/// in head pages, where an object's offset in its span is its offset in
/// the page (no read of `page_head`); the others go the way of every
/// other block (`tiers::lookup`).
pub(crate) const TAIL_PAGE: u8 = 0x80;
const _: () = assert!(crate::size_class::CLASSES < TAIL_PAGE as usize - 1);

/// The small class a `page_class` byte names, on its span's head page or a
/// later one; `None` for a free page or a medium span's.
#[inline(always)]
pub(crate) fn small_class_in(page_class: u8) -> Option<usize> {
    let class = page_class & !TAIL_PAGE;
    (page_class != PAGE_MEDIUM && class != 0).then_some(class as usize)
}

/// What a segment holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u32)]
pub(crate) enum Kind {
    /// Spans of pages.
    Spans = 1,
    /// One huge block.
    Huge = 2,
}

/// The header at the start of every segment.
#[repr(C)]
pub(crate) struct Segment {
    /// What this segment holds.
    pub(crate) kind: Kind,
    /// Huge: bytes mapped, from the segment start.
    pub(crate) huge_len: usize,
    /// Huge: offset of the block from the segment start.
    pub(crate) huge_offset: usize,
    /// Huge: the size the block was last asked for (its mapping may hold
    /// more, from the cache).
    pub(crate) huge_asked: usize,
    /// Pages in no span (page heap lock).
    free_pages: u64,
    /// Pages that may hold non-zero bytes (page heap lock).
    dirty_pages: u64,
    /// Neighbours in the page heap's list of every segment (page heap lock).
    links: Links<Segment>,
    /// Neighbours in the page heap's index by longest run of free pages
    /// (page heap lock).
    free_run_links: Links<Segment>,
    /// Neighbours in its index by longest run of free dirty pages (page
    /// heap lock).
    dirty_run_links: Links<Segment>,
    /// Where the two indexes file the segment (page heap lock): at the
    /// classes of its longest runs, or above them, since claims and growths
    /// in place take pages without refiling it (a search that finds it
    /// filed too high refiles it, `PageHeap::claim_fitting`).
    filed: RunClasses,
    /// Pages free and dirty since the last upkeep, unclaimed in between
    /// (page heap lock).
    aged_pages: u64,
    /// Whether every usable page has been free since the last upkeep
    /// (page heap lock).
    aged_empty: bool,
    /// Whether the kernel was asked to back the segment with transparent
    /// huge pages (page heap lock; [`HUGE_PAGES_FROM`]).
    huge_pages: bool,
    /// Class of the span covering each page; read without locks on `free`.
    pub(crate) page_class: [AtomicU8; PAGES],
    /// First page of the span covering each page.
    pub(crate) page_head: [u8; PAGES],
    /// Span descriptors, meaningful at head pages. Without their bitmaps
    /// (below) all 64 fit the header's first 4 KiB page with the fields
    /// above: with them, a program with more than 7 spans touched a second
    /// page of header for every 7 spans, before any object came back.
    pub(crate) spans: [Span; PAGES],
    /// Per span, at its head page: bit `i` set iff object `i < bump` is free
    /// in the central list. All zeros while the span is not a small span
    /// (cleared when it goes back to the page heap), so a fresh span has
    /// nothing to clear, and a bitmap's page is written when objects of its
    /// span first come back.
    pub(crate) free_objects: [[u64; MAX_OBJECTS / 64]; PAGES],
}

/// A span of a small class: its objects and which of them are free.
/// Owned by the central list of its class (its lock), or by the page heap
/// while free or medium.
#[repr(C)]
pub(crate) struct Span {
    /// Size class (0 for medium spans).
    pub(crate) class: u8,
    /// Pages in the span.
    pub(crate) pages: u8,
    /// Whether the span is on its class's list of spans with free objects.
    pub(crate) listed: bool,
    /// Objects that fit in the span.
    pub(crate) objects: u16,
    /// Objects `bump..objects` have never been handed out.
    pub(crate) bump: u16,
    /// Objects handed out and not given back (in per-CPU caches or in use).
    pub(crate) used: u16,
    /// Words of the free bitmap below this one are all zero (central list
    /// lock): refills start their search here.
    pub(crate) first_free_word: u8,
    /// The CPU whose refill last carved fresh objects from the span, plus
    /// one (0: none known): refills of other CPUs carve from spans of their
    /// own (`central`).
    pub(crate) carver: u16,
    /// A medium span: what `malloc_usable_size` reports, in 4 KiB units
    /// (`tiers::note_medium_size`).
    pub(crate) usable_4k: u16,
    /// Neighbours on the class's list.
    pub(crate) links: Links<Span>,
}

/// A span is on its class's list by the links in its descriptor.
impl Linked for Span {
    unsafe fn links(this: *mut Span) -> *mut Links<Span> {
        // SAFETY: forwarded from the caller.
        unsafe { &raw mut (*this).links }
    }
}

const _: () = assert!(core::mem::size_of::<Segment>() <= PAGE_SIZE);
const _: () = assert!(core::mem::offset_of!(Segment, free_objects) <= 4096);

impl Segment {
    /// The pool whose indexes file the segment (page heap lock).
    fn pool(&self) -> Pool {
        if self.huge_pages { Pool::HugePages } else { Pool::SmallPages }
    }

    /// The segment containing `addr` (which may not be ours).
    #[inline(always)]
    pub(crate) fn containing(addr: usize) -> *mut Segment {
        (addr & !(SEGMENT_SIZE - 1)) as *mut Segment
    }

    /// First byte of page `page` of this segment.
    #[inline(always)]
    pub(crate) fn page_start(seg: *mut Segment, page: usize) -> usize {
        seg as usize + (page << PAGE_SHIFT)
    }

    /// Index of the page holding `addr`, in its segment.
    #[inline(always)]
    pub(crate) fn page_index(addr: usize) -> usize {
        (addr & (SEGMENT_SIZE - 1)) >> PAGE_SHIFT
    }
}

// ---------------------------------------------------------------------------
// The segment map: one bit per 4 MiB unit of the 47-bit user address space,
// set iff a segment of ours starts there. It lives in .bss; only the words
// for addresses in use are ever touched.

static SEGMENT_MAP: [AtomicU64; 1 << (ADDRESS_BITS - SEGMENT_SHIFT - 6)] =
    [const { AtomicU64::new(0) }; 1 << (ADDRESS_BITS - SEGMENT_SHIFT - 6)];

fn map_position(seg: usize) -> Option<(usize, u64)> {
    let unit = seg >> SEGMENT_SHIFT;
    (unit >> 6 < SEGMENT_MAP.len()).then(|| (unit >> 6, 1u64 << (unit & 63)))
}

/// Whether `addr` lies in the first 4 MiB of a segment of ours.
#[inline]
pub(crate) fn is_ours(addr: usize) -> bool {
    map_position(Segment::containing(addr) as usize)
        .is_some_and(|(word, bit)| SEGMENT_MAP[word].load_acquire() & bit != 0)
}

pub(crate) fn mark(seg: *mut Segment) {
    if let Some((word, bit)) = map_position(seg as usize) {
        SEGMENT_MAP[word].fetch_or_release(bit);
    }
}

pub(crate) fn unmark(seg: *mut Segment) {
    if let Some((word, bit)) = map_position(seg as usize) {
        SEGMENT_MAP[word].fetch_and_release(!bit);
    }
}

// ---------------------------------------------------------------------------
// The page heap.

/// Hands out spans of contiguous pages from segments, and segments from the
/// OS. One lock; it is taken only when a central list needs a span or gives
/// one back, and for medium blocks.
pub(crate) struct PageHeap {
    lock: Lock,
    inner: core::cell::UnsafeCell<PageHeapInner>,
    /// Bytes of address space mapped for segments (normal and huge).
    pub(crate) mapped: AtomicUsize,
    /// Bytes given back to the OS by purges, ever.
    pub(crate) released: AtomicUsize,
    /// Segments advised to use transparent huge pages now (written with
    /// the lock held).
    huge_page_segments: AtomicUsize,
}

struct PageHeapInner {
    /// Every normal segment, for the walks of the upkeep and of `purge`.
    segments: List<Segment>,
    /// The segments with free pages, by the class of their longest run of
    /// them; one index per [`Pool`].
    free_runs: [RunIndex<FreeRuns>; POOLS],
    /// The segments with free dirty pages, by the class of their longest
    /// run of them; one index per [`Pool`].
    dirty_runs: [RunIndex<DirtyRuns>; POOLS],
    /// Segments with every usable page free, kept for reuse.
    empty: usize,
    /// Normal segments mapped.
    listed: usize,
    /// Whether segments mapped beyond [`HUGE_PAGES_FROM`] are advised to use
    /// transparent huge pages.
    advise_huge_pages: bool,
    /// Whether segments that empty stay mapped until an upkeep finds them
    /// still empty a period later (else all but [`EMPTY_SEGMENTS_KEPT`] are
    /// unmapped as they empty).
    keep_until_decay: bool,
}

// SAFETY: `inner` is only touched with `lock` held.
unsafe impl Sync for PageHeap {}

/// The process's page heap.
pub(crate) static PAGE_HEAP: PageHeap = PageHeap::new();

/// A span handed out by the page heap.
#[derive(Clone, Copy)]
pub(crate) struct NewSpan {
    pub(crate) seg: *mut Segment,
    pub(crate) head: usize,
    /// Every byte of the span reads zero.
    pub(crate) zeroed: bool,
}

impl NewSpan {
    /// No span: what a slot holds before the page heap fills it.
    pub(crate) const NONE: NewSpan = NewSpan { seg: core::ptr::null_mut(), head: 0, zeroed: false };
}

/// Set when the page heap keeps an empty segment that only a later
/// [`PageHeap::decay`] will unmap; the upkeep clears it once it has made
/// sure a round will come (`upkeep::after_free`).
pub(crate) static DECAY_WANTED: AtomicBool = AtomicBool::new(false);

/// The thread whose frees of spans count as aged (0: none): the upkeep's,
/// during a round, whose frees come from caches and spare spans that sat
/// unused for a whole period already, so that what they free goes back to
/// the OS in that same round rather than a period later.
static AGED_FREES_BY: AtomicUsize = AtomicUsize::new(0);

/// Makes the spans this thread frees from now on count as aged (`true`),
/// or stops it.
pub(crate) fn age_frees_of_this_thread(on: bool) {
    AGED_FREES_BY.store_relaxed(if on { crate::sync::current_thread() } else { 0 });
}

/// Whether spans this thread frees now count as aged.
pub(crate) fn frees_here_are_aged() -> bool {
    let by = AGED_FREES_BY.load_relaxed();
    by != 0 && by == crate::sync::current_thread()
}

/// What a round of [`PageHeap::decay`] did.
pub(crate) struct Decayed {
    /// Bytes given back to the OS.
    pub(crate) released: usize,
    /// Whether free memory is left that a later round may give back.
    pub(crate) holding: bool,
}

/// Fully free segments kept mapped however long they stay empty.
const EMPTY_SEGMENTS_KEPT: usize = 1;

/// Normal segments mapped before the next ones are advised to use
/// transparent huge pages (`MADV_HUGEPAGE`; `RSEQ_ALLOC_HUGE_PAGES=0` turns
/// it off). A heap this large misses the TLB's reach with 4 KiB pages, and
/// what a 2 MiB page may hold untouched is a small part of it; a smaller
/// heap keeps its small pages, which it fills as it grows. Huge blocks,
/// which a program may touch sparsely, are never advised.
const HUGE_PAGES_FROM: usize = 16;

/// The segments a span may come from. Only spans whose every 4 KiB page
/// holds the start of an object ([`fills_its_pages`]) go to segments on
/// huge pages: a program touches each block it uses at least at its start,
/// so those pages are touched anyway, where a 64 KiB buffer used for its
/// first bytes, on a huge page, would make all of it resident.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pool {
    SmallPages = 0,
    HugePages = 1,
}
const POOLS: usize = 2;

/// Whether a span of `class` (a small class, or [`PAGE_MEDIUM`]) has an
/// object starting in every 4 KiB page.
fn fills_its_pages(class: u8) -> bool {
    class != PAGE_MEDIUM && crate::size_class::SIZES[class as usize] as usize <= os::OS_PAGE
}

fn run_mask(pages: usize) -> u64 {
    if pages >= 64 { u64::MAX } else { (1u64 << pages) - 1 }
}

/// A segment is on the page heap's list by the links in its header.
impl Linked for Segment {
    unsafe fn links(this: *mut Segment) -> *mut Links<Segment> {
        // SAFETY: forwarded from the caller.
        unsafe { &raw mut (*this).links }
    }
}

/// Names the index of segments by their longest run of free pages.
struct FreeRuns;
/// Names the index of segments by their longest run of free dirty pages.
struct DirtyRuns;

impl Linked<FreeRuns> for Segment {
    unsafe fn links(this: *mut Segment) -> *mut Links<Segment> {
        // SAFETY: forwarded from the caller.
        unsafe { &raw mut (*this).free_run_links }
    }
}

impl Linked<DirtyRuns> for Segment {
    unsafe fn links(this: *mut Segment) -> *mut Links<Segment> {
        // SAFETY: forwarded from the caller.
        unsafe { &raw mut (*this).dirty_run_links }
    }
}

/// The classes ([`run_class`]) of the longest runs of a segment's free
/// pages and of its free dirty pages.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct RunClasses {
    free: u8,
    dirty: u8,
}

/// Most pages a span claims: a medium span's (small classes' spans are
/// shorter), so that a run of that many or more serves any claim.
const MOST_CLAIMED: usize = crate::geometry::MAX_MEDIUM / PAGE_SIZE;
/// The class of runs longer than [`MOST_CLAIMED`] and shorter than 32 pages.
const LONG_RUN: usize = MOST_CLAIMED + 1;
/// The class of runs of 32 pages or more.
const LONGEST_RUN: usize = MOST_CLAIMED + 2;
/// Classes of runs: 0 for none, `n` for a run of `n` pages up to
/// [`MOST_CLAIMED`], then [`LONG_RUN`] and [`LONGEST_RUN`], for which the
/// exact length does not matter (every claim fits) and whose segments do
/// not change lists at every claim.
const RUN_CLASSES: usize = LONGEST_RUN + 1;

/// The class of the longest run of set bits in `bits` (not all set: page
/// 0 is the header's, never free). `starts_k` marks the bits that start a
/// run of at least `k`, by shifts of constant lengths: only a run of up to
/// [`MOST_CLAIMED`] needs its exact length ([`longest_run_at`]).
fn run_class(bits: u64) -> u8 {
    let starts_2 = bits & bits >> 1;
    let starts_4 = starts_2 & starts_2 >> 2;
    let starts_8 = starts_4 & starts_4 >> 4;
    let starts_16 = starts_8 & starts_8 >> 8;
    let starts_17 = starts_16 & starts_16 >> 1;
    let starts_32 = starts_16 & starts_16 >> 16;
    match (starts_17 != 0, starts_32 != 0) {
        (_, true) => LONGEST_RUN as u8,
        (true, false) => LONG_RUN as u8,
        (false, false) => longest_run_at(bits).0,
    }
}

const _: () = assert!(MOST_CLAIMED == 16, "`run_class` tests for runs of 17 and 32");

/// The class of a run of `length` pages.
fn class_of_run(length: u8) -> u8 {
    match length as usize {
        0..=MOST_CLAIMED => length,
        17..=31 => LONG_RUN as u8,
        _ => LONGEST_RUN as u8,
    }
}

/// Segments filed by the class of a run of their pages, one list per
/// class: a claim of `pages` takes a segment from the lowest class that
/// fits (a best fit, which keeps long runs for spans that need them), in
/// constant time however many segments are mapped, where a walk of the
/// segments would load the header of each (a cache and TLB miss apiece)
/// past every one too full to serve.
struct RunIndex<Via> {
    /// `by_class[c]`: the segments filed at class `c`; a segment without
    /// such a run (`c` = 0) is on no list.
    by_class: [List<Segment, Via>; RUN_CLASSES],
    /// Bit `c` set iff `by_class[c]` is not empty.
    occupied: u32,
}

impl<Via> RunIndex<Via>
where
    Segment: Linked<Via>,
{
    const fn new() -> RunIndex<Via> {
        RunIndex { by_class: [const { List::new() }; RUN_CLASSES], occupied: 0 }
    }

    /// A segment with a run of `pages` (at most [`MOST_CLAIMED`]) or more,
    /// from the lowest class that has one, or with `longest` the highest;
    /// null if none.
    fn candidate(&self, pages: usize, longest: bool) -> *mut Segment {
        match self.occupied >> pages << pages {
            0 => core::ptr::null_mut(),
            fitting if longest => self.by_class[31 - fitting.leading_zeros() as usize].head,
            fitting => self.by_class[fitting.trailing_zeros() as usize].head,
        }
    }

    /// Moves `seg` from the list of class `from` to that of `to`.
    ///
    /// # Safety
    /// The page heap lock is held, and `seg` is a mapped segment on the
    /// list of `from` (on none if `from` is 0).
    unsafe fn refile(&mut self, seg: *mut Segment, from: u8, to: u8) {
        let (from, to) = (from as usize, to as usize);
        if from == to {
            return;
        }
        if from != 0 {
            // SAFETY: the caller's `seg` is on this list, which the lock guards.
            unsafe { self.by_class[from].unlink(seg) };
            if self.by_class[from].head.is_null() {
                self.occupied &= !(1 << from);
            }
        }
        if to != 0 {
            // SAFETY: unlinked above (or on no list of this index), and live.
            unsafe { self.by_class[to].push_front(seg) };
            self.occupied |= 1 << to;
        }
    }
}

/// Length and first bit of the first longest run of set bits in `bits`
/// (not all set: page 0 is the header's, never free; 0 and 64 if none),
/// by binary lifting: `starts[j]` marks the bits that start a run of at
/// least `2^j`, and the length grows by each power of two that still
/// leaves a run that long.
fn longest_run_at(bits: u64) -> (u8, usize) {
    debug_assert!(bits != u64::MAX);
    let mut starts = [bits; 6];
    for j in 1..6 {
        starts[j] = starts[j - 1] & (starts[j - 1] >> (1 << (j - 1)));
    }
    // `at_least` marks the bits that start a run of at least `length`.
    let (mut length, mut at_least) = (0u32, u64::MAX);
    for j in (0..6).rev() {
        let longer = at_least & (starts[j] >> length);
        if longer != 0 {
            length += 1 << j;
            at_least = longer;
        }
    }
    let start = if length == 0 { 64 } else { at_least.trailing_zeros() as usize };
    (length as u8, start)
}

/// Files `seg` in both indexes by its free and dirty pages as they are now.
///
/// # Safety
/// The page heap lock is held, and `seg` is a mapped normal segment of
/// ours, filed where its `filed` says.
unsafe fn refile(inner: &mut PageHeapInner, seg: *mut Segment) {
    // SAFETY: the caller's segment; the lock guards these fields.
    let (free, dirty) = unsafe { ((*seg).free_pages & ALL_USABLE, (*seg).dirty_pages) };
    // SAFETY: forwarded from the caller.
    unsafe { file(inner, seg, RunClasses { free: run_class(free), dirty: run_class(free & dirty) }) };
}

/// Moves `seg` to the lists of `classes` in both indexes (none for 0: a
/// segment that goes away is filed at 0 first).
///
/// # Safety
/// As [`refile`].
unsafe fn file(inner: &mut PageHeapInner, seg: *mut Segment, classes: RunClasses) {
    // SAFETY: the caller's segment; the lock guards it. Read by value: the
    // indexes write its links through `seg`.
    let filed = unsafe { (*seg).filed };
    if classes == filed {
        return;
    }
    // SAFETY: filed where `filed` says (the caller's contract); the lock is held.
    unsafe {
        let pool = (*seg).pool() as usize;
        inner.free_runs[pool].refile(seg, filed.free, classes.free);
        inner.dirty_runs[pool].refile(seg, filed.dirty, classes.dirty);
        (*seg).filed = classes;
    }
}

impl PageHeap {
    const fn new() -> PageHeap {
        PageHeap {
            lock: Lock::new(),
            inner: core::cell::UnsafeCell::new(PageHeapInner {
                segments: List::new(),
                free_runs: [const { RunIndex::new() }; POOLS],
                dirty_runs: [const { RunIndex::new() }; POOLS],
                empty: 0,
                listed: 0,
                advise_huge_pages: true,
                keep_until_decay: false,
            }),
            mapped: AtomicUsize::new(0),
            released: AtomicUsize::new(0),
            huge_page_segments: AtomicUsize::new(0),
        }
    }

    /// A span of `pages` contiguous pages whose `page_class` reads `class`
    /// (set before return), or `None` if the OS refuses memory.
    pub(crate) fn alloc_span(&self, pages: usize, class: u8) -> Option<NewSpan> {
        let mut one = [NewSpan::NONE];
        (self.alloc_spans(pages, class, &mut one) == 1).then_some(one[0])
    }

    /// Fills `out` with spans as [`alloc_span`](Self::alloc_span) would, in
    /// one trip: a class whose spans hold a few objects each refills a batch
    /// with one lock, not one per span. Returns how many (fewer only if the
    /// OS refuses memory).
    pub(crate) fn alloc_spans(&self, pages: usize, class: u8, out: &mut [NewSpan]) -> usize {
        debug_assert!((1..=MOST_CLAIMED).contains(&pages));
        let _guard = self.lock.lock();
        // SAFETY: the lock is held.
        let inner = unsafe { &mut *self.inner.get() };
        for (n, slot) in out.iter_mut().enumerate() {
            match self.claim_anywhere(inner, pages, class) {
                Some(span) => *slot = span,
                None => return n,
            }
        }
        out.len()
    }

    /// A span of `pages` pages from a segment with a run of free pages that
    /// held data (dirty), else from one with a run of free pages, else from
    /// a fresh one; of those, the segment whose longest such run is the
    /// shortest that fits ([`RunIndex`]). Dirty pages come first because they are resident
    /// already: a never-touched (or purged) page costs a page fault and a
    /// page of resident memory more, and a program that frees and allocates
    /// its working set again would otherwise spread it over pages it never
    /// touched before, faulting them in cycle after cycle until it had
    /// touched them all.
    fn claim_anywhere(&self, inner: &mut PageHeapInner, pages: usize, class: u8) -> Option<NewSpan> {
        let dense = fills_its_pages(class);
        let pools: &[Pool] = if dense { &[Pool::HugePages, Pool::SmallPages] } else { &[Pool::SmallPages] };
        for dirty_only in [true, false] {
            for &pool in pools {
                if let Some(span) = Self::claim_fitting(inner, pool, pages, class, dirty_only) {
                    return Some(span);
                }
            }
        }
        let seg = os::map_aligned(SEGMENT_SIZE, SEGMENT_SIZE)?.as_ptr().cast::<Segment>();
        self.mapped.fetch_add_relaxed(SEGMENT_SIZE);
        // Advised before the header is written, or its first fault would
        // map the header's range with small pages.
        let huge_pages = dense && inner.advise_huge_pages && inner.listed >= HUGE_PAGES_FROM;
        if huge_pages {
            // SAFETY: the fresh mapping of a whole segment.
            unsafe { os::advise_huge_pages(seg.cast(), SEGMENT_SIZE, true) };
            self.huge_page_segments.fetch_add_relaxed(1);
        }
        // SAFETY: a fresh zeroed mapping of a whole segment; zero is a valid
        // bit pattern for every header field but `kind`, written here.
        unsafe {
            (*seg).kind = Kind::Spans;
            (*seg).free_pages = ALL_USABLE;
            (*seg).dirty_pages = 1;
            (*seg).huge_pages = huge_pages;
            inner.segments.push_front(seg);
        }
        inner.listed += 1;
        inner.empty += 1;
        mark(seg);
        // SAFETY: the new segment has every usable page free; it is listed,
        // and on no index until filed here.
        unsafe {
            let span = claim(inner, seg, 1, pages, class);
            refile(inner, seg);
            Some(span)
        }
    }

    /// A span of `pages` pages at the first run of free pages (of dirty
    /// ones, if `dirty_only`) in the segment the index finds for them. A
    /// medium span goes at the start of the longest run, in a segment of
    /// the highest class, instead: `realloc` grows medium spans in place
    /// over the free pages after them, which a best fit leaves none of.
    fn claim_fitting(
        inner: &mut PageHeapInner,
        pool: Pool,
        pages: usize,
        class: u8,
        dirty_only: bool,
    ) -> Option<NewSpan> {
        let grows = class == PAGE_MEDIUM;
        loop {
            let seg = if dirty_only {
                inner.dirty_runs[pool as usize].candidate(pages, grows)
            } else {
                inner.free_runs[pool as usize].candidate(pages, grows)
            };
            if seg.is_null() {
                return None;
            }
            // SAFETY: indexed segments are mapped and ours; the caller holds
            // the lock, which guards these fields.
            let (free, filed) = unsafe {
                let dirty = if dirty_only { (*seg).dirty_pages } else { !0 };
                ((*seg).free_pages & ALL_USABLE & dirty, (*seg).filed)
            };
            // A medium span's place is the longest run's start, whose
            // length gives the class too.
            let (run, longest_at) = if grows {
                let (length, start) = longest_run_at(free);
                (class_of_run(length), start)
            } else {
                (run_class(free), 0)
            };
            if run != if dirty_only { filed.dirty } else { filed.free } {
                // Filed above its run (a claim or a growth in place took
                // pages): file it where it belongs and look again.
                // SAFETY: the lock is held; an indexed segment, filed as it says.
                unsafe { refile(inner, seg) };
                continue;
            }
            let head = if grows { Some(longest_at) } else { find_run(free, pages) };
            debug_assert!(head.is_some(), "a segment filed at its run's class has no run of {pages} pages");
            // SAFETY: the lock is held and these pages are free.
            return head.map(|head| unsafe { claim(inner, seg, head, pages, class) });
        }
    }

    /// Gives back the span at `head` of `seg` (`pages` long).
    ///
    /// # Safety
    /// The span was returned by [`alloc_span`](Self::alloc_span) and nothing
    /// refers to its memory any more.
    pub(crate) unsafe fn free_span(&self, seg: *mut Segment, head: usize, pages: usize) {
        // SAFETY: forwarded from the caller.
        unsafe { self.free_spans([(seg, head, pages)]) };
    }

    /// Gives back each span `(segment, head page, pages)` as
    /// [`free_span`](Self::free_span) would, in one trip.
    ///
    /// # Safety
    /// As [`free_span`](Self::free_span), for every span.
    pub(crate) unsafe fn free_spans(&self, spans: impl IntoIterator<Item = (*mut Segment, usize, usize)>) {
        let _guard = self.lock.lock();
        // SAFETY: the lock is held.
        let inner = unsafe { &mut *self.inner.get() };
        for (seg, head, pages) in spans {
            // SAFETY: the lock is held; the span is forwarded from the caller.
            unsafe { self.release_span(inner, seg, head, pages) };
        }
    }

    /// # Safety
    /// The lock is held, and the span is as [`free_span`](Self::free_span) asks.
    unsafe fn release_span(&self, inner: &mut PageHeapInner, seg: *mut Segment, head: usize, pages: usize) {
        // SAFETY: the caller hands back a span of a mapped segment of ours.
        let s = unsafe { &mut *seg };
        for page in head..head + pages {
            s.page_class[page].store_relaxed(0);
        }
        s.free_pages |= run_mask(pages) << head;
        if frees_here_are_aged() {
            s.aged_pages |= (run_mask(pages) << head) & s.dirty_pages;
        }
        if s.free_pages == ALL_USABLE {
            s.aged_empty = (s.aged_pages | !s.dirty_pages) & ALL_USABLE == ALL_USABLE;
            if inner.empty < EMPTY_SEGMENTS_KEPT {
                inner.empty += 1;
            } else if inner.keep_until_decay {
                inner.empty += 1;
                if !DECAY_WANTED.load_relaxed() {
                    DECAY_WANTED.store_relaxed(true);
                }
            } else {
                // SAFETY: the lock is held and the segment holds nothing.
                return unsafe { self.release_segment(inner, seg) };
            }
        }
        // SAFETY: the lock is held; a listed segment, filed as it says.
        unsafe { refile(inner, seg) };
    }

    /// Whether segments mapped once the heap holds [`HUGE_PAGES_FROM`] are
    /// advised to use transparent huge pages (default yes). Set once at
    /// start-up.
    pub(crate) fn use_huge_pages(&self, on: bool) {
        let _guard = self.lock.lock();
        // SAFETY: the lock is held.
        unsafe { (*self.inner.get()).advise_huge_pages = on };
    }

    /// Segments advised to use transparent huge pages now.
    pub(crate) fn huge_page_segments(&self) -> usize {
        self.huge_page_segments.load_relaxed()
    }

    /// Whether segments that empty stay mapped until the upkeep's
    /// [`decay`](Self::decay) finds them unused for a whole period: a
    /// program that frees its working set and allocates it again then
    /// reuses the same pages instead of mapping and faulting them in anew.
    /// Set once at start-up, when the upkeep has a period.
    pub(crate) fn keep_empty_segments_until_decay(&self, keep: bool) {
        let _guard = self.lock.lock();
        // SAFETY: the lock is held.
        unsafe { (*self.inner.get()).keep_until_decay = keep };
    }

    /// Grows the medium span at `head` of `seg` from `pages` to at least
    /// `least` pages, and up to `most` if the pages after it are free that
    /// far; false if fewer than `least` are free.
    ///
    /// # Safety
    /// The span is a live medium span of `pages` pages.
    pub(crate) unsafe fn grow_span(
        &self,
        seg: *mut Segment,
        head: usize,
        pages: usize,
        least: usize,
        most: usize,
    ) -> bool {
        debug_assert!(pages < least && least <= most);
        if head + least > PAGES {
            return false;
        }
        let _guard = self.lock.lock();
        // SAFETY: the caller owns the span; the lock guards the segment's page state.
        let s = unsafe { &mut *seg };
        // Free pages right after the span (a run of ones from bit
        // `head + pages`).
        let after = (!(s.free_pages & ALL_USABLE) >> (head + pages)).trailing_zeros() as usize;
        let new_pages = (pages + after).min(most).min(PAGES - head);
        if new_pages < least {
            return false;
        }
        let extra = run_mask(new_pages - pages) << (head + pages);
        s.free_pages &= !extra;
        s.dirty_pages |= extra;
        s.aged_pages &= !extra;
        for page in head + pages..head + new_pages {
            s.page_head[page] = head as u8;
            s.page_class[page].store_release(PAGE_MEDIUM);
        }
        s.spans[head].pages = new_pages as u8;
        // The indexes keep the segment where it was (`Segment::filed`).
        true
    }

    /// Shrinks the medium span at `head` of `seg` from `pages` to
    /// `new_pages` in place, giving the tail back.
    ///
    /// # Safety
    /// The span is a live medium span of `pages` pages, and nothing uses its
    /// pages past `new_pages`.
    pub(crate) unsafe fn shrink_span(&self, seg: *mut Segment, head: usize, pages: usize, new_pages: usize) {
        debug_assert!(new_pages < pages && new_pages >= 1);
        {
            let _guard = self.lock.lock();
            // SAFETY: the caller owns the span; the lock guards the segment's page state.
            unsafe { (*seg).spans[head].pages = new_pages as u8 };
        }
        // SAFETY: the tail is a run of pages of the span that nobody uses; it
        // becomes a span of its own and is freed like one.
        unsafe {
            for page in head + new_pages..head + pages {
                (*seg).page_head[page] = (head + new_pages) as u8;
            }
            self.free_span(seg, head + new_pages, pages - new_pages);
        }
    }

    /// # Safety
    /// The lock is held; `seg` is on the list with every page free.
    unsafe fn release_segment(&self, inner: &mut PageHeapInner, seg: *mut Segment) {
        // SAFETY: forwarded from the caller; a listed segment is filed as it says.
        unsafe {
            file(inner, seg, RunClasses { free: 0, dirty: 0 });
            inner.segments.unlink(seg);
            if (*seg).huge_pages {
                self.huge_page_segments.fetch_sub_relaxed(1);
            }
        }
        inner.listed -= 1;
        unmark(seg);
        self.mapped.fetch_sub_relaxed(SEGMENT_SIZE);
        // SAFETY: unlisted and unmarked; nothing refers to it.
        unsafe { os::unmap(seg.cast(), SEGMENT_SIZE) };
    }

    /// Gives the memory of every free page back to the OS: unmaps every
    /// segment with no span (the one kept for reuse too) and `madvise`s
    /// away the free pages of the others that may hold data. Returns the
    /// bytes given back.
    pub(crate) fn purge(&self) -> usize {
        let _guard = self.lock.lock();
        // SAFETY: the lock is held.
        let inner = unsafe { &mut *self.inner.get() };
        let mut released = 0;
        let mut seg = inner.segments.head;
        while !seg.is_null() {
            // SAFETY: listed segments are mapped and ours; the lock guards them.
            let (next, free, dirty) = unsafe { (List::<Segment>::next(seg), (*seg).free_pages, (*seg).dirty_pages) };
            if free == ALL_USABLE {
                inner.empty -= 1;
                released += (dirty & ALL_USABLE).count_ones() as usize * PAGE_SIZE;
                // SAFETY: the lock is held and the segment holds nothing.
                unsafe { self.release_segment(inner, seg) };
            } else {
                // SAFETY: as above; a listed segment is filed as it says.
                unsafe {
                    released += purge_pages(inner, seg, free & dirty, &self.huge_page_segments);
                    (*seg).dirty_pages &= !free;
                    refile(inner, seg);
                }
            }
            seg = next;
        }
        self.released.fetch_add_relaxed(released);
        released
    }

    /// Unmaps every segment with no span (when memory or address space ran
    /// out elsewhere); returns the bytes unmapped.
    pub(crate) fn release_empty_segments(&self) -> usize {
        let _guard = self.lock.lock();
        // SAFETY: the lock is held.
        let inner = unsafe { &mut *self.inner.get() };
        let mut released = 0;
        let mut seg = inner.segments.head;
        while !seg.is_null() {
            // SAFETY: listed segments are mapped and ours; the lock guards them.
            let (next, free) = unsafe { (List::<Segment>::next(seg), (*seg).free_pages) };
            if free == ALL_USABLE {
                inner.empty -= 1;
                released += SEGMENT_SIZE;
                // SAFETY: the lock is held and the segment holds nothing.
                unsafe { self.release_segment(inner, seg) };
            }
            seg = next;
        }
        released
    }

    /// Upkeep: `madvise`s away the free pages that have stayed free and
    /// dirty since the last upkeep, unmaps the segments that have stayed
    /// empty since then (but [`EMPTY_SEGMENTS_KEPT`]), and marks what is
    /// free now for the next round.
    pub(crate) fn decay(&self) -> Decayed {
        let _guard = self.lock.lock();
        // SAFETY: the lock is held.
        let inner = unsafe { &mut *self.inner.get() };
        let mut decayed = Decayed { released: 0, holding: false };
        let mut seg = inner.segments.head;
        while !seg.is_null() {
            // SAFETY: listed segments are mapped and ours; the lock guards these fields.
            let s = unsafe { &mut *seg };
            let next = s.links.next;
            let empty = s.free_pages == ALL_USABLE;
            if empty && s.aged_empty && inner.empty > EMPTY_SEGMENTS_KEPT {
                inner.empty -= 1;
                decayed.released += (s.dirty_pages & ALL_USABLE).count_ones() as usize * PAGE_SIZE;
                // SAFETY: the lock is held and the segment holds nothing.
                unsafe { self.release_segment(inner, seg) };
            } else {
                let stale = s.aged_pages & s.free_pages & s.dirty_pages & ALL_USABLE;
                s.dirty_pages &= !stale;
                s.aged_pages = s.free_pages & s.dirty_pages & ALL_USABLE;
                s.aged_empty = empty;
                decayed.holding |= s.aged_pages != 0;
                // SAFETY: the lock is held; a listed segment, filed as it says.
                unsafe {
                    decayed.released += purge_pages(inner, seg, stale, &self.huge_page_segments);
                    refile(inner, seg);
                }
            }
            seg = next;
        }
        decayed.holding |= inner.empty > EMPTY_SEGMENTS_KEPT;
        self.released.fetch_add_relaxed(decayed.released);
        decayed
    }

    /// Bytes in free pages of normal segments: (may hold data, given back
    /// to the OS or never touched).
    pub(crate) fn free_page_bytes(&self) -> (usize, usize) {
        let _guard = self.lock.lock();
        // SAFETY: the lock is held.
        let inner = unsafe { &*self.inner.get() };
        let (mut dirty, mut clean) = (0, 0);
        let mut seg = inner.segments.head;
        while !seg.is_null() {
            // SAFETY: listed segments are mapped and ours; the lock guards them.
            let (next, free, dirty_pages) =
                unsafe { (List::<Segment>::next(seg), (*seg).free_pages, (*seg).dirty_pages) };
            dirty += (free & dirty_pages).count_ones() as usize * PAGE_SIZE;
            clean += (free & !dirty_pages).count_ones() as usize * PAGE_SIZE;
            seg = next;
        }
        (dirty, clean)
    }

    /// Bytes mapped for segments, normal and huge.
    pub(crate) fn mapped_bytes(&self) -> usize {
        self.mapped.load_relaxed()
    }

    /// Whether this thread holds the heap's lock.
    pub(crate) fn held_here(&self) -> bool {
        self.lock.held_here()
    }

    /// Takes the heap's lock for `fork`, unless this thread holds it already;
    /// true if it took it.
    pub(crate) fn lock_for_fork(&self) -> bool {
        self.lock.lock_for_fork()
    }

    /// Releases the lock taken by [`lock_for_fork`](Self::lock_for_fork).
    ///
    /// # Safety
    /// This thread took it with `lock_for_fork`, which returned true.
    pub(crate) unsafe fn unlock_after_fork(&self) {
        // SAFETY: forwarded from the caller.
        unsafe { self.lock.unlock_after_fork() };
    }
}

/// `madvise`s away the pages of `seg` set in `pages` (free pages, page heap
/// lock held), a run at a time; returns their bytes. A segment on huge
/// pages goes back to small ones first (else `khugepaged` would fill the
/// holes again, a huge page at a time), and its never-used free pages go
/// too: its huge pages made them resident.
///
/// # Safety
/// The page heap lock is held; `seg` is listed and filed as it says.
unsafe fn purge_pages(
    inner: &mut PageHeapInner,
    seg: *mut Segment,
    pages: u64,
    huge_page_segments: &AtomicUsize,
) -> usize {
    let bytes = pages.count_ones() as usize * PAGE_SIZE;
    let mut purged = pages;
    // SAFETY: the caller's segment; the lock guards these fields.
    if pages != 0 && unsafe { (*seg).huge_pages } {
        // SAFETY: as above; filed nowhere while it changes pools, and the
        // advice moves no data.
        unsafe {
            file(inner, seg, RunClasses { free: 0, dirty: 0 });
            (*seg).huge_pages = false;
            os::advise_huge_pages(seg.cast(), SEGMENT_SIZE, false);
            purged |= (*seg).free_pages & !(*seg).dirty_pages & ALL_USABLE;
        }
        huge_page_segments.fetch_sub_relaxed(1);
    }
    while purged != 0 {
        let head = purged.trailing_zeros() as usize;
        let run = (!(purged >> head)).trailing_zeros() as usize;
        // SAFETY: free pages of a segment of ours: no span, no data anyone uses.
        unsafe { os::purge(Segment::page_start(seg, head) as *mut u8, run * PAGE_SIZE) };
        purged &= !(run_mask(run) << head);
    }
    bytes
}

/// First page of a run of `pages` free pages in `free`, if any: bit `i`
/// of `heads` stays set while pages `i..=i + k` are all free, so a full
/// segment costs one test and a fit `pages` shifts, not a scan of every
/// position.
fn find_run(free: u64, pages: usize) -> Option<usize> {
    let free = free & ALL_USABLE;
    if (free.count_ones() as usize) < pages {
        return None;
    }
    let mut heads = free;
    for k in 1..pages {
        heads &= free >> k;
    }
    (heads != 0).then(|| heads.trailing_zeros() as usize)
}

/// # Safety
/// The page heap lock is held and pages `head..head + pages` of `seg` are free.
unsafe fn claim(inner: &mut PageHeapInner, seg: *mut Segment, head: usize, pages: usize, class: u8) -> NewSpan {
    // SAFETY: the caller holds the lock and owns these pages now.
    let s = unsafe { &mut *seg };
    if s.free_pages == ALL_USABLE {
        inner.empty -= 1;
    }
    let run = run_mask(pages) << head;
    s.free_pages &= !run;
    s.aged_pages &= !run;
    s.aged_empty = false;
    let zeroed = s.dirty_pages & run == 0;
    s.dirty_pages |= run;
    for page in head..head + pages {
        s.page_head[page] = head as u8;
    }
    let span = &mut s.spans[head];
    span.class = class;
    span.pages = pages as u8;
    for page in head..head + pages {
        let tail = if page != head && class != PAGE_MEDIUM { TAIL_PAGE } else { 0 };
        s.page_class[page].store_release(class | tail);
    }
    NewSpan { seg, head, zeroed }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first run by a plain scan of every position.
    fn scan(free: u64, pages: usize) -> Option<usize> {
        (1..=PAGES - pages).find(|&head| (free >> head) & run_mask(pages) == run_mask(pages))
    }

    /// A segment of a test's heap as the heap's lock saw it.
    #[derive(Clone, Copy)]
    struct Seen {
        seg: *mut Segment,
        free: u64,
        dirty: u64,
        filed: RunClasses,
        pool: Pool,
    }

    impl Seen {
        fn classes(&self) -> RunClasses {
            RunClasses { free: run_class(self.free), dirty: run_class(self.free & self.dirty) }
        }
    }

    /// Every segment of `heap`.
    fn segments_of(heap: &PageHeap) -> Vec<Seen> {
        let _guard = heap.lock.lock();
        // SAFETY: the lock is held; listed segments are mapped.
        unsafe {
            let inner = &*heap.inner.get();
            let (mut out, mut seg) = (Vec::new(), inner.segments.head);
            while !seg.is_null() {
                out.push(Seen {
                    seg,
                    free: (*seg).free_pages & ALL_USABLE,
                    dirty: (*seg).dirty_pages,
                    filed: (*seg).filed,
                    pool: (*seg).pool(),
                });
                seg = List::<Segment>::next(seg);
            }
            out
        }
    }

    /// Files every segment of `heap` at its runs' classes.
    fn refile_all(heap: &PageHeap) {
        let _guard = heap.lock.lock();
        // SAFETY: the lock is held; listed segments are mapped, filed as they say.
        unsafe {
            let inner = &mut *heap.inner.get();
            let mut seg = inner.segments.head;
            while !seg.is_null() {
                refile(inner, seg);
                seg = List::<Segment>::next(seg);
            }
        }
    }

    /// Checks that `index` lists exactly the segments it files (`filed_of`)
    /// at a class other than zero, each under that class, which is at
    /// least its run's, and that `occupied` says which lists have any.
    fn check_index<Via>(index: &RunIndex<Via>, segments: &[Seen], filed_of: fn(RunClasses) -> u8)
    where
        Segment: Linked<Via>,
    {
        let mut listed = 0;
        for (class, list) in index.by_class.iter().enumerate() {
            assert_eq!(index.occupied >> class & 1 == 1, !list.head.is_null(), "occupied bit {class}");
            let mut seg = list.head;
            while !seg.is_null() {
                let seen = segments.iter().find(|seen| seen.seg == seg).expect("an indexed segment is listed");
                assert_eq!(filed_of(seen.filed) as usize, class, "on the list its `filed` names");
                assert!(filed_of(seen.filed) >= filed_of(seen.classes()), "filed at or above its run's class");
                listed += 1;
                // SAFETY: the test's heap is idle; indexed segments are mapped.
                seg = unsafe { List::<Segment, Via>::next(seg) };
            }
        }
        assert_eq!(listed, segments.iter().filter(|seen| filed_of(seen.filed) != 0).count());
    }

    /// Checks both indexes of both pools against `segments`.
    fn check_pools(inner: &PageHeapInner, segments: &[Seen]) {
        for pool in [Pool::SmallPages, Pool::HugePages] {
            let in_pool: Vec<Seen> = segments.iter().copied().filter(|seen| seen.pool == pool).collect();
            check_index(&inner.free_runs[pool as usize], &in_pool, |runs| runs.free);
            check_index(&inner.dirty_runs[pool as usize], &in_pool, |runs| runs.dirty);
        }
    }

    #[test]
    fn claims_take_the_run_their_kind_wants_and_the_index_follows_every_change() {
        // One pool, which a best fit searches whole; the pools are the next test's.
        let heap = PageHeap::new();
        heap.use_huge_pages(false);
        let mut live: Vec<(*mut Segment, usize, usize, bool)> = Vec::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for step in 0..8000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if live.is_empty() || x % 5 < 3 {
                let pages =
                    if x >> 40 & 15 == 0 { 1 + (x >> 20) as usize % MOST_CLAIMED } else { 1 + (x >> 20) as usize % 6 };
                let medium = x >> 50 & 3 == 0;
                // Half the claims find every segment filed at its runs
                // (claims and growths leave them filed above).
                let exact = x >> 53 & 1 == 0;
                if exact {
                    refile_all(&heap);
                }
                let before = segments_of(&heap);
                let span = heap.alloc_span(pages, if medium { PAGE_MEDIUM } else { 1 }).expect("memory");
                let searched = |seen: &Seen, dirty: bool| if dirty { seen.free & seen.dirty } else { seen.free };
                let dirty_room = before.iter().any(|seen| find_run(searched(seen, true), pages).is_some());
                let room = before.iter().any(|seen| find_run(seen.free, pages).is_some());
                let Some(seen) = before.iter().find(|seen| seen.seg == span.seg) else {
                    assert!(!room, "step {step}: a fresh segment while one had room");
                    live.push((span.seg, span.head, pages, medium));
                    continue;
                };
                let taken = searched(seen, dirty_room);
                let run = run_mask(pages) << span.head;
                assert_eq!(taken & run, run, "step {step}: free pages, dirty ones first");
                if medium {
                    assert_eq!(span.head, longest_run_at(taken).1, "step {step}: at the longest run's start");
                }
                // With every segment filed at its runs' classes, the pick is
                // the lowest class that fits, for a medium span the highest.
                if exact {
                    assert!(before.iter().all(|seen| seen.filed == seen.classes()));
                    let class_of_seen = |seen: &Seen| run_class(searched(seen, dirty_room)) as usize;
                    let fitting = before.iter().map(class_of_seen).filter(|&class| class >= pages);
                    let best = if medium { fitting.max() } else { fitting.min() };
                    assert_eq!(Some(class_of_seen(seen)), best, "step {step}: the class its kind wants");
                }
                live.push((span.seg, span.head, pages, medium));
            } else if x % 5 == 3 && x >> 30 & 1 == 0 {
                // A medium-sized growth in place, where the pages after a span are free.
                let i = (x >> 24) as usize % live.len();
                let (seg, head, pages, medium) = live[i];
                let most = (pages * 2).min(MOST_CLAIMED);
                // SAFETY: a live span of this heap's; growing claims only free pages after it.
                let grown =
                    medium && pages < MOST_CLAIMED && unsafe { heap.grow_span(seg, head, pages, pages + 1, most) };
                if grown {
                    // SAFETY: the test's heap is idle.
                    live[i].2 = unsafe { (*seg).spans[head].pages } as usize;
                }
            } else {
                let (seg, head, pages, _) = live.swap_remove((x >> 24) as usize % live.len());
                // SAFETY: a span of this heap's, given back once.
                unsafe { heap.free_span(seg, head, pages) };
            }
            if step % 500 == 499 {
                heap.purge();
            }
            let segments = segments_of(&heap);
            // SAFETY: the test's heap is idle.
            let inner = unsafe { &*heap.inner.get() };
            check_pools(inner, &segments);
        }
        for (seg, head, pages, _) in live.drain(..) {
            // SAFETY: as above.
            unsafe { heap.free_span(seg, head, pages) };
        }
        heap.purge();
        // SAFETY: the test's heap is idle.
        let inner = unsafe { &*heap.inner.get() };
        assert!(inner.segments.head.is_null(), "every segment unmapped");
        assert_eq!((inner.free_runs[0].occupied, inner.dirty_runs[0].occupied), (0, 0));
    }

    #[test]
    fn only_spans_that_fill_their_pages_go_to_segments_on_huge_pages() {
        let heap = PageHeap::new();
        let dense = 1;
        let sparse = crate::size_class::smallest_class_at_least(16 << 10);
        assert!(fills_its_pages(dense) && !fills_its_pages(sparse) && !fills_its_pages(PAGE_MEDIUM));
        let mut spans = Vec::new();
        // The first segments, small pages only, filled with dense spans.
        while segments_of(&heap).len() < HUGE_PAGES_FROM || segments_of(&heap).iter().any(|seen| seen.free != 0) {
            spans.push((heap.alloc_span(1, dense).expect("memory"), 1));
        }
        assert_eq!(heap.huge_page_segments(), 0);
        assert!(segments_of(&heap).iter().all(|seen| seen.pool == Pool::SmallPages));
        // The next dense span maps a segment on huge pages.
        let first = heap.alloc_span(1, dense).expect("memory");
        // SAFETY: the test's heap is idle; its segments are mapped.
        assert!(unsafe { (*first.seg).huge_pages });
        assert_eq!(heap.huge_page_segments(), 1);
        // Medium and sparse spans keep out of it, though it has room; dense
        // ones fill it.
        let medium = heap.alloc_span(4, PAGE_MEDIUM).expect("memory");
        let big_objects = heap.alloc_span(2, sparse).expect("memory");
        let next_dense = heap.alloc_span(1, dense).expect("memory");
        assert_ne!(medium.seg, first.seg);
        assert_eq!(medium.seg, big_objects.seg, "a small-pages segment with room");
        // SAFETY: as above.
        assert!(!unsafe { (*medium.seg).huge_pages });
        assert_eq!(next_dense.seg, first.seg);
        // A purge of its free pages takes it back to small pages, for good,
        // and to the pool every span may come from.
        // SAFETY: spans of this heap's, given back once.
        unsafe { heap.free_span(next_dense.seg, next_dense.head, 1) };
        heap.purge();
        // SAFETY: as above.
        assert!(!unsafe { (*first.seg).huge_pages });
        assert_eq!(heap.huge_page_segments(), 0);
        let segments = segments_of(&heap);
        let purged = segments.iter().find(|seen| seen.seg == first.seg).expect("still mapped");
        assert!(purged.pool == Pool::SmallPages && purged.filed.free != 0);
        // SAFETY: the test's heap is idle.
        check_pools(unsafe { &*heap.inner.get() }, &segments);
        spans.extend([(first, 1), (medium, 4), (big_objects, 2)]);
        for (span, pages) in spans {
            // SAFETY: as above.
            unsafe { heap.free_span(span.seg, span.head, pages) };
        }
        heap.purge();
        assert!(segments_of(&heap).is_empty());
    }

    #[test]
    fn run_lengths_and_classes_measure_as_a_scan_does() {
        let scan = |bits: u64| {
            (0..=64)
                .rev()
                .find(|&n| {
                    (0..=64 - n).any(|at| n == 0 || (bits >> at) & (u64::MAX >> (64 - n)) == u64::MAX >> (64 - n))
                })
                .unwrap()
        };
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            for bits in [x, x & x.rotate_left(9), !(x & x.rotate_left(21)), x | x >> 3] {
                let (length, at) = longest_run_at(bits);
                assert_eq!(length as usize, scan(bits), "{bits:#x}");
                let class = match length as usize {
                    0..=MOST_CLAIMED => length as usize,
                    17..=31 => LONG_RUN,
                    _ => LONGEST_RUN,
                };
                assert_eq!(run_class(bits) as usize, class, "{bits:#x}");
                assert_eq!(class_of_run(length) as usize, class, "{bits:#x}");
                let run_at =
                    |at: usize| length == 0 || (bits >> at) & run_mask(length as usize) == run_mask(length as usize);
                assert!(
                    at < 64 - length as usize + 1 && run_at(at) && !(0..at).any(run_at),
                    "{bits:#x}: the first longest run"
                );
            }
        }
        assert_eq!(longest_run_at(0), (0, 64));
        assert_eq!(longest_run_at(ALL_USABLE), (63, 1));
        assert_eq!((run_class(0), run_class(0b110), run_class(ALL_USABLE)), (0, 2, LONGEST_RUN as u8));
    }

    #[test]
    fn find_run_finds_the_first_fit_as_a_scan_does() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Runs of every length: clear random bits of an all-free word.
            let free = !(x & x.rotate_left(21)) | (x >> 60);
            for pages in 1..PAGES {
                assert_eq!(find_run(free, pages), scan(free, pages), "free {free:#x}, {pages} pages");
            }
        }
        assert_eq!(find_run(ALL_USABLE, 63), Some(1));
        assert_eq!(find_run(0, 1), None);
        assert_eq!(find_run(1, 1), None, "page 0 is the header's");
    }
}
