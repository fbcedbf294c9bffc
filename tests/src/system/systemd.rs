//! What systemd gives a service, played by the test: a notification
//! socket (`$NOTIFY_SOCKET`) and a journal native socket to listen on, and
//! a `$JOURNAL_STREAM` naming the daemon's stderr.

use std::{
    collections::BTreeMap,
    fs::File,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _, unix::net::UnixDatagram},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::TempDir;

/// A datagram socket in a temporary directory, receiving with the sender's
/// credentials (`SO_PASSCRED`), as systemd's own notification socket does.
pub struct DatagramListener {
    socket: UnixDatagram,
    path: PathBuf,
    /// Removed on drop, with the socket file.
    _dir: TempDir,
}

/// One datagram received.
#[derive(Debug, Clone)]
pub struct Datagram {
    /// The sending process (its thread group id).
    pub pid: i32,
    pub bytes: Vec<u8>,
    pub at: Instant,
}

impl Datagram {
    /// `NAME=value` lines, or a native journal entry: name to value.
    pub fn fields(&self) -> Result<BTreeMap<String, String>> {
        parse_fields(&self.bytes)
    }
}

impl DatagramListener {
    pub fn bind(tag: &str) -> Result<DatagramListener> {
        let dir = TempDir::new(tag)?;
        let path = dir.path().join("socket");
        let socket =
            UnixDatagram::bind(&path).with_context(|| format!("cannot bind {}", path.display()))?;
        let on: libc::c_int = 1;
        // SAFETY: setsockopt on a socket this owns, with a valid int of the
        // size given.
        let set = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PASSCRED,
                (&on as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if set != 0 {
            return Err(std::io::Error::last_os_error()).context("SO_PASSCRED");
        }
        Ok(DatagramListener {
            socket,
            path,
            _dir: dir,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next datagram, waiting at most `limit`; `None` after it.
    pub fn recv(&self, limit: Duration) -> Result<Option<Datagram>> {
        self.socket
            .set_read_timeout(Some(limit.max(Duration::from_millis(1))))?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut control = [0u64; 16];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: an all-zero msghdr is valid; the fields set below point
        // at buffers that outlive the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = size_of_val(&control);
        // SAFETY: recvmsg writes at most the lengths given into the
        // buffers `msg` points at, all alive and writable.
        let len = unsafe { libc::recvmsg(self.socket.as_raw_fd(), &mut msg, 0) };
        if len < 0 {
            let e = std::io::Error::last_os_error();
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                return Ok(None);
            }
            return Err(e).context("recvmsg");
        }
        let at = Instant::now();
        let mut pid = 0;
        // SAFETY: the CMSG macros walk the control buffer recvmsg filled,
        // within `msg_controllen`; SCM_CREDENTIALS data is a `ucred`.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET
                    && (*cmsg).cmsg_type == libc::SCM_CREDENTIALS
                {
                    let cred: libc::ucred = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                    pid = cred.pid;
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        buf.truncate(len as usize);
        Ok(Some(Datagram {
            pid,
            bytes: buf,
            at,
        }))
    }

    /// Drops what has arrived so far (what came before a measurement).
    pub fn drain(&self) -> Result<usize> {
        let mut dropped = 0;
        while self.recv(Duration::from_millis(1))?.is_some() {
            dropped += 1;
        }
        Ok(dropped)
    }

    /// Every datagram that arrives within `window`.
    pub fn collect(&self, window: Duration) -> Result<Vec<Datagram>> {
        let end = Instant::now() + window;
        let mut all = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.recv(left)? {
                Some(d) => all.push(d),
                None => break,
            }
        }
        Ok(all)
    }

    /// Datagrams until one for which `done` holds (returned last), for at
    /// most `limit`.
    pub fn until(
        &self,
        limit: Duration,
        mut done: impl FnMut(&Datagram) -> bool,
    ) -> Result<Vec<Datagram>> {
        let end = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            let Some(left) = end.checked_duration_since(Instant::now()) else {
                bail!("nothing awaited within {limit:?}; received {}", show(&seen));
            };
            match self.recv(left)? {
                Some(d) => {
                    let last = done(&d);
                    seen.push(d);
                    if last {
                        return Ok(seen);
                    }
                }
                None => bail!("nothing awaited within {limit:?}; received {}", show(&seen)),
            }
        }
    }
}

/// Datagrams as text, for messages.
pub fn show(datagrams: &[Datagram]) -> String {
    let texts: Vec<String> = datagrams
        .iter()
        .map(|d| String::from_utf8_lossy(&d.bytes).into_owned())
        .collect();
    format!("{texts:?}")
}

/// `NAME=value\n` fields, and the native journal protocol's binary ones
/// (`NAME\n`, a 64-bit little-endian length, the value, `\n`).
pub fn parse_fields(mut bytes: &[u8]) -> Result<BTreeMap<String, String>> {
    let mut fields = BTreeMap::new();
    while !bytes.is_empty() {
        let end = bytes
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(bytes.len());
        let line = &bytes[..end];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            fields.insert(
                String::from_utf8(line[..eq].to_vec())?,
                String::from_utf8(line[eq + 1..].to_vec())?,
            );
            bytes = bytes.get(end + 1..).unwrap_or_default();
        } else {
            let name = String::from_utf8(line.to_vec())?;
            let rest = bytes.get(end + 1..).unwrap_or_default();
            let (len, rest) = rest
                .split_first_chunk::<8>()
                .with_context(|| format!("field {name}: no length"))?;
            let len = u64::from_le_bytes(*len) as usize;
            let value = rest
                .get(..len)
                .with_context(|| format!("field {name}: shorter than {len}"))?;
            fields.insert(name, String::from_utf8(value.to_vec())?);
            bytes = rest.get(len + 1..).unwrap_or_default();
        }
    }
    Ok(fields)
}

/// `DEVICE:INODE` of `file`, as systemd puts in `$JOURNAL_STREAM`.
pub fn stream_id(file: &File) -> Result<String> {
    let meta = file.metadata()?;
    Ok(format!("{}:{}", meta.dev(), meta.ino()))
}

/// Waits (at most `limit`) until every thread of `pid` is stopped (a
/// SIGSTOP sent to it has taken effect).
pub fn wait_stopped(pid: i32, limit: Duration) -> Result<()> {
    let end = Instant::now() + limit;
    loop {
        let mut all = true;
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            let stat = std::fs::read_to_string(task?.path().join("stat")).unwrap_or_default();
            // `pid (comm) S ...`: the state follows the last `)`.
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next());
            all &= matches!(state, Some("T" | "t"));
        }
        if all {
            return Ok(());
        }
        if Instant::now() > end {
            bail!("process {pid} not stopped within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_binary_fields_are_read() {
        let mut bytes = b"READY=1\nSTATUS=a=b\nMESSAGE\n".to_vec();
        bytes.extend_from_slice(&3u64.to_le_bytes());
        bytes.extend_from_slice(b"x\ny\nPRIORITY=6\n");
        let fields = parse_fields(&bytes).unwrap();
        assert_eq!(fields["READY"], "1");
        assert_eq!(fields["STATUS"], "a=b");
        assert_eq!(fields["MESSAGE"], "x\ny");
        assert_eq!(fields["PRIORITY"], "6");
        assert!(parse_fields(b"MESSAGE\n\x05").is_err());
    }
}
