//! Connection tracking (`cors_filter_common::stream`) in the kernel: the
//! `CONNS` and `OPEN_HEADS` maps, and the segment's parse under
//! `bpf_loop` (Linux 5.17), so that the verifier checks one step of the
//! parser rather than one per byte.

use core::{cell::Cell, ffi::c_void, marker::PhantomData};

use aya_ebpf::{
    helpers::generated::bpf_loop,
    macros::map,
    maps::LruHashMap,
    programs::{TcContext, XdpContext},
};
use cors_filter_common::{
    Counter, Scratch,
    http::SCAN_BYTES,
    proxy::{self, ProxyClient},
    store::copy_words,
    stream::{self, ConnKey, ConnState, HeadState, SegmentBytes, Step, Tables},
};

use crate::{
    PacketPolicy,
    maps::{SCRATCH, count},
    net::Frame,
};

/// Connections followed, by their addresses and ports (see
/// `cors_filter_common::stream::ConnState`): 24 bytes of value, 40 of key.
#[map(name = "CONNS")]
pub static CONNS: LruHashMap<ConnKey, ConnState> =
    LruHashMap::with_max_entries(stream::DEFAULT_MAX_CONNECTIONS, 0);

/// Request heads that span segments, by connection.
#[map(name = "OPEN_HEADS")]
pub static OPEN_HEADS: LruHashMap<ConnKey, HeadState> =
    LruHashMap::with_max_entries(stream::DEFAULT_MAX_OPEN_HEADS, 0);

/// The clients PROXY headers named, by connection (for denial events).
#[map(name = "PROXY_CLIENTS")]
pub static PROXY_CLIENTS: LruHashMap<ConnKey, ProxyClient> =
    LruHashMap::with_max_entries(proxy::MAX_CLIENTS, 0);

/// A program context a parse step can be given through `bpf_loop`, as a
/// raw pointer, and rebuilt from.
pub trait StepFrame: Frame + Sized {
    fn raw(&self) -> *mut c_void;
    /// # Safety
    /// `raw` must be the running program's context.
    unsafe fn from_raw(raw: *mut c_void) -> Self;
}

impl StepFrame for XdpContext {
    #[inline(always)]
    fn raw(&self) -> *mut c_void {
        self.ctx.cast()
    }
    #[inline(always)]
    unsafe fn from_raw(raw: *mut c_void) -> Self {
        XdpContext::new(raw.cast())
    }
}

impl StepFrame for TcContext {
    #[inline(always)]
    fn raw(&self) -> *mut c_void {
        self.skb.skb.cast()
    }
    #[inline(always)]
    unsafe fn from_raw(raw: *mut c_void) -> Self {
        TcContext::new(raw.cast())
    }
}

/// What a step needs that is not in the scratch space: the program's
/// context, passed through `bpf_loop`.
#[repr(C)]
struct LoopContext {
    ctx: *mut c_void,
}

/// The segment's payload, read from the packet at `payload_offset`.
pub struct PacketBytes<'a, F: Frame> {
    pub frame: &'a F,
    pub payload_offset: u32,
}

impl<F: Frame> SegmentBytes for PacketBytes<'_, F> {
    #[inline(always)]
    fn load(&self, scratch: &mut Scratch, from: u32, len: u32) -> bool {
        // The mask proves to the verifier what the parser ensures: `len`
        // is in 1..=SCAN_BYTES (a power of two: asserted in `http`).
        let size = (len.wrapping_sub(1) & (SCAN_BYTES as u32 - 1)) + 1;
        // SAFETY: `size` is at most SCAN_BYTES and the buffer holds more;
        // the helper checks the packet side.
        unsafe {
            self.frame.load_bytes(
                self.payload_offset + from,
                scratch.payload.as_mut_ptr(),
                size,
            ) == 0
        }
    }
}

/// One parse step, as `bpf_loop`'s callback: 0 to go on, 1 to stop.
extern "C" fn step_callback<F: StepFrame>(_index: u64, data: *mut c_void) -> i64 {
    // SAFETY: `data` is the `LoopContext` on the caller's stack, alive for
    // the whole `bpf_loop` call, holding the program's context.
    let ctx = unsafe { F::from_raw((*(data as *const LoopContext)).ctx) };
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's scratch entry, as in the program's `filter`; the
    // caller holds no reference to it across `bpf_loop`.
    let scratch: &mut Scratch = unsafe { &mut *scratch };
    let policy = PacketPolicy::of(scratch);
    let bytes = PacketBytes {
        frame: &ctx,
        payload_offset: scratch.stream_payload_offset.get(),
    };
    match stream::step(scratch, &bytes, &policy) {
        Step::More => 0,
        Step::Done => 1,
    }
}

/// The tables in maps, and the steps under `bpf_loop`, for one packet's
/// connection: the key given to each call is that packet's.
pub struct KernelTables<F: StepFrame> {
    ctx: *mut c_void,
    /// The `CONNS` entry of the connection, once looked up or made (null
    /// before): `store_conn` writes it in place.
    conn: Cell<*mut ConnState>,
    /// What that entry held when it was looked up or made.
    found: Cell<ConnState>,
    frame: PhantomData<F>,
}

impl<F: StepFrame> KernelTables<F> {
    #[inline(always)]
    pub fn new(ctx: &F) -> Self {
        KernelTables {
            ctx: ctx.raw(),
            conn: Cell::new(core::ptr::null_mut()),
            found: Cell::new(ConnState::default()),
            frame: PhantomData,
        }
    }
}

impl<F: StepFrame> Tables for KernelTables<F> {
    #[inline(always)]
    fn load_conn(&self, key: &ConnKey, into: &mut ConnState) -> bool {
        match CONNS.get_ptr_mut(key) {
            Some(conn) => {
                self.conn.set(conn);
                // SAFETY: a value of the map, read during this run (RCU).
                into.copy_from(unsafe { &*conn });
                self.found.set(*into);
                true
            }
            None => {
                self.conn.set(core::ptr::null_mut());
                false
            }
        }
    }

    #[inline(always)]
    fn keep_conn(&self, key: &ConnKey, conn: &ConnState) -> bool {
        if self.conn.get().is_null() {
            if CONNS.insert(key, conn, 0).is_err() {
                return false;
            }
            match CONNS.get_ptr_mut(key) {
                Some(found) => {
                    self.conn.set(found);
                    self.found.set(*conn);
                }
                None => return false,
            }
        }
        true
    }

    #[inline(always)]
    fn store_conn(&self, key: &ConnKey, conn: &ConnState) {
        let entry = self.conn.get();
        // In place, as Cilium updates its connection entries (an update
        // allocates a new LRU node and swaps it in), if the entry still
        // holds what it held when found. A full LRU map hands an evicted
        // node to another CPU's insert at once, without waiting for RCU:
        // were this entry evicted during the parse, its memory could be
        // another connection's by now, which would then hold this one's
        // state. It was looked up or made in this run, so it is the most
        // recently used, and a connection's segments are parsed on one CPU
        // at a time (one receive queue per flow); the check narrows what
        // is left to the instructions between it and the writes.
        // SAFETY: a value of the map found during this run (RCU keeps its
        // memory mapped), and `ConnState` is plain data.
        if !entry.is_null() && unsafe { (*entry).holds(&self.found.get()) } {
            // SAFETY: as above.
            unsafe { (*entry).copy_from(conn) };
        } else {
            let _ = CONNS.insert(key, conn, 0);
        }
    }

    #[inline(always)]
    fn load_head(&self, key: &ConnKey, into: &mut HeadState) -> bool {
        match OPEN_HEADS.get_ptr_mut(key) {
            Some(head) => {
                // SAFETY: as in `load_conn`.
                copy_words(into, unsafe { &*head });
                true
            }
            None => false,
        }
    }

    #[inline(always)]
    fn store_head(&self, key: &ConnKey, head: &HeadState) -> bool {
        OPEN_HEADS.insert(key, head, 0).is_ok()
    }

    #[inline(always)]
    fn delete_head(&self, key: &ConnKey) {
        let _ = OPEN_HEADS.remove(key);
    }

    #[inline(always)]
    fn learned(&self) {
        count(Counter::ConnsLearned);
    }

    #[inline(always)]
    fn store_client(&self, key: &ConnKey, client: &ProxyClient) {
        count(Counter::ProxyHeaders);
        if client.family != 0 {
            // Lost only to eviction: the event then names the proxy alone.
            let _ = PROXY_CLIENTS.insert(key, client, 0);
        }
    }

    #[inline(always)]
    fn load_client(&self, key: &ConnKey, into: &mut ProxyClient) -> bool {
        // SAFETY: a value of the map, read during this run (RCU).
        match unsafe { PROXY_CLIENTS.get(key) } {
            Some(client) => {
                copy_words(into, client);
                true
            }
            None => false,
        }
    }

    #[inline(always)]
    fn run_steps(&self, _scratch: &mut Scratch, max: u32) {
        let mut context = LoopContext { ctx: self.ctx };
        // Through memory: the compiler may hand the count over in a
        // register whose upper 32 bits are not zero (a 32-bit value computed
        // in 64 bits), and the kernel's inlined `bpf_loop` compares all 64
        // with its limit and runs nothing (a segment overlapping parsed bytes
        // across the sequence numbers' wrap did that).
        // SAFETY: a plain read of a local.
        let max = unsafe { core::ptr::read_volatile(&max) };
        // SAFETY: `step_callback` has the callback's signature; the context
        // outlives the call. The transmute keeps the function's symbol in
        // the instruction that loads it, which the loader relocates to a
        // BPF_PSEUDO_FUNC reference.
        unsafe {
            let callback = core::mem::transmute::<
                extern "C" fn(u64, *mut c_void) -> i64,
                *mut c_void,
            >(step_callback::<F>);
            bpf_loop(max, callback, (&mut context as *mut LoopContext).cast(), 0);
        }
    }
}
