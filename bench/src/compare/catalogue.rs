//! The workloads of `bench/c/workloads.c`: what each measures, how many
//! threads it runs, and which of them the targets judge.

/// A workload of `workloads.c`, and how many threads it runs.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    /// Name, as `workloads.c` knows it.
    pub name: &'static str,
    /// What it measures.
    pub about: &'static str,
    /// Threads per online CPU (0: one thread, pinned).
    pub threads_per_cpu: usize,
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
        self.threads_per_cpu == 0
    }

    /// Threads it runs on `cpus` CPUs, or with `requested` threads if it is
    /// multithreaded (at least two).
    pub fn threads(&self, requested: Option<usize>, cpus: usize) -> usize {
        match self.threads_per_cpu {
            0 => 1,
            per_cpu => requested.unwrap_or(per_cpu * cpus).max(2),
        }
    }
}

/// A workload the targets judge.
const fn benchmark(name: &'static str, about: &'static str, threads_per_cpu: usize) -> Workload {
    Workload { name, about, threads_per_cpu, judged: true, memory_judged: false }
}

/// Every workload.
pub const WORKLOADS: [Workload; 11] = [
    benchmark("tight", "one thread, malloc/free of small sizes", 0),
    benchmark("pareto", "one thread, 200k live blocks of Pareto-like sizes", 0),
    benchmark("larson", "server churn, a fifth of frees cross-thread", 1),
    benchmark("prodcons", "producers allocate, consumers free", 1),
    benchmark("oversub", "8 threads per CPU, tight loops", 8),
    benchmark("generations", "threads exit leaving live objects, 10k generations", 1),
    benchmark("false_sharing", "threads hammer their own small objects", 1),
    benchmark("realloc", "realloc growth from 16 B to 1 MiB", 0),
    benchmark("large", "1-8 MiB blocks, touched and freed", 0),
    benchmark("trim", "512 MiB in 256 B blocks, freed, malloc_trim(0)", 0),
    Workload {
        name: "startup",
        about: "allocates nothing: the allocator's fixed cost (its library, its first pages), under every workload's peak RSS",
        threads_per_cpu: 0,
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
