//! The connection tracking (`cors_filter_common::stream`, run by
//! `stream_model`) against a reference that reads whole connections
//! (`stream_reference`), on generated keep-alive connections
//! (`stream_generate`) cut into segments at random offsets and delivered
//! by a simulated client TCP: some segments reordered, duplicated, or
//! overlapping earlier ones; segments the filter drops to keep the order
//! (`OutOfOrder`, `HeadLost`) sent again. The server is a receiver that
//! takes passed bytes in order and holds passed bytes past a gap until it
//! is filled (Linux; a segment fully held is not sent again, as with SACK).
//!
//! Checked, per connection:
//! - every request before the first one the reference refuses is
//!   delivered whole (body included), unless it ends in the segment that
//!   decides a refusal (a dropped segment is dropped whole: counted, and
//!   printed, as collateral);
//! - the first refused request: the segment completing its head (for an
//!   oversized head: a segment of the head) is the first the filter drops
//!   for a decision, with the outcome the reference expects; the receiver
//!   never gets the head's last byte;
//! - each segment that completes requests the reference passes has the
//!   outcome of highest rank among theirs; no other segment carries a
//!   decision; a segment passed past a gap lies in one request's body.
//!
//! `CORS_FILTER_STREAM_DIFFERENTIAL=seed:count[:first]` runs another seed,
//! more connections, or (with `first`) replays from connection `first`.
//!
//! `CORS_FILTER_STREAM_KNOWN_BUGS=body-ahead,head-bound` (or `all`) works
//! around disagreements reported and not fixed yet, to look for others; the
//! default run has no workaround:
//! - `body-ahead`: body bytes passed past a gap are never parsed, so the
//!   segment after them is dropped as `OutOfOrder` for ever (the server has
//!   them, the client never sends them again). Worked around by a server
//!   that drops what it holds past a gap (Linux may, under memory pressure),
//!   so that the client sends it again.
//! - `head-bound`: a judged head of 16 KiB and one byte is judged, not
//!   incomplete (the blank line's `\n` is not counted against the bound).
//!   Worked around by a reference bound one byte higher.

use std::collections::VecDeque;

use cors_filter_common::{
    Method, MethodSet, Outcome, Verdict,
    stream::{ConnKey, DEFAULT_MAX_HEAD_BYTES},
};
use cors_filter_tests::{
    generate::Rng,
    reference::{Allowlist, Expected, Listed},
    stream_generate::{self, ALLOWED, Connection},
    stream_model::{Judged, Model, ModelPolicy, key},
    stream_reference::{Reading, read_stream_bounded},
};

const DEFAULT_SEED: u64 = 0x5712_ea3d_1ff0_0001;
const DEFAULT_COUNT: usize = 100_000;
const MSS: usize = 1460;
/// Times a segment dropped to keep the order is sent again before the
/// client gives up on the connection.
const MAX_RETRIES: u32 = 30;

/// A segment: payload bytes `start..end` of the stream.
type Seg = (usize, usize);

/// Whether the known bug `name` is to be worked around.
fn known_bug(name: &str) -> bool {
    std::env::var("CORS_FILTER_STREAM_KNOWN_BUGS")
        .is_ok_and(|v| v.split(',').any(|b| b == name || b == "all"))
}

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

/// The stream of `len` bytes cut at random offsets, in order.
fn cut(rng: &mut Rng, len: usize) -> Vec<Seg> {
    let max = match rng.below(6) {
        0 => 1 + rng.below(8),
        1 => 1 + rng.below(100),
        2 => MSS,
        _ => 1 + rng.below(MSS),
    };
    let mut segs = Vec::new();
    let mut at = 0;
    while at < len {
        let n = if max == MSS && !rng.one_in(4) {
            MSS
        } else {
            1 + rng.below(max)
        };
        let end = (at + n).min(len);
        segs.push((at, end));
        at = end;
    }
    segs
}

/// The order the client sends `segs` in: some swapped with the next, some
/// sent twice, some re-sent overlapping the next ones.
fn send_order(rng: &mut Rng, segs: &[Seg]) -> Vec<Seg> {
    let mut order: Vec<Seg> = segs.to_vec();
    let calm = rng.one_in(3);
    if calm {
        return order;
    }
    let mut i = 0;
    while i + 1 < order.len() {
        if rng.one_in(6) {
            order.swap(i, i + 1);
            i += 1;
        }
        i += 1;
    }
    for _ in 0..segs.len() / 4 + 1 {
        let s = segs[rng.below(segs.len())];
        match rng.below(3) {
            0 => {
                // A duplicate, later.
                let at = rng.below(order.len() + 1);
                order.insert(at, s);
            }
            _ => {
                // An overlap: from inside this segment to up to a MSS on.
                let start = s.0 + rng.below(s.1 - s.0);
                let end = (start + 1 + rng.below(MSS)).min(*segs.last().map(|(_, e)| e).unwrap());
                let after = order.iter().position(|x| *x == s).unwrap_or(0);
                let at = after + 1 + rng.below(order.len() - after);
                order.insert(at.min(order.len()), (start, end));
            }
        }
    }
    order
}

/// The server's receive queue: bytes up to `next` in order, and segments
/// held past a gap.
#[derive(Default)]
struct Receiver {
    next: usize,
    held: Vec<Seg>,
}

impl Receiver {
    fn take(&mut self, s: Seg) {
        self.held.push(s);
        loop {
            let before = self.next;
            for &(a, b) in &self.held {
                if a <= self.next && b > self.next {
                    self.next = b;
                }
            }
            if self.next == before {
                break;
            }
        }
        let next = self.next;
        self.held.retain(|&(_, b)| b > next);
    }

    fn has(&self, at: usize) -> bool {
        at < self.next || self.held.iter().any(|&(a, b)| a <= at && at < b)
    }

    fn has_all(&self, s: Seg) -> bool {
        (s.0..s.1).all(|at| self.has(at))
    }
}

/// One segment sent, and what the filter did with it.
#[derive(Clone, Debug)]
struct Event {
    seg: Seg,
    judged: Judged,
    /// Bytes parsed in order for the first time (the reference's count).
    new: Option<Seg>,
    /// Past the bytes parsed in order.
    ahead: bool,
}

struct Run {
    plan: Vec<Seg>,
    events: Vec<Event>,
    receiver: Receiver,
    isn: u32,
    /// A segment the client stopped sending again after `MAX_RETRIES`.
    gave_up: Option<Seg>,
}

/// Sends the connection's bytes through `model` as a client TCP would.
fn deliver(rng: &mut Rng, model: &mut Model, key: &ConnKey, bytes: &[u8], reneging: bool) -> Run {
    let isn = if rng.one_in(4) {
        u32::MAX - rng.below(4000) as u32
    } else {
        rng.next_u64() as u32
    };
    let segs = cut(rng, bytes.len());
    let plan = send_order(rng, &segs);
    deliver_plan(rng, model, key, bytes, isn, &segs, plan, reneging)
}

/// Sends `plan` (then, again, what of `segs` the server lacks) through
/// `model`; `rng` places the segments sent again.
#[allow(clippy::too_many_arguments)]
fn deliver_plan(
    rng: &mut Rng,
    model: &mut Model,
    key: &ConnKey,
    bytes: &[u8],
    isn: u32,
    segs: &[Seg],
    plan: Vec<Seg>,
    reneging: bool,
) -> Run {
    model.segment(key, isn, &[], true);
    let mut run = Run {
        plan: plan.clone(),
        events: Vec::new(),
        receiver: Receiver::default(),
        isn,
        gave_up: None,
    };
    let mut parsed = 0usize;
    let mut send = |run: &mut Run, s: Seg| -> Judged {
        let seq = isn.wrapping_add(1).wrapping_add(s.0 as u32);
        let judged = model.segment(key, seq, &bytes[s.0..s.1], false);
        let ahead = s.0 > parsed;
        let mut new = None;
        if judged.verdict == Verdict::Pass && !(reneging && ahead) {
            run.receiver.take(s);
            if s.0 <= parsed && parsed < s.1 {
                new = Some((parsed, s.1));
                parsed = s.1;
            }
        }
        run.events.push(Event {
            seg: s,
            judged,
            new,
            ahead,
        });
        judged
    };
    let mut queue: VecDeque<(Seg, u32)> = plan.iter().map(|&s| (s, 0)).collect();
    while let Some((s, tries)) = queue.pop_front() {
        let judged = send(&mut run, s);
        let reneged = reneging
            && judged.verdict == Verdict::Pass
            && run.events.last().is_some_and(|e| e.ahead);
        if reneged || matches!(judged.outcome, Outcome::OutOfOrder | Outcome::HeadLost) {
            if tries < MAX_RETRIES {
                let at = (1 + rng.below(4)).min(queue.len());
                queue.insert(at, (s, tries + 1));
            } else {
                run.gave_up.get_or_insert(s);
            }
        }
    }
    // Retransmission: what the server has not got, in order, while that
    // makes progress.
    loop {
        let before = run.receiver.next;
        if before == bytes.len() {
            break;
        }
        for &s in segs {
            if !run.receiver.has_all(s) {
                send(&mut run, s);
            }
        }
        if run.receiver.next == before {
            break;
        }
    }
    run
}

/// The highest-ranked outcomes among those of requests completed in one
/// segment win (`stream::rank`): not judged below judged.
fn rank(expected: Expected) -> u32 {
    match expected {
        Expected::NotJudged => 1,
        _ => 2,
    }
}

struct Tally {
    /// Requests compared, by expected outcome.
    expected: std::collections::BTreeMap<Expected, usize>,
    requests: usize,
    refused: usize,
    collateral: usize,
    segments: usize,
}

/// The disagreements of one connection's run with the reference's reading.
fn check(bytes: &[u8], reading: &Reading, run: &Run, tally: &mut Tally) -> Vec<String> {
    let mut problems = Vec::new();
    let requests = &reading.requests;
    let refused = requests.last().filter(|r| r.refused());
    let passed = &requests[..requests.len() - refused.is_some() as usize];
    // Where expectations end.
    let limit = match (refused, reading.stop) {
        (Some(r), _) => r.start,
        (None, Some((at, _))) => at,
        (None, None) => bytes.len(),
    };
    let decision = run.events.iter().position(|e| {
        e.judged.verdict != Verdict::Pass
            && !matches!(e.judged.outcome, Outcome::OutOfOrder | Outcome::HeadLost)
    });
    let decided_at = decision.map(|d| run.events[d].seg.0);
    for (i, e) in run.events.iter().enumerate() {
        if decision.is_some_and(|d| i >= d) {
            break;
        }
        let (a, b) = e.seg;
        let outcome = e.judged.outcome;
        if e.judged.verdict != Verdict::Pass {
            if !e.ahead {
                problems.push(format!(
                    "segment {a}..{b} is in order but dropped as {outcome:?}"
                ));
            }
            continue;
        }
        if e.ahead {
            if a < limit && (b > limit || !passed.iter().any(|r| r.head_end <= a && b <= r.end)) {
                problems.push(format!(
                    "segment {a}..{b} passed ({outcome:?}) past a gap, not inside one body"
                ));
            }
            continue;
        }
        let Some((na, nb)) = e.new else { continue };
        if nb > limit {
            continue;
        }
        let done: Vec<Expected> = passed
            .iter()
            .filter(|r| na < r.head_end && r.head_end <= nb)
            .map(|r| r.expected)
            .collect();
        let ok = match done.iter().map(|&x| rank(x)).max() {
            None => matches!(outcome, Outcome::Body | Outcome::HeadPart),
            Some(top) => done
                .iter()
                .filter(|&&x| rank(x) == top)
                .any(|x| x.matches(outcome)),
        };
        if ok {
            tally.segments += 1;
        } else {
            problems.push(format!(
                "segment {a}..{b} (new {na}..{nb}) completes heads expected {done:?}, got {outcome:?}"
            ));
        }
    }
    // Requests the reference passes are delivered whole, unless the
    // segment a refusal dropped held their end.
    for r in requests {
        *tally.expected.entry(r.expected).or_default() += 1;
    }
    for r in passed {
        tally.requests += 1;
        if decided_at.is_some_and(|d| r.end > d) {
            tally.collateral += 1;
            continue;
        }
        if run.receiver.next < r.end {
            problems.push(format!(
                "request {}..{} ({:?}) not delivered whole: the server has {} bytes in order{}",
                r.start,
                r.end,
                r.expected,
                run.receiver.next,
                run.gave_up.map_or(String::new(), |(a, b)| format!(
                    " (the client gave up on segment {a}..{b}, dropped {} times to keep the order)",
                    MAX_RETRIES + 1
                ))
            ));
        }
    }
    match (refused, decision) {
        (Some(r), None) => problems.push(format!(
            "request {}..{} expected {:?}, never dropped",
            r.start, r.head_end, r.expected
        )),
        (Some(r), Some(d)) => {
            tally.requests += 1;
            tally.refused += 1;
            let e = &run.events[d];
            let incomplete = matches!(
                r.expected,
                Expected::Incomplete | Expected::UnsafeIncomplete
            );
            let placed = if incomplete {
                e.seg.0 < r.head_end && e.seg.1 > r.start
            } else {
                e.seg.0 < r.head_end && e.seg.1 >= r.head_end && !e.ahead
            };
            if !placed || !r.expected.matches(e.judged.outcome) {
                problems.push(format!(
                    "request {}..{} expected {:?}; the first segment dropped for a decision is {}..{}, {:?}",
                    r.start, r.head_end, r.expected, e.seg.0, e.seg.1, e.judged.outcome
                ));
            }
            if run.receiver.has(r.head_end - 1) {
                problems.push(format!(
                    "the server got the whole refused head {}..{}",
                    r.start, r.head_end
                ));
            }
        }
        (None, Some(d)) => {
            let e = &run.events[d];
            if e.seg.1 <= limit {
                problems.push(format!(
                    "segment {}..{} dropped as {:?}; the reference refuses nothing there",
                    e.seg.0, e.seg.1, e.judged.outcome
                ));
            }
        }
        (None, None) => {}
    }
    problems
}

fn report(
    index: usize,
    conn: &Connection,
    reading: &Reading,
    run: &Run,
    problems: &[String],
) -> String {
    let mut text = format!(
        "connection {index} (protects_unsafe {}, isn {:#x}): {}\n  bytes: b\"{}\"\n  reference: {:?}\n  sent: {:?}\n  filter:\n",
        conn.protects_unsafe,
        run.isn,
        problems.join("; "),
        conn.bytes.escape_ascii(),
        reading,
        run.plan,
    );
    for e in run.events.iter().take(80) {
        text.push_str(&format!(
            "    {:?} -> {:?} {:?}{}\n",
            e.seg,
            e.judged.outcome,
            e.judged.verdict,
            if e.ahead { " (ahead)" } else { "" }
        ));
    }
    text
}

/// The allowlist and the filter's policies (not protecting, protecting).
fn policies() -> (Allowlist, [Model; 2]) {
    // The second origin is allowed some methods only.
    const METHODS: [&str; 2] = ["GET", "POST"];
    let allowlist = Allowlist::new(&[
        Listed::any_method(ALLOWED[0]),
        Listed::only(ALLOWED[1], &METHODS),
    ]);
    let models = [false, true].map(|p| {
        let mut policy = ModelPolicy::allowing(&ALLOWED, p);
        policy.allow[1].1 = MethodSet::NONE.with(Method::Get).with(Method::Post);
        Model::new(policy)
    });
    (allowlist, models)
}

/// The disagreements of `bytes` cut at `cuts` and sent in the order of
/// `plan` (no workaround), as a report.
fn replay(bytes: &[u8], protects_unsafe: bool, cuts: &[usize], plan: &[Seg]) -> Option<String> {
    let (allowlist, mut models) = policies();
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(bytes.len());
    let segs: Vec<Seg> = bounds.windows(2).map(|w| (w[0], w[1])).collect();
    let conn = Connection {
        bytes: bytes.to_vec(),
        protects_unsafe,
    };
    let reading = read_stream_bounded(
        bytes,
        protects_unsafe,
        &allowlist,
        DEFAULT_MAX_HEAD_BYTES as usize,
    );
    let model = &mut models[protects_unsafe as usize];
    let run = deliver_plan(
        &mut Rng::new(1),
        model,
        &key(1),
        bytes,
        7,
        &segs,
        plan.to_vec(),
        false,
    );
    let mut tally = Tally {
        expected: Default::default(),
        requests: 0,
        refused: 0,
        collateral: 0,
        segments: 0,
    };
    let problems = check(bytes, &reading, &run, &mut tally);
    (!problems.is_empty()).then(|| report(0, &conn, &reading, &run, &problems))
}

/// Reported (stream.rs, not fixed yet): body bytes passed past a gap are
/// never parsed, so the segment after them, which ends the body and starts
/// the next request, is dropped as `OutOfOrder` for ever: the server holds
/// the body bytes and the client never sends them again.
#[test]
fn body_bytes_passed_past_a_gap_do_not_stall_the_connection() {
    let bytes = b"PUT / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789GET / HTTP/1.1\r\n\r\n";
    let plan = [(0, 38), (43, 48), (38, 43), (48, 66)];
    if let Some(report) = replay(bytes, false, &[38, 43, 48], &plan) {
        panic!("{report}");
    }
}

/// Reported (stream.rs, not fixed yet): a judged head of 16 KiB and one
/// byte, the blank line's `\n` included, is judged; it is over the bound.
#[test]
fn a_judged_head_one_byte_over_the_bound_is_incomplete() {
    let start = format!(
        "OPTIONS / HTTP/1.1\r\nOrigin: {}\r\nAccess-Control-Request-Method: PUT\r\nX-Pad: ",
        ALLOWED[0]
    );
    let pad = DEFAULT_MAX_HEAD_BYTES as usize + 1 - start.len() - 4;
    let bytes = format!("{start}{}\r\n\r\n", "p".repeat(pad)).into_bytes();
    assert_eq!(bytes.len(), DEFAULT_MAX_HEAD_BYTES as usize + 1);
    if let Some(report) = replay(&bytes, false, &[], &[(0, bytes.len())]) {
        let (problem, _) = report.split_once('\n').unwrap_or_default();
        let (_, filter) = report.split_once("filter:").unwrap_or_default();
        panic!("{problem}\n  filter:{filter}");
    }
}

#[test]
fn generated_connections_agree_with_the_reference() {
    let (seed, count, first) = settings();
    let reneging = known_bug("body-ahead");
    let max_head_bytes = DEFAULT_MAX_HEAD_BYTES as usize + known_bug("head-bound") as usize;
    let started = std::time::Instant::now();
    let (allowlist, mut models) = policies();
    let mut tally = Tally {
        expected: Default::default(),
        requests: 0,
        refused: 0,
        collateral: 0,
        segments: 0,
    };
    let (mut disagreements, mut shown, mut stops) = (0, Vec::new(), 0);
    for index in first..first + count {
        let mut rng = Rng::new(seed ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let conn = stream_generate::connection(&mut rng);
        let reading = read_stream_bounded(
            &conn.bytes,
            conn.protects_unsafe,
            &allowlist,
            max_head_bytes,
        );
        stops += reading.stop.is_some() as usize;
        let model = &mut models[conn.protects_unsafe as usize];
        let mut k = key(index as u16);
        k.source_addr[4..12].copy_from_slice(&(index as u64).to_le_bytes());
        let run = deliver(&mut rng, model, &k, &conn.bytes, reneging);
        model.tables.conns.borrow_mut().remove(&k);
        model.tables.heads.borrow_mut().remove(&k);
        let problems = check(&conn.bytes, &reading, &run, &mut tally);
        if !problems.is_empty() {
            disagreements += 1;
            if std::env::var_os("CORS_FILTER_STREAM_LIST").is_some() {
                println!("{index}: {}", problems.join("; "));
            }
            if shown.len() < 3 {
                shown.push(report(index, &conn, &reading, &run, &problems));
            }
        }
    }
    println!(
        "seed {seed:#x}: {count} connections from {first}, {} requests compared ({} refused, {} lost with a refused segment), {} segment outcomes checked, {stops} connections with an end to expectations, {disagreements} disagreeing, in {:.1?}",
        tally.requests,
        tally.refused,
        tally.collateral,
        tally.segments,
        started.elapsed()
    );
    println!("requests by expected outcome: {:?}", tally.expected);
    assert!(
        disagreements == 0,
        "{disagreements} of {count} connections disagree (seed {seed:#x}; replay one with CORS_FILTER_STREAM_DIFFERENTIAL={seed:#x}:1:<connection>); the first:\n{}",
        shown.join("\n")
    );
}
