//! The seeded randomness of the differential tests, and origins drawn
//! from and around an allowlist (valid, adversarial and malformed), which
//! `stream_generate` puts in the connections it makes. The same seed gives
//! the same origins.

use crate::oracles::reference::Listed;

/// xorshift64*: small, fast, and good enough to pick test cases.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True once in `n` times.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len())]
    }
}

/// The allowlist the generated origins are drawn around. Every kind of
/// entry: exact with and without a port, wildcard with and without a port,
/// an IPv6 literal, a listed trailing dot, `null`, a non-HTTP scheme; and
/// entries restricted to methods: exact, a wildcard inside a wider one
/// (the more specific gives the methods), an exact one inside a wildcard.
pub const ALLOWLIST: &[Listed] = &[
    Listed::any_method("https://app.example.com"),
    Listed::any_method("http://localhost:8080"),
    Listed::any_method("https://*.example.org"),
    Listed::any_method("https://*.api.example.net:8443"),
    Listed::any_method("http://[::1]:3000"),
    Listed::any_method("https://dotted.example.com."),
    Listed::any_method("null"),
    Listed::any_method("chrome-extension://abcdefghijklmnop"),
    Listed::only("https://admin.example.com", &["GET", "POST"]),
    Listed::only("https://*.ro.example.org", &["GET", "HEAD"]),
    Listed::only("https://pay.example.org", &["PUT", "PATCH", "DELETE"]),
    Listed::only("http://localhost:3001", &["POST"]),
];

const LABELS: &[&str] = &["a", "www", "b-2", "x_y", "deep.er", "APP", "0"];

/// Random ASCII case for letters.
pub fn random_case(rng: &mut Rng, text: &str) -> String {
    text.chars()
        .map(|c| {
            if rng.one_in(2) {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// One allowlist entry made into an origin a browser could send.
fn origin_from_entry(rng: &mut Rng, entry: &str) -> String {
    match entry.split_once("*.") {
        Some((scheme, rest)) => {
            let label = rng.pick(LABELS);
            format!("{scheme}{label}.{rest}")
        }
        None => entry.to_owned(),
    }
}

/// An origin from or around the allowlist: the plain thing, or one of the
/// variations an attacker or an odd client could send.
pub fn origin(rng: &mut Rng) -> String {
    let entry = ALLOWLIST[rng.below(ALLOWLIST.len())].origin;
    let base = origin_from_entry(rng, entry);
    let (scheme, authority) = base.split_once("://").unwrap_or(("", &base));
    let (scheme, authority) = (scheme.to_owned(), authority.to_owned());
    match rng.below(30) {
        0..=5 => base,
        6 => random_case(rng, &base),
        7 => format!("{base}:{}", if scheme == "http" { 80 } else { 443 }),
        8 => format!(
            "{base}:{}",
            rng.pick(&["8080", "8443", "1", "65535", "3000"])
        ),
        9 => format!("{base}."),
        10 => format!("{scheme}://{}.{authority}", rng.pick(LABELS)),
        11 => format!("{scheme}://evil-{authority}"),
        12 => format!("{base}.evil.net"),
        13 => format!(
            "{}://{authority}",
            rng.pick(&["http", "https", "ws", "HTTPS", "h"])
        ),
        14 => format!("{base}{}", rng.pick(&["/", "/path", "?q=1", "#f", "/%2e"])),
        15 => format!("{scheme}://{}@{authority}", rng.pick(&["user", "u:p", ""])),
        16 => {
            let entry = ALLOWLIST[rng.below(ALLOWLIST.len())].origin;
            format!("{base}, {}", origin_from_entry(rng, entry))
        }
        17 => format!("{base} {}", rng.pick(&["x", "", "https://evil.example"])),
        18 => format!(
            "{base}:{}",
            rng.pick(&["0", "080", "65536", "99999", "", "8a"])
        ),
        19 => rng
            .pick(&[
                "http://[::1]:3000",
                "http://[0:0::1]:3000",
                "http://[::1]",
                "http://[::0001]:3000",
                "http://[::1:3000",
                "http://[::g]:3000",
                "http://[::1]:03000",
            ])
            .to_owned(),
        20 => rng
            .pick(&["null", "NULL", "Null", "nul", "null ", ""])
            .to_owned(),
        21 => {
            // Around the length bound: a subdomain of a wildcard entry,
            // allowed as long as the whole origin fits.
            let len = [200, 230, 231, 232, 240, 260, 300][rng.below(7)];
            let label = "a".repeat(len);
            format!("https://{label}.example.org")
        }
        22 => format!("{scheme}://{authority}\u{e9}"),
        23 => format!("{scheme}://{}", authority.replace('.', "..")),
        24 => format!("{scheme}:/{authority}"),
        25 => format!("https://example.org{}", rng.pick(&["", ".", ":443"])),
        26 => format!("{base}\t{}", rng.pick(&["", "x"])),
        27 => "https://a.example.com.evil.net".to_owned(),
        28 => format!("{scheme}://{}", authority.to_ascii_uppercase()),
        _ => rng
            .pick(&[
                "https://evil.example",
                "http://app.example.com",
                "https://example.com",
            ])
            .to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_origins() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..100 {
            assert_eq!(origin(&mut a), origin(&mut b));
        }
    }
}
