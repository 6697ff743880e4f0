//! The in-process commands' tables: `alloc` (the allocator workloads of
//! [`workloads`] under rseq-alloc, its fallback path in a child process,
//! `System` and our C entry points) and `primitives` (each per-CPU
//! primitive at one thread, one per CPU and four per CPU). Each is the
//! median over rounds whose candidates run in a shuffled order.

use std::alloc::GlobalAlloc;
use std::path::Path;
use std::time::Instant;

use crate::primitives::{ALL, Op, Primitives, needs_rseq};
use crate::timing::{median, shuffled};
use crate::workloads;

/// The subcommand `alloc` runs itself as, in a child with the fallback
/// forced, for the fallback column.
pub const CHILD_SUBCOMMAND: &str = "alloc-child";

/// In the child: one pass of the workloads after a warm-up, printed as
/// `name<TAB>ns` lines for [`child_workloads`].
pub fn print_child_workloads() {
    let _ = alloc_workloads(&rseq_alloc::RseqAlloc);
    for (name, ns) in alloc_workloads(&rseq_alloc::RseqAlloc) {
        println!("{name}\t{ns}");
    }
}

/// Every allocator workload, measured once on `alloc`: (name, ns).
fn alloc_workloads<A: GlobalAlloc + Sync>(alloc: &A) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for size in workloads::PAIR_SIZES {
        out.push((format!("alloc/free pair, {size} B (ns/pair)"), workloads::pairs(alloc, size, 2_000_000)));
    }
    out.push(("1000 x 64 B then free all (ns/block)".into(), workloads::batches(alloc, 64, 1000, 2000)));
    out.push(("realloc growth 16 B to 1 MiB (ns/doubling)".into(), workloads::vec_growth(alloc, 1 << 20, 2000)));
    out.push(("realloc growth 16 B to 1 MiB (ns/1.5x step)".into(), workloads::growth_by_half(alloc, 1 << 20, 500)));
    out.push(("cross-thread free, 64 B (ns/block)".into(), workloads::cross_thread_free(alloc, 64, 1 << 20)));
    out
}

/// `alloc`: prints every allocator workload's median ns under rseq-alloc
/// (rseq, and fallback in a child), System and our C entry points, over
/// `rounds` rounds in shuffled order.
pub fn alloc_table(rounds: u64) {
    let exe = std::env::current_exe().expect("current_exe");
    // Warm up, and learn the mode.
    let _ = alloc_workloads(&rseq_alloc::RseqAlloc);
    println!(
        "rseq-alloc mode here: {}; fallback column from a child with RSEQ_ALLOC_FORCE_FALLBACK=1",
        rseq_alloc::stats().mode
    );
    let mut names = Vec::new();
    // columns: rseq-alloc (this process), rseq-alloc fallback (child), System,
    // rseq-alloc through its C entry points
    let mut samples: Vec<[Vec<f64>; 4]> = Vec::new();
    for round in 0..rounds {
        eprint!("\rround {}/{rounds}", round + 1);
        for column in shuffled(4, round) {
            let results = match column {
                0 => alloc_workloads(&rseq_alloc::RseqAlloc),
                1 => child_workloads(&exe),
                2 => alloc_workloads(&std::alloc::System),
                _ => alloc_workloads(&workloads::CEntryPoints),
            };
            if names.is_empty() {
                names = results.iter().map(|(n, _)| n.clone()).collect();
                samples = vec![[Vec::new(), Vec::new(), Vec::new(), Vec::new()]; names.len()];
            }
            for (i, (_, ns)) in results.into_iter().enumerate() {
                samples[i][column].push(ns);
            }
        }
    }
    eprintln!();
    println!("\nmedian of {rounds} rounds, columns interleaved in shuffled order\n");
    println!(
        "| workload | rseq-alloc (rseq) | rseq-alloc (fallback) | System (glibc) | rseq / System | rseq-alloc C API (malloc/free) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, columns) in names.iter().zip(samples.iter_mut()) {
        let [a, b, c, d] = columns;
        let (a, b, c, d) = (median(a), median(b), median(c), median(d));
        println!("| {name} | {a:.2} | {b:.2} | {c:.2} | {:.2} | {d:.2} |", a / c);
    }
}

/// Runs the workloads in a child with the fallback forced; parses its lines.
fn child_workloads(exe: &Path) -> Vec<(String, f64)> {
    let output = std::process::Command::new(exe)
        .arg(CHILD_SUBCOMMAND)
        .env("RSEQ_ALLOC_FORCE_FALLBACK", "1")
        .output()
        .expect("spawn fallback child");
    assert!(output.status.success(), "fallback child failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let (name, ns) = line.rsplit_once('\t')?;
            Some((name.to_string(), ns.parse().ok()?))
        })
        .collect()
}

/// Wall-clock ns per call when `threads` threads each make `calls` calls of
/// `op` at once: from the first worker's start to the last one's end, as the
/// workers see it (the spawning thread may be starved on a small machine).
fn ns_per_call_on(threads: usize, calls: u64, p: &Primitives, op: Op) -> f64 {
    let barrier = std::sync::Barrier::new(threads);
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let _ = Primitives::rseq_available();
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..calls {
                        op(p);
                    }
                    (start, Instant::now())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("bench thread")).collect()
    });
    let first = spans.iter().map(|s| s.0).min().expect("threads > 0");
    let last = spans.iter().map(|s| s.1).max().expect("threads > 0");
    (last - first).as_nanos() as f64 / calls as f64
}

/// `primitives`: prints every primitive's median ns per call at one thread,
/// one per CPU and four per CPU, over `rounds` rounds in shuffled order.
pub fn primitives_table(rounds: u64) {
    let p = Primitives::new();
    let rseq = Primitives::rseq_available();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("rseq mode: {}; {cpus} CPUs", rseq_sys::mode());
    let candidates: Vec<_> = ALL.iter().filter(|(name, _)| rseq || !needs_rseq(name)).collect();
    let thread_counts = [1, cpus, 4 * cpus];
    const CALLS: u64 = 1_000_000;
    // samples[candidate][thread count] = one value per round
    let mut samples = vec![vec![Vec::new(); thread_counts.len()]; candidates.len()];
    for round in 0..rounds {
        for (t, &threads) in thread_counts.iter().enumerate() {
            for i in shuffled(candidates.len(), round * 7 + t as u64) {
                let (_, op) = candidates[i];
                let ns = ns_per_call_on(threads, CALLS, &p, *op);
                samples[i][t].push(ns);
            }
        }
    }
    println!("\nns per call, wall clock per thread, median of {rounds} rounds (threads run at once on {cpus} CPUs)\n");
    print!("| primitive |");
    for threads in thread_counts {
        print!(" {threads} thread{} |", if threads == 1 { "" } else { "s" });
    }
    println!();
    println!("|---|{}", "---:|".repeat(thread_counts.len()));
    for ((name, _), per_threads) in candidates.iter().zip(&mut samples) {
        print!("| {name} |");
        for s in per_threads.iter_mut() {
            print!(" {:.2} |", median(s));
        }
        println!();
    }
    println!("\nrseq aborts during the run: {}", rseq_sys::aborts());
}
