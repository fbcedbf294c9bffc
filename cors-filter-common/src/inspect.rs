//! From the first bytes of a TCP payload to an [`Outcome`]: the parser's
//! steps in the order the program takes them. The program supplies the
//! allowlist lookup; userspace tests and fuzzers supply their own and run
//! this very code.

use crate::{
    Outcome, Scratch,
    http::{RequestHead, RequestStart, classify_start, scan_head, skip_empty_lines},
    origin::OriginParse,
};

/// The outcome of the payload in `scratch.payload[..len]` (`len` is 1 to
/// [`SCAN_BYTES`](crate::http::SCAN_BYTES)). `is_allowed` answers whether
/// the allowlist holds a normalised origin (see `crate::allow`); it is asked at most once,
/// and only for a well-formed preflight. Empty lines before the request
/// line are skipped (moving the request to the start of `scratch.payload`),
/// as servers skip them; they count in the scan window. Afterwards
/// `scratch.origin` holds the `Origin` value as far as it was read, and
/// nothing when it was not (for the denial event).
#[inline(always)]
pub fn inspect_payload(
    scratch: &mut Scratch,
    len: usize,
    is_allowed: impl FnOnce(&mut OriginParse) -> bool,
) -> Outcome {
    scratch.origin.clear();
    let Some(len) = skip_empty_lines(&mut scratch.payload, len, &mut scratch.head) else {
        return Outcome::Incomplete;
    };
    match classify_start(&scratch.payload, len) {
        RequestStart::NotHttp => return Outcome::NotHttp,
        RequestStart::OtherMethod => return Outcome::NotPreflight,
        RequestStart::SplitOptions => return Outcome::Incomplete,
        RequestStart::Options => {}
    }
    let origin_value_at = match scan_head(&scratch.payload, len, &mut scratch.head) {
        RequestHead::NotHttp => return Outcome::NotHttp,
        RequestHead::Incomplete => return Outcome::Incomplete,
        RequestHead::NotPreflight => return Outcome::NotPreflight,
        RequestHead::Malformed => return Outcome::Malformed,
        RequestHead::Preflight { origin_value_at } => origin_value_at,
    };
    let origin = &mut scratch.origin;
    if origin
        .copy_header_value(&scratch.payload, origin_value_at)
        .is_err()
        || origin.normalize().is_err()
    {
        return Outcome::Malformed;
    }
    if is_allowed(origin) {
        Outcome::Allowed
    } else {
        Outcome::Denied
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{SCAN_BUF_LEN, SCAN_BYTES};
    use std::{boxed::Box, format, vec::Vec};

    fn scratch() -> Box<Scratch> {
        Box::new(Scratch {
            payload: [0; SCAN_BUF_LEN],
            payload_len: Default::default(),
            ipv6_walk_offset: Default::default(),
            generation: Default::default(),
            addressing: Default::default(),
            reset: Default::default(),
            head: Default::default(),
            origin: Default::default(),
        })
    }

    /// Inspects `request` in `scratch` (as the program does, after earlier
    /// packets) and returns the outcome and the origin value it left.
    fn inspect(scratch: &mut Scratch, request: &[u8]) -> (Outcome, Vec<u8>) {
        let len = request.len().min(SCAN_BYTES);
        scratch.payload[..len].copy_from_slice(&request[..len]);
        let outcome = inspect_payload(scratch, len, |_| false);
        let value_len = scratch.origin.value_len() as usize;
        (outcome, scratch.origin.raw[..value_len].to_vec())
    }

    fn preflight(origin_lines: &str) -> Vec<u8> {
        format!(
            "OPTIONS /x HTTP/1.1\r\nHost: h\r\n{origin_lines}Access-Control-Request-Method: PUT\r\n\r\n"
        )
        .into_bytes()
    }

    #[test]
    fn the_origin_value_is_left_for_the_event() {
        let mut s = scratch();
        let (o, v) = inspect(&mut s, &preflight("Origin:  https://evil.example \r\n"));
        assert_eq!(
            (o, v.as_slice()),
            (Outcome::Denied, &b"https://evil.example"[..])
        );
        let (o, v) = inspect(&mut s, &preflight("Origin: https://a.example/p\"\\\r\n"));
        assert_eq!(
            (o, v.as_slice()),
            (Outcome::Malformed, &b"https://a.example/p\"\\"[..])
        );
        let long = format!("https://{}.example", "a".repeat(200));
        let (o, v) = inspect(&mut s, &preflight(&format!("Origin: {long}\r\n")));
        assert_eq!((o, v), (Outcome::Denied, long.into_bytes()));
    }

    #[test]
    fn no_stale_origin_when_the_value_is_not_read() {
        let mut s = scratch();
        inspect(&mut s, &preflight("Origin: https://evil.example\r\n"));
        let (o, v) = inspect(
            &mut s,
            &preflight("Origin: https://a.example\r\nOrigin: https://b.example\r\n"),
        );
        assert_eq!((o, v.len()), (Outcome::Malformed, 0));
        inspect(&mut s, &preflight("Origin: https://evil.example\r\n"));
        let mut incomplete = preflight("Origin: https://evil.example\r\n");
        incomplete.truncate(40);
        let (o, v) = inspect(&mut s, &incomplete);
        assert_eq!((o, v.len()), (Outcome::Incomplete, 0));
        inspect(&mut s, &preflight("Origin: https://evil.example\r\n"));
        let (o, v) = inspect(
            &mut s,
            &preflight(&format!("Origin: {}\r\n", " ".repeat(300))),
        );
        assert_eq!((o, v.len()), (Outcome::Malformed, 0));
    }
}
