//! How far the allowlist a host enforces has drifted from its config
//! file: the `allow` edits recorded in the state directory that change
//! what the config alone would allow. One computation, for `status` and
//! whatever else reports drift.

use serde::Serialize;

use crate::{allow_entry::AllowEntry, state::AllowlistChanges};

/// The local edits that make the enforced allowlist differ from the
/// config's, by origin, sorted. Edits that change nothing (an origin
/// removed that the config does not list, one added as the config lists
/// it) are not drift.
#[derive(Serialize, Debug, Default, Clone, PartialEq, Eq)]
pub struct Drift {
    /// Allowed, but not listed by the config.
    pub added: Vec<String>,
    /// Listed by the config, but not allowed.
    pub removed: Vec<String>,
    /// Listed by the config, and allowed with other methods than it gives.
    pub methods_changed: Vec<String>,
}

impl Drift {
    /// No origin differs.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.methods_changed.is_empty()
    }

    /// How many origins differ.
    pub fn len(&self) -> usize {
        self.added.len() + self.removed.len() + self.methods_changed.len()
    }
}

/// The drift of `enforced` (the config's allowlist with `changes` applied,
/// see [`AllowlistChanges::apply`]) from `config`.
pub fn drift(config: &[AllowEntry], enforced: &[AllowEntry]) -> Drift {
    let listed = |origin: &str| config.iter().find(|e| e.origin == origin);
    let mut drift = Drift::default();
    for entry in enforced {
        match listed(&entry.origin) {
            None => drift.added.push(entry.origin.clone()),
            Some(listed) if listed.methods() != entry.methods() => {
                drift.methods_changed.push(entry.origin.clone())
            }
            Some(_) => {}
        }
    }
    for entry in config {
        if !enforced.iter().any(|e| e.origin == entry.origin) {
            drift.removed.push(entry.origin.clone());
        }
    }
    drift.added.sort();
    drift.removed.sort();
    drift.methods_changed.sort();
    drift
}

/// [`drift`] of `changes` applied to `config`; `changes_path` names the
/// changes' file in errors.
pub fn drift_of_changes(
    config: &[AllowEntry],
    changes: &AllowlistChanges,
    changes_path: &std::path::Path,
) -> anyhow::Result<Drift> {
    Ok(drift(config, &changes.apply(config, changes_path)?))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use cors_filter_common::{Method, MethodSet};

    use super::*;
    use crate::allow_entry::parse_entry;

    fn entries(origins: &[&str]) -> Vec<AllowEntry> {
        origins.iter().map(|o| parse_entry(o).unwrap()).collect()
    }

    #[test]
    fn only_edits_that_change_the_allowlist_are_drift() {
        let config = entries(&[
            "https://a.example",
            "https://b.example",
            "https://c.example",
        ]);
        let mut changes = AllowlistChanges::default();
        changes.record_add("https://new.example", MethodSet::ANY);
        // Listed already, with every method: no drift.
        changes.record_add("https://a.example", MethodSet::ANY);
        changes.record_remove("https://b.example");
        // Not listed: removing it changes nothing.
        changes.record_remove("https://never.example");
        changes.record_add("https://c.example", MethodSet::NONE.with(Method::Get));
        let d = drift_of_changes(&config, &changes, Path::new("/s/changes.json")).unwrap();
        assert_eq!(
            d,
            Drift {
                added: vec!["https://new.example".into()],
                removed: vec!["https://b.example".into()],
                methods_changed: vec!["https://c.example".into()],
            }
        );
        assert_eq!(d.len(), 3);
        assert!(!d.is_empty());
    }

    #[test]
    fn no_changes_no_drift() {
        let config = entries(&["https://a.example"]);
        let d = drift_of_changes(&config, &AllowlistChanges::default(), Path::new("/x")).unwrap();
        assert!(d.is_empty(), "{d:?}");
    }
}
