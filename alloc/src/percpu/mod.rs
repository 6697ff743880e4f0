//! The per-CPU caches: one region per possible CPU, one bounded stack of
//! free objects per size class in each, laid out as `rseq_sys::slab_layout`
//! describes.
//!
//! # Who may touch a region, and when
//!
//! - **rseq mode.** A thread pops and pushes on the region of the CPU it runs
//!   on, only inside a critical section: the kernel restarts the section if
//!   the thread is preempted, migrated or signalled before its single
//!   committing store, so two threads can never interleave on one region and
//!   plain loads and stores suffice. Sections run only while the region's
//!   state word reads OPEN.
//! - **Opening.** A fresh region reads UNINIT (zero pages): every section
//!   bails out, and the slow path, under the openings lock, takes it by a
//!   CAS of its state word to its own identity (busy), writes its headers
//!   and sentinels, and stores OPEN with release ordering.
//! - **Fallback mode** (no rseq, or `RSEQ_ALLOC_FORCE_FALLBACK=1`). The state
//!   word is a try-lock: a thread takes a region OPEN→busy by CAS, works on it
//!   with plain atomic loads and stores, and stores OPEN (release). A thread
//!   that finds its region busy tries the next one and, if all are busy, goes
//!   to the central lists: it never waits for a preempted holder. There is
//!   no lock-free list, so there is no ABA.
//! - The two modes never mix: the process picks one at initialisation. A
//!   thread that cannot register in rseq mode bypasses the regions entirely.
//!
//! # The files
//!
//! | file | what it owns |
//! |---|---|
//! | `mod.rs` | the fast path (`pop`, `push`), the mode and initialisation |
//! | `protocol.rs` | who holds a region: the state word's protocol, over any storage (loom-checked) |
//! | `slots.rs` | where each class's stack lives in a region |
//! | `region.rs` | the mapped regions as the slow paths see them: open, stop, re-head, move a stack, read a fill |
//! | `slow.rs` | refill and drain, written once over the two ways of reaching a cache (rseq sections, a held region) |
//! | `remote.rs` | stopping another CPU's region: drains, upkeep, fork |
//! | `capacity.rs` | adaptive capacity: pure policy |
//! | `state.rs` | what the upkeep keeps of each CPU, in its region |
//! | `adapt.rs` | adaptive capacity: counting misses, re-sizing classes |
//! | `freed.rs` | the freed mark: a free finding its object marked looks for it among the free ones |
//! | `counters.rs`, `hits.rs` | statistics |

mod adapt;
pub(crate) mod capacity;
mod counters;
mod freed;
pub(crate) mod hits;
pub(crate) mod protocol;
mod region;
mod remote;
mod slots;
mod slow;
mod state;

use core::fmt;

use rseq_sys::slab_layout::Slabs;
use rseq_sys::{ByCpuId, Miss};

use crate::os;
use crate::sync::{AtomicOps, AtomicU32, AtomicU64};

pub(crate) use counters::{COUNTERS, Counters};
pub(crate) use region::{cached_bytes, mapped_bytes, occupancy};
pub(crate) use remote::{
    DRAIN_LOCK, OPENINGS, drain_all_remote, hold_regions_for_fork, release_regions_after_fork, upkeep,
};
pub(crate) use slow::{alloc_slow, free_slow};

/// Which rseq field indexes the regions: `cpu_id`, so that a drain can
/// fence the one CPU whose region it stops (`docs/rseq.md`).
pub(crate) type Index = ByCpuId;

/// log2 of each region's size: 4 MiB, room for every class's growth range
/// (`capacity::max`). Address space only: a region's pages are touched as
/// its classes grow into them.
pub(crate) const SLAB_SHIFT: u32 = 22;

/// What the fast path reads: kept on one cache line, a quarter into a page
/// of its own. Every operation loads these words right after storing a
/// class's stack header, three quarters into a region's first page
/// (`rseq_sys::slab_layout::STATE_OFFSET`); at the same offset in a page, a
/// load waits for that store as if it wrote the same bytes (4 KiB
/// aliasing), which the linker placing this static where the headers sit in
/// theirs cost every operation on the classes there. Nor is it where pages
/// start or where huge blocks do (half a page in), whose lines a program
/// touching a buffer a page apart keeps evicting from their cache set.
#[repr(C, align(4096))]
pub(crate) struct FastPath {
    _placed: [u8; 1024],
    /// Bit 0: the rseq path is on; bit 1: count hits (statistics) and bit 2:
    /// hardened mode, each of which sends every operation to the slow path.
    /// Stored after `slabs` is complete, with release ordering.
    flags: AtomicU32,
    /// The regions (`count << SLAB_SHIFT` bytes) and the rseq area offset,
    /// as the sections read them.
    slabs: Slabs,
}

pub(crate) static FAST: FastPath =
    FastPath { _placed: [0; 1024], flags: AtomicU32::new(0), slabs: Slabs::new(0, core::ptr::null_mut(), 0) };

/// `FastPath::flags` bits.
const RSEQ_ON: u32 = 1;
const COUNT_HITS: u32 = 2;
const HARDENED: u32 = 4;

/// Whether the fast path is on: the rseq bit alone (one compare).
#[inline(always)]
fn fast_path_on() -> bool {
    FAST.flags.load_acquire() == RSEQ_ON
}

/// Whether a path keeps the freed mark ([`freed`]). C's `free` sets it and
/// C's allocations clear it. Rust's `dealloc` frees each block once with
/// its layout by the language's contract and sets no mark, fast or slow, so
/// the blocks a Rust program's allocations get carry none to clear (and one
/// that does, freed by C, only costs that `free` its search).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Marks {
    /// C's calls: `free` marks, allocations clear.
    Kept,
    /// Rust's `GlobalAlloc` calls: neither.
    Skipped,
}

/// Pops an object of `class` from this CPU's region, its freed mark cleared.
#[inline(always)]
pub(crate) fn pop(class: usize) -> Result<usize, Miss> {
    let object = pop_unmarked(class)?;
    // SAFETY: just popped: a small object, the caller's now.
    unsafe { freed::clear(object) };
    Ok(object)
}

/// Pops an object of `class` for Rust's `alloc` ([`Marks::Skipped`]): as
/// [`pop`], without the store that clears the mark.
#[inline(always)]
pub(crate) fn pop_unmarked(class: usize) -> Result<usize, Miss> {
    if !fast_path_on() {
        return Err(Miss::NoCpu);
    }
    pop_section(class)
}

/// The pop section, for a caller that found the rseq bit set (in `FAST.flags`
/// or `MODE`).
#[inline(always)]
fn pop_section(class: usize) -> Result<usize, Miss> {
    // SAFETY: with the rseq bit set, `FAST.slabs` holds this process's
    // registered area offset and its regions, laid out as the sections expect
    // (stored before the bit, with release ordering).
    unsafe { rseq_sys::slab_pop::<Index, SLAB_SHIFT>(&FAST.slabs, class) }
}

/// Pushes `object` of `class` onto this CPU's region.
#[inline(always)]
pub(crate) fn push(class: usize, object: usize) -> Result<(), Miss> {
    if !fast_path_on() {
        return Err(Miss::NoCpu);
    }
    // SAFETY: the caller gives `object`, a small object, up; until the
    // section commits it is still the caller's alone.
    unsafe {
        if freed::mark_unless_marked(object) {
            return Err(Miss::Repeated);
        }
    }
    let pushed = push_section(class, object);
    if pushed.is_err() {
        // SAFETY: not pushed: still the caller's; the slow path marks it afresh.
        unsafe { freed::clear(object) };
    }
    pushed
}

/// Pushes `object` of `class` onto this CPU's region without the freed
/// mark: for Rust's `dealloc`, whose callers free each block once by
/// construction (the mark is for C's `free`, as glibc's tcache key is).
/// A block freed twice anyway is still caught when it reaches the central
/// list, or right away if it is the top of the cache.
#[inline(always)]
pub(crate) fn push_unmarked(class: usize, object: usize) -> Result<(), Miss> {
    if !fast_path_on() {
        return Err(Miss::NoCpu);
    }
    push_section(class, object)
}

/// The push section; see [`pop_section`].
#[inline(always)]
fn push_section(class: usize, object: usize) -> Result<(), Miss> {
    // SAFETY: as in `pop_section`; objects are at least 16-aligned, so bit 0 is clear.
    unsafe { rseq_sys::slab_push::<Index, SLAB_SHIFT>(&FAST.slabs, class, object) }
}

// Initialisation.

/// How the allocator runs in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// No allocation has happened yet.
    Undecided,
    /// Per-CPU caches on rseq, using glibc's registration.
    RseqGlibcArea,
    /// Per-CPU caches on rseq, with our own registration.
    RseqOwnArea,
    /// Per-CPU caches behind a CAS try-lock, because rseq is unavailable.
    Fallback(rseq_sys::Unavailable),
    /// Per-CPU caches behind a CAS try-lock, because `RSEQ_ALLOC_FORCE_FALLBACK=1`.
    ForcedFallback,
    /// No per-CPU caches (their memory could not be mapped): central lists only.
    CentralOnly,
}

impl Mode {
    /// In words: the text, then why rseq is unavailable, for the fallback
    /// it caused. What `Display` prints, for the summary, which is written
    /// without `core::fmt` (see `text`).
    pub(crate) fn reason(&self) -> (&'static str, Option<rseq_sys::Unavailable>) {
        match *self {
            Mode::Undecided => ("undecided (nothing allocated yet)", None),
            Mode::RseqGlibcArea => ("rseq with glibc's area", None),
            Mode::RseqOwnArea => ("rseq with our own area", None),
            Mode::Fallback(why) => ("fallback (atomic compare-and-swap): ", Some(why)),
            Mode::ForcedFallback => ("fallback (atomic compare-and-swap): forced by RSEQ_ALLOC_FORCE_FALLBACK", None),
            Mode::CentralOnly => ("central lists only: per-CPU caches could not be mapped", None),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (text, why) = self.reason();
        f.write_str(text)?;
        match why {
            Some(why) => write!(f, "{why}"),
            None => Ok(()),
        }
    }
}

static MODE: AtomicU32 = AtomicU32::new(0);

const MODE_RSEQ: u32 = 1;

const MODE_FALLBACK: u32 = 2;

const MODE_FORCED: u32 = 3;

const MODE_NO_REGIONS: u32 = 4;

/// Why the initialising thread could not register although the process can
/// use rseq (0: that did not happen).
static THREAD_REFUSED: AtomicU64 = AtomicU64::new(0);

fn encode_refusal(why: rseq_sys::Unavailable) -> u64 {
    use rseq_sys::Unavailable::*;
    let (tag, errno) = match why {
        NoKernelSupport => (1, 0),
        Forbidden(e) => (2, e),
        RegisteredElsewhere => (3, 0),
        FakeSuccess => (4, 0),
        Refused(e) => (5, e),
        UnsupportedTarget => (6, 0),
    };
    tag | (errno as u32 as u64) << 32
}

fn decode_refusal(word: u64) -> rseq_sys::Unavailable {
    use rseq_sys::Unavailable::*;
    let errno = (word >> 32) as u32 as i32;
    match word & 0xff {
        1 => NoKernelSupport,
        2 => Forbidden(errno),
        3 => RegisteredElsewhere,
        4 => FakeSuccess,
        6 => UnsupportedTarget,
        _ => Refused(errno),
    }
}

/// How the allocator runs.
pub(crate) fn mode() -> Mode {
    match MODE.load_acquire() {
        0 => Mode::Undecided,
        MODE_RSEQ => match rseq_sys::mode() {
            rseq_sys::Mode::OwnArea => Mode::RseqOwnArea,
            _ => Mode::RseqGlibcArea,
        },
        MODE_FALLBACK => match rseq_sys::mode() {
            rseq_sys::Mode::Unavailable(why) => Mode::Fallback(why),
            _ => Mode::Fallback(decode_refusal(THREAD_REFUSED.load_relaxed())),
        },
        MODE_FORCED => Mode::ForcedFallback,
        _ => Mode::CentralOnly,
    }
}

/// How the process wants the per-CPU layer to run, read once by the
/// runtime from the environment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    /// Use the CAS fallback even where rseq works.
    pub(crate) forced_fallback: bool,
    /// Count fast-path hits (every operation then takes the slow path).
    pub(crate) count_hits: bool,
    /// Hardened mode: every operation takes the slow path.
    pub(crate) hardened: bool,
}

/// Whether the mode is decided (acquire: what [`init`] set up before is visible).
#[inline(always)]
pub(crate) fn is_initialised() -> bool {
    MODE.load_acquire() != 0
}

/// Makes the per-CPU layer ready: maps the regions (lock-free: racing
/// threads each map, one publishes, the others unmap), and picks the mode.
/// Returns true in the one thread whose call decided it. Safe before
/// `main`, in any thread, and re-entrantly from a signal handler.
#[cold]
pub(crate) fn init(config: Config) -> bool {
    let ncpus = rseq_sys::possible_cpus();
    let bytes = (ncpus as usize) << SLAB_SHIFT;
    let Some(slabs) = os::map_once(&FAST.slabs.base, bytes) else {
        return MODE.cas_acq_rel(0, MODE_NO_REGIONS).is_ok();
    };
    debug_assert!(!slabs.is_null());
    FAST.slabs.count.store_release(ncpus);
    let count_hits = config.count_hits && hits::init(ncpus);
    freed::init(config.hardened);
    let chosen = match rseq_sys::mode() {
        _ if config.forced_fallback => MODE_FORCED,
        m if m.is_rseq() => match rseq_sys::register_current_thread() {
            Ok(()) => {
                let offset = rseq_sys::area_offset().unwrap_or(0);
                let flags =
                    RSEQ_ON | if count_hits { COUNT_HITS } else { 0 } | if config.hardened { HARDENED } else { 0 };
                FAST.slabs.rseq_offset.store_relaxed(offset);
                FAST.flags.store_release(flags);
                // Declared now, while the process most likely has one
                // thread: the kernel waits for an RCU grace period (ms) to
                // register a process that has several, and the first drain
                // of another CPU would pay it in the middle of the program.
                let _ = rseq_sys::register_rseq_fence();
                MODE_RSEQ
            }
            Err(why) => {
                // The process has rseq but this thread was refused (a sandbox
                // that allows only the first registration): say so, not "forced".
                let _ = THREAD_REFUSED.cas_relaxed(0, encode_refusal(why));
                MODE_FALLBACK
            }
        },
        _ => MODE_FALLBACK,
    };
    MODE.cas_acq_rel(0, chosen).is_ok()
}

/// A trip to the central lists a slow path made: how many of its kind
/// (refills of its class, or drains) came before it. The upkeep's clock
/// counts these; [`CentralTrip::NONE`] if the slow path made none. One
/// word, so that a slow path returns it with its object in two registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CentralTrip(u64);

impl CentralTrip {
    /// No trip.
    pub(crate) const NONE: CentralTrip = CentralTrip(u64::MAX);

    /// The trip that had `before` trips of its kind before it.
    pub(crate) const fn after(before: u64) -> CentralTrip {
        CentralTrip(if before == u64::MAX { 0 } else { before })
    }

    /// How many trips of its kind came before this one, if it is one.
    #[inline(always)]
    pub(crate) fn count(self) -> Option<u64> {
        (self != CentralTrip::NONE).then_some(self.0)
    }
}
