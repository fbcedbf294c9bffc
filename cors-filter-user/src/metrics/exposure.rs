//! Where the metrics are served: loopback by default (`--metrics-listen`
//! defaults to 127.0.0.1:9186); any other address is the operator's
//! explicit choice and is said out loud, since the counters and the
//! allowlist size then reach whoever can reach that address.

use std::net::{IpAddr, SocketAddr};

/// Whether `addr` is reachable from this host only.
pub fn is_loopback(addr: SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V4(ip) => ip.is_loopback(),
        IpAddr::V6(ip) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|ip| ip.is_loopback())
        }
    }
}

/// The warning to log when the metrics listen on `addr`, if any.
pub fn exposure_warning(addr: SocketAddr) -> Option<String> {
    (!is_loopback(addr)).then(|| {
        format!(
            "metrics are exposed beyond the host: /metrics listens on {addr}, not on loopback; \
             make sure a firewall limits who can reach it"
        )
    })
}

/// Logs [`exposure_warning`], if there is one.
pub fn warn_if_exposed(addr: SocketAddr) {
    if let Some(warning) = exposure_warning(addr) {
        log::warn!("{warning}");
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    #[test]
    fn metrics_listen_on_loopback_by_default() {
        let cli = Cli::try_parse_from([
            "cors-filter",
            "run",
            "--iface",
            "eth0",
            "--config",
            "c.toml",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run: {:?}", cli.command);
        };
        assert_eq!(args.metrics_listen, "127.0.0.1:9186".parse().unwrap());
        assert_eq!(exposure_warning(args.metrics_listen), None);
    }

    #[test]
    fn anything_but_loopback_is_warned_about() {
        for (addr, loopback) in [
            ("127.0.0.1:9186", true),
            ("127.1.2.3:9186", true),
            ("[::1]:9186", true),
            ("[::ffff:127.0.0.1]:9186", true),
            ("0.0.0.0:9186", false),
            ("[::]:9186", false),
            ("192.0.2.10:9186", false),
            ("[2001:db8::1]:9186", false),
            ("[::ffff:192.0.2.10]:9186", false),
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(is_loopback(addr), loopback, "{addr}");
            let warning = exposure_warning(addr);
            assert_eq!(warning.is_none(), loopback, "{addr}");
            if let Some(w) = warning {
                assert!(
                    w.contains("exposed beyond the host") && w.contains(&addr.to_string()),
                    "{w}"
                );
            }
        }
    }
}
