//! Criterion: `RseqAlloc` against `System`, called directly as `GlobalAlloc`
//! instances: alloc/free pairs per size, batches that miss the per-CPU cache,
//! `realloc` growth and cross-thread frees.
//! `cargo bench -p rseq-alloc-bench --bench alloc` (add
//! `RSEQ_ALLOC_FORCE_FALLBACK=1` for the fallback path).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rseq_alloc::RseqAlloc;
use rseq_alloc_bench::workloads;

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
        group.bench_with_input(BenchmarkId::new("rseq-alloc", size), &layout, |b, &l| b.iter(|| pair(&RseqAlloc, l)));
        group.bench_with_input(BenchmarkId::new("system", size), &layout, |b, &l| b.iter(|| pair(&System, l)));
    }
    group.finish();
}

fn others(c: &mut Criterion) {
    let mut group = c.benchmark_group("workloads");
    group.bench_function("rseq-alloc/batch-1000x64B", |b| b.iter(|| workloads::batches(&RseqAlloc, 64, 1000, 1)));
    group.bench_function("system/batch-1000x64B", |b| b.iter(|| workloads::batches(&System, 64, 1000, 1)));
    group.bench_function("rseq-alloc/vec-growth-1MiB", |b| b.iter(|| workloads::vec_growth(&RseqAlloc, 1 << 20, 1)));
    group.bench_function("system/vec-growth-1MiB", |b| b.iter(|| workloads::vec_growth(&System, 1 << 20, 1)));
    group.sample_size(20);
    group.bench_function("rseq-alloc/cross-thread-free-64B", |b| {
        b.iter(|| workloads::cross_thread_free(&RseqAlloc, 64, 1 << 14))
    });
    group.bench_function("system/cross-thread-free-64B", |b| {
        b.iter(|| workloads::cross_thread_free(&System, 64, 1 << 14))
    });
    group.finish();
}

criterion_group!(benches, pairs, others);
criterion_main!(benches);
