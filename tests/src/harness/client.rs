//! curl in the client namespace. Every call is bounded by `--max-time`.

use std::{
    process::{Command, Output},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    harness::attempt::{Attempt, CURL_TIMED_OUT},
    harness::netns::{NetnsPair, SERVER_V4, SERVER_V6},
    harness::process::run_bounded,
    harness::server::PORT,
};

/// How long curl waits for an answer; a dropped preflight takes all of it.
pub const MAX_TIME: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub(crate) fn url(self, path: &str) -> String {
        self.url_on(PORT, path)
    }

    /// The test server's URL for `path` on `port`.
    pub(crate) fn url_on(self, port: u16, path: &str) -> String {
        match self {
            Family::V4 => format!("http://{SERVER_V4}:{port}{path}"),
            Family::V6 => format!("http://[{SERVER_V6}]:{port}{path}"),
        }
    }
}

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

/// One curl run in the client namespace, whatever its outcome: its output
/// (response head lines on stdout), the HTTP status (0 for none), the times
/// curl measured, and the wall-clock time of the whole command.
pub(crate) struct CurlRun {
    pub output: Output,
    pub http_code: u16,
    /// curl's `time_connect`: 0 when no connection was made.
    pub connect: f64,
    /// curl's `time_total`, from its start to its end, failure included.
    pub total: Duration,
    pub wall: Duration,
}

/// Runs curl on `path` of the test server with `args`, bounded by
/// [`MAX_TIME`].
pub(crate) fn run_curl(
    pair: &NetnsPair,
    family: Family,
    args: &[&str],
    path: &str,
) -> Result<CurlRun> {
    run_curl_on(pair, family, args, PORT, path)
}

/// [`run_curl`] on `port`.
pub(crate) fn run_curl_on(
    pair: &NetnsPair,
    family: Family,
    args: &[&str],
    port: u16,
    path: &str,
) -> Result<CurlRun> {
    let url = family.url_on(port, path);
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
        .args([
            "-w",
            "CURL-STATUS %{http_code} %{time_connect} %{time_total}\n",
        ])
        .args(["--max-time", &MAX_TIME.as_secs().to_string()])
        .args(args)
        .arg(&url);
    let started = Instant::now();
    let output = run_bounded(&mut command, MAX_TIME + Duration::from_secs(5))
        .with_context(|| format!("curl {url} in namespace {}", pair.client))?;
    CurlRun::of(output, started.elapsed())
}

impl CurlRun {
    /// A run of curl that wrote `-w "CURL-STATUS %{http_code}
    /// %{time_connect} %{time_total}\n"`, and took `wall`.
    pub(crate) fn of(output: Output, wall: Duration) -> Result<CurlRun> {
        let stdout = String::from_utf8_lossy(&output.stdout);
        let fields: Vec<&str> = stdout
            .lines()
            .find_map(|l| l.strip_prefix("CURL-STATUS "))
            .with_context(|| {
                format!(
                    "curl printed no status: {stdout:?} {:?}",
                    String::from_utf8_lossy(&output.stderr)
                )
            })?
            .split(' ')
            .collect();
        let [code, connect, total] = fields[..] else {
            bail!("curl printed an odd status line: {fields:?}");
        };
        let http_code = code.trim().parse()?;
        let connect = connect.trim().parse()?;
        let total = Duration::from_secs_f64(total.trim().parse()?);
        Ok(CurlRun {
            output,
            http_code,
            connect,
            total,
            wall,
        })
    }
}

fn curl(pair: &NetnsPair, family: Family, args: &[&str], path: &str) -> Result<Reply> {
    let run = run_curl(pair, family, args, path)?;
    let output = &run.output;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let connected = run.connect > 0.0;
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
    let status = match run.http_code {
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

/// The headers a browser's preflight carries before a cross-origin PUT with
/// a JSON body, as curl arguments, and the path it goes to.
pub(crate) fn preflight_args(origin: &str) -> [String; 8] {
    [
        "-X".into(),
        "OPTIONS".into(),
        "-H".into(),
        format!("Origin: {origin}"),
        "-H".into(),
        "Access-Control-Request-Method: PUT".into(),
        "-H".into(),
        "Access-Control-Request-Headers: content-type".into(),
    ]
}

pub(crate) const PREFLIGHT_PATH: &str = "/api/items";

/// A CORS preflight, as a browser sends it before a cross-origin PUT.
pub fn preflight(pair: &NetnsPair, family: Family, origin: &str) -> Result<Reply> {
    let args = preflight_args(origin);
    curl(
        pair,
        family,
        &args.each_ref().map(String::as_str),
        PREFLIGHT_PATH,
    )
}

/// A plain GET without `Origin`.
pub fn get(pair: &NetnsPair, family: Family) -> Result<Reply> {
    curl(pair, family, &[], "/")
}

/// An HTTP request for [`request`] to send to the test server.
#[derive(Clone, Debug)]
pub struct Request {
    /// Sent as given: `post` stays lower case.
    pub method: String,
    pub port: u16,
    pub path: String,
    /// `Name: value` lines, in this order, after curl's own `Host`,
    /// `User-Agent` and `Accept` (and before the `Content-Length` it adds
    /// for a body); a name given twice is sent twice.
    pub headers: Vec<String>,
    pub body: Option<String>,
}

impl Request {
    /// `method` on `path` of the test server's [`PORT`], with no headers
    /// of its own and no body.
    pub fn new(method: &str, path: &str) -> Request {
        Request {
            method: method.to_owned(),
            port: PORT,
            path: path.to_owned(),
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn on_port(mut self, port: u16) -> Request {
        self.port = port;
        self
    }

    /// Adds the header line `name: value` after those added before. (An
    /// empty value would make curl drop a header of its own instead.)
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push(format!("{name}: {value}"));
        self
    }

    /// The body, sent as is (curl does not read `@file` here).
    pub fn body(mut self, body: &str) -> Request {
        self.body = Some(body.to_owned());
        self
    }

    fn curl_args(&self) -> Vec<String> {
        // `-X` sets the method word alone; curl still sends (or not) a body
        // as the arguments below say. (Not for HEAD: curl would wait for a
        // body that never comes.)
        let mut args = vec!["-X".to_owned(), self.method.clone()];
        for line in &self.headers {
            args.extend(["-H".to_owned(), line.clone()]);
        }
        if let Some(body) = &self.body {
            args.extend(["--data-raw".to_owned(), body.clone()]);
        }
        args
    }
}

/// Sends `request` to the test server with curl, bounded by [`MAX_TIME`],
/// and reports how it went, failure included: a refused request (reset, or
/// no answer) is an [`Attempt`] too, not an error.
pub fn request(pair: &NetnsPair, family: Family, request: &Request) -> Result<Attempt> {
    let args = request.curl_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = run_curl_on(pair, family, &args, request.port, &request.path)?;
    Ok(Attempt::of(&run))
}
