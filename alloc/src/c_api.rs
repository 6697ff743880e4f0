//! The C allocation API's semantics, in plain Rust: sizes of zero, overflow,
//! alignment rules, `errno`, what `realloc` does with null and zero. The
//! preload library (`alloc/preload`) only exports these under C names.
//!
//! The rules are glibc's: `malloc(0)` returns a unique pointer; failures
//! return null with `errno = ENOMEM`; `realloc(p, 0)` frees `p` and returns
//! null; a failed `realloc` leaves the block untouched; `free` preserves
//! `errno`; `posix_memalign` returns `EINVAL` for an alignment that is not a
//! power of two multiple of `sizeof(void *)`, and `ENOMEM` (with `errno`
//! ENOMEM too) when memory runs out; `memalign` and `aligned_alloc` round
//! a bad alignment up to a power of two, and fail with `EINVAL` only above
//! `SIZE_MAX / 2 + 1`. Any power-of-two alignment the address space allows
//! is served.

use core::ffi::{c_int, c_void};

use crate::front;
use crate::geometry::OS_PAGE;
use crate::os::set_errno;
use crate::percpu::Marks;
use crate::report::Call;
use crate::runtime;

/// What every block is aligned to (`alignof(max_align_t)`).
pub const MIN_ALIGN: usize = 16;

/// Largest request that can succeed: an object's size must fit `isize`.
const MAX_REQUEST: usize = isize::MAX as usize - 2 * 1024 * 1024;

#[cold]
fn fail() -> *mut c_void {
    set_errno(libc::ENOMEM);
    core::ptr::null_mut()
}

#[inline(never)]
fn aligned(size: usize, align: usize) -> *mut c_void {
    if size > MAX_REQUEST {
        return fail();
    }
    let ptr = front::alloc(size, align.max(MIN_ALIGN));
    if ptr.is_null() { fail() } else { ptr.cast() }
}

/// `malloc`: small sizes go straight to the per-CPU caches (inlined into
/// the exported symbol), the rest through the general path.
#[inline]
pub fn malloc(size: usize) -> *mut c_void {
    if let Some(class) = front::fast_class(size, MIN_ALIGN) {
        // A hit returns at once: it is never null, so it needs no test for
        // `errno`, and the miss is a tail call (no stack frame on the hit).
        return match front::pop(class) {
            Some(object) => object.cast(),
            None => malloc_missed(class, size),
        };
    }
    aligned(size, MIN_ALIGN)
}

#[cold]
#[inline(never)]
fn malloc_missed(class: usize, size: usize) -> *mut c_void {
    let ptr = front::alloc_small_missed(class, size, MIN_ALIGN, Call::Malloc, Marks::Kept);
    if ptr.is_null() { fail() } else { ptr.cast() }
}

/// `calloc`: zero-filled; null with `ENOMEM` if `count * size` overflows.
pub fn calloc(count: usize, size: usize) -> *mut c_void {
    let Some(bytes) = count.checked_mul(size).filter(|&b| b <= MAX_REQUEST) else { return fail() };
    let ptr = front::alloc_zeroed(bytes, MIN_ALIGN);
    if ptr.is_null() { fail() } else { ptr.cast() }
}

/// `free`: null is a no-op; `errno` is preserved.
///
/// # Safety
/// `ptr` is null or a live block of this allocator (anything else that can
/// be detected is reported and aborts).
#[inline]
pub unsafe fn free(ptr: *mut c_void) {
    // SAFETY: forwarded from the caller.
    unsafe { front::free(ptr.cast()) }
}

/// C23 `free_sized`: `size` is the size passed to the allocation call. A
/// size that does not fit the block (or a pointer that is not a block) is
/// reported and aborts.
///
/// # Safety
/// As [`free`].
pub unsafe fn free_sized(ptr: *mut c_void, size: usize) {
    if !ptr.is_null() {
        // SAFETY: forwarded from the caller.
        unsafe { front::free_stated(ptr.cast(), size, MIN_ALIGN, Call::FreeSized) }
    }
}

/// C23 `free_aligned_sized`: `align` and `size` are the ones passed to
/// `aligned_alloc`; checked as in [`free_sized`].
///
/// # Safety
/// As [`free`].
pub unsafe fn free_aligned_sized(ptr: *mut c_void, align: usize, size: usize) {
    if !ptr.is_null() {
        // SAFETY: forwarded from the caller.
        unsafe { front::free_stated(ptr.cast(), size, align.max(MIN_ALIGN), Call::FreeSized) }
    }
}

/// `realloc`: null `ptr` is `malloc`; size 0 frees and returns null (as
/// glibc does); on failure the block is untouched and null is returned.
///
/// # Safety
/// `ptr` is null or a live block of this allocator.
pub unsafe fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
    if ptr.is_null() {
        return malloc(size);
    }
    if size == 0 {
        // SAFETY: forwarded from the caller.
        unsafe { free(ptr) };
        return core::ptr::null_mut();
    }
    if size > MAX_REQUEST {
        return fail();
    }
    // SAFETY: forwarded from the caller.
    let new = unsafe { front::realloc_unstated(ptr.cast(), size) };
    if new.is_null() { fail() } else { new.cast() }
}

/// `reallocarray`: `realloc` with an overflow check on `count * size`.
///
/// # Safety
/// As [`realloc`].
pub unsafe fn reallocarray(ptr: *mut c_void, count: usize, size: usize) -> *mut c_void {
    match count.checked_mul(size) {
        // SAFETY: forwarded from the caller.
        Some(bytes) => unsafe { realloc(ptr, bytes) },
        None => fail(),
    }
}

/// `posix_memalign`: 0, `EINVAL` or `ENOMEM`; `*out` is written only on success.
///
/// # Safety
/// `out` is valid for a pointer write.
pub unsafe fn posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int {
    if !align.is_power_of_two() || !align.is_multiple_of(core::mem::size_of::<*mut c_void>()) {
        return libc::EINVAL;
    }
    // A failure leaves `errno` at ENOMEM too, as glibc's does.
    let ptr = aligned(size, align);
    if ptr.is_null() {
        return libc::ENOMEM;
    }
    // SAFETY: the caller vouches for `out`.
    unsafe { out.write(ptr) };
    0
}

/// `aligned_alloc`: as [`memalign`], which is what glibc 2.36 does (C11
/// leaves other alignments to the implementation, and programs written
/// against glibc pass them).
pub fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    memalign(align, size)
}

/// `memalign`: an alignment that is not a power of two is rounded up to
/// one (0 to the minimum); one above `SIZE_MAX / 2 + 1`, which no power of
/// two is, fails with `EINVAL`.
pub fn memalign(align: usize, size: usize) -> *mut c_void {
    if align > usize::MAX / 2 + 1 {
        set_errno(libc::EINVAL);
        return core::ptr::null_mut();
    }
    aligned(size, align.next_power_of_two())
}

/// `valloc`: page-aligned.
pub fn valloc(size: usize) -> *mut c_void {
    aligned(size, OS_PAGE)
}

/// `pvalloc`: page-aligned, size rounded up to whole pages (at least one).
pub fn pvalloc(size: usize) -> *mut c_void {
    match size.max(1).checked_next_multiple_of(OS_PAGE) {
        Some(bytes) => aligned(bytes, OS_PAGE),
        None => fail(),
    }
}

/// `malloc_usable_size`: bytes usable in the block (0 for null).
///
/// # Safety
/// `ptr` is null or a live block of this allocator.
pub unsafe fn malloc_usable_size(ptr: *mut c_void) -> usize {
    if ptr.is_null() {
        0
    } else {
        // SAFETY: forwarded from the caller.
        unsafe { front::usable_size(ptr.cast()) }
    }
}

/// `malloc_trim`: gives free memory back to the system ([`crate::trim`]);
/// 1 if some was. `pad` (bytes to leave at the top of the heap) has no
/// meaning here and is ignored.
pub fn malloc_trim(_pad: usize) -> c_int {
    c_int::from(crate::trim() > 0)
}

/// `mallopt`: every parameter is accepted and ignored (1 means success):
/// glibc's knobs (arenas, mmap threshold, trim threshold) have no meaning here.
pub fn mallopt(_param: c_int, _value: c_int) -> c_int {
    1
}

/// glibc's `struct mallinfo2`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Mallinfo2 {
    /// Non-mmapped space (bytes mapped for segments and per-CPU caches).
    pub arena: usize,
    /// Free chunks (unused).
    pub ordblks: usize,
    /// Free fastbin blocks (unused).
    pub smblks: usize,
    /// Mapped regions (unused).
    pub hblks: usize,
    /// Bytes in mapped regions (unused).
    pub hblkhd: usize,
    /// Max total allocated (unused).
    pub usmblks: usize,
    /// Free bytes held in fastbins (unused).
    pub fsmblks: usize,
    /// Total allocated space (mapped minus cached free bytes, approximately).
    pub uordblks: usize,
    /// Total free space: bytes cached in per-CPU caches.
    pub fordblks: usize,
    /// Top-most releasable space (unused).
    pub keepcost: usize,
}

/// `mallinfo2`: the figures we have, in glibc's shape.
pub fn mallinfo2() -> Mallinfo2 {
    let s = crate::stats();
    Mallinfo2 {
        arena: s.mapped_bytes,
        fordblks: s.cpu_cached_bytes,
        uordblks: s.mapped_bytes.saturating_sub(s.cpu_cached_bytes),
        ..Mallinfo2::default()
    }
}

/// `malloc_stats`: our summary on stderr.
pub fn malloc_stats() {
    runtime::print_stats();
}

/// `fork`, `daemon` and `forkpty`, as the preload library exports them: each
/// registers the allocator's fork handlers (lazily, see the `fork` module),
/// then calls libc's; and what the library's constructor calls with the
/// address of its `fork`, so that initialisation leaves the registration to
/// them. Only for a library that exports all three.
pub use crate::fork::{daemon, fork, forkpty, wrappers_loaded as fork_wrappers_loaded};
