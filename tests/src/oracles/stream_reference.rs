//! The reference the connection tracking (`cors_filter_common::stream`) is
//! compared with: a whole connection's byte stream, split into requests the
//! way a careful server does, written without the filter's parser.
//!
//! - Requests are read one after the other. Before a request line, the
//!   whitespace servers skip is skipped (the widest set, Python's
//!   `str.split` on Latin-1); the method is the first token, ended by any
//!   of that whitespace; the rest of the request line is not checked (a
//!   server that refuses it acts on nothing). A method that is not a
//!   token, or a line with no target, is a request no server runs.
//! - The header lines are parsed by `httparse` (`parse_headers`); a head it
//!   refuses is a request a server answers with 400 and closes on: nothing
//!   is expected of it nor of anything after it.
//! - The body is framed here: `Transfer-Encoding` whose last coding is
//!   `chunked` (chunk sizes, extensions, data, trailers decoded here), else
//!   `Content-Length` (every value digits, all equal). Framing a server
//!   refuses, or both headers (which servers read differently), ends what
//!   is expected of the connection, as does a protocol switch (`CONNECT`,
//!   `Upgrade`) after its head (the filter stops following there).
//! - Each head is judged with [`reference`](crate::oracles::reference)'s rules
//!   ([`Head::expected`]): a preflight is `OPTIONS` with
//!   `Origin` and `Access-Control-Request-Method`; an unsafe request is a
//!   method not in [`SAFE_METHODS`] to a port that protects them; the
//!   `Origin` is matched by the reference's rules ([`Head::expected`],
//!   [`Allowlist`]).
//! - The connection tracking's bounds: a head the method makes judged
//!   (`OPTIONS`, or an unsafe method on a protecting port) longer than
//!   [`DEFAULT_MAX_HEAD_BYTES`] (from the method's first byte to the blank
//!   line's `\n`), or with more than [`MAX_HEAD_LINES`] header lines, is
//!   incomplete; an `Origin` value (from its first byte that is no blank to
//!   the line's `\n`) longer than [`ORIGIN_RAW_LEN`] is malformed.
//! - The reading stops after the first request that is refused.

use cors_filter_common::{
    http::is_tchar,
    origin::ORIGIN_RAW_LEN,
    stream::{DEFAULT_MAX_HEAD_BYTES, MAX_HEAD_LINES},
};

use crate::oracles::reference::{Allowlist, Expected, Head, SAFE_METHODS, method_name};

/// One request of the stream, as the reference reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Offset of the method's first byte.
    pub start: usize,
    /// Offset just past the head (its blank line's `\n`).
    pub head_end: usize,
    /// Offset just past the body (`head_end` without one). For a refused
    /// request, `head_end`.
    pub end: usize,
    /// The body's data: `head_end..end` for a `Content-Length` body, each
    /// chunk's data for a chunked one (framing, chunk ends and trailers
    /// between them). Empty without a body.
    pub data: Vec<(usize, usize)>,
    pub expected: Expected,
}

impl Request {
    /// Whether the filter must refuse the request (dropped: enforcing, and
    /// incomplete heads dropped).
    pub fn refused(&self) -> bool {
        self.expected.is_denial()
            || matches!(
                self.expected,
                Expected::Incomplete
                    | Expected::UnsafeIncomplete
                    | Expected::Http2
                    | Expected::ProxyMalformed
            )
    }
}

/// What the reference makes of a connection's stream.
#[derive(Clone, Debug, Default)]
pub struct Reading {
    /// The requests read, up to the first refused one (included).
    pub requests: Vec<Request>,
    /// Where nothing more is expected, and why: a request no server runs,
    /// a protocol switch, a stream cut short.
    pub stop: Option<(usize, &'static str)>,
    /// The TLVs of a version 2 PROXY header: bytes no server reads as
    /// requests, as a body's.
    pub proxy_tlvs: Option<(usize, usize)>,
}

/// Whitespace skipped before a request line and ending a method token.
pub fn is_request_space(b: u8) -> bool {
    matches!(
        b,
        b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0x1c..=0x1f | b' ' | 0x85 | 0xa0
    )
}

fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_blanks(mut v: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = v
        && is_blank(*first)
    {
        v = rest;
    }
    while let [rest @ .., last] = v
        && (is_blank(*last) || *last == b'\r')
    {
        v = rest;
    }
    v
}

/// Reads the requests of `bytes`, a connection's stream from its first
/// byte, to a port that protects unsafe methods (`protects_unsafe`) or not.
pub fn read_stream(bytes: &[u8], protects_unsafe: bool, allowlist: &Allowlist) -> Reading {
    read_stream_bounded(
        bytes,
        protects_unsafe,
        allowlist,
        DEFAULT_MAX_HEAD_BYTES as usize,
    )
}

/// [`read_stream`] with another bound on judged heads' bytes.
pub fn read_stream_bounded(
    bytes: &[u8],
    protects_unsafe: bool,
    allowlist: &Allowlist,
    max_head_bytes: usize,
) -> Reading {
    let mut reading = Reading::default();
    let mut at = match proxy_header(bytes) {
        ProxyHeader::None => 0,
        ProxyHeader::Whole { len, tlvs_from } => {
            if tlvs_from < len {
                reading.proxy_tlvs = Some((tlvs_from, len));
            }
            len
        }
        ProxyHeader::CutShort => {
            reading.stop = Some((0, "cut short in a PROXY header"));
            return reading;
        }
        ProxyHeader::Malformed(decided) => {
            // Refused at the byte that shows it: the server closes there.
            reading.requests.push(Request {
                start: 0,
                head_end: decided + 1,
                end: decided + 1,
                data: Vec::new(),
                expected: Expected::ProxyMalformed,
            });
            return reading;
        }
    };
    loop {
        while at < bytes.len() && is_request_space(bytes[at]) {
            at += 1;
        }
        if at == bytes.len() {
            return reading;
        }
        match read_request(bytes, at, protects_unsafe, allowlist, max_head_bytes) {
            Err(why) => {
                reading.stop = Some((at, why));
                return reading;
            }
            Ok((request, switches)) => {
                let refused = request.refused();
                let head_end = request.head_end;
                at = request.end;
                reading.requests.push(request);
                if refused {
                    return reading;
                }
                if switches {
                    // Servers switch after the request, body included, if
                    // they do; the filter stops following at the head.
                    reading.stop = Some((head_end, "protocol switch"));
                    return reading;
                }
            }
        }
    }
}

/// What a connection's first bytes are, as nginx and HAProxy read a PROXY
/// protocol header (the stricter of them where they differ).
enum ProxyHeader {
    /// No header: the stream starts with requests.
    None,
    /// A header of `len` bytes, a version 2 header's TLVs (from
    /// `tlvs_from`) included.
    Whole { len: usize, tlvs_from: usize },
    /// A header the stream ends in.
    CutShort,
    /// A header servers refuse, seen to be one at this byte.
    Malformed(usize),
}

const PROXY_V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

fn proxy_header(bytes: &[u8]) -> ProxyHeader {
    if bytes.first() == Some(&b'P') {
        let prefix = b"PROXY ";
        let n = bytes.len().min(prefix.len());
        if bytes[..n] != prefix[..n] {
            return ProxyHeader::None;
        }
        // The line: up to its first `\r\n`, within 107 bytes.
        for i in prefix.len()..bytes.len().min(107) {
            if bytes[i] == b'\n' {
                if bytes[i - 1] != b'\r' {
                    return ProxyHeader::Malformed(i);
                }
                let text = &bytes[prefix.len()..i - 1];
                return if proxy_v1_valid(text) {
                    ProxyHeader::Whole {
                        len: i + 1,
                        tlvs_from: i + 1,
                    }
                } else {
                    ProxyHeader::Malformed(i)
                };
            }
            if bytes[i - 1] == b'\r' || i == 106 {
                return ProxyHeader::Malformed(i);
            }
        }
        return ProxyHeader::CutShort;
    }
    if bytes.first() != Some(&b'\r') {
        return ProxyHeader::None;
    }
    for (i, (&b, &s)) in bytes.iter().zip(PROXY_V2_SIGNATURE).enumerate() {
        if b != s {
            // `\r\n\r\n` at most: whitespace before a request.
            return if i <= 4 {
                ProxyHeader::None
            } else {
                ProxyHeader::Malformed(i)
            };
        }
    }
    if bytes.len() <= 4 {
        return ProxyHeader::None;
    }
    if bytes.len() < 13 {
        return ProxyHeader::CutShort;
    }
    let (version, command) = (bytes[12] >> 4, bytes[12] & 0x0f);
    if version != 2 || command > 1 {
        return ProxyHeader::Malformed(12);
    }
    if bytes.len() < 16 {
        return ProxyHeader::CutShort;
    }
    let length = u16::from_be_bytes([bytes[14], bytes[15]]) as usize;
    let addresses = match (command, bytes[13] >> 4) {
        (1, 1) => 12,
        (1, 2) => 36,
        _ => 0,
    };
    if length < addresses {
        return ProxyHeader::Malformed(15);
    }
    if bytes.len() < 16 + length {
        return ProxyHeader::CutShort;
    }
    ProxyHeader::Whole {
        len: 16 + length,
        tlvs_from: 16 + addresses,
    }
}

/// Whether a version 1 line's text (after `PROXY `, before `\r\n`) is one
/// servers accept.
fn proxy_v1_valid(text: &[u8]) -> bool {
    if text == b"UNKNOWN" || text.starts_with(b"UNKNOWN ") {
        return true;
    }
    let Ok(text) = std::str::from_utf8(text) else {
        return false;
    };
    let fields: Vec<&str> = text.split(' ').collect();
    let port = |p: &str| {
        (1..=5).contains(&p.len())
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u32>().is_ok_and(|v| v <= 65535)
    };
    match fields.as_slice() {
        ["TCP4", src, dst, sport, dport] => {
            src.parse::<std::net::Ipv4Addr>().is_ok()
                && dst.parse::<std::net::Ipv4Addr>().is_ok()
                && port(sport)
                && port(dport)
        }
        ["TCP6", src, dst, sport, dport] => {
            src.parse::<std::net::Ipv6Addr>().is_ok()
                && dst.parse::<std::net::Ipv6Addr>().is_ok()
                && port(sport)
                && port(dport)
        }
        _ => false,
    }
}

/// The request starting at `start`, and whether the connection switches
/// protocols after it.
fn read_request(
    bytes: &[u8],
    start: usize,
    protects_unsafe: bool,
    allowlist: &Allowlist,
    max_head_bytes: usize,
) -> Result<(Request, bool), &'static str> {
    let method_end = start
        + bytes[start..]
            .iter()
            .position(|&b| is_request_space(b))
            .ok_or("cut short in the method")?;
    let token = &bytes[start..method_end];
    if !token.iter().all(|&b| is_tchar(b)) {
        return Err("the method is not a token");
    }
    if bytes[method_end] == b'\n' {
        return Err("a request line with no target");
    }
    let line_end = method_end
        + 1
        + bytes[method_end..]
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("cut short in the request line")?;
    let mut room = [httparse::EMPTY_HEADER; 4 * MAX_HEAD_LINES as usize];
    let (head_len, headers) = match httparse::parse_headers(&bytes[line_end..], &mut room) {
        Ok(httparse::Status::Complete(done)) => done,
        Ok(httparse::Status::Partial) => return Err("cut short in the head"),
        Err(_) => return Err("httparse refuses the header lines"),
    };
    let head_end = line_end + head_len;
    let head_bytes = &bytes[start..head_end];
    let named = |name: &str| -> Vec<&[u8]> {
        headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
            .collect()
    };
    let method = std::str::from_utf8(token).unwrap_or("");
    let preflight = method == "OPTIONS";
    let unsafe_request = !SAFE_METHODS.contains(&method) && protects_unsafe;
    let judged = preflight || unsafe_request;
    let oversized = head_bytes.len() > max_head_bytes || headers.len() > MAX_HEAD_LINES as usize;
    let origins = named("origin");
    // The Origin value as the filter bounds it: from its first byte that is
    // no blank to the line's `\n`.
    let origin_raw_len = |value: &[u8]| -> usize {
        if value.is_empty() {
            return 0;
        }
        let from = value.as_ptr() as usize - bytes.as_ptr() as usize;
        bytes[from..].iter().position(|&b| b == b'\n').unwrap_or(0)
    };
    let head = if judged && oversized {
        Head::Incomplete {
            unsafe_request: !preflight,
        }
    } else if preflight {
        let requested = named("access-control-request-method");
        match (origins.as_slice(), requested.as_slice()) {
            ([], _) | (_, []) => Head::NotJudged,
            ([origin], requested) if origin_raw_len(origin) <= ORIGIN_RAW_LEN => Head::Judged {
                unsafe_request: false,
                origin: trim_blanks(origin).to_vec(),
                method: match requested {
                    [value] => trim_blanks(value)
                        .split(|&b| is_blank(b))
                        .next()
                        .and_then(method_name),
                    _ => None,
                },
            },
            _ => Head::Malformed {
                unsafe_request: false,
            },
        }
    } else if unsafe_request {
        match origins.as_slice() {
            [] if named("sec-fetch-site").iter().any(|v| {
                trim_blanks(v)
                    .split(|&b| is_blank(b))
                    .next()
                    .is_some_and(|t| t.eq_ignore_ascii_case(b"cross-site"))
            }) =>
            {
                Head::CrossSiteNoOrigin
            }
            [] => Head::NoOrigin,
            [origin] if origin_raw_len(origin) <= ORIGIN_RAW_LEN => Head::Judged {
                unsafe_request: true,
                origin: trim_blanks(origin).to_vec(),
                method: method_name(token),
            },
            _ => Head::Malformed {
                unsafe_request: true,
            },
        }
    } else {
        Head::NotJudged
    };
    let mut expected = head.expected(|origin| allowlist.allowed(origin));
    // HTTP/2 (`http2 = "drop"`): the preface's method, or an upgrade to it
    // (named anywhere in an `Upgrade` value), after the judgement.
    let http2 = method == "PRI"
        || named("upgrade")
            .iter()
            .any(|v| v.windows(3).any(|w| w.eq_ignore_ascii_case(b"h2c")));
    let refused_as_judged = Request {
        start,
        head_end,
        end: head_end,
        data: Vec::new(),
        expected,
    }
    .refused();
    if http2 && !refused_as_judged {
        expected = Expected::Http2;
    }
    let mut request = Request {
        start,
        head_end,
        end: head_end,
        data: Vec::new(),
        expected,
    };
    if request.refused() {
        return Ok((request, false));
    }
    let switches = method == "CONNECT" || !named("upgrade").is_empty();
    let codings = named("transfer-encoding");
    let lengths = named("content-length");
    request.end = if !codings.is_empty() {
        if !lengths.is_empty() {
            return Err("both Transfer-Encoding and Content-Length");
        }
        let last = codings
            .iter()
            .flat_map(|v| v.split(|&b| b == b','))
            .map(trim_blanks)
            .rfind(|c| !c.is_empty());
        if !last.is_some_and(|c| c.eq_ignore_ascii_case(b"chunked")) {
            return Err("a last transfer coding that is not chunked");
        }
        chunked_end(bytes, head_end, &mut request.data)?
    } else if let Some(first) = lengths.first() {
        let first = trim_blanks(first);
        if first.is_empty()
            || first.len() > 15
            || !first.iter().all(u8::is_ascii_digit)
            || lengths.iter().any(|v| trim_blanks(v) != first)
        {
            return Err("a Content-Length servers refuse");
        }
        let length: usize = std::str::from_utf8(first).unwrap().parse().unwrap();
        if head_end + length > bytes.len() {
            return Err("cut short in the body");
        }
        if length > 0 {
            request.data.push((head_end, head_end + length));
        }
        head_end + length
    } else {
        head_end
    };
    Ok((request, switches))
}

/// The end of a chunked body starting at `at`; each chunk's data is added
/// to `data`.
fn chunked_end(
    bytes: &[u8],
    mut at: usize,
    data: &mut Vec<(usize, usize)>,
) -> Result<usize, &'static str> {
    let line_end = |from: usize| -> Result<usize, &'static str> {
        bytes[from..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|n| from + n)
            .ok_or("cut short in a chunked body")
    };
    loop {
        let digits = bytes[at..]
            .iter()
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        if digits == 0 || digits > 12 {
            return Err("a chunk size servers refuse");
        }
        let size = usize::from_str_radix(std::str::from_utf8(&bytes[at..at + digits]).unwrap(), 16)
            .map_err(|_| "a chunk size servers refuse")?;
        at += digits;
        let nl = line_end(at)?;
        if nl > at && !matches!(bytes[at], b';' | b' ' | b'\t' | b'\r') {
            return Err("a chunk size line servers refuse");
        }
        at = nl + 1;
        if size == 0 {
            loop {
                let nl = line_end(at)?;
                let line = &bytes[at..nl];
                at = nl + 1;
                if line.is_empty() || line == b"\r" {
                    return Ok(at);
                }
            }
        }
        data.push((at, at + size));
        at += size;
        if bytes.len() < at + 1 {
            return Err("cut short in a chunked body");
        }
        if bytes[at..].starts_with(b"\r\n") {
            at += 2;
        } else if bytes[at] == b'\n' {
            at += 1;
        } else {
            return Err("chunk data not ended by a line end");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oracles::reference::Listed;

    #[test]
    fn a_stream_is_split_into_requests() {
        let list = Allowlist::new(&[Listed::any_method("https://a.example")]);
        let stream = b"\r\nPOST /x HTTP/1.1\r\nOrigin: https://a.example\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n0\r\nT: v\r\n\r\nGET / HTTP/1.11 \n\nOPTIONS / HTTP/1.1\r\nOrigin: https://b.example\r\nAccess-Control-Request-Method: PUT\r\n\r\nGET";
        let reading = read_stream(stream, true, &list);
        let expected: Vec<Expected> = reading.requests.iter().map(|r| r.expected).collect();
        assert_eq!(
            expected,
            [
                Expected::UnsafeAllowed,
                Expected::NotJudged,
                Expected::Denied
            ]
        );
        assert_eq!(reading.requests[0].start, 2);
        assert_eq!(reading.requests[1].start, reading.requests[0].end);
        assert_eq!(reading.stop, None);
        let reading = read_stream(b"PUT / HTTP/1.1\r\nContent-Length: x\r\n\r\n", false, &list);
        assert!(reading.stop.is_some());
    }
}
