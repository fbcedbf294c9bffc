//! The program's parsing code, from cors-filter-common, run in userspace on
//! a payload: the same steps (`inspect_payload`) on the same scratch layout,
//! with a policy that says whether the port protects unsafe methods and
//! passes undecided ones, gives one answer to any allowlist lookup, and
//! records what it is asked.

use std::cell::{Cell, RefCell};

use cors_filter_common::{
    FilterConfig, Method, MethodSet, Mode, OnIncomplete, Outcome, Policy, Scratch,
    http::SCAN_BYTES, inspect_payload, origin::OriginParse,
};

/// The policy a payload is scanned under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScanPolicy {
    /// Whether the port protects unsafe methods.
    pub protects_unsafe: bool,
    /// Whether it passes unsafe requests the window does not decide
    /// (`unsafe_on_incomplete = "pass"`).
    pub passes_incomplete_unsafe: bool,
    /// What the allowlist answers for any origin: [`MethodSet::NONE`] (not
    /// listed), [`MethodSet::ANY`] (listed without methods) or some methods.
    pub answer: MethodSet,
}

/// What the parsing code makes of a payload.
#[derive(Debug, PartialEq, Eq)]
pub struct Scanned {
    pub outcome: Outcome,
    /// The allowlist key looked up, up to and including its final NUL.
    pub key: Option<Vec<u8>>,
    /// The method the request was judged by (`Scratch::judged`): meaningful
    /// when a lookup was made.
    pub judged: Method,
    /// Whether the port's setting was asked for: when it was not, the
    /// outcome is the same whatever it is.
    pub asked_protects: bool,
    /// Whether an incomplete request is dropped by the settings the
    /// program judges this one by (`Scratch::settings_for_request`), the
    /// filter's own being `on_incomplete = "pass"`: an unsafe request's
    /// are its port's.
    pub drops_incomplete: bool,
}

/// Runs the parsing code on `payload` (not empty) as the program would on a
/// segment carrying it to a port under `policy`: only the first
/// [`SCAN_BYTES`] bytes are seen, in a scratch buffer that still holds
/// `stale` bytes from earlier packets.
pub fn scan(payload: &[u8], stale: u8, policy: ScanPolicy) -> Scanned {
    assert!(
        !payload.is_empty(),
        "the program never scans an empty payload"
    );
    SCRATCH.with_borrow_mut(|scratch| {
        // Every scan starts from a fresh scratch space, whatever the one
        // before left in it: the result is a function of the payload (the
        // fuzzer needs that), and of the stale bytes chosen.
        **scratch = Scratch::new(stale);
        let len = payload.len().min(SCAN_BYTES);
        scratch.payload[..len].copy_from_slice(&payload[..len]);
        let recording = RecordingPolicy {
            policy,
            key: RefCell::new(None),
            asked_protects: Cell::new(false),
        };
        let outcome = inspect_payload(scratch, len, &recording);
        let settings =
            scratch.settings_for_request(FilterConfig::new(Mode::Enforce, OnIncomplete::Pass));
        Scanned {
            outcome,
            key: recording.key.into_inner(),
            judged: Method::from_code(scratch.judged.get()),
            asked_protects: recording.asked_protects.get(),
            drops_incomplete: settings.drop_incomplete(),
        }
    })
}

thread_local! {
    /// The scratch space scans run in, one per thread, allocated once: a
    /// scan runs many times per payload. Boxed: it is larger than a test
    /// thread's stack wants.
    static SCRATCH: RefCell<Box<Scratch>> = RefCell::new(Box::new(Scratch::new(0)));
}

/// A [`ScanPolicy`] that records the key it is asked about and whether the
/// port's setting was read.
struct RecordingPolicy {
    policy: ScanPolicy,
    key: RefCell<Option<Vec<u8>>>,
    asked_protects: Cell<bool>,
}

impl Policy for RecordingPolicy {
    fn protects_unsafe_methods(&self) -> bool {
        self.asked_protects.set(true);
        self.policy.protects_unsafe
    }

    fn passes_incomplete_unsafe(&self) -> bool {
        self.policy.passes_incomplete_unsafe
    }

    fn allowed_methods(&self, origin: &mut OriginParse) -> MethodSet {
        let bytes = origin.key();
        assert_eq!(bytes.last(), Some(&0), "a key ends with NUL");
        let previous = self.key.borrow_mut().replace(bytes.to_vec());
        assert_eq!(previous, None, "the allowlist is asked at most once");
        self.policy.answer
    }

    fn settings(&self) -> FilterConfig {
        FilterConfig::new(Mode::Enforce, OnIncomplete::Pass)
    }
}
