//! The inputs the verdict must get right, each a hand-made frame run through
//! the real program with `cors-filter replay` (BPF_PROG_TEST_RUN: nothing is
//! sent anywhere), and `replay`'s own handling of captures.
//! Needs root (it loads BPF); fails, never skips, without it.

use std::path::Path;

use anyhow::Result;
use cors_filter_common::{http::SCAN_BYTES, origin::ORIGIN_MAX_LEN, stream::MAX_HEAD_LINES};
use cors_filter_tests::{
    TempDir,
    frames::packet::{
        ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, IPPROTO_UDP, Ipv6Ext, Packet, TCP_ACK, TCP_SYN,
    },
    frames::pcap,
    frames::replay::{Replayed, replay, replay_files},
    require_root,
};

const ALLOW: &str = r#"allow = [
    "https://*.example.com",
    "https://app.example.net",
    "http://plain.example.net",
    "http://localhost:8080",
    "http://[::1]:8080",
    "https://dotted.example.net.",
]"#;

/// `on_oversized_head = "pass"`: the cases of the program that judges a
/// segment's first 1024 bytes were written for incomplete preflights that
/// pass (the default of the retired `on_incomplete`); the default is now
/// to drop them.
const INCOMPLETE_PASSES: &str = "on_oversized_head = \"pass\"";

fn config(extra: &str) -> String {
    format!("ports = [8080, 80]\n{ALLOW}\n{extra}\n")
}

const ALLOWED: &str = "https://app.example.net";
const DENIED: &str = "https://evil.example";

/// A preflight from `origin`, with CRLF line ends.
fn preflight(origin: &str) -> Vec<u8> {
    format!(
        "OPTIONS /api/items HTTP/1.1\r\nHost: api.example.net\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: PUT\r\nAccess-Control-Request-Headers: content-type\r\n\r\n"
    )
    .into_bytes()
}

/// A frame and what the program must answer for it.
struct Case {
    name: String,
    frame: Vec<u8>,
    verdict: &'static str,
    reason: &'static str,
}

fn case(name: &str, frame: Vec<u8>, verdict: &'static str, reason: &'static str) -> Case {
    Case {
        name: name.to_owned(),
        frame,
        verdict,
        reason,
    }
}

/// A connection's first segment carrying `payload`: in its SYN, as with
/// TCP Fast Open, so that the filter parses it from the connection's first
/// byte in one frame (its own connection: each packet gets its own port).
fn first_segment(payload: &[u8]) -> Vec<u8> {
    Packet::ipv4(payload).tcp_flags(TCP_SYN).build()
}

fn allow(name: &str, payload: &[u8]) -> Case {
    case(name, first_segment(payload), "pass", "preflight_allow")
}

fn deny(name: &str, payload: &[u8]) -> Case {
    case(name, first_segment(payload), "drop", "preflight_deny")
}

fn malformed(name: &str, payload: &[u8]) -> Case {
    case(name, first_segment(payload), "drop", "malformed")
}

fn pass(name: &str, payload: &[u8], reason: &'static str) -> Case {
    case(name, first_segment(payload), "pass", reason)
}

/// Runs every case in one replay and reports every mismatch at once.
fn check(config_toml: &str, cases: Vec<Case>) -> Result<()> {
    require_root()?;
    let frames: Vec<Vec<u8>> = cases.iter().map(|c| c.frame.clone()).collect();
    let replayed = replay(config_toml, &frames)?;
    let wrong: Vec<String> = cases
        .iter()
        .zip(&replayed)
        .filter(|(c, r)| c.verdict != r.verdict || c.reason != r.reason)
        .map(|(c, r)| {
            format!(
                "{}: expected {} ({}), got {} ({})",
                c.name, c.verdict, c.reason, r.verdict, r.reason
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} cases wrong:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
    Ok(())
}

/// `Origin` and `Access-Control-Request-Method` lines between `before` and
/// `after` filler header lines.
fn with_fillers(origin_line: &str, before: usize, after: usize) -> Vec<u8> {
    let mut head = String::from("OPTIONS / HTTP/1.1\r\n");
    // Short lines, to stay inside the byte bound too.
    for _ in 0..before {
        head.push_str("X: v\r\n");
    }
    head.push_str(origin_line);
    head.push_str("\r\n");
    for _ in 0..after {
        head.push_str("Y: v\r\n");
    }
    head.push_str("Access-Control-Request-Method: GET\r\n\r\n");
    head.into_bytes()
}

#[test]
fn header_spelling_and_position() -> Result<()> {
    let cases = vec![
        allow(
            "names in upper case",
            format!("OPTIONS / HTTP/1.1\r\nORIGIN: {ALLOWED}\r\nACCESS-CONTROL-REQUEST-METHOD: PUT\r\n\r\n").as_bytes(),
        ),
        deny(
            "names in mixed case",
            format!("OPTIONS / HTTP/1.1\r\noRiGiN: {DENIED}\r\naccess-CONTROL-request-METHOD: PUT\r\n\r\n").as_bytes(),
        ),
        allow(
            "SP and HTAB around an allowed value",
            format!("OPTIONS / HTTP/1.1\r\nOrigin: \t {ALLOWED}\t \r\nAccess-Control-Request-Method:\tPUT \r\n\r\n").as_bytes(),
        ),
        deny(
            "no whitespace around a denied value",
            format!("OPTIONS / HTTP/1.1\r\nOrigin:{DENIED}\r\nAccess-Control-Request-Method:PUT\r\n\r\n").as_bytes(),
        ),
        deny(
            "Origin first of 64 header lines",
            &with_fillers(&format!("Origin: {DENIED}"), 0, 62),
        ),
        deny(
            "Origin last of 64 header lines",
            &with_fillers(&format!("Origin: {DENIED}"), 62, 0),
        ),
        deny(
            "Origin as header line 65: judged whole",
            &with_fillers(&format!("Origin: {DENIED}"), 63, 0),
        ),
        deny(
            &format!("Origin last of {MAX_HEAD_LINES} header lines"),
            &with_fillers(&format!("Origin: {DENIED}"), MAX_HEAD_LINES as usize - 2, 0),
        ),
        pass(
            &format!(
                "Origin as header line {}: past the bound",
                MAX_HEAD_LINES + 1
            ),
            &with_fillers(&format!("Origin: {DENIED}"), MAX_HEAD_LINES as usize - 1, 0),
            "incomplete",
        ),
        deny(
            "bare LF line ends",
            format!("OPTIONS / HTTP/1.1\nOrigin: {DENIED}\nAccess-Control-Request-Method: PUT\n\n").as_bytes(),
        ),
        deny(
            "mixed CRLF and LF line ends",
            format!("OPTIONS / HTTP/1.1\r\nOrigin: {DENIED}\nAccess-Control-Request-Method: PUT\r\n\n").as_bytes(),
        ),
        malformed(
            "two Origin headers, both allowed",
            format!("OPTIONS / HTTP/1.1\r\nOrigin: {ALLOWED}\r\nAccess-Control-Request-Method: PUT\r\norigin: {ALLOWED}\r\n\r\n").as_bytes(),
        ),
        malformed(
            "two Origin headers, allowed then denied",
            format!("OPTIONS / HTTP/1.1\r\nOrigin: {ALLOWED}\r\nOrigin: {DENIED}\r\nAccess-Control-Request-Method: PUT\r\n\r\n").as_bytes(),
        ),
        malformed(
            "an Origin with a comma list",
            &preflight(&format!("{ALLOWED}, {DENIED}")),
        ),
        malformed("an Origin with a comma list, no space", &preflight(&format!("{ALLOWED},{ALLOWED}"))),
        malformed("an empty Origin", &preflight("")),
        pass(
            "X-Origin is not Origin",
            format!("OPTIONS / HTTP/1.1\r\nX-Origin: {DENIED}\r\nAccess-Control-Request-Method: PUT\r\n\r\n").as_bytes(),
            "pass_not_preflight",
        ),
        pass(
            "OPTIONS without Access-Control-Request-Method is no preflight",
            format!("OPTIONS / HTTP/1.1\r\nOrigin: {DENIED}\r\n\r\n").as_bytes(),
            "pass_not_preflight",
        ),
        pass(
            "GET with a denied Origin is no preflight",
            format!("GET / HTTP/1.1\r\nOrigin: {DENIED}\r\n\r\n").as_bytes(),
            "pass_not_preflight",
        ),
    ];
    check(&config(INCOMPLETE_PASSES), cases)
}

#[test]
fn origin_forms() -> Result<()> {
    let mut cases = vec![
        allow(
            "upper-case scheme and host",
            &preflight("HTTPS://APP.EXAMPLE.NET"),
        ),
        allow(
            "default https port spelled out",
            &preflight("https://app.example.net:443"),
        ),
        allow(
            "default http port spelled out",
            &preflight("http://plain.example.net:80"),
        ),
        deny(
            "https with http's default port",
            &preflight("https://app.example.net:80"),
        ),
        deny(
            "non-default port",
            &preflight("https://app.example.net:8443"),
        ),
        allow(
            "listed non-default port",
            &preflight("http://localhost:8080"),
        ),
        deny(
            "listed host, other port",
            &preflight("http://localhost:8081"),
        ),
        deny("listed host, no port", &preflight("http://localhost")),
        deny(
            "trailing dot, listed without it",
            &preflight("https://app.example.net."),
        ),
        allow(
            "trailing dot, listed with it",
            &preflight("https://dotted.example.net."),
        ),
        deny(
            "no trailing dot, listed with it",
            &preflight("https://dotted.example.net"),
        ),
        allow("IPv6 literal", &preflight("http://[::1]:8080")),
        deny("IPv6 literal, other port", &preflight("http://[::1]:8081")),
        deny(
            "IPv6 literal, another spelling",
            &preflight("http://[0:0::1]:8080"),
        ),
        malformed(
            "IPv6 literal without its bracket",
            &preflight("http://[::1:8080"),
        ),
        deny("null, not listed", &preflight("null")),
        malformed("NULL in upper case", &preflight("NULL")),
        malformed("a path", &preflight("https://app.example.net/")),
        malformed("a longer path", &preflight("https://app.example.net/api")),
        malformed("a query", &preflight("https://app.example.net?x=1")),
        malformed("a fragment", &preflight("https://app.example.net#x")),
        malformed("userinfo", &preflight("https://user@app.example.net")),
        malformed(
            "userinfo with a password",
            &preflight("https://u:p@app.example.net"),
        ),
        malformed("a space inside", &preflight("https://app.example.net x")),
        malformed(
            "a port with a leading zero",
            &preflight("https://app.example.net:0443"),
        ),
        malformed("port 0", &preflight("https://app.example.net:0")),
        malformed("port 65536", &preflight("https://app.example.net:65536")),
        malformed(
            "a non-ASCII host",
            &preflight("https://app.ex\u{e4}mple.net"),
        ),
        malformed("a single slash", &preflight("https:/app.example.net")),
    ];
    // Around the `ORIGIN_MAX_LEN`-byte bound, with an origin the wildcard
    // would allow: at the bound it is matched; one past it, it is
    // malformed and never truncated into a match.
    let long = |len: usize| {
        let label = len - "https://.example.com".len();
        format!("https://{}.example.com", "a".repeat(label))
    };
    assert_eq!(long(ORIGIN_MAX_LEN).len(), ORIGIN_MAX_LEN);
    cases.push(allow(
        &format!("{ORIGIN_MAX_LEN} bytes, allowed by the wildcard"),
        &preflight(&long(ORIGIN_MAX_LEN)),
    ));
    cases.push(malformed(
        &format!("{} bytes", ORIGIN_MAX_LEN + 1),
        &preflight(&long(ORIGIN_MAX_LEN + 1)),
    ));
    cases.push(malformed(
        &format!("{} bytes", ORIGIN_MAX_LEN + 50),
        &preflight(&long(ORIGIN_MAX_LEN + 50)),
    ));
    check(&config(""), cases)
}

#[test]
fn null_matches_only_when_listed() -> Result<()> {
    let cases = vec![
        allow("null, listed", &preflight("null")),
        deny("a host named null", &preflight("https://null")),
    ];
    check(
        "ports = [8080]\nallow = [\"null\", \"https://app.example.net\"]\n",
        cases,
    )
}

#[test]
fn wildcards_match_on_label_boundaries() -> Result<()> {
    let cases = vec![
        allow("one label", &preflight("https://a.example.com")),
        allow("two labels", &preflight("https://a.b.example.com")),
        allow("upper case", &preflight("https://A.EXAMPLE.COM")),
        allow(
            "default port spelled out",
            &preflight("https://a.example.com:443"),
        ),
        deny("the domain itself", &preflight("https://example.com")),
        deny("a lookalike domain", &preflight("https://evil-example.com")),
        deny(
            "a subdomain of a lookalike",
            &preflight("https://a.evil-example.com"),
        ),
        deny(
            "the domain as a prefix",
            &preflight("https://a.example.com.evil.net"),
        ),
        deny("another scheme", &preflight("http://a.example.com")),
        deny("another port", &preflight("https://a.example.com:8443")),
        deny("a shorter TLD", &preflight("https://a.example.co")),
        malformed("an empty label", &preflight("https://.example.com")),
        malformed("a literal star", &preflight("https://*.example.com")),
    ];
    check(&config(""), cases)
}

#[test]
fn method_must_be_exactly_options() -> Result<()> {
    let denied = |method: &str| {
        format!(
            "{method} / HTTP/1.1\r\nOrigin: {DENIED}\r\nAccess-Control-Request-Method: PUT\r\n\r\n"
        )
        .into_bytes()
    };
    let cases = vec![
        deny("OPTIONS", &denied("OPTIONS")),
        pass("OPTIONSX", &denied("OPTIONSX"), "pass_not_preflight"),
        pass(
            "options in lower case",
            &denied("options"),
            "pass_not_preflight",
        ),
        pass("Options", &denied("Options"), "pass_not_preflight"),
        pass("XOPTIONS", &denied("XOPTIONS"), "pass_not_preflight"),
        // A head not whole yet passes: the server acts on none of it.
        pass("a method not whole yet", b"OPTI", "pass_head_part"),
        pass("the method alone", b"OPTIONS", "pass_head_part"),
        pass(
            "payload shorter than the request line",
            b"OPTIONS / HT",
            "pass_head_part",
        ),
        pass(
            "GET shorter than the request line",
            b"GET / HT",
            "pass_head_part",
        ),
        // Refused by default (`http2 = "drop"`): its frames cannot be read.
        case(
            "HTTP/2 preface",
            first_segment(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            "drop",
            "http2",
        ),
        pass(
            "TLS client hello",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
            "pass_not_http",
        ),
        deny(
            "one empty line first",
            &[b"\r\n".as_slice(), &denied("OPTIONS")].concat(),
        ),
        deny(
            "LF empty lines first",
            &[b"\n\n\n".as_slice(), &denied("OPTIONS")].concat(),
        ),
        deny(
            "many empty lines first",
            &[b"\r\n".repeat(100).as_slice(), &denied("OPTIONS")].concat(),
        ),
        deny(
            "empty lines past the first 1024 bytes, then a preflight",
            &[b"\r\n".repeat(512).as_slice(), &denied("OPTIONS")].concat(),
        ),
        // What may start a PROXY header's signature: kept as part of one.
        pass("only empty lines", b"\r\n\r\n", "pass_head_part"),
    ];
    check(&config(INCOMPLETE_PASSES), cases)
}

#[test]
fn transport_variants() -> Result<()> {
    let denied = preflight(DENIED);
    let frame =
        |name: &str, packet: Packet, verdict, reason| case(name, packet.build(), verdict, reason);
    let drop = |name: &str, packet: Packet| frame(name, packet, "drop", "preflight_deny");
    let cases = vec![
        drop("IPv4", Packet::ipv4(&denied)),
        drop(
            "IPv4 with options",
            Packet::ipv4(&denied)
                .ipv4_options(&[0x94, 0x04, 0, 0, 0x01, 0x07, 0x07, 0x04, 0, 0, 0, 0]),
        ),
        drop("one VLAN tag", Packet::ipv4(&denied).vlan(ETH_P_8021Q, 100)),
        drop(
            "QinQ",
            Packet::ipv4(&denied)
                .vlan(ETH_P_8021AD, 100)
                .vlan(ETH_P_8021Q, 200),
        ),
        drop(
            "QinQ over IPv6",
            Packet::ipv6(&denied)
                .vlan(ETH_P_8021AD, 100)
                .vlan(ETH_P_8021Q, 200),
        ),
        drop(
            "TCP with options",
            Packet::ipv4(&denied)
                .tcp_options(&[2, 4, 5, 0xb4, 1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2, 4, 2]),
        ),
        drop(
            "Ethernet padding after the packet",
            Packet::ipv4(&denied).trailer(&[0; 18]),
        ),
        drop(
            "port 80, also inspected",
            Packet::ipv4(&denied).dst_port(80),
        ),
        drop(
            "a 9000-byte segment (GRO, jumbo frames): the tail is in XDP fragments",
            Packet::ipv4(&[denied.clone(), vec![b'x'; 9000 - denied.len()]].concat()),
        ),
        drop("IPv6", Packet::ipv6(&denied)),
        drop(
            "IPv6 with hop-by-hop options",
            Packet::ipv6(&denied).ext(Ipv6Ext::HopByHop { len: 8 }),
        ),
        drop(
            "IPv6 with a routing header",
            Packet::ipv6(&denied).ext(Ipv6Ext::Routing { segments: 2 }),
        ),
        drop(
            "IPv6 with destination options",
            Packet::ipv6(&denied).ext(Ipv6Ext::DestOpts { len: 24 }),
        ),
        drop(
            "IPv6 with hop-by-hop, routing and destination options",
            Packet::ipv6(&denied)
                .ext(Ipv6Ext::HopByHop { len: 16 })
                .ext(Ipv6Ext::Routing { segments: 1 })
                .ext(Ipv6Ext::DestOpts { len: 8 }),
        ),
        drop(
            "IPv6 with an authentication header",
            Packet::ipv6(&denied).ext(Ipv6Ext::Auth { len: 24 }),
        ),
        drop(
            "IPv6 with an atomic fragment header",
            Packet::ipv6(&denied).ext(Ipv6Ext::Fragment {
                offset: 0,
                more: false,
            }),
        ),
        drop(
            "IPv6 with 8 extension headers, the bound",
            (0..8).fold(Packet::ipv6(&denied), |p, _| {
                p.ext(Ipv6Ext::DestOpts { len: 8 })
            }),
        ),
        frame(
            "IPv6 with 9 extension headers, past the bound",
            (0..9).fold(Packet::ipv6(&denied), |p, _| {
                p.ext(Ipv6Ext::DestOpts { len: 8 })
            }),
            "pass",
            "pass_ipv6_ext_header",
        ),
        frame(
            "IPv6 with extension headers, then UDP",
            Packet::ipv6(&denied)
                .ext(Ipv6Ext::HopByHop { len: 8 })
                .protocol(IPPROTO_UDP),
            "pass",
            "pass_not_tcp",
        ),
        frame(
            "IPv6, then ESP",
            Packet::ipv6(&denied).protocol(50),
            "pass",
            "pass_not_tcp",
        ),
        frame(
            "IPv6 first fragment",
            Packet::ipv6(&denied).ext(Ipv6Ext::Fragment {
                offset: 0,
                more: true,
            }),
            "pass",
            "pass_ip_fragment",
        ),
        frame(
            "IPv6 later fragment",
            Packet::ipv6(&denied).ext(Ipv6Ext::Fragment {
                offset: 10,
                more: false,
            }),
            "pass",
            "pass_ip_fragment",
        ),
        frame(
            "IPv4 first fragment",
            Packet::ipv4(&denied).ipv4_fragment(0, true),
            "pass",
            "pass_ip_fragment",
        ),
        frame(
            "IPv4 later fragment",
            Packet::ipv4(&denied).ipv4_fragment(185, false),
            "pass",
            "pass_ip_fragment",
        ),
        frame(
            "zero-length payload",
            Packet::ipv4(b"").tcp_flags(TCP_ACK),
            "pass",
            "pass_no_payload",
        ),
        drop(
            "a preflight in a SYN (TCP Fast Open)",
            Packet::ipv4(&denied).tcp_flags(TCP_SYN),
        ),
        frame(
            "a SYN",
            Packet::ipv4(b"").tcp_flags(TCP_SYN),
            "pass",
            "pass_no_payload",
        ),
        frame(
            "a short segment padded by the NIC: the padding is not read",
            Packet::ipv4(b"OPTI")
                .tcp_flags(TCP_SYN)
                .trailer(b"ONS / HTTP/1.1\r\n\r\n"),
            "pass",
            "pass_head_part",
        ),
        frame(
            "another port",
            Packet::ipv4(&denied).dst_port(8081),
            "pass",
            "pass_port_not_inspected",
        ),
        frame(
            "UDP",
            Packet::ipv4(&denied).protocol(IPPROTO_UDP),
            "pass",
            "pass_not_tcp",
        ),
        frame(
            "ARP",
            Packet::non_ip(ETH_P_ARP, &[0; 28]),
            "pass",
            "pass_not_ip",
        ),
    ];
    check(&config(INCOMPLETE_PASSES), cases)
}

/// Packets the filter does not inspect take a short path (plain IPv4 or
/// IPv6, one bounds check); everything it leaves to the full header walk
/// must get the outcome the walk gives, on both sides of each of its
/// conditions.
#[test]
fn the_short_path_and_the_full_walk_agree() -> Result<()> {
    let get = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let frame = |name: &str, packet: Packet, reason| case(name, packet.build(), "pass", reason);
    let cut = |name: &str, packet: Packet, keep: usize, reason| {
        let mut bytes = packet.build();
        bytes.truncate(keep);
        case(name, bytes, "pass", reason)
    };
    let options = [0x01, 0x01, 0x01, 0x01];
    let other = |p: Packet| p.dst_port(8081);
    // Offsets in a frame `Packet` built without VLAN tags or IP options.
    const IP: usize = 14;
    const IPV4_TCP: usize = IP + 20;
    // A frame with some bytes written over, or cut short.
    let patched = |name: &str, packet: Packet, at: usize, bytes: &[u8], reason| {
        let mut frame = packet.build();
        frame[at..at + bytes.len()].copy_from_slice(bytes);
        case(name, frame, "pass", reason)
    };
    // TCP behind a 12-byte IPv4 authentication header (RFC 4302), which the
    // full walk reads past.
    let behind_ah = |name: &str, packet: Packet, reason| {
        let mut frame = packet.build();
        let total = u16::from_be_bytes([frame[IP + 2], frame[IP + 3]]) + 12;
        frame[IP + 2..IP + 4].copy_from_slice(&total.to_be_bytes());
        frame[IP + 9] = 51;
        let ah = [6, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1];
        frame.splice(IPV4_TCP..IPV4_TCP, ah);
        case(name, frame, "pass", reason)
    };
    let cases = vec![
        frame(
            "another port",
            other(Packet::ipv4(get)),
            "pass_port_not_inspected",
        ),
        frame(
            "another port, IPv4 options",
            other(Packet::ipv4(get).ipv4_options(&options)),
            "pass_port_not_inspected",
        ),
        frame(
            "another port, TCP options",
            other(Packet::ipv4(get).tcp_options(&[1, 1, 1, 1])),
            "pass_port_not_inspected",
        ),
        frame(
            "another port, VLAN",
            other(Packet::ipv4(get).vlan(ETH_P_8021Q, 7)),
            "pass_port_not_inspected",
        ),
        frame(
            "another port, IPv6",
            other(Packet::ipv6(get)),
            "pass_port_not_inspected",
        ),
        frame(
            "another port, IPv6 hop-by-hop",
            other(Packet::ipv6(get).ext(Ipv6Ext::HopByHop { len: 8 })),
            "pass_port_not_inspected",
        ),
        frame(
            "another port, a later IPv4 fragment",
            other(Packet::ipv4(get).ipv4_fragment(185, false)),
            "pass_ip_fragment",
        ),
        frame(
            "UDP with IPv4 options",
            Packet::ipv4(get)
                .ipv4_options(&options)
                .protocol(IPPROTO_UDP),
            "pass_not_tcp",
        ),
        frame(
            "a UDP fragment",
            Packet::ipv4(get)
                .ipv4_fragment(0, true)
                .protocol(IPPROTO_UDP),
            "pass_ip_fragment",
        ),
        frame(
            "UDP over IPv6",
            Packet::ipv6(get).protocol(IPPROTO_UDP),
            "pass_not_tcp",
        ),
        frame(
            "UDP behind a VLAN tag",
            Packet::ipv4(get).protocol(IPPROTO_UDP).vlan(ETH_P_8021Q, 7),
            "pass_not_tcp",
        ),
        frame(
            "ARP behind a VLAN tag",
            Packet::non_ip(ETH_P_ARP, &[0; 28]).vlan(ETH_P_8021Q, 7),
            "pass_not_ip",
        ),
        frame(
            "an acknowledgment over IPv6",
            Packet::ipv6(b"").tcp_flags(TCP_ACK),
            "pass_no_payload",
        ),
        frame(
            "an acknowledgment with TCP options",
            Packet::ipv4(b"")
                .tcp_flags(TCP_ACK)
                .tcp_options(&[1, 1, 1, 1]),
            "pass_no_payload",
        ),
        frame(
            "an acknowledgment, IPv4 options",
            Packet::ipv4(b"").tcp_flags(TCP_ACK).ipv4_options(&options),
            "pass_no_payload",
        ),
        frame(
            "a SYN over IPv6",
            Packet::ipv6(b"").tcp_flags(TCP_SYN),
            "pass_no_payload",
        ),
        cut(
            "IPv4, TCP header cut after the ports",
            other(Packet::ipv4(b"")),
            IPV4_TCP + 4,
            "pass_truncated",
        ),
        cut(
            "IPv6, TCP header cut after the ports",
            other(Packet::ipv6(b"")),
            IP + 40 + 4,
            "pass_truncated",
        ),
        cut(
            "UDP, cut inside its IPv4 header",
            Packet::ipv4(get).protocol(IPPROTO_UDP),
            30,
            "pass_not_tcp",
        ),
        cut(
            "UDP, cut inside its IPv6 header",
            Packet::ipv6(get).protocol(IPPROTO_UDP),
            30,
            "pass_not_tcp",
        ),
        cut(
            "IPv6, cut right after the next header",
            Packet::ipv6(get).protocol(IPPROTO_UDP),
            IP + 7,
            "pass_not_tcp",
        ),
        cut(
            "IPv6, cut before the next header",
            Packet::ipv6(get).protocol(IPPROTO_UDP),
            IP + 6,
            "pass_truncated",
        ),
        patched(
            "another port, IPv4 total length below the header's",
            other(Packet::ipv4(get)),
            IP + 2,
            &19u16.to_be_bytes(),
            "pass_truncated",
        ),
        patched(
            "UDP, IPv4 total length below the header's",
            Packet::ipv4(get).protocol(IPPROTO_UDP),
            IP + 2,
            &19u16.to_be_bytes(),
            "pass_truncated",
        ),
        patched(
            "another port, TCP data offset below 5",
            other(Packet::ipv4(get)),
            IPV4_TCP + 12,
            &[0x40],
            "pass_truncated",
        ),
        patched(
            "an acknowledgment whose TCP header is longer than the IPv4 packet",
            Packet::ipv4(b"").tcp_flags(TCP_ACK),
            IPV4_TCP + 12,
            &[0xf0],
            "pass_truncated",
        ),
        patched(
            "an acknowledgment whose TCP header is longer than the IPv6 payload",
            Packet::ipv6(b"").tcp_flags(TCP_ACK),
            IP + 4,
            &10u16.to_be_bytes(),
            "pass_truncated",
        ),
        patched(
            "another port, a TCP header longer than the IPv4 packet",
            other(Packet::ipv4(b"")),
            IPV4_TCP + 12,
            &[0xf0],
            "pass_truncated",
        ),
        patched(
            "another port, a TCP header longer than the IPv6 payload",
            other(Packet::ipv6(b"")),
            IP + 4,
            &10u16.to_be_bytes(),
            "pass_truncated",
        ),
        behind_ah(
            "another port, TCP behind IPv4 AH",
            other(Packet::ipv4(get)),
            "pass_port_not_inspected",
        ),
        behind_ah(
            "an acknowledgment behind IPv4 AH",
            Packet::ipv4(b"").tcp_flags(TCP_ACK),
            "pass_no_payload",
        ),
    ];
    check(&config(""), cases)
}

/// A judged head past the bounds (`max_head_bytes`, `MAX_HEAD_LINES`
/// header lines) is `incomplete`, dropped or passed as `on_oversized_head`
/// says; heads that are only not whole yet, or longer than the first chunk
/// the program reads of a segment (`SCAN_BYTES`), are not.
#[test]
fn oversized_heads_follow_the_policy() -> Result<()> {
    let partial =
        format!("OPTIONS / HTTP/1.1\r\nOrigin: {DENIED}\r\nAccess-Control-Request-Method: PUT\r\n");
    let mut long = format!("OPTIONS / HTTP/1.1\r\nOrigin: {DENIED}\r\nX-Pad: ");
    long.push_str(&"p".repeat(SCAN_BYTES + 76));
    long.push_str("\r\nAccess-Control-Request-Method: PUT\r\n\r\n");
    let oversized = with_fillers(
        &format!("Origin: {ALLOWED}"),
        MAX_HEAD_LINES as usize - 1,
        0,
    );
    for (policy, verdict) in [("pass", "pass"), ("drop", "drop")] {
        let cases = vec![
            case(
                "more header lines than judged",
                first_segment(&oversized),
                verdict,
                "incomplete",
            ),
            pass(
                "headers continue in a later segment",
                partial.as_bytes(),
                "pass_head_part",
            ),
            deny(
                &format!("a head longer than {SCAN_BYTES} bytes is judged"),
                long.as_bytes(),
            ),
            pass("method split", b"OPTIO", "pass_head_part"),
            deny("a complete preflight is not affected", &preflight(DENIED)),
        ];
        check(&config(&format!("on_oversized_head = \"{policy}\"")), cases)?;
    }
    Ok(())
}

/// Every request of a segment is judged; a segment that carries a denied
/// one is dropped, with whatever else it carries (browsers do not pipeline).
#[test]
fn pipelined_requests_are_each_judged() -> Result<()> {
    let cases = vec![
        deny(
            "allowed preflight, then a denied one",
            &[preflight(ALLOWED), preflight(DENIED)].concat(),
        ),
        deny(
            "denied preflight, then an allowed one",
            &[preflight(DENIED), preflight(ALLOWED)].concat(),
        ),
        deny(
            "GET, then a denied preflight",
            &[
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".as_slice(),
                &preflight(DENIED),
            ]
            .concat(),
        ),
        allow(
            "GET, then an allowed preflight",
            &[
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".as_slice(),
                &preflight(ALLOWED),
            ]
            .concat(),
        ),
    ];
    check(&config(""), cases)
}

#[test]
fn monitor_mode_counts_but_passes() -> Result<()> {
    let cases = vec![
        case(
            "denied",
            Packet::ipv4(&preflight(DENIED)).build(),
            "pass",
            "preflight_deny",
        ),
        case(
            "malformed",
            Packet::ipv4(&preflight("https://a.example.com/")).build(),
            "pass",
            "malformed",
        ),
        case(
            "incomplete",
            first_segment(&with_fillers(&format!("Origin: {DENIED}"), 99, 0)),
            "pass",
            "incomplete",
        ),
        allow("allowed", &preflight(ALLOWED)),
    ];
    check(
        &config("mode = \"monitor\"\non_oversized_head = \"drop\""),
        cases,
    )
}

/// `replay` on a capture file, expecting it to fail after `frames_before`
/// frames (it streams: the frames before the bad spot are printed);
/// returns its error output.
fn replay_error(dir: &Path, capture: &Path, frames_before: usize) -> Result<String> {
    let config_path = dir.join("config.toml");
    std::fs::write(&config_path, config(""))?;
    let run = replay_files(&config_path, capture)?;
    assert!(
        !run.success,
        "replay succeeded on {}: {}",
        capture.display(),
        run.stdout
    );
    assert_eq!(run.stdout.lines().count(), frames_before, "{}", run.stdout);
    Ok(run.stderr)
}

#[test]
fn pcapng_gives_the_same_verdicts_as_pcap() -> Result<()> {
    require_root()?;
    let dir = TempDir::new("pcapng")?;
    let frames = vec![
        Packet::ipv4(&preflight(ALLOWED)).build(),
        Packet::ipv6(&preflight(DENIED)).build(),
        Packet::ipv4(b"GET / HTTP/1.1\r\n\r\n").build(),
    ];
    let (config_path, capture) = (dir.path().join("config.toml"), dir.path().join("f.pcapng"));
    std::fs::write(&config_path, config(""))?;
    pcap::write_pcapng(&capture, &frames)?;
    let from_pcapng = replay_files(&config_path, &capture)?.lines()?;
    assert_eq!(from_pcapng, replay(&config(""), &frames)?);
    let reasons: Vec<&str> = from_pcapng
        .iter()
        .map(|r: &Replayed| r.reason.as_str())
        .collect();
    assert_eq!(
        reasons,
        ["preflight_allow", "preflight_deny", "pass_not_preflight"]
    );
    Ok(())
}

#[test]
fn bad_captures_are_refused_with_a_clear_error() -> Result<()> {
    require_root()?;
    let dir = TempDir::new("bad-capture")?;
    let frame = Packet::ipv4(&preflight(DENIED)).build();

    let garbage = dir.path().join("garbage.pcap");
    std::fs::write(&garbage, b"this is not a capture at all, just some text\n")?;
    let e = replay_error(dir.path(), &garbage, 0)?;
    assert!(
        e.contains("garbage.pcap") && e.contains("not a pcap or pcapng"),
        "{e}"
    );

    let empty = dir.path().join("empty.pcap");
    std::fs::write(&empty, b"")?;
    let e = replay_error(dir.path(), &empty, 0)?;
    assert!(e.contains("empty.pcap is empty"), "{e}");

    let missing = dir.path().join("missing.pcap");
    let e = replay_error(dir.path(), &missing, 0)?;
    assert!(
        e.contains("missing.pcap") && e.contains("cannot open"),
        "{e}"
    );

    // A file cut inside its second record.
    let whole = dir.path().join("whole.pcap");
    pcap::write_pcap(&whole, &[frame.clone(), frame.clone()])?;
    let bytes = std::fs::read(&whole)?;
    let cut = dir.path().join("cut.pcap");
    std::fs::write(&cut, &bytes[..bytes.len() - 10])?;
    let e = replay_error(dir.path(), &cut, 1)?;
    assert!(e.contains("cut.pcap") && e.contains("ends inside"), "{e}");

    // Link type 101 (raw IP) instead of Ethernet.
    let mut raw_ip = bytes.clone();
    raw_ip[20..24].copy_from_slice(&101u32.to_le_bytes());
    let raw = dir.path().join("raw-ip.pcap");
    std::fs::write(&raw, raw_ip)?;
    let e = replay_error(dir.path(), &raw, 0)?;
    assert!(e.contains("link type 101") && e.contains("Ethernet"), "{e}");

    // Captured with a small snap length: the frame is not all there.
    for (name, write) in [
        (
            "snap.pcap",
            pcap::write_pcap_truncated as fn(&Path, &[u8], usize) -> Result<()>,
        ),
        ("snap.pcapng", pcap::write_pcapng_truncated),
    ] {
        let path = dir.path().join(name);
        write(&path, &frame, 54)?;
        let e = replay_error(dir.path(), &path, 0)?;
        assert!(
            e.contains(name) && e.contains("truncated") && e.contains("54"),
            "{e}"
        );
    }

    // A bad config is named, before anything is loaded.
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        "ports = [8080]\nallow = [\"https://a.example/path\"]\n",
    )?;
    let run = replay_files(&config, &whole)?;
    assert!(!run.success);
    assert!(run.stderr.contains("bad.toml:2"), "{}", run.stderr);
    Ok(())
}
