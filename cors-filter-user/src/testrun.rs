//! `BPF_PROG_TEST_RUN`: runs a loaded program on a frame given from
//! userspace, in the kernel, without attaching it anywhere.
//!
//! aya 0.14 has no wrapper for it (one came with releases that need a newer
//! rustc), so this module makes the `bpf(2)` call itself, as `links` does
//! for the two link calls aya lacks.

use std::os::fd::{AsRawFd as _, BorrowedFd};

use anyhow::{Result, bail};

/// `BPF_PROG_TEST_RUN` from `enum bpf_cmd` in `linux/bpf.h`.
const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// The `test` member of `union bpf_attr` (`linux/bpf.h`), up to `batch_size`.
/// The kernel accepts an attribute shorter than its own union and treats the
/// missing rest as zero.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    /// Explicit, so that it is zeroed: the kernel refuses an attribute with
    /// anything but zeros past the fields it knows.
    _tail: u32,
}

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
pub fn test_run(program: BorrowedFd<'_>, frame: &[u8], repeat: u32) -> Result<TestRun> {
    let Ok(data_size_in) = u32::try_from(frame.len()) else {
        bail!("a frame of {} bytes is too large to run", frame.len());
    };
    // The program never grows a frame: the output fits in the input's size
    // (a larger one would be an error, ENOSPC, not a cut copy).
    let mut frame_out = vec![0u8; frame.len()];
    let mut attr = TestRunAttr {
        prog_fd: program.as_raw_fd() as u32,
        data_size_in,
        data_in: frame.as_ptr() as u64,
        data_size_out: data_size_in,
        data_out: frame_out.as_mut_ptr() as u64,
        repeat: repeat.max(1),
        ..TestRunAttr::default()
    };
    // SAFETY: `attr` is a valid `bpf_attr` prefix for this command and lives
    // across the call; `data_in` points to `data_size_in` readable bytes that
    // the kernel only reads; `data_out` points to `data_size_out` writable
    // bytes, which the kernel never writes past (it fails with ENOSPC
    // instead); `ctx_*` are null with zero sizes, so the kernel writes
    // nothing else but `attr` itself.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            std::mem::size_of::<TestRunAttr>() as libc::c_uint,
        )
    };
    if rc != 0 {
        let error = std::io::Error::last_os_error();
        bail!(
            "BPF_PROG_TEST_RUN on a frame of {} bytes failed: {error}",
            frame.len()
        );
    }
    // The kernel says how long the output is.
    let out_len = attr.data_size_out as usize;
    if out_len > frame.len() {
        bail!(
            "BPF_PROG_TEST_RUN reported an output of {} bytes for a buffer of {}",
            attr.data_size_out,
            frame.len()
        );
    }
    frame_out.truncate(out_len);
    Ok(TestRun {
        retval: attr.retval,
        duration_ns: attr.duration,
        frame_out,
    })
}

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of};

    use super::*;

    #[test]
    fn attr_layout_matches_linux_bpf_h() {
        assert_eq!(offset_of!(TestRunAttr, retval), 4);
        assert_eq!(offset_of!(TestRunAttr, data_in), 16);
        assert_eq!(offset_of!(TestRunAttr, data_out), 24);
        assert_eq!(offset_of!(TestRunAttr, repeat), 32);
        assert_eq!(offset_of!(TestRunAttr, duration), 36);
        assert_eq!(offset_of!(TestRunAttr, ctx_in), 48);
        assert_eq!(offset_of!(TestRunAttr, ctx_out), 56);
        assert_eq!(offset_of!(TestRunAttr, flags), 64);
        assert_eq!(offset_of!(TestRunAttr, batch_size), 72);
        assert_eq!(size_of::<TestRunAttr>(), 80);
    }

    #[test]
    fn a_bad_fd_is_an_error_not_a_verdict() {
        let file = std::fs::File::open("/dev/null").unwrap();
        let fd = std::os::fd::AsFd::as_fd(&file);
        let e = test_run(fd, &[0u8; 64], 1).unwrap_err().to_string();
        assert!(e.contains("BPF_PROG_TEST_RUN"), "{e}");
    }
}
