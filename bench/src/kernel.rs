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

use std::os::fd::{AsFd as _, OwnedFd};

use anyhow::{Context, Result, bail};
use aya::programs::XdpMode;
use cors_filter_common::{Counter, FilterConfig, Mode, OnIncomplete};
use cors_filter_tests::bare_xdp::{self, BareAction};
use cors_filter_user::{
    config::TableSizes,
    filter::{Filter, Hook},
    policy::{Policy, PolicyMaps, PortPolicy},
    testrun::test_run,
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
                    },
                )]
                .into(),
                allow: allowlist.entries.clone(),
            })
            .with_context(|| format!("cannot install the allowlist of {}", allowlist.name))?;
        Ok(())
    }

    /// Runs `case` once and checks its verdict and the counter it bumps.
    fn check(&mut self, case: &Case) -> Result<()> {
        let before = self.filter.counters()?;
        let run = self.filter.test_run(&case.frame, 1)?;
        let after = self.filter.counters()?;
        let moved = |c: Counter| after[c.index() as usize] - before[c.index() as usize];
        if run.retval != case.verdict as u32 || moved(case.counter) != 1 {
            bail!(
                "case {:?}: the program returned {} and counted {} in {}; expected {} and 1",
                case.name,
                run.retval,
                moved(case.counter),
                case.counter.name(),
                case.verdict as u32
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
fn time_per_run(program: &OwnedFd, frame: &[u8]) -> Result<f64> {
    let round = |repeat: u32| -> Result<f64> {
        Ok(f64::from(
            test_run(program.as_fd(), frame, repeat)?.duration_ns,
        ))
    };
    let probe = round(10_000)?.max(1.0);
    let repeat = ((ROUND_SECONDS * 1e9 / probe) as u32).clamp(10_000, 10_000_000);
    let rounds = (0..ROUNDS)
        .map(|_| round(repeat))
        .collect::<Result<Vec<f64>>>()?;
    Ok(rounds.into_iter().fold(f64::INFINITY, f64::min))
}

pub fn run() -> Result<Part> {
    // The thread `main` starts for this part: nothing else inherits the pin.
    pin_to_cpu(0, "benchmark thread")?;
    let mut program = Program::load()?;
    let consumer = consumer::Consumer::start(program.filter.take_denials()?, 1)?;
    let fd = program.filter.xdp_program_fd()?;
    let bare_pass = bare_xdp::load(BareAction::Pass)?;
    let bare_drop = bare_xdp::load(BareAction::Drop)?;

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
        let ns = time_per_run(&fd, &case.frame)?;
        per_packet.row(vec![
            case.name.to_owned(),
            case.verdict.name().into(),
            format!("{ns:.1}"),
            ratio(ns / floor_pass),
            ratio(ns / floor_drop),
        ]);
        timed.push((case, ns));
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
            let ns = time_per_run(&fd, &case.frame)?;
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
        sections: vec![per_packet, sizes],
        targets,
    })
}
