//! Running under systemd: the readiness protocol ([`notify`]) and the
//! journal ([`journal`]: priorities on stderr lines, structured denial
//! fields). Without libsystemd: both are datagrams to a Unix socket whose
//! address systemd puts in the environment. Outside systemd (those
//! variables unset) neither changes anything.

pub mod journal;
pub mod notify;

/// `s`, cut to at most `max` bytes on a character boundary, with `…` when
/// cut: for values from the environment quoted in errors.
fn truncated(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    #[test]
    fn long_values_are_cut_on_a_character_boundary() {
        assert_eq!(super::truncated("abc", 3), "abc");
        assert_eq!(super::truncated("abcd", 3), "abc…");
        assert_eq!(super::truncated("aéé", 2), "a…");
    }
}
