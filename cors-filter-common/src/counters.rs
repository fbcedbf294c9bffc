//! Indexes into the per-CPU `COUNTERS` array map.

/// One per-CPU `u64` counter. The discriminant is the array index.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Every packet the program saw.
    Packets = 0,
    /// Packets whose payload starts with an HTTP/1.x request line.
    Requests,
    /// Preflights whose origin is in the allowlist.
    PreflightAllow,
    /// Preflights dropped, or in monitor mode that would have been dropped:
    /// origin not allowed, malformed, or duplicated.
    PreflightDeny,
    /// Preflights whose `Origin` is malformed or repeated (also in `PreflightDeny`).
    Malformed,
    /// Requests whose head did not fit in the scan window.
    Incomplete,
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
}

impl Counter {
    /// Number of counters; the `COUNTERS` map has this many entries.
    pub const COUNT: u32 = 19;

    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::Packets,
        Counter::Requests,
        Counter::PreflightAllow,
        Counter::PreflightDeny,
        Counter::Malformed,
        Counter::Incomplete,
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
    ];

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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_indexed_in_order() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.index() as usize, i, "{c:?}");
        }
    }
}
