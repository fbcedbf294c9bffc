//! From the first bytes of a TCP payload to an [`Outcome`]: the parser's
//! steps in the order the program takes them. The program supplies the
//! policy (the port's settings, the allowlist lookup); userspace tests and
//! fuzzers supply their own and run this very code.

use crate::{
    Outcome, Scratch,
    http::{
        RequestHead, RequestStart, classify_start, requested_method, scan_head, skip_empty_lines,
    },
    method::{Method, MethodSet},
    origin::OriginParse,
};

/// What the inspection asks of the policy the packet is judged by.
pub trait Policy {
    /// Whether requests with an unsafe method to the packet's port are
    /// checked (`protect_unsafe_methods`).
    fn protects_unsafe_methods(&self) -> bool;

    /// Whether such a request, whose head goes on past the window with
    /// neither `Origin` nor `Sec-Fetch-Site: cross-site` within it, passes
    /// (`unsafe_on_incomplete = "pass"`) rather than being dropped.
    fn passes_incomplete_unsafe(&self) -> bool;

    /// The methods the allowlist allows the normalised origin in `origin`
    /// (see `crate::allow`): [`MethodSet::NONE`] when it does not hold it.
    /// Asked at most once per packet.
    fn allowed_methods(&self, origin: &mut OriginParse) -> MethodSet;

    /// The settings of the policy generation the packet is judged by.
    fn settings(&self) -> crate::FilterConfig;
}

/// The outcome of the payload in `scratch.payload[..len]` (`len` is 1 to
/// [`SCAN_BYTES`](crate::http::SCAN_BYTES)).
///
/// - A preflight (`OPTIONS` with `Origin` and
///   `Access-Control-Request-Method`) is allowed when the allowlist holds
///   its origin with the method it asks for.
/// - A request with an unsafe method, to a port that protects them, is
///   allowed when the allowlist holds its `Origin` with its method; without
///   an `Origin`, it is refused if `Sec-Fetch-Site` says `cross-site` and
///   passes otherwise (not from a browser). Its head need not fit in the
///   window when the lines that decide do; when they do not, it is
///   dropped unless the port says otherwise (a page chooses its form's URL,
///   and a long one pushes `Origin` out of the window).
/// - Anything else passes.
///
/// Empty lines before the request line are skipped (moving the request to
/// the start of `scratch.payload`), as servers skip them; they count in the
/// scan window. Afterwards `scratch.origin` holds the `Origin` value as far
/// as it was read, and nothing when it was not (for the denial event), and
/// `scratch.judged` the method judged.
#[inline(always)]
pub fn inspect_payload(scratch: &mut Scratch, len: usize, policy: &impl Policy) -> Outcome {
    scratch.origin.clear();
    scratch.judged.set(Method::Other as u32);
    scratch.unsafe_request.set(0);
    scratch.pass_incomplete_unsafe.set(0);
    let Some(len) = skip_empty_lines(&mut scratch.payload, len, &mut scratch.head) else {
        return Outcome::Incomplete;
    };
    let method = match classify_start(&scratch.payload, len, &mut scratch.head) {
        RequestStart::NotHttp => return Outcome::NotHttp,
        RequestStart::SplitOptions => return Outcome::Incomplete,
        RequestStart::Request(method) => method,
    };
    let preflight = method == Method::Options;
    // Written so that the port's setting is read only for an unsafe
    // method: computed up front, as the simpler form lets the compiler do,
    // it made the verifier walk the scan below once per kind of request
    // and pass its 1M-instruction limit.
    #[allow(clippy::nonminimal_bool)]
    if !preflight && !(method.is_unsafe() && policy.protects_unsafe_methods()) {
        return Outcome::NotPreflight;
    }
    // From here on, the kind of request and its method are read from
    // memory, not kept in registers: the verifier then checks the scan and
    // what follows once, not once per kind of request (see `Slot`). A
    // preflight's method judged is the one it asks for, set below once its
    // head is read.
    scratch.unsafe_request.set(!preflight as u32);
    scratch
        .judged
        .set(if preflight { Method::Other } else { method } as u32);
    // The port's setting too: the verifier would otherwise keep what the
    // test above learnt of it across the scan, and walk the scan again.
    scratch
        .pass_incomplete_unsafe
        .set(policy.passes_incomplete_unsafe() as u32);
    let complete = match scan_head(&scratch.payload, len, &mut scratch.head) {
        RequestHead::NotHttp => return Outcome::NotHttp,
        RequestHead::Incomplete => false,
        RequestHead::Complete => true,
    };
    let head = &scratch.head;
    if scratch.unsafe_request.get() == 0 {
        if !complete {
            return Outcome::Incomplete;
        }
        if head.origins() == 0 || head.request_methods() == 0 {
            return Outcome::NotPreflight;
        }
        scratch
            .judged
            .set(requested_method(&scratch.payload, head) as u32);
    } else if head.origins() == 0 {
        // A browser sends `Origin` with every unsafe request; without one,
        // `Sec-Fetch-Site` still tells a cross-site request.
        return if head.cross_site() {
            Outcome::CrossSiteNoOrigin
        } else if complete {
            Outcome::NoOrigin
        } else {
            // The lines past the window may hold either: dropped unless
            // the port passes such requests (see
            // `Scratch::settings_for_request`).
            Outcome::Incomplete
        };
    }
    // Read from memory at each use, as above.
    let unsafe_request = scratch.unsafe_request.get() != 0;
    if head.origins() > 1 || head.folded() {
        return Outcome::malformed(unsafe_request);
    }
    let origin = &mut scratch.origin;
    if origin
        .copy_header_value(&scratch.payload, head.origin_value_at())
        .is_err()
        || origin.normalize().is_err()
    {
        return Outcome::malformed(scratch.unsafe_request.get() != 0);
    }
    let allowed = policy.allowed_methods(origin);
    let unsafe_request = scratch.unsafe_request.get() != 0;
    if allowed.is_empty() {
        Outcome::denied(unsafe_request)
    } else if !allowed.contains_code(scratch.judged.get()) {
        Outcome::method_denied(unsafe_request)
    } else {
        Outcome::allowed(unsafe_request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{http::SCAN_BYTES, method::Method};
    use std::{boxed::Box, format, vec::Vec};

    fn scratch() -> Box<Scratch> {
        Box::new(Scratch::new(0))
    }

    /// A policy that protects unsafe methods and allows no origin.
    struct DenyAll;

    impl Policy for DenyAll {
        fn protects_unsafe_methods(&self) -> bool {
            true
        }

        fn passes_incomplete_unsafe(&self) -> bool {
            false
        }

        fn allowed_methods(&self, _: &mut OriginParse) -> MethodSet {
            MethodSet::NONE
        }

        fn settings(&self) -> crate::FilterConfig {
            crate::FilterConfig::new(crate::Mode::Enforce, crate::OnIncomplete::Drop)
        }
    }

    /// Inspects `request` in `scratch` (as the program does, after earlier
    /// packets) and returns the outcome and the origin value it left.
    fn inspect(scratch: &mut Scratch, request: &[u8]) -> (Outcome, Vec<u8>) {
        let len = request.len().min(SCAN_BYTES);
        scratch.payload[..len].copy_from_slice(&request[..len]);
        let outcome = inspect_payload(scratch, len, &DenyAll);
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

    /// A policy that protects unsafe methods (or not) and allows
    /// `https://app.example` with `methods`.
    struct AppOnly {
        protects: bool,
        passes_incomplete: bool,
        methods: MethodSet,
    }

    impl Policy for AppOnly {
        fn protects_unsafe_methods(&self) -> bool {
            self.protects
        }

        fn passes_incomplete_unsafe(&self) -> bool {
            self.passes_incomplete
        }

        fn allowed_methods(&self, origin: &mut OriginParse) -> MethodSet {
            if origin.key() == b"https:///elpmaxe.ppa\0" {
                self.methods
            } else {
                MethodSet::NONE
            }
        }

        fn settings(&self) -> crate::FilterConfig {
            crate::FilterConfig::new(crate::Mode::Enforce, crate::OnIncomplete::Drop)
        }
    }

    fn judge(policy: &AppOnly, request: &str) -> (Outcome, Method) {
        let mut s = scratch();
        let bytes = request.as_bytes();
        let len = bytes.len().min(SCAN_BYTES);
        s.payload[..len].copy_from_slice(&bytes[..len]);
        let outcome = inspect_payload(&mut s, len, policy);
        (outcome, Method::from_code(s.judged.get()))
    }

    const PROTECT: AppOnly = AppOnly {
        protects: true,
        passes_incomplete: false,
        methods: MethodSet::ANY,
    };

    #[test]
    fn unsafe_requests_are_judged_by_their_origin() {
        let post = |headers: &str| {
            judge(
                &PROTECT,
                &format!("POST /t HTTP/1.1\r\nHost: h\r\n{headers}\r\n"),
            )
            .0
        };
        assert_eq!(
            post("Origin: https://app.example\r\n"),
            Outcome::UnsafeAllowed
        );
        assert_eq!(
            post("Origin: https://evil.example\r\n"),
            Outcome::UnsafeDenied
        );
        assert_eq!(
            post("Origin: https://evil.example\r\nSec-Fetch-Site: cross-site\r\n"),
            Outcome::UnsafeDenied
        );
        assert_eq!(
            post("Sec-Fetch-Site: cross-site\r\nOrigin: https://app.example\r\n"),
            Outcome::UnsafeAllowed
        );
        assert_eq!(post("Origin: null\r\n"), Outcome::UnsafeDenied);
        assert_eq!(
            post("Origin: https://app.example/x\r\n"),
            Outcome::UnsafeMalformed
        );
        assert_eq!(
            post("Origin: https://app.example\r\norigin: https://app.example\r\n"),
            Outcome::UnsafeMalformed
        );
        assert_eq!(
            post("Sec-Fetch-Site: cross-site\r\n"),
            Outcome::CrossSiteNoOrigin
        );
        assert_eq!(
            post("sec-fetch-site:\tCROSS-SITE \r\n"),
            Outcome::CrossSiteNoOrigin
        );
        assert_eq!(post("Sec-Fetch-Site: same-origin\r\n"), Outcome::NoOrigin);
        assert_eq!(post("Sec-Fetch-Site: cross-sites\r\n"), Outcome::NoOrigin);
        assert_eq!(post(""), Outcome::NoOrigin);
    }

    #[test]
    fn safe_methods_and_unprotected_ports_pass_unread() {
        let evil = "Origin: https://evil.example\r\n\r\n";
        for method in ["GET", "HEAD", "TRACE"] {
            let (o, _) = judge(&PROTECT, &format!("{method} / HTTP/1.1\r\n{evil}"));
            assert_eq!(o, Outcome::NotPreflight, "{method}");
        }
        for method in ["POST", "PUT", "PATCH", "DELETE", "PROPFIND", "post"] {
            let request = format!("{method} / HTTP/1.1\r\n{evil}");
            assert_eq!(
                judge(&PROTECT, &request).0,
                Outcome::UnsafeDenied,
                "{method}"
            );
            let open = AppOnly {
                protects: false,
                ..PROTECT
            };
            assert_eq!(judge(&open, &request).0, Outcome::NotPreflight, "{method}");
        }
    }

    #[test]
    fn methods_restrict_preflights_and_unsafe_requests() {
        let get_post = AppOnly {
            methods: MethodSet::NONE.with(Method::Get).with(Method::Post),
            ..PROTECT
        };
        let origin = "Origin: https://app.example\r\n";
        let preflight = |acrm: &str| {
            judge(
                &get_post,
                &format!(
                    "OPTIONS / HTTP/1.1\r\n{origin}Access-Control-Request-Method:{acrm}\r\n\r\n"
                ),
            )
        };
        assert_eq!(preflight(" POST"), (Outcome::Allowed, Method::Post));
        assert_eq!(preflight("POST "), (Outcome::Allowed, Method::Post));
        assert_eq!(preflight(" PUT"), (Outcome::MethodDenied, Method::Put));
        assert_eq!(preflight(" post"), (Outcome::MethodDenied, Method::Other));
        assert_eq!(preflight(" POSTS"), (Outcome::MethodDenied, Method::Other));
        assert_eq!(
            preflight(" POST\r\nAccess-Control-Request-Method: POST"),
            (Outcome::MethodDenied, Method::Other)
        );
        let request =
            |method: &str| judge(&get_post, &format!("{method} / HTTP/1.1\r\n{origin}\r\n"));
        assert_eq!(request("POST"), (Outcome::UnsafeAllowed, Method::Post));
        assert_eq!(request("PUT"), (Outcome::UnsafeMethodDenied, Method::Put));
        assert_eq!(request("GET"), (Outcome::NotPreflight, Method::Other));
    }

    #[test]
    fn an_unsafe_request_is_judged_on_the_whole_lines_in_the_window() {
        let cookie = format!("Cookie: {}\r\n", "c".repeat(2 * SCAN_BYTES));
        let (o, _) = judge(
            &PROTECT,
            &format!("POST / HTTP/1.1\r\nOrigin: https://evil.example\r\n{cookie}\r\n"),
        );
        assert_eq!(o, Outcome::UnsafeDenied);
        let (o, _) = judge(
            &PROTECT,
            &format!("POST / HTTP/1.1\r\nSec-Fetch-Site: cross-site\r\n{cookie}\r\n"),
        );
        assert_eq!(o, Outcome::CrossSiteNoOrigin);
        let late_origin =
            format!("POST / HTTP/1.1\r\n{cookie}Origin: https://evil.example\r\n\r\n");
        assert_eq!(judge(&PROTECT, &late_origin).0, Outcome::Incomplete);
        // An `Origin` line cut by the window is not read.
        let pad = format!("X: {}\r\n", "p".repeat(SCAN_BYTES - 40));
        let (o, _) = judge(
            &PROTECT,
            &format!("POST / HTTP/1.1\r\n{pad}Origin: https://evil.example\r\n\r\n"),
        );
        assert_eq!(o, Outcome::Incomplete);
        // Nor is anything when the URL alone fills the window: a page
        // chooses its form's URL.
        let (o, _) = judge(
            &PROTECT,
            &format!(
                "POST /t?{} HTTP/1.1\r\nOrigin: https://evil.example\r\n\r\n",
                "a".repeat(SCAN_BYTES)
            ),
        );
        assert_eq!(o, Outcome::Incomplete);
        // A preflight still needs its whole head.
        let (o, _) = judge(
            &PROTECT,
            &format!(
                "OPTIONS / HTTP/1.1\r\nOrigin: https://evil.example\r\nAccess-Control-Request-Method: PUT\r\n{cookie}\r\n"
            ),
        );
        assert_eq!(o, Outcome::Incomplete);
    }

    #[test]
    fn undecided_unsafe_requests_are_dropped_unless_the_port_passes_them() {
        use crate::{
            FilterConfig, Verdict,
            config::{Mode, OnIncomplete},
        };
        let verdict = |policy: &AppOnly, request: &str, on_incomplete: OnIncomplete| {
            let mut s = scratch();
            let len = request.len().min(SCAN_BYTES);
            s.payload[..len].copy_from_slice(&request.as_bytes()[..len]);
            let outcome = inspect_payload(&mut s, len, policy);
            let settings = s.settings_for_request(FilterConfig::new(Mode::Enforce, on_incomplete));
            (outcome, outcome.verdict(&settings))
        };
        let cookie = format!("Cookie: {}\r\n", "c".repeat(2 * SCAN_BYTES));
        let late = format!("POST / HTTP/1.1\r\n{cookie}Origin: https://evil.example\r\n\r\n");
        let preflight = format!(
            "OPTIONS / HTTP/1.1\r\n{cookie}Origin: https://evil.example\r\nAccess-Control-Request-Method: PUT\r\n\r\n"
        );
        let passing = AppOnly {
            passes_incomplete: true,
            ..PROTECT
        };
        let incomplete = |verdict| (Outcome::Incomplete, verdict);
        // The port's setting decides for unsafe requests, whatever `on_incomplete` says...
        for on_incomplete in [OnIncomplete::Pass, OnIncomplete::Drop] {
            assert_eq!(
                verdict(&PROTECT, &late, on_incomplete),
                incomplete(Verdict::Drop)
            );
            assert_eq!(
                verdict(&passing, &late, on_incomplete),
                incomplete(Verdict::Pass)
            );
        }
        // ... and `on_incomplete` for preflights, whatever the port says.
        for policy in [&PROTECT, &passing] {
            assert_eq!(
                verdict(policy, &preflight, OnIncomplete::Pass),
                incomplete(Verdict::Pass)
            );
            assert_eq!(
                verdict(policy, &preflight, OnIncomplete::Drop),
                incomplete(Verdict::Drop)
            );
        }
    }
}
