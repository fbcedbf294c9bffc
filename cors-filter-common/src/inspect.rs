//! From the first bytes of a TCP payload to an [`Outcome`]: the parser's
//! steps in the order the program takes them. The program supplies the
//! allowlist lookup; userspace tests and fuzzers supply their own and run
//! this very code.

use crate::{
    Outcome, Scratch,
    http::{RequestHead, RequestStart, classify_start, scan_head, skip_empty_lines},
    origin::LpmOriginKey,
};

/// The outcome of the payload in `scratch.payload[..len]` (`len` is 1 to
/// [`SCAN_BYTES`](crate::http::SCAN_BYTES)). `is_allowed` answers whether
/// the allowlist holds a normalised origin's key; it is asked at most once,
/// and only for a well-formed preflight. Empty lines before the request
/// line are skipped (moving the request to the start of `scratch.payload`),
/// as servers skip them; they count in the scan window.
#[inline(always)]
pub fn inspect_payload(
    scratch: &mut Scratch,
    len: usize,
    is_allowed: impl FnOnce(&LpmOriginKey) -> bool,
) -> Outcome {
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
    if is_allowed(&origin.lpm) {
        Outcome::Allowed
    } else {
        Outcome::Denied
    }
}
