//! Values quoted in error messages, cut to a readable length: a config
//! can hold a 10 MB string, and an error must name it, not echo it.

use std::fmt;

/// Characters of a value an error shows before cutting it.
pub const SHOWN_CHARS: usize = 80;

/// `value` quoted as `{:?}` does, or, when longer than [`SHOWN_CHARS`]
/// characters, its start quoted and followed by `... (N bytes)`.
pub struct Shown<'a>(pub &'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(SHOWN_CHARS) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => write!(f, "{:?}... ({} bytes)", &self.0[..cut], self.0.len()),
        }
    }
}

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Text (a message that may quote a value) as it is, or, when longer than
/// four times [`SHOWN_CHARS`] characters, its start followed by
/// `... (N bytes)`.
pub struct Cut<'a>(pub &'a str);

impl fmt::Display for Cut<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.char_indices().nth(4 * SHOWN_CHARS) {
            None => f.write_str(self.0),
            Some((cut, _)) => write!(f, "{}... ({} bytes)", &self.0[..cut], self.0.len()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_values_are_quoted_whole() {
        assert_eq!(
            Shown("https://a.example").to_string(),
            "\"https://a.example\""
        );
        let exact = "x".repeat(SHOWN_CHARS);
        assert_eq!(Shown(&exact).to_string(), format!("{exact:?}"));
    }

    #[test]
    fn long_values_are_cut_on_a_character_boundary() {
        let long = format!("https://{}", "é".repeat(5_000_000));
        let shown = Shown(&long).to_string();
        assert!(shown.len() < 2 * SHOWN_CHARS + 40, "{shown}");
        assert!(shown.starts_with("\"https://éé"));
        assert!(shown.ends_with(&format!("\"... ({} bytes)", long.len())));
        let message = format!("unknown variant `{}`", "a".repeat(1 << 20));
        let cut = Cut(&message).to_string();
        assert!(cut.len() < 5 * SHOWN_CHARS + 30 && cut.starts_with("unknown variant `aaa"));
        assert_eq!(Cut("short").to_string(), "short");
    }
}
