//! An action stream over `GlobalAlloc` on [`RseqAlloc`], checked against a
//! shadow model of the live blocks: every block is aligned as asked, zeroed
//! when asked, overlaps no other live block, and keeps its contents (a
//! pattern written at allocation) until it is freed or reallocated, when
//! the shorter of the two sizes must survive the move.

use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;

use rseq_alloc::RseqAlloc;

use crate::{Input, fill, first_mismatch};

/// Most actions per input, and most bytes live at once (inputs are replayed
/// in one process, so each run frees everything it allocated).
const MAX_ACTIONS: usize = 4096;
const MAX_LIVE_BYTES: usize = 64 << 20;

struct Live {
    ptr: *mut u8,
    layout: Layout,
    seed: u64,
}

struct Model {
    live: Vec<Live>,
    /// Live ranges: start → end.
    ranges: BTreeMap<usize, usize>,
    bytes: usize,
    next_seed: u64,
}

impl Model {
    /// Panics if `size` bytes at `ptr` overlap a live block.
    fn assert_disjoint(&self, ptr: *mut u8, size: usize) {
        let (start, end) = (ptr as usize, ptr as usize + size.max(1));
        if let Some((&other, &other_end)) = self.ranges.range(..end).next_back() {
            assert!(other_end <= start, "{ptr:p}+{size} overlaps live block {other:#x}..{other_end:#x}");
        }
    }

    fn insert(&mut self, ptr: *mut u8, layout: Layout, zeroed: bool) {
        let start = ptr as usize;
        assert!(start.is_multiple_of(layout.align()), "{ptr:p} is not aligned to {}", layout.align());
        self.assert_disjoint(ptr, layout.size());
        let end = start + layout.size().max(1);
        if zeroed {
            // SAFETY: a live block of `layout.size()` bytes.
            if let Some(i) = unsafe { crate::first_nonzero(ptr, layout.size()) } {
                panic!("alloc_zeroed({layout:?}) = {ptr:p}: byte {i} is not zero");
            }
        }
        let seed = self.next_seed;
        self.next_seed += 1;
        // SAFETY: as above.
        unsafe { fill(ptr, layout.size(), seed) };
        self.ranges.insert(start, end);
        self.bytes += layout.size();
        self.live.push(Live { ptr, layout, seed });
    }

    fn remove(&mut self, index: usize) -> Live {
        let block = self.live.swap_remove(index);
        self.ranges.remove(&(block.ptr as usize));
        self.bytes -= block.layout.size();
        block
    }

    fn check(block: &Live, len: usize, what: &str) {
        // SAFETY: the block is live and holds at least `len` bytes.
        if let Some(i) = unsafe { first_mismatch(block.ptr, block.layout.size(), len, block.seed) } {
            panic!("{what}: block {:p} ({:?}) lost its contents at byte {i}", block.ptr, block.layout);
        }
    }
}

/// Runs the actions `data` encodes.
pub fn run(data: &[u8]) {
    let alloc = RseqAlloc;
    let mut input = Input::new(data);
    let mut model = Model { live: Vec::new(), ranges: BTreeMap::new(), bytes: 0, next_seed: 1 };
    for _ in 0..MAX_ACTIONS {
        if input.is_empty() {
            break;
        }
        match input.byte() % 8 {
            0..=2 => {
                let zeroed = input.byte() & 1 == 1;
                let (size, align) = (input.size(), input.align());
                let Ok(layout) = Layout::from_size_align(size, align) else { continue };
                if size == 0 || size > MAX_LIVE_BYTES - model.bytes {
                    continue;
                }
                // SAFETY: a non-zero-sized layout.
                let ptr = unsafe { if zeroed { alloc.alloc_zeroed(layout) } else { alloc.alloc(layout) } };
                assert!(!ptr.is_null(), "alloc({layout:?}) failed");
                model.insert(ptr, layout, zeroed);
            }
            3..=4 if !model.live.is_empty() => {
                let index = input.bits(2) as usize % model.live.len();
                let block = model.remove(index);
                Model::check(&block, block.layout.size(), "before dealloc");
                // SAFETY: a live block with its layout.
                unsafe { alloc.dealloc(block.ptr, block.layout) };
            }
            5 if !model.live.is_empty() => {
                let index = input.bits(2) as usize % model.live.len();
                let new_size = input.size();
                let old = &model.live[index];
                if new_size == 0 || new_size > MAX_LIVE_BYTES - model.bytes + old.layout.size() {
                    continue;
                }
                let Ok(new_layout) = Layout::from_size_align(new_size, old.layout.align()) else { continue };
                let block = model.remove(index);
                // SAFETY: a live block with its layout; the new size is non-zero and valid.
                let ptr = unsafe { alloc.realloc(block.ptr, block.layout, new_size) };
                if ptr.is_null() {
                    // The old block is untouched and still live.
                    Model::check(&block, block.layout.size(), "after a failed realloc");
                    let (ptr, layout, seed) = (block.ptr, block.layout, block.seed);
                    model.ranges.insert(ptr as usize, ptr as usize + layout.size());
                    model.bytes += layout.size();
                    model.live.push(Live { ptr, layout, seed });
                    continue;
                }
                let moved = Live { ptr, ..block };
                Model::check(&moved, block.layout.size().min(new_size), "realloc");
                model.insert(ptr, new_layout, false);
            }
            6 if !model.live.is_empty() => {
                let index = input.bits(2) as usize % model.live.len();
                let block = &model.live[index];
                Model::check(block, block.layout.size(), "while live");
            }
            7 => {
                // A burst of small blocks through one class: refills and drains.
                let size = input.byte() as usize % 512 + 1;
                let count = input.byte() as usize * 4;
                let layout = Layout::from_size_align(size, 8).unwrap();
                // SAFETY: a non-zero-sized layout; every block is freed with it.
                let burst: Vec<*mut u8> = (0..count).map(|_| unsafe { alloc.alloc(layout) }).collect();
                for (i, &ptr) in burst.iter().enumerate() {
                    assert!(!ptr.is_null());
                    model.assert_disjoint(ptr, size);
                    // SAFETY: a live block of `size` bytes.
                    unsafe { fill(ptr, size, i as u64) };
                }
                for (i, &ptr) in burst.iter().enumerate() {
                    // SAFETY: as above.
                    assert_eq!(unsafe { first_mismatch(ptr, size, size, i as u64) }, None, "burst block {i} changed");
                    // SAFETY: allocated above with `layout`.
                    unsafe { alloc.dealloc(ptr, layout) };
                }
            }
            _ => {}
        }
    }
    while let Some(block) = model.live.pop() {
        Model::check(&block, block.layout.size(), "at the end");
        // SAFETY: a live block with its layout.
        unsafe { alloc.dealloc(block.ptr, block.layout) };
    }
}
