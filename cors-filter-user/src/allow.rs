//! `cors-filter allow add|remove|list`: edits the running filter's pinned
//! allowlist at once and records the change on disk for the next start.

use std::path::Path;

use anyhow::{Context, Result};
use aya::maps::{LpmTrie, Map, MapData};
use cors_filter_common::origin::OriginKey;

use crate::{
    allowlist::{decode_key, parse_entry},
    pins::{open_pinned, pin_path},
    state::StateDir,
};

type Allowlist = LpmTrie<MapData, OriginKey, u32>;

fn running_allowlist(pin_dir: &Path) -> Result<Option<Allowlist>> {
    if !pin_path(pin_dir, "ALLOWLIST").exists() {
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

pub fn add(pin_dir: &Path, state_dir: &Path, text: &str) -> Result<()> {
    let entry = parse_entry(text)?;
    let state = StateDir::open(state_dir)?;
    let _lock = state.lock_allowlist()?;
    let before = state.load_changes()?;
    let mut changes = state.load_changes()?;
    changes.record_add(&entry.origin);
    state.save_changes(&changes)?;
    match running_allowlist(pin_dir)? {
        Some(mut map) => {
            if let Err(e) = map.insert(&entry.key, entry.kind, 0) {
                state.save_changes(&before)?;
                return Err(e).with_context(|| {
                    format!("cannot add origin {} to the running filter", entry.origin)
                });
            }
            println!("allowed {}", entry.origin);
        }
        None => not_running_note(pin_dir, &state),
    }
    Ok(())
}

pub fn remove(pin_dir: &Path, state_dir: &Path, text: &str) -> Result<()> {
    let entry = parse_entry(text)?;
    let state = StateDir::open(state_dir)?;
    let _lock = state.lock_allowlist()?;
    let before = state.load_changes()?;
    let mut changes = state.load_changes()?;
    changes.record_remove(&entry.origin);
    state.save_changes(&changes)?;
    match running_allowlist(pin_dir)? {
        Some(mut map) => match map.remove(&entry.key) {
            Ok(()) => println!("removed {}", entry.origin),
            Err(aya::maps::MapError::KeyNotFound) => {
                println!("{} was not allowed; recorded as removed", entry.origin)
            }
            Err(e) => {
                state.save_changes(&before)?;
                return Err(e).with_context(|| {
                    format!(
                        "cannot remove origin {} from the running filter",
                        entry.origin
                    )
                });
            }
        },
        None => not_running_note(pin_dir, &state),
    }
    Ok(())
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
