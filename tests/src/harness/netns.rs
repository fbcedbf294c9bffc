//! Two network namespaces, "client" and "server", joined by a veth pair.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{harness::process::run_ok, unique_suffix};

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

/// Deletes namespaces named with one of `prefixes` (`<prefix><pid>-<n>`)
/// that test processes left when they died without cleaning up (killed,
/// or interrupted with Ctrl-C): those whose `<pid>` no longer runs.
pub fn delete_stale_namespaces(prefixes: &[&str]) {
    let Ok(out) = run_ok(Command::new("ip").args(["netns", "list"])) else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        if left_by_dead_run(name, prefixes) {
            let _ = run_ok(Command::new("ip").args(["netns", "del", name]));
        }
    }
}

/// [`delete_stale_namespaces`] of the pairs' `cfc-` and `cfs-`, once per
/// process.
fn sweep_stale_namespaces() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| delete_stale_namespaces(&["cfc-", "cfs-"]));
}

impl NetnsPair {
    /// Creates both namespaces, the veth pair between them, its addresses
    /// (IPv4 /30, IPv6 ULA without duplicate address detection) and `lo`.
    pub fn create() -> Result<NetnsPair> {
        NetnsPair::create_inner(None)
    }

    /// [`NetnsPair::create`] with `queues` transmit and receive queues on
    /// both ends of the veth pair (`numtxqueues`/`numrxqueues`), where
    /// `create` leaves veth its default of one in use.
    pub fn create_with_queues(queues: u16) -> Result<NetnsPair> {
        NetnsPair::create_inner(Some(queues))
    }

    fn create_inner(queues: Option<u16>) -> Result<NetnsPair> {
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
        let count = queues.map(|q| q.to_string());
        let queue_args: Vec<&str> = match &count {
            Some(q) => vec!["numtxqueues", q, "numrxqueues", q],
            None => Vec::new(),
        };
        let mut args = vec!["link", "add", CLIENT_IF];
        args.extend(&queue_args);
        args.extend(["netns", c, "type", "veth", "peer", "name", SERVER_IF]);
        args.extend(&queue_args);
        args.extend(["netns", s]);
        ip(&args).with_context(|| format!("cannot create the veth pair between {c} and {s}"))?;
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

    /// Adds a veth pair `a`-`b` with both ends in namespace `ns` (one of
    /// this pair's), up: more interfaces for a filter to attach to; they
    /// go with the namespace.
    pub fn add_inner_veth(&self, ns: &str, a: &str, b: &str) -> Result<()> {
        ip(&[
            "-n", ns, "link", "add", a, "type", "veth", "peer", "name", b,
        ])
        .with_context(|| format!("cannot create veth pair {a}-{b} in namespace {ns}"))?;
        for ifname in [a, b] {
            ip(&["-n", ns, "link", "set", ifname, "up"])
                .with_context(|| format!("cannot bring {ifname} up in namespace {ns}"))?;
        }
        Ok(())
    }

    /// Deletes interface `ifname` of namespace `ns` (and its veth peer).
    pub fn delete_link(&self, ns: &str, ifname: &str) -> Result<()> {
        ip(&["-n", ns, "link", "del", ifname])
            .with_context(|| format!("cannot delete {ifname} in namespace {ns}"))
    }

    /// `ip -n NS link show dev IF`, e.g. to see whether a program is attached.
    pub fn link_show(&self, ns: &str, ifname: &str) -> Result<String> {
        let out = run_ok(Command::new("ip").args(["-n", ns, "-d", "link", "show", "dev", ifname]))
            .with_context(|| format!("cannot show {ifname} in namespace {ns}"))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Turns segmentation and receive offloads (GSO, TSO, GRO) off on
    /// `ifname` in namespace `ns`, so that the stack there sends segments of
    /// at most one MSS, as a client behind a real link does, and checks with
    /// `ethtool -k` that they are off.
    pub fn offloads_off(&self, ns: &str, ifname: &str) -> Result<()> {
        offloads_off(ns, ifname)
    }

    /// Reorders about `percent` % of the packets leaving `ifname` in
    /// namespace `ns`: the root qdisc becomes HTB with a fast class (the
    /// default) and a slow one (`SLOW_RATE`), and a classic-BPF classifier
    /// sends each packet to the slow class with probability `percent` %
    /// (`ld rand`), where it waits while the packets sent after it overtake
    /// it. (`netem`'s `delay 5ms reorder 25%` would do the same, but kernels
    /// built without `CONFIG_NET_SCH_NETEM`, as this suite's VM's, have no
    /// netem.) The qdisc goes when the returned guard drops (or with the
    /// namespace).
    pub fn reorder_egress(&self, ns: &str, ifname: &str, percent: u32) -> Result<Reorder> {
        assert!((1..100).contains(&percent), "{percent} % is not a share");
        let tc = |args: &[&str]| {
            run_ok(Command::new("tc").args(["-n", ns]).args(args))
                .with_context(|| format!("cannot set up reordering on {ifname} in {ns}"))
        };
        let guard = Reorder {
            ns: ns.to_owned(),
            ifname: ifname.to_owned(),
        };
        tc(&[
            "qdisc", "add", "dev", ifname, "root", "handle", "1:", "htb", "default", "1",
        ])?;
        for (class, rate) in [("1:1", FAST_RATE), ("1:2", SLOW_RATE)] {
            tc(&[
                "class", "add", "dev", ifname, "parent", "1:", "classid", class, "htb", "rate",
                rate, "ceil", rate, "quantum", "1514",
            ])?;
        }
        // A packet goes to the slow class when a random 32-bit number is
        // above this threshold.
        let threshold = u64::from(u32::MAX) * u64::from(100 - percent) / 100;
        // Classic BPF: A = random (SKF_AD_OFF + SKF_AD_RANDOM); if A > K
        // return -1 (match: the filter's class), else return 0 (no match:
        // the default class).
        let bytecode = format!("4,32 0 0 4294963256,37 0 1 {threshold},6 0 0 4294967295,6 0 0 0");
        tc(&[
            "filter", "add", "dev", ifname, "parent", "1:", "bpf", "bytecode", &bytecode,
            "classid", "1:2",
        ])?;
        Ok(guard)
    }

    /// The `TcpExt` counter `name` (e.g. `TCPOFOQueue`: segments that
    /// arrived out of order and were queued) of namespace `ns`.
    pub fn tcp_ext_counter(&self, ns: &str, name: &str) -> Result<u64> {
        let out =
            run_ok(Command::new("ip").args(["netns", "exec", ns, "cat", "/proc/net/netstat"]))
                .with_context(|| format!("cannot read /proc/net/netstat in {ns}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut rows = text.lines().filter(|line| line.starts_with("TcpExt:"));
        let (Some(names), Some(values)) = (rows.next(), rows.next()) else {
            bail!("no TcpExt rows in /proc/net/netstat of {ns}");
        };
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.parse().ok())
            .with_context(|| format!("no TcpExt counter {name} in {ns}"))
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

/// The rate of [`NetnsPair::reorder_egress`]'s fast class: no limit on a
/// veth pair in practice.
const FAST_RATE: &str = "10gbit";
/// The rate of its slow class: a full-size segment waits 6 ms, more behind
/// others.
const SLOW_RATE: &str = "2mbit";

/// The reordering qdisc of [`NetnsPair::reorder_egress`], deleted on drop.
pub struct Reorder {
    ns: String,
    ifname: String,
}

impl Reorder {
    /// How many packets went through the slow class so far (each of them
    /// overtaken by whatever was sent while it waited).
    pub fn slowed_packets(&self) -> Result<u64> {
        let out = run_ok(Command::new("tc").args([
            "-n",
            &self.ns,
            "-s",
            "class",
            "show",
            "dev",
            &self.ifname,
            "classid",
            "1:2",
        ]))
        .with_context(|| format!("cannot read the classes of {} in {}", self.ifname, self.ns))?;
        let text = String::from_utf8_lossy(&out.stdout);
        // " Sent 1234 bytes 5 pkt (dropped 0, ...)"
        text.split_whitespace()
            .skip_while(|word| *word != "bytes")
            .nth(1)
            .and_then(|packets| packets.parse().ok())
            .with_context(|| format!("no packet count in {text:?}"))
    }
}

impl Drop for Reorder {
    fn drop(&mut self) {
        let _ = run_ok(Command::new("tc").args([
            "-n",
            &self.ns,
            "qdisc",
            "del",
            "dev",
            &self.ifname,
            "root",
        ]));
    }
}

/// Turns GSO, TSO and GRO off on `ifname` in namespace `ns` and checks
/// that they are.
pub fn offloads_off(ns: &str, ifname: &str) -> Result<()> {
    run_ok(Command::new("ip").args([
        "netns", "exec", ns, "ethtool", "-K", ifname, "gso", "off", "tso", "off", "gro", "off",
    ]))
    .with_context(|| {
        format!("cannot turn offloads off on {ifname} in namespace {ns} (is ethtool installed?)")
    })?;
    let out = run_ok(Command::new("ip").args(["netns", "exec", ns, "ethtool", "-k", ifname]))
        .with_context(|| format!("cannot read the offloads of {ifname} in namespace {ns}"))?;
    let features = String::from_utf8_lossy(&out.stdout);
    for feature in [
        "tcp-segmentation-offload",
        "generic-segmentation-offload",
        "generic-receive-offload",
    ] {
        let state = features
            .lines()
            .find_map(|line| line.trim().strip_prefix(&format!("{feature}: ")))
            .with_context(|| format!("ethtool -k {ifname} does not list {feature}"))?;
        if !state.starts_with("off") {
            bail!("{feature} is still {state:?} on {ifname} in namespace {ns}");
        }
    }
    Ok(())
}
