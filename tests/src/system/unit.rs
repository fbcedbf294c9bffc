//! The shipped systemd unit, `packaging/cors-filter.service`: its
//! directives read as systemd reads them, and what `systemd-analyze` says
//! about it.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::{TempDir, harness::process::run_bounded};

/// The unit file in the source tree.
pub fn unit_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../packaging/cors-filter.service")
}

/// Where the unit expects the binary.
pub const INSTALLED_BINARY: &str = "usr/bin/cors-filter";

pub struct Unit {
    pub path: PathBuf,
    pub text: String,
}

impl Unit {
    pub fn load() -> Result<Unit> {
        let path = unit_path();
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the unit {}", path.display()))?;
        Ok(Unit { path, text })
    }

    /// Every value given to `key` in the `[Service]` section, in order.
    pub fn service_values(&self, key: &str) -> Vec<String> {
        section_values(&self.text, "Service", key)
    }

    /// The one `key=` line of `[Service]`, split into words.
    fn single_list(&self, key: &str) -> Result<Vec<String>> {
        match self.service_values(key).as_slice() {
            [one] => Ok(one.split_whitespace().map(str::to_owned).collect()),
            other => bail!(
                "{}: expected one {key}= line in [Service], found {}",
                self.path.display(),
                other.len()
            ),
        }
    }

    /// `CapabilityBoundingSet=`, as written (`CAP_BPF`, ...): an allow
    /// list on one line.
    pub fn capability_bounding_set(&self) -> Result<Vec<String>> {
        let caps = self.single_list("CapabilityBoundingSet")?;
        if caps.is_empty()
            || caps
                .iter()
                .any(|c| c.starts_with('~') || !c.starts_with("CAP_"))
        {
            bail!(
                "{}: CapabilityBoundingSet= must list capabilities to keep, found {caps:?}",
                self.path.display()
            );
        }
        Ok(caps)
    }

    /// The system calls the unit's `SystemCallFilter=` lines allow, with
    /// groups expanded by `systemd-analyze syscall-filter`.
    pub fn syscall_allowlist(&self) -> Result<BTreeSet<String>> {
        let lines = self.service_values("SystemCallFilter");
        apply_syscall_filter(&lines, &mut expand_with_systemd_analyze)
            .with_context(|| format!("in {}", self.path.display()))
    }
}

/// The values of `key=` lines inside `[section]`, comments left out.
pub fn section_values(text: &str, section: &str, key: &str) -> Vec<String> {
    let header = format!("[{section}]");
    let mut inside = false;
    let mut values = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == header;
        } else if inside
            && !line.starts_with('#')
            && !line.starts_with(';')
            && let Some((k, v)) = line.split_once('=')
            && k.trim() == key
        {
            values.push(v.trim().to_owned());
        }
    }
    values
}

/// `SystemCallFilter=` as systemd applies it (systemd.exec(5)): the first
/// line must be an allow list (a deny list is not what the unit uses);
/// each later line adds its calls, or removes them when it starts with `~`.
/// `expand` turns one word (a call or an `@group`) into calls.
pub fn apply_syscall_filter(
    lines: &[String],
    expand: &mut dyn FnMut(&str) -> Result<BTreeSet<String>>,
) -> Result<BTreeSet<String>> {
    let Some(first) = lines.first() else {
        bail!("no SystemCallFilter= line");
    };
    if first.starts_with('~') {
        bail!("the first SystemCallFilter= line is a deny list: {first}");
    }
    let mut allowed = BTreeSet::new();
    for line in lines {
        let (deny, words) = match line.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, line.as_str()),
        };
        for word in words.split_whitespace() {
            for call in expand(word)? {
                if deny {
                    allowed.remove(&call);
                } else {
                    allowed.insert(call);
                }
            }
        }
    }
    Ok(allowed)
}

/// A call as itself; a group through `systemd-analyze syscall-filter`,
/// nested groups included.
pub fn expand_with_systemd_analyze(word: &str) -> Result<BTreeSet<String>> {
    if !word.starts_with('@') {
        return Ok(BTreeSet::from([word.to_owned()]));
    }
    let out = run_bounded(
        Command::new("systemd-analyze").args(["--no-pager", "syscall-filter", word]),
        std::time::Duration::from_secs(30),
    )
    .context("cannot run systemd-analyze (Debian package systemd)")?;
    if !out.status.success() {
        bail!(
            "systemd-analyze syscall-filter {word} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut calls = BTreeSet::new();
    // The first line names the group; then comments and one entry a line.
    for entry in text.lines().skip(1).map(str::trim) {
        if entry.is_empty() || entry.starts_with('#') {
            continue;
        }
        calls.extend(expand_with_systemd_analyze(entry)?);
    }
    if calls.is_empty() {
        bail!("systemd-analyze knows no system call group {word}");
    }
    Ok(calls)
}

/// `systemd-analyze verify` on the unit, in a scratch root that holds
/// systemd's own units and, where the unit runs it, the `cors-filter`
/// binary at `binary`. Returns what it printed; fails on a non-zero exit.
pub fn verify(unit: &Unit, binary: &Path) -> Result<String> {
    let root = TempDir::new("unit-root")?;
    let place = |relative: &str, from: &Path| -> Result<()> {
        let to = root.path().join(relative);
        std::fs::create_dir_all(to.parent().expect("has a parent"))?;
        std::fs::copy(from, &to)
            .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
        Ok(())
    };
    place(INSTALLED_BINARY, binary)?;
    place("etc/systemd/system/cors-filter.service", &unit.path)?;
    // The targets and mounts the unit orders itself after.
    let units = Path::new("/usr/lib/systemd/system");
    for entry in std::fs::read_dir(units)
        .with_context(|| format!("cannot list {} (is systemd installed?)", units.display()))?
    {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            place(
                &format!(
                    "usr/lib/systemd/system/{}",
                    entry.file_name().to_string_lossy()
                ),
                &entry.path(),
            )?;
        }
    }
    let out = run_bounded(
        Command::new("systemd-analyze")
            .arg("--no-pager")
            .arg(format!("--root={}", root.path().display()))
            .args([
                "verify",
                "--man=no",
                "/etc/systemd/system/cors-filter.service",
            ]),
        std::time::Duration::from_secs(60),
    )?;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("systemd-analyze verify failed ({}):\n{printed}", out.status);
    }
    Ok(printed)
}

/// `systemd-analyze security --offline=yes` on the unit: the overall
/// exposure (0 to 10, lower is better) and the full report.
pub fn exposure(unit: &Unit) -> Result<(f64, String)> {
    let out = run_bounded(
        Command::new("systemd-analyze")
            .args(["--no-pager", "security", "--offline=yes"])
            .arg(&unit.path),
        std::time::Duration::from_secs(60),
    )?;
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let score = report
        .lines()
        .find_map(|l| {
            let rest = l.split_once("Overall exposure level for ")?.1;
            rest.split_once(": ")?
                .1
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .with_context(|| {
            format!(
                "no overall exposure in systemd-analyze security's output:\n{report}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    Ok((score, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_come_from_their_section_only() {
        let text =
            "[Unit]\nA=unit\n[Service]\n# A=comment\nA=one\nB = x y\nA=two\n[Install]\nA=install\n";
        assert_eq!(section_values(text, "Service", "A"), ["one", "two"]);
        assert_eq!(section_values(text, "Service", "B"), ["x y"]);
    }

    #[test]
    fn filter_lines_add_and_remove_in_order() {
        let mut expand = |w: &str| -> Result<BTreeSet<String>> {
            Ok(match w {
                "@service" => ["read", "write", "chown", "bpf"].map(String::from).into(),
                "@privileged" => ["chown", "bpf"].map(String::from).into(),
                call => [call.to_owned()].into(),
            })
        };
        let lines = ["@service", "~@privileged", "bpf"].map(String::from);
        let allowed = apply_syscall_filter(&lines, &mut expand).unwrap();
        assert_eq!(allowed, ["bpf", "read", "write"].map(String::from).into());
        assert!(apply_syscall_filter(&["~@privileged".to_owned()], &mut expand).is_err());
        assert!(apply_syscall_filter(&[], &mut expand).is_err());
    }
}
