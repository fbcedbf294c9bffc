//! Keeping a thread on one CPU, so that what is measured side by side runs
//! where it is meant to.

use anyhow::{Context, Result};

/// Pins the calling thread (only it: threads it starts later inherit the
/// pin, processes it starts too) to `cpu`; `what` names the thread in the
/// error.
pub fn pin_to_cpu(cpu: usize, what: &str) -> Result<()> {
    pin_thread(0, &[cpu], what)
}

/// Lets thread `tid` (0: the calling thread) run on `cpus` only; `what`
/// names the thread in the error.
pub fn pin_thread(tid: u32, cpus: &[usize], what: &str) -> Result<()> {
    // SAFETY: cpu_set_t is plain data; all zeros is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        // SAFETY: CPU_SET writes the bit of `cpu`, which is below
        // CPU_SETSIZE on any machine this runs on (the benchmark uses CPUs
        // 0 and 1).
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size given; pid 0 is this thread.
    if unsafe {
        libc::sched_setaffinity(
            tid as libc::pid_t,
            std::mem::size_of::<libc::cpu_set_t>(),
            &set,
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot pin the {what} to CPUs {cpus:?}"));
    }
    Ok(())
}

/// The CPUs thread `tid` may run on.
pub fn allowed_cpus(tid: u32) -> Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; all zeros is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid cpu_set_t of the size given, written by the call.
    if unsafe {
        libc::sched_getaffinity(
            tid as libc::pid_t,
            std::mem::size_of::<libc::cpu_set_t>(),
            &mut set,
        )
    } != 0
    {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot read the CPUs thread {tid} may run on"));
    }
    // SAFETY: CPU_ISSET reads a bit below CPU_SETSIZE of a valid set.
    Ok((0..libc::CPU_SETSIZE as usize)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}
