//! The project's jobs: `cargo xtask setup | build | test | demo`.
//!
//! Every job first installs what is missing (Debian packages, the nightly
//! toolchain with rust-src, bpf-linker), once and idempotently, and says
//! which step failed and how to run it by hand when one does.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask")]
struct Cli {
    #[command(subcommand)]
    job: Job,
}

#[derive(Subcommand)]
enum Job {
    /// Install what building and testing need (idempotent).
    Setup,
    /// Build the `cors-filter` binary (with its eBPF object) and the test server.
    Build,
    /// Run the whole test suite: unit, differential and end-to-end (root).
    Test,
    /// Show the filter at work on a namespace pair of its own (root).
    Demo,
}

/// Debian packages: LLVM for bpf-linker, iproute2/util-linux/curl for the
/// namespaces, nsenter and the client, bpftool for inspection, tcpdump for
/// the real captures the replay tests read.
const DEBIAN_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
    "iproute2",
    "util-linux",
    "curl",
    "bpftool",
    "tcpdump",
    "build-essential",
];
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// The crates built for the host: formatted, linted and tested by `test`.
/// (`cors-filter-ebpf` builds for the BPF target only.)
const HOST_PACKAGES: [&str; 4] = [
    "cors-filter-common",
    "cors-filter-user",
    "cors-filter-tests",
    "xtask",
];
const BPF_LINKER_VERSION: &str = "0.13.0";

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.job {
        Job::Setup => setup(),
        Job::Build => {
            setup()?;
            build(&root)
        }
        Job::Test => {
            setup()?;
            require_root("cargo xtask test")?;
            build(&root)?;
            test(&root)
        }
        Job::Demo => {
            setup()?;
            require_root("cargo xtask demo")?;
            build(&root)?;
            let release = root.join("target/release");
            cors_filter_tests::demo::run_demo(
                &release.join("cors-filter"),
                &release.join("cors-test-server"),
            )
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn require_root(job: &str) -> Result<()> {
    if !is_root() {
        bail!("{job} needs root (network namespaces, XDP, bpffs): run it as root");
    }
    Ok(())
}

/// Runs `command` for setup step `step`; on failure names the step and the
/// command to run by hand.
fn step(step: &str, command: &mut Command) -> Result<()> {
    let shown = shown(command);
    eprintln!("xtask setup: {step}: {shown}");
    let status = command
        .status()
        .with_context(|| format!("setup step `{step}` could not start; run by hand: {shown}"))?;
    if !status.success() {
        bail!("setup step `{step}` failed ({status}); run by hand: {shown}");
    }
    Ok(())
}

fn shown(command: &Command) -> String {
    let envs: Vec<String> = command
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}={}", k.to_string_lossy(), v?.to_string_lossy())))
        .collect();
    let args: Vec<String> = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut parts = envs;
    parts.extend(args);
    parts.join(" ")
}

fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn setup() -> Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !output("dpkg-query", &["-W", "-f=${Status}", p]).contains("install ok installed")
        })
        .collect();
    if !missing.is_empty() {
        if !is_root() {
            bail!(
                "missing Debian packages {}; install them as root: apt-get install -y {}",
                missing.join(" "),
                missing.join(" ")
            );
        }
        step(
            "refresh the package lists",
            Command::new("apt-get").args(["update", "-q"]),
        )?;
        step(
            "install Debian packages",
            Command::new("apt-get")
                .args(["install", "-y", "-q", "--no-install-recommends"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }

    if !output("rustup", &["toolchain", "list"])
        .lines()
        .any(|l| l.starts_with("nightly"))
    {
        step(
            "install the nightly toolchain",
            Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
            ]),
        )?;
    }
    if !output(
        "rustup",
        &["component", "list", "--toolchain", "nightly", "--installed"],
    )
    .lines()
    .any(|l| l.starts_with("rust-src"))
    {
        step(
            "add rust-src to nightly",
            Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
        )?;
    }

    if !succeeds("bpf-linker", &["--version"]) {
        step(
            "install bpf-linker",
            Command::new("cargo")
                .args([
                    "install",
                    "bpf-linker",
                    "--locked",
                    "--version",
                    BPF_LINKER_VERSION,
                ])
                .args(["--no-default-features", "--features", "llvm-22"])
                .env("LLVM_PREFIX", LLVM_PREFIX),
        )?;
    }
    Ok(())
}

fn cargo(root: &Path, what: &str, args: &[&str]) -> Result<()> {
    let mut command = Command::new("cargo");
    command.current_dir(root).args(args);
    let status = command
        .status()
        .with_context(|| format!("cannot run cargo to {what}"))?;
    if !status.success() {
        bail!("{what} failed: {}", shown(&command));
    }
    Ok(())
}

/// `-p NAME` for each of [`HOST_PACKAGES`].
fn package_args() -> Vec<&'static str> {
    HOST_PACKAGES.iter().flat_map(|p| ["-p", *p]).collect()
}

fn build(root: &Path) -> Result<()> {
    cargo(
        root,
        "build cors-filter and the test server",
        &[
            "build",
            "--release",
            "-p",
            "cors-filter-user",
            "-p",
            "cors-filter-tests",
            "--bins",
        ],
    )
}

fn test(root: &Path) -> Result<()> {
    let started = std::time::Instant::now();
    let packages = package_args();
    cargo(
        root,
        "check formatting",
        &[&["fmt", "--check"], &packages[..]].concat(),
    )?;
    cargo(
        root,
        "lint the userspace crates",
        &[
            &["clippy", "--release", "--all-targets"],
            &packages[..],
            &["--", "-D", "warnings"],
        ]
        .concat(),
    )?;
    let bin = root.join("target/release/cors-filter");
    let mut command = Command::new("cargo");
    command
        .current_dir(root)
        .args(["test", "--release", "--tests"])
        .args(&packages)
        .env("CORS_FILTER_BIN", &bin)
        .stdout(Stdio::piped());
    let mut child = command.spawn().context("cannot run cargo test")?;
    // Echo the runner's output and add up its per-binary results.
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line.context("cannot read cargo test's output")?;
        println!("{line}");
        if let Some((p, f)) = parse_test_result(&line) {
            passed += p;
            failed += f;
        }
    }
    let status = child.wait().context("cannot wait for cargo test")?;
    println!("xtask test: took {:.0?}", started.elapsed());
    // The suite's closing line, in the plain form CI reads.
    println!("cors-filter: {passed} passed, {failed} failed");
    if !status.success() || failed > 0 {
        bail!("tests failed: {}", shown(&command));
    }
    if passed == 0 {
        bail!("no test ran: {}", shown(&command));
    }
    Ok(())
}

/// `test result: ok. 13 passed; 0 failed; ...` -> (13, 0).
fn parse_test_result(line: &str) -> Option<(u64, u64)> {
    let rest = line.trim().strip_prefix("test result: ")?;
    let count = |word: &str| {
        rest.split(';').find_map(|part| {
            let digits = part
                .trim()
                .trim_start_matches(|c: char| !c.is_ascii_digit());
            digits.strip_suffix(word)?.trim().parse::<u64>().ok()
        })
    };
    Some((count(" passed")?, count(" failed")?))
}

#[cfg(test)]
mod tests {
    use super::parse_test_result;

    #[test]
    fn reads_cargo_test_summaries() {
        assert_eq!(
            parse_test_result(
                "test result: ok. 13 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 16.76s"
            ),
            Some((13, 0))
        );
        assert_eq!(
            parse_test_result("test result: FAILED. 12 passed; 1 failed; 0 ignored; 0 measured"),
            Some((12, 1))
        );
        assert_eq!(parse_test_result("running 13 tests"), None);
    }
}
