//! The control plane against a local user: the `/metrics` listener holds a
//! flood of connections from an unprivileged user with the daemon's file
//! descriptors limited as systemd limits them; a state or pin directory
//! others could write, or a file planted in one, is refused and left as it
//! is; a corrupt per-origin counts file is moved aside; `/metrics` says
//! which build serves it and where the filter enforces. Needs root; fails,
//! never skips, without it.

use std::{
    io::{BufRead as _, BufReader},
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use cors_filter_common::pinned::LAYOUT;
use cors_filter_tests::{
    cors_filter_bin,
    harness::bed::Bed,
    harness::client::{self, Family},
    harness::filter::{FilterHome, METRICS_PORT, RunningFilter, cli_at, run_with_pins},
    harness::metrics,
    harness::netns::SERVER_IF,
    harness::process::{Guarded, run_ok},
    system::privileges::{NOBODY, PinDir, as_nobody_in_netns},
};

const ALLOWED: &str = "https://app.example.com";
const DENIED: &str = "https://evil.example";
const ADDED_BY_RELOAD: &str = "https://reloaded.example";
const ATTACKER: &str = "https://attacker.example";

/// Connections the flood opens: more than the daemon's descriptor limit.
const FLOOD: usize = 5000;
/// systemd's default soft limit of open files, the daemon's here.
const DAEMON_NOFILE: u64 = 1024;
/// How long `/metrics` may take to answer again once the flood is open.
const SCRAPE_LIMIT: Duration = Duration::from_secs(15);

fn bed() -> Result<Bed> {
    Bed::new(Path::new(env!("CARGO_BIN_EXE_cors-test-server")))
}

fn config(allow: &[&str]) -> String {
    let quoted: Vec<String> = allow.iter().map(|o| format!("\"{o}\"")).collect();
    format!("ports = [8080]\nallow = [{}]\n", quoted.join(", "))
}

/// Sets the limits of open files of process `pid` (the hard one cannot
/// go up again without CAP_SYS_RESOURCE, which the test may lack).
fn limit_open_files(pid: u32, soft: u64, hard: u64) -> Result<()> {
    run_ok(
        Command::new("prlimit")
            .arg(format!("--pid={pid}"))
            .arg(format!("--nofile={soft}:{hard}")),
    )?;
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .context("no open-files line in /proc/PID/limits")?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.get(3) != Some(&&*soft.to_string()) || fields.get(4) != Some(&&*hard.to_string()) {
        bail!("the daemon's limit did not change: {line}");
    }
    Ok(())
}

/// Tries `/metrics` every 200 ms until it answers; how long that took.
fn first_scrape(ns: &str, limit: Duration) -> Result<Duration> {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < limit {
        match metrics::fetch(ns, METRICS_PORT) {
            Ok(text) if text.contains("cors_filter_packets_total") => return Ok(start.elapsed()),
            Ok(text) => last = Some(anyhow::anyhow!("unexpected answer {text:.200}")),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no try")))
        .with_context(|| format!("/metrics did not answer within {limit:?}"))
}

/// `cors-test-flood` as `nobody` in the server's namespace, aimed at the
/// metrics port with `count` connections; they are held until its stdin
/// closes (at most a minute).
fn start_flood(bed: &Bed, count: usize) -> Result<Guarded> {
    let flood_binary = Path::new(env!("CARGO_BIN_EXE_cors-test-flood"));
    let mut command = as_nobody_in_netns(&bed.pair.server, count as u64 + 500, flood_binary);
    command
        .args(["--connect", &format!("127.0.0.1:{METRICS_PORT}")])
        .args(["--count", &count.to_string()])
        .args(["--hold-secs", "60", "--open-limit-ms", "30000"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    Ok(Guarded {
        child: command.spawn().context("cannot start cors-test-flood")?,
        name: "cors-test-flood".into(),
    })
}

/// The flood's JSON lines, read as they come.
fn read_lines(child: &mut Guarded) -> Result<mpsc::Receiver<serde_json::Value>> {
    let stdout = child.child.stdout.take().context("no stdout")?;
    let (send, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(value) = serde_json::from_str(&line) {
                let _ = send.send(value);
            }
        }
    });
    Ok(lines)
}

/// The per-origin count of `origin` reaches at least `at_least`.
fn wait_denials(filter: &RunningFilter, origin: &str, at_least: u64) -> Result<u64> {
    let counts = filter.wait_denied_by_origin(Duration::from_secs(10), |by_origin| {
        by_origin.get(origin).copied().unwrap_or(0) >= at_least
    })?;
    Ok(counts[origin])
}

/// 5,000 connections to `/metrics` from `nobody`, held, against a daemon
/// limited to 1,024 open files: it stays up, `/metrics` answers during the
/// flood and after it, denials are still logged and counted per origin,
/// and SIGHUP still reloads. The daemon starts on a truncated per-origin
/// counts file, which it moves aside.
#[test]
fn a_metrics_flood_from_a_local_user_leaves_the_daemon_serving() -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(&config(&[ALLOWED]))?;
    // A counts file cut short (as by a full disk), root's as the daemon
    // writes it: it must not stop `run`.
    let state = home.state_dir();
    std::fs::create_dir_all(&state)?;
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700))?;
    let counts = state.join("denied-origins.json");
    std::fs::write(&counts, format!("{{\"origins\": {{\"{DENIED}\": 1000"))?;
    std::fs::set_permissions(&counts, std::fs::Permissions::from_mode(0o600))?;

    let mut filter = bed.filter(&home, &[])?;
    let log = filter.log();
    let aside: Vec<PathBuf> = std::fs::read_dir(&state)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    let aside: Vec<&PathBuf> = aside
        .iter()
        .filter(|p| p.to_string_lossy().contains("denied-origins.json.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "not moved aside: {aside:?}\n{log}");
    assert!(
        log.contains("moved it aside to")
            && log.contains(&*aside[0].to_string_lossy())
            && log.contains(&*counts.to_string_lossy()),
        "{log}"
    );

    let pid = filter.pid()?;
    limit_open_files(pid, DAEMON_NOFILE, DAEMON_NOFILE)?;
    let flood_started = Instant::now();
    let mut flood = start_flood(&bed, FLOOD)?;
    let lines = read_lines(&mut flood)?;
    let opened = lines
        .recv_timeout(Duration::from_secs(45))
        .context("the flood did not say what it opened")?;
    let open_time = flood_started.elapsed();
    let during = first_scrape(&bed.pair.server, SCRAPE_LIMIT);
    let held = lines
        .recv_timeout(Duration::from_secs(10))
        .context("the flood did not say what it held")?;
    eprintln!(
        "flood: {opened} in {open_time:?}, then {held}; first /metrics answer during it after {:?}",
        during.as_ref().ok()
    );
    assert!(
        filter.is_running(),
        "the daemon exited under the flood:\n{}",
        filter.log()
    );
    let during = during.with_context(|| format!("during the flood:\n{}", filter.log()))?;
    let opened_count = opened["opened"].as_u64().unwrap_or(0);
    assert!(
        opened_count > DAEMON_NOFILE,
        "the flood opened only {opened} connections: no test of the limit"
    );

    // Denials: logged and counted per origin, the count afresh.
    assert_eq!(
        client::preflight(&bed.pair, Family::V4, DENIED)?.status,
        None
    );
    let denied = wait_denials(&filter, DENIED, 1)?;
    assert!(denied < 1000, "the corrupt file's count was kept: {denied}");
    assert!(
        filter.log().contains(DENIED),
        "no denial line:\n{}",
        filter.log()
    );

    // SIGHUP still reloads: a newly allowed origin is let through.
    std::fs::write(home.config(), config(&[ALLOWED, ADDED_BY_RELOAD]))?;
    filter.signal(libc::SIGHUP)?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !filter.log().contains("SIGHUP: ") {
        if Instant::now() > deadline {
            bail!("SIGHUP not handled:\n{}", filter.log());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        client::preflight(&bed.pair, Family::V4, ADDED_BY_RELOAD)?.status,
        Some(204),
        "{}",
        filter.log()
    );
    assert!(filter.is_running(), "{}", filter.log());

    // The flood ends; /metrics answers at once.
    drop(flood.child.stdin.take());
    flood.stop(Duration::from_secs(10));
    let after = first_scrape(&bed.pair.server, Duration::from_secs(5))?;
    eprintln!(
        "flood from uid {NOBODY}: {opened_count} connections opened; daemon limited to {DAEMON_NOFILE} files; \
         /metrics answered {during:?} after the flood was open, {after:?} after it ended"
    );
    assert!(filter.is_running(), "{}", filter.log());

    // The accept errors themselves: with 8 descriptors to spare (the soft
    // limit lowered), the daemon
    // runs out of them before its bound on connections. It says so, goes
    // on, and serves again once the flood is gone.
    let in_use = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count() as u64;
    limit_open_files(pid, in_use + 8, DAEMON_NOFILE)?;
    let t2 = Instant::now();
    let mut flood = start_flood(&bed, 40)?;
    let lines = read_lines(&mut flood)?;
    let opened = lines
        .recv_timeout(Duration::from_secs(45))
        .context("the second flood did not say what it opened")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !filter.log().contains("Too many open files") {
        if Instant::now() > deadline {
            bail!(
                "no accept error logged with {} descriptors ({opened}):\n{}",
                in_use + 8,
                filter.log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(filter.is_running(), "{}", filter.log());
    drop(flood.child.stdin.take());
    flood.stop(Duration::from_secs(10));
    let phase = t2.elapsed();
    limit_open_files(pid, DAEMON_NOFILE, DAEMON_NOFILE)?;
    let recovered = first_scrape(&bed.pair.server, SCRAPE_LIMIT)?;
    let log = filter.log();
    let error_lines = log
        .lines()
        .filter(|l| l.contains("cannot accept a connection"))
        .count();
    eprintln!(
        "out of descriptors ({} allowed) for {phase:?}: {error_lines} accept-error line(s) logged; /metrics answered {recovered:?} after the flood ended",
        in_use + 8
    );
    assert!(
        log.contains("metrics listener cannot accept a connection: Too many open files"),
        "{log}"
    );
    // Rate-limited: one line per 10 s, not one per failed accept (ten a
    // second while the descriptors are out).
    assert!(
        error_lines as u64 <= 1 + phase.as_secs() / 10,
        "{error_lines} lines in {phase:?}:\n{log}"
    );
    assert!(filter.is_running(), "{log}");
    assert!(
        !log.contains("metrics server stopped") && !log.contains("panicked"),
        "{log}"
    );
    filter.stop()
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn mode_and_owner(path: &Path) -> Result<(u32, u32)> {
    let meta = std::fs::symlink_metadata(path)?;
    Ok((meta.mode() & 0o7777, meta.uid()))
}

/// `cors-filter --pin-dir P --state-dir S ARGS` run to its end.
fn cli(pins: &Path, state: &Path, args: &[&str]) -> Result<std::process::Output> {
    cli_at(&cors_filter_bin()?, pins, state, args)
}

/// A root-owned state directory of mode 1777, in which `nobody` planted an
/// `allowlist-changes.json` allowing an attacker: `run`, `allow list` and
/// `allow add` refuse it, naming it, its owner and mode; nothing is
/// changed. Made 0700, the planted file is still refused; and a pin
/// directory others can write is refused as well.
#[test]
fn directories_and_files_others_could_write_are_refused_never_chmod_ed() -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(&config(&[ALLOWED]))?;
    let state = home.state_dir();
    std::fs::create_dir(&state)?;
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o1777))?;
    let planted = state.join("allowlist-changes.json");
    let planted_text = format!("{{\"added\": [\"{ATTACKER}\"], \"removed\": []}}\n");
    std::fs::write(&planted, &planted_text)?;
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o644))?;
    std::os::unix::fs::chown(&planted, Some(NOBODY), Some(NOBODY))?;

    let pins = PinDir::new();
    let shared_dir = format!(
        "state directory {} belongs to uid 0 and has mode 1777",
        state.display()
    );
    let refusals = [
        (
            "run",
            run_with_pins(&bed.pair, &home, &home.config(), pins.path(), &[])?,
        ),
        ("allow list", cli(pins.path(), &state, &["allow", "list"])?),
        (
            "allow add",
            cli(pins.path(), &state, &["allow", "add", "https://x.example"])?,
        ),
    ];
    for (what, out) in &refusals {
        let stderr = stderr_of(out);
        assert!(!out.status.success(), "{what} went ahead: {out:?}");
        assert!(
            stderr.contains(&shared_dir) && stderr.contains("never changes"),
            "{what}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    }
    assert!(!bed.xdp_attached()?, "run attached");
    assert!(!pins.path().exists(), "run made pins");
    assert_eq!(
        mode_and_owner(&state)?,
        (0o1777, 0),
        "the state directory was changed"
    );
    assert_eq!(mode_and_owner(&planted)?, (0o644, NOBODY));
    assert_eq!(std::fs::read_to_string(&planted)?, planted_text);

    // Root-only now, but the planted file is still nobody's.
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700))?;
    let planted_file = format!(
        "file in state directory {} belongs to uid {NOBODY}",
        planted.display()
    );
    let out = run_with_pins(&bed.pair, &home, &home.config(), pins.path(), &[])?;
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr_of(&out).contains(&planted_file),
        "{}",
        stderr_of(&out)
    );
    let out = cli(pins.path(), &state, &["allow", "list"])?;
    assert!(
        stderr_of(&out).contains(&planted_file),
        "{}",
        stderr_of(&out)
    );
    assert!(!bed.xdp_attached()?);
    assert_eq!(mode_and_owner(&planted)?, (0o644, NOBODY));

    // A pin directory the group can write (root's): refused, unchanged.
    std::fs::remove_file(&planted)?;
    std::fs::create_dir(pins.path())?;
    std::fs::set_permissions(pins.path(), std::fs::Permissions::from_mode(0o770))?;
    let out = run_with_pins(&bed.pair, &home, &home.config(), pins.path(), &[])?;
    let stderr = stderr_of(&out);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        stderr.contains(&format!(
            "pin directory {} belongs to uid 0 and has mode 0770",
            pins.path().display()
        )),
        "{stderr}"
    );
    assert!(!bed.xdp_attached()?);
    assert_eq!(mode_and_owner(pins.path())?, (0o770, 0));
    assert!(
        std::fs::read_dir(pins.path())?.next().is_none(),
        "pins made"
    );
    Ok(())
}

/// `cors_filter_attached` series of a scrape: `(interface, hook, xdp_mode)`.
fn attached(filter: &RunningFilter) -> Result<Vec<String>> {
    Ok(filter
        .metric_values()?
        .into_iter()
        .filter(|(series, value)| series.starts_with("cors_filter_attached{") && *value == 1)
        .map(|(series, _)| series)
        .collect())
}

fn link(interface: &str, hook: &str, xdp_mode: &str) -> String {
    format!(
        "cors_filter_attached{{hook=\"{hook}\",interface=\"{interface}\",xdp_mode=\"{xdp_mode}\"}}"
    )
}

/// Waits until the attached series are `want` (sorted).
fn wait_attached(filter: &RunningFilter, mut want: Vec<String>) -> Result<()> {
    want.sort();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = attached(filter)?;
        if now == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("cors_filter_attached is {now:?}, not {want:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `cors_filter_build_info` names this build; `cors_filter_attached` the
/// links the filter enforces on, read at each scrape: an interface that
/// goes away leaves it at once, one taken off with `detach --iface` after
/// a restart, and a move to TC changes its labels.
#[test]
fn metrics_say_which_build_serves_and_where_the_filter_enforces() -> Result<()> {
    let bed = bed()?;
    let server = bed.pair.server.clone();
    bed.pair.add_inner_veth(&server, "cfgone0", "cfgone1")?;
    bed.pair.add_inner_veth(&server, "cfdet0", "cfdet1")?;
    let home = FilterHome::new(&config(&[ALLOWED]))?;
    let both = ["--iface", "cfgone0", "--iface", "cfdet0"];
    let mut filter = bed.filter(&home, &both)?;

    let values = filter.metric_values()?;
    let build = format!(
        "cors_filter_build_info{{layout=\"{LAYOUT}\",version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(values.get(&build), Some(&1), "{values:?}");
    wait_attached(
        &filter,
        vec![
            link(SERVER_IF, "xdp", "native"),
            link("cfgone0", "xdp", "native"),
            link("cfdet0", "xdp", "native"),
        ],
    )?;

    // The interface goes: its link is defunct, its series goes at once.
    bed.pair.delete_link(&server, "cfgone0")?;
    wait_attached(
        &filter,
        vec![
            link(SERVER_IF, "xdp", "native"),
            link("cfdet0", "xdp", "native"),
        ],
    )?;

    // Taken off one interface with `detach --iface` (daemon stopped).
    filter.stop_process()?;
    let out = filter.cli(&["detach", "--iface", "cfdet0"])?;
    assert!(out.status.success(), "{out:?}");
    filter.use_args(&[]);
    filter.restart()?;
    wait_attached(&filter, vec![link(SERVER_IF, "xdp", "native")])?;

    // Moved to TC: the same interface, other labels.
    filter.stop_process()?;
    filter.use_args(&["--attach", "tc"]);
    filter.restart()?;
    wait_attached(&filter, vec![link(SERVER_IF, "tc", "none")])?;
    filter.stop()
}
