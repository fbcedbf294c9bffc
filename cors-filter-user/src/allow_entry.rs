//! Allowlist entries: parsed and validated from text, turned into the keys
//! the kernel matches (with the very normalisation code the kernel runs),
//! and turned back into text from the entries found in the map.

use std::{fmt, net::Ipv6Addr};

use crate::{
    browser_host::{self, NumericHost, numeric_host},
    shown::Shown,
};

use cors_filter_common::{
    Method, MethodSet,
    allow_map::{AllowEntryValue, MAX_WILDCARD_LABELS, key_hash},
    origin::{ORIGIN_KEY_LEN, OriginError, OriginParse, OriginPart, entry_kind},
};

/// One allowlist entry, ready for an `ALLOWLIST_n` map.
#[derive(Clone)]
pub struct AllowEntry {
    /// Canonical spelling, as `allow list` prints it.
    pub origin: String,
    /// The map entry: its key bytes (`value.key[..value.len]`), kind and
    /// methods.
    pub value: AllowEntryValue,
    wildcard_depth_bit: u32,
}

impl AllowEntry {
    /// The entry's key in the map.
    pub fn hash(&self) -> u64 {
        key_hash(&self.value.key, self.value.len as usize)
    }

    /// The bit of `FilterConfig::wildcard_depths` a wildcard entry needs
    /// (its prefix ends at dot `d` of the reversed host); 0 for an exact one.
    pub fn wildcard_depth_bit(&self) -> u32 {
        self.wildcard_depth_bit
    }

    /// The bytes the entry matches: the whole key of an exact entry, the
    /// prefix of a wildcard.
    pub fn key_bytes(&self) -> &[u8] {
        &self.value.key.bytes[..self.value.len as usize]
    }

    pub fn methods(&self) -> MethodSet {
        MethodSet(self.value.methods)
    }

    /// The domain of a wildcard entry when that domain is a public suffix
    /// (`com` for `https://*.com`, `github.io` for `https://*.github.io`):
    /// anyone can register a site under it, so the entry allows sites of
    /// strangers. From the public suffix list of the `psl` crate.
    pub fn wildcard_public_suffix(&self) -> Option<&str> {
        let (_, rest) = self.origin.split_once("://*.")?;
        // The port, if any, follows the last ':' (a domain has none).
        let domain = rest.split(':').next().unwrap_or(rest);
        let suffix = psl::suffix(domain.as_bytes())?;
        (suffix.is_known() && suffix.as_bytes() == domain.as_bytes()).then_some(domain)
    }

    /// The entry, allowing only `methods` (`MethodSet::ANY`: every method).
    pub fn with_methods(mut self, methods: MethodSet) -> AllowEntry {
        self.value.methods = methods.0;
        self
    }
}

/// `origin`, or `origin methods=GET,POST` for an entry that lists methods:
/// what `allow list` prints.
impl fmt::Display for AllowEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.origin, MethodsSuffix(self.methods()))
    }
}

impl fmt::Debug for AllowEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// ` methods=GET,POST` after an origin that lists methods; nothing after
/// one that allows every method.
struct MethodsSuffix(MethodSet);

impl fmt::Display for MethodsSuffix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == MethodSet::ANY {
            return Ok(());
        }
        let names: Vec<&str> = self.0.known().map(Method::name).collect();
        write!(f, " methods={}", names.join(","))
    }
}

/// Parses the methods an entry lists (`["GET", "POST"]`): known method
/// names, exactly as HTTP spells them (methods are case-sensitive). The
/// error names the bad value.
pub fn parse_methods<S: AsRef<str>>(names: &[S]) -> Result<MethodSet, String> {
    if names.is_empty() {
        return Err(
            "the list of methods is empty: the origin could send nothing (list methods, or leave `methods` out to allow every method)"
                .to_owned(),
        );
    }
    let mut set = MethodSet::NONE;
    for name in names {
        let name = name.as_ref();
        let Some(method) = Method::KNOWN.into_iter().find(|m| m.name() == name) else {
            let known: Vec<&str> = Method::KNOWN.iter().map(|m| m.name()).collect();
            return Err(format!(
                "unknown method {} (methods are case-sensitive; known: {})",
                Shown(name),
                known.join(" ")
            ));
        };
        if set.contains(method) {
            return Err(format!("method {} is listed twice", Shown(name)));
        }
        set = set.with(method);
    }
    Ok(set)
}

/// Why a text is not a valid allowlist entry; `Display` names the bad part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryError {
    pub entry: String,
    pub reason: String,
}

impl fmt::Display for EntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid origin {}: {}", Shown(&self.entry), self.reason)
    }
}

impl std::error::Error for EntryError {}

fn error(entry: &str, reason: impl Into<String>) -> EntryError {
    EntryError {
        entry: entry.to_owned(),
        reason: reason.into(),
    }
}

fn describe(entry: &str, e: OriginError) -> EntryError {
    let part = match e.part {
        OriginPart::Empty => return error(entry, "it is empty"),
        OriginPart::Length => {
            return error(
                entry,
                format!(
                    "longer than {} bytes",
                    cors_filter_common::origin::ORIGIN_MAX_LEN
                ),
            );
        }
        OriginPart::Scheme => "scheme",
        OriginPart::Separator => "\"://\" after the scheme",
        OriginPart::Host => "host",
        OriginPart::Port => "port",
        OriginPart::LineEnd => "line end",
    };
    let found = match entry.as_bytes().get(e.at) {
        Some(b) if b.is_ascii_graphic() => {
            format!("unexpected {:?} at offset {}", *b as char, e.at)
        }
        Some(b) => format!("unexpected byte 0x{b:02x} at offset {}", e.at),
        None => format!("it ends at offset {}", e.at),
    };
    let hint = match e.part {
        OriginPart::Port => "a port is 1 to 65535, without leading zeros",
        _ => "an origin is scheme://host[:port], without path, query, userinfo or spaces",
    };
    error(entry, format!("bad {part}: {found} ({hint})"))
}

/// Parses `https://app.example.com`, `http://localhost:8080`,
/// `https://*.example.com` (any subdomain, on a label boundary) or `null`.
pub fn parse_entry(text: &str) -> Result<AllowEntry, EntryError> {
    let (scheme, rest) = match text.split_once("://") {
        Some(parts) => parts,
        None => (text, ""),
    };
    let wildcard = rest.starts_with("*.");
    let stray_star = if wildcard {
        rest[1..].contains('*')
    } else {
        text.contains('*')
    };
    if stray_star {
        return Err(error(
            text,
            "a wildcard is only allowed as the whole first label of the host, as in https://*.example.com",
        ));
    }
    // The wildcard label is replaced by a real one, `x`, so that the shared
    // normaliser validates the rest; offsets stay the same.
    let mut candidate = if wildcard {
        format!("{scheme}://x{}", &rest[1..])
    } else {
        text.to_owned()
    };
    if rest.starts_with('[') {
        if wildcard {
            return Err(error(text, "a wildcard cannot apply to an IP address"));
        }
        candidate = canonical_ipv6(text, scheme, rest)?;
    }
    let mut parse = OriginParse::default();
    parse
        .load(candidate.as_bytes())
        .and_then(|()| parse.normalize())
        .map_err(|e| describe(text, e))?;
    let key_bytes = parse.key();
    let host = parse.host();
    // Hosts that end in a number are IPv4 addresses to a browser (or
    // refused): only the one spelling browsers send can ever match.
    let numeric = if rest.starts_with('[') {
        None
    } else {
        numeric_host(&String::from_utf8_lossy(host))
    };
    match numeric {
        Some(_) if wildcard => {
            return Err(error(text, "a wildcard cannot apply to an IP address"));
        }
        Some(NumericHost::Ipv4(address)) if address.to_string().as_bytes() != host => {
            return Err(error(
                text,
                format!(
                    "bad host: browsers read {} as the IPv4 address {address} and send that in Origin; write the host as {address}",
                    Shown(&String::from_utf8_lossy(host))
                ),
            ));
        }
        Some(NumericHost::Refused) => {
            return Err(error(
                text,
                format!(
                    "bad host: {} ends in a number but is not an IPv4 address, and browsers refuse such a URL",
                    Shown(&String::from_utf8_lossy(host))
                ),
            ));
        }
        _ => {}
    }
    let (len, kind, wildcard_depth_bit) = if wildcard {
        // The kernel tries prefixes ending at the first MAX_WILDCARD_LABELS
        // dots of the reversed host; the dot after the domain's last label
        // must be one of them.
        let labels = host.split(|&b| b == b'.').count() - 1;
        if labels > MAX_WILDCARD_LABELS {
            return Err(error(
                text,
                format!(
                    "a wildcard's domain may have at most {MAX_WILDCARD_LABELS} labels, this one has {labels}"
                ),
            ));
        }
        // Drop the trailing "x\0": what remains ends with '.' and is the
        // prefix, whose last dot is the reversed host's `labels`-th.
        (key_bytes.len() - 2, entry_kind::WILDCARD, 1 << (labels - 1))
    } else {
        (key_bytes.len(), entry_kind::EXACT, 0)
    };
    let value = AllowEntryValue::new(&key_bytes[..len], kind, MethodSet::ANY);
    let origin = decode_key(&key_bytes[..len]).map_err(|reason| error(text, reason))?;
    Ok(AllowEntry {
        origin,
        value,
        wildcard_depth_bit,
    })
}

/// Rewrites an IPv6 literal host in the form browsers send (RFC 5952, but
/// an IPv4-mapped address in hexadecimal: [`browser_host::ipv6`]).
fn canonical_ipv6(text: &str, scheme: &str, rest: &str) -> Result<String, EntryError> {
    let Some(close) = rest.find(']') else {
        return Err(error(text, "bad host: IPv6 address without a closing ']'"));
    };
    let address: Ipv6Addr = rest[1..close].parse().map_err(|e| {
        error(
            text,
            format!(
                "bad host: {:?} is not an IPv6 address: {e}",
                &rest[1..close]
            ),
        )
    })?;
    Ok(format!(
        "{scheme}://[{}]{}",
        browser_host::ipv6(address),
        &rest[close + 1..]
    ))
}

/// A map entry as `allow list` prints it: its origin (see [`decode_entry`])
/// and the methods it lists, if any.
pub fn describe_entry(value: &AllowEntryValue) -> Result<String, String> {
    Ok(format!(
        "{}{}",
        decode_entry(value)?,
        MethodsSuffix(MethodSet(value.methods))
    ))
}

/// The origin a map entry stands for (`*.` marks a wildcard prefix).
pub fn decode_entry(value: &AllowEntryValue) -> Result<String, String> {
    let len = value.len as usize;
    if len == 0 || len > ORIGIN_KEY_LEN {
        return Err(format!("entry has an invalid key length of {len} bytes"));
    }
    let origin = decode_key(&value.key.bytes[..len])?;
    let wildcard = origin.contains("://*.");
    if value.kind
        != if wildcard {
            entry_kind::WILDCARD
        } else {
            entry_kind::EXACT
        }
    {
        return Err(format!(
            "entry {origin:?} has the wrong kind {}",
            value.kind
        ));
    }
    Ok(origin)
}

/// The origin a key stands for (`*.` marks a wildcard prefix).
pub fn decode_key(bytes: &[u8]) -> Result<String, String> {
    if bytes == b"null\0" {
        return Ok("null".to_owned());
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "key is not ASCII".to_owned())?;
    let (scheme, rest) = text
        .split_once("://")
        .ok_or_else(|| format!("key {text:?} has no scheme"))?;
    let (port, reversed) = rest
        .split_once('/')
        .ok_or_else(|| format!("key {text:?} has no port separator"))?;
    let (reversed, wildcard) = if let Some(exact) = reversed.strip_suffix('\0') {
        (exact, false)
    } else if let Some(prefix) = reversed.strip_suffix('.') {
        (prefix, true)
    } else {
        return Err(format!("key {text:?} is neither exact nor a wildcard"));
    };
    let host: String = reversed.chars().rev().collect();
    let star = if wildcard { "*." } else { "" };
    let port = if port.is_empty() {
        String::new()
    } else {
        format!(":{port}")
    };
    Ok(format!("{scheme}://{star}{host}{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical(text: &str) -> String {
        parse_entry(text).unwrap().origin
    }

    fn key_text(text: &str) -> String {
        String::from_utf8(parse_entry(text).unwrap().key_bytes().to_vec()).unwrap()
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(
            canonical("https://App.Example.com"),
            "https://app.example.com"
        );
        assert_eq!(
            canonical("https://app.example.com:443"),
            "https://app.example.com"
        );
        assert_eq!(canonical("http://localhost:8080"), "http://localhost:8080");
        assert_eq!(canonical("https://*.Example.ORG"), "https://*.example.org");
        assert_eq!(canonical("http://[0:0::1]:3000"), "http://[::1]:3000");
        assert_eq!(canonical("null"), "null");
    }

    #[test]
    fn wildcard_key_is_a_label_prefix() {
        assert_eq!(key_text("https://*.example.com"), "https:///moc.elpmaxe.");
        assert_eq!(
            key_text("https://*.example.com:8443"),
            "https://8443/moc.elpmaxe."
        );
        assert_eq!(key_text("https://example.com"), "https:///moc.elpmaxe\0");
    }

    #[test]
    fn rejects_bad_entries_naming_the_part() {
        let reason = |t: &str| parse_entry(t).unwrap_err().to_string();
        assert!(reason("https://a.example/path").contains("bad host: unexpected '/' at offset 17"));
        assert!(reason("https://a.example:0").contains("bad port"));
        assert!(reason("ftp:/x").contains("\"://\""));
        assert!(reason("https://a.*.example.com").contains("wildcard"));
        assert!(reason("https://*").contains("wildcard"));
        assert!(reason("*://a.example").contains("wildcard"));
        assert!(reason("https://*.*.example").contains("wildcard"));
        assert!(reason("https://*.10.0.0.1").contains("IP address"));
        assert!(reason("https://*.[::1]").contains("bad host"));
        assert!(reason("http://[::g]").contains("not an IPv6 address"));
        assert!(reason("").contains("empty"));
    }

    /// An entry in a spelling browsers never send would never match:
    /// refused, naming the form they do send.
    #[test]
    fn ip_hosts_only_as_browsers_send_them() {
        let reason = |t: &str| parse_entry(t).unwrap_err().to_string();
        for (text, address) in [
            ("http://2130706433", "127.0.0.1"),
            ("http://0x7f.0.0.1:8080", "127.0.0.1"),
            ("http://0177.0.0.1", "127.0.0.1"),
            ("http://10.1", "10.0.0.1"),
        ] {
            let e = reason(text);
            assert!(
                e.contains(&format!("write the host as {address}")),
                "{text}: {e}"
            );
        }
        for text in ["http://1.2.3.256", "https://app.123", "https://app.0x1f"] {
            let e = reason(text);
            assert!(e.contains("not an IPv4 address"), "{text}: {e}");
        }
        assert!(reason("https://*.0x7f").contains("IP address"));
        assert_eq!(canonical("http://10.0.0.1:8080"), "http://10.0.0.1:8080");
        assert_eq!(canonical("https://0xg.example"), "https://0xg.example");
        // IPv4-mapped IPv6: browsers write it in hexadecimal.
        assert_eq!(
            canonical("http://[::ffff:1.2.3.4]"),
            "http://[::ffff:102:304]"
        );
        assert_eq!(
            canonical("http://[::FFFF:102:304]:81"),
            "http://[::ffff:102:304]:81"
        );
        assert!(matches(
            "http://[::ffff:1.2.3.4]",
            "http://[::ffff:102:304]"
        ));
    }

    #[test]
    fn wildcards_over_public_suffixes_are_named() {
        let suffix = |t: &str| {
            parse_entry(t)
                .unwrap()
                .wildcard_public_suffix()
                .map(str::to_owned)
        };
        assert_eq!(suffix("https://*.com").as_deref(), Some("com"));
        assert_eq!(suffix("https://*.co.uk:8443").as_deref(), Some("co.uk"));
        assert_eq!(suffix("https://*.github.io").as_deref(), Some("github.io"));
        for text in [
            "https://*.example.com",
            "https://*.example.co.uk",
            "https://app.com",
            "https://*.localhost",
            "null",
        ] {
            assert_eq!(suffix(text), None, "{text}");
        }
    }

    #[test]
    fn errors_cut_long_values() {
        let long = format!("https://{}.example/path", "a".repeat(10 << 20));
        let e = parse_entry(&long).unwrap_err().to_string();
        assert!(e.len() < 400, "{} bytes", e.len());
        assert!(e.contains(&format!("({} bytes)", long.len())), "{e}");
    }

    /// What the kernel's lookup answers for an allowlist of one entry.
    fn matches(entry: &str, origin: &str) -> bool {
        let entry = parse_entry(entry).unwrap();
        let mut parse = OriginParse::default();
        parse.load(origin.as_bytes()).unwrap();
        parse.normalize().unwrap();
        cors_filter_common::allow_map::is_allowed(&mut parse, entry.wildcard_depth_bit(), |hash| {
            (hash == entry.hash()).then_some(&entry.value)
        })
    }

    #[test]
    fn wildcard_matches_subdomains_on_a_label_boundary_only() {
        let w = "https://*.example.com";
        assert!(matches(w, "https://a.example.com"));
        assert!(matches(w, "https://a.b.example.com"));
        assert!(matches(w, "https://A.Example.COM:443"));
        assert!(!matches(w, "https://example.com"));
        assert!(!matches(w, "https://evil-example.com"));
        assert!(!matches(w, "https://a.evil-example.com"));
        assert!(!matches(w, "https://example.com.evil.net"));
        assert!(!matches(w, "http://a.example.com"));
        assert!(!matches(w, "https://a.example.com:8443"));
        assert!(!matches(w, "https://a.example.co"));
        assert!(matches(
            "https://*.example.com:8443",
            "https://a.example.com:8443"
        ));
    }

    #[test]
    fn exact_entries_match_only_themselves() {
        let e = "https://app.example.com";
        assert!(matches(e, "https://app.example.com"));
        assert!(matches(e, "HTTPS://APP.EXAMPLE.COM:443"));
        assert!(!matches(e, "https://x.app.example.com"));
        assert!(!matches(e, "https://app.example.co"));
        assert!(!matches(e, "https://app.example.com.evil"));
        assert!(!matches(e, "https://app.example.com:8443"));
        assert!(!matches(e, "http://app.example.com"));
        assert!(matches("null", "null"));
        assert!(!matches("null", "https://null"));
    }

    #[test]
    fn decode_round_trips() {
        for text in [
            "https://app.example.com",
            "http://localhost:8080",
            "https://*.example.org",
            "https://*.example.org:8443",
            "http://[::1]:3000",
            "null",
        ] {
            let e = parse_entry(text).unwrap();
            assert_eq!(decode_entry(&e.value).unwrap(), text);
        }
    }

    #[test]
    fn methods_are_parsed_exactly_and_shown() {
        let set = parse_methods(&["GET", "POST"]).unwrap();
        assert_eq!(set, MethodSet::NONE.with(Method::Get).with(Method::Post));
        let entry = parse_entry("https://a.example").unwrap();
        assert_eq!(entry.to_string(), "https://a.example");
        let entry = entry.with_methods(set);
        assert_eq!(entry.to_string(), "https://a.example methods=GET,POST");
        assert_eq!(
            describe_entry(&entry.value).unwrap(),
            "https://a.example methods=GET,POST"
        );
        let e = parse_methods(&["GET", "post"]).unwrap_err();
        assert!(
            e.contains("\"post\"") && e.contains("case-sensitive"),
            "{e}"
        );
        assert!(
            parse_methods(&["PROPFIND"])
                .unwrap_err()
                .contains("PROPFIND")
        );
        assert!(
            parse_methods(&["GET", "GET"])
                .unwrap_err()
                .contains("twice")
        );
        assert!(parse_methods::<&str>(&[]).unwrap_err().contains("empty"));
    }

    #[test]
    fn wildcard_depth_bits() {
        let bit = |t: &str| parse_entry(t).unwrap().wildcard_depth_bit();
        assert_eq!(bit("https://app.example.com"), 0);
        assert_eq!(bit("https://*.example.com"), 0b10);
        assert_eq!(bit("https://*.com"), 0b1);
        assert_eq!(bit("a.b+c://*.x.example.com:8443"), 0b100);
        assert_eq!(bit("https://*.l8.l7.l6.l5.l4.l3.l2.l1"), 1 << 7);
    }

    #[test]
    fn wildcard_domains_within_the_label_bound() {
        assert!(parse_entry("https://*.l8.l7.l6.l5.l4.l3.l2.l1").is_ok());
        let reason = parse_entry("https://*.l9.l8.l7.l6.l5.l4.l3.l2.l1")
            .unwrap_err()
            .to_string();
        assert!(
            reason.contains("at most 8 labels, this one has 9"),
            "{reason}"
        );
    }
}
