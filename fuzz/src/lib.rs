//! The fuzz targets' logic, kept out of the targets so that plain
//! `cargo test` replays the committed corpus and every regression input
//! (`tests/replay.rs`) without libFuzzer.
//!
//! | target | drives | checks against |
//! |---|---|---|
//! | [`action_stream`] | `GlobalAlloc` on `RseqAlloc`: alloc, zeroed, free, realloc, any size and alignment | a shadow model: contents preserved, zeroes, alignment, no two live blocks overlap |
//! | [`c_api`] | the C entry points, including sizes near `SIZE_MAX` and bad alignments | the documented answers: NULL and `errno`, `EINVAL`, alignment, usable size, `realloc` rules |
//! | [`layout`] | size classes and the page map | class minimality and alignment, object starts, what an address maps to |
//!
//! Run one with `scripts/fuzz.sh` (stable toolchain, no extra tools) or, if
//! you have it, `cargo fuzz run action_stream`. Set `RSEQ_ALLOC_HARDENED=1`
//! to fuzz hardened mode.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod action_stream;
pub mod c_api;
pub mod layout;

use std::path::Path;
use std::process::ExitCode;

/// Reads a fuzz input as a stream of choices; past its end every read is 0,
/// so any input is a valid program.
pub struct Input<'a> {
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    /// Reads `bytes` from the start.
    pub fn new(bytes: &'a [u8]) -> Input<'a> {
        Input { bytes }
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The next byte.
    pub fn byte(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((&b, rest)) => {
                self.bytes = rest;
                b
            }
            None => 0,
        }
    }

    /// The next `n <= 8` bytes, little-endian.
    pub fn bits(&mut self, n: usize) -> u64 {
        (0..n).fold(0, |acc, i| acc | u64::from(self.byte()) << (8 * i))
    }

    /// A request size spread over every tier and edge: mostly small, some
    /// medium and huge, a few around class boundaries, zero and extremes.
    pub fn size(&mut self) -> usize {
        match self.byte() % 32 {
            0..=17 => self.bits(2) as usize % 1025,
            18..=23 => self.bits(2) as usize % (64 * 1024 + 1),
            24..=26 => self.bits(3) as usize % (1 << 20) + 1,
            27..=28 => self.bits(3) as usize % (8 << 20) + 1,
            29 => {
                // Just around a power of two.
                let shift = self.byte() as u32 % 24;
                ((1usize << shift) as isize + (self.byte() as i8) as isize).max(0) as usize
            }
            30 => 0,
            _ => self.bits(8) as usize,
        }
    }

    /// An alignment: a power of two from 1 to 4 MiB, mostly small.
    pub fn align(&mut self) -> usize {
        match self.byte() % 8 {
            0..=4 => 1 << (self.byte() % 5),
            5..=6 => 1 << (self.byte() % 17),
            _ => 1 << (self.byte() % 23),
        }
    }
}

/// Fills the first `len` bytes at `ptr` with the pattern of `seed` (every
/// byte of blocks up to 1 KiB; the ends and a spread of bytes of larger ones).
///
/// # Safety
/// `ptr` is valid for writes of `len` bytes.
pub unsafe fn fill(ptr: *mut u8, len: usize, seed: u64) {
    for offset in sample_offsets(len) {
        // SAFETY: `offset < len`.
        unsafe { ptr.add(offset).write(pattern(seed, offset)) };
    }
}

/// The first offset below `len` where the pattern [`fill`] wrote over
/// `filled` bytes with `seed` is not found, if any (`len <= filled`: what is
/// left of a block after a shrinking `realloc`).
///
/// # Safety
/// `ptr` is valid for reads of `len` bytes.
pub unsafe fn first_mismatch(ptr: *const u8, filled: usize, len: usize, seed: u64) -> Option<usize> {
    sample_offsets(filled)
        .take_while(|&offset| offset < len)
        // SAFETY: `offset < len`.
        .find(|&offset| unsafe { ptr.add(offset).read() } != pattern(seed, offset))
}

/// The first offset in `0..len` (sampled as [`fill`] does) that is not zero.
///
/// # Safety
/// `ptr` is valid for reads of `len` bytes.
pub unsafe fn first_nonzero(ptr: *const u8, len: usize) -> Option<usize> {
    // SAFETY: `offset < len`.
    sample_offsets(len).find(|&offset| unsafe { ptr.add(offset).read() } != 0)
}

fn pattern(seed: u64, offset: usize) -> u8 {
    (seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8 ^ (offset as u8).wrapping_mul(31)
}

/// Every byte of the first and last 512, and 16 bytes spread between
/// (touching every byte, or every page, of a large block would make the
/// fuzzer spend its time checking patterns rather than finding bugs).
fn sample_offsets(len: usize) -> impl Iterator<Item = usize> {
    const DENSE: usize = 512;
    let head = 0..len.min(DENSE);
    let tail = len.saturating_sub(DENSE).max(DENSE)..len;
    let middle = len.saturating_sub(2 * DENSE);
    let spread = (1..=16).map(move |k| DENSE + middle * k / 17).filter(move |_| middle > 0);
    head.chain(spread).chain(tail)
}

/// `main` of a target built without libFuzzer: runs `target` on every file
/// named on the command line, and every file in every directory named.
pub fn replay_main(target: fn(&[u8])) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        eprintln!("usage: TARGET FILE|DIR... (a replayer: build with scripts/fuzz.sh to fuzz)");
        return ExitCode::from(2);
    }
    let mut count = 0;
    for arg in &args {
        for file in inputs(Path::new(arg)) {
            let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            target(&data);
            count += 1;
        }
    }
    eprintln!("replayed {count} inputs");
    ExitCode::SUCCESS
}

/// The files at `path`: itself, or the files in it (sorted), if a directory.
pub fn inputs(path: &Path) -> Vec<std::path::PathBuf> {
    if path.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .map(|entry| entry.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    }
}
