//! The filter's Prometheus endpoint: fetched inside the server namespace
//! (it listens on that namespace's loopback) and parsed into a map.

use std::{collections::BTreeMap, process::Command};

use anyhow::{Context, Result};

use crate::harness::process::run_ok;

/// `series -> value`, keyed by the series as written: `name` or `name{labels}`.
pub type Metrics = BTreeMap<String, u64>;

/// The text at `http://127.0.0.1:PORT/metrics` in network namespace `ns`;
/// fails if nothing answers within 2 s.
pub fn fetch(ns: &str, port: u16) -> Result<String> {
    let url = format!("http://127.0.0.1:{port}/metrics");
    let out = run_ok(Command::new("ip").args([
        "netns",
        "exec",
        ns,
        "curl",
        "-sf",
        "--max-time",
        "2",
        &url,
    ]))
    .with_context(|| format!("cannot fetch {url} in namespace {ns}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Parses Prometheus text format. Comments, blank lines and samples whose
/// value is not a whole number are left out.
pub fn parse(text: &str) -> Metrics {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.trim_end().to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The samples of metric `name` by the value of its one label `label`,
/// label values unescaped (`\\`, `\"` and `\n`, as the text format writes
/// them).
pub fn by_label(metrics: &Metrics, name: &str, label: &str) -> BTreeMap<String, u64> {
    let prefix = format!("{name}{{{label}=\"");
    metrics
        .iter()
        .filter_map(|(series, value)| {
            let escaped = series.strip_prefix(&prefix)?.strip_suffix("\"}")?;
            Some((unescape_label(escaped), *value))
        })
        .collect()
}

fn unescape_label(escaped: &str) -> String {
    let mut out = String::with_capacity(escaped.len());
    let mut chars = escaped.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// The metric families of an exposition, from their `# TYPE NAME KIND`
/// lines.
pub fn families(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{by_label, parse};

    #[test]
    fn label_values_are_unescaped() {
        let m = parse(
            "x_total{origin=\"https://a\\\\\\\"b\\\\xff\"} 2\n\
             x_total{origin=\"other\"} 1\n\
             y_total{origin=\"z\"} 5\n",
        );
        let v = by_label(&m, "x_total", "origin");
        assert_eq!(v.len(), 2, "{v:?}");
        assert_eq!(v["https://a\\\"b\\xff"], 2);
        assert_eq!(v["other"], 1);
    }

    #[test]
    fn parses_series_with_and_without_labels() {
        let m = parse(
            "# HELP cors_filter_packets_total Packets seen.\n\
             # TYPE cors_filter_packets_total counter\n\
             cors_filter_packets_total 17\n\
             \n\
             cors_filter_preflights_total{verdict=\"allow\"} 2\n\
             cors_filter_passed_total{reason=\"not preflight\"} 1\n\
             cors_filter_ratio 0.5\n",
        );
        assert_eq!(m["cors_filter_packets_total"], 17);
        assert_eq!(m["cors_filter_preflights_total{verdict=\"allow\"}"], 2);
        assert_eq!(m["cors_filter_passed_total{reason=\"not preflight\"}"], 1);
        assert!(!m.contains_key("cors_filter_ratio"));
        assert_eq!(m.len(), 3);
    }
}
