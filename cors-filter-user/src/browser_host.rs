//! How browsers write the host of an origin, for the IP literals where
//! several spellings name one address (the WHATWG URL Standard's host
//! parser and serialiser). An allowlist entry must be spelt the way a
//! browser sends it in `Origin`, or it never matches: `http://2130706433`
//! is sent as `http://127.0.0.1`, `http://[::ffff:1.2.3.4]` as
//! `http://[::ffff:102:304]`.

use std::net::{Ipv4Addr, Ipv6Addr};

/// What a browser makes of a host that ends in a number (WHATWG "ends in a
/// number"): an IPv4 address, or a URL it refuses to load.
#[derive(Debug, PartialEq, Eq)]
pub enum NumericHost {
    /// An IPv4 address, in the dotted-decimal form browsers send.
    Ipv4(Ipv4Addr),
    /// A host browsers refuse (`1.2.3.256`, `app.123`, `0x1g`...).
    Refused,
}

/// `None` for a host that does not end in a number (a domain name); else
/// what browsers make of it. `host` is ASCII, without brackets or port.
pub fn numeric_host(host: &str) -> Option<NumericHost> {
    if !ends_in_a_number(host) {
        return None;
    }
    Some(match parse_ipv4(host) {
        Some(address) => NumericHost::Ipv4(address),
        None => NumericHost::Refused,
    })
}

/// The labels of `host`, without the empty one after a trailing dot.
fn labels(host: &str) -> Vec<&str> {
    let mut labels: Vec<&str> = host.split('.').collect();
    if labels.len() > 1 && labels.last() == Some(&"") {
        labels.pop();
    }
    labels
}

/// WHATWG "ends in a number": the last label is decimal digits, or parses
/// as an IPv4 number (`0x1f`, `017`).
fn ends_in_a_number(host: &str) -> bool {
    let labels = labels(host);
    let last = labels.last().copied().unwrap_or_default();
    (!last.is_empty() && last.bytes().all(|b| b.is_ascii_digit())) || ipv4_number(last).is_some()
}

/// WHATWG "IPv4 number parser": decimal, `0x` hexadecimal or `0` octal.
fn ipv4_number(text: &str) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    let (digits, radix) =
        if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
            (hex, 16)
        } else if text.len() > 1 && text.starts_with('0') {
            (&text[1..], 8)
        } else {
            (text, 10)
        };
    if digits.is_empty() {
        return Some(0);
    }
    // More digits than any valid address needs: refused below anyway, and
    // this keeps `from_str_radix` from overflowing.
    if digits.len() > 32 || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// WHATWG "IPv4 parser": one to four parts, the last filling the bytes the
/// others leave (`127.1` is 127.0.0.1).
fn parse_ipv4(host: &str) -> Option<Ipv4Addr> {
    let parts = labels(host);
    if parts.len() > 4 {
        return None;
    }
    let numbers = parts
        .iter()
        .map(|part| ipv4_number(part))
        .collect::<Option<Vec<u64>>>()?;
    let (last, leading) = numbers.split_last()?;
    if leading.iter().any(|&n| n > 255) || *last >= 256u64.pow(5 - numbers.len() as u32) {
        return None;
    }
    let address = leading
        .iter()
        .enumerate()
        .fold(*last, |sum, (i, &n)| sum + (n << (8 * (3 - i))));
    u32::try_from(address).ok().map(Ipv4Addr::from)
}

/// An IPv6 address as browsers serialise it (WHATWG "IPv6 serializer"):
/// lowercase hexadecimal pieces, the first longest run of two or more zero
/// pieces as `::`, and never a dotted IPv4 tail (where `Ipv6Addr`'s
/// `Display` writes `::ffff:1.2.3.4`, browsers write `::ffff:102:304`).
pub fn ipv6(address: Ipv6Addr) -> String {
    let pieces = address.segments();
    // The first longest run of zero pieces, if it is longer than one.
    let (mut best, mut run) = ((0, 0), (0, 0));
    for (i, &piece) in pieces.iter().enumerate() {
        if piece == 0 {
            if run.1 == 0 {
                run.0 = i;
            }
            run.1 += 1;
            if run.1 > best.1 {
                best = run;
            }
        } else {
            run.1 = 0;
        }
    }
    let hex = |range: &[u16]| {
        range
            .iter()
            .map(|p| format!("{p:x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    if best.1 < 2 {
        return hex(&pieces);
    }
    let (start, len) = best;
    format!("{}::{}", hex(&pieces[..start]), hex(&pieces[start + len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_are_not_numeric() {
        for host in [
            "example.com",
            "localhost",
            "app.example.com.",
            "1.example",
            "0xg",
        ] {
            assert_eq!(numeric_host(host), None, "{host}");
        }
    }

    #[test]
    fn every_spelling_browsers_accept_is_one_address() {
        let loopback = Some(NumericHost::Ipv4(Ipv4Addr::new(127, 0, 0, 1)));
        for host in [
            "127.0.0.1",
            "2130706433",
            "0x7f000001",
            "0X7F.0.0.1",
            "0177.0.0.1",
            "127.1",
            "127.0.1",
            "127.0.0.1.",
            "0x7f.1",
        ] {
            assert_eq!(numeric_host(host), loopback, "{host}");
        }
        assert_eq!(
            numeric_host("255.255.255.255"),
            Some(NumericHost::Ipv4(Ipv4Addr::BROADCAST))
        );
        assert_eq!(
            numeric_host("0x"),
            Some(NumericHost::Ipv4(Ipv4Addr::UNSPECIFIED))
        );
    }

    #[test]
    fn hosts_browsers_refuse() {
        for host in [
            "1.2.3.256",
            "256.1.1.1",
            "1.2.3.4.5",
            "4294967296",
            "app.123",
            "app.0x10",
            "08.1.1.1",
            "1.2.0x100.4",
            "99999999999999999999999999999999999999",
        ] {
            assert_eq!(numeric_host(host), Some(NumericHost::Refused), "{host}");
        }
    }

    #[test]
    fn ipv6_as_browsers_write_it() {
        for (text, browser) in [
            ("::ffff:1.2.3.4", "::ffff:102:304"),
            ("::1.2.3.4", "::102:304"),
            ("2001:DB8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),
            ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),
            ("::", "::"),
            ("::1", "::1"),
            ("1::", "1::"),
            ("fe80::0:1", "fe80::1"),
        ] {
            let address: Ipv6Addr = text.parse().unwrap();
            assert_eq!(ipv6(address), browser, "{text}");
        }
    }
}
