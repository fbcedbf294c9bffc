//! Notices, with inotify (Linux 2.6.13+), that the config file changed,
//! so that the daemon reloads it as SIGHUP does.
//!
//! What is watched is every directory on the way to the file's content:
//! the directory of the path given, and that of each symlink met while
//! resolving it and of the file it ends at. That covers the ways a config
//! is replaced:
//!
//! - written in place (`IN_CLOSE_WRITE` on the file's name);
//! - written to another name and renamed over it, as editors and
//!   configuration managers do (`IN_MOVED_TO`);
//! - a Kubernetes ConfigMap volume's atomic swap: `DIR/cors-filter.toml`
//!   is a symlink to `..data/cors-filter.toml`, `..data` a symlink to a
//!   timestamped directory; an update writes a new timestamped directory
//!   and a `..data_tmp` symlink to it, then renames `..data_tmp` over
//!   `..data` (`IN_MOVED_TO` of `..data` in `DIR`).
//!
//! After each burst of events (quiet for [`QUIET`], or [`MOST_WAIT`] after
//! its first event) the path is resolved again and the watches follow it
//! (new directories watched, those left behind dropped), then the file is
//! read: the daemon is told only when its bytes differ from the last bytes
//! seen. A file that is missing is logged and waited for.

use std::{
    collections::{BTreeSet, HashMap, VecDeque, hash_map::DefaultHasher},
    ffi::{CString, OsStr, OsString},
    fs::File,
    hash::{Hash as _, Hasher as _},
    io::Read as _,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Component, Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use tokio::sync::mpsc;

/// A burst of events is over once none came for this long.
pub const QUIET: Duration = Duration::from_millis(100);
/// A burst that goes on is acted on this long after its first event.
pub const MOST_WAIT: Duration = Duration::from_millis(500);
/// Symlinks followed at most while resolving the path (as `SYMLOOP_MAX`).
const MAX_SYMLINKS: usize = 40;
/// What is watched in each directory: the events that replace, write or
/// remove one of its entries, and the directory's own removal.
const DIR_EVENTS: u32 = libc::IN_CLOSE_WRITE
    | libc::IN_MOVED_TO
    | libc::IN_MOVED_FROM
    | libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR;

/// What the daemon hears from the watch.
pub enum Notice {
    /// The config file's content changed: reload.
    Changed,
    /// The watch stopped for good (its error); SIGHUP still reloads.
    Failed(String),
}

/// The watch of one config file; it runs on a thread of its own and ends
/// when this is dropped.
pub struct ConfigWatch {
    notices: mpsc::Receiver<Notice>,
}

impl ConfigWatch {
    /// Starts watching `path` (absolute, as the run record has it).
    pub fn start(path: &Path) -> Result<ConfigWatch> {
        Self::start_watching(path).with_context(|| {
            format!(
                "cannot watch the config file {} for changes (`run --no-watch-config` does without; SIGHUP and `cors-filter reload` then reload it)",
                path.display()
            )
        })
    }

    fn start_watching(path: &Path) -> Result<ConfigWatch> {
        let mut watcher = Watcher::new(path)?;
        watcher.rearm()?;
        watcher.seen = content_hash(path);
        let (tx, notices) = mpsc::channel(1);
        std::thread::Builder::new()
            .name("config-watch".into())
            .spawn(move || {
                if let Err(e) = watcher.run(&tx) {
                    let _ = tx.blocking_send(Notice::Failed(format!("{e:#}")));
                }
            })
            .context("cannot start the config watch thread")?;
        Ok(ConfigWatch { notices })
    }

    /// The next notice; cancel-safe. `None` once the thread has ended.
    pub async fn next(&mut self) -> Option<Notice> {
        self.notices.recv().await
    }
}

/// The paths resolving `path` looks up that decide what it reads: each
/// symlink met, each missing entry, and the last entry reached. Every
/// other entry is a directory on the way, not watched (a change there,
/// `/etc` itself replaced, is not noticed).
pub fn lookups(path: &Path) -> Vec<PathBuf> {
    let mut todo: VecDeque<OsString> = VecDeque::new();
    let mut resolved = PathBuf::from("/");
    let mut out = Vec::new();
    let mut links = 0;
    push_front(&mut todo, &mut resolved, path);
    while let Some(name) = todo.pop_front() {
        if name == ".." {
            resolved.pop();
            continue;
        }
        let here = resolved.join(&name);
        match std::fs::read_link(&here) {
            Ok(target) if links < MAX_SYMLINKS => {
                links += 1;
                out.push(here);
                push_front(&mut todo, &mut resolved, &target);
            }
            Ok(_) => {
                out.push(here);
                break;
            }
            Err(_) => {
                let exists = here.symlink_metadata().is_ok();
                if !exists || todo.is_empty() {
                    out.push(here.clone());
                }
                if !exists {
                    break;
                }
                resolved = here;
            }
        }
    }
    out
}

/// Puts the components of `path` before those left to resolve; an
/// absolute one starts again from `/`.
fn push_front(todo: &mut VecDeque<OsString>, resolved: &mut PathBuf, path: &Path) {
    let mut names = Vec::new();
    for component in path.components() {
        match component {
            Component::RootDir => {
                *resolved = PathBuf::from("/");
                names.clear();
            }
            Component::Normal(name) => names.push(name.to_owned()),
            Component::ParentDir => names.push(OsString::from("..")),
            Component::CurDir | Component::Prefix(_) => {}
        }
    }
    for name in names.into_iter().rev() {
        todo.push_front(name);
    }
}

/// A hash of the file's bytes; `None` if it cannot be read.
fn content_hash(path: &Path) -> Option<u64> {
    let mut bytes = Vec::new();
    File::open(path).ok()?.read_to_end(&mut bytes).ok()?;
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    Some(hasher.finish())
}

struct Watcher {
    path: PathBuf,
    inotify: File,
    /// Watch descriptor -> the directory it watches.
    dirs: HashMap<i32, PathBuf>,
    /// `(directory, entry name)` whose events matter.
    relevant: BTreeSet<(PathBuf, OsString)>,
    /// The hash of the bytes last seen, to tell a change from a touch.
    seen: Option<u64>,
    /// Whether the file was missing when last looked at (logged once).
    missing: bool,
}

impl Watcher {
    fn new(path: &Path) -> Result<Watcher> {
        // SAFETY: inotify_init1 takes flags only; it returns a new file
        // descriptor, or -1.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("inotify_init1");
        }
        // SAFETY: `fd` was just returned by inotify_init1 and nothing else
        // owns it.
        let inotify = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        Ok(Watcher {
            path: path.to_owned(),
            inotify,
            dirs: HashMap::new(),
            relevant: BTreeSet::new(),
            seen: None,
            missing: false,
        })
    }

    /// Watches the directories of the path's lookups now, and only those.
    fn rearm(&mut self) -> Result<()> {
        let lookups = lookups(&self.path);
        self.relevant = lookups
            .iter()
            .filter_map(|p| Some((p.parent()?.to_owned(), p.file_name()?.to_owned())))
            .collect();
        let wanted: BTreeSet<PathBuf> = self.relevant.iter().map(|(d, _)| d.clone()).collect();
        let mut kept = HashMap::new();
        for dir in &wanted {
            let name = CString::new(dir.as_os_str().as_bytes())
                .with_context(|| format!("{} has a NUL byte", dir.display()))?;
            // SAFETY: the descriptor is an inotify instance this owns and
            // `name` a NUL-terminated string that outlives the call.
            let wd = unsafe {
                libc::inotify_add_watch(self.inotify.as_raw_fd(), name.as_ptr(), DIR_EVENTS)
            };
            if wd < 0 {
                // Gone meanwhile: the event of its going is on its way.
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ENOENT) {
                    continue;
                }
                return Err(e).with_context(|| format!("cannot watch {}", dir.display()));
            }
            kept.insert(wd, dir.clone());
        }
        for (wd, dir) in &self.dirs {
            if !kept.contains_key(wd) {
                // SAFETY: as above; a descriptor the kernel dropped already
                // (its directory removed) is refused with EINVAL, harmless.
                unsafe { libc::inotify_rm_watch(self.inotify.as_raw_fd(), *wd) };
                log::debug!("config watch: no longer watching {}", dir.display());
            }
        }
        self.dirs = kept;
        Ok(())
    }

    /// Whether an event matters: one on an entry of the lookups, or one
    /// that says watches or events were lost.
    fn matters(&self, wd: i32, mask: u32, name: &OsStr) -> bool {
        if mask & libc::IN_Q_OVERFLOW != 0 {
            return true;
        }
        // Events of a watch dropped by `rearm` (its IN_IGNORED last) are
        // of no directory on the way any more.
        let Some(dir) = self.dirs.get(&wd) else {
            return false;
        };
        if mask & (libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_IGNORED) != 0 {
            return true;
        }
        if !self.relevant.contains(&(dir.clone(), name.to_owned())) {
            return false;
        }
        // A regular file is created empty, and written after: its
        // IN_CLOSE_WRITE is the event that says it is whole.
        let created_file = mask & libc::IN_CREATE != 0
            && dir.join(name).symlink_metadata().is_ok_and(|m| m.is_file());
        !created_file
    }

    /// Reads the pending events (blocking until there is one); returns
    /// whether any matters.
    fn read_events(&mut self) -> Result<bool> {
        let mut buf = [0u8; 8192];
        let n = self
            .inotify
            .read(&mut buf)
            .context("cannot read inotify events")?;
        let mut at = 0;
        let mut matters = false;
        const HEADER: usize = std::mem::size_of::<libc::inotify_event>();
        while at + HEADER <= n {
            let word = |i: usize| {
                let b = &buf[at + i..at + i + 4];
                [b[0], b[1], b[2], b[3]]
            };
            let wd = i32::from_ne_bytes(word(0));
            let mask = u32::from_ne_bytes(word(4));
            let len = u32::from_ne_bytes(word(12)) as usize;
            let end = (at + HEADER + len).min(n);
            let raw = &buf[at + HEADER..end];
            let name = OsStr::from_bytes(raw.split(|b| *b == 0).next().unwrap_or(&[]));
            matters |= self.matters(wd, mask, name);
            at = end;
        }
        Ok(matters)
    }

    /// Whether the inotify descriptor has events within `timeout`.
    fn wait(&self, timeout: Duration) -> Result<bool> {
        let mut fds = [libc::pollfd {
            fd: self.inotify.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `fds` is a valid array of one pollfd for the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 1, ms) };
        if ready < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(e).context("poll on the inotify descriptor");
        }
        Ok(ready > 0)
    }

    fn run(&mut self, tx: &mpsc::Sender<Notice>) -> Result<()> {
        // Since the first event of a burst, and the last.
        let mut burst: Option<(Instant, Instant)> = None;
        loop {
            if tx.is_closed() {
                return Ok(());
            }
            let timeout = match burst {
                None => Duration::from_secs(1),
                Some((first, last)) => {
                    let due = (last + QUIET).min(first + MOST_WAIT);
                    due.saturating_duration_since(Instant::now())
                }
            };
            if self.wait(timeout)? {
                if self.read_events()? {
                    let now = Instant::now();
                    burst = Some((burst.map_or(now, |(first, _)| first), now));
                }
                continue;
            }
            if burst.take().is_none() {
                continue;
            }
            self.rearm()?;
            match content_hash(&self.path) {
                None => {
                    if !self.missing {
                        log::warn!(
                            "config file {} cannot be read (missing?): the policy stays as it is; watching for it",
                            self.path.display()
                        );
                    }
                    self.missing = true;
                }
                Some(hash) => {
                    self.missing = false;
                    if self.seen != Some(hash) {
                        self.seen = Some(hash);
                        if tx.blocking_send(Notice::Changed).is_err() {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("cors-filter-watch-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn lookups_of_a_configmap_mount_name_each_link_and_the_file() {
        let dir = tmpdir("configmap");
        let stamp = dir.join("..2026_12_06_04_00_00.1");
        std::fs::create_dir(&stamp).unwrap();
        std::fs::write(stamp.join("cors-filter.toml"), "ports = [80]\n").unwrap();
        symlink("..2026_12_06_04_00_00.1", dir.join("..data")).unwrap();
        symlink("..data/cors-filter.toml", dir.join("cors-filter.toml")).unwrap();
        let found = lookups(&dir.join("cors-filter.toml"));
        assert_eq!(
            found,
            [
                dir.join("cors-filter.toml"),
                dir.join("..data"),
                stamp.join("cors-filter.toml")
            ]
        );
        // A plain file: itself; a missing one: itself too.
        std::fs::write(dir.join("plain.toml"), "").unwrap();
        assert_eq!(lookups(&dir.join("plain.toml")), [dir.join("plain.toml")]);
        assert_eq!(lookups(&dir.join("none.toml")), [dir.join("none.toml")]);
        // A link to a missing directory: the link, then the missing entry.
        symlink("nowhere/x.toml", dir.join("dangling.toml")).unwrap();
        assert_eq!(
            lookups(&dir.join("dangling.toml")),
            [dir.join("dangling.toml"), dir.join("nowhere")]
        );
        // A loop ends.
        symlink("loop-b", dir.join("loop-a")).unwrap();
        symlink("loop-a", dir.join("loop-b")).unwrap();
        assert!(lookups(&dir.join("loop-a")).len() <= MAX_SYMLINKS + 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_configmap_swap_is_noticed_and_a_touch_is_not() {
        let dir = tmpdir("swap");
        let first = dir.join("..first");
        std::fs::create_dir(&first).unwrap();
        std::fs::write(first.join("c.toml"), "one").unwrap();
        symlink("..first", dir.join("..data")).unwrap();
        symlink("..data/c.toml", dir.join("c.toml")).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let mut watch = ConfigWatch::start(&dir.join("c.toml")).unwrap();
        let next = |watch: &mut ConfigWatch| {
            runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(3), watch.next())
                    .await
                    .ok()
                    .flatten()
            })
        };
        // The swap.
        let second = dir.join("..second");
        std::fs::create_dir(&second).unwrap();
        std::fs::write(second.join("c.toml"), "two").unwrap();
        symlink("..second", dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        std::fs::remove_dir_all(&first).unwrap();
        assert!(matches!(next(&mut watch), Some(Notice::Changed)));
        // The same bytes written again: no notice.
        std::fs::write(second.join("c.toml"), "two").unwrap();
        assert!(next(&mut watch).is_none());
        // Written in place in the new directory (the watch followed it).
        std::fs::write(second.join("c.toml"), "three").unwrap();
        assert!(matches!(next(&mut watch), Some(Notice::Changed)));
        drop(watch);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
