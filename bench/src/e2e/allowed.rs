//! Part 3: allowed traffic through the veth pair, wrk against nginx, with
//! and without cors-filter, runs alternated so that drift spreads evenly.

use anyhow::{Result, bail};
use cors_filter_tests::{
    bare_xdp::{BareAction, BareXdp},
    netns::{NetnsPair, SERVER_IF, SERVER_V4},
};

use super::{
    cpu,
    filter::Filter,
    nginx::{self, Nginx, PORT},
    wrk::{self, Wrk},
};
use crate::report::{Part, Section, Target};

const ROUNDS: usize = 5;
const SECONDS: u32 = 4;
const CONNECTIONS: u32 = 32;
const WARM_UP_SECONDS: u32 = 3;

#[derive(Clone, Copy, PartialEq)]
enum Setup {
    Without,
    BarePass,
    Filter,
}

impl Setup {
    fn name(self) -> &'static str {
        match self {
            Setup::Without => "no XDP program",
            Setup::BarePass => "bare XDP_PASS",
            Setup::Filter => "cors-filter",
        }
    }
}

/// One wrk run with `setup` on the server interface, which is taken off
/// again before returning.
fn one_run(pair: &NetnsPair, setup: Setup, url: &str) -> Result<Wrk> {
    match setup {
        Setup::Without => wrk::run(&pair.client, CONNECTIONS, SECONDS, None, url),
        Setup::BarePass => {
            let _pass = BareXdp::attach(BareAction::Pass, &pair.server_ns_path(), SERVER_IF)?;
            wrk::run(&pair.client, CONNECTIONS, SECONDS, None, url)
        }
        Setup::Filter => {
            let filter = Filter::start(pair)?;
            let before = filter.counter("requests")?;
            let result = wrk::run(&pair.client, CONNECTIONS, SECONDS, None, url)?;
            let inspected = filter.counter("requests")? - before;
            // wrk counts the answers it read; the filter also saw the
            // requests still in flight when wrk stopped, at most one per
            // connection. Fewer means the traffic went around the filter.
            if inspected < result.requests
                || inspected > result.requests + u64::from(CONNECTIONS) * 2
            {
                bail!(
                    "cors-filter's `requests` counter moved by {inspected} while wrk completed {} requests: the requests were not all inspected",
                    result.requests
                );
            }
            eprintln!(
                "cors-filter-bench: cors-filter inspected {inspected} requests, wrk completed {}",
                result.requests
            );
            Ok(result)
        }
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

pub fn run() -> Result<Part> {
    let busy = cpu::busy_before()?;
    let pair = NetnsPair::create()?;
    let nginx = Nginx::start(&pair, nginx::ANSWER_OK)?;
    let url = format!("http://{SERVER_V4}:{PORT}/");
    // Unreported: the first runs on a fresh pair (and after part 2, while
    // its namespaces are still being torn down) came out slower.
    wrk::run(&pair.client, CONNECTIONS, WARM_UP_SECONDS, None, &url)?;
    let setups = [Setup::Without, Setup::BarePass, Setup::Filter];
    let mut results: Vec<Vec<Wrk>> = vec![Vec::new(); setups.len()];
    for _ in 0..ROUNDS {
        for (i, &setup) in setups.iter().enumerate() {
            let result = one_run(&pair, setup, &url)?;
            if result.non_2xx != 0 || result.requests == 0 {
                bail!(
                    "{}: {} of {} answers were errors\n{}",
                    setup.name(),
                    result.non_2xx,
                    result.requests,
                    nginx.error_log()
                );
            }
            results[i].push(result);
        }
    }
    drop(nginx);

    let medians: Vec<(f64, f64)> = results
        .iter()
        .map(|runs| {
            let mut rps: Vec<f64> = runs.iter().map(|r| r.per_second).collect();
            let mut p99: Vec<f64> = runs.iter().map(|r| r.p99_us).collect();
            (median(&mut rps), median(&mut p99))
        })
        .collect();
    let (base_rps, base_p99) = medians[0];
    let change = |value: f64, base: f64| (value - base) / base * 100.0;

    let mut section = Section::new(
        "Allowed traffic through the veth pair (wrk, keep-alive)",
        &[
            "server interface",
            "requests/s (median)",
            "p99 µs (median)",
            "requests/s per run",
            "p99 µs per run",
            "throughput vs none",
            "p99 vs none",
        ],
    );
    section.note(format!(
        "nginx (1 worker, `return 200`) in the server namespace, `wrk -t1 -c{CONNECTIONS} \
         -d{SECONDS}s --latency` in the client namespace, GET / without Origin on keep-alive \
         connections. {ROUNDS} rounds, each running the three setups one after the other; \
         medians over the rounds. cors-filter inspects port {PORT}, so it parses every \
         request (checked: its `requests` counter moves by wrk's request count)."
    ));
    section.note(
        "The honest baseline is no XDP program at all. Attaching any XDP program to a veth \
         moves its receive path to NAPI (a ring, a poll, no GRO unless enabled), which costs \
         something by itself: the bare XDP_PASS row shows that part, so that cors-filter's \
         own share is the difference between its row and that one. Threaded NAPI is off \
         here (the default).",
    );
    for ((setup, runs), (rps, p99)) in setups.iter().zip(&results).zip(&medians) {
        let list = |f: fn(&Wrk) -> f64| {
            runs.iter()
                .map(|r| format!("{:.0}", f(r)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        section.row(vec![
            setup.name().to_owned(),
            format!("{rps:.0}"),
            format!("{p99:.0}"),
            list(|r| r.per_second),
            list(|r| r.p99_us),
            format!("{:+.1}%", change(*rps, base_rps)),
            format!("{:+.1}%", change(*p99, base_p99)),
        ]);
    }
    // Paired within each round, which cancels drift between rounds.
    let mut paired_rps: Vec<f64> = (0..ROUNDS)
        .map(|r| change(results[2][r].per_second, results[0][r].per_second))
        .collect();
    let mut paired_p99: Vec<f64> = (0..ROUNDS)
        .map(|r| change(results[2][r].p99_us, results[0][r].p99_us))
        .collect();
    section.note(format!(
        "Paired within each round instead (cors-filter against the no-program run just \
         before it), the median changes are {:+.1}% requests/s and {:+.1}% p99. wrk and \
         nginx share the machine, wrk pinned to the first CPU and the nginx worker to the \
         last; run-to-run spread is several percent, of the order of the \
         targets: read the per-run columns.",
        median(&mut paired_rps),
        median(&mut paired_p99)
    ));
    let (filter_rps, filter_p99) = medians[2];
    let loss = -change(filter_rps, base_rps);
    let p99_increase = change(filter_p99, base_p99);
    section.note(cpu::busy_note(busy));
    if busy > 0.05 {
        eprintln!("cors-filter-bench: {}", cpu::busy_note(busy));
    }
    Ok(Part {
        sections: vec![section],
        targets: vec![
            Target {
                what: "allowed throughput loss with cors-filter".into(),
                bound: "<= 3%".into(),
                measured: format!("{loss:.1}%"),
                met: loss <= 3.0,
            },
            Target {
                what: "allowed p99 latency increase with cors-filter".into(),
                bound: "<= 5%".into(),
                measured: format!("{p99_increase:.1}%"),
                met: p99_increase <= 5.0,
            },
        ],
    })
}
