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
    netns::{NetnsPair, SERVER_V4, SERVER_V6},
    process::{Guarded, die_with_parent},
};

pub const PORT: u16 = 8080;

/// One request line of the server's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// `None` when the request had no `Origin`.
    pub origin: Option<String>,
}

pub struct TestServer {
    _process: Guarded,
    log: PathBuf,
    _dir: TempDir,
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
        let listen = [
            format!("{SERVER_V4}:{PORT}"),
            format!("[{SERVER_V6}]:{PORT}"),
        ];
        TestServer::start_in(&pair.server, binary, &listen, args)
    }

    /// `cors-test-server` in namespace `ns`, on the addresses `listen`
    /// (`ip:port`), with more arguments `args`.
    pub fn start_in(
        ns: &str,
        binary: &std::path::Path,
        listen: &[String],
        args: &[&str],
    ) -> Result<TestServer> {
        let dir = TempDir::new("server")?;
        let log = dir.path().join("requests.log");
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns])
            .arg(binary)
            .arg("--log")
            .arg(&log);
        for addr in listen {
            command.args(["--listen", addr]);
        }
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
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
            _dir: dir,
        })
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

    /// Whether a request with this `Origin` reached the server.
    pub fn saw_origin(&self, origin: &str) -> Result<bool> {
        Ok(self
            .seen()?
            .iter()
            .any(|s| s.origin.as_deref() == Some(origin)))
    }
}
