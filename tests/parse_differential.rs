//! The parsing code of the program (cors-filter-common, run in userspace by
//! `scanner`) against httparse's reading (`reference`), with the property
//! the fuzz target checks too (`differential::agrees`). No root, no BPF: the
//! property holds without the fuzzer, on generated requests.

use cors_filter_common::{
    Outcome,
    http::{MAX_HEADER_LINES, SCAN_BUF_LEN, SCAN_BYTES},
};
use cors_filter_tests::{
    differential::agrees,
    generate::{self, Rng},
    reference::{Head, canonical_origin, expected_head},
    scanner::scan,
};

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
    // The generator must keep reaching every branch of the reference.
    let (mut denied, mut bad_origin, mut malformed, mut incomplete, mut passed, mut invalid) =
        (0, 0, 0, 0, 0, 0);
    for request in &requests {
        match expected_head(request) {
            Head::Preflight { origin } if canonical_origin(&origin).is_some() => denied += 1,
            Head::Preflight { .. } => bad_origin += 1,
            Head::Malformed => malformed += 1,
            Head::Incomplete => incomplete += 1,
            Head::NotPreflight => passed += 1,
            Head::Invalid => invalid += 1,
        }
    }
    let counts = format!(
        "preflights {denied}, with a bad origin {bad_origin}, malformed {malformed}, \
         incomplete {incomplete}, not preflights {passed}, refused by httparse {invalid}"
    );
    for (what, n) in [
        ("preflights", denied),
        ("preflights with a bad origin", bad_origin),
        ("malformed", malformed),
        ("incomplete", incomplete),
        ("not preflights", passed),
        ("refused by httparse", invalid),
    ] {
        assert!(n >= REQUESTS / 100, "too few {what}: {counts}");
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
    assert!(matches!(expected_head(&at_bound), Head::Preflight { .. }));
    let scanned = scan(&at_bound, 0);
    assert_eq!(scanned.outcome, Outcome::Denied);
    assert_eq!(scanned.key.as_deref(), Some(&b"https:///elpmaxe.a\0"[..]));
    let past = with_headers(MAX_HEADER_LINES + 1);
    assert_eq!(expected_head(&past), Head::Incomplete);
    assert_eq!(scan(&past, 0).outcome, Outcome::Incomplete);
    check_all([at_bound, past].into_iter());
}

#[test]
fn empty_lines_before_the_request_line_are_skipped() {
    let preflight = b"OPTIONS / HTTP/1.1\r\nOrigin: https://a.example\r\nAccess-Control-Request-Method: GET\r\n\r\n";
    for lead in [&b"\r\n"[..], b"\n", b"\r\n\n\r\n"] {
        let payload = [lead, preflight].concat();
        let scanned = scan(&payload, 0);
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
    assert_eq!(scan(&padded, 0).outcome, Outcome::Incomplete);
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
