//! Fleet mode, with a real daemon on a namespace pair: the config file
//! watched and reloaded by itself (a ConfigMap's symlink swap, an editor's
//! rename, a write in place; a bad file refused and counted), `allow list
//! --source`, `allow reset`, `allowlist_source = "config"`, the drift
//! gauge, and a reload refused for a passing reason tried again.

use std::{path::Path, thread::sleep, time::Duration};

use anyhow::{Context, Result, bail, ensure};
use cors_filter_tests::{
    harness::bed::Bed,
    harness::client::{self, Family},
    harness::configmap::ConfigMapMount,
    harness::filter::{FilterHome, RunningFilter, counter},
};

const APP: &str = "https://app.example.com";
const NEW: &str = "https://new.example.com";
const LATER: &str = "https://later.example.com";
const ADDED: &str = "https://added.example.com";
const GET_ONLY: &str = "https://get.example.com";
const LISTED: &str = "https://listed.example.com";

/// A change to the config file must be in force within this.
const PICKUP_LIMIT: Duration = Duration::from_secs(2);
const FAILURES: &str = "cors_filter_config_reload_failures_total";

fn bed() -> Result<Bed> {
    Bed::new(Path::new(env!("CARGO_BIN_EXE_cors-test-server")))
}

fn config(allow: &[&str], extra: &str) -> String {
    let quoted: Vec<String> = allow.iter().map(|o| format!("\"{o}\"")).collect();
    format!("ports = [8080]\nallow = [{}]\n{extra}", quoted.join(", "))
}

/// `allow list`, one entry a line, sorted.
fn allowed(filter: &RunningFilter) -> Result<Vec<String>> {
    let mut lines: Vec<String> = filter
        .cli_ok(&["allow", "list"])?
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    Ok(lines)
}

/// Waits until `allow list` is `expected`, at most [`PICKUP_LIMIT`] and
/// a second more (to say how late it came); returns how long it took.
fn wait_allowed(filter: &RunningFilter, expected: &[&str]) -> Result<Duration> {
    let mut expected: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    expected.sort();
    let mut now = Vec::new();
    let limit = PICKUP_LIMIT + Duration::from_secs(1);
    filter
        .wait_until(limit, "the allowlist in force", || {
            now = allowed(filter)?;
            Ok(now == expected)
        })
        .with_context(|| format!("allow list is {now:?}, not {expected:?}"))
}

/// A series of `/metrics`, 0 when absent.
fn metric(filter: &RunningFilter, series: &str) -> Result<u64> {
    Ok(filter.metric_values()?.get(series).copied().unwrap_or(0))
}

fn drift(filter: &RunningFilter) -> Result<(u64, u64)> {
    let values = filter.metric_values()?;
    let get = |change: &str| {
        let series = format!("cors_filter_allowlist_local_changes{{change=\"{change}\"}}");
        values.get(&series).copied()
    };
    match (get("added"), get("removed")) {
        (Some(added), Some(removed)) => Ok((added, removed)),
        _ => bail!("no cors_filter_allowlist_local_changes in {values:?}"),
    }
}

fn status(bed: &Bed, origin: &str) -> Result<Option<u16>> {
    Ok(client::preflight(&bed.pair, Family::V4, origin)?.status)
}

#[test]
fn a_configmap_swap_is_picked_up_within_two_seconds_and_a_bad_file_is_refused() -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(&config(&[APP], ""))?;
    let mut mount = ConfigMapMount::create(&home.config(), &config(&[APP], ""))?;
    let filter = bed.filter(&home, &[])?;
    ensure!(status(&bed, APP)? == Some(204));
    let installed = counter(&filter.stats()?, "policies_installed");

    mount.update(&config(&[NEW], ""))?;
    let took = wait_allowed(&filter, &[NEW])?;
    eprintln!("ConfigMap swap in force after {} ms", took.as_millis());
    ensure!(took < PICKUP_LIMIT, "the swap took {took:?}");
    ensure!(
        filter.log().contains("config file changed: reloaded"),
        "{}",
        filter.log()
    );
    // What the kernel does, seen from the client namespace.
    ensure!(status(&bed, NEW)? == Some(204));
    ensure!(
        status(&bed, APP)?.is_none(),
        "the origin swapped out still passes"
    );
    ensure!(counter(&filter.stats()?, "policies_installed") == installed + 1);

    // A bad new file: refused, logged, counted; the policy stays.
    mount.update("ports = [8080, 0]\nallow = [\"https://evil.example\"]\n")?;
    filter.wait_until(PICKUP_LIMIT, "a reload failure counted", || {
        Ok(metric(&filter, FAILURES)? >= 1)
    })?;
    let log = filter.log();
    ensure!(
        log.contains("config file changed: reload refused") && log.contains("port 0"),
        "{log}"
    );
    ensure!(allowed(&filter)? == [NEW]);
    ensure!(counter(&filter.stats()?, "policies_installed") == installed + 1);
    ensure!(status(&bed, NEW)? == Some(204), "the policy changed");

    // A good one after it is picked up; the daemon kept running.
    mount.update(&config(&[LATER], ""))?;
    let took = wait_allowed(&filter, &[LATER])?;
    eprintln!(
        "ConfigMap swap after a refused one in force after {} ms",
        took.as_millis()
    );
    ensure!(took < PICKUP_LIMIT, "the swap took {took:?}");
    ensure!(metric(&filter, FAILURES)? == 1);
    filter.stop()
}

#[test]
fn an_editor_rename_and_a_write_in_place_are_picked_up_and_sighup_still_reloads() -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(&config(&[APP], ""))?;
    let mut filter = bed.filter(&home, &[])?;

    // Written to another name, then renamed over the file.
    let tmp = home.config().with_extension("toml.swp");
    std::fs::write(&tmp, config(&[NEW], ""))?;
    std::fs::rename(&tmp, home.config())?;
    let took = wait_allowed(&filter, &[NEW])?;
    eprintln!(
        "rename over the file in force after {} ms",
        took.as_millis()
    );
    ensure!(took < PICKUP_LIMIT, "took {took:?}");

    // Written in place.
    std::fs::write(home.config(), config(&[LATER], ""))?;
    let took = wait_allowed(&filter, &[LATER])?;
    eprintln!("write in place in force after {} ms", took.as_millis());
    ensure!(took < PICKUP_LIMIT, "took {took:?}");

    // The same bytes again: nothing to reload.
    let installed = counter(&filter.stats()?, "policies_installed");
    std::fs::write(home.config(), config(&[LATER], ""))?;
    sleep(Duration::from_secs(1));
    ensure!(counter(&filter.stats()?, "policies_installed") == installed);

    // SIGHUP still reloads.
    filter.signal(libc::SIGHUP)?;
    filter.wait_until(PICKUP_LIMIT, "a policy installed by SIGHUP", || {
        Ok(counter(&filter.stats()?, "policies_installed") > installed)
    })?;
    ensure!(metric(&filter, FAILURES)? == 0);
    filter.stop()
}

#[test]
fn with_no_watch_config_a_change_waits_for_a_reload() -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(&config(&[APP], ""))?;
    let filter = bed.filter(&home, &["--no-watch-config"])?;
    std::fs::write(home.config(), config(&[NEW], ""))?;
    sleep(PICKUP_LIMIT);
    ensure!(allowed(&filter)? == [APP], "reloaded without being asked");
    filter.cli_ok(&["reload"])?;
    ensure!(allowed(&filter)? == [NEW]);
    // The drift is measured against the config the CLI's reload read, once
    // the daemon sees the new generation (it looks every 5 s): removing
    // NEW is drift from [NEW], none from the [APP] it started with.
    filter.cli_ok(&["allow", "remove", NEW])?;
    filter.wait_until(
        Duration::from_secs(8),
        "the drift measured against the reloaded config",
        || Ok(drift(&filter)? == (0, 1)),
    )?;
    filter.stop()
}

#[test]
fn allow_list_shows_sources_and_allow_reset_goes_back_to_the_config() -> Result<()> {
    let bed = bed()?;
    let get_only = format!("{{ origin = \"{GET_ONLY}\", methods = [\"GET\"] }}");
    let toml = format!("ports = [8080]\nallow = [\"{APP}\", {get_only}, \"{LISTED}\"]\n");
    let home = FilterHome::new(&toml)?;
    let filter = bed.filter(&home, &[])?;
    ensure!(drift(&filter)? == (0, 0));
    let installed = counter(&filter.stats()?, "policies_installed");

    filter.cli_ok(&["allow", "add", ADDED])?;
    filter.cli_ok(&["allow", "add", GET_ONLY])?; // every method now
    filter.cli_ok(&["allow", "add", APP])?; // as the config has it: no drift
    filter.cli_ok(&["allow", "remove", LISTED])?;
    filter.cli_ok(&["allow", "remove", "https://never.example.com"])?; // not listed
    ensure!(drift(&filter)? == (2, 1), "{:?}", drift(&filter)?);

    let listed: serde_json::Value =
        serde_json::from_str(&filter.cli_ok(&["allow", "list", "--json", "--source"])?)?;
    let expected = serde_json::json!([
        {"origin": ADDED, "methods": null, "allowed": true, "source": "local"},
        {"origin": APP, "methods": null, "allowed": true, "source": "config"},
        {"origin": GET_ONLY, "methods": null, "allowed": true, "source": "local"},
        {"origin": LISTED, "methods": null, "allowed": false, "source": "local-removal"},
    ]);
    ensure!(
        listed == expected,
        "allow list --json --source printed {listed:#}"
    );
    let text = filter.cli_ok(&["allow", "list", "--source"])?;
    ensure!(
        text.lines().any(|l| l == format!("local-removal {LISTED}"))
            && text.lines().any(|l| l == format!("config        {APP}")),
        "{text}"
    );
    // The plain list is as before: the running allowlist, no sources.
    let mut plain = vec![ADDED.to_owned(), APP.to_owned(), GET_ONLY.to_owned()];
    plain.sort();
    ensure!(allowed(&filter)? == plain);
    ensure!(status(&bed, LISTED)?.is_none(), "a removed origin passes");

    // Reset: exactly the config again, in the kernel and on disk.
    let out = filter.cli_ok(&["allow", "reset"])?;
    for line in [
        format!("dropped local addition {ADDED}"),
        format!("dropped local addition {GET_ONLY}"),
        format!("dropped local removal {LISTED}"),
    ] {
        ensure!(out.lines().any(|l| l == line), "{line} not in:\n{out}");
    }
    ensure!(
        out.contains(&format!("policy {} installed", installed + 1)),
        "{out}"
    );
    let mut config_only = vec![
        APP.to_owned(),
        format!("{GET_ONLY} methods=GET"),
        LISTED.to_owned(),
    ];
    config_only.sort();
    ensure!(allowed(&filter)? == config_only);
    let changes: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        home.state_dir().join("allowlist-changes.json"),
    )?)?;
    ensure!(
        changes == serde_json::json!({"added": [], "removed": []}),
        "{changes}"
    );
    ensure!(drift(&filter)? == (0, 0));
    ensure!(status(&bed, LISTED)? == Some(204));
    ensure!(status(&bed, ADDED)?.is_none(), "a dropped addition passes");
    filter.stop()
}

#[test]
fn allowlist_source_config_refuses_edits_and_ignores_recorded_ones() -> Result<()> {
    let bed = bed()?;
    let home = FilterHome::new(&config(&[APP, LISTED], ""))?;
    let mut filter = bed.filter(&home, &[])?;
    filter.cli_ok(&["allow", "add", ADDED])?;
    filter.cli_ok(&["allow", "remove", LISTED])?;
    ensure!(drift(&filter)? == (1, 1));
    let changes_path = home.state_dir().join("allowlist-changes.json");
    let recorded = std::fs::read_to_string(&changes_path)?;

    // The config becomes the only source: picked up by the watch.
    std::fs::write(
        home.config(),
        config(&[APP, LISTED], "allowlist_source = \"config\"\n"),
    )?;
    let mut only_config = vec![APP, LISTED];
    only_config.sort();
    wait_allowed(&filter, &only_config)?;
    let warning = "2 local allowlist change(s) recorded in";
    let log = filter.log();
    ensure!(
        log.contains(warning) && log.contains("`cors-filter allow reset`"),
        "{log}"
    );
    ensure!(drift(&filter)? == (0, 0));
    ensure!(status(&bed, ADDED)?.is_none(), "an ignored addition passes");

    // Edits are refused, naming the setting; nothing is recorded.
    for edit in [["allow", "add", NEW], ["allow", "remove", APP]] {
        let out = filter.cli(&edit)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(!out.status.success(), "{edit:?} was accepted");
        ensure!(
            stderr.contains("allowlist_source = \"config\"")
                && stderr.contains(&*home.config().to_string_lossy()),
            "{stderr}"
        );
    }
    ensure!(std::fs::read_to_string(&changes_path)? == recorded);
    ensure!(allowed(&filter)? == only_config);

    // A restart applies the config alone too, and says so again.
    filter.stop_process()?;
    filter.restart()?;
    ensure!(allowed(&filter)? == only_config);
    ensure!(
        filter.log().matches(warning).count() >= 2,
        "{}",
        filter.log()
    );

    // `allow reset` removes the recorded changes: no more warning.
    filter.cli_ok(&["allow", "reset"])?;
    ensure!(std::fs::read_to_string(&changes_path)?.contains("\"added\": []"));
    filter.stop()
}

/// A reload refused for a reason other than the config (here the state
/// directory holding a file others could write, as a half-done repair
/// might leave it) is tried again: the file's change is put in force once
/// the reason is gone, with no new change to the file.
#[test]
fn a_reload_refused_for_a_passing_reason_is_tried_again() -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let bed = bed()?;
    let home = FilterHome::new(&config(&[APP], ""))?;
    let filter = bed.filter(&home, &[])?;
    let planted = home.state_dir().join("planted");
    std::fs::write(&planted, "")?;
    std::fs::set_permissions(&planted, std::fs::Permissions::from_mode(0o666))?;
    std::fs::write(home.config(), config(&[NEW], ""))?;
    filter.wait_until(PICKUP_LIMIT, "the refused reload counted", || {
        Ok(metric(&filter, FAILURES)? >= 1)
    })?;
    ensure!(filter.log().contains("trying again"), "{}", filter.log());
    std::fs::remove_file(&planted)?;
    let took = wait_allowed(&filter, &[NEW])?;
    eprintln!("in force {took:?} after the reason went");
    filter.stop()
}
