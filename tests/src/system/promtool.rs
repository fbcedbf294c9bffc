//! `promtool check metrics` (Debian's `prometheus` package, installed by
//! `cargo xtask setup`): the reference linter of the exposition format.

use std::{
    io::Write as _,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::harness::process::wait_bounded;

/// Fails unless `promtool check metrics` accepts `text` without a word: a
/// missing promtool, an error or a lint warning all fail.
pub fn check_metrics(text: &str) -> Result<()> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context(
            "cannot run promtool (Debian package prometheus; `cargo xtask setup` installs it)",
        )?;
    let mut stdin = child.stdin.take().context("promtool's stdin")?;
    stdin
        .write_all(text.as_bytes())
        .context("cannot write to promtool")?;
    drop(stdin);
    let status = wait_bounded(
        &mut child,
        Duration::from_secs(30),
        "promtool check metrics",
    )?;
    let output = child
        .wait_with_output()
        .context("cannot collect promtool's output")?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    if !status.success() || !said.trim().is_empty() {
        bail!("promtool check metrics ({status}) says:\n{said}\non:\n{text}");
    }
    Ok(())
}

/// `promtool check rules FILE`: the rule file parses, every expression is
/// valid PromQL. Fails on an error, or if promtool finds no rule.
pub fn check_rules(file: &std::path::Path) -> Result<String> {
    promtool(&["check", "rules"], file)
}

/// `promtool test rules FILE`: the unit tests of a rule file pass.
pub fn test_rules(file: &std::path::Path) -> Result<String> {
    promtool(&["test", "rules"], file)
}

/// `promtool ARGS FILE`, bounded; what it printed, or an error with it.
fn promtool(args: &[&str], file: &std::path::Path) -> Result<String> {
    let out = crate::harness::process::run_bounded(
        Command::new("promtool").args(args).arg(file),
        Duration::from_secs(60),
    )
    .context("cannot run promtool (Debian package prometheus; `cargo xtask setup` installs it)")?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() || !said.contains("SUCCESS") {
        bail!(
            "promtool {} {} ({}) says:\n{said}",
            args.join(" "),
            file.display(),
            out.status
        );
    }
    Ok(said)
}
