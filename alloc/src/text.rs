//! Lines of text built in a stack buffer and written to stderr: the fatal
//! reports and the statistics summary. The allocator writes its own
//! numbers rather than use `core::fmt`, whose formatter, padding and digit
//! tables made up a sixth of the preload library's code and read-only
//! data, all of it resident in every process that loads it. Nothing here
//! allocates.

use crate::os;

/// One line of text; what does not fit is cut off.
pub(crate) struct Line {
    buf: [u8; 320],
    len: usize,
}

impl Line {
    pub(crate) fn new() -> Line {
        Line { buf: [0; 320], len: 0 }
    }

    // Not inlined, nor are the others: a report is a chain of calls, and
    // copies of them at every link made the summary 5 KiB of code.
    #[inline(never)]
    pub(crate) fn push(&mut self, bytes: &[u8]) -> &mut Line {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
        self
    }

    /// `value` in hexadecimal, with `0x`.
    pub(crate) fn hex(&mut self, value: usize) -> &mut Line {
        self.push(b"0x").number(value as u64, 16, 0)
    }

    /// `value` in decimal.
    pub(crate) fn decimal(&mut self, value: u64) -> &mut Line {
        self.number(value, 10, 0)
    }

    /// `value` in decimal, right-aligned in `width` columns.
    pub(crate) fn column(&mut self, value: u64, width: usize) -> &mut Line {
        self.number(value, 10, width)
    }

    /// `value` in base `radix` (at most 16), right-aligned in `width` columns.
    #[inline(never)]
    fn number(&mut self, mut value: u64, radix: u64, width: usize) -> &mut Line {
        let mut digits = [b' '; 24];
        let mut n = digits.len();
        loop {
            n -= 1;
            digits[n] = b"0123456789abcdef"[(value % radix) as usize];
            value /= radix;
            if value == 0 {
                break;
            }
        }
        self.push(&digits[n.min(digits.len().saturating_sub(width))..])
    }

    /// Ends the line, writes it to descriptor `fd` and starts the next one.
    #[inline(never)]
    pub(crate) fn write_to(&mut self, fd: i32) {
        self.push(b"\n");
        os::write_all(fd, &self.buf[..self.len]);
        self.len = 0;
    }

    /// The line so far, emptied for the next one.
    pub(crate) fn take(&mut self) -> &[u8] {
        let len = core::mem::replace(&mut self.len, 0);
        &self.buf[..len]
    }

    /// Ends the line, writes it to stderr and aborts.
    pub(crate) fn fatal(&mut self) -> ! {
        self.push(b"\n");
        os::fatal(&self.buf[..self.len])
    }

    /// The line so far.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::Line;

    #[test]
    fn writes_pointers_in_hex_and_numbers_in_columns() {
        let mut line = Line::new();
        line.push(b"p=").hex(0x7f00_dead_beef).push(b" z=").hex(0).push(b" d=").decimal(0).push(b",").decimal(1024);
        assert_eq!(line.as_bytes(), b"p=0x7f00deadbeef z=0x0 d=0,1024");
        let mut line = Line::new();
        line.push(b"|").column(48, 6).push(b"|").column(1234567, 3).push(b"|").column(u64::MAX, 21).push(b"|");
        assert_eq!(line.as_bytes(), b"|    48|1234567| 18446744073709551615|");
    }

    #[test]
    fn cuts_off_what_does_not_fit() {
        let mut line = Line::new();
        for _ in 0..100 {
            line.push(b"0123456789");
        }
        assert_eq!(line.as_bytes().len(), 320);
    }
}
