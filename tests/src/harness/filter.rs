//! `cors-filter run` attached to the server side of a [`NetnsPair`], and
//! its CLI pointed at the same pins and state.

use std::{
    collections::BTreeMap,
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    TempDir, cors_filter_bin, existing_binary,
    harness::metrics::{self, Metrics},
    harness::netns::{NetnsPair, SERVER_IF, left_by_dead_run},
    harness::process::{Guarded, die_with_parent, run_bounded},
    system::systemd::stream_id,
    unique_suffix,
};

pub const METRICS_PORT: u16 = 9186;
const READY_LIMIT: Duration = Duration::from_secs(60);

/// The config file and the state directory of a filter; they outlive a
/// filter process, as they do across a restart.
pub struct FilterHome {
    dir: TempDir,
}

impl FilterHome {
    pub fn new(config_toml: &str) -> Result<FilterHome> {
        let dir = TempDir::new("home")?;
        std::fs::write(dir.path().join("config.toml"), config_toml)?;
        Ok(FilterHome { dir })
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}

/// What a filter's environment gets besides the test's own, as systemd
/// would set it for a service.
#[derive(Clone, Debug, Default)]
pub struct FilterEnv {
    pub vars: Vec<(String, String)>,
    /// `JOURNAL_STREAM` set to the device and inode of the file that is the
    /// daemon's stderr, as when stderr is the journal.
    pub journal_stream: bool,
}

impl FilterEnv {
    /// Sets the variables on `command`, whose stderr is `stderr`. Those
    /// systemd sets are removed first: a test run as a service must not
    /// pass its own on.
    pub fn apply(&self, command: &mut Command, stderr: &std::fs::File) -> Result<()> {
        for var in [
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
            "WATCHDOG_PID",
            "JOURNAL_STREAM",
        ] {
            command.env_remove(var);
        }
        command.envs(self.vars.iter().map(|(k, v)| (k, v)));
        if self.journal_stream {
            command.env("JOURNAL_STREAM", stream_id(stderr)?);
        }
        Ok(())
    }
}

/// A running `cors-filter run`, stopped and its pins removed on drop
/// (which detaches the program: a link goes once its last pin does).
pub struct RunningFilter {
    /// `None` only before the first start.
    process: Option<Guarded>,
    binary: PathBuf,
    pin_dir: PathBuf,
    state_dir: PathBuf,
    config: PathBuf,
    server_ns: String,
    server_ns_path: String,
    args: Vec<String>,
    env: FilterEnv,
    log: PathBuf,
}

const PIN_PREFIX: &str = "cors-filter-test-";

fn pin_dir_for_test() -> PathBuf {
    sweep_stale_pin_dirs();
    PathBuf::from(format!("/sys/fs/bpf/{PIN_PREFIX}{}", unique_suffix()))
}

/// Removes the pin directories of test processes that died without cleaning
/// up (killed, or interrupted with Ctrl-C): `cors-filter-test-<pid>-<n>`
/// whose `<pid>` no longer runs. Once per process.
fn sweep_stale_pin_dirs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let Ok(entries) = std::fs::read_dir("/sys/fs/bpf") else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if left_by_dead_run(&name, &[PIN_PREFIX]) {
                let _ = remove_pin_dir(&entry.path());
            }
        }
    });
}

/// The arguments of `cors-filter run` on the server interface, after the
/// binary: `--pin-dir P --state-dir S run --iface veth-s --config C`.
pub fn run_arguments(pin_dir: &Path, state_dir: &Path, config: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "--pin-dir".into(),
        pin_dir.into(),
        "--state-dir".into(),
        state_dir.into(),
    ];
    args.extend(["run", "--iface", SERVER_IF, "--config"].map(OsString::from));
    args.push(config.into());
    args
}

/// A counter of `stats --json`.
pub fn counter(stats: &serde_json::Value, name: &str) -> u64 {
    stats[name]
        .as_u64()
        .unwrap_or_else(|| panic!("stats has no counter {name}: {stats}"))
}

/// `cors-filter run` on the server interface, in the server's network
/// namespace only: the mount namespace, and so bpffs and the pins, stay
/// shared with the CLI run from here.
fn run_command(
    server_ns_path: &str,
    binary: &Path,
    pin_dir: &Path,
    state_dir: &Path,
    config: &Path,
    args: &[impl AsRef<std::ffi::OsStr>],
) -> Command {
    let mut command = Command::new("nsenter");
    command
        .arg(format!("--net={server_ns_path}"))
        .arg(binary)
        .args(run_arguments(pin_dir, state_dir, config))
        .args(args);
    command
}

/// Runs `cors-filter run` with `config` and returns its output; for
/// configurations that must be refused.
pub fn run_expecting_exit(
    pair: &NetnsPair,
    home: &FilterHome,
    config: &Path,
    args: &[&str],
) -> Result<Output> {
    let pin_dir = pin_dir_for_test();
    let output = run_with_pins(pair, home, config, &pin_dir, args);
    let _ = remove_pin_dir(&pin_dir);
    output
}

/// Runs `cors-filter run` with the given pin directory until it exits
/// (bounded); for runs that must be refused.
pub fn run_with_pins(
    pair: &NetnsPair,
    home: &FilterHome,
    config: &Path,
    pin_dir: &Path,
    args: &[&str],
) -> Result<Output> {
    run_binary_with_pins(&cors_filter_bin()?, pair, home, config, pin_dir, args, &[])
}

/// [`run_with_pins`] with the `cors-filter` binary at `binary`, and `envs`
/// in its environment.
pub fn run_binary_with_pins(
    binary: &Path,
    pair: &NetnsPair,
    home: &FilterHome,
    config: &Path,
    pin_dir: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
) -> Result<Output> {
    let mut command = run_command(
        &pair.server_ns_path(),
        binary,
        pin_dir,
        &home.state_dir(),
        config,
        args,
    );
    command.envs(envs.iter().copied());
    run_bounded(&mut command, Duration::from_secs(30))
}

/// Runs `binary --pin-dir PIN_DIR --state-dir STATE_DIR ARGS` to its end
/// (bounded): a subcommand against those pins and state, with or without
/// a filter running.
pub fn cli_at(binary: &Path, pin_dir: &Path, state_dir: &Path, args: &[&str]) -> Result<Output> {
    let mut command = Command::new(binary);
    command
        .arg("--pin-dir")
        .arg(pin_dir)
        .arg("--state-dir")
        .arg(state_dir)
        .args(args);
    run_bounded(&mut command, Duration::from_secs(30))
}

/// Removes a test pin directory and whatever is pinned in it; a link whose
/// last pin goes is detached.
pub fn remove_pin_dir(pin_dir: &Path) -> Result<()> {
    if let Ok(entries) = std::fs::read_dir(pin_dir) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        std::fs::remove_dir(pin_dir)
            .with_context(|| format!("cannot remove {}", pin_dir.display()))?;
    }
    Ok(())
}

impl RunningFilter {
    /// Starts the filter on the server interface with `home`'s config and
    /// waits until its metrics endpoint answers (it does once attached).
    pub fn start(pair: &NetnsPair, home: &FilterHome, args: &[&str]) -> Result<RunningFilter> {
        RunningFilter::start_with(&cors_filter_bin()?, pair, home, args)
    }

    /// [`RunningFilter::start`] with the `cors-filter` binary at `binary`.
    pub fn start_with(
        binary: &Path,
        pair: &NetnsPair,
        home: &FilterHome,
        args: &[&str],
    ) -> Result<RunningFilter> {
        RunningFilter::start_in(binary, &pair.server, home, args)
    }

    /// [`RunningFilter::start_with`] in network namespace `server_ns`, on
    /// its interface [`SERVER_IF`] (a namespace of a test bed with more
    /// than two namespaces names its filtered interface so too).
    pub fn start_in(
        binary: &Path,
        server_ns: &str,
        home: &FilterHome,
        args: &[&str],
    ) -> Result<RunningFilter> {
        RunningFilter::start_with_env(binary, server_ns, home, args, FilterEnv::default())
    }

    /// [`RunningFilter::start_in`] with `env` added to its environment.
    pub fn start_with_env(
        binary: &Path,
        server_ns: &str,
        home: &FilterHome,
        args: &[&str],
        env: FilterEnv,
    ) -> Result<RunningFilter> {
        let binary = existing_binary(binary.to_owned())?;
        let log = home
            .dir
            .path()
            .join(format!("filter-{}.log", unique_suffix()));
        let mut filter = RunningFilter {
            process: None,
            binary,
            pin_dir: pin_dir_for_test(),
            state_dir: home.state_dir(),
            config: home.config(),
            server_ns: server_ns.to_owned(),
            server_ns_path: format!("/run/netns/{server_ns}"),
            args: args.iter().map(|a| a.to_string()).collect(),
            env,
            log,
        };
        filter.spawn()?;
        Ok(filter)
    }

    /// Starts `cors-filter run` (again) with this filter's pins, state,
    /// config and arguments, and waits until its metrics endpoint answers
    /// (it does once the program is attached).
    fn spawn(&mut self) -> Result<()> {
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let metrics = format!("127.0.0.1:{METRICS_PORT}");
        let mut command = run_command(
            &self.server_ns_path,
            &self.binary,
            &self.pin_dir,
            &self.state_dir,
            &self.config,
            &self.args,
        );
        // A test may choose the address; the readiness check below fetches
        // 127.0.0.1, which an unspecified address covers too.
        if !self.args.iter().any(|a| a == "--metrics-listen") {
            command.args(["--metrics-listen", &metrics]);
        }
        self.env.apply(&mut command, &log_file)?;
        command
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        die_with_parent(&mut command, libc::SIGTERM);
        let child = command.spawn().with_context(|| {
            format!(
                "cannot start {} in namespace {} (is util-linux's nsenter installed?)",
                self.binary.display(),
                self.server_ns
            )
        })?;
        let process = self.process.insert(Guarded {
            child,
            name: "cors-filter run".into(),
        });
        let (server_ns, log) = (&self.server_ns, &self.log);
        process.wait_ready(
            READY_LIMIT,
            Duration::from_millis(100),
            || Ok(metrics::fetch(server_ns, METRICS_PORT).is_ok()),
            || std::fs::read_to_string(log).unwrap_or_default(),
        )
    }

    /// Kills the daemon with SIGKILL, as a crash or the OOM killer would;
    /// the pins stay.
    pub fn kill(&mut self) -> Result<()> {
        self.process_mut()?.kill()
    }

    fn process_mut(&mut self) -> Result<&mut Guarded> {
        self.process
            .as_mut()
            .context("cors-filter run was never started")
    }

    /// Starts the daemon again on the same pins and state.
    pub fn restart(&mut self) -> Result<()> {
        if self.process_mut()?.exited().is_none() {
            bail!("cors-filter run is still running");
        }
        self.spawn()
    }

    /// Whether the daemon is still running (it has not exited).
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(|p| p.exited().is_none())
    }

    /// Sends the daemon a signal.
    pub fn signal(&mut self, signal: libc::c_int) -> Result<()> {
        self.process_mut()?.signal(signal)
    }

    /// What the filter has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// Makes the next [`RunningFilter::restart`] (and [`RunningFilter::cli`])
    /// use the `cors-filter` binary at `binary`: another version's.
    pub fn use_binary(&mut self, binary: &Path) -> Result<()> {
        self.binary = existing_binary(binary.to_owned())?;
        Ok(())
    }

    /// Makes the next [`RunningFilter::restart`] pass `args` to `run`.
    pub fn use_args(&mut self, args: &[&str]) {
        self.args = args.iter().map(|a| a.to_string()).collect();
    }

    /// The process id of `cors-filter run` (nsenter execs it in place).
    pub fn pid(&self) -> Result<u32> {
        Ok(self
            .process
            .as_ref()
            .context("cors-filter run was never started")?
            .child
            .id())
    }

    /// Runs a `cors-filter` subcommand against this filter's pins and state.
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        cli_at(&self.binary, &self.pin_dir, &self.state_dir, args)
    }

    /// Runs a subcommand that must succeed; returns its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.cli(args)?;
        if !out.status.success() {
            bail!(
                "cors-filter {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `cors-filter stats --json`.
    pub fn stats(&self) -> Result<serde_json::Value> {
        let text = self.cli_ok(&["stats", "--json"])?;
        serde_json::from_str(&text).with_context(|| format!("stats --json printed {text:?}"))
    }

    /// The Prometheus text from `/metrics`, fetched inside the server namespace.
    pub fn metrics(&self) -> Result<String> {
        metrics::fetch(&self.server_ns, METRICS_PORT)
    }

    /// `/metrics` as `series -> value` (`name{labels}` keys).
    pub fn metric_values(&self) -> Result<Metrics> {
        Ok(metrics::parse(&self.metrics()?))
    }

    /// The denials the daemon has counted per origin
    /// (`cors_filter_denied_by_origin_total`), once `done` holds of them:
    /// it reads the events after the program wrote them. Fails after
    /// `limit`, showing the counts.
    pub fn wait_denied_by_origin(
        &self,
        limit: Duration,
        done: impl Fn(&BTreeMap<String, u64>) -> bool,
    ) -> Result<BTreeMap<String, u64>> {
        let deadline = Instant::now() + limit;
        loop {
            let by_origin = metrics::by_label(
                &self.metric_values()?,
                "cors_filter_denied_by_origin_total",
                "origin",
            );
            if done(&by_origin) {
                return Ok(by_origin);
            }
            if Instant::now() > deadline {
                bail!("the per-origin denial counts stay at {by_origin:?} after {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `done` holds, checking every 20 ms; returns how long it
    /// took. Fails after `limit`, saying `what` was awaited and showing the
    /// daemon's log.
    pub fn wait_until(
        &self,
        limit: Duration,
        what: &str,
        mut done: impl FnMut() -> Result<bool>,
    ) -> Result<Duration> {
        let began = Instant::now();
        loop {
            if done()? {
                return Ok(began.elapsed());
            }
            if began.elapsed() > limit {
                bail!("{what}: not after {limit:?}:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the daemon with SIGTERM; fails unless it exits cleanly. The
    /// pins (and so the attached program) stay until this is dropped.
    pub fn stop_process(&mut self) -> Result<()> {
        let clean = self.process_mut()?.stop(Duration::from_secs(10));
        if !clean {
            bail!(
                "cors-filter run did not exit cleanly on SIGTERM:\n{}",
                self.log()
            );
        }
        Ok(())
    }

    /// [`RunningFilter::stop_process`], then the cleanup of drop.
    pub fn stop(mut self) -> Result<()> {
        self.stop_process()
    }
}

impl Drop for RunningFilter {
    fn drop(&mut self) {
        if let Some(process) = self.process.as_mut() {
            process.stop(Duration::from_secs(10));
        }
        let _ = remove_pin_dir(&self.pin_dir);
    }
}
