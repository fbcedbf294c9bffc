//! Part 3: allowed traffic through the veth pair, wrk against nginx, with
//! and without cors-filter, runs alternated so that drift spreads evenly.

use anyhow::{Result, bail};
use cors_filter_tests::{
    frames::bare_xdp::{BareAction, BareXdp},
    harness::netns::{NetnsPair, SERVER_IF, SERVER_V4},
};

use super::{
    cpu,
    filter::Filter,
    nginx::{self, Nginx, PORT},
    wrk::{self, Wrk},
};
use crate::report::{Part, Section, Target};

const ROUNDS: usize = 9;
const SECONDS: u32 = 5;
const CONNECTIONS: u32 = 32;
const WARM_UP_SECONDS: u32 = 3;

#[derive(Clone, Copy, PartialEq)]
enum Setup {
    Without,
    BarePass,
    FilterXdp,
    FilterTc,
}

impl Setup {
    const ALL: [Setup; 4] = [
        Setup::Without,
        Setup::BarePass,
        Setup::FilterXdp,
        Setup::FilterTc,
    ];

    fn name(self) -> &'static str {
        match self {
            Setup::Without => "no program",
            Setup::BarePass => "bare XDP_PASS (native)",
            Setup::FilterXdp => "cors-filter, XDP native",
            Setup::FilterTc => "cors-filter, TC",
        }
    }

    fn index(self) -> usize {
        self as usize
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
        Setup::FilterXdp | Setup::FilterTc => {
            let filter = if setup == Setup::FilterXdp {
                Filter::start(pair)?
            } else {
                Filter::start_with(pair, &["--attach", "tc"])?
            };
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
    let setups = Setup::ALL;
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
            "throughput vs no program",
            "p99 vs no program",
        ],
    );
    section.note(format!(
        "nginx (1 worker, `return 200`) in the server namespace, `wrk -t1 -c{CONNECTIONS} \
         -d{SECONDS}s --latency` in the client namespace, GET / without Origin on keep-alive \
         connections. {ROUNDS} rounds, each running the setups one after the other; \
         medians over the rounds. cors-filter inspects port {PORT}, so it parses every \
         request (checked: its `requests` counter moves by wrk's request count)."
    ));
    section.note(
        "The baseline is no program at all. Attaching any native XDP program to a veth \
         moves its receive path to NAPI, turning each skb into an XDP frame (a ring, a \
         poll, a copy when the headroom is short), which costs something by itself: the \
         bare XDP_PASS row shows that part, so that cors-filter's own share under XDP is \
         the difference between its row and that one. A NIC's driver runs XDP on its own \
         receive ring and has no such step. TC (a TCX link at ingress) runs on the skb as \
         it is. Threaded NAPI is off here (the default).",
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
    let paired = |setup: Setup, base: Setup, f: fn(&Wrk) -> f64| {
        let mut changes: Vec<f64> = (0..ROUNDS)
            .map(|r| change(f(&results[setup.index()][r]), f(&results[base.index()][r])))
            .collect();
        median(&mut changes)
    };
    let per_second = |r: &Wrk| r.per_second;
    let p99 = |r: &Wrk| r.p99_us;
    section.note(format!(
        "Paired within each round instead (each setup against the no-program run of the \
         same round), the median changes in requests/s and p99 are: cors-filter XDP \
         {:+.1}% and {:+.1}%, cors-filter TC {:+.1}% and {:+.1}%; cors-filter XDP against \
         bare XDP_PASS, its own share, {:+.1}% and {:+.1}%. wrk and nginx share the \
         machine, wrk pinned to the first CPU and the nginx worker to the last; run-to-run \
         spread is a few percent, of the order of the targets: read the per-run columns.",
        paired(Setup::FilterXdp, Setup::Without, per_second),
        paired(Setup::FilterXdp, Setup::Without, p99),
        paired(Setup::FilterTc, Setup::Without, per_second),
        paired(Setup::FilterTc, Setup::Without, p99),
        paired(Setup::FilterXdp, Setup::BarePass, per_second),
        paired(Setup::FilterXdp, Setup::BarePass, p99),
    ));
    // The targets are TC's: on a veth, native XDP costs something by itself
    // (see the note above), stated beside the bare program's share.
    let against_none = |setup: Setup| {
        let (rps, p99) = medians[setup.index()];
        (-change(rps, base_rps), change(p99, base_p99))
    };
    let (loss, increase) = against_none(Setup::FilterTc);
    let targets = vec![
        Target {
            what: format!("allowed throughput loss, {}", Setup::FilterTc.name()),
            bound: "<= 3%".into(),
            measured: format!("{loss:.1}%"),
            met: loss <= 3.0,
        },
        Target {
            what: format!("allowed p99 latency increase, {}", Setup::FilterTc.name()),
            bound: "<= 5%".into(),
            measured: format!("{increase:.1}%"),
            met: increase <= 5.0,
        },
    ];
    let (xdp_loss, xdp_increase) = against_none(Setup::FilterXdp);
    let (bare_loss, bare_increase) = against_none(Setup::BarePass);
    let xdp = format!(
        "At native XDP (no target: see above): cors-filter loses {xdp_loss:.1}% throughput \
         and adds {xdp_increase:.1}% p99; a bare XDP_PASS on the same veth loses \
         {bare_loss:.1}% and adds {bare_increase:.1}%."
    );
    println!("{xdp}");
    section.note(xdp);
    section.note(cpu::busy_note(busy));
    if busy > 0.05 {
        eprintln!("cors-filter-bench: {}", cpu::busy_note(busy));
    }
    Ok(Part {
        sections: vec![section],
        targets,
    })
}
