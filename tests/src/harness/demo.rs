//! `cargo xtask demo`: the whole story on a namespace pair of its own.

use std::path::Path;

use anyhow::{Result, bail};

use crate::{
    harness::client::{self, Family, Reply},
    harness::filter::{FilterHome, RunningFilter},
    harness::netns::{NetnsPair, SERVER_IF, SERVER_V4},
    harness::server::{PORT, TestServer},
    require_root,
};

const GOOD: &str = "https://app.example.com";
const EVIL: &str = "https://evil.example";
const PARTNER: &str = "https://partner.example";

fn step(n: u32, text: &str) {
    println!("\n{n}. {text}");
}

fn show(what: &str, reply: &Reply, reached: bool) {
    println!("   {what}: {}", reply.describe());
    println!(
        "   server received it: {}",
        if reached { "yes" } else { "no" }
    );
}

fn expect(ok: bool, what: &str) -> Result<()> {
    if !ok {
        bail!("demo failed: {what}");
    }
    Ok(())
}

/// Tells the story on a namespace pair of its own with the `cors-filter`
/// binary at `cors_filter_bin` and the test server at `test_server_bin`,
/// then cleans up (also when a step fails).
pub fn run_demo(cors_filter_bin: &Path, test_server_bin: &Path) -> Result<()> {
    require_root()?;
    println!("cors-filter demo");
    println!("================");
    println!("A browser sends a cross-origin request even when the page may not read the answer.");
    println!("cors-filter drops CORS preflights from origins that are not allowed, in the kernel,");
    println!(
        "before the server's TCP stack sees them; where asked, it drops their form POSTs too."
    );

    step(
        0,
        "Setting up: two network namespaces joined by a veth pair (client, server),",
    );
    let pair = NetnsPair::create()?;
    println!(
        "   an HTTP server on {SERVER_V4}:{PORT} that answers every preflight (it trusts any origin),"
    );
    let server = TestServer::start(&pair, test_server_bin)?;
    let home = FilterHome::new(&format!(
        "ports = [{PORT}]\nallow = [\"{GOOD}\"]\nmode = \"enforce\"\n"
    ))?;
    println!(
        "   and cors-filter attached with XDP to the server's {SERVER_IF}, allowing only {GOOD}."
    );
    let mut filter = RunningFilter::start_with(cors_filter_bin, &pair, &home, &[])?;

    step(1, &format!("Preflight from the allowed origin {GOOD}"));
    let reply = client::preflight(&pair, Family::V4, GOOD)?;
    show("client got", &reply, server.saw_origin(GOOD)?);
    expect(
        reply.status == Some(204) && server.saw_origin(GOOD)?,
        "the allowed preflight was not answered",
    )?;

    step(2, &format!("Preflight from {EVIL}, not in the allowlist"));
    let reply = client::preflight(&pair, Family::V4, EVIL)?;
    show("client got", &reply, server.saw_origin(EVIL)?);
    expect(
        !reply.answered() && !server.saw_origin(EVIL)?,
        "the disallowed preflight got through",
    )?;

    step(3, "A plain GET without Origin (ordinary traffic)");
    let reply = client::get(&pair, Family::V4)?;
    println!("   client got: {}", reply.describe());
    expect(reply.status == Some(200), "the plain GET was not answered")?;

    step(
        4,
        &format!("`cors-filter allow add {EVIL}`, then the same preflight again"),
    );
    print!(
        "   $ cors-filter allow add {EVIL}\n   {}",
        filter.cli_ok(&["allow", "add", EVIL])?
    );
    let reply = client::preflight(&pair, Family::V4, EVIL)?;
    show("client got", &reply, server.saw_origin(EVIL)?);
    expect(
        reply.status == Some(204),
        "the newly allowed preflight was not answered",
    )?;

    step(
        5,
        &format!("`cors-filter allow remove {EVIL}`, then once more"),
    );
    print!(
        "   $ cors-filter allow remove {EVIL}\n   {}",
        filter.cli_ok(&["allow", "remove", EVIL])?
    );
    let before = server.seen()?.len();
    let reply = client::preflight(&pair, Family::V4, EVIL)?;
    println!("   client got: {}", reply.describe());
    println!(
        "   server received it: {}",
        if server.seen()?.len() > before {
            "yes"
        } else {
            "no"
        }
    );
    expect(
        !reply.answered() && server.seen()?.len() == before,
        "the removed origin got through",
    )?;

    step(
        6,
        "`kill -9` the daemon: the pinned link keeps the program attached",
    );
    filter.kill()?;
    println!("   daemon killed; the same preflight from {EVIL}:");
    let before = server.seen()?.len();
    let reply = client::preflight(&pair, Family::V4, EVIL)?;
    println!("   client got: {}", reply.describe());
    expect(
        !reply.answered() && server.seen()?.len() == before,
        "the disallowed preflight got through with the daemon dead",
    )?;
    filter.restart()?;
    println!("   daemon started again: it adopted the pinned filter, counters and all.");

    step(
        7,
        &format!(
            "Edit the config to allow {PARTNER} too and to refuse cross-origin state changes \
             (protect_unsafe_methods = true), then `cors-filter reload` (or SIGHUP)"
        ),
    );
    let reply = client::preflight(&pair, Family::V4, PARTNER)?;
    println!("   before: client got {}", reply.describe());
    std::fs::write(
        home.config(),
        format!(
            "ports = [{PORT}]\nallow = [\"{GOOD}\", \"{PARTNER}\"]\nmode = \"enforce\"\nprotect_unsafe_methods = true\n"
        ),
    )?;
    print!(
        "   $ cors-filter reload\n   {}",
        filter.cli_ok(&["reload"])?
    );
    let reply = client::preflight(&pair, Family::V4, PARTNER)?;
    println!("   client got: {}", reply.describe());
    expect(
        reply.status == Some(204),
        "the reloaded allowlist did not take effect",
    )?;

    step(
        8,
        "CSRF: a form POST needs no preflight, and the browser sends the user's cookies with it",
    );
    let form_post = |origin: &str| {
        client::Request::new("POST", "/transfer")
            .header("Origin", origin)
            .header("Sec-Fetch-Site", "cross-site")
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Cookie", "session=victim")
            .body("to=attacker&amount=1000")
    };
    let posted = |origin: &str| -> Result<bool> {
        Ok(server
            .seen()?
            .iter()
            .any(|seen| seen.method == "POST" && seen.origin.as_deref() == Some(origin)))
    };
    let attempt = client::request(&pair, Family::V4, &form_post(EVIL))?;
    println!("   forged POST from {EVIL}: {}", attempt.describe());
    println!(
        "   server received it: {}",
        if posted(EVIL)? { "yes" } else { "no" }
    );
    expect(
        attempt.status.is_none() && !posted(EVIL)?,
        "the forged POST got through",
    )?;
    let attempt = client::request(&pair, Family::V4, &form_post(GOOD))?;
    println!("   the same POST from {GOOD}: {}", attempt.describe());
    expect(
        attempt.status == Some(200) && posted(GOOD)?,
        "the allowed POST was not answered",
    )?;
    let attempt = client::request(
        &pair,
        Family::V4,
        &client::Request::new("GET", "/").header("Origin", EVIL),
    )?;
    println!(
        "   a GET from {EVIL} (safe: it changes nothing): {}",
        attempt.describe()
    );
    expect(attempt.status == Some(200), "the GET was not answered")?;

    step(9, "What the filter counted (`cors-filter stats`)");
    for line in filter.cli_ok(&["stats"])?.lines() {
        println!("   {line}");
    }
    println!("\n   and on /metrics (Prometheus):");
    for line in filter.metrics()?.lines() {
        if !line.starts_with('#')
            && (line.starts_with("cors_filter_preflights_total")
                || line.starts_with("cors_filter_unsafe_requests_total")
                || line.starts_with("cors_filter_requests_total")
                || line.starts_with("cors_filter_dropped_total")
                || line.starts_with("cors_filter_allowlist_entries"))
        {
            println!("   {line}");
        }
    }
    println!(
        "   (a denied request counts once; the client's TCP retransmits it, and each copy is dropped as connection_denied)"
    );

    filter.stop()?;
    drop(server);
    drop(pair);
    println!(
        "\nDone: the daemon stopped, the filter detached and unpinned (`cors-filter detach --all` in real life), the namespaces are gone."
    );
    Ok(())
}
