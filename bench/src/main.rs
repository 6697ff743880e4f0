//! `rseq-alloc-bench`: the benchmark front end.
//!
//! ```text
//! rseq-alloc-bench primitives [--rounds N]   per-CPU primitives, ns per call, median of N rounds
//! ```

use std::process::ExitCode;
use std::time::Instant;

use rseq_alloc_bench::primitives::{ALL, Op, Primitives, needs_rseq};
use rseq_alloc_bench::timing::{median, shuffled};

fn usage() -> ExitCode {
    eprintln!("usage: rseq-alloc-bench primitives [--rounds N]");
    ExitCode::from(2)
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

fn primitives(rounds: u64) {
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

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut rounds = 11;
    match args.first().map(String::as_str) {
        Some("primitives") => {
            let mut rest = args[1..].iter();
            while let Some(flag) = rest.next() {
                match (flag.as_str(), rest.next().and_then(|v| v.parse().ok())) {
                    ("--rounds", Some(n)) if n > 0 => rounds = n,
                    _ => return usage(),
                }
            }
            primitives(rounds);
            ExitCode::SUCCESS
        }
        _ => usage(),
    }
}
