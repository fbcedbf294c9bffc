//! CPU time as the kernel accounts it: per thread (`/proc/PID/task/TID/schedstat`,
//! nanoseconds) and for the whole machine (`/proc/stat`).
//!
//! Without IRQ time accounting, softirq work is charged to whichever task
//! was running when it ran; with threaded NAPI the receive path of an
//! interface runs in a kthread of its own, `napi/<ifname>-<id>`, so its
//! cost is that thread's run time.

use std::{collections::BTreeSet, fs, process::Command};

use anyhow::{Context, Result, bail};
use cors_filter_tests::harness::process::run_ok;

/// Run time of every thread of process `pid`, in nanoseconds: the first
/// field of each `schedstat` (the scheduler's `sum_exec_runtime`, which
/// `utime + stime` of `/proc/PID/stat` are derived from, with nanosecond
/// rather than clock-tick resolution).
pub fn process_ns(pid: u32) -> Result<u64> {
    schedstat_sum(pid, 0, "run time")
}

/// Times the threads of process `pid` were switched onto a CPU so far: the
/// third field of each `schedstat` (for a NAPI kthread, about the number of
/// times it woke up to poll).
pub fn process_runs(pid: u32) -> Result<u64> {
    schedstat_sum(pid, 2, "run count")
}

/// Field `field` of every thread's `schedstat` of process `pid`, summed;
/// `what` names the field in errors.
fn schedstat_sum(pid: u32, field: usize, what: &str) -> Result<u64> {
    let dir = format!("/proc/{pid}/task");
    let mut total = 0;
    for entry in fs::read_dir(&dir).with_context(|| format!("cannot list {dir}"))? {
        let path = entry
            .with_context(|| format!("cannot list {dir}"))?
            .path()
            .join("schedstat");
        let text =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let value: u64 = text
            .split_whitespace()
            .nth(field)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("{} holds {text:?}, not a {what}", path.display()))?;
        total += value;
    }
    Ok(total)
}

/// Sum of [`process_ns`] over `pids`.
pub fn processes_ns(pids: &[u32]) -> Result<u64> {
    pids.iter().map(|&p| process_ns(p)).sum()
}

/// The kthreads whose name starts with `napi/<ifname>-`, in any namespace
/// (kthread names carry the interface name, not its namespace).
fn napi_threads(ifname: &str) -> BTreeSet<u32> {
    let prefix = format!("napi/{ifname}-");
    let Ok(entries) = fs::read_dir("/proc") else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.starts_with(&prefix))
        })
        .collect()
}

/// The NAPI kthreads of one interface: found as those that appeared after
/// [`NapiWatch::before`], so that a `veth-s` of another namespace pair (a
/// test suite running alongside) is not counted.
pub struct NapiWatch {
    ns: String,
    ifname: String,
    before: BTreeSet<u32>,
}

impl NapiWatch {
    /// Notes the NAPI kthreads of interfaces named `ifname` that exist now;
    /// call before attaching the XDP program that gives `ifname` its NAPI.
    pub fn before(ns: &str, ifname: &str) -> NapiWatch {
        NapiWatch {
            ns: ns.to_owned(),
            ifname: ifname.to_owned(),
            before: napi_threads(ifname),
        }
    }

    /// Switches `ifname` (in namespace `ns`) to threaded NAPI and returns the
    /// kthreads it got. veth has NAPI only while an XDP program is attached
    /// (or GRO is on): the switch fails before that.
    pub fn threaded(self) -> Result<Vec<u32>> {
        let (ns, ifname) = (&self.ns, &self.ifname);
        // `ip netns exec` mounts the namespace's own /sys, where the
        // interface's `threaded` file is.
        run_ok(Command::new("ip").args([
            "netns",
            "exec",
            ns,
            "sh",
            "-c",
            &format!("echo 1 > /sys/class/net/{ifname}/threaded"),
        ]))
        .with_context(|| format!("cannot switch {ifname} in namespace {ns} to threaded NAPI"))?;
        let new: Vec<u32> = napi_threads(ifname)
            .difference(&self.before)
            .copied()
            .collect();
        if new.is_empty() {
            bail!("no napi/{ifname}-* kthread appeared for {ifname} in namespace {ns}");
        }
        Ok(new)
    }
}

/// The whole machine's CPU time from the `cpu` line of `/proc/stat`, in
/// clock ticks: busy (user, nice, system, irq, softirq, steal) and all.
#[derive(Clone, Copy)]
pub struct MachineCpu {
    busy: u64,
}

impl MachineCpu {
    pub fn now() -> Result<MachineCpu> {
        let text = fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
        let line = text
            .lines()
            .find(|l| l.starts_with("cpu "))
            .context("/proc/stat has no `cpu` line")?;
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|f| {
                f.parse()
                    .with_context(|| format!("bad /proc/stat line {line:?}"))
            })
            .collect::<Result<_>>()?;
        // user nice system idle iowait irq softirq steal
        let [user, nice, system, _idle, _iowait, irq, softirq, steal, ..] = fields[..] else {
            bail!("/proc/stat's cpu line is short: {line:?}");
        };
        Ok(MachineCpu {
            busy: user + nice + system + irq + softirq + steal,
        })
    }

    /// Busy seconds since `earlier`.
    pub fn busy_since(&self, earlier: &MachineCpu) -> f64 {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        self.busy.saturating_sub(earlier.busy) as f64 / hz
    }
}

/// Seconds a part waits at most for the machine to be quiet.
const QUIET_WAIT_SECONDS: usize = 5;

/// How busy the machine is before a part starts, as a fraction of all its
/// CPUs over one second: the figures assume nothing else runs. Waits up to
/// [`QUIET_WAIT_SECONDS`] for a quiet second (the kernel may still be
/// tearing down the previous part's namespaces and programs) and reports
/// the last second measured.
pub fn busy_before() -> Result<f64> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut busy = 0.0;
    for _ in 0..QUIET_WAIT_SECONDS {
        let start = MachineCpu::now()?;
        std::thread::sleep(std::time::Duration::from_secs(1));
        busy = MachineCpu::now()?.busy_since(&start) / cpus as f64;
        if busy <= 0.05 {
            break;
        }
    }
    Ok(busy)
}

/// A note saying how busy the machine was, warning above 5%.
pub fn busy_note(busy: f64) -> String {
    let warning = if busy > 0.05 {
        " WARNING: something else was running; the figures are disturbed."
    } else {
        ""
    };
    format!(
        "Machine busy before the part started: {:.1}% of all CPUs over 1 s.{warning}",
        busy * 100.0
    )
}
