//! `cors-filter replay`: the real program, loaded into the kernel but
//! attached nowhere, run on every frame of a capture with
//! `BPF_PROG_TEST_RUN`. One JSON object per frame on stdout:
//! `{"index":N,"verdict":"pass"|"drop"|"reset","reason":COUNTER}`, and
//! for a frame the program wrote a denial event for,
//! `"event":{"client":ADDR|null,"forwarded":ADDR|null,"reason":R,"source":ADDR}`
//! after them, its keys in that order (`client`: the one the connection's
//! PROXY header named; `forwarded`: the one the port's trusted client
//! header named).
//! `reset` is a frame the program rewrote into a TCP reset and returned
//! `XDP_TX` for (`action = "reset"`); `--replies FILE` keeps those frames.
//!
//! The reason is read off the program's own counters: the one counter a
//! frame's outcome bumps (see `Outcome::counters`), found by comparing the
//! counters before and after each run. Nothing else runs the program, so
//! every change is this frame's.

pub mod capture;
pub mod replies;

use std::{
    io::{BufWriter, Write as _},
    path::Path,
};

use anyhow::{Context, Result, bail};
use aya::programs::XdpMode;
use cors_filter_common::Counter;

use crate::{
    config::Config,
    denials::decode,
    kernel::filter::{Filter, Hook},
};
use replies::ReplyCapture;

/// `xdp_action` values the program returns.
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

pub fn replay(config_path: &Path, capture_path: &Path, replies_path: Option<&Path>) -> Result<()> {
    let config = Config::load(config_path)?;
    let mut replies = replies_path.map(ReplyCapture::create).transpose()?;
    // The attach mode is irrelevant: the program is never attached. The
    // connections' state lives in its maps, which one load keeps for the
    // whole capture: frames run in order, as on an interface.
    let (mut filter, _logger) = Filter::load(Hook::Xdp(XdpMode::Skb), None, config.tables)?;
    let mut denials = filter.take_denials()?;
    filter
        .take_policy_maps()?
        .install(&config.policy(None, None))?;
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut before = filter.counters()?;
    capture::for_each_frame(capture_path, |index, frame| {
        let run = filter
            .test_run(frame, 1)
            .with_context(|| format!("frame {index} of {}", capture_path.display()))?;
        let after = filter.counters()?;
        let reason = reason(&before, &after)
            .with_context(|| format!("frame {index} of {}", capture_path.display()))?;
        let moved = |c: Counter| after[c.index() as usize] != before[c.index() as usize];
        let (dropped, reset) = (moved(Counter::Dropped), moved(Counter::ResetSent));
        let verdict = match (run.retval, dropped, reset) {
            (XDP_PASS, false, false) => "pass",
            (XDP_DROP, true, false) => "drop",
            (XDP_TX, true, true) => {
                if let Some(replies) = &mut replies {
                    replies.push(&run.frame_out)?;
                }
                "reset"
            }
            (retval, dropped, reset) => bail!(
                "frame {index}: the program returned {retval} but {} the drop counter and {} the reset counter",
                if dropped { "bumped" } else { "did not bump" },
                if reset { "bumped" } else { "did not bump" }
            ),
        };
        before = after;
        // Written by hand to keep the documented key order; no value needs
        // escaping (counter names are plain identifiers), but the event's,
        // which serde_json writes.
        write!(
            out,
            r#"{{"index":{index},"verdict":"{verdict}","reason":"{}""#,
            reason.name()
        )
        .context("cannot write to standard output")?;
        if let Some(record) = denials.next() {
            let event = match decode(&record) {
                Ok(denial) => serde_json::json!({
                    "reason": denial.reason.to_string(),
                    "source": denial.source.to_string(),
                    "client": denial.client.map(|c| c.to_string()),
                    "forwarded": denial
                        .forwarded
                        .and_then(|f| f.client)
                        .map(|c| c.to_string()),
                }),
                Err(e) => serde_json::json!({ "error": e.to_string() }),
            };
            write!(out, r#","event":{event}"#).context("cannot write to standard output")?;
        }
        writeln!(out, "}}").context("cannot write to standard output")
    })?;
    out.flush().context("cannot write to standard output")?;
    replies.map_or(Ok(()), ReplyCapture::finish)
}

/// The counter that names why one run got its verdict, from the counters
/// before and after it: the outcome's `Outcome::replay_reason`, that is
/// the detail counter where the outcome bumped one (`malformed`,
/// `method_deny`, `cross_site`: they go with `preflight_deny` or
/// `unsafe_deny`), otherwise the one outcome counter that moved (not
/// `dropped` and the reset counters, which say what was done).
fn reason(
    before: &[u64; Counter::COUNT as usize],
    after: &[u64; Counter::COUNT as usize],
) -> Result<Counter> {
    let moved = |c: Counter| after[c.index() as usize] != before[c.index() as usize];
    if !moved(Counter::Packets) {
        bail!("the program ran but did not count the packet");
    }
    if let Some(detail) = Counter::DETAILS.into_iter().find(|&c| moved(c)) {
        return Ok(detail);
    }
    // Only outcome counters: `dropped` and the reset counters say what was
    // done, `events_lost` counts denials once the ring buffer (which nothing
    // reads here) is full, `conns_learned` counts connections.
    let mut outcome = Counter::OUTCOMES.into_iter().filter(|&c| moved(c));
    match (outcome.next(), outcome.next()) {
        (Some(counter), None) => Ok(counter),
        (None, _) => bail!("the program counted no outcome for the packet"),
        (Some(a), Some(b)) => bail!(
            "the program counted two outcomes for one packet: {} and {}",
            a.name(),
            b.name()
        ),
    }
}

#[cfg(test)]
mod tests {
    use cors_filter_common::{Outcome, counters::Source};

    use super::*;

    fn bumped(counters: &[Counter]) -> [u64; Counter::COUNT as usize] {
        let mut values = [0; Counter::COUNT as usize];
        for c in counters {
            values[c.index() as usize] += 1;
        }
        values
    }

    #[test]
    fn reason_is_the_outcome_counter() {
        let zero = bumped(&[]);
        let r = |c: &[Counter]| reason(&zero, &bumped(c));
        assert_eq!(
            r(&[Counter::Packets, Counter::PassNotHttp]).unwrap(),
            Counter::PassNotHttp
        );
        assert_eq!(
            r(&[
                Counter::Packets,
                Counter::Requests,
                Counter::PreflightDeny,
                Counter::Malformed,
                Counter::Dropped
            ])
            .unwrap(),
            Counter::Malformed
        );
        assert_eq!(
            r(&[
                Counter::Packets,
                Counter::Requests,
                Counter::PreflightDeny,
                Counter::Dropped
            ])
            .unwrap(),
            Counter::PreflightDeny
        );
        assert_eq!(
            r(&[
                Counter::Packets,
                Counter::UnsafeDeny,
                Counter::MethodDeny,
                Counter::Dropped
            ])
            .unwrap(),
            Counter::MethodDeny
        );
        assert_eq!(
            r(&[Counter::Packets, Counter::UnsafeDeny, Counter::CrossSite]).unwrap(),
            Counter::CrossSite
        );
        assert_eq!(
            r(&[Counter::Packets, Counter::Requests, Counter::NoOrigin]).unwrap(),
            Counter::NoOrigin
        );
        for reset in [Counter::ResetSent, Counter::ResetFailed] {
            assert_eq!(
                r(&[
                    Counter::Packets,
                    Counter::Requests,
                    Counter::PreflightDeny,
                    Counter::Dropped,
                    reset
                ])
                .unwrap(),
                Counter::PreflightDeny
            );
        }
        assert!(r(&[Counter::PassNotHttp]).is_err());
        assert!(r(&[Counter::Packets]).is_err());
        assert!(r(&[Counter::Packets, Counter::PassNotIp, Counter::PassNotTcp]).is_err());
    }

    /// Every outcome is named, by its `replay_reason`, whatever else the
    /// program bumped with it (its own counters: `dropped`, a reset,
    /// `events_lost`, `conns_learned`, ...).
    #[test]
    fn every_outcome_is_named() {
        let zero = bumped(&[]);
        let own: Vec<Counter> = Counter::ALL
            .into_iter()
            .filter(|c| c.source() == Source::Program)
            .collect();
        for outcome in Outcome::ALL {
            let (counter, detail) = outcome.counters();
            let mut run: Vec<Counter> = [Counter::Packets, counter]
                .into_iter()
                .chain(detail)
                .collect();
            if outcome.is_request() {
                run.push(Counter::Requests);
            }
            assert_eq!(
                reason(&zero, &bumped(&run)).unwrap(),
                outcome.replay_reason(),
                "{outcome:?}"
            );
            run.extend(&own);
            assert_eq!(
                reason(&zero, &bumped(&run)).unwrap(),
                outcome.replay_reason(),
                "{outcome:?}"
            );
        }
    }
}
