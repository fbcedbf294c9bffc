//! Production operation, end to end: the filter outlives its daemon (kill -9,
//! SIGTERM), a restart adopts it, `detach` removes it, and reloads swap the
//! policy atomically while traffic flows. XDP and TC alike. Needs root;
//! fails, never skips, without it.

use std::{
    path::{Path, PathBuf},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use cors_filter_common::pinned::name;
use cors_filter_tests::{
    harness::bed::Bed,
    harness::client::{self, Family},
    harness::filter::{FilterHome, RunningFilter, counter, remove_pin_dir, run_with_pins},
    harness::netns::SERVER_IF,
    harness::preflight_loop::{PreflightLoop, Tally},
};

const ALLOWED: &str = "https://app.example.com";
const DENIED: &str = "https://evil.example";

fn bed() -> Result<Bed> {
    Bed::new(Path::new(env!("CARGO_BIN_EXE_cors-test-server")))
}

fn config(extra: &str) -> String {
    format!("ports = [8080]\nallow = [\"{ALLOWED}\", \"https://*.example.org\"]\n{extra}")
}

fn tally<'a>(
    tallies: &'a std::collections::BTreeMap<String, Tally>,
    origin: &str,
) -> Result<&'a Tally> {
    tallies
        .get(origin)
        .with_context(|| format!("the loop sent nothing for {origin}: {tallies:?}"))
}

/// Every allowed preflight answered, every denied one left without an
/// answer (dropped, not reset), and at least `min` of each sent.
fn assert_enforced(tallies: &std::collections::BTreeMap<String, Tally>, min: u64) -> Result<()> {
    let (allowed, denied) = (tally(tallies, ALLOWED)?, tally(tallies, DENIED)?);
    if allowed.sent < min || denied.sent < min {
        bail!("too few preflights sent to tell anything: {tallies:?}");
    }
    if allowed.answered != allowed.sent {
        bail!("allowed preflights went unanswered: {allowed:?}");
    }
    if denied.unanswered != denied.sent {
        bail!("denied preflights were not all dropped: {denied:?}");
    }
    Ok(())
}

fn kill_9_keeps_enforcing(attach: &[&str]) -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(&config(""))?;
    let mut filter = bed.filter(&home, attach)?;
    let origins = [ALLOWED, DENIED];
    let timeout = Duration::from_millis(200);
    let across = PreflightLoop::start(&bed.pair, &origins, timeout, Duration::from_secs(60))?;
    sleep(Duration::from_millis(800));
    let before = filter.stats()?;

    filter.kill()?;
    // The window without a daemon: preflights keep coming, on loops of
    // their own so that their tallies are this window's; the allowed ones
    // as fast as they are answered, the denied ones each waited on for
    // 100 ms.
    let limit = Duration::from_secs(30);
    let allowed = PreflightLoop::start(&bed.pair, &[ALLOWED], timeout, limit)?;
    let denied = PreflightLoop::start(&bed.pair, &[DENIED], Duration::from_millis(100), limit)?;
    sleep(Duration::from_secs(3));
    let mut in_window = allowed.finish()?;
    in_window.extend(denied.finish()?);
    assert!(
        attach == ["--attach", "tc"] || bed.xdp_attached()?,
        "the program went with the daemon"
    );
    // The CLI reads the pinned counters, with or without a daemon.
    let during = filter.stats()?;

    filter.restart()?;
    sleep(Duration::from_millis(800));
    // Read once the loop is over, so that every preflight it sent has been
    // judged (each is denied once; its retransmissions are not denials).
    let across = across.finish()?;
    let after = filter.stats()?;

    eprintln!("kill -9 window: {in_window:?}\nacross the restart: {across:?}");
    assert_enforced(&in_window, 10).context("in the window with no daemon")?;
    assert_enforced(&across, 5).context("across kill -9 and restart")?;
    assert!(
        !bed.server.saw_origin(DENIED)?,
        "a denied preflight reached the server"
    );
    // Counters go on: what was counted before the kill is still counted,
    // and the window's denials are in them.
    let deny = |s: &serde_json::Value| counter(s, "preflight_deny");
    assert!(
        deny(&during) >= deny(&before) + tally(&in_window, DENIED)?.sent,
        "denials in the window not counted: before {before}, during {during}"
    );
    assert!(
        deny(&after) >= deny(&during),
        "counters restarted from zero: {after}"
    );
    assert!(
        deny(&after) >= tally(&across, DENIED)?.sent + tally(&in_window, DENIED)?.sent,
        "{after}"
    );
    assert_eq!(counter(&after, "policies_installed"), 2, "{after}");
    let log = filter.log();
    assert!(log.contains("adopted the filter pinned on"), "{log}");
    // The window's denial events waited in the pinned ring buffer for the
    // new daemon, which counts them per origin. (Events the killed daemon
    // had read but not yet saved, at most 2 s of them, may be lost.)
    let window_denials = tally(&in_window, DENIED)?.sent;
    filter
        .wait_denied_by_origin(Duration::from_secs(10), |by_origin| {
            by_origin.get(DENIED).copied().unwrap_or(0) >= window_denials
        })
        .with_context(|| format!("the window's {window_denials} denials"))?;
    filter.stop()
}

#[test]
fn kill_9_leaves_the_filter_enforcing_and_a_restart_adopts_it() -> Result<()> {
    kill_9_keeps_enforcing(&[])
}

#[test]
fn kill_9_leaves_the_filter_enforcing_and_a_restart_adopts_it_tc() -> Result<()> {
    kill_9_keeps_enforcing(&["--attach", "tc"])
}

fn sigterm_keeps_and_detach_removes(attach: &[&str]) -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(&config(""))?;
    let mut filter = bed.filter(&home, attach)?;

    let refused = filter.cli(&["detach", "--all"])?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "detach went ahead under a running daemon"
    );
    assert!(stderr.contains("stop `cors-filter run` first"), "{stderr}");

    filter.stop_process()?;
    assert!(
        filter.log().contains("stays attached and enforcing"),
        "{}",
        filter.log()
    );
    assert!(
        attach == ["--attach", "tc"] || bed.xdp_attached()?,
        "SIGTERM detached the filter"
    );
    assert_eq!(
        client::preflight(&bed.pair, Family::V4, DENIED)?.status,
        None
    );
    assert_eq!(
        client::preflight(&bed.pair, Family::V4, ALLOWED)?.status,
        Some(204)
    );

    let wrong = filter.cli(&["detach", "--iface", "nosuch0"])?;
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("nosuch0"));

    filter.cli_ok(&["detach", "--iface", SERVER_IF])?;
    assert!(
        !bed.xdp_attached()?,
        "detach --iface left the program attached"
    );
    assert_eq!(
        client::preflight(&bed.pair, Family::V4, DENIED)?.status,
        Some(204)
    );
    // The maps stay (counters included) until --all.
    assert!(filter.pin_dir().join(name::COUNTERS).exists());
    filter.cli_ok(&["detach", "--all"])?;
    assert!(!filter.pin_dir().exists(), "detach --all left the pins");
    // Nothing left: detaching again is not an error.
    filter.cli_ok(&["detach", "--all"])?;
    Ok(())
}

#[test]
fn sigterm_keeps_the_filter_attached_and_detach_removes_it() -> Result<()> {
    sigterm_keeps_and_detach_removes(&[])
}

#[test]
fn sigterm_keeps_the_filter_attached_and_detach_removes_it_tc() -> Result<()> {
    sigterm_keeps_and_detach_removes(&["--attach", "tc"])
}

#[test]
fn detach_on_exit_takes_the_filter_off() -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(&config(""))?;
    let mut filter = bed.filter(&home, &["--detach-on-exit"])?;
    assert_eq!(
        client::preflight(&bed.pair, Family::V4, DENIED)?.status,
        None
    );
    filter.stop_process()?;
    assert!(!bed.xdp_attached()?);
    assert!(!filter.pin_dir().exists());
    assert_eq!(
        client::preflight(&bed.pair, Family::V4, DENIED)?.status,
        Some(204)
    );
    Ok(())
}

/// Two configs that both allow `ALLOWED` and not `DENIED`, but differ in
/// everything else, so that each swap rewrites ports, allowlist and
/// settings.
fn swap_config(n: usize) -> String {
    if n.is_multiple_of(2) {
        let extra: Vec<String> = (0..20)
            .map(|i| format!("\"https://a{i}.example\""))
            .collect();
        format!(
            "ports = [8080]\nallow = [\"{ALLOWED}\", {}]\non_oversized_head = \"pass\"\n",
            extra.join(", ")
        )
    } else {
        let extra: Vec<String> = (0..30)
            .map(|i| format!("\"https://*.b{i}.example\""))
            .collect();
        format!(
            "ports = [8080, 8081, 9000]\nallow = [\"https://*.example.com\", {}]\non_oversized_head = \"drop\"\n",
            extra.join(", ")
        )
    }
}

const SWAPS: usize = 1000;
/// Every this many swaps, one is made with SIGHUP to the daemon instead of
/// `cors-filter reload`.
const SIGHUP_EVERY: usize = 50;

fn wait_for_policy(filter: &RunningFilter, installed: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if counter(&filter.stats()?, "policies_installed") >= installed {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "SIGHUP did not install policy {installed}:\n{}",
                filter.log()
            );
        }
        sleep(Duration::from_millis(5));
    }
}

fn reloads_drop_no_allowed_preflight(attach: &[&str]) -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(&swap_config(0))?;
    // Each swap is reloaded by the command or the signal alone, so that
    // the policies are counted exactly (`tests/fleet.rs` tests the watch).
    let args: Vec<&str> = attach
        .iter()
        .copied()
        .chain(["--no-watch-config"])
        .collect();
    let mut filter = bed.filter(&home, &args)?;
    let start = filter.stats()?;
    let allowed = PreflightLoop::start(
        &bed.pair,
        &[ALLOWED],
        Duration::from_secs(1),
        Duration::from_secs(300),
    )?;
    let denied = PreflightLoop::start(
        &bed.pair,
        &[DENIED],
        Duration::from_millis(100),
        Duration::from_secs(300),
    )?;
    let began = Instant::now();
    for swap in 1..=SWAPS {
        std::fs::write(home.config(), swap_config(swap))?;
        if swap.is_multiple_of(SIGHUP_EVERY) {
            filter.signal(libc::SIGHUP)?;
            wait_for_policy(&filter, 1 + swap as u64)?;
        } else {
            filter.cli_ok(&["reload"])?;
        }
    }
    let took = began.elapsed();
    let (allowed, denied) = (allowed.finish()?, denied.finish()?);
    let end = filter.stats()?;
    let mut tallies = allowed;
    tallies.extend(denied);
    eprintln!(
        "{SWAPS} swaps in {:.1} s; preflights during them: {tallies:?}",
        took.as_secs_f64()
    );
    assert_enforced(&tallies, 20)?;
    assert!(
        !bed.server.saw_origin(DENIED)?,
        "a denied preflight reached the server"
    );
    assert_eq!(
        counter(&end, "policies_installed"),
        1 + SWAPS as u64,
        "{end}"
    );
    // Every verdict is in the kernel's counters (a retransmitted segment
    // counts again, hence at least).
    let delta = |name: &str| counter(&end, name) - counter(&start, name);
    assert!(
        delta("preflight_allow") >= tally(&tallies, ALLOWED)?.sent,
        "{end}"
    );
    assert!(
        delta("preflight_deny") >= tally(&tallies, DENIED)?.sent,
        "{end}"
    );
    assert_eq!(counter(&end, "events_lost"), 0, "{end}");
    // An allowed preflight dropped once, then retransmitted and answered,
    // would pass for answered above; but every denial is an event with its
    // origin, and once the daemon has read them all, none is the allowed
    // origin's.
    let by_origin = filter
        .wait_denied_by_origin(Duration::from_secs(10), |by_origin| {
            by_origin.values().sum::<u64>() >= delta("preflight_deny")
        })
        .with_context(|| format!("the daemon did not read every denial event: {end}"))?;
    assert_eq!(
        by_origin.get(ALLOWED).copied().unwrap_or(0),
        0,
        "allowed preflights were denied during the swaps: {by_origin:?}"
    );
    // The last config (SWAPS is even) is in force: 21 origins.
    assert_eq!(counter(&end, "allowlist_entries"), 21, "{end}");
    assert!(!filter.log().contains("refused"), "{}", filter.log());
    filter.stop()
}

#[test]
fn a_thousand_reloads_drop_no_allowed_preflight() -> Result<()> {
    reloads_drop_no_allowed_preflight(&[])
}

#[test]
fn a_thousand_reloads_drop_no_allowed_preflight_tc() -> Result<()> {
    reloads_drop_no_allowed_preflight(&["--attach", "tc"])
}

#[test]
fn a_bad_reload_is_refused_and_the_policy_stays() -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(&config(""))?;
    // `reload` and SIGHUP alone (`tests/fleet.rs` tests the watch).
    let mut filter = bed.filter(&home, &["--no-watch-config"])?;
    let before = filter.stats()?;
    std::fs::write(
        home.config(),
        "ports = [8080, 0]\nallow = [\"https://evil.example\"]\n",
    )?;

    let out = filter.cli(&["reload"])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a bad config was reloaded");
    assert!(
        stderr.contains(&format!("{}:1: port 0", home.config().display()))
            && stderr.contains("unchanged"),
        "{stderr}"
    );
    filter.signal(libc::SIGHUP)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !filter.log().contains("SIGHUP: reload refused") {
        if Instant::now() > deadline {
            bail!("no refusal logged for SIGHUP:\n{}", filter.log());
        }
        sleep(Duration::from_millis(20));
    }
    assert!(filter.log().contains("port 0"), "{}", filter.log());
    let after = filter.stats()?;
    assert_eq!(after["policies_installed"], before["policies_installed"]);
    assert_eq!(
        client::preflight(&bed.pair, Family::V4, DENIED)?.status,
        None
    );
    assert_eq!(
        client::preflight(&bed.pair, Family::V4, ALLOWED)?.status,
        Some(204)
    );

    // Fixed, it goes in.
    std::fs::write(
        home.config(),
        "ports = [8080]\nallow = [\"https://evil.example\"]\n",
    )?;
    let done = filter.cli_ok(&["reload"])?;
    assert!(done.contains("policy 2 installed"), "{done}");
    assert_eq!(
        client::preflight(&bed.pair, Family::V4, DENIED)?.status,
        Some(204)
    );
    assert_eq!(
        client::preflight(&bed.pair, Family::V4, ALLOWED)?.status,
        None
    );
    filter.stop()
}

/// The connection maps are pinned with the sizes the config gives them,
/// outlive a kill -9, and cannot be resized while pinned: a reload that
/// changes `max_connections` is refused, and so is a start on the pins
/// with another `max_open_heads`; each says which setting and map.
#[test]
fn connection_maps_are_pinned_and_keep_their_size() -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(&config("max_connections = 2048\nmax_open_heads = 512\n"))?;
    let mut filter = bed.filter(&home, &[])?;
    for map in [name::CONNS, name::OPEN_HEADS] {
        assert!(filter.pin_dir().join(map).exists(), "{map} is not pinned");
    }
    let stats = filter.stats()?;
    assert_eq!(stats["conns_capacity"], 2048, "{stats}");
    assert_eq!(stats["open_heads_capacity"], 512, "{stats}");
    for field in ["conns_in_use", "conns_evicted", "open_heads_in_use"] {
        assert!(stats[field].is_u64(), "{field} in {stats}");
    }
    let metrics = filter.metrics()?;
    for line in [
        "cors_filter_connections_capacity 2048",
        "cors_filter_open_heads_capacity 512",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }

    std::fs::write(
        home.config(),
        config("max_connections = 4096\nmax_open_heads = 512\n"),
    )?;
    let out = filter.cli(&["reload"])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a resize was reloaded");
    assert!(
        stderr.contains("max_connections = 4096")
            && stderr.contains("CONNS map has 2048 entries")
            && stderr.contains("detach --all")
            && stderr.contains("unchanged"),
        "{stderr}"
    );
    assert_eq!(
        filter.stats()?["policies_installed"],
        stats["policies_installed"]
    );

    // The daemon dies; a start with another size is refused, the filter
    // stays as it was.
    filter.kill()?;
    std::fs::write(
        home.config(),
        config("max_connections = 2048\nmax_open_heads = 1024\n"),
    )?;
    let out = run_with_pins(&bed.pair, &home, &home.config(), filter.pin_dir(), &[])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started on maps of another size");
    assert!(
        stderr.contains(name::OPEN_HEADS)
            && stderr.contains("max_open_heads = 1024")
            && stderr.contains("512 entries")
            && stderr.contains("detach --all"),
        "{stderr}"
    );
    assert!(bed.xdp_attached()?);

    // Back to the size of the pins, it starts on them.
    std::fs::write(
        home.config(),
        config("max_connections = 2048\nmax_open_heads = 512\n"),
    )?;
    filter.restart()?;
    assert_eq!(filter.stats()?["conns_capacity"], 2048);
    filter.stop()
}

#[test]
fn pinned_maps_of_another_shape_are_refused() -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(&config(""))?;
    let pin_dir = PathBuf::from(format!(
        "/sys/fs/bpf/cors-filter-test-{}",
        cors_filter_tests::unique_suffix()
    ));
    std::fs::create_dir(&pin_dir)?;
    let cleanup = PinDirGuard(pin_dir.clone());
    // A COUNTERS map as an older build with fewer counters would have left.
    let counters = pin_dir.join(name::COUNTERS);
    cors_filter_tests::harness::process::run_ok(std::process::Command::new("bpftool").args([
        "map",
        "create",
        &counters.to_string_lossy(),
        "type",
        "percpu_array",
        "key",
        "4",
        "value",
        "8",
        "entries",
        "3",
        "name",
        name::COUNTERS,
    ]))?;
    let out = run_with_pins(&bed.pair, &home, &home.config(), &pin_dir, &[])?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started on a foreign map");
    assert!(
        stderr.contains(&*counters.to_string_lossy()) && stderr.contains("another version"),
        "{stderr}"
    );
    assert!(!bed.xdp_attached()?);
    drop(cleanup);
    Ok(())
}

struct PinDirGuard(PathBuf);

impl Drop for PinDirGuard {
    fn drop(&mut self) {
        let _ = remove_pin_dir(&self.0);
    }
}
