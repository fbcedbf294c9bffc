//! The `/metrics` listener's defences: whoever can reach the port (any
//! local user, with the default loopback address) must not be able to take
//! the daemon down, or the denial events, per-origin counts and reloads it
//! serves besides.
//!
//! - At most [`MAX_CONNECTIONS`] connections are served at once; one over
//!   the bound is accepted and closed at once, so that the kernel's accept
//!   queue drains and a scrape that comes later finds a slot.
//! - Each connection has [`REQUEST_DEADLINE`] to send its request and
//!   [`CONNECTION_DEADLINE`] in all to take its answer (slowloris), after
//!   which it is closed.
//! - An accept error (EMFILE when the process is out of file descriptors,
//!   ENFILE, ENOBUFS...) is logged, at most [`ERROR_LINES_PER_WINDOW`]
//!   lines per [`ERROR_WINDOW`] with a count of the rest, and accepting
//!   goes on after [`ACCEPT_RETRY_PAUSE`]: it never ends the listener.

use std::{future::Future, sync::Arc, time::Duration};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    time::Instant,
};

use crate::denials::ratelimit::LogLimiter;

/// Connections served at once. A scrape needs one; the rest of the bound is
/// headroom for several scrapers and a few stuck clients, and keeps the
/// file descriptors the listener can use far below the 1024 of systemd's
/// default soft limit.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a connection may take to send its request and read the answer.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(5);
/// How long it may take to send its request: a scraper sends it at once,
/// and a client that sends nothing gives its slot back sooner.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(2);
/// How long the listener waits after an accept error before trying again:
/// EMFILE does not clear by itself at once, and retrying at once would spin.
pub const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Accept-error lines logged per [`ERROR_WINDOW`] at most.
pub const ERROR_LINES_PER_WINDOW: u32 = 1;
pub const ERROR_WINDOW: Duration = Duration::from_secs(10);

const _: () = assert!(MAX_CONNECTIONS > 0 && MAX_CONNECTIONS < 1024);
const _: () = assert!(REQUEST_DEADLINE.as_millis() < CONNECTION_DEADLINE.as_millis());

/// Accepts connections on `listener` for ever, each answered by `serve`
/// within [`CONNECTION_DEADLINE`] with at most [`MAX_CONNECTIONS`] at once.
pub async fn accept_forever<F, Fut>(listener: TcpListener, serve: F)
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut errors = LogLimiter::new(ERROR_LINES_PER_WINDOW, ERROR_WINDOW);
    let mut refused = LogLimiter::new(ERROR_LINES_PER_WINDOW, ERROR_WINDOW);
    loop {
        let accepted = listener.accept().await;
        let now = Instant::now().into_std();
        if let Some(suppressed) = errors.flush(now) {
            log::warn!(
                "{} more metrics listener accept error(s) not logged in the last {ERROR_WINDOW:?}",
                suppressed.count
            );
        }
        if let Some(suppressed) = refused.flush(now) {
            log::warn!(
                "{} more metrics connection(s) closed unserved in the last {ERROR_WINDOW:?}: {MAX_CONNECTIONS} were being served",
                suppressed.count
            );
        }
        match accepted {
            Ok((stream, peer)) => match Arc::clone(&slots).try_acquire_owned() {
                Ok(slot) => {
                    let served = serve(stream);
                    tokio::spawn(async move {
                        if tokio::time::timeout(CONNECTION_DEADLINE, served)
                            .await
                            .is_err()
                        {
                            log::debug!(
                                "metrics connection from {peer} closed: not done within {CONNECTION_DEADLINE:?}"
                            );
                        }
                        drop(slot);
                    });
                }
                Err(_) => {
                    // Closed here, unserved: its descriptor is free at once.
                    drop(stream);
                    if refused.admit(now) {
                        log::warn!(
                            "metrics connection from {peer} closed unserved: {MAX_CONNECTIONS} connections are being served (more are closed, and counted in one line per {ERROR_WINDOW:?})"
                        );
                    }
                }
            },
            Err(e) => {
                if errors.admit(now) {
                    log::warn!(
                        "metrics listener cannot accept a connection: {e}; trying again every {ACCEPT_RETRY_PAUSE:?} (more errors are counted in one line per {ERROR_WINDOW:?}); the filter and the rest of the daemon go on"
                    );
                }
                tokio::time::sleep(ACCEPT_RETRY_PAUSE).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read as _, Write as _},
        net::TcpStream as StdStream,
        sync::atomic::{AtomicUsize, Ordering},
    };

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// A server on loopback whose handler waits for a line and answers
    /// "ok", counting the connections it serves.
    async fn server() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&served);
        tokio::spawn(accept_forever(listener, move |mut stream| {
            let count = Arc::clone(&count);
            async move {
                count.fetch_add(1, Ordering::SeqCst);
                let mut byte = [0u8; 1];
                while stream.read(&mut byte).await.is_ok_and(|n| n == 1) && byte[0] != b'\n' {}
                let _ = stream.write_all(b"ok").await;
            }
        }));
        (addr, served)
    }

    /// Idle connections hold every slot: one more is closed at once, and
    /// once the deadline closes the idle ones a client is served again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_over_the_bound_are_closed_and_idle_ones_time_out() {
        let (addr, served) = server().await;
        let idle: Vec<StdStream> = (0..MAX_CONNECTIONS)
            .map(|_| StdStream::connect(addr).unwrap())
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while served.load(Ordering::SeqCst) < MAX_CONNECTIONS {
            assert!(std::time::Instant::now() < deadline, "slots not taken");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let over = tokio::task::spawn_blocking(move || {
            let mut s = StdStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let _ = s.write_all(b"x\n");
            let mut answer = Vec::new();
            // Closed unserved: end of stream (or a reset), not a timeout.
            match s.read_to_end(&mut answer) {
                Ok(_) => assert!(answer.is_empty(), "{answer:?}"),
                Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
            }
        });
        over.await.unwrap();
        assert_eq!(served.load(Ordering::SeqCst), MAX_CONNECTIONS);
        // After the deadline the idle connections are closed...
        tokio::time::sleep(CONNECTION_DEADLINE + Duration::from_millis(300)).await;
        let answered = tokio::task::spawn_blocking(move || {
            let mut s = StdStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            s.write_all(b"x\n").unwrap();
            let mut answer = String::new();
            s.read_to_string(&mut answer).unwrap();
            answer
        });
        // ...and a new client is served.
        assert_eq!(answered.await.unwrap(), "ok");
        for mut s in idle {
            s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            let mut rest = Vec::new();
            match s.read_to_end(&mut rest) {
                Ok(_) => assert!(rest.is_empty(), "{rest:?}"),
                Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
            }
        }
    }
}
