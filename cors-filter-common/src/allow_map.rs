//! The allowlist lookup: a hash map whose cost does not grow with the
//! number of entries.
//!
//! An `ALLOWLIST_n` map is keyed by [`prefix_hash`] of an entry's key (see
//! `crate::origin`) and holds the key itself ([`AllowEntryValue`]). A
//! normalised origin is allowed when
//! - the hash of its whole key finds an exact entry holding that key, or
//! - the hash of its key up to one of the first [`MAX_WILDCARD_LABELS`]
//!   dots of the reversed host finds a wildcard entry holding that prefix.
//!
//! The hash only picks the entry: every hit is checked byte for byte, so
//! an origin crafted to collide with an allowed one is still refused. Two
//! entries of one allowlist with the same hash are refused when the
//! allowlist is installed.
//!
//! Cost: one lookup and a hash of the key for an exact entry, plus one per
//! dot of the host (up to [`MAX_WILDCARD_LABELS`]), whatever the size of
//! the allowlist. (A longest-prefix-match trie, which answered both kinds
//! in one lookup, walks deeper as it fills.)

use crate::{
    http::WORD,
    method::MethodSet,
    origin::{ORIGIN_KEY_LEN, OriginKey, OriginParse, entry_kind},
    slot::Slot,
};

/// Labels a wildcard's domain may have at most (`*.a.example.com` has 3):
/// a lookup tries the prefixes ending at the first this many dots of the
/// reversed host.
pub const MAX_WILDCARD_LABELS: usize = 8;
const _: () = assert!(MAX_WILDCARD_LABELS.is_power_of_two());

const KEY_WORDS: usize = ORIGIN_KEY_LEN / WORD;
// `key_word` masks a word's index with `KEY_WORDS - 1`.
const _: () = assert!(ORIGIN_KEY_LEN.is_multiple_of(WORD) && KEY_WORDS.is_power_of_two());

/// The value of an `ALLOWLIST_n` entry.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AllowEntryValue {
    /// Bytes of `key` that make the entry: the whole key of an exact entry,
    /// the prefix up to its dot of a wildcard.
    pub len: u32,
    /// An `entry_kind` value.
    pub kind: u32,
    /// The methods the origin may use ([`MethodSet`]): `MethodSet::ANY`
    /// unless the entry lists some.
    pub methods: u32,
    /// Zero past `len`.
    pub key: OriginKey,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `repr(C)`, three `u32`s then a byte array: no padding, and
    // every bit pattern is a valid value.
    unsafe impl aya::Pod for super::AllowEntryValue {}
}

/// Word `w` (below `KEY_WORDS`) of `key`, little-endian.
#[inline(always)]
fn key_word(key: &OriginKey, w: usize) -> u64 {
    let at = (w & (KEY_WORDS - 1)) * WORD;
    let mut bytes = [0u8; WORD];
    bytes.copy_from_slice(&key.bytes[at..at + WORD]);
    u64::from_le_bytes(bytes)
}

/// The word holding the last `len % WORD` bytes of a `len`-byte prefix of
/// `key`, the bytes past the prefix cleared; 0 when `len` is a whole
/// number of words.
#[inline(always)]
fn tail_word(key: &OriginKey, len: usize) -> u64 {
    let left = len % WORD;
    if left == 0 {
        return 0;
    }
    key_word(key, len / WORD) & ((1u64 << (8 * left)) - 1)
}

const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline(always)]
fn mix(hash: u64, word: u64) -> u64 {
    let hash = (hash ^ word).wrapping_mul(MULTIPLIER);
    hash ^ (hash >> 31)
}

/// The hash of the first `len` bytes of `key`, a word at a time (multiply
/// and fold, as in FNV and splitmix): the whole words, then the last,
/// partial one. Keys that differ only by trailing zero bytes hash alike;
/// the byte comparison of every hit tells them apart.
///
/// `len` is read from memory at each use rather than kept in a register
/// across the loop (see [`Slot`] on loop bounds): otherwise the verifier
/// checks what follows the loop once per way out of it.
#[inline(always)]
pub fn prefix_hash(key: &OriginKey, len: &Slot<u32>) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let mut w = 0;
    while w < KEY_WORDS {
        if w >= len.get() as usize / WORD {
            break;
        }
        hash = mix(hash, key_word(key, w));
        w += 1;
    }
    mix(hash, tail_word(key, len.get() as usize))
}

/// [`prefix_hash`] of a length given by value (userspace).
pub fn key_hash(key: &OriginKey, len: usize) -> u64 {
    prefix_hash(key, &Slot::new(len as u32))
}

impl AllowEntryValue {
    /// The entry for `key` (at most `ORIGIN_KEY_LEN` bytes) and `methods`.
    pub fn new(key: &[u8], kind: u32, methods: MethodSet) -> AllowEntryValue {
        let mut value = AllowEntryValue {
            len: key.len() as u32,
            kind,
            methods: methods.0,
            key: OriginKey::default(),
        };
        value.key.bytes[..key.len()].copy_from_slice(key);
        value
    }

    /// Whether both entries are for the same origin (or wildcard),
    /// whatever their methods.
    pub fn same_key(&self, other: &AllowEntryValue) -> bool {
        self.len == other.len && self.kind == other.kind && self.key == other.key
    }

    /// Whether this entry is the first `len` bytes of `key` (`len` read as
    /// in [`prefix_hash`]).
    #[inline(always)]
    pub fn holds(&self, key: &OriginKey, len: &Slot<u32>) -> bool {
        if self.len != len.get() {
            return false;
        }
        let mut diff = 0u64;
        let mut w = 0;
        while w < KEY_WORDS {
            if w >= len.get() as usize / WORD {
                break;
            }
            diff |= key_word(&self.key, w) ^ key_word(key, w);
            w += 1;
        }
        let len = len.get() as usize;
        diff |= tail_word(&self.key, len) ^ tail_word(key, len);
        diff == 0
    }
}

/// The methods the allowlist `lookup` reads (by hash) allows the origin
/// `normalize` left in `origin`: those of its exact entry, else of the
/// first wildcard entry that holds it (the most specific: they are tried
/// from the host's last dot back); [`MethodSet::NONE`] when none does.
/// Wildcard prefixes are tried only at the dots whose bit is set in
/// `wildcard_depths` (`FilterConfig`): where the allowlist has wildcard
/// entries. `origin.lookup_len` is the length of the key or prefix being
/// looked up.
#[inline(always)]
pub fn allowed_methods<'a>(
    origin: &mut OriginParse,
    wildcard_depths: u32,
    lookup: impl Fn(u64) -> Option<&'a AllowEntryValue>,
) -> MethodSet {
    let methods = |origin: &OriginParse, kind: u32| match lookup(prefix_hash(
        &origin.key,
        &origin.lookup_len,
    )) {
        Some(entry) if entry.kind == kind && entry.holds(&origin.key, &origin.lookup_len) => {
            MethodSet(entry.methods)
        }
        _ => MethodSet::NONE,
    };
    origin.lookup_len.set(origin.key_len() as u32);
    let exact = methods(origin, entry_kind::EXACT);
    if !exact.is_empty() {
        return exact;
    }
    let mut i = MAX_WILDCARD_LABELS;
    while i > 0 {
        i -= 1;
        if i < origin.dots() && wildcard_depths & (1 << i) != 0 {
            origin.lookup_len.set(origin.dot_end(i) as u32);
            let wildcard = methods(origin, entry_kind::WILDCARD);
            if !wildcard.is_empty() {
                return wildcard;
            }
        }
    }
    MethodSet::NONE
}

/// Whether the allowlist holds the origin at all, with whatever methods.
#[inline(always)]
pub fn is_allowed<'a>(
    origin: &mut OriginParse,
    wildcard_depths: u32,
    lookup: impl Fn(u64) -> Option<&'a AllowEntryValue>,
) -> bool {
    !allowed_methods(origin, wildcard_depths, lookup).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{collections::HashMap, vec::Vec};

    /// An allowlist of `(key, kind)` entries, as userspace builds it.
    fn allowlist(entries: &[(&[u8], u32)]) -> HashMap<u64, AllowEntryValue> {
        entries
            .iter()
            .map(|(key, kind)| {
                let value = AllowEntryValue::new(key, *kind, MethodSet::ANY);
                (key_hash(&value.key, key.len()), value)
            })
            .collect()
    }

    fn allowed(map: &HashMap<u64, AllowEntryValue>, origin: &str) -> bool {
        let mut parse = OriginParse::default();
        parse.load(origin.as_bytes()).unwrap();
        parse.normalize().unwrap();
        is_allowed(&mut parse, u32::MAX, |hash| map.get(&hash))
    }

    #[test]
    fn exact_and_wildcard_entries() {
        let map = allowlist(&[
            (b"https:///moc.elpmaxe.ppa\0", entry_kind::EXACT),
            (b"https:///ten.elpmaxe.", entry_kind::WILDCARD),
            (b"null\0", entry_kind::EXACT),
        ]);
        assert!(allowed(&map, "https://app.example.com"));
        assert!(allowed(&map, "HTTPS://APP.example.com:443"));
        assert!(!allowed(&map, "https://example.com"));
        assert!(!allowed(&map, "https://app.example.com:8443"));
        assert!(!allowed(&map, "http://app.example.com"));
        assert!(allowed(&map, "https://a.example.net"));
        assert!(allowed(&map, "https://a.b.c.example.net"));
        assert!(!allowed(&map, "https://example.net"));
        assert!(!allowed(&map, "https://evil-example.net"));
        assert!(!allowed(&map, "https://a.example.net.evil"));
        assert!(allowed(&map, "null"));
    }

    #[test]
    fn a_hit_is_checked_byte_for_byte() {
        // An entry filed under the hash of another key does not allow it.
        let value = AllowEntryValue::new(
            b"https:///moc.elpmaxe.ppa\0",
            entry_kind::EXACT,
            MethodSet::ANY,
        );
        let mut map = HashMap::new();
        let mut parse = OriginParse::default();
        parse.load(b"https://evil.example").unwrap();
        parse.normalize().unwrap();
        map.insert(key_hash(&parse.key, parse.key_len()), value);
        assert!(!is_allowed(&mut parse, u32::MAX, |hash| map.get(&hash)));
        // Nor does an entry of the other kind with the same bytes.
        let wildcard = AllowEntryValue::new(parse.key(), entry_kind::WILDCARD, MethodSet::ANY);
        map.insert(key_hash(&parse.key, parse.key_len()), wildcard);
        assert!(!is_allowed(&mut parse, u32::MAX, |hash| map.get(&hash)));
    }

    #[test]
    fn wildcards_up_to_the_label_bound() {
        let deep = "https://x.l8.l7.l6.l5.l4.l3.l2.l1";
        let mut parse = OriginParse::default();
        parse.load(deep.as_bytes()).unwrap();
        parse.normalize().unwrap();
        assert_eq!(parse.dots(), MAX_WILDCARD_LABELS);
        let key = parse.key().to_vec();
        let ends: Vec<usize> = (0..parse.dots()).map(|i| parse.dot_end(i)).collect();
        for &end in &ends {
            assert_eq!(key[end - 1], b'.');
            let map = allowlist(&[(&key[..end], entry_kind::WILDCARD)]);
            assert!(allowed(&map, deep), "{:?}", &key[..end]);
        }
    }

    #[test]
    fn wildcards_only_at_the_depths_given() {
        let map = allowlist(&[(b"https:///ten.elpmaxe.", entry_kind::WILDCARD)]);
        let mut parse = OriginParse::default();
        parse.load(b"https://a.example.net").unwrap();
        parse.normalize().unwrap();
        assert!(is_allowed(&mut parse, 0b10, |hash| map.get(&hash)));
        assert!(!is_allowed(&mut parse, 0b01, |hash| map.get(&hash)));
        assert!(!is_allowed(&mut parse, 0, |hash| map.get(&hash)));
    }

    #[test]
    fn the_most_specific_entry_gives_the_methods() {
        use crate::method::Method;
        let get = MethodSet::NONE.with(Method::Get);
        let post = MethodSet::NONE.with(Method::Post);
        let entries: [(&[u8], u32, MethodSet); 3] = [
            (b"https:///ten.elpmaxe.", entry_kind::WILDCARD, get),
            (b"https:///ten.elpmaxe.ipa.", entry_kind::WILDCARD, post),
            (
                b"https:///ten.elpmaxe.ipa.a\0",
                entry_kind::EXACT,
                MethodSet::ANY,
            ),
        ];
        let map: HashMap<u64, AllowEntryValue> = entries
            .iter()
            .map(|(key, kind, methods)| {
                let value = AllowEntryValue::new(key, *kind, *methods);
                (key_hash(&value.key, key.len()), value)
            })
            .collect();
        let methods = |origin: &str| {
            let mut parse = OriginParse::default();
            parse.load(origin.as_bytes()).unwrap();
            parse.normalize().unwrap();
            allowed_methods(&mut parse, u32::MAX, |hash| map.get(&hash))
        };
        assert_eq!(methods("https://x.example.net"), get);
        assert_eq!(methods("https://b.api.example.net"), post);
        assert_eq!(methods("https://a.api.example.net"), MethodSet::ANY);
        assert_eq!(methods("https://example.net"), MethodSet::NONE);
    }

    #[test]
    fn the_hash_reads_only_the_prefix() {
        let mut a = OriginKey::default();
        let mut b = OriginKey::default();
        a.bytes[..19].copy_from_slice(b"https:///moc.elpmax");
        b.bytes[..19].copy_from_slice(b"https:///moc.elpmaz");
        for len in 0..19 {
            assert_eq!(key_hash(&a, len), key_hash(&b, len), "{len}");
        }
        assert_ne!(key_hash(&a, 19), key_hash(&b, 19));
    }
}
