//! README.md's "Layout" section names every module of the workspace: a
//! module added without a line there is the section going out of date,
//! which no reader notices until it misleads one.
//!
//! The rule: each crate has one item in the section, a line starting with
//! ``- `CRATE/` ``. Every `.rs` file under `CRATE/src/` is a module named by
//! its file stem (`exit.rs` is `exit`; `mod.rs` takes its directory's name;
//! `lib.rs` and `main.rs` are the crate itself and are exempt). A module is
//! listed when a backticked span in its crate's item, with one trailing
//! `.rs` or `/` taken off, is its name or ends in `/` and its name: `exit`,
//! `exit.rs`, `denials/`, `run/reloads.rs` all count. The test binaries of
//! `tests/*.rs` are outside `tests/src/` and not checked.

use std::{
    fs,
    path::{Path, PathBuf},
};

/// The crates whose `src/` the section describes, by directory.
const CRATES: [&str; 7] = [
    "cors-filter-ebpf",
    "cors-filter-common",
    "cors-filter-user",
    "cors-filter-package",
    "tests",
    "bench",
    "xtask",
];

/// The text of README's "## Layout" section, up to the next "## ".
fn layout_section(readme: &str) -> &str {
    let start = readme
        .find("\n## Layout\n")
        .expect("README.md has a \"## Layout\" section");
    let body = &readme[start + 1..];
    let end = body[3..].find("\n## ").map_or(body.len(), |i| i + 3);
    &body[..end]
}

/// The item of `krate` in the section: from its ``- `krate/` `` line to the
/// next top-level item, lines joined so that spans may wrap.
fn crate_item(section: &str, krate: &str) -> Option<String> {
    let head = format!("- `{krate}/`");
    let mut lines = section.lines().skip_while(|l| !l.starts_with(&head));
    let first = lines.next()?;
    let rest = lines.take_while(|l| !l.starts_with("- "));
    Some(
        std::iter::once(first)
            .chain(rest)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// The backticked spans of `text`.
fn spans(text: &str) -> impl Iterator<Item = &str> {
    text.split('`').skip(1).step_by(2)
}

/// Whether `span` names module `module` (see the module doc for the rule).
fn names(span: &str, module: &str) -> bool {
    let span = span
        .strip_suffix(".rs")
        .or_else(|| span.strip_suffix('/'))
        .unwrap_or(span);
    span == module
        || span
            .strip_suffix(module)
            .is_some_and(|parent| parent.ends_with('/'))
}

/// The module names of the `.rs` files under `dir`, recursively, each with
/// its path for the failure message.
fn modules(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            found.extend(modules(&path));
            continue;
        }
        let Some(stem) = path
            .extension()
            .filter(|e| *e == "rs")
            .and(path.file_stem())
        else {
            continue;
        };
        let name = match stem.to_str().expect("UTF-8 file names") {
            "lib" | "main" => continue,
            "mod" => dir
                .file_name()
                .expect("a directory")
                .to_string_lossy()
                .into_owned(),
            stem => stem.to_owned(),
        };
        found.push((name, path));
    }
    found
}

/// The module files of the workspace at `root` that `readme` does not name.
fn unlisted(root: &Path, readme: &str) -> Vec<String> {
    let section = layout_section(readme);
    let mut missing = Vec::new();
    for krate in CRATES {
        let Some(item) = crate_item(section, krate) else {
            missing.push(format!("{krate}/ (no item of its own)"));
            continue;
        };
        for (module, path) in modules(&root.join(krate).join("src")) {
            if !spans(&item).any(|span| names(span, &module)) {
                let path = path.strip_prefix(root).unwrap_or(&path);
                missing.push(path.display().to_string());
            }
        }
    }
    missing.sort();
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_module_is_in_the_readme_layout() {
        let root = crate::workspace_root();
        let readme = fs::read_to_string(root.join("README.md")).expect("README.md");
        let missing = unlisted(&root, &readme);
        assert!(
            missing.is_empty(),
            "README.md's \"## Layout\" does not name, in its crate's item: {}",
            missing.join(", ")
        );
    }

    #[test]
    fn a_span_names_a_module_by_stem_file_or_path() {
        for span in ["exit", "exit.rs", "exit/", "run/exit.rs", "a/b/exit"] {
            assert!(names(span, "exit"), "{span}");
        }
        for span in ["exits", "my_exit.rs", "exit.rs/", "exit/x.rs"] {
            assert!(!names(span, "exit"), "{span}");
        }
    }
}
