//! The TOML configuration file. Every error names the file, the line and
//! the offending value; nothing is attached until the whole file is valid.

use std::{
    collections::BTreeSet,
    fmt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use cors_filter_common::{Action, Mode, OnIncomplete};
use serde::Deserialize;
use toml::Spanned;

use crate::allowlist::{AllowEntry, parse_entry};

#[derive(Debug)]
pub struct Config {
    pub ports: BTreeSet<u16>,
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
    allow: Vec<Spanned<String>>,
    #[serde(default)]
    mode: Option<ModeSetting>,
    #[serde(default)]
    on_incomplete: Option<IncompleteSetting>,
    #[serde(default)]
    action: Option<ActionSetting>,
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
        let mut allow: Vec<AllowEntry> = Vec::new();
        for entry in &raw.allow {
            let parsed =
                parse_entry(entry.get_ref()).map_err(|e| at(entry.span().start, e.to_string()))?;
            if let Some(first) = allow.iter().find(|a| a.origin == parsed.origin) {
                bail!(at(
                    entry.span().start,
                    format!(
                        "{:?} is listed twice (as {:?})",
                        entry.get_ref(),
                        first.origin
                    )
                ));
            }
            allow.push(parsed);
        }
        Ok(Config {
            ports,
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
    fn missing_file_is_named() {
        let e = format!(
            "{:#}",
            Config::load(Path::new("/nonexistent/cf.toml")).unwrap_err()
        );
        assert!(e.contains("/nonexistent/cf.toml"), "{e}");
    }
}
