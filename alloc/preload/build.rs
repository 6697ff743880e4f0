//! Link options of `librseq_alloc.so`.
//!
//! `-z separate-loadable-segments` starts every loadable segment on a page
//! of its own. Without it lld starts the read-only-after-relocation segment
//! (GOT, dynamic section: 0x2e0 bytes) at the page offset where the text
//! ended, and it straddled a page boundary: two pages resident in every
//! process for one page of data. The padding costs file size, not memory.
//!
//! `bss_order.ld` puts the central lists and the segment map after every
//! other `.bss` object. LLVM emitted the page heap, the hardened-mode and
//! rseq-sys statics after the 4 MiB map, on a page that every process
//! touched for their 100 bytes; now they share the data page with the
//! other small statics (`tight`: the library's anonymous `.bss` resident
//! 16 KiB → 12).
//!
//! `text_order.ld` splits the code in two: what no ordinary program runs
//! (statistics, reports, fork handling, hardened mode, huge blocks,
//! `realloc`, `malloc_trim` and the like) ends on a 64 KiB boundary, where
//! the rest starts. The kernel maps a file's cached pages by aligned 64 KiB
//! windows (fault-around), so all 13 pages of text were resident in every
//! process; now a program that only allocates and frees maps the 8 pages of
//! the hot part (`tight`, `startup`: 20 KiB less), and one that calls a cold
//! function maps the 6 of the cold part too (`realloc`: 4 KiB more). The
//! same file moves the unwind tables to a read-only segment after the code,
//! where nothing maps them until something unwinds: the first segment is 3
//! pages instead of 4 (4 KiB less in every process).
//!
//! `-z pack-relative-relocs` (RELR), where the glibc we build on loads it
//! (2.36+): the relative relocations, 41 of them for the rseq critical
//! sections' descriptors alone, shrink from 24 bytes each to a few words,
//! and the read-only segment from 5 pages to 4, one page less resident in
//! every process. The library then needs glibc 2.36 to load (it names
//! `GLIBC_ABI_DT_RELR`, so an older one refuses it with that name rather
//! than misloading it); built on an older glibc, or on another libc, it
//! goes without.

use std::process::Command;

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,separate-loadable-segments");
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-T,{dir}/bss_order.ld");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-T,{dir}/text_order.ld");
    println!("cargo:rerun-if-changed=bss_order.ld");
    println!("cargo:rerun-if-changed=text_order.ld");
    println!("cargo:rerun-if-changed=build.rs");
    if glibc_loads_relr() {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether the build host's C library is glibc 2.36 or later
/// (`getconf GNU_LIBC_VERSION` prints `glibc 2.36`; elsewhere it fails).
fn glibc_loads_relr() -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else { return false };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(version) = text.trim().strip_prefix("glibc ") else { return false };
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    out.status.success() && (major, minor) >= (2, 36)
}
