//! The `cors-filter` binary's modules, as a library so that the project's
//! benchmark (`cors-filter-bench`) loads and drives the very same program
//! the binary does. Not a stable API: only this workspace uses it.

pub mod allow;
pub mod allowlist;
pub mod capture;
pub mod cli;
pub mod config;
pub mod denials;
pub mod detach;
pub mod filter;
pub mod layout;
pub mod links;
pub mod metrics;
pub mod metrics_exposure;
pub mod pins;
pub mod policy;
pub mod private;
pub mod privilege;
pub mod reload;
pub mod replay;
pub mod reply_capture;
pub mod run;
pub mod state;
pub mod stats;
pub mod testrun;
