//! `cors-filter check --config FILE [--json]`: validates a config file as
//! `run` and `reload` do (`Config::load`, then `Config::policy`, the one
//! conversion into what the program enforces) and prints the policy it
//! makes, normalised: origins in canonical form, every default filled in.
//! No root, no kernel, no pins: for `ExecStartPre=` and for a config
//! management tool before it installs a file. The `allow` edits recorded
//! in the state directory are not applied (see `status` for them).

use std::{fmt::Write as _, path::Path};

use anyhow::Result;
use cors_filter_common::{Method, MethodSet};
use serde_json::json;

use crate::{
    allow_entry::AllowEntry,
    config::{Config, TableSizes},
    kernel::policy::Policy,
};

pub fn check(config_path: &Path, json: bool) -> Result<()> {
    let config = Config::load(config_path)?;
    // Valid but rarely meant (`null`, a forced public-suffix wildcard): on
    // stderr either way, and in the JSON object.
    for warning in &config.warnings {
        log::warn!("{warning}");
    }
    let warnings = config.warnings.clone();
    let source = config.allowlist_source.as_str();
    let tables = config.tables;
    let policy = config.policy(None, None);
    if json {
        let mut out = policy_json(config_path, &policy, tables);
        out["warnings"] = json!(warnings);
        out["allowlist_source"] = json!(source);
        println!("{out}");
    } else {
        print!("{}", policy_text(config_path, &policy, tables));
    }
    Ok(())
}

/// The methods an entry is limited to; `None`: every method.
fn methods(entry: &AllowEntry) -> Option<Vec<&'static str>> {
    let set = entry.methods();
    (set != MethodSet::ANY).then(|| set.known().map(Method::name).collect())
}

fn policy_json(path: &Path, policy: &Policy, tables: TableSizes) -> serde_json::Value {
    let settings = &policy.settings;
    let ports: Vec<serde_json::Value> = policy
        .ports
        .iter()
        .map(|(port, p)| {
            json!({
                "port": port,
                "protect_unsafe_methods": p.protect_unsafe,
                "client_address_header": p.client_header.map(|h| h.name()),
            })
        })
        .collect();
    let allow: Vec<serde_json::Value> = policy
        .allow
        .iter()
        .map(|e| json!({ "origin": e.origin, "methods": methods(e) }))
        .collect();
    json!({
        "config": path.display().to_string(),
        "valid": true,
        "mode": settings.mode().name(),
        "action": settings.action().name(),
        "on_oversized_head": settings.on_incomplete().name(),
        "max_head_bytes": settings.max_head_bytes,
        "http2": settings.http2().name(),
        "max_connections": tables.max_connections,
        "max_open_heads": tables.max_open_heads,
        "ports": ports,
        "allow": allow,
    })
}

fn policy_text(path: &Path, policy: &Policy, tables: TableSizes) -> String {
    let settings = &policy.settings;
    let mut out = String::new();
    let _ = writeln!(out, "{}: valid", path.display());
    for (name, value) in [
        ("mode", settings.mode().name().to_owned()),
        ("action", settings.action().name().to_owned()),
        (
            "on_oversized_head",
            settings.on_incomplete().name().to_owned(),
        ),
        ("max_head_bytes", settings.max_head_bytes.to_string()),
        ("http2", settings.http2().name().to_owned()),
        ("max_connections", tables.max_connections.to_string()),
        ("max_open_heads", tables.max_open_heads.to_string()),
    ] {
        let _ = writeln!(out, "{name:<18} {value}");
    }
    let _ = writeln!(out, "ports ({}):", policy.ports.len());
    for (port, p) in &policy.ports {
        let mut what = vec![if p.protect_unsafe {
            "preflights and unsafe methods checked".to_owned()
        } else {
            "preflights checked".to_owned()
        }];
        if let Some(header) = p.client_header {
            what.push(format!("client address from {}", header.name()));
        }
        let _ = writeln!(out, "  {port:<6} {}", what.join("; "));
    }
    let _ = writeln!(out, "allow ({}):", policy.allow.len());
    for entry in &policy.allow {
        let _ = writeln!(out, "  {entry}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(source: &str) -> (Policy, TableSizes) {
        let config = Config::parse(Path::new("c.toml"), source).unwrap();
        let tables = config.tables;
        (config.policy(None, None), tables)
    }

    #[test]
    fn json_is_the_policy_with_every_default_filled_in() {
        let (p, t) = policy(
            "ports = [8080, 80]\nallow = [\"HTTPS://App.Example.com:443\", { origin = \"https://b.example\", methods = [\"POST\", \"GET\"] }]\n[port.8080]\nprotect_unsafe_methods = true\n",
        );
        let v = policy_json(Path::new("c.toml"), &p, t);
        assert_eq!(v["mode"], "enforce");
        assert_eq!(v["action"], "reset-proxied");
        assert_eq!(v["on_oversized_head"], "drop");
        assert_eq!(v["http2"], "drop");
        assert_eq!(v["ports"][0]["port"], 80);
        assert_eq!(v["ports"][0]["protect_unsafe_methods"], false);
        assert_eq!(v["ports"][1]["port"], 8080);
        assert_eq!(v["ports"][1]["protect_unsafe_methods"], true);
        assert_eq!(v["allow"][0]["origin"], "https://app.example.com");
        assert_eq!(v["allow"][0]["methods"], serde_json::Value::Null);
        assert_eq!(v["allow"][1]["methods"], json!(["GET", "POST"]));
        assert_eq!(v["max_connections"], TableSizes::default().max_connections);
    }

    #[test]
    fn text_lists_settings_ports_and_origins() {
        let (p, t) = policy(
            "ports = [80]\nallow = [\"https://a.example\"]\nmode = \"monitor\"\naction = \"reset\"\n",
        );
        let text = policy_text(Path::new("c.toml"), &p, t);
        assert!(text.starts_with("c.toml: valid\n"), "{text}");
        assert!(text.contains("mode               monitor\n"), "{text}");
        assert!(text.contains("action             reset\n"), "{text}");
        assert!(text.contains("  80     preflights checked\n"), "{text}");
        assert!(text.contains("allow (1):\n  https://a.example\n"), "{text}");
    }
}
