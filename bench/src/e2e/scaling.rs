//! Part 4: whether rejections per second scale with cores: cors-filter on
//! a veth pair with 2 receive queues, each drained by its own NAPI kthread
//! on a CPU of its own, against the same pair with 1 queue; and a bare
//! `XDP_DROP` measured the same way in the same run, the floor: how far the
//! veth pair and its kthreads scale with no filter at all.
//!
//! This machine has 2 CPUs and the sender needs one too, so the rate at
//! which a setup saturates cannot be read directly. Each setup's capacity
//! is derived from receive-path CPU time instead: rejections over the run
//! time of the busiest queue's kthread, what the setup would handle with
//! each queue on a CPU of its own and nothing else there.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use cors_filter_tests::{
    frames::bare_xdp::{BareAction, BareXdp},
    harness::netns::{CLIENT_IF, CLIENT_V4, NetnsPair, SERVER_IF, SERVER_V4},
};

use super::{
    cpu::{self, MachineCpu, NapiWatch},
    filter::Filter,
    link,
    nginx::PORT,
    sender::{self, Ends, Pace, Queueing},
};
use crate::{
    affinity,
    preflight::{self, DENIED_ORIGIN as EVIL, PATH},
    report::{Part, Section, Target, ratio},
};

/// Frames a second the sender aims at in both setups, and for how long:
/// the 1-queue setup keeps up with it (checked in every round).
const RATE: u64 = 300_000;
const SEND_SECONDS: u64 = 4;
/// Rounds of each setup, run alternately.
const ROUNDS: usize = 3;
/// The setups' queue counts (receive and transmit, both ends), for each
/// program.
const QUEUES: [u16; 2] = [1, 2];
/// The least share of the frames each queue must get with 2 queues: below
/// it the flows did not spread and the figures say nothing of scaling.
const MIN_SHARE: f64 = 0.25;
/// Time for the receive path to drain its rings after the last frame.
const SETTLE: Duration = Duration::from_millis(300);
/// The bound: 2 queues handle at least this many times the
/// rejections of 1.
const TARGET: f64 = 1.7;

/// What drops the preflights on the server end.
enum Dropper {
    CorsFilter(Box<Filter>),
    /// The floor: `r0 = XDP_DROP; exit`, detached when dropped.
    Bare {
        _attached: BareXdp,
    },
}

impl Dropper {
    /// Rejections so far: the filter's `preflight_deny`, or for the bare
    /// program every frame its queues ran through XDP (`frames`).
    fn rejections(&self, frames: &[u64]) -> Result<u64> {
        match self {
            Dropper::CorsFilter(filter) => filter.counter("preflight_deny"),
            Dropper::Bare { .. } => Ok(frames.iter().sum()),
        }
    }
}

/// One setup: a veth pair with `queues` queues, cors-filter or the bare
/// program on its server end, each queue's NAPI kthread pinned to the CPU
/// of its number. Fields drop in order: the pins are undone, the program
/// detached, then the namespaces deleted.
struct Setup {
    queues: u16,
    _pins: Pins,
    dropper: Dropper,
    /// The NAPI kthread of each receive queue, by queue number.
    napi: Vec<u32>,
    frames: Vec<Vec<u8>>,
    pair: NetnsPair,
}

/// NAPI kthreads pinned by [`Setup::new`]; allowed every CPU again on drop
/// (if they still exist: they go with the interface).
struct Pins {
    threads: Vec<u32>,
}

impl Drop for Pins {
    fn drop(&mut self) {
        let all: Vec<usize> = (0..cpus()).collect();
        for &tid in &self.threads {
            let _ = affinity::pin_thread(tid, &all, "NAPI kthread");
        }
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The NAPI id in a NAPI kthread's name (`napi/<ifname>-<id>`).
fn napi_id(tid: u32) -> Result<u64> {
    let path = format!("/proc/{tid}/comm");
    let comm = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    comm.trim()
        .rsplit_once('-')
        .and_then(|(_, id)| id.parse().ok())
        .with_context(|| format!("kthread {tid} is named {comm:?}, not napi/<ifname>-<id>"))
}

impl Setup {
    fn new(queues: u16, bare: bool) -> Result<Setup> {
        let pair = NetnsPair::create_with_queues(queues)?;
        let ends = Ends {
            src_mac: link::mac(&pair.client, CLIENT_IF)?,
            dst_mac: link::mac(&pair.server, SERVER_IF)?,
            src_ip: CLIENT_V4.parse()?,
            dst_ip: SERVER_V4.parse()?,
            dst_port: PORT,
        };
        let frames = sender::frames(
            &ends,
            &preflight::request(EVIL, &format!("{SERVER_V4}:{PORT}")),
        );
        let watch = NapiWatch::before(&pair.server, SERVER_IF);
        let dropper = if bare {
            Dropper::Bare {
                _attached: BareXdp::attach(BareAction::Drop, &pair.server_ns_path(), SERVER_IF)?,
            }
        } else {
            Dropper::CorsFilter(Box::new(Filter::start(&pair)?))
        };
        let mut napi = watch.threaded()?;
        if napi.len() != usize::from(queues) {
            bail!(
                "{queues} receive queues on {SERVER_IF} but {} NAPI kthreads appeared: {napi:?}",
                napi.len()
            );
        }
        // veth adds its queues' NAPI instances in queue order, and NAPI ids
        // are handed out in the order instances are added.
        let mut ids = Vec::new();
        for &tid in &napi {
            ids.push((napi_id(tid)?, tid));
        }
        ids.sort_unstable();
        napi = ids.into_iter().map(|(_, tid)| tid).collect();
        let mut pins = Pins {
            threads: Vec::new(),
        };
        for (queue, &tid) in napi.iter().enumerate() {
            let what = format!("NAPI kthread {tid} of queue {queue}");
            pins.threads.push(tid);
            affinity::pin_thread(tid, &[queue], &what)?;
            let allowed = affinity::allowed_cpus(tid)?;
            if allowed != [queue] {
                bail!("the {what} was pinned to CPU {queue} but may run on {allowed:?}");
            }
        }
        Ok(Setup {
            queues,
            _pins: pins,
            dropper,
            napi,
            frames,
            pair,
        })
    }

    fn name(&self) -> String {
        let program = match self.dropper {
            Dropper::CorsFilter(_) => "cors-filter",
            Dropper::Bare { .. } => "bare XDP_DROP",
        };
        match self.queues {
            1 => format!("{program}, 1 queue"),
            n => format!("{program}, {n} queues"),
        }
    }

    /// Frames each receive queue of the server end ran through XDP so far.
    fn queue_frames(&self) -> Result<Vec<u64>> {
        let stats = link::driver_stats(&self.pair.server, SERVER_IF)?;
        (0..self.queues)
            .map(|q| {
                let name = format!("rx_queue_{q}_xdp_packets");
                stats
                    .get(&name)
                    .copied()
                    .with_context(|| format!("ethtool -S {SERVER_IF} has no {name}"))
            })
            .collect()
    }

    fn queue_ns(&self) -> Result<Vec<u64>> {
        self.napi.iter().map(|&tid| cpu::process_ns(tid)).collect()
    }

    fn queue_runs(&self) -> Result<Vec<u64>> {
        self.napi
            .iter()
            .map(|&tid| cpu::process_runs(tid))
            .collect()
    }

    /// One measured round: the preflights sent at [`RATE`] for
    /// [`SEND_SECONDS`], what each queue got and what it cost.
    fn measure(&self, round: usize) -> Result<Round> {
        let name = self.name();
        let daemon = match &self.dropper {
            Dropper::CorsFilter(filter) => Some(filter.running.pid()?),
            Dropper::Bare { .. } => None,
        };
        let daemon_ns = || daemon.map_or(Ok(0), cpu::process_ns);
        let frames_before = self.queue_frames()?;
        let (deny_before, ns_before, runs_before, daemon_before, machine_before) = (
            self.dropper.rejections(&frames_before)?,
            self.queue_ns()?,
            self.queue_runs()?,
            daemon_ns()?,
            MachineCpu::now()?,
        );
        let sent = sender::send(
            &self.pair.client_ns_path(),
            CLIENT_IF,
            self.frames.clone(),
            Pace::for_seconds(RATE, SEND_SECONDS),
            Queueing::ByFlowHash,
        )?;
        std::thread::sleep(SETTLE);
        let queue_ns = since(&self.queue_ns()?, &ns_before);
        let queue_runs = since(&self.queue_runs()?, &runs_before);
        let daemon_ns = daemon_ns()?.saturating_sub(daemon_before);
        let machine_s = MachineCpu::now()?.busy_since(&machine_before);
        let frames_after = self.queue_frames()?;
        let queue_frames = since(&frames_after, &frames_before);
        let rejections = self
            .dropper
            .rejections(&frames_after)?
            .saturating_sub(deny_before);
        let run = Round {
            setup: name.clone(),
            round,
            sent: sent.frames,
            refused: sent.refused,
            rejections,
            queue_frames,
            queue_ns,
            queue_runs,
            daemon_s: daemon_ns as f64 / 1e9,
            machine_s,
        };
        eprintln!(
            "cors-filter-bench: {name}, round {round}: {} sent, {rejections} rejected, frames per queue {:?}, kthread s {}",
            sent.frames,
            run.queue_frames,
            run.queue_seconds()
        );
        if rejections * 100 < sent.frames * 99 {
            bail!(
                "{name}, round {round}: {} frames sent ({} refused), {rejections} rejected: the setup does not keep up, lower RATE",
                sent.frames,
                sent.refused
            );
        }
        if run.queue_ns.contains(&0) || rejections == 0 {
            bail!(
                "{name}, round {round}: NAPI kthreads ran {:?} ns for {rejections} rejections: the receive path is not where it was assumed",
                run.queue_ns
            );
        }
        let total: u64 = run.queue_frames.iter().sum();
        for (queue, share) in run.shares().iter().enumerate() {
            if *share < MIN_SHARE {
                bail!(
                    "{name}, round {round}: queue {queue} got {:.1}% of {total} frames ({:?}), under {:.0}%: the flows did not spread over the queues",
                    share * 100.0,
                    run.queue_frames,
                    MIN_SHARE * 100.0
                );
            }
        }
        Ok(run)
    }
}

/// Per queue, what a count moved by from `before` to `after` (never below
/// 0: a thread that ended meanwhile takes its count with it).
fn since(after: &[u64], before: &[u64]) -> Vec<u64> {
    after
        .iter()
        .zip(before)
        .map(|(after, before)| after.saturating_sub(*before))
        .collect()
}

/// What one round of one setup measured.
struct Round {
    setup: String,
    round: usize,
    sent: u64,
    refused: u64,
    rejections: u64,
    queue_frames: Vec<u64>,
    /// Run time of each queue's NAPI kthread, ns.
    queue_ns: Vec<u64>,
    /// Times each queue's kthread was switched onto its CPU.
    queue_runs: Vec<u64>,
    daemon_s: f64,
    machine_s: f64,
}

impl Round {
    fn shares(&self) -> Vec<f64> {
        let total: u64 = self.queue_frames.iter().sum();
        self.queue_frames
            .iter()
            .map(|&f| f as f64 / total.max(1) as f64)
            .collect()
    }

    fn queue_seconds(&self) -> String {
        self.queue_ns
            .iter()
            .map(|&ns| format!("{:.3}", ns as f64 / 1e9))
            .collect::<Vec<_>>()
            .join(" / ")
    }

    fn busiest_s(&self) -> f64 {
        self.queue_ns.iter().copied().max().unwrap_or(0) as f64 / 1e9
    }

    /// Rejections a second with each queue's kthread on a CPU of its own:
    /// the busiest one is saturated first.
    fn capacity(&self) -> f64 {
        self.rejections as f64 / self.busiest_s()
    }

    fn row(&self) -> Vec<String> {
        let per_queue_us = self
            .queue_ns
            .iter()
            .zip(&self.queue_frames)
            .map(|(&ns, &frames)| format!("{:.3}", ns as f64 / 1e3 / frames.max(1) as f64))
            .collect::<Vec<_>>()
            .join(" / ");
        let per_run = self
            .queue_frames
            .iter()
            .zip(&self.queue_runs)
            .map(|(&frames, &runs)| format!("{:.1}", frames as f64 / runs.max(1) as f64))
            .collect::<Vec<_>>()
            .join(" / ");
        let shares = self
            .shares()
            .iter()
            .map(|s| format!("{:.1}%", s * 100.0))
            .collect::<Vec<_>>()
            .join(" / ");
        vec![
            self.setup.clone(),
            self.round.to_string(),
            format!("{} ({} refused)", self.sent, self.refused),
            self.rejections.to_string(),
            shares,
            self.queue_seconds(),
            per_queue_us,
            per_run,
            format!(
                "{:.3}",
                self.busiest_s() * 1e6 / self.rejections.max(1) as f64
            ),
            format!("{:.0}", self.capacity()),
            format!("{:.3}", self.daemon_s),
            format!(
                "{:.3}",
                self.machine_s * 1e6 / self.rejections.max(1) as f64
            ),
        ]
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

pub fn run() -> Result<Part> {
    if cpus() < usize::from(QUEUES[1]) {
        bail!(
            "the scaling part pins {} NAPI kthreads to CPUs of their own: this machine has {}",
            QUEUES[1],
            cpus()
        );
    }
    let busy = cpu::busy_before()?;
    // cors-filter with 1 and 2 queues, then the bare program likewise.
    let setups: Vec<Setup> = [false, true]
        .iter()
        .flat_map(|&bare| QUEUES.iter().map(move |&q| Setup::new(q, bare)))
        .collect::<Result<_>>()?;
    // rounds[s][r]: round r of setup s, the setups taking turns.
    let mut rounds: Vec<Vec<Round>> = setups.iter().map(|_| Vec::new()).collect();
    for round in 1..=ROUNDS {
        for (setup, runs) in setups.iter().zip(&mut rounds) {
            runs.push(setup.measure(round)?);
        }
    }
    drop(setups);

    // 2 queues / 1 queue, per round: cors-filter's (rounds 0 and 1) and
    // the bare program's (rounds 2 and 3).
    let ratios = |one: &[Round], two: &[Round]| -> Vec<f64> {
        one.iter()
            .zip(two)
            .map(|(one, two)| two.capacity() / one.capacity())
            .collect()
    };
    let filter_ratios = ratios(&rounds[0], &rounds[1]);
    let bare_ratios = ratios(&rounds[2], &rounds[3]);
    let ratio_value = median(filter_ratios.clone());
    let bare_value = median(bare_ratios.clone());
    let medians: Vec<f64> = rounds
        .iter()
        .map(|runs| median(runs.iter().map(Round::capacity).collect()))
        .collect();

    let mut section = Section::new(
        "Rejections per second, 2 receive queues against 1 (veth, threaded NAPI)",
        &[
            "setup",
            "round",
            "frames sent",
            "rejections",
            "frames share per queue",
            "kthread CPU s per queue",
            "µs per rejection per queue",
            "frames per kthread run per queue",
            "µs per rejection, busiest queue",
            "capacity rejections/s",
            "daemon CPU s",
            "machine CPU per rejection µs",
        ],
    );
    section.note(format!(
        "Four setups in one run, each a veth pair between two namespaces with cors-filter \
         (XDP native, enforce, drop) or a bare XDP_DROP program (the floor; its rejections \
         are the frames its queues ran through XDP) on the server end, switched to threaded \
         NAPI: (a) 1 \
         receive and transmit queue, (b) 2 (`numtxqueues 2 numrxqueues 2`, both ends). Each \
         receive queue has its own `napi/veth-s-<id>` kthread (queue order = NAPI id order); \
         queue i's kthread is pinned to CPU i, so with 2 queues they run in parallel. The \
         sender (AF_PACKET, pinned to CPU {}) sends the same denied preflight ({PATH}, Origin \
         {EVIL}, one SYN segment each) from {} source ports at {RATE} frames/s for \
         {SEND_SECONDS} s, through the client's `noqueue` qdisc layer so that the kernel \
         picks each frame's transmit queue from its flow hash (with `PACKET_QDISC_BYPASS` it \
         would pick it from the sending CPU: all on one queue); veth hands each frame to the \
         server's receive queue of the same number. The setups run alternately, {ROUNDS} \
         rounds each. Queue 0's kthread (the only one with 1 queue) shares CPU {} with the \
         sender; queue 1's frames are written on the other CPU. The µs per rejection and \
         the frames per kthread run, per queue, show what each queue's placement cost.",
        super::nginx::CLIENT_CPU,
        sender::FLOWS,
        super::nginx::CLIENT_CPU,
    ));
    section.note(format!(
        "This machine has {} CPUs and the sender needs CPU too, so a saturation rate cannot be \
         read directly: capacity = rejections (the filter's `preflight_deny` counter) / run \
         time of the busiest queue's kthread (schedstat), the rejections a second the setup \
         would handle with each queue's kthread saturating a CPU of its own, if a frame cost \
         at saturation what it costs at this rate (at saturation each poll would find more \
         frames, and cost less per frame). Frames share per \
         queue: `ethtool -S` `rx_queue_<i>_xdp_packets` of the server end (a round fails if a \
         queue gets under {:.0}%); µs per rejection per queue: that kthread's run time over \
         its queue's frames; frames per kthread run: its queue's frames over the times the \
         kthread was switched onto its CPU (schedstat), about the frames each NAPI poll \
         found (fewer a poll cost more each: the wake-up and poll are shared by fewer). \
         Every round checks that the setup kept up (rejections >= 99% of \
         the frames sent). Daemon CPU: the `cors-filter run` process (it reads a denial event \
         per rejection; not part of the capacity). Machine CPU per rejection: busy time of \
         the whole machine (/proc/stat, sender and daemon included) over the rejections.",
        cpus(),
        MIN_SHARE * 100.0
    ));
    for r in 0..ROUNDS {
        for runs in &rounds {
            section.row(runs[r].row());
        }
    }
    let list = |values: &[f64]| {
        values
            .iter()
            .map(|r| ratio(*r))
            .collect::<Vec<_>>()
            .join(", ")
    };
    section.note(format!(
        "2 queues / 1 queue, capacity per round: cors-filter {}, median {} (ratio of the \
         median capacities, {:.0} and {:.0} rejections/s: {}); bare XDP_DROP {}, median {} \
         ({:.0} and {:.0} frames/s: {}). The bare program's ratio is what the veth pair, its \
         kthreads and this machine allow with no filter: cors-filter scales {} as well as it.",
        list(&filter_ratios),
        ratio(ratio_value),
        medians[0],
        medians[1],
        ratio(medians[1] / medians[0]),
        list(&bare_ratios),
        ratio(bare_value),
        medians[2],
        medians[3],
        ratio(medians[3] / medians[2]),
        ratio(ratio_value / bare_value),
    ));
    section.note(cpu::busy_note(busy));
    if busy > 0.05 {
        eprintln!("cors-filter-bench: {}", cpu::busy_note(busy));
    }
    Ok(Part {
        sections: vec![section],
        targets: vec![Target {
            what: format!(
                "rejections per second, 2 queues vs 1 queue (receive CPU of the busiest queue; \
                 bare XDP_DROP, the floor: {})",
                ratio(bare_value)
            ),
            bound: format!(">= {TARGET}x"),
            measured: ratio(ratio_value),
            met: ratio_value >= TARGET,
        }],
    })
}
