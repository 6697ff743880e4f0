//! Criterion: one rseq increment against the atomic alternatives, and a slab
//! pop+push pair. `cargo bench -p rseq-alloc-bench --bench primitives`

use criterion::{Criterion, criterion_group, criterion_main};
use rseq_alloc_bench::primitives::{ALL, Primitives, needs_rseq};

fn primitives(c: &mut Criterion) {
    let p = Primitives::new();
    let rseq = Primitives::rseq_available();
    let mut group = c.benchmark_group("primitives");
    for (name, op) in ALL {
        if needs_rseq(name) && !rseq {
            continue;
        }
        group.bench_function(name, |b| b.iter(|| op(&p)));
    }
    group.finish();
}

criterion_group!(benches, primitives);
criterion_main!(benches);
