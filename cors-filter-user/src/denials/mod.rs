//! Denial events from the kernel: read from the `DENIALS` ring buffer as
//! they come, logged (at most [`LOG_LINES_PER_WINDOW`] lines a second, plus
//! a line saying how many were not), counted per origin for `/metrics` and
//! `stats`, and saved in the state directory every [`SAVE_EVERY`] and at
//! exit, so that the counts survive restarts. Under systemd the lines go to
//! the journal with fields of their own ([`journal`]).

mod counts;
mod event;
pub mod journal;
pub(crate) mod ratelimit;

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use aya::maps::{MapData, RingBuf};
use cors_filter_common::event::DenialReason;
use tokio::{
    io::{Interest, unix::AsyncFd},
    time::{Interval, MissedTickBehavior},
};

pub use counts::{COUNTS_FILE, DeniedByOrigin, OriginCounts, TopOrigins};
pub use event::{Denial, OTHER_ORIGINS, decode};

use crate::state::StateDir;
use counts::SharedCounts;
use event::Reason;
use journal::DenialLog;
use ratelimit::LogLimiter;

/// Denial lines logged per [`LOG_WINDOW`] at most.
pub const LOG_LINES_PER_WINDOW: u32 = 10;
pub const LOG_WINDOW: Duration = Duration::from_secs(1);
/// A port's HTTP/2 line is logged this often at most.
pub const HTTP2_LOG_EVERY: Duration = Duration::from_secs(60);
/// How often the counts are saved while denials come in.
pub const SAVE_EVERY: Duration = Duration::from_secs(2);
/// How often the ring buffer is read, and the summary of suppressed lines
/// and the save are looked at. The program wakes the reader only once
/// records pile up (`event::WAKEUP_BYTES`): a few denials are read on this
/// timer.
const TICK: Duration = Duration::from_millis(100);
/// Records read in one go before the daemon's other work gets a turn: a
/// full 256 KiB buffer holds 992.
const MAX_RECORDS_PER_READ: usize = 4096;

/// One line per port per [`HTTP2_LOG_EVERY`] at most.
#[derive(Default)]
struct PerPortLimit {
    logged: BTreeMap<u16, Instant>,
}

impl PerPortLimit {
    /// Whether a line for `port` may be logged at `now` (then it counts as
    /// logged).
    fn admit(&mut self, port: u16, now: Instant) -> bool {
        let last = self.logged.get(&port);
        if last.is_some_and(|&t| now.saturating_duration_since(t) < HTTP2_LOG_EVERY) {
            return false;
        }
        self.logged.insert(port, now);
        true
    }
}

/// Logging, counting and saving, without the ring buffer: what the daemon
/// does with each record.
pub struct Tracker {
    counts: SharedCounts,
    limiter: LogLimiter,
    /// Where the lines go: stderr, or the journal with fields.
    lines: DenialLog,
    /// When each port's last HTTP/2 line was logged.
    http2_logged: PerPortLimit,
    state: StateDir,
    unsaved: bool,
    last_save: Instant,
}

impl Tracker {
    /// Loads the counts saved in `state_dir`, if any; a corrupt file is
    /// moved aside (see [`OriginCounts::load_or_set_aside`]).
    pub fn load(state_dir: &Path) -> Result<Tracker> {
        let state = StateDir::open(state_dir)?;
        let counts = OriginCounts::load_or_set_aside(&state.path(COUNTS_FILE))?.unwrap_or_default();
        Ok(Tracker {
            counts: SharedCounts::new(counts),
            limiter: LogLimiter::new(LOG_LINES_PER_WINDOW, LOG_WINDOW),
            lines: DenialLog::from_env()?,
            http2_logged: PerPortLimit::default(),
            state,
            unsaved: false,
            last_save: Instant::now(),
        })
    }

    /// The per-origin series `/metrics` exports: `top` origins, chosen as
    /// [`OriginCounts::export`] says.
    pub fn exported(&self, top: usize) -> Result<DeniedByOrigin> {
        self.counts.with(|c| c.export(top))?;
        Ok(DeniedByOrigin {
            counts: self.counts.clone(),
        })
    }

    /// One ring buffer record, read at `now`.
    pub fn record(&mut self, record: &[u8], now: Instant) -> Result<()> {
        self.flush_log(now);
        match event::decode(record) {
            Ok(denial) if denial.reason == Reason::Known(DenialReason::Http2) => {
                // Every HTTP/2 connection reports one: a line per port a
                // minute says it, the `http2` counter counts them all.
                if self.http2_logged.admit(denial.dest_port, now) {
                    let line = format!(
                        "{denial}: the filter cannot read HTTP/2 frames; refused unless the config says http2 = \"pass\" (this line at most once a minute per port; see the http2 counter)"
                    );
                    self.lines.log(log::Level::Warn, &denial, &line);
                }
            }
            Ok(denial) => {
                if denial.reason.counts_per_origin() {
                    self.counts.with(|c| c.record(&denial.origin))?;
                    self.unsaved = true;
                }
                if self.limiter.admit(now) {
                    self.lines
                        .log(log::Level::Info, &denial, &denial.to_string());
                }
            }
            Err(e) => {
                if self.limiter.admit(now) {
                    log::error!("cannot read the DENIALS ring buffer: {e}");
                }
            }
        }
        Ok(())
    }

    /// The periodic work: the summary of a window that suppressed lines,
    /// and the save when one is due. A failed save is logged and tried
    /// again; it does not stop the filter.
    pub fn tick(&mut self, now: Instant) {
        self.flush_log(now);
        if self.unsaved
            && now.saturating_duration_since(self.last_save) >= SAVE_EVERY
            && let Err(e) = self.save(now)
        {
            log::error!("{e:#}");
        }
    }

    /// At exit: the last summary, and the save.
    pub fn finish(&mut self) -> Result<()> {
        if let Some(suppressed) = self.limiter.take() {
            log::info!("{}", suppressed.line(&self.limiter));
        }
        self.save(Instant::now())
    }

    fn flush_log(&mut self, now: Instant) {
        if let Some(suppressed) = self.limiter.flush(now) {
            log::info!("{}", suppressed.line(&self.limiter));
        }
    }

    fn save(&mut self, now: Instant) -> Result<()> {
        let counts = self.counts.with(|c| c.clone())?;
        counts
            .save(&self.state)
            .context("cannot save the per-origin denial counts")?;
        self.unsaved = false;
        self.last_save = now;
        Ok(())
    }
}

/// The daemon's reader of the `DENIALS` ring buffer.
pub struct Denials {
    ring: AsyncFd<RingBuf<MapData>>,
    tick: Interval,
    tracker: Tracker,
}

impl Denials {
    pub fn start(ring: RingBuf<MapData>, tracker: Tracker) -> Result<Denials> {
        // SAFETY: the ring buffer owns its map's fd, which stays open and
        // the same for as long as it lives, and the AsyncFd owns it.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| anyhow::anyhow!("cannot poll the DENIALS ring buffer: {e}"))?;
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Ok(Denials {
            ring,
            tick,
            tracker,
        })
    }

    /// Waits for records or the next tick and handles them. Cancel-safe:
    /// nothing is taken from the ring buffer before the last await.
    pub async fn step(&mut self) -> Result<()> {
        let Denials {
            ring,
            tick,
            tracker,
        } = self;
        tokio::select! {
            ready = ring.readable_mut() => {
                let mut guard = ready.context("the DENIALS ring buffer failed")?;
                if read_records(guard.get_inner_mut(), tracker)? {
                    guard.clear_ready();
                }
            }
            _ = tick.tick() => {
                read_records(ring.get_mut(), tracker)?;
                tracker.tick(Instant::now());
            }
        }
        Ok(())
    }

    /// Reads what is in the ring buffer (at most a full buffer: records
    /// written after that stay for the next reader of the pinned buffer),
    /// logs the last summary and saves the counts.
    pub fn finish(mut self) -> Result<()> {
        read_records(self.ring.get_mut(), &mut self.tracker)?;
        self.tracker.finish()
    }
}

/// Handles up to [`MAX_RECORDS_PER_READ`] records; true when the ring
/// buffer is empty.
fn read_records(ring: &mut RingBuf<MapData>, tracker: &mut Tracker) -> Result<bool> {
    let now = Instant::now();
    for _ in 0..MAX_RECORDS_PER_READ {
        let Some(item) = ring.next() else {
            return Ok(true);
        };
        tracker.record(&item, now)?;
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http2_lines_are_logged_once_a_minute_per_port() {
        let mut limit = PerPortLimit::default();
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert!(limit.admit(8080, at(0)));
        assert!(!limit.admit(8080, at(1)));
        assert!(limit.admit(8081, at(1)));
        assert!(!limit.admit(8080, at(59)));
        assert!(limit.admit(8080, at(60)));
        assert!(!limit.admit(8080, at(119)));
        assert!(!limit.admit(8081, at(60)));
        assert!(limit.admit(8081, at(61)));
    }
}
