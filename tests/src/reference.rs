//! The reference the filter is compared with: what a careful HTTP server
//! makes of a request, written independently of the filter's scanner.
//!
//! - The request head is parsed by `httparse`.
//! - An `Origin` value is validated by the common crate's origin rules (the
//!   same rules `allow add` applies), then put in canonical form and matched
//!   against the allowlist here, on plain strings: scheme, host and port
//!   compared as text, a wildcard as a suffix on a label boundary. The LPM
//!   key layout the program looks up is derived here again from the canonical
//!   form, so a slip in either derivation shows.
//! - The filter's documented bounds (README, "Bounds") are applied on top:
//!   they are part of its contract, not an implementation detail.

use cors_filter_common::{
    http::{MAX_HEADER_LINES, SCAN_BYTES},
    origin::{ORIGIN_MAX_LEN, ORIGIN_RAW_LEN, OriginParse},
};

/// What httparse makes of a request head, with the filter's bounds applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Head {
    /// Not an `OPTIONS` request, or no request at all: passed.
    NotPreflight,
    /// An `OPTIONS` request whose head does not end within the bounds.
    Incomplete,
    /// A preflight with two `Origin` headers, or whose `Origin` line is past
    /// the documented length bounds.
    Malformed,
    /// A preflight, with its `Origin` value, optional whitespace removed.
    Preflight { origin: Vec<u8> },
    /// httparse rejects the head: a server answers 400 whatever the filter
    /// does, so there is no expectation.
    Invalid,
}

/// httparse's reading of `payload`, the start of a TCP segment.
pub fn expected_head(payload: &[u8]) -> Head {
    // The empty lines httparse skips before a request line count in the
    // scan window: when line ends fill it, the request line (if any) starts
    // past the bound.
    if payload.len() >= SCAN_BYTES
        && payload[..SCAN_BYTES]
            .iter()
            .all(|&b| b == b'\r' || b == b'\n')
    {
        return Head::Incomplete;
    }
    // More room than the bound, so that going past it is seen, not an error.
    let mut headers = [httparse::EMPTY_HEADER; 4 * MAX_HEADER_LINES as usize];
    let mut request = httparse::Request::new(&mut headers);
    let parsed = request.parse(payload);
    let options = request.method == Some("OPTIONS");
    let head_len = match parsed {
        // A request line cut before its method ends: OPTIONS only if what
        // is there (after the empty lines httparse skips) could still
        // become "OPTIONS ".
        Ok(httparse::Status::Partial) if request.method.is_none() => {
            let start = after_empty_lines(payload);
            return if !start.is_empty() && b"OPTIONS ".starts_with(start) {
                Head::Incomplete
            } else {
                Head::NotPreflight
            };
        }
        _ if request.method.is_some() && !options => return Head::NotPreflight,
        Ok(httparse::Status::Partial) => return Head::Incomplete,
        Err(_) => return Head::Invalid,
        Ok(httparse::Status::Complete(len)) => len,
    };
    if head_len > SCAN_BYTES || request.headers.len() > MAX_HEADER_LINES as usize {
        return Head::Incomplete;
    }
    let origins: Vec<&[u8]> = request
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("origin"))
        .map(|h| h.value)
        .collect();
    let request_methods = request
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("access-control-request-method"))
        .count();
    match (origins.as_slice(), request_methods) {
        ([], _) | (_, 0) => Head::NotPreflight,
        ([origin], _) if within_origin_line_bounds(payload, origin) => Head::Preflight {
            origin: origin.to_vec(),
        },
        _ => Head::Malformed,
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

/// The documented bound on an `Origin` line: its optional whitespace before
/// the value is shorter than [`ORIGIN_RAW_LEN`] bytes, and the value with
/// the whitespace after it ends the line within `ORIGIN_RAW_LEN - 1` bytes.
/// `value` is httparse's slice of `payload`.
fn within_origin_line_bounds(payload: &[u8], value: &[u8]) -> bool {
    let start = value.as_ptr() as usize - payload.as_ptr() as usize;
    let colon = payload[..start]
        .iter()
        .rposition(|&b| b == b':')
        .expect("a header value follows a colon");
    let line_end = start
        + payload[start..]
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .expect("a complete head ends every line");
    value.is_empty() || (start - colon - 1 < ORIGIN_RAW_LEN && line_end - start < ORIGIN_RAW_LEN)
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

/// One allowlist entry as text: `scheme://host[:port]`, `scheme://*.suffix[:port]`
/// or `null`.
#[derive(Clone, Debug)]
enum Entry {
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
    entries: Vec<Entry>,
}

impl Allowlist {
    /// Entries as a config file lists them. Panics on an entry that is not
    /// valid: the tests choose their allowlists.
    pub fn new(entries: &[&str]) -> Allowlist {
        let entries = entries
            .iter()
            .map(|text| {
                if let Some((scheme, rest)) = text.split_once("://*.") {
                    let exact = format!("{scheme}://{rest}");
                    let Some(Canonical::Tuple { scheme, host, port }) =
                        canonical_origin(exact.as_bytes())
                    else {
                        panic!("invalid wildcard entry {text}");
                    };
                    Entry::Wildcard {
                        scheme,
                        suffix: host,
                        port,
                    }
                } else {
                    Entry::Exact(
                        canonical_origin(text.as_bytes())
                            .unwrap_or_else(|| panic!("invalid entry {text}")),
                    )
                }
            })
            .collect();
        Allowlist { entries }
    }

    pub fn allows(&self, origin: &Canonical) -> bool {
        self.entries.iter().any(|entry| match (entry, origin) {
            (Entry::Exact(exact), _) => exact == origin,
            (
                Entry::Wildcard {
                    scheme,
                    suffix,
                    port,
                },
                Canonical::Tuple {
                    scheme: s,
                    host,
                    port: p,
                },
            ) => {
                scheme == s
                    && port == p
                    && host
                        .strip_suffix(suffix.as_str())
                        .is_some_and(|label| label.len() > 1 && label.ends_with('.'))
            }
            (Entry::Wildcard { .. }, Canonical::Null) => false,
        })
    }
}

/// The verdict a careful server's parser leads to, as the filter's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    /// Passed, not being a preflight (`pass_not_preflight` or `pass_not_http`).
    NotPreflight,
    Incomplete,
    Malformed,
    Allowed,
    Denied,
    /// No expectation (see [`Head::Invalid`]).
    Invalid,
}

impl Expected {
    /// Whether the program's `reason` (a counter name, as `replay` prints it)
    /// is this outcome.
    pub fn accepts(self, reason: &str) -> bool {
        match self {
            Expected::NotPreflight => matches!(reason, "pass_not_preflight" | "pass_not_http"),
            Expected::Incomplete => reason == "incomplete",
            Expected::Malformed => reason == "malformed",
            Expected::Allowed => reason == "preflight_allow",
            Expected::Denied => reason == "preflight_deny",
            Expected::Invalid => true,
        }
    }
}

/// The expected outcome of a TCP payload (not empty) to an inspected port.
pub fn expected(payload: &[u8], allowlist: &Allowlist) -> Expected {
    match expected_head(payload) {
        Head::NotPreflight => Expected::NotPreflight,
        Head::Incomplete => Expected::Incomplete,
        Head::Malformed => Expected::Malformed,
        Head::Invalid => Expected::Invalid,
        Head::Preflight { origin } => match canonical_origin(&origin) {
            None => Expected::Malformed,
            Some(origin) if allowlist.allows(&origin) => Expected::Allowed,
            Some(_) => Expected::Denied,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFLIGHT: &str =
        "OPTIONS / HTTP/1.1\r\nOrigin: {}\r\nAccess-Control-Request-Method: PUT\r\n\r\n";

    fn preflight(origin: &str) -> Vec<u8> {
        PREFLIGHT.replace("{}", origin).into_bytes()
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
        let list = Allowlist::new(&["https://*.example.org", "http://localhost:8080", "null"]);
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
    fn heads() {
        assert_eq!(
            expected_head(&preflight("https://a")),
            Head::Preflight {
                origin: b"https://a".to_vec()
            }
        );
        assert_eq!(expected_head(b"OPT"), Head::Incomplete);
        assert_eq!(expected_head(b"\r\n\nOPT"), Head::Incomplete);
        assert_eq!(expected_head(b"\r\n"), Head::NotPreflight);
        let padded = [&b"\r\n".repeat(SCAN_BYTES / 2)[..], &preflight("null")].concat();
        assert_eq!(expected_head(&padded), Head::Incomplete);
        assert_eq!(
            expected_head(&[b"\r\n".as_slice(), &preflight("null")].concat()),
            Head::Preflight {
                origin: b"null".to_vec()
            }
        );
        assert_eq!(
            expected_head(b"OPTIONS / HTTP/1.1\r\nOrigin: x\r\n"),
            Head::Incomplete
        );
        assert_eq!(
            expected_head(b"GET / HTTP/1.1\r\nOrigin: x\r\n"),
            Head::NotPreflight
        );
        assert_eq!(expected_head(b"GE"), Head::NotPreflight);
        assert_eq!(
            expected_head(b"OPTIONS / HTTP/1.1\r\nOrigin : x\r\n\r\n"),
            Head::Invalid
        );
        let two = b"OPTIONS / HTTP/1.1\r\nOrigin: a\r\norigin: a\r\nAccess-Control-Request-Method: PUT\r\n\r\n";
        assert_eq!(expected_head(two), Head::Malformed);
        let long = preflight(&format!("https://{}", "a".repeat(300)));
        assert_eq!(expected_head(&long), Head::Malformed);
    }
}
