//! What rseq-alloc decides on its own, and the statistics that show it,
//! with rseq-alloc as this test binary's `#[global_allocator]`: the upkeep
//! drains idle CPUs and decays free pages, a class's capacity grows when it
//! keeps missing (not for bursts handed between threads) until a working
//! set of 10,000 small blocks cycles in its CPU's cache, refills prefer
//! fuller spans, `trim` gives memory back, huge blocks reuse one mapping.
//! Each of those runs in a child of its own (`suite_*`), so that no other
//! test's memory or CPU is counted; the statistics' test runs again in
//! every other mode (`mode_suites!`).

#![cfg(not(rseq_alloc_loom))]

use std::alloc::{GlobalAlloc, Layout};
use std::collections::HashSet;

use rseq_alloc::{Mode, RseqAlloc};
use rseq_alloc_tests::modes;
use rseq_alloc_tests::stress::{self, Rng};

#[global_allocator]
static GLOBAL: RseqAlloc = RseqAlloc;

rseq_alloc_tests::mode_suites!();

/// Without any call to `trim`: a CPU whose thread went quiet has its cache
/// drained, and free pages go back to the OS after the decay period, paid
/// for by another thread's slow paths. In a child, with a 50 ms period.
#[test]
fn suite_upkeep_drains_idle_cpus_and_decays_free_pages() {
    if stress::allowed_cpus().len() < 2 {
        eprintln!("one CPU: skipped");
        return;
    }
    modes::child_passes("upkeep_child", &[("RSEQ_TEST_UPKEEP_CHILD", "1"), ("RSEQ_ALLOC_DECAY_MS", "50")]);
}

#[test]
fn upkeep_child() {
    if std::env::var_os("RSEQ_TEST_UPKEEP_CHILD").is_none() {
        return;
    }
    let cpus = stress::allowed_cpus();
    // SAFETY: no preconditions.
    let tid = unsafe { libc::gettid() };
    assert!(stress::pin(tid, &cpus[1..2]));
    // A thread on the other CPU fills its cache, then waits, idle.
    let (quiet_tx, quiet_rx) = std::sync::mpsc::channel::<()>();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let idle = std::thread::spawn(move || {
        // SAFETY: no preconditions.
        assert!(stress::pin(unsafe { libc::gettid() }, &cpus[0..1]));
        let blocks: Vec<Box<[u8; 64]>> = (0..200).map(|i| Box::new([i as u8; 64])).collect();
        drop(blocks);
        quiet_tx.send(()).unwrap();
        done_rx.recv().unwrap();
    });
    quiet_rx.recv().unwrap();
    // Memory freed into pages: 64 MiB of 256-byte blocks.
    let blocks: Vec<Box<[u8; 256]>> = (0..(64 << 20) / 256).map(|i| Box::new([i as u8; 256])).collect();
    drop(blocks);
    let before = rseq_alloc::stats();
    // Slow paths on this CPU (bursts that overflow and empty its cache)
    // until the upkeep has done both, or 10 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let layout = Layout::from_size_align(48, 8).unwrap();
    let mut after = before;
    while std::time::Instant::now() < deadline {
        // SAFETY: valid layout; every block freed with it.
        unsafe {
            let burst: Vec<*mut u8> = (0..2000).map(|_| RseqAlloc.alloc(layout)).collect();
            burst.into_iter().for_each(|p| RseqAlloc.dealloc(p, layout));
        }
        after = rseq_alloc::stats();
        if after.idle_drains > before.idle_drains
            && after.released_bytes > before.released_bytes
            && after.free_page_bytes == 0
        {
            break;
        }
    }
    done_tx.send(()).unwrap();
    idle.join().unwrap();
    eprintln!(
        "upkeep_child: {} upkeeps, {} idle drains, {} KiB given back, {} KiB left in free pages (was {} KiB)",
        after.upkeeps - before.upkeeps,
        after.idle_drains - before.idle_drains,
        (after.released_bytes - before.released_bytes) >> 10,
        after.free_page_bytes >> 10,
        before.free_page_bytes >> 10,
    );
    assert!(after.upkeeps > before.upkeeps, "no upkeep ran");
    assert!(after.idle_drains > before.idle_drains, "the idle CPU's cache was not drained");
    assert!(after.released_bytes > before.released_bytes, "no free page was given back");
    assert_eq!(after.free_page_bytes, 0, "free pages still hold data");
}

/// A program that frees its working set and allocates it again, over and
/// over (a server's request cycle, a batch job's), reuses the pages of the
/// first cycle: neither its small blocks' spans nor its medium blocks' go
/// back to the OS between cycles to be faulted in again. The period is a
/// minute, so that no upkeep round falls inside the cycles.
#[test]
fn suite_batch_cycles_reuse_their_pages() {
    modes::child_passes(
        "batch_cycles_child",
        &[("RSEQ_TEST_BATCH_CYCLES_CHILD", "1"), ("RSEQ_ALLOC_DECAY_MS", "60000")],
    );
}

fn minor_faults() -> i64 {
    // SAFETY: getrusage writes one `rusage` into the zeroed value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) }, 0);
    usage.ru_minflt
}

#[test]
fn batch_cycles_child() {
    if std::env::var_os("RSEQ_TEST_BATCH_CYCLES_CHILD").is_none() {
        return;
    }
    const CYCLES: usize = 20;
    // 40 MiB of 4 KiB blocks and 32 MiB of 64 KiB blocks: ten segments of
    // spans and eight of medium blocks, each page written.
    let cycle = |first: u8| {
        let small: Vec<Box<[u8; 4096]>> = (0..10_000).map(|i| Box::new([first.wrapping_add(i as u8); 4096])).collect();
        let medium: Vec<Vec<u8>> = (0..512).map(|i| vec![first ^ i as u8; 64 << 10]).collect();
        small.iter().map(|b| u64::from(b[4095])).sum::<u64>() + medium.iter().map(|v| u64::from(v[1000])).sum::<u64>()
    };
    assert_cycles_reuse_their_pages("batch_cycles_child", CYCLES, 15_000, cycle);
}

/// Runs `cycle` once and then `cycles` times more (each returns a checksum
/// of what it read), and asserts that the first faulted its working set in
/// (more than `first_at_least` minor faults) and the later ones, together,
/// faulted under half as many pages again.
fn assert_cycles_reuse_their_pages(who: &str, cycles: usize, first_at_least: i64, cycle: impl Fn(u8) -> u64) {
    let before_first = minor_faults();
    let mut checksum = cycle(0);
    let first = minor_faults() - before_first;
    let before = minor_faults();
    for c in 1..=cycles {
        checksum = checksum.wrapping_add(cycle(c as u8));
    }
    let later = minor_faults() - before;
    eprintln!(
        "{who}: {first} minor faults in the first cycle, {later} in the {cycles} cycles after ({} per cycle); checksum {checksum}",
        later / cycles as i64
    );
    assert!(first > first_at_least, "the first cycle did not fault its working set in ({first} faults)");
    assert!(later < first / 2, "{later} faults in {cycles} later cycles: they fault the working set in again");
}

/// The same for huge blocks: a working set of 40 blocks of 1.5 MiB (more
/// than a few, and 60 MiB) freed and allocated again reuses the mappings
/// of the first cycle instead of unmapping them at the free and faulting
/// them in again at the next allocation.
#[test]
fn suite_huge_block_cycles_reuse_their_mappings() {
    modes::child_passes("huge_cycles_child", &[("RSEQ_TEST_HUGE_CYCLES_CHILD", "1"), ("RSEQ_ALLOC_DECAY_MS", "60000")]);
}

#[test]
fn huge_cycles_child() {
    if std::env::var_os("RSEQ_TEST_HUGE_CYCLES_CHILD").is_none() {
        return;
    }
    const CYCLES: usize = 10;
    const SIZE: usize = 3 << 19;
    let cycle = |first: u8| {
        let blocks: Vec<Vec<u8>> = (0..40).map(|i| vec![1 | (first ^ i as u8); SIZE]).collect();
        blocks.iter().map(|b| u64::from(b[SIZE - 1])).sum::<u64>()
    };
    assert_cycles_reuse_their_pages("huge_cycles_child", CYCLES, 10_000, cycle);
}

/// A buffer that grows by `realloc` from a huge size to a few times it,
/// and is freed, cycle after cycle: the next cycle's first request takes
/// the whole freed mapping from the cache, and the growth must go on in
/// it, not shrink it to the request at the first step and fault its pages
/// in again at the next ones.
#[test]
fn suite_huge_growth_keeps_its_cached_mapping() {
    modes::child_passes("huge_growth_child", &[("RSEQ_TEST_HUGE_GROWTH_CHILD", "1"), ("RSEQ_ALLOC_DECAY_MS", "60000")]);
}

#[test]
fn huge_growth_child() {
    if std::env::var_os("RSEQ_TEST_HUGE_GROWTH_CHILD").is_none() {
        return;
    }
    const CYCLES: usize = 10;
    // 1.25 MiB to 9 MiB: the freed 9 MiB mapping is one the cache hands to
    // a request of 1.25 MiB (within its slack).
    const STEPS: [usize; 4] = [5 << 18, 5 << 19, 5 << 20, 9 << 20];
    let cycle = |first: u8| {
        let mut layout = Layout::from_size_align(STEPS[0], 16).unwrap();
        // SAFETY: a valid layout.
        let mut p = unsafe { GLOBAL.alloc(layout) };
        let mut written = 0;
        let mut sum = 0;
        for &size in &STEPS {
            if size > layout.size() {
                // SAFETY: `p` is live with `layout`; the new size is valid.
                p = unsafe { GLOBAL.realloc(p, layout, size) };
                layout = Layout::from_size_align(size, 16).unwrap();
            }
            assert!(!p.is_null());
            // SAFETY: the block holds `size` bytes; only its grown part is written.
            unsafe {
                for offset in (written..size).step_by(4096) {
                    p.add(offset).write(first ^ (offset >> 12) as u8);
                }
                sum += u64::from(p.add(size - 4096).read());
            }
            written = size;
        }
        // SAFETY: `p` is live with `layout`.
        unsafe { GLOBAL.dealloc(p, layout) };
        sum
    };
    assert_cycles_reuse_their_pages("huge_growth_child", CYCLES, 2000, cycle);
}

/// Blocks freed and allocated again land on pages that held data before
/// rather than on pages never touched: the page heap claims free dirty
/// pages first. Medium blocks fill four segments and one more is mapped
/// (the page heap looks at the newest segment first); the first four's
/// blocks are freed and allocated again, written whole: they must come
/// back on the freed pages, not on the new segment's untouched ones.
#[test]
fn suite_freed_pages_are_claimed_before_untouched_ones() {
    modes::child_passes("dirty_first_child", &[("RSEQ_TEST_DIRTY_FIRST_CHILD", "1"), ("RSEQ_ALLOC_DECAY_MS", "60000")]);
}

#[test]
fn dirty_first_child() {
    if std::env::var_os("RSEQ_TEST_DIRTY_FIRST_CHILD").is_none() {
        return;
    }
    const BLOCK: usize = 512 << 10;
    let write = |n: usize| -> Vec<Vec<u8>> { (0..n).map(|i| vec![i as u8 + 1; BLOCK]).collect() };
    let first = write(28);
    let newest = write(1);
    drop(first);
    let before = minor_faults();
    let again = write(28);
    let faults = minor_faults() - before;
    let pages = 28 * BLOCK / 4096;
    eprintln!("dirty_first_child: {faults} minor faults writing {pages} pages of blocks allocated again");
    // Zero here; a 512 KiB block on untouched pages is 128 faults.
    assert!(faults < 64, "{faults} faults for {pages} pages: blocks landed on untouched pages");
    assert!(again.iter().chain(&newest).all(|b| b[BLOCK - 1] != 0));
}

/// A program that frees most of its memory and then never calls the
/// allocator again gets it back within a few periods: the allocator's
/// background thread runs the rounds its slow paths no longer do. Without
/// the thread (`RSEQ_ALLOC_BACKGROUND=0`) the same memory stays, which
/// shows that it is the thread that gave it back.
#[test]
fn suite_an_idle_program_gets_its_free_memory_back() {
    modes::child_passes("idle_return_child", &[("RSEQ_TEST_IDLE_RETURN_CHILD", "1"), ("RSEQ_ALLOC_DECAY_MS", "100")]);
    modes::child_passes(
        "idle_return_child",
        &[("RSEQ_TEST_IDLE_RETURN_CHILD", "keeps"), ("RSEQ_ALLOC_DECAY_MS", "100"), ("RSEQ_ALLOC_BACKGROUND", "0")],
    );
}

/// Resident KiB from `/proc/self/statm`, read without allocating.
fn resident_kib_quietly() -> usize {
    let mut buf = [0u8; 128];
    // SAFETY: a NUL-terminated path; the descriptor is closed below.
    let fd = unsafe { libc::open(c"/proc/self/statm".as_ptr(), libc::O_RDONLY) };
    assert!(fd >= 0);
    // SAFETY: reads at most `buf.len()` bytes into the live buffer.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
    let text = &buf[..usize::try_from(n).unwrap()];
    let second = text.split(|&b| b == b' ').nth(1).unwrap();
    second.iter().fold(0, |n, &d| n * 10 + usize::from(d - b'0')) * 4
}

#[test]
fn idle_return_child() {
    let Some(expect) = std::env::var_os("RSEQ_TEST_IDLE_RETURN_CHILD") else { return };
    let keeps = expect == "keeps";
    let start = resident_kib_quietly();
    let small: Vec<Box<[u8; 4096]>> = (0..16_384).map(|i| Box::new([i as u8; 4096])).collect();
    let medium: Vec<Vec<u8>> = (0..256).map(|i| vec![i as u8; 128 << 10]).collect();
    let huge: Vec<Vec<u8>> = (0..12).map(|i| vec![1 | i as u8; 2 << 20]).collect();
    let peak = resident_kib_quietly();
    drop(small);
    drop(medium);
    drop(huge);
    let freed = resident_kib_quietly();
    // From here on, no allocation until the verdict: poll every 20 ms for
    // up to 5 s (50 periods) while the blocks' memory is resident.
    let began = std::time::Instant::now();
    let mut now = freed;
    let mut waited = std::time::Duration::ZERO;
    let deadline = std::time::Duration::from_secs(if keeps { 1 } else { 5 });
    while waited < deadline && now.saturating_sub(start) > (peak - start) / 10 {
        std::thread::sleep(std::time::Duration::from_millis(20));
        now = resident_kib_quietly();
        waited = began.elapsed();
    }
    let stats = rseq_alloc::stats();
    eprintln!(
        "idle_return_child: resident {start} KiB at start, {peak} at peak, {freed} after free, {now} after {} ms idle ({} rounds, {} on the background thread)",
        waited.as_millis(),
        stats.upkeeps,
        stats.background_upkeeps
    );
    assert!(peak - start > 90 << 10, "the blocks were not resident");
    if keeps {
        assert!(now - start.min(now) > (peak - start) / 2, "memory went back without the background thread");
        assert_eq!(stats.background_upkeeps, 0);
    } else {
        assert!(now - start.min(now) <= (peak - start) / 10, "over 10% of the peak still resident after 5 s idle");
        assert!(stats.background_upkeeps > 0, "no round ran on the background thread");
    }
}

/// Adaptive capacity: a class whose bursts overflow its cache drains at
/// first; its misses turn (refills, then drains) and each turn grows it by
/// the run before, and the same bursts then fit: the next ten drain at most
/// a quarter as often, each, as the first. In a child on one CPU, all its
/// threads, so that the class wakes on no other CPU between the child's
/// readings and changes what they count.
#[test]
fn suite_capacity_grows_for_a_class_that_keeps_missing() {
    modes::child_passes_on_one_cpu(
        "capacity_child",
        &[("RSEQ_TEST_CAPACITY_CHILD", "1"), ("RSEQ_ALLOC_DECAY_MS", "50")],
    );
}

/// The class the capacity children watch (96 B): its layout and its index
/// in the statistics.
fn watched_class() -> (Layout, usize) {
    let class = rseq_alloc::stats().classes.iter().position(|c| c.size == 96).unwrap();
    (Layout::from_size_align(96, 8).unwrap(), class)
}

#[test]
fn capacity_child() {
    if std::env::var_os("RSEQ_TEST_CAPACITY_CHILD").is_none() {
        return;
    }
    stress::pin_to_current_cpu().expect("pin to the current CPU");
    let (layout, class) = watched_class();
    let class_stats = || rseq_alloc::stats().classes[class];
    // One burst: 900 blocks allocated, then all freed: more than the cache
    // holds when the class wakes, less than it may grow to (`INITIAL` and
    // `MAX` in `alloc/src/percpu/capacity.rs`).
    let burst = || {
        let before = class_stats().free_misses;
        // SAFETY: valid layout; every block freed with it.
        unsafe {
            let blocks: Vec<*mut u8> = (0..900).map(|_| RseqAlloc.alloc(layout)).collect();
            blocks.into_iter().for_each(|p| RseqAlloc.dealloc(p, layout));
        }
        class_stats().free_misses - before
    };
    // SAFETY: valid layout; the block is freed with it.
    unsafe { RseqAlloc.dealloc(RseqAlloc.alloc(layout), layout) };
    let home = class_stats().cpu_capacity;
    let moves_before = rseq_alloc::stats().stack_moves;
    let first = burst();
    let capacity_before = class_stats().cpu_capacity;
    let last: u64 = (0..10).map(|_| burst()).sum();
    let stats = rseq_alloc::stats();
    // A trim empties the cache and sends the class home, with its home's room.
    rseq_alloc::trim();
    let trimmed = rseq_alloc::stats();
    eprintln!(
        "capacity_child: drains in the first burst {first}, in the next ten {last}; capacity {home} -> \
         {capacity_before} -> {} -> {} after a trim; class stacks moved {}",
        stats.classes[class].cpu_capacity,
        trimmed.classes[class].cpu_capacity,
        trimmed.stack_moves - moves_before
    );
    assert!(stats.classes[class].cpu_capacity > capacity_before, "the class did not grow");
    assert!(last * 4 <= first * 10, "bursts still drain: {first} in the first, {last} in the next ten");
    assert!(stats.stack_moves > moves_before, "the class grew in its home");
    assert_eq!(trimmed.classes[class].cpu_capacity, home, "the trim did not send the class home");
    assert_eq!(trimmed.classes[class].cpu_cached, 0);
    assert!(trimmed.stack_moves > stats.stack_moves, "the class did not move home");
    // It grows again, out of its home, and nothing was lost on the way:
    // every block is distinct and ours.
    // SAFETY: valid layout; every block freed once with it.
    unsafe {
        let blocks: Vec<*mut u8> = (0..900).map(|_| RseqAlloc.alloc(layout)).collect();
        let distinct: HashSet<usize> = blocks.iter().map(|&p| p as usize).collect();
        assert_eq!(distinct.len(), blocks.len(), "a block handed out twice after the moves");
        blocks.into_iter().for_each(|p| RseqAlloc.dealloc(p, layout));
    }
}

/// A working set of 10,000 blocks of 16 B, allocated and freed again and
/// again by one thread, comes to cycle in its CPU's cache, and so does one
/// of 10,000 blocks of 64 B: within twenty
/// cycles the class grows to hold it (a class may cache up to 16,384
/// objects, `MAX` in `alloc/src/percpu/capacity.rs`), and the next ten cycles make
/// no trip to the central list. So does one of 80 blocks of 48 KiB, a
/// small class too (up to 64 KiB), within the CPU's budget. In a child on
/// one CPU, as above.
#[test]
fn suite_a_working_set_of_small_blocks_cycles_in_the_cpu_cache() {
    modes::child_passes_on_one_cpu("working_set_child", &[("RSEQ_TEST_WORKING_SET_CHILD", "1")]);
}

#[test]
fn working_set_child() {
    if std::env::var_os("RSEQ_TEST_WORKING_SET_CHILD").is_none() {
        return;
    }
    stress::pin_to_current_cpu().expect("pin to the current CPU");
    for (size, count) in [(16, 10_000), (64, 10_000), (48 << 10, 80)] {
        let layout = Layout::from_size_align(size, 8).unwrap();
        let class = rseq_alloc::stats().classes.iter().position(|c| c.size == size);
        let class = class.unwrap_or_else(|| panic!("no small class of {size} B"));
        let misses = || {
            let c = rseq_alloc::stats().classes[class];
            c.alloc_misses + c.free_misses
        };
        let mut blocks = Vec::with_capacity(count);
        let mut cycle = || {
            // SAFETY: valid layout; every block freed once with it.
            unsafe {
                blocks.extend((0..count).map(|_| RseqAlloc.alloc(layout)));
                blocks.drain(..).rev().for_each(|p| RseqAlloc.dealloc(p, layout));
            }
        };
        (0..20).for_each(|_| cycle());
        let before = misses();
        (0..10).for_each(|_| cycle());
        let trips = misses() - before;
        let capacity = rseq_alloc::stats().classes[class].cpu_capacity;
        eprintln!(
            "working_set_child: {count} x {size} B: capacity {capacity}, trips in ten cycles after twenty {trips}"
        );
        assert_eq!(trips, 0, "{count} x {size} B do not fit in the CPU's cache of capacity {capacity}");
    }
}

/// Adaptive capacity, the other way: the same bursts, allocated by one
/// thread and freed by another on the same CPU (a producer and its
/// consumer), turn the class's misses as often, but a turn between two
/// threads is two flows meeting, no swing: the class grows no further than
/// a producer's refills make it (room for a batch), far short of the room a
/// swing of 900 blocks would get. In a child on one CPU, as above.
#[test]
fn suite_capacity_stays_for_bursts_handed_between_threads() {
    modes::child_passes_on_one_cpu(
        "capacity_handoff_child",
        &[("RSEQ_TEST_CAPACITY_HANDOFF_CHILD", "1"), ("RSEQ_ALLOC_DECAY_MS", "50")],
    );
}

#[test]
fn capacity_handoff_child() {
    if std::env::var_os("RSEQ_TEST_CAPACITY_HANDOFF_CHILD").is_none() {
        return;
    }
    stress::pin_to_current_cpu().expect("pin to the current CPU");
    let (layout, class) = watched_class();
    let class_stats = || rseq_alloc::stats().classes[class];
    // SAFETY: valid layout; the block is freed with it.
    unsafe { RseqAlloc.dealloc(RseqAlloc.alloc(layout), layout) };
    let (home, before) = (class_stats().cpu_capacity, class_stats());
    let (to_consumer, bursts) = std::sync::mpsc::channel::<Vec<usize>>();
    let (to_producer, consumed) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for blocks in bursts {
                // SAFETY: each block was allocated with `layout`, and is freed once.
                blocks.into_iter().for_each(|p| unsafe { RseqAlloc.dealloc(p as *mut u8, layout) });
                to_producer.send(()).unwrap();
            }
        });
        scope.spawn(move || {
            for _ in 0..11 {
                // SAFETY: valid layout; the consumer frees every block with it.
                let blocks: Vec<usize> = (0..900).map(|_| unsafe { RseqAlloc.alloc(layout) } as usize).collect();
                to_consumer.send(blocks).unwrap();
                consumed.recv().unwrap();
            }
        });
    });
    let after = class_stats();
    let (refills, drains) = (after.alloc_misses - before.alloc_misses, after.free_misses - before.free_misses);
    eprintln!(
        "capacity_handoff_child: {refills} refills and {drains} drains in 11 bursts; capacity {home} -> {}",
        after.cpu_capacity
    );
    assert!(refills >= 11 && drains >= 11, "the bursts did not turn the class's misses");
    assert!(after.cpu_capacity < 900 / 2, "bursts handed between threads grew the class to hold them");
}

/// Refills draw from fuller spans first: of four spans, two nearly empty
/// and two nearly full (their frees reaching the central lists in the order
/// full, full, empty, empty), new objects come from the nearly full ones,
/// so the nearly empty ones can empty and go back. In a child, pinned.
#[test]
fn suite_refills_prefer_fuller_spans() {
    modes::child_passes("fuller_spans_child", &[("RSEQ_TEST_FULLER_CHILD", "1"), ("RSEQ_ALLOC_DECAY_MS", "0")]);
}

#[test]
fn fuller_spans_child() {
    if std::env::var_os("RSEQ_TEST_FULLER_CHILD").is_none() {
        return;
    }
    stress::pin_to_current_cpu().expect("pin to the current CPU");
    // 256-byte objects: 256 to a one-page (64 KiB) span.
    let layout = Layout::from_size_align(256, 16).unwrap();
    let span_of = |p: usize| p >> 16;
    // SAFETY: valid layout throughout; every block is freed once with it.
    unsafe {
        let blocks: Vec<usize> = (0..1536).map(|_| RseqAlloc.alloc(layout) as usize).collect();
        let mut by_span: std::collections::BTreeMap<usize, Vec<usize>> = std::collections::BTreeMap::new();
        for &b in &blocks {
            by_span.entry(span_of(b)).or_default().push(b);
        }
        let full: Vec<Vec<usize>> = by_span.into_values().filter(|v| v.len() == 256).take(4).collect();
        assert_eq!(full.len(), 4, "four spans of our own");
        let (c, d, a, b) = (&full[0], &full[1], &full[2], &full[3]);
        let mut freed = std::collections::HashSet::new();
        // Nearly full spans get a few frees, nearly empty ones most; each
        // span's frees reach the central list (trim drains) before the next's.
        for (span, count) in [(c, 40), (d, 40), (a, 240), (b, 240)] {
            for &p in &span[..count] {
                RseqAlloc.dealloc(p as *mut u8, layout);
                freed.insert(p);
            }
            rseq_alloc::trim();
        }
        // A few refills' worth from an empty cache.
        let fresh: Vec<usize> = (0..64).map(|_| RseqAlloc.alloc(layout) as usize).collect();
        let emptying = [span_of(a[0]), span_of(b[0])];
        let from_emptying = fresh.iter().filter(|&&p| emptying.contains(&span_of(p))).count();
        eprintln!("fuller_spans_child: {from_emptying} of 64 new objects from the nearly empty spans");
        assert_eq!(from_emptying, 0, "refills drew from nearly empty spans");
        for p in fresh {
            RseqAlloc.dealloc(p as *mut u8, layout);
        }
        for &p in blocks.iter().filter(|p| !freed.contains(p)) {
            RseqAlloc.dealloc(p as *mut u8, layout);
        }
    }
}

/// Two threads that allocate small blocks one after the other, each on a
/// CPU of its own, get them from different spans: fresh objects are carved
/// from a span only by the CPU that began carving it, so the two threads'
/// blocks share no page (where one core's prefetches would take the
/// other's lines away, as false sharing does). The first thread's CPU
/// keeps a few carved objects cached, so its span is not used up. In a
/// child, on two CPUs.
#[test]
fn suite_cpus_carve_spans_of_their_own() {
    modes::child_passes("carve_child", &[("RSEQ_TEST_CARVE_CHILD", "1")]);
}

#[test]
fn carve_child() {
    if std::env::var_os("RSEQ_TEST_CARVE_CHILD").is_none() {
        return;
    }
    let cpus = stress::allowed_cpus();
    if cpus.len() < 2 {
        eprintln!("carve_child: one CPU allowed, no second CPU to carve");
        return;
    }
    // 700 bytes: a class of its own (704 B, 93 to a one-page span of
    // 64 KiB) that nothing else here uses.
    let layout = Layout::from_size_align(700, 8).unwrap();
    let blocks_on = |cpu: usize| {
        std::thread::spawn(move || {
            assert!(stress::pin(0, &[cpu]), "pin to CPU {cpu}");
            // SAFETY: valid layout; freed below with it.
            (0..16).map(|_| unsafe { RseqAlloc.alloc(layout) } as usize).collect::<Vec<usize>>()
        })
        .join()
        .unwrap()
    };
    let (first, second) = (blocks_on(cpus[0]), blocks_on(cpus[1]));
    let spans = |blocks: &[usize]| -> HashSet<usize> { blocks.iter().map(|&b| b >> 16).collect() };
    let shared = spans(&first).intersection(&spans(&second)).count();
    eprintln!("carve_child: CPUs {} and {}: {shared} spans hold blocks of both threads", cpus[0], cpus[1]);
    assert_eq!(shared, 0, "two CPUs' first refills carved one span");
    for b in first.into_iter().chain(second) {
        // SAFETY: allocated above with this layout, freed once.
        unsafe { RseqAlloc.dealloc(b as *mut u8, layout) };
    }
}

/// The first block of a class a refill hands out is not its span's first
/// object: that one is page-aligned in every class, and a loop that
/// allocates and frees blocks of many sizes would keep one such block per
/// class, all in one L1 set, evicting each other. In a child, where the
/// classes below are fresh.
#[test]
fn suite_first_blocks_of_fresh_classes_are_not_page_aligned() {
    modes::child_passes("first_blocks_child", &[("RSEQ_TEST_FIRST_BLOCKS_CHILD", "1")]);
}

#[test]
fn first_blocks_child() {
    if std::env::var_os("RSEQ_TEST_FIRST_BLOCKS_CHILD").is_none() {
        return;
    }
    // Odd sizes of twelve classes the test harness hardly uses: their
    // first blocks come from fresh spans.
    let layouts: Vec<Layout> = [720, 912, 1200, 1488, 1776, 2224, 2800, 3504, 4400, 5600, 7000, 9000]
        .iter()
        .map(|&size| Layout::from_size_align(size, 8).unwrap())
        .collect();
    // SAFETY: valid layouts; each block is freed below with its own.
    let blocks: Vec<usize> = layouts.iter().map(|&layout| unsafe { RseqAlloc.alloc(layout) } as usize).collect();
    let aligned = blocks.iter().filter(|&&b| b % 4096 == 0).count();
    eprintln!("first_blocks_child: {aligned} of {} first blocks page-aligned", blocks.len());
    assert!(aligned <= blocks.len() / 2, "{aligned} of {} first blocks are page-aligned", blocks.len());
    for (b, layout) in blocks.into_iter().zip(layouts) {
        // SAFETY: allocated above with this layout, freed once.
        unsafe { RseqAlloc.dealloc(b as *mut u8, layout) };
    }
}

/// Free everything, trim, and the process's resident memory (from
/// `/proc/self/statm`) falls back to near where it started: in a child, so
/// that no other test's memory is counted.
#[test]
fn suite_trim_gives_memory_back() {
    modes::child_passes("trim_child", &[("RSEQ_TEST_TRIM_CHILD", "1")]);
}

fn resident_kib() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    statm.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 4
}

#[test]
fn trim_child() {
    if std::env::var_os("RSEQ_TEST_TRIM_CHILD").is_none() {
        return;
    }
    let start = resident_kib();
    let mut blocks: Vec<Box<[u8; 256]>> = Vec::with_capacity(1 << 20);
    for i in 0..(256 << 20) / 256 {
        blocks.push(Box::new([i as u8; 256]));
    }
    let mixed: Vec<Vec<u8>> = (0..2000).map(|i| vec![3u8; 1 + (i * 997) % 200_000]).collect();
    let peak = resident_kib();
    drop(blocks);
    drop(mixed);
    let freed = resident_kib();
    let released = rseq_alloc::trim();
    let after = resident_kib();
    let stats = rseq_alloc::stats();
    eprintln!(
        "trim_child: resident {start} KiB at start, {peak} at peak, {freed} after free, {after} after trim ({released} bytes given back; {} KiB still in free pages)",
        stats.free_page_bytes >> 10
    );
    assert!(peak - start > 200 << 10, "the blocks were not resident");
    assert!(after - start.min(after) < (peak - start) / 20, "trim left over 5% of the peak resident");
    assert!(released > 0 && stats.released_bytes >= released);
}

/// A heap past 64 MiB of small blocks: the segments mapped from there on
/// are advised to use transparent huge pages and hold only spans whose
/// every 4 KiB page starts a block, so blocks of 60 KiB used for their
/// first bytes stay as resident as on small pages; a trim takes every
/// segment back to small pages. `RSEQ_ALLOC_HUGE_PAGES=0` advises none.
/// In children, so that the heap is this test's alone.
#[test]
fn suite_a_large_heap_of_small_blocks_goes_on_huge_pages() {
    modes::child_passes("huge_pages_child", &[("RSEQ_TEST_HUGE_PAGES_CHILD", "1")]);
    modes::child_passes("huge_pages_child", &[("RSEQ_TEST_HUGE_PAGES_CHILD", "off"), ("RSEQ_ALLOC_HUGE_PAGES", "0")]);
}

/// The `VmFlags` of the mapping holding `addr`, from `/proc/self/smaps`.
fn vm_flags(addr: usize) -> Vec<String> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut inside = false;
    for line in smaps.lines() {
        let range = line.split_once(' ').and_then(|(range, _)| range.split_once('-'));
        if let Some((Ok(start), Ok(end))) =
            range.map(|(a, b)| (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16)))
        {
            inside = (start..end).contains(&addr);
        } else if inside && let Some(flags) = line.strip_prefix("VmFlags:") {
            return flags.split_whitespace().map(str::to_string).collect();
        }
    }
    panic!("no mapping holds {addr:#x}")
}

#[test]
fn huge_pages_child() {
    let Some(expect) = std::env::var_os("RSEQ_TEST_HUGE_PAGES_CHILD") else { return };
    let on = expect != "off";
    if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
        eprintln!("huge_pages_child: a kernel without transparent huge pages: skipped");
        return;
    }
    let advised = |p: *const u8| vm_flags(p as usize).iter().any(|f| f == "hg");
    // 128 MiB of 256-byte blocks: 32 segments and more.
    let small: Vec<Box<[u8; 256]>> = (0..(128 << 20) / 256).map(|i| Box::new([i as u8; 256])).collect();
    let first: *const u8 = small[0].as_ptr();
    let last: *const u8 = small[small.len() - 1].as_ptr();
    let stats = rseq_alloc::stats();
    eprintln!("huge_pages_child: {} segments on huge pages", stats.huge_page_segments);
    assert!(!advised(first), "the heap's first segments keep small pages");
    if !on {
        assert_eq!(stats.huge_page_segments, 0);
        assert!(!advised(last));
        return;
    }
    assert!(stats.huge_page_segments >= 10, "{} segments on huge pages", stats.huge_page_segments);
    assert!(advised(last), "the last block's segment is not advised to use huge pages");
    // 400 blocks of 60 KiB (a small class whose objects span pages) and 100
    // of 200 KiB (medium), each written at its first byte only: they come
    // from segments on small pages, so each costs a page or two of
    // resident memory, not the 60 or 200 KiB a huge page would make resident.
    let before = resident_kib();
    let sparse: Vec<Vec<u8>> =
        (0..400).map(|_| Vec::with_capacity(60 << 10)).chain((0..100).map(|_| Vec::with_capacity(200 << 10))).collect();
    for v in &sparse {
        // SAFETY: inside the vector's capacity.
        unsafe { v.as_ptr().cast_mut().write_volatile(1) };
        assert!(!advised(v.as_ptr()), "a block of {} bytes on a segment advised to use huge pages", v.capacity());
    }
    let grown = resident_kib() - before;
    eprintln!("huge_pages_child: 500 sparse blocks added {grown} KiB resident");
    // Where the system puts every mapping on huge pages (`always`), the
    // kernel decides, not the allocator.
    let everywhere = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .is_ok_and(|mode| mode.contains("[always]"));
    assert!(everywhere || grown < 8 << 10, "500 blocks touched at one byte each added {grown} KiB resident");
    drop(sparse);
    drop(small);
    rseq_alloc::trim();
    assert_eq!(rseq_alloc::stats().huge_page_segments, 0, "a trim leaves segments on huge pages");
}

/// A freed huge block left unused for a sixteenth of the period gives its
/// pages back at a slow path's look at the clock, long before an upkeep
/// round would unmap it, and keeps its mapping: the next request of its
/// size gets it again, reading zero. In a child with a 1.6 s period (pages
/// back after 100 ms), so that no other test's blocks are counted.
#[test]
fn suite_an_unused_huge_block_gives_its_pages_back_early() {
    modes::child_passes(
        "huge_idle_child",
        &[("RSEQ_TEST_HUGE_IDLE_CHILD", "1"), ("RSEQ_ALLOC_DECAY_MS", "1600"), ("RSEQ_ALLOC_BACKGROUND", "0")],
    );
}

#[test]
fn huge_idle_child() {
    if std::env::var_os("RSEQ_TEST_HUGE_IDLE_CHILD").is_none() {
        return;
    }
    let layout = Layout::from_size_align(8 << 20, 16).unwrap();
    // SAFETY: a valid layout; the block is written inside its size and freed with it.
    let first = unsafe {
        let p = GLOBAL.alloc(layout);
        assert!(!p.is_null());
        p.write_bytes(7, layout.size());
        GLOBAL.dealloc(p, layout);
        p
    };
    let freed = resident_kib();
    let began = std::time::Instant::now();
    // Slow paths (bursts far past the CPU cache's capacity) until the pages
    // are back, or 5 s.
    let small = Layout::from_size_align(48, 8).unwrap();
    let mut now = freed;
    while freed - now.min(freed) < 6 << 10 && began.elapsed() < std::time::Duration::from_secs(5) {
        // SAFETY: valid layout; every block freed with it.
        unsafe {
            let burst: Vec<*mut u8> = (0..50_000).map(|_| GLOBAL.alloc(small)).collect();
            burst.into_iter().for_each(|p| GLOBAL.dealloc(p, small));
        }
        now = resident_kib();
    }
    let waited = began.elapsed();
    let stats = rseq_alloc::stats();
    eprintln!(
        "huge_idle_child: resident {freed} KiB after the free, {now} KiB {} ms later; {} KiB cached, {} rounds",
        waited.as_millis(),
        stats.huge_cached_bytes >> 10,
        stats.upkeeps
    );
    assert!(
        freed - now.min(freed) >= 6 << 10,
        "the freed block's pages still resident after {} ms",
        waited.as_millis()
    );
    assert!(
        waited >= std::time::Duration::from_millis(90),
        "pages back after {} ms, before the block sat unused",
        waited.as_millis()
    );
    assert!(stats.huge_cached_bytes >= layout.size(), "the mapping was not kept");
    // SAFETY: as above.
    unsafe {
        let again = GLOBAL.alloc_zeroed(layout);
        assert_eq!(again, first, "the cached mapping was not reused");
        assert!(std::slice::from_raw_parts(again, layout.size()).iter().all(|&b| b == 0));
        GLOBAL.dealloc(again, layout);
    }
}

/// Huge blocks of varied sizes, allocated, touched and freed in a loop (the
/// `large` workload's pattern), settle on one cached mapping that grows by
/// `mremap` when a request needs more: resident memory stays near one
/// block's touched pages instead of one mapping's per size. In a child, so
/// that no other test's blocks are counted.
#[test]
fn suite_huge_blocks_of_varied_sizes_reuse_one_mapping() {
    modes::child_passes("huge_reuse_child", &[("RSEQ_TEST_HUGE_REUSE_CHILD", "1")]);
}

#[test]
fn huge_reuse_child() {
    if std::env::var_os("RSEQ_TEST_HUGE_REUSE_CHILD").is_none() {
        return;
    }
    let start = resident_kib();
    let mut rng = Rng::new(9);
    for _ in 0..2000 {
        let size = (1 + rng.below(8)) << 20;
        let layout = Layout::from_size_align(size, 16).unwrap();
        // SAFETY: a valid layout; the block is written inside its size and freed with it.
        unsafe {
            let p = GLOBAL.alloc(layout);
            assert!(!p.is_null());
            for offset in (0..size).step_by(64 << 10) {
                p.add(offset).write(offset as u8);
            }
            GLOBAL.dealloc(p, layout);
        }
    }
    let grown = resident_kib().saturating_sub(start);
    let cached = rseq_alloc::stats().huge_cached_bytes;
    eprintln!("huge_reuse_child: resident grew by {grown} KiB, {} KiB cached", cached >> 10);
    assert!(cached <= (8 << 20) + (64 << 10), "more than one mapping kept: {cached} bytes");
    // One 8 MiB block touched every 64 KiB is 128 pages (512 KiB).
    assert!(grown < 1536, "resident grew by {grown} KiB");
}

#[test]
fn stats_report_traffic_and_the_mode() {
    let blocks: Vec<Vec<u8>> = (0..10_000).map(|i| vec![0; 16 + i % 64]).collect();
    drop(blocks);
    let s = rseq_alloc::stats();
    assert_ne!(s.mode, Mode::Undecided);
    assert!(s.mapped_bytes > 0);
    assert!(s.process_resident_bytes > 0, "resident size not read from /proc/self/statm");
    assert!(s.classes.iter().map(|c| c.central_taken).sum::<u64>() > 0);
    assert!(s.classes.iter().map(|c| c.alloc_misses).sum::<u64>() > 0);
    // Printed with `{}`: the mode first, and a row for each class in use, none for the others.
    let text = s.to_string();
    assert!(text.starts_with(&format!("mode: {}", s.mode)), "{text}");
    let in_use =
        s.classes.iter().skip(1).filter(|c| c.central_taken + c.central_given + c.alloc_hits + c.free_hits > 0);
    let sizes: Vec<String> = in_use.map(|c| c.size.to_string()).collect();
    let rows: Vec<&str> = text.lines().skip_while(|l| !l.starts_with("class")).skip(1).collect();
    assert_eq!(rows.len(), sizes.len(), "{text}");
    for (row, size) in rows.iter().zip(&sizes) {
        assert_eq!(row.split_whitespace().nth(1), Some(size.as_str()), "{text}");
    }
    assert!(sizes.len() < rseq_alloc::stats().classes.len() - 1, "every class in use? {text}");
}

/// Every freed byte is somewhere the statistics say: in a CPU's cache, in
/// a central list, or in free pages (a span that emptied). In a child on
/// one CPU, so that nothing else allocates meanwhile.
#[test]
fn suite_freed_bytes_are_counted_where_they_went() {
    modes::child_passes_on_one_cpu("freed_bytes_child", &[("RSEQ_TEST_FREED_BYTES_CHILD", "1")]);
}

#[test]
fn freed_bytes_child() {
    if std::env::var_os("RSEQ_TEST_FREED_BYTES_CHILD").is_none() {
        return;
    }
    let held = || {
        let s = rseq_alloc::stats();
        s.cpu_cached_bytes + s.central_free_bytes + s.free_page_bytes
    };
    let blocks: Vec<Box<[u8; 48]>> = (0..20_000).map(|_| Box::new([1; 48])).collect();
    let before = held();
    drop(blocks);
    let after = held();
    let freed = 20_000 * 48;
    // A span's pages hold a little more than its objects (the tail that
    // fits no object): free pages count it.
    assert!(after >= before + freed && after <= before + freed + freed / 8, "{before} -> {after}, {freed} freed");
    eprintln!("freed_bytes_child: {freed} bytes freed, held {before} -> {after}");
}

/// Run as a child by the next test: allocates with hit counting on.
#[test]
fn exercise_for_stats_child() {
    if std::env::var_os("RSEQ_TEST_STATS_CHILD").is_none() {
        return;
    }
    let blocks: Vec<Box<[u8; 48]>> = (0..100_000).map(|_| Box::new([1; 48])).collect();
    drop(blocks);
    let class = rseq_alloc::stats().classes.iter().find(|c| c.size == 48).copied().unwrap();
    assert!(class.alloc_hits > 50_000 && class.free_hits > 50_000, "{class:?}");
}

#[test]
fn suite_stats_at_exit_name_the_mode_and_count_hits() {
    for (force, mode) in [(false, "rseq with"), (true, "fallback")] {
        let mut command = std::process::Command::new(std::env::current_exe().unwrap());
        command.args(["--exact", "exercise_for_stats_child", "--test-threads", "1"]);
        command.env("RSEQ_ALLOC_STATS", "1").env("RSEQ_TEST_STATS_CHILD", "1");
        if force {
            command.env("RSEQ_ALLOC_FORCE_FALLBACK", "1");
        }
        let output = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "child failed:\n{stderr}");
        let first = stderr.lines().find(|l| l.starts_with("rseq-alloc[")).unwrap_or("");
        let after_prefix = first.split_once("]: ").map_or("", |(_, rest)| rest);
        assert!(after_prefix.starts_with(&format!("mode: {mode}")), "first line: {first}\n{stderr}");
        let row = stderr
            .lines()
            .find(|l| l.split_whitespace().nth(2) == Some("48"))
            .unwrap_or_else(|| panic!("no row for 48-byte objects:\n{stderr}"));
        let hits: u64 = row.split_whitespace().nth(3).unwrap().parse().unwrap();
        assert!(hits > 50_000, "{row}");
    }
}
