//! `cors-filter allow add|remove|list`: edits the running filter's pinned
//! allowlist at once and records the change on disk for the next start.

use std::path::Path;

use anyhow::{Context, Result};
use aya::maps::{LpmTrie, Map, MapData};
use cors_filter_common::origin::OriginKey;

use crate::{
    allowlist::{decode_key, parse_entry},
    pins::{open_pinned, pin_exists, pin_path},
    state::StateDir,
};

type Allowlist = LpmTrie<MapData, OriginKey, u32>;

fn running_allowlist(pin_dir: &Path) -> Result<Option<Allowlist>> {
    if !pin_exists(&pin_path(pin_dir, "ALLOWLIST"))? {
        return Ok(None);
    }
    let map = open_pinned(pin_dir, "ALLOWLIST")?;
    Ok(Some(LpmTrie::try_from(Map::LpmTrie(map)).context(
        "pinned ALLOWLIST is not the expected LPM trie",
    )?))
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
    Add,
    Remove,
}

/// Applies `change` of `text`: records it on disk first (under the lock,
/// so concurrent edits serialise), then in the running filter's map; if the
/// map refuses it, the record is rolled back.
pub fn edit(pin_dir: &Path, state_dir: &Path, change: Change, text: &str) -> Result<()> {
    let entry = parse_entry(text)?;
    let state = StateDir::open(state_dir)?;
    let _lock = state.lock_allowlist()?;
    let before = state.load_changes()?;
    let mut changes = state.load_changes()?;
    match change {
        Change::Add => changes.record_add(&entry.origin),
        Change::Remove => changes.record_remove(&entry.origin),
    }
    state.save_changes(&changes)?;
    let Some(mut map) = running_allowlist(pin_dir)? else {
        not_running_note(pin_dir, &state);
        return Ok(());
    };
    let origin = &entry.origin;
    let applied = match change {
        Change::Add => map
            .insert(&entry.key, entry.kind, 0)
            .map(|()| format!("allowed {origin}")),
        Change::Remove => match map.remove(&entry.key) {
            Err(aya::maps::MapError::KeyNotFound) => Ok(format!(
                "{origin} was not in the running allowlist; recorded as removed"
            )),
            other => other.map(|()| format!("removed {origin}")),
        },
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

pub fn list(pin_dir: &Path) -> Result<()> {
    let map = open_pinned(pin_dir, "ALLOWLIST")?;
    let map: Allowlist = LpmTrie::try_from(Map::LpmTrie(map))
        .context("pinned ALLOWLIST is not the expected LPM trie")?;
    let mut origins = Vec::new();
    for key in map.keys() {
        let key = key.context("cannot iterate the allowlist")?;
        origins.push(decode_key(&key).map_err(anyhow::Error::msg)?);
    }
    origins.sort();
    for origin in origins {
        println!("{origin}");
    }
    Ok(())
}
