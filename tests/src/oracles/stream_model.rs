//! The program's connection tracking, from cors-filter-common, run in
//! userspace: `stream::filter_segment` on the same scratch layout, with the
//! connection tables in memory instead of maps and a plain loop instead of
//! `bpf_loop`. What the program does to a connection's segments, this does
//! to the same segments, in the same order.

use std::{cell::RefCell, collections::HashMap};

use cors_filter_common::{
    FilterConfig, Method, MethodSet, Mode, OnIncomplete, Outcome, Policy, Scratch, Verdict,
    origin::OriginParse,
    proxy::ProxyClient,
    stream::{self, ConnKey, ConnState, HeadState, Segment, SegmentBytes, Step, Tables},
};

/// The connection tables in memory. `head_room` bounds the open heads kept
/// (the `OPEN_HEADS` map's size), to show what happens when it is full.
#[derive(Default)]
pub struct MemoryTables {
    pub conns: RefCell<HashMap<ConnKey, ConnState>>,
    pub heads: RefCell<HashMap<ConnKey, HeadState>>,
    pub head_room: Option<usize>,
    /// The clients PROXY headers named (`PROXY_CLIENTS`).
    pub clients: RefCell<HashMap<ConnKey, ProxyClient>>,
    /// PROXY headers read (the `proxy_headers` counter).
    pub proxy_headers: RefCell<u64>,
}

/// A policy of one allowed origin (by its allowlist key) with its methods,
/// and the settings.
pub struct ModelPolicy {
    /// The allowlist: keys (as `OriginParse::key` gives them) and methods.
    pub allow: Vec<(Vec<u8>, MethodSet)>,
    pub protects_unsafe: bool,
    pub settings: FilterConfig,
    /// The client header the port trusts (`stream::header`).
    pub client_header: u32,
}

impl ModelPolicy {
    /// Enforcing, dropping oversized heads, allowing `origins` (any method).
    pub fn allowing(origins: &[&str], protects_unsafe: bool) -> ModelPolicy {
        let allow = origins
            .iter()
            .map(|origin| {
                let mut parse = OriginParse::default();
                parse.load(origin.as_bytes()).expect("an origin");
                parse.normalize().expect("a valid origin");
                (parse.key().to_vec(), MethodSet::ANY)
            })
            .collect();
        ModelPolicy {
            allow,
            protects_unsafe,
            settings: FilterConfig::new(Mode::Enforce, OnIncomplete::Drop),
            client_header: stream::header::NONE,
        }
    }
}

impl Policy for ModelPolicy {
    fn protects_unsafe_methods(&self) -> bool {
        self.protects_unsafe
    }

    fn allowed_methods(&self, origin: &mut OriginParse) -> MethodSet {
        let key = origin.key();
        self.allow
            .iter()
            .find(|(k, _)| k.as_slice() == key)
            .map_or(MethodSet::NONE, |(_, m)| *m)
    }

    fn settings(&self) -> FilterConfig {
        self.settings
    }

    fn client_header(&self) -> u32 {
        self.client_header
    }
}

/// A segment's payload, read from a slice as the program reads the packet.
struct SliceBytes<'a>(&'a [u8]);

impl SegmentBytes for SliceBytes<'_> {
    fn load(&self, scratch: &mut Scratch, from: u32, len: u32) -> bool {
        let (from, len) = (from as usize, len as usize);
        let Some(bytes) = self.0.get(from..from + len) else {
            return false;
        };
        scratch.payload[..len].copy_from_slice(bytes);
        true
    }
}

/// The tables, with the bytes and policy the steps need.
struct Run<'a> {
    tables: &'a MemoryTables,
    bytes: SliceBytes<'a>,
    policy: &'a ModelPolicy,
}

impl Tables for Run<'_> {
    fn load_conn(&self, key: &ConnKey, into: &mut ConnState) -> bool {
        self.tables
            .conns
            .borrow()
            .get(key)
            .map(|c| *into = *c)
            .is_some()
    }

    fn keep_conn(&self, key: &ConnKey, conn: &ConnState) -> bool {
        self.tables.conns.borrow_mut().entry(*key).or_insert(*conn);
        true
    }

    fn store_conn(&self, key: &ConnKey, conn: &ConnState) {
        self.tables.conns.borrow_mut().insert(*key, *conn);
    }

    fn load_head(&self, key: &ConnKey, into: &mut HeadState) -> bool {
        self.tables
            .heads
            .borrow()
            .get(key)
            .map(|h| *into = *h)
            .is_some()
    }

    fn store_head(&self, key: &ConnKey, head: &HeadState) -> bool {
        let mut heads = self.tables.heads.borrow_mut();
        if !heads.contains_key(key) && self.tables.head_room.is_some_and(|n| heads.len() >= n) {
            return false;
        }
        heads.insert(*key, *head);
        true
    }

    fn delete_head(&self, key: &ConnKey) {
        self.tables.heads.borrow_mut().remove(key);
    }

    fn learned(&self) {}

    fn store_client(&self, key: &ConnKey, client: &ProxyClient) {
        *self.tables.proxy_headers.borrow_mut() += 1;
        if client.family != 0 {
            self.tables.clients.borrow_mut().insert(*key, *client);
        }
    }

    fn load_client(&self, key: &ConnKey, into: &mut ProxyClient) -> bool {
        self.tables
            .clients
            .borrow()
            .get(key)
            .map(|c| *into = *c)
            .is_some()
    }

    fn run_steps(&self, scratch: &mut Scratch, max: u32) {
        for _ in 0..max {
            if stream::step(scratch, &self.bytes, self.policy) == Step::Done {
                return;
            }
        }
        assert!(
            scratch.cursor.stopped != 0 || scratch.cursor.pos >= scratch.cursor.len,
            "the steps did not finish the segment in {max}: {} of {}",
            scratch.cursor.pos,
            scratch.cursor.len
        );
    }
}

/// The filter's connection tracking in userspace.
pub struct Model {
    pub tables: MemoryTables,
    pub policy: ModelPolicy,
    scratch: Box<Scratch>,
}

/// What the model did with one segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Judged {
    pub outcome: Outcome,
    pub verdict: Verdict,
    /// The method judged, for a denial.
    pub method: Method,
    /// The client a PROXY header named, for a denial (family 0: none).
    pub client: ProxyClient,
}

impl Model {
    pub fn new(policy: ModelPolicy) -> Model {
        Model {
            tables: MemoryTables::default(),
            policy,
            scratch: Box::new(Scratch::new(0xaa)),
        }
    }

    /// The outcome and verdict of a segment of `key` carrying `payload` at `seq`.
    pub fn segment(&mut self, key: &ConnKey, seq: u32, payload: &[u8], syn: bool) -> Judged {
        let run = Run {
            tables: &self.tables,
            bytes: SliceBytes(payload),
            policy: &self.policy,
        };
        let segment = Segment {
            seq,
            len: payload.len() as u32,
            syn,
            rst: false,
            urg: false,
        };
        let outcome = stream::filter_segment(
            &mut self.scratch,
            &run,
            key,
            segment,
            &run.bytes,
            &self.policy,
        );
        let proxied = self.scratch.stream_conn.flags & stream::conn_flags::PROXY_HEADER != 0;
        Judged {
            outcome,
            verdict: outcome.verdict(&self.policy.settings.for_connection(proxied)),
            method: Method::from_code(self.scratch.judged.get()),
            client: self.scratch.proxy_client,
        }
    }
}

/// A connection key for tests: client port `port`.
pub fn key(port: u16) -> ConnKey {
    ConnKey {
        source_addr: [198, 18, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        dest_addr: [198, 18, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        source_port: port,
        dest_port: 8080,
        family: cors_filter_common::event::FAMILY_IPV4 as u32,
    }
}
