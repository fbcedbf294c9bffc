//! The exit codes of `cors-filter`, one table for the whole CLI (README.md,
//! "Exit codes", lists it), and how an error is classified into one.
//!
//! An error is classified by a typed marker in its `anyhow` chain, put
//! there by the code that knows the class ([`Classify::kind`]), never by
//! its message. The marker keeps the message as it was: it takes the
//! place of the error's outermost layer, shows that layer's text and
//! hands on its causes.

use std::{error::Error as StdError, fmt};

/// Why a command failed, as its exit code says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Anything else: an I/O error, a corrupt state file, a lock held.
    Other,
    /// The command line is wrong: clap's own errors (an unknown option, a
    /// missing argument). clap exits with 2 for them itself.
    Usage,
    /// The configuration is invalid: the config file (its syntax, a value,
    /// a map size that differs from the pinned map's), or a value given on
    /// the command line for it (an interface that does not exist, an
    /// origin or method `allow add` refuses).
    Config,
    /// No filter is running where one is needed: no pins in the pin
    /// directory, or no record of what `run` was started with.
    NotRunning,
    /// This process lacks a capability, or may not open a path (the pins
    /// and the state are root-only).
    Privilege,
    /// The kernel refused the program or its maps: the verifier, a map
    /// the kernel would not create, an attach the interface or driver
    /// refuses (native XDP where the driver has none).
    KernelRefused,
    /// The pins are of a newer layout than this version reads (a
    /// downgrade): refused, the filter left as it was, attached in its
    /// mode. Starting again does not help; see README, "Upgrades and
    /// downgrades".
    NewerLayout,
}

impl Kind {
    /// Every kind, in the order of their codes.
    pub const ALL: [Kind; 7] = [
        Kind::Other,
        Kind::Usage,
        Kind::Config,
        Kind::NotRunning,
        Kind::Privilege,
        Kind::KernelRefused,
        Kind::NewerLayout,
    ];

    /// The process exit code. 0 is success.
    pub const fn code(self) -> u8 {
        match self {
            Kind::Other => 1,
            Kind::Usage => 2,
            Kind::Config => 3,
            Kind::NotRunning => 4,
            Kind::Privilege => 5,
            Kind::KernelRefused => 6,
            Kind::NewerLayout => 7,
        }
    }

    /// The name `--json` errors give it (`"kind"`).
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Other => "other",
            Kind::Usage => "usage",
            Kind::Config => "config",
            Kind::NotRunning => "not_running",
            Kind::Privilege => "privilege",
            Kind::KernelRefused => "kernel_refused",
            Kind::NewerLayout => "newer_layout",
        }
    }
}

/// clap's exit code for usage errors, which [`Kind::Usage`] keeps.
const CLAP_USAGE_CODE: u8 = 2;

// The codes are distinct, none is success, and usage is clap's.
const _: () = {
    let mut i = 0;
    while i < Kind::ALL.len() {
        assert!(Kind::ALL[i].code() == i as u8 + 1);
        i += 1;
    }
    assert!(Kind::Usage.code() == CLAP_USAGE_CODE);
};

/// The marker: an error of `kind`, whose text and causes are `error`'s.
struct Classified {
    kind: Kind,
    error: anyhow::Error,
}

impl fmt::Display for Classified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The outermost layer only: its causes follow in the chain.
        fmt::Display::fmt(&*self.error, f)
    }
}

impl fmt::Debug for Classified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} ({})", self.error, self.kind.name())
    }
}

impl StdError for Classified {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.error.source()
    }
}

/// Marks `error` as of `kind`; its text stays the same.
pub fn mark(error: impl Into<anyhow::Error>, kind: Kind) -> anyhow::Error {
    anyhow::Error::new(Classified {
        kind,
        error: error.into(),
    })
}

/// [`mark`] for results: `parse_entry(text).kind(Kind::Config)`.
pub trait Classify<T> {
    fn kind(self, kind: Kind) -> anyhow::Result<T>;
}

impl<T, E: Into<anyhow::Error>> Classify<T> for Result<T, E> {
    fn kind(self, kind: Kind) -> anyhow::Result<T> {
        self.map_err(|e| mark(e, kind))
    }
}

/// The kind of `error`: that of the innermost marker in its chain (the
/// code closest to the failure knows best), [`Kind::Other`] without one.
pub fn classify(error: &anyhow::Error) -> Kind {
    error
        .chain()
        .filter_map(|cause| cause.downcast_ref::<Classified>())
        .last()
        .map_or(Kind::Other, |c| c.kind)
}

/// What a `--json` command prints on stdout when it fails:
/// `{"error": MESSAGE, "kind": KIND, "exit_code": CODE}`.
pub fn error_json(message: &str, kind: Kind) -> serde_json::Value {
    serde_json::json!({
        "error": message,
        "kind": kind.name(),
        "exit_code": kind.code(),
    })
}

#[cfg(test)]
mod tests {
    use anyhow::{Context as _, anyhow};

    use super::*;

    #[test]
    fn unmarked_errors_are_other() {
        let e = anyhow!("disk full").context("cannot save");
        assert_eq!(classify(&e), Kind::Other);
        assert_eq!(classify(&e).code(), 1);
    }

    #[test]
    fn the_marker_is_found_under_context_and_keeps_the_text() {
        let inner = std::io::Error::from_raw_os_error(libc::ENOENT);
        let e = Err::<(), _>(inner)
            .context("cannot read config file /etc/cf.toml")
            .kind(Kind::Config)
            .context("reload refused; the running policy is unchanged")
            .unwrap_err();
        assert_eq!(classify(&e), Kind::Config);
        assert_eq!(
            format!("{e:#}"),
            "reload refused; the running policy is unchanged: cannot read config file \
             /etc/cf.toml: No such file or directory (os error 2)"
        );
        // The causes under the marker are still reachable by type.
        assert!(
            e.chain()
                .any(|c| c.downcast_ref::<std::io::Error>().is_some())
        );
    }

    #[test]
    fn the_innermost_marker_wins() {
        let e = mark(
            mark(anyhow!("verifier says no"), Kind::KernelRefused).context("cannot start"),
            Kind::Other,
        );
        assert_eq!(classify(&e), Kind::KernelRefused);
        assert_eq!(format!("{e:#}"), "cannot start: verifier says no");
    }

    /// README's table of exit codes has a row for each kind, with its
    /// code and its `--json` name.
    #[test]
    fn readme_lists_every_exit_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        for kind in Kind::ALL {
            let (code, name) = (kind.code(), kind.name());
            assert!(
                readme.lines().any(|line| {
                    line.strip_prefix(&format!("| {code} "))
                        .is_some_and(|rest| rest.contains(&format!("| `{name}`")))
                }),
                "README's table of exit codes has no row for {code} `{name}`"
            );
        }
    }

    #[test]
    fn each_kind_has_its_code_and_name() {
        let codes: Vec<(u8, &str)> = Kind::ALL.iter().map(|k| (k.code(), k.name())).collect();
        assert_eq!(
            codes,
            [
                (1, "other"),
                (2, "usage"),
                (3, "config"),
                (4, "not_running"),
                (5, "privilege"),
                (6, "kernel_refused"),
                (7, "newer_layout")
            ]
        );
        for kind in Kind::ALL {
            assert_eq!(classify(&mark(anyhow!("x"), kind)), kind);
        }
    }

    #[test]
    fn json_errors_carry_the_message_kind_and_code() {
        let v = error_json("no running cors-filter", Kind::NotRunning);
        assert_eq!(v["error"], "no running cors-filter");
        assert_eq!(v["kind"], "not_running");
        assert_eq!(v["exit_code"], 4);
        assert_eq!(v.as_object().map(|o| o.len()), Some(3));
    }
}
