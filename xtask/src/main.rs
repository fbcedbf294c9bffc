//! The project's jobs: `cargo xtask setup | build | test | demo | fuzz | bench | package`.
//!
//! Every job first installs what is missing (Debian packages, the nightly
//! toolchain with rust-src, bpf-linker, cargo-fuzz), once and idempotently,
//! and says which step failed and how to run it by hand when one does.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[cfg(test)]
mod readme_layout;

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
    /// Build the `cors-filter` binary (with its eBPF object), the test server
    /// and the packager (`cors-filter-package`).
    Build,
    /// Run the whole test suite: unit, differential, end-to-end (root), and
    /// a short fuzz run.
    Test,
    /// Show the filter at work on a namespace pair of its own (root).
    Demo,
    /// Fuzz the connection tracking against the whole-stream reference
    /// (target `stream` of `cors-filter-common/fuzz`), keeping the corpus
    /// it grows.
    Fuzz {
        /// How long to fuzz, in seconds.
        #[arg(long, default_value_t = 600)]
        seconds: u64,
    },
    /// Measure cors-filter side by side with bare XDP programs and nginx
    /// (root), print the figures and write them to BENCHMARKS.md.
    Bench {
        /// Parts to run (`kernel`, `reject`, `allowed`, `scaling`; all by default).
        /// BENCHMARKS.md is only written by a run of all of them.
        #[arg(long, value_delimiter = ',')]
        parts: Vec<String>,
    },
    /// Build the Debian package into target/debian/: the binary at
    /// /usr/bin, the unit, /etc/cors-filter.toml and /etc/default/cors-filter
    /// as conffiles, man pages and bash/zsh/fish completions generated from
    /// the CLI, the alert rules, dashboard and DaemonSet as examples.
    /// Installing it starts nothing; removing it stops the daemon and
    /// detaches the filter; purging it also removes /var/lib/cors-filter.
    Package,
}

/// Debian packages: LLVM for bpf-linker, iproute2/util-linux/curl for the
/// namespaces, nsenter, setpriv and the client, bpftool for inspection,
/// tcpdump for the real captures the replay tests read, prometheus for
/// `promtool check metrics`, which the tests run on the `/metrics` output
/// (its service is not started by the tests), systemd for `systemd-analyze`
/// on the shipped unit and strace to trace the daemon against the unit's
/// system call filter; nginx and wrk for the benchmark (nginx's own service
/// is not started: the benchmark runs its own nginx in a namespace);
/// chromium for the real-browser tests, which run it headless in a test
/// namespace; ethtool to turn a test veth's segmentation offloads off (and
/// for the benchmark's per-queue statistics);
/// haproxy, openssl and libnss3-tools (certutil) for the tests behind a TLS
/// proxy, which run their own HAProxy and nginx in test namespaces with a
/// test CA that openssl makes and Chromium trusts through an NSS database
/// (haproxy's service is not started, as nginx's is not); dpkg-dev for
/// `dpkg-shlibdeps` (the package's dependencies), and for the tests of the
/// package groff-base and man-db (the man pages render without warnings)
/// and zsh and fish (their completions load).
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
    "prometheus",
    "systemd",
    "strace",
    "nginx",
    "nodejs",
    "wrk",
    "chromium",
    "ethtool",
    "build-essential",
    "haproxy",
    "openssl",
    "libnss3-tools",
    "dpkg-dev",
    "groff-base",
    "man-db",
    "zsh",
    "fish",
];
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// The crates built for the host: formatted, linted and tested by `test`.
/// (`cors-filter-ebpf` builds for the BPF target only.)
const HOST_PACKAGES: [&str; 6] = [
    "cors-filter-bench",
    "cors-filter-common",
    "cors-filter-package",
    "cors-filter-user",
    "cors-filter-tests",
    "xtask",
];
const BPF_LINKER_VERSION: &str = "0.13.0";
/// Works with the nightly toolchain `setup` installs (checked with 1.97).
const CARGO_FUZZ_VERSION: &str = "0.13.2";
/// The fuzz target, in `cors-filter-common/fuzz/fuzz_targets/`.
const FUZZ_TARGET: &str = "stream";
/// How long `test` fuzzes.
const SHORT_FUZZ: Duration = Duration::from_secs(25);

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
            cors_filter_tests::harness::demo::run_demo(
                &release.join("cors-filter"),
                &release.join("cors-test-server"),
            )
        }
        Job::Fuzz { seconds } => {
            setup()?;
            let run = fuzz(&root, Duration::from_secs(seconds), FuzzRun::Long)?;
            println!("{}", run.summary());
            if run.crash.is_some() {
                bail!("the fuzzer found a crash");
            }
            Ok(())
        }
        Job::Bench { parts } => {
            setup()?;
            require_root("cargo xtask bench")?;
            build(&root)?;
            bench(&root, &parts)
        }
        Job::Package => {
            setup()?;
            build(&root)?;
            package(&root).map(|deb| println!("{}", deb.display()))
        }
    }
}

/// Where `package` writes the `.deb`.
const DEB_DIR: &str = "target/debian";

/// Runs `cors-filter-package` (built by [`build`]) on the release binary:
/// the same program the package test runs.
fn package(root: &Path) -> Result<PathBuf> {
    let release = root.join("target/release");
    let mut command = Command::new(release.join("cors-filter-package"));
    command
        .arg("--binary")
        .arg(release.join("cors-filter"))
        .arg("--out")
        .arg(root.join(DEB_DIR))
        .stderr(Stdio::inherit());
    let out = command
        .output()
        .with_context(|| format!("cannot run {}", shown(&command)))?;
    if !out.status.success() {
        bail!("building the package failed: {}", shown(&command));
    }
    let deb = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    Ok(PathBuf::from(deb))
}

/// Builds and runs `cors-filter-bench`, which writes `BENCHMARKS.md` at the
/// workspace root.
fn bench(root: &Path, parts: &[String]) -> Result<()> {
    let mut args = vec!["run", "--release", "-p", "cors-filter-bench", "--", "--out"];
    let out = root.join("BENCHMARKS.md");
    let out = out.to_str().context("the workspace path is not UTF-8")?;
    args.push(out);
    let parts = parts.join(",");
    if !parts.is_empty() {
        args.extend(["--parts", &parts]);
    }
    cargo(root, "run the benchmark", &args)
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

/// Debian's policy hook: `invoke-rc.d` asks it before starting a service,
/// and 101 means "not allowed".
const POLICY_RC_D: &str = "/usr/sbin/policy-rc.d";

/// Keeps the packages `setup` installs from starting their services: on a
/// host with an init system, Debian's nginx and prometheus would otherwise
/// start listening on ports 80 and 9090 of the host. The tests and the
/// benchmark run their own nginx, in namespaces of their own, and never
/// the services. The hook is only written when there is none, and removed
/// when the install is done.
struct NoServiceStarts {
    written: bool,
}

impl NoServiceStarts {
    fn install() -> Result<NoServiceStarts> {
        if Path::new(POLICY_RC_D).exists() {
            eprintln!("xtask setup: {POLICY_RC_D} exists; its policy decides which services start");
            return Ok(NoServiceStarts { written: false });
        }
        std::fs::write(
            POLICY_RC_D,
            "#!/bin/sh\n# Written by cargo xtask setup for one apt-get install.\nexit 101\n",
        )
        .with_context(|| format!("cannot write {POLICY_RC_D}"))?;
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(POLICY_RC_D, mode)
            .with_context(|| format!("cannot make {POLICY_RC_D} executable"))?;
        Ok(NoServiceStarts { written: true })
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        if self.written
            && let Err(e) = std::fs::remove_file(POLICY_RC_D)
        {
            eprintln!("xtask setup: cannot remove {POLICY_RC_D}, remove it by hand: {e}");
        }
    }
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
        let _no_starts = NoServiceStarts::install()?;
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

    if !succeeds("cargo", &["fuzz", "--version"]) {
        step(
            "install cargo-fuzz",
            Command::new("cargo").args([
                "install",
                "cargo-fuzz",
                "--locked",
                "--version",
                CARGO_FUZZ_VERSION,
            ]),
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
        "build cors-filter, the test server and the packager",
        &[
            "build",
            "--release",
            "-p",
            "cors-filter-user",
            "-p",
            "cors-filter-tests",
            "-p",
            "cors-filter-package",
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
        "check the fuzz target's formatting",
        &["fmt", "--check", "--manifest-path", FUZZ_MANIFEST],
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
        .args(["test", "--release", "--no-fail-fast", "--tests"])
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
    // Then the fuzzer, briefly; its run counts as one more test in the total.
    let fuzzed = fuzz(root, SHORT_FUZZ, FuzzRun::Short);
    match &fuzzed {
        Ok(run) => println!("{}", run.summary()),
        Err(e) => println!("fuzz {FUZZ_TARGET}: could not run: {e:#}"),
    }
    let fuzz_ok = fuzzed.as_ref().is_ok_and(|run| run.crash.is_none());
    let (fuzz_passed, fuzz_failed) = if fuzz_ok { (1, 0) } else { (0, 1) };
    println!("xtask test: took {:.0?}", started.elapsed());
    // The suite's closing line, in the plain form CI reads.
    println!(
        "cors-filter: {} passed, {} failed",
        passed + fuzz_passed,
        failed + fuzz_failed
    );
    if !status.success() || failed > 0 {
        bail!("tests failed: {}", shown(&command));
    }
    if passed == 0 {
        bail!("no test ran: {}", shown(&command));
    }
    if !fuzz_ok {
        bail!("the fuzz run failed (see above)");
    }
    Ok(())
}

/// The fuzz crate, from the workspace root: a workspace of its own, built
/// with nightly by cargo-fuzz.
const FUZZ_MANIFEST: &str = "cors-filter-common/fuzz/Cargo.toml";
/// Generated connections the fuzzer starts from.
const FUZZ_SEEDS: usize = 200;
/// Longest input the fuzzer tries: past the bound on a judged head's bytes.
const FUZZ_MAX_LEN: usize = 20_000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum FuzzRun {
    /// In `test`: from the generated seeds alone, libFuzzer's progress
    /// lines not shown.
    Short,
    /// `cargo xtask fuzz`: from the seeds and the corpus kept in
    /// `cors-filter-common/fuzz/corpus/`, which it grows; progress shown.
    Long,
}

struct Fuzzed {
    runs: Option<u64>,
    elapsed: Duration,
    /// Where libFuzzer saved the input that crashed the target.
    crash: Option<String>,
}

impl Fuzzed {
    fn summary(&self) -> String {
        let runs = self
            .runs
            .map_or_else(|| "? runs".to_owned(), |n| format!("{n} runs"));
        let secs = self.elapsed.as_secs_f64();
        match &self.crash {
            None => format!("fuzz {FUZZ_TARGET}: {runs} in {secs:.0} s, no crash"),
            Some(input) => format!(
                "fuzz {FUZZ_TARGET}: CRASH after {runs} in {secs:.0} s; input saved in {input}; \
                 reproduce with: cd cors-filter-common && cargo +nightly fuzz run {FUZZ_TARGET} {input}"
            ),
        }
    }
}

/// `cargo +nightly …` in `dir`, without what an outer cargo (stable, maybe
/// clippy) put in the environment.
fn nightly_cargo(dir: &Path) -> Command {
    let mut command = Command::new("cargo");
    command.current_dir(dir).arg("+nightly");
    for key in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
    ] {
        command.env_remove(key);
    }
    command
}

/// Builds the fuzz target and runs it for `time`, from [`FUZZ_SEEDS`]
/// generated requests (and, for a long run, the kept corpus), with the
/// dictionary next to the target. `Err` when it could not run; a crash is
/// in the result.
fn fuzz(root: &Path, time: Duration, kind: FuzzRun) -> Result<Fuzzed> {
    let project = root.join("cors-filter-common");
    let fuzz_dir = project.join("fuzz");
    let mut build = nightly_cargo(&project);
    build.args(["fuzz", "build", FUZZ_TARGET]);
    let status = build.status().context("cannot run cargo fuzz")?;
    if !status.success() {
        bail!("building the fuzz target failed: {}", shown(&build));
    }

    let seeds = cors_filter_tests::TempDir::new("fuzz-seeds")?;
    let mut rng = cors_filter_tests::oracles::generate::Rng::new(0xf022_5eed_0000_0001);
    for i in 0..FUZZ_SEEDS {
        // The target's input: a first byte (the port, and how many cutting
        // bytes follow), the cutting bytes, the connection's stream.
        let conn = cors_filter_tests::oracles::stream_generate::connection(&mut rng);
        let cuts = rng.below(8);
        let mut input = vec![(cuts as u8) << 1 | conn.protects_unsafe as u8];
        input.extend((0..cuts).map(|_| rng.next_u64() as u8));
        input.extend_from_slice(&conn.bytes);
        input.truncate(FUZZ_MAX_LEN);
        std::fs::write(seeds.path().join(format!("seed-{i:03}")), input)
            .context("cannot write the fuzzer's seeds")?;
    }
    // libFuzzer adds what it finds to the first corpus directory.
    let mut corpora = Vec::new();
    if kind == FuzzRun::Long {
        let kept = fuzz_dir.join("corpus").join(FUZZ_TARGET);
        std::fs::create_dir_all(&kept)
            .with_context(|| format!("cannot create {}", kept.display()))?;
        corpora.push(kept);
    }
    corpora.push(seeds.path().to_owned());

    let mut command = nightly_cargo(&project);
    command
        .args(["fuzz", "run", FUZZ_TARGET])
        .args(&corpora)
        .arg("--")
        .arg(format!("-max_total_time={}", time.as_secs().max(1)))
        .arg(format!("-max_len={FUZZ_MAX_LEN}"))
        .arg(format!(
            "-dict={}",
            fuzz_dir.join(format!("{FUZZ_TARGET}.dict")).display()
        ))
        .args(["-timeout=10", "-print_final_stats=1"])
        .stderr(Stdio::piped());
    eprintln!("xtask: {}", shown(&command));
    let started = Instant::now();
    let mut child = command.spawn().context("cannot run cargo fuzz")?;
    let (mut runs, mut crash) = (None, None);
    let mut in_dictionary = false;
    for line in BufReader::new(child.stderr.take().expect("piped")).lines() {
        let line = line.context("cannot read the fuzzer's output")?;
        // `#1234\tNEW cov: …`: progress; and the dictionary libFuzzer
        // recommends at the end.
        let progress = line.starts_with('#') && line[1..].starts_with(|c: char| c.is_ascii_digit());
        if line.starts_with("###### ") {
            in_dictionary = line.contains("Recommended dictionary");
        }
        if kind == FuzzRun::Long || !(progress || in_dictionary || line.starts_with("###### ")) {
            eprintln!("{line}");
        }
        if let Some(n) = line
            .strip_prefix("stat::number_of_executed_units:")
            .and_then(|n| n.trim().parse().ok())
        {
            runs = Some(n);
        }
        if let Some((_, input)) = line.split_once("Test unit written to ") {
            crash = Some(input.trim().to_owned());
        }
    }
    let status = child.wait().context("cannot wait for cargo fuzz")?;
    let elapsed = started.elapsed();
    if !status.success() && crash.is_none() {
        bail!("the fuzzer failed ({status}): {}", shown(&command));
    }
    Ok(Fuzzed {
        runs,
        elapsed,
        crash,
    })
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
