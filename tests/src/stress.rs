//! Worker threads under the conditions that make critical sections abort:
//! a migrator thread that keeps moving workers between CPUs with
//! `sched_setaffinity`, and a signal storm (`SIGUSR1` via `tgkill`) whose
//! handler runs a test-chosen hook, itself usually a critical section.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};

/// What to throw at the workers.
#[derive(Clone, Copy, Debug)]
pub struct Conditions {
    /// Move workers between CPUs while they run.
    pub migrate: bool,
    /// Send them signals while they run.
    pub signals: bool,
}

impl Conditions {
    /// Migration and signals.
    pub const HOSTILE: Conditions = Conditions { migrate: true, signals: true };
}

/// 6 × the number of online CPUs, the kernel selftests' choice.
pub fn default_threads() -> usize {
    6 * std::thread::available_parallelism().map_or(1, |n| n.get())
}

static SIGNAL_HOOK: AtomicUsize = AtomicUsize::new(0);
static SIGNALS_HANDLED: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_sigusr1(_: libc::c_int) {
    let errno = errno();
    let hook = SIGNAL_HOOK.load(Ordering::Acquire);
    if hook != 0 {
        // SAFETY: only `set_signal_hook` stores here, and it stores a `fn()`.
        let hook: fn() = unsafe { std::mem::transmute::<usize, fn()>(hook) };
        hook();
    }
    SIGNALS_HANDLED.fetch_add(1, Ordering::Relaxed);
    set_errno(errno);
}

fn errno() -> i32 {
    // SAFETY: errno is thread-local and always addressable.
    unsafe { *libc::__errno_location() }
}

fn set_errno(value: i32) {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = value };
}

/// Runs `hook` inside every `SIGUSR1` handler from now on (it must be
/// async-signal-safe). Returns how many signals had been handled so far.
pub fn set_signal_hook(hook: Option<fn()>) -> u64 {
    install_handler();
    SIGNAL_HOOK.store(hook.map_or(0, |f| f as usize), Ordering::Release);
    SIGNALS_HANDLED.load(Ordering::Relaxed)
}

/// Signals handled since start.
pub fn signals_handled() -> u64 {
    SIGNALS_HANDLED.load(Ordering::Relaxed)
}

fn install_handler() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        // SAFETY: a zeroed sigaction is a valid starting point; we set the
        // handler and SA_RESTART, and the handler is async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigusr1 as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            assert_eq!(libc::sigaction(libc::SIGUSR1, &action, std::ptr::null_mut()), 0);
        }
    });
}

/// The CPUs this process may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is empty; sched_getaffinity fills it.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set), 0);
        set
    };
    // SAFETY: CPU_ISSET reads the set within CPU_SETSIZE.
    (0..libc::CPU_SETSIZE as usize).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) }).collect()
}

/// Pins thread `tid` (0: the caller) to the CPUs in `cpus`; false if the kernel refused.
pub fn pin(tid: i32, cpus: &[usize]) -> bool {
    // SAFETY: building a cpu_set_t from valid CPU numbers, then applying it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// Pins the calling thread to the CPU it runs on now; the CPU, or `None`
/// if that failed.
pub fn pin_to_current_cpu() -> Option<usize> {
    // SAFETY: no preconditions.
    let cpu = usize::try_from(unsafe { libc::sched_getcpu() }).ok()?;
    pin(0, &[cpu]).then_some(cpu)
}

/// A tiny deterministic generator (xorshift), so runs differ by seed only.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (any value).
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next value.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// What a stress run observed.
#[derive(Clone, Copy, Debug, Default)]
pub struct Report {
    /// `sched_setaffinity` moves that succeeded.
    pub migrations: u64,
    /// Signals delivered to workers (by `tgkill`).
    pub signals_sent: u64,
}

/// A worker's view of the run: its index, and whether the hostile conditions
/// have hit hard enough yet.
pub struct Worker<'a> {
    /// 0-based worker number.
    pub index: usize,
    conditions: Conditions,
    migrations: &'a AtomicU64,
    signals: &'a AtomicU64,
    cpus: usize,
}

impl Worker<'_> {
    /// Whether at least [`MIN_HITS`] (scaled) migrations and signals have
    /// landed, for the conditions asked: workers keep going until then, so a
    /// run cannot pass merely because it ended before the storm started.
    pub fn hit_enough(&self) -> bool {
        let min = min_hits();
        let cpus = self.cpus;
        (!self.conditions.migrate || cpus < 2 || self.migrations.load(Ordering::Relaxed) >= min)
            && (!self.conditions.signals || self.signals.load(Ordering::Relaxed) >= min)
    }

    /// Whether to run iteration `i` of a loop meant to run `iterations` times
    /// under the run's conditions.
    pub fn keep_going(&self, i: usize, iterations: usize) -> bool {
        i < iterations || !i.is_multiple_of(64) || !self.hit_enough()
    }
}

/// Migrations and signals each run must see before its workers may stop.
pub const MIN_HITS: usize = 300;

/// [`MIN_HITS`], unless `RSEQ_TEST_MIN_HITS` says otherwise (runs without
/// rseq, where no section can be hit, set it to 0: under valgrind the storm
/// threads rarely get the CPU and the wait would be long and pointless).
fn min_hits() -> u64 {
    static MIN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *MIN.get_or_init(|| {
        std::env::var("RSEQ_TEST_MIN_HITS").ok().and_then(|s| s.parse().ok()).unwrap_or(MIN_HITS as u64)
    })
}

/// Marks a worker finished when dropped, however its work ended: the last
/// one out ends the run.
struct Finished<'a> {
    slot: &'a AtomicI32,
    running: &'a AtomicUsize,
    done: &'a AtomicBool,
}

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.slot.store(0, Ordering::Release);
        if self.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.store(true, Ordering::Release);
        }
    }
}

/// Runs `work(worker)` on `threads` threads under `conditions`, and returns
/// when every worker has finished. The migrator and the signal storm run until
/// then; they yield between actions but never sleep.
pub fn run<F>(threads: usize, conditions: Conditions, work: F) -> Report
where
    F: Fn(&Worker<'_>) + Sync,
{
    if conditions.signals {
        install_handler();
    }
    let tids: Vec<AtomicI32> = (0..threads).map(|_| AtomicI32::new(0)).collect();
    let running = AtomicUsize::new(threads);
    let done = AtomicBool::new(false);
    let cpus = allowed_cpus();
    let migrations = AtomicU64::new(0);
    let signals = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for (index, slot) in tids.iter().enumerate() {
            let work = &work;
            let running = &running;
            let done = &done;
            let worker = Worker { index, conditions, migrations: &migrations, signals: &signals, cpus: cpus.len() };
            scope.spawn(move || {
                // SAFETY: gettid has no preconditions.
                slot.store(unsafe { libc::gettid() }, Ordering::Release);
                // Counted out on unwind too: a worker that panics must stop
                // the storm, or the scope waits for it forever and the
                // panic becomes a hang.
                let _finished = Finished { slot, running, done };
                work(&worker);
            });
        }
        if conditions.migrate && cpus.len() > 1 {
            let (tids, done, cpus, migrations) = (&tids, &done, &cpus, &migrations);
            scope.spawn(move || {
                let mut rng = Rng::new(1);
                while !done.load(Ordering::Acquire) {
                    let tid = tids[rng.below(tids.len())].load(Ordering::Acquire);
                    if tid != 0 {
                        // Mostly single CPUs, sometimes all of them, so workers also migrate by themselves.
                        let ok =
                            if rng.below(4) == 0 { pin(tid, cpus) } else { pin(tid, &[cpus[rng.below(cpus.len())]]) };
                        if ok {
                            migrations.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    std::thread::yield_now();
                }
            });
        }
        if conditions.signals {
            let (tids, done, signals) = (&tids, &done, &signals);
            scope.spawn(move || {
                let mut rng = Rng::new(2);
                // SAFETY: getpid has no preconditions.
                let pid = unsafe { libc::getpid() };
                while !done.load(Ordering::Acquire) {
                    let tid = tids[rng.below(tids.len())].load(Ordering::Acquire);
                    if tid != 0 {
                        // SAFETY: tgkill to a thread of our own process; a thread
                        // that has just exited makes it fail harmlessly (ESRCH).
                        let sent = unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, libc::SIGUSR1) } == 0;
                        if sent {
                            signals.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    std::thread::yield_now();
                }
            });
        }
    });
    Report { migrations: migrations.into_inner(), signals_sent: signals.into_inner() }
}
