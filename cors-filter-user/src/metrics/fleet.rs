//! The daemon's own series about its allowlist and its config:
//! `cors_filter_allowlist_local_changes{change}` (the drift, see
//! `drift`) and `cors_filter_config_reload_failures_total`.

use std::sync::{
    Mutex,
    atomic::{AtomicU64, Ordering},
};

use anyhow::{Context, Result};
use prometheus::{IntCounter, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::{commands::reload::AllowBase, drift::drift, state::StateDir};

/// What the daemon knows that the pinned maps do not: the config's own
/// allowlist of the policy it installed last, and its failed reloads.
pub struct FleetState {
    state: StateDir,
    base: Mutex<AllowBase>,
    reload_failures: AtomicU64,
}

impl FleetState {
    pub fn new(state: StateDir, base: AllowBase) -> FleetState {
        FleetState {
            state,
            base: Mutex::new(base),
            reload_failures: AtomicU64::new(0),
        }
    }

    /// After a reload installed a policy made from `base`.
    pub fn installed(&self, base: AllowBase) {
        *self.base.lock().unwrap_or_else(|e| e.into_inner()) = base;
    }

    /// After a reload the daemon tried (SIGHUP, a changed config file)
    /// was refused.
    pub fn reload_failed(&self) {
        self.reload_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The series in the Prometheus text format. The drift is computed
    /// now, from the changes file as `allow` left it and the config's
    /// allowlist of the last policy installed; if the changes file cannot
    /// be read, its series is left out (and the error logged).
    pub fn prometheus(&self) -> Result<String> {
        let registry = Registry::new();
        let failures = IntCounter::new(
            "cors_filter_config_reload_failures_total",
            "Reloads the daemon tried (SIGHUP, a changed config file) that were refused; the policy stayed as it was. Counts from daemon start.",
        )?;
        failures.inc_by(self.reload_failures.load(Ordering::Relaxed));
        registry.register(Box::new(failures))?;
        let path = self.state.changes_path();
        let counted = self.state.load_changes().and_then(|changes| {
            let base = self.base.lock().unwrap_or_else(|e| e.into_inner());
            drift(&base.allow, &changes, base.source, &path)
        });
        match counted {
            Ok(drift) => {
                let gauge = IntGaugeVec::new(
                    Opts::new(
                        "cors_filter_allowlist_local_changes",
                        "Local allowlist changes (cors-filter allow) in force that make the allowlist differ from the config's: origins added (or given other methods), config origins removed.",
                    ),
                    &["change"],
                )?;
                for (change, n) in [("added", drift.added), ("removed", drift.removed)] {
                    gauge
                        .get_metric_with_label_values(&[change])?
                        .set(i64::try_from(n).context("drift out of range")?);
                }
                registry.register(Box::new(gauge))?;
            }
            Err(e) => log::warn!("cors_filter_allowlist_local_changes left out: {e:#}"),
        }
        TextEncoder::new()
            .encode_to_string(&registry.gather())
            .context("cannot encode the metrics")
    }
}
