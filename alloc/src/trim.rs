//! Giving memory back on request: `rseq_alloc::trim()`, and C's
//! `malloc_trim(0)`.
//!
//! In order: every CPU's cache is drained to the central lists (stop, fence,
//! empty, reopen: `percpu::drain_cpu`), where objects go back to their spans
//! and spans with nothing live go back to the page heap; the central lists
//! give up their spare spans; the page heap unmaps segments with no span and
//! `madvise`s away the other free pages; the cache of freed huge blocks is
//! unmapped. A program that freed everything is left with segment headers
//! and the per-CPU regions' touched pages.

use crate::central::CENTRAL;
use crate::huge;
use crate::percpu;
use crate::segment::PAGE_HEAP;

/// Gives every free byte the allocator can back to the system; returns how
/// many bytes of memory it gave back (unmapped or `madvise`d away).
///
/// Costs a `membarrier` system call per CPU (in rseq mode) and a walk of
/// every segment: call it after freeing a lot, not in a loop.
pub fn trim() -> usize {
    percpu::ensure_init();
    percpu::drain_all();
    CENTRAL.release_spares();
    PAGE_HEAP.purge() + huge::release_cache()
}
