//! Support is decided here, once: x86-64 Linux gets real critical sections,
//! every other target gets stubs that report "no CPU", so the whole workspace
//! still compiles and callers take their fallback. `--cfg rseq_sys_unsupported`
//! selects the stubs on x86-64 too, so the test suite checks them.

#[cfg(all(target_os = "linux", target_arch = "x86_64", not(rseq_sys_unsupported)))]
mod x86_64;
#[cfg(all(target_os = "linux", target_arch = "x86_64", not(rseq_sys_unsupported)))]
pub use x86_64::*;

#[cfg(not(all(target_os = "linux", target_arch = "x86_64", not(rseq_sys_unsupported))))]
mod unsupported;
#[cfg(not(all(target_os = "linux", target_arch = "x86_64", not(rseq_sys_unsupported))))]
pub use unsupported::*;
