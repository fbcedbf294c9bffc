//! Man pages and shell completions, generated from the CLI definition
//! (`cors_filter_user::cli::Cli`, through `clap::CommandFactory`): never
//! written by hand, so they say what the binary accepts.

use anyhow::{Context, Result};
use clap::CommandFactory as _;
use clap_complete::Shell;
use cors_filter_user::cli::Cli;

use crate::PACKAGE;

/// One generated file: its name and text.
pub struct Generated {
    pub name: String,
    pub text: Vec<u8>,
}

/// The manual's section: user commands.
pub const MAN_SECTION: &str = "1";

/// `cors-filter.1`, and one page per subcommand (`cors-filter-run.1`,
/// `cors-filter-allow-add.1`, ...), as roff.
pub fn man_pages() -> Result<Vec<Generated>> {
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    let version = command.get_version().unwrap_or_default().to_owned();
    let mut pages = Vec::new();
    collect_man_pages(&command, &format!("{PACKAGE} {version}"), &mut pages)?;
    Ok(pages)
}

fn collect_man_pages(
    command: &clap::Command,
    source: &str,
    pages: &mut Vec<Generated>,
) -> Result<()> {
    let man = clap_mangen::Man::new(command.clone())
        .section(MAN_SECTION)
        .source(source.to_owned())
        .manual("cors-filter manual");
    let mut text = Vec::new();
    man.render(&mut text)
        .with_context(|| format!("cannot render the man page {}", man.get_filename()))?;
    pages.push(Generated {
        name: man.get_filename(),
        text,
    });
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect_man_pages(sub, source, pages)?;
    }
    Ok(())
}

/// The shells the package ships completions for, with the file name each
/// expects and Debian's directory for it.
pub const COMPLETIONS: [(Shell, &str, &str); 3] = [
    (
        Shell::Bash,
        "usr/share/bash-completion/completions",
        PACKAGE,
    ),
    (
        Shell::Zsh,
        "usr/share/zsh/vendor-completions",
        "_cors-filter",
    ),
    (
        Shell::Fish,
        "usr/share/fish/vendor_completions.d",
        "cors-filter.fish",
    ),
];

/// The completion script for `shell`.
pub fn completion(shell: Shell) -> Vec<u8> {
    let mut text = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), PACKAGE, &mut text);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_per_subcommand_each_naming_its_command() {
        let pages = man_pages().unwrap();
        let names: Vec<&str> = pages.iter().map(|p| p.name.as_str()).collect();
        for name in [
            "cors-filter.1",
            "cors-filter-run.1",
            "cors-filter-replay.1",
            "cors-filter-allow-add.1",
        ] {
            assert!(names.contains(&name), "no {name} in {names:?}");
        }
        let run = pages
            .iter()
            .find(|p| p.name == "cors-filter-run.1")
            .unwrap();
        let run = String::from_utf8_lossy(&run.text);
        assert!(run.contains("metrics\\-listen"), "{run}");
    }

    #[test]
    fn completions_know_the_subcommands() {
        for (shell, _, _) in COMPLETIONS {
            let text = String::from_utf8(completion(shell)).unwrap();
            assert!(text.contains("replay"), "{shell}: {text}");
        }
    }
}
