//! A released `cors-filter`, built from its source, for the tests that
//! upgrade from it and downgrade to it.
//!
//! A release's source travels in the repository as
//! `tests/releases/<tag>.tar.gz` (`git archive --format=tar.gz <tag>`),
//! because a clone need not carry tags or history (CI's does not). The
//! archive is checked against the digest recorded here, unpacked and built
//! with its own lock file under `target/releases/<tag>/`; the binary is
//! kept there, under the commit it was built from, so that later runs
//! reuse it.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::harness::process::run_bounded;

/// A release whose source is in `tests/releases/`.
#[derive(Debug, Clone, Copy)]
pub struct Release {
    /// Its tag, and the archive's file name without `.tar.gz`.
    pub tag: &'static str,
    /// The commit the tag names (the archive says so too:
    /// `git get-tar-commit-id`).
    pub commit: &'static str,
    /// SHA-256 of the archive, so that a changed archive is refused rather
    /// than taken for the release.
    pub sha256: &'static str,
}

/// The release the upgrade tests start from: the last one before the
/// layout record (pins of layout 1).
pub const PREVIOUS: Release = Release {
    tag: "v0.1.0",
    commit: "b342d44646bebea0f11bf128eab25987a7587996",
    sha256: "4d091fd8a57f8539e31eba33a8992c2904a177fbf5e763acb2af8061b49f0415",
};

/// Long enough for a cold build (dependencies and the eBPF object) on two CPUs.
const BUILD_LIMIT: Duration = Duration::from_secs(20 * 60);

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the workspace exists")
}

fn run(command: &mut Command, what: &str) -> Result<String> {
    let out = run_bounded(command, Duration::from_secs(60))?;
    if !out.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The `cors-filter` binary of `release`, built on first use.
pub fn binary(release: Release) -> Result<PathBuf> {
    let Release { tag, commit, .. } = release;
    let archive = workspace()
        .join("tests/releases")
        .join(format!("{tag}.tar.gz"));
    let home = workspace().join("target").join("releases").join(tag);
    let binary = home.join(format!("cors-filter-{commit}"));
    std::fs::create_dir_all(&home)?;
    // Test binaries run in parallel: one builds, the others wait for it.
    let lock = std::fs::File::create(home.join(".lock"))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", home.display()))?;
    if binary.is_file() {
        return Ok(binary);
    }
    let source = home.join("src");
    if source.exists() {
        std::fs::remove_dir_all(&source)?;
    }
    std::fs::create_dir_all(&source)?;
    unpack(release, &archive, &source)?;
    eprintln!(
        "building cors-filter {tag} ({commit}) under {}",
        home.display()
    );
    let mut cargo = Command::new("cargo");
    cargo
        .current_dir(&source)
        .args(["build", "--release", "--locked", "-p", "cors-filter-user"])
        .arg("--target-dir")
        .arg(home.join("target"));
    // The environment of the test run (its target directory, flags) is
    // not the release's.
    for key in [
        "CARGO_TARGET_DIR",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
    ] {
        cargo.env_remove(key);
    }
    let out = run_bounded(&mut cargo, BUILD_LIMIT)?;
    if !out.status.success() {
        bail!(
            "building cors-filter {tag} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let built = home.join("target/release/cors-filter");
    // Copied, then renamed: a run killed mid-copy leaves no binary that
    // a later one would take for whole.
    let partial = home.join(format!("cors-filter-{commit}.partial"));
    std::fs::copy(&built, &partial)
        .with_context(|| format!("cannot copy {} to {}", built.display(), partial.display()))?;
    std::fs::rename(&partial, &binary).with_context(|| {
        format!(
            "cannot rename {} to {}",
            partial.display(),
            binary.display()
        )
    })?;
    Ok(binary)
}

/// Checks `archive` against `release` and unpacks it into `dir`.
fn unpack(release: Release, archive: &Path, dir: &Path) -> Result<()> {
    let digest = run(
        Command::new("sha256sum").arg(archive),
        &format!("sha256sum {}", archive.display()),
    )?;
    let digest = digest.split_whitespace().next().unwrap_or_default();
    if digest != release.sha256 {
        bail!(
            "{} has SHA-256 {digest}, not the {} recorded for {}: \
             remake it with `git archive --format=tar.gz {}` and record its digest",
            archive.display(),
            release.sha256,
            release.tag,
            release.tag
        );
    }
    run(
        Command::new("tar").arg("-xzf").arg(archive).arg("-C").arg(dir),
        &format!("unpacking {}", archive.display()),
    )?;
    Ok(())
}
