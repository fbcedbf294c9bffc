//! `cors-test-client` in the client namespace: preflights sent in a loop
//! while a test does something to the filter (kills it, reloads it), and
//! what came of them.

use std::{
    collections::BTreeMap,
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::{
    TempDir,
    netns::{NetnsPair, SERVER_V4},
    process::{die_with_parent, wait_bounded},
    server::PORT,
};

/// What the loop got for one origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tally {
    pub sent: u64,
    pub answered: u64,
    pub unanswered: u64,
    pub reset: u64,
    pub connect_failed: u64,
}

/// A running loop; [`PreflightLoop::finish`] stops it and reads its tallies.
pub struct PreflightLoop {
    child: Option<Child>,
    dir: TempDir,
    seconds: u64,
}

impl PreflightLoop {
    /// Starts sending preflights to the server's IPv4 address, cycling
    /// through `origins`, each waiting at most `timeout` for an answer; the
    /// loop ends by itself after `seconds` at the latest.
    pub fn start(
        binary: &Path,
        pair: &NetnsPair,
        origins: &[&str],
        timeout: Duration,
        seconds: u64,
    ) -> Result<PreflightLoop> {
        let dir = TempDir::new("loop")?;
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", pair.client_ns_path()))
            .arg(binary)
            .args(["--target", &format!("{SERVER_V4}:{PORT}")])
            .args(["--seconds", &seconds.to_string()])
            .args(["--timeout-ms", &timeout.as_millis().to_string()])
            .arg("--stop-file")
            .arg(dir.path().join("stop"));
        for origin in origins {
            command.args(["--origin", origin]);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(dir.path().join("out"))?))
            .stderr(Stdio::from(std::fs::File::create(dir.path().join("err"))?));
        die_with_parent(&mut command, libc::SIGKILL);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        Ok(PreflightLoop {
            child: Some(child),
            dir,
            seconds,
        })
    }

    /// Stops the loop and returns the tally for each origin.
    pub fn finish(mut self) -> Result<BTreeMap<String, Tally>> {
        std::fs::write(self.dir.path().join("stop"), b"")?;
        let mut child = self.child.take().expect("running");
        let status = wait_bounded(
            &mut child,
            Duration::from_secs(self.seconds + 10),
            "cors-test-client",
        )?;
        let out = std::fs::read_to_string(self.dir.path().join("out"))?;
        if !status.success() {
            let err = std::fs::read_to_string(self.dir.path().join("err"))?;
            bail!("cors-test-client failed ({status}): {err}");
        }
        let summary: serde_json::Value = serde_json::from_str(out.trim())
            .with_context(|| format!("cors-test-client printed {out:?}"))?;
        let mut tallies = BTreeMap::new();
        for (origin, t) in summary.as_object().context("not an object")? {
            let n = |k: &str| t[k].as_u64().with_context(|| format!("no {k} in {t}"));
            tallies.insert(
                origin.clone(),
                Tally {
                    sent: n("sent")?,
                    answered: n("answered")?,
                    unanswered: n("unanswered")?,
                    reset: n("reset")?,
                    connect_failed: n("connect_failed")?,
                },
            );
        }
        Ok(tallies)
    }
}

impl Drop for PreflightLoop {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
