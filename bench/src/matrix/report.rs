//! From samples to `matrix.md` and `matrix.json`: per cell and allocator
//! the medians over rounds of ns/op, page faults and system time; per cell
//! the ratio ours / each clean peer round by round, its median, and the
//! best peer (the one that ratio is largest for), as `compare` judges.

use super::cells::{Cell, Pattern};
use super::running::{CellRuns, Sample};
use super::{BUDGET_NS, Options, QUICK_BUDGET_NS};
use crate::timing::median;

/// The median of `values`; NaN when there are none.
fn median_of(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() { f64::NAN } else { median(&mut v) }
}

/// One allocator's figures in one cell.
struct Entry {
    ns: f64,
    faults: f64,
    sys_ms: f64,
    failures: usize,
}

fn entry(samples: &[Result<Sample, String>]) -> Entry {
    let ok = || samples.iter().flatten();
    Entry {
        ns: median_of(ok().map(Sample::ns_per_op)),
        faults: median_of(ok().map(|s| s.faults() as f64)),
        sys_ms: median_of(ok().map(|s| s.sys_us as f64 / 1000.0)),
        failures: samples.iter().filter(|s| s.is_err()).count(),
    }
}

/// Ours (index 0) against the best clean peer: its index, and the median,
/// min and max of the per-round ratio ours / it. Peers with a failed
/// sample are not judged against; rounds where ours failed are skipped.
fn versus_best(runs: &CellRuns) -> Option<(usize, (f64, f64, f64))> {
    let ours = &runs[0];
    let mut best: Option<(usize, (f64, f64, f64))> = None;
    for (p, peer) in runs.iter().enumerate().skip(1) {
        if peer.is_empty() || peer.iter().any(Result::is_err) {
            continue;
        }
        let mut ratios: Vec<f64> = ours
            .iter()
            .zip(peer)
            .filter_map(|(a, b)| Some(a.as_ref().ok()?.ns_per_op() / b.as_ref().ok()?.ns_per_op()))
            .collect();
        if ratios.is_empty() {
            continue;
        }
        let m = median(&mut ratios);
        let spread = (m, ratios[0], ratios[ratios.len() - 1]);
        if best.is_none_or(|(_, (b, _, _))| m > b) {
            best = Some((p, spread));
        }
    }
    best
}

fn ns(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

fn count(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else if v < 10_000.0 {
        format!("{v:.0}")
    } else if v < 1e6 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{:.2}M", v / 1e6)
    }
}

fn millis(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

/// An entry's text: its figure, or what failed.
fn with_failures(e: &Entry, runs: usize, figure: String) -> String {
    match e.failures {
        0 => figure,
        f if f == runs => "FAIL".into(),
        f => format!("{figure} ({f} failed)"),
    }
}

/// The verdict of a cell and its text.
fn verdict(runs: &CellRuns) -> (Option<bool>, String, String) {
    if runs[0].iter().any(Result::is_err) {
        return (Some(false), "–".into(), "FAIL (ours failed)".into());
    }
    match versus_best(runs) {
        Some((_, (m, lo, hi))) => {
            let text = if runs[0].len() > 1 { format!("{m:.2} ({lo:.2}–{hi:.2})") } else { format!("{m:.2}") };
            (Some(m <= 1.0), text, if m <= 1.0 { "meets".into() } else { "slower".into() })
        }
        None => (None, "–".into(), "no clean peer".into()),
    }
}

/// The Markdown report.
pub fn markdown(cells: &[Cell], results: &[CellRuns], allocators: &[&str], options: &Options) -> String {
    let rounds = options.rounds;
    let budget = if options.quick { QUICK_BUDGET_NS } else { BUDGET_NS } / 1e6;
    let mut out = String::from("# The Rust allocator matrix\n\n");
    out += &format!(
        "{} cells × {} allocators, {rounds} round{}, about {budget} ms of timed work per cell{} \
         (`cargo bench -p rseq-alloc-bench --bench matrix`; method in `docs/measuring.md`).\n\n",
        cells.len(),
        allocators.len(),
        if rounds == 1 { "" } else { "s" },
        if options.quick { ", `--quick`" } else { "" },
    );
    out += "Each cell ran in a fresh process per allocator and round, the allocator as the program's \
            `#[global_allocator]`, allocators in a shuffled order each round; timed after an untimed \
            warm-up, its fixed work repeated until the repetitions took half the time above (the figures \
            are per repetition). Figures are medians over rounds: ns per op (timed with `Instant`), page faults \
            (minor + major) and system ms (`getrusage` deltas around the timed part). \
            ours / best peer is the median of the per-round ratios ours / peer, for the peer it is \
            largest for; > 1 means we are slower; the target is ≤ 1.00. The machine is shared and \
            noisy: compare figures within this run only.\n\n";
    if options.quick || rounds == 1 {
        out += "**Indicative only:** a `--quick` or one-round run's ratios are not a measurement.\n\n";
    }
    let verdicts: Vec<_> = results.iter().map(verdict).collect();
    let meets = verdicts.iter().filter(|v| v.0 == Some(true)).count();
    let failed = results.iter().filter(|r| r[0].iter().any(Result::is_err)).count();
    out += &format!(
        "Ours / best peer ≤ 1.00 in {meets} of {} cells; slower in {}; ours failed in {failed}.\n\n",
        cells.len(),
        verdicts.iter().filter(|v| v.0 == Some(false)).count() - failed,
    );
    let mut worst: Vec<(f64, &str, &str)> = cells
        .iter()
        .zip(results)
        .filter_map(|(c, r)| versus_best(r).map(|(p, (m, _, _))| (m, c.name.as_str(), allocators[p])))
        .filter(|&(m, _, _)| m > 2.0)
        .collect();
    worst.sort_by(|a, b| b.0.total_cmp(&a.0));
    if !worst.is_empty() {
        out += "More than twice the best peer's time:\n\n";
        for (m, cell, peer) in worst {
            out += &format!("- `{cell}`: {m:.2} × {peer}\n");
        }
        out += "\n";
    }
    let header = |first: &str, extra: &str| {
        let mut h = format!("| {first} |");
        let mut rule = String::from("|---|");
        for a in allocators {
            h += &format!(" {a} |");
            rule += "---:|";
        }
        if !extra.is_empty() {
            h += extra;
            rule += "---:|---|---|";
        }
        format!("{h}\n{rule}\n")
    };
    for pattern in Pattern::ALL {
        let rows: Vec<usize> = (0..cells.len()).filter(|&i| cells[i].pattern == pattern).collect();
        if rows.is_empty() {
            continue;
        }
        out += &format!("## {}\n\n{}.\n\nns per op:\n\n", pattern.name(), pattern.description());
        out += &header("cell", " ours / best peer | best peer | verdict |");
        for &i in &rows {
            let runs = &results[i];
            out += &format!("| `{}` |", cells[i].name);
            for samples in runs {
                let e = entry(samples);
                out += &format!(" {} |", with_failures(&e, samples.len(), ns(e.ns)));
            }
            let (_, ratio, text) = &verdicts[i];
            let best = versus_best(runs).map_or("–", |(p, _)| allocators[p]);
            out += &format!(" {ratio} | {best} | {text} |\n");
        }
        out += "\npage faults / system ms:\n\n";
        out += &header("cell", "");
        for &i in &rows {
            out += &format!("| `{}` |", cells[i].name);
            for samples in &results[i] {
                let e = entry(samples);
                out += &format!(
                    " {} |",
                    with_failures(&e, samples.len(), format!("{} / {}", count(e.faults), millis(e.sys_ms)))
                );
            }
            out += "\n";
        }
        out += "\n";
    }
    let failures: Vec<String> = cells
        .iter()
        .zip(results)
        .flat_map(|(c, runs)| {
            runs.iter().enumerate().flat_map(move |(a, samples)| {
                samples.iter().enumerate().filter_map(move |(round, s)| {
                    s.as_ref()
                        .err()
                        .map(|e| format!("- `{}` under {} (round {}): {e}\n", c.name, allocators[a], round + 1))
                })
            })
        })
        .collect();
    if !failures.is_empty() {
        out += "## Failed samples\n\n";
        out += &failures.concat();
    }
    out
}

/// Quotes `s` for JSON (quotes become apostrophes, as in `compare`).
fn quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "/").replace('"', "'").replace('\n', " "))
}

/// Every sample as JSON: cells one a line group, allocators one a line.
pub fn json(cells: &[Cell], results: &[CellRuns], allocators: &[&str], options: &Options) -> String {
    let names: Vec<String> = allocators.iter().map(|a| quoted(a)).collect();
    let mut out = format!(
        "{{\n  \"quick\": {},\n  \"rounds\": {},\n  \"allocators\": [{}],\n  \"cells\": [",
        options.quick,
        options.rounds,
        names.join(", ")
    );
    for (i, (cell, runs)) in cells.iter().zip(results).enumerate() {
        out += if i == 0 { "\n" } else { ",\n" };
        out += &format!(
            "    {{\"name\": {}, \"pattern\": {}, \"size\": {}, \"count\": {}, \"samples\": {{",
            quoted(&cell.name),
            quoted(cell.pattern.name()),
            cell.size,
            cell.count
        );
        for (a, samples) in runs.iter().enumerate() {
            let list: Vec<String> = samples
                .iter()
                .map(|s| match s {
                    Ok(s) => format!(
                        "{{\"ns_per_op\": {:.3}, \"ops\": {}, \"elapsed_ns\": {}, \"minflt\": {}, \"majflt\": {}, \
                         \"sys_us\": {}, \"user_us\": {}, \"checksum\": {}}}",
                        s.ns_per_op(),
                        s.ops,
                        s.elapsed_ns,
                        s.minflt,
                        s.majflt,
                        s.sys_us,
                        s.user_us,
                        s.checksum
                    ),
                    Err(e) => format!("{{\"error\": {}}}", quoted(e)),
                })
                .collect();
            out +=
                &format!("{}\n      {}: [{}]", if a == 0 { "" } else { "," }, quoted(allocators[a]), list.join(", "));
        }
        out += "\n    }}";
    }
    out += "\n  ]\n}\n";
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(ns: u64) -> Result<Sample, String> {
        Ok(Sample { ops: 1, elapsed_ns: ns, minflt: 0, majflt: 0, sys_us: 0, user_us: 0, checksum: 0 })
    }

    /// The best peer is the one ours / it is largest for, round by round;
    /// a peer with a failed sample is not a best peer.
    #[test]
    fn the_best_peer_is_the_clean_one_with_the_largest_ratio() {
        let runs: CellRuns = vec![
            vec![sample(100), sample(200)],
            vec![sample(100), sample(100)],
            vec![sample(50), sample(100)],
            vec![sample(10), Err("crashed".into())],
        ];
        let (best, (m, lo, hi)) = versus_best(&runs).unwrap();
        assert_eq!(best, 2);
        assert_eq!((m, lo, hi), (2.0, 2.0, 2.0));
        assert_eq!(verdict(&runs).2, "slower");
    }

    #[test]
    fn ours_failing_fails_the_cell() {
        let runs: CellRuns = vec![vec![Err("signal 11".into())], vec![sample(1)]];
        assert_eq!(verdict(&runs).2, "FAIL (ours failed)");
    }
}
