//! `rseq-alloc-bench`: the benchmark front end. Its subcommands are the rows
//! of [`SUBCOMMANDS`], which both dispatches and writes the usage and
//! `--help`; each handler parses its own arguments.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use rseq_alloc_bench::compare::{self, Allocator, OURS, Options};
use rseq_alloc_bench::misuse::{self, Subject};
use rseq_alloc_bench::primitives::{ALL, Op, Primitives, needs_rseq};
use rseq_alloc_bench::timing::{median, shuffled};
use rseq_alloc_bench::workloads;

/// A subcommand: its name, its arguments, what it does, and the handler
/// that runs it on the arguments after its name.
struct Subcommand {
    name: &'static str,
    usage: &'static str,
    about: &'static str,
    run: fn(&[String]) -> Result<(), Failure>,
}

/// Every subcommand, in the order the usage lists them.
const SUBCOMMANDS: [Subcommand; 5] = [
    Subcommand {
        name: "compare",
        usage: "[--quick] [--rounds N] [--rss-rounds N] [--workloads a,b] [--allocators a,b] [--threads N] [--scale X] [--cachegrind-scale X (0: off)] [--out DIR] [--with NAME=LIB.so]...",
        about: "C workloads under rseq-alloc, glibc, jemalloc, tcmalloc, mimalloc and TBB (LD_PRELOAD); \
                --with adds another build of ours, shown but never the best peer",
        run: compare,
    },
    Subcommand {
        name: "misuse",
        usage: "[--out DIR]",
        about: "heap-misuse probes (tests/c/misuse.c): what each allocator stops",
        run: misuse,
    },
    Subcommand {
        name: "alloc",
        usage: "[--rounds N]",
        about: "rseq-alloc (rseq and fallback paths) against System, in-process",
        run: alloc,
    },
    Subcommand {
        name: "primitives",
        usage: "[--rounds N]",
        about: "per-CPU primitives, ns per call, median of N rounds",
        run: primitives,
    },
    Subcommand {
        name: "alloc-child",
        usage: "[--rounds N]",
        about: "the fallback column of `alloc`, which runs it in a child with the fallback forced",
        run: alloc_child,
    },
];

/// Why a subcommand stopped: arguments it does not take (the usage is
/// printed, exit status 2), or a failure (exit status 1).
enum Failure {
    Usage,
    Failed(String),
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure::Failed(message)
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Self {
        Failure::Failed(message.into())
    }
}

/// One line per subcommand: `usage: rseq-alloc-bench NAME ARGS`.
fn usage() -> String {
    let lines: Vec<String> = SUBCOMMANDS.iter().map(|c| format!("rseq-alloc-bench {} {}", c.name, c.usage)).collect();
    format!("usage: {}", lines.join("\n       "))
}

/// `--help`: the usage, what each subcommand does, then what `--workloads`
/// and `--allocators` accept.
fn help() {
    println!("{}\n\nsubcommands:", usage());
    for c in &SUBCOMMANDS {
        println!("  {:14} {}", c.name, c.about);
    }
    println!("\nworkloads (--workloads):");
    for w in &compare::WORKLOADS {
        println!("  {:14} {}", w.name, w.about);
    }
    let peers: Vec<&str> = compare::peer_names().collect();
    println!("\nallocators (--allocators): {OURS}, glibc, {}, and each NAME given with --with", peers.join(", "));
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        help();
        return ExitCode::SUCCESS;
    }
    let Some(command) = args.first().and_then(|name| SUBCOMMANDS.iter().find(|c| c.name == name)) else {
        eprintln!("{}", usage());
        return ExitCode::from(2);
    };
    match (command.run)(&args[1..]) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage) => {
            eprintln!("{}", usage());
            ExitCode::from(2)
        }
        Err(Failure::Failed(e)) => {
            eprintln!("{}: {e}", command.name);
            ExitCode::FAILURE
        }
    }
}

/// The directory this executable was built in, where the C programs are
/// built too and cargo puts `librseq_alloc.so`; and the workspace root.
fn build_dirs() -> Result<(PathBuf, PathBuf), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let profile_dir = exe.parent().ok_or("no profile dir")?.to_path_buf();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().ok_or("no workspace")?.to_path_buf();
    Ok((profile_dir, workspace))
}

/// `--rounds N` (N > 0) or nothing, which is 11.
fn rounds(args: &[String]) -> Result<u64, Failure> {
    let mut rounds = 11;
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        match (flag.as_str(), rest.next().and_then(|v| v.parse().ok())) {
            ("--rounds", Some(n)) if n > 0 => rounds = n,
            _ => return Err(Failure::Usage),
        }
    }
    Ok(rounds)
}

/// `compare`: builds our library and the C workloads, finds the peers, runs
/// everything, prints the report and writes it under `--out`.
fn compare(args: &[String]) -> Result<(), Failure> {
    let (profile_dir, workspace) = build_dirs()?;
    let mut options = Options {
        workloads: Vec::new(),
        allocators: Vec::new(),
        threads: None,
        rounds: 5,
        rss_rounds: 15,
        scale: 1.0,
        out_dir: workspace.join("target/compare"),
    };
    let mut cachegrind_scale = 0.01;
    let mut with: Vec<Allocator> = Vec::new();
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let mut value = || rest.next().cloned().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--quick" => {
                options.rounds = 3;
                // No extra runs: a quick report's peaks are the timed rounds'.
                options.rss_rounds = 0;
                options.scale = 0.05;
                cachegrind_scale = 0.002;
            }
            "--cachegrind-scale" => cachegrind_scale = value()?.parse().map_err(|_| "--cachegrind-scale X")?,
            "--rounds" => options.rounds = value()?.parse().map_err(|_| "--rounds N")?,
            "--rss-rounds" => options.rss_rounds = value()?.parse().map_err(|_| "--rss-rounds N")?,
            "--scale" => options.scale = value()?.parse().map_err(|_| "--scale X")?,
            "--threads" => options.threads = Some(value()?.parse().map_err(|_| "--threads N")?),
            "--workloads" => options.workloads = value()?.split(',').map(String::from).collect(),
            "--allocators" => options.allocators = value()?.split(',').map(String::from).collect(),
            "--out" => options.out_dir = value()?.into(),
            "--with" => with.push(compare::with_build(&value()?)?),
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    eprintln!("building librseq_alloc.so and the C workloads");
    compare::build_ours(&workspace)?;
    let binary = profile_dir.join("bench-workloads");
    compare::compile_c(&workspace.join("bench/c/workloads.c"), &binary)?;
    let measure = profile_dir.join("bench-measure");
    compare::compile_c(&workspace.join("bench/c/measure.c"), &measure)?;
    let twin = profile_dir.join("bench-layout-twin.so");
    compare::compile_twin(&workspace.join("bench/c/layout_twin.c"), &twin)?;
    let twin_kib = compare::loaded_file_kib(&twin)?;
    let (peers, skipped) = compare::peers();
    let allocators = compare::lineup(profile_dir.join("librseq_alloc.so"), twin, peers, with, &options.allocators);
    for (name, why) in &skipped {
        eprintln!("skipped {name}: {why}");
    }
    let header = compare::header(&options, compare::online_cpus(), &skipped);
    let results = compare::run(compare::Programs { workloads: &binary, measure: &measure }, &allocators, &options);
    let have_valgrind = compare::valgrind_available();
    let counts = if cachegrind_scale > 0.0 && have_valgrind {
        // glibc@our-layout runs glibc's instructions.
        let counted: Vec<Allocator> =
            allocators.iter().filter(|a| a.name != compare::GLIBC_OUR_LAYOUT).cloned().collect();
        compare::count_instructions(&binary, &counted, &options, cachegrind_scale)
    } else {
        eprintln!(
            "instruction counts skipped ({})",
            if have_valgrind { "--cachegrind-scale 0" } else { "no valgrind" }
        );
        compare::Counts::new()
    };
    let summary = compare::summarize(&results);
    let verdicts = compare::targets(&summary);
    let mut report = compare::markdown(&summary, &verdicts, &header);
    report.push_str(&compare::same_layout_markdown(&summary, twin_kib));
    report.push_str(&compare::counts_markdown(&counts, cachegrind_scale));
    println!("{report}");
    let out = &options.out_dir;
    std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
    std::fs::write(out.join("report.md"), &report).map_err(|e| e.to_string())?;
    std::fs::write(out.join("report.json"), compare::json(&results)).map_err(|e| e.to_string())?;
    std::fs::write(out.join("instructions.json"), compare::counts_json(&counts)).map_err(|e| e.to_string())?;
    compare::chart(&summary, &out.join("chart.svg"))?;
    eprintln!("report: {}/report.md, report.json, instructions.json, chart.svg", out.display());
    let failed_runs: usize = summary.values().flatten().map(|r| r.failures).sum();
    if failed_runs > 0 {
        return Err(format!("{failed_runs} run(s) failed or gave a wrong answer").into());
    }
    Ok(())
}

/// `misuse`: the probes of `tests/c/misuse.c` under every allocator, ours
/// also in hardened mode; prints the table and writes it to `--out`.
fn misuse(args: &[String]) -> Result<(), Failure> {
    let (profile_dir, workspace) = build_dirs()?;
    let out_dir = match args {
        [] => workspace.join("target/compare"),
        [flag, dir] if flag == "--out" => dir.into(),
        _ => return Err("usage: misuse [--out DIR]".into()),
    };
    compare::build_ours(&workspace)?;
    let binary = profile_dir.join("bench-misuse");
    compare::compile_c(&workspace.join("tests/c/misuse.c"), &binary)?;
    let ours = profile_dir.join("librseq_alloc.so");
    let mut subjects = vec![
        Subject { name: OURS.into(), preload: Some(ours.clone()), env: Vec::new() },
        Subject {
            name: format!("{OURS} (hardened)"),
            preload: Some(ours),
            env: vec![("RSEQ_ALLOC_HARDENED".into(), "1".into())],
        },
        Subject { name: "glibc".into(), preload: None, env: Vec::new() },
    ];
    let (peers, skipped) = compare::peers();
    for (name, why) in &skipped {
        eprintln!("skipped {name}: {why}");
    }
    subjects.extend(peers.into_iter().map(|p| Subject { name: p.name.into(), preload: p.preload, env: Vec::new() }));
    let probes = misuse::probes(&binary)?;
    let results = misuse::run(&binary, &probes, &subjects);
    let table = misuse::markdown(&probes, &subjects, &results);
    println!("{table}");
    std::fs::create_dir_all(&out_dir).map_err(|e| e.to_string())?;
    std::fs::write(out_dir.join("misuse.md"), &table).map_err(|e| e.to_string())?;
    eprintln!("table: {}/misuse.md", out_dir.display());
    Ok(())
}

/// `alloc`: the allocator workloads in-process, rseq-alloc against System.
fn alloc(args: &[String]) -> Result<(), Failure> {
    alloc_table(rounds(args)?);
    Ok(())
}

/// `alloc-child`: one pass of the workloads after a warm-up, as
/// `name<TAB>ns` lines for [`child_workloads`].
fn alloc_child(args: &[String]) -> Result<(), Failure> {
    rounds(args)?;
    let _ = alloc_workloads(&rseq_alloc::RseqAlloc);
    for (name, ns) in alloc_workloads(&rseq_alloc::RseqAlloc) {
        println!("{name}\t{ns}");
    }
    Ok(())
}

/// `primitives`: the per-CPU primitives, ns per call.
fn primitives(args: &[String]) -> Result<(), Failure> {
    primitives_table(rounds(args)?);
    Ok(())
}

/// Every allocator workload, measured once on `alloc`: (name, ns).
fn alloc_workloads<A: std::alloc::GlobalAlloc + Sync>(alloc: &A) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for size in workloads::PAIR_SIZES {
        out.push((format!("alloc/free pair, {size} B (ns/pair)"), workloads::pairs(alloc, size, 2_000_000)));
    }
    out.push(("1000 x 64 B then free all (ns/block)".into(), workloads::batches(alloc, 64, 1000, 2000)));
    out.push(("realloc growth 16 B to 1 MiB (ns/doubling)".into(), workloads::vec_growth(alloc, 1 << 20, 2000)));
    out.push(("cross-thread free, 64 B (ns/block)".into(), workloads::cross_thread_free(alloc, 64, 1 << 20)));
    out
}

fn alloc_table(rounds: u64) {
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
fn child_workloads(exe: &std::path::Path) -> Vec<(String, f64)> {
    let output = std::process::Command::new(exe)
        .arg("alloc-child")
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

fn primitives_table(rounds: u64) {
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
