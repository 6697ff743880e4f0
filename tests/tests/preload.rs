//! `librseq_alloc.so` under `LD_PRELOAD`: C and C++ programs written for the
//! C API's rules, and real programs nobody here wrote, each in three modes:
//! rseq (glibc's area), the fallback forced, and under valgrind (no rseq).

#![cfg(not(rseq_alloc_loom))]

use std::process::Command;
use std::time::Duration;

use rseq_alloc_tests::modes;
use rseq_alloc_tests::preload::{MODES, Mode, build_dir, run, spawn};

fn modes() -> Vec<Mode> {
    if modes::have_valgrind() {
        MODES.to_vec()
    } else {
        assert!(std::env::var_os("CI").is_none(), "CI must install valgrind");
        vec![Mode::Rseq, Mode::ForcedFallback]
    }
}

fn run_c_test(name: &str, args: &[&str]) {
    run_c_test_scaled(name, |_| args.iter().map(|a| a.to_string()).collect());
}

/// As [`run_c_test`], with arguments that may depend on the mode (valgrind
/// runs signal-heavy programs slowly: its scheduler rarely switches threads).
fn run_c_test_scaled(name: &str, args_for: impl Fn(Mode) -> Vec<String>) {
    let program = build_dir().join(name);
    for mode in modes() {
        let args = args_for(mode);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run(mode, program.to_str().unwrap(), &args, None, Duration::from_secs(180));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains(&format!("{name}: ok")), "{name} ({mode:?}) said:\n{stdout}");
        eprintln!("{mode:?}: {}", stdout.trim());
    }
}

#[test]
fn c_api_conformance() {
    run_c_test("conformance", &[]);
}

#[test]
fn memory_crosses_library_boundaries_and_dlopen_dlclose() {
    let helper = build_dir().join("libhelper.so");
    run_c_test("across_libraries", &[helper.to_str().unwrap()]);
}

#[test]
fn fork_from_a_multithreaded_program() {
    run_c_test("fork_threads", &[]);
}

/// `fork` while other threads hold stdio's locks inside `realloc` (getline)
/// and walk every FILE (`fflush(NULL)`): the fork handlers take stdio's
/// list lock before the allocator's, as glibc's malloc does, or this hangs.
#[test]
fn fork_while_other_threads_are_inside_stdio_and_the_allocator() {
    run_c_test("fork_stdio", &[]);
}

/// The fork handlers are registered on the first fork, by the wrappers of
/// `fork`, `daemon` and `forkpty`: each of those, taken first while other
/// threads allocate, leaves a child that can allocate, and fork handlers
/// registered before ours may allocate.
#[test]
fn first_fork_by_daemon_forkpty_or_fork_with_allocating_handlers() {
    run_c_test_scaled("fork_wrappers", |mode| vec![if let Mode::Valgrind = mode { "2" } else { "10" }.into()]);
}

#[test]
fn fork_from_a_signal_handler_that_interrupted_malloc() {
    run_c_test_scaled("fork_in_signal", |mode| vec![if let Mode::Valgrind = mode { "30" } else { "300" }.into()]);
}

#[test]
fn an_idle_program_gets_memory_back_and_a_single_threaded_one_no_thread() {
    run_c_test("idle_return", &[]);
}

#[test]
fn threads_exit_holding_memory() {
    run_c_test("threads_exit", &[]);
}

#[test]
fn signal_handlers_allocate() {
    run_c_test_scaled("signal_alloc", |mode| vec![if let Mode::Valgrind = mode { "50" } else { "2000" }.into()]);
}

/// Out of memory under `RLIMIT_AS`: NULL with `ENOMEM`, nothing half done,
/// and the program recovers (not under valgrind, which manages the address
/// space itself).
#[test]
fn out_of_memory_returns_null_and_the_program_recovers() {
    let program = build_dir().join("oom");
    for mode in [Mode::Rseq, Mode::ForcedFallback] {
        let out = run(mode, program.to_str().unwrap(), &[], None, Duration::from_secs(120));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("oom: ok"), "{mode:?}: {stdout}");
        eprintln!("{mode:?}:\n{}", stdout.trim());
    }
}

#[test]
fn cpp_sized_and_aligned_delete() {
    run_c_test("sized_delete", &[]);
}

// ---------------------------------------------------------------------------
// Real programs.

#[test]
fn python_threads() {
    let script = "import threading\n\
                  results = [0] * 8\n\
                  def work(i):\n\
                  \x20   d = {}\n\
                  \x20   for j in range(30000): d[j] = str(j) * (j % 7)\n\
                  \x20   results[i] = sum(len(v) for v in d.values())\n\
                  ts = [threading.Thread(target=work, args=(i,)) for i in range(8)]\n\
                  [t.start() for t in ts]\n\
                  [t.join() for t in ts]\n\
                  print(sum(results))\n";
    let expected: usize = 8 * (0..30000usize).map(|j| j.to_string().len() * (j % 7)).sum::<usize>();
    for mode in modes() {
        let out = run(mode, "python3", &["-c", script], None, Duration::from_secs(300));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expected.to_string(), "{mode:?}");
    }
}

#[test]
fn gcc_compiles_a_program() {
    let dir = build_dir();
    let source = dir.join("hello_gcc.c");
    std::fs::write(&source, "#include <stdio.h>\nint main(void){printf(\"%d\\n\", 6 * 7);return 0;}\n").unwrap();
    for mode in modes() {
        let binary = dir.join(format!("hello_gcc_{mode:?}"));
        run(
            mode,
            "gcc",
            &["-O2", source.to_str().unwrap(), "-o", binary.to_str().unwrap()],
            None,
            Duration::from_secs(300),
        );
        let out = Command::new(&binary).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42", "{mode:?}");
    }
}

#[test]
fn git_commits_and_logs() {
    for mode in modes() {
        let repo = build_dir().join(format!("git_{mode:?}"));
        let _ = std::fs::remove_dir_all(&repo);
        std::fs::create_dir_all(&repo).unwrap();
        for i in 0..50 {
            std::fs::write(repo.join(format!("f{i}.txt")), format!("file {i}\n").repeat(100)).unwrap();
        }
        let r = repo.to_str().unwrap();
        let git = |args: &[&str]| {
            let mut full = vec!["-C", r, "-c", "user.name=t", "-c", "user.email=t@example.invalid"];
            full.extend_from_slice(args);
            run(mode, "git", &full, None, Duration::from_secs(300))
        };
        git(&["init", "-q"]);
        git(&["add", "."]);
        git(&["commit", "-q", "-m", "fifty files"]);
        let log = git(&["log", "--stat", "--oneline"]);
        assert!(String::from_utf8_lossy(&log.stdout).contains("50 files changed"), "{mode:?}");
    }
}

#[test]
fn perl_hashes() {
    let script =
        "my %h; $h{$_} = 'x' x ($_ % 50) for 1..200000; my $t = 0; $t += length $h{$_} for keys %h; print \"$t\\n\";";
    let expected: usize = (1..=200_000usize).map(|i| i % 50).sum();
    for mode in modes() {
        let out = run(mode, "perl", &["-e", script], None, Duration::from_secs(300));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expected.to_string(), "{mode:?}");
    }
}

#[test]
fn sort_a_large_input() {
    let n = 400_000u64;
    let mut x = 88172645463325252u64;
    let mut input = String::new();
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        input.push_str(&format!("{}\n", x % 1_000_000_000));
    }
    let mut expected: Vec<u64> = input.lines().map(|l| l.parse().unwrap()).collect();
    expected.sort_unstable();
    for mode in modes() {
        let out = run(mode, "sort", &["-n"], Some(input.as_bytes()), Duration::from_secs(300));
        let got: Vec<u64> = String::from_utf8_lossy(&out.stdout).lines().map(|l| l.parse().unwrap()).collect();
        assert_eq!(got, expected, "{mode:?}");
    }
}

/// `RSEQ_ALLOC_STATS=1` reports at exit even from a program that closes its
/// standard error first (coreutils' `sort` does), and names the process;
/// a path reports to a file per process, `%p` standing for its id.
#[test]
fn statistics_at_exit_survive_a_closed_stderr_and_go_to_files() {
    let out = spawn(Mode::Rseq, "sort", &[], &[("RSEQ_ALLOC_STATS", "1")], Some(b"b\na\n"), Duration::from_secs(60));
    assert!(out.status.success());
    assert_eq!(out.stdout, b"a\nb\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr.lines().next().unwrap_or("");
    assert!(first.starts_with("rseq-alloc[") && first.contains(":sort]: mode: rseq"), "{stderr}");

    let dir = build_dir().join("stats-files");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pattern = dir.join("report.%p.txt");
    let out = spawn(
        Mode::Rseq,
        "sort",
        &[],
        &[("RSEQ_ALLOC_STATS", pattern.to_str().unwrap())],
        Some(b"x\n"),
        Duration::from_secs(60),
    );
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("rseq-alloc["), "a path sends the report to its file");
    let files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    let pid = name.strip_prefix("report.").and_then(|n| n.strip_suffix(".txt")).unwrap();
    assert!(pid.parse::<u32>().is_ok(), "{name}: %p is the process id");
    let report = std::fs::read_to_string(&files[0]).unwrap();
    assert!(report.starts_with(&format!("rseq-alloc[{pid}:sort]: mode: ")), "{report}");
    assert!(report.lines().any(|l| l.contains(" class ") && l.contains("alloc-hits")), "{report}");
}
