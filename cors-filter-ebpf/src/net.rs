//! Ethernet (+ up to two VLAN tags), IPv4 / IPv6 and TCP, read with direct
//! packet access. Every read is checked against `data_end` first, which is
//! what lets the verifier accept it.

use aya_ebpf::{
    EbpfContext,
    helpers::generated::{bpf_skb_load_bytes, bpf_xdp_load_bytes},
    programs::{TcContext, XdpContext},
};
use cors_filter_common::{Outcome, Slot, ipv6};

/// What the parser needs from an XDP frame or a TC socket buffer.
pub trait Frame: EbpfContext {
    fn data(&self) -> usize;
    fn data_end(&self) -> usize;
    /// Copies `len` bytes from `offset` in the packet (paged parts included)
    /// to `dst`. Returns 0 on success.
    ///
    /// # Safety
    /// `dst` must be valid for `len` bytes of writes.
    unsafe fn load_bytes(&self, offset: u32, dst: *mut u8, len: u32) -> i64;
}

impl Frame for XdpContext {
    #[inline(always)]
    fn data(&self) -> usize {
        XdpContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        XdpContext::data_end(self)
    }
    #[inline(always)]
    unsafe fn load_bytes(&self, offset: u32, dst: *mut u8, len: u32) -> i64 {
        // SAFETY: forwarded from the caller; `self.ctx` is the program's context.
        unsafe { bpf_xdp_load_bytes(self.ctx, offset, dst.cast(), len) }
    }
}

impl Frame for TcContext {
    #[inline(always)]
    fn data(&self) -> usize {
        TcContext::data(self)
    }
    #[inline(always)]
    fn data_end(&self) -> usize {
        TcContext::data_end(self)
    }
    #[inline(always)]
    unsafe fn load_bytes(&self, offset: u32, dst: *mut u8, len: u32) -> i64 {
        // SAFETY: forwarded from the caller; `as_ptr` is the program's context.
        unsafe { bpf_skb_load_bytes(self.as_ptr(), offset, dst.cast(), len) }
    }
}

const ETH_HLEN: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const VLAN_HLEN: usize = 4;
const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
const TCP_MIN_HLEN: usize = 20;
const IPPROTO_TCP: u8 = 6;
/// IPv4 protocol numbers and IPv6 next-header values are one registry.
const IPPROTO_AH: u8 = ipv6::NEXT_AUTH;
// The walk over IPv6 extension headers starts within its bound.
const _: () = assert!(ETH_HLEN + 2 * VLAN_HLEN + IPV6_HLEN <= ipv6::MAX_START);

/// Where the TCP payload of a packet to an inspected port is.
pub struct TcpPayload {
    /// Offset of the IP header from the start of the frame.
    pub l3: usize,
    pub ipv6: bool,
    pub src_port: u16,
    pub dst_port: u16,
    /// Offset of the TCP header from the start of the frame.
    pub l4: usize,
    /// Offset from the start of the frame.
    pub offset: usize,
    /// Length as the IP header says (Ethernet padding excluded).
    pub len: usize,
    /// The segment's sequence number.
    pub seq: u32,
    /// The TCP flags byte (CWR .. FIN).
    pub tcp_flags: u8,
}

/// TCP flags (RFC 9293, 3.1).
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_URG: u8 = 0x20;

#[inline(always)]
fn byte(ctx: &impl Frame, offset: usize) -> Result<u8, Outcome> {
    let at = ctx.data() + offset;
    if at + 1 > ctx.data_end() {
        return Err(Outcome::Truncated);
    }
    // SAFETY: `at` is inside [data, data_end), checked just above.
    Ok(unsafe { *(at as *const u8) })
}

#[inline(always)]
fn be16(ctx: &impl Frame, offset: usize) -> Result<u16, Outcome> {
    let at = ctx.data() + offset;
    if at + 2 > ctx.data_end() {
        return Err(Outcome::Truncated);
    }
    // SAFETY: both bytes are inside [data, data_end), checked just above;
    // the read is unaligned-safe.
    let raw = unsafe { core::ptr::read_unaligned(at as *const [u8; 2]) };
    Ok(u16::from_be_bytes(raw))
}

/// The first four bytes of the IPv6 extension header (or IPv4 AH header) at
/// `offset`: next header, length, and for a fragment header the offset and
/// M flag.
///
/// Every extension header is at least `ipv6::EXT_MIN_LEN` bytes long, so one
/// check covers all of them: the header's end against `data_end`, from which
/// the verifier learns a range for a pointer with a variable offset. (Checking
/// `offset + 1` for a read at `offset` does not work there: the compiler
/// turns it into `data + offset < data_end`, from which the verifier learns
/// nothing.)
#[inline(always)]
fn ext_header_start(ctx: &impl Frame, offset: usize) -> Result<[u8; 4], Outcome> {
    let at = ctx.data() + offset;
    if at + ipv6::EXT_MIN_LEN > ctx.data_end() {
        return Err(Outcome::Truncated);
    }
    // SAFETY: the four bytes are inside [data, data_end), checked just above
    // (with four to spare); the read is unaligned-safe.
    Ok(unsafe { core::ptr::read_unaligned(at as *const [u8; 4]) })
}

/// The offset of the TCP header behind the IPv4 AH header at `offset`.
///
/// With a transport-mode security association, Linux delivers TCP behind AH
/// (RFC 4302), so preflights from a peer that authenticates its traffic
/// are inspected like any other. What follows AH is not encrypted; anything
/// but TCP there is not TCP to read.
#[inline(always)]
fn ipv4_tcp_behind_ah(ctx: &impl Frame, offset: usize) -> Result<usize, Outcome> {
    let [next, payload_len, ..] = ext_header_start(ctx, offset)?;
    if next != IPPROTO_TCP {
        return Err(Outcome::NotTcp);
    }
    Ok(offset + ipv6::auth_header_len(payload_len))
}

/// Finds the TCP payload, or the outcome for a packet that has none to inspect.
/// `walk_offset` is map memory for the IPv6 extension-header walk (see
/// `ipv6::tcp_header`).
#[inline(always)]
pub fn tcp_payload(ctx: &impl Frame, walk_offset: &mut Slot<u32>) -> Result<TcpPayload, Outcome> {
    let mut l3 = ETH_HLEN;
    let mut ether_type = be16(ctx, 12).map_err(|_| Outcome::NotIp)?;
    // Up to two tags: 802.1ad (QinQ) outer, 802.1Q inner.
    let mut tags = 0;
    while tags < 2 && (ether_type == ETH_P_8021Q || ether_type == ETH_P_8021AD) {
        ether_type = be16(ctx, l3 + 2)?;
        l3 += VLAN_HLEN;
        tags += 1;
    }
    let ipv6 = ether_type == ETH_P_IPV6;
    let (l4, ip_end) = match ether_type {
        ETH_P_IPV4 => {
            let ihl = ((byte(ctx, l3)? & 0x0f) as usize) * 4;
            if ihl < IPV4_MIN_HLEN {
                return Err(Outcome::Truncated);
            }
            let total_len = be16(ctx, l3 + 2)? as usize;
            // The total length covers the header: a shorter one is a
            // malformed packet (Linux drops it), with nothing in it to read.
            if total_len < ihl {
                return Err(Outcome::Truncated);
            }
            // More-fragments flag or a fragment offset: a fragment.
            if be16(ctx, l3 + 6)? & 0x3fff != 0 {
                return Err(Outcome::IpFragment);
            }
            let l4 = match byte(ctx, l3 + 9)? {
                IPPROTO_TCP => l3 + ihl,
                IPPROTO_AH => ipv4_tcp_behind_ah(ctx, l3 + ihl)?,
                _ => return Err(Outcome::NotTcp),
            };
            (l4, l3 + total_len)
        }
        ETH_P_IPV6 => {
            let payload_len = be16(ctx, l3 + 4)? as usize;
            let next = byte(ctx, l3 + 6)?;
            let l4 = ipv6::tcp_header(next, l3 + IPV6_HLEN, walk_offset, |at| {
                ext_header_start(ctx, at)
            })?;
            // The extension headers count in the payload length; if they
            // take more than all of it, the check of `offset` against
            // `ip_end` below ends it as truncated. (A check of `l4` here
            // would be decided on the path without extension headers, which
            // makes the verifier track `l4` precisely and verify the rest of
            // the program once per length of the chain.)
            (l4, l3 + IPV6_HLEN + payload_len)
        }
        _ => return Err(Outcome::NotIp),
    };
    let src_port = be16(ctx, l4)?;
    let dst_port = be16(ctx, l4 + 2)?;
    let seq = ((be16(ctx, l4 + 4)? as u32) << 16) | be16(ctx, l4 + 6)? as u32;
    let tcp_flags = byte(ctx, l4 + 13)?;
    let data_offset = ((byte(ctx, l4 + 12)? >> 4) as usize) * 4;
    if data_offset < TCP_MIN_HLEN {
        return Err(Outcome::Truncated);
    }
    let offset = l4 + data_offset;
    // Headers (IPv4 options, IPv6 extension headers, TCP) longer than the IP
    // length: the payload length would be negative.
    if ip_end < offset {
        return Err(Outcome::Truncated);
    }
    Ok(TcpPayload {
        l3,
        ipv6,
        src_port,
        dst_port,
        l4,
        offset,
        len: ip_end - offset,
        seq,
        tcp_flags,
    })
}
