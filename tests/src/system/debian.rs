//! The Debian package on this machine: built with the project's packager
//! (`cors-filter-package`, the program `cargo xtask package` runs),
//! installed with `dpkg -i`, purged on drop.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{existing_binary, harness::process::run_bounded, release_dir};

/// The package's name.
pub const PACKAGE: &str = "cors-filter";

/// The packager next to the `cors-filter` binary under test (built by
/// `cargo xtask build`).
pub fn packager() -> Result<PathBuf> {
    existing_binary(release_dir().join("cors-filter-package"))
}

/// Builds the package of `binary` into `out_dir`; returns the `.deb`.
pub fn build(binary: &Path, out_dir: &Path) -> Result<PathBuf> {
    let out = run_bounded(
        Command::new(packager()?)
            .arg("--binary")
            .arg(binary)
            .arg("--out")
            .arg(out_dir),
        Duration::from_secs(120),
    )?;
    if !out.status.success() {
        bail!(
            "cors-filter-package failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let deb = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !deb.is_file() {
        bail!("cors-filter-package printed {deb:?}, which is no file");
    }
    Ok(deb)
}

/// How long a dpkg run waits for the lock another one (an `apt-get` of
/// `cargo xtask setup`) holds.
const LOCK_WAIT: Duration = Duration::from_secs(120);

/// `dpkg ARGS`, bounded, tried again while another dpkg holds its lock.
pub fn dpkg(args: &[&str]) -> Result<Output> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        let out = run_bounded(
            Command::new("dpkg")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive"),
            Duration::from_secs(180),
        )?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !stderr.contains("lock") || Instant::now() > deadline {
            return Ok(out);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `dpkg ARGS`, which must succeed; returns what it printed.
pub fn dpkg_ok(args: &[&str]) -> Result<String> {
    let out = dpkg(args)?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("dpkg {} failed ({}):\n{said}", args.join(" "), out.status);
    }
    Ok(said)
}

/// The package's `db:Status-Abbrev` (`ii `, `rc `), or `None` when dpkg
/// knows nothing of it.
pub fn status() -> Result<Option<String>> {
    let out = run_bounded(
        Command::new("dpkg-query").args(["-W", "-f=${db:Status-Abbrev}", PACKAGE]),
        Duration::from_secs(30),
    )?;
    let status = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok((out.status.success() && !status.is_empty() && status != "un").then_some(status))
}

/// `dpkg -L`: every path the installed package owns.
pub fn listed_paths() -> Result<Vec<String>> {
    Ok(dpkg_ok(&["-L", PACKAGE])?
        .lines()
        .map(str::to_owned)
        .filter(|l| l.starts_with('/') && l != "/.")
        .collect())
}

/// dpkg's own record of the package's files (`/var/lib/dpkg/info/…`).
pub fn info_files() -> Result<Vec<PathBuf>> {
    let dir = Path::new("/var/lib/dpkg/info");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("{PACKAGE}.")) || name.starts_with(&format!("{PACKAGE}:")) {
            found.push(entry.path());
        }
    }
    Ok(found)
}

/// The package installed from a `.deb`; purged on drop, whatever happened.
pub struct Installed {
    purged: bool,
}

impl Installed {
    /// `dpkg -i DEB`; returns what dpkg printed too (the scripts' lines).
    pub fn install(deb: &Path) -> Result<(Installed, String)> {
        let deb = deb.to_str().context("the .deb's path is not UTF-8")?;
        // Purged on drop from here on, also when the install half failed.
        let installed = Installed { purged: false };
        let said = dpkg_ok(&["-i", deb])?;
        Ok((installed, said))
    }

    /// `dpkg --purge`; returns what dpkg printed (the scripts' lines).
    pub fn purge(mut self) -> Result<String> {
        self.purged = true;
        dpkg_ok(&["--purge", PACKAGE])
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if !self.purged
            && let Err(e) = dpkg_ok(&["--purge", PACKAGE])
        {
            eprintln!("cannot purge the test's {PACKAGE} package, purge it by hand: {e:#}");
        }
    }
}
