//! Root-only files and directories: the pin directory and the state
//! directory are 0700 and owned by this process's user, whatever was there
//! before, and every file created is 0600.

use std::{
    fs::{self, File, OpenOptions},
    io::ErrorKind,
    os::unix::fs::{
        DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
    },
    path::Path,
};

use anyhow::{Context, Result, bail};

/// Mode of the directories cors-filter keeps its pins and state in.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file it creates there.
pub const FILE_MODE: u32 = 0o600;

/// Makes every file and directory this process creates from now on
/// inaccessible to group and others, whatever mode the code creating it
/// asks for (pins in bpffs included: the kernel applies the umask).
pub fn restrict_umask() {
    // SAFETY: umask only sets the process's file mode creation mask.
    unsafe { libc::umask(0o077) };
}

/// Makes sure `dir` (`what` names it in errors, e.g. "pin directory") is
/// a directory, not a symbolic link, owned by this process's effective uid
/// and of mode 0700, creating it (and, with `parents`, its missing
/// parents) if needed. A directory someone else made in its place is
/// refused: it would give them the pins or the state.
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
    // Checked and fixed through one descriptor, so that what is checked is
    // what is changed.
    let handle = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
        .with_context(|| {
            format!(
                "cannot open {what} {} (it must be a directory, not a symbolic link)",
                dir.display()
            )
        })?;
    let meta = handle
        .metadata()
        .with_context(|| format!("cannot stat {what} {}", dir.display()))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid {
        bail!(
            "{what} {} belongs to uid {}, not to uid {euid} that runs cors-filter: refusing to use it \
             (remove it, or choose another directory)",
            dir.display(),
            meta.uid()
        );
    }
    if meta.mode() & 0o7777 != DIR_MODE {
        handle
            .set_permissions(fs::Permissions::from_mode(DIR_MODE))
            .with_context(|| format!("cannot set mode 0700 on {what} {}", dir.display()))?;
    }
    Ok(())
}

/// Opens `path` for writing, creating it 0600 (`truncate` empties it) and
/// setting 0600 on a file that was already there.
pub fn open_private_file(path: &Path, truncate: bool) -> Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(truncate)
        .write(true)
        .mode(FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| format!("cannot open {} for writing", path.display()))?;
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

    #[test]
    fn a_directory_is_made_or_made_private() {
        let base = scratch("dir");
        let nested = base.join("a/b");
        assert!(ensure_private_dir(&nested, "state directory", false).is_err());
        ensure_private_dir(&nested, "state directory", true).unwrap();
        assert_eq!(mode(&nested), 0o700);
        fs::set_permissions(&nested, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&nested, "state directory", true).unwrap();
        assert_eq!(mode(&nested), 0o700);
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
