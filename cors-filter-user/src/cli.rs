//! Command-line interface: its contract is README.md ("Using it", and
//! "Restarts, reloads, detaching" for `run`, `reload` and `detach`).

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand, ValueEnum};
use cors_filter_common::{Action, Mode};

#[derive(Parser, Debug)]
#[command(
    name = "cors-filter",
    version,
    about = "Drops disallowed CORS preflights and cross-origin state changes in the kernel, with XDP or TC"
)]
pub struct Cli {
    /// bpffs directory where the filter pins its maps and links.
    #[arg(
        long,
        global = true,
        env = "CORS_FILTER_PIN_DIR",
        default_value = "/sys/fs/bpf/cors-filter"
    )]
    pub pin_dir: PathBuf,
    /// Directory holding the filter's state on disk: the allowlist changes
    /// made with `allow`, what `run` was started with (for `reload`), the
    /// per-origin denial counts, and the locks.
    #[arg(
        long,
        global = true,
        env = "CORS_FILTER_STATE_DIR",
        default_value = "/var/lib/cors-filter"
    )]
    pub state_dir: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Load the filter, attach it (or adopt the one pinned by an earlier
    /// run) and serve metrics until SIGINT or SIGTERM. SIGHUP reloads the
    /// config. The filter stays attached after the daemon exits, unless
    /// `--detach-on-exit`.
    Run(RunArgs),
    /// Re-read the config file of the running filter and switch to it
    /// atomically; a config with an error is refused and changes nothing.
    Reload,
    /// Take the filter off an interface, or off all of them and remove its
    /// pins. The daemon must be stopped first.
    #[command(group = clap::ArgGroup::new("what").required(true))]
    Detach {
        /// The interface to take the filter off.
        #[arg(long, value_name = "IF", group = "what")]
        iface: Option<String>,
        /// Every interface; the maps (counters included) are removed too.
        #[arg(long, group = "what")]
        all: bool,
    },
    /// Change or show the allowlist of the running filter.
    Allow {
        #[command(subcommand)]
        action: AllowAction,
    },
    /// Show the filter's counters, summed over CPUs, and the origins with
    /// the most denials (saved in the state directory by `run`).
    Stats {
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// How many origins to show one by one; the rest are summed as other.
        #[arg(long, default_value_t = 10, value_name = "N")]
        top: usize,
    },
    /// Show whether the filter is on, from its pins and state alone (no
    /// daemon needed): per interface the hook, XDP mode, link and program
    /// ids; the policy generation, mode and action; the config `run` was
    /// started with; whether the daemon is alive; how full the connection
    /// maps are; and the local `allow` edits that differ from the config.
    Status {
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Validate a config file as `run` and `reload` would, and print the
    /// policy it makes, normalised. Needs no privilege, no kernel and no
    /// running filter; exits with the config-error code if it is invalid.
    Check {
        /// TOML configuration file.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run the real XDP program on every frame of a capture (pcap or pcapng,
    /// Ethernet) with BPF_PROG_TEST_RUN, attached nowhere, and print one JSON
    /// object per frame:
    /// {"index":N,"verdict":"pass"|"drop"|"reset","reason":COUNTER}, N
    /// counting from 0, COUNTER the counter the frame's outcome bumped (its
    /// detail counter where it has one: malformed, method_deny, cross_site).
    Replay {
        /// TOML configuration file: ports, allowlist, protect_unsafe_methods,
        /// mode, max_head_bytes, on_oversized_head, action, and the sizes of
        /// the connection maps.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Write the frames the program sends back (the resets, with
        /// `action = "reset"`) to FILE, a pcap capture: one record per
        /// `reset` line, in the same order.
        #[arg(long, value_name = "FILE")]
        replies: Option<PathBuf>,
        /// The capture.
        pcap: PathBuf,
    },
}

impl Command {
    /// It prints JSON (`--json`): its errors are printed as JSON too, on
    /// stdout (see `exit::error_json`).
    pub fn wants_json(&self) -> bool {
        matches!(
            self,
            Command::Stats { json: true, .. }
                | Command::Status { json: true }
                | Command::Check { json: true, .. }
                | Command::Allow {
                    action: AllowAction::List { json: true, .. }
                }
        )
    }
}

#[derive(Subcommand, Debug)]
pub enum AllowAction {
    /// Allow ORIGIN (`https://app.example.com`, `https://*.example.com`,
    /// `null`), with any method or only those given; an origin allowed
    /// already gets the new methods.
    Add {
        origin: String,
        /// The only methods the origin may use, comma-separated
        /// (`GET,POST`): a preflight asking for another, or an unsafe
        /// request with another, is denied. Methods are case-sensitive.
        #[arg(long, value_name = "METHODS", value_delimiter = ',')]
        methods: Option<Vec<String>>,
        /// Allow a wildcard over a public suffix (`https://*.github.io`):
        /// every site anyone registers there. Refused without it.
        #[arg(long)]
        force_public_suffix: bool,
    },
    /// Stop allowing ORIGIN.
    Remove { origin: String },
    /// Print the allowed origins, one per line.
    List {
        /// One JSON array: `origin`, `methods` (null: every method),
        /// `allowed`, and with --source `source`.
        #[arg(long)]
        json: bool,
        /// Show where each entry comes from: `config`, `local` (`allow
        /// add`), or `local-removal` (listed by the config, removed with
        /// `allow remove`, not allowed).
        #[arg(long)]
        source: bool,
    },
    /// Drop every local change made with `allow add` and `allow remove`:
    /// the running filter switches atomically to exactly the config's
    /// allowlist. Prints what was dropped.
    Reset,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Interface to attach to; repeat for several.
    #[arg(long = "iface", required = true, value_name = "IF")]
    pub ifaces: Vec<String>,
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Overrides the config file's `mode`.
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Overrides the config file's `action`: `drop` discards what is not let
    /// through; `reset` also answers the client with a TCP reset, so that
    /// it fails at once instead of retransmitting until it times out.
    #[arg(long, value_enum)]
    pub action: Option<Action>,
    /// Attachment point: XDP, or TC ingress where XDP cannot run.
    #[arg(long, value_enum, default_value_t = AttachArg::Xdp)]
    pub attach: AttachArg,
    /// XDP attach mode: `native` runs in the driver; `skb` (generic XDP) works
    /// on any interface, later in the receive path. Ignored with `--attach tc`.
    #[arg(long, value_enum, default_value_t = XdpModeArg::Native)]
    pub xdp_mode: XdpModeArg,
    /// On SIGTERM or SIGINT, detach from the interfaces given with --iface
    /// (and remove the pins once no interface is left). Without it the
    /// filter keeps enforcing after the daemon exits.
    #[arg(long)]
    pub detach_on_exit: bool,
    /// Address of the Prometheus `/metrics` endpoint: loopback by default;
    /// any other address exposes the counters beyond the host (and says so).
    #[arg(long, default_value = "127.0.0.1:9186")]
    pub metrics_listen: SocketAddr,
    /// Origins exported one by one in `cors_filter_denied_by_origin_total`
    /// (the most denied); the others are summed under origin="other".
    #[arg(long, default_value_t = 20, value_name = "N",
          value_parser = clap::value_parser!(u16).range(0..=1000))]
    pub metrics_top_origins: u16,
    /// Do not watch the config file: without it, a change to the file (in
    /// place, renamed over, or a Kubernetes ConfigMap's symlink swap) is
    /// reloaded as SIGHUP does, within a second.
    #[arg(long)]
    pub no_watch_config: bool,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachArg {
    Xdp,
    Tc,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpModeArg {
    Native,
    Skb,
}
