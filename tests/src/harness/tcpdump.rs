//! tcpdump on an interface of a test's namespace, writing a real capture
//! for `replay` to read. It listens only; stopped (SIGTERM, which makes it
//! flush and close the file) when dropped.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::harness::process::{Guarded, die_with_parent};

const READY_LIMIT: Duration = Duration::from_secs(10);
/// The file is taken as complete when it has not grown for this long...
const SETTLED_AFTER: Duration = Duration::from_millis(500);
/// ...or after this long in all.
const SETTLE_LIMIT: Duration = Duration::from_secs(5);

pub struct Tcpdump {
    process: Guarded,
    file: PathBuf,
    log: PathBuf,
}

impl Tcpdump {
    /// Captures whole frames on `iface` in the namespace at `ns_path` (a
    /// path for `nsenter --net=`) into `file`, and returns once tcpdump
    /// listens.
    pub fn start(ns_path: &str, iface: &str, file: &Path) -> Result<Tcpdump> {
        let log = file.with_extension("log");
        let log_file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={ns_path}"))
            .args([
                "tcpdump",
                "--immediate-mode",
                "-i",
                iface,
                "-s",
                "0",
                "-U",
                "-n",
                "-w",
            ])
            .arg(file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        die_with_parent(&mut command, libc::SIGTERM);
        let child = command
            .spawn()
            .context("cannot start tcpdump (is it installed? `cargo xtask setup` installs it)")?;
        let mut tcpdump = Tcpdump {
            process: Guarded {
                child,
                name: "tcpdump".into(),
            },
            file: file.to_owned(),
            log,
        };
        let log = &tcpdump.log;
        let read_log = || std::fs::read_to_string(log).unwrap_or_default();
        tcpdump.process.wait_ready(
            READY_LIMIT,
            Duration::from_millis(20),
            || Ok(read_log().contains("listening on")),
            read_log,
        )?;
        Ok(tcpdump)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the capture once the file has stopped growing (tcpdump drops
    /// what it has not written yet when it is stopped); the file is complete
    /// once this returns.
    pub fn stop(mut self) -> Result<()> {
        let size = || std::fs::metadata(&self.file).map(|m| m.len()).unwrap_or(0);
        let deadline = Instant::now() + SETTLE_LIMIT;
        let mut last = size();
        loop {
            std::thread::sleep(SETTLED_AFTER);
            let now = size();
            if now == last || Instant::now() > deadline {
                break;
            }
            last = now;
        }
        if !self.process.stop(Duration::from_secs(10)) {
            bail!("tcpdump did not stop cleanly:\n{}", self.log());
        }
        Ok(())
    }
}
