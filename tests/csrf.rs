//! End-to-end CSRF mode: with `protect_unsafe_methods`, the filter refuses
//! cross-origin requests that change state (a form POST, PUT, PATCH,
//! DELETE: any method but GET, HEAD, OPTIONS and TRACE) from origins the
//! allowlist does not hold, before the server acts on them. curl in the
//! client namespace sends the headers a browser sends (`Origin`,
//! `Sec-Fetch-Site`); the test server's log shows what reached it, and the
//! filter's counters say why.
//!
//! The filters answer a refused request with a reset (`action = "reset"`):
//! curl fails at once instead of waiting out its timeout, and the request is
//! one segment, never retransmitted, so that every check can state exactly
//! how it moves the counters. Each test runs its checks on one bed and
//! filter, each check on a path of its own. Needs root; fails, never skips,
//! without it.

use std::path::Path;

use anyhow::{Result, ensure};
use cors_filter_tests::{
    frames::bare_xdp::{BareAction, BareXdp},
    harness::attempt::Attempt,
    harness::bed::Bed,
    harness::client::{self, Family, Request},
    harness::filter::{FilterHome, RunningFilter, counter},
    harness::netns::CLIENT_IF,
    harness::server::{PORT, RequestHead, Seen, ServerOptions},
};

const ALLOWED: &str = "https://app.example.com";
const DENIED: &str = "https://evil.example";
/// Allowed for GET and POST only (in [`METHODS_CONFIG`]).
const ADMIN: &str = "https://admin.example.com";
/// Added at run time for GET and PUT only.
const OPS: &str = "https://ops.example.com";
/// A second inspected port, whose `[port.N]` table turns the protection off.
const UNPROTECTED_PORT: u16 = 8081;
const FORM: &str = "application/x-www-form-urlencoded";
/// What a cross-site form submits.
const FORM_BODY: &str = "amount=100&to=mallory";
/// The bytes of a segment the program reads at once (a chunk): the
/// big-head checks put the deciding lines before or past the first one.
const HEAD_WINDOW: usize = cors_filter_common::http::SCAN_BYTES;
/// Payload room in one TCP segment on the veth pair (MTU 1500, IPv4 and
/// TCP headers with timestamps): a head meant to be judged as one segment
/// must fit in it.
const SEGMENT_PAYLOAD: usize = 1500 - 20 - 32;

/// A config protecting [`PORT`] (`ALLOWED` allowed, refusals answered
/// with a reset); `extra` adds top-level keys.
fn protected_config(extra: &str) -> String {
    format!(
        "ports = [{PORT}]\nallow = [\"{ALLOWED}\"]\naction = \"reset\"\nprotect_unsafe_methods = true\n{extra}"
    )
}

/// [`ALLOWED`] for any method, [`ADMIN`] for GET and POST, on a protected
/// [`PORT`].
const METHODS_CONFIG: &str = r#"ports = [8080]
action = "reset"
protect_unsafe_methods = true
allow = [
  "https://app.example.com",
  { origin = "https://admin.example.com", methods = ["GET", "POST"] },
]
"#;

/// A cross-site form POST as a browser sends it: `Origin` early among the
/// headers, `Sec-Fetch-Site` after it, a form body, no preflight.
fn form_post(path: &str, origin: &str) -> Request {
    Request::new("POST", path)
        .header("Origin", origin)
        .header("Content-Type", FORM)
        .header("Sec-Fetch-Site", "cross-site")
        .body(FORM_BODY)
}

/// A cross-site `method` request as `fetch` sends it after its preflight
/// (a JSON body, except for DELETE).
fn fetch_request(method: &str, path: &str, origin: &str) -> Request {
    let request = Request::new(method, path)
        .header("Origin", origin)
        .header("Sec-Fetch-Site", "cross-site");
    match method {
        "DELETE" => request,
        _ => request
            .header("Content-Type", "application/json")
            .body(r#"{"name":"x"}"#),
    }
}

/// A POST with neither `Origin` nor `Sec-Fetch-Site`, as non-browser
/// clients send, plus `extra` header lines.
fn bare_post(path: &str, extra: &[(&str, &str)]) -> Request {
    extra.iter().fold(
        Request::new("POST", path)
            .header("Content-Type", FORM)
            .body("a=1"),
        |request, (name, value)| request.header(name, value),
    )
}

/// A CORS preflight from `origin` for a request with `method`.
fn preflight(path: &str, origin: &str, method: &str) -> Request {
    Request::new("OPTIONS", path)
        .header("Origin", origin)
        .header("Access-Control-Request-Method", method)
        .header("Access-Control-Request-Headers", "content-type")
}

/// A session cookie long enough that a head holding it goes past
/// [`HEAD_WINDOW`] whatever else it holds, short enough that the head
/// still fits in one segment.
fn big_cookie() -> String {
    format!("session={}", "c".repeat(HEAD_WINDOW + 60))
}

/// A form POST from `origin` whose head goes past the window, with
/// `Origin` early, as browsers order their headers (the cookie last).
fn big_post_origin_early(path: &str, origin: &str) -> Request {
    form_post(path, origin).header("Cookie", &big_cookie())
}

/// A POST from `origin` whose head goes past the window, with `Origin`
/// and `Sec-Fetch-Site` only after it (behind the cookie).
fn big_post_origin_late(path: &str, origin: &str) -> Request {
    Request::new("POST", path)
        .header("Content-Type", FORM)
        .header("Cookie", &big_cookie())
        .header("Origin", origin)
        .header("Sec-Fetch-Site", "cross-site")
        .body(FORM_BODY)
}

/// A form POST with the allowed origin twice.
fn post_with_two_origins(path: &str) -> Request {
    form_post(path, ALLOWED).header("Origin", ALLOWED)
}

/// A bed whose server listens on `ports` and keeps request heads.
fn bed(ports: &[u16]) -> Result<Bed> {
    Bed::with_server_options(
        Path::new(env!("CARGO_BIN_EXE_cors-test-server")),
        &ServerOptions {
            ports: ports.to_vec(),
            keep_heads: true,
            ..ServerOptions::default()
        },
    )
}

/// A [`bed`] whose filter can answer with a reset: native XDP's reset
/// reaches the veth peer at once only if an XDP program runs there too (see
/// `bare_xdp`).
struct ResetBed {
    /// Declared first: detached before the namespaces go.
    _client_xdp: BareXdp,
    bed: Bed,
}

fn reset_bed(ports: &[u16]) -> Result<ResetBed> {
    let bed = bed(ports)?;
    let client_xdp = BareXdp::attach(BareAction::Pass, &bed.pair.client_ns_path(), CLIENT_IF)?;
    Ok(ResetBed {
        _client_xdp: client_xdp,
        bed,
    })
}

/// What becomes of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// It reaches the server, which answers.
    Answered,
    /// The filter drops it and resets the connection: curl fails at once
    /// and the server never sees it.
    Reset,
}

/// Counters a check states: a request moves `requests` by one, the ones
/// its check names (and, when reset, `dropped` and `reset_sent`) by one,
/// and the rest of these not at all.
const WATCHED: [&str; 13] = [
    "requests",
    "preflight_allow",
    "preflight_deny",
    "pass_not_preflight",
    "incomplete",
    "unsafe_allow",
    "unsafe_deny",
    "no_origin",
    "malformed",
    "method_deny",
    "cross_site",
    "dropped",
    "reset_sent",
];

/// One request and what must come of it.
struct Check {
    what: &'static str,
    family: Family,
    request: Request,
    fate: Fate,
    /// The counters it moves by one besides `requests` (and, when reset,
    /// `dropped` and `reset_sent`).
    counters: &'static [&'static str],
}

impl Check {
    fn v4(
        what: &'static str,
        request: Request,
        fate: Fate,
        counters: &'static [&'static str],
    ) -> Check {
        Check {
            what,
            family: Family::V4,
            request,
            fate,
            counters,
        }
    }

    fn v6(
        what: &'static str,
        request: Request,
        fate: Fate,
        counters: &'static [&'static str],
    ) -> Check {
        Check {
            family: Family::V6,
            ..Check::v4(what, request, fate, counters)
        }
    }

    /// How much `name` must have moved.
    fn expected_change(&self, name: &str) -> u64 {
        let named = self.counters.contains(&name);
        let refusal = self.fate == Fate::Reset && matches!(name, "dropped" | "reset_sent");
        u64::from(name == "requests" || named || refusal)
    }

    /// What went otherwise than this check says: `attempt` is curl's
    /// account, `arrived` what the server logged meanwhile.
    fn problems(
        &self,
        attempt: &Attempt,
        arrived: &[Seen],
        before: &serde_json::Value,
        after: &serde_json::Value,
    ) -> Vec<String> {
        let mut problems = Vec::new();
        match self.fate {
            Fate::Answered => {
                let expected = Seen {
                    method: self.request.method.clone(),
                    path: self.request.path.clone(),
                    origin: first_origin(&self.request),
                };
                if attempt.status != Some(answer_status(&self.request)) {
                    problems.push(format!("not answered: {attempt:?}"));
                }
                if arrived != [expected.clone()] {
                    problems.push(format!("the server saw {arrived:?}, not {expected:?}"));
                }
            }
            Fate::Reset => {
                if !was_reset(attempt) {
                    problems.push(format!("not reset: {attempt:?}"));
                }
                if !arrived.is_empty() {
                    problems.push(format!("reached the server: {arrived:?}"));
                }
            }
        }
        for name in WATCHED {
            let change = counter(after, name).wrapping_sub(counter(before, name));
            let expected = self.expected_change(name);
            if change != expected {
                problems.push(format!("{name} moved by {change}, not {expected}"));
            }
        }
        problems
    }
}

/// The value of the request's first `Origin` line: what the server logs.
fn first_origin(request: &Request) -> Option<String> {
    request.headers.iter().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("origin")
            .then(|| value.trim().to_owned())
    })
}

/// What the test server answers: 204 to a preflight, 200 to the rest.
fn answer_status(request: &Request) -> u16 {
    match (request.method.as_str(), first_origin(request)) {
        ("OPTIONS", Some(_)) => 204,
        _ => 200,
    }
}

/// Whether curl failed on a reset, receiving (the usual case) or, had the
/// reset come back before curl sent all of the request, sending.
fn was_reset(attempt: &Attempt) -> bool {
    attempt.status.is_none() && attempt.error.contains("Connection reset by peer")
}

/// Runs the checks in order, each against the counters as the one before
/// left them, and fails naming every check that went otherwise: all run,
/// so that one failure does not hide the others.
fn run_checks(bed: &Bed, filter: &RunningFilter, checks: &[Check]) -> Result<()> {
    let mut failures = Vec::new();
    let mut before = filter.stats()?;
    for check in checks {
        let already_seen = bed.server.seen()?.len();
        let attempt = client::request(&bed.pair, check.family, &check.request)?;
        let after = filter.stats()?;
        let arrived = bed.server.seen()?.split_off(already_seen);
        failures.extend(
            check
                .problems(&attempt, &arrived, &before, &after)
                .into_iter()
                .map(|problem| format!("{} ({:?}): {problem}", check.what, check.family)),
        );
        before = after;
    }
    ensure!(
        failures.is_empty(),
        "{} problem(s) in {} checks:\n{}\nfilter log:\n{}",
        failures.len(),
        checks.len(),
        failures.join("\n"),
        filter.log()
    );
    Ok(())
}

/// The request helper alone, without a filter: curl sends the method,
/// headers (in order, repeats included) and body it is given, to either
/// port and family, and the heads the filter tests rely on are laid out as
/// they assume: the big ones go past the window yet fit in one segment,
/// with `Origin` within it or only after it.
#[test]
fn requests_reach_the_server_as_built() -> Result<()> {
    let bed = bed(&[PORT, UNPROTECTED_PORT])?;
    let requests = [
        (Family::V4, form_post("/harness/form", DENIED)),
        (
            Family::V6,
            form_post("/harness/form-v6", DENIED).on_port(UNPROTECTED_PORT),
        ),
        (Family::V4, fetch_request("PUT", "/harness/put", DENIED)),
        (
            Family::V4,
            fetch_request("DELETE", "/harness/delete", DENIED),
        ),
        (Family::V4, fetch_request("post", "/harness/lower", DENIED)),
        (Family::V4, post_with_two_origins("/harness/two-origins")),
        (Family::V4, preflight("/harness/preflight", ADMIN, "PUT")),
        (Family::V4, big_post_origin_early("/harness/early", DENIED)),
        (Family::V4, big_post_origin_late("/harness/late", DENIED)),
    ];
    for (family, request) in &requests {
        let attempt = client::request(&bed.pair, *family, request)?;
        ensure!(
            attempt.status == Some(answer_status(request)),
            "{request:?}: {attempt:?}"
        );
    }

    let seen = bed.server.seen()?;
    let heads = bed.server.heads()?;
    ensure!(
        seen.len() == requests.len() && heads.len() == requests.len(),
        "{} requests sent, the server logged {seen:?} and kept {} heads",
        requests.len(),
        heads.len()
    );
    for (((_, request), seen), head) in requests.iter().zip(&seen).zip(&heads) {
        ensure!(
            seen.method == request.method
                && seen.path == request.path
                && seen.origin == first_origin(request),
            "{request:?} was logged as {seen:?}"
        );
        ensure!(
            head.request_line() == format!("{} {} HTTP/1.1", request.method, request.path),
            "{request:?}: {:?}",
            head.request_line()
        );
        // The request's own lines, in order, among curl's.
        let lines: Vec<String> = head
            .header_lines()
            .into_iter()
            .map(|l| format!("{}: {}", l.name, l.value))
            .filter(|l| request.headers.contains(l))
            .collect();
        ensure!(
            lines == request.headers,
            "{request:?} arrived with {lines:?}"
        );
        let length = request.body.as_ref().map(|b| b.len().to_string());
        let sent_length = head
            .header("Content-Length")
            .first()
            .map(|l| l.value.clone());
        ensure!(
            sent_length == length,
            "{request:?}: Content-Length {sent_length:?}"
        );
    }

    let head_of = |path: &str| -> &RequestHead {
        let at = seen.iter().position(|s| s.path == path).expect("logged");
        &heads[at]
    };
    ensure!(head_of("/harness/two-origins").header("Origin").len() == 2);
    let early = head_of("/harness/early");
    let origin = &early.header("Origin")[0];
    ensure!(
        early.len() > HEAD_WINDOW && origin.end <= HEAD_WINDOW,
        "a head of {} bytes with Origin at {}..{}",
        early.len(),
        origin.start,
        origin.end
    );
    let late = head_of("/harness/late");
    for name in ["Origin", "Sec-Fetch-Site"] {
        let line = &late.header(name)[0];
        ensure!(
            line.start >= HEAD_WINDOW,
            "{name} at {} in the late head",
            line.start
        );
    }
    for head in [early, late] {
        // The form's body follows the head in the segment.
        let body = FORM_BODY.len();
        ensure!(
            head.len() + body <= SEGMENT_PAYLOAD,
            "a head of {} bytes and a body of {body} take more than one segment",
            head.len()
        );
    }
    Ok(())
}

/// The request helper reports a reset as such: a disallowed preflight,
/// which the filter refuses without the CSRF mode, with a body.
#[test]
fn the_request_helper_reports_a_reset() -> Result<()> {
    let bed = reset_bed(&[PORT])?;
    let bed = &bed.bed;
    let home = FilterHome::new(&format!(
        "ports = [{PORT}]\nallow = [\"{ALLOWED}\"]\naction = \"reset\"\n"
    ))?;
    let filter = bed.filter(&home, &[])?;
    let denied = client::request(
        &bed.pair,
        Family::V4,
        &preflight("/reset/denied", DENIED, "PUT").body("x=1"),
    )?;
    ensure!(was_reset(&denied), "{denied:?}");
    let allowed = client::request(
        &bed.pair,
        Family::V4,
        &preflight("/reset/allowed", ALLOWED, "PUT"),
    )?;
    ensure!(allowed.status == Some(204), "{allowed:?}");
    let paths: Vec<String> = bed.server.seen()?.into_iter().map(|s| s.path).collect();
    ensure!(paths == ["/reset/allowed"], "the server saw {paths:?}");
    let stats = filter.stats()?;
    ensure!(counter(&stats, "reset_sent") == 1, "{stats}");
    filter.stop()
}

/// The protected port: unsafe methods from a disallowed origin, or marked
/// cross-site without an origin, or with a repeated `Origin`, are refused;
/// allowed origins, safe methods and requests without either header pass.
#[test]
fn cross_origin_unsafe_requests_never_reach_the_server() -> Result<()> {
    use Fate::{Answered, Reset};
    let bed = reset_bed(&[PORT])?;
    let bed = &bed.bed;
    let home = FilterHome::new(&protected_config(""))?;
    let filter = bed.filter(&home, &[])?;
    let checks = [
        Check::v4(
            "form POST from a disallowed origin",
            form_post("/denied/form", DENIED),
            Reset,
            &["unsafe_deny"],
        ),
        Check::v4(
            "form POST from the allowed origin",
            form_post("/allowed/form", ALLOWED),
            Answered,
            &["unsafe_allow"],
        ),
        Check::v4(
            "GET from a disallowed origin (a safe method)",
            Request::new("GET", "/denied/get")
                .header("Origin", DENIED)
                .header("Sec-Fetch-Site", "cross-site"),
            Answered,
            &["pass_not_preflight"],
        ),
        Check::v4(
            "PUT from a disallowed origin",
            fetch_request("PUT", "/denied/put", DENIED),
            Reset,
            &["unsafe_deny"],
        ),
        Check::v4(
            "PATCH from a disallowed origin",
            fetch_request("PATCH", "/denied/patch", DENIED),
            Reset,
            &["unsafe_deny"],
        ),
        Check::v4(
            "DELETE from a disallowed origin",
            fetch_request("DELETE", "/denied/delete", DENIED),
            Reset,
            &["unsafe_deny"],
        ),
        Check::v4(
            "lower-case post (an unknown method, so unsafe) from a disallowed origin",
            fetch_request("post", "/denied/lower-case", DENIED),
            Reset,
            &["unsafe_deny"],
        ),
        Check::v4(
            "PROPFIND (an unlisted method, so unsafe) from a disallowed origin",
            fetch_request("PROPFIND", "/denied/propfind", DENIED),
            Reset,
            &["unsafe_deny"],
        ),
        Check::v4(
            "POST from a disallowed origin claiming same-origin",
            Request::new("POST", "/denied/claims-same-origin")
                .header("Origin", DENIED)
                .header("Content-Type", FORM)
                .header("Sec-Fetch-Site", "same-origin")
                .body("a=1"),
            Reset,
            &["unsafe_deny"],
        ),
        Check::v4(
            "POST without Origin or Sec-Fetch-Site",
            bare_post("/no-origin/bare", &[]),
            Answered,
            &["no_origin"],
        ),
        Check::v4(
            "POST marked cross-site without Origin",
            bare_post("/no-origin/cross-site", &[("Sec-Fetch-Site", "cross-site")]),
            Reset,
            &["unsafe_deny", "cross_site"],
        ),
        Check::v4(
            "POST marked same-origin without Origin",
            bare_post(
                "/no-origin/same-origin",
                &[("Sec-Fetch-Site", "same-origin")],
            ),
            Answered,
            &["no_origin"],
        ),
        Check::v4(
            "POST with the allowed origin twice",
            post_with_two_origins("/malformed/two-origins"),
            Reset,
            &["unsafe_deny", "malformed"],
        ),
        // The allowed one first: it also gets IPv6 neighbour discovery done.
        Check::v6(
            "form POST from the allowed origin",
            form_post("/allowed/form-v6", ALLOWED),
            Answered,
            &["unsafe_allow"],
        ),
        Check::v6(
            "form POST from a disallowed origin",
            form_post("/denied/form-v6", DENIED),
            Reset,
            &["unsafe_deny"],
        ),
    ];
    run_checks(bed, &filter, &checks)?;
    filter.stop()
}

/// Heads of any length are judged whole: an `Origin` behind a big cookie
/// or after a URL longer than a segment decides as an early one does (a
/// page chooses its form's URL). Only a head longer than `max_head_bytes`
/// is `incomplete`, and dropped by default, even from the allowed origin.
#[test]
fn big_heads_are_judged_whole() -> Result<()> {
    use Fate::{Answered, Reset};
    let bed = reset_bed(&[PORT])?;
    let bed = &bed.bed;
    let home = FilterHome::new(&protected_config(""))?;
    let filter = bed.filter(&home, &[])?;
    let long_url = format!("/big/long-url?q={}", "a".repeat(3 * SEGMENT_PAYLOAD));
    let oversized = format!(
        "session={}",
        "c".repeat(cors_filter_common::stream::DEFAULT_MAX_HEAD_BYTES as usize)
    );
    let checks = [
        Check::v4(
            "big form POST from a disallowed origin, Origin early",
            big_post_origin_early("/big/origin-early", DENIED),
            Reset,
            &["unsafe_deny"],
        ),
        Check::v4(
            "big form POST from the allowed origin, Origin early",
            big_post_origin_early("/big/origin-early-allowed", ALLOWED),
            Answered,
            &["unsafe_allow"],
        ),
        Check::v4(
            "big POST from a disallowed origin, Origin past the first chunk",
            big_post_origin_late("/big/origin-late", DENIED),
            Reset,
            &["unsafe_deny"],
        ),
        Check::v4(
            "big POST from the allowed origin, Origin past the first chunk",
            big_post_origin_late("/big/origin-late-allowed", ALLOWED),
            Answered,
            &["unsafe_allow"],
        ),
        Check::v4(
            "form POST from a disallowed origin to a URL of three segments",
            form_post(&long_url, DENIED),
            Reset,
            &["unsafe_deny"],
        ),
        Check::v4(
            "form POST from the allowed origin to a URL of three segments",
            form_post(&long_url, ALLOWED),
            Answered,
            &["unsafe_allow"],
        ),
        Check::v4(
            "POST from the allowed origin with a head past max_head_bytes",
            form_post("/big/oversized", ALLOWED).header("Cookie", &oversized),
            Reset,
            &["incomplete"],
        ),
    ];
    run_checks(bed, &filter, &checks)?;
    filter.stop()
}

/// `[port.N] protect_unsafe_methods = false` turns the protection off on
/// that port alone: the same refused POST passes there, while preflights
/// are still judged on it.
#[test]
fn a_port_can_turn_the_protection_off() -> Result<()> {
    use Fate::{Answered, Reset};
    let bed = reset_bed(&[PORT, UNPROTECTED_PORT])?;
    let bed = &bed.bed;
    let home = FilterHome::new(&format!(
        "ports = [{PORT}, {UNPROTECTED_PORT}]\nallow = [\"{ALLOWED}\"]\naction = \"reset\"\n\
         protect_unsafe_methods = true\n\n[port.{UNPROTECTED_PORT}]\nprotect_unsafe_methods = false\n"
    ))?;
    let filter = bed.filter(&home, &[])?;
    let checks = [
        Check::v4(
            "form POST from a disallowed origin to the unprotected port",
            form_post("/unprotected/form", DENIED).on_port(UNPROTECTED_PORT),
            Answered,
            &["pass_not_preflight"],
        ),
        Check::v4(
            "POST marked cross-site without Origin to the unprotected port",
            bare_post(
                "/unprotected/cross-site",
                &[("Sec-Fetch-Site", "cross-site")],
            )
            .on_port(UNPROTECTED_PORT),
            Answered,
            &["pass_not_preflight"],
        ),
        Check::v4(
            "form POST from a disallowed origin to the protected port",
            form_post("/protected/form", DENIED),
            Reset,
            &["unsafe_deny"],
        ),
        Check::v4(
            "disallowed preflight to the unprotected port",
            preflight("/unprotected/preflight", DENIED, "PUT").on_port(UNPROTECTED_PORT),
            Reset,
            &["preflight_deny"],
        ),
    ];
    run_checks(bed, &filter, &checks)?;
    filter.stop()
}

/// An allowlist entry with `methods` allows those methods alone, for
/// unsafe requests and preflights; `allow add --methods` does the same on
/// the running filter at once.
#[test]
fn origins_with_methods_are_allowed_those_methods_alone() -> Result<()> {
    use Fate::{Answered, Reset};
    let bed = reset_bed(&[PORT])?;
    let bed = &bed.bed;
    let home = FilterHome::new(METHODS_CONFIG)?;
    let mut filter = bed.filter(&home, &[])?;
    let checks = [
        Check::v4(
            "POST from an origin allowed GET and POST",
            form_post("/admin/post", ADMIN),
            Answered,
            &["unsafe_allow"],
        ),
        Check::v4(
            "PUT from an origin allowed GET and POST",
            fetch_request("PUT", "/admin/put", ADMIN),
            Reset,
            &["unsafe_deny", "method_deny"],
        ),
        Check::v4(
            "preflight for PUT from an origin allowed GET and POST",
            preflight("/admin/preflight-put", ADMIN, "PUT"),
            Reset,
            &["preflight_deny", "method_deny"],
        ),
        Check::v4(
            "preflight for POST from an origin allowed GET and POST",
            preflight("/admin/preflight-post", ADMIN, "POST"),
            Answered,
            &["preflight_allow"],
        ),
        Check::v4(
            "DELETE from an origin allowed any method",
            fetch_request("DELETE", "/app/delete", ALLOWED),
            Answered,
            &["unsafe_allow"],
        ),
        Check::v4(
            "PUT from an origin not yet added",
            fetch_request("PUT", "/ops/put-before-add", OPS),
            Reset,
            &["unsafe_deny"],
        ),
    ];
    run_checks(bed, &filter, &checks)?;

    let added = filter.cli_ok(&["allow", "add", OPS, "--methods", "GET,PUT"])?;
    ensure!(added.contains(OPS), "allow add printed {added:?}");
    let mut listed: Vec<String> = filter
        .cli_ok(&["allow", "list"])?
        .lines()
        .map(str::to_owned)
        .collect();
    listed.sort();
    let mut expected = [
        ALLOWED.to_owned(),
        format!("{ADMIN} methods=GET,POST"),
        format!("{OPS} methods=GET,PUT"),
    ];
    expected.sort();
    ensure!(listed == expected, "allow list printed {listed:?}");

    let checks = [
        Check::v4(
            "PUT from an origin just added for GET and PUT",
            fetch_request("PUT", "/ops/put", OPS),
            Answered,
            &["unsafe_allow"],
        ),
        Check::v4(
            "DELETE from an origin just added for GET and PUT",
            fetch_request("DELETE", "/ops/delete", OPS),
            Reset,
            &["unsafe_deny", "method_deny"],
        ),
    ];
    run_checks(bed, &filter, &checks)?;

    // `allow add` gives an origin of the config other methods; a restart
    // (from the state file) and a reload keep both additions' methods.
    filter.cli_ok(&["allow", "add", ADMIN, "--methods", "GET,POST,PUT"])?;
    filter.kill()?;
    filter.restart()?;
    filter.cli_ok(&["reload"])?;
    let mut listed: Vec<String> = filter
        .cli_ok(&["allow", "list"])?
        .lines()
        .map(str::to_owned)
        .collect();
    listed.sort();
    let mut expected = [
        ALLOWED.to_owned(),
        format!("{ADMIN} methods=GET,POST,PUT"),
        format!("{OPS} methods=GET,PUT"),
    ];
    expected.sort();
    ensure!(
        listed == expected,
        "allow list printed {listed:?} after a restart"
    );
    ensure!(
        filter.log().contains(&format!(
            "lists {ADMIN} methods=GET,POST, but `cors-filter allow add` set {ADMIN} methods=GET,POST,PUT"
        )),
        "the override of the config's methods was not logged:\n{}",
        filter.log()
    );
    let checks = [
        Check::v4(
            "PUT from the config's origin after `allow add` gave it PUT, after a restart",
            fetch_request("PUT", "/admin/put-added", ADMIN),
            Answered,
            &["unsafe_allow"],
        ),
        Check::v4(
            "DELETE from the origin added for GET and PUT, after a restart",
            fetch_request("DELETE", "/ops/delete-after-restart", OPS),
            Reset,
            &["unsafe_deny", "method_deny"],
        ),
    ];
    run_checks(bed, &filter, &checks)?;
    filter.stop()
}

/// Monitor mode counts what enforce mode would refuse, and lets it through.
#[test]
fn monitor_mode_counts_unsafe_denials_and_passes_them() -> Result<()> {
    use Fate::Answered;
    let bed = reset_bed(&[PORT])?;
    let bed = &bed.bed;
    let home = FilterHome::new(&protected_config("mode = \"monitor\"\n"))?;
    let filter = bed.filter(&home, &[])?;
    let checks = [
        Check::v4(
            "form POST from a disallowed origin",
            form_post("/monitor/denied", DENIED),
            Answered,
            &["unsafe_deny"],
        ),
        Check::v4(
            "POST marked cross-site without Origin",
            bare_post("/monitor/cross-site", &[("Sec-Fetch-Site", "cross-site")]),
            Answered,
            &["unsafe_deny", "cross_site"],
        ),
        Check::v4(
            "form POST from the allowed origin",
            form_post("/monitor/allowed", ALLOWED),
            Answered,
            &["unsafe_allow"],
        ),
    ];
    run_checks(bed, &filter, &checks)?;
    filter.stop()
}

/// Without `protect_unsafe_methods`, unsafe requests pass as before
/// whatever their origin: the mode is opt-in. The refused preflight shows
/// that the filter is there and judging.
#[test]
fn the_protection_is_off_unless_configured() -> Result<()> {
    use Fate::{Answered, Reset};
    let bed = reset_bed(&[PORT])?;
    let bed = &bed.bed;
    let home = FilterHome::new(&format!(
        "ports = [{PORT}]\nallow = [\"{ALLOWED}\"]\naction = \"reset\"\n"
    ))?;
    let filter = bed.filter(&home, &[])?;
    let checks = [
        Check::v4(
            "form POST from a disallowed origin",
            form_post("/default/form", DENIED),
            Answered,
            &["pass_not_preflight"],
        ),
        Check::v4(
            "DELETE from a disallowed origin",
            fetch_request("DELETE", "/default/delete", DENIED),
            Answered,
            &["pass_not_preflight"],
        ),
        Check::v4(
            "POST marked cross-site without Origin",
            bare_post("/default/cross-site", &[("Sec-Fetch-Site", "cross-site")]),
            Answered,
            &["pass_not_preflight"],
        ),
        Check::v4(
            "disallowed preflight",
            preflight("/default/preflight", DENIED, "PUT"),
            Reset,
            &["preflight_deny"],
        ),
    ];
    run_checks(bed, &filter, &checks)?;
    filter.stop()
}
