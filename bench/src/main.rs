//! `rseq-alloc-bench`: the benchmark front end.
//!
//! ```text
//! rseq-alloc-bench compare [--quick] [--rounds N] [--rss-rounds N] [--workloads a,b] [--allocators a,b]
//!                          [--threads N] [--scale X] [--cachegrind-scale X] [--out DIR]
//!                          [--with NAME=LIB.so]...   (another build of ours, e.g. an older one: shown, never the best peer)
//!                                            C workloads under rseq-alloc, glibc, jemalloc,
//!                                            tcmalloc, mimalloc and TBB (LD_PRELOAD)
//! rseq-alloc-bench misuse [--out DIR]        heap-misuse probes (tests/c/misuse.c): what each allocator stops
//! rseq-alloc-bench alloc [--rounds N]        rseq-alloc (rseq and fallback paths) against System, in-process
//! rseq-alloc-bench primitives [--rounds N]   per-CPU primitives, ns per call, median of N rounds
//! ```

use std::process::ExitCode;
use std::time::Instant;

use rseq_alloc_bench::primitives::{ALL, Op, Primitives, needs_rseq};
use rseq_alloc_bench::timing::{median, shuffled};

const USAGE: &str = "usage: rseq-alloc-bench compare [--quick] [--rounds N] [--rss-rounds N] [--workloads a,b] [--allocators a,b] [--threads N] [--scale X] [--cachegrind-scale X (0: off)] [--out DIR] [--with NAME=LIB.so]...
       rseq-alloc-bench misuse [--out DIR]
       rseq-alloc-bench alloc|primitives [--rounds N]";

/// `--help`: the usage, then what `--workloads` and `--allocators` accept.
fn help() {
    use rseq_alloc_bench::compare::{OURS, WORKLOADS, peer_names};
    println!("{USAGE}\n\nworkloads (--workloads):");
    for w in &WORKLOADS {
        println!("  {:14} {}", w.name, w.about);
    }
    let peers: Vec<&str> = peer_names().collect();
    println!("\nallocators (--allocators): {OURS}, glibc, {}, and each NAME given with --with", peers.join(", "));
}

fn usage() -> ExitCode {
    eprintln!("{USAGE}");
    ExitCode::from(2)
}

/// `compare`: builds our library and the C workloads, finds the peers, runs
/// everything, prints the report and writes it under `--out`.
fn compare(args: &[String]) -> Result<(), String> {
    use rseq_alloc_bench::compare::{self, Allocator, OURS, Options};
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let profile_dir = exe.parent().ok_or("no profile dir")?.to_path_buf();
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().ok_or("no workspace")?.to_path_buf();
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
    let mut extra: Vec<Allocator> = Vec::new();
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
            "--with" => {
                let spec = value()?;
                let (name, path) = spec.split_once('=').ok_or("--with NAME=LIBRARY.so")?;
                if !std::path::Path::new(path).exists() {
                    return Err(format!("--with {name}: {path} does not exist"));
                }
                // The name lives as long as the process, like the built-in ones.
                extra
                    .push(Allocator { name: Box::leak(name.to_string().into_boxed_str()), preload: Some(path.into()) });
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    eprintln!("building librseq_alloc.so and the C workloads");
    build_ours(&workspace)?;
    let binary = profile_dir.join("bench-workloads");
    compile_c(&workspace.join("bench/c/workloads.c"), &binary)?;
    let measure = profile_dir.join("bench-measure");
    compile_c(&workspace.join("bench/c/measure.c"), &measure)?;
    let twin = profile_dir.join("bench-layout-twin.so");
    compile_twin(&workspace.join("bench/c/layout_twin.c"), &twin)?;
    let twin_kib = compare::loaded_file_kib(&twin)?;
    let (peers, skipped) = compare::peers();
    let mut allocators = vec![
        Allocator { name: OURS, preload: Some(profile_dir.join("librseq_alloc.so")) },
        Allocator { name: "glibc", preload: None },
    ];
    allocators.extend(peers);
    allocators.push(Allocator { name: compare::GLIBC_OUR_LAYOUT, preload: Some(twin) });
    allocators.extend(extra);
    if !options.allocators.is_empty() {
        allocators.retain(|a| options.allocators.iter().any(|n| n == a.name));
    }
    for (name, why) in &skipped {
        eprintln!("skipped {name}: {why}");
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let peaks = if options.rss_rounds > options.rounds {
        format!(
            "the median of up to {} runs: runs under {} s peaking under {} MiB go on after the timed rounds, for their peak alone (where ASLR puts libc moves a small program's peak by up to 256 KiB)",
            options.rss_rounds,
            compare::RSS_ONLY_MAX_SECONDS,
            compare::RSS_ONLY_MAX_PEAK_KIB / 1024.0
        )
    } else {
        "the median of the rounds' runs".to_string()
    };
    let header = format!(
        "{} round(s), scale {}, {cpus} CPUs, allocators in shuffled order each round; medians; `ours/this` is the median of per-round ratios of wall time; peak RSS is each workload's VmHWM at its exit (exact there, where `wait4`'s maxrss is off by up to 128 KiB per CPU), {peaks}.{}",
        options.rounds,
        options.scale,
        skipped.iter().map(|(n, why)| format!(" Skipped {n}: {why}.")).collect::<String>()
    );
    let results = compare::run(compare::Programs { workloads: &binary, measure: &measure }, &allocators, &options);
    let have_valgrind =
        std::process::Command::new("valgrind").arg("--version").output().is_ok_and(|o| o.status.success());
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
    std::fs::create_dir_all(&options.out_dir).map_err(|e| e.to_string())?;
    std::fs::write(options.out_dir.join("report.md"), &report).map_err(|e| e.to_string())?;
    std::fs::write(options.out_dir.join("report.json"), compare::json(&results)).map_err(|e| e.to_string())?;
    std::fs::write(options.out_dir.join("instructions.json"), compare::counts_json(&counts))
        .map_err(|e| e.to_string())?;
    compare::chart(&summary, &options.out_dir.join("chart.svg"))?;
    eprintln!("report: {}/report.md, report.json, instructions.json, chart.svg", options.out_dir.display());
    let failed_runs: usize = summary.values().flatten().map(|r| r.failures).sum();
    if failed_runs > 0 {
        return Err(format!("{failed_runs} run(s) failed or gave a wrong answer"));
    }
    Ok(())
}

/// Builds `librseq_alloc.so` (release) in `workspace`.
fn build_ours(workspace: &std::path::Path) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = std::process::Command::new(cargo)
        .args(["build", "--release", "-p", "rseq-alloc-preload"])
        .current_dir(workspace)
        .status()
        .map_err(|e| format!("cargo: {e}"))?;
    if built.success() { Ok(()) } else { Err("building librseq_alloc.so failed".into()) }
}

/// Compiles the C program `source` to `binary` with gcc.
fn compile_c(source: &std::path::Path, binary: &std::path::Path) -> Result<(), String> {
    gcc(&["-O2", "-pthread"], source, binary)
}

/// Compiles `bench/c/layout_twin.c` to the shared library `library`: no
/// start files, no code (see the file).
fn compile_twin(source: &std::path::Path, library: &std::path::Path) -> Result<(), String> {
    gcc(&["-shared", "-fPIC", "-nostdlib"], source, library)
}

fn gcc(flags: &[&str], source: &std::path::Path, out: &std::path::Path) -> Result<(), String> {
    let compiled = std::process::Command::new("gcc")
        .args(flags)
        .arg("-o")
        .arg(out)
        .arg(source)
        .status()
        .map_err(|e| format!("gcc: {e}"))?;
    if compiled.success() { Ok(()) } else { Err(format!("compiling {} failed", source.display())) }
}

/// `misuse`: the probes of `tests/c/misuse.c` under every allocator, ours
/// also in hardened mode; prints the table and writes it to `--out`.
fn misuse(args: &[String]) -> Result<(), String> {
    use rseq_alloc_bench::compare::{self, OURS};
    use rseq_alloc_bench::misuse::{self, Subject};
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let profile_dir = exe.parent().ok_or("no profile dir")?.to_path_buf();
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().ok_or("no workspace")?.to_path_buf();
    let out_dir = match args {
        [] => workspace.join("target/compare"),
        [flag, dir] if flag == "--out" => dir.into(),
        _ => return Err("usage: misuse [--out DIR]".into()),
    };
    build_ours(&workspace)?;
    let binary = profile_dir.join("bench-misuse");
    compile_c(&workspace.join("tests/c/misuse.c"), &binary)?;
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

/// Every allocator workload, measured once on `alloc`: (name, ns).
fn alloc_workloads<A: std::alloc::GlobalAlloc + Sync>(alloc: &A) -> Vec<(String, f64)> {
    use rseq_alloc_bench::workloads;
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
                _ => alloc_workloads(&rseq_alloc_bench::workloads::CEntryPoints),
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

/// A subcommand that parses its own options.
type Subcommand = fn(&[String]) -> Result<(), String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        help();
        return ExitCode::SUCCESS;
    }
    let command: Option<(&str, Subcommand)> = match args.first().map(String::as_str) {
        Some("compare") => Some(("compare", compare)),
        Some("misuse") => Some(("misuse", misuse)),
        _ => None,
    };
    if let Some((name, run)) = command {
        return match run(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{name}: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let mut rounds = 11;
    let mut rest = args.iter().skip(1);
    while let Some(flag) = rest.next() {
        match (flag.as_str(), rest.next().and_then(|v| v.parse().ok())) {
            ("--rounds", Some(n)) if n > 0 => rounds = n,
            _ => return usage(),
        }
    }
    match args.first().map(String::as_str) {
        Some("primitives") => primitives(rounds),
        Some("alloc") => alloc_table(rounds),
        Some("alloc-child") => {
            let _ = alloc_workloads(&rseq_alloc::RseqAlloc);
            for (name, ns) in alloc_workloads(&rseq_alloc::RseqAlloc) {
                println!("{name}\t{ns}");
            }
        }
        _ => return usage(),
    }
    ExitCode::SUCCESS
}
