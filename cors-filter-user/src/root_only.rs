//! Root-only files and directories: the pin directory and the state
//! directory, and every file cors-filter creates in them.
//!
//! A directory cors-filter creates is 0700 and every file 0600. A
//! directory that already exists is trusted only if it is owned by the
//! user that runs cors-filter (root) and not writable by group or others,
//! and so is every directory above it (one writable by others is accepted
//! only with the sticky bit, as `/tmp` and `/sys/fs/bpf` have: others can
//! then add entries but not replace or remove ours). An existing directory
//! is never chmod-ed: one that fails the rule is refused with an error
//! naming it, its owner and its mode, since whatever someone else could
//! write in it (an `allowlist-changes.json`, a pin) would be trusted.

use std::{
    fs::{self, File, Metadata, OpenOptions},
    io::ErrorKind,
    os::unix::fs::{
        DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
    },
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

/// Mode of the directories cors-filter creates for its pins and state.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file it creates there.
pub const FILE_MODE: u32 = 0o600;
/// Write permission for group and others: what makes a file or directory
/// someone else's to change.
const SHARED_WRITE: u32 = 0o022;
const STICKY: u32 = 0o1000;
const _: () = assert!(DIR_MODE & SHARED_WRITE == 0 && FILE_MODE & SHARED_WRITE == 0);

/// Makes every file and directory this process creates from now on
/// inaccessible to group and others, whatever mode the code creating it
/// asks for (pins in bpffs included: the kernel applies the umask).
pub fn restrict_umask() {
    // SAFETY: umask only sets the process's file mode creation mask.
    unsafe { libc::umask(0o077) };
}

fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Why `meta` (of `path`, `what` naming it) makes it untrustworthy for
/// this process: an owner other than `owner`, or write permission for
/// group or others (allowed with the sticky bit if `sticky_ok`).
fn untrusted(meta: &Metadata, path: &Path, what: &str, sticky_ok: bool) -> Result<()> {
    let owner = euid();
    let mode = meta.mode() & 0o7777;
    let trusted_owner = meta.uid() == owner || meta.uid() == 0;
    let shared = mode & SHARED_WRITE != 0 && !(sticky_ok && mode & STICKY != 0);
    if trusted_owner && !shared {
        return Ok(());
    }
    let why = if trusted_owner {
        "writable by group or others"
    } else {
        "not owned by root"
    };
    bail!(
        "{what} {} belongs to uid {} and has mode {mode:04o}: it is {why}, so another user \
         could have put or changed what cors-filter would trust there. cors-filter never \
         changes the owner or mode of an existing directory or file: check what it holds, \
         then fix it (`chown root:root {0}` and `chmod go-w {0}`), or remove it, or choose \
         another path",
        path.display(),
        meta.uid()
    )
}

/// Checks every directory above `dir` (`what` names `dir` in errors) by
/// [`untrusted`]'s rule, sticky bit allowed: those of the path as given
/// (each symbolic link in it lives in a directory on that path) and those
/// of the path the links lead to.
fn check_ancestors(dir: &Path, what: &str) -> Result<()> {
    let given = std::path::absolute(dir)
        .with_context(|| format!("cannot resolve the path of {what} {}", dir.display()))?;
    let real = fs::canonicalize(dir)
        .with_context(|| format!("cannot resolve the path of {what} {}", dir.display()))?;
    let mut seen: Vec<PathBuf> = Vec::new();
    for ancestor in given.ancestors().skip(1).chain(real.ancestors().skip(1)) {
        if seen.iter().any(|s| s == ancestor) {
            continue;
        }
        let meta = fs::metadata(ancestor).with_context(|| {
            format!(
                "cannot stat {}, above {what} {}",
                ancestor.display(),
                dir.display()
            )
        })?;
        untrusted(
            &meta,
            ancestor,
            &format!("directory above {what} {}, ", dir.display()),
            true,
        )?;
        seen.push(ancestor.to_owned());
    }
    Ok(())
}

/// Opens directory `dir` without following a symbolic link and checks
/// it and the directories above it (see the module's rule); `Ok(None)`
/// when it does not exist.
fn open_trusted_dir(dir: &Path, what: &str) -> Result<Option<File>> {
    let handle = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
    {
        Ok(handle) => handle,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                    "cannot open {what} {} (it must be a directory, not a symbolic link)",
                    dir.display()
                )
            });
        }
    };
    // Checked through the descriptor: what is checked is what is used.
    let meta = handle
        .metadata()
        .with_context(|| format!("cannot stat {what} {}", dir.display()))?;
    untrusted(&meta, dir, what, false)?;
    check_ancestors(dir, what)?;
    Ok(Some(handle))
}

/// Makes sure `dir` (`what` names it in errors, e.g. "pin directory") is
/// a directory, not a symbolic link, that only root can change (see the
/// module's rule), creating it with mode 0700 (and, with `parents`, its
/// missing parents) if needed. An existing directory is checked, never
/// chmod-ed.
pub fn ensure_private_dir(dir: &Path, what: &str, parents: bool) -> Result<()> {
    match fs::DirBuilder::new()
        .recursive(parents)
        .mode(DIR_MODE)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(e).with_context(|| format!("cannot create {what} {}", dir.display()));
        }
    }
    match open_trusted_dir(dir, what)? {
        Some(_) => Ok(()),
        None => bail!("{what} {} vanished as it was created", dir.display()),
    }
}

/// Checks `dir` as [`ensure_private_dir`] does, and every entry in it:
/// owned by root and not writable by group or others (a symbolic link:
/// owned by root). Nothing is created; false when `dir` does not exist.
pub fn check_private_dir_and_files(dir: &Path, what: &str) -> Result<bool> {
    if open_trusted_dir(dir, what)?.is_none() {
        return Ok(false);
    }
    let entries =
        fs::read_dir(dir).with_context(|| format!("cannot list {what} {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {what} {}", dir.display()))?;
        let path = entry.path();
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            // Renamed away between the listing and now: the daemon and
            // `allow` replace files by renaming a temporary one over them.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot stat {}", path.display())),
        };
        // A link's own mode is always 0777 and means nothing: its owner does.
        if meta.file_type().is_symlink() && (meta.uid() == 0 || meta.uid() == euid()) {
            continue;
        }
        untrusted(&meta, &path, &format!("file in {what}"), false)?;
    }
    Ok(true)
}

/// Opens `path` for writing, creating it 0600 (`truncate` empties it) and
/// setting 0600 on a file of this process's user that was already there;
/// one of another user, or writable by group or others, is refused.
pub fn open_private_file(path: &Path, truncate: bool) -> Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(truncate)
        .write(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("cannot open {} for writing", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot stat {}", path.display()))?;
    untrusted(&meta, path, "file", false)?;
    file.set_permissions(fs::Permissions::from_mode(FILE_MODE))
        .with_context(|| format!("cannot set mode 0600 on {}", path.display()))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let d =
            std::env::temp_dir().join(format!("cors-filter-private-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    const NOBODY: u32 = 65534;

    fn chown(path: &Path, uid: u32) {
        std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
    }

    #[test]
    fn a_new_directory_is_made_private_and_an_existing_one_is_left_as_it_is() {
        let base = scratch("dir");
        let nested = base.join("a/b");
        assert!(ensure_private_dir(&nested, "state directory", false).is_err());
        ensure_private_dir(&nested, "state directory", true).unwrap();
        assert_eq!(mode(&nested), 0o700);
        // Readable by others, writable by root only: trusted, not changed.
        fs::set_permissions(&nested, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&nested, "state directory", true).unwrap();
        assert_eq!(mode(&nested), 0o755);
        fs::remove_dir_all(&base).unwrap();
    }

    /// A directory that another user owns, or that group or others can
    /// write, is refused with its path, owner and mode, and left as it was.
    #[test]
    fn a_shared_or_foreign_directory_is_refused_never_chmod_ed() {
        let base = scratch("shared");
        fs::create_dir_all(&base).unwrap();
        fs::set_permissions(&base, fs::Permissions::from_mode(0o700)).unwrap();
        let dir = base.join("state");
        for (shared, uid) in [(0o1777, 0), (0o775, 0), (0o757, 0), (0o700, NOBODY)] {
            let _ = fs::remove_dir(&dir);
            fs::create_dir(&dir).unwrap();
            fs::set_permissions(&dir, fs::Permissions::from_mode(shared)).unwrap();
            chown(&dir, uid);
            for e in [
                ensure_private_dir(&dir, "state directory", true).unwrap_err(),
                check_private_dir_and_files(&dir, "state directory").unwrap_err(),
            ] {
                let e = format!("{e:#}");
                for part in [
                    format!("state directory {}", dir.display()),
                    format!("uid {uid}"),
                    format!("mode {shared:04o}"),
                    "never changes".to_owned(),
                ] {
                    assert!(e.contains(&part), "{shared:o}: {part:?} not in {e}");
                }
            }
            assert_eq!(mode(&dir), shared, "{shared:o}");
            assert_eq!(fs::metadata(&dir).unwrap().uid(), uid);
        }
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_planted_file_is_refused() {
        let base = scratch("planted");
        let dir = base.join("state");
        ensure_private_dir(&dir, "state directory", true).unwrap();
        assert!(check_private_dir_and_files(&dir, "state directory").unwrap());
        let planted = dir.join("allowlist-changes.json");
        fs::write(&planted, "{}").unwrap();
        fs::set_permissions(&planted, fs::Permissions::from_mode(0o644)).unwrap();
        check_private_dir_and_files(&dir, "state directory").unwrap();
        chown(&planted, NOBODY);
        let e = format!(
            "{:#}",
            check_private_dir_and_files(&dir, "state directory").unwrap_err()
        );
        assert!(
            e.contains(&planted.display().to_string()) && e.contains("uid 65534"),
            "{e}"
        );
        assert!(open_private_file(&planted, false).is_err());
        assert_eq!(mode(&planted), 0o644);
        // Root's, but writable by others: refused too.
        chown(&planted, 0);
        fs::set_permissions(&planted, fs::Permissions::from_mode(0o666)).unwrap();
        assert!(check_private_dir_and_files(&dir, "state directory").is_err());
        assert!(open_private_file(&planted, false).is_err());
        // A link someone else made.
        fs::remove_file(&planted).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &planted).unwrap();
        check_private_dir_and_files(&dir, "state directory").unwrap();
        chown(&planted, NOBODY);
        assert!(check_private_dir_and_files(&dir, "state directory").is_err());
        assert!(!check_private_dir_and_files(&base.join("none"), "state directory").unwrap());
        assert!(!base.join("none").exists());
        fs::remove_dir_all(&base).unwrap();
    }

    /// A directory above writable by others is refused unless sticky.
    #[test]
    fn ancestors_writable_by_others_need_the_sticky_bit() {
        let base = scratch("ancestor");
        let dir = base.join("state");
        fs::create_dir_all(&base).unwrap();
        fs::set_permissions(&base, fs::Permissions::from_mode(0o777)).unwrap();
        let e = format!(
            "{:#}",
            ensure_private_dir(&dir, "state directory", true).unwrap_err()
        );
        assert!(
            e.contains(&format!("{}", base.display())) && e.contains("mode 0777"),
            "{e}"
        );
        fs::set_permissions(&base, fs::Permissions::from_mode(0o1777)).unwrap();
        ensure_private_dir(&dir, "state directory", true).unwrap();
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_symbolic_link_or_a_file_is_refused() {
        let base = scratch("link");
        fs::create_dir_all(base.join("real")).unwrap();
        std::os::unix::fs::symlink(base.join("real"), base.join("link")).unwrap();
        let e = format!(
            "{:#}",
            ensure_private_dir(&base.join("link"), "pin directory", false).unwrap_err()
        );
        assert!(
            e.contains("pin directory") && e.contains("symbolic link"),
            "{e}"
        );
        fs::write(base.join("file"), "").unwrap();
        assert!(ensure_private_dir(&base.join("file"), "pin directory", false).is_err());
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn files_are_0600_even_if_they_were_not() {
        let base = scratch("file");
        fs::create_dir_all(&base).unwrap();
        let path = base.join("f");
        fs::write(&path, "x").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        drop(open_private_file(&path, false).unwrap());
        assert_eq!(mode(&path), 0o600);
        assert_eq!(fs::read_to_string(&path).unwrap(), "x");
        drop(open_private_file(&path, true).unwrap());
        assert_eq!(fs::read_to_string(&path).unwrap(), "");
        fs::remove_dir_all(&base).unwrap();
    }
}
