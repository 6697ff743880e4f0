//! The project's test harness: what the integration tests in `tests/tests/`
//! share.
//!
//! | module | owns |
//! |---|---|
//! | [`stress`] | worker threads moved between CPUs by a migrator and hit by a signal storm |
//! | [`slab`] | a test-owned per-CPU slab driven by rseq-sys's sections, with a live duplicate detector |
//! | [`modes`] | running this test binary again in another rseq mode (own area, forced fallback, hardened, valgrind) |
//! | [`preload`] | C programs run with `librseq_alloc.so` preloaded, in each mode, with a time limit |
//!
//! Tests never sleep to win a race: they stress, then check invariants that
//! hold only if every critical section was correct.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod modes;
pub mod preload;
pub mod slab;
pub mod stress;

/// Scales a workload size by `RSEQ_TEST_SCALE` (a percentage, default 100),
/// so slow environments (valgrind) run the same tests smaller.
pub fn scaled(n: usize) -> usize {
    let percent = std::env::var("RSEQ_TEST_SCALE").ok().and_then(|s| s.parse::<usize>().ok()).unwrap_or(100);
    (n * percent / 100).max(1)
}

/// Serialises the tests of one binary that change process-wide state
/// (injected delays, the signal hook).
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sets a flag when dropped, whether its scope returns or unwinds: the flag
/// that a test's helper threads poll to stop. A scope joins its threads
/// before it passes a panic on, so a flag set only on the normal path would
/// turn any failed assertion into a hang.
pub struct SetOnDrop<'a>(pub &'a std::sync::atomic::AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// Runs `work` on a new thread made with `pthread_create` and returns its
/// result. For `fork` children of multithreaded tests: `std::thread::spawn`
/// takes std-internal locks that another thread of the parent may have held
/// at the moment of `fork`, and would then wait forever.
pub fn raw_thread<F: FnOnce() -> T + Send, T: Send>(work: F) -> T {
    struct Job<F, T> {
        work: Option<F>,
        result: Option<T>,
    }
    extern "C" fn run<F: FnOnce() -> T, T>(arg: *mut libc::c_void) -> *mut libc::c_void {
        // SAFETY: `arg` is the `Job` below, alive until pthread_join returns.
        let job = unsafe { &mut *arg.cast::<Job<F, T>>() };
        job.result = job.work.take().map(|f| f());
        std::ptr::null_mut()
    }
    let mut job = Job { work: Some(work), result: None };
    let mut thread: libc::pthread_t = 0;
    // SAFETY: `job` outlives the thread, which is joined before we return.
    unsafe {
        let arg = (&raw mut job).cast::<libc::c_void>();
        assert_eq!(libc::pthread_create(&mut thread, std::ptr::null(), run::<F, T>, arg), 0);
        assert_eq!(libc::pthread_join(thread, std::ptr::null_mut()), 0);
    }
    job.result.expect("thread ran")
}

/// Runs `command` with `stdin` as its input (none: `/dev/null`) and collects
/// its output, killing it if it is still running after `limit`; true beside
/// the output if it had to be killed. The output read until then comes back
/// either way: what a hung run printed is what says where it hung (a
/// process it started may keep the pipes open after the kill, so the
/// readers get a second to finish, and what they have read is taken as it is).
pub fn output_within(
    command: &mut std::process::Command,
    stdin: Option<&[u8]>,
    limit: std::time::Duration,
) -> (std::process::Output, bool) {
    use std::process::Stdio;
    use std::sync::{Arc, Mutex};
    let reader = |mut pipe: Box<dyn std::io::Read + Send>| {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        let sink = bytes.clone();
        let thread = std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        (thread, bytes)
    };
    let collect = |(thread, bytes): (std::thread::JoinHandle<()>, Arc<Mutex<Vec<u8>>>), hung: bool| {
        if hung {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
            while !thread.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        } else {
            thread.join().unwrap();
        }
        std::mem::take(&mut *bytes.lock().unwrap())
    };
    command.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let input = input.to_vec();
        std::thread::spawn(move || std::io::Write::write_all(&mut pipe, &input));
    }
    let stdout = reader(Box::new(child.stdout.take().unwrap()));
    let stderr = reader(Box::new(child.stderr.take().unwrap()));
    let deadline = std::time::Instant::now() + limit;
    let mut hung = false;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            hung = true;
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let output = std::process::Output { status, stdout: collect(stdout, hung), stderr: collect(stderr, hung) };
    (output, hung)
}

/// Forks; the child runs `work` (with `raw_thread` for any thread it needs)
/// and leaves with `_exit`: 0 if `work` returned true, 1 if it returned false
/// or panicked. Panics in the parent unless the child exited 0.
pub fn fork_and_check(what: &str, work: impl FnOnce() -> bool + std::panic::UnwindSafe) {
    // SAFETY: the child only runs `work` and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // libtest captures this thread's output, and the child's copy of
        // the capture is never printed: report a panic on file 2 itself.
        std::panic::set_hook(Box::new(|info| {
            let message = format!("fork child: {info}\n");
            // SAFETY: writing a live buffer to file descriptor 2.
            unsafe { libc::write(2, message.as_ptr().cast(), message.len()) };
        }));
        let ok = std::panic::catch_unwind(work).unwrap_or(false);
        // SAFETY: leaving the child at once, without running the parent's exit handlers.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "{what}: child status {status:#x}");
}

#[cfg(test)]
mod tests {
    /// A run killed at its limit still comes back, with what it printed,
    /// even when a process it started keeps its pipes open.
    #[test]
    fn a_hung_run_returns_with_its_output() {
        let mut command = std::process::Command::new("sh");
        command.args(["-c", "sleep 60 & echo started; exec sleep 60"]);
        let (output, hung) = super::output_within(&mut command, None, std::time::Duration::from_millis(300));
        assert!(hung, "the run was not killed");
        assert_eq!(String::from_utf8_lossy(&output.stdout), "started\n");
    }
}
