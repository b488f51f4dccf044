//! Writes the Markdown tables of BENCHMARKS.md from criterion's results
//! (`target/criterion/**/new/{benchmark,estimates}.json`): medians,
//! throughput, and each contender's ratio to postern in the same group and
//! parameter.
//!
//! `cargo run -p postern-benches --bin report -- target/criterion`

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

struct Row {
    function: String,
    param: String,
    median_ns: f64,
    per_iter: Option<(String, f64)>,
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "new") && p.join("estimates.json").exists() {
                out.push(p);
            } else {
                walk(&p, out);
            }
        }
    }
}

fn read(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

fn human_time(ns: f64) -> String {
    match ns {
        n if n >= 1e9 => format!("{:.2} s", n / 1e9),
        n if n >= 1e6 => format!("{:.2} ms", n / 1e6),
        n if n >= 1e3 => format!("{:.2} µs", n / 1e3),
        n => format!("{n:.1} ns"),
    }
}

fn throughput(kind: &str, amount: f64, ns: f64) -> String {
    let per_sec = amount / (ns / 1e9);
    match kind {
        "Bytes" | "BytesDecimal" => {
            if per_sec >= 1024.0 * 1024.0 * 1024.0 {
                format!("{:.2} GiB/s", per_sec / (1024.0 * 1024.0 * 1024.0))
            } else {
                format!("{:.1} MiB/s", per_sec / (1024.0 * 1024.0))
            }
        }
        _ => {
            if per_sec >= 1e6 {
                format!("{:.2} M/s", per_sec / 1e6)
            } else if per_sec >= 1e3 {
                format!("{:.1} k/s", per_sec / 1e3)
            } else {
                format!("{per_sec:.1} /s")
            }
        }
    }
}

fn main() {
    let root = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "target/criterion".to_owned());
    let mut dirs = Vec::new();
    walk(Path::new(&root), &mut dirs);
    let mut groups: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    for d in dirs {
        let (Some(b), Some(e)) = (
            read(&d.join("benchmark.json")),
            read(&d.join("estimates.json")),
        ) else {
            continue;
        };
        let group = b["group_id"].as_str().unwrap_or("").to_owned();
        let function = b["function_id"].as_str().unwrap_or("").to_owned();
        let param = b["value_str"].as_str().unwrap_or("").to_owned();
        let Some(median_ns) = e["median"]["point_estimate"].as_f64() else {
            continue;
        };
        let per_iter = b["throughput"].as_object().and_then(|t| {
            let (k, v) = t.iter().next()?;
            Some((k.clone(), v.as_f64()?))
        });
        groups.entry(group).or_default().push(Row {
            function,
            param,
            median_ns,
            per_iter,
        });
    }
    let mut out = String::new();
    for (group, mut rows) in groups {
        rows.sort_by(|a, b| (&a.param, &a.function).cmp(&(&b.param, &b.function)));
        let _ = writeln!(out, "### {group}\n");
        let _ = writeln!(
            out,
            "| input | contender | median | throughput | vs postern |"
        );
        let _ = writeln!(out, "| --- | --- | ---: | ---: | ---: |");
        for r in &rows {
            // Time per unit of throughput where both rows have one (rows of
            // a table may do different amounts per iteration), else per
            // iteration.
            let per_unit = |row: &Row| {
                row.per_iter
                    .as_ref()
                    .map_or(row.median_ns, |(_, amount)| row.median_ns / amount)
            };
            let postern = rows
                .iter()
                .find(|p| p.param == r.param && p.function.starts_with("postern"));
            let ratio = postern.map_or("".to_owned(), |p| {
                let same_unit = match (&r.per_iter, &p.per_iter) {
                    (Some((a, _)), Some((b, _))) => a == b,
                    (None, None) => true,
                    _ => false,
                };
                if same_unit {
                    format!("{:.2}×", per_unit(r) / per_unit(p))
                } else {
                    format!("{:.2}×", r.median_ns / p.median_ns)
                }
            });
            let tp = r
                .per_iter
                .as_ref()
                .map_or("".to_owned(), |(k, a)| throughput(k, *a, r.median_ns));
            let param = if r.param.is_empty() { "-" } else { &r.param };
            let _ = writeln!(
                out,
                "| {param} | {} | {} | {tp} | {ratio} |",
                r.function,
                human_time(r.median_ns)
            );
        }
        let _ = writeln!(out);
    }
    let _ = std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes());
}
