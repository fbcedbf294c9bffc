//! From the first bytes of a TCP payload to an [`Outcome`]: the parser's
//! steps in the order the program takes them. The program supplies the
//! allowlist lookup; userspace tests and fuzzers supply their own and run
//! this very code.

use crate::{
    Outcome, Scratch,
    http::{
        MAX_LEADING_EMPTY_BYTES, RequestHead, RequestStart, SCAN_BYTES, classify_start,
        leading_empty_line_bytes, scan_head, shift_to_start,
    },
    origin::LpmOriginKey,
};

/// The outcome of the payload in `scratch.payload[..len]` (`len` is 1 to
/// [`SCAN_BYTES`]). `is_allowed` answers whether
/// the allowlist holds a normalised origin's key; it is asked at most once,
/// and only for a well-formed preflight.
///
/// Empty lines before the request line are skipped as a server skips them
/// (see [`MAX_LEADING_EMPTY_BYTES`]): the request is moved to the start of
/// the buffer, so its head must still end within the first
/// [`SCAN_BYTES`] bytes of the payload.
#[inline(always)]
pub fn inspect_payload(
    scratch: &mut Scratch,
    len: usize,
    is_allowed: impl FnOnce(&LpmOriginKey) -> bool,
) -> Outcome {
    let mut len = len;
    let skip = leading_empty_line_bytes(&scratch.payload, len, &mut scratch.skipped);
    if skip > 0 {
        if skip > MAX_LEADING_EMPTY_BYTES {
            return Outcome::Incomplete;
        }
        if skip >= len {
            // Only empty lines: a request in a later segment starts that
            // segment, and is inspected there.
            return Outcome::NotHttp;
        }
        scratch.payload_len.set((len - skip) as u32);
        shift_to_start(&mut scratch.payload, skip, &scratch.payload_len);
        // Masked, so that the verifier sees 1..=SCAN_BYTES (it is: skip < len).
        len = ((scratch.payload_len.get().wrapping_sub(1) & (SCAN_BYTES as u32 - 1)) + 1) as usize;
    }
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
