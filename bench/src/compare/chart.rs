//! The report's chart, drawn with plotters as SVG: per workload, each
//! allocator's median wall time and peak RSS relative to the best peer's,
//! as grouped bars in two panels.

use std::path::Path;

use super::catalogue::judged;
use super::peers::OURS;
use super::statistics::{Row, Summary, clean_peers};

/// Draws the chart: per workload, each allocator's median wall time and peak
/// RSS relative to the best peer's (1.0 = the best peer; lower is better),
/// as grouped bars in two panels, written as SVG to `path`.
pub fn chart(summary: &Summary, path: &Path) -> Result<(), String> {
    use plotters::prelude::*;

    const CAP: f64 = 3.0;
    let workloads: Vec<&&str> = summary.keys().collect();
    let mut allocators: Vec<&'static str> = summary.values().flatten().map(|r| r.allocator).collect();
    allocators.sort_unstable();
    allocators.dedup();
    // Ours first, so its colour is always the same.
    allocators.sort_by_key(|a| *a != OURS);
    let relative = |metric: fn(&Row) -> f64| -> Vec<Vec<f64>> {
        workloads
            .iter()
            .map(|w| {
                let rows = &summary[**w];
                let best = clean_peers(rows).map(metric).fold(f64::INFINITY, f64::min);
                allocators
                    .iter()
                    .map(|a| rows.iter().find(|r| r.allocator == *a).map_or(f64::NAN, |r| metric(r) / best))
                    .collect()
            })
            .collect()
    };
    // `startup`'s time (a millisecond) says nothing: no bars for it there.
    let mut times = relative(|r| r.wall);
    for (w, values) in workloads.iter().zip(&mut times) {
        if !judged(w) {
            values.fill(f64::NAN);
        }
    }
    let panels = [
        ("wall time relative to the best peer (lower is better; capped at 3)", times),
        ("peak RSS relative to the best peer (lower is better; capped at 3)", relative(|r| r.rss_kb)),
    ];
    let width = 140 + 90 * workloads.len() as u32;
    let root = SVGBackend::new(path, (width, 760)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let halves = root.split_evenly((2, 1));
    let palette = [
        RGBColor(214, 39, 40),
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(127, 127, 127),
    ];
    let n = allocators.len() as f64;
    for (area, (title, values)) in halves.iter().zip(&panels) {
        let mut chart = ChartBuilder::on(area)
            .caption(*title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..workloads.len() as f64, 0f64..CAP)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(workloads.len() * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                if (x - x.floor() - 0.5).abs() < 0.01 && i < workloads.len() {
                    workloads[i].to_string()
                } else {
                    String::new()
                }
            })
            .y_desc("× best peer")
            .draw()
            .map_err(|e| e.to_string())?;
        for (a, allocator) in allocators.iter().enumerate() {
            let color = palette[a % palette.len()];
            let bars = values.iter().enumerate().filter(|(_, v)| v[a].is_finite()).map(|(w, v)| {
                let x0 = w as f64 + 0.1 + 0.8 * a as f64 / n;
                let x1 = x0 + 0.8 / n;
                Rectangle::new([(x0, 0.0), (x1, v[a].min(CAP))], color.filled())
            });
            chart
                .draw_series(bars)
                .map_err(|e| e.to_string())?
                .label(*allocator)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
        }
        chart
            .draw_series(std::iter::once(PathElement::new(vec![(0.0, 1.0), (workloads.len() as f64, 1.0)], BLACK)))
            .map_err(|e| e.to_string())?;
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}
