//! Bad and hostile input through the C API: each classic heap misuse of
//! `tests/c/misuse.c`, run in a child with `librseq_alloc.so` preloaded. A
//! misuse that is caught must stop the process with SIGABRT and one line
//! naming the call, the check and the very pointer the program misused;
//! one that is not caught must at least not be reported as something else.

#![cfg(not(rseq_alloc_loom))]

use std::os::unix::process::ExitStatusExt;
use std::process::Output;
use std::time::Duration;

use rseq_alloc_tests::preload::{Mode, build_dir, spawn};

/// The classic probes `misuse.c` knows (`misuse --list`).
fn probes() -> Vec<String> {
    let program = build_dir().join("misuse");
    let output = std::process::Command::new(program).arg("--list").output().unwrap();
    let list: Vec<String> = String::from_utf8_lossy(&output.stdout).lines().map(String::from).collect();
    assert!(list.len() >= 12, "misuse --list: {list:?}");
    list
}

struct Run {
    output: Output,
    /// The pointer the probe misused, as it printed it.
    ptr: String,
}

impl Run {
    fn caught(&self) -> bool {
        !String::from_utf8_lossy(&self.output.stdout).contains("survived") && !self.output.status.success()
    }

    fn aborted(&self) -> bool {
        self.output.status.signal() == Some(libc::SIGABRT)
    }

    /// Our report: the lines of stderr that start with `rseq-alloc:`.
    fn report(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.output.stderr)
            .lines()
            .filter(|l| l.starts_with("rseq-alloc:"))
            .map(String::from)
            .collect()
    }

    fn describe(&self) -> String {
        format!(
            "{}\n--- stdout\n{}--- stderr\n{}",
            self.output.status,
            String::from_utf8_lossy(&self.output.stdout),
            String::from_utf8_lossy(&self.output.stderr)
        )
    }
}

fn probe(mode: Mode, hardened: bool, name: &str) -> Run {
    let program = build_dir().join("misuse");
    let env: &[(&str, &str)] = if hardened { &[("RSEQ_ALLOC_HARDENED", "1")] } else { &[] };
    let output = spawn(mode, program.to_str().unwrap(), &[name], env, None, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let ptr = stdout
        .lines()
        .find_map(|l| l.strip_prefix("ptr="))
        .unwrap_or_else(|| panic!("probe {name} printed no pointer: {stdout}"))
        .to_string();
    Run { output, ptr }
}

/// The one line hardened mode prints for each probe, up to the pointer.
fn expected_report(name: &str) -> (&'static str, &'static str) {
    match name {
        "overflow" | "overflow_far" => ("free()", "heap overflow past the end of block"),
        "underflow" => ("free()", "heap underflow below block"),
        "double_free" | "double_free_later" | "double_free_reuse" | "double_free_later_reuse" => {
            ("free()", "double free of")
        }
        "use_after_free_write" => ("malloc()", "write after free into block"),
        "realloc_invalid" => ("realloc()", "invalid pointer"),
        _ => ("free()", "invalid pointer"),
    }
}

fn assert_reported(run: &Run, name: &str, mode: Mode) {
    let (call, check) = expected_report(name);
    let expected = format!("rseq-alloc: {call}: {check} {}", run.ptr);
    let report = run.report();
    assert!(run.aborted(), "{name} ({mode:?}): not stopped by SIGABRT: {}", run.describe());
    assert_eq!(report.len(), 1, "{name} ({mode:?}): one line expected: {}", run.describe());
    let line = &report[0];
    assert!(
        line == &expected || line.starts_with(&format!("{expected} at offset ")),
        "{name} ({mode:?}): expected `{expected}`, got `{line}`"
    );
}

/// Always on, whatever the mode: pointers that are not blocks of ours
/// (stack, static, someone else's mapping, a misaligned pointer into a
/// block) are refused at once.
#[test]
fn invalid_pointers_are_refused_naming_the_call_and_the_pointer() {
    for mode in [Mode::Rseq, Mode::ForcedFallback] {
        for name in ["invalid_stack", "invalid_static", "invalid_mmap", "misaligned", "realloc_invalid"] {
            let run = probe(mode, false, name);
            assert_reported(&run, name, mode);
        }
    }
}

/// Hardened mode catches every probe, each with its own message naming the
/// pointer the program misused.
#[test]
fn hardened_mode_catches_every_probe() {
    for mode in [Mode::Rseq, Mode::ForcedFallback] {
        for name in &probes() {
            let run = probe(mode, true, name);
            assert_reported(&run, name, mode);
        }
    }
}

/// The same probes under glibc's malloc: hardened mode must catch more.
#[test]
fn hardened_mode_catches_more_than_glibc() {
    let probes = probes();
    let glibc: Vec<&String> = probes.iter().filter(|name| probe(Mode::Glibc, false, name).caught()).collect();
    let ours: Vec<&String> = probes.iter().filter(|name| probe(Mode::Rseq, true, name).caught()).collect();
    eprintln!("glibc caught {}/{}: {glibc:?}", glibc.len(), probes.len());
    eprintln!("rseq-alloc (hardened) caught {}/{}: {ours:?}", ours.len(), probes.len());
    assert!(ours.len() > glibc.len(), "glibc {glibc:?}, ours {ours:?}");
    assert!(glibc.iter().all(|name| ours.contains(name)), "glibc {glibc:?}, ours {ours:?}");
}

/// Without hardened mode: double frees and interior pointers are caught
/// when the object reaches the central list (the probes trim, which drains
/// every CPU's cache there), with the same one-line reports; what is not
/// caught is not misreported.
#[test]
fn default_mode_catches_double_and_interior_frees_on_the_slow_path() {
    for mode in [Mode::Rseq, Mode::ForcedFallback] {
        for name in &probes() {
            let run = probe(mode, false, name);
            match name.as_str() {
                "double_free" | "double_free_later" | "interior" => assert_reported(&run, name, mode),
                _ => {
                    for line in run.report() {
                        assert!(line.contains(&run.ptr), "{name}: `{line}` does not name {}", run.ptr);
                    }
                }
            }
            eprintln!("{name} ({mode:?}): {}", if run.caught() { "caught" } else { "not caught" });
        }
    }
}

/// Without hardened mode too, a block freed twice (in a row, or with other
/// frees in between; a huge one, whose freed mapping stays ours for reuse,
/// too) and a pointer into a block (one in its span's first page, one in a
/// page after it) are refused at that very `free`, before
/// the program's next allocations could get one block twice.
#[test]
fn default_mode_refuses_double_frees_and_interior_pointers_at_once() {
    for mode in [Mode::Rseq, Mode::ForcedFallback] {
        for name in [
            "double_free_reuse",
            "double_free_later_reuse",
            "interior_reuse",
            "interior_tail_reuse",
            "huge_double_free_reuse",
        ] {
            let run = probe(mode, false, name);
            assert!(!String::from_utf8_lossy(&run.output.stdout).contains("shared"), "{name}: {}", run.describe());
            assert_reported(&run, name, mode);
        }
    }
}

/// C23 `free_sized` (and C++ sized `delete`) with a size that is not the
/// block's: reported, not trusted (a wrong size would put the block in
/// another class's cache), in every mode.
#[test]
fn sized_free_with_the_wrong_size_is_refused() {
    for (mode, hardened) in [(Mode::Rseq, false), (Mode::ForcedFallback, false), (Mode::Rseq, true)] {
        let run = probe(mode, hardened, "free_sized_mismatch");
        assert!(run.aborted(), "{mode:?}: {}", run.describe());
        let expected = format!("rseq-alloc: free_sized(): size 1000 does not match block {} of ", run.ptr);
        assert!(run.report().iter().any(|l| l.starts_with(&expected)), "{mode:?}: {}", run.describe());
    }
}
