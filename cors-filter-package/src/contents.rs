//! Every file the package installs: one table, read by the staging and by
//! the conffiles list (the files under `/etc`).

use crate::generated::{self, COMPLETIONS, MAN_SECTION};

/// Where a file's bytes come from.
#[derive(Clone, Copy, Debug)]
pub enum Source {
    /// The `cors-filter` binary given to the build.
    Binary,
    /// A file of `packaging/`, as it is.
    Packaging(&'static str),
    /// A file of the workspace root, gzip-compressed (`gzip -9n`), as
    /// Debian ships long documentation.
    RootGzipped(&'static str),
}

/// One installed file: its path without the leading `/`, its mode.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub path: &'static str,
    pub source: Source,
    pub mode: u32,
}

const fn file(path: &'static str, source: Source) -> Entry {
    Entry {
        path,
        source,
        mode: 0o644,
    }
}

/// Debian's place for the package's documentation.
pub const DOC_DIR: &str = "usr/share/doc/cors-filter";

/// The files copied into the package; the man pages and completions,
/// generated, come on top ([`generated`]).
pub const FILES: &[Entry] = &[
    Entry {
        path: BINARY,
        source: Source::Binary,
        mode: 0o755,
    },
    // bookworm's place for a package's units (merged /usr maps it to
    // /usr/lib/systemd/system).
    file(
        "lib/systemd/system/cors-filter.service",
        Source::Packaging("cors-filter.service"),
    ),
    file(
        "etc/cors-filter.toml",
        Source::Packaging("cors-filter.toml"),
    ),
    file(
        "etc/default/cors-filter",
        Source::Packaging("cors-filter.default"),
    ),
    file(
        "usr/share/doc/cors-filter/copyright",
        Source::Packaging("debian/copyright"),
    ),
    file(
        "usr/share/doc/cors-filter/README.md.gz",
        Source::RootGzipped("README.md"),
    ),
    file(
        "usr/share/doc/cors-filter/examples/cors-filter.rules.yml",
        Source::Packaging("monitoring/cors-filter.rules.yml"),
    ),
    file(
        "usr/share/doc/cors-filter/examples/cors-filter.rules.test.yml",
        Source::Packaging("monitoring/cors-filter.rules.test.yml"),
    ),
    file(
        "usr/share/doc/cors-filter/examples/grafana-dashboard.json",
        Source::Packaging("monitoring/grafana-dashboard.json"),
    ),
    file(
        "usr/share/doc/cors-filter/examples/daemonset.yaml",
        Source::Packaging("kubernetes/daemonset.yaml"),
    ),
];

/// The installed binary, as a path of the package (the unit runs it as
/// `/usr/bin/cors-filter`).
pub const BINARY: &str = "usr/bin/cors-filter";

/// The example config the package installs, which must load.
pub const EXAMPLE_CONFIG: &str = "cors-filter.toml";

/// The maintainer scripts, in `packaging/debian/`.
pub const MAINTAINER_SCRIPTS: [&str; 3] = ["postinst", "prerm", "postrm"];

/// Conffiles: every file under `/etc` (dpkg keeps the admin's edits on
/// upgrade and removes them only on purge).
pub fn conffiles() -> impl Iterator<Item = String> {
    FILES
        .iter()
        .filter(|e| e.path.starts_with("etc/"))
        .map(|e| format!("/{}", e.path))
}

/// Where a generated man page goes (compressed, with `.gz`).
pub fn man_page_path(name: &str) -> String {
    format!("usr/share/man/man{MAN_SECTION}/{name}.gz")
}

/// Where each shell's completion goes.
pub fn completion_paths() -> impl Iterator<Item = (clap_complete::Shell, String)> {
    COMPLETIONS
        .into_iter()
        .map(|(shell, dir, name)| (shell, format!("{dir}/{name}")))
}

/// A generated file, where the package installs it.
pub struct GeneratedFile {
    pub path: String,
    pub text: Vec<u8>,
    /// Installed gzip-compressed (man pages).
    pub gzip: bool,
}

/// The generated files a package holds: man pages, then completions.
pub fn generated_files() -> anyhow::Result<Vec<GeneratedFile>> {
    let mut files = Vec::new();
    for page in generated::man_pages()? {
        files.push(GeneratedFile {
            path: man_page_path(&page.name),
            text: page.text,
            gzip: true,
        });
    }
    for (shell, path) in completion_paths() {
        files.push(GeneratedFile {
            path,
            text: generated::completion(shell),
            gzip: false,
        });
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conffiles_are_the_config_and_the_defaults() {
        assert_eq!(
            conffiles().collect::<Vec<_>>(),
            ["/etc/cors-filter.toml", "/etc/default/cors-filter"]
        );
    }

    #[test]
    fn the_example_config_loads() {
        let path = crate::packaging_dir().join(EXAMPLE_CONFIG);
        cors_filter_user::config::Config::load(&path).unwrap();
    }

    #[test]
    fn every_packaged_file_exists() {
        for entry in FILES {
            let path = match entry.source {
                Source::Binary => continue,
                Source::Packaging(p) => crate::packaging_dir().join(p),
                Source::RootGzipped(p) => crate::packaging_dir().join("..").join(p),
            };
            assert!(path.is_file(), "{} for {}", path.display(), entry.path);
        }
    }
}
