//! Criterion: `RseqAlloc` against `System` and the Rust allocator crates
//! (mimalloc, jemalloc, snmalloc, rpmalloc, and Google's per-CPU tcmalloc,
//! which has no `LD_PRELOAD` build here), each called directly as a
//! `GlobalAlloc` instance: alloc/free pairs per size, batches of 10,000 that
//! miss the per-CPU cache, `realloc` growth and cross-thread frees.
//! `cargo bench -p rseq-alloc-bench --bench alloc` (add
//! `RSEQ_ALLOC_FORCE_FALLBACK=1` for the fallback path).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rseq_alloc::RseqAlloc;
use rseq_alloc_bench::workloads;

/// Runs `$body` once per allocator, with `$name` its name and `$alloc` a
/// `&'static` instance.
macro_rules! each_allocator {
    (|$name:ident, $alloc:ident| $body:block) => {{
        {
            let ($name, $alloc) = ("rseq-alloc", &RseqAlloc);
            $body
        }
        {
            let ($name, $alloc) = ("system", &System);
            $body
        }
        {
            let ($name, $alloc) = ("mimalloc", &mimalloc::MiMalloc);
            $body
        }
        {
            let ($name, $alloc) = ("jemalloc", &tikv_jemallocator::Jemalloc);
            $body
        }
        {
            let ($name, $alloc) = ("snmalloc", &snmalloc_rs::SnMalloc);
            $body
        }
        {
            let ($name, $alloc) = ("rpmalloc", &rpmalloc::RpMalloc);
            $body
        }
        {
            let ($name, $alloc) = ("tcmalloc", &tcmalloc_better::TCMalloc);
            $body
        }
    }};
}

fn pair<A: GlobalAlloc>(alloc: &A, layout: Layout) {
    // SAFETY: a valid layout; the block is freed with it at once.
    unsafe {
        let p = alloc.alloc(layout);
        black_box(p);
        alloc.dealloc(p, layout);
    }
}

fn pairs(c: &mut Criterion) {
    let mut group = c.benchmark_group("pair");
    for size in workloads::PAIR_SIZES {
        let layout = Layout::from_size_align(size, 8).unwrap();
        each_allocator!(|name, alloc| {
            group.bench_with_input(BenchmarkId::new(name, size), &layout, |b, &l| b.iter(|| pair(alloc, l)));
        });
    }
    group.finish();
}

fn others(c: &mut Criterion) {
    let mut group = c.benchmark_group("workloads");
    group.sample_size(20);
    each_allocator!(|name, alloc| {
        group
            .bench_function(format!("{name}/batch-10000x64B"), |b| b.iter(|| workloads::batches(alloc, 64, 10_000, 1)));
        group
            .bench_function(format!("{name}/vec-growth-1MiB"), |b| b.iter(|| workloads::vec_growth(alloc, 1 << 20, 1)));
        group.bench_function(format!("{name}/cross-thread-free-64B"), |b| {
            b.iter(|| workloads::cross_thread_free(alloc, 64, 1 << 14))
        });
    });
    group.finish();
}

criterion_group!(benches, pairs, others);
criterion_main!(benches);
