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
//! Every answer but a preflight's says in `X-Body-Length` how many bytes of
//! the request body it read (at most 8 MiB), so that a test can tell a body
//! that arrived whole from one cut short.
//!
//! With `--page FILE`, it also answers `GET /` (with any query) with that
//! HTML file: the real-browser tests serve their page with it, in the
//! client namespace, and read what the page reports from the same log.
//!
//! Usage: cors-test-server --log FILE --listen ADDR [--listen ADDR ...]
//!        [--read-timeout-ms MS] [--head-dir DIR] [--page FILE]

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

/// The longest request head read (longer: 400): more than the filter's
/// largest `max_head_bytes`, so that what keeps a long head out in the
/// tests is the filter, not this server.
const MAX_HEAD: usize = 80 * 1024;
/// The most of a request body read before answering: room for the
/// browser tests' 5 MB upload.
const MAX_BODY: usize = 8 * 1024 * 1024;
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The answer's header saying how many bytes of the request body the server
/// read (exposed to cross-origin pages).
const BODY_LENGTH_HEADER: &str = "X-Body-Length";

fn main() -> Result<()> {
    // Never outlive the test that started us.
    // SAFETY: prctl with constant arguments.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) };
    let mut listen = Vec::new();
    let mut log = None;
    let mut head_dir = None;
    let mut read_timeout = DEFAULT_READ_TIMEOUT;
    let mut page = None;
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
            "--page" => {
                let file = PathBuf::from(args.next().context("--page needs a file")?);
                let html = std::fs::read(&file)
                    .with_context(|| format!("cannot read the page {}", file.display()))?;
                page = Some(html);
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    let log = Arc::new(Log {
        requests: log.context("--log FILE is required")?,
        head_dir,
        heads: AtomicU64::new(0),
    });
    let page = Arc::new(page);
    if listen.is_empty() {
        bail!("at least one --listen ADDR is required");
    }
    let mut threads = Vec::new();
    for addr in listen {
        let listener =
            TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
        let (log, page) = (Arc::clone(&log), Arc::clone(&page));
        threads.push(std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (log, page) = (Arc::clone(&log), Arc::clone(&page));
                std::thread::spawn(move || {
                    if let Err(e) = serve(stream, &log, read_timeout, page.as_deref()) {
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

fn serve(
    mut stream: TcpStream,
    log: &Log,
    read_timeout: Duration,
    page: Option<&[u8]>,
) -> Result<()> {
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
                let body_len = header(&request, "content-length")
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                let requested_headers = header(&request, "access-control-request-headers")
                    .map(|v| format!("Access-Control-Allow-Headers: {v}\r\n"))
                    .unwrap_or_default();
                // A body left unread when the socket closes makes the kernel
                // reset the connection, which a browser may see before the
                // answer.
                let body_read = read_body(&mut stream, filled - head_len, body_len)?;
                if let (Some(html), "GET", true) = (page, method, is_page(path)) {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                         Content-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
                        html.len()
                    );
                    stream.write_all(head.as_bytes())?;
                    stream.write_all(html)?;
                    return Ok(());
                }
                let response = match (method, origin) {
                    // Whatever method and headers the preflight asks for.
                    ("OPTIONS", Some(origin)) => format!(
                        "HTTP/1.1 204 No Content\r\nAccess-Control-Allow-Origin: {origin}\r\n\
                         Access-Control-Allow-Methods: GET, POST, PUT, PATCH, DELETE\r\n\
                         {requested_headers}\
                         Access-Control-Allow-Credentials: true\r\nConnection: close\r\n\r\n"
                    ),
                    (_, origin) => {
                        let allow = origin
                            .map(|o| format!("Access-Control-Allow-Origin: {o}\r\n"))
                            .unwrap_or_default();
                        // How much of the body arrived, readable by a page
                        // of any origin.
                        format!(
                            "HTTP/1.1 200 OK\r\n{allow}{BODY_LENGTH_HEADER}: {body_read}\r\n\
                             Access-Control-Expose-Headers: {BODY_LENGTH_HEADER}\r\n\
                             Content-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
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

/// The value of the first header `name` (case-insensitive), if it is text.
fn header<'a>(request: &httparse::Request<'_, 'a>, name: &str) -> Option<&'a str> {
    request
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .and_then(|h| std::str::from_utf8(h.value).ok())
}

/// Reads the rest of a `len`-byte body of which `have` bytes came with the
/// head, up to [`MAX_BODY`]; a body that stops coming ends the read.
/// Returns how many bytes of the body arrived, those with the head included.
fn read_body(stream: &mut TcpStream, have: usize, len: usize) -> Result<usize> {
    let mut read = have.min(len);
    let mut left = len.min(MAX_BODY).saturating_sub(have);
    let mut buf = vec![0u8; 64 * 1024];
    while left > 0 {
        let want = left.min(buf.len());
        match stream.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => {
                left -= n;
                read += n;
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
            Err(e) => return Err(e).context("cannot read a request body"),
        }
    }
    Ok(read)
}

/// Whether `path` is the page of `--page`: `/`, with or without a query.
fn is_page(path: &str) -> bool {
    path == "/" || path.starts_with("/?")
}
