//! The program's connection tracking in the kernel, under
//! `BPF_PROG_TEST_RUN` through `replay`: whole
//! connections, frame after frame through one loaded program, the state
//! carried in its maps as on an interface. Each case is also run through
//! the userspace model of the same code (`stream_model`), which must agree
//! frame for frame. Needs root.

use anyhow::Result;
use cors_filter_tests::{
    frames::packet::{DST_PORT, DST_V4, SRC_V4, segment_frames},
    frames::replay::{assert_agrees, replay},
    oracles::stream_model::{Model, ModelPolicy},
};

const ALLOWED: &str = "https://app.example";
const ISN: u32 = 0xffff_fc00;

fn config(protect: bool) -> String {
    format!("ports = [{DST_PORT}]\nallow = [\"{ALLOWED}\"]\nprotect_unsafe_methods = {protect}\n")
}

fn preflight(origin: &str, path: &str) -> Vec<u8> {
    format!(
        "OPTIONS {path} HTTP/1.1\r\nHost: api.example\r\nAccess-Control-Request-Method: PUT\r\nOrigin: {origin}\r\n\r\n"
    )
    .into_bytes()
}

/// A connection from client port `port`: its SYN, then `stream` cut at
/// `cuts`, the segments sent in the order `order` gives (indexes).
fn connection(stream: &[u8], cuts: &[usize], order: &[usize]) -> Vec<(u32, Vec<u8>, bool)> {
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(stream.len());
    let segments: Vec<(u32, Vec<u8>, bool)> = bounds
        .windows(2)
        .map(|w| {
            (
                ISN.wrapping_add(1 + w[0] as u32),
                stream[w[0]..w[1]].to_vec(),
                false,
            )
        })
        .collect();
    std::iter::once((ISN, Vec::new(), true))
        .chain(order.iter().map(|&i| segments[i].clone()))
        .collect()
}

/// Runs the connections' segments (interleaved as listed) through the
/// kernel and the model; returns the kernel's reasons, after checking that
/// the model's outcomes and verdicts are the same.
fn run(protect: bool, segments: &[(u16, u32, Vec<u8>, bool)]) -> Result<Vec<(String, String)>> {
    let frames = segment_frames(segments);
    let lines = replay(&config(protect), &frames)?;
    let mut model = Model::new(ModelPolicy::allowing(&[ALLOWED], protect));
    let mut out = Vec::new();
    for ((port, seq, payload, syn), line) in segments.iter().zip(&lines) {
        let judged = model.segment(&packet_key(*port), *seq, payload, *syn);
        assert_agrees(line, &judged, &format!("{} bytes at {seq}", payload.len()));
        out.push((line.verdict.clone(), line.reason.clone()));
    }
    Ok(out)
}

/// The model's key for `Packet::ipv4`'s addresses and `port`.
fn packet_key(port: u16) -> cors_filter_common::stream::ConnKey {
    let (source, dest) = (SRC_V4.octets(), DST_V4.octets());
    let mut key = cors_filter_common::stream::ConnKey {
        source_port: port,
        dest_port: DST_PORT,
        family: cors_filter_common::event::FAMILY_IPV4 as u32,
        ..Default::default()
    };
    key.source_addr[..4].copy_from_slice(&source);
    key.dest_addr[..4].copy_from_slice(&dest);
    key
}

fn on(port: u16, conn: Vec<(u32, Vec<u8>, bool)>) -> Vec<(u16, u32, Vec<u8>, bool)> {
    conn.into_iter()
        .map(|(s, p, syn)| (port, s, p, syn))
        .collect()
}

#[test]
fn split_heads_are_judged_whole_in_the_kernel() -> Result<()> {
    let evil = preflight("https://evil.example", &format!("/x?{}", "q".repeat(1500)));
    let good = preflight(ALLOWED, &format!("/x?{}", "q".repeat(1500)));
    let mut segments = on(40001, connection(&evil, &[7, 1400], &[0, 1, 2]));
    segments.extend(on(40002, connection(&good, &[1448], &[0, 1])));
    let results = run(false, &segments)?;
    let reasons: Vec<&str> = results.iter().map(|(_, r)| r.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "pass_no_payload",
            "pass_head_part",
            "pass_head_part",
            "preflight_deny",
            "pass_no_payload",
            "pass_head_part",
            "preflight_allow"
        ]
    );
    assert_eq!(results[3].0, "drop");
    Ok(())
}

#[test]
fn order_retransmissions_and_bodies_in_the_kernel() -> Result<()> {
    let evil = preflight("https://evil.example", "/");
    // Out of order: the second part first (dropped), then both in order,
    // then the deciding part again (dropped again).
    let mut segments = on(40003, connection(&evil, &[30], &[1, 0, 1, 1]));
    // A POST whose body holds a disallowed preflight, then a GET.
    let body = [&evil[..], &[b'x'; 3000][..]].concat();
    let post = [
        format!(
            "POST /u HTTP/1.1\r\nOrigin: {ALLOWED}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
        &body,
        b"GET / HTTP/1.1\r\n\r\n",
    ]
    .concat();
    let cuts: Vec<usize> = (1..=post.len() / 1448).map(|i| i * 1448).collect();
    let order: Vec<usize> = (0..=cuts.len()).collect();
    segments.extend(on(40004, connection(&post, &cuts, &order)));
    let results = run(true, &segments)?;
    assert_eq!(results[1], ("drop".into(), "out_of_order".into()));
    assert_eq!(results[3], ("drop".into(), "preflight_deny".into()));
    assert_eq!(results[4], ("drop".into(), "connection_denied".into()));
    assert!(results[5..].iter().all(|(v, _)| v == "pass"), "{results:?}");
    Ok(())
}

/// Found by `kernel_differential`: a segment overlapping bytes already
/// parsed, sent again after the connection's next sequence number wrapped
/// past zero (the segment's own start before it). The model parses its new
/// bytes (the head ends there, malformed: dropped); the kernel must too.
#[test]
fn an_overlap_across_the_sequence_wrap_is_parsed_in_the_kernel() -> Result<()> {
    let head = b"PUT /x HTTP/1.1\r\nHost: api.example.com\r\nX-Pad: padding-padding-padding\r\nOrigin: \r\nContent-Length: 0\r\n\r\n";
    let isn: u32 = 0xffff_ffc8;
    let segments = vec![
        (40010, isn, Vec::new(), true),
        // Ends 3 bytes past the wrap.
        (40010, isn.wrapping_add(1), head[..58].to_vec(), false),
        // From 18 bytes before the wrap to the head's end.
        (40010, isn.wrapping_add(41), head[40..].to_vec(), false),
    ];
    let results = run(true, &segments)?;
    assert_eq!(results[2].0, "drop", "{results:?}");
    Ok(())
}

/// The line scan's bare-`\r` look, compiled for the kernel: a bare CR at
/// every offset of header values of lengths around the word and
/// whole-line bounds, at every alignment, whole and cut around it, makes
/// the allowed preflight malformed in the kernel as in the model (which
/// `run` checks frame for frame).
#[test]
fn a_bare_cr_anywhere_makes_the_head_malformed_in_the_kernel() -> Result<()> {
    let malformed = cors_filter_common::Counter::Malformed.name();
    let mut segments = Vec::new();
    let mut requests = 0;
    let mut port = 20000u16;
    for align in 0..8 {
        let path = format!("/{}", "p".repeat(align));
        let w = cors_filter_common::stream::WHOLE_LINE;
        for len in [1, 8, 9, 16, 17, 64, w - 1, w, w + 12] {
            for at in 0..len {
                let mut value = "v".repeat(len).into_bytes();
                value[at] = b'\r';
                let head = format!(
                    "OPTIONS {path} HTTP/1.1\r\nHost: api.example\r\nX-Filler: {}\r\nAccess-Control-Request-Method: PUT\r\nOrigin: {ALLOWED}\r\n\r\n",
                    String::from_utf8(value).unwrap()
                )
                .into_bytes();
                let cr = head.windows(10).position(|w| w == b"X-Filler: ").unwrap() + 10 + at;
                for cuts in [vec![], vec![cr], vec![cr + 1]] {
                    port += 1;
                    let order: Vec<usize> = (0..=cuts.len()).collect();
                    segments.extend(on(port, connection(&head, &cuts, &order)));
                    requests += 1;
                }
            }
        }
    }
    let results = run(false, &segments)?;
    let malformed_seen = results.iter().filter(|(_, r)| r == malformed).count();
    assert_eq!(
        malformed_seen, requests,
        "every request malformed in the kernel"
    );
    Ok(())
}
