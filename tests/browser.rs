//! A real browser against the filter: headless Chromium (Debian's) in the
//! client namespace loads a page from an allowed or a disallowed origin,
//! and the page's own requests to the test server show what a user's
//! browser meets. Needs root and chromium; fails, never skips, without them.
//!
//! The filter keeps its default action, drop: a denied request hangs in the
//! browser until the page's own timeout ends it, which is what a user of
//! such a site sees (the page waits `browser::ANSWER_WAIT`).

use std::path::Path;

use anyhow::Result;
use cors_filter_tests::{
    bed::Bed,
    browser::{
        ALLOWED_PAGE_PORT, DENIED_PAGE_PORT, FORM_PATH, PUT_PATH, PageServer, Scenario,
        page_origin, page_url, result_of, visit,
    },
    filter::{FilterHome, counter},
    server::Seen,
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

fn seen(method: &str, path: &str, origin: &str) -> Seen {
    Seen {
        method: method.into(),
        path: path.into(),
        origin: Some(origin.into()),
    }
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
