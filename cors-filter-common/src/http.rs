//! Bounds and byte classes of the HTTP/1.x parsing that the program and
//! userspace share (the parser itself is `crate::stream`).

/// Bytes of TCP payload loaded into the scratch space at once (a chunk of
/// the segment the parser reads).
pub const SCAN_BYTES: usize = 1024;
/// Size of the buffer the payload is copied into: a power of two, larger than
/// [`SCAN_BYTES`], so that an index masked with [`SCAN_MASK`] is in bounds
/// and every fixed-width window that starts inside a chunk stays inside.
pub const SCAN_BUF_LEN: usize = 2048;
pub const SCAN_MASK: usize = SCAN_BUF_LEN - 1;

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
pub(crate) mod tests_support {
    use super::SCAN_BUF_LEN;

    /// `bytes` at the start of a zeroed scan buffer.
    pub fn buf_of(bytes: &[u8]) -> [u8; SCAN_BUF_LEN] {
        let mut buf = [0u8; SCAN_BUF_LEN];
        let n = bytes.len().min(SCAN_BUF_LEN);
        buf[..n].copy_from_slice(&bytes[..n]);
        buf
    }
}
