//! wrk, run in the client namespace, and what its `--latency` output says.

use std::{path::Path, process::Command, time::Duration};

use anyhow::{Context, Result, bail};
use cors_filter_tests::harness::process::run_bounded;

use super::nginx::CLIENT_CPU;

const WRK: &str = "/usr/bin/wrk";

/// The figures of one wrk run.
#[derive(Clone, Debug, PartialEq)]
pub struct Wrk {
    /// Responses completed (`N requests in ...`).
    pub requests: u64,
    pub seconds: f64,
    pub per_second: f64,
    /// The 99th percentile latency, in microseconds.
    pub p99_us: f64,
    /// `Non-2xx or 3xx responses`, 0 when the line is absent.
    pub non_2xx: u64,
    /// The `Socket errors` line, if any.
    pub socket_errors: Option<String>,
}

/// Runs `wrk -t1` pinned to [`CLIENT_CPU`], `wrk -t1 -cCONNECTIONS -dSECONDS --latency [-s SCRIPT] URL` in the
/// network namespace `ns`; wrk is given 30 s more than its run to finish.
pub fn run(
    ns: &str,
    connections: u32,
    seconds: u32,
    script: Option<&Path>,
    url: &str,
) -> Result<Wrk> {
    let mut command = Command::new("ip");
    command.args([
        "netns",
        "exec",
        ns,
        "taskset",
        "-c",
        &CLIENT_CPU.to_string(),
        WRK,
        "-t1",
    ]);
    command.arg(format!("-c{connections}"));
    command.arg(format!("-d{seconds}s"));
    command.arg("--latency");
    if let Some(script) = script {
        command.arg("-s").arg(script);
    }
    command.arg(url);
    let shown = format!("{command:?}");
    let out = run_bounded(&mut command, Duration::from_secs(u64::from(seconds) + 30))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse(&text).with_context(|| format!("cannot read the output of {shown}:\n{text}"))
}

/// A wrk duration (`711.00us`, `1.20ms`, `2.00s`, `1.00m`) in microseconds.
fn duration_us(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let scale = match unit {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return None,
    };
    Some(value * scale)
}

pub fn parse(text: &str) -> Result<Wrk> {
    let mut requests = None;
    let mut per_second = None;
    let mut p99_us = None;
    let mut non_2xx = 0;
    let mut socket_errors = None;
    for line in text.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[..] {
            ["99%", value] => {
                p99_us = Some(duration_us(value).with_context(|| format!("bad line {line:?}"))?)
            }
            [count, "requests", "in", time, ..] => {
                let count = count.parse::<u64>().ok();
                let time = duration_us(time.trim_end_matches(','));
                match (count, time) {
                    (Some(c), Some(t)) => requests = Some((c, t / 1e6)),
                    _ => bail!("bad line {line:?}"),
                }
            }
            ["Requests/sec:", value] => {
                per_second = Some(
                    value
                        .parse::<f64>()
                        .with_context(|| format!("bad line {line:?}"))?,
                )
            }
            ["Non-2xx", "or", "3xx", "responses:", value] => {
                non_2xx = value
                    .parse()
                    .with_context(|| format!("bad line {line:?}"))?
            }
            ["Socket", "errors:", ..] => socket_errors = Some(line.to_owned()),
            _ => {}
        }
    }
    let (requests, seconds) = requests.context("no `N requests in T` line")?;
    Ok(Wrk {
        requests,
        seconds,
        per_second: per_second.context("no `Requests/sec:` line")?,
        p99_us: p99_us.context("no `99%` line: was wrk run with --latency?")?,
        non_2xx,
        socket_errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "Running 5s test @ http://198.18.0.2:8080/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   301.66us  116.94us   4.23ms   90.57%
    Req/Sec   107.63k     3.12k  112.07k    72.00%
  Latency Distribution
     50%  282.00us
     75%  330.00us
     90%  401.00us
     99%    1.71ms
  535553 requests in 5.00s, 41.88MB read
  Non-2xx or 3xx responses: 12
  Socket errors: connect 0, read 3, write 0, timeout 0
Requests/sec: 107117.93
Transfer/sec:      8.38MB
";

    #[test]
    fn reads_the_figures() {
        let wrk = parse(OUTPUT).unwrap();
        assert_eq!(wrk.requests, 535553);
        assert!((wrk.seconds - 5.0).abs() < 1e-9);
        assert!((wrk.per_second - 107117.93).abs() < 1e-6);
        assert!((wrk.p99_us - 1710.0).abs() < 1e-6);
        assert_eq!(wrk.non_2xx, 12);
        assert!(wrk.socket_errors.unwrap().contains("read 3"));
    }

    #[test]
    fn fails_without_latency() {
        let text = OUTPUT.replace("     99%    1.71ms\n", "");
        assert!(parse(&text).unwrap_err().to_string().contains("99%"));
        assert!(parse("garbage").is_err());
        assert!(duration_us("12.0xs").is_none());
    }
}
