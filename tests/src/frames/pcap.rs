//! Capture files for `cors-filter replay`, in both formats it reads: classic
//! libpcap and pcapng, Ethernet link type, little-endian; and a reader for
//! the classic captures `replay --replies` writes.
//!
//! Written by hand from the format specifications (the libpcap file format,
//! draft-ietf-opsawg-pcap; pcapng, draft-ietf-opsawg-pcapng) rather than with
//! a library: the product reads captures with `pcap-parser`, and a test whose
//! writer shares code or assumptions with the reader proves nothing.
//!
//! Timestamps are fixed (frame `i` at 2023-11-14 22:13:20 UTC plus `i` µs) so
//! that a capture's bytes depend on its frames only.

use std::path::Path;

use anyhow::{Context, Result, bail};

/// LINKTYPE_ETHERNET.
const LINKTYPE_ETHERNET: u16 = 1;
/// The snapshot length tcpdump uses by default: no frame here is cut.
const SNAPLEN: u32 = 262_144;
/// Classic libpcap with microsecond timestamps; written little-endian.
const PCAP_MAGIC: u32 = 0xa1b2_c3d4;
const PCAPNG_SECTION_HEADER: u32 = 0x0a0d_0d0a;
const PCAPNG_INTERFACE_DESCRIPTION: u32 = 1;
const PCAPNG_ENHANCED_PACKET: u32 = 6;
const PCAPNG_BYTE_ORDER_MAGIC: u32 = 0x1a2b_3c4d;
/// Seconds since the epoch of the first frame's timestamp.
const FIRST_TIMESTAMP: u64 = 1_700_000_000;

/// One frame in a capture: the bytes captured, and the frame's length on the
/// wire, larger when the capture cut it.
struct Record<'a> {
    data: &'a [u8],
    orig_len: usize,
}

/// Writes `frames` as a classic libpcap capture.
pub fn write_pcap(path: &Path, frames: &[Vec<u8>]) -> Result<()> {
    write(path, || pcap_bytes(SNAPLEN, &whole(frames)?))
}

/// Writes `frames` as a pcapng capture: a section header, one Ethernet
/// interface, an enhanced packet block per frame.
pub fn write_pcapng(path: &Path, frames: &[Vec<u8>]) -> Result<()> {
    write(path, || pcapng_bytes(SNAPLEN, &whole(frames)?))
}

/// Writes a classic libpcap capture of `frame` cut to its first `caplen`
/// bytes, as `tcpdump -s caplen` would (the snapshot length says so too): a
/// capture the product must refuse, not filter as if it were whole.
pub fn write_pcap_truncated(path: &Path, frame: &[u8], caplen: usize) -> Result<()> {
    write(path, || {
        let record = cut(frame, caplen)?;
        pcap_bytes(caplen as u32, &[record])
    })
}

/// As `write_pcap_truncated`, in pcapng.
pub fn write_pcapng_truncated(path: &Path, frame: &[u8], caplen: usize) -> Result<()> {
    write(path, || {
        let record = cut(frame, caplen)?;
        pcapng_bytes(caplen as u32, &[record])
    })
}

fn write(path: &Path, bytes: impl FnOnce() -> Result<Vec<u8>>) -> Result<()> {
    let bytes = bytes().with_context(|| format!("cannot make capture {}", path.display()))?;
    std::fs::write(path, bytes).with_context(|| format!("cannot write capture {}", path.display()))
}

fn whole(frames: &[Vec<u8>]) -> Result<Vec<Record<'_>>> {
    frames
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if f.len() > SNAPLEN as usize {
                bail!(
                    "frame {i} is {} bytes, more than the snapshot length {SNAPLEN}",
                    f.len()
                );
            }
            Ok(Record {
                data: f,
                orig_len: f.len(),
            })
        })
        .collect()
}

fn cut(frame: &[u8], caplen: usize) -> Result<Record<'_>> {
    if caplen == 0 || caplen >= frame.len() {
        bail!(
            "a truncated record keeps 1 to {} of the frame's {} bytes, not {caplen}",
            frame.len().saturating_sub(1),
            frame.len()
        );
    }
    Ok(Record {
        data: &frame[..caplen],
        orig_len: frame.len(),
    })
}

/// Microseconds since the epoch of record `i`.
fn timestamp_us(i: usize) -> u64 {
    FIRST_TIMESTAMP * 1_000_000 + i as u64
}

fn put32(out: &mut Vec<u8>, v: u32) {
    out.extend(v.to_le_bytes());
}

/// Global header (24 bytes), then per record a 16-byte header (seconds,
/// microseconds, captured length, original length) and the captured bytes.
fn pcap_bytes(snaplen: u32, records: &[Record]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    put32(&mut out, PCAP_MAGIC);
    out.extend(2u16.to_le_bytes()); // version 2.4
    out.extend(4u16.to_le_bytes());
    put32(&mut out, 0); // reserved (was thiszone)
    put32(&mut out, 0); // reserved (was sigfigs)
    put32(&mut out, snaplen);
    put32(&mut out, LINKTYPE_ETHERNET.into()); // FCS length 0, link type
    for (i, r) in records.iter().enumerate() {
        let ts = timestamp_us(i);
        put32(&mut out, (ts / 1_000_000) as u32);
        put32(&mut out, (ts % 1_000_000) as u32);
        put32(&mut out, u32::try_from(r.data.len())?);
        put32(&mut out, u32::try_from(r.orig_len)?);
        out.extend(r.data);
    }
    Ok(out)
}

/// A pcapng block: type, total length, `body` padded to 32 bits, total
/// length again (so a reader can walk backwards).
fn pcapng_block(out: &mut Vec<u8>, block_type: u32, body: &[u8]) -> Result<()> {
    let padded = body.len().next_multiple_of(4);
    let total = u32::try_from(12 + padded)?;
    put32(out, block_type);
    put32(out, total);
    out.extend(body);
    out.resize(out.len() + padded - body.len(), 0);
    put32(out, total);
    Ok(())
}

/// A section header block (version 1.0, section length unknown), one
/// interface description block, an enhanced packet block per record. No
/// options anywhere: microsecond timestamps are the default resolution.
fn pcapng_bytes(snaplen: u32, records: &[Record]) -> Result<Vec<u8>> {
    let mut out = Vec::new();

    let mut shb = Vec::new();
    put32(&mut shb, PCAPNG_BYTE_ORDER_MAGIC);
    shb.extend(1u16.to_le_bytes());
    shb.extend(0u16.to_le_bytes());
    shb.extend((-1i64).to_le_bytes());
    pcapng_block(&mut out, PCAPNG_SECTION_HEADER, &shb)?;

    let mut idb = Vec::new();
    idb.extend(LINKTYPE_ETHERNET.to_le_bytes());
    idb.extend(0u16.to_le_bytes()); // reserved
    put32(&mut idb, snaplen);
    pcapng_block(&mut out, PCAPNG_INTERFACE_DESCRIPTION, &idb)?;

    for (i, r) in records.iter().enumerate() {
        let ts = timestamp_us(i);
        let mut epb = Vec::new();
        put32(&mut epb, 0); // interface id
        put32(&mut epb, (ts >> 32) as u32);
        put32(&mut epb, ts as u32);
        put32(&mut epb, u32::try_from(r.data.len())?);
        put32(&mut epb, u32::try_from(r.orig_len)?);
        epb.extend(r.data);
        pcapng_block(&mut out, PCAPNG_ENHANCED_PACKET, &epb)?;
    }
    Ok(out)
}

/// Reads the frames of a classic libpcap capture (little-endian, Ethernet),
/// such as `replay --replies` writes; a record cut short by the snapshot
/// length is an error.
pub fn read_pcap(path: &Path) -> Result<Vec<Vec<u8>>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let word = |at: usize| -> Result<u32> {
        let b = bytes
            .get(at..at + 4)
            .with_context(|| format!("{}: cut short at byte {at}", path.display()))?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    if word(0)? != PCAP_MAGIC {
        bail!("{} is not a little-endian pcap capture", path.display());
    }
    if word(20)? != u32::from(LINKTYPE_ETHERNET) {
        bail!(
            "{}: link type {} is not Ethernet",
            path.display(),
            word(20)?
        );
    }
    let mut frames = Vec::new();
    let mut at = 24;
    while at < bytes.len() {
        let (caplen, orig_len) = (word(at + 8)? as usize, word(at + 12)? as usize);
        if caplen != orig_len {
            bail!(
                "{}: record {} keeps {caplen} of {orig_len} bytes",
                path.display(),
                frames.len()
            );
        }
        let data = bytes
            .get(at + 16..at + 16 + caplen)
            .with_context(|| format!("{}: record {} cut short", path.display(), frames.len()))?;
        frames.push(data.to_vec());
        at += 16 + caplen;
    }
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TempDir;

    fn le32(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    fn le16(b: &[u8], at: usize) -> u16 {
        u16::from_le_bytes(b[at..at + 2].try_into().unwrap())
    }

    /// Frames of 1, 3 and 60 bytes: no padding, and both paddings pcapng needs.
    fn frames() -> Vec<Vec<u8>> {
        vec![vec![0xaa], vec![1, 2, 3], (0..60).collect()]
    }

    #[test]
    fn pcap_header_and_records() {
        let dir = TempDir::new("pcap").unwrap();
        let path = dir.path().join("a.pcap");
        write_pcap(&path, &frames()).unwrap();
        let b = std::fs::read(&path).unwrap();
        assert_eq!(
            &b[..4],
            &[0xd4, 0xc3, 0xb2, 0xa1],
            "little-endian, microseconds"
        );
        assert_eq!((le16(&b, 4), le16(&b, 6)), (2, 4));
        assert_eq!((le32(&b, 8), le32(&b, 12)), (0, 0));
        assert_eq!(le32(&b, 16), 262_144);
        assert_eq!(le32(&b, 20), 1);
        let mut at = 24;
        for (i, f) in frames().iter().enumerate() {
            assert_eq!(le32(&b, at), 1_700_000_000);
            assert_eq!(le32(&b, at + 4), i as u32);
            assert_eq!(le32(&b, at + 8) as usize, f.len());
            assert_eq!(le32(&b, at + 12) as usize, f.len());
            assert_eq!(&b[at + 16..at + 16 + f.len()], f.as_slice());
            at += 16 + f.len();
        }
        assert_eq!(at, b.len());
    }

    /// Splits a pcapng file into (type, body) blocks, checking both copies of
    /// each total length and the 32-bit alignment.
    fn pcapng_blocks(b: &[u8]) -> Vec<(u32, &[u8])> {
        let mut blocks = Vec::new();
        let mut at = 0;
        while at < b.len() {
            let total = le32(b, at + 4) as usize;
            assert_eq!(total % 4, 0);
            assert_eq!(le32(b, at + total - 4) as usize, total);
            blocks.push((le32(b, at), &b[at + 8..at + total - 4]));
            at += total;
        }
        assert_eq!(at, b.len());
        blocks
    }

    #[test]
    fn pcapng_blocks_and_padding() {
        let dir = TempDir::new("pcap").unwrap();
        let path = dir.path().join("a.pcapng");
        write_pcapng(&path, &frames()).unwrap();
        let b = std::fs::read(&path).unwrap();
        assert_eq!(&b[..4], &[0x0a, 0x0d, 0x0d, 0x0a]);
        let blocks = pcapng_blocks(&b);
        assert_eq!(blocks.len(), 2 + frames().len());

        let (t, shb) = blocks[0];
        assert_eq!((t, shb.len()), (0x0a0d_0d0a, 16));
        assert_eq!(&shb[..4], &[0x4d, 0x3c, 0x2b, 0x1a], "little-endian");
        assert_eq!((le16(shb, 4), le16(shb, 6)), (1, 0));
        assert_eq!(&shb[8..], &[0xff; 8], "section length unknown");

        let (t, idb) = blocks[1];
        assert_eq!((t, idb.len()), (1, 8));
        assert_eq!((le16(idb, 0), le16(idb, 2)), (1, 0));
        assert_eq!(le32(idb, 4), 262_144);

        for (i, f) in frames().iter().enumerate() {
            let (t, epb) = blocks[2 + i];
            assert_eq!(t, 6);
            assert_eq!(le32(epb, 0), 0, "interface 0");
            let ts = (u64::from(le32(epb, 4)) << 32) | u64::from(le32(epb, 8));
            assert_eq!(ts, 1_700_000_000_000_000 + i as u64);
            assert_eq!(le32(epb, 12) as usize, f.len());
            assert_eq!(le32(epb, 16) as usize, f.len());
            assert_eq!(epb.len(), 20 + f.len().next_multiple_of(4));
            assert_eq!(&epb[20..20 + f.len()], f.as_slice());
            assert!(epb[20 + f.len()..].iter().all(|&p| p == 0), "zero padding");
        }
    }

    #[test]
    fn truncated_records() {
        let dir = TempDir::new("pcap").unwrap();
        let frame: Vec<u8> = (0..100).collect();

        let path = dir.path().join("t.pcap");
        write_pcap_truncated(&path, &frame, 54).unwrap();
        let b = std::fs::read(&path).unwrap();
        assert_eq!(le32(&b, 16), 54, "snapshot length");
        assert_eq!((le32(&b, 32), le32(&b, 36)), (54, 100));
        assert_eq!(&b[40..], &frame[..54]);

        let path = dir.path().join("t.pcapng");
        write_pcapng_truncated(&path, &frame, 54).unwrap();
        let b = std::fs::read(&path).unwrap();
        let blocks = pcapng_blocks(&b);
        assert_eq!(le32(blocks[1].1, 4), 54, "snapshot length");
        let epb = blocks[2].1;
        assert_eq!((le32(epb, 12), le32(epb, 16)), (54, 100));
        assert_eq!(&epb[20..74], &frame[..54]);
        assert_eq!(epb.len(), 76);

        for caplen in [0, 100, 101] {
            assert!(write_pcap_truncated(&path, &frame, caplen).is_err());
        }
    }

    #[test]
    fn errors_name_the_path() {
        let dir = TempDir::new("pcap").unwrap();
        let path = dir.path().join("missing-dir/a.pcap");
        let err = write_pcap(&path, &frames()).unwrap_err();
        assert!(format!("{err:#}").contains(&path.display().to_string()));
        let err = write_pcapng_truncated(&path, &[1, 2], 5).unwrap_err();
        assert!(format!("{err:#}").contains(&path.display().to_string()));
    }
}
