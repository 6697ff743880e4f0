//! `compare`: rseq-alloc side by side with glibc, jemalloc, tcmalloc,
//! mimalloc and TBB, each loaded with `LD_PRELOAD`, on the C workloads of
//! `bench/c/workloads.c` (many threads among them) and on real programs
//! from Debian packages.
//!
//! Method (the machine is shared and noisy): in every round each workload
//! runs under every allocator in a shuffled order; per round we take the
//! ratio ours/peer, and report the median ratio with its spread. Wall time
//! comes from the clock, user and system time from `wait4`, called by a
//! small launcher (`bench/c/measure.c`) whose fork is all the workload
//! inherits (Linux counts a process's size before its `exec` in its peak
//! RSS, and a child of the harness would count the harness). Peak RSS is
//! the workload's own VmHWM, read at its exit: `wait4`'s is Linux's
//! approximate count, off by up to 128 KiB per CPU (both are in the JSON).
//! Single-thread workloads are pinned to one CPU. Every run must print the
//! same checksum as the others: a fast wrong answer is a failure.
//!
//! The modules, in the order a compare uses them:
//!
//! | module | owns |
//! |---|---|
//! | `catalogue` | the workloads (synthetic, many threads, real programs), their threads, which are judged |
//! | `peers` | the allocators: ours, glibc, the packaged peers (apt), `--with` builds |
//! | `programs` | building our library and the C programs |
//! | `real` | the real programs: installing them, their inputs, their command lines, redis's driver |
//! | `running` | one run, the shuffled rounds, extra peak runs, wrong answers |
//! | `cachegrind` | instruction counts under valgrind |
//! | `statistics` | samples to rows: medians and ratios to ours |
//! | `report` | the Markdown report and the targets' verdicts |
//! | `json` | `report.json` and `instructions.json` |
//! | `chart` | `chart.svg`, and `threads.svg` of the many-threads workloads |
//! | `elf` | the loaded size of a shared library |

mod cachegrind;
mod catalogue;
mod chart;
mod elf;
mod json;
mod peers;
mod programs;
mod real;
mod report;
mod running;
mod statistics;

pub use cachegrind::{Count, Counts, count_instructions, instructions, valgrind_available};
pub use catalogue::{Program, Threads, WORKLOADS, Workload, judged, selected};
pub use chart::{chart, threads_chart};
pub use elf::loaded_file_kib;
pub use json::{counts_json, json};
pub use peers::{Allocator, GLIBC_OUR_LAYOUT, OURS, is_peer, lineup, peer_names, peers, with_build};
pub use programs::{Programs, build_ours, compile_c, compile_twin};
pub use real::{Inputs, install as install_real, prepare as prepare_real};
pub use report::{
    Measure, Verdict, counts_markdown, header, many_threads_markdown, markdown, rates_markdown, same_layout_markdown,
    targets, verdict_table,
};
pub use running::{Options, RSS_ONLY_MAX_PEAK_KIB, RSS_ONLY_MAX_SECONDS, Results, Sample, online_cpus, run, run_once};
pub use statistics::{Row, Summary, summarize};
