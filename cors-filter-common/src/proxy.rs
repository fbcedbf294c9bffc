//! The PROXY protocol (HAProxy's, versions 1 and 2): the header a proxy or
//! load balancer puts at the start of a connection to a backend, naming
//! the client it proxies for. A server that expects it reads the header,
//! then HTTP; so does the filter (see `crate::stream`), on every
//! inspected port: a header never makes it skip the request behind it.
//!
//! What is a header here is what nginx and HAProxy accept, or stricter: a
//! header the filter calls malformed is one they close the connection on,
//! so nothing after it is served, and the filter drops it all.
//!
//! - Version 1: `PROXY ` then `TCP4 `, `TCP6 ` or `UNKNOWN`, up to the
//!   first `\r\n` (a `\r` or `\n` alone is malformed), at most [`V1_MAX`]
//!   bytes with it. `TCP4` and
//!   `TCP6` lines name two addresses and two ports, each followed by one
//!   space but the last: an IPv4 address in dotted decimal without
//!   leading zeros, an IPv6 address as Rust's `Ipv6Addr` parses it, a port
//!   of 1 to 5 digits up to 65535. `UNKNOWN` may be followed by anything.
//! - Version 2: the 12-byte [`V2_SIGNATURE`], a version and command byte
//!   (version 2; `LOCAL` or `PROXY`), a family byte, and the length of
//!   what follows, which is skipped past the addresses. `PROXY` over
//!   `TCP4`/`UDP4` or `TCP6`/`UDP6` names the client; any other family,
//!   and `LOCAL` (a proxy's own health check), names none.

use crate::event::{FAMILY_IPV4, FAMILY_IPV6};

/// How a version 1 header starts.
pub const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// The longest version 1 header, `\r\n` included (the specification's).
pub const V1_MAX: usize = 107;
/// How a version 2 header starts.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Bytes of a version 2 header before its addresses.
pub const V2_FIXED: usize = 16;
/// Bytes of a version 2 header's IPv4 and IPv6 addresses and ports.
const V2_INET: usize = 12;
const V2_INET6: usize = 36;
/// Bytes of a header the parser keeps while it reads it: a version 1
/// line, or a version 2 header up to the end of its addresses.
pub const HEADER_KEPT: usize = 128;
pub const HEADER_MASK: usize = HEADER_KEPT - 1;
const _: () = assert!(HEADER_KEPT.is_power_of_two());
const _: () = assert!(HEADER_KEPT >= V1_MAX && HEADER_KEPT >= V2_FIXED + V2_INET6);
const _: () = assert!(HEADER_KEPT <= crate::origin::ORIGIN_RAW_LEN);

/// `ProxyClient::version` of a client named by a version 1 header.
pub const VERSION_1: u8 = 1;
/// `ProxyClient::version` of a client named by a version 2 header.
pub const VERSION_2: u8 = 2;

/// The client a PROXY header names (the `PROXY_CLIENTS` map's value; its
/// layout is pinned state).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyClient {
    /// IPv6, or IPv4 in the first 4 bytes and zeros after.
    pub addr: [u8; 16],
    /// Host byte order.
    pub port: u16,
    /// `FAMILY_IPV4` or `FAMILY_IPV6`; 0: the header named no client.
    pub family: u8,
    /// [`VERSION_1`] or [`VERSION_2`].
    pub version: u8,
    pub reserved: u32,
}

const _: () = assert!(core::mem::size_of::<ProxyClient>() == 24);

impl ProxyClient {
    /// No client: every byte zero, written a word at a time (see
    /// `crate::store`).
    #[inline(always)]
    pub fn clear(&mut self) {
        let words = (self as *mut ProxyClient).cast::<u64>();
        let mut i = 0;
        while i < core::mem::size_of::<ProxyClient>() / 8 {
            // SAFETY: `ProxyClient` is 8-byte aligned, 24 bytes of plain
            // integers: three `u64`s; `i` is within them.
            unsafe { words.add(i).write_volatile(0) };
            i += 1;
        }
    }
}
// SAFETY: `repr(C)`, 8-byte aligned, integers and a byte array without
// padding, 24 bytes.
unsafe impl crate::store::Words for ProxyClient {}

/// Entries of the `PROXY_CLIENTS` map: connections whose PROXY header
/// named a client, remembered for their denial events (the least recently
/// used go first; their events then name the proxy alone).
pub const MAX_CLIENTS: u32 = 1 << 16;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `repr(C)`, integers and a byte array, no padding (size
    // asserted above); every bit pattern is a value.
    unsafe impl aya::Pod for super::ProxyClient {}
}

/// What the bytes kept so far say, once the byte at `last` was added.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reading {
    /// Not a header: the connection starts otherwise (the bytes are read
    /// again as requests).
    NotProxy,
    /// A header, not yet whole.
    More,
    /// A whole header, followed by `skip` bytes that belong to it (a
    /// version 2 header's TLVs).
    Whole { skip: u32 },
    /// A header a server closes the connection on.
    Malformed,
}

/// What `kept[..=last]`, the first bytes of a connection, say (see
/// [`Reading`]); the byte at `last` was just added.
#[inline(always)]
pub fn reading(kept: &[u8; HEADER_KEPT], last: usize) -> Reading {
    let b = kept[last & HEADER_MASK];
    if kept[0] == V1_PREFIX[0] {
        if last < V1_PREFIX.len() {
            return if b == V1_PREFIX[last] {
                Reading::More
            } else {
                Reading::NotProxy
            };
        }
        let after_cr = kept[(last - 1) & HEADER_MASK] == b'\r';
        return if b == b'\n' {
            if after_cr {
                Reading::Whole { skip: 0 }
            } else {
                Reading::Malformed
            }
        } else if after_cr || last + 1 >= V1_MAX {
            // A `\r` ends the line, or nothing does.
            Reading::Malformed
        } else {
            Reading::More
        };
    }
    if last < V2_SIGNATURE.len() {
        return if b == V2_SIGNATURE[last] {
            Reading::More
        } else if last <= 4 {
            // Only `\r\n\r\n` so far: whitespace before a request line,
            // which servers skip.
            Reading::NotProxy
        } else {
            Reading::Malformed
        };
    }
    if last == 12 {
        // Version 2; `LOCAL` or `PROXY` (HAProxy refuses other commands).
        return if b & 0xf0 == 0x20 && b & 0x0f <= 1 {
            Reading::More
        } else {
            Reading::Malformed
        };
    }
    if last < V2_FIXED - 1 {
        return Reading::More;
    }
    let length = u16::from_be_bytes([kept[14], kept[15]]) as usize;
    let addresses = v2_addresses(kept[12], kept[13]);
    if length < addresses {
        return Reading::Malformed;
    }
    if last + 1 < V2_FIXED + addresses {
        return Reading::More;
    }
    Reading::Whole {
        skip: (length - addresses) as u32,
    }
}

/// Bytes of addresses a version 2 header with these command and family
/// bytes carries that name the client (0: it names none).
#[inline(always)]
fn v2_addresses(command: u8, family: u8) -> usize {
    if command & 0x0f != 1 {
        return 0;
    }
    match family >> 4 {
        1 => V2_INET,
        2 => V2_INET6,
        _ => 0,
    }
}

/// The client a whole version 2 header in `kept` names (family 0: none).
#[inline(always)]
pub fn v2_client(kept: &[u8; HEADER_KEPT], client: &mut ProxyClient) {
    client.version = VERSION_2;
    client.reserved = 0;
    client.addr = [0; 16];
    let (family, len) = match v2_addresses(kept[12], kept[13]) {
        V2_INET => (FAMILY_IPV4, 4),
        V2_INET6 => (FAMILY_IPV6, 16),
        _ => {
            client.family = 0;
            client.port = 0;
            return;
        }
    };
    client.family = family;
    let mut k = 0;
    while k < 16 {
        if k < len {
            client.addr[k] = kept[(V2_FIXED + k) & HEADER_MASK];
        }
        k += 1;
    }
    // The source port follows both addresses.
    let port_at = V2_FIXED + 2 * len;
    client.port = u16::from_be_bytes([
        kept[port_at & HEADER_MASK],
        kept[(port_at + 1) & HEADER_MASK],
    ]);
}

/// Bits of [`AddrText::flags`].
mod text {
    /// Reading a dotted-decimal IPv4 address (or an IPv6 one's last 32 bits).
    pub const V4: u32 = 1;
    /// The previous byte was a `:`.
    pub const COLON: u32 = 2;
    /// The previous two bytes were a `::`.
    pub const COLON_PAIR: u32 = 4;
    /// A `::` was read.
    pub const ELIDED: u32 = 8;
    /// The address started with a `:` that must be followed by another.
    pub const LEADING_COLON: u32 = 16;
    /// The token so far starts with `0`.
    pub const ZERO_FIRST: u32 = 32;
    /// The token so far is no decimal IPv4 octet (a hex letter, a leading zero).
    pub const NOT_OCTET: u32 = 64;
    /// Not an address.
    pub const BAD: u32 = 128;
}

/// Longest address text: an IPv6 address with an IPv4 tail, all digits.
const ADDR_TEXT_MAX: u32 = 45;

/// A textual IPv4 or IPv6 address, read a byte at a time (the same
/// addresses as Rust's `Ipv4Addr` and `Ipv6Addr` parse; the unit tests
/// compare them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct AddrText {
    /// IPv6 groups so far; the IPv4 octets of an address read as IPv4.
    groups: [u16; 8],
    /// Groups (or octets) complete.
    count: u32,
    /// The token being read: its value in hex (IPv6) or decimal (IPv4).
    value: u32,
    /// Its value read as decimal (an IPv6 token that turns out to be the
    /// first octet of an IPv4 tail).
    decimal: u32,
    digits: u32,
    /// Groups before the `::`.
    elided_at: u32,
    /// Octets of the IPv4 address or tail complete.
    octets: u32,
    len: u32,
    flags: u32,
}

impl AddrText {
    #[inline(always)]
    pub fn start(&mut self, ipv4: bool) {
        self.count = 0;
        self.value = 0;
        self.decimal = 0;
        self.digits = 0;
        self.elided_at = 0;
        self.octets = 0;
        self.len = 0;
        self.flags = if ipv4 { text::V4 } else { 0 };
    }

    #[inline(always)]
    pub fn byte(&mut self, b: u8) {
        self.len += 1;
        if self.flags & text::BAD != 0 {
            return;
        }
        if self.len > ADDR_TEXT_MAX {
            self.flags |= text::BAD;
            return;
        }
        if self.flags & text::LEADING_COLON != 0 && b != b':' {
            self.flags |= text::BAD;
            return;
        }
        if self.flags & text::V4 != 0 {
            self.octet_byte(b);
            return;
        }
        let hex = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            b':' => {
                self.colon();
                return;
            }
            b'.' => {
                // The token is the first octet of an IPv4 tail.
                if self.digits == 0
                    || self.digits > 3
                    || self.flags & text::NOT_OCTET != 0
                    || self.decimal > 255
                {
                    self.flags |= text::BAD;
                    return;
                }
                self.flags |= text::V4;
                self.value = self.decimal;
                self.octet_end();
                return;
            }
            _ => {
                self.flags |= text::BAD;
                return;
            }
        };
        if self.digits == 4 {
            self.flags |= text::BAD;
            return;
        }
        if b.is_ascii_digit() {
            if self.digits == 0 && b == b'0' {
                self.flags |= text::ZERO_FIRST;
            } else if self.flags & text::ZERO_FIRST != 0 {
                self.flags |= text::NOT_OCTET;
            }
            self.decimal = self.decimal * 10 + hex as u32;
        } else {
            self.flags |= text::NOT_OCTET;
        }
        self.value = self.value * 16 + hex as u32;
        self.digits += 1;
        self.flags &= !(text::COLON | text::COLON_PAIR);
    }

    #[inline(always)]
    fn colon(&mut self) {
        if self.digits == 0 {
            if self.flags & text::COLON != 0 {
                if self.flags & text::ELIDED != 0 {
                    self.flags |= text::BAD;
                    return;
                }
                self.flags |= text::ELIDED | text::COLON_PAIR;
                self.flags &= !text::LEADING_COLON;
                self.elided_at = self.count;
            } else if self.len == 1 {
                self.flags |= text::COLON | text::LEADING_COLON;
            } else {
                self.flags |= text::BAD;
            }
            return;
        }
        self.push_group();
        self.flags |= text::COLON;
        self.flags &= !text::COLON_PAIR;
    }

    #[inline(always)]
    fn push_group(&mut self) {
        if self.count >= 8 {
            self.flags |= text::BAD;
            return;
        }
        self.groups[self.count as usize & 7] = self.value as u16;
        self.count += 1;
        self.value = 0;
        self.decimal = 0;
        self.digits = 0;
        self.flags &= !(text::ZERO_FIRST | text::NOT_OCTET);
    }

    #[inline(always)]
    fn octet_byte(&mut self, b: u8) {
        match b {
            b'0'..=b'9' => {
                if self.digits > 0 && self.flags & text::ZERO_FIRST != 0 {
                    self.flags |= text::BAD;
                    return;
                }
                if self.digits == 0 && b == b'0' {
                    self.flags |= text::ZERO_FIRST;
                }
                self.value = self.value * 10 + (b - b'0') as u32;
                self.digits += 1;
                if self.digits > 3 || self.value > 255 {
                    self.flags |= text::BAD;
                }
            }
            b'.' => {
                if self.digits == 0 || self.octets >= 3 {
                    self.flags |= text::BAD;
                    return;
                }
                self.octet_end();
            }
            _ => self.flags |= text::BAD,
        }
    }

    /// An octet (the token's `value`) ends at a `.`.
    #[inline(always)]
    fn octet_end(&mut self) {
        let at = self.octets as usize & 3;
        self.set_octet(at, self.value as u8);
        self.octets += 1;
        self.value = 0;
        self.digits = 0;
        self.flags &= !text::ZERO_FIRST;
    }

    /// Octet `at` of the IPv4 address, or of the IPv4 tail (in the two
    /// groups after those read).
    #[inline(always)]
    fn set_octet(&mut self, at: usize, octet: u8) {
        let group = (self.count as usize + at / 2) & 7;
        if at.is_multiple_of(2) {
            self.groups[group] = (self.groups[group] & 0x00ff) | (octet as u16) << 8;
        } else {
            self.groups[group] = (self.groups[group] & 0xff00) | octet as u16;
        }
    }

    /// The address read, into `addr` (an IPv4 address in its first 4
    /// bytes); false when the bytes are none.
    #[inline(always)]
    pub fn finish(&mut self, ipv4: bool, addr: &mut [u8; 16]) -> bool {
        if self.flags & (text::BAD | text::LEADING_COLON) != 0 {
            return false;
        }
        if self.flags & text::V4 != 0 {
            if self.digits == 0 || self.octets != 3 {
                return false;
            }
            self.set_octet(3, self.value as u8);
            if ipv4 {
                *addr = [0; 16];
                let g = self.groups;
                addr[..4].copy_from_slice(&[
                    (g[0] >> 8) as u8,
                    g[0] as u8,
                    (g[1] >> 8) as u8,
                    g[1] as u8,
                ]);
                return true;
            }
            self.count += 2;
        } else if self.digits > 0 {
            self.push_group();
        } else if self.flags & text::COLON != 0 && self.flags & text::COLON_PAIR == 0 {
            // A lone `:` at the end.
            return false;
        }
        if self.flags & text::BAD != 0 || self.count > 8 {
            return false;
        }
        let mut groups = [0u16; 8];
        if self.flags & text::ELIDED != 0 {
            if self.count > 7 {
                return false;
            }
            // The groups after the `::` go to the end, past the zeros.
            let zeros = 8 - self.count;
            let mut k = 0;
            while k < 8 {
                let k32 = k as u32;
                if k32 < self.elided_at {
                    groups[k] = self.groups[k];
                } else if k32 >= self.elided_at + zeros {
                    groups[k] = self.groups[opaque((k32 - zeros) as usize) & 7];
                }
                k += 1;
            }
        } else if self.count == 8 {
            groups = self.groups;
        } else {
            return false;
        }
        let mut k = 0;
        while k < 8 {
            addr[2 * k..2 * k + 2].copy_from_slice(&groups[k].to_be_bytes());
            k += 1;
        }
        true
    }
}

/// `x`, which the compiler cannot see through: a mask applied to it stays
/// for the verifier, where the compiler would prove it needless and drop it.
#[inline(always)]
fn opaque(x: usize) -> usize {
    // SAFETY: a plain write and read of a local.
    unsafe {
        let mut slot = x;
        core::ptr::write_volatile(&mut slot, x);
        core::ptr::read_volatile(&slot)
    }
}

/// Bits of [`V1Line::flags`].
mod line {
    /// The line names no client (`UNKNOWN`).
    pub const UNKNOWN: u32 = 1;
    /// The addresses are IPv4 ones.
    pub const TCP4: u32 = 2;
    /// Not a header a server accepts.
    pub const BAD: u32 = 4;
}

/// A version 1 line's parse, a byte at a time as the line comes, however
/// it is cut (kept with the connection's open head between segments, see
/// `crate::stream`). Its layout is pinned state.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default)]
pub struct V1Line {
    /// The protocol's first 8 bytes, little-endian.
    protocol: u64,
    /// 0: the protocol, 1 and 2: the addresses, 3 and 4: the ports.
    field: u32,
    /// Bytes of the field so far.
    field_len: u32,
    port: u32,
    flags: u32,
    text: AddrText,
    /// The client named so far.
    client: ProxyClient,
}

/// `TCP4`, `TCP6`, `UNKNOWN` as little-endian words.
const TCP4: u64 = crate::method::word_of(b"TCP4");
const TCP6: u64 = crate::method::word_of(b"TCP6");
const UNKNOWN: u64 = crate::method::word_of(b"UNKNOWN");

impl V1Line {
    /// Before the byte after `PROXY `.
    #[inline(always)]
    pub fn start(&mut self) {
        self.protocol = 0;
        self.field = 0;
        self.field_len = 0;
        self.port = 0;
        self.flags = 0;
        self.client.clear();
        self.client.version = VERSION_1;
    }

    /// The next byte of the line, before its `\r\n`.
    #[inline(always)]
    pub fn byte(&mut self, b: u8) {
        if self.flags & (line::BAD | line::UNKNOWN) != 0 {
            return;
        }
        if b != b' ' {
            match self.field {
                0 => {
                    if self.field_len < 8 {
                        self.protocol |= (b as u64) << (8 * self.field_len);
                    }
                }
                1 | 2 => self.text.byte(b),
                3 | 4 => {
                    if b.is_ascii_digit() && self.field_len < 5 {
                        self.port = self.port * 10 + (b - b'0') as u32;
                    } else {
                        self.flags |= line::BAD;
                    }
                }
                _ => self.flags |= line::BAD,
            }
            self.field_len += 1;
            return;
        }
        // A space ends a field.
        if self.field_len == 0 {
            self.flags |= line::BAD;
            return;
        }
        let ipv4 = self.flags & line::TCP4 != 0;
        match self.field {
            0 => {
                if self.field_len == 7 && self.protocol == UNKNOWN {
                    self.flags |= line::UNKNOWN;
                } else if self.field_len == 4 && self.protocol == TCP4 {
                    self.flags |= line::TCP4;
                    self.client.family = FAMILY_IPV4;
                    self.text.start(true);
                } else if self.field_len == 4 && self.protocol == TCP6 {
                    self.client.family = FAMILY_IPV6;
                    self.text.start(false);
                } else {
                    self.flags |= line::BAD;
                }
            }
            1 => {
                if !self.text.finish(ipv4, &mut self.client.addr) {
                    self.flags |= line::BAD;
                }
                self.text.start(ipv4);
            }
            2 => {
                let mut dest = [0; 16];
                if !self.text.finish(ipv4, &mut dest) {
                    self.flags |= line::BAD;
                }
            }
            3 | 4 => {
                if self.port > u16::MAX as u32 {
                    self.flags |= line::BAD;
                }
                if self.field == 3 {
                    self.client.port = self.port as u16;
                }
                self.port = 0;
            }
            _ => self.flags |= line::BAD,
        }
        self.field += 1;
        self.field_len = 0;
    }

    /// The line's `\r\n` came: whether it is a header servers accept.
    #[inline(always)]
    pub fn end(&mut self) -> bool {
        self.byte(b' ');
        self.flags & line::BAD == 0 && (self.flags & line::UNKNOWN != 0 || self.field == 5)
    }

    /// The client the line named (family 0: none, an `UNKNOWN` line).
    #[inline(always)]
    pub fn client(&self) -> &ProxyClient {
        &self.client
    }
}

/// Whether the first `len` bytes of `buf` start a PROXY header (how a
/// connection whose SYN the filter did not see is picked up at its start).
#[inline(always)]
pub fn starts_header(buf: &[u8], len: usize) -> bool {
    let prefix = |sig: &[u8]| {
        let mut k = 0;
        while k < sig.len() {
            if k >= len || k >= buf.len() || buf[k] != sig[k] {
                return false;
            }
            k += 1;
        }
        true
    };
    prefix(V1_PREFIX) || prefix(&V2_SIGNATURE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        format,
        net::{Ipv4Addr, Ipv6Addr},
        string::{String, ToString},
        vec,
        vec::Vec,
    };

    fn parse_text(s: &str, ipv4: bool) -> Option<[u8; 16]> {
        let mut t = AddrText::default();
        t.start(ipv4);
        for b in s.bytes() {
            t.byte(b);
        }
        let mut addr = [0xaa; 16];
        t.finish(ipv4, &mut addr).then_some(addr)
    }

    fn std_text(s: &str, ipv4: bool) -> Option<[u8; 16]> {
        if ipv4 {
            s.parse::<Ipv4Addr>().ok().map(|a| {
                let mut out = [0; 16];
                out[..4].copy_from_slice(&a.octets());
                out
            })
        } else {
            s.parse::<Ipv6Addr>().ok().map(|a| a.octets())
        }
    }

    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn addresses_read_as_rust_reads_them() {
        let cases = [
            "::",
            "::1",
            "1::",
            "1::2",
            ":::",
            "1:::2",
            "::1::",
            ":1::",
            "1:",
            ":1",
            "",
            "1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7:8:9",
            "1:2:3:4:5:6:7::",
            "::2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7:8::",
            "::1:2:3:4:5:6:7:8",
            "::ffff:1.2.3.4",
            "::1.2.3.4",
            "1:2:3:4:5:6:1.2.3.4",
            "1:2:3:4:5:6:7:1.2.3.4",
            "1.2.3.4",
            "1.2.3.4::",
            "::01.2.3.4",
            "::1.02.3.4",
            "::256.1.1.1",
            "::1234.1.1.1",
            "0000::",
            "00000::",
            "fe80::1%1",
            "FFFF::ABCD",
            "::0.0.0.0",
            "1:2:3:4:5::1.2.3.4",
            "::a.1.2.3",
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            "0.0.0.0",
            "255.255.255.255",
            "256.0.0.0",
            "1..2.3",
            ".1.2.3",
            "1.2.3.",
            "1:2:3:4:5:6:7:8:",
            "::1.2.3.4:1",
            "1::2:",
        ];
        for s in cases {
            for ipv4 in [true, false] {
                assert_eq!(parse_text(s, ipv4), std_text(s, ipv4), "{s:?} ipv4={ipv4}");
            }
        }
        // Random strings over the bytes that matter.
        let alphabet = b"0123456789abcdefABCDEF:.:.:0g ";
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut valid = 0;
        for _ in 0..300_000 {
            let len = (next(&mut state) % 46) as usize;
            let s: String = (0..len)
                .map(|_| alphabet[(next(&mut state) % alphabet.len() as u64) as usize] as char)
                .collect();
            for ipv4 in [true, false] {
                let ours = parse_text(&s, ipv4);
                valid += ours.is_some() as u32;
                assert_eq!(ours, std_text(&s, ipv4), "{s:?} ipv4={ipv4}");
            }
        }
        // Valid addresses, printed by Rust in several forms, read back.
        for _ in 0..50_000 {
            let mut octets = [0u8; 16];
            let zeros = next(&mut state);
            for (i, o) in octets.iter_mut().enumerate() {
                *o = if zeros >> (i / 2) & 1 == 1 {
                    0
                } else {
                    next(&mut state) as u8
                };
            }
            let a = Ipv6Addr::from(octets);
            let forms = [
                format!("{a}"),
                a.segments().map(|g| format!("{g:x}")).join(":"),
                a.segments().map(|g| format!("{g:04X}")).join(":"),
                format!(
                    "{}:{}",
                    a.segments()[..6]
                        .iter()
                        .map(|g| format!("{g:x}"))
                        .collect::<Vec<_>>()
                        .join(":"),
                    Ipv4Addr::from([octets[12], octets[13], octets[14], octets[15]])
                ),
            ];
            for s in forms {
                assert_eq!(parse_text(&s, false), Some(octets), "{s:?}");
                // One or two bytes changed, added or taken out: near misses.
                let mut m = s.into_bytes();
                for _ in 0..1 + next(&mut state) % 2 {
                    let at = (next(&mut state) % (m.len() as u64 + 1)) as usize;
                    let b = alphabet[(next(&mut state) % alphabet.len() as u64) as usize];
                    match next(&mut state) % 3 {
                        0 if at < m.len() => m[at] = b,
                        1 if at < m.len() => {
                            m.remove(at);
                        }
                        _ => m.insert(at, b),
                    }
                }
                let m = String::from_utf8(m).unwrap();
                let ours = parse_text(&m, false);
                valid += ours.is_some() as u32;
                assert_eq!(ours, std_text(&m, false), "{m:?}");
            }
            let v4 = Ipv4Addr::from([octets[0], octets[1], octets[2], octets[3]]);
            assert_eq!(
                parse_text(&v4.to_string(), true),
                std_text(&v4.to_string(), true)
            );
        }
        assert!(
            valid > 20_000,
            "the random strings hold valid addresses too: {valid}"
        );
    }

    fn kept(bytes: &[u8]) -> [u8; HEADER_KEPT] {
        let mut kept = [0u8; HEADER_KEPT];
        kept[..bytes.len().min(HEADER_KEPT)]
            .copy_from_slice(&bytes[..bytes.len().min(HEADER_KEPT)]);
        kept
    }

    /// Feeds `bytes` as the stream does, to the first verdict.
    fn read(bytes: &[u8]) -> (Reading, usize) {
        let k = kept(bytes);
        for last in 0..bytes.len().min(HEADER_KEPT) {
            let r = reading(&k, last);
            if r != Reading::More {
                return (r, last + 1);
            }
        }
        (Reading::More, bytes.len())
    }

    fn v1(line: &str) -> Option<ProxyClient> {
        let (r, len) = read(line.as_bytes());
        match r {
            Reading::Whole { skip: 0 } => {
                let mut parse = V1Line::default();
                parse.start();
                for &b in &line.as_bytes()[V1_PREFIX.len()..len - 2] {
                    parse.byte(b);
                }
                parse.end().then_some(*parse.client())
            }
            _ => None,
        }
    }

    #[test]
    fn version_1_lines() {
        let c = v1("PROXY TCP4 192.0.2.7 198.51.100.1 51234 8080\r\n").unwrap();
        assert_eq!(
            (c.family, c.port, c.version),
            (FAMILY_IPV4, 51234, VERSION_1)
        );
        assert_eq!(c.addr[..4], [192, 0, 2, 7]);
        assert_eq!(c.addr[4..], [0; 12]);
        let c = v1("PROXY TCP6 2001:db8::7 2001:db8::1 443 8080\r\n").unwrap();
        assert_eq!(c.family, FAMILY_IPV6);
        assert_eq!(c.addr, "2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        assert_eq!(c.port, 443);
        let c = v1("PROXY UNKNOWN\r\n").unwrap();
        assert_eq!(c.family, 0);
        assert_eq!(
            v1("PROXY UNKNOWN whatever may follow\r\n").unwrap().family,
            0
        );
        for bad in [
            "PROXY TCP4 192.0.2.7 198.51.100.1 51234\r\n",
            "PROXY TCP4 192.0.2.7 198.51.100.1 51234 8080 9\r\n",
            "PROXY TCP4 192.0.2.7  198.51.100.1 51234 8080\r\n",
            "PROXY TCP4 192.0.2.7 198.51.100.1 65536 8080\r\n",
            "PROXY TCP4 192.0.2.7 198.51.100.1 123456 8080\r\n",
            "PROXY TCP4 2001:db8::7 198.51.100.1 1 2\r\n",
            "PROXY TCP6 192.0.2.7 2001:db8::1 1 2\r\n",
            "PROXY TCP4 192.0.2.7 198.51.100.1 1 2 \r\n",
            "PROXY TCP5 192.0.2.7 198.51.100.1 1 2\r\n",
            "PROXY UNKNOWNX\r\n",
            "PROXY \r\n",
            "PROXY TCP4 1.2.3.4 5.6.7.8 1 x\r\n",
        ] {
            assert_eq!(v1(bad), None, "{bad:?}");
        }
        // No `\r` before the `\n`, or no `\n` in 107 bytes.
        assert_eq!(read(b"PROXY UNKNOWN\n").0, Reading::Malformed);
        let long = format!("PROXY UNKNOWN {}\r\n", "x".repeat(100));
        assert_eq!(read(long.as_bytes()), (Reading::Malformed, V1_MAX));
        let longest = format!("PROXY UNKNOWN {}\r\n", "x".repeat(V1_MAX - 16));
        assert_eq!(longest.len(), V1_MAX);
        assert_eq!(read(longest.as_bytes()).0, Reading::Whole { skip: 0 });
    }

    #[test]
    fn what_is_not_a_header() {
        for start in [
            &b"POST / HTTP/1.1\r\n"[..],
            b"PROPFIND /",
            b"PROX",
            b"PROXY\t",
            b"\r\n\r\nGET /",
            b"\r\nGET",
        ] {
            let (r, _) = read(start);
            assert!(
                matches!(r, Reading::NotProxy | Reading::More),
                "{start:?}: {r:?}"
            );
            assert_ne!(r, Reading::Malformed, "{start:?}");
        }
        assert_eq!(read(b"PROXx").0, Reading::NotProxy);
        assert_eq!(read(b"\r\n\r\nGET").0, Reading::NotProxy);
        assert_eq!(read(b"\r\n\r\n\0\r\nQUIX\n").0, Reading::Malformed);
    }

    fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend([command, family]);
        h.extend((body.len() as u16).to_be_bytes());
        h.extend(body);
        h
    }

    #[test]
    fn version_2_headers() {
        let mut body = vec![192, 0, 2, 7, 198, 51, 100, 1];
        body.extend(51234u16.to_be_bytes());
        body.extend(8080u16.to_be_bytes());
        body.extend([0x04, 0, 3, b'a', b'b', b'c']); // a TLV
        let h = v2(0x21, 0x11, &body);
        let (r, len) = read(&h);
        assert_eq!((r, len), (Reading::Whole { skip: 6 }, V2_FIXED + V2_INET));
        let mut c = ProxyClient::default();
        v2_client(&kept(&h), &mut c);
        assert_eq!(
            (c.family, c.port, c.version),
            (FAMILY_IPV4, 51234, VERSION_2)
        );
        assert_eq!(c.addr[..4], [192, 0, 2, 7]);

        let src: Ipv6Addr = "2001:db8::7".parse().unwrap();
        let mut body = src.octets().to_vec();
        body.extend("2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        body.extend(443u16.to_be_bytes());
        body.extend(8080u16.to_be_bytes());
        let h = v2(0x21, 0x21, &body);
        assert_eq!(read(&h), (Reading::Whole { skip: 0 }, V2_FIXED + V2_INET6));
        v2_client(&kept(&h), &mut c);
        assert_eq!((c.family, c.port, c.addr), (FAMILY_IPV6, 443, src.octets()));

        // LOCAL, and PROXY over an unspecified family: no client; all skipped.
        for (command, family) in [(0x20, 0x00), (0x20, 0x11), (0x21, 0x00), (0x21, 0x31)] {
            let h = v2(command, family, &[7; 20]);
            assert_eq!(
                read(&h),
                (Reading::Whole { skip: 20 }, V2_FIXED),
                "{command:x} {family:x}"
            );
            v2_client(&kept(&h), &mut c);
            assert_eq!(c.family, 0);
        }
        // Version 1 in a version 2 signature, an unknown command, addresses
        // longer than the length says.
        assert_eq!(read(&v2(0x11, 0x11, &[0; 12])).0, Reading::Malformed);
        assert_eq!(read(&v2(0x22, 0x11, &[0; 12])).0, Reading::Malformed);
        assert_eq!(read(&v2(0x21, 0x11, &[0; 11])).0, Reading::Malformed);
        assert_eq!(read(&v2(0x21, 0x21, &[0; 35])).0, Reading::Malformed);
    }

    #[test]
    fn pickup_at_a_header() {
        assert!(starts_header(b"PROXY TCP4", 10));
        assert!(starts_header(&V2_SIGNATURE, 12));
        assert!(!starts_header(b"PROXY", 5));
        assert!(!starts_header(b"POST /", 6));
        assert!(!starts_header(&V2_SIGNATURE[..11], 11));
    }
}
