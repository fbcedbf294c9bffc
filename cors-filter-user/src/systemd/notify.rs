//! systemd's readiness protocol (sd_notify(3)) for `Type=notify`: one
//! datagram of `KEY=value` lines to the socket named by `$NOTIFY_SOCKET`
//! (a path, or `@name` in the abstract namespace).
//!
//! `run` says `READY=1` once every program is attached and the policy is
//! installed (so `systemctl start` returns only then, and fails if `run`
//! does), `STATUS=` what it enforces, `RELOADING=1` and `READY=1` around a
//! SIGHUP reload, `STOPPING=1` on exit, and `WATCHDOG=1` from its main loop
//! at half of `$WATCHDOG_USEC`, so that systemd restarts a daemon whose loop
//! is wedged. With `$NOTIFY_SOCKET` unset every call does nothing.

use std::{
    ffi::OsString,
    os::unix::{
        ffi::OsStrExt as _,
        net::{SocketAddr, UnixDatagram},
    },
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::{Context, Result, bail};

use super::truncated;

pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
pub const WATCHDOG_USEC: &str = "WATCHDOG_USEC";
pub const WATCHDOG_PID: &str = "WATCHDOG_PID";

/// Shortest interval between two `WATCHDOG=1`: a tokio interval must not be
/// zero, and a watchdog of under 2 ms could not be kept anyway.
const MIN_PING_EVERY: Duration = Duration::from_millis(1);

/// How long a notification may wait for room in systemd's queue: systemd
/// reads it at once, so only a wedged systemd makes one wait; READY=1 must
/// not be lost to a full queue, nor the daemon's loop held long.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Where the notifications go, if anywhere, and how often the watchdog
/// wants a ping.
pub struct Notifier {
    target: Option<Target>,
    watchdog: Option<Duration>,
}

struct Target {
    socket: UnixDatagram,
    addr: SocketAddr,
    /// `$NOTIFY_SOCKET` as given, for messages.
    shown: String,
    /// Whether the last send failed: a failure is logged once, not at every
    /// watchdog ping, and so is the recovery.
    failing: AtomicBool,
}

impl Notifier {
    /// The notifier `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID`
    /// describe; an error names a variable whose value is not what systemd
    /// sets.
    pub fn from_env() -> Result<Notifier> {
        Self::from_vars(|name| std::env::var_os(name), std::process::id())
    }

    fn from_vars(get: impl Fn(&str) -> Option<OsString>, pid: u32) -> Result<Notifier> {
        let Some(value) = get(NOTIFY_SOCKET) else {
            return Ok(Notifier {
                target: None,
                watchdog: None,
            });
        };
        let addr = parse_address(value.as_bytes())?;
        let socket = UnixDatagram::unbound()
            .and_then(|s| s.set_write_timeout(Some(SEND_TIMEOUT)).map(|()| s))
            .context("cannot make a socket for systemd's notifications")?;
        let watchdog = watchdog_interval(get(WATCHDOG_USEC), get(WATCHDOG_PID), pid)?;
        Ok(Notifier {
            target: Some(Target {
                socket,
                addr,
                shown: truncated(&value.to_string_lossy(), 120),
                failing: AtomicBool::new(false),
            }),
            watchdog,
        })
    }

    /// Whether notifications go anywhere.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// How often to say `WATCHDOG=1`: half the interval systemd wants, as
    /// sd_watchdog_enabled(3) advises. `None` without a watchdog.
    pub fn ping_every(&self) -> Option<Duration> {
        self.watchdog.map(|w| (w / 2).max(MIN_PING_EVERY))
    }

    /// Every program attached, the policy installed: `READY=1` and `status`.
    pub fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    /// A reload starts; [`Notifier::ready`] says it is over.
    pub fn reloading(&self) {
        self.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading the config",
            monotonic_usec()
        ));
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// Sends `message`; a failure is logged (once until a send works
    /// again) and does not stop the daemon: its filtering does not depend
    /// on systemd hearing it.
    fn send(&self, message: &str) {
        let Some(target) = &self.target else {
            return;
        };
        match target.socket.send_to_addr(message.as_bytes(), &target.addr) {
            Ok(_) => {
                if target.failing.swap(false, Ordering::Relaxed) {
                    log::info!("notifications to {} go through again", target.shown);
                }
            }
            Err(e) => {
                if !target.failing.swap(true, Ordering::Relaxed) {
                    let first = message.lines().next().unwrap_or_default();
                    log::warn!(
                        "cannot notify systemd ({first}) through {NOTIFY_SOCKET}={}: {e}",
                        target.shown
                    );
                }
            }
        }
    }
}

/// `$NOTIFY_SOCKET`: an absolute path, or `@` and a name in the abstract
/// namespace (as sd_notify(3) accepts; not `vsock:`).
fn parse_address(value: &[u8]) -> Result<SocketAddr> {
    let shown = || truncated(&String::from_utf8_lossy(value), 120);
    match value {
        [b'/', _, ..] => SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(value))
            .with_context(|| format!("{NOTIFY_SOCKET}={} is not a usable socket path", shown())),
        [b'@', name @ ..] if !name.is_empty() => {
            use std::os::linux::net::SocketAddrExt as _;
            SocketAddr::from_abstract_name(name).with_context(|| {
                format!(
                    "{NOTIFY_SOCKET}={} is not a usable abstract socket name",
                    shown()
                )
            })
        }
        _ => bail!(
            "{NOTIFY_SOCKET}={:?} is neither an absolute path nor @ and an abstract socket name",
            shown()
        ),
    }
}

/// The watchdog interval of `$WATCHDOG_USEC`, unless `$WATCHDOG_PID` names
/// another process than `pid` (the watchdog is then that one's).
fn watchdog_interval(
    usec: Option<OsString>,
    for_pid: Option<OsString>,
    pid: u32,
) -> Result<Option<Duration>> {
    let Some(usec) = usec else {
        return Ok(None);
    };
    let parse = |name: &str, value: &OsString| -> Result<u64> {
        value
            .to_str()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|&v| v > 0)
            .with_context(|| {
                format!(
                    "{name}={:?} is not a positive integer",
                    truncated(&value.to_string_lossy(), 40)
                )
            })
    };
    let usec = parse(WATCHDOG_USEC, &usec)?;
    if let Some(for_pid) = for_pid
        && parse(WATCHDOG_PID, &for_pid)? != u64::from(pid)
    {
        log::info!(
            "{WATCHDOG_PID}={} is another process than this one ({pid}): no watchdog pings",
            for_pid.to_string_lossy()
        );
        return Ok(None);
    }
    Ok(Some(Duration::from_micros(usec)))
}

/// `STATUS=` is one line: a line break would end the field.
fn one_line(status: &str) -> String {
    status.replace(['\n', '\r'], " ")
}

/// `CLOCK_MONOTONIC` in microseconds, which `MONOTONIC_USEC=` must carry
/// (systemd tells a reload it saw begin from an older one by it).
fn monotonic_usec() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec; CLOCK_MONOTONIC always
    // exists on Linux, so the call cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let secs = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000).saturating_add(nanos / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let pairs: Vec<(String, OsString)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn nothing_is_sent_without_notify_socket() {
        let n = Notifier::from_vars(vars(&[(WATCHDOG_USEC, "1000000")]), 7).unwrap();
        assert!(n.target.is_none());
        assert_eq!(n.ping_every(), None);
        n.ready("ignored");
    }

    #[test]
    fn addresses_are_paths_or_abstract_names() {
        assert!(parse_address(b"/run/systemd/notify").is_ok());
        let abstract_addr = parse_address(b"@cors-filter/notify").unwrap();
        use std::os::linux::net::SocketAddrExt as _;
        assert_eq!(
            abstract_addr.as_abstract_name(),
            Some(&b"cors-filter/notify"[..])
        );
        for bad in [&b""[..], b"@", b"/", b"relative/path", b"vsock:2:1234"] {
            let e = format!("{:#}", parse_address(bad).unwrap_err());
            assert!(e.contains(NOTIFY_SOCKET), "{bad:?}: {e}");
        }
        let long = format!("/{}", "x".repeat(200));
        let e = format!("{:#}", parse_address(long.as_bytes()).unwrap_err());
        assert!(e.contains("…") && e.len() < 300, "{e}");
    }

    #[test]
    fn the_watchdog_is_pinged_at_half_its_interval_by_its_process_only() {
        let socket = (NOTIFY_SOCKET, "/run/notify");
        let n = Notifier::from_vars(vars(&[socket, (WATCHDOG_USEC, "3000000")]), 7).unwrap();
        assert_eq!(n.ping_every(), Some(Duration::from_millis(1500)));
        let mine = [socket, (WATCHDOG_USEC, "3000000"), (WATCHDOG_PID, "7")];
        let n = Notifier::from_vars(vars(&mine), 7).unwrap();
        assert_eq!(n.ping_every(), Some(Duration::from_millis(1500)));
        let other = [socket, (WATCHDOG_USEC, "3000000"), (WATCHDOG_PID, "8")];
        assert_eq!(
            Notifier::from_vars(vars(&other), 7).unwrap().ping_every(),
            None
        );
        let tiny = [socket, (WATCHDOG_USEC, "1")];
        assert_eq!(
            Notifier::from_vars(vars(&tiny), 7).unwrap().ping_every(),
            Some(MIN_PING_EVERY)
        );
        for (key, bad) in [
            (WATCHDOG_USEC, "0"),
            (WATCHDOG_USEC, "-5"),
            (WATCHDOG_USEC, "1s"),
            (WATCHDOG_PID, "x"),
        ] {
            let mut set = vec![socket, (WATCHDOG_USEC, "3000000")];
            set.retain(|(k, _)| *k != key);
            set.push((key, bad));
            let e = format!("{:#}", Notifier::from_vars(vars(&set), 7).err().unwrap());
            assert!(e.contains(&format!("{key}=\"{bad}\"")), "{e}");
        }
    }

    #[test]
    fn messages_arrive_as_sd_notify_sends_them() {
        let dir = std::env::temp_dir().join(format!("cors-filter-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::from_vars(vars(&[(NOTIFY_SOCKET, path.to_str().unwrap())]), 7).unwrap();
        let mut buf = [0u8; 512];
        let mut next = || {
            let len = listener.recv(&mut buf).unwrap();
            String::from_utf8(buf[..len].to_vec()).unwrap()
        };
        n.ready("on eth0\nsecond line");
        assert_eq!(next(), "READY=1\nSTATUS=on eth0 second line");
        let before = monotonic_usec();
        n.reloading();
        let reloading = next();
        let usec: u64 = reloading
            .lines()
            .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
            .unwrap()
            .parse()
            .unwrap();
        assert!(reloading.starts_with("RELOADING=1\n"), "{reloading}");
        assert!(usec >= before && usec <= monotonic_usec(), "{reloading}");
        n.stopping();
        assert!(next().starts_with("STOPPING=1"));
        // Gone: a failed send is not an error of the daemon's.
        drop(listener);
        std::fs::remove_dir_all(&dir).unwrap();
        n.watchdog();
        assert!(n.target.as_ref().unwrap().failing.load(Ordering::Relaxed));
    }

    #[test]
    fn abstract_addresses_are_reached() {
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("cors-filter-notify-test-{}", std::process::id());
        let listener =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        let n = Notifier::from_vars(vars(&[(NOTIFY_SOCKET, &format!("@{name}"))]), 7).unwrap();
        n.stopping();
        let mut buf = [0u8; 64];
        let len = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1\nSTATUS=stopping");
    }
}
