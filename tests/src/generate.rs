//! A seeded generator of HTTP/1.x request heads for differential tests:
//! valid, adversarial and malformed, with random case, spacing, line
//! endings and header order, and origins drawn from and around an
//! allowlist. The same seed gives the same requests.

use crate::reference::Listed;

/// xorshift64*: small, fast, and good enough to pick test cases.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True once in `n` times.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len())]
    }
}

/// The allowlist the generated origins are drawn around. Every kind of
/// entry: exact with and without a port, wildcard with and without a port,
/// an IPv6 literal, a listed trailing dot, `null`, a non-HTTP scheme; and
/// entries restricted to methods: exact, a wildcard inside a wider one
/// (the more specific gives the methods), an exact one inside a wildcard.
pub const ALLOWLIST: &[Listed] = &[
    Listed::any_method("https://app.example.com"),
    Listed::any_method("http://localhost:8080"),
    Listed::any_method("https://*.example.org"),
    Listed::any_method("https://*.api.example.net:8443"),
    Listed::any_method("http://[::1]:3000"),
    Listed::any_method("https://dotted.example.com."),
    Listed::any_method("null"),
    Listed::any_method("chrome-extension://abcdefghijklmnop"),
    Listed::only("https://admin.example.com", &["GET", "POST"]),
    Listed::only("https://*.ro.example.org", &["GET", "HEAD"]),
    Listed::only("https://pay.example.org", &["PUT", "PATCH", "DELETE"]),
    Listed::only("http://localhost:3001", &["POST"]),
];

const LABELS: &[&str] = &["a", "www", "b-2", "x_y", "deep.er", "APP", "0"];

/// Random ASCII case for letters.
pub fn random_case(rng: &mut Rng, text: &str) -> String {
    text.chars()
        .map(|c| {
            if rng.one_in(2) {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// One allowlist entry made into an origin a browser could send.
fn origin_from_entry(rng: &mut Rng, entry: &str) -> String {
    match entry.split_once("*.") {
        Some((scheme, rest)) => {
            let label = rng.pick(LABELS);
            format!("{scheme}{label}.{rest}")
        }
        None => entry.to_owned(),
    }
}

/// An origin from or around the allowlist: the plain thing, or one of the
/// variations an attacker or an odd client could send.
pub fn origin(rng: &mut Rng) -> String {
    let entry = ALLOWLIST[rng.below(ALLOWLIST.len())].origin;
    let base = origin_from_entry(rng, entry);
    let (scheme, authority) = base.split_once("://").unwrap_or(("", &base));
    let (scheme, authority) = (scheme.to_owned(), authority.to_owned());
    match rng.below(30) {
        0..=5 => base,
        6 => random_case(rng, &base),
        7 => format!("{base}:{}", if scheme == "http" { 80 } else { 443 }),
        8 => format!(
            "{base}:{}",
            rng.pick(&["8080", "8443", "1", "65535", "3000"])
        ),
        9 => format!("{base}."),
        10 => format!("{scheme}://{}.{authority}", rng.pick(LABELS)),
        11 => format!("{scheme}://evil-{authority}"),
        12 => format!("{base}.evil.net"),
        13 => format!(
            "{}://{authority}",
            rng.pick(&["http", "https", "ws", "HTTPS", "h"])
        ),
        14 => format!("{base}{}", rng.pick(&["/", "/path", "?q=1", "#f", "/%2e"])),
        15 => format!("{scheme}://{}@{authority}", rng.pick(&["user", "u:p", ""])),
        16 => {
            let entry = ALLOWLIST[rng.below(ALLOWLIST.len())].origin;
            format!("{base}, {}", origin_from_entry(rng, entry))
        }
        17 => format!("{base} {}", rng.pick(&["x", "", "https://evil.example"])),
        18 => format!(
            "{base}:{}",
            rng.pick(&["0", "080", "65536", "99999", "", "8a"])
        ),
        19 => rng
            .pick(&[
                "http://[::1]:3000",
                "http://[0:0::1]:3000",
                "http://[::1]",
                "http://[::0001]:3000",
                "http://[::1:3000",
                "http://[::g]:3000",
                "http://[::1]:03000",
            ])
            .to_owned(),
        20 => rng
            .pick(&["null", "NULL", "Null", "nul", "null ", ""])
            .to_owned(),
        21 => {
            // Around the length bound: a subdomain of a wildcard entry,
            // allowed as long as the whole origin fits.
            let len = [200, 230, 231, 232, 240, 260, 300][rng.below(7)];
            let label = "a".repeat(len);
            format!("https://{label}.example.org")
        }
        22 => format!("{scheme}://{authority}\u{e9}"),
        23 => format!("{scheme}://{}", authority.replace('.', "..")),
        24 => format!("{scheme}:/{authority}"),
        25 => format!("https://example.org{}", rng.pick(&["", ".", ":443"])),
        26 => format!("{base}\t{}", rng.pick(&["", "x"])),
        27 => "https://a.example.com.evil.net".to_owned(),
        28 => format!("{scheme}://{}", authority.to_ascii_uppercase()),
        _ => rng
            .pick(&[
                "https://evil.example",
                "http://app.example.com",
                "https://example.com",
            ])
            .to_owned(),
    }
}

const OWS: &[&str] = &["", " ", " ", "  ", "\t", " \t ", "\t\t"];
const FILLERS: &[&str] = &[
    "Host: api.example.com",
    "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Accept: */*",
    "Accept-Language: en-US,en;q=0.5",
    "Accept-Encoding: gzip, deflate, br",
    "Access-Control-Request-Headers: content-type,x-token",
    "Referer: https://app.example.com/page",
    "Sec-Fetch-Mode: cors",
    "Sec-Fetch-Site: cross-site",
    "Connection: keep-alive",
    "X-Origin: https://evil.example",
    "Origins: https://evil.example",
    "Originx: y",
    "Access-Control-Request-Methods: GET",
    "X-Empty:",
];

/// Methods a cross-origin request changing state comes with, and others
/// the filter must judge alike (unknown, lower case: unsafe too), or not
/// read at all (a method longer than `http::MAX_METHOD_LEN`).
const UNSAFE_METHODS: &[&str] = &[
    "POST",
    "POST",
    "POST",
    "PUT",
    "PATCH",
    "DELETE",
    "CONNECT",
    "post",
    "Post",
    "PROPFIND",
    "PURGE",
    "ABCDEFGHIJKLMNOPQRST",
    "ABCDEFGHIJKLMNOPQRSTU",
];
/// `Access-Control-Request-Method` values: the methods the filter knows,
/// and tokens it must read as no method an entry with `methods` holds.
const REQUESTED_METHODS: &[&str] = &[
    "PUT",
    "DELETE",
    "POST",
    "GET",
    "PATCH",
    "HEAD",
    "OPTIONS",
    "TRACE",
    "CONNECT",
    "",
    "put",
    "Post",
    "PUTS",
    "PUT, DELETE",
    "PUT,DELETE",
    "PUT x",
    "PUT\t",
    "X-CUSTOM",
    "DELET",
];
const FORM_TYPES: &[&str] = &[
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW",
    "text/plain",
    "application/json",
];
/// `Sec-Fetch-Site` values: the four a browser sends, `cross-site` in
/// other cases and followed by more, and near misses.
const FETCH_SITES: &[&str] = &[
    "cross-site",
    "cross-site",
    "cross-site",
    "same-origin",
    "same-site",
    "none",
    "CROSS-SITE",
    "Cross-Site",
    "cross-site ",
    "cross-site x",
    "cross-site,same-site",
    "cross-sites",
    "cross-sit",
    "xcross-site",
    "",
];

/// Whitespace before a value, around the `http::MAX_VALUE_LEAD` bound too.
fn value_lead(rng: &mut Rng) -> String {
    if rng.one_in(6) {
        let n = 5 + rng.below(6);
        (0..n)
            .map(|_| if rng.one_in(4) { '\t' } else { ' ' })
            .collect()
    } else {
        rng.pick(OWS).to_owned()
    }
}

/// What a generated request is built like.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// A preflight's headers.
    Preflight,
    /// A browser's form submission or `fetch`: `Content-Type`,
    /// `Sec-Fetch-Site`, cookies, a body.
    Form,
}

/// One request head: preflights (`OPTIONS` mostly, some misspelt), requests
/// with unsafe methods shaped like a browser's form submissions, some safe
/// requests; some cut short, some mutated into something httparse may
/// refuse.
pub fn request(rng: &mut Rng) -> Vec<u8> {
    let eol = |rng: &mut Rng| if rng.one_in(5) { "\n" } else { "\r\n" };
    let (method, shape) = match rng.below(20) {
        0 => (
            rng.pick(&["GET", "HEAD", "TRACE", "GET"]),
            if rng.one_in(2) {
                Shape::Form
            } else {
                Shape::Preflight
            },
        ),
        1 => (
            rng.pick(&["options", "Options", "OPTIONSX", "OPTION", "XOPTIONS"]),
            Shape::Preflight,
        ),
        2..=12 => ("OPTIONS", Shape::Preflight),
        _ => (rng.pick(UNSAFE_METHODS), Shape::Form),
    };
    let target = if rng.one_in(15) {
        // A long query string, as a page may put in a form's action: the
        // request line alone may fill the window.
        format!("/submit?q={}", "q".repeat(500 + rng.below(900)))
    } else {
        rng.pick(&["/", "/api/v1/items", "*", "/a?b=c", "/x%20y"])
            .to_owned()
    };
    let version = rng.pick(&["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]);
    let mut lines: Vec<String> = Vec::new();
    let fillers = match rng.below(10) {
        0 => 60 + rng.below(10),
        1..=2 => rng.below(20),
        _ => rng.below(8),
    };
    for _ in 0..fillers {
        let filler = rng.pick(FILLERS);
        lines.push(if rng.one_in(20) {
            // A long one, to push the head past the scan window now and then.
            format!("X-Pad: {}", "p".repeat(rng.below(400)))
        } else if rng.one_in(4) {
            random_case(rng, filler)
        } else {
            filler.to_owned()
        });
    }
    let origins = match (shape, rng.below(12)) {
        (Shape::Preflight, 0) | (Shape::Form, 0..=2) => 0,
        (_, 3) => 2,
        _ => 1,
    };
    for _ in 0..origins {
        let name = if rng.one_in(3) {
            random_case(rng, "origin")
        } else {
            "Origin".to_owned()
        };
        let value = origin(rng);
        let (before, after) = (rng.pick(OWS), rng.pick(OWS));
        let at = rng.below(lines.len() + 1);
        lines.insert(at, format!("{name}:{before}{value}{after}"));
    }
    let requests_method = match shape {
        Shape::Preflight => !rng.one_in(10),
        Shape::Form => rng.one_in(10),
    };
    if requests_method {
        let repeated = if rng.one_in(15) { 2 } else { 1 };
        for _ in 0..repeated {
            let name = if rng.one_in(3) {
                random_case(rng, "access-control-request-method")
            } else {
                "Access-Control-Request-Method".to_owned()
            };
            let at = rng.below(lines.len() + 1);
            let method = rng.pick(REQUESTED_METHODS);
            lines.insert(at, format!("{name}:{}{method}", value_lead(rng)));
        }
    }
    if rng.one_in(25) {
        // A folded line (obs-fold), continuing the header before it: a
        // server may refuse it or unfold it.
        let fold = format!(
            "{}{}",
            rng.pick(&[" ", "\t", "  "]),
            rng.pick(&[
                "x",
                ".evil.example",
                "https://evil.example",
                "cross-site",
                ""
            ])
        );
        let at = rng.below(lines.len() + 1);
        lines.insert(at, fold);
    }
    let mut body = String::new();
    if shape == Shape::Form {
        if rng.one_in(2) {
            let name = if rng.one_in(3) {
                random_case(rng, "sec-fetch-site")
            } else {
                "Sec-Fetch-Site".to_owned()
            };
            let value = rng.pick(FETCH_SITES);
            let value = if rng.one_in(5) {
                random_case(rng, value)
            } else {
                value.to_owned()
            };
            let at = rng.below(lines.len() + 1);
            lines.insert(at, format!("{name}:{}{value}", value_lead(rng)));
        }
        if rng.one_in(3) {
            // Cookies: past the window now and then, after the decisive
            // lines (where browsers put them) or before them.
            let cookie = format!("Cookie: session={}", "c".repeat(50 + rng.below(1500)));
            let at = if rng.one_in(3) {
                rng.below(lines.len() + 1)
            } else {
                lines.len()
            };
            lines.insert(at, cookie);
        }
        if !rng.one_in(4) {
            body = rng
                .pick(&["amount=1000&to=mallory", "{\"to\":\"mallory\"}", "a=1", ""])
                .to_owned();
            lines.push(format!("Content-Type: {}", rng.pick(FORM_TYPES)));
            lines.push(format!("Content-Length: {}", body.len()));
        }
    }
    // Empty lines before the request line, which servers skip.
    let empty_lines = if rng.one_in(25) { 1 + rng.below(10) } else { 0 };
    let mut head: String = (0..empty_lines).map(|_| eol(rng)).collect();
    head.push_str(&format!("{method} {target} {version}{}", eol(rng)));
    for line in &lines {
        head.push_str(line);
        head.push_str(eol(rng));
    }
    head.push_str(eol(rng));
    head.push_str(&body);
    let mut bytes = head.into_bytes();
    match rng.below(12) {
        // Pipelined: a second request after the first; the first decides.
        0 => bytes.extend_from_slice(if rng.one_in(2) {
            b"OPTIONS / HTTP/1.1\r\nOrigin: https://evil.example\r\nAccess-Control-Request-Method: PUT\r\n\r\n"
        } else {
            b"POST / HTTP/1.1\r\nOrigin: https://evil.example\r\n\r\n"
        }),
        1 => bytes.extend_from_slice(b"{\"body\":true}"),
        // Cut short: the rest would come in a later segment.
        2 => bytes.truncate(1 + rng.below(bytes.len())),
        // One byte changed, inserted or removed: adversarial, often invalid.
        3 => mutate(rng, &mut bytes),
        _ => {}
    }
    bytes
}

fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    let at = rng.below(bytes.len());
    let byte = match rng.below(8) {
        0 => b'\r',
        1 => b'\n',
        2 => b':',
        3 => b' ',
        4 => b'\t',
        5 => 0,
        6 => 0x80 | rng.next_u64() as u8,
        _ => rng.next_u64() as u8,
    };
    match rng.below(3) {
        0 => bytes[at] = byte,
        1 => bytes.insert(at, byte),
        _ => {
            bytes.remove(at);
        }
    }
    if bytes.is_empty() {
        bytes.push(byte);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_requests() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..100 {
            assert_eq!(request(&mut a), request(&mut b));
        }
    }

    #[test]
    fn requests_are_never_empty() {
        let mut rng = Rng::new(9);
        for _ in 0..10_000 {
            assert!(!request(&mut rng).is_empty());
        }
    }
}
