//! `cors-filter allow add|remove|list|reset`: edits the running filter's
//! pinned allowlist at once and records the change on disk for the next
//! start and reload; `reset` drops every recorded change.

use std::{
    collections::BTreeMap,
    fmt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, anyhow};
use cors_filter_common::{Method, MethodSet, pinned::name};
use serde::Serialize;

use crate::{
    allow_entry::{decode_entry, parse_entry, parse_methods},
    commands::reload::{RunRecord, install_locked},
    config::{AllowlistSource, Config, vet_entry},
    drift::LocalChanges,
    exit::{Classify as _, Kind},
    kernel::pins::{pin_exists, pin_path},
    kernel::policy::PolicyMaps,
    shown::Shown,
    state::{AllowlistChanges, StateDir},
};

/// `allow add` or `allow remove` under `allowlist_source = "config"`:
/// refused, as its own error type so that callers can tell it apart.
#[derive(Debug)]
pub struct LocalChangesRefused {
    /// The config file that sets it.
    pub config: PathBuf,
}

impl fmt::Display for LocalChangesRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "local allowlist changes are refused: {} sets allowlist_source = \"config\", which makes the config file the only source of the allowlist; change its `allow` instead (the daemon reloads it), or set allowlist_source = \"config-and-local\"",
            self.config.display()
        )
    }
}

impl std::error::Error for LocalChangesRefused {}

/// Refuses a local edit when the running filter's config file sets
/// `allowlist_source = "config"`. With no run recorded there is no config
/// to ask, and the edit is recorded as before.
fn check_local_changes_allowed(state: &StateDir) -> Result<()> {
    let Some(record) = RunRecord::load_if_any(state)? else {
        return Ok(());
    };
    let config = Config::load(&record.config).context(
        "cannot tell whether the config allows local allowlist changes (allowlist_source)",
    )?;
    if config.allowlist_source == AllowlistSource::Config {
        // What the config says, hence the config's exit code.
        return Err(LocalChangesRefused {
            config: record.config,
        })
        .kind(Kind::Config);
    }
    Ok(())
}

/// The running filter's policy maps, if a filter is pinned in `pin_dir`.
fn running_policy(pin_dir: &Path) -> Result<Option<PolicyMaps>> {
    if !pin_exists(&pin_path(pin_dir, name::ACTIVE))? {
        return Ok(None);
    }
    PolicyMaps::open(pin_dir).map(Some)
}

fn not_running_note(pin_dir: &Path, state: &StateDir) {
    eprintln!(
        "note: no cors-filter is running with pins in {}; the change is saved in {} and applies when it starts",
        pin_dir.display(),
        state.changes_path().display()
    );
}

/// An allowlist edit.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Allow the origin with these methods (`MethodSet::ANY`: every one).
    Add(MethodSet),
    Remove,
}

/// `allow add TEXT [--methods M,...] [--force-public-suffix]`: every
/// method when none are given; checked by [`vet_entry`] first.
pub fn add(
    pin_dir: &Path,
    state_dir: &Path,
    text: &str,
    methods: Option<&[String]>,
    force_public_suffix: bool,
) -> Result<()> {
    let methods = match methods {
        Some(names) => parse_methods(names)
            .map_err(|e| anyhow!("--methods for {}: {e}", Shown(text)))
            .kind(Kind::Config)?,
        None => MethodSet::ANY,
    };
    let entry = parse_entry(text).kind(Kind::Config)?;
    for warning in
        vet_entry(&entry, force_public_suffix, "--force-public-suffix").kind(Kind::Config)?
    {
        log::warn!("{warning}");
    }
    edit(pin_dir, state_dir, Change::Add(methods), text)
}

/// Applies `change` of `text`: records it on disk first (under the lock,
/// so concurrent edits and reloads serialise), then in the allowlist the
/// running filter reads now (the next reload builds its policy from the
/// record); if the map refuses it, the record is rolled back.
pub fn edit(pin_dir: &Path, state_dir: &Path, change: Change, text: &str) -> Result<()> {
    let mut entry = parse_entry(text).kind(Kind::Config)?;
    if let Change::Add(methods) = change {
        entry = entry.with_methods(methods);
    }
    let state = StateDir::open(state_dir)?;
    let _lock = state.lock_allowlist()?;
    check_local_changes_allowed(&state)?;
    let before = state.load_changes()?;
    let mut changes = state.load_changes()?;
    match change {
        Change::Add(methods) => changes.record_add(&entry.origin, methods),
        Change::Remove => changes.record_remove(&entry.origin),
    }
    // Opened first: pins of a layout this build does not read are refused
    // before anything is saved.
    let running = running_policy(pin_dir)?;
    state.save_changes(&changes)?;
    let Some(mut policy) = running else {
        not_running_note(pin_dir, &state);
        return Ok(());
    };
    let origin = &entry.origin;
    let applied = match change {
        Change::Add(_) => policy
            .add_to_active(&entry)
            .map(|()| format!("allowed {entry}")),
        Change::Remove => policy.remove_from_active(&entry).map(|removed| {
            if removed {
                format!("removed {origin}")
            } else {
                format!("{origin} was not in the running allowlist; recorded as removed")
            }
        }),
    };
    match applied {
        Ok(done) => {
            println!("{done}");
            Ok(())
        }
        Err(e) => {
            state.save_changes(&before)?;
            Err(e).with_context(|| {
                format!(
                    "cannot change origin {} in the running filter",
                    entry.origin
                )
            })
        }
    }
}

/// Where an entry of `allow list --source` comes from.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The config file's `allow`.
    Config,
    /// `allow add` (an origin the config does not list, or lists with
    /// other methods).
    Local,
    /// Listed by the config, taken out by `allow remove`: not allowed.
    LocalRemoval,
    /// In the running allowlist, but neither in the config file as it is
    /// now nor among the local changes: the file changed since the last
    /// reload.
    Unrecorded,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Config => "config",
            Source::Local => "local",
            Source::LocalRemoval => "local-removal",
            Source::Unrecorded => "unrecorded",
        }
    }
}

/// One line of `allow list`.
#[derive(Serialize, Debug)]
pub struct Listed {
    pub origin: String,
    /// `None`: every method.
    pub methods: Option<Vec<&'static str>>,
    /// Whether the running filter allows it (false only for a
    /// `local-removal`).
    pub allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
}

fn method_names(methods: MethodSet) -> Option<Vec<&'static str>> {
    (methods != MethodSet::ANY).then(|| methods.known().map(Method::name).collect())
}

impl fmt::Display for Listed {
    /// `origin` or `origin methods=GET,PUT`, after the source's column
    /// when there is one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(source) = self.source {
            write!(f, "{:<14}", source.as_str())?;
        }
        write!(f, "{}", self.origin)?;
        if let Some(methods) = &self.methods {
            write!(f, " methods={}", methods.join(","))?;
        }
        Ok(())
    }
}

/// `allow list [--json] [--source]`: the running allowlist, sorted; with
/// `sources`, each entry's source and the config's entries removed locally.
/// A state directory others could have written is refused first, as `run`
/// refuses it.
pub fn list(pin_dir: &Path, state_dir: &Path, json: bool, sources: bool) -> Result<()> {
    StateDir::existing(state_dir)?;
    let mut policy = PolicyMaps::open(pin_dir)?;
    let map = policy.active_allowlist()?;
    let mut listed = Vec::new();
    for entry in map.iter() {
        let (_, value) = entry.context("cannot iterate the allowlist")?;
        listed.push(Listed {
            origin: decode_entry(&value).map_err(anyhow::Error::msg)?,
            methods: method_names(MethodSet(value.methods)),
            allowed: true,
            source: None,
        });
    }
    if sources {
        add_sources(state_dir, &mut listed)?;
    }
    listed.sort_by(|a, b| (&a.origin, !a.allowed).cmp(&(&b.origin, !b.allowed)));
    if json {
        println!("{}", serde_json::to_string_pretty(&listed)?);
    } else {
        for entry in listed {
            println!("{entry}");
        }
    }
    Ok(())
}

/// Gives each entry of the running allowlist its source, from the config
/// file of the run and the recorded changes, and adds the config's
/// entries removed locally.
fn add_sources(state_dir: &Path, listed: &mut Vec<Listed>) -> Result<()> {
    let state = StateDir::open(state_dir)?;
    let record = RunRecord::load(&state).context("cannot tell where the entries come from")?;
    let config = Config::load(&record.config)?;
    let local = LocalChanges::recorded(&config, &state)?;
    let in_config: BTreeMap<&str, MethodSet> = config
        .allow
        .iter()
        .map(|e| (e.origin.as_str(), e.methods()))
        .collect();
    let added: BTreeMap<&str, MethodSet> = local
        .added
        .iter()
        .map(|e| (e.origin.as_str(), e.methods()))
        .collect();
    let mut unrecorded = 0;
    for entry in listed.iter_mut() {
        let methods = entry.methods.as_ref().map_or(MethodSet::ANY, |names| {
            names
                .iter()
                .filter_map(|n| Method::KNOWN.into_iter().find(|m| m.name() == *n))
                .fold(MethodSet::NONE, MethodSet::with)
        });
        let origin = entry.origin.as_str();
        let source = if added.get(origin) == Some(&methods) {
            Source::Local
        } else if in_config.get(origin) == Some(&methods) {
            Source::Config
        } else {
            unrecorded += 1;
            Source::Unrecorded
        };
        entry.source = Some(source);
    }
    for removed in &local.removed {
        listed.push(Listed {
            origin: removed.origin.clone(),
            methods: method_names(removed.methods()),
            allowed: false,
            source: Some(Source::LocalRemoval),
        });
    }
    if unrecorded > 0 {
        eprintln!(
            "warning: {unrecorded} running entr{} neither in {} as it is now nor among the local changes: the file changed since the last reload; `cors-filter reload` applies it",
            if unrecorded == 1 { "y is" } else { "ies are" },
            record.config.display()
        );
    }
    Ok(())
}

/// `allow reset`: drops every recorded change and installs exactly the
/// config's allowlist, as a new policy generation (atomically, as a
/// reload does); prints what was dropped. If the config is refused,
/// nothing changes.
pub fn reset(pin_dir: &Path, state_dir: &Path) -> Result<()> {
    let state = StateDir::open(state_dir)?;
    let _lock = state.lock_allowlist()?;
    let before = match state.load_changes() {
        Ok(changes) => Some(changes),
        Err(e) => {
            eprintln!("warning: {e:#}: dropped whole");
            None
        }
    };
    let running = pin_exists(&pin_path(pin_dir, name::ACTIVE))?;
    let record = if running {
        Some(RunRecord::load(&state)?)
    } else {
        None
    };
    state.save_changes(&AllowlistChanges::default())?;
    if let Some(record) = record {
        match install_locked(pin_dir, &state, &record) {
            Ok(done) => println!("{}", done.message),
            Err(e) => {
                if let Some(before) = &before {
                    state.save_changes(before)?;
                }
                return Err(e.context("allow reset refused; the local changes are kept"));
            }
        }
    } else {
        eprintln!(
            "note: no cors-filter is running with pins in {}; the config's allowlist applies when it starts",
            pin_dir.display()
        );
    }
    let Some(before) = before else {
        return Ok(());
    };
    for origin in &before.added {
        match before.methods.get(origin) {
            Some(methods) => println!(
                "dropped local addition {origin} methods={}",
                methods.join(",")
            ),
            None => println!("dropped local addition {origin}"),
        }
    }
    for origin in &before.removed {
        println!("dropped local removal {origin}");
    }
    if before.added.is_empty() && before.removed.is_empty() {
        println!("no local changes recorded");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_entries_print_their_source_column_and_json() {
        let entry = |source, allowed, methods: Option<Vec<&'static str>>| Listed {
            origin: "https://a.example".into(),
            methods,
            allowed,
            source,
        };
        let plain = entry(None, true, Some(vec!["GET", "PUT"]));
        assert_eq!(plain.to_string(), "https://a.example methods=GET,PUT");
        assert_eq!(
            serde_json::to_value(&plain).unwrap(),
            serde_json::json!({"origin": "https://a.example", "methods": ["GET", "PUT"], "allowed": true})
        );
        let removed = entry(Some(Source::LocalRemoval), false, None);
        assert_eq!(removed.to_string(), "local-removal https://a.example");
        assert_eq!(
            serde_json::to_value(&removed).unwrap(),
            serde_json::json!({"origin": "https://a.example", "methods": null, "allowed": false, "source": "local-removal"})
        );
        for source in [
            Source::Config,
            Source::Local,
            Source::LocalRemoval,
            Source::Unrecorded,
        ] {
            // One spelling for the text and the JSON.
            assert_eq!(serde_json::to_value(source).unwrap(), source.as_str());
        }
        assert_eq!(
            method_names(MethodSet::NONE.with(Method::Get)),
            Some(vec!["GET"])
        );
        assert_eq!(method_names(MethodSet::ANY), None);
    }
}
