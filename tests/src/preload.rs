//! Running C programs with `librseq_alloc.so` preloaded: the library under
//! test, the C programs of `tests/c/` (built once per test binary), and a
//! runner with a time limit, in each of the modes the library must work in.
//!
//! The library is the one `cargo build --release` puts next to the test's
//! profile directory (`scripts/test.sh` builds it first), or `RSEQ_ALLOC_SO`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

/// The library under test.
pub fn library() -> PathBuf {
    if let Some(path) = std::env::var_os("RSEQ_ALLOC_SO") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let so = profile_dir.join("librseq_alloc.so");
    assert!(so.exists(), "{} is missing: run `cargo build --release` first (scripts/test.sh does)", so.display());
    so
}

/// Where the C programs are built.
pub fn build_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().and_then(Path::parent).unwrap().join("c-tests");
        std::fs::create_dir_all(&dir).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("c");
        let c = |args: &[&str]| {
            let status = Command::new(args[0]).args(&args[1..]).current_dir(&dir).status().expect("compiler");
            assert!(status.success(), "{args:?} failed");
        };
        let s = |name: &str| src.join(name).to_str().unwrap().to_string();
        for program in [
            "conformance",
            "fork_threads",
            "fork_in_signal",
            "fork_wrappers",
            "threads_exit",
            "signal_alloc",
            "misuse",
            "oom",
            "fork_stdio",
            "idle_return",
        ] {
            let source = s(&format!("{program}.c"));
            c(&[
                "gcc",
                "-O2",
                "-g",
                "-pthread",
                "-Wno-alloc-size-larger-than",
                "-o",
                program,
                &source,
                "-ldl",
                "-lutil",
            ]);
        }
        c(&["gcc", "-O2", "-g", "-shared", "-fPIC", "-o", "libhelper.so", &s("helper.c")]);
        let rpath = format!("-Wl,-rpath,{}", dir.display());
        c(&["gcc", "-O2", "-g", "-o", "across_libraries", &s("across_libraries.c"), "-L.", "-lhelper", &rpath, "-ldl"]);
        c(&["g++", "-O2", "-g", "-fsized-deallocation", "-faligned-new", "-o", "sized_delete", &s("sized_delete.cpp")]);
        dir
    })
}

/// How a program is run.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// rseq with glibc's registration.
    Rseq,
    /// `RSEQ_ALLOC_FORCE_FALLBACK=1`.
    ForcedFallback,
    /// Under `valgrind --tool=none`: no rseq at all.
    Valgrind,
    /// Without the library: glibc's own malloc, for comparison.
    Glibc,
}

/// The modes every program runs in.
pub const MODES: [Mode; 3] = [Mode::Rseq, Mode::ForcedFallback, Mode::Valgrind];

/// Runs `program args` with the library preloaded (unless `mode` is
/// [`Mode::Glibc`]) and `env` set, killing it after `limit`; returns how it
/// ended, whatever that was.
pub fn spawn(
    mode: Mode,
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
    stdin: Option<&[u8]>,
    limit: Duration,
) -> Output {
    let mut command = match mode {
        Mode::Valgrind => {
            let mut c = Command::new("valgrind");
            // Fair scheduling: valgrind runs one thread at a time, and by
            // default the thread that just released a lock usually takes it
            // again, so a thread that loops on a lock (`fflush(NULL)`)
            // starves the others for good.
            c.args([
                "--tool=none",
                "--quiet",
                "--fair-sched=yes",
                "--trace-children=yes",
                "--error-exitcode=97",
                program,
            ]);
            c
        }
        _ => Command::new(program),
    };
    command.args(args).envs(env.iter().copied()).current_dir(build_dir());
    if !matches!(mode, Mode::Glibc) {
        command.env("LD_PRELOAD", library());
    }
    if let Mode::ForcedFallback = mode {
        command.env("RSEQ_ALLOC_FORCE_FALLBACK", "1");
    }
    let (output, hung) = crate::output_within(&mut command, stdin, limit);
    assert!(!hung, "{program} {args:?} ({mode:?}) did not finish within {limit:?}: hung");
    output
}

/// As [`spawn`] without extra environment, and panics (with the program's
/// output) unless it exits 0.
pub fn run(mode: Mode, program: &str, args: &[&str], stdin: Option<&[u8]>, limit: Duration) -> Output {
    let output = spawn(mode, program, args, &[], stdin, limit);
    assert!(
        output.status.success(),
        "{program} {args:?} ({mode:?}) failed: {}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}
