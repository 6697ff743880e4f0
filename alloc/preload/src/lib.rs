//! `librseq_alloc.so`: every C allocation entry point a program may call,
//! exported under its C name for `LD_PRELOAD`. Each one is a single call into
//! `rseq_alloc::c_api`, where the C semantics live; nothing else is here.
//!
//! The set is glibc's whole API (a function left out would let glibc
//! allocate behind our back and hand its pointer to our `free`), its
//! `__libc_*` aliases, C23's sized frees, and the sized and aligned
//! `operator delete` variants, so C++ programs reach the sized free path
//! (`operator new` is libstdc++'s, which calls `malloc` and keeps its
//! `std::bad_alloc` behaviour).
//!
//! The library is `no_std`: it links neither Rust's `std` nor `libgcc_s`
//! (the unwinder), so a program that preloads it maps only this code and
//! libc. Nothing in it can panic in practice; if something did, the handler
//! below aborts (the profiles build with `panic = "abort"`).

#![cfg_attr(not(test), no_std)]
#![deny(unsafe_op_in_unsafe_fn)]

#[cfg(not(test))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}

/// The unwinding personality the precompiled `core` refers to. Nothing
/// unwinds through this library (every profile aborts on panic, and no
/// callback runs foreign code), so it is never called; it only lets the
/// library load without `std` and `libgcc_s`.
#[cfg(not(test))]
#[unsafe(no_mangle)]
pub extern "C" fn rust_eh_personality() {}

use core::ffi::{c_int, c_void};

use core_alloc::c_api;

/// Defines exported C functions that forward to `c_api`.
macro_rules! export {
    ($( $(#[$doc:meta])* $name:ident ( $($arg:ident : $ty:ty),* ) $(-> $ret:ty)? => $target:expr ; )*) => {$(
        $(#[$doc])*
        ///
        /// # Safety
        /// The C contract of this function: pointers are null or blocks of this allocator.
        #[unsafe(no_mangle)]
        pub unsafe extern "C" fn $name($($arg: $ty),*) $(-> $ret)? {
            // SAFETY: the C caller keeps the function's contract.
            #[allow(unused_unsafe)]
            unsafe { $target }
        }
    )*};
}

export! {
    /// `malloc`.
    malloc(size: usize) -> *mut c_void => c_api::malloc(size);
    /// `calloc`.
    calloc(count: usize, size: usize) -> *mut c_void => c_api::calloc(count, size);
    /// `realloc`.
    realloc(ptr: *mut c_void, size: usize) -> *mut c_void => c_api::realloc(ptr, size);
    /// `reallocarray`.
    reallocarray(ptr: *mut c_void, count: usize, size: usize) -> *mut c_void => c_api::reallocarray(ptr, count, size);
    /// `free`.
    free(ptr: *mut c_void) => c_api::free(ptr);
    /// `cfree` (old glibc alias of `free`).
    cfree(ptr: *mut c_void) => c_api::free(ptr);
    /// C23 `free_sized`.
    free_sized(ptr: *mut c_void, size: usize) => c_api::free_sized(ptr, size);
    /// C23 `free_aligned_sized`.
    free_aligned_sized(ptr: *mut c_void, align: usize, size: usize) => c_api::free_aligned_sized(ptr, align, size);
    /// `posix_memalign`.
    posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int => c_api::posix_memalign(out, align, size);
    /// `aligned_alloc`.
    aligned_alloc(align: usize, size: usize) -> *mut c_void => c_api::aligned_alloc(align, size);
    /// `memalign`.
    memalign(align: usize, size: usize) -> *mut c_void => c_api::memalign(align, size);
    /// `valloc`.
    valloc(size: usize) -> *mut c_void => c_api::valloc(size);
    /// `pvalloc`.
    pvalloc(size: usize) -> *mut c_void => c_api::pvalloc(size);
    /// `malloc_usable_size`.
    malloc_usable_size(ptr: *mut c_void) -> usize => c_api::malloc_usable_size(ptr);
    /// `malloc_trim`: 1 if memory was given back to the system.
    malloc_trim(pad: usize) -> c_int => c_api::malloc_trim(pad);
    /// `mallopt`: accepted and ignored (1, success), as for every parameter we have no use for.
    mallopt(param: c_int, value: c_int) -> c_int => c_api::mallopt(param, value);
    /// `mallinfo2`.
    mallinfo2() -> c_api::Mallinfo2 => c_api::mallinfo2();
    /// `malloc_stats`: our summary on stderr.
    malloc_stats() => c_api::malloc_stats();
    /// glibc alias.
    __libc_malloc(size: usize) -> *mut c_void => c_api::malloc(size);
    /// glibc alias.
    __libc_calloc(count: usize, size: usize) -> *mut c_void => c_api::calloc(count, size);
    /// glibc alias.
    __libc_realloc(ptr: *mut c_void, size: usize) -> *mut c_void => c_api::realloc(ptr, size);
    /// glibc alias.
    __libc_free(ptr: *mut c_void) => c_api::free(ptr);
    /// glibc alias.
    __libc_memalign(align: usize, size: usize) -> *mut c_void => c_api::memalign(align, size);
    /// glibc alias.
    __libc_valloc(size: usize) -> *mut c_void => c_api::valloc(size);
    /// glibc alias.
    __libc_pvalloc(size: usize) -> *mut c_void => c_api::pvalloc(size);
    /// glibc alias.
    __posix_memalign(out: *mut *mut c_void, align: usize, size: usize) -> c_int => c_api::posix_memalign(out, align, size);
    /// `operator delete(void*, std::size_t)`.
    _ZdlPvm(ptr: *mut c_void, size: usize) => c_api::free_sized(ptr, size);
    /// `operator delete[](void*, std::size_t)`.
    _ZdaPvm(ptr: *mut c_void, size: usize) => c_api::free_sized(ptr, size);
    /// `operator delete(void*, std::align_val_t)`.
    _ZdlPvSt11align_val_t(ptr: *mut c_void, _align: usize) => c_api::free(ptr);
    /// `operator delete[](void*, std::align_val_t)`.
    _ZdaPvSt11align_val_t(ptr: *mut c_void, _align: usize) => c_api::free(ptr);
    /// `operator delete(void*, std::size_t, std::align_val_t)`.
    _ZdlPvmSt11align_val_t(ptr: *mut c_void, size: usize, align: usize) => c_api::free_aligned_sized(ptr, align, size);
    /// `operator delete[](void*, std::size_t, std::align_val_t)`.
    _ZdaPvmSt11align_val_t(ptr: *mut c_void, size: usize, align: usize) => c_api::free_aligned_sized(ptr, align, size);
    /// `fork`: registers the allocator's fork handlers on the first call
    /// (not at start-up, which would map libc's fork code in every program).
    fork() -> libc::pid_t => c_api::fork();
    /// `daemon`, which forks inside libc, past `fork`.
    daemon(nochdir: c_int, noclose: c_int) -> c_int => c_api::daemon(nochdir, noclose);
    /// `forkpty`, which forks inside libc, past `fork`.
    forkpty(amaster: *mut c_int, name: *mut core::ffi::c_char, termp: *const c_void, winp: *const c_void) -> libc::pid_t
        => c_api::forkpty(amaster, name, termp, winp);
}

/// Runs when the library is loaded, before `main`: tells the allocator that
/// the wrappers above are in place (see `rseq_alloc::c_api::fork`).
#[cfg(not(test))]
#[used]
#[unsafe(link_section = ".init_array")]
static LOADED: extern "C" fn() = loaded;

#[cfg(not(test))]
extern "C" fn loaded() {
    c_api::fork_wrappers_loaded(fork as *const () as usize);
}
