//! The TOML configuration file. Every error names the file, the line and
//! the offending value; nothing is attached until the whole file is valid.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use cors_filter_common::{Action, Mode, OnIncomplete};
use serde::{Deserialize, Deserializer, de};
use toml::Spanned;

use crate::{
    allowlist::{AllowEntry, parse_entry, parse_methods},
    policy::PortPolicy,
};

#[derive(Debug)]
pub struct Config {
    /// The ports inspected, with their settings (`protect_unsafe_methods`
    /// and `unsafe_on_incomplete`, for all ports or per port).
    pub ports: BTreeMap<u16, PortPolicy>,
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
    protect_unsafe_methods: Option<Spanned<bool>>,
    #[serde(default)]
    unsafe_on_incomplete: Option<Spanned<IncompleteSetting>>,
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
enum RawAllowEntry {
    Origin(String),
    WithMethods(RawAllowTable),
}

/// By hand rather than `untagged`, whose error names neither the field nor
/// the value: a table is read as a table, so its errors are toml's own.
impl<'de> Deserialize<'de> for RawAllowEntry {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Item;
        impl<'de> de::Visitor<'de> for Item {
            type Value = RawAllowEntry;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"an origin ("https://app.example.com") or a table ({ origin = "https://app.example.com", methods = ["GET", "POST"] })"#)
            }

            fn visit_str<E: de::Error>(self, origin: &str) -> Result<RawAllowEntry, E> {
                Ok(RawAllowEntry::Origin(origin.to_owned()))
            }

            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<RawAllowEntry, A::Error> {
                RawAllowTable::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawAllowEntry::WithMethods)
            }
        }
        deserializer.deserialize_any(Item)
    }
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
    unsafe_on_incomplete: Option<IncompleteSetting>,
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
        let default_protect = raw
            .protect_unsafe_methods
            .as_ref()
            .is_some_and(|p| *p.get_ref());
        let default_pass = raw
            .unsafe_on_incomplete
            .as_ref()
            .is_some_and(|s| matches!(s.get_ref(), IncompleteSetting::Pass));
        let mut settings: BTreeMap<u16, &Spanned<RawPortSettings>> = BTreeMap::new();
        for (key, port_settings) in &raw.port {
            // One spelling per port: `[port.08080]` would otherwise be a
            // second table for port 8080, silently.
            let port = key
                .parse::<u16>()
                .ok()
                .filter(|p| ports.contains(p) && p.to_string() == *key);
            let Some(port) = port else {
                return Err(at(
                    port_settings.span().start,
                    format!(
                        "[port.{key}]: {key:?} is not one of `ports` {ports:?}, written as there"
                    ),
                )
                .into());
            };
            settings.insert(port, port_settings);
        }
        let mut port_policies = BTreeMap::new();
        for port in &ports {
            let own = settings.get(port).map(|s| s.get_ref());
            let protect_unsafe = own
                .and_then(|s| s.protect_unsafe_methods)
                .unwrap_or(default_protect);
            let pass_incomplete_unsafe = match own.and_then(|s| s.unsafe_on_incomplete) {
                Some(_) if !protect_unsafe => {
                    return Err(at(
                        settings[port].span().start,
                        format!("[port.{port}]: unsafe_on_incomplete has no effect: the port does not protect unsafe methods"),
                    )
                    .into());
                }
                Some(setting) => matches!(setting, IncompleteSetting::Pass),
                None => default_pass,
            };
            port_policies.insert(
                *port,
                PortPolicy {
                    protect_unsafe,
                    pass_incomplete_unsafe,
                },
            );
        }
        if let Some(setting) = &raw.unsafe_on_incomplete
            && !port_policies.values().any(|p| p.protect_unsafe)
        {
            return Err(at(
                setting.span().start,
                "unsafe_on_incomplete has no effect: no port protects unsafe methods (protect_unsafe_methods)".into(),
            )
            .into());
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
            ports: port_policies,
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
        assert_eq!(c.ports.keys().copied().collect::<Vec<_>>(), [80, 8080]);
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

    /// The ports that protect unsafe methods, and those of them that pass
    /// incomplete unsafe requests.
    fn protected(c: &Config) -> (Vec<u16>, Vec<u16>) {
        let ports = |wanted: fn(&PortPolicy) -> bool| {
            c.ports
                .iter()
                .filter(|(_, p)| wanted(p))
                .map(|(port, _)| *port)
                .collect::<Vec<u16>>()
        };
        (
            ports(|p| p.protect_unsafe),
            ports(|p| p.pass_incomplete_unsafe),
        )
    }

    #[test]
    fn unsafe_methods_are_protected_per_port_or_by_default() {
        let parse = |source: &str| protected(&Config::parse(Path::new("x.toml"), source).unwrap());
        assert_eq!(parse("ports = [80, 81]\n"), (vec![], vec![]));
        assert_eq!(
            parse("ports = [80, 81]\nprotect_unsafe_methods = true\n"),
            (vec![80, 81], vec![])
        );
        assert_eq!(
            parse(
                "ports = [80, 81]\nprotect_unsafe_methods = true\n[port.81]\nprotect_unsafe_methods = false\n"
            ),
            (vec![80], vec![])
        );
        assert_eq!(
            parse("ports = [80, 81]\n[port.81]\nprotect_unsafe_methods = true\n"),
            (vec![81], vec![])
        );
        // A port table without the setting takes the default.
        assert_eq!(
            parse("ports = [80, 81]\nprotect_unsafe_methods = true\n[port.81]\n"),
            (vec![80, 81], vec![])
        );
        assert_eq!(
            parse(
                "ports = [80, 81]\nprotect_unsafe_methods = true\nunsafe_on_incomplete = \"pass\"\n[port.81]\nunsafe_on_incomplete = \"drop\"\n"
            ),
            (vec![80, 81], vec![80])
        );
        assert_eq!(
            parse(
                "ports = [80, 81]\nprotect_unsafe_methods = true\n[port.81]\nunsafe_on_incomplete = \"pass\"\n"
            ),
            (vec![80, 81], vec![81])
        );
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
        let e = err("ports = [80]\n[port.080]\nprotect_unsafe_methods = true\n");
        assert!(
            e.contains("\"080\"") && e.contains("written as there"),
            "{e}"
        );
        let e = err("ports = [80]\n[port.80]\nunsafe_on_incomplete = \"pass\"\n");
        assert!(e.contains("[port.80]") && e.contains("no effect"), "{e}");
        let e = err("ports = [80]\nunsafe_on_incomplete = \"pass\"\n");
        assert!(e.contains(":2:") && e.contains("no port protects"), "{e}");
        let e =
            err("ports = [80]\nprotect_unsafe_methods = true\nunsafe_on_incomplete = \"maybe\"\n");
        assert!(e.contains("line 3") && e.contains("maybe"), "{e}");
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
