//! The reference the filter is compared with: what a careful HTTP server
//! makes of a request, written independently of the filter's scanner.
//!
//! - The request head is parsed by `httparse`.
//! - An `Origin` value is validated by the common crate's origin rules (the
//!   same rules `allow add` applies), then put in canonical form and matched
//!   against the allowlist here, on plain strings: scheme, host and port
//!   compared as text, a wildcard as a suffix on a label boundary, the most
//!   specific entry giving the methods. The key layout the program looks up
//!   is derived here again from the canonical form, so a slip in either
//!   derivation shows.
//! - Methods are compared as text with the names the filter knows
//!   ([`KNOWN_METHODS`]), case-sensitively (RFC 9110, section 9.1): `post`
//!   is an unknown method. Unsafe = not one of [`SAFE_METHODS`].
//! - A request is judged when it is an `OPTIONS` preflight (`Origin` and
//!   `Access-Control-Request-Method`), or has an unsafe method and goes to a
//!   port that protects them; anything else passes unread.
//! - The filter's documented bounds (README, "Bounds") are applied on top:
//!   they are part of its contract, not an implementation detail. Each is
//!   mirrored where the kernel applies it:
//!   - the scan window, [`SCAN_BYTES`] bytes and [`MAX_HEADER_LINES`]
//!     header lines, the empty lines before the request line counted in the
//!     bytes: a preflight whose head does not end within it is incomplete;
//!     an unsafe request is judged on the whole lines inside it
//!     ([`window_lines`]), and is incomplete only when they hold neither an
//!     `Origin` nor a cross-site `Sec-Fetch-Site`;
//!   - a method token longer than [`MAX_METHOD_LEN`] is not read as a
//!     request at all: it passes;
//!   - at most [`MAX_VALUE_LEAD`] bytes of whitespace before an
//!     `Access-Control-Request-Method` or `Sec-Fetch-Site` value: with more,
//!     an unknown method, not cross-site;
//!   - the `Origin` line's bounds ([`within_origin_line_bounds`]).
//! - A folded header line (obs-fold), which httparse refuses but a server
//!   may unfold, makes a request judged by an `Origin` malformed
//!   ([`judge_folded`]).

use cors_filter_common::{
    http::SCAN_BYTES,
    origin::{ORIGIN_MAX_LEN, ORIGIN_RAW_LEN, OriginParse},
};

// The per-segment scan's bounds, which the common crate no longer has.
const MAX_HEADER_LINES: u32 = 64;
const MAX_METHOD_LEN: usize = 20;
const MAX_VALUE_LEAD: usize = 7;

/// The methods the filter knows by name (the standard ones of RFC 9110 and
/// `PATCH`); any other token is an unknown method, which no entry with
/// `methods` holds.
pub const KNOWN_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Methods that do not change state by definition (RFC 9110, section
/// 9.2.1): never judged as unsafe requests.
pub const SAFE_METHODS: [&str; 4] = ["GET", "HEAD", "OPTIONS", "TRACE"];

/// A method as the reference reads it: a name of [`KNOWN_METHODS`], or
/// `None` for any other token.
pub type MethodName = Option<&'static str>;

/// The known method `token` names exactly, if any.
pub fn method_name(token: &[u8]) -> MethodName {
    KNOWN_METHODS
        .iter()
        .copied()
        .find(|name| name.as_bytes() == token)
}

/// What httparse makes of a request head, with the filter's bounds applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Head {
    /// Passed unread: no request, or not one the filter judges (not
    /// `OPTIONS`; a safe method; an unsafe one to a port that does not
    /// protect them; an `OPTIONS` request that is no preflight).
    NotJudged,
    /// A preflight whose head does not end within the window (or no
    /// request to tell yet), handled by `on_incomplete`; an unsafe request
    /// (`unsafe_request`) whose whole lines inside it decide nothing,
    /// handled by its port's `unsafe_on_incomplete`.
    Incomplete { unsafe_request: bool },
    /// Two `Origin` headers, an `Origin` line past its bounds, or an
    /// `Origin` and a folded line (see [`judge_folded`]), in a preflight or
    /// (`unsafe_request`) an unsafe request.
    Malformed { unsafe_request: bool },
    /// An unsafe request without `Origin` whose `Sec-Fetch-Site` says
    /// `cross-site`; `past_window` when its head goes on past the window.
    CrossSiteNoOrigin { past_window: bool },
    /// An unsafe request with neither `Origin` nor a cross-site
    /// `Sec-Fetch-Site`, its whole head inside the window.
    NoOrigin,
    /// A request judged by its one `Origin` (value without the optional
    /// whitespace) and a method: for a preflight, the one its
    /// `Access-Control-Request-Method` names; for an unsafe request
    /// (`unsafe_request`), its own. `past_window` when the head goes on
    /// past the window (an unsafe request only).
    Judged {
        unsafe_request: bool,
        origin: Vec<u8>,
        method: MethodName,
        past_window: bool,
    },
    /// httparse rejects the head: a server answers 400 whatever the filter
    /// does, so there is no expectation (but see [`judge_folded`]).
    Invalid,
}

/// Room for more headers than the bound, so that going past it is seen,
/// not an error.
const HEADER_ROOM: usize = 4 * MAX_HEADER_LINES as usize;

/// httparse's reading of `payload`, the start of a TCP segment, to a port
/// that protects unsafe methods (`protects_unsafe`) or not.
pub fn expected_head(payload: &[u8], protects_unsafe: bool) -> Head {
    // The empty lines httparse skips before a request line count in the
    // scan window: when line ends fill it, the request line (if any) starts
    // past the bound.
    if payload.len() >= SCAN_BYTES
        && payload[..SCAN_BYTES]
            .iter()
            .all(|&b| b == b'\r' || b == b'\n')
    {
        return Head::Incomplete {
            unsafe_request: false,
        };
    }
    let mut headers = [httparse::EMPTY_HEADER; HEADER_ROOM];
    let mut request = httparse::Request::new(&mut headers);
    let parsed = request.parse(payload);
    let Some(method) = request.method else {
        return match parsed {
            // A request line cut before its method ends: OPTIONS only if
            // what is there (after the empty lines httparse skips) could
            // still become "OPTIONS ".
            Ok(httparse::Status::Partial) => {
                let start = after_empty_lines(payload);
                if !start.is_empty() && b"OPTIONS ".starts_with(start) {
                    Head::Incomplete {
                        unsafe_request: false,
                    }
                } else {
                    Head::NotJudged
                }
            }
            _ => Head::Invalid,
        };
    };
    let preflight = method == "OPTIONS";
    let judged_unsafe =
        protects_unsafe && !SAFE_METHODS.contains(&method) && method.len() <= MAX_METHOD_LEN;
    if !preflight && !judged_unsafe {
        return Head::NotJudged;
    }
    let head_len = match parsed {
        Err(_) => return judge_folded(payload, preflight),
        Ok(httparse::Status::Partial) => None,
        Ok(httparse::Status::Complete(len)) => Some(len),
    };
    let whole = head_len.is_some_and(|len| len <= SCAN_BYTES)
        && request.headers.len() <= MAX_HEADER_LINES as usize;
    if preflight {
        return if whole {
            judge_preflight(payload, request.headers)
        } else {
            Head::Incomplete {
                unsafe_request: false,
            }
        };
    }
    let method = method_name(method.as_bytes());
    if whole {
        return judge_unsafe(payload, request.headers, method, false);
    }
    let Some(lines) = window_lines(payload) else {
        // The request line itself does not end inside the window.
        return Head::Incomplete {
            unsafe_request: true,
        };
    };
    let mut headers = [httparse::EMPTY_HEADER; HEADER_ROOM];
    let mut cut = httparse::Request::new(&mut headers);
    match cut.parse(&lines) {
        Ok(httparse::Status::Complete(_)) => judge_unsafe(&lines, cut.headers, method, true),
        // httparse read these very lines in the payload without error.
        other => panic!(
            "the whole lines of a head httparse read do not parse again: {other:?}\n  b\"{}\"",
            lines.escape_ascii()
        ),
    }
}

/// Whether a header line is a continuation of the one before (obs-fold).
fn is_folded(line: &[u8]) -> bool {
    matches!(line.first(), Some(b' ' | b'\t'))
}

/// A head httparse refuses, of a preflight (`preflight`) or an unsafe
/// request to a port that protects them. A server may refuse obs-fold, as
/// httparse does, or replace it with spaces (RFC 9112, section 5.2): then
/// it reads header values the filter did not. So when httparse refuses the
/// head for its folds alone (the head unfolded parses), the filter must
/// refuse, as malformed, a request it would judge by an `Origin` and whose
/// lines it reads hold a fold; with no `Origin` there, the server's
/// choice decides (no expectation), and so it does for a fold the filter
/// does not read. A preflight whose head does not end within the window
/// is incomplete, folds or not. Anything else httparse refuses has no
/// expectation.
fn judge_folded(payload: &[u8], preflight: bool) -> Head {
    let head = after_empty_lines(payload);
    // Bytes of `head` inside the window, which counts the empty lines.
    let window = SCAN_BYTES.saturating_sub(payload.len() - head.len());
    let mut lines: Vec<&[u8]> = Vec::new();
    let (mut at, mut head_end) = (0, None);
    while let Some(n) = head[at..].iter().position(|&b| b == b'\n') {
        let line = &head[at..at + n + 1];
        at += n + 1;
        if !lines.is_empty() && (line == b"\n" || line == b"\r\n") {
            head_end = Some(at);
            break;
        }
        lines.push(line);
    }
    let Some((request_line, fields)) = lines.split_first() else {
        return Head::Invalid;
    };
    // Whitespace before the first header line is no fold: a server
    // refuses it or drops the line (RFC 9112, section 2.2).
    if fields.first().is_none_or(|line| is_folded(line))
        || !fields.iter().any(|line| is_folded(line))
    {
        return Head::Invalid;
    }
    let mut unfolded = request_line.to_vec();
    for line in fields {
        if is_folded(line) {
            // The line end before the fold, `\n` or `\r\n`, becomes a space.
            unfolded.pop();
            unfolded.pop_if(|b| *b == b'\r');
            unfolded.push(b' ');
        }
        unfolded.extend_from_slice(line);
    }
    if head_end.is_none() {
        // What follows the last whole line must be valid too, as far as
        // it goes.
        let mut headers = [httparse::EMPTY_HEADER; HEADER_ROOM];
        let mut request = httparse::Request::new(&mut headers);
        if request
            .parse(&[&unfolded[..], &head[at..]].concat())
            .is_err()
        {
            return Head::Invalid;
        }
    }
    unfolded.extend_from_slice(b"\r\n");
    let mut headers = [httparse::EMPTY_HEADER; HEADER_ROOM];
    let mut request = httparse::Request::new(&mut headers);
    if !matches!(request.parse(&unfolded), Ok(httparse::Status::Complete(_))) {
        return Head::Invalid;
    }
    // The header lines the filter reads: those that end inside the
    // window, at most MAX_HEADER_LINES of them (a fold counts as a line).
    let mut end = request_line.len();
    let read: Vec<&[u8]> = fields
        .iter()
        .take(MAX_HEADER_LINES as usize)
        .take_while(|line| {
            end += line.len();
            end <= window
        })
        .copied()
        .collect();
    let whole =
        head_end.is_some_and(|end| end <= window) && fields.len() <= MAX_HEADER_LINES as usize;
    if preflight && !whole {
        return Head::Incomplete {
            unsafe_request: false,
        };
    }
    if !read.iter().any(|line| is_folded(line)) {
        return Head::Invalid;
    }
    // Each line that is no fold starts a header of the unfolded head.
    let read_headers = &request.headers[..read.iter().filter(|l| !is_folded(l)).count()];
    let origins = named(read_headers, "origin").count();
    let requested = named(read_headers, "access-control-request-method").count();
    match (preflight, origins, requested) {
        (true, 0, _) | (true, _, 0) => Head::NotJudged,
        (true, _, _) => Head::Malformed {
            unsafe_request: false,
        },
        (false, 0, _) => Head::Invalid,
        (false, _, _) => Head::Malformed {
            unsafe_request: true,
        },
    }
}

/// The head the filter judges an unsafe request on when its head goes on
/// past the window: the request line and the header lines (at most
/// [`MAX_HEADER_LINES`]) that end within the first [`SCAN_BYTES`] bytes of
/// `payload` (the empty lines before the request line counted in them, as
/// the filter counts them), ended by a blank line for httparse. `None`
/// when the request line does not end within them.
fn window_lines(payload: &[u8]) -> Option<Vec<u8>> {
    let window = &payload[..payload.len().min(SCAN_BYTES)];
    let head = after_empty_lines(window);
    let end = head
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'\n')
        .map(|(at, _)| at + 1)
        .take(1 + MAX_HEADER_LINES as usize)
        .last()?;
    let mut lines = head[..end].to_vec();
    lines.extend_from_slice(b"\r\n");
    Some(lines)
}

fn named<'h, 'b>(
    headers: &'h [httparse::Header<'b>],
    name: &'h str,
) -> impl Iterator<Item = &'b [u8]> + 'h {
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

/// A complete `OPTIONS` head (`headers` parsed from `buf`).
fn judge_preflight(buf: &[u8], headers: &[httparse::Header]) -> Head {
    let origins: Vec<&[u8]> = named(headers, "origin").collect();
    let requested: Vec<&[u8]> = named(headers, "access-control-request-method").collect();
    match (origins.as_slice(), requested.as_slice()) {
        ([], _) | (_, []) => Head::NotJudged,
        ([origin], requested) if within_origin_line_bounds(buf, origin) => Head::Judged {
            unsafe_request: false,
            origin: origin.to_vec(),
            // Several values are no one method a server would read.
            method: match requested {
                [value] => first_token(buf, value).and_then(method_name),
                _ => None,
            },
            past_window: false,
        },
        _ => Head::Malformed {
            unsafe_request: false,
        },
    }
}

/// The head (`headers` parsed from `buf`) of an unsafe request with method
/// `method`; `past_window` when it is the part inside the window of a head
/// that goes on.
fn judge_unsafe(
    buf: &[u8],
    headers: &[httparse::Header],
    method: MethodName,
    past_window: bool,
) -> Head {
    let origins: Vec<&[u8]> = named(headers, "origin").collect();
    match origins.as_slice() {
        [] if named(headers, "sec-fetch-site").any(|value| {
            first_token(buf, value).is_some_and(|t| t.eq_ignore_ascii_case(b"cross-site"))
        }) =>
        {
            Head::CrossSiteNoOrigin { past_window }
        }
        // The lines past the window may hold either header.
        [] if past_window => Head::Incomplete {
            unsafe_request: true,
        },
        [] => Head::NoOrigin,
        [origin] if within_origin_line_bounds(buf, origin) => Head::Judged {
            unsafe_request: true,
            origin: origin.to_vec(),
            method,
            past_window,
        },
        _ => Head::Malformed {
            unsafe_request: true,
        },
    }
}

/// `payload` without the empty lines (`\r\n` or `\n`) at its start, which
/// servers ignore before a request line (RFC 9112, section 2.2).
fn after_empty_lines(mut payload: &[u8]) -> &[u8] {
    while let Some(rest) = payload
        .strip_prefix(b"\r\n")
        .or_else(|| payload.strip_prefix(b"\n"))
    {
        payload = rest;
    }
    payload
}

/// Bytes of whitespace between the colon of a header line and its value
/// (`value` is httparse's slice of `buf`, which starts after them).
fn whitespace_before(buf: &[u8], value: &[u8]) -> usize {
    let start = value.as_ptr() as usize - buf.as_ptr() as usize;
    let colon = buf[..start]
        .iter()
        .rposition(|&b| b == b':')
        .expect("a header value follows a colon");
    start - colon - 1
}

/// The first token of a header value (ended by a space or a tab; httparse
/// ends the value at the line end), or `None` when more than the
/// documented [`MAX_VALUE_LEAD`] bytes of whitespace come before it.
fn first_token<'v>(buf: &[u8], value: &'v [u8]) -> Option<&'v [u8]> {
    if whitespace_before(buf, value) > MAX_VALUE_LEAD {
        return None;
    }
    value.split(|&b| b == b' ' || b == b'\t').next()
}

/// The documented bound on an `Origin` line: its optional whitespace before
/// the value is shorter than [`ORIGIN_RAW_LEN`] bytes, and the value with
/// the whitespace after it ends the line within `ORIGIN_RAW_LEN - 1` bytes.
/// `value` is httparse's slice of `buf`.
fn within_origin_line_bounds(buf: &[u8], value: &[u8]) -> bool {
    let start = value.as_ptr() as usize - buf.as_ptr() as usize;
    let line_end = start
        + buf[start..]
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .expect("a parsed header line ends");
    value.is_empty()
        || (whitespace_before(buf, value) < ORIGIN_RAW_LEN && line_end - start < ORIGIN_RAW_LEN)
}

/// An origin in canonical form: scheme and host in lower case, the default
/// port of the scheme dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Canonical {
    Null,
    Tuple {
        scheme: String,
        host: String,
        port: Option<u16>,
    },
}

/// `value` in canonical form, or `None` when it is not an origin by the
/// common crate's rules.
pub fn canonical_origin(value: &[u8]) -> Option<Canonical> {
    if value.len() > ORIGIN_MAX_LEN {
        return None;
    }
    let mut parse = OriginParse::default();
    parse.load(value).ok()?;
    parse.normalize().ok()?;
    if value == b"null" {
        return Some(Canonical::Null);
    }
    let text = std::str::from_utf8(value).ok()?.to_ascii_lowercase();
    let (scheme, authority) = text.split_once("://")?;
    let (host, port) = match authority.rfind(':') {
        Some(colon) if !authority[colon..].contains(']') => (
            &authority[..colon],
            Some(authority[colon + 1..].parse::<u16>().ok()?),
        ),
        _ => (authority, None),
    };
    let default = match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    };
    Some(Canonical::Tuple {
        scheme: scheme.to_owned(),
        host: host.to_owned(),
        port: port.filter(|p| Some(*p) != default),
    })
}

impl Canonical {
    /// The allowlist key the program looks this origin up with:
    /// `scheme "://" [port] "/" reversed-host "\0"`, or `null\0`.
    pub fn lpm_key(&self) -> Vec<u8> {
        match self {
            Canonical::Null => b"null\0".to_vec(),
            Canonical::Tuple { scheme, host, port } => {
                let port = port.map(|p| p.to_string()).unwrap_or_default();
                let reversed: String = host.chars().rev().collect();
                format!("{scheme}://{port}/{reversed}\0").into_bytes()
            }
        }
    }
}

/// An allowlist entry as a config file lists it: an origin or wildcard,
/// and the methods it is restricted to (`None`: any method).
#[derive(Clone, Copy, Debug)]
pub struct Listed {
    pub origin: &'static str,
    pub methods: Option<&'static [&'static str]>,
}

impl Listed {
    /// An entry allowing any method.
    pub const fn any_method(origin: &'static str) -> Listed {
        Listed {
            origin,
            methods: None,
        }
    }

    /// An entry restricted to `methods`.
    pub const fn only(origin: &'static str, methods: &'static [&'static str]) -> Listed {
        Listed {
            origin,
            methods: Some(methods),
        }
    }

    /// The entry as an item of a config file's `allow` array.
    pub fn config_item(&self) -> String {
        match self.methods {
            None => format!("{:?}", self.origin),
            Some(methods) => format!("{{ origin = {:?}, methods = {methods:?} }}", self.origin),
        }
    }
}

/// What the allowlist allows an origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Allowed {
    /// Not listed.
    Not,
    /// Listed without `methods`: any method, unknown ones included.
    AnyMethod,
    /// Listed with these methods (names of [`KNOWN_METHODS`]).
    Only(Vec<&'static str>),
}

impl Allowed {
    /// Whether a request judged by `method` is allowed.
    pub fn allows(&self, method: MethodName) -> bool {
        match self {
            Allowed::Not => false,
            Allowed::AnyMethod => true,
            Allowed::Only(names) => method.is_some_and(|m| names.contains(&m)),
        }
    }
}

/// What an allowlist entry matches.
#[derive(Clone, Debug)]
enum Pattern {
    Exact(Canonical),
    Wildcard {
        scheme: String,
        suffix: String,
        port: Option<u16>,
    },
}

/// An allowlist, matched the way its documentation says.
#[derive(Clone, Debug)]
pub struct Allowlist {
    entries: Vec<(Pattern, Allowed)>,
}

impl Allowlist {
    /// Entries as a config file lists them. Panics on an entry that is not
    /// valid: the tests choose their allowlists.
    pub fn new(entries: &[Listed]) -> Allowlist {
        let entries = entries
            .iter()
            .map(|listed| {
                let text = listed.origin;
                let pattern = if let Some((scheme, rest)) = text.split_once("://*.") {
                    let exact = format!("{scheme}://{rest}");
                    let Some(Canonical::Tuple { scheme, host, port }) =
                        canonical_origin(exact.as_bytes())
                    else {
                        panic!("invalid wildcard entry {text}");
                    };
                    Pattern::Wildcard {
                        scheme,
                        suffix: host,
                        port,
                    }
                } else {
                    Pattern::Exact(
                        canonical_origin(text.as_bytes())
                            .unwrap_or_else(|| panic!("invalid entry {text}")),
                    )
                };
                let allowed = match listed.methods {
                    None => Allowed::AnyMethod,
                    Some(methods) => Allowed::Only(
                        methods
                            .iter()
                            .map(|m| {
                                method_name(m.as_bytes())
                                    .unwrap_or_else(|| panic!("{text}: unknown method {m}"))
                            })
                            .collect(),
                    ),
                };
                (pattern, allowed)
            })
            .collect();
        Allowlist { entries }
    }

    /// What the most specific entry holding `origin` allows: its exact
    /// entry, else the wildcard with the longest suffix that holds it.
    pub fn allowed(&self, origin: &Canonical) -> Allowed {
        let exact = self.entries.iter().find_map(|(pattern, allowed)| {
            matches!(pattern, Pattern::Exact(exact) if exact == origin).then_some(allowed)
        });
        let wildcard = || {
            self.entries
                .iter()
                .filter_map(|(pattern, allowed)| match (pattern, origin) {
                    (
                        Pattern::Wildcard {
                            scheme,
                            suffix,
                            port,
                        },
                        Canonical::Tuple {
                            scheme: s,
                            host,
                            port: p,
                        },
                    ) if scheme == s
                        && port == p
                        && host
                            .strip_suffix(suffix.as_str())
                            .is_some_and(|label| label.len() > 1 && label.ends_with('.')) =>
                    {
                        Some((suffix.len(), allowed))
                    }
                    _ => None,
                })
                .max_by_key(|(suffix_len, _)| *suffix_len)
                .map(|(_, allowed)| allowed)
        };
        exact.or_else(wildcard).cloned().unwrap_or(Allowed::Not)
    }

    pub fn allows(&self, origin: &Canonical) -> bool {
        self.allowed(origin) != Allowed::Not
    }
}

/// The outcome a careful server's parser leads to, in the filter's terms.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Expected {
    /// Passed unread (`pass_not_preflight`, or `pass_not_http`: the filter
    /// need not tell a request it does not judge from no request).
    NotJudged,
    /// Incomplete, handled by `on_incomplete`.
    Incomplete,
    /// Incomplete, an unsafe request's: handled by its port's
    /// `unsafe_on_incomplete`.
    UnsafeIncomplete,
    Malformed,
    Allowed,
    Denied,
    MethodDenied,
    UnsafeAllowed,
    UnsafeDenied,
    UnsafeMalformed,
    UnsafeMethodDenied,
    CrossSiteNoOrigin,
    NoOrigin,
    /// No expectation (see [`Head::Invalid`]).
    Invalid,
}

impl Expected {
    /// Every expectation.
    pub const ALL: [Expected; 14] = [
        Expected::NotJudged,
        Expected::Incomplete,
        Expected::UnsafeIncomplete,
        Expected::Malformed,
        Expected::Allowed,
        Expected::Denied,
        Expected::MethodDenied,
        Expected::UnsafeAllowed,
        Expected::UnsafeDenied,
        Expected::UnsafeMalformed,
        Expected::UnsafeMethodDenied,
        Expected::CrossSiteNoOrigin,
        Expected::NoOrigin,
        Expected::Invalid,
    ];

    /// Whether the program's `reason` (a counter name, as `replay` prints
    /// it: the detail counter where the outcome has one) is this outcome.
    /// `malformed` and `method_deny` name a preflight's outcome and an
    /// unsafe request's alike.
    pub fn accepts(self, reason: &str) -> bool {
        match self {
            Expected::NotJudged => matches!(reason, "pass_not_preflight" | "pass_not_http"),
            Expected::Incomplete | Expected::UnsafeIncomplete => reason == "incomplete",
            Expected::Malformed | Expected::UnsafeMalformed => reason == "malformed",
            Expected::Allowed => reason == "preflight_allow",
            Expected::Denied => reason == "preflight_deny",
            Expected::MethodDenied | Expected::UnsafeMethodDenied => reason == "method_deny",
            Expected::UnsafeAllowed => reason == "unsafe_allow",
            Expected::UnsafeDenied => reason == "unsafe_deny",
            Expected::CrossSiteNoOrigin => reason == "cross_site",
            Expected::NoOrigin => reason == "no_origin",
            Expected::Invalid => true,
        }
    }

    /// Whether the parsing code's outcome is this one.
    pub fn matches(self, outcome: cors_filter_common::Outcome) -> bool {
        use cors_filter_common::Outcome as O;
        match self {
            Expected::NotJudged => matches!(outcome, O::NotPreflight | O::NotHttp),
            Expected::Incomplete | Expected::UnsafeIncomplete => outcome == O::Incomplete,
            Expected::Malformed => outcome == O::Malformed,
            Expected::Allowed => outcome == O::Allowed,
            Expected::Denied => outcome == O::Denied,
            Expected::MethodDenied => outcome == O::MethodDenied,
            Expected::UnsafeAllowed => outcome == O::UnsafeAllowed,
            Expected::UnsafeDenied => outcome == O::UnsafeDenied,
            Expected::UnsafeMalformed => outcome == O::UnsafeMalformed,
            Expected::UnsafeMethodDenied => outcome == O::UnsafeMethodDenied,
            Expected::CrossSiteNoOrigin => outcome == O::CrossSiteNoOrigin,
            Expected::NoOrigin => outcome == O::NoOrigin,
            Expected::Invalid => true,
        }
    }

    /// Whether the request is refused (dropped in enforce mode) whatever
    /// the settings say of incomplete heads.
    pub fn is_denial(self) -> bool {
        matches!(
            self,
            Expected::Malformed
                | Expected::Denied
                | Expected::MethodDenied
                | Expected::UnsafeDenied
                | Expected::UnsafeMalformed
                | Expected::UnsafeMethodDenied
                | Expected::CrossSiteNoOrigin
        )
    }
}

impl Head {
    /// The expected outcome when the allowlist answers `allowed` for the
    /// origin judged.
    pub fn expected(&self, allowed: impl FnOnce(&Canonical) -> Allowed) -> Expected {
        let malformed = |unsafe_request| {
            if unsafe_request {
                Expected::UnsafeMalformed
            } else {
                Expected::Malformed
            }
        };
        match self {
            Head::NotJudged => Expected::NotJudged,
            Head::Incomplete {
                unsafe_request: false,
            } => Expected::Incomplete,
            Head::Incomplete {
                unsafe_request: true,
            } => Expected::UnsafeIncomplete,
            Head::Invalid => Expected::Invalid,
            Head::Malformed { unsafe_request } => malformed(*unsafe_request),
            Head::CrossSiteNoOrigin { .. } => Expected::CrossSiteNoOrigin,
            Head::NoOrigin => Expected::NoOrigin,
            Head::Judged {
                unsafe_request,
                origin,
                method,
                ..
            } => {
                let Some(canonical) = canonical_origin(origin) else {
                    return malformed(*unsafe_request);
                };
                match (allowed(&canonical), *unsafe_request) {
                    (Allowed::Not, false) => Expected::Denied,
                    (Allowed::Not, true) => Expected::UnsafeDenied,
                    (allowed, false) if allowed.allows(*method) => Expected::Allowed,
                    (allowed, true) if allowed.allows(*method) => Expected::UnsafeAllowed,
                    (_, false) => Expected::MethodDenied,
                    (_, true) => Expected::UnsafeMethodDenied,
                }
            }
        }
    }
}

/// The expected outcome of a TCP payload (not empty) to an inspected port
/// that protects unsafe methods (`protects_unsafe`) or not.
pub fn expected(payload: &[u8], protects_unsafe: bool, allowlist: &Allowlist) -> Expected {
    expected_head(payload, protects_unsafe).expected(|origin| allowlist.allowed(origin))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFLIGHT: &str =
        "OPTIONS / HTTP/1.1\r\nOrigin: {}\r\nAccess-Control-Request-Method: PUT\r\n\r\n";

    fn preflight(origin: &str) -> Vec<u8> {
        PREFLIGHT.replace("{}", origin).into_bytes()
    }

    fn incomplete(unsafe_request: bool) -> Head {
        Head::Incomplete { unsafe_request }
    }

    fn judged(unsafe_request: bool, origin: &str, method: MethodName) -> Head {
        Head::Judged {
            unsafe_request,
            origin: origin.as_bytes().to_vec(),
            method,
            past_window: false,
        }
    }

    #[test]
    fn canonical_forms() {
        let tuple = |s: &str, h: &str, p: Option<u16>| Canonical::Tuple {
            scheme: s.into(),
            host: h.into(),
            port: p,
        };
        let c = |v: &str| canonical_origin(v.as_bytes());
        assert_eq!(
            c("HTTPS://A.Example:443"),
            Some(tuple("https", "a.example", None))
        );
        assert_eq!(
            c("http://a.example:443"),
            Some(tuple("http", "a.example", Some(443)))
        );
        assert_eq!(
            c("http://[::1]:3000"),
            Some(tuple("http", "[::1]", Some(3000)))
        );
        assert_eq!(c("http://[::1]"), Some(tuple("http", "[::1]", None)));
        assert_eq!(c("null"), Some(Canonical::Null));
        assert_eq!(c("https://a.example/"), None);
        assert_eq!(c("NULL"), None);
        assert_eq!(
            c("http://[::1]:3000").unwrap().lpm_key(),
            b"http://3000/]1::[\0"
        );
    }

    #[test]
    fn allowlist_semantics() {
        let list = Allowlist::new(&[
            Listed::any_method("https://*.example.org"),
            Listed::any_method("http://localhost:8080"),
            Listed::any_method("null"),
        ]);
        let allows = |v: &str| list.allows(&canonical_origin(v.as_bytes()).unwrap());
        assert!(allows("https://a.example.org"));
        assert!(allows("https://a.b.EXAMPLE.org:443"));
        assert!(!allows("https://example.org"));
        assert!(!allows("https://xexample.org"));
        assert!(!allows("https://evil-example.org"));
        assert!(!allows("http://a.example.org"));
        assert!(!allows("https://a.example.org:8443"));
        assert!(allows("http://localhost:8080"));
        assert!(!allows("http://localhost"));
        assert!(allows("null"));
    }

    #[test]
    fn the_most_specific_entry_gives_the_methods() {
        let list = Allowlist::new(&[
            Listed::only("https://*.example.org", &["GET"]),
            Listed::only("https://*.api.example.org", &["POST", "PUT"]),
            Listed::any_method("https://a.api.example.org"),
        ]);
        let allowed = |v: &str| list.allowed(&canonical_origin(v.as_bytes()).unwrap());
        assert_eq!(allowed("https://x.example.org"), Allowed::Only(vec!["GET"]));
        assert_eq!(
            allowed("https://b.api.example.org"),
            Allowed::Only(vec!["POST", "PUT"])
        );
        assert_eq!(allowed("https://a.api.example.org"), Allowed::AnyMethod);
        assert_eq!(allowed("https://example.org"), Allowed::Not);
        assert!(Allowed::AnyMethod.allows(None));
        assert!(!Allowed::Only(vec!["GET"]).allows(None));
        assert!(!Allowed::Only(vec!["GET"]).allows(Some("POST")));
    }

    #[test]
    fn config_items() {
        assert_eq!(
            Listed::any_method("https://a.example").config_item(),
            "\"https://a.example\""
        );
        assert_eq!(
            Listed::only("https://a.example", &["GET", "POST"]).config_item(),
            "{ origin = \"https://a.example\", methods = [\"GET\", \"POST\"] }"
        );
    }

    #[test]
    fn heads() {
        let head = |payload: &[u8]| expected_head(payload, true);
        assert_eq!(
            head(&preflight("https://a")),
            judged(false, "https://a", Some("PUT"))
        );
        assert_eq!(head(b"OPT"), incomplete(false));
        assert_eq!(head(b"\r\n\nOPT"), incomplete(false));
        assert_eq!(head(b"\r\n"), Head::NotJudged);
        let padded = [&b"\r\n".repeat(SCAN_BYTES / 2)[..], &preflight("null")].concat();
        assert_eq!(head(&padded), incomplete(false));
        assert_eq!(
            head(&[b"\r\n".as_slice(), &preflight("null")].concat()),
            judged(false, "null", Some("PUT"))
        );
        assert_eq!(
            head(b"OPTIONS / HTTP/1.1\r\nOrigin: x\r\n"),
            incomplete(false)
        );
        assert_eq!(head(b"GET / HTTP/1.1\r\nOrigin: x\r\n"), Head::NotJudged);
        assert_eq!(head(b"GE"), Head::NotJudged);
        assert_eq!(
            head(b"OPTIONS / HTTP/1.1\r\nOrigin : x\r\n\r\n"),
            Head::Invalid
        );
        let two = b"OPTIONS / HTTP/1.1\r\nOrigin: a\r\norigin: a\r\nAccess-Control-Request-Method: PUT\r\n\r\n";
        assert_eq!(
            head(two),
            Head::Malformed {
                unsafe_request: false
            }
        );
        let long = preflight(&format!("https://{}", "a".repeat(300)));
        assert_eq!(
            head(&long),
            Head::Malformed {
                unsafe_request: false
            }
        );
    }

    #[test]
    fn requested_methods() {
        let method = |acrm: &str| {
            let payload = format!(
                "OPTIONS / HTTP/1.1\r\nOrigin: https://a\r\nAccess-Control-Request-Method:{acrm}\r\n\r\n"
            );
            match expected_head(payload.as_bytes(), false) {
                Head::Judged { method, .. } => method,
                other => panic!("{acrm:?}: {other:?}"),
            }
        };
        assert_eq!(method(" PATCH"), Some("PATCH"));
        assert_eq!(method("DELETE \t"), Some("DELETE"));
        assert_eq!(
            method(&format!("{}PUT", " ".repeat(MAX_VALUE_LEAD))),
            Some("PUT")
        );
        assert_eq!(
            method(&format!("{}PUT", " ".repeat(MAX_VALUE_LEAD + 1))),
            None
        );
        assert_eq!(method(" PUT x"), Some("PUT"));
        assert_eq!(method(" put"), None);
        assert_eq!(method(" PUT,DELETE"), None);
        assert_eq!(method(""), None);
        assert_eq!(method(" PUT\r\nAccess-Control-Request-Method: PUT"), None);
    }

    #[test]
    fn unsafe_requests() {
        let head = |request: &str, protects: bool| expected_head(request.as_bytes(), protects);
        let post = |headers: &str| format!("POST /f HTTP/1.1\r\nHost: h\r\n{headers}\r\na=1");
        let origin = post("Origin: https://a\r\n");
        assert_eq!(head(&origin, true), judged(true, "https://a", Some("POST")));
        assert_eq!(head(&origin, false), Head::NotJudged);
        let custom = origin.replacen("POST", "post", 1);
        assert_eq!(head(&custom, true), judged(true, "https://a", None));
        let long_method = origin.replacen("POST", &"P".repeat(MAX_METHOD_LEN + 1), 1);
        assert_eq!(head(&long_method, true), Head::NotJudged);
        for method in SAFE_METHODS.iter().filter(|m| **m != "OPTIONS") {
            assert_eq!(
                head(&origin.replacen("POST", method, 1), true),
                Head::NotJudged
            );
        }
        assert_eq!(
            head(&post("Origin: https://a\r\nOrigin: https://a\r\n"), true),
            Head::Malformed {
                unsafe_request: true
            }
        );
        let cross_site = Head::CrossSiteNoOrigin { past_window: false };
        assert_eq!(
            head(&post("Sec-Fetch-Site: CROSS-site\r\n"), true),
            cross_site
        );
        assert_eq!(
            head(&post("Sec-Fetch-Site:\t cross-site x\r\n"), true),
            cross_site
        );
        let far = format!(
            "Sec-Fetch-Site:{}cross-site\r\n",
            " ".repeat(MAX_VALUE_LEAD + 1)
        );
        assert_eq!(head(&post(&far), true), Head::NoOrigin);
        assert_eq!(
            head(&post("Sec-Fetch-Site: cross-sites\r\n"), true),
            Head::NoOrigin
        );
        assert_eq!(head(&post(""), true), Head::NoOrigin);
    }

    #[test]
    fn unsafe_requests_past_the_window_are_judged_on_its_whole_lines() {
        let cookie = format!("Cookie: {}\r\n", "c".repeat(SCAN_BYTES));
        let head = |headers: String| {
            expected_head(format!("PUT / HTTP/1.1\r\n{headers}\r\n").as_bytes(), true)
        };
        assert_eq!(
            head(format!("Origin: https://a\r\n{cookie}")),
            Head::Judged {
                unsafe_request: true,
                origin: b"https://a".to_vec(),
                method: Some("PUT"),
                past_window: true,
            }
        );
        assert_eq!(
            head(format!("Sec-Fetch-Site: cross-site\r\n{cookie}")),
            Head::CrossSiteNoOrigin { past_window: true }
        );
        assert_eq!(
            head(format!("{cookie}Origin: https://a\r\n")),
            incomplete(true)
        );
        // The line the window cuts is not read.
        let pad = format!("X: {}\r\n", "p".repeat(SCAN_BYTES - 30));
        assert_eq!(
            head(format!("{pad}Origin: https://a\r\n")),
            incomplete(true)
        );
        // Nor the lines past the header line bound.
        let many = "A: b\r\n".repeat(MAX_HEADER_LINES as usize);
        assert_eq!(
            head(format!("{many}Origin: https://a\r\n")),
            incomplete(true)
        );
        let many = "A: b\r\n".repeat(MAX_HEADER_LINES as usize - 1);
        assert!(matches!(
            head(format!("{many}Origin: https://a\r\n")),
            Head::Judged {
                past_window: false,
                ..
            }
        ));
        // A request line longer than the window.
        let target = "/".repeat(SCAN_BYTES);
        assert_eq!(
            expected_head(
                format!("POST {target} HTTP/1.1\r\nOrigin: https://a\r\n\r\n").as_bytes(),
                true
            ),
            incomplete(true)
        );
    }

    #[test]
    fn folds_read_with_an_origin_are_malformed() {
        let head = |request: &str| expected_head(request.as_bytes(), true);
        let malformed = |unsafe_request| Head::Malformed { unsafe_request };
        assert_eq!(
            head(
                "OPTIONS / HTTP/1.1\r\nOrigin: https://a\r\n .evil\r\nAccess-Control-Request-Method: PUT\r\n\r\n"
            ),
            malformed(false)
        );
        assert_eq!(
            head("OPTIONS / HTTP/1.1\r\nX: a\n\tb\r\n\r\n"),
            Head::NotJudged
        );
        assert_eq!(
            head("POST / HTTP/1.1\r\nX: a\r\n b\r\nOrigin: https://a\r\n\r\n"),
            malformed(true)
        );
        // No Origin: the server's choice to unfold or refuse decides.
        assert_eq!(
            head("POST / HTTP/1.1\r\nSec-Fetch-Site:\r\n cross-site\r\n\r\n"),
            Head::Invalid
        );
        // Not a fold: whitespace before the first header line.
        assert_eq!(
            head("POST / HTTP/1.1\r\n x\r\nOrigin: https://a\r\n\r\n"),
            Head::Invalid
        );
        // Something else httparse refuses too.
        assert_eq!(
            head("POST / HTTP/1.1\r\nX: a\r\r\n b\r\nOrigin: https://a\r\n\r\n"),
            Head::Invalid
        );
        // A partial line after a fold, which httparse refuses.
        assert_eq!(
            head("POST / HTTP/1.1\r\nX: a\r\n b\r\nOrigin: https://a\r\nY\x01"),
            Head::Invalid
        );
        assert_eq!(
            head("POST / HTTP/1.1\r\nX: a\r\n b\r\nOrigin: https://a\r\nY: "),
            malformed(true)
        );
        // A fold the filter does not read, past the window.
        let cookie = format!("Cookie: {}\r\n", "c".repeat(SCAN_BYTES));
        assert_eq!(
            head(&format!(
                "POST / HTTP/1.1\r\nOrigin: https://a\r\n{cookie} x\r\n\r\n"
            )),
            Head::Invalid
        );
        // A preflight's fold past the window: its head is incomplete anyway.
        assert_eq!(
            head(&format!(
                "OPTIONS / HTTP/1.1\r\nOrigin: https://a\r\nAccess-Control-Request-Method: PUT\r\n\t{cookie}\r\n"
            )),
            incomplete(false)
        );
    }

    #[test]
    fn expectations() {
        let list = Allowlist::new(&[
            Listed::any_method("https://any.example"),
            Listed::only("https://get.example", &["GET"]),
        ]);
        let expect = |request: &str| expected(request.as_bytes(), true, &list);
        let unsafe_from = |origin: &str| format!("DELETE / HTTP/1.1\r\nOrigin: {origin}\r\n\r\n");
        assert_eq!(
            expect(&unsafe_from("https://any.example")),
            Expected::UnsafeAllowed
        );
        assert_eq!(
            expect(&unsafe_from("https://get.example")),
            Expected::UnsafeMethodDenied
        );
        assert_eq!(
            expect(&unsafe_from("https://evil.example")),
            Expected::UnsafeDenied
        );
        assert_eq!(
            expect(&unsafe_from("https://a/")),
            Expected::UnsafeMalformed
        );
        let preflight = |origin: &str, method: &str| {
            format!(
                "OPTIONS / HTTP/1.1\r\nOrigin: {origin}\r\nAccess-Control-Request-Method: {method}\r\n\r\n"
            )
        };
        assert_eq!(
            expect(&preflight("https://get.example", "GET")),
            Expected::Allowed
        );
        assert_eq!(
            expect(&preflight("https://get.example", "get")),
            Expected::MethodDenied
        );
        assert_eq!(
            expect(&preflight("https://any.example", "get")),
            Expected::Allowed
        );
        assert_eq!(expect(&preflight("null", "GET")), Expected::Denied);
        assert!(
            Expected::ALL
                .iter()
                .all(|e| e.accepts("anything") == (*e == Expected::Invalid))
        );
    }
}
