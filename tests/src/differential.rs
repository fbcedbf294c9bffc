//! The property the parsing code is held to, on one payload: the program's
//! own steps ([`scanner::scan`]) against httparse's reading with the
//! filter's bounds ([`reference::expected_head`]), on a port that protects
//! unsafe methods and on one that does not, with the allowlist answering
//! no, any method, or some methods. The fuzz target
//! (`cors-filter-common/fuzz`) and the tests in `parse_differential.rs`
//! check this one function.

use cors_filter_common::{Method, MethodSet, Outcome};

use crate::{
    reference::{Allowed, Expected, Head, canonical_origin, expected_head},
    scanner::{ScanPolicy, Scanned, scan},
};

/// Bytes left in the scan buffer past the payload by earlier packets. The
/// outcome must not depend on them: the parser reads no byte past the
/// payload's length (or past the scan window).
pub const STALE_BYTES: [u8; 3] = [0x00, b'\n', b'\r'];

/// Whether the parsing code agrees with the reference on `payload`, the
/// start of a TCP segment to an inspected port; `Err` says how not.
/// An empty payload is never scanned, so it agrees.
///
/// Under each [`ScanPolicy`]: the port protecting unsafe methods or not,
/// and the allowlist answering [`MethodSet::NONE`], [`MethodSet::ANY`] and
/// some known methods ([`some_methods`], which varies with the payload);
/// for an incomplete request, the port passing undecided unsafe requests
/// or not:
///
/// - httparse: nothing the filter judges (see [`Head::NotJudged`]) ⇔
///   `NotPreflight` or `NotHttp`; head past the bounds (for an unsafe
///   request: and no decisive line inside them) ⇔ `Incomplete`, handled
///   by `on_incomplete` or, for an unsafe request, by its port's
///   `unsafe_on_incomplete`; two
///   `Origin`s, an `Origin` line past its bounds, or a fold among the
///   lines read with an `Origin` ⇔ `Malformed` or `UnsafeMalformed`;
///   `CrossSiteNoOrigin` and `NoOrigin` alike.
/// - httparse: a request judged by an `Origin` that is not an origin ⇔
///   (`Unsafe`)`Malformed`; by one that is ⇔ the outcome the answer leads
///   to (denied, allowed, or method denied), looked up with exactly the key
///   of its canonical form and judged by the method the reference reads.
/// - httparse refuses the head: any outcome, but a lookup is made with the
///   key of some valid origin or not at all.
/// - Whatever the payload: a lookup is made exactly for the outcomes that
///   follow one, and the result is the same whatever [`STALE_BYTES`] fill
///   the buffer.
pub fn agrees(payload: &[u8]) -> Result<(), String> {
    if payload.is_empty() {
        return Ok(());
    }
    for protects_unsafe in [true, false] {
        let head = expected_head(payload, protects_unsafe);
        let mut asked_protects = false;
        for (n, answer) in [MethodSet::NONE, MethodSet::ANY, some_methods(payload)]
            .into_iter()
            .enumerate()
        {
            let policy = ScanPolicy {
                protects_unsafe,
                passes_incomplete_unsafe: false,
                answer,
            };
            // Stale bytes are checked once per port setting: the answer
            // comes after the last byte of the payload is read.
            let scanned = agrees_under(payload, &head, policy, n == 0)?;
            asked_protects |= scanned.asked_protects;
            if scanned.outcome == Outcome::Incomplete {
                // Which setting handles it: the port's passing them too.
                let passing = ScanPolicy {
                    passes_incomplete_unsafe: true,
                    ..policy
                };
                agrees_under(payload, &head, passing, false)?;
            }
            if scanned.key.is_none() {
                // No lookup: the answer was not read, and another one
                // leads to the same.
                break;
            }
        }
        if !asked_protects {
            // The port's setting was not read: the other one leads to the
            // same.
            break;
        }
    }
    Ok(())
}

/// Some known methods, for the allowlist's third answer: a set that
/// depends on the payload's bytes (FNV-1a), so that over many payloads
/// every method is in it and out of it with every other, and the same
/// payload always gets the same set (the fuzzer needs that). Never empty
/// (that is `NONE`), never unknown methods (that is `ANY`).
pub fn some_methods(payload: &[u8]) -> MethodSet {
    let hash = payload.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    });
    let bits = (hash >> 32) as usize;
    let set = Method::KNOWN
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .fold(MethodSet::NONE, |set, (_, &m)| set.with(m));
    if set.is_empty() {
        MethodSet::NONE.with(Method::Post)
    } else {
        set
    }
}

/// What the reference reads an answer of the scan's policy as.
fn allowed_by(answer: MethodSet) -> Allowed {
    if answer.is_empty() {
        Allowed::Not
    } else if answer == MethodSet::ANY {
        Allowed::AnyMethod
    } else {
        Allowed::Only(answer.known().map(Method::name).collect())
    }
}

/// Whether an outcome follows an allowlist lookup.
fn follows_a_lookup(outcome: Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Allowed
            | Outcome::Denied
            | Outcome::MethodDenied
            | Outcome::UnsafeAllowed
            | Outcome::UnsafeDenied
            | Outcome::UnsafeMethodDenied
    )
}

/// [`agrees`] under one policy, `head` being the reference's reading of
/// `payload` for the policy's port; checks that stale bytes past the
/// payload change nothing when `check_stale`. The scan, when it agrees.
fn agrees_under(
    payload: &[u8],
    head: &Head,
    policy: ScanPolicy,
    check_stale: bool,
) -> Result<Scanned, String> {
    let scanned = scan(payload, STALE_BYTES[0], policy);
    let fail = |why: String| {
        Err(format!(
            "{why}\n  payload ({} bytes): b\"{}\"\n  port protects unsafe methods: {}, \
             passes undecided ones: {}, allowlist answers {}\n  scanner: {:?}, judged {:?}, \
             key {}, incomplete dropped (on_incomplete = pass): {}",
            payload.len(),
            payload.escape_ascii(),
            policy.protects_unsafe,
            policy.passes_incomplete_unsafe,
            shown_answer(policy.answer),
            scanned.outcome,
            scanned.judged,
            shown_key(&scanned),
            scanned.drops_incomplete,
        ))
    };
    if check_stale {
        for stale in &STALE_BYTES[1..] {
            let again = scan(payload, *stale, policy);
            if again != scanned {
                return fail(format!(
                    "the result depends on the stale byte 0x{stale:02x} past the payload: \
                     {:?}, judged {:?}, key {} with it",
                    again.outcome,
                    again.judged,
                    shown_key(&again),
                ));
            }
        }
    }
    if follows_a_lookup(scanned.outcome) != scanned.key.is_some() {
        return fail("a lookup is made exactly for the outcomes that follow one".into());
    }
    if let Head::Judged { origin, method, .. } = head
        && let Some(canonical) = canonical_origin(origin)
        && let Some(key) = &scanned.key
    {
        let expected_key = canonical.lpm_key();
        if *key != expected_key {
            return fail(format!(
                "httparse: judged by origin {:?}, whose key is \"{}\"",
                String::from_utf8_lossy(origin),
                expected_key.escape_ascii()
            ));
        }
        let judged = (scanned.judged != Method::Other).then(|| scanned.judged.name());
        if judged != *method {
            return fail(format!("httparse: judged by the method {method:?}"));
        }
    }
    if *head == Head::Invalid {
        if scanned
            .key
            .as_ref()
            .is_some_and(|key| !is_key_of_an_origin(key))
        {
            return fail("httparse refuses the head, and the key looked up is no origin's".into());
        }
        return Ok(scanned);
    }
    let expected = head.expected(|_| allowed_by(policy.answer));
    if !expected.matches(scanned.outcome) {
        let head = match head {
            Head::Judged { origin, .. } => format!(
                "{head:?} (origin \"{}\", canonical {:?})",
                origin.escape_ascii(),
                canonical_origin(origin)
            ),
            other => format!("{other:?}"),
        };
        return fail(format!("httparse: {head}, expected {expected:?}"));
    }
    if scanned.outcome == Outcome::Incomplete {
        let dropped = expected == Expected::UnsafeIncomplete && !policy.passes_incomplete_unsafe;
        if scanned.drops_incomplete != dropped {
            return fail(format!(
                "httparse: {head:?}: with on_incomplete = pass, dropped: {dropped}"
            ));
        }
    }
    Ok(scanned)
}

fn shown_key(scanned: &Scanned) -> String {
    match &scanned.key {
        Some(key) => format!("\"{}\"", key.escape_ascii()),
        None => "none".into(),
    }
}

fn shown_answer(answer: MethodSet) -> String {
    match answer {
        MethodSet::NONE => "no (not listed)".into(),
        MethodSet::ANY => "any method".into(),
        some => {
            let names: Vec<&str> = some.known().map(Method::name).collect();
            names.join(",")
        }
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
    fn plain_requests_agree() {
        let req = b"OPTIONS / HTTP/1.1\r\nOrigin: https://App.example.com:443\r\nAccess-Control-Request-Method: PUT\r\n\r\n";
        assert_eq!(agrees(req), Ok(()));
        assert_eq!(agrees(b"GET / HTTP/1.1\r\n\r\n"), Ok(()));
        assert_eq!(
            agrees(b"POST / HTTP/1.1\r\nOrigin: https://a.example\r\n\r\nx=1"),
            Ok(())
        );
        assert_eq!(
            agrees(b"PATCH / HTTP/1.1\r\nSec-Fetch-Site: cross-site\r\n\r\n"),
            Ok(())
        );
        assert_eq!(agrees(b"DELETE / HTTP/1.1\r\n\r\n"), Ok(()));
        assert_eq!(agrees(b"OPT"), Ok(()));
        assert_eq!(agrees(b""), Ok(()));
    }

    #[test]
    fn the_third_answer_is_some_known_methods() {
        let mut seen = MethodSet::NONE;
        for n in 0..64u32 {
            let set = some_methods(&n.to_le_bytes());
            assert!(!set.is_empty() && !set.contains(Method::Other));
            seen = MethodSet(seen.0 | set.0);
            assert_eq!(set, some_methods(&n.to_le_bytes()));
        }
        assert_eq!(seen.known().count(), Method::KNOWN.len());
    }
}
