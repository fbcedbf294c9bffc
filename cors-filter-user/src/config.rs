//! The TOML configuration file. Every error names the file, the line and
//! the offending value; nothing is attached until the whole file is valid.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use cors_filter_common::{Action, FilterConfig, Http2, Mode, OnIncomplete, pinned::name, stream};
use serde::{Deserialize, Deserializer, de};
use toml::Spanned;

use crate::{
    allow_entry::{AllowEntry, parse_entry, parse_methods},
    exit::{Classify as _, Kind},
    kernel::policy::{ClientHeader, Policy, PortPolicy},
    shown::{Cut, Shown},
};

#[derive(Debug)]
pub struct Config {
    /// The ports inspected, with their settings (`protect_unsafe_methods`,
    /// for all ports or per port).
    pub ports: BTreeMap<u16, PortPolicy>,
    pub allow: Vec<AllowEntry>,
    pub mode: Mode,
    /// What is done with a preflight or unsafe request whose head is
    /// longer than `max_head_bytes` or `stream::MAX_HEAD_LINES` lines
    /// (`on_oversized_head`).
    pub on_oversized_head: OnIncomplete,
    /// Bytes a judged request head may have (`max_head_bytes`).
    pub max_head_bytes: u32,
    pub action: Action,
    /// What is done with a connection that starts HTTP/2 (`http2`).
    pub http2: Http2,
    /// Sizes of the connection maps, fixed when the program is loaded.
    pub tables: TableSizes,
    /// What is valid but rarely meant (`null` allowed, a forced wildcard
    /// over a public suffix), one line each naming file and line: logged
    /// where the policy is installed, printed by `check`.
    pub warnings: Vec<String>,
    /// Whether `cors-filter allow` edits count (`allowlist_source`).
    pub allowlist_source: AllowlistSource,
}

/// Where the allowlist comes from (`allowlist_source`).
#[derive(Deserialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum AllowlistSource {
    /// The config's `allow`, with the changes made by `cors-filter allow`
    /// over it: the behaviour from before the setting, kept as the default
    /// so that an upgrade does not drop a host's recorded edits.
    #[default]
    ConfigAndLocal,
    /// The config's `allow` alone: `allow add` and `allow remove` are
    /// refused and recorded changes are not applied (a fleet whose config
    /// is the one truth, e.g. from a ConfigMap).
    Config,
}

impl AllowlistSource {
    /// The setting as the file spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            AllowlistSource::ConfigAndLocal => "config-and-local",
            AllowlistSource::Config => "config",
        }
    }
}

/// Defaults of `max_connections` and `max_open_heads`: the sizes the
/// program declares its `CONNS` and `OPEN_HEADS` maps with.
pub use cors_filter_common::stream::{DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_OPEN_HEADS};
const MAX_CONNECTIONS_RANGE: (u32, u32) = (1024, 1 << 22);
const MAX_OPEN_HEADS_RANGE: (u32, u32) = (256, 1 << 18);
const MAX_HEAD_BYTES_RANGE: (u32, u32) = (1024, stream::MAX_MAX_HEAD_BYTES);

/// The sizes of the maps that follow connections (`max_connections`,
/// `max_open_heads`): set when the program is loaded, so they cannot
/// change while its maps are pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSizes {
    /// Entries of `CONNS`.
    pub max_connections: u32,
    /// Entries of `OPEN_HEADS`.
    pub max_open_heads: u32,
}

impl Default for TableSizes {
    fn default() -> Self {
        TableSizes {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_open_heads: DEFAULT_MAX_OPEN_HEADS,
        }
    }
}

impl TableSizes {
    /// The maps these sizes are for, with the setting that sizes each and
    /// its value: `[("CONNS", "max_connections", n), ...]`.
    pub fn maps(self) -> [(&'static str, &'static str, u32); 2] {
        [
            (name::CONNS, "max_connections", self.max_connections),
            (name::OPEN_HEADS, "max_open_heads", self.max_open_heads),
        ]
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    ports: Spanned<Vec<Spanned<u16>>>,
    #[serde(default)]
    allow: Vec<Spanned<RawAllowEntry>>,
    #[serde(default)]
    protect_unsafe_methods: Option<Spanned<bool>>,
    /// Retired: refused with what replaced it.
    #[serde(default)]
    unsafe_on_incomplete: Option<Spanned<de::IgnoredAny>>,
    /// Per-port settings: `[port.8080]`.
    #[serde(default)]
    port: BTreeMap<String, Spanned<RawPortSettings>>,
    #[serde(default)]
    mode: Option<Mode>,
    /// Retired: refused with what replaced it.
    #[serde(default)]
    on_incomplete: Option<Spanned<de::IgnoredAny>>,
    #[serde(default)]
    on_oversized_head: Option<OnIncomplete>,
    #[serde(default)]
    max_head_bytes: Option<Spanned<i64>>,
    #[serde(default)]
    max_connections: Option<Spanned<i64>>,
    #[serde(default)]
    max_open_heads: Option<Spanned<i64>>,
    #[serde(default)]
    action: Option<Action>,
    #[serde(default)]
    http2: Option<Http2>,
    #[serde(default)]
    allowlist_source: Option<AllowlistSource>,
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
    /// Allows a wildcard over a public suffix (`https://*.github.io`).
    #[serde(default)]
    force_public_suffix: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPortSettings {
    protect_unsafe_methods: Option<bool>,
    client_address_header: Option<ClientHeader>,
    /// Retired: refused with what replaced it.
    unsafe_on_incomplete: Option<Spanned<de::IgnoredAny>>,
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

/// toml's own error shows the line, the column and the line's text, which
/// is what is wanted unless the line is long: then the file, line and
/// toml's message, cut (a message may quote the whole value).
fn toml_error(path: &Path, source: &str, e: toml::de::Error) -> anyhow::Error {
    const LONGEST_LINE_SHOWN: usize = 200;
    let offset = e.span().map_or(0, |span| span.start).min(source.len());
    let line_start = source[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_len = source[line_start..]
        .find('\n')
        .unwrap_or(source.len() - line_start);
    if line_len <= LONGEST_LINE_SHOWN {
        return anyhow::Error::new(e).context(format!("invalid config file {}", path.display()));
    }
    LineError {
        path: path.to_owned(),
        line: line_of(source, offset),
        message: format!(
            "invalid TOML at column {}: {}",
            offset - line_start + 1,
            Cut(e.message())
        ),
    }
    .into()
}

fn line_of(source: &str, offset: usize) -> usize {
    source[..offset.min(source.len())].matches('\n').count() + 1
}

/// Checks an entry being added (from the config, or with `allow add`) for
/// what is valid but rarely meant: a wildcard over a public suffix is
/// refused unless `forced` (`how_to_force` says how); `null`, a forced
/// wildcard, and a `forced` that forces nothing are allowed with the
/// warnings returned.
pub fn vet_entry(entry: &AllowEntry, forced: bool, how_to_force: &str) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    match entry.wildcard_public_suffix() {
        Some(suffix) if !forced => bail!(
            "{} allows every site under the public suffix {suffix}, where anyone can register one; \
             list the sites instead, or set {how_to_force} if that is meant",
            entry.origin
        ),
        Some(suffix) => warnings.push(format!(
            "{} allows every site under the public suffix {suffix} ({how_to_force})",
            entry.origin
        )),
        None if forced => warnings.push(format!(
            "{}: {how_to_force} has no effect: it is not a wildcard over a public suffix",
            entry.origin
        )),
        None => {}
    }
    if entry.origin == "null" {
        warnings.push(
            "`null` is allowed: browsers send `Origin: null` from sandboxed iframes, data: and \
             file: documents and after cross-origin redirects, so any site can send requests \
             with it (by framing itself in a sandboxed iframe)"
                .to_owned(),
        );
    }
    Ok(warnings)
}

/// What a config that still has `on_incomplete` or `unsafe_on_incomplete`
/// is told: their meaning changed with the kernel's reading of whole
/// connections, so they are refused rather than read another way.
fn retired(key: &str) -> String {
    format!(
        "`{key}` is retired: requests are now judged whole across segments up to \
         `max_head_bytes` (default {}); a preflight or unsafe request with a longer head \
         is dropped unless `on_oversized_head = \"pass\"`. Remove `{key}` (and set \
         `on_oversized_head` if wanted)",
        stream::DEFAULT_MAX_HEAD_BYTES
    )
}

impl Config {
    /// Reads and parses `path`; every error is a config error
    /// ([`Kind::Config`]), whichever command meets it.
    pub fn load(path: &Path) -> Result<Config> {
        let source = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))
            .kind(Kind::Config)?;
        Self::parse(path, &source).kind(Kind::Config)
    }

    pub fn parse(path: &Path, source: &str) -> Result<Config> {
        let raw: RawConfig = toml::from_str(source).map_err(|e| toml_error(path, source, e))?;
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
        if let Some(setting) = &raw.on_incomplete {
            return Err(at(setting.span().start, retired("on_incomplete")).into());
        }
        if let Some(setting) = &raw.unsafe_on_incomplete {
            return Err(at(setting.span().start, retired("unsafe_on_incomplete")).into());
        }
        let default_protect = raw
            .protect_unsafe_methods
            .as_ref()
            .is_some_and(|p| *p.get_ref());
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
            if let Some(setting) = &port_settings.get_ref().unsafe_on_incomplete {
                return Err(at(
                    setting.span().start,
                    format!("[port.{key}]: {}", retired("unsafe_on_incomplete")),
                )
                .into());
            }
            settings.insert(port, port_settings);
        }
        let mut port_policies = BTreeMap::new();
        for port in &ports {
            let own = settings.get(port).map(|s| s.get_ref());
            let protect_unsafe = own
                .and_then(|s| s.protect_unsafe_methods)
                .unwrap_or(default_protect);
            let client_header = own.and_then(|s| s.client_address_header);
            port_policies.insert(
                *port,
                PortPolicy {
                    protect_unsafe,
                    client_header,
                },
            );
        }
        let bounded = |name: &str,
                       setting: &Option<Spanned<i64>>,
                       (min, max): (u32, u32),
                       default: u32|
         -> Result<u32> {
            let Some(setting) = setting else {
                return Ok(default);
            };
            let value = *setting.get_ref();
            match u32::try_from(value) {
                Ok(v) if (min..=max).contains(&v) => Ok(v),
                _ => Err(at(
                    setting.span().start,
                    format!("{name} = {value} is out of range: it must be {min} to {max}"),
                )
                .into()),
            }
        };
        let max_head_bytes = bounded(
            "max_head_bytes",
            &raw.max_head_bytes,
            MAX_HEAD_BYTES_RANGE,
            stream::DEFAULT_MAX_HEAD_BYTES,
        )?;
        let tables = TableSizes {
            max_connections: bounded(
                "max_connections",
                &raw.max_connections,
                MAX_CONNECTIONS_RANGE,
                DEFAULT_MAX_CONNECTIONS,
            )?,
            max_open_heads: bounded(
                "max_open_heads",
                &raw.max_open_heads,
                MAX_OPEN_HEADS_RANGE,
                DEFAULT_MAX_OPEN_HEADS,
            )?,
        };
        let mut allow: Vec<AllowEntry> = Vec::with_capacity(raw.allow.len());
        // Canonical origin -> its index in `allow`: a duplicate is found in
        // constant time, so a long allowlist loads in linear time.
        let mut listed: HashMap<String, usize> = HashMap::with_capacity(raw.allow.len());
        let mut warnings = Vec::new();
        for item in &raw.allow {
            let (origin, methods, force_public_suffix) = match item.get_ref() {
                RawAllowEntry::Origin(origin) => (origin, None, false),
                RawAllowEntry::WithMethods(table) => (
                    &table.origin,
                    table.methods.as_deref(),
                    table.force_public_suffix,
                ),
            };
            let line = |message: String| at(item.span().start, message);
            let mut parsed = parse_entry(origin).map_err(|e| line(e.to_string()))?;
            if let Some(methods) = methods {
                let methods = parse_methods(methods)
                    .map_err(|e| line(format!("origin {}: {e}", Shown(origin))))?;
                parsed = parsed.with_methods(methods);
            }
            if let Some(&first) = listed.get(&parsed.origin) {
                bail!(line(format!(
                    "{} is listed twice (as {:?})",
                    Shown(origin),
                    allow[first].origin
                )));
            }
            let vetted = vet_entry(&parsed, force_public_suffix, "force_public_suffix = true")
                .map_err(|e| line(e.to_string()))?;
            warnings.extend(vetted.into_iter().map(|w| line(w).to_string()));
            listed.insert(parsed.origin.clone(), allow.len());
            allow.push(parsed);
        }
        Ok(Config {
            ports: port_policies,
            allow,
            mode: raw.mode.unwrap_or(Mode::Enforce),
            on_oversized_head: raw.on_oversized_head.unwrap_or(OnIncomplete::Drop),
            max_head_bytes,
            // Unset: reset what comes through a proxy, drop the rest (see
            // `Action::ResetProxied`, which the file cannot spell).
            action: raw.action.unwrap_or(Action::ResetProxied),
            http2: raw.http2.unwrap_or(Http2::Drop),
            tables,
            warnings,
            allowlist_source: raw.allowlist_source.unwrap_or_default(),
        })
    }

    /// The policy the program enforces under this file: its settings (a
    /// `CONFIG` entry), ports and allowlist, with `mode` and `action`
    /// over the file's where given (`run --mode`, `--action`). What `run`,
    /// `reload` and `replay` install; the connection maps' sizes
    /// (`tables`) are not part of it.
    pub fn policy(self, mode: Option<Mode>, action: Option<Action>) -> Policy {
        let settings = FilterConfig::new(mode.unwrap_or(self.mode), self.on_oversized_head)
            .with_action(action.unwrap_or(self.action))
            .with_http2(self.http2);
        Policy {
            settings: FilterConfig {
                max_head_bytes: self.max_head_bytes,
                ..settings
            },
            ports: self.ports,
            allow: self.allow,
        }
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
            "ports = [80, 8080]\nallow = [\"https://app.example.com\", \"https://*.example.org\"]\nmode = \"monitor\"\non_oversized_head = \"pass\"\nmax_head_bytes = 8192\naction = \"reset\"\nmax_connections = 1048576\nmax_open_heads = 4096\n",
        )
        .unwrap();
        assert_eq!(c.ports.keys().copied().collect::<Vec<_>>(), [80, 8080]);
        assert_eq!(c.allow.len(), 2);
        assert_eq!(c.mode, Mode::Monitor);
        assert_eq!(c.on_oversized_head, OnIncomplete::Pass);
        assert_eq!(c.max_head_bytes, 8192);
        assert_eq!(c.action, Action::Reset);
        assert_eq!(c.http2, Http2::Drop);
        assert_eq!(
            c.tables,
            TableSizes {
                max_connections: 1 << 20,
                max_open_heads: 4096
            }
        );
    }

    /// The one conversion of a config file into what the program enforces
    /// (`run`, `reload` and `replay` all install [`Config::policy`]): every
    /// setting reaches the program's settings, the ports and the allowlist
    /// go as they are, and the command line's `mode` and `action` win over
    /// the file's.
    #[test]
    fn the_policy_is_the_file_with_the_command_line_over_it() {
        let source = "ports = [80, 8080]\nallow = [\"https://app.example.com\", { origin = \"https://b.example\", methods = [\"GET\"] }]\nmode = \"monitor\"\non_oversized_head = \"pass\"\nmax_head_bytes = 8192\naction = \"reset\"\nhttp2 = \"pass\"\nprotect_unsafe_methods = true\n[port.8080]\nclient_address_header = \"forwarded\"\n";
        let parse = || Config::parse(Path::new("x.toml"), source).unwrap();
        let file = parse();
        let ports = file.ports.clone();
        let allow: Vec<String> = file.allow.iter().map(ToString::to_string).collect();
        let policy = file.policy(None, None);
        let from_file = FilterConfig {
            max_head_bytes: 8192,
            ..FilterConfig::new(Mode::Monitor, OnIncomplete::Pass)
                .with_action(Action::Reset)
                .with_http2(Http2::Pass)
        };
        assert_eq!(policy.settings, from_file);
        assert!(!policy.settings.drop_incomplete() && !policy.settings.enforcing());
        assert_eq!(policy.ports, ports);
        let installed: Vec<String> = policy.allow.iter().map(ToString::to_string).collect();
        assert_eq!(installed, allow);

        let over = parse().policy(Some(Mode::Enforce), Some(Action::Drop));
        assert_eq!(
            over.settings,
            FilterConfig {
                mode: Mode::Enforce as u32,
                action: Action::Drop as u32,
                ..from_file
            }
        );
        assert!(over.settings.enforcing() && !over.settings.resets());

        // A file that sets nothing: the defaults.
        let bare = Config::parse(Path::new("x.toml"), "ports = [80]\n")
            .unwrap()
            .policy(None, None);
        assert_eq!(
            bare.settings,
            FilterConfig::new(Mode::Enforce, OnIncomplete::Drop).with_action(Action::ResetProxied)
        );
        assert_eq!(bare.settings.max_head_bytes, stream::DEFAULT_MAX_HEAD_BYTES);
        assert_eq!(bare.ports[&80], PortPolicy::default());
        assert!(bare.allow.is_empty());
    }

    #[test]
    fn connection_settings_have_defaults() {
        let c = Config::parse(Path::new("x.toml"), "ports = [80]\n").unwrap();
        assert_eq!(c.on_oversized_head, OnIncomplete::Drop);
        assert_eq!(c.max_head_bytes, stream::DEFAULT_MAX_HEAD_BYTES);
        assert_eq!(c.tables, TableSizes::default());
        assert_eq!(
            TableSizes::default(),
            TableSizes {
                max_connections: 262_144,
                max_open_heads: 16_384
            }
        );
        let settings = c.policy(Some(Mode::Monitor), Some(Action::Reset)).settings;
        assert!(settings.drop_incomplete() && settings.resets() && !settings.enforcing());
        assert_eq!(settings.max_head_bytes, 16_384);
        let c = Config::parse(
            Path::new("x.toml"),
            "ports = [80]\non_oversized_head = \"drop\"\n",
        )
        .unwrap();
        assert_eq!(c.on_oversized_head, OnIncomplete::Drop);
    }

    #[test]
    fn retired_settings_are_refused_with_what_replaced_them() {
        for (source, line, key) in [
            (
                "ports = [80]\non_incomplete = \"pass\"\n",
                2,
                "on_incomplete",
            ),
            (
                "ports = [80]\n\non_incomplete = \"drop\"\n",
                3,
                "on_incomplete",
            ),
            (
                "ports = [80]\nprotect_unsafe_methods = true\nunsafe_on_incomplete = \"pass\"\n",
                3,
                "unsafe_on_incomplete",
            ),
            (
                "ports = [80]\nunsafe_on_incomplete = \"drop\"\n",
                2,
                "unsafe_on_incomplete",
            ),
            (
                "ports = [80]\nprotect_unsafe_methods = true\n[port.80]\nunsafe_on_incomplete = \"pass\"\n",
                4,
                "unsafe_on_incomplete",
            ),
            // Whatever the value, even one the old setting did not take.
            ("ports = [80]\non_incomplete = 3\n", 2, "on_incomplete"),
        ] {
            let e = err(source);
            assert!(
                e.starts_with(&format!("/etc/cf.toml:{line}: "))
                    || e.contains(&format!("/etc/cf.toml:{line}: [port.80]: ")),
                "{e}"
            );
            assert!(
                e.contains(&format!("`{key}` is retired"))
                    && e.contains("judged whole across segments")
                    && e.contains("max_head_bytes")
                    && e.contains("on_oversized_head = \"pass\""),
                "{e}"
            );
        }
        let e = err(
            "ports = [80]\nprotect_unsafe_methods = true\n[port.80]\nunsafe_on_incomplete = \"pass\"\n",
        );
        assert!(e.contains("[port.80]"), "{e}");
    }

    #[test]
    fn sizes_out_of_range_are_named() {
        for (setting, bad, range) in [
            ("max_head_bytes", "1023", "1024 to 65536"),
            ("max_head_bytes", "65537", "1024 to 65536"),
            ("max_head_bytes", "-1", "1024 to 65536"),
            ("max_connections", "1023", "1024 to 4194304"),
            ("max_connections", "4194305", "1024 to 4194304"),
            ("max_connections", "99999999999", "1024 to 4194304"),
            ("max_open_heads", "255", "256 to 262144"),
            ("max_open_heads", "262145", "256 to 262144"),
        ] {
            let e = err(&format!("ports = [80]\n\n{setting} = {bad}\n"));
            assert_eq!(
                e,
                format!("/etc/cf.toml:3: {setting} = {bad} is out of range: it must be {range}"),
            );
        }
        for (setting, good) in [
            ("max_head_bytes", 1024),
            ("max_head_bytes", 65536),
            ("max_connections", 1024),
            ("max_connections", 4194304),
            ("max_open_heads", 256),
            ("max_open_heads", 262144),
        ] {
            let c = Config::parse(
                Path::new("x.toml"),
                &format!("ports = [80]\n{setting} = {good}\n"),
            )
            .unwrap();
            let got = match setting {
                "max_head_bytes" => c.max_head_bytes,
                "max_connections" => c.tables.max_connections,
                _ => c.tables.max_open_heads,
            };
            assert_eq!(got, good, "{setting}");
        }
        let e = err("ports = [80]\nmax_head_bytes = \"16k\"\n");
        assert!(e.contains("line 2") && e.contains("16k"), "{e}");
        let e = err("ports = [80]\non_oversized_head = \"maybe\"\n");
        assert!(e.contains("line 2") && e.contains("maybe"), "{e}");
    }

    #[test]
    fn action_defaults_to_reset_behind_a_proxy_and_drop_otherwise() {
        let c = Config::parse(Path::new("x.toml"), "ports = [80]\n").unwrap();
        assert_eq!(c.action, Action::ResetProxied);
        let settings = c.policy(None, None).settings;
        assert!(settings.for_connection(true).resets());
        assert!(!settings.for_connection(false).resets());
        let c = Config::parse(Path::new("x.toml"), "ports = [80]\naction = \"reset\"\n").unwrap();
        assert!(c.policy(None, None).settings.for_connection(false).resets());
        let c = Config::parse(Path::new("x.toml"), "ports = [80]\naction = \"drop\"\n").unwrap();
        assert_eq!(c.action, Action::Drop);
    }

    #[test]
    fn a_port_may_trust_a_client_header() {
        let c = Config::parse(
            Path::new("x.toml"),
            "ports = [80, 8080, 8443]\n[port.8080]\nclient_address_header = \"x-forwarded-for\"\n[port.8443]\nclient_address_header = \"forwarded\"\n",
        )
        .unwrap();
        assert_eq!(c.ports[&80].client_header, None);
        assert_eq!(
            c.ports[&8080].client_header,
            Some(ClientHeader::XForwardedFor)
        );
        assert_eq!(c.ports[&8443].client_header, Some(ClientHeader::Forwarded));
        assert_eq!(
            c.ports[&8080].flags(),
            cors_filter_common::PortFlags::INSPECT
                | cors_filter_common::PortFlags::CLIENT_X_FORWARDED_FOR
        );
        let e = err("ports = [80]\n[port.80]\nclient_address_header = \"x-real-ip\"\n");
        assert!(e.contains("line 3") && e.contains("x-real-ip"), "{e}");
    }

    #[test]
    fn http2_defaults_to_drop_and_reaches_the_settings() {
        let c = Config::parse(Path::new("x.toml"), "ports = [80]\n").unwrap();
        assert_eq!(c.http2, Http2::Drop);
        assert!(!c.policy(None, None).settings.passes_http2());
        let c = Config::parse(Path::new("x.toml"), "ports = [80]\nhttp2 = \"pass\"\n").unwrap();
        assert_eq!(c.http2, Http2::Pass);
        assert!(c.policy(None, None).settings.passes_http2());
        let e = err("ports = [80]\nhttp2 = \"h2c\"\n");
        assert!(e.contains("line 2") && e.contains("h2c"), "{e}");
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

    /// The ports that protect unsafe methods, and the ports whose flags
    /// have the retired `PASS_INCOMPLETE_UNSAFE` (none, ever).
    fn protected(c: &Config) -> (Vec<u16>, Vec<u16>) {
        let ports = |wanted: &dyn Fn(&PortPolicy) -> bool| {
            c.ports
                .iter()
                .filter(|(_, p)| wanted(p))
                .map(|(port, _)| *port)
                .collect::<Vec<u16>>()
        };
        (
            ports(&|p| p.protect_unsafe),
            ports(&|p| p.flags() & cors_filter_common::PortFlags::PASS_INCOMPLETE_UNSAFE != 0),
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
        let e = err("ports = [80]\n[port.80]\nprotect = true\n");
        assert!(e.contains("protect"), "{e}");
        let e = err("ports = [80]\nprotect_unsafe_methods = \"yes\"\n");
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn wildcards_over_public_suffixes_only_when_forced() {
        let e = err("ports = [80]\nallow = [\n  \"https://*.github.io\",\n]\n");
        assert!(
            e.contains("/etc/cf.toml:3:")
                && e.contains("public suffix github.io")
                && e.contains("force_public_suffix = true"),
            "{e}"
        );
        let forced = Config::parse(
            Path::new("x.toml"),
            "ports = [80]\nallow = [{ origin = \"https://*.github.io\", force_public_suffix = true }]\n",
        )
        .unwrap();
        assert_eq!(forced.allow[0].origin, "https://*.github.io");
        assert!(
            forced.warnings.len() == 1 && forced.warnings[0].contains("x.toml:2:"),
            "{:?}",
            forced.warnings
        );
        let pointless = Config::parse(
            Path::new("x.toml"),
            "ports = [80]\nallow = [{ origin = \"https://*.example.com\", force_public_suffix = true }]\n",
        )
        .unwrap();
        assert!(pointless.warnings[0].contains("has no effect"));
    }

    #[test]
    fn null_is_allowed_with_a_warning() {
        let c = Config::parse(
            Path::new("x.toml"),
            "ports = [80]\nallow = [\"https://a.example\", \"null\"]\n",
        )
        .unwrap();
        assert_eq!(c.allow[1].origin, "null");
        assert!(
            c.warnings.len() == 1 && c.warnings[0].contains("sandboxed iframe"),
            "{:?}",
            c.warnings
        );
        let quiet = Config::parse(
            Path::new("x.toml"),
            "ports = [80]\nallow = [\"https://a.example\"]\n",
        );
        assert!(quiet.unwrap().warnings.is_empty());
    }

    /// A 10 MB value is named, not echoed, wherever the error comes from.
    #[test]
    fn errors_cut_long_values() {
        let huge = "a".repeat(10 << 20);
        for source in [
            format!("ports = [80]\nallow = [\"https://{huge}.example/\"]\n"),
            format!(
                "ports = [80]\nallow = [\"https://a.example\", \"https://A.example\"]\nmode = \"{huge}\"\n"
            ),
            format!(
                "ports = [80]\nallow = [{{ origin = \"https://{huge}.example\", methods = [\"get\"] }}]\n"
            ),
            format!(
                "ports = [80]\nallow = [{{ origin = \"https://b.example\", methods = [\"{huge}\"] }}]\n"
            ),
            format!("ports = [80]\nallow = [\"https://{huge}"),
            format!("ports = [80]\n{huge} = 1\n"),
        ] {
            let e = err(&source);
            assert!(e.len() < 1000, "{} bytes: {}", e.len(), &e[..300]);
        }
    }

    /// Duplicates are found by a map, not a scan: 100,000 entries load in
    /// well under a second (a scan took 27 s).
    #[test]
    fn a_long_allowlist_loads_in_linear_time() {
        let entries = 100_000;
        let mut source = String::from("ports = [80]\nallow = [\n");
        for i in 0..entries {
            source.push_str(&format!("  \"https://app{i}.example{}.com\",\n", i % 97));
        }
        source.push_str("]\n");
        let started = std::time::Instant::now();
        let c = Config::parse(Path::new("x.toml"), &source).unwrap();
        let took = started.elapsed();
        assert_eq!(c.allow.len(), entries);
        eprintln!("{entries} entries parsed in {took:?}");
        assert!(took < std::time::Duration::from_secs(2), "{took:?}");
    }

    #[test]
    fn missing_file_is_named() {
        let e = format!(
            "{:#}",
            Config::load(Path::new("/nonexistent/cf.toml")).unwrap_err()
        );
        assert!(e.contains("/nonexistent/cf.toml"), "{e}");
    }

    #[test]
    fn allowlist_source_defaults_to_config_and_local_and_names_a_bad_value() {
        let parse = |s: &str| Config::parse(Path::new("/etc/cf.toml"), s);
        assert_eq!(
            parse("ports = [80]\n").unwrap().allowlist_source,
            AllowlistSource::ConfigAndLocal
        );
        let only = parse("ports = [80]\nallowlist_source = \"config\"\n").unwrap();
        assert_eq!(only.allowlist_source, AllowlistSource::Config);
        let both = parse("ports = [80]\nallowlist_source = \"config-and-local\"\n").unwrap();
        assert_eq!(both.allowlist_source, AllowlistSource::ConfigAndLocal);
        let e = err("ports = [80]\nallowlist_source = \"local\"\n");
        assert!(e.contains("local") && e.contains("config-and-local"), "{e}");
    }
}
