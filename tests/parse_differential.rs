//! The parsing code of the program (cors-filter-common, run in userspace by
//! `scanner`) against httparse's reading (`reference`), with the property
//! the fuzz target checks too (`differential::agrees`). No root, no BPF: the
//! property holds without the fuzzer, on generated requests.

use std::collections::BTreeMap;

use cors_filter_common::{
    MethodSet, Outcome,
    http::{MAX_HEADER_LINES, MAX_VALUE_LEAD, SCAN_BUF_LEN, SCAN_BYTES},
};
use cors_filter_tests::{
    differential::agrees,
    generate::{self, Rng},
    reference::{Head, canonical_origin, expected_head},
    scanner::{ScanPolicy, scan},
};

/// A port that protects unsafe methods, whose allowlist holds no origin.
const PROTECTING_DENY_ALL: ScanPolicy = ScanPolicy {
    protects_unsafe: true,
    passes_incomplete_unsafe: false,
    answer: MethodSet::NONE,
};

/// Whether httparse refuses the head of `payload`.
fn httparse_refuses(payload: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; 4 * MAX_HEADER_LINES as usize];
    httparse::Request::new(&mut headers).parse(payload).is_err()
}

/// Checks `agrees` on each payload; fails with the first few disagreements.
fn check_all(payloads: impl Iterator<Item = Vec<u8>>) -> usize {
    let (mut checked, mut failures) = (0, Vec::new());
    for (case, payload) in payloads.enumerate() {
        checked += 1;
        if let Err(why) = agrees(&payload) {
            failures.push(format!("case {case}: {why}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} payloads disagree with httparse; the first:\n{}",
        failures.len(),
        failures[..failures.len().min(5)].join("\n")
    );
    checked
}

#[test]
fn generated_requests_agree_with_httparse() {
    const REQUESTS: usize = 200_000;
    let mut rng = Rng::new(0x5eed_cafe_f00d_0001);
    let requests: Vec<Vec<u8>> = (0..REQUESTS).map(|_| generate::request(&mut rng)).collect();
    // The generator must keep reaching every branch of the reference, on a
    // port that protects unsafe methods.
    let mut branches: BTreeMap<&str, usize> = BTreeMap::new();
    for request in &requests {
        let branch = match expected_head(request, true) {
            Head::Judged {
                unsafe_request,
                origin,
                past_window,
                ..
            } => match (
                unsafe_request,
                canonical_origin(&origin).is_some(),
                past_window,
            ) {
                (false, true, _) => "preflights",
                (false, false, _) => "preflights with a bad origin",
                (true, true, false) => "unsafe requests",
                (true, true, true) => "unsafe requests judged on the window's lines",
                (true, false, _) => "unsafe requests with a bad origin",
            },
            Head::Malformed { .. } if httparse_refuses(request) => "folded heads with an origin",
            Head::Malformed {
                unsafe_request: false,
            } => "malformed preflights",
            Head::Malformed {
                unsafe_request: true,
            } => "malformed unsafe requests",
            Head::CrossSiteNoOrigin { past_window: false } => "cross-site without origin",
            Head::CrossSiteNoOrigin { past_window: true } => {
                "cross-site without origin, judged on the window's lines"
            }
            Head::NoOrigin => "no origin",
            Head::Incomplete {
                unsafe_request: false,
            } => "incomplete",
            Head::Incomplete {
                unsafe_request: true,
            } => "unsafe requests undecided in the window",
            Head::NotJudged => "not judged",
            Head::Invalid => "refused by httparse",
        };
        *branches.entry(branch).or_default() += 1;
    }
    println!("{branches:#?}");
    for (branch, at_least) in [
        ("preflights", REQUESTS / 100),
        ("preflights with a bad origin", REQUESTS / 100),
        ("unsafe requests", REQUESTS / 100),
        (
            "unsafe requests judged on the window's lines",
            REQUESTS / 1000,
        ),
        ("unsafe requests with a bad origin", REQUESTS / 1000),
        ("folded heads with an origin", REQUESTS / 1000),
        ("malformed preflights", REQUESTS / 100),
        ("malformed unsafe requests", REQUESTS / 1000),
        ("cross-site without origin", REQUESTS / 100),
        (
            "cross-site without origin, judged on the window's lines",
            REQUESTS / 10_000,
        ),
        ("no origin", REQUESTS / 100),
        ("incomplete", REQUESTS / 100),
        ("unsafe requests undecided in the window", REQUESTS / 100),
        ("not judged", REQUESTS / 100),
        ("refused by httparse", REQUESTS / 100),
    ] {
        let n = branches.get(branch).copied().unwrap_or(0);
        assert!(n >= at_least, "too few {branch}: {branches:?}");
    }
    assert_eq!(check_all(requests.into_iter()), REQUESTS);
}

#[test]
fn arbitrary_bytes_after_a_request_line() {
    let mut rng = Rng::new(0xdead_beef_0000_0002);
    let payloads = (0..20_000).map(|_| {
        let mut bytes = b"OPTIONS / HTTP/1.1\r\n".to_vec();
        for _ in 0..rng.below(SCAN_BUF_LEN) {
            bytes.push(match rng.below(6) {
                0 => b'\n',
                1 => b'\r',
                2 => b':',
                _ => rng.next_u64() as u8,
            });
        }
        bytes
    });
    check_all(payloads);
}

#[test]
fn header_line_bound_matches_the_documented_constant() {
    let with_headers = |n: u32| {
        let mut head = b"OPTIONS / HTTP/1.1\r\n".to_vec();
        for _ in 0..n - 2 {
            head.extend_from_slice(b"A: b\r\n");
        }
        head.extend_from_slice(
            b"Origin: https://a.example\r\nAccess-Control-Request-Method: GET\r\n\r\n",
        );
        head
    };
    let at_bound = with_headers(MAX_HEADER_LINES);
    assert!(matches!(
        expected_head(&at_bound, true),
        Head::Judged { .. }
    ));
    let scanned = scan(&at_bound, 0, PROTECTING_DENY_ALL);
    assert_eq!(scanned.outcome, Outcome::Denied);
    assert_eq!(scanned.key.as_deref(), Some(&b"https:///elpmaxe.a\0"[..]));
    let past = with_headers(MAX_HEADER_LINES + 1);
    assert_eq!(
        expected_head(&past, true),
        Head::Incomplete {
            unsafe_request: false
        }
    );
    assert_eq!(
        scan(&past, 0, PROTECTING_DENY_ALL).outcome,
        Outcome::Incomplete
    );
    check_all([at_bound, past].into_iter());
}

#[test]
fn empty_lines_before_the_request_line_are_skipped() {
    let preflight = b"OPTIONS / HTTP/1.1\r\nOrigin: https://a.example\r\nAccess-Control-Request-Method: GET\r\n\r\n";
    for lead in [&b"\r\n"[..], b"\n", b"\r\n\n\r\n"] {
        let payload = [lead, preflight].concat();
        let scanned = scan(&payload, 0, PROTECTING_DENY_ALL);
        assert_eq!(
            scanned.outcome,
            Outcome::Denied,
            "{}",
            payload.escape_ascii()
        );
        assert_eq!(scanned.key.as_deref(), Some(&b"https:///elpmaxe.a\0"[..]));
    }
    // Line ends filling the scan window: the request line starts past it.
    let padded = [&b"\r\n".repeat(SCAN_BYTES / 2)[..], preflight].concat();
    assert_eq!(
        scan(&padded, 0, PROTECTING_DENY_ALL).outcome,
        Outcome::Incomplete
    );
    let cases = [
        padded,
        [&b"\n".repeat(SCAN_BYTES - 1)[..], b"\r"].concat(),
        [
            &b"\n".repeat(SCAN_BYTES - 1)[..],
            b"\r\nGET / HTTP/1.1\r\n\r\n",
        ]
        .concat(),
        b"\n\n\n\nOPTIONS ".to_vec(),
        b"\r\nOPT".to_vec(),
        b"\r\n\r\n".to_vec(),
        b"\r\nGET / HTTP/1.1\r\n\r\n".to_vec(),
        [&b"\n"[..], preflight].concat(),
    ];
    check_all(cases.into_iter());
}

#[test]
fn unsafe_requests_at_the_edges_of_the_bounds() {
    let decisive_lines = [
        "Origin: https://app.example.com",
        "Origin: https://evil.example",
        "Sec-Fetch-Site: cross-site",
        "Sec-Fetch-Site: same-site",
    ];
    let cookie = format!("Cookie: {}", "c".repeat(SCAN_BYTES));
    let mut payloads = Vec::new();
    // The decisive line ending at every offset around the end of the
    // window, the head going on past it or not.
    for decisive in decisive_lines {
        for end in SCAN_BYTES - 40..SCAN_BYTES + 8 {
            let start = "POST /f HTTP/1.1\r\nX: ";
            let pad = end - start.len() - 2 - decisive.len() - 2;
            let head = format!("{start}{}\r\n{decisive}\r\n", "p".repeat(pad));
            payloads.push(format!("{head}{cookie}\r\n\r\n").into_bytes());
            payloads.push(format!("{head}\r\n").into_bytes());
        }
        // The decisive line around the header line bound.
        for before in MAX_HEADER_LINES - 3..MAX_HEADER_LINES + 2 {
            let lines = "A: b\r\n".repeat(before as usize);
            payloads.push(format!("PUT / HTTP/1.1\r\n{lines}{decisive}\r\n\r\n").into_bytes());
        }
    }
    // Whitespace around the bound before the values read as tokens.
    for lead in 0..=MAX_VALUE_LEAD + 3 {
        for space in [" ", "\t"] {
            let lead = space.repeat(lead);
            payloads.push(
                format!("DELETE / HTTP/1.1\r\nSec-Fetch-Site:{lead}cross-site\r\n\r\n")
                    .into_bytes(),
            );
            payloads.push(
                format!(
                    "OPTIONS / HTTP/1.1\r\nOrigin: https://admin.example.com\r\n\
                     Access-Control-Request-Method:{lead}PUT\r\n\r\n"
                )
                .into_bytes(),
            );
        }
    }
    check_all(payloads.into_iter());
}
