//! A real browser against the filter: headless Chromium (Debian's) in the
//! client namespace loads a page from an allowed or a disallowed origin,
//! and the page's own requests to the test server show what a user's
//! browser meets. Needs root and chromium; fails, never skips, without them.
//!
//! The filter keeps its default action, drop: a denied request hangs in the
//! browser until the page's own timeout ends it, which is what a user of
//! such a site sees (the page waits `browser::ANSWER_WAIT`).
//!
//! The long-head tests (issue 13) send what a page can make a browser send
//! past the first chunk the program reads of a segment ([`HEAD_WINDOW`]
//! bytes): a 1,000- or 3,000-byte URL, a
//! preflight listing fourteen long header names, a form with a long action
//! URL, and 5 MB uploads in MSS-sized segments. They keep the default
//! config: judging whole request heads, however TCP cuts them, needs no
//! opt-in.

use std::path::Path;

use anyhow::Result;
use cors_filter_tests::{
    harness::bed::Bed,
    harness::browser::{
        ALLOWED_PAGE_PORT, DENIED_PAGE_PORT, FORM_PATH, PUT_PATH, PageServer, Scenario, UPLOAD_LEN,
        long_header_names, page_origin, page_url, result_of, visit,
    },
    harness::filter::{FilterHome, counter},
    harness::netns::CLIENT_IF,
    harness::server::{RequestHead, Seen, ServerOptions, brief},
};

fn server_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_cors-test-server"))
}

/// The allowed page origin, with unsafe methods protected on the server port.
fn config() -> String {
    format!(
        "ports = [8080]\nprotect_unsafe_methods = true\nallow = [\"{}\"]\n",
        page_origin(ALLOWED_PAGE_PORT)
    )
}

/// The allowed page origin and nothing else: the defaults otherwise (no
/// CSRF mode).
fn default_config() -> String {
    format!(
        "ports = [8080]\nallow = [\"{}\"]\n",
        page_origin(ALLOWED_PAGE_PORT)
    )
}

/// How many bytes of a segment's payload the kernel program reads at once
/// (all it read before it tracked connections): the long-head tests are
/// only worth something if the deciding header lines end past it.
const HEAD_WINDOW: usize = cors_filter_common::http::SCAN_BYTES;

/// A bed whose server keeps every request head.
fn bed_keeping_heads() -> Result<Bed> {
    Bed::with_server_options(
        server_bin(),
        &ServerOptions {
            keep_heads: true,
            ..ServerOptions::default()
        },
    )
}

/// Where the line of header `name` ends in `head` (just after its line end).
fn line_end(head: &RequestHead, name: &str) -> usize {
    let lines = head.header(name);
    assert_eq!(lines.len(), 1, "{name} in {:?}", head.request_line());
    lines[0].end
}

fn seen(method: &str, path: &str, origin: &str) -> Seen {
    Seen::with_origin(method, path, origin)
}

/// The allowed origin's PUT with a custom header: Chromium's preflight
/// passes, the server answers it and then the PUT, and the script reads
/// the answer.
#[test]
fn allowed_origin_put_with_custom_header_is_answered() -> Result<()> {
    let bed = Bed::new(server_bin())?;
    let home = FilterHome::new(&config())?;
    let filter = bed.filter(&home, &[])?;
    let pages = PageServer::start(&bed.pair, server_bin())?;
    let allowed = page_origin(ALLOWED_PAGE_PORT);

    let url = page_url(ALLOWED_PAGE_PORT, &[Scenario::Put], &[]);
    let reports = visit(&bed.pair, &pages, &url, &[(&allowed, Scenario::Put)])?;
    assert_eq!(
        result_of(&reports, &allowed, Scenario::Put),
        Some("status=200 body=ok"),
        "{reports:?}"
    );
    assert_eq!(
        bed.server.seen()?,
        [
            seen("OPTIONS", PUT_PATH, &allowed),
            seen("PUT", PUT_PATH, &allowed)
        ]
    );
    let stats = filter.stats()?;
    assert_eq!(counter(&stats, "preflight_allow"), 1, "{stats}");
    assert_eq!(counter(&stats, "unsafe_allow"), 1, "{stats}");
    assert_eq!(counter(&stats, "preflight_deny"), 0, "{stats}");
    assert_eq!(counter(&stats, "unsafe_deny"), 0, "{stats}");
    assert_eq!(counter(&stats, "dropped"), 0, "{stats}");
    filter.stop()
}

/// The same PUT from the disallowed origin: the filter drops the preflight,
/// so the fetch fails in the page and the server sees nothing at all, not
/// even the PUT (the browser never sends it).
#[test]
fn disallowed_origin_put_fails_and_never_reaches_the_server() -> Result<()> {
    let bed = Bed::new(server_bin())?;
    let home = FilterHome::new(&config())?;
    let filter = bed.filter(&home, &[])?;
    let pages = PageServer::start(&bed.pair, server_bin())?;
    let denied = page_origin(DENIED_PAGE_PORT);

    let url = page_url(DENIED_PAGE_PORT, &[Scenario::Put], &[]);
    let reports = visit(&bed.pair, &pages, &url, &[(&denied, Scenario::Put)])?;
    let result = result_of(&reports, &denied, Scenario::Put).unwrap_or_default();
    assert!(
        result.starts_with("error="),
        "the disallowed PUT did not fail in the page: {reports:?}"
    );
    assert_eq!(
        bed.server.seen()?,
        [],
        "the server saw a disallowed request"
    );
    let stats = filter.stats()?;
    // The preflight is denied once; TCP retransmits it, and every copy is
    // dropped as part of the denied connection.
    assert_eq!(counter(&stats, "preflight_deny"), 1, "{stats}");
    assert_eq!(
        counter(&stats, "dropped"),
        1 + counter(&stats, "connection_denied"),
        "{stats}"
    );
    assert_eq!(counter(&stats, "preflight_allow"), 0, "{stats}");
    assert_eq!(counter(&stats, "unsafe_deny"), 0, "{stats}");
    filter.stop()
}

/// The CSRF case: a form POST needs no preflight, so only the unsafe-method
/// rule stands between the disallowed origin and the server. One Chromium
/// run: the disallowed page submits its form and frames the allowed page,
/// which submits the same form, and whose POST must arrive (else the test
/// could not tell a blocked POST from a broken page).
#[test]
fn disallowed_origin_form_post_never_reaches_the_server() -> Result<()> {
    let bed = Bed::new(server_bin())?;
    let home = FilterHome::new(&config())?;
    let filter = bed.filter(&home, &[])?;
    let pages = PageServer::start(&bed.pair, server_bin())?;
    let (allowed, denied) = (
        page_origin(ALLOWED_PAGE_PORT),
        page_origin(DENIED_PAGE_PORT),
    );

    let framed = page_url(ALLOWED_PAGE_PORT, &[Scenario::Form], &[]);
    let url = page_url(DENIED_PAGE_PORT, &[Scenario::Form], &[framed]);
    let reports = visit(
        &bed.pair,
        &pages,
        &url,
        &[(&denied, Scenario::Form), (&allowed, Scenario::Form)],
    )?;
    assert_eq!(
        result_of(&reports, &allowed, Scenario::Form),
        Some("loaded"),
        "{reports:?}"
    );
    assert_eq!(
        result_of(&reports, &denied, Scenario::Form),
        Some("no-answer"),
        "{reports:?}"
    );
    assert_eq!(bed.server.seen()?, [seen("POST", FORM_PATH, &allowed)]);
    let stats = filter.stats()?;
    assert_eq!(counter(&stats, "unsafe_allow"), 1, "{stats}");
    // The POST is denied once; every retransmitted copy is dropped as part
    // of the denied connection.
    assert_eq!(counter(&stats, "unsafe_deny"), 1, "{stats}");
    assert_eq!(
        counter(&stats, "dropped"),
        1 + counter(&stats, "connection_denied"),
        "{stats}"
    );
    // Chromium sends `Origin` on a form POST. (It sends no `Sec-Fetch-*`
    // headers to a plain-http origin that is not localhost, as here: the
    // decision rests on `Origin`, and neither fallback applied.)
    assert_eq!(counter(&stats, "cross_site"), 0, "{stats}");
    assert_eq!(counter(&stats, "no_origin"), 0, "{stats}");
    assert_eq!(counter(&stats, "malformed"), 0, "{stats}");
    assert_eq!(counter(&stats, "preflight_deny"), 0, "{stats}");
    filter.stop()
}

/// The allowed origin's preflighted PUT of `scenario`, whose preflight's
/// head goes past [`HEAD_WINDOW`]: the preflight is judged and passed, the
/// server answers it and the PUT, and the script reads the answer.
fn long_preflight_from_allowed_origin_is_answered(scenario: Scenario) -> Result<()> {
    let bed = bed_keeping_heads()?;
    let home = FilterHome::new(&default_config())?;
    let filter = bed.filter(&home, &[])?;
    let pages = PageServer::start(&bed.pair, server_bin())?;
    let allowed = page_origin(ALLOWED_PAGE_PORT);
    let path = scenario.path();

    let url = page_url(ALLOWED_PAGE_PORT, &[scenario], &[]);
    let reports = visit(&bed.pair, &pages, &url, &[(&allowed, scenario)])?;
    assert_eq!(
        result_of(&reports, &allowed, scenario),
        Some("status=200 body=ok"),
        "{reports:?}"
    );
    let received = bed.server.seen()?;
    assert!(
        received
            == [
                seen("OPTIONS", &path, &allowed),
                seen("PUT", &path, &allowed),
            ],
        "the server saw {:?}",
        brief(&received)
    );
    // The preflight is what the test claims: its `Origin` line (and its
    // whole head) end past the window the kernel program used to read.
    let heads = bed.server.heads()?;
    let preflight = &heads[0];
    let origin_end = line_end(preflight, "origin");
    assert!(
        origin_end > HEAD_WINDOW && preflight.len() > HEAD_WINDOW,
        "the {scenario:?} preflight's Origin line ends at byte {origin_end} of {}",
        preflight.len()
    );
    if scenario == Scenario::PutManyHeaders {
        let requested = &preflight.header("access-control-request-headers")[0].value;
        for name in long_header_names() {
            assert!(
                requested.contains(&name.to_ascii_lowercase()),
                "{name} not in Access-Control-Request-Headers: {requested}"
            );
        }
    }
    let stats = filter.stats()?;
    assert!(
        counter(&stats, "preflight_allow") >= 1,
        "the {scenario:?} preflight was not judged and allowed: {stats}"
    );
    assert_eq!(counter(&stats, "preflight_deny"), 0, "{stats}");
    assert_eq!(counter(&stats, "dropped"), 0, "{stats}");
    filter.stop()
}

/// The same PUT from the disallowed origin: however far its preflight's
/// head goes, the preflight is dropped, the fetch fails in the page, and
/// the server receives no request at all.
fn long_preflight_from_disallowed_origin_never_reaches_the_server(
    scenario: Scenario,
) -> Result<()> {
    let bed = Bed::new(server_bin())?;
    let home = FilterHome::new(&default_config())?;
    let filter = bed.filter(&home, &[])?;
    let pages = PageServer::start(&bed.pair, server_bin())?;
    let denied = page_origin(DENIED_PAGE_PORT);

    let url = page_url(DENIED_PAGE_PORT, &[scenario], &[]);
    let reports = visit(&bed.pair, &pages, &url, &[(&denied, scenario)])?;
    let result = result_of(&reports, &denied, scenario).unwrap_or_default();
    let received = bed.server.seen()?;
    assert!(
        received.is_empty(),
        "the server received the disallowed {scenario:?} request(s) {:?}; the page reported {result:?}",
        brief(&received)
    );
    assert!(
        result.starts_with("error="),
        "the disallowed {scenario:?} did not fail in the page: {reports:?}"
    );
    let stats = filter.stats()?;
    assert!(counter(&stats, "preflight_deny") >= 1, "{stats}");
    assert!(counter(&stats, "dropped") >= 1, "{stats}");
    assert_eq!(counter(&stats, "preflight_allow"), 0, "{stats}");
    filter.stop()
}

/// A 1,000-byte URL (a long query): past the first [`HEAD_WINDOW`] bytes,
/// within one segment.
#[test]
fn allowed_origin_put_to_long_url_is_answered() -> Result<()> {
    long_preflight_from_allowed_origin_is_answered(Scenario::PutLongUrl)
}

#[test]
fn disallowed_origin_put_to_long_url_never_reaches_the_server() -> Result<()> {
    long_preflight_from_disallowed_origin_never_reaches_the_server(Scenario::PutLongUrl)
}

/// A 3,000-byte URL: the preflight's head spans three segments.
#[test]
fn allowed_origin_put_to_longer_url_is_answered() -> Result<()> {
    long_preflight_from_allowed_origin_is_answered(Scenario::PutLongerUrl)
}

#[test]
fn disallowed_origin_put_to_longer_url_never_reaches_the_server() -> Result<()> {
    long_preflight_from_disallowed_origin_never_reaches_the_server(Scenario::PutLongerUrl)
}

/// Fourteen custom headers with 64-byte names: the preflight's
/// `Access-Control-Request-Headers` alone is 900 bytes.
#[test]
fn allowed_origin_put_with_many_long_headers_is_answered() -> Result<()> {
    long_preflight_from_allowed_origin_is_answered(Scenario::PutManyHeaders)
}

#[test]
fn disallowed_origin_put_with_many_long_headers_never_reaches_the_server() -> Result<()> {
    long_preflight_from_disallowed_origin_never_reaches_the_server(Scenario::PutManyHeaders)
}

/// CSRF mode, and the client sending plain MSS-sized segments (no GSO/TSO,
/// no GRO): the allowed origin uploads 5 MB of single-line JSON, once as
/// `text/plain` (a simple request, no preflight) and once as
/// `application/json` (preflighted), and the server reads every byte of
/// both bodies before it answers.
#[test]
fn allowed_origin_5mb_uploads_arrive_whole() -> Result<()> {
    let bed = Bed::new(server_bin())?;
    let home = FilterHome::new(&config())?;
    let filter = bed.filter(&home, &[])?;
    bed.pair.offloads_off(&bed.pair.client, CLIENT_IF)?;
    let pages = PageServer::start(&bed.pair, server_bin())?;
    let allowed = page_origin(ALLOWED_PAGE_PORT);
    let scenarios = [Scenario::UploadText, Scenario::UploadJson];

    let url = page_url(ALLOWED_PAGE_PORT, &scenarios, &[]);
    let expected = scenarios.map(|s| (allowed.as_str(), s));
    let reports = visit(&bed.pair, &pages, &url, &expected)?;
    let whole = format!("status=200 body=ok read={UPLOAD_LEN}");
    for scenario in scenarios {
        assert_eq!(
            result_of(&reports, &allowed, scenario),
            Some(whole.as_str()),
            "{scenario:?}: {reports:?}"
        );
    }
    let (text, json) = (Scenario::UploadText.path(), Scenario::UploadJson.path());
    assert_eq!(
        bed.server.seen()?,
        [
            seen("POST", &text, &allowed),
            seen("OPTIONS", &json, &allowed),
            seen("POST", &json, &allowed),
        ]
    );
    let stats = filter.stats()?;
    assert!(counter(&stats, "unsafe_allow") >= 2, "{stats}");
    assert!(counter(&stats, "preflight_allow") >= 1, "{stats}");
    assert_eq!(counter(&stats, "unsafe_deny"), 0, "{stats}");
    assert_eq!(counter(&stats, "preflight_deny"), 0, "{stats}");
    assert_eq!(counter(&stats, "dropped"), 0, "{stats}");
    filter.stop()
}

/// CSRF mode, a form whose action URL is 1,000 bytes long, so that
/// `Origin` comes after the window: the disallowed page's POST never
/// reaches the server, and the allowed page's (framed in it, as in
/// [`disallowed_origin_form_post_never_reaches_the_server`]) does.
#[test]
fn disallowed_origin_long_url_form_post_never_reaches_the_server() -> Result<()> {
    let bed = bed_keeping_heads()?;
    let home = FilterHome::new(&config())?;
    let filter = bed.filter(&home, &[])?;
    let pages = PageServer::start(&bed.pair, server_bin())?;
    let (allowed, denied) = (
        page_origin(ALLOWED_PAGE_PORT),
        page_origin(DENIED_PAGE_PORT),
    );
    let scenario = Scenario::FormLongUrl;

    let framed = page_url(ALLOWED_PAGE_PORT, &[scenario], &[]);
    let url = page_url(DENIED_PAGE_PORT, &[scenario], &[framed]);
    let reports = visit(
        &bed.pair,
        &pages,
        &url,
        &[(&denied, scenario), (&allowed, scenario)],
    )?;
    let seen_now = bed.server.seen()?;
    assert!(
        seen_now
            .iter()
            .all(|s| s.origin.as_deref() != Some(denied.as_str())),
        "the server received the disallowed form POST: {:?}",
        brief(&seen_now)
    );
    assert_eq!(
        result_of(&reports, &denied, scenario),
        Some("no-answer"),
        "{reports:?}"
    );
    assert_eq!(
        result_of(&reports, &allowed, scenario),
        Some("loaded"),
        "the allowed origin's form POST got no answer: {reports:?}"
    );
    let expected = [seen("POST", &scenario.path(), &allowed)];
    assert!(
        seen_now == expected,
        "the server saw {:?}",
        brief(&seen_now)
    );
    let heads = bed.server.heads()?;
    let origin_end = line_end(&heads[0], "origin");
    assert!(
        origin_end > HEAD_WINDOW,
        "the form POST's Origin line ends at byte {origin_end}, within the window"
    );
    let stats = filter.stats()?;
    assert!(counter(&stats, "unsafe_allow") >= 1, "{stats}");
    assert!(counter(&stats, "unsafe_deny") >= 1, "{stats}");
    assert!(counter(&stats, "dropped") >= 1, "{stats}");
    assert_eq!(counter(&stats, "preflight_deny"), 0, "{stats}");
    filter.stop()
}
