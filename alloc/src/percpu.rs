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

use core::fmt;

use rseq_sys::slab_layout::{Header, SENTINEL_BIT, SLOT_BYTES, STATE_OPEN, STATE_UNINIT, Slabs, header_offset};
use rseq_sys::{ByCpuId, Miss};

use crate::capacity::{self, Activity, Resize};
use crate::central::CENTRAL;
use crate::class_slots::{self, Layout};
use crate::fallback::{self, WokenBy};
use crate::lock::Lock;
use crate::os;
use crate::size_class::{CLASSES, SIZES};
use crate::sync::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Which rseq field indexes the regions (see the closing note of issue 3 for
/// why `cpu_id` rather than `mm_cid`).
pub(crate) type Index = ByCpuId;

/// log2 of each region's size: 256 KiB, 32768 slots.
pub(crate) const SLAB_SHIFT: u32 = 18;

pub(crate) use crate::capacity::{MAX_BATCH, batch};

/// Where each class's stack is in every region (its home, or its growth range).
static LAYOUT: Layout = class_slots::layout(SLAB_SHIFT, UPKEEP_STATE_BYTES);

/// What the fast path reads: kept on one cache line.
#[repr(C, align(64))]
pub(crate) struct FastPath {
    /// Bit 0: the rseq path is on; bit 1: count hits (statistics) and bit 2:
    /// hardened mode, each of which sends every operation to the slow path.
    /// Stored after `slabs` is complete, with release ordering.
    flags: AtomicU32,
    /// The regions (`count << SLAB_SHIFT` bytes) and the rseq area offset,
    /// as the sections read them.
    slabs: Slabs,
}

pub(crate) static FAST: FastPath =
    FastPath { flags: AtomicU32::new(0), slabs: Slabs::new(0, core::ptr::null_mut(), 0) };

/// Statistics the slow paths keep.
pub(crate) static REFILLS: [AtomicU64; CLASSES + 1] = [const { AtomicU64::new(0) }; CLASSES + 1];
/// See [`REFILLS`].
pub(crate) static DRAINS: [AtomicU64; CLASSES + 1] = [const { AtomicU64::new(0) }; CLASSES + 1];
/// Regions opened so far.
pub(crate) static REGIONS_OPENED: AtomicUsize = AtomicUsize::new(0);

const RSEQ_ON: u32 = 1;
const COUNT_HITS: u32 = 2;
const HARDENED: u32 = 4;

/// Whether the fast path is on: the rseq bit alone (one compare).
#[inline(always)]
fn fast_path_on() -> bool {
    FAST.flags.load(Ordering::Acquire) == RSEQ_ON
}

/// Pops an object of `class` from this CPU's region.
#[inline(always)]
pub(crate) fn pop(class: usize) -> Result<usize, Miss> {
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
    push_section(class, object)
}

/// The push section; see [`pop_section`].
#[inline(always)]
fn push_section(class: usize, object: usize) -> Result<(), Miss> {
    // SAFETY: as in `pop_section`; objects are at least 16-aligned, so bit 0 is clear.
    unsafe { rseq_sys::slab_push::<Index, SLAB_SHIFT>(&FAST.slabs, class, object) }
}

// ---------------------------------------------------------------------------
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
    match MODE.load(Ordering::Acquire) {
        0 => Mode::Undecided,
        MODE_RSEQ => match rseq_sys::mode() {
            rseq_sys::Mode::OwnArea => Mode::RseqOwnArea,
            _ => Mode::RseqGlibcArea,
        },
        MODE_FALLBACK => match rseq_sys::mode() {
            rseq_sys::Mode::Unavailable(why) => Mode::Fallback(why),
            _ => Mode::Fallback(decode_refusal(THREAD_REFUSED.load(Ordering::Relaxed))),
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
    MODE.load(Ordering::Acquire) != 0
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
        return MODE.compare_exchange(0, MODE_NO_REGIONS, Ordering::AcqRel, Ordering::Acquire).is_ok();
    };
    debug_assert!(!slabs.is_null());
    FAST.slabs.count.store(ncpus, Ordering::Release);
    let count_hits = config.count_hits && hits::init(ncpus);
    let chosen = match rseq_sys::mode() {
        _ if config.forced_fallback => MODE_FORCED,
        m if m.is_rseq() => match rseq_sys::register_current_thread() {
            Ok(()) => {
                let offset = rseq_sys::area_offset().unwrap_or(0);
                let flags =
                    RSEQ_ON | if count_hits { COUNT_HITS } else { 0 } | if config.hardened { HARDENED } else { 0 };
                FAST.slabs.rseq_offset.store(offset, Ordering::Relaxed);
                FAST.flags.store(flags, Ordering::Release);
                MODE_RSEQ
            }
            Err(why) => {
                // The process has rseq but this thread was refused (a sandbox
                // that allows only the first registration): say so, not "forced".
                let _ = THREAD_REFUSED.compare_exchange(0, encode_refusal(why), Ordering::Relaxed, Ordering::Relaxed);
                MODE_FALLBACK
            }
        },
        _ => MODE_FALLBACK,
    };
    MODE.compare_exchange(0, chosen, Ordering::AcqRel, Ordering::Acquire).is_ok()
}

// ---------------------------------------------------------------------------
// Regions, as seen from slow paths.

fn region(cpu: u32) -> *mut u8 {
    let slabs = FAST.slabs.base.load(Ordering::Acquire);
    debug_assert!(!slabs.is_null() && cpu < FAST.slabs.count.load(Ordering::Relaxed));
    // SAFETY: `cpu < ncpus`, so the region is inside the mapping.
    unsafe { slabs.add((cpu as usize) << SLAB_SHIFT) }
}

fn state(region: *mut u8) -> &'static AtomicU64 {
    // SAFETY: the state word starts every region (8-aligned) and is only
    // accessed atomically (sections read it with a plain load, which is
    // atomic on x86-64).
    unsafe { &*region.cast::<AtomicU64>() }
}

fn header(region: *mut u8, class: usize) -> &'static AtomicU32 {
    // SAFETY: headers are 4-aligned words inside the region.
    unsafe { &*region.add(header_offset(class)).cast::<AtomicU32>() }
}

fn slot(region: *mut u8, index: usize) -> &'static AtomicUsize {
    debug_assert!(index < 1 << (SLAB_SHIFT - 3));
    // SAFETY: slots are 8-aligned words inside the region.
    unsafe { &*region.add(index * SLOT_BYTES).cast::<AtomicUsize>() }
}

/// Opens region `cpu` if it was never initialised; true if it is OPEN now.
fn open(cpu: u32) -> bool {
    let region = RawRegion(region(cpu));
    if fallback::open(&region, geometry()) {
        REGIONS_OPENED.fetch_add(1, Ordering::Relaxed);
        fallback::release(&region);
        return true;
    }
    state(region.0).load(Ordering::Acquire) == STATE_OPEN
}

// ---------------------------------------------------------------------------
// Slow paths.

fn take_one(class: usize) -> *mut u8 {
    let mut one = [0usize; 1];
    if CENTRAL.take(class, &mut one) == 1 { one[0] as *mut u8 } else { core::ptr::null_mut() }
}

/// A trip to the central lists a slow path made: how many of its kind
/// (refills of its class, or drains) came before it. The upkeep's clock
/// counts these; [`CentralTrip::NONE`] if the slow path made none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct CentralTrip(pub(crate) Option<u64>);

impl CentralTrip {
    /// No trip.
    pub(crate) const NONE: CentralTrip = CentralTrip(None);
}

/// Allocation of `class` when the fast path missed (or is off); the layer
/// is initialised.
#[cold]
#[inline(never)]
pub(crate) fn alloc_slow(class: usize) -> (*mut u8, CentralTrip) {
    debug_assert!(is_initialised());
    if MODE.load(Ordering::Acquire) != MODE_RSEQ {
        return fallback_alloc(class);
    }
    let flags = FAST.flags.load(Ordering::Acquire);
    for _ in 0..4 {
        match pop_section(class) {
            Ok(object) => {
                hits::count_alloc(flags, class);
                return (object as *mut u8, CentralTrip::NONE);
            }
            Err(Miss::Exhausted) => return refill(class),
            Err(miss) => {
                if !recover(miss) {
                    break;
                }
            }
        }
    }
    (take_one(class), CentralTrip::NONE)
}

/// After a section missed because the region is closed or the thread has no
/// CPU index: opens this CPU's region, or registers the thread; true if the
/// section is worth trying again.
fn recover(miss: Miss) -> bool {
    match miss {
        Miss::Stopped => rseq_sys::current_index::<Index>().is_some_and(open),
        Miss::NoCpu => rseq_sys::register_current_thread().is_ok(),
        Miss::Exhausted => false,
    }
}

/// Takes a batch from the central list, keeps one for the caller and pushes
/// the rest onto this CPU's region.
fn refill(class: usize) -> (*mut u8, CentralTrip) {
    let trip = CentralTrip(Some(REFILLS[class].fetch_add(1, Ordering::Relaxed)));
    wake_here(class, WokenBy::Allocation);
    let cpu = rseq_sys::current_index::<Index>();
    let resize = count_miss(cpu, class, Flow::Refill);
    if let Some(cpu) = cpu {
        resize_here(cpu, class, resize);
    }
    let mut batch_buf = [0usize; MAX_BATCH];
    let n = CENTRAL.take(class, &mut batch_buf[..refill_batch(cpu, class)]);
    if n == 0 {
        return (core::ptr::null_mut(), trip);
    }
    let mine = batch_buf[n - 1];
    let mut rest = &batch_buf[..n - 1];
    while !rest.is_empty() {
        // SAFETY: as in `pop_section`; every object is 16-aligned.
        let pushed =
            unsafe { rseq_sys::slab_push_batch::<Index, SLAB_SHIFT>(&FAST.slabs, class, rest.as_ptr(), rest.len()) };
        match pushed {
            Ok(k) => rest = &rest[k..],
            Err(_) => {
                CENTRAL.give(class, rest);
                break;
            }
        }
    }
    (mine as *mut u8, trip)
}

/// Gives `class` its own slots on the CPU this thread runs on, if it is
/// dormant there (the first miss of a class on a CPU); true if it did.
fn wake_here(class: usize, by: WokenBy) -> bool {
    let geometry = geometry();
    replace_header_here(class, geometry.dormant().pack(), geometry.awake(class, by))
}

/// Replaces `class`'s header on the CPU this thread runs on by `new` if it
/// reads `expected`, writing the class's own sentinel first (a wake, or a
/// move of `end`); true if it did.
///
/// Sound for any `new` that keeps the class's slots within the place its
/// stack is (home or growth range, `class_slots`), with `begin <= current
/// <= end`: the sentinel slot, `begin - 1`, is read by nobody while the
/// class is dormant, and otherwise (or for class 1, whose sentinel is the
/// shared one) already holds the value written;
/// and moving `end` needs no stop, since sections write above `current`
/// only speculatively and commit only a header they read.
fn replace_header_here(class: usize, expected: u32, new: Header) -> bool {
    let Some(begin) = LAYOUT.stack_begin(class, new) else {
        debug_assert!(false, "{new:?} is no stack of class {class}");
        return false;
    };
    debug_assert!(new.end - begin <= LAYOUT.room(class, begin));
    // SAFETY: as in `pop_section`; `new` keeps the layout's invariants and
    // the sentinel write is unobservable (see above).
    let replaced = unsafe {
        rseq_sys::slab_replace_header::<Index, SLAB_SHIFT>(&FAST.slabs, class, expected, new.pack(), begin as usize - 1)
    };
    replaced == Ok(true)
}

/// Free of `object` (of `class`) when the fast path missed (or is off).
#[cold]
#[inline(never)]
pub(crate) fn free_slow(class: usize, object: usize) -> CentralTrip {
    debug_assert!(is_initialised());
    if MODE.load(Ordering::Acquire) != MODE_RSEQ {
        return fallback_free(class, object);
    }
    let flags = FAST.flags.load(Ordering::Acquire);
    for _ in 0..4 {
        match push_section(class, object) {
            Ok(()) => {
                hits::count_free(flags, class);
                return CentralTrip::NONE;
            }
            Err(Miss::Exhausted) => return drain(class, object),
            Err(miss) => {
                if !recover(miss) {
                    break;
                }
            }
        }
    }
    CENTRAL.give(class, &[object]);
    CentralTrip::NONE
}

/// This CPU's region is full: moves a batch of it, and `object`, to the
/// central list.
fn drain(class: usize, object: usize) -> CentralTrip {
    if wake_here(class, WokenBy::Free) && push_section(class, object).is_ok() {
        return CentralTrip::NONE;
    }
    let trip = CentralTrip(Some(DRAINS[class].fetch_add(1, Ordering::Relaxed)));
    let cpu = rseq_sys::current_index::<Index>();
    let resize = count_miss(cpu, class, Flow::Drain);
    let mut buf = [0usize; MAX_BATCH + 1];
    buf[0] = object;
    // SAFETY: as in `pop_section`; `buf[1..]` holds `batch(class)` items.
    let popped = unsafe {
        rseq_sys::slab_pop_batch::<Index, SLAB_SHIFT>(&FAST.slabs, class, buf[1..].as_mut_ptr(), batch(class))
    }
    .unwrap_or(0);
    CENTRAL.give(class, &buf[..1 + popped]);
    if let Some(cpu) = cpu {
        resize_here(cpu, class, resize);
    }
    trip
}

// ---------------------------------------------------------------------------
// The fallback: the same regions behind a CAS try-lock (protocol in `fallback`).

/// A region in the mapping, as the fallback protocol sees it.
struct RawRegion(*mut u8);

impl RawRegion {
    /// The CPU this region belongs to.
    fn cpu(&self) -> u32 {
        ((self.0 as usize - FAST.slabs.base.load(Ordering::Relaxed) as usize) >> SLAB_SHIFT) as u32
    }
}

impl fallback::RegionStore for RawRegion {
    fn state(&self) -> &AtomicU64 {
        state(self.0)
    }

    fn openings(&self) -> &Lock {
        &OPENINGS
    }

    fn header(&self, class: usize) -> &AtomicU32 {
        header(self.0, class)
    }

    fn slot(&self, index: usize) -> &AtomicUsize {
        slot(self.0, index)
    }
}

fn geometry() -> fallback::Geometry<'static> {
    fallback::Geometry { home: &LAYOUT.home, capacity: &LAYOUT.initial, freed_capacity: &LAYOUT.freed }
}

/// Runs `f` on a region this thread holds: the one for its CPU if free,
/// else the next free one; `None` if every region is busy (or there are none).
fn with_region<T>(f: impl FnOnce(&RawRegion) -> T) -> Option<T> {
    let ncpus = FAST.slabs.count.load(Ordering::Acquire) as usize;
    if FAST.slabs.base.load(Ordering::Acquire).is_null() || ncpus == 0 {
        return None;
    }
    let start = os::current_cpu() as usize % ncpus;
    fallback::with_region(ncpus, start, |cpu| RawRegion(region(cpu as u32)), geometry(), f)
}

fn fallback_alloc(class: usize) -> (*mut u8, CentralTrip) {
    let from_region = with_region(|region| {
        if let Some(object) = fallback::pop(region, class) {
            hits::count_alloc(0, class);
            return (object as *mut u8, CentralTrip::NONE);
        }
        let trip = CentralTrip(Some(REFILLS[class].fetch_add(1, Ordering::Relaxed)));
        fallback::wake(region, geometry(), class, WokenBy::Allocation);
        let resize = count_miss(Some(region.cpu()), class, Flow::Refill);
        resize_held(region, class, resize);
        let mut buf = [0usize; MAX_BATCH];
        let n = CENTRAL.take(class, &mut buf[..refill_batch(Some(region.cpu()), class)]);
        if n == 0 {
            return (core::ptr::null_mut(), trip);
        }
        let mut pushed = 0;
        while pushed < n - 1 && fallback::push(region, geometry(), class, buf[pushed]) {
            pushed += 1;
        }
        if pushed < n - 1 {
            CENTRAL.give(class, &buf[pushed..n - 1]);
        }
        (buf[n - 1] as *mut u8, trip)
    });
    match from_region {
        Some((object, trip)) if !object.is_null() => (object, trip),
        Some((_, trip)) => (take_one(class), trip),
        None => (take_one(class), CentralTrip::NONE),
    }
}

fn fallback_free(class: usize, object: usize) -> CentralTrip {
    let done = with_region(|region| {
        if fallback::push(region, geometry(), class, object) {
            hits::count_free(0, class);
            return CentralTrip::NONE;
        }
        let trip = CentralTrip(Some(DRAINS[class].fetch_add(1, Ordering::Relaxed)));
        let resize = count_miss(Some(region.cpu()), class, Flow::Drain);
        let mut buf = [0usize; MAX_BATCH + 1];
        buf[0] = object;
        let mut n = 1;
        while n <= batch(class) {
            match fallback::pop(region, class) {
                Some(item) => buf[n] = item,
                None => break,
            }
            n += 1;
        }
        resize_held(region, class, resize);
        CENTRAL.give(class, &buf[..n]);
        trip
    });
    done.unwrap_or_else(|| {
        CENTRAL.give(class, &[object]);
        CentralTrip::NONE
    })
}

// ---------------------------------------------------------------------------
// Draining a region from any thread (trim, idle CPUs).

/// Held while draining: one drain at a time (`fork` takes it after the
/// regions, see `fork`).
pub(crate) static DRAIN_LOCK: Lock = Lock::new();
/// Objects moved from regions to the central lists by drains, ever.
pub(crate) static DRAINED_OBJECTS: AtomicU64 = AtomicU64::new(0);

/// Held by every opening of a region (`fallback::open`), and by the fork
/// handlers while they hold the regions.
pub(crate) static OPENINGS: Lock = Lock::new();

/// The fork prepare handler's step after it took [`OPENINGS`] and before
/// any other lock: waits (if `wait`) for every region another thread holds
/// and holds it (`fallback::hold_for_fork`), so that the child inherits
/// none held by a thread it does not have. In either mode; until
/// [`release_regions_after_fork`], sections miss and fallback threads find
/// every region busy, and both go to the central lists.
pub(crate) fn hold_regions_for_fork(wait: bool) {
    let Some(count) = regions() else { return };
    for cpu in 0..count {
        fallback::hold_for_fork(&RawRegion(region(cpu)), wait);
    }
}

/// Undoes [`hold_regions_for_fork`] (the fork's parent and child handlers).
pub(crate) fn release_regions_after_fork() {
    let Some(count) = regions() else { return };
    for cpu in 0..count {
        fallback::release_after_fork(&RawRegion(region(cpu)));
    }
}

/// How many regions there are, if they are mapped.
fn regions() -> Option<u32> {
    let count = FAST.slabs.count.load(Ordering::Acquire);
    (!FAST.slabs.base.load(Ordering::Acquire).is_null() && count > 0).then_some(count)
}

/// Moves every object cached in `cpu`'s region to the central lists (the
/// protocol is `fallback::drain`; in rseq mode the stop is followed by a
/// `membarrier` rseq fence of that CPU). While it runs, sections on that CPU
/// miss and their threads use the central lists; fallback threads use other
/// regions. Returns the bytes moved (0 if the region was busy, never opened,
/// or could not be fenced: a kernel before 5.10 or a seccomp filter).
pub(crate) fn drain_cpu(cpu: u32) -> usize {
    if FAST.slabs.base.load(Ordering::Acquire).is_null() || cpu >= FAST.slabs.count.load(Ordering::Acquire) {
        return 0;
    }
    let _guard = DRAIN_LOCK.lock();
    let rseq = MODE.load(Ordering::Acquire) == MODE_RSEQ;
    let mut batch = [0usize; MAX_BATCH];
    let mut bytes = 0;
    let drained = fallback::drain(
        &RawRegion(region(cpu)),
        geometry(),
        &mut batch,
        || !rseq || rseq_sys::fence_cpu(cpu).is_ok(),
        |class, objects| {
            CENTRAL.give(class, objects);
            bytes += objects.len() * SIZES[class] as usize;
        },
        |raw| send_home(raw.0),
    );
    DRAINED_OBJECTS.fetch_add(drained.unwrap_or(0) as u64, Ordering::Relaxed);
    bytes
}

/// In an emptied region this thread holds: moves every class home, and
/// gives the growth zone's pages back if any class was there (nothing
/// touches them again until a class grows, under `DRAIN_LOCK` or a hold).
fn send_home(region: *mut u8) {
    let mut moved = false;
    for class in 1..=CLASSES {
        let hdr = Header::unpack(header(region, class).load(Ordering::Relaxed));
        if LAYOUT.stack_begin(class, hdr).is_some_and(|begin| !LAYOUT.is_home(class, begin)) {
            move_stack(region, class, LAYOUT.home[class], LAYOUT.initial[class]);
            moved = true;
        }
    }
    if moved {
        let zone = LAYOUT.growth_zone();
        // SAFETY: the growth zone is page-aligned inside this region's
        // mapping, and with every class at home it holds nothing.
        unsafe { os::purge(region.add(zone.start * SLOT_BYTES), zone.len() * SLOT_BYTES) };
    }
}

/// Moves `class`'s stack, objects and all, to `to` (its home or its growth
/// range) with room for `capacity` objects, in a region this thread holds
/// (busy, and fenced in rseq mode). The caller leaves at most `capacity`
/// objects in it.
fn move_stack(region: *mut u8, class: usize, to: u16, capacity: u16) {
    let hdr = Header::unpack(header(region, class).load(Ordering::Relaxed));
    let Some(from) = LAYOUT.stack_begin(class, hdr).filter(|&from| from != to) else { return };
    let count = hdr.current - from;
    debug_assert!(count <= capacity && capacity <= LAYOUT.room(class, to));
    slot(region, to as usize - 1).store(SENTINEL_BIT, Ordering::Relaxed);
    for i in 0..count as usize {
        slot(region, to as usize + i).store(slot(region, from as usize + i).load(Ordering::Relaxed), Ordering::Relaxed);
    }
    header(region, class).store(Header { current: to + count, end: to + capacity }.pack(), Ordering::Relaxed);
    STACK_MOVES.fetch_add(1, Ordering::Relaxed);
}

/// Stacks moved between a home and a growth range, ever.
pub(crate) static STACK_MOVES: AtomicU64 = AtomicU64::new(0);

/// `class`'s objects cached and capacity, from its header (0 and 0 for a
/// class with no stack of its own).
fn fill(class: usize, word: u32) -> (usize, usize) {
    let hdr = Header::unpack(word);
    match LAYOUT.stack_begin(class, hdr) {
        Some(begin) => ((hdr.current - begin) as usize, (hdr.end - begin) as usize),
        None => (0, 0),
    }
}

/// Drains every CPU's region; returns the bytes moved.
pub(crate) fn drain_all() -> usize {
    (0..FAST.slabs.count.load(Ordering::Acquire)).map(drain_cpu).sum()
}

/// A digest of `cpu`'s region that changes whenever a section or a holder
/// changes a class's fill; 0 for a region that holds nothing.
fn fingerprint(cpu: u32) -> u64 {
    let region = region(cpu);
    if state(region).load(Ordering::Acquire) != STATE_OPEN {
        return 0;
    }
    let mut digest = 0u64;
    let mut cached = 0usize;
    for class in 1..=CLASSES {
        let word = header(region, class).load(Ordering::Relaxed);
        cached += fill(class, word).0;
        digest = (digest ^ u64::from(word)).wrapping_mul(0x100_0000_01b3);
    }
    if cached == 0 { 0 } else { digest | 1 }
}

/// Upkeep of every region: drains the regions of CPUs that did nothing
/// since the last round (their fingerprint did not change) and still cache
/// objects, and re-sizes the classes of the others (`capacity::plan`). A
/// CPU that allocates and frees in perfect balance looks idle too, and pays
/// one refill per period for it.
pub(crate) fn upkeep() {
    let ncpus = FAST.slabs.count.load(Ordering::Acquire);
    if FAST.slabs.base.load(Ordering::Acquire).is_null() || ncpus == 0 {
        return;
    }
    for cpu in 0..ncpus {
        let Some(last) = upkeep_state(cpu).map(|s| &s.fingerprint) else { return };
        let now = fingerprint(cpu);
        if now != 0 && now == last.load(Ordering::Relaxed) {
            drain_cpu(cpu);
            IDLE_DRAINS.fetch_add(1, Ordering::Relaxed);
        } else if now != 0 {
            rebalance(cpu);
        }
        // Written only if it changed: the state of a CPU never used is a
        // page never touched.
        let after = fingerprint(cpu);
        if after != last.load(Ordering::Relaxed) {
            last.store(after, Ordering::Relaxed);
        }
    }
}

// ---------------------------------------------------------------------------
// Adaptive capacity: what each class of each CPU did, and re-sizing.

/// Per CPU and class: refills and drains, halved at every round (so a
/// class that refills now and then never counts as one that only drains),
/// and the header at the last round.
#[repr(C)]
struct ClassState {
    refills: AtomicU32,
    drains: AtomicU32,
    last_header: AtomicU32,
    /// The class's current run of misses the same way ([`step_run`]).
    run: AtomicU32,
    /// The thread of the class's last miss ([`thread_tag`]).
    last_thread: AtomicU32,
    /// When the class last turned while it could grow (µs, wrapping: only
    /// differences below [`capacity::GROW_WINDOW_US`] matter).
    last_turn: AtomicU32,
}

/// What the upkeep keeps of one CPU: its region's fingerprint at the last
/// round, and each class's state. It lives in the CPU's region, on the
/// headers' page ([`Layout::state_slot`]), where a CPU in use has a page
/// resident anyway; zero bytes, as a fresh region has, are a valid state.
#[repr(C)]
struct UpkeepState {
    fingerprint: AtomicU64,
    classes: [ClassState; CLASSES + 1],
}

/// Bytes of [`UpkeepState`], kept in every region.
pub(crate) const UPKEEP_STATE_BYTES: usize = core::mem::size_of::<UpkeepState>();

const _: () = assert!(core::mem::align_of::<UpkeepState>() <= SLOT_BYTES);

fn upkeep_state(cpu: u32) -> Option<&'static UpkeepState> {
    if cpu >= regions()? {
        return None;
    }
    // SAFETY: `cpu` has a region, and `UPKEEP_STATE_BYTES` from slot
    // `state_slot` are kept for the state (no section or stack reaches
    // them: `class_slots`); the slot is 8-aligned, and all zeros is a
    // valid `UpkeepState` (atomics only).
    Some(unsafe { &*region(cpu).add(LAYOUT.state_slot as usize * SLOT_BYTES).cast::<UpkeepState>() })
}

fn class_state(cpu: u32, class: usize) -> Option<&'static ClassState> {
    upkeep_state(cpu).map(|state| &state.classes[class])
}

/// Objects a refill of `class` on `cpu` takes: a batch, or half the
/// class's current capacity if that is less (a read of the header that may
/// be stale: it only sizes the batch).
fn refill_batch(cpu: Option<u32>, class: usize) -> usize {
    let Some(cpu) = cpu.filter(|&c| c < FAST.slabs.count.load(Ordering::Relaxed)) else { return batch(class) };
    let (_, capacity) = fill(class, header(region(cpu), class).load(Ordering::Relaxed));
    batch(class).min(capacity / 2).max(1)
}

/// Which way a miss went.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// An allocation found the cache empty.
    Refill = 1,
    /// A free found it full.
    Drain = 2,
}

/// Halves a miss counter; returns its value before (a racy update: a miss
/// counted meanwhile may be lost, which only delays a decision).
fn decay(counter: &AtomicU32) -> u32 {
    let value = counter.load(Ordering::Relaxed);
    counter.store(value / 2, Ordering::Relaxed);
    value
}

/// A class's run of misses packed in one word: the way (`Flow as u32`, 0
/// before the first miss) in the low two bits, the misses that way in a row
/// above. Returns the word after a miss going `flow`, and, if that miss
/// turned, the length of the run it ended.
fn step_run(run: u32, flow: Flow) -> (u32, Option<u32>) {
    const WAY: u32 = 3;
    const ONE: u32 = 1 << 2;
    if run & WAY == flow as u32 { (run + ONE, None) } else { (flow as u32 | ONE, (run != 0).then_some(run / ONE)) }
}

/// Counts a miss of `class` on `cpu` (slow paths only) and says what to do
/// about its capacity (`capacity::on_miss`).
fn count_miss(cpu: Option<u32>, class: usize, flow: Flow) -> Resize {
    let Some(cpu) = cpu else { return Resize::Keep };
    let Some(state) = class_state(cpu, class) else { return Resize::Keep };
    let (mut refills, mut drains) = (state.refills.load(Ordering::Relaxed), state.drains.load(Ordering::Relaxed));
    match flow {
        Flow::Refill => refills = state.refills.fetch_add(1, Ordering::Relaxed) + 1,
        Flow::Drain => drains = state.drains.fetch_add(1, Ordering::Relaxed) + 1,
    }
    let (run, turn) = step_run(state.run.load(Ordering::Relaxed), flow);
    state.run.store(run, Ordering::Relaxed);
    // A swing is one thread's: a turn by another thread than the miss
    // before it is two flows meeting on this CPU (a producer refilling
    // after its consumer drained), which more room would only fill.
    let me = thread_tag();
    let same_thread = state.last_thread.load(Ordering::Relaxed) == me;
    state.last_thread.store(me, Ordering::Relaxed);
    let turn = turn.filter(|_| same_thread);
    match capacity::on_miss(class, refills, drains, turn) {
        // A class already as large as it may be does not read the clock,
        // a system call.
        Resize::Grow(_) if !below_largest(cpu, class) => Resize::Keep,
        Resize::Grow(objects) => {
            let now = (os::precise_ns() / 1000) as u32;
            let last = state.last_turn.swap(now, Ordering::Relaxed);
            if now.wrapping_sub(last) < capacity::GROW_WINDOW_US { Resize::Grow(objects) } else { Resize::Keep }
        }
        resize => resize,
    }
}

/// The calling thread, as a class's state records it: the low half of its
/// thread pointer (two live threads share it only if their thread control
/// blocks are a multiple of 4 GiB apart, and then a turn between them
/// merely counts as a swing).
fn thread_tag() -> u32 {
    crate::sync::current_thread() as u32
}

/// Whether `class` on `cpu` has less than the largest capacity it may have
/// (a racy read of its header; false for a dormant class).
fn below_largest(cpu: u32, class: usize) -> bool {
    let header = Header::unpack(header(region(cpu), class).load(Ordering::Relaxed));
    LAYOUT.stack_begin(class, header).is_some_and(|begin| header.end - begin < LAYOUT.reserved[class])
}

/// What a resize does to a class's stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    /// A new header, for the stack where it is.
    Header(Header),
    /// A move out of its home, to its growth range with this capacity.
    Move(u16),
}

/// What `resize` does to `class` on `cpu`, whose header reads `word`, if
/// anything: shrunk to its outflow capacity (never below `current`: the
/// objects above stay), brought back up to its smallest ordinary capacity,
/// or grown as asked, up to its room and as far as the CPU's budget
/// allows; a class that outgrows its home moves.
/// `None` for a dormant class, or a word read from a region never opened
/// (the thread moved to another CPU since its miss).
fn resized(cpu: u32, word: u32, class: usize, resize: Resize) -> Option<Change> {
    let header = Header::unpack(word);
    let begin = LAYOUT.stack_begin(class, header)?;
    let capacity = (header.end - begin) as usize;
    let end = match resize {
        Resize::Keep => return None,
        Resize::Shrink => (begin + capacity::outflow(class) as u16).max(header.current),
        Resize::AtLeastMin if capacity >= capacity::min(class) => return None,
        Resize::AtLeastMin => begin + capacity::min(class) as u16,
        Resize::Grow(objects) => {
            let room_in_budget = capacity::CPU_BUDGET.saturating_sub(capacity_bytes(cpu)) / SIZES[class] as usize;
            let grown = (capacity + objects.min(room_in_budget)).min(LAYOUT.reserved[class] as usize);
            if grown <= capacity {
                return None;
            }
            if grown > LAYOUT.room(class, begin) as usize {
                return Some(Change::Move(grown as u16));
            }
            begin + grown as u16
        }
    };
    (end != header.end).then_some(Change::Header(Header { current: header.current, end }))
}

/// Bytes of objects `cpu`'s region is sized for (a racy read of its headers).
fn capacity_bytes(cpu: u32) -> usize {
    let region = region(cpu);
    (1..=CLASSES)
        .map(|class| fill(class, header(region, class).load(Ordering::Relaxed)).1 * SIZES[class] as usize)
        .sum()
}

/// Applies `resize` to `class` on the CPU this thread runs on (read on
/// `cpu`; if the thread has moved, the compare fails or finds the same
/// header, which the new one suits as well). A move out of the class's
/// home stops and fences `cpu`'s region, as a drain does.
fn resize_here(cpu: u32, class: usize, resize: Resize) {
    let word = header(region(cpu), class).load(Ordering::Relaxed);
    match resized(cpu, word, class, resize) {
        Some(Change::Header(new)) => {
            replace_header_here(class, word, new);
        }
        Some(Change::Move(capacity)) => {
            with_stopped(cpu, |raw| {
                // If still at home (a drain may have moved it meanwhile),
                // where it holds fewer objects than `capacity`.
                let now = Header::unpack(header(raw.0, class).load(Ordering::Relaxed));
                if LAYOUT.stack_begin(class, now) == Some(LAYOUT.home[class]) {
                    move_stack(raw.0, class, LAYOUT.begin[class], capacity);
                }
            });
        }
        None => {}
    }
}

/// Applies `resize` to `class` in a region this thread holds.
fn resize_held(region: &RawRegion, class: usize, resize: Resize) {
    let word = header(region.0, class).load(Ordering::Relaxed);
    match resized(region.cpu(), word, class, resize) {
        Some(Change::Header(new)) => header(region.0, class).store(new.pack(), Ordering::Relaxed),
        Some(Change::Move(capacity)) => move_stack(region.0, class, LAYOUT.begin[class], capacity),
        None => {}
    }
}

/// Re-sizes `cpu`'s classes by what they did since the last round: reads
/// the activity without stopping anyone, and stops and fences the region
/// (as a drain does) only if some capacity changes; objects beyond a
/// shrunk class's new end go to the central lists.
fn rebalance(cpu: u32) {
    let region = region(cpu);
    let mut activity = [Activity::default(); CLASSES + 1];
    let mut capacity = [0usize; CLASSES + 1];
    for class in 1..=CLASSES {
        let Some(state) = class_state(cpu, class) else { return };
        let word = header(region, class).load(Ordering::Relaxed);
        // Dormant classes (capacity 0) stay so: `plan` leaves them alone.
        capacity[class] = fill(class, word).1;
        activity[class] = Activity {
            refills: decay(&state.refills),
            drains: decay(&state.drains),
            active: state.last_header.swap(word, Ordering::Relaxed) != word,
        };
    }
    let old = capacity;
    capacity::plan(&mut capacity, &activity);
    if capacity == old {
        return;
    }
    if with_stopped(cpu, |raw| resize_stopped(raw, cpu, &capacity, &old)).is_some() {
        REBALANCES.fetch_add(1, Ordering::Relaxed);
    }
}

/// Gives the classes of a region stopped by [`rebalance`] their planned
/// capacity (where it differs from `old`), moving the objects beyond it to
/// the central lists and a class that fits its home again back there.
fn resize_stopped(raw: &RawRegion, cpu: u32, capacity: &[usize; CLASSES + 1], old: &[usize; CLASSES + 1]) {
    let region = raw.0;
    let mut moved = [0usize; MAX_BATCH];
    for class in (1..=CLASSES).filter(|&c| capacity[c] != old[c]) {
        // Where the stack is now (a drain may have sent it home since).
        let Some(begin) = LAYOUT.stack_begin(class, Header::unpack(header(region, class).load(Ordering::Relaxed)))
        else {
            continue;
        };
        let capacity = capacity[class].min(LAYOUT.room(class, begin) as usize) as u16;
        let end = (begin + capacity) as usize;
        loop {
            let current = Header::unpack(header(region, class).load(Ordering::Relaxed)).current as usize;
            let excess = current.saturating_sub(end).min(MAX_BATCH);
            if excess == 0 {
                break;
            }
            let mut n = 0;
            while n < excess
                && let Some(object) = fallback::pop(raw, class)
            {
                moved[n] = object;
                n += 1;
            }
            CENTRAL.give(class, &moved[..n]);
        }
        if !LAYOUT.is_home(class, begin) && capacity <= LAYOUT.initial[class] {
            // Small enough for its home again.
            move_stack(region, class, LAYOUT.home[class], capacity);
        } else {
            let mut hdr = Header::unpack(header(region, class).load(Ordering::Relaxed));
            hdr.end = end as u16;
            header(region, class).store(hdr.pack(), Ordering::Relaxed);
        }
        let hdr = header(region, class).load(Ordering::Relaxed);
        if let Some(state) = class_state(cpu, class) {
            state.last_header.store(hdr, Ordering::Relaxed);
        }
    }
}

/// Runs `f` on `cpu`'s region stopped from outside, as a drain does: under
/// `DRAIN_LOCK`, taken OPEN→busy and, in rseq mode, fenced so that no
/// section which read OPEN can still commit; reopened after. `None` if the
/// region was not open (held, never opened) or could not be fenced.
fn with_stopped<T>(cpu: u32, f: impl FnOnce(&RawRegion) -> T) -> Option<T> {
    let _guard = DRAIN_LOCK.lock();
    let raw = RawRegion(region(cpu));
    let rseq = MODE.load(Ordering::Acquire) == MODE_RSEQ;
    if !fallback::stop(&raw, || !rseq || rseq_sys::fence_cpu(cpu).is_ok()) {
        return None;
    }
    let result = f(&raw);
    fallback::release(&raw);
    Some(result)
}

/// Regions re-sized, ever.
pub(crate) static REBALANCES: AtomicU64 = AtomicU64::new(0);

/// Per class, summed over the opened regions: the objects they may cache
/// now, and the objects they do (a racy snapshot).
pub(crate) fn occupancy() -> ([usize; CLASSES + 1], [usize; CLASSES + 1]) {
    let (mut capacity, mut cached) = ([0usize; CLASSES + 1], [0usize; CLASSES + 1]);
    if FAST.slabs.base.load(Ordering::Acquire).is_null() {
        return (capacity, cached);
    }
    for cpu in 0..FAST.slabs.count.load(Ordering::Acquire) {
        let region = region(cpu);
        if state(region).load(Ordering::Acquire) == STATE_UNINIT {
            continue;
        }
        for class in 1..=CLASSES {
            let (count, room) = fill(class, header(region, class).load(Ordering::Relaxed));
            capacity[class] += room;
            cached[class] += count;
        }
    }
    (capacity, cached)
}

/// Regions drained because their CPU was idle, ever.
pub(crate) static IDLE_DRAINS: AtomicU64 = AtomicU64::new(0);

/// Bytes of free objects cached in every region (a racy snapshot).
pub(crate) fn cached_bytes() -> usize {
    let (_, cached) = occupancy();
    cached.iter().zip(SIZES).map(|(&count, size)| count * size as usize).sum()
}

/// Bytes mapped for the regions.
pub(crate) fn mapped_bytes() -> usize {
    if FAST.slabs.base.load(Ordering::Acquire).is_null() {
        0
    } else {
        (FAST.slabs.count.load(Ordering::Relaxed) as usize) << SLAB_SHIFT
    }
}

/// Fast-path hits, counted only with `RSEQ_ALLOC_STATS` set: per CPU, one
/// counter per class and direction, bumped with an rseq increment (or an
/// atomic add in fallback mode).
pub(crate) mod hits {
    use super::{CLASSES, COUNT_HITS, Index, Ordering};
    use crate::sync::{AtomicPtr, AtomicU64};

    /// Each CPU's counters: `[alloc; CLASSES + 1]`, then `[free; CLASSES + 1]`.
    const SHIFT: u32 = 11;
    const _: () = assert!(2 * (CLASSES + 1) * 8 <= 1 << SHIFT);

    static COUNTERS: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());
    static FALLBACK: [[AtomicU64; CLASSES + 1]; 2] = [const { [const { AtomicU64::new(0) }; CLASSES + 1] }; 2];

    /// Maps the counters; false if that failed (hits are then not counted).
    pub(crate) fn init(ncpus: u32) -> bool {
        match crate::os::map((ncpus as usize) << SHIFT) {
            Some(mapped) => {
                COUNTERS.store(mapped.as_ptr(), Ordering::Release);
                true
            }
            None => false,
        }
    }

    /// Counts hit `index`; `flags` is what the caller read from `FAST.flags`
    /// (0 in fallback mode, where no section runs).
    fn count(flags: u32, index: usize) {
        let counters = COUNTERS.load(Ordering::Acquire);
        if counters.is_null() {
            return;
        }
        if flags & COUNT_HITS != 0 {
            let slabs = &super::FAST.slabs;
            let (offset, ncpus) = (slabs.rseq_offset.load(Ordering::Relaxed), slabs.count.load(Ordering::Relaxed));
            // SAFETY: with the flag set, the offset is the registered area's;
            // the counters cover `ncpus << SHIFT` bytes; `index` is inside one
            // CPU's block; only sections touch them.
            let done = unsafe { rseq_sys::percpu_add::<Index, SHIFT>(offset, counters.add(index * 8), ncpus, 1) };
            if done.is_ok() {
                return;
            }
        }
        FALLBACK[index / (CLASSES + 1)][index % (CLASSES + 1)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_alloc(flags: u32, class: usize) {
        count(flags, class);
    }

    pub(crate) fn count_free(flags: u32, class: usize) {
        count(flags, CLASSES + 1 + class);
    }

    /// Hits so far for `class`: (allocations, frees), summed over CPUs.
    pub(crate) fn total(class: usize) -> (u64, u64) {
        let mut alloc = FALLBACK[0][class].load(Ordering::Relaxed);
        let mut free = FALLBACK[1][class].load(Ordering::Relaxed);
        let counters = COUNTERS.load(Ordering::Acquire);
        if !counters.is_null() {
            for cpu in 0..super::FAST.slabs.count.load(Ordering::Relaxed) as usize {
                // SAFETY: reading counters inside the mapping; a racy snapshot is fine for statistics.
                unsafe {
                    let block = counters.add(cpu << SHIFT).cast::<u64>();
                    alloc += block.add(class).read_volatile();
                    free += block.add(CLASSES + 1 + class).read_volatile();
                }
            }
        }
        (alloc, free)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_count_misses_the_same_way_and_a_turn_reports_the_run_it_ends() {
        let mut run = 0;
        let mut turns = Vec::new();
        for flow in [Flow::Refill, Flow::Refill, Flow::Refill, Flow::Drain, Flow::Drain, Flow::Refill] {
            let (next, turn) = step_run(run, flow);
            run = next;
            turns.extend(turn);
        }
        assert_eq!(turns, [3, 2], "the first miss turns nothing");
        assert_eq!(step_run(run, Flow::Refill), (Flow::Refill as u32 | 2 << 2, None));
    }

    /// A miss reads the header of the CPU it then runs on, which may be a
    /// region never opened (all zeros): no resize may come of it (the
    /// capacity computed from it underflowed and aborted the fuzzer).
    #[test]
    fn a_header_never_written_is_not_resized() {
        for class in 1..=CLASSES {
            for resize in [Resize::Grow(batch(class)), Resize::Shrink, Resize::AtLeastMin, Resize::Keep] {
                assert_eq!(resized(0, 0, class, resize), None, "class {class}, {resize:?}");
            }
        }
    }
}
