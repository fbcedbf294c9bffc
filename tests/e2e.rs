//! End-to-end: a real XDP (or TC) program on a veth pair, a real HTTP server
//! and curl, each test on namespaces of its own. Needs root; fails, never
//! skips, without it.

use std::path::Path;

use anyhow::Result;
use cors_filter_common::pinned::name;
use cors_filter_tests::{
    TempDir,
    frames::replay::replay_files,
    harness::bed::Bed,
    harness::client::{self, Family},
    harness::filter::{FilterHome, counter, run_expecting_exit, run_with_pins},
    harness::netns::{CLIENT_IF, NetnsPair, SERVER_IF},
    harness::server::Seen,
    harness::tcpdump::Tcpdump,
};

const ALLOWED: &str = "https://app.example.com";
const DENIED: &str = "https://evil.example";

fn config(extra: &str) -> String {
    format!("ports = [8080]\nallow = [\"{ALLOWED}\", \"https://*.example.org\"]\n{extra}")
}

fn bed() -> Result<Bed> {
    Bed::new(Path::new(env!("CARGO_BIN_EXE_cors-test-server")))
}

/// The harness alone, without the filter: namespaces, veth, addresses, the
/// test server on IPv4 and IPv6, curl, the server's log, and cleanup.
#[test]
fn harness_smoke() -> Result<()> {
    let bed = bed()?;
    let (client_ns, server_ns) = (bed.pair.client.clone(), bed.pair.server.clone());
    assert_eq!(client::get(&bed.pair, Family::V4)?.status, Some(200));
    assert_eq!(client::get(&bed.pair, Family::V6)?.status, Some(200));
    // Nothing attached: the server answers every origin, which is why it
    // needs the filter.
    for origin in [ALLOWED, DENIED] {
        let reply = client::preflight(&bed.pair, Family::V4, origin)?;
        assert_eq!(reply.status, Some(204), "{reply:?}");
        assert_eq!(reply.header("access-control-allow-origin"), Some(origin));
    }
    let seen = |method: &str, path: &str, origin: Option<&str>| Seen {
        method: method.into(),
        path: path.into(),
        origin: origin.map(str::to_owned),
    };
    assert_eq!(
        bed.server.seen()?,
        [
            seen("GET", "/", None),
            seen("GET", "/", None),
            seen("OPTIONS", "/api/items", Some(ALLOWED)),
            seen("OPTIONS", "/api/items", Some(DENIED)),
        ]
    );
    assert!(
        !bed.pair
            .link_show(&bed.pair.server, SERVER_IF)?
            .contains("xdp")
    );
    drop(bed);
    assert!(!NetnsPair::exists(&client_ns)?, "{client_ns} left behind");
    assert!(!NetnsPair::exists(&server_ns)?, "{server_ns} left behind");
    Ok(())
}

#[test]
fn allowed_preflight_is_answered() -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(&config(""))?;
    let filter = bed.filter(&home, &[])?;
    let reply = client::preflight(&bed.pair, Family::V4, ALLOWED)?;
    assert_eq!(reply.status, Some(204), "{reply:?}");
    assert_eq!(reply.header("access-control-allow-origin"), Some(ALLOWED));
    assert!(bed.server.saw_origin(ALLOWED)?);
    let stats = filter.stats()?;
    assert_eq!(counter(&stats, "preflight_allow"), 1);
    assert_eq!(counter(&stats, "preflight_deny"), 0);
    assert_eq!(counter(&stats, "dropped"), 0);
    filter.stop()
}

#[test]
fn disallowed_preflight_never_reaches_the_server() -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(&config(""))?;
    let filter = bed.filter(&home, &[])?;
    let reply = client::preflight(&bed.pair, Family::V4, DENIED)?;
    assert_eq!(
        reply.status, None,
        "a disallowed preflight was answered: {reply:?}"
    );
    assert!(
        !bed.server.saw_origin(DENIED)?,
        "the server saw {:?}",
        bed.server.seen()?
    );
    let stats = filter.stats()?;
    // The preflight is denied once; TCP retransmits the dropped segment,
    // and every copy is dropped as part of the denied connection.
    assert_eq!(counter(&stats, "preflight_deny"), 1, "{stats}");
    assert_eq!(
        counter(&stats, "dropped"),
        1 + counter(&stats, "connection_denied"),
        "{stats}"
    );
    assert_eq!(counter(&stats, "preflight_allow"), 0, "{stats}");
    filter.stop()
}

#[test]
fn plain_get_without_origin_is_answered() -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(&config(""))?;
    let filter = bed.filter(&home, &[])?;
    let reply = client::get(&bed.pair, Family::V4)?;
    assert_eq!(reply.status, Some(200), "{reply:?}");
    let stats = filter.stats()?;
    assert_eq!(counter(&stats, "pass_not_preflight"), 1, "{stats}");
    assert_eq!(counter(&stats, "requests"), 1, "{stats}");
    assert_eq!(counter(&stats, "dropped"), 0, "{stats}");
    filter.stop()
}

#[test]
fn allow_add_and_remove_act_at_once() -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(&config(""))?;
    let filter = bed.filter(&home, &[])?;
    assert!(!client::preflight(&bed.pair, Family::V4, DENIED)?.answered());

    let out = filter.cli_ok(&["allow", "add", DENIED])?;
    assert!(out.contains(DENIED), "{out}");
    assert!(
        filter
            .cli_ok(&["allow", "list"])?
            .lines()
            .any(|l| l == DENIED)
    );
    let reply = client::preflight(&bed.pair, Family::V4, DENIED)?;
    assert_eq!(
        reply.status,
        Some(204),
        "not answered right after allow add: {reply:?}"
    );
    assert!(bed.server.saw_origin(DENIED)?);

    filter.cli_ok(&["allow", "remove", DENIED])?;
    assert!(
        !filter
            .cli_ok(&["allow", "list"])?
            .lines()
            .any(|l| l == DENIED)
    );
    let seen = bed.server.seen()?.len();
    let reply = client::preflight(&bed.pair, Family::V4, DENIED)?;
    assert_eq!(
        reply.status, None,
        "answered right after allow remove: {reply:?}"
    );
    assert_eq!(bed.server.seen()?.len(), seen);
    filter.stop()
}

#[test]
fn allow_rejects_invalid_origins_naming_the_bad_part() -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(&config(""))?;
    let filter = bed.filter(&home, &[])?;
    for (origin, part) in [
        ("https://evil.example/path", "bad host"),
        ("https://evil.example:0", "bad port"),
        ("evil.example", "scheme://host"),
        ("https://a.*.example", "wildcard"),
        ("http://2130706433", "write the host as 127.0.0.1"),
        ("https://*.github.io", "public suffix github.io"),
    ] {
        let out = filter.cli(&["allow", "add", origin])?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "allow add {origin} succeeded");
        assert!(
            stderr.contains(origin) && stderr.contains(part),
            "{origin}: {stderr}"
        );
    }
    assert_eq!(filter.stats()?["allowlist_entries"], 2);
    // Meant: allowed, with a warning.
    let out = filter.cli(&[
        "allow",
        "add",
        "https://*.github.io",
        "--force-public-suffix",
    ])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains("public suffix github.io"),
        "{stderr}"
    );
    let out = filter.cli(&["allow", "add", "null"])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains("sandboxed iframe"),
        "{stderr}"
    );
    assert_eq!(filter.stats()?["allowlist_entries"], 4);
    filter.stop()
}

#[test]
fn allow_changes_survive_a_restart() -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(&config(""))?;
    let filter = bed.filter(&home, &[])?;
    filter.cli_ok(&["allow", "add", DENIED])?;
    filter.cli_ok(&["allow", "remove", ALLOWED])?;
    filter.stop()?;

    let filter = bed.filter(&home, &[])?;
    assert_eq!(
        client::preflight(&bed.pair, Family::V4, DENIED)?.status,
        Some(204)
    );
    assert_eq!(
        client::preflight(&bed.pair, Family::V4, ALLOWED)?.status,
        None
    );
    let list = filter.cli_ok(&["allow", "list"])?;
    assert_eq!(
        list.lines().collect::<Vec<_>>(),
        ["https://*.example.org", DENIED]
    );
    filter.stop()
}

#[test]
fn metrics_and_stats_show_the_counts() -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(&config(""))?;
    let filter = bed.filter(&home, &[])?;
    for _ in 0..2 {
        assert!(client::preflight(&bed.pair, Family::V4, ALLOWED)?.answered());
    }
    assert!(!client::preflight(&bed.pair, Family::V4, DENIED)?.answered());
    assert!(client::get(&bed.pair, Family::V4)?.answered());

    let stats = filter.stats()?;
    let metrics = filter.metric_values()?;
    // The metrics request itself goes over the server namespace's loopback,
    // which the filter is not attached to, so both reads agree.
    let m = |series: &str| {
        *metrics
            .get(series)
            .unwrap_or_else(|| panic!("no series {series} in {metrics:?}"))
    };
    assert_eq!(m("cors_filter_preflights_total{verdict=\"allow\"}"), 2);
    assert_eq!(counter(&stats, "preflight_allow"), 2);
    let deny = m("cors_filter_preflights_total{verdict=\"deny\"}");
    assert!(deny >= 1);
    assert_eq!(counter(&stats, "preflight_deny"), deny);
    assert_eq!(m("cors_filter_requests_total"), counter(&stats, "requests"));
    assert_eq!(m("cors_filter_requests_total"), 2 + deny + 1);
    assert_eq!(m("cors_filter_packets_total"), counter(&stats, "packets"));
    assert!(m("cors_filter_packets_total") > m("cors_filter_requests_total"));
    assert_eq!(m("cors_filter_malformed_total"), 0);
    assert_eq!(m("cors_filter_incomplete_total"), 0);
    assert_eq!(m("cors_filter_allowlist_entries"), 2);
    assert_eq!(m("cors_filter_passed_total{reason=\"not_preflight\"}"), 1);
    filter.stop()
}

#[test]
fn monitor_mode_passes_but_counts_deny() -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(&config(""))?;
    let filter = bed.filter(&home, &["--mode", "monitor"])?;
    let reply = client::preflight(&bed.pair, Family::V4, DENIED)?;
    assert_eq!(reply.status, Some(204), "monitor mode dropped: {reply:?}");
    assert!(bed.server.saw_origin(DENIED)?);
    let stats = filter.stats()?;
    assert_eq!(counter(&stats, "preflight_deny"), 1, "{stats}");
    assert_eq!(counter(&stats, "dropped"), 0, "{stats}");
    filter.stop()
}

#[test]
fn ipv6_preflights_are_filtered_too() -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(&config(""))?;
    let filter = bed.filter(&home, &[])?;
    assert_eq!(
        client::preflight(&bed.pair, Family::V6, ALLOWED)?.status,
        Some(204)
    );
    assert_eq!(
        client::preflight(&bed.pair, Family::V6, DENIED)?.status,
        None
    );
    assert!(!bed.server.saw_origin(DENIED)?);
    assert_eq!(client::get(&bed.pair, Family::V6)?.status, Some(200));
    filter.stop()
}

/// The program tries wildcard prefixes only at the depths where the
/// allowlist has wildcards: an `allow add` of a wildcard at a new depth
/// (`*.deep.example.net`, three labels, where the config has only two)
/// must turn that depth on in the running filter, and its removal must
/// refuse again.
#[test]
fn allow_add_of_a_wildcard_at_a_new_depth_acts_at_once() -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(&config(""))?;
    let filter = bed.filter(&home, &[])?;
    let origin = "https://a.deep.example.net";
    assert!(!client::preflight(&bed.pair, Family::V4, origin)?.answered());
    filter.cli_ok(&["allow", "add", "https://*.deep.example.net"])?;
    let reply = client::preflight(&bed.pair, Family::V4, origin)?;
    assert_eq!(reply.status, Some(204), "after allow add: {reply:?}");
    // The entry itself holds the match: its domain is not allowed.
    let domain = "https://deep.example.net";
    assert!(!client::preflight(&bed.pair, Family::V4, domain)?.answered());
    filter.cli_ok(&["allow", "remove", "https://*.deep.example.net"])?;
    let reply = client::preflight(&bed.pair, Family::V4, origin)?;
    assert_eq!(reply.status, None, "after allow remove: {reply:?}");
    filter.stop()
}

#[test]
fn wildcard_entries_match_subdomains_on_label_boundaries() -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(&config(""))?;
    let filter = bed.filter(&home, &[])?;
    for (origin, allowed) in [
        ("https://a.example.org", true),
        ("https://a.b.example.org", true),
        ("https://example.org", false),
        ("https://evil-example.org", false),
        ("http://a.example.org", false),
    ] {
        let reply = client::preflight(&bed.pair, Family::V4, origin)?;
        assert_eq!(reply.answered(), allowed, "{origin}: {reply:?}");
        assert_eq!(bed.server.saw_origin(origin)?, allowed, "{origin}");
    }
    filter.stop()
}

#[test]
fn tc_attachment_filters_like_xdp() -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(&config(""))?;
    let filter = bed.filter(&home, &["--attach", "tc"])?;
    assert_eq!(
        client::preflight(&bed.pair, Family::V4, ALLOWED)?.status,
        Some(204)
    );
    assert_eq!(
        client::preflight(&bed.pair, Family::V4, DENIED)?.status,
        None
    );
    assert!(!bed.server.saw_origin(DENIED)?);
    assert!(filter.stats()?["dropped"].as_u64().unwrap() >= 1);
    filter.stop()
}

#[test]
fn bad_config_is_refused_and_nothing_is_attached() -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(&config(""))?;
    // Each case: the config, and what stderr must name (line and value).
    let cases: [(&str, &[&str]); 4] = [
        ("ports = [8080]\nalow = []\n", &["line 2", "alow"]),
        (
            "ports = [8080]\nallow = [\n  \"https://ok.example\",\n  \"https://bad.example/x\",\n]\n",
            &[":4:", "https://bad.example/x"],
        ),
        ("ports = [8080, 0]\n", &[":1:", "port 0"]),
        ("ports = [8080]\nmode = \"enforcing\"\n", &["enforcing"]),
    ];
    for (text, needles) in cases {
        let path = home.state_dir().with_file_name("bad.toml");
        std::fs::write(&path, text)?;
        let out = run_expecting_exit(&bed.pair, &home, &path, &[])?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted:\n{text}");
        assert!(
            stderr.contains(&*path.to_string_lossy()),
            "file not named: {stderr}"
        );
        for needle in needles {
            assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
        }
        assert!(
            !bed.pair
                .link_show(&bed.pair.server, SERVER_IF)?
                .contains("xdp")
        );
    }
    let missing = home.state_dir().with_file_name("missing.toml");
    let out = run_expecting_exit(&bed.pair, &home, &missing, &[])?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
    assert!(
        !bed.pair
            .link_show(&bed.pair.server, SERVER_IF)?
            .contains("xdp")
    );
    // And the disallowed preflight still reaches the (unprotected) server.
    assert_eq!(
        client::preflight(&bed.pair, Family::V4, DENIED)?.status,
        Some(204)
    );
    Ok(())
}

#[test]
fn a_second_filter_cannot_take_over_running_pins() -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(&config(""))?;
    let filter = bed.filter(&home, &[])?;
    // Another state directory, the same pins: refused, and the running
    // filter keeps its maps.
    let other = FilterHome::new(&config(""))?;
    let out = run_with_pins(
        &bed.pair,
        &other,
        &other.config(),
        filter.pin_dir(),
        &["--metrics-listen", "127.0.0.1:9187"],
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a second filter started on the same pins"
    );
    assert!(
        stderr.contains("another cors-filter")
            && stderr.contains(&*filter.pin_dir().to_string_lossy()),
        "{stderr}"
    );
    assert!(filter.pin_dir().join(name::ACTIVE).exists());
    assert_eq!(
        client::preflight(&bed.pair, Family::V4, DENIED)?.status,
        None
    );
    assert_eq!(filter.stats()?["allowlist_entries"], 2);
    filter.stop()
}

/// A real capture, taken by tcpdump on the client side (where the packets
/// the filter drops are still seen) of real curl traffic, replayed through
/// the program: it gives the verdicts the attached filter gave live.
#[test]
fn replay_of_a_real_capture_matches_the_live_filter() -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(&config(""))?;
    let filter = bed.filter(&home, &[])?;
    let dir = TempDir::new("capture")?;
    let capture = dir.path().join("client.pcap");
    let client_ns = format!("/run/netns/{}", bed.pair.client);
    let tcpdump = Tcpdump::start(&client_ns, CLIENT_IF, &capture)?;
    assert_eq!(
        client::preflight(&bed.pair, Family::V4, ALLOWED)?.status,
        Some(204)
    );
    assert!(!client::preflight(&bed.pair, Family::V4, DENIED)?.answered());
    assert_eq!(
        client::preflight(&bed.pair, Family::V6, "https://a.example.org")?.status,
        Some(204)
    );
    assert!(!client::preflight(&bed.pair, Family::V6, DENIED)?.answered());
    assert_eq!(client::get(&bed.pair, Family::V4)?.status, Some(200));
    tcpdump.stop()?;
    let live = filter.stats()?;

    let replayed = replay_files(&home.config(), &capture)?.lines()?;
    let count = |reason: &str| replayed.iter().filter(|r| r.reason == reason).count() as u64;
    for reason in [
        "preflight_allow",
        "preflight_deny",
        "malformed",
        "pass_not_preflight",
        "connection_denied",
    ] {
        assert_eq!(
            count(reason),
            counter(&live, reason),
            "{reason}: replay {replayed:?}, live {live}"
        );
    }
    assert_eq!(count("preflight_allow"), 2);
    // Each denied preflight is denied once, then retransmitted, and every
    // copy dropped with its connection.
    assert_eq!(count("preflight_deny"), 2, "{replayed:?}");
    assert!(count("connection_denied") >= 2, "{replayed:?}");
    for r in &replayed {
        let drop = matches!(r.reason.as_str(), "preflight_deny" | "connection_denied");
        assert_eq!(r.verdict == "drop", drop, "{r:?}");
    }
    filter.stop()
}
