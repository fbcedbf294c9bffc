//! Requests as raw bytes, from the client namespace to the test server:
//! for what curl will not send (odd bytes in a header, heads longer than the
//! filter judges) and for bursts faster than a process per request.
//!
//! The requests are sent from a thread that joins the client's network
//! namespace (`setns` affects that thread only) and ends with its work.
//! Every connection is bounded in time; one left unanswered is closed with
//! a reset, so that its dropped request is not retransmitted after the test
//! has read its counts.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream},
    os::fd::AsRawFd as _,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    harness::client::Family,
    harness::netns::{NetnsPair, SERVER_V4, SERVER_V6},
    harness::server::PORT,
};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest answer read.
const MAX_ANSWER: usize = 64 * 1024;

/// A CORS preflight whose `Origin` value is `origin`, byte for byte.
pub fn preflight(origin: &[u8]) -> Vec<u8> {
    let mut request = b"OPTIONS /api/items HTTP/1.1\r\nHost: server\r\nOrigin: ".to_vec();
    request.extend_from_slice(origin);
    request
        .extend_from_slice(b"\r\nAccess-Control-Request-Method: PUT\r\nConnection: close\r\n\r\n");
    request
}

pub fn server_addr(family: Family) -> Result<SocketAddr> {
    let ip: IpAddr = match family {
        Family::V4 => SERVER_V4.parse()?,
        Family::V6 => SERVER_V6.parse()?,
    };
    Ok(SocketAddr::new(ip, PORT))
}

/// Sends each request on a connection of its own, one after the other,
/// and returns what the server answered to each: `None` when nothing came
/// within `wait` (a dropped request). Connecting must work.
pub fn send_all(
    pair: &NetnsPair,
    family: Family,
    requests: &[Vec<u8>],
    wait: Duration,
) -> Result<Vec<Option<Vec<u8>>>> {
    let ns_path = pair.client_ns_path();
    let addr = server_addr(family)?;
    let requests = requests.to_vec();
    let worker = std::thread::spawn(move || -> Result<Vec<Option<Vec<u8>>>> {
        enter_netns(&ns_path)?;
        requests
            .iter()
            .enumerate()
            .map(|(i, request)| {
                exchange(addr, request, wait).with_context(|| format!("request {i} to {addr}"))
            })
            .collect()
    });
    match worker.join() {
        Ok(result) => result,
        Err(_) => bail!("the client thread panicked"),
    }
}

/// Sends one request; see [`send_all`].
pub fn send(
    pair: &NetnsPair,
    family: Family,
    request: &[u8],
    wait: Duration,
) -> Result<Option<Vec<u8>>> {
    let mut answers = send_all(pair, family, &[request.to_vec()], wait)?;
    Ok(answers.pop().flatten())
}

/// Moves the calling thread into the network namespace at `path`.
pub fn enter_netns(path: &str) -> Result<()> {
    let ns = std::fs::File::open(path)
        .with_context(|| format!("cannot open network namespace {path}"))?;
    // SAFETY: setns on a descriptor we own; it changes this thread's
    // network namespace only.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot enter network namespace {path}"));
    }
    Ok(())
}

/// Sends `request` on a connection of its own and returns the answer, or
/// `None` when nothing came within `wait` (the connection is then closed
/// with a reset, see [`reset_on_close`]).
pub fn exchange(addr: SocketAddr, request: &[u8], wait: Duration) -> Result<Option<Vec<u8>>> {
    let mut stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.write_all(request).context("cannot send")?;
    let deadline = Instant::now() + wait;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || answer.len() >= MAX_ANSWER {
            break;
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            // The server closes after its answer; a reset then is fine.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !answer.is_empty() => {
                break;
            }
            Err(e) => return Err(e).context("cannot read the answer"),
        }
    }
    if answer.is_empty() {
        reset_on_close(&stream)?;
        return Ok(None);
    }
    Ok(Some(answer))
}

/// `SO_LINGER` 0: closing resets the connection, and the kernel gives up
/// the unacknowledged (dropped) request instead of retransmitting it.
fn reset_on_close(stream: &TcpStream) -> Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket we own, and a `linger` of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot set SO_LINGER");
    }
    Ok(())
}
