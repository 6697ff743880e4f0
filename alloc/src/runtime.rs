//! The process-wide start-up, in one place: the configuration read from the
//! environment, the per-CPU layer's mode, hardened mode's switch, the fork
//! handlers and the exit report. Every path that can hand out a block calls
//! [`ensure_init`] (through [`hardened`]) before it does, so the switches are
//! decided before the first block.
//!
//! Initialisation is lock-free and may run in several threads at once, in a
//! constructor before `main`, or re-entrantly from a signal handler: each
//! step is idempotent, and the thread whose `percpu::init` decided the mode
//! is the one that then registers the fork handlers and the exit report,
//! which may allocate through us (safe by then).

use crate::central::CENTRAL;
use crate::fork;
use crate::hardened;
use crate::os;
use crate::percpu::{self, Config};
use crate::stats::{self, Stats};
use crate::sync::{AtomicOps, AtomicU8};

const UNDECIDED: u8 = 0;
const OFF: u8 = 1;
const ON: u8 = 2;
/// Hardened mode's switch: decided, and armed if on, before the mode.
static HARDENED: AtomicU8 = AtomicU8::new(UNDECIDED);

/// Makes the allocator ready to hand out blocks (one load once it is).
#[inline(always)]
pub(crate) fn ensure_init() {
    if !percpu::is_initialised() {
        init();
    }
}

#[cold]
#[inline(never)]
fn init() {
    let hardened = os::env_flag(c"RSEQ_ALLOC_HARDENED");
    if hardened {
        hardened::arm();
    }
    // Racing initialisers read the same environment and store the same value.
    let _ = HARDENED.cas_release(UNDECIDED, if hardened { ON } else { OFF });
    let stats_at_exit = os::env_flag(c"RSEQ_ALLOC_STATS");
    let config =
        Config { forced_fallback: os::env_flag(c"RSEQ_ALLOC_FORCE_FALLBACK"), count_hits: stats_at_exit, hardened };
    if percpu::init(config) {
        fork::register_unless_wrapped();
        if stats_at_exit {
            os::at_exit(print_at_exit);
        }
    }
}

/// Whether hardened mode is on; initialises the allocator first if needed.
#[inline]
pub(crate) fn hardened() -> bool {
    ensure_init();
    HARDENED.load_relaxed() == ON
}

/// The allocator's figures now (without initialising it: before the first
/// allocation the mode reads `Undecided`).
pub fn stats() -> Stats {
    stats::collect(HARDENED.load_acquire() == ON)
}

/// Prints the figures on stderr (`RSEQ_ALLOC_STATS=1` at exit, C's `malloc_stats`).
pub(crate) fn print_stats() {
    stats::print(&stats());
}

extern "C" fn print_at_exit() {
    print_stats();
}

/// Gives every free byte the allocator can back to the system; returns how
/// many bytes of memory it gave back (unmapped or `madvise`d away).
///
/// In order: every CPU's cache is drained to the central lists (stop, fence,
/// empty, reopen), where objects go back to their spans and spans with
/// nothing live go back to the page heap; the central lists give up their
/// spare spans; the page heap unmaps segments with no span and `madvise`s
/// away the other free pages; the cache of freed huge blocks is unmapped.
///
/// Costs a `membarrier` system call per CPU (in rseq mode) and a walk of
/// every segment: call it after freeing a lot, not in a loop.
pub fn trim() -> usize {
    ensure_init();
    percpu::drain_all_remote();
    CENTRAL.release_spares();
    crate::segment::PAGE_HEAP.purge() + crate::huge::release_cache()
}
