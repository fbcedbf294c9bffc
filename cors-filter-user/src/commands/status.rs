//! `cors-filter status [--json]`: is the filter on? Read from the pins
//! and the state directory alone, so it answers with no daemon running:
//! the interfaces the pinned links attach (hook, XDP mode, link and
//! program ids), the policy in force (generation, mode, action), the
//! config `run` was started with, whether the daemon is alive, how full
//! the connection maps are, and the local allowlist edits that make the
//! enforced allowlist differ from the config ([`crate::drift`]).

use std::{fmt::Write as _, path::Path};

use anyhow::{Context as _, Result};
use cors_filter_common::pinned::name;
use serde::Serialize;

use crate::{
    commands::reload::RunRecord,
    config::Config,
    drift::{DriftOrigins as Drift, LocalChanges},
    exit::{Kind, mark},
    kernel::links::{HookName, link_pins, link_state},
    kernel::pins::{pin_exists, pin_path},
    kernel::policy::PolicyMaps,
    metrics::TableUsage,
    state::{StateDir, probe_daemon},
};

/// The policy the program reads now; the same for every interface.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct PolicyStatus {
    /// Policies installed so far (`ACTIVE`): every start and reload
    /// installs one; an `allow` edit changes the one in force in place.
    pub generation: u32,
    pub mode: &'static str,
    pub action: &'static str,
}

/// One pinned link.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct InterfaceStatus {
    pub iface: String,
    /// `xdp` or `tc`.
    pub hook: &'static str,
    /// `native` or `skb` for XDP; `null` for TC.
    pub xdp_mode: Option<&'static str>,
    pub link_id: u32,
    pub program_id: u32,
    /// The link still attaches the program: its interface exists (a link
    /// whose interface is gone is defunct until `run` or `detach` removes it).
    pub attached: bool,
    /// The interface's index, in the network namespace `run` attached it in.
    pub ifindex: u32,
    #[serde(flatten)]
    pub policy: PolicyStatus,
}

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct DaemonStatus {
    pub alive: bool,
    /// The pid the last `run` recorded, alive or not.
    pub pid: Option<u32>,
}

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Connections {
    pub conns_in_use: u64,
    pub conns_capacity: u64,
    pub open_heads_in_use: u64,
    pub open_heads_capacity: u64,
}

#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub pin_dir: String,
    pub state_dir: String,
    pub interfaces: Vec<InterfaceStatus>,
    pub policy: PolicyStatus,
    /// The config file `run` was started with (`null`: no record).
    pub config: Option<String>,
    pub daemon: DaemonStatus,
    pub connections: Connections,
    /// `null` when it cannot be computed (no record of the config, or the
    /// config or the changes file does not load: `drift_error` says why).
    pub drift: Option<Drift>,
    pub drift_error: Option<String>,
}

pub fn status(pin_dir: &Path, state_dir: &Path, json: bool) -> Result<()> {
    let status = read(pin_dir, state_dir)?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&status).context("cannot serialise the status")?
        );
    } else {
        print!("{}", table(&status));
    }
    Ok(())
}

/// The status of the filter pinned in `pin_dir`; a [`Kind::NotRunning`]
/// error when none is.
pub fn read(pin_dir: &Path, state_dir: &Path) -> Result<Status> {
    // Pins a downgrade left may lack this layout's maps: said as such.
    crate::kernel::layout::refuse_newer(pin_dir)?;
    let active = pin_path(pin_dir, name::ACTIVE);
    if !pin_exists(&active)? {
        return Err(mark(
            anyhow::anyhow!(
                "no cors-filter is pinned: {} does not exist (is `cors-filter run` running with --pin-dir {}?)",
                active.display(),
                pin_dir.display()
            ),
            Kind::NotRunning,
        ));
    }
    let maps = PolicyMaps::open(pin_dir)?;
    let settings = maps.active_settings()?;
    let policy = PolicyStatus {
        generation: maps.installed()?,
        mode: settings.mode().name(),
        action: settings.action().name(),
    };
    let mut interfaces = Vec::new();
    for pin in link_pins(pin_dir)? {
        let link = link_state(&pin.path)?;
        interfaces.push(InterfaceStatus {
            iface: pin.iface,
            hook: if pin.hook.is_xdp() { "xdp" } else { "tc" },
            xdp_mode: match pin.hook {
                HookName::XdpNative => Some("native"),
                HookName::XdpSkb => Some("skb"),
                HookName::Tc => None,
            },
            link_id: link.id,
            program_id: link.prog_id,
            attached: link.is_on(pin.hook, link.ifindex),
            ifindex: link.ifindex,
            policy: policy.clone(),
        });
    }
    let tables = TableUsage::read(pin_dir)?;
    let StateView {
        config,
        daemon,
        drift,
    } = read_state(state_dir)?;
    let (drift, drift_error) = match drift {
        Some(Ok(drift)) => (Some(drift), None),
        Some(Err(e)) => (None, Some(format!("{e:#}"))),
        None => (
            None,
            Some("no record of the config `run` was started with".to_owned()),
        ),
    };
    Ok(Status {
        pin_dir: pin_dir.display().to_string(),
        state_dir: state_dir.display().to_string(),
        interfaces,
        policy,
        config,
        daemon,
        connections: Connections {
            conns_in_use: tables.conns_in_use,
            conns_capacity: tables.conns_capacity,
            open_heads_in_use: tables.open_heads_in_use,
            open_heads_capacity: tables.open_heads_capacity,
        },
        drift,
        drift_error,
    })
}

/// What the state directory says.
struct StateView {
    /// The config of the run record.
    config: Option<String>,
    daemon: DaemonStatus,
    /// `None`: no run record, hence no config to compare with.
    drift: Option<Result<Drift>>,
}

/// Reads the state directory; nothing is created where none exists.
fn read_state(state_dir: &Path) -> Result<StateView> {
    let mut view = StateView {
        config: None,
        daemon: DaemonStatus {
            alive: false,
            pid: None,
        },
        drift: None,
    };
    if !state_dir
        .try_exists()
        .with_context(|| format!("cannot look for {}", state_dir.display()))?
    {
        return Ok(view);
    }
    let state = StateDir::open(state_dir)?;
    let probe = probe_daemon(state_dir)?;
    view.daemon = DaemonStatus {
        alive: probe.alive,
        pid: probe.pid,
    };
    let record = match RunRecord::load(&state) {
        Ok(record) => record,
        Err(_) if !state.path(RunRecord::FILE).exists() => return Ok(view),
        Err(e) => {
            view.drift = Some(Err(e));
            return Ok(view);
        }
    };
    view.drift =
        Some(Config::load(&record.config).and_then(|config| {
            Ok(LocalChanges::recorded(&config, &state)?.origins(&config.allow))
        }));
    view.config = Some(record.config.display().to_string());
    Ok(view)
}

fn table(status: &Status) -> String {
    let mut out = String::new();
    let row = |out: &mut String, label: &str, value: String| {
        let _ = writeln!(out, "{label:<13}{value}");
    };
    row(
        &mut out,
        "pins:",
        format!("{} ({} link(s))", status.pin_dir, status.interfaces.len()),
    );
    row(
        &mut out,
        "daemon:",
        match (status.daemon.alive, status.daemon.pid) {
            (true, Some(pid)) => format!("running (pid {pid})"),
            (true, None) => "running".to_owned(),
            (false, pid) => format!(
                "not running{}; the pinned filter keeps enforcing, with no metrics, denial logs or reloads",
                pid.map(|p| format!(" (last pid {p})")).unwrap_or_default()
            ),
        },
    );
    let p = &status.policy;
    row(
        &mut out,
        "policy:",
        format!(
            "generation {}, {} mode, action {}",
            p.generation, p.mode, p.action
        ),
    );
    row(
        &mut out,
        "config:",
        status
            .config
            .clone()
            .unwrap_or_else(|| "(no record of `run`)".into()),
    );
    let c = &status.connections;
    row(
        &mut out,
        "connections:",
        format!(
            "{} of {} followed; {} of {} open request heads",
            c.conns_in_use, c.conns_capacity, c.open_heads_in_use, c.open_heads_capacity
        ),
    );
    row(
        &mut out,
        "drift:",
        match (&status.drift, &status.drift_error) {
            (Some(d), _) if d.is_empty() => "none: the allowlist is the config's".to_owned(),
            (Some(d), _) => {
                let mut parts = Vec::new();
                for (what, origins) in [
                    ("added", &d.added),
                    ("removed", &d.removed),
                    ("methods changed", &d.methods_changed),
                ] {
                    if !origins.is_empty() {
                        parts.push(format!("{what} {}", origins.join(", ")));
                    }
                }
                format!("{} local `allow` edit(s): {}", d.len(), parts.join("; "))
            }
            (None, e) => format!("unknown ({})", e.as_deref().unwrap_or("?")),
        },
    );
    let _ = writeln!(
        out,
        "\n{:<16} {:<5} {:<8} {:>8} {:>8}  ATTACHED",
        "INTERFACE", "HOOK", "XDP MODE", "LINK", "PROGRAM"
    );
    for i in &status.interfaces {
        let _ = writeln!(
            out,
            "{:<16} {:<5} {:<8} {:>8} {:>8}  {}",
            i.iface,
            i.hook,
            i.xdp_mode.unwrap_or("-"),
            i.link_id,
            i.program_id,
            if i.attached {
                "yes"
            } else {
                "no (interface gone)"
            }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(drift: Option<Drift>) -> Status {
        let policy = PolicyStatus {
            generation: 3,
            mode: "enforce",
            action: "drop",
        };
        Status {
            pin_dir: "/sys/fs/bpf/cors-filter".into(),
            state_dir: "/var/lib/cors-filter".into(),
            interfaces: vec![InterfaceStatus {
                iface: "eth0".into(),
                hook: "xdp",
                xdp_mode: Some("native"),
                link_id: 12,
                program_id: 345,
                attached: true,
                ifindex: 2,
                policy: policy.clone(),
            }],
            policy,
            config: Some("/etc/cors-filter.toml".into()),
            daemon: DaemonStatus {
                alive: false,
                pid: Some(4242),
            },
            connections: Connections {
                conns_in_use: 12,
                conns_capacity: 262144,
                open_heads_in_use: 0,
                open_heads_capacity: 16384,
            },
            drift_error: drift.is_none().then(|| "bad config".to_owned()),
            drift,
        }
    }

    #[test]
    fn the_table_says_what_json_says() {
        let drift = Drift {
            added: vec!["https://new.example".into()],
            ..Drift::default()
        };
        let text = table(&sample(Some(drift)));
        for needle in [
            "daemon:      not running (last pid 4242); the pinned filter keeps enforcing",
            "policy:      generation 3, enforce mode, action drop\n",
            "config:      /etc/cors-filter.toml\n",
            "connections: 12 of 262144 followed; 0 of 16384 open request heads\n",
            "drift:       1 local `allow` edit(s): added https://new.example\n",
            "eth0             xdp   native         12      345  yes\n",
        ] {
            assert!(text.contains(needle), "no {needle:?} in:\n{text}");
        }
        let unknown = table(&sample(None));
        assert!(
            unknown.contains("drift:       unknown (bad config)\n"),
            "{unknown}"
        );
    }

    #[test]
    fn json_puts_the_policy_on_every_interface() {
        let v = serde_json::to_value(sample(Some(Drift::default()))).unwrap();
        assert_eq!(v["interfaces"][0]["generation"], 3);
        assert_eq!(v["interfaces"][0]["mode"], "enforce");
        assert_eq!(v["interfaces"][0]["link_id"], 12);
        assert_eq!(v["daemon"]["pid"], 4242);
        assert_eq!(v["drift"]["added"], serde_json::json!([]));
        assert_eq!(v["drift_error"], serde_json::Value::Null);
    }
}
