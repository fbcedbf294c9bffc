//! `cors-filter`: loads the XDP program that drops disallowed CORS
//! preflights, and edits or reads the state of a running one.

use std::process::ExitCode;

use clap::Parser as _;

use cors_filter_user::{
    capabilities::{self, Requirement},
    cli::{AllowAction, Cli, Command},
    commands::allow,
    commands::check,
    commands::detach,
    commands::reload,
    commands::replay,
    commands::run,
    commands::stats,
    commands::status,
    exit::{self, Kind},
    root_only,
    systemd::journal,
};

#[tokio::main]
async fn main() -> ExitCode {
    journal::init_logger();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    // Before anything is created: files and pins are root-only.
    root_only::restrict_umask();
    let requirement = capabilities::requirement(&cli);
    let json = cli.command.wants_json();
    if let Err(e) = capabilities::check(&requirement) {
        return failed(&e, json, &requirement);
    }
    let result = match cli.command {
        Command::Run(args) => run::run(args, &cli.pin_dir, &cli.state_dir).await,
        Command::Allow { action } => match action {
            AllowAction::Add {
                origin,
                methods,
                force_public_suffix,
            } => allow::add(
                &cli.pin_dir,
                &cli.state_dir,
                &origin,
                methods.as_deref(),
                force_public_suffix,
            ),
            AllowAction::Remove { origin } => {
                allow::edit(&cli.pin_dir, &cli.state_dir, allow::Change::Remove, &origin)
            }
            AllowAction::List { json, source } => {
                allow::list(&cli.pin_dir, &cli.state_dir, json, source)
            }
            AllowAction::Reset => allow::reset(&cli.pin_dir, &cli.state_dir),
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
        Command::Status { json } => status::status(&cli.pin_dir, &cli.state_dir, json),
        Command::Check { config, json } => check::check(&config, json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => failed(&e, json, &requirement),
    }
}

/// Prints `error` (as JSON on stdout for a `--json` command, else on
/// stderr) and returns its exit code (see `exit`).
fn failed(error: &anyhow::Error, json: bool, requirement: &Requirement) -> ExitCode {
    let hint = capabilities::explain(error, requirement);
    // A permission error in a process that lacks what the command needs
    // (the check was skipped) is a privilege error, whatever refused it.
    let kind = if hint.is_some() {
        Kind::Privilege
    } else {
        exit::classify(error)
    };
    if json {
        let message = match &hint {
            Some(hint) => format!("{error:#}; {hint}"),
            None => format!("{error:#}"),
        };
        println!("{}", exit::error_json(&message, kind));
    } else {
        journal::print_error(&format!("cors-filter: error: {error:#}"));
        if let Some(hint) = hint {
            journal::print_error(&format!("cors-filter: {hint}"));
        }
    }
    ExitCode::from(kind.code())
}

/// clap's refusal of the command line: printed by clap (exit code 2,
/// `Kind::Usage`), or as JSON when `--json` is among the arguments.
fn usage_error(error: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    let shown = matches!(
        error.kind(),
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
    );
    if !shown && std::env::args_os().any(|a| a == "--json") {
        let message = error.render().to_string();
        println!("{}", exit::error_json(message.trim_end(), Kind::Usage));
        return ExitCode::from(Kind::Usage.code());
    }
    error.exit()
}
