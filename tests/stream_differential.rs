//! The connection tracking (`cors_filter_common::stream`, run by
//! `stream_model`) against a reference that reads whole connections
//! (`stream_reference`), on generated keep-alive connections
//! (`stream_generate`) cut into segments at random offsets and delivered
//! by a simulated client TCP, as `cors_filter_tests::oracles::stream_differential`
//! describes (what is checked is listed there). No workaround: every
//! disagreement fails the test.
//!
//! `CORS_FILTER_STREAM_DIFFERENTIAL=seed:count[:first]` runs another seed,
//! more connections, or (with `first`) replays from connection `first`;
//! `CORS_FILTER_STREAM_LIST=1` lists every disagreeing connection.

use cors_filter_common::{Outcome, stream::DEFAULT_MAX_HEAD_BYTES};
use cors_filter_tests::{
    oracles::generate::Rng,
    oracles::stream_differential::{
        Run, Tally, agrees, check, deliver, policies, report, run_plan,
    },
    oracles::stream_generate::{self, ALLOWED},
    oracles::stream_model::key,
    oracles::stream_reference::read_stream,
};

const DEFAULT_SEED: u64 = 0x5712_ea3d_1ff0_0001;
const DEFAULT_COUNT: usize = 100_000;

/// The connections to run: seed, count, first index.
fn settings() -> (u64, usize, usize) {
    let Ok(value) = std::env::var("CORS_FILTER_STREAM_DIFFERENTIAL") else {
        return (DEFAULT_SEED, DEFAULT_COUNT, 0);
    };
    let parse = |s: &str| -> u64 {
        s.strip_prefix("0x")
            .map_or_else(|| s.parse(), |h| u64::from_str_radix(h, 16))
            .unwrap_or_else(|_| {
                panic!("CORS_FILTER_STREAM_DIFFERENTIAL=seed:count[:first]: {value}")
            })
    };
    let parts: Vec<&str> = value.split(':').collect();
    (
        parse(parts[0]),
        parts.get(1).map_or(DEFAULT_COUNT as u64, |c| parse(c)) as usize,
        parts.get(2).map_or(0, |f| parse(f)) as usize,
    )
}

/// The filter's outcome of each segment sent, and whether it was parsed
/// from a body's end past a gap.
fn outcomes(run: &Run) -> Vec<(Outcome, bool)> {
    run.events
        .iter()
        .map(|e| (e.judged.outcome, e.skipped))
        .collect()
}

/// Body bytes passed past a gap (the server holds them; the client does
/// not send them again) do not stall the connection: the segment after
/// them, which ends the body and starts the next request, is parsed from
/// the body's end, and the gap's bytes, when they come, are old.
#[test]
fn a_segment_past_a_gap_reaching_the_body_end_is_parsed_from_there() {
    let bytes = b"PUT / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789GET / HTTP/1.1\r\n\r\n";
    let plan = [(0, 38), (43, 48), (38, 43), (48, 66)];
    agrees(bytes, false, &[38, 43, 48], &plan).unwrap_or_else(|report| panic!("{report}"));
    let got = outcomes(&run_plan(bytes, false, &[38, 43, 48], &plan).1);
    assert_eq!(
        got,
        [
            (Outcome::NotPreflight, false),
            (Outcome::Body, false),
            (Outcome::Body, false),
            (Outcome::NotPreflight, true),
        ]
    );
    // The same past a gap in a chunk's data, the segment reaching past the
    // chunk's end into a preflight the allowlist refuses: dropped as
    // denied; the gap's bytes, old, pass.
    let bytes = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n0\r\n\r\nOPTIONS / HTTP/1.1\r\nOrigin: https://evil.example\r\nAccess-Control-Request-Method: PUT\r\n\r\n";
    let head = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let cuts = [head + 5, head + 8];
    let plan = [(0, head + 5), (head + 8, bytes.len()), (head + 5, head + 8)];
    agrees(bytes, true, &cuts, &plan).unwrap_or_else(|report| panic!("{report}"));
    let got = outcomes(&run_plan(bytes, true, &cuts, &plan).1);
    assert_eq!(
        got,
        [
            (Outcome::NoOrigin, false),
            (Outcome::Denied, true),
            (Outcome::Retransmission, false),
            // The deciding segment, sent again: the server lacks it.
            (Outcome::ConnectionDenied, false),
        ]
    );
}

/// A judged head of the bound's bytes and one more, the blank line's `\n`
/// included, is incomplete (over the bound); one of the bound's bytes is
/// judged.
#[test]
fn a_judged_head_one_byte_over_the_bound_is_incomplete() {
    let start = format!(
        "OPTIONS / HTTP/1.1\r\nOrigin: {}\r\nAccess-Control-Request-Method: PUT\r\nX-Pad: ",
        ALLOWED[0]
    );
    for over in [0, 1] {
        let pad = DEFAULT_MAX_HEAD_BYTES as usize + over - start.len() - 4;
        let bytes = format!("{start}{}\r\n\r\n", "p".repeat(pad)).into_bytes();
        assert_eq!(bytes.len(), DEFAULT_MAX_HEAD_BYTES as usize + over);
        let (allowlist, _) = policies();
        let expected = read_stream(&bytes, false, &allowlist).requests[0].expected;
        assert_eq!(format!("{expected:?}"), ["Allowed", "Incomplete"][over]);
        if let Err(report) = agrees(&bytes, false, &[], &[(0, bytes.len())]) {
            let (problem, _) = report.split_once('\n').unwrap_or_default();
            let (_, filter) = report.split_once("filter:").unwrap_or_default();
            panic!("{problem}\n  filter:{filter}");
        }
    }
}

#[test]
fn generated_connections_agree_with_the_reference() {
    let (seed, count, first) = settings();
    let started = std::time::Instant::now();
    let (allowlist, mut models) = policies();
    let mut tally = Tally::default();
    let (mut disagreements, mut shown, mut stops) = (0, Vec::new(), 0);
    for index in first..first + count {
        let mut rng = Rng::new(seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let conn = stream_generate::connection(&mut rng);
        let reading = read_stream(&conn.bytes, conn.protects_unsafe, &allowlist);
        stops += reading.stop.is_some() as usize;
        let model = &mut models[conn.protects_unsafe as usize];
        let mut k = key(index as u16);
        k.source_addr[4..12].copy_from_slice(&(index as u64).to_le_bytes());
        let run = deliver(&mut rng, model, &k, &conn.bytes, &reading);
        model.tables.conns.borrow_mut().remove(&k);
        model.tables.heads.borrow_mut().remove(&k);
        let problems = check(&conn.bytes, &reading, &run, &mut tally);
        if !problems.is_empty() {
            disagreements += 1;
            if std::env::var_os("CORS_FILTER_STREAM_LIST").is_some() {
                println!("{index}: {}", problems.join("; "));
            }
            if shown.len() < 3 {
                shown.push(report(
                    index,
                    &conn.bytes,
                    conn.protects_unsafe,
                    &reading,
                    &run,
                    &problems,
                ));
            }
        }
    }
    println!(
        "seed {seed:#x}: {count} connections from {first}, {} requests compared ({} refused, {} lost with a refused segment: collateral), {} segment outcomes checked ({} parsed from a body's end past a gap), {stops} connections with an end to expectations, {disagreements} disagreeing, in {:.1?}",
        tally.requests,
        tally.refused,
        tally.collateral,
        tally.segments,
        tally.skipped,
        started.elapsed()
    );
    println!("requests by expected outcome: {:?}", tally.expected);
    assert!(
        disagreements == 0,
        "{disagreements} of {count} connections disagree (seed {seed:#x}; replay one with CORS_FILTER_STREAM_DIFFERENTIAL={seed:#x}:1:<connection>); the first:\n{}",
        shown.join("\n")
    );
}
