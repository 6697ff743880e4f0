//! The Rust allocator matrix: `cargo bench -p rseq-alloc-bench --bench
//! matrix -- [--quick] [--rounds N] [--only SUBSTRING] [--out DIR]`
//! (`rseq_alloc_bench::matrix` runs it; `docs/measuring.md` says how).
//!
//! This binary's global allocator is a switch over rseq-alloc and the Rust
//! allocator crates: every call goes through one relaxed load and one
//! `match`, the same for all. The choice is made at the process's first
//! allocation, from `RSEQ_MATRIX_ALLOCATOR` (the system's when unset or
//! unknown, as in the parent), and never changes, so every block is freed
//! by the allocator that served it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};

use rseq_alloc::RseqAlloc;
use rseq_alloc_bench::matrix;

/// The switch's allocators, in the order of `forward!`'s arms; ours first.
const ALLOCATORS: [&str; 7] = ["rseq-alloc", "system", "mimalloc", "jemalloc", "snmalloc", "rpmalloc", "tcmalloc"];
const SYSTEM: usize = 1;
const UNSELECTED: usize = usize::MAX;

/// Calls `$call` with `$a` bound to the selected allocator.
macro_rules! forward {
    (|$a:ident| $call:expr) => {
        match selected() {
            0 => {
                let $a = &RseqAlloc;
                $call
            }
            1 => {
                let $a = &System;
                $call
            }
            2 => {
                let $a = &mimalloc::MiMalloc;
                $call
            }
            3 => {
                let $a = &tikv_jemallocator::Jemalloc;
                $call
            }
            4 => {
                let $a = &snmalloc_rs::SnMalloc;
                $call
            }
            5 => {
                let $a = &rpmalloc::RpMalloc;
                $call
            }
            _ => {
                let $a = &tcmalloc_better::TCMalloc;
                $call
            }
        }
    };
}

static SELECTED: AtomicUsize = AtomicUsize::new(UNSELECTED);

/// The selected allocator's index in [`ALLOCATORS`].
#[inline(always)]
fn selected() -> usize {
    match SELECTED.load(Ordering::Relaxed) {
        UNSELECTED => select(),
        index => index,
    }
}

/// Reads the choice from the environment. Threads racing here (there are
/// none at a first allocation) would store the same index.
#[cold]
#[inline(never)]
fn select() -> usize {
    // SAFETY: the name is NUL-terminated; nothing in this program calls
    // `setenv`, so the value `getenv` returns stays valid while we read it.
    let value = unsafe { libc::getenv(matrix::ALLOCATOR_ENV.as_ptr()) };
    let index = if value.is_null() {
        SYSTEM
    } else {
        // SAFETY: `getenv` returned a NUL-terminated string (see above).
        let name = unsafe { std::ffi::CStr::from_ptr(value) }.to_bytes();
        ALLOCATORS.iter().position(|a| a.as_bytes() == name).unwrap_or(SYSTEM)
    };
    SELECTED.store(index, Ordering::Relaxed);
    index
}

/// Forwards to the selected allocator.
struct Switch;

// SAFETY: each call forwards, with the caller's arguments, to one allocator
// that upholds `GlobalAlloc`'s contract; the selection never changes once
// made, so a block is always given back to the allocator that served it.
unsafe impl GlobalAlloc for Switch {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        forward!(|a| unsafe { a.alloc(layout) })
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        forward!(|a| unsafe { a.alloc_zeroed(layout) })
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract; `ptr` came from this same allocator.
        forward!(|a| unsafe { a.dealloc(ptr, layout) })
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract; `ptr` came from this same allocator.
        forward!(|a| unsafe { a.realloc(ptr, layout, new_size) })
    }
}

#[global_allocator]
static GLOBAL: Switch = Switch;

/// The matrix with `args` (cargo's `--bench` among them is ignored).
pub fn run(args: &[String]) -> ExitCode {
    match matrix::main(&ALLOCATORS, ALLOCATORS[selected()], args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("matrix: {e}");
            ExitCode::from(2)
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    run(&args)
}
