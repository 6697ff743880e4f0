//! Targets without critical sections: everything compiles, and every section
//! reports [`Miss::NoCpu`], so callers take their fallback path. The process
//! mode is [`crate::Unavailable::UnsupportedTarget`], so they never get here.

use crate::cs::{CpuIndex, Miss};
use crate::slab_layout::Slabs;

/// Critical sections are not built for this target.
pub const SUPPORTED: bool = false;

/// Always [`Miss::NoCpu`] on this target.
///
/// # Safety
/// None required; `unsafe` to match the supported targets' signature.
pub unsafe fn percpu_add<I: CpuIndex, const SHIFT: u32>(_: isize, _: *mut u8, _: u32, _: u64) -> Result<(), Miss> {
    Err(Miss::NoCpu)
}

/// Always [`Miss::NoCpu`] on this target.
///
/// # Safety
/// None required; `unsafe` to match the supported targets' signature.
pub unsafe fn slab_pop<I: CpuIndex, const SHIFT: u32>(_: &Slabs, _: usize) -> Result<usize, Miss> {
    Err(Miss::NoCpu)
}

/// Always [`Miss::NoCpu`] on this target.
///
/// # Safety
/// None required; `unsafe` to match the supported targets' signature.
pub unsafe fn slab_push<I: CpuIndex, const SHIFT: u32>(_: &Slabs, _: usize, _: usize) -> Result<(), Miss> {
    Err(Miss::NoCpu)
}

/// Always [`Miss::NoCpu`] on this target.
///
/// # Safety
/// None required; `unsafe` to match the supported targets' signature.
pub unsafe fn slab_pop_batch<I: CpuIndex, const SHIFT: u32>(
    _: &Slabs,
    _: usize,
    _: *mut usize,
    _: usize,
) -> Result<usize, Miss> {
    Err(Miss::NoCpu)
}

/// Always [`Miss::NoCpu`] on this target.
///
/// # Safety
/// None required; `unsafe` to match the supported targets' signature.
pub unsafe fn slab_replace_header<I: CpuIndex, const SHIFT: u32>(
    _: &Slabs,
    _: usize,
    _: u64,
    _: u64,
    _: usize,
) -> Result<bool, Miss> {
    Err(Miss::NoCpu)
}

/// Always [`Miss::NoCpu`] on this target.
///
/// # Safety
/// None required; `unsafe` to match the supported targets' signature.
pub unsafe fn slab_push_batch<I: CpuIndex, const SHIFT: u32>(
    _: &Slabs,
    _: usize,
    _: *const usize,
    _: usize,
) -> Result<usize, Miss> {
    Err(Miss::NoCpu)
}

/// Always [`Miss::NoCpu`] on this target.
///
/// # Safety
/// None required; `unsafe` to match the supported targets' signature.
pub unsafe fn list_pop<I: CpuIndex, const SHIFT: u32>(_: isize, _: *mut u8, _: u32) -> Result<usize, Miss> {
    Err(Miss::NoCpu)
}

/// Always [`Miss::NoCpu`] on this target.
///
/// # Safety
/// None required; `unsafe` to match the supported targets' signature.
pub unsafe fn list_push<I: CpuIndex, const SHIFT: u32>(_: isize, _: *mut u8, _: u32, _: usize) -> Result<(), Miss> {
    Err(Miss::NoCpu)
}

/// An identity of the calling thread, never 0 (`pthread_self`, which glibc
/// and musl derive from the thread pointer; async-signal-safe).
pub fn thread_pointer() -> usize {
    // SAFETY: pthread_self has no preconditions and cannot fail.
    unsafe { libc::pthread_self() as usize }
}

/// Never called: the mode is unavailable on this target.
///
/// # Safety
/// None required.
pub unsafe fn read_area_u32(_: isize, _: usize) -> u32 {
    crate::abi::CPU_ID_REGISTRATION_FAILED as u32
}

/// glibc's area is not used on this target.
pub fn glibc_area() -> Option<(isize, u32)> {
    None
}

/// Not looked up on this target: every lock takes its atomic path.
pub fn glibc_single_threaded() -> Option<&'static core::sync::atomic::AtomicU8> {
    None
}

/// There is no own area on this target.
pub fn own_area_offset() -> isize {
    0
}
