//! The bound on denial log lines: a flood of denied preflights (an attack,
//! a misconfigured client) must not become a flood of log lines.
//!
//! Time is cut into windows; within one, at most `max_lines` lines are
//! logged and the rest counted. Once a window with suppressed lines is
//! over, one summary line says how many were not logged: at most
//! `max_lines + 1` lines per window whatever the rate.

use std::time::{Duration, Instant};

/// Lines not logged in a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Suppressed {
    pub count: u64,
}

impl Suppressed {
    pub fn line(self, limit: &LogLimiter) -> String {
        format!(
            "{} more denial(s) not logged (at most {} lines per {:?})",
            self.count, limit.max_lines, limit.window
        )
    }
}

pub struct LogLimiter {
    max_lines: u32,
    window: Duration,
    /// Start of the current window; `None` before the first line.
    window_start: Option<Instant>,
    lines: u32,
    suppressed: u64,
}

impl LogLimiter {
    pub const fn new(max_lines: u32, window: Duration) -> LogLimiter {
        LogLimiter {
            max_lines,
            window,
            window_start: None,
            lines: 0,
            suppressed: 0,
        }
    }

    /// Ends the current window if it is over at `now`; returns what it
    /// suppressed, if anything. Called for each line and periodically.
    pub fn flush(&mut self, now: Instant) -> Option<Suppressed> {
        let start = self.window_start?;
        if now.saturating_duration_since(start) < self.window {
            return None;
        }
        self.window_start = None;
        self.lines = 0;
        self.take()
    }

    /// Whether one more line may be logged at `now`. Call [`flush`](Self::flush)
    /// first, so that a window's summary comes before the next one's lines.
    pub fn admit(&mut self, now: Instant) -> bool {
        if self.window_start.is_none() {
            self.window_start = Some(now);
        }
        if self.lines < self.max_lines {
            self.lines += 1;
            true
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
            false
        }
    }

    /// What is suppressed so far, whether or not the window is over (at exit).
    pub fn take(&mut self) -> Option<Suppressed> {
        let count = std::mem::take(&mut self.suppressed);
        (count > 0).then_some(Suppressed { count })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    /// Feeds `n` lines at `at` (offsets from `t0`) and returns the number
    /// logged and the summaries, as the daemon does.
    fn feed(limit: &mut LogLimiter, t0: Instant, at: &[Duration]) -> (u64, Vec<u64>) {
        let (mut logged, mut summaries) = (0, Vec::new());
        for offset in at {
            let now = t0 + *offset;
            if let Some(s) = limit.flush(now) {
                summaries.push(s.count);
            }
            if limit.admit(now) {
                logged += 1;
            }
        }
        (logged, summaries)
    }

    #[test]
    fn a_burst_is_cut_to_the_limit_and_summarised() {
        let mut limit = LogLimiter::new(10, SECOND);
        let t0 = Instant::now();
        let burst: Vec<Duration> = (0..100).map(|i| Duration::from_millis(i * 5)).collect();
        let (logged, summaries) = feed(&mut limit, t0, &burst);
        assert_eq!(logged, 10);
        assert!(summaries.is_empty());
        // Nothing more arrives; the periodic flush says what was dropped.
        assert_eq!(limit.flush(t0 + Duration::from_millis(900)), None);
        assert_eq!(
            limit.flush(t0 + Duration::from_millis(1000)),
            Some(Suppressed { count: 90 })
        );
        assert_eq!(limit.flush(t0 + Duration::from_secs(5)), None);
    }

    #[test]
    fn every_line_is_logged_or_counted() {
        let mut limit = LogLimiter::new(10, SECOND);
        let t0 = Instant::now();
        // 1000 lines over 4.995 s: 200 a second.
        let at: Vec<Duration> = (0..1000).map(|i| Duration::from_millis(i * 5)).collect();
        let (logged, summaries) = feed(&mut limit, t0, &at);
        let rest = limit.take().map_or(0, |s| s.count);
        assert_eq!(logged + summaries.iter().sum::<u64>() + rest, 1000);
        assert_eq!(logged, 50);
        assert_eq!(summaries.len(), 4);
    }

    #[test]
    fn a_slow_trickle_is_logged_whole() {
        let mut limit = LogLimiter::new(10, SECOND);
        let t0 = Instant::now();
        let at: Vec<Duration> = (0..30).map(|i| Duration::from_millis(i * 200)).collect();
        let (logged, summaries) = feed(&mut limit, t0, &at);
        assert_eq!((logged, summaries.len()), (30, 0));
        assert_eq!(limit.take(), None);
    }

    #[test]
    fn the_summary_names_the_limit() {
        let limit = LogLimiter::new(10, SECOND);
        assert_eq!(
            Suppressed { count: 7 }.line(&limit),
            "7 more denial(s) not logged (at most 10 lines per 1s)"
        );
    }
}
