//! Running `cors-filter` with less than root's privileges: as an
//! unprivileged user, or as root with a chosen capability set (what the
//! systemd unit gives it), through util-linux's `setpriv`; and what the
//! files it leaves look like.

use std::{
    fs,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::{
    harness::filter::{FilterHome, remove_pin_dir, run_arguments},
    harness::netns::NetnsPair,
    harness::process::run_bounded,
    unique_suffix,
};

/// The user `nobody`.
pub const NOBODY: u32 = 65534;

/// Capability names by number, as in `linux/capability.h`.
const CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The mask of `CAP_*` names, as `/proc/PID/status` shows it.
pub fn capability_mask(names: &[String]) -> Result<u64> {
    names.iter().try_fold(0u64, |mask, name| {
        let bare = name.strip_prefix("CAP_").unwrap_or(name);
        let bit = CAPABILITIES
            .iter()
            .position(|c| *c == bare)
            .with_context(|| format!("unknown capability {name}"))?;
        Ok(mask | 1 << bit)
    })
}

/// `-all,+bpf,+net_admin`: `setpriv`'s spelling of exactly `names`.
pub fn setpriv_set(names: &[String]) -> String {
    let mut set = "-all".to_owned();
    for name in names {
        set.push_str(",+");
        set.push_str(&name.strip_prefix("CAP_").unwrap_or(name).to_lowercase());
    }
    set
}

/// `setpriv` arguments that run the next program as root with exactly
/// `names`, the way systemd runs the unit's root service with
/// `CapabilityBoundingSet=` and `NoNewPrivileges=yes`: uid 0 gets the
/// bounding set on execve, nothing is inherited or ambient.
pub fn root_with_capabilities(names: &[String]) -> Vec<String> {
    vec![
        format!("--bounding-set={}", setpriv_set(names)),
        "--inh-caps=-all".to_owned(),
        "--ambient-caps=-all".to_owned(),
        "--no-new-privs".to_owned(),
        "--".to_owned(),
    ]
}

/// `program` run as `nobody` (uid and gid 65534, no supplementary groups,
/// hence no capabilities), with backtraces asked for so that a panic would
/// show one.
pub fn as_nobody(program: &Path) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args(nobody_setpriv_args())
        .arg(program)
        .env("RUST_BACKTRACE", "1");
    command
}

/// `setpriv`'s arguments that run the next program as `nobody`.
fn nobody_setpriv_args() -> [String; 4] {
    [
        format!("--reuid={NOBODY}"),
        format!("--regid={NOBODY}"),
        "--clear-groups".to_owned(),
        "--".to_owned(),
    ]
}

/// `program` run as `nobody` in network namespace `ns`, with `nofile` as
/// both its limits of open files (set by root before the privileges go,
/// as an administrator could have given that user).
pub fn as_nobody_in_netns(ns: &str, nofile: u64, program: &Path) -> Command {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", ns, "prlimit"])
        .arg(format!("--nofile={nofile}:{nofile}"))
        .arg("setpriv")
        .args(nobody_setpriv_args())
        .arg(program)
        .env("RUST_BACKTRACE", "1");
    command
}

/// Writes an executable script in `dir` that runs `binary` with its
/// arguments as root with exactly `capabilities`; usable wherever a
/// `cors-filter` binary is (e.g. `RunningFilter::start_with`), so that the
/// filter and the CLI calls made against it run as the unit would.
pub fn capability_wrapper(dir: &Path, binary: &Path, capabilities: &[String]) -> Result<PathBuf> {
    let shown = binary.display().to_string();
    if shown.contains('\'') {
        bail!("cannot quote {shown} in a shell script");
    }
    let script = dir.join("cors-filter-with-unit-capabilities");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\nexec setpriv {} '{shown}' \"$@\"\n",
            root_with_capabilities(capabilities).join(" ")
        ),
    )
    .with_context(|| format!("cannot write {}", script.display()))?;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755))?;
    Ok(script)
}

/// The effective capability mask of process `pid`.
pub fn effective_capabilities(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .with_context(|| format!("no CapEff in {path}"))?;
    u64::from_str_radix(hex.trim(), 16).with_context(|| format!("bad CapEff in {path}: {hex}"))
}

/// A pin directory for one test, removed (with its pins) on drop; named so
/// that a killed run's is swept by the next (see `filter.rs`).
pub struct PinDir(PathBuf);

impl PinDir {
    /// A fresh name; nothing is created.
    #[allow(clippy::new_without_default)]
    pub fn new() -> PinDir {
        PinDir(PathBuf::from(format!(
            "/sys/fs/bpf/cors-filter-test-{}",
            unique_suffix()
        )))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = remove_pin_dir(&self.0);
    }
}

/// `cors-filter run` on the server interface of `pair` with `home`, run as
/// root with exactly `capabilities` until it exits (bounded): for runs
/// that must be refused. `skip_check` sets `CORS_FILTER_SKIP_PRIVILEGE_CHECK`,
/// so that the kernel's refusal is what is seen.
pub fn run_with_capabilities(
    pair: &NetnsPair,
    binary: &Path,
    home: &FilterHome,
    pin_dir: &Path,
    capabilities: &[String],
    skip_check: bool,
) -> Result<Output> {
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net={}", pair.server_ns_path()))
        .arg("setpriv")
        .args(root_with_capabilities(capabilities))
        .arg(binary)
        .args(run_arguments(pin_dir, &home.state_dir(), &home.config()))
        .args(["--metrics-listen", "127.0.0.1:9188"])
        .env("RUST_BACKTRACE", "1");
    if skip_check {
        command.env("CORS_FILTER_SKIP_PRIVILEGE_CHECK", "1");
    }
    run_bounded(&mut command, Duration::from_secs(30))
}

/// One file or directory under a tree.
#[derive(Debug)]
pub struct Entry {
    pub path: PathBuf,
    pub is_dir: bool,
    /// Permission bits (and setuid, setgid, sticky).
    pub mode: u32,
    pub uid: u32,
}

/// `root` and everything under it, symbolic links not followed.
pub fn walk(root: &Path) -> Result<Vec<Entry>> {
    let meta =
        fs::symlink_metadata(root).with_context(|| format!("cannot stat {}", root.display()))?;
    let mut entries = vec![Entry {
        path: root.to_owned(),
        is_dir: meta.is_dir(),
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
    }];
    if meta.is_dir() {
        let mut children: Vec<PathBuf> = fs::read_dir(root)
            .with_context(|| format!("cannot list {}", root.display()))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        children.sort();
        for child in children {
            entries.extend(walk(&child)?);
        }
    }
    Ok(entries)
}

/// A line saying what is wrong with each entry of `entries` that is not
/// root-only: owned by uid 0, directories 0700, anything else 0600.
pub fn not_root_only(entries: &[Entry]) -> Vec<String> {
    entries
        .iter()
        .filter_map(|e| {
            let want = if e.is_dir { 0o700 } else { 0o600 };
            (e.uid != 0 || e.mode != want).then(|| {
                format!(
                    "{}: uid {} mode {:04o}, want uid 0 mode {want:04o}",
                    e.path.display(),
                    e.uid,
                    e.mode
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_names_and_numbers() {
        let unit = ["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"].map(String::from);
        assert_eq!(capability_mask(&unit).unwrap(), 0xc0_0000_1000);
        assert_eq!(setpriv_set(&unit), "-all,+bpf,+net_admin,+perfmon");
        assert_eq!(
            capability_mask(&["CAP_SYS_ADMIN".to_owned()]).unwrap(),
            1 << 21
        );
        assert!(capability_mask(&["CAP_NOPE".to_owned()]).is_err());
    }
}
