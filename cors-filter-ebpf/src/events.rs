//! Denial events: one `DenialEvent` record in the `DENIALS` ring buffer for
//! each request reported (see `cors_filter_common::event`).

use core::ptr::addr_of_mut;

use aya_ebpf::bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};

use cors_filter_common::{
    Counter, FilterConfig, Outcome, Scratch,
    event::{
        DenialEvent, DenialReason, EVENT_ORIGIN_LEN, FAMILY_IPV4, FAMILY_IPV6, FLAG_UNSAFE_REQUEST,
        origin_extent, wakes_reader,
    },
    proxy::ProxyClient,
};

use crate::{
    maps::{DENIALS, count},
    net::{Frame, TcpPayload},
};

/// Where the source address starts in the IPv4 and IPv6 headers.
const IPV4_SADDR: u32 = 12;
const IPV6_SADDR: u32 = 8;

/// Keeps where `payload`'s packet came from in the scratch space, for its
/// event: it is written after the verdict, long after the header walk.
#[inline(always)]
pub fn remember(scratch: &mut Scratch, payload: &TcpPayload) {
    let a = &mut scratch.addressing;
    a.l3_offset.set(payload.l3 as u32);
    a.family.set(if payload.ipv6 {
        FAMILY_IPV6
    } else {
        FAMILY_IPV4
    } as u32);
    a.source_port.set(payload.src_port as u32);
    a.dest_port.set(payload.dst_port as u32);
}

/// Writes the event of a packet whose outcome is a denial under `config`
/// (in monitor mode too); counts it in `EventsLost` when the ring buffer
/// has no room. Only outcomes reached after [`remember`] are denials.
#[inline(always)]
pub fn report(ctx: &impl Frame, scratch: &Scratch, outcome: Outcome, config: &FilterConfig) {
    let Some(reason) = DenialReason::of(outcome, config) else {
        return;
    };
    let Some(mut entry) = DENIALS.reserve::<DenialEvent>(0) else {
        count(Counter::EventsLost);
        return;
    };
    let event = entry.as_mut_ptr();
    let a = &scratch.addressing;
    let ipv6 = a.family.get() == FAMILY_IPV6 as u32;
    let (origin_len, mut flags) = origin_extent(scratch.origin.value_len());
    if scratch.unsafe_request.get() != 0 {
        flags |= FLAG_UNSAFE_REQUEST;
    }
    // SAFETY: `event` points to a reserved record of
    // `size_of::<DenialEvent>()` bytes, ours until submitted. Fields are
    // written through raw pointers (no reference to the uninitialised
    // record is made); the origin copy is `EVENT_ORIGIN_LEN` bytes, the
    // size of the field, from the start of `raw`, which is longer.
    unsafe {
        // Zeroed a word at a time (see `cors_filter_common::store`): the
        // record and its first field are 8-byte aligned.
        let words = addr_of_mut!((*event).source_addr).cast::<u64>();
        words.write_volatile(0);
        words.add(1).write_volatile(0);
        addr_of_mut!((*event).source_port).write(a.source_port.get() as u16);
        addr_of_mut!((*event).dest_port).write(a.dest_port.get() as u16);
        addr_of_mut!((*event).origin_len).write(origin_len);
        addr_of_mut!((*event).family).write(if ipv6 { FAMILY_IPV6 } else { FAMILY_IPV4 });
        addr_of_mut!((*event).reason).write(reason as u8);
        addr_of_mut!((*event).flags).write(flags);
        addr_of_mut!((*event).method).write(scratch.judged.get() as u8);
        // The 6 reserved bytes at offset 26: a 2-byte and a 4-byte store.
        let reserved = addr_of_mut!((*event).reserved).cast::<u8>();
        reserved.cast::<u16>().write_volatile(0);
        reserved.add(2).cast::<u32>().write_volatile(0);
        addr_of_mut!((*event).origin)
            .cast::<u8>()
            .copy_from_nonoverlapping(scratch.origin.raw.as_ptr(), EVENT_ORIGIN_LEN);
        // The client a PROXY header named, a word at a time (`ProxyClient`
        // is 8-byte aligned, and so is its place in the record).
        let client = addr_of_mut!((*event).client).cast::<u64>();
        let from = (&scratch.proxy_client as *const ProxyClient).cast::<u64>();
        let mut i = 0;
        while i < size_of::<ProxyClient>() / 8 {
            client.add(i).write_volatile(from.add(i).read());
            i += 1;
        }
    }
    let (offset, len) = if ipv6 {
        (a.l3_offset.get() + IPV6_SADDR, 16)
    } else {
        (a.l3_offset.get() + IPV4_SADDR, 4)
    };
    // SAFETY: the destination is the record's 16-byte address field and
    // `len` is at most 16; the helper checks the packet side. The header
    // was read whole before, so this cannot fail; if it did, the address
    // would stay zero, which the daemon shows as it is.
    unsafe { ctx.load_bytes(offset, addr_of_mut!((*event).source_addr).cast::<u8>(), len) };
    // Waking the reader for every record would cost a wake-up per denial
    // in a flood; it is woken once a batch has piled up, and reads on a
    // short timer too (see the daemon's `denials` module).
    let pending = DENIALS.query(BPF_RB_AVAIL_DATA as u64);
    entry.submit(if wakes_reader(pending) {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    });
}
