//! Linux restartable sequences (rseq) for Rust: the kernel ABI, a
//! registration that coexists with glibc, the x86-64 critical sections a
//! per-CPU allocator needs, and the fence for operating on another CPU's data.
//!
//! # Map
//!
//! | module | owns |
//! |---|---|
//! | [`abi`] | `struct rseq`, `struct rseq_cs`, the signature and constants, layout checked at compile time |
//! | `registration` | the process [`Mode`] (glibc's area, our own, or [`Unavailable`] and why), per-thread registration, [`features`] |
//! | `arch` | the critical sections, one module per architecture, with the rseq contract written above them |
//! | [`slab_layout`] | the per-CPU slab the push and pop sections operate on, and [`Slabs`](slab_layout::Slabs), where one is |
//! | `cs` | what sections share: [`Miss`], [`CpuIndex`], the abort counter |
//! | `membarrier` | [`fence_cpu`] / [`fence_all_cpus`] for cross-CPU operations |
//! | [`inject`] | delay points inside the sections, compiled in only with the `inject` feature |
//! | [`syscall`] | raw system calls that leave `errno` alone |
//!
//! # Using a section
//!
//! ```
//! use rseq_sys::{ByCpuId, Miss};
//! # fn main() {
//! // One 64-byte counter per possible CPU.
//! let ncpus = rseq_sys::possible_cpus();
//! let mut counters = vec![0u64; 8 * ncpus as usize];
//! if rseq_sys::register_current_thread().is_ok() {
//!     let offset = rseq_sys::area_offset().unwrap();
//!     // SAFETY: the offset comes from a registered mode; `counters` holds
//!     // `ncpus << 6` bytes and is touched only through sections.
//!     let done = unsafe {
//!         rseq_sys::percpu_add::<ByCpuId, 6>(offset, counters.as_mut_ptr().cast(), ncpus, 1)
//!     };
//!     assert_eq!(done, Ok(()));
//!     assert_eq!(counters.iter().sum::<u64>(), 1);
//! } else {
//!     // valgrind, an old kernel, a sandbox: use a fallback.
//!     assert!(!rseq_sys::mode().is_rseq() || rseq_sys::area_offset().is_some());
//! }
//! # let _ = Miss::NoCpu;
//! # }
//! ```
//!
//! Nothing in this crate allocates, panics on its paths, or calls `dlsym`:
//! it is meant to sit under `malloc`.

#![no_std]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod abi;
mod arch;
mod cpus;
mod cs;
pub mod inject;
mod membarrier;
mod registration;
pub mod slab_layout;
pub mod syscall;

pub use arch::{
    glibc_single_threaded, list_pop, list_push, percpu_add, slab_pop, slab_pop_batch, slab_push, slab_push_batch,
    slab_replace_header, thread_pointer,
};
pub use cpus::possible_cpus;
pub use cs::{ByCpuId, ByMmCid, CpuIndex, MAX_BATCH, Miss, aborts};
pub use membarrier::{fence_all_cpus, fence_cpu, register_rseq_fence};
pub use registration::{
    Features, Mode, Unavailable, area_offset, current_index, features, mode, register_current_thread,
};
