//! The filter's counters: read from the pinned maps, rendered for
//! Prometheus, `stats` and `stats --json`, and served over HTTP.

use std::{borrow::Borrow, fmt::Write as _, path::Path, time::Duration};

use anyhow::{Context, Result};
use aya::maps::{LpmTrie, Map, MapData, PerCpuArray};
use cors_filter_common::{Counter, origin::OriginKey};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use crate::pins::open_pinned;

/// Counter values summed over CPUs, and the allowlist size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    counters: [u64; Counter::COUNT as usize],
    pub allowlist_entries: u64,
}

impl Snapshot {
    pub fn read(pin_dir: &Path) -> Result<Snapshot> {
        let counters: PerCpuArray<MapData, u64> =
            PerCpuArray::try_from(Map::PerCpuArray(open_pinned(pin_dir, "COUNTERS")?))
                .context("COUNTERS is not the expected per-CPU array")?;
        let values = sum_counters(&counters)?;
        let allowlist: LpmTrie<MapData, OriginKey, u32> =
            LpmTrie::try_from(Map::LpmTrie(open_pinned(pin_dir, "ALLOWLIST")?))
                .context("ALLOWLIST is not the expected LPM trie")?;
        let mut entries = 0;
        for key in allowlist.keys() {
            key.context("cannot iterate the allowlist")?;
            entries += 1;
        }
        Ok(Snapshot {
            counters: values,
            allowlist_entries: entries,
        })
    }

    pub fn get(&self, counter: Counter) -> u64 {
        self.counters[counter.index() as usize]
    }

    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        metric(
            "cors_filter_packets_total",
            "counter",
            "Packets the XDP program saw.",
            &[("", self.get(Counter::Packets))],
        );
        metric(
            "cors_filter_requests_total",
            "counter",
            "HTTP requests inspected (payloads starting with an HTTP/1.x request line).",
            &[("", self.get(Counter::Requests))],
        );
        metric(
            "cors_filter_preflights_total",
            "counter",
            "CORS preflights by verdict; deny counts drops, and in monitor mode what would have been dropped.",
            &[
                ("{verdict=\"allow\"}", self.get(Counter::PreflightAllow)),
                ("{verdict=\"deny\"}", self.get(Counter::PreflightDeny)),
            ],
        );
        metric(
            "cors_filter_malformed_total",
            "counter",
            "Preflights with a malformed or repeated Origin (also counted as deny).",
            &[("", self.get(Counter::Malformed))],
        );
        metric(
            "cors_filter_incomplete_total",
            "counter",
            "OPTIONS requests whose head did not fit in the scan window.",
            &[("", self.get(Counter::Incomplete))],
        );
        metric(
            "cors_filter_dropped_total",
            "counter",
            "Packets dropped by the filter (with --action reset, also those answered with a reset).",
            &[("", self.get(Counter::Dropped))],
        );
        metric(
            "cors_filter_resets_total",
            "counter",
            "Dropped packets answered with a TCP reset (--action reset), by result: sent, or failed (dropped without a reply).",
            &[
                ("{result=\"sent\"}", self.get(Counter::ResetSent)),
                ("{result=\"failed\"}", self.get(Counter::ResetFailed)),
            ],
        );
        // The `pass_*` counters, by their reason.
        let labels: Vec<(String, u64)> = Counter::ALL
            .iter()
            .filter_map(|c| {
                let reason = c.name().strip_prefix("pass_")?;
                Some((format!("{{reason=\"{reason}\"}}"), self.get(*c)))
            })
            .collect();
        let samples: Vec<(&str, u64)> = labels.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        metric(
            "cors_filter_passed_total",
            "counter",
            "Packets passed without a preflight verdict, by reason.",
            &samples,
        );
        metric(
            "cors_filter_allowlist_entries",
            "gauge",
            "Origins (exact and wildcard) in the allowlist.",
            &[("", self.allowlist_entries)],
        );
        out
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
        out
    }
}

/// Every counter of a `COUNTERS` map, summed over CPUs.
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
    Ok(values)
}

const MAX_REQUEST: usize = 8192;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `GET /metrics` until the listener fails.
pub async fn serve(listener: TcpListener, pin_dir: std::path::PathBuf) -> Result<()> {
    loop {
        let (stream, peer) = listener.accept().await.context("metrics listener failed")?;
        let pin_dir = pin_dir.clone();
        tokio::spawn(async move {
            if let Err(e) = tokio::time::timeout(REQUEST_TIMEOUT, answer(stream, &pin_dir)).await {
                log::debug!("metrics request from {peer} timed out: {e}");
            }
        });
    }
}

async fn answer(mut stream: TcpStream, pin_dir: &Path) {
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
                break respond(request.method, request.path, pin_dir);
            }
            Ok(httparse::Status::Partial) if filled < MAX_REQUEST => continue,
            _ => break plain(400, "Bad Request", "bad request\n"),
        }
    };
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn respond(method: Option<&str>, path: Option<&str>, pin_dir: &Path) -> String {
    match (method, path) {
        (Some("GET"), Some("/metrics")) => match Snapshot::read(pin_dir) {
            Ok(snapshot) => {
                let body = snapshot.prometheus();
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            }
            Err(e) => {
                log::error!("cannot read counters: {e:#}");
                plain(500, "Internal Server Error", &format!("{e:#}\n"))
            }
        },
        (Some("GET"), _) => plain(404, "Not Found", "only /metrics is served here\n"),
        _ => plain(405, "Method Not Allowed", "only GET is served here\n"),
    }
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

    #[test]
    fn prometheus_text_has_the_documented_series() {
        let mut counters = [0u64; Counter::COUNT as usize];
        counters[Counter::PreflightDeny.index() as usize] = 3;
        counters[Counter::PassNotHttp.index() as usize] = 2;
        counters[Counter::ResetSent.index() as usize] = 4;
        let s = Snapshot {
            counters,
            allowlist_entries: 5,
        };
        let text = s.prometheus();
        for line in [
            "cors_filter_packets_total 0",
            "cors_filter_requests_total 0",
            "cors_filter_preflights_total{verdict=\"allow\"} 0",
            "cors_filter_preflights_total{verdict=\"deny\"} 3",
            "cors_filter_malformed_total 0",
            "cors_filter_incomplete_total 0",
            "cors_filter_passed_total{reason=\"not_http\"} 2",
            "cors_filter_resets_total{result=\"sent\"} 4",
            "cors_filter_resets_total{result=\"failed\"} 0",
            "cors_filter_allowlist_entries 5",
            "# TYPE cors_filter_allowlist_entries gauge",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        assert_eq!(s.json()["preflight_deny"], 3);
        assert_eq!(s.json()["reset_sent"], 4);
        assert_eq!(s.json()["reset_failed"], 0);
    }
}
