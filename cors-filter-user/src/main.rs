//! `cors-filter`: loads the XDP program that drops disallowed CORS
//! preflights, and edits or reads the state of a running one.

use std::process::ExitCode;

use clap::Parser as _;

use cors_filter_user::{
    capabilities,
    cli::{AllowAction, Cli, Command},
    commands::allow,
    commands::detach,
    commands::reload,
    commands::replay,
    commands::run,
    commands::stats,
    root_only,
};

#[tokio::main]
async fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    // Before anything is created: files and pins are root-only.
    root_only::restrict_umask();
    let requirement = capabilities::requirement(&cli);
    if let Err(e) = capabilities::check(&requirement) {
        eprintln!("cors-filter: error: {e:#}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Run(args) => run::run(args, &cli.pin_dir, &cli.state_dir).await,
        Command::Allow { action } => match action {
            AllowAction::Add { origin, methods } => {
                allow::add(&cli.pin_dir, &cli.state_dir, &origin, methods.as_deref())
            }
            AllowAction::Remove { origin } => {
                allow::edit(&cli.pin_dir, &cli.state_dir, allow::Change::Remove, &origin)
            }
            AllowAction::List => allow::list(&cli.pin_dir, &cli.state_dir),
        },
        Command::Reload => {
            reload::reload(&cli.pin_dir, &cli.state_dir).map(|done| println!("{done}"))
        }
        Command::Detach { iface, all: _ } => detach::detach(&cli.pin_dir, iface.as_deref()),
        Command::Replay {
            config,
            replies,
            pcap,
        } => replay::replay(&config, &pcap, replies.as_deref()),
        Command::Stats { json, top } => stats::stats(&cli.pin_dir, &cli.state_dir, json, top),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cors-filter: error: {e:#}");
            if let Some(hint) = capabilities::explain(&e, &requirement) {
                eprintln!("cors-filter: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}
