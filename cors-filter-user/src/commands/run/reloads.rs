//! The daemon's own reloads (SIGHUP, a changed config file): one at a time
//! on a thread of their own, because a reload waits for a lock and an RCU
//! grace period and rewrites a whole policy generation, while the daemon's
//! loop goes on draining denial events, pinging the watchdog and answering
//! signals. A trigger during a reload makes one more after it. A reload
//! refused for a reason other than the config (an I/O error, a state file
//! refused for its mode) is tried again, [`RETRIES`] times [`RETRY_AFTER`]
//! apart: the config it would install is still unapplied, and the watch
//! would not notice its file again until the next change.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result};
use tokio::{
    task::{JoinError, JoinHandle},
    time::Instant,
};

use super::service_status::ServiceStatus;
use crate::{
    commands::reload::{Reloaded, reload_reporting},
    exit::{self, Kind},
    metrics::fleet::FleetState,
    systemd::notify::Notifier,
};

/// How many times a reload refused for a passing reason is tried again.
pub const RETRIES: u32 = 5;
/// How long after such a refusal it is tried again.
pub const RETRY_AFTER: Duration = Duration::from_secs(2);

/// What [`Reloads::next`] brings.
pub enum ReloadEvent {
    /// A reload ended, with this trigger and result.
    Ended(&'static str, Result<Result<Reloaded>, JoinError>),
    /// A reload refused for a passing reason is to be tried again.
    RetryDue(&'static str),
}

pub struct Reloads {
    pin_dir: PathBuf,
    state_dir: PathBuf,
    running: Option<(&'static str, JoinHandle<Result<Reloaded>>)>,
    pending: Option<&'static str>,
    /// A retry due: when, and of what trigger. Never while one runs.
    retry: Option<(Instant, &'static str)>,
    /// Retries tried for the reload being retried.
    retried: u32,
}

impl Reloads {
    pub fn new(pin_dir: &Path, state_dir: &Path) -> Reloads {
        Reloads {
            pin_dir: pin_dir.to_owned(),
            state_dir: state_dir.to_owned(),
            running: None,
            pending: None,
            retry: None,
            retried: 0,
        }
    }

    /// Whether a reload runs now.
    pub fn running(&self) -> bool {
        self.running.is_some()
    }

    /// Starts a reload, or queues one after the reload running.
    pub fn request(&mut self, trigger: &'static str, notifier: &Notifier) {
        if self.running.is_some() {
            self.pending = Some(trigger);
            return;
        }
        // This reload is the retry, or supersedes it.
        self.retry = None;
        notifier.reloading();
        let (pins, state) = (self.pin_dir.clone(), self.state_dir.clone());
        let reload = tokio::task::spawn_blocking(move || reload_reporting(&pins, &state));
        self.running = Some((trigger, reload));
    }

    /// The next thing to act on: the reload running has ended, or a retry
    /// is due; never, with neither. Cancel-safe: a reload goes on, and a
    /// later call waits for it (or the retry) again.
    pub async fn next(&mut self) -> ReloadEvent {
        if let Some((trigger, reload)) = self.running.as_mut() {
            let (trigger, result) = (*trigger, reload.await);
            self.running = None;
            return ReloadEvent::Ended(trigger, result);
        }
        let Some((at, trigger)) = self.retry else {
            return std::future::pending().await;
        };
        tokio::time::sleep_until(at).await;
        self.retry = None;
        ReloadEvent::RetryDue(trigger)
    }

    /// Reports a reload that ended (the log, the fleet series, systemd),
    /// schedules a retry of one refused for a passing reason, and starts
    /// the one queued meanwhile. An error only if the reload panicked.
    pub fn report(
        &mut self,
        trigger: &'static str,
        result: Result<Result<Reloaded>, JoinError>,
        fleet: &FleetState,
        notifier: &Notifier,
        status: &mut ServiceStatus,
    ) -> Result<()> {
        let refused = match result {
            Ok(Ok(done)) => {
                log::info!("{trigger}: {}", done.message);
                fleet.installed(done.base);
                self.retried = 0;
                false
            }
            Ok(Err(e)) => {
                fleet.reload_failed();
                let passing = exit::classify(&e) != Kind::Config;
                if passing && self.retried < RETRIES {
                    self.retried += 1;
                    log::error!(
                        "{trigger}: {e:#}; trying again in {RETRY_AFTER:?} ({} of {RETRIES})",
                        self.retried
                    );
                    self.retry = Some((Instant::now() + RETRY_AFTER, trigger));
                } else {
                    log::error!("{trigger}: {e:#}");
                    self.retried = 0;
                }
                true
            }
            Err(e) => return Err(e).context("reload panicked"),
        };
        if let Err(e) = status.refresh() {
            log::warn!("cannot read the policy for systemd's status: {e:#}");
        }
        // READY=1 either way: the daemon runs on, with the policy it had
        // if the new one was refused.
        notifier.ready(&if refused {
            format!(
                "{}; the last reload was refused (see the log)",
                status.line()
            )
        } else {
            status.line()
        });
        if let Some(next) = self.pending.take() {
            self.request(next, notifier);
        }
        Ok(())
    }
}
