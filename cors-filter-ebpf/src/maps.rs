//! The program's maps. The pinned ones are the filter's state, shared with
//! the `cors-filter` CLI and with the next daemon through bpffs; their names
//! are its interface.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, PerCpuArray, RingBuf},
};
use cors_filter_common::{
    ALLOWLIST_MAX_ENTRIES, Counter, FilterConfig, Generation, MethodSet, PortBitmap, PortFlags,
    Scratch,
    allow_map::{self, AllowEntryValue},
    event::DENIALS_BYTES,
    origin::OriginParse,
    pinned::ConfigEntry,
};

/// Policies installed so far; the low bit names the generation in use (see
/// `cors_filter_common::Generation`).
#[map(name = "ACTIVE")]
pub static ACTIVE: Array<u32> = Array::with_max_entries(1, 0);

/// One `ConfigEntry` per generation.
#[map(name = "CONFIG")]
pub static CONFIG: Array<ConfigEntry> = Array::with_max_entries(Generation::COUNT, 0);

/// What the filter does on each destination port (`PortFlags`,
/// `PortFlags::BITS` bits each), generation 0 and 1.
#[map(name = "PORTS_0")]
pub static PORTS_0: Array<u64> = Array::with_max_entries(PortBitmap::WORDS, 0);
#[map(name = "PORTS_1")]
pub static PORTS_1: Array<u64> = Array::with_max_entries(PortBitmap::WORDS, 0);

/// Allowed origins, generation 0 and 1: exact keys and wildcard-subdomain
/// prefixes by their hash (see `cors_filter_common::allow_map`). Allocated per
/// entry rather than up front.
#[map(name = "ALLOWLIST_0")]
pub static ALLOWLIST_0: HashMap<u64, AllowEntryValue> =
    HashMap::with_max_entries(ALLOWLIST_MAX_ENTRIES, BPF_F_NO_PREALLOC);
#[map(name = "ALLOWLIST_1")]
pub static ALLOWLIST_1: HashMap<u64, AllowEntryValue> =
    HashMap::with_max_entries(ALLOWLIST_MAX_ENTRIES, BPF_F_NO_PREALLOC);

/// Per-CPU counters, indexed by `Counter`; `Counter::SLOTS` entries, of
/// which the first `Counter::COUNT` are in use.
#[map(name = "COUNTERS")]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::SLOTS, 0);

/// Denial events (`cors_filter_common::event::DenialEvent`), read by the
/// daemon. A full buffer counts `EventsLost`.
#[map(name = "DENIALS")]
pub static DENIALS: RingBuf = RingBuf::with_byte_size(DENIALS_BYTES, 0);

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

/// The generation of the policy this packet is judged by. Read once per
/// packet, so that settings, ports and allowlist all come from one policy.
#[inline(always)]
pub fn active_generation() -> u32 {
    // Array maps always have their entries; 0 before the first install.
    Generation::of(ACTIVE.get(0).copied().unwrap_or(0))
}

/// The settings of `generation`. The defaults (enforce, oversized heads
/// dropped) if the entry cannot be read, which an array map's in-range
/// index never fails: a fallback fails closed, as the config's default.
#[inline(always)]
pub fn settings(generation: u32) -> FilterConfig {
    // The settings only, not the entry's spare words: fewer bytes copied.
    CONFIG
        .get(generation)
        .map(|entry| entry.settings)
        .unwrap_or(FilterConfig::new(
            cors_filter_common::Mode::Enforce,
            cors_filter_common::OnIncomplete::Drop,
        ))
}

/// `port`'s `PortFlags` in `generation`.
#[inline(always)]
pub fn port_flags(generation: u32, port: u16) -> u64 {
    let (word, shift) = PortBitmap::slot(port);
    // One lookup per generation rather than one lookup of a chosen map: a
    // call site that sees a single map keeps the kernel's inlined lookup.
    let found = if generation == 0 {
        PORTS_0.get(word)
    } else {
        PORTS_1.get(word)
    };
    found.map_or(0, |w| (*w >> shift) & PortFlags::MASK)
}

/// The methods `generation`'s allowlist allows `origin` (see
/// `cors_filter_common::allow_map`).
#[inline(always)]
pub fn allowed_methods(generation: u32, origin: &mut OriginParse) -> MethodSet {
    let wildcard_depths = settings(generation).wildcard_depths;
    allow_map::allowed_methods(origin, wildcard_depths, |hash| {
        // SAFETY: the entry is only read, and only during this program run,
        // inside which the kernel does not free it (RCU); the policy
        // install never rewrites the generation a run may still read.
        unsafe {
            if generation == 0 {
                ALLOWLIST_0.get(&hash)
            } else {
                ALLOWLIST_1.get(&hash)
            }
        }
    })
}
