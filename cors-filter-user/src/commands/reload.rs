//! `cors-filter reload` and SIGHUP: re-read the config file the filter was
//! started with and install it, with the `allow` changes over it, as a new
//! policy generation (see `policy`). A config that does not load is
//! refused and the running policy stays as it was.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use cors_filter_common::{Action, Mode};
use serde::{Deserialize, Serialize};

use crate::{
    allow_entry::AllowEntry,
    config::{AllowlistSource, Config, TableSizes},
    exit::{Kind, mark},
    kernel::pins::pinned_max_entries,
    kernel::policy::{Policy, PolicyMaps},
    state::StateDir,
};

const RUN_RECORD_FILE: &str = "run.json";

/// What `run` was started with that makes the policy: kept in the state
/// directory so that a reload, from the daemon or from the CLI (even after
/// the daemon died), rebuilds the same policy from the edited file.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RunRecord {
    /// The config file, as an absolute path.
    pub config: PathBuf,
    /// `--mode`, which overrides the file's `mode`.
    pub mode: Option<Mode>,
    /// `--action`, which overrides the file's `action` (`drop` or
    /// `reset`: the command line cannot give `Action::ResetProxied`).
    pub action: Option<Action>,
}

impl RunRecord {
    /// Its file in the state directory.
    pub const FILE: &str = RUN_RECORD_FILE;

    pub fn new(config: &Path, mode: Option<Mode>, action: Option<Action>) -> Result<RunRecord> {
        let config = std::path::absolute(config)
            .with_context(|| format!("cannot resolve the path {}", config.display()))?;
        Ok(RunRecord {
            config,
            mode,
            action,
        })
    }

    pub fn save(&self, state: &StateDir) -> Result<()> {
        let mut text = serde_json::to_string_pretty(self)?;
        text.push('\n');
        state.write_atomically(RUN_RECORD_FILE, &text)
    }

    pub fn load(state: &StateDir) -> Result<RunRecord> {
        let path = state.path(RUN_RECORD_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(mark(
                    anyhow::anyhow!(
                        "nothing to reload: {} does not exist (no `cors-filter run` has started with this --state-dir)",
                        path.display()
                    ),
                    Kind::NotRunning,
                ));
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        serde_json::from_str(&text)
            .with_context(|| format!("corrupt run record {}", path.display()))
    }

    /// The record, or `None` if no `run` has saved one.
    pub fn load_if_any(state: &StateDir) -> Result<Option<RunRecord>> {
        if !state.path(RUN_RECORD_FILE).try_exists().unwrap_or(true) {
            return Ok(None);
        }
        Self::load(state).map(Some)
    }

    /// The policy this record makes now: the config file as it is on
    /// disk, `--mode` over it, and the `allow` changes over its allowlist.
    pub fn policy(&self, state: &StateDir) -> Result<Policy> {
        Ok(self.policy_and_tables(state)?.0)
    }

    /// [`Self::policy`], and the sizes the file gives the connection maps.
    pub fn policy_and_tables(&self, state: &StateDir) -> Result<(Policy, TableSizes)> {
        let resolved = self.resolve(state)?;
        Ok((resolved.policy, resolved.tables))
    }

    /// The policy this record makes now, the sizes of the connection maps,
    /// and the config's own allowlist (for the drift, see `drift`). With
    /// `allowlist_source = "config"` the recorded `allow` changes are not
    /// applied, and a warning says how many there are.
    pub fn resolve(&self, state: &StateDir) -> Result<Resolved> {
        let config = Config::load(&self.config)?;
        for warning in &config.warnings {
            log::warn!("{warning}");
        }
        let tables = config.tables;
        let source = config.allowlist_source;
        let mut policy = config.policy(self.mode, self.action);
        let base = AllowBase {
            allow: policy.allow.clone(),
            source,
        };
        if source == AllowlistSource::Config {
            self.warn_ignored_changes(state);
            return Ok(Resolved {
                policy,
                tables,
                base,
            });
        }
        let changes = state.load_changes()?;
        for entry in policy
            .allow
            .iter()
            .filter(|e| changes.removed.contains(&e.origin))
        {
            log::warn!(
                "{} lists {}, but `cors-filter allow remove` removed it (recorded in {}); it stays removed until `cors-filter allow add {}`",
                self.config.display(),
                entry.origin,
                state.changes_path().display(),
                entry.origin
            );
        }
        let allow = changes.apply(&policy.allow, &state.changes_path())?;
        let applied_by_origin: HashMap<&str, &AllowEntry> =
            allow.iter().map(|a| (a.origin.as_str(), a)).collect();
        // An `allow add` made before the config listed the origin (or
        // changed its methods) still decides its methods: say so.
        for (listed, applied) in policy.allow.iter().filter_map(|listed| {
            let applied = *applied_by_origin.get(listed.origin.as_str())?;
            (applied.methods() != listed.methods()).then_some((listed, applied))
        }) {
            log::warn!(
                "{} lists {listed}, but `cors-filter allow add` set {applied} (recorded in {}); that applies until the next `cors-filter allow add {}` or `allow remove`",
                self.config.display(),
                state.changes_path().display(),
                listed.origin
            );
        }
        policy.allow = allow;
        Ok(Resolved {
            policy,
            tables,
            base,
        })
    }

    /// Under `allowlist_source = "config"`: warns of the changes recorded
    /// with `allow` that are not applied, naming how to remove them.
    fn warn_ignored_changes(&self, state: &StateDir) {
        let path = state.changes_path();
        match state.load_changes() {
            Ok(changes) => {
                let ignored = changes.added.len() + changes.removed.len();
                if ignored > 0 {
                    log::warn!(
                        "{}: allowlist_source = \"config\": {ignored} local allowlist change(s) recorded in {} are not applied; `cors-filter allow reset` removes them",
                        self.config.display(),
                        path.display()
                    );
                }
            }
            Err(e) => log::warn!(
                "{}: allowlist_source = \"config\": the local allowlist changes are not applied, and cannot be read ({e:#}); `cors-filter allow reset` removes them",
                self.config.display()
            ),
        }
    }

    /// Refuses sizes of the connection maps other than those of the maps
    /// pinned in `pin_dir`: a map's size is set when it is made, and the
    /// pinned ones live until `detach --all`.
    pub fn check_tables(&self, pin_dir: &Path, tables: TableSizes) -> Result<()> {
        for (map, setting, size) in tables.maps() {
            match pinned_max_entries(pin_dir, map)? {
                Some(pinned) if pinned != size => {
                    return Err(mark(
                        anyhow::anyhow!(
                            "{}: {setting} = {size}, but the running filter's {map} map has {pinned} entries, and the size of a pinned map cannot change; set {setting} = {pinned} again, or apply it with `cors-filter detach --all` and a restart of `cors-filter run` (the host is unfiltered in between, and the connections followed are forgotten)",
                            self.config.display()
                        ),
                        Kind::Config,
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// What [`RunRecord::resolve`] makes of the config and the state.
pub struct Resolved {
    pub policy: Policy,
    pub tables: TableSizes,
    pub base: AllowBase,
}

/// The config's own allowlist and where the allowlist comes from: what
/// the local changes are measured against (see `drift`).
#[derive(Debug, Clone, Default)]
pub struct AllowBase {
    pub allow: Vec<AllowEntry>,
    pub source: AllowlistSource,
}

/// A reload done: a line saying what is now enforced, and the base of
/// the policy installed.
pub struct Reloaded {
    pub message: String,
    pub base: AllowBase,
}

/// Installs the recorded config's policy in the filter pinned in `pin_dir`.
/// Returns a line saying what is now enforced.
pub fn reload(pin_dir: &Path, state_dir: &Path) -> Result<String> {
    reload_reporting(pin_dir, state_dir).map(|done| done.message)
}

/// [`reload`], with the base of the policy it installed.
pub fn reload_reporting(pin_dir: &Path, state_dir: &Path) -> Result<Reloaded> {
    let state = StateDir::open(state_dir)?;
    // Serialises with `allow` edits and other reloads.
    let _lock = state.lock_allowlist()?;
    let record = RunRecord::load(&state)?;
    install_locked(pin_dir, &state, &record)
}

/// Installs `record`'s policy; the caller holds the allowlist lock.
pub fn install_locked(pin_dir: &Path, state: &StateDir, record: &RunRecord) -> Result<Reloaded> {
    // Pins a downgrade left are refused as such (exit code 7) before the
    // config is held to their sizes.
    crate::kernel::layout::refuse_newer(pin_dir)?;
    let resolved = record
        .resolve(state)
        .and_then(|resolved| {
            record.check_tables(pin_dir, resolved.tables)?;
            Ok(resolved)
        })
        .context("reload refused; the running policy is unchanged")?;
    let policy = resolved.policy;
    let mut maps = PolicyMaps::open(pin_dir)?;
    let installed = maps.install(&policy)?;
    Ok(Reloaded {
        message: format!(
            "reloaded {}: policy {installed} installed, {}, {} allowed origin(s)",
            record.config.display(),
            policy.describe_ports(),
            policy.allow.len()
        ),
        base: resolved.base,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_with_an_absolute_path() {
        let dir =
            std::env::temp_dir().join(format!("cors-filter-run-record-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let state = StateDir::open(&dir).unwrap();
        let record = RunRecord::new(
            Path::new("relative.toml"),
            Some(Mode::Monitor),
            Some(Action::Reset),
        )
        .unwrap();
        assert!(record.config.is_absolute());
        record.save(&state).unwrap();
        assert_eq!(RunRecord::load(&state).unwrap(), record);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_record_is_named() {
        let dir =
            std::env::temp_dir().join(format!("cors-filter-no-record-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let state = StateDir::open(&dir).unwrap();
        let e = format!("{:#}", RunRecord::load(&state).unwrap_err());
        assert!(
            e.contains("run.json") && e.contains("nothing to reload"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
