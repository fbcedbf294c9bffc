//! `cors-filter`: loads the XDP program that drops disallowed CORS
//! preflights, and edits or reads the state of a running one.

mod allow;
mod allowlist;
mod capture;
mod cli;
mod config;
mod filter;
mod metrics;
mod pins;
mod replay;
mod reply_capture;
mod run;
mod state;
mod testrun;

use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::{AllowAction, Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(args, &cli.pin_dir, &cli.state_dir).await,
        Command::Allow { action } => match action {
            AllowAction::Add { origin } => {
                allow::edit(&cli.pin_dir, &cli.state_dir, allow::Change::Add, &origin)
            }
            AllowAction::Remove { origin } => {
                allow::edit(&cli.pin_dir, &cli.state_dir, allow::Change::Remove, &origin)
            }
            AllowAction::List => allow::list(&cli.pin_dir),
        },
        Command::Replay {
            config,
            replies,
            pcap,
        } => replay::replay(&config, &pcap, replies.as_deref()),
        Command::Stats { json } => metrics::Snapshot::read(&cli.pin_dir).map(|s| {
            if json {
                println!("{}", s.json());
            } else {
                print!("{}", s.table());
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cors-filter: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
