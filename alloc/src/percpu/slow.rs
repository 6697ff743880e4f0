//! The slow paths of a small allocation and a small free: a section that
//! missed (its class empty or full, its region not open, its thread not
//! registered) in rseq mode, or a region held by CAS in fallback mode.
//! Refill and drain are written once, over [`Cache`], which the two modes
//! implement.

use rseq_sys::Miss;

use super::adapt::{self, Flow};
use super::capacity::{self, MAX_BATCH};
use super::counters::COUNTERS;
use super::freed;
use super::hits;
use super::protocol::{self, WokenBy};
use super::region::{self, RawRegion, geometry};
use super::{CentralTrip, FAST, Index, MODE, MODE_RSEQ, Marks, SLAB_SHIFT, is_initialised, pop_section, push_section};
use crate::central::CENTRAL;
use crate::report::{self, Call};
use crate::sync::AtomicOps;

// Slow paths.

fn take_one(class: usize) -> *mut u8 {
    let mut one = [0usize; 1];
    if CENTRAL.take(class, &mut one, None) == 1 { one[0] as *mut u8 } else { core::ptr::null_mut() }
}

/// Allocation of `class` when the fast path missed (or is off); the layer
/// is initialised.
#[cold]
#[inline(never)]
pub(crate) fn alloc_slow(class: usize, marks: Marks) -> (*mut u8, CentralTrip) {
    debug_assert!(is_initialised());
    if MODE.load_acquire() != MODE_RSEQ {
        return fallback_alloc(class, marks);
    }
    let flags = FAST.flags.load_acquire();
    let (object, trip) = alloc_rseq(class, flags);
    if !object.is_null() && marks == Marks::Kept && freed::enabled() {
        // SAFETY: just handed out: a small object, the caller's now.
        unsafe { freed::clear(object as usize) };
    }
    (object, trip)
}

/// Marks `object` as freed, first reporting it if it carries the mark and
/// is free already (see `freed`); nothing for Rust's `dealloc`, whose
/// object this path would otherwise read, often from a line long evicted.
fn mark_freed(class: usize, object: usize, marks: Marks) {
    if marks == Marks::Skipped || !freed::enabled() {
        return;
    }
    // SAFETY: the caller gives `object`, a small object, up; it is still
    // the caller's until a section or a held region takes it.
    unsafe {
        if freed::is_marked(object) && freed::is_free(class, object) {
            report::double_free(Call::Free, object);
        }
        freed::mark(object);
    }
}

/// [`alloc_slow`] in rseq mode.
fn alloc_rseq(class: usize, flags: u32) -> (*mut u8, CentralTrip) {
    for _ in 0..4 {
        match pop_section(class) {
            Ok(object) => {
                hits::count_alloc(flags, class);
                return (object as *mut u8, CentralTrip::NONE);
            }
            Err(Miss::Exhausted) => {
                wake_here(class, WokenBy::Allocation);
                return refill(&ThisCpu, class);
            }
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
        Miss::Stopped => rseq_sys::current_index::<Index>().is_some_and(region::open),
        Miss::NoCpu => rseq_sys::register_current_thread().is_ok(),
        Miss::Exhausted | Miss::Repeated => false,
    }
}

/// Gives `class` its own slots on the CPU this thread runs on, if it is
/// dormant there (the first miss of a class on a CPU); true if it did.
fn wake_here(class: usize, by: WokenBy) -> bool {
    let geometry = geometry();
    region::replace_header_here(class, geometry.dormant().pack(), geometry.awake(class, by))
}

/// Free of `object` (of `class`) when the fast path missed (or is off).
#[cold]
#[inline(never)]
pub(crate) fn free_slow(class: usize, object: usize, marks: Marks) -> CentralTrip {
    debug_assert!(is_initialised());
    if MODE.load_acquire() != MODE_RSEQ {
        return fallback_free(class, object, marks);
    }
    let flags = FAST.flags.load_acquire();
    mark_freed(class, object, marks);
    for _ in 0..4 {
        match push_section(class, object) {
            Ok(()) => {
                hits::count_free(flags, class);
                return CentralTrip::NONE;
            }
            Err(Miss::Exhausted) => {
                if wake_here(class, WokenBy::Free) && push_section(class, object).is_ok() {
                    return CentralTrip::NONE;
                }
                return drain(&ThisCpu, class, object);
            }
            Err(Miss::Repeated) => report::double_free(Call::Free, object),
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

/// A per-CPU cache as refill and drain reach it.
trait Cache {
    /// The CPU whose region this is, if the thread can tell.
    fn cpu(&self) -> Option<u32>;
    /// Applies what the miss asked of `class`'s capacity (read on `cpu`).
    fn resize(&self, cpu: u32, class: usize, resize: capacity::Resize);
    /// Pushes a prefix of `objects` onto `class`'s stack; how many.
    fn push_batch(&self, class: usize, objects: &[usize]) -> usize;
    /// Pops up to `out.len()` objects of `class` into `out`; how many.
    fn pop_batch(&self, class: usize, out: &mut [usize]) -> usize;
}

/// rseq mode: the region of the CPU the thread runs on, through sections
/// (a migration between two steps makes a step act on the new CPU's
/// region, which suits it as well).
struct ThisCpu;

impl Cache for ThisCpu {
    fn cpu(&self) -> Option<u32> {
        rseq_sys::current_index::<Index>()
    }

    fn resize(&self, cpu: u32, class: usize, resize: capacity::Resize) {
        adapt::resize_here(cpu, class, resize);
    }

    fn push_batch(&self, class: usize, objects: &[usize]) -> usize {
        let mut pushed = 0;
        while pushed < objects.len() {
            // A section pushes at most `rseq_sys::MAX_BATCH` items: the rest
            // goes in the next.
            let rest = &objects[pushed..];
            // SAFETY: as in `pop_section`; every object is 16-aligned.
            match unsafe {
                rseq_sys::slab_push_batch::<Index, SLAB_SHIFT>(&FAST.slabs, class, rest.as_ptr(), rest.len())
            } {
                Ok(0) | Err(_) => break,
                Ok(k) => pushed += k,
            }
        }
        pushed
    }

    fn pop_batch(&self, class: usize, out: &mut [usize]) -> usize {
        let (mut popped, len) = (0, out.len());
        while popped < len {
            // Asked for at most a section's worth, a short pop means empty.
            let rest = &mut out[popped..len.min(popped + rseq_sys::MAX_BATCH)];
            // SAFETY: as in `pop_section`; `rest` has room for `rest.len()` items.
            match unsafe {
                rseq_sys::slab_pop_batch::<Index, SLAB_SHIFT>(&FAST.slabs, class, rest.as_mut_ptr(), rest.len())
            } {
                Ok(k) if k == rest.len() => popped += k,
                Ok(k) => return popped + k,
                Err(_) => break,
            }
        }
        popped
    }
}

/// Fallback mode: a region this thread holds.
impl Cache for RawRegion {
    fn cpu(&self) -> Option<u32> {
        Some(RawRegion::cpu(self))
    }

    fn resize(&self, _: u32, class: usize, resize: capacity::Resize) {
        adapt::resize_held(self, class, resize);
    }

    fn push_batch(&self, class: usize, objects: &[usize]) -> usize {
        objects.iter().take_while(|&&object| protocol::push(self, geometry(), class, object)).count()
    }

    fn pop_batch(&self, class: usize, out: &mut [usize]) -> usize {
        let mut n = 0;
        while n < out.len()
            && let Some(object) = protocol::pop(self, class)
        {
            out[n] = object;
            n += 1;
        }
        n
    }
}

/// `class` is empty in `cache`: takes a batch from the central list (after
/// the capacity policy had its say), keeps one object for the caller and
/// pushes the rest; what does not fit goes back.
fn refill(cache: &impl Cache, class: usize) -> (*mut u8, CentralTrip) {
    let trip = COUNTERS.refill(class);
    let cpu = cache.cpu();
    let resize = adapt::count_miss(cpu, class, Flow::Refill);
    if let Some(cpu) = cpu {
        cache.resize(cpu, class, resize);
    }
    let mut buf = [0usize; MAX_BATCH];
    let n = CENTRAL.take(class, &mut buf[..adapt::refill_batch(cpu, class)], cpu);
    // The list hands out the objects of its fullest spans first: they are
    // the caller's and then the top of the stack, so that live objects go
    // to full spans first and the emptier spans' objects, handed out last,
    // may yet go back unused (a refill may bring more than the next
    // allocations take).
    let Some((mine, rest)) = buf[..n].split_first_mut() else { return (core::ptr::null_mut(), trip) };
    let mine = *mine;
    rest.reverse();
    let pushed = cache.push_batch(class, rest);
    if pushed < rest.len() {
        CENTRAL.give(class, &rest[pushed..]);
    }
    (mine as *mut u8, trip)
}

/// `class` is full in `cache`: moves a batch of it, and `object`, to the
/// central list (after the capacity policy had its say).
fn drain(cache: &impl Cache, class: usize, object: usize) -> CentralTrip {
    let trip = COUNTERS.drain(class);
    let cpu = cache.cpu();
    let resize = adapt::count_miss(cpu, class, Flow::Drain);
    let mut buf = [0usize; MAX_BATCH + 1];
    buf[0] = object;
    let popped = cache.pop_batch(class, &mut buf[1..=adapt::drain_batch(cpu, class)]);
    if let Some(cpu) = cpu {
        cache.resize(cpu, class, resize);
    }
    CENTRAL.give(class, &buf[..1 + popped]);
    trip
}

/// Allocation in fallback mode: from a region this thread holds, refilled
/// if empty; from the central list if every region is busy.
fn fallback_alloc(class: usize, marks: Marks) -> (*mut u8, CentralTrip) {
    let mut trip = CentralTrip::NONE;
    let from_region = region::with_held(|held| match protocol::pop(held, class) {
        Some(object) => {
            hits::count_alloc(0, class);
            object as *mut u8
        }
        None => {
            protocol::wake(held, geometry(), class, WokenBy::Allocation);
            let object;
            (object, trip) = refill(held, class);
            object
        }
    });
    let object = match from_region {
        Some(object) if !object.is_null() => object,
        _ => take_one(class),
    };
    if !object.is_null() && marks == Marks::Kept && freed::enabled() {
        // SAFETY: just handed out: a small object, the caller's now.
        unsafe { freed::clear(object as usize) };
    }
    (object, trip)
}

/// Free in fallback mode: onto a region this thread holds, drained if
/// full; to the central list if every region is busy.
fn fallback_free(class: usize, object: usize, marks: Marks) -> CentralTrip {
    let done = region::with_held(|held| {
        if protocol::top(held, class) == Some(object) {
            report::double_free(Call::Free, object);
        }
        mark_freed(class, object, marks);
        if protocol::push(held, geometry(), class, object) {
            hits::count_free(0, class);
            return CentralTrip::NONE;
        }
        drain(held, class, object)
    });
    done.unwrap_or_else(|| {
        CENTRAL.give(class, &[object]);
        CentralTrip::NONE
    })
}
