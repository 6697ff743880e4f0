//! The Rust allocator matrix: patterns × sizes × allocators, each cell's ns
//! per operation, page faults and system time, for allocators used as a
//! program's `#[global_allocator]`.
//!
//! The bench target `benches/matrix.rs` owns the allocators (they are
//! dev-dependencies) and a switch, its global allocator, which forwards to
//! the one named in the environment, chosen at the process's first
//! allocation and never changed. This module is the rest: the parent runs
//! one child process (the same executable) per cell, allocator and round,
//! allocators in a shuffled order each round, so no cell inherits another's
//! heap; the child times its cell with `Instant` after an untimed warm-up,
//! repeating the cell's fixed work until it has run long enough to time,
//! takes `getrusage` deltas around the timed part, checks the tags it read
//! back and prints one line, per repetition. A crash, a timeout, a wrong sum or a checksum
//! unlike the other allocators' fails that sample.
//!
//! | module | owns |
//! |---|---|
//! | `cells` | the patterns, the cells, their work and checks (the child's side) |
//! | `running` | a child's run and its sample line, the shuffled rounds, progress |
//! | `report` | medians, per-round ratios ours / best peer, `matrix.md`, `matrix.json` |

mod cells;
mod report;
mod running;

use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::process::exit;
use std::time::Instant;

pub use cells::{Cell, Pattern, catalogue};

/// Names the allocator a child's switch selects (unset: the system's).
pub const ALLOCATOR_ENV: &CStr = c"RSEQ_MATRIX_ALLOCATOR";
/// Names the cell a child runs; set only in children.
const CELL_ENV: &str = "RSEQ_MATRIX_CELL";
/// `1` in a child of a `--quick` run.
const QUICK_ENV: &str = "RSEQ_MATRIX_QUICK";

/// Timed work per cell, estimated ns, by default and with `--quick`.
const BUDGET_NS: f64 = 40e6;
const QUICK_BUDGET_NS: f64 = 10e6;
/// A child repeats its cell's work until the repetitions took this much of
/// the budget (at most [`MAX_REPEATS`] times): the estimate is set so that
/// the slowest allocator stays within minutes, and the fastest then ran a
/// cell in a millisecond or less, where a timer interrupt or a wake-up
/// decides the ratio.
const MIN_TIMED_SHARE: f64 = 0.5;
const MAX_REPEATS: u32 = 64;
/// Rounds by default and with `--quick`.
const ROUNDS: usize = 5;
const QUICK_ROUNDS: usize = 1;

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Shorter cells and one round; the ratios are indicative.
    pub quick: bool,
    /// Rounds.
    pub rounds: usize,
    /// Cells whose name contains any of these (all when empty).
    pub only: Vec<String>,
    /// Where `matrix.md` and `matrix.json` go.
    pub out_dir: PathBuf,
}

fn usage() -> String {
    let cells: Vec<String> = catalogue().into_iter().map(|c| c.name).collect();
    format!(
        "usage: cargo bench -p rseq-alloc-bench --bench matrix -- [--quick] [--rounds N] [--only SUBSTRING]... [--out DIR]\n\
         \n\
         \x20 (default)   {ROUNDS} rounds, cells of about {} ms: about 4 minutes\n\
         \x20 --quick     {QUICK_ROUNDS} round, cells of about {} ms: under a minute, indicative ratios\n\
         \x20 --rounds N  rounds\n\
         \x20 --only S    only the cells whose name contains S (repeatable)\n\
         \x20 --out DIR   where matrix.md and matrix.json go (default: the workspace's target/matrix)\n\
         \n\
         cells: {}",
        BUDGET_NS / 1e6,
        QUICK_BUDGET_NS / 1e6,
        cells.join(" ")
    )
}

/// The options from `args`; cargo's own `--bench` is ignored.
pub fn parse(args: &[String]) -> Result<Options, String> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().ok_or("no workspace")?;
    let mut options = Options { quick: false, rounds: 0, only: Vec::new(), out_dir: workspace.join("target/matrix") };
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        let mut value = || rest.next().cloned().ok_or(format!("{flag} wants a value\n{}", usage()));
        match flag.as_str() {
            "--bench" => {}
            "--quick" => options.quick = true,
            "--rounds" => options.rounds = value()?.parse().ok().filter(|&n| n > 0).ok_or("--rounds wants N > 0")?,
            "--only" => options.only.push(value()?),
            "--out" => options.out_dir = value()?.into(),
            "-h" | "--help" => return Err(usage()),
            other => return Err(format!("unknown option {other}\n{}", usage())),
        }
    }
    if options.rounds == 0 {
        options.rounds = if options.quick { QUICK_ROUNDS } else { ROUNDS };
    }
    Ok(options)
}

/// Whether this process is a child, sent to run one cell.
pub fn is_child() -> bool {
    std::env::var_os(CELL_ENV).is_some()
}

/// The matrix's entry point. `allocators` are the switch's names, ours
/// first; `selected` is the one this process's switch chose. A child runs
/// its cell and exits; the parent runs the matrix and writes the report.
pub fn main(allocators: &'static [&'static str], selected: &'static str, args: &[String]) -> Result<(), String> {
    if let Some(cell) = std::env::var_os(CELL_ENV) {
        let quick = std::env::var_os(QUICK_ENV).is_some_and(|v| v == "1");
        exit(child(&cell.to_string_lossy(), selected, quick))
    }
    let options = parse(args)?;
    let cells: Vec<Cell> = catalogue()
        .into_iter()
        .filter(|c| options.only.is_empty() || options.only.iter().any(|o| c.name.contains(o.as_str())))
        .collect();
    if cells.is_empty() {
        return Err(format!("no cell matches {:?}\n{}", options.only, usage()));
    }
    let program = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let started = Instant::now();
    let results = running::run(&program, &cells, allocators, &options);
    let markdown = report::markdown(&cells, &results, allocators, &options);
    std::fs::create_dir_all(&options.out_dir).map_err(|e| format!("{}: {e}", options.out_dir.display()))?;
    let md = options.out_dir.join("matrix.md");
    let json = options.out_dir.join("matrix.json");
    std::fs::write(&md, &markdown).map_err(|e| format!("{}: {e}", md.display()))?;
    std::fs::write(&json, report::json(&cells, &results, allocators, &options))
        .map_err(|e| format!("{}: {e}", json.display()))?;
    println!("{markdown}");
    eprintln!("matrix: {:.0} s; wrote {} and {}", started.elapsed().as_secs_f64(), md.display(), json.display());
    Ok(())
}

/// Resource usage of this process so far.
fn rusage() -> libc::rusage {
    // SAFETY: an all-zero `rusage` is a valid value of the plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `usage` is a valid, writable `rusage`; RUSAGE_SELF needs nothing else.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage failed");
    usage
}

fn micros(t: libc::timeval) -> i64 {
    t.tv_sec * 1_000_000 + t.tv_usec
}

/// A child: runs `cell_name` under the allocator its switch `selected`,
/// prints the sample line and returns the exit code (3: wrong result).
fn child(cell_name: &str, selected: &str, quick: bool) -> i32 {
    let Some(cell) = catalogue().into_iter().find(|c| c.name == cell_name) else {
        eprintln!("no cell {cell_name}");
        return 2;
    };
    let budget_ns = if quick { QUICK_BUDGET_NS } else { BUDGET_NS };
    let units = cell.units(budget_ns);
    let mut scratch = Vec::with_capacity(cell.scratch_len());
    let warm_up = cell.run(cell.warm_up_units(units), &mut scratch);
    if let Some(code) = check(cell_name, "warm-up", &warm_up) {
        return code;
    }
    // The same work again until it took long enough to time; the line
    // reports one repetition's figures (the means), so that faults and
    // system time keep their meaning whatever the repetitions.
    let (before, start) = (rusage(), Instant::now());
    let (mut repeats, mut first) = (0, None);
    while repeats < MAX_REPEATS && (repeats == 0 || (start.elapsed().as_nanos() as f64) < MIN_TIMED_SHARE * budget_ns) {
        let timed = cell.run(units, &mut scratch);
        if let Some(code) = check(cell_name, "timed run", &timed) {
            return code;
        }
        first.get_or_insert(timed);
        repeats += 1;
    }
    let (elapsed, after) = (start.elapsed(), rusage());
    let timed = first.expect("one repetition at least");
    let per = |total: i64| total / i64::from(repeats);
    println!(
        "{} allocator={selected} ops={} elapsed_ns={} minflt={} majflt={} sys_us={} user_us={} checksum={}",
        running::SAMPLE_PREFIX,
        timed.ops,
        elapsed.as_nanos() as u64 / u64::from(repeats),
        per(after.ru_minflt - before.ru_minflt),
        per(after.ru_majflt - before.ru_majflt),
        per(micros(after.ru_stime) - micros(before.ru_stime)),
        per(micros(after.ru_utime) - micros(before.ru_utime)),
        timed.read,
    );
    0
}

/// The exit code for a run that read back other tags than it wrote, after
/// saying so; `None` if it read them all.
fn check(cell_name: &str, what: &str, outcome: &cells::Outcome) -> Option<i32> {
    (outcome.read != outcome.expected).then(|| {
        eprintln!("{cell_name}: the {what} read back {} where {} was written", outcome.read, outcome.expected);
        3
    })
}
