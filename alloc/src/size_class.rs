//! Size classes for small objects (up to [`MAX_SMALL`]), computed at compile
//! time.
//!
//! Sizes step by 16 bytes up to 128, then eight steps per doubling, so a
//! request above 128 bytes wastes at most `step / (lower + 1) < 1/8` of its
//! size; one more class sits a step above 1 KiB ([`KIB_AND_HEADER`]). Every size is a multiple of 16, and every object sits at
//! `span_start + i * size` with spans 64 KiB aligned, so an object of a class
//! whose size is a multiple of `align` is aligned to it.
//!
//! A size that is a multiple of 4 KiB would start every object, and every
//! 4 KiB page of every object, at the same offset in a page: all in the
//! same 1/64 of the L1 and L2 sets, which a program touching the first
//! line of many such blocks (a header, or a byte per page) thrashes while
//! the rest of the cache sits idle. Such a size ([`aliases`]) is two
//! classes: one 64 bytes larger, whose objects start one line further on
//! each, for every request aligned to 64 or less, and the size itself for
//! requests aligned to more (a page-aligned buffer), which need it. So the
//! largest class holds `MAX_SMALL + 64` bytes, for requests of up to
//! [`MAX_SMALL`]. The sizes from 20 KiB to 60 KiB keep one class: a line
//! more would take spans of 3 to 4 pages to waste at most an eighth, and
//! spans that long fragment the page heap (one such block mapped a segment
//! more in a program that otherwise fits).
//!
//! Lookup is one load from a 4 KiB table indexed by `(size + 15) / 16`
//! ([`LUT`]); measured against two smaller tables (by 16 B up to 1 KiB, by
//! 128 B above), which cost a compare and a branchy shift on every call.
//!
//! Class 0 is not a class: page-class bytes use it for "no small span here".

pub(crate) use crate::geometry::MAX_SMALL;
use crate::geometry::PAGE_SIZE;

/// How many of the sizes the steps above give [`aliases`].
const ALIASING: usize = {
    let (mut count, mut base) = (0, 128);
    while base < MAX_SMALL {
        let mut k = 1;
        while k <= 8 {
            count += aliases((base + base / 8 * k) as u32) as usize;
            k += 1;
        }
        base *= 2;
    }
    count
};

/// A class one 16-byte step above 1 KiB: a kibibyte and a small header is
/// a common request (sqlite's page cache asks 1032 bytes for each 1 KiB
/// page), which the next step, 1152, would pad by a ninth.
const KIB_AND_HEADER: u32 = 1024 + 16;

/// Number of classes, not counting the unused class 0.
pub(crate) const CLASSES: usize = 8 + 8 * (MAX_SMALL.trailing_zeros() as usize - 7) + ALIASING + 1;

/// Whether `size` is one whose objects would all start at the same offset
/// in a page and that has a class a line larger beside it (see the
/// module's documentation): its own class serves only requests aligned to
/// more than 64 bytes.
pub(crate) const fn aliases(size: u32) -> bool {
    size.is_multiple_of(4096) && (size <= 16384 || size as usize == MAX_SMALL)
}

/// Bytes added to a size that [`aliases`] for the class that serves the
/// requests aligned to 64 or less: a cache line.
const DEALIASED_BY: u32 = 64;

pub(crate) const fn build_sizes() -> [u32; CLASSES + 1] {
    let mut sizes = [0u32; CLASSES + 1];
    let mut class = 1;
    while class <= 8 {
        sizes[class] = 16 * class as u32;
        class += 1;
    }
    let mut base = 128u32;
    while base < MAX_SMALL as u32 {
        if base + 16 == KIB_AND_HEADER {
            sizes[class] = KIB_AND_HEADER;
            class += 1;
        }
        let step = base / 8;
        let mut k = 1;
        while k <= 8 {
            let size = base + step * k;
            sizes[class] = size;
            class += 1;
            if aliases(size) {
                sizes[class] = size + DEALIASED_BY;
                class += 1;
            }
            k += 1;
        }
        base *= 2;
    }
    assert!(class == CLASSES + 1);
    sizes
}

/// Bytes per object, by class.
pub(crate) static SIZES: [u32; CLASSES + 1] = build_sizes();

/// The smallest class of at least `size` bytes that serves requests
/// aligned to 64 or less (not one whose size [`aliases`]).
pub(crate) const fn smallest_class_at_least(size: usize) -> u8 {
    let sizes = build_sizes();
    let mut class = 1;
    while (sizes[class] as usize) < size || aliases(sizes[class]) {
        class += 1;
    }
    class as u8
}

const LUT_LEN: usize = MAX_SMALL / 16 + 1;

const fn build_lut() -> [u8; LUT_LEN] {
    let mut lut = [0u8; LUT_LEN];
    let mut i = 0;
    while i < LUT_LEN {
        lut[i] = smallest_class_at_least(if i == 0 { 1 } else { i * 16 });
        i += 1;
    }
    lut
}

/// Class by `(size + 15) / 16`, for every size up to [`MAX_SMALL`]: 4 KiB,
/// of which a program's few hot sizes touch a cache line or two.
static LUT: [u8; LUT_LEN] = build_lut();

/// The class of a `size`-byte request (`size <= MAX_SMALL`; 0 counts as 1).
#[inline(always)]
pub(crate) fn class_of(size: usize) -> usize {
    debug_assert!(size <= MAX_SMALL);
    LUT[(size + 15) >> 4] as usize
}

/// The class for a request of `size` bytes aligned to `align` (a power of
/// two), if a small class can serve it: the smallest class at least that big
/// whose size is a multiple of `align`.
#[inline]
pub(crate) fn class_for(size: usize, align: usize) -> Option<usize> {
    if align <= 16 {
        return (size <= MAX_SMALL).then(|| class_of(size));
    }
    let at_least = size.max(align);
    if at_least > MAX_SMALL {
        return None;
    }
    // `class_of` skips the class just below it if that one's size aliases;
    // only a request aligned to more than a line takes it.
    let mut first = class_of(at_least);
    if align > DEALIASED_BY as usize && SIZES[first - 1] as usize >= at_least {
        first -= 1;
    }
    (first..=CLASSES).find(|&class| {
        (SIZES[class] as usize).is_multiple_of(align) && (align > DEALIASED_BY as usize || !aliases(SIZES[class]))
    })
}

/// Pages (of [`PAGE_SIZE`]) per span of each class: the fewest that waste at
/// most an eighth of the span on the tail.
pub(crate) const fn build_span_pages() -> [u8; CLASSES + 1] {
    let sizes = build_sizes();
    let mut pages = [0u8; CLASSES + 1];
    let mut class = 1;
    while class <= CLASSES {
        let size = sizes[class] as usize;
        let mut k = 1;
        while (k * PAGE_SIZE) % size > (k * PAGE_SIZE) / 8 {
            k += 1;
        }
        pages[class] = k as u8;
        class += 1;
    }
    pages
}

/// Pages per span, by class.
pub(crate) static SPAN_PAGES: [u8; CLASSES + 1] = build_span_pages();

/// Objects per span, by class.
pub(crate) fn objects_per_span(class: usize) -> usize {
    SPAN_PAGES[class] as usize * PAGE_SIZE / SIZES[class] as usize
}

/// Entries of [`OBJECT_MAGIC`] and [`OBJECT_LAST`]: every positive
/// page-class byte, so that a class read from a page indexes them without a
/// bounds check (the entries past the last class start no object).
const OBJECT_STARTS_LEN: usize = 128;
const _: () = assert!(CLASSES < OBJECT_STARTS_LEN);

/// Per class, the magic of Lemire's divisibility test: `offset % size == 0`
/// iff `offset * magic < magic`, with `magic = ceil(2^64 / size)`, exact
/// for offsets below 2^32. Apart from [`OBJECT_LAST`], not in one array of
/// pairs: entries of 8 bytes are indexed by the class in one instruction,
/// pairs of 16 took two more on every `free`.
static OBJECT_MAGIC: [u64; OBJECT_STARTS_LEN] = build_object_starts().0;

/// Per class, the offset of a span's last object, so that a pointer into
/// the span's unused tail is refused too.
static OBJECT_LAST: [u64; OBJECT_STARTS_LEN] = build_object_starts().1;

const fn build_object_starts() -> ([u64; OBJECT_STARTS_LEN], [u64; OBJECT_STARTS_LEN]) {
    let sizes = build_sizes();
    let pages = build_span_pages();
    let (mut magic, mut last) = ([0; OBJECT_STARTS_LEN], [0; OBJECT_STARTS_LEN]);
    let mut class = 1;
    while class <= CLASSES {
        let size = sizes[class] as u64;
        let objects = pages[class] as u64 * PAGE_SIZE as u64 / size;
        magic[class] = u64::MAX / size + 1;
        last[class] = (objects - 1) * size;
        class += 1;
    }
    (magic, last)
}

/// Whether `offset` bytes from the start of a span of `class` is where one of
/// its objects starts. No division: one multiply, two compares.
#[inline(always)]
pub(crate) fn starts_object(class: usize, offset: usize) -> bool {
    offset as u64 <= OBJECT_LAST[class] && object_index(class, offset).is_some()
}

/// `offset / size` for `class` if `offset` is a multiple of its size:
/// Lemire's test (the low half of the 128-bit product `offset * magic`) and
/// quotient (its high half), exact for offsets below 2^32, so the central
/// lists index a span's bitmap without a division.
#[inline(always)]
pub(crate) fn object_index(class: usize, offset: usize) -> Option<usize> {
    ObjectIndex::of(class).get(offset)
}

/// [`object_index`] for one class, its magic read once: for a loop over
/// many objects of the class, where the compiler, short of registers,
/// reloaded it from the stack and the table at every object.
#[derive(Clone, Copy)]
pub(crate) struct ObjectIndex(u64);

impl ObjectIndex {
    #[inline(always)]
    pub(crate) fn of(class: usize) -> ObjectIndex {
        ObjectIndex(OBJECT_MAGIC[class])
    }

    /// `offset / size` if `offset` is a multiple of the class's size.
    #[inline(always)]
    pub(crate) fn get(self, offset: usize) -> Option<usize> {
        debug_assert!(offset < 1 << 32);
        let product = u128::from(offset as u64) * u128::from(self.0);
        ((product as u64) < self.0).then_some((product >> 64) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::MAX_OBJECTS;

    #[test]
    fn sizes_are_increasing_multiples_of_16() {
        for class in 1..=CLASSES {
            assert!(SIZES[class].is_multiple_of(16));
            assert!(class == 1 || SIZES[class] > SIZES[class - 1]);
        }
        assert_eq!(SIZES[CLASSES] as usize, MAX_SMALL + 64);
    }

    #[test]
    fn lookup_is_the_smallest_fitting_class_and_wastes_at_most_an_eighth() {
        for size in 0..=MAX_SMALL {
            let class = class_of(size);
            let got = SIZES[class] as usize;
            assert!(got >= size.max(1), "size {size}: class {class} holds {got}");
            assert!(!aliases(SIZES[class]), "size {size}: class {class} ({got} B) aliases");
            let below = (1..class).rev().find(|&c| !aliases(SIZES[c]));
            assert!(below.is_none_or(|c| (SIZES[c] as usize) < size), "size {size}: class {class} not smallest");
            if size > 128 {
                assert!((got - size) * 8 < size, "size {size} wastes {} in {got}", got - size);
            }
        }
    }

    /// Objects of the classes unaligned requests get start at different
    /// offsets in their pages, so that their first lines spread over the
    /// cache's sets; a page-aligned request of such a size still gets a
    /// class of that size, not the next power of two.
    #[test]
    fn unaligned_classes_do_not_alias_and_page_aligned_ones_stay_tight() {
        for size in [4096, 8192, 12288, 16000, 16384, 65536] {
            assert!(!(SIZES[class_of(size)] as usize).is_multiple_of(4096), "{size}");
            assert_eq!(SIZES[class_of(size)] as usize % 4096, 64, "{size}");
            let aligned = class_for(size, 4096).unwrap();
            assert_eq!(SIZES[aligned] as usize, size.next_multiple_of(4096), "{size}");
            assert_eq!(class_for(size, 64), Some(class_of(size)), "{size}");
        }
        assert_eq!(SIZES[class_of(MAX_SMALL)] as usize, MAX_SMALL + 64);
        for size in [20480, 32768, 61440] {
            assert_eq!(SIZES[class_of(size)] as usize, size, "{size} keeps one class");
        }
    }

    #[test]
    fn aligned_classes_are_multiples_of_the_alignment() {
        for align in [32, 64, 128, 256, 4096, 8192, 16384, 32768] {
            for size in [1, 17, 100, 1000, 5000, 32768] {
                if let Some(class) = class_for(size, align) {
                    assert!((SIZES[class] as usize).is_multiple_of(align));
                    assert!(SIZES[class] as usize >= size);
                } else {
                    assert!(size.max(align) > MAX_SMALL || align > MAX_SMALL);
                }
            }
        }
    }

    #[test]
    fn object_starts_are_exactly_the_multiples_of_the_size_inside_the_span() {
        for class in 1..=CLASSES {
            let size = SIZES[class] as usize;
            let span = SPAN_PAGES[class] as usize * PAGE_SIZE;
            for offset in 0..span + 64 {
                let expected = offset % size == 0 && offset / size < objects_per_span(class);
                assert_eq!(starts_object(class, offset), expected, "class {class} offset {offset}");
            }
            // The quotient, everywhere in a segment (and well past it).
            for offset in (0..1 << 24).step_by(7).chain([(1 << 32) - 1, (1 << 32) - size]) {
                let expected = offset.is_multiple_of(size).then_some(offset / size);
                assert_eq!(object_index(class, offset), expected, "class {class} offset {offset}");
            }
        }
    }

    #[test]
    fn spans_waste_at_most_an_eighth_and_fit_a_segment() {
        for class in 1..=CLASSES {
            let span = SPAN_PAGES[class] as usize * PAGE_SIZE;
            assert!(span % SIZES[class] as usize <= span / 8);
            assert!(objects_per_span(class) >= 1 && objects_per_span(class) <= MAX_OBJECTS);
            assert!(SPAN_PAGES[class] <= 8);
        }
    }
}
