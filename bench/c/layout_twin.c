/* A stand-in with the shape of librseq_alloc.so, for glibc's reference
 * row "glibc@our-layout" in `compare` (bench/src/compare/peers.rs,
 * `GLIBC_OUR_LAYOUT`).
 *
 * Where ASLR puts libc moves a small program's peak RSS by up to 256 KiB
 * under glibc (libc's resident text follows its address modulo the
 * kernel's 64 KiB fault-around window), while under ours libc always lands
 * at one offset: our library's 4 MiB segment map makes it larger than
 * 2 MiB, so the kernel maps it 2 MiB-aligned, and libc goes right below
 * it. Preloaded, this library does the same and nothing else: glibc then
 * runs with libc where ours puts it, and its peak stops moving. Its own
 * resident pages (headers, dynamic section: no code) are counted from its
 * program headers and taken off. Built with -nostdlib: no start files, no
 * code, nothing that runs. */
char rseq_alloc_bench_layout_twin[(4 << 20) + (64 << 10)];
