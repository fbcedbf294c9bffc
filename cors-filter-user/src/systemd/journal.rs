//! The journal, when systemd runs the daemon with stderr connected to it.
//!
//! systemd says so in `$JOURNAL_STREAM` (`DEVICE:INODE` of the stream it
//! gave as stdout/stderr, since systemd 231); a child that inherited the
//! variable but writes elsewhere (a terminal, a file) is told apart by
//! comparing it with stderr's own device and inode. When they match:
//!
//! - each log line starts with its sd-daemon(3) priority, `<3>` error,
//!   `<4>` warning, `<6>` info, `<7>` debug, so that `journalctl -p
//!   warning` finds warnings; and carries no timestamp (the journal adds
//!   its own);
//! - denials go to the journal's native socket with structured fields
//!   (see `denials::journal`), so `journalctl CORS_FILTER_ORIGIN=…` finds
//!   them.
//!
//! Otherwise the plain terminal format of env_logger stays.

use std::{
    ffi::OsStr,
    io::Write as _,
    os::{fd::AsRawFd as _, unix::net::UnixDatagram},
    path::{Path, PathBuf},
    sync::OnceLock,
};

use anyhow::{Context, Result, bail};

use super::truncated;

pub const JOURNAL_STREAM: &str = "JOURNAL_STREAM";
/// The journal's native protocol socket (systemd-journald.service(8)).
pub const NATIVE_SOCKET: &str = "/run/systemd/journal/socket";
/// Another native socket, for tests: read only when stderr is the journal,
/// so it changes nothing elsewhere; and whoever sets a root daemon's
/// environment controls it anyway.
pub const NATIVE_SOCKET_VAR: &str = "CORS_FILTER_JOURNAL_SOCKET";

/// sd-daemon(3) priorities (syslog's).
pub const PRIORITY_ERROR: u8 = 3;
pub const PRIORITY_WARNING: u8 = 4;
pub const PRIORITY_INFO: u8 = 6;
pub const PRIORITY_DEBUG: u8 = 7;

/// The priority of a log line of `level`.
pub fn priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => PRIORITY_ERROR,
        log::Level::Warn => PRIORITY_WARNING,
        log::Level::Info => PRIORITY_INFO,
        log::Level::Debug | log::Level::Trace => PRIORITY_DEBUG,
    }
}

/// Whether stderr is the journal stream systemd gave this process.
pub fn stderr_is_journal() -> bool {
    static IS: OnceLock<bool> = OnceLock::new();
    *IS.get_or_init(|| {
        let Some(value) = std::env::var_os(JOURNAL_STREAM) else {
            return false;
        };
        let stderr = std::io::stderr();
        let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: fstat writes a whole `stat` into the buffer it is given,
        // valid and writable here, and reads nothing else; the result is
        // used only when it succeeded.
        if unsafe { libc::fstat(stderr.as_raw_fd(), stat.as_mut_ptr()) } != 0 {
            return false;
        }
        // SAFETY: fstat succeeded, so it filled `stat`.
        let stat = unsafe { stat.assume_init() };
        stream_matches(&value, stat.st_dev, stat.st_ino)
    })
}

/// Whether `$JOURNAL_STREAM`'s `DEVICE:INODE` (decimal) is `dev`, `ino`.
fn stream_matches(value: &OsStr, dev: u64, ino: u64) -> bool {
    let Some((d, i)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    d.parse() == Ok(dev) && i.parse() == Ok(ino)
}

/// The logger: `RUST_LOG` decides what is logged (default `info`); the
/// format is the journal's when stderr is the journal.
pub fn init_logger() {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if stderr_is_journal() {
        builder.format(|buf, record| {
            let line = record.args().to_string();
            write_prefixed(buf, priority(record.level()), &line)
        });
    }
    builder.init();
}

/// `text` with `<priority>` before each of its lines: the journal reads
/// the prefix on every line.
fn write_prefixed(out: &mut impl std::io::Write, priority: u8, text: &str) -> std::io::Result<()> {
    for line in text.split('\n') {
        writeln!(out, "<{priority}>{line}")?;
    }
    Ok(())
}

/// Prints an error line of the CLI's own (not through the logger) to
/// stderr, with the error priority when stderr is the journal.
pub fn print_error(line: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = if stderr_is_journal() {
        write_prefixed(&mut stderr, PRIORITY_ERROR, line)
    } else {
        writeln!(stderr, "{line}")
    };
}

/// The journal's native protocol socket: one datagram per entry, each
/// field `NAME=value\n` (or, for a value with a line break, `NAME\n`, its
/// length as 64-bit little-endian, the value, `\n`).
pub struct Native {
    socket: UnixDatagram,
    path: PathBuf,
}

impl Native {
    /// The native socket when stderr is the journal ([`NATIVE_SOCKET`], or
    /// `$CORS_FILTER_JOURNAL_SOCKET`, which must be an absolute path);
    /// `None` otherwise.
    pub fn from_env() -> Result<Option<Native>> {
        if !stderr_is_journal() {
            return Ok(None);
        }
        let path = match std::env::var_os(NATIVE_SOCKET_VAR) {
            Some(path) if Path::new(&path).is_absolute() => PathBuf::from(path),
            Some(path) => bail!(
                "{NATIVE_SOCKET_VAR}={:?} is not an absolute path",
                truncated(&path.to_string_lossy(), 120)
            ),
            None => PathBuf::from(NATIVE_SOCKET),
        };
        let socket = UnixDatagram::unbound()
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .context("cannot make a socket for the journal")?;
        Ok(Some(Native { socket, path }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sends one entry; on an error (no journal there, its queue full) the
    /// caller logs the line on stderr instead.
    pub fn send(&self, fields: &[(&str, &str)]) -> std::io::Result<()> {
        self.socket.send_to(&encode(fields), &self.path).map(drop)
    }
}

/// One entry in the native protocol. Field names are the caller's
/// constants: upper-case letters, digits and `_`, not starting with `_`.
pub fn encode(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        debug_assert!(valid_field_name(name), "{name}");
        out.extend_from_slice(name.as_bytes());
        if value.contains('\n') {
            out.push(b'\n');
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
        } else {
            out.push(b'=');
        }
        out.extend_from_slice(value.as_bytes());
        out.push(b'\n');
    }
    out
}

/// What journald accepts as a field name from a client.
pub const fn valid_field_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() > 64 || bytes[0] == b'_' || bytes[0].is_ascii_digit() {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !(b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_') {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `s` as an `OsStr`, as `$JOURNAL_STREAM` comes.
    fn os(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    #[test]
    fn the_stream_must_be_stderrs() {
        assert!(stream_matches(os("2049:131"), 2049, 131));
        assert!(!stream_matches(os("2049:132"), 2049, 131));
        assert!(!stream_matches(os("2050:131"), 2049, 131));
        for bad in [
            "",
            "2049",
            "2049:",
            ":131",
            "x:131",
            "2049:131:0",
            " 2049:131",
        ] {
            assert!(!stream_matches(os(bad), 2049, 131), "{bad:?}");
        }
    }

    #[test]
    fn every_line_gets_the_priority() {
        let mut out = Vec::new();
        write_prefixed(&mut out, PRIORITY_WARNING, "one\ntwo").unwrap();
        assert_eq!(out, b"<4>one\n<4>two\n");
        assert_eq!(priority(log::Level::Error), 3);
        assert_eq!(priority(log::Level::Warn), 4);
        assert_eq!(priority(log::Level::Info), 6);
        assert_eq!(priority(log::Level::Debug), 7);
        assert_eq!(priority(log::Level::Trace), 7);
    }

    #[test]
    fn native_entries_encode_line_breaks_with_a_length() {
        assert_eq!(
            encode(&[("MESSAGE", "a b"), ("PRIORITY", "6")]),
            b"MESSAGE=a b\nPRIORITY=6\n"
        );
        let mut expected = b"MESSAGE\n".to_vec();
        expected.extend_from_slice(&3u64.to_le_bytes());
        expected.extend_from_slice(b"a\nb\n");
        assert_eq!(encode(&[("MESSAGE", "a\nb")]), expected);
        assert!(valid_field_name("CORS_FILTER_ORIGIN"));
        for bad in ["", "_PID", "lower", "A-B", "1A"] {
            assert!(!valid_field_name(bad), "{bad}");
        }
    }
}
