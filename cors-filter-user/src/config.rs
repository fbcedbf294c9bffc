//! The TOML configuration file. Every error names the file, the line and
//! the offending value; nothing is attached until the whole file is valid.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use cors_filter_common::{Action, Mode, OnIncomplete};
use serde::Deserialize;
use toml::Spanned;

use crate::allowlist::{AllowEntry, parse_entry, parse_methods};

#[derive(Debug)]
pub struct Config {
    pub ports: BTreeSet<u16>,
    /// The ports of `ports` whose requests with unsafe methods are checked
    /// (`protect_unsafe_methods`, for all ports or per port).
    pub protect_unsafe: BTreeSet<u16>,
    pub allow: Vec<AllowEntry>,
    pub mode: Mode,
    pub on_incomplete: OnIncomplete,
    pub action: Action,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    ports: Spanned<Vec<Spanned<u16>>>,
    #[serde(default)]
    allow: Vec<Spanned<RawAllowEntry>>,
    #[serde(default)]
    protect_unsafe_methods: Option<bool>,
    /// Per-port settings: `[port.8080]`.
    #[serde(default)]
    port: BTreeMap<String, Spanned<RawPortSettings>>,
    #[serde(default)]
    mode: Option<ModeSetting>,
    #[serde(default)]
    on_incomplete: Option<IncompleteSetting>,
    #[serde(default)]
    action: Option<ActionSetting>,
}

/// An `allow` item: an origin, or a table with its methods.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawAllowEntry {
    Origin(String),
    WithMethods(RawAllowTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAllowTable {
    origin: String,
    methods: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPortSettings {
    protect_unsafe_methods: Option<bool>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum ModeSetting {
    Enforce,
    Monitor,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum IncompleteSetting {
    Pass,
    Drop,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum ActionSetting {
    Drop,
    Reset,
}

/// A problem at a line of the config file.
#[derive(Debug)]
struct LineError {
    path: PathBuf,
    line: usize,
    message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.message)
    }
}

impl std::error::Error for LineError {}

fn line_of(source: &str, offset: usize) -> usize {
    source[..offset.min(source.len())].matches('\n').count() + 1
}

impl Config {
    pub fn load(path: &Path) -> Result<Config> {
        let source = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::parse(path, &source)
    }

    pub fn parse(path: &Path, source: &str) -> Result<Config> {
        // toml's own errors already show the line, the column and the text.
        let raw: RawConfig = toml::from_str(source)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        let at = |offset: usize, message: String| LineError {
            path: path.to_owned(),
            line: line_of(source, offset),
            message,
        };
        let mut ports = BTreeSet::new();
        for port in raw.ports.get_ref() {
            if *port.get_ref() == 0 {
                return Err(at(
                    port.span().start,
                    "port 0 is not a valid port (1 to 65535)".into(),
                )
                .into());
            }
            if !ports.insert(*port.get_ref()) {
                return Err(at(
                    port.span().start,
                    format!("port {} is listed twice", port.get_ref()),
                )
                .into());
            }
        }
        if ports.is_empty() {
            return Err(at(
                raw.ports.span().start,
                "`ports` is empty: the filter would inspect nothing".into(),
            )
            .into());
        }
        let mut protect_unsafe = BTreeSet::new();
        let default_protect = raw.protect_unsafe_methods.unwrap_or(false);
        for (key, settings) in &raw.port {
            let port = key.parse::<u16>().ok().filter(|p| ports.contains(p));
            let Some(port) = port else {
                return Err(at(
                    settings.span().start,
                    format!("[port.{key}]: {key:?} is not one of `ports` {ports:?}"),
                )
                .into());
            };
            if settings
                .get_ref()
                .protect_unsafe_methods
                .unwrap_or(default_protect)
            {
                protect_unsafe.insert(port);
            }
        }
        for port in &ports {
            if default_protect && !raw.port.contains_key(&port.to_string()) {
                protect_unsafe.insert(*port);
            }
        }
        let mut allow: Vec<AllowEntry> = Vec::new();
        for item in &raw.allow {
            let (origin, methods) = match item.get_ref() {
                RawAllowEntry::Origin(origin) => (origin, None),
                RawAllowEntry::WithMethods(table) => (&table.origin, table.methods.as_deref()),
            };
            let line = |message: String| at(item.span().start, message);
            let mut parsed = parse_entry(origin).map_err(|e| line(e.to_string()))?;
            if let Some(methods) = methods {
                let methods =
                    parse_methods(methods).map_err(|e| line(format!("origin {origin:?}: {e}")))?;
                parsed = parsed.with_methods(methods);
            }
            if let Some(first) = allow.iter().find(|a| a.origin == parsed.origin) {
                bail!(line(format!(
                    "{origin:?} is listed twice (as {:?})",
                    first.origin
                )));
            }
            allow.push(parsed);
        }
        Ok(Config {
            ports,
            protect_unsafe,
            allow,
            mode: match raw.mode.unwrap_or(ModeSetting::Enforce) {
                ModeSetting::Enforce => Mode::Enforce,
                ModeSetting::Monitor => Mode::Monitor,
            },
            on_incomplete: match raw.on_incomplete.unwrap_or(IncompleteSetting::Pass) {
                IncompleteSetting::Pass => OnIncomplete::Pass,
                IncompleteSetting::Drop => OnIncomplete::Drop,
            },
            action: match raw.action.unwrap_or(ActionSetting::Drop) {
                ActionSetting::Drop => Action::Drop,
                ActionSetting::Reset => Action::Reset,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(source: &str) -> String {
        format!(
            "{:#}",
            Config::parse(Path::new("/etc/cf.toml"), source).unwrap_err()
        )
    }

    #[test]
    fn parses_the_documented_example() {
        let c = Config::parse(
            Path::new("x.toml"),
            "ports = [80, 8080]\nallow = [\"https://app.example.com\", \"https://*.example.org\"]\nmode = \"monitor\"\non_incomplete = \"drop\"\naction = \"reset\"\n",
        )
        .unwrap();
        assert_eq!(c.ports.iter().copied().collect::<Vec<_>>(), [80, 8080]);
        assert_eq!(c.allow.len(), 2);
        assert_eq!(c.mode, Mode::Monitor);
        assert_eq!(c.on_incomplete, OnIncomplete::Drop);
        assert_eq!(c.action, Action::Reset);
    }

    #[test]
    fn action_defaults_to_drop() {
        let c = Config::parse(Path::new("x.toml"), "ports = [80]\n").unwrap();
        assert_eq!(c.action, Action::Drop);
        let c = Config::parse(Path::new("x.toml"), "ports = [80]\naction = \"drop\"\n").unwrap();
        assert_eq!(c.action, Action::Drop);
    }

    #[test]
    fn errors_name_file_line_and_value() {
        let e = err(
            "ports = [8080]\nallow = [\n  \"https://ok.example\",\n  \"https://bad.example/path\",\n]\n",
        );
        assert!(e.contains("/etc/cf.toml:4:"), "{e}");
        assert!(e.contains("https://bad.example/path"), "{e}");

        let e = err("ports = [8080, 0]\n");
        assert!(e.contains("/etc/cf.toml:1: port 0"), "{e}");

        let e = err("ports = [8080]\nprots = [1]\n");
        assert!(
            e.contains("/etc/cf.toml") && e.contains("line 2") && e.contains("prots"),
            "{e}"
        );

        let e = err("ports = [8080]\nmode = \"enforcing\"\n");
        assert!(e.contains("line 2") && e.contains("enforcing"), "{e}");

        let e = err("ports = [8080]\n\naction = \"rst\"\n");
        assert!(
            e.contains("/etc/cf.toml") && e.contains("line 3") && e.contains("rst"),
            "{e}"
        );

        let e = err("ports = [70000]\n");
        assert!(e.contains("line 1") && e.contains("70000"), "{e}");

        let e = err("ports = []\n");
        assert!(e.contains("empty"), "{e}");

        let e = err("allow = []\n");
        assert!(e.contains("ports"), "{e}");

        let e = err("ports = [80]\nallow = [\"https://a.example\", \"HTTPS://A.example:443\"]\n");
        assert!(e.contains("listed twice"), "{e}");
    }

    #[test]
    fn unsafe_methods_are_protected_per_port_or_by_default() {
        let parse = |source: &str| Config::parse(Path::new("x.toml"), source).unwrap();
        let set = |ports: &[u16]| ports.iter().copied().collect::<BTreeSet<u16>>();
        assert_eq!(parse("ports = [80, 81]\n").protect_unsafe, set(&[]));
        let c = parse("ports = [80, 81]\nprotect_unsafe_methods = true\n");
        assert_eq!(c.protect_unsafe, set(&[80, 81]));
        let c = parse(
            "ports = [80, 81]\nprotect_unsafe_methods = true\n[port.81]\nprotect_unsafe_methods = false\n",
        );
        assert_eq!(c.protect_unsafe, set(&[80]));
        let c = parse("ports = [80, 81]\n[port.81]\nprotect_unsafe_methods = true\n");
        assert_eq!(c.protect_unsafe, set(&[81]));
        // A port table without the setting takes the default.
        let c = parse("ports = [80, 81]\nprotect_unsafe_methods = true\n[port.81]\n");
        assert_eq!(c.protect_unsafe, set(&[80, 81]));
    }

    #[test]
    fn allow_entries_may_list_methods() {
        let c = Config::parse(
            Path::new("x.toml"),
            "ports = [80]\nallow = [\"https://a.example\", { origin = \"https://b.example\", methods = [\"GET\", \"POST\"] }]\n",
        )
        .unwrap();
        let shown: Vec<String> = c.allow.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            ["https://a.example", "https://b.example methods=GET,POST"]
        );
    }

    #[test]
    fn bad_methods_and_ports_are_named() {
        let e = err(
            "ports = [80]\nallow = [\n  \"https://a.example\",\n  { origin = \"https://b.example\", methods = [\"GET\", \"post\"] },\n]\n",
        );
        assert!(
            e.contains("/etc/cf.toml:4:")
                && e.contains("https://b.example")
                && e.contains("\"post\""),
            "{e}"
        );
        let e = err("ports = [80]\nallow = [{ origin = \"https://b.example\", methods = [] }]\n");
        assert!(e.contains("empty"), "{e}");
        let e =
            err("ports = [80]\nallow = [{ origin = \"https://b.example\", method = [\"GET\"] }]\n");
        assert!(e.contains("line 2"), "{e}");
        let e = err("ports = [80]\n[port.81]\nprotect_unsafe_methods = true\n");
        assert!(e.contains("81") && e.contains("not one of `ports`"), "{e}");
        let e = err("ports = [80]\n[port.http]\nprotect_unsafe_methods = true\n");
        assert!(e.contains("\"http\""), "{e}");
        let e = err("ports = [80]\n[port.80]\nprotect = true\n");
        assert!(e.contains("protect"), "{e}");
        let e = err("ports = [80]\nprotect_unsafe_methods = \"yes\"\n");
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn missing_file_is_named() {
        let e = format!(
            "{:#}",
            Config::load(Path::new("/nonexistent/cf.toml")).unwrap_err()
        );
        assert!(e.contains("/nonexistent/cf.toml"), "{e}");
    }
}
