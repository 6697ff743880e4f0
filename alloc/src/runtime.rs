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
use crate::segment::PAGE_HEAP;
use crate::stats::{self, Stats};
use crate::sync::{AtomicOps, AtomicU8, AtomicU32};
use crate::text::Line;
use crate::upkeep;

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
    upkeep::configure(os::env_u64(c"RSEQ_ALLOC_DECAY_MS"), !os::env_flag_off(c"RSEQ_ALLOC_BACKGROUND"));
    PAGE_HEAP.use_huge_pages(!os::env_flag_off(c"RSEQ_ALLOC_HUGE_PAGES"));
    let report = os::env(c"RSEQ_ALLOC_STATS").and_then(ReportTo::parse);
    let config =
        Config { forced_fallback: os::env_flag(c"RSEQ_ALLOC_FORCE_FALLBACK"), count_hits: report.is_some(), hardened };
    if percpu::init(config) {
        fork::register_unless_wrapped();
        if let Some(report) = report {
            report.keep();
            os::at_exit(print_at_exit);
        }
    }
}

/// Where the exit report goes (`RSEQ_ALLOC_STATS`): `1` (or `y`) for the
/// standard error the program started with, kept on a descriptor of our
/// own because many programs close theirs before they exit; a path (any
/// value with a `/`) for a file appended to, where `%p` stands for the
/// process id, so that each process of a pipeline writes its own.
enum ReportTo {
    StandardError,
    File(&'static [u8]),
}

/// The report's descriptor plus one (0: none).
static REPORT_FD: AtomicU32 = AtomicU32::new(0);
/// The report's path pattern, NUL-terminated (empty: none).
static REPORT_PATH: [AtomicU8; 256] = [const { AtomicU8::new(0) }; 256];

impl ReportTo {
    fn parse(value: &'static [u8]) -> Option<ReportTo> {
        match value.first()? {
            _ if value.contains(&b'/') => Some(ReportTo::File(value)),
            b'1' | b'y' | b'Y' => Some(ReportTo::StandardError),
            _ => None,
        }
    }

    /// Keeps what the report will need at exit, where the environment or
    /// the descriptor may be gone (the initialising thread, once).
    fn keep(self) {
        match self {
            ReportTo::StandardError => {
                if let Some(fd) = os::keep_descriptor(2) {
                    REPORT_FD.store_relaxed(fd as u32 + 1);
                }
            }
            ReportTo::File(path) => {
                for (slot, &byte) in REPORT_PATH.iter().zip(path.iter().take(REPORT_PATH.len() - 1)) {
                    slot.store_relaxed(byte);
                }
            }
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

/// Prints the figures on stderr (C's `malloc_stats`).
pub(crate) fn print_stats() {
    stats::print(&stats(), 2, report_prefix().as_bytes());
}

/// The exit report, where `RSEQ_ALLOC_STATS` said.
extern "C" fn print_at_exit() {
    let prefix = report_prefix();
    let kept = REPORT_FD.load_relaxed();
    if kept != 0 {
        return stats::print(&stats(), kept as i32 - 1, prefix.as_bytes());
    }
    // The path, with `%p` replaced by the process id.
    let mut path = Line::new();
    let mut bytes = REPORT_PATH.iter().map(AtomicOps::load_relaxed).take_while(|&b| b != 0).peekable();
    while let Some(byte) = bytes.next() {
        if byte == b'%' && bytes.peek() == Some(&b'p') {
            bytes.next();
            path.decimal(os::pid().into());
        } else {
            path.push(&[byte]);
        }
    }
    path.push(b"\0");
    if let Some(fd) = os::open_append(path.as_bytes()) {
        stats::print(&stats(), fd, prefix.as_bytes());
        os::close(fd);
    }
}

/// `rseq-alloc[PID:PROGRAM]: `, so that the reports of a pipeline's
/// processes can be told apart.
fn report_prefix() -> Line {
    let mut prefix = Line::new();
    let mut comm = [0u8; 32];
    let name = os::read_file(c"/proc/self/comm", &mut comm);
    let name = name.strip_suffix(b"\n").unwrap_or(name);
    prefix.push(b"rseq-alloc[").decimal(os::pid().into()).push(b":").push(name).push(b"]: ");
    prefix
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
    crate::medium::release_all();
    crate::segment::PAGE_HEAP.purge() + crate::huge::release_cache()
}
