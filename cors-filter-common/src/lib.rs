//! Types and parsing shared by the cors-filter eBPF program and its userspace.
//!
//! Everything here is `no_std` and allocation-free so that the kernel side and
//! the userspace side run the *same* code: the parser is unit-tested and
//! fuzzed in userspace and then compiled, unchanged, into the XDP program.
//!
//! The parsing functions work on fixed-size buffers and index them with masks
//! so that every access is provably in bounds for the eBPF verifier; values
//! carried out of data-dependent loops go through [`Slot`]s (see there).
#![no_std]

// Tests, and the derives of the `user` feature (clap's name `::std`).
#[cfg(any(test, feature = "user"))]
extern crate std;

pub mod allow_map;
pub mod contract;
pub mod counters;
pub mod event;
pub mod http;
pub mod ipv6;
pub mod method;
pub mod origin;
pub mod pinned;
pub mod policy;
pub mod proxy;
pub mod reset;
pub mod settings;
pub mod slot;
pub mod store;
pub mod stream;
pub mod verdict;

#[cfg(test)]
mod source_text;

pub use counters::Counter;
pub use method::{Method, MethodSet};
pub use origin::{OriginError, OriginKey, OriginParse};
pub use policy::Policy;
pub use settings::{
    ALLOWLIST_MAX_ENTRIES, Action, FilterConfig, Generation, Http2, Mode, OnIncomplete, PortBitmap,
    PortFlags,
};
pub use slot::Slot;
pub use verdict::{Outcome, Verdict};

/// The per-CPU scratch space the XDP program parses in.
///
/// It lives in a per-CPU array map, not on the 512-byte BPF stack: the payload
/// copy alone is larger than the stack, and values kept in map memory are not
/// tracked by the verifier (see [`Slot`]).
#[repr(C)]
pub struct Scratch {
    /// A chunk of up to [`http::SCAN_BYTES`] bytes of the segment's
    /// payload (see [`stream::SegmentCursor`]).
    pub payload: http::ScanBuf,
    /// Where the IPv6 extension-header walk is (see [`ipv6::tcp_header`]).
    pub ipv6_walk_offset: Slot<u32>,
    /// The policy generation this packet is judged by (see [`Generation`]),
    /// read once per packet. Kept here and read afresh at each use: a
    /// register that a branch on it leaves known to be 0 or 1 would make
    /// the verifier walk the rest of the program once per generation.
    pub generation: Slot<u32>,
    /// The packet's addresses and ports, for its denial event.
    pub addressing: event::PacketAddressing,
    pub origin: OriginParse,
    /// The method the request is judged by (a `Method` code): the one a
    /// preflight asks for, or an unsafe request's own.
    pub judged: Slot<u32>,
    /// Whether the request judged is an unsafe one rather than a preflight.
    pub unsafe_request: Slot<u32>,
    /// Where the segment is, and room to build a reset (`--action reset`).
    pub reset: reset::ResetScratch,
    /// The packet's outcome, by its number (see `Outcome::from_index` and
    /// the program's `filter`).
    pub outcome: Slot<u32>,
    /// The state of the packet's connection while its segment is parsed
    /// (see `stream`), loaded from and stored to the `CONNS` map.
    pub stream_conn: stream::ConnState,
    /// The head being read on that connection (`OPEN_HEADS` between segments).
    pub stream_head: stream::HeadState,
    /// Where the segment's parse is.
    pub cursor: stream::SegmentCursor,
    /// Offset of the segment's payload in the packet, for the parse's
    /// loads (which run in `bpf_loop`'s callback).
    pub stream_payload_offset: Slot<u32>,
    /// The packet's port's `PortFlags`, likewise.
    pub stream_port_flags: Slot<u64>,
    /// The client the connection's PROXY header named, for the denial
    /// event (family 0: none).
    pub proxy_client: proxy::ProxyClient,
}

impl Scratch {
    /// A scratch space whose payload buffer holds `fill` (stale bytes, for
    /// userspace runs of the parsing code) and everything else its default.
    pub fn new(fill: u8) -> Scratch {
        Scratch {
            payload: http::ScanBuf([fill; http::SCAN_BUF_LEN]),
            ipv6_walk_offset: Default::default(),
            generation: Default::default(),
            addressing: Default::default(),
            origin: Default::default(),
            judged: Default::default(),
            unsafe_request: Default::default(),
            reset: Default::default(),
            outcome: Default::default(),
            stream_conn: Default::default(),
            stream_head: Default::default(),
            cursor: Default::default(),
            stream_payload_offset: Default::default(),
            stream_port_flags: Default::default(),
            proxy_client: Default::default(),
        }
    }
}
