//! The matrix end to end, kept small: one cell (`pairs/64B`), `--quick`,
//! one round, under every allocator; the report must have the cell's row in
//! both tables, a figure for every allocator and every sample in the JSON.
//! This binary is the matrix itself (the bench's file is a module of it),
//! so the children it spawns are itself.

use std::process::ExitCode;
use std::time::Instant;

#[path = "../benches/matrix.rs"]
#[allow(dead_code)] // The bench's `main`: this file has its own.
mod matrix_bench;

use rseq_alloc_bench::matrix;

fn main() -> ExitCode {
    if matrix::is_child() {
        return matrix_bench::run(&[]);
    }
    options_are_parsed_and_unknown_ones_refused();
    one_cell_under_every_allocator_is_reported();
    ExitCode::SUCCESS
}

fn options_are_parsed_and_unknown_ones_refused() {
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let quick = matrix::parse(&args(&["--bench", "--quick", "--only", "lifo"])).unwrap();
    assert!(quick.quick && quick.rounds == 1 && quick.only == ["lifo"], "{quick:?}");
    assert!(matrix::parse(&args(&["--bench"])).unwrap().rounds > 1);
    let refused = matrix::parse(&args(&["--no-such-option"])).unwrap_err();
    assert!(refused.contains("unknown option --no-such-option"), "{refused}");
    assert!(matrix::parse(&args(&["--rounds", "0"])).is_err());
    println!("matrix: options_are_parsed_and_unknown_ones_refused ... ok");
}

fn one_cell_under_every_allocator_is_reported() {
    let started = Instant::now();
    let out = std::env::temp_dir().join(format!("rseq-alloc-matrix-test-{}", std::process::id()));
    let args: Vec<String> = ["--quick", "--rounds", "1", "--only", "pairs/64B", "--out", out.to_str().unwrap()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert!(matrix_bench::run(&args) == ExitCode::SUCCESS, "the matrix failed");
    let report = std::fs::read_to_string(out.join("matrix.md")).expect("matrix.md");
    let json = std::fs::read_to_string(out.join("matrix.json")).expect("matrix.json");
    std::fs::remove_dir_all(&out).expect("remove the report");
    let rows: Vec<&str> = report.lines().filter(|l| l.starts_with("| `pairs/64B` |")).collect();
    assert_eq!(rows.len(), 2, "the ns and the faults rows:\n{report}");
    for row in &rows {
        assert!(!row.contains("FAIL") && !row.contains('–'), "a failed or missing figure: {row}\n{report}");
    }
    assert!(rows[0].contains("meets") || rows[0].contains("slower"), "no verdict: {}", rows[0]);
    assert!(report.contains("Indicative only"), "{report}");
    assert!(!report.contains("pairs/16B"), "--only let another cell through:\n{report}");
    for allocator in ["rseq-alloc", "system", "mimalloc", "jemalloc", "snmalloc", "rpmalloc", "tcmalloc"] {
        assert!(report.contains(&format!(" {allocator} |")), "{allocator} has no column:\n{report}");
        assert!(json.contains(&format!("\"{allocator}\": [{{\"ns_per_op\"")), "{allocator}'s sample:\n{json}");
    }
    println!("matrix: one_cell_under_every_allocator_is_reported ... ok ({:.1} s)", started.elapsed().as_secs_f64());
}
