//! From samples to the report's rows: medians of every metric, ours over
//! each allocator's wall time round by round, and ours over its peak RSS
//! as a ratio of medians over every run.

use std::collections::BTreeMap;

use super::peers::{OURS, is_peer};
use super::running::{Results, Sample};
use crate::timing::median;

/// One workload × allocator row of the report.
#[derive(Clone, Debug)]
pub struct Row {
    /// Allocator.
    pub allocator: &'static str,
    /// Median wall seconds.
    pub wall: f64,
    /// Median user seconds.
    pub user: f64,
    /// Median system seconds.
    pub sys: f64,
    /// Median peak RSS, KiB, over every run (timed or not).
    pub rss_kb: f64,
    /// Runs that peak RSS is the median of.
    pub rss_runs: usize,
    /// Median resident KiB after trim (`trim` only).
    pub after_trim_kb: Option<f64>,
    /// Failed runs.
    pub failures: usize,
    /// Median and spread (min, max) of the per-round ratio ours / this allocator's wall time.
    pub ours_over_this: Option<(f64, f64, f64)>,
    /// Ours / this allocator's median peak RSS, and the spread (min, max)
    /// of the ratio run by run. Medians, not paired rounds: what moves a
    /// peak is where ASLR put libc in that process, not the machine's load
    /// at that moment (see `rss_only` in `running`), so pairing buys nothing
    /// and more runs buy a better median. The spread is worth reading:
    /// glibc's peak moves between runs of one program by enough to shift a
    /// small workload's ratio visibly.
    pub rss_ours_over_this: Option<(f64, f64, f64)>,
}

/// The report's rows, per workload.
pub type Summary = BTreeMap<&'static str, Vec<Row>>;

/// The median of `values`; NaN when there are none.
pub fn median_of(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    if v.is_empty() { f64::NAN } else { median(&mut v) }
}

/// Median, min and max of `ratios`; `None` when there are none.
fn spread(mut ratios: Vec<f64>) -> Option<(f64, f64, f64)> {
    (!ratios.is_empty()).then(|| {
        let m = median(&mut ratios);
        (m, ratios[0], ratios[ratios.len() - 1])
    })
}

fn peak(s: &Sample) -> f64 {
    s.max_rss_kb as f64
}

/// The peers in `rows` whose runs all succeeded: the ones ours is judged
/// and drawn against.
pub fn clean_peers(rows: &[Row]) -> impl Iterator<Item = &Row> {
    rows.iter().filter(|r| is_peer(r.allocator) && r.failures == 0)
}

/// The report's rows, per workload.
pub fn summarize(results: &Results) -> Summary {
    let mut out = BTreeMap::new();
    for (&workload, by_allocator) in results {
        let ours = by_allocator.get(OURS);
        let ours_peaks: Vec<f64> = ours.map_or(Vec::new(), |o| o.iter().flatten().map(peak).collect());
        let mut rows = Vec::new();
        for (&allocator, samples) in by_allocator {
            let ok: Vec<&Sample> = samples.iter().flatten().collect();
            let timed: Vec<&Sample> = ok.iter().copied().filter(|s| s.timed).collect();
            // Round by round: the runs of one round ran side by side.
            let per_round = |metric: fn(&Sample) -> f64| -> Vec<f64> {
                match ours {
                    Some(ours) => ours
                        .iter()
                        .zip(samples)
                        .filter_map(|(a, b)| {
                            let (a, b) = (a.as_ref().ok()?, b.as_ref().ok()?);
                            (a.timed && b.timed).then(|| metric(a) / metric(b))
                        })
                        .collect(),
                    None => Vec::new(),
                }
            };
            let peaks: Vec<f64> = ok.iter().copied().map(peak).collect();
            let rss_ratio = (!ours_peaks.is_empty() && !peaks.is_empty()).then(|| {
                let run_by_run = ours_peaks.iter().zip(&peaks).map(|(a, b)| a / b);
                let (low, high) = run_by_run.fold((f64::INFINITY, 0.0f64), |(l, h), r| (l.min(r), h.max(r)));
                (median_of(ours_peaks.iter().copied()) / median_of(peaks.iter().copied()), low, high)
            });
            rows.push(Row {
                allocator,
                wall: median_of(timed.iter().map(|s| s.wall)),
                user: median_of(timed.iter().map(|s| s.user)),
                sys: median_of(timed.iter().map(|s| s.sys)),
                rss_kb: median_of(peaks.iter().copied()),
                rss_runs: peaks.len(),
                after_trim_kb: ok
                    .iter()
                    .any(|s| s.rss_after_trim_kb.is_some())
                    .then(|| median_of(ok.iter().filter_map(|s| s.rss_after_trim_kb.map(|v| v as f64)))),
                failures: samples.len() - ok.len(),
                ours_over_this: spread(per_round(|s| s.wall)),
                rss_ours_over_this: rss_ratio,
            });
        }
        out.insert(workload, rows);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(wall: f64, peak: u64, timed: bool) -> Result<Sample, String> {
        Ok(Sample {
            wall,
            user: wall,
            sys: 0.0,
            max_rss_kb: peak,
            rusage_max_rss_kb: peak,
            checksum: "1".into(),
            rss_after_trim_kb: None,
            timed,
            rates: Vec::new(),
        })
    }

    /// Times come from the timed rounds alone, paired round by round; peaks
    /// from every run, as a ratio of medians.
    #[test]
    fn peaks_use_every_run_and_times_only_the_timed_rounds() {
        let ours = vec![sample(1.0, 1600, true), sample(1.0, 1600, true), sample(9.0, 1600, false)];
        // glibc's layout luck: three runs low, two high.
        let glibc = vec![
            sample(2.0, 1400, true),
            sample(2.0, 1600, true),
            sample(0.1, 1400, false),
            sample(0.1, 1600, false),
            sample(0.1, 1400, false),
        ];
        let results = Results::from([("tight", BTreeMap::from([(OURS, ours), ("glibc", glibc)]))]);
        let rows = &summarize(&results)["tight"];
        let glibc = rows.iter().find(|r| r.allocator == "glibc").unwrap();
        assert_eq!((glibc.wall, glibc.rss_kb, glibc.rss_runs), (2.0, 1400.0, 5));
        assert_eq!(glibc.ours_over_this, Some((0.5, 0.5, 0.5)));
        let (ratio, low, high) = glibc.rss_ours_over_this.unwrap();
        assert_eq!((ratio, low, high), (1600.0 / 1400.0, 1.0, 1600.0 / 1400.0));
        let ours = rows.iter().find(|r| r.allocator == OURS).unwrap();
        assert_eq!((ours.wall, ours.rss_runs), (1.0, 3));
    }
}
