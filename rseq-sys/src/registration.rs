//! Who owns this thread's rseq area, decided once per process.
//!
//! glibc 2.35+ registers an area inside `struct pthread` for every thread
//! before any user code runs, and the kernel allows one registration per
//! thread. So the policy is librseq's:
//!
//! - glibc registered (`__rseq_size > 0`): use its area at `__rseq_offset`
//!   and never call `rseq()`;
//! - otherwise (`GLIBC_TUNABLES=glibc.pthread.rseq=0`, musl, older glibc):
//!   register our own static-TLS area, on each thread's first use;
//! - if that fails, rseq is unavailable for the whole process, with the
//!   reason kept for the user.
//!
//! The decision is packed with the area offset into one atomic word, so a
//! fast path learns both with one relaxed load. Deciding is idempotent and
//! lock-free (racing threads compute the same answer and the first store
//! wins), it allocates nothing and calls no `dlsym`, so it is safe before
//! `main`, inside `malloc`, in a `fork` child and from a signal handler.
//!
//! Our own area needs no unregistration at thread exit: it is static TLS,
//! which lives exactly as long as the thread, like glibc's.

use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::abi::{CPU_ID_REGISTRATION_FAILED, OFFSET_CPU_ID, OFFSET_MM_CID, ORIG_AREA_SIZE, SIGNATURE};
use crate::arch;
use crate::syscall::Errno;

/// How this process uses rseq.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// glibc registered an area for every thread; critical sections use it.
    GlibcArea,
    /// glibc did not; each thread registers our own static-TLS area on first use.
    OwnArea,
    /// Critical sections cannot run in this process.
    Unavailable(Unavailable),
}

/// Why rseq cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unavailable {
    /// `ENOSYS`: a kernel older than 4.18, or an emulator or sandbox that
    /// does not implement rseq (valgrind, qemu-user, gVisor, rr).
    NoKernelSupport,
    /// `EPERM`/`EACCES`: a seccomp filter or security module refused the call.
    Forbidden(Errno),
    /// `EINVAL`: another library registered a different area on this thread.
    RegisteredElsewhere,
    /// The registration "succeeded" but the kernel never filled `cpu_id`
    /// (an emulator faking rseq).
    FakeSuccess,
    /// Any other refusal, with its errno.
    Refused(Errno),
    /// No critical sections are built for this target (only x86-64 Linux).
    UnsupportedTarget,
}

impl Mode {
    /// Whether critical sections can run in this process.
    pub fn is_rseq(self) -> bool {
        !matches!(self, Mode::Unavailable(_))
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::GlibcArea => f.write_str("rseq with glibc's area"),
            Mode::OwnArea => f.write_str("rseq with our own area"),
            Mode::Unavailable(why) => write!(f, "rseq unavailable: {why}"),
        }
    }
}

impl Unavailable {
    /// Why, in words, in three parts: the text before the errno, the errno
    /// (for the variants that carry one), the text after. `Display` prints
    /// them in a row; this is for callers that write text without
    /// `core::fmt` (an allocator reporting from inside `malloc`).
    pub fn reason(&self) -> (&'static str, Option<Errno>, &'static str) {
        match *self {
            Unavailable::NoKernelSupport => {
                ("ENOSYS, the kernel or emulator has no rseq (old kernel, valgrind, qemu-user, gVisor)", None, "")
            }
            Unavailable::Forbidden(errno) => {
                ("errno ", Some(errno), ", refused by a seccomp filter or security module")
            }
            Unavailable::RegisteredElsewhere => {
                ("EINVAL, another library registered its own rseq area on this thread", None, "")
            }
            Unavailable::FakeSuccess => ("registration reported success but the kernel never set cpu_id", None, ""),
            Unavailable::Refused(errno) => ("the kernel refused registration with errno ", Some(errno), ""),
            Unavailable::UnsupportedTarget => ("no critical sections for this target (x86-64 Linux only)", None, ""),
        }
    }
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (before, errno, after) = self.reason();
        f.write_str(before)?;
        if let Some(errno) = errno {
            write!(f, "{errno}")?;
        }
        f.write_str(after)
    }
}

// STATE layout: tag in bits 0..8, payload (area offset as i32, or errno) in bits 32..64.
static STATE: AtomicU64 = AtomicU64::new(TAG_UNDECIDED);
const TAG_MASK: u64 = 0xff;
const TAG_UNDECIDED: u64 = 0;
const TAG_GLIBC: u64 = 1;
const TAG_OWN: u64 = 2;
const TAG_NO_KERNEL: u64 = 3;
const TAG_FORBIDDEN: u64 = 4;
const TAG_ELSEWHERE: u64 = 5;
const TAG_FAKE: u64 = 6;
const TAG_REFUSED: u64 = 7;
const TAG_UNSUPPORTED: u64 = 8;

fn encode(mode: Mode, offset: isize) -> u64 {
    let (tag, payload) = match mode {
        Mode::GlibcArea => (TAG_GLIBC, offset as i32),
        Mode::OwnArea => (TAG_OWN, offset as i32),
        Mode::Unavailable(Unavailable::NoKernelSupport) => (TAG_NO_KERNEL, 0),
        Mode::Unavailable(Unavailable::Forbidden(e)) => (TAG_FORBIDDEN, e),
        Mode::Unavailable(Unavailable::RegisteredElsewhere) => (TAG_ELSEWHERE, 0),
        Mode::Unavailable(Unavailable::FakeSuccess) => (TAG_FAKE, 0),
        Mode::Unavailable(Unavailable::Refused(e)) => (TAG_REFUSED, e),
        Mode::Unavailable(Unavailable::UnsupportedTarget) => (TAG_UNSUPPORTED, 0),
    };
    tag | (payload as u32 as u64) << 32
}

fn decode(state: u64) -> Mode {
    let payload = (state >> 32) as u32 as i32;
    match state & TAG_MASK {
        TAG_GLIBC => Mode::GlibcArea,
        TAG_OWN => Mode::OwnArea,
        TAG_NO_KERNEL => Mode::Unavailable(Unavailable::NoKernelSupport),
        TAG_FORBIDDEN => Mode::Unavailable(Unavailable::Forbidden(payload)),
        TAG_ELSEWHERE => Mode::Unavailable(Unavailable::RegisteredElsewhere),
        TAG_FAKE => Mode::Unavailable(Unavailable::FakeSuccess),
        TAG_REFUSED => Mode::Unavailable(Unavailable::Refused(payload)),
        _ => Mode::Unavailable(Unavailable::UnsupportedTarget),
    }
}

/// The process's rseq mode, decided on the first call (which, in own-area
/// mode, also registers the calling thread).
pub fn mode() -> Mode {
    let state = STATE.load(Ordering::Relaxed);
    if state != TAG_UNDECIDED { decode(state) } else { decide() }
}

/// The registered area's offset from the thread pointer, for critical
/// sections, or `None` if the mode is undecided or rseq is unavailable.
/// One relaxed load: this is meant for fast paths.
#[inline(always)]
pub fn area_offset() -> Option<isize> {
    let state = STATE.load(Ordering::Relaxed);
    let tag = state & TAG_MASK;
    if tag == TAG_GLIBC || tag == TAG_OWN { Some((state >> 32) as u32 as i32 as isize) } else { None }
}

#[cold]
fn decide() -> Mode {
    let (mode, offset) = probe();
    match STATE.compare_exchange(TAG_UNDECIDED, encode(mode, offset), Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => mode,
        Err(winner) => decode(winner),
    }
}

fn probe() -> (Mode, isize) {
    if !arch::SUPPORTED {
        return (Mode::Unavailable(Unavailable::UnsupportedTarget), 0);
    }
    if let Some((offset, size)) = arch::glibc_area()
        && size > 0
    {
        // SAFETY: glibc reports a registered area at this offset in every thread.
        let cpu = unsafe { arch::read_area_u32(offset, OFFSET_CPU_ID) } as i32;
        let mode = if cpu >= 0 { Mode::GlibcArea } else { Mode::Unavailable(Unavailable::FakeSuccess) };
        return (mode, offset);
    }
    match register_own_area() {
        Ok(()) => (Mode::OwnArea, arch::own_area_offset()),
        Err(why) => (Mode::Unavailable(why), 0),
    }
}

/// Makes sure the calling thread can run critical sections: a no-op under
/// glibc's area, a registration on first use of our own.
///
/// A thread can fail where the process succeeded (a sandbox that lets the
/// first registration through and refuses later ones); callers then use their
/// fallback for that thread only. The failure is sticky for the thread.
pub fn register_current_thread() -> Result<(), Unavailable> {
    match mode() {
        Mode::Unavailable(why) => Err(why),
        Mode::GlibcArea => {
            let offset = area_offset().unwrap_or(0);
            // SAFETY: glibc's area is at `offset` in every thread.
            let cpu = unsafe { arch::read_area_u32(offset, OFFSET_CPU_ID) } as i32;
            if cpu >= 0 { Ok(()) } else { Err(Unavailable::FakeSuccess) }
        }
        Mode::OwnArea => register_own_area(),
    }
}

/// Registers our own area for the calling thread, unless it already is.
fn register_own_area() -> Result<(), Unavailable> {
    let area = (arch::thread_pointer() as isize + arch::own_area_offset()) as *mut u32;
    // SAFETY: the area is this thread's static TLS; `cpu_id` is its second u32.
    let cpu_id = unsafe { area.add(1) };
    // SAFETY: as above; the kernel may write it concurrently, hence volatile.
    let cpu = unsafe { cpu_id.read_volatile() } as i32;
    if cpu >= 0 {
        return Ok(());
    }
    if cpu == CPU_ID_REGISTRATION_FAILED {
        return Err(Unavailable::Refused(0));
    }
    // SAFETY: the area is 32-byte aligned static TLS that lives as long as the
    // thread; the kernel writes it until the thread exits, never after.
    let result = unsafe { rseq_syscall(area as usize, ORIG_AREA_SIZE, 0) };
    // SAFETY: as above.
    let cpu = unsafe { cpu_id.read_volatile() } as i32;
    let outcome = match result {
        // EBUSY: a signal handler registered this same area while we were here.
        Ok(()) | Err(libc::EBUSY) if cpu >= 0 => return Ok(()),
        Ok(()) | Err(libc::EBUSY) => {
            // Registered, yet no CPU: undo it so the kernel stops using the area.
            // SAFETY: same area and signature as the registration.
            let _ = unsafe { rseq_syscall(area as usize, ORIG_AREA_SIZE, crate::abi::FLAG_UNREGISTER) };
            Unavailable::FakeSuccess
        }
        Err(libc::ENOSYS) => Unavailable::NoKernelSupport,
        Err(e @ (libc::EPERM | libc::EACCES)) => Unavailable::Forbidden(e),
        Err(libc::EINVAL) => Unavailable::RegisteredElsewhere,
        Err(e) => Unavailable::Refused(e),
    };
    // Not registered: mark it, as glibc does, so sections on this thread bail
    // out at once and we do not try again.
    // SAFETY: the kernel does not own an unregistered area.
    unsafe { cpu_id.write_volatile(CPU_ID_REGISTRATION_FAILED as u32) };
    Err(outcome)
}

/// # Safety
/// `area` must be a 32-byte aligned area of `len` bytes that stays valid while registered.
unsafe fn rseq_syscall(area: usize, len: u32, flags: i32) -> Result<(), Errno> {
    // SAFETY: forwarded from the caller.
    unsafe { crate::syscall::syscall4(crate::abi::SYS_RSEQ, area, len as usize, flags as usize, SIGNATURE as usize) }
        .map(|_| ())
}

/// The calling thread's CPU index as the kernel last wrote it (`I::FIELD`),
/// or `None` if critical sections cannot run on this thread.
pub fn current_index<I: crate::CpuIndex>() -> Option<u32> {
    let offset = area_offset()?;
    // SAFETY: an rseq mode guarantees an area at `offset` in every thread.
    let value = unsafe { arch::read_area_u32(offset, I::FIELD) } as i32;
    u32::try_from(value).ok()
}

/// Which fields of the area this kernel fills.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// `AT_RSEQ_FEATURE_SIZE`: bytes of the area the kernel keeps current
    /// (20 when the kernel does not say, as before Linux 6.3 or under valgrind).
    pub size: u32,
}

impl Features {
    /// Whether `mm_cid` is filled, so per-CPU data can be indexed by it.
    pub fn has_mm_cid(self) -> bool {
        self.size as usize >= OFFSET_MM_CID + 4
    }
}

/// The rseq fields this kernel fills.
pub fn features() -> Features {
    // SAFETY: getauxval only reads the auxiliary vector; it neither allocates nor fails.
    let size = unsafe { libc::getauxval(crate::abi::AT_RSEQ_FEATURE_SIZE) } as u32;
    Features { size: if size == 0 { 20 } else { size } }
}
