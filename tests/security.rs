//! Security of the control plane: root-only pins and state, the CLI
//! refusing unprivileged users with one clear line, metrics on loopback
//! unless told otherwise, and the shipped systemd unit: its capability set
//! tried for real (enough, and each one needed), its system call filter
//! and writable paths held against a trace of the daemon, and
//! `systemd-analyze` on it. Needs root; fails, never skips, without it.

use std::path::Path;
use std::{os::unix::fs::PermissionsExt as _, path::PathBuf, process::Command, time::Duration};

use anyhow::{Context, Result};
use cors_filter_common::pinned::name;
use cors_filter_tests::{
    TempDir, cors_filter_bin,
    harness::bed::Bed,
    harness::client::{self, Family},
    harness::filter::{FilterEnv, FilterHome, RunningFilter, run_with_pins},
    harness::netns::SERVER_IF,
    harness::process::{run_bounded, stderr_of},
    require_root,
    system::privileges::{
        NOBODY, PinDir, as_nobody, capability_mask, capability_wrapper, effective_capabilities,
        not_root_only, run_with_capabilities, walk,
    },
    system::syscalls::{Trace, TracedFilter, parse_trace},
    system::systemd::DatagramListener,
    system::unit::{self, INSTALLED_BINARY, Unit},
};

const ALLOWED: &str = "https://app.example.com";
const DENIED: &str = "https://evil.example";
/// The exit code of a refusal for want of privilege.
const PRIVILEGE_CODE: i32 = cors_filter_user::exit::Kind::Privilege.code() as i32;
const CONFIG: &str = "ports = [8080]\nallow = [\"https://app.example.com\"]\n";

/// No panic, no backtrace, whatever the outcome.
fn assert_no_panic(stderr: &str, what: &str) {
    for needle in ["panicked", "RUST_BACKTRACE", "stack backtrace"] {
        assert!(!stderr.contains(needle), "{what}: {needle:?} in:\n{stderr}");
    }
}

fn bed() -> Result<Bed> {
    Bed::new(Path::new(env!("CARGO_BIN_EXE_cors-test-server")))
}

#[test]
fn pins_and_state_are_root_only() -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(CONFIG)?;
    let filter = RunningFilter::start(&bed.pair, &home, &[])?;
    filter.cli_ok(&["allow", "add", DENIED])?;

    let pins = walk(filter.pin_dir())?;
    let state = walk(&home.state_dir())?;
    assert!(
        pins.iter().any(|e| e.path.ends_with(name::ALLOWLISTS[0])),
        "no pins: {pins:?}"
    );
    assert!(
        state
            .iter()
            .any(|e| e.path.ends_with("allowlist-changes.json")),
        "no allowlist state: {state:?}"
    );
    let wrong: Vec<String> = not_root_only(&pins)
        .into_iter()
        .chain(not_root_only(&state))
        .collect();
    assert!(wrong.is_empty(), "not root-only:\n{}", wrong.join("\n"));

    // nobody can neither list the directories nor read what is in them.
    let changes = home.state_dir().join("allowlist-changes.json");
    let allowlist_pin = filter.pin_dir().join(name::ALLOWLISTS[0]);
    assert!(allowlist_pin.exists(), "no pin {}", allowlist_pin.display());
    for (program, target) in [
        ("ls", home.state_dir()),
        ("cat", changes.clone()),
        ("ls", filter.pin_dir().to_owned()),
        ("cat", allowlist_pin),
    ] {
        let mut command = Command::new("setpriv");
        command
            .arg(format!("--reuid={NOBODY}"))
            .arg(format!("--regid={NOBODY}"))
            .args(["--clear-groups", "--", program])
            .arg(&target);
        let out = run_bounded(&mut command, Duration::from_secs(10))?;
        assert!(
            !out.status.success() && stderr_of(&out).contains("Permission denied"),
            "nobody could {program} {}: {out:?}",
            target.display()
        );
    }
    // The default metrics address is loopback: no exposure warning.
    assert!(
        !filter.log().contains("exposed beyond the host"),
        "{}",
        filter.log()
    );
    filter.stop()
}

#[test]
fn unprivileged_cli_is_refused_with_one_clear_line() -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(CONFIG)?;
    let filter = RunningFilter::start(&bed.pair, &home, &[])?;
    filter.cli_ok(&["allow", "add", "https://kept.example"])?;
    let changes = home.state_dir().join("allowlist-changes.json");
    let changes_before = std::fs::read(&changes)?;
    let binary = cors_filter_bin()?;
    let pin_dir = filter.pin_dir().display().to_string();
    let state_dir = home.state_dir().display().to_string();
    let config = home.config().display().to_string();
    // A pin and a state directory that do not exist: `run` must not make them.
    let (fresh_pins, fresh_state) = (PinDir::new(), TempDir::new("fresh")?);
    let fresh_state_dir = fresh_state.path().join("state").display().to_string();
    let fresh_pin_dir = fresh_pins.path().display().to_string();

    let cases: [(&str, &[&str], [&str; 2]); 9] = [
        (
            "run",
            &["run", "--iface", SERVER_IF, "--config", &config],
            [&fresh_pin_dir, &fresh_state_dir],
        ),
        (
            "allow add",
            &["allow", "add", DENIED],
            [&pin_dir, &state_dir],
        ),
        (
            "allow remove",
            &["allow", "remove", ALLOWED],
            [&pin_dir, &state_dir],
        ),
        ("allow list", &["allow", "list"], [&pin_dir, &state_dir]),
        ("stats", &["stats"], [&pin_dir, &state_dir]),
        ("stats", &["stats", "--json"], [&pin_dir, &state_dir]),
        ("status", &["status"], [&pin_dir, &state_dir]),
        ("status", &["status", "--json"], [&pin_dir, &state_dir]),
        (
            "replay",
            &["replay", "--config", &config, "/nonexistent.pcap"],
            [&pin_dir, &state_dir],
        ),
    ];
    for (subcommand, args, [pins, state]) in cases {
        let mut command = as_nobody(&binary);
        command
            .args(["--pin-dir", pins, "--state-dir", state])
            .args(args);
        let out = run_bounded(&mut command, Duration::from_secs(30))?;
        let what = format!("nobody: cors-filter {}", args.join(" "));
        assert_eq!(out.status.code(), Some(PRIVILEGE_CODE), "{what}: {out:?}");
        assert_no_panic(&stderr_of(&out), &what);
        // A --json command says it in JSON on stdout, the others on stderr.
        let stderr = if args.contains(&"--json") {
            assert!(out.stderr.is_empty(), "{what}: {}", stderr_of(&out));
            let error: serde_json::Value = serde_json::from_slice(&out.stdout)
                .with_context(|| format!("{what}: printed {:?}", out.stdout))?;
            assert_eq!(error["kind"], "privilege", "{what}: {error}");
            format!(
                "cors-filter: error: {}\n",
                error["error"].as_str().unwrap_or("")
            )
        } else {
            assert!(out.stdout.is_empty(), "{what}: printed {:?}", out.stdout);
            stderr_of(&out)
        };
        assert_eq!(stderr.lines().count(), 1, "{what}: not one line:\n{stderr}");
        let expected = format!("cors-filter: error: cors-filter {subcommand} needs root (");
        assert!(
            stderr.starts_with(&expected) && stderr.contains("run it as root"),
            "{what}: {stderr}"
        );
        assert!(
            stderr.contains(&format!("runs as uid {NOBODY}")) || subcommand == "replay",
            "{what}: {stderr}"
        );
        if subcommand != "replay" {
            assert!(stderr.contains(pins), "{what}: pin dir not named: {stderr}");
        }
        if ["run", "replay"].contains(&subcommand) {
            assert!(
                stderr.contains("CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON"),
                "{what}: {stderr}"
            );
        }
    }
    // Nothing was touched: no new directories, the state and the running
    // allowlist as they were.
    assert!(!fresh_pins.path().exists() && !PathBuf::from(&fresh_state_dir).exists());
    assert_eq!(std::fs::read(&changes)?, changes_before);
    assert_eq!(
        filter
            .cli_ok(&["allow", "list"])?
            .lines()
            .collect::<Vec<_>>(),
        [ALLOWED, "https://kept.example"]
    );
    // Help and version are for everyone.
    for flag in ["--help", "--version"] {
        let out = run_bounded(as_nobody(&binary).arg(flag), Duration::from_secs(10))?;
        assert!(out.status.success(), "nobody: cors-filter {flag}: {out:?}");
        assert!(!out.stdout.is_empty());
    }
    filter.stop()
}

/// With the check skipped, what the filesystem refuses is still explained:
/// the pin is named, and so is what is needed, not "no running filter".
#[test]
fn permission_errors_from_the_system_are_explained() -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(CONFIG)?;
    let filter = RunningFilter::start(&bed.pair, &home, &[])?;
    let mut command = as_nobody(&cors_filter_bin()?);
    command
        .env("CORS_FILTER_SKIP_PRIVILEGE_CHECK", "1")
        .arg("--pin-dir")
        .arg(filter.pin_dir())
        .arg("stats");
    let out = run_bounded(&mut command, Duration::from_secs(30))?;
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(PRIVILEGE_CODE), "{out:?}");
    assert_no_panic(&stderr, "stats");
    assert!(
        stderr.contains("Permission denied")
            && stderr.contains(&*filter.pin_dir().to_string_lossy())
            && stderr.contains("cors-filter: permission denied: cors-filter stats needs root")
            && !stderr.contains("no running cors-filter"),
        "{stderr}"
    );
    filter.stop()
}

#[test]
fn directories_someone_else_owns_are_refused() -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(CONFIG)?;
    let chown_to_nobody = |path: &std::path::Path| -> Result<()> {
        std::fs::create_dir_all(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777))?;
        std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY))
            .with_context(|| format!("cannot chown {}", path.display()))
    };

    // A pin directory made in advance by another user.
    let squatted = PinDir::new();
    chown_to_nobody(squatted.path())?;
    let out = run_with_pins(&bed.pair, &home, &home.config(), squatted.path(), &[])?;
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr.contains(&format!(
            "pin directory {} belongs to uid {NOBODY}",
            squatted.path().display()
        )),
        "{stderr}"
    );
    assert!(!bed.xdp_attached()?);
    let meta = std::fs::metadata(squatted.path())?;
    assert!(
        std::os::unix::fs::MetadataExt::uid(&meta) == NOBODY
            && std::fs::read_dir(squatted.path())?.next().is_none(),
        "the squatted pin directory was used"
    );

    // A state directory made in advance by another user.
    chown_to_nobody(&home.state_dir())?;
    let pins = PinDir::new();
    let out = run_with_pins(&bed.pair, &home, &home.config(), pins.path(), &[])?;
    let stderr = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr.contains(&format!(
            "state directory {} belongs to uid {NOBODY}",
            home.state_dir().display()
        )),
        "{stderr}"
    );
    assert!(!bed.xdp_attached()?);
    assert!(!pins.path().exists());
    Ok(())
}

#[test]
fn metrics_beyond_loopback_are_warned_about() -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(CONFIG)?;
    let filter = RunningFilter::start(&bed.pair, &home, &["--metrics-listen", "0.0.0.0:9186"])?;
    let log = filter.log();
    assert!(
        log.contains("metrics are exposed beyond the host") && log.contains("0.0.0.0:9186"),
        "{log}"
    );
    assert!(
        filter
            .metric_values()?
            .contains_key("cors_filter_packets_total")
    );
    filter.stop()
}

/// The unit's `CapabilityBoundingSet=`, for real: the filter started as
/// root with exactly those capabilities (as systemd starts it) attaches,
/// drops a disallowed preflight, and serves its CLI; with any one of them
/// taken away, the kernel refuses it, and cors-filter says which is missing.
#[test]
fn the_units_capabilities_are_enough_and_each_is_needed() -> Result<()> {
    let bed = bed()?;
    let unit = Unit::load()?;
    let capabilities = unit.capability_bounding_set()?;
    assert!(
        !capabilities.iter().any(|c| c == "CAP_SYS_ADMIN"),
        "{capabilities:?}"
    );
    let binary = cors_filter_bin()?;
    let scripts = TempDir::new("caps")?;
    let wrapper = capability_wrapper(scripts.path(), &binary, &capabilities)?;

    // Both attachment points: XDP (the default) and TC.
    for (hook, denied) in [
        (&[][..], "https://evil-xdp.example"),
        (&["--attach", "tc"][..], "https://evil-tc.example"),
    ] {
        let home = FilterHome::new(CONFIG)?;
        let filter = RunningFilter::start_with(&wrapper, &bed.pair, &home, hook)?;
        assert_eq!(
            effective_capabilities(filter.pid()?)?,
            capability_mask(&capabilities)?,
            "{hook:?}: the filter does not run with exactly {capabilities:?}"
        );
        assert_eq!(bed.xdp_attached()?, hook.is_empty(), "{hook:?}");
        assert_eq!(
            client::preflight(&bed.pair, Family::V4, ALLOWED)?.status,
            Some(204),
            "{hook:?}"
        );
        assert!(!client::preflight(&bed.pair, Family::V4, denied)?.answered());
        assert!(!bed.server.saw_origin(denied)?, "{hook:?}");
        // The CLI under the same capabilities (as ExecReload runs).
        let stats = filter.stats()?;
        assert!(
            stats["preflight_deny"].as_u64().unwrap_or(0) >= 1,
            "{hook:?}: {stats}"
        );
        filter.cli_ok(&["allow", "add", denied])?;
        assert_eq!(
            client::preflight(&bed.pair, Family::V4, denied)?.status,
            Some(204),
            "{hook:?}"
        );
        filter.stop()?;
    }

    let home = FilterHome::new(CONFIG)?;
    for dropped in &capabilities {
        let fewer: Vec<String> = capabilities
            .iter()
            .filter(|c| *c != dropped)
            .cloned()
            .collect();
        for skip_check in [false, true] {
            let pins = PinDir::new();
            let out =
                run_with_capabilities(&bed.pair, &binary, &home, pins.path(), &fewer, skip_check)?;
            let stderr = stderr_of(&out);
            let what = format!("without {dropped} (check skipped: {skip_check})");
            assert_eq!(out.status.code(), Some(PRIVILEGE_CODE), "{what}: {stderr}");
            assert_no_panic(&stderr, &what);
            assert!(
                stderr.contains(&format!("this process lacks {dropped}")),
                "{what}: {stderr}"
            );
            if skip_check {
                // The kernel refused, and it was explained.
                assert!(
                    (stderr.contains("Operation not permitted")
                        || stderr.contains("Permission denied"))
                        && stderr.contains("cors-filter: permission denied: cors-filter run"),
                    "{what}: {stderr}"
                );
            } else {
                assert_eq!(stderr.lines().count(), 1, "{what}: {stderr}");
            }
            assert!(!bed.xdp_attached()?, "{what}: attached");
        }
    }
    Ok(())
}

/// Whether `path` is in a process's directory of /proc: `/proc/self/...`,
/// `/proc/thread-self/...`, `/proc/PID/...`.
fn is_process_path(path: &str) -> bool {
    let Some(rest) = path.strip_prefix("/proc/") else {
        return false;
    };
    let first = rest.split('/').next().unwrap_or("");
    first == "self"
        || first == "thread-self"
        || (!first.is_empty() && first.bytes().all(|b| b.is_ascii_digit()))
}

/// `systemd-analyze verify` accepts the unit without a word, and
/// `systemd-analyze security` rates its exposure low.
#[test]
fn systemd_analyze_accepts_the_unit() -> Result<()> {
    require_root()?;
    let unit = Unit::load()?;
    let printed = unit::verify(&unit, &cors_filter_bin()?)?;
    assert!(
        printed.trim().is_empty(),
        "systemd-analyze verify:\n{printed}"
    );
    let (exposure, report) = unit::exposure(&unit)?;
    assert!(exposure <= 2.1, "exposure {exposure}:\n{report}");
    Ok(())
}

/// What the unit promises in its directives.
#[test]
fn the_unit_starts_reloads_and_confines_as_documented() -> Result<()> {
    let unit = Unit::load()?;
    let one = |key: &str| -> String {
        let values = unit.service_values(key);
        assert_eq!(values.len(), 1, "{key}: {values:?}");
        values[0].clone()
    };
    assert!(
        one("ExecStart").starts_with(&format!("/{INSTALLED_BINARY} run "))
            && one("ExecStart").contains("--config /etc/cors-filter.toml")
    );
    assert_eq!(
        one("ExecStartPre"),
        format!("/{INSTALLED_BINARY} check --config /etc/cors-filter.toml")
    );
    assert_eq!(one("ExecReload"), format!("/{INSTALLED_BINARY} reload"));
    for (key, value) in [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("WatchdogSec", "30s"),
        ("LimitNOFILE", "4096"),
        ("KillSignal", "SIGTERM"),
        ("Restart", "on-failure"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ReadWritePaths", "/sys/fs/bpf"),
        ("StateDirectory", "cors-filter"),
        ("StateDirectoryMode", "0700"),
        ("UMask", "0077"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("ReadOnlyPaths", "/sys"),
        ("ProcSubset", "pid"),
        (
            "RestrictAddressFamilies",
            "AF_INET AF_INET6 AF_NETLINK AF_UNIX",
        ),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("SystemCallArchitectures", "native"),
    ] {
        assert_eq!(one(key), value, "{key}");
    }
    // systemd's ProtectKernelTunables=yes mounts /sys/fs/bpf read-only and
    // ReadWritePaths= cannot undo it (for one path the more restrictive
    // setting wins): the filter could not pin anything.
    assert!(
        unit.service_values("ProtectKernelTunables")
            .iter()
            .all(|v| v == "no"),
        "ProtectKernelTunables=yes makes bpffs read-only"
    );
    Ok(())
}

/// Everything the daemon does, traced from start to exit (with a metrics
/// request and a CLI change in between), is allowed by the unit: each
/// system call by `SystemCallFilter=`, each path written to by
/// `ProtectSystem=strict` with `ReadWritePaths=` and `StateDirectory=`
/// (here: the test's pin and state directories). And the CLI's calls too.
/// The daemon runs as under systemd: notifying (with a watchdog) and
/// logging to the journal, denials through its native socket.
#[test]
fn the_daemon_stays_within_the_units_system_calls_and_paths() -> Result<()> {
    let bed = bed()?;
    let unit = Unit::load()?;
    let allowed = unit.syscall_allowlist()?;
    let binary = cors_filter_bin()?;
    let home = FilterHome::new(CONFIG)?;
    let pins = PinDir::new();
    let traces = TempDir::new("strace")?;
    let notify = DatagramListener::bind("notify")?;
    let journal = DatagramListener::bind("journal")?;
    let env = FilterEnv {
        vars: vec![
            ("NOTIFY_SOCKET".into(), notify.path().display().to_string()),
            ("WATCHDOG_USEC".into(), "200000".into()),
            (
                "CORS_FILTER_JOURNAL_SOCKET".into(),
                journal.path().display().to_string(),
            ),
        ],
        journal_stream: true,
    };

    let mut daemon = Trace::default();
    let mut cli_trace_text = String::new();
    for hook in [&[][..], &["--attach", "tc"]] {
        let trace_file = traces.path().join(format!("run{}.trace", hook.len()));
        // The last daemon's pings: systemd would have read them.
        notify.drain()?;
        let traced = TracedFilter::start(
            &bed.pair,
            &binary,
            &home,
            pins.path(),
            &trace_file,
            hook,
            &env,
        )?;
        assert_eq!(bed.xdp_attached()?, hook.is_empty(), "{hook:?}");
        notify.until(Duration::from_secs(10), |d| {
            d.fields().is_ok_and(|f| f.contains_key("READY"))
        })?;
        assert!(!client::preflight(&bed.pair, Family::V4, DENIED)?.answered());
        journal.until(Duration::from_secs(10), |d| {
            d.fields()
                .is_ok_and(|f| f.get("CORS_FILTER_ORIGIN").map(String::as_str) == Some(DENIED))
        })?;
        if hook.is_empty() {
            // The CLI, traced too (ExecReload runs under the same filter).
            let cli_trace = traces.path().join("cli.trace");
            for args in [&["stats", "--json"][..], &["allow", "add", ALLOWED]] {
                let mut command = Command::new("strace");
                command
                    .args(["-f", "-qq", "-s", "4096", "-o"])
                    .arg(&cli_trace)
                    .arg("--")
                    .arg(&binary)
                    .arg("--pin-dir")
                    .arg(pins.path())
                    .arg("--state-dir")
                    .arg(home.state_dir())
                    .args(args);
                let out = run_bounded(&mut command, Duration::from_secs(30))?;
                assert!(out.status.success(), "cors-filter {args:?}: {out:?}");
                cli_trace_text.push_str(&std::fs::read_to_string(&cli_trace)?);
            }
        }
        let trace = traced.stop()?;
        daemon.syscalls.extend(trace.syscalls);
        daemon.written.extend(trace.written);
        daemon.proc_paths.extend(trace.proc_paths);
    }
    let cli = parse_trace(&cli_trace_text, &binary);

    for (who, trace) in [("run", &daemon), ("CLI", &cli)] {
        assert!(
            trace.syscalls.contains("bpf") && trace.syscalls.len() > 20,
            "{who}: implausible trace: {:?}",
            trace.syscalls
        );
        let refused: Vec<&String> = trace.syscalls.difference(&allowed).collect();
        assert!(
            refused.is_empty(),
            "{who} makes system calls the unit's SystemCallFilter= refuses: {refused:?}"
        );
        let outside: Vec<&String> = trace
            .written
            .iter()
            .filter(|p| {
                !p.starts_with(&*pins.path().to_string_lossy())
                    && !p.starts_with(&*home.state_dir().to_string_lossy())
            })
            .collect();
        assert!(
            outside.is_empty(),
            "{who} writes outside the unit's writable paths: {outside:?}"
        );
        // ProcSubset=pid leaves only the processes' directories in /proc.
        // aya reads Ubuntu's /proc/version_signature for the kernel version
        // and takes its absence (ENOENT, as under ProcSubset=pid) to mean
        // "use uname".
        let hidden: Vec<&String> = trace
            .proc_paths
            .iter()
            .filter(|p| !is_process_path(p) && *p != "/proc/version_signature")
            .collect();
        assert!(
            hidden.is_empty(),
            "{who} uses what ProcSubset=pid hides: {hidden:?}"
        );
    }
    assert!(
        daemon
            .written
            .iter()
            .any(|p| p.ends_with(&format!("/{}", name::ALLOWLISTS[0]))),
        "no pin in {:?}",
        daemon.written
    );
    Ok(())
}
