//! What the kernel says of an interface in a namespace: its MAC address
//! and its statistics counters (read from the namespace's own /sys).

use std::{collections::BTreeMap, process::Command};

use anyhow::{Context, Result};
use cors_filter_tests::harness::process::run_ok;

/// A statistics counter of `ifname` in namespace `ns`, e.g. `tx_dropped`.
pub fn counter(ns: &str, ifname: &str, counter: &str) -> Result<u64> {
    let path = format!("/sys/class/net/{ifname}/statistics/{counter}");
    let out = run_ok(Command::new("ip").args(["netns", "exec", ns, "cat", &path]))
        .with_context(|| format!("cannot read {path} in namespace {ns}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .with_context(|| format!("{path} in namespace {ns} holds {text:?}"))
}

/// The MAC address of `ifname` in namespace `ns`.
pub fn mac(ns: &str, ifname: &str) -> Result<[u8; 6]> {
    let path = format!("/sys/class/net/{ifname}/address");
    let out = run_ok(Command::new("ip").args(["netns", "exec", ns, "cat", &path]))
        .with_context(|| format!("cannot read {path} in namespace {ns}"))?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("{path} in namespace {ns} holds {text:?}"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("{path} in namespace {ns} holds {text:?}, not 6 bytes"))
}

/// The driver's statistics of `ifname` in namespace `ns` (`ethtool -S`),
/// by name: for veth, per queue, e.g. `rx_queue_0_xdp_packets`.
pub fn driver_stats(ns: &str, ifname: &str) -> Result<BTreeMap<String, u64>> {
    let out = run_ok(Command::new("ip").args(["netns", "exec", ns, "ethtool", "-S", ifname]))
        .with_context(|| format!("cannot read the driver statistics of {ifname} in {ns}"))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            Some((name.trim().to_owned(), value.trim().parse().ok()?))
        })
        .collect())
}
