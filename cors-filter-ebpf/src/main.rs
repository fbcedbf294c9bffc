//! The cors-filter programs, XDP and TC ingress: they follow the TCP
//! connections to inspected ports and judge each HTTP/1.x request whole,
//! however TCP cuts it (see `cors_filter_common::stream`): CORS preflights
//! whose origin the allowlist does not hold, and (where a port protects
//! them) requests with unsafe methods from such origins, are kept from the
//! TCP stack before their head is complete there.
#![no_std]
#![no_main]

mod events;
mod maps;
mod net;
mod reset;
mod short_path;
mod stream;

use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT, xdp_action},
    helpers::generated::bpf_redirect,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use aya_log_ebpf::error;
use cors_filter_common::{
    Counter, FilterConfig, MethodSet, Outcome, Policy, PortFlags, Scratch, Verdict,
    event::{FAMILY_IPV4, FAMILY_IPV6},
    origin::OriginParse,
    stream::{ConnKey, Segment, conn_flags, filter_segment, header},
};

use crate::{
    maps::{SCRATCH, active_generation, allowed_methods, count, port_flags, settings},
    net::{Frame, TCP_ACK, TCP_RST, TCP_SYN, TCP_URG, TcpPayload},
    stream::{KernelTables, PacketBytes, StepFrame},
};

/// The policy of the generation a packet is judged by, for its port.
struct PacketPolicy {
    generation: u32,
    port_flags: u64,
}

impl PacketPolicy {
    /// The policy noted in `scratch` for the packet being parsed (read
    /// again in each parse step, which runs in `bpf_loop`'s callback).
    #[inline(always)]
    fn of(scratch: &Scratch) -> PacketPolicy {
        PacketPolicy {
            generation: scratch.generation.get(),
            port_flags: scratch.stream_port_flags.get(),
        }
    }
}

impl Policy for PacketPolicy {
    #[inline(always)]
    fn protects_unsafe_methods(&self) -> bool {
        self.port_flags & PortFlags::PROTECT_UNSAFE != 0
    }

    #[inline(always)]
    fn allowed_methods(&self, origin: &mut OriginParse) -> MethodSet {
        allowed_methods(self.generation, origin)
    }

    #[inline(always)]
    fn settings(&self) -> FilterConfig {
        settings(self.generation)
    }

    #[inline(always)]
    fn client_header(&self) -> u32 {
        if self.port_flags & PortFlags::CLIENT_X_FORWARDED_FOR != 0 {
            header::X_FORWARDED_FOR
        } else if self.port_flags & PortFlags::CLIENT_FORWARDED != 0 {
            header::FORWARDED
        } else {
            header::NONE
        }
    }
}

/// The XDP entry point (`--attach xdp`, the default).
#[xdp(frags)]
pub fn cors_filter(ctx: XdpContext) -> u32 {
    match filter(&ctx) {
        Verdict::Pass => xdp_action::XDP_PASS,
        Verdict::Drop => xdp_action::XDP_DROP,
        Verdict::Reset => match reset::rewrite(&ctx) {
            Ok(()) => {
                count(Counter::ResetSent);
                xdp_action::XDP_TX
            }
            Err(_) => {
                count(Counter::ResetFailed);
                xdp_action::XDP_DROP
            }
        },
    }
}

/// The TC ingress entry point (`--attach tc`), for interfaces where XDP
/// cannot run.
#[classifier]
pub fn cors_filter_tc(ctx: TcContext) -> i32 {
    match filter(&ctx) {
        Verdict::Pass => TC_ACT_OK,
        Verdict::Drop => TC_ACT_SHOT,
        Verdict::Reset => match reset::rewrite(&ctx) {
            Ok(()) => {
                count(Counter::ResetSent);
                // SAFETY: reads the interface index from the program's
                // context; the redirect (TC_ACT_REDIRECT, flags 0: egress)
                // sends the reply out of the interface it came in on.
                unsafe { bpf_redirect((*ctx.skb.skb).ifindex, 0) as i32 }
            }
            Err(_) => {
                count(Counter::ResetFailed);
                TC_ACT_SHOT
            }
        },
    }
}

/// Inspects one packet, counts what it was, and says what to do with it.
///
/// Most packets are not TCP to an inspected port; their path is kept
/// short (`short_path`): a bounds check or two, the port, one counter. On the
/// full path: no connection lookup unless the port is inspected, no
/// settings and no event unless the outcome may drop.
#[inline(always)]
fn filter<F: StepFrame>(ctx: &F) -> Verdict {
    if let Some(settled) = short_path::outcome(ctx) {
        count(settled.counter());
        return Verdict::Pass;
    }
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        error!(ctx, "cors-filter: per-CPU scratch map has no entry");
        count(Counter::PassNotHttp);
        return Verdict::Pass;
    };
    // SAFETY: this CPU's entry of the scratch map; XDP and TC programs run to
    // completion in softirq and do not nest on one CPU, so the reference is
    // exclusive for this run (the parse steps under `bpf_loop` take it in
    // turn, while this one is not used).
    let scratch: &mut Scratch = unsafe { &mut *scratch };
    let outcome = inspect(ctx, scratch);
    // Read back from memory: the verifier then checks what follows (the
    // counters, the verdict, the event, the reset) once, for an outcome it
    // does not know, rather than once per outcome.
    scratch.outcome.set(outcome as u32);
    let outcome = Outcome::from_index(scratch.outcome.get());
    // One outcome counter per packet; `Packets` and `Requests` are their
    // sums, derived by whoever reads the counters.
    let (counter, also) = outcome.counters();
    count(counter);
    if let Some(also) = also {
        count(also);
    }
    if !outcome.may_deny() {
        return Verdict::Pass;
    }
    // The connection's state is the packet's own for every outcome the
    // action applies to (those of the parse); the others (`HeadLost` of a
    // connection without state among them, whose `stream_conn` is another
    // packet's) drop whatever the action.
    let proxied = scratch.stream_conn.flags & conn_flags::PROXY_HEADER != 0;
    let settings = settings(scratch.generation.get()).for_connection(proxied);
    let verdict = outcome.verdict(&settings);
    if verdict != Verdict::Pass {
        count(Counter::Dropped);
    }
    let client_header = PacketPolicy::of(scratch).client_header();
    events::report(ctx, scratch, outcome, &settings, client_header);
    verdict
}

/// The connection of the segment in `payload`, as the maps key it, built
/// in `key`.
#[inline(always)]
fn conn_key<'k>(
    ctx: &impl Frame,
    payload: &TcpPayload,
    key: &'k mut MaybeUninit<ConnKey>,
) -> Option<&'k ConnKey> {
    let family = if payload.ipv6 {
        FAMILY_IPV6
    } else {
        FAMILY_IPV4
    };
    let key = ConnKey::init_in(key, payload.src_port, payload.dst_port, family as u32);
    let (source, dest, len) = if payload.ipv6 {
        (payload.l3 + 8, payload.l3 + 24, 16)
    } else {
        (payload.l3 + 12, payload.l3 + 16, 4)
    };
    // SAFETY: `len` is 4 or 16, the size of the fields at most; the helper
    // checks the packet side.
    let loaded = unsafe {
        ctx.load_bytes(source as u32, key.source_addr.as_mut_ptr(), len)
            | ctx.load_bytes(dest as u32, key.dest_addr.as_mut_ptr(), len)
    };
    (loaded == 0).then_some(key)
}

#[inline(always)]
fn inspect<F: StepFrame>(ctx: &F, scratch: &mut Scratch) -> Outcome {
    let payload = match net::tcp_payload(ctx, &mut scratch.ipv6_walk_offset) {
        Ok(payload) => payload,
        Err(outcome) => return outcome,
    };
    scratch.generation.set(active_generation());
    let port_flags = port_flags(scratch.generation.get(), payload.dst_port);
    if port_flags & PortFlags::INSPECT == 0 {
        return Outcome::PortNotInspected;
    }
    let flags = payload.tcp_flags;
    if payload.len == 0 && flags & TCP_SYN == 0 {
        // An acknowledgment (or a FIN, a reset): nothing to parse, no
        // connection state to read.
        return Outcome::NoPayload;
    }
    events::remember(scratch, &payload);
    reset::remember(&mut scratch.reset, &payload);
    scratch.stream_port_flags.set(port_flags);
    scratch.stream_payload_offset.set(payload.offset as u32);
    let mut key = MaybeUninit::uninit();
    let Some(key) = conn_key(ctx, &payload, &mut key) else {
        return Outcome::Truncated;
    };
    let segment = Segment {
        seq: payload.seq,
        len: payload.len as u32,
        syn: flags & TCP_SYN != 0 && flags & TCP_ACK == 0,
        rst: flags & TCP_RST != 0,
        urg: flags & TCP_URG != 0,
    };
    let policy = PacketPolicy::of(scratch);
    let tables = KernelTables::<F>::new(ctx);
    let bytes = PacketBytes {
        frame: ctx,
        payload_offset: payload.offset as u32,
    };
    filter_segment(scratch, &tables, key, segment, &bytes, &policy)
}

/// The license the kernel is told (see README, "License"): GPL-compatible,
/// as aya declared for an object without this section. None of the
/// helpers the programs call is GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // No panic path is meant to remain (indexes are masked, bounds are
    // checked). A loop rather than `unreachable_unchecked`, which would let
    // LLVM delete the paths that lead here: one that survives ends in a
    // loop the verifier rejects, so the program does not load.
    #[allow(clippy::empty_loop)]
    loop {}
}
