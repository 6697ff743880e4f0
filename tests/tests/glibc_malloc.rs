//! glibc's own malloc tests under `LD_PRELOAD` of `librseq_alloc.so`: the
//! `malloc/tst-*.c` files of Debian's `glibc-source` package for the glibc
//! installed here, extracted at test time into the target directory (never
//! into the repository), built against `tests/glibc/` (a small stand-in for
//! glibc's libsupport) and run with rseq and with the fallback forced.
//!
//! Each test passes, or is in [`EXPECTED_FAILURES`] and fails printing the
//! line given there. A listed test that passes, or fails some other way,
//! fails this test: the list says what is true now or the suite says so.
//! Without the source tarball the test is skipped, except in CI.
//! `RSEQ_GLIBC_TESTS=tst-a,tst-b` runs only those.

#![cfg(not(rseq_alloc_loom))]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rseq_alloc_tests::output_within;
use rseq_alloc_tests::preload::{Mode, library};

/// The tests of glibc's `malloc/` directory that exercise the C API, the
/// longest first so that the parallel runs overlap them.
const TESTS: &[&str] = &[
    "tst-mallocfork2",
    "tst-malloc-fork-deadlock",
    "tst-mallocfork3",
    "tst-malloc-thread-exit",
    "tst-malloc-thread-fail",
    "tst-malloc-too-large",
    "tst-malloc",
    "tst-calloc",
    "tst-posix_memalign",
    "tst-reallocarray",
    "tst-obstack",
    "tst-memalign",
    "tst-valloc",
    "tst-pvalloc",
    "tst-realloc",
    "tst-mallocfork",
    "tst-free-errno",
    "tst-mallinfo2",
    "tst-trim1",
];

struct ExpectedFailure {
    test: &'static str,
    /// A line the failing test prints, so that a different failure is not taken for this one.
    prints: &'static str,
    /// Why: every entry is a test that relies on glibc's own heap layout,
    /// not on the C API (a bug of ours is fixed, not listed).
    why: &'static str,
}

/// Kept in step with README's Tests section.
const EXPECTED_FAILURES: &[ExpectedFailure] = &[ExpectedFailure {
    test: "tst-free-errno",
    prints: "free(): invalid pointer",
    why: "maps new pages over the page before a large block, which holds our block's header \
             (glibc's is in the block's first page, which the test copies back)",
}];

/// Test programs run at once: most of the time goes to tests that sleep or
/// wait on one another, so a few share two cores well.
const PARALLEL_RUNS: usize = 3;

/// Longer than any test's own limit (its driver kills it at its `TIMEOUT`).
const RUN_LIMIT: Duration = Duration::from_secs(150);

/// The glibc source tarball of the installed glibc, if `glibc-source` is installed.
fn source_tarball() -> Option<PathBuf> {
    let out = Command::new("getconf").arg("GNU_LIBC_VERSION").output().ok()?;
    let version = String::from_utf8_lossy(&out.stdout).trim().strip_prefix("glibc ")?.to_string();
    let tarball = PathBuf::from(format!("/usr/src/glibc/glibc-{version}.tar.xz"));
    tarball.exists().then_some(tarball)
}

/// Where the sources are extracted and the programs built: beside the test binaries.
fn work_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().join("glibc-malloc");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn check(command: &mut Command) {
    let out = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Extracts the tests from `tarball` into `dir/malloc/` and builds each as
/// `dir/<test>` with the stand-in libsupport.
fn build(tarball: &Path, dir: &Path) {
    let top = tarball.file_name().unwrap().to_str().unwrap().trim_end_matches(".tar.xz");
    let mut tar = Command::new("tar");
    tar.arg("-xJf").arg(tarball).arg("-C").arg(dir).arg("--strip-components=1");
    tar.args(TESTS.iter().map(|t| format!("{top}/malloc/{t}.c")));
    check(&mut tar);

    let support = Path::new(env!("CARGO_MANIFEST_DIR")).join("glibc");
    let include = support.join("include");
    let gcc = |args: &[&str]| {
        let mut c = Command::new("gcc");
        c.args(["-O2", "-g", "-D_GNU_SOURCE", "-pthread", "-w", "-I"]).arg(&include).args(args).current_dir(dir);
        check(&mut c);
    };
    gcc(&["-c", "-o", "support.o", support.join("support.c").to_str().unwrap()]);
    for test in TESTS {
        gcc(&["-o", test, &format!("malloc/{test}.c"), "support.o"]);
    }
}

enum Outcome {
    Passed,
    Failed(String),
}

/// Runs one built test with the library preloaded.
fn run(dir: &Path, test: &str, mode: Mode) -> (Outcome, Duration) {
    let mut command = Command::new(dir.join(test));
    command.current_dir(dir).env("TMPDIR", dir).env("LD_PRELOAD", library());
    if let Mode::ForcedFallback = mode {
        command.env("RSEQ_ALLOC_FORCE_FALLBACK", "1");
    }
    let start = Instant::now();
    let (out, hung) = output_within(&mut command, None, RUN_LIMIT);
    let took = start.elapsed();
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let outcome = if hung {
        Outcome::Failed(format!("error: timed out (hung past the driver's own limit)\n{printed}"))
    } else if out.status.success() {
        Outcome::Passed
    } else {
        Outcome::Failed(format!("{}\n{printed}", out.status))
    };
    (outcome, took)
}

/// What is wrong with `outcome` given the expected-failure list, if anything.
fn verdict(test: &str, mode: Mode, outcome: &Outcome) -> Result<String, String> {
    let expected = EXPECTED_FAILURES.iter().find(|e| e.test == test);
    match (outcome, expected) {
        (Outcome::Passed, None) => Ok("passed".into()),
        (Outcome::Passed, Some(e)) => Err(format!(
            "{test} ({mode:?}) now passes: remove it from the expected-failure list \
             (EXPECTED_FAILURES and README's Tests section); it was listed because {}",
            e.why
        )),
        (Outcome::Failed(printed), Some(e)) if printed.contains(e.prints) => {
            Ok(format!("failed as expected ({})", e.why))
        }
        (Outcome::Failed(printed), Some(e)) => Err(format!(
            "{test} ({mode:?}) failed, but not as the expected-failure list says (it should print `{}`):\n{printed}",
            e.prints
        )),
        (Outcome::Failed(printed), None) => Err(format!("{test} ({mode:?}) failed:\n{printed}")),
    }
}

#[test]
fn glibc_malloc_tests_pass_or_fail_as_listed() {
    for e in EXPECTED_FAILURES {
        assert!(TESTS.contains(&e.test), "{} is listed as an expected failure but is not run", e.test);
    }
    let Some(tarball) = source_tarball() else {
        assert!(std::env::var_os("CI").is_none(), "CI must install glibc-source (.ci/run does)");
        eprintln!("skipped: no /usr/src/glibc/glibc-<version>.tar.xz (apt-get install glibc-source)");
        return;
    };
    let start = Instant::now();
    let dir = work_dir();
    build(&tarball, &dir);
    let built = start.elapsed();

    let only = std::env::var("RSEQ_GLIBC_TESTS").ok();
    let chosen = |t: &&&str| only.as_deref().is_none_or(|o| o.split(',').any(|n| n == **t));
    let jobs: Vec<(&str, Mode)> =
        TESTS.iter().filter(chosen).flat_map(|&t| [Mode::Rseq, Mode::ForcedFallback].map(|m| (t, m))).collect();
    let next = Mutex::new(jobs.into_iter());
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..PARALLEL_RUNS {
            s.spawn(|| {
                loop {
                    let Some((test, mode)) = next.lock().unwrap().next() else { break };
                    let (outcome, took) = run(&dir, test, mode);
                    results.lock().unwrap().push((test, mode, verdict(test, mode, &outcome), took));
                }
            });
        }
    });

    let mut results = results.into_inner().unwrap();
    results
        .sort_by_key(|&(test, mode, ..)| (TESTS.iter().position(|&t| t == test), matches!(mode, Mode::ForcedFallback)));
    let mut problems = Vec::new();
    for (test, mode, verdict, took) in results {
        let line = match verdict {
            Ok(v) => v,
            Err(problem) => {
                problems.push(problem);
                "UNEXPECTED".into()
            }
        };
        eprintln!("{test:<26} {:<15} {:>6.1} s  {line}", format!("{mode:?}"), took.as_secs_f64());
    }
    eprintln!("built in {:.1} s, all done in {:.1} s", built.as_secs_f64(), start.elapsed().as_secs_f64());
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}
