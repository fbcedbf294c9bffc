//! From what the parser found to what the program does and counts.

use crate::{config::FilterConfig, counters::Counter};

/// Why a packet ends up with its verdict. Every packet gets exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    NotIp,
    /// IP carrying something else than TCP (for IPv6, at the end of the
    /// extension headers).
    NotTcp,
    /// An IPv4 fragment, or an IPv6 fragment header with a non-zero offset or
    /// the M flag set: part of a datagram, not read as if it were whole.
    IpFragment,
    /// An IPv6 chain of more extension headers than the program walks
    /// (`ipv6::MAX_EXT_HEADERS`).
    Ipv6ExtHeader,
    /// Headers claim more bytes than the packet has.
    Truncated,
    PortNotInspected,
    NoPayload,
    NotHttp,
    /// An HTTP request that is not a CORS preflight.
    NotPreflight,
    /// A preflight or unsafe request whose head is longer than judged
    /// (`max_head_bytes`, `stream::MAX_HEAD_LINES`).
    Incomplete,
    /// A preflight whose origin the allowlist holds.
    Allowed,
    /// A preflight whose origin the allowlist does not hold.
    Denied,
    /// A preflight whose `Origin` is not a valid origin, or appears twice.
    Malformed,
    /// A preflight whose origin the allowlist holds, but not with the
    /// method it asks for.
    MethodDenied,
    /// A request with an unsafe method, to a port that protects them, whose
    /// origin the allowlist holds with its method.
    UnsafeAllowed,
    /// Such a request whose origin the allowlist does not hold.
    UnsafeDenied,
    /// Such a request whose `Origin` is not a valid origin, or appears twice.
    UnsafeMalformed,
    /// Such a request whose origin the allowlist holds, but not with its method.
    UnsafeMethodDenied,
    /// Such a request without `Origin` whose `Sec-Fetch-Site` says `cross-site`.
    CrossSiteNoOrigin,
    /// Such a request with neither `Origin` nor `Sec-Fetch-Site: cross-site`:
    /// not sent by a browser's cross-site page.
    NoOrigin,
    /// A segment whose bytes were all parsed (and judged) before: passed
    /// again.
    Retransmission,
    /// A segment that completes no request head: body bytes, or bytes
    /// between requests.
    Body,
    /// A segment that carries part of a request head, not its end: passed,
    /// since a server acts only on a whole head.
    HeadPart,
    /// A segment of a connection the filter does not follow: one it did not
    /// see start (open before it was loaded, or its state evicted) that
    /// starts no request, one that switched protocols (`CONNECT`,
    /// `Upgrade`), or one that sent what no server reads as a request.
    Untracked,
    /// A segment at or past the end of a head that was denied: dropped,
    /// retransmissions included.
    ConnectionDenied,
    /// A segment whose new bytes come after a gap while a head may be
    /// undecided: dropped, for the client to send again in order.
    OutOfOrder,
    /// A segment of a head whose state was lost (evicted, or not stored
    /// for want of room): dropped.
    HeadLost,
    /// A segment with the URG flag and a payload, to an inspected port:
    /// Linux delivers its bytes less the urgent one, which the filter does
    /// not model. Dropped.
    Urgent,
    /// A request that starts HTTP/2 on the connection (`PRI * HTTP/2.0`,
    /// the preface of HTTP/2 with prior knowledge, or `Upgrade: h2c`):
    /// what follows is HTTP/2 frames, whose headers the filter cannot
    /// read. Refused, or passed untracked with `http2 = "pass"`.
    Http2,
    /// A PROXY header at a connection's start that servers refuse (see
    /// `crate::proxy`): they close the connection, so nothing after it is
    /// served. Refused, with what follows.
    ProxyMalformed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
    /// Drop, and answer the sender with a TCP reset (`Action::Reset`).
    Reset,
}

impl Outcome {
    /// Every outcome.
    pub const ALL: [Outcome; 30] = [
        Outcome::NotIp,
        Outcome::NotTcp,
        Outcome::IpFragment,
        Outcome::Ipv6ExtHeader,
        Outcome::Truncated,
        Outcome::PortNotInspected,
        Outcome::NoPayload,
        Outcome::NotHttp,
        Outcome::NotPreflight,
        Outcome::Incomplete,
        Outcome::Allowed,
        Outcome::Denied,
        Outcome::Malformed,
        Outcome::MethodDenied,
        Outcome::UnsafeAllowed,
        Outcome::UnsafeDenied,
        Outcome::UnsafeMalformed,
        Outcome::UnsafeMethodDenied,
        Outcome::CrossSiteNoOrigin,
        Outcome::NoOrigin,
        Outcome::Retransmission,
        Outcome::Body,
        Outcome::HeadPart,
        Outcome::Untracked,
        Outcome::ConnectionDenied,
        Outcome::OutOfOrder,
        Outcome::HeadLost,
        Outcome::Urgent,
        Outcome::Http2,
        Outcome::ProxyMalformed,
    ];

    /// The outcome of index `index` in [`Outcome::ALL`] (which lists them
    /// in declaration order); `NotHttp` for an index past it.
    #[inline(always)]
    pub fn from_index(index: u32) -> Outcome {
        match Outcome::ALL.get(index as usize) {
            Some(outcome) => *outcome,
            None => Outcome::NotHttp,
        }
    }

    /// A malformed preflight, or unsafe request when `unsafe_request`.
    #[inline(always)]
    pub const fn malformed(unsafe_request: bool) -> Outcome {
        if unsafe_request {
            Outcome::UnsafeMalformed
        } else {
            Outcome::Malformed
        }
    }

    #[inline(always)]
    pub const fn denied(unsafe_request: bool) -> Outcome {
        if unsafe_request {
            Outcome::UnsafeDenied
        } else {
            Outcome::Denied
        }
    }

    #[inline(always)]
    pub const fn method_denied(unsafe_request: bool) -> Outcome {
        if unsafe_request {
            Outcome::UnsafeMethodDenied
        } else {
            Outcome::MethodDenied
        }
    }

    #[inline(always)]
    pub const fn allowed(unsafe_request: bool) -> Outcome {
        if unsafe_request {
            Outcome::UnsafeAllowed
        } else {
            Outcome::Allowed
        }
    }

    /// Whether the outcome refuses the request whatever the settings say
    /// of incomplete heads (monitor mode still lets it pass).
    #[inline(always)]
    pub const fn is_denial(self) -> bool {
        matches!(
            self,
            Outcome::Denied
                | Outcome::Malformed
                | Outcome::MethodDenied
                | Outcome::UnsafeDenied
                | Outcome::UnsafeMalformed
                | Outcome::UnsafeMethodDenied
                | Outcome::CrossSiteNoOrigin
        )
    }

    /// Whether the packet carried the start of an HTTP request.
    #[inline(always)]
    pub const fn is_request(self) -> bool {
        !matches!(
            self,
            Outcome::Retransmission
                | Outcome::Body
                | Outcome::HeadPart
                | Outcome::Untracked
                | Outcome::ConnectionDenied
                | Outcome::OutOfOrder
                | Outcome::HeadLost
                | Outcome::Urgent
                | Outcome::NotIp
                | Outcome::NotTcp
                | Outcome::IpFragment
                | Outcome::Ipv6ExtHeader
                | Outcome::Truncated
                | Outcome::PortNotInspected
                | Outcome::NoPayload
                | Outcome::NotHttp
                | Outcome::ProxyMalformed
        )
    }

    /// Whether the outcome refuses a connection for what it speaks (HTTP/2,
    /// a malformed PROXY header), not for its requests' origins: no
    /// denial, but dropped (or reset) while enforcing, as the settings say.
    #[inline(always)]
    pub const fn refuses_protocol(self) -> bool {
        matches!(self, Outcome::Http2 | Outcome::ProxyMalformed)
    }

    /// Whether the outcome is a denial under some settings (the denials,
    /// and `Incomplete` when incomplete requests are dropped). Every other
    /// outcome passes, whatever the settings, with no event.
    #[inline(always)]
    pub const fn may_deny(self) -> bool {
        self.is_denial()
            || self.keeps_order()
            || self.refuses_protocol()
            || matches!(self, Outcome::Incomplete)
    }

    /// Whether the outcome drops the segment to keep the connection's
    /// stream judged: not a denial of its own (no event, no reset), but
    /// dropped while enforcing.
    #[inline(always)]
    pub const fn keeps_order(self) -> bool {
        matches!(
            self,
            Outcome::ConnectionDenied | Outcome::OutOfOrder | Outcome::HeadLost | Outcome::Urgent
        )
    }

    /// The counters this outcome bumps besides `Packets`, `Requests` and `Dropped`.
    #[inline(always)]
    pub const fn counters(self) -> (Counter, Option<Counter>) {
        match self {
            Outcome::NotIp => (Counter::PassNotIp, None),
            Outcome::NotTcp => (Counter::PassNotTcp, None),
            Outcome::IpFragment => (Counter::PassIpFragment, None),
            Outcome::Ipv6ExtHeader => (Counter::PassIpv6ExtHeader, None),
            Outcome::Truncated => (Counter::PassTruncated, None),
            Outcome::PortNotInspected => (Counter::PassPortNotInspected, None),
            Outcome::NoPayload => (Counter::PassNoPayload, None),
            Outcome::NotHttp => (Counter::PassNotHttp, None),
            Outcome::NotPreflight => (Counter::PassNotPreflight, None),
            Outcome::Incomplete => (Counter::Incomplete, None),
            Outcome::Allowed => (Counter::PreflightAllow, None),
            Outcome::Denied => (Counter::PreflightDeny, None),
            Outcome::Malformed => (Counter::PreflightDeny, Some(Counter::Malformed)),
            Outcome::MethodDenied => (Counter::PreflightDeny, Some(Counter::MethodDeny)),
            Outcome::UnsafeAllowed => (Counter::UnsafeAllow, None),
            Outcome::UnsafeDenied => (Counter::UnsafeDeny, None),
            Outcome::UnsafeMalformed => (Counter::UnsafeDeny, Some(Counter::Malformed)),
            Outcome::UnsafeMethodDenied => (Counter::UnsafeDeny, Some(Counter::MethodDeny)),
            Outcome::CrossSiteNoOrigin => (Counter::UnsafeDeny, Some(Counter::CrossSite)),
            Outcome::NoOrigin => (Counter::NoOrigin, None),
            Outcome::Retransmission => (Counter::PassRetransmission, None),
            Outcome::Body => (Counter::PassBody, None),
            Outcome::HeadPart => (Counter::PassHeadPart, None),
            Outcome::Untracked => (Counter::PassUntracked, None),
            Outcome::ConnectionDenied => (Counter::ConnectionDenied, None),
            Outcome::OutOfOrder => (Counter::OutOfOrder, None),
            Outcome::HeadLost => (Counter::HeadLost, None),
            Outcome::Urgent => (Counter::Urgent, None),
            Outcome::Http2 => (Counter::Http2, None),
            Outcome::ProxyMalformed => (Counter::ProxyMalformed, None),
        }
    }

    /// The verdict under `config`. Monitor mode never drops (nor resets).
    #[inline(always)]
    pub fn verdict(self, config: &FilterConfig) -> Verdict {
        if self.keeps_order() {
            return if config.enforcing() {
                Verdict::Drop
            } else {
                Verdict::Pass
            };
        }
        let drop = match self {
            Outcome::Incomplete => config.drop_incomplete(),
            Outcome::Http2 => !config.passes_http2(),
            Outcome::ProxyMalformed => true,
            _ => self.is_denial(),
        };
        if !drop || !config.enforcing() {
            Verdict::Pass
        } else if config.resets() {
            Verdict::Reset
        } else {
            Verdict::Drop
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Action, Mode, OnIncomplete};

    const ENFORCE: FilterConfig = FilterConfig::new(Mode::Enforce, OnIncomplete::Pass);
    const ENFORCE_STRICT: FilterConfig = FilterConfig::new(Mode::Enforce, OnIncomplete::Drop);
    const MONITOR_STRICT: FilterConfig = FilterConfig::new(Mode::Monitor, OnIncomplete::Drop);

    #[test]
    fn enforce_drops_denied_and_malformed_only() {
        assert_eq!(Outcome::Denied.verdict(&ENFORCE), Verdict::Drop);
        assert_eq!(Outcome::Malformed.verdict(&ENFORCE), Verdict::Drop);
        assert_eq!(Outcome::Allowed.verdict(&ENFORCE), Verdict::Pass);
        assert_eq!(Outcome::NotPreflight.verdict(&ENFORCE), Verdict::Pass);
        assert_eq!(Outcome::Incomplete.verdict(&ENFORCE), Verdict::Pass);
        assert_eq!(Outcome::Incomplete.verdict(&ENFORCE_STRICT), Verdict::Drop);
    }

    #[test]
    fn only_outcomes_that_may_deny_ever_drop_or_report() {
        use crate::config::Action;
        use crate::event::DenialReason;
        for outcome in Outcome::ALL {
            for config in [ENFORCE, ENFORCE_STRICT, MONITOR_STRICT] {
                let config = config.with_action(Action::Reset);
                let acts = outcome.verdict(&config) != Verdict::Pass
                    || DenialReason::of(outcome, &config).is_some();
                assert!(!acts || outcome.may_deny(), "{outcome:?} under {config:?}");
            }
        }
    }

    #[test]
    fn monitor_never_drops() {
        for o in [Outcome::Denied, Outcome::Malformed, Outcome::Incomplete] {
            assert_eq!(o.verdict(&MONITOR_STRICT), Verdict::Pass, "{o:?}");
        }
    }

    #[test]
    fn corrupt_mode_fails_closed() {
        let corrupt = FilterConfig {
            mode: 7,
            on_incomplete: 0,
            action: 0,
            wildcard_depths: 0,
            max_head_bytes: 0,
            http2: 0,
        };
        assert_eq!(Outcome::Denied.verdict(&corrupt), Verdict::Drop);
    }

    #[test]
    fn reset_replaces_every_drop_and_nothing_else() {
        let reset = ENFORCE_STRICT.with_action(Action::Reset);
        for o in [Outcome::Denied, Outcome::Malformed, Outcome::Incomplete] {
            assert_eq!(o.verdict(&reset), Verdict::Reset, "{o:?}");
        }
        for o in [Outcome::Allowed, Outcome::NotPreflight, Outcome::NotHttp] {
            assert_eq!(o.verdict(&reset), Verdict::Pass, "{o:?}");
        }
        let reset_pass_incomplete = ENFORCE.with_action(Action::Reset);
        assert_eq!(
            Outcome::Incomplete.verdict(&reset_pass_incomplete),
            Verdict::Pass
        );
        // Monitor mode passes whatever the action.
        let monitor = MONITOR_STRICT.with_action(Action::Reset);
        assert_eq!(Outcome::Denied.verdict(&monitor), Verdict::Pass);
    }

    #[test]
    fn corrupt_action_fails_closed_to_drop() {
        for action in [2, 7, u32::MAX] {
            let corrupt = FilterConfig { action, ..ENFORCE };
            assert_eq!(Outcome::Denied.verdict(&corrupt), Verdict::Drop, "{action}");
        }
        assert_eq!(
            Outcome::Denied.verdict(&ENFORCE.with_action(Action::Drop)),
            Verdict::Drop
        );
    }

    #[test]
    fn every_denial_drops_in_enforce_mode_and_counts_as_a_deny() {
        for o in Outcome::ALL {
            let deny_counter =
                matches!(o.counters().0, Counter::PreflightDeny | Counter::UnsafeDeny);
            assert_eq!(o.is_denial(), deny_counter, "{o:?}");
            // Besides denials, only the outcomes that keep a connection's
            // stream in order drop, and they count as no denial.
            assert_eq!(
                o.verdict(&ENFORCE) == Verdict::Drop,
                o.is_denial() || o.keeps_order() || o.refuses_protocol(),
                "{o:?}"
            );
            assert!(!(o.is_denial() && o.keeps_order()), "{o:?}");
            assert!(!(o.is_denial() && o.refuses_protocol()), "{o:?}");
        }
    }

    #[test]
    fn outcomes_are_found_by_their_index() {
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(*o as usize, i, "{o:?}");
            assert_eq!(Outcome::from_index(i as u32), *o);
        }
        assert_eq!(
            Outcome::from_index(Outcome::ALL.len() as u32),
            Outcome::NotHttp
        );
        assert_eq!(Outcome::from_index(u32::MAX), Outcome::NotHttp);
    }

    #[test]
    fn http2_is_refused_unless_passed_and_corrupt_values_refuse() {
        use crate::config::Http2;
        assert_eq!(Outcome::Http2.verdict(&ENFORCE), Verdict::Drop);
        assert_eq!(
            Outcome::Http2.verdict(&ENFORCE.with_http2(Http2::Pass)),
            Verdict::Pass
        );
        assert_eq!(
            Outcome::Http2.verdict(&ENFORCE.with_action(Action::Reset)),
            Verdict::Reset
        );
        assert_eq!(Outcome::Http2.verdict(&MONITOR_STRICT), Verdict::Pass);
        for http2 in [2, 7, u32::MAX] {
            let corrupt = FilterConfig { http2, ..ENFORCE };
            assert_eq!(Outcome::Http2.verdict(&corrupt), Verdict::Drop, "{http2}");
        }
        let passing = ENFORCE.with_http2(Http2::Pass);
        assert_eq!(Outcome::ProxyMalformed.verdict(&passing), Verdict::Drop);
    }

    #[test]
    fn malformed_counts_as_deny_too() {
        assert_eq!(
            Outcome::Malformed.counters(),
            (Counter::PreflightDeny, Some(Counter::Malformed))
        );
    }
}
