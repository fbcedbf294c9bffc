//! The code of the workspace's Rust sources, for tests that check what the
//! code names (a counter the program bumps, an outcome some line makes).

use std::{fs, path::Path, string::String, vec};

/// The code of every `.rs` file under `dirs` (relative to this crate's
/// directory) for which `keep` holds: comment lines left out, and each
/// file cut at its first `#[cfg(test)]`, so that tests do not count.
pub fn rust_code(dirs: &[&str], keep: impl Fn(&Path) -> bool) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut code = String::new();
    let mut dirs: vec::Vec<_> = dirs.iter().map(|dir| root.join(dir)).collect();
    assert!(
        dirs.iter().all(|dir| dir.is_dir()),
        "the sources are not where this test looks: {dirs:?}"
    );
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") && keep(&path) {
                for line in fs::read_to_string(&path).unwrap().lines() {
                    if line.trim_start().starts_with("#[cfg(test)]") {
                        break;
                    }
                    if !line.trim_start().starts_with("//") {
                        code.push_str(line);
                        code.push('\n');
                    }
                }
            }
        }
    }
    code
}

/// Whether `code` names `path` (`Counter::Dropped`) as a whole path: not
/// as the start of a longer name (`Counter::DroppedSomething`).
pub fn names(code: &str, path: &str) -> bool {
    code.match_indices(path).any(|(at, _)| {
        !code[at + path.len()..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
    })
}
