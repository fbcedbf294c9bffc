//! `cors-filter run` under strace: every system call it makes and every
//! path it writes to, from its start to its exit, to hold against what
//! the systemd unit lets it do.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use crate::{
    harness::filter::{FilterEnv, FilterHome, METRICS_PORT, run_arguments},
    harness::metrics,
    harness::netns::NetnsPair,
    harness::process::{Guarded, die_with_parent, wait_bounded},
};

const READY_LIMIT: Duration = Duration::from_secs(90);

/// A filter running under `strace -f`, stopped with SIGTERM on drop.
pub struct TracedFilter {
    process: Guarded,
    binary: PathBuf,
    trace: PathBuf,
    log: PathBuf,
    server_ns: String,
}

/// What the trace shows of the filter itself (not of the tools that start it).
#[derive(Debug, Default)]
pub struct Trace {
    pub syscalls: BTreeSet<String>,
    /// Paths it opened for writing, created, removed, renamed, changed
    /// the mode of, or pinned a BPF object at.
    pub written: BTreeSet<String>,
    /// Every path under /proc it named in a system call.
    pub proc_paths: BTreeSet<String>,
}

impl TracedFilter {
    /// Starts `binary` (`run` on the server interface, with `home`'s config
    /// and state, `pin_dir`, and `args`, with `env`) under strace, writing
    /// the trace to `trace`, and waits until its metrics answer.
    pub fn start(
        pair: &NetnsPair,
        binary: &Path,
        home: &FilterHome,
        pin_dir: &Path,
        trace: &Path,
        args: &[&str],
        env: &FilterEnv,
    ) -> Result<TracedFilter> {
        let log = trace.with_extension("log");
        let log_file = std::fs::File::create(&log)?;
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", pair.server_ns_path()))
            .args(["strace", "-f", "-qq", "-s", "4096", "-o"])
            .arg(trace)
            // If strace goes, its tracee gets SIGTERM rather than running on.
            .args(["--", "setpriv", "--pdeathsig=SIGTERM", "--"])
            .arg(binary)
            .args(run_arguments(pin_dir, &home.state_dir(), &home.config()))
            .args(["--metrics-listen", &format!("127.0.0.1:{METRICS_PORT}")])
            .args(args);
        env.apply(&mut command, &log_file)?;
        command
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        die_with_parent(&mut command, libc::SIGTERM);
        let child = command
            .spawn()
            .context("cannot start cors-filter under strace (is strace installed?)")?;
        let mut traced = TracedFilter {
            process: Guarded {
                child,
                name: "strace cors-filter run".into(),
            },
            binary: binary.to_owned(),
            trace: trace.to_owned(),
            log,
            server_ns: pair.server.clone(),
        };
        let (server_ns, log) = (&traced.server_ns, &traced.log);
        traced.process.wait_ready(
            READY_LIMIT,
            Duration::from_millis(200),
            || Ok(metrics::fetch(server_ns, METRICS_PORT).is_ok()),
            || std::fs::read_to_string(log).unwrap_or_default(),
        )?;
        Ok(traced)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The pid of `cors-filter` itself: the traced process that executed it.
    fn filter_pid(&self) -> Result<libc::pid_t> {
        let text = std::fs::read_to_string(&self.trace)
            .with_context(|| format!("cannot read {}", self.trace.display()))?;
        let exec = format!("execve(\"{}\"", self.binary.display());
        text.lines()
            .find(|l| l.contains(&exec) && l.ends_with("= 0"))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("no successful {exec} in {}", self.trace.display()))
    }

    /// Stops the filter with SIGTERM, waits for strace to finish, and
    /// returns the trace; fails unless the filter exited cleanly.
    pub fn stop(mut self) -> Result<Trace> {
        let pid = self.filter_pid()?;
        // SAFETY: kill on a pid this test started (strace's tracee); the
        // tracee is not reaped before strace has seen it exit.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let status = wait_bounded(
            &mut self.process.child,
            Duration::from_secs(20),
            "strace cors-filter run",
        )?;
        if !status.success() {
            bail!(
                "cors-filter run under strace did not exit cleanly ({status}):\n{}",
                self.log()
            );
        }
        let text = std::fs::read_to_string(&self.trace)
            .with_context(|| format!("cannot read {}", self.trace.display()))?;
        Ok(parse_trace(&text, &self.binary))
    }
}

impl Drop for TracedFilter {
    fn drop(&mut self) {
        if self.process.exited().is_none()
            && let Ok(pid) = self.filter_pid()
        {
            // SAFETY: as in `stop`.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let _ = wait_bounded(&mut self.process.child, Duration::from_secs(10), "strace");
        }
    }
}

/// Calls whose path arguments are all written to.
const WRITING_CALLS: [&str; 11] = [
    "mkdir",
    "mkdirat",
    "rmdir",
    "unlink",
    "unlinkat",
    "rename",
    "renameat",
    "renameat2",
    "chmod",
    "fchmodat",
    "truncate",
];

/// Reads an `strace -f` trace (`PID name(args) = result` lines), from the
/// execve of `binary` on.
pub fn parse_trace(text: &str, binary: &Path) -> Trace {
    let exec = format!("execve(\"{}\"", binary.display());
    let mut trace = Trace::default();
    let mut started = false;
    for line in text.lines() {
        // `PID rest`; `rest` is a call, `<... name resumed>`, a signal or an exit.
        let Some((_, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        if !started {
            started = rest.starts_with(&exec[..]) && line.ends_with("= 0");
            if !started {
                continue;
            }
        }
        let Some((name, args)) = rest.split_once('(') else {
            continue;
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        trace.syscalls.insert(name.to_owned());
        let paths = quoted(args);
        trace.proc_paths.extend(
            paths
                .iter()
                .filter(|p| p.starts_with("/proc/") || *p == "/proc")
                .cloned(),
        );
        let writes = match name {
            "open" | "openat" | "openat2" | "creat" => {
                name == "creat"
                    || ["O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC"]
                        .iter()
                        .any(|f| args.contains(f))
            }
            "bpf" => args.starts_with("BPF_OBJ_PIN"),
            _ => WRITING_CALLS.contains(&name),
        };
        if writes {
            trace.written.extend(paths);
        }
    }
    trace
}

/// The double-quoted strings of strace's rendering of arguments.
fn quoted(args: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = args.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut s = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => s.extend(chars.next()),
                '"' => break,
                c => s.push(c),
            }
        }
        out.push(s);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_calls_and_written_paths_after_the_exec() {
        let text = r#"10 execve("/usr/bin/setpriv", ["setpriv"], 0x1 /* 3 vars */) = 0
10 openat(AT_FDCWD, "/etc/before", O_WRONLY|O_CREAT, 0600) = 3
10 execve("/bin/cors-filter", ["cors-filter"], 0x1 /* 3 vars */) = 0
10 openat(AT_FDCWD, "/etc/ld.so.cache", O_RDONLY|O_CLOEXEC) = 3
10 openat(AT_FDCWD, "/proc/self/status", O_RDONLY|O_CLOEXEC) = 3
10 mkdir("/sys/fs/bpf/p", 0700)   = 0
11 openat(AT_FDCWD, "/var/lib/s/.a.tmp", O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0600 <unfinished ...>
11 <... openat resumed>)        = 4
10 bpf(BPF_OBJ_PIN, {pathname="/sys/fs/bpf/p/MAP", bpf_fd=5, file_flags=0}, 24) = 0
10 renameat2(AT_FDCWD, "/var/lib/s/.a.tmp", AT_FDCWD, "/var/lib/s/a", 0) = 0
10 --- SIGTERM {si_signo=SIGTERM} ---
10 +++ exited with 0 +++
"#;
        let trace = parse_trace(text, Path::new("/bin/cors-filter"));
        assert_eq!(
            trace.syscalls,
            ["bpf", "execve", "mkdir", "openat", "renameat2"]
                .map(String::from)
                .into()
        );
        assert_eq!(
            trace.written,
            [
                "/sys/fs/bpf/p",
                "/sys/fs/bpf/p/MAP",
                "/var/lib/s/.a.tmp",
                "/var/lib/s/a"
            ]
            .map(String::from)
            .into()
        );
        assert_eq!(trace.proc_paths, ["/proc/self/status".to_owned()].into());
    }
}
