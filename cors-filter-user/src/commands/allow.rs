//! `cors-filter allow add|remove|list`: edits the running filter's pinned
//! allowlist at once and records the change on disk for the next start and
//! reload.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use cors_filter_common::{MethodSet, pinned::name};

use crate::{
    allow_entry::{describe_entry, parse_entry, parse_methods},
    kernel::pins::{pin_exists, pin_path},
    kernel::policy::PolicyMaps,
    state::StateDir,
};

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

/// `allow add TEXT [--methods M,...]`: every method when none are given.
pub fn add(pin_dir: &Path, state_dir: &Path, text: &str, methods: Option<&[String]>) -> Result<()> {
    let methods = match methods {
        Some(names) => parse_methods(names).map_err(|e| anyhow!("--methods for {text}: {e}"))?,
        None => MethodSet::ANY,
    };
    edit(pin_dir, state_dir, Change::Add(methods), text)
}

/// Applies `change` of `text`: records it on disk first (under the lock,
/// so concurrent edits and reloads serialise), then in the allowlist the
/// running filter reads now (the next reload builds its policy from the
/// record); if the map refuses it, the record is rolled back.
pub fn edit(pin_dir: &Path, state_dir: &Path, change: Change, text: &str) -> Result<()> {
    let mut entry = parse_entry(text)?;
    if let Change::Add(methods) = change {
        entry = entry.with_methods(methods);
    }
    let state = StateDir::open(state_dir)?;
    let _lock = state.lock_allowlist()?;
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

/// `allow list`: the running allowlist, which the state directory's
/// changes made; a state directory others could have written is refused
/// first, as `run` refuses it.
pub fn list(pin_dir: &Path, state_dir: &Path) -> Result<()> {
    StateDir::existing(state_dir)?;
    let mut policy = PolicyMaps::open(pin_dir)?;
    let map = policy.active_allowlist()?;
    let mut origins = Vec::new();
    for entry in map.iter() {
        let (_, value) = entry.context("cannot iterate the allowlist")?;
        origins.push(describe_entry(&value).map_err(anyhow::Error::msg)?);
    }
    origins.sort();
    for origin in origins {
        println!("{origin}");
    }
    Ok(())
}
