//! Benchmarks for rseq-alloc: the per-CPU primitives today; the allocator
//! against `System` and the C allocators as they arrive.
//!
//! The `rseq-alloc-bench` binary is the command-line front end; criterion
//! benches in `benches/` call the same code.

pub mod compare;
pub mod in_process;
pub mod matrix;
pub mod misuse;
pub mod primitives;
pub mod timing;
pub mod workloads;
