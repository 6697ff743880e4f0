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

/// The instruction counts as JSON: workload → allocator → {total,
/// allocator} (or null).
pub fn counts_json(counts: &Counts) -> String {
    document(counts.iter().map(|(&workload, by_allocator)| {
        let cells = by_allocator.iter().map(|(&a, n)| {
            let value = n.as_ref().map_or("null".into(), |n| {
                let allocator = n.allocator.map_or("null".into(), |a| a.to_string());
                format!("{{\"total\": {}, \"allocator\": {allocator}}}", n.total)
            });
            (a, value)
        });
        (workload, inline(cells))
    }))
}

/// One run: its measures, or the error that failed it.
fn sample(run: &Result<Sample, String>) -> String {
    match run {
        Ok(s) => format!(
            "{{\"wall\": {:.6}, \"user\": {:.6}, \"sys\": {:.6}, \"max_rss_kb\": {}, \"rusage_max_rss_kb\": {}, \"rss_after_trim_kb\": {}, \"timed\": {}{}}}",
            s.wall,
            s.user,
            s.sys,
            s.max_rss_kb,
            s.rusage_max_rss_kb,
            s.rss_after_trim_kb.map_or("null".into(), |v| v.to_string()),
            s.timed,
            if s.rates.is_empty() {
                String::new()
            } else {
                let rates = s.rates.iter().map(|(k, v)| (k.as_str(), format!("{v:.1}")));
                format!(", \"rates\": {}", inline(rates))
            }
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::compare::cachegrind::Count;

    /// Workloads one a line, allocators one a line inside them, a run's
    /// measures on one line; an error's quotes become apostrophes.
    #[test]
    fn results_are_laid_out_one_allocator_a_line() {
        let run = Sample {
            wall: 0.5,
            user: 0.25,
            sys: 0.0,
            max_rss_kb: 1500,
            rusage_max_rss_kb: 1520,
            checksum: "7".into(),
            rss_after_trim_kb: Some(300),
            timed: false,
            rates: Vec::new(),
        };
        let results = Results::from([
            ("large", BTreeMap::from([("glibc", vec![Err("said \"no\"".to_string())])])),
            ("trim", BTreeMap::from([("glibc", vec![Ok(run.clone()), Ok(run)]), ("tbb", vec![])])),
        ]);
        let sample = "{\"wall\": 0.500000, \"user\": 0.250000, \"sys\": 0.000000, \"max_rss_kb\": 1500, \
                      \"rusage_max_rss_kb\": 1520, \"rss_after_trim_kb\": 300, \"timed\": false}";
        assert_eq!(
            json(&results),
            format!(
                "{{\n  \"large\": {{\n    \"glibc\": [{{\"error\": \"said 'no'\"}}]\n  }},\n  \"trim\": {{\n    \
                 \"glibc\": [{sample}, {sample}],\n    \"tbb\": []\n  }}\n}}\n"
            )
        );
        assert_eq!(json(&Results::new()), "{\n\n}\n");
    }

    /// Workloads one a line, each allocator's count (null if it failed) inline.
    #[test]
    fn counts_are_laid_out_one_workload_a_line() {
        let counts = Counts::from([
            (
                "realloc",
                BTreeMap::from([
                    ("glibc", Err("valgrind".to_string())),
                    ("tbb", Ok(Count { total: 12, allocator: Some(3) })),
                ]),
            ),
            ("tight", BTreeMap::from([("glibc", Ok(Count { total: 1_000_000, allocator: None }))])),
        ]);
        assert_eq!(
            counts_json(&counts),
            "{\n  \"realloc\": {\"glibc\": null, \"tbb\": {\"total\": 12, \"allocator\": 3}},\n  \"tight\": {\"glibc\": {\"total\": 1000000, \"allocator\": null}}\n}\n"
        );
    }
}
