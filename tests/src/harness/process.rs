//! Child processes that die with their guard, and bounded command runs.

use std::{
    io::Read as _,
    os::unix::process::CommandExt as _,
    process::{Child, Command, ExitStatus, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// What a finished command printed on stdout, as text.
pub fn stdout_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a finished command printed on stderr, as text.
pub fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `command` to completion, failing if it takes longer than `limit`.
pub fn run_bounded(command: &mut Command, limit: Duration) -> Result<Output> {
    let shown = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {shown}"))?;
    // Drained while the child runs: output past a pipe's 64 KiB (a
    // verifier log) would otherwise block it until the limit.
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let status = wait_bounded(&mut child, limit, &shown)?;
    let joined = |t: std::thread::JoinHandle<Vec<u8>>| {
        t.join()
            .map_err(|_| anyhow::anyhow!("cannot collect the output of {shown}"))
    };
    Ok(Output {
        status,
        stdout: joined(stdout)?,
        stderr: joined(stderr)?,
    })
}

/// Waits up to `limit` for `child` (shown as `shown` in errors) to exit;
/// past it, kills it and fails.
pub fn wait_bounded(child: &mut Child, limit: Duration, shown: &str) -> Result<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{shown} took longer than {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `command`, which must succeed within 30 s.
pub fn run_ok(command: &mut Command) -> Result<Output> {
    let shown = format!("{command:?}");
    let output = run_bounded(command, Duration::from_secs(30))?;
    if !output.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output)
}

/// Makes a spawned child get `signal` when the spawning thread's process dies,
/// so that nothing outlives an aborted test run.
pub fn die_with_parent(command: &mut Command, signal: libc::c_int) -> &mut Command {
    // SAFETY: prctl is async-signal-safe; nothing is allocated in the hook.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// A running child that is stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Guarded {
    pub child: Child,
    pub name: String,
}

impl Guarded {
    /// Sends SIGTERM and waits up to `grace` for the exit, then SIGKILLs.
    /// Returns whether it exited by itself, successfully.
    pub fn stop(&mut self, grace: Duration) -> bool {
        if let Ok(Some(status)) = self.child.try_wait() {
            return status.success();
        }
        // SAFETY: kill on a pid we own and have not reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        false
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Asks `ready` every `every` until it says yes, for at most `limit`.
    /// Fails, with what `log` returns, if the process exits first or the
    /// time runs out.
    pub fn wait_ready(
        &mut self,
        limit: Duration,
        every: Duration,
        mut ready: impl FnMut() -> Result<bool>,
        log: impl Fn() -> String,
    ) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                bail!(
                    "{} exited ({status}) before it was ready:\n{}",
                    self.name,
                    log()
                );
            }
            if ready()? {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} not ready within {limit:?}:\n{}", self.name, log());
            }
            std::thread::sleep(every);
        }
    }

    /// SIGKILL, and waits for the exit.
    pub fn kill(&mut self) -> Result<()> {
        self.child
            .kill()
            .with_context(|| format!("cannot kill {}", self.name))?;
        self.child
            .wait()
            .with_context(|| format!("cannot reap {}", self.name))?;
        Ok(())
    }

    /// Sends `signal` to the running child.
    pub fn signal(&mut self, signal: libc::c_int) -> Result<()> {
        if self.exited().is_some() {
            bail!("{} is not running", self.name);
        }
        // SAFETY: kill on a pid we own and have not reaped (checked above).
        if unsafe { libc::kill(self.child.id() as libc::pid_t, signal) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("cannot signal {}", self.name));
        }
        Ok(())
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
    }
}
