//! The program's parsing code, from cors-filter-common, run in userspace on
//! a payload: the same steps (`inspect_payload`) on the same scratch layout,
//! with an allowlist lookup that records the key it is asked about.

use std::cell::RefCell;

use cors_filter_common::{
    MethodSet, Outcome, Policy, Scratch,
    http::{SCAN_BUF_LEN, SCAN_BYTES},
    inspect_payload,
    origin::OriginParse,
};

/// What the parsing code makes of a payload.
#[derive(Debug, PartialEq, Eq)]
pub struct Scanned {
    /// `Denied` for every well-formed preflight: the lookup answers no.
    pub outcome: Outcome,
    /// The allowlist key looked up, up to and including its final NUL.
    pub key: Option<Vec<u8>>,
}

/// Runs the parsing code on `payload` (not empty) as the program would on a
/// segment carrying it: only the first [`SCAN_BYTES`] bytes are seen, in a
/// scratch buffer that still holds `stale` bytes from earlier packets.
pub fn scan(payload: &[u8], stale: u8) -> Scanned {
    assert!(
        !payload.is_empty(),
        "the program never scans an empty payload"
    );
    // Boxed: the scratch space is larger than a test thread's stack wants.
    let mut scratch: Box<Scratch> = Box::new(Scratch {
        payload: [stale; SCAN_BUF_LEN],
        payload_len: Default::default(),
        ipv6_walk_offset: Default::default(),
        generation: Default::default(),
        addressing: Default::default(),
        head: Default::default(),
        origin: Default::default(),
        judged: Default::default(),
        unsafe_request: Default::default(),
        pass_incomplete_unsafe: Default::default(),
        reset: Default::default(),
    });
    let len = payload.len().min(SCAN_BYTES);
    scratch.payload[..len].copy_from_slice(&payload[..len]);
    let policy = RecordingPolicy::default();
    let outcome = inspect_payload(&mut scratch, len, &policy);
    Scanned {
        outcome,
        key: policy.key.into_inner(),
    }
}

/// A policy that allows no origin and records the key it is asked about.
#[derive(Default)]
struct RecordingPolicy {
    key: RefCell<Option<Vec<u8>>>,
}

impl Policy for RecordingPolicy {
    fn protects_unsafe_methods(&self) -> bool {
        false
    }

    fn passes_incomplete_unsafe(&self) -> bool {
        false
    }

    fn allowed_methods(&self, origin: &mut OriginParse) -> MethodSet {
        let bytes = origin.key();
        assert_eq!(bytes.last(), Some(&0), "a key ends with NUL");
        *self.key.borrow_mut() = Some(bytes.to_vec());
        MethodSet::NONE
    }
}
