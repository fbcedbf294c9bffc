//! Upgrade in place, under traffic: the last release (`release::PREVIOUS`,
//! pins of layout 1) runs and enforces, then this build starts on its pins
//! and takes them over. No allowed preflight is dropped, no disallowed one
//! reaches the server, counters and `allow` edits and per-origin counts go
//! on, and a head cut across the switch is still judged. Then going back
//! is refused, by the old release and by this build facing a newer
//! layout, and the filter keeps enforcing. XDP and TC. Needs root.

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::TcpStream,
    path::Path,
    process::Command,
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use cors_filter_common::pinned::{LAYOUT, LayoutRecord, name};
use cors_filter_tests::{
    cors_filter_bin,
    harness::bed::Bed,
    harness::client::Family,
    harness::filter::{FilterHome, RunningFilter, counter, run_binary_with_pins},
    harness::preflight_loop::{PreflightLoop, Tally},
    harness::process::run_ok,
    harness::raw_client,
    harness::release,
};
use cors_filter_user::{exit::Kind, kernel::layout::carried_name};

const ALLOWED: &str = "https://app.example.com";
const ADDED: &str = "https://added.example.net";
const DENIED: &str = "https://evil.example";
const WAIT: Duration = Duration::from_millis(200);

fn tally<'a>(tallies: &'a BTreeMap<String, Tally>, origin: &str) -> Result<&'a Tally> {
    tallies
        .get(origin)
        .with_context(|| format!("the loop sent nothing for {origin}: {tallies:?}"))
}

/// Every allowed preflight answered, every denied one unanswered (dropped),
/// at least `min` of each.
fn assert_enforced(tallies: &BTreeMap<String, Tally>, min: u64) -> Result<()> {
    for origin in [ALLOWED, ADDED] {
        let t = tally(tallies, origin)?;
        if t.sent < min || t.answered != t.sent {
            bail!("allowed preflights from {origin} dropped or too few: {tallies:?}");
        }
    }
    let denied = tally(tallies, DENIED)?;
    if denied.sent < min || denied.unanswered != denied.sent {
        bail!("denied preflights answered or too few: {tallies:?}");
    }
    Ok(())
}

/// A connection opened before the upgrade, whose disallowed preflight's
/// head is cut across it: its first part before, the rest after.
struct CutHead {
    stream: TcpStream,
    rest: Vec<u8>,
}

impl CutHead {
    fn open(bed: &Bed) -> Result<CutHead> {
        let ns = bed.pair.client_ns_path();
        let addr = raw_client::server_addr(Family::V4)?;
        let request = raw_client::preflight(DENIED.as_bytes());
        let (first, rest) = request.split_at(20);
        let first = first.to_vec();
        let stream = std::thread::spawn(move || -> Result<TcpStream> {
            raw_client::enter_netns(&ns)?;
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            stream.set_nodelay(true)?;
            stream.write_all(&first)?;
            Ok(stream)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the client thread panicked"))??;
        Ok(CutHead {
            stream,
            rest: rest.to_vec(),
        })
    }

    /// Sends the rest; true if the server answered within the wait.
    fn finish(mut self) -> Result<bool> {
        self.stream.write_all(&self.rest)?;
        self.stream
            .set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut buf = [0u8; 512];
        Ok(matches!(self.stream.read(&mut buf), Ok(n) if n > 0))
    }
}

/// The layout record pinned in `pin_dir`, read with bpftool.
fn pinned_record(pin_dir: &Path) -> Result<Option<LayoutRecord>> {
    let path = pin_dir.join(name::LAYOUT);
    if !path.exists() {
        return Ok(None);
    }
    let out = run_ok(Command::new("bpftool").args([
        "-j",
        "map",
        "lookup",
        "pinned",
        &path.to_string_lossy(),
        "key",
        "0",
        "0",
        "0",
        "0",
    ]))?;
    let value: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let bytes: Vec<u8> = value["value"]
        .as_array()
        .context("bpftool printed no value")?
        .iter()
        .map(|b| {
            let text = b.as_str().unwrap_or("");
            u8::from_str_radix(text.trim_start_matches("0x"), 16)
        })
        .collect::<Result<_, _>>()?;
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let mut record = LayoutRecord::new(word(0), "");
    record.writer_len = word(4);
    record.writer.copy_from_slice(&bytes[8..32]);
    Ok(Some(record))
}

/// Rewrites the layout number of the record pinned in `pin_dir`, as a
/// newer version's would read.
fn set_record(pin_dir: &Path, record: &LayoutRecord) -> Result<()> {
    let mut bytes = Vec::with_capacity(32);
    bytes.extend_from_slice(&record.layout.to_le_bytes());
    bytes.extend_from_slice(&record.writer_len.to_le_bytes());
    bytes.extend_from_slice(&record.writer);
    let mut args: Vec<String> = ["map", "update", "pinned"].map(String::from).to_vec();
    args.push(pin_dir.join(name::LAYOUT).to_string_lossy().into_owned());
    args.extend(["key", "0", "0", "0", "0", "value"].map(String::from));
    args.extend(bytes.iter().map(|b| b.to_string()));
    run_ok(Command::new("bpftool").args(&args)).map(drop)
}

/// The ids of the programs the pinned links in `pin_dir` run.
fn link_programs(pin_dir: &Path) -> Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(pin_dir)? {
        let path = entry?.path();
        if !path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("link-"))
        {
            continue;
        }
        let out = run_ok(Command::new("bpftool").args([
            "-j",
            "link",
            "show",
            "pinned",
            &path.to_string_lossy(),
        ]))?;
        let link: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        ids.push(
            link["prog_id"]
                .as_u64()
                .context("a link without a program")?,
        );
    }
    ids.sort();
    Ok(ids)
}

/// Two preflight loops: the allowed origins as fast as they are answered,
/// the denied one each waited on.
struct Loops {
    allowed: PreflightLoop,
    denied: PreflightLoop,
}

impl Loops {
    fn start(bed: &Bed) -> Result<Loops> {
        let limit = Duration::from_secs(90);
        Ok(Loops {
            allowed: PreflightLoop::start(&bed.pair, &[ALLOWED, ADDED], WAIT, limit)?,
            denied: PreflightLoop::start(&bed.pair, &[DENIED], WAIT, limit)?,
        })
    }

    /// Stops both; what each origin got.
    fn finish(self) -> Result<BTreeMap<String, Tally>> {
        let mut tallies = self.allowed.finish()?;
        tallies.extend(self.denied.finish()?);
        Ok(tallies)
    }
}

/// The previous release running on `bed` (`run` with `args`), with
/// [`ADDED`] allowed by its `allow add`; its counts before any preflight.
fn start_previous(
    previous: &Path,
    bed: &Bed,
    home: &FilterHome,
    args: &[&str],
) -> Result<(RunningFilter, serde_json::Value)> {
    let filter = RunningFilter::start_with(previous, &bed.pair, home, args)?;
    filter.cli_ok(&["allow", "add", ADDED])?;
    let before = filter.stats()?;
    Ok((filter, before))
}

/// `run` of `binary` on `filter`'s pins, which must be refused: `run`'s
/// exit code and error output, which must contain every one of
/// `expected`.
fn refused_run(
    binary: &Path,
    bed: &Bed,
    home: &FilterHome,
    filter: &RunningFilter,
    args: &[&str],
    failpoint: Option<&str>,
    expected: &[&str],
) -> Result<(Option<i32>, String)> {
    let envs: Vec<(&str, &str)> = failpoint
        .map(|point| ("CORS_FILTER_FAILPOINT", point))
        .into_iter()
        .collect();
    let out = run_binary_with_pins(
        binary,
        &bed.pair,
        home,
        &home.config(),
        filter.pin_dir(),
        args,
        &envs,
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if out.status.success() {
        bail!("{} run was not refused: {stderr}", binary.display());
    }
    for part in expected {
        if !stderr.contains(part) {
            bail!("{part:?} is not in what the refused run said: {stderr}");
        }
    }
    Ok((out.status.code(), stderr))
}

/// Whether one preflight from `origin` is answered.
fn answered(bed: &Bed, origin: &str) -> Result<bool> {
    let request = raw_client::preflight(origin.as_bytes());
    Ok(raw_client::send(&bed.pair, Family::V4, &request, WAIT)?.is_some())
}

/// The preflights `tallies` sent since `before`, each counted once in
/// `after`: allowed, and denied (with `more_denied` others).
fn assert_counted(
    before: &serde_json::Value,
    after: &serde_json::Value,
    tallies: &BTreeMap<String, Tally>,
    more_denied: u64,
) -> Result<()> {
    let allowed = tally(tallies, ALLOWED)?.sent + tally(tallies, ADDED)?.sent;
    let denied = tally(tallies, DENIED)?.sent + more_denied;
    for (name, sent) in [("preflight_allow", allowed), ("preflight_deny", denied)] {
        let counted = counter(after, name) - counter(before, name);
        if counted != sent {
            bail!("{name}: {sent} sent, {counted} counted (before {before}, after {after})");
        }
    }
    // `requests`, derived from the request outcomes (carried ones too),
    // counts every request sent meanwhile, and only those: the preflights.
    let requests = counter(after, "requests") - counter(before, "requests");
    if requests != allowed + denied {
        bail!(
            "requests: {} sent, {requests} counted (before {before}, after {after})",
            allowed + denied
        );
    }
    Ok(())
}

/// The daemon's count of denials of [`DENIED`], once it is `at_least`.
fn denied_by_origin(filter: &RunningFilter, at_least: u64) -> Result<u64> {
    let by_origin = filter.wait_denied_by_origin(Duration::from_secs(10), |by_origin| {
        by_origin.get(DENIED).copied().unwrap_or(0) >= at_least
    })?;
    Ok(by_origin.get(DENIED).copied().unwrap_or(0))
}

fn upgrade_under_traffic(attach: &[&str]) -> Result<()> {
    let previous = release::binary(release::PREVIOUS)?;
    let current = cors_filter_bin()?;
    let bed = Bed::new(Path::new(env!("CARGO_BIN_EXE_cors-test-server")))?;
    let home = FilterHome::new(&format!("ports = [8080]\nallow = [\"{ALLOWED}\"]\n"))?;
    // Before any preflight: the counts below are exact.
    let (mut filter, before) = start_previous(&previous, &bed, &home, attach)?;
    assert_eq!(
        pinned_record(filter.pin_dir())?,
        None,
        "{} pinned a layout record",
        release::PREVIOUS.tag
    );
    let loops = Loops::start(&bed)?;
    sleep(Duration::from_millis(1500));
    let cut = CutHead::open(&bed)?;
    let by_origin_before = denied_by_origin(&filter, 0)?;
    if by_origin_before == 0 || counter(&filter.stats()?, "preflight_deny") == 0 {
        bail!("the old program counted no denial before the upgrade");
    }
    let programs_before = link_programs(filter.pin_dir())?;

    // The upgrade: the old daemon stops (its filter stays attached and
    // enforcing), the new one starts on the same pins and state.
    filter.stop_process()?;
    filter.use_binary(&current)?;
    let started = Instant::now();
    filter.restart()?;
    eprintln!("the new daemon was ready after {:?}", started.elapsed());
    let cut_answered = cut.finish()?;
    sleep(Duration::from_millis(1500));
    let across = loops.finish()?;
    let after = filter.stats()?;
    eprintln!("across the upgrade: {across:?}");

    assert_enforced(&across, 10).context("across the upgrade")?;
    assert!(
        !cut_answered,
        "a head cut across the upgrade was let through"
    );
    assert!(
        !bed.server.saw_origin(DENIED)?,
        "a denied preflight reached the server"
    );
    let log = filter.log();
    assert!(
        log.contains("upgrading them in place to layout") && log.contains("upgraded the pins"),
        "{log}"
    );
    let programs_after = link_programs(filter.pin_dir())?;
    assert_eq!(programs_after.len(), programs_before.len());
    assert!(
        programs_after
            .iter()
            .all(|id| !programs_before.contains(id)),
        "a link still runs the old program: {programs_before:?} -> {programs_after:?}"
    );
    let record = pinned_record(filter.pin_dir())?.context("no layout record after the upgrade")?;
    assert_eq!(record.layout, LAYOUT);
    assert_eq!(record.writer(), env!("CARGO_PKG_VERSION"));
    // No pin is left under a staging name.
    assert_eq!(staged_pins(filter.pin_dir())?, Vec::<String>::new());

    // Counters go on from the old program's: every preflight the loops
    // sent was judged by one program or the other and counted once, the
    // cut head's included.
    assert_counted(&before, &after, &across, 1)?;
    assert!(
        counter(&after, "policies_installed") > counter(&before, "policies_installed"),
        "{after}"
    );
    // The `allow add` made with the old version is still in force, and
    // `allow` edits the maps the new program reads.
    let listed = filter.cli_ok(&["allow", "list"])?;
    assert!(listed.contains(ADDED), "{listed}");
    assert!(answered(&bed, ADDED)?, "{ADDED} dropped after the upgrade");
    filter.cli_ok(&["allow", "remove", ADDED])?;
    assert!(
        !answered(&bed, ADDED)?,
        "{ADDED} answered after `allow remove`"
    );
    filter.cli_ok(&["allow", "add", ADDED])?;
    assert!(answered(&bed, ADDED)?, "{ADDED} dropped after `allow add`");
    // Per-origin denial counts went on, the events queued while no daemon
    // read them included: every denied preflight of the loop is counted,
    // and the cut head, once each (the loops started on a filter that had
    // denied nothing, and no event was lost).
    assert_eq!(counter(&filter.stats()?, "events_lost"), 0);
    let wanted = tally(&across, DENIED)?.sent + 1;
    let counted = denied_by_origin(&filter, wanted).with_context(|| {
        format!("per-origin counts lost: before {by_origin_before}, {wanted} denied")
    })?;
    sleep(Duration::from_millis(300));
    let settled = denied_by_origin(&filter, counted)?;
    assert_eq!(settled, wanted, "denials of {DENIED} counted by origin");

    // Going back to the old release is refused; the new filter enforces on.
    filter.stop_process()?;
    let during = Loops::start(&bed)?;
    let (_, stderr) = refused_run(
        &previous,
        &bed,
        &home,
        &filter,
        attach,
        None,
        &["another version", "detach --all"],
    )?;
    eprintln!("{} on the new pins: {stderr}", release::PREVIOUS.tag);
    assert_eq!(link_programs(filter.pin_dir())?, programs_after);

    // This build facing pins of a newer layout refuses them, naming both
    // versions and what to do.
    let newer = LayoutRecord::new(LAYOUT + 1, "9.9.0");
    set_record(filter.pin_dir(), &newer)?;
    let (code, _) = refused_run(
        &current,
        &bed,
        &home,
        &filter,
        attach,
        None,
        &[
            &format!("layout {}", LAYOUT + 1),
            "cors-filter 9.9.0",
            &format!("cors-filter {}", env!("CARGO_PKG_VERSION")),
            "detach --all",
        ],
    )?;
    let newer_layout = i32::from(Kind::NewerLayout.code());
    assert_eq!(
        code,
        Some(newer_layout),
        "run's exit code on a newer layout"
    );
    // The commands that read or edit the maps refuse them too; `--json`
    // ones say so in a JSON object on stdout.
    for args in [
        &["stats", "--json"][..],
        &["status", "--json"],
        &["allow", "list", "--json"],
    ] {
        let out = filter.cli(args)?;
        let error: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("{args:?} said {out:?}"))?;
        assert_eq!(out.status.code(), Some(newer_layout), "{args:?}: {error}");
        assert_eq!(error["kind"], Kind::NewerLayout.name(), "{args:?}: {error}");
        assert!(
            error["error"].as_str().is_some_and(|e| e.contains("9.9.0")),
            "{args:?} read pins of a newer layout: {error}"
        );
    }
    for args in [&["reload"][..], &["allow", "add", "https://late.example"]] {
        let out = filter.cli(args)?;
        assert_eq!(out.status.code(), Some(newer_layout), "{args:?}: {out:?}");
    }
    // A newer layout may have renamed a map this build knows: still a
    // newer layout, not "nothing runs".
    let active = filter.pin_dir().join(name::ACTIVE);
    let moved = filter.pin_dir().join("ACTIVE_MOVED_BY_A_NEWER_LAYOUT");
    std::fs::rename(&active, &moved)?;
    let codes: Vec<Option<i32>> = [&["stats"][..], &["status"]]
        .iter()
        .map(|args| Ok(filter.cli(args)?.status.code()))
        .collect::<Result<_>>()?;
    std::fs::rename(&moved, &active)?;
    assert_eq!(codes, [Some(newer_layout); 2], "stats, status");
    assert_eq!(link_programs(filter.pin_dir())?, programs_after);
    sleep(Duration::from_millis(1000));
    let during = during.finish()?;
    assert_enforced(&during, 5).context("while going back was refused")?;
    assert!(!bed.server.saw_origin(DENIED)?);

    // With its own record back, this build adopts the pins again, and the
    // counts (the carried ones with them) are as they were.
    set_record(filter.pin_dir(), &record)?;
    let settled = filter.stats()?;
    filter.restart()?;
    assert!(filter.log().contains("adopted the filter pinned on"));
    let adopted = filter.stats()?;
    for name in ["preflight_allow", "preflight_deny", "requests"] {
        assert_eq!(counter(&adopted, name), counter(&settled, name), "{name}");
    }
    // The refused `allow add` recorded nothing.
    let listed = filter.cli_ok(&["allow", "list"])?;
    assert!(!listed.contains("late.example"), "{listed}");
    filter.stop()
}

#[test]
fn upgrade_from_the_previous_release_under_traffic_xdp() -> Result<()> {
    upgrade_under_traffic(&[])
}

#[test]
fn upgrade_from_the_previous_release_under_traffic_tc() -> Result<()> {
    upgrade_under_traffic(&["--attach", "tc"])
}

/// The pins whose names an upgrade stages its new maps under.
fn staged_pins(pin_dir: &Path) -> Result<Vec<String>> {
    let mut staged = Vec::new();
    for entry in std::fs::read_dir(pin_dir)? {
        let file = entry?.file_name().to_string_lossy().into_owned();
        if file.ends_with("_NEXT") {
            staged.push(file);
        }
    }
    Ok(staged)
}

/// An upgrade killed half-way (after the links switched; again after the
/// old counters were carried; again after the first staged map took its
/// name) leaves the filter enforcing, and the next run finishes it, with
/// every count.
#[test]
fn an_upgrade_killed_half_way_is_finished_by_the_next_run() -> Result<()> {
    let previous = release::binary(release::PREVIOUS)?;
    let current = cors_filter_bin()?;
    let bed = Bed::new(Path::new(env!("CARGO_BIN_EXE_cors-test-server")))?;
    let home = FilterHome::new(&format!("ports = [8080]\nallow = [\"{ALLOWED}\"]\n"))?;
    let (mut filter, before) = start_previous(&previous, &bed, &home, &[])?;
    let loops = Loops::start(&bed)?;
    sleep(Duration::from_millis(1000));
    let programs_before = link_programs(filter.pin_dir())?;
    filter.stop_process()?;

    // Each run takes over what the one before left, and is killed further on.
    for (failpoint, staged) in [
        ("upgrade-switched", true),
        ("upgrade-carried", true),
        ("upgrade-renamed", true),
        // Every map has its name: the run after keeps the counters and
        // the carried totals as they are.
        ("upgrade-renamed-all", false),
    ] {
        let aborted = format!("{failpoint}: aborting");
        refused_run(
            &current,
            &bed,
            &home,
            &filter,
            &[],
            Some(failpoint),
            &[&aborted],
        )?;
        assert!(
            link_programs(filter.pin_dir())?
                .iter()
                .all(|id| !programs_before.contains(id)),
            "{failpoint}: a link still runs the old program"
        );
        assert_eq!(pinned_record(filter.pin_dir())?, None, "{failpoint}");
        assert_eq!(
            !staged_pins(filter.pin_dir())?.is_empty(),
            staged,
            "{failpoint}"
        );
        sleep(Duration::from_millis(500));
    }

    filter.use_binary(&current)?;
    filter.restart()?;
    sleep(Duration::from_millis(1000));
    let across = loops.finish()?;
    eprintln!("across four killed upgrades and a fifth: {across:?}");
    assert_enforced(&across, 10).context("across the killed upgrades")?;
    assert!(
        !bed.server.saw_origin(DENIED)?,
        "a denied preflight reached the server"
    );
    assert!(filter.log().contains("upgraded the pins"));
    assert_eq!(
        pinned_record(filter.pin_dir())?.map(|r| r.layout),
        Some(LAYOUT)
    );
    assert_eq!(staged_pins(filter.pin_dir())?, Vec::<String>::new());
    assert_counted(&before, &filter.stats()?, &across, 0)?;
    let listed = filter.cli_ok(&["allow", "list"])?;
    assert!(listed.contains(ADDED), "{listed}");
    filter.stop()
}

/// `ip` in the server namespace of `bed`.
fn server_ip(bed: &Bed, args: &[&str]) -> Result<()> {
    run_ok(Command::new("ip").args(["-n", &bed.pair.server]).args(args)).map(drop)
}

/// The ids of the maps program `id` uses.
fn program_maps(id: u64) -> Result<Vec<u64>> {
    let out = run_ok(Command::new("bpftool").args(["-j", "prog", "show", "id", &id.to_string()]))?;
    let prog: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(prog["map_ids"]
        .as_array()
        .context("a program without maps")?
        .iter()
        .filter_map(|id| id.as_u64())
        .collect())
}

/// The id of the map pinned at `path`.
fn pinned_map_id(path: &Path) -> Result<u64> {
    let out = run_ok(Command::new("bpftool").args([
        "-j",
        "map",
        "show",
        "pinned",
        &path.to_string_lossy(),
    ]))?;
    let map: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    map["id"].as_u64().context("a map without an id")
}

/// The upgrade switches every link, also on interfaces the run was not
/// given and on the other hook (it loads that program too), and removes
/// the pin of a link whose interface is gone: here the previous release
/// ran TC on the veth and on two more interfaces, one deleted since, and
/// this build starts with XDP on the veth only. A pin that is not the link
/// its name says is refused before any link switches; a run killed after
/// its first interface is finished by the next, every count kept.
#[test]
fn an_upgrade_switches_every_link_whatever_its_hook() -> Result<()> {
    let previous = release::binary(release::PREVIOUS)?;
    let current = cors_filter_bin()?;
    let bed = Bed::new(Path::new(env!("CARGO_BIN_EXE_cors-test-server")))?;
    // Veth pairs with both ends in the server namespace (this kernel may
    // have no dummy interfaces); they go with the namespace.
    for (name, peer) in [("cfu0", "cfu0p"), ("cfu1", "cfu1p")] {
        server_ip(
            &bed,
            &["link", "add", name, "type", "veth", "peer", "name", peer],
        )?;
        server_ip(&bed, &["link", "set", name, "up"])?;
        server_ip(&bed, &["link", "set", peer, "up"])?;
    }
    let home = FilterHome::new(&format!("ports = [8080]\nallow = [\"{ALLOWED}\"]\n"))?;
    let tc_everywhere = ["--attach", "tc", "--iface", "cfu0", "--iface", "cfu1"];
    let (mut filter, before) = start_previous(&previous, &bed, &home, &tc_everywhere)?;
    let loops = Loops::start(&bed)?;
    sleep(Duration::from_millis(800));
    filter.stop_process()?;
    server_ip(&bed, &["link", "del", "cfu1"])?;
    let programs_before = link_programs(filter.pin_dir())?;
    assert_eq!(programs_before.len(), 3);
    // A pin whose name says XDP on a link that is TC: refused, and no link
    // has switched.
    let (tc_pin, lying_pin) = (
        filter.pin_dir().join("link-cfu0-tc"),
        filter.pin_dir().join("link-cfu0-xdp-native"),
    );
    std::fs::rename(&tc_pin, &lying_pin)?;
    let refused = ["of another kind than its name says"];
    refused_run(&current, &bed, &home, &filter, &[], None, &refused)?;
    assert_eq!(link_programs(filter.pin_dir())?, programs_before);
    std::fs::rename(&lying_pin, &tc_pin)?;

    // Killed after its first interface (the veth, moved from TC to XDP).
    // It removed the pin of the deleted interface's link first.
    let killed = ["upgrade-attached-one: aborting", "its interface is gone"];
    let failpoint = Some("upgrade-attached-one");
    refused_run(&current, &bed, &home, &filter, &[], failpoint, &killed)?;
    assert_eq!(pinned_record(filter.pin_dir())?, None);

    filter.use_binary(&current)?;
    filter.use_args(&[]);
    filter.restart()?;
    sleep(Duration::from_millis(800));
    let across = loops.finish()?;
    eprintln!("across a refused, a killed and a whole upgrade: {across:?}");
    assert_enforced(&across, 5)?;
    assert!(!bed.server.saw_origin(DENIED)?);
    assert_counted(&before, &filter.stats()?, &across, 0)?;
    let log = filter.log();
    assert!(log.contains("upgraded the pins"), "{log}");
    assert_eq!(
        pinned_record(filter.pin_dir())?.map(|r| r.layout),
        Some(LAYOUT)
    );
    assert_eq!(staged_pins(filter.pin_dir())?, Vec::<String>::new());
    let mut pins: Vec<String> = std::fs::read_dir(filter.pin_dir())?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .filter(|entry: &Result<String>| {
            entry.as_ref().map_or(true, |pin| {
                pin.starts_with("link-") || pin.starts_with(name::COUNTERS_CARRIED_FROM)
            })
        })
        .collect::<Result<_>>()?;
    pins.sort();
    assert_eq!(
        pins,
        [
            carried_name(1).as_str(),
            "link-cfu0-tc",
            "link-veth-s-xdp-native"
        ]
    );
    // Both links run a new program, and both programs use the maps now
    // pinned: the policy that `allow` and `reload` edit.
    let config_map = pinned_map_id(&filter.pin_dir().join(name::CONFIG))?;
    for id in link_programs(filter.pin_dir())? {
        assert!(
            !programs_before.contains(&id),
            "a link still runs the old program"
        );
        assert!(
            program_maps(id)?.contains(&config_map),
            "program {id} reads another CONFIG"
        );
    }
    filter.stop()
}
