//! What a block holds and where it sits, with rseq-alloc as this test
//! binary's `#[global_allocator]`: `realloc` keeps contents across every
//! kind of block, stays in place within a class and grows huge blocks
//! without copying, C's `realloc` promotes a growing buffer, `alloc_zeroed`
//! zeroes reused memory, and every power-of-two alignment is honoured. The
//! binary's tests run again in every other mode (`mode_suites!`).

#![cfg(not(rseq_alloc_loom))]

use std::alloc::{GlobalAlloc, Layout};

use rseq_alloc::RseqAlloc;
use rseq_alloc_tests::modes;

#[global_allocator]
static GLOBAL: RseqAlloc = RseqAlloc;

rseq_alloc_tests::mode_suites!();

#[test]
fn realloc_keeps_contents_across_every_kind_of_block() {
    let mut v: Vec<u8> = Vec::new();
    let mut expected_len = 0;
    for step in 0..26 {
        let target = 1usize << step;
        while v.len() < target {
            v.push((v.len() % 251) as u8);
        }
        expected_len = v.len();
        assert!(v.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8), "contents lost at {target}");
    }
    assert_eq!(v.len(), expected_len);
    v.truncate(100);
    v.shrink_to_fit();
    assert!(v.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
}

/// C's `realloc` of a buffer that keeps doubling (what `compare`'s
/// `realloc` workload does): past 4 KiB the block becomes a medium span and
/// grows in place over the free pages after it, past 256 KiB a huge block
/// that grows by `mremap`, so it moves at most twice on its way to 8 MiB
/// after 4 KiB, its contents intact, and `free_sized` with its last size
/// accepts it. Rust's `realloc` keeps
/// small blocks small, since `dealloc` trusts the layout's class. In a
/// child, so that no other test's spans take the pages the buffer grows
/// over.
#[test]
fn suite_c_realloc_promotes_a_growing_buffer() {
    modes::child_passes("c_realloc_child", &[("RSEQ_TEST_C_REALLOC_CHILD", "1")]);
}

#[test]
fn c_realloc_child() {
    use rseq_alloc::c_api;
    if std::env::var_os("RSEQ_TEST_C_REALLOC_CHILD").is_none() {
        return;
    }
    // SAFETY: every block is used within its size and freed once.
    unsafe {
        let mut p = c_api::malloc(16).cast::<u8>();
        p.write(0xab);
        let mut size = 16;
        let mut moves_from_4k = 0;
        while size < 8 << 20 {
            size *= 2;
            let q = c_api::realloc(p.cast(), size).cast::<u8>();
            assert!(!q.is_null());
            // Past 2 MiB the block is huge and grows by `mremap`, which moves
            // it (without copying: see the test below) whenever the address
            // space above it is taken, as the process's layout decides.
            if q != p && size > 4096 && size <= 2 << 20 {
                moves_from_4k += 1;
            }
            assert_eq!(q.read(), 0xab, "contents lost at {size}");
            q.add(size - 1).write(1);
            p = q;
        }
        eprintln!("c_realloc_child: moved {moves_from_4k} times from 4 KiB to 2 MiB");
        // A medium span grows in place; the one move is the promotion to a
        // huge block. Hardened mode moves every small block it
        // reallocates, on purpose.
        if !rseq_alloc::stats().hardened {
            assert!(moves_from_4k <= 1, "moved {moves_from_4k} times from 4 KiB to 2 MiB");
        }
        c_api::free_sized(p.cast(), size);
        let rust = Layout::from_size_align(8, 8).unwrap();
        let small = GLOBAL.alloc(rust);
        let grown = GLOBAL.realloc(small, rust, 8192);
        assert!(c_api::malloc_usable_size(grown.cast()) < 65536, "a Rust realloc made a small block medium");
        GLOBAL.dealloc(grown, Layout::from_size_align(8192, 8).unwrap());
    }
}

#[test]
fn small_realloc_within_a_class_stays_in_place_and_huge_growth_does_not_copy() {
    let layout = Layout::from_size_align(100, 8).unwrap();
    // SAFETY: valid layouts throughout; every block is freed with its final layout.
    unsafe {
        let p = GLOBAL.alloc(layout);
        let q = GLOBAL.realloc(p, layout, 110);
        // Hardened mode always moves small blocks (a stale pointer then hits poison).
        if !rseq_alloc::stats().hardened {
            assert_eq!(p, q, "100 and 110 bytes share a class");
        }
        let r = GLOBAL.realloc(q, Layout::from_size_align(110, 8).unwrap(), 1000);
        assert_ne!(r, q);
        GLOBAL.dealloc(r, Layout::from_size_align(1000, 8).unwrap());

        // A huge block grows by mremap: 64 MiB of pattern survives growth to 1 GiB.
        let mut size = 64 << 20;
        let mut p = GLOBAL.alloc(Layout::from_size_align(size, 16).unwrap());
        for offset in (0..size).step_by(4096) {
            *p.add(offset) = (offset >> 12) as u8;
        }
        while size < 1 << 30 {
            let grown = size * 2;
            p = GLOBAL.realloc(p, Layout::from_size_align(size, 16).unwrap(), grown);
            assert!(!p.is_null());
            size = grown;
        }
        for offset in (0..64 << 20).step_by(4096) {
            assert_eq!(*p.add(offset), (offset >> 12) as u8);
        }
        let stats = rseq_alloc::stats();
        assert!(stats.process_resident_bytes < 512 << 20, "growth touched the new pages: it copied");
        GLOBAL.dealloc(p, Layout::from_size_align(size, 16).unwrap());
    }
}

#[test]
fn alloc_zeroed_is_zero_even_on_reused_memory() {
    // The last two: a cached 9 MiB mapping, written all over, serves 2 MiB.
    for size in [1, 24, 100, 4000, 30_000, 40_000, 500_000, 3 << 20, 9 << 20, 2 << 20] {
        let layout = Layout::from_size_align(size, 16).unwrap();
        // SAFETY: valid layouts; blocks freed with them.
        unsafe {
            let dirty = GLOBAL.alloc(layout);
            dirty.write_bytes(0xff, size);
            GLOBAL.dealloc(dirty, layout);
            for _ in 0..3 {
                let p = GLOBAL.alloc_zeroed(layout);
                assert!(std::slice::from_raw_parts(p, size).iter().all(|&b| b == 0), "{size} bytes not zeroed");
                p.write_bytes(0xee, size);
                GLOBAL.dealloc(p, layout);
            }
        }
    }
}

#[test]
fn far_aligned_blocks_freed_and_taken_again_keep_no_mapping() {
    let layout = Layout::from_size_align(3 << 20, 8 << 20).unwrap();
    let round = || {
        // SAFETY: a valid layout, freed with it; a small one between keeps
        // the freed huge mapping in the cache, as a program's would.
        unsafe {
            let p = GLOBAL.alloc(layout);
            assert!(!p.is_null() && (p as usize).is_multiple_of(8 << 20));
            GLOBAL.dealloc(p, layout);
        }
    };
    for _ in 0..4 {
        round();
    }
    let before = rseq_alloc::stats().mapped_bytes;
    for _ in 0..200 {
        round();
    }
    let after = rseq_alloc::stats().mapped_bytes;
    assert!(after <= before + (16 << 20), "mapped {before} -> {after}: far-aligned blocks leak their mappings");
}

#[test]
fn every_power_of_two_alignment_up_to_1_gib() {
    for shift in 0..=30 {
        let align = 1usize << shift;
        // Blocks aligned to more than a few MiB are touched only at their ends.
        let sizes =
            if shift <= 21 { [1, align / 2 + 1, align, 3 * align, 100_000] } else { [1, 4096, 100_000, 5 << 20, 1] };
        for size in sizes {
            let layout = Layout::from_size_align(size.max(1), align).unwrap();
            // SAFETY: valid layout, freed with it; every write is inside the block.
            unsafe {
                let p = GLOBAL.alloc(layout);
                assert!(!p.is_null(), "size {size} align {align}");
                assert_eq!(p as usize % align, 0, "size {size} align {align}");
                p.add(layout.size() - 1).write(2);
                p.write(1);
                let grown = GLOBAL.realloc(p, layout, layout.size() * 2 + 4096);
                assert!(!grown.is_null() && (grown as usize).is_multiple_of(align), "realloc keeps {align}");
                let last = if layout.size() == 1 { 1 } else { 2 };
                assert_eq!((*grown, *grown.add(layout.size() - 1)), (1, last), "realloc keeps the contents");
                GLOBAL.dealloc(grown, Layout::from_size_align(layout.size() * 2 + 4096, align).unwrap());
            }
        }
    }
}
