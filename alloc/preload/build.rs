//! Link options of `librseq_alloc.so`.
//!
//! `-z separate-loadable-segments` starts every loadable segment on a page
//! of its own. Without it lld starts the read-only-after-relocation segment
//! (GOT, dynamic section: 0x2e0 bytes) at the page offset where the text
//! ended, and it straddled a page boundary: two pages resident in every
//! process for one page of data. The padding costs file size, not memory.

fn main() {
    println!("cargo:rustc-cdylib-link-arg=-Wl,-z,separate-loadable-segments");
}
