//! Preflights sent in a loop from the client namespace while a test does
//! something to the filter (kills it, reloads it), and what came of them.
//!
//! Each request goes on a connection of its own (see
//! [`raw_client::exchange`]): one left unanswered is closed with a reset, so
//! a dropped request is exactly one data segment, never retransmitted once
//! the loop has given up on it, and the filter's counters can be compared
//! with the tallies one to one (with a wait below TCP's 200 ms minimum
//! retransmission timeout, not even within the wait).

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

use crate::{harness::client::Family, harness::netns::NetnsPair, harness::raw_client};

/// At most this many requests per loop, whatever its time bound.
const MAX_REQUESTS: u64 = 1_000_000;

/// What the loop got for one origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tally {
    pub sent: u64,
    /// An answer arrived.
    pub answered: u64,
    /// Connected and sent, but nothing came back within the wait: what a
    /// dropped request looks like.
    pub unanswered: u64,
    /// The connection was reset (what `--action reset` looks like).
    pub reset: u64,
    /// Any other failure (no connection at all, say).
    pub failed: u64,
}

type Tallies = BTreeMap<String, Tally>;

/// A running loop; [`PreflightLoop::finish`] stops it and reads its tallies.
pub struct PreflightLoop {
    stop: Arc<AtomicBool>,
    worker: Option<JoinHandle<Result<Tallies>>>,
}

impl PreflightLoop {
    /// Starts sending preflights over IPv4, cycling through `origins`, each
    /// waiting at most `wait` for an answer; the loop ends by itself after
    /// `limit` at the latest.
    pub fn start(
        pair: &NetnsPair,
        origins: &[&str],
        wait: Duration,
        limit: Duration,
    ) -> Result<PreflightLoop> {
        if origins.is_empty() {
            bail!("a preflight loop needs an origin");
        }
        let ns_path = pair.client_ns_path();
        let addr = raw_client::server_addr(Family::V4)?;
        let origins: Vec<String> = origins.iter().map(|o| o.to_string()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let worker = std::thread::spawn(move || -> Result<Tallies> {
            raw_client::enter_netns(&ns_path)?;
            let end = Instant::now() + limit;
            let mut tallies = Tallies::new();
            let mut sent = 0u64;
            while !stopped.load(Ordering::Relaxed) && sent < MAX_REQUESTS && Instant::now() < end {
                let origin = &origins[(sent % origins.len() as u64) as usize];
                let request = raw_client::preflight(origin.as_bytes());
                let tally = tallies.entry(origin.clone()).or_default();
                tally.sent += 1;
                match raw_client::exchange(addr, &request, wait) {
                    Ok(Some(_)) => tally.answered += 1,
                    Ok(None) => tally.unanswered += 1,
                    Err(e) if is_reset(&e) => tally.reset += 1,
                    Err(_) => tally.failed += 1,
                }
                sent += 1;
            }
            Ok(tallies)
        });
        Ok(PreflightLoop {
            stop,
            worker: Some(worker),
        })
    }

    /// Stops the loop and returns the tally for each origin.
    pub fn finish(mut self) -> Result<Tallies> {
        self.stop.store(true, Ordering::Relaxed);
        match self.worker.take().expect("running").join() {
            Ok(result) => result,
            Err(_) => bail!("the preflight loop panicked"),
        }
    }
}

fn is_reset(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset)
    })
}

impl Drop for PreflightLoop {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}
