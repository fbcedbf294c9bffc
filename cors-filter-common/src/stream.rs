//! The request stream of one TCP connection, as a server parses it: a
//! resumable HTTP/1.x request parser that is fed the connection's bytes in
//! order, in pieces cut anywhere, and judges each request head once it is
//! whole.
//!
//! The parser is a byte-driven state machine whose whole state is a
//! [`ConnState`] (where the connection is: between requests, in a head, in
//! a body, untracked, denied) and a [`HeadState`] (what the head being read
//! has shown so far). Nothing is kept of the bytes themselves but the
//! `Origin` value and the first bytes of two other values, so a head may be
//! cut at any byte, across any number of segments, and the verdict is the
//! one the whole head gets.
//!
//! What counts as a request is the union of what lenient servers act on
//! (nginx, Node's llhttp, Python's `http.server`, httparse): whitespace and
//! empty lines before a request line are skipped; the method is the first
//! token, ended by any whitespace; the rest of the request line (target,
//! version, trailing blanks) is not checked, since a server that refuses it
//! acts on nothing. Header names are matched without regard to case and
//! must be followed directly by the colon. After the head, the body is
//! skipped by its framing: `Transfer-Encoding` whose last coding is
//! `chunked` (chunk sizes, extensions, data, trailers), else
//! `Content-Length`; a body is never read as a request. `CONNECT`, an
//! `Upgrade` header, and bytes that cannot start a request end the tracking
//! of the connection (what follows is another protocol, or nothing a server
//! reads).
//!
//! [`step`] consumes at least one byte per call: a run of body bytes, up to
//! 128 bytes of a line being skipped, what the loaded chunk holds whole of
//! a known method and its space, a header line (with the value of a header
//! the filter reads), a value, or the blank line, or else one byte of a
//! token, name or value. A segment of `n` bytes needs at most `n` calls:
//! the program runs them under `bpf_loop` (Linux 5.17), where the verifier
//! checks one call, not `n`.

use crate::{
    Outcome, Scratch,
    http::{SCAN_BUF_LEN, SCAN_BYTES, SCAN_MASK, ScanBuf, WORD, is_tchar},
    method::Method,
    origin::ORIGIN_RAW_LEN,
    policy::Policy,
    proxy::{self, ProxyClient, V1Line},
    settings::FilterConfig,
    store::{Words, copy_words, put},
};

mod scan;

use scan::{byte_marks, header_of_line, known_method_at, whole_line_end};

/// Where a connection's stream is ([`ConnState::phase`]). These numbers are
/// pinned state (the `CONNS` map): they never change meaning, new phases
/// take new numbers.
pub mod phase {
    /// Between requests: whitespace and empty lines are skipped until a
    /// request line starts.
    pub const IDLE: u32 = 0;
    /// In the method token.
    pub const METHOD: u32 = 1;
    /// In the rest of the request line.
    pub const REQUEST_LINE: u32 = 2;
    /// At the first byte of a header line, or of the blank line.
    pub const LINE_START: u32 = 3;
    /// After a `\r` at the start of a line.
    pub const LINE_CR: u32 = 4;
    /// In a header name.
    pub const NAME: u32 = 5;
    /// In the value of a header the filter reads.
    pub const VALUE: u32 = 6;
    /// In a line the filter does not read, up to its `\n`.
    pub const SKIP_LINE: u32 = 7;
    /// In a body of `Content-Length` bytes (`ConnState::body_left` left).
    pub const BODY: u32 = 8;
    /// In a chunk-size line, before its extensions.
    pub const CHUNK_SIZE: u32 = 9;
    /// In a chunk-size line's extensions, up to its `\n`.
    pub const CHUNK_EXT: u32 = 10;
    /// In chunk data (`ConnState::body_left` left).
    pub const CHUNK_DATA: u32 = 11;
    /// After chunk data, at its `\r\n`.
    pub const CHUNK_DATA_END: u32 = 12;
    /// At the start of a trailer line, or of the blank line ending them.
    pub const TRAILER_START: u32 = 13;
    /// After a `\r` at the start of a trailer line.
    pub const TRAILER_CR: u32 = 14;
    /// In a trailer line, up to its `\n`.
    pub const TRAILER_SKIP: u32 = 15;
    /// Not followed: another protocol (`CONNECT`, `Upgrade`), or bytes no
    /// server reads as a request. Everything passes.
    pub const UNTRACKED: u32 = 16;
    /// A head was denied here: the segment that completed it was dropped,
    /// so the server never reads past its start; every later byte is
    /// dropped too (retransmissions included).
    pub const DENIED: u32 = 17;
    /// At the connection's first byte, which may start a PROXY header
    /// (see `crate::proxy`).
    pub const CONN_START: u32 = 18;
    /// In a PROXY header, kept in the head's `origin` bytes as it is read.
    pub const PROXY_HEADER: u32 = 19;
    /// Phases whose state is in a [`HeadState`](super::HeadState): an
    /// unfinished request head, or PROXY header.
    pub const fn in_head(phase: u32) -> bool {
        (phase >= METHOD && phase <= SKIP_LINE) || phase == PROXY_HEADER
    }
}

/// Entries of the `CONNS` map unless `max_connections` says otherwise: the
/// size the program's map is declared with.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 1 << 18;
/// Entries of the `OPEN_HEADS` map unless `max_open_heads` says otherwise.
pub const DEFAULT_MAX_OPEN_HEADS: u32 = 1 << 14;

/// Header lines a judged head may have.
pub const MAX_HEAD_LINES: u32 = 100;
/// Default bound of a judged head, request line included (nginx's default
/// header buffers are 8 KiB; twice that leaves room).
pub const DEFAULT_MAX_HEAD_BYTES: u32 = 16 * 1024;
/// The largest bound a policy may set.
pub const MAX_MAX_HEAD_BYTES: u32 = 64 * 1024;
/// Bytes of an `Access-Control-Request-Method` or `Sec-Fetch-Site` value
/// kept: the longest token either is compared with is shorter.
pub const VALUE_KEPT: usize = 16;
const VALUE_MASK: usize = VALUE_KEPT - 1;
const _: () = assert!(VALUE_KEPT.is_power_of_two() && VALUE_KEPT > "cross-site".len());
const _: () = assert!(ORIGIN_RAW_LEN.is_power_of_two());

/// What the filter keeps of a connection between segments (the `CONNS`
/// map's value). Its layout is pinned state.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnState {
    /// Sequence number of the next byte to parse: every byte before it has
    /// been parsed, and judged.
    pub next_seq: u32,
    /// With [`phase::DENIED`]: the first byte of the segment that completed
    /// the denied head. Bytes from there on are dropped.
    pub deny_seq: u32,
    /// A [`phase`] number.
    pub phase: u32,
    /// [`conn_flags`].
    pub flags: u32,
    /// Body or chunk bytes left ([`phase::BODY`], [`phase::CHUNK_DATA`]);
    /// the chunk size being read in [`phase::CHUNK_SIZE`].
    pub body_left: u64,
}

impl ConnState {
    /// A connection whose next byte is at `next_seq`, in `first_phase`:
    /// [`phase::CONN_START`] at the connection's start, [`phase::IDLE`]
    /// at a request line of a connection picked up later.
    #[inline(always)]
    pub fn start(&mut self, next_seq: u32, first_phase: u32) {
        let ConnState {
            next_seq: next,
            deny_seq,
            phase,
            flags,
            body_left,
        } = self;
        put(next, next_seq);
        put(deny_seq, 0);
        put(phase, first_phase);
        put(flags, 0);
        put(body_left, 0);
    }

    /// Whether `self` (a map value another CPU may write) still holds
    /// `expected`, read a field at a time (compared whole, LLVM may make
    /// it a call to a byte loop, see `crate::store`).
    #[inline(always)]
    pub fn holds(&self, expected: &ConnState) -> bool {
        // SAFETY: plain reads of the fields of a valid reference.
        unsafe {
            core::ptr::read_volatile(&self.next_seq) == expected.next_seq
                && core::ptr::read_volatile(&self.deny_seq) == expected.deny_seq
                && core::ptr::read_volatile(&self.phase) == expected.phase
                && core::ptr::read_volatile(&self.flags) == expected.flags
                && core::ptr::read_volatile(&self.body_left) == expected.body_left
        }
    }

    /// Copies `from` into `self` (a map value's state into the scratch
    /// space, or back), a field at a time (see `crate::store`).
    #[inline(always)]
    pub fn copy_from(&mut self, from: &ConnState) {
        let ConnState {
            next_seq,
            deny_seq,
            phase,
            flags,
            body_left,
        } = self;
        put(next_seq, from.next_seq);
        put(deny_seq, from.deny_seq);
        put(phase, from.phase);
        put(flags, from.flags);
        put(body_left, from.body_left);
    }
}

/// Bits of [`ConnState::flags`].
pub mod conn_flags {
    /// The head being read is kept in the `OPEN_HEADS` map between
    /// segments (it spanned a segment's end).
    pub const HEAD_KEPT: u32 = 1;
    /// A chunk-size line had a digit.
    pub const CHUNK_DIGITS: u32 = 2;
    /// The connection's PROXY header named a client, kept in the
    /// `PROXY_CLIENTS` map for its denial events.
    pub const PROXIED: u32 = 4;
    /// The connection started with a whole PROXY header: a proxy's
    /// (`Action::ResetProxied`).
    pub const PROXY_HEADER: u32 = 8;
}

/// Which header a line is, among those the filter reads.
pub mod header {
    pub const NONE: u32 = 0;
    pub const ORIGIN: u32 = 1;
    pub const REQUEST_METHOD: u32 = 2;
    pub const SEC_FETCH_SITE: u32 = 3;
    pub const CONTENT_LENGTH: u32 = 4;
    pub const TRANSFER_ENCODING: u32 = 5;
    pub const UPGRADE: u32 = 6;
    /// Read only where a port trusts it for the client (`Policy::client_header`).
    pub const X_FORWARDED_FOR: u32 = 7;
    /// Likewise.
    pub const FORWARDED: u32 = 8;
}

/// The header names read, lower case, in the order of [`header`] (from 1).
const NAMES: [&[u8]; 8] = [
    b"origin",
    b"access-control-request-method",
    b"sec-fetch-site",
    b"content-length",
    b"transfer-encoding",
    b"upgrade",
    b"x-forwarded-for",
    b"forwarded",
];
/// The names read on every port (bit `h - 1` for header `h`): all but the
/// client headers, which a port reads only where it trusts one.
const NAMES_READ: u32 = (1 << (header::UPGRADE)) - 1;
const _: () = assert!(
    NAMES_READ & (1 << (header::X_FORWARDED_FOR - 1) | 1 << (header::FORWARDED - 1)) == 0
        && header::X_FORWARDED_FOR > header::UPGRADE
        && header::FORWARDED > header::UPGRADE
);

/// The names read under `policy` (see [`NAMES_READ`]).
#[inline(always)]
fn names_read(policy: &impl Policy) -> u32 {
    match policy.client_header() {
        h @ (header::X_FORWARDED_FOR | header::FORWARDED) => NAMES_READ | 1 << (h - 1),
        _ => NAMES_READ,
    }
}

/// Bytes of a client header's last element kept (see
/// [`HeadState::client_text`]): an IPv6 address with a port and brackets,
/// or a `Forwarded` element with a few parameters.
pub const CLIENT_TEXT_LEN: usize = 64;
const _: () = assert!(CLIENT_TEXT_LEN.is_power_of_two());

/// Lines this long at most are read whole in one step, when the chunk
/// holds them (see [`step`]); longer ones a byte or a word at a time.
pub const WHOLE_LINE: usize = 128;
const _: () = assert!(WHOLE_LINE.is_multiple_of(WORD) && WHOLE_LINE < SCAN_BYTES);
/// The scan window: `scan::whole_line_end` reads the aligned words from a
/// line's start in the chunk to [`WHOLE_LINE`] bytes on (a word more at
/// most), past the chunk if need be: they are in the buffer, not wrapped
/// around to its start.
const _: () = assert!(SCAN_BYTES + WHOLE_LINE + WORD <= SCAN_BUF_LEN);
/// Values this long at most (up to their line's end) are read in one step,
/// when the chunk holds them (see `HeadState::value_whole`).
const WHOLE_VALUE: usize = 64;
const _: () = assert!(WHOLE_VALUE <= WHOLE_LINE);
// `value_whole` copies whole words: into `origin`'s first `WHOLE_VALUE`
// bytes, or into all of `value`.
const _: () = assert!(WHOLE_VALUE.is_multiple_of(WORD) && WHOLE_VALUE <= ORIGIN_RAW_LEN);
const _: () = assert!(VALUE_KEPT.is_multiple_of(WORD));
const LONGEST_NAME: usize = 29;
const _: () = {
    let mut i = 0;
    while i < NAMES.len() {
        assert!(NAMES[i].len() <= LONGEST_NAME);
        i += 1;
    }
};

/// Bits of [`HeadState::flags`].
pub mod head_flags {
    /// The request is judged: a potential preflight, or an unsafe request
    /// to a port that protects them.
    pub const JUDGED: u32 = 1;
    /// The method is unsafe and the port protects such requests.
    pub const UNSAFE_REQUEST: u32 = 2;
    /// A header line starts with a space or a tab (an obsolete fold).
    pub const FOLDED: u32 = 4;
    /// A `Sec-Fetch-Site` line says `cross-site`.
    pub const CROSS_SITE: u32 = 8;
    /// The `Origin` value is not readable: longer than kept, or with a `\r`
    /// that does not end its line.
    pub const ORIGIN_BAD: u32 = 16;
    /// A `Content-Length` value is not a number, or two disagree.
    pub const LENGTH_BAD: u32 = 32;
    /// A `Transfer-Encoding` line was seen.
    pub const TRANSFER_CODED: u32 = 64;
    /// The last transfer coding read is `chunked`.
    pub const CHUNKED: u32 = 128;
    /// Retired, never set and never to be reused (an open head's flags are
    /// pinned state): an `Upgrade` line was seen, which ended the tracking
    /// of the connection; it no longer does (see `end_head`).
    pub const UPGRADE: u32 = 256;
    /// The value being read had a `\r` not followed by `\n`.
    pub const VALUE_BARE_CR: u32 = 512;
    /// The last byte of the value being read was a `\r`.
    pub const VALUE_CR: u32 = 1024;
    /// The `Content-Length` value being read ended its digits (blanks
    /// followed them).
    pub const LENGTH_ENDED: u32 = 2048;
    /// The head was found too long (see [`MAX_HEAD_LINES`](super::MAX_HEAD_LINES)) and counted as
    /// incomplete; it is followed to its end without being judged.
    pub const OVERSIZED: u32 = 4096;
    /// A `\r` not followed by `\n` in the header section. Python's
    /// `http.server` ends a header line there (its `email` parser splits
    /// lines at a bare `\r`), so the bytes after it may be a header the
    /// filter read as part of another line: a judged head with one is
    /// malformed (nginx and Node refuse such a head anyway).
    pub const BARE_CR: u32 = 8192;
    /// The last byte read of the header section was a `\r`: whether it is
    /// bare depends on the next.
    pub const PENDING_CR: u32 = 16384;
    /// The method is `PRI`: HTTP/2's connection preface (`PRI *
    /// HTTP/2.0`), whose frames the filter cannot read.
    pub const HTTP2_PREFACE: u32 = 32768;
    /// An `Upgrade` value names `h2c`: the server may go on in HTTP/2.
    pub const UPGRADE_H2C: u32 = 65536;
}

/// Where the `chunked` matcher of a `Transfer-Encoding` value is
/// ([`HeadState::coding`]): 0 to 7 letters of `chunked` matched, then:
const CODING_CHUNKED_BLANK: u32 = 8;
const CODING_OTHER: u32 = 9;
const CHUNKED: &[u8; 7] = b"chunked";
/// What an `Upgrade` value is matched against, anywhere in it, without
/// regard to case ([`HeadState::coding`] counts the bytes matched).
const H2C: &[u8; 3] = b"h2c";
/// [`CHUNKED`] and [`H2C`] padded to the power of two their index is
/// masked with, so that every masked index is in bounds and the program
/// keeps no panic path. The padding is never compared: the index is
/// checked against the word's length first.
const CHUNKED_MASKED: [u8; 8] = padded(CHUNKED);
const H2C_MASKED: [u8; 4] = padded(H2C);

const fn padded<const N: usize>(word: &[u8]) -> [u8; N] {
    assert!(N.is_power_of_two() && word.len() <= N);
    let mut out = [0; N];
    let mut i = 0;
    while i < word.len() {
        out[i] = word[i];
        i += 1;
    }
    out
}

/// `PRI`, HTTP/2's preface method, as a method word.
const PRI: u64 = crate::method::word_of(b"PRI");

/// What the filter knows of the request head being read. Lives in the
/// per-CPU scratch space while a segment is parsed, and in the
/// `OPEN_HEADS` map while the head spans segments. Its layout is pinned
/// state.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct HeadState {
    /// Bytes of the head so far, from the method's first byte.
    pub bytes: u32,
    /// Header lines so far.
    pub lines: u32,
    /// The method's first 8 bytes, little-endian.
    pub method_word: u64,
    /// Bytes of the method token (counted up to 255).
    pub method_len: u32,
    /// The method (a `Method` code), once its token ended.
    pub method: u32,
    /// [`head_flags`].
    pub flags: u32,
    /// The header the current line is ([`header`]).
    pub header: u32,
    /// Header names the current line's name may still be (bit `h - 1`).
    pub candidates: u32,
    /// Bytes of the current line's name so far.
    pub name_len: u32,
    /// Bytes of the current value so far, after its leading blanks (0
    /// while they are skipped).
    pub value_len: u32,
    /// Bytes of the current value up to its last that is neither a blank
    /// nor a `\r`.
    pub value_end: u32,
    pub origins: u32,
    pub request_methods: u32,
    /// The method the last `Access-Control-Request-Method` names.
    pub requested: u32,
    /// The `chunked` matcher of the `Transfer-Encoding` value being read.
    pub coding: u32,
    pub content_lengths: u32,
    /// Zero: the 4 bytes before `content_length`, which were padding
    /// (the layout is unchanged), as a field, so that the type has none.
    pub spare: u32,
    pub content_length: u64,
    /// The `Content-Length` value being read.
    pub length_value: u64,
    /// The first bytes of the value being read (`Access-Control-Request-Method`, `Sec-Fetch-Site`).
    pub value: [u8; VALUE_KEPT],
    /// Bytes of the (last) `Origin` value, without its leading blanks.
    pub origin_len: u32,
    pub reserved: u32,
    /// The (last) `Origin` value.
    pub origin: [u8; ORIGIN_RAW_LEN],
    /// Bytes of the last element of the port's client header
    /// ([`Policy::client_header`]) so far: past its last comma.
    pub client_len: u32,
    pub client_spare: u32,
    /// That element's first [`CLIENT_TEXT_LEN`] bytes, as sent.
    pub client_text: [u8; CLIENT_TEXT_LEN],
}

impl Default for HeadState {
    fn default() -> Self {
        Self {
            bytes: 0,
            lines: 0,
            method_word: 0,
            method_len: 0,
            method: Method::Other as u32,
            flags: 0,
            header: 0,
            candidates: 0,
            name_len: 0,
            value_len: 0,
            value_end: 0,
            origins: 0,
            request_methods: 0,
            requested: Method::Other as u32,
            coding: 0,
            content_lengths: 0,
            spare: 0,
            content_length: 0,
            length_value: 0,
            value: [0; VALUE_KEPT],
            origin_len: 0,
            reserved: 0,
            origin: [0; ORIGIN_RAW_LEN],
            client_len: 0,
            client_spare: 0,
            client_text: [0; CLIENT_TEXT_LEN],
        }
    }
}

// SAFETY: `repr(C)`, 8-byte aligned (it holds `u64`s), integers and byte
// arrays only, no padding, a size that is a multiple of 8.
unsafe impl Words for HeadState {}
const _: () = assert!(core::mem::align_of::<HeadState>() == 8);
// No padding: the fields' sizes add up to the size (18 `u32`s, 3 `u64`s,
// the two arrays).
const _: () = assert!(
    core::mem::size_of::<HeadState>()
        == 20 * 4 + 3 * 8 + VALUE_KEPT + ORIGIN_RAW_LEN + CLIENT_TEXT_LEN
);
const _: () = assert!(core::mem::offset_of!(HeadState, content_length) == 72);
// Read a word at a time for the denial event.
const _: () = assert!(core::mem::offset_of!(HeadState, client_text).is_multiple_of(8));

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `repr(C)`, integers only, no padding (u32 pairs before each
    // u64, arrays of bytes at the end); every bit pattern is a value.
    unsafe impl aya::Pod for super::ConnState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::HeadState {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ConnKey {}
}

/// A connection, as the `CONNS` and `OPEN_HEADS` maps key it: the client's
/// and the server's address (an IPv4 address in the first four bytes) and
/// ports, and the family. Its layout is pinned state; it is 8-byte
/// aligned so that the program zeroes its addresses a word at a time.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub source_addr: [u8; 16],
    pub dest_addr: [u8; 16],
    pub source_port: u16,
    pub dest_port: u16,
    /// `event::FAMILY_IPV4` or `event::FAMILY_IPV6`.
    pub family: u32,
}

impl ConnKey {
    /// Fills `key` in place with these ports and family and zero
    /// addresses, for the addresses to be copied into; zeroed a word at a
    /// time, where the key will stay (see `crate::store`: a key built and
    /// then moved was zeroed by a byte loop).
    #[inline(always)]
    pub fn init_in(
        key: &mut core::mem::MaybeUninit<ConnKey>,
        source_port: u16,
        dest_port: u16,
        family: u32,
    ) -> &mut ConnKey {
        let at = key.as_mut_ptr();
        let words = at.cast::<u64>();
        let mut i = 0;
        while i < ADDRESS_WORDS {
            // SAFETY: the first `ADDRESS_WORDS` aligned words of the key
            // are its two addresses.
            unsafe { words.add(i).write_volatile(0) };
            i += 1;
        }
        // SAFETY: the remaining fields, each written once; with the
        // addresses, every byte of the key (it has no padding).
        unsafe {
            core::ptr::addr_of_mut!((*at).source_port).write_volatile(source_port);
            core::ptr::addr_of_mut!((*at).dest_port).write_volatile(dest_port);
            core::ptr::addr_of_mut!((*at).family).write_volatile(family);
            key.assume_init_mut()
        }
    }
}

const ADDRESS_WORDS: usize = 32 / 8;
const _: () = assert!(core::mem::offset_of!(ConnKey, source_port) == ADDRESS_WORDS * 8);
const _: () = assert!(core::mem::offset_of!(ConnKey, dest_port) == 34);
const _: () = assert!(core::mem::offset_of!(ConnKey, family) == 36);
const _: () = assert!(core::mem::size_of::<ConnState>() == 24);
const _: () = assert!(core::mem::size_of::<ConnKey>() == 40);
const _: () = assert!(core::mem::size_of::<HeadState>().is_multiple_of(8));

/// Where a segment is being parsed: its payload's bytes in order, a chunk
/// of up to [`SCAN_BYTES`] of them at a time in `Scratch::payload`.
#[repr(C)]
#[derive(Default)]
pub struct SegmentCursor {
    /// Payload bytes of the segment to parse (the new ones: a segment that
    /// overlaps bytes parsed before starts past them).
    pub len: u32,
    /// Offset in the payload of the next byte to parse.
    pub pos: u32,
    /// Offset in the payload of `Scratch::payload[0]`.
    pub chunk_start: u32,
    /// Bytes in `Scratch::payload` from `chunk_start` (0: none loaded).
    pub chunk_len: u32,
    /// Offset in the payload of the first byte to parse (`pos` 0): the
    /// bytes before it were parsed with an earlier segment.
    pub skip: u32,
    /// The segment's outcome so far (an index in `Outcome::ALL`).
    pub outcome: u32,
    /// Bumped when a decision stops the parse of the segment.
    pub stopped: u32,
    /// Sequence number of the segment's first payload byte.
    pub seq: u32,
    /// Bytes the last step consumed (kept in memory, see `step`).
    pub chunk_consumed: u32,
    /// The phase the last step started in (likewise).
    pub step_phase: u32,
    /// Where the scans of a step ended (see `settle`).
    pub settled: [u32; 2],
    /// Whether the last step read a line to its `\n`, and found a bare
    /// `\r` in it: a [`line_read`] value (likewise kept in memory).
    pub line_read: u32,
    /// The policy's `max_head_bytes`, read once per segment.
    pub max_head_bytes: u32,
    /// 1 once the segment completed a PROXY header (its client is in
    /// `Scratch::proxy_client`).
    pub proxy_read: u32,
    pub reserved: u32,
}

/// What a step read of its line ([`SegmentCursor::line_read`]).
pub mod line_read {
    /// Not to its `\n`: the bytes are looked at for bare `\r`s apart.
    pub const PART: u32 = 0;
    /// To its `\n`, with no bare `\r`.
    pub const WHOLE: u32 = 1;
    /// To its `\n`, with a bare `\r`.
    pub const WHOLE_BARE_CR: u32 = 2;
}

/// `value` read back through `slot` in memory: a loop's exit value is a
/// different constant on each of its exit paths, and the verifier would
/// check what follows once per constant (see `Slot`).
#[inline(always)]
fn settle(slot: &mut u32, value: usize) -> usize {
    // SAFETY: a plain write and read of a `u32` the caller owns.
    unsafe {
        core::ptr::write_volatile(slot, value as u32);
        core::ptr::read_volatile(slot) as usize
    }
}

/// Copies `len` bytes of the segment's payload, from its offset `from`, to
/// the start of the scratch payload buffer (`len` is 1 to [`SCAN_BYTES`]).
pub trait SegmentBytes {
    /// Returns false when the bytes could not be read.
    fn load(&self, scratch: &mut Scratch, from: u32, len: u32) -> bool;
}

/// Whether another [`step`] is needed for the segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    More,
    Done,
}

/// How much a decided outcome says about the segment: the segment keeps the
/// outcome of highest rank among the requests it completes.
#[inline(always)]
const fn rank(outcome: Outcome) -> u32 {
    match outcome {
        Outcome::Retransmission | Outcome::Body | Outcome::HeadPart | Outcome::Untracked => 0,
        Outcome::NotPreflight | Outcome::NotHttp => 1,
        // No denials (no CORS verdict), but what the segment must be
        // counted as: it refuses the segment, or starts HTTP/2 (the
        // preface's `SM` after `PRI` would otherwise be its outcome).
        Outcome::ProxyMalformed | Outcome::Http2 => 3,
        _ if outcome.is_denial() => 3,
        _ => 2,
    }
}

#[inline(always)]
fn note(cursor: &mut SegmentCursor, outcome: Outcome) {
    if rank(outcome) >= rank(Outcome::from_index(cursor.outcome)) {
        cursor.outcome = outcome as u32;
    }
}

/// Whitespace a server skips before a request line, and that ends a
/// method token (Python's `str.split`, the widest of them, on Latin-1).
#[inline(always)]
const fn is_request_space(b: u8) -> bool {
    matches!(
        b,
        b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0x1c..=0x1f | b' ' | 0x85 | 0xa0
    )
}

#[inline(always)]
const fn is_blank(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// What [`step`]'s parse of a byte yields instead of a phase when the byte
/// ends a head.
const HEAD_ENDED: u32 = u32::MAX;

/// Notes in `head` whether the `len` bytes at `at` (1 to [`WHOLE_LINE`]),
/// just read in the header section, hold a bare `\r` (see
/// [`head_flags::BARE_CR`]), with the one the byte before them may have
/// left pending; a word at a time: a byte is a bare `\r` when it is one and
/// the byte after it, in the word read one byte further, is no `\n`.
#[inline(always)]
fn note_bare_cr(head: &mut HeadState, buf: &ScanBuf, at: usize, len: usize) {
    let first = buf[at & SCAN_MASK];
    if head.flags & head_flags::PENDING_CR != 0 && first != b'\n' {
        head.flags |= head_flags::BARE_CR;
    }
    let mut bare = 0u64;
    let mut w = 0;
    while w < WHOLE_LINE / WORD {
        let off = w * WORD;
        if off + 1 >= len {
            break;
        }
        let cr = byte_marks(buf.word_at(at + off), b'\r');
        let lf_next = byte_marks(buf.word_at(at + off + 1), b'\n');
        let mut marks = cr & !lf_next;
        // Only bytes whose next byte was read too: the last one may be
        // pending.
        if len - 1 - off < WORD {
            marks &= (1u64 << (8 * (len - 1 - off))) - 1;
        }
        bare |= marks;
        w += 1;
    }
    if bare != 0 {
        head.flags |= head_flags::BARE_CR;
    }
    if buf[(at + len - 1) & SCAN_MASK] == b'\r' {
        head.flags |= head_flags::PENDING_CR;
    } else {
        head.flags &= !head_flags::PENDING_CR;
    }
}

/// The `N / WORD` words of `buf` from `at` into `into` (fixed sizes, so
/// that every slice of `into` is in bounds at compile time: the program
/// keeps no panic path).
#[inline(always)]
fn scan_words<const N: usize>(buf: &ScanBuf, at: usize, into: &mut [u8; N]) {
    let mut k = 0;
    while k < N / WORD {
        into[k * WORD..(k + 1) * WORD].copy_from_slice(&buf.word_at(at + k * WORD).to_le_bytes());
        k += 1;
    }
}

/// Bytes of each header's name and colon, by [`header`] number.
const NAME_AND_COLON: [u32; 16] = {
    let mut lens = [0; 16];
    let mut i = 0;
    while i < NAMES.len() {
        lens[i + 1] = NAMES[i].len() as u32 + 1;
        i += 1;
    }
    lens
};

impl HeadState {
    /// Starts the head of a request whose method starts with `first`.
    ///
    /// Field by field (see `crate::store`), and not the byte arrays: they
    /// are read only within the lengths set here.
    #[inline(always)]
    fn start(&mut self, first: u8) {
        let HeadState {
            bytes,
            lines,
            method_word,
            method_len,
            method,
            flags,
            header,
            candidates,
            name_len,
            value_len,
            value_end,
            origins,
            request_methods,
            requested,
            coding,
            content_lengths,
            spare,
            content_length,
            length_value,
            value: _,
            origin_len,
            reserved,
            origin: _,
            client_len,
            client_spare,
            client_text: _,
        } = self;
        put(bytes, 1);
        put(lines, 0);
        put(method_word, first as u64);
        put(method_len, 1);
        put(method, Method::Other as u32);
        put(flags, 0);
        put(header, header::NONE);
        put(candidates, 0);
        put(name_len, 0);
        put(value_len, 0);
        put(value_end, 0);
        put(origins, 0);
        put(request_methods, 0);
        put(requested, Method::Other as u32);
        put(coding, 0);
        put(content_lengths, 0);
        put(spare, 0);
        put(content_length, 0);
        put(length_value, 0);
        put(origin_len, 0);
        put(reserved, 0);
        put(client_len, 0);
        put(client_spare, 0);
    }

    #[inline(always)]
    fn judged(&self) -> bool {
        self.flags & head_flags::JUDGED != 0 && self.flags & head_flags::OVERSIZED == 0
    }

    /// The first token of the kept value: bytes up to a blank or `\r`.
    #[inline(always)]
    fn value_token_len(&self) -> u32 {
        let mut k = 0;
        while k < VALUE_KEPT {
            if k as u32 >= self.value_len || matches!(self.value[k], b' ' | b'\t' | b'\r') {
                break;
            }
            k += 1;
        }
        k as u32
    }

    /// The current line's value has ended: note what it says.
    #[inline(always)]
    fn end_value(&mut self) {
        let bare_cr = self.flags & head_flags::VALUE_BARE_CR != 0;
        match self.header {
            header::ORIGIN => {
                self.origin_len = self.value_end;
                if bare_cr || self.value_len > ORIGIN_RAW_LEN as u32 {
                    self.flags |= head_flags::ORIGIN_BAD;
                } else {
                    self.flags &= !head_flags::ORIGIN_BAD;
                }
            }
            header::REQUEST_METHOD => {
                let len = self.value_token_len();
                self.requested = if bare_cr || len as usize >= VALUE_KEPT {
                    Method::Other
                } else {
                    let mut word = [0u8; WORD];
                    let mut k = 0;
                    while k < WORD {
                        if (k as u32) < len {
                            word[k] = self.value[k];
                        }
                        k += 1;
                    }
                    Method::of_token(u64::from_le_bytes(word), len)
                } as u32;
            }
            header::SEC_FETCH_SITE => {
                let len = self.value_token_len();
                let mut same = len as usize == b"cross-site".len() && !bare_cr;
                let mut k = 0;
                while k < b"cross-site".len() {
                    if self.value[k].to_ascii_lowercase() != b"cross-site"[k] {
                        same = false;
                    }
                    k += 1;
                }
                if same {
                    self.flags |= head_flags::CROSS_SITE;
                }
            }
            header::CONTENT_LENGTH => {
                if self.value_end == 0 || bare_cr {
                    self.flags |= head_flags::LENGTH_BAD;
                }
                if self.content_lengths > 0 && self.length_value != self.content_length {
                    self.flags |= head_flags::LENGTH_BAD;
                }
                self.content_length = self.length_value;
                self.content_lengths += 1;
            }
            header::TRANSFER_ENCODING => {
                if self.coding == CHUNKED.len() as u32 || self.coding == CODING_CHUNKED_BLANK {
                    self.flags |= head_flags::CHUNKED;
                } else if self.value_len != 0 {
                    // An empty line adds no coding; any other ends in one
                    // that is not chunked.
                    self.flags &= !head_flags::CHUNKED;
                }
            }
            _ => {}
        }
    }

    /// Reads the value of an `Origin`, `Access-Control-Request-Method` or
    /// `Sec-Fetch-Site` line, whose line ends `end` bytes past `at` in
    /// `buf`, at once, as [`Self::value_byte`] would byte by byte, in the
    /// form clients write it: the value starts there after at most one
    /// blank, fits in [`WHOLE_VALUE`] bytes, ends with no blank before the
    /// line's `\r\n` or `\n`, and has no other `\r` (`bare_cr`, from the
    /// look for the line's end, which started at `at` or before it, on a
    /// name with none). False (nothing read) otherwise.
    #[inline(always)]
    fn value_whole(
        &mut self,
        buf: &ScanBuf,
        at: usize,
        end: usize,
        bare_cr: u64,
        settled: &mut [u32; 2],
    ) -> bool {
        let kept = match self.header {
            header::ORIGIN => true,
            header::REQUEST_METHOD | header::SEC_FETCH_SITE => false,
            _ => return false,
        };
        if self.value_len != 0 || !(2..=WHOLE_VALUE).contains(&end) || bare_cr != 0 {
            return false;
        }
        let byte = |k: usize| buf[(at + k) & SCAN_MASK];
        let lead = is_blank(byte(0)) as usize;
        let stop = end - (byte(end - 1) == b'\r') as usize;
        if is_blank(byte(lead)) || stop <= lead || is_blank(byte(stop - 1)) {
            return false;
        }
        settle(&mut settled[0], stop - lead);
        settle(&mut settled[1], end - lead);
        // The value's first bytes where `value_byte` keeps them, a word at
        // a time: an `Origin`'s whole, the first [`VALUE_KEPT`] of the
        // others (with the bytes after them, which their lengths exclude).
        if kept {
            if let Some(origin) = self.origin.first_chunk_mut::<WHOLE_VALUE>() {
                scan_words(buf, at + lead, origin);
            }
        } else {
            scan_words(buf, at + lead, &mut self.value);
        }
        // SAFETY: plain reads of the caller's `u32`s.
        unsafe {
            self.value_end = core::ptr::read_volatile(&settled[0]);
            self.value_len = core::ptr::read_volatile(&settled[1]);
        }
        true
    }

    /// One byte of a value the filter reads (not a `\n`, not a leading blank).
    #[inline(always)]
    fn value_byte(&mut self, b: u8) {
        if self.flags & head_flags::VALUE_CR != 0 {
            self.flags |= head_flags::VALUE_BARE_CR;
        }
        if b == b'\r' {
            self.flags |= head_flags::VALUE_CR;
        } else {
            self.flags &= !head_flags::VALUE_CR;
        }
        let at = self.value_len as usize;
        match self.header {
            header::ORIGIN if at < ORIGIN_RAW_LEN => {
                self.origin[at & (ORIGIN_RAW_LEN - 1)] = b;
            }
            header::REQUEST_METHOD | header::SEC_FETCH_SITE if at < VALUE_KEPT => {
                self.value[at & VALUE_MASK] = b;
            }
            header::CONTENT_LENGTH => {
                if b.is_ascii_digit() && self.flags & head_flags::LENGTH_ENDED == 0 {
                    self.length_value = self.length_value * 10 + (b - b'0') as u64;
                    // Beyond any real body, and far from overflowing.
                    if self.length_value > 1 << 52 {
                        self.flags |= head_flags::LENGTH_BAD;
                        self.length_value = 0;
                    }
                } else if is_blank(b) || b == b'\r' {
                    self.flags |= head_flags::LENGTH_ENDED;
                } else {
                    self.flags |= head_flags::LENGTH_BAD;
                }
            }
            header::X_FORWARDED_FOR | header::FORWARDED => {
                if b == b',' {
                    self.client_len = 0;
                } else {
                    let n = self.client_len;
                    if (n as usize) < CLIENT_TEXT_LEN {
                        self.client_text[n as usize & (CLIENT_TEXT_LEN - 1)] = b;
                    }
                    // Counted on past what is kept: a longer element is
                    // not read as an address.
                    if n <= CLIENT_TEXT_LEN as u32 {
                        self.client_len = n + 1;
                    }
                }
            }
            header::UPGRADE => {
                let lower = b.to_ascii_lowercase();
                let c = self.coding;
                self.coding = if c < H2C.len() as u32 && lower == H2C_MASKED[c as usize & 3] {
                    c + 1
                } else {
                    (lower == H2C[0]) as u32
                };
                if self.coding == H2C.len() as u32 {
                    self.flags |= head_flags::UPGRADE_H2C;
                }
            }
            header::TRANSFER_ENCODING => {
                let c = self.coding;
                self.coding = if b == b',' {
                    0
                } else if is_blank(b) || b == b'\r' {
                    match c {
                        0 | CODING_CHUNKED_BLANK | CODING_OTHER => c,
                        7 => CODING_CHUNKED_BLANK,
                        _ => CODING_OTHER,
                    }
                } else if c < CHUNKED.len() as u32
                    && b.to_ascii_lowercase() == CHUNKED_MASKED[c as usize & 7]
                {
                    c + 1
                } else {
                    CODING_OTHER
                };
            }
            _ => {}
        }
        self.value_len += 1;
        if !is_blank(b) && b != b'\r' {
            self.value_end = self.value_len;
        }
    }

    /// The method token has ended: which method, and whether the request is
    /// judged under `policy`.
    #[inline(always)]
    fn end_method(&mut self, policy: &impl Policy) {
        let method = if self.method_len <= WORD as u32 {
            Method::of_token(self.method_word, self.method_len)
        } else {
            Method::Other
        };
        self.method = method as u32;
        if self.method_len == 3 && self.method_word == PRI {
            self.flags |= head_flags::HTTP2_PREFACE;
        }
        if method == Method::Options {
            self.flags |= head_flags::JUDGED;
        } else if method.is_unsafe() && policy.protects_unsafe_methods() {
            self.flags |= head_flags::JUDGED | head_flags::UNSAFE_REQUEST;
        }
    }

    /// The current line's name (and its colon) has been read: it is
    /// `found` (a [`header`]). The phase its value is read in.
    #[inline(always)]
    fn begin_value(&mut self, found: u32) -> u32 {
        self.header = found;
        self.value_len = 0;
        self.value_end = 0;
        self.flags &=
            !(head_flags::VALUE_BARE_CR | head_flags::VALUE_CR | head_flags::LENGTH_ENDED);
        match found {
            header::NONE => return phase::SKIP_LINE,
            header::ORIGIN => self.origins += 1,
            header::REQUEST_METHOD => self.request_methods += 1,
            header::CONTENT_LENGTH => self.length_value = 0,
            header::TRANSFER_ENCODING => {
                self.flags |= head_flags::TRANSFER_CODED;
                self.coding = 0;
            }
            // Matched against `h2c` (see `value_byte`).
            header::UPGRADE => self.coding = 0,
            // The last line's last element names the client.
            header::X_FORWARDED_FOR | header::FORWARDED => self.client_len = 0,
            _ => {}
        }
        phase::VALUE
    }

    /// One byte of a header name; `:` ends it.
    #[inline(always)]
    fn name_byte(&mut self, b: u8) -> u32 {
        if b == b':' {
            let mut found = header::NONE;
            let mut i = 0;
            while i < NAMES.len() {
                if self.candidates & (1 << i) != 0 && NAMES[i].len() as u32 == self.name_len {
                    found = i as u32 + 1;
                }
                i += 1;
            }
            return self.begin_value(found);
        }
        let lower = b.to_ascii_lowercase();
        let at = self.name_len as usize;
        let mut i = 0;
        while i < NAMES.len() {
            let name = NAMES[i];
            if at >= name.len() || name[at & 31] != lower {
                self.candidates &= !(1 << i);
            }
            i += 1;
        }
        self.name_len += 1;
        if self.candidates == 0 {
            phase::SKIP_LINE
        } else {
            phase::NAME
        }
    }
}

/// The outcome of the complete head in `scratch.stream_head`, judged under
/// `policy`; fills `scratch.origin`, `scratch.judged` and
/// `scratch.unsafe_request` for the denial event.
#[inline(always)]
pub fn judge_head(scratch: &mut Scratch, policy: &impl Policy) -> Outcome {
    let head = &scratch.stream_head;
    scratch.origin.clear();
    scratch.judged.set(Method::Other as u32);
    let unsafe_request = head.flags & head_flags::UNSAFE_REQUEST != 0;
    scratch.unsafe_request.set(unsafe_request as u32);
    if !head.judged() {
        return Outcome::NotPreflight;
    }
    if head.flags & head_flags::BARE_CR != 0 {
        // Headers the filter did not see may be in it (see `BARE_CR`).
        scratch.judged.set(if unsafe_request {
            head.method
        } else {
            Method::Other as u32
        });
        return Outcome::malformed(unsafe_request);
    }
    if unsafe_request {
        scratch.judged.set(head.method);
        if head.origins == 0 {
            return if head.flags & head_flags::CROSS_SITE != 0 {
                Outcome::CrossSiteNoOrigin
            } else {
                Outcome::NoOrigin
            };
        }
    } else {
        if head.origins == 0 || head.request_methods == 0 {
            return Outcome::NotPreflight;
        }
        scratch.judged.set(if head.request_methods == 1 {
            head.requested
        } else {
            Method::Other as u32
        });
    }
    // From here on, the kind of request is read from memory at each use:
    // the verifier then checks the origin's parse and lookup once, not
    // once per kind (see `Slot`).
    if head.origins > 1 || head.flags & (head_flags::FOLDED | head_flags::ORIGIN_BAD) != 0 {
        return Outcome::malformed(scratch.unsafe_request.get() != 0);
    }
    scratch.origin.raw = head.origin;
    scratch.origin.set_len(head.origin_len);
    if scratch.origin.normalize().is_err() {
        return Outcome::malformed(scratch.unsafe_request.get() != 0);
    }
    let allowed = policy.allowed_methods(&mut scratch.origin);
    let unsafe_request = scratch.unsafe_request.get() != 0;
    if allowed.is_empty() {
        Outcome::denied(unsafe_request)
    } else if !allowed.contains_code(scratch.judged.get()) {
        Outcome::method_denied(unsafe_request)
    } else {
        Outcome::allowed(unsafe_request)
    }
}

/// Whether `outcome` keeps the request from the server under `settings`
/// (reset or drop alike: the action does not matter here).
#[inline(always)]
fn refuses(outcome: Outcome, settings: &FilterConfig) -> bool {
    outcome.verdict(settings) != crate::Verdict::Pass
}

/// The connection is denied from the segment being parsed on: it is
/// dropped (its bytes from its first on), and so is every later byte; the
/// parse of the segment stops.
#[inline(always)]
fn deny_from_here(scratch: &mut Scratch) {
    scratch.stream_conn.phase = phase::DENIED;
    scratch.stream_conn.deny_seq = scratch.cursor.seq;
    scratch.cursor.stopped = 1;
}

/// The head has ended (its blank line's `\n` was just read): judges it,
/// and moves the connection to its body, or to the next request.
#[inline(always)]
fn end_head(scratch: &mut Scratch, policy: &impl Policy) {
    let outcome = judge_head(scratch, policy);
    note(&mut scratch.cursor, outcome);
    let settings = policy.settings();
    if refuses(outcome, &settings) {
        deny_from_here(scratch);
        return;
    }
    let flags = scratch.stream_head.flags;
    if flags & (head_flags::HTTP2_PREFACE | head_flags::UPGRADE_H2C) != 0 {
        // What follows may be HTTP/2 frames, which the filter cannot read:
        // refused, as `http2` says, or read on (below).
        note(&mut scratch.cursor, Outcome::Http2);
        if refuses(Outcome::Http2, &settings) {
            deny_from_here(scratch);
            return;
        }
    }
    let head = &scratch.stream_head;
    let conn = &mut scratch.stream_conn;
    // After a protocol switch (`CONNECT`, `Upgrade`, HTTP/2) the bytes are
    // read on as requests: the filter cannot see whether the server
    // switched, and a proxy's pooled connection whose server did not would
    // otherwise carry other clients' requests unjudged. What a switched
    // connection sends (TLS, WebSocket and HTTP/2 frames) starts with a
    // byte no request starts with, which ends the tracking there.
    conn.phase = if flags & head_flags::TRANSFER_CODED != 0 {
        // Servers refuse a request whose last coding is not chunked; what
        // follows is read as requests again, as a server that did not
        // would.
        if flags & head_flags::CHUNKED != 0 {
            conn.body_left = 0;
            conn.flags &= !conn_flags::CHUNK_DIGITS;
            phase::CHUNK_SIZE
        } else {
            phase::IDLE
        }
    } else if head.content_lengths > 0 && flags & head_flags::LENGTH_BAD == 0 {
        conn.body_left = head.content_length;
        if head.content_length > 0 {
            phase::BODY
        } else {
            phase::IDLE
        }
    } else {
        phase::IDLE
    };
}

/// After `outcome`, a PROXY header servers refuse: every later byte is
/// refused if `outcome` refuses it (enforcing), else passed untracked.
#[inline(always)]
fn refuse_or_untrack(scratch: &mut Scratch, outcome: Outcome, settings: &FilterConfig) {
    if refuses(outcome, settings) {
        deny_from_here(scratch);
    } else {
        scratch.stream_conn.phase = phase::UNTRACKED;
    }
}

/// The PROXY header bytes kept in `head` (the first of its `origin`).
#[inline(always)]
fn proxy_kept(head: &HeadState) -> &[u8; proxy::HEADER_KEPT] {
    // SAFETY: `origin` is a byte array at least `HEADER_KEPT` long
    // (asserted in `proxy`); bytes have no alignment.
    unsafe { &*head.origin.as_ptr().cast::<[u8; proxy::HEADER_KEPT]>() }
}

/// The parse of a version 1 PROXY line, kept in `head` after the header's
/// bytes (so that it goes to `OPEN_HEADS` with them when the line is cut).
#[inline(always)]
fn proxy_line(head: &mut HeadState) -> &mut V1Line {
    // SAFETY: the bytes of `origin` from `HEADER_KEPT` on hold a `V1Line`
    // and are 8-byte aligned (both asserted below); a `V1Line` is plain
    // integers, so any bytes are one, and `head` is borrowed exclusively.
    unsafe {
        &mut *head
            .origin
            .as_mut_ptr()
            .add(proxy::HEADER_KEPT)
            .cast::<V1Line>()
    }
}
const _: () = assert!(
    proxy::HEADER_KEPT + core::mem::size_of::<V1Line>() <= ORIGIN_RAW_LEN
        && (core::mem::offset_of!(HeadState, origin) + proxy::HEADER_KEPT)
            .is_multiple_of(core::mem::align_of::<V1Line>())
        && core::mem::align_of::<HeadState>() >= core::mem::align_of::<V1Line>()
);

/// A byte of a PROXY header was added to the head at `at`: the phase
/// that follows, and whether `b` is read again in it (the bytes were no
/// header after all).
#[inline(always)]
fn proxy_byte(scratch: &mut Scratch, policy: &impl Policy, at: usize) -> (u32, bool) {
    let head = &mut scratch.stream_head;
    match proxy::reading(proxy_kept(head), at) {
        proxy::Reading::More => {
            let b = head.origin[at & proxy::HEADER_MASK];
            if head.origin[0] == proxy::V1_PREFIX[0] && at >= proxy::V1_PREFIX.len() && b != b'\r' {
                proxy_line(head).byte(b);
            }
            (phase::PROXY_HEADER, false)
        }
        proxy::Reading::NotProxy => {
            if scratch.stream_head.origin[0] != proxy::V1_PREFIX[0] {
                // `\r\n\r\n` at most so far: whitespace a server skips.
                return (phase::IDLE, true);
            }
            // A method that starts as `PROXY ` does (`POST`, `PROPFIND`):
            // its first `at` bytes were read.
            let head = &mut scratch.stream_head;
            head.start(proxy::V1_PREFIX[0]);
            head.method_word = PROXY_WORD & ((1u64 << (8 * (at & 7))) - 1);
            head.method_len = at as u32;
            head.bytes = at as u32;
            (phase::METHOD, true)
        }
        proxy::Reading::Whole { skip } => {
            let whole = if head.origin[0] == proxy::V1_PREFIX[0] {
                let line = proxy_line(head);
                let whole = line.end();
                if whole {
                    copy_words(&mut scratch.proxy_client, line.client());
                }
                whole
            } else {
                proxy::v2_client(proxy_kept(head), &mut scratch.proxy_client);
                true
            };
            if !whole {
                return proxy_malformed(scratch, policy);
            }
            scratch.cursor.proxy_read = 1;
            let conn = &mut scratch.stream_conn;
            conn.flags |= conn_flags::PROXY_HEADER;
            if scratch.proxy_client.family != 0 {
                conn.flags |= conn_flags::PROXIED;
            }
            if skip > 0 {
                conn.body_left = skip as u64;
                (phase::BODY, false)
            } else {
                (phase::IDLE, false)
            }
        }
        proxy::Reading::Malformed => proxy_malformed(scratch, policy),
    }
}

#[inline(always)]
fn proxy_malformed(scratch: &mut Scratch, policy: &impl Policy) -> (u32, bool) {
    note(&mut scratch.cursor, Outcome::ProxyMalformed);
    refuse_or_untrack(scratch, Outcome::ProxyMalformed, &policy.settings());
    (scratch.stream_conn.phase, false)
}

/// A step at a connection's start ([`phase::CONN_START`],
/// [`phase::PROXY_HEADER`]): one byte of what may be a PROXY header, or
/// none (the byte is read again in the phase that follows).
///
/// Not inlined (a BPF subprogram): it runs for a connection's first bytes
/// only, and kept out of [`step`] it costs the steps of every other byte
/// nothing.
#[inline(never)]
fn connection_start(scratch: &mut Scratch, policy: &impl Policy, pos: u32, b: u8) -> Step {
    let conn_phase = scratch.stream_conn.phase;
    let (next, consumed) = if conn_phase == phase::CONN_START {
        if b == proxy::V1_PREFIX[0] || b == proxy::V2_SIGNATURE[0] {
            // A PROXY header's first byte, maybe: kept as its first.
            let head = &mut scratch.stream_head;
            head.origin[0] = b;
            head.bytes = 1;
            head.flags = 0;
            proxy_line(head).start();
            (phase::PROXY_HEADER, 1)
        } else {
            // Read again as a request's (once per connection).
            (phase::IDLE, 0)
        }
    } else {
        let at = scratch.stream_head.bytes as usize;
        scratch.stream_head.origin[at & proxy::HEADER_MASK] = b;
        let (next, again) = proxy_byte(scratch, policy, at);
        if !again {
            // The head's bytes count the header's (`at` for the next).
            scratch.stream_head.bytes += 1;
        }
        (next, (!again) as u32)
    };
    scratch.stream_conn.phase = next;
    scratch.cursor.pos = pos + consumed;
    let part = if conn_phase == phase::PROXY_HEADER || phase::in_head(next) {
        Outcome::HeadPart
    } else {
        Outcome::Body
    };
    note(&mut scratch.cursor, part);
    Step::More
}

/// `PROXY ` as a method word.
const PROXY_WORD: u64 = crate::method::word_of(proxy::V1_PREFIX);

/// A judged head went past the bounds: counted as incomplete, dropped or
/// passed as the settings say; if passed, it is followed to its end
/// without a judgement.
#[inline(always)]
fn head_too_long(scratch: &mut Scratch, policy: &impl Policy) {
    let head = &mut scratch.stream_head;
    head.flags |= head_flags::OVERSIZED;
    scratch
        .unsafe_request
        .set((head.flags & head_flags::UNSAFE_REQUEST != 0) as u32);
    scratch
        .judged
        .set(if head.flags & head_flags::UNSAFE_REQUEST != 0 {
            head.method
        } else {
            Method::Other as u32
        });
    scratch.origin.clear();
    note(&mut scratch.cursor, Outcome::Incomplete);
    if refuses(Outcome::Incomplete, &policy.settings()) {
        deny_from_here(scratch);
    }
}

/// Parses the next piece of the segment: at least one byte, at most a run
/// of body bytes, 128 bytes of a skipped line, or a header line the chunk
/// holds whole. Loads the segment's bytes into `scratch.payload` a chunk at
/// a time through `bytes`.
#[inline(always)]
pub fn step(scratch: &mut Scratch, bytes: &impl SegmentBytes, policy: &impl Policy) -> Step {
    let pos = scratch.cursor.pos;
    let len = scratch.cursor.len;
    if pos >= len || scratch.cursor.stopped != 0 {
        return Step::Done;
    }
    let left = (len - pos) as u64;
    let conn_phase = scratch.stream_conn.phase;
    if conn_phase == phase::BODY || conn_phase == phase::CHUNK_DATA {
        let conn = &mut scratch.stream_conn;
        let run = if conn.body_left < left {
            conn.body_left
        } else {
            left
        };
        conn.body_left -= run;
        if conn.body_left == 0 {
            conn.phase = if conn_phase == phase::BODY {
                phase::IDLE
            } else {
                phase::CHUNK_DATA_END
            };
        }
        scratch.cursor.pos = pos + run as u32;
        note(&mut scratch.cursor, Outcome::Body);
        return Step::More;
    }
    if conn_phase == phase::UNTRACKED {
        note(&mut scratch.cursor, Outcome::Untracked);
        scratch.cursor.pos = len;
        return Step::Done;
    }
    if conn_phase == phase::DENIED {
        note(&mut scratch.cursor, Outcome::ConnectionDenied);
        scratch.cursor.stopped = 1;
        return Step::Done;
    }
    // A byte-level phase: the byte at `pos` must be in the loaded chunk.
    let cursor = &mut scratch.cursor;
    if pos < cursor.chunk_start || pos >= cursor.chunk_start + cursor.chunk_len {
        let chunk = if left < SCAN_BYTES as u64 {
            left as u32
        } else {
            SCAN_BYTES as u32
        };
        if !bytes.load(scratch, scratch.cursor.skip + pos, chunk) {
            note(&mut scratch.cursor, Outcome::Truncated);
            scratch.cursor.stopped = 1;
            return Step::Done;
        }
        scratch.cursor.chunk_start = pos;
        scratch.cursor.chunk_len = chunk;
    }
    let at = (pos - scratch.cursor.chunk_start) as usize;
    let in_chunk = scratch.cursor.chunk_len as usize - at;
    let b = scratch.payload[at & SCAN_MASK];
    if conn_phase == phase::CONN_START || conn_phase == phase::PROXY_HEADER {
        return connection_start(scratch, policy, pos, b);
    }
    // One look for the end of the line `pos` is in, where the phase may
    // read the rest of a line in this step. Through memory (see `settle`).
    let line = if reads_line_whole(conn_phase) {
        whole_line_end(&scratch.payload, at, in_chunk)
    } else {
        None
    };
    let (line_end, line_bare_cr) = match line {
        Some(line) => (
            Some(settle(&mut scratch.cursor.settled[0], line.end)),
            line.bare_cr,
        ),
        None => (None, 0),
    };
    let mut consumed = 1u32;
    // Where in the chunk, from `at`, a value to read starts in this step:
    // the value a `VALUE` step is in, or the one after the name a whole
    // line's start matched.
    let mut value_from = None;
    let mut next = match conn_phase {
        phase::IDLE => {
            if is_request_space(b) {
                phase::IDLE
            } else if is_tchar(b) {
                let head = &mut scratch.stream_head;
                head.start(b);
                match known_method_at(&scratch.payload, at, in_chunk) {
                    Some((word, len)) => {
                        // The whole token and its space, as the `METHOD`
                        // steps would read them a byte at a time.
                        let len = settle(&mut scratch.cursor.settled[1], len) as u32;
                        head.method_word = word;
                        head.method_len = len;
                        head.bytes = len + 1;
                        head.end_method(policy);
                        consumed = len + 1;
                        phase::REQUEST_LINE
                    }
                    None => phase::METHOD,
                }
            } else {
                note(&mut scratch.cursor, Outcome::NotHttp);
                phase::UNTRACKED
            }
        }
        phase::METHOD => {
            let head = &mut scratch.stream_head;
            if is_request_space(b) {
                head.end_method(policy);
                if b == b'\n' {
                    phase::LINE_START
                } else {
                    phase::REQUEST_LINE
                }
            } else {
                let n = head.method_len;
                if n < WORD as u32 {
                    head.method_word |= (b as u64) << (8 * n);
                }
                if !is_tchar(b) {
                    // Not a method any server runs: no known name.
                    head.method_len = 255;
                } else if n < 255 {
                    head.method_len = n + 1;
                }
                phase::METHOD
            }
        }
        phase::REQUEST_LINE | phase::SKIP_LINE | phase::CHUNK_EXT | phase::TRAILER_SKIP => {
            // Up to WHOLE_LINE bytes of the chunk at a time: the line's
            // `\n`, or past all of them.
            match line_end {
                None => {
                    consumed = if in_chunk < WHOLE_LINE {
                        in_chunk
                    } else {
                        WHOLE_LINE
                    } as u32;
                    conn_phase
                }
                Some(end) => {
                    consumed = end as u32 + 1;
                    match conn_phase {
                        phase::CHUNK_EXT => chunk_line_end(&mut scratch.stream_conn),
                        phase::TRAILER_SKIP => phase::TRAILER_START,
                        _ => phase::LINE_START,
                    }
                }
            }
        }
        phase::LINE_START | phase::LINE_CR => {
            let head = &mut scratch.stream_head;
            if b == b'\n' {
                // Judged below, on one path for every way to get here.
                HEAD_ENDED
            } else if conn_phase == phase::LINE_START && b == b'\r' {
                if line_end == Some(1) {
                    // The blank line, whole.
                    consumed = 2;
                    HEAD_ENDED
                } else {
                    phase::LINE_CR
                }
            } else {
                head.lines += 1;
                if conn_phase == phase::LINE_CR || is_blank(b) {
                    if is_blank(b) {
                        head.flags |= head_flags::FOLDED;
                    }
                    phase::SKIP_LINE
                } else if let Some(end) = line_end {
                    // The whole line is in the chunk: its name is matched
                    // a word at a time, and a line the filter does not read
                    // is passed over in this one step.
                    let found = header_of_line(&scratch.payload, at, end, names_read(policy));
                    if found == header::NONE {
                        consumed = end as u32 + 1;
                        phase::LINE_START
                    } else {
                        let name = NAME_AND_COLON[found as usize & 15] as usize;
                        consumed = settle(&mut scratch.cursor.settled[1], name) as u32;
                        value_from = Some(consumed as usize);
                        head.begin_value(found)
                    }
                } else {
                    head.candidates = names_read(policy);
                    head.name_len = 0;
                    head.header = header::NONE;
                    if b == b'\r' {
                        phase::SKIP_LINE
                    } else {
                        head.name_byte(b)
                    }
                }
            }
        }
        phase::NAME => {
            if b == b'\n' {
                phase::LINE_START
            } else {
                scratch.stream_head.name_byte(b)
            }
        }
        phase::VALUE => {
            if b == b'\n' {
                scratch.stream_head.end_value();
                phase::LINE_START
            } else {
                value_from = Some(0);
                consumed = 0;
                phase::VALUE
            }
        }
        phase::CHUNK_SIZE => {
            let conn = &mut scratch.stream_conn;
            match b {
                b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                    let digit = match b {
                        b'0'..=b'9' => b - b'0',
                        _ => (b | 0x20) - b'a' + 10,
                    };
                    conn.flags |= conn_flags::CHUNK_DIGITS;
                    if conn.body_left >= 1 << 52 {
                        // No real chunk is this long: framing a server refuses.
                        phase::IDLE
                    } else {
                        conn.body_left = conn.body_left * 16 + digit as u64;
                        phase::CHUNK_SIZE
                    }
                }
                b'\n' => chunk_line_end(conn),
                b';' | b' ' | b'\t' | b'\r' if conn.flags & conn_flags::CHUNK_DIGITS != 0 => {
                    phase::CHUNK_EXT
                }
                // Not a chunk size: servers refuse the request.
                _ => phase::IDLE,
            }
        }
        phase::CHUNK_DATA_END => match b {
            b'\r' => phase::CHUNK_DATA_END,
            b'\n' => phase::CHUNK_SIZE,
            _ => phase::IDLE,
        },
        phase::TRAILER_START | phase::TRAILER_CR => match b {
            b'\n' => phase::IDLE,
            b'\r' if conn_phase == phase::TRAILER_START => phase::TRAILER_CR,
            _ => phase::TRAILER_SKIP,
        },
        // Unknown phase (a corrupt map value): nothing to follow.
        _ => phase::UNTRACKED,
    };
    if let Some(from) = value_from {
        // The value, read whole when the chunk holds the rest of its line
        // (after a matched name, in this same step), else a byte of it.
        let head = &mut scratch.stream_head;
        match line_end {
            Some(end)
                if end > from
                    && head.value_whole(
                        &scratch.payload,
                        at + from,
                        end - from,
                        line_bare_cr,
                        &mut scratch.cursor.settled,
                    ) =>
            {
                head.end_value();
                consumed = end as u32 + 1;
                next = phase::LINE_START;
            }
            _ => {
                if from == 0 {
                    if !(head.value_len == 0 && is_blank(b)) {
                        head.value_byte(b);
                    }
                    consumed = 1;
                }
            }
        }
    }
    // Whether the step read its line to the `\n`, and found a bare `\r`
    // before it (see the bare `\r` rule below).
    let read = match line_end {
        Some(end) if consumed as usize == end + 1 && line_bare_cr != 0 => line_read::WHOLE_BARE_CR,
        Some(end) if consumed as usize == end + 1 => line_read::WHOLE,
        _ => line_read::PART,
    };
    // Through memory, as `Slot`s do: each arm's constant phase and length
    // would otherwise make the verifier check what follows once per arm.
    // SAFETY: plain reads and writes of fields of `scratch`.
    let (next, consumed, conn_phase, read) = unsafe {
        core::ptr::write_volatile(&mut scratch.stream_conn.phase, next);
        core::ptr::write_volatile(&mut scratch.cursor.chunk_consumed, consumed);
        core::ptr::write_volatile(&mut scratch.cursor.step_phase, conn_phase);
        core::ptr::write_volatile(&mut scratch.cursor.line_read, read);
        (
            core::ptr::read_volatile(&scratch.stream_conn.phase),
            core::ptr::read_volatile(&scratch.cursor.chunk_consumed),
            core::ptr::read_volatile(&scratch.cursor.step_phase),
            core::ptr::read_volatile(&scratch.cursor.line_read),
        )
    };
    let in_head = phase::in_head(conn_phase);
    // Only a judged head needs to know (see `head_flags::BARE_CR`).
    if (phase::LINE_START..=phase::SKIP_LINE).contains(&conn_phase)
        && next != HEAD_ENDED
        && scratch.stream_head.judged()
    {
        let head = &mut scratch.stream_head;
        if read != line_read::PART {
            // A line read to its `\n`: the look for it found any bare `\r`.
            if read == line_read::WHOLE_BARE_CR
                || (head.flags & head_flags::PENDING_CR != 0 && b != b'\n')
            {
                head.flags |= head_flags::BARE_CR;
            }
            head.flags &= !head_flags::PENDING_CR;
        } else {
            note_bare_cr(head, &scratch.payload, at, consumed as usize);
        }
    }
    let max_head_bytes = scratch.cursor.max_head_bytes;
    if next == HEAD_ENDED {
        let head = &mut scratch.stream_head;
        head.bytes += consumed;
        scratch.cursor.pos = pos + consumed;
        if head.judged() && head.bytes > max_head_bytes {
            // The blank line's last byte counts too.
            head_too_long(scratch, policy);
            if scratch.cursor.stopped == 0 {
                // Passed as the settings say: the head is over, not judged.
                end_head(scratch, policy);
            }
        } else {
            end_head(scratch, policy);
        }
        return Step::More;
    }
    if next == phase::CHUNK_SIZE && conn_phase != phase::CHUNK_SIZE {
        scratch.stream_conn.body_left = 0;
        scratch.stream_conn.flags &= !conn_flags::CHUNK_DIGITS;
    }
    scratch.cursor.pos = pos + consumed;
    if in_head {
        let head = &mut scratch.stream_head;
        head.bytes += consumed;
        if head.judged() && (head.bytes > max_head_bytes || head.lines > MAX_HEAD_LINES) {
            head_too_long(scratch, policy);
            return Step::More;
        }
        note(&mut scratch.cursor, Outcome::HeadPart);
    } else if phase::in_head(next) {
        note(&mut scratch.cursor, Outcome::HeadPart);
    } else if next != phase::UNTRACKED && conn_phase != phase::IDLE {
        note(&mut scratch.cursor, Outcome::Body);
    }
    Step::More
}

/// Phases that may read the rest of a line in one step: up to its `\n`,
/// found by [`whole_line_end`].
#[inline(always)]
const fn reads_line_whole(phase: u32) -> bool {
    matches!(
        phase,
        phase::REQUEST_LINE
            | phase::SKIP_LINE
            | phase::CHUNK_EXT
            | phase::TRAILER_SKIP
            | phase::LINE_START
            | phase::VALUE
    )
}

/// A chunk-size line has ended: the chunk's data, or the trailers after
/// the last chunk.
#[inline(always)]
fn chunk_line_end(conn: &mut ConnState) -> u32 {
    if conn.flags & conn_flags::CHUNK_DIGITS == 0 {
        phase::IDLE
    } else if conn.body_left == 0 {
        phase::TRAILER_START
    } else {
        phase::CHUNK_DATA
    }
}

/// What a segment's sequence numbers say it carries, against the
/// connection's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// New bytes, from `skip` bytes into the payload (the ones before were
    /// parsed already: an overlap).
    InOrder { skip: u32 },
    /// Only bytes parsed before.
    Old,
    /// Bytes past a gap.
    Ahead,
}

/// Where a segment of `len` payload bytes at `seq` stands against `conn`.
#[inline(always)]
pub fn arrival(conn: &ConnState, seq: u32, len: u32) -> Arrival {
    let behind = conn.next_seq.wrapping_sub(seq) as i32;
    if behind < 0 {
        Arrival::Ahead
    } else if behind as u32 >= len {
        Arrival::Old
    } else {
        Arrival::InOrder {
            skip: behind as u32,
        }
    }
}

/// The outcome of a segment the connection's state says cannot be parsed
/// now, or `None` when its new bytes are to be parsed (from
/// [`Arrival::InOrder`]'s offset).
///
/// - Bytes of a denied connection at or past the denied head's deciding
///   segment are dropped, retransmissions included.
/// - Other old bytes were judged and passed already: they pass again.
/// - Bytes past a gap pass only where the connection is in a body that
///   covers them all, or untracked; otherwise they may belong to a head
///   not yet decided, and are dropped: the client's TCP sends them again,
///   in order.
#[inline(always)]
pub fn before_parse(conn: &ConnState, seq: u32, len: u32) -> Option<Outcome> {
    if conn.phase == phase::DENIED {
        let end = seq.wrapping_add(len);
        return if (end.wrapping_sub(conn.deny_seq) as i32) > 0 {
            Some(Outcome::ConnectionDenied)
        } else {
            Some(Outcome::Retransmission)
        };
    }
    match arrival(conn, seq, len) {
        Arrival::Old => Some(Outcome::Retransmission),
        Arrival::InOrder { .. } => None,
        Arrival::Ahead => {
            let gap = seq.wrapping_sub(conn.next_seq) as u64;
            let in_body = (conn.phase == phase::BODY || conn.phase == phase::CHUNK_DATA)
                && gap + len as u64 <= conn.body_left;
            if conn.phase == phase::UNTRACKED {
                Some(Outcome::Untracked)
            } else if in_body {
                Some(Outcome::Body)
            } else {
                Some(Outcome::OutOfOrder)
            }
        }
    }
}

/// A segment past a gap that reaches the end of the body the connection is
/// in: the bytes up to the body's end need no parse (whatever they hold,
/// and whenever they come), so the connection moves to the body's end and
/// the segment is parsed from there. Without this, a client whose TCP does
/// not send again what the server already holds past the gap (the body
/// bytes passed ahead, see [`before_parse`]) would find its next request
/// dropped as out of order for ever.
#[inline(always)]
pub fn skip_to_body_end(conn: &mut ConnState, seq: u32, len: u32) {
    if conn.phase != phase::BODY && conn.phase != phase::CHUNK_DATA {
        return;
    }
    let Arrival::Ahead = arrival(conn, seq, len) else {
        return;
    };
    let gap = seq.wrapping_sub(conn.next_seq) as u64;
    if gap > conn.body_left || gap + len as u64 <= conn.body_left {
        return;
    }
    conn.next_seq = conn.next_seq.wrapping_add(conn.body_left as u32);
    conn.body_left = 0;
    conn.phase = if conn.phase == phase::BODY {
        phase::IDLE
    } else {
        phase::CHUNK_DATA_END
    };
}

/// Whether the first `len` bytes of `buf` start a request line with a
/// known method (`GET `, `OPTIONS `, ...). How a connection whose start the
/// filter did not see (open before it was loaded, or whose state was
/// evicted) is picked up: from a segment that starts a request. An unknown
/// method is not enough, as the middle of a text body could start with a
/// word and a space.
#[inline(always)]
pub fn starts_request_line(buf: &ScanBuf, len: usize) -> bool {
    let mut word = 0u64;
    let mut k = 0;
    while k < WORD + 1 {
        if k >= len {
            return false;
        }
        // Masked like every index into the buffer, so that no bounds
        // check (and panic path) is left to the program.
        let b = buf[k & SCAN_MASK];
        if b == b' ' {
            return Method::of_token(word, k as u32) != Method::Other;
        }
        if k < WORD {
            word |= (b as u64) << (8 * k);
        }
        k += 1;
    }
    false
}

/// The connection tables, as the program keeps them in maps (`CONNS`, an
/// LRU hash; `OPEN_HEADS`, an LRU hash of heads that span segments) and
/// userspace models keep them in memory.
pub trait Tables {
    /// Copies the state of `key` into `into`; false when there is none.
    fn load_conn(&self, key: &ConnKey, into: &mut ConnState) -> bool;
    /// Makes sure `key` has an entry for [`Self::store_conn`] to write
    /// (one with `conn`, if it had none); false when it cannot have one.
    /// Called before the parse with the state it starts from: if the
    /// segment is then not stored (`HeadLost`), the entry keeps that
    /// state, and the segment, sent again, is parsed from there.
    fn keep_conn(&self, key: &ConnKey, conn: &ConnState) -> bool;
    fn store_conn(&self, key: &ConnKey, conn: &ConnState);
    /// Copies the open head of `key` into `into`; false when there is none.
    fn load_head(&self, key: &ConnKey, into: &mut HeadState) -> bool;
    /// False when the head could not be stored.
    fn store_head(&self, key: &ConnKey, head: &HeadState) -> bool;
    fn delete_head(&self, key: &ConnKey);
    /// A connection without state got one (counted: with the entries in
    /// use, it tells how many were evicted).
    fn learned(&self);
    /// The connection's PROXY header was read (counted); the client it
    /// names, if any (`family` not 0), is kept for the connection's denial
    /// events.
    fn store_client(&self, key: &ConnKey, client: &ProxyClient);
    /// Copies the client kept for `key` into `into`; false when there is
    /// none (evicted).
    fn load_client(&self, key: &ConnKey, into: &mut ProxyClient) -> bool;
    /// Runs [`step`] until it is done, at most `max` times (the program:
    /// under `bpf_loop`).
    fn run_steps(&self, scratch: &mut Scratch, max: u32);
}

/// A TCP segment to an inspected port, as the filter sees it.
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub seq: u32,
    /// Payload bytes.
    pub len: u32,
    pub syn: bool,
    pub rst: bool,
    /// The URG flag.
    pub urg: bool,
}

/// The outcome of `segment` of connection `key`: the connection's state is
/// loaded, the segment's new bytes parsed in order, and the state stored.
/// The payload is read through `bytes`, from offset 0 of the payload.
///
/// - A SYN starts the connection afresh: its first payload byte (a SYN's
///   own, with TCP Fast Open) starts a request.
/// - A connection without state is picked up from a segment that starts a
///   request line ([`starts_request_line`]); any other segment of it
///   passes as `Untracked` unless its head was open (a head kept in
///   `OPEN_HEADS` whose connection state was evicted): then it is dropped,
///   as `HeadLost`.
/// - A segment with URG set and a payload is dropped (`Urgent`).
/// - A head still open at the segment's end is kept in `OPEN_HEADS`; if it
///   cannot be, the segment is dropped (`HeadLost`) and sent again by the
///   client.
#[inline(always)]
pub fn filter_segment(
    scratch: &mut Scratch,
    tables: &impl Tables,
    key: &ConnKey,
    segment: Segment,
    bytes: &impl SegmentBytes,
    policy: &impl Policy,
) -> Outcome {
    if segment.rst {
        // Nothing to parse; the state goes with LRU eviction (a reset
        // forged to clear a denied connection's state would open it).
        return Outcome::NoPayload;
    }
    if !segment.syn && segment.len == 0 {
        // An acknowledgment: nothing to parse, no state to read.
        return Outcome::NoPayload;
    }
    let mut seq = segment.seq;
    if segment.syn {
        let known = tables.load_conn(key, &mut scratch.stream_conn);
        if !known {
            tables.learned();
        }
        // A head an earlier connection of these ports left open is no
        // longer: it must not pass for this one's, were its state evicted.
        // Only a connection without state, or whose state says so, may
        // have one (a head is kept only with `HEAD_KEPT` set, and deleted
        // when it is cleared).
        if !known || scratch.stream_conn.flags & conn_flags::HEAD_KEPT != 0 {
            tables.delete_head(key);
        }
        scratch
            .stream_conn
            .start(seq.wrapping_add(1), phase::CONN_START);
        seq = seq.wrapping_add(1);
        if segment.len == 0 {
            tables.store_conn(key, &scratch.stream_conn);
            return Outcome::NoPayload;
        }
    } else if !tables.load_conn(key, &mut scratch.stream_conn) {
        if tables.load_head(key, &mut scratch.stream_head) {
            return Outcome::HeadLost;
        }
        let first = if segment.len < SCAN_BYTES as u32 {
            segment.len
        } else {
            SCAN_BYTES as u32
        };
        if !bytes.load(scratch, 0, first) {
            return Outcome::Untracked;
        }
        // A connection whose SYN was not seen: picked up at a request
        // line, or at a PROXY header (its start).
        let first_phase = if starts_request_line(&scratch.payload, first as usize) {
            phase::IDLE
        } else if proxy::starts_header(&scratch.payload[..], first as usize) {
            phase::CONN_START
        } else {
            return Outcome::Untracked;
        };
        scratch.stream_conn.start(seq, first_phase);
        tables.learned();
    }
    if segment.len == 0 {
        return Outcome::NoPayload;
    }
    if segment.urg {
        // Linux takes the urgent byte out of the stream it delivers (unless
        // the socket asks for it in line), so the server would read other
        // bytes than the segment holds. Browsers never set URG: the segment
        // is dropped rather than guessed at.
        if !policy.settings().enforcing() {
            scratch.stream_conn.phase = phase::UNTRACKED;
            tables.store_conn(key, &scratch.stream_conn);
        }
        return Outcome::Urgent;
    }
    skip_to_body_end(&mut scratch.stream_conn, seq, segment.len);
    let skip = match before_parse(&scratch.stream_conn, seq, segment.len) {
        Some(outcome) => {
            if outcome == Outcome::OutOfOrder && !policy.settings().enforcing() {
                // Monitor mode passes it, and so loses the stream's order:
                // the connection is no longer followed.
                scratch.stream_conn.phase = phase::UNTRACKED;
                tables.store_conn(key, &scratch.stream_conn);
            }
            return outcome;
        }
        None => match arrival(&scratch.stream_conn, seq, segment.len) {
            Arrival::InOrder { skip } => skip,
            _ => 0,
        },
    };
    let head_kept = scratch.stream_conn.flags & conn_flags::HEAD_KEPT != 0;
    if head_kept && !tables.load_head(key, &mut scratch.stream_head) {
        // The head's state was evicted: its bytes cannot be judged.
        return Outcome::HeadLost;
    }
    if !tables.keep_conn(key, &scratch.stream_conn) {
        // The table could not take the connection: its state would be
        // lost, so the segment is not parsed now (the client sends it
        // again).
        return Outcome::HeadLost;
    }
    let SegmentCursor {
        len,
        pos,
        chunk_start,
        chunk_len,
        skip: skipped,
        outcome,
        stopped,
        seq: first_seq,
        chunk_consumed,
        step_phase,
        settled,
        line_read: read,
        max_head_bytes,
        proxy_read,
        reserved,
    } = &mut scratch.cursor;
    put(len, segment.len - skip);
    put(pos, 0);
    put(chunk_start, 0);
    put(chunk_len, 0);
    put(skipped, skip);
    put(outcome, Outcome::Body as u32);
    put(stopped, 0);
    put(first_seq, seq.wrapping_add(skip));
    put(chunk_consumed, 0);
    put(step_phase, 0);
    put(&mut settled[0], 0);
    put(&mut settled[1], 0);
    put(read, line_read::PART);
    put(max_head_bytes, policy.settings().max_head_bytes);
    put(proxy_read, 0);
    put(reserved, 0);
    // No client, unless the connection's PROXY header named one (below).
    scratch.proxy_client.clear();
    // One more step than bytes: a byte at a connection's start may be read
    // twice (`phase::CONN_START`, or the end of what looked like a PROXY
    // header: one or the other, once).
    tables.run_steps(scratch, scratch.cursor.len + 1);
    let outcome = Outcome::from_index(scratch.cursor.outcome);
    let conn = &mut scratch.stream_conn;
    if conn.phase != phase::DENIED {
        conn.next_seq = scratch.cursor.seq.wrapping_add(scratch.cursor.pos);
    }
    let open = phase::in_head(conn.phase);
    if open {
        if !tables.store_head(key, &scratch.stream_head) {
            // Not parsed after all: the client sends it again.
            return Outcome::HeadLost;
        }
        conn.flags |= conn_flags::HEAD_KEPT;
    } else {
        conn.flags &= !conn_flags::HEAD_KEPT;
    }
    if scratch.cursor.proxy_read != 0 {
        tables.store_client(key, &scratch.proxy_client);
    } else if conn.flags & conn_flags::PROXIED != 0
        && outcome.may_deny()
        && !tables.load_client(key, &mut scratch.proxy_client)
    {
        scratch.proxy_client.clear();
    }
    tables.store_conn(key, &scratch.stream_conn);
    if head_kept && !open {
        tables.delete_head(key);
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::copy_words;

    const HEAD_BYTES: usize = core::mem::size_of::<HeadState>();

    fn bytes_of(head: &HeadState) -> [u8; HEAD_BYTES] {
        // SAFETY: `HeadState` is plain data without padding (see `Words`).
        unsafe { core::mem::transmute(*head) }
    }

    fn dirty_head() -> HeadState {
        // SAFETY: every bit pattern is a `HeadState` (integers and bytes).
        unsafe { core::mem::transmute([0xa5u8; HEAD_BYTES]) }
    }

    #[test]
    fn start_sets_every_field_the_arrays_aside() {
        let mut head = dirty_head();
        head.start(b'G');
        let expected = HeadState {
            bytes: 1,
            method_word: b'G' as u64,
            method_len: 1,
            value: head.value,
            origin: head.origin,
            client_text: head.client_text,
            ..HeadState::default()
        };
        assert_eq!(bytes_of(&head), bytes_of(&expected));
    }

    #[test]
    fn copy_words_copies_every_byte() {
        let from = dirty_head();
        let mut to = HeadState::default();
        copy_words(&mut to, &from);
        assert_eq!(bytes_of(&to), bytes_of(&from));
    }

    #[test]
    fn conn_key_init_in_zeroes_the_addresses() {
        let mut slot = core::mem::MaybeUninit::new(ConnKey {
            source_addr: [0xa5; 16],
            dest_addr: [0x5a; 16],
            ..ConnKey::default()
        });
        let key = *ConnKey::init_in(&mut slot, 41000, 8080, 6);
        let expected = ConnKey {
            source_port: 41000,
            dest_port: 8080,
            family: 6,
            ..ConnKey::default()
        };
        assert_eq!(key, expected);
    }

    #[test]
    fn conn_state_holds_only_what_it_holds() {
        let conn = ConnState {
            next_seq: 1,
            deny_seq: 2,
            phase: phase::BODY,
            flags: 0,
            body_left: 5,
        };
        assert!(conn.holds(&conn));
        for other in [
            ConnState {
                next_seq: 9,
                ..conn
            },
            ConnState {
                deny_seq: 9,
                ..conn
            },
            ConnState {
                phase: phase::IDLE,
                ..conn
            },
            ConnState { flags: 1, ..conn },
            ConnState {
                body_left: 9,
                ..conn
            },
        ] {
            assert!(!conn.holds(&other), "{other:?}");
        }
    }

    #[test]
    fn conn_state_start_and_copy() {
        let mut conn = ConnState {
            next_seq: 1,
            deny_seq: 2,
            phase: phase::DENIED,
            flags: conn_flags::HEAD_KEPT,
            body_left: 5,
        };
        let mut copy = ConnState::default();
        copy.copy_from(&conn);
        assert_eq!(copy, conn);
        conn.start(77, phase::IDLE);
        assert_eq!(
            conn,
            ConnState {
                next_seq: 77,
                ..ConnState::default()
            }
        );
    }
}
