//! Packet captures for `replay`: pcap or pcapng (told apart by their first
//! bytes), Ethernet link type only, read with the `pcap-parser` crate as a
//! stream so that a capture of any size takes constant memory.
//!
//! A frame that was cut short when it was captured (captured length below
//! the original length) is an error, not a frame: run through the filter it
//! would get the verdict of a packet that never existed.

use std::{fs::File, path::Path};

use anyhow::{Context, Result, bail};
use pcap_parser::{Block, Linktype, PcapBlockOwned, PcapError, create_reader};

/// Bytes buffered: more than any record (pcap writers cap a record at
/// 256 KiB), so a whole block always fits.
const BUFFER_BYTES: usize = 1 << 20;

/// What to do with the next block, decided while the reader still borrows
/// its buffer.
enum Step {
    Frame(usize),
    Skip(usize),
    Refill,
    End,
}

/// Calls `on_frame(index, frame)` for every frame of the capture at `path`,
/// in order, `index` counting from 0. Returns how many frames there were.
pub fn for_each_frame(
    path: &Path,
    mut on_frame: impl FnMut(u64, &[u8]) -> Result<()>,
) -> Result<u64> {
    let shown = path.display();
    let file = File::open(path).with_context(|| format!("cannot open capture {shown}"))?;
    let mut reader = create_reader(BUFFER_BYTES, file).map_err(|e| match e {
        PcapError::Eof => anyhow::anyhow!("capture {shown} is empty"),
        e => anyhow::anyhow!("{shown} is not a pcap or pcapng capture: {}", describe(&e)),
    })?;
    // pcapng: the link type of each interface of the current section.
    let mut interfaces: Vec<Linktype> = Vec::new();
    let mut frames = 0u64;
    loop {
        let consumed = reader.consumed();
        let step = match reader.next() {
            Ok((size, block)) => {
                let frame = frame_of(&block, &mut interfaces)
                    .with_context(|| format!("{shown}: record {frames} (byte {consumed})"))?;
                match frame {
                    Some(data) => {
                        on_frame(frames, data)?;
                        Step::Frame(size)
                    }
                    None => Step::Skip(size),
                }
            }
            Err(PcapError::Eof) => Step::End,
            Err(PcapError::Incomplete(_)) => Step::Refill,
            Err(e) => bail!(
                "{shown}: unreadable at byte {consumed}, after {frames} frame(s): {}",
                describe(&e)
            ),
        };
        match step {
            Step::Frame(size) => {
                frames += 1;
                reader.consume(size);
            }
            Step::Skip(size) => reader.consume(size),
            Step::Refill => reader
                .refill()
                .map_err(|e| anyhow::anyhow!("cannot read {shown}: {}", describe(&e)))?,
            Step::End => return Ok(frames),
        }
    }
}

/// The Ethernet frame a block carries, if it carries one.
fn frame_of<'a>(
    block: &'a PcapBlockOwned<'a>,
    interfaces: &mut Vec<Linktype>,
) -> Result<Option<&'a [u8]>> {
    let (linktype, data, original) = match block {
        PcapBlockOwned::LegacyHeader(header) => {
            require_ethernet(header.network)?;
            return Ok(None);
        }
        PcapBlockOwned::Legacy(record) => (Linktype::ETHERNET, record.data, record.origlen),
        PcapBlockOwned::NG(Block::SectionHeader(_)) => {
            interfaces.clear();
            return Ok(None);
        }
        PcapBlockOwned::NG(Block::InterfaceDescription(interface)) => {
            interfaces.push(interface.linktype);
            return Ok(None);
        }
        PcapBlockOwned::NG(Block::EnhancedPacket(packet)) => {
            let Some(linktype) = interfaces.get(packet.if_id as usize) else {
                bail!(
                    "packet of interface {} which the section does not describe",
                    packet.if_id
                );
            };
            let captured = packet
                .data
                .get(..packet.caplen as usize)
                .with_context(|| format!("captured length {} exceeds the block", packet.caplen))?;
            (*linktype, captured, packet.origlen)
        }
        PcapBlockOwned::NG(Block::SimplePacket(packet)) => {
            let Some(linktype) = interfaces.first() else {
                bail!("simple packet block before any interface description");
            };
            let captured = &packet.data[..packet.data.len().min(packet.origlen as usize)];
            (*linktype, captured, packet.origlen)
        }
        PcapBlockOwned::NG(_) => return Ok(None),
    };
    require_ethernet(linktype)?;
    if data.len() < original as usize {
        bail!(
            "frame captured truncated: {} of its {original} bytes (capture with a snap length of 0, e.g. `tcpdump -s 0`)",
            data.len()
        );
    }
    Ok(Some(data))
}

fn require_ethernet(linktype: Linktype) -> Result<()> {
    if linktype != Linktype::ETHERNET {
        bail!(
            "link type {} is not Ethernet (1); replay runs the XDP program, which sees Ethernet frames",
            linktype.0
        );
    }
    Ok(())
}

/// A reader error in words, without the raw input `Display` would dump.
fn describe<I>(error: &PcapError<I>) -> String {
    match error {
        PcapError::Eof | PcapError::UnexpectedEof => "the file ends inside a block".into(),
        PcapError::BufferTooSmall => format!("a block is larger than {BUFFER_BYTES} bytes"),
        PcapError::ReadError => "read error".into(),
        PcapError::Incomplete(_) => "the file ends inside a block".into(),
        PcapError::HeaderNotRecognized => "no pcap or pcapng header".into(),
        PcapError::NomError(_, kind) => format!("malformed block ({kind:?})"),
        PcapError::OwnedNomError(_, kind) => format!("malformed block ({kind:?})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A classic pcap: little-endian header with `linktype`, then one record
    /// per `(captured, original length)`.
    fn legacy(linktype: u32, records: &[(&[u8], u32)]) -> Vec<u8> {
        let mut out = Vec::new();
        for field in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 262_144, linktype] {
            out.extend(field.to_le_bytes());
        }
        for (data, original) in records {
            for field in [0u32, 0, data.len() as u32, *original] {
                out.extend(field.to_le_bytes());
            }
            out.extend(*data);
        }
        out
    }

    fn read(bytes: &[u8]) -> Result<Vec<(u64, Vec<u8>)>> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "cors-filter-capture-test-{}-{n}.pcap",
            std::process::id()
        ));
        std::fs::write(&path, bytes)?;
        let mut frames = Vec::new();
        let result = for_each_frame(&path, |index, frame| {
            frames.push((index, frame.to_vec()));
            Ok(())
        });
        let _ = std::fs::remove_file(&path);
        assert_eq!(result?, frames.len() as u64);
        Ok(frames)
    }

    #[test]
    fn reads_frames_in_order() {
        let frames = read(&legacy(1, &[(b"first frame", 11), (b"second", 6)])).unwrap();
        assert_eq!(
            frames,
            [(0, b"first frame".to_vec()), (1, b"second".to_vec())]
        );
    }

    #[test]
    fn refuses_other_link_types_and_truncated_frames() {
        let e = format!("{:#}", read(&legacy(101, &[(b"x", 1)])).unwrap_err());
        assert!(e.contains("link type 101"), "{e}");
        let e = format!(
            "{:#}",
            read(&legacy(1, &[(b"ok", 2), (b"cut", 60)])).unwrap_err()
        );
        assert!(
            e.contains("record 1") && e.contains("3 of its 60 bytes"),
            "{e}"
        );
    }

    #[test]
    fn refuses_what_is_not_a_capture() {
        let e = format!("{:#}", read(b"GET / HTTP/1.1\r\n\r\n").unwrap_err());
        assert!(e.contains("not a pcap or pcapng"), "{e}");
        let whole = legacy(1, &[(b"a frame", 7)]);
        let e = format!("{:#}", read(&whole[..whole.len() - 3]).unwrap_err());
        assert!(e.contains("ends inside a block"), "{e}");
    }
}
