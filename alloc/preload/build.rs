//! Link options of `librseq_alloc.so`, both about the pages every process
//! that loads it keeps resident:
//!
//! - `-z separate-loadable-segments` starts every loadable segment on a page
//!   of its own, so the small read-only-after-relocation segment does not
//!   straddle a page boundary (the padding costs file size, not memory).
//! - `-z pack-relative-relocs` (RELR) packs the relative relocations (the
//!   rseq descriptors have many) into a few words, where the glibc we build
//!   on can load it (2.36+). The library then names `GLIBC_ABI_DT_RELR`, so
//!   an older glibc refuses it by that name rather than misloading it;
//!   built on an older glibc, or another libc, it goes without.

use std::process::Command;

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,separate-loadable-segments");
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
