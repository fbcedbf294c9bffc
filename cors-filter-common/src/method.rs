//! HTTP methods: which one a request line or an
//! `Access-Control-Request-Method` value names, and sets of them, as an
//! allowlist entry restricts an origin to.
//!
//! Methods are case-sensitive (RFC 9110, section 9.1): `post` is not
//! `POST`, but another, unknown method. Browsers send the standard ones in
//! upper case.

/// A method the filter knows by name (the discriminant is its bit in a
/// [`MethodSet`]), or [`Method::Other`] for any other token.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Method {
    Get = 0,
    Head = 1,
    Post = 2,
    Put = 3,
    Delete = 4,
    Connect = 5,
    Options = 6,
    Trace = 7,
    Patch = 8,
    /// A method token that is none of the above. No allowlist entry that
    /// restricts methods holds it.
    Other = 31,
}

impl Method {
    /// The methods known by name, in the order of their bits.
    pub const KNOWN: [Method; 9] = [
        Method::Get,
        Method::Head,
        Method::Post,
        Method::Put,
        Method::Delete,
        Method::Connect,
        Method::Options,
        Method::Trace,
        Method::Patch,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Connect => "CONNECT",
            Method::Options => "OPTIONS",
            Method::Trace => "TRACE",
            Method::Patch => "PATCH",
            Method::Other => "other",
        }
    }

    /// The method of code `code` (a discriminant); `Other` for any other value.
    pub const fn from_code(code: u32) -> Method {
        let mut i = 0;
        while i < Method::KNOWN.len() {
            if Method::KNOWN[i] as u32 == code {
                return Method::KNOWN[i];
            }
            i += 1;
        }
        Method::Other
    }

    /// Whether a request with this method can be sent cross-origin by a
    /// page, with the user's cookies, to change state on the server:
    /// anything but `GET`, `HEAD`, `OPTIONS` and `TRACE`, which are safe
    /// by definition (RFC 9110, section 9.2.1).
    #[inline(always)]
    pub const fn is_unsafe(self) -> bool {
        !matches!(
            self,
            Method::Get | Method::Head | Method::Options | Method::Trace
        )
    }

    #[inline(always)]
    pub const fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// A set of methods: bit `m` for `Method` `m`.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MethodSet(pub u32);

impl MethodSet {
    /// No method: what the lookup of an origin the allowlist does not hold
    /// answers.
    pub const NONE: MethodSet = MethodSet(0);
    /// Any method, unknown ones included: an entry without `methods`.
    pub const ANY: MethodSet = MethodSet(u32::MAX);

    #[inline(always)]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    #[inline(always)]
    pub const fn contains(self, method: Method) -> bool {
        self.0 & method.bit() != 0
    }

    /// [`Self::contains`] of a method by its code (a discriminant, as kept
    /// in memory).
    #[inline(always)]
    pub const fn contains_code(self, code: u32) -> bool {
        self.0 & (1 << (code & 31)) != 0
    }

    pub const fn with(self, method: Method) -> MethodSet {
        MethodSet(self.0 | method.bit())
    }

    /// The known methods in the set, in bit order.
    pub fn known(self) -> impl Iterator<Item = Method> {
        Method::KNOWN.into_iter().filter(move |m| self.contains(*m))
    }
}

/// Up to the first 8 bytes of `bytes`, little-endian, zero past them.
#[inline(always)]
pub const fn word_of(bytes: &[u8]) -> u64 {
    let mut word = 0u64;
    let mut i = 0;
    while i < bytes.len() && i < 8 {
        word |= (bytes[i] as u64) << (8 * i);
        i += 1;
    }
    word
}

/// The known methods' names as little-endian words, and their lengths.
const METHOD_WORDS: [(u64, u32); Method::KNOWN.len()] = {
    let mut words = [(0, 0); Method::KNOWN.len()];
    let mut i = 0;
    while i < Method::KNOWN.len() {
        let name = Method::KNOWN[i].name().as_bytes();
        assert!(name.len() <= 8);
        words[i] = (word_of(name), name.len() as u32);
        i += 1;
    }
    words
};

impl Method {
    /// The method whose name is the token of `len` bytes whose first 8 are
    /// `word` (little-endian, zero past the token); `Other` for any other.
    #[inline(always)]
    pub fn of_token(word: u64, len: u32) -> Method {
        let mut i = 0;
        while i < METHOD_WORDS.len() {
            if METHOD_WORDS[i] == (word, len) {
                return Method::KNOWN[i];
            }
            i += 1;
        }
        Method::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(bytes: &[u8]) -> Method {
        Method::of_token(word_of(bytes), bytes.len() as u32)
    }

    #[test]
    fn tokens_are_matched_whole() {
        assert_eq!(token(b"GET"), Method::Get);
        assert_eq!(token(b"PATCH"), Method::Patch);
        assert_eq!(token(b"CONNECT"), Method::Connect);
        assert_eq!(token(b"OPTIONS"), Method::Options);
        assert_eq!(token(b"PUTS"), Method::Other);
        assert_eq!(token(b"PU"), Method::Other);
        assert_eq!(token(b"post"), Method::Other);
        assert_eq!(token(b""), Method::Other);
        // A longer token whose first 8 bytes are a name and more.
        assert_eq!(Method::of_token(word_of(b"OPTIONSX"), 9), Method::Other);
    }

    #[test]
    fn codes_and_names_round_trip() {
        for m in Method::KNOWN {
            assert_eq!(Method::from_code(m as u32), m);
            assert_eq!(token(m.name().as_bytes()), m);
        }
        assert_eq!(Method::from_code(9), Method::Other);
        assert_eq!(Method::from_code(Method::Other as u32), Method::Other);
    }

    #[test]
    fn unsafe_methods() {
        let safe: std::vec::Vec<Method> = Method::KNOWN
            .into_iter()
            .filter(|m| !m.is_unsafe())
            .collect();
        assert_eq!(
            safe,
            [Method::Get, Method::Head, Method::Options, Method::Trace]
        );
        assert!(Method::Other.is_unsafe());
    }

    #[test]
    fn sets() {
        let set = MethodSet::NONE.with(Method::Get).with(Method::Post);
        assert!(set.contains(Method::Post) && !set.contains(Method::Put));
        assert!(!set.contains(Method::Other));
        assert!(MethodSet::ANY.contains(Method::Other));
        assert!(MethodSet::NONE.is_empty());
        assert_eq!(
            set.known().collect::<std::vec::Vec<_>>(),
            [Method::Get, Method::Post]
        );
    }
}
