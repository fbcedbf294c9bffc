//! A released `cors-filter`, built from its git tag, for the tests that
//! upgrade from it and downgrade to it.
//!
//! The tag's tree is exported with `git archive` and built with its own
//! lock file under `target/releases/<tag>/`; the binary is kept there,
//! under the commit it was built from, so that later runs reuse it.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::harness::process::run_bounded;

/// The release the upgrade tests start from: the last one before the
/// layout record (pins of layout 1).
pub const PREVIOUS: &str = "v0.1.0";

/// Long enough for a cold build (dependencies and the eBPF object) on two CPUs.
const BUILD_LIMIT: Duration = Duration::from_secs(20 * 60);

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the workspace exists")
}

fn git(args: &[&str]) -> Result<String> {
    let out = run_bounded(
        Command::new("git").arg("-C").arg(workspace()).args(args),
        Duration::from_secs(60),
    )?;
    if !out.status.success() {
        bail!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The `cors-filter` binary of release `tag`, built on first use.
pub fn binary(tag: &str) -> Result<PathBuf> {
    let commit =
        git(&["rev-parse", "--verify", &format!("{tag}^{{commit}}")]).with_context(|| {
            format!(
                "the repository has no tag {tag} (a shallow or tagless clone? `git fetch --tags`)"
            )
        })?;
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
    export(&commit, &source)?;
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

/// Writes the tree of `commit` into `dir`.
fn export(commit: &str, dir: &Path) -> Result<()> {
    let archive = dir.join("../src.tar");
    git(&["archive", "--output", &archive.to_string_lossy(), commit])?;
    let out = run_bounded(
        Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(dir),
        Duration::from_secs(60),
    )?;
    std::fs::remove_file(&archive)?;
    if !out.status.success() {
        bail!(
            "cannot unpack the tree of {commit}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
