//! curl's own account of one request, failure included: its exit code, its
//! error message and how long it took. For tests in which failing is the
//! expected result, and how fast it fails is what is measured. (`client::request`
//! gives one too; the other helpers of `client` turn a failure into an error.)

use std::time::Duration;

use anyhow::Result;

use crate::{
    harness::client::{CurlRun, Family, PREFLIGHT_PATH, preflight_args, run_curl},
    harness::netns::NetnsPair,
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
    /// The header lines of the last response head curl received (none
    /// without a response).
    pub headers: Vec<String>,
}

impl Attempt {
    /// How `run` ended.
    pub(crate) fn of(run: &CurlRun) -> Attempt {
        Attempt {
            exit_code: run.output.status.code(),
            error: String::from_utf8_lossy(&run.output.stderr)
                .trim()
                .to_owned(),
            status: Some(run.http_code).filter(|&s| s != 0),
            total: run.total,
            wall: run.wall,
            headers: last_head(&String::from_utf8_lossy(&run.output.stdout)),
        }
    }

    /// The value of the response header `name` (any case), if one came.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|h| {
            let (n, v) = h.split_once(':')?;
            n.eq_ignore_ascii_case(name).then_some(v.trim())
        })
    }

    /// Whether curl failed because the server side reset the connection.
    pub fn was_reset(&self) -> bool {
        self.exit_code == Some(CURL_RECV_ERROR) && self.error.contains("Connection reset by peer")
    }

    /// One line for humans: `HTTP 200`, or how it failed.
    pub fn describe(&self) -> String {
        match self.status {
            Some(status) => format!("HTTP {status}"),
            None if self.timed_out() => format!(
                "no response within {}s (dropped)",
                crate::harness::client::MAX_TIME.as_secs()
            ),
            None if self.was_reset() => "connection reset".to_owned(),
            None => format!("no response: {}", self.error),
        }
    }

    /// Whether curl gave up at `--max-time` without a response.
    pub fn timed_out(&self) -> bool {
        self.exit_code == Some(CURL_TIMED_OUT) && self.status.is_none()
    }
}

/// A CORS preflight from `origin` to the test server, as `client::preflight`
/// sends it, bounded by [`MAX_TIME`](crate::harness::client::MAX_TIME), whatever its
/// outcome.
pub fn preflight(pair: &NetnsPair, family: Family, origin: &str) -> Result<Attempt> {
    let args = preflight_args(origin);
    let run = run_curl(
        pair,
        family,
        &args.each_ref().map(String::as_str),
        PREFLIGHT_PATH,
    )?;
    Ok(Attempt::of(&run))
}

/// The header lines of the last response head in curl's `-D -` output (an
/// interim `100 Continue` head comes before the final one).
fn last_head(stdout: &str) -> Vec<String> {
    let mut headers = Vec::new();
    for line in stdout.lines() {
        let line = line.trim_end_matches('\r');
        if line.starts_with("HTTP/") {
            headers.clear();
        } else if line.starts_with("CURL-STATUS ") {
            break;
        } else if !line.is_empty() {
            headers.push(line.to_owned());
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::last_head;

    #[test]
    fn the_last_head_is_kept() {
        let out = "HTTP/1.1 100 Continue\r\nX-A: 1\r\n\r\nHTTP/1.1 200 OK\r\nX-Body-Length: 5\r\n\r\nCURL-STATUS 200 0.1 0.2\n";
        assert_eq!(last_head(out), ["X-Body-Length: 5"]);
        assert!(last_head("CURL-STATUS 000 0 2.0\n").is_empty());
    }
}
