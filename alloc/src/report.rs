//! Fatal reports: one line on stderr naming the call and the pointer, then
//! `abort`. Formatting uses a stack buffer: nothing here allocates.

use crate::os;

struct Line {
    buf: [u8; 160],
    len: usize,
}

impl Line {
    fn new() -> Line {
        Line { buf: [0; 160], len: 0 }
    }

    fn push(&mut self, bytes: &[u8]) -> &mut Line {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        self
    }

    fn hex(&mut self, value: usize) -> &mut Line {
        let mut digits = [0u8; 18];
        digits[..2].copy_from_slice(b"0x");
        let mut n = 2;
        let width = (usize::BITS - value.leading_zeros()).div_ceil(4).max(1) as usize;
        for i in (0..width).rev() {
            digits[n] = b"0123456789abcdef"[(value >> (4 * i)) & 15];
            n += 1;
        }
        self.push(&digits[..n])
    }

    fn decimal(&mut self, mut value: usize) -> &mut Line {
        let mut digits = [0u8; 20];
        let mut n = digits.len();
        loop {
            n -= 1;
            digits[n] = b'0' + (value % 10) as u8;
            value /= 10;
            if value == 0 {
                break;
            }
        }
        self.push(&digits[n..])
    }

    fn fatal(&mut self) -> ! {
        self.push(b"\n");
        os::fatal(&self.buf[..self.len])
    }
}

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
        line.push(b" at offset ").decimal(offset);
    }
    line.fatal()
}

/// Hardened mode: a sized free whose size is not the block's.
#[cold]
#[inline(never)]
pub(crate) fn size_mismatch(call: Call, ptr: usize, given: usize, actual: usize) -> ! {
    start(call)
        .push(b"size ")
        .decimal(given)
        .push(b" does not match block ")
        .hex(ptr)
        .push(b" of ")
        .decimal(actual)
        .push(b" bytes")
        .fatal()
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_pointers_in_hex() {
        let mut line = super::Line::new();
        line.push(b"p=").hex(0x7f00_dead_beef).push(b" z=").hex(0).push(b" d=").decimal(0).push(b",").decimal(1024);
        assert_eq!(&line.buf[..line.len], b"p=0x7f00deadbeef z=0x0 d=0,1024");
    }
}
