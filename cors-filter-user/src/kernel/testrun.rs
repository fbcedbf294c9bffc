//! `BPF_PROG_TEST_RUN`: runs a loaded program on a frame given from
//! userspace, in the kernel, without attaching it anywhere.
//!
//! The call is aya's ([`aya::programs::TestRun`], for XDP and TC programs
//! alike); this module only adapts it to its callers (`Filter::test_run`,
//! `replay`, the benchmark): one run's return value, time and output frame
//! in one value, and an aya handle on a program aya did not load (the
//! benchmark's bare programs).

use std::{
    borrow::Cow,
    os::fd::{AsRawFd as _, BorrowedFd},
};

use anyhow::{Context, Result, bail};
use aya::programs::{TestRunOptions, TestRunResult, Xdp, loaded_programs};
use aya_obj::programs::XdpAttachType;

/// What one `BPF_PROG_TEST_RUN` call returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRun {
    /// The program's return value (an `xdp_action` for XDP).
    pub retval: u32,
    /// Mean time of one run, in nanoseconds, as the kernel measured it.
    pub duration_ns: u32,
    /// The frame as the program left it (rewritten, cut), as the kernel
    /// copied it back after the last run.
    pub frame_out: Vec<u8>,
}

/// Runs `program` `repeat` times (at least once) on `frame`. The return
/// value, the time and the frame as the program left it are read back; the
/// context is not asked for.
pub fn test_run<P>(program: &P, frame: &[u8], repeat: u32) -> Result<TestRun>
where
    P: for<'a> aya::programs::TestRun<Opts<'a> = TestRunOptions<'a>, Result = TestRunResult>,
{
    // aya would cut the size to 32 bits.
    if u32::try_from(frame.len()).is_err() {
        bail!("a frame of {} bytes is too large to run", frame.len());
    }
    // The program never grows a frame: the output fits in the input's size
    // (a larger one would be an error, ENOSPC, not a cut copy).
    let mut frame_out = vec![0u8; frame.len()];
    let run = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut frame_out),
            repeat: repeat.max(1),
            ..TestRunOptions::new()
        })
        .with_context(|| {
            format!(
                "BPF_PROG_TEST_RUN on a frame of {} bytes failed",
                frame.len()
            )
        })?;
    // The kernel says how long the output is.
    let out_len = run.data_size_out as usize;
    if out_len > frame.len() {
        bail!(
            "BPF_PROG_TEST_RUN reported an output of {out_len} bytes for a buffer of {}",
            frame.len()
        );
    }
    frame_out.truncate(out_len);
    Ok(TestRun {
        retval: run.return_value,
        // The kernel's figure is a `u32` of nanoseconds.
        duration_ns: u32::try_from(run.duration.as_nanos()).unwrap_or(u32::MAX),
        frame_out,
    })
}

/// An aya handle on the XDP program `fd` refers to, loaded without aya (the
/// benchmark's bare programs), to run with [`test_run`]. Found by its id,
/// which the kernel gives in the descriptor's `/proc/self/fdinfo`; the
/// handle holds a descriptor of its own.
pub fn xdp_program(fd: BorrowedFd<'_>, name: &'static str) -> Result<Xdp> {
    let fdinfo = format!("/proc/self/fdinfo/{}", fd.as_raw_fd());
    let text = std::fs::read_to_string(&fdinfo).with_context(|| format!("cannot read {fdinfo}"))?;
    let id: u32 = text
        .lines()
        .find_map(|line| line.strip_prefix("prog_id:"))
        .with_context(|| format!("descriptor {} is not a BPF program", fd.as_raw_fd()))?
        .trim()
        .parse()
        .with_context(|| format!("a bad prog_id in {fdinfo}"))?;
    // Programs may come and go meanwhile: one that cannot be read is not
    // this one, which `fd` keeps.
    let info = loaded_programs()
        .filter_map(Result::ok)
        .find(|info| info.id() == id)
        .with_context(|| format!("program {name} (id {id}) is not among the loaded programs"))?;
    Xdp::from_program_info(info, Cow::Borrowed(name), XdpAttachType::Interface)
        .with_context(|| format!("program {name} (id {id}) is not an XDP program"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_descriptor_that_is_no_program_is_refused() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let e = format!(
            "{:#}",
            xdp_program(std::os::fd::AsFd::as_fd(&file), "null").unwrap_err()
        );
        assert!(e.contains("is not a BPF program"), "{e}");
    }
}
