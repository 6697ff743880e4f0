//! `rseq-alloc-bench`: the benchmark front end. Its subcommands are the rows
//! of [`SUBCOMMANDS`], which both dispatches and writes the usage and
//! `--help`; each handler parses its own arguments.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rseq_alloc_bench::compare::{self, Allocator, OURS, Options};
use rseq_alloc_bench::in_process;
use rseq_alloc_bench::misuse::{self, Subject};

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
        usage: "[--quick | --full] [--rounds N] [--rss-rounds N] [--workloads a,b] [--allocators a,b] [--threads N] [--scale X] [--cachegrind-scale X (0: off)] [--out DIR] [--with NAME=LIB.so]...",
        about: "C workloads, 10 to 10,000 threads and real programs under rseq-alloc, glibc, jemalloc, tcmalloc, mimalloc and TBB (LD_PRELOAD); \
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
        name: in_process::CHILD_SUBCOMMAND,
        usage: "[--rounds N]",
        about: "the fallback column of `alloc`, which runs it in a child with the fallback forced",
        run: alloc_child,
    },
];

/// A run length of `compare`: its default, `--quick` and `--full`. A later
/// `--rounds`, `--rss-rounds`, `--scale` or `--cachegrind-scale` overrides
/// one figure of it.
struct Length {
    flag: &'static str,
    rounds: usize,
    rss_rounds: usize,
    scale: f64,
    cachegrind_scale: f64,
    /// Whether its verdicts are indicative only.
    indicative: bool,
    /// How long it takes on a shared two-CPU machine.
    takes: &'static str,
}

/// The run lengths, the default first.
const LENGTHS: [Length; 3] = [
    Length {
        flag: "(default)",
        rounds: 3,
        rss_rounds: 3,
        scale: 0.1,
        cachegrind_scale: 0.002,
        indicative: false,
        takes: "about 5 minutes",
    },
    Length {
        flag: "--quick",
        rounds: 1,
        rss_rounds: 0,
        scale: 0.05,
        cachegrind_scale: 0.0005,
        indicative: true,
        takes: "about 1-2 minutes; a smoke test, its verdicts indicative",
    },
    Length {
        flag: "--full",
        rounds: 5,
        rss_rounds: 15,
        scale: 1.0,
        cachegrind_scale: 0.01,
        indicative: false,
        takes: "about an hour",
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
    println!("\ncompare's run lengths (each figure can be overridden by its option):");
    for l in &LENGTHS {
        println!(
            "  {:14} --rounds {} --rss-rounds {} --scale {} --cachegrind-scale {}: {}",
            l.flag, l.rounds, l.rss_rounds, l.scale, l.cachegrind_scale, l.takes
        );
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
    // A length flag sets its figures first, so that an option after or
    // before it overrides one of them.
    let length = LENGTHS.iter().rev().find(|l| args.iter().any(|a| a == l.flag)).unwrap_or(&LENGTHS[0]);
    let mut options = Options {
        workloads: Vec::new(),
        allocators: Vec::new(),
        threads: None,
        rounds: length.rounds,
        rss_rounds: length.rss_rounds,
        scale: length.scale,
        out_dir: workspace.join("target/compare"),
    };
    let mut cachegrind_scale = length.cachegrind_scale;
    let mut with: Vec<Allocator> = Vec::new();
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let mut value = || rest.next().cloned().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--quick" | "--full" => {}
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
    let (peers, mut skipped) = compare::peers();
    let allocators = compare::lineup(profile_dir.join("librseq_alloc.so"), twin, peers, with, &options.allocators);
    let selected: Vec<&compare::Workload> = compare::selected(&options.workloads).collect();
    skipped.extend(compare::install_real(&selected));
    options.workloads =
        selected.iter().map(|w| w.name).filter(|w| !skipped.iter().any(|(n, _)| n == w)).map(String::from).collect();
    let real = selected.iter().any(|w| matches!(w.program, compare::Program::Real(_)));
    let inputs = if real {
        Some(compare::prepare_real(&workspace, &profile_dir, &options.out_dir.join("inputs"), options.scale)?)
    } else {
        None
    };
    for (name, why) in &skipped {
        eprintln!("skipped {name}: {why}");
    }
    let header = compare::header(&options, compare::online_cpus(), &skipped);
    let results = compare::run(
        compare::Programs { workloads: &binary, measure: &measure, inputs: inputs.as_ref() },
        &allocators,
        &options,
    );
    // The generated inputs (zstd's is large at --full) are not kept.
    if inputs.is_some() {
        let _ = std::fs::remove_dir_all(options.out_dir.join("inputs"));
    }
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
    let mut report = compare::markdown(&summary, &verdicts, &header, length.indicative);
    report.push_str(&compare::rates_markdown(&results, "redis"));
    report.push_str(&compare::same_layout_markdown(&summary, twin_kib));
    report.push_str(&compare::counts_markdown(&counts, cachegrind_scale));
    println!("{report}");
    let out = &options.out_dir;
    std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
    std::fs::write(out.join("report.md"), &report).map_err(|e| e.to_string())?;
    std::fs::write(out.join("report.json"), compare::json(&results)).map_err(|e| e.to_string())?;
    std::fs::write(out.join("instructions.json"), compare::counts_json(&counts)).map_err(|e| e.to_string())?;
    compare::chart(&summary, &out.join("chart.svg"))?;
    let threads = if compare::threads_chart(&summary, &out.join("threads.svg"))? { ", threads.svg" } else { "" };
    eprintln!("report: {}/report.md, report.json, instructions.json, chart.svg{threads}", out.display());
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
    in_process::alloc_table(rounds(args)?);
    Ok(())
}

/// `alloc-child`: the fallback column of `alloc`, in the child it spawns.
fn alloc_child(args: &[String]) -> Result<(), Failure> {
    rounds(args)?;
    in_process::print_child_workloads();
    Ok(())
}

/// `primitives`: the per-CPU primitives, ns per call.
fn primitives(args: &[String]) -> Result<(), Failure> {
    in_process::primitives_table(rounds(args)?);
    Ok(())
}
