//! The one fact a compare needs from an ELF file: how many KiB of it the
//! loader maps from the file, read from its program headers.

use std::path::Path;

/// KiB of `library`'s file-backed loadable segments, in whole pages: what
/// the loader (and the kernel's fault-around) leaves resident of a library
/// none of whose code runs, such as the layout twin.
pub fn loaded_file_kib(library: &Path) -> Result<f64, String> {
    let elf = std::fs::read(library).map_err(|e| format!("{}: {e}", library.display()))?;
    let bad = || format!("{}: not a 64-bit little-endian ELF file", library.display());
    let word = |at: usize, len: usize| -> Result<usize, String> {
        let bytes = elf.get(at..at + len).ok_or_else(bad)?;
        Ok(bytes.iter().rev().fold(0, |n, &b| n << 8 | usize::from(b)))
    };
    if elf.get(..6) != Some(&b"\x7fELF\x02\x01"[..]) {
        return Err(bad());
    }
    const PT_LOAD: usize = 1;
    let (table, entry, entries) = (word(0x20, 8)?, word(0x36, 2)?, word(0x38, 2)?);
    let mut pages = 0;
    for i in 0..entries {
        let header = table + i * entry;
        let (kind, address, file_bytes) = (word(header, 4)?, word(header + 0x10, 8)?, word(header + 0x20, 8)?);
        if kind == PT_LOAD && file_bytes > 0 {
            pages += (address + file_bytes).div_ceil(4096) - address / 4096;
        }
    }
    Ok(pages as f64 * 4.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stand-in's resident pages are its loadable segments' file bytes,
    /// page by page: 0x1234 bytes from 0 (2 pages) and 0x100 from 0x3100
    /// (1 page); a dynamic-section entry is not a segment.
    #[test]
    fn loaded_file_kib_counts_the_pages_of_loadable_segments() {
        let mut elf = vec![0u8; 64 + 3 * 56];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&3u16.to_le_bytes());
        for (i, (kind, address, bytes)) in
            [(1u32, 0u64, 0x1234u64), (2, 0x3000, 0x40), (1, 0x3100, 0x100)].into_iter().enumerate()
        {
            let h = 64 + i * 56;
            elf[h..h + 4].copy_from_slice(&kind.to_le_bytes());
            elf[h + 0x10..h + 0x18].copy_from_slice(&address.to_le_bytes());
            elf[h + 0x20..h + 0x28].copy_from_slice(&bytes.to_le_bytes());
        }
        let path = std::env::temp_dir().join(format!("rseq-alloc-bench-elf-{}", std::process::id()));
        std::fs::write(&path, &elf).unwrap();
        let kib = loaded_file_kib(&path);
        std::fs::write(&path, b"not an ELF file").unwrap();
        let refused = loaded_file_kib(&path);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(kib, Ok(12.0));
        assert!(refused.is_err());
    }
}
