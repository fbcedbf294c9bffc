//! Kept for what aya 0.14 lacks: a link's ifindex and `BPF_LINK_DETACH`.
//!
//! The bpf links that attach the program, pinned in the pin directory as
//! `link-<interface>-<hook>`: a pinned link keeps the program attached
//! after the daemon exits or is killed, until the pin is removed. aya pins
//! a link and replaces its program; the interface a pinned link is on
//! (`BPF_OBJ_GET_INFO_BY_FD`) and forcing one off (`BPF_LINK_DETACH`) are
//! `bpf(2)` calls made here.

use std::{
    ffi::CString,
    fs,
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};
use aya_obj::generated::{bpf_cmd, bpf_link_info, bpf_link_type};

const LINK_PREFIX: &str = "link-";

/// Where a program is attached, as named in a link pin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HookName {
    XdpNative,
    XdpSkb,
    Tc,
}

impl HookName {
    const ALL: [HookName; 3] = [HookName::XdpNative, HookName::XdpSkb, HookName::Tc];

    pub const fn as_str(self) -> &'static str {
        match self {
            HookName::XdpNative => "xdp-native",
            HookName::XdpSkb => "xdp-skb",
            HookName::Tc => "tc",
        }
    }

    pub const fn is_xdp(self) -> bool {
        matches!(self, HookName::XdpNative | HookName::XdpSkb)
    }

    const fn link_type(self) -> u32 {
        match self {
            HookName::XdpNative | HookName::XdpSkb => bpf_link_type::BPF_LINK_TYPE_XDP as u32,
            HookName::Tc => bpf_link_type::BPF_LINK_TYPE_TCX as u32,
        }
    }
}

/// A link pin found in the pin directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkPin {
    pub path: PathBuf,
    pub iface: String,
    pub hook: HookName,
}

pub fn link_pin_path(pin_dir: &Path, iface: &str, hook: HookName) -> PathBuf {
    pin_dir.join(format!("{LINK_PREFIX}{iface}-{}", hook.as_str()))
}

/// The interface and hook a pin's file name stands for, if it is a link pin.
fn parse_link_pin_name(name: &str) -> Option<(String, HookName)> {
    let rest = name.strip_prefix(LINK_PREFIX)?;
    HookName::ALL.into_iter().find_map(|hook| {
        let iface = rest.strip_suffix(hook.as_str())?.strip_suffix('-')?;
        (!iface.is_empty()).then(|| (iface.to_owned(), hook))
    })
}

/// The link pins in `pin_dir`, sorted by path; none if it does not exist.
pub fn link_pins(pin_dir: &Path) -> Result<Vec<LinkPin>> {
    let entries = match fs::read_dir(pin_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot read pin directory {}", pin_dir.display()));
        }
    };
    let mut pins = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", pin_dir.display()))?;
        if let Some((iface, hook)) = parse_link_pin_name(&entry.file_name().to_string_lossy()) {
            pins.push(LinkPin {
                path: entry.path(),
                iface,
                hook,
            });
        }
    }
    pins.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(pins)
}

fn bpf(cmd: bpf_cmd, attr: &mut [u64], what: &str) -> Result<i64> {
    // SAFETY: `attr` is a zero-padded `union bpf_attr` prefix for `cmd`,
    // valid for `attr.len() * 8` bytes, which is the size passed; the
    // pointers inside it (set by the caller) stay valid across the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr.as_mut_ptr(),
            std::mem::size_of_val(attr) as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error()).context(what.to_owned());
    }
    Ok(rc)
}

/// Opens the object pinned at `path` (`BPF_OBJ_GET`).
fn open_pin(path: &Path) -> Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .with_context(|| format!("path {} contains a NUL byte", path.display()))?;
    // obj: { pathname: u64, bpf_fd: u32, file_flags: u32, path_fd: i32 }
    let mut attr = [0u64; 3];
    attr[0] = c.as_ptr() as u64;
    let fd = bpf(
        bpf_cmd::BPF_OBJ_GET,
        &mut attr,
        &format!("cannot open pinned link {}", path.display()),
    )?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// What the kernel says of a pinned link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkState {
    /// `bpf_link_type` of the link.
    pub link_type: u32,
    /// The interface the link is attached to; 0 once the interface is gone
    /// (the link is then defunct and attaches nothing).
    pub ifindex: u32,
    /// The link's id (what `bpftool link` shows).
    pub id: u32,
    /// The id of the program the link runs (`bpftool prog`).
    pub prog_id: u32,
}

impl LinkState {
    pub fn is_on(&self, hook: HookName, ifindex: u32) -> bool {
        self.link_type == hook.link_type() && self.ifindex == ifindex && ifindex != 0
    }
}

pub fn link_state(path: &Path) -> Result<LinkState> {
    let fd = open_pin(path)?;
    // SAFETY: `bpf_link_info` is plain old data; all zeroes is a valid value.
    let mut info: bpf_link_info = unsafe { std::mem::zeroed() };
    // info: { bpf_fd: u32, info_len: u32, info: u64 }
    let mut attr = [0u64; 2];
    attr[0] = fd.as_raw_fd() as u32 as u64 | ((std::mem::size_of::<bpf_link_info>() as u64) << 32);
    attr[1] = &mut info as *mut bpf_link_info as u64;
    bpf(
        bpf_cmd::BPF_OBJ_GET_INFO_BY_FD,
        &mut attr,
        &format!("cannot read link {}", path.display()),
    )?;
    // Only XDP and TCX links are made here; both keep the interface in the
    // union's first field.
    let ifindex = match info.type_ {
        // SAFETY: the union member that matches the link type the kernel set.
        t if t == bpf_link_type::BPF_LINK_TYPE_XDP as u32 => unsafe {
            info.__bindgen_anon_1.xdp.ifindex
        },
        // SAFETY: as above.
        t if t == bpf_link_type::BPF_LINK_TYPE_TCX as u32 => unsafe {
            info.__bindgen_anon_1.tcx.ifindex
        },
        other => bail!(
            "{} is a bpf link of type {other}, not an XDP or TCX link made by cors-filter",
            path.display()
        ),
    };
    Ok(LinkState {
        link_type: info.type_,
        ifindex,
        id: info.id,
        prog_id: info.prog_id,
    })
}

/// Detaches the link pinned at `path` and removes the pin. A link whose
/// interface is gone is only unpinned.
pub fn detach_pinned(path: &Path) -> Result<()> {
    let fd = open_pin(path)?;
    // link_detach: { link_fd: u32 }
    let mut attr = [fd.as_raw_fd() as u32 as u64];
    match bpf(
        bpf_cmd::BPF_LINK_DETACH,
        &mut attr,
        &format!("cannot detach link {}", path.display()),
    ) {
        Ok(_) => {}
        // ENOLINK: already detached, by its interface going away.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .and_then(|e| e.raw_os_error())
                == Some(libc::ENOLINK) => {}
        Err(e) => return Err(e),
    }
    fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()))
}

/// The index of interface `name`.
pub fn ifindex(name: &str) -> Result<u32> {
    let c =
        CString::new(name).with_context(|| format!("interface name {name:?} has a NUL byte"))?;
    // SAFETY: `c` is a valid C string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        bail!("interface {name} does not exist");
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_pin_names_round_trip() {
        for hook in HookName::ALL {
            for iface in ["eth0", "veth-s", "br-lan-1", "a"] {
                let path = link_pin_path(Path::new("/p"), iface, hook);
                let name = path.file_name().unwrap().to_str().unwrap();
                assert_eq!(
                    parse_link_pin_name(name),
                    Some((iface.to_owned(), hook)),
                    "{name}"
                );
            }
        }
        for other in ["ACTIVE", "link-", "link--tc", "link-eth0", "link-eth0-xdp"] {
            assert_eq!(parse_link_pin_name(other), None, "{other}");
        }
    }
}
