//! Statistics: readable at run time with [`stats()`], and printed to stderr
//! at exit when `RSEQ_ALLOC_STATS=1`.
//!
//! Misses (refills, drains) and central-list traffic are always counted, on
//! slow paths. Fast-path hits are counted only when `RSEQ_ALLOC_STATS` is
//! set: then every operation takes an instrumented path that also bumps a
//! per-CPU counter, so the uninstrumented fast path costs nothing extra.

use crate::central::CENTRAL;
use core::fmt;

use crate::percpu::{self, COUNTERS, Counters, Mode};
use crate::segment::PAGE_HEAP;
use crate::size_class::{CLASSES, SIZES};
use crate::sync::AtomicOps;
use crate::text::Line;

/// One size class's figures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Object size in bytes.
    pub size: usize,
    /// Allocations served by the CPU's cache (counted only with `RSEQ_ALLOC_STATS=1`).
    pub alloc_hits: u64,
    /// Frees absorbed by the CPU's cache (counted only with `RSEQ_ALLOC_STATS=1`).
    pub free_hits: u64,
    /// Refills: allocations that found the CPU's cache empty.
    pub alloc_misses: u64,
    /// Drains: frees that found the CPU's cache full.
    pub free_misses: u64,
    /// Objects moved from the central list to CPU caches or callers.
    pub central_taken: u64,
    /// Objects moved back to the central list.
    pub central_given: u64,
    /// Objects the class may cache, summed over the CPUs' caches (it adapts:
    /// `capacity` module).
    pub cpu_capacity: usize,
    /// Objects of the class cached in the CPUs' caches now.
    pub cpu_cached: usize,
}

/// A snapshot of the allocator's figures (taken without stopping anyone, so
/// counters may be a little apart).
#[derive(Clone, Copy, Debug)]
pub struct Stats {
    /// How the allocator runs.
    pub mode: Mode,
    /// Whether hardened mode (`RSEQ_ALLOC_HARDENED=1`) checks every block.
    pub hardened: bool,
    /// Whether fast-path hits are counted (`RSEQ_ALLOC_STATS=1`); if not,
    /// every class's `alloc_hits` and `free_hits` read 0.
    pub hits_counted: bool,
    /// rseq critical sections aborted and retried, process-wide.
    pub rseq_aborts: u64,
    /// Address space mapped: segments, huge blocks and per-CPU regions.
    pub mapped_bytes: usize,
    /// The process's resident memory (from `/proc/self/statm`).
    pub process_resident_bytes: usize,
    /// Bytes of free objects sitting in per-CPU caches.
    pub cpu_cached_bytes: usize,
    /// Bytes of free objects in the central lists' spans (including objects
    /// never handed out yet).
    pub central_free_bytes: usize,
    /// Bytes of free pages in the page heap that may still hold data (the
    /// rest of the free pages were given back or never touched).
    pub free_page_bytes: usize,
    /// Bytes of freed medium blocks kept whole for reuse.
    pub medium_kept_bytes: usize,
    /// Bytes of freed huge blocks kept mapped for reuse.
    pub huge_cached_bytes: usize,
    /// Bytes given back to the OS by trims (`madvise`d or unmapped), ever.
    pub released_bytes: usize,
    /// Segments the kernel is asked to back with transparent huge pages
    /// (those mapped once the heap is large; `RSEQ_ALLOC_HUGE_PAGES=0`:
    /// none), of 4 MiB each.
    pub huge_page_segments: usize,
    /// Objects moved from per-CPU caches to the central lists by drains, ever.
    pub drained_objects: u64,
    /// Rounds of upkeep (idle-CPU drains, decay), ever.
    pub upkeeps: u64,
    /// Of those, the rounds the allocator's background thread ran because
    /// no slow path had run one for a period.
    pub background_upkeeps: u64,
    /// CPU caches drained because the CPU was idle, ever.
    pub idle_drains: u64,
    /// CPU caches whose classes were re-sized, ever.
    pub rebalances: u64,
    /// Class stacks moved out of their home slots to grow, or back, ever
    /// (`slots`).
    pub stack_moves: u64,
    /// Per-CPU regions opened.
    pub regions_opened: usize,
    /// Per class, index 1 to 72 (index 0 unused).
    pub classes: [ClassStats; CLASSES + 1],
}

/// The allocator's figures now; `hardened` is hardened mode's switch.
pub(crate) fn collect(hardened: bool) -> Stats {
    let mut classes = [ClassStats::default(); CLASSES + 1];
    let (capacities, cached) = percpu::occupancy();
    for (class, c) in classes.iter_mut().enumerate().skip(1) {
        let (alloc_hits, free_hits) = percpu::hits::total(class);
        let (central_taken, central_given) = CENTRAL.transfers(class);
        *c = ClassStats {
            size: SIZES[class] as usize,
            alloc_hits,
            free_hits,
            alloc_misses: Counters::read(&COUNTERS.refills[class]),
            free_misses: Counters::read(&COUNTERS.drains[class]),
            central_taken,
            central_given,
            cpu_capacity: capacities[class],
            cpu_cached: cached[class],
        };
    }
    Stats {
        mode: percpu::mode(),
        hardened,
        hits_counted: percpu::hits::counted(),
        rseq_aborts: rseq_sys::aborts(),
        mapped_bytes: PAGE_HEAP.mapped_bytes() + percpu::mapped_bytes(),
        process_resident_bytes: process_resident_bytes(),
        cpu_cached_bytes: percpu::cached_bytes(),
        central_free_bytes: CENTRAL.free_bytes(),
        free_page_bytes: PAGE_HEAP.free_page_bytes().0,
        medium_kept_bytes: crate::medium::kept_bytes(),
        huge_cached_bytes: crate::huge::cached_bytes(),
        released_bytes: PAGE_HEAP.released.load_relaxed(),
        huge_page_segments: PAGE_HEAP.huge_page_segments(),
        drained_objects: Counters::read(&COUNTERS.drained_objects),
        upkeeps: crate::upkeep::RUNS.load_relaxed(),
        background_upkeeps: crate::upkeep::BACKGROUND_RUNS.load_relaxed(),
        idle_drains: Counters::read(&COUNTERS.idle_drains),
        rebalances: Counters::read(&COUNTERS.rebalances),
        stack_moves: Counters::read(&COUNTERS.stack_moves),
        regions_opened: Counters::read(&COUNTERS.regions_opened) as usize,
        classes,
    }
}

/// Resident set size of the process, read with raw system calls.
fn process_resident_bytes() -> usize {
    let mut buf = [0u8; 128];
    let text = crate::os::read_file(c"/proc/self/statm", &mut buf);
    // Second field: resident pages.
    let mut fields = text.split(|&b| b == b' ');
    let pages = fields
        .nth(1)
        .filter(|f| !f.is_empty() && f.iter().all(u8::is_ascii_digit))
        .map_or(0, |f| f.iter().fold(0usize, |n, &d| n * 10 + usize::from(d - b'0')));
    pages * crate::os::OS_PAGE
}

/// Prints `s` to descriptor `fd`, each line after `prefix`.
pub(crate) fn print(s: &Stats, fd: i32, prefix: &[u8]) {
    render(s, &mut |text| {
        let mut line = Line::new();
        line.push(prefix).push(text).write_to(fd);
    });
}

/// Readable figures: the mode, memory, events, then a row per size class
/// in use (the same text as the exit report, without its prefix).
impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut result = Ok(());
        render(self, &mut |text| {
            if result.is_ok() {
                result = f.write_str(core::str::from_utf8(text).unwrap_or("?")).and_then(|()| f.write_str("\n"));
            }
        });
        result
    }
}

/// Writes `s` as lines of text (without their newline), each passed to `out`.
fn render(s: &Stats, out: &mut dyn FnMut(&[u8])) {
    let mut line = Line::new();
    let (mode, why) = s.mode.reason();
    line.push(b"mode: ").push(mode.as_bytes());
    if let Some((before, errno, after)) = why.map(|why| why.reason()) {
        line.push(before.as_bytes());
        if let Some(errno) = errno {
            line.decimal(errno.unsigned_abs().into());
        }
        line.push(after.as_bytes());
    }
    if s.hardened {
        line.push(b", hardened (RSEQ_ALLOC_HARDENED)");
    }
    out(line.take());
    line.push(b"memory: mapped ")
        .decimal(kib(s.mapped_bytes))
        .push(b" KiB, process resident ")
        .decimal(kib(s.process_resident_bytes))
        .push(b" KiB; free but held: in CPU caches ")
        .decimal(kib(s.cpu_cached_bytes))
        .push(b" KiB, in central lists ")
        .decimal(kib(s.central_free_bytes))
        .push(b" KiB, in free pages ")
        .decimal(kib(s.free_page_bytes))
        .push(b" KiB, in kept medium blocks ")
        .decimal(kib(s.medium_kept_bytes))
        .push(b" KiB, in cached huge blocks ")
        .decimal(kib(s.huge_cached_bytes))
        .push(b" KiB; given back to the system so far ")
        .decimal(kib(s.released_bytes))
        .push(b" KiB; segments on huge pages ")
        .decimal(s.huge_page_segments as u64);
    out(line.take());
    line.push(b"events: ")
        .decimal(s.regions_opened as u64)
        .push(b" CPU caches opened, ")
        .decimal(s.rseq_aborts)
        .push(b" critical sections restarted by the kernel (rseq aborts), ")
        .decimal(s.upkeeps)
        .push(b" upkeep rounds (")
        .decimal(s.background_upkeeps)
        .push(b" on the background thread, ")
        .decimal(s.idle_drains)
        .push(b" idle CPUs' caches emptied, ")
        .decimal(s.rebalances)
        .push(b" caches re-sized), ")
        .decimal(s.drained_objects)
        .push(b" objects moved out of caches by drains, ")
        .decimal(s.stack_moves)
        .push(b" class stacks moved to grow or shrink");
    out(line.take());
    line.push(if s.hits_counted {
        b"per class (hits: served by the CPU's cache; misses: went to the central list):"
    } else {
        b"per class (hits are counted only with RSEQ_ALLOC_STATS=1; misses went to the central list):"
    });
    out(line.take());
    line.push(
        b"class   size    alloc-hits  alloc-misses     free-hits  free-misses  central-taken  central-given  cpu-capacity",
    );
    out(line.take());
    for (class, c) in s.classes.iter().enumerate().skip(1) {
        if c.central_taken + c.central_given + c.alloc_hits + c.free_hits == 0 {
            continue;
        }
        line.column(class as u64, 5);
        let columns = [
            (c.size as u64, 6),
            (c.alloc_hits, 13),
            (c.alloc_misses, 13),
            (c.free_hits, 13),
            (c.free_misses, 12),
            (c.central_taken, 14),
            (c.central_given, 14),
            (c.cpu_capacity as u64, 13),
        ];
        for (value, width) in columns {
            line.push(b" ").column(value, width);
        }
        out(line.take());
    }
}

fn kib(bytes: usize) -> u64 {
    (bytes >> 10) as u64
}
