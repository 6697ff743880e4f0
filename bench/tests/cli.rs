//! The front end's command line: help, and refusing what it does not know.

use std::process::Command;

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rseq-alloc-bench")).args(args).output().expect("run rseq-alloc-bench")
}

#[test]
fn help_lists_every_workload_allocator_and_run_length_and_succeeds() {
    for args in [&["--help"][..], &["compare", "--help"], &["compare", "-h"]] {
        let out = run(args);
        assert!(out.status.success(), "{args:?}: {:?}", out.status);
        let text = String::from_utf8(out.stdout).unwrap();
        for workload in rseq_alloc_bench::compare::WORKLOADS {
            assert!(text.contains(workload.name), "{args:?}: {} missing from\n{text}", workload.name);
        }
        for length in ["(default)", "--quick", "--full"] {
            let line = text.lines().find(|l| l.trim_start().starts_with(length));
            assert!(
                line.is_some_and(|l| l.contains("--scale") && l.contains("about")),
                "{args:?}: {length}'s figures and duration missing from\n{text}"
            );
        }
        for peer in rseq_alloc_bench::compare::peer_names() {
            assert!(text.contains(peer), "{args:?}: {peer} missing from\n{text}");
        }
    }
}

#[test]
fn an_unknown_option_is_refused_before_anything_runs() {
    let out = run(&["compare", "--no-such-option"]);
    assert!(!out.status.success(), "{:?}", out.status);
    let text = String::from_utf8(out.stderr).unwrap();
    assert!(text.contains("unknown option --no-such-option"), "{text}");
    assert!(!text.contains("building"), "it started building: {text}");
}
