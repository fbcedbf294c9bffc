//! Indexes into the per-CPU `COUNTERS` array map.

/// One per-CPU `u64` counter. The discriminant is the array index.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Every packet the program saw. Derived (see [`Counter::derive`]):
    /// the program does not write it.
    Packets = 0,
    /// Packets whose payload starts with an HTTP/1.x request line. Derived
    /// (see [`Counter::derive`]): the program does not write it.
    Requests,
    /// Preflights whose origin is in the allowlist.
    PreflightAllow,
    /// Preflights dropped, or in monitor mode that would have been dropped:
    /// origin not allowed, malformed, or duplicated.
    PreflightDeny,
    /// Preflights and unsafe requests whose `Origin` is malformed or
    /// repeated (also in `PreflightDeny` or `UnsafeDeny`).
    Malformed,
    /// Preflights and unsafe requests whose head is longer than judged
    /// (`max_head_bytes`, `stream::MAX_HEAD_LINES`).
    Incomplete,
    /// Requests with an unsafe method, to a port that protects them, whose
    /// origin the allowlist holds with that method.
    UnsafeAllow,
    /// Such requests dropped, or in monitor mode that would have been
    /// dropped: origin not allowed, method not allowed for it, malformed
    /// or repeated `Origin`, or cross-site without `Origin`.
    UnsafeDeny,
    /// Such requests with neither `Origin` nor `Sec-Fetch-Site: cross-site`,
    /// passed: not sent by a browser's cross-site page.
    NoOrigin,
    /// Preflights and unsafe requests whose origin the allowlist holds, but
    /// not with the method (also in `PreflightDeny` or `UnsafeDeny`).
    MethodDeny,
    /// Unsafe requests without `Origin` whose `Sec-Fetch-Site` says
    /// `cross-site` (also in `UnsafeDeny`).
    CrossSite,
    /// Packets kept from the stack: dropped, or answered with a reset
    /// (`--action reset`; these are also in `ResetSent` or `ResetFailed`).
    Dropped,
    /// Dropped packets answered with a TCP reset: the rewritten frame was
    /// handed back to the interface (`XDP_TX`, or a TC redirect to its egress).
    ResetSent,
    /// Dropped packets that `--action reset` should have answered but could
    /// not (a helper refused the rewrite): dropped without a reply.
    ResetFailed,
    PassNotIp,
    PassNotTcp,
    PassIpFragment,
    /// IPv6 packets whose extension-header chain is longer than the program
    /// walks (`ipv6::MAX_EXT_HEADERS`).
    PassIpv6ExtHeader,
    PassTruncated,
    PassPortNotInspected,
    PassNoPayload,
    PassNotHttp,
    PassNotPreflight,
    /// Denial events not reported because the `DENIALS` ring buffer was
    /// full (see `event`). Not an outcome: the packet was counted as usual.
    EventsLost,
    /// Segments whose bytes were all parsed before, passed again.
    PassRetransmission,
    /// Segments that complete no request head (bodies, bytes between requests).
    PassBody,
    /// Segments with part of a request head, not its end.
    PassHeadPart,
    /// Segments of connections the filter does not follow.
    PassUntracked,
    /// Segments at or past a denied head, dropped.
    ConnectionDenied,
    /// Segments with new bytes after a gap while a head may be undecided,
    /// dropped (the client sends them again in order).
    OutOfOrder,
    /// Segments of a head whose state was lost, dropped.
    HeadLost,
    /// Connections that got an entry in `CONNS` (from their SYN, or picked
    /// up at a request line). Not an outcome: with the entries in use, it
    /// tells how many were evicted.
    ConnsLearned,
    /// Segments with URG and a payload, dropped.
    Urgent,
    /// Requests that start HTTP/2 on the connection (`Outcome::Http2`):
    /// refused, or passed with `http2 = "pass"`.
    Http2,
    /// Segments with a PROXY header servers refuse, dropped with what
    /// follows.
    ProxyMalformed,
    /// PROXY headers read whole. Not an outcome: the segment that carries
    /// one is counted as usual.
    ProxyHeaders,
}

impl Counter {
    /// Number of counters; the `COUNTERS` map has this many entries.
    pub const COUNT: u32 = 36;

    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::Packets,
        Counter::Requests,
        Counter::PreflightAllow,
        Counter::PreflightDeny,
        Counter::Malformed,
        Counter::Incomplete,
        Counter::UnsafeAllow,
        Counter::UnsafeDeny,
        Counter::NoOrigin,
        Counter::MethodDeny,
        Counter::CrossSite,
        Counter::Dropped,
        Counter::ResetSent,
        Counter::ResetFailed,
        Counter::PassNotIp,
        Counter::PassNotTcp,
        Counter::PassIpFragment,
        Counter::PassIpv6ExtHeader,
        Counter::PassTruncated,
        Counter::PassPortNotInspected,
        Counter::PassNoPayload,
        Counter::PassNotHttp,
        Counter::PassNotPreflight,
        Counter::EventsLost,
        Counter::PassRetransmission,
        Counter::PassBody,
        Counter::PassHeadPart,
        Counter::PassUntracked,
        Counter::ConnectionDenied,
        Counter::OutOfOrder,
        Counter::HeadLost,
        Counter::ConnsLearned,
        Counter::Urgent,
        Counter::Http2,
        Counter::ProxyMalformed,
        Counter::ProxyHeaders,
    ];

    /// The counters of which every packet bumps exactly one (its
    /// outcome's, see `Outcome::counters`; `Malformed`, `MethodDeny` and
    /// `CrossSite` go with a deny counter and are not among them).
    pub const OUTCOMES: [Counter; 25] = [
        Counter::PreflightAllow,
        Counter::PreflightDeny,
        Counter::Incomplete,
        Counter::UnsafeAllow,
        Counter::UnsafeDeny,
        Counter::NoOrigin,
        Counter::PassNotIp,
        Counter::PassNotTcp,
        Counter::PassIpFragment,
        Counter::PassIpv6ExtHeader,
        Counter::PassTruncated,
        Counter::PassPortNotInspected,
        Counter::PassNoPayload,
        Counter::PassNotHttp,
        Counter::PassNotPreflight,
        Counter::PassRetransmission,
        Counter::PassBody,
        Counter::PassHeadPart,
        Counter::PassUntracked,
        Counter::ConnectionDenied,
        Counter::OutOfOrder,
        Counter::HeadLost,
        Counter::Urgent,
        Counter::Http2,
        Counter::ProxyMalformed,
    ];

    /// The outcome counters of requests (`Outcome::is_request`).
    pub const REQUEST_OUTCOMES: [Counter; 8] = [
        Counter::PreflightAllow,
        Counter::PreflightDeny,
        Counter::Incomplete,
        Counter::UnsafeAllow,
        Counter::UnsafeDeny,
        Counter::NoOrigin,
        Counter::PassNotPreflight,
        Counter::Http2,
    ];

    /// Fills in `Packets` and `Requests` from the outcome counters, which
    /// add up to them exactly: two map writes fewer for every packet the
    /// program sees.
    pub fn derive(values: &mut [u64; Self::COUNT as usize]) {
        let sum = |counters: &[Counter]| {
            counters
                .iter()
                .fold(0u64, |sum, c| sum.wrapping_add(values[c.index() as usize]))
        };
        let (packets, requests) = (sum(&Self::OUTCOMES), sum(&Self::REQUEST_OUTCOMES));
        values[Counter::Packets.index() as usize] = packets;
        values[Counter::Requests.index() as usize] = requests;
    }

    #[inline(always)]
    pub const fn index(self) -> u32 {
        self as u32
    }

    /// The name used in `stats --json` and, for `pass_*`, as the `reason` label.
    pub const fn name(self) -> &'static str {
        match self {
            Counter::Packets => "packets",
            Counter::Requests => "requests",
            Counter::PreflightAllow => "preflight_allow",
            Counter::PreflightDeny => "preflight_deny",
            Counter::Malformed => "malformed",
            Counter::Incomplete => "incomplete",
            Counter::UnsafeAllow => "unsafe_allow",
            Counter::UnsafeDeny => "unsafe_deny",
            Counter::NoOrigin => "no_origin",
            Counter::MethodDeny => "method_deny",
            Counter::CrossSite => "cross_site",
            Counter::Dropped => "dropped",
            Counter::ResetSent => "reset_sent",
            Counter::ResetFailed => "reset_failed",
            Counter::PassNotIp => "pass_not_ip",
            Counter::PassNotTcp => "pass_not_tcp",
            Counter::PassIpFragment => "pass_ip_fragment",
            Counter::PassIpv6ExtHeader => "pass_ipv6_ext_header",
            Counter::PassTruncated => "pass_truncated",
            Counter::PassPortNotInspected => "pass_port_not_inspected",
            Counter::PassNoPayload => "pass_no_payload",
            Counter::PassNotHttp => "pass_not_http",
            Counter::PassNotPreflight => "pass_not_preflight",
            Counter::EventsLost => "events_lost",
            Counter::PassRetransmission => "pass_retransmission",
            Counter::PassBody => "pass_body",
            Counter::PassHeadPart => "pass_head_part",
            Counter::PassUntracked => "pass_untracked",
            Counter::ConnectionDenied => "connection_denied",
            Counter::OutOfOrder => "out_of_order",
            Counter::HeadLost => "head_lost",
            Counter::ConnsLearned => "conns_learned",
            Counter::Urgent => "urgent",
            Counter::Http2 => "http2",
            Counter::ProxyMalformed => "proxy_malformed",
            Counter::ProxyHeaders => "proxy_headers",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_counters_follow_the_outcomes() {
        use crate::Outcome;
        for outcome in Outcome::ALL {
            let mut values = [0u64; Counter::COUNT as usize];
            let (counter, also) = outcome.counters();
            values[counter.index() as usize] += 1;
            if let Some(also) = also {
                values[also.index() as usize] += 1;
            }
            Counter::derive(&mut values);
            assert_eq!(values[Counter::Packets.index() as usize], 1, "{outcome:?}");
            assert_eq!(
                values[Counter::Requests.index() as usize],
                outcome.is_request() as u64,
                "{outcome:?}"
            );
        }
    }

    #[test]
    fn all_is_indexed_in_order() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.index() as usize, i, "{c:?}");
        }
    }
}
