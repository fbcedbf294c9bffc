//! Running under systemd, with the test in systemd's place: the daemon's
//! notifications (`$NOTIFY_SOCKET`: READY only once attached and
//! enforcing, STATUS, RELOADING/READY around a reload, STOPPING, the
//! watchdog's pings) and the journal (`$JOURNAL_STREAM`: priorities on
//! stderr lines, denials with their own fields on the native socket, the
//! plain format when stderr is not the journal). Real namespaces, server
//! and filter, as in `e2e.rs`.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use cors_filter_tests::{
    TempDir, cors_filter_bin,
    harness::bed::Bed,
    harness::client::{self, Family},
    harness::filter::{FilterEnv, FilterHome, RunningFilter},
    harness::netns::{CLIENT_V4, SERVER_IF},
    harness::process::wait_bounded,
    system::systemd::{Datagram, DatagramListener, show, stream_id, wait_stopped},
};
use cors_filter_user::exit::Kind;

const ALLOWED: &str = "https://app.example.com";
const DENIED: &str = "https://evil.example";
/// How long the daemon has to attach and say READY.
const START_LIMIT: Duration = Duration::from_secs(60);
/// systemd's watchdog interval given to the daemon: it must ping every
/// half of it.
const WATCHDOG: Duration = Duration::from_secs(1);

fn config(origins: &[&str]) -> String {
    let quoted: Vec<String> = origins.iter().map(|o| format!("{o:?}")).collect();
    format!("ports = [8080]\nallow = [{}]\n", quoted.join(", "))
}

fn bed() -> Result<Bed> {
    Bed::new(Path::new(env!("CARGO_BIN_EXE_cors-test-server")))
}

fn fields(d: &Datagram) -> std::collections::BTreeMap<String, String> {
    d.fields()
        .unwrap_or_else(|e| panic!("unreadable datagram {:?}: {e}", d.bytes))
}

fn has(d: &Datagram, key: &str, value: &str) -> bool {
    fields(d).get(key).map(String::as_str) == Some(value)
}

fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid, writable timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1000
}

/// What held at the moment READY=1 arrived, the daemon frozen there.
#[derive(Debug)]
struct AtReady {
    /// Everything received up to READY, READY last.
    received: Vec<Datagram>,
    link_pinned: bool,
    xdp_attached: bool,
    /// Of an allowed and a denied preflight sent while it was frozen.
    allowed_status: Option<u16>,
    denied_answered: bool,
}

/// Receives until READY=1, then stops its sender (SIGSTOP) before it can
/// do anything more, and looks: is the link pinned (in the `--pin-dir` of
/// its command line), is XDP on the interface, does the kernel enforce the
/// policy? Continues it (SIGCONT) whatever happened.
fn freeze_at_ready(notify: &DatagramListener, bed: &Bed) -> Result<AtReady> {
    let received = notify.until(START_LIMIT, |d| has(d, "READY", "1"))?;
    let pid = received.last().context("nothing received")?.pid;
    if pid <= 0 {
        bail!("READY without the sender's credentials");
    }
    // SAFETY: kill with a pid that just sent READY: the daemon, alive
    // (it is the test's child, not reaped before this thread is joined).
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let looked = (|| -> Result<AtReady> {
        wait_stopped(pid, Duration::from_secs(5))?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))?;
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let pin_dir = args
            .iter()
            .position(|a| a == "--pin-dir")
            .and_then(|i| args.get(i + 1))
            .map(PathBuf::from)
            .with_context(|| format!("no --pin-dir in {args:?}"))?;
        Ok(AtReady {
            received: Vec::new(),
            link_pinned: pin_dir
                .join(format!("link-{SERVER_IF}-xdp-native"))
                .exists(),
            xdp_attached: bed.xdp_attached()?,
            allowed_status: client::preflight(&bed.pair, Family::V4, ALLOWED)?.status,
            denied_answered: client::preflight(&bed.pair, Family::V4, DENIED)?.answered(),
        })
    })();
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    Ok(AtReady {
        received,
        ..looked?
    })
}

/// READY=1 arrives only once the program is attached and enforcing; then
/// STATUS, the watchdog's rate, a SIGHUP reload (RELOADING=1 with the
/// monotonic clock, then READY=1 with the new status; a refused one said
/// so in STATUS), a reload by the CLI
/// (as `systemctl reload` runs it) in STATUS, and STOPPING=1 on SIGTERM;
/// every message from the daemon's own process (`NotifyAccess=main`).
#[test]
fn ready_comes_once_enforcing_and_the_service_state_follows() -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(&config(&[ALLOWED]))?;
    let notify = DatagramListener::bind("notify")?;
    let env = FilterEnv {
        vars: vec![
            ("NOTIFY_SOCKET".into(), notify.path().display().to_string()),
            ("WATCHDOG_USEC".into(), WATCHDOG.as_micros().to_string()),
            // A stream that is not stderr's: the plain format stays.
            ("JOURNAL_STREAM".into(), "1:1".into()),
        ],
        journal_stream: false,
    };
    let binary = cors_filter_bin()?;
    let (mut filter, at_ready) = std::thread::scope(|scope| -> Result<_> {
        let watcher = scope.spawn(|| freeze_at_ready(&notify, &bed));
        // The reloads below are SIGHUP's and the CLI's, one at a time: the
        // config watch, which would reload each edit of the file too, is off.
        let filter = RunningFilter::start_with_env(
            &binary,
            &bed.pair.server,
            &home,
            &["--no-watch-config"],
            env.clone(),
        );
        let at_ready = watcher
            .join()
            .map_err(|_| anyhow::anyhow!("the READY watcher panicked"))?;
        Ok((filter?, at_ready?))
    })?;
    let pid = filter.pid()? as i32;

    // READY: nothing before it said so; at that moment attached, pinned
    // and enforcing the policy.
    let (ready, before) = at_ready.received.split_last().context("no READY")?;
    assert!(
        before.iter().all(|d| !fields(d).contains_key("READY")),
        "{}",
        show(&at_ready.received)
    );
    assert!(at_ready.link_pinned, "READY before the link was pinned");
    assert!(at_ready.xdp_attached, "READY before XDP was attached");
    assert_eq!(at_ready.allowed_status, Some(204), "{at_ready:?}");
    assert!(
        !at_ready.denied_answered,
        "READY before the policy was enforced"
    );
    assert_eq!(ready.pid, pid, "READY from another process");
    let status = fields(ready)["STATUS"].clone();
    assert_eq!(
        status,
        format!("filtering {SERVER_IF} (xdp-native): policy 1, 1 allowed origin(s)")
    );

    // The watchdog: WATCHDOG=1 at half the interval, never a gap that
    // would make systemd kill the daemon.
    let window = Duration::from_secs(3);
    notify.drain()?;
    let pings: Vec<Instant> = notify
        .collect(window)?
        .into_iter()
        .filter(|d| has(d, "WATCHDOG", "1"))
        .map(|d| d.at)
        .collect();
    let expected = (window.as_millis() / (WATCHDOG / 2).as_millis()) as usize;
    assert!(
        (expected - 1..=expected + 1).contains(&pings.len()),
        "{} pings in {window:?}, expected about {expected}",
        pings.len()
    );
    let gaps: Vec<Duration> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| *g < WATCHDOG),
        "a gap past the watchdog interval: {gaps:?}"
    );
    let mean = gaps.iter().sum::<Duration>() / gaps.len().max(1) as u32;
    eprintln!(
        "watchdog: {} pings in {window:?}, every {mean:?} on average, at most {:?}",
        pings.len(),
        gaps.iter().max().copied().unwrap_or_default()
    );
    assert!(
        mean > WATCHDOG * 2 / 5 && mean < WATCHDOG * 3 / 5,
        "pings every {mean:?} on average, not every {:?}: {gaps:?}",
        WATCHDOG / 2
    );

    // SIGHUP: RELOADING=1 with the time it began, then READY=1 and the
    // new status.
    std::fs::write(home.config(), config(&[ALLOWED, "https://two.example"]))?;
    let before_reload = monotonic_usec();
    filter.signal(libc::SIGHUP)?;
    let reload = notify.until(Duration::from_secs(20), |d| has(d, "READY", "1"))?;
    let after_reload = monotonic_usec();
    let reload: Vec<&Datagram> = reload.iter().filter(|d| !has(d, "WATCHDOG", "1")).collect();
    let [reloading, ready] = reload[..] else {
        bail!("expected RELOADING then READY, got {reload:?}");
    };
    let reloading = fields(reloading);
    assert_eq!(reloading.get("RELOADING").map(String::as_str), Some("1"));
    let usec: u64 = reloading["MONOTONIC_USEC"].parse()?;
    assert!(
        (before_reload..=after_reload).contains(&usec),
        "MONOTONIC_USEC={usec} outside {before_reload}..={after_reload}"
    );
    assert_eq!(
        fields(ready)["STATUS"],
        format!("filtering {SERVER_IF} (xdp-native): policy 2, 2 allowed origin(s)")
    );

    // A refused reload: READY=1 again (the daemon runs on with its
    // policy), and STATUS says it was refused.
    std::fs::write(home.config(), config(&["not an origin"]))?;
    filter.signal(libc::SIGHUP)?;
    let refused = notify.until(Duration::from_secs(20), |d| has(d, "READY", "1"))?;
    assert!(
        refused.iter().any(|d| has(d, "RELOADING", "1")),
        "{}",
        show(&refused)
    );
    let status = fields(refused.last().context("no READY")?)["STATUS"].clone();
    assert_eq!(
        status,
        format!(
            "filtering {SERVER_IF} (xdp-native): policy 2, 2 allowed origin(s); the last reload was refused (see the log)"
        )
    );

    // A reload by the CLI (ExecReload=) shows in STATUS too.
    std::fs::write(
        home.config(),
        config(&[ALLOWED, "https://two.example", "https://three.example"]),
    )?;
    filter.cli_ok(&["reload"])?;
    let expected_status =
        format!("filtering {SERVER_IF} (xdp-native): policy 3, 3 allowed origin(s)");
    notify.until(Duration::from_secs(12), |d| {
        has(d, "STATUS", &expected_status)
    })?;

    // SIGTERM: STOPPING=1; every message from the daemon itself.
    filter.stop_process()?;
    let rest = notify.until(Duration::from_secs(5), |d| has(d, "STOPPING", "1"))?;
    assert!(rest.iter().all(|d| d.pid == pid), "{rest:?}");

    // Not the journal: env_logger's own lines, with a timestamp and
    // without priorities.
    let log = filter.log();
    assert!(
        log.lines()
            .any(|l| l.starts_with("[20") && l.contains(" INFO ") && l.contains("attached to")),
        "{log}"
    );
    assert!(!log.contains("<6>"), "{log}");
    Ok(())
}

/// With stderr the journal's stream: every log line starts with its
/// priority and has no timestamp; a denial goes to the native socket with
/// its own fields (and not to stderr too); with that socket gone, the
/// denial is a line on stderr again.
#[test]
fn the_journal_gets_priorities_and_structured_denials() -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(&config(&[ALLOWED]))?;
    let journal = DatagramListener::bind("journal")?;
    let env = FilterEnv {
        vars: vec![(
            "CORS_FILTER_JOURNAL_SOCKET".into(),
            journal.path().display().to_string(),
        )],
        journal_stream: true,
    };
    // Metrics beyond loopback: a warning to see.
    let filter = RunningFilter::start_with_env(
        &cors_filter_bin()?,
        &bed.pair.server,
        &home,
        &["--metrics-listen", "0.0.0.0:9186"],
        env,
    )?;
    assert!(!client::preflight(&bed.pair, Family::V4, DENIED)?.answered());
    let entries = journal.until(Duration::from_secs(10), |d| {
        has(d, "CORS_FILTER_ORIGIN", DENIED)
    })?;
    let entry = entries.last().context("no entry")?;
    assert_eq!(entry.pid, filter.pid()? as i32);
    let f = fields(entry);
    let source: std::net::SocketAddr = f["CORS_FILTER_SOURCE"].parse()?;
    assert_eq!(source.ip().to_string(), CLIENT_V4, "{f:?}");
    assert_eq!(f["CORS_FILTER_PORT"], "8080", "{f:?}");
    assert_eq!(f["CORS_FILTER_REASON"], "origin not allowed", "{f:?}");
    assert_eq!(f["CORS_FILTER_REQUEST"], "preflight for PUT", "{f:?}");
    assert_eq!(f["PRIORITY"], "6", "{f:?}");
    assert_eq!(f["SYSLOG_IDENTIFIER"], "cors-filter", "{f:?}");
    assert_eq!(
        f["MESSAGE"],
        format!(
            "denial: origin not allowed from {source} to port 8080, origin \"{DENIED}\", preflight for PUT"
        )
    );
    assert!(!filter.log().contains("denial:"), "{}", filter.log());

    // The native socket gone: the line on stderr, after a warning.
    drop(journal);
    let second = "https://evil-two.example";
    assert!(!client::preflight(&bed.pair, Family::V4, second)?.answered());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !filter.log().contains(second) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = filter.log();
    assert!(
        log.lines()
            .any(|l| l.starts_with("<6>denial: origin not allowed") && l.contains(second)),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.starts_with("<4>cannot send denials to the journal's socket")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.starts_with("<4>metrics are exposed beyond the host")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.starts_with("<6>policy 1 installed from")),
        "{log}"
    );
    for line in log.lines() {
        let priority = line.get(..3).unwrap_or(line);
        assert!(
            ["<3>", "<4>", "<6>", "<7>"].contains(&priority),
            "a line without its priority: {line:?}"
        );
        // env_logger's own lines start `[2026-…Z INFO …]`.
        assert!(
            !line[3.min(line.len())..].starts_with("[20"),
            "a timestamp of its own: {line:?}"
        );
    }
    filter.stop()
}

/// `cors-filter` run as systemd would, without a kernel: an error line with
/// the error priority only when stderr is the journal's stream; a
/// `$NOTIFY_SOCKET` or `$WATCHDOG_USEC` systemd would not set is refused,
/// naming it.
#[test]
fn errors_have_a_priority_only_in_the_journal_and_bad_variables_are_named() -> Result<()> {
    let dir = TempDir::new("journal-cli")?;
    let config_file = dir.path().join("config.toml");
    std::fs::write(&config_file, config(&[ALLOWED]))?;
    let run = |env: &[(&str, &str)], journal: bool| -> Result<String> {
        let stderr_path = dir.path().join("stderr");
        let stderr = std::fs::File::create(&stderr_path)?;
        let mut command = Command::new(cors_filter_bin()?);
        command
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(["run", "--iface", "cf-no-such-if0", "--config"])
            .arg(&config_file)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("JOURNAL_STREAM")
            .envs(env.iter().copied());
        if journal {
            command.env("JOURNAL_STREAM", stream_id(&stderr)?);
        }
        // Not run_bounded, which pipes stderr: it must be the file.
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()?;
        let status = wait_bounded(&mut child, Duration::from_secs(30), "cors-filter run")?;
        // An unknown interface and a bad variable are config errors.
        assert_eq!(status.code(), Some(Kind::Config.code().into()));
        Ok(std::fs::read_to_string(&stderr_path)?)
    };
    let journal = run(&[], true)?;
    assert!(
        journal.starts_with("<3>cors-filter: error: ") && journal.contains("cf-no-such-if0"),
        "{journal}"
    );
    let terminal = run(&[], false)?;
    assert!(terminal.starts_with("cors-filter: error: "), "{terminal}");
    let elsewhere = run(&[("JOURNAL_STREAM", "1:1")], false)?;
    assert!(elsewhere.starts_with("cors-filter: error: "), "{elsewhere}");

    for (var, value) in [
        ("NOTIFY_SOCKET", "relative/socket"),
        ("WATCHDOG_USEC", "ten"),
    ] {
        let mut env = vec![(var, value)];
        if var != "NOTIFY_SOCKET" {
            env.push(("NOTIFY_SOCKET", "/run/cf-test-none"));
        }
        let out = run(&env, false)?;
        assert!(
            out.contains(&format!("{var}=\"{value}\"")) && !out.contains("cf-no-such-if0"),
            "{var}={value}: {out}"
        );
    }
    Ok(())
}
