//! Differential test of the request-head scanner against httparse.
//!
//! Random request heads are built from realistic and hostile pieces; for
//! every one httparse parses completely, the scanner must agree on whether
//! it is a preflight, and on the `Origin` value it found.

use cors_filter_common::{
    RequestHead, RequestStart,
    http::{HeadScan, MAX_HEADER_LINES, SCAN_BUF_LEN, SCAN_BYTES, classify_start, scan_head},
    origin::OriginParse,
};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

const ORIGIN_NAMES: &[&str] = &["Origin", "origin", "ORIGIN", "oRiGiN"];
const ACRM_NAMES: &[&str] = &[
    "Access-Control-Request-Method",
    "access-control-request-method",
];
const DECOYS: &[&str] = &[
    "Origins",
    "X-Origin",
    "Originx",
    "Access-Control-Request-Methods",
    "Access-Control-Request-Headers",
    "Referer",
    "Host",
    "User-Agent",
    "Accept",
    "Sec-Fetch-Mode",
];
const VALUES: &[&str] = &[
    "https://app.example.com",
    "http://localhost:8080",
    "null",
    "https://a.example.com/path",
    "https://a b",
    "",
    "PUT",
    "x",
    "https://*.example.com",
    "https://[::1]:443",
];
const OWS: &[&str] = &["", " ", "  ", "\t", " \t "];

fn random_head(rng: &mut Rng) -> Vec<u8> {
    let eol = if rng.below(4) == 0 { "\n" } else { "\r\n" };
    let method = rng.pick(&["OPTIONS", "OPTIONS", "OPTIONS", "GET", "POST"]);
    let target = rng.pick(&["/", "/api/v1/items", "*", "/a?b=c"]);
    let version = rng.pick(&["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]);
    let mut head = format!("{method} {target} {version}{eol}");
    for _ in 0..rng.below(14) {
        let name = match rng.below(6) {
            0 => rng.pick(ORIGIN_NAMES),
            1 => rng.pick(ACRM_NAMES),
            _ => rng.pick(DECOYS),
        };
        let value = rng.pick(VALUES);
        head.push_str(&format!(
            "{name}:{}{value}{}{eol}",
            rng.pick(OWS),
            rng.pick(OWS)
        ));
    }
    head.push_str(eol);
    if rng.below(3) == 0 {
        head.push_str("body bytes after the head");
    }
    head.into_bytes()
}

/// What httparse says the scanner must find.
enum Expected {
    NotPreflight,
    Malformed,
    Preflight(Vec<u8>),
}

fn reference(bytes: &[u8]) -> Option<Expected> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return None,
    }
    let origins: Vec<&[u8]> = request
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("origin"))
        .map(|h| h.value)
        .collect();
    let methods = request
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("access-control-request-method"))
        .count();
    Some(
        if request.method != Some("OPTIONS") || origins.is_empty() || methods == 0 {
            Expected::NotPreflight
        } else if origins.len() > 1 {
            Expected::Malformed
        } else {
            Expected::Preflight(origins[0].trim_ascii().to_vec())
        },
    )
}

fn scan(bytes: &[u8]) -> (RequestStart, Option<RequestHead>, Option<Vec<u8>>) {
    let mut buf = [0u8; SCAN_BUF_LEN];
    let len = bytes.len().min(SCAN_BYTES);
    buf[..len].copy_from_slice(&bytes[..len]);
    let start = classify_start(&buf, len);
    if start != RequestStart::Options {
        return (start, None, None);
    }
    let mut state = Box::<HeadScan>::default();
    let head = scan_head(&buf, len, &mut state);
    let value = match head {
        RequestHead::Preflight { origin_value_at } => {
            let mut origin = Box::<OriginParse>::default();
            origin
                .copy_header_value(&buf, origin_value_at)
                .ok()
                .map(|()| origin.value().to_vec())
        }
        _ => None,
    };
    (start, Some(head), value)
}

#[test]
fn scanner_agrees_with_httparse() {
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let (mut compared, mut preflights) = (0, 0);
    for case in 0..50_000 {
        let bytes = random_head(&mut rng);
        let Some(expected) = reference(&bytes) else {
            continue;
        };
        compared += 1;
        let (start, head, value) = scan(&bytes);
        let shown = String::from_utf8_lossy(&bytes);
        match expected {
            Expected::NotPreflight => assert!(
                start != RequestStart::Options || head == Some(RequestHead::NotPreflight),
                "case {case}: expected not a preflight, got {start:?} {head:?}\n{shown}"
            ),
            Expected::Malformed => {
                assert_eq!(head, Some(RequestHead::Malformed), "case {case}\n{shown}")
            }
            Expected::Preflight(origin) => {
                preflights += 1;
                assert!(
                    matches!(head, Some(RequestHead::Preflight { .. })),
                    "case {case}: expected a preflight, got {head:?}\n{shown}"
                );
                assert_eq!(value.as_deref(), Some(&origin[..]), "case {case}\n{shown}");
            }
        }
    }
    // The generator must keep exercising every branch.
    assert!(compared > 40_000, "only {compared} heads compared");
    assert!(preflights > 2_000, "only {preflights} preflights");
}

#[test]
fn scanner_never_panics_on_arbitrary_bytes() {
    let mut rng = Rng(0xdead_beef_0000_0002);
    for _ in 0..20_000 {
        let mut bytes = b"OPTIONS / HTTP/1.1\r\n".to_vec();
        for _ in 0..rng.below(SCAN_BUF_LEN) {
            let b = match rng.below(6) {
                0 => b'\n',
                1 => b'\r',
                2 => b':',
                _ => rng.next() as u8,
            };
            bytes.push(b);
        }
        let _ = scan(&bytes);
    }
}

#[test]
fn header_line_bound_matches_the_documented_constant() {
    let mut head = b"OPTIONS / HTTP/1.1\r\n".to_vec();
    for _ in 0..MAX_HEADER_LINES - 2 {
        head.extend_from_slice(b"A: b\r\n");
    }
    head.extend_from_slice(
        b"Origin: https://a.example\r\nAccess-Control-Request-Method: GET\r\n\r\n",
    );
    assert!(matches!(scan(&head).1, Some(RequestHead::Preflight { .. })));
}
