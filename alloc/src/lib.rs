//! rseq-alloc: a lock-free, per-CPU memory allocator for Linux, built on
//! restartable sequences (rseq).
//!
//! # Use
//!
//! In `Cargo.toml` (the crate lives in the repository's `alloc/` folder):
//!
//! ```toml
//! [dependencies]
//! rseq-alloc = { path = "path/to/rseq-alloc/alloc" }
//! ```
//!
//! Then, once in the program:
//!
//! ```
//! #[global_allocator]
//! static GLOBAL: rseq_alloc::RseqAlloc = rseq_alloc::RseqAlloc;
//! # fn main() { let v = vec![1u8; 100]; assert_eq!(v.len(), 100); }
//! ```
//!
//! Every allocation of the program is then served by it. [`stats()`] returns
//! its figures (print them with `{}`: one line per size class in use);
//! [`trim()`] gives free memory back to the system. C and C++ programs use
//! the same allocator through `LD_PRELOAD` and the library built from
//! `alloc/preload` (see the repository's README).
//!
//! The environment, read once at the first allocation:
//!
//! | variable | effect |
//! |---|---|
//! | `RSEQ_ALLOC_STATS=1` | count fast-path hits too (every operation then takes a slower path) and print the figures at exit to the standard error the program started with; a path (`/tmp/stats.%p`, `%p` the process id) writes them to that file instead |
//! | `RSEQ_ALLOC_HARDENED=1` | check every block: canaries, poison, exact double-free detection (slower) |
//! | `RSEQ_ALLOC_FORCE_FALLBACK=1` | run the per-CPU caches on atomic compare-and-swap instead of rseq |
//! | `RSEQ_ALLOC_DECAY_MS=N` | period of the upkeep that drains idle CPUs' caches and returns pages and segments unused for a period (default 1000; 0: no upkeep, empty segments unmapped at once) |
//! | `RSEQ_ALLOC_BACKGROUND=0` | no background thread: rounds run only on slow paths, so a program that stops allocating keeps its free memory |
//! | `RSEQ_ALLOC_HUGE_PAGES=0` | never ask the kernel for transparent huge pages (by default, segments mapped once the heap holds 64 MiB are, for blocks up to 4 KiB) |
//!
//! Platforms: Linux on x86-64 runs the rseq fast path, with glibc's
//! registration where glibc made one and its own otherwise. Where rseq is
//! missing or refused (old kernels, valgrind, some sandboxes) the same
//! caches run on the fallback; other architectures build with stubs that
//! always take it ([`Mode`] says which).
//!
//! Like glibc's, the allocator is not async-signal-safe: a signal handler
//! must not call `malloc` or `GlobalAlloc`. It may call [`signal_safe`]'s
//! `alloc` and `dealloc`, which never leave the per-CPU fast path and fail
//! instead where the allocator would take a lock.
//!
//! A pointer that is not a block of ours is refused with one line naming
//! the call and the pointer, then `abort`: C's `free` checks alignment,
//! segment, page and object start on its fast path, and a small block
//! freed twice is refused at the second free (the freed mark, `percpu`;
//! Rust's `alloc` and `dealloc` skip it); the central lists check every object that
//! reaches them again.
//!
//! # For maintainers: the layers
//!
//! Each module imports only from the layers below its own; `alloc/tests/layers.rs`
//! reads this table and fails on an import that climbs (or a module missing from it).
//!
//! | layer | modules | job |
//! |---|---|---|
//! | 12 | `c_api`, `signal_safe` | the C API's semantics; allocation in signal handlers |
//! | 11 | `front` | the front door: the one small fast path, hardened mode's gate, `realloc` |
//! | 10 | `runtime` | start-up: configuration, the mode, hardened mode's switch, fork handlers, exit report; `stats()`, `trim()` |
//! | 9 | `hardened`, `stats` | hardened mode's checks over the tiers; the figures |
//! | 8 | `tiers`, `fork` | what a block is, where a request goes, the caches' slow paths; the fork handlers |
//! | 7 | `upkeep` | upkeep on a clock, driven by the slow paths' central trips |
//! | 6 | `percpu` | the per-CPU caches: rseq sections or the CAS fallback, adaptive capacity (`percpu/mod.rs` maps its files) |
//! | 5 | `central`, `huge`, `medium` | per class, the spans with free objects; huge blocks, a segment each; a few freed medium spans kept whole |
//! | 4 | `segment` | segments, spans and the page heap |
//! | 3 | `size_class`, `report` | the size classes; reports of bad input |
//! | 2 | `lock`, `text`, `list` | the slow paths' lock; text without allocation; intrusive lists |
//! | 1 | `os` | every system call |
//! | 0 | `sync`, `geometry` | the atomics facade (loom under `cfg(rseq_alloc_loom)`); the fixed sizes |
//!
//! `rseq-sys` sits below them all: the rseq ABI, registration and the x86-64
//! critical sections.
//!
//! # The types, and the invariant each keeps
//!
//! | type (module) | what it is | invariant |
//! |---|---|---|
//! | size class (`size_class`) | 80 object sizes, 16 B to 64 KiB | `size(c) % 16 == 0`; above 128 B, `size(c) - request < request / 8` |
//! | per-CPU region (`percpu`) | per CPU, one bounded stack of free objects per class | `begin(c) <= current(c) <= end(c)`; touched only inside an rseq critical section (rseq mode) or while its state word names a holder (fallback, drains, openings, `fork`) |
//! | central list (`central`) | per class, the spans with free objects, behind one lock | `used + free + never_used == objects` for every span; a span is listed iff it has a free object |
//! | span (`segment`) | contiguous 64 KiB pages: many objects of one class, or one medium block | every page of it names its class and its head page |
//! | segment (`segment`) | 4 MiB aligned: a header page and 63 pages for spans, or one huge block | ours iff marked in the segment map |
//! | page heap (`segment`) | hands out runs of pages, maps and unmaps segments | a page is in at most one span |
//!
//! A small allocation pops from the current CPU's region (an rseq critical
//! section: no lock, no atomic read-modify-write); on a miss it takes a batch
//! from the central list. A small free pushes onto the region; when it is full
//! a batch goes back to the central list, where every object is checked.
//! Medium blocks (above 64 KiB, up to 1 MiB) are spans from the page heap; huge blocks
//! have a segment of their own, and `realloc` moves them with `mremap`.
//! A small block that `realloc` grows to 4 KiB or more becomes a medium span,
//! which grows in place over the free pages after it (past 256 KiB, a huge
//! block). Rust's `dealloc` trusts its layout, so such a span freed with a
//! small size goes to that class's per-CPU cache like one of its objects
//! (it holds any of them) and may be handed out as one; the central list
//! gives it back to the page heap.
//!
//! The allocator never allocates through itself: metadata lives in segment
//! header pages, `.bss`, and mappings made with raw system calls; none of it
//! lives in object memory, so a write into a freed block cannot redirect an
//! allocation.

#![deny(unsafe_op_in_unsafe_fn)]
#![cfg_attr(not(any(test, rseq_alloc_loom)), no_std)]

// Under `cfg(rseq_alloc_loom)` only the modules the loom models check are
// built (over loom's atomics), and exported as `model`.
#[cfg(not(rseq_alloc_loom))]
pub mod c_api;
#[cfg(not(rseq_alloc_loom))]
mod central;
#[cfg(not(rseq_alloc_loom))]
mod fork;
#[cfg(not(rseq_alloc_loom))]
mod front;
#[cfg(not(rseq_alloc_loom))]
mod geometry;
#[cfg(not(rseq_alloc_loom))]
mod hardened;
#[cfg(not(rseq_alloc_loom))]
mod huge;
#[cfg(not(rseq_alloc_loom))]
mod list;
mod lock;
#[cfg(not(rseq_alloc_loom))]
mod medium;
#[cfg(not(rseq_alloc_loom))]
mod os;
#[cfg(not(rseq_alloc_loom))]
mod percpu;
/// Under loom, the per-CPU layer is its region protocol alone.
#[cfg(rseq_alloc_loom)]
mod percpu {
    pub(crate) mod protocol;
}
#[cfg(not(rseq_alloc_loom))]
mod report;
#[cfg(not(rseq_alloc_loom))]
mod runtime;
#[cfg(not(rseq_alloc_loom))]
mod segment;
#[cfg(not(rseq_alloc_loom))]
pub mod signal_safe;
#[cfg(not(rseq_alloc_loom))]
mod size_class;
#[cfg(not(rseq_alloc_loom))]
mod stats;
mod sync;
#[cfg(not(rseq_alloc_loom))]
mod text;
#[cfg(not(rseq_alloc_loom))]
mod tiers;
#[cfg(not(rseq_alloc_loom))]
mod upkeep;

/// What the loom models in `tests/` check: the fallback path's region
/// protocol and the slow-path lock, over loom's atomics.
#[cfg(rseq_alloc_loom)]
pub mod model {
    pub use crate::lock::{Lock, LockGuard};
    pub use crate::percpu::protocol::{
        Geometry, RegionStore, drain_remote, format, hold_for_fork, pop, push, release, release_after_fork, top,
        try_hold, with_region,
    };
}

#[cfg(not(rseq_alloc_loom))]
use core::alloc::{GlobalAlloc, Layout};

#[cfg(not(rseq_alloc_loom))]
pub use percpu::Mode;
#[cfg(not(rseq_alloc_loom))]
pub use runtime::{stats, trim};
#[cfg(not(rseq_alloc_loom))]
pub use stats::{ClassStats, Stats};

/// Internals for the fuzz targets in `fuzz/` (feature `internals`): the
/// size-class and page-map functions whose invariants they check. Not an API.
#[cfg(all(feature = "internals", not(rseq_alloc_loom)))]
#[doc(hidden)]
pub mod internals {
    use crate::tiers::{self, Block, Route};

    /// Number of small classes (numbered 1 to `CLASSES`).
    pub const CLASSES: usize = crate::size_class::CLASSES;
    /// Largest small request.
    pub const MAX_SMALL: usize = crate::size_class::MAX_SMALL;
    /// The caches of classes larger than this may hand out a medium span
    /// of one page as one of their objects (a block `realloc` promoted).
    pub const PROMOTE_MEDIUM_FROM: usize = crate::geometry::PROMOTE_MEDIUM_FROM;

    /// Where a request is served, or what a block is.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Tier {
        /// A small class.
        Small(usize),
        /// A medium span.
        Medium,
        /// A segment of its own.
        Huge,
    }

    /// The small class serving `size` bytes aligned to `align`, if any.
    pub fn class_for(size: usize, align: usize) -> Option<usize> {
        crate::size_class::class_for(size, align)
    }

    /// Bytes per object of `class`.
    pub fn class_size(class: usize) -> usize {
        crate::size_class::SIZES[class] as usize
    }

    /// Whether `class` serves only requests aligned to more than 64 bytes
    /// (a class a cache line larger serves the others).
    pub fn class_is_for_aligned_only(class: usize) -> bool {
        crate::size_class::aliases(crate::size_class::SIZES[class])
    }

    /// Objects per span of `class`.
    pub fn objects_per_span(class: usize) -> usize {
        crate::size_class::objects_per_span(class)
    }

    /// Whether an object of `class` starts `offset` bytes into its span.
    pub fn starts_object(class: usize, offset: usize) -> bool {
        crate::size_class::starts_object(class, offset)
    }

    /// Where a request of `size` bytes aligned to `align` is served.
    pub fn route(size: usize, align: usize) -> Tier {
        match tiers::route(size, align) {
            Route::Small(class) => Tier::Small(class),
            Route::Medium => Tier::Medium,
            Route::Huge => Tier::Huge,
        }
    }

    /// Bytes every block adds to its request: hardened mode's canary and tail.
    pub fn request_overhead() -> usize {
        if crate::runtime::hardened() { crate::hardened::OVERHEAD } else { 0 }
    }

    /// The block of ours that starts at `addr` (its tier and capacity), if
    /// any; safe for any address.
    pub fn lookup(addr: usize) -> Option<(Tier, usize)> {
        let block = tiers::lookup(addr)?;
        // SAFETY: `lookup` found this block's shape in live metadata.
        let capacity = unsafe { tiers::capacity(block) };
        let tier = match block {
            Block::Small(class) => Tier::Small(class),
            Block::Medium(..) => Tier::Medium,
            Block::Huge(_) => Tier::Huge,
        };
        Some((tier, capacity))
    }
}

// Everything but small blocks of alignment <= 16, kept out of line so that
// `alloc` and `dealloc` stay small enough to be inlined into their callers.
#[cfg(not(rseq_alloc_loom))]
#[inline(never)]
fn alloc_other(layout: Layout) -> *mut u8 {
    front::alloc(layout.size(), layout.align())
}

/// # Safety
/// As `GlobalAlloc::dealloc`.
#[cfg(not(rseq_alloc_loom))]
#[inline(never)]
unsafe fn dealloc_other(ptr: *mut u8, layout: Layout) {
    // SAFETY: forwarded from the caller.
    unsafe { front::dealloc(ptr, layout.size(), layout.align(), report::Call::Free) }
}

/// The allocator. Use it as the `#[global_allocator]`, or call it directly.
#[cfg(not(rseq_alloc_loom))]
#[derive(Clone, Copy, Debug, Default)]
pub struct RseqAlloc;

// SAFETY: every block returned is valid for the layout's size and aligned to
// its alignment, and stays so until freed; `dealloc` and `realloc` accept
// exactly the blocks `alloc` returned, with the same layout.
#[cfg(not(rseq_alloc_loom))]
unsafe impl GlobalAlloc for RseqAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match front::fast_class(layout.size(), layout.align()) {
            Some(class) => front::alloc_small_unmarked(class, layout.size(), report::Call::Malloc),
            None => alloc_other(layout),
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match front::fast_class(layout.size(), layout.align()) {
            Some(class) => front::dealloc_small(class, ptr, layout.size()),
            // SAFETY: the caller returns a block of ours with its layout.
            None => unsafe { dealloc_other(ptr, layout) },
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let Some(class) = front::fast_class(layout.size(), layout.align()) else {
            return front::alloc_zeroed(layout.size(), layout.align());
        };
        let ptr = front::alloc_small_unmarked(class, layout.size(), report::Call::Calloc);
        if !ptr.is_null() {
            // SAFETY: the block holds at least `layout.size()` bytes.
            unsafe { ptr.write_bytes(0, layout.size()) };
        }
        ptr
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller passes a live block of ours with its layout.
        unsafe { front::realloc_sized(ptr, layout.size(), layout.align(), new_size) }
    }
}
