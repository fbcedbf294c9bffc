//! The program's maps. The pinned ones are the filter's state, shared with
//! the `cors-filter` CLI through bpffs; their names are its interface.

use aya_ebpf::{
    macros::map,
    maps::{Array, LpmTrie, PerCpuArray, RingBuf},
};
use cors_filter_common::{Counter, FilterConfig, PortBitmap, Scratch, origin::OriginKey};

/// Entries the allowlist can hold. The trie allocates per entry, so the cost
/// of a large bound is only paid when it is used.
pub const ALLOWLIST_MAX_ENTRIES: u32 = 1 << 18;

/// Allowed origins: exact keys and wildcard-subdomain prefixes (see
/// `cors_filter_common::origin`). The value is an `entry_kind`.
#[map(name = "ALLOWLIST")]
pub static ALLOWLIST: LpmTrie<OriginKey, u32> = LpmTrie::with_max_entries(ALLOWLIST_MAX_ENTRIES, 0);

/// Inspected destination ports, one bit each.
#[map(name = "PORTS")]
pub static PORTS: Array<u64> = Array::with_max_entries(PortBitmap::WORDS, 0);

/// One `FilterConfig`.
#[map(name = "CONFIG")]
pub static CONFIG: Array<FilterConfig> = Array::with_max_entries(1, 0);

/// Per-CPU counters, indexed by `Counter`.
#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

/// Denial events (`cors_filter_common::event::DenialEvent`), read by the
/// daemon. 256 KiB hold about 1600 events: well over what arrives between
/// two reads of a running daemon. A full buffer counts `EventsLost`.
#[map(name = "DENIALS")]
pub static DENIALS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Per-CPU parse space (see `Scratch`). Not pinned: it holds nothing between packets.
#[map(name = "SCRATCH")]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub fn count(counter: Counter) {
    if let Some(value) = COUNTERS.get_ptr_mut(counter.index()) {
        // SAFETY: the pointer is this CPU's slot of an existing entry; XDP
        // programs do not nest on one CPU, so nothing else writes it now.
        unsafe { *value += 1 };
    }
}

#[inline(always)]
pub fn port_inspected(port: u16) -> bool {
    let (word, bit) = PortBitmap::slot(port);
    PORTS.get(word).is_some_and(|w| *w & bit != 0)
}
