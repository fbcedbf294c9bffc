//! The frames part 1 times, and the allowlists it times them with.

use anyhow::{Result, anyhow};
use cors_filter_common::Counter;
use cors_filter_tests::frames::packet::{
    DST_PORT, ETH_P_8021Q, ETH_P_ARP, IPPROTO_UDP, Packet, TCP_SYN,
};
use cors_filter_user::allow_entry::{AllowEntry, parse_entry};

/// The inspected port: the frame builder's default destination port. It
/// protects unsafe methods (CSRF mode), which changes nothing for the
/// other cases.
pub const HTTP_PORT: u16 = DST_PORT;
const ALLOWED: &str = "https://app.example.com";
const DENIED: &str = "https://evil.example";

/// `xdp_action` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpVerdict {
    Drop = 1,
    Pass = 2,
}

impl XdpVerdict {
    pub fn name(self) -> &'static str {
        match self {
            XdpVerdict::Drop => "drop",
            XdpVerdict::Pass => "pass",
        }
    }
}

/// One frame, with the verdict and the outcome counter it must get.
pub struct Case {
    pub name: String,
    pub frame: Vec<u8>,
    pub verdict: XdpVerdict,
    pub counter: Counter,
    /// Timed on the second and later runs, whose counter this is: the first
    /// run leaves connection state they find.
    pub again: Option<Counter>,
}

impl Case {
    fn new(name: &str, packet: &Packet, verdict: XdpVerdict, counter: Counter) -> Case {
        Case {
            name: name.to_owned(),
            frame: packet.build(),
            verdict,
            counter,
            again: None,
        }
    }
}

/// The cases the targets name (see `kernel::run`): traffic the filter does
/// not inspect, which every packet of a host pays for.
pub const NOT_INSPECTED: [&str; 3] = [
    "ARP (not IP)",
    "UDP, 64 bytes",
    "TCP to port 443 (not inspected)",
];
pub const GET: &str = "GET without Origin (a connection's first request)";
pub const ALLOWED_PREFLIGHT: &str = "allowed preflight (browser, 13 headers)";
pub const DENIED_PREFLIGHT: &str = "denied preflight (browser, 13 headers)";
/// The start of the names of the 40-header cases.
pub const FORTY_HEADERS: &str = "denied preflight, 40 headers";
/// Segments of `sequences()`, by their names there.
pub const GET_OPEN: &str = "GET without Origin on an open connection: the request, one segment";
pub const BODY_SEGMENT: &str = "POST with Content-Length: 100000: body segment, 1448 bytes";

/// The frame of a connection's first segment carrying `payload`: in its
/// SYN, as with TCP Fast Open. Every run then starts the connection afresh
/// (a lookup that finds it, the parse from its first byte, a store): what
/// the first data segment of a connection costs, run after run.
fn first_segment(packet: Packet) -> Packet {
    packet.tcp_flags(TCP_SYN)
}

/// A preflight as Chrome sends it: 13 header lines, about 520 bytes.
fn browser_preflight(origin: &str) -> Vec<u8> {
    crate::preflight::request(origin, "api.example.com")
}

/// A preflight of `headers` header lines (at least 3): `Host`, `Origin`
/// (first or last), `Access-Control-Request-Method` and short fillers.
fn preflight_with(origin: &str, headers: usize, origin_first: bool) -> Vec<u8> {
    let mut lines = vec![
        "Host: api.example.com".to_owned(),
        "Access-Control-Request-Method: PUT".to_owned(),
    ];
    lines.extend((0..headers - 3).map(|i| format!("X-Header-{i:02}: value-{i:02}")));
    let origin = format!("Origin: {origin}");
    if origin_first {
        lines.insert(0, origin);
    } else {
        lines.push(origin);
    }
    format!("OPTIONS /api HTTP/1.1\r\n{}\r\n\r\n", lines.join("\r\n")).into_bytes()
}

/// A cross-site form `POST` as Chrome sends it: 17 header lines with
/// `Origin` sixth and a cookie last, about 800 bytes, and its body.
fn browser_form_post(origin: Option<&str>) -> Vec<u8> {
    let body = "to=attacker&amount=1000";
    let origin_line = origin.map_or(String::new(), |o| format!("Origin: {o}\r\n"));
    let referer = origin.unwrap_or("https://evil.example");
    format!(
        "POST /transfer HTTP/1.1\r\nHost: api.example.com\r\nConnection: keep-alive\r\n\
         Content-Length: {}\r\nCache-Control: max-age=0\r\n{origin_line}\
         Content-Type: application/x-www-form-urlencoded\r\nUpgrade-Insecure-Requests: 1\r\n\
         User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36\r\n\
         Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n\
         Sec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: navigate\r\nSec-Fetch-Dest: document\r\n\
         Referer: {referer}/\r\nAccept-Encoding: gzip, deflate\r\nAccept-Language: en-US,en;q=0.9\r\n\
         Cookie: session=3f1c9a7e5b2d4c8fa0e6b1d9c7f35a2e; theme=dark\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The denied browser preflight: the frame the bare programs are timed on.
pub fn denied_preflight() -> Case {
    Case::new(
        DENIED_PREFLIGHT,
        &first_segment(Packet::ipv4(&browser_preflight(DENIED))),
        XdpVerdict::Drop,
        Counter::PreflightDeny,
    )
}

fn allowed_preflight(origin: &str, what: &str) -> Case {
    Case::new(
        &format!("allowed preflight ({what})"),
        &first_segment(Packet::ipv4(&browser_preflight(origin))),
        XdpVerdict::Pass,
        Counter::PreflightAllow,
    )
}

/// A `GET` as curl sends it.
const GET_REQUEST: &[u8] =
    b"GET /index.html HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\r\n";

/// Every case of the per-packet table.
pub fn all() -> Vec<Case> {
    use XdpVerdict::{Drop, Pass};
    let get = GET_REQUEST;
    let tls = [
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    let mut cases = vec![
        Case::new(
            NOT_INSPECTED[0],
            &Packet::non_ip(ETH_P_ARP, &[0; 28]),
            Pass,
            Counter::PassNotIp,
        ),
        Case::new(
            NOT_INSPECTED[1],
            &Packet::ipv4(&[0x55; 64]).protocol(IPPROTO_UDP),
            Pass,
            Counter::PassNotTcp,
        ),
        Case::new(
            NOT_INSPECTED[2],
            &Packet::ipv4(&tls).dst_port(443),
            Pass,
            Counter::PassPortNotInspected,
        ),
        Case::new(
            "TCP ACK without payload, port 8080",
            &Packet::ipv4(&[]),
            Pass,
            Counter::PassNoPayload,
        ),
        Case::new(
            "TLS record on port 8080",
            &first_segment(Packet::ipv4(&tls)),
            Pass,
            Counter::PassNotHttp,
        ),
        {
            let mut again = Case::new(
                "retransmitted GET (a lookup, old bytes)",
                &Packet::ipv4(get),
                Pass,
                Counter::PassNotPreflight,
            );
            again.again = Some(Counter::PassRetransmission);
            again
        },
        Case::new(
            GET,
            &first_segment(Packet::ipv4(get)),
            Pass,
            Counter::PassNotPreflight,
        ),
        allowed_preflight(ALLOWED, "browser, 13 headers"),
        denied_preflight(),
        Case::new(
            "denied form POST (browser, cross-site)",
            &first_segment(Packet::ipv4(&browser_form_post(Some(DENIED)))),
            Drop,
            Counter::UnsafeDeny,
        ),
        Case::new(
            "allowed form POST (browser)",
            &first_segment(Packet::ipv4(&browser_form_post(Some(ALLOWED)))),
            Pass,
            Counter::UnsafeAllow,
        ),
        Case::new(
            "form POST, Sec-Fetch-Site: cross-site, no Origin",
            &first_segment(Packet::ipv4(&browser_form_post(None))),
            Drop,
            Counter::UnsafeDeny,
        ),
    ];
    for headers in [5, 20, 40] {
        for (first, place) in [(true, "first"), (false, "last")] {
            cases.push(Case::new(
                &format!("denied preflight, {headers} headers, Origin {place}"),
                &first_segment(Packet::ipv4(&preflight_with(DENIED, headers, first))),
                Drop,
                Counter::PreflightDeny,
            ));
        }
    }
    cases.push(Case::new(
        "denied preflight over IPv6",
        &first_segment(Packet::ipv6(&browser_preflight(DENIED))),
        Drop,
        Counter::PreflightDeny,
    ));
    cases.push(Case::new(
        "denied preflight behind a VLAN tag",
        &first_segment(Packet::ipv4(&browser_preflight(DENIED)).vlan(ETH_P_8021Q, 42)),
        Drop,
        Counter::PreflightDeny,
    ));
    cases
}

/// An allowlist of a given size, 1% of it wildcard entries.
pub struct Allowlist {
    pub name: String,
    pub entries: Vec<AllowEntry>,
    /// A host a wildcard entry covers, if there is one.
    wildcard_host: Option<String>,
}

impl Allowlist {
    /// `size` entries: `ALLOWED`, then `size / 100` wildcard entries, then
    /// exact ones.
    pub fn of_size(size: usize) -> Result<Allowlist> {
        let wildcards = size / 100;
        let mut texts = vec![ALLOWED.to_owned()];
        texts.extend((0..wildcards).map(|i| format!("https://*.tenant{i}.example.net")));
        texts.extend(
            (0..size - 1 - wildcards)
                .map(|i| format!("https://app{i}.customer{}.example.org", i % 97)),
        );
        let entries = texts
            .iter()
            .map(|t| parse_entry(t).map_err(|e| anyhow!("benchmark allowlist entry {t}: {e}")))
            .collect::<Result<Vec<_>>>()?;
        Ok(Allowlist {
            name: format!(
                "{size} {} ({wildcards} wildcard)",
                if size == 1 { "entry" } else { "entries" }
            ),
            entries,
            wildcard_host: wildcards
                .checked_sub(1)
                .map(|last| format!("https://eu.tenant{last}.example.net")),
        })
    }

    /// Denied, allowed by the exact entry, and allowed by a wildcard entry
    /// when there is one.
    pub fn cases(&self) -> Vec<Case> {
        let mut cases = vec![denied_preflight(), allowed_preflight(ALLOWED, "exact")];
        if let Some(host) = &self.wildcard_host {
            cases.push(allowed_preflight(host, "wildcard"));
        }
        cases
    }
}

/// Segments of one connection, timed one run per call on a fresh
/// connection each time (see `kernel::time_sequence`): the first one in
/// its SYN, the rest in order.
pub struct Sequence {
    pub name: &'static str,
    /// Each segment's name and payload.
    pub segments: Vec<(&'static str, Vec<u8>)>,
    /// The outcome counter of each segment.
    pub counters: Vec<Counter>,
}

impl Sequence {
    /// The frames of the connection from source port `port`.
    pub fn frames(&self, port: u16) -> Vec<Vec<u8>> {
        let mut seq = 1_000_000u32;
        self.segments
            .iter()
            .enumerate()
            .map(|(i, (_, payload))| {
                let packet = Packet::ipv4(payload).src_port(port);
                let frame = if i == 0 {
                    // The SYN's own number comes before its payload.
                    first_segment(packet.seq(seq - 1)).build()
                } else {
                    packet.seq(seq).build()
                };
                seq += payload.len() as u32;
                frame
            })
            .collect()
    }
}

/// The browser preflight from `DENIED` with a URL of about 3,000 bytes, cut
/// into three segments, and a POST's head followed by a body segment.
pub fn sequences() -> Vec<Sequence> {
    let path = format!("/api/items?q={}", "a".repeat(2900));
    let preflight = format!(
        "OPTIONS {path} HTTP/1.1\r\nHost: api.example.com\r\nOrigin: {DENIED}\r\n\
         Access-Control-Request-Method: PUT\r\nAccess-Control-Request-Headers: content-type\r\n\r\n"
    )
    .into_bytes();
    let cut = preflight.len() / 3;
    let head = b"POST /upload HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 100000\r\n\r\n";
    let open = |name, payload: Vec<u8>, counter| Sequence {
        name,
        segments: vec![
            ("SYN, no payload (a new connection)", Vec::new()),
            ("the request, one segment", payload),
        ],
        counters: vec![Counter::PassNoPayload, counter],
    };
    vec![
        open(
            "denied browser preflight (13 headers) on an open connection",
            browser_preflight(DENIED),
            Counter::PreflightDeny,
        ),
        open(
            "allowed browser preflight (13 headers) on an open connection",
            browser_preflight(ALLOWED),
            Counter::PreflightAllow,
        ),
        open(
            "GET without Origin on an open connection",
            GET_REQUEST.to_vec(),
            Counter::PassNotPreflight,
        ),
        Sequence {
            name: "denied preflight, 3,000-byte URL, in 3 segments",
            segments: vec![
                ("first segment (in the SYN)", preflight[..cut].to_vec()),
                ("middle segment", preflight[cut..2 * cut].to_vec()),
                ("last segment (denied)", preflight[2 * cut..].to_vec()),
            ],
            counters: vec![
                Counter::PassHeadPart,
                Counter::PassHeadPart,
                Counter::PreflightDeny,
            ],
        },
        Sequence {
            name: "POST with Content-Length: 100000",
            segments: vec![
                ("head (in the SYN)", head.to_vec()),
                ("body segment, 1448 bytes", vec![b'{'; 1448]),
            ],
            counters: vec![Counter::NoOrigin, Counter::PassBody],
        },
    ]
}
