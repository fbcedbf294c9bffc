//! The connection tracking's parser (`cors_filter_common::stream`), run in
//! userspace through `stream_model`: heads cut at every byte, long heads,
//! pipelined requests, bodies that look like requests, order, and the
//! bounds. No root, no kernel.

use cors_filter_common::{
    Method, Outcome, Verdict,
    stream::{DEFAULT_MAX_HEAD_BYTES, MAX_HEAD_LINES, WHOLE_LINE},
};
use cors_filter_tests::oracles::stream_model::{Judged, Model, ModelPolicy, key};

const ALLOWED: &str = "https://app.example";
const ISN: u32 = 0xffff_ff00; // sequence numbers wrap within the tests

fn model(protects_unsafe: bool) -> Model {
    Model::new(ModelPolicy::allowing(&[ALLOWED], protects_unsafe))
}

fn preflight(origin: &str, path: &str, extra: &str) -> Vec<u8> {
    format!(
        "OPTIONS {path} HTTP/1.1\r\nHost: api.example\r\nAccess-Control-Request-Method: PUT\r\n{extra}Origin: {origin}\r\nAccept: */*\r\n\r\n"
    )
    .into_bytes()
}

/// Sends `stream` on a new connection in segments cut at `cuts` (offsets),
/// in order; returns each segment's result.
fn send(model: &mut Model, port: u16, stream: &[u8], cuts: &[usize]) -> Vec<Judged> {
    let k = key(port);
    model.segment(&k, ISN, &[], true);
    let mut bounds = vec![0];
    bounds.extend(cuts.iter().copied().filter(|&c| c > 0 && c < stream.len()));
    bounds.push(stream.len());
    bounds
        .windows(2)
        .map(|w| {
            let seq = ISN.wrapping_add(1).wrapping_add(w[0] as u32);
            model.segment(&k, seq, &stream[w[0]..w[1]], false)
        })
        .collect()
}

fn verdicts(results: &[Judged]) -> Vec<Verdict> {
    results.iter().map(|r| r.verdict).collect()
}

#[test]
fn a_whole_preflight_in_one_segment_is_judged() {
    let mut m = model(false);
    let allowed = send(&mut m, 1, &preflight(ALLOWED, "/", ""), &[]);
    assert_eq!(allowed[0].outcome, Outcome::Allowed);
    let denied = send(&mut m, 2, &preflight("https://evil.example", "/", ""), &[]);
    assert_eq!(denied[0].outcome, Outcome::Denied);
    assert_eq!(denied[0].verdict, Verdict::Drop);
    assert_eq!(denied[0].method, Method::Put);
}

#[test]
fn a_head_cut_at_any_byte_is_judged_by_its_last_segment() {
    for (origin, expected) in [
        (ALLOWED, Outcome::Allowed),
        ("https://evil.example", Outcome::Denied),
    ] {
        let request = preflight(origin, "/", "");
        for cut in 1..request.len() {
            let mut m = model(false);
            let results = send(&mut m, 7, &request, &[cut]);
            assert_eq!(
                results[0].verdict,
                Verdict::Pass,
                "cut {cut}: the first part is harmless"
            );
            assert_eq!(results[1].outcome, expected, "cut at {cut}");
        }
        // Every byte its own segment.
        let mut m = model(false);
        let cuts: Vec<usize> = (1..request.len()).collect();
        let results = send(&mut m, 8, &request, &cuts);
        assert_eq!(results.last().unwrap().outcome, expected);
        assert!(
            results[..results.len() - 1]
                .iter()
                .all(|r| r.outcome == Outcome::HeadPart)
        );
    }
}

#[test]
fn long_urls_and_many_headers_are_judged_whole() {
    let mut m = model(false);
    let long_path = format!("/x?{}", "a".repeat(3000));
    let request = preflight("https://evil.example", &long_path, "");
    let results = send(&mut m, 1, &request, &[1448, 2896]);
    assert_eq!(
        verdicts(&results),
        [Verdict::Pass, Verdict::Pass, Verdict::Drop]
    );
    let headers: String = (0..14)
        .map(|i| format!("x-custom-header-with-a-long-name-{i:02}-{}", "h".repeat(40)))
        .collect::<Vec<_>>()
        .join(",");
    let request = preflight(
        "https://evil.example",
        "/",
        &format!("Access-Control-Request-Headers: {headers}\r\n"),
    );
    let results = send(&mut m, 2, &request, &[]);
    assert_eq!(results[0].outcome, Outcome::Denied);
    let results = send(
        &mut m,
        3,
        &preflight(ALLOWED, &long_path, ""),
        &[1448, 2896],
    );
    assert_eq!(results[2].outcome, Outcome::Allowed);
}

#[test]
fn a_denied_connection_stays_denied() {
    let mut m = model(false);
    let request = preflight("https://evil.example", "/", "");
    let k = key(9);
    m.segment(&k, ISN, &[], true);
    let first = m.segment(&k, ISN + 1, &request[..10], false);
    assert_eq!(first.outcome, Outcome::HeadPart);
    let rest = m.segment(&k, ISN + 11, &request[10..], false);
    assert_eq!(rest.outcome, Outcome::Denied);
    // Retransmissions: the first part passes again, the deciding part is dropped.
    assert_eq!(
        m.segment(&k, ISN + 1, &request[..10], false).outcome,
        Outcome::Retransmission
    );
    for _ in 0..3 {
        let again = m.segment(&k, ISN + 11, &request[10..], false);
        assert_eq!(
            (again.outcome, again.verdict),
            (Outcome::ConnectionDenied, Verdict::Drop)
        );
    }
    let whole = m.segment(&k, ISN + 1, &request, false);
    assert_eq!(whole.verdict, Verdict::Drop);
}

#[test]
fn pipelined_requests_are_each_judged() {
    let mut m = model(false);
    let mut stream = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
    stream.extend(preflight("https://evil.example", "/", ""));
    let results = send(&mut m, 1, &stream, &[]);
    assert_eq!(results[0].outcome, Outcome::Denied);
    let mut stream = preflight(ALLOWED, "/", "");
    stream.extend(preflight(ALLOWED, "/b", ""));
    stream.extend(b"GET / HTTP/1.1\r\n\r\n");
    let results = send(&mut m, 2, &stream, &[]);
    assert_eq!(results[0].outcome, Outcome::Allowed);
}

#[test]
fn bodies_are_never_read_as_requests() {
    let mut m = model(true);
    let evil = preflight("https://evil.example", "/", "");
    let body = [&evil[..], &b"x".repeat(5000)].concat();
    let post = [
        format!(
            "POST /upload HTTP/1.1\r\nOrigin: {ALLOWED}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
        &body,
        b"GET /next HTTP/1.1\r\n\r\n",
    ]
    .concat();
    let cuts: Vec<usize> = (1..post.len() / 1448 + 1).map(|i| i * 1448).collect();
    let results = send(&mut m, 1, &post, &cuts);
    assert!(
        results.iter().all(|r| r.verdict == Verdict::Pass),
        "{results:?}"
    );
    assert_eq!(results[0].outcome, Outcome::UnsafeAllowed);

    // A single-line JSON body with no line end, in MSS-sized segments.
    let json = format!("{{\"data\":\"{}\"}}", "v ".repeat(100_000));
    let post = [
        format!(
            "POST /api HTTP/1.1\r\nOrigin: {ALLOWED}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            json.len()
        )
        .as_bytes(),
        json.as_bytes(),
    ]
    .concat();
    let cuts: Vec<usize> = (1..post.len() / 1448 + 1).map(|i| i * 1448).collect();
    let results = send(&mut m, 2, &post, &cuts);
    assert!(results.iter().all(|r| r.verdict == Verdict::Pass));
    assert!(results[1..].iter().all(|r| r.outcome == Outcome::Body));
}

#[test]
fn chunked_bodies_are_followed_to_their_end() {
    let mut m = model(true);
    let evil = preflight("https://evil.example", "/", "");
    let mut stream = format!(
        "POST /c HTTP/1.1\r\nOrigin: {ALLOWED}\r\nTransfer-Encoding: gzip, Chunked \r\n\r\n{:x};ext=1\r\n",
        evil.len()
    )
    .into_bytes();
    stream.extend(&evil);
    stream.extend(b"\r\n5\r\nhello\r\n0\r\nTrailer: x\r\n\r\n");
    let after = stream.len();
    stream.extend(preflight("https://evil.example", "/after", ""));
    let results = send(&mut m, 1, &stream, &[after]);
    assert_eq!(results[0].outcome, Outcome::UnsafeAllowed, "{results:?}");
    assert_eq!(results[1].outcome, Outcome::Denied);
    // Cut everywhere, the body is still body.
    let cuts: Vec<usize> = (1..after).collect();
    let results = send(&mut m, 2, &stream[..after], &cuts);
    assert!(results.iter().all(|r| r.verdict == Verdict::Pass));
}

#[test]
fn new_head_bytes_out_of_order_are_dropped_until_they_come_in_order() {
    let mut m = model(false);
    let request = preflight(ALLOWED, "/", "");
    let k = key(4);
    m.segment(&k, ISN, &[], true);
    let late = m.segment(&k, ISN + 21, &request[20..], false);
    assert_eq!(
        (late.outcome, late.verdict),
        (Outcome::OutOfOrder, Verdict::Drop)
    );
    assert_eq!(
        m.segment(&k, ISN + 1, &request[..20], false).outcome,
        Outcome::HeadPart
    );
    assert_eq!(
        m.segment(&k, ISN + 21, &request[20..], false).outcome,
        Outcome::Allowed
    );
    // An overlap parses only its new bytes.
    let next = preflight("https://evil.example", "/", "");
    let base = ISN.wrapping_add(1 + request.len() as u32);
    m.segment(&k, base, &next[..30], false);
    let overlap = m.segment(&k, base.wrapping_add(10), &next[10..], false);
    assert_eq!(overlap.outcome, Outcome::Denied);
}

#[test]
fn body_bytes_out_of_order_pass() {
    let mut m = model(false);
    let k = key(5);
    m.segment(&k, ISN, &[], true);
    let head = b"PUT /f HTTP/1.1\r\nContent-Length: 3000\r\n\r\n";
    assert_eq!(m.segment(&k, ISN + 1, head, false).verdict, Verdict::Pass);
    let start = ISN.wrapping_add(1 + head.len() as u32);
    let ahead = m.segment(&k, start.wrapping_add(1000), &[b'x'; 1000], false);
    assert_eq!(
        (ahead.outcome, ahead.verdict),
        (Outcome::Body, Verdict::Pass)
    );
    // Past the body's end: may hold the next head.
    let past = m.segment(&k, start.wrapping_add(3100), &[b'x'; 1000], false);
    assert_eq!(past.outcome, Outcome::OutOfOrder);
    // From inside the body to past its end: parsed from the body's end
    // (`stream::skip_to_body_end`), here the next request's head.
    let next = b"OPTIONS / HTTP/1.1\r\nOrigin: https://evil.example\r\nAccess-Control-Request-Method: PUT\r\n\r\n";
    let across = [&[b'x'; 500][..], next].concat();
    let across = m.segment(&k, start.wrapping_add(2500), &across, false);
    assert_eq!(
        (across.outcome, across.verdict),
        (Outcome::Denied, Verdict::Drop)
    );
    // The gap's bytes, when they come, are old: before the denied head,
    // they pass.
    let gap = m.segment(&k, start, &[b'x'; 1000], false);
    assert_eq!(gap.outcome, Outcome::Retransmission);
}

#[test]
fn oversized_judged_heads_are_dropped() {
    let mut m = model(true);
    let huge = format!("X-Pad: {}\r\n", "p".repeat(DEFAULT_MAX_HEAD_BYTES as usize));
    let results = send(&mut m, 1, &preflight(ALLOWED, "/", &huge), &[1448]);
    assert_eq!(results[1].outcome, Outcome::Incomplete);
    assert_eq!(results[1].verdict, Verdict::Drop);
    let many: String = (0..MAX_HEAD_LINES)
        .map(|i| format!("X-{i}: v\r\n"))
        .collect();
    let results = send(&mut m, 2, &preflight(ALLOWED, "/", &many), &[]);
    assert_eq!(results[0].outcome, Outcome::Incomplete);
    // A GET is not judged: any length passes.
    let get = format!("GET / HTTP/1.1\r\n{huge}\r\n");
    let results = send(&mut m, 3, get.as_bytes(), &[]);
    assert_eq!(results[0].outcome, Outcome::NotPreflight);
}

#[test]
fn lenient_request_lines_are_requests() {
    let origin = "Origin: https://evil.example\r\nAccess-Control-Request-Method: PUT\r\n\r\n";
    for line in [
        "OPTIONS / HTTP/1.1 \r\n",
        "OPTIONS / HTTP/1.11\r\n",
        "\rOPTIONS / HTTP/1.1\r\n",
        "\r\n\r\nOPTIONS / HTTP/1.1\r\n",
        " OPTIONS / HTTP/1.1\r\n",
        "OPTIONS\t/\tHTTP/1.1\r\n",
        "OPTIONS  /  HTTP/1.1\n",
        "OPTIONS / HTTP/1.0\r\n",
        "OPTIONS / HTTP/01.1\r\n",
    ] {
        let mut m = model(false);
        let results = send(&mut m, 1, format!("{line}{origin}").as_bytes(), &[]);
        assert_eq!(results[0].outcome, Outcome::Denied, "{line:?}");
    }
}

#[test]
fn connections_seen_mid_stream_are_picked_up_at_a_request() {
    let mut m = model(false);
    let k = key(6);
    let body = m.segment(&k, 1000, b"tail of some body", false);
    assert_eq!(
        (body.outcome, body.verdict),
        (Outcome::Untracked, Verdict::Pass)
    );
    let request = preflight("https://evil.example", "/", "");
    assert_eq!(
        m.segment(&k, 5000, &request, false).outcome,
        Outcome::Denied
    );
}

#[test]
fn a_head_whose_state_is_lost_is_dropped() {
    let mut m = model(false);
    m.tables.head_room = Some(0);
    let request = preflight("https://evil.example", "/", "");
    let results = send(&mut m, 1, &request, &[40]);
    assert_eq!(results[0].outcome, Outcome::HeadLost);
    assert_eq!(results[0].verdict, Verdict::Drop);
    // The connection state evicted, the open head remains: dropped too.
    let mut m = model(false);
    let k = key(2);
    m.segment(&k, ISN, &[], true);
    m.segment(&k, ISN + 1, &request[..40], false);
    m.tables.conns.borrow_mut().clear();
    let rest = m.segment(&k, ISN + 41, &request[40..], false);
    assert_eq!(
        (rest.outcome, rest.verdict),
        (Outcome::HeadLost, Verdict::Drop)
    );
}

#[test]
fn after_upgrade_and_connect_requests_are_judged_until_other_bytes_come() {
    let mut m = model(true);
    let ws = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    let connect = b"CONNECT api.example:443 HTTP/1.1\r\nHost: api.example:443\r\n\r\n";
    let evil = preflight("https://evil.example", "/", "");
    // The server did not switch (a proxy's pooled connection goes on with
    // other clients' requests): they are judged.
    for (port, switch) in [(1, &ws[..]), (2, &connect[..])] {
        let results = send(&mut m, port, &[switch, &evil].concat(), &[switch.len()]);
        assert_eq!(results[1].outcome, Outcome::Denied, "{switch:?}");
    }
    // It did: a WebSocket frame (masked, from the client) or a TLS record
    // starts with a byte no request starts with, and the tracking ends.
    let frame = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58";
    let tls = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
    for (port, switch, after) in [(3, &ws[..], &frame[..]), (4, &connect[..], &tls[..])] {
        let stream = [switch, after, &evil].concat();
        let results = send(
            &mut m,
            port,
            &stream,
            &[switch.len(), switch.len() + after.len()],
        );
        assert_eq!(results[1].outcome, Outcome::NotHttp, "{switch:?}");
        assert_eq!(results[2].outcome, Outcome::Untracked, "{switch:?}");
    }
}

/// A `\r` not followed by `\n` anywhere in a judged head's header lines:
/// Python's `http.server` ends a line there, so the bytes after it may be
/// a header the filter would read as part of another line. At every offset
/// in lines of every length up to past the [`WHOLE_LINE`] bytes a step
/// reads whole, at every alignment of the line in the buffer, whole and
/// cut around the `\r`, the head is malformed (and an allowed origin does
/// not save it).
#[test]
fn a_bare_cr_anywhere_in_a_judged_head_makes_it_malformed() {
    let mut m = model(false);
    let mut port: u16 = 100;
    for align in 0..8 {
        let path = format!("/{}", "p".repeat(align));
        let w = WHOLE_LINE;
        let around_whole_line = [w - 2, w - 1, w, w + 1, w + 12];
        for len in [1, 7, 8, 9, 15, 16, 17, 40, 63, 64, 65, 100]
            .into_iter()
            .chain(around_whole_line)
        {
            for at in 0..len {
                let mut value = "v".repeat(len).into_bytes();
                value[at] = b'\r';
                let extra = format!("X-Filler: {}\r\n", String::from_utf8(value).unwrap());
                let request = preflight(ALLOWED, &path, &extra);
                let line = request
                    .windows(10)
                    .position(|w| w == b"X-Filler: ")
                    .unwrap();
                let cr = line + 10 + at;
                for cuts in [vec![], vec![cr], vec![cr + 1]] {
                    port = port.wrapping_add(1);
                    let results = send(&mut m, port, &request, &cuts);
                    let last = results.last().unwrap();
                    assert_eq!(
                        (last.outcome, last.verdict),
                        (Outcome::Malformed, Verdict::Drop),
                        "a bare CR at {at} of a {len}-byte value, path {path:?}, cuts {cuts:?}"
                    );
                }
            }
        }
    }
    // In the values the filter reads, too.
    for extra_origin in ["https://app.\rexample", "\rhttps://app.example"] {
        let request = preflight(extra_origin, "/", "");
        let results = send(&mut m, 1, &request, &[]);
        assert_eq!(results[0].outcome, Outcome::Malformed, "{extra_origin:?}");
    }
}
