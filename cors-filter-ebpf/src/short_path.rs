//! The short path: most packets on an interface are not TCP to an inspected
//! port, and every one of them pays for what the program does before it
//! knows that. This path reads plain Ethernet + IPv4 (no options) or IPv6
//! (no extension header the full walk follows) in place after a bounds
//! check, looks up the port, and gives the outcome of a packet that is not
//! inspected, without the per-CPU scratch entry or the full header walk.
//!
//! Anything it does not settle (VLAN tags, IP options, fragments, AH, IPv6
//! extension headers, short or malformed headers, and every segment the
//! filter must read) goes to the full path in `net::tcp_payload`, which
//! gives such packets the same outcome as before: the short path only
//! answers where the full path would answer the same.

use cors_filter_common::{Counter, Outcome, PortFlags, ipv6};

use crate::{
    maps::{active_generation, port_flags},
    net::{Frame, TCP_SYN},
};

/// An outcome the short path gives: one that never denies and counts one
/// counter only, so that the packet passes after one count. The field is
/// private: one is made only by [`Settled::checked`], in the constants
/// below, where its checks run at compile time.
#[derive(Clone, Copy)]
pub struct Settled(Outcome);

impl Settled {
    const fn checked(outcome: Outcome) -> Settled {
        assert!(!outcome.may_deny(), "a short-path outcome may deny");
        assert!(
            outcome.counters().1.is_none(),
            "a short-path outcome counts two counters"
        );
        Settled(outcome)
    }

    /// The one counter the packet counts.
    #[inline(always)]
    pub fn counter(self) -> Counter {
        self.0.counters().0
    }
}

const NOT_IP: Settled = Settled::checked(Outcome::NotIp);
const NOT_TCP: Settled = Settled::checked(Outcome::NotTcp);
const PORT_NOT_INSPECTED: Settled = Settled::checked(Outcome::PortNotInspected);
const NO_PAYLOAD: Settled = Settled::checked(Outcome::NoPayload);

const ETH_HLEN: usize = 14;
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const TCP_MIN_HLEN: usize = 20;
/// The bytes read to settle a packet that is not TCP: Ethernet and the IP
/// header (for IPv6, its first 8 bytes: the next header is the seventh).
const IPV4_IP_READ: usize = ETH_HLEN + IPV4_HLEN;
const IPV6_IP_READ: usize = ETH_HLEN + 8;
/// And for TCP: a TCP header without options too.
const IPV4_TCP_READ: usize = ETH_HLEN + IPV4_HLEN + TCP_MIN_HLEN;
const IPV6_TCP_READ: usize = ETH_HLEN + IPV6_HLEN + TCP_MIN_HLEN;

/// EtherTypes as they lie in memory (network order, read as a native `u16`
/// on a little-endian machine: BPF programs are built for `bpfel`).
const ETH_P_IPV4: u16 = 0x0800u16.to_be();
const ETH_P_IPV6: u16 = 0x86DDu16.to_be();
const ETH_P_8021Q: u16 = 0x8100u16.to_be();
const ETH_P_8021AD: u16 = 0x88A8u16.to_be();
const IPPROTO_TCP: u8 = 6;
// IPv4 protocol numbers and IPv6 next-header values are one registry.
const _: () = assert!(IPPROTO_TCP == ipv6::NEXT_TCP);

/// The frame's first bytes, read in place.
struct Head {
    data: usize,
}

impl Head {
    /// The `u16` at `offset`, in network order as it lies in memory.
    ///
    /// # Safety
    /// `offset + 2` must be within the bytes checked against `data_end`.
    #[inline(always)]
    unsafe fn u16_at(&self, offset: usize) -> u16 {
        // SAFETY: in bounds by the caller's check. The load is 2-byte
        // aligned where the frame starts at an even address, which drivers
        // and the kernel's XDP and skb headroom give (the verifier's
        // alignment model assumes NET_IP_ALIGN, 2), and every offset read
        // is even. A program before this one in a chain could move the
        // start by an odd amount (`bpf_xdp_adjust_head`); the x86-64 and
        // arm64 JITs, where this runs, load a misaligned `u16` correctly.
        // An aligned read is one 2-byte load; `read_unaligned` would be
        // two byte loads on the BPF target.
        unsafe { ((self.data + offset) as *const u16).read() }
    }

    /// The byte at `offset`.
    ///
    /// # Safety
    /// `offset + 1` must be within the bytes checked against `data_end`.
    #[inline(always)]
    unsafe fn u8_at(&self, offset: usize) -> u8 {
        // SAFETY: in bounds by the caller's check.
        unsafe { ((self.data + offset) as *const u8).read() }
    }
}

/// The outcome of a packet the filter does not inspect, or `None` for the
/// full path.
#[inline(always)]
pub fn outcome(ctx: &impl Frame) -> Option<Settled> {
    let head = Head { data: ctx.data() };
    let end = ctx.data_end();
    if head.data + ETH_HLEN > end {
        return None;
    }
    // SAFETY: the Ethernet header is in bounds, checked just above.
    let ether_type = unsafe { head.u16_at(12) };
    let (dst_port, payload_len, tcp_flags) = match ether_type {
        ETH_P_IPV4 => {
            if head.data + IPV4_IP_READ > end {
                return None;
            }
            let ip = ETH_HLEN;
            // SAFETY: the reads are within the `IPV4_IP_READ` bytes checked
            // just above.
            let total_len = unsafe {
                // IP options: the full path reads them.
                if head.u8_at(ip) & 0x0f != (IPV4_HLEN / 4) as u8 {
                    return None;
                }
                let total_len = u16::from_be(head.u16_at(ip + 2)) as usize;
                // Fragments, and a length shorter than the header: the
                // full path's outcomes.
                if total_len < IPV4_HLEN || u16::from_be(head.u16_at(ip + 6)) & 0x3fff != 0 {
                    return None;
                }
                match head.u8_at(ip + 9) {
                    IPPROTO_TCP => total_len,
                    // TCP behind AH is read by the full path.
                    ipv6::NEXT_AUTH => return None,
                    _ => return Some(NOT_TCP),
                }
            };
            if head.data + IPV4_TCP_READ > end {
                return None;
            }
            // SAFETY: every read below is within the `IPV4_TCP_READ` bytes
            // checked just above.
            unsafe {
                let tcp = ip + IPV4_HLEN;
                let data_offset = (head.u8_at(tcp + 12) >> 4) as usize * 4;
                if data_offset < TCP_MIN_HLEN || IPV4_HLEN + data_offset > total_len {
                    return None;
                }
                (
                    head.u16_at(tcp + 2),
                    total_len - IPV4_HLEN - data_offset,
                    head.u8_at(tcp + 13),
                )
            }
        }
        ETH_P_IPV6 => {
            if head.data + IPV6_IP_READ > end {
                return None;
            }
            let ip = ETH_HLEN;
            // SAFETY: the next header is within the `IPV6_IP_READ` bytes
            // checked just above.
            match unsafe { head.u8_at(ip + 6) } {
                IPPROTO_TCP => {}
                // Extension headers: the full path walks them.
                next if ipv6::is_walked(next) => return None,
                // What the walk ends at with nothing to walk: UDP,
                // ICMPv6, ESP, no next header.
                _ => return Some(NOT_TCP),
            }
            if head.data + IPV6_TCP_READ > end {
                return None;
            }
            // SAFETY: every read below is within the `IPV6_TCP_READ` bytes
            // checked just above.
            unsafe {
                let payload_len = u16::from_be(head.u16_at(ip + 4)) as usize;
                let tcp = ip + IPV6_HLEN;
                let data_offset = (head.u8_at(tcp + 12) >> 4) as usize * 4;
                if data_offset < TCP_MIN_HLEN || data_offset > payload_len {
                    return None;
                }
                (
                    head.u16_at(tcp + 2),
                    payload_len - data_offset,
                    head.u8_at(tcp + 13),
                )
            }
        }
        ETH_P_8021Q | ETH_P_8021AD => return None,
        _ => return Some(NOT_IP),
    };
    if port_flags(active_generation(), u16::from_be(dst_port)) & PortFlags::INSPECT == 0 {
        return Some(PORT_NOT_INSPECTED);
    }
    // An acknowledgment (or a FIN, a reset) to an inspected port: nothing
    // to parse, no connection state to read, as on the full path.
    if payload_len == 0 && tcp_flags & TCP_SYN == 0 {
        return Some(NO_PAYLOAD);
    }
    None
}
