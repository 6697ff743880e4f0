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

    fn fatal(&mut self) -> ! {
        self.push(b"\n");
        os::fatal(&self.buf[..self.len])
    }
}

/// A pointer the allocator never handed out, or not the start of a block.
#[cold]
#[inline(never)]
pub(crate) fn invalid_pointer(ptr: usize) -> ! {
    Line::new().push(b"rseq-alloc: free(): invalid pointer ").hex(ptr).fatal()
}

/// A block freed while already free.
#[cold]
#[inline(never)]
pub(crate) fn double_free(ptr: usize) -> ! {
    Line::new().push(b"rseq-alloc: free(): double free of ").hex(ptr).fatal()
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_pointers_in_hex() {
        let mut line = super::Line::new();
        line.push(b"p=").hex(0x7f00_dead_beef).push(b" z=").hex(0);
        assert_eq!(&line.buf[..line.len], b"p=0x7f00deadbeef z=0x0");
    }
}
