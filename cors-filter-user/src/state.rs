//! The allowlist changes made with `cors-filter allow`, kept on disk so that
//! a restart keeps them.
//!
//! The file records changes relative to the config file rather than a copy
//! of the whole list, so that editing the config's `allow` still takes
//! effect: at every start and reload the filter allows
//! `(config ∪ added) − removed`, an added origin with the methods it was
//! added with (overriding the config's for the same origin).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fs::{self, File, TryLockError},
    io::Write as _,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use cors_filter_common::{Method, MethodSet};
use serde::{Deserialize, Serialize};

use crate::{
    allow_entry::{AllowEntry, parse_entry, parse_methods},
    root_only::{check_private_dir_and_files, ensure_private_dir, open_private_file},
};

const CHANGES_FILE: &str = "allowlist-changes.json";
const LOCK_FILE: &str = "allowlist.lock";
const DAEMON_LOCK_FILE: &str = "daemon.lock";
/// How often, and how far apart, `run` tries the daemon lock again
/// before it gives up (see [`StateDir::lock_daemon`]).
const DAEMON_LOCK_TRIES: u32 = 10;
const DAEMON_LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(20);

#[derive(Serialize, Deserialize, Default, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AllowlistChanges {
    pub added: BTreeSet<String>,
    pub removed: BTreeSet<String>,
    /// The methods of the origins of `added` that were added with only
    /// some (`allow add --methods`); the others may use every method.
    /// Absent from files written before methods existed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub methods: BTreeMap<String, Vec<String>>,
}

impl AllowlistChanges {
    pub fn record_add(&mut self, origin: &str, methods: MethodSet) {
        self.removed.remove(origin);
        self.added.insert(origin.to_owned());
        if methods == MethodSet::ANY {
            self.methods.remove(origin);
        } else {
            let names = methods.known().map(|m| Method::name(m).to_owned());
            self.methods.insert(origin.to_owned(), names.collect());
        }
    }

    pub fn record_remove(&mut self, origin: &str) {
        self.added.remove(origin);
        self.methods.remove(origin);
        self.removed.insert(origin.to_owned());
    }

    /// The entry `origin` of `added` stands for, with its methods.
    pub fn added_entry(&self, origin: &str, path: &Path) -> Result<AllowEntry> {
        let in_file = || format!("in {}", path.display());
        let entry = parse_entry(origin).with_context(in_file)?;
        Ok(match self.methods.get(origin) {
            Some(names) => entry.with_methods(
                parse_methods(names)
                    .map_err(|e| anyhow::anyhow!("methods of {origin}: {e}"))
                    .with_context(in_file)?,
            ),
            None => entry,
        })
    }

    /// Checks every origin and method list the file holds.
    fn validate(&self, path: &Path) -> Result<()> {
        for origin in &self.added {
            self.added_entry(origin, path)?;
        }
        for origin in &self.removed {
            parse_entry(origin).with_context(|| format!("in {}", path.display()))?;
        }
        if let Some(origin) = self.methods.keys().find(|o| !self.added.contains(*o)) {
            bail!(
                "in {}: methods recorded for {origin}, which is not among the added origins",
                path.display()
            );
        }
        Ok(())
    }

    /// The allowlist that results from applying these changes to `base`.
    pub fn apply(&self, base: &[AllowEntry], path: &Path) -> Result<Vec<AllowEntry>> {
        let mut out: Vec<AllowEntry> = base
            .iter()
            .filter(|e| !self.removed.contains(&e.origin))
            .cloned()
            .collect();
        // Origin -> index in `out`, so that the merge stays linear.
        let mut at: HashMap<String, usize> = out
            .iter()
            .enumerate()
            .map(|(index, e)| (e.origin.clone(), index))
            .collect();
        for origin in &self.added {
            let entry = self.added_entry(origin, path)?;
            if self.removed.contains(&entry.origin) {
                continue;
            }
            match at.get(&entry.origin) {
                // Added again, maybe with other methods: the later word.
                Some(&index) => out[index] = entry,
                None => {
                    at.insert(entry.origin.clone(), out.len());
                    out.push(entry);
                }
            }
        }
        Ok(out)
    }
}

/// The state directory: root-only (made 0700; an existing one is checked,
/// never chmod-ed, and so is every file in it: see `root_only`).
pub struct StateDir {
    dir: PathBuf,
}

/// An exclusive lock on a file (`File::lock`: `flock` on Linux), released
/// when dropped (the file closes).
pub struct FileLock {
    _file: File,
}

/// Locks `path`, waiting for the lock if `blocking`; `None` when it is not
/// blocking and another holds the lock.
fn lock(path: &Path, blocking: bool) -> Result<Option<FileLock>> {
    let file = open_private_file(path, false).context("cannot open the lock file")?;
    let locked = if blocking {
        file.lock()
    } else {
        match file.try_lock() {
            Ok(()) => Ok(()),
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    };
    locked.with_context(|| format!("cannot lock {}", path.display()))?;
    Ok(Some(FileLock { _file: file }))
}

impl StateDir {
    /// Opens the state directory, creating it if needed; refuses one that
    /// root does not own or others can write, or that holds such a file.
    pub fn open(dir: &Path) -> Result<StateDir> {
        ensure_private_dir(dir, "state directory", true)?;
        check_private_dir_and_files(dir, "state directory")?;
        Ok(StateDir {
            dir: dir.to_owned(),
        })
    }

    /// Checks the state directory as [`open`](Self::open) does, without
    /// creating it: for commands that only read what it holds (`None` when
    /// there is none).
    pub fn existing(dir: &Path) -> Result<Option<StateDir>> {
        Ok(
            check_private_dir_and_files(dir, "state directory")?.then(|| StateDir {
                dir: dir.to_owned(),
            }),
        )
    }

    pub fn changes_path(&self) -> PathBuf {
        self.dir.join(CHANGES_FILE)
    }

    /// Serialises allowlist edits between concurrent `allow` commands.
    pub fn lock_allowlist(&self) -> Result<FileLock> {
        Ok(lock(&self.dir.join(LOCK_FILE), true)?.expect("blocking lock"))
    }

    /// Held by `run` for its lifetime: one filter per state directory.
    pub fn lock_daemon(&self) -> Result<FileLock> {
        let path = self.dir.join(DAEMON_LOCK_FILE);
        // `status` takes the lock for an instant to see whether a daemon
        // holds it: tried again for a while before concluding that
        // another daemon does.
        let mut held = lock(&path, false)?;
        for _ in 0..DAEMON_LOCK_TRIES {
            if held.is_some() {
                break;
            }
            std::thread::sleep(DAEMON_LOCK_RETRY);
            held = lock(&path, false)?;
        }
        match held {
            Some(l) => {
                // The holder's pid, for `status`; the lock, not the
                // file, says whether it is alive.
                l._file
                    .set_len(0)
                    .and_then(|()| writeln!(&l._file, "{}", std::process::id()))
                    .with_context(|| format!("cannot write the pid in {}", path.display()))?;
                Ok(l)
            }
            None => bail!(
                "another cors-filter is running with state directory {} (it holds {})",
                self.dir.display(),
                path.display()
            ),
        }
    }

    pub fn load_changes(&self) -> Result<AllowlistChanges> {
        let path = self.changes_path();
        match fs::read_to_string(&path) {
            Ok(text) => {
                let changes: AllowlistChanges = serde_json::from_str(&text)
                    .with_context(|| format!("corrupt allowlist state file {}", path.display()))?;
                changes.validate(&path)?;
                Ok(changes)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AllowlistChanges::default()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Writes the changes atomically (see [`write_private_atomically`]).
    pub fn save_changes(&self, changes: &AllowlistChanges) -> Result<()> {
        let mut text = serde_json::to_string_pretty(changes)?;
        text.push('\n');
        self.write_atomically(CHANGES_FILE, &text)
    }

    /// The path of `file_name` in the state directory.
    pub fn path(&self, file_name: &str) -> PathBuf {
        self.dir.join(file_name)
    }

    /// Replaces `file_name` in the state directory with `text`, mode 0600
    /// (see [`write_private_atomically`]).
    pub fn write_atomically(&self, file_name: &str, text: &str) -> Result<()> {
        write_private_atomically(&self.dir, file_name, text.as_bytes())
    }
}

/// What the state directory `dir` says of the daemon (see
/// [`StateDir::lock_daemon`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DaemonProbe {
    /// A process holds the daemon lock.
    pub alive: bool,
    /// The pid the last daemon recorded; `None` if none did.
    pub pid: Option<u32>,
}

/// Whether a `run` holds `dir`'s daemon lock, tried without waiting and
/// released at once (a daemon starting in that instant tries again, see
/// [`StateDir::lock_daemon`]); nothing is created.
pub fn probe_daemon(dir: &Path) -> Result<DaemonProbe> {
    let path = dir.join(DAEMON_LOCK_FILE);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(DaemonProbe {
                alive: false,
                pid: None,
            });
        }
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
    };
    let alive = match file.try_lock_shared() {
        Ok(()) => false,
        Err(TryLockError::WouldBlock) => true,
        Err(TryLockError::Error(e)) => {
            return Err(e).with_context(|| format!("cannot try the lock {}", path.display()));
        }
    };
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(DaemonProbe {
        alive,
        pid: text.trim().parse().ok(),
    })
}

/// Replaces `dir/name` with `contents`, atomically and durably: a 0600
/// temporary file in `dir`, fsync, rename over the old file, fsync of
/// `dir`. A reader sees the old file or the new one, never a part; every
/// file of the state directory is written this way.
pub fn write_private_atomically(dir: &Path, name: &str, contents: &[u8]) -> Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = open_private_file(&tmp, true)?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    fs::rename(&tmp, &path).with_context(|| format!("cannot replace {}", path.display()))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("cors-filter-state-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn changes_survive_a_reload_and_apply_to_the_config() {
        let dir = tmpdir("reload");
        let state = StateDir::open(&dir).unwrap();
        let mut changes = state.load_changes().unwrap();
        changes.record_add("https://new.example", MethodSet::ANY);
        changes.record_remove("https://old.example");
        state.save_changes(&changes).unwrap();
        let reloaded = StateDir::open(&dir).unwrap().load_changes().unwrap();
        assert_eq!(reloaded, changes);

        let base = vec![
            parse_entry("https://old.example").unwrap(),
            parse_entry("https://kept.example").unwrap(),
        ];
        let result: Vec<String> = reloaded
            .apply(&base, &state.changes_path())
            .unwrap()
            .into_iter()
            .map(|e| e.origin)
            .collect();
        assert_eq!(result, ["https://kept.example", "https://new.example"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn add_after_remove_wins_and_vice_versa() {
        let mut c = AllowlistChanges::default();
        c.record_remove("https://a.example");
        c.record_add("https://a.example", MethodSet::ANY);
        assert!(c.added.contains("https://a.example") && c.removed.is_empty());
        c.record_remove("https://a.example");
        assert!(c.removed.contains("https://a.example") && c.added.is_empty());
    }

    #[test]
    fn added_methods_are_kept_and_override_the_config() {
        let dir = tmpdir("methods");
        let state = StateDir::open(&dir).unwrap();
        let mut changes = AllowlistChanges::default();
        let get_put = MethodSet::NONE.with(Method::Get).with(Method::Put);
        changes.record_add("https://a.example", get_put);
        changes.record_add("https://b.example", MethodSet::ANY);
        state.save_changes(&changes).unwrap();
        let text = fs::read_to_string(state.changes_path()).unwrap();
        assert!(
            text.contains("\"GET\"") && text.contains("\"PUT\""),
            "{text}"
        );
        let reloaded = state.load_changes().unwrap();
        assert_eq!(reloaded, changes);
        let base = vec![
            parse_entry("https://b.example")
                .unwrap()
                .with_methods(MethodSet::NONE.with(Method::Post)),
        ];
        let shown: Vec<String> = reloaded
            .apply(&base, &state.changes_path())
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            shown,
            ["https://b.example", "https://a.example methods=GET,PUT"]
        );
        // Removing forgets the methods; adding with every method too.
        let mut c = reloaded;
        c.record_remove("https://a.example");
        assert!(c.methods.is_empty());
        c.record_add("https://a.example", get_put);
        c.record_add("https://a.example", MethodSet::ANY);
        assert!(c.methods.is_empty());
        // A file from before methods existed still loads.
        fs::write(
            state.changes_path(),
            "{\"added\": [\"https://c.example\"], \"removed\": []}",
        )
        .unwrap();
        assert!(state.load_changes().unwrap().methods.is_empty());
        fs::write(
            state.changes_path(),
            "{\"added\": [\"https://c.example\"], \"removed\": [], \"methods\": {\"https://c.example\": [\"get\"]}}",
        )
        .unwrap();
        let e = format!("{:#}", state.load_changes().unwrap_err());
        assert!(
            e.contains("allowlist-changes.json") && e.contains("\"get\""),
            "{e}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_state_is_an_error_naming_the_file() {
        let dir = tmpdir("corrupt");
        let state = StateDir::open(&dir).unwrap();
        fs::write(
            state.changes_path(),
            "{\"added\": [\"https://a b\"], \"removed\": []}",
        )
        .unwrap();
        let e = format!("{:#}", state.load_changes().unwrap_err());
        assert!(
            e.contains("allowlist-changes.json") && e.contains("https://a b"),
            "{e}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_directory_and_every_file_in_it_are_root_only() {
        use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
        let dir = tmpdir("modes");
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let state = StateDir::open(&dir).unwrap();
        let _daemon = state.lock_daemon().unwrap();
        let _edit = state.lock_allowlist().unwrap();
        state.save_changes(&AllowlistChanges::default()).unwrap();
        write_private_atomically(&dir, "other.json", b"{}").unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;
        // An existing directory is not chmod-ed (0755 is root's only to write).
        assert_eq!(mode(&dir), 0o755);
        let mut names = Vec::new();
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            assert_eq!(mode(&path), 0o600, "{}", path.display());
            names.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
        names.sort();
        assert_eq!(
            names,
            [
                "allowlist-changes.json",
                "allowlist.lock",
                "daemon.lock",
                "other.json"
            ]
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn one_daemon_per_state_dir() {
        let dir = tmpdir("daemon");
        let state = StateDir::open(&dir).unwrap();
        let held = state.lock_daemon().unwrap();
        assert!(state.lock_daemon().is_err());
        drop(held);
        assert!(state.lock_daemon().is_ok());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_probe_sees_the_daemon_and_its_pid() {
        let dir = tmpdir("probe");
        let gone = DaemonProbe {
            alive: false,
            pid: None,
        };
        assert_eq!(probe_daemon(&dir).unwrap(), gone);
        assert!(!dir.exists(), "the probe made {}", dir.display());
        let state = StateDir::open(&dir).unwrap();
        assert_eq!(probe_daemon(&dir).unwrap(), gone);
        let held = state.lock_daemon().unwrap();
        let me = Some(std::process::id());
        assert_eq!(
            probe_daemon(&dir).unwrap(),
            DaemonProbe {
                alive: true,
                pid: me
            }
        );
        // The probe leaves the lock with its holder.
        assert!(state.lock_daemon().is_err());
        drop(held);
        assert_eq!(
            probe_daemon(&dir).unwrap(),
            DaemonProbe {
                alive: false,
                pid: me
            }
        );
        // A daemon taking the lock while a probe holds it waits the probe out.
        let path = dir.join(DAEMON_LOCK_FILE);
        let probing = File::open(&path).unwrap();
        probing.try_lock_shared().unwrap();
        let release = std::thread::spawn(move || {
            std::thread::sleep(DAEMON_LOCK_RETRY * 2);
            drop(probing);
        });
        assert!(state.lock_daemon().is_ok());
        release.join().unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }
}
