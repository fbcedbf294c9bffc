//! The bpffs directory where the running filter pins its maps, and opening
//! those maps from the CLI.

use std::{
    ffi::CString,
    fs,
    os::{fd::AsRawFd as _, unix::ffi::OsStrExt as _},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use aya::maps::MapData;

use crate::private::ensure_private_dir;

/// `statfs(2)` magic of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe4a11;
const DEFAULT_BPFFS: &str = "/sys/fs/bpf";

/// The maps `run` pins, by the names the eBPF object gives them.
pub const PINNED_MAPS: [&str; 4] = ["ALLOWLIST", "PORTS", "CONFIG", "COUNTERS"];

fn fs_type(path: &Path) -> Result<i64> {
    let c = CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("path {} contains a NUL byte", path.display()))?;
    // SAFETY: `statfs` is plain old data; zeroed is a valid value to overwrite.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `st` a valid out-pointer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("statfs {}", path.display()));
    }
    Ok(st.f_type as i64)
}

/// Makes sure `pin_dir`'s parent is a bpffs (mounting the default one at
/// /sys/fs/bpf when nothing is mounted there) and that `pin_dir` exists with
/// mode 0700, is used by no other filter, and holds no stale pins.
pub fn prepare_pin_dir(pin_dir: &Path) -> Result<PinDirLock> {
    let parent = pin_dir
        .parent()
        .with_context(|| format!("pin directory {} has no parent", pin_dir.display()))?;
    if fs_type(parent)? != BPF_FS_MAGIC {
        if parent != Path::new(DEFAULT_BPFFS) {
            bail!(
                "{} is not on a bpf filesystem (mount one with `mount -t bpf bpf {}`)",
                parent.display(),
                parent.display()
            );
        }
        let target = CString::new(DEFAULT_BPFFS).expect("no NUL");
        let fstype = CString::new("bpf").expect("no NUL");
        // SAFETY: valid C strings; no data argument.
        if unsafe {
            libc::mount(
                fstype.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        } != 0
        {
            return Err(std::io::Error::last_os_error()).with_context(|| {
                format!(
                    "cannot mount bpffs on {DEFAULT_BPFFS} (that needs CAP_SYS_ADMIN: mount it \
                         beforehand with `mount -t bpf bpf {DEFAULT_BPFFS}`)"
                )
            });
        }
        log::info!("mounted bpffs on {DEFAULT_BPFFS}");
    }
    ensure_private_dir(pin_dir, "pin directory", false)?;
    let lock = lock_dir(pin_dir)?;
    // Held lock: pins found here were left by a filter that died.
    for name in PINNED_MAPS {
        let stale = pin_dir.join(name);
        if stale.exists() {
            log::warn!(
                "removing stale pin {} left by a previous run",
                stale.display()
            );
            fs::remove_file(&stale)
                .with_context(|| format!("cannot remove {}", stale.display()))?;
        }
    }
    Ok(lock)
}

/// An exclusive `flock` on the pin directory, held while a filter uses it.
pub struct PinDirLock {
    _dir: fs::File,
}

fn lock_dir(pin_dir: &Path) -> Result<PinDirLock> {
    let dir = fs::File::open(pin_dir)
        .with_context(|| format!("cannot open pin directory {}", pin_dir.display()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            bail!(
                "another cors-filter is running with pin directory {}",
                pin_dir.display()
            );
        }
        return Err(err).with_context(|| format!("cannot lock {}", pin_dir.display()));
    }
    Ok(PinDirLock { _dir: dir })
}

/// Removes the pins and the directory; what is already gone is fine.
pub fn remove_pins(pin_dir: &Path) -> Result<()> {
    for name in PINNED_MAPS {
        let path = pin_dir.join(name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot unpin {}", path.display())),
        }
    }
    match fs::remove_dir(pin_dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", pin_dir.display())),
    }
}

/// Whether the pin at `path` exists; an error, not `false`, when the pin
/// directory cannot be searched (it is root-only).
pub fn pin_exists(path: &Path) -> Result<bool> {
    path.try_exists()
        .with_context(|| format!("cannot look for pinned map {}", path.display()))
}

pub fn pin_path(pin_dir: &Path, name: &str) -> PathBuf {
    pin_dir.join(name)
}

/// Opens a map the running filter pinned, or says that no filter is running.
pub fn open_pinned(pin_dir: &Path, name: &str) -> Result<MapData> {
    let path = pin_path(pin_dir, name);
    if !pin_exists(&path)? {
        bail!(
            "no running cors-filter: {} does not exist (is `cors-filter run` running with --pin-dir {}?)",
            path.display(),
            pin_dir.display()
        );
    }
    MapData::from_pin(&path).with_context(|| format!("cannot open pinned map {}", path.display()))
}
