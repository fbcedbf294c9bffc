//! A seeded generator of whole connections for the stream differential:
//! keep-alive sequences of requests (safe ones, preflights, unsafe ones
//! with `Content-Length` and chunked bodies), with lenient request lines,
//! random header-name case, long targets, many and long header lines, and
//! bodies holding what looks like a request. The same seed gives the same
//! connections.

use crate::oracles::generate::{self, Rng, random_case};

/// The origins the connections are judged against (any method).
pub const ALLOWED: [&str; 2] = ["https://app.example.com", "http://localhost:8080"];

/// A preflight the allowlist refuses, and an unsafe request it refuses: what
/// a body may hold.
const EVIL_PREFLIGHT: &str = "OPTIONS /admin HTTP/1.1\r\nOrigin: https://evil.example\r\nAccess-Control-Request-Method: DELETE\r\n\r\n";
const EVIL_UNSAFE: &str =
    "POST /transfer HTTP/1.1\r\nOrigin: https://evil.example\r\nContent-Length: 5\r\n\r\nx=1\r\n";

/// One generated connection: its client's byte stream, and whether its
/// port protects unsafe methods.
pub struct Connection {
    pub bytes: Vec<u8>,
    pub protects_unsafe: bool,
}

/// A connection of 1 to 6 requests.
pub fn connection(rng: &mut Rng) -> Connection {
    let protects_unsafe = rng.one_in(2);
    let mut bytes = Vec::new();
    if rng.one_in(4) {
        proxy_header(rng, &mut bytes);
    }
    for _ in 0..1 + rng.below(6) {
        if rng.one_in(40) {
            http2_start(rng, &mut bytes);
        } else {
            request(rng, &mut bytes);
        }
    }
    if rng.one_in(25) {
        // Cut short: the connection ends inside its last request.
        let cut = 1 + rng.below(bytes.len().min(60));
        bytes.truncate(bytes.len() - cut);
    }
    Connection {
        bytes,
        protects_unsafe,
    }
}

/// A PROXY protocol header as proxies write it (v1: TCP4, TCP6, UNKNOWN;
/// v2: TCP4, TCP6, LOCAL, UNSPEC, with TLVs), now and then with a byte
/// changed, added or taken out.
fn proxy_header(rng: &mut Rng, out: &mut Vec<u8>) {
    let mut header = match rng.below(7) {
        0 => format!(
            "PROXY TCP4 192.0.2.{} 198.51.100.1 {} 8080\r\n",
            rng.below(256),
            1 + rng.below(65535)
        )
        .into_bytes(),
        1 => format!(
            "PROXY TCP6 2001:db8::{:x} ::ffff:198.51.100.1 {} 443\r\n",
            rng.below(65536),
            rng.below(65536)
        )
        .into_bytes(),
        2 => b"PROXY UNKNOWN\r\n".to_vec(),
        _ => {
            const KINDS: [(u8, u8, usize); 4] = [
                (0x21, 0x11, 12),
                (0x21, 0x21, 36),
                (0x20, 0x00, 0),
                (0x21, 0x00, 0),
            ];
            let (command, family, addresses) = KINDS[rng.below(KINDS.len())];
            let tlvs = rng.below(3) * (3 + rng.below(20));
            let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
            h.extend([command, family]);
            h.extend(((addresses + tlvs) as u16).to_be_bytes());
            h.extend((0..addresses + tlvs).map(|_| rng.below(256) as u8));
            h
        }
    };
    if rng.one_in(8) {
        let at = rng.below(header.len());
        match rng.below(3) {
            0 => header[at] = rng.below(256) as u8,
            1 => {
                header.remove(at);
            }
            _ => {
                let bytes = b" \r\n:.0PX\x21";
                header.insert(at, bytes[rng.below(bytes.len())]);
            }
        }
    }
    out.extend(header);
}

/// HTTP/2 on the connection: its preface (prior knowledge), or a request
/// asking to upgrade to it.
fn http2_start(rng: &mut Rng, out: &mut Vec<u8>) {
    if rng.one_in(2) {
        out.extend_from_slice(
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00",
        );
    } else {
        let upgrade = rng.pick(&["h2c", "H2C", "websocket, h2c", "xh2cx"]);
        out.extend_from_slice(
            format!("GET /h2 HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: {upgrade}\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n")
                .as_bytes(),
        );
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Safe,
    Preflight,
    PlainOptions,
    UnsafeLength,
    UnsafeChunked,
    UnsafeNoBody,
}

/// An `Origin` value: allowed ones (as sent, or in other spellings of the
/// same origin), refused ones, and the generator's variations around its
/// own allowlist (mostly refused here, some malformed).
fn origin(rng: &mut Rng) -> String {
    let allowed = ALLOWED[rng.below(ALLOWED.len())];
    match rng.below(16) {
        0..=4 => allowed.to_owned(),
        5 => random_case(rng, allowed),
        6 => {
            if allowed.starts_with("https") {
                format!("{allowed}:443")
            } else {
                allowed.replace("localhost", "LocalHost")
            }
        }
        7 | 8 => rng
            .pick(&[
                "https://evil.example",
                "http://app.example.com",
                "https://app.example.com.evil.net",
                "null",
            ])
            .to_owned(),
        9..=12 => generate::origin(rng),
        13 => format!("https://{}.example.com", "a".repeat(240 + rng.below(40))),
        14 => format!("{allowed}/"),
        _ => String::new(),
    }
}

const FILLERS: &[&str] = &[
    "Host: api.example.com",
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Accept: */*",
    "Accept-Language: en-US,en;q=0.5",
    "Accept-Encoding: gzip, deflate, br",
    "Access-Control-Request-Headers: content-type,x-token",
    "Referer: https://app.example.com/page",
    "Sec-Fetch-Mode: cors",
    "Connection: keep-alive",
    "X-Origin: https://evil.example",
    "Origins: https://evil.example",
    "Access-Control-Request-Methods: GET",
    "Content-Lengthy: 12",
    "Transfer-Encodings: chunked",
    "X-Empty:",
];

const REQUESTED: &[&str] = &[
    "PUT",
    "DELETE",
    "POST",
    "GET",
    "PATCH",
    "",
    "put",
    "PUT, DELETE",
    "PUT x",
    "X-CUSTOM",
];
const FETCH_SITES: &[&str] = &[
    "cross-site",
    "cross-site",
    "same-origin",
    "same-site",
    "none",
    "CROSS-SITE",
    "cross-site x",
    "cross-sites",
];
const OWS: &[&str] = &["", " ", " ", "  ", "\t"];

fn name(rng: &mut Rng, name: &str) -> String {
    if rng.one_in(3) {
        random_case(rng, name)
    } else {
        name.to_owned()
    }
}

/// A body: text, and now and then what looks like requests, chunk ends and
/// blank lines.
fn body(rng: &mut Rng) -> Vec<u8> {
    let mut body = Vec::new();
    for _ in 0..rng.below(5) {
        match rng.below(9) {
            0 | 1 => body.extend_from_slice(EVIL_PREFLIGHT.as_bytes()),
            2 => body.extend_from_slice(EVIL_UNSAFE.as_bytes()),
            3 => body.extend_from_slice(b"0\r\n\r\n"),
            4 => body.extend_from_slice(b"\r\n\r\n"),
            5 if rng.one_in(8) => body.extend(std::iter::repeat_n(b'b', 1500 + rng.below(4000))),
            6 => body.extend_from_slice(b"{\"to\":\"mallory\",\"amount\":1000}"),
            _ => {
                let n = rng.below(200);
                body.extend((0..n).map(|_| b"abc xyz=&\r\n:"[rng.below(12)]));
            }
        }
    }
    body
}

/// `data` framed as chunks, with extensions and trailers.
fn chunked(rng: &mut Rng, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0;
    let ext = |rng: &mut Rng| -> &'static str {
        match rng.below(8) {
            0 => ";ext=1",
            1 => ";name=\"v a l\"",
            2 => " ;x",
            3 => ";Origin=https://evil.example",
            _ => "",
        }
    };
    while at < data.len() {
        let n = (1 + rng.below(data.len() - at)).min(data.len() - at);
        let size = if rng.one_in(3) {
            format!("{n:X}")
        } else if rng.one_in(8) {
            format!("00{n:x}")
        } else {
            format!("{n:x}")
        };
        out.extend_from_slice(size.as_bytes());
        out.extend_from_slice(ext(rng).as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&data[at..at + n]);
        out.extend_from_slice(b"\r\n");
        at += n;
    }
    out.extend_from_slice(b"0");
    out.extend_from_slice(ext(rng).as_bytes());
    out.extend_from_slice(b"\r\n");
    for _ in 0..if rng.one_in(4) { 1 + rng.below(2) } else { 0 } {
        out.extend_from_slice(
            rng.pick(&[
                "X-Trailer: v\r\n",
                "Origin: https://evil.example\r\n",
                "OPTIONS / HTTP/1.1\r\n",
            ])
            .as_bytes(),
        );
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// Appends one request to `out`.
fn request(rng: &mut Rng, out: &mut Vec<u8>) {
    let kind = match rng.below(20) {
        0..=4 => Kind::Safe,
        5..=9 => Kind::Preflight,
        10 => Kind::PlainOptions,
        11..=14 => Kind::UnsafeLength,
        15..=17 => Kind::UnsafeChunked,
        _ => Kind::UnsafeNoBody,
    };
    let method = match kind {
        // Another protocol after it: nothing is expected past it.
        Kind::Safe | Kind::UnsafeNoBody if rng.one_in(100) => "CONNECT",
        Kind::Safe => rng.pick(&["GET", "GET", "HEAD", "TRACE"]),
        Kind::Preflight | Kind::PlainOptions => "OPTIONS",
        _ => rng.pick(&["POST", "POST", "PUT", "PATCH", "DELETE", "post", "PROPFIND"]),
    };
    let eol = if rng.one_in(8) { "\n" } else { "\r\n" };
    if rng.one_in(12) {
        out.extend_from_slice(
            rng.pick(&["\r\n", "\n", "\r\n\r\n", " ", "\t", "\r"])
                .as_bytes(),
        );
    }
    let sep = |rng: &mut Rng| {
        if rng.one_in(12) {
            rng.pick(&["\t", "  ", " \t"])
        } else {
            " "
        }
    };
    let target = if rng.one_in(10) {
        let n = 10 + rng.below(4080);
        format!(
            "/search?q={}",
            (0..n)
                .map(|i| (b'a' + (i % 26) as u8) as char)
                .collect::<String>()
        )
    } else {
        rng.pick(&["/", "/api/v1/items", "*", "/a?b=c", "/x%20y"])
            .to_owned()
    };
    let version = if rng.one_in(12) {
        rng.pick(&["HTTP/1.0", "HTTP/1.11", "HTTP/01.1"])
    } else {
        "HTTP/1.1"
    };
    let trailing = if rng.one_in(15) {
        rng.pick(&[" ", "\t", "  "])
    } else {
        ""
    };
    let request_line = format!(
        "{method}{}{target}{}{version}{trailing}{eol}",
        sep(rng),
        sep(rng)
    );

    let mut lines: Vec<String> = vec![format!("{}: api.example.com", name(rng, "Host"))];
    let fillers = match rng.below(40) {
        0 => 90 + rng.below(20),
        1..=4 => rng.below(30),
        _ => rng.below(6),
    };
    for _ in 0..fillers {
        let filler = rng.pick(FILLERS);
        lines.push(if rng.one_in(4) {
            random_case(rng, filler)
        } else {
            filler.to_owned()
        });
    }
    if rng.one_in(100) {
        lines.push(format!("{}: websocket", name(rng, "Upgrade")));
    }
    if rng.one_in(40) {
        let n = 500 + rng.below(17_000);
        lines.push(format!("Cookie: session={}", "c".repeat(n)));
    }
    let insert = |rng: &mut Rng, lines: &mut Vec<String>, line: String| {
        let at = rng.below(lines.len() + 1);
        lines.insert(at, line);
    };
    let origins = match kind {
        Kind::Preflight if rng.one_in(15) => 2,
        Kind::Preflight if rng.one_in(12) => 0,
        Kind::Preflight => 1,
        Kind::PlainOptions | Kind::Safe => rng.below(2),
        _ if rng.one_in(20) => 2,
        _ if rng.one_in(4) => 0,
        _ => 1,
    };
    for _ in 0..origins {
        let line = format!(
            "{}:{}{}{}",
            name(rng, "Origin"),
            rng.pick(OWS),
            origin(rng),
            rng.pick(OWS)
        );
        insert(rng, &mut lines, line);
    }
    if kind == Kind::Preflight || rng.one_in(30) {
        for _ in 0..if rng.one_in(12) { 2 } else { 1 } {
            let line = format!(
                "{}:{}{}",
                name(rng, "Access-Control-Request-Method"),
                rng.pick(OWS),
                rng.pick(REQUESTED)
            );
            insert(rng, &mut lines, line);
        }
    }
    if kind != Kind::Preflight && rng.one_in(2) {
        let line = format!(
            "{}:{}{}",
            name(rng, "Sec-Fetch-Site"),
            rng.pick(OWS),
            rng.pick(FETCH_SITES)
        );
        insert(rng, &mut lines, line);
    }
    let body = match kind {
        Kind::UnsafeLength | Kind::UnsafeChunked => body(rng),
        Kind::Safe if rng.one_in(10) => body(rng),
        _ => Vec::new(),
    };
    let framed = if kind == Kind::UnsafeChunked {
        lines.push(format!(
            "{}: {}",
            name(rng, "Transfer-Encoding"),
            rng.pick(&["chunked", "Chunked", "gzip, chunked", "chunked "])
        ));
        chunked(rng, &body)
    } else if !body.is_empty() || (kind == Kind::UnsafeLength) {
        lines.push(format!(
            "{}:{}{}",
            name(rng, "Content-Length"),
            rng.pick(OWS),
            body.len()
        ));
        body
    } else {
        Vec::new()
    };
    let mut head = request_line;
    for line in &lines {
        head.push_str(line);
        head.push_str(eol);
    }
    let judged_kind = kind != Kind::Safe;
    if judged_kind && rng.one_in(50) {
        // Around the connection tracking's bounds: the head's length, or its
        // header lines.
        if rng.one_in(2) {
            let target =
                cors_filter_common::stream::DEFAULT_MAX_HEAD_BYTES as usize - 2 + rng.below(5);
            let fixed = head.len() + "X-Pad: ".len() + 2 * eol.len();
            if target > fixed {
                head.push_str(&format!("X-Pad: {}{eol}", "p".repeat(target - fixed)));
            }
        } else {
            let max = cors_filter_common::stream::MAX_HEAD_LINES as usize;
            for i in lines.len()..max - 1 + rng.below(4) {
                head.push_str(&format!("X-{i}: v{eol}"));
            }
        }
    }
    head.push_str(eol);
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(&framed);
}
