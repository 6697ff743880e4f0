#![cfg(not(rseq_alloc_loom))]
//! rseq-sys under preemption, migration, signals and injected delays, in
//! whichever mode this process runs; `suite_*` tests run the whole file again
//! with our own registration and under valgrind. One binary for the whole
//! crate's contract on purpose: each rerun in another mode then covers all of it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use rseq_alloc_tests::modes::{self, Expected};
use rseq_alloc_tests::slab::{Ledger, TestSlab};
use rseq_alloc_tests::stress::{self, Conditions, Rng};
use rseq_alloc_tests::{exclusive, scaled};
use rseq_sys::{ByCpuId, ByMmCid, CpuIndex, Miss, Mode};

/// Whether this run should have working critical sections.
fn rseq_expected() -> bool {
    modes::expected() != Some(Expected::Unavailable)
}

/// Registers the calling thread, asserting the outcome the mode implies.
fn register() -> bool {
    let registered = rseq_sys::register_current_thread().is_ok();
    assert_eq!(registered, rseq_expected(), "registration in mode {}", rseq_sys::mode());
    registered
}

/// Injected delays for the duration of a test.
struct Delays;

impl Delays {
    fn inside_sections(loops: u32) -> Delays {
        const { assert!(rseq_sys::inject::ENABLED, "tests are built with rseq-sys/inject") };
        rseq_sys::inject::set_delay(1, loops / 4);
        rseq_sys::inject::set_delay(2, loops / 4);
        rseq_sys::inject::set_delay(3, loops);
        rseq_sys::inject::set_delay(4, loops / 4);
        rseq_sys::inject::set_delay(5, loops / 4);
        Delays
    }
}

impl Drop for Delays {
    fn drop(&mut self) {
        for point in 1..rseq_sys::inject::POINTS {
            rseq_sys::inject::set_delay(point, 0);
        }
    }
}

#[test]
fn mode_is_the_one_the_environment_implies() {
    let mode = rseq_sys::mode();
    eprintln!("mode: {mode}; features: {:?}; possible CPUs: {}", rseq_sys::features(), rseq_sys::possible_cpus());
    match modes::expected() {
        Some(Expected::GlibcArea) => assert_eq!(mode, Mode::GlibcArea),
        Some(Expected::OwnArea) => assert_eq!(mode, Mode::OwnArea),
        Some(Expected::Unavailable) => assert!(!mode.is_rseq(), "{mode}"),
        Some(Expected::ForcedFallback) => assert!(mode.is_rseq(), "{mode}"),
        None => {
            // SAFETY: returns a static NUL-terminated string.
            let version = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) }.to_string_lossy();
            let (major, minor) = version.split_once('.').expect("glibc version");
            let glibc_registers = (major.parse::<u32>().unwrap(), minor.parse::<u32>().unwrap()) >= (2, 35)
                && !std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("rseq=0"));
            if glibc_registers {
                assert_eq!(mode, Mode::GlibcArea);
            }
        }
    }
}

#[test]
fn cpu_index_follows_the_thread_to_each_cpu() {
    let _serial = exclusive();
    std::thread::spawn(|| {
        if !register() {
            assert_eq!(rseq_sys::current_index::<ByCpuId>(), None);
            return;
        }
        for cpu in stress::allowed_cpus() {
            assert!(stress::pin(0, &[cpu]));
            // SAFETY: sched_getcpu has no preconditions.
            let actual = unsafe { libc::sched_getcpu() };
            assert_eq!(actual, cpu as i32, "pinned to {cpu}");
            assert_eq!(rseq_sys::current_index::<ByCpuId>(), Some(cpu as u32));
            if rseq_sys::features().has_mm_cid() {
                let cid = rseq_sys::current_index::<ByMmCid>().expect("mm_cid");
                assert!(cid < rseq_sys::possible_cpus());
            }
        }
    })
    .join()
    .unwrap();
}

// ---------------------------------------------------------------------------
// Per-CPU counters (load_add_store).

const COUNTER_SHIFT: u32 = 6;
static COUNTERS: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static HOOK_ADDS: AtomicU64 = AtomicU64::new(0);

/// One increment of this CPU's counter, registering the thread if needed.
fn add_one<I: CpuIndex>(counters: *mut u8) -> Result<(), Miss> {
    loop {
        let Some(offset) = rseq_sys::area_offset() else {
            // Undecided yet (e.g. in a fork child, if no thread decided before
            // the fork): registering decides the mode.
            if rseq_sys::register_current_thread().is_ok() {
                continue;
            }
            return Err(Miss::NoCpu);
        };
        // SAFETY: `counters` holds `possible_cpus() << COUNTER_SHIFT` bytes, touched only by sections.
        match unsafe { rseq_sys::percpu_add::<I, COUNTER_SHIFT>(offset, counters, rseq_sys::possible_cpus(), 1) } {
            Err(Miss::NoCpu) if rseq_sys::register_current_thread().is_ok() => continue,
            result => return result,
        }
    }
}

fn increment_in_signal_handler<I: CpuIndex>() {
    let counters = COUNTERS.load(Ordering::Acquire);
    if !counters.is_null() && add_one::<I>(counters).is_ok() {
        HOOK_ADDS.fetch_add(1, Ordering::Relaxed);
    }
}

fn counters_sum_exactly<I: CpuIndex>() {
    let _serial = exclusive();
    let threads = stress::default_threads();
    let per_thread = scaled(60_000);
    let mut counters = vec![0u64; (rseq_sys::possible_cpus() as usize) << (COUNTER_SHIFT - 3)];
    COUNTERS.store(counters.as_mut_ptr().cast(), Ordering::Release);
    HOOK_ADDS.store(0, Ordering::Relaxed);
    stress::set_signal_hook(Some(increment_in_signal_handler::<I>));
    let aborts_before = rseq_sys::aborts();
    let delays = Delays::inside_sections(2_000);
    let failures = AtomicU64::new(0);
    let worker_adds = AtomicU64::new(0);
    let report = stress::run(threads, Conditions::HOSTILE, |worker| {
        let rseq = register();
        let mut i = 0;
        while worker.keep_going(i, per_thread) {
            i += 1;
            match add_one::<I>(COUNTERS.load(Ordering::Relaxed)) {
                Ok(()) => {
                    worker_adds.fetch_add(1, Ordering::Relaxed);
                }
                Err(Miss::NoCpu) if !rseq => {}
                Err(miss) => {
                    failures.fetch_add(1, Ordering::Relaxed);
                    panic!("increment failed: {miss:?}");
                }
            }
        }
    });
    drop(delays);
    stress::set_signal_hook(None);
    COUNTERS.store(std::ptr::null_mut(), Ordering::Release);
    let aborts = rseq_sys::aborts() - aborts_before;
    let sum: u64 = counters.iter().sum();
    let hook_adds = HOOK_ADDS.load(Ordering::Relaxed);
    eprintln!("{report:?}; handler increments {hook_adds}; aborts {aborts}; sum {sum}");
    assert_eq!(failures.load(Ordering::Relaxed), 0);
    if rseq_expected() {
        assert!(worker_adds.load(Ordering::Relaxed) >= (threads * per_thread) as u64);
        assert_eq!(sum, worker_adds.load(Ordering::Relaxed) + hook_adds, "per-CPU sums must add up exactly");
        assert!(aborts > 0, "injected delays must cause aborts, and the abort path must retry");
    } else {
        assert_eq!(sum, 0, "no section may commit without rseq");
        assert_eq!(aborts, 0);
    }
}

#[test]
fn counters_sum_exactly_by_cpu_id() {
    counters_sum_exactly::<ByCpuId>();
}

#[test]
fn counters_sum_exactly_by_mm_cid() {
    if rseq_sys::mode().is_rseq() && !rseq_sys::features().has_mm_cid() {
        eprintln!("kernel does not fill mm_cid; skipped");
        return;
    }
    counters_sum_exactly::<ByMmCid>();
}

// ---------------------------------------------------------------------------
// A per-CPU slab: push, pop and their batch forms conserve every token.

const CLASSES: usize = 2;
static SLAB: AtomicPtr<()> = AtomicPtr::new(std::ptr::null_mut());
static LEDGER: AtomicPtr<Ledger> = AtomicPtr::new(std::ptr::null_mut());
static PARKED: [AtomicUsize; 4096] = [const { AtomicUsize::new(0) }; 4096];
static PARKED_LEN: AtomicUsize = AtomicUsize::new(0);

fn class_of(token: usize) -> usize {
    (token >> 4) % CLASSES
}

/// In a signal handler: take a token of class 0 and put it back; if it does
/// not fit back (we migrated to a full CPU), park it where the final count finds it.
fn pop_push_in_signal_handler<I: CpuIndex>() {
    let slab = SLAB.load(Ordering::Acquire);
    let ledger = LEDGER.load(Ordering::Acquire);
    if slab.is_null() || ledger.is_null() {
        return;
    }
    // SAFETY: the test publishes both before signals start and clears them after the workers are joined.
    let (slab, ledger) = unsafe { (&*slab.cast::<TestSlab<I>>(), &*ledger) };
    if let Ok(token) = slab.pop(0) {
        ledger.take(token);
        ledger.give(token);
        if slab.push(0, token).is_err() {
            PARKED[PARKED_LEN.fetch_add(1, Ordering::AcqRel)].store(token, Ordering::Release);
        }
    }
}

fn slab_conserves_tokens<I: CpuIndex>(drain: bool) {
    let _serial = exclusive();
    let slab = TestSlab::<I>::new(CLASSES, 32);
    let tokens = (slab.capacity() * CLASSES * stress::allowed_cpus().len()).min(PARKED.len());
    let ledger = Ledger::new(tokens);
    let pools: [Mutex<Vec<usize>>; CLASSES] = [const { Mutex::new(Vec::new()) }; CLASSES];
    for token in ledger.tokens() {
        ledger.give(token);
        pools[class_of(token)].lock().unwrap().push(token);
    }
    SLAB.store((&raw const slab).cast_mut().cast(), Ordering::Release);
    LEDGER.store((&raw const ledger).cast_mut(), Ordering::Release);
    PARKED_LEN.store(0, Ordering::Relaxed);
    stress::set_signal_hook(Some(pop_push_in_signal_handler::<I>));
    let delays = Delays::inside_sections(500);
    let workers = stress::default_threads();
    let iterations = scaled(20_000);
    let finished = AtomicUsize::new(0);
    let drains = AtomicUsize::new(0);
    let take_from_pool = |class: usize| -> Option<usize> {
        let token = pools[class].lock().unwrap().pop()?;
        ledger.take(token);
        Some(token)
    };
    let wakes = AtomicUsize::new(0);
    let put_back = |class: usize, token: usize| {
        ledger.give(token);
        let mut pushed = slab.push(class, token);
        if pushed == Err(Miss::Exhausted) && slab.wake(class) == Ok(true) {
            wakes.fetch_add(1, Ordering::Relaxed);
            pushed = slab.push(class, token);
        }
        match pushed {
            Ok(()) => {}
            Err(Miss::Exhausted | Miss::Stopped) => pools[class].lock().unwrap().push(token),
            Err(Miss::NoCpu) => {
                assert!(!rseq_expected(), "push lost its CPU");
                pools[class].lock().unwrap().push(token);
            }
            Err(Miss::Repeated) => panic!("token {token} was pushed twice in a row"),
        }
    };
    let report = stress::run(workers + usize::from(drain), Conditions::HOSTILE, |worker| {
        let rseq = register();
        if drain && worker.index == workers {
            // The remote side: stop, fence, empty and restart CPUs while the workers run.
            let mut rng = Rng::new(99);
            while finished.load(Ordering::Acquire) < workers {
                let cpu = rng.below(slab.ncpus() as usize) as u32;
                for token in slab.drain(cpu, rseq) {
                    pools[class_of(token)].lock().unwrap().push(token);
                }
                drains.fetch_add(1, Ordering::Relaxed);
                std::thread::yield_now();
            }
            return;
        }
        let mut rng = Rng::new(worker.index as u64);
        let mut batch = [0usize; 8];
        let mut i = 0;
        while worker.keep_going(i, iterations) {
            i += 1;
            let class = rng.below(CLASSES);
            if i % 16 == 0 {
                let got = match slab.pop_batch(class, &mut batch) {
                    Ok(n) => n,
                    Err(Miss::NoCpu) if !rseq => 0,
                    Err(Miss::NoCpu) => panic!("batch pop lost its CPU"),
                    Err(_) => 0,
                };
                for &token in &batch[..got] {
                    ledger.take(token);
                    assert_eq!(class_of(token), class, "token from the wrong class");
                }
                for &token in &batch[..got] {
                    ledger.give(token);
                }
                let pushed = if got == 0 { 0 } else { slab.push_batch(class, &batch[..got]).unwrap_or(0) };
                for &token in &batch[pushed..got] {
                    ledger.take(token);
                    put_back(class, token);
                }
                continue;
            }
            let token = match slab.pop(class) {
                Ok(token) => {
                    ledger.take(token);
                    token
                }
                Err(Miss::NoCpu) if rseq => panic!("pop lost its CPU"),
                Err(_) => match take_from_pool(class) {
                    Some(token) => token,
                    None => continue,
                },
            };
            assert_eq!(class_of(token), class, "token from the wrong class");
            put_back(class, token);
        }
        finished.fetch_add(1, Ordering::AcqRel);
    });
    drop(delays);
    stress::set_signal_hook(None);
    SLAB.store(std::ptr::null_mut(), Ordering::Release);
    LEDGER.store(std::ptr::null_mut(), Ordering::Release);
    let mut found = slab.contents();
    for pool in &pools {
        found.extend(pool.lock().unwrap().iter());
    }
    found.extend(PARKED[..PARKED_LEN.load(Ordering::Acquire)].iter().map(|t| t.load(Ordering::Acquire)));
    eprintln!(
        "{report:?}; {} tokens, {} in the slab at the end, {} drains, {} parked by handlers",
        tokens,
        slab.contents().len(),
        drains.load(Ordering::Relaxed),
        PARKED_LEN.load(Ordering::Relaxed)
    );
    ledger.assert_conserved(found);
    let wakes = wakes.load(Ordering::Relaxed);
    assert!(wakes <= slab.ncpus() as usize * CLASSES, "{wakes} wakes: a class woke twice on one CPU");
    if !rseq_expected() {
        assert!(slab.contents().is_empty(), "no section may commit without rseq");
    } else {
        assert!(wakes > 0, "no class ever woke");
    }
}

#[test]
fn slab_conserves_tokens_by_cpu_id() {
    slab_conserves_tokens::<ByCpuId>(false);
}

#[test]
fn slab_conserves_tokens_by_mm_cid() {
    if rseq_sys::mode().is_rseq() && !rseq_sys::features().has_mm_cid() {
        return;
    }
    slab_conserves_tokens::<ByMmCid>(false);
}

#[test]
fn slab_conserves_tokens_while_cpus_are_drained() {
    slab_conserves_tokens::<ByCpuId>(true);
}

#[test]
fn slab_conserves_tokens_while_mm_cids_are_drained() {
    if rseq_sys::mode().is_rseq() && !rseq_sys::features().has_mm_cid() {
        return;
    }
    slab_conserves_tokens::<ByMmCid>(true);
}

// ---------------------------------------------------------------------------
// The fence, aimed at a section caught between its slot write and its commit.

/// What one drain aimed inside a section found.
#[derive(Debug, PartialEq, Eq)]
enum DrainOutcome {
    /// The push committed before the drainer saw it in progress: no evidence.
    Missed,
    /// Every token exactly once.
    Consistent,
    /// Tokens lost or duplicated.
    Corrupt,
}

/// A worker pinned to one CPU pushes a token with a delay before its commit;
/// a drainer on another CPU waits until it sees the speculative slot write
/// (so the worker is inside the section), then drains that CPU. With the
/// fence the worker's section restarts and the slab stays exact; without it
/// the stale commit resurrects drained items. The delay is short, because a
/// preemption during it restarts the section too and would hide the bug.
fn drain_inside_a_section(fence: bool) -> DrainOutcome {
    let cpus = stress::allowed_cpus();
    let (worker_cpu, drainer_cpu) = (cpus[0], cpus[1]);
    let slab = TestSlab::<ByCpuId>::new(1, 32);
    let ledger = Ledger::new(9);
    let mut tokens = ledger.tokens();
    let last = tokens.next_back().unwrap();
    let prefill: Vec<usize> = tokens.collect();
    let worker_done = std::sync::atomic::AtomicBool::new(false);
    // The drainer thread runs the whole scenario and joins the worker itself:
    // nothing else wakes up on the worker's CPU.
    let (drained, pushed) = std::thread::scope(|scope| {
        let (slab, prefill, worker_done) = (&slab, &prefill, &worker_done);
        scope
            .spawn(move || {
                assert!(stress::pin(0, &[drainer_cpu]));
                register();
                let worker = scope.spawn(move || {
                    assert!(stress::pin(0, &[worker_cpu]));
                    register();
                    assert_eq!(slab.wake(0), Ok(true));
                    for &token in prefill {
                        assert_eq!(slab.push(0, token), Ok(()));
                    }
                    let _delay = Delays::inside_sections(0);
                    rseq_sys::inject::set_delay(3, 2_000_000);
                    let pushed = slab.push(0, last);
                    worker_done.store(true, Ordering::Release);
                    pushed
                });
                let mut caught_inside = false;
                while !worker_done.load(Ordering::Acquire) {
                    if slab.peek_next_slot(worker_cpu as u32, 0) == last {
                        caught_inside = true;
                        break;
                    }
                    std::hint::spin_loop();
                }
                let drained = if caught_inside { Some(slab.drain(worker_cpu as u32, fence)) } else { None };
                (drained, worker.join().unwrap())
            })
            .join()
            .unwrap()
    });
    let Some(drained) = drained else {
        return DrainOutcome::Missed;
    };
    let mut found = slab.contents();
    found.extend(&drained);
    if pushed.is_err() {
        found.push(last);
    }
    found.sort_unstable();
    if found == ledger.tokens().collect::<Vec<_>>() { DrainOutcome::Consistent } else { DrainOutcome::Corrupt }
}

#[test]
fn fence_restarts_a_section_caught_before_its_commit() {
    let _serial = exclusive();
    if !rseq_expected() || stress::allowed_cpus().len() < 2 {
        eprintln!("needs rseq and two CPUs; skipped");
        return;
    }
    let fenced: Vec<DrainOutcome> =
        (0..40).map(|_| drain_inside_a_section(true)).filter(|o| *o != DrainOutcome::Missed).take(5).collect();
    assert!(fenced.len() >= 3, "the drainer never landed inside a section: {fenced:?}");
    assert!(fenced.iter().all(|o| *o == DrainOutcome::Consistent), "fenced drains: {fenced:?}");
    // The same scenario without the fence must go wrong, or this test proves nothing.
    let unfenced: Vec<DrainOutcome> =
        (0..40).map(|_| drain_inside_a_section(false)).take_while(|o| *o != DrainOutcome::Corrupt).collect();
    eprintln!("fenced: {fenced:?}; unfenced runs before corruption was caught: {}", unfenced.len());
    assert!(unfenced.len() < 40, "an unfenced drain inside a section was never caught: the test has no teeth");
}

// ---------------------------------------------------------------------------
// fork, and thread churn.

#[test]
fn fork_child_runs_sections() {
    let _serial = exclusive();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut counters = vec![0u64; (rseq_sys::possible_cpus() as usize) << (COUNTER_SHIFT - 3)];
    let counters_ptr = counters.as_mut_ptr().cast::<u8>() as usize;
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                register();
                while !stop.load(Ordering::Relaxed) {
                    let _ = add_one::<ByCpuId>(counters_ptr as *mut u8);
                }
            });
        }
        let _stop_adders = rseq_alloc_tests::SetOnDrop(&stop);
        // SAFETY: the child only runs sections, spawns threads and exits with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let mut child_counters = vec![0u64; (rseq_sys::possible_cpus() as usize) << (COUNTER_SHIFT - 3)];
            let child_ptr = child_counters.as_mut_ptr().cast::<u8>() as usize;
            let per_thread = 50_000;
            let work = move || (0..per_thread).filter(|_| add_one::<ByCpuId>(child_ptr as *mut u8).is_ok()).count();
            let mut done = work();
            for _ in 0..2 {
                done += rseq_alloc_tests::raw_thread(work);
            }
            let sum: u64 = child_counters.iter().sum();
            let ok = if rseq_expected() { done == 3 * per_thread && sum == done as u64 } else { done == 0 && sum == 0 };
            if !ok {
                eprintln!("fork child: {done} increments done, counters sum to {sum}");
            }
            // SAFETY: leaving the child without running the parent's atexit handlers.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "child failed: status {status:#x}");
    });
}

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize
}

#[test]
fn ten_thousand_short_threads() {
    let _serial = exclusive();
    let threads = scaled(10_000);
    let wave = 32;
    let mut counters = vec![0u64; (rseq_sys::possible_cpus() as usize) << (COUNTER_SHIFT - 3)];
    let counters_ptr = counters.as_mut_ptr().cast::<u8>() as usize;
    let warm = || {
        let handles: Vec<_> = (0..wave).map(|_| std::thread::spawn(|| ())).collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
    };
    warm();
    let before = resident_bytes();
    let registered = AtomicUsize::new(0);
    for _ in 0..threads.div_ceil(wave) {
        std::thread::scope(|scope| {
            for _ in 0..wave {
                scope.spawn(|| {
                    if register() {
                        registered.fetch_add(1, Ordering::Relaxed);
                        for _ in 0..10 {
                            add_one::<ByCpuId>(counters_ptr as *mut u8).unwrap();
                        }
                    }
                });
            }
        });
    }
    let grown = resident_bytes().saturating_sub(before);
    let spawned = threads.div_ceil(wave) * wave;
    let sum: u64 = counters.iter().sum();
    eprintln!(
        "{spawned} threads, {} registered, resident growth {} KiB",
        registered.load(Ordering::Relaxed),
        grown >> 10
    );
    if rseq_expected() {
        assert_eq!(registered.load(Ordering::Relaxed), spawned);
        assert_eq!(sum, 10 * spawned as u64);
    }
    // Under valgrind the process's memory is mostly valgrind's own (its
    // bookkeeping grows with every thread it saw), and nothing registers
    // there anyway.
    if !modes::under_valgrind() {
        assert!(grown < 16 << 20, "resident memory grew by {grown} bytes over {spawned} threads");
    }
}

// ---------------------------------------------------------------------------
// The same file in the other modes.

#[test]
fn suite_own_area() {
    modes::rerun_self("own", &[("GLIBC_TUNABLES", "glibc.pthread.rseq=0")], &[]);
}

#[test]
fn suite_valgrind_without_rseq() {
    modes::rerun_under_valgrind();
}

/// A dormant class misses every section; the first wake on a CPU gives it
/// its slots there and later ones report that it is awake already, from
/// every CPU in turn.
#[test]
fn a_dormant_class_wakes_once_per_cpu() {
    if !register() {
        return;
    }
    let _serial = exclusive();
    let slab = TestSlab::<ByCpuId>::new(2, 4);
    for &cpu in &stress::allowed_cpus() {
        assert!(stress::pin(0, &[cpu]));
        assert_eq!(slab.pop(1), Err(Miss::Exhausted));
        assert_eq!(slab.push(1, 64), Err(Miss::Exhausted), "a dormant class has no room");
        assert_eq!(slab.wake(1), Ok(true));
        assert_eq!(slab.wake(1), Ok(false));
        assert_eq!(slab.pop(1), Err(Miss::Exhausted), "an awake class starts empty");
        assert_eq!(slab.push(1, 64), Ok(()));
        assert_eq!(slab.pop(1), Ok(64));
        assert_eq!(slab.push(0, 64), Err(Miss::Exhausted), "waking one class leaves the others dormant");
    }
    assert!(slab.contents().is_empty());
}

/// A batch section moves at most `MAX_BATCH` items, however many it is
/// given room for: a longer section could be restarted by preemption or
/// signals over and over. The rest is moved by calling again.
#[test]
fn a_batch_moves_at_most_one_section_s_worth() {
    if !register() {
        return;
    }
    let _serial = exclusive();
    let slab = TestSlab::<ByCpuId>::new(1, 3 * rseq_sys::MAX_BATCH);
    let cpu = stress::allowed_cpus()[0];
    assert!(stress::pin(0, &[cpu]));
    assert_eq!(slab.wake(0), Ok(true));
    let items: Vec<usize> = (1..=2 * rseq_sys::MAX_BATCH + 5).map(|i| i * 64).collect();
    let mut pushed = 0;
    while pushed < items.len() {
        let n = slab.push_batch(0, &items[pushed..]).expect("room for all");
        assert!(n <= rseq_sys::MAX_BATCH, "one section pushed {n}");
        pushed += n;
    }
    let mut out = vec![0; items.len()];
    let mut popped = 0;
    while popped < out.len() {
        let n = slab.pop_batch(0, &mut out[popped..]).expect("all there");
        assert!(n <= rseq_sys::MAX_BATCH, "one section popped {n}");
        popped += n;
    }
    out.reverse();
    assert_eq!(out, items, "every item back, top first");
    assert_eq!(slab.pop(0), Err(Miss::Exhausted));
}

/// Push refuses the item already on top (a double free, to the allocator)
/// and leaves the stack as it was; the same item under another is fine.
#[test]
fn push_refuses_the_item_on_top() {
    if !register() {
        return;
    }
    let _serial = exclusive();
    let slab = TestSlab::<ByCpuId>::new(1, 8);
    let cpu = stress::allowed_cpus()[0];
    assert!(stress::pin(0, &[cpu]));
    assert_eq!(slab.wake(0), Ok(true));
    assert_eq!(slab.push(0, 64), Ok(()));
    assert_eq!(slab.push(0, 64), Err(Miss::Repeated));
    assert_eq!(slab.push(0, 128), Ok(()));
    assert_eq!(slab.push(0, 64), Ok(()), "only the top is compared");
    assert_eq!(slab.pop(0), Ok(64));
    assert_eq!(slab.pop(0), Ok(128));
    assert_eq!(slab.pop(0), Ok(64));
    assert_eq!(slab.pop(0), Err(Miss::Exhausted));
}

/// Runs every slab section once on class 0 of `at` and checks that each
/// misses with `miss`.
///
/// # Safety
/// `at` holds the registered area's offset, and its regions are laid out so
/// that every section leaves before it reads past a region's state word.
unsafe fn assert_every_section_misses<const SHIFT: u32>(at: &rseq_sys::slab_layout::Slabs, miss: Miss) {
    let mut out = [0usize; 4];
    // SAFETY: forwarded from the caller; `out` holds 4 items.
    unsafe {
        assert_eq!(rseq_sys::slab_pop::<ByCpuId, SHIFT>(at, 0), Err(miss));
        assert_eq!(rseq_sys::slab_push::<ByCpuId, SHIFT>(at, 0, 64), Err(miss));
        assert_eq!(rseq_sys::slab_pop_batch::<ByCpuId, SHIFT>(at, 0, out.as_mut_ptr(), 4), Err(miss));
        assert_eq!(rseq_sys::slab_push_batch::<ByCpuId, SHIFT>(at, 0, out.as_ptr(), 4), Err(miss));
        assert_eq!(rseq_sys::slab_replace_header::<ByCpuId, SHIFT>(at, 0, 0, 0x0000_0003_0000_0002, 1), Err(miss));
    }
}

#[test]
fn a_fresh_zeroed_slab_is_closed_to_every_section() {
    if !register() {
        return;
    }
    const SHIFT: u32 = 12;
    let ncpus = rseq_sys::possible_cpus();
    // A zero-filled mapping, as the allocator gets it from mmap: state UNINIT.
    let region = vec![0u64; (ncpus as usize) << (SHIFT - 3)];
    let base = region.as_ptr().cast_mut().cast::<u8>();
    let at = rseq_sys::slab_layout::Slabs::new(rseq_sys::area_offset().unwrap(), base, ncpus);
    // SAFETY: the region covers every CPU; with state UNINIT no section reads past the state word.
    unsafe { assert_every_section_misses::<SHIFT>(&at, Miss::Stopped) };
    assert!(region.iter().all(|&w| w == 0), "a closed region must not be written");
}

/// The state word is 64 bits and sections compare all of it: a busy value
/// whose low half reads OPEN (a holder's identity may look so) is closed.
#[test]
fn a_state_open_only_in_its_low_half_is_closed_to_every_section() {
    if !register() {
        return;
    }
    const SHIFT: u32 = 12;
    let ncpus = rseq_sys::possible_cpus();
    let mut region = vec![0u64; (ncpus as usize) << (SHIFT - 3)];
    let busy = 1 << 32 | rseq_sys::slab_layout::STATE_OPEN;
    for state in region.iter_mut().step_by(1 << (SHIFT - 3)) {
        *state = busy;
    }
    let at = rseq_sys::slab_layout::Slabs::new(rseq_sys::area_offset().unwrap(), region.as_mut_ptr().cast(), ncpus);
    // SAFETY: the region covers every CPU; with a busy state no section reads past the state word.
    unsafe { assert_every_section_misses::<SHIFT>(&at, Miss::Stopped) };
    let written = region.iter().enumerate().any(|(i, &w)| w != if i % (1 << (SHIFT - 3)) == 0 { busy } else { 0 });
    assert!(!written, "a closed region must not be written");
}

#[test]
fn a_cpu_index_past_the_regions_is_no_cpu_for_every_section() {
    if !register() {
        return;
    }
    const SHIFT: u32 = 12;
    // An open region, but a count that leaves this CPU (every CPU) out.
    let mut region = vec![0u64; 1 << (SHIFT - 3)];
    region[0] = rseq_sys::slab_layout::STATE_OPEN;
    let at = rseq_sys::slab_layout::Slabs::new(rseq_sys::area_offset().unwrap(), region.as_mut_ptr().cast(), 0);
    // SAFETY: with a count of 0 every section leaves before it reads a region.
    unsafe { assert_every_section_misses::<SHIFT>(&at, Miss::NoCpu) };
    assert!(region[1..].iter().all(|&w| w == 0), "no section may write past the state word");
}
