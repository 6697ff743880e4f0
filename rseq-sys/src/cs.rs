//! What every critical section shares, whatever the architecture: how it can
//! fail, which per-thread field it indexes by, and the abort counter.

use core::sync::atomic::{AtomicU64, Ordering};

use crate::abi::{OFFSET_CPU_ID, OFFSET_MM_CID};

/// Why a critical section did not commit. It never means "aborted": aborts
/// are retried inside the section, invisibly to the caller.
#[repr(usize)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Miss {
    /// Pop found the class empty, or push found it full.
    Exhausted = 0,
    /// The CPU's region is not open: never initialised, or held busy by a
    /// remote operation (drain, resize) or a fallback-path thread.
    Stopped = 1,
    /// This thread has no usable CPU index: it is not registered, its
    /// registration failed, or the index is out of the structure's range.
    NoCpu = 2,
    /// Push found the item already on top of the stack: pushed twice in a
    /// row (a double free, to an allocator). Only `slab_push` says so.
    Repeated = 3,
}

impl Miss {
    /// The largest code a section returns for a miss; items and the
    /// "committed" code are larger.
    pub const MAX_CODE: usize = 2;

    /// The miss a section's exit code stands for.
    #[inline]
    #[cfg_attr(not(all(target_os = "linux", target_arch = "x86_64", not(rseq_sys_unsupported))), allow(dead_code))]
    pub(crate) fn from_code(code: usize) -> Miss {
        match code {
            0 => Miss::Exhausted,
            1 => Miss::Stopped,
            _ => Miss::NoCpu,
        }
    }
}

/// Which field of the rseq area indexes per-CPU data.
pub trait CpuIndex {
    /// Byte offset of the index field in the area.
    const FIELD: usize;
}

/// Index by the CPU the thread runs on (`cpu_id`): one region per possible CPU,
/// and remote operations can fence a single CPU.
#[derive(Debug)]
pub enum ByCpuId {}

/// Index by the process's concurrency id (`mm_cid`, Linux 6.3+): dense, close
/// to the number of running threads, but a remote operation must fence all CPUs.
#[derive(Debug)]
pub enum ByMmCid {}

impl CpuIndex for ByCpuId {
    const FIELD: usize = OFFSET_CPU_ID;
}

impl CpuIndex for ByMmCid {
    const FIELD: usize = OFFSET_MM_CID;
}

/// Most items one batch section moves: bounds the section's length so that a
/// high signal or preemption rate cannot livelock it.
pub const MAX_BATCH: usize = 128;

/// Incremented by the abort handler of every section, once per abort.
pub(crate) static ABORTS: AtomicU64 = AtomicU64::new(0);

/// How many times any critical section in this process has been aborted
/// (and retried) since start.
pub fn aborts() -> u64 {
    ABORTS.load(Ordering::Relaxed)
}
