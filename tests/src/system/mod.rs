//! Checks of the system around the filter: privileges and capabilities, the
//! system calls and paths of `run`, the Prometheus linter, the shipped
//! systemd unit, what systemd gives a service (notification and journal
//! sockets), the Debian package and the monitoring assets.

pub mod debian;
pub mod monitoring;
pub mod privileges;
pub mod promtool;
pub mod syscalls;
pub mod systemd;
pub mod unit;
