//! Two network namespaces, "client" and "server", joined by a veth pair.

use std::process::Command;

use anyhow::{Context, Result};

use crate::{process::run_ok, unique_suffix};

/// Interface names inside the namespaces (each namespace has its own names).
pub const CLIENT_IF: &str = "veth-c";
pub const SERVER_IF: &str = "veth-s";
pub const CLIENT_V4: &str = "198.18.0.1";
pub const SERVER_V4: &str = "198.18.0.2";
pub const CLIENT_V6: &str = "fd00:c0f::1";
pub const SERVER_V6: &str = "fd00:c0f::2";

/// The pair; both namespaces (and so the veth pair) are deleted on drop.
pub struct NetnsPair {
    pub client: String,
    pub server: String,
}

fn ip(args: &[&str]) -> Result<()> {
    run_ok(Command::new("ip").args(args)).map(|_| ())
}

/// Whether no process `pid` exists any more.
pub fn pid_is_gone(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    pid > 0
        && unsafe { libc::kill(pid, 0) } != 0
        && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// Whether `name` is `<prefix><pid>-<n>` for one of `prefixes` and a `<pid>`
/// that no longer runs: something a killed test run left behind.
pub fn left_by_dead_run(name: &str, prefixes: &[&str]) -> bool {
    prefixes
        .iter()
        .find_map(|p| name.strip_prefix(p))
        .and_then(|rest| rest.split('-').next())
        .and_then(|pid| pid.parse().ok())
        .is_some_and(pid_is_gone)
}

/// Deletes namespaces left by test processes that died without cleaning up
/// (killed, or interrupted with Ctrl-C): `cfc-<pid>-<n>` and `cfs-<pid>-<n>`
/// whose `<pid>` no longer runs. Once per process.
fn sweep_stale_namespaces() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok(out) = run_ok(Command::new("ip").args(["netns", "list"])) else {
            return;
        };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some(name) = line.split_whitespace().next() else {
                continue;
            };
            if left_by_dead_run(name, &["cfc-", "cfs-"]) {
                let _ = run_ok(Command::new("ip").args(["netns", "del", name]));
            }
        }
    });
}

impl NetnsPair {
    /// Creates both namespaces, the veth pair between them, its addresses
    /// (IPv4 /30, IPv6 ULA without duplicate address detection) and `lo`.
    pub fn create() -> Result<NetnsPair> {
        sweep_stale_namespaces();
        let suffix = unique_suffix();
        let pair = NetnsPair {
            client: format!("cfc-{suffix}"),
            server: format!("cfs-{suffix}"),
        };
        // From here on, Drop cleans up whatever was made.
        ip(&["netns", "add", &pair.client])
            .with_context(|| format!("cannot create network namespace {}", pair.client))?;
        ip(&["netns", "add", &pair.server])
            .with_context(|| format!("cannot create network namespace {}", pair.server))?;
        let (c, s) = (pair.client.as_str(), pair.server.as_str());
        ip(&[
            "link", "add", CLIENT_IF, "netns", c, "type", "veth", "peer", "name", SERVER_IF,
            "netns", s,
        ])
        .with_context(|| format!("cannot create the veth pair between {c} and {s}"))?;
        for (ns, ifname, v4, v6) in [
            (c, CLIENT_IF, CLIENT_V4, CLIENT_V6),
            (s, SERVER_IF, SERVER_V4, SERVER_V6),
        ] {
            let at = || format!("cannot configure {ifname} in namespace {ns}");
            ip(&["-n", ns, "addr", "add", &format!("{v4}/30"), "dev", ifname]).with_context(at)?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                ifname,
                "nodad",
            ])
            .with_context(at)?;
            ip(&["-n", ns, "link", "set", ifname, "up"]).with_context(at)?;
            ip(&["-n", ns, "link", "set", "lo", "up"])
                .with_context(|| format!("cannot bring lo up in namespace {ns}"))?;
        }
        Ok(pair)
    }

    /// `ip -n NS link show dev IF`, e.g. to see whether a program is attached.
    pub fn link_show(&self, ns: &str, ifname: &str) -> Result<String> {
        let out = run_ok(Command::new("ip").args(["-n", ns, "-d", "link", "show", "dev", ifname]))
            .with_context(|| format!("cannot show {ifname} in namespace {ns}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Whether network namespace `name` exists.
    pub fn exists(name: &str) -> Result<bool> {
        let out = run_ok(Command::new("ip").args(["netns", "list"]))?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.split_whitespace().next() == Some(name)))
    }

    /// Path usable with `nsenter --net=`.
    pub fn server_ns_path(&self) -> String {
        format!("/run/netns/{}", self.server)
    }

    /// Path usable with `nsenter --net=`.
    pub fn client_ns_path(&self) -> String {
        format!("/run/netns/{}", self.client)
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in [&self.client, &self.server] {
            let _ = run_ok(Command::new("ip").args(["netns", "del", ns]));
        }
    }
}
