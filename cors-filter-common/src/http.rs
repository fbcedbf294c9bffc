//! Finds, in the first bytes of a TCP payload, what cors-filter needs from an
//! HTTP/1.x request head: the method, where the `Origin` value is, which
//! method `Access-Control-Request-Method` names, and whether
//! `Sec-Fetch-Site` says `cross-site`.
//!
//! Bounds (what the verifier needs, and what a preflight needs):
//! - at most [`SCAN_BYTES`] bytes of payload are read: the request line, the
//!   header lines and the blank line that ends them must fit in them;
//! - at most [`MAX_HEADER_LINES`] header lines are read.
//!
//! A request head that does not end within both bounds is
//! [`RequestHead::Incomplete`]; what was found in its whole lines within
//! them is still there to read (an unsafe request is judged on it, see
//! `crate::inspect`). Browsers' preflights carry no cookies and are
//! typically 300 to 700 bytes long.

use crate::{
    method::{Method, REQUEST_LINE_METHODS, VALUE_METHODS, method_before},
    slot::Slot,
};

/// Bytes of TCP payload inspected at most.
pub const SCAN_BYTES: usize = 1024;
/// Size of the buffer the payload is copied into: a power of two, larger than
/// [`SCAN_BYTES`], so that an index masked with [`SCAN_MASK`] is in bounds
/// and every fixed-width window that starts inside the scan stays inside.
pub const SCAN_BUF_LEN: usize = 2048;
pub const SCAN_MASK: usize = SCAN_BUF_LEN - 1;
/// Header lines (after the request line) inspected at most.
pub const MAX_HEADER_LINES: u32 = 64;
/// Longest method token recognised in a request line.
pub const MAX_METHOD_LEN: usize = 20;

const OPTIONS_SP: &[u8; 8] = b"OPTIONS ";
/// Bytes read at once where the scan reads words (`u64`, little-endian).
const WORD: usize = 8;
const _: () = assert!(SCAN_BYTES.is_multiple_of(WORD));
const ORIGIN_NAME: &[u8; 7] = b"origin:";
const ACRM_NAME: &[u8; 30] = b"access-control-request-method:";
const SEC_FETCH_SITE_NAME: &[u8; 15] = b"sec-fetch-site:";
const CROSS_SITE: &[u8; 10] = b"cross-site";
const HTTP1_VERSION: &[u8; 8] = b" HTTP/1.";

/// What the first bytes of a payload are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestStart {
    /// Not the start of an HTTP request.
    NotHttp,
    /// A method token and a space: a request with that method (`Other`
    /// for a token that is no known method).
    Request(Method),
    /// Shorter than `"OPTIONS "` and a prefix of it: the method itself was
    /// split across segments.
    SplitOptions,
}

/// How far [`scan_head`] read a request head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestHead {
    /// The request line is not an HTTP/1.x request line.
    NotHttp,
    /// The blank line ending the head was not found within the bounds; what
    /// the scan found is about the whole header lines within them.
    Incomplete,
    /// The whole head was read.
    Complete,
}

/// State of [`scan_head`], kept in memory (see [`Slot`]).
#[repr(C)]
pub struct HeadScan {
    /// Offsets just after each `\n` found, in order (a line start each).
    line_starts: [u16; SCAN_BYTES],
    line_count: Slot<u32>,
    len: Slot<u32>,
    /// Bytes of the method token in the request line.
    method_len: Slot<u32>,
    origins: Slot<u32>,
    request_methods: Slot<u32>,
    origin_value_at: Slot<u32>,
    /// Where the value of the (last) `Access-Control-Request-Method` starts.
    request_method_value_at: Slot<u32>,
    /// `Sec-Fetch-Site` lines whose value is `cross-site`.
    cross_site: Slot<u32>,
    folded: Slot<u32>,
    /// Bytes of empty lines before the request line.
    skipped: Slot<u32>,
    /// Bytes of `\r` and `\n` at the start of the payload.
    line_ends: Slot<u32>,
    /// End of the whole words of the payload (its length rounded down).
    words_end: Slot<u32>,
}

/// What [`scan_head`] found among the whole header lines it read.
impl HeadScan {
    /// `Origin` lines.
    pub fn origins(&self) -> u32 {
        self.origins.get()
    }

    /// Where the value of the (last) `Origin` line starts: just after the
    /// colon, before any optional whitespace.
    pub fn origin_value_at(&self) -> usize {
        self.origin_value_at.get() as usize
    }

    /// `Access-Control-Request-Method` lines.
    pub fn request_methods(&self) -> u32 {
        self.request_methods.get()
    }

    /// Whether a `Sec-Fetch-Site` line says `cross-site`.
    pub fn cross_site(&self) -> bool {
        self.cross_site.get() != 0
    }

    /// Whether a header line is folded (starts with a space or a tab).
    pub fn folded(&self) -> bool {
        self.folded.get() != 0
    }
}

impl Default for HeadScan {
    fn default() -> Self {
        Self {
            line_starts: [0; SCAN_BYTES],
            line_count: Slot::new(0),
            len: Slot::new(0),
            method_len: Slot::new(0),
            origins: Slot::new(0),
            request_methods: Slot::new(0),
            origin_value_at: Slot::new(0),
            request_method_value_at: Slot::new(0),
            cross_site: Slot::new(0),
            folded: Slot::new(0),
            skipped: Slot::new(0),
            line_ends: Slot::new(0),
            words_end: Slot::new(0),
        }
    }
}

#[inline(always)]
fn at(buf: &[u8; SCAN_BUF_LEN], index: usize) -> u8 {
    buf[index & SCAN_MASK]
}

/// Moves what follows the empty lines at the start of the first `len`
/// bytes of `buf` to its start, and returns its length; `None` when the
/// window is full and nothing but line ends: the request line, if any, does
/// not start within [`SCAN_BYTES`], and the request is incomplete.
///
/// A server ignores empty lines before a request line (RFC 9112, section
/// 2.2; httparse skips any number), so the filter must too: a preflight
/// behind a `\r\n` is still a preflight. The run of `\r` and `\n` bytes at
/// the start is skipped up to its last `\n`; a `\r` left over makes the rest
/// no request, as a server refuses such a run anyway.
#[inline(always)]
pub fn skip_empty_lines(
    buf: &mut [u8; SCAN_BUF_LEN],
    len: usize,
    state: &mut HeadScan,
) -> Option<usize> {
    state
        .len
        .set(if len > SCAN_BYTES { SCAN_BYTES } else { len } as u32);
    state.skipped.set(0);
    state.line_ends.set(0);
    let mut k = 0;
    while k < SCAN_BYTES {
        if k >= state.len.get() as usize {
            break;
        }
        let b = at(buf, k);
        if b != b'\n' && b != b'\r' {
            break;
        }
        if b == b'\n' {
            state.skipped.set(k as u32 + 1);
        }
        state.line_ends.set(k as u32 + 1);
        k += 1;
    }
    if state.line_ends.get() as usize == SCAN_BYTES {
        return None;
    }
    // Usually nothing to move: only then is the payload copied. The whole
    // window is, whatever the length: a loop without a way out that depends
    // on the data is checked once by the verifier, not once per length
    // (bytes past the length are stale either way, and never read).
    if state.skipped.get() != 0 {
        state.len.set(state.len.get() - state.skipped.get());
        let mut k = 0;
        while k < SCAN_BYTES {
            buf[k & SCAN_MASK] = at(buf, k + state.skipped.get() as usize);
            k += 1;
        }
    }
    Some(state.len.get() as usize)
}

/// Whether the first `len` bytes of `buf` start an HTTP request, and with
/// which method. Notes the method's length in `state`, for [`scan_head`].
#[inline(always)]
pub fn classify_start(buf: &[u8; SCAN_BUF_LEN], len: usize, state: &mut HeadScan) -> RequestStart {
    if len == 0 {
        return RequestStart::NotHttp;
    }
    if len < OPTIONS_SP.len() {
        let mut k = 0;
        while k < OPTIONS_SP.len() {
            if k >= len {
                return RequestStart::SplitOptions;
            }
            if buf[k] != OPTIONS_SP[k] {
                break;
            }
            k += 1;
        }
    }
    // RFC 9110 method = token; browsers only send upper-case ASCII methods.
    let mut k = 0;
    while k < MAX_METHOD_LEN + 1 {
        if k >= len {
            return RequestStart::NotHttp;
        }
        let b = buf[k];
        if b == b' ' {
            if k == 0 {
                return RequestStart::NotHttp;
            }
            state.method_len.set(k as u32);
            // The name and its space are the token found (it ends at its
            // first space), so the word compared lies within `len`.
            return RequestStart::Request(method_before(word_at(buf, 0), &REQUEST_LINE_METHODS));
        }
        if !is_tchar(b) {
            return RequestStart::NotHttp;
        }
        k += 1;
    }
    RequestStart::NotHttp
}

/// RFC 9110 `tchar`.
#[inline(always)]
pub const fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

#[inline(always)]
fn starts_with<const N: usize>(buf: &[u8; SCAN_BUF_LEN], from: usize, pattern: &[u8; N]) -> bool {
    let mut k = 0;
    while k < N {
        if at(buf, from + k) != pattern[k] {
            return false;
        }
        k += 1;
    }
    true
}

/// Notes the start of the line after each line end in `word`, the bytes
/// of the payload at `p`.
#[inline(always)]
fn note_line_ends(state: &mut HeadScan, word: u64, p: usize) {
    let lfs = byte_marks(word, b'\n');
    if lfs == 0 {
        return;
    }
    if lfs & (lfs - 1) == 0 {
        // One line end, the usual case (header lines are longer than a
        // word): its position, without a loop.
        let count = state.line_count.get() as usize;
        state.line_starts[count & (SCAN_BYTES - 1)] = (p + mark_position(lfs) + 1) as u16;
        state.line_count.set(count as u32 + 1);
        return;
    }
    let mut k = 0;
    while k < WORD {
        // Written unconditionally, kept only when the count moves on.
        let count = state.line_count.get() as usize;
        state.line_starts[count & (SCAN_BYTES - 1)] = (p + k + 1) as u16;
        let lf = (word >> (8 * k)) & 0xff == b'\n' as u64;
        state.line_count.set(count as u32 + lf as u32);
        k += 1;
    }
}

/// The 8 bytes of `buf` at `from` as a little-endian word. `from` is
/// taken within the scan window (it always is: callers pass offsets
/// below the payload length), so the word lies inside `buf`.
#[inline(always)]
fn word_at(buf: &[u8; SCAN_BUF_LEN], from: usize) -> u64 {
    let from = from & (SCAN_BYTES - 1);
    let mut bytes = [0u8; WORD];
    bytes.copy_from_slice(&buf[from..from + WORD]);
    u64::from_le_bytes(bytes)
}

const LOWS: u64 = 0x7f7f_7f7f_7f7f_7f7f;

/// The high bit of every byte of `word` that is `byte`, and no other bit.
/// `x` is zero exactly where `word` holds `byte`; adding 0x7f to the low
/// seven bits of a byte of `x` sets its high bit unless they are all zero,
/// and no carry crosses into the next byte, so the marks are exact.
#[inline(always)]
const fn byte_marks(word: u64, byte: u8) -> u64 {
    let x = word ^ (0x0101_0101_0101_0101 * byte as u64);
    !(((x & LOWS) + LOWS) | x | LOWS)
}

/// The index (0 to 7) of the byte marked in `marks`, which holds one mark
/// exactly: shifted down to a 1 in byte `i`, the multiplication puts the
/// factor's byte `7 - i`, which is `i + 1`, in the top byte.
#[inline(always)]
const fn mark_position(marks: u64) -> usize {
    (((marks >> 7).wrapping_mul(0x0102_0304_0506_0708) >> 56) - 1) as usize
}

/// A header name pattern (lower case letters, `-` and `:`) cut into
/// little-endian words, for [`name_at`]: per word, the pattern's bytes,
/// the bits to set before comparing (0x20 on letters: ORing it folds
/// exactly the two cases of a letter onto the lower-case one; other bytes
/// are compared as they are), and which bytes count (the last word may be
/// partial).
struct NamePattern<const W: usize> {
    value: [u64; W],
    fold: [u64; W],
    care: [u64; W],
}

impl<const W: usize> NamePattern<W> {
    const fn new(pattern: &[u8]) -> Self {
        assert!(pattern.len() <= W * WORD);
        let (mut value, mut fold, mut care) = ([0; W], [0; W], [0; W]);
        let mut k = 0;
        while k < pattern.len() {
            let shift = 8 * (k % WORD);
            value[k / WORD] |= (pattern[k] as u64) << shift;
            if pattern[k].is_ascii_lowercase() {
                fold[k / WORD] |= 0x20 << shift;
            }
            care[k / WORD] |= 0xff << shift;
            k += 1;
        }
        NamePattern { value, fold, care }
    }
}

const ORIGIN_PATTERN: NamePattern<1> = NamePattern::new(ORIGIN_NAME);
const ACRM_PATTERN: NamePattern<4> = NamePattern::new(ACRM_NAME);
const SEC_FETCH_SITE_PATTERN: NamePattern<2> = NamePattern::new(SEC_FETCH_SITE_NAME);
const CROSS_SITE_PATTERN: NamePattern<2> = NamePattern::new(CROSS_SITE);

/// Case-insensitive match of a header name `pattern` at `from`, a word at
/// a time. The differences are ORed together rather than tested one by
/// one: one branch instead of one per word keeps the verifier's search
/// shallow.
#[inline(always)]
fn name_at<const W: usize>(
    buf: &[u8; SCAN_BUF_LEN],
    from: usize,
    pattern: &NamePattern<W>,
) -> bool {
    let mut diff = 0u64;
    let mut w = 0;
    while w < W {
        let word = word_at(buf, from + w * WORD);
        diff |= ((word | pattern.fold[w]) ^ pattern.value[w]) & pattern.care[w];
        w += 1;
    }
    diff == 0
}

/// Whether the request line, which ends with the `\n` at `lf`, ends in
/// ` HTTP/1.<digit>` (with or without a `\r`) and has room for a target
/// between that and the method.
#[inline(always)]
fn request_line_is_http1(buf: &[u8; SCAN_BUF_LEN], lf: usize, method_len: usize) -> bool {
    let end = if lf > 0 && at(buf, lf - 1) == b'\r' {
        lf - 1
    } else {
        lf
    };
    // method + " " + at least one target byte + " HTTP/1.x"
    if end < method_len + 1 + 1 + HTTP1_VERSION.len() + 1 {
        return false;
    }
    let version = end - HTTP1_VERSION.len() - 1;
    starts_with(buf, version, HTTP1_VERSION) && at(buf, end - 1).is_ascii_digit()
}

/// Bytes of optional whitespace (space, tab) a header value may start with
/// and still be read; a value starting with more is read as no method and
/// not `cross-site`.
pub const MAX_VALUE_LEAD: usize = WORD - 1;

/// Where the value starting at `value_at` (just after a colon) starts once
/// its leading whitespace is skipped: at most [`MAX_VALUE_LEAD`] bytes.
/// With more, `value_at` itself: read from there, the value starts with
/// whitespace, which no method name nor `cross-site` does.
#[inline(always)]
fn skip_value_lead(buf: &[u8; SCAN_BUF_LEN], value_at: usize) -> usize {
    let word = word_at(buf, value_at);
    let others = !(byte_marks(word, b' ') | byte_marks(word, b'\t')) & !LOWS;
    if others == 0 {
        return value_at;
    }
    // The lowest mark alone (`x & -x`): its byte is the first of the value.
    value_at + mark_position(others & others.wrapping_neg())
}

/// The method a header value starting at `value_at` names: its first
/// token, ended by whitespace or the line end, compared with the known
/// names; `Other` for any other token.
#[inline(always)]
pub fn value_method(buf: &[u8; SCAN_BUF_LEN], value_at: usize) -> Method {
    let word = word_at(buf, skip_value_lead(buf, value_at));
    // Every byte that ends a token (`\r`, space, tab) becomes a `\n`, so
    // one table of names ended by `\n` serves: flipping the bits in which
    // a byte differs from `\n`, in the bytes marked.
    let mut ends = 0;
    for (end, flip) in [
        (b'\r', b'\r' ^ b'\n'),
        (b' ', b' ' ^ b'\n'),
        (b'\t', b'\t' ^ b'\n'),
    ] {
        ends |= (byte_marks(word, end) >> 7) * flip as u64;
    }
    method_before(word ^ ends, &VALUE_METHODS)
}

/// Whether a `Sec-Fetch-Site` value starting at `value_at` is `cross-site`
/// (its first token, compared without regard to case).
#[inline(always)]
pub fn value_is_cross_site(buf: &[u8; SCAN_BUF_LEN], value_at: usize) -> bool {
    let start = skip_value_lead(buf, value_at);
    let end = at(buf, start + CROSS_SITE.len());
    name_at(buf, start, &CROSS_SITE_PATTERN) && matches!(end, b'\r' | b'\n' | b' ' | b'\t')
}

/// Scans the head of a request held in the first `len` bytes of `buf`
/// (`classify_start` returned [`RequestStart::Request`]).
///
/// Header lines end with `\n`, optionally preceded by `\r`, as RFC 9112
/// allows recipients to accept. Header names are matched case-insensitively
/// and must be followed directly by the colon (RFC 9112 forbids whitespace
/// before it). Only whole lines count: a line cut by the end of the window
/// is not read.
///
/// Two passes, so that the verifier sees one small loop per bound: the
/// first notes where lines start (all of [`SCAN_BYTES`]), the second
/// inspects at most [`MAX_HEADER_LINES`] of them and the blank line.
#[inline(always)]
pub fn scan_head(buf: &[u8; SCAN_BUF_LEN], len: usize, state: &mut HeadScan) -> RequestHead {
    state
        .len
        .set(if len > SCAN_BYTES { SCAN_BYTES } else { len } as u32);
    state.line_count.set(0);
    // A word at a time: most words of a head hold no line end and cost a
    // load and a test. Whole words first, then the partial one, if any.
    state.words_end.set(state.len.get() & !(WORD as u32 - 1));
    let mut p = 0;
    while p < SCAN_BYTES {
        if p >= state.words_end.get() as usize {
            break;
        }
        note_line_ends(state, word_at(buf, p), p);
        p += WORD;
    }
    let tail = state.len.get() as usize & (WORD - 1);
    let p = state.words_end.get() as usize;
    if tail != 0 {
        // Bytes past the end of the payload are stale: zero is no line end.
        note_line_ends(state, word_at(buf, p) & ((1u64 << (8 * tail)) - 1), p);
    }

    let len = state.len.get() as usize;
    state.origins.set(0);
    state.request_methods.set(0);
    state.cross_site.set(0);
    state.folded.set(0);
    if state.line_count.get() == 0 {
        return RequestHead::Incomplete;
    }
    if !request_line_is_http1(
        buf,
        state.line_starts[0] as usize - 1,
        state.method_len.get() as usize,
    ) {
        return RequestHead::NotHttp;
    }
    let mut complete = false;
    // Header lines 0..MAX_HEADER_LINES, then the blank line; each line
    // inspected ends within the window (the next one starts in it).
    let mut line = 0;
    while line < MAX_HEADER_LINES as usize + 1 {
        if line + 1 >= state.line_count.get() as usize {
            break;
        }
        let start = state.line_starts[line] as usize;
        let first = at(buf, start);
        if first == b'\n' || (first == b'\r' && at(buf, start + 1) == b'\n') {
            complete = true;
            break;
        }
        if line == MAX_HEADER_LINES as usize {
            break;
        }
        let folded_first = first | 0x20;
        if first == b' ' || first == b'\t' {
            state.folded.set(1);
        } else if folded_first == b'o'
            && start + ORIGIN_NAME.len() <= len
            && name_at(buf, start, &ORIGIN_PATTERN)
        {
            state.origins.set(state.origins.get() + 1);
            state
                .origin_value_at
                .set((start + ORIGIN_NAME.len()) as u32);
        } else if folded_first == b'a'
            && start + ACRM_NAME.len() <= len
            && name_at(buf, start, &ACRM_PATTERN)
        {
            state.request_methods.set(state.request_methods.get() + 1);
            state
                .request_method_value_at
                .set((start + ACRM_NAME.len()) as u32);
        } else if folded_first == b's'
            && start + SEC_FETCH_SITE_NAME.len() <= len
            && name_at(buf, start, &SEC_FETCH_SITE_PATTERN)
            && value_is_cross_site(buf, start + SEC_FETCH_SITE_NAME.len())
        {
            state.cross_site.set(1);
        }
        line += 1;
    }
    if complete {
        RequestHead::Complete
    } else {
        RequestHead::Incomplete
    }
}

/// The method the (single) `Access-Control-Request-Method` line names;
/// `Other` when there are several, which no server reads as one method.
#[inline(always)]
pub fn requested_method(buf: &[u8; SCAN_BUF_LEN], state: &HeadScan) -> Method {
    if state.request_methods.get() != 1 {
        return Method::Other;
    }
    value_method(buf, state.request_method_value_at.get() as usize)
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::SCAN_BUF_LEN;

    /// `bytes` at the start of a zeroed scan buffer.
    pub fn buf_of(bytes: &[u8]) -> [u8; SCAN_BUF_LEN] {
        let mut buf = [0u8; SCAN_BUF_LEN];
        let n = bytes.len().min(SCAN_BUF_LEN);
        buf[..n].copy_from_slice(&bytes[..n]);
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::buf_of;
    use super::*;
    use std::{format, vec::Vec};

    /// What a preflight's head is, as `inspect` reads the scan.
    #[derive(Debug, PartialEq, Eq)]
    enum Found {
        NotHttp,
        Incomplete,
        NotPreflight,
        Malformed,
        Preflight { origin_value_at: usize },
    }

    fn head(bytes: &[u8]) -> Found {
        let buf = buf_of(bytes);
        let mut state = std::boxed::Box::<HeadScan>::default();
        assert_eq!(
            classify_start(&buf, bytes.len(), &mut state),
            RequestStart::Request(Method::Options)
        );
        match scan_head(&buf, bytes.len(), &mut state) {
            RequestHead::NotHttp => Found::NotHttp,
            RequestHead::Incomplete => Found::Incomplete,
            RequestHead::Complete if state.origins() == 0 || state.request_methods() == 0 => {
                Found::NotPreflight
            }
            RequestHead::Complete if state.origins() > 1 || state.folded() => Found::Malformed,
            RequestHead::Complete => Found::Preflight {
                origin_value_at: state.origin_value_at(),
            },
        }
    }

    const PREFLIGHT: &[u8] = b"OPTIONS /api HTTP/1.1\r\nHost: api.example.com\r\nOrigin: https://app.example.com\r\nAccess-Control-Request-Method: PUT\r\n\r\n";

    #[test]
    fn skips_empty_lines_before_the_request_line() {
        let skip = |bytes: &[u8]| {
            let mut buf = buf_of(bytes);
            let len = skip_empty_lines(&mut buf, bytes.len(), &mut std::boxed::Box::default());
            len.map(|len| buf[..len].to_vec())
        };
        let some = |bytes: &[u8]| Some(bytes.to_vec());
        let request = b"OPTIONS / HTTP/1.1\r\n";
        assert_eq!(skip(request), some(request));
        assert_eq!(skip(&[&b"\r\n\n"[..], request].concat()), some(request));
        assert_eq!(skip(b"\r\n\r"), some(b"\r"));
        assert_eq!(skip(b"\n\r\rGET"), some(b"\r\rGET"));
        assert_eq!(skip(b"\r\n\r\n"), some(b""));
        assert_eq!(skip(b"\r"), some(b"\r"));
        // Line ends filling the window: the request line starts past it.
        let mut full = b"\r\n".repeat(SCAN_BYTES / 2);
        assert_eq!(skip(&full), None);
        full.extend_from_slice(request);
        assert_eq!(skip(&full), None);
        full.truncate(SCAN_BYTES - 1);
        assert_eq!(skip(&full), some(b"\r"));
    }

    #[test]
    fn byte_marks_are_exact_and_positioned() {
        for position in 0..WORD {
            for filler in [0u8, b'\n' ^ 0x80, 0x0b, 0x09, 0xff, b'a'] {
                for byte in 0..=255u8 {
                    let mut bytes = [filler; WORD];
                    bytes[position] = byte;
                    let marks = byte_marks(u64::from_le_bytes(bytes), b'\n');
                    let expected = bytes.iter().enumerate().fold(0u64, |m, (i, &b)| {
                        m | (((b == b'\n') as u64) << (8 * i + 7))
                    });
                    assert_eq!(marks, expected, "{bytes:?}");
                    if byte == b'\n' && filler != b'\n' {
                        assert_eq!(mark_position(marks), position);
                    }
                }
            }
        }
    }

    #[test]
    fn classifies_methods() {
        let c = |b: &[u8]| classify_start(&buf_of(b), b.len(), &mut std::boxed::Box::default());
        let request = RequestStart::Request;
        assert_eq!(c(b"OPTIONS / HTTP/1.1\r\n"), request(Method::Options));
        assert_eq!(c(b"GET / HTTP/1.1\r\n"), request(Method::Get));
        assert_eq!(c(b"POST /"), request(Method::Post));
        assert_eq!(c(b"PATCH /"), request(Method::Patch));
        assert_eq!(c(b"PROPFIND /"), request(Method::Other));
        assert_eq!(c(b"POSTS /"), request(Method::Other));
        assert_eq!(c(b"OPT"), RequestStart::SplitOptions);
        assert_eq!(c(b"OPTIONS"), RequestStart::SplitOptions);
        assert_eq!(c(b"options / HTTP/1.1\r\n"), request(Method::Other));
        assert_eq!(c(b"\x16\x03\x01\x02\x00"), RequestStart::NotHttp);
        assert_eq!(c(b" GET"), RequestStart::NotHttp);
        assert_eq!(c(b""), RequestStart::NotHttp);
        assert_eq!(
            c(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ / HTTP/1.1"),
            RequestStart::NotHttp
        );
    }

    #[test]
    fn finds_preflight_origin() {
        let Found::Preflight { origin_value_at } = head(PREFLIGHT) else {
            panic!("not a preflight");
        };
        assert_eq!(
            &PREFLIGHT[origin_value_at..origin_value_at + 9],
            b" https://"
        );
    }

    #[test]
    fn header_names_are_case_insensitive() {
        let req = b"OPTIONS / HTTP/1.1\r\noRiGiN:https://a.example\r\naccess-control-REQUEST-method:GET\r\n\r\n";
        assert!(matches!(head(req), Found::Preflight { .. }));
    }

    #[test]
    fn bare_lf_line_endings() {
        let req = b"OPTIONS / HTTP/1.1\nOrigin: https://a.example\nAccess-Control-Request-Method: GET\n\n";
        assert!(matches!(head(req), Found::Preflight { .. }));
    }

    #[test]
    fn not_preflight_without_either_header() {
        assert_eq!(
            head(b"OPTIONS / HTTP/1.1\r\nOrigin: https://a.example\r\n\r\n"),
            Found::NotPreflight
        );
        assert_eq!(
            head(b"OPTIONS * HTTP/1.1\r\nAccess-Control-Request-Method: GET\r\n\r\n"),
            Found::NotPreflight
        );
    }

    #[test]
    fn similar_names_do_not_match() {
        let req = b"OPTIONS / HTTP/1.1\r\nX-Origin: https://a\r\nOrigins: x\r\nOrigin : x\r\nAccess-Control-Request-Methods: GET\r\n\r\n";
        assert_eq!(head(req), Found::NotPreflight);
    }

    #[test]
    fn name_matching_is_exact_not_bit_fuzzy() {
        // 'O' | 0x20 == 'o', but '\x0f' | 0x20 == '/': make sure a non-letter
        // byte never folds onto a letter of the pattern.
        let req = b"OPTIONS / HTTP/1.1\r\n\x0frigin: https://a\r\nAccess-Control-Request-Method: GET\r\n\r\n";
        assert_eq!(head(req), Found::NotPreflight);
    }

    #[test]
    fn two_origins_are_malformed() {
        let req = b"OPTIONS / HTTP/1.1\r\nOrigin: https://a.example\r\nAccess-Control-Request-Method: GET\r\norigin: https://b.example\r\n\r\n";
        assert_eq!(head(req), Found::Malformed);
    }

    #[test]
    fn folded_line_in_preflight_is_malformed() {
        let req = b"OPTIONS / HTTP/1.1\r\nOrigin: https://a.example\r\n .evil\r\nAccess-Control-Request-Method: GET\r\n\r\n";
        assert_eq!(head(req), Found::Malformed);
    }

    #[test]
    fn missing_blank_line_is_incomplete() {
        assert_eq!(
            head(b"OPTIONS / HTTP/1.1\r\nOrigin: https://a.example\r\nAccess-Control-Request-Method: GET\r\n"),
            Found::Incomplete
        );
        assert_eq!(
            head(b"OPTIONS / HTTP/1.1\r\nOrigin: https://a.example\r\nAccess-Control-Request-Method: GET\r\n\r"),
            Found::Incomplete
        );
    }

    #[test]
    fn head_longer_than_scan_window_is_incomplete() {
        let mut req: Vec<u8> = b"OPTIONS / HTTP/1.1\r\nOrigin: https://a.example\r\nAccess-Control-Request-Method: GET\r\nX-Pad: ".to_vec();
        req.resize(SCAN_BYTES + 10, b'a');
        req.extend_from_slice(b"\r\n\r\n");
        let buf = buf_of(&req);
        assert_eq!(
            scan_head(&buf, req.len(), &mut std::boxed::Box::<HeadScan>::default()),
            RequestHead::Incomplete
        );
    }

    #[test]
    fn too_many_header_lines_is_incomplete() {
        let with_headers = |n: u32| {
            let mut req = b"OPTIONS / HTTP/1.1\r\n".to_vec();
            for _ in 0..n - 2 {
                req.extend_from_slice(b"A: b\r\n");
            }
            req.extend_from_slice(
                b"Origin: https://a\r\nAccess-Control-Request-Method: GET\r\n\r\n",
            );
            req
        };
        assert!(matches!(
            head(&with_headers(MAX_HEADER_LINES)),
            Found::Preflight { .. }
        ));
        assert_eq!(head(&with_headers(MAX_HEADER_LINES + 1)), Found::Incomplete);
    }

    #[test]
    fn request_line_must_be_http1() {
        assert_eq!(
            head(b"OPTIONS / HTTP/2.0\r\nOrigin: https://a\r\n\r\n"),
            Found::NotHttp
        );
        assert_eq!(
            head(b"OPTIONS /\r\nOrigin: https://a\r\n\r\n"),
            Found::NotHttp
        );
        assert_eq!(
            head(b"OPTIONS / HTTP/1.0\r\nOrigin: https://a\r\nAccess-Control-Request-Method: GET\r\n\r\n"),
            Found::Preflight { origin_value_at: 27 }
        );
    }

    #[test]
    fn header_values_after_at_most_seven_blanks() {
        let method = |value: &str| {
            let line = format!("X:{value}\r\n");
            value_method(&buf_of(line.as_bytes()), 2)
        };
        let cross_site = |value: &str| {
            let line = format!("X:{value}\r\n");
            value_is_cross_site(&buf_of(line.as_bytes()), 2)
        };
        for blanks in 0..=MAX_VALUE_LEAD {
            let lead = &" \t".repeat(4)[..blanks];
            assert_eq!(method(&format!("{lead}PUT")), Method::Put, "{blanks}");
            assert!(cross_site(&format!("{lead}cross-site")), "{blanks}");
        }
        for blanks in [MAX_VALUE_LEAD + 1, MAX_VALUE_LEAD + 2, 20] {
            let lead = " ".repeat(blanks);
            assert_eq!(method(&format!("{lead}PUT")), Method::Other, "{blanks}");
            assert!(!cross_site(&format!("{lead}cross-site")), "{blanks}");
        }
        // The first token decides; case matters for methods only.
        assert_eq!(method(" PUT \t"), Method::Put);
        assert_eq!(method(" PUT, POST"), Method::Other);
        assert_eq!(method(" put"), Method::Other);
        assert_eq!(method(" PUTS"), Method::Other);
        assert_eq!(method(" "), Method::Other);
        assert!(cross_site(" Cross-Site\t"));
        assert!(!cross_site(" cross-sites"));
        assert!(!cross_site(" same-site"));
        assert!(!cross_site(" cross-site, x"));
    }

    #[test]
    fn stale_bytes_past_len_are_ignored() {
        // A previous, longer packet left a full preflight in the buffer.
        let mut buf = buf_of(PREFLIGHT);
        let short = b"OPTIONS / HTTP/1.1\r\nHost: x\r\n";
        buf[..short.len()].copy_from_slice(short);
        assert_eq!(
            scan_head(
                &buf,
                short.len(),
                &mut std::boxed::Box::<HeadScan>::default()
            ),
            RequestHead::Incomplete
        );
    }
}
