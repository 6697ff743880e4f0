//! Support is decided here, once: x86-64 Linux gets real critical sections,
//! every other target gets stubs that report "no CPU", so the whole workspace
//! still compiles and callers take their fallback.

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
mod x86_64;
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
pub use x86_64::*;

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
mod unsupported;
#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
pub use unsupported::*;
