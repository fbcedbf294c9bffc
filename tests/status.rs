//! `cors-filter status` on real attachments (XDP and TC on a namespace
//! pair), `check` on the documented example and on bad configs, and the
//! exit code of each class of error, as `cors_filter_user::exit` lists
//! them: usage, config, not running, privilege, kernel refusal (a newer
//! layout's, which needs a release's pins, is in `upgrade.rs`). Needs
//! root; fails, never skips, without it.

use std::{
    path::Path,
    process::{Command, Output},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use cors_filter_tests::{
    TempDir, cors_filter_bin,
    harness::bed::Bed,
    harness::filter::{FilterHome, RunningFilter, run_expecting_exit},
    harness::netns::SERVER_IF,
    harness::process::{run_bounded, stderr_of, stdout_of},
    require_root,
    system::privileges::{PinDir, as_nobody},
};
use cors_filter_user::exit::Kind;
use serde_json::Value;

const ALLOWED: &str = "https://app.example.com";
const CONFIG: &str =
    "ports = [8080]\nallow = [\"https://app.example.com\", \"https://*.example.org\"]\n";

fn bed() -> Result<Bed> {
    require_root()?;
    Bed::new(Path::new(env!("CARGO_BIN_EXE_cors-test-server")))
}

/// Fails unless `out` exited with `kind`'s code.
fn assert_exit(out: &Output, kind: Kind, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(kind.code().into()),
        "{what}: expected the {} code; stdout {:?}, stderr {:?}",
        kind.name(),
        stdout_of(out),
        stderr_of(out)
    );
}

fn assert_success(out: &Output, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: stdout {:?}, stderr {:?}",
        stdout_of(out),
        stderr_of(out)
    );
}

/// The one JSON object a `--json` command printed on stdout.
fn json_of(out: &Output, what: &str) -> Result<Value> {
    let text = stdout_of(out);
    let mut lines = text.lines();
    let (Some(line), None) = (lines.next(), lines.next()) else {
        bail!("{what}: not one line of JSON on stdout: {text:?}");
    };
    serde_json::from_str(line).with_context(|| format!("{what}: not JSON: {line:?}"))
}

/// A `--json` failure: one JSON object on stdout naming `kind`, and the
/// same exit code; its message.
fn assert_json_error(out: &Output, kind: Kind, what: &str) -> Result<String> {
    assert_exit(out, kind, what);
    let v = json_of(out, what)?;
    assert_eq!(v["kind"], kind.name(), "{what}: {v}");
    assert_eq!(v["exit_code"], kind.code(), "{what}: {v}");
    v["error"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("{what}: no error message: {v}"))
}

fn status(filter: &RunningFilter) -> Result<Value> {
    let out = filter.cli(&["status", "--json"])?;
    assert_success(&out, "status --json");
    json_of(&out, "status --json")
}

/// What the kernel says of the link pinned at `path`: its id and the id
/// of the program it runs (`bpftool link show pinned`).
fn bpftool_link(path: &Path) -> Result<(u64, u64)> {
    let out = run_bounded(
        Command::new("bpftool")
            .args(["--json", "link", "show", "pinned"])
            .arg(path),
        Duration::from_secs(10),
    )?;
    if !out.status.success() {
        bail!(
            "bpftool link show pinned {}: {}",
            path.display(),
            stderr_of(&out)
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok((
        v["id"]
            .as_u64()
            .with_context(|| format!("no link id: {v}"))?,
        v["prog_id"]
            .as_u64()
            .with_context(|| format!("no prog_id: {v}"))?,
    ))
}

/// The interface entry of `status` for the server interface, checked
/// against the pinned link as bpftool reads it.
fn server_interface(filter: &RunningFilter, status: &Value, pin: &str) -> Result<Value> {
    let interfaces = status["interfaces"]
        .as_array()
        .with_context(|| format!("no interfaces: {status}"))?;
    assert_eq!(interfaces.len(), 1, "{status}");
    let iface = interfaces[0].clone();
    assert_eq!(iface["iface"], SERVER_IF, "{status}");
    assert_eq!(iface["attached"], true, "{status}");
    let (link_id, prog_id) = bpftool_link(&filter.pin_dir().join(pin))?;
    assert_eq!(iface["link_id"], link_id, "{status}");
    assert_eq!(iface["program_id"], prog_id, "{status}");
    Ok(iface)
}

#[test]
fn status_on_xdp_follows_reloads_edits_and_the_daemon() -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(CONFIG)?;
    let mut filter = bed.filter(&home, &["--xdp-mode", "native"])?;

    let first = status(&filter)?;
    let iface = server_interface(&filter, &first, &format!("link-{SERVER_IF}-xdp-native"))?;
    assert_eq!(iface["hook"], "xdp", "{first}");
    assert_eq!(iface["xdp_mode"], "native", "{first}");
    // The program `ip link` shows on the interface is the link's.
    let shown = bed.pair.link_show(&bed.pair.server, SERVER_IF)?;
    let program = iface["program_id"].to_string();
    assert!(
        shown.contains(&format!("prog/xdp id {program} ")),
        "ip link shows another program than {program}: {shown}"
    );
    assert_eq!(first["policy"]["mode"], "enforce", "{first}");
    assert_eq!(first["policy"]["action"], "reset-proxied", "{first}");
    assert_eq!(iface["mode"], "enforce", "{first}");
    assert_eq!(
        first["config"],
        home.config().display().to_string(),
        "{first}"
    );
    assert_eq!(first["daemon"]["alive"], true, "{first}");
    assert_eq!(first["daemon"]["pid"], filter.pid()?, "{first}");
    assert_eq!(first["connections"]["conns_capacity"], 262144, "{first}");
    assert_eq!(
        first["connections"]["open_heads_capacity"], 16384,
        "{first}"
    );
    let no_drift = serde_json::json!({ "added": [], "removed": [], "methods_changed": [] });
    assert_eq!(first["drift"], no_drift, "{first}");
    let generation = first["policy"]["generation"]
        .as_u64()
        .with_context(|| format!("no generation: {first}"))?;

    // Local edits are drift from the config.
    filter.cli_ok(&["allow", "add", "https://local.example"])?;
    filter.cli_ok(&["allow", "remove", ALLOWED])?;
    let edited = status(&filter)?;
    assert_eq!(
        edited["drift"],
        serde_json::json!({
            "added": ["https://local.example"],
            "removed": [ALLOWED],
            "methods_changed": []
        }),
        "{edited}"
    );

    // A reload installs a new generation, with the file's new mode.
    std::fs::write(
        home.config(),
        format!("{CONFIG}mode = \"monitor\"\naction = \"drop\"\n"),
    )?;
    filter.cli_ok(&["reload"])?;
    let reloaded = status(&filter)?;
    assert_eq!(
        reloaded["policy"]["generation"],
        generation + 1,
        "{reloaded}"
    );
    assert_eq!(reloaded["policy"]["mode"], "monitor", "{reloaded}");
    assert_eq!(reloaded["policy"]["action"], "drop", "{reloaded}");
    assert_eq!(reloaded["interfaces"][0]["generation"], generation + 1);

    // The table says the same.
    let table = filter.cli_ok(&["status"])?;
    for needle in [
        format!("running (pid {})", filter.pid()?),
        format!("generation {}, monitor mode, action drop", generation + 1),
        "added https://local.example; removed https://app.example.com".to_owned(),
        format!("{SERVER_IF} "),
    ] {
        assert!(table.contains(&needle), "no {needle:?} in:\n{table}");
    }

    // A config that does not load is refused with the config code, and
    // the policy stays.
    std::fs::write(home.config(), format!("{CONFIG}mode = \"loud\"\n"))?;
    let out = filter.cli(&["reload"])?;
    assert_exit(&out, Kind::Config, "reload of a bad config");
    let out = filter.cli(&["allow", "add", "https://bad example"])?;
    assert_exit(&out, Kind::Config, "allow add of a bad origin");
    let refused = status(&filter)?;
    assert_eq!(refused["policy"], reloaded["policy"], "{refused}");
    assert!(
        refused["drift_error"]
            .as_str()
            .is_some_and(|e| e.contains("loud")),
        "{refused}"
    );

    // Killed: the filter stays, the daemon is gone.
    let pid = filter.pid()?;
    filter.kill()?;
    let dead = status(&filter)?;
    assert_eq!(dead["daemon"]["alive"], false, "{dead}");
    assert_eq!(dead["daemon"]["pid"], pid, "{dead}");
    assert_eq!(dead["interfaces"][0]["attached"], true, "{dead}");
    assert!(bed.xdp_attached()?);
    let table = filter.cli_ok(&["status"])?;
    assert!(
        table.contains(&format!("not running (last pid {pid})")),
        "{table}"
    );
    Ok(())
}

#[test]
fn status_on_tc() -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(CONFIG)?;
    let filter = bed.filter(&home, &["--attach", "tc"])?;
    let now = status(&filter)?;
    let iface = server_interface(&filter, &now, &format!("link-{SERVER_IF}-tc"))?;
    assert_eq!(iface["hook"], "tc", "{now}");
    assert_eq!(iface["xdp_mode"], Value::Null, "{now}");
    assert_eq!(now["daemon"]["alive"], true, "{now}");
    filter.stop()
}

/// A pin and state directory where nothing ran, for the commands that
/// need a running filter.
fn cli_without_filter(args: &[&str]) -> Result<(Output, PinDir, TempDir)> {
    let pins = PinDir::new();
    let state = TempDir::new("status-state")?;
    let out = run_bounded(
        Command::new(cors_filter_bin()?)
            .arg("--pin-dir")
            .arg(pins.path())
            .arg("--state-dir")
            .arg(state.path().join("state"))
            .args(args),
        Duration::from_secs(30),
    )?;
    Ok((out, pins, state))
}

#[test]
fn nothing_running_has_its_code() -> Result<()> {
    require_root()?;
    for args in [
        &["status", "--json"][..],
        &["stats", "--json"],
        &["allow", "list", "--json"],
    ] {
        let (out, pins, state) = cli_without_filter(args)?;
        let what = args.join(" ");
        let message = assert_json_error(&out, Kind::NotRunning, &what)?;
        assert!(
            message.contains(&*pins.path().to_string_lossy()),
            "{what}: {message}"
        );
        assert!(out.stderr.is_empty(), "{what}: {}", stderr_of(&out));
        // Nothing was made.
        assert!(!pins.path().exists() && !state.path().join("state").exists());
    }
    for args in [&["status"][..], &["reload"], &["allow", "list"]] {
        let (out, _pins, _state) = cli_without_filter(args)?;
        let what = args.join(" ");
        assert_exit(&out, Kind::NotRunning, &what);
        assert!(
            stderr_of(&out).starts_with("cors-filter: error: "),
            "{what}: {}",
            stderr_of(&out)
        );
    }
    Ok(())
}

/// The first TOML block of README.md: the documented example config.
fn documented_example() -> Result<String> {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = std::fs::read_to_string(&readme)?;
    let start = text
        .find("```toml\n")
        .context("README.md has no TOML block")?
        + "```toml\n".len();
    let len = text[start..]
        .find("```")
        .context("unterminated TOML block")?;
    Ok(text[start..start + len].to_owned())
}

/// `cors-filter check ARGS` run as nobody: it needs no privilege.
fn check_as_nobody(args: &[&str]) -> Result<Output> {
    let mut command = as_nobody(&cors_filter_bin()?);
    command.arg("check").args(args);
    run_bounded(&mut command, Duration::from_secs(30))
}

#[test]
fn check_prints_the_documented_example_normalised() -> Result<()> {
    require_root()?;
    let dir = TempDir::new("check")?;
    let path = dir.path().join("example.toml");
    std::fs::write(&path, documented_example()?)?;
    let path_text = path.to_string_lossy();

    let out = check_as_nobody(&["--config", &path_text, "--json"])?;
    assert_success(&out, "check --json");
    let v = json_of(&out, "check --json")?;
    assert_eq!(v["mode"], "enforce", "{v}");
    assert_eq!(v["action"], "drop", "{v}");
    assert_eq!(v["max_head_bytes"], 16384, "{v}");
    assert_eq!(v["max_connections"], 262144, "{v}");
    assert_eq!(v["http2"], "drop", "{v}");
    assert_eq!(
        v["ports"],
        serde_json::json!([
            { "port": 80, "protect_unsafe_methods": false, "client_address_header": null },
            { "port": 8080, "protect_unsafe_methods": true, "client_address_header": "x-forwarded-for" }
        ]),
        "{v}"
    );
    assert_eq!(
        v["allow"],
        serde_json::json!([
            { "origin": ALLOWED, "methods": null },
            { "origin": "https://*.example.org", "methods": null },
            { "origin": "http://localhost:8080", "methods": null },
            { "origin": "https://admin.example.com", "methods": ["GET", "POST"] }
        ]),
        "{v}"
    );

    let out = check_as_nobody(&["--config", &path_text])?;
    assert_success(&out, "check");
    let text = stdout_of(&out);
    assert!(text.starts_with(&format!("{path_text}: valid\n")), "{text}");
    assert!(
        text.contains("  https://admin.example.com methods=GET,POST\n"),
        "{text}"
    );
    Ok(())
}

#[test]
fn check_refuses_bad_configs_naming_the_value() -> Result<()> {
    require_root()?;
    let dir = TempDir::new("check-bad")?;
    // The file, and what its error must name (the value, and the line).
    let cases = [
        (
            "ports = [80]\nallow = [\"https://exa mple.com\"]\n",
            "https://exa mple.com",
            ":2",
        ),
        ("ports = [70000]\n", "70000", "line 1"),
        ("ports = [80]\nmode = \"loud\"\n", "loud", "line 2"),
        (
            "ports = [80]\nmax_connections = 5\n",
            "max_connections = 5",
            ":2",
        ),
        ("ports = [80]\ncolour = 1\n", "colour", "line 2"),
        (
            "ports = [80]\nallow = [{ origin = \"https://a.example\", methods = [\"FETCH\"] }]\n",
            "FETCH",
            ":2",
        ),
    ];
    for (index, (source, value, line)) in cases.into_iter().enumerate() {
        let path = dir.path().join(format!("bad-{index}.toml"));
        std::fs::write(&path, source)?;
        let path_text = path.to_string_lossy();
        let what = format!("check {source:?}");

        let out = check_as_nobody(&["--config", &path_text, "--json"])?;
        let message = assert_json_error(&out, Kind::Config, &what)?;
        for needle in [&*path_text, value, line] {
            assert!(
                message.contains(needle),
                "{what}: no {needle:?} in {message}"
            );
        }

        let out = check_as_nobody(&["--config", &path_text])?;
        assert_exit(&out, Kind::Config, &what);
        let stderr = stderr_of(&out);
        assert!(
            stderr.starts_with("cors-filter: error: ") && stderr.contains(value),
            "{what}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{what}: {}", stdout_of(&out));
    }
    let out = check_as_nobody(&["--config", "/nonexistent/cors-filter.toml", "--json"])?;
    let message = assert_json_error(&out, Kind::Config, "missing file")?;
    assert!(
        message.contains("/nonexistent/cors-filter.toml"),
        "{message}"
    );
    Ok(())
}

#[test]
fn usage_and_privilege_errors_have_their_codes() -> Result<()> {
    require_root()?;
    let binary = cors_filter_bin()?;
    // clap's own: 2, as JSON too when --json was asked for.
    for args in [&["status", "--bogus"][..], &["check"], &["frobnicate"]] {
        let out = run_bounded(Command::new(&binary).args(args), Duration::from_secs(10))?;
        assert_exit(&out, Kind::Usage, &args.join(" "));
    }
    let out = run_bounded(
        Command::new(&binary).args(["status", "--json", "--bogus"]),
        Duration::from_secs(10),
    )?;
    let message = assert_json_error(&out, Kind::Usage, "status --json --bogus")?;
    assert!(message.contains("--bogus"), "{message}");

    // An unprivileged user, on commands that need the kernel or the pins.
    let pins = PinDir::new();
    let pin_text = pins.path().to_string_lossy();
    let mut run = as_nobody(&binary);
    run.args([
        "--pin-dir",
        &pin_text,
        "run",
        "--iface",
        "lo",
        "--config",
        "/dev/null",
    ]);
    let out = run_bounded(&mut run, Duration::from_secs(30))?;
    assert_exit(&out, Kind::Privilege, "run as nobody");
    assert!(stderr_of(&out).contains("CAP_BPF"), "{}", stderr_of(&out));
    let mut status = as_nobody(&binary);
    status.args(["--pin-dir", &pin_text, "status", "--json"]);
    let out = run_bounded(&mut status, Duration::from_secs(30))?;
    let message = assert_json_error(&out, Kind::Privilege, "status --json as nobody")?;
    assert!(message.contains("needs root"), "{message}");
    assert!(!pins.path().exists());
    Ok(())
}

#[test]
fn config_and_kernel_refusals_of_run_have_their_codes() -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(CONFIG)?;

    // An interface that does not exist is a config error.
    let out = run_expecting_exit(&bed.pair, &home, &home.config(), &["--iface", "nosuch0"])?;
    assert_exit(&out, Kind::Config, "run --iface nosuch0");
    assert!(stderr_of(&out).contains("nosuch0"), "{}", stderr_of(&out));

    // Native XDP on loopback, whose driver has none: the kernel refuses
    // the attach (EOPNOTSUPP), after the attach to the veth succeeded.
    let out = run_expecting_exit(&bed.pair, &home, &home.config(), &["--iface", "lo"])?;
    assert_exit(&out, Kind::KernelRefused, "run --iface lo (native XDP)");
    let stderr = stderr_of(&out);
    assert!(
        stderr.contains("cannot attach XDP (Driver mode) to interface lo"),
        "{stderr}"
    );
    Ok(())
}
