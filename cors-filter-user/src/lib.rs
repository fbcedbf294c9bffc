//! The `cors-filter` binary's modules, as a library so that the project's
//! benchmark (`cors-filter-bench`) loads and drives the very same program
//! the binary does. Not a stable API: only this workspace uses it.
//!
//! - [`commands`]: one module per subcommand.
//! - [`kernel`]: the plumbing to the kernel: the loaded program, its links,
//!   its pins and their layout, the policy maps, test runs.
//! - The rest serves both: the config file ([`config`]), allowlist entries
//!   ([`allow_entry`]) and their recorded changes ([`state`]), denial events
//!   ([`denials`]), metrics ([`metrics`]), and the checks that keep a root
//!   daemon safe ([`capabilities`], [`root_only`]), and what running under
//!   systemd adds ([`systemd`]: readiness, the journal).

pub mod allow_entry;
pub mod browser_host;
pub mod capabilities;
pub mod cli;
pub mod commands;
pub mod config;
pub mod config_watch;
pub mod denials;
pub mod drift;
pub mod exit;
pub mod kernel;
pub mod metrics;
pub mod root_only;
pub mod shown;
pub mod state;
pub mod systemd;
