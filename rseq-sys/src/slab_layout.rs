//! The per-CPU slab layout that the push and pop critical sections assume.
//!
//! A slab is one region per possible CPU (or concurrency id), each
//! `1 << SHIFT` bytes, laid end to end from `base`:
//!
//! ```text
//! region(cpu) = base + (cpu << SHIFT)
//! +0      unused              (slots below the state word's)
//! +0xc00  u64 state           sections run only when it reads OPEN; otherwise
//!                             they bail out with Miss::Stopped
//! +0xc08  u64 header[class]   current (low 32 bits) | end (high 32 bits)
//! ...     u64 slot[i]         at region + 8*i, i < 1 << (SHIFT - 3)
//! ```
//!
//! Slot numbers are 32 bits wide, so a region may hold more than 65,536
//! slots (a class's stack can be larger than a 16-bit index reaches).
//!
//! Invariants the owner keeps, per CPU and class (indexes are slot numbers):
//! `slot[begin - 1]` holds a value with bit 0 set (the sentinel that makes
//! "empty" a property of the loaded slot, so pop never loads `begin`);
//! `begin <= current <= end <= capacity_end`; the live items are
//! `slot[begin..current]`; items have bit 0 clear and are larger than
//! [`Miss::MAX_CODE`](crate::Miss::MAX_CODE).
//!
//! A class may also be *dormant*: its header reads `current == end == s + 1`
//! for a sentinel slot `s` that any number of dormant classes share. Every
//! section then misses (pop finds the sentinel, push finds no room), so a
//! region that is never used for a class never touches that class's slots;
//! [`slab_replace_header`](crate::slab_replace_header) gives it its own.
//!
//! The state word makes a fresh, zero-filled mapping safe: a region reads
//! [`STATE_UNINIT`] until its owner has written the headers and sentinels and
//! then stored [`STATE_OPEN`]. Any other value means busy, and which one is
//! the owner's choice: a remote operation (drain, resize) stores one and
//! fences the CPU before touching the region; without rseq, the same word is
//! a try-lock taken by compare-and-swap from OPEN. The word is 64 bits wide
//! so that a busy value can name its holder exactly (the allocator stores
//! the holder's thread pointer: a fork handler must know whether its own
//! thread holds a region).
//!
//! The sections write only `slot[current]` (push, speculatively) and a
//! header (the commit: the whole word, with `end` unchanged). They never
//! change `state` or `end`, which belong to whoever holds the region busy.

use core::sync::atomic::{AtomicIsize, AtomicPtr, AtomicU32};

/// Where a slab is, in the form every slab section reads at its start: one
/// pointer argument instead of three registers, which leaves the compiler
/// enough caller-saved registers around the section that the fast path needs
/// no stack.
///
/// The sections read the fields with plain loads, the offset again at every
/// restart. All three must be set before the first section runs on the
/// slab: a section arms `rseq_cs` through `rseq_offset` before it reads the
/// CPU index, so a wrong offset writes into some other thread-local data.
#[repr(C)]
#[derive(Debug)]
pub struct Slabs {
    /// Offset of the registered rseq area from the thread pointer
    /// ([`crate::area_offset`]).
    pub rseq_offset: AtomicIsize,
    /// Region 0; region `i` starts `i << SHIFT` bytes above it.
    pub base: AtomicPtr<u8>,
    /// Regions there are: a CPU index at or above it misses with `NoCpu`.
    pub count: AtomicU32,
}

impl Slabs {
    /// A slab of `count` regions from `base`, for sections run through the
    /// area at `rseq_offset`.
    pub const fn new(rseq_offset: isize, base: *mut u8, count: u32) -> Slabs {
        Slabs { rseq_offset: AtomicIsize::new(rseq_offset), base: AtomicPtr::new(base), count: AtomicU32::new(count) }
    }
}

/// Byte offset of the `state` word in each CPU's region, the headers after
/// it. Every section reads the state word, and the first classes' headers
/// nearly every one does: three quarters into the page, they share their
/// cache sets with few of the lines a program touches most, where at its
/// start they would share set 0 with the first line of every page-aligned
/// buffer (a 64 KiB block written a byte per page evicted them at every
/// operation).
pub const STATE_OFFSET: usize = 0xc00;
/// `state`: never initialised (a fresh mapping reads this).
pub const STATE_UNINIT: u64 = 0;
/// `state`: sections may run.
pub const STATE_OPEN: u64 = 1;
/// `state`: a busy value for an owner that needs no other (every value but
/// [`STATE_UNINIT`] and [`STATE_OPEN`] is busy).
pub const STATE_BUSY: u64 = 2;
/// Byte offset of the first class header in each CPU's region.
pub const HEADERS_OFFSET: usize = STATE_OFFSET + 8;
/// Bytes per slot.
pub const SLOT_BYTES: usize = 8;
/// Bit set in a sentinel slot, clear in every item.
pub const SENTINEL_BIT: usize = 1;

/// Bytes per class header.
pub const HEADER_BYTES: usize = 8;

/// Byte offset of `class`'s header in a CPU region.
#[inline(always)]
pub const fn header_offset(class: usize) -> usize {
    HEADERS_OFFSET + HEADER_BYTES * class
}

/// First slot index that headers for `classes` classes leave free.
pub const fn first_free_slot(classes: usize) -> usize {
    header_offset(classes).div_ceil(SLOT_BYTES)
}

/// One class's header, as stored in a `u64`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// One past the last live item.
    pub current: u32,
    /// Capacity limit: push fails when `current == end`.
    pub end: u32,
}

impl Header {
    /// The header as the sections read it.
    #[inline]
    pub const fn pack(self) -> u64 {
        self.current as u64 | (self.end as u64) << 32
    }

    /// The header from its stored form.
    #[inline]
    pub const fn unpack(word: u64) -> Header {
        Header { current: word as u32, end: (word >> 32) as u32 }
    }
}
