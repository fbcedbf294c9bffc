//! Checks that a frame the program sent back is the TCP reset answering the
//! frame it was given (`--action reset`), read with etherparse: its parsing
//! and checksums share nothing with the program's code.

use anyhow::{Context, Result, bail, ensure};
use etherparse::{
    IpNumber, LinkExtSlice, LinkSlice, NetSlice, SlicedPacket, TcpSlice, TransportSlice,
};

/// The reset's sequence and acknowledgment numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResetNumbers {
    pub seq: u32,
    pub ack: u32,
}

fn tcp<'a>(packet: &SlicedPacket<'a>, what: &str) -> Result<TcpSlice<'a>> {
    match &packet.transport {
        Some(TransportSlice::Tcp(tcp)) => Ok(tcp.clone()),
        other => bail!("the {what} carries no TCP segment: {other:?}"),
    }
}

/// The Ethernet addresses of a frame, and the offset of its IP header
/// (after any VLAN tags).
fn link(packet: &SlicedPacket<'_>, what: &str) -> Result<([u8; 6], [u8; 6], usize)> {
    let Some(LinkSlice::Ethernet2(eth)) = &packet.link else {
        bail!("the {what} is not an Ethernet frame");
    };
    for ext in &packet.link_exts {
        ensure!(
            matches!(ext, LinkExtSlice::Vlan(_)),
            "the {what} has a link extension that is no VLAN tag: {ext:?}"
        );
    }
    Ok((
        eth.destination(),
        eth.source(),
        14 + 4 * packet.link_exts.len(),
    ))
}

/// Checks `reply` as the reset answering `request` (an Ethernet frame, any
/// VLAN tags, IPv4 with any options or IPv6 with any extension headers,
/// TCP): MACs and addresses and ports swapped, VLAN tags kept, a minimal IP
/// header (IPv4: 20 bytes, TTL 64, DF; IPv6: 40 bytes, hop limit 64, no
/// extension header), `RST|ACK` only, window 0, no options, no payload,
/// nothing after the segment, every length and checksum right; sequence
/// number the request's acknowledgment number (0 if it has no ACK),
/// acknowledgment number its sequence number plus its payload length, plus
/// one for SYN and for FIN.
pub fn check_reset(request: &[u8], reply: &[u8]) -> Result<ResetNumbers> {
    let asked = SlicedPacket::from_ethernet(request)
        .map_err(|e| anyhow::anyhow!("the request does not parse: {e}"))?;
    let got = SlicedPacket::from_ethernet(reply)
        .map_err(|e| anyhow::anyhow!("the reply does not parse: {e}"))?;
    let (asked_dst, asked_src, asked_l3) = link(&asked, "request")?;
    let (dst, src, l3) = link(&got, "reply")?;
    ensure!(
        (dst, src) == (asked_src, asked_dst),
        "MACs not swapped: {dst:x?} <- {src:x?}"
    );
    // The VLAN tags and the EtherType, byte for byte.
    ensure!(
        l3 == asked_l3 && reply[12..l3] == request[12..l3],
        "VLAN tags or EtherType changed: {:x?}, the request had {:x?}",
        &reply[12..l3],
        &request[12..asked_l3]
    );

    let (asked_tcp, tcp) = (tcp(&asked, "request")?, tcp(&got, "reply")?);
    let checksum = match (asked.net.as_ref(), got.net.as_ref()) {
        (Some(NetSlice::Ipv4(asked_ip)), Some(NetSlice::Ipv4(ip))) => {
            let header = ip.header().to_header();
            ensure!(
                header.header_len() == 20,
                "IPv4 header of {} bytes",
                header.header_len()
            );
            ensure!(
                header.total_len == 40,
                "IPv4 total length {}",
                header.total_len
            );
            ensure!(header.time_to_live == 64, "TTL {}", header.time_to_live);
            ensure!(
                header.dont_fragment
                    && !header.more_fragments
                    && header.fragment_offset.value() == 0,
                "IPv4 flags: {header:?}"
            );
            ensure!(
                header.protocol == IpNumber::TCP,
                "IPv4 protocol {:?}",
                header.protocol
            );
            ensure!(
                (header.source, header.destination)
                    == (asked_ip.header().destination(), asked_ip.header().source()),
                "IPv4 addresses not swapped: {header:?}"
            );
            ensure!(
                header.header_checksum == header.calc_header_checksum(),
                "IPv4 header checksum {:#06x}, should be {:#06x}",
                header.header_checksum,
                header.calc_header_checksum()
            );
            ensure!(
                reply.len() == l3 + 40,
                "a {}-byte frame for a 40-byte packet",
                reply.len()
            );
            tcp.calc_checksum_ipv4(header.source, header.destination)?
        }
        (Some(NetSlice::Ipv6(asked_ip)), Some(NetSlice::Ipv6(ip))) => {
            let header = ip.header().to_header();
            ensure!(
                header.payload_length == 20,
                "IPv6 payload length {}",
                header.payload_length
            );
            ensure!(
                header.next_header == IpNumber::TCP,
                "IPv6 next header {:?}: extension headers in the reply",
                header.next_header
            );
            ensure!(header.hop_limit == 64, "hop limit {}", header.hop_limit);
            ensure!(
                (header.source, header.destination)
                    == (asked_ip.header().destination(), asked_ip.header().source()),
                "IPv6 addresses not swapped: {header:?}"
            );
            ensure!(
                reply.len() == l3 + 60,
                "a {}-byte frame for a 60-byte packet",
                reply.len()
            );
            tcp.calc_checksum_ipv6(header.source, header.destination)?
        }
        (a, b) => bail!("the request is {a:?}, the reply {b:?}"),
    };
    ensure!(
        tcp.checksum() == checksum,
        "TCP checksum {:#06x}, should be {checksum:#06x}",
        tcp.checksum()
    );
    ensure!(
        (tcp.source_port(), tcp.destination_port())
            == (asked_tcp.destination_port(), asked_tcp.source_port()),
        "ports not swapped: {} -> {}",
        tcp.source_port(),
        tcp.destination_port()
    );
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
    ensure!(
        flags == [false, false, true, false, true, false, false, false, false],
        "flags are not RST|ACK: {:?}",
        tcp.to_header()
    );
    ensure!(tcp.window_size() == 0, "window {}", tcp.window_size());
    ensure!(tcp.data_offset() == 5, "TCP options in the reply");
    ensure!(tcp.payload().is_empty(), "payload in the reply");
    let numbers = ResetNumbers {
        seq: tcp.sequence_number(),
        ack: tcp.acknowledgment_number(),
    };
    let expected = ResetNumbers {
        seq: if asked_tcp.ack() {
            asked_tcp.acknowledgment_number()
        } else {
            0
        },
        ack: asked_tcp
            .sequence_number()
            .wrapping_add(u32::try_from(asked_tcp.payload().len()).context("payload length")?)
            .wrapping_add(u32::from(asked_tcp.syn()) + u32::from(asked_tcp.fin())),
    };
    ensure!(numbers == expected, "{numbers:?}, should be {expected:?}");
    Ok(numbers)
}
