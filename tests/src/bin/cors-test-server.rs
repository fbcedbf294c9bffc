//! The HTTP server the end-to-end tests and the demo protect.
//!
//! It deliberately trusts every origin (it echoes `Origin` back in
//! `Access-Control-Allow-Origin`), like many real backends: cors-filter is
//! what keeps disallowed preflights from ever reaching it. Every request it
//! receives is appended to the log file as `METHOD PATH ORIGIN`, which is how
//! the tests prove what reached it.
//!
//! A connection on which no whole request head arrives within the read
//! timeout (10 s, or `--read-timeout-ms`) is closed, as real servers bound
//! the wait for a request head.
//!
//! Usage: cors-test-server --log FILE --listen ADDR [--listen ADDR ...]
//!        [--read-timeout-ms MS] [--head-dir DIR]

use std::{
    fs::OpenOptions,
    io::{ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context, Result, bail};

const MAX_HEAD: usize = 16 * 1024;
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> Result<()> {
    // Never outlive the test that started us.
    // SAFETY: prctl with constant arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    let mut listen = Vec::new();
    let mut log = None;
    let mut head_dir = None;
    let mut read_timeout = DEFAULT_READ_TIMEOUT;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let addr: SocketAddr = args.next().context("--listen needs an address")?.parse()?;
                listen.push(addr);
            }
            "--log" => log = Some(PathBuf::from(args.next().context("--log needs a file")?)),
            "--head-dir" => {
                head_dir = Some(PathBuf::from(
                    args.next().context("--head-dir needs a directory")?,
                ))
            }
            "--read-timeout-ms" => {
                let ms: u64 = args
                    .next()
                    .context("--read-timeout-ms needs a number")?
                    .parse()
                    .context("--read-timeout-ms needs a number of milliseconds")?;
                if ms == 0 {
                    bail!("--read-timeout-ms must be above 0");
                }
                read_timeout = Duration::from_millis(ms);
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    let log = Arc::new(Log {
        requests: log.context("--log FILE is required")?,
        head_dir,
        heads: AtomicU64::new(0),
    });
    if listen.is_empty() {
        bail!("at least one --listen ADDR is required");
    }
    let mut threads = Vec::new();
    for addr in listen {
        let listener =
            TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
        let log = Arc::clone(&log);
        threads.push(std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let log = Arc::clone(&log);
                std::thread::spawn(move || {
                    if let Err(e) = serve(stream, &log, read_timeout) {
                        eprintln!("cors-test-server: {e:#}");
                    }
                });
            }
        }));
    }
    println!("listening");
    std::io::stdout().flush()?;
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// Where the server records what it received.
struct Log {
    /// One `METHOD PATH ORIGIN` line per request.
    requests: PathBuf,
    /// Each request head, raw, in a file of its own.
    head_dir: Option<PathBuf>,
    /// Heads kept so far: the next file's number.
    heads: AtomicU64,
}

fn append(file: &Path, bytes: &[u8]) -> Result<()> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .and_then(|mut f| f.write_all(bytes))
        .with_context(|| format!("cannot append to {}", file.display()))
}

impl Log {
    fn record(&self, line: &str, head: &[u8]) -> Result<()> {
        // The head first: a test that has seen the log line may read it.
        if let Some(dir) = &self.head_dir {
            let number = self.heads.fetch_add(1, Ordering::SeqCst);
            let file = dir.join(format!("{number:06}"));
            std::fs::write(&file, head)
                .with_context(|| format!("cannot write {}", file.display()))?;
        }
        append(&self.requests, line.as_bytes())
    }
}

fn serve(mut stream: TcpStream, log: &Log, read_timeout: Duration) -> Result<()> {
    stream.set_read_timeout(Some(read_timeout))?;
    let mut buf = vec![0u8; MAX_HEAD];
    let mut filled = 0;
    loop {
        let n = match stream.read(&mut buf[filled..]) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            // The read timeout: the connection is closed, as a server closes
            // one whose request head does not come.
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok(());
            }
            // The client gave up on a request the filter dropped and reset
            // the connection (the tests' raw client does): nothing arrived.
            Err(e) if e.kind() == ErrorKind::ConnectionReset && filled == 0 => return Ok(()),
            Err(e) => return Err(e).context("cannot read a request"),
        };
        filled += n;
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf[..filled]) {
            Ok(httparse::Status::Complete(head_len)) => {
                let method = request.method.unwrap_or("-");
                let path = request.path.unwrap_or("-");
                let origin = request
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("origin"))
                    .map(|h| String::from_utf8_lossy(h.value).into_owned());
                let line = format!("{method} {path} {}\n", origin.as_deref().unwrap_or("-"));
                log.record(&line, &buf[..head_len])?;
                let response = match (method, origin) {
                    ("OPTIONS", Some(origin)) => format!(
                        "HTTP/1.1 204 No Content\r\nAccess-Control-Allow-Origin: {origin}\r\n\
                         Access-Control-Allow-Methods: GET, POST, PUT, DELETE\r\n\
                         Access-Control-Allow-Credentials: true\r\nConnection: close\r\n\r\n"
                    ),
                    (_, origin) => {
                        let allow = origin
                            .map(|o| format!("Access-Control-Allow-Origin: {o}\r\n"))
                            .unwrap_or_default();
                        format!(
                            "HTTP/1.1 200 OK\r\n{allow}Content-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
                        )
                    }
                };
                stream.write_all(response.as_bytes())?;
                return Ok(());
            }
            Ok(httparse::Status::Partial) if filled < MAX_HEAD => continue,
            _ => {
                stream.write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")?;
                return Ok(());
            }
        }
    }
}
