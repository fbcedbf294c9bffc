//! `cors-filter run`: the daemon.
//!
//! The filter's state lives in bpffs, not in this process: maps and links
//! are pinned, so a daemon that exits or is killed leaves the program
//! attached and enforcing, and the next one adopts it (same maps, counters
//! going on; the links switched to the new program atomically).
//!
//! Under systemd (`Type=notify`) it says `READY=1` once attached, and
//! keeps `STATUS=` and the watchdog informed ([`service_status`]).

mod reloads;
mod service_status;

use std::{path::Path, sync::Arc};

use anyhow::{Context, Result, bail};
use aya::programs::XdpMode;
use cors_filter_common::pinned::LAYOUT;
use tokio::{
    io::unix::AsyncFd,
    net::TcpListener,
    signal::unix::{SignalKind, signal},
};

use crate::{
    cli::{AttachArg, RunArgs, XdpModeArg},
    commands::reload::{Resolved, RunRecord},
    config_watch::{ConfigWatch, Notice},
    denials::{Denials, Tracker},
    exit::{Classify as _, Kind},
    kernel::filter::{Attached, Filter, Hook, MapPins},
    kernel::layout::{self, Pins},
    kernel::links::{LinkPin, detach_pinned, ifindex, link_pins, link_state},
    kernel::pins::{prepare_pin_dir, remove_pins},
    metrics,
    metrics::exposure,
    metrics::fleet::FleetState,
    state::StateDir,
    systemd::notify::Notifier,
};
use reloads::{ReloadEvent, Reloads};
use service_status::ServiceStatus;

pub async fn run(args: RunArgs, pin_dir: &Path, state_dir: &Path) -> Result<()> {
    // Everything that can be checked is checked before the kernel is touched.
    let record = RunRecord::new(&args.config, args.mode, args.action)?;
    // A bad NOTIFY_SOCKET or WATCHDOG_USEC is the service's configuration.
    let notifier = Notifier::from_env().kind(Kind::Config)?;
    for iface in &args.ifaces {
        ifindex(iface).kind(Kind::Config)?;
    }
    let state = StateDir::open(state_dir)?;
    let _daemon_lock = state.lock_daemon()?;
    // Resolved here to refuse a bad config before the kernel is touched,
    // and again under the lock below, where an `allow` edit made meanwhile
    // is seen.
    let (_, tables) = record.policy_and_tables(&state)?;
    let denial_tracker = Tracker::load(state_dir)?;
    // Before the policy is read under the lock below: a change made after
    // that read is then seen.
    let mut config_watch = if args.no_watch_config {
        None
    } else {
        // The watch is a convenience; the filter is not: a host out of
        // inotify instances or watches is filtered, reloaded by SIGHUP.
        match ConfigWatch::start(&record.config) {
            Ok(watch) => Some(watch),
            Err(e) => {
                log::error!(
                    "cannot watch {} for changes: {e:#}; running without the watch (SIGHUP and `cors-filter reload` reload)",
                    record.config.display()
                );
                None
            }
        }
    };
    let listener = TcpListener::bind(args.metrics_listen)
        .await
        .with_context(|| format!("cannot listen for metrics on {}", args.metrics_listen))?;
    exposure::warn_if_exposed(args.metrics_listen);

    // Handled from before the kernel is touched, so that a signal at any
    // point after that ends in the exit path below rather than a plain exit.
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sighup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let hook = match (args.attach, args.xdp_mode) {
        (AttachArg::Xdp, XdpModeArg::Native) => Hook::Xdp(XdpMode::Driver),
        (AttachArg::Xdp, XdpModeArg::Skb) => Hook::Xdp(XdpMode::Skb),
        (AttachArg::Tc, _) => Hook::Tc,
    };
    let _pin_lock = prepare_pin_dir(pin_dir)?;
    let pins = layout::inspect(pin_dir, tables)?;
    let upgrade = match &pins {
        Pins::Empty => {
            // First, so that the maps pinned next are never of no layout.
            layout::write_record(pin_dir)?;
            None
        }
        Pins::Current => None,
        Pins::Older(upgrade) => {
            log::info!(
                "the pins in {} are of layout {}: upgrading them in place to layout {LAYOUT}",
                pin_dir.display(),
                upgrade.from
            );
            Some(upgrade)
        }
    };
    let map_pins = MapPins {
        dir: pin_dir,
        upgrade,
    };
    let (mut filter, logger) = Filter::load(hook, Some(map_pins), tables)?;
    let elsewhere = match pins {
        Pins::Older(_) => check_upgrade(&mut filter, &args.ifaces, pin_dir)?,
        _ => Vec::new(),
    };
    // Held until the links run the new program, so that no `allow` edit
    // goes to maps an upgrade is about to replace.
    let allowlist_lock = state.lock_allowlist()?;
    let base = {
        // The file may have changed since it was read above: its table
        // sizes are checked against the maps now in use.
        let Resolved {
            policy,
            tables: now,
            base,
        } = record.resolve(&state)?;
        record.check_tables(pin_dir, now)?;
        // Installed before any attach, so that a new program never runs
        // with an empty policy; an adopted filter switches to it atomically.
        let mut maps = filter.take_policy_maps()?;
        if let Pins::Older(upgrade) = &pins {
            maps.continue_count(upgrade.policies_installed(pin_dir)?)?;
        }
        let installed = maps.install(&policy)?;
        record.save(&state)?;
        log::info!(
            "policy {installed} installed from {}: {} mode, action {}, {}, {} allowed origin(s){}",
            record.config.display(),
            policy.settings.mode().name(),
            action_in_log(policy.settings.action()),
            policy.describe_ports(),
            policy.allow.len(),
            match &pins {
                Pins::Empty => "",
                Pins::Current => ", in the maps of the filter pinned before (counters go on)",
                Pins::Older(_) => {
                    ", in new maps (new counters; the old ones' totals carried once every link runs this program)"
                }
            }
        );
        base
    };
    let upgrading = matches!(pins, Pins::Older(_));
    attach_all(&mut filter, &args.ifaces, hook, pin_dir, pins, elsewhere).map_err(|e| {
        if upgrading {
            e.context("the upgrade stopped half-way: every interface still enforces, each link with the old program or this one, each with its own maps; run `cors-filter run` again to finish it")
        } else {
            e
        }
    })?;
    drop(allowlist_lock);
    log::info!("maps and links pinned in {}", pin_dir.display());

    // SAFETY: the logger owns the ring buffer's fd, which stays open and the
    // same for as long as the logger lives, and the AsyncFd owns the logger.
    let mut logs = unsafe { AsyncFd::register(logger) }
        .map_err(|e| anyhow::anyhow!("cannot poll the eBPF log ring buffer: {e}"))?;
    let denied_by_origin = denial_tracker.exported(args.metrics_top_origins.into())?;
    let mut denials = Denials::start(filter.take_denials()?, denial_tracker)?;
    let fleet = Arc::new(FleetState::new(StateDir::open(state_dir)?, base));
    let mut metrics = tokio::spawn(metrics::serve(
        listener,
        pin_dir.to_owned(),
        denied_by_origin,
        fleet.clone(),
    ));
    if config_watch.is_some() {
        log::info!(
            "watching {} for changes (`run --no-watch-config` turns it off)",
            record.config.display()
        );
    }
    // Every program attached, the policy installed, metrics and denials
    // served: only now is the service up.
    let mut status = ServiceStatus::read(&args.ifaces, hook.name(), pin_dir)?;
    notifier.ready(&status.line());
    // From the main loop: if it wedges, the pings stop and systemd
    // restarts the daemon (the filter stays attached meanwhile).
    // After a stall, one ping at once, not a burst of the missed ones.
    let every = |period| {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        interval
    };
    let mut watchdog = notifier.ping_every().map(every);
    let mut status_check = every(service_status::CHECK_EVERY);
    let mut reloads = Reloads::new(pin_dir, state_dir);
    let outcome = loop {
        tokio::select! {
            _ = sigterm.recv() => break Ok("SIGTERM"),
            _ = sigint.recv() => break Ok("SIGINT"),
            _ = sighup.recv() => reloads.request("SIGHUP", &notifier),
            event = reloads.next() => match event {
                ReloadEvent::Ended(trigger, result) => {
                    if let Err(e) = reloads.report(trigger, result, &fleet, &notifier, &mut status) {
                        break Err(e);
                    }
                }
                ReloadEvent::RetryDue(trigger) => reloads.request(trigger, &notifier),
            },
            notice = next_notice(&mut config_watch) => match notice {
                Some(Notice::Changed) => {
                    reloads.request("config file changed", &notifier);
                }
                Some(Notice::Failed(e)) => {
                    log::error!("the config watch stopped: {e}; SIGHUP and `cors-filter reload` still reload");
                    config_watch = None;
                }
                None => {
                    log::error!("the config watch stopped; SIGHUP and `cors-filter reload` still reload");
                    config_watch = None;
                }
            },
            _ = async {
                match watchdog.as_mut() {
                    Some(every) => every.tick().await,
                    None => std::future::pending().await,
                }
            } => notifier.watchdog(),
            // Not while a reload of its own runs: that one reports itself.
            _ = status_check.tick(), if !reloads.running() => match status.refresh() {
                Ok(true) => {
                    notifier.status(&status.line());
                    // Installed by another process (`cors-filter reload`,
                    // `allow reset`): the drift is measured against the
                    // config that one read.
                    match record.resolve(&state) {
                        Ok(resolved) => fleet.installed(resolved.base),
                        Err(e) => log::warn!("cannot read the config for the drift series: {e:#}"),
                    }
                }
                Ok(false) => {}
                Err(e) => log::warn!("cannot read the policy for systemd's status: {e:#}"),
            },
            served = &mut metrics => break match served {
                Ok(Err(e)) => Err(e),
                Ok(Ok(())) => Err(anyhow::anyhow!("metrics server stopped")),
                Err(e) => Err(e).context("metrics server panicked"),
            },
            ready = logs.readable_mut() => match ready {
                Ok(mut guard) => {
                    guard.get_inner_mut().flush();
                    guard.clear_ready();
                }
                Err(e) => break Err(e).context("eBPF log ring buffer failed"),
            },
            stepped = denials.step() => if let Err(e) = stepped {
                break Err(e);
            },
        }
    };
    notifier.stopping();
    drop(filter);
    // The events queued so far are read and the counts saved; later ones
    // wait in the pinned ring buffer for the next daemon.
    let saved = denials.finish();
    let signal = match (outcome, saved) {
        (Ok(signal), saved) => {
            saved?;
            signal
        }
        (Err(e), saved) => {
            if let Err(not_saved) = saved {
                log::error!("{not_saved:#}");
            }
            return Err(e);
        }
    };
    if args.detach_on_exit {
        detach_on_exit(pin_dir, &args.ifaces)?;
        log::info!("{signal}: detached (--detach-on-exit), exiting");
    } else {
        log::info!(
            "{signal}: exiting; the filter stays attached and enforcing (pinned in {}); `cors-filter detach --all` removes it",
            pin_dir.display()
        );
    }
    Ok(())
}

/// Reloads the config as `cors-filter reload` does, for `trigger` (SIGHUP,
/// a changed file), off the event loop: a reload waits for a lock and an
/// RCU grace period and rewrites a whole generation, while the denial
/// events keep coming. A refused reload is logged and counted; only a
/// panic is an error.
/// The watch's next notice; never, without a watch.
async fn next_notice(watch: &mut Option<ConfigWatch>) -> Option<Notice> {
    match watch {
        Some(watch) => watch.next().await,
        None => std::future::pending().await,
    }
}

/// Before an upgrade's first link switch, checks what can be checked: the
/// link pins of `ifaces` (see `Filter::survey`), and those of the other
/// interfaces, which the upgrade switches too: it loads the program each
/// needs (while it still can, see `Filter::load_program_for`) and removes
/// those whose interface is gone. Returns the links to switch.
fn check_upgrade(filter: &mut Filter, ifaces: &[String], pin_dir: &Path) -> Result<Vec<LinkPin>> {
    for iface in ifaces {
        filter.survey(iface)?;
    }
    let mut elsewhere = Vec::new();
    for pin in link_pins(pin_dir)?
        .into_iter()
        .filter(|p| !ifaces.contains(&p.iface))
    {
        let state = link_state(&pin.path)?;
        if state.ifindex == 0 {
            log::warn!("removing {}: its interface is gone", pin.path.display());
            detach_pinned(&pin.path)?;
            continue;
        }
        if !state.is_on(pin.hook, state.ifindex) {
            bail!(
                "{} is a bpf link of another kind than its name says ({}); remove it with `cors-filter --pin-dir {} detach --iface {}`",
                pin.path.display(),
                pin.hook.as_str(),
                pin_dir.display(),
                pin.iface
            );
        }
        filter.load_program_for(pin.hook)?;
        elsewhere.push(pin);
    }
    Ok(elsewhere)
}

/// Attaches to `ifaces`; in an upgrade, switches the links `elsewhere` too
/// (their maps are about to go) and finishes it.
fn attach_all(
    filter: &mut Filter,
    ifaces: &[String],
    hook: Hook,
    pin_dir: &Path,
    pins: Pins,
    elsewhere: Vec<LinkPin>,
) -> Result<()> {
    // New links first: an attach the interface refuses fails before any
    // link was switched.
    let mut order = Vec::with_capacity(ifaces.len());
    for iface in ifaces {
        order.push((filter.survey(iface)?.adopt.is_some(), iface));
    }
    order.sort_by_key(|(adopts, _)| *adopts);
    for (_, iface) in order {
        let attached = filter.attach(iface)?;
        layout::failpoint("upgrade-attached-one");
        match attached {
            Attached::New => log::info!("attached to {iface} ({:?})", hook),
            Attached::Adopted => log::info!(
                "adopted the filter pinned on {iface} ({:?}): its link now runs this program",
                hook
            ),
            Attached::Moved(old) => log::info!(
                "attached to {iface} ({:?}), then detached the filter pinned there on {}",
                hook,
                old.as_str()
            ),
        }
    }
    for other in &elsewhere {
        filter.switch_link(other)?;
        log::info!(
            "switched the filter pinned on {} ({}) to the new program",
            other.iface,
            other.hook.as_str()
        );
    }
    for other in link_pins(pin_dir)?
        .iter()
        .filter(|p| !ifaces.contains(&p.iface))
    {
        log::warn!(
            "the filter stays attached to {} ({}), which this run was not given; `cors-filter detach --iface {}` removes it",
            other.iface,
            other.hook.as_str(),
            other.iface
        );
    }
    if let Pins::Older(upgrade) = pins {
        let from = upgrade.from;
        upgrade.finish(pin_dir)?;
        log::info!(
            "upgraded the pins from layout {from} to layout {LAYOUT} in place: every link runs this program"
        );
    }
    Ok(())
}

/// Detaches from `ifaces`; once no interface is left, removes the pins.
fn detach_on_exit(pin_dir: &Path, ifaces: &[String]) -> Result<()> {
    for pin in link_pins(pin_dir)?
        .into_iter()
        .filter(|p| ifaces.contains(&p.iface))
    {
        detach_pinned(&pin.path)?;
        log::info!("detached from {}", pin.iface);
    }
    let left = link_pins(pin_dir)?;
    if left.is_empty() {
        remove_pins(pin_dir).map(drop)
    } else {
        let names: Vec<&str> = left.iter().map(|p| p.iface.as_str()).collect();
        log::info!(
            "pins kept in {}: the filter is still attached to {}",
            pin_dir.display(),
            names.join(", ")
        );
        Ok(())
    }
}

/// How the log names `action`: the default spelled out, since
/// `reset-proxied` is a name no config file uses.
fn action_in_log(action: cors_filter_common::Action) -> &'static str {
    match action {
        cors_filter_common::Action::ResetProxied => {
            "reset (connections through a PROXY header), drop (others)"
        }
        action => action.name(),
    }
}
