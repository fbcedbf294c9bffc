//! curl in the client namespace. Every call is bounded by `--max-time`.

use std::{process::Command, time::Duration};

use anyhow::{Context, Result, bail};

use crate::{
    netns::{NetnsPair, SERVER_V4, SERVER_V6},
    process::run_bounded,
    server::PORT,
};

/// How long curl waits for an answer; a dropped preflight takes all of it.
pub const MAX_TIME: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    fn url(self, path: &str) -> String {
        match self {
            Family::V4 => format!("http://{SERVER_V4}:{PORT}{path}"),
            Family::V6 => format!("http://[{SERVER_V6}]:{PORT}{path}"),
        }
    }
}

/// curl's exit code when `--max-time` ran out.
const CURL_TIMED_OUT: i32 = 28;

/// What curl got back.
#[derive(Debug, Clone)]
pub struct Reply {
    /// `None` when no response arrived within [`MAX_TIME`] on a connection
    /// that was established: what a dropped request looks like. (Any other
    /// failure, e.g. a refused connection, is an error, not a `None`.)
    pub status: Option<u16>,
    /// Response header lines, as received.
    pub headers: Vec<String>,
}

impl Reply {
    pub fn answered(&self) -> bool {
        self.status.is_some()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find_map(|h| {
            let (n, v) = h.split_once(':')?;
            n.eq_ignore_ascii_case(name).then_some(v.trim())
        })
    }

    /// One line for humans: `204 (Access-Control-Allow-Origin: x)` or `no response`.
    pub fn describe(&self) -> String {
        match (self.status, self.header("access-control-allow-origin")) {
            (None, _) => format!("no response within {}s", MAX_TIME.as_secs()),
            (Some(s), Some(allow)) => format!("HTTP {s}, Access-Control-Allow-Origin: {allow}"),
            (Some(s), None) => format!("HTTP {s}"),
        }
    }
}

fn curl(pair: &NetnsPair, family: Family, args: &[&str], path: &str) -> Result<Reply> {
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
            "-D",
            "-",
        ])
        .args(["-w", "CURL-STATUS %{http_code} %{time_connect}\n"])
        .args(["--max-time", &MAX_TIME.as_secs().to_string()])
        .args(args)
        .arg(family.url(path));
    let output = run_bounded(&mut command, MAX_TIME + Duration::from_secs(5))
        .with_context(|| format!("curl in namespace {}", pair.client))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let (code, connect) = stdout
        .lines()
        .find_map(|l| l.strip_prefix("CURL-STATUS ")?.split_once(' '))
        .with_context(|| format!("curl printed no status: {stdout:?} {stderr:?}"))?;
    let connected = connect.trim().parse::<f64>().is_ok_and(|t| t > 0.0);
    match output.status.code() {
        Some(0) => {}
        // Connected, request sent, nothing came back: what a drop looks like.
        Some(CURL_TIMED_OUT) if connected => {
            return Ok(Reply {
                status: None,
                headers: Vec::new(),
            });
        }
        _ => bail!(
            "curl {} from namespace {} failed ({}): {}",
            family.url(path),
            pair.client,
            output.status,
            stderr.trim()
        ),
    }
    let status = match code.trim().parse::<u16>()? {
        0 => None,
        s => Some(s),
    };
    let headers = stdout
        .lines()
        .skip(1)
        .take_while(|l| !l.trim().is_empty() && !l.starts_with("CURL-STATUS"))
        .map(str::to_owned)
        .collect();
    Ok(Reply { status, headers })
}

/// A CORS preflight, as a browser sends it before a cross-origin PUT.
pub fn preflight(pair: &NetnsPair, family: Family, origin: &str) -> Result<Reply> {
    curl(
        pair,
        family,
        &[
            "-X",
            "OPTIONS",
            "-H",
            &format!("Origin: {origin}"),
            "-H",
            "Access-Control-Request-Method: PUT",
            "-H",
            "Access-Control-Request-Headers: content-type",
        ],
        "/api/items",
    )
}

/// A plain GET without `Origin`.
pub fn get(pair: &NetnsPair, family: Family) -> Result<Reply> {
    curl(pair, family, &[], "/")
}
