//! Loom models of the allocator's concurrent slow paths, checked over every
//! interleaving: the fallback path's per-CPU region protocol (try-lock by
//! CAS, lazy formatting, pop, and push waking a dormant class), the drain
//! that empties a region from another thread (stop by CAS, empty, reopen),
//! and the slow-path lock guarding a batch transfer. They run the allocator's own code (`rseq_alloc::model`)
//! on test-owned structures, never through a global allocator.
//!
//! `RUSTFLAGS="--cfg rseq_alloc_loom" cargo test -p rseq-alloc-tests --release --test loom_models`

#![cfg(rseq_alloc_loom)]

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use rseq_alloc::model::{
    Geometry, Lock, RegionStore, drain_remote, hold_for_fork, pop, push, release, release_after_fork, try_hold,
    with_region,
};
use rseq_sys::slab_layout::{Header, first_free_slot};

/// One class (1) of two slots, dormant at first: its sentinel, the slot
/// right after the headers, is the one dormant classes share.
const HOME: [u32; 2] = [0, first_free_slot(2) as u32 + 1];
const CAPACITY: [u32; 2] = [0, 2];
const GEOMETRY: Geometry<'static> = Geometry { home: &HOME, capacity: &CAPACITY, freed_capacity: &CAPACITY };
const SLOTS: usize = HOME[1] as usize + CAPACITY[1] as usize;

/// A region as loom sees it: never initialised (state 0), like fresh memory.
struct ModelRegion {
    state: AtomicU64,
    openings: Lock,
    headers: [AtomicU64; 2],
    slots: [AtomicUsize; SLOTS],
}

impl ModelRegion {
    fn new() -> ModelRegion {
        ModelRegion {
            state: AtomicU64::new(0),
            openings: Lock::new(),
            headers: [AtomicU64::new(0), AtomicU64::new(0)],
            slots: std::array::from_fn(|_| AtomicUsize::new(0)),
        }
    }

    /// Items in the region once every thread is done (it must not be held).
    fn items(&self) -> Vec<usize> {
        match self.state.load(Ordering::Acquire) {
            0 => Vec::new(),
            1 => {
                let current = Header::unpack(self.headers[1].load(Ordering::Relaxed)).current;
                (HOME[1] as usize..current as usize).map(|i| self.slots[i].load(Ordering::Relaxed)).collect()
            }
            other => panic!("a region was left held (state {other})"),
        }
    }
}

impl RegionStore for ModelRegion {
    fn state(&self) -> &AtomicU64 {
        &self.state
    }

    fn openings(&self) -> &Lock {
        &self.openings
    }

    fn header(&self, class: usize) -> &AtomicU64 {
        &self.headers[class]
    }

    fn slot(&self, index: usize) -> &AtomicUsize {
        &self.slots[index]
    }
}

/// The central list stand-in: a vector behind the allocator's slow-path lock.
struct Central {
    lock: Lock,
    items: UnsafeCell<Vec<usize>>,
}

impl Central {
    fn take(&self) -> Option<usize> {
        let _guard = self.lock.lock();
        self.items.with_mut(|items| unsafe { (*items).pop() })
    }

    fn give(&self, item: usize) {
        let _guard = self.lock.lock();
        self.items.with_mut(|items| unsafe { (*items).push(item) });
    }

    fn drain(&self) -> Vec<usize> {
        let _guard = self.lock.lock();
        self.items.with_mut(|items| unsafe { std::mem::take(&mut *items) })
    }
}

/// Two threads that both prefer region 0 (so they fight over it and spill to
/// region 1) each allocate (pop, else take from central) and free (push,
/// else give to central) twice; three tokens must come out exactly once, and
/// no region may be left held.
#[test]
fn fallback_regions_conserve_objects_under_every_interleaving() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let regions = Arc::new([ModelRegion::new(), ModelRegion::new()]);
        let central = Arc::new(Central { lock: Lock::new(), items: UnsafeCell::new(vec![16, 32, 48]) });
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (regions, central) = (regions.clone(), central.clone());
                loom::thread::spawn(move || {
                    let start = 0;
                    for _ in 0..2 {
                        let popped = with_region(2, start, |i| &regions[i], GEOMETRY, |r| pop(r, 1));
                        let Some(item) = popped.flatten().or_else(|| central.take()) else { continue };
                        assert_eq!(item % 16, 0, "a sentinel or garbage was handed out");
                        let pushed = with_region(2, start, |i| &regions[i], GEOMETRY, |r| push(r, GEOMETRY, 1, item));
                        if pushed != Some(true) {
                            central.give(item);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut all: Vec<usize> = regions.iter().flat_map(|r| r.items()).collect();
        all.extend(central.drain());
        all.sort_unstable();
        assert_eq!(all, vec![16, 32, 48], "objects lost or duplicated");
    });
}

/// A drain from another thread (what `trim` and idle-CPU drains do) while a
/// worker allocates and frees through the same region: the region starts
/// open with two objects cached; the drainer stops it, moves everything to
/// the central list one object at a time, and reopens it. Every object must
/// come out exactly once, and the region must end open.
#[test]
fn drain_from_another_thread_conserves_objects() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let region = Arc::new(ModelRegion::new());
        assert!(try_hold(&*region, GEOMETRY));
        assert!(push(&*region, GEOMETRY, 1, 16) && push(&*region, GEOMETRY, 1, 32));
        release(&*region);
        let central = Arc::new(Central { lock: Lock::new(), items: UnsafeCell::new(vec![48]) });
        let worker = {
            let (region, central) = (region.clone(), central.clone());
            loom::thread::spawn(move || {
                for _ in 0..2 {
                    let popped = with_region(1, 0, |_| &*region, GEOMETRY, |r| pop(r, 1));
                    let Some(item) = popped.flatten().or_else(|| central.take()) else { continue };
                    let pushed = with_region(1, 0, |_| &*region, GEOMETRY, |r| push(r, GEOMETRY, 1, item));
                    if pushed != Some(true) {
                        central.give(item);
                    }
                }
            })
        };
        let drainer = {
            let (region, central) = (region.clone(), central.clone());
            loom::thread::spawn(move || {
                let mut batch = [0usize; 1];
                drain_remote(
                    &*region,
                    GEOMETRY,
                    &mut batch,
                    || true,
                    |class, items| {
                        assert_eq!(class, 1);
                        items.iter().for_each(|&item| central.give(item));
                    },
                    |_| {},
                )
            })
        };
        worker.join().unwrap();
        let drained = drainer.join().unwrap();
        let mut all: Vec<usize> = region.items();
        all.extend(central.drain());
        all.sort_unstable();
        assert_eq!(all, vec![16, 32, 48], "objects lost or duplicated (drained {drained:?})");
    });
}

/// The fork prepare handler (the openings lock, then `hold_for_fork`)
/// against a worker that opens the region (it starts never initialised),
/// pushes and pops through it: once `hold_for_fork` returns, no one else is
/// inside the region (a child copied then inherits it whole), which is
/// either still never initialised and untouched (the worker's opening waits
/// for the lock) or held by the handler alone until `release_after_fork`.
/// Every object comes out exactly once.
#[test]
fn fork_handler_holds_a_region_no_one_else_is_inside() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let region = Arc::new(ModelRegion::new());
        let central = Arc::new(Central { lock: Lock::new(), items: UnsafeCell::new(vec![16]) });
        let worker = {
            let (region, central) = (region.clone(), central.clone());
            loom::thread::spawn(move || {
                let item = central.take().unwrap();
                let pushed = with_region(1, 0, |_| &*region, GEOMETRY, |r| push(r, GEOMETRY, 1, item));
                if pushed != Some(true) {
                    central.give(item);
                }
                let popped = with_region(1, 0, |_| &*region, GEOMETRY, |r| pop(r, 1)).flatten();
                if let Some(item) = popped {
                    central.give(item);
                }
            })
        };
        let openings = region.openings.lock();
        hold_for_fork(&*region, true);
        // What a child would inherit: a copy taken now, with the worker
        // (which it does not have) wherever it was. Nothing may change it
        // while the handler holds the region, whatever the worker does.
        let snapshot = || (region.state.load(Ordering::Relaxed), region.headers[1].load(Ordering::Relaxed));
        let (held, header) = snapshot();
        match held {
            0 => assert_eq!(header, 0, "a region opened while the openings lock was held"),
            2 => {}
            other => panic!("the fork handler returned with the region in state {other}"),
        }
        loom::thread::yield_now();
        assert_eq!(snapshot(), (held, header), "someone was still inside the region");
        release_after_fork(&*region);
        drop(openings);
        worker.join().unwrap();
        let mut all: Vec<usize> = region.items();
        all.extend(central.drain());
        assert_eq!(all, vec![16], "objects lost or duplicated");
    });
}

/// Batch transfers as the central lists make them: a whole batch moves under
/// one hold of the allocator's lock (a refill takes two, a drain gives two
/// back). The lock must exclude (loom's UnsafeCell checks every access) and
/// publish what the previous holder wrote: every object ends up exactly once.
#[test]
fn slow_path_lock_excludes_and_publishes_batch_transfers() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(3);
    builder.check(|| {
        let central =
            Arc::new(Central { lock: Lock::new(), items: UnsafeCell::new((1..=4).map(|i| i * 16).collect()) });
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let central = central.clone();
                loom::thread::spawn(move || {
                    let batch: Vec<usize> = {
                        let _guard = central.lock.lock();
                        central.items.with_mut(|items| {
                            let items = unsafe { &mut *items };
                            let keep = items.len().saturating_sub(2);
                            items.split_off(keep)
                        })
                    };
                    let _guard = central.lock.lock();
                    central.items.with_mut(|items| unsafe { (*items).extend(batch) });
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut all = central.drain();
        all.sort_unstable();
        assert_eq!(all, vec![16, 32, 48, 64]);
    });
}

/// The lock's sleeping path: three threads contend (each waiter tries once,
/// then sets the sleepers bit and sleeps until an unlock bumps the wake-up
/// word). A wake-up lost in any interleaving leaves a waiter asleep in the
/// model's futex for good, which loom reports; every thread must get the lock.
#[test]
fn slow_path_lock_wakes_every_sleeper() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(|| {
        let central = Arc::new(Central { lock: Lock::new(), items: UnsafeCell::new(Vec::new()) });
        let threads: Vec<_> = (0..3)
            .map(|i| {
                let central = central.clone();
                loom::thread::spawn(move || {
                    let _guard = central.lock.lock();
                    central.items.with_mut(|items| unsafe { (*items).push(i) });
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut all = central.drain();
        all.sort_unstable();
        assert_eq!(all, vec![0, 1, 2]);
    });
}
