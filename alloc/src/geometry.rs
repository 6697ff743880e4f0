//! The allocator's fixed sizes: the leaf constants every layer shares, in
//! one place so that no two modules import each other for a number.

/// The kernel's page size on x86-64 Linux: the unit of `mmap` and `madvise`.
pub(crate) const OS_PAGE: usize = 4096;

/// log2 of [`SEGMENT_SIZE`].
pub(crate) const SEGMENT_SHIFT: u32 = 22;
/// Bytes per segment, and their alignment: any pointer finds its segment by masking.
pub(crate) const SEGMENT_SIZE: usize = 1 << SEGMENT_SHIFT;
/// log2 of [`PAGE_SIZE`].
pub(crate) const PAGE_SHIFT: u32 = 16;
/// Bytes per allocator page: the unit of spans.
pub(crate) const PAGE_SIZE: usize = 1 << PAGE_SHIFT;
/// Pages per segment (page 0 is the header).
pub(crate) const PAGES: usize = SEGMENT_SIZE / PAGE_SIZE;

/// Largest small request: larger ones get a span or a segment of their own
/// (the largest small class is a cache line larger, see `size_class`).
pub(crate) const MAX_SMALL: usize = 64 * 1024;
/// Largest medium block: larger requests get a huge segment.
pub(crate) const MAX_MEDIUM: usize = 16 * PAGE_SIZE;
/// Small blocks that `realloc` grows to this size or more become medium
/// spans of one page, which the caches of the small classes from it on may
/// hold (`front::PROMOTE_MEDIUM_FROM` says why).
pub(crate) const PROMOTE_MEDIUM_FROM: usize = 4096;
/// Most objects any span holds (16-byte objects in one page).
pub(crate) const MAX_OBJECTS: usize = PAGE_SIZE / 16;

/// Bits of a user-space address; the segment map covers them all.
pub(crate) const ADDRESS_BITS: u32 = 47;
/// Addresses at or above this are in no segment of ours.
pub(crate) const ADDRESS_LIMIT: usize = 1 << ADDRESS_BITS;
