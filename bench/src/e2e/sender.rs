//! Raw preflight segments sent from the client namespace with an
//! `AF_PACKET` socket: no handshake, no client TCP stack, so what reaches
//! the server's XDP program is only the cost under test, at a rate chosen
//! here rather than by how fast connections can be opened.

use std::{
    net::Ipv4Addr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use super::nginx::CLIENT_CPU;
use anyhow::{Context, Result, bail};
use cors_filter_tests::{
    frames::packet::{Packet, TCP_SYN, checksum},
    harness::raw_client::enter_netns,
};

/// Frames per `sendmmsg` call, at most.
const BATCH: usize = 32;
/// Different source ports used: the frames look like that many connections.
pub const FLOWS: u16 = 64;
const FIRST_SRC_PORT: u16 = 40000;

/// Both ends of the frames.
pub struct Ends {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src_ip: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub dst_port: u16,
}

/// One segment carrying `payload` per source port, with valid IPv4 and TCP
/// checksums: a SYN, as with TCP Fast Open, so that the filter, which
/// follows connections, judges every frame as a connection's first request
/// (a later copy of the same segment would be dropped as part of a denied
/// connection, without being read). `Packet` builds the frame with its documentation
/// addresses; the MACs and IPs of the namespace pair are written over them
/// and both checksums computed again.
pub fn frames(ends: &Ends, payload: &[u8]) -> Vec<Vec<u8>> {
    (0..FLOWS)
        .map(|i| {
            let mut frame = Packet::ipv4(payload)
                .tcp_flags(TCP_SYN)
                .src_port(FIRST_SRC_PORT + i)
                .dst_port(ends.dst_port)
                .build();
            readdress(&mut frame, ends);
            frame
        })
        .collect()
}

/// Rewrites the MACs and IPv4 addresses of a frame `Packet` built (no VLAN
/// tag, no IP options) and its checksums.
fn readdress(frame: &mut [u8], ends: &Ends) {
    const IP: usize = 14;
    const TCP: usize = IP + 20;
    frame[0..6].copy_from_slice(&ends.dst_mac);
    frame[6..12].copy_from_slice(&ends.src_mac);
    frame[IP + 12..IP + 16].copy_from_slice(&ends.src_ip.octets());
    frame[IP + 16..IP + 20].copy_from_slice(&ends.dst_ip.octets());
    frame[IP + 10..IP + 12].fill(0);
    let sum = checksum(&frame[IP..TCP]);
    frame[IP + 10..IP + 12].copy_from_slice(&sum.to_be_bytes());
    frame[TCP + 16..TCP + 18].fill(0);
    let segment = &frame[TCP..];
    let mut pseudo = Vec::with_capacity(12 + segment.len());
    pseudo.extend(ends.src_ip.octets());
    pseudo.extend(ends.dst_ip.octets());
    pseudo.extend([0, libc::IPPROTO_TCP as u8]);
    pseudo.extend((segment.len() as u16).to_be_bytes());
    pseudo.extend(segment);
    let sum = checksum(&pseudo);
    frame[TCP + 16..TCP + 18].copy_from_slice(&sum.to_be_bytes());
}

/// What a [`send`] did.
pub struct Sent {
    /// Frames the kernel took.
    pub frames: u64,
    /// Frames refused with `ENOBUFS` (not counted in `frames`).
    pub refused: u64,
    pub elapsed: Duration,
}

/// How the frames reach the client interface's driver.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Queueing {
    /// Straight to the driver (`PACKET_QDISC_BYPASS`), as a packet
    /// generator's would: the client's qdisc layer is none of the server's
    /// cost. The kernel picks the transmit queue from the sending CPU
    /// (`packet_pick_tx_queue`: CPU % queues), so one pinned sender fills
    /// one queue of a multi-queue veth.
    Bypass,
    /// Through the queueing layer (`dev_queue_xmit`; veth's qdisc is
    /// `noqueue`), which picks each frame's transmit queue from its flow
    /// hash. veth hands a frame to the peer's receive queue of the same
    /// number.
    ByFlowHash,
}

/// How fast and how long to send.
#[derive(Clone, Copy)]
pub struct Pace {
    /// Frames a second.
    pub rate: u64,
    /// Frames in all.
    pub count: u64,
    /// When to stop even if not all are sent.
    pub limit: Duration,
}

impl Pace {
    /// `rate` frames a second for `seconds`, stopped 2 s after that at
    /// the latest.
    pub fn for_seconds(rate: u64, seconds: u64) -> Pace {
        Pace {
            rate,
            count: rate * seconds,
            limit: Duration::from_secs(seconds + 2),
        }
    }
}

/// Sends `frames` round robin out of `ifname` in the network namespace at
/// `ns_path`, as `pace` says, until all are sent or its limit has passed.
pub fn send(
    ns_path: &str,
    ifname: &str,
    frames: Vec<Vec<u8>>,
    pace: Pace,
    queueing: Queueing,
) -> Result<Sent> {
    let Pace { rate, count, limit } = pace;
    let (ns_path, ifname) = (ns_path.to_owned(), ifname.to_owned());
    // setns moves the calling thread only: a thread of its own sends.
    std::thread::spawn(move || {
        enter_netns(&ns_path)?;
        crate::affinity::pin_to_cpu(CLIENT_CPU, "sending thread")?;
        let socket = packet_socket(&ifname, queueing)
            .with_context(|| format!("cannot open an AF_PACKET socket on {ifname} in {ns_path}"))?;
        paced(&socket, &frames, rate, count, limit)
            .with_context(|| format!("cannot send on {ifname} in {ns_path}"))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the sending thread panicked"))?
}

/// An `AF_PACKET` raw socket bound to `ifname` for sending only: protocol 0
/// hooks no receive path, so the socket costs nothing on the frames other
/// traffic brings.
fn packet_socket(ifname: &str, queueing: Queueing) -> Result<OwnedFd> {
    let name = std::ffi::CString::new(ifname).context("bad interface name")?;
    // SAFETY: `name` is a valid C string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if ifindex == 0 {
        bail!("no interface {ifname}");
    }
    // SAFETY: plain socket creation.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("socket(AF_PACKET)");
    }
    // SAFETY: a new descriptor nothing else owns.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; all zeros is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = ifindex as i32;
    // SAFETY: `addr` is a sockaddr_ll of the size given, alive across the call.
    let bound = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if bound != 0 {
        return Err(std::io::Error::last_os_error()).context("bind(AF_PACKET)");
    }
    if queueing == Queueing::ByFlowHash {
        return Ok(socket);
    }
    let one: libc::c_int = 1;
    // SAFETY: an int option of the size given, alive across the call.
    let set = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            (&raw const one).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if set != 0 {
        return Err(std::io::Error::last_os_error()).context("setsockopt(PACKET_QDISC_BYPASS)");
    }
    Ok(socket)
}

fn paced(
    socket: &OwnedFd,
    frames: &[Vec<u8>],
    rate: u64,
    count: u64,
    limit: Duration,
) -> Result<Sent> {
    if frames.is_empty() || rate == 0 {
        bail!("nothing to send");
    }
    let mut iovecs: Vec<libc::iovec> = frames
        .iter()
        .map(|f| libc::iovec {
            iov_base: f.as_ptr() as *mut libc::c_void,
            iov_len: f.len(),
        })
        .collect();
    let mut sent = Sent {
        frames: 0,
        refused: 0,
        elapsed: Duration::ZERO,
    };
    let mut next = 0usize;
    let start = Instant::now();
    while sent.frames < count && start.elapsed() < limit {
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64).min(count);
        let owed = due.saturating_sub(sent.frames + sent.refused);
        if owed == 0 {
            std::thread::sleep(Duration::from_micros(50));
            continue;
        }
        let n = (owed as usize).min(BATCH);
        // SAFETY: mmsghdr is plain data; all zeros is a valid value.
        let mut messages: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; n];
        for (i, message) in messages.iter_mut().enumerate() {
            message.msg_hdr.msg_iov = &raw mut iovecs[(next + i) % frames.len()];
            message.msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: each header points at one iovec of `iovecs`, each at a
        // frame of `frames`; all outlive the call, which only reads them.
        let done =
            unsafe { libc::sendmmsg(socket.as_raw_fd(), messages.as_mut_ptr(), n as u32, 0) };
        if done < 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::ENOBUFS) {
                // The veth ring is full: this frame is lost, as it would be
                // on a wire; counted apart and paced on.
                sent.refused += 1;
                next += 1;
                continue;
            }
            return Err(error).context("sendmmsg");
        }
        sent.frames += done as u64;
        next = (next + done as usize) % frames.len();
    }
    sent.elapsed = start.elapsed();
    Ok(sent)
}
