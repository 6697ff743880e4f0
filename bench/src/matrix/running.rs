//! The parent's side: one child per cell, allocator and round, its sample
//! line parsed, the rounds in shuffled order, and the samples whose
//! checksum disagrees with the cell's majority failed.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{ALLOCATOR_ENV, CELL_ENV, Cell, Options, QUICK_ENV};
use crate::timing::shuffled;

/// The first word of a child's sample line.
pub const SAMPLE_PREFIX: &str = "matrix-sample";
/// A child that runs longer is killed and its sample failed.
const TIMEOUT: Duration = Duration::from_secs(60);

/// What one child measured around its timed part.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Operations timed.
    pub ops: u64,
    /// Elapsed ns of the timed part (`Instant`).
    pub elapsed_ns: u64,
    /// Minor page faults.
    pub minflt: u64,
    /// Major page faults.
    pub majflt: u64,
    /// System time, µs.
    pub sys_us: u64,
    /// User time, µs.
    pub user_us: u64,
    /// Sum of the tags read back; the same under every allocator.
    pub checksum: u64,
}

impl Sample {
    /// ns per operation.
    pub fn ns_per_op(&self) -> f64 {
        self.elapsed_ns as f64 / self.ops.max(1) as f64
    }

    /// Page faults, minor and major.
    pub fn faults(&self) -> u64 {
        self.minflt + self.majflt
    }
}

/// One cell's samples: per allocator (in the switch's order), one per round
/// (`Err` for a failed one).
pub type CellRuns = Vec<Vec<Result<Sample, String>>>;

/// Parses a child's stdout: its sample line, which must name `allocator`.
pub fn parse_sample(stdout: &str, allocator: &str) -> Result<Sample, String> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(SAMPLE_PREFIX))
        .ok_or_else(|| format!("no {SAMPLE_PREFIX} line in {stdout:?}"))?;
    let fields: BTreeMap<&str, &str> = line.split_whitespace().filter_map(|f| f.split_once('=')).collect();
    let number = |key: &str| -> Result<u64, String> {
        fields.get(key).and_then(|v| v.parse().ok()).ok_or_else(|| format!("no {key} in {line:?}"))
    };
    match fields.get("allocator") {
        Some(&name) if name == allocator => {}
        other => return Err(format!("ran under {other:?}, not {allocator}")),
    }
    Ok(Sample {
        ops: number("ops")?,
        elapsed_ns: number("elapsed_ns")?,
        minflt: number("minflt")?,
        majflt: number("majflt")?,
        sys_us: number("sys_us")?,
        user_us: number("user_us")?,
        checksum: number("checksum")?,
    })
}

/// Runs `cell` under `allocator` in a child of `program`.
fn run_child(program: &Path, cell: &Cell, allocator: &str, quick: bool) -> Result<Sample, String> {
    let child = Command::new(program)
        .env(ALLOCATOR_ENV.to_str().expect("an ASCII name"), allocator)
        .env(CELL_ENV, &cell.name)
        .env(QUICK_ENV, if quick { "1" } else { "0" })
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawning {}: {e}", program.display()))?;
    let pid = child.id();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || sender.send(child.wait_with_output()));
    let output: Output = match receiver.recv_timeout(TIMEOUT) {
        Ok(output) => output.map_err(|e| format!("waiting for the child: {e}"))?,
        Err(_) => {
            // SAFETY: `kill` takes two integers and touches no memory of
            // ours; `pid` is our child, still running at the timeout.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            let _ = receiver.recv();
            return Err(format!("timed out after {} s", TIMEOUT.as_secs()));
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(format!("{}: {last}", output.status));
    }
    parse_sample(&stdout, allocator)
}

/// The time left, from the pace so far: `done` of `total` runs in `elapsed`.
fn time_left(elapsed: f64, done: usize, total: usize) -> String {
    let seconds = (elapsed / done.max(1) as f64 * total.saturating_sub(done) as f64).round() as u64;
    if seconds >= 60 { format!("~{}m{:02}s", seconds / 60, seconds % 60) } else { format!("~{seconds}s") }
}

/// Every cell under every allocator, `options.rounds` times: within a
/// round, cell by cell, the allocators in a shuffled order.
pub fn run(program: &Path, cells: &[Cell], allocators: &[&str], options: &Options) -> Vec<CellRuns> {
    let mut results: Vec<CellRuns> = cells.iter().map(|_| vec![Vec::new(); allocators.len()]).collect();
    let total = options.rounds * cells.len() * allocators.len();
    let started = Instant::now();
    let mut done = 0;
    for round in 0..options.rounds {
        for (c, cell) in cells.iter().enumerate() {
            let order = shuffled(allocators.len(), (round * cells.len() + c) as u64 + 1);
            for a in order {
                let sample = run_child(program, cell, allocators[a], options.quick);
                if let Err(e) = &sample {
                    eprintln!("  {} under {}: FAILED: {e}", cell.name, allocators[a]);
                }
                results[c][a].push(sample);
                done += 1;
            }
            let ours = results[c][0]
                .last()
                .and_then(|s| s.as_ref().ok())
                .map_or("failed".into(), |s| format!("{:.1} ns/op, {} faults", s.ns_per_op(), s.faults()));
            eprintln!(
                "round {}/{} cell {}/{} {}: ours {ours}; {} left",
                round + 1,
                options.rounds,
                c + 1,
                cells.len(),
                cell.name,
                time_left(started.elapsed().as_secs_f64(), done, total)
            );
        }
    }
    for runs in &mut results {
        fail_odd_checksums(runs);
    }
    results
}

/// Fails the samples whose checksum is not the one most samples of the
/// cell read: every allocator does the same work, so reads the same sum.
pub fn fail_odd_checksums(runs: &mut CellRuns) {
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for sample in runs.iter().flatten().flatten() {
        *counts.entry(sample.checksum).or_default() += 1;
    }
    let Some((&majority, _)) = counts.iter().max_by_key(|&(_, n)| *n) else { return };
    for run in runs.iter_mut().flatten() {
        if let Ok(sample) = run
            && sample.checksum != majority
        {
            *run = Err(format!("checksum {} where the others read {majority}", sample.checksum));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(checksum: u64) -> Sample {
        Sample { ops: 10, elapsed_ns: 1000, minflt: 2, majflt: 1, sys_us: 5, user_us: 7, checksum }
    }

    #[test]
    fn a_sample_line_parses_and_must_name_the_allocator() {
        let out = "noise\nmatrix-sample allocator=jemalloc ops=10 elapsed_ns=1000 minflt=2 majflt=1 sys_us=5 \
                   user_us=7 checksum=42\n";
        let s = parse_sample(out, "jemalloc").unwrap();
        assert_eq!(s, sample(42));
        assert_eq!((s.ns_per_op(), s.faults()), (100.0, 3));
        assert!(parse_sample(out, "mimalloc").unwrap_err().contains("not mimalloc"));
        assert!(parse_sample("nothing", "jemalloc").is_err());
        assert!(parse_sample("matrix-sample allocator=jemalloc ops=x", "jemalloc").is_err());
    }

    #[test]
    fn a_checksum_unlike_the_majority_fails_its_sample() {
        let mut runs: CellRuns =
            vec![vec![Ok(sample(1)), Ok(sample(1))], vec![Ok(sample(2)), Err("crashed".into())], vec![Ok(sample(1))]];
        fail_odd_checksums(&mut runs);
        assert!(runs[0].iter().all(Result::is_ok));
        assert!(runs[1][0].as_ref().unwrap_err().contains("checksum 2 where the others read 1"));
        assert!(runs[2][0].is_ok());
    }
}
