//! The test HTTP server (`cors-test-server`) running in the server namespace.

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::{
    TempDir,
    harness::netns::{NetnsPair, SERVER_V4, SERVER_V6},
    harness::process::{Guarded, die_with_parent},
};

pub const PORT: u16 = 8080;
/// The header of the server's answer (but to a preflight) saying how many
/// bytes of the request body it read.
pub const BODY_LENGTH_HEADER: &str = "X-Body-Length";

/// One request line of the server's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// `None` when the request had no `Origin`.
    pub origin: Option<String>,
}

impl Seen {
    /// A request of `method` to `path` with `Origin: origin`.
    pub fn with_origin(method: &str, path: &str, origin: &str) -> Seen {
        Seen {
            method: method.into(),
            path: path.into(),
            origin: Some(origin.into()),
        }
    }
}

/// `seen` one line each, with long paths cut to their first 40 characters
/// (and their length): for failure messages about long URLs.
pub fn brief(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .map(|s| {
            let path: String = s.path.chars().take(40).collect();
            let cut = if path.len() < s.path.len() { "..." } else { "" };
            format!(
                "{} {path}{cut} ({} bytes) from {}",
                s.method,
                s.path.len(),
                s.origin.as_deref().unwrap_or("(no Origin)")
            )
        })
        .collect()
}

/// How a test server is started, beyond [`TestServer::start`]'s defaults.
#[derive(Clone, Debug, Default)]
pub struct ServerOptions {
    /// The ports it listens on, on IPv4 and IPv6 each; none means [`PORT`].
    pub ports: Vec<u16>,
    /// Whether it keeps every request head (see [`TestServer::heads`]): a
    /// file per request, which a test sending requests in a loop does without.
    pub keep_heads: bool,
    /// More arguments, e.g. `--read-timeout-ms`.
    pub args: Vec<String>,
    /// Whether it writes a line per connection it accepts (see
    /// [`TestServer::connections`]).
    pub log_connections: bool,
}

pub struct TestServer {
    _process: Guarded,
    log: PathBuf,
    head_dir: PathBuf,
    connections: PathBuf,
    _dir: TempDir,
}

/// One request head as the server received it, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead(pub Vec<u8>);

/// A header line of a [`RequestHead`]: where it is, and what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderLine {
    /// Its offset in the head: where its name starts, and just after its
    /// line end.
    pub start: usize,
    pub end: usize,
    pub name: String,
    pub value: String,
}

impl RequestHead {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The request line, without its line end.
    pub fn request_line(&self) -> String {
        let text = String::from_utf8_lossy(&self.0);
        text.lines().next().unwrap_or_default().to_owned()
    }

    /// The header lines in order, repeated names included.
    pub fn header_lines(&self) -> Vec<HeaderLine> {
        let mut lines = Vec::new();
        let mut start = match self.0.iter().position(|&b| b == b'\n') {
            Some(end_of_request_line) => end_of_request_line + 1,
            None => return lines,
        };
        while let Some(length) = self.0[start..].iter().position(|&b| b == b'\n') {
            let end = start + length + 1;
            let line = String::from_utf8_lossy(&self.0[start..end]);
            let line = line.trim_end_matches(['\r', '\n']);
            if let Some((name, value)) = line.split_once(':') {
                lines.push(HeaderLine {
                    start,
                    end,
                    name: name.to_owned(),
                    value: value.trim().to_owned(),
                });
            }
            start = end;
        }
        lines
    }

    /// The lines of header `name` (any case).
    pub fn header(&self, name: &str) -> Vec<HeaderLine> {
        self.header_lines()
            .into_iter()
            .filter(|line| line.name.eq_ignore_ascii_case(name))
            .collect()
    }
}

impl TestServer {
    /// Starts the server on the server namespace's addresses, port [`PORT`].
    pub fn start(pair: &NetnsPair, binary: &std::path::Path) -> Result<TestServer> {
        TestServer::start_with(pair, binary, &[])
    }

    /// [`TestServer::start`] with more arguments, e.g. `--read-timeout-ms`.
    pub fn start_with(
        pair: &NetnsPair,
        binary: &std::path::Path,
        args: &[&str],
    ) -> Result<TestServer> {
        let options = ServerOptions {
            args: args.iter().map(|a| a.to_string()).collect(),
            ..ServerOptions::default()
        };
        TestServer::start_with_options(pair, binary, &options)
    }

    /// [`TestServer::start`] as `options` say.
    pub fn start_with_options(
        pair: &NetnsPair,
        binary: &std::path::Path,
        options: &ServerOptions,
    ) -> Result<TestServer> {
        let ports = match options.ports.as_slice() {
            [] => &[PORT][..],
            ports => ports,
        };
        let listen: Vec<String> = ports
            .iter()
            .flat_map(|port| {
                [
                    format!("{SERVER_V4}:{port}"),
                    format!("[{SERVER_V6}]:{port}"),
                ]
            })
            .collect();
        TestServer::spawn(&pair.server, binary, &listen, options)
    }

    /// `cors-test-server` in namespace `ns`, on the addresses `listen`
    /// (`ip:port`), with more arguments `args`.
    pub fn start_in(
        ns: &str,
        binary: &std::path::Path,
        listen: &[String],
        args: &[&str],
    ) -> Result<TestServer> {
        let options = ServerOptions {
            args: args.iter().map(|a| a.to_string()).collect(),
            ..ServerOptions::default()
        };
        TestServer::spawn(ns, binary, listen, &options)
    }

    /// [`TestServer::start_in`] as `options` say (its `ports` unused: the
    /// addresses are `listen`).
    pub fn start_in_with_options(
        ns: &str,
        binary: &std::path::Path,
        listen: &[String],
        options: &ServerOptions,
    ) -> Result<TestServer> {
        TestServer::spawn(ns, binary, listen, options)
    }

    fn spawn(
        ns: &str,
        binary: &std::path::Path,
        listen: &[String],
        options: &ServerOptions,
    ) -> Result<TestServer> {
        let dir = TempDir::new("server")?;
        let log = dir.path().join("requests.log");
        let head_dir = dir.path().join("heads");
        let connections = dir.path().join("connections.log");
        if options.keep_heads {
            std::fs::create_dir(&head_dir)
                .with_context(|| format!("cannot create {}", head_dir.display()))?;
        }
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns])
            .arg(binary)
            .arg("--log")
            .arg(&log)
            .args(listen.iter().flat_map(|addr| ["--listen", addr]))
            .args(&options.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if options.keep_heads {
            command.arg("--head-dir").arg(&head_dir);
        }
        if options.log_connections {
            command.arg("--connections").arg(&connections);
        }
        die_with_parent(&mut command, libc::SIGKILL);
        let mut child = command
            .spawn()
            .with_context(|| format!("cannot start {} in {ns}", binary.display()))?;
        let stdout = child.stdout.take().expect("piped");
        let mut process = Guarded {
            child,
            name: "cors-test-server".into(),
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(line) if line.trim() == "listening" => {}
            Ok(line) => bail!(
                "cors-test-server in {ns} did not start (said {line:?}, exit {:?})",
                process.exited()
            ),
            Err(_) => bail!("cors-test-server in {ns} did not report listening within 10 s"),
        }
        Ok(TestServer {
            _process: process,
            log,
            head_dir,
            connections,
            _dir: dir,
        })
    }

    /// A line per connection the server accepted so far, in order: the
    /// peer's address, then, with `--proxy-protocol`, what the PROXY header
    /// said (`v2 SRC`), or that none came. Only for a server started with
    /// [`ServerOptions::log_connections`].
    pub fn connections(&self) -> Result<Vec<String>> {
        match std::fs::read_to_string(&self.connections) {
            Ok(text) => Ok(text.lines().map(str::to_owned).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", self.connections.display())),
        }
    }

    /// Every request the server has received so far.
    pub fn seen(&self) -> Result<Vec<Seen>> {
        let text = match std::fs::read_to_string(&self.log) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", self.log.display())),
        };
        Ok(text
            .lines()
            .map(|line| {
                let mut parts = line.splitn(3, ' ');
                let method = parts.next().unwrap_or_default().to_owned();
                let path = parts.next().unwrap_or_default().to_owned();
                let origin = parts.next().filter(|o| *o != "-").map(str::to_owned);
                Seen {
                    method,
                    path,
                    origin,
                }
            })
            .collect())
    }

    /// The head of every request the server has received so far, in order
    /// of arrival: one for each entry of [`TestServer::seen`]. Only for a
    /// server started with [`ServerOptions::keep_heads`].
    pub fn heads(&self) -> Result<Vec<RequestHead>> {
        if !self.head_dir.is_dir() {
            bail!("the test server was started without keep_heads");
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.head_dir)
            .with_context(|| format!("cannot read {}", self.head_dir.display()))?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        // Numbered with leading zeros: the names sort in order of arrival.
        files.sort();
        files
            .iter()
            .map(|file| {
                std::fs::read(file)
                    .map(RequestHead)
                    .with_context(|| format!("cannot read {}", file.display()))
            })
            .collect()
    }

    /// Whether a request with this `Origin` reached the server.
    pub fn saw_origin(&self, origin: &str) -> Result<bool> {
        Ok(self
            .seen()?
            .iter()
            .any(|s| s.origin.as_deref() == Some(origin)))
    }
}
