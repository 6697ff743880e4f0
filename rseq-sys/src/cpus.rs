//! How many CPU indexes a per-CPU structure must cover.
//!
//! The kernel guarantees `cpu_id` (and `mm_cid`) below `nr_cpu_ids`, the
//! highest *possible* CPU plus one, which includes CPUs that are offline or
//! not yet hot-plugged. It is read from `/sys/devices/system/cpu/possible`
//! with raw system calls (no allocation, no stdio), once.

use core::sync::atomic::{AtomicU32, Ordering};

use crate::syscall::syscall4;

/// Used when sysfs cannot be read: `CPU_SETSIZE`, the most glibc supports.
const FALLBACK_CPUS: u32 = 1024;

static POSSIBLE: AtomicU32 = AtomicU32::new(0);

/// Highest possible CPU id plus one: the number of regions a structure indexed
/// by `cpu_id` or `mm_cid` needs.
pub fn possible_cpus() -> u32 {
    match POSSIBLE.load(Ordering::Relaxed) {
        0 => {
            let n = read_possible().unwrap_or(FALLBACK_CPUS);
            POSSIBLE.store(n, Ordering::Relaxed);
            n
        }
        n => n,
    }
}

fn read_possible() -> Option<u32> {
    let path = b"/sys/devices/system/cpu/possible\0";
    let mut buf = [0u8; 256];
    // SAFETY: `path` is NUL-terminated; openat with AT_FDCWD reads it only.
    let fd = unsafe {
        syscall4(libc::SYS_openat, libc::AT_FDCWD as usize, path.as_ptr() as usize, libc::O_RDONLY as usize, 0)
    }
    .ok()?;
    // SAFETY: `buf` is writable for its length.
    let len = unsafe { syscall4(libc::SYS_read, fd, buf.as_mut_ptr() as usize, buf.len(), 0) };
    // SAFETY: closing the descriptor we opened.
    let _ = unsafe { syscall4(libc::SYS_close, fd, 0, 0, 0) };
    parse_cpu_list(&buf[..len.ok()?])
}

/// Highest id plus one in a kernel CPU list such as `0-3,8-11\n`.
pub(crate) fn parse_cpu_list(text: &[u8]) -> Option<u32> {
    let mut highest: Option<u32> = None;
    let mut number: Option<u32> = None;
    for &byte in text {
        match byte {
            b'0'..=b'9' => {
                number = Some(number.unwrap_or(0).checked_mul(10)?.checked_add(u32::from(byte - b'0'))?);
            }
            b',' | b'-' | b'\n' => {
                if let Some(n) = number.take() {
                    highest = Some(highest.map_or(n, |h| h.max(n)));
                }
            }
            _ => return None,
        }
    }
    if let Some(n) = number {
        highest = Some(highest.map_or(n, |h| h.max(n)));
    }
    highest.map(|h| h + 1)
}

#[cfg(test)]
mod tests {
    use super::parse_cpu_list;

    #[test]
    fn parses_kernel_cpu_lists() {
        assert_eq!(parse_cpu_list(b"0\n"), Some(1));
        assert_eq!(parse_cpu_list(b"0-1\n"), Some(2));
        assert_eq!(parse_cpu_list(b"0-3,8-11\n"), Some(12));
        assert_eq!(parse_cpu_list(b"0,2,5"), Some(6));
        assert_eq!(parse_cpu_list(b""), None);
        assert_eq!(parse_cpu_list(b"zero"), None);
    }

    #[test]
    fn this_machine_has_a_possible_cpu() {
        assert!(super::possible_cpus() >= 1);
    }
}
