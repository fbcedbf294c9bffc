//! Word-at-a-time scans of the loaded chunk (`Scratch::payload`, a
//! [`ScanBuf`]): where a line ends and whether it holds a bare `\r`, which
//! header a line is by its name, a known method at the start of a request.
//! Each reads 8 bytes a step and leaves the state machine to `super`.

use super::{NAMES, WHOLE_LINE, header};
use crate::{
    http::{SCAN_BYTES, SCAN_MASK, ScanBuf, WORD},
    method::Method,
};

/// A header name and its colon cut into little-endian words, for matching
/// a whole line's start a word at a time: per word, the pattern's bytes,
/// the bits set before comparing (0x20 on letters: ORing it folds exactly
/// the two cases of a letter onto the lower-case one; other bytes compare
/// as they are), and which bytes count (the last word may be partial).
struct NamePattern {
    value: [u64; PATTERN_WORDS],
    fold: [u64; PATTERN_WORDS],
    care: [u64; PATTERN_WORDS],
    /// Bytes, the colon included.
    len: usize,
}

/// Words of a [`NamePattern`]: a name and its colon fit in them.
const PATTERN_WORDS: usize = 4;
const _: () = assert!(PATTERN_WORDS.is_power_of_two());

impl NamePattern {
    const fn of(name: &[u8]) -> NamePattern {
        let (mut value, mut fold, mut care) =
            ([0; PATTERN_WORDS], [0; PATTERN_WORDS], [0; PATTERN_WORDS]);
        let mut k = 0;
        while k <= name.len() {
            let b = if k == name.len() { b':' } else { name[k] };
            let shift = 8 * (k % WORD);
            value[k / WORD] |= (b as u64) << shift;
            if b.is_ascii_lowercase() {
                fold[k / WORD] |= 0x20 << shift;
            }
            care[k / WORD] |= 0xff << shift;
            k += 1;
        }
        NamePattern {
            value,
            fold,
            care,
            len: name.len() + 1,
        }
    }
}

/// [`NAMES`] as patterns, in the same order.
const NAME_PATTERNS: [NamePattern; NAMES.len()] = {
    let mut i = 0;
    let mut patterns = [const {
        NamePattern {
            value: [0; PATTERN_WORDS],
            fold: [0; PATTERN_WORDS],
            care: [0; PATTERN_WORDS],
            len: 0,
        }
    }; NAMES.len()];
    while i < NAMES.len() {
        assert!(NAMES[i].len() < PATTERN_WORDS * WORD);
        patterns[i] = NamePattern::of(NAMES[i]);
        i += 1;
    }
    patterns
};

const LOWS: u64 = 0x7f7f_7f7f_7f7f_7f7f;

/// The high bit of every byte of `word` that is `\n`, and no other bit
/// (see `http::byte_marks`).
#[inline(always)]
const fn line_end_marks(word: u64) -> u64 {
    byte_marks(word, b'\n')
}

/// The high bit of every byte of `word` below 0x0E (`\t`, `\n` and `\r`
/// among them), and no other bit: `(b & 0x7f) + 0x72` reaches 0x80 iff
/// `b & 0x7f` is 0x0E or more, with no carry out of the byte; ORing `word`
/// marks the bytes from 0x80 on too.
#[inline(always)]
const fn control_marks(word: u64) -> u64 {
    !(((word & LOWS) + 0x7272_7272_7272_7272) | word) & !LOWS
}

/// The end of a line the chunk holds within [`WHOLE_LINE`] bytes (see
/// [`whole_line_end`]).
#[derive(Clone, Copy)]
pub(super) struct LineEnd {
    /// Where its `\n` is, counted from the line's first byte read.
    pub(super) end: usize,
    /// Non-zero when a byte before `end - 1` is a `\r`: a bare one, as
    /// the first `\n` is at `end` (see [`head_flags::BARE_CR`](super::head_flags::BARE_CR)).
    pub(super) bare_cr: u64,
}

/// Where the `\n` that ends the line starting at `at` is, counted from
/// `at`, if it lies within [`WHOLE_LINE`] bytes and the `avail` bytes of
/// the chunk from `at`; and whether the bytes before it hold a bare `\r`,
/// found in the same pass (a `\r` right before the `\n` is not bare).
///
/// Reads the buffer's aligned words from the one `at` (in the chunk) is
/// in, bytes before `at` masked off, one load each at a fixed offset.
/// Words past the chunk are read too (stale bytes, inside the buffer): a
/// `\n` found there is past `avail`, so there is none before it.
///
/// Most words of a line hold no byte below 0x0E ([`control_marks`]), so
/// neither a `\n` nor a `\r`: one test each, and only the others are
/// looked at byte by byte. The word loop is written out (a macro): as a
/// loop with that branch, LLVM keeps it rolled.
// The last word's count of `\r`s is not read: no word follows it.
#[allow(unused_assignments)]
#[inline(always)]
pub(super) fn whole_line_end(buf: &ScanBuf, at: usize, avail: usize) -> Option<LineEnd> {
    // In the chunk, as `aligned_words` and the `\r` read of `line_end_in`
    // both take it (they wrap at different bounds).
    debug_assert!(at < SCAN_BYTES);
    let words = buf.aligned_words::<{ WHOLE_LINE / WORD + 1 }>(at);
    // How many `\r` the words before the one read hold, per byte lane
    // (at most one a word: no carry crosses lanes).
    let mut crs = 0u64;
    macro_rules! word {
        ($w:expr, $keep:expr) => {
            let keep: u64 = $keep;
            let word = u64::from_le(words[$w]);
            if control_marks(word) & keep != 0 {
                let marks = line_end_marks(word) & keep;
                if marks != 0 {
                    return line_end_in(buf, at, avail, $w, word & keep, marks, crs);
                }
                crs += (byte_marks(word, b'\r') & keep) >> 7;
            }
        };
    }
    word!(0, u64::MAX << (8 * (at % WORD)));
    word!(1, u64::MAX);
    word!(2, u64::MAX);
    word!(3, u64::MAX);
    word!(4, u64::MAX);
    word!(5, u64::MAX);
    word!(6, u64::MAX);
    word!(7, u64::MAX);
    word!(8, u64::MAX);
    word!(9, u64::MAX);
    word!(10, u64::MAX);
    word!(11, u64::MAX);
    word!(12, u64::MAX);
    word!(13, u64::MAX);
    word!(14, u64::MAX);
    word!(15, u64::MAX);
    word!(16, u64::MAX);
    const _: () = assert!(WHOLE_LINE / WORD == 16);
    None
}

/// [`whole_line_end`]'s answer from the first word with a `\n`, the `w`th
/// (`word`, its bytes before `at` cleared; `marks`, its `\n` marks), and
/// the `\r`s counted before it (`crs`).
#[inline(always)]
fn line_end_in(
    buf: &ScanBuf,
    at: usize,
    avail: usize,
    w: usize,
    word: u64,
    marks: u64,
    crs: u64,
) -> Option<LineEnd> {
    let at_lf = first_marked(marks);
    let end = w * WORD + at_lf - at % WORD;
    if end >= avail || end >= WHOLE_LINE {
        return None;
    }
    // With this word's before the byte before the `\n` (none at at_lf 0
    // or 1); a `\r` right before the `\n` is not bare: at at_lf 0, the
    // last word's top byte, counted in `crs`, taken back off.
    let before_lf = (1u64 << (8 * at_lf)) - 1;
    let crs = crs + ((byte_marks(word, b'\r') & (before_lf >> 8)) >> 7);
    let cr_lf = at_lf == 0 && w > 0 && buf.aligned_word(at + end - 1) >> 56 == b'\r' as u64;
    Some(LineEnd {
        end,
        bare_cr: crs - ((cr_lf as u64) << 56),
    })
}

/// The index of the first byte of `word` whose high bit is set (`marks`
/// holds only such bits, and at least one): multiplied by a constant, the
/// lowest mark's byte shifts the index into the top byte. BPF has no
/// count-trailing-zeros instruction, and LLVM's stand-in loads from a table.
#[inline(always)]
const fn first_marked(marks: u64) -> usize {
    let lowest = (marks & marks.wrapping_neg()) >> 7;
    (lowest.wrapping_mul(0x0001_0203_0405_0607) >> 56) as usize
}

/// The high bit of every byte of `word` that is `byte`, and no other bit
/// (see [`line_end_marks`]).
#[inline(always)]
pub(super) const fn byte_marks(word: u64, byte: u8) -> u64 {
    let x = word ^ (0x0101_0101_0101_0101 * byte as u64);
    !(((x & LOWS) + LOWS) | x | LOWS)
}

/// Which header (a [`header`]) among `names` (bit `h - 1` for header `h`)
/// the line of `len` bytes at `at` is, by its name and colon, a word at a
/// time: the names read start with distinct letters, so the first byte
/// picks the one name the line may be.
#[inline(always)]
pub(super) fn header_of_line(buf: &ScanBuf, at: usize, len: usize, names: u32) -> u32 {
    let i = match buf[at & SCAN_MASK] | 0x20 {
        b'o' => header::ORIGIN,
        b'a' => header::REQUEST_METHOD,
        b's' => header::SEC_FETCH_SITE,
        b'c' => header::CONTENT_LENGTH,
        b't' => header::TRANSFER_ENCODING,
        b'u' => header::UPGRADE,
        b'x' => header::X_FORWARDED_FOR,
        b'f' => header::FORWARDED,
        _ => return header::NONE,
    } as usize
        - 1;
    // A name not read on this port: not compared at all.
    if names & (1 << i) == 0 {
        return header::NONE;
    }
    let pattern = &NAME_PATTERNS[i % NAMES.len()];
    if len < pattern.len {
        return header::NONE;
    }
    let mut diff = 0u64;
    let mut w = 0;
    while w < pattern.len.div_ceil(WORD) {
        let word = buf.word_at(at + w * WORD);
        // Masked, though the lengths keep `w` in the arrays (see
        // `NAME_PATTERNS`): the program keeps no panic path.
        let p = w & (PATTERN_WORDS - 1);
        diff |= ((word | pattern.fold[p]) ^ pattern.value[p]) & pattern.care[p];
        w += 1;
    }
    if diff == 0 {
        i as u32 + 1
    } else {
        header::NONE
    }
}

/// Every name read starts with its own letter (see [`header_of_line`]),
/// numbered as [`header`] says.
const _: () = {
    let firsts = *b"oasctuxf";
    assert!(NAMES.len() == firsts.len());
    let mut i = 0;
    while i < NAMES.len() {
        assert!(NAMES[i][0] == firsts[i]);
        i += 1;
    }
    assert!(header::ORIGIN == 1 && header::REQUEST_METHOD == 2 && header::SEC_FETCH_SITE == 3);
    assert!(header::CONTENT_LENGTH == 4 && header::TRANSFER_ENCODING == 5 && header::UPGRADE == 6);
    assert!(header::X_FORWARDED_FOR == 7 && header::FORWARDED == 8);
};

/// A known method's token and the space after it, at `at` in the chunk
/// (`avail` bytes from `at`): the token's bytes (little-endian) and
/// length. `None` for anything else, which is read a byte at a time.
#[inline(always)]
pub(super) fn known_method_at(buf: &ScanBuf, at: usize, avail: usize) -> Option<(u64, usize)> {
    if avail <= WORD {
        return None;
    }
    let word = buf.word_at(at);
    let spaces = byte_marks(word, b' ');
    if spaces == 0 {
        return None;
    }
    let len = first_marked(spaces);
    let token = word & ((1u64 << (8 * len)) - 1);
    (Method::of_token(token, len as u32) != Method::Other).then_some((token, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::SCAN_BUF_LEN;

    #[test]
    fn control_marks_are_the_bytes_below_0x0e() {
        for b in 0..=255u8 {
            for k in 0..WORD {
                let word = 0x4141_4141_4141_4141u64 & !(0xff << (8 * k)) | (b as u64) << (8 * k);
                let want = if b < 0x0e { 0x80u64 << (8 * k) } else { 0 };
                assert_eq!(control_marks(word), want, "{b:#x} at {k}");
            }
        }
    }

    /// [`whole_line_end`] byte by byte: the first `\n` within
    /// `WHOLE_LINE` and `avail` bytes of `at`, and a `\r` before the byte
    /// before it.
    fn line_end_bytewise(buf: &ScanBuf, at: usize, avail: usize) -> Option<(usize, bool)> {
        let end = (0..WHOLE_LINE).find(|&k| buf[at + k] == b'\n')?;
        (end < avail).then(|| {
            (
                end,
                (0..end.saturating_sub(1)).any(|k| buf[at + k] == b'\r'),
            )
        })
    }

    #[test]
    fn whole_line_end_agrees_with_a_byte_at_a_time_scan() {
        let alphabet = *b"a\r\n\t\x0e\x0d\x8d\x8a\x00\xff :";
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut buf = ScanBuf([0; SCAN_BUF_LEN]);
        for round in 0..200_000 {
            // Mostly plain bytes, a few of the others, in lines of any length.
            let rare = 1 + (next() % 64) as usize;
            let at = if round % 4 == 3 {
                (next() % SCAN_BYTES as u64) as usize
            } else {
                (next() % (2 * WORD as u64)) as usize
            };
            let base = at - at % WORD;
            for b in buf.iter_mut().skip(base).take(WHOLE_LINE + 2 * WORD) {
                let r = next();
                *b = if (r % rare as u64) == 0 {
                    alphabet[(r >> 32) as usize % alphabet.len()]
                } else {
                    b'a'
                };
            }
            let avail = if round % 2 == 0 {
                SCAN_BYTES
            } else {
                1 + (next() % 140) as usize
            };
            let got = whole_line_end(&buf, at, avail).map(|l| (l.end, l.bare_cr != 0));
            assert_eq!(
                got,
                line_end_bytewise(&buf, at, avail),
                "at {at} avail {avail}: {:?}",
                &buf[..160]
            );
        }
    }

    #[test]
    fn first_marked_is_the_lowest_marked_byte() {
        for low in 0..8 {
            for high in low..8 {
                let marks = (0x80u64 << (8 * low)) | (0x80u64 << (8 * high));
                assert_eq!(first_marked(marks), low, "{marks:#x}");
            }
        }
    }
}
