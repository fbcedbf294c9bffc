//! The package itself: the files of [`crate::contents`] staged in a
//! scratch tree with `DEBIAN/`, archived by `dpkg-deb --build`.

use std::{
    io::Write as _,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, Result, bail};
use clap::CommandFactory as _;
use cors_filter_user::cli::Cli;

use crate::{
    PACKAGE,
    contents::{self, BINARY, EXAMPLE_CONFIG, FILES, MAINTAINER_SCRIPTS, Source},
    packaging_dir,
};

/// The package's one-line summary and its longer description.
const SUMMARY: &str = "drop disallowed CORS preflights in the kernel with XDP or TC";
const DESCRIPTION: &str = "\
An eBPF program at XDP (or TC) ingress drops CORS preflights whose Origin
is not in the allowlist, and, where a port asks for it, cross-origin
requests that change state, before any socket, proxy or application sees
them. The daemon (cors-filter run) loads and pins the program, reloads the
policy on SIGHUP and serves Prometheus metrics.
.
The package starts nothing: set the interfaces in /etc/default/cors-filter
and the origins in /etc/cors-filter.toml, then enable cors-filter.service.
Prometheus alert rules, a Grafana dashboard and a Kubernetes DaemonSet are
in /usr/share/doc/cors-filter/examples.";

/// Builds `cors-filter_VERSION_ARCH.deb` in `out_dir` from the `cors-filter`
/// binary at `binary`, and returns its path.
pub fn build(binary: &Path, out_dir: &Path) -> Result<PathBuf> {
    check_inputs(binary)?;
    // dpkg-shlibdeps runs in a directory of its own: paths from here on
    // are absolute.
    let out_dir = &std::path::absolute(out_dir)
        .with_context(|| format!("cannot make {} absolute", out_dir.display()))?;
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let stage = out_dir.join(format!("{PACKAGE}.stage"));
    if stage.exists() {
        std::fs::remove_dir_all(&stage)
            .with_context(|| format!("cannot remove the old stage {}", stage.display()))?;
    }
    let result = stage_and_archive(binary, &stage, out_dir);
    // The stage is scratch, kept only when it could not be archived.
    if result.is_ok() {
        std::fs::remove_dir_all(&stage)
            .with_context(|| format!("cannot remove {}", stage.display()))?;
    }
    result
}

/// Refuses to package what would not work installed: a missing binary, an
/// example config that does not load, a unit that runs another binary.
fn check_inputs(binary: &Path) -> Result<()> {
    if !binary.is_file() {
        bail!("no cors-filter binary at {}", binary.display());
    }
    let config = packaging_dir().join(EXAMPLE_CONFIG);
    cors_filter_user::config::Config::load(&config)
        .with_context(|| format!("the example config {} does not load", config.display()))?;
    let unit_source = packaging_dir().join("cors-filter.service");
    let unit = std::fs::read_to_string(&unit_source)
        .with_context(|| format!("cannot read {}", unit_source.display()))?;
    for line in unit.lines().filter(|l| l.starts_with("Exec")) {
        let Some((_, command)) = line.split_once('=') else {
            continue;
        };
        // `-`, `@`, `+`, `!`, `:` prefixes (systemd.service(5)) stand
        // before the path.
        let program = command
            .trim_start_matches(['-', '@', '+', '!', ':'])
            .split_whitespace()
            .next()
            .unwrap_or_default();
        if program.ends_with("/cors-filter") && program.strip_prefix('/') != Some(BINARY) {
            bail!(
                "{} runs {program}, but the package installs the binary as /{BINARY}: {line}",
                unit_source.display()
            );
        }
    }
    Ok(())
}

fn stage_and_archive(binary: &Path, stage: &Path, out_dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir(stage).with_context(|| format!("cannot create {}", stage.display()))?;
    std::fs::set_permissions(stage, std::fs::Permissions::from_mode(0o755))?;
    for entry in FILES {
        let bytes = match entry.source {
            Source::Binary => stripped(binary, stage)?,
            Source::Packaging(name) => read(&packaging_dir().join(name))?,
            Source::RootGzipped(name) => gzip(&read(&packaging_dir().join("..").join(name))?)?,
        };
        place(stage, entry.path, &bytes, entry.mode)?;
    }
    for file in contents::generated_files()? {
        let bytes = if file.gzip {
            gzip(&file.text)?
        } else {
            file.text
        };
        place(stage, &file.path, &bytes, 0o644)?;
    }
    let md5sums = md5sums(stage)?;
    let installed_kib = installed_size_kib(stage)?;

    for script in MAINTAINER_SCRIPTS {
        place(
            stage,
            &format!("DEBIAN/{script}"),
            &read(&packaging_dir().join("debian").join(script))?,
            0o755,
        )?;
    }
    let conffiles: String = contents::conffiles().map(|c| c + "\n").collect();
    place(stage, "DEBIAN/conffiles", conffiles.as_bytes(), 0o644)?;
    place(stage, "DEBIAN/md5sums", md5sums.as_bytes(), 0o644)?;

    let version = version()?;
    let arch = architecture()?;
    let depends = shlib_depends(
        &stage.join(BINARY),
        &out_dir.join(format!("{PACKAGE}.shlibdeps")),
    )?;
    let control = format!(
        "Package: {PACKAGE}\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: cors-filter developers <cors-filter@localhost>\n\
         Installed-Size: {installed_kib}\n\
         Depends: {depends}\n\
         Section: net\n\
         Priority: optional\n\
         Description: {SUMMARY}\n{}\n",
        DESCRIPTION
            .lines()
            .map(|l| format!(" {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    place(stage, "DEBIAN/control", control.as_bytes(), 0o644)?;

    let deb = out_dir.join(format!("{PACKAGE}_{version}_{arch}.deb"));
    // gzip rather than dpkg-deb's default xz: every dpkg reads it, and it
    // builds in a quarter of the time (xz saves about a fifth of the size).
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zgzip", "-z9", "--build"])
        .arg(stage)
        .arg(&deb))?;
    Ok(deb)
}

/// The CLI's version (the workspace's), as the package's: the project
/// packages itself, so a native version without a Debian revision.
pub fn version() -> Result<String> {
    Cli::command()
        .get_version()
        .map(str::to_owned)
        .context("the CLI definition has no version")
}

fn architecture() -> Result<String> {
    let out = run(Command::new("dpkg").arg("--print-architecture"))?;
    Ok(out.trim().to_owned())
}

/// The binary's library dependencies, as `dpkg-shlibdeps` (dpkg-dev)
/// finds them: `libc6 (>= 2.34), libgcc-s1 (>= 4.2)` or so.
/// `scratch` holds the `debian/control` it needs while it runs.
fn shlib_depends(binary: &Path, scratch: &Path) -> Result<String> {
    std::fs::create_dir_all(scratch.join("debian"))?;
    std::fs::write(
        scratch.join("debian/control"),
        format!("Source: {PACKAGE}\n\nPackage: {PACKAGE}\nArchitecture: any\n"),
    )?;
    let out = run(Command::new("dpkg-shlibdeps")
        .current_dir(scratch)
        .arg("-O")
        .arg(format!("-e{}", binary.display())));
    std::fs::remove_dir_all(scratch)
        .with_context(|| format!("cannot remove {}", scratch.display()))?;
    let out =
        out.context("dpkg-shlibdeps (Debian package dpkg-dev; `cargo xtask setup` installs it)")?;
    out.lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .map(str::to_owned)
        .with_context(|| format!("dpkg-shlibdeps printed no shlibs:Depends: {out}"))
}

/// The binary without its symbols and debug information, as Debian ships
/// binaries (`strip`, binutils); the eBPF object inside it is data, kept.
fn stripped(binary: &Path, stage: &Path) -> Result<Vec<u8>> {
    let scratch = stage.with_extension("stripped");
    run(Command::new("strip")
        .args([
            "--strip-unneeded",
            "--remove-section=.comment",
            "--remove-section=.note",
            "-o",
        ])
        .arg(&scratch)
        .arg(binary))
    .context("cannot strip the binary (strip: Debian package binutils)")?;
    let bytes = read(&scratch);
    std::fs::remove_file(&scratch)
        .with_context(|| format!("cannot remove {}", scratch.display()))?;
    bytes
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Writes `bytes` at `relative` under `stage` with `mode`, its directories
/// 0755, whatever the umask.
fn place(stage: &Path, relative: &str, bytes: &[u8], mode: u32) -> Result<()> {
    let to = stage.join(relative);
    let mut dir = to.parent();
    let mut made = Vec::new();
    while let Some(d) = dir
        && d != stage
        && !d.exists()
    {
        made.push(d.to_owned());
        dir = d.parent();
    }
    for d in made.iter().rev() {
        std::fs::create_dir(d).with_context(|| format!("cannot create {}", d.display()))?;
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
    }
    std::fs::write(&to, bytes).with_context(|| format!("cannot write {}", to.display()))?;
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", to.display()))?;
    Ok(())
}

/// `gzip -9n`: no name or time stamp inside, so builds are reproducible.
fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new("gzip")
        .arg("-9n")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run gzip")?;
    let mut stdin = child.stdin.take().context("gzip's stdin")?;
    let input = bytes.to_owned();
    // Written from a thread: gzip's output fills its pipe while we write.
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().context("cannot wait for gzip")?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("the thread feeding gzip panicked"))?
        .context("cannot write to gzip")?;
    if !out.status.success() {
        bail!("gzip failed ({})", out.status);
    }
    Ok(out.stdout)
}

/// Every regular file of the stage (no `DEBIAN/` yet), `md5sum` style.
fn md5sums(stage: &Path) -> Result<String> {
    let files = regular_files(stage)?;
    let out = run(Command::new("md5sum").current_dir(stage).args(&files))?;
    Ok(out)
}

fn installed_size_kib(stage: &Path) -> Result<u64> {
    let mut total = 0;
    for file in regular_files(stage)? {
        total += std::fs::metadata(stage.join(&file))?.len().div_ceil(1024);
    }
    Ok(total)
}

/// The stage's regular files, relative and sorted.
fn regular_files(stage: &Path) -> Result<Vec<String>> {
    let mut files = Vec::new();
    let mut dirs = vec![stage.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
        {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                dirs.push(path);
            } else {
                let relative = path.strip_prefix(stage)?.to_string_lossy().into_owned();
                files.push(relative);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Runs `command`, returning its stdout; fails naming it, with its stderr.
fn run(command: &mut Command) -> Result<String> {
    let shown = format!("{command:?}");
    let out = command
        .output()
        .with_context(|| format!("cannot run {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
