//! Local drift: how the allowlist in force departs from the config's own
//! `allow` because of `cors-filter allow` edits. One computation, for
//! `/metrics` (`cors_filter_allowlist_local_changes`), `allow list
//! --source` and `status`.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
};

use anyhow::Result;
use serde::Serialize;

use crate::{
    allow_entry::AllowEntry,
    config::{AllowlistSource, Config},
    state::{AllowlistChanges, StateDir},
};

/// The recorded changes that make a difference now.
#[derive(Debug, Default, Clone)]
pub struct LocalChanges {
    /// Entries allowed by `allow add` that the config does not list, or
    /// lists with other methods; as applied.
    pub added: Vec<AllowEntry>,
    /// Entries of the config taken out by `allow remove`; as the config
    /// lists them.
    pub removed: Vec<AllowEntry>,
}

/// How many recorded changes make a difference now, by kind.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drift {
    pub added: usize,
    pub removed: usize,
}

impl LocalChanges {
    /// The changes of `changes` (read from `path`, named in errors) that
    /// make a difference to `config`'s allowlist under `source`: none with
    /// [`AllowlistSource::Config`], which applies no recorded change. An
    /// origin added with the methods the config gives it, or removed when
    /// the config does not list it, is no drift.
    pub fn of(
        config: &[AllowEntry],
        changes: &AllowlistChanges,
        source: AllowlistSource,
        path: &Path,
    ) -> Result<LocalChanges> {
        let mut local = LocalChanges::default();
        if source == AllowlistSource::Config {
            return Ok(local);
        }
        let listed: HashMap<&str, &AllowEntry> =
            config.iter().map(|e| (e.origin.as_str(), e)).collect();
        for origin in &changes.added {
            let entry = changes.added_entry(origin, path)?;
            let same = listed
                .get(entry.origin.as_str())
                .is_some_and(|l| l.methods() == entry.methods());
            if !same && !changes.removed.contains(&entry.origin) {
                local.added.push(entry);
            }
        }
        for origin in &changes.removed {
            if let Some(listed) = listed.get(origin.as_str()) {
                local.removed.push((*listed).clone());
            }
        }
        Ok(local)
    }

    /// [`LocalChanges::of`] the changes recorded in `state` to `config`.
    pub fn recorded(config: &Config, state: &StateDir) -> Result<LocalChanges> {
        let changes = state.load_changes()?;
        LocalChanges::of(
            &config.allow,
            &changes,
            config.allowlist_source,
            &state.changes_path(),
        )
    }

    pub fn drift(&self) -> Drift {
        Drift {
            added: self.added.len(),
            removed: self.removed.len(),
        }
    }
}

/// The origins of [`LocalChanges`], as `status` shows them: an origin
/// added that the config lists with other methods is `methods_changed`.
#[derive(Serialize, Debug, Default, Clone, PartialEq, Eq)]
pub struct DriftOrigins {
    /// Allowed, but not listed by the config.
    pub added: Vec<String>,
    /// Listed by the config, but not allowed.
    pub removed: Vec<String>,
    /// Listed by the config, and allowed with other methods than it gives.
    pub methods_changed: Vec<String>,
}

impl DriftOrigins {
    /// No origin differs.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.methods_changed.is_empty()
    }

    /// How many origins differ.
    pub fn len(&self) -> usize {
        self.added.len() + self.removed.len() + self.methods_changed.len()
    }
}

impl LocalChanges {
    /// The origins of these changes to `config`'s allowlist, sorted.
    pub fn origins(&self, config: &[AllowEntry]) -> DriftOrigins {
        let listed: HashSet<&str> = config.iter().map(|e| e.origin.as_str()).collect();
        let mut origins = DriftOrigins::default();
        for entry in &self.added {
            let to = if listed.contains(entry.origin.as_str()) {
                &mut origins.methods_changed
            } else {
                &mut origins.added
            };
            to.push(entry.origin.clone());
        }
        origins.removed = self.removed.iter().map(|e| e.origin.clone()).collect();
        for list in [
            &mut origins.added,
            &mut origins.removed,
            &mut origins.methods_changed,
        ] {
            list.sort();
        }
        origins
    }
}

/// [`LocalChanges::of`], counted.
pub fn drift(
    config: &[AllowEntry],
    changes: &AllowlistChanges,
    source: AllowlistSource,
    path: &Path,
) -> Result<Drift> {
    Ok(LocalChanges::of(config, changes, source, path)?.drift())
}

#[cfg(test)]
mod tests {
    use cors_filter_common::{Method, MethodSet};

    use super::*;
    use crate::allow_entry::parse_entry;

    fn entry(origin: &str) -> AllowEntry {
        parse_entry(origin).unwrap()
    }

    #[test]
    fn only_changes_that_make_a_difference_count() {
        let get = MethodSet::NONE.with(Method::Get);
        let config = vec![
            entry("https://a.example"),
            entry("https://b.example"),
            entry("https://c.example").with_methods(get),
        ];
        let mut changes = AllowlistChanges::default();
        changes.record_add("https://new.example", MethodSet::ANY); // added
        changes.record_add("https://a.example", MethodSet::ANY); // as listed: none
        changes.record_add("https://c.example", MethodSet::ANY); // other methods: added
        changes.record_remove("https://b.example"); // removed
        changes.record_remove("https://gone.example"); // not listed: none
        let path = Path::new("/state/allowlist-changes.json");
        let local =
            LocalChanges::of(&config, &changes, AllowlistSource::ConfigAndLocal, path).unwrap();
        let added: Vec<String> = local.added.iter().map(ToString::to_string).collect();
        let removed: Vec<String> = local.removed.iter().map(ToString::to_string).collect();
        assert_eq!(added, ["https://c.example", "https://new.example"]);
        assert_eq!(removed, ["https://b.example"]);
        assert_eq!(
            drift(&config, &changes, AllowlistSource::ConfigAndLocal, path).unwrap(),
            Drift {
                added: 2,
                removed: 1
            }
        );
        // The config alone: nothing recorded applies.
        assert_eq!(
            drift(&config, &changes, AllowlistSource::Config, path).unwrap(),
            Drift::default()
        );
    }
}
