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
//! With `--keep-alive`, a connection stays open after an answer (which then
//! has no `Connection: close`) and serves the next request on it, until the
//! client closes it, asks `Connection: close`, or the read timeout passes
//! with no new request: as an application behind a proxy's pool of
//! keep-alive connections does.
//!
//! With `--proxy-protocol`, every connection must start with a PROXY
//! protocol header, version 1 (text) or 2 (binary), as HAProxy's
//! `send-proxy`/`send-proxy-v2` write it; a connection that does not is
//! closed without an answer, as nginx's `listen ... proxy_protocol` does.
//!
//! With `--connections FILE`, every connection accepted appends a line to
//! FILE: `PEER` and, with `--proxy-protocol`, the header's version and the
//! source it names (`PEER v2 SRC`, `v2 LOCAL` when it names none): how a
//! test counts the connections a proxy opened to the application.
//!
//! Usage: cors-test-server --log FILE --listen ADDR [--listen ADDR ...]
//!        [--read-timeout-ms MS] [--head-dir DIR] [--page FILE]
//!        [--keep-alive] [--proxy-protocol] [--connections FILE]

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
    let mut keep_alive = false;
    let mut proxy_protocol = false;
    let mut connections = None;
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
            "--keep-alive" => keep_alive = true,
            "--proxy-protocol" => proxy_protocol = true,
            "--connections" => {
                connections = Some(PathBuf::from(
                    args.next().context("--connections needs a file")?,
                ))
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    let log = Arc::new(Log {
        requests: log.context("--log FILE is required")?,
        head_dir,
        heads: AtomicU64::new(0),
        connections,
    });
    let options = Arc::new(Options {
        read_timeout,
        page,
        keep_alive,
        proxy_protocol,
    });
    if listen.is_empty() {
        bail!("at least one --listen ADDR is required");
    }
    let mut threads = Vec::new();
    for addr in listen {
        let listener =
            TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
        let (log, options) = (Arc::clone(&log), Arc::clone(&options));
        threads.push(std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (log, options) = (Arc::clone(&log), Arc::clone(&options));
                std::thread::spawn(move || {
                    if let Err(e) = serve(stream, &log, &options) {
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
    /// One line per connection accepted.
    connections: Option<PathBuf>,
}

/// How connections are served.
struct Options {
    read_timeout: Duration,
    /// The HTML of `--page`.
    page: Option<Vec<u8>>,
    keep_alive: bool,
    proxy_protocol: bool,
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

    fn connection(&self, line: &str) -> Result<()> {
        match &self.connections {
            Some(file) => append(file, format!("{line}\n").as_bytes()),
            None => Ok(()),
        }
    }
}

/// What reading from the connection gave.
enum Read {
    /// More bytes are in the buffer.
    More,
    /// The connection ended (closed, reset before anything came, or the
    /// read timeout passed): nothing to answer.
    End,
}

/// Reads more of the connection into `buf[*filled..]`.
fn read_more(stream: &mut TcpStream, buf: &mut [u8], filled: &mut usize) -> Result<Read> {
    match stream.read(&mut buf[*filled..]) {
        Ok(0) => Ok(Read::End),
        Ok(n) => {
            *filled += n;
            Ok(Read::More)
        }
        // The read timeout: the connection is closed, as a server closes
        // one whose request head does not come.
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(Read::End),
        // The client gave up on a request the filter dropped and reset
        // the connection (the tests' raw client does): nothing arrived.
        Err(e) if e.kind() == ErrorKind::ConnectionReset && *filled == 0 => Ok(Read::End),
        Err(e) => Err(e).context("cannot read a request"),
    }
}

fn serve(mut stream: TcpStream, log: &Log, options: &Options) -> Result<()> {
    stream.set_read_timeout(Some(options.read_timeout))?;
    let peer = stream
        .peer_addr()
        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
    let mut buf = vec![0u8; MAX_HEAD];
    let mut filled = 0;
    if options.proxy_protocol {
        let proxied = loop {
            match proxy_header(&buf[..filled]) {
                Proxy::Partial if filled < PROXY_V1_MAX.max(PROXY_V2_MAX) => {}
                Proxy::Partial | Proxy::Invalid => {
                    log.connection(&format!("{peer} bad-proxy-header"))?;
                    return Ok(());
                }
                Proxy::Header { len, describe } => {
                    buf.copy_within(len..filled, 0);
                    filled -= len;
                    break describe;
                }
            }
            if let Read::End = read_more(&mut stream, &mut buf, &mut filled)? {
                log.connection(&format!("{peer} no-proxy-header"))?;
                return Ok(());
            }
        };
        log.connection(&format!("{peer} {proxied}"))?;
    } else {
        log.connection(&peer)?;
    }
    loop {
        // A whole request head, from what is in the buffer and what comes.
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut request = httparse::Request::new(&mut headers);
        let head_len = match request.parse(&buf[..filled]) {
            Ok(httparse::Status::Complete(head_len)) => head_len,
            Ok(httparse::Status::Partial) if filled < MAX_HEAD => {
                if let Read::End = read_more(&mut stream, &mut buf, &mut filled)? {
                    return Ok(());
                }
                continue;
            }
            _ => {
                stream.write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")?;
                return Ok(());
            }
        };
        let method = request.method.unwrap_or("-").to_owned();
        let path = request.path.unwrap_or("-").to_owned();
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
        let client_closes = header(&request, "connection")
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")));
        // A body left unread when the socket closes makes the kernel
        // reset the connection, which a browser may see before the
        // answer.
        let in_buffer = (filled - head_len).min(body_len);
        let body_read = read_body(&mut stream, in_buffer, body_len)?;
        // The connection is kept only where the whole body was read.
        let keep = options.keep_alive && !client_closes && body_read == body_len;
        let connection = if keep { "" } else { "Connection: close\r\n" };
        if let (Some(html), "GET", true) = (&options.page, method.as_str(), is_page(&path)) {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                 Content-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
                html.len()
            );
            stream.write_all(head.as_bytes())?;
            stream.write_all(html)?;
            return Ok(());
        }
        let response = match (method.as_str(), origin) {
            // Whatever method and headers the preflight asks for.
            ("OPTIONS", Some(origin)) => format!(
                "HTTP/1.1 204 No Content\r\nAccess-Control-Allow-Origin: {origin}\r\n\
                 Access-Control-Allow-Methods: GET, POST, PUT, PATCH, DELETE\r\n\
                 {requested_headers}\
                 Access-Control-Allow-Credentials: true\r\n{connection}\r\n"
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
                     Content-Type: text/plain\r\nContent-Length: 3\r\n{connection}\r\nok\n"
                )
            }
        };
        stream.write_all(response.as_bytes())?;
        if !keep {
            return Ok(());
        }
        // The next request's bytes that came with this one.
        let used = head_len + in_buffer;
        buf.copy_within(used..filled, 0);
        filled -= used;
    }
}

/// The longest PROXY header of version 1, its line end included.
const PROXY_V1_MAX: usize = 107;
/// The version 2 signature.
const PROXY_V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest version 2 header read: the fixed 16 bytes and a length
/// field's most.
const PROXY_V2_MAX: usize = 16 + u16::MAX as usize;

/// What the start of a connection holds.
#[derive(Debug, PartialEq, Eq)]
enum Proxy {
    /// Not enough bytes to tell yet.
    Partial,
    /// A PROXY header of `len` bytes; `describe` says which version and
    /// the source it names: `v1 SRC`, `v2 SRC`, `v2 LOCAL`, ...
    Header { len: usize, describe: String },
    /// Something else: not a PROXY header, or a malformed one.
    Invalid,
}

/// Reads a PROXY protocol header (version 1 or 2) at the start of `bytes`.
fn proxy_header(bytes: &[u8]) -> Proxy {
    let v1 = b"PROXY ";
    let v2 = PROXY_V2_SIGNATURE;
    let starts =
        |sig: &[u8]| bytes[..bytes.len().min(sig.len())] == sig[..bytes.len().min(sig.len())];
    if bytes.is_empty() {
        return Proxy::Partial;
    }
    if starts(v1) {
        let Some(end) = bytes.windows(2).position(|w| w == b"\r\n") else {
            return if bytes.len() < PROXY_V1_MAX {
                Proxy::Partial
            } else {
                Proxy::Invalid
            };
        };
        if end + 2 > PROXY_V1_MAX {
            return Proxy::Invalid;
        }
        let Ok(line) = std::str::from_utf8(&bytes[..end]) else {
            return Proxy::Invalid;
        };
        let words: Vec<&str> = line.split(' ').collect();
        let describe = match words[..] {
            ["PROXY", "UNKNOWN", ..] => "v1 UNKNOWN".to_owned(),
            ["PROXY", "TCP4" | "TCP6", src, _dst, sport, _dport] => {
                let Ok(ip) = src.parse::<std::net::IpAddr>() else {
                    return Proxy::Invalid;
                };
                let Ok(port) = sport.parse::<u16>() else {
                    return Proxy::Invalid;
                };
                format!("v1 {}", SocketAddr::new(ip, port))
            }
            _ => return Proxy::Invalid,
        };
        return Proxy::Header {
            len: end + 2,
            describe,
        };
    }
    if !starts(v2) {
        return Proxy::Invalid;
    }
    if bytes.len() < 16 {
        return Proxy::Partial;
    }
    let (version_command, family) = (bytes[12], bytes[13]);
    let len = 16 + usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    if version_command >> 4 != 2 {
        return Proxy::Invalid;
    }
    if bytes.len() < len {
        return Proxy::Partial;
    }
    let addresses = &bytes[16..len];
    let describe = match (version_command & 0xf, family) {
        (0, _) => "v2 LOCAL".to_owned(),
        (1, 0x11) if addresses.len() >= 12 => {
            let ip: [u8; 4] = addresses[..4].try_into().expect("4 bytes");
            let port = u16::from_be_bytes([addresses[8], addresses[9]]);
            format!("v2 {}", SocketAddr::from((ip, port)))
        }
        (1, 0x21) if addresses.len() >= 36 => {
            let ip: [u8; 16] = addresses[..16].try_into().expect("16 bytes");
            let port = u16::from_be_bytes([addresses[32], addresses[33]]);
            format!("v2 {}", SocketAddr::from((ip, port)))
        }
        (1, 0x00) => "v2 UNSPEC".to_owned(),
        _ => return Proxy::Invalid,
    };
    Proxy::Header { len, describe }
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

#[cfg(test)]
mod tests {
    use super::{PROXY_V2_SIGNATURE, Proxy, proxy_header};

    fn header(len: usize, describe: &str) -> Proxy {
        Proxy::Header {
            len,
            describe: describe.to_owned(),
        }
    }

    #[test]
    fn proxy_v1_headers() {
        let line = b"PROXY TCP4 198.18.0.1 198.18.0.6 40000 8080\r\nOPTIONS / HTTP/1.1\r\n";
        assert_eq!(proxy_header(line), header(45, "v1 198.18.0.1:40000"));
        assert_eq!(proxy_header(&line[..20]), Proxy::Partial);
        assert_eq!(proxy_header(b"PROXY UNKNOWN\r\n"), header(15, "v1 UNKNOWN"));
        assert_eq!(
            proxy_header(b"PROXY TCP6 fd00::1 fd00::2 1 2\r\n"),
            header(32, "v1 [fd00::1]:1")
        );
        assert_eq!(proxy_header(b"PROXY TCP4 x y 1 2\r\n"), Proxy::Invalid);
        assert_eq!(proxy_header(b"OPTIONS / HTTP/1.1\r\n"), Proxy::Invalid);
        assert_eq!(proxy_header(&[b'P'; 200]), Proxy::Invalid);
    }

    #[test]
    fn proxy_v2_headers() {
        let mut v4 = PROXY_V2_SIGNATURE.to_vec();
        v4.extend([0x21, 0x11, 0, 15]);
        v4.extend([198, 18, 0, 1, 198, 18, 0, 6, 0x9c, 0x40, 0x1f, 0x90]);
        // A TLV (type, length, value) after the addresses.
        v4.extend([0x04, 0, 0]);
        v4.extend(b"OPTIONS / HTTP/1.1\r\n");
        assert_eq!(proxy_header(&v4), header(31, "v2 198.18.0.1:40000"));
        assert_eq!(proxy_header(&v4[..14]), Proxy::Partial);
        assert_eq!(proxy_header(&v4[..20]), Proxy::Partial);
        let mut local = PROXY_V2_SIGNATURE.to_vec();
        local.extend([0x20, 0x00, 0, 0]);
        assert_eq!(proxy_header(&local), header(16, "v2 LOCAL"));
        let mut v1_version = local.clone();
        v1_version[12] = 0x11;
        assert_eq!(proxy_header(&v1_version), Proxy::Invalid);
        let mut v6 = PROXY_V2_SIGNATURE.to_vec();
        v6.extend([0x21, 0x21, 0, 36]);
        let mut src = [0u8; 16];
        src[..2].copy_from_slice(&[0xfd, 0x00]);
        src[15] = 1;
        v6.extend(src);
        v6.extend([0u8; 16]);
        v6.extend([0, 80, 0, 81]);
        assert_eq!(proxy_header(&v6), header(52, "v2 [fd00::1]:80"));
    }
}
