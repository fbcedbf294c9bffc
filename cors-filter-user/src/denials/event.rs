//! Decoding a `DENIALS` ring buffer record, and rendering the origin bytes
//! it carries as text that is safe in a log line, a JSON file and a
//! Prometheus label.
//!
//! The record comes from the kernel, but its origin bytes come from the
//! packet: anything at all. Decoding reads each field at its offset in the
//! shared layout and trusts none of them; it never panics.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use cors_filter_common::{
    Method,
    event::{
        DENIAL_EVENT_SIZE, DenialEvent, DenialReason, EVENT_ORIGIN_LEN, FAMILY_IPV4, FAMILY_IPV6,
        FLAG_ORIGIN_TRUNCATED, FLAG_UNSAFE_REQUEST, FORWARDED_TOO_LONG,
    },
    proxy::ProxyClient,
    stream::{CLIENT_TEXT_LEN, header},
};

/// How an event without an origin value is shown and counted.
pub const NO_ORIGIN: &str = "(none)";
/// The label value of the origins not shown one by one.
pub const OTHER_ORIGINS: &str = "other";
/// Appended to an origin cut at [`EVENT_ORIGIN_LEN`] bytes. Not ASCII, so
/// no packet's bytes render to it (they render to ASCII escapes).
pub const TRUNCATED_MARK: char = '…';
/// Longest rendering: every byte as a 4-character escape, and the mark.
pub const MAX_RENDERED_LEN: usize = 4 * EVENT_ORIGIN_LEN + TRUNCATED_MARK.len_utf8();

/// Why the request was reported: a known reason, or a code this daemon
/// does not know (an eBPF object of another version).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    Known(DenialReason),
    Unknown(u8),
}

impl Reason {
    /// Whether the event counts in the per-origin denial counts.
    pub fn counts_per_origin(self) -> bool {
        matches!(self, Reason::Known(r) if r.counts_per_origin())
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Known(r) => f.write_str(r.name()),
            Reason::Unknown(code) => write!(f, "unknown reason {code}"),
        }
    }
}

/// Where the request came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Addr(SocketAddr),
    UnknownFamily(u8),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Addr(addr) => write!(f, "{addr}"),
            Source::UnknownFamily(family) => write!(f, "(address family {family})"),
        }
    }
}

/// What kind of request was denied, and the method judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    /// A preflight, asking for this method (`Other`: an unknown one, or an
    /// `OPTIONS` request whose head was not read whole).
    Preflight(Method),
    /// A request with this unsafe method (`protect_unsafe_methods`).
    Unsafe(Method),
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // An incomplete head, or an unknown method asked for: all that
            // is known is the request's method.
            Request::Preflight(Method::Other) => f.write_str("OPTIONS request"),
            Request::Preflight(method) => write!(f, "preflight for {}", method.name()),
            Request::Unsafe(Method::Other) => f.write_str("request with an unknown method"),
            Request::Unsafe(method) => write!(f, "{} request", method.name()),
        }
    }
}

/// A decoded denial event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// The packet's source: the client, or the proxy in front of it.
    pub source: Source,
    /// The client the connection's PROXY header named, when it named one.
    pub client: Option<Source>,
    /// The client the port's trusted header named (`client_address_header`).
    pub forwarded: Option<Forwarded>,
    pub dest_port: u16,
    pub reason: Reason,
    /// The origin, rendered (see [`render_origin`]).
    pub origin: String,
    pub request: Request,
}

impl fmt::Display for Denial {
    /// One log line: reason, client (and the proxy it came through),
    /// port, and for a request judged by its origin, origin and request.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "denial: {} from ", self.reason)?;
        if let Some(forwarded) = &self.forwarded {
            write!(f, "{forwarded} via ")?;
        }
        match &self.client {
            Some(client) => write!(f, "{client} via proxy {}", self.source)?,
            None => write!(f, "{}", self.source)?,
        }
        write!(f, " to port {}", self.dest_port)?;
        if !self.judged_by_origin() {
            return Ok(());
        }
        write!(f, ", origin \"{}\", {}", self.origin, self.request)
    }
}

impl Denial {
    /// Whether the request was judged by its origin, so that its origin
    /// and request mean something (not for HTTP/2 or a bad PROXY header,
    /// which are refused before any request is read).
    pub fn judged_by_origin(&self) -> bool {
        !matches!(
            self.reason,
            Reason::Known(DenialReason::Http2 | DenialReason::ProxyMalformed)
        )
    }
}

/// Why a record could not be decoded.
#[derive(Debug, PartialEq, Eq)]
pub struct DecodeError {
    pub len: usize,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "a denial event of {} bytes, not {DENIAL_EVENT_SIZE} (an eBPF object of another version?)",
            self.len
        )
    }
}

impl std::error::Error for DecodeError {}

fn field<const N: usize>(record: &[u8], offset: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(bytes) = record.get(offset..offset + N) {
        out.copy_from_slice(bytes);
    }
    out
}

/// Decodes one ring buffer record.
pub fn decode(record: &[u8]) -> Result<Denial, DecodeError> {
    if record.len() != DENIAL_EVENT_SIZE {
        return Err(DecodeError { len: record.len() });
    }
    let u16_at = |offset: usize| u16::from_ne_bytes(field::<2>(record, offset));
    let u8_at = |offset: usize| field::<1>(record, offset)[0];
    let source = source_of(
        u8_at(std::mem::offset_of!(DenialEvent, family)),
        field(record, std::mem::offset_of!(DenialEvent, source_addr)),
        u16_at(std::mem::offset_of!(DenialEvent, source_port)),
    );
    let client_at = std::mem::offset_of!(DenialEvent, client);
    let client = match u8_at(client_at + std::mem::offset_of!(ProxyClient, family)) {
        0 => None,
        family => Some(source_of(
            family,
            field(record, client_at + std::mem::offset_of!(ProxyClient, addr)),
            u16_at(client_at + std::mem::offset_of!(ProxyClient, port)),
        )),
    };
    let code = u8_at(std::mem::offset_of!(DenialEvent, reason));
    let reason = DenialReason::from_code(code).map_or(Reason::Unknown(code), Reason::Known);
    let flags = u8_at(std::mem::offset_of!(DenialEvent, flags));
    let method = Method::from_code(u32::from(u8_at(std::mem::offset_of!(DenialEvent, method))));
    let request = if flags & FLAG_UNSAFE_REQUEST != 0 {
        Request::Unsafe(method)
    } else {
        Request::Preflight(method)
    };
    let claimed = usize::from(u16_at(std::mem::offset_of!(DenialEvent, origin_len)));
    // A length past the buffer is clamped, and the value shown as cut.
    let origin_len = claimed.min(EVENT_ORIGIN_LEN);
    let truncated = flags & FLAG_ORIGIN_TRUNCATED != 0 || claimed > EVENT_ORIGIN_LEN;
    let origin_at = std::mem::offset_of!(DenialEvent, origin);
    let origin_bytes = record
        .get(origin_at..origin_at + origin_len)
        .unwrap_or_default();
    let forwarded_len = u8_at(std::mem::offset_of!(DenialEvent, forwarded_len));
    let forwarded_at = std::mem::offset_of!(DenialEvent, forwarded);
    let forwarded = match u8_at(std::mem::offset_of!(DenialEvent, forwarded_header)) {
        0 => None,
        code => {
            let header = match u32::from(code) {
                header::X_FORWARDED_FOR => "x-forwarded-for",
                header::FORWARDED => "forwarded",
                _ => "an unknown header",
            };
            let text = match forwarded_len {
                FORWARDED_TOO_LONG => None,
                len => {
                    record.get(forwarded_at..forwarded_at + usize::from(len).min(CLIENT_TEXT_LEN))
                }
            };
            Some(Forwarded {
                header,
                client: text.and_then(|t| forwarded_client(u32::from(code), t)),
            })
        }
    };
    Ok(Denial {
        source,
        client,
        forwarded,
        dest_port: u16_at(std::mem::offset_of!(DenialEvent, dest_port)),
        reason,
        origin: render_origin(origin_bytes, truncated),
        request,
    })
}

/// The client a trusted header named, by its last element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forwarded {
    /// `x-forwarded-for` or `forwarded`.
    pub header: &'static str,
    /// `None`: the element was no address (`unknown`, an obfuscated name,
    /// too long, or none at all).
    pub client: Option<ForwardedClient>,
}

/// An address, with the port where the element gave one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardedClient {
    Addr(SocketAddr),
    Ip(IpAddr),
}

impl fmt::Display for ForwardedClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForwardedClient::Addr(a) => write!(f, "{a}"),
            ForwardedClient::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

impl fmt::Display for Forwarded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.client {
            Some(client) => write!(f, "{client} (by {})", self.header),
            None => write!(f, "an unreadable client (by {})", self.header),
        }
    }
}

/// The address in the last element of a trusted header: `X-Forwarded-For`'s
/// (an address, maybe with a port) or `Forwarded`'s `for=` parameter
/// (RFC 7239: maybe quoted, IPv6 in brackets).
pub fn forwarded_client(header_code: u32, text: &[u8]) -> Option<ForwardedClient> {
    // The kernel keeps the bytes as sent: the line's `\r` may end them.
    let text = std::str::from_utf8(text)
        .ok()?
        .trim_matches([' ', '\t', '\r']);
    let node = if header_code == header::FORWARDED {
        let value = text.split(';').find_map(|param| {
            let (name, value) = param.trim_matches([' ', '\t']).split_once('=')?;
            name.eq_ignore_ascii_case("for").then_some(value)
        })?;
        value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value)
    } else {
        text
    };
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(ForwardedClient::Addr(addr));
    }
    let bare = node
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(node);
    bare.parse::<IpAddr>().ok().map(ForwardedClient::Ip)
}

/// An address of `family` (`FAMILY_IPV4`: in the first 4 bytes of
/// `address`) and a port.
fn source_of(family: u8, address: [u8; 16], port: u16) -> Source {
    match family {
        FAMILY_IPV4 => {
            let [a, b, c, d, ..] = address;
            Source::Addr(SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), port))
        }
        FAMILY_IPV6 => Source::Addr(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(address)), port)),
        other => Source::UnknownFamily(other),
    }
}

/// Renders origin bytes from a packet as printable ASCII: printable bytes
/// as they are, except `\` as `\\` and `"` as `\"`; every other byte as
/// `\xNN`. A cut value ends in [`TRUNCATED_MARK`]; no value is
/// [`NO_ORIGIN`]. A value that would render as one of the reserved names
/// ([`NO_ORIGIN`], [`OTHER_ORIGINS`]) has its first byte escaped, so no
/// packet can put its count under theirs. Distinct values render
/// distinctly.
pub fn render_origin(bytes: &[u8], truncated: bool) -> String {
    if bytes.is_empty() && !truncated {
        return NO_ORIGIN.to_owned();
    }
    let mut out = String::with_capacity(bytes.len() + 4);
    let reserved =
        !truncated && (bytes == NO_ORIGIN.as_bytes() || bytes == OTHER_ORIGINS.as_bytes());
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            _ if reserved && i == 0 => out.push_str(&format!("\\x{b:02x}")),
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    if truncated {
        out.push(TRUNCATED_MARK);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(event: &DenialEvent) -> Vec<u8> {
        // SAFETY: `DenialEvent` is `repr(C)` plain data without padding
        // (asserted in the common crate); all its bytes are initialised.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                (event as *const DenialEvent).cast::<u8>(),
                DENIAL_EVENT_SIZE,
            )
        };
        bytes.to_vec()
    }

    fn event(origin: &[u8]) -> DenialEvent {
        let mut e = DenialEvent {
            source_addr: [0; 16],
            source_port: 43210,
            dest_port: 8080,
            origin_len: origin.len().min(EVENT_ORIGIN_LEN) as u16,
            family: FAMILY_IPV4,
            reason: DenialReason::NotAllowed as u8,
            flags: if origin.len() > EVENT_ORIGIN_LEN {
                FLAG_ORIGIN_TRUNCATED
            } else {
                0
            },
            method: Method::Put as u8,
            reserved: [0; 6],
            origin: [0xee; EVENT_ORIGIN_LEN],
            client: ProxyClient::default(),
            forwarded_len: 0,
            forwarded_header: 0,
            reserved2: [0; 6],
            forwarded: [0xee; CLIENT_TEXT_LEN],
        };
        e.source_addr[..4].copy_from_slice(&[198, 18, 0, 1]);
        let n = origin.len().min(EVENT_ORIGIN_LEN);
        e.origin[..n].copy_from_slice(&origin[..n]);
        e
    }

    #[test]
    fn decodes_an_ipv4_denial() {
        let d = decode(&record(&event(b"https://evil.example"))).unwrap();
        assert_eq!(d.source, Source::Addr("198.18.0.1:43210".parse().unwrap()));
        assert_eq!(d.dest_port, 8080);
        assert_eq!(d.reason, Reason::Known(DenialReason::NotAllowed));
        assert_eq!(d.origin, "https://evil.example");
        assert_eq!(
            d.to_string(),
            "denial: origin not allowed from 198.18.0.1:43210 to port 8080, origin \"https://evil.example\", preflight for PUT"
        );
    }

    #[test]
    fn names_the_client_a_proxy_header_named() {
        let mut e = event(b"https://evil.example");
        e.client.family = FAMILY_IPV6;
        e.client.addr = "2001:db8::7".parse::<Ipv6Addr>().unwrap().octets();
        e.client.port = 51234;
        let d = decode(&record(&e)).unwrap();
        assert_eq!(
            d.client,
            Some(Source::Addr("[2001:db8::7]:51234".parse().unwrap()))
        );
        assert_eq!(
            d.to_string(),
            "denial: origin not allowed from [2001:db8::7]:51234 via proxy 198.18.0.1:43210 to port 8080, origin \"https://evil.example\", preflight for PUT"
        );
        e.reason = DenialReason::Http2 as u8;
        e.client.family = 0;
        assert_eq!(
            decode(&record(&e)).unwrap().to_string(),
            "denial: HTTP/2 on an inspected port from 198.18.0.1:43210 to port 8080"
        );
    }

    #[test]
    fn names_the_client_a_trusted_header_named() {
        let mut e = event(b"https://evil.example");
        for (code, text, shown) in [
            (
                header::X_FORWARDED_FOR,
                &b" 203.0.113.7\r"[..],
                Some("203.0.113.7"),
            ),
            (
                header::X_FORWARDED_FOR,
                b"[2001:db8::7]:443",
                Some("[2001:db8::7]:443"),
            ),
            (header::X_FORWARDED_FOR, b"2001:db8::7", Some("2001:db8::7")),
            (header::X_FORWARDED_FOR, b"unknown", None),
            (
                header::FORWARDED,
                b" for=203.0.113.7;proto=https",
                Some("203.0.113.7"),
            ),
            (
                header::FORWARDED,
                b"proto=https;For=\"[2001:db8::7]:4711\"",
                Some("[2001:db8::7]:4711"),
            ),
            (header::FORWARDED, b"for=_hidden", None),
            (header::FORWARDED, b"by=203.0.113.7", None),
        ] {
            e.forwarded_header = code as u8;
            e.forwarded_len = text.len() as u8;
            e.forwarded[..text.len()].copy_from_slice(text);
            let d = decode(&record(&e)).unwrap();
            let f = d.forwarded.clone().expect("a trusted header");
            assert_eq!(
                f.client.map(|c| c.to_string()).as_deref(),
                shown,
                "{text:?}"
            );
            assert!(d.to_string().contains(" via 198.18.0.1:43210 "), "{d}");
        }
        e.forwarded_header = header::X_FORWARDED_FOR as u8;
        e.forwarded_len = FORWARDED_TOO_LONG;
        assert_eq!(decode(&record(&e)).unwrap().forwarded.unwrap().client, None);
        e.forwarded_header = 0;
        assert_eq!(decode(&record(&e)).unwrap().forwarded, None);
    }

    #[test]
    fn names_the_unsafe_request_and_its_method() {
        let mut e = event(b"https://evil.example");
        e.flags |= FLAG_UNSAFE_REQUEST;
        e.method = Method::Post as u8;
        let d = decode(&record(&e)).unwrap();
        assert_eq!(d.request, Request::Unsafe(Method::Post));
        assert!(d.to_string().ends_with(", POST request"), "{d}");
        e.method = 200;
        let d = decode(&record(&e)).unwrap();
        assert!(
            d.to_string().ends_with(", request with an unknown method"),
            "{d}"
        );
        e.reason = DenialReason::CrossSiteNoOrigin as u8;
        e.origin_len = 0;
        e.method = Method::Delete as u8;
        let d = decode(&record(&e)).unwrap();
        assert_eq!(
            d.to_string(),
            "denial: cross-site request without origin from 198.18.0.1:43210 to port 8080, origin \"(none)\", DELETE request"
        );
    }

    #[test]
    fn decodes_an_ipv6_malformed_denial_with_odd_bytes() {
        let mut e = event(b"https://a\"b\\c\xff\x01");
        e.family = FAMILY_IPV6;
        e.source_addr = "fd00:c0f::1".parse::<Ipv6Addr>().unwrap().octets();
        e.reason = DenialReason::Malformed as u8;
        let d = decode(&record(&e)).unwrap();
        assert_eq!(d.source.to_string(), "[fd00:c0f::1]:43210");
        assert_eq!(d.origin, r#"https://a\"b\\c\xff\x01"#);
        assert!(d.reason.counts_per_origin());
    }

    #[test]
    fn long_origins_are_cut_and_marked() {
        let long = format!("https://{}.example", "a".repeat(200));
        let d = decode(&record(&event(long.as_bytes()))).unwrap();
        assert_eq!(d.origin, format!("{}…", &long[..EVENT_ORIGIN_LEN]));
        // A length the buffer cannot hold is clamped and shown as cut.
        let mut e = event(b"https://a.example");
        e.origin_len = 5000;
        let d = decode(&record(&e)).unwrap();
        assert!(
            d.origin.starts_with(r"https://a.example\xee\xee"),
            "{}",
            d.origin
        );
        assert!(d.origin.ends_with(TRUNCATED_MARK));
        assert_eq!(d.origin.matches(r"\xee").count(), EVENT_ORIGIN_LEN - 17);
    }

    #[test]
    fn reserved_names_cannot_be_forged() {
        assert_eq!(render_origin(b"", false), NO_ORIGIN);
        assert_eq!(render_origin(b"other", false), r"\x6fther");
        assert_eq!(render_origin(b"(none)", false), r"\x28none)");
        assert_eq!(render_origin(b"other", true), "other…");
        assert_eq!(render_origin(b"", true), "…");
        assert_eq!(render_origin(b"others", false), "others");
    }

    #[test]
    fn unknown_codes_are_shown_not_trusted() {
        let mut e = event(b"");
        e.family = 9;
        e.reason = 77;
        let d = decode(&record(&e)).unwrap();
        assert_eq!(d.source, Source::UnknownFamily(9));
        assert_eq!(d.reason, Reason::Unknown(77));
        assert!(!d.reason.counts_per_origin());
        assert_eq!(d.origin, NO_ORIGIN);
        assert!(d.to_string().contains("unknown reason 77"));
    }

    /// A small deterministic generator (xorshift), for arbitrary records.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_render_safely() {
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..2 * DENIAL_EVENT_SIZE {
            let bytes: Vec<u8> = (0..len).map(|_| next(&mut rng) as u8).collect();
            match decode(&bytes) {
                Ok(_) => assert_eq!(len, DENIAL_EVENT_SIZE),
                Err(e) => assert_eq!(e.len, len),
            }
        }
        for _ in 0..20_000 {
            let bytes: Vec<u8> = (0..DENIAL_EVENT_SIZE)
                .map(|_| next(&mut rng) as u8)
                .collect();
            let d = decode(&bytes).unwrap();
            assert!(d.origin.len() <= MAX_RENDERED_LEN, "{}", d.origin);
            let body = d.origin.strip_suffix(TRUNCATED_MARK).unwrap_or(&d.origin);
            assert!(
                body.bytes().all(|b| (0x20..=0x7e).contains(&b)),
                "{:?}",
                d.origin
            );
            assert!(!d.origin.contains('\n'));
        }
    }

    #[test]
    fn distinct_values_render_distinctly() {
        let values: [&[u8]; 7] = [
            b"a\\x41",
            b"a\x41",
            b"a\\\x41",
            b"a\"",
            b"a\\\"",
            b"other",
            b"\\x6fther",
        ];
        let rendered: std::collections::HashSet<String> =
            values.iter().map(|v| render_origin(v, false)).collect();
        assert_eq!(rendered.len(), values.len(), "{rendered:?}");
    }
}
