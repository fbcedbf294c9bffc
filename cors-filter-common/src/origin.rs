//! Origins: validation, normalisation, and the allowlist key they map to.
//!
//! An origin is `scheme "://" host [ ":" port ]`, or the literal `null`.
//! Normalised, the scheme and host are lower case and a default port (80 for
//! `http`, 443 for `https`) is dropped. Anything else in an `Origin` value (a
//! path, userinfo, a query, whitespace inside, a second value) is malformed.
//!
//! The key puts the scheme and port first and the host *reversed* after
//! them, so a subdomain wildcard is a plain prefix that ends at a dot (see
//! `crate::allow_map` for the lookup):
//!
//! ```text
//! https://app.example.com        ->  "https:///moc.elpmaxe.ppa\0"  (exact: ends in NUL)
//! http://localhost:8080          ->  "http://8080/tsohlacol\0"
//! https://*.example.com          ->  "https:///moc.elpmaxe."       (prefix: ends in '.')
//! null                           ->  "null\0"
//! ```
//!
//! The trailing `.` of a wildcard prefix puts the match on a label boundary:
//! `evil-example.com` reverses to `moc.elpmaxe-live` and `example.com` to
//! `moc.elpmaxe\0`, neither of which starts with `moc.elpmaxe.`.

use crate::{
    allow_map::MAX_WILDCARD_LABELS,
    http::{SCAN_BUF_LEN, SCAN_MASK},
    slot::Slot,
};

/// Longest origin value accepted, without the whitespace around it.
pub const ORIGIN_MAX_LEN: usize = 250;
/// Size of the buffer an `Origin` value is copied into (a power of two).
pub const ORIGIN_RAW_LEN: usize = 256;
const RAW_MASK: usize = ORIGIN_RAW_LEN - 1;
const _: () = assert!(ORIGIN_RAW_LEN.is_power_of_two() && ORIGIN_RAW_LEN >= ORIGIN_MAX_LEN);
/// Bytes of key data: the longest key is `ORIGIN_MAX_LEN + 2`.
pub const ORIGIN_KEY_LEN: usize = 256;
const KEY_MASK: usize = ORIGIN_KEY_LEN - 1;
const _: () = assert!(ORIGIN_KEY_LEN.is_power_of_two() && ORIGIN_KEY_LEN >= ORIGIN_MAX_LEN + 2);
/// Longest port, in digits.
const MAX_PORT_DIGITS: usize = 5;

/// A lookup key (see the module docs); zero past its length where it is
/// stored in an `ALLOWLIST_n` entry.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct OriginKey {
    pub bytes: [u8; ORIGIN_KEY_LEN],
}

impl Default for OriginKey {
    fn default() -> Self {
        Self {
            bytes: [0; ORIGIN_KEY_LEN],
        }
    }
}

/// Value stored with each allowlist entry.
pub mod entry_kind {
    pub const EXACT: u32 = 1;
    pub const WILDCARD: u32 = 2;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: a byte array: no padding, every bit pattern valid.
    unsafe impl aya::Pod for super::OriginKey {}
}

/// Which part of an origin is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OriginPart {
    /// No value at all.
    Empty,
    /// Longer than [`ORIGIN_MAX_LEN`], or no end of line within the scan.
    Length,
    Scheme,
    /// The `://` after the scheme.
    Separator,
    Host,
    Port,
    /// A `\r` not followed by `\n` in the header line.
    LineEnd,
}

/// Why a value is not a valid origin: the part, and the byte offset in the
/// value where it went wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OriginError {
    pub part: OriginPart,
    pub at: usize,
}

impl OriginError {
    const fn new(part: OriginPart, at: usize) -> Self {
        Self { part, at }
    }
}

// The origin syntax as a table-driven automaton: a byte class table and a
// transition table. A loop iteration is two table loads and two stores, with
// no branch on the data: the verifier checks it once per byte instead of
// once per path through a `match`.

// Byte classes.
const C_OTHER: u8 = 0;
const C_LETTER: u8 = 1; // g-z, G-Z
const C_HEX_LETTER: u8 = 2; // a-f, A-F
const C_ZERO: u8 = 3;
const C_DIGIT: u8 = 4; // 1-9
const C_PLUS: u8 = 5;
const C_DASH: u8 = 6;
const C_DOT: u8 = 7;
const C_COLON: u8 = 8;
const C_SLASH: u8 = 9;
const C_OPEN: u8 = 10; // [
const C_CLOSE: u8 = 11; // ]
const C_UNDERSCORE: u8 = 12;
const CLASSES: usize = 16;

// States; the table has room for 16.
const S_SCHEME_FIRST: u8 = 0;
const S_SCHEME: u8 = 1;
const S_SLASH1: u8 = 2; // after "scheme:"
const S_SLASH2: u8 = 3; // after "scheme:/"
const S_HOST_FIRST: u8 = 4; // after "scheme://"
const S_HOST_LABEL: u8 = 5;
const S_HOST_DOT: u8 = 6;
const S_HOST_V6: u8 = 7;
const S_HOST_V6_END: u8 = 8;
const S_PORT_FIRST: u8 = 9;
const S_PORT: u8 = 10;
/// Entered from a valid state on the first bad byte, so its entry offset is
/// where the value went wrong.
const S_ERROR_FIRST: u8 = 11;
const S_ERROR: u8 = 12;
const STATES: usize = 16;
// The parse masks a state with `STATES - 1` and a table index with
// `STATES * CLASSES - 1`; the tables below check that every class and
// state they hold is in range.
const _: () = assert!(STATES.is_power_of_two() && CLASSES.is_power_of_two());
const _: () = assert!((S_ERROR as usize) < STATES && (C_UNDERSCORE as usize) < CLASSES);

const fn byte_class(b: u8) -> u8 {
    match b {
        b'a'..=b'f' | b'A'..=b'F' => C_HEX_LETTER,
        b'g'..=b'z' | b'G'..=b'Z' => C_LETTER,
        b'0' => C_ZERO,
        b'1'..=b'9' => C_DIGIT,
        b'+' => C_PLUS,
        b'-' => C_DASH,
        b'.' => C_DOT,
        b':' => C_COLON,
        b'/' => C_SLASH,
        b'[' => C_OPEN,
        b']' => C_CLOSE,
        b'_' => C_UNDERSCORE,
        _ => C_OTHER,
    }
}

const fn transition(state: u8, class: u8) -> u8 {
    let alpha = class == C_LETTER || class == C_HEX_LETTER;
    let digit = class == C_ZERO || class == C_DIGIT;
    let label = alpha || digit || class == C_DASH || class == C_UNDERSCORE;
    match state {
        S_SCHEME_FIRST if alpha => S_SCHEME,
        S_SCHEME if alpha || digit || class == C_PLUS || class == C_DASH || class == C_DOT => {
            S_SCHEME
        }
        S_SCHEME if class == C_COLON => S_SLASH1,
        S_SLASH1 if class == C_SLASH => S_SLASH2,
        S_SLASH2 if class == C_SLASH => S_HOST_FIRST,
        S_HOST_FIRST if class == C_OPEN => S_HOST_V6,
        S_HOST_FIRST | S_HOST_LABEL | S_HOST_DOT if label => S_HOST_LABEL,
        S_HOST_LABEL if class == C_DOT => S_HOST_DOT,
        S_HOST_LABEL | S_HOST_DOT | S_HOST_V6_END if class == C_COLON => S_PORT_FIRST,
        S_HOST_V6 if class == C_HEX_LETTER || digit || class == C_COLON || class == C_DOT => {
            S_HOST_V6
        }
        S_HOST_V6 if class == C_CLOSE => S_HOST_V6_END,
        // No leading zero: a browser never sends one, and a port must have
        // one spelling in the key.
        S_PORT_FIRST if class == C_DIGIT => S_PORT,
        S_PORT if digit => S_PORT,
        S_ERROR_FIRST | S_ERROR => S_ERROR,
        _ => S_ERROR_FIRST,
    }
}

/// Which part of the origin a state is in.
const fn part_of(state: u8) -> OriginPart {
    match state {
        S_SCHEME_FIRST | S_SCHEME => OriginPart::Scheme,
        S_SLASH1 | S_SLASH2 => OriginPart::Separator,
        S_HOST_FIRST | S_HOST_LABEL | S_HOST_DOT | S_HOST_V6 | S_HOST_V6_END => OriginPart::Host,
        _ => OriginPart::Port,
    }
}

static BYTE_CLASS: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = byte_class(b as u8);
        assert!((table[b] as usize) < CLASSES);
        b += 1;
    }
    table
};

static TRANSITIONS: [u8; STATES * CLASSES] = {
    let mut table = [S_ERROR; STATES * CLASSES];
    let mut state = 0;
    while state < STATES {
        let mut class = 0;
        while class < CLASSES {
            table[state * CLASSES + class] = transition(state as u8, class as u8);
            assert!((table[state * CLASSES + class] as usize) < STATES);
            class += 1;
        }
        state += 1;
    }
    table
};

/// An origin being parsed: its raw value, the positions found in it (kept in
/// [`Slot`]s), and the key built from it.
#[repr(C)]
pub struct OriginParse {
    pub raw: [u8; ORIGIN_RAW_LEN],
    /// The lookup key built by [`normalize`](Self::normalize) (bytes past
    /// its length are stale).
    pub key: OriginKey,
    /// Key length just past each of the first [`MAX_WILDCARD_LABELS`] dots
    /// of the reversed host: where a wildcard entry's prefix may end.
    dot_ends: [u32; MAX_WILDCARD_LABELS],
    dots: Slot<u32>,
    /// Length of the key or prefix being looked up (see `crate::allow_map`).
    pub lookup_len: Slot<u32>,
    /// Offset at which the automaton last entered each state.
    entered_at: [u8; STATES],
    /// State the automaton was in when it last entered each state.
    entered_from: [u8; STATES],
    len: Slot<u32>,
    lead: Slot<u32>,
    scheme_end: Slot<u32>,
    host_start: Slot<u32>,
    host_end: Slot<u32>,
    port_start: Slot<u32>,
    port: Slot<u32>,
    key_len: Slot<u32>,
    /// Loop bound of `build_key`'s copies (see [`Slot`] on loop bounds).
    bound: Slot<u32>,
}

impl Default for OriginParse {
    fn default() -> Self {
        Self {
            raw: [0; ORIGIN_RAW_LEN],
            key: OriginKey::default(),
            dot_ends: [0; MAX_WILDCARD_LABELS],
            dots: Slot::new(0),
            lookup_len: Slot::new(0),
            entered_at: [0; STATES],
            entered_from: [0; STATES],
            len: Slot::new(0),
            lead: Slot::new(0),
            scheme_end: Slot::new(0),
            host_start: Slot::new(0),
            host_end: Slot::new(0),
            port_start: Slot::new(0),
            port: Slot::new(0),
            key_len: Slot::new(0),
            bound: Slot::new(0),
        }
    }
}

#[inline(always)]
const fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

impl OriginParse {
    /// Loads `value` (userspace: a config entry or a CLI argument).
    pub fn load(&mut self, value: &[u8]) -> Result<(), OriginError> {
        if value.len() > ORIGIN_MAX_LEN {
            return Err(OriginError::new(OriginPart::Length, ORIGIN_MAX_LEN));
        }
        self.raw[..value.len()].copy_from_slice(value);
        self.len.set(value.len() as u32);
        Ok(())
    }

    /// Copies the value of the `Origin` header line whose value starts at
    /// `value_at` in `payload` into `raw`, without the optional whitespace
    /// around it. The line must end (`\r\n` or `\n`) within
    /// [`ORIGIN_RAW_LEN`] bytes of the value.
    #[inline(always)]
    pub fn copy_header_value(
        &mut self,
        payload: &[u8; SCAN_BUF_LEN],
        value_at: usize,
    ) -> Result<(), OriginError> {
        self.lead.set(ORIGIN_RAW_LEN as u32);
        let mut k = 0;
        while k < ORIGIN_RAW_LEN {
            if !is_ows(payload[(value_at + k) & SCAN_MASK]) {
                self.lead.set(k as u32);
                break;
            }
            k += 1;
        }
        let lead = self.lead.get() as usize;
        if lead >= ORIGIN_RAW_LEN {
            return Err(OriginError::new(OriginPart::Length, ORIGIN_RAW_LEN));
        }
        let start = value_at + lead;
        self.len.set(0);
        let mut ended = false;
        let mut k = 0;
        while k < ORIGIN_RAW_LEN {
            let b = payload[(start + k) & SCAN_MASK];
            if b == b'\n' {
                ended = true;
                break;
            }
            if b == b'\r' {
                if payload[(start + k + 1) & SCAN_MASK] != b'\n' {
                    return Err(OriginError::new(OriginPart::LineEnd, k));
                }
                ended = true;
                break;
            }
            self.raw[k] = b;
            if !is_ows(b) {
                self.len.set(k as u32 + 1);
            }
            k += 1;
        }
        if !ended {
            return Err(OriginError::new(OriginPart::Length, ORIGIN_RAW_LEN));
        }
        Ok(())
    }

    /// Validates `raw[..len]` as an origin and builds its lookup key in `key`.
    #[inline(always)]
    pub fn normalize(&mut self) -> Result<(), OriginError> {
        let len = self.len.get() as usize;
        if len == 0 {
            return Err(OriginError::new(OriginPart::Empty, 0));
        }
        if len > ORIGIN_MAX_LEN {
            return Err(OriginError::new(OriginPart::Length, ORIGIN_MAX_LEN));
        }
        self.dots.set(0);
        if len == 4
            && self.raw[0] == b'n'
            && self.raw[1] == b'u'
            && self.raw[2] == b'l'
            && self.raw[3] == b'l'
        {
            self.key.bytes[..5].copy_from_slice(b"null\0");
            self.key_len.set(5);
            return Ok(());
        }
        // Only the error states' entries are read unconditionally afterwards.
        self.entered_at[S_ERROR_FIRST as usize] = 0;
        self.entered_from[S_ERROR_FIRST as usize] = S_SCHEME_FIRST;
        let mut state = S_SCHEME_FIRST;
        let mut k = 0;
        while k < ORIGIN_MAX_LEN {
            if k >= self.len.get() as usize {
                break;
            }
            let class = BYTE_CLASS[self.raw[k] as usize];
            let next =
                TRANSITIONS[((state as usize) * CLASSES + class as usize) & (STATES * CLASSES - 1)];
            self.entered_at[next as usize & (STATES - 1)] = k as u8;
            self.entered_from[next as usize & (STATES - 1)] = state;
            state = next;
            k += 1;
        }
        let len = self.len.get() as usize;
        let at = |s: u8| self.entered_at[s as usize] as usize;
        let has_port = match state {
            S_HOST_LABEL | S_HOST_DOT => {
                self.host_end.set(len as u32);
                false
            }
            S_HOST_V6_END => {
                self.host_end.set(at(S_HOST_V6_END) as u32 + 1);
                false
            }
            S_PORT => {
                let colon = at(S_PORT_FIRST);
                if self.entered_from[S_PORT_FIRST as usize] != S_HOST_V6_END {
                    self.host_end.set(colon as u32);
                } else {
                    self.host_end.set(at(S_HOST_V6_END) as u32 + 1);
                }
                self.port_start.set(colon as u32 + 1);
                true
            }
            S_ERROR_FIRST | S_ERROR => {
                let from = self.entered_from[S_ERROR_FIRST as usize];
                return Err(OriginError::new(part_of(from), at(S_ERROR_FIRST)));
            }
            _ => return Err(OriginError::new(part_of(state), len)),
        };
        self.scheme_end.set(at(S_SLASH1) as u32);
        self.host_start.set(at(S_HOST_FIRST) as u32 + 1);
        if has_port && !self.parse_port() {
            return Err(OriginError::new(
                OriginPart::Port,
                self.port_start.get() as usize,
            ));
        }
        self.build_key(has_port);
        Ok(())
    }

    /// Reads the port digits (1 to 5, checked by the automaton except for
    /// their number) into `port`; false when out of range.
    #[inline(always)]
    fn parse_port(&mut self) -> bool {
        let start = self.port_start.get() as usize;
        let digits = self.len.get() as usize - start;
        if digits > MAX_PORT_DIGITS {
            return false;
        }
        self.bound.set(digits as u32);
        let mut port = 0u32;
        let mut k = 0;
        while k < MAX_PORT_DIGITS {
            if k >= self.bound.get() as usize {
                break;
            }
            port = port * 10 + (self.raw[(start + k) & RAW_MASK] - b'0') as u32;
            k += 1;
        }
        self.port.set(port);
        port <= u16::MAX as u32
    }

    /// Writes `scheme "://" [port] "/" reversed-host "\0"` into the key, from
    /// the positions `normalize` found. Offsets are re-read from their slots
    /// after each loop (see [`Slot`] on loop bounds).
    #[inline(always)]
    fn build_key(&mut self, has_port: bool) {
        let default_port = has_port && self.is_default_port(self.scheme_end.get() as usize);
        let mut k = 0;
        while k < ORIGIN_MAX_LEN {
            if k >= self.scheme_end.get() as usize {
                break;
            }
            self.key.bytes[k] = self.raw[k].to_ascii_lowercase();
            k += 1;
        }
        let scheme_end = self.scheme_end.get() as usize;
        let key = &mut self.key.bytes;
        key[scheme_end & KEY_MASK] = b':';
        key[(scheme_end + 1) & KEY_MASK] = b'/';
        key[(scheme_end + 2) & KEY_MASK] = b'/';
        self.key_len.set(scheme_end as u32 + 3);
        if has_port && !default_port {
            let port_start = self.port_start.get() as usize;
            self.bound.set(self.len.get() - port_start as u32);
            let mut k = 0;
            while k < MAX_PORT_DIGITS {
                if k >= self.bound.get() as usize {
                    break;
                }
                let w = self.key_len.get() as usize;
                self.key.bytes[(w + k) & KEY_MASK] = self.raw[(port_start + k) & RAW_MASK];
                k += 1;
            }
            self.key_len.set(self.key_len.get() + self.bound.get());
        }
        let w = self.key_len.get() as usize;
        self.key.bytes[w & KEY_MASK] = b'/';
        self.key_len.set(w as u32 + 1);
        let host_end = self.host_end.get() as usize;
        self.bound.set(self.host_end.get() - self.host_start.get());
        let mut k = 0;
        while k < ORIGIN_MAX_LEN {
            if k >= self.bound.get() as usize {
                break;
            }
            let w = self.key_len.get() as usize;
            let b = self.raw[(host_end.wrapping_sub(1 + k)) & RAW_MASK].to_ascii_lowercase();
            self.key.bytes[(w + k) & KEY_MASK] = b;
            let dots = self.dots.get() as usize;
            if b == b'.' && dots < MAX_WILDCARD_LABELS {
                self.dot_ends[dots & (MAX_WILDCARD_LABELS - 1)] = (w + k + 1) as u32;
                self.dots.set(dots as u32 + 1);
            }
            k += 1;
        }
        let w = (self.key_len.get() + self.bound.get()) as usize;
        self.key.bytes[w & KEY_MASK] = 0;
        self.key_len.set(w as u32 + 1);
    }

    #[inline(always)]
    fn is_default_port(&self, scheme_end: usize) -> bool {
        let r = &self.raw;
        let http = (r[0] | 0x20) == b'h'
            && (r[1] | 0x20) == b't'
            && (r[2] | 0x20) == b't'
            && (r[3] | 0x20) == b'p';
        let port = self.port.get();
        http && ((scheme_end == 4 && port == 80)
            || (scheme_end == 5 && (r[4] | 0x20) == b's' && port == 443))
    }

    /// The key built by the last successful [`normalize`](Self::normalize).
    pub fn key(&self) -> &[u8] {
        &self.key.bytes[..(self.key_len.get() as usize).min(ORIGIN_KEY_LEN)]
    }

    /// Length of the key built by the last successful `normalize`.
    #[inline(always)]
    pub fn key_len(&self) -> usize {
        self.key_len.get() as usize
    }

    /// How many dots of the reversed host `dot_end` knows (at most
    /// [`MAX_WILDCARD_LABELS`]).
    #[inline(always)]
    pub fn dots(&self) -> usize {
        self.dots.get() as usize
    }

    /// The key length just past dot `i` (below [`dots`](Self::dots)) of the
    /// reversed host: the length of the wildcard prefix that would end there.
    #[inline(always)]
    pub fn dot_end(&self, i: usize) -> usize {
        self.dot_ends[i & (MAX_WILDCARD_LABELS - 1)] as usize
    }

    /// The host as it appears in the value (brackets included for IPv6).
    pub fn host(&self) -> &[u8] {
        &self.raw[self.host_start.get() as usize..self.host_end.get() as usize]
    }

    /// Forgets the last value: `value_len` is 0 until one is loaded or
    /// copied, so that a request whose `Origin` is never read does not
    /// report the previous packet's.
    #[inline(always)]
    pub fn clear(&mut self) {
        self.len.set(0);
    }

    /// Takes the first `len` bytes of `raw` as the value (at most
    /// [`ORIGIN_RAW_LEN`]), once they were written there.
    #[inline(always)]
    pub fn set_len(&mut self, len: u32) {
        self.len.set(if len > ORIGIN_RAW_LEN as u32 {
            ORIGIN_RAW_LEN as u32
        } else {
            len
        });
    }

    /// Bytes of `raw` holding the value loaded or copied (0 to
    /// [`ORIGIN_RAW_LEN`]); after a failed copy, the part copied.
    #[inline(always)]
    pub fn value_len(&self) -> u32 {
        self.len.get()
    }

    /// The value as loaded or copied.
    pub fn value(&self) -> &[u8] {
        &self.raw[..self.len.get() as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{borrow::ToOwned, vec::Vec};

    fn key_of(value: &str) -> Result<[u8; ORIGIN_KEY_LEN], OriginError> {
        let mut p = OriginParse::default();
        p.load(value.as_bytes())?;
        p.normalize()?;
        let mut out = [0u8; ORIGIN_KEY_LEN];
        out[..p.key().len()].copy_from_slice(p.key());
        Ok(out)
    }

    fn key_str(value: &str) -> Result<&'static str, OriginError> {
        let k = key_of(value)?;
        let n = k.iter().position(|&b| b == 0).unwrap() + 1;
        Ok(std::str::from_utf8(&k[..n]).unwrap().to_owned().leak())
    }

    #[test]
    fn normalises_case_and_default_ports() {
        assert_eq!(
            key_str("https://App.Example.COM"),
            Ok("https:///moc.elpmaxe.ppa\0")
        );
        assert_eq!(
            key_str("HTTPS://app.example.com:443"),
            Ok("https:///moc.elpmaxe.ppa\0")
        );
        assert_eq!(
            key_str("http://app.example.com:80"),
            Ok("http:///moc.elpmaxe.ppa\0")
        );
        assert_eq!(
            key_str("http://app.example.com:443"),
            Ok("http://443/moc.elpmaxe.ppa\0")
        );
        assert_eq!(
            key_str("https://app.example.com:80"),
            Ok("https://80/moc.elpmaxe.ppa\0")
        );
        assert_eq!(
            key_str("http://localhost:8080"),
            Ok("http://8080/tsohlacol\0")
        );
        assert_eq!(key_str("http://[::1]:3000"), Ok("http://3000/]1::[\0"));
        assert_eq!(key_str("http://127.0.0.1"), Ok("http:///1.0.0.721\0"));
        assert_eq!(
            key_str("chrome-extension://abcdef"),
            Ok("chrome-extension:///fedcba\0")
        );
        assert_eq!(key_str("null"), Ok("null\0"));
    }

    #[test]
    fn rejects_what_is_not_an_origin() {
        let part = |v: &str| key_of(v).unwrap_err().part;
        assert_eq!(part(""), OriginPart::Empty);
        assert_eq!(part("https://a.example/"), OriginPart::Host);
        assert_eq!(part("https://a.example/path"), OriginPart::Host);
        assert_eq!(part("https://user@a.example"), OriginPart::Host);
        assert_eq!(part("https://a.example?q"), OriginPart::Host);
        assert_eq!(part("https://a.example#f"), OriginPart::Host);
        assert_eq!(part("https://a example"), OriginPart::Host);
        assert_eq!(
            part("https://a.example, https://b.example"),
            OriginPart::Host
        );
        assert_eq!(part("https://"), OriginPart::Host);
        assert_eq!(part("https://.a.example"), OriginPart::Host);
        assert_eq!(part("https://a..example"), OriginPart::Host);
        assert_eq!(part("https://[::1"), OriginPart::Host);
        assert_eq!(part("https://[::g]"), OriginPart::Host);
        assert_eq!(part("https:/a.example"), OriginPart::Separator);
        assert_eq!(part("https"), OriginPart::Scheme);
        assert_eq!(part("1http://a"), OriginPart::Scheme);
        assert_eq!(part("ht tp://a"), OriginPart::Scheme);
        assert_eq!(part("https://a.example:"), OriginPart::Port);
        assert_eq!(part("https://a.example:0"), OriginPart::Port);
        assert_eq!(part("https://a.example:080"), OriginPart::Port);
        assert_eq!(part("https://a.example:65536"), OriginPart::Port);
        assert_eq!(part("https://a.example:1x"), OriginPart::Port);
        assert_eq!(part("https://caf\u{e9}.example"), OriginPart::Host);
        assert_eq!(part("Null"), OriginPart::Scheme);
        assert_eq!(part(&"a".repeat(ORIGIN_MAX_LEN + 1)), OriginPart::Length);
        assert!(key_of("https://a.example:65535").is_ok());
    }

    #[test]
    fn longest_origin_fits_the_key() {
        let long = std::format!("https://{}", "a".repeat(ORIGIN_MAX_LEN - 8));
        let k = key_of(&long).unwrap();
        assert_eq!(k[ORIGIN_MAX_LEN + 1], 0);
    }

    fn copy(payload: &[u8], at: usize) -> Result<Vec<u8>, OriginError> {
        let buf = crate::http::tests_support::buf_of(payload);
        let mut p = OriginParse::default();
        p.copy_header_value(&buf, at)?;
        Ok(p.value().to_vec())
    }

    #[test]
    fn copies_value_without_ows() {
        assert_eq!(
            copy(b"Origin: \t https://a.example \t\r\nX", 7).unwrap(),
            b"https://a.example"
        );
        assert_eq!(
            copy(b"Origin:https://a.example\nX", 7).unwrap(),
            b"https://a.example"
        );
        assert_eq!(copy(b"Origin: \r\n", 7).unwrap(), b"");
        assert_eq!(copy(b"Origin: https://a b\r\n", 7).unwrap(), b"https://a b");
        assert_eq!(
            copy(b"Origin: https://a\rb\r\n", 7).unwrap_err().part,
            OriginPart::LineEnd
        );
        let mut long = b"Origin: ".to_vec();
        long.resize(7 + ORIGIN_RAW_LEN + 5, b'a');
        long.extend_from_slice(b"\r\n");
        assert_eq!(copy(&long, 7).unwrap_err().part, OriginPart::Length);
    }
}
