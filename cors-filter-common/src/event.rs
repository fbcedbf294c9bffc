//! Denial events: what the program reports to the daemon, through the
//! `DENIALS` ring buffer, for each preflight and unsafe request it denies
//! (in monitor mode: would deny) and each request it drops (would drop) as
//! incomplete.
//!
//! The layout is shared with the daemon's decoder, which reads the fields at
//! their offsets and trusts none of the values (see `cors-filter-user`'s
//! `denials::event`).

use crate::{FilterConfig, Outcome, Slot, origin::ORIGIN_RAW_LEN};

/// Bytes of the `Origin` value an event carries; a longer value is cut there
/// and flagged with [`FLAG_ORIGIN_TRUNCATED`].
pub const EVENT_ORIGIN_LEN: usize = 128;

/// `DenialEvent::family` of an IPv4 source (address in the first 4 bytes).
pub const FAMILY_IPV4: u8 = 4;
/// `DenialEvent::family` of an IPv6 source.
pub const FAMILY_IPV6: u8 = 6;

/// `DenialEvent::flags` bit: the value was longer than [`EVENT_ORIGIN_LEN`].
pub const FLAG_ORIGIN_TRUNCATED: u8 = 1;
/// `DenialEvent::flags` bit: the request is one with an unsafe method
/// (`protect_unsafe_methods`), not a preflight.
pub const FLAG_UNSAFE_REQUEST: u8 = 2;

/// Why a request was reported.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenialReason {
    /// A preflight whose origin the allowlist does not hold.
    NotAllowed = 1,
    /// A preflight whose `Origin` is not a valid origin, or appears twice.
    Malformed = 2,
    /// A request whose head is longer than judged, dropped (or, in monitor
    /// mode, that would be) by `on_oversized_head = "drop"`.
    IncompleteDropped = 3,
    /// A preflight or unsafe request whose origin the allowlist holds, but
    /// not with the method.
    MethodNotAllowed = 4,
    /// An unsafe request without `Origin` whose `Sec-Fetch-Site` says
    /// `cross-site`.
    CrossSiteNoOrigin = 5,
    /// A request that starts HTTP/2 (`Outcome::Http2`), refused or, with
    /// `http2 = "pass"`, passed: reported either way, so that the daemon
    /// can say that a port carries what the filter cannot read.
    Http2 = 6,
    /// A PROXY header servers refuse (`Outcome::ProxyMalformed`).
    ProxyMalformed = 7,
}

impl DenialReason {
    pub const ALL: [DenialReason; 7] = [
        DenialReason::NotAllowed,
        DenialReason::Malformed,
        DenialReason::IncompleteDropped,
        DenialReason::MethodNotAllowed,
        DenialReason::CrossSiteNoOrigin,
        DenialReason::Http2,
        DenialReason::ProxyMalformed,
    ];

    /// The reason an outcome is reported for under `config`; `None` when it
    /// is not a denial. Monitor mode reports what enforce mode would drop.
    #[inline(always)]
    pub fn of(outcome: Outcome, config: &FilterConfig) -> Option<DenialReason> {
        match outcome {
            Outcome::Denied | Outcome::UnsafeDenied => Some(DenialReason::NotAllowed),
            Outcome::Malformed | Outcome::UnsafeMalformed => Some(DenialReason::Malformed),
            Outcome::MethodDenied | Outcome::UnsafeMethodDenied => {
                Some(DenialReason::MethodNotAllowed)
            }
            Outcome::CrossSiteNoOrigin => Some(DenialReason::CrossSiteNoOrigin),
            Outcome::Incomplete if config.drop_incomplete() => {
                Some(DenialReason::IncompleteDropped)
            }
            Outcome::Http2 => Some(DenialReason::Http2),
            Outcome::ProxyMalformed => Some(DenialReason::ProxyMalformed),
            _ => None,
        }
    }

    pub const fn from_code(code: u8) -> Option<DenialReason> {
        match code {
            1 => Some(DenialReason::NotAllowed),
            2 => Some(DenialReason::Malformed),
            3 => Some(DenialReason::IncompleteDropped),
            4 => Some(DenialReason::MethodNotAllowed),
            5 => Some(DenialReason::CrossSiteNoOrigin),
            6 => Some(DenialReason::Http2),
            7 => Some(DenialReason::ProxyMalformed),
            _ => None,
        }
    }

    /// The name in log lines.
    pub const fn name(self) -> &'static str {
        match self {
            DenialReason::NotAllowed => "origin not allowed",
            DenialReason::Malformed => "malformed origin",
            DenialReason::IncompleteDropped => "incomplete request head",
            DenialReason::MethodNotAllowed => "method not allowed for the origin",
            DenialReason::CrossSiteNoOrigin => "cross-site request without origin",
            DenialReason::Http2 => "HTTP/2 on an inspected port",
            DenialReason::ProxyMalformed => "malformed PROXY header",
        }
    }

    /// Whether the event is about a request whose head was read (not a
    /// connection refused for what it speaks).
    pub const fn names_a_request(self) -> bool {
        !matches!(self, DenialReason::Http2 | DenialReason::ProxyMalformed)
    }

    /// Whether the event names an origin that is counted per origin: a
    /// denied preflight or unsafe request that had one. (An incomplete head
    /// is counted on its own, in `incomplete`, and a cross-site request
    /// without origin in `cross_site`.)
    pub const fn counts_per_origin(self) -> bool {
        matches!(
            self,
            DenialReason::NotAllowed | DenialReason::Malformed | DenialReason::MethodNotAllowed
        )
    }
}

/// Size of the `DENIALS` ring buffer: 256 KiB hold 992 records (see
/// [`RECORD_BYTES`]). The reader is woken when half of it waits (see
/// [`WAKEUP_BYTES`]), so a flood fills the rest only if the daemon takes
/// longer to answer its wake-up than the flood takes to write 496 more
/// events (1.2 ms at 400,000 denials a second); what finds no room counts
/// in `events_lost`.
pub const DENIALS_BYTES: u32 = 256 * 1024;
/// The reader of `DENIALS` is woken by the records that bring what waits
/// in it from below this many bytes to [`WAKEUP_WINDOW`] records above:
/// at most twice per batch of 496 records, not once per record, which in
/// a flood of denials would cost a wake-up (an interrupt) each. Fewer
/// records wait for the reader's timer (see the daemon's `denials`
/// module). Half the buffer rather than less: each wake-up is a
/// self-interrupt (`irq_work`), a trap to the hypervisor in a virtual
/// machine, and at an eighth of the buffer it cost a denied preflight
/// 40 to 80 ns under `BPF_PROG_TEST_RUN` (issue 17, BENCHMARKS.md); the
/// price, a woken reader's headroom of 496 records rather than 868, lost
/// no more events in a flood on an idle machine. The window is two
/// records wide because a record reserved at the same time on another CPU
/// counts in what waits; should both miss it, the timer reads the records
/// (each wake-up is an interrupt, so the window is kept narrow).
pub const WAKEUP_BYTES: u64 = DENIALS_BYTES as u64 / 2;
pub const WAKEUP_WINDOW: u64 = 2;
/// Bytes one record takes in the ring buffer: its 8-byte header and the
/// event, rounded up to 8.
pub const RECORD_BYTES: u64 = (8 + size_of::<DenialEvent>() as u64).next_multiple_of(8);
const _: () = assert!(DENIALS_BYTES as u64 / RECORD_BYTES == 992);
// The window lies inside the buffer, so a batch does wake the reader.
const _: () = assert!(WAKEUP_BYTES + WAKEUP_WINDOW * RECORD_BYTES < DENIALS_BYTES as u64);

/// Whether the record that brought the bytes waiting in `DENIALS` to
/// `pending` should wake the reader (see [`WAKEUP_BYTES`]).
#[inline(always)]
pub const fn wakes_reader(pending: u64) -> bool {
    pending >= WAKEUP_BYTES && pending < WAKEUP_BYTES + WAKEUP_WINDOW * RECORD_BYTES
}

/// One record of the `DENIALS` ring buffer. Every byte is written by the
/// program except those of `origin` past `origin_len`, which are
/// unspecified.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DenialEvent {
    /// IPv6, or IPv4 in the first 4 bytes and zeros after.
    pub source_addr: [u8; 16],
    /// Host byte order.
    pub source_port: u16,
    /// Host byte order.
    pub dest_port: u16,
    /// Bytes of `origin` holding the value, at most [`EVENT_ORIGIN_LEN`];
    /// 0 when the request's `Origin` value was not read (a repeated
    /// `Origin`, an incomplete head) or is empty.
    pub origin_len: u16,
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`].
    pub family: u8,
    /// A [`DenialReason`].
    pub reason: u8,
    /// [`FLAG_ORIGIN_TRUNCATED`], [`FLAG_UNSAFE_REQUEST`].
    pub flags: u8,
    /// The method judged (a `Method` code): the one a preflight asks for,
    /// or an unsafe request's own; `Method::Other` when there is none (an
    /// incomplete head).
    pub method: u8,
    /// Zero; keeps `origin` 8-byte aligned.
    pub reserved: [u8; 6],
    /// The raw `Origin` value, without the whitespace around it: bytes as
    /// the packet had them, not validated.
    pub origin: [u8; EVENT_ORIGIN_LEN],
    /// The client the connection's PROXY header named (the packet's source
    /// is then the proxy); `client.family` 0: none.
    pub client: crate::proxy::ProxyClient,
    /// Bytes of `forwarded` that hold the last element of the port's
    /// trusted client header; [`FORWARDED_TOO_LONG`] when it was longer
    /// than kept, 0 when there was none (or the request's head was not
    /// read: HTTP/2, a PROXY header).
    pub forwarded_len: u8,
    /// Which header it is (`stream::header::X_FORWARDED_FOR` or
    /// `FORWARDED`); 0: none is trusted on the port.
    pub forwarded_header: u8,
    /// Zero; keeps `forwarded` 8-byte aligned.
    pub reserved2: [u8; 6],
    /// That element, as sent (bytes past `forwarded_len` unspecified).
    pub forwarded: [u8; crate::stream::CLIENT_TEXT_LEN],
}

/// `DenialEvent::forwarded_len` of an element longer than kept.
pub const FORWARDED_TOO_LONG: u8 = u8::MAX;
const _: () = assert!(crate::stream::CLIENT_TEXT_LEN < FORWARDED_TOO_LONG as usize);

/// Size of a record, as the ring buffer holds it.
pub const DENIAL_EVENT_SIZE: usize = core::mem::size_of::<DenialEvent>();
const _: () = assert!(DENIAL_EVENT_SIZE == 256);
const _: () = assert!(core::mem::offset_of!(DenialEvent, client) == 160);
const _: () = assert!(core::mem::offset_of!(DenialEvent, forwarded_len) == 184);
const _: () = assert!(core::mem::offset_of!(DenialEvent, forwarded) == 192);
const _: () = assert!(core::mem::offset_of!(DenialEvent, origin) == 32);
// The program zeroes these a word at a time (`events::report`).
const _: () = assert!(core::mem::offset_of!(DenialEvent, source_addr) == 0);
const _: () = assert!(core::mem::offset_of!(DenialEvent, reserved) == 26);
const _: () = assert!(core::mem::align_of::<DenialEvent>() >= 8);
const _: () = assert!(EVENT_ORIGIN_LEN <= ORIGIN_RAW_LEN);

/// How much of an origin value of `value_len` bytes an event carries, and
/// its flags: `(origin_len, flags)`.
#[inline(always)]
pub const fn origin_extent(value_len: u32) -> (u16, u8) {
    if value_len as usize > EVENT_ORIGIN_LEN {
        (EVENT_ORIGIN_LEN as u16, FLAG_ORIGIN_TRUNCATED)
    } else {
        (value_len as u16, 0)
    }
}

/// Where the packet being inspected came from and went, kept in the
/// scratch space from the header walk until its event is written (in
/// [`Slot`]s: the verifier need not track these per path).
#[repr(C)]
#[derive(Default)]
pub struct PacketAddressing {
    /// Offset of the IP header in the frame.
    pub l3_offset: Slot<u32>,
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`].
    pub family: Slot<u32>,
    pub source_port: Slot<u32>,
    pub dest_port: Slot<u32>,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `repr(C)`, integers and byte arrays laid out without padding
    // (sizes and offsets asserted above); every bit pattern is valid.
    unsafe impl aya::Pod for super::DenialEvent {}
}

#[cfg(test)]
mod wakeup_tests {
    use super::*;

    #[test]
    fn a_batch_wakes_the_reader_once_per_record_of_the_window() {
        let wakes = (1..=DENIALS_BYTES as u64 / RECORD_BYTES)
            .filter(|n| wakes_reader(n * RECORD_BYTES))
            .count();
        assert_eq!(wakes as u64, WAKEUP_WINDOW);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{Mode, OnIncomplete};

    #[test]
    fn reasons_follow_the_drop_rules_in_both_modes() {
        for mode in [Mode::Enforce, Mode::Monitor] {
            let pass = FilterConfig::new(mode, OnIncomplete::Pass);
            let drop = FilterConfig::new(mode, OnIncomplete::Drop);
            assert_eq!(
                DenialReason::of(Outcome::Denied, &pass),
                Some(DenialReason::NotAllowed)
            );
            assert_eq!(
                DenialReason::of(Outcome::Malformed, &pass),
                Some(DenialReason::Malformed)
            );
            assert_eq!(DenialReason::of(Outcome::Incomplete, &pass), None);
            assert_eq!(
                DenialReason::of(Outcome::Incomplete, &drop),
                Some(DenialReason::IncompleteDropped)
            );
            assert_eq!(
                DenialReason::of(Outcome::UnsafeMethodDenied, &pass),
                Some(DenialReason::MethodNotAllowed)
            );
            assert_eq!(
                DenialReason::of(Outcome::CrossSiteNoOrigin, &pass),
                Some(DenialReason::CrossSiteNoOrigin)
            );
            for o in [
                Outcome::Allowed,
                Outcome::NotPreflight,
                Outcome::NotHttp,
                Outcome::UnsafeAllowed,
                Outcome::NoOrigin,
            ] {
                assert_eq!(DenialReason::of(o, &drop), None, "{o:?}");
            }
        }
    }

    #[test]
    fn codes_round_trip() {
        for r in DenialReason::ALL {
            assert_eq!(DenialReason::from_code(r as u8), Some(r));
        }
        assert_eq!(DenialReason::from_code(0), None);
        assert_eq!(DenialReason::from_code(8), None);
    }

    #[test]
    fn long_values_are_cut_and_flagged() {
        assert_eq!(origin_extent(0), (0, 0));
        assert_eq!(origin_extent(128), (128, 0));
        assert_eq!(origin_extent(129), (128, FLAG_ORIGIN_TRUNCATED));
        assert_eq!(origin_extent(u32::MAX), (128, FLAG_ORIGIN_TRUNCATED));
    }
}
