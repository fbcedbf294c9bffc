//! `--compare`: other builds' eBPF objects timed beside this build's
//! program in one run, with this benchmark's cases and floor, rounds
//! interleaved. The before/after rows of `BENCHMARKS.md`'s history come
//! from here: same machine, same run, same benchmark code.

use std::path::PathBuf;

use anyhow::{Context, Result};
use aya::programs::Xdp;
use cors_filter_common::Counter;
use cors_filter_tests::frames::bare_xdp::BareAction;

use super::{
    Program, Timing, bare_program,
    cases::{self, Allowlist, XdpVerdict},
    consumer::Consumer,
    time_per_run, time_sequence, time_single_runs,
};
use crate::{
    affinity::pin_to_cpu,
    report::{Part, Section, ratio},
};

/// Rounds: in each, every program is timed on every case in turn; a
/// program's figure is its fastest round.
const ROUNDS: usize = 3;

/// One build of the program under comparison.
struct Build {
    name: String,
    program: Program,
    xdp: Xdp,
    consumer: Consumer,
}

/// `builds` are `NAME=PATH` pairs, in the order the table shows them;
/// this build's program comes last, named `this build`.
pub fn run(builds: &[String]) -> Result<Part> {
    pin_to_cpu(0, "benchmark thread")?;
    let mut loaded = Vec::new();
    for spec in builds {
        let (name, path) = spec
            .split_once('=')
            .with_context(|| format!("--compare {spec:?}: expected NAME=PATH"))?;
        let path = PathBuf::from(path);
        let object =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let program = Program::load(Some(&object))
            .with_context(|| format!("cannot load {} ({name})", path.display()))?;
        loaded.push((name.to_owned(), program));
    }
    loaded.push(("this build".to_owned(), Program::load(None)?));
    let one = Allowlist::of_size(1)?;
    let mut builds: Vec<Build> = Vec::new();
    for (name, mut program) in loaded {
        program.install(&one)?;
        let consumer = Consumer::start(program.filter.take_denials()?, 1)?;
        let xdp = program.filter.xdp_program()?;
        builds.push(Build {
            name,
            program,
            xdp,
            consumer,
        });
    }
    let (bare_pass, bare_drop) = (
        bare_program(BareAction::Pass)?,
        bare_program(BareAction::Drop)?,
    );
    let reference = cases::denied_preflight();

    let all = cases::all();
    for build in &mut builds {
        for case in &all {
            build
                .program
                .check(case)
                .with_context(|| format!("build {:?}", build.name))?;
        }
    }
    let sequences = cases::sequences();
    for build in &mut builds {
        for sequence in &sequences {
            build
                .program
                .check_sequence(sequence)
                .with_context(|| format!("build {:?}", build.name))?;
        }
    }
    // [case][build], fastest round kept; the floors likewise.
    let mut per_case = vec![vec![f64::INFINITY; builds.len()]; all.len()];
    let mut per_segment: Vec<Vec<f64>> = Vec::new();
    let (mut floor_pass, mut floor_drop) = (f64::INFINITY, f64::INFINITY);
    let (mut single_pass, mut single_drop) = (f64::INFINITY, f64::INFINITY);
    let fastest = |kept: &mut f64, t: Timing| *kept = kept.min(t.ns);
    // The slowest round of each build on each row too, for the spread.
    let mut slowest_case = vec![vec![0f64; builds.len()]; all.len()];
    let mut slowest_segment: Vec<Vec<f64>> = Vec::new();
    for round in 0..ROUNDS {
        fastest(&mut floor_pass, time_per_run(&bare_pass, &reference.frame)?);
        fastest(&mut floor_drop, time_per_run(&bare_drop, &reference.frame)?);
        single_pass = single_pass.min(time_single_runs(&bare_pass, &reference.frame)?);
        single_drop = single_drop.min(time_single_runs(&bare_drop, &reference.frame)?);
        // Each round starts with another build, so that no build is
        // always timed first (or last) after the one before it.
        let order: Vec<usize> = (0..builds.len())
            .map(|k| (k + round) % builds.len())
            .collect();
        for (i, case) in all.iter().enumerate() {
            for &b in &order {
                let ns = time_per_run(&builds[b].xdp, &case.frame)?.ns;
                per_case[i][b] = per_case[i][b].min(ns);
                slowest_case[i][b] = slowest_case[i][b].max(ns);
            }
        }
        let mut row = 0;
        for sequence in &sequences {
            for &b in &order {
                for (s, ns) in time_sequence(&builds[b].xdp, sequence)?
                    .into_iter()
                    .enumerate()
                {
                    if per_segment.len() <= row + s {
                        per_segment.push(vec![f64::INFINITY; builds.len()]);
                        slowest_segment.push(vec![0.0; builds.len()]);
                    }
                    per_segment[row + s][b] = per_segment[row + s][b].min(ns);
                    slowest_segment[row + s][b] = slowest_segment[row + s][b].max(ns);
                }
            }
            row += sequence.segments.len();
        }
    }
    let one_run_overhead = ((single_pass - floor_pass) + (single_drop - floor_drop)) / 2.0;

    let mut header = vec!["packet".to_owned()];
    header.extend(builds.iter().map(|b| format!("{} (ns)", b.name)));
    header.push(format!(
        "{} / {}",
        builds[builds.len() - 1].name,
        builds[0].name
    ));
    header.push(format!("{} vs its floor", builds[builds.len() - 1].name));
    header.push("rounds' spread, slowest over fastest, per build".to_owned());
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut section = Section::new("Builds compared (BPF_PROG_TEST_RUN)", &header);
    section.note(format!(
        "Each build's program is loaded with the same one-entry allowlist and timed on the \
         same frames as the per-packet table, the builds one after the other for each \
         case, each round starting with the next build, in {ROUNDS} rounds; a figure is the \
         build's fastest round, and the last column says how far its slowest round was \
         from it. Floor in this run: bare XDP_PASS {floor_pass:.1} ns, bare XDP_DROP \
         {floor_drop:.1} ns; the column before is the last build's figure over the floor \
         of its verdict (XDP_DROP for a dropped packet). Segments of a connection are timed \
         one run per call, less {one_run_overhead:.1} ns of one-run overhead (see the \
         connections table): their rows move by tens of nanoseconds between rounds."
    ));
    let mut verifier = vec!["verifier instructions, XDP / TC".to_owned()];
    for build in &builds {
        let [xdp, tc] = build.program.verified;
        let show = |n: Option<u32>| n.map_or("?".to_owned(), |n| n.to_string());
        verifier.push(format!("{} / {}", show(xdp), show(tc)));
    }
    verifier.extend([String::new(), String::new(), String::new()]);
    section.row(verifier);
    let last = builds.len() - 1;
    let mut push = |name: &str, figures: &[f64], slowest: &[f64], floor: f64| {
        let mut row = vec![name.to_owned()];
        row.extend(figures.iter().map(|ns| format!("{ns:.1}")));
        row.push(format!("{:.2}", figures[last] / figures[0]));
        row.push(ratio(figures[last] / floor));
        row.push(
            slowest
                .iter()
                .zip(figures)
                .map(|(slow, fast)| format!("{:.2}", slow / fast))
                .collect::<Vec<_>>()
                .join(" / "),
        );
        section.row(row);
    };
    for (i, (case, figures)) in all.iter().zip(&per_case).enumerate() {
        let floor = if case.verdict == XdpVerdict::Drop {
            floor_drop
        } else {
            floor_pass
        };
        push(&case.name, figures, &slowest_case[i], floor);
    }
    let mut row = 0;
    for sequence in &sequences {
        for ((segment, _), counter) in sequence.segments.iter().zip(&sequence.counters) {
            let figures: Vec<f64> = per_segment[row]
                .iter()
                .map(|ns| ns - one_run_overhead)
                .collect();
            let slowest: Vec<f64> = slowest_segment[row]
                .iter()
                .map(|ns| ns - one_run_overhead)
                .collect();
            let floor = if *counter == Counter::PreflightDeny {
                floor_drop
            } else {
                floor_pass
            };
            push(
                &format!("{}: {segment}", sequence.name),
                &figures,
                &slowest,
                floor,
            );
            row += 1;
        }
    }
    let mut lost = Vec::new();
    for build in builds {
        let count = build.program.filter.counters()?[Counter::EventsLost.index() as usize];
        let read = build.consumer.stop()?;
        lost.push(format!("{}: {read} read, {count} lost", build.name));
    }
    section.note(format!(
        "Denial events, read by a consumer thread per build: {}.",
        lost.join("; ")
    ));
    Ok(Part {
        sections: vec![section],
        targets: Vec::new(),
    })
}
