//! Instruction counts: each single-thread workload once under each
//! allocator in `valgrind --tool=cachegrind --cache-sim=no`, which is exact
//! and repeatable where time is not.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use super::catalogue::{self, Program, Workload};
use super::peers::Allocator;
use super::running::Options;

/// Instruction counts: workload → allocator → count.
pub type Counts = BTreeMap<&'static str, BTreeMap<&'static str, Result<u64, String>>>;

/// Instructions executed by one run of `workload` under `allocator`, counted
/// by `valgrind --tool=cachegrind --cache-sim=no` (exact and repeatable,
/// where time is not). Valgrind has no rseq, so for rseq-alloc this is the
/// fallback path's count.
pub fn instructions(binary: &Path, workload: &Workload, scale: f64, allocator: &Allocator) -> Result<u64, String> {
    let Program::Synthetic(name) = workload.program else {
        return Err(format!("{} is not a workload of workloads.c", workload.name));
    };
    let mut command = Command::new("valgrind");
    command
        .args(["--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"])
        .arg(binary)
        .args([name, "1", &scale.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(library) = &allocator.preload {
        command.env("LD_PRELOAD", library);
    }
    let output = command.output().map_err(|e| format!("valgrind: {e}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!("valgrind exited with {}", output.status));
    }
    stderr
        .lines()
        .find_map(|l| l.split_once("I   refs:").map(|(_, n)| n.trim().replace(',', "")))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| "no instruction count in cachegrind's output".into())
}

/// Whether valgrind can be run here.
pub fn valgrind_available() -> bool {
    Command::new("valgrind").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// Counts the instructions of every selected single-thread workload under
/// every allocator, once each, at `scale`.
pub fn count_instructions(binary: &Path, allocators: &[Allocator], options: &Options, scale: f64) -> Counts {
    let mut counts = Counts::new();
    for workload in catalogue::selected(&options.workloads).filter(|w| w.counted()) {
        for allocator in allocators {
            let count = instructions(binary, workload, scale, allocator);
            match &count {
                Ok(n) => eprintln!("cachegrind {} {}: {n} instructions", workload.name, allocator.name),
                Err(e) => eprintln!("cachegrind {} {}: {e}", workload.name, allocator.name),
            }
            counts.entry(workload.name).or_default().insert(allocator.name, count);
        }
    }
    counts
}
