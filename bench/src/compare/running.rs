//! Running the workloads: one run under the launcher, the timed rounds in
//! shuffled order, the extra runs of quick ones for their peak RSS, and
//! failing the runs whose checksum disagrees with the majority.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use super::catalogue::{self, Program, Workload};
use super::peers::{Allocator, GLIBC_OUR_LAYOUT};
use super::programs::Programs;
use super::real;
use super::statistics::median_of;
use crate::timing::shuffled;

/// What one run measured.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Seconds of wall time.
    pub wall: f64,
    /// Seconds of user time.
    pub user: f64,
    /// Seconds of system time.
    pub sys: f64,
    /// Peak resident set, KiB: the workload's VmHWM, read by itself at
    /// exit (exact at that point, see `bench/c/workloads.c`), else `wait4`'s.
    pub max_rss_kb: u64,
    /// Peak resident set from `wait4`, KiB (Linux's approximate count).
    pub rusage_max_rss_kb: u64,
    /// The run's `checksum` line.
    pub checksum: String,
    /// `trim`: resident KiB after `malloc_trim(0)`.
    pub rss_after_trim_kb: Option<u64>,
    /// Whether the run was one of the timed rounds; the extra runs that
    /// only sample peak RSS ([`Options::rss_rounds`]) are not.
    pub timed: bool,
    /// Rates it reported, such as redis-benchmark's requests per second.
    pub rates: Vec<(String, f64)>,
}

/// What to compare.
#[derive(Clone, Debug)]
pub struct Options {
    /// Workload names (all when empty).
    pub workloads: Vec<String>,
    /// Allocator names (all found when empty).
    pub allocators: Vec<String>,
    /// Threads for multithreaded workloads (default: per workload × CPUs).
    pub threads: Option<usize>,
    /// Rounds.
    pub rounds: usize,
    /// Peak RSS samples to take of every quick run (see `rss_only`): the
    /// timed rounds' and extra runs up to this many.
    pub rss_rounds: usize,
    /// Work per run (1.0: the full-length runs the targets are set for).
    pub scale: f64,
    /// Where the report goes.
    pub out_dir: PathBuf,
}

/// Results: workload → allocator → samples (`Err` for a failed run).
pub type Results = BTreeMap<&'static str, BTreeMap<&'static str, Vec<Result<Sample, String>>>>;

/// CPUs this process may run on.
pub fn online_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Runs `workload` once under `allocator`.
pub fn run_once(
    programs: Programs<'_>,
    workload: &Workload,
    threads: usize,
    scale: f64,
    allocator: &Allocator,
) -> Result<Sample, String> {
    let (argv, env, output) = match workload.program {
        Program::Synthetic(name) => {
            let argv =
                vec![programs.workloads.display().to_string(), name.into(), threads.to_string(), scale.to_string()];
            (argv, Vec::new(), None)
        }
        Program::Real("redis") => return run_redis(programs, allocator, scale),
        Program::Real(name) => {
            let inputs = programs.inputs.ok_or("the real programs' inputs were not prepared")?;
            let invocation = real::invocation(name, inputs)?;
            (invocation.argv, invocation.env, invocation.output)
        }
    };
    let mut command = Command::new(programs.measure);
    command.args(&argv).envs(env).stdout(Stdio::piped()).stderr(Stdio::piped());
    if let Some(library) = &allocator.preload {
        command.env("MEASURE_PRELOAD", library);
    }
    if workload.single_thread() {
        use std::os::unix::process::CommandExt;
        // SAFETY: pre_exec runs in the child between fork and exec; it only
        // calls sched_setaffinity on itself, which is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(0, &mut set);
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
                Ok(())
            });
        }
    }
    let start = Instant::now();
    let out = command.output().map_err(|e| format!("spawn {}: {e}", programs.measure.display()))?;
    let wall = start.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()));
    }
    let checksum = match workload.program {
        Program::Synthetic(_) => field(&stdout, "checksum ").ok_or("no checksum printed")?,
        Program::Real(_) => real::checksum(&stdout, output.as_deref())?,
    };
    sample(&stdout, wall, checksum)
}

/// The value after `key` on the first line of `stdout` that starts with it.
fn field(stdout: &str, key: &str) -> Option<String> {
    stdout.lines().find_map(|l| l.strip_prefix(key)).map(|v| v.trim().to_string())
}

/// A sample from the launcher's output: its rusage line, the workload's
/// own peak when it printed one.
fn sample(stdout: &str, wall: f64, checksum: String) -> Result<Sample, String> {
    let usage = field(stdout, "rusage ").ok_or("no rusage line from the launcher")?;
    let usage: Vec<&str> = usage.split_whitespace().collect();
    let number = |key: &str| -> Result<u64, String> {
        let at = usage.iter().position(|&k| k == key).ok_or(format!("no {key} in the rusage line"))?;
        usage.get(at + 1).and_then(|v| v.parse().ok()).ok_or(format!("bad {key} in the rusage line"))
    };
    Ok(Sample {
        wall,
        user: number("user_us")? as f64 / 1e6,
        sys: number("sys_us")? as f64 / 1e6,
        max_rss_kb: match field(stdout, "peak_rss_kib ").and_then(|v| v.parse().ok()) {
            Some(kib) => kib,
            None => number("maxrss_kib")?,
        },
        rusage_max_rss_kb: number("maxrss_kib")?,
        checksum,
        rss_after_trim_kb: field(stdout, "rss_after_trim_kb ").and_then(|v| v.parse().ok()),
        timed: true,
        rates: Vec::new(),
    })
}

/// redis-server under `allocator`, driven by redis-benchmark: the wall time
/// is the benchmark's, user and system time and peak RSS the server's.
fn run_redis(programs: Programs<'_>, allocator: &Allocator, scale: f64) -> Result<Sample, String> {
    let run = real::redis(programs.measure, allocator, scale)?;
    let sample = sample(&run.server_stdout, run.wall, run.checksum)?;
    Ok(Sample { rates: run.rates, ..sample })
}

/// One round's runs as (workload, allocator) indices: workload by workload,
/// the allocators in an order shuffled by `seed` of the workload's index.
fn round_order(
    workloads: usize,
    allocators: usize,
    seed: impl Fn(usize) -> u64,
) -> impl Iterator<Item = (usize, usize)> {
    (0..workloads).flat_map(move |w| shuffled(allocators, seed(w)).into_iter().map(move |a| (w, a)))
}

fn record(results: &mut Results, workload: &Workload, allocator: &Allocator, sample: Result<Sample, String>) {
    results.entry(workload.name).or_default().entry(allocator.name).or_default().push(sample);
}

/// Runs every selected workload under every selected allocator, `rounds`
/// times, then the quick ones again for their peak RSS (`sample_peaks`).
pub fn run(programs: Programs<'_>, allocators: &[Allocator], options: &Options) -> Results {
    let cpus = online_cpus();
    let workloads: Vec<&Workload> = catalogue::selected(&options.workloads).collect();
    let mut results = Results::new();
    let total = options.rounds
        * workloads.iter().map(|w| allocators.iter().filter(|a| runs_under(w, a)).count()).sum::<usize>();
    let mut done = 0;
    let started = Instant::now();
    for round in 0..options.rounds {
        for (w, a) in round_order(workloads.len(), allocators.len(), |w| (round * 131 + w) as u64) {
            let (workload, allocator) = (workloads[w], &allocators[a]);
            if !runs_under(workload, allocator) {
                continue;
            }
            let threads = workload.threads(options.threads, cpus);
            let sample = run_once(programs, workload, threads, options.scale, allocator);
            done += 1;
            let left = time_left(started.elapsed().as_secs_f64(), done, total);
            match &sample {
                Ok(s) => eprintln!(
                    "[{done}/{total}, {left} left] round {} {} x{threads} {}: {:.3} s, {} MiB",
                    round + 1,
                    workload.name,
                    allocator.name,
                    s.wall,
                    s.max_rss_kb >> 10
                ),
                Err(e) => eprintln!("[{done}/{total}, {left} left] {} {}: FAILED: {e}", workload.name, allocator.name),
            }
            record(&mut results, workload, allocator, sample);
        }
    }
    sample_peaks(programs, allocators, options, &workloads, cpus, &mut results);
    mark_wrong_answers(&mut results);
    results
}

/// Whether `workload` runs under `allocator`: glibc with libc at our
/// layout is a reference for small synthetic peaks, and runs only those.
fn runs_under(workload: &Workload, allocator: &Allocator) -> bool {
    allocator.name != GLIBC_OUR_LAYOUT
        || (matches!(workload.program, Program::Synthetic(_)) && workload.many_threads().is_none())
}

/// The time the timed rounds have left, from the pace so far: `done` of
/// `total` runs took `elapsed` seconds. Rounds run the same runs, so after
/// the first round the estimate is close.
pub fn time_left(elapsed: f64, done: usize, total: usize) -> String {
    let seconds = (elapsed / done.max(1) as f64 * total.saturating_sub(done) as f64).round() as u64;
    if seconds >= 60 { format!("~{}m{:02}s", seconds / 60, seconds % 60) } else { format!("~{seconds}s") }
}

/// Longest median run that gets extra peak RSS samples, seconds.
pub const RSS_ONLY_MAX_SECONDS: f64 = 2.5;
/// Largest median peak that gets extra samples, KiB.
pub const RSS_ONLY_MAX_PEAK_KIB: f64 = 64.0 * 1024.0;

/// Whether `workload` under `allocator` gets extra runs for its peak RSS:
/// its runs are quick and its peak small. What moves a peak from run to
/// run is where ASLR puts the C library: libc's text resident after the
/// same calls moves by up to 256 KiB with its address modulo 64 KiB (the
/// kernel maps file pages around a fault in aligned 64 KiB windows), which
/// is much of a program that allocates little and nothing to a large one.
/// A few samples of that put the median anywhere in the range and more
/// narrow it, though glibc's peaks fall in two modes, and a verdict whose
/// line runs between them stays a toss however many runs it gets.
fn rss_only(samples: &[Result<Sample, String>]) -> bool {
    let ok: Vec<&Sample> = samples.iter().flatten().collect();
    !ok.is_empty()
        && ok.len() == samples.len()
        && median_of(ok.iter().map(|s| s.wall)) <= RSS_ONLY_MAX_SECONDS
        && median_of(ok.iter().map(|s| s.max_rss_kb as f64)) <= RSS_ONLY_MAX_PEAK_KIB
}

/// After the timed rounds: more runs of the quick, small ones
/// ([`rss_only`]), round by round in shuffled order like the timed ones,
/// until each has `options.rss_rounds` samples of its peak.
fn sample_peaks(
    programs: Programs<'_>,
    allocators: &[Allocator],
    options: &Options,
    workloads: &[&Workload],
    cpus: usize,
    results: &mut Results,
) {
    let extra: Vec<(usize, usize)> = workloads
        .iter()
        .enumerate()
        .flat_map(|(w, workload)| {
            let by_allocator = results.get(workload.name);
            (0..allocators.len())
                .filter(move |&a| by_allocator.and_then(|b| b.get(allocators[a].name)).is_some_and(|s| rss_only(s)))
                .map(move |a| (w, a))
        })
        .collect();
    let rounds = options.rss_rounds.saturating_sub(options.rounds);
    if extra.is_empty() || rounds == 0 {
        return;
    }
    eprintln!("{rounds} more round(s) of the {} quick runs, for their peak RSS", extra.len());
    for round in 0..rounds {
        for (w, a) in round_order(workloads.len(), allocators.len(), |w| (round * 137 + w + 7) as u64) {
            if !extra.contains(&(w, a)) {
                continue;
            }
            let (workload, allocator) = (workloads[w], &allocators[a]);
            let threads = workload.threads(options.threads, cpus);
            let sample =
                run_once(programs, workload, threads, options.scale, allocator).map(|s| Sample { timed: false, ..s });
            if let Err(e) = &sample {
                eprintln!("peak run {} {}: FAILED: {e}", workload.name, allocator.name);
            }
            record(results, workload, allocator, sample);
        }
    }
}

/// A run whose checksum differs from the majority of its workload's runs is a failure.
fn mark_wrong_answers(results: &mut Results) {
    for by_allocator in results.values_mut() {
        let mut votes: BTreeMap<String, usize> = BTreeMap::new();
        for sample in by_allocator.values().flatten().flatten() {
            *votes.entry(sample.checksum.clone()).or_default() += 1;
        }
        let Some((right, _)) = votes.into_iter().max_by_key(|(_, n)| *n) else { continue };
        for samples in by_allocator.values_mut() {
            for sample in samples.iter_mut() {
                if let Ok(s) = sample
                    && s.checksum != right
                {
                    *sample = Err(format!("wrong answer: checksum {} instead of {right}", s.checksum));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A round is every workload in turn, each with all the allocators in
    /// the order `shuffled` gives for its seed.
    #[test]
    fn a_round_is_each_workload_with_its_allocators_shuffled() {
        let order: Vec<(usize, usize)> = round_order(3, 5, |w| (131 + w) as u64).collect();
        let expected: Vec<(usize, usize)> =
            (0..3).flat_map(|w| shuffled(5, (131 + w) as u64).into_iter().map(move |a| (w, a))).collect();
        assert_eq!(order, expected);
        assert_eq!(order.len(), 15);
    }

    fn run(checksum: &str) -> Result<Sample, String> {
        Ok(Sample {
            wall: 1.0,
            user: 1.0,
            sys: 0.0,
            max_rss_kb: 1,
            rusage_max_rss_kb: 1,
            checksum: checksum.into(),
            rss_after_trim_kb: None,
            timed: true,
            rates: Vec::new(),
        })
    }

    /// The checksum most runs of a workload printed is the right one; the
    /// others become failures that say what they printed.
    #[test]
    fn a_checksum_against_the_majority_is_a_wrong_answer() {
        let mut results = Results::from([(
            "tight",
            BTreeMap::from([("glibc", vec![run("7"), run("7")]), ("fast", vec![run("7"), run("8")])]),
        )]);
        mark_wrong_answers(&mut results);
        let fast = &results["tight"]["fast"];
        assert!(fast[0].is_ok());
        assert_eq!(fast[1].as_ref().unwrap_err(), "wrong answer: checksum 8 instead of 7");
        assert!(results["tight"]["glibc"].iter().all(Result::is_ok));
    }
}
