//! The workloads a compare runs: the synthetic ones of
//! `bench/c/workloads.c`, the many-threads runs of the same program, and
//! real programs from Debian packages; what each measures, how many threads
//! it runs, and which of them the targets judge.

/// What runs: a workload of `workloads.c`, or a real program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    /// The workload of that name in `bench/c/workloads.c`.
    Synthetic(&'static str),
    /// A real program (see `real`), by its name there.
    Real(&'static str),
}

/// How many threads a workload runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threads {
    /// One thread, pinned to one CPU.
    Pinned,
    /// This many per online CPU (at least two in all), or `--threads`.
    PerCpu(usize),
    /// Exactly this many, whatever the CPUs and `--threads`.
    Exactly(usize),
    /// Whatever the program runs, on every CPU.
    Program,
}

/// A workload, and how many threads it runs.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    /// Name in reports and in `--workloads`.
    pub name: &'static str,
    /// What it measures.
    pub about: &'static str,
    /// What runs.
    pub program: Program,
    /// Threads.
    pub threads: Threads,
    /// Whether it is a benchmark the targets judge; `startup` is not: it
    /// measures what each allocator costs a program that allocates nothing.
    pub judged: bool,
    /// Whether its peak RSS is judged whatever its heap reaches (memory is
    /// what it measures); otherwise only a heap of 32 MiB or more is.
    pub memory_judged: bool,
}

impl Workload {
    /// Whether it runs one thread, pinned to one CPU.
    pub fn single_thread(&self) -> bool {
        self.threads == Threads::Pinned
    }

    /// Whether cachegrind counts its instructions: the single-thread
    /// synthetic workloads.
    pub fn counted(&self) -> bool {
        self.single_thread() && matches!(self.program, Program::Synthetic(_))
    }

    /// Threads it runs on `cpus` CPUs, `requested` standing in for the
    /// per-CPU default (0 where the program decides).
    pub fn threads(&self, requested: Option<usize>, cpus: usize) -> usize {
        match self.threads {
            Threads::Pinned => 1,
            Threads::PerCpu(per_cpu) => requested.unwrap_or(per_cpu * cpus).max(2),
            Threads::Exactly(n) => n,
            Threads::Program => 0,
        }
    }

    /// The thread count of a many-threads workload.
    pub fn many_threads(&self) -> Option<usize> {
        match (self.program, self.threads) {
            (Program::Synthetic("many_threads"), Threads::Exactly(n)) => Some(n),
            _ => None,
        }
    }
}

/// A synthetic workload the targets judge.
const fn synthetic(name: &'static str, about: &'static str, threads: Threads) -> Workload {
    Workload { name, about, program: Program::Synthetic(name), threads, judged: true, memory_judged: false }
}

/// `many_threads` with `n` threads alive at once: memory is its point.
const fn many(name: &'static str, about: &'static str, n: usize) -> Workload {
    Workload {
        name,
        about,
        program: Program::Synthetic("many_threads"),
        threads: Threads::Exactly(n),
        judged: true,
        memory_judged: true,
    }
}

/// A real program the targets judge.
const fn real(name: &'static str, about: &'static str) -> Workload {
    Workload {
        name,
        about,
        program: Program::Real(name),
        threads: Threads::Program,
        judged: true,
        memory_judged: false,
    }
}

/// Every workload, in the order the report lists them.
pub const WORKLOADS: [Workload; 21] = [
    synthetic("tight", "one thread, malloc/free of small sizes", Threads::Pinned),
    synthetic("pareto", "one thread, 200k live blocks of Pareto-like sizes", Threads::Pinned),
    synthetic("larson", "server churn, a fifth of frees cross-thread", Threads::PerCpu(1)),
    synthetic("prodcons", "producers allocate, consumers free", Threads::PerCpu(1)),
    synthetic("oversub", "8 threads per CPU, tight loops", Threads::PerCpu(8)),
    synthetic("generations", "threads exit leaving live objects, 10k generations", Threads::PerCpu(1)),
    synthetic("false_sharing", "threads hammer their own small objects", Threads::PerCpu(1)),
    synthetic("realloc", "realloc growth from 16 B to 1 MiB", Threads::Pinned),
    synthetic("large", "1-8 MiB blocks, touched and freed", Threads::Pinned),
    synthetic("trim", "512 MiB in 256 B blocks, freed, malloc_trim(0)", Threads::Pinned),
    many("threads-10", "10 threads alive at once, small working sets, bursts", 10),
    many("threads-100", "100 threads alive at once, small working sets, bursts", 100),
    many("threads-1000", "1,000 threads alive at once, small working sets, bursts", 1000),
    many("threads-10000", "10,000 threads alive at once, small working sets, bursts", 10000),
    real("python3", "python3 (PYTHONMALLOC=malloc): JSON round trips, dict and str churn, small objects in 4 threads"),
    real("sqlite3", "sqlite3 in memory: inserts with two indexes, joins, sorts, deletes"),
    real(
        "redis",
        "redis-server under redis-benchmark on loopback: SET, GET, LPUSH, LRANGE_100 of 64 B and 1 KiB, 16 pipelined",
    ),
    real("lua5.4", "lua5.4: tables and strings made and dropped, the collector busy"),
    real("cpp", "a C++ program: std::map, std::string, std::vector churn"),
    real("zstd", "zstd -T2 -6 compressing a generated text file"),
    Workload {
        name: "startup",
        about: "allocates nothing: the allocator's fixed cost (its library, its first pages), under every workload's peak RSS",
        program: Program::Synthetic("startup"),
        threads: Threads::Pinned,
        judged: false,
        memory_judged: false,
    },
];

/// The workload called `name`.
pub fn find(name: &str) -> Option<&'static Workload> {
    WORKLOADS.iter().find(|w| w.name == name)
}

/// Whether the targets judge `workload` (see [`Workload::judged`]).
pub fn judged(workload: &str) -> bool {
    find(workload).is_some_and(|w| w.judged)
}

/// The workloads named in `names`, in catalogue order; all when it is empty.
pub fn selected(names: &[String]) -> impl Iterator<Item = &'static Workload> {
    WORKLOADS.iter().filter(move |w| names.is_empty() || names.iter().any(|n| n == w.name))
}
