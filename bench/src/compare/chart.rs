//! The report's chart, drawn with plotters as SVG: per workload, each
//! allocator's median wall time and peak RSS relative to the best peer's,
//! as grouped bars in two panels under one legend. The lowest bar of each
//! group (the winner) is outlined and starred; a bar past the cap carries
//! its value.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::catalogue;
use super::peers::{GLIBC_OUR_LAYOUT, OURS};
use super::statistics::{Row, Summary, clean_peers};

/// Bars are drawn up to this many times the best peer.
const CAP: f64 = 3.0;

/// One colour per allocator, ours first.
const PALETTE: [RGBColor; 8] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(127, 127, 127),
    RGBColor(23, 190, 207),
];

/// The allocators the chart draws, ours first: every one that ran but the
/// reference row with libc at our layout.
pub fn charted_allocators(summary: &Summary) -> Vec<&'static str> {
    let mut allocators: Vec<&'static str> =
        summary.values().flatten().map(|r| r.allocator).filter(|a| *a != GLIBC_OUR_LAYOUT).collect();
    allocators.sort_unstable();
    allocators.dedup();
    allocators.sort_by_key(|a| *a != OURS);
    allocators
}

/// One panel's groups: per workload, each allocator's metric relative to
/// the best clean peer's (NaN where it did not run).
type Groups = Vec<(&'static str, Vec<f64>)>;

fn relative(summary: &Summary, allocators: &[&str], workloads: &[&'static str], metric: fn(&Row) -> f64) -> Groups {
    workloads
        .iter()
        .map(|w| {
            let rows = &summary[*w];
            let best = clean_peers(rows).map(metric).fold(f64::INFINITY, f64::min);
            let values = allocators
                .iter()
                .map(|a| {
                    rows.iter().find(|r| r.allocator == *a && r.failures == 0).map_or(f64::NAN, |r| metric(r) / best)
                })
                .collect();
            (*w, values)
        })
        .collect()
}

/// Draws the chart as SVG to `path`: a legend strip, then wall time (judged
/// workloads only: `startup`'s millisecond says nothing) and peak RSS (every
/// workload), relative to the best peer; lower is better.
pub fn chart(summary: &Summary, path: &Path) -> Result<(), String> {
    let allocators = charted_allocators(summary);
    let present: Vec<&'static str> =
        catalogue::WORKLOADS.iter().map(|w| w.name).filter(|w| summary.contains_key(w)).collect();
    let judged: Vec<&'static str> = present.iter().copied().filter(|w| catalogue::judged(w)).collect();
    let panels = [
        ("wall time relative to the best peer (lower is better)", relative(summary, &allocators, &judged, |r| r.wall)),
        (
            "peak RSS relative to the best peer (lower is better)",
            relative(summary, &allocators, &present, |r| r.rss_kb),
        ),
    ];
    let groups = present.len().max(1) as u32;
    let width = (160 + 24 * allocators.len().max(1) as u32 * groups).max(1000);
    let root = SVGBackend::new(path, (width, 860)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (strip, body) = root.split_vertically(50);
    legend_of(&strip, &allocators, "★ outlined: the lowest bar of the group; a bar past 3× carries its value")?;
    for (area, (title, groups)) in body.split_evenly((2, 1)).iter().zip(&panels) {
        panel(area, title, groups, allocators.len())?;
    }
    root.present().map_err(|e| e.to_string())
}

/// The legend, in a strip of its own above the panels so that it covers no
/// bar, colours in the order of `allocators`, then `note`.
fn legend_of(strip: &DrawingArea<SVGBackend<'_>, Shift>, allocators: &[&str], note: &str) -> Result<(), String> {
    let font = ("sans-serif", 15).into_font();
    let mut x = 60;
    for (a, name) in allocators.iter().enumerate() {
        let color = PALETTE[a % PALETTE.len()];
        strip.draw(&Rectangle::new([(x, 18), (x + 14, 32)], color.filled())).map_err(|e| e.to_string())?;
        strip.draw(&Text::new(name.to_string(), (x + 20, 17), font.clone())).map_err(|e| e.to_string())?;
        x += 40 + 9 * name.len() as i32;
    }
    strip.draw(&Text::new(note, (x + 20, 17), font)).map_err(|e| e.to_string())
}

/// One panel of grouped bars.
fn panel(area: &DrawingArea<SVGBackend<'_>, Shift>, title: &str, groups: &Groups, n: usize) -> Result<(), String> {
    let count = groups.len();
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..count.max(1) as f64, 0f64..CAP + 0.35)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(count * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 0.01 && i < count { groups[i].0.to_string() } else { String::new() }
        })
        .y_desc("× best peer")
        .draw()
        .map_err(|e| e.to_string())?;
    let slot = 0.8 / n.max(1) as f64;
    let bar = |w: usize, a: usize| {
        let x0 = w as f64 + 0.1 + slot * a as f64;
        (x0, x0 + slot)
    };
    for (w, (_, values)) in groups.iter().enumerate() {
        let winner =
            values.iter().enumerate().filter(|(_, v)| v.is_finite()).min_by(|a, b| a.1.total_cmp(b.1)).map(|(a, _)| a);
        for (a, value) in values.iter().enumerate().filter(|(_, v)| v.is_finite()) {
            let (x0, x1) = bar(w, a);
            let top = value.min(CAP);
            let color = PALETTE[a % PALETTE.len()];
            chart.draw_series([Rectangle::new([(x0, 0.0), (x1, top)], color.filled())]).map_err(|e| e.to_string())?;
            if *value > CAP {
                let label = ("sans-serif", 11).into_font().transform(FontTransform::Rotate90).color(&WHITE);
                let style = label.pos(Pos::new(HPos::Left, VPos::Center));
                let text = Text::new(format!("{value:.1}×"), ((x0 + x1) / 2.0, CAP - 0.08), style);
                chart.draw_series([text]).map_err(|e| e.to_string())?;
            }
            if winner == Some(a) {
                let outline = Rectangle::new([(x0, 0.0), (x1, top)], BLACK.stroke_width(2));
                let star = Text::new(
                    "★",
                    ((x0 + x1) / 2.0, top + 0.02),
                    ("sans-serif", 16).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Bottom)),
                );
                chart.draw_series([outline]).map_err(|e| e.to_string())?;
                chart.draw_series([star]).map_err(|e| e.to_string())?;
            }
        }
    }
    let line = PathElement::new(vec![(0.0, 1.0), (count as f64, 1.0)], BLACK);
    chart.draw_series([line]).map_err(|e| e.to_string())?;
    Ok(())
}

/// Per allocator, (threads, its row) of each many-threads workload that ran.
pub fn thread_series(summary: &Summary) -> Vec<(&'static str, Vec<(usize, Row)>)> {
    let runs: Vec<(usize, &Vec<Row>)> =
        catalogue::WORKLOADS.iter().filter_map(|w| Some((w.many_threads()?, summary.get(w.name)?))).collect();
    charted_allocators(summary)
        .into_iter()
        .map(|a| {
            let points = runs
                .iter()
                .filter_map(|(n, rows)| {
                    rows.iter().find(|r| r.allocator == a && r.failures == 0).map(|r| (*n, r.clone()))
                })
                .collect();
            (a, points)
        })
        .filter(|(_, points): &(_, Vec<_>)| !points.is_empty())
        .collect()
}

/// A panel of the many-threads chart: its title, its range, the value of a row.
type Metric = (&'static str, (f64, f64), fn(&Row) -> f64);

/// Draws the many-threads chart as SVG to `path`: peak RSS (MiB) and wall
/// time (s) against the threads alive at once, both axes logarithmic, a
/// line per allocator. Nothing is drawn when no many-threads workload ran.
pub fn threads_chart(summary: &Summary, path: &Path) -> Result<bool, String> {
    let series = thread_series(summary);
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let (mut low, mut high) = (usize::MAX, 0);
    let (mut rss, mut wall) = ((f64::INFINITY, 0f64), (f64::INFINITY, 0f64));
    for (n, row) in points {
        (low, high) = (low.min(*n), high.max(*n));
        rss = (rss.0.min(row.rss_kb / 1024.0), rss.1.max(row.rss_kb / 1024.0));
        wall = (wall.0.min(row.wall), wall.1.max(row.wall));
    }
    if high == 0 {
        return Ok(false);
    }
    let root = SVGBackend::new(path, (1100, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (strip, body) = root.split_vertically(50);
    let names: Vec<&str> = series.iter().map(|(a, _)| *a).collect();
    legend_of(&strip, &names, "threads alive at once, all on every CPU; lower is better")?;
    let panels = body.split_evenly((1, 2));
    let metrics: [Metric; 2] = [("peak RSS (MiB)", rss, |r| r.rss_kb / 1024.0), ("wall time (s)", wall, |r| r.wall)];
    for (area, (title, (min, max), metric)) in panels.iter().zip(metrics) {
        let mut chart = ChartBuilder::on(area)
            .caption(format!("{title} by threads alive"), ("sans-serif", 18))
            .margin(15)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d((low as f64 * 0.7..high as f64 * 1.4).log_scale(), (min * 0.7..max * 1.4).log_scale())
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("threads")
            .y_desc(title)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| format!("{y:.1}"))
            .draw()
            .map_err(|e| e.to_string())?;
        for (a, (_, points)) in series.iter().enumerate() {
            let color = PALETTE[names.iter().position(|n| *n == series[a].0).unwrap_or(a) % PALETTE.len()];
            let width = if series[a].0 == OURS { 3 } else { 2 };
            let xy: Vec<(f64, f64)> = points.iter().map(|(n, r)| (*n as f64, metric(r))).collect();
            chart.draw_series(LineSeries::new(xy.clone(), color.stroke_width(width))).map_err(|e| e.to_string())?;
            chart.draw_series(xy.into_iter().map(|p| Circle::new(p, 4, color.filled()))).map_err(|e| e.to_string())?;
        }
    }
    root.present().map_err(|e| e.to_string())?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(allocator: &'static str, wall: f64, rss_kb: f64) -> Row {
        Row {
            allocator,
            wall,
            user: wall,
            sys: 0.0,
            rss_kb,
            rss_runs: 1,
            after_trim_kb: None,
            failures: 0,
            ours_over_this: None,
            rss_ours_over_this: None,
        }
    }

    /// A capped bar carries its value, the winner its star, and `startup`
    /// has no slot in the time panel. The SVG is left in the temporary
    /// directory, to be looked at.
    #[test]
    fn capped_bars_carry_their_value_and_the_winner_a_star() {
        let summary = Summary::from([
            ("tight", vec![row(OURS, 1.0, 1500.0), row("glibc", 1.1, 1400.0), row("mimalloc", 28.1, 1600.0)]),
            ("startup", vec![row(OURS, 0.001, 1500.0), row("glibc", 0.001, 1400.0), row("mimalloc", 0.001, 1500.0)]),
        ]);
        let path = std::env::temp_dir().join("rseq-alloc-chart-test.svg");
        chart(&summary, &path).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.contains("25.5×"), "28.1 / 1.1 is not labelled");
        assert_eq!(svg.matches('★').count(), 3 + 1, "one star a group, and the legend's");
        assert_eq!(svg.matches("startup").count(), 1, "startup is in the memory panel only");
    }
}
