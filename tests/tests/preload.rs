//! `librseq_alloc.so` under `LD_PRELOAD`: C and C++ programs written for the
//! C API's rules, and real programs nobody here wrote, each in three modes:
//! rseq (glibc's area), the fallback forced, and under valgrind (no rseq).

#![cfg(not(rseq_alloc_loom))]

use std::process::Command;
use std::time::Duration;

use rseq_alloc_tests::modes;
use rseq_alloc_tests::preload::{MODES, Mode, build_dir, library, run};

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

/// The library's small statics come before the central lists and the
/// 4 MiB segment map (`alloc/preload/bss_order.ld`): the map is its last
/// `.bss` object, right after the central lists, so no static sits alone on
/// a page past it (one page more resident in every process).
#[test]
fn small_statics_come_before_the_segment_map() {
    let out = Command::new("nm").args(["-n", "-C"]).arg(library()).output().expect("nm (binutils)");
    assert!(out.status.success(), "nm failed: {}", String::from_utf8_lossy(&out.stderr));
    let symbols = String::from_utf8_lossy(&out.stdout);
    let bss: Vec<&str> = symbols
        .lines()
        .filter(|line| matches!(line.split_whitespace().nth(1), Some("b" | "B")))
        .filter_map(|line| line.split_whitespace().nth(2))
        .collect();
    assert_eq!(
        bss[bss.len().saturating_sub(2)..],
        ["rseq_alloc::central::CENTRAL", "rseq_alloc::segment::SEGMENT_MAP"]
    );
}

/// The library's code is in two parts (`alloc/preload/text_order.ld`): the
/// cold part ends on a 64 KiB boundary where the hot part starts, so the
/// kernel's fault-around, which maps a file's cached pages by aligned 64 KiB
/// windows, maps the hot part alone into a program that only allocates and
/// frees, and the cold part only once the program calls into it. The unwind
/// tables, in a segment of their own after the code, are not mapped at all.
#[test]
fn an_ordinary_program_maps_only_the_hot_code() {
    let out = Command::new("readelf").args(["-SW"]).arg(library()).output().expect("readelf (binutils)");
    assert!(out.status.success(), "readelf failed: {}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    // `  [13] .text.cold  PROGBITS  000000000000ac80 004c80 005380 00  AX ...`
    let section = |name: &str| -> (u64, u64) {
        let fields: Vec<&str> = table
            .lines()
            .filter_map(|line| Some(line.split_once(']')?.1.split_whitespace().collect::<Vec<_>>()))
            .find(|fields| fields.first() == Some(&name))
            .unwrap_or_else(|| panic!("no {name} section in:\n{table}"));
        let hex = |s: &str| u64::from_str_radix(s, 16).unwrap();
        (hex(fields[2]), hex(fields[4]))
    };
    let (cold, cold_size) = section(".text.cold");
    let (hot, _) = section(".init");
    assert_eq!(hot % 0x10000, 0, ".init at {hot:#x}: the hot part must start a 64 KiB window");
    assert_eq!(cold + cold_size, hot, "the cold part must end where the hot part starts");
    let hot_end = [".init", ".fini", ".text", ".plt"].map(section).iter().map(|(a, s)| a + s).max().unwrap();
    let hot_kib = (hot_end - hot).div_ceil(4096) * 4;

    let program = build_dir().join("text_residency");
    for mode in [Mode::Rseq, Mode::ForcedFallback] {
        let out = run(mode, program.to_str().unwrap(), &[], None, Duration::from_secs(60));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let figure = |phase: &str| -> u64 {
            let prefix = format!("text_residency: {phase} ");
            let line = stdout.lines().find_map(|l| l.strip_prefix(&prefix)).unwrap_or_else(|| panic!("{stdout}"));
            line.trim().parse().unwrap()
        };
        let (plain, cold) = (figure("plain"), figure("cold"));
        eprintln!("{mode:?}: hot part {hot_kib} KiB; resident {plain} KiB, {cold} KiB after cold calls");
        assert!(
            plain > 0 && plain <= hot_kib,
            "{mode:?}: an ordinary program has {plain} KiB of code resident, the hot part is {hot_kib} KiB"
        );
        assert!(cold > plain, "{mode:?}: calling cold functions mapped nothing more ({plain} -> {cold} KiB)");
        assert!(
            stdout.contains("text_residency: unwind tables resident 0"),
            "{mode:?}: the unwind tables were mapped though nothing unwound:\n{stdout}"
        );
    }
}
