//! The kernel's rseq ABI (`include/uapi/linux/rseq.h`), checked at compile
//! time against the kernel's offsets.
//!
//! Nothing here has behaviour: these are the shapes the kernel reads and
//! writes, and the numbers it expects.

use core::mem::{align_of, offset_of, size_of};

/// The per-thread area shared with the kernel (`struct rseq`).
///
/// The kernel writes `cpu_id_start`, `cpu_id`, `node_id` and `mm_cid` on every
/// return to user space after a preemption, migration or signal; user space
/// must never write them while the area is registered. User space writes
/// `rseq_cs` to arm a critical section; the kernel clears it.
#[repr(C, align(32))]
#[derive(Debug)]
pub struct Rseq {
    /// Always a possible CPU, even before registration; read-only for us.
    pub cpu_id_start: u32,
    /// Current CPU, or [`CPU_ID_UNINITIALIZED`] / [`CPU_ID_REGISTRATION_FAILED`].
    pub cpu_id: u32,
    /// Address of the armed [`RseqCs`] descriptor, or 0.
    pub rseq_cs: u64,
    /// Deprecated since Linux 6.1; always 0.
    pub flags: u32,
    /// NUMA node of `cpu_id` (Linux 6.3+).
    pub node_id: u32,
    /// Dense per-process concurrency id, below the number of possible CPUs (Linux 6.3+).
    pub mm_cid: u32,
}

impl Rseq {
    /// An area as it must look before registration: `cpu_id` says
    /// "uninitialised", so a critical section run on it bails out at once.
    pub const UNREGISTERED: Rseq =
        Rseq { cpu_id_start: 0, cpu_id: CPU_ID_UNINITIALIZED as u32, rseq_cs: 0, flags: 0, node_id: 0, mm_cid: 0 };
}

/// A critical-section descriptor (`struct rseq_cs`), re-read by the kernel
/// from user memory on every preemption or signal inside the section.
#[repr(C, align(32))]
#[derive(Debug)]
pub struct RseqCs {
    /// Must be 0.
    pub version: u32,
    /// Must be 0.
    pub flags: u32,
    /// First instruction of the section.
    pub start_ip: u64,
    /// Length of the section: the instruction at `start_ip + post_commit_offset`
    /// is the first one outside it.
    pub post_commit_offset: u64,
    /// Where the kernel sends an interrupted section; the four bytes before it
    /// must equal the registered signature, and it must lie outside the section.
    pub abort_ip: u64,
}

/// `cpu_id` before the thread registered.
pub const CPU_ID_UNINITIALIZED: i32 = -1;
/// `cpu_id` after a registration attempt failed (glibc writes this too).
pub const CPU_ID_REGISTRATION_FAILED: i32 = -2;

/// The signature glibc registers on x86-64; a second user of glibc's area
/// must use the same value, so everyone does.
pub const SIGNATURE: u32 = 0x5305_3053;

/// `rseq()` flag: unregister the area.
pub const FLAG_UNREGISTER: i32 = 1;

/// `rseq()` system call number.
#[cfg(target_os = "linux")]
pub const SYS_RSEQ: i64 = libc::SYS_rseq;

/// `getauxval` key: how many bytes of [`Rseq`] this kernel fills.
pub const AT_RSEQ_FEATURE_SIZE: u64 = 27;
/// `getauxval` key: the alignment the kernel requires of the area.
pub const AT_RSEQ_ALIGN: u64 = 28;

/// The area size every kernel accepts (the original ABI: 20 bytes, padded).
pub const ORIG_AREA_SIZE: u32 = 32;

/// Byte offsets of the fields, for assembly operands.
pub const OFFSET_CPU_ID_START: usize = 0;
/// See [`OFFSET_CPU_ID_START`].
pub const OFFSET_CPU_ID: usize = 4;
/// See [`OFFSET_CPU_ID_START`].
pub const OFFSET_RSEQ_CS: usize = 8;
/// See [`OFFSET_CPU_ID_START`].
pub const OFFSET_NODE_ID: usize = 20;
/// See [`OFFSET_CPU_ID_START`].
pub const OFFSET_MM_CID: usize = 24;

// The layout the kernel reads; a mismatch here would be silent corruption.
const _: () = {
    assert!(offset_of!(Rseq, cpu_id_start) == OFFSET_CPU_ID_START);
    assert!(offset_of!(Rseq, cpu_id) == OFFSET_CPU_ID);
    assert!(offset_of!(Rseq, rseq_cs) == OFFSET_RSEQ_CS);
    assert!(offset_of!(Rseq, flags) == 16);
    assert!(offset_of!(Rseq, node_id) == OFFSET_NODE_ID);
    assert!(offset_of!(Rseq, mm_cid) == OFFSET_MM_CID);
    assert!(size_of::<Rseq>() == ORIG_AREA_SIZE as usize);
    assert!(align_of::<Rseq>() == 32);
    assert!(offset_of!(RseqCs, version) == 0);
    assert!(offset_of!(RseqCs, flags) == 4);
    assert!(offset_of!(RseqCs, start_ip) == 8);
    assert!(offset_of!(RseqCs, post_commit_offset) == 16);
    assert!(offset_of!(RseqCs, abort_ip) == 24);
    assert!(size_of::<RseqCs>() == 32);
    assert!(align_of::<RseqCs>() == 32);
};

/// `membarrier()` system call number.
#[cfg(target_os = "linux")]
pub const SYS_MEMBARRIER: i64 = libc::SYS_membarrier;

/// `membarrier` command: restart the rseq critical sections of this process's
/// threads running on the target CPU(s).
pub const MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ: i32 = 1 << 7;
/// `membarrier` command: declare the intent to use the command above.
pub const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ: i32 = 1 << 8;
/// `membarrier` flag: the third argument names one CPU.
pub const MEMBARRIER_CMD_FLAG_CPU: u32 = 1;
