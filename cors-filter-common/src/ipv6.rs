//! The walk over IPv6 extension headers, from the fixed header to TCP.
//!
//! Linux delivers a TCP segment to its socket behind hop-by-hop, routing,
//! destination options and AH headers, and behind an atomic fragment header
//! (offset 0, no more fragments; RFC 6946). A parser that stopped at the
//! first extension header would let a preflight through uninspected just
//! because something on the way added such a header.
//!
//! The walk is here, apart from packet access, so that userspace tests run
//! the code the kernel runs: the caller supplies the bounds-checked read.

use crate::{slot::Slot, verdict::Outcome};

pub const NEXT_HOP_BY_HOP: u8 = 0;
pub const NEXT_TCP: u8 = 6;
pub const NEXT_ROUTING: u8 = 43;
pub const NEXT_FRAGMENT: u8 = 44;
pub const NEXT_AUTH: u8 = 51;
pub const NEXT_DEST_OPTIONS: u8 = 60;

/// Extension headers walked before giving up on a packet.
///
/// RFC 8200 (section 4.1) orders a chain as hop-by-hop, destination options,
/// routing, fragment, AH, ESP, destination options: at most six before TCP.
/// Eight leaves room for what senders do in practice and keeps the walk, which
/// the verifier explores once per header, cheap. Linux itself does not bound
/// the chain: a longer one is passed uninspected and counted
/// ([`Outcome::Ipv6ExtHeader`]), which is how an operator sees it.
pub const MAX_EXT_HEADERS: usize = 8;

/// The shortest extension header (8 bytes), and the fragment header's size.
/// Every read checks that this much of the header is in the packet.
pub const EXT_MIN_LEN: usize = 8;

/// The longest extension header: hop-by-hop, routing or destination options
/// with a Hdr Ext Len of 255. (AH is at most (255 + 2) * 4 = 1028.)
pub const EXT_MAX_LEN: usize = (255 + 1) * 8;

/// The furthest into the frame a walk may start (the caller's contract): an
/// Ethernet header, VLAN tags and the 40-byte IPv6 header fit well within it.
pub const MAX_START: usize = 256;

/// Offsets are masked with this after their round trip through map memory
/// (see [`tcp_header`]). It never changes one: no walk gets further.
const OFFSET_MASK: usize = 0x7fff;
const _: () = assert!((OFFSET_MASK + 1).is_power_of_two());
const _: () = assert!(MAX_START + MAX_EXT_HEADERS * EXT_MAX_LEN <= OFFSET_MASK);

/// Fragment Offset (high 13 bits) and M flag (low bit) of the fragment
/// header's bytes 2 and 3; the two bits between them are reserved.
const FRAGMENT_OFFSET_AND_M: u16 = 0xfff9;

/// The length of an AH header whose Payload Len field is `payload_len`:
/// 4-octet units, minus 2 (RFC 4302). AH is the same in IPv4.
#[inline(always)]
pub const fn auth_header_len(payload_len: u8) -> usize {
    (payload_len as usize + 2) * 4
}

/// Whether the walk reads on past a header of type `next`.
///
/// ESP is not among them: what follows it is encrypted, so the walk stops
/// there with [`Outcome::NotTcp`], as an IPv4 packet carrying ESP does.
#[inline(always)]
pub const fn is_walked(next: u8) -> bool {
    matches!(
        next,
        NEXT_HOP_BY_HOP | NEXT_ROUTING | NEXT_FRAGMENT | NEXT_AUTH | NEXT_DEST_OPTIONS
    )
}

/// The length of the extension header of type `next` (one [`is_walked`]
/// accepts) whose first four bytes are `first`, or
/// [`Outcome::IpFragment`] for a fragment header that is not an atomic
/// fragment: a part of a datagram is never read as if it were whole.
#[inline(always)]
pub fn ext_len(next: u8, first: [u8; 4]) -> Result<usize, Outcome> {
    match next {
        // Hdr Ext Len: 8-octet units, not counting the first 8 (RFC 8200).
        NEXT_HOP_BY_HOP | NEXT_ROUTING | NEXT_DEST_OPTIONS => Ok((first[1] as usize + 1) * 8),
        NEXT_AUTH => Ok(auth_header_len(first[1])),
        // The fragment header, fixed size.
        _ => {
            if u16::from_be_bytes([first[2], first[3]]) & FRAGMENT_OFFSET_AND_M != 0 {
                return Err(Outcome::IpFragment);
            }
            Ok(EXT_MIN_LEN)
        }
    }
}

/// Walks the extension headers that start at `start` (the offset just past
/// the fixed header, at most [`MAX_START`]) with the fixed header's Next
/// Header `next`, and returns the offset of the TCP header.
///
/// `read(at)` returns the first four bytes of the header at `at` once it has
/// checked that the [`EXT_MIN_LEN`] bytes every extension header has are in
/// the packet, and [`Outcome::Truncated`] if they are not.
///
/// The offset lives in `offset` between headers. In the kernel it is map
/// memory, and that is what keeps the walk cheap to verify: reads at the
/// offset make the verifier track its range precisely, and every sequence of
/// header types gives it a different range, so states could not be merged
/// and everything after the walk would be verified once per sequence. Read
/// back from memory and masked, the offset is the same unknown on every path
/// (see [`Slot`]).
///
/// Ends with [`Outcome::Ipv6ExtHeader`] if the chain is longer than
/// [`MAX_EXT_HEADERS`], and with [`Outcome::NotTcp`] at any other final
/// header: UDP, ICMPv6, no next header, ESP, unknown types.
#[inline(always)]
pub fn tcp_header(
    next: u8,
    start: usize,
    offset: &mut Slot<u32>,
    mut read: impl FnMut(usize) -> Result<[u8; 4], Outcome>,
) -> Result<usize, Outcome> {
    debug_assert!(start <= MAX_START);
    let mut next = next;
    offset.set(start as u32);
    for _ in 0..MAX_EXT_HEADERS {
        if !is_walked(next) {
            break;
        }
        let at = offset.get() as usize & OFFSET_MASK;
        let first = read(at)?;
        let len = ext_len(next, first)?;
        next = first[0];
        offset.set((at + len) as u32);
    }
    match next {
        NEXT_TCP => Ok(offset.get() as usize & OFFSET_MASK),
        _ if is_walked(next) => Err(Outcome::Ipv6ExtHeader),
        _ => Err(Outcome::NotTcp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// Where the walk ends on `packet`, whose extension headers start at 0.
    fn walk(next: u8, packet: &[u8]) -> Result<usize, Outcome> {
        tcp_header(next, 0, &mut Slot::new(0), |at| {
            packet
                .get(at..at + EXT_MIN_LEN)
                .map(|h| [h[0], h[1], h[2], h[3]])
                .ok_or(Outcome::Truncated)
        })
    }

    /// An options-type header (hop-by-hop, routing, destination options) of
    /// `units` 8-byte units, followed by a header of type `next`.
    fn options(next: u8, units: u8) -> Vec<u8> {
        let mut h = std::vec![0u8; (units as usize + 1) * 8];
        h[0] = next;
        h[1] = units;
        h
    }

    fn fragment(next: u8, offset_and_flags: u16) -> Vec<u8> {
        let [hi, lo] = offset_and_flags.to_be_bytes();
        std::vec![next, 0, hi, lo, 0xde, 0xad, 0xbe, 0xef]
    }

    fn auth(next: u8, payload_len: u8) -> Vec<u8> {
        let mut h = std::vec![0u8; (payload_len as usize + 2) * 4];
        h[0] = next;
        h[1] = payload_len;
        h
    }

    #[test]
    fn tcp_right_after_the_fixed_header() {
        assert_eq!(walk(NEXT_TCP, &[]), Ok(0));
    }

    #[test]
    fn walks_options_routing_auth_and_atomic_fragments() {
        let chain = [
            options(NEXT_DEST_OPTIONS, 0),
            options(NEXT_ROUTING, 2),
            options(NEXT_FRAGMENT, 1),
            // Reserved bits set, offset 0, M clear: still whole.
            fragment(NEXT_AUTH, 0x0006),
            auth(NEXT_DEST_OPTIONS, 4),
            options(NEXT_TCP, 255),
        ]
        .concat();
        let tcp_at = 8 + 24 + 16 + 8 + 24 + 2048;
        assert_eq!(chain.len(), tcp_at);
        assert_eq!(walk(NEXT_HOP_BY_HOP, &chain), Ok(tcp_at));
    }

    #[test]
    fn fragments_stop_the_walk() {
        for flags in [0x0001, 0x0008, 0xfff8, 0x0009] {
            let packet = [options(NEXT_FRAGMENT, 0), fragment(NEXT_TCP, flags)].concat();
            assert_eq!(
                walk(NEXT_HOP_BY_HOP, &packet),
                Err(Outcome::IpFragment),
                "{flags:#x}"
            );
        }
    }

    #[test]
    fn other_final_headers_are_not_tcp() {
        // UDP, ICMPv6, no next header, ESP, mobility, an unassigned type.
        for last in [17, 58, 59, 50, 135, 253] {
            assert_eq!(walk(last, &[]), Err(Outcome::NotTcp), "{last}");
            let packet = options(last, 0);
            assert_eq!(
                walk(NEXT_DEST_OPTIONS, &packet),
                Err(Outcome::NotTcp),
                "{last}"
            );
        }
    }

    #[test]
    fn the_chain_is_bounded() {
        // MAX_EXT_HEADERS headers, then TCP: walked.
        let mut chain: Vec<u8> = (0..MAX_EXT_HEADERS)
            .flat_map(|i| {
                let last = i + 1 == MAX_EXT_HEADERS;
                options(if last { NEXT_TCP } else { NEXT_DEST_OPTIONS }, 0)
            })
            .collect();
        assert_eq!(walk(NEXT_DEST_OPTIONS, &chain), Ok(MAX_EXT_HEADERS * 8));
        // One more: given up on.
        chain[(MAX_EXT_HEADERS - 1) * 8] = NEXT_DEST_OPTIONS;
        chain.extend(options(NEXT_TCP, 0));
        assert_eq!(walk(NEXT_DEST_OPTIONS, &chain), Err(Outcome::Ipv6ExtHeader));
    }

    #[test]
    fn headers_cut_short_are_truncated() {
        // The header itself is cut short…
        assert_eq!(
            walk(NEXT_HOP_BY_HOP, &[NEXT_TCP, 0, 0, 0]),
            Err(Outcome::Truncated)
        );
        // …or says it is longer than the packet: the next read is past the end.
        let packet = options(NEXT_DEST_OPTIONS, 3);
        assert_eq!(
            walk(NEXT_HOP_BY_HOP, &packet[..16]),
            Err(Outcome::Truncated)
        );
    }

    #[test]
    fn the_longest_walk_stays_under_the_mask() {
        let longest: Vec<u8> =
            std::iter::repeat_n(options(NEXT_HOP_BY_HOP, 255), MAX_EXT_HEADERS - 1)
                .chain([options(NEXT_TCP, 255)])
                .flatten()
                .collect();
        let start = MAX_START;
        let packet = [std::vec![0u8; start], longest].concat();
        let end = tcp_header(NEXT_HOP_BY_HOP, start, &mut Slot::new(0), |at| {
            let h = &packet[at..at + EXT_MIN_LEN];
            Ok([h[0], h[1], h[2], h[3]])
        });
        assert_eq!(end, Ok(start + MAX_EXT_HEADERS * EXT_MAX_LEN));
    }
}
