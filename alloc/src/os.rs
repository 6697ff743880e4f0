//! The narrow OS layer: reserve and release address space, give pages back,
//! move mappings, read the environment, write to stderr. Raw system calls
//! throughout, so an interposed libc cannot re-enter the allocator and `errno`
//! is left alone (C's `free` must preserve it).

use core::ffi::c_void;
use core::ptr::NonNull;

use rseq_sys::syscall::{syscall4, syscall6};

use crate::sync::{AtomicOps, AtomicPtr, AtomicU32};

pub(crate) use crate::geometry::OS_PAGE;

/// Maps `len` bytes of zeroed, readable and writable memory; pages are
/// committed by the kernel on first touch (`MAP_NORESERVE`).
pub(crate) fn map(len: usize) -> Option<NonNull<u8>> {
    map_at(0, len, libc::MAP_NORESERVE)
}

fn map_at(hint: usize, len: usize, extra_flags: i32) -> Option<NonNull<u8>> {
    let prot = (libc::PROT_READ | libc::PROT_WRITE) as usize;
    let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | extra_flags) as usize;
    // SAFETY: an anonymous mapping request; the kernel validates every argument.
    let addr = unsafe { syscall6(libc::SYS_mmap, [hint, len, prot, flags, usize::MAX, 0]) }.ok()?;
    NonNull::new(addr as *mut u8)
}

/// The mapping published in `slot`, mapping `len` zeroed bytes and
/// publishing them first if there is none: lock-free, so racing threads may
/// each map, and every loser unmaps its own and takes the winner's. `None`
/// if the OS refuses memory and nothing was published.
pub(crate) fn map_once<T>(slot: &AtomicPtr<T>, len: usize) -> Option<*mut T> {
    let published = slot.load_acquire();
    if !published.is_null() {
        return Some(published);
    }
    let mine = map(len)?.as_ptr().cast::<T>();
    match slot.cas_acq_rel(core::ptr::null_mut(), mine) {
        Ok(_) => Some(mine),
        Err(winner) => {
            // SAFETY: our mapping lost the race and was never published.
            unsafe { unmap(mine.cast(), len) };
            Some(winner)
        }
    }
}

/// Maps `len` bytes aligned to `align` (a power of two at least [`OS_PAGE`]),
/// by mapping `len + align` and unmapping the misaligned ends.
pub(crate) fn map_aligned(len: usize, align: usize) -> Option<NonNull<u8>> {
    map_aligned_at(len, align, 0, Charge::OnTouch)
}

/// When the system's commit limit is charged for a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Charge {
    /// As its pages are touched (`MAP_NORESERVE`): for the allocator's own
    /// segments, which it fills a page at a time.
    OnTouch,
    /// When it is mapped, as glibc's large blocks are: a request the kernel
    /// could never back fails here, with `ENOMEM`, rather than at a later
    /// page fault.
    AtMap,
}

/// Maps `len` bytes at an address `start` such that `start + offset` is a
/// multiple of `align` (a power of two at least [`OS_PAGE`]), by mapping
/// `len + align` and unmapping the ends.
pub(crate) fn map_aligned_at(len: usize, align: usize, offset: usize, charge: Charge) -> Option<NonNull<u8>> {
    debug_assert!(align.is_power_of_two() && align >= OS_PAGE && len.is_multiple_of(OS_PAGE));
    debug_assert!(offset.is_multiple_of(OS_PAGE));
    let span = len.checked_add(align)?;
    let flags = if charge == Charge::OnTouch { libc::MAP_NORESERVE } else { 0 };
    let raw = map_at(0, span, flags)?.as_ptr() as usize;
    let start = (raw + offset % align).next_multiple_of(align) - offset % align;
    // SAFETY: both ranges are inside the mapping we just made and are not in use.
    unsafe {
        if start > raw {
            unmap(raw as *mut u8, start - raw);
        }
        let end = start + len;
        if raw + span > end {
            unmap(end as *mut u8, raw + span - end);
        }
    }
    NonNull::new(start as *mut u8)
}

/// Unmaps `len` bytes at `addr`.
///
/// # Safety
/// The range was mapped by this module and nothing refers to it any more.
pub(crate) unsafe fn unmap(addr: *mut u8, len: usize) {
    // SAFETY: the caller owns the range.
    let _ = unsafe { syscall4(libc::SYS_munmap, addr as usize, len, 0, 0) };
}

/// Grows or shrinks the mapping at `addr` to `new_len` without moving it.
///
/// # Safety
/// `addr`/`old_len` is a whole mapping made by this module.
pub(crate) unsafe fn remap_in_place(addr: *mut u8, old_len: usize, new_len: usize) -> bool {
    // SAFETY: the caller owns the mapping; flags 0 forbids moving it.
    unsafe { mremap(addr as usize, old_len, new_len, 0, 0) }.is_some()
}

/// `mremap(2)`: the mapping's new address, `None` if the kernel refused
/// (the mapping is then unchanged).
///
/// # Safety
/// `addr`/`old_len` is a whole mapping of ours that nothing uses in a way
/// the move breaks, and with `MREMAP_FIXED`, `new_addr`/`new_len` is a
/// range of ours whose old contents nobody needs.
unsafe fn mremap(addr: usize, old_len: usize, new_len: usize, flags: i32, new_addr: usize) -> Option<usize> {
    // SAFETY: forwarded from the caller; the kernel checks the rest.
    unsafe { syscall6(libc::SYS_mremap, [addr, old_len, new_len, flags as usize, new_addr, 0]) }.ok()
}

/// Moves the mapping at `addr` to an address aligned to `align` (a power of
/// two at least [`OS_PAGE`]), resized to `new_len`, without copying its
/// pages; `None` if the OS refused, with the mapping unchanged.
///
/// Two steps, where `MREMAP_FIXED` onto an aligned reservation could grow
/// and move at once: valgrind's memcheck marks the grown part of such a
/// move unaddressable (every later access is reported), so the mapping
/// first grows wherever the kernel likes, then moves, size unchanged, onto
/// the reservation.
///
/// # Safety
/// `addr`/`old_len` is a whole mapping made by this module, which nothing
/// else resizes meanwhile.
pub(crate) unsafe fn remap_aligned(addr: *mut u8, old_len: usize, new_len: usize, align: usize) -> Option<NonNull<u8>> {
    let addr = addr as usize;
    // SAFETY: the caller's mapping, which nothing else resizes.
    let grown = unsafe { mremap(addr, old_len, new_len, libc::MREMAP_MAYMOVE, 0) }?;
    if grown.is_multiple_of(align) {
        return NonNull::new(grown as *mut u8);
    }
    let fixed = libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED;
    if let Some(target) = map_aligned(new_len, align) {
        // SAFETY: the grown mapping is the caller's; `target` is our fresh,
        // unused reservation of the same length.
        if let Some(moved) = unsafe { mremap(grown, new_len, new_len, fixed, target.as_ptr() as usize) } {
            return NonNull::new(moved as *mut u8);
        }
        // SAFETY: our reservation, unused.
        unsafe { unmap(target.as_ptr(), new_len) };
    }
    // Out of memory halfway: put the mapping back, at its old size, on the
    // range it left, claimed first so that nothing mapped there since is
    // replaced.
    let claimed = map_at(addr, old_len, libc::MAP_NORESERVE | libc::MAP_FIXED_NOREPLACE)
        .is_some_and(|p| p.as_ptr() as usize == addr);
    // SAFETY: the grown mapping is the caller's, and `addr`/`old_len` is
    // the fresh claim just made on the range it left.
    if !claimed || unsafe { mremap(grown, new_len, old_len, fixed, addr) }.is_none() {
        fatal(b"rseq-alloc: out of memory while moving a huge block, and its old address is gone\n");
    }
    None
}

/// Gives the pages of `addr..addr + len` back to the OS: the range stays
/// mapped and reads zero when next touched (`MADV_DONTNEED`).
///
/// # Safety
/// The range is mapped by this module, page-aligned, and holds nothing
/// anyone will read.
pub(crate) unsafe fn purge(addr: *mut u8, len: usize) {
    // SAFETY: forwarded from the caller.
    let _ = unsafe { syscall4(libc::SYS_madvise, addr as usize, len, libc::MADV_DONTNEED as usize, 0) };
}

/// Asks the kernel to back `addr..addr + len` with transparent huge pages
/// (`MADV_HUGEPAGE`), or never to (`MADV_NOHUGEPAGE`), as its faults come
/// and when `khugepaged` passes. A kernel without them refuses, which
/// changes nothing.
///
/// # Safety
/// The range is mapped by this module and page-aligned.
pub(crate) unsafe fn advise_huge_pages(addr: *mut u8, len: usize, huge: bool) {
    let advice = if huge { libc::MADV_HUGEPAGE } else { libc::MADV_NOHUGEPAGE };
    // SAFETY: forwarded from the caller; the advice moves no data.
    let _ = unsafe { syscall4(libc::SYS_madvise, addr as usize, len, advice as usize, 0) };
}

/// Writes `bytes` to standard error, ignoring failures.
pub(crate) fn write_stderr(bytes: &[u8]) {
    write_all(2, bytes);
}

/// Writes `bytes` to descriptor `fd`, ignoring failures.
pub(crate) fn write_all(fd: i32, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: writing from a live slice.
        match unsafe { syscall4(libc::SYS_write, fd as usize, bytes.as_ptr() as usize, bytes.len(), 0) } {
            Ok(n) if n > 0 => bytes = &bytes[n..],
            Err(libc::EINTR) => {}
            _ => return,
        }
    }
}

/// A descriptor of our own for what `fd` is open on now (close-on-exec, at
/// least 3), so that it outlives the program closing `fd`.
pub(crate) fn keep_descriptor(fd: i32) -> Option<i32> {
    // SAFETY: fcntl on a descriptor number; the kernel checks it.
    let kept = unsafe { syscall4(libc::SYS_fcntl, fd as usize, libc::F_DUPFD_CLOEXEC as usize, 3, 0) }.ok()?;
    Some(kept as i32)
}

/// Opens `path` (NUL-terminated) for appending, creating it if needed.
pub(crate) fn open_append(path: &[u8]) -> Option<i32> {
    debug_assert_eq!(path.last(), Some(&0));
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_CLOEXEC;
    // SAFETY: a NUL-terminated path in a live buffer.
    let fd =
        unsafe { syscall4(libc::SYS_openat, libc::AT_FDCWD as usize, path.as_ptr() as usize, flags as usize, 0o644) };
    fd.ok().map(|fd| fd as i32)
}

/// Closes a descriptor of ours.
pub(crate) fn close(fd: i32) {
    // SAFETY: closing a descriptor this module opened.
    let _ = unsafe { syscall4(libc::SYS_close, fd as usize, 0, 0, 0) };
}

/// This process's id.
pub(crate) fn pid() -> u32 {
    // SAFETY: getpid has no arguments and cannot fail.
    unsafe { syscall4(libc::SYS_getpid, 0, 0, 0, 0) }.map_or(0, |pid| pid as u32)
}

/// The value of environment variable `name`, if set (valid until the
/// environment changes: copy what must last).
pub(crate) fn env(name: &core::ffi::CStr) -> Option<&'static [u8]> {
    // SAFETY: getenv reads the environment without allocating.
    let value = unsafe { libc::getenv(name.as_ptr()) };
    // SAFETY: non-null results are NUL-terminated strings.
    (!value.is_null()).then(|| unsafe { core::ffi::CStr::from_ptr(value) }.to_bytes())
}

/// Whether environment variable `name` (NUL-terminated) is set to a value
/// starting with `1`, `y` or `Y`. Reads `environ` through libc's `getenv`,
/// which does not allocate.
pub(crate) fn env_flag(name: &core::ffi::CStr) -> bool {
    // SAFETY: getenv reads the environment; the result is valid until the
    // environment changes, and we read its first byte at once.
    let value = unsafe { libc::getenv(name.as_ptr()) };
    // SAFETY: non-null results are NUL-terminated strings.
    !value.is_null() && matches!(unsafe { *value } as u8, b'1' | b'y' | b'Y')
}

/// Environment variable `name` as a decimal number, if it is one.
pub(crate) fn env_u64(name: &core::ffi::CStr) -> Option<u64> {
    // SAFETY: as in `env_flag`.
    let value = unsafe { libc::getenv(name.as_ptr()) };
    if value.is_null() {
        return None;
    }
    // SAFETY: a NUL-terminated string from the environment.
    let bytes = unsafe { core::ffi::CStr::from_ptr(value) }.to_bytes();
    if bytes.is_empty() || bytes.len() > 18 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(bytes.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// A monotonic clock in nanoseconds, coarse (a few ms).
pub(crate) fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC_COARSE)
}

/// The monotonic clock to the nanosecond.
pub(crate) fn precise_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// Both clocks are read by system call, not through libc's `clock_gettime`
/// and the vDSO: they are read once per
/// [`upkeep::CHECK_EVERY`](crate::upkeep::CHECK_EVERY) slow paths and when
/// a class is about to grow, so the system call costs nothing measurable,
/// while libc's wrapper sits in a part of libc's text that a program which
/// never reads the clock would otherwise not map at all.
fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: the kernel writes one `timespec` into `ts`; both monotonic
    // clocks always exist on Linux, so the call cannot fail.
    let _ = unsafe { syscall4(libc::SYS_clock_gettime, clock as usize, (&raw mut ts) as usize, 0, 0) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// 64 random bits from the kernel (`getrandom`, never blocking); if that
/// fails, the auxiliary vector's `AT_RANDOM` bytes mixed with an address
/// (so the value still differs between processes under ASLR).
pub(crate) fn random_u64() -> u64 {
    let mut value = 0u64;
    let buf = (&raw mut value) as usize;
    // SAFETY: the kernel writes at most 8 bytes into `value`.
    if let Ok(8) = unsafe { syscall4(libc::SYS_getrandom, buf, 8, libc::GRND_NONBLOCK as usize, 0) } {
        return value;
    }
    // SAFETY: getauxval has no preconditions; AT_RANDOM points at 16 bytes.
    let at_random = unsafe { libc::getauxval(libc::AT_RANDOM) } as *const u64;
    // SAFETY: as above, when non-null.
    let seed = if at_random.is_null() { 0 } else { unsafe { at_random.read_unaligned() } };
    seed ^ (buf as u64).rotate_left(17)
}

/// Sleeps while `word` reads `value` (`FUTEX_WAIT_PRIVATE`); returns at
/// once if it does not, and may return spuriously.
pub(crate) fn futex_wait(word: &AtomicU32, value: u32) {
    let op = (libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG) as usize;
    // SAFETY: a futex wait on a live, aligned u32; the kernel only reads it.
    let _ = unsafe { syscall4(libc::SYS_futex, word.as_ptr() as usize, op, value as usize, 0) };
}

/// As [`futex_wait`], for at most `timeout_ns` nanoseconds.
pub(crate) fn futex_wait_for(word: &AtomicU32, value: u32, timeout_ns: u64) {
    let op = (libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG) as usize;
    let timeout = libc::timespec {
        tv_sec: (timeout_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: a futex wait on a live, aligned u32 with a relative timeout
    // the kernel only reads.
    let _ =
        unsafe { syscall4(libc::SYS_futex, word.as_ptr() as usize, op, value as usize, (&raw const timeout) as usize) };
}

/// Wakes one thread sleeping in [`futex_wait`] on `word`.
pub(crate) fn futex_wake_one(word: &AtomicU32) {
    let op = (libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG) as usize;
    // SAFETY: a futex wake on a live u32.
    let _ = unsafe { syscall4(libc::SYS_futex, word.as_ptr() as usize, op, 1, 0) };
}

/// Lets another thread run.
pub(crate) fn yield_now() {
    // SAFETY: sched_yield has no arguments and no preconditions.
    let _ = unsafe { syscall4(libc::SYS_sched_yield, 0, 0, 0, 0) };
}

/// The CPU this thread runs on, as libc reports it (through the rseq area
/// or the vDSO); 0 if it cannot tell.
pub(crate) fn current_cpu() -> u32 {
    // SAFETY: sched_getcpu has no preconditions.
    unsafe { libc::sched_getcpu() }.max(0) as u32
}

/// Reads the start of the file at `path` into `buf`; the bytes read (none
/// if the file cannot be read).
pub(crate) fn read_file<'a>(path: &core::ffi::CStr, buf: &'a mut [u8]) -> &'a [u8] {
    // SAFETY: a NUL-terminated path; the descriptor is ours until closed.
    let Ok(fd) = (unsafe {
        syscall4(libc::SYS_openat, libc::AT_FDCWD as usize, path.as_ptr() as usize, libc::O_RDONLY as usize, 0)
    }) else {
        return &[];
    };
    // SAFETY: the kernel writes at most `buf.len()` bytes into the live buffer.
    let n = unsafe { syscall4(libc::SYS_read, fd, buf.as_mut_ptr() as usize, buf.len(), 0) }.unwrap_or(0);
    // SAFETY: closing the descriptor opened above.
    let _ = unsafe { syscall4(libc::SYS_close, fd, 0, 0, 0) };
    &buf[..n]
}

/// Runs `f` at exit (`atexit`, which may allocate: only once the allocator
/// is initialised).
pub(crate) fn at_exit(f: extern "C" fn()) {
    // SAFETY: registering a plain function with no preconditions.
    unsafe { libc::atexit(f) };
}

/// Registers fork handlers (`pthread_atfork`, which may allocate: only once
/// the allocator is initialised).
pub(crate) fn at_fork(prepare: extern "C" fn(), parent: extern "C" fn(), child: extern "C" fn()) {
    // SAFETY: plain functions; libc calls them around every `fork`.
    unsafe { libc::pthread_atfork(Some(prepare), Some(parent), Some(child)) };
}

/// Starts a detached thread running `body` on a stack of `stack` bytes,
/// with every signal blocked (a program's handlers must never run on a
/// thread of the allocator's, nor a process-directed signal land there);
/// false if the system refused it. libc's `pthread_create` may allocate:
/// call it holding no lock of ours.
pub(crate) fn spawn_thread(body: extern "C" fn(*mut c_void) -> *mut c_void, stack: usize) -> bool {
    // SAFETY: the attribute and signal sets are initialised before use and
    // destroyed after; the thread gets a plain function and no argument;
    // the calling thread's mask is restored whatever happened.
    unsafe {
        let mut attr: libc::pthread_attr_t = core::mem::zeroed();
        if libc::pthread_attr_init(&mut attr) != 0 {
            return false;
        }
        libc::pthread_attr_setdetachstate(&mut attr, libc::PTHREAD_CREATE_DETACHED);
        libc::pthread_attr_setstacksize(&mut attr, stack);
        let mut all: libc::sigset_t = core::mem::zeroed();
        let mut before: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut before);
        let mut thread: libc::pthread_t = 0;
        let started = libc::pthread_create(&mut thread, &attr, body, core::ptr::null_mut()) == 0;
        libc::pthread_sigmask(libc::SIG_SETMASK, &before, core::ptr::null_mut());
        libc::pthread_attr_destroy(&mut attr);
        started
    }
}

/// Names the calling thread (as `ps` and `top` show it).
pub(crate) fn name_this_thread(name: &core::ffi::CStr) {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    let _ = unsafe { syscall4(libc::SYS_prctl, libc::PR_SET_NAME as usize, name.as_ptr() as usize, 0, 0) };
}

/// Whether environment variable `name` is set to `0`, `n` or `N`.
pub(crate) fn env_flag_off(name: &core::ffi::CStr) -> bool {
    matches!(env(name).and_then(|v| v.first()), Some(b'0' | b'n' | b'N'))
}

/// The address of the definition of `name` that comes after the object
/// this code is in (`dlsym(RTLD_NEXT)`), or 0.
pub(crate) fn next_symbol(name: &core::ffi::CStr) -> usize {
    // SAFETY: dlsym with a NUL-terminated name.
    unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) as usize }
}

/// The address of the definition of `name` a program's calls reach
/// (`dlsym(RTLD_DEFAULT)`), or 0.
pub(crate) fn global_symbol(name: &core::ffi::CStr) -> usize {
    // SAFETY: dlsym with a NUL-terminated name.
    unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) as usize }
}

/// glibc's `__libc_single_threaded` (null: not looked up yet; [`ABSENT`]:
/// this libc has none).
static SINGLE_THREADED: AtomicPtr<u8> = AtomicPtr::new(core::ptr::null_mut());
const ABSENT: *mut u8 = core::ptr::dangling_mut();

/// Whether the process has never had a second thread, as glibc's
/// `__libc_single_threaded` says (false where glibc does not say: before
/// 2.32, or another libc). Looks the symbol up at the first call, which
/// may allocate: call it holding no lock of ours.
pub(crate) fn single_threaded() -> bool {
    let mut flag = SINGLE_THREADED.load_relaxed();
    if flag.is_null() {
        let found = global_symbol(c"__libc_single_threaded");
        flag = if found == 0 { ABSENT } else { found as *mut u8 };
        SINGLE_THREADED.store_relaxed(flag);
    }
    // SAFETY: glibc's flag is a `char` that lives as long as the process;
    // it is only read here.
    flag != ABSENT && unsafe { core::ptr::read_volatile(flag) } != 0
}

/// Sets this thread's `errno` (what C callers read after a failure).
pub(crate) fn set_errno(value: i32) {
    // SAFETY: errno is thread-local and always addressable.
    unsafe { *libc::__errno_location() = value };
}

/// Aborts the process with `message` on stderr: for corruption that must not
/// go on (an invalid or double free), where unwinding would allocate.
#[cold]
pub(crate) fn fatal(message: &[u8]) -> ! {
    write_stderr(message);
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() }
}
