//! cors-filter behind a TLS-terminating proxy (issue 14), with real peers
//! from Debian's packages on three namespaces of each test's own (see
//! `proxy_bed`): curl and headless Chromium speak HTTPS (trusting a test CA
//! made by the test) to HAProxy or nginx, which proxy HTTP/1.1 to the
//! application, and cors-filter runs on the application's interface.
//!
//! - HAProxy sends a PROXY protocol v2 header first on every connection to
//!   the application (`send-proxy-v2`); the application requires it.
//! - nginx keeps a pool of keep-alive connections to the application
//!   (`keepalive 16`, `proxy_http_version 1.1`, `Connection ""`), so that
//!   requests of many clients share them.
//!
//! Each test measures first and judges after: every figure (how long the
//! request took, what the proxy answered, how many connections the proxy
//! opened to the application, how often the filter judged the request) is
//! printed as a table, then every expectation that did not hold is listed
//! in the failure. The proxies answer a request the application leaves
//! unanswered after `proxy_bed::PROXY_TIMEOUT` (3 s: HAProxy's `timeout
//! server`, nginx's `proxy_read_timeout`).
//!
//! Needs root, haproxy, nginx, openssl, curl, chromium and libnss3-tools'
//! certutil; fails, never skips, without them.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use cors_filter_common::Action;
use cors_filter_tests::{
    harness::attempt::Attempt,
    harness::browser::{
        ALLOWED_PAGE_PORT, ChromiumOptions, DENIED_PAGE_PORT, PageServer, Scenario, page_origin,
        page_url, result_of, visit_in,
    },
    harness::filter::counter,
    harness::proxy_bed::{
        self, BACKEND_PORT, Filter, Hook, PAGE_PUT_PATH, PROXY_TIMEOUT, ProxyBed, ProxyKind,
    },
    harness::server::Seen,
    harness::sockets::connections,
};

fn server_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_cors-test-server"))
}

/// The one allowed origin, and one that is not: the browser tests' page
/// origins, served from the browser namespace in the Chromium tests.
fn allowed() -> String {
    page_origin(ALLOWED_PAGE_PORT)
}

fn denied() -> String {
    page_origin(DENIED_PAGE_PORT)
}

/// The two actions a config can spell and this test measures (the
/// default, `reset-proxied`, is one or the other per connection).
const BOTH_ACTIONS: [Action; 2] = [Action::Drop, Action::Reset];

/// The filter's config: the application's port, the allowed origin.
fn config(action: Action) -> String {
    format!(
        "ports = [{BACKEND_PORT}]\nallow = [\"{}\"]\naction = \"{}\"\n",
        allowed(),
        action.name()
    )
}

/// A stats counter's growth between two `stats --json`.
fn grew(before: &serde_json::Value, after: &serde_json::Value, name: &str) -> u64 {
    counter(after, name).saturating_sub(counter(before, name))
}

/// The counters that grew between two `stats --json`, as `name=N` (the
/// map gauges left out).
fn growth(before: &serde_json::Value, after: &serde_json::Value) -> String {
    let Some(after_map) = after.as_object() else {
        return after.to_string();
    };
    after_map
        .iter()
        .filter(|(name, _)| {
            ![
                "allowlist_entries",
                "policies_installed",
                "conns_in_use",
                "conns_capacity",
                "open_heads_in_use",
                "open_heads_capacity",
            ]
            .contains(&name.as_str())
        })
        .filter_map(|(name, value)| {
            let grown = value
                .as_u64()?
                .checked_sub(before[name].as_u64().unwrap_or(0))?;
            (grown > 0).then(|| format!("{name}={grown}"))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// How many times the proxy sent a request to the application, from its
/// log line: HAProxy's `retries=N` is N + 1 attempts, nginx lists each
/// upstream it tried in `upstreams=[...]`.
fn proxy_tries(line: &str) -> Option<usize> {
    if let Some(rest) = line.split(" retries=").nth(1) {
        let retries: usize = rest.split(' ').next()?.parse().ok()?;
        return Some(retries + 1);
    }
    let list = line.split(" upstreams=[").nth(1)?.split(']').next()?;
    Some(list.split(", ").count())
}

/// The requests from `origin` among `seen`, one line each.
fn from_origin(seen: &[Seen], origin: &str) -> Vec<String> {
    seen.iter()
        .filter(|s| s.origin.as_deref() == Some(origin))
        .map(|s| format!("{} {}", s.method, s.path))
        .collect()
}

/// The proxy's sockets to the application in state FIN-WAIT-1: closed by
/// the proxy, their last bytes (or FIN) not acknowledged.
fn left_sending(bed: &ProxyBed) -> Result<usize> {
    Ok(connections(&bed.ns.proxy, BACKEND_PORT)?
        .iter()
        .filter(|s| s.state == "FIN-WAIT-1")
        .count())
}

/// What a disallowed request came to: one row of the tables.
struct Row {
    proxy: ProxyKind,
    hook: Hook,
    action: Action,
    /// The client's account: time and answer.
    attempt: Attempt,
    /// Connections the proxy opened to the application meanwhile.
    new_connections: usize,
    /// How many times the filter judged (and denied) the preflight: once
    /// per upstream attempt.
    denied: u64,
    resets: u64,
    /// Segments dropped as part of a denied connection (retransmissions,
    /// the proxy's FIN).
    connection_denied: u64,
    /// The proxy's sockets to the application that it has closed but
    /// that still hold bytes the application never acknowledged (state
    /// FIN-WAIT-1), once the proxy answered: its kernel keeps sending them.
    left_sending: usize,
    /// The proxy's log line of the request.
    proxy_log: String,
    /// The counters that grew meanwhile.
    growth: String,
    /// The filter's first log line about the denial, if any, and how many
    /// it wrote.
    event: String,
    events: usize,
}

fn answer(attempt: &Attempt) -> String {
    match attempt.status {
        Some(status) => format!("HTTP {status}"),
        None => format!("no answer (curl exit {:?})", attempt.exit_code),
    }
}

fn print_rows(title: &str, rows: &[Row]) {
    let mut out = format!(
        "\n{title} (proxy timeout {PROXY_TIMEOUT:?})\n\
         | proxy | hook | action | curl time | proxy answered | proxy's tries (its log) | new upstream conns | judged (preflight_deny) | resets sent | connection_denied | proxy sockets closed, still sending |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n"
    );
    for r in rows {
        out += &format!(
            "| {} | {} | {} | {:.3} s | {} | {} | {} | {} | {} | {} | {} |\n",
            r.proxy.name(),
            r.hook.name(),
            r.action.name(),
            r.attempt.total.as_secs_f64(),
            answer(&r.attempt),
            proxy_tries(&r.proxy_log).map_or_else(|| "?".to_owned(), |n| n.to_string()),
            r.new_connections,
            r.denied,
            r.resets,
            r.connection_denied,
            r.left_sending,
        );
    }
    for r in rows {
        out += &format!(
            "{} {} {}:\n    proxy log: {}\n    filter log ({} lines naming the origin): {}\n    counters grown: {}\n",
            r.proxy.name(),
            r.hook.name(),
            r.action.name(),
            r.proxy_log,
            r.events,
            r.event,
            r.growth,
        );
    }
    eprintln!("{out}");
}

/// The proxy's last log line naming `origin`.
fn proxy_log_of(bed: &ProxyBed, origin: &str) -> String {
    bed.proxy
        .request_log()
        .into_iter()
        .rev()
        .find(|line| line.contains(origin))
        .unwrap_or_else(|| "(none)".to_owned())
}

/// The filter's first log line naming `origin`.
fn filter_event(filter: &Filter, origin: &str) -> String {
    filter
        .filter
        .log()
        .lines()
        .find(|line| line.contains(origin))
        .unwrap_or("(none)")
        .to_owned()
}

/// One filter at `hook` with `action` on the bed: an allowed preflight
/// and PUT must be answered (and reach the application), then a
/// disallowed preflight is measured; what did not hold goes to `problems`.
fn curl_case(
    bed: &ProxyBed,
    hook: Hook,
    action: Action,
    problems: &mut Vec<String>,
) -> Result<Row> {
    let case = format!(
        "{} {} {}",
        bed.proxy.kind.name(),
        hook.name(),
        action.name()
    );
    let filter = bed.filter(hook, &config(action))?;
    let (allowed, denied) = (allowed(), denied());
    let path = format!("/api/{}/{}", hook.name(), action.name());

    let seen_before = bed.backend.seen()?.len();
    let preflight = bed.preflight(&allowed, &path)?;
    let put = bed.put(&allowed, &path)?;
    if preflight.status != Some(204)
        || preflight.header("access-control-allow-origin") != Some(allowed.as_str())
    {
        problems.push(format!(
            "{case}: the allowed preflight was not answered: {preflight:?}"
        ));
    }
    if put.status != Some(200)
        || put.header("access-control-allow-origin") != Some(allowed.as_str())
    {
        problems.push(format!("{case}: the allowed PUT was not answered: {put:?}"));
    }
    let seen = bed.backend.seen()?[seen_before..].to_vec();
    let expected = [
        Seen::with_origin("OPTIONS", &path, &allowed),
        Seen::with_origin("PUT", &path, &allowed),
    ];
    if seen != expected {
        problems.push(format!(
            "{case}: the application saw {seen:?}, not {expected:?}"
        ));
    }

    let stats = filter.filter.stats()?;
    let connections = bed.backend.connections()?.len();
    let attempt = bed.preflight(&denied, &path)?;
    // Whatever the proxy does after answering (closing, retransmitting a
    // FIN into a denied connection) has happened by then.
    std::thread::sleep(Duration::from_millis(300));
    let after = filter.filter.stats()?;
    let row = Row {
        proxy: bed.proxy.kind,
        hook,
        action,
        new_connections: bed.backend.connections()?.len() - connections,
        denied: grew(&stats, &after, "preflight_deny"),
        resets: grew(&stats, &after, "reset_sent"),
        connection_denied: grew(&stats, &after, "connection_denied"),
        growth: growth(&stats, &after),
        left_sending: left_sending(bed)?,
        proxy_log: proxy_log_of(bed, &denied),
        event: filter_event(&filter, &denied),
        events: filter
            .filter
            .log()
            .lines()
            .filter(|line| line.contains(&denied))
            .count(),
        attempt,
    };
    let attempt = &row.attempt;
    let reached = from_origin(&bed.backend.seen()?[seen_before..], &denied);
    if !reached.is_empty() {
        problems.push(format!(
            "{case}: the application saw the disallowed preflight: {reached:?}"
        ));
    }
    if row.denied == 0 {
        problems.push(format!(
            "{case}: the filter denied nothing; counters grown: {}",
            row.growth
        ));
    }
    if attempt.status.is_some_and(|s| s < 400) {
        problems.push(format!(
            "{case}: the disallowed preflight was answered {}, Access-Control-Allow-Origin: {:?}",
            answer(attempt),
            attempt.header("access-control-allow-origin")
        ));
    }
    if attempt.status.is_none() {
        problems.push(format!(
            "{case}: the proxy gave no answer to the disallowed preflight: {attempt:?}"
        ));
    }
    // The proxy answers at its timeout at the latest (a retry would start
    // it again).
    if attempt.total > PROXY_TIMEOUT + Duration::from_millis(1500) {
        problems.push(format!(
            "{case}: the disallowed preflight took {:?}",
            attempt.total
        ));
    }
    if action == Action::Reset && row.denied > 0 && row.resets != row.denied {
        problems.push(format!(
            "{case}: {} denials but {} resets; counters grown: {}",
            row.denied, row.resets, row.growth
        ));
    }
    filter.filter.stop()?;
    Ok(row)
}

/// curl through `kind`: for XDP and TC, drop and reset, an allowed
/// preflight and PUT are answered, a disallowed preflight never reaches the
/// application, and the proxy answers it with an error within its timeout.
fn curl_through(kind: ProxyKind) -> Result<()> {
    let mut problems = Vec::new();
    let mut rows = Vec::new();
    for hook in [Hook::Xdp, Hook::Tc] {
        for action in BOTH_ACTIONS {
            // A bed of its own for each case: the proxy's sockets of an
            // earlier case (a closed one still sending a dropped request
            // again, see `left_sending`) go with its namespaces.
            let mut bed = ProxyBed::new(kind, server_bin())?;
            if bed.browser_reaches_backend()? {
                bail!("the browser namespace reaches the backend directly");
            }
            rows.push(curl_case(&bed, hook, action, &mut problems)?);
            check_proxy(&mut bed, &mut problems)?;
        }
    }
    print_rows(&format!("curl over HTTPS through {}", kind.name()), &rows);
    if !problems.is_empty() {
        bail!(
            "{} problems through {}:\n{}",
            problems.len(),
            kind.name(),
            problems.join("\n")
        );
    }
    Ok(())
}

/// The proxy still runs, and every connection HAProxy opened to the
/// application started with a PROXY v2 header naming the browser.
fn check_proxy(bed: &mut ProxyBed, problems: &mut Vec<String>) -> Result<()> {
    let name = bed.proxy.kind.name();
    if bed.proxy.kind == ProxyKind::Haproxy {
        let conns = bed.backend.connections()?;
        let odd: Vec<&String> = conns
            .iter()
            .filter(|c| !c.contains(&format!(" v2 {}:", proxy_bed::BROWSER_V4)))
            .collect();
        if conns.is_empty() || !odd.is_empty() {
            problems.push(format!(
                "of {} connections from HAProxy, these had no PROXY v2 header naming the browser: {odd:?}",
                conns.len()
            ));
        }
    }
    if !bed.proxy.running() {
        problems.push(format!("{name} exited: {}", bed.proxy.output()));
    }
    Ok(())
}

#[test]
fn curl_through_haproxy_with_proxy_protocol_v2() -> Result<()> {
    curl_through(ProxyKind::Haproxy)
}

#[test]
fn curl_through_nginx_keepalive_pool() -> Result<()> {
    curl_through(ProxyKind::Nginx)
}

/// Headless Chromium, trusting the test CA through its NSS database,
/// through `kind`: one page of each origin (the disallowed one, with the
/// allowed one in an iframe) sends a preflighted PUT to the proxy. For
/// drop and reset: the allowed fetch is answered, the disallowed one fails
/// in the page, and the application saw neither its preflight nor its PUT.
fn chromium_through(kind: ProxyKind) -> Result<()> {
    let (allowed, denied) = (allowed(), denied());
    let flags = proxy_bed::chromium_flags();
    let mut problems = Vec::new();
    let mut table = format!(
        "\nChromium over HTTPS through {} (XDP; proxy timeout {PROXY_TIMEOUT:?}, page waits {:?})\n\
         | action | allowed page's fetch | disallowed page's fetch | proxy's log of the disallowed preflight: status (tries) | judged (preflight_deny) | new upstream conns |\n\
         |---|---|---|---|---|---|\n",
        kind.name(),
        proxy_bed::PAGE_WAIT,
    );
    for action in BOTH_ACTIONS {
        let case = format!("{} {}", kind.name(), action.name());
        let mut bed = ProxyBed::new(kind, server_bin())?;
        let ca = bed.certs.ca();
        // Up to 20 readiness tries of at most 1.25 s, then the fetch's 8 s.
        let options = ChromiumOptions {
            flags: &flags,
            trust_ca: Some(&ca),
            report_limit: Some(Duration::from_secs(45)),
        };
        let filter = bed.filter(Hook::Xdp, &config(action))?;
        let seen_before = bed.backend.seen()?.len();
        let connections = bed.backend.connections()?.len();
        // A page server of its own: its reports are this visit's only.
        let pages = PageServer::start_in(&bed.ns.browser, server_bin(), &proxy_bed::page_html())?;
        let inner = page_url(ALLOWED_PAGE_PORT, &[Scenario::Put], &[]);
        let url = page_url(DENIED_PAGE_PORT, &[Scenario::Put], &[inner]);
        let reports = visit_in(
            &bed.ns.browser,
            &pages,
            &url,
            &[(&allowed, Scenario::Put), (&denied, Scenario::Put)],
            &options,
        )?;
        let reports = &reports[..];
        let stats = filter.filter.stats()?;
        let grown = growth(&serde_json::json!({}), &stats);
        let allowed_result = result_of(reports, &allowed, Scenario::Put).unwrap_or_default();
        let denied_result = result_of(reports, &denied, Scenario::Put).unwrap_or_default();
        let proxied: Vec<String> = bed
            .proxy
            .request_log()
            .iter()
            .filter(|line| {
                line.contains(&denied) && line.contains(&format!("OPTIONS {PAGE_PUT_PATH} "))
            })
            .map(|line| {
                let status = line
                    .split(" status=")
                    .nth(1)
                    .and_then(|rest| rest.split(' ').next())
                    .unwrap_or("?");
                let tries = proxy_tries(line).map_or_else(|| "?".to_owned(), |n| n.to_string());
                format!("{status} ({tries})")
            })
            .collect();
        table += &format!(
            "| {} | {allowed_result} | {denied_result} | {} | {} | {} |\n",
            action.name(),
            proxied.join(", "),
            counter(&stats, "preflight_deny"),
            bed.backend.connections()?.len() - connections,
        );
        if !allowed_result.starts_with("status=200 body=ok ") {
            problems.push(format!(
                "{case}: the allowed page's fetch: {allowed_result:?} ({reports:?}); the proxy logged {:?}",
                bed.proxy.request_log()
            ));
        }
        if !denied_result.starts_with("error=") {
            problems.push(format!(
                "{case}: the disallowed page's fetch did not fail: {denied_result:?}"
            ));
        }
        let seen = bed.backend.seen()?[seen_before..].to_vec();
        let expected = [
            Seen::with_origin("OPTIONS", PAGE_PUT_PATH, &allowed),
            Seen::with_origin("PUT", PAGE_PUT_PATH, &allowed),
        ];
        if seen != expected {
            problems.push(format!(
                "{case}: the application saw {:?} from the allowed page (expected OPTIONS and PUT) and {:?} from the disallowed one",
                from_origin(&seen, &allowed),
                from_origin(&seen, &denied)
            ));
        }
        if counter(&stats, "preflight_deny") == 0 {
            problems.push(format!(
                "{case}: the filter denied nothing; counters: {grown}"
            ));
        }
        if counter(&stats, "preflight_allow") != 1 || counter(&stats, "unsafe_deny") != 0 {
            problems.push(format!(
                "{case}: not one allowed preflight and no unsafe denial; counters: {grown}"
            ));
        }
        filter.filter.stop()?;
        check_proxy(&mut bed, &mut problems)?;
    }
    eprintln!("{table}");
    if !problems.is_empty() {
        bail!(
            "{} problems with Chromium through {}:\n{}",
            problems.len(),
            kind.name(),
            problems.join("\n")
        );
    }
    Ok(())
}

#[test]
fn chromium_through_haproxy_with_proxy_protocol_v2() -> Result<()> {
    chromium_through(ProxyKind::Haproxy)
}

#[test]
fn chromium_through_nginx_keepalive_pool() -> Result<()> {
    chromium_through(ProxyKind::Nginx)
}

/// Clients sending allowed requests in a loop through nginx at once.
const LOOPERS: usize = 4;
/// Requests per curl run of a looper (one TLS connection to nginx).
const BATCH: usize = 20;
/// The most curl runs of a looper, and the longest it loops.
const MAX_BATCHES: usize = 2000;
const LOOP_LIMIT: Duration = Duration::from_secs(30);
/// Disallowed preflights sent meanwhile, each from a client of its own,
/// one every `DENIED_EVERY`.
const DENIED_COUNT: usize = 6;
const DENIED_EVERY: Duration = Duration::from_millis(250);

/// What the allowed loopers got.
#[derive(Default)]
struct Looped {
    sent: usize,
    failed: Vec<String>,
    slowest: Duration,
    /// Loopers that stopped (batch or time limit) before they were told
    /// to: the allowed traffic did not last through the denials.
    stopped_early: usize,
}

/// One curl run of `BATCH` allowed requests on one connection to nginx:
/// preflights (`preflight`) or PUTs, each line `RESULT CODE TIME`.
fn allowed_batch(bed: &ProxyBed, looper: usize, batch: usize, preflight: bool) -> Result<Looped> {
    let origin = format!("Origin: {}", allowed());
    let mut args = vec!["-H", &origin];
    let (method, expected) = if preflight {
        args.extend([
            "-H",
            "Access-Control-Request-Method: PUT",
            "-H",
            "Access-Control-Request-Headers: content-type",
        ]);
        ("OPTIONS", 204)
    } else {
        args.extend([
            "-H",
            "Content-Type: application/json",
            "--data-raw",
            r#"{"name":"item"}"#,
        ]);
        ("PUT", 200)
    };
    let w = "\nRESULT %{http_code} %{time_total}\n";
    let mut full = vec!["-X", method, "-w", w];
    full.extend(args);
    let path = format!("/api/shared/{looper}-{batch}-[1-{BATCH}]");
    let out = bed.curl_raw(&full, &path)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut looped = Looped::default();
    let results: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("RESULT "))
        .collect();
    looped.sent = BATCH;
    for result in &results {
        let mut fields = result.split(' ');
        let code: u16 = fields.next().unwrap_or("").parse().unwrap_or(0);
        let time: f64 = fields.next().unwrap_or("").parse().unwrap_or(0.0);
        looped.slowest = looped.slowest.max(Duration::from_secs_f64(time));
        if code != expected {
            looped
                .failed
                .push(format!("{method} {path}: {code} after {time} s"));
        }
    }
    if results.len() != BATCH {
        looped.failed.push(format!(
            "{method} {path}: {} results of {BATCH}: {:?}",
            results.len(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(looped)
}

/// Figures of one shared-pool run.
struct Shared {
    action: Action,
    allowed: Looped,
    denied: Vec<Attempt>,
    /// Every counter that grew.
    growth: String,
    new_connections: usize,
    /// The application's established connections after the run, and
    /// those of them nginx no longer has (its end closed, the close
    /// dropped by the filter).
    backend_established: usize,
    orphaned: usize,
    /// nginx's tries for each disallowed preflight (its log).
    tries: Vec<usize>,
    elapsed: Duration,
}

fn shared_run(bed: &ProxyBed, action: Action, problems: &mut Vec<String>) -> Result<Shared> {
    let filter = bed.filter(Hook::Xdp, &config(action))?;
    let (allowed, denied) = (allowed(), denied());
    // The pool has connections before the loop starts.
    let warm = bed.put(&allowed, "/api/shared/warm")?;
    if warm.status != Some(200) {
        problems.push(format!("{}: warm-up PUT: {warm:?}", action.name()));
    }
    let stats = filter.filter.stats()?;
    let connections = bed.backend.connections()?.len();
    let log_lines = bed.proxy.request_log().len();
    let seen_before = bed.backend.seen()?.len();
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let (looped, denied_attempts) = std::thread::scope(|scope| -> Result<_> {
        let loopers: Vec<_> = (0..LOOPERS)
            .map(|looper| {
                let stop = Arc::clone(&stop);
                scope.spawn(move || -> Result<Looped> {
                    let mut all = Looped {
                        stopped_early: 1,
                        ..Looped::default()
                    };
                    for batch in 0..MAX_BATCHES {
                        if stop.load(Ordering::Relaxed) {
                            all.stopped_early = 0;
                            break;
                        }
                        if started.elapsed() > LOOP_LIMIT {
                            break;
                        }
                        let one = allowed_batch(bed, looper, batch, looper % 2 == 0)?;
                        all.sent += one.sent;
                        all.failed.extend(one.failed);
                        all.slowest = all.slowest.max(one.slowest);
                    }
                    Ok(all)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let senders: Vec<_> = (0..DENIED_COUNT)
            .map(|i| {
                std::thread::sleep(DENIED_EVERY);
                let denied = &denied;
                scope.spawn(move || bed.preflight(denied, &format!("/api/shared/denied-{i}")))
            })
            .collect();
        let mut attempts = Vec::new();
        for sender in senders {
            attempts.push(
                sender
                    .join()
                    .map_err(|_| anyhow::anyhow!("a sender panicked"))??,
            );
        }
        // Allowed requests go on a little after the last denial.
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        let mut looped = Looped::default();
        for looper in loopers {
            let one = looper
                .join()
                .map_err(|_| anyhow::anyhow!("a looper panicked"))??;
            looped.sent += one.sent;
            looped.failed.extend(one.failed);
            looped.slowest = looped.slowest.max(one.slowest);
            looped.stopped_early += one.stopped_early;
        }
        Ok((looped, attempts))
    })?;
    let elapsed = started.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let after = filter.filter.stats()?;
    let growth = growth(&stats, &after);
    let log = bed.proxy.request_log();
    let denied_lines: Vec<&String> = log[log_lines..]
        .iter()
        .filter(|line| line.contains(&denied))
        .collect();
    let tries: Vec<usize> = denied_lines
        .iter()
        .map(|line| proxy_tries(line).unwrap_or(0))
        .collect();
    let (backend_established, orphaned) = orphans(bed)?;
    let shared = Shared {
        action,
        new_connections: bed.backend.connections()?.len() - connections,
        backend_established,
        orphaned,
        allowed: looped,
        denied: denied_attempts,
        growth,
        tries,
        elapsed,
    };
    let case = format!("shared pool, {}", action.name());
    if shared.allowed.stopped_early > 0 {
        problems.push(format!(
            "{case}: {} loopers ran out of batches or time before the denials were done",
            shared.allowed.stopped_early
        ));
    }
    if !shared.allowed.failed.is_empty() {
        problems.push(format!(
            "{case}: {} of {} allowed requests failed: {:?}",
            shared.allowed.failed.len(),
            shared.allowed.sent,
            shared.allowed.failed
        ));
    }
    if bed.backend.saw_origin(&denied)? {
        problems.push(format!(
            "{case}: the application saw a disallowed preflight"
        ));
    }
    let deny = grew(&stats, &after, "preflight_deny");
    if deny < DENIED_COUNT as u64 {
        problems.push(format!(
            "{case}: {deny} denials for {DENIED_COUNT} disallowed preflights: {after}"
        ));
    }
    for attempt in &shared.denied {
        if attempt.status.is_none_or(|s| s < 400) {
            problems.push(format!("{case}: a disallowed preflight: {attempt:?}"));
        }
    }
    // Every allowed preflight that reached the application was judged so,
    // once.
    let allowed_seen = bed.backend.seen()?[seen_before..]
        .iter()
        .filter(|s| s.method == "OPTIONS" && s.origin.as_deref() == Some(allowed.as_str()))
        .count() as u64;
    let judged = grew(&stats, &after, "preflight_allow");
    if judged != allowed_seen {
        problems.push(format!(
            "{case}: {judged} allowed preflights judged, {allowed_seen} seen by the application; counters grown: {}",
            shared.growth
        ));
    }
    filter.filter.stop()?;
    Ok(shared)
}

/// The application's established connections, and how many of them have
/// no established (or closing) end in the proxy namespace any more.
fn orphans(bed: &ProxyBed) -> Result<(usize, usize)> {
    let backend: Vec<_> = connections(&bed.ns.backend, BACKEND_PORT)?
        .into_iter()
        .filter(|s| s.state == "ESTAB")
        .collect();
    let proxy: Vec<_> = connections(&bed.ns.proxy, BACKEND_PORT)?
        .into_iter()
        .filter(|s| s.state == "ESTAB")
        .map(|s| s.local)
        .collect();
    let orphaned = backend.iter().filter(|s| !proxy.contains(&s.peer)).count();
    Ok((backend.len(), orphaned))
}

/// Many clients' allowed requests share nginx's pooled connections to the
/// application while disallowed preflights go through the same nginx:
/// with drop and with reset, no allowed request fails and every disallowed
/// preflight is denied.
#[test]
fn shared_nginx_pool_keeps_serving_allowed_requests() -> Result<()> {
    let mut problems = Vec::new();
    let mut runs = Vec::new();
    for action in BOTH_ACTIONS {
        let mut bed = ProxyBed::new(ProxyKind::Nginx, server_bin())?;
        runs.push(shared_run(&bed, action, &mut problems)?);
        check_proxy(&mut bed, &mut problems)?;
    }
    let mut out = format!(
        "\nShared nginx pool (keepalive 16; XDP; proxy_read_timeout {PROXY_TIMEOUT:?}): \
         {LOOPERS} clients looping allowed preflights/PUTs, {DENIED_COUNT} disallowed preflights meanwhile\n\
         | action | allowed sent | allowed failed | slowest allowed | loop time | disallowed: answers (curl time) | nginx tries per disallowed | new upstream conns | backend ESTAB after (orphaned) | filter counters grown |\n\
         |---|---|---|---|---|---|---|---|---|---|\n"
    );
    for run in &runs {
        let answers: Vec<String> = run
            .denied
            .iter()
            .map(|a| format!("{} ({:.2} s)", answer(a), a.total.as_secs_f64()))
            .collect();
        out += &format!(
            "| {} | {} | {} | {:.3} s | {:.1} s | {} | {:?} | {} | {} ({}) | {} |\n",
            run.action.name(),
            run.allowed.sent,
            run.allowed.failed.len(),
            run.allowed.slowest.as_secs_f64(),
            run.elapsed.as_secs_f64(),
            answers.join(", "),
            run.tries,
            run.new_connections,
            run.backend_established,
            run.orphaned,
            run.growth,
        );
    }
    eprintln!("{out}");
    if !problems.is_empty() {
        bail!("{} problems:\n{}", problems.len(), problems.join("\n"));
    }
    Ok(())
}
