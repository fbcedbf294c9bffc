//! `cors-test-client`: sends CORS preflights in a loop, one TCP connection
//! each, cycling through the given origins, and prints one JSON summary per
//! origin: how many were sent, answered, and left without an answer.
//!
//! Each request is one connection closed with a RST (see `abort_on_close`),
//! so it reaches the server's interface as exactly one data segment, with
//! `--timeout-ms` below TCP's 200 ms minimum retransmission timeout.
//!
//! The loop is bounded in count (`--max-requests`) and time (`--seconds`),
//! and also ends when `--stop-file` appears, so that a test can stop it at
//! a point of its choosing. It talks to the one `--target` it is given,
//! which the tests set to their own server namespace.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

#[derive(Default)]
struct Tally {
    sent: u64,
    /// A response head arrived.
    answered: u64,
    /// Connected and sent, but nothing came back within the timeout: what
    /// a dropped request looks like.
    unanswered: u64,
    /// The connection was reset (what `--action reset` looks like).
    reset: u64,
    /// No connection at all (server down, or the handshake dropped).
    connect_failed: u64,
}

struct Args {
    target: SocketAddr,
    origins: Vec<String>,
    seconds: f64,
    max_requests: u64,
    timeout: Duration,
    stop_file: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut args = std::env::args().skip(1);
    let mut target = None;
    let mut origins = Vec::new();
    let mut seconds = 10.0;
    let mut max_requests = 100_000;
    let mut timeout = Duration::from_millis(300);
    let mut stop_file = None;
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--target" => target = Some(value()?.parse().context("--target")?),
            "--origin" => origins.push(value()?),
            "--seconds" => seconds = value()?.parse().context("--seconds")?,
            "--max-requests" => max_requests = value()?.parse().context("--max-requests")?,
            "--timeout-ms" => {
                timeout = Duration::from_millis(value()?.parse().context("--timeout-ms")?)
            }
            "--stop-file" => stop_file = Some(PathBuf::from(value()?)),
            other => bail!("unknown argument {other:?}"),
        }
    }
    if origins.is_empty() {
        bail!("give at least one --origin");
    }
    if !(seconds > 0.0 && seconds <= 600.0) {
        bail!("--seconds must be in (0, 600]");
    }
    Ok(Args {
        target: target.context("--target is required")?,
        origins,
        seconds,
        max_requests,
        timeout,
        stop_file,
    })
}

enum Outcome {
    Answered,
    Unanswered,
    Reset,
    ConnectFailed,
}

/// Closing with `SO_LINGER` 0 ends the connection with a RST at once, so a
/// request that got no answer is never retransmitted after the loop gave up
/// on it: each request is exactly one data segment, and the filter's
/// counters can be compared with the tallies one to one.
fn abort_on_close(stream: &TcpStream) {
    use std::os::fd::AsRawFd as _;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket descriptor and a `linger` of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
}

fn preflight(target: SocketAddr, origin: &str, timeout: Duration) -> Outcome {
    let Ok(mut stream) = TcpStream::connect_timeout(&target, timeout) else {
        return Outcome::ConnectFailed;
    };
    abort_on_close(&stream);
    let request = format!(
        "OPTIONS /resource HTTP/1.1\r\nHost: {target}\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: PUT\r\nConnection: close\r\n\r\n"
    );
    let deadline = Instant::now() + timeout;
    if stream.write_all(request.as_bytes()).is_err() {
        return Outcome::Reset;
    }
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            return Outcome::Unanswered;
        }
        match stream.read(&mut buf) {
            Ok(0) => return Outcome::Unanswered,
            Ok(n) => {
                received.extend_from_slice(&buf[..n]);
                if received.windows(4).any(|w| w == b"\r\n\r\n") {
                    return Outcome::Answered;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Outcome::Reset,
            Err(_) => return Outcome::Unanswered,
        }
    }
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let mut tallies: BTreeMap<&str, Tally> = BTreeMap::new();
    let end = Instant::now() + Duration::from_secs_f64(args.seconds);
    let mut sent = 0u64;
    while sent < args.max_requests && Instant::now() < end {
        if args.stop_file.as_ref().is_some_and(|f| f.exists()) {
            break;
        }
        let origin = &args.origins[(sent % args.origins.len() as u64) as usize];
        let tally = tallies.entry(origin).or_default();
        tally.sent += 1;
        match preflight(args.target, origin, args.timeout) {
            Outcome::Answered => tally.answered += 1,
            Outcome::Unanswered => tally.unanswered += 1,
            Outcome::Reset => tally.reset += 1,
            Outcome::ConnectFailed => tally.connect_failed += 1,
        }
        sent += 1;
    }
    let summary: serde_json::Map<String, serde_json::Value> = tallies
        .into_iter()
        .map(|(origin, t)| {
            let counts = serde_json::json!({
                "sent": t.sent,
                "answered": t.answered,
                "unanswered": t.unanswered,
                "reset": t.reset,
                "connect_failed": t.connect_failed,
            });
            (origin.to_owned(), counts)
        })
        .collect();
    println!("{}", serde_json::Value::Object(summary));
    Ok(())
}
