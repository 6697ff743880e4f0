//! Misuse of rseq-alloc through Rust's allocator interface, with it as this
//! test binary's `#[global_allocator]` (misuse through the C API, with the
//! library preloaded, is `misuse.rs`'s): writes into freed blocks cannot
//! redirect an allocation, and a double free is caught when the cache
//! drains. The binary's tests run again in every other mode
//! (`mode_suites!`).

#![cfg(not(rseq_alloc_loom))]

use std::alloc::{GlobalAlloc, Layout};

use rseq_alloc::RseqAlloc;
use rseq_alloc_tests::modes;
use rseq_alloc_tests::stress;

#[global_allocator]
static GLOBAL: RseqAlloc = RseqAlloc;

rseq_alloc_tests::mode_suites!();

/// A write into a freed block cannot redirect an allocation: no freelist
/// link lives in object memory (the per-CPU caches are arrays of pointers
/// in their own mappings, the central lists keep bitmaps in segment headers).
/// Overwrite freed blocks with a pointer to memory of the test's, as an
/// attacker with a use-after-free would, then allocate: nothing of ours may
/// come back. (Hardened mode reports the write instead: not tested here.)
#[test]
fn writes_into_freed_blocks_cannot_redirect_allocations() {
    if rseq_alloc::stats().hardened {
        return;
    }
    let mut target = [0u8; 4096];
    let target_range = target.as_mut_ptr() as usize..target.as_mut_ptr() as usize + target.len();
    // Small classes whose per-CPU caches hold all 32 victims, so their spans
    // stay mapped (a medium span or a drained span may go back to the OS,
    // and a write there would be a plain fault).
    for size in [16usize, 48, 256, 1024] {
        let layout = Layout::from_size_align(size, 16).unwrap();
        // SAFETY: valid layouts; every block is freed once, with its layout;
        // the writes into freed blocks are the point of the test (they stay
        // mapped, in the CPU's cache, so the writes are not faults).
        unsafe {
            let victims: Vec<*mut u8> = (0..32).map(|_| GLOBAL.alloc(layout)).collect();
            for &v in &victims {
                GLOBAL.dealloc(v, layout);
            }
            for &v in &victims {
                let words = (size / 8).min(64);
                for i in 0..words {
                    v.cast::<usize>().add(i).write_volatile(target_range.start + 64);
                }
            }
            let fresh: Vec<*mut u8> = (0..256).map(|_| GLOBAL.alloc(layout)).collect();
            for &f in &fresh {
                assert!(!target_range.contains(&(f as usize)), "{size}: allocation redirected to {f:p}");
            }
            for f in fresh {
                GLOBAL.dealloc(f, layout);
            }
        }
    }
    assert!(target.iter().all(|&b| b == 0), "the target was written through a forged link");
}

/// Without hardened mode, a double free is caught when the object reaches
/// the central list. In a child pinned to one CPU: fill the cache of a
/// class to its capacity (both read from the statistics, since capacity
/// adapts at every miss), free the victim, which goes to the central list
/// with the drain it starts, fill the cache again and free the victim
/// again: the central list must refuse it, naming it.
#[test]
fn suite_double_free_is_caught_when_the_cache_drains() {
    child_aborts_naming_its_victim(
        "double_free_child",
        "RSEQ_TEST_DOUBLE_FREE_CHILD",
        "rseq-alloc: free(): double free of",
    );
}

/// Runs `child` (with `flag` set) and checks that it aborted with a report
/// that starts with `report` and names the victim the child printed.
fn child_aborts_naming_its_victim(child: &str, flag: &str, report: &str) {
    let output = modes::run_test_in_child(child, &[(flag, "1")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(output.status.signal(), Some(libc::SIGABRT), "{}\n{stderr}", output.status);
    let victim = stderr.lines().find_map(|l| l.strip_prefix("victim=")).expect("victim named");
    assert!(stderr.contains(&format!("{report} {victim}\n")), "{stderr}");
}

#[test]
fn double_free_child() {
    if std::env::var_os("RSEQ_TEST_DOUBLE_FREE_CHILD").is_none() {
        return;
    }
    stress::pin_to_current_cpu().expect("pin to the current CPU");
    let layout = Layout::from_size_align(3000, 8).unwrap();
    let class = rseq_alloc::stats().classes.iter().position(|c| c.size >= 3000).unwrap();
    let class_stats = || rseq_alloc::stats().classes[class];
    // SAFETY: valid layouts; blocks are freed with them (the victim twice: the point).
    unsafe {
        let victim = RseqAlloc.alloc(layout);
        let blocks: Vec<*mut u8> = (0..400).map(|_| RseqAlloc.alloc(layout)).collect();
        let mut next = blocks.into_iter();
        let mut fill_cache = || {
            while class_stats().cpu_cached < class_stats().cpu_capacity {
                RseqAlloc.dealloc(next.next().expect("enough blocks"), layout);
            }
        };
        fill_cache();
        let drains = class_stats().free_misses;
        RseqAlloc.dealloc(victim, layout);
        assert_eq!(class_stats().free_misses, drains + 1, "the victim went to the central list with a drain");
        fill_cache();
        eprintln!("victim={victim:p}");
        RseqAlloc.dealloc(victim, layout);
    }
    panic!("the double free was not caught");
}

/// A medium block freed twice while it is kept whole for reuse is refused
/// at the second free, naming it: kept twice, it would be handed out to two
/// callers.
#[test]
fn suite_medium_double_free_is_caught() {
    child_aborts_naming_its_victim("medium_double_free_child", "RSEQ_TEST_MEDIUM_DOUBLE_FREE_CHILD", "double free of");
}

#[test]
fn medium_double_free_child() {
    if std::env::var_os("RSEQ_TEST_MEDIUM_DOUBLE_FREE_CHILD").is_none() {
        return;
    }
    let layout = Layout::from_size_align(100_000, 8).unwrap();
    // SAFETY: a valid layout; freed twice (the point).
    unsafe {
        let victim = RseqAlloc.alloc(layout);
        eprintln!("victim={victim:p}");
        RseqAlloc.dealloc(victim, layout);
        RseqAlloc.dealloc(victim, layout);
    }
    panic!("the double free was not caught");
}

/// A program that mixes the two interfaces (Rust code calling the C API)
/// may free a block with C's `free`, which marks it as freed, get it back
/// from Rust's `alloc`, which does not clear the mark, and free it with C's
/// `free` again: that free finds the mark, must find the block live rather
/// than report it, and the block must be handed out once.
#[test]
fn a_block_freed_by_c_then_allocated_by_rust_frees_again_by_c() {
    stress::pin_to_current_cpu().expect("pin to the current CPU");
    let layout = Layout::from_size_align(48, 8).unwrap();
    // SAFETY: every block is freed once, by the interface matching its
    // allocation or by C's `free`, which takes any block of ours.
    unsafe {
        let from_c: Vec<usize> = (0..64).map(|_| rseq_alloc::c_api::malloc(48) as usize).collect();
        for &p in &from_c {
            rseq_alloc::c_api::free(p as *mut _);
        }
        let from_rust: Vec<*mut u8> = (0..64).map(|_| GLOBAL.alloc(layout)).collect();
        let reused = from_rust.iter().filter(|&&p| from_c.contains(&(p as usize))).count();
        assert!(reused > 0, "Rust's alloc got none of the blocks C's free cached");
        for &p in &from_rust {
            rseq_alloc::c_api::free(p.cast());
        }
        let again: Vec<*mut u8> = (0..128).map(|_| GLOBAL.alloc(layout)).collect();
        let mut sorted = again.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), again.len(), "a block was handed out twice");
        for p in again {
            GLOBAL.dealloc(p, layout);
        }
    }
}

/// A block given to Rust's `dealloc` twice with other frees in between sits
/// twice in its CPU's cache (Rust's frees are not marked); when the cache
/// drains, both copies reach the central list in one batch, among blocks of
/// the same bitmap word, and the list must refuse the second, naming it.
#[test]
fn suite_double_free_in_one_drain_is_caught() {
    child_aborts_naming_its_victim(
        "double_free_in_one_drain_child",
        "RSEQ_TEST_DOUBLE_FREE_IN_ONE_DRAIN_CHILD",
        "rseq-alloc: free(): double free of",
    );
}

#[test]
fn double_free_in_one_drain_child() {
    if std::env::var_os("RSEQ_TEST_DOUBLE_FREE_IN_ONE_DRAIN_CHILD").is_none() {
        return;
    }
    stress::pin_to_current_cpu().expect("pin to the current CPU");
    let layout = Layout::from_size_align(48, 8).unwrap();
    // SAFETY: valid layouts; blocks are freed with them (the victim twice: the point).
    unsafe {
        let victim = RseqAlloc.alloc(layout);
        let neighbours: Vec<*mut u8> = (0..3).map(|_| RseqAlloc.alloc(layout)).collect();
        RseqAlloc.dealloc(victim, layout);
        for &n in &neighbours {
            RseqAlloc.dealloc(n, layout);
        }
        eprintln!("victim={victim:p}");
        RseqAlloc.dealloc(victim, layout);
        rseq_alloc::trim();
    }
    panic!("the double free was not caught");
}

/// A working set freed in the reverse of address order reaches the central
/// list (by drains, and by the trim after them) as strides of neighbouring
/// blocks, whose free bits are set a word at a time: a block among them
/// that is already free there must still be refused, naming it.
#[test]
fn suite_double_free_in_a_stride_is_caught() {
    child_aborts_naming_its_victim(
        "double_free_in_a_stride_child",
        "RSEQ_TEST_DOUBLE_FREE_IN_A_STRIDE_CHILD",
        "rseq-alloc: free(): double free of",
    );
}

#[test]
fn double_free_in_a_stride_child() {
    if std::env::var_os("RSEQ_TEST_DOUBLE_FREE_IN_A_STRIDE_CHILD").is_none() {
        return;
    }
    stress::pin_to_current_cpu().expect("pin to the current CPU");
    let layout = Layout::from_size_align(16, 8).unwrap();
    const STRIDE: usize = 2048;
    // SAFETY: valid layouts; blocks are freed with them (the victim twice: the point).
    unsafe {
        let mut blocks: Vec<usize> = (0..3 * STRIDE).map(|_| RseqAlloc.alloc(layout) as usize).collect();
        blocks.sort_unstable();
        let at = (0..blocks.len() - STRIDE)
            .find(|&i| blocks[i + STRIDE - 1] - blocks[i] == (STRIDE - 1) * 16)
            .expect("fresh blocks carved side by side");
        let victim = blocks[at + STRIDE * 3 / 4];
        // Freed once, then moved to the central list with the cache.
        RseqAlloc.dealloc(victim as *mut u8, layout);
        rseq_alloc::trim();
        eprintln!("victim={:p}", victim as *const u8);
        for &block in blocks[at..at + STRIDE].iter().rev() {
            RseqAlloc.dealloc(block as *mut u8, layout);
        }
        rseq_alloc::trim();
    }
    panic!("the double free was not caught");
}
