//! Differential test of the program in the kernel against the reference
//! (httparse, the common crate's origin rules, the allowlist matched on
//! plain strings, methods compared as text): over 100,000 generated
//! requests, valid, adversarial and malformed, preflights and requests with
//! unsafe methods, each wrapped in a random Ethernet / VLAN / IPv4 or IPv6 /
//! TCP frame to a port that protects unsafe methods (dropping those the
//! window does not decide, or passing them) or to one that does not, run
//! through the real program with `cors-filter replay`.
//! Needs root (it loads BPF); fails, never skips, without it.

use std::collections::BTreeMap;

use anyhow::Result;
use cors_filter_tests::{
    generate::{self, ALLOWLIST, Rng},
    packet::{ETH_P_8021AD, ETH_P_8021Q, Ipv6Ext, Packet},
    reference::{self, Allowlist, Expected},
    replay::replay,
    require_root,
};

/// Requests generated; those httparse rejects (no expectation) are not
/// counted as compared.
const REQUESTS: usize = 130_000;
const MIN_COMPARED: usize = 100_000;
const SEED: u64 = 0x5eed_0c0f_f1e5_0003;

/// The seed and the number of requests: the suite's, or a longer run's from
/// `CORS_FILTER_DIFFERENTIAL=SEED:REQUESTS` (e.g. `7:1000000`). A value that
/// does not parse fails the test rather than falling back.
fn run_size() -> (u64, usize) {
    let Ok(text) = std::env::var("CORS_FILTER_DIFFERENTIAL") else {
        return (SEED, REQUESTS);
    };
    let parsed = text
        .split_once(':')
        .and_then(|(seed, n)| Some((seed.parse().ok()?, n.parse().ok()?)));
    match parsed {
        Some((seed, n)) if n >= REQUESTS => (seed, n),
        _ => panic!(
            "CORS_FILTER_DIFFERENTIAL={text:?}: expected SEED:REQUESTS, with at least {REQUESTS} requests"
        ),
    }
}

/// A port that protects unsafe methods and drops those the window does
/// not decide (the config's defaults), one that passes them, and one that
/// does not protect them.
const PROTECTING_PORT: u16 = 8080;
const PASSING_PORT: u16 = 8082;
const OPEN_PORT: u16 = 8081;

/// Incomplete preflights pass (`on_incomplete`, the default), so that the
/// verdicts tell which setting an incomplete request is handled by.
fn config() -> String {
    let allow: Vec<String> = ALLOWLIST.iter().map(|e| e.config_item()).collect();
    format!(
        "ports = [{PROTECTING_PORT}, {OPEN_PORT}, {PASSING_PORT}]\n\
         protect_unsafe_methods = true\nallow = [{}]\nmode = \"enforce\"\n\
         on_oversized_head = \"pass\"\n\
         [port.{OPEN_PORT}]\nprotect_unsafe_methods = false\n\
         [port.{PASSING_PORT}]\nunsafe_on_incomplete = \"pass\"\n",
        allow.join(", ")
    )
}

/// `payload` in a random frame to `port`: VLAN tags, IP version, IP and
/// TCP options, IPv6 extension headers, Ethernet padding. None of it may
/// change the verdict.
fn frame(rng: &mut Rng, payload: &[u8], port: u16) -> Vec<u8> {
    let mut packet = if rng.one_in(3) {
        let mut p = Packet::ipv6(payload);
        for _ in 0..rng.below(3) {
            p = p.ext(match rng.below(5) {
                0 => Ipv6Ext::HopByHop {
                    len: 8 * (1 + rng.below(4)),
                },
                1 => Ipv6Ext::DestOpts {
                    len: 8 * (1 + rng.below(4)),
                },
                2 => Ipv6Ext::Auth {
                    len: 8 * (2 + rng.below(3)),
                },
                // An atomic fragment: the whole datagram, to be inspected.
                3 => Ipv6Ext::Fragment {
                    offset: 0,
                    more: false,
                },
                _ => Ipv6Ext::Routing {
                    segments: 1 + rng.below(2) as u8,
                },
            });
        }
        p
    } else {
        let mut p = Packet::ipv4(payload);
        if rng.one_in(4) {
            // Record-route-like option bytes: the parser must skip them by IHL.
            p = p.ipv4_options(&[0x01, 0x07, 0x07, 0x04, 0, 0, 0, 0][..1 + rng.below(8)]);
        }
        p
    };
    match rng.below(6) {
        0 => packet = packet.vlan(ETH_P_8021Q, 100),
        1 => packet = packet.vlan(ETH_P_8021AD, 10).vlan(ETH_P_8021Q, 20),
        _ => {}
    }
    if rng.one_in(3) {
        // MSS, SACK-permitted, timestamps.
        packet = packet.tcp_options(&[2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0]);
    }
    if rng.one_in(8) {
        packet = packet.trailer(b"OPTIONS / HTTP/1.1\r\n");
    }
    packet.dst_port(port).build()
}

#[test]
fn kernel_verdicts_agree_with_the_reference() -> Result<()> {
    require_root()?;
    let allowlist = Allowlist::new(ALLOWLIST);
    let (seed, requests) = run_size();
    println!("seed {seed}, {requests} requests");
    let mut rng = Rng::new(seed);
    let mut payloads = Vec::with_capacity(requests);
    let mut frames = Vec::with_capacity(requests);
    for _ in 0..requests {
        let payload = generate::request(&mut rng);
        let port = match rng.below(4) {
            0 => OPEN_PORT,
            1 => PASSING_PORT,
            _ => PROTECTING_PORT,
        };
        frames.push(frame(&mut rng, &payload, port));
        payloads.push((payload, port));
    }
    let replayed = replay(&config(), &frames)?;

    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    let mut expectations: BTreeMap<(Expected, u16), usize> = BTreeMap::new();
    let mut disagreements = Vec::new();
    let mut compared = 0;
    for ((payload, port), got) in payloads.iter().zip(&replayed) {
        let expected = reference::expected(payload, *port != OPEN_PORT, &allowlist);
        *expectations.entry((expected, *port)).or_default() += 1;
        *tally
            .entry(format!("port {port}: {expected:?} / {}", got.reason))
            .or_default() += 1;
        if expected == Expected::Invalid {
            continue;
        }
        compared += 1;
        // Enforce mode; incomplete preflights pass, unsafe requests the
        // window does not decide are dropped unless the port passes them.
        let verdict = if expected.is_denial()
            || (expected == Expected::UnsafeIncomplete && *port == PROTECTING_PORT)
        {
            "drop"
        } else {
            "pass"
        };
        if !expected.accepts(&got.reason) || got.verdict != verdict {
            disagreements.push(format!(
                "frame {} to port {port}: expected {expected:?} ({verdict}), the program said {} ({}) for\n  {}",
                got.index,
                got.verdict,
                got.reason,
                payload.escape_ascii()
            ));
        }
    }
    println!(
        "{compared} requests compared with the reference, {} disagreements",
        disagreements.len()
    );
    for (class, count) in &tally {
        println!("  {class}: {count}");
    }
    assert!(
        disagreements.is_empty(),
        "{} of {compared} requests disagree; the first ones:\n{}",
        disagreements.len(),
        disagreements[..disagreements.len().min(20)].join("\n")
    );
    assert!(
        compared >= MIN_COMPARED * requests / REQUESTS,
        "only {compared} requests compared"
    );
    // Every outcome must be well represented, on each port where it can
    // happen, or the generator has drifted (about half of what the suite's
    // seed gives).
    let mut required = vec![
        ((Expected::Allowed, PROTECTING_PORT), 2_500),
        ((Expected::Denied, PROTECTING_PORT), 2_000),
        ((Expected::Malformed, PROTECTING_PORT), 4_000),
        ((Expected::MethodDenied, PROTECTING_PORT), 1_000),
        ((Expected::Incomplete, PROTECTING_PORT), 1_000),
        ((Expected::UnsafeIncomplete, PROTECTING_PORT), 2_000),
        ((Expected::NotJudged, PROTECTING_PORT), 4_000),
        ((Expected::UnsafeAllowed, PROTECTING_PORT), 1_500),
        ((Expected::UnsafeDenied, PROTECTING_PORT), 1_000),
        ((Expected::UnsafeMalformed, PROTECTING_PORT), 3_000),
        ((Expected::UnsafeMethodDenied, PROTECTING_PORT), 500),
        ((Expected::CrossSiteNoOrigin, PROTECTING_PORT), 1_000),
        ((Expected::NoOrigin, PROTECTING_PORT), 1_000),
        ((Expected::UnsafeIncomplete, PASSING_PORT), 1_000),
        ((Expected::UnsafeDenied, PASSING_PORT), 500),
    ];
    for expected in [
        Expected::Allowed,
        Expected::Denied,
        Expected::Malformed,
        Expected::MethodDenied,
        Expected::Incomplete,
        Expected::NotJudged,
    ] {
        required.push(((expected, OPEN_PORT), 500));
    }
    for ((expected, port), at_least) in required {
        let n = expectations.get(&(expected, port)).copied().unwrap_or(0);
        assert!(
            n >= at_least,
            "only {n} requests expected {expected:?} on port {port}"
        );
    }
    Ok(())
}
