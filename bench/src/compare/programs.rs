//! The programs a compare runs, built before it starts: our library
//! (`librseq_alloc.so`, with cargo), and with gcc the C workloads, the
//! launcher that measures them, the layout twin and the misuse probes.

use std::path::Path;
use std::process::Command;

use super::real::Inputs;

/// The programs a run needs, and the real programs' inputs.
#[derive(Clone, Copy, Debug)]
pub struct Programs<'a> {
    /// `bench/c/workloads.c`.
    pub workloads: &'a Path,
    /// `bench/c/measure.c`: runs the workload in a fresh process and reports
    /// its own rusage (a child of the harness would count the harness's
    /// size in its peak RSS: see that file).
    pub measure: &'a Path,
    /// The real programs' inputs, when any real program runs.
    pub inputs: Option<&'a Inputs>,
}

/// Builds `librseq_alloc.so` (release) in `workspace`.
pub fn build_ours(workspace: &Path) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(cargo)
        .args(["build", "--release", "-p", "rseq-alloc-preload"])
        .current_dir(workspace)
        .status()
        .map_err(|e| format!("cargo: {e}"))?;
    if built.success() { Ok(()) } else { Err("building librseq_alloc.so failed".into()) }
}

/// Compiles the C program `source` to `binary` with gcc.
pub fn compile_c(source: &Path, binary: &Path) -> Result<(), String> {
    gcc(&["-O2", "-pthread"], source, binary)
}

/// Compiles `bench/c/layout_twin.c` to the shared library `library`: no
/// start files, no code (see the file).
pub fn compile_twin(source: &Path, library: &Path) -> Result<(), String> {
    gcc(&["-shared", "-fPIC", "-nostdlib"], source, library)
}

fn gcc(flags: &[&str], source: &Path, out: &Path) -> Result<(), String> {
    let compiled =
        Command::new("gcc").args(flags).arg("-o").arg(out).arg(source).status().map_err(|e| format!("gcc: {e}"))?;
    if compiled.success() { Ok(()) } else { Err(format!("compiling {} failed", source.display())) }
}
