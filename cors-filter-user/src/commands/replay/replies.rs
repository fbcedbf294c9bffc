//! The frames `replay` saw the program send back (`--replies FILE`), written
//! as a classic libpcap capture (little-endian, microsecond timestamps,
//! Ethernet), which tcpdump, Wireshark and `replay` itself read.
//!
//! Records carry no time of their own: frame `n` of the file is stamped `n`
//! microseconds after the epoch, so that a file depends on its frames only.

use std::{
    fs::File,
    io::{BufWriter, Write as _},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

const PCAP_MAGIC: u32 = 0xa1b2_c3d4;
const LINKTYPE_ETHERNET: u32 = 1;
/// tcpdump's default snapshot length; no reply comes near it.
const SNAPLEN: u32 = 262_144;

pub struct ReplyCapture {
    out: BufWriter<File>,
    path: PathBuf,
    frames: u64,
}

impl ReplyCapture {
    /// Creates (or truncates) the capture at `path` and writes its header.
    pub fn create(path: &Path) -> Result<ReplyCapture> {
        let file = File::create(path)
            .with_context(|| format!("cannot create reply capture {}", path.display()))?;
        let mut capture = ReplyCapture {
            out: BufWriter::new(file),
            path: path.to_owned(),
            frames: 0,
        };
        let mut header = Vec::with_capacity(24);
        header.extend(PCAP_MAGIC.to_le_bytes());
        header.extend(2u16.to_le_bytes()); // version 2.4
        header.extend(4u16.to_le_bytes());
        header.extend(0i32.to_le_bytes()); // GMT offset
        header.extend(0u32.to_le_bytes()); // timestamp accuracy
        header.extend(SNAPLEN.to_le_bytes());
        header.extend(LINKTYPE_ETHERNET.to_le_bytes());
        capture.write(&header)?;
        Ok(capture)
    }

    /// Appends `frame` as the next record.
    pub fn push(&mut self, frame: &[u8]) -> Result<()> {
        let len = u32::try_from(frame.len())
            .ok()
            .filter(|&len| len <= SNAPLEN)
            .with_context(|| {
                format!(
                    "a reply of {} bytes does not fit in {}",
                    frame.len(),
                    self.path.display()
                )
            })?;
        let mut record = Vec::with_capacity(16 + frame.len());
        // The n-th record is stamped n microseconds after the epoch.
        let seconds = u32::try_from(self.frames / 1_000_000)
            .with_context(|| format!("too many replies for {}", self.path.display()))?;
        record.extend(seconds.to_le_bytes());
        record.extend(((self.frames % 1_000_000) as u32).to_le_bytes());
        record.extend(len.to_le_bytes()); // captured length
        record.extend(len.to_le_bytes()); // length on the wire
        record.extend(frame);
        self.write(&record)?;
        self.frames += 1;
        Ok(())
    }

    /// Flushes the file; what is not flushed is lost.
    pub fn finish(mut self) -> Result<()> {
        self.out
            .flush()
            .with_context(|| format!("cannot write reply capture {}", self.path.display()))
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.out
            .write_all(bytes)
            .with_context(|| format!("cannot write reply capture {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_capture_is_read_back_frame_for_frame() {
        let dir = std::env::temp_dir().join(format!("cors-filter-replies-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("replies.pcap");
        let frames = [vec![0xaa; 54], vec![0x55; 74], vec![1, 2, 3]];
        let mut capture = ReplyCapture::create(&path).unwrap();
        for f in &frames {
            capture.push(f).unwrap();
        }
        capture.finish().unwrap();
        let mut read = Vec::new();
        let count = crate::commands::replay::capture::for_each_frame(&path, |index, frame| {
            read.push((index, frame.to_vec()));
            Ok(())
        })
        .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(count, 3);
        let expected: Vec<(u64, Vec<u8>)> = frames
            .iter()
            .enumerate()
            .map(|(i, f)| (i as u64, f.clone()))
            .collect();
        assert_eq!(read, expected);
    }

    #[test]
    fn an_unwritable_path_is_named() {
        let e = ReplyCapture::create(Path::new("/nonexistent/dir/replies.pcap"))
            .err()
            .unwrap();
        assert!(
            format!("{e:#}").contains("/nonexistent/dir/replies.pcap"),
            "{e:#}"
        );
    }
}
