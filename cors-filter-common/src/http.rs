//! Bounds and byte classes of the HTTP/1.x parsing that the program and
//! userspace share (the parser itself is `crate::stream`).

/// Bytes of TCP payload loaded into the scratch space at once (a chunk of
/// the segment the parser reads).
pub const SCAN_BYTES: usize = 1024;
/// The program proves a chunk's length is 1 to `SCAN_BYTES` by masking it
/// with `SCAN_BYTES - 1` (`PacketBytes::load` in `cors-filter-ebpf`): any
/// other size would cut chunks silently.
const _: () = assert!(SCAN_BYTES.is_power_of_two());
/// Size of the buffer the payload is copied into: a power of two, larger than
/// [`SCAN_BYTES`], so that an index masked with [`SCAN_MASK`] is in bounds
/// and every fixed-width window that starts inside a chunk stays inside.
pub const SCAN_BUF_LEN: usize = 2048;
pub const SCAN_MASK: usize = SCAN_BUF_LEN - 1;
const _: () = assert!(SCAN_BUF_LEN.is_power_of_two() && SCAN_BUF_LEN >= 2 * SCAN_BYTES);

/// The buffer a chunk of payload is copied into, aligned to 8 bytes so that
/// the parser reads it a 64-bit word at a time with aligned loads (the BPF
/// target splits an unaligned 8-byte load into eight byte loads).
#[repr(C, align(8))]
#[derive(Clone)]
pub struct ScanBuf(pub [u8; SCAN_BUF_LEN]);

/// Bytes the parser reads at once: a `u64`.
pub const WORD: usize = 8;
const _: () = assert!(WORD == core::mem::size_of::<u64>());
/// The buffer is a whole number of words ([`ScanBuf::aligned_word`]
/// indexes them modulo their count), and [`ScanBuf::word_at`] serves the
/// two words from any byte of a chunk rather than 0.
const _: () = assert!(SCAN_BUF_LEN.is_multiple_of(WORD));
const _: () = assert!(SCAN_BYTES - 1 <= SCAN_BUF_LEN - 2 * WORD);

impl ScanBuf {
    /// The aligned word that holds the byte at `from`, little-endian.
    #[inline(always)]
    pub fn aligned_word(&self, from: usize) -> u64 {
        u64::from_le(self.words()[(from / WORD) % (SCAN_BUF_LEN / WORD)])
    }

    /// The `N` aligned words from the one that holds the byte at `from`,
    /// which is in a chunk (below [`SCAN_BYTES`], to which it is masked):
    /// one address, and each word a load at a fixed offset from it.
    #[inline(always)]
    pub fn aligned_words<const N: usize>(&self, from: usize) -> &[u64; N] {
        const { assert!(SCAN_BYTES + N * WORD <= SCAN_BUF_LEN) };
        let first = (from % SCAN_BYTES) / WORD;
        // SAFETY: `first + N` words are at most `SCAN_BUF_LEN / WORD`
        // (asserted above), all in the buffer.
        unsafe { &*self.words().as_ptr().add(first).cast::<[u64; N]>() }
    }

    #[inline(always)]
    fn words(&self) -> &[u64; SCAN_BUF_LEN / WORD] {
        // SAFETY: `ScanBuf` is 8-byte aligned and its size a multiple of
        // 8, so it is an array of `u64`s, any bits of which are a value.
        unsafe { &*(self as *const ScanBuf).cast::<[u64; SCAN_BUF_LEN / WORD]>() }
    }

    /// The 8 bytes at `from`, little-endian, from the two aligned words
    /// they span; 0 when they would reach past the buffer's last word
    /// (never: the parser reads within a chunk and a line's first bytes).
    #[inline(always)]
    pub fn word_at(&self, from: usize) -> u64 {
        let from = from & SCAN_MASK;
        if from > SCAN_BUF_LEN - 2 * WORD {
            return 0;
        }
        let words = self.words();
        let at = from / WORD;
        let shift = 8 * (from % WORD);
        let low = u64::from_le(words[at]);
        let high = u64::from_le(words[at + 1]);
        // `high << (64 - shift)`, which is 0 rather than undefined at shift 0.
        (low >> shift) | ((high << 1) << (63 - shift))
    }
}

const _: () = assert!(core::mem::size_of::<ScanBuf>() == SCAN_BUF_LEN);

impl core::ops::Deref for ScanBuf {
    type Target = [u8; SCAN_BUF_LEN];
    #[inline(always)]
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl core::ops::DerefMut for ScanBuf {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

/// RFC 9110 `tchar`.
#[inline(always)]
pub const fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_the_bytes_at_any_offset() {
        let mut buf = ScanBuf([0; SCAN_BUF_LEN]);
        for (i, b) in buf.iter_mut().enumerate() {
            *b = (i * 7 + i / 256) as u8;
        }
        for from in 0..=SCAN_BUF_LEN - 2 * WORD {
            let mut bytes = [0u8; WORD];
            bytes.copy_from_slice(&buf[from..from + WORD]);
            assert_eq!(buf.word_at(from), u64::from_le_bytes(bytes), "at {from}");
            let aligned = from - from % WORD;
            bytes.copy_from_slice(&buf[aligned..aligned + WORD]);
            assert_eq!(
                buf.aligned_word(from),
                u64::from_le_bytes(bytes),
                "at {from}"
            );
        }
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::{SCAN_BUF_LEN, ScanBuf};

    /// `bytes` at the start of a zeroed scan buffer.
    pub fn buf_of(bytes: &[u8]) -> ScanBuf {
        let mut buf = ScanBuf([0u8; SCAN_BUF_LEN]);
        let n = bytes.len().min(SCAN_BUF_LEN);
        buf[..n].copy_from_slice(&bytes[..n]);
        buf
    }
}
