//! `cors-filter stats [--json] [--top N]`: the running filter's counters,
//! and the origins with the most denials as `run` last saved them in the
//! state directory (every few seconds, and at exit).

use std::{fmt::Write as _, path::Path};

use anyhow::Result;
use serde_json::json;

use crate::{
    denials::{COUNTS_FILE, OriginCounts, TopOrigins},
    metrics::Snapshot,
    state::StateDir,
};

pub fn stats(pin_dir: &Path, state_dir: &Path, json: bool, top: usize) -> Result<()> {
    let snapshot = Snapshot::read(pin_dir)?;
    StateDir::existing(state_dir)?;
    let path = state_dir.join(COUNTS_FILE);
    let origins = OriginCounts::load(&path)?.map(|counts| counts.top(top));
    if json {
        let mut value = snapshot.json();
        value["denied_origins"] = origins_json(origins.as_ref());
        println!("{value}");
    } else {
        print!("{}", snapshot.table());
        print!("{}", origins_table(&path, origins.as_ref()));
    }
    Ok(())
}

/// `{"top": [{"origin": O, "denials": N}, ...], "other": N, "total": N}`,
/// or `null` when no counts were saved.
fn origins_json(origins: Option<&TopOrigins>) -> serde_json::Value {
    let Some(origins) = origins else {
        return serde_json::Value::Null;
    };
    let top: Vec<serde_json::Value> = origins
        .top
        .iter()
        .map(|(origin, denials)| json!({ "origin": origin, "denials": denials }))
        .collect();
    json!({ "top": top, "other": origins.other, "total": origins.total() })
}

fn origins_table(path: &Path, origins: Option<&TopOrigins>) -> String {
    let mut out = String::new();
    let Some(origins) = origins.filter(|o| o.total() > 0) else {
        let _ = writeln!(
            out,
            "\ndenied origins: none recorded yet ({} {})",
            path.display(),
            if origins.is_some() {
                "holds no denial"
            } else {
                "does not exist"
            }
        );
        return out;
    };
    let _ = writeln!(
        out,
        "\ndenied origins ({} denials, saved in {}):",
        origins.total(),
        path.display()
    );
    for (origin, denials) in &origins.top {
        let _ = writeln!(out, "{denials:>12}  {origin}");
    }
    if origins.other > 0 {
        let _ = writeln!(out, "{:>12}  (other origins)", origins.other);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origins() -> TopOrigins {
        TopOrigins {
            top: vec![
                ("https://evil.example".to_owned(), 3),
                (r#"https://a\"b"#.to_owned(), 1),
            ],
            other: 2,
        }
    }

    #[test]
    fn table_lists_the_top_origins_and_the_rest() {
        let text = origins_table(Path::new("/s/denied-origins.json"), Some(&origins()));
        assert_eq!(
            text,
            "\ndenied origins (6 denials, saved in /s/denied-origins.json):\n\
             \x20          3  https://evil.example\n\
             \x20          1  https://a\\\"b\n\
             \x20          2  (other origins)\n"
        );
    }

    #[test]
    fn table_says_when_there_is_none() {
        let path = Path::new("/s/denied-origins.json");
        assert_eq!(
            origins_table(path, None),
            "\ndenied origins: none recorded yet (/s/denied-origins.json does not exist)\n"
        );
        assert!(origins_table(path, Some(&TopOrigins::default())).contains("holds no denial"));
    }

    #[test]
    fn json_lists_the_top_origins_or_null() {
        assert_eq!(origins_json(None), serde_json::Value::Null);
        let v = origins_json(Some(&origins()));
        assert_eq!(v["top"][0]["origin"], "https://evil.example");
        assert_eq!(v["top"][0]["denials"], 3);
        assert_eq!(v["top"][1]["origin"], r#"https://a\"b"#);
        assert_eq!(v["other"], 2);
        assert_eq!(v["total"], 6);
    }
}
