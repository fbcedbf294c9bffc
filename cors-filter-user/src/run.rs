//! `cors-filter run`: the daemon.

use std::path::Path;

use anyhow::{Context, Result, bail};
use aya::programs::XdpMode;
use cors_filter_common::{Action, FilterConfig, Mode};
use tokio::{
    io::unix::AsyncFd,
    net::TcpListener,
    signal::unix::{SignalKind, signal},
};

use crate::{
    cli::{ActionArg, AttachArg, ModeArg, RunArgs, XdpModeArg},
    config::Config,
    filter::{Filter, Hook},
    metrics,
    state::StateDir,
};

fn interface_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: `c` is a valid C string.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

pub async fn run(args: RunArgs, pin_dir: &Path, state_dir: &Path) -> Result<()> {
    // Everything that can be checked is checked before the kernel is touched.
    let config = Config::load(&args.config)?;
    let mode = match args.mode {
        Some(ModeArg::Enforce) => Mode::Enforce,
        Some(ModeArg::Monitor) => Mode::Monitor,
        None => config.mode,
    };
    let action = match args.action {
        Some(ActionArg::Drop) => Action::Drop,
        Some(ActionArg::Reset) => Action::Reset,
        None => config.action,
    };
    for iface in &args.ifaces {
        if !interface_exists(iface) {
            bail!("interface {iface} does not exist");
        }
    }
    let state = StateDir::open(state_dir)?;
    let _daemon_lock = state.lock_daemon()?;
    let allow = state
        .load_changes()?
        .apply(&config.allow, &state.changes_path())?;
    let listener = TcpListener::bind(args.metrics_listen)
        .await
        .with_context(|| format!("cannot listen for metrics on {}", args.metrics_listen))?;

    // Handled from before the kernel is touched, so that a signal at any
    // point after that ends in the cleanup below rather than a plain exit.
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let hook = match (args.attach, args.xdp_mode) {
        (AttachArg::Xdp, XdpModeArg::Native) => Hook::Xdp(XdpMode::Driver),
        (AttachArg::Xdp, XdpModeArg::Skb) => Hook::Xdp(XdpMode::Skb),
        (AttachArg::Tc, _) => Hook::Tc,
    };
    let (mut filter, logger) = Filter::load(hook)?;
    filter.configure(
        FilterConfig::new(mode, config.on_incomplete).with_action(action),
        config.ports.iter().copied(),
        &allow,
    )?;
    filter.pin(pin_dir)?;
    for iface in &args.ifaces {
        filter.attach(iface)?;
    }
    log::info!(
        "cors-filter attached to {} ({:?}), {:?} mode, action {:?}, ports {:?}, {} allowed origin(s), maps pinned in {}",
        args.ifaces.join(", "),
        hook,
        mode,
        action,
        config.ports,
        allow.len(),
        pin_dir.display()
    );

    // SAFETY: the logger owns the ring buffer's fd, which stays open and the
    // same for as long as the logger lives, and the AsyncFd owns the logger.
    let mut logs = unsafe { AsyncFd::register(logger) }
        .map_err(|e| anyhow::anyhow!("cannot poll the eBPF log ring buffer: {e}"))?;
    let mut metrics = tokio::spawn(metrics::serve(listener, pin_dir.to_owned()));
    let outcome = loop {
        tokio::select! {
            _ = sigterm.recv() => break Ok("SIGTERM"),
            _ = sigint.recv() => break Ok("SIGINT"),
            served = &mut metrics => break match served {
                Ok(Err(e)) => Err(e),
                Ok(Ok(())) => Err(anyhow::anyhow!("metrics server stopped")),
                Err(e) => Err(e).context("metrics server panicked"),
            },
            ready = logs.readable_mut() => {
                let mut guard = ready.context("eBPF log ring buffer failed")?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
        }
    };
    drop(filter);
    let signal = outcome?;
    log::info!("{signal}: detached and unpinned, exiting");
    Ok(())
}
