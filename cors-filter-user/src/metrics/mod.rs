//! The filter's counters: read from the pinned maps, rendered for
//! Prometheus, `stats` and `stats --json`, and served over HTTP.

pub mod attached;
pub mod exposure;
pub mod fleet;
pub mod listener;

use std::{
    borrow::Borrow,
    fmt::Write as _,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use aya::{
    Pod,
    maps::{HashMap, Map, MapData, PerCpuArray},
};
use cors_filter_common::{
    Counter,
    counters::{Metric, MetricFamily},
    pinned::name,
    stream::{ConnKey, ConnState, HeadState},
};
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use crate::{
    denials::{DeniedByOrigin, OTHER_ORIGINS, TopOrigins},
    kernel::layout::add_carried,
    kernel::pins::{open_pinned, pin_exists, pin_path},
    kernel::policy::PolicyMaps,
    metrics::attached::build_info_labels,
    metrics::fleet::FleetState,
};

/// How full the connection maps are (`CONNS`, `OPEN_HEADS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableUsage {
    /// Entries in `CONNS`: connections followed.
    pub conns_in_use: u64,
    /// Its size (`max_connections`).
    pub conns_capacity: u64,
    /// Entries in `OPEN_HEADS`: request heads that spanned a segment's end
    /// and are not finished.
    pub open_heads_in_use: u64,
    /// Its size (`max_open_heads`).
    pub open_heads_capacity: u64,
}

impl TableUsage {
    /// Counts the entries of the maps pinned in `pin_dir` by walking their
    /// keys, one system call per entry (a quarter of a million for a full
    /// `CONNS` of the default size: some tenths of a second). A map that is
    /// not pinned (a filter that ran without it) counts as empty, of size 0.
    ///
    /// The walk is not a snapshot: the program adds (and evicts) entries
    /// meanwhile, and a walk whose key is evicted under it starts again
    /// from the first key. The count is capped at the map's size.
    pub fn read(pin_dir: &Path) -> Result<TableUsage> {
        let (conns_in_use, conns_capacity) = count_entries::<ConnState>(pin_dir, name::CONNS)?;
        let (open_heads_in_use, open_heads_capacity) =
            count_entries::<HeadState>(pin_dir, name::OPEN_HEADS)?;
        Ok(TableUsage {
            conns_in_use,
            conns_capacity,
            open_heads_in_use,
            open_heads_capacity,
        })
    }
}

/// The entries in the hash map pinned as `name`, and its size.
fn count_entries<V: Pod>(pin_dir: &Path, name: &str) -> Result<(u64, u64)> {
    if !pin_exists(&pin_path(pin_dir, name))? {
        return Ok((0, 0));
    }
    let data = open_pinned(pin_dir, name)?;
    let capacity = data
        .info()
        .with_context(|| format!("cannot read the size of {name}"))?
        .max_entries();
    let map = Map::from_map_data(data).with_context(|| format!("cannot open {name}"))?;
    let map: HashMap<MapData, ConnKey, V> =
        HashMap::try_from(map).with_context(|| format!("{name} is not the expected hash map"))?;
    let mut entries = 0u64;
    for key in map.keys() {
        key.with_context(|| format!("cannot iterate {name}"))?;
        entries += 1;
        if entries >= u64::from(capacity) {
            break;
        }
    }
    Ok((entries, capacity.into()))
}

/// [`TableUsage`] counted at most once per [`TABLE_USAGE_MAX_AGE`], so that
/// a scrape of `/metrics` stays cheap however often it comes.
#[derive(Clone, Default)]
pub struct TableUsageCache(Arc<Mutex<Option<(Instant, TableUsage)>>>);

/// How long a count of the connection maps is served before another.
pub const TABLE_USAGE_MAX_AGE: Duration = Duration::from_secs(5);

impl TableUsageCache {
    pub fn get(&self, pin_dir: &Path) -> Result<TableUsage> {
        // Held while counting: scrapes that come meanwhile wait for this
        // count rather than start their own.
        let mut cached = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, usage)) = *cached
            && at.elapsed() < TABLE_USAGE_MAX_AGE
        {
            return Ok(usage);
        }
        let usage = TableUsage::read(pin_dir)?;
        *cached = Some((Instant::now(), usage));
        Ok(usage)
    }
}

/// Counter values summed over CPUs, the allowlist size, the number of
/// policies installed and how full the connection maps are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    counters: [u64; Counter::COUNT as usize],
    pub allowlist_entries: u64,
    pub policies_installed: u64,
    pub tables: TableUsage,
    /// The links the filter enforces on, per their pins.
    pub attached: Vec<attached::AttachedLink>,
}

impl Snapshot {
    /// The counters and the connection maps' entries, counted now.
    pub fn read(pin_dir: &Path) -> Result<Snapshot> {
        Self::read_with(pin_dir, TableUsage::read(pin_dir)?)
    }

    /// The counters, with the connection maps' entries as counted by
    /// `cache` (at most [`TABLE_USAGE_MAX_AGE`] ago).
    pub fn read_cached(pin_dir: &Path, cache: &TableUsageCache) -> Result<Snapshot> {
        Self::read_with(pin_dir, cache.get(pin_dir)?)
    }

    fn read_with(pin_dir: &Path, tables: TableUsage) -> Result<Snapshot> {
        let counters: PerCpuArray<MapData, u64> =
            PerCpuArray::try_from(Map::PerCpuArray(open_pinned(pin_dir, name::COUNTERS)?))
                .context("COUNTERS is not the expected per-CPU array")?;
        let mut values = sum_counters(&counters)?;
        add_carried(pin_dir, &mut values)?;
        let mut policy = PolicyMaps::open(pin_dir)?;
        let policies_installed = policy.installed()?.into();
        let entries = policy.count_active()?;
        Ok(Snapshot {
            attached: attached::read(pin_dir)?,
            counters: values,
            allowlist_entries: entries,
            policies_installed,
            tables,
        })
    }

    pub fn get(&self, counter: Counter) -> u64 {
        self.counters[counter.index() as usize]
    }

    /// Connections whose entry in `CONNS` was evicted to make room for
    /// another's: those that got one (`conns_learned`) less those that have
    /// one now. An estimate: the program never deletes an entry, so every
    /// one learned and gone was evicted, but the entries are counted by a
    /// walk while the program runs (see [`TableUsage::read`]), and a
    /// connection learned again after its eviction counts twice in
    /// `conns_learned`.
    pub fn conns_evicted(&self) -> u64 {
        self.get(Counter::ConnsLearned)
            .saturating_sub(self.tables.conns_in_use)
    }

    /// The values `stats` shows after the counters, by their names in
    /// `stats --json`.
    fn extra_fields(&self) -> [(&'static str, u64); 7] {
        [
            ("allowlist_entries", self.allowlist_entries),
            ("policies_installed", self.policies_installed),
            ("conns_in_use", self.tables.conns_in_use),
            ("conns_capacity", self.tables.conns_capacity),
            ("conns_evicted", self.conns_evicted()),
            ("open_heads_in_use", self.tables.open_heads_in_use),
            ("open_heads_capacity", self.tables.open_heads_capacity),
        ]
    }

    /// The Prometheus text exposition of the counters and of `denied` per
    /// origin, written by the `prometheus` crate (which escapes label values).
    pub fn prometheus(&self, denied: &TopOrigins) -> Result<String> {
        let registry = Registry::new();
        // Every counter, as its row in the table says (`Counter::metric`).
        let mut families: Vec<(&MetricFamily, IntCounterVec)> = Vec::new();
        for counter in Counter::ALL {
            match counter.metric() {
                Metric::Own { name, help } => {
                    let metric = IntCounter::new(name, help)?;
                    metric.inc_by(self.get(counter));
                    registry.register(Box::new(metric))?;
                }
                Metric::Series { family, value } => {
                    let at = match families.iter().position(|(f, _)| *f == family) {
                        Some(at) => at,
                        None => {
                            let metric = IntCounterVec::new(
                                Opts::new(family.name, family.help),
                                &[family.label],
                            )?;
                            registry.register(Box::new(metric.clone()))?;
                            families.push((family, metric));
                            families.len() - 1
                        }
                    };
                    let metric = &families[at].1;
                    metric
                        .get_metric_with_label_values(&[value])?
                        .inc_by(self.get(counter));
                }
            }
        }
        let policies = IntCounter::new(
            "cors_filter_policies_installed_total",
            "Policies installed (at start and by each reload); counts on across daemon restarts.",
        )?;
        policies.inc_by(self.policies_installed);
        registry.register(Box::new(policies))?;
        let evicted = IntCounter::new(
            "cors_filter_connections_evicted_total",
            "Connections whose CONNS entry was evicted for another's, estimated: connections learned less entries in use (counted at most every 5 s).",
        )?;
        evicted.inc_by(self.conns_evicted());
        registry.register(Box::new(evicted))?;

        let by_origin = IntCounterVec::new(
            Opts::new(
                "cors_filter_denied_by_origin_total",
                "Preflights and unsafe requests denied (in monitor mode: that would have been) by Origin value as sent \
                 (non-printable bytes escaped, cut at 128 bytes), kept across restarts: \
                 the top origins at daemon start (and new ones while slots were free), \
                 the rest under origin=\"other\".",
            ),
            &["origin"],
        )?;
        let top = denied
            .top
            .iter()
            .map(|(origin, count)| (origin.as_str(), *count));
        for (origin, count) in top.chain([(OTHER_ORIGINS, denied.other)]) {
            by_origin
                .get_metric_with_label_values(&[origin])?
                .inc_by(count);
        }
        registry.register(Box::new(by_origin))?;

        let entries = IntGauge::new(
            "cors_filter_allowlist_entries",
            "Origins (exact and wildcard) in the allowlist.",
        )?;
        entries.set(i64::try_from(self.allowlist_entries).context("allowlist size out of range")?);
        registry.register(Box::new(entries))?;

        let gauge = |name: &str, help: &str, value: u64| -> Result<()> {
            let metric = IntGauge::new(name, help)?;
            metric.set(i64::try_from(value).context("map size out of range")?);
            registry.register(Box::new(metric))?;
            Ok(())
        };
        let connections = IntGaugeVec::new(
            Opts::new(
                "cors_filter_connections",
                "Connections followed: entries in CONNS (counted at most every 5 s).",
            ),
            &["state"],
        )?;
        connections
            .get_metric_with_label_values(&["in_use"])?
            .set(i64::try_from(self.tables.conns_in_use).context("map size out of range")?);
        registry.register(Box::new(connections))?;
        gauge(
            "cors_filter_connections_capacity",
            "Entries CONNS can hold (max_connections); past it the least recently used is evicted.",
            self.tables.conns_capacity,
        )?;
        gauge(
            "cors_filter_open_heads",
            "Request heads that spanned a segment's end and are not finished: entries in OPEN_HEADS (counted at most every 5 s).",
            self.tables.open_heads_in_use,
        )?;
        gauge(
            "cors_filter_open_heads_capacity",
            "Entries OPEN_HEADS can hold (max_open_heads).",
            self.tables.open_heads_capacity,
        )?;

        let build_info = IntGaugeVec::new(
            Opts::new(
                "cors_filter_build_info",
                "Always 1: the version of the daemon serving these metrics and the layout of the pins it reads.",
            ),
            &build_info_labels().map(|(name, _)| name),
        )?;
        build_info
            .get_metric_with_label_values(&build_info_labels().each_ref().map(|(_, v)| v.as_str()))?
            .set(1);
        registry.register(Box::new(build_info))?;
        let links = IntGaugeVec::new(
            Opts::new(
                "cors_filter_attached",
                "1 for each link the filter enforces on (read from the link pins at each scrape): interface, hook (xdp or tc), xdp_mode (native, skb, none for tc).",
            ),
            &["interface", "hook", "xdp_mode"],
        )?;
        for link in &self.attached {
            links
                .get_metric_with_label_values(&link.labels().map(|(_, v)| v))?
                .set(1);
        }
        registry.register(Box::new(links))?;

        TextEncoder::new()
            .encode_to_string(&registry.gather())
            .context("cannot encode the metrics")
    }

    pub fn json(&self) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for counter in Counter::ALL {
            map.insert(counter.name().to_owned(), self.get(counter).into());
        }
        for (name, value) in self.extra_fields() {
            map.insert(name.to_owned(), value.into());
        }
        serde_json::Value::Object(map)
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        for counter in Counter::ALL {
            let _ = writeln!(out, "{:<24} {}", counter.name(), self.get(counter));
        }
        for (name, value) in self.extra_fields() {
            let _ = writeln!(out, "{name:<24} {value}");
        }
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

/// Serves `GET /metrics` for as long as the daemon runs: the counters read
/// from the maps pinned in `pin_dir`, the denials per origin and the
/// daemon's own series (`fleet`). The listener holds whatever its clients
/// do (see [`listener`]): this never returns.
pub async fn serve(
    listener: TcpListener,
    pin_dir: std::path::PathBuf,
    denied: DeniedByOrigin,
    fleet: Arc<FleetState>,
) -> Result<()> {
    let tables = TableUsageCache::default();
    listener::accept_forever(listener, move |stream| {
        let (pin_dir, denied, tables, fleet) = (
            pin_dir.clone(),
            denied.clone(),
            tables.clone(),
            fleet.clone(),
        );
        async move { answer(stream, &pin_dir, &denied, &tables, &fleet).await }
    })
    .await;
    Ok(())
}

async fn answer(
    mut stream: TcpStream,
    pin_dir: &Path,
    denied: &DeniedByOrigin,
    tables: &TableUsageCache,
    fleet: &Arc<FleetState>,
) {
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut filled = 0;
    // A client that has not sent its whole request by then gives its slot
    // back (the whole connection has `listener::CONNECTION_DEADLINE`).
    let read_deadline = tokio::time::Instant::now() + listener::REQUEST_DEADLINE;
    let response = loop {
        let read = stream.read(&mut buf[filled..]);
        let n = match tokio::time::timeout_at(read_deadline, read).await {
            Ok(Ok(0) | Err(_)) | Err(_) => return,
            Ok(Ok(n)) => n,
        };
        filled += n;
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut request = httparse::Request::new(&mut headers);
        match request.parse(&buf[..filled]) {
            Ok(httparse::Status::Complete(_)) => {
                // Off the event loop: reading the maps is system calls,
                // a count of the connection maps up to a quarter million.
                let method = request.method.map(str::to_owned);
                let path = request.path.map(str::to_owned);
                let (pin_dir, denied, tables, fleet) = (
                    pin_dir.to_owned(),
                    denied.clone(),
                    tables.clone(),
                    fleet.clone(),
                );
                let responded = tokio::task::spawn_blocking(move || {
                    let (method, path) = (method.as_deref(), path.as_deref());
                    respond(method, path, &pin_dir, &denied, &tables, &fleet)
                });
                break match responded.await {
                    Ok(response) => response,
                    Err(e) => plain(500, "Internal Server Error", &format!("{e}\n")),
                };
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
    tables: &TableUsageCache,
    fleet: &FleetState,
) -> String {
    match (method, path) {
        (Some("GET"), Some("/metrics")) => match exposition(pin_dir, denied, tables, fleet) {
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

fn exposition(
    pin_dir: &Path,
    denied: &DeniedByOrigin,
    tables: &TableUsageCache,
    fleet: &FleetState,
) -> Result<String> {
    let counters = Snapshot::read_cached(pin_dir, tables)?.prometheus(&denied.top_origins()?)?;
    Ok(counters + &fleet.prometheus()?)
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
        counters[Counter::PassRetransmission.index() as usize] = 11;
        counters[Counter::PassBody.index() as usize] = 12;
        counters[Counter::PassHeadPart.index() as usize] = 13;
        counters[Counter::PassUntracked.index() as usize] = 14;
        counters[Counter::ConnectionDenied.index() as usize] = 15;
        counters[Counter::OutOfOrder.index() as usize] = 16;
        counters[Counter::HeadLost.index() as usize] = 17;
        counters[Counter::ConnsLearned.index() as usize] = 1000;
        Snapshot {
            attached: vec![
                attached::AttachedLink {
                    interface: "eth0".into(),
                    hook: crate::kernel::links::HookName::XdpNative,
                },
                attached::AttachedLink {
                    interface: "eth1".into(),
                    hook: crate::kernel::links::HookName::Tc,
                },
            ],
            counters,
            allowlist_entries: 5,
            policies_installed: 1,
            tables: TableUsage {
                conns_in_use: 900,
                conns_capacity: 262_144,
                open_heads_in_use: 3,
                open_heads_capacity: 16_384,
            },
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
            "cors_filter_passed_total{reason=\"retransmission\"} 11",
            "cors_filter_passed_total{reason=\"body\"} 12",
            "cors_filter_passed_total{reason=\"head_part\"} 13",
            "cors_filter_passed_total{reason=\"untracked\"} 14",
            "cors_filter_connection_denied_total 15",
            "cors_filter_out_of_order_total 16",
            "cors_filter_head_lost_total 17",
            "cors_filter_connections_learned_total 1000",
            "cors_filter_connections_evicted_total 100",
            "cors_filter_connections{state=\"in_use\"} 900",
            "cors_filter_connections_capacity 262144",
            "cors_filter_open_heads 3",
            "cors_filter_open_heads_capacity 16384",
            "# TYPE cors_filter_connections gauge",
            "# TYPE cors_filter_connections_capacity gauge",
            "# TYPE cors_filter_open_heads gauge",
            "# TYPE cors_filter_open_heads_capacity gauge",
            "# TYPE cors_filter_connections_evicted_total counter",
            "cors_filter_build_info{layout=\"2\",version=\"0.2.0\"} 1",
            "# TYPE cors_filter_build_info gauge",
            "cors_filter_attached{hook=\"xdp\",interface=\"eth0\",xdp_mode=\"native\"} 1",
            "cors_filter_attached{hook=\"tc\",interface=\"eth1\",xdp_mode=\"none\"} 1",
            "# TYPE cors_filter_attached gauge",
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

    /// Every counter is in the exposition, at its value: a counter the
    /// table has but `/metrics` leaves out, or two on one series, fail.
    #[test]
    fn every_counter_is_exported() {
        let mut s = snapshot();
        for counter in Counter::ALL {
            s.counters[counter.index() as usize] = 1000 + u64::from(counter.index());
        }
        let text = s.prometheus(&TopOrigins::default()).unwrap();
        for counter in Counter::ALL {
            let series = match counter.metric() {
                Metric::Own { name, .. } => name.to_owned(),
                Metric::Series { family, value } => {
                    format!("{}{{{}=\"{value}\"}}", family.name, family.label)
                }
            };
            let line = format!("{series} {}", s.get(counter));
            assert!(
                text.lines().any(|l| l == line),
                "{counter:?}: missing {line:?} in\n{text}"
            );
        }
    }

    /// README's list of series names every counter's metric (a
    /// `cors_filter_passed_total` series by its family, which README says
    /// has one per `pass_*` counter): a counter added to the table but not
    /// to README fails here.
    #[test]
    fn readme_lists_every_metric() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let list = readme
            .split_once("on 127.0.0.1:9186 unless")
            .and_then(|(_, rest)| rest.split_once("written by the `prometheus` crate"))
            .map(|(list, _)| list)
            .expect("README's list of /metrics series");
        for counter in Counter::ALL {
            let name = match counter.metric() {
                Metric::Own { name, .. } => name,
                Metric::Series { family, .. } => family.name,
            };
            assert!(
                list.contains(&format!("`{name}`")) || list.contains(&format!("`{name}{{")),
                "{counter:?}: README's list of series does not name `{name}`"
            );
        }
    }

    #[test]
    fn every_pass_counter_is_a_passed_reason() {
        let text = snapshot().prometheus(&TopOrigins::default()).unwrap();
        for counter in Counter::ALL {
            if let Some(reason) = counter.name().strip_prefix("pass_") {
                let series = format!("cors_filter_passed_total{{reason=\"{reason}\"}}");
                assert!(text.contains(&series), "missing {series}");
            }
        }
    }

    #[test]
    fn stats_show_the_connection_maps() {
        let s = snapshot();
        let json = s.json();
        for (name, value) in [
            ("conns_in_use", 900),
            ("conns_capacity", 262_144),
            ("conns_evicted", 100),
            ("open_heads_in_use", 3),
            ("open_heads_capacity", 16_384),
            ("conns_learned", 1000),
            ("connection_denied", 15),
            ("out_of_order", 16),
            ("head_lost", 17),
            ("pass_retransmission", 11),
        ] {
            assert_eq!(json[name], value, "{name} in {json}");
        }
        let table = s.table();
        for line in [
            "conns_in_use             900",
            "conns_capacity           262144",
            "conns_evicted            100",
            "open_heads_in_use        3",
            "open_heads_capacity      16384",
            "conns_learned            1000",
        ] {
            assert!(
                table.lines().any(|l| l == line),
                "missing {line:?} in\n{table}"
            );
        }
        // More entries than connections learned (the walk raced the
        // program, or the counters were reset): no eviction, not a wrap.
        let mut raced = snapshot();
        raced.tables.conns_in_use = 2000;
        assert_eq!(raced.conns_evicted(), 0);
        assert_eq!(raced.json()["conns_evicted"], 0);
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
