//! `--action reset`: the frame of a segment the filter does not let through
//! is rewritten, in place, into a TCP reset to its sender (built by
//! `cors_filter_common::reset`), which the entry point then sends back out
//! of the interface it came in on: `XDP_TX`, or at TC a redirect to the
//! interface's egress.
//!
//! Everything is read and written with the bytes helpers, which check the
//! packet bounds themselves (paged parts and XDP fragments included), from
//! and to fixed-size buffers in the scratch map.

use aya_ebpf::{
    EbpfContext,
    helpers::generated::{
        bpf_skb_change_tail, bpf_skb_store_bytes, bpf_xdp_adjust_tail, bpf_xdp_get_buff_len,
        bpf_xdp_store_bytes,
    },
    programs::{TcContext, XdpContext},
};
use cors_filter_common::reset::{
    IP_COPY_LEN, IPV4_REPLY_LEN, IPV6_REPLY_LEN, ResetScratch, TCP_COPY_LEN, build_reply, swap_macs,
};

use crate::{maps::SCRATCH, net::Frame, net::TcpPayload};

/// A helper refused a step of the rewrite; the frame may be half rewritten
/// and must be dropped.
pub struct RewriteFailed;

/// What the rewrite needs from an XDP frame or a TC socket buffer, besides
/// reading it.
pub trait Rewrite: Frame {
    /// Copies `len` bytes from `src` to `offset` in the packet. Returns 0 on
    /// success.
    ///
    /// # Safety
    /// `src` must be valid for `len` bytes of reads.
    unsafe fn store_bytes(&self, offset: u32, src: *const u8, len: u32) -> i64;

    /// Cuts the packet to its first `len` bytes (never longer than it is).
    /// Returns 0 on success.
    fn truncate(&self, len: u32) -> i64;
}

impl Rewrite for XdpContext {
    #[inline(always)]
    unsafe fn store_bytes(&self, offset: u32, src: *const u8, len: u32) -> i64 {
        // SAFETY: forwarded from the caller; the helper only reads `src`
        // (its prototype says `*mut`) and checks the packet side.
        unsafe { bpf_xdp_store_bytes(self.ctx, offset, src as *mut _, len) }
    }

    #[inline(always)]
    fn truncate(&self, len: u32) -> i64 {
        // SAFETY: `self.ctx` is the program's context. The length covers the
        // fragments of a multi-buffer frame, which the shrink releases first.
        unsafe {
            let whole = bpf_xdp_get_buff_len(self.ctx) as i64;
            bpf_xdp_adjust_tail(self.ctx, (len as i64 - whole) as i32)
        }
    }
}

impl Rewrite for TcContext {
    #[inline(always)]
    unsafe fn store_bytes(&self, offset: u32, src: *const u8, len: u32) -> i64 {
        // SAFETY: forwarded from the caller; the helper checks the packet side.
        unsafe { bpf_skb_store_bytes(self.as_ptr().cast(), offset, src.cast(), len, 0) }
    }

    #[inline(always)]
    fn truncate(&self, len: u32) -> i64 {
        // SAFETY: `as_ptr` is the program's context. The helper also
        // linearises the buffer and clears its GSO state, so the reply
        // leaves as the one small packet it is.
        unsafe { bpf_skb_change_tail(self.as_ptr().cast(), len, 0) }
    }
}

/// Keeps where this packet's segment is, for [`rewrite`]; called for every
/// packet whose payload is inspected, so for every packet that can get a
/// `Verdict::Reset`.
#[inline(always)]
pub fn remember(reset: &mut ResetScratch, payload: &TcpPayload) {
    reset.l3.set(payload.l3 as u32);
    reset.l4.set(payload.l4 as u32);
    reset.payload_len.set(payload.len as u32);
}

/// Rewrites the frame (whose segment [`remember`] recorded) into a reset to
/// its sender: MACs swapped, VLAN tags kept, the reply's IP and TCP headers
/// at the IP header's offset, the frame cut after them.
#[inline(always)]
pub fn rewrite(ctx: &impl Rewrite) -> Result<(), RewriteFailed> {
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return Err(RewriteFailed);
    };
    // SAFETY: this CPU's entry of the scratch map; programs do not nest on
    // one CPU, so the reference is exclusive for this run.
    let reset = unsafe { &mut (*scratch).reset };
    let (l3, l4) = (reset.l3.get(), reset.l4.get());
    // SAFETY: each destination is an array of the scratch map at least as
    // long as the constant length given; the helper checks the packet side.
    let loaded = unsafe {
        ctx.load_bytes(l3, reset.ip.as_mut_ptr(), IP_COPY_LEN as u32)
            | ctx.load_bytes(l4, reset.tcp.as_mut_ptr(), TCP_COPY_LEN as u32)
            | ctx.load_bytes(0, reset.macs.as_mut_ptr(), reset.macs.len() as u32)
    };
    if loaded != 0 {
        return Err(RewriteFailed);
    }
    let payload_len = reset.payload_len.get();
    let Some(reply_len) = build_reply(&reset.ip, &reset.tcp, payload_len, &mut reset.reply) else {
        return Err(RewriteFailed);
    };
    swap_macs(&mut reset.macs);
    // SAFETY: each source is an array of the scratch map at least as long
    // as the length given, a constant on each path (what the verifier checks
    // the buffer's size against); the helper checks the packet side.
    let stored = unsafe {
        ctx.store_bytes(0, reset.macs.as_ptr(), reset.macs.len() as u32)
            | if reply_len == IPV4_REPLY_LEN {
                ctx.store_bytes(l3, reset.reply.as_ptr(), IPV4_REPLY_LEN as u32)
            } else {
                ctx.store_bytes(l3, reset.reply.as_ptr(), IPV6_REPLY_LEN as u32)
            }
    };
    if stored != 0 {
        return Err(RewriteFailed);
    }
    // Not padded to Ethernet's 60-byte minimum: NICs pad short frames when
    // they send them, which XDP programs that answer with small frames (the
    // kernel's XDP SYN proxy example among them) rely on too.
    if ctx.truncate(l3 + reply_len as u32) != 0 {
        return Err(RewriteFailed);
    }
    Ok(())
}
