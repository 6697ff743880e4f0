//! The fence for cross-CPU operations: `membarrier(PRIVATE_EXPEDITED_RSEQ)`
//! restarts every critical section of this process that is running on the
//! target CPU(s). After [`fence_cpu`] returns, no section that started before
//! the call can still commit on that CPU; so a remote thread that first marks
//! a CPU's region busy and then fences owns that region until it reopens it.
//!
//! Needs Linux 5.10+, and one registration per process (which `fork` keeps).

use core::sync::atomic::{AtomicI32, Ordering};

use crate::abi::{
    MEMBARRIER_CMD_FLAG_CPU, MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ,
    SYS_MEMBARRIER,
};
use crate::syscall::{Errno, syscall4};

// 0: not tried; 1: registered; negative: -errno of the failed registration.
static REGISTRATION: AtomicI32 = AtomicI32::new(0);

fn membarrier(cmd: i32, flags: u32, cpu: u32) -> Result<(), Errno> {
    // SAFETY: membarrier takes no pointers.
    unsafe { syscall4(SYS_MEMBARRIER, cmd as usize, flags as usize, cpu as usize, 0) }.map(|_| ())
}

/// Declares this process's use of the rseq fence; idempotent and cheap after
/// the first call. Fails with `EINVAL` on kernels without it (before 5.10).
pub fn register_rseq_fence() -> Result<(), Errno> {
    match REGISTRATION.load(Ordering::Acquire) {
        1 => return Ok(()),
        e if e < 0 => return Err(-e),
        _ => {}
    }
    let result = membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ, 0, 0);
    REGISTRATION.store(
        match result {
            Ok(()) => 1,
            Err(e) => -e,
        },
        Ordering::Release,
    );
    result
}

/// Restarts the critical sections of this process running on `cpu`.
pub fn fence_cpu(cpu: u32) -> Result<(), Errno> {
    register_rseq_fence()?;
    membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ, MEMBARRIER_CMD_FLAG_CPU, cpu)
}

/// Restarts the critical sections of this process on every CPU (what an
/// `mm_cid`-indexed structure needs, since an id is not tied to a CPU).
pub fn fence_all_cpus() -> Result<(), Errno> {
    register_rseq_fence()?;
    membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ, 0, 0)
}
