//! The project's test harness: what the integration tests in `tests/tests/`
//! share.
//!
//! | module | owns |
//! |---|---|
//! | [`stress`] | worker threads moved between CPUs by a migrator and hit by a signal storm |
//! | [`slab`] | a test-owned per-CPU slab driven by rseq-sys's sections, with a live duplicate detector |
//! | [`modes`] | running this test binary again in another rseq mode (own area, valgrind) |
//!
//! Tests never sleep to win a race: they stress, then check invariants that
//! hold only if every critical section was correct.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod modes;
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
