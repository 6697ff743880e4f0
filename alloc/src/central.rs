//! The central lists: per size class, the spans that have free objects, and
//! the batch transfers between them and the per-CPU caches.
//!
//! Every object given back is checked here, on the slow path, before it
//! touches any metadata: its segment must be ours, its page must belong to a
//! span of the class it is returned to, it must start an object, and it must
//! not already be free. A failure aborts with the pointer named
//! ([`report`]), rather than corrupting the heap. The one other thing a
//! cache of a class from [`PROMOTE_MEDIUM_FROM`] on may give back is a
//! medium span that `realloc` grew from a small block and Rust's `dealloc`
//! freed by its small layout: it goes back to the page heap from here.
//!
//! Invariant, per span `s` of class `c` (the list lock of `c` held), with
//! `free` its bitmap in the segment header ([`free_bits`]):
//! `s.used + popcount(free) + (s.objects - s.bump) == s.objects`, and `s`
//! is on the list iff it has a free object (`popcount(free) > 0` or
//! `s.bump < s.objects`); the bitmap of a span the page heap holds is all
//! zeros.

use core::ptr::null_mut;

use crate::geometry::{MAX_OBJECTS, PROMOTE_MEDIUM_FROM};
use crate::list::{Links, List};
use crate::lock::Lock;
use crate::report::{self, Call};
use crate::segment::{self, NewSpan, PAGE_HEAP, PAGE_MEDIUM, PAGE_SIZE, Segment, Span};
use crate::size_class::{CLASSES, ObjectIndex, SIZES, SPAN_PAGES, object_index, objects_per_span};
use crate::sync::{AtomicOps, AtomicU32, AtomicU64, AtomicUsize};

/// One class's list, on a cache line of its own (64 bytes, not
/// `CachePadded`'s 128: the lists of the classes a small program uses then
/// share one page of `.bss` fewer; their locks are slow-path locks).
#[repr(C, align(64))]
struct ClassList {
    lock: Lock,
    inner: core::cell::UnsafeCell<ListInner>,
    /// Objects moved to per-CPU caches and back (statistics), on the list's
    /// own cache line: a page of counters beside the lists would be one
    /// more page resident in every process.
    taken: AtomicU64,
    /// See `taken`.
    given: AtomicU64,
}

struct ListInner {
    /// Spans with free objects. Refills draw from the head: a span that
    /// gets its first free object back (the fullest kind) goes to the front,
    /// and one that falls below a quarter used goes to the back, so that
    /// fuller spans are filled first and emptying ones get the chance to
    /// empty completely and go back to the page heap (less fragmentation).
    spans: List<Span>,
    /// One span with every object free, kept so a class that empties and
    /// refills a span does not round-trip it through the page heap.
    spare: *mut Span,
    /// The spare has sat unused since the last upkeep.
    spare_aged: bool,
}

// SAFETY: `inner` and the spans it reaches are only touched with `lock` held.
unsafe impl Sync for ClassList {}

impl ClassList {
    /// Whether any object ever came back to this list. Only `give` sets a
    /// spare, and it counts the objects before it unlocks, so a list for
    /// which this is false has no spare to age or release (a `give` that
    /// races the check is one that came after it). Upkeep and trims skip
    /// such lists without taking their locks: a lock taken is a line
    /// written, and the lists of the classes a program never used would
    /// otherwise be pages it keeps resident for nothing.
    fn ever_given(&self) -> bool {
        self.given.load_relaxed() != 0
    }
}

/// All central lists.
#[repr(C)]
pub(crate) struct Central {
    /// Per class, the objects of the spans its list owns (spares included),
    /// written with its lock held as spans come and go: with what the list
    /// handed out and took back, the free objects it holds, and no line
    /// that every transfer of every class writes. First, on the page of
    /// the first lists: after the last one, it kept a page of its own
    /// resident in every program.
    owned: [AtomicUsize; CLASSES + 1],
    lists: [ClassList; CLASSES + 1],
}

/// The process's central lists.
pub(crate) static CENTRAL: Central = Central {
    owned: [const { AtomicUsize::new(0) }; CLASSES + 1],
    lists: [const {
        ClassList {
            lock: Lock::new(),
            inner: core::cell::UnsafeCell::new(ListInner { spans: List::new(), spare: null_mut(), spare_aged: false }),
            taken: AtomicU64::new(0),
            given: AtomicU64::new(0),
        }
    }; CLASSES + 1],
};

/// The segment holding `span`, and the index of its head page there.
fn span_place(span: *mut Span) -> (*mut Segment, usize) {
    let seg = Segment::containing(span as usize);
    // SAFETY: every `Span` the lists handle is an element of its segment's
    // `spans` array, which is in the same segment header.
    let head = unsafe { span.offset_from((*seg).spans.as_ptr()) } as usize;
    (seg, head)
}

/// A span's bitmap of free objects.
type Bitmap = [u64; MAX_OBJECTS / 64];

/// The bitmap of `span`'s free objects (see `Segment::free_objects`).
///
/// # Safety
/// `span` is an element of its segment's `spans` array, and the caller
/// holds what guards it (its class's list lock, or it is ours alone).
unsafe fn free_bits<'a>(span: *mut Span) -> &'a mut Bitmap {
    let (seg, head) = span_place(span);
    // SAFETY: `head < PAGES` indexes the segment's bitmaps; the one at the
    // span's index is guarded by the same lock as the span, which the
    // caller holds.
    unsafe { &mut *(&raw mut (*seg).free_objects).cast::<Bitmap>().add(head) }
}

/// Address of a span's first object.
fn span_start(span: *mut Span) -> usize {
    let (seg, head) = span_place(span);
    Segment::page_start(seg, head)
}

/// What fresh spans are filled with before their first object is handed
/// out: 0 for nothing, else `FILL_SET | byte` ([`Central::fill_fresh_spans_with`]).
static FRESH_FILL: AtomicU32 = AtomicU32::new(0);
const FILL_SET: u32 = 0x100;

fn fresh_fill() -> Option<u8> {
    let fill = FRESH_FILL.load_relaxed();
    (fill & FILL_SET != 0).then_some(fill as u8)
}

impl Central {
    /// Fills every span carved from now on with `byte` (hardened mode's
    /// poison, set before its first block is handed out).
    pub(crate) fn fill_fresh_spans_with(&self, byte: u8) {
        FRESH_FILL.store_relaxed(FILL_SET | u32::from(byte));
    }

    /// Objects of `class` taken from and given back to its list so far.
    pub(crate) fn transfers(&self, class: usize) -> (u64, u64) {
        let list = &self.lists[class];
        (list.taken.load_relaxed(), list.given.load_relaxed())
    }

    /// Bytes of free objects in the spans the lists own, spares included (a
    /// racy sum: a transfer under way may be counted on one side only).
    pub(crate) fn free_bytes(&self) -> usize {
        (1..=CLASSES)
            .map(|class| {
                let (taken, given) = self.transfers(class);
                let free = (self.owned[class].load_relaxed() as u64 + given).saturating_sub(taken);
                free as usize * SIZES[class] as usize
            })
            .sum()
    }

    /// Adds `objects` to what `class`'s list owns (with its lock held).
    fn own(&self, class: usize, objects: usize) {
        self.owned[class].store_relaxed(self.owned[class].load_relaxed().wrapping_add(objects));
    }

    /// Puts up to `spans` fresh spans of `class` (at most
    /// [`FRESH_SPANS_MAX`]) at the front of its list, taken from the page
    /// heap in one trip; returns how many (0 only when the OS refuses memory).
    fn list_new_spans(&self, inner: &mut ListInner, class: usize, spans: usize) -> usize {
        let mut fresh = [NewSpan::NONE; FRESH_SPANS_MAX];
        let fresh = &mut fresh[..spans.clamp(1, FRESH_SPANS_MAX)];
        let got = PAGE_HEAP.alloc_spans(SPAN_PAGES[class] as usize, class as u8, fresh);
        for &new in &fresh[..got] {
            // SAFETY: the page heap just gave this span out for `class`.
            let span = unsafe { init_span(new, class) };
            self.own(class, objects_per_span(class));
            // SAFETY: a span of this class with free objects, not listed;
            // the caller holds the list's lock.
            unsafe { push_front(inner, span) };
        }
        got
    }

    /// Fills `out` with up to `out.len()` objects of `class`, for the cache
    /// of `cpu` (if known); returns how many (0 only when the OS refuses
    /// memory).
    ///
    /// Objects given back before come first, from the fullest spans on
    /// (their memory is warm), and if they make a quarter of `out` or more,
    /// the refill stops there: topping it up with fresh objects while freed
    /// ones come back only grows what circulates (a producer refilled from a
    /// consumer's smaller drains would carve fresh objects at every
    /// refill). With fewer, fresh objects fill the rest, carved from a span
    /// that no other CPU carves: threads that start together on different
    /// CPUs would otherwise get the next objects of one span each, on the
    /// same pages, where the hardware's prefetches of one thread's lines
    /// take the other's away from its core (false sharing without a shared
    /// line).
    pub(crate) fn take(&self, class: usize, out: &mut [usize], cpu: Option<u32>) -> usize {
        let list = &self.lists[class];
        let _guard = list.lock.lock();
        // SAFETY: the lock is held.
        let inner = unsafe { &mut *list.inner.get() };
        let size = SIZES[class] as usize;
        let carver = cpu.map_or(0, |cpu| (cpu as u16).wrapping_add(1));
        let mut n = 0;
        let mut span = inner.spans.head;
        while !span.is_null() && n < out.len() {
            // SAFETY: listed spans belong to this class and the lock is held.
            let next = unsafe { List::next(span) };
            // SAFETY: as above.
            n += unsafe { take_given_back(inner, span, size, &mut out[n..]) };
            span = next;
        }
        let fresh_too = n < out.len().div_ceil(4);
        while fresh_too && n < out.len() {
            if inner.spans.head.is_null() {
                if inner.spare.is_null() {
                    let spans = (out.len() - n).div_ceil(objects_per_span(class));
                    if self.list_new_spans(inner, class, spans) == 0 {
                        break;
                    }
                } else {
                    let spare = core::mem::replace(&mut inner.spare, null_mut());
                    // SAFETY: a span of this class with free objects, not listed.
                    unsafe { push_front(inner, spare) };
                }
            }
            let span = inner.spans.head;
            // SAFETY: listed spans belong to this class and the lock is held;
            // a spare's or a fresh span's objects are all free.
            n += unsafe { take_given_back(inner, span, size, &mut out[n..]) };
            if n == out.len() || !core::ptr::eq(inner.spans.head, span) {
                continue;
            }
            // SAFETY: as above.
            if !unsafe { self.carve_here(inner, class, carver) } {
                continue;
            }
            // SAFETY: as above.
            let s = unsafe { &mut *span };
            if carver != 0 {
                s.carver = carver;
            }
            // Carved in one pass, the span's counts settled once after it
            // (updated per object, they made a chain of stores and loads),
            // in address order: the cache hands objects out in the order of
            // `out`, and a program that writes its blocks in the order it
            // got them then walks memory upwards, the direction the
            // hardware's prefetchers follow best. If the run starts the
            // refill, its last object comes first instead: the refill's
            // first object is the caller's, which a malloc/free loop keeps
            // getting back, and a fresh span's first object is page-aligned
            // in every class, so a loop over many sizes would hold them all
            // in one L1 set, evicting each other. `carve_here` left at
            // least one object to carve, so the run is not empty.
            let carved = (out.len() - n).min((s.objects - s.bump) as usize);
            let first = span_start(span) + s.bump as usize * size;
            let run = &mut out[n..n + carved];
            for (i, slot) in run.iter_mut().enumerate() {
                *slot = first + i * size;
            }
            if n == 0 {
                run.rotate_right(1);
            }
            s.bump += carved as u16;
            s.used += carved as u16;
            n += carved;
            if s.bump == s.objects {
                // SAFETY: `span` is the listed head, with no free object left
                // (`take_given_back` took them all, or `out` would be full).
                unsafe { unlink(inner, span) };
            }
        }
        // Only the lock's holder writes the counts: no atomic addition.
        list.taken.store_relaxed(list.taken.load_relaxed() + n as u64);
        n
    }

    /// Whether the listed head span is one `carver` may carve from: never
    /// carved, or carved last by the same CPU (or by an unknown one). If not,
    /// puts one that is at the front (a listed one, the spare, or a fresh
    /// span) and returns false, so that the caller looks at the new head;
    /// true as well if none could be had (out of memory). The caller has
    /// taken every given-back object it could, so the listed spans are the
    /// ones being carved: about one per CPU that uses the class.
    ///
    /// # Safety
    /// The list lock is held and the list has a head.
    unsafe fn carve_here(&self, inner: &mut ListInner, class: usize, carver: u16) -> bool {
        let suits = |span: *mut Span| {
            // SAFETY: listed spans are ours and the caller holds the lock.
            let s = unsafe { &*span };
            s.bump < s.objects && (s.bump == 0 || s.carver == carver || s.carver == 0 || carver == 0)
        };
        let head = inner.spans.head;
        if suits(head) {
            return true;
        }
        // SAFETY: listed spans are ours and the caller holds the lock.
        let mut span = unsafe { List::next(head) };
        while !span.is_null() {
            if suits(span) {
                // SAFETY: `span` is listed; it moves to the front.
                unsafe {
                    unlink(inner, span);
                    push_front(inner, span);
                }
                return false;
            }
            // SAFETY: as above.
            span = unsafe { List::next(span) };
        }
        if !inner.spare.is_null() {
            let spare = core::mem::replace(&mut inner.spare, null_mut());
            // SAFETY: a span of this class with free objects, not listed.
            unsafe { push_front(inner, spare) };
            return false;
        }
        self.list_new_spans(inner, class, 1) == 0
    }

    /// Whether `object`, an object of a live span of `class`, is free there
    /// (a medium span never is: the list does not keep them).
    pub(crate) fn holds_free(&self, class: usize, object: usize) -> bool {
        let _guard = self.lists[class].lock.lock();
        let Some(span) = span_of(object, class) else { return false };
        // SAFETY: `span_of` checked that the span is a live span of this
        // class, and the lock is held.
        let (s, free) = unsafe { (&*span, free_bits(span)) };
        object_index(class, object - span_start(span))
            .filter(|&i| i < s.bump as usize)
            .is_some_and(|i| free[i / 64] & (1 << (i % 64)) != 0)
    }

    /// Takes back `objects` of `class`, aborting on any that is not a live
    /// object of that class.
    ///
    /// Objects of one span tend to come back together (a drain returns
    /// what was allocated together): the span is looked up and checked once
    /// per run of its objects, and its count and place on the list are
    /// settled once per run.
    pub(crate) fn give(&self, class: usize, objects: &[usize]) {
        let list = &self.lists[class];
        let _guard = list.lock.lock();
        // SAFETY: the lock is held.
        let inner = unsafe { &mut *list.inner.get() };
        let mut medium = 0;
        let mut freed = SpansToFree::new();
        let index_of = ObjectIndex::of(class);
        // Strides are looked for only in a batch that starts with one: the
        // objects of any other are checked one by one without looking.
        let strided = objects.len() > 2 && {
            let step = objects[1].wrapping_sub(objects[0]);
            (step == SIZES[class] as usize || step.wrapping_neg() == SIZES[class] as usize)
                && objects[2].wrapping_sub(objects[1]) == step
        };
        let mut rest = objects;
        while let Some(&object) = rest.first() {
            let Some(span) = span_of(object, class) else {
                let (seg, head) = (Segment::containing(object), Segment::page_index(object));
                // SAFETY: `span_of` found a live medium span starting at
                // `object`, which the caller gives up; the segment is ours.
                unsafe { freed.push(seg, head, (*seg).spans[head].pages as usize) };
                medium += 1;
                rest = &rest[1..];
                continue;
            };
            // This object and the ones after it in the same span.
            let mut run = Run::of(span);
            // SAFETY: `span_of` checked that the span is a live span of this
            // class, and the lock is held.
            let (bump, free) = unsafe { ((*span).bump as usize, free_bits(span)) };
            let (size, start, bytes) = (SIZES[class] as usize, run.start, run.bytes);
            let mut groups = WordGroups::NONE;
            let mut in_span = 0;
            if strided {
                // A batch drained from a cache that a program filled in
                // address order (a working set freed as it was allocated,
                // or in reverse) is made of strides: their bits are set a
                // word at a time, each object only compared with the one
                // before it.
                while let Some(&object) = rest.get(in_span) {
                    let offset = object.wrapping_sub(start);
                    if offset >= bytes {
                        break;
                    }
                    let index = index_of.get(offset).filter(|&i| i < bump);
                    let Some(index) = index else { report::invalid_pointer(Call::Free, object) };
                    if let Some((lowest, len)) = stride_from(&rest[in_span..], size, index, bump) {
                        groups.settle(free, rest, in_span, (class, start));
                        set_stride(free, lowest, len, size, start);
                        run.first_word = run.first_word.min((lowest / 64) as u8);
                        in_span += len;
                    } else {
                        groups.add(free, index, rest, in_span, (class, start), &mut run.first_word);
                        in_span += 1;
                    }
                }
            } else {
                for &object in rest {
                    let offset = object.wrapping_sub(start);
                    if offset >= bytes {
                        break;
                    }
                    let index = index_of.get(offset).filter(|&i| i < bump);
                    let Some(index) = index else { report::invalid_pointer(Call::Free, object) };
                    groups.add(free, index, rest, in_span, (class, start), &mut run.first_word);
                    in_span += 1;
                }
            }
            groups.settle(free, rest, in_span, (class, start));
            run.returned = in_span as u16;
            rest = &rest[in_span..];
            // SAFETY: the lock is held; `run` is a span of this class.
            unsafe { settle(inner, run, &mut freed) };
        }
        freed.flush();
        list.given.store_relaxed(list.given.load_relaxed() + (objects.len() - medium) as u64);
    }

    /// Upkeep: gives back the spare spans that sat unused for a whole
    /// period, and marks the others; true if a spare is left.
    pub(crate) fn age_spares(&self) -> bool {
        let mut left = false;
        for list in self.lists[1..].iter().filter(|l| l.ever_given()) {
            let _guard = list.lock.lock();
            // SAFETY: the lock is held.
            let inner = unsafe { &mut *list.inner.get() };
            if inner.spare.is_null() {
                continue;
            }
            if inner.spare_aged {
                let spare = core::mem::replace(&mut inner.spare, null_mut());
                // SAFETY: the spare holds no live object and is on no list;
                // the lock is held.
                unsafe { free_whole_span(spare) };
            } else {
                inner.spare_aged = true;
                left = true;
            }
        }
        left
    }

    /// Gives every class's spare span back to the page heap (for trimming);
    /// returns the bytes of free objects that left the lists.
    pub(crate) fn release_spares(&self) -> usize {
        let mut released = 0;
        for list in self.lists[1..].iter().filter(|l| l.ever_given()) {
            let _guard = list.lock.lock();
            // SAFETY: the lock is held.
            let inner = unsafe { &mut *list.inner.get() };
            let spare = core::mem::replace(&mut inner.spare, null_mut());
            if !spare.is_null() {
                // SAFETY: the spare holds no live object and is on no list;
                // the lock is held.
                released += unsafe { free_whole_span(spare) };
            }
        }
        released
    }

    /// Takes every list lock this thread does not already hold, in class
    /// order (before `fork`); bit `c` of the result says whether it took class `c`'s.
    pub(crate) fn lock_all_for_fork(&self) -> u128 {
        let mut taken = 0u128;
        for (class, list) in self.lists.iter().enumerate() {
            if list.lock.lock_for_fork() {
                taken |= 1 << class;
            }
        }
        taken
    }

    /// Whether this thread holds any list's lock.
    pub(crate) fn any_held_here(&self) -> bool {
        self.lists.iter().any(|list| list.lock.held_here())
    }

    /// Releases the locks [`lock_all_for_fork`](Self::lock_all_for_fork) took.
    ///
    /// # Safety
    /// `taken` is what `lock_all_for_fork` returned on this thread.
    pub(crate) unsafe fn unlock_all_after_fork(&self, taken: u128) {
        for (class, list) in self.lists.iter().enumerate() {
            if taken & (1 << class) != 0 {
                // SAFETY: this thread took it in `lock_all_for_fork`.
                unsafe { list.lock.unlock_after_fork() };
            }
        }
    }
}

/// A span some of whose objects a `give` has taken back.
#[derive(Clone, Copy)]
struct Run {
    span: *mut Span,
    /// The span's first byte, and its length in bytes (0: no span).
    start: usize,
    bytes: usize,
    /// Objects taken back, not yet counted in the span.
    returned: u16,
    /// The lowest bitmap word they set.
    first_word: u8,
}

impl Run {
    const NONE: Run = Run { span: null_mut(), start: 0, bytes: 0, returned: 0, first_word: u8::MAX };

    fn of(span: *mut Span) -> Run {
        // SAFETY: `span_of` returned a live span of ours.
        let pages = unsafe { (*span).pages } as usize;
        Run { span, start: span_start(span), bytes: pages * PAGE_SIZE, ..Run::NONE }
    }
}

/// The bitmap words that a run of objects given back sets: objects that
/// come back together mostly share words, so a word is read, checked and
/// written once per group of them, not once per object (a chain of stores
/// and loads of one word, and a test and branch per object). A group sets
/// `set`, one bit per object, which overlaps the word's free bits or counts
/// fewer bits than objects only if one of them is free already.
struct WordGroups {
    /// The group's word (`usize::MAX`: no group).
    word: usize,
    set: u64,
    /// Where the group's objects start in the run.
    first: usize,
}

impl WordGroups {
    const NONE: WordGroups = WordGroups { word: usize::MAX, set: 0, first: 0 };

    /// Adds the object of `index`, `run[at]` (a run of a span of `class`
    /// at `start`), settling the group before it if it is another word's;
    /// lowers `first_word` to a new group's word.
    #[inline(always)]
    fn add(
        &mut self,
        free: &mut Bitmap,
        index: usize,
        run: &[usize],
        at: usize,
        span: (usize, usize),
        first_word: &mut u8,
    ) {
        if index / 64 != self.word {
            self.settle(free, run, at, span);
            (self.word, self.first) = (index / 64, at);
            *first_word = (*first_word).min(self.word as u8);
        }
        self.set |= 1u64 << (index % 64);
    }

    /// Writes the group's bits, those of the objects of `run` before `end`
    /// from its first (see [`settle_word`]; `span` is the class and the
    /// span's start); no group is left.
    #[inline(always)]
    fn settle(&mut self, free: &mut Bitmap, run: &[usize], end: usize, (class, start): (usize, usize)) {
        if self.word != usize::MAX {
            free[self.word] = settle_word(free[self.word], self.set, &run[self.first..end], class, start);
            *self = WordGroups::NONE;
        }
    }
}

/// A bitmap word of free objects (`had`) with the bits `set` by `group`,
/// objects of a span of `class` starting at `start`, one bit each; aborts
/// naming the first of them that is free already (its bit in `had`, or in
/// `group` twice).
#[inline(always)]
fn settle_word(had: u64, set: u64, group: &[usize], class: usize, start: usize) -> u64 {
    if had & set != 0 || set.count_ones() as usize != group.len() {
        report_freed_again(had, group, class, start);
    }
    had | set
}

/// The stride that `objects` starts with, if its second object is the
/// first's neighbour (`index`, of `size` bytes) in its span: the lowest
/// index it covers and how many objects long it is, all below `bump`.
#[inline(always)]
fn stride_from(objects: &[usize], size: usize, index: usize, bump: usize) -> Option<(usize, usize)> {
    let (first, second) = (objects[0], *objects.get(1)?);
    let step = if second == first.wrapping_add(size) {
        size
    } else if second == first.wrapping_sub(size) && index > 0 {
        size.wrapping_neg()
    } else {
        return None;
    };
    let room = if step == size { bump - index } else { index + 1 };
    let mut expected = first;
    let len = 1 + objects[1..room.min(objects.len())]
        .iter()
        .take_while(|&&object| {
            expected = expected.wrapping_add(step);
            object == expected
        })
        .count();
    Some(if step == size { (index, len) } else { (index + 1 - len, len) })
}

/// Sets the free bits of the `len` objects from index `lowest` on (of
/// `size` bytes, in a span starting at `start`), aborting naming the first
/// of them that is free already.
fn set_stride(free: &mut Bitmap, lowest: usize, len: usize, size: usize, start: usize) {
    let end = lowest + len;
    let mut index = lowest;
    while index < end {
        let word = index / 64;
        let (from, to) = (index % 64, (end - word * 64).min(64));
        let mask = (u64::MAX >> (64 - (to - from))) << from;
        let had = free[word];
        if had & mask != 0 {
            report::double_free(Call::Free, start + (word * 64 + (had & mask).trailing_zeros() as usize) * size);
        }
        free[word] = had | mask;
        index = word * 64 + to;
    }
}

#[cold]
#[inline(never)]
fn report_freed_again(mut had: u64, group: &[usize], class: usize, start: usize) -> ! {
    for &object in group {
        let bit = 1u64 << (object_index(class, object - start).unwrap_or(0) % 64);
        if had & bit != 0 {
            report::double_free(Call::Free, object);
        }
        had |= bit;
    }
    unreachable!("a group whose bits overlap holds an object freed twice")
}

/// Counts `run`'s objects back in its span and moves the span on the list:
/// to the front if it was off the list, to the back if it fell to a
/// quarter used, to the spare if it has nothing live left (the spare it
/// replaces goes to `freed`).
///
/// # Safety
/// The list lock is held, and `run` is [`Run::NONE`] or a live span of the list's class.
unsafe fn settle(inner: &mut ListInner, run: Run, freed: &mut SpansToFree) {
    if run.span.is_null() {
        return;
    }
    let span = run.span;
    // SAFETY: the caller holds the lock that guards the span.
    let s = unsafe { &mut *span };
    let before = s.used;
    s.used -= run.returned;
    s.first_free_word = s.first_free_word.min(run.first_word);
    if !s.listed {
        // SAFETY: the span now has a free object and is not listed.
        unsafe { push_front(inner, span) };
    } else if before > s.objects / 4 && s.used <= s.objects / 4 && inner.spans.tail != span {
        // SAFETY: the span is listed; it moves to the back.
        unsafe {
            unlink(inner, span);
            push_back(inner, span);
        }
    }
    if s.used == 0 {
        // SAFETY: the span is listed (just ensured) and entirely free.
        unsafe { retire(inner, span, freed) }
    }
}

/// The span holding `object`, checked to be a live span of `class`, or
/// `None` if `object` starts a medium span and `class` is one whose cache
/// may hold such a span (see the module's documentation); aborts otherwise.
fn span_of(object: usize, class: usize) -> Option<*mut Span> {
    if !crate::segment::is_ours(object) {
        report::invalid_pointer(Call::Free, object);
    }
    let seg = Segment::containing(object);
    let page = Segment::page_index(object);
    // SAFETY: the segment is ours, so its header is mapped.
    let (page_class, head) = unsafe { ((*seg).page_class[page].load_acquire(), (*seg).page_head[page]) };
    if segment::small_class_in(page_class) == Some(class) {
        // SAFETY: as above; `head` is a page index below PAGES.
        return Some(unsafe { (&raw mut (*seg).spans).cast::<Span>().add(head as usize) });
    }
    let medium_start = page_class == PAGE_MEDIUM
        && head as usize == page
        && object == Segment::page_start(seg, page)
        && SIZES[class] as usize >= PROMOTE_MEDIUM_FROM;
    if !medium_start {
        report::invalid_pointer(Call::Free, object);
    }
    None
}

/// Most fresh spans one refill takes from the page heap in one trip: a
/// batch of the classes whose spans hold one object each.
const FRESH_SPANS_MAX: usize = 16;

/// Makes the span `new`, fresh from the page heap, a span of `class` ready to hand
/// out objects (not listed).
///
/// # Safety
/// The page heap just gave `new` out for `class`; nobody else refers to it.
unsafe fn init_span(new: NewSpan, class: usize) -> *mut Span {
    // SAFETY: forwarded from the caller.
    let s = unsafe { &mut (*new.seg).spans[new.head] };
    s.objects = objects_per_span(class) as u16;
    s.bump = 0;
    s.used = 0;
    s.first_free_word = 0;
    s.carver = 0;
    // SAFETY: as above; the page heap hands out spans with clear bitmaps.
    debug_assert!(unsafe { free_bits(s) }.iter().all(|&w| w == 0));
    s.listed = false;
    s.links = Links::NONE;
    debug_assert!(s.objects as usize * SIZES[class] as usize <= s.pages as usize * PAGE_SIZE);
    if let Some(fill) = fresh_fill() {
        let bytes = s.objects as usize * SIZES[class] as usize;
        // SAFETY: the span's pages are ours and hold no live object.
        unsafe { (Segment::page_start(new.seg, new.head) as *mut u8).write_bytes(fill, bytes) };
    }
    s
}

/// Moves up to `out.len()` of the objects `span` has had back (its free
/// bitmap) to `out`, lowest addresses first; returns how many. A span left
/// with no free object, given back or fresh, leaves the list.
///
/// # Safety
/// The list lock is held, `span` is listed on it, and `size` is its class's.
unsafe fn take_given_back(inner: &mut ListInner, span: *mut Span, size: usize, out: &mut [usize]) -> usize {
    // SAFETY: the caller holds the lock that guards the span and its bitmap.
    let (s, free) = unsafe { (&mut *span, free_bits(span)) };
    let start = span_start(span);
    let words = (s.bump as usize).div_ceil(64);
    let mut w = s.first_free_word as usize;
    let mut n = 0;
    while w < words && n < out.len() {
        let (word, taken) = take_from_word(free[w], start + w * 64 * size, size, &mut out[n..]);
        n += taken;
        free[w] = word;
        if word == 0 {
            w += 1;
        }
    }
    s.first_free_word = w.min(words) as u8;
    s.used += n as u16;
    if s.bump == s.objects && w >= words {
        // SAFETY: the caller holds the lock and `span` is listed.
        unsafe { unlink(inner, span) };
    }
    n
}

/// Writes the addresses of the free objects of a bitmap `word` (whose
/// first object is at `first`, objects of `size` bytes) to `out`, lowest
/// first, as many as fit; returns the bits left and how many it wrote.
#[inline(always)]
fn take_from_word(mut word: u64, first: usize, size: usize, out: &mut [usize]) -> (u64, usize) {
    let mut n = 0;
    if word & word >> 1 == 0 {
        // No two neighbours free: one by one.
        while word != 0 && n < out.len() {
            out[n] = first + word.trailing_zeros() as usize * size;
            word &= word - 1;
            n += 1;
        }
        return (word, n);
    }
    while word != 0 && n < out.len() {
        let low = word.trailing_zeros() as usize;
        let object = first + low * size;
        if word >> low & 2 == 0 {
            out[n] = object;
            word &= word - 1;
            n += 1;
            continue;
        }
        // A run of neighbours (objects freed together come back together):
        // their addresses follow one another, no bit search or
        // multiplication per object.
        let len = ((word >> low).trailing_ones() as usize).min(out.len() - n);
        for (k, slot) in out[n..n + len].iter_mut().enumerate() {
            *slot = object + k * size;
        }
        word &= !(u64::MAX >> (64 - len) << low);
        n += len;
    }
    (word, n)
}

/// # Safety
/// The list lock is held and `span` is a span of this class, not listed.
unsafe fn push_front(inner: &mut ListInner, span: *mut Span) {
    // SAFETY: forwarded from the caller; spans are ours.
    unsafe {
        inner.spans.push_front(span);
        (*span).listed = true;
    }
}

/// # Safety
/// As [`push_front`].
unsafe fn push_back(inner: &mut ListInner, span: *mut Span) {
    // SAFETY: forwarded from the caller; spans are ours.
    unsafe {
        inner.spans.push_back(span);
        (*span).listed = true;
    }
}

/// # Safety
/// The list lock is held and `span` is listed.
unsafe fn unlink(inner: &mut ListInner, span: *mut Span) {
    // SAFETY: forwarded from the caller; spans are ours.
    unsafe {
        inner.spans.unlink(span);
        (*span).listed = false;
    }
}

/// A listed span whose every object is free: becomes the class's spare, and
/// the previous spare (if any) goes to `freed`.
///
/// # Safety
/// The list lock is held; `span` is listed with `used == 0`.
unsafe fn retire(inner: &mut ListInner, span: *mut Span, freed: &mut SpansToFree) {
    // SAFETY: forwarded from the caller.
    unsafe { unlink(inner, span) };
    inner.spare_aged = segment::frees_here_are_aged();
    let old = core::mem::replace(&mut inner.spare, span);
    if !old.is_null() {
        // SAFETY: the spare holds no live object and is on no list; the
        // caller holds the lock.
        let (seg, head, pages, _) = unsafe { disown_whole_span(old) };
        // SAFETY: disowned just now: nothing refers to it.
        unsafe { freed.push(seg, head, pages) };
    }
}

/// Gives a span with every object free back to the page heap; returns the
/// bytes of objects it held.
///
/// # Safety
/// As [`disown_whole_span`].
unsafe fn free_whole_span(span: *mut Span) -> usize {
    // SAFETY: forwarded from the caller.
    let (seg, head, pages, bytes) = unsafe { disown_whole_span(span) };
    // SAFETY: disowned just now: nothing refers to it.
    unsafe { PAGE_HEAP.free_span(seg, head, pages) };
    bytes
}

/// Makes a span with every object free fit to go back to the page heap (a
/// clear bitmap, not counted in its list); returns its segment, head page
/// and pages, and the bytes of objects it held.
///
/// # Safety
/// The span holds no live object and is on no list, and its class's list
/// lock is held.
unsafe fn disown_whole_span(span: *mut Span) -> (*mut Segment, usize, usize, usize) {
    let (seg, head) = span_place(span);
    // SAFETY: `span` is a span of ours, not listed (forwarded from the caller).
    let (pages, objects, class, bump) = unsafe { ((*span).pages, (*span).objects, (*span).class, (*span).bump) };
    // The page heap's spans have clear bitmaps: only the words of objects
    // ever handed out can be set (the others stay untouched pages).
    // SAFETY: the span is ours alone now (forwarded from the caller).
    unsafe { free_bits(span)[..(bump as usize).div_ceil(64)].fill(0) };
    CENTRAL.own(class as usize, (objects as usize).wrapping_neg());
    (seg, head, pages as usize, objects as usize * SIZES[class as usize] as usize)
}

/// Spans a `give` hands back to the page heap (spares it replaced, medium
/// spans), freed together: one trip per give, not one per span, for the
/// classes whose spans hold an object or two.
struct SpansToFree {
    spans: [(*mut Segment, usize, usize); SpansToFree::MAX],
    len: usize,
}

impl SpansToFree {
    const MAX: usize = 16;

    fn new() -> SpansToFree {
        SpansToFree { spans: [(null_mut(), 0, 0); Self::MAX], len: 0 }
    }

    /// # Safety
    /// As [`PageHeap::free_span`](segment::PageHeap::free_span).
    unsafe fn push(&mut self, seg: *mut Segment, head: usize, pages: usize) {
        if self.len == Self::MAX {
            self.flush();
        }
        self.spans[self.len] = (seg, head, pages);
        self.len += 1;
    }

    fn flush(&mut self) {
        if self.len != 0 {
            // SAFETY: `push`'s callers gave these spans up.
            unsafe { PAGE_HEAP.free_spans(self.spans[..self.len].iter().copied()) };
            self.len = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sets the bits of `objects` (indices into a span of `size`-byte
    /// objects at `start`) as `give` does: strides a word at a time, the
    /// rest one by one. Returns the bitmap.
    fn give_indices(objects: &[usize], size: usize, bump: usize) -> Bitmap {
        let start = 1 << 20;
        let addresses: Vec<usize> = objects.iter().map(|&i| start + i * size).collect();
        let mut free = [0u64; MAX_OBJECTS / 64];
        let mut at = 0;
        while at < addresses.len() {
            let index = objects[at];
            match stride_from(&addresses[at..], size, index, bump) {
                Some((lowest, len)) => {
                    let covered: Vec<usize> = objects[at..at + len].to_vec();
                    let expected: Vec<usize> = if len > 1 && covered[1] < covered[0] {
                        (lowest..lowest + len).rev().collect()
                    } else {
                        (lowest..lowest + len).collect()
                    };
                    assert_eq!(covered, expected, "a stride covers exactly its objects");
                    set_stride(&mut free, lowest, len, size, start);
                    at += len;
                }
                None => {
                    free[index / 64] |= 1 << (index % 64);
                    at += 1;
                }
            }
        }
        free
    }

    #[test]
    fn strides_set_the_bits_of_their_objects_and_stop_at_the_carved_end() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = |bound: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % bound as u64) as usize
        };
        for _ in 0..2000 {
            let (size, bump) = ([16, 48, 1040][next(3)], 1 + next(MAX_OBJECTS));
            // Distinct indices below `bump`, in runs up, runs down and jumps.
            let mut order: Vec<usize> = (0..bump).collect();
            for i in (1..order.len()).rev() {
                order.swap(i, next(i + 1));
            }
            let mut objects = Vec::new();
            let mut taken = vec![false; bump];
            for &first in order.iter().take(1 + next(8)) {
                let (len, up) = (1 + next(200), next(2) == 0);
                for k in 0..len {
                    let Some(index) = (if up { first.checked_add(k) } else { first.checked_sub(k) }) else { break };
                    if index >= bump || taken[index] {
                        break;
                    }
                    taken[index] = true;
                    objects.push(index);
                }
            }
            let mut expected = [0u64; MAX_OBJECTS / 64];
            for &i in &objects {
                expected[i / 64] |= 1 << (i % 64);
            }
            assert_eq!(give_indices(&objects, size, bump), expected, "size {size}, bump {bump}, objects {objects:?}");
        }
    }

    #[test]
    fn a_stride_ends_at_the_span_edges() {
        // Up to the last carved object, and down to the first.
        let start = 1 << 20;
        let up = [start + 5 * 16, start + 6 * 16, start + 7 * 16, start + 8 * 16];
        assert_eq!(stride_from(&up, 16, 5, 7), Some((5, 2)));
        let down = [start + 2 * 16, start + 16, start, start - 16];
        assert_eq!(stride_from(&down, 16, 2, 100), Some((0, 3)));
        assert_eq!(stride_from(&[start], 16, 0, 100), None);
        assert_eq!(stride_from(&[start, start + 32], 16, 0, 100), None);
    }

    #[test]
    fn a_word_hands_out_its_free_objects_lowest_first_as_many_as_fit() {
        let mut seed = 0x2545_F491_4F6C_DD1Du64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            // Sparse words, dense words, and runs.
            let word = match seed % 4 {
                0 => seed,
                1 => seed & (seed >> 3),
                2 => u64::MAX,
                _ => (u64::MAX >> (seed >> 58)) << ((seed >> 52) % 64),
            };
            let room = (seed >> 40) as usize % 70;
            let (first, size) = (1 << 20, 48);
            let mut out = vec![0usize; room];
            let (left, n) = take_from_word(word, first, size, &mut out);
            let expected: Vec<usize> =
                (0..64).filter(|&b| word >> b & 1 != 0).map(|b| first + b * size).take(room).collect();
            assert_eq!(&out[..n], &expected[..], "word {word:#x}, room {room}");
            let taken = expected.iter().fold(0u64, |bits, &a| bits | 1 << ((a - first) / size));
            assert_eq!(left, word & !taken, "word {word:#x}, room {room}");
        }
    }
}
