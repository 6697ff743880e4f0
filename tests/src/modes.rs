//! Running this test binary again in another rseq mode: with glibc's
//! registration turned off (our own area), with the allocator's fallback
//! forced, hardened, or under valgrind (no rseq at all). The child runs
//! every test except the ones that spawn children, checks that the mode is
//! the one expected, and must pass. [`mode_suites!`](crate::mode_suites)
//! declares that check and the four reruns in a binary whose global
//! allocator is rseq-alloc.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// The mode a child run expects, from `RSEQ_TEST_EXPECT_MODE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    /// `glibc` (the default on glibc 2.35+).
    GlibcArea,
    /// `own`: `GLIBC_TUNABLES=glibc.pthread.rseq=0`.
    OwnArea,
    /// `unavailable`: valgrind (no rseq at all).
    Unavailable,
    /// `forced`: rseq works but `RSEQ_ALLOC_FORCE_FALLBACK=1` turns it off in the allocator.
    ForcedFallback,
}

/// Test names starting with this spawn children; children skip them.
pub const PARENT_PREFIX: &str = "suite_";

/// The expectation set by a parent, if this is a child run.
pub fn expected() -> Option<Expected> {
    match std::env::var("RSEQ_TEST_EXPECT_MODE").ok()?.as_str() {
        "glibc" => Some(Expected::GlibcArea),
        "own" => Some(Expected::OwnArea),
        "unavailable" => Some(Expected::Unavailable),
        "forced" => Some(Expected::ForcedFallback),
        other => panic!("unknown RSEQ_TEST_EXPECT_MODE {other:?}"),
    }
}

/// Whether this process runs under valgrind (its preload is in the
/// environment valgrind gives the program).
pub fn under_valgrind() -> bool {
    std::env::var("LD_PRELOAD").is_ok_and(|v| v.contains("vgpreload"))
}

/// Whether valgrind is installed.
pub fn have_valgrind() -> bool {
    Command::new("valgrind").arg("--version").output().is_ok_and(|o| o.status.success())
}

/// How long a whole child run may take: far more than the slowest
/// (valgrind's), so that a hang fails with the child's output instead of
/// running into CI's own limit.
const CHILD_RUN_LIMIT: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// Runs this test binary again with `env`, under `wrapper` if given (e.g.
/// `valgrind --tool=none`), and panics with its output unless it passed at
/// least one test.
pub fn rerun_self(expect: &str, env: &[(&str, &str)], wrapper: &[&str]) {
    let exe = std::env::current_exe().expect("current_exe");
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    // Under a wrapper (valgrind runs one thread at a time) tests go one by one.
    let threads = if wrapper.is_empty() { "2" } else { "1" };
    command.args(["--skip", PARENT_PREFIX, "--test-threads", threads]).env("RSEQ_TEST_EXPECT_MODE", expect);
    for (key, value) in env {
        command.env(key, value);
    }
    let (output, hung) = crate::output_within(&mut command, None, CHILD_RUN_LIMIT);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let passed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("test result: ok. "))
        .and_then(|rest| rest.split(' ').next()?.parse::<u32>().ok());
    let ended = if hung { format!("killed after {CHILD_RUN_LIMIT:?} (hung)") } else { output.status.to_string() };
    assert!(
        !hung && output.status.success() && passed.is_some_and(|n| n > 0),
        "child run ({expect}) failed: {ended}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    eprintln!("child run ({expect}): {} tests passed", passed.unwrap_or(0));
}

/// Runs this test binary again under valgrind memcheck, where rseq does not
/// exist: small (`RSEQ_TEST_SCALE=2`) and without waiting for migrations or
/// signals (no section can be hit). Without valgrind it is a skip, except in
/// CI, which must have it.
pub fn rerun_under_valgrind() {
    if !have_valgrind() {
        assert!(std::env::var_os("CI").is_none(), "CI must install valgrind");
        eprintln!("valgrind not installed; skipped");
        return;
    }
    rerun_self(
        "unavailable",
        &[("RSEQ_TEST_SCALE", "2"), ("RSEQ_TEST_MIN_HITS", "0")],
        // Fair scheduling, or a thread that loops on a lock may starve the
        // others (valgrind runs one thread at a time).
        &["valgrind", "--tool=memcheck", "--fair-sched=yes", "--leak-check=no", "--error-exitcode=97", "--quiet"],
    );
}

/// Runs one test of this binary (`name`, exactly) in a child process with
/// `env`, and returns how it ended: for tests that must own the whole
/// process (pinning, resource limits, resident memory) or that end in an
/// abort on purpose.
pub fn run_test_in_child(name: &str, env: &[(&str, &str)]) -> std::process::Output {
    child_command(name, env).output().expect("spawn child test")
}

fn child_command(name: &str, env: &[(&str, &str)]) -> Command {
    let exe = std::env::current_exe().expect("current_exe");
    let mut command = Command::new(exe);
    command.args(["--exact", name, "--test-threads", "1", "--nocapture"]).envs(env.iter().copied());
    command
}

/// Runs one test in a child as [`run_test_in_child`] does, and panics with
/// its output unless it passed and printed its summary line (`NAME: ...`).
pub fn child_passes(name: &str, env: &[(&str, &str)]) {
    passed(name, run_test_in_child(name, env));
}

/// As [`child_passes`], with the whole child on the CPU this thread runs
/// on: every thread it starts (libtest's own too) inherits that, so a test
/// that counts what one CPU's caches do sees no other CPU wake its classes
/// behind its back.
pub fn child_passes_on_one_cpu(name: &str, env: &[(&str, &str)]) {
    // SAFETY: no preconditions.
    let cpu = usize::try_from(unsafe { libc::sched_getcpu() }).expect("sched_getcpu");
    let mut command = child_command(name, env);
    // SAFETY: between fork and exec the closure makes one system call and
    // touches no lock and no allocator.
    unsafe {
        command.pre_exec(
            move || {
                if crate::stress::pin(0, &[cpu]) { Ok(()) } else { Err(std::io::Error::last_os_error()) }
            },
        )
    };
    passed(name, command.output().expect("spawn child test"));
}

fn passed(name: &str, output: std::process::Output) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{name}: {}\n{stderr}", output.status);
    assert!(stderr.contains(&format!("{name}: ")), "{name} printed no summary:\n{stderr}");
}

/// Asserts that the allocator runs in the mode `RSEQ_TEST_EXPECT_MODE`
/// names (glibc's area when unset), hardened exactly when
/// `RSEQ_TEST_EXPECT_HARDENED` is set: a rerun in the wrong mode would pass
/// without testing the mode it was for.
#[cfg(not(rseq_alloc_loom))]
pub fn assert_allocator_mode() {
    let _ = Box::new(1u8);
    let mode = rseq_alloc::stats().mode;
    eprintln!("allocator mode: {mode}");
    match expected() {
        None | Some(Expected::GlibcArea) => assert_eq!(mode, rseq_alloc::Mode::RseqGlibcArea),
        Some(Expected::OwnArea) => assert_eq!(mode, rseq_alloc::Mode::RseqOwnArea),
        Some(Expected::Unavailable) => assert!(matches!(mode, rseq_alloc::Mode::Fallback(_)), "{mode}"),
        Some(Expected::ForcedFallback) => assert_eq!(mode, rseq_alloc::Mode::ForcedFallback),
    }
    let hardened = std::env::var_os("RSEQ_TEST_EXPECT_HARDENED").is_some();
    assert_eq!(rseq_alloc::stats().hardened, hardened);
}

/// Declares, in a test binary whose `#[global_allocator]` is rseq-alloc,
/// `mode_is_the_one_the_environment_implies` and the `suite_*` tests that
/// run the binary's other tests again with our own rseq registration, with
/// the fallback forced, hardened, and under valgrind.
#[macro_export]
macro_rules! mode_suites {
    () => {
        #[test]
        fn mode_is_the_one_the_environment_implies() {
            $crate::modes::assert_allocator_mode();
        }

        #[test]
        fn suite_own_area() {
            $crate::modes::rerun_self("own", &[("GLIBC_TUNABLES", "glibc.pthread.rseq=0")], &[]);
        }

        #[test]
        fn suite_forced_fallback() {
            $crate::modes::rerun_self("forced", &[("RSEQ_ALLOC_FORCE_FALLBACK", "1")], &[]);
        }

        #[test]
        fn suite_hardened() {
            $crate::modes::rerun_self(
                "glibc",
                &[("RSEQ_ALLOC_HARDENED", "1"), ("RSEQ_TEST_EXPECT_HARDENED", "1")],
                &[],
            );
        }

        #[test]
        fn suite_valgrind_without_rseq() {
            $crate::modes::rerun_under_valgrind();
        }
    };
}
