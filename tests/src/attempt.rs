//! curl's own account of one request, failure included: its exit code, its
//! error message and how long it took. For tests in which failing is the
//! expected result, and how fast it fails is what is measured (the helpers
//! of `client` turn a failure into an error).

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use crate::{
    client::{Family, MAX_TIME},
    netns::{NetnsPair, SERVER_V4, SERVER_V6},
    process::run_bounded,
    server::PORT,
};

/// curl's exit codes.
pub const CURL_OK: i32 = 0;
/// Failure receiving network data: e.g. a connection reset by the peer.
pub const CURL_RECV_ERROR: i32 = 56;
/// `--max-time` ran out.
pub const CURL_TIMED_OUT: i32 = 28;

/// How one curl run ended.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// curl's exit code (`None` if a signal ended it).
    pub exit_code: Option<i32>,
    /// What curl printed on standard error: its error message.
    pub error: String,
    /// The HTTP status of the response, if one came.
    pub status: Option<u16>,
    /// curl's `time_total`: from its start to its end, name lookup (none:
    /// the URL holds an address), connection and failure included.
    pub total: Duration,
    /// Wall-clock time of the whole command, `ip netns exec` included.
    pub wall: Duration,
}

impl Attempt {
    /// Whether curl failed because the server side reset the connection.
    pub fn was_reset(&self) -> bool {
        self.exit_code == Some(CURL_RECV_ERROR) && self.error.contains("Connection reset by peer")
    }

    /// Whether curl gave up at `--max-time` without a response.
    pub fn timed_out(&self) -> bool {
        self.exit_code == Some(CURL_TIMED_OUT) && self.status.is_none()
    }
}

/// A CORS preflight from `origin` to the test server, as `client::preflight`
/// sends it, bounded by [`MAX_TIME`], whatever its outcome.
pub fn preflight(pair: &NetnsPair, family: Family, origin: &str) -> Result<Attempt> {
    let url = match family {
        Family::V4 => format!("http://{SERVER_V4}:{PORT}/api/items"),
        Family::V6 => format!("http://[{SERVER_V6}]:{PORT}/api/items"),
    };
    let mut command = Command::new("ip");
    command
        .args([
            "netns",
            "exec",
            &pair.client,
            "curl",
            "-sS",
            "-o",
            "/dev/null",
        ])
        .args(["-w", "CURL-STATUS %{http_code} %{time_total}\n"])
        .args(["--max-time", &MAX_TIME.as_secs().to_string()])
        .args(["-X", "OPTIONS", "-H", &format!("Origin: {origin}")])
        .args(["-H", "Access-Control-Request-Method: PUT"])
        .args(["-H", "Access-Control-Request-Headers: content-type"])
        .arg(&url);
    let started = Instant::now();
    let output = run_bounded(&mut command, MAX_TIME + Duration::from_secs(5))
        .with_context(|| format!("curl {url} in namespace {}", pair.client))?;
    let wall = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let (code, total) = stdout
        .lines()
        .find_map(|l| l.strip_prefix("CURL-STATUS ")?.split_once(' '))
        .with_context(|| format!("curl {url} printed no status: {stdout:?}"))?;
    let total: f64 = total
        .trim()
        .parse()
        .with_context(|| format!("curl {url} printed time_total {total:?}"))?;
    Ok(Attempt {
        exit_code: output.status.code(),
        error: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        status: code.trim().parse::<u16>().ok().filter(|&s| s != 0),
        total: Duration::from_secs_f64(total),
        wall,
    })
}
