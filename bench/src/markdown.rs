//! The generated block of `BENCHMARKS.md`: the machine, the date and every
//! figure of one run, between two marker lines. What is outside the
//! markers (the history of the figures, written by hand) is kept.

use std::{fmt::Write as _, fs, path::Path, process::Command, time::Duration};

use anyhow::{Context, Result, bail};

use crate::report::Part;

const BEGIN: &str = "<!-- cors-filter-bench: generated, begin -->";
const END: &str = "<!-- cors-filter-bench: generated, end -->";

/// Writes `parts` into the generated block of `path`, creating the file
/// (with the block alone) if there is none.
pub fn write(path: &Path, parts: &[Part], elapsed: Duration) -> Result<()> {
    let block = block(parts, elapsed)?;
    let existing = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let text = match (existing.find(BEGIN), existing.find(END)) {
        (Some(begin), Some(end)) if begin < end => format!(
            "{}{block}{}",
            &existing[..begin],
            &existing[end + END.len()..]
        ),
        (None, None) => format!("{existing}{block}\n"),
        _ => bail!(
            "{} has a broken generated block: the lines {BEGIN:?} and {END:?} must both be there, in that order",
            path.display()
        ),
    };
    fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn block(parts: &[Part], elapsed: Duration) -> Result<String> {
    let mut out = format!("{BEGIN}\n## Latest run\n\n");
    let _ = writeln!(
        out,
        "- Date: {}",
        command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"])?
    );
    let _ = writeln!(out, "- Machine: {}", machine()?);
    let _ = writeln!(out, "- Kernel: {}", command_line("uname", &["-r"])?);
    let _ = writeln!(out, "- Whole run: {:.0} s\n", elapsed.as_secs_f64());
    out.push_str("### Targets\n\n");
    for target in parts.iter().flat_map(|p| &p.targets) {
        let _ = writeln!(out, "- {}", target.line());
    }
    out.push('\n');
    for section in parts.iter().flat_map(|p| &p.sections) {
        out.push_str(&section.markdown());
        out.push('\n');
    }
    out.push_str(END);
    Ok(out)
}

fn command_line(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!("{program} {} failed: {}", args.join(" "), out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// CPU model and count, and memory, from `/proc`.
fn machine() -> Result<String> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").context("cannot read /proc/cpuinfo")?;
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_owned();
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let meminfo = fs::read_to_string("/proc/meminfo").context("cannot read /proc/meminfo")?;
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    Ok(format!(
        "{model}, {cpus} CPUs, {} GiB",
        (mem_kib + (1 << 19)) >> 20
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Section, Target};

    fn part() -> Part {
        let mut section = Section::new("Figures", &["a", "b"]);
        section.row(vec!["1".into(), "2".into()]);
        Part {
            sections: vec![section],
            targets: vec![Target::ratio_at_most("t", 2.0, 1.5)],
        }
    }

    #[test]
    fn the_block_is_replaced_and_the_history_around_it_kept() {
        let dir = std::env::temp_dir().join(format!("cf-bench-md-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("BENCHMARKS.md");
        fs::write(
            &path,
            format!(
                "# Benchmarks\n\nhistory before\n\n{BEGIN}\nold figures\n{END}\n\nhistory after\n"
            ),
        )
        .unwrap();
        write(&path, &[part()], Duration::from_secs(3)).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert!(
            text.starts_with("# Benchmarks\n\nhistory before\n\n"),
            "{text}"
        );
        assert!(
            text.ends_with(&format!("{END}\n\nhistory after\n")),
            "{text}"
        );
        assert!(!text.contains("old figures"), "{text}");
        assert!(
            text.contains("- t: 2.00x (target <= 1.5x): NOT MET"),
            "{text}"
        );
        assert!(text.contains("| 1 | 2 |"), "{text}");
    }

    #[test]
    fn a_broken_block_is_refused_and_the_file_left_alone() {
        let dir = std::env::temp_dir().join(format!("cf-bench-md-broken-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("BENCHMARKS.md");
        let broken = format!("history\n{END}\nfigures\n{BEGIN}\n");
        fs::write(&path, &broken).unwrap();
        let error = write(&path, &[part()], Duration::from_secs(3)).unwrap_err();
        let text = fs::read_to_string(&path).unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert!(
            error.to_string().contains("broken generated block"),
            "{error}"
        );
        assert_eq!(text, broken);
    }
}
