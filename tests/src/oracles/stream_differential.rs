//! The connection tracking (`cors_filter_common::stream`, run by
//! [`stream_model`](crate::oracles::stream_model)) against a reference that reads
//! whole connections ([`stream_reference`](crate::oracles::stream_reference)): a
//! connection's bytes, cut into segments, delivered by a simulated client
//! TCP, and what the filter did checked against the reference's reading.
//! `tests/stream_differential.rs` runs it on generated connections, the fuzz
//! target `stream` (`cors-filter-common/fuzz`) on arbitrary bytes
//! ([`agrees`]), and `tests/kernel_differential.rs` takes the frames it
//! sends to the kernel.
//!
//! The client TCP sends the segments in a random order: some reordered,
//! duplicated, or overlapping earlier ones; segments the filter drops to
//! keep the order (`OutOfOrder`, `HeadLost`) are sent again. The server is
//! a receiver that takes passed bytes in order and holds passed bytes past
//! a gap until it is filled (Linux; a segment fully held is not sent again,
//! as with SACK).
//!
//! A segment passed past a gap that lies inside one body's data (a
//! `Content-Length` body, or one chunk's data) and reaches past its end is
//! parsed from the end of that data (`stream::skip_to_body_end`): its
//! requests are checked like those of a segment in order, and the gap's
//! bytes, when they come, are old.
//!
//! Checked ([`check`]), per connection:
//! - every request before the first one the reference refuses is
//!   delivered whole (body included), unless it ends in the segment that
//!   decides a refusal (a dropped segment is dropped whole: counted as
//!   collateral);
//! - the first refused request: the segment completing its head (for an
//!   oversized head: a segment of the head) is the first the filter drops
//!   for a decision, with the outcome the reference expects; the receiver
//!   never gets the head's last byte;
//! - each segment that completes requests the reference passes has the
//!   outcome of highest rank among theirs; no other segment carries a
//!   decision; a segment passed past a gap lies in one request's body;
//!   no segment in order is dropped before the decision.

use std::collections::{BTreeMap, VecDeque};

use cors_filter_common::{Method, MethodSet, Outcome, Verdict, stream::ConnKey};

use crate::{
    oracles::generate::Rng,
    oracles::reference::{Allowlist, Expected, Listed},
    oracles::stream_generate::ALLOWED,
    oracles::stream_model::{Judged, Model, ModelPolicy, key},
    oracles::stream_reference::{Reading, read_stream},
};

pub const MSS: usize = 1460;
/// Times a segment dropped to keep the order is sent again before the
/// client gives up on the connection.
pub const MAX_RETRIES: u32 = 30;
/// Methods the second allowed origin may use (the first: any).
pub const SECOND_ORIGIN_METHODS: [&str; 2] = ["GET", "POST"];

/// A segment: payload bytes `start..end` of the stream.
pub type Seg = (usize, usize);

/// The stream of `len` bytes cut at random offsets, in order.
pub fn cut(rng: &mut Rng, len: usize) -> Vec<Seg> {
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
pub fn send_order(rng: &mut Rng, segs: &[Seg]) -> Vec<Seg> {
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
pub struct Receiver {
    pub next: usize,
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

    pub fn has(&self, at: usize) -> bool {
        at < self.next || self.held.iter().any(|&(a, b)| a <= at && at < b)
    }

    fn has_all(&self, s: Seg) -> bool {
        (s.0..s.1).all(|at| self.has(at))
    }
}

/// One segment sent, and what the filter did with it.
#[derive(Clone, Debug)]
pub struct Event {
    pub seg: Seg,
    pub judged: Judged,
    /// Bytes parsed in order for the first time (the reference's count).
    pub new: Option<Seg>,
    /// Past the bytes parsed in order (and not parsed from a body's end).
    pub ahead: bool,
    /// Past a gap inside a body's data and past its end: parsed from there.
    pub skipped: bool,
}

pub struct Run {
    pub plan: Vec<Seg>,
    /// What the filter did with the SYN, before any segment.
    pub syn: Judged,
    pub events: Vec<Event>,
    pub receiver: Receiver,
    pub isn: u32,
    /// A segment the client stopped sending again after `MAX_RETRIES`.
    pub gave_up: Option<Seg>,
}

/// Sends the connection's bytes through `model` as a client TCP would:
/// cut at random, in a random order.
pub fn deliver(
    rng: &mut Rng,
    model: &mut Model,
    key: &ConnKey,
    bytes: &[u8],
    reading: &Reading,
) -> Run {
    let isn = if rng.one_in(4) {
        u32::MAX - rng.below(4000) as u32
    } else {
        rng.next_u64() as u32
    };
    let segs = cut(rng, bytes.len());
    let plan = send_order(rng, &segs);
    deliver_plan(rng, model, key, bytes, reading, isn, &segs, plan)
}

/// The end of the body data (of a request the reference passes, before
/// `limit`) that `parsed` is inside, when segment `s` lies past a gap in it
/// and reaches past its end: where the filter parses `s` from.
fn body_end_skip(reading: &Reading, limit: usize, parsed: usize, s: Seg) -> Option<usize> {
    if s.0 <= parsed {
        return None;
    }
    reading
        .requests
        .iter()
        .filter(|r| !r.refused())
        .flat_map(|r| r.data.iter())
        .chain(reading.proxy_tlvs.iter())
        .find(|&&(a, b)| b <= limit && a <= parsed && parsed < b && s.0 <= b && s.1 > b)
        .map(|&(_, b)| b)
}

/// Where the reference's expectations of `bytes` end.
fn expectations_end(bytes: &[u8], reading: &Reading) -> usize {
    match (
        reading.requests.last().filter(|r| r.refused()),
        reading.stop,
    ) {
        (Some(r), _) => r.start,
        (None, Some((at, _))) => at,
        (None, None) => bytes.len(),
    }
}

/// Sends `plan` (then, again, what of `segs` the server lacks) through
/// `model`; `rng` places the segments sent again.
#[allow(clippy::too_many_arguments)]
pub fn deliver_plan(
    rng: &mut Rng,
    model: &mut Model,
    key: &ConnKey,
    bytes: &[u8],
    reading: &Reading,
    isn: u32,
    segs: &[Seg],
    plan: Vec<Seg>,
) -> Run {
    let syn = model.segment(key, isn, &[], true);
    let mut run = Run {
        plan: plan.clone(),
        syn,
        events: Vec::new(),
        receiver: Receiver::default(),
        isn,
        gave_up: None,
    };
    let limit = expectations_end(bytes, reading);
    let mut parsed = 0usize;
    let mut send = |run: &mut Run, s: Seg| -> Judged {
        let seq = isn.wrapping_add(1).wrapping_add(s.0 as u32);
        let judged = model.segment(key, seq, &bytes[s.0..s.1], false);
        let skip = body_end_skip(reading, limit, parsed, s);
        let ahead = s.0 > parsed && skip.is_none();
        let mut new = None;
        if judged.verdict == Verdict::Pass {
            run.receiver.take(s);
            let from = skip.unwrap_or(parsed);
            if s.0 <= from && from < s.1 {
                new = Some((from, s.1));
                parsed = s.1;
            }
        }
        run.events.push(Event {
            seg: s,
            judged,
            new,
            ahead,
            skipped: skip.is_some(),
        });
        judged
    };
    let mut queue: VecDeque<(Seg, u32)> = plan.iter().map(|&s| (s, 0)).collect();
    while let Some((s, tries)) = queue.pop_front() {
        let judged = send(&mut run, s);
        if matches!(judged.outcome, Outcome::OutOfOrder | Outcome::HeadLost) {
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

#[derive(Default)]
pub struct Tally {
    /// Requests read, by expected outcome.
    pub expected: BTreeMap<Expected, usize>,
    pub requests: usize,
    pub refused: usize,
    /// Requests the reference passes that ended in the segment dropped for
    /// a refusal (dropped with it).
    pub collateral: usize,
    pub segments: usize,
    /// Segments passed past a gap and parsed from a body's end.
    pub skipped: usize,
}

/// The disagreements of one connection's run with the reference's reading.
pub fn check(bytes: &[u8], reading: &Reading, run: &Run, tally: &mut Tally) -> Vec<String> {
    let mut problems = Vec::new();
    let requests = &reading.requests;
    let refused = requests.last().filter(|r| r.refused());
    let passed = &requests[..requests.len() - refused.is_some() as usize];
    let limit = expectations_end(bytes, reading);
    if run.syn.outcome != Outcome::NoPayload || run.syn.verdict != Verdict::Pass {
        problems.push(format!("the SYN is {:?}", run.syn));
    }
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
        tally.skipped += e.skipped as usize;
        if e.judged.verdict != Verdict::Pass {
            if !e.ahead {
                problems.push(format!(
                    "segment {a}..{b} is in order but dropped as {outcome:?}"
                ));
            }
            continue;
        }
        if e.ahead {
            let in_body = passed.iter().any(|r| r.head_end <= a && b <= r.end)
                || reading.proxy_tlvs.is_some_and(|(s, e)| s <= a && b <= e);
            if a < limit && (b > limit || !in_body) {
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

/// A connection's disagreements, with its bytes, the reference's reading,
/// the order sent and (the first 80) segments with the filter's outcomes.
pub fn report(
    index: usize,
    bytes: &[u8],
    protects_unsafe: bool,
    reading: &Reading,
    run: &Run,
    problems: &[String],
) -> String {
    let mut text = format!(
        "connection {index} (protects_unsafe {protects_unsafe}, isn {:#x}): {}\n  bytes: b\"{}\"\n  reference: {:?}\n  sent: {:?}\n  filter:\n",
        run.isn,
        problems.join("; "),
        bytes.escape_ascii(),
        reading,
        run.plan,
    );
    for e in run.events.iter().take(80) {
        text.push_str(&format!(
            "    {:?} -> {:?} {:?}{}\n",
            e.seg,
            e.judged.outcome,
            e.judged.verdict,
            if e.ahead {
                " (ahead)"
            } else if e.skipped {
                " (past a gap, parsed from the body's end)"
            } else {
                ""
            }
        ));
    }
    text
}

/// The allowlist (the first origin any method, the second
/// [`SECOND_ORIGIN_METHODS`]) and the filter's policies for it (not
/// protecting, protecting unsafe methods).
pub fn policies() -> (Allowlist, [Model; 2]) {
    let allowlist = Allowlist::new(&[
        Listed::any_method(ALLOWED[0]),
        Listed::only(ALLOWED[1], &SECOND_ORIGIN_METHODS),
    ]);
    let models = [false, true].map(|p| {
        let mut policy = ModelPolicy::allowing(&ALLOWED, p);
        policy.allow[1].1 = MethodSet::NONE.with(Method::Get).with(Method::Post);
        // The config's default action: reset behind a PROXY header.
        policy.settings = policy
            .settings
            .with_action(cors_filter_common::Action::ResetProxied);
        Model::new(policy)
    });
    (allowlist, models)
}

/// `bytes`, to a port that protects unsafe methods or not, cut at `cuts`
/// (increasing offsets inside it) and sent in the order of `plan` (then
/// what the server lacks, in order): the reference's reading and the run.
pub fn run_plan(
    bytes: &[u8],
    protects_unsafe: bool,
    cuts: &[usize],
    plan: &[Seg],
) -> (Reading, Run) {
    let (allowlist, mut models) = policies();
    let mut bounds = vec![0];
    bounds.extend_from_slice(cuts);
    bounds.push(bytes.len());
    let segs: Vec<Seg> = bounds.windows(2).map(|w| (w[0], w[1])).collect();
    let reading = read_stream(bytes, protects_unsafe, &allowlist);
    let model = &mut models[protects_unsafe as usize];
    let run = deliver_plan(
        &mut Rng::new(1),
        model,
        &key(1),
        bytes,
        &reading,
        7,
        &segs,
        plan.to_vec(),
    );
    (reading, run)
}

/// Whether the filter agrees with the reference on [`run_plan`]'s run;
/// `Err` is a report of the disagreements.
pub fn agrees(
    bytes: &[u8],
    protects_unsafe: bool,
    cuts: &[usize],
    plan: &[Seg],
) -> Result<(), String> {
    let (reading, run) = run_plan(bytes, protects_unsafe, cuts, plan);
    let problems = check(bytes, &reading, &run, &mut Tally::default());
    if problems.is_empty() {
        Ok(())
    } else {
        Err(report(0, bytes, protects_unsafe, &reading, &run, &problems))
    }
}

/// [`agrees`] on arbitrary bytes (a fuzzer's): the first byte's low bit
/// says whether the port protects unsafe methods, the rest of it how many
/// of the next bytes are a cutting pattern; the bytes after are the
/// stream. The pattern gives, in a loop, each segment's length (low 6
/// bits, times 23 with bit 6: up to 1450) and whether it is sent after
/// the next one (bit 7).
pub fn agrees_on(data: &[u8]) -> Result<(), String> {
    let Some((&first, rest)) = data.split_first() else {
        return Ok(());
    };
    let n = ((first >> 1) as usize).min(rest.len());
    let (pattern, bytes) = rest.split_at(n);
    let mut cuts = Vec::new();
    let mut swaps = Vec::new();
    let mut at = 0;
    for (i, &p) in pattern.iter().cycle().enumerate() {
        if pattern.is_empty() {
            break;
        }
        let len = (1 + (p & 0x3f) as usize) * if p & 0x40 != 0 { 23 } else { 1 };
        at += len;
        if at >= bytes.len() {
            break;
        }
        cuts.push(at);
        swaps.push(p & 0x80 != 0 && i % 2 == 0);
    }
    let mut bounds = vec![0];
    bounds.extend_from_slice(&cuts);
    bounds.push(bytes.len());
    let mut plan: Vec<Seg> = bounds.windows(2).map(|w| (w[0], w[1])).collect();
    for (i, swap) in swaps.into_iter().enumerate() {
        if swap && i + 1 < plan.len() {
            plan.swap(i, i + 1);
        }
    }
    if bytes.is_empty() {
        return Ok(());
    }
    agrees(bytes, first & 1 == 1, &cuts, &plan)
}
