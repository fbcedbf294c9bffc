//! Differential test of the program in the kernel against its userspace
//! model, on whole connections: generated keep-alive connections
//! (`stream_generate`), each from its own client port, cut and delivered
//! by the stream differential's simulated client TCP (reordered,
//! duplicated and overlapping segments, segments dropped to keep the order
//! sent again, what the server lacks retransmitted at the end), each
//! segment wrapped in a random Ethernet / VLAN / IPv4 or IPv6 (options,
//! extension headers) / TCP frame with its sequence number, after a SYN.
//!
//! The client's retransmissions depend on the filter's answers, and
//! `cors-filter replay` runs a whole capture at once: so the model
//! (`stream_model`, the same `stream::filter_segment` on in-memory tables)
//! runs first and makes the delivery, then exactly that frame sequence
//! (a few connections interleaved) goes through ONE loaded program, its
//! state carried in the maps from frame to frame. The kernel's verdict and
//! reason (the outcome's detail counter, else its counter) must equal the
//! model's on every frame. The model's runs are also checked against the
//! whole-stream reference (`stream_differential::check`), as the stream
//! differential does. Two ports: one that protects unsafe methods, one
//! that does not. A connection whose delivery takes `MAX_FRAMES` frames
//! or more (a long one cut into a few bytes a segment) is left out and
//! another generated, so that the run stays short; how many is printed.
//!
//! The suite runs 100,000 connections. `CORS_FILTER_DIFFERENTIAL=SEED:CONNECTIONS`
//! (e.g. `7:300000`) runs another seed, or more connections (in replays of at most
//! `BATCH` connections, each on a fresh program). Needs root (it loads
//! BPF); fails, never skips, without it.

use std::collections::BTreeMap;

use anyhow::Result;
use cors_filter_common::{
    Verdict,
    event::{FAMILY_IPV4, FAMILY_IPV6},
    stream::ConnKey,
};
use cors_filter_tests::{
    frames::packet::{
        DST_V4, DST_V6, ETH_P_8021AD, ETH_P_8021Q, Ipv6Ext, Packet, SRC_V4, SRC_V6, TCP_ACK,
        TCP_PSH, TCP_SYN,
    },
    frames::replay::replay,
    oracles::generate::Rng,
    oracles::reference::Listed,
    oracles::stream_differential::{
        SECOND_ORIGIN_METHODS, Seg, Tally, check, deliver, policies, report,
    },
    oracles::stream_generate::{self, ALLOWED},
    oracles::stream_model::Judged,
    oracles::stream_reference::read_stream,
    require_root,
};

/// Connections the suite's run compares (about 4.6 million frames, 90 s).
const CONNECTIONS: usize = 100_000;
/// Frames the suite's run must compare at least.
const MIN_FRAMES: usize = 1_000_000;
const SEED: u64 = 0x5eed_0c0f_f1e5_0004;
/// Connections replayed through one program: their client ports are
/// distinct.
const BATCH: usize = 50_000;
/// A connection whose delivery takes more frames (a long one cut into
/// bytes, sent again and again) is left out, and another one generated:
/// a few such would make most of the frames.
const MAX_FRAMES: usize = 400;
/// Connections sent at once, their frames interleaved.
const INTERLEAVED: usize = 4;

/// A port that protects unsafe methods, and one that does not.
const PROTECTING_PORT: u16 = 8080;
const OPEN_PORT: u16 = 8081;

/// The seed and the number of connections: the suite's, or a longer run's
/// from `CORS_FILTER_DIFFERENTIAL=SEED:CONNECTIONS`. A value that does not
/// parse fails the test rather than falling back.
fn run_size() -> (u64, usize) {
    let Ok(text) = std::env::var("CORS_FILTER_DIFFERENTIAL") else {
        return (SEED, CONNECTIONS);
    };
    let parsed = text
        .split_once(':')
        .and_then(|(seed, n)| Some((seed.parse().ok()?, n.parse().ok()?)));
    match parsed {
        Some((seed, n)) if n > 0 => (seed, n),
        _ => panic!("CORS_FILTER_DIFFERENTIAL={text:?}: expected SEED:CONNECTIONS"),
    }
}

/// The model's policies (`stream_differential::policies`) as a config:
/// enforcing, incomplete heads dropped.
fn config() -> String {
    let allow = [
        Listed::any_method(ALLOWED[0]).config_item(),
        Listed::only(ALLOWED[1], &SECOND_ORIGIN_METHODS).config_item(),
    ];
    format!(
        "ports = [{PROTECTING_PORT}, {OPEN_PORT}]\n\
         protect_unsafe_methods = true\nallow = [{}]\nmode = \"enforce\"\n\
         on_oversized_head = \"drop\"\n\
         [port.{OPEN_PORT}]\nprotect_unsafe_methods = false\n",
        allow.join(", ")
    )
}

/// How one connection's frames are wrapped: the same addresses, ports and
/// IP version on all, the rest drawn per frame.
#[derive(Clone, Copy, Debug)]
struct Wrapping {
    ipv6: bool,
    client_port: u16,
    port: u16,
}

impl Wrapping {
    /// The connection's key, as the program makes it from the frames.
    fn key(&self) -> ConnKey {
        let mut key = ConnKey {
            source_port: self.client_port,
            dest_port: self.port,
            family: if self.ipv6 { FAMILY_IPV6 } else { FAMILY_IPV4 } as u32,
            ..Default::default()
        };
        if self.ipv6 {
            key.source_addr = SRC_V6.octets();
            key.dest_addr = DST_V6.octets();
        } else {
            key.source_addr[..4].copy_from_slice(&SRC_V4.octets());
            key.dest_addr[..4].copy_from_slice(&DST_V4.octets());
        }
        key
    }

    /// A frame of this connection carrying `payload` at `seq`: VLAN tags,
    /// IP and TCP options, IPv6 extension headers, Ethernet padding drawn
    /// from `rng`. None of it may change the verdict.
    fn frame(&self, rng: &mut Rng, payload: &[u8], seq: u32, syn: bool) -> Vec<u8> {
        let mut packet = if self.ipv6 {
            let mut p = Packet::ipv6(payload);
            for _ in 0..rng.below(3) {
                p = p.ext(match rng.below(5) {
                    0 => Ipv6Ext::HopByHop {
                        len: 8 * (1 + rng.below(4)),
                    },
                    1 => Ipv6Ext::DestOpts {
                        len: 8 * (1 + rng.below(4)),
                    },
                    2 => Ipv6Ext::Auth {
                        len: 8 * (2 + rng.below(3)),
                    },
                    // An atomic fragment: the whole datagram, to be inspected.
                    3 => Ipv6Ext::Fragment {
                        offset: 0,
                        more: false,
                    },
                    _ => Ipv6Ext::Routing {
                        segments: 1 + rng.below(2) as u8,
                    },
                });
            }
            p
        } else {
            let mut p = Packet::ipv4(payload);
            if rng.one_in(4) {
                // Record-route-like option bytes: skipped by IHL.
                p = p.ipv4_options(&[0x01, 0x07, 0x07, 0x04, 0, 0, 0, 0][..1 + rng.below(8)]);
            }
            p
        };
        match rng.below(6) {
            0 => packet = packet.vlan(ETH_P_8021Q, 100),
            1 => packet = packet.vlan(ETH_P_8021AD, 10).vlan(ETH_P_8021Q, 20),
            _ => {}
        }
        if rng.one_in(3) {
            // MSS, SACK-permitted, timestamps.
            packet = packet.tcp_options(&[2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0]);
        }
        if rng.one_in(8) {
            packet = packet.trailer(b"OPTIONS / HTTP/1.1\r\n");
        }
        packet
            .src_port(self.client_port)
            .dst_port(self.port)
            .seq(seq)
            .tcp_flags(if syn { TCP_SYN } else { TCP_PSH | TCP_ACK })
            .build()
    }
}

/// One generated connection, delivered through the model.
struct Delivered {
    index: usize,
    bytes: Vec<u8>,
    wrapping: Wrapping,
    isn: u32,
    /// The segments in the order sent (`None`: the SYN), with the model's
    /// answers.
    segments: Vec<(Option<Seg>, Judged)>,
    requests: usize,
}

/// A frame of the capture: its connection (index in the batch), its
/// segment there, and its bytes.
struct Frame {
    conn: usize,
    segment: usize,
    bytes: Vec<u8>,
}

fn reason(judged: &Judged) -> (String, &'static str) {
    let verdict = match judged.verdict {
        Verdict::Pass => "pass",
        Verdict::Drop => "drop",
        Verdict::Reset => "reset",
    };
    (verdict.to_owned(), judged.outcome.replay_reason().name())
}

/// The connection's frames up to `upto` with both answers, and what
/// differs.
fn show(conn: &Delivered, upto: usize, kernel: &[(String, String)]) -> String {
    let mut text = format!(
        "connection {} (port {}, {}, client port {}, isn {:#x}):\n  bytes: b\"{}\"\n",
        conn.index,
        conn.wrapping.port,
        if conn.wrapping.ipv6 { "IPv6" } else { "IPv4" },
        conn.wrapping.client_port,
        conn.isn,
        conn.bytes.escape_ascii()
    );
    let from = upto.saturating_sub(40);
    for (i, ((seg, judged), got)) in conn.segments.iter().zip(kernel).enumerate() {
        if i < from || i > upto {
            continue;
        }
        let (verdict, reason) = reason(judged);
        let seg = seg.map_or("SYN".to_owned(), |(a, b)| format!("{a}..{b}"));
        let mark = if i == upto { "  <- differs" } else { "" };
        text.push_str(&format!(
            "    {seg}: model {verdict} {reason}, kernel {} {}{mark}\n",
            got.0, got.1
        ));
    }
    if let Some((Some((a, b)), _)) = conn.segments.get(upto) {
        text.push_str(&format!(
            "  the frame's payload: b\"{}\"\n",
            conn.bytes[*a..*b].escape_ascii()
        ));
    }
    text
}

#[test]
fn kernel_verdicts_agree_with_the_model_on_connections() -> Result<()> {
    require_root()?;
    let (seed, connections) = run_size();
    let started = std::time::Instant::now();
    let config = config();
    let mut tally = Tally::default();
    let mut by_reason: BTreeMap<(u16, String), usize> = BTreeMap::new();
    let (mut frames_compared, mut requests, mut model_problems) = (0, 0, Vec::new());
    let mut disagreements: Vec<String> = Vec::new();
    let (mut disagreeing, mut left_out) = (0, 0);
    let (mut first, mut index) = (0, 0);
    while first < connections {
        let count = BATCH.min(connections - first);
        // The model first: the delivery, with its answers.
        let (allowlist, mut models) = policies();
        let mut batch = Vec::with_capacity(count);
        while batch.len() < count {
            index += 1;
            let mut rng = Rng::new(seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let conn = stream_generate::connection(&mut rng);
            let wrapping = Wrapping {
                ipv6: rng.one_in(3),
                client_port: 1024 + batch.len() as u16,
                port: if conn.protects_unsafe {
                    PROTECTING_PORT
                } else {
                    OPEN_PORT
                },
            };
            let reading = read_stream(&conn.bytes, conn.protects_unsafe, &allowlist);
            let model = &mut models[conn.protects_unsafe as usize];
            let run = deliver(&mut rng, model, &wrapping.key(), &conn.bytes, &reading);
            if run.events.len() >= MAX_FRAMES {
                left_out += 1;
                continue;
            }
            let problems = check(&conn.bytes, &reading, &run, &mut tally);
            if !problems.is_empty() && model_problems.len() < 3 {
                model_problems.push(report(
                    index,
                    &conn.bytes,
                    conn.protects_unsafe,
                    &reading,
                    &run,
                    &problems,
                ));
            }
            let mut segments = vec![(None, run.syn)];
            segments.extend(run.events.iter().map(|e| (Some(e.seg), e.judged)));
            batch.push(Delivered {
                index,
                bytes: conn.bytes,
                wrapping,
                isn: run.isn,
                segments,
                requests: reading.requests.len(),
            });
        }
        // The frames, a few connections at a time interleaved.
        let mut rng = Rng::new(seed ^ 0x00f4_a3e5 ^ first as u64);
        let mut frames = Vec::new();
        let (mut next_conn, mut open): (usize, Vec<(usize, usize)>) = (0, Vec::new());
        while next_conn < batch.len() || !open.is_empty() {
            while open.len() < INTERLEAVED && next_conn < batch.len() {
                open.push((next_conn, 0));
                next_conn += 1;
            }
            let pick = rng.below(open.len());
            let (c, s) = open[pick];
            let conn = &batch[c];
            let (seg, _) = conn.segments[s];
            let bytes = match seg {
                None => conn.wrapping.frame(&mut rng, &[], conn.isn, true),
                Some((a, b)) => conn.wrapping.frame(
                    &mut rng,
                    &conn.bytes[a..b],
                    conn.isn.wrapping_add(1).wrapping_add(a as u32),
                    false,
                ),
            };
            frames.push(Frame {
                conn: c,
                segment: s,
                bytes,
            });
            if s + 1 == conn.segments.len() {
                open.swap_remove(pick);
            } else {
                open[pick].1 += 1;
            }
        }
        let capture: Vec<Vec<u8>> = frames.iter().map(|f| f.bytes.clone()).collect();
        let replayed = replay(&config, &capture)?;
        anyhow::ensure!(
            replayed.len() == frames.len(),
            "replay answered {} of {} frames",
            replayed.len(),
            frames.len()
        );
        // Frame for frame.
        let mut kernel: Vec<Vec<(String, String)>> = vec![Vec::new(); batch.len()];
        let mut first_difference: Vec<Option<usize>> = vec![None; batch.len()];
        for (frame, got) in frames.iter().zip(&replayed) {
            let conn = &batch[frame.conn];
            let (verdict, reason) = reason(&conn.segments[frame.segment].1);
            kernel[frame.conn].push((got.verdict.clone(), got.reason.clone()));
            *by_reason
                .entry((conn.wrapping.port, format!("{verdict} {reason}")))
                .or_default() += 1;
            frames_compared += 1;
            if (got.verdict.as_str(), got.reason.as_str()) != (verdict.as_str(), reason) {
                first_difference[frame.conn].get_or_insert(frame.segment);
            }
        }
        for (c, conn) in batch.iter().enumerate() {
            requests += conn.requests;
            if let Some(at) = first_difference[c] {
                disagreeing += 1;
                if disagreements.len() < 3 {
                    disagreements.push(show(conn, at, &kernel[c]));
                }
            }
        }
        first += count;
    }
    println!(
        "seed {seed}: {connections} connections ({left_out} generated left out: over {MAX_FRAMES} frames), {frames_compared} frames compared (kernel against model), {requests} requests read by the reference, {disagreeing} connections disagreeing, in {:.1?}",
        started.elapsed()
    );
    println!(
        "the model against the reference: {} requests compared ({} refused, {} collateral), {} segment outcomes checked ({} parsed from a body's end past a gap)",
        tally.requests, tally.refused, tally.collateral, tally.segments, tally.skipped
    );
    for ((port, class), count) in &by_reason {
        println!("  port {port}: {class}: {count}");
    }
    assert!(
        disagreements.is_empty(),
        "{disagreeing} of {connections} connections: the kernel and the model differ (seed {seed}); the first ones:\n{}",
        disagreements.join("\n")
    );
    assert!(
        model_problems.is_empty(),
        "the model disagrees with the reference; the first ones:\n{}",
        model_problems.join("\n")
    );
    assert!(
        frames_compared >= MIN_FRAMES * connections / CONNECTIONS,
        "only {frames_compared} frames compared"
    );
    // What the frames must exercise, or the generator or the delivery has
    // drifted.
    for (port, class) in [
        (PROTECTING_PORT, "drop unsafe_deny"),
        (PROTECTING_PORT, "drop preflight_deny"),
        (PROTECTING_PORT, "pass unsafe_allow"),
        (PROTECTING_PORT, "drop out_of_order"),
        (PROTECTING_PORT, "drop connection_denied"),
        (OPEN_PORT, "pass preflight_allow"),
        (OPEN_PORT, "drop preflight_deny"),
        (OPEN_PORT, "pass pass_retransmission"),
    ] {
        let n = by_reason
            .get(&(port, class.to_owned()))
            .copied()
            .unwrap_or(0);
        assert!(n >= 20, "only {n} frames to port {port} were {class}");
    }
    Ok(())
}
