//! The contract between the program and whoever reads what it counted:
//! every outcome a packet can have, and every counter, one row each.
//!
//! The enums, their lists, the counters' names and metrics, the outcomes'
//! counters and the sums `Packets` and `Requests` are all read off these
//! rows (see `table`), and what the rows must agree on is checked when the
//! crate compiles (the `const` block at the end): an outcome or a counter
//! cannot be added in part.
//!
//! # Numbers
//!
//! A counter's number is its slot in the pinned `COUNTERS` map, which
//! `stats`, `/metrics` and the next daemon read: once released it never
//! changes meaning. Rows are numbered 0, 1, 2, ... in order (checked), so a
//! new row takes the next number, and a row is never removed nor moved: one
//! no longer written keeps its row, documented as retired, and its number
//! stays reserved (as `PortFlags::PASS_INCOMPLETE_UNSAFE` keeps its bit).
//! The map has [`Counter::SLOTS`] slots, more than there are counters, so
//! that a new one leaves its shape as it was. Outcomes are numbered the
//! same way; their number is what the program keeps of a packet's outcome
//! while it parses (`Scratch::outcome`, see [`Outcome::from_index`]).
//!
//! # Adding a counter or an outcome
//!
//! A counter: its row in [`Counter`] (next number, its source, its name,
//! its metric), the program's `count(Counter::...)` that bumps it (for
//! [`Source::Program`]), and README's list of metrics. An outcome: its
//! row in [`Outcome`] (with a new counter's row, or an existing counter,
//! and its [`Effect`]), the line of the program or the parser that ends
//! there; unless its effect is `pass`, the lists of `verdict` its effect
//! puts it in (the compiler says which) and, for an effect that drops
//! by its settings or reports, `Outcome::verdict` and `DenialReason::of`
//! (a test says which); and README for a new counter. The readers
//! (`stats`, `/metrics`, `replay`) follow the tables.

#[macro_use]
mod table;

use crate::{
    counters::{Metric, MetricFamily, Source},
    event::DenialReason,
    verdict::Effect,
};

outcomes! {
    /// Why a packet ends up with its verdict. Every packet gets exactly one.
    pub enum Outcome {
        NotIp = 0: packet => PassNotIp; pass,
        /// IP carrying something else than TCP (for IPv6, at the end of the
        /// extension headers).
        NotTcp = 1: packet => PassNotTcp; pass,
        /// An IPv4 fragment, or an IPv6 fragment header with a non-zero offset or
        /// the M flag set: part of a datagram, not read as if it were whole.
        IpFragment = 2: packet => PassIpFragment; pass,
        /// An IPv6 chain of more extension headers than the program walks
        /// (`ipv6::MAX_EXT_HEADERS`).
        Ipv6ExtHeader = 3: packet => PassIpv6ExtHeader; pass,
        /// Headers claim more bytes than the packet has.
        Truncated = 4: packet => PassTruncated; pass,
        PortNotInspected = 5: packet => PassPortNotInspected; pass,
        NoPayload = 6: packet => PassNoPayload; pass,
        NotHttp = 7: packet => PassNotHttp; pass,
        /// An HTTP request that is not a CORS preflight.
        NotPreflight = 8: request => PassNotPreflight; pass,
        /// A preflight or unsafe request whose head is longer than judged
        /// (`max_head_bytes`, `stream::MAX_HEAD_LINES`).
        Incomplete = 9: request => Incomplete; oversized,
        /// A preflight whose origin the allowlist holds.
        Allowed = 10: request => PreflightAllow; pass,
        /// A preflight whose origin the allowlist does not hold.
        Denied = 11: request => PreflightDeny; deny(NotAllowed),
        /// A preflight whose `Origin` is not a valid origin, or appears twice.
        Malformed = 12: request => PreflightDeny + Malformed; deny(Malformed),
        /// A preflight whose origin the allowlist holds, but not with the
        /// method it asks for.
        MethodDenied = 13: request => PreflightDeny + MethodDeny; deny(MethodNotAllowed),
        /// A request with an unsafe method, to a port that protects them, whose
        /// origin the allowlist holds with its method.
        UnsafeAllowed = 14: request => UnsafeAllow; pass,
        /// Such a request whose origin the allowlist does not hold.
        UnsafeDenied = 15: request => UnsafeDeny; deny(NotAllowed),
        /// Such a request whose `Origin` is not a valid origin, or appears twice.
        UnsafeMalformed = 16: request => UnsafeDeny + Malformed; deny(Malformed),
        /// Such a request whose origin the allowlist holds, but not with its method.
        UnsafeMethodDenied = 17: request => UnsafeDeny + MethodDeny; deny(MethodNotAllowed),
        /// Such a request without `Origin` whose `Sec-Fetch-Site` says `cross-site`.
        CrossSiteNoOrigin = 18: request => UnsafeDeny + CrossSite; deny(CrossSiteNoOrigin),
        /// Such a request with neither `Origin` nor `Sec-Fetch-Site: cross-site`:
        /// not sent by a browser's cross-site page.
        NoOrigin = 19: request => NoOrigin; pass,
        /// A segment whose bytes were all parsed (and judged) before: passed
        /// again.
        Retransmission = 20: packet => PassRetransmission; pass,
        /// A segment that completes no request head: body bytes, or bytes
        /// between requests.
        Body = 21: packet => PassBody; pass,
        /// A segment that carries part of a request head, not its end: passed,
        /// since a server acts only on a whole head.
        HeadPart = 22: packet => PassHeadPart; pass,
        /// A segment of a connection the filter does not follow: one it did not
        /// see start (open before it was loaded, or its state evicted) that
        /// starts no request, one that switched protocols (`CONNECT`,
        /// `Upgrade`), or one that sent what no server reads as a request.
        Untracked = 23: packet => PassUntracked; pass,
        /// A segment at or past the end of a head that was denied: dropped,
        /// retransmissions included.
        ConnectionDenied = 24: packet => ConnectionDenied; keep_order,
        /// A segment whose new bytes come after a gap while a head may be
        /// undecided: dropped, for the client to send again in order.
        OutOfOrder = 25: packet => OutOfOrder; keep_order,
        /// A segment of a head whose state was lost (evicted, or not stored
        /// for want of room): dropped.
        HeadLost = 26: packet => HeadLost; keep_order,
        /// A segment with the URG flag and a payload, to an inspected port:
        /// Linux delivers its bytes less the urgent one, which the filter does
        /// not model. Dropped.
        Urgent = 27: packet => Urgent; keep_order,
        /// A request that starts HTTP/2 on the connection (`PRI * HTTP/2.0`,
        /// the preface of HTTP/2 with prior knowledge, or `Upgrade: h2c`):
        /// what follows is HTTP/2 frames, whose headers the filter cannot
        /// read. Refused, or passed untracked with `http2 = "pass"`.
        Http2 = 28: request => Http2; http2,
        /// A PROXY header at a connection's start that servers refuse (see
        /// `crate::proxy`): they close the connection, so nothing after it is
        /// served. Refused, with what follows.
        ProxyMalformed = 29: packet => ProxyMalformed; refuse(ProxyMalformed),
    }
}

/// `cors_filter_preflights_total{verdict}`.
const PREFLIGHTS: MetricFamily = MetricFamily {
    name: "cors_filter_preflights_total",
    help: "CORS preflights by verdict; deny counts drops, and in monitor mode what would have been dropped.",
    label: "verdict",
};

/// `cors_filter_unsafe_requests_total{verdict}`.
const UNSAFE_REQUESTS: MetricFamily = MetricFamily {
    name: "cors_filter_unsafe_requests_total",
    help: "Requests with unsafe methods (not GET, HEAD, OPTIONS, TRACE) to ports with protect_unsafe_methods that carried an Origin or Sec-Fetch-Site: cross-site, by verdict; deny counts drops, and in monitor mode what would have been dropped.",
    label: "verdict",
};

/// `cors_filter_resets_total{result}`.
const RESETS: MetricFamily = MetricFamily {
    name: "cors_filter_resets_total",
    help: "Dropped packets answered with a TCP reset (--action reset), by result: sent, or failed (dropped without a reply).",
    label: "result",
};

/// `cors_filter_passed_total{reason}`: a series per `pass_*` counter,
/// labelled with its name less `pass_` (checked).
const PASSED: MetricFamily = MetricFamily {
    name: "cors_filter_passed_total",
    help: "Packets passed without a preflight verdict, by reason.",
    label: "reason",
};

counters! {
    /// One per-CPU `u64` counter of the `COUNTERS` map. The discriminant is
    /// its index there.
    pub enum Counter {
        /// Every packet the program saw: the sum of the outcome counters.
        Packets = 0: Derived, "packets" => Metric::own(
            "cors_filter_packets_total",
            "Packets the program (XDP or TC) saw.",
        ),
        /// Packets whose payload starts with an HTTP/1.x request line: the
        /// sum of the outcome counters of requests.
        Requests = 1: Derived, "requests" => Metric::own(
            "cors_filter_requests_total",
            "HTTP requests inspected (payloads starting with an HTTP/1.x request line).",
        ),
        /// Preflights whose origin is in the allowlist.
        PreflightAllow = 2: Outcome, "preflight_allow" => PREFLIGHTS.series("allow"),
        /// Preflights dropped, or in monitor mode that would have been dropped:
        /// origin not allowed, malformed, or duplicated.
        PreflightDeny = 3: Outcome, "preflight_deny" => PREFLIGHTS.series("deny"),
        /// Preflights and unsafe requests whose `Origin` is malformed or
        /// repeated (also in `PreflightDeny` or `UnsafeDeny`).
        Malformed = 4: Outcome, "malformed" => Metric::own(
            "cors_filter_malformed_total",
            "Preflights and unsafe requests with a malformed or repeated Origin (also counted as deny).",
        ),
        /// Preflights and unsafe requests whose head is longer than judged
        /// (`max_head_bytes`, `stream::MAX_HEAD_LINES`).
        Incomplete = 5: Outcome, "incomplete" => Metric::own(
            "cors_filter_incomplete_total",
            "Requests (preflights, unsafe requests) whose head is longer than max_head_bytes or 100 header lines.",
        ),
        /// Requests with an unsafe method, to a port that protects them, whose
        /// origin the allowlist holds with that method.
        UnsafeAllow = 6: Outcome, "unsafe_allow" => UNSAFE_REQUESTS.series("allow"),
        /// Such requests dropped, or in monitor mode that would have been
        /// dropped: origin not allowed, method not allowed for it, malformed
        /// or repeated `Origin`, or cross-site without `Origin`.
        UnsafeDeny = 7: Outcome, "unsafe_deny" => UNSAFE_REQUESTS.series("deny"),
        /// Such requests with neither `Origin` nor `Sec-Fetch-Site: cross-site`,
        /// passed: not sent by a browser's cross-site page.
        NoOrigin = 8: Outcome, "no_origin" => Metric::own(
            "cors_filter_unsafe_no_origin_total",
            "Unsafe requests to ports that protect them with neither Origin nor Sec-Fetch-Site: cross-site, passed (not from a browser's cross-site page).",
        ),
        /// Preflights and unsafe requests whose origin the allowlist holds, but
        /// not with the method (also in `PreflightDeny` or `UnsafeDeny`).
        MethodDeny = 9: Outcome, "method_deny" => Metric::own(
            "cors_filter_method_denied_total",
            "Preflights and unsafe requests from an allowed origin with a method its allowlist entry does not list (also counted as deny).",
        ),
        /// Unsafe requests without `Origin` whose `Sec-Fetch-Site` says
        /// `cross-site` (also in `UnsafeDeny`).
        CrossSite = 10: Outcome, "cross_site" => Metric::own(
            "cors_filter_cross_site_denied_total",
            "Unsafe requests without Origin whose Sec-Fetch-Site says cross-site (also counted as deny).",
        ),
        /// Packets kept from the stack: dropped, or answered with a reset
        /// (`--action reset`; these are also in `ResetSent` or `ResetFailed`).
        Dropped = 11: Program, "dropped" => Metric::own(
            "cors_filter_dropped_total",
            "Packets dropped by the filter (with --action reset, also those answered with a reset).",
        ),
        /// Dropped packets answered with a TCP reset: the rewritten frame was
        /// handed back to the interface (`XDP_TX`, or a TC redirect to its egress).
        ResetSent = 12: Program, "reset_sent" => RESETS.series("sent"),
        /// Dropped packets that `--action reset` should have answered but could
        /// not (a helper refused the rewrite): dropped without a reply.
        ResetFailed = 13: Program, "reset_failed" => RESETS.series("failed"),
        PassNotIp = 14: Outcome, "pass_not_ip" => PASSED.series("not_ip"),
        PassNotTcp = 15: Outcome, "pass_not_tcp" => PASSED.series("not_tcp"),
        PassIpFragment = 16: Outcome, "pass_ip_fragment" => PASSED.series("ip_fragment"),
        /// IPv6 packets whose extension-header chain is longer than the program
        /// walks (`ipv6::MAX_EXT_HEADERS`).
        PassIpv6ExtHeader = 17: Outcome, "pass_ipv6_ext_header" => PASSED.series("ipv6_ext_header"),
        PassTruncated = 18: Outcome, "pass_truncated" => PASSED.series("truncated"),
        PassPortNotInspected = 19: Outcome, "pass_port_not_inspected" => PASSED.series("port_not_inspected"),
        PassNoPayload = 20: Outcome, "pass_no_payload" => PASSED.series("no_payload"),
        PassNotHttp = 21: Outcome, "pass_not_http" => PASSED.series("not_http"),
        PassNotPreflight = 22: Outcome, "pass_not_preflight" => PASSED.series("not_preflight"),
        /// Denial events not reported because the `DENIALS` ring buffer was
        /// full (see `event`). The packet was counted as usual.
        EventsLost = 23: Program, "events_lost" => Metric::own(
            "cors_filter_denial_events_lost_total",
            "Denial events the program could not report because the ring buffer was full.",
        ),
        /// Segments whose bytes were all parsed before, passed again.
        PassRetransmission = 24: Outcome, "pass_retransmission" => PASSED.series("retransmission"),
        /// Segments that complete no request head (bodies, bytes between requests).
        PassBody = 25: Outcome, "pass_body" => PASSED.series("body"),
        /// Segments with part of a request head, not its end.
        PassHeadPart = 26: Outcome, "pass_head_part" => PASSED.series("head_part"),
        /// Segments of connections the filter does not follow.
        PassUntracked = 27: Outcome, "pass_untracked" => PASSED.series("untracked"),
        /// Segments at or past a denied head, dropped.
        ConnectionDenied = 28: Outcome, "connection_denied" => Metric::own(
            "cors_filter_connection_denied_total",
            "Segments of a connection at or past a denied request head, dropped (retransmissions included).",
        ),
        /// Segments with new bytes after a gap while a head may be undecided,
        /// dropped (the client sends them again in order).
        OutOfOrder = 29: Outcome, "out_of_order" => Metric::own(
            "cors_filter_out_of_order_total",
            "Segments with new bytes after a gap while a request head could be undecided, dropped (the client sends them again, in order).",
        ),
        /// Segments of a head whose state was lost, dropped.
        HeadLost = 30: Outcome, "head_lost" => Metric::own(
            "cors_filter_head_lost_total",
            "Segments of a request head whose state was evicted from OPEN_HEADS, dropped.",
        ),
        /// Connections that got an entry in `CONNS` (from their SYN, or picked
        /// up at a request line). With the entries in use, it tells how many
        /// were evicted.
        ConnsLearned = 31: Program, "conns_learned" => Metric::own(
            "cors_filter_connections_learned_total",
            "Connections that got an entry in CONNS (from their SYN, or picked up at a request line).",
        ),
        /// Segments with URG and a payload, dropped.
        Urgent = 32: Outcome, "urgent" => Metric::own(
            "cors_filter_urgent_total",
            "Segments with the URG flag and a payload to an inspected port, dropped (Linux delivers their bytes less the urgent one, which the filter does not model).",
        ),
        /// Requests that start HTTP/2 on the connection (`Outcome::Http2`):
        /// refused, or passed with `http2 = "pass"`.
        Http2 = 33: Outcome, "http2" => Metric::own(
            "cors_filter_http2_total",
            "Requests that start HTTP/2 on an inspected port (PRI * HTTP/2.0, Upgrade: h2c), whose frames the filter cannot read: refused, or passed unfollowed with http2 = \"pass\".",
        ),
        /// Segments with a PROXY header servers refuse, dropped with what
        /// follows.
        ProxyMalformed = 34: Outcome, "proxy_malformed" => Metric::own(
            "cors_filter_proxy_malformed_total",
            "Segments with a PROXY protocol header servers refuse, dropped with the rest of their connection.",
        ),
        /// PROXY headers read whole. The segment that carries one is counted
        /// as usual.
        ProxyHeaders = 35: Program, "proxy_headers" => Metric::own(
            "cors_filter_proxy_headers_total",
            "PROXY protocol headers (v1, v2) read at the start of connections.",
        ),
    }
}

/// What the tables promise, checked when the crate compiles. Each failure
/// names the promise broken.
const _: () = {
    assert!(
        Counter::COUNT <= Counter::SLOTS,
        "more counters than COUNTERS has slots"
    );
    let mut i = 0;
    while i < Counter::ALL.len() {
        let counter = Counter::ALL[i];
        // `ALL[i]` is the counter of index `i`: the readers' arrays of
        // `COUNT` values are indexed by `Counter::index`, and every index
        // is below `COUNT`, hence below `SLOTS`, and given once.
        assert!(
            counter.index() == i as u32,
            "counters are numbered 0, 1, 2, ... in the table's order"
        );
        let mut j = 0;
        while j < i {
            assert!(
                !str_eq(counter.name(), Counter::ALL[j].name()),
                "two counters have one name"
            );
            j += 1;
        }
        let name = counter.name().as_bytes();
        let is_pass = name.len() > PASS.len() && bytes_eq(name.split_at(PASS.len()).0, PASS);
        match counter.metric() {
            Metric::Series { family, value } if str_eq(family.name, PASSED.name) => assert!(
                is_pass && bytes_eq(name.split_at(PASS.len()).1, value.as_bytes()),
                "a series of cors_filter_passed_total is a pass_* counter, labelled with its name less pass_"
            ),
            _ => assert!(
                !is_pass,
                "a pass_* counter is a series of cors_filter_passed_total"
            ),
        }
        match counter.source() {
            Source::Outcome => assert!(
                Counter::OUTCOME_BITS & counter.bit() != 0
                    || Counter::DETAIL_BITS & counter.bit() != 0,
                "a counter of source Outcome is the outcome counter or the detail counter of an outcome"
            ),
            Source::Derived => assert!(
                matches!(counter, Counter::Packets | Counter::Requests),
                "only Packets and Requests are derived (Counter::derive)"
            ),
            Source::Program => {}
        }
        i += 1;
    }

    let mut i = 0;
    while i < Outcome::ALL.len() {
        let outcome = Outcome::ALL[i];
        // What `Outcome::from_index` relies on: it reads `ALL` by number.
        assert!(
            outcome as u32 == i as u32,
            "outcomes are numbered 0, 1, 2, ... in the table's order"
        );
        let (counter, detail) = outcome.counters();
        assert!(
            matches!(counter.source(), Source::Outcome),
            "an outcome's counter is of source Outcome"
        );
        // Every packet bumps exactly one outcome counter, so that they add
        // up to `Packets`: no outcome's counter is another's detail.
        assert!(
            Counter::DETAIL_BITS & counter.bit() == 0,
            "an outcome counter is no outcome's detail counter"
        );
        if let Some(detail) = detail {
            assert!(
                matches!(detail.source(), Source::Outcome),
                "an outcome's detail counter is of source Outcome"
            );
            assert!(
                Counter::OUTCOME_BITS & detail.bit() == 0,
                "a detail counter is no outcome's outcome counter"
            );
        }
        // What the outcome does agrees with how it is counted: a denial
        // is of a request's origin and counts as a deny, and nothing else
        // does; what keeps a stream in order is no request.
        let counts_as_deny = matches!(counter, Counter::PreflightDeny | Counter::UnsafeDeny);
        match outcome.effect() {
            Effect::Deny(reason) => {
                assert!(
                    outcome.is_request() && counts_as_deny,
                    "a denial is a request's, counted as a deny"
                );
                assert!(
                    reason.names_a_request() && !matches!(reason, DenialReason::IncompleteDropped),
                    "a denial's reason is about the request (not its length: that is oversized's)"
                );
            }
            Effect::Refuse(reason) => assert!(
                !counts_as_deny
                    && !reason.names_a_request()
                    && !matches!(reason, DenialReason::Http2),
                "a refusal is no denial, its reason is about the connection (not HTTP/2: that is http2's)"
            ),
            Effect::KeepOrder => assert!(
                !outcome.is_request() && !counts_as_deny,
                "an outcome that keeps a stream in order is no request and no denial"
            ),
            Effect::Pass | Effect::Http2 | Effect::Oversized => {
                assert!(!counts_as_deny, "only a denial counts as a deny")
            }
        }
        // The outcome counters of requests add up to `Requests`.
        let mut j = 0;
        while j < i {
            let other = Outcome::ALL[j];
            assert!(
                other.counters().0 as u32 != counter as u32
                    || other.is_request() == outcome.is_request(),
                "outcomes that share an outcome counter are all requests or none"
            );
            j += 1;
        }
        i += 1;
    }
};

const PASS: &[u8] = b"pass_";

const fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

const fn str_eq(a: &str, b: &str) -> bool {
    bytes_eq(a.as_bytes(), b.as_bytes())
}
