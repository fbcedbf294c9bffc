//! From what the parser found to what the program does and counts.

use crate::{counters::Counter, event::DenialReason, settings::FilterConfig};

pub use crate::contract::Outcome;

/// What an outcome does to its packet, and whether it is reported: the
/// last column of its row in `contract`, which the predicates and the
/// verdict below, and `DenialReason::of`, must agree with (checked when
/// the crate compiles, and by a test).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Passes whatever the settings, with no event.
    Pass,
    /// Refuses a request for its origin (a CORS or CSRF denial): dropped,
    /// or reset, while enforcing; reported.
    Deny(DenialReason),
    /// Refuses a connection for what it speaks, not for an origin: dropped,
    /// or reset, while enforcing; reported.
    Refuse(DenialReason),
    /// Starts HTTP/2, whose frames the filter cannot read: refused as
    /// [`Effect::Refuse`] unless `http2 = "pass"`; reported either way.
    Http2,
    /// A head longer than judged: refused and reported as a denial with
    /// `on_oversized_head = "drop"`, passed otherwise.
    Oversized,
    /// Dropped while enforcing to keep the connection's stream judged:
    /// not a denial of its own (no event, no reset).
    KeepOrder,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
    /// Drop, and answer the sender with a TCP reset (`Action::Reset`).
    Reset,
}

impl Outcome {
    /// The outcome of number `index`, `NotHttp` for a number no outcome
    /// has: [`Outcome::ALL`] lists them by number (checked in `contract`).
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

    // The predicates and the verdict below name outcomes rather than
    // read their `effect()`, which made heads 2 to 9% slower, and 1 to 5%
    // in the variants tried (other branches, other code layout;
    // BENCHMARKS.md, "Issue 15 finished").
    // The lists are checked against the table when the crate compiles
    // (the const block after `impl Outcome`), and the verdict and
    // `DenialReason::of` by a test, under every kind of settings: a row
    // and the code cannot disagree.

    /// Whether the outcome refuses the request for its origin, whatever
    /// the settings say of incomplete heads (monitor mode still lets it
    /// pass): [`Effect::Deny`].
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

    /// Whether the outcome refuses a connection for what it speaks (HTTP/2,
    /// a malformed PROXY header), not for its requests' origins: no
    /// denial, but dropped (or reset) while enforcing, as the settings say.
    #[inline(always)]
    pub const fn refuses_protocol(self) -> bool {
        matches!(self, Outcome::Http2 | Outcome::ProxyMalformed)
    }

    /// Whether the outcome drops or reports under some settings: every
    /// effect but [`Effect::Pass`]. Every other outcome passes, whatever
    /// the settings, with no event.
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

    /// The counter `replay` names this outcome by (its `reason`): its
    /// detail counter if it has one, else its outcome counter.
    pub const fn replay_reason(self) -> Counter {
        match self.counters() {
            (_, Some(detail)) => detail,
            (counter, None) => counter,
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

// Each list above is exactly the outcomes of its effects in the table.
const _: () = {
    let mut i = 0;
    while i < Outcome::ALL.len() {
        let outcome = Outcome::ALL[i];
        let effect = outcome.effect();
        assert!(
            outcome.is_denial() == matches!(effect, Effect::Deny(_)),
            "Outcome::is_denial lists the outcomes of effect deny"
        );
        assert!(
            outcome.refuses_protocol() == matches!(effect, Effect::Refuse(_) | Effect::Http2),
            "Outcome::refuses_protocol lists the outcomes of effect refuse or http2"
        );
        assert!(
            outcome.keeps_order() == matches!(effect, Effect::KeepOrder),
            "Outcome::keeps_order lists the outcomes of effect keep_order"
        );
        assert!(
            outcome.may_deny() == !matches!(effect, Effect::Pass),
            "Outcome::may_deny holds for every effect but pass"
        );
        i += 1;
    }
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{Action, Mode, OnIncomplete};

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
        use crate::event::DenialReason;
        use crate::settings::Action;
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
        use crate::settings::Http2;
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

    /// The released outcomes' numbers (see `contract`): a row moved fails
    /// here. New rows need no line here.
    #[test]
    fn released_outcomes_keep_their_number() {
        use Outcome::*;
        const RELEASED: [Outcome; 30] = [
            NotIp,
            NotTcp,
            IpFragment,
            Ipv6ExtHeader,
            Truncated,
            PortNotInspected,
            NoPayload,
            NotHttp,
            NotPreflight,
            Incomplete,
            Allowed,
            Denied,
            Malformed,
            MethodDenied,
            UnsafeAllowed,
            UnsafeDenied,
            UnsafeMalformed,
            UnsafeMethodDenied,
            CrossSiteNoOrigin,
            NoOrigin,
            Retransmission,
            Body,
            HeadPart,
            Untracked,
            ConnectionDenied,
            OutOfOrder,
            HeadLost,
            Urgent,
            Http2,
            ProxyMalformed,
        ];
        for (number, outcome) in RELEASED.into_iter().enumerate() {
            assert_eq!(outcome as usize, number, "{outcome:?}");
        }
    }

    /// What the table's `effect` column says an outcome does under
    /// `config`: its verdict and the reason it is reported for.
    fn effect_says(outcome: Outcome, config: &FilterConfig) -> (Verdict, Option<DenialReason>) {
        let (drops, reason) = match outcome.effect() {
            Effect::Pass => (false, None),
            Effect::Deny(reason) | Effect::Refuse(reason) => (true, Some(reason)),
            Effect::Http2 => (!config.passes_http2(), Some(DenialReason::Http2)),
            Effect::Oversized => {
                let drops = config.drop_incomplete();
                (drops, drops.then_some(DenialReason::IncompleteDropped))
            }
            // Dropped while enforcing, never reset, never reported.
            Effect::KeepOrder if config.enforcing() => return (Verdict::Drop, None),
            Effect::KeepOrder => return (Verdict::Pass, None),
        };
        let verdict = if !drops || !config.enforcing() {
            Verdict::Pass
        } else if config.resets() {
            Verdict::Reset
        } else {
            Verdict::Drop
        };
        (verdict, reason)
    }

    /// The verdict and the denial reason, which name outcomes for speed
    /// (see `Outcome::is_denial`), do what each row's effect says, under
    /// every combination of the settings they read.
    #[test]
    fn the_verdict_and_the_reason_follow_the_effect_column() {
        use crate::settings::Http2;
        for mode in [Mode::Enforce, Mode::Monitor] {
            for on_incomplete in [OnIncomplete::Pass, OnIncomplete::Drop] {
                for action in [Action::Drop, Action::Reset] {
                    for http2 in [Http2::Drop, Http2::Pass] {
                        let config = FilterConfig::new(mode, on_incomplete)
                            .with_action(action)
                            .with_http2(http2);
                        for outcome in Outcome::ALL {
                            assert_eq!(
                                (outcome.verdict(&config), DenialReason::of(outcome, &config)),
                                effect_says(outcome, &config),
                                "{outcome:?} under {config:?}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Every outcome is named by the program or the parser, directly or
    /// by the constructor that makes it (`Outcome::denied(..)`): a row
    /// added to `contract` that no line ends in fails here. The files that
    /// only sort outcomes (the tables, this one, `event.rs`, which the
    /// const asserts make name every outcome that is not `pass`) are left
    /// out. A name is all it checks (the parser's `rank` names some
    /// outcomes too); the replay and differential suites check which
    /// packets end where.
    #[test]
    fn every_outcome_is_named_by_the_program_or_the_parser() {
        let sorts_outcomes = |path: &std::path::Path| {
            path.components().any(|part| part.as_os_str() == "contract")
                || ["contract.rs", "verdict.rs", "event.rs"]
                    .iter()
                    .any(|file| path.ends_with(file))
        };
        let code = crate::source_text::rust_code(&["../cors-filter-ebpf/src", "src"], |path| {
            !sorts_outcomes(path)
        });
        /// `Outcome::malformed` and its like: a preflight's or an unsafe
        /// request's outcome.
        type Constructor = fn(bool) -> Outcome;
        let constructors: [(&str, Constructor); 4] = [
            ("allowed", Outcome::allowed),
            ("denied", Outcome::denied),
            ("malformed", Outcome::malformed),
            ("method_denied", Outcome::method_denied),
        ];
        for outcome in Outcome::ALL {
            let by_constructor = constructors.iter().any(|(name, make)| {
                [make(false), make(true)].contains(&outcome)
                    && code.contains(&std::format!("Outcome::{name}("))
            });
            assert!(
                by_constructor
                    || crate::source_text::names(&code, &std::format!("Outcome::{outcome:?}")),
                "no line of the program or the parser ends in Outcome::{outcome:?}"
            );
        }
    }

    #[test]
    fn malformed_counts_as_deny_too() {
        assert_eq!(
            Outcome::Malformed.counters(),
            (Counter::PreflightDeny, Some(Counter::Malformed))
        );
    }
}
