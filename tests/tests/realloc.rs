//! What a block holds and where it sits, with rseq-alloc as this test
//! binary's `#[global_allocator]`: `realloc` keeps contents across every
//! kind of block, stays in place within a class and grows huge blocks
//! without copying, C's and Rust's `realloc` promote a growing buffer and
//! every later free finds the promoted block, `alloc_zeroed` zeroes reused
//! memory, and every power-of-two alignment is honoured. The binary's
//! tests run again in every other mode (`mode_suites!`).

#![cfg(not(rseq_alloc_loom))]

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use rseq_alloc::RseqAlloc;
use rseq_alloc::internals::{MAX_SMALL, Tier};
use rseq_alloc_tests::modes;

#[global_allocator]
static GLOBAL: RseqAlloc = RseqAlloc;

rseq_alloc_tests::mode_suites!();

/// Bytes of the small class a request names (0 if none).
fn class_size(size: usize, align: usize) -> usize {
    rseq_alloc::internals::class_for(size, align).map_or(0, rseq_alloc::internals::class_size)
}

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
/// `realloc` workload does): from 4 KiB on the block becomes a medium span and
/// grows in place over the free pages after it, past 256 KiB a huge block
/// that grows by `mremap`, so once medium (at 4 KiB) it moves at most once
/// more on its way to 2 MiB, its contents intact, and `free_sized` with its
/// last size accepts it; a medium span grows to twice its pages. In a
/// child, so that no other test's spans take the pages the buffer grows over.
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
        let mut moves_once_medium = 0;
        while size < 8 << 20 {
            size *= 2;
            let q = c_api::realloc(p.cast(), size).cast::<u8>();
            assert!(!q.is_null());
            // Past 2 MiB the block is huge and grows by `mremap`, which moves
            // it (without copying: see the test below) whenever the address
            // space above it is taken, as the process's layout decides.
            if q != p && size > 4096 && size <= 2 << 20 {
                moves_once_medium += 1;
            }
            assert_eq!(q.read(), 0xab, "contents lost at {size}");
            q.add(size - 1).write(1);
            p = q;
        }
        eprintln!("c_realloc_child: moved {moves_once_medium} times from 8 KiB to 2 MiB");
        // A medium span grows in place; the one move is the promotion to a
        // huge block. Hardened mode moves every small block it
        // reallocates, on purpose.
        if !rseq_alloc::stats().hardened {
            assert!(moves_once_medium <= 1, "moved {moves_once_medium} times from 8 KiB to 2 MiB");
        }
        c_api::free_sized(p.cast(), size);

        // A medium span that grows past its pages takes twice as many if
        // they are free (one trip to the page heap per doubling), and a
        // shrink gives pages back only below half of them; its usable size
        // is what was asked for, to 4 KiB, not its pages.
        if !rseq_alloc::stats().hardened {
            let span = |p: *mut c_void| rseq_alloc::internals::lookup(p as usize).map(|(_, bytes)| bytes);
            let usable = |p: *mut c_void| c_api::malloc_usable_size(p);
            let p = c_api::malloc(100_000);
            assert_eq!((span(p), usable(p)), (Some(2 << 16), 25 << 12), "100,000 B take two pages");
            let q = c_api::realloc(p, 150_000);
            assert_eq!((q, span(q), usable(q)), (p, Some(4 << 16), 37 << 12), "grown in place to four pages");
            let q = c_api::realloc(q, 140_000);
            assert_eq!((q, span(q), usable(q)), (p, Some(4 << 16), 35 << 12), "a shrink above half keeps them");
            let q = c_api::realloc(q, 60_000);
            assert_eq!((q, span(q), usable(q)), (p, Some(1 << 16), 15 << 12), "a shrink below half gives them back");
            c_api::free(q);
        }

        // A huge block keeps its mapping as it grows, and a shrink to a
        // small part of it gives the rest back.
        if !rseq_alloc::stats().hardened {
            let p = c_api::malloc(3 << 20);
            let q = c_api::realloc(p, 64 << 20);
            assert!(!q.is_null() && c_api::malloc_usable_size(q) >= 64 << 20);
            let r = c_api::realloc(q, 2 << 20);
            assert_eq!(r, q, "a huge block shrinks in place");
            let usable = c_api::malloc_usable_size(r);
            assert!(usable < 3 << 20, "shrunk from 64 MiB to 2 MiB, {usable} bytes still usable");
            c_api::free(r);
        }
    }
}

/// Grows a block from 16 bytes to `to` with Rust's `realloc` in steps of
/// 1.5 (the last one lands on `to`), checking the contents at every step;
/// returns it and how many times it moved once medium.
///
/// # Safety
/// `align` is a power of two at most 4096; the caller frees the block with
/// `to` and `align`.
unsafe fn grow_by_half(to: usize, align: usize) -> (*mut u8, usize) {
    let mut size = 16;
    let mut moves_once_medium = 0;
    // SAFETY: valid layouts; every access is inside the block's current size.
    unsafe {
        let mut p = GLOBAL.alloc(Layout::from_size_align(size, align).unwrap());
        p.write_bytes(0x5a, size);
        while size < to {
            let grown = (size + size / 2).min(to);
            let q = GLOBAL.realloc(p, Layout::from_size_align(size, align).unwrap(), grown);
            assert!(!q.is_null() && (q as usize).is_multiple_of(align));
            if q != p && size > 8192 && grown <= 1 << 20 {
                moves_once_medium += 1;
            }
            assert!(std::slice::from_raw_parts(q, size).iter().all(|&b| b == 0x5a), "contents lost at {grown}");
            q.add(size).write_bytes(0x5a, grown - size);
            p = q;
            size = grown;
        }
        (p, moves_once_medium)
    }
}

/// Rust's `realloc` of a growing buffer: from 4 KiB on it becomes a medium
/// span and grows in place (a move only where the pages after it are
/// taken). Rust's `dealloc` with its current layout, whatever its size,
/// puts it where the allocator can take it back: a small size's class
/// cache, which may hand it out again (it holds any object of that class)
/// and gives it back to the page heap through the central list, or the
/// page heap at once. Blocks of that layout are then whole; caches that
/// overflow with such blocks, and trims that drain them, give every span
/// back (a span the central list took for an object of its class would
/// abort there, and one it dropped would leak); `realloc` back below
/// 4 KiB makes it small again; `signal_safe::dealloc` and C's `free` take
/// it too. In a child, so that no other test's spans take the pages the
/// buffer grows over.
#[test]
fn suite_rust_realloc_promotes_and_dealloc_finds_the_block() {
    modes::child_passes("rust_realloc_child", &[("RSEQ_TEST_RUST_REALLOC_CHILD", "1")]);
}

#[test]
fn rust_realloc_child() {
    use rseq_alloc::c_api;
    if std::env::var_os("RSEQ_TEST_RUST_REALLOC_CHILD").is_none() {
        return;
    }
    let hardened = rseq_alloc::stats().hardened;
    // SAFETY: only called on live blocks.
    let usable = |p: *mut u8| unsafe { c_api::malloc_usable_size(p.cast()) };
    let (mut moves, mut reused) = (0, 0);
    // Below, at and above the class sizes around the threshold, up to the
    // largest small class and past it.
    for to in [4096, 4097, 5000, 5120, 8192, 20_000, 32_767, 32_768, 40_000, 300_000, 1 << 20] {
        for align in [8, 64, 4096] {
            let layout = Layout::from_size_align(to, align).unwrap();
            // SAFETY: grown to `layout` and freed with it.
            let (p, moved) = unsafe { grow_by_half(to, align) };
            moves += moved;
            if !hardened && to > 4096 {
                let tier = rseq_alloc::internals::lookup(p as usize).map(|(tier, _)| tier);
                assert_eq!(tier, Some(Tier::Medium), "{to} B (align {align}) grown by realloc is not medium");
                assert!(usable(p) >= to && usable(p) < to.max(class_size(to, align)) + 4096, "{to} B: {}", usable(p));
            }
            // SAFETY: the block is live with this layout; freed once.
            unsafe { GLOBAL.dealloc(p, layout) };
            let again: Vec<*mut u8> = (0..64)
                .map(|_| {
                    // SAFETY: a valid layout; the block is written within
                    // it and freed with it below.
                    unsafe {
                        let q = GLOBAL.alloc(layout);
                        assert!(!q.is_null() && (q as usize).is_multiple_of(align));
                        q.write_bytes(0xc3, to);
                        q
                    }
                })
                .collect();
            reused += again.iter().filter(|&&q| q == p).count();
            for q in again {
                // SAFETY: as above.
                unsafe { GLOBAL.dealloc(q, layout) };
            }
        }
    }

    // Many at once: each class's cache overflows into its central list.
    // SAFETY: every block is grown to its layout and freed once with it.
    let churn = |to: usize| unsafe {
        let blocks: Vec<*mut u8> = (0..200).map(|_| grow_by_half(to, 16).0).collect();
        for p in blocks {
            GLOBAL.dealloc(p, Layout::from_size_align(to, 16).unwrap());
        }
    };
    for to in [6000, 32_768] {
        churn(to);
    }
    rseq_alloc::trim();
    let mapped = rseq_alloc::stats().mapped_bytes;
    for _ in 0..5 {
        for to in [6000, 32_768] {
            churn(to);
        }
        rseq_alloc::trim();
    }
    let after = rseq_alloc::stats().mapped_bytes;
    assert!(after <= mapped + (8 << 20), "mapped {mapped} -> {after}: freed promoted blocks leak their spans");
    eprintln!(
        "rust_realloc_child: moved {moves} times once medium over 33 buffers grown to up to 1 MiB; \
         {reused} reused from a class cache; mapped {mapped} -> {after} over five rounds of 400"
    );

    // SAFETY: as above; each block is freed once, by the call named.
    unsafe {
        // Back below the threshold: small again, freed by its small layout.
        let (p, _) = grow_by_half(9000, 16);
        let small = GLOBAL.realloc(p, Layout::from_size_align(9000, 16).unwrap(), 100);
        assert!(std::slice::from_raw_parts(small, 100).iter().all(|&b| b == 0x5a));
        if !hardened {
            assert!(usable(small) < 4096, "shrunk to 100 B, still {} B", usable(small));
        }
        GLOBAL.dealloc(small, Layout::from_size_align(100, 16).unwrap());

        // Shrunk while medium: stays medium, freed by its new size.
        let (p, _) = grow_by_half(200_000, 16);
        let shrunk = GLOBAL.realloc(p, Layout::from_size_align(200_000, 16).unwrap(), 6000);
        assert!(std::slice::from_raw_parts(shrunk, 6000).iter().all(|&b| b == 0x5a));
        GLOBAL.dealloc(shrunk, Layout::from_size_align(6000, 16).unwrap());

        // One that Rust's `dealloc` left in its class's cache, taken by C
        // for the class's whole size, reports at least that size as usable
        // (it noted the size Rust asked for last, rounded to its class): an
        // 8 KiB-aligned 8,193 B block's class is 16 KiB, more than 8,193 to
        // 4 KiB.
        if !hardened {
            rseq_alloc_tests::stress::pin_to_current_cpu().expect("pin to the current CPU");
            for (asked, align) in [(4700, 8), (8193, 8192), (32_769, 8)] {
                let whole = class_size(asked, align).min(MAX_SMALL);
                let (p, _) = grow_by_half(asked, align);
                GLOBAL.dealloc(p, Layout::from_size_align(asked, align).unwrap());
                let mut q = std::ptr::null_mut();
                assert_eq!(c_api::posix_memalign(&mut q, align.max(16), whole), 0);
                assert_eq!(q.cast::<u8>(), p, "the class's next object is the span Rust left there");
                assert!(usable(q.cast()) >= whole, "{asked}: {} B usable", usable(q.cast()));
                c_api::free(q);
            }
        }

        // A signal handler may free one (into its class's cache); so may C.
        let layout = Layout::from_size_align(6000, 16).unwrap();
        let (p, _) = grow_by_half(6000, 16);
        if !rseq_alloc::signal_safe::dealloc(p, layout) {
            GLOBAL.dealloc(p, layout);
        }
        let (p, _) = grow_by_half(6000, 16);
        c_api::free(p.cast());

        // An aligned request of a few bytes whose class is larger may get
        // such a span too; its sized free and `realloc` take it.
        for _ in 0..2 {
            let (p, _) = grow_by_half(8000, 16);
            GLOBAL.dealloc(p, Layout::from_size_align(8000, 16).unwrap());
        }
        let c = c_api::aligned_alloc(8192, 100);
        assert!(!c.is_null() && (c as usize).is_multiple_of(8192));
        c_api::free_aligned_sized(c, 8192, 100);
        let aligned = Layout::from_size_align(100, 8192).unwrap();
        let r = GLOBAL.alloc(aligned);
        r.write_bytes(0x77, 100);
        let r = GLOBAL.realloc(r, aligned, 200);
        assert!((r as usize).is_multiple_of(8192) && std::slice::from_raw_parts(r, 100).iter().all(|&b| b == 0x77));
        GLOBAL.dealloc(r, Layout::from_size_align(200, 8192).unwrap());
        rseq_alloc::trim();
    }
    if !hardened {
        assert!(moves <= 6, "moved {moves} times once medium");
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

/// Blocks of 4, 8, 12, 16 and 64 KiB: unaligned ones do not all start at
/// the same offset in a page (they would share 1/64 of the cache's sets),
/// page-aligned ones of those sizes are page-aligned and no larger than the
/// next multiple of 4 KiB, and `free_sized` with the size alone takes
/// either kind.
#[test]
fn blocks_of_page_multiple_sizes_spread_over_the_page_unless_aligned() {
    use rseq_alloc::c_api;
    let hardened = rseq_alloc::stats().hardened;
    for size in [4096usize, 8192, 12288, 16384, 65536] {
        let blocks: Vec<*mut std::ffi::c_void> = (0..16).map(|_| c_api::malloc(size)).collect();
        let mut offsets: Vec<usize> = blocks.iter().map(|&p| p as usize % 4096).collect();
        offsets.sort_unstable();
        offsets.dedup();
        if !hardened {
            assert!(offsets.len() >= 4, "{size} B: 16 blocks start at page offsets {offsets:?} only");
        }
        for p in blocks {
            // SAFETY: from malloc with this size, freed once.
            unsafe { c_api::free_sized(p, size) };
        }
        let aligned: Vec<*mut std::ffi::c_void> = (0..16)
            .map(|i| {
                let p = if i % 2 == 0 {
                    c_api::aligned_alloc(4096, size)
                } else {
                    let mut out = std::ptr::null_mut();
                    // SAFETY: `out` is a valid place for the pointer.
                    assert_eq!(unsafe { c_api::posix_memalign(&mut out, 128, size) }, 0);
                    out
                };
                assert!(!p.is_null() && (p as usize).is_multiple_of(if i % 2 == 0 { 4096 } else { 128 }));
                // SAFETY: a live block of at least `size` bytes.
                let usable = unsafe { c_api::malloc_usable_size(p) };
                assert!(usable >= size);
                if !hardened && i % 2 == 0 {
                    assert!(usable < size + 4096, "{size} B aligned to 4 KiB holds {usable}");
                }
                p
            })
            .collect();
        for p in aligned {
            // SAFETY: a live block of `size` bytes, freed once; its alignment
            // is not stated, as a program that calls free_sized does.
            unsafe { c_api::free_sized(p, size) };
        }
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

/// C's `realloc` between small sizes (the path that pops, copies and
/// pushes without the full lookup): every byte up to the smaller size
/// survives each move, growing or shrinking, and a size of the same class
/// keeps the block where it is.
#[test]
fn c_realloc_between_small_sizes_keeps_every_byte() {
    use rseq_alloc::c_api;
    let sizes = [16usize, 24, 100, 1000, 40, 3000, 17, 4095, 2000, 16];
    // SAFETY: every block is used within its size and freed once.
    unsafe {
        let mut p = c_api::malloc(sizes[0]).cast::<u8>();
        let mut size = sizes[0];
        for (step, &next) in sizes.iter().enumerate().skip(1) {
            for i in 0..size {
                p.add(i).write((i * 7 + step) as u8);
            }
            let q = c_api::realloc(p.cast(), next).cast::<u8>();
            assert!(!q.is_null());
            for i in 0..size.min(next) {
                assert_eq!(q.add(i).read(), (i * 7 + step) as u8, "byte {i} lost moving {size} -> {next}");
            }
            (p, size) = (q, next);
        }
        if !rseq_alloc::stats().hardened {
            let q = c_api::realloc(p.cast(), 8).cast::<u8>();
            assert_eq!(q, p, "a size of the same class moved the block");
            p = q;
        }
        c_api::free(p.cast());
    }
}

/// A huge block that may start anywhere in a page starts half a page into
/// one (a loop touching it a page apart would otherwise land on the pages'
/// first lines), and stays there as `realloc` grows it by `mremap`; one
/// aligned to a page or more keeps its alignment.
#[test]
fn huge_blocks_start_half_a_page_into_a_page() {
    if rseq_alloc::stats().hardened {
        return;
    }
    for (size, align, offset) in [(2 << 20, 16, 2048), (6 << 20, 64, 2048), (3 << 20, 2048, 2048), (2 << 20, 4096, 0)] {
        let layout = Layout::from_size_align(size, align).unwrap();
        // SAFETY: a valid layout; the block is written inside its sizes and freed with the last.
        unsafe {
            let p = GLOBAL.alloc(layout);
            assert!(!p.is_null());
            assert_eq!(p as usize % 4096, offset, "{size} bytes aligned to {align}");
            p.write(7);
            let grown = GLOBAL.realloc(p, layout, 4 * size);
            assert!(!grown.is_null());
            assert_eq!(grown as usize % 4096, offset, "grown from {size} bytes aligned to {align}");
            assert_eq!(grown.read(), 7);
            GLOBAL.dealloc(grown, Layout::from_size_align(4 * size, align).unwrap());
        }
    }
}

/// A medium block that cannot grow in place (the block after it holds the
/// pages it would grow over) moves, and the move keeps every byte of its
/// layout's size, whatever its span's pages hold beyond it.
#[test]
fn a_medium_block_that_moves_keeps_its_layouts_bytes() {
    for (old_size, new_size) in [(70_000usize, 300_000usize), (66_000, 200_000), (130_000, 600_000)] {
        let old = Layout::from_size_align(old_size, 8).unwrap();
        let after = Layout::from_size_align(200_000, 8).unwrap();
        // SAFETY: valid layouts; every block is freed once with the layout it has.
        unsafe {
            let block = GLOBAL.alloc(old);
            let neighbours: Vec<*mut u8> = (0..8).map(|_| GLOBAL.alloc(after)).collect();
            for i in 0..old_size {
                block.add(i).write((i % 253) as u8);
            }
            let moved = GLOBAL.realloc(block, old, new_size);
            assert!(!moved.is_null() && moved != block, "the neighbours hold the pages it would grow over");
            assert!((0..old_size).all(|i| moved.add(i).read() == (i % 253) as u8), "{old_size} -> {new_size}");
            GLOBAL.dealloc(moved, Layout::from_size_align(new_size, 8).unwrap());
            for n in neighbours {
                GLOBAL.dealloc(n, after);
            }
        }
    }
}

/// `malloc_usable_size` reports what was asked for, to 4 KiB, for medium
/// and huge blocks alike, even where the block sits in a larger span or a
/// larger cached mapping: a program that counts its memory by usable sizes
/// (redis's `used_memory`, which `maxmemory` evicts by) counts what it holds.
#[test]
fn usable_sizes_of_large_blocks_are_what_was_asked() {
    use rseq_alloc::c_api;
    if rseq_alloc::stats().hardened {
        return;
    }
    // SAFETY: every block is freed once; nothing is written past its size.
    unsafe {
        for size in [70_000usize, 100_000, 300_000, 1 << 20, (1 << 20) + 1, 1_500_000, 5 << 20] {
            // A larger block freed first leaves a mapping (or pages) the
            // next may be carved from.
            c_api::free(c_api::malloc(size * 4));
            let p = c_api::malloc(size);
            let usable = c_api::malloc_usable_size(p);
            assert!(usable >= size && usable < size + 4096, "{size} B: {usable} usable");
            let q = c_api::realloc(p, size + size / 8);
            let grown = c_api::malloc_usable_size(q);
            assert!(grown >= size + size / 8 && grown < size + size / 8 + 4096, "{size} B grown: {grown} usable");
            c_api::free(q);
        }
        // A buffer grown by 1 KiB steps past 4 KiB (a redis listpack).
        let mut p = c_api::malloc(1024);
        for size in (2048..=8192).step_by(1024) {
            p = c_api::realloc(p, size);
            let usable = c_api::malloc_usable_size(p);
            assert!(usable >= size && usable < size + 4096, "{size} B: {usable} usable");
        }
        c_api::free(p);
    }
}
