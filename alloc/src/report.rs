//! Fatal reports: one line on stderr naming the call and the pointer, then
//! `abort`, written with [`Line`]: nothing here allocates.

use crate::text::Line;

/// The entry point a report names: the call the program made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Call {
    /// `malloc` and the other allocation calls (`GlobalAlloc::alloc`).
    Malloc,
    /// `calloc` (`GlobalAlloc::alloc_zeroed`).
    Calloc,
    /// `free` (and `GlobalAlloc::dealloc`).
    Free,
    /// `free_sized` / `free_aligned_sized`.
    FreeSized,
    /// `realloc` (and `GlobalAlloc::realloc`).
    Realloc,
    /// `malloc_usable_size`.
    UsableSize,
}

impl Call {
    fn name(self) -> &'static [u8] {
        match self {
            Call::Malloc => b"malloc()",
            Call::Calloc => b"calloc()",
            Call::Free => b"free()",
            Call::FreeSized => b"free_sized()",
            Call::Realloc => b"realloc()",
            Call::UsableSize => b"malloc_usable_size()",
        }
    }
}

fn start(call: Call) -> Line {
    let mut line = Line::new();
    line.push(b"rseq-alloc: ").push(call.name()).push(b": ");
    line
}

/// A pointer the allocator never handed out, or not the start of a block.
#[cold]
#[inline(never)]
pub(crate) fn invalid_pointer(call: Call, ptr: usize) -> ! {
    start(call).push(b"invalid pointer ").hex(ptr).fatal()
}

/// A block freed while already free (or, for other calls, used after it
/// was freed).
#[cold]
#[inline(never)]
pub(crate) fn double_free(call: Call, ptr: usize) -> ! {
    let what: &[u8] = if matches!(call, Call::Free | Call::FreeSized) { b"double free of " } else { b"freed block " };
    start(call).push(what).hex(ptr).fatal()
}

/// Hardened mode: a check on a block's memory failed; `what` says which,
/// and `offset`, when known, where from the block's start.
#[cold]
#[inline(never)]
pub(crate) fn corrupted(call: Call, what: &[u8], ptr: usize, offset: Option<usize>) -> ! {
    let mut line = start(call);
    line.push(what).push(b" ").hex(ptr);
    if let Some(offset) = offset {
        line.push(b" at offset ").decimal(offset as u64);
    }
    line.fatal()
}

/// Hardened mode: a sized free whose size is not the block's.
#[cold]
#[inline(never)]
pub(crate) fn size_mismatch(call: Call, ptr: usize, given: usize, actual: usize) -> ! {
    start(call)
        .push(b"size ")
        .decimal(given as u64)
        .push(b" does not match block ")
        .hex(ptr)
        .push(b" of ")
        .decimal(actual as u64)
        .push(b" bytes")
        .fatal()
}
