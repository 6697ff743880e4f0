//! The JSON files a compare writes, by hand (the crate has no JSON
//! dependency): every sample of every run, and the instruction counts. Both
//! are objects of workload → allocator; the writers below lay them out.

use super::cachegrind::Counts;
use super::running::{Results, Sample};

/// The raw results as JSON (every sample of every run).
pub fn json(results: &Results) -> String {
    document(results.iter().map(|(&workload, by_allocator)| {
        let runs = by_allocator.iter().map(|(&allocator, samples)| {
            let list: Vec<String> = samples.iter().map(sample).collect();
            (allocator, format!("[{}]", list.join(", ")))
        });
        (workload, block(runs))
    }))
}

/// The instruction counts as JSON: workload → allocator → count (or null).
pub fn counts_json(counts: &Counts) -> String {
    document(counts.iter().map(|(&workload, by_allocator)| {
        let cells = by_allocator.iter().map(|(&a, n)| (a, n.as_ref().map_or("null".into(), |n| n.to_string())));
        (workload, inline(cells))
    }))
}

/// One run: its measures, or the error that failed it.
fn sample(run: &Result<Sample, String>) -> String {
    match run {
        Ok(s) => format!(
            "{{\"wall\": {:.6}, \"user\": {:.6}, \"sys\": {:.6}, \"max_rss_kb\": {}, \"rusage_max_rss_kb\": {}, \"rss_after_trim_kb\": {}, \"timed\": {}}}",
            s.wall,
            s.user,
            s.sys,
            s.max_rss_kb,
            s.rusage_max_rss_kb,
            s.rss_after_trim_kb.map_or("null".into(), |v| v.to_string()),
            s.timed
        ),
        // Quotes become apostrophes so the message needs no other escape.
        Err(e) => format!("{{\"error\": \"{}\"}}", e.replace('\\', "\\\\").replace('"', "'")),
    }
}

/// The top-level object, one field a line; `fields` are (key, written value).
fn document<'a>(fields: impl Iterator<Item = (&'a str, String)>) -> String {
    let lines: Vec<String> = fields.map(|(key, value)| format!("  \"{key}\": {value}")).collect();
    format!("{{\n{}\n}}\n", lines.join(",\n"))
}

/// An object inside the top level, one field a line.
fn block<'a>(fields: impl Iterator<Item = (&'a str, String)>) -> String {
    let lines: Vec<String> = fields.map(|(key, value)| format!("\n    \"{key}\": {value}")).collect();
    format!("{{{}\n  }}", lines.join(","))
}

/// An object on one line.
fn inline<'a>(fields: impl Iterator<Item = (&'a str, String)>) -> String {
    let cells: Vec<String> = fields.map(|(key, value)| format!("\"{key}\": {value}")).collect();
    format!("{{{}}}", cells.join(", "))
}
