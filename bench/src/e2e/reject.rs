//! Part 2: server CPU time per rejected preflight, cors-filter dropping it
//! at XDP against nginx answering 403, and a bare `XDP_DROP` as the floor.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use cors_filter_tests::{
    TempDir,
    frames::bare_xdp::{BareAction, BareXdp},
    harness::netns::{CLIENT_IF, CLIENT_V4, NetnsPair, SERVER_IF, SERVER_V4},
};

use super::{
    cpu::{self, MachineCpu, NapiWatch},
    filter::Filter,
    link,
    nginx::{self, Nginx, PORT},
    sender::{self, Ends, Pace, Queueing},
    wrk,
};
use crate::{
    preflight::{self, DENIED_ORIGIN as EVIL, PATH},
    report::{Part, Section, Target, ratio},
};

/// Frames a second the sender aims at, and for how long.
/// Sustained here with room to spare (at 600k frames/s the cors-filter
/// run saturates a CPU); batches are small, so the kthread's wake-ups are
/// part of the per-packet figure, as at a moderate real load.
const RATE: u64 = 400_000;
const SEND_SECONDS: u64 = 5;
const WRK_SECONDS: u32 = 5;
/// wrk's connections: each carries one preflight and is closed.
const WRK_CONNECTIONS: u32 = 16;
/// Time for the receive path to drain its ring after the last frame.
const SETTLE: Duration = Duration::from_millis(300);

/// The preflight as the raw frames carry it.
fn preflight() -> Vec<u8> {
    preflight::request(EVIL, &format!("{SERVER_V4}:{PORT}"))
}

/// The same preflight as a wrk script; with `close`, asking the server to
/// close the connection after its answer.
fn wrk_script(close: bool) -> String {
    let mut lua = format!("wrk.method = \"OPTIONS\"\nwrk.path = \"{PATH}\"\n");
    if close {
        lua.push_str("wrk.headers[\"Connection\"] = \"close\"\n");
    }
    for (name, value) in preflight::headers(EVIL) {
        // The values hold neither quotes nor backslashes: no escaping needed.
        lua.push_str(&format!("wrk.headers[\"{name}\"] = \"{value}\"\n"));
    }
    lua
}

/// One measured run: requests the server handled and what they cost.
struct Run {
    name: &'static str,
    requests: u64,
    seconds: f64,
    server_s: f64,
    /// Of `server_s`, what the cors-filter daemon spent.
    daemon_s: f64,
    machine_s: f64,
    /// cors-filter: denial events the ring buffer had no room for (the
    /// daemon's time covers only the events it read).
    events_lost: Option<u64>,
}

impl Run {
    fn per_request_us(&self) -> f64 {
        self.server_s * 1e6 / self.requests.max(1) as f64
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.name.to_owned(),
            self.requests.to_string(),
            format!("{:.0}", self.requests as f64 / self.seconds),
            format!("{:.3}", self.server_s),
            format!("{:.3}", self.daemon_s),
            format!("{:.2}", self.per_request_us()),
            format!("{:.2}", self.machine_s * 1e6 / self.requests.max(1) as f64),
        ]
    }
}

/// Sends the raw preflights at the XDP program on the server interface,
/// whose NAPI kthreads are `napi`; `handled` reads how many it handled so
/// far (a counter of the filter, or of the interface).
fn raw_run(
    pair: &NetnsPair,
    name: &'static str,
    napi: &[u32],
    daemon: &[u32],
    frames: &[Vec<u8>],
    handled: &dyn Fn() -> Result<u64>,
) -> Result<Run> {
    let (handled_before, napi_before, daemon_before, machine_before) = (
        handled()?,
        cpu::processes_ns(napi)?,
        cpu::processes_ns(daemon)?,
        MachineCpu::now()?,
    );
    let sent = sender::send(
        &pair.client_ns_path(),
        CLIENT_IF,
        frames.to_vec(),
        Pace::for_seconds(RATE, SEND_SECONDS),
        Queueing::Bypass,
    )?;
    std::thread::sleep(SETTLE);
    // A thread that ended meanwhile takes its run time with it: never below 0.
    let napi_ns = cpu::processes_ns(napi)?.saturating_sub(napi_before);
    let daemon_ns = cpu::processes_ns(daemon)?.saturating_sub(daemon_before);
    eprintln!(
        "cors-filter-bench: {name}: NAPI kthread {:.3} s, daemon {:.3} s",
        napi_ns as f64 / 1e9,
        daemon_ns as f64 / 1e9
    );
    let machine_s = MachineCpu::now()?.busy_since(&machine_before);
    let requests = handled()? - handled_before;
    if napi_ns == 0 || requests == 0 {
        bail!(
            "{name}: the server's NAPI kthread ran {napi_ns} ns for {requests} frames handled: the receive path is not where it was assumed"
        );
    }
    // Every frame taken by the sender must be handled: else the veth ring
    // overflowed and the rate is more than this machine sustains.
    if requests * 100 < sent.frames * 99 {
        bail!(
            "{name}: {} frames sent ({} refused), {requests} handled by the server: lower RATE",
            sent.frames,
            sent.refused
        );
    }
    Ok(Run {
        name,
        requests,
        seconds: sent.elapsed.as_secs_f64(),
        server_s: (napi_ns + daemon_ns) as f64 / 1e9,
        daemon_s: daemon_ns as f64 / 1e9,
        machine_s,
        events_lost: None,
    })
}

/// Frames handled by a bare `XDP_DROP`: all the sender's frames that the
/// client end handed to the server end (veth counts those in `tx_packets`;
/// a full ring's drops only in `tx_dropped`).
fn bare_drop_run(pair: &NetnsPair, frames: &[Vec<u8>]) -> Result<Run> {
    let watch = NapiWatch::before(&pair.server, SERVER_IF);
    let _drop = BareXdp::attach(BareAction::Drop, &pair.server_ns_path(), SERVER_IF)?;
    let napi = watch.threaded()?;
    let client = pair.client.clone();
    // tx_packets of veth-c counts what veth handed to the peer's ring.
    let handled = move || -> Result<u64> { link::counter(&client, CLIENT_IF, "tx_packets") };
    raw_run(pair, "bare XDP_DROP", &napi, &[], frames, &handled)
}

fn filter_run(pair: &NetnsPair, frames: &[Vec<u8>]) -> Result<Run> {
    let watch = NapiWatch::before(&pair.server, SERVER_IF);
    let filter = Filter::start(pair)?;
    let napi = watch.threaded()?;
    let handled = || filter.counter("preflight_deny");
    // The daemon is part of the server: it reads the denial events the
    // program sends for each rejected preflight.
    let daemon = [filter.running.pid()?];
    let lost_before = filter.counter("events_lost")?;
    let mut run = raw_run(
        pair,
        "cors-filter, XDP drop",
        &napi,
        &daemon,
        frames,
        &handled,
    )?;
    let lost = filter.counter("events_lost")?.saturating_sub(lost_before);
    eprintln!(
        "cors-filter-bench: cors-filter, XDP drop: {lost} of {} denial events found the ring buffer full",
        run.requests
    );
    run.events_lost = Some(lost);
    Ok(run)
}

/// nginx answering wrk's preflights with 403: each on a new connection
/// (`close`), or all on kept-alive ones.
fn nginx_run(pair: &NetnsPair, close: bool) -> Result<Run> {
    // veth takes its NAPI path only with an XDP program attached: a bare
    // XDP_PASS gives nginx's traffic the same receive path as the filter's,
    // in a kthread whose time can be read. The client end gets one too, so
    // that the answers' receive work, the client's, runs in the client's
    // kthread rather than being charged to nginx's sends.
    let watch = NapiWatch::before(&pair.server, SERVER_IF);
    let _server_pass = BareXdp::attach(BareAction::Pass, &pair.server_ns_path(), SERVER_IF)?;
    let napi = watch.threaded()?;
    let client_watch = NapiWatch::before(&pair.client, CLIENT_IF);
    let _client_pass = BareXdp::attach(BareAction::Pass, &pair.client_ns_path(), CLIENT_IF)?;
    client_watch.threaded()?;
    let nginx = Nginx::start(pair, nginx::REJECT_PREFLIGHTS)?;
    let dir = TempDir::new("wrk")?;
    let script = dir.path().join("preflight.lua");
    std::fs::write(&script, wrk_script(close))
        .with_context(|| format!("cannot write {}", script.display()))?;

    let mut threads = napi.clone();
    threads.extend(nginx.pids());
    let (server_before, machine_before) = (cpu::processes_ns(&threads)?, MachineCpu::now()?);
    let result = wrk::run(
        &pair.client,
        WRK_CONNECTIONS,
        WRK_SECONDS,
        Some(&script),
        &format!("http://{SERVER_V4}:{PORT}/"),
    )?;
    std::thread::sleep(SETTLE);
    let server_ns = cpu::processes_ns(&threads)? - server_before;
    let machine_s = MachineCpu::now()?.busy_since(&machine_before);
    // Every answer must be the 403: anything else is not this benchmark.
    if result.requests == 0 || result.non_2xx != result.requests {
        bail!(
            "nginx answered {} requests, {} of them with an error status: expected all 403\n{}",
            result.requests,
            result.non_2xx,
            nginx.error_log()
        );
    }
    Ok(Run {
        name: if close {
            "nginx 403, new connection each"
        } else {
            "nginx 403, keep-alive"
        },
        requests: result.requests,
        seconds: result.seconds,
        server_s: server_ns as f64 / 1e9,
        daemon_s: 0.0,
        machine_s,
        events_lost: None,
    })
}

pub fn run() -> Result<Part> {
    let busy = cpu::busy_before()?;
    let pair = NetnsPair::create()?;
    let ends = Ends {
        src_mac: link::mac(&pair.client, CLIENT_IF)?,
        dst_mac: link::mac(&pair.server, SERVER_IF)?,
        src_ip: CLIENT_V4.parse()?,
        dst_ip: SERVER_V4.parse()?,
        dst_port: PORT,
    };
    let payload = preflight();
    let frames = sender::frames(&ends, &payload);
    let floor = bare_drop_run(&pair, &frames)?;
    let filter = filter_run(&pair, &frames)?;
    let nginx = nginx_run(&pair, true)?;
    let nginx_kept = nginx_run(&pair, false)?;

    let mut section = Section::new(
        "CPU per rejected preflight (veth, threaded NAPI)",
        &[
            "server side",
            "requests",
            "rate /s",
            "server CPU s",
            "of which daemon s",
            "CPU per request µs",
            "machine CPU per request µs",
        ],
    );
    section.note(format!(
        "A browser preflight ({} bytes of HTTP: OPTIONS {PATH}, Origin {EVIL}, \
         Access-Control-Request-Method/-Headers, User-Agent, Sec-Fetch-*, Referer, Accept-*) \
         from the client namespace to the server namespace of a veth pair.",
        payload.len()
    ));
    section.note(format!(
        "cors-filter and bare XDP_DROP: the preflight as one SYN segment (as TCP Fast Open sends one, so that each is judged as a connection's first request), valid \
         checksums, no handshake, sent with an AF_PACKET socket at {RATE} frames/s for \
         {SEND_SECONDS} s from {} source ports; requests = the filter's `preflight_deny` \
         counter (cors-filter), frames the client veth handed over (bare). nginx 1 worker, \
         `access_log off`, answers 403 from a `map` of method and Origin; wrk -t1 \
         -c{WRK_CONNECTIONS} -d{WRK_SECONDS}s with `Connection: close`, so each preflight \
         costs a whole connection (handshake, request, 403, close) as a browser's rejected \
         preflight does; requests = wrk's 403 count.",
        sender::FLOWS
    ));
    section.note(
        "Server CPU: the server veth is switched to threaded NAPI, so its whole receive \
         path (veth NAPI poll, the XDP program, and for nginx the TCP/IP receive) runs in \
         its `napi/veth-s-*` kthread; server CPU = that kthread's run time (schedstat, ns) \
         plus, for nginx, its master and worker processes', for cors-filter the `cors-filter \
         run` daemon's (it reads the denial event the program emits for each rejected \
         preflight, counts it per origin and rate-limits its log line). For nginx a bare XDP_PASS is \
         attached to the server veth (veth uses NAPI only with an XDP program) and one to \
         the client veth with threaded NAPI, so that receiving the answers (the client's \
         work) runs in the client's kthread instead of being charged to nginx. Not counted: \
         the sender's transmit work (veth hands frames over in the sender's context), \
         timers that fire elsewhere.",
    );
    section.note(
        "Machine CPU per request: busy time of the whole machine (/proc/stat, both CPUs, \
         client included: AF_PACKET sender or wrk) over the run, divided by the same \
         requests; a cross-check that includes everything.",
    );
    for run in [&filter, &floor, &nginx, &nginx_kept] {
        section.row(run.row());
    }
    let ratio_value = nginx.per_request_us() / filter.per_request_us();
    let xdp_path_us = (filter.server_s - filter.daemon_s) * 1e6 / filter.requests as f64;
    section.note(format!(
        "nginx / cors-filter: {} server CPU per request ({} machine-wide; {} against the \
         XDP path alone, daemon left out); cors-filter / bare XDP_DROP: {}. The clients \
         (sender, wrk) are pinned to the first CPU, the nginx worker to the last.",
        ratio(ratio_value),
        ratio(
            (nginx.machine_s / nginx.requests as f64) / (filter.machine_s / filter.requests as f64)
        ),
        ratio(nginx.per_request_us() / xdp_path_us),
        ratio(filter.per_request_us() / floor.per_request_us()),
    ));
    section.note(format!(
        "Denial events the ring buffer had no room for during the cors-filter run: {} of {} \
         (the daemon's time covers the events it read).",
        filter.events_lost.unwrap_or(0),
        filter.requests
    ));
    section.note(cpu::busy_note(busy));
    if busy > 0.05 {
        eprintln!("cors-filter-bench: {}", cpu::busy_note(busy));
    }
    Ok(Part {
        sections: vec![section],
        targets: vec![Target::ratio_at_most(
            "server CPU per rejected preflight, cors-filter (daemon included) vs bare XDP_DROP",
            filter.per_request_us() / floor.per_request_us(),
            1.5,
        )],
    })
}
