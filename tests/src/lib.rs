//! Harness for cors-filter's end-to-end tests and demo: network namespaces
//! joined by a veth pair, a real HTTP server in one, curl (or headless
//! Chromium) in the other, and `cors-filter run` attached on the server side.
//!
//! Every piece is an RAII guard that cleans up on drop, panics included:
//! processes are killed, pins and state removed, namespaces deleted. All
//! traffic stays between the two namespaces a test created (or on their
//! loopback), and every request is bounded by curl's `--max-time`.
//!
//! The modules: [`harness`] (namespaces, peers, the filter), [`frames`]
//! (frames built byte by byte for the program alone, never sent anywhere),
//! [`oracles`] (references and models the filter is compared with) and
//! [`system`] (privileges, system calls, linters, the systemd unit).

pub mod frames;
pub mod harness;
pub mod oracles;
pub mod system;

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Result, bail};

/// A name part unique to this process and call.
pub fn unique_suffix() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Fails unless running as root: the tests create namespaces and attach BPF.
pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "cors-filter's end-to-end tests need root (network namespaces, XDP, bpffs); run `sudo cargo xtask test`"
        );
    }
    Ok(())
}

/// The workspace's `target/release` directory.
pub fn release_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release")
}

/// The `cors-filter` binary under test: `$CORS_FILTER_BIN`, or the release build.
pub fn cors_filter_bin() -> Result<PathBuf> {
    existing_binary(
        std::env::var_os("CORS_FILTER_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| release_dir().join("cors-filter")),
    )
}

/// `path`, if a `cors-filter` binary is there.
pub fn existing_binary(path: PathBuf) -> Result<PathBuf> {
    if !path.is_file() {
        bail!(
            "cors-filter binary {} not found: build it with `cargo xtask build` (or set CORS_FILTER_BIN)",
            path.display()
        );
    }
    Ok(path)
}

/// A temporary directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Result<TempDir> {
        let dir = std::env::temp_dir().join(format!("cors-filter-{tag}-{}", unique_suffix()));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
