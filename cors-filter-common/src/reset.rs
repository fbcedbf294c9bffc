//! The TCP reset the program sends back for a packet it does not let
//! through, with `--action reset`: the client's TCP fails at once instead of
//! retransmitting into silence until it gives up.
//!
//! The program copies the fixed part of the offending segment's IP header
//! and its TCP header into a [`ResetScratch`]; [`build_reply`] turns them
//! into the reply's IP and TCP headers, which the program writes over the
//! segment at the same offset (after the Ethernet header and VLAN tags, whose
//! MACs it swaps) before cutting the frame to the reply's length and
//! sending it back out of the interface it came in on.
//!
//! The reply is what a TCP stack answers a segment for which it has no
//! connection (RFC 9293, section 3.10.7.1, as Linux does it) except that it
//! always carries ACK: a minimal IPv4 header (20 bytes, TTL 64, DF) or IPv6
//! header (40 bytes, hop limit 64), no IP options or extension headers, and
//! a 20-byte TCP header from the segment's destination back to its source,
//! `RST|ACK`, window 0, with
//! - sequence number: the segment's acknowledgment number if it has ACK set
//!   (what the client expects next, the only value a reset must have to be
//!   accepted on an established connection: RFC 5961), otherwise 0;
//! - acknowledgment number: the segment's sequence number plus its payload
//!   length, plus one for SYN and one for FIN (what a client in SYN-SENT,
//!   e.g. one that sent its request in a TCP Fast Open SYN, checks).
//!
//! Everything here works on fixed-size arrays with constant indexes, so the
//! verifier sees every access in bounds without a check of its own.

use crate::slot::Slot;

/// Bytes copied from the segment's IP header: all of IPv6's fixed header;
/// for IPv4, which a TCP segment follows with at least 20 bytes, its fixed
/// header and the 20 bytes after it (options or TCP), unused.
pub const IP_COPY_LEN: usize = 40;
/// Bytes copied from the segment's TCP header: the fixed part. Options are
/// not read.
pub const TCP_COPY_LEN: usize = 20;
pub const IPV4_HEADER_LEN: usize = 20;
pub const IPV6_HEADER_LEN: usize = 40;
pub const TCP_HEADER_LEN: usize = 20;
/// The reply to an IPv4 segment: IPv4 header and TCP header.
pub const IPV4_REPLY_LEN: usize = IPV4_HEADER_LEN + TCP_HEADER_LEN;
/// The reply to an IPv6 segment.
pub const IPV6_REPLY_LEN: usize = IPV6_HEADER_LEN + TCP_HEADER_LEN;
pub const REPLY_MAX_LEN: usize = IPV6_REPLY_LEN;
/// The hop limit of the reply, as Linux's default `ip_default_ttl`.
pub const REPLY_TTL: u8 = 64;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;
const IPPROTO_TCP: u8 = 6;
/// IPv4's Don't Fragment flag, in the flags and fragment offset field.
const IPV4_DF: u16 = 0x4000;

/// Per-CPU space for building a reset, part of the program's scratch map.
///
/// The offsets go through [`Slot`]s: they are kept across the payload
/// inspection, and as precise values in registers they would make the
/// verifier explore the inspection once per combination of VLAN tags, IP
/// version and header lengths.
#[repr(C)]
pub struct ResetScratch {
    /// Offset of the IP header in the frame (after Ethernet and VLAN tags).
    pub l3: Slot<u32>,
    /// Offset of the TCP header in the frame.
    pub l4: Slot<u32>,
    /// TCP payload length, as the IP header gives it.
    pub payload_len: Slot<u32>,
    /// The first [`IP_COPY_LEN`] bytes at `l3`.
    pub ip: [u8; IP_COPY_LEN],
    /// The first [`TCP_COPY_LEN`] bytes at `l4`.
    pub tcp: [u8; TCP_COPY_LEN],
    /// The frame's destination and source MACs, swapped in place.
    pub macs: [u8; 12],
    /// The reply's IP and TCP headers, [`IPV4_REPLY_LEN`] or
    /// [`IPV6_REPLY_LEN`] bytes of it.
    pub reply: [u8; REPLY_MAX_LEN],
}

impl Default for ResetScratch {
    fn default() -> Self {
        Self {
            l3: Slot::new(0),
            l4: Slot::new(0),
            payload_len: Slot::new(0),
            ip: [0; IP_COPY_LEN],
            tcp: [0; TCP_COPY_LEN],
            macs: [0; 12],
            reply: [0; REPLY_MAX_LEN],
        }
    }
}

/// Swaps the destination and source MACs of an Ethernet header's first 12
/// bytes: the reply goes back to where the segment came from.
#[inline(always)]
pub fn swap_macs(macs: &mut [u8; 12]) {
    for i in 0..6 {
        macs.swap(i, i + 6);
    }
}

/// Writes into `reply` the reset answering the segment whose IP header
/// starts with `ip` and whose TCP header starts with `tcp`, carrying
/// `payload_len` bytes of payload; returns the reply's length
/// ([`IPV4_REPLY_LEN`] or [`IPV6_REPLY_LEN`]), or `None` if `ip` is neither
/// IPv4 nor IPv6.
#[inline(always)]
pub fn build_reply(
    ip: &[u8; IP_COPY_LEN],
    tcp: &[u8; TCP_COPY_LEN],
    payload_len: u32,
    reply: &mut [u8; REPLY_MAX_LEN],
) -> Option<usize> {
    match ip[0] >> 4 {
        4 => {
            write_ipv4_header(ip, reply);
            write_tcp_header(tcp, payload_len, &mut reply[IPV4_HEADER_LEN..]);
            let sum = ipv4_pseudo_header_sum(reply);
            set_tcp_checksum(sum, &mut reply[IPV4_HEADER_LEN..]);
            Some(IPV4_REPLY_LEN)
        }
        6 => {
            write_ipv6_header(ip, reply);
            write_tcp_header(tcp, payload_len, &mut reply[IPV6_HEADER_LEN..]);
            let sum = ipv6_pseudo_header_sum(reply);
            set_tcp_checksum(sum, &mut reply[IPV6_HEADER_LEN..]);
            Some(IPV6_REPLY_LEN)
        }
        _ => None,
    }
}

/// A minimal IPv4 header from the segment's destination to its source.
#[inline(always)]
fn write_ipv4_header(ip: &[u8; IP_COPY_LEN], reply: &mut [u8; REPLY_MAX_LEN]) {
    reply[0] = 0x45; // version 4, 5 words
    reply[1] = 0; // DSCP, ECN
    reply[2..4].copy_from_slice(&(IPV4_REPLY_LEN as u16).to_be_bytes());
    reply[4..6].copy_from_slice(&[0, 0]); // identification: unused with DF
    reply[6..8].copy_from_slice(&IPV4_DF.to_be_bytes());
    reply[8] = REPLY_TTL;
    reply[9] = IPPROTO_TCP;
    reply[10..12].copy_from_slice(&[0, 0]); // checksum, below
    // Source: the segment's destination; destination: its source.
    reply[12..16].copy_from_slice(&ip[16..20]);
    reply[16..20].copy_from_slice(&ip[12..16]);
    let mut sum = 0;
    for i in 0..IPV4_HEADER_LEN / 2 {
        sum += u16::from_be_bytes([reply[2 * i], reply[2 * i + 1]]) as u32;
    }
    reply[10..12].copy_from_slice(&(!fold(sum)).to_be_bytes());
}

/// A minimal IPv6 header from the segment's destination to its source.
#[inline(always)]
fn write_ipv6_header(ip: &[u8; IP_COPY_LEN], reply: &mut [u8; REPLY_MAX_LEN]) {
    // Version 6, traffic class 0, flow label 0.
    reply[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
    reply[4..6].copy_from_slice(&(TCP_HEADER_LEN as u16).to_be_bytes());
    reply[6] = IPPROTO_TCP;
    reply[7] = REPLY_TTL;
    // Source: the segment's destination; destination: its source.
    reply[8..24].copy_from_slice(&ip[24..40]);
    reply[24..40].copy_from_slice(&ip[8..24]);
}

/// The reply's TCP header, checksum 0 (see the module doc).
#[inline(always)]
fn write_tcp_header(tcp: &[u8; TCP_COPY_LEN], payload_len: u32, out: &mut [u8]) {
    let flags = tcp[13];
    let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    let ack = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
    let reply_seq = if flags & TCP_ACK != 0 { ack } else { 0 };
    let reply_ack = seq
        .wrapping_add(payload_len)
        .wrapping_add((flags & TCP_SYN != 0) as u32)
        .wrapping_add((flags & TCP_FIN != 0) as u32);
    out[0] = tcp[2]; // source port: the segment's destination port
    out[1] = tcp[3];
    out[2] = tcp[0]; // destination port: the segment's source port
    out[3] = tcp[1];
    out[4..8].copy_from_slice(&reply_seq.to_be_bytes());
    out[8..12].copy_from_slice(&reply_ack.to_be_bytes());
    out[12] = ((TCP_HEADER_LEN / 4) as u8) << 4; // data offset, no options
    out[13] = TCP_RST | TCP_ACK;
    out[14..20].copy_from_slice(&[0; 6]); // window, checksum, urgent pointer
}

/// The sum of the IPv4 pseudo-header's words for the reply in `reply`.
#[inline(always)]
fn ipv4_pseudo_header_sum(reply: &[u8; REPLY_MAX_LEN]) -> u32 {
    // Source and destination addresses, zero and protocol, TCP length.
    let mut sum = IPPROTO_TCP as u32 + TCP_HEADER_LEN as u32;
    for i in 0..4 {
        sum += u16::from_be_bytes([reply[12 + 2 * i], reply[13 + 2 * i]]) as u32;
    }
    sum
}

/// The sum of the IPv6 pseudo-header's words for the reply in `reply`.
#[inline(always)]
fn ipv6_pseudo_header_sum(reply: &[u8; REPLY_MAX_LEN]) -> u32 {
    // Source and destination addresses, TCP length (32 bits), zeros and
    // next header.
    let mut sum = IPPROTO_TCP as u32 + TCP_HEADER_LEN as u32;
    for i in 0..16 {
        sum += u16::from_be_bytes([reply[8 + 2 * i], reply[9 + 2 * i]]) as u32;
    }
    sum
}

/// Fills in the checksum of the TCP header `tcp` (checksum field 0, no
/// payload) given the sum of its pseudo-header's words.
#[inline(always)]
fn set_tcp_checksum(pseudo_header_sum: u32, tcp: &mut [u8]) {
    let mut sum = pseudo_header_sum;
    for i in 0..TCP_HEADER_LEN / 2 {
        sum += u16::from_be_bytes([tcp[2 * i], tcp[2 * i + 1]]) as u32;
    }
    tcp[16..18].copy_from_slice(&(!fold(sum)).to_be_bytes());
}

/// Folds a sum of 16-bit words into 16 bits, ones' complement (RFC 1071).
/// Two rounds are enough for any sum of fewer than 65536 words.
#[inline(always)]
fn fold(sum: u32) -> u16 {
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

#[cfg(test)]
mod tests {
    //! Segments are built, and replies checked, with etherparse: its
    //! serialisation, parsing and checksums share nothing with the code
    //! under test.
    use super::*;
    use etherparse::{
        IpAuthHeader, IpHeaders, IpNumber, Ipv4Extensions, Ipv4Header, Ipv6Extensions, Ipv6Header,
        Ipv6RawExtHeader, Ipv6RoutingExtensions, NetSlice, PacketBuilder, SlicedPacket, TcpHeader,
        TcpOptionElement, TransportSlice,
    };
    use std::vec::Vec;

    const CLIENT_V4: [u8; 4] = [192, 0, 2, 1];
    const SERVER_V4: [u8; 4] = [192, 0, 2, 2];
    const CLIENT_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const SERVER_V6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    const CLIENT_PORT: u16 = 40000;
    const SERVER_PORT: u16 = 8080;
    const PAYLOAD: &[u8] = b"OPTIONS / HTTP/1.1\r\nOrigin: https://evil.example\r\nAccess-Control-Request-Method: PUT\r\n\r\n";

    /// A client's segment to the server: `flags` is (SYN, ACK, FIN).
    fn tcp(seq: u32, ack: Option<u32>, syn: bool, fin: bool) -> TcpHeader {
        let mut h = TcpHeader::new(CLIENT_PORT, SERVER_PORT, seq, 64240);
        h.psh = true;
        h.syn = syn;
        h.fin = fin;
        if let Some(ack) = ack {
            h.ack = true;
            h.acknowledgment_number = ack;
        }
        h
    }

    fn ipv4() -> IpHeaders {
        let h = Ipv4Header::new(0, 64, IpNumber::TCP, CLIENT_V4, SERVER_V4).unwrap();
        IpHeaders::Ipv4(h, Ipv4Extensions::default())
    }

    fn ipv6(exts: Ipv6Extensions) -> IpHeaders {
        let h = Ipv6Header {
            traffic_class: 0,
            flow_label: Default::default(),
            payload_length: 0,
            next_header: IpNumber::TCP,
            hop_limit: 64,
            source: CLIENT_V6,
            destination: SERVER_V6,
        };
        IpHeaders::Ipv6(h, exts)
    }

    /// The IP packet of `ip` carrying `tcp` and `payload`.
    fn segment(ip: IpHeaders, tcp: TcpHeader, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ip(ip)
            .tcp_header(tcp)
            .write(&mut out, payload)
            .unwrap();
        out
    }

    /// What the program does: copies the fixed headers at the offsets the
    /// parser found (here, etherparse's), builds the reply.
    fn reply_to(packet: &[u8]) -> Vec<u8> {
        let parsed = SlicedPacket::from_ip(packet).unwrap();
        let Some(TransportSlice::Tcp(tcp)) = parsed.transport else {
            panic!("not TCP: {parsed:?}");
        };
        let l4 = tcp.slice().as_ptr() as usize - packet.as_ptr() as usize;
        let mut ip = [0u8; IP_COPY_LEN];
        ip.copy_from_slice(&packet[..IP_COPY_LEN]);
        let mut header = [0u8; TCP_COPY_LEN];
        header.copy_from_slice(&packet[l4..l4 + TCP_COPY_LEN]);
        // Stale bytes from an earlier reply must not matter.
        let mut reply = [0xa5u8; REPLY_MAX_LEN];
        let len = build_reply(&ip, &header, tcp.payload().len() as u32, &mut reply).unwrap();
        reply[..len].to_vec()
    }

    /// Checks `reply` as an answer to `packet` (IPv4 or IPv6, any options or
    /// extension headers): addresses and ports swapped, `RST|ACK` with the
    /// sequence numbers of the module doc, window 0, every length and
    /// checksum right. Returns (seq, ack).
    fn check_reply(packet: &[u8], reply: &[u8]) -> (u32, u32) {
        let request = SlicedPacket::from_ip(packet).unwrap();
        let Some(TransportSlice::Tcp(request_tcp)) = request.transport else {
            panic!("not TCP");
        };
        let parsed = SlicedPacket::from_ip(reply).unwrap();
        let Some(TransportSlice::Tcp(tcp)) = parsed.transport.clone() else {
            panic!("the reply is not TCP: {parsed:?}");
        };
        match (request.net.unwrap(), parsed.net.unwrap()) {
            (NetSlice::Ipv4(request_ip), NetSlice::Ipv4(ip)) => {
                let header = ip.header().to_header();
                assert_eq!(reply.len(), IPV4_REPLY_LEN);
                assert_eq!(header.header_len(), IPV4_HEADER_LEN);
                assert_eq!(usize::from(header.total_len), IPV4_REPLY_LEN);
                assert_eq!(header.time_to_live, REPLY_TTL);
                assert!(header.dont_fragment && !header.more_fragments);
                assert_eq!(header.protocol, IpNumber::TCP);
                assert!(ip.extensions().auth.is_none());
                assert_eq!(header.source, request_ip.header().destination());
                assert_eq!(header.destination, request_ip.header().source());
                assert_eq!(header.header_checksum, header.calc_header_checksum());
                assert_eq!(
                    tcp.checksum(),
                    tcp.calc_checksum_ipv4(header.source, header.destination)
                        .unwrap()
                );
            }
            (NetSlice::Ipv6(request_ip), NetSlice::Ipv6(ip)) => {
                let header = ip.header().to_header();
                assert_eq!(reply.len(), IPV6_REPLY_LEN);
                assert_eq!(usize::from(header.payload_length), TCP_HEADER_LEN);
                assert_eq!(header.next_header, IpNumber::TCP, "no extension headers");
                assert_eq!(header.hop_limit, REPLY_TTL);
                assert_eq!(header.source, request_ip.header().destination());
                assert_eq!(header.destination, request_ip.header().source());
                assert_eq!(
                    tcp.checksum(),
                    tcp.calc_checksum_ipv6(header.source, header.destination)
                        .unwrap()
                );
            }
            (a, b) => panic!("the reply's IP version differs: {a:?} -> {b:?}"),
        }
        assert_eq!(tcp.source_port(), request_tcp.destination_port());
        assert_eq!(tcp.destination_port(), request_tcp.source_port());
        assert_eq!(usize::from(tcp.data_offset()) * 4, TCP_HEADER_LEN);
        assert!(tcp.payload().is_empty());
        let flags = [
            tcp.fin(),
            tcp.syn(),
            tcp.rst(),
            tcp.psh(),
            tcp.ack(),
            tcp.urg(),
            tcp.ece(),
            tcp.cwr(),
            tcp.ns(),
        ];
        assert_eq!(
            flags,
            [false, false, true, false, true, false, false, false, false],
            "RST|ACK only"
        );
        assert_eq!(tcp.window_size(), 0);
        assert_eq!(tcp.urgent_pointer(), 0);
        let expected_seq = if request_tcp.ack() {
            request_tcp.acknowledgment_number()
        } else {
            0
        };
        let expected_ack = request_tcp
            .sequence_number()
            .wrapping_add(request_tcp.payload().len() as u32)
            .wrapping_add(u32::from(request_tcp.syn()) + u32::from(request_tcp.fin()));
        assert_eq!(tcp.sequence_number(), expected_seq);
        assert_eq!(tcp.acknowledgment_number(), expected_ack);
        (tcp.sequence_number(), tcp.acknowledgment_number())
    }

    fn tcp_options(mut h: TcpHeader) -> TcpHeader {
        h.set_options(&[
            TcpOptionElement::MaximumSegmentSize(1460),
            TcpOptionElement::Noop,
            TcpOptionElement::WindowScale(7),
            TcpOptionElement::Timestamp(1, 2),
        ])
        .unwrap();
        h
    }

    #[test]
    fn ipv4_data_segment() {
        let packet = segment(
            ipv4(),
            tcp(1_000_000, Some(2_000_000), false, false),
            PAYLOAD,
        );
        let reply = reply_to(&packet);
        let (seq, ack) = check_reply(&packet, &reply);
        assert_eq!((seq, ack), (2_000_000, 1_000_000 + PAYLOAD.len() as u32));
    }

    #[test]
    fn ipv4_options_and_tcp_options_are_left_out() {
        let IpHeaders::Ipv4(mut header, _) = ipv4() else {
            unreachable!()
        };
        // Router alert, then a timestamp option with room for two entries.
        header.options = [0x94, 4, 0, 0, 0x44, 12, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0][..]
            .try_into()
            .unwrap();
        let ip = IpHeaders::Ipv4(header, Ipv4Extensions::default());
        let packet = segment(ip, tcp_options(tcp(7, Some(9), false, false)), PAYLOAD);
        assert_eq!(packet[0] & 0xf, 9, "a 36-byte IPv4 header");
        let reply = reply_to(&packet);
        check_reply(&packet, &reply);
    }

    #[test]
    fn ipv4_behind_an_authentication_header() {
        let IpHeaders::Ipv4(header, _) = ipv4() else {
            unreachable!()
        };
        let exts = Ipv4Extensions {
            auth: Some(IpAuthHeader::new(IpNumber::TCP, 0x1000, 1, &[0xa5; 12]).unwrap()),
        };
        let packet = segment(
            IpHeaders::Ipv4(header, exts),
            tcp(5, Some(6), false, false),
            PAYLOAD,
        );
        let reply = reply_to(&packet);
        check_reply(&packet, &reply);
    }

    #[test]
    fn ipv6_data_segment() {
        let packet = segment(
            ipv6(Ipv6Extensions::default()),
            tcp(1, Some(2), false, false),
            PAYLOAD,
        );
        let reply = reply_to(&packet);
        check_reply(&packet, &reply);
    }

    #[test]
    fn ipv6_extension_headers_are_left_out() {
        let options = |next| Ipv6RawExtHeader::new_raw(next, &[1, 4, 0, 0, 0, 0]).unwrap();
        let mut routing = std::vec![4u8, 0, 0, 0, 0, 0];
        routing.extend(SERVER_V6);
        let exts = Ipv6Extensions {
            hop_by_hop_options: Some(options(IpNumber::TCP)),
            destination_options: Some(options(IpNumber::TCP)),
            routing: Some(Ipv6RoutingExtensions {
                routing: Ipv6RawExtHeader::new_raw(IpNumber::TCP, &routing).unwrap(),
                final_destination_options: None,
            }),
            fragment: None,
            auth: Some(IpAuthHeader::new(IpNumber::TCP, 0x1000, 1, &[0xa5; 12]).unwrap()),
        };
        let packet = segment(
            ipv6(exts),
            tcp_options(tcp(3, Some(4), false, false)),
            PAYLOAD,
        );
        let parsed = SlicedPacket::from_ip(&packet).unwrap();
        let Some(NetSlice::Ipv6(ip)) = parsed.net else {
            unreachable!()
        };
        assert!(
            ip.extensions().clone().into_iter().count() >= 4,
            "{:?}",
            ip.extensions()
        );
        let reply = reply_to(&packet);
        check_reply(&packet, &reply);
    }

    #[test]
    fn syn_with_data_and_no_ack() {
        // A TCP Fast Open SYN carrying the request: no ACK, so seq 0, and
        // the SYN counts one in the acknowledgment.
        for ip in [ipv4(), ipv6(Ipv6Extensions::default())] {
            let packet = segment(ip, tcp(500, None, true, false), PAYLOAD);
            let reply = reply_to(&packet);
            let (seq, ack) = check_reply(&packet, &reply);
            assert_eq!((seq, ack), (0, 500 + 1 + PAYLOAD.len() as u32));
        }
    }

    #[test]
    fn fin_counts_one() {
        let packet = segment(ipv4(), tcp(500, Some(9), false, true), PAYLOAD);
        let reply = reply_to(&packet);
        let (_, ack) = check_reply(&packet, &reply);
        assert_eq!(ack, 500 + PAYLOAD.len() as u32 + 1);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let packet = segment(
            ipv4(),
            tcp(u32::MAX - 3, Some(u32::MAX), false, false),
            PAYLOAD,
        );
        let reply = reply_to(&packet);
        let (seq, ack) = check_reply(&packet, &reply);
        assert_eq!((seq, ack), (u32::MAX, PAYLOAD.len() as u32 - 4));
    }

    #[test]
    fn checksums_over_many_addresses_and_ports() {
        // Sums that carry more than once when folded: high bytes everywhere.
        for (i, fill) in [0x00u8, 0x7f, 0x80, 0xfe, 0xff].into_iter().enumerate() {
            let v4 = Ipv4Header::new(0, 64, IpNumber::TCP, [fill; 4], [0xff - fill; 4]).unwrap();
            let mut h = tcp(
                u32::from_be_bytes([fill; 4]),
                Some(!0 - i as u32),
                false,
                false,
            );
            h.source_port = u16::from_be_bytes([fill, 0xff]);
            h.destination_port = 0xffff;
            let packet = segment(
                IpHeaders::Ipv4(v4, Default::default()),
                h.clone(),
                &[fill; 3],
            );
            check_reply(&packet, &reply_to(&packet));
            let IpHeaders::Ipv6(mut v6, exts) = ipv6(Ipv6Extensions::default()) else {
                unreachable!()
            };
            v6.source = [fill; 16];
            v6.destination = [0xff; 16];
            let packet = segment(IpHeaders::Ipv6(v6, exts), h, &[fill; 1]);
            check_reply(&packet, &reply_to(&packet));
        }
    }

    #[test]
    fn other_versions_get_no_reply() {
        let mut reply = [0u8; REPLY_MAX_LEN];
        for first in [0x00, 0x50, 0x70, 0xf0] {
            let mut ip = [0u8; IP_COPY_LEN];
            ip[0] = first;
            assert_eq!(
                build_reply(&ip, &[0; TCP_COPY_LEN], 10, &mut reply),
                None,
                "{first:#x}"
            );
        }
    }

    #[test]
    fn macs_swap() {
        let mut macs = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        swap_macs(&mut macs);
        assert_eq!(macs, [7, 8, 9, 10, 11, 12, 1, 2, 3, 4, 5, 6]);
    }
}
