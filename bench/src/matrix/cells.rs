//! The matrix's cells and the patterns they run. A pattern runs in a child
//! process whose global allocator is the one under test, so it allocates as
//! Rust programs do: `std::alloc`, `Vec`, `String`, a channel, threads.
//!
//! Every pattern writes tags into its blocks and reads them back, returning
//! the sum read beside the sum expected (computed from the tags alone): a
//! block handed out twice, or work the optimiser removed, shows as a
//! mismatch. Tags go through volatile accesses, which are never elided.
//!
//! The work of a cell is fixed by its estimated cost, not measured, so every
//! allocator does the same work and its page faults can be compared.

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error, realloc};
use std::hint::black_box;
use std::ptr::{read_volatile, write_volatile};
use std::sync::{Arc, Barrier, mpsc};
use std::thread;

const PAGE: usize = 4096;
const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// Sizes the pairs and batch cycles walk.
pub const SIZES: [usize; 9] = [16, 64, 256, KIB, 4 * KIB, 16 * KIB, 64 * KIB, MIB, 4 * MIB];
/// Blocks per batch cycle.
pub const BATCH_COUNTS: [usize; 3] = [100, 10_000, 1_000_000];
/// Most bytes a batch cycle holds live at once.
pub const BATCH_MAX_BYTES: usize = 256 * MIB;
/// Blocks per batch cycle of a size of which [`BATCH_COUNTS`]' smallest
/// would hold more: a working set of big buffers.
const FEW_BIG_BLOCKS: usize = 32;
/// Blocks the producer sends in one message.
const PRODUCER_BATCH: usize = 256;
/// Strings in the collection of `strings`.
const STRINGS: usize = 100_000;
/// Threads of `threads`, and the blocks each keeps live.
const THREADS: usize = 8;
const THREAD_WORKING_SET: usize = 64;
/// Where `vec-push` and `realloc` stop growing.
const GROWN: usize = MIB;

/// What a cell does; its name heads a table of the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// An allocation freed at once.
    Pairs,
    /// N allocations, then their frees, newest first.
    Lifo,
    /// N allocations, then their frees, oldest first.
    Fifo,
    /// A `Vec<u64>` grown by `push` to 1 MiB.
    VecPush,
    /// A block grown by `realloc` in 1.5× steps from 16 B to 1 MiB.
    Realloc,
    /// A `Vec<String>` of short strings built and dropped.
    Strings,
    /// One thread allocates, another frees, blocks passed over a channel.
    ProdCons,
    /// Threads at once, each replacing blocks of a small working set.
    Threads,
}

impl Pattern {
    /// Every pattern, in the report's order.
    pub const ALL: [Pattern; 8] = [
        Pattern::Pairs,
        Pattern::Lifo,
        Pattern::Fifo,
        Pattern::VecPush,
        Pattern::Realloc,
        Pattern::Strings,
        Pattern::ProdCons,
        Pattern::Threads,
    ];

    /// Its name, the first part of its cells' names.
    pub fn name(self) -> &'static str {
        match self {
            Pattern::Pairs => "pairs",
            Pattern::Lifo => "lifo",
            Pattern::Fifo => "fifo",
            Pattern::VecPush => "vec-push",
            Pattern::Realloc => "realloc",
            Pattern::Strings => "strings",
            Pattern::ProdCons => "prodcons",
            Pattern::Threads => "threads",
        }
    }

    /// What it does and what one operation of its ns/op is.
    pub fn description(self) -> &'static str {
        match self {
            Pattern::Pairs => "`alloc` then `dealloc` at once; an op is the pair",
            Pattern::Lifo => {
                "cycles of N `alloc`s then their `dealloc`s, newest first; an op is a block's alloc and free"
            }
            Pattern::Fifo => {
                "cycles of N `alloc`s then their `dealloc`s, oldest first; an op is a block's alloc and free"
            }
            Pattern::VecPush => "a `Vec<u64>` grown by `push` to 1 MiB and dropped; an op is a growth step",
            Pattern::Realloc => "a block grown by `realloc` in 1.5× steps from 16 B to 1 MiB; an op is a step",
            Pattern::Strings => {
                "a `Vec<String>` of 100,000 strings of 1 to 48 bytes built and dropped; an op is a string"
            }
            Pattern::ProdCons => {
                "one thread allocates `vec![0u8; size]` in batches of 256 sent over a `sync_channel`, \
                 another frees them; an op is a block"
            }
            Pattern::Threads => {
                "8 threads at once, each replacing the blocks of a 64-block working set; \
                 an op is a block replaced, ns/op is elapsed time over all threads' ops"
            }
        }
    }
}

/// One row of the matrix: a pattern at a size (and a count).
#[derive(Clone, Debug)]
pub struct Cell {
    /// What it does.
    pub pattern: Pattern,
    /// Bytes per block (the final size for `vec-push` and `realloc`).
    pub size: usize,
    /// Blocks per cycle (`lifo`, `fifo`), strings, or threads; else 1.
    pub count: usize,
    /// `pattern/parameters`, as `--only` matches it.
    pub name: String,
}

/// `16B`, `4KiB`, `1MiB`.
pub fn size_name(size: usize) -> String {
    if size >= MIB && size.is_multiple_of(MIB) {
        format!("{}MiB", size / MIB)
    } else if size >= KIB && size.is_multiple_of(KIB) {
        format!("{}KiB", size / KIB)
    } else {
        format!("{size}B")
    }
}

/// Every cell, in the report's order.
pub fn catalogue() -> Vec<Cell> {
    let cell = |pattern: Pattern, size: usize, count: usize, parameters: String| Cell {
        pattern,
        size,
        count,
        name: format!("{}/{parameters}", pattern.name()),
    };
    let mut cells: Vec<Cell> = SIZES.iter().map(|&s| cell(Pattern::Pairs, s, 1, size_name(s))).collect();
    for pattern in [Pattern::Lifo, Pattern::Fifo] {
        for size in SIZES {
            let mut counts: Vec<usize> = BATCH_COUNTS.into_iter().filter(|n| n * size <= BATCH_MAX_BYTES).collect();
            if counts.is_empty() {
                counts.push(FEW_BIG_BLOCKS);
            }
            for n in counts {
                cells.push(cell(pattern, size, n, format!("{n}x{}", size_name(size))));
            }
        }
    }
    cells.push(cell(Pattern::VecPush, GROWN, 1, size_name(GROWN)));
    cells.push(cell(Pattern::Realloc, GROWN, 1, format!("16B-{}", size_name(GROWN))));
    cells.push(cell(Pattern::Strings, 48, STRINGS, format!("{STRINGS}")));
    for size in [64, 4 * KIB] {
        cells.push(cell(Pattern::ProdCons, size, PRODUCER_BATCH, size_name(size)));
    }
    for size in [64, 4 * KIB] {
        cells.push(cell(Pattern::Threads, size, THREADS, format!("{THREADS}x{}", size_name(size))));
    }
    cells
}

/// What a run of a pattern did.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outcome {
    /// Operations (see [`Pattern::description`]).
    pub ops: u64,
    /// Sum of the tags read back.
    pub read: u64,
    /// Sum of the tags written that should have been read.
    pub expected: u64,
}

impl Outcome {
    fn add(&mut self, other: Outcome) {
        self.ops += other.ops;
        self.read += other.read;
        self.expected += other.expected;
    }
}

impl Cell {
    /// Estimated ns for one unit of work (a pair, a cycle, a grown vector,
    /// a collection, a producer's batch, a step of every thread), from a
    /// well-behaved allocator's figures; a block's memory is priced as if
    /// it were faulted in (about 250 ns a page), so that a cell where an
    /// allocator faults every cycle stays within minutes. The estimate
    /// fixes the work, the same for every allocator, so it only needs to
    /// be near.
    fn unit_ns(&self) -> f64 {
        let pages = self.size.div_ceil(PAGE) as f64;
        let faulted = self.size as f64 / 16.0;
        let count = self.count as f64;
        match self.pattern {
            Pattern::Pairs => 3.0 + 6.0 * pages,
            Pattern::Lifo | Pattern::Fifo => (15.0 + faulted) * count,
            Pattern::VecPush => 150_000.0,
            Pattern::Realloc => 5_000.0,
            Pattern::Strings => 60.0 * count,
            Pattern::ProdCons => (80.0 + faulted) * count,
            Pattern::Threads => 20.0 * count,
        }
    }

    /// Units of work for about `budget_ns` of timed work (at least one).
    pub fn units(&self, budget_ns: f64) -> u64 {
        ((budget_ns / self.unit_ns()) as u64).max(1)
    }

    /// Units of the untimed warm-up before the timed run: a tenth, at least
    /// one (a whole cycle for the batch patterns).
    pub fn warm_up_units(&self, units: u64) -> u64 {
        (units / 10).max(1)
    }

    /// Pointers a run keeps at once, for the scratch vector made before it.
    pub fn scratch_len(&self) -> usize {
        match self.pattern {
            Pattern::Lifo | Pattern::Fifo => self.count,
            _ => 0,
        }
    }

    /// Runs `units` of the pattern; `scratch` has room for
    /// [`Cell::scratch_len`] pointers and comes back empty.
    pub fn run(&self, units: u64, scratch: &mut Vec<*mut u8>) -> Outcome {
        match self.pattern {
            Pattern::Pairs => pairs(self.size, units),
            Pattern::Lifo => batches(self.size, self.count, units, false, scratch),
            Pattern::Fifo => batches(self.size, self.count, units, true, scratch),
            Pattern::VecPush => vec_push(self.size, units),
            Pattern::Realloc => realloc_steps(self.size, units),
            Pattern::Strings => strings(self.count, units),
            Pattern::ProdCons => producer_consumer(self.size, self.count, units),
            Pattern::Threads => threads(self.size, self.count, units),
        }
    }
}

/// The tag of block `i` of unit `unit`: never zero, so an untouched fresh
/// page does not pass for a tag.
fn tag(i: u64, unit: u64) -> u8 {
    (i.wrapping_mul(31).wrapping_add(unit.wrapping_mul(7)) % 255) as u8 + 1
}

/// Allocates `layout` through the global allocator, aborting on failure.
fn allocate(layout: Layout) -> *mut u8 {
    // SAFETY: every layout here has a non-zero size.
    let p = unsafe { alloc(layout) };
    if p.is_null() {
        handle_alloc_error(layout)
    }
    p
}

/// Writes `tag` at the start of every page of the block and at its last
/// byte, so the block's memory is touched as a program using it would.
///
/// # Safety
/// `p` is valid for writes of `size` bytes, `size > 0`.
unsafe fn touch(p: *mut u8, size: usize, tag: u8) {
    let mut offset = 0;
    while offset < size {
        // SAFETY: offset < size, inside the block (the caller's contract).
        unsafe { write_volatile(p.add(offset), tag) };
        offset += PAGE;
    }
    // SAFETY: as above.
    unsafe { write_volatile(p.add(size - 1), tag) };
}

/// The first and last bytes of a block [`touch`] tagged, summed.
///
/// # Safety
/// `p` is valid for reads of `size` bytes, `size > 0`.
unsafe fn read_back(p: *const u8, size: usize) -> u64 {
    // SAFETY: both offsets are inside the block (the caller's contract).
    unsafe { u64::from(read_volatile(p)) + u64::from(read_volatile(p.add(size - 1))) }
}

fn layout(size: usize) -> Layout {
    Layout::from_size_align(size, 8).expect("a valid layout")
}

fn pairs(size: usize, units: u64) -> Outcome {
    let layout = layout(size);
    let mut out = Outcome { ops: units, ..Outcome::default() };
    for i in 0..units {
        let p = allocate(layout);
        let t = tag(i, 0);
        // SAFETY: `p` is a live block of `size` bytes, freed with its layout.
        unsafe {
            touch(p, size, t);
            out.read += read_back(p, size);
            dealloc(p, layout);
        }
        out.expected += 2 * u64::from(t);
    }
    out
}

fn batches(size: usize, n: usize, cycles: u64, fifo: bool, blocks: &mut Vec<*mut u8>) -> Outcome {
    let layout = layout(size);
    let mut out = Outcome { ops: cycles * n as u64, ..Outcome::default() };
    for cycle in 0..cycles {
        for i in 0..n {
            let p = allocate(layout);
            let t = tag(i as u64, cycle);
            // SAFETY: `p` is a live block of `size` bytes.
            unsafe { touch(p, size, t) };
            out.expected += 2 * u64::from(t);
            blocks.push(p);
        }
        let mut free = |p: *mut u8| {
            // SAFETY: `p` is a live block of `size` bytes from `allocate`,
            // freed once (the vector is drained).
            unsafe {
                out.read += read_back(p, size);
                dealloc(p, layout);
            }
        };
        if fifo {
            blocks.drain(..).for_each(&mut free);
        } else {
            blocks.drain(..).rev().for_each(&mut free);
        }
    }
    out
}

fn vec_push(bytes: usize, units: u64) -> Outcome {
    let elements = (bytes / 8) as u64;
    let mut out = Outcome::default();
    for unit in 0..units {
        let mut v: Vec<u64> = Vec::new();
        let mut capacity = 0;
        for i in 0..elements {
            v.push(i ^ unit);
            if v.capacity() != capacity {
                capacity = v.capacity();
                out.ops += 1;
            }
        }
        // One element a page, read after the last copy: a growth that lost
        // data shows.
        for i in (0..elements).step_by(PAGE / 8) {
            out.read += v[i as usize];
            out.expected += i ^ unit;
        }
        black_box(&v);
    }
    out
}

fn realloc_steps(last: usize, units: u64) -> Outcome {
    let mut out = Outcome::default();
    for unit in 0..units {
        let mut size = 16;
        let first = tag(0, unit);
        let p = allocate(layout(size));
        // SAFETY: `p` is a live block of `size` bytes.
        unsafe { touch(p, size, first) };
        let (mut p, mut previous) = (p, first);
        let mut step = 0;
        while size < last {
            let grown = (size + size / 2).min(last);
            step += 1;
            // SAFETY: `p` is a live block of `size` bytes allocated with
            // `layout(size)`; `grown` is non-zero and a valid layout size.
            p = unsafe { realloc(p, layout(size), grown) };
            if p.is_null() {
                handle_alloc_error(layout(grown))
            }
            // SAFETY: `p` is now a live block of `grown` > `size` bytes
            // whose first `size` bytes were copied.
            unsafe {
                out.read += u64::from(read_volatile(p)) + u64::from(read_volatile(p.add(size - 1)));
                previous = tag(step, unit);
                write_volatile(p.add(grown - 1), previous);
            }
            out.expected += u64::from(first) + u64::from(if step == 1 { first } else { tag(step - 1, unit) });
            size = grown;
            out.ops += 1;
        }
        // SAFETY: `p` is a live block of `size` bytes allocated with `layout(size)`.
        unsafe {
            out.read += u64::from(read_volatile(p.add(size - 1)));
            dealloc(p, layout(size));
        }
        out.expected += u64::from(previous);
    }
    out
}

/// The text the strings are cut from.
const TEXT: &str = "the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs";

fn strings(count: usize, units: u64) -> Outcome {
    let mut out = Outcome { ops: units * count as u64, ..Outcome::default() };
    for unit in 0..units {
        let mut collection: Vec<String> = Vec::new();
        for i in 0..count as u64 {
            let h = (i ^ (unit << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
            let len = 1 + (h % 48) as usize;
            let start = (h >> 8) as usize % (TEXT.len() - len);
            let text = &TEXT[start..start + len];
            out.expected += len as u64 + u64::from(text.as_bytes()[len - 1]);
            collection.push(String::from(text));
        }
        for s in black_box(&collection) {
            out.read += s.len() as u64 + u64::from(s.as_bytes()[s.len() - 1]);
        }
    }
    out
}

fn producer_consumer(size: usize, batch: usize, batches: u64) -> Outcome {
    let (sender, receiver) = mpsc::sync_channel::<Vec<Vec<u8>>>(4);
    let consumer = thread::spawn(move || {
        let mut read = 0;
        for blocks in receiver {
            for block in blocks {
                read += u64::from(block[0]) + u64::from(block[block.len() - 1]);
            }
        }
        read
    });
    let mut out = Outcome { ops: batches * batch as u64, ..Outcome::default() };
    for b in 0..batches {
        let mut blocks = Vec::with_capacity(batch);
        for i in 0..batch {
            let t = tag(i as u64, b);
            let mut block = vec![0u8; size];
            block[0] = t;
            block[size - 1] = t;
            out.expected += 2 * u64::from(t);
            blocks.push(block);
        }
        sender.send(blocks).expect("the consumer is alive");
    }
    drop(sender);
    out.read = consumer.join().expect("the consumer finished");
    out
}

fn threads(size: usize, count: usize, steps: u64) -> Outcome {
    let start = Arc::new(Barrier::new(count));
    let workers: Vec<_> = (0..count as u64)
        .map(|t| {
            let start = Arc::clone(&start);
            thread::spawn(move || {
                let mut out = Outcome { ops: steps, ..Outcome::default() };
                let new_block = |i: u64| {
                    let mut block = Vec::with_capacity(size);
                    block.push(tag(i, t));
                    block
                };
                let mut set: Vec<Vec<u8>> = (0..THREAD_WORKING_SET as u64).map(new_block).collect();
                start.wait();
                for i in 0..steps {
                    let slot = (i % THREAD_WORKING_SET as u64) as usize;
                    let fresh = new_block(i + THREAD_WORKING_SET as u64);
                    let old = std::mem::replace(&mut set[slot], fresh);
                    out.read += u64::from(old[0]);
                    out.expected += u64::from(tag(i, t));
                }
                out
            })
        })
        .collect();
    let mut out = Outcome::default();
    for worker in workers {
        out.add(worker.join().expect("a worker finished"));
    }
    out
}
