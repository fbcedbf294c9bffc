//! The counters of the per-CPU `COUNTERS` map (their table is in
//! `contract`): what writes them, how `/metrics` exports them, and the
//! sets of them read off the outcomes' table.

use crate::Outcome;
pub use crate::contract::Counter;

/// What writes a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The program, for the outcome of each packet ([`Outcome::counters`]):
    /// an outcome counter, or a detail counter.
    Outcome,
    /// The program, with a `count` of its own (`Dropped`, the resets, ...).
    Program,
    /// No one: the readers add up the outcome counters ([`Counter::derive`]).
    Derived,
}

/// How `/metrics` exports a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// A Prometheus counter of its own.
    Own {
        name: &'static str,
        help: &'static str,
    },
    /// One series of a labelled family: `family{label="value"}`.
    Series {
        family: &'static MetricFamily,
        value: &'static str,
    },
}

impl Metric {
    /// A Prometheus counter of its own, `name` with `help`.
    pub const fn own(name: &'static str, help: &'static str) -> Metric {
        Metric::Own { name, help }
    }
}

/// A labelled Prometheus counter, whose series are counters.
#[derive(Debug, PartialEq, Eq)]
pub struct MetricFamily {
    pub name: &'static str,
    pub help: &'static str,
    /// The one label, whose value tells the series apart.
    pub label: &'static str,
}

impl MetricFamily {
    /// Its series of label value `value`.
    pub const fn series(&'static self, value: &'static str) -> Metric {
        Metric::Series {
            family: self,
            value,
        }
    }
}

impl Counter {
    /// The entries of the `COUNTERS` map: room for counters to come, so that
    /// adding one leaves the pinned map's shape as it was (a daemon adopts
    /// a pinned map only if its shape is the one it expects). Never
    /// changes; readers read the [`Counter::COUNT`] counters they know.
    pub const SLOTS: u32 = 64;

    /// The counters of which every packet bumps exactly one: its outcome's
    /// (see [`Outcome::counters`]), read off the outcomes' table. The
    /// detail counters (`Malformed`, `MethodDeny`, `CrossSite`) go with
    /// one and are not among them.
    pub const OUTCOMES: [Counter; Self::OUTCOME_BITS.count_ones() as usize] =
        Self::having(Self::OUTCOME_BITS);

    /// The outcome counters of requests ([`Outcome::is_request`]).
    pub const REQUEST_OUTCOMES: [Counter; Self::REQUEST_OUTCOME_BITS.count_ones() as usize] =
        Self::having(Self::REQUEST_OUTCOME_BITS);

    /// The detail counters: the second counter of an outcome that bumps
    /// two, which names it in `replay` (see [`Outcome::replay_reason`]).
    pub const DETAILS: [Counter; Self::DETAIL_BITS.count_ones() as usize] =
        Self::having(Self::DETAIL_BITS);

    /// [`Counter::OUTCOMES`] as a set: a bit per counter ([`Counter::bit`]).
    pub(crate) const OUTCOME_BITS: u64 = outcome_bits(Role::Outcome);
    pub(crate) const REQUEST_OUTCOME_BITS: u64 = outcome_bits(Role::RequestOutcome);
    pub(crate) const DETAIL_BITS: u64 = outcome_bits(Role::Detail);

    /// The counter's bit in a `u64` set of counters (every index is below
    /// [`Counter::SLOTS`], at most 64).
    pub(crate) const fn bit(self) -> u64 {
        1 << self.index()
    }

    /// The counters of the set `bits`, in index order.
    const fn having<const N: usize>(bits: u64) -> [Counter; N] {
        let mut out = [Counter::Packets; N];
        let (mut i, mut n) = (0, 0);
        while i < Counter::ALL.len() {
            if bits & Counter::ALL[i].bit() != 0 {
                out[n] = Counter::ALL[i];
                n += 1;
            }
            i += 1;
        }
        out
    }

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
}

// A set of counters is a `u64`.
const _: () = assert!(Counter::SLOTS <= u64::BITS);

/// What a counter is to an outcome.
enum Role {
    /// Its outcome counter.
    Outcome,
    /// Its outcome counter, if the outcome is a request's.
    RequestOutcome,
    /// Its detail counter.
    Detail,
}

/// The counters that are `role` to some outcome, as a set.
const fn outcome_bits(role: Role) -> u64 {
    let mut bits = 0;
    let mut i = 0;
    while i < Outcome::ALL.len() {
        let outcome = Outcome::ALL[i];
        bits |= match (outcome.counters(), &role) {
            ((counter, _), Role::Outcome) => counter.bit(),
            ((counter, _), Role::RequestOutcome) if outcome.is_request() => counter.bit(),
            ((_, Some(detail)), Role::Detail) => detail.bit(),
            _ => 0,
        };
        i += 1;
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every outcome, as the program counts it (its number kept in
    /// `Scratch::outcome`, read back with `from_index`, its counters bumped
    /// in a map of `SLOTS` entries) and as the readers add up the `COUNT`
    /// counters they know: one packet, a request if it is one.
    #[test]
    fn every_outcome_is_counted_once() {
        for outcome in Outcome::ALL {
            let mut map = [0u64; Counter::SLOTS as usize];
            let (counter, detail) = Outcome::from_index(outcome as u32).counters();
            for bumped in core::iter::once(counter).chain(detail) {
                map[bumped.index() as usize] += 1;
            }
            let mut values = [0u64; Counter::COUNT as usize];
            for counter in Counter::ALL {
                values[counter.index() as usize] = map[counter.index() as usize];
            }
            assert_eq!(
                map.iter().sum::<u64>(),
                values.iter().sum::<u64>(),
                "{outcome:?}"
            );
            Counter::derive(&mut values);
            assert_eq!(values[Counter::Packets.index() as usize], 1, "{outcome:?}");
            assert_eq!(
                values[Counter::Requests.index() as usize],
                outcome.is_request() as u64,
                "{outcome:?}"
            );
        }
    }

    /// The released numbers and names, which pinned maps, dashboards and
    /// scripts hold: a row moved or renamed fails here. New rows need no
    /// line here.
    #[test]
    fn released_counters_keep_their_number_and_name() {
        const RELEASED: [(u32, &str); 36] = [
            (0, "packets"),
            (1, "requests"),
            (2, "preflight_allow"),
            (3, "preflight_deny"),
            (4, "malformed"),
            (5, "incomplete"),
            (6, "unsafe_allow"),
            (7, "unsafe_deny"),
            (8, "no_origin"),
            (9, "method_deny"),
            (10, "cross_site"),
            (11, "dropped"),
            (12, "reset_sent"),
            (13, "reset_failed"),
            (14, "pass_not_ip"),
            (15, "pass_not_tcp"),
            (16, "pass_ip_fragment"),
            (17, "pass_ipv6_ext_header"),
            (18, "pass_truncated"),
            (19, "pass_port_not_inspected"),
            (20, "pass_no_payload"),
            (21, "pass_not_http"),
            (22, "pass_not_preflight"),
            (23, "events_lost"),
            (24, "pass_retransmission"),
            (25, "pass_body"),
            (26, "pass_head_part"),
            (27, "pass_untracked"),
            (28, "connection_denied"),
            (29, "out_of_order"),
            (30, "head_lost"),
            (31, "conns_learned"),
            (32, "urgent"),
            (33, "http2"),
            (34, "proxy_malformed"),
            (35, "proxy_headers"),
        ];
        for (index, name) in RELEASED {
            assert_eq!(Counter::ALL[index as usize].name(), name, "counter {index}");
        }
    }

    /// A counter the program bumps on its own is named in its code, and a
    /// derived one is not (the readers would count it twice). Outcome
    /// counters are bumped for whatever outcome a packet has
    /// (`Outcome::counters`).
    #[test]
    fn the_program_bumps_its_counters() {
        let program = crate::source_text::rust_code(&["../cors-filter-ebpf/src"], |_| true);
        let named = |counter: Counter| {
            crate::source_text::names(&program, &std::format!("Counter::{counter:?}"))
        };
        assert!(
            named(Counter::Dropped),
            "the program's sources are not where this test looks"
        );
        for counter in Counter::ALL {
            match counter.source() {
                Source::Program => assert!(named(counter), "the program never bumps {counter:?}"),
                Source::Derived => assert!(!named(counter), "the program bumps {counter:?}"),
                Source::Outcome => {}
            }
        }
    }
}
