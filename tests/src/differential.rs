//! The property the parsing code is held to, on one payload: the program's
//! own steps ([`scanner::scan`]) against httparse's reading with the
//! filter's bounds ([`reference::expected_head`]). The fuzz target
//! (`cors-filter-common/fuzz`) and the tests in `parse_differential.rs`
//! check this one function.

use cors_filter_common::Outcome;

use crate::{
    reference::{Head, canonical_origin, expected_head},
    scanner::{Scanned, scan},
};

/// Bytes left in the scan buffer past the payload by earlier packets. The
/// outcome must not depend on them: the parser reads no byte past the
/// payload's length (or past the scan window).
pub const STALE_BYTES: [u8; 3] = [0x00, b'\n', b'\r'];

/// Whether the parsing code agrees with the reference on `payload`, the
/// start of a TCP segment to an inspected port; `Err` says how not.
/// An empty payload is never scanned, so it agrees.
///
/// - httparse: not an `OPTIONS` request (or a prefix of one) ⇔ `NotPreflight`
///   or `NotHttp`; head past the bounds ⇔ `Incomplete`; two `Origin`s or an
///   `Origin` line past its bounds ⇔ `Malformed`.
/// - httparse: a preflight whose `Origin` is not an origin ⇔ `Malformed`; one
///   whose `Origin` is ⇔ `Denied` (the lookup answers no), looked up with
///   exactly the key of its canonical form.
/// - httparse refuses the head: any outcome, but a lookup is made with the
///   key of some valid origin or not at all.
/// - Whatever the payload: a lookup is made for `Denied` and only then, and
///   the result is the same whatever [`STALE_BYTES`] fill the buffer.
pub fn agrees(payload: &[u8]) -> Result<(), String> {
    if payload.is_empty() {
        return Ok(());
    }
    let scanned = scan(payload, STALE_BYTES[0]);
    let fail = |why: String| {
        Err(format!(
            "{why}\n  payload ({} bytes): b\"{}\"\n  scanner: {:?}, key {}",
            payload.len(),
            payload.escape_ascii(),
            scanned.outcome,
            shown_key(&scanned),
        ))
    };
    for stale in &STALE_BYTES[1..] {
        let again = scan(payload, *stale);
        if again != scanned {
            return fail(format!(
                "the result depends on the stale byte 0x{stale:02x} past the payload: \
                 {:?}, key {} with it",
                again.outcome,
                shown_key(&again),
            ));
        }
    }
    if (scanned.outcome == Outcome::Denied) != scanned.key.is_some() {
        return fail("a lookup is made exactly for a Denied outcome".into());
    }
    let head = expected_head(payload);
    let ok = match &head {
        Head::NotPreflight => matches!(scanned.outcome, Outcome::NotPreflight | Outcome::NotHttp),
        Head::Incomplete => scanned.outcome == Outcome::Incomplete,
        Head::Malformed => scanned.outcome == Outcome::Malformed,
        Head::Preflight { origin } => match canonical_origin(origin) {
            None => scanned.outcome == Outcome::Malformed,
            Some(canonical) => {
                let key = canonical.lpm_key();
                if scanned.outcome == Outcome::Denied && scanned.key.as_ref() != Some(&key) {
                    return fail(format!(
                        "httparse: preflight from {:?}, whose key is \"{}\"",
                        String::from_utf8_lossy(origin),
                        key.escape_ascii()
                    ));
                }
                scanned.outcome == Outcome::Denied
            }
        },
        Head::Invalid => match &scanned.key {
            Some(key) => {
                if !is_key_of_an_origin(key) {
                    return fail(
                        "httparse refuses the head, and the key looked up is no origin's".into(),
                    );
                }
                true
            }
            None => true,
        },
    };
    if !ok {
        let head = match &head {
            Head::Preflight { origin } => format!(
                "Preflight {{ origin: \"{}\" }} (canonical {:?})",
                origin.escape_ascii(),
                canonical_origin(origin)
            ),
            other => format!("{other:?}"),
        };
        return fail(format!("httparse: {head}"));
    }
    Ok(())
}

fn shown_key(scanned: &Scanned) -> String {
    match &scanned.key {
        Some(key) => format!("\"{}\"", key.escape_ascii()),
        None => "none".into(),
    }
}

/// Whether `key` is the lookup key of a valid origin: the origin it spells
/// (`scheme "://" [port] "/" reversed-host "\0"`, or `null\0`) is valid and
/// its canonical form has this very key.
pub fn is_key_of_an_origin(key: &[u8]) -> bool {
    let origin = if key == b"null\0" {
        b"null".to_vec()
    } else {
        let Some(text) = key.strip_suffix(b"\0") else {
            return false;
        };
        let Some(sep) = text.windows(3).position(|w| w == b"://") else {
            return false;
        };
        let (scheme, rest) = (&text[..sep], &text[sep + 3..]);
        let Some(slash) = rest.iter().position(|&b| b == b'/') else {
            return false;
        };
        let (port, reversed) = (&rest[..slash], &rest[slash + 1..]);
        let mut origin = scheme.to_vec();
        origin.extend_from_slice(b"://");
        origin.extend(reversed.iter().rev());
        if !port.is_empty() {
            origin.push(b':');
            origin.extend_from_slice(port);
        }
        origin
    };
    canonical_origin(&origin).is_some_and(|c| c.lpm_key() == key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_origins() {
        assert!(is_key_of_an_origin(b"https:///moc.elpmaxe.ppa\0"));
        assert!(is_key_of_an_origin(b"http://8080/tsohlacol\0"));
        assert!(is_key_of_an_origin(b"http://3000/]1::[\0"));
        assert!(is_key_of_an_origin(b"null\0"));
        // Not canonical: a default port, upper case, no NUL, no host.
        assert!(!is_key_of_an_origin(b"https://443/moc.elpmaxe.ppa\0"));
        assert!(!is_key_of_an_origin(b"https:///moc.elpmaxe.PPA\0"));
        assert!(!is_key_of_an_origin(b"https:///moc.elpmaxe.ppa"));
        assert!(!is_key_of_an_origin(b"https:///\0"));
        assert!(!is_key_of_an_origin(b"NULL\0"));
    }

    #[test]
    fn a_plain_preflight_agrees() {
        let req = b"OPTIONS / HTTP/1.1\r\nOrigin: https://App.example.com:443\r\nAccess-Control-Request-Method: PUT\r\n\r\n";
        assert_eq!(agrees(req), Ok(()));
        assert_eq!(agrees(b"GET / HTTP/1.1\r\n\r\n"), Ok(()));
        assert_eq!(agrees(b"OPT"), Ok(()));
        assert_eq!(agrees(b""), Ok(()));
    }
}
