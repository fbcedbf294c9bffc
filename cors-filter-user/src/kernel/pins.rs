//! The bpffs directory where the filter pins its maps and links, and
//! opening those maps from the CLI.
//!
//! The pins are the filter's state: they outlive the daemon, so that a
//! daemon that exits or is killed leaves the program attached and enforcing
//! with the same maps, and the next daemon adopts them.

use std::{
    ffi::CString,
    fs,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use aya::maps::{MapData, MapType};
use cors_filter_common::{
    ALLOWLIST_MAX_ENTRIES, Counter, Generation, PortBitmap,
    allow_map::AllowEntryValue,
    event::DENIALS_BYTES,
    pinned::{ConfigEntry, name},
    proxy::ProxyClient,
    stream::{ConnKey, ConnState, HeadState},
};

use crate::{
    config::TableSizes,
    kernel::links::{LinkPin, detach_pinned, link_pins},
    root_only::ensure_private_dir,
};

/// `statfs(2)` magic of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe4a11;
const DEFAULT_BPFFS: &str = "/sys/fs/bpf";

/// A map as the program defines it. A pinned map is reused by the next
/// program only if it still has this shape: the kernel would otherwise let
/// the new program read past a smaller value, or misread a larger one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MapSpec {
    pub name: &'static str,
    pub shape: Shape,
}

/// What the kernel knows of a map's layout.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shape {
    pub map_type: MapType,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} with key size {}, value size {} and {} entries",
            self.map_type, self.key_size, self.value_size, self.max_entries
        )
    }
}

pub const fn array(name: &'static str, value_size: usize, max_entries: u32) -> MapSpec {
    MapSpec {
        name,
        shape: Shape {
            map_type: MapType::Array,
            key_size: 4,
            value_size: value_size as u32,
            max_entries,
        },
    }
}

pub const fn per_cpu_counters(max_entries: u32) -> MapSpec {
    MapSpec {
        name: name::COUNTERS,
        shape: Shape {
            map_type: MapType::PerCpuArray,
            key_size: 4,
            value_size: size_of::<u64>() as u32,
            max_entries,
        },
    }
}

const fn allowlist(name: &'static str) -> MapSpec {
    MapSpec {
        name,
        shape: Shape {
            map_type: MapType::Hash,
            // The hash of the entry's key; the entry (see `cors_filter_common::allow_map`).
            key_size: size_of::<u64>() as u32,
            value_size: size_of::<AllowEntryValue>() as u32,
            max_entries: ALLOWLIST_MAX_ENTRIES,
        },
    }
}

/// The maps `run` pins whose shape is fixed, by the names the eBPF object
/// gives them. `DENIALS` is among them so that events queued while the
/// daemon restarts are there for the next one. The connection maps are
/// added by [`pinned_maps`], with the sizes the config gives them.
pub const PINNED_MAPS: [MapSpec; 8] = [
    array(name::ACTIVE, size_of::<u32>(), 1),
    array(name::CONFIG, ConfigEntry::BYTES, Generation::COUNT),
    array(name::PORTS[0], size_of::<u64>(), PortBitmap::WORDS),
    array(name::PORTS[1], size_of::<u64>(), PortBitmap::WORDS),
    allowlist(name::ALLOWLISTS[0]),
    allowlist(name::ALLOWLISTS[1]),
    per_cpu_counters(Counter::SLOTS),
    MapSpec {
        name: name::DENIALS,
        shape: Shape {
            map_type: MapType::RingBuf,
            key_size: 0,
            value_size: 0,
            max_entries: DENIALS_BYTES,
        },
    },
];

/// The connection maps (`cors_filter_common::stream`), sized by
/// `max_connections` and `max_open_heads` (`PROXY_CLIENTS`: fixed). Pinned, so that the state of
/// the connections followed outlives a daemon restart or an upgrade in
/// place: the new program goes on reading the streams where the old one was.
pub fn connection_maps(tables: TableSizes) -> [MapSpec; 3] {
    let lru = |name, value_size: usize, max_entries| MapSpec {
        name,
        shape: Shape {
            map_type: MapType::LruHash,
            key_size: size_of::<ConnKey>() as u32,
            value_size: value_size as u32,
            max_entries,
        },
    };
    [
        lru(name::CONNS, size_of::<ConnState>(), tables.max_connections),
        lru(
            name::OPEN_HEADS,
            size_of::<HeadState>(),
            tables.max_open_heads,
        ),
        lru(
            name::PROXY_CLIENTS,
            size_of::<ProxyClient>(),
            cors_filter_common::proxy::MAX_CLIENTS,
        ),
    ]
}

/// Every map `run` pins: [`PINNED_MAPS`] and the [`connection_maps`].
pub fn pinned_maps(tables: TableSizes) -> Vec<MapSpec> {
    PINNED_MAPS
        .into_iter()
        .chain(connection_maps(tables))
        .collect()
}

/// The number of entries of the map pinned in `pin_dir` as `name`, or
/// `None` when there is no such pin.
pub fn pinned_max_entries(pin_dir: &Path, name: &str) -> Result<Option<u32>> {
    Ok(pinned_shape(&pin_path(pin_dir, name))?.map(|shape| shape.max_entries))
}

/// The shape of the map pinned at `path`, or `None` when there is none.
pub fn pinned_shape(path: &Path) -> Result<Option<Shape>> {
    if !pin_exists(path)? {
        return Ok(None);
    }
    let info = MapData::from_pin(path)
        .and_then(|m| m.info())
        .with_context(|| format!("cannot read pinned map {}", path.display()))?;
    let map_type = info
        .map_type()
        .with_context(|| format!("cannot read the type of {}", path.display()))?;
    Ok(Some(Shape {
        map_type,
        key_size: info.key_size(),
        value_size: info.value_size(),
        max_entries: info.max_entries(),
    }))
}

/// Checks that every map of `specs` already pinned in `pin_dir` has the
/// shape `specs` gives it (the connection maps: the sizes `tables` gives
/// them), or the one `also` allows for it; returns whether any was pinned.
pub fn check_pinned_maps(
    pin_dir: &Path,
    specs: &[MapSpec],
    tables: TableSizes,
    also: impl Fn(&str) -> Option<Shape>,
) -> Result<bool> {
    let mut found = false;
    for spec in specs {
        let path = pin_path(pin_dir, spec.name);
        let Some(shape) = pinned_shape(&path)? else {
            continue;
        };
        found = true;
        let wanted = spec.shape;
        if shape == wanted || also(spec.name) == Some(shape) {
            continue;
        }
        let setting = tables
            .maps()
            .into_iter()
            .find(|(map, _, _)| *map == spec.name);
        if let Some((_, setting, size)) = setting
            && (Shape {
                max_entries: wanted.max_entries,
                ..shape
            }) == wanted
        {
            bail!(
                "pinned map {} ({}) has {} entries, but the config sets {setting} = {size}: the size of a pinned map cannot change. Either set {setting} = {} again, or remove the filter with `cors-filter --pin-dir {} detach --all` (the host is unfiltered until this one starts, and the connections followed are forgotten), then start again",
                spec.name,
                path.display(),
                shape.max_entries,
                shape.max_entries,
                pin_dir.display()
            );
        }
        bail!(
            "pinned map {} is {shape}, but this cors-filter needs {wanted}: it was left by another version. Remove the old filter with `cors-filter --pin-dir {} detach --all` (the host is unfiltered until this one starts), then start again",
            path.display(),
            pin_dir.display()
        );
    }
    Ok(found)
}

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
/// mode 0700 and is used by no other daemon. Pins already there are kept:
/// they are the filter the new daemon adopts.
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
        // Pins live as long as the bpffs mount they are in: in a private
        // mount namespace (`ip netns exec` makes one) they go with it.
        log::warn!(
            "mounted bpffs on {DEFAULT_BPFFS}, where none was: if this process runs in a mount namespace of its own (as under `ip netns exec`; use `nsenter --net` instead), the pins and the filter go away when it ends"
        );
    }
    ensure_private_dir(pin_dir, "pin directory", false)?;
    lock_dir(pin_dir)
}

/// An exclusive `flock` on the pin directory, held while a filter uses it.
pub struct PinDirLock {
    _dir: fs::File,
}

pub fn lock_dir(pin_dir: &Path) -> Result<PinDirLock> {
    let dir = fs::File::open(pin_dir)
        .with_context(|| format!("cannot open pin directory {}", pin_dir.display()))?;
    match dir.try_lock() {
        Ok(()) => Ok(PinDirLock { _dir: dir }),
        Err(fs::TryLockError::WouldBlock) => bail!(
            "another cors-filter is running with pin directory {}",
            pin_dir.display()
        ),
        Err(fs::TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("cannot lock {}", pin_dir.display()))
        }
    }
}

/// Detaches every link pinned in `pin_dir`, then removes the map pins and
/// the directory; what is already gone is fine.
pub fn remove_pins(pin_dir: &Path) -> Result<Vec<LinkPin>> {
    let links = link_pins(pin_dir)?;
    for link in &links {
        detach_pinned(&link.path)?;
    }
    // Every other pin too, not only this build's maps: pins an older
    // version left under other names would keep the directory.
    let entries = match fs::read_dir(pin_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(links),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", pin_dir.display())),
    };
    for entry in entries {
        let path = entry
            .with_context(|| format!("cannot read {}", pin_dir.display()))?
            .path();
        if !path.is_dir() {
            fs::remove_file(&path).with_context(|| format!("cannot unpin {}", path.display()))?;
        }
    }
    match fs::remove_dir(pin_dir) {
        Ok(()) => Ok(links),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(links),
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

/// Opens a map the running filter pinned, or says that no filter is
/// running, or that its pins are of a layout this build does not read.
pub fn open_pinned(pin_dir: &Path, name: &str) -> Result<MapData> {
    use crate::exit::{Kind, classify, mark};
    let path = pin_path(pin_dir, name);
    let exists = pin_exists(&path)?;
    match crate::kernel::layout::require_current(pin_dir) {
        Ok(()) if exists => MapData::from_pin(&path)
            .with_context(|| format!("cannot open pinned map {}", path.display())),
        // A newer layout may have renamed or dropped the map: that is
        // what to say, not that nothing runs.
        Err(e) if exists || classify(&e) == Kind::NewerLayout => Err(e),
        _ => Err(mark(
            anyhow::anyhow!(
                "no running cors-filter: {} does not exist (is `cors-filter run` running with --pin-dir {}?)",
                path.display(),
                pin_dir.display()
            ),
            Kind::NotRunning,
        )),
    }
}

/// Where a map an upgrade makes new is pinned until the links run the
/// program that uses it (see `layout`).
pub fn staging_path(pin_dir: &Path, name: &str) -> PathBuf {
    pin_dir.join(format!("{name}{STAGING_SUFFIX}"))
}

/// Not `.next`: bpffs refuses names with a dot (reserved).
pub const STAGING_SUFFIX: &str = "_NEXT";
