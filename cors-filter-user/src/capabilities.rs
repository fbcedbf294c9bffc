//! Who may run which subcommand, checked before anything is touched, and
//! permission errors from the kernel or the filesystem explained.
//!
//! What each subcommand needs was found by running it with capabilities
//! taken away, on Linux 6.18 (see `tests/security.rs`):
//! - loading the program (`run`, `replay`): `CAP_BPF` to create maps and
//!   load programs, `CAP_NET_ADMIN` for an XDP or TC program, and
//!   `CAP_PERFMON`, without which the verifier refuses the packet pointer
//!   arithmetic the parser does ("prohibited for !root"). `CAP_SYS_ADMIN`
//!   stands for all three, as it does in the kernel (`bpf_capable`,
//!   `perfmon_capable`, and the prog-load check for networking programs).
//! - the pins and the state (`run`, `reload`, `detach`, `allow`, `stats`):
//!   they are root's and
//!   root-only (0700 directories, 0600 files), so the effective uid must be 0.
//!   Opening a pinned map and reading or writing it needs no capability
//!   since Linux 6.5, only access to the pin.
//!
//! The check reads the effective capabilities rather than assuming that uid
//! 0 has them all: the systemd unit runs as root with a reduced set.

use std::{fmt, io, path::PathBuf};

use anyhow::{Context, Result, bail};

use crate::cli::{AllowAction, Cli, Command};

/// Set to `1` to skip the check before a subcommand runs, so that the
/// kernel's or the filesystem's own refusal is seen (the tests use it to
/// show that each capability is really needed). It grants nothing.
pub const SKIP_CHECK_ENV: &str = "CORS_FILTER_SKIP_PRIVILEGE_CHECK";

/// A capability, by its number in `linux/capability.h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Capability {
    NetAdmin = 12,
    SysAdmin = 21,
    Perfmon = 38,
    Bpf = 39,
}

impl Capability {
    pub fn name(self) -> &'static str {
        match self {
            Capability::NetAdmin => "CAP_NET_ADMIN",
            Capability::SysAdmin => "CAP_SYS_ADMIN",
            Capability::Perfmon => "CAP_PERFMON",
            Capability::Bpf => "CAP_BPF",
        }
    }

    fn bit(self) -> u64 {
        1 << self as u32
    }
}

/// The capabilities that loading the program needs.
pub const LOAD_CAPABILITIES: [Capability; 3] =
    [Capability::Bpf, Capability::NetAdmin, Capability::Perfmon];

/// What one subcommand needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// As the user typed it, e.g. `allow add`.
    pub subcommand: &'static str,
    pub capabilities: &'static [Capability],
    /// Root-only directories it opens; non-empty means uid 0 is needed.
    pub root_paths: Vec<PathBuf>,
}

/// This process's effective uid and capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Privileges {
    pub euid: u32,
    /// The `CapEff` mask of `/proc/self/status`.
    pub effective: u64,
}

const STATUS: &str = "/proc/self/status";

impl Privileges {
    pub fn current() -> Result<Privileges> {
        let status = std::fs::read_to_string(STATUS)
            .with_context(|| format!("cannot read {STATUS} to check capabilities"))?;
        Ok(Privileges {
            // SAFETY: geteuid has no preconditions and cannot fail.
            euid: unsafe { libc::geteuid() },
            effective: parse_cap_eff(&status)
                .with_context(|| format!("cannot read the CapEff line of {STATUS}"))?,
        })
    }

    pub fn has(&self, capability: Capability) -> bool {
        // CAP_SYS_ADMIN passes every check the kernel makes for the
        // capabilities this program asks for (see the module's comment).
        self.effective & (capability.bit() | Capability::SysAdmin.bit()) != 0
    }
}

/// The `CapEff:` hex mask of a `/proc/PID/status` text.
pub fn parse_cap_eff(status: &str) -> Result<u64> {
    let Some(hex) = status.lines().find_map(|l| l.strip_prefix("CapEff:")) else {
        bail!("no CapEff line");
    };
    u64::from_str_radix(hex.trim(), 16).with_context(|| format!("CapEff {:?} is not hex", hex))
}

/// What `cli`'s subcommand needs. The match has no catch-all on purpose:
/// a new subcommand must say what it needs before it compiles.
pub fn requirement(cli: &Cli) -> Requirement {
    let (pins, state) = (cli.pin_dir.clone(), cli.state_dir.clone());
    let (subcommand, capabilities, root_paths): (_, &'static [Capability], _) = match &cli.command {
        Command::Run(_) => ("run", &LOAD_CAPABILITIES, vec![pins, state]),
        Command::Replay { .. } => ("replay", &LOAD_CAPABILITIES, vec![]),
        // The per-origin denial counts are in the state directory.
        Command::Stats { .. } => ("stats", &[], vec![pins, state]),
        // Reads the pins and the state; no capability since Linux 6.5.
        Command::Status { .. } => ("status", &[], vec![pins, state]),
        // The config file alone: no kernel, no pins, no state.
        Command::Check { .. } => ("check", &[], vec![]),
        // Pinned maps and links need only access to their pins (Linux 6.5+);
        // the membarrier of a reload and BPF_LINK_DETACH need no capability.
        Command::Reload => ("reload", &[], vec![pins, state]),
        Command::Detach { .. } => ("detach", &[], vec![pins]),
        Command::Allow { action } => match action {
            AllowAction::Add { .. } => ("allow add", &[], vec![pins, state]),
            AllowAction::Remove { .. } => ("allow remove", &[], vec![pins, state]),
            // The sources are read from the config and the state directory.
            AllowAction::List { source: true, .. } => ("allow list", &[], vec![pins, state]),
            AllowAction::List { source: false, .. } => ("allow list", &[], vec![pins]),
            AllowAction::Reset => ("allow reset", &[], vec![pins, state]),
        },
    };
    Requirement {
        subcommand,
        capabilities,
        root_paths,
    }
}

/// Why `privileges` fall short of `requirement`, if they do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    /// The uid, when uid 0 is needed and this is not it.
    pub not_root: Option<u32>,
    pub missing: Vec<Capability>,
}

impl Shortfall {
    pub fn of(requirement: &Requirement, privileges: &Privileges) -> Option<Shortfall> {
        let not_root =
            (!requirement.root_paths.is_empty() && privileges.euid != 0).then_some(privileges.euid);
        let missing: Vec<Capability> = requirement
            .capabilities
            .iter()
            .copied()
            .filter(|c| !privileges.has(*c))
            .collect();
        (not_root.is_some() || !missing.is_empty()).then_some(Shortfall { not_root, missing })
    }
}

impl fmt::Display for Shortfall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(uid) = self.not_root {
            parts.push(format!("runs as uid {uid}"));
        }
        if !self.missing.is_empty() {
            let names: Vec<&str> = self.missing.iter().map(|c| c.name()).collect();
            parts.push(format!("lacks {}", and_list(&names)));
        }
        write!(f, "this process {}", parts.join(" and "))
    }
}

/// `a`, `a and b`, `a, b and c`.
fn and_list<S: AsRef<str>>(items: &[S]) -> String {
    match items {
        [] => String::new(),
        [one] => one.as_ref().to_owned(),
        [init @ .., last] => {
            let init: Vec<&str> = init.iter().map(AsRef::as_ref).collect();
            format!("{} and {}", init.join(", "), last.as_ref())
        }
    }
}

impl Requirement {
    /// `CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON, and access to /sys/fs/bpf/cors-filter`.
    fn needs(&self) -> String {
        let caps: Vec<&str> = self.capabilities.iter().map(|c| c.name()).collect();
        let paths: Vec<String> = self
            .root_paths
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        match (caps.is_empty(), paths.is_empty()) {
            (false, true) => format!("{}, to load the program into the kernel", and_list(&caps)),
            (true, false) => format!("access to {}, which only root may open", and_list(&paths)),
            (false, false) => format!("{}, and access to {}", and_list(&caps), and_list(&paths)),
            (true, true) => "nothing".to_owned(),
        }
    }

    /// The one line a refused subcommand prints.
    pub fn refusal(&self, shortfall: &Shortfall) -> String {
        format!(
            "cors-filter {} needs root ({}): run it as root; {shortfall}",
            self.subcommand,
            self.needs()
        )
    }
}

/// Fails, with the one line to print, unless this process may run
/// `requirement`'s subcommand (or [`SKIP_CHECK_ENV`] is `1`).
pub fn check(requirement: &Requirement) -> Result<()> {
    if std::env::var_os(SKIP_CHECK_ENV).is_some_and(|v| v == "1") {
        log::warn!("{SKIP_CHECK_ENV}=1: not checking privileges before the kernel does");
        return Ok(());
    }
    let privileges = Privileges::current()?;
    match Shortfall::of(requirement, &privileges) {
        None => Ok(()),
        Some(shortfall) => Err(crate::exit::mark(
            anyhow::anyhow!("{}", requirement.refusal(&shortfall)),
            crate::exit::Kind::Privilege,
        )),
    }
}

/// For an error that is, somewhere in its chain, `EPERM` or `EACCES` from
/// the kernel or the filesystem, in a process that falls short of
/// `requirement` (the check was skipped): the line saying what is missing.
/// Nothing when nothing is missing: the verifier also answers `EACCES` to
/// a program it refuses, and the error says so itself.
pub fn explain(error: &anyhow::Error, requirement: &Requirement) -> Option<String> {
    let denied = error.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
            .is_some_and(|code| code == libc::EPERM || code == libc::EACCES)
    });
    if !denied {
        return None;
    }
    let shortfall = Shortfall::of(requirement, &Privileges::current().ok()?)?;
    Some(format!(
        "permission denied: {}",
        requirement.refusal(&shortfall)
    ))
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from([&["cors-filter"], args].concat()).unwrap()
    }

    const ROOT_ALL: Privileges = Privileges {
        euid: 0,
        effective: 0x1ff_ffff_ffff,
    };

    #[test]
    fn reads_cap_eff() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000000c000001000\nCapBnd:\t1\n";
        assert_eq!(parse_cap_eff(status).unwrap(), 0xc0_0000_1000);
        assert!(parse_cap_eff("CapEff:\tzz\n").is_err());
        assert!(parse_cap_eff("CapPrm:\t0\n").is_err());
    }

    #[test]
    fn every_subcommand_that_touches_state_or_the_kernel_needs_something() {
        for args in [
            &["run", "--iface", "eth0", "--config", "c.toml"][..],
            &["replay", "--config", "c.toml", "x.pcap"],
            &["stats"],
            &["stats", "--json"],
            &["status"],
            &["status", "--json"],
            &["allow", "add", "https://a.example"],
            &["allow", "remove", "https://a.example"],
            &["allow", "list"],
        ] {
            let r = requirement(&cli(args));
            let nobody = Privileges {
                euid: 65534,
                effective: 0,
            };
            let shortfall =
                Shortfall::of(&r, &nobody).unwrap_or_else(|| panic!("{args:?} allowed for nobody"));
            assert!(r.refusal(&shortfall).contains("run it as root"));
            assert_eq!(Shortfall::of(&r, &ROOT_ALL), None, "{args:?}");
        }
    }

    #[test]
    fn check_needs_nothing() {
        let r = requirement(&cli(&["check", "--config", "c.toml", "--json"]));
        let nobody = Privileges {
            euid: 65534,
            effective: 0,
        };
        assert_eq!(Shortfall::of(&r, &nobody), None);
    }

    #[test]
    fn the_units_capability_set_is_enough_for_root() {
        let unit = Privileges {
            euid: 0,
            effective: LOAD_CAPABILITIES.iter().fold(0, |m, c| m | c.bit()),
        };
        let r = requirement(&cli(&["run", "--iface", "eth0", "--config", "c.toml"]));
        assert_eq!(Shortfall::of(&r, &unit), None);
        for dropped in LOAD_CAPABILITIES {
            let less = Privileges {
                effective: unit.effective & !dropped.bit(),
                ..unit
            };
            let shortfall = Shortfall::of(&r, &less).unwrap();
            assert_eq!(shortfall.missing, [dropped]);
            assert!(
                r.refusal(&shortfall)
                    .ends_with(&format!("this process lacks {}", dropped.name()))
            );
        }
        // Root without any capability still reads the pins it owns.
        let bare_root = Privileges {
            euid: 0,
            effective: 0,
        };
        assert_eq!(
            Shortfall::of(&requirement(&cli(&["stats"])), &bare_root),
            None
        );
        let sys_admin = Privileges {
            euid: 0,
            effective: Capability::SysAdmin.bit(),
        };
        assert_eq!(Shortfall::of(&r, &sys_admin), None);
    }

    #[test]
    fn the_refusal_is_one_line_naming_what_is_needed() {
        // What uid 1000 without capabilities is told for `args`.
        let refusal = |args: &[&str]| {
            let r = requirement(&cli(args));
            let user = Privileges {
                euid: 1000,
                effective: 0,
            };
            r.refusal(&Shortfall::of(&r, &user).unwrap())
        };
        let line = refusal(&["--pin-dir", "/sys/fs/bpf/x", "stats"]);
        assert_eq!(
            line,
            "cors-filter stats needs root (access to /sys/fs/bpf/x and /var/lib/cors-filter, \
             which only root may open): \
             run it as root; this process runs as uid 1000"
        );
        let line = refusal(&["run", "--iface", "eth0", "--config", "c.toml"]);
        assert_eq!(
            line,
            "cors-filter run needs root (CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON, and access to \
             /sys/fs/bpf/cors-filter and /var/lib/cors-filter): run it as root; this process \
             runs as uid 1000 and lacks CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON"
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn only_permission_errors_are_explained() {
        // What the test process lacks for `replay`, if anything, decides.
        let r = requirement(&cli(&["replay", "--config", "c.toml", "x.pcap"]));
        let short = Shortfall::of(&r, &Privileges::current().unwrap());
        let other = anyhow::Error::from(io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(explain(&other, &r), None);
        for code in [libc::EACCES, libc::EPERM] {
            let denied = anyhow::Error::from(io::Error::from_raw_os_error(code))
                .context("cannot load the program");
            assert_eq!(
                explain(&denied, &r),
                short
                    .as_ref()
                    .map(|s| format!("permission denied: {}", r.refusal(s)))
            );
        }
    }
}
