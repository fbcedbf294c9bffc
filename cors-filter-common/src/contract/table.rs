//! The macros that turn the tables of `contract` into the `Outcome` and
//! `Counter` enums and what is read off their rows. Every list, name and
//! match is generated from the one row, so adding a row is the whole of
//! adding an outcome or a counter: a row the compiler does not ask to be
//! complete (a list written by hand beside it) is how one went uncounted.

/// `Outcome`, from rows `Name = NUMBER: KIND => COUNTER [+ DETAIL]; EFFECT,`:
///
/// - `NUMBER`: its discriminant, written out so that a change of number
///   shows in review (see `contract` on numbers);
/// - `KIND`: `request` when the packet carried the start of an HTTP
///   request (its counter adds up to `Requests`), `packet` otherwise;
/// - `COUNTER`: the outcome counter it bumps, of which every packet bumps
///   exactly one (they add up to `Packets`);
/// - `DETAIL`: a second counter it bumps, that says more than its outcome
///   counter (`Malformed` with `PreflightDeny`), and that `replay` names
///   it by;
/// - `EFFECT`: what it does to the packet and whether it is reported, an
///   [`Effect`](crate::verdict::Effect): `pass`, `deny(REASON)`,
///   `refuse(REASON)`, `http2`, `oversized` or `keep_order`, `REASON` a
///   [`DenialReason`](crate::event::DenialReason). A row cannot leave it
///   out, so a new outcome never passes by default.
///
/// Generates the enum, `Outcome::ALL` (the rows in order), `Outcome::COUNT`,
/// `Outcome::counters`, `Outcome::is_request` and `Outcome::effect`.
macro_rules! outcomes {
    (@detail) => { None };
    (@detail $detail:ident) => { Some($crate::counters::Counter::$detail) };
    (@request request) => { true };
    (@request packet) => { false };
    (@effect pass) => { $crate::verdict::Effect::Pass };
    (@effect deny $reason:ident) => {
        $crate::verdict::Effect::Deny($crate::event::DenialReason::$reason)
    };
    (@effect refuse $reason:ident) => {
        $crate::verdict::Effect::Refuse($crate::event::DenialReason::$reason)
    };
    (@effect http2) => { $crate::verdict::Effect::Http2 };
    (@effect oversized) => { $crate::verdict::Effect::Oversized };
    (@effect keep_order) => { $crate::verdict::Effect::KeepOrder };
    (
        $(#[$enum_meta:meta])*
        pub enum Outcome {
            $(
                $(#[$meta:meta])*
                $outcome:ident = $number:literal: $kind:ident => $counter:ident $(+ $detail:ident)?;
                    $effect:ident $(($reason:ident))?,
            )*
        }
    ) => {
        $(#[$enum_meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Outcome {
            $(
                $(#[$meta])*
                $outcome = $number,
            )*
        }

        impl Outcome {
            /// How many outcomes there are.
            pub const COUNT: u32 = [$($number),*].len() as u32;

            /// Every outcome, in the table's order: by number (checked in
            /// `contract`), which [`Outcome::from_index`] relies on.
            pub const ALL: [Outcome; Self::COUNT as usize] = [$(Outcome::$outcome),*];

            /// The outcome counter this outcome bumps, and its detail
            /// counter if it has one (see [`Outcome::replay_reason`]);
            /// `Dropped` and the reset counters are the program's own.
            #[inline(always)]
            pub const fn counters(self) -> ($crate::counters::Counter, Option<$crate::counters::Counter>) {
                match self {
                    $(Outcome::$outcome => (
                        $crate::counters::Counter::$counter,
                        outcomes!(@detail $($detail)?),
                    ),)*
                }
            }

            /// Whether the packet carried the start of an HTTP request:
            /// its outcome counter adds up to `Requests`.
            #[inline(always)]
            pub const fn is_request(self) -> bool {
                match self {
                    $(Outcome::$outcome => outcomes!(@request $kind),)*
                }
            }

            /// What the outcome does to its packet, and whether it is
            /// reported (see [`Outcome::verdict`]).
            #[inline(always)]
            pub const fn effect(self) -> $crate::verdict::Effect {
                match self {
                    $(Outcome::$outcome => outcomes!(@effect $effect $($reason)?),)*
                }
            }
        }
    };
}

/// `Counter`, from rows `Name = INDEX: SOURCE, "name" => METRIC,`:
///
/// - `INDEX`: its discriminant, the slot of the pinned `COUNTERS` map it
///   lives in (see `contract` on numbers);
/// - `SOURCE`: a [`Source`](crate::counters::Source) variant, what writes it;
/// - `"name"`: its name in `stats` and `stats --json` (and in `replay`'s
///   `reason`);
/// - `METRIC`: a [`Metric`](crate::counters::Metric), how `/metrics`
///   exports it.
///
/// Generates the enum, `Counter::ALL` (the rows in order), `Counter::COUNT`,
/// `Counter::name`, `Counter::source` and `Counter::metric`.
macro_rules! counters {
    (
        $(#[$enum_meta:meta])*
        pub enum Counter {
            $(
                $(#[$meta:meta])*
                $counter:ident = $index:literal: $source:ident, $name:literal => $metric:expr,
            )*
        }
    ) => {
        $(#[$enum_meta])*
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Counter {
            $(
                $(#[$meta])*
                $counter = $index,
            )*
        }

        impl Counter {
            /// How many counters there are (the `COUNTERS` map has room for
            /// [`Counter::SLOTS`]).
            pub const COUNT: u32 = [$($index),*].len() as u32;

            /// Every counter, in the table's order: by index (checked in
            /// `contract`).
            pub const ALL: [Counter; Self::COUNT as usize] = [$(Counter::$counter),*];

            /// The name used in `stats`, `stats --json` and `replay`.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Counter::$counter => $name,)*
                }
            }

            /// What writes the counter.
            pub const fn source(self) -> $crate::counters::Source {
                match self {
                    $(Counter::$counter => $crate::counters::Source::$source,)*
                }
            }

            /// How `/metrics` exports the counter.
            pub const fn metric(self) -> $crate::counters::Metric {
                match self {
                    $(Counter::$counter => $metric,)*
                }
            }
        }
    };
}
