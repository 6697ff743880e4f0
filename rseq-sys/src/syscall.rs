//! Raw system calls that leave `errno` alone.
//!
//! The allocator calls these on paths where C code expects `errno` to be
//! preserved (`free` must not change it), and where an interposed libc
//! wrapper could re-enter us. Errors come back as a positive errno value.

/// A failed system call's errno value (`ENOSYS`, `EPERM`, ...).
pub type Errno = i32;

/// Issues system call `nr` with up to four arguments.
///
/// # Safety
/// The arguments must be valid for `nr`: pointers must point to memory the
/// kernel may read or write as that call defines.
#[cfg(target_arch = "x86_64")]
#[inline]
pub unsafe fn syscall4(nr: i64, a0: usize, a1: usize, a2: usize, a3: usize) -> Result<usize, Errno> {
    let ret: isize;
    // SAFETY: the x86-64 Linux syscall convention: number in rax, arguments in
    // rdi/rsi/rdx/r10, rcx and r11 clobbered by the instruction; the caller
    // vouches for the arguments.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a0,
            in("rsi") a1,
            in("rdx") a2,
            in("r10") a3,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    // The kernel returns -4095..=-1 for errors.
    if (-4095..0).contains(&ret) { Err(-ret as Errno) } else { Ok(ret as usize) }
}

/// Issues system call `nr` with up to four arguments.
///
/// # Safety
/// The arguments must be valid for `nr`: pointers must point to memory the
/// kernel may read or write as that call defines.
#[cfg(not(target_arch = "x86_64"))]
pub unsafe fn syscall4(nr: i64, a0: usize, a1: usize, a2: usize, a3: usize) -> Result<usize, Errno> {
    // SAFETY: errno is thread-local and always addressable.
    let errno = unsafe { libc::__errno_location() };
    // SAFETY: as above.
    let saved = unsafe { *errno };
    // SAFETY: the caller vouches for the arguments.
    let ret = unsafe { libc::syscall(nr as libc::c_long, a0, a1, a2, a3) };
    // SAFETY: as above.
    let result = if ret < 0 { Err(unsafe { *errno }) } else { Ok(ret as usize) };
    // SAFETY: as above.
    unsafe { *errno = saved };
    result
}

/// Issues system call `nr` with six arguments (`mmap` needs them all).
///
/// # Safety
/// As [`syscall4`].
#[cfg(target_arch = "x86_64")]
#[inline]
pub unsafe fn syscall6(nr: i64, args: [usize; 6]) -> Result<usize, Errno> {
    let ret: isize;
    // SAFETY: the x86-64 Linux syscall convention, arguments in
    // rdi/rsi/rdx/r10/r8/r9; the caller vouches for them.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") args[0],
            in("rsi") args[1],
            in("rdx") args[2],
            in("r10") args[3],
            in("r8") args[4],
            in("r9") args[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    if (-4095..0).contains(&ret) { Err(-ret as Errno) } else { Ok(ret as usize) }
}

/// Issues system call `nr` with six arguments.
///
/// # Safety
/// As [`syscall4`].
#[cfg(not(target_arch = "x86_64"))]
pub unsafe fn syscall6(nr: i64, args: [usize; 6]) -> Result<usize, Errno> {
    // SAFETY: errno is thread-local and always addressable.
    let errno = unsafe { libc::__errno_location() };
    // SAFETY: as above.
    let saved = unsafe { *errno };
    // SAFETY: the caller vouches for the arguments.
    let ret = unsafe { libc::syscall(nr as libc::c_long, args[0], args[1], args[2], args[3], args[4], args[5]) };
    // SAFETY: as above.
    let result = if ret < 0 { Err(unsafe { *errno }) } else { Ok(ret as usize) };
    // SAFETY: as above.
    unsafe { *errno = saved };
    result
}

/// The calling thread's kernel id.
pub fn gettid() -> u32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { syscall4(libc::SYS_gettid, 0, 0, 0, 0) }.unwrap_or(0) as u32
}
