//! Ethernet frames carrying a TCP segment, built byte by byte for tests that
//! run them through the BPF program with BPF_PROG_TEST_RUN (or write them to
//! a capture for `cors-filter replay`).
//!
//! Each knob is a way real frames differ from the plain case: VLAN tags, IP
//! options, IPv6 extension headers, TCP options, fragments, the padding a NIC
//! adds after a short packet. A filter's parser must find the HTTP payload
//! through all of them, or refuse to guess, so the tests need them all.
//!
//! Nothing here is ever sent: the MACs are locally administered and the
//! addresses are from the documentation ranges (RFC 5737, RFC 3849).
//!
//! Misuse (an IPv4 knob on an IPv6 packet, a length the format cannot carry)
//! panics: it is a bug in the test, and a silently different frame would make
//! the test check something else than it says.

use std::net::{Ipv4Addr, Ipv6Addr};

pub const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const SRC_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
pub const DST_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
pub const SRC_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
pub const DST_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2);
/// The first source port given to packets built without one: each packet
/// built gets the next (see [`Packet::src_port`]).
pub const SRC_PORT: u16 = 40000;
/// How many source ports packets cycle through from [`SRC_PORT`].
const SRC_PORTS: u16 = 20000;

/// The next source port for a packet built without one. The filter follows
/// connections: a frame is judged with the state the frames before it left
/// on its connection, so frames meant to be judged alone each get their own
/// (a test that wants one connection sets the port, and the sequence
/// numbers).
fn next_src_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    SRC_PORT + NEXT.fetch_add(1, Ordering::Relaxed) % SRC_PORTS
}
pub const DST_PORT: u16 = 8080;

/// EtherTypes, and the tag protocol identifiers of 802.1Q and 802.1ad (QinQ).
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;

/// IP protocol numbers, as in IPv4's protocol and IPv6's next header fields.
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// TCP flags; a request segment carries PSH|ACK.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

pub const TCP_SEQ: u32 = 1_000_000;
pub const TCP_ACK_NUM: u32 = 2_000_000;
const TCP_WINDOW: u16 = 64240;
const IP_ID: u16 = 0x1234;
const IPV6_FRAGMENT_ID: u32 = 0x1234_5678;
const AH_SPI: u32 = 0x1000;
/// IPv4's Don't Fragment flag, set on unfragmented packets as TCP stacks do.
const IPV4_DF: u16 = 0x4000;
const IPV4_MF: u16 = 0x2000;

/// An IPv6 extension header. They are written in the order given (RFC 8200
/// wants hop-by-hop first, but a parser meets whatever the sender wrote), each
/// announcing the next, the last announcing the packet's protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipv6Ext {
    /// Hop-by-hop options (next header 0). `len` is the whole header in
    /// bytes, what a parser must skip: a multiple of 8, from 8 to 2048.
    HopByHop { len: usize },
    /// Segment routing header (43, type 4) listing `segments` addresses
    /// (1..=127), with segments left 0: its length is 8 + 16 * segments.
    Routing { segments: u8 },
    /// Destination options (60); `len` as for `HopByHop`.
    DestOpts { len: usize },
    /// Fragment header (44), 8 bytes: `offset` in 8-byte units (13 bits) and
    /// the M (more fragments) flag. As with `Packet::ipv4_fragment`, the TCP
    /// header still follows, even where a real later fragment has none.
    Fragment { offset: u16, more: bool },
    /// Authentication header (51). `len` is the whole header in bytes: a
    /// multiple of 8 (RFC 4302, for IPv6), from 16 to 1024. Unlike the others,
    /// its length field counts 4-byte units minus 2.
    Auth { len: usize },
}

impl Ipv6Ext {
    /// What the header before this one announces in its next header field.
    pub fn protocol(self) -> u8 {
        match self {
            Ipv6Ext::HopByHop { .. } => 0,
            Ipv6Ext::Routing { .. } => 43,
            Ipv6Ext::DestOpts { .. } => 60,
            Ipv6Ext::Fragment { .. } => 44,
            Ipv6Ext::Auth { .. } => 51,
        }
    }

    /// The header's bytes, announcing `next` as what follows it.
    fn bytes(self, next: u8) -> Vec<u8> {
        match self {
            Ipv6Ext::HopByHop { len } | Ipv6Ext::DestOpts { len } => {
                assert!(
                    len % 8 == 0 && (8..=2048).contains(&len),
                    "{self:?}: an options header is 8 to 2048 bytes, in steps of 8"
                );
                let mut h = vec![next, (len / 8 - 1) as u8];
                put_options(&mut h, len - 2);
                h
            }
            Ipv6Ext::Routing { segments } => {
                assert!(
                    (1..=127).contains(&segments),
                    "{self:?}: a routing header lists 1 to 127 segments"
                );
                // Type 4, segments left 0, last entry, flags, tag.
                let mut h = vec![next, 2 * segments, 4, 0, segments - 1, 0, 0, 0];
                // The list is in reverse: with segments left 0 the packet has
                // reached segment 0, which is the destination address.
                h.extend(DST_V6.octets());
                for i in 1..segments {
                    h.extend(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0x5e6, i.into()).octets());
                }
                h
            }
            Ipv6Ext::Fragment { offset, more } => {
                assert!(offset < 1 << 13, "{self:?}: the offset has 13 bits");
                let mut h = vec![next, 0];
                h.extend(((offset << 3) | u16::from(more)).to_be_bytes());
                h.extend(IPV6_FRAGMENT_ID.to_be_bytes());
                h
            }
            Ipv6Ext::Auth { len } => {
                assert!(
                    len % 8 == 0 && (16..=1024).contains(&len),
                    "{self:?}: an IPv6 authentication header is 16 to 1024 bytes, in steps of 8"
                );
                let mut h = vec![next, (len / 4 - 2) as u8, 0, 0];
                h.extend(AH_SPI.to_be_bytes());
                h.extend(1u32.to_be_bytes()); // sequence number
                h.resize(len, 0xa5); // integrity check value: nobody checks it here
                h
            }
        }
    }
}

/// Fills `len` bytes of a hop-by-hop or destination options body. Linux drops
/// a header whose padding runs past 7 bytes (RFC 4942, 2.1.9.5), so a longer
/// body carries experimental options (type 0x1e, RFC 4727; the top bits 00
/// say "skip if unknown") and Pad1/PadN only fill the last 0 to 7 bytes.
fn put_options(h: &mut Vec<u8>, mut len: usize) {
    while len > 7 {
        let data = (len - 2).min(255);
        h.extend([0x1e, data as u8]);
        h.resize(h.len() + data, 0);
        len -= 2 + data;
    }
    match len {
        0 => {}
        1 => h.push(0), // Pad1
        n => {
            h.extend([1, (n - 2) as u8]); // PadN
            h.resize(h.len() + n - 2, 0);
        }
    }
}

#[derive(Clone, Debug)]
enum Network {
    Ipv4 {
        options: Vec<u8>,
        fragment: Option<(u16, bool)>,
    },
    Ipv6 {
        exts: Vec<Ipv6Ext>,
    },
    Other {
        ethertype: u16,
    },
}

/// A frame to build: see the module doc. Defaults: no VLAN tag, no IP or TCP
/// options, TCP from port 40000 to 8080 with PSH|ACK, no trailer.
#[derive(Clone, Debug)]
pub struct Packet {
    vlans: Vec<(u16, u16)>,
    network: Network,
    protocol: u8,
    src_port: u16,
    dst_port: u16,
    tcp_flags: u8,
    seq: u32,
    tcp_options: Vec<u8>,
    payload: Vec<u8>,
    trailer: Vec<u8>,
}

impl Packet {
    fn new(network: Network, payload: &[u8]) -> Packet {
        Packet {
            vlans: Vec::new(),
            network,
            protocol: IPPROTO_TCP,
            src_port: next_src_port(),
            dst_port: DST_PORT,
            tcp_flags: TCP_PSH | TCP_ACK,
            seq: TCP_SEQ,
            tcp_options: Vec::new(),
            payload: payload.to_vec(),
            trailer: Vec::new(),
        }
    }

    /// A TCP segment carrying `payload` over IPv4, 192.0.2.1 -> 192.0.2.2.
    pub fn ipv4(payload: &[u8]) -> Packet {
        Packet::new(
            Network::Ipv4 {
                options: Vec::new(),
                fragment: None,
            },
            payload,
        )
    }

    /// A TCP segment carrying `payload` over IPv6, 2001:db8::1 -> 2001:db8::2.
    pub fn ipv6(payload: &[u8]) -> Packet {
        Packet::new(Network::Ipv6 { exts: Vec::new() }, payload)
    }

    /// A frame of another EtherType (e.g. `ETH_P_ARP`) carrying `body` as is;
    /// the IP and TCP knobs do not apply to it.
    pub fn non_ip(ethertype: u16, body: &[u8]) -> Packet {
        Packet::new(Network::Other { ethertype }, body)
    }

    /// Adds a VLAN tag (`ETH_P_8021Q`, or `ETH_P_8021AD` for the outer tag of
    /// QinQ) with VLAN id `vid` (12 bits); the first call is the outermost.
    pub fn vlan(mut self, tpid: u16, vid: u16) -> Packet {
        assert!(vid < 1 << 12, "VLAN id {vid} has more than 12 bits");
        self.vlans.push((tpid, vid));
        self
    }

    /// IPv4 options, padded with End of Options List to a multiple of 4 bytes
    /// (at most 40 once padded); the header length grows to match.
    pub fn ipv4_options(mut self, bytes: &[u8]) -> Packet {
        let Network::Ipv4 { options, .. } = &mut self.network else {
            panic!("ipv4_options on a packet that is not IPv4");
        };
        *options = padded(bytes, 40, "IPv4 options");
        self
    }

    /// Makes the packet an IPv4 fragment: `offset` in 8-byte units (13 bits)
    /// and the More Fragments flag; Don't Fragment is cleared. The TCP header
    /// and payload are still written after the IP header, as in a first
    /// fragment: a filter must not read them from a later one.
    pub fn ipv4_fragment(mut self, offset: u16, more_fragments: bool) -> Packet {
        assert!(
            offset < 1 << 13,
            "IPv4 fragment offset {offset} has more than 13 bits"
        );
        let Network::Ipv4 { fragment, .. } = &mut self.network else {
            panic!("ipv4_fragment on a packet that is not IPv4");
        };
        *fragment = Some((offset, more_fragments));
        self
    }

    /// Appends an IPv6 extension header after those already added.
    pub fn ext(mut self, ext: Ipv6Ext) -> Packet {
        let Network::Ipv6 { exts } = &mut self.network else {
            panic!("ext on a packet that is not IPv6");
        };
        exts.push(ext);
        self
    }

    /// The IP protocol (IPv6: the last next header) announced for the segment,
    /// e.g. `IPPROTO_UDP`. The bytes after the IP headers stay those of the
    /// TCP segment, so only this field says the packet is not TCP.
    pub fn protocol(mut self, protocol: u8) -> Packet {
        self.protocol = protocol;
        self
    }

    pub fn src_port(mut self, port: u16) -> Packet {
        self.src_port = port;
        self
    }

    pub fn dst_port(mut self, port: u16) -> Packet {
        self.dst_port = port;
        self
    }

    /// The sequence number; [`TCP_SEQ`] unless set.
    pub fn seq(mut self, seq: u32) -> Packet {
        self.seq = seq;
        self
    }

    /// The TCP flags, e.g. `TCP_SYN`; PSH|ACK unless set.
    pub fn tcp_flags(mut self, flags: u8) -> Packet {
        self.tcp_flags = flags;
        self
    }

    /// TCP options, padded with End of Option List to a multiple of 4 bytes
    /// (at most 40 once padded); the data offset grows to match.
    pub fn tcp_options(mut self, bytes: &[u8]) -> Packet {
        self.tcp_options = padded(bytes, 40, "TCP options");
        self
    }

    /// Bytes after the IP packet, inside the frame: what a NIC adds to reach
    /// the 60-byte minimum, or anything a parser that trusts the frame length
    /// instead of the IP lengths would wrongly read as payload.
    pub fn trailer(mut self, bytes: &[u8]) -> Packet {
        self.trailer = bytes.to_vec();
        self
    }

    /// The frame's bytes, from the destination MAC (no preamble, no FCS).
    pub fn build(&self) -> Vec<u8> {
        let mut frame = Vec::new();
        frame.extend(DST_MAC);
        frame.extend(SRC_MAC);
        for &(tpid, vid) in &self.vlans {
            frame.extend(tpid.to_be_bytes());
            frame.extend(vid.to_be_bytes()); // priority 0, DEI 0
        }
        match &self.network {
            Network::Ipv4 { options, fragment } => {
                frame.extend(ETH_P_IP.to_be_bytes());
                frame.extend(self.ipv4_packet(options, *fragment));
            }
            Network::Ipv6 { exts } => {
                frame.extend(ETH_P_IPV6.to_be_bytes());
                frame.extend(self.ipv6_packet(exts));
            }
            Network::Other { ethertype } => {
                frame.extend(ethertype.to_be_bytes());
                frame.extend(&self.payload);
            }
        }
        frame.extend(&self.trailer);
        frame
    }

    fn ipv4_packet(&self, options: &[u8], fragment: Option<(u16, bool)>) -> Vec<u8> {
        let mut segment = self.tcp_segment();
        let header_len = 20 + options.len();
        let total_len = u16::try_from(header_len + segment.len())
            .expect("the IPv4 packet is longer than 65535 bytes");
        let flags_offset = match fragment {
            None => IPV4_DF,
            Some((offset, more)) => offset | if more { IPV4_MF } else { 0 },
        };
        let mut h = vec![0x40 | (header_len / 4) as u8, 0];
        h.extend(total_len.to_be_bytes());
        h.extend(IP_ID.to_be_bytes());
        h.extend(flags_offset.to_be_bytes());
        h.extend([64, self.protocol, 0, 0]); // TTL, protocol, checksum
        h.extend(SRC_V4.octets());
        h.extend(DST_V4.octets());
        h.extend(options);
        let sum = checksum(&h);
        h[10..12].copy_from_slice(&sum.to_be_bytes());

        let mut pseudo = Vec::new();
        pseudo.extend(SRC_V4.octets());
        pseudo.extend(DST_V4.octets());
        pseudo.extend([0, IPPROTO_TCP]);
        pseudo.extend((segment.len() as u16).to_be_bytes());
        set_tcp_checksum(&mut segment, pseudo);
        h.extend(segment);
        h
    }

    fn ipv6_packet(&self, exts: &[Ipv6Ext]) -> Vec<u8> {
        let mut segment = self.tcp_segment();
        let mut next: Vec<u8> = exts.iter().map(|e| e.protocol()).collect();
        next.push(self.protocol);
        let ext_bytes: Vec<u8> = exts
            .iter()
            .zip(&next[1..])
            .flat_map(|(e, &n)| e.bytes(n))
            .collect();
        let payload_len = u16::try_from(ext_bytes.len() + segment.len())
            .expect("the IPv6 payload is longer than 65535 bytes");
        let mut h = vec![0x60, 0, 0, 0]; // version, traffic class, flow label
        h.extend(payload_len.to_be_bytes());
        h.extend([next[0], 64]); // next header, hop limit
        h.extend(SRC_V6.octets());
        h.extend(DST_V6.octets());
        h.extend(ext_bytes);

        // A routing header leaves segments left at 0, so the destination
        // address is the final one, as the pseudo-header wants (RFC 8200 8.1).
        let mut pseudo = Vec::new();
        pseudo.extend(SRC_V6.octets());
        pseudo.extend(DST_V6.octets());
        pseudo.extend((segment.len() as u32).to_be_bytes());
        pseudo.extend([0, 0, 0, IPPROTO_TCP]);
        set_tcp_checksum(&mut segment, pseudo);
        h.extend(segment);
        h
    }

    /// The TCP header and payload, checksum left 0.
    fn tcp_segment(&self) -> Vec<u8> {
        let header_len = 20 + self.tcp_options.len();
        let mut s = Vec::with_capacity(header_len + self.payload.len());
        s.extend(self.src_port.to_be_bytes());
        s.extend(self.dst_port.to_be_bytes());
        s.extend(self.seq.to_be_bytes());
        s.extend(TCP_ACK_NUM.to_be_bytes());
        s.extend([((header_len / 4) as u8) << 4, self.tcp_flags]);
        s.extend(TCP_WINDOW.to_be_bytes());
        s.extend([0, 0, 0, 0]); // checksum, urgent pointer
        s.extend(&self.tcp_options);
        s.extend(&self.payload);
        s
    }
}

/// `bytes` padded with zeros (End of Options List) to a multiple of 4.
fn padded(bytes: &[u8], max: usize, what: &str) -> Vec<u8> {
    let mut v = bytes.to_vec();
    v.resize(bytes.len().next_multiple_of(4), 0);
    assert!(
        v.len() <= max,
        "{what}: {} bytes once padded, at most {max} fit",
        v.len()
    );
    v
}

/// Fills in the checksum of a TCP `segment` whose checksum field is 0.
fn set_tcp_checksum(segment: &mut [u8], mut pseudo_header: Vec<u8>) {
    pseudo_header.extend_from_slice(segment);
    let sum = checksum(&pseudo_header);
    segment[16..18].copy_from_slice(&sum.to_be_bytes());
}

/// The Internet checksum (RFC 1071): the complement of the ones' complement
/// sum of 16-bit big-endian words, an odd last byte padded with zero. Over
/// data that includes a correct checksum it is 0.
/// IPv4 frames of connection segments to [`DST_PORT`]: `(client port,
/// sequence number, payload, SYN)`, the others `PSH|ACK`.
pub fn segment_frames(segments: &[(u16, u32, Vec<u8>, bool)]) -> Vec<Vec<u8>> {
    segments
        .iter()
        .map(|(port, seq, payload, syn)| {
            Packet::ipv4(payload)
                .src_port(*port)
                .seq(*seq)
                .tcp_flags(if *syn { TCP_SYN } else { TCP_PSH | TCP_ACK })
                .build()
        })
        .collect()
}

pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|w| (u32::from(w[0]) << 8) | u32::from(*w.get(1).unwrap_or(&0)))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: &[u8] = b"OPTIONS /api HTTP/1.1\r\nHost: a\r\nOrigin: https://app.example.com\r\nAccess-Control-Request-Method: PUT\r\n\r\n";

    fn be16(b: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([b[at], b[at + 1]])
    }

    /// Checks the IPv4 header at `ip` and the TCP segment after it, returns
    /// the TCP header's offset.
    fn check_ipv4(frame: &[u8], ip: usize) -> usize {
        let ihl = usize::from(frame[ip] & 0xf) * 4;
        let total = usize::from(be16(frame, ip + 2));
        assert_eq!(frame[ip] >> 4, 4);
        assert_eq!(checksum(&frame[ip..ip + ihl]), 0, "IPv4 header checksum");
        let tcp = ip + ihl;
        let mut pseudo = frame[ip + 12..ip + 20].to_vec();
        pseudo.extend([0, IPPROTO_TCP]);
        pseudo.extend(((total - ihl) as u16).to_be_bytes());
        pseudo.extend(&frame[tcp..ip + total]);
        assert_eq!(checksum(&pseudo), 0, "TCP checksum over IPv4");
        tcp
    }

    /// Checks the TCP header at `tcp`; returns the payload's offset.
    fn check_tcp(frame: &[u8], tcp: usize, dst_port: u16) -> usize {
        assert!((SRC_PORT..SRC_PORT + SRC_PORTS).contains(&be16(frame, tcp)));
        assert_eq!(be16(frame, tcp + 2), dst_port);
        assert_eq!(frame[tcp + 13], TCP_PSH | TCP_ACK);
        tcp + usize::from(frame[tcp + 12] >> 4) * 4
    }

    /// Walks the IPv6 extension headers from the fixed header at `ip` with the
    /// RFC's length rules; returns the next header values met (the last is
    /// the upper layer's) and the upper layer's offset.
    fn walk_ipv6(frame: &[u8], ip: usize) -> (Vec<u8>, usize) {
        let mut next = vec![frame[ip + 6]];
        let mut at = ip + 40;
        loop {
            let len = match *next.last().unwrap() {
                0 | 43 | 60 => (usize::from(frame[at + 1]) + 1) * 8,
                44 => 8,
                51 => (usize::from(frame[at + 1]) + 2) * 4,
                _ => return (next, at),
            };
            next.push(frame[at]);
            at += len;
        }
    }

    fn check_ipv6_tcp_checksum(frame: &[u8], ip: usize, tcp: usize) {
        let end = ip + 40 + usize::from(be16(frame, ip + 4));
        let mut pseudo = frame[ip + 8..ip + 40].to_vec();
        pseudo.extend(((end - tcp) as u32).to_be_bytes());
        pseudo.extend([0, 0, 0, IPPROTO_TCP]);
        pseudo.extend(&frame[tcp..end]);
        assert_eq!(checksum(&pseudo), 0, "TCP checksum over IPv6");
    }

    /// The option TLVs of an options header at `at` fill it exactly, and no
    /// run of padding is longer than 7 bytes.
    fn check_options_header(h: &[u8]) {
        let mut at = 2;
        let mut pad_run = 0;
        while at < h.len() {
            let len = if h[at] == 0 {
                1
            } else {
                usize::from(h[at + 1]) + 2
            };
            if h[at] <= 1 {
                pad_run += len;
                assert!(pad_run <= 7, "padding run of {pad_run} bytes");
            } else {
                assert_eq!(h[at], 0x1e);
                pad_run = 0;
            }
            at += len;
        }
        assert_eq!(at, h.len(), "options overrun the header");
    }

    #[test]
    fn plain_ipv4() {
        let f = Packet::ipv4(REQUEST).build();
        assert_eq!(&f[..6], &DST_MAC);
        assert_eq!(&f[6..12], &SRC_MAC);
        assert_eq!(be16(&f, 12), ETH_P_IP);
        assert_eq!(f.len(), 14 + 20 + 20 + REQUEST.len());
        assert_eq!(usize::from(be16(&f, 16)), 20 + 20 + REQUEST.len());
        assert_eq!(be16(&f, 20), IPV4_DF);
        assert_eq!(f[23], IPPROTO_TCP);
        assert_eq!(&f[26..30], &SRC_V4.octets());
        assert_eq!(&f[30..34], &DST_V4.octets());
        let tcp = check_ipv4(&f, 14);
        assert_eq!(tcp, 34);
        assert_eq!(check_tcp(&f, tcp, DST_PORT), 54);
        assert_eq!(&f[54..], REQUEST);
    }

    #[test]
    fn qinq_ipv4_options_tcp_options_and_trailer() {
        let f = Packet::ipv4(REQUEST)
            .dst_port(80)
            .vlan(ETH_P_8021AD, 100)
            .vlan(ETH_P_8021Q, 200)
            .ipv4_options(&[0x94, 0x04, 0, 0, 0x01]) // router alert, NOP
            .tcp_options(&[2, 4, 0x05, 0xb4, 1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 4, 2])
            .trailer(&[0xee; 6])
            .build();
        assert_eq!(
            [be16(&f, 12), be16(&f, 14), be16(&f, 16), be16(&f, 18)],
            [ETH_P_8021AD, 100, ETH_P_8021Q, 200]
        );
        assert_eq!(be16(&f, 20), ETH_P_IP);
        let ip = 22;
        assert_eq!(f[ip] & 0xf, 7, "20 + 5 options bytes padded to 8");
        assert_eq!(&f[ip + 20..ip + 28], &[0x94, 4, 0, 0, 1, 0, 0, 0]);
        let tcp = check_ipv4(&f, ip);
        assert_eq!(tcp, ip + 28);
        assert_eq!(f[tcp + 12] >> 4, 10, "20 + 18 options bytes padded to 20");
        let payload = check_tcp(&f, tcp, 80);
        assert_eq!(payload, tcp + 40);
        assert_eq!(&f[payload..payload + REQUEST.len()], REQUEST);
        assert_eq!(usize::from(be16(&f, ip + 2)), payload + REQUEST.len() - ip);
        assert_eq!(&f[payload + REQUEST.len()..], &[0xee; 6]);
    }

    #[test]
    fn ipv4_fragment_and_protocol() {
        let f = Packet::ipv4(b"x").ipv4_fragment(185, true).build();
        assert_eq!(be16(&f, 20), IPV4_MF | 185);
        check_ipv4(&f, 14);
        let f = Packet::ipv4(b"x").ipv4_fragment(0, false).build();
        assert_eq!(be16(&f, 20), 0);
        let f = Packet::ipv4(REQUEST).protocol(IPPROTO_UDP).build();
        assert_eq!(f[23], IPPROTO_UDP);
        assert_eq!(
            f[34..],
            Packet::ipv4(REQUEST).src_port(be16(&f, 34)).build()[34..]
        );
    }

    #[test]
    fn plain_ipv6_and_empty_payload() {
        let f = Packet::ipv6(REQUEST).build();
        assert_eq!(be16(&f, 12), ETH_P_IPV6);
        assert_eq!(f[14] >> 4, 6);
        assert_eq!(usize::from(be16(&f, 18)), 20 + REQUEST.len());
        assert_eq!(&f[22..38], &SRC_V6.octets());
        assert_eq!(&f[38..54], &DST_V6.octets());
        assert_eq!(walk_ipv6(&f, 14), (vec![IPPROTO_TCP], 54));
        check_ipv6_tcp_checksum(&f, 14, 54);
        assert_eq!(check_tcp(&f, 54, DST_PORT), 74);
        assert_eq!(&f[74..], REQUEST);

        let f = Packet::ipv6(b"").tcp_flags(TCP_SYN).build();
        assert_eq!(f.len(), 74);
        assert_eq!(f[54 + 13], TCP_SYN);
        check_ipv6_tcp_checksum(&f, 14, 54);
    }

    #[test]
    fn ipv6_extension_header_chain() {
        let exts = [
            Ipv6Ext::HopByHop { len: 8 },
            Ipv6Ext::Routing { segments: 2 },
            Ipv6Ext::DestOpts { len: 24 },
            Ipv6Ext::Fragment {
                offset: 0,
                more: true,
            },
            Ipv6Ext::Auth { len: 24 },
        ];
        let f = exts
            .iter()
            .fold(Packet::ipv6(REQUEST).vlan(ETH_P_8021Q, 7), |p, &e| p.ext(e))
            .tcp_options(&[2, 4, 0x05, 0xa0])
            .trailer(b"\r\nOrigin: https://evil.example\r\n")
            .build();
        let ip = 18;
        let (next, tcp) = walk_ipv6(&f, ip);
        assert_eq!(next, [0, 43, 60, 44, 51, IPPROTO_TCP]);
        let ext_len = 8 + (8 + 2 * 16) + 24 + 8 + 24;
        assert_eq!(tcp, ip + 40 + ext_len);
        assert_eq!(usize::from(be16(&f, ip + 4)), ext_len + 24 + REQUEST.len());
        check_ipv6_tcp_checksum(&f, ip, tcp);
        let payload = check_tcp(&f, tcp, DST_PORT);
        assert_eq!(&f[payload..payload + REQUEST.len()], REQUEST);

        let hbh = &f[ip + 40..ip + 48];
        check_options_header(hbh);
        let rh = &f[ip + 48..ip + 88];
        assert_eq!(
            rh[1..5],
            [4, 4, 0, 1],
            "length, type 4, segments left 0, last entry 1"
        );
        assert_eq!(rh[8..24], DST_V6.octets());
        check_options_header(&f[ip + 88..ip + 112]);
        let frag = &f[ip + 112..ip + 120];
        assert_eq!(be16(frag, 2), 1, "offset 0, M set");
        let ah = &f[ip + 120..ip + 144];
        assert_eq!(ah[1], 4, "24 bytes are 6 4-byte units, minus 2");
    }

    #[test]
    fn options_headers_of_every_size_are_valid() {
        for len in (8..=2048).step_by(8) {
            let f = Packet::ipv6(b"").ext(Ipv6Ext::DestOpts { len }).build();
            check_options_header(&f[54..54 + len]);
            assert_eq!(walk_ipv6(&f, 14), (vec![60, IPPROTO_TCP], 54 + len));
            check_ipv6_tcp_checksum(&f, 14, 54 + len);
        }
    }

    #[test]
    fn ipv6_fragment_offset_and_protocol() {
        let f = Packet::ipv6(REQUEST)
            .ext(Ipv6Ext::Fragment {
                offset: 0x1fff,
                more: false,
            })
            .protocol(IPPROTO_UDP)
            .build();
        assert_eq!(walk_ipv6(&f, 14), (vec![44, IPPROTO_UDP], 62));
        assert_eq!(be16(&f, 56), 0xfff8);
    }

    #[test]
    fn non_ip_frame() {
        let f = Packet::non_ip(ETH_P_ARP, &[1; 28])
            .vlan(ETH_P_8021Q, 4095)
            .trailer(&[0; 14])
            .build();
        assert_eq!(f.len(), 60);
        assert_eq!(
            [be16(&f, 12), be16(&f, 14), be16(&f, 16)],
            [ETH_P_8021Q, 4095, ETH_P_ARP]
        );
        assert_eq!(&f[18..46], &[1; 28]);
    }

    #[test]
    fn checksum_of_odd_length() {
        // RFC 1071's example words, then one odd byte padded with zero.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7, 0x01];
        assert_eq!(checksum(&data), !0xdef2);
    }

    #[test]
    #[should_panic(expected = "at most 40 fit")]
    fn too_many_ipv4_options() {
        Packet::ipv4(b"").ipv4_options(&[1; 41]);
    }

    #[test]
    #[should_panic(expected = "not IPv4")]
    fn ipv4_knob_on_ipv6() {
        Packet::ipv6(b"").ipv4_options(&[1]);
    }

    #[test]
    #[should_panic(expected = "steps of 8")]
    fn auth_header_of_odd_size() {
        Packet::ipv6(b"").ext(Ipv6Ext::Auth { len: 12 }).build();
    }
}
