//! The filter's pinned state as both sides know it: the names of the maps
//! (in the eBPF object and in the pin directory), and the layout record
//! that says what those pins mean.
//!
//! A pin directory outlives the daemon that made it and the version that
//! made it: the next daemon, maybe of another version, adopts it. So that
//! it never misreads one, every set of pins carries a layout number, bumped
//! whenever a pinned map changes shape or meaning. The maps leave room to
//! grow ([`ConfigEntry`]'s spare words, `Counter::SLOTS`) so that most
//! changes need no new layout.

/// The map names. The program's `#[map(name = ...)]` attributes spell
/// them again (the attribute takes a literal); the userspace test
/// `object_maps_are_the_named_ones` checks that the object's maps are
/// exactly these.
pub mod name {
    /// Policies installed so far (see `Generation`).
    pub const ACTIVE: &str = "ACTIVE";
    /// One [`super::ConfigEntry`] per generation.
    pub const CONFIG: &str = "CONFIG";
    /// The port bitmaps of generation 0 and 1.
    pub const PORTS: [&str; 2] = ["PORTS_0", "PORTS_1"];
    /// The allowlists of generation 0 and 1.
    pub const ALLOWLISTS: [&str; 2] = ["ALLOWLIST_0", "ALLOWLIST_1"];
    /// Per-CPU counters, indexed by `Counter`.
    pub const COUNTERS: &str = "COUNTERS";
    /// The ring buffer of denial events.
    pub const DENIALS: &str = "DENIALS";
    /// Connections followed (see `stream`).
    pub const CONNS: &str = "CONNS";
    /// Request heads being read, between segments.
    pub const OPEN_HEADS: &str = "OPEN_HEADS";
    /// Clients named by PROXY headers.
    pub const PROXY_CLIENTS: &str = "PROXY_CLIENTS";
    /// Per-CPU parse space; in the object, never pinned.
    pub const SCRATCH: &str = "SCRATCH";
    /// The [`super::LayoutRecord`]; made and pinned by userspace only.
    pub const LAYOUT: &str = "LAYOUT";
    /// Followed by a layout number: the final totals of that layout's
    /// counters, carried by the upgrade from it (an array of
    /// `Counter::SLOTS` totals, written once), which readers add to
    /// `COUNTERS`. Made and pinned by userspace only.
    pub const COUNTERS_CARRIED_FROM: &str = "COUNTERS_CARRIED_FROM_";
}

/// The layout of the pins this build makes and reads.
///
/// - 1: cors-filter 0.1.0, which pinned no record (its pins are known by
///   their shapes).
/// - 2: cors-filter 0.2.0: the `LAYOUT` record; `CONFIG` entries of
///   [`ConfigEntry::BYTES`]; `COUNTERS` of `Counter::SLOTS` entries.
pub const LAYOUT: u32 = 2;

/// The single entry of the pinned `LAYOUT` array map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayoutRecord {
    /// The layout of the pins beside it.
    pub layout: u32,
    /// Bytes of `writer` in use.
    pub writer_len: u32,
    /// The version of the cors-filter that wrote the pins (`0.2.0`), for
    /// the messages of a version that cannot read them.
    pub writer: [u8; 24],
}

const _: () = assert!(size_of::<LayoutRecord>() == 32);

impl LayoutRecord {
    /// The record of `layout`, written by version `writer` (cut to fit).
    pub fn new(layout: u32, writer: &str) -> LayoutRecord {
        let mut record = LayoutRecord {
            layout,
            writer_len: 0,
            writer: [0; 24],
        };
        let len = writer.len().min(record.writer.len());
        record.writer[..len].copy_from_slice(&writer.as_bytes()[..len]);
        record.writer_len = len as u32;
        record
    }

    /// The writer's version, as far as it is valid UTF-8.
    pub fn writer(&self) -> &str {
        let len = (self.writer_len as usize).min(self.writer.len());
        match core::str::from_utf8(&self.writer[..len]) {
            Ok(text) => text,
            Err(e) => core::str::from_utf8(&self.writer[..e.valid_up_to()]).unwrap_or(""),
        }
    }
}

/// One entry of the `CONFIG` array map: the settings the program reads,
/// and spare words so that a new setting does not change the map's shape.
///
/// A setting taken from the spare words must mean "as before the setting
/// existed" when 0: a program of the version before ignores it, and a
/// daemon of that version writes 0 there.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigEntry {
    pub settings: crate::FilterConfig,
    pub spare: [u32; ConfigEntry::SPARE_WORDS],
}

impl ConfigEntry {
    /// The entry's size, fixed for layout 2.
    pub const BYTES: usize = 64;
    const SPARE_WORDS: usize = (Self::BYTES - size_of::<crate::FilterConfig>()) / 4;

    pub const fn new(settings: crate::FilterConfig) -> ConfigEntry {
        ConfigEntry {
            settings,
            spare: [0; Self::SPARE_WORDS],
        }
    }
}

const _: () = assert!(size_of::<ConfigEntry>() == ConfigEntry::BYTES);
const _: () = assert!(size_of::<crate::FilterConfig>().is_multiple_of(4));
const _: () = assert!(size_of::<crate::FilterConfig>() <= ConfigEntry::BYTES);

/// Layout 2's pinned shapes, as the sizes this crate defines (the kernel
/// compares a pinned map's key and value sizes and its entries with the
/// program's; the maps of plain `u32` and `u64` are spelled in the
/// program). A change to one changes a pinned map's shape, which pins of
/// layout 2 cannot take: bump [`LAYOUT`] and teach `kernel/layout.rs` the
/// upgrade from 2 (README, "Changing it"), then the numbers here.
const _: () = {
    use crate::{allow_map, event, proxy, settings, stream};
    const fn layout_2(holds: bool) {
        assert!(
            holds,
            "a pinned map's shape changes: a new LAYOUT (see pinned.rs)"
        );
    }
    // Written for layout 2: a new layout reviews every number below.
    layout_2(LAYOUT == 2);
    layout_2(size_of::<stream::ConnKey>() == 40);
    layout_2(size_of::<stream::ConnState>() == 24);
    layout_2(size_of::<stream::HeadState>() == 440);
    layout_2(size_of::<proxy::ProxyClient>() == 24);
    layout_2(proxy::MAX_CLIENTS == 1 << 16);
    layout_2(size_of::<allow_map::AllowEntryValue>() == 268);
    layout_2(settings::ALLOWLIST_MAX_ENTRIES == 1 << 18);
    layout_2(settings::PortBitmap::WORDS == 8192);
    layout_2(settings::Generation::COUNT == 2);
    layout_2(ConfigEntry::BYTES == 64);
    layout_2(crate::Counter::SLOTS == 64);
    // The ring buffer is kept across an upgrade with the events queued in
    // it, which the next daemon reads: their record is part of the layout.
    layout_2(event::DENIALS_BYTES == 256 * 1024);
    layout_2(size_of::<event::DenialEvent>() == 256);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: `repr(C)` structs of integers and integer arrays, without
    // padding (their sizes are asserted above), for which every bit
    // pattern is a valid value.
    unsafe impl aya::Pod for super::LayoutRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::ConfigEntry {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_record_keeps_the_writer() {
        assert_eq!(LayoutRecord::new(2, "0.2.0").writer(), "0.2.0");
        let long = "9.9.9-a-very-long-prerelease-name";
        assert_eq!(LayoutRecord::new(2, long).writer(), &long[..24]);
        let mut broken = LayoutRecord::new(2, "0.2.0");
        broken.writer_len = 99;
        broken.writer[3] = 0xff;
        assert_eq!(broken.writer(), "0.2");
    }
}
