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

impl NetnsPair {
    pub fn create() -> Result<NetnsPair> {
        let suffix = unique_suffix();
        let pair = NetnsPair {
            client: format!("cfc-{suffix}"),
            server: format!("cfs-{suffix}"),
        };
        // From here on, Drop cleans up whatever was made.
        ip(&["netns", "add", &pair.client]).context("cannot create the client namespace")?;
        ip(&["netns", "add", &pair.server]).context("cannot create the server namespace")?;
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
            ip(&["-n", ns, "addr", "add", &format!("{v4}/30"), "dev", ifname])?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                ifname,
                "nodad",
            ])?;
            ip(&["-n", ns, "link", "set", ifname, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(pair)
    }

    /// `ip -n NS link show dev IF`, e.g. to see whether a program is attached.
    pub fn link_show(&self, ns: &str, ifname: &str) -> Result<String> {
        let out = run_ok(Command::new("ip").args(["-n", ns, "-d", "link", "show", "dev", ifname]))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Path usable with `nsenter --net=`.
    pub fn server_ns_path(&self) -> String {
        format!("/run/netns/{}", self.server)
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in [&self.client, &self.server] {
            let _ = run_ok(Command::new("ip").args(["netns", "del", ns]));
        }
    }
}
