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

/// Each known method's name followed by one byte, as the first bytes of a
/// little-endian word, with the mask of those bytes: the table
/// [`method_before`] compares a word with. Every name is shorter than a word.
pub struct MethodPatterns([(u64, u64); Method::KNOWN.len()]);

impl MethodPatterns {
    pub const fn ended_by(end: u8) -> MethodPatterns {
        let mut table = [(0u64, 0u64); Method::KNOWN.len()];
        let mut i = 0;
        while i < table.len() {
            let name = Method::KNOWN[i].name().as_bytes();
            assert!(name.len() < 8);
            let mut value = 0u64;
            let mut k = 0;
            while k < name.len() {
                value |= (name[k] as u64) << (8 * k);
                k += 1;
            }
            value |= (end as u64) << (8 * name.len());
            table[i] = (value, u64::MAX >> (64 - 8 * (name.len() + 1)));
            i += 1;
        }
        MethodPatterns(table)
    }
}

/// A method in a request line: its name, then a space.
pub const REQUEST_LINE_METHODS: MethodPatterns = MethodPatterns::ended_by(b' ');
/// A method as a header's whole value: its name, then the line end (a
/// `\r` is read as `\n` first, see `http`).
pub const VALUE_METHODS: MethodPatterns = MethodPatterns::ended_by(b'\n');

/// The method whose pattern in `patterns` the word `word` starts with;
/// `Other` when none does.
#[inline(always)]
pub fn method_before(word: u64, patterns: &MethodPatterns) -> Method {
    let mut i = 0;
    while i < Method::KNOWN.len() {
        let (value, mask) = patterns.0[i];
        if word & mask == value {
            return Method::KNOWN[i];
        }
        i += 1;
    }
    Method::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(bytes: &[u8]) -> u64 {
        let mut w = [0u8; 8];
        w[..bytes.len()].copy_from_slice(bytes);
        u64::from_le_bytes(w)
    }

    #[test]
    fn names_are_matched_with_their_end_only() {
        assert_eq!(
            method_before(word(b"GET /a"), &REQUEST_LINE_METHODS),
            Method::Get
        );
        assert_eq!(
            method_before(word(b"PATCH /"), &REQUEST_LINE_METHODS),
            Method::Patch
        );
        assert_eq!(
            method_before(word(b"CONNECT "), &REQUEST_LINE_METHODS),
            Method::Connect
        );
        assert_eq!(
            method_before(word(b"OPTIONS "), &REQUEST_LINE_METHODS),
            Method::Options
        );
        assert_eq!(method_before(word(b"PUT\nX"), &VALUE_METHODS), Method::Put);
        assert_eq!(
            method_before(word(b"PUTS /"), &REQUEST_LINE_METHODS),
            Method::Other
        );
        assert_eq!(
            method_before(word(b"post /"), &REQUEST_LINE_METHODS),
            Method::Other
        );
        assert_eq!(
            method_before(word(b"GE"), &REQUEST_LINE_METHODS),
            Method::Other
        );
        assert_eq!(method_before(word(b"PUT\r"), &VALUE_METHODS), Method::Other);
    }

    #[test]
    fn codes_and_names_round_trip() {
        for m in Method::KNOWN {
            assert_eq!(Method::from_code(m as u32), m);
            assert_eq!(
                method_before(
                    word(&[m.name().as_bytes(), b" "].concat()),
                    &REQUEST_LINE_METHODS
                ),
                m
            );
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
