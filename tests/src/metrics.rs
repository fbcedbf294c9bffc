//! The filter's Prometheus endpoint: fetched inside the server namespace
//! (it listens on that namespace's loopback) and parsed into a map.

use std::{collections::BTreeMap, process::Command};

use anyhow::{Context, Result};

use crate::process::run_ok;

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

#[cfg(test)]
mod tests {
    use super::parse;

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
