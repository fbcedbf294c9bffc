//! `cors-filter run` on the server interface, as the tests start it, with
//! the configuration both parts use, and its counters.

use anyhow::{Context, Result};
use cors_filter_tests::{
    harness::filter::{FilterHome, RunningFilter},
    harness::netns::NetnsPair,
};

use super::nginx::PORT;

/// The one allowed origin; the benchmark's preflights come from another.
pub const ALLOWED: &str = "https://app.example.com";

/// A filter attached (enforcing, dropping) to the server interface;
/// detached, its pins and state removed, on drop.
pub struct Filter {
    /// Declared first: stopped before its home goes.
    pub running: RunningFilter,
    _home: FilterHome,
}

impl Filter {
    /// XDP in native mode, the default attachment on a NIC that has it.
    pub fn start(pair: &NetnsPair) -> Result<Filter> {
        Filter::start_with(pair, &["--attach", "xdp", "--xdp-mode", "native"])
    }

    /// With the attach arguments given (e.g. `--attach tc`).
    pub fn start_with(pair: &NetnsPair, attach: &[&str]) -> Result<Filter> {
        let config = format!(
            "ports = [{PORT}]\nallow = [\"{ALLOWED}\"]\nmode = \"enforce\"\naction = \"drop\"\n"
        );
        let home = FilterHome::new(&config)?;
        let running = RunningFilter::start(pair, &home, attach)
            .context("cannot start cors-filter on the server interface")?;
        Ok(Filter {
            running,
            _home: home,
        })
    }

    /// A counter of `cors-filter stats --json`, e.g. `preflight_deny`.
    pub fn counter(&self, name: &str) -> Result<u64> {
        let stats = self.running.stats()?;
        stats[name]
            .as_u64()
            .with_context(|| format!("cors-filter stats --json has no counter {name}: {stats}"))
    }
}
