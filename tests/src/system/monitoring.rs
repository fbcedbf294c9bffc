//! The monitoring assets of `packaging/monitoring/`: the alert rules, their
//! promtool tests, the Grafana dashboard; and the metric names they use.

use std::{collections::BTreeSet, path::PathBuf};

use anyhow::{Context, Result};

/// `packaging/monitoring/` in the source tree.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../packaging/monitoring")
}

pub fn rules() -> PathBuf {
    dir().join("cors-filter.rules.yml")
}

pub fn rules_tests() -> PathBuf {
    dir().join("cors-filter.rules.test.yml")
}

pub fn dashboard() -> PathBuf {
    dir().join("grafana-dashboard.json")
}

/// The filter's prefix: names with it are the daemon's series.
pub const PREFIX: &str = "cors_filter_";

/// Every PromQL name in `text` (`[a-zA-Z_:][a-zA-Z0-9_:]*`) that starts
/// with [`PREFIX`]; a recording rule's `level:metric:operation` name is
/// one word, not the metric in its middle.
pub fn metric_names(text: &str) -> BTreeSet<String> {
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find(|c: char| c.is_ascii_alphabetic() || c == '_' || c == ':') {
        let word_and_after = &rest[start..];
        let end = word_and_after
            .find(|c: char| !is_name_char(c))
            .unwrap_or(word_and_after.len());
        let word = &word_and_after[..end];
        if word.starts_with(PREFIX) {
            names.insert(word.to_owned());
        }
        rest = &word_and_after[end..];
    }
    names
}

/// The daemon's series named anywhere in the rule file (expressions,
/// annotations, comments).
pub fn names_in_rules() -> Result<BTreeSet<String>> {
    let path = rules();
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(metric_names(&text))
}

/// The daemon's series in the dashboard's panel targets (`expr`) and
/// template variables (`query`, `definition`).
pub fn names_in_dashboard() -> Result<BTreeSet<String>> {
    let path = dashboard();
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let mut queries = String::new();
    collect_queries(&json, &mut queries);
    Ok(metric_names(&queries))
}

fn collect_queries(value: &serde_json::Value, into: &mut String) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr" | "query" | "definition", serde_json::Value::String(q)) => {
                        into.push_str(q);
                        into.push('\n');
                    }
                    _ => collect_queries(v, into),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_queries(v, into)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_whole_words() {
        let names = metric_names(
            "rate(cors_filter_a_total{x=\"y\"}[5m]) / instance:cors_filter_b:rate5m + cors_filter_c",
        );
        assert_eq!(
            names,
            ["cors_filter_a_total", "cors_filter_c"]
                .map(String::from)
                .into()
        );
    }
}
