//! `misuse`: the heap-misuse probes of `tests/c/misuse.c` under every
//! allocator (and ours in hardened mode): which of them each one stops, and
//! how. A probe is *reported* when the process is stopped by `SIGABRT` (or
//! exits non-zero) with a message; *crashed* when a fault kills it (the
//! misuse was noticed by accident, after the heap was corrupted); *missed*
//! when it runs to the end.

use std::fmt::Write as _;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The probes `misuse.c` knows (`misuse --list`).
pub fn probes(binary: &Path) -> Result<Vec<String>, String> {
    let output = Command::new(binary).arg("--list").output().map_err(|e| format!("{}: {e}", binary.display()))?;
    let list: Vec<String> = String::from_utf8_lossy(&output.stdout).lines().map(String::from).collect();
    if output.status.success() && !list.is_empty() { Ok(list) } else { Err("misuse --list failed".into()) }
}

/// How a probe ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Stopped with a message (the first line of it).
    Reported(String),
    /// Killed by a fault (the signal).
    Crashed(i32),
    /// Ran to the end.
    Missed,
}

/// An allocator to probe: a name, a library to preload (none: glibc), and
/// environment for it.
pub struct Subject {
    /// Name in the table.
    pub name: String,
    /// Library for `LD_PRELOAD`.
    pub preload: Option<PathBuf>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
}

/// Runs `probe` of the compiled `misuse` program under `subject`.
pub fn run_probe(binary: &Path, subject: &Subject, probe: &str) -> Outcome {
    let mut command = Command::new(binary);
    command.arg(probe).envs(subject.env.iter().map(|(k, v)| (k, v)));
    if let Some(library) = &subject.preload {
        command.env("LD_PRELOAD", library);
    }
    let output = match command.output() {
        Ok(output) => output,
        Err(e) => return Outcome::Reported(format!("could not run: {e}")),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let message = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string();
    match output.status.signal() {
        Some(libc::SIGABRT) => Outcome::Reported(message),
        Some(signal) => Outcome::Crashed(signal),
        None if stdout.contains("survived") && output.status.success() => Outcome::Missed,
        None => Outcome::Reported(message),
    }
}

/// Every probe under every subject: `results[s][p]`.
pub fn run(binary: &Path, probes: &[String], subjects: &[Subject]) -> Vec<Vec<Outcome>> {
    subjects
        .iter()
        .map(|subject| {
            probes
                .iter()
                .map(|probe| {
                    let outcome = run_probe(binary, subject, probe);
                    eprintln!("misuse {probe} under {}: {outcome:?}", subject.name);
                    outcome
                })
                .collect()
        })
        .collect()
}

/// The table: one row per probe, one column per subject, and the count of
/// probes each reported.
pub fn markdown(probes: &[String], subjects: &[Subject], results: &[Vec<Outcome>]) -> String {
    let mut md = String::from("## Heap misuse: what each allocator stops\n\n");
    md.push_str(
        "`reported`: stopped with a message; `crashed (N)`: killed by signal N after the fact; `–`: missed.\n\n",
    );
    let names: Vec<&str> = subjects.iter().map(|s| s.name.as_str()).collect();
    let _ = writeln!(md, "| probe | {} |", names.join(" | "));
    let _ = writeln!(md, "|---|{}", ":---:|".repeat(names.len()));
    for (p, probe) in probes.iter().enumerate() {
        let cells: Vec<String> = results
            .iter()
            .map(|r| match &r[p] {
                Outcome::Reported(_) => "reported".into(),
                Outcome::Crashed(signal) => format!("crashed ({signal})"),
                Outcome::Missed => "–".into(),
            })
            .collect();
        let _ = writeln!(md, "| {probe} | {} |", cells.join(" | "));
    }
    let counts: Vec<String> = results
        .iter()
        .map(|r| format!("{}/{}", r.iter().filter(|o| matches!(o, Outcome::Reported(_))).count(), probes.len()))
        .collect();
    let _ = writeln!(md, "| **reported** | {} |", counts.join(" | "));
    md
}
