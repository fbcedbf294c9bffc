//! `cors-filter replay` on frames a test made: they are written to a capture
//! file, the real program runs on each (BPF_PROG_TEST_RUN, attached
//! nowhere: nothing is sent on any interface), and its JSON lines are read
//! back.

use std::{
    fs::File,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::{TempDir, cors_filter_bin, frames::pcap, harness::process::wait_bounded};

/// Longer than any replay in the suite takes (the largest, over 100,000
/// frames, takes a few seconds).
const REPLAY_LIMIT: Duration = Duration::from_secs(300);

/// One line of `replay`'s output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replayed {
    pub index: u64,
    pub verdict: String,
    pub reason: String,
    /// The denial event the frame made, if any.
    pub event: Option<ReplayedEvent>,
}

/// The denial event of a frame, as `replay` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayedEvent {
    pub reason: String,
    /// The packet's source address and port.
    pub source: String,
    /// The client the connection's PROXY header named.
    pub client: Option<String>,
    /// The client the port's trusted client header named.
    pub forwarded: Option<String>,
}

/// Checks that the kernel's answer for a frame (`line`) is the model's
/// (`judged`): the same verdict and reason; `what` names the frame.
pub fn assert_agrees(line: &Replayed, judged: &crate::oracles::stream_model::Judged, what: &str) {
    let verdict = format!("{:?}", judged.verdict).to_lowercase();
    let reason = judged.outcome.replay_reason().name();
    assert_eq!(
        (line.verdict.as_str(), line.reason.as_str()),
        (verdict.as_str(), reason),
        "frame {} ({what}): the kernel and the model differ",
        line.index,
    );
}

/// What a `replay` run printed and how it ended.
pub struct ReplayRun {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl ReplayRun {
    /// The JSON lines, checked for the documented shape and order.
    pub fn lines(&self) -> Result<Vec<Replayed>> {
        if !self.success {
            bail!("cors-filter replay failed:\n{}", self.stderr);
        }
        let mut out = Vec::new();
        for (n, line) in self.stdout.lines().enumerate() {
            let value: serde_json::Value = serde_json::from_str(line)
                .with_context(|| format!("replay line {n} is not JSON: {line}"))?;
            let object = value
                .as_object()
                .with_context(|| format!("replay line {n} is not an object: {line}"))?;
            let known = ["index", "verdict", "reason", "event"];
            if object.len() < 3 || object.keys().any(|k| !known.contains(&k.as_str())) {
                bail!(
                    "replay line {n} has other keys than index, verdict, reason[, event]: {line}"
                );
            }
            let text = |key: &str| {
                object
                    .get(key)
                    .and_then(|v| v.as_str())
                    .map(str::to_owned)
                    .with_context(|| format!("replay line {n} has no string {key}: {line}"))
            };
            let replayed = Replayed {
                index: object
                    .get("index")
                    .and_then(|v| v.as_u64())
                    .with_context(|| format!("replay line {n} has no index: {line}"))?,
                verdict: text("verdict")?,
                reason: text("reason")?,
                event: match object.get("event") {
                    None => None,
                    Some(event) => Some(ReplayedEvent {
                        reason: event["reason"]
                            .as_str()
                            .with_context(|| format!("replay line {n}: event without reason"))?
                            .to_owned(),
                        source: event["source"]
                            .as_str()
                            .with_context(|| format!("replay line {n}: event without source"))?
                            .to_owned(),
                        client: event["client"].as_str().map(str::to_owned),
                        forwarded: event["forwarded"].as_str().map(str::to_owned),
                    }),
                },
            };
            if replayed.index != n as u64 {
                bail!("replay line {n} has index {}", replayed.index);
            }
            if !matches!(replayed.verdict.as_str(), "pass" | "drop" | "reset") {
                bail!("replay line {n} has verdict {:?}", replayed.verdict);
            }
            out.push(replayed);
        }
        Ok(out)
    }
}

/// Runs `cors-filter replay --config CONFIG CAPTURE`, its output in files
/// (a pipe would fill up and stall it), within [`REPLAY_LIMIT`].
pub fn replay_files(config: &Path, capture: &Path) -> Result<ReplayRun> {
    run_replay(config, capture, None)
}

fn run_replay(config: &Path, capture: &Path, replies: Option<&Path>) -> Result<ReplayRun> {
    let dir = TempDir::new("replay-out")?;
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut command = Command::new(cors_filter_bin()?);
    command.arg("replay").arg("--config").arg(config);
    if let Some(replies) = replies {
        command.arg("--replies").arg(replies);
    }
    command
        .arg(capture)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path)?)
        .stderr(File::create(&err_path)?);
    let shown = format!("{command:?}");
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot run {shown}"))?;
    let status = wait_bounded(&mut child, REPLAY_LIMIT, &shown)?;
    Ok(ReplayRun {
        success: status.success(),
        stdout: std::fs::read_to_string(&out_path)?,
        stderr: std::fs::read_to_string(&err_path)?,
    })
}

/// Replays `frames` under the config `config_toml`, as a pcap capture.
/// One load of the program serves the whole capture, so each frame finds
/// the connection state the frames before it left.
pub fn replay(config_toml: &str, frames: &[Vec<u8>]) -> Result<Vec<Replayed>> {
    let dir = TempDir::new("replay")?;
    let (config, capture) = (
        dir.path().join("config.toml"),
        dir.path().join("frames.pcap"),
    );
    std::fs::write(&config, config_toml)?;
    pcap::write_pcap(&capture, frames)?;
    let lines = run_replay(&config, &capture, None)?.lines()?;
    if lines.len() != frames.len() {
        bail!(
            "replay printed {} lines for {} frames",
            lines.len(),
            frames.len()
        );
    }
    Ok(lines)
}

/// Replays `frames` under `config_toml` as [`replay`] does, with `--replies`:
/// also returns the frames the program sent back, one per `reset` line.
pub fn replay_with_replies(
    config_toml: &str,
    frames: &[Vec<u8>],
) -> Result<(Vec<Replayed>, Vec<Vec<u8>>)> {
    let dir = TempDir::new("replay")?;
    let (config, capture, replies) = (
        dir.path().join("config.toml"),
        dir.path().join("frames.pcap"),
        dir.path().join("replies.pcap"),
    );
    std::fs::write(&config, config_toml)?;
    pcap::write_pcap(&capture, frames)?;
    let lines = run_replay(&config, &capture, Some(&replies))?.lines()?;
    if lines.len() != frames.len() {
        bail!(
            "replay printed {} lines for {} frames",
            lines.len(),
            frames.len()
        );
    }
    let replies = pcap::read_pcap(&replies)?;
    let resets = lines.iter().filter(|l| l.verdict == "reset").count();
    if replies.len() != resets {
        bail!(
            "replay wrote {} replies for {resets} reset verdicts",
            replies.len()
        );
    }
    Ok((lines, replies))
}
