//! Denials as journal entries with fields of their own, when stderr is the
//! journal (see `systemd::journal`): `journalctl CORS_FILTER_ORIGIN=…`
//! finds an origin's denials without parsing lines. The entry's `MESSAGE`
//! is the line that would otherwise be logged; where the native socket
//! cannot take it, that line goes to stderr as before.

use crate::systemd::journal::{self, Native, valid_field_name};

use super::event::Denial;

/// The reason, as in the log line (`origin not allowed`, ...).
pub const REASON: &str = "CORS_FILTER_REASON";
/// The packet's source address and port (the proxy's, behind a proxy).
pub const SOURCE: &str = "CORS_FILTER_SOURCE";
/// The destination port.
pub const PORT: &str = "CORS_FILTER_PORT";
/// The client named by the connection's PROXY header, if any.
pub const CLIENT: &str = "CORS_FILTER_CLIENT";
/// The client named by the port's trusted header, if any.
pub const FORWARDED: &str = "CORS_FILTER_FORWARDED";
/// The origin, rendered as in the log line (escaped, cut at 128 bytes).
pub const ORIGIN: &str = "CORS_FILTER_ORIGIN";
/// The kind of request and its method (`preflight for PUT`, `POST request`).
pub const REQUEST: &str = "CORS_FILTER_REQUEST";
/// Every entry's `SYSLOG_IDENTIFIER`, as the stderr lines have.
pub const IDENTIFIER: &str = "cors-filter";

const _: () = {
    let names = [REASON, SOURCE, PORT, CLIENT, FORWARDED, ORIGIN, REQUEST];
    let mut i = 0;
    while i < names.len() {
        assert!(valid_field_name(names[i]));
        i += 1;
    }
};

/// Where denial lines go.
pub struct DenialLog {
    native: Option<Native>,
    /// Whether the last entry could not be sent: said once, not per denial.
    failing: bool,
}

impl DenialLog {
    /// To the journal's native socket when stderr is the journal, to the
    /// logger otherwise.
    pub fn from_env() -> anyhow::Result<DenialLog> {
        Ok(DenialLog {
            native: Native::from_env()?,
            failing: false,
        })
    }

    /// Logs `message` about `denial` at `level`.
    pub fn log(&mut self, level: log::Level, denial: &Denial, message: &str) {
        if let Some(native) = &self.native {
            let fields = fields(denial, message, journal::priority(level));
            let borrowed: Vec<(&str, &str)> =
                fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            match native.send(&borrowed) {
                Ok(()) => {
                    if std::mem::take(&mut self.failing) {
                        log::info!("denials go to {} again", native.path().display());
                    }
                    return;
                }
                Err(e) if !self.failing => {
                    self.failing = true;
                    log::warn!(
                        "cannot send denials to the journal's socket {}: {e}; logging them as lines",
                        native.path().display()
                    );
                }
                Err(_) => {}
            }
        }
        log::log!(level, "{message}");
    }
}

/// The entry of `denial`, whose line is `message`.
fn fields(denial: &Denial, message: &str, priority: u8) -> Vec<(&'static str, String)> {
    let mut fields = vec![
        ("MESSAGE", message.to_owned()),
        ("PRIORITY", priority.to_string()),
        ("SYSLOG_IDENTIFIER", IDENTIFIER.to_owned()),
        (REASON, denial.reason.to_string()),
        (SOURCE, denial.source.to_string()),
        (PORT, denial.dest_port.to_string()),
    ];
    if let Some(client) = &denial.client {
        fields.push((CLIENT, client.to_string()));
    }
    if let Some(forwarded) = &denial.forwarded {
        fields.push((FORWARDED, forwarded.to_string()));
    }
    if denial.judged_by_origin() {
        fields.push((ORIGIN, denial.origin.clone()));
        fields.push((REQUEST, denial.request.to_string()));
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::denials::event::{Reason, Request, Source};
    use cors_filter_common::{Method, event::DenialReason};

    #[test]
    fn an_entry_names_origin_source_port_and_reason() {
        let denial = Denial {
            source: Source::Addr("198.18.0.1:53898".parse().unwrap()),
            client: None,
            forwarded: None,
            dest_port: 8080,
            reason: Reason::Known(DenialReason::NotAllowed),
            origin: "https://evil.example".into(),
            request: Request::Preflight(Method::Put),
        };
        let line = denial.to_string();
        let fields = fields(&denial, &line, 6);
        let get = |name: &str| {
            fields
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("MESSAGE"), Some(line.as_str()));
        assert_eq!(get("PRIORITY"), Some("6"));
        assert_eq!(get(ORIGIN), Some("https://evil.example"));
        assert_eq!(get(SOURCE), Some("198.18.0.1:53898"));
        assert_eq!(get(PORT), Some("8080"));
        assert_eq!(get(REASON), Some("origin not allowed"));
        assert_eq!(get(REQUEST), Some("preflight for PUT"));
        assert_eq!(get(CLIENT), None);

        let http2 = Denial {
            reason: Reason::Known(DenialReason::Http2),
            client: Some(Source::Addr("203.0.113.7:51234".parse().unwrap())),
            ..denial
        };
        let fields = super::fields(&http2, "x", 4);
        assert!(fields.iter().all(|(k, _)| *k != ORIGIN && *k != REQUEST));
        assert!(fields.contains(&(CLIENT, "203.0.113.7:51234".to_owned())));
    }
}
