//! What the filter's judgment of one request head is compared with, shared
//! by the whole-stream reference
//! ([`stream_reference`](crate::oracles::stream_reference)), which reads the heads
//! and bodies out of a connection's bytes and makes a [`Head`] of each;
//! written independently of the filter's parser.
//!
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
//! - [`Head::expected`] gives the outcome expected of the filter
//!   ([`Expected`]) for a head and the allowlist's answer.

use cors_filter_common::origin::{ORIGIN_MAX_LEN, OriginParse};

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

/// A request head as the reference reads it, with the filter's bounds
/// applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Head {
    /// Passed unread: not a request the filter judges (a safe method; an
    /// unsafe one to a port that does not protect them; an `OPTIONS`
    /// request that is no preflight).
    NotJudged,
    /// A judged head past the connection tracking's bounds, of a preflight
    /// or (`unsafe_request`) an unsafe request (`on_oversized_head`).
    Incomplete { unsafe_request: bool },
    /// Two `Origin` headers, or an `Origin` line past its bounds, in a
    /// preflight or (`unsafe_request`) an unsafe request.
    Malformed { unsafe_request: bool },
    /// An unsafe request without `Origin` whose `Sec-Fetch-Site` says
    /// `cross-site`.
    CrossSiteNoOrigin,
    /// An unsafe request with neither `Origin` nor a cross-site
    /// `Sec-Fetch-Site`.
    NoOrigin,
    /// A request judged by its one `Origin` (value without the optional
    /// whitespace) and a method: for a preflight, the one its
    /// `Access-Control-Request-Method` names; for an unsafe request
    /// (`unsafe_request`), its own.
    Judged {
        unsafe_request: bool,
        origin: Vec<u8>,
        method: MethodName,
    },
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
    /// Incomplete, a preflight's (`on_oversized_head`).
    Incomplete,
    /// Incomplete, an unsafe request's (`on_oversized_head`).
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
    /// A request that starts HTTP/2 (`PRI`, `Upgrade: h2c`), refused
    /// (`http2 = "drop"`, the default).
    Http2,
    /// A PROXY header servers refuse: refused, with the rest.
    ProxyMalformed,
}

impl Expected {
    /// Whether the filter's outcome is this one.
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
            Expected::Http2 => outcome == O::Http2,
            Expected::ProxyMalformed => outcome == O::ProxyMalformed,
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
            Head::Malformed { unsafe_request } => malformed(*unsafe_request),
            Head::CrossSiteNoOrigin => Expected::CrossSiteNoOrigin,
            Head::NoOrigin => Expected::NoOrigin,
            Head::Judged {
                unsafe_request,
                origin,
                method,
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn expectations() {
        let list = Allowlist::new(&[
            Listed::any_method("https://any.example"),
            Listed::only("https://get.example", &["GET"]),
        ]);
        let expect = |request: &str| {
            crate::oracles::stream_reference::read_stream(request.as_bytes(), true, &list).requests
                [0]
            .expected
        };
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
    }
}
