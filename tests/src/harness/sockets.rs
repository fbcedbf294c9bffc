//! The TCP sockets of a test's namespace, as `ss` lists them: how a test
//! sees what each side's kernel holds of a connection.

use std::process::Command;

use anyhow::{Context, Result};

use crate::harness::process::run_ok;

/// One TCP socket: its state (`ESTAB`, `FIN-WAIT-1`, ...) and addresses
/// (`198.18.0.2:8080`, `[fd00:c0f::2]:8080`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Socket {
    pub state: String,
    pub local: String,
    pub peer: String,
}

fn port_of(address: &str) -> Option<u16> {
    address.rsplit_once(':')?.1.parse().ok()
}

/// The TCP sockets in namespace `ns` with local or peer port `port`, in
/// any state but LISTEN.
pub fn connections(ns: &str, port: u16) -> Result<Vec<Socket>> {
    let out = run_ok(Command::new("ip").args(["netns", "exec", ns, "ss", "-Htan"]))
        .with_context(|| format!("cannot list the TCP sockets of namespace {ns}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut sockets = Vec::new();
    for line in text.lines() {
        // State, Recv-Q, Send-Q, local address:port, peer address:port.
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [state, _, _, local, peer, ..] = fields[..] else {
            continue;
        };
        if state == "LISTEN" || (port_of(local) != Some(port) && port_of(peer) != Some(port)) {
            continue;
        }
        sockets.push(Socket {
            state: state.to_owned(),
            local: local.to_owned(),
            peer: peer.to_owned(),
        });
    }
    Ok(sockets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_of_v4_and_v6_addresses() {
        assert_eq!(port_of("198.18.0.2:8080"), Some(8080));
        assert_eq!(port_of("[fd00:c0f::2]:8080"), Some(8080));
        assert_eq!(port_of("*:*"), None);
    }
}
