//! The Debian package and the monitoring assets (issue 16): the package
//! built by the project's packager (what `cargo xtask package` runs),
//! installed with `dpkg -i` on this machine, its files, conffiles, man
//! pages, completions, binary and unit checked, its removal seen taking a
//! real filter off its interface, then purged and nothing left; the alert
//! rules through `promtool check rules` and `promtool test rules`; every
//! metric the rules and the dashboard name found in a real `/metrics`.
//!
//! The package test refuses to run where a cors-filter is installed or
//! attached already (it would purge or detach it): it installs into this
//! machine's root and purges on the way out, on failure too.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use cors_filter_tests::{
    TempDir, cors_filter_bin,
    frames::pcap::write_pcap,
    harness::filter::{FilterHome, RunningFilter},
    harness::metrics,
    harness::netns::{NetnsPair, SERVER_IF},
    harness::process::run_bounded,
    require_root,
    system::{debian, monitoring, promtool, unit},
};

const CONFIG: &str = "ports = [8080]\nallow = [\"https://app.example.com\"]\n";

/// What the package installs besides the generated man pages of each
/// subcommand.
const INSTALLED: &[&str] = &[
    "/usr/bin/cors-filter",
    "/lib/systemd/system/cors-filter.service",
    "/etc/cors-filter.toml",
    "/etc/default/cors-filter",
    "/usr/share/man/man1/cors-filter.1.gz",
    "/usr/share/bash-completion/completions/cors-filter",
    "/usr/share/zsh/vendor-completions/_cors-filter",
    "/usr/share/fish/vendor_completions.d/cors-filter.fish",
    "/usr/share/doc/cors-filter/copyright",
    "/usr/share/doc/cors-filter/examples/cors-filter.rules.yml",
    "/usr/share/doc/cors-filter/examples/cors-filter.rules.test.yml",
    "/usr/share/doc/cors-filter/examples/grafana-dashboard.json",
    "/usr/share/doc/cors-filter/examples/daemonset.yaml",
];
const CONFFILES: &str = "/etc/cors-filter.toml\n/etc/default/cors-filter\n";
const BINARY: &str = "/usr/bin/cors-filter";
const UNIT: &str = "/lib/systemd/system/cors-filter.service";
/// What a purge removes beyond dpkg's list: the state directory.
const STATE_DIR: &str = "/var/lib/cors-filter";
/// Paths whose presence means a cors-filter of someone else's is here.
const MUST_BE_ABSENT: &[&str] = &[
    BINARY,
    "/etc/cors-filter.toml",
    "/etc/default/cors-filter",
    STATE_DIR,
    "/sys/fs/bpf/cors-filter",
];

fn run(command: &mut Command) -> Result<std::process::Output> {
    run_bounded(command, Duration::from_secs(60))
}

/// Stdout of `command`, which must succeed with nothing on stderr.
fn quiet_ok(command: &mut Command) -> Result<String> {
    let shown = format!("{command:?}");
    let out = run(command)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !stderr.trim().is_empty() {
        bail!("{shown} ({}) printed on stderr:\n{stderr}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The subcommands `cors-filter --help` lists (`help` aside).
fn subcommands() -> Result<Vec<String>> {
    let help = quiet_ok(Command::new(BINARY).arg("--help"))?;
    let listed: Vec<String> = help
        .lines()
        .skip_while(|l| l.trim() != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_owned)
        .collect();
    if listed.is_empty() {
        bail!("no subcommands in {BINARY} --help:\n{help}");
    }
    Ok(listed)
}

/// Every man page renders with groff's warnings all on (`-ww`) and none
/// printed; the page of `run` documents its options.
fn check_man_pages(listed: &[String]) -> Result<()> {
    let pages: Vec<&String> = listed
        .iter()
        .filter(|p| p.starts_with("/usr/share/man/man1/") && p.ends_with(".1.gz"))
        .collect();
    for page in &pages {
        let roff = run(Command::new("zcat").arg(page))?;
        let scratch = TempDir::new("man")?;
        let plain = scratch.path().join("page.1");
        std::fs::write(&plain, &roff.stdout)?;
        quiet_ok(
            Command::new("groff")
                .args(["-man", "-ww", "-z", "-Tutf8"])
                .arg(&plain),
        )
        .with_context(|| format!("{page} does not render cleanly"))?;
    }
    let run_page = quiet_ok(
        Command::new("man")
            .args([
                "--warnings",
                "-P",
                "cat",
                "-l",
                "/usr/share/man/man1/cors-filter-run.1.gz",
            ])
            .env("MANWIDTH", "100"),
    )?;
    for option in ["--iface", "--metrics-listen", "--detach-on-exit"] {
        if !run_page.contains(option) {
            bail!("cors-filter-run(1) does not document {option}:\n{run_page}");
        }
    }
    Ok(())
}

/// The completions are where each shell looks for them, and load.
fn check_completions() -> Result<()> {
    let home = TempDir::new("shell-home")?;
    let bash = "/usr/share/bash-completion/completions/cors-filter";
    quiet_ok(Command::new("bash").args(["-n", bash]))?;
    let complete = quiet_ok(
        Command::new("bash")
            .args(["-c", &format!("source {bash} && complete -p cors-filter")])
            .env("HOME", home.path()),
    )?;
    if !complete.trim_end().ends_with(" cors-filter") {
        bail!("bash: complete -p cors-filter says {complete:?}");
    }
    // zsh finds it by itself in its vendor directory: compinit maps the
    // command to the function.
    let zsh = quiet_ok(
        Command::new("zsh")
            .args([
                "-fc",
                "autoload -Uz compinit && compinit -u -D && print -r -- ${_comps[cors-filter]}",
            ])
            .env("HOME", home.path()),
    )?;
    if zsh.trim() != "_cors-filter" {
        bail!("zsh: cors-filter completes with {zsh:?}, not _cors-filter");
    }
    // fish too, from its vendor directory (which `--no-config` would
    // leave out of its path); and it completes subcommands.
    let fish = quiet_ok(
        Command::new("fish")
            .args(["-c", "complete --do-complete 'cors-filter '"])
            .env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path().join("config"))
            .env("XDG_DATA_HOME", home.path().join("data")),
    )?;
    let offered: Vec<&str> = fish.lines().filter_map(|l| l.split('\t').next()).collect();
    for sub in subcommands()? {
        if !offered.contains(&sub.as_str()) {
            bail!("fish does not offer `cors-filter {sub}`: {offered:?}");
        }
    }
    Ok(())
}

fn refuse_if_not_ours() -> Result<()> {
    if let Some(status) = debian::status()? {
        bail!("a cors-filter package is on this machine ({status}): the test would purge it");
    }
    for path in MUST_BE_ABSENT {
        if Path::new(path).exists() {
            bail!(
                "{path} exists: the test installs and purges the package here, and would remove it"
            );
        }
    }
    Ok(())
}

#[test]
fn the_package_installs_works_detaches_on_removal_and_purges_without_a_trace() -> Result<()> {
    require_root()?;
    refuse_if_not_ours()?;
    let out = TempDir::new("deb")?;
    let deb = debian::build(&cors_filter_bin()?, out.path())?;
    let (installed, said) = debian::Installed::install(&deb)?;
    // A first install starts nothing, and says what to do.
    assert!(
        said.contains("installed, not started"),
        "dpkg -i said:\n{said}"
    );

    // The files.
    let listed = debian::listed_paths()?;
    let mut expected: Vec<String> = INSTALLED.iter().map(|p| p.to_string()).collect();
    expected.extend(
        subcommands()?
            .iter()
            .map(|s| format!("/usr/share/man/man1/cors-filter-{s}.1.gz")),
    );
    for path in &expected {
        assert!(listed.contains(path), "dpkg -L lacks {path}: {listed:#?}");
        assert!(Path::new(path).is_file(), "{path} is not installed");
    }

    // The conffiles: the config and the defaults, with their checksums.
    let conffiles = std::fs::read_to_string("/var/lib/dpkg/info/cors-filter.conffiles")
        .context("dpkg has no conffiles list for cors-filter")?;
    assert_eq!(conffiles, CONFFILES);
    let recorded =
        quiet_ok(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", debian::PACKAGE]))?;
    for conffile in CONFFILES.lines() {
        assert!(
            recorded
                .lines()
                .any(|l| l.trim().starts_with(&format!("{conffile} "))
                    && l.trim().len() > conffile.len() + 30),
            "dpkg-query records no checksum for {conffile}: {recorded:?}"
        );
    }

    check_man_pages(&listed)?;
    check_completions()?;

    // The binary runs, at the package's version.
    let version =
        quiet_ok(Command::new("dpkg-query").args(["-W", "-f=${Version}", debian::PACKAGE]))?;
    let said = quiet_ok(Command::new(BINARY).arg("--version"))?;
    assert_eq!(said.trim(), format!("cors-filter {version}"));

    // The example config loads: replay of an empty capture under it.
    let capture = out.path().join("empty.pcap");
    write_pcap(&capture, &[])?;
    let replayed = run(Command::new(BINARY)
        .args(["replay", "--config", "/etc/cors-filter.toml"])
        .arg(&capture))?;
    assert!(
        replayed.status.success(),
        "replay under the installed example config failed: {}",
        String::from_utf8_lossy(&replayed.stderr)
    );

    // The installed unit, as systemd reads it, runs the installed binary.
    let installed_unit = unit::Unit {
        path: PathBuf::from(UNIT),
        text: std::fs::read_to_string(UNIT)?,
    };
    for exec in ["ExecStart", "ExecReload"] {
        let line = installed_unit.service_values(exec);
        assert!(
            line.iter().all(|l| l.starts_with(&format!("{BINARY} "))),
            "{exec}= of the installed unit: {line:?}"
        );
    }
    unit::verify(&installed_unit, Path::new(BINARY))?;

    // A filter attached with its daemon stopped, at the pins the service
    // would use (named in /etc/default/cors-filter, as the README says),
    // and state in the package's state directory.
    let pair = NetnsPair::create()?;
    let home = FilterHome::new(CONFIG)?;
    let mut filter = RunningFilter::start(&pair, &home, &[])?;
    filter.stop_process()?;
    let pins = filter.pin_dir().to_owned();
    let attached = || {
        pair.link_show(&pair.server, SERVER_IF)
            .map(|l| l.contains("xdp"))
    };
    assert!(
        attached()?,
        "the filter is not attached after its daemon stopped"
    );
    let mut defaults = std::fs::read_to_string("/etc/default/cors-filter")?;
    defaults.push_str(&format!("CORS_FILTER_PIN_DIR={}\n", pins.display()));
    std::fs::write("/etc/default/cors-filter", &defaults)?;
    // Installed again (as an upgrade is): the edited conffile is kept, and
    // the first-install note is not repeated.
    let said = debian::dpkg_ok(&["-i", deb.to_str().context("the .deb's path is not UTF-8")?])?;
    assert!(
        !said.contains("installed, not started"),
        "dpkg -i again said:\n{said}"
    );
    assert_eq!(
        std::fs::read_to_string("/etc/default/cors-filter")?,
        defaults
    );
    std::fs::create_dir(STATE_DIR)?;
    std::fs::write(Path::new(STATE_DIR).join("allowlist-changes.json"), "[]")?;

    let said = installed.purge()?;
    assert!(
        said.contains("detached from"),
        "the removal did not detach the filter:\n{said}"
    );
    assert!(
        !pins.exists(),
        "{} is left after the removal",
        pins.display()
    );
    assert!(
        !attached()?,
        "the filter is still attached after the removal"
    );

    // Nothing left: files, conffiles, state, dpkg's records.
    for path in listed.iter().filter(|p| !Path::new(p).is_dir()) {
        assert!(!Path::new(path).exists(), "{path} is left after the purge");
    }
    for path in expected.iter().chain([
        &STATE_DIR.to_owned(),
        &"/usr/share/doc/cors-filter".to_owned(),
    ]) {
        assert!(!Path::new(path).exists(), "{path} is left after the purge");
    }
    assert_eq!(debian::status()?, None, "dpkg still knows the package");
    assert_eq!(
        debian::info_files()?,
        Vec::<PathBuf>::new(),
        "dpkg's records are left"
    );
    Ok(())
}

#[test]
fn the_alert_rules_pass_promtool_check_and_their_tests() -> Result<()> {
    let checked = promtool::check_rules(&monitoring::rules())?;
    assert!(checked.contains("rules found"), "{checked}");
    promtool::test_rules(&monitoring::rules_tests())?;
    Ok(())
}

#[test]
fn every_metric_of_the_rules_and_the_dashboard_is_on_a_real_metrics_endpoint() -> Result<()> {
    require_root()?;
    let in_rules = monitoring::names_in_rules()?;
    let in_dashboard = monitoring::names_in_dashboard()?;
    // Enough names found that a broken parse cannot pass for a clean one.
    assert!(in_rules.len() >= 10, "rules name only {in_rules:?}");
    assert!(
        in_dashboard.len() >= 20,
        "the dashboard names only {in_dashboard:?}"
    );

    let pair = NetnsPair::create()?;
    let home = FilterHome::new(CONFIG)?;
    let filter = RunningFilter::start(&pair, &home, &[])?;
    let exported = metrics::families(&filter.metrics()?);
    for (what, names) in [("the rules", &in_rules), ("the dashboard", &in_dashboard)] {
        let missing: Vec<&String> = names.difference(&exported).collect();
        assert!(
            missing.is_empty(),
            "{what} name series that /metrics does not export: {missing:?}; exported: {exported:?}"
        );
    }
    filter.stop()
}
