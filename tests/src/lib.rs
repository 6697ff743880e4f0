//! The project's test harness: what the integration tests in `tests/tests/`
//! share.
//!
//! | module | owns |
//! |---|---|
//! | [`stress`] | worker threads moved between CPUs by a migrator and hit by a signal storm |
//! | [`slab`] | a test-owned per-CPU slab driven by rseq-sys's sections, with a live duplicate detector |
//! | [`modes`] | running this test binary again in another rseq mode (own area, valgrind) |
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

/// Forks; the child runs `work` (with `raw_thread` for any thread it needs)
/// and leaves with `_exit`: 0 if `work` returned true, 1 if it returned false
/// or panicked. Panics in the parent unless the child exited 0.
pub fn fork_and_check(what: &str, work: impl FnOnce() -> bool + std::panic::UnwindSafe) {
    // SAFETY: the child only runs `work` and leaves with _exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let ok = std::panic::catch_unwind(work).unwrap_or(false);
        // SAFETY: leaving the child at once, without running the parent's exit handlers.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "{what}: child status {status:#x}");
}
