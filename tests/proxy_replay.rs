//! PROXY protocol headers and HTTP/2 through the real program (replay:
//! `BPF_PROG_TEST_RUN`, nothing sent anywhere), frame for frame beside the
//! userspace model of the same code: whole connections from a proxy
//! (its address is the packets' source), each starting with a version 1
//! or 2 header (TCP4, TCP6, UNKNOWN, LOCAL, with TLVs), whole or cut at
//! every byte, malformed or truncated, followed by allowed and disallowed
//! preflights and unsafe requests. Every request behind a header is
//! judged, and every denial event names the client the header gave.
//! The config keeps the default action: a refused request on a connection
//! that came with a PROXY header is answered with a reset (to the proxy),
//! on any other connection dropped. Needs root.

use std::net::Ipv6Addr;

use anyhow::Result;
use cors_filter_common::{
    event::{FAMILY_IPV4, FAMILY_IPV6},
    stream::ConnKey,
};
use cors_filter_tests::{
    frames::packet::{DST_PORT, DST_V4, SRC_V4, segment_frames},
    frames::replay::{Replayed, assert_agrees, replay},
    oracles::stream_model::{Model, ModelPolicy},
    require_root,
};

const ALLOWED: &str = "https://app.example";
const EVIL: &str = "https://evil.example";
const ISN: u32 = 0x7fff_ff00;
/// The client the headers name.
const CLIENT_V4: [u8; 4] = [203, 0, 113, 7];
const CLIENT_V4_TEXT: &str = "203.0.113.7:51234";
const CLIENT_V6_TEXT: &str = "[2001:db8::7]:443";

fn config(extra: &str) -> String {
    format!(
        "ports = [{DST_PORT}]\nallow = [\"{ALLOWED}\"]\nprotect_unsafe_methods = true\n{extra}\n"
    )
}

fn preflight(origin: &str) -> Vec<u8> {
    format!(
        "OPTIONS /api HTTP/1.1\r\nHost: api.example\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: PUT\r\n\r\n"
    )
    .into_bytes()
}

fn unsafe_post(origin: &str) -> Vec<u8> {
    format!(
        "POST /transfer HTTP/1.1\r\nHost: api.example\r\nOrigin: {origin}\r\nContent-Length: 3\r\n\r\nx=1"
    )
    .into_bytes()
}

fn v1_tcp4() -> Vec<u8> {
    b"PROXY TCP4 203.0.113.7 192.0.2.2 51234 8080\r\n".to_vec()
}

fn v1_tcp6() -> Vec<u8> {
    b"PROXY TCP6 2001:db8::7 2001:db8::2 443 8080\r\n".to_vec()
}

fn v2(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend([command, family]);
    h.extend(((addresses.len() + tlvs.len()) as u16).to_be_bytes());
    h.extend(addresses);
    h.extend(tlvs);
    h
}

fn v2_tcp4(tlvs: &[u8]) -> Vec<u8> {
    let mut a = CLIENT_V4.to_vec();
    a.extend(DST_V4.octets());
    a.extend(51234u16.to_be_bytes());
    a.extend(DST_PORT.to_be_bytes());
    v2(0x21, 0x11, &a, tlvs)
}

fn v2_tcp6() -> Vec<u8> {
    let mut a = "2001:db8::7".parse::<Ipv6Addr>().unwrap().octets().to_vec();
    a.extend("2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
    a.extend(443u16.to_be_bytes());
    a.extend(DST_PORT.to_be_bytes());
    v2(0x21, 0x21, &a, &[])
}

/// TLVs as HAProxy writes them: ALPN, authority, SSL, and a NOOP.
const TLVS: &[u8] = &[
    0x01, 0, 8, b'h', b't', b't', b'p', b'/', b'1', b'.', b'1', // ALPN
    0x02, 0, 11, b'a', b'p', b'i', b'.', b'e', b'x', b'a', b'm', b'p', b'l',
    b'e', // authority
    0x20, 0, 5, 0x07, 0, 0, 0, 0, // SSL: client connected over TLS, verified
    0x04, 0, 3, 0, 0, 0, // NOOP
];

/// The model's key for `Packet::ipv4`'s addresses and `port`.
fn packet_key(port: u16) -> ConnKey {
    let mut key = ConnKey {
        source_port: port,
        dest_port: DST_PORT,
        family: FAMILY_IPV4 as u32,
        ..Default::default()
    };
    key.source_addr[..4].copy_from_slice(&SRC_V4.octets());
    key.dest_addr[..4].copy_from_slice(&DST_V4.octets());
    key
}

/// A connection from `port`: its SYN, then `stream` cut at `cuts`.
fn connection(port: u16, stream: &[u8], cuts: &[usize]) -> Vec<(u16, u32, Vec<u8>, bool)> {
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(stream.len());
    std::iter::once((port, ISN, Vec::new(), true))
        .chain(bounds.windows(2).map(|w| {
            (
                port,
                ISN.wrapping_add(1 + w[0] as u32),
                stream[w[0]..w[1]].to_vec(),
                false,
            )
        }))
        .collect()
}

/// The model's client, as the daemon renders an event's.
fn client_text(client: &cors_filter_common::proxy::ProxyClient) -> Option<String> {
    match client.family {
        FAMILY_IPV4 => {
            let [a, b, c, d, ..] = client.addr;
            Some(format!("{a}.{b}.{c}.{d}:{}", client.port))
        }
        FAMILY_IPV6 => Some(format!("[{}]:{}", Ipv6Addr::from(client.addr), client.port)),
        _ => None,
    }
}

/// Runs the segments through the kernel and the model, which must agree on
/// every frame's verdict and reason and on every event's client.
fn run(extra: &str, segments: &[(u16, u32, Vec<u8>, bool)]) -> Result<Vec<Replayed>> {
    let frames = segment_frames(segments);
    let lines = replay(&config(extra), &frames)?;
    let mut policy = ModelPolicy::allowing(&[ALLOWED], true);
    // The config's default action.
    policy.settings = policy
        .settings
        .with_action(cors_filter_common::Action::ResetProxied);
    if extra.contains("http2 = \"pass\"") {
        policy.settings = policy.settings.with_http2(cors_filter_common::Http2::Pass);
    }
    if extra.contains("client_address_header = \"x-forwarded-for\"") {
        policy.client_header = cors_filter_common::stream::header::X_FORWARDED_FOR;
    } else if extra.contains("client_address_header = \"forwarded\"") {
        policy.client_header = cors_filter_common::stream::header::FORWARDED;
    }
    let mut model = Model::new(policy);
    for ((port, seq, payload, syn), line) in segments.iter().zip(&lines) {
        let judged = model.segment(&packet_key(*port), *seq, payload, *syn);
        let what = format!("{} bytes from port {port} at {seq}", payload.len());
        assert_agrees(line, &judged, &what);
        if let Some(event) = &line.event {
            assert_eq!(
                event.client,
                client_text(&judged.client),
                "frame {}: the event's client",
                line.index
            );
            assert_eq!(
                event.source,
                format!("{SRC_V4}:{port}"),
                "frame {}",
                line.index
            );
        }
    }
    Ok(lines)
}

/// The last frame's verdict, reason and event client.
fn last(lines: &[Replayed]) -> (&str, &str, Option<&str>) {
    let l = lines.last().unwrap();
    (
        l.verdict.as_str(),
        l.reason.as_str(),
        l.event.as_ref().and_then(|e| e.client.as_deref()),
    )
}

#[test]
fn requests_behind_every_kind_of_header_are_judged_and_name_the_client() -> Result<()> {
    require_root()?;
    let headers: [(&str, Vec<u8>, Option<&str>); 7] = [
        ("v1 TCP4", v1_tcp4(), Some(CLIENT_V4_TEXT)),
        ("v1 TCP6", v1_tcp6(), Some(CLIENT_V6_TEXT)),
        ("v1 UNKNOWN", b"PROXY UNKNOWN\r\n".to_vec(), None),
        ("v2 TCP4", v2_tcp4(&[]), Some(CLIENT_V4_TEXT)),
        ("v2 TCP4 with TLVs", v2_tcp4(TLVS), Some(CLIENT_V4_TEXT)),
        ("v2 TCP6", v2_tcp6(), Some(CLIENT_V6_TEXT)),
        ("v2 LOCAL", v2(0x20, 0x00, &[], TLVS), None),
    ];
    // All connections in one replay, each from its own port.
    let mut segments = Vec::new();
    let mut expected = Vec::new();
    let mut port = 41000;
    for (name, header, client) in &headers {
        // The header and a request in one segment, and in two.
        for (request, verdict, reason) in [
            (preflight(EVIL), "reset", "preflight_deny"),
            (preflight(ALLOWED), "pass", "preflight_allow"),
            (unsafe_post(EVIL), "reset", "unsafe_deny"),
            (unsafe_post(ALLOWED), "pass", "unsafe_allow"),
        ] {
            let stream = [header.clone(), request].concat();
            for cuts in [vec![], vec![header.len()]] {
                port += 1;
                segments.extend(connection(port, &stream, &cuts));
                let event_client = if verdict == "reset" { *client } else { None };
                // A version 2 header's TLVs are passed over as a body's bytes.
                let alone = (cuts.len() == 1).then(|| {
                    if header.ends_with(TLVS) {
                        "pass_body"
                    } else {
                        "pass_head_part"
                    }
                });
                expected.push((
                    segments.len() - 1,
                    (verdict, reason, event_client),
                    alone,
                    format!("{name}, {reason}, cut at {cuts:?}"),
                ));
            }
        }
    }
    let lines = run("", &segments)?;
    for (at, want, alone, what) in expected {
        assert_eq!(last(&lines[..=at]), want, "{what}");
        if want.0 == "reset" {
            assert!(lines[at].event.is_some(), "{what}: no event");
        }
        if let Some(alone) = alone {
            assert_eq!(lines[at - 1].reason, alone, "{what}: the header alone");
        }
    }
    Ok(())
}

#[test]
fn a_header_cut_at_every_byte_still_judges_the_request_behind_it() -> Result<()> {
    require_root()?;
    let mut segments = Vec::new();
    let mut expected = Vec::new();
    let mut port = 42000;
    for (header, client) in [(v1_tcp6(), CLIENT_V6_TEXT), (v2_tcp4(TLVS), CLIENT_V4_TEXT)] {
        let stream = [header.clone(), preflight(EVIL)].concat();
        for cut in 1..header.len() + 8 {
            port += 1;
            segments.extend(connection(port, &stream, &[cut]));
            expected.push((segments.len() - 1, cut, client));
        }
    }
    let lines = run("", &segments)?;
    for (at, cut, client) in expected {
        let l = &lines[at];
        assert_eq!(
            (
                l.verdict.as_str(),
                l.reason.as_str(),
                l.event.as_ref().and_then(|e| e.client.as_deref())
            ),
            ("reset", "preflight_deny", Some(client)),
            "cut at {cut}"
        );
        assert_eq!(
            lines[at - 1].verdict,
            "pass",
            "cut at {cut}: the first part"
        );
    }
    Ok(())
}

#[test]
fn keep_alive_requests_after_the_first_still_name_the_client() -> Result<()> {
    require_root()?;
    let stream = [
        v2_tcp4(TLVS),
        preflight(ALLOWED),
        unsafe_post(ALLOWED),
        preflight(EVIL),
    ]
    .concat();
    let first = v2_tcp4(TLVS).len() + preflight(ALLOWED).len();
    let second = first + unsafe_post(ALLOWED).len();
    let lines = run("", &connection(43000, &stream, &[first, second]))?;
    let reasons: Vec<&str> = lines.iter().map(|l| l.reason.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "pass_no_payload",
            "preflight_allow",
            "unsafe_allow",
            "preflight_deny"
        ]
    );
    assert_eq!(last(&lines).2, Some(CLIENT_V4_TEXT));
    Ok(())
}

#[test]
fn malformed_headers_are_refused_with_what_follows() -> Result<()> {
    require_root()?;
    let long = format!("PROXY UNKNOWN {}\r\n", "x".repeat(100)).into_bytes();
    let cases: [(&str, Vec<u8>); 9] = [
        (
            "v1 bad address",
            b"PROXY TCP4 203.0.113 192.0.2.2 1 2\r\n".to_vec(),
        ),
        (
            "v1 port too large",
            b"PROXY TCP4 203.0.113.7 192.0.2.2 65536 2\r\n".to_vec(),
        ),
        ("v1 IPv6 as TCP4", b"PROXY TCP4 ::1 ::1 1 2\r\n".to_vec()),
        (
            "v1 unknown protocol",
            b"PROXY UDP4 203.0.113.7 192.0.2.2 1 2\r\n".to_vec(),
        ),
        ("v1 no CR", b"PROXY UNKNOWN\n".to_vec()),
        ("v1 no line end in 107 bytes", long),
        ("v2 version 1", v2(0x11, 0x11, &[0; 12], &[])),
        (
            "v2 addresses longer than the length",
            v2(0x21, 0x21, &[0; 20], &[]),
        ),
        (
            "v2 signature broken after its NUL",
            b"\r\n\r\n\0\r\nQUIZ\n!\x11\x00\x0c".to_vec(),
        ),
    ];
    let mut segments = Vec::new();
    let mut expected = Vec::new();
    let mut port = 44000;
    for (name, header) in cases {
        port += 1;
        let stream = [header, preflight(ALLOWED)].concat();
        segments.extend(connection(port, &stream, &[]));
        expected.push((segments.len() - 1, "proxy_malformed", name));
        // What follows on the connection is dropped too.
        port += 1;
        let more = [&stream[..], &preflight(ALLOWED)].concat();
        segments.extend(connection(port, &more, &[stream.len()]));
        expected.push((segments.len() - 1, "connection_denied", name));
    }
    let lines = run("", &segments)?;
    for (at, reason, name) in expected {
        assert_eq!(
            (lines[at].verdict.as_str(), lines[at].reason.as_str()),
            ("drop", reason),
            "{name}"
        );
        if reason == "proxy_malformed" {
            let event = lines[at].event.as_ref().expect("an event");
            assert_eq!(event.reason, "malformed PROXY header", "{name}");
        }
    }
    // A header cut short and never finished: nothing after it is served, and
    // nothing is dropped.
    let lines = run("", &connection(44100, &v2_tcp4(TLVS)[..20], &[]))?;
    assert_eq!(last(&lines), ("pass", "pass_head_part", None));
    Ok(())
}

#[test]
fn connections_that_start_like_a_header_are_read_as_requests() -> Result<()> {
    require_root()?;
    // Methods that start as `PROXY ` does, and whitespace that starts as
    // the version 2 signature does, cut after each of their first bytes.
    let mut port = 45000;
    for (stream, reason) in [
        (unsafe_post(EVIL), "unsafe_deny"),
        (
            b"PUT /x HTTP/1.1\r\nOrigin: https://evil.example\r\n\r\n".to_vec(),
            "unsafe_deny",
        ),
        (
            b"PROPFIND /x HTTP/1.1\r\nOrigin: https://evil.example\r\n\r\n".to_vec(),
            "unsafe_deny",
        ),
        (
            [&b"\r\n\r\n"[..], &preflight(EVIL)].concat(),
            "preflight_deny",
        ),
        (
            [&b"\r\n"[..], &preflight(ALLOWED)].concat(),
            "preflight_allow",
        ),
    ] {
        for cut in 0..6 {
            port += 1;
            let cuts = if cut == 0 { vec![] } else { vec![cut] };
            let lines = run("", &connection(port, &stream, &cuts))?;
            assert_eq!(last(&lines).1, reason, "{:?} cut at {cut}", &stream[..8]);
        }
    }
    Ok(())
}

#[test]
fn http2_is_refused_unless_passed() -> Result<()> {
    require_root()?;
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00".to_vec();
    let upgrade = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n".to_vec();
    let websocket =
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
            .to_vec();
    let frames = b"\x00\x00\x05\x01\x04\x00\x00\x00\x01whatever".to_vec();
    let mut port = 46000;
    for (extra, stream, first, then) in [
        (
            "",
            preface.clone(),
            ("drop", "http2"),
            ("drop", "connection_denied"),
        ),
        (
            "",
            upgrade.clone(),
            ("drop", "http2"),
            ("drop", "connection_denied"),
        ),
        (
            "http2 = \"pass\"",
            preface,
            ("pass", "http2"),
            ("pass", "pass_untracked"),
        ),
        // Frames start with a byte no request does: the tracking ends there.
        (
            "http2 = \"pass\"",
            upgrade.clone(),
            ("pass", "http2"),
            ("pass", "pass_not_http"),
        ),
        (
            "",
            websocket.clone(),
            ("pass", "pass_not_preflight"),
            ("pass", "pass_not_http"),
        ),
        // Behind a PROXY header, too (reset: the default action there).
        (
            "",
            [v2_tcp4(TLVS), upgrade].concat(),
            ("reset", "http2"),
            ("drop", "connection_denied"),
        ),
    ] {
        port += 1;
        let lines = run(
            extra,
            &connection(port, &[&stream[..], &frames].concat(), &[stream.len()]),
        )?;
        let got: Vec<(&str, &str)> = lines[1..]
            .iter()
            .map(|l| (l.verdict.as_str(), l.reason.as_str()))
            .collect();
        assert_eq!(got, [first, then], "{extra:?} {:?}", &stream[..16]);
        if first.1 == "http2" {
            let event = lines[1].event.as_ref().expect("an event for HTTP/2");
            assert_eq!(event.reason, "HTTP/2 on an inspected port");
        }
    }
    Ok(())
}

#[test]
fn a_trusted_client_header_names_the_client_and_never_the_verdict() -> Result<()> {
    require_root()?;
    // What a page can put in the header comes first; the trusted proxy
    // appends the address it saw: the last element.
    let with = |header: &str, origin: &str| {
        format!(
            "OPTIONS /api HTTP/1.1\r\nHost: api.example\r\n{header}\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: PUT\r\n\r\n"
        )
        .into_bytes()
    };
    let xff = "X-Forwarded-For: 6.6.6.6, 198.51.100.66\r\nx-forwarded-for: 10.9.9.9, 203.0.113.9";
    let fwd =
        "Forwarded: for=6.6.6.6\r\nForwarded: for=10.9.9.9, proto=https;For=\"[2001:db8::9]:4711\"";
    let long = format!("X-Forwarded-For: 6.6.6.6, {}", "1".repeat(70));
    let trust_xff = format!("[port.{DST_PORT}]\nclient_address_header = \"x-forwarded-for\"");
    let trust_fwd = format!("[port.{DST_PORT}]\nclient_address_header = \"forwarded\"");
    for (extra, header, forwarded) in [
        (trust_xff.as_str(), xff, Some("203.0.113.9")),
        (trust_xff.as_str(), fwd, None),
        (trust_xff.as_str(), long.as_str(), None),
        (trust_fwd.as_str(), fwd, Some("[2001:db8::9]:4711")),
        (trust_fwd.as_str(), xff, None),
        ("", xff, None),
    ] {
        let stream = [v2_tcp4(&[]), with(header, ALLOWED), with(header, EVIL)].concat();
        let first = v2_tcp4(&[]).len() + with(header, ALLOWED).len();
        let lines = run(extra, &connection(47000, &stream, &[first]))?;
        let got: Vec<&str> = lines.iter().map(|l| l.reason.as_str()).collect();
        assert_eq!(
            got,
            ["pass_no_payload", "preflight_allow", "preflight_deny"],
            "{extra:?} {header:?}"
        );
        let event = lines[2].event.as_ref().expect("an event");
        assert_eq!(
            event.forwarded.as_deref(),
            forwarded,
            "{extra:?} {header:?}"
        );
        assert_eq!(event.client.as_deref(), Some(CLIENT_V4_TEXT));
    }
    Ok(())
}

#[test]
fn a_request_that_only_looks_like_a_switch_leaves_the_connection_judged() -> Result<()> {
    require_root()?;
    // A client of a proxy's keep-alive pool sends what asks for a switch;
    // the server does not switch and the proxy pools the connection: the
    // next client's disallowed preflight on it is still judged.
    let mut port = 48000;
    for (extra, first) in [
        (
            "http2 = \"pass\"",
            &b"PRI /x HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        ),
        (
            "",
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\n",
        ),
        (
            "",
            b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        ),
    ] {
        port += 1;
        let stream = [first, &preflight(EVIL)[..]].concat();
        let lines = run(extra, &connection(port, &stream, &[first.len()]))?;
        assert_eq!(
            (lines[2].verdict.as_str(), lines[2].reason.as_str()),
            ("drop", "preflight_deny"),
            "{extra:?} {first:?}"
        );
    }
    Ok(())
}
