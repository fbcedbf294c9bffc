//! The connection tracking's request-line and line-end rules against real
//! servers: the same hand-made request heads, of the kinds the parser's
//! leniency is about, are sent to nginx, Node (llhttp) and Python's
//! `http.server`, each echoing the method, `Origin` and
//! `Access-Control-Request-Method` it read; and run through the filter's
//! parser (`stream_model`), in one segment and cut at every byte, with a
//! policy that allows no origin. Whenever a server acted on a head as a
//! preflight (or, on a port protecting them, an unsafe request) carrying
//! an `Origin`, the filter must have dropped it: its reading is a superset
//! of theirs. A table of every case is printed; heads the filter drops
//! that no server acts on are listed too (harmless).
//!
//! The servers run in a network namespace the test creates (the client in
//! its peer); missing servers fail the test, they never skip it.
//!
//! Python's `http.server` reads a bare CR as a line end between headers
//! (its header block goes through the `email` parser), so `X:\rOrigin: …`
//! is an `Origin` header to it; the cases named "bare CR … before Origin"
//! fail until the parser reads it so too.

use std::{
    net::{SocketAddr, TcpStream},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use cors_filter_common::{Outcome, Verdict};
use cors_filter_tests::{
    TempDir,
    harness::netns::{NetnsPair, SERVER_V4},
    harness::process::{Guarded, die_with_parent},
    harness::raw_client::{enter_netns, exchange},
    oracles::stream_model::{Judged, Model, ModelPolicy, key},
    require_root,
};

const NGINX: &str = "/usr/sbin/nginx";
const NODE: &str = "/usr/bin/node";
const PYTHON: &str = "/usr/bin/python3";
const EVIL: &str = "https://evil.example";
/// How long a server has to answer one head (all are sent at once).
const ANSWER_WAIT: Duration = Duration::from_millis(2500);
const START_LIMIT: Duration = Duration::from_secs(10);
const ISN: u32 = 0x7fff_fff0;
/// Heads up to this long are also cut at every single byte.
const SHORT: usize = 400;

const NODE_SCRIPT: &str = r#"
const http = require('http');
const port = Number(process.argv[2]);
http.createServer((req, res) => {
  const body = `${req.method}|${req.headers.origin}|${req.headers['access-control-request-method']}\n`;
  res.writeHead(200, {'Content-Length': Buffer.byteLength(body, 'latin1'), 'Connection': 'close'});
  res.end(body, 'latin1');
}).listen(port, '0.0.0.0');
"#;

const PYTHON_SCRIPT: &str = r#"
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self):
        body = ("%s|%s|%s\n" % (self.command, self.headers.get("Origin"),
                                self.headers.get("Access-Control-Request-Method"))).encode("latin-1", "replace")
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.close_connection = True

    do_OPTIONS = do_PUT = do_POST = do_GET = do_DELETE = do_PATCH = answer

    def log_message(self, *args):
        pass

ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer.request_queue_size = 1024
ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), Echo).serve_forever()
"#;

/// How a head is judged: a preflight (`OPTIONS`), or an unsafe request
/// (`PUT`) to a port that protects them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Preflight,
    Unsafe,
}

impl Kind {
    fn method(self) -> &'static str {
        match self {
            Kind::Preflight => "OPTIONS",
            Kind::Unsafe => "PUT",
        }
    }
}

struct Case {
    name: String,
    kind: Kind,
    bytes: Vec<u8>,
}

/// The cases: each template with `{M}` standing for the method (replaced
/// by `OPTIONS` and by `PUT`; `{m}` in lower case); `{H}` for `Host`,
/// `{O}` for `Origin: https://evil.example`, `{A}` for
/// `Access-Control-Request-Method: PUT` and `{C}` for `Connection: close`,
/// each ended by CRLF; `{E}` for the blank line's CRLF.
fn cases() -> Vec<Case> {
    let templates: &[(&str, &[u8])] = &[
        ("plain", b"{M} / HTTP/1.1\r\n{H}{O}{A}{C}{E}"),
        ("space after version", b"{M} / HTTP/1.1 \r\n{H}{O}{A}{C}{E}"),
        ("tab after version", b"{M} / HTTP/1.1\t\r\n{H}{O}{A}{C}{E}"),
        ("HTTP/1.11", b"{M} / HTTP/1.11\r\n{H}{O}{A}{C}{E}"),
        ("HTTP/01.1", b"{M} / HTTP/01.1\r\n{H}{O}{A}{C}{E}"),
        ("HTTP/1.0", b"{M} / HTTP/1.0\r\n{H}{O}{A}{C}{E}"),
        ("HTTP/2.0", b"{M} / HTTP/2.0\r\n{H}{O}{A}{C}{E}"),
        ("http/1.1 lower", b"{M} / http/1.1\r\n{H}{O}{A}{C}{E}"),
        ("no version", b"{M} /\r\n{H}{O}{A}{C}{E}"),
        ("no target", b"{M}\r\n{H}{O}{A}{C}{E}"),
        ("three words extra", b"{M} / x HTTP/1.1\r\n{H}{O}{A}{C}{E}"),
        ("leading CRLFs", b"\r\n\r\n{M} / HTTP/1.1\r\n{H}{O}{A}{C}{E}"),
        ("leading LFs", b"\n\n{M} / HTTP/1.1\r\n{H}{O}{A}{C}{E}"),
        ("leading bare CR", b"\r{M} / HTTP/1.1\r\n{H}{O}{A}{C}{E}"),
        ("leading spaces", b"  {M} / HTTP/1.1\r\n{H}{O}{A}{C}{E}"),
        ("leading tab", b"\t{M} / HTTP/1.1\r\n{H}{O}{A}{C}{E}"),
        ("leading VT FF", b"\x0b\x0c{M} / HTTP/1.1\r\n{H}{O}{A}{C}{E}"),
        ("leading \\x1c", b"\x1c{M} / HTTP/1.1\r\n{H}{O}{A}{C}{E}"),
        ("leading \\x85", b"\x85{M} / HTTP/1.1\r\n{H}{O}{A}{C}{E}"),
        ("leading \\xa0", b"\xa0{M} / HTTP/1.1\r\n{H}{O}{A}{C}{E}"),
        ("tabs between parts", b"{M}\t/\tHTTP/1.1\r\n{H}{O}{A}{C}{E}"),
        ("tab after method", b"{M}\t/ HTTP/1.1\r\n{H}{O}{A}{C}{E}"),
        ("spaces between parts", b"{M}  /  HTTP/1.1\r\n{H}{O}{A}{C}{E}"),
        ("\\x1f between parts", b"{M}\x1f/\x1fHTTP/1.1\r\n{H}{O}{A}{C}{E}"),
        ("\\x85 between parts", b"{M}\x85/\x85HTTP/1.1\r\n{H}{O}{A}{C}{E}"),
        ("\\xa0 between parts", b"{M}\xa0/\xa0HTTP/1.1\r\n{H}{O}{A}{C}{E}"),
        ("VT between parts", b"{M}\x0b/\x0bHTTP/1.1\r\n{H}{O}{A}{C}{E}"),
        ("CR between parts", b"{M}\r/ HTTP/1.1\r\n{H}{O}{A}{C}{E}"),
        ("lower-case method", b"{m} / HTTP/1.1\r\n{H}{O}{A}{C}{E}"),
        ("NUL in method", b"{M}\0 / HTTP/1.1\r\n{H}{O}{A}{C}{E}"),
        ("NUL before method", b"\0{M} / HTTP/1.1\r\n{H}{O}{A}{C}{E}"),
        ("absolute target", b"{M} http://a.example/ HTTP/1.1\r\n{H}{O}{A}{C}{E}"),
        ("asterisk target", b"{M} * HTTP/1.1\r\n{H}{O}{A}{C}{E}"),
        (
            "bare LF line ends",
            b"{M} / HTTP/1.1\nHost: a\nOrigin: https://evil.example\nAccess-Control-Request-Method: PUT\nConnection: close\n\n",
        ),
        (
            "LF request line, CRLF headers",
            b"{M} / HTTP/1.1\n{H}{O}{A}{C}{E}",
        ),
        (
            "CRLF then LF headers",
            b"{M} / HTTP/1.1\r\nHost: a\nOrigin: https://evil.example\r\nAccess-Control-Request-Method: PUT\nConnection: close\n\r\n",
        ),
        ("LF blank line", b"{M} / HTTP/1.1\r\n{H}{O}{A}{C}\n"),
        (
            "bare CR line ends",
            b"{M} / HTTP/1.1\rHost: a\rOrigin: https://evil.example\rAccess-Control-Request-Method: PUT\rConnection: close\r\r\n\r\n",
        ),
        (
            "bare CR ends the line before Origin",
            b"{M} / HTTP/1.1\r\nHost: a\rOrigin: https://evil.example\r\n{A}{C}{E}",
        ),
        (
            "bare CR ends the line before ACRM",
            b"{M} / HTTP/1.1\r\nHost: a\rAccess-Control-Request-Method: PUT\r\n{O}{C}{E}",
        ),
        (
            "minimal: bare CR before Origin",
            b"{M} / HTTP/1.1\r\nX:\rOrigin: https://evil.example\r\n{A}{C}{E}",
        ),
        (
            "LF CR before Origin",
            b"{M} / HTTP/1.1\r\n{H}X: a\n\rOrigin: https://evil.example\r\n{A}{C}{E}",
        ),
        (
            "VT ends the line before Origin",
            b"{M} / HTTP/1.1\r\n{H}X: a\x0bOrigin: https://evil.example\r\n{A}{C}{E}",
        ),
        (
            "FF ends the line before Origin",
            b"{M} / HTTP/1.1\r\n{H}X: a\x0cOrigin: https://evil.example\r\n{A}{C}{E}",
        ),
        (
            "\\x1c ends the line before Origin",
            b"{M} / HTTP/1.1\r\n{H}X: a\x1cOrigin: https://evil.example\r\n{A}{C}{E}",
        ),
        (
            "\\x85 ends the line before Origin",
            b"{M} / HTTP/1.1\r\n{H}X: a\x85Origin: https://evil.example\r\n{A}{C}{E}",
        ),
        (
            "bare CR in another header",
            b"{M} / HTTP/1.1\r\n{H}X-A: a\rb\r\n{O}{A}{C}{E}",
        ),
        (
            "bare CR ends the Origin value",
            b"{M} / HTTP/1.1\r\n{H}Origin: https://evil.example\rX: y\r\n{A}{C}{E}",
        ),
        (
            "CR CR LF after Origin",
            b"{M} / HTTP/1.1\r\n{H}Origin: https://evil.example\r\r\n{A}{C}{E}",
        ),
        (
            "Origin space colon",
            b"{M} / HTTP/1.1\r\n{H}Origin : https://evil.example\r\n{A}{C}{E}",
        ),
        (
            "Origin tab colon",
            b"{M} / HTTP/1.1\r\n{H}Origin\t: https://evil.example\r\n{A}{C}{E}",
        ),
        (
            "ACRM space colon",
            b"{M} / HTTP/1.1\r\n{H}{O}Access-Control-Request-Method : PUT\r\n{C}{E}",
        ),
        ("origin lower", b"{M} / HTTP/1.1\r\n{H}origin: https://evil.example\r\n{A}{C}{E}"),
        ("ORIGIN upper", b"{M} / HTTP/1.1\r\n{H}ORIGIN: https://evil.example\r\n{A}{C}{E}"),
        (
            "acrm lower",
            b"{M} / HTTP/1.1\r\n{H}{O}access-control-request-method: PUT\r\n{C}{E}",
        ),
        ("Origin no space", b"{M} / HTTP/1.1\r\n{H}Origin:https://evil.example\r\n{A}{C}{E}"),
        ("Origin tab value", b"{M} / HTTP/1.1\r\n{H}Origin:\thttps://evil.example\t\r\n{A}{C}{E}"),
        (
            "Origin trailing spaces",
            b"{M} / HTTP/1.1\r\n{H}Origin: https://evil.example   \r\n{A}{C}{E}",
        ),
        (
            "Origin first, leading space",
            b"{M} / HTTP/1.1\r\n Origin: https://evil.example\r\n{H}{A}{C}{E}",
        ),
        (
            "folded line before Origin",
            b"{M} / HTTP/1.1\r\n{H}X-Long: a\r\n b\r\n{O}{A}{C}{E}",
        ),
        (
            "folded Origin value",
            b"{M} / HTTP/1.1\r\n{H}Origin: https://evil.example\r\n x\r\n{A}{C}{E}",
        ),
        (
            "Origin value on a folded line",
            b"{M} / HTTP/1.1\r\n{H}Origin:\r\n https://evil.example\r\n{A}{C}{E}",
        ),
        (
            "folded ACRM value",
            b"{M} / HTTP/1.1\r\n{H}{O}Access-Control-Request-Method:\r\n PUT\r\n{C}{E}",
        ),
        ("tab-folded line", b"{M} / HTTP/1.1\r\n{H}X-Long: a\r\n\tb\r\n{O}{A}{C}{E}"),
        ("two Origins", b"{M} / HTTP/1.1\r\n{H}{O}{O}{A}{C}{E}"),
        (
            "empty Origin then evil",
            b"{M} / HTTP/1.1\r\n{H}Origin:\r\n{O}{A}{C}{E}",
        ),
        ("NUL in a header value", b"{M} / HTTP/1.1\r\n{H}X-A: a\0b\r\n{O}{A}{C}{E}"),
        ("empty header name", b"{M} / HTTP/1.1\r\n{H}: x\r\n{O}{A}{C}{E}"),
        ("header without colon", b"{M} / HTTP/1.1\r\n{H}X-A\r\n{O}{A}{C}{E}"),
        ("no Host", b"{M} / HTTP/1.1\r\n{O}{A}{C}{E}"),
    ];
    let mut out = Vec::new();
    for kind in [Kind::Preflight, Kind::Unsafe] {
        for (name, template) in templates {
            let mut bytes = template.to_vec();
            for (placeholder, with) in [
                ("{M}", kind.method().to_owned()),
                ("{m}", kind.method().to_lowercase()),
                ("{H}", "Host: a\r\n".to_owned()),
                ("{O}", format!("Origin: {EVIL}\r\n")),
                ("{A}", "Access-Control-Request-Method: PUT\r\n".to_owned()),
                ("{C}", "Connection: close\r\n".to_owned()),
                ("{E}", "\r\n".to_owned()),
            ] {
                bytes = replace(&bytes, placeholder.as_bytes(), with.as_bytes());
            }
            assert!(
                !bytes.windows(3).any(|w| w[0] == b'{' && w[2] == b'}'),
                "{name}: a placeholder is left"
            );
            out.push(Case {
                name: format!("{} {name}", kind.method()),
                kind,
                bytes,
            });
        }
    }
    out
}

/// `bytes` with every `from` replaced by `to`.
fn replace(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// The templates expand to the heads meant.
#[test]
fn the_case_templates_expand_as_meant() {
    let all = cases();
    let plain = all.iter().find(|c| c.name == "OPTIONS plain").unwrap();
    assert_eq!(
        plain.bytes,
        b"OPTIONS / HTTP/1.1\r\nHost: a\r\nOrigin: https://evil.example\r\nAccess-Control-Request-Method: PUT\r\nConnection: close\r\n\r\n"
    );
    let lower = all
        .iter()
        .find(|c| c.name == "PUT lower-case method")
        .unwrap();
    assert!(lower.bytes.starts_with(b"put / HTTP/1.1\r\n"));
}

struct Server {
    name: &'static str,
    port: u16,
    process: Guarded,
}

fn require(path: &str, package: &str) -> Result<()> {
    if !Path::new(path).is_file() {
        bail!(
            "{path} not found: this test needs Debian's {package} (`apt-get install {package}`, or `cargo xtask setup`)"
        );
    }
    Ok(())
}

/// Runs `f` on a thread in the network namespace at `ns_path`.
fn in_netns<T: Send + 'static>(
    ns_path: &str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let ns_path = ns_path.to_owned();
    std::thread::spawn(move || {
        enter_netns(&ns_path)?;
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("a client thread panicked"))?
}

fn start(
    pair: &NetnsPair,
    name: &'static str,
    port: u16,
    program: &str,
    args: &[&str],
    log: &Path,
) -> Result<Server> {
    let log_file = std::fs::File::create(log)?;
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &pair.server, program])
        .args(args)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    die_with_parent(&mut command, libc::SIGKILL);
    let child = command
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    let mut process = Guarded {
        child,
        name: name.to_owned(),
    };
    let addr = SocketAddr::new(SERVER_V4.parse()?, port);
    let ns_path = pair.client_ns_path();
    let log = log.to_owned();
    process.wait_ready(
        START_LIMIT,
        Duration::from_millis(50),
        || {
            in_netns(&ns_path, move || {
                Ok(TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok())
            })
        },
        || std::fs::read_to_string(&log).unwrap_or_default(),
    )?;
    Ok(Server {
        name,
        port,
        process,
    })
}

fn start_servers(pair: &NetnsPair, dir: &Path) -> Result<Vec<Server>> {
    require(NGINX, "nginx")?;
    require(NODE, "nodejs")?;
    require(PYTHON, "python3")?;
    let d = dir.display();
    let conf = format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log info;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 8081;
        location / {{
            default_type text/plain;
            return 200 "$request_method|$http_origin|$http_access_control_request_method\n";
        }}
    }}
}}
"#
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let node_path = dir.join("echo.js");
    std::fs::write(&node_path, NODE_SCRIPT)?;
    let nginx = start(
        pair,
        "nginx",
        8081,
        NGINX,
        &[
            "-p",
            &dir.to_string_lossy(),
            "-e",
            &dir.join("nginx-error.log").to_string_lossy(),
            "-c",
            &conf_path.to_string_lossy(),
        ],
        &dir.join("nginx.out"),
    )?;
    let node = start(
        pair,
        "node",
        8082,
        NODE,
        &[&node_path.to_string_lossy(), "8082"],
        &dir.join("node.out"),
    )?;
    let python = start(
        pair,
        "python",
        8083,
        PYTHON,
        &["-c", PYTHON_SCRIPT, "8083"],
        &dir.join("python.out"),
    )?;
    Ok(vec![nginx, node, python])
}

/// What a server did with a head.
#[derive(Clone, Debug)]
enum Reply {
    /// A 200 echoing what it read: method, `Origin`, ACRM.
    Echo(String, String, String),
    /// Another answer (its status line), or none (closed, or nothing in time).
    Refused(String),
}

impl Reply {
    fn parse(answer: Option<Vec<u8>>) -> Reply {
        let Some(answer) = answer else {
            return Reply::Refused("nothing".into());
        };
        let text = String::from_utf8_lossy(&answer);
        let status = text.lines().next().unwrap_or("").trim().to_owned();
        if !status.starts_with("HTTP/1.1 200") && !status.starts_with("HTTP/1.0 200") {
            return Reply::Refused(status);
        }
        let Some((_, body)) = text.split_once("\r\n\r\n") else {
            return Reply::Refused("200 without a body".into());
        };
        let fields: Vec<&str> = body.trim_end_matches('\n').splitn(3, '|').collect();
        match fields[..] {
            [m, o, a] => Reply::Echo(m.into(), o.into(), a.into()),
            _ => Reply::Refused(format!("200 {body:?}")),
        }
    }

    /// Whether the server acted on the head as `kind` with an `Origin`:
    /// the filter must judge it (and, allowing no origin, drop it).
    fn acted(&self, kind: Kind) -> bool {
        let present = |v: &str| !v.is_empty() && v != "undefined" && v != "None";
        match self {
            Reply::Echo(m, o, a) => {
                m == kind.method() && present(o) && (kind == Kind::Unsafe || present(a))
            }
            Reply::Refused(_) => false,
        }
    }

    /// The table's cell: `ACTED` (with what was read, unless it is the
    /// head's `Origin` and ACRM), `ok` (answered as something else), or
    /// `refused` (with the status line).
    fn cell(&self, kind: Kind) -> String {
        let e = |s: &str| s.escape_debug().to_string();
        match self {
            Reply::Echo(m, o, a) if self.acted(kind) => {
                if o == EVIL && (kind == Kind::Unsafe || a == "PUT") {
                    "ACTED".into()
                } else {
                    format!("ACTED {}|{}|{}", e(m), e(o), e(a))
                }
            }
            Reply::Echo(m, o, a) => format!("ok {}|{}|{}", e(m), e(o), e(a)),
            Reply::Refused(s) => {
                format!("refused ({})", e(&s.chars().take(24).collect::<String>()))
            }
        }
    }
}

/// Sends every case to every server at once (one connection each, from
/// the client namespace) and returns the replies, by case then server.
fn ask(pair: &NetnsPair, servers: &[Server], cases: &[Case]) -> Result<Vec<Vec<Reply>>> {
    let ip = SERVER_V4.parse()?;
    let mut workers = Vec::new();
    for case in cases {
        for server in servers {
            let addr = SocketAddr::new(ip, server.port);
            let bytes = case.bytes.clone();
            let ns_path = pair.client_ns_path();
            workers.push(std::thread::spawn(move || -> Result<Option<Vec<u8>>> {
                enter_netns(&ns_path)?;
                exchange(addr, &bytes, ANSWER_WAIT)
            }));
        }
    }
    let mut replies = Vec::new();
    let mut workers = workers.into_iter();
    for case in cases {
        let mut row = Vec::new();
        for server in servers {
            let answer = workers
                .next()
                .unwrap()
                .join()
                .map_err(|_| anyhow::anyhow!("a client thread panicked"))?
                .with_context(|| format!("{:?} to {}", case.name, server.name))?;
            row.push(Reply::parse(answer));
        }
        replies.push(row);
    }
    Ok(replies)
}

/// Runs `bytes` through the model as a new connection's stream, in
/// segments ending at `cuts`; returns the outcome of the first dropped
/// segment, if any, else of the last.
fn filter(kind: Kind, bytes: &[u8], cuts: &[usize]) -> (bool, Outcome) {
    let mut model = Model::new(ModelPolicy::allowing(&[], kind == Kind::Unsafe));
    let k = key(40000);
    model.segment(&k, ISN, &[], true);
    let mut bounds = vec![0];
    bounds.extend(cuts.iter().copied().filter(|&c| c > 0 && c < bytes.len()));
    bounds.push(bytes.len());
    let mut last = None;
    for w in bounds.windows(2) {
        let seq = ISN.wrapping_add(1).wrapping_add(w[0] as u32);
        let judged: Judged = model.segment(&k, seq, &bytes[w[0]..w[1]], false);
        if judged.verdict == Verdict::Drop {
            return (true, judged.outcome);
        }
        last = Some(judged.outcome);
    }
    (false, last.expect("a segment"))
}

/// The filter's reading of a case: the one-segment outcome, and whether
/// every cutting of it (every byte its own segment; for short heads, one
/// cut at each offset) dropped it too. `None` when the cuttings disagree
/// with the one-segment run about dropping it.
fn filter_case(case: &Case) -> (bool, Outcome, Option<String>) {
    let (dropped, outcome) = filter(case.kind, &case.bytes, &[]);
    let every: Vec<usize> = (1..case.bytes.len()).collect();
    let mut cuttings = vec![every];
    if case.bytes.len() <= SHORT {
        cuttings.extend((1..case.bytes.len()).map(|c| vec![c]));
    }
    let mut disagreement = None;
    for cuts in &cuttings {
        let (d, o) = filter(case.kind, &case.bytes, cuts);
        if d != dropped {
            let shown = if cuts.len() == 1 {
                format!("cut at {}", cuts[0])
            } else {
                "every byte its own segment".to_owned()
            };
            disagreement = Some(format!("{shown}: dropped {d} ({o:?})"));
            break;
        }
    }
    (dropped, outcome, disagreement)
}

#[test]
fn the_filter_drops_whatever_a_real_server_acts_on() -> Result<()> {
    let began = Instant::now();
    require_root()?;
    let dir = TempDir::new("real-servers")?;
    let pair = NetnsPair::create()?;
    let mut servers = start_servers(&pair, dir.path())?;
    let cases = cases();
    let replies = ask(&pair, &servers, &cases)?;
    for server in &mut servers {
        if let Some(status) = server.process.exited() {
            bail!("{} exited ({status}) during the test", server.name);
        }
    }

    let width = cases.iter().map(|c| c.name.len()).max().unwrap_or(0);
    println!(
        "{:width$} | {:28} | {:28} | {:28} | filter",
        "case", "nginx", "node", "python"
    );
    let mut bypasses = Vec::new();
    let mut unstable = Vec::new();
    let mut stricter = Vec::new();
    for (case, row) in cases.iter().zip(&replies) {
        let (dropped, outcome, disagreement) = filter_case(case);
        let cells: Vec<String> = row.iter().map(|r| r.cell(case.kind)).collect();
        let filter_cell = format!("{} ({outcome:?})", if dropped { "DROP" } else { "pass" });
        println!(
            "{:width$} | {:28} | {:28} | {:28} | {filter_cell}",
            case.name, cells[0], cells[1], cells[2]
        );
        let acting: Vec<&str> = servers
            .iter()
            .zip(row)
            .filter(|(_, r)| r.acted(case.kind))
            .map(|(s, _)| s.name)
            .collect();
        if !acting.is_empty() && !dropped {
            bypasses.push(format!(
                "{:?}: {} acted on {:?}, the filter passed it ({outcome:?})",
                case.name,
                acting.join(", "),
                String::from_utf8_lossy(&case.bytes)
            ));
        }
        if let Some(d) = disagreement {
            unstable.push(format!(
                "{:?}: in one segment dropped {dropped} ({outcome:?}); {d}",
                case.name
            ));
        }
        if acting.is_empty() && dropped {
            stricter.push(case.name.clone());
        }
    }
    println!(
        "\nDropped by the filter though no server acts on them (harmless): {}",
        if stricter.is_empty() {
            "none".to_owned()
        } else {
            stricter.join("; ")
        }
    );
    println!("{} cases in {:?}", cases.len(), began.elapsed());
    // The plain heads must have been acted on by all: else the servers
    // (or the echo) are not what the table says.
    for (case, row) in cases.iter().zip(&replies) {
        if case.name.ends_with(" plain") {
            for (server, reply) in servers.iter().zip(row) {
                if !matches!(reply, Reply::Echo(_, o, _) if o == EVIL) || !reply.acted(case.kind) {
                    bail!(
                        "{} did not act on the plain {:?}: {reply:?}",
                        server.name,
                        case.name
                    );
                }
            }
        }
    }
    let mut failures = Vec::new();
    if !bypasses.is_empty() {
        failures.push(format!(
            "BYPASS: heads a real server acts on that the filter passes:\n  {}",
            bypasses.join("\n  ")
        ));
    }
    if !unstable.is_empty() {
        failures.push(format!(
            "heads whose verdict depends on how they are cut:\n  {}",
            unstable.join("\n  ")
        ));
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("\n"));
    }
    Ok(())
}
