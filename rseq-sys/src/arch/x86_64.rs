//! Every x86-64 restartable sequence of the project, and the thread-pointer
//! plumbing they stand on. Long on purpose: the assembly of an architecture
//! lives in one module, under the one statement of the contract it keeps.
//!
//! # The rseq contract these sections keep
//!
//! A critical section (CS) is the instruction range `[4:, 5:)` of one `asm!`
//! block. The kernel guarantees that if the thread is preempted, migrated or
//! signalled while its instruction pointer is inside that range *and* the
//! thread's `rseq_cs` field points at the section's descriptor, execution
//! resumes at the abort label instead. So within the range we may read the
//! current CPU and act on that CPU's data as if we owned it, provided that:
//!
//! 1. **One committing store.** Everything before the last instruction is
//!    either a load or a store nobody else can observe (a speculative slot
//!    write above `current`, or a write to the caller's own buffer). The last
//!    instruction before `5:` publishes the result; if we are aborted before
//!    it, nothing happened. Slab sections commit the whole 64-bit header
//!    word, changing only `current`: a 32-bit store there, read back whole by
//!    the next section, would stall it (no store forwarding across a partial
//!    write).
//! 2. **Inputs survive a restart.** The abort handler jumps back to `2:`,
//!    which re-arms `rseq_cs` (the kernel cleared it) and starts again, so no
//!    input register is ever written; every scratch register is an output.
//!    Slab sections take one input, a pointer to their [`Slabs`], and load
//!    the area offset, the region count and base from it after `2:`, so a
//!    restart reloads them and they cost no register across the call.
//! 3. **No calls, no stack, no syscalls** inside the range: `options(nostack)`,
//!    and the range holds only the instructions written here.
//! 4. **The signature.** The four bytes before the abort label are
//!    [`SIGNATURE`], emitted as the displacement of a `ud1` so that they trap
//!    if ever executed (glibc's encoding). The abort label lives in a cold
//!    section, outside the range, as the kernel requires.
//! 5. **The descriptor** sits in a writable `__rseq_cs` section (it holds
//!    absolute addresses, fixed up by `R_X86_64_RELATIVE` relocations in a
//!    PIE or shared library) and is addressed RIP-relative, so no text
//!    relocation is needed.
//! 6. **The CPU is read inside the range.** There is no "expected CPU"
//!    compare: the index is loaded after `4:`, so a migration is just an abort.
//!    A negative index (unregistered, registration failed) fails the unsigned
//!    bound check and leaves with [`Miss::NoCpu`].
//! 7. **Numeric labels only**, never made of 0s and 1s alone: the compiler may
//!    duplicate an inlined block. `2` restart, `3` descriptor, `4` start,
//!    `5` post-commit, `6` abort, `7`/`8`/`9` misses, `30`/`31` loops,
//!    `20`/`21` fault injection.
//! 8. **Leaving early.** A miss leaves the range by a jump; nothing after it
//!    matters to the kernel (an IP outside the range is never restarted).
//!    [`slab_push`] jumps straight to the caller's code through label
//!    operands (`asm goto`), so a hit needs no exit code. Sections that
//!    return a value (pop, the batches) cannot: stable Rust does not allow
//!    label operands together with used outputs, so their misses go through
//!    stubs that write a code (`7`/`8`/`9`) and rejoin at `5:`.
//!
//! The `rseq_cs` and CPU fields are reached as `fs:[offset + field]`, with
//! `offset` the area's distance from the thread pointer, the same for every
//! thread (glibc's `__rseq_offset`, or our own static-TLS area's).

use core::arch::{asm, global_asm};
use core::mem::offset_of;
use core::sync::atomic::AtomicU8;

use crate::abi::{OFFSET_RSEQ_CS, SIGNATURE};
use crate::cs::{CpuIndex, MAX_BATCH, Miss};
use crate::slab_layout::{HEADERS_OFFSET, STATE_OFFSET, STATE_OPEN, Slabs};

/// Critical sections are built for this target.
pub const SUPPORTED: bool = true;

// Where the slab sections find the fields of `Slabs`.
const SLABS_RSEQ_OFFSET: usize = offset_of!(Slabs, rseq_offset);
const SLABS_BASE: usize = offset_of!(Slabs, base);
const SLABS_COUNT: usize = offset_of!(Slabs, count);

// Miss codes as the assembly writes them (literals in the stubs below).
const _: () = {
    assert!(Miss::Exhausted as usize == 0);
    assert!(Miss::Stopped as usize == 1);
    assert!(Miss::NoCpu as usize == 2);
    assert!(STATE_OPEN == 1);
    assert!(crate::slab_layout::SENTINEL_BIT == 1);
    // `class_header!` addresses `header_offset(class)` as `class*8 + HEADERS_OFFSET`.
    assert!(crate::slab_layout::header_offset(5) == 5 * 8 + HEADERS_OFFSET);
};

/// A delay loop of `DELAY_LOOPS[n]` iterations, in builds with fault injection.
#[cfg(feature = "inject")]
macro_rules! inject_point {
    ($n:literal) => {
        concat!(
            "mov {inj:e}, dword ptr [rip + {delays} + 4*",
            $n,
            "]\n",
            "test {inj:e}, {inj:e}\n",
            "jz 21f\n",
            "20:\n",
            "sub {inj:e}, 1\n",
            "jnz 20b\n",
            "21:\n"
        )
    };
}
#[cfg(not(feature = "inject"))]
macro_rules! inject_point {
    ($n:literal) => {
        ""
    };
}

/// `asm!` with the operands every section shares (and the injection ones).
#[cfg(feature = "inject")]
macro_rules! rseq_asm {
    ($($template:expr),+ ; $($operands:tt)*) => {
        asm!(
            $($template),+, $($operands)*
            rseq_cs = const OFFSET_RSEQ_CS,
            sig = const SIGNATURE,
            aborts = sym crate::cs::ABORTS,
            inj = out(reg) _,
            delays = sym crate::inject::DELAY_LOOPS,
            options(nostack),
        )
    };
}
#[cfg(not(feature = "inject"))]
macro_rules! rseq_asm {
    ($($template:expr),+ ; $($operands:tt)*) => {
        asm!(
            $($template),+, $($operands)*
            rseq_cs = const OFFSET_RSEQ_CS,
            sig = const SIGNATURE,
            aborts = sym crate::cs::ABORTS,
            options(nostack),
        )
    };
}

/// Injection point 4, restart label, arming of the descriptor (using register
/// `$scratch`), start label.
macro_rules! cs_begin {
    ($scratch:literal) => {
        concat!(
            inject_point!(4),
            "2:\n",
            "lea {",
            $scratch,
            "}, [rip + 3f]\n",
            "mov qword ptr fs:[{off} + {rseq_cs}], {",
            $scratch,
            "}\n",
            "4:\n",
        )
    };
}

/// `base = slabs + (index << shift)`, leaving through `7:` if the index is
/// negative or out of range.
macro_rules! cs_region {
    () => {
        concat!(
            "mov {base:e}, dword ptr fs:[{off} + {field}]\n",
            "cmp {base:e}, {ncpus:e}\n",
            "jae 7f\n",
            "shl {base}, {shift}\n",
            "add {base}, {slabs}\n",
        )
    };
}

/// [`rseq_asm!`] with what a slab section addresses: the fields of
/// [`Slabs`] (through the `slabs` pointer) and the class headers.
macro_rules! slab_asm {
    ($($template:expr),+ ; $($operands:tt)*) => {
        rseq_asm!(
            $($template),+ ; $($operands)*
            slabs_offset = const SLABS_RSEQ_OFFSET,
            slabs_base = const SLABS_BASE,
            slabs_count = const SLABS_COUNT,
            headers = const HEADERS_OFFSET,
            state = const STATE_OFFSET,
        )
    };
}

/// A slab section's start: injection point 4; at the restart label, the
/// area offset loaded into `base` and the descriptor armed (using register
/// `$scratch`); the start label; then `base = slabs.base + (index << shift)`,
/// leaving through `$no_cpu` if the index is negative or not below
/// `slabs.count`, and through `$stopped` unless the region's state word reads
/// OPEN. Only `slabs` (an input) is needed across a restart: the offset is
/// reloaded, and `base` holds it only until the index replaces it.
macro_rules! cs_slab_begin {
    ($scratch:literal, $no_cpu:literal, $stopped:literal) => {
        concat!(
            inject_point!(4),
            "2:\n",
            "mov {base}, qword ptr [{slabs} + {slabs_offset}]\n",
            "lea {",
            $scratch,
            "}, [rip + 3f]\n",
            "mov qword ptr fs:[{base} + {rseq_cs}], {",
            $scratch,
            "}\n",
            "4:\n",
            inject_point!(1),
            "mov {base:e}, dword ptr fs:[{base} + {field}]\n",
            "cmp {base:e}, dword ptr [{slabs} + {slabs_count}]\n",
            "jae ",
            $no_cpu,
            "\n",
            "shl {base}, {shift}\n",
            "add {base}, qword ptr [{slabs} + {slabs_base}]\n",
            "cmp qword ptr [{base} + {state}], 1\n",
            "jne ",
            $stopped,
            "\n",
        )
    };
}

/// `class`'s header in the region at `base` (a memory operand).
macro_rules! class_header {
    () => {
        "qword ptr [{base} + {class}*8 + {headers}]"
    };
}

/// The `end` half of `class`'s header (a memory operand).
macro_rules! class_end {
    () => {
        "dword ptr [{base} + {class}*8 + {headers} + 4]"
    };
}

/// Miss stubs of a single-item section: `$r` gets the miss code.
macro_rules! miss_stubs {
    ($r:literal) => {
        concat!(
            "7:\nmov {",
            $r,
            ":e}, 2\njmp 5b\n",
            "8:\nmov {",
            $r,
            ":e}, 1\njmp 5b\n",
            "9:\nxor {",
            $r,
            ":e}, {",
            $r,
            ":e}\njmp 5b\n",
        )
    };
}

/// Miss stubs of a batch section: no items (`cnt`), and the miss code in `val`.
macro_rules! batch_miss_stubs {
    () => {
        concat!(
            "7:\nxor {cnt:e}, {cnt:e}\nmov {val:e}, 2\njmp 5b\n",
            "8:\nxor {cnt:e}, {cnt:e}\nmov {val:e}, 1\njmp 5b\n",
            "9:\nxor {val:e}, {val:e}\njmp 5b\n",
        )
    };
}

/// Post-commit label, injection point 5, the miss stubs `$stubs` and the abort
/// handler in a cold section, then the descriptor. The stubs jump back to `5:`.
macro_rules! cs_end {
    ($stubs:expr) => {
        concat!(
            "5:\n",
            inject_point!(5),
            ".pushsection .text.unlikely.rseq, \"ax\"\n",
            $stubs,
            ".byte 0x0f, 0xb9, 0x3d\n",
            ".long {sig}\n",
            "6:\n",
            "lock inc qword ptr [rip + {aborts}]\n",
            "jmp 2b\n",
            ".popsection\n",
            ".pushsection __rseq_cs, \"aw\"\n",
            ".balign 32\n",
            "3:\n",
            ".long 0, 0\n",
            ".quad 4b, 5b - 4b, 6b\n",
            ".popsection\n",
        )
    };
}

/// Adds `delta` to this CPU's `u64` at `counters + (index << SHIFT)`
/// (`load_add_store`).
///
/// # Safety
/// - `rseq_offset` is the registered area's offset ([`crate::Mode`] is an rseq mode).
/// - `counters` points to `ncpus << SHIFT` writable bytes, each counter 8-aligned,
///   touched by other threads only through critical sections or while they hold it busy.
#[inline(always)]
pub unsafe fn percpu_add<I: CpuIndex, const SHIFT: u32>(
    rseq_offset: isize,
    counters: *mut u8,
    ncpus: u32,
    delta: u64,
) -> Result<(), Miss> {
    let base: usize;
    // SAFETY: the section touches only this CPU's counter, in bounds by the
    // `ncpus` check and the caller's promise; see the module contract.
    unsafe {
        rseq_asm!(
            cs_begin!("base"),
            inject_point!(1),
            cs_region!(),
            "mov {val}, qword ptr [{base}]",
            "add {val}, {delta}",
            inject_point!(3),
            "mov qword ptr [{base}], {val}",
            cs_end!("7:\nxor {base:e}, {base:e}\njmp 5b\n");
            off = in(reg) rseq_offset,
            slabs = in(reg) counters,
            ncpus = in(reg) ncpus,
            delta = in(reg) delta,
            field = const I::FIELD,
            shift = const SHIFT,
            base = out(reg) base,
            val = out(reg) _,
        );
    }
    if base != 0 { Ok(()) } else { Err(Miss::NoCpu) }
}

/// Pops the top item of `class` from this CPU's region of `slabs`.
///
/// # Safety
/// - `slabs.rseq_offset` is the registered area's offset ([`crate::Mode`]
///   is an rseq mode), and `slabs.base` covers `slabs.count << SHIFT` bytes
///   laid out as [`crate::slab_layout`] describes;
/// - `class` is a class of that layout, which keeps its invariants on every CPU.
#[inline(always)]
pub unsafe fn slab_pop<I: CpuIndex, const SHIFT: u32>(slabs: &Slabs, class: usize) -> Result<usize, Miss> {
    let res: usize;
    // SAFETY: loads stay inside this CPU's region (the sentinel guards the
    // bottom of the class); the commit rewrites the header with only
    // `current` changed (it is at least `begin >= 1`, so no borrow reaches `end`).
    unsafe {
        slab_asm!(
            cs_slab_begin!("res", "7f", "8f"),
            concat!("mov {word}, ", class_header!()),
            "mov {cur:e}, {word:e}",
            inject_point!(2),
            "mov {res}, qword ptr [{base} + {cur}*8 - 8]",
            "test {res:l}, 1",
            "jnz 9f",
            "sub {word}, 1",
            inject_point!(3),
            concat!("mov ", class_header!(), ", {word}"),
            cs_end!(miss_stubs!("res"));
            slabs = in(reg) slabs,
            class = in(reg) class,
            field = const I::FIELD,
            shift = const SHIFT,
            base = out(reg) _,
            cur = out(reg) _,
            word = out(reg) _,
            res = out(reg) res,
        );
    }
    if res > Miss::MAX_CODE { Ok(res) } else { Err(Miss::from_code(res)) }
}

/// Pushes `item` onto `class` in this CPU's region of `slabs`; refuses it
/// ([`Miss::Repeated`]) if it is the item on top already.
///
/// Its misses leave the section by jumping straight to the caller's code
/// (`asm goto`): no miss code to write, compare and branch on once more.
///
/// # Safety
/// As [`slab_pop`]; and `item` has bit 0 clear and exceeds [`Miss::MAX_CODE`].
#[inline(always)]
pub unsafe fn slab_push<I: CpuIndex, const SHIFT: u32>(slabs: &Slabs, class: usize, item: usize) -> Result<(), Miss> {
    // SAFETY: the speculative slot write is below `end`, inside the class's
    // capacity; the commit rewrites the header with only `current` changed
    // (`current < end <= u32::MAX`, so no carry reaches `end`).
    unsafe {
        slab_asm!(
            cs_slab_begin!("word", "{no_cpu}", "{stopped}"),
            concat!("mov {word}, ", class_header!()),
            "mov {cur:e}, {word:e}",
            concat!("cmp {cur:e}, ", class_end!()),
            "jae {full}",
            // The top slot, or the sentinel below an empty stack (bit 0
            // set, never an item): the same item twice in a row is refused.
            "cmp qword ptr [{base} + {cur}*8 - 8], {item}",
            "je {repeated}",
            inject_point!(2),
            "mov qword ptr [{base} + {cur}*8], {item}",
            "add {word}, 1",
            inject_point!(3),
            concat!("mov ", class_header!(), ", {word}"),
            cs_end!("");
            slabs = in(reg) slabs,
            class = in(reg) class,
            item = in(reg) item,
            field = const I::FIELD,
            shift = const SHIFT,
            base = out(reg) _,
            cur = out(reg) _,
            word = out(reg) _,
            no_cpu = label { return Err(Miss::NoCpu) },
            stopped = label { return Err(Miss::Stopped) },
            full = label { return Err(Miss::Exhausted) },
            repeated = label { return Err(Miss::Repeated) },
        );
    }
    Ok(())
}

/// Pops up to `max` items of `class` from this CPU's region of `slabs` into
/// `out`, top first, at most [`MAX_BATCH`] (a caller that wants more calls
/// again); returns how many.
///
/// # Safety
/// As [`slab_pop`]; `out` is writable for `max` items and `max >= 1`.
#[inline(always)]
pub unsafe fn slab_pop_batch<I: CpuIndex, const SHIFT: u32>(
    slabs: &Slabs,
    class: usize,
    out: *mut usize,
    max: usize,
) -> Result<usize, Miss> {
    debug_assert!(max >= 1);
    let max = max.min(MAX_BATCH);
    let count: usize;
    let code: usize;
    // SAFETY: loads stay above the class's sentinel; stores to `out` are
    // private to the caller until we return; one commit of the header.
    unsafe {
        slab_asm!(
            cs_slab_begin!("cnt", "7f", "8f"),
            concat!("mov {word}, ", class_header!()),
            "mov {cur:e}, {word:e}",
            "xor {cnt:e}, {cnt:e}",
            "30:",
            "cmp {cnt}, {max}",
            "jae 31f",
            "mov {val}, qword ptr [{base} + {cur}*8 - 8]",
            "test {val:l}, 1",
            "jnz 31f",
            "mov qword ptr [{buf} + {cnt}*8], {val}",
            inject_point!(2),
            "sub {cur:e}, 1",
            "add {cnt:e}, 1",
            "jmp 30b",
            "31:",
            "test {cnt:e}, {cnt:e}",
            "jz 9f",
            "sub {word}, {cnt}",
            inject_point!(3),
            concat!("mov ", class_header!(), ", {word}"),
            cs_end!(batch_miss_stubs!());
            slabs = in(reg) slabs,
            class = in(reg) class,
            buf = in(reg) out,
            max = in(reg) max,
            field = const I::FIELD,
            shift = const SHIFT,
            base = out(reg) _,
            word = out(reg) _,
            cur = out(reg) _,
            cnt = out(reg) count,
            val = out(reg) code,
        );
    }
    if count > 0 { Ok(count) } else { Err(Miss::from_code(code)) }
}

/// Pushes up to `len` items from `items` onto `class` in this CPU's region
/// of `slabs`, as many as fit and at most [`MAX_BATCH`] (a caller with more
/// calls again); returns how many (taken from the front of `items`).
///
/// # Safety
/// As [`slab_push`] for every item; `items` is readable for `len` items and
/// `len >= 1`.
#[inline(always)]
pub unsafe fn slab_push_batch<I: CpuIndex, const SHIFT: u32>(
    slabs: &Slabs,
    class: usize,
    items: *const usize,
    len: usize,
) -> Result<usize, Miss> {
    debug_assert!(len >= 1);
    let len = len.min(MAX_BATCH);
    let count: usize;
    let code: usize;
    // SAFETY: speculative slot writes stay below `end`; one commit of the header.
    unsafe {
        slab_asm!(
            cs_slab_begin!("cnt", "7f", "8f"),
            concat!("mov {word}, ", class_header!()),
            "mov {cur:e}, {word:e}",
            "xor {cnt:e}, {cnt:e}",
            "30:",
            "cmp {cnt}, {len}",
            "jae 31f",
            concat!("cmp {cur:e}, ", class_end!()),
            "jae 31f",
            "mov {val}, qword ptr [{buf} + {cnt}*8]",
            "mov qword ptr [{base} + {cur}*8], {val}",
            inject_point!(2),
            "add {cur:e}, 1",
            "add {cnt:e}, 1",
            "jmp 30b",
            "31:",
            "test {cnt:e}, {cnt:e}",
            "jz 9f",
            "add {word}, {cnt}",
            inject_point!(3),
            concat!("mov ", class_header!(), ", {word}"),
            cs_end!(batch_miss_stubs!());
            slabs = in(reg) slabs,
            class = in(reg) class,
            buf = in(reg) items,
            len = in(reg) len,
            field = const I::FIELD,
            shift = const SHIFT,
            base = out(reg) _,
            word = out(reg) _,
            cur = out(reg) _,
            cnt = out(reg) count,
            val = out(reg) code,
        );
    }
    if count > 0 { Ok(count) } else { Err(Miss::from_code(code)) }
}

/// Replaces `class`'s header in this CPU's region of `slabs` by `new` if it
/// reads `expected`, after setting the sentinel bit in slot `sentinel` (the
/// slot below the new header's `current`): a per-CPU compare-and-store, used
/// to give a class its own slots the first time it is used on a CPU. Returns
/// whether it replaced the header.
///
/// # Safety
/// As [`slab_pop`]; `new` keeps the layout's invariants once slot
/// `sentinel` holds the sentinel bit, and that slot is read by nobody while
/// the header reads `expected` (so the speculative write is private).
#[inline(always)]
pub unsafe fn slab_replace_header<I: CpuIndex, const SHIFT: u32>(
    slabs: &Slabs,
    class: usize,
    expected: u64,
    new: u64,
    sentinel: usize,
) -> Result<bool, Miss> {
    let code: usize;
    // SAFETY: the slot write is private until the commit (the caller's
    // promise); the commit is the single store of the new header.
    unsafe {
        slab_asm!(
            cs_slab_begin!("code", "7f", "8f"),
            concat!("cmp ", class_header!(), ", {expected}"),
            "jne 9f",
            inject_point!(2),
            "mov qword ptr [{base} + {sent}*8], 1",
            "mov {code:e}, 3",
            inject_point!(3),
            concat!("mov ", class_header!(), ", {new}"),
            cs_end!(miss_stubs!("code"));
            slabs = in(reg) slabs,
            class = in(reg) class,
            expected = in(reg) expected,
            new = in(reg) new,
            sent = in(reg) sentinel,
            field = const I::FIELD,
            shift = const SHIFT,
            base = out(reg) _,
            code = out(reg) code,
        );
    }
    match code {
        0 => Ok(false),
        3 => Ok(true),
        miss => Err(Miss::from_code(miss)),
    }
}

/// Pops the first node of this CPU's intrusive list, whose head pointer is at
/// `heads + (index << SHIFT)` and whose nodes hold the next pointer in their
/// first word (librseq's `load_cbeq_store_add_load_store`). Kept to compare
/// with the slab; the allocator does not use it (it reads freed memory).
///
/// # Safety
/// - `rseq_offset` is the registered area's offset.
/// - `heads` covers `ncpus << SHIFT` bytes; every list is null-terminated and
///   its nodes stay readable while listed.
#[inline(always)]
pub unsafe fn list_pop<I: CpuIndex, const SHIFT: u32>(
    rseq_offset: isize,
    heads: *mut u8,
    ncpus: u32,
) -> Result<usize, Miss> {
    let res: usize;
    // SAFETY: the section reads this CPU's head and the head node's link, and
    // commits the new head; a node cannot leave the list under us (only this
    // CPU's sections touch it), so there is no ABA.
    unsafe {
        rseq_asm!(
            cs_begin!("res"),
            inject_point!(1),
            cs_region!(),
            "mov {res}, qword ptr [{base}]",
            "test {res}, {res}",
            "jz 9f",
            inject_point!(2),
            "mov {next}, qword ptr [{res}]",
            inject_point!(3),
            "mov qword ptr [{base}], {next}",
            cs_end!(concat!(
                "7:\nmov {res:e}, 2\njmp 5b\n",
                "9:\nxor {res:e}, {res:e}\njmp 5b\n",
            ));
            off = in(reg) rseq_offset,
            slabs = in(reg) heads,
            ncpus = in(reg) ncpus,
            field = const I::FIELD,
            shift = const SHIFT,
            base = out(reg) _,
            next = out(reg) _,
            res = out(reg) res,
        );
    }
    if res > Miss::MAX_CODE { Ok(res) } else { Err(Miss::from_code(res)) }
}

/// Pushes `node` onto this CPU's intrusive list (see [`list_pop`]).
///
/// # Safety
/// As [`list_pop`]; `node` is writable, owned by the caller, and larger than
/// [`Miss::MAX_CODE`].
#[inline(always)]
pub unsafe fn list_push<I: CpuIndex, const SHIFT: u32>(
    rseq_offset: isize,
    heads: *mut u8,
    ncpus: u32,
    node: usize,
) -> Result<(), Miss> {
    let code: usize;
    // SAFETY: the link written into `node` is private until the commit
    // publishes `node` as this CPU's head.
    unsafe {
        rseq_asm!(
            cs_begin!("code"),
            inject_point!(1),
            cs_region!(),
            "mov {head}, qword ptr [{base}]",
            "mov qword ptr [{node}], {head}",
            "mov {code:e}, 3",
            inject_point!(3),
            "mov qword ptr [{base}], {node}",
            cs_end!("7:\nmov {code:e}, 2\njmp 5b\n");
            off = in(reg) rseq_offset,
            slabs = in(reg) heads,
            ncpus = in(reg) ncpus,
            node = in(reg) node,
            field = const I::FIELD,
            shift = const SHIFT,
            base = out(reg) _,
            head = out(reg) _,
            code = out(reg) code,
        );
    }
    if code > Miss::MAX_CODE { Ok(()) } else { Err(Miss::from_code(code)) }
}

/// The calling thread's thread pointer (`%fs` base), which glibc and musl
/// keep as the first word of the thread control block.
#[inline(always)]
pub fn thread_pointer() -> usize {
    let tp: usize;
    // SAFETY: on x86-64 Linux, `fs:0` is the TCB's self-pointer in every thread.
    unsafe { asm!("mov {tp}, qword ptr fs:[0]", tp = out(reg) tp, options(nostack, pure, readonly, preserves_flags)) };
    tp
}

/// The value at `fs:[rseq_offset + field]`: the thread's CPU index as the
/// kernel last wrote it (negative when not registered).
///
/// # Safety
/// `rseq_offset` is the offset of a live rseq area (glibc's or ours).
#[inline(always)]
pub unsafe fn read_area_u32(rseq_offset: isize, field: usize) -> u32 {
    let value: u32;
    // SAFETY: the caller promises an area at that offset from the thread pointer.
    unsafe {
        asm!(
            "mov {v:e}, dword ptr fs:[{off} + {field}]",
            v = out(reg) value,
            off = in(reg) rseq_offset,
            field = in(reg) field,
            options(nostack, readonly, preserves_flags),
        );
    }
    value
}

/// glibc's per-thread area as `(__rseq_offset, __rseq_size)`, if this glibc
/// exports them (2.35+). The symbols are weak, so the library still loads on
/// an older glibc or musl; no `dlsym`, which can allocate.
pub fn glibc_area() -> Option<(isize, u32)> {
    let offset_ptr: *const isize;
    let size_ptr: *const u32;
    // SAFETY: loads of two GOT entries; an undefined weak symbol's entry is 0.
    unsafe {
        asm!(
            ".weak __rseq_offset",
            ".weak __rseq_size",
            "mov {o}, qword ptr [rip + __rseq_offset@GOTPCREL]",
            "mov {s}, qword ptr [rip + __rseq_size@GOTPCREL]",
            o = out(reg) offset_ptr,
            s = out(reg) size_ptr,
            options(nostack, pure, readonly, preserves_flags),
        );
    }
    if offset_ptr.is_null() || size_ptr.is_null() {
        return None;
    }
    // SAFETY: both symbols are defined by ld.so and never change after start-up.
    Some(unsafe { (*offset_ptr, *size_ptr) })
}

/// glibc's `__libc_single_threaded` (2.32+): nonzero while the process has
/// had no thread but its first, which lets a caller skip the atomic
/// instructions of its locks, as glibc's own `malloc` does. `None` on a C
/// library without it (the symbol is weak, like those of [`glibc_area`]).
pub fn glibc_single_threaded() -> Option<&'static AtomicU8> {
    let flag: *const AtomicU8;
    // SAFETY: a load of a GOT entry; an undefined weak symbol's entry is 0.
    unsafe {
        asm!(
            ".weak __libc_single_threaded",
            "mov {f}, qword ptr [rip + __libc_single_threaded@GOTPCREL]",
            f = out(reg) flag,
            options(nostack, pure, readonly, preserves_flags),
        );
    }
    // SAFETY: glibc's variable lives as long as the process; it is a byte
    // that glibc writes and anyone may read.
    unsafe { flag.as_ref() }
}

// Our own per-thread area, used when glibc did not register one. It is
// defined here rather than with `thread_local!` so that it is reached with the
// initial-exec TLS model: that model guarantees the area is in *static* TLS,
// at one offset from the thread pointer in every thread, and so lives exactly
// as long as the thread (the kernel stops writing to it before the memory can
// be reused, as with glibc's own area). A `thread_local!` in a dlopen'ed
// library could land in dynamic TLS, which glibc frees before the thread's
// final exit. `cpu_id` starts at -1 (unregistered) in every new thread.
global_asm!(
    ".pushsection .tdata, \"awT\", @progbits",
    ".balign 32",
    ".local rseq_sys_own_area",
    ".type rseq_sys_own_area, @object",
    ".size rseq_sys_own_area, 32",
    "rseq_sys_own_area:",
    ".long 0, 0xffffffff, 0, 0, 0, 0, 0, 0",
    ".popsection",
);

/// Offset of our own static-TLS area from the thread pointer.
#[inline]
pub fn own_area_offset() -> isize {
    let offset: isize;
    // SAFETY: reads the GOT slot the loader filled with the TLS offset.
    unsafe {
        asm!(
            "mov {o}, qword ptr [rip + rseq_sys_own_area@GOTTPOFF]",
            o = out(reg) offset,
            options(nostack, pure, readonly, preserves_flags),
        );
    }
    offset
}
