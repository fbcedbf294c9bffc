//! cors-filter's Debian package, built by `cargo xtask package`: a staged
//! tree handed to `dpkg-deb --build` (nothing to install beyond dpkg-dev,
//! for `dpkg-shlibdeps`).
//!
//! - [`contents`]: every file the package installs, where from, with
//!   which mode; the conffiles are the ones under `/etc`.
//! - [`generated`]: the man pages and shell completions, generated from
//!   the CLI definition (`cors_filter_user::cli::Cli`), so they cannot
//!   drift from it.
//! - [`deb`]: the staging, `DEBIAN/` (control, conffiles, md5sums, the
//!   maintainer scripts of `packaging/debian/`) and the archive.

pub mod contents;
pub mod deb;
pub mod generated;

use std::path::{Path, PathBuf};

/// The package's name, and the name of the binary, the unit and its files.
pub const PACKAGE: &str = "cors-filter";

/// The source tree's `packaging/` directory: the unit, the example config,
/// the maintainer scripts, the monitoring and Kubernetes examples.
pub fn packaging_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging")
}
