//! End-to-end: denial events from the attached program to the daemon's log,
//! its per-origin counts on `/metrics` and in `stats`, across a restart.
//! Real namespaces, server and filter, as in `e2e.rs`; requests sent as raw
//! bytes (see `raw_client`) so that odd and long origins can be sent.

use std::path::Path;
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use cors_filter_tests::{
    harness::bed::Bed,
    harness::client::Family,
    harness::filter::{FilterHome, RunningFilter},
    harness::metrics::{Metrics, by_label},
    harness::raw_client,
    system::promtool,
};

const ALLOWED: &str = "https://app.example.com";
const SERIES: &str = "cors_filter_denied_by_origin_total";
/// How long a test waits for the daemon to catch up (events read, counts
/// saved every 2 s).
const CATCH_UP: Duration = Duration::from_secs(15);

fn config(extra: &str) -> String {
    format!("ports = [8080]\nallow = [\"{ALLOWED}\"]\n{extra}")
}

/// Polls `probe` every 100 ms until it gives a value, for at most `limit`.
fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe()? {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn value(metrics: &Metrics, series: &str) -> u64 {
    metrics
        .get(series)
        .copied()
        .unwrap_or_else(|| panic!("no series {series} in {metrics:?}"))
}

/// The per-origin series, origin label unescaped.
fn per_origin(metrics: &Metrics) -> BTreeMap<String, u64> {
    by_label(metrics, SERIES, "origin")
}

/// `/metrics` once the per-origin counts add up to the kernel's
/// `preflight_deny` counter (every event read) and to at least `least`.
fn settled_metrics(filter: &RunningFilter, least: u64) -> Result<Metrics> {
    wait_for(
        "per-origin counts matching preflight_deny",
        CATCH_UP,
        || {
            let m = filter.metric_values()?;
            let deny = value(&m, "cors_filter_preflights_total{verdict=\"deny\"}");
            let counted: u64 = per_origin(&m).values().sum();
            Ok((deny >= least && counted == deny).then_some(m))
        },
    )
}

/// `stats --json` once its saved per-origin counts total `total`.
fn settled_stats(filter: &RunningFilter, total: u64) -> Result<serde_json::Value> {
    wait_for(
        "stats showing the saved per-origin counts",
        CATCH_UP,
        || {
            let stats = filter.stats()?;
            Ok((stats["denied_origins"]["total"].as_u64() == Some(total)).then_some(stats))
        },
    )
}

fn bed() -> Result<Bed> {
    Bed::new(Path::new(env!("CARGO_BIN_EXE_cors-test-server")))
}

/// Denials from a few distinct origins, an odd one and a long one among
/// them (monitor mode: every request reaches the server, and is counted
/// exactly once): logged, counted per origin on `/metrics` with the top 2
/// one by one and the rest as `other`, accepted by promtool, shown by
/// `stats`, and still there after a restart.
#[test]
fn denials_are_logged_counted_per_origin_and_kept_across_restarts() -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(&config("mode = \"monitor\"\n"))?;
    let filter = RunningFilter::start(&bed.pair, &home, &["--metrics-top-origins", "2"])?;

    let long = format!("https://{}.example", "x".repeat(200));
    let long_shown = format!("https://{}…", "x".repeat(120));
    let odd: &[u8] = b"https://odd\"q\\b\xff\x01.example";
    let odd_shown = r#"https://odd\"q\\b\xff\x01.example"#;
    // (origin sent, times, as shown, reason in the log)
    let sent: [(&[u8], u64, &str, &str); 6] = [
        (
            b"https://evil.example",
            3,
            "https://evil.example",
            "origin not allowed",
        ),
        (
            b"http://attacker.test:8080",
            2,
            "http://attacker.test:8080",
            "origin not allowed",
        ),
        (
            b"https://c.example",
            1,
            "https://c.example",
            "origin not allowed",
        ),
        (long.as_bytes(), 1, &long_shown, "origin not allowed"),
        (odd, 1, odd_shown, "malformed origin"),
        (
            b"https://a.example/path",
            1,
            "https://a.example/path",
            "malformed origin",
        ),
    ];
    let mut requests = Vec::new();
    for (origin, times, _, _) in &sent {
        for _ in 0..*times {
            requests.push(raw_client::preflight(origin));
        }
    }
    // Allowed preflights are no denials.
    requests.push(raw_client::preflight(ALLOWED.as_bytes()));
    requests.push(raw_client::preflight(ALLOWED.as_bytes()));
    let answers = raw_client::send_all(&bed.pair, Family::V4, &requests, Duration::from_secs(2))?;
    assert!(
        answers.iter().all(Option::is_some),
        "monitor mode dropped a request"
    );

    let metrics = settled_metrics(&filter, 9)?;
    let origins = per_origin(&metrics);
    assert_eq!(
        origins,
        BTreeMap::from([
            ("https://evil.example".to_owned(), 3),
            ("http://attacker.test:8080".to_owned(), 2),
            ("other".to_owned(), 4),
        ]),
        "{metrics:?}"
    );
    assert_eq!(
        value(&metrics, "cors_filter_preflights_total{verdict=\"deny\"}"),
        9
    );
    assert_eq!(
        value(&metrics, "cors_filter_preflights_total{verdict=\"allow\"}"),
        2
    );
    assert_eq!(value(&metrics, "cors_filter_malformed_total"), 2);
    assert_eq!(value(&metrics, "cors_filter_denial_events_lost_total"), 0);
    promtool::check_metrics(&filter.metrics()?)?;

    let stats = settled_stats(&filter, 9)?;
    let shown = &stats["denied_origins"];
    let top: Vec<(String, u64)> = shown["top"]
        .as_array()
        .context("no top origins in stats")?
        .iter()
        .map(|e| {
            (
                e["origin"].as_str().unwrap_or("?").to_owned(),
                e["denials"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    // The default top 10: all six, most denied first, ties by origin.
    let mut expected: Vec<(String, u64)> = sent
        .iter()
        .map(|(_, n, s, _)| (s.to_string(), *n))
        .collect();
    expected.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    assert_eq!(top, expected, "{stats}");
    assert_eq!(shown["other"], 0);
    let table = filter.cli_ok(&["stats", "--top", "1"])?;
    assert!(table.contains("denied origins (9 denials"), "{table}");
    assert!(
        table.lines().any(|l| l.trim() == "3  https://evil.example"),
        "{table}"
    );
    assert!(
        table.lines().any(|l| l.trim() == "6  (other origins)"),
        "{table}"
    );

    let log = filter.log();
    for (_, times, shown, reason) in &sent {
        let line = format!("denial: {reason} from 198.18.0.1:");
        // raw_client's preflights ask for PUT.
        let origin = format!("to port 8080, origin \"{shown}\", preflight for PUT");
        let found = log
            .lines()
            .filter(|l| l.contains(&line) && l.ends_with(&origin))
            .count();
        assert_eq!(found as u64, *times, "{line} ... {origin} in:\n{log}");
    }
    assert!(
        !log.contains(ALLOWED),
        "an allowed origin was logged:\n{log}"
    );
    filter.stop()?;

    // The counts were saved at exit, 0600, and a new daemon starts from
    // them (on new pins, so its kernel counters start from zero), with the
    // default top 20.
    let saved = home.state_dir().join("denied-origins.json");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&saved)?.permissions().mode() & 0o777,
        0o600
    );
    let filter = RunningFilter::start(&bed.pair, &home, &[])?;
    let metrics = filter.metric_values()?;
    assert_eq!(
        value(&metrics, "cors_filter_preflights_total{verdict=\"deny\"}"),
        0
    );
    let mut after: BTreeMap<String, u64> = sent
        .iter()
        .map(|(_, n, s, _)| (s.to_string(), *n))
        .collect();
    after.insert("other".to_owned(), 0);
    assert_eq!(per_origin(&metrics), after);
    promtool::check_metrics(&filter.metrics()?)?;
    filter.stop()
}

/// A burst of denials gives a bounded number of log lines, and a line
/// saying how many more there were: every denial is either logged or
/// counted in a summary, and all are counted per origin.
#[test]
fn denial_log_lines_are_rate_limited() -> Result<()> {
    const BURST: u64 = 100;
    let bed = bed()?;
    let home = FilterHome::new(&config("mode = \"monitor\"\n"))?;
    let filter = RunningFilter::start(&bed.pair, &home, &[])?;
    let requests = vec![raw_client::preflight(b"https://flood.example"); BURST as usize];
    let started = Instant::now();
    let answers = raw_client::send_all(&bed.pair, Family::V4, &requests, Duration::from_secs(2))?;
    let took = started.elapsed();
    assert!(answers.iter().all(Option::is_some));
    let metrics = settled_metrics(&filter, BURST)?;
    assert_eq!(per_origin(&metrics)["https://flood.example"], BURST);
    filter.stop()?;

    let log = filter_log(&home)?;
    let logged = log
        .lines()
        .filter(|l| l.contains("denial: origin not allowed from 198.18.0.1:"))
        .count() as u64;
    let summaries: Vec<u64> = log
        .lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once("] ")?;
            rest.strip_suffix(" more denial(s) not logged (at most 10 lines per 1s)")?
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(logged + summaries.iter().sum::<u64>(), BURST, "{log}");
    assert!(!summaries.is_empty(), "no summary line:\n{log}");
    // One window of 10 lines per started second of the burst, and one
    // more for the reading that lags behind it.
    let windows = took.as_secs() + 2;
    assert!(
        logged <= 10 * windows,
        "{logged} lines logged for a {took:?} burst:\n{log}"
    );
    Ok(())
}

/// The log of the filter that ran in `home`: the newest `filter-*.log`.
fn filter_log(home: &FilterHome) -> Result<String> {
    let dir = home.config().parent().context("home")?.to_owned();
    let mut logs: Vec<_> = std::fs::read_dir(&dir)?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("filter-"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    logs.sort();
    let (_, newest) = logs.pop().context("no filter log")?;
    std::fs::read_to_string(&newest).with_context(|| format!("cannot read {}", newest.display()))
}

/// In enforce mode, by default: a dropped preflight (and its
/// retransmissions) from IPv6, and an OPTIONS request whose head is longer
/// than `max_head_bytes`, dropped as incomplete, are reported; the
/// incomplete one is logged without an origin and not counted per origin.
#[test]
fn dropped_preflights_and_incomplete_heads_are_reported() -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(&config(""))?;
    let filter = RunningFilter::start(&bed.pair, &home, &[])?;
    let wait = Duration::from_secs(1);
    let denied = raw_client::send(
        &bed.pair,
        Family::V6,
        &raw_client::preflight(b"https://evil.example"),
        wait,
    )?;
    assert_eq!(denied, None, "the denied preflight was answered");
    let mut incomplete =
        b"OPTIONS /api/items HTTP/1.1\r\nHost: server\r\nOrigin: https://evil.example\r\nX-Pad: "
            .to_vec();
    incomplete.resize(
        incomplete.len() + cors_filter_common::stream::DEFAULT_MAX_HEAD_BYTES as usize,
        b'p',
    );
    incomplete.extend_from_slice(b"\r\nAccess-Control-Request-Method: PUT\r\n\r\n");
    assert_eq!(
        raw_client::send(&bed.pair, Family::V4, &incomplete, wait)?,
        None
    );

    let metrics = settled_metrics(&filter, 1)?;
    let deny = value(&metrics, "cors_filter_preflights_total{verdict=\"deny\"}");
    assert_eq!(
        per_origin(&metrics),
        BTreeMap::from([
            ("https://evil.example".to_owned(), deny),
            ("other".to_owned(), 0)
        ])
    );
    assert!(value(&metrics, "cors_filter_incomplete_total") >= 1);
    assert_eq!(value(&metrics, "cors_filter_denial_events_lost_total"), 0);
    let log = wait_for("the incomplete head in the log", CATCH_UP, || {
        let log = filter.log();
        Ok(log
            .contains("denial: incomplete request head from 198.18.0.1:")
            .then_some(log))
    })?;
    assert!(
        log.lines().any(
            |l| l.contains("denial: origin not allowed from [fd00:c0f::1]:")
                && l.ends_with("to port 8080, origin \"https://evil.example\", preflight for PUT")
        ),
        "{log}"
    );
    assert!(
        log.lines().any(
            |l| l.contains("denial: incomplete request head from 198.18.0.1:")
                && l.ends_with("to port 8080, origin \"(none)\", OPTIONS request")
        ),
        "{log}"
    );
    filter.stop()
}

/// The TC program reports denials like the XDP one, source address
/// included (it reads the frame from another context).
#[test]
fn tc_attachment_reports_denials_too() -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(&config(""))?;
    let filter = RunningFilter::start(&bed.pair, &home, &["--attach", "tc"])?;
    let request = raw_client::preflight(b"https://tc.example");
    let answer = raw_client::send(&bed.pair, Family::V4, &request, Duration::from_secs(1))?;
    assert_eq!(answer, None, "the denied preflight was answered");
    let metrics = settled_metrics(&filter, 1)?;
    let deny = value(&metrics, "cors_filter_preflights_total{verdict=\"deny\"}");
    assert_eq!(per_origin(&metrics)["https://tc.example"], deny);
    let log = filter.log();
    assert!(
        log.lines().any(
            |l| l.contains("denial: origin not allowed from 198.18.0.1:")
                && l.ends_with("to port 8080, origin \"https://tc.example\", preflight for PUT")
        ),
        "{log}"
    );
    filter.stop()
}
