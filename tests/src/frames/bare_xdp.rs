//! Two-instruction XDP programs that pass or drop every packet: the floor
//! the benchmark measures cors-filter against (`BPF_PROG_TEST_RUN` and
//! attached to a veth), and the `XDP_PASS` program tests attach in native
//! mode to an interface of their namespace, through a BPF link that a guard
//! holds.
//!
//! veth needs `XDP_PASS` on the peer of an interface that answers resets: a frame that native XDP on one end of a veth pair sends
//! back with `XDP_TX` is queued to the other end, and only delivered at once
//! when that end has an XDP program of its own (veth schedules the peer's
//! receive only then; with GRO alone the frame waits for the next packet).
//! A real deployment on veth needs the same (see README, "Answering with a
//! reset").
//!
//! Loaded with the `bpf(2)` system call itself: a program is two
//! instructions, not worth an object file. The link lives as long as its
//! file descriptor: dropping the guard, or the process ending, detaches it.

use std::{
    ffi::CString,
    fs::File,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use anyhow::{Context, Result, bail};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `enum bpf_attach_type`.
const BPF_XDP: u32 = 37;
const XDP_FLAGS_DRV_MODE: u32 = 4;

/// What a bare program returns for every packet (`enum xdp_action`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BareAction {
    Drop = 1,
    Pass = 2,
}

impl BareAction {
    fn name(self) -> &'static str {
        match self {
            BareAction::Drop => "xdp_drop",
            BareAction::Pass => "xdp_pass",
        }
    }
}

/// One BPF instruction (`struct bpf_insn`): opcode, registers (dst in the
/// low nibble, src in the high one), offset, immediate.
#[repr(C)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

/// `r0 = action; exit`.
const fn program(action: BareAction) -> [Insn; 2] {
    [
        // BPF_ALU64 | BPF_MOV | BPF_K
        Insn {
            code: 0xb7,
            regs: 0,
            off: 0,
            imm: action as i32,
        },
        // BPF_JMP | BPF_EXIT
        Insn {
            code: 0x95,
            regs: 0,
            off: 0,
            imm: 0,
        },
    ]
}

/// The `BPF_PROG_LOAD` members of `union bpf_attr`, up to
/// `expected_attach_type`; the kernel takes the missing rest as zero.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_LINK_CREATE` members of `union bpf_attr` an XDP link uses.
#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

/// An attached bare program; detached when dropped.
pub struct BareXdp {
    _link: OwnedFd,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T, what: &str) -> Result<OwnedFd> {
    // SAFETY: `attr` is a valid prefix of `union bpf_attr` for `cmd`, which
    // lives across the call; every pointer in it is valid for what the
    // kernel reads (no buffer is given to write into).
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| what.to_owned());
    }
    // SAFETY: the call returned a new file descriptor, which nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Loads the bare program returning `action`, attached nowhere (for
/// `BPF_PROG_TEST_RUN`).
pub fn load(action: BareAction) -> Result<OwnedFd> {
    let insns = program(action);
    let license = c"GPL";
    let mut load = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..ProgLoadAttr::default()
    };
    let name = action.name().as_bytes();
    load.prog_name[..name.len()].copy_from_slice(name);
    bpf(
        BPF_PROG_LOAD,
        &mut load,
        &format!("cannot load the {} program", action.name()),
    )
}

impl BareXdp {
    /// Attaches the bare program returning `action` in native mode to
    /// `ifname` in the network namespace at `ns_path` (e.g. `/run/netns/NAME`).
    pub fn attach(action: BareAction, ns_path: &str, ifname: &str) -> Result<BareXdp> {
        let (ns_path, ifname) = (ns_path.to_owned(), ifname.to_owned());
        // The interface index, and the link, are looked up in the calling
        // thread's network namespace: a thread of its own enters it.
        std::thread::spawn(move || attach_here(action, &ns_path, &ifname))
            .join()
            .map_err(|_| anyhow::anyhow!("the thread attaching {} panicked", action.name()))?
    }
}

fn attach_here(action: BareAction, ns_path: &str, ifname: &str) -> Result<BareXdp> {
    let ns = File::open(ns_path).with_context(|| format!("cannot open {ns_path}"))?;
    // SAFETY: `ns` is an open namespace file; only this thread moves.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot enter the network namespace {ns_path}"));
    }
    let name = CString::new(ifname).with_context(|| format!("bad interface name {ifname:?}"))?;
    // SAFETY: `name` is a valid C string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        bail!("no interface {ifname} in {ns_path}");
    }
    let program = load(action)?;
    let mut link = LinkCreateAttr {
        prog_fd: program.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags: XDP_FLAGS_DRV_MODE,
    };
    let link = bpf(
        BPF_LINK_CREATE,
        &mut link,
        &format!("cannot attach {} to {ifname} in {ns_path}", action.name()),
    )?;
    Ok(BareXdp { _link: link })
}

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of};

    use super::*;

    #[test]
    fn attrs_match_linux_bpf_h() {
        assert_eq!(size_of::<Insn>(), 8);
        assert_eq!(offset_of!(ProgLoadAttr, insns), 8);
        assert_eq!(offset_of!(ProgLoadAttr, license), 16);
        assert_eq!(offset_of!(ProgLoadAttr, log_buf), 32);
        assert_eq!(offset_of!(ProgLoadAttr, prog_name), 48);
        assert_eq!(offset_of!(ProgLoadAttr, prog_ifindex), 64);
        assert_eq!(offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(size_of::<LinkCreateAttr>(), 16);
    }
}
