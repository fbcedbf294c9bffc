//! Part 1: the program's cost per packet under `BPF_PROG_TEST_RUN`, next to
//! bare `XDP_PASS` and `XDP_DROP` programs loaded in the same run.
//!
//! Every case is first run once and its verdict and counter checked, so a
//! figure is always the cost of the path it is named after. Then it runs
//! in rounds of many runs in one system call each, and the fastest
//! round's mean time per run, by the kernel's clock, is kept. Denial events
//! are read by a thread on another CPU while the program runs (polling
//! every 100 µs), so that a denied preflight pays for a real ring-buffer
//! record, not for a full buffer's refusal.

mod cases;
mod consumer;

use anyhow::{Context, Result, bail};
use aya::programs::{Xdp, XdpMode};
use cors_filter_common::{Counter, FilterConfig, Mode, OnIncomplete};
use cors_filter_tests::frames::bare_xdp::{self, BareAction};
use cors_filter_user::{
    config::TableSizes,
    kernel::filter::{Filter, Hook},
    kernel::policy::{Policy, PolicyMaps, PortPolicy},
    kernel::testrun::{test_run, xdp_program},
};

use self::cases::{Allowlist, Case};
use crate::{
    affinity::pin_to_cpu,
    report::{Part, Section, Target, ratio},
};

/// Rounds per case; the fastest is kept (what else runs on the machine
/// only ever adds time).
const ROUNDS: usize = 7;
/// The time one round aims at.
const ROUND_SECONDS: f64 = 0.04;

/// The program under test, with its policy maps.
struct Program {
    filter: Filter,
    policy: PolicyMaps,
}

impl Program {
    fn load() -> Result<Program> {
        // The attach mode does not matter: the program is never attached.
        let (mut filter, _logger) =
            Filter::load(Hook::Xdp(XdpMode::Skb), None, TableSizes::default())?;
        let policy = filter.take_policy_maps()?;
        Ok(Program { filter, policy })
    }

    fn install(&mut self, allowlist: &Allowlist) -> Result<()> {
        self.policy
            .install(&Policy {
                settings: FilterConfig::new(Mode::Enforce, OnIncomplete::Pass),
                ports: [(
                    cases::HTTP_PORT,
                    PortPolicy {
                        protect_unsafe: true,
                        client_header: None,
                    },
                )]
                .into(),
                allow: allowlist.entries.clone(),
            })
            .with_context(|| format!("cannot install the allowlist of {}", allowlist.name))?;
        Ok(())
    }

    /// Runs `case` once and checks its verdict and the counter it bumps
    /// (and, for a case timed after its first run, runs it again and
    /// checks that run's counter).
    fn check(&mut self, case: &Case) -> Result<()> {
        self.check_run(&case.name, &case.frame, case.verdict as u32, case.counter)?;
        if let Some(again) = case.again {
            self.check_run(&case.name, &case.frame, case.verdict as u32, again)?;
        }
        Ok(())
    }

    /// Runs `frame` once and checks the return value and the counter.
    fn check_run(&mut self, name: &str, frame: &[u8], retval: u32, counter: Counter) -> Result<()> {
        let before = self.filter.counters()?;
        let run = self.filter.test_run(frame, 1)?;
        let after = self.filter.counters()?;
        let moved = |c: Counter| after[c.index() as usize] - before[c.index() as usize];
        if run.retval != retval || moved(counter) != 1 {
            bail!(
                "case {name:?}: the program returned {} and counted {} in {}; expected {retval} and 1",
                run.retval,
                moved(counter),
                counter.name(),
            );
        }
        Ok(())
    }
}

/// Nanoseconds per run of `program` on `frame`, as the kernel measures it:
/// the fastest of [`ROUNDS`] rounds, each of enough runs to last about
/// [`ROUND_SECONDS`].
///
/// The kernel's figure, a whole number of nanoseconds, is the only usable
/// one: each call with more than one run also re-targets the kernel's XDP
/// dispatcher and waits for an RCU grace period, milliseconds that the wall
/// clock around the call would spread over the runs.
fn time_per_run(program: &Xdp, frame: &[u8]) -> Result<f64> {
    let round = |repeat: u32| -> Result<f64> {
        Ok(f64::from(test_run(program, frame, repeat)?.duration_ns))
    };
    let probe = round(10_000)?.max(1.0);
    let repeat = ((ROUND_SECONDS * 1e9 / probe) as u32).clamp(10_000, 10_000_000);
    let rounds = (0..ROUNDS)
        .map(|_| round(repeat))
        .collect::<Result<Vec<f64>>>()?;
    Ok(rounds.into_iter().fold(f64::INFINITY, f64::min))
}

/// Connections run for each sequence: each segment's figure is the mean of
/// this many single runs.
const SEQUENCE_RUNS: u16 = 20_000;

/// Nanoseconds per run of each frame of `sequence`, one run per call, each
/// run of the sequence on a connection of its own (a fresh source port):
/// a segment after the first needs the state the ones before it left, so it
/// cannot be repeated within one call. The kernel's figure for one run is
/// a whole number of nanoseconds; the mean of many is finer.
fn time_sequence(program: &Xdp, sequence: &cases::Sequence) -> Result<Vec<f64>> {
    let mut total = vec![0u64; sequence.segments.len()];
    for run in 0..SEQUENCE_RUNS {
        for (i, frame) in sequence.frames(10_000 + run).iter().enumerate() {
            total[i] += u64::from(test_run(program, frame, 1)?.duration_ns);
        }
    }
    Ok(total
        .into_iter()
        .map(|t| t as f64 / f64::from(SEQUENCE_RUNS))
        .collect())
}

/// The mean time of one run of `program` on `frame`, one run per call: the
/// floor of [`time_sequence`]'s figures.
fn time_single_runs(program: &Xdp, frame: &[u8]) -> Result<f64> {
    let mut total = 0u64;
    for _ in 0..SEQUENCE_RUNS {
        total += u64::from(test_run(program, frame, 1)?.duration_ns);
    }
    Ok(total as f64 / f64::from(SEQUENCE_RUNS))
}

pub fn run() -> Result<Part> {
    // The thread `main` starts for this part: nothing else inherits the pin.
    pin_to_cpu(0, "benchmark thread")?;
    let mut program = Program::load()?;
    let consumer = consumer::Consumer::start(program.filter.take_denials()?, 1)?;
    let filter_xdp = program.filter.xdp_program()?;
    // Loaded by hand (two instructions, no object): aya handles them by id.
    let bare = |action| -> Result<Xdp> {
        let loaded = bare_xdp::load(action)?;
        xdp_program(std::os::fd::AsFd::as_fd(&loaded), "bare")
    };
    let bare_pass = bare(BareAction::Pass)?;
    let bare_drop = bare(BareAction::Drop)?;

    let one = Allowlist::of_size(1)?;
    program.install(&one)?;
    let reference = cases::denied_preflight();
    let floor_pass = time_per_run(&bare_pass, &reference.frame)?;
    let floor_drop = time_per_run(&bare_drop, &reference.frame)?;

    let mut per_packet = Section::new(
        "In-kernel cost per packet (BPF_PROG_TEST_RUN)",
        &[
            "packet",
            "verdict",
            "ns / packet",
            "vs bare XDP_PASS",
            "vs bare XDP_DROP",
        ],
    );
    per_packet.note(
        "The program is loaded with a one-entry allowlist (`https://app.example.com`) and \
         port 8080 inspected, and runs on each frame in rounds of many runs per \
         `BPF_PROG_TEST_RUN` call; the figure is the kernel's mean time per run in the \
         fastest of 7 rounds (whole nanoseconds). Bare programs are \
         `r0 = XDP_PASS | XDP_DROP; exit`, loaded in the same run and timed the same way on \
         the same frame: their time is the test harness's own cost per run. Each case is \
         first run once and its verdict and counter checked.",
    );
    per_packet.row(vec![
        "bare XDP_PASS program".into(),
        "pass".into(),
        format!("{floor_pass:.1}"),
        ratio(1.0),
        ratio(floor_pass / floor_drop),
    ]);
    per_packet.row(vec![
        "bare XDP_DROP program".into(),
        "drop".into(),
        format!("{floor_drop:.1}"),
        ratio(floor_drop / floor_pass),
        ratio(1.0),
    ]);
    let mut timed = Vec::new();
    for case in cases::all() {
        program.check(&case)?;
        let ns = time_per_run(&filter_xdp, &case.frame)?;
        per_packet.row(vec![
            case.name.to_owned(),
            case.verdict.name().into(),
            format!("{ns:.1}"),
            ratio(ns / floor_pass),
            ratio(ns / floor_drop),
        ]);
        timed.push((case, ns));
    }

    let mut connections = Section::new(
        "Segments of one connection (BPF_PROG_TEST_RUN, one run per call)",
        &[
            "segment",
            "ns / packet",
            "vs bare XDP_PASS",
            "vs bare XDP_DROP",
        ],
    );
    connections.note(
        "Each segment of a connection finds the state the segments before it left, so it \
         cannot be repeated within one call: every connection (20,000 of each, each from \
         its own source port) is run segment by segment, one run per call, and a figure is \
         the mean of the kernel's times for that segment. The bare programs are timed the \
         same way, one run per call, on the denied browser preflight.",
    );
    let single_pass = time_single_runs(&bare_pass, &reference.frame)?;
    let single_drop = time_single_runs(&bare_drop, &reference.frame)?;
    for (name, ns) in [
        ("bare XDP_PASS program", single_pass),
        ("bare XDP_DROP program", single_drop),
    ] {
        connections.row(vec![
            name.into(),
            format!("{ns:.1}"),
            ratio(ns / single_pass),
            ratio(ns / single_drop),
        ]);
    }
    for sequence in cases::sequences() {
        // Checked on a connection of its own first, segment by segment.
        for ((frame, (segment, _)), counter) in sequence
            .frames(9_999)
            .iter()
            .zip(&sequence.segments)
            .zip(&sequence.counters)
        {
            let drop = matches!(counter, Counter::PreflightDeny);
            let verdict = if drop { 1 } else { 2 };
            program.check_run(segment, frame, verdict, *counter)?;
        }
        for ((segment, _), ns) in sequence
            .segments
            .iter()
            .zip(time_sequence(&filter_xdp, &sequence)?)
        {
            connections.row(vec![
                format!("{}: {segment}", sequence.name),
                format!("{ns:.1}"),
                ratio(ns / single_pass),
                ratio(ns / single_drop),
            ]);
        }
    }

    let mut sizes = Section::new(
        "Allowlist size (BPF_PROG_TEST_RUN, ns / packet)",
        &[
            "allowlist",
            "denied preflight",
            "allowed (exact entry)",
            "allowed (wildcard entry)",
        ],
    );
    sizes.note(
        "The same denied and allowed preflights with allowlists of 1, 1,000 and 100,000 \
         entries, 1% of them wildcard-subdomain entries (`https://*.tenantN.example.net`, \
         matched here by `https://eu.tenantN.example.net` in two lookups: the exact key, \
         then the prefix at the host's third dot, the one depth where the allowlist has \
         wildcards).",
    );
    let mut by_size = Vec::new();
    for size in [1, 1_000, 100_000] {
        let allowlist = Allowlist::of_size(size)?;
        program.install(&allowlist)?;
        let mut row = vec![allowlist.name.clone()];
        let mut figures = Vec::new();
        for case in allowlist.cases() {
            program.check(&case)?;
            let ns = time_per_run(&filter_xdp, &case.frame)?;
            row.push(format!("{ns:.1}"));
            figures.push(ns);
        }
        while row.len() < 4 {
            row.push("(no wildcard entry)".into());
        }
        sizes.row(row);
        by_size.push(figures);
    }
    let lost = program.filter.counters()?[Counter::EventsLost.index() as usize];
    let read = consumer.stop()?;
    per_packet.note(format!(
        "Denial events read by the consumer thread: {read}; lost to a full ring buffer: {lost}."
    ));

    let worst = |pick: &dyn Fn(&Case) -> bool| {
        timed
            .iter()
            .filter(|(c, _)| pick(c))
            .map(|(c, ns)| (c.name.clone(), *ns))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .context("no case of that kind")
    };
    let (denied_name, denied) = worst(&|c| c.counter == Counter::PreflightDeny)?;
    let (other_name, other) = worst(&|c| c.not_http)?;
    // 100,000 entries against 1, and for the wildcard column (the
    // one-entry list has no wildcard) against 1,000.
    let size_ratio = by_size[2]
        .iter()
        .zip(&by_size[0])
        .map(|(large, one)| large / one)
        .chain(by_size[2].get(2).zip(by_size[1].get(2)).map(|(l, s)| l / s))
        .fold(0.0, f64::max);
    let targets = vec![
        Target {
            what: format!("slowest denied preflight ({denied_name}) vs bare XDP_DROP"),
            bound: "<= 4x".into(),
            measured: ratio(denied / floor_drop),
            met: denied / floor_drop <= 4.0,
        },
        Target {
            what: format!("slowest non-HTTP packet ({other_name}) vs bare XDP_PASS"),
            bound: "<= 1.3x".into(),
            measured: ratio(other / floor_pass),
            met: other / floor_pass <= 1.3,
        },
        Target {
            what: "preflights with 100,000 allowlist entries vs 1 entry (wildcard: vs 1,000; worst case)"
                .into(),
            bound: "<= 1.2x".into(),
            measured: ratio(size_ratio),
            met: size_ratio <= 1.2,
        },
    ];
    Ok(Part {
        sections: vec![per_packet, connections, sizes],
        targets,
    })
}
