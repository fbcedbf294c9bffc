//! Denials counted per origin: bounded in memory, exported as the top N
//! with the rest under `other`, and kept in the state directory so that a
//! restart loses none.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BTreeSet, HashMap},
    path::Path,
    sync::{Arc, Mutex},
};

use anyhow::{Context, Result, anyhow, bail};
use serde::{Deserialize, Serialize};

use super::event::{MAX_RENDERED_LEN, OTHER_ORIGINS};
use crate::state::StateDir;

/// Distinct origins counted one by one. Past it, denials of origins not
/// yet tracked count under `other` only: about 10,000 entries of at most
/// a few hundred bytes each bound the memory.
pub const MAX_TRACKED_ORIGINS: usize = 10_000;
/// The file in the state directory.
pub const COUNTS_FILE: &str = "denied-origins.json";

/// Denials per rendered origin (see `event::render_origin`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginCounts {
    by_origin: HashMap<String, u64>,
    /// Denials of origins met once `cap` origins were tracked.
    untracked: u64,
    cap: usize,
    /// The origins `/metrics` exports one by one (see [`Self::export`]).
    exported: BTreeSet<String>,
    /// How many origins `/metrics` exports at most.
    export_slots: usize,
}

/// The top origins by denials, most first (ties by origin), and the
/// denials of all the others.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopOrigins {
    pub top: Vec<(String, u64)>,
    pub other: u64,
}

impl TopOrigins {
    pub fn total(&self) -> u64 {
        self.top
            .iter()
            .fold(self.other, |sum, (_, n)| sum.saturating_add(*n))
    }
}

/// The file's layout.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CountsFile {
    origins: BTreeMap<String, u64>,
    untracked: u64,
}

impl Default for OriginCounts {
    fn default() -> Self {
        Self::with_cap(MAX_TRACKED_ORIGINS)
    }
}

impl OriginCounts {
    pub fn with_cap(cap: usize) -> OriginCounts {
        OriginCounts {
            by_origin: HashMap::new(),
            untracked: 0,
            cap,
            exported: BTreeSet::new(),
            export_slots: 0,
        }
    }

    /// Chooses the origins `/metrics` exports one by one: the `slots`
    /// origins with the most denials now; origins met for the first time
    /// later take the slots left. The set then stays as it is for the life
    /// of the daemon, which keeps every series a true counter: an origin
    /// joins before its first denial is counted, so no count ever moves
    /// from `other` to an origin's own series, and `other` never goes down.
    pub fn export(&mut self, slots: usize) {
        self.export_slots = slots;
        self.exported = self.top(slots).top.into_iter().map(|(o, _)| o).collect();
    }

    /// The exported origins, most denials first (ties by origin), and the
    /// denials of all the others in `other`.
    pub fn exported(&self) -> TopOrigins {
        let mut top: Vec<(String, u64)> = self
            .exported
            .iter()
            .map(|o| (o.clone(), self.by_origin.get(o).copied().unwrap_or(0)))
            .collect();
        top.sort_unstable_by(|(a, x), (b, y)| y.cmp(x).then(a.cmp(b)));
        let other = self
            .by_origin
            .iter()
            .filter(|(o, _)| !self.exported.contains(*o))
            .fold(self.untracked, |sum, (_, c)| sum.saturating_add(*c));
        TopOrigins { top, other }
    }

    pub fn record(&mut self, origin: &str) {
        self.add(origin, 1);
    }

    fn add(&mut self, origin: &str, n: u64) {
        if let Some(count) = self.by_origin.get_mut(origin) {
            *count = count.saturating_add(n);
        } else if self.by_origin.len() < self.cap {
            if self.exported.len() < self.export_slots {
                self.exported.insert(origin.to_owned());
            }
            self.by_origin.insert(origin.to_owned(), n);
        } else {
            self.untracked = self.untracked.saturating_add(n);
        }
    }

    /// The `n` origins with the most denials; everything else, untracked
    /// origins included, in `other`.
    pub fn top(&self, n: usize) -> TopOrigins {
        let mut all: Vec<(&String, u64)> = self.by_origin.iter().map(|(o, c)| (o, *c)).collect();
        all.sort_unstable_by_key(|&(origin, count)| (Reverse(count), origin));
        let other = all
            .iter()
            .skip(n)
            .fold(self.untracked, |sum, (_, c)| sum.saturating_add(*c));
        TopOrigins {
            top: all
                .into_iter()
                .take(n)
                .map(|(o, c)| (o.clone(), c))
                .collect(),
            other,
        }
    }

    pub fn to_json(&self) -> Result<String> {
        let file = CountsFile {
            origins: self
                .by_origin
                .iter()
                .map(|(o, c)| (o.clone(), *c))
                .collect(),
            untracked: self.untracked,
        };
        let mut text =
            serde_json::to_string_pretty(&file).context("cannot write the per-origin counts")?;
        text.push('\n');
        Ok(text)
    }

    /// Reads the counts written by [`to_json`](Self::to_json); `source`
    /// names the file in errors. Origins past the cap (a file written with
    /// a larger one) count as untracked, the smallest first.
    pub fn from_json(text: &str, source: &str) -> Result<OriginCounts> {
        OriginCounts::from_json_with_cap(text, source, MAX_TRACKED_ORIGINS)
    }

    fn from_json_with_cap(text: &str, source: &str, cap: usize) -> Result<OriginCounts> {
        let file: CountsFile = serde_json::from_str(text)
            .with_context(|| format!("corrupt per-origin denial counts in {source}"))?;
        let mut origins: Vec<(String, u64)> = file.origins.into_iter().collect();
        for (origin, _) in &origins {
            if origin.is_empty() || origin.len() > MAX_RENDERED_LEN || origin == OTHER_ORIGINS {
                bail!("in {source}: {origin:?} is not an origin this daemon records");
            }
        }
        origins.sort_unstable_by_key(|(origin, count)| (Reverse(*count), origin.clone()));
        let mut counts = OriginCounts::with_cap(cap);
        counts.untracked = file.untracked;
        for (origin, count) in origins {
            counts.add(&origin, count);
        }
        Ok(counts)
    }

    /// The counts saved at `path`, or `None` when none were.
    pub fn load(path: &Path) -> Result<Option<OriginCounts>> {
        match std::fs::read_to_string(path) {
            Ok(text) => OriginCounts::from_json(&text, &path.display().to_string()).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// The counts saved at `path` for the daemon: as [`load`](Self::load),
    /// except that a file that cannot be read as counts (truncated by a
    /// full disk, edited by hand) does not stop the filter: it is renamed
    /// `denied-origins.json.corrupt-<unix time>` beside it, with a warning
    /// naming both paths, and counting starts afresh. An error reading the
    /// file (other than its absence) is still one.
    pub fn load_or_set_aside(path: &Path) -> Result<Option<OriginCounts>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            // Not UTF-8: corrupt too.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                set_aside(path, &anyhow!(e))?;
                return Ok(None);
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        match OriginCounts::from_json(&text, &path.display().to_string()) {
            Ok(counts) => Ok(Some(counts)),
            Err(e) => {
                set_aside(path, &e)?;
                Ok(None)
            }
        }
    }

    /// Saves the counts in `state`, atomically, mode 0600.
    pub fn save(&self, state: &StateDir) -> Result<()> {
        state.write_atomically(COUNTS_FILE, &self.to_json()?)
    }
}

/// Where a corrupt counts file at `path` is moved, at `unix_time`.
pub fn set_aside_path(path: &Path, unix_time: u64) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".corrupt-{unix_time}"));
    name.into()
}

/// Renames the corrupt counts file at `path` aside and warns.
fn set_aside(path: &Path, why: &anyhow::Error) -> Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let aside = set_aside_path(path, now);
    std::fs::rename(path, &aside).with_context(|| {
        format!(
            "{why:#}; and it cannot be moved aside to {}",
            aside.display()
        )
    })?;
    log::warn!(
        "{why:#}: moved it aside to {} and counting denials per origin afresh in {}",
        aside.display(),
        path.display()
    );
    Ok(())
}

/// The counts, shared by the daemon's reader and the metrics server.
#[derive(Clone, Default)]
pub struct SharedCounts(Arc<Mutex<OriginCounts>>);

impl SharedCounts {
    pub fn new(counts: OriginCounts) -> SharedCounts {
        SharedCounts(Arc::new(Mutex::new(counts)))
    }

    /// Runs `f` on the counts.
    pub fn with<R>(&self, f: impl FnOnce(&mut OriginCounts) -> R) -> Result<R> {
        let mut counts = self
            .0
            .lock()
            .map_err(|_| anyhow!("the per-origin denial counts were left inconsistent"))?;
        Ok(f(&mut counts))
    }
}

/// What `/metrics` exports per origin (see [`OriginCounts::export`]).
#[derive(Clone)]
pub struct DeniedByOrigin {
    pub counts: SharedCounts,
}

impl DeniedByOrigin {
    pub fn top_origins(&self) -> Result<TopOrigins> {
        self.counts.with(|c| c.exported())
    }
}

#[cfg(test)]
impl OriginCounts {
    fn total(&self) -> u64 {
        self.by_origin
            .values()
            .fold(self.untracked, |sum, n| sum.saturating_add(*n))
    }

    fn tracked(&self) -> usize {
        self.by_origin.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(cap: usize, denials: &[(&str, u64)]) -> OriginCounts {
        let mut c = OriginCounts::with_cap(cap);
        for (origin, n) in denials {
            for _ in 0..*n {
                c.record(origin);
            }
        }
        c
    }

    #[test]
    fn top_n_and_the_rest_as_other() {
        let c = counts(
            100,
            &[
                ("https://b", 2),
                ("https://a", 3),
                ("https://c", 2),
                ("https://d", 1),
            ],
        );
        assert_eq!(c.total(), 8);
        let top = c.top(2);
        assert_eq!(
            top.top,
            [("https://a".to_owned(), 3), ("https://b".to_owned(), 2)]
        );
        assert_eq!(top.other, 3);
        assert_eq!(top.total(), 8);
        assert_eq!(
            c.top(0),
            TopOrigins {
                top: vec![],
                other: 8
            }
        );
        assert_eq!(c.top(10).top.len(), 4);
        assert_eq!(c.top(10).other, 0);
    }

    /// Whatever order denials come in, no exported series ever goes down,
    /// `other` included, and the series add up to every denial.
    #[test]
    fn exported_series_only_ever_grow() {
        let mut c = counts(100, &[("https://a", 1), ("https://b", 5)]);
        c.export(3);
        let mut last: BTreeMap<String, u64> = BTreeMap::new();
        let arrivals = [
            "https://c",
            "https://a",
            "https://a",
            "https://d",
            "https://e",
            "https://e",
            "https://e",
            "https://e",
            "https://e",
            "https://e",
            "https://e",
            "https://f",
        ];
        for origin in arrivals {
            c.record(origin);
            let now = c.exported();
            assert_eq!(now.total(), c.total());
            assert!(now.top.len() <= 3, "{now:?}");
            let mut series: BTreeMap<String, u64> = now.top.into_iter().collect();
            series.insert("other".into(), now.other);
            for (name, before) in &last {
                let after = series.get(name).copied();
                assert!(
                    after >= Some(*before),
                    "{name} went from {before} to {after:?}"
                );
            }
            last = series;
        }
        // The set stayed: b and a (the top two at start) and c (new, while a
        // slot was free); e, the most denied now, counts under other.
        let set: Vec<String> = c.exported().top.into_iter().map(|(o, _)| o).collect();
        assert_eq!(set, ["https://b", "https://a", "https://c"]);
        assert_eq!(c.exported().other, 9);
        // The stats view is the true top.
        assert_eq!(c.top(1).top[0].0, "https://e");
    }

    #[test]
    fn origins_past_the_cap_count_as_other() {
        let c = counts(2, &[("https://a", 1), ("https://b", 1), ("https://c", 5)]);
        assert_eq!(c.tracked(), 2);
        assert_eq!(c.total(), 7);
        let top = c.top(5);
        assert_eq!(top.top.len(), 2);
        assert_eq!(top.other, 5);
        // Tracked origins keep counting.
        let mut c = c;
        c.record("https://a");
        assert_eq!(c.top(1).top, [("https://a".to_owned(), 2)]);
    }

    #[test]
    fn the_default_cap_bounds_memory() {
        let mut c = OriginCounts::default();
        for i in 0..MAX_TRACKED_ORIGINS + 50 {
            c.record(&format!("https://o{i}.example"));
        }
        assert_eq!(c.tracked(), MAX_TRACKED_ORIGINS);
        assert_eq!(c.top(20).other, (MAX_TRACKED_ORIGINS + 50 - 20) as u64);
    }

    #[test]
    fn persistence_round_trip() {
        let dir = std::env::temp_dir().join(format!("cors-filter-counts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let state = StateDir::open(&dir).unwrap();
        let path = state.path(COUNTS_FILE);
        assert_eq!(OriginCounts::load(&path).unwrap(), None);
        let mut c = counts(
            MAX_TRACKED_ORIGINS,
            &[("https://a", 3), (r#"https://q\"\\\xff"#, 2), ("(none)", 1)],
        );
        c.untracked = 4;
        c.save(&state).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let loaded = OriginCounts::load(&path).unwrap().unwrap();
        assert_eq!(loaded, c);
        assert_eq!(loaded.top(1).other, 7);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_files_are_errors_naming_the_file() {
        for text in [
            "{",
            r#"{"origins": {"other": 1}, "untracked": 0}"#,
            r#"{"origins": {"": 1}, "untracked": 0}"#,
            r#"{"origins": {}, "untracked": -1}"#,
            r#"{"origins": {}, "untracked": 0, "extra": 1}"#,
        ] {
            let e = OriginCounts::from_json(text, "/state/denied-origins.json").unwrap_err();
            assert!(
                format!("{e:#}").contains("/state/denied-origins.json"),
                "{text}: {e:#}"
            );
        }
    }

    /// A truncated file does not stop the daemon: it is moved aside,
    /// whole, and the counts start from nothing; a good file loads.
    #[test]
    fn a_corrupt_file_is_moved_aside() {
        let dir = std::env::temp_dir().join(format!("cors-filter-corrupt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let state = StateDir::open(&dir).unwrap();
        let path = state.path(COUNTS_FILE);
        let good = counts(MAX_TRACKED_ORIGINS, &[("https://a", 3)]);
        good.save(&state).unwrap();
        assert_eq!(
            OriginCounts::load_or_set_aside(&path).unwrap(),
            Some(good.clone())
        );
        let json = good.to_json().unwrap();
        for (i, bad) in [&json.as_bytes()[..json.len() / 2], b"\xff\xfe{"]
            .iter()
            .enumerate()
        {
            std::fs::write(&path, bad).unwrap();
            assert!(OriginCounts::load(&path).is_err(), "case {i}");
            assert_eq!(
                OriginCounts::load_or_set_aside(&path).unwrap(),
                None,
                "case {i}"
            );
            assert!(!path.exists(), "case {i}");
            let aside: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.to_string_lossy().contains("denied-origins.json.corrupt-"))
                .collect();
            assert_eq!(aside.len(), 1, "case {i}: {aside:?}");
            assert_eq!(std::fs::read(&aside[0]).unwrap(), *bad, "case {i}");
            std::fs::remove_file(&aside[0]).unwrap();
        }
        assert_eq!(OriginCounts::load_or_set_aside(&path).unwrap(), None);
        assert_eq!(
            set_aside_path(&path, 1_700_000_000),
            dir.join("denied-origins.json.corrupt-1700000000")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_past_the_cap_keeps_the_largest() {
        let big = counts(10, &[("https://a", 5), ("https://b", 1), ("https://c", 3)]);
        let loaded = OriginCounts::from_json_with_cap(&big.to_json().unwrap(), "f", 2).unwrap();
        assert_eq!(
            loaded.top(5).top,
            [("https://a".to_owned(), 5), ("https://c".to_owned(), 3)]
        );
        assert_eq!(loaded.top(5).other, 1);
        assert_eq!(loaded.total(), 9);
    }
}
