//! The filter's counters: read from the pinned maps, rendered for
//! Prometheus, `stats` and `stats --json`, and served over HTTP.

use std::{borrow::Borrow, fmt::Write as _, path::Path, time::Duration};

use anyhow::{Context, Result};
use aya::maps::{Map, MapData, PerCpuArray};
use cors_filter_common::Counter;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use crate::{
    denials::{DeniedByOrigin, OTHER_ORIGINS, TopOrigins},
    pins::open_pinned,
    policy::PolicyMaps,
};

/// Counter values summed over CPUs, the allowlist size and the number of
/// policies installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    counters: [u64; Counter::COUNT as usize],
    pub allowlist_entries: u64,
    pub policies_installed: u64,
}

impl Snapshot {
    pub fn read(pin_dir: &Path) -> Result<Snapshot> {
        let counters: PerCpuArray<MapData, u64> =
            PerCpuArray::try_from(Map::PerCpuArray(open_pinned(pin_dir, "COUNTERS")?))
                .context("COUNTERS is not the expected per-CPU array")?;
        let values = sum_counters(&counters)?;
        let mut policy = PolicyMaps::open(pin_dir)?;
        let policies_installed = policy.installed()?.into();
        let mut entries = 0;
        for key in policy.active_allowlist()?.keys() {
            key.context("cannot iterate the allowlist")?;
            entries += 1;
        }
        Ok(Snapshot {
            counters: values,
            allowlist_entries: entries,
            policies_installed,
        })
    }

    pub fn get(&self, counter: Counter) -> u64 {
        self.counters[counter.index() as usize]
    }

    /// The Prometheus text exposition of the counters and of `denied` per
    /// origin, written by the `prometheus` crate (which escapes label values).
    pub fn prometheus(&self, denied: &TopOrigins) -> Result<String> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, counter: Counter| -> Result<()> {
            let metric = IntCounter::new(name, help)?;
            metric.inc_by(self.get(counter));
            registry.register(Box::new(metric))?;
            Ok(())
        };
        counter(
            "cors_filter_packets_total",
            "Packets the program (XDP or TC) saw.",
            Counter::Packets,
        )?;
        counter(
            "cors_filter_requests_total",
            "HTTP requests inspected (payloads starting with an HTTP/1.x request line).",
            Counter::Requests,
        )?;
        counter(
            "cors_filter_malformed_total",
            "Preflights and unsafe requests with a malformed or repeated Origin (also counted as deny).",
            Counter::Malformed,
        )?;
        counter(
            "cors_filter_method_denied_total",
            "Preflights and unsafe requests from an allowed origin with a method its allowlist entry does not list (also counted as deny).",
            Counter::MethodDeny,
        )?;
        counter(
            "cors_filter_cross_site_denied_total",
            "Unsafe requests without Origin whose Sec-Fetch-Site says cross-site (also counted as deny).",
            Counter::CrossSite,
        )?;
        counter(
            "cors_filter_unsafe_no_origin_total",
            "Unsafe requests to ports that protect them with neither Origin nor Sec-Fetch-Site: cross-site, passed (not from a browser's cross-site page).",
            Counter::NoOrigin,
        )?;
        counter(
            "cors_filter_incomplete_total",
            "Requests (preflights, unsafe requests) whose head did not fit in the scan window.",
            Counter::Incomplete,
        )?;
        counter(
            "cors_filter_dropped_total",
            "Packets dropped by the filter (with --action reset, also those answered with a reset).",
            Counter::Dropped,
        )?;
        let policies = IntCounter::new(
            "cors_filter_policies_installed_total",
            "Policies installed (at start and by each reload); counts on across daemon restarts.",
        )?;
        policies.inc_by(self.policies_installed);
        registry.register(Box::new(policies))?;
        counter(
            "cors_filter_denial_events_lost_total",
            "Denial events the program could not report because the ring buffer was full.",
            Counter::EventsLost,
        )?;

        let labelled =
            |name: &str, help: &str, label: &str, samples: &[(&str, u64)]| -> Result<()> {
                let metric = IntCounterVec::new(Opts::new(name, help), &[label])?;
                for (value, count) in samples {
                    metric
                        .get_metric_with_label_values(&[*value])?
                        .inc_by(*count);
                }
                registry.register(Box::new(metric))?;
                Ok(())
            };
        labelled(
            "cors_filter_preflights_total",
            "CORS preflights by verdict; deny counts drops, and in monitor mode what would have been dropped.",
            "verdict",
            &[
                ("allow", self.get(Counter::PreflightAllow)),
                ("deny", self.get(Counter::PreflightDeny)),
            ],
        )?;
        labelled(
            "cors_filter_unsafe_requests_total",
            "Requests with unsafe methods (not GET, HEAD, OPTIONS, TRACE) to ports with protect_unsafe_methods that carried an Origin or Sec-Fetch-Site: cross-site, by verdict; deny counts drops, and in monitor mode what would have been dropped.",
            "verdict",
            &[
                ("allow", self.get(Counter::UnsafeAllow)),
                ("deny", self.get(Counter::UnsafeDeny)),
            ],
        )?;
        labelled(
            "cors_filter_resets_total",
            "Dropped packets answered with a TCP reset (--action reset), by result: sent, or failed (dropped without a reply).",
            "result",
            &[
                ("sent", self.get(Counter::ResetSent)),
                ("failed", self.get(Counter::ResetFailed)),
            ],
        )?;
        // The `pass_*` counters, by their reason.
        let passed: Vec<(&str, u64)> = Counter::ALL
            .iter()
            .filter_map(|c| Some((c.name().strip_prefix("pass_")?, self.get(*c))))
            .collect();
        labelled(
            "cors_filter_passed_total",
            "Packets passed without a preflight verdict, by reason.",
            "reason",
            &passed,
        )?;
        let mut by_origin: Vec<(&str, u64)> = denied
            .top
            .iter()
            .map(|(origin, count)| (origin.as_str(), *count))
            .collect();
        by_origin.push((OTHER_ORIGINS, denied.other));
        labelled(
            "cors_filter_denied_by_origin_total",
            "Preflights and unsafe requests denied (in monitor mode: that would have been) by Origin value as sent \
             (non-printable bytes escaped, cut at 128 bytes), kept across restarts: \
             the top origins at daemon start (and new ones while slots were free), \
             the rest under origin=\"other\".",
            "origin",
            &by_origin,
        )?;

        let entries = IntGauge::new(
            "cors_filter_allowlist_entries",
            "Origins (exact and wildcard) in the allowlist.",
        )?;
        entries.set(i64::try_from(self.allowlist_entries).context("allowlist size out of range")?);
        registry.register(Box::new(entries))?;

        TextEncoder::new()
            .encode_to_string(&registry.gather())
            .context("cannot encode the metrics")
    }

    pub fn json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for counter in Counter::ALL {
            map.insert(counter.name().to_owned(), self.get(counter).into());
        }
        map.insert(
            "allowlist_entries".to_owned(),
            self.allowlist_entries.into(),
        );
        map.insert(
            "policies_installed".to_owned(),
            self.policies_installed.into(),
        );
        serde_json::Value::Object(map)
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        for counter in Counter::ALL {
            let _ = writeln!(out, "{:<24} {}", counter.name(), self.get(counter));
        }
        let _ = writeln!(
            out,
            "{:<24} {}",
            "allowlist_entries", self.allowlist_entries
        );
        let _ = writeln!(
            out,
            "{:<24} {}",
            "policies_installed", self.policies_installed
        );
        out
    }
}

/// Every counter of a `COUNTERS` map, summed over CPUs, with the derived
/// ones (`packets`, `requests`) filled in.
pub fn sum_counters<T: Borrow<MapData>>(
    counters: &PerCpuArray<T, u64>,
) -> Result<[u64; Counter::COUNT as usize]> {
    let mut values = [0u64; Counter::COUNT as usize];
    for counter in Counter::ALL {
        let per_cpu = counters
            .get(&counter.index(), 0)
            .with_context(|| format!("cannot read counter {}", counter.name()))?;
        values[counter.index() as usize] = per_cpu.iter().copied().fold(0u64, u64::wrapping_add);
    }
    Counter::derive(&mut values);
    Ok(values)
}

const MAX_REQUEST: usize = 8192;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `GET /metrics` until the listener fails: the counters read from
/// the maps pinned in `pin_dir` and the denials per origin.
pub async fn serve(
    listener: TcpListener,
    pin_dir: std::path::PathBuf,
    denied: DeniedByOrigin,
) -> Result<()> {
    loop {
        let (stream, peer) = listener.accept().await.context("metrics listener failed")?;
        let pin_dir = pin_dir.clone();
        let denied = denied.clone();
        tokio::spawn(async move {
            let answered = answer(stream, &pin_dir, &denied);
            if let Err(e) = tokio::time::timeout(REQUEST_TIMEOUT, answered).await {
                log::debug!("metrics request from {peer} timed out: {e}");
            }
        });
    }
}

async fn answer(mut stream: TcpStream, pin_dir: &Path, denied: &DeniedByOrigin) {
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut filled = 0;
    let response = loop {
        let n = match stream.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        filled += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf[..filled]) {
            Ok(httparse::Status::Complete(_)) => {
                break respond(request.method, request.path, pin_dir, denied);
            }
            Ok(httparse::Status::Partial) if filled < MAX_REQUEST => continue,
            _ => break plain(400, "Bad Request", "bad request\n"),
        }
    };
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn respond(
    method: Option<&str>,
    path: Option<&str>,
    pin_dir: &Path,
    denied: &DeniedByOrigin,
) -> String {
    match (method, path) {
        (Some("GET"), Some("/metrics")) => match exposition(pin_dir, denied) {
            Ok(body) => format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                prometheus::TEXT_FORMAT,
                body.len()
            ),
            Err(e) => {
                log::error!("cannot serve metrics: {e:#}");
                plain(500, "Internal Server Error", &format!("{e:#}\n"))
            }
        },
        (Some("GET"), _) => plain(404, "Not Found", "only /metrics is served here\n"),
        _ => plain(405, "Method Not Allowed", "only GET is served here\n"),
    }
}

fn exposition(pin_dir: &Path, denied: &DeniedByOrigin) -> Result<String> {
    Snapshot::read(pin_dir)?.prometheus(&denied.top_origins()?)
}

fn plain(code: u16, reason: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        let mut counters = [0u64; Counter::COUNT as usize];
        counters[Counter::PreflightDeny.index() as usize] = 3;
        counters[Counter::PassNotHttp.index() as usize] = 2;
        counters[Counter::EventsLost.index() as usize] = 1;
        counters[Counter::ResetSent.index() as usize] = 4;
        counters[Counter::UnsafeAllow.index() as usize] = 6;
        counters[Counter::UnsafeDeny.index() as usize] = 7;
        counters[Counter::MethodDeny.index() as usize] = 8;
        counters[Counter::CrossSite.index() as usize] = 9;
        counters[Counter::NoOrigin.index() as usize] = 10;
        Snapshot {
            counters,
            allowlist_entries: 5,
            policies_installed: 1,
        }
    }

    /// Origins as the decoder renders them: quotes and backslashes
    /// escaped once already, a cut one, odd bytes as escapes.
    fn denied() -> TopOrigins {
        TopOrigins {
            top: vec![
                ("https://evil.example".to_owned(), 2),
                (r#"https://a\"b\\c\xff"#.to_owned(), 1),
                ("https://long…".to_owned(), 1),
            ],
            other: 4,
        }
    }

    #[test]
    fn prometheus_text_has_the_documented_series() {
        let text = snapshot().prometheus(&denied()).unwrap();
        for line in [
            "cors_filter_packets_total 0",
            "cors_filter_requests_total 0",
            "cors_filter_preflights_total{verdict=\"allow\"} 0",
            "cors_filter_preflights_total{verdict=\"deny\"} 3",
            "cors_filter_malformed_total 0",
            "cors_filter_unsafe_requests_total{verdict=\"allow\"} 6",
            "cors_filter_unsafe_requests_total{verdict=\"deny\"} 7",
            "cors_filter_method_denied_total 8",
            "cors_filter_cross_site_denied_total 9",
            "cors_filter_unsafe_no_origin_total 10",
            "cors_filter_incomplete_total 0",
            "cors_filter_dropped_total 0",
            "cors_filter_passed_total{reason=\"not_http\"} 2",
            "cors_filter_passed_total{reason=\"not_preflight\"} 0",
            "cors_filter_resets_total{result=\"sent\"} 4",
            "cors_filter_resets_total{result=\"failed\"} 0",
            "cors_filter_allowlist_entries 5",
            "cors_filter_denial_events_lost_total 1",
            "# TYPE cors_filter_allowlist_entries gauge",
            "# TYPE cors_filter_packets_total counter",
            "# TYPE cors_filter_denied_by_origin_total counter",
            "cors_filter_denied_by_origin_total{origin=\"https://evil.example\"} 2",
            r#"cors_filter_denied_by_origin_total{origin="https://a\\\"b\\\\c\\xff"} 1"#,
            "cors_filter_denied_by_origin_total{origin=\"https://long…\"} 1",
            "cors_filter_denied_by_origin_total{origin=\"other\"} 4",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert_eq!(snapshot().json()["preflight_deny"], 3);
        assert_eq!(snapshot().json()["events_lost"], 1);
        assert_eq!(snapshot().json()["reset_sent"], 4);
        assert_eq!(snapshot().json()["reset_failed"], 0);
    }

    #[test]
    fn the_other_series_is_there_without_denials() {
        let text = snapshot().prometheus(&TopOrigins::default()).unwrap();
        assert!(
            text.lines()
                .any(|l| l == "cors_filter_denied_by_origin_total{origin=\"other\"} 0"),
            "{text}"
        );
    }

    /// `promtool check metrics` (Debian's `prometheus` package, installed
    /// by `cargo xtask setup`) accepts the exposition, odd labels included.
    #[test]
    fn promtool_accepts_the_exposition() {
        use std::{io::Write as _, process::Stdio};
        let text = snapshot().prometheus(&denied()).unwrap();
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool not found: run `cargo xtask setup` (Debian package prometheus)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "promtool check metrics: {}{}\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
