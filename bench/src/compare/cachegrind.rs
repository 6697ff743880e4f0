//! Instruction counts: each single-thread workload once under each
//! allocator in `valgrind --tool=callgrind`, which is exact and repeatable
//! where time is not, and says which object every instruction ran in: so a
//! count comes with the allocator's own share of it, which bounds what any
//! allocator's speed can change in that workload.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use super::catalogue::{self, Program, Workload};
use super::peers::Allocator;
use super::running::Options;

/// One run's instructions: all of them, and the allocator's own (`None`
/// where they cannot be told apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Count {
    /// Every instruction of the process.
    pub total: u64,
    /// The instructions in the allocator's code: the preloaded library's, or
    /// for glibc its malloc functions in libc.
    pub allocator: Option<u64>,
}

/// Instruction counts: workload → allocator → count.
pub type Counts = BTreeMap<&'static str, BTreeMap<&'static str, Result<Count, String>>>;

/// Instructions executed by one run of `workload` under `allocator`, counted
/// by `valgrind --tool=callgrind` (exact and repeatable, where time is not).
/// Valgrind has no rseq, so for rseq-alloc this is the fallback path's count.
pub fn instructions(binary: &Path, workload: &Workload, scale: f64, allocator: &Allocator) -> Result<Count, String> {
    let Program::Synthetic(name) = workload.program else {
        return Err(format!("{} is not a workload of workloads.c", workload.name));
    };
    let out = std::env::temp_dir().join(format!("rseq-alloc-callgrind-{}.out", std::process::id()));
    let mut command = Command::new("valgrind");
    command
        .args(["--tool=callgrind", "--compress-strings=no", "--compress-pos=no"])
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(binary)
        .args([name, "1", &scale.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(library) = &allocator.preload {
        command.env("LD_PRELOAD", library);
    }
    let status = command.status().map_err(|e| format!("valgrind: {e}"))?;
    let profile = std::fs::read_to_string(&out);
    let _ = std::fs::remove_file(&out);
    if !status.success() {
        return Err(format!("valgrind exited with {status}"));
    }
    let profile = profile.map_err(|e| format!("callgrind's output: {e}"))?;
    count(&profile, allocator.preload.as_deref().map(Path::new))
        .ok_or_else(|| "no instruction count in callgrind's output".into())
}

/// Sums a callgrind profile (uncompressed names and positions): the total,
/// and the allocator's cost: the self cost of its code (objects named like
/// `library`, which catches a proxy's allocator library too, and code valgrind
/// cannot place, or glibc's
/// malloc functions in libc when `library` is `None`), and the inclusive
/// cost of the calls its code makes out of it (`memcpy` in a `realloc`,
/// system calls). A cost line right after `calls=` is a call's inclusive
/// cost.
pub fn count(profile: &str, library: Option<&Path>) -> Option<Count> {
    let stem = library.and_then(|l| l.file_name()).and_then(|n| n.to_str()).map(|n| {
        let end = n.find(['_', '.']).unwrap_or(n.len());
        n[..end].to_string()
    });
    // Valgrind names no object (`???`) for code outside a library's usual
    // text sections: gperftools puts malloc and free in one of their own.
    let ours = |object: &str, function: &str| match &stem {
        Some(_) if object == "???" => true,
        Some(stem) => {
            Path::new(object).file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(stem.as_str()))
        }
        None => {
            const MALLOC_WORDS: [&str; 7] = ["malloc", "free", "alloc", "align", "tcache", "arena", "chunk"];
            object.contains("/libc.so") && MALLOC_WORDS.iter().any(|w| function.contains(w))
        }
    };
    let mut total = None;
    let (mut object, mut function) = (String::new(), String::new());
    let (mut callee_object, mut callee_function) = (None::<String>, String::new());
    let mut after_call = false;
    let mut allocator = 0u64;
    for line in profile.lines() {
        if let Some(n) = line.strip_prefix("summary:").or_else(|| line.strip_prefix("totals:")) {
            total = total.or(n.trim().parse().ok());
        } else if let Some(o) = line.strip_prefix("ob=") {
            object = o.to_string();
        } else if let Some(f) = line.strip_prefix("fn=") {
            function = f.to_string();
        } else if let Some(o) = line.strip_prefix("cob=") {
            callee_object = Some(o.to_string());
        } else if let Some(f) = line.strip_prefix("cfn=") {
            callee_function = f.to_string();
        } else if line.starts_with("calls=") {
            after_call = true;
        } else if line.starts_with(|c: char| c.is_ascii_digit() || c == '+' || c == '-' || c == '*') {
            let ir: u64 = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0);
            let caller = ours(&object, &function);
            if std::mem::take(&mut after_call) {
                let callee = callee_object.take().unwrap_or_else(|| object.clone());
                if caller && !ours(&callee, &callee_function) {
                    allocator += ir;
                }
            } else if caller {
                allocator += ir;
            }
        }
    }
    Some(Count { total: total?, allocator: Some(allocator) })
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
                Ok(n) => eprintln!("callgrind {} {}: {} instructions", workload.name, allocator.name, n.total),
                Err(e) => eprintln!("callgrind {} {}: {e}", workload.name, allocator.name),
            }
            counts.entry(workload.name).or_default().insert(allocator.name, count);
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROFILE: &str = "version: 1\npositions: line\nevents: Ir\nsummary: 1000\n\
        ob=/usr/lib/libours.so.1\nfn=malloc\n0 300\ncob=/lib/x86_64-linux-gnu/libc.so.6\ncfn=memcpy\ncalls=1 0\n0 40\n\
        fn=realloc\ncfn=malloc\ncalls=1 0\n0 400\n\
        ob=/lib/x86_64-linux-gnu/libc.so.6\nfn=_int_malloc\n0 50\nfn=memcpy\n0 250\n\
        ob=/usr/bin/program\nfn=main\n0 400\n";

    #[test]
    fn the_allocator_is_its_code_and_the_calls_it_makes_out_of_it() {
        let count = count(PROFILE, Some(Path::new("/preload/libours_proxy.so"))).unwrap();
        assert_eq!(count, Count { total: 1000, allocator: Some(340) });
    }

    #[test]
    fn glibc_is_its_malloc_functions_in_libc() {
        assert_eq!(count(PROFILE, None).unwrap().allocator, Some(50));
    }
}
