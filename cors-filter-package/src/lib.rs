//! cors-filter's Debian package, built by `cargo xtask package`: a staged
//! tree handed to `dpkg-deb --build` (nothing to install beyond dpkg-dev,
//! for `dpkg-shlibdeps`).
//!
//! - [`contents`]: every file the package installs, where from, with
//!   which mode; the conffiles are the ones under `/etc`.
//! - [`generated`]: the man pages and shell completions, generated from
//!   the CLI definition (`cors_filter_user::cli::Cli`), so they cannot
//!   drift from it.
//! - [`deb`]: the staging, `DEBIAN/` (control, conffiles, md5sums, the
//!   maintainer scripts of `packaging/debian/`) and the archive.

pub mod contents;
pub mod deb;
pub mod generated;

use std::path::{Path, PathBuf};

/// The package's name, and the name of the binary, the unit and its files.
pub const PACKAGE: &str = "cors-filter";

/// The source tree's `packaging/` directory: the unit, the example config,
/// the maintainer scripts, the monitoring and Kubernetes examples.
pub fn packaging_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging")
}

#[cfg(test)]
mod tests {
    //! The Kubernetes example against the real CLI and config parser: a
    //! DaemonSet whose arguments `run` refuses, or whose ConfigMap does
    //! not load, fails here rather than on a cluster.

    use clap::Parser as _;
    use cors_filter_user::{
        cli::{Cli, Command},
        config::Config,
    };

    fn daemonset() -> String {
        let path = super::packaging_dir().join("kubernetes/daemonset.yaml");
        std::fs::read_to_string(&path).unwrap()
    }

    /// The items of the YAML block list under `key:` (at any depth).
    fn list_under(text: &str, key: &str) -> Vec<String> {
        let mut lines = text.lines().skip_while(|l| l.trim() != key).skip(1);
        let mut items = Vec::new();
        while let Some(line) = lines.next().map(str::trim) {
            if line.starts_with('#') {
                continue;
            }
            let Some(item) = line.strip_prefix("- ") else {
                break;
            };
            items.push(item.to_owned());
        }
        items
    }

    #[test]
    fn the_daemonset_runs_the_cli_as_it_parses() {
        let text = daemonset();
        let args = list_under(&text, "args:");
        assert!(!args.is_empty(), "no args in the DaemonSet");
        // Kubernetes expands $(NODE_IP) from the pod's environment.
        let argv = std::iter::once("cors-filter".to_owned())
            .chain(args.iter().map(|a| a.replace("$(NODE_IP)", "192.0.2.10")));
        let cli = Cli::try_parse_from(argv).unwrap();
        let Command::Run(run) = cli.command else {
            panic!("the DaemonSet does not run `run`: {args:?}");
        };
        assert_eq!(run.metrics_listen.to_string(), "192.0.2.10:9186");
        assert!(text.contains(r#"add: ["BPF", "NET_ADMIN", "PERFMON"]"#));
        assert!(text.contains(r#"drop: ["ALL"]"#));
        assert!(text.contains("hostNetwork: true"));
    }

    #[test]
    fn the_daemonset_config_map_loads() {
        let text = daemonset();
        let block: Vec<&str> = text
            .lines()
            .skip_while(|l| l.trim() != "cors-filter.toml: |")
            .skip(1)
            .take_while(|l| l.starts_with("    "))
            .map(|l| &l[4..])
            .collect();
        assert!(!block.is_empty(), "no cors-filter.toml in the ConfigMap");
        let config = block.join("\n");
        Config::parse(std::path::Path::new("daemonset.yaml"), &config).unwrap();
        // And the container reads it where the ConfigMap is mounted.
        assert!(text.contains("--config=/etc/cors-filter/cors-filter.toml"));
        assert!(text.contains("mountPath: /etc/cors-filter\n"));
    }
}
