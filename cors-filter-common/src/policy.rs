//! What the parser asks of the policy a packet is judged by: the program
//! supplies its port's settings and the allowlist in maps; userspace tests
//! and fuzzers supply their own, and run the very same parsing code.

use crate::{method::MethodSet, origin::OriginParse};

/// What the parser asks of the policy the packet is judged by.
pub trait Policy {
    /// Whether requests with an unsafe method to the packet's port are
    /// checked (`protect_unsafe_methods`).
    fn protects_unsafe_methods(&self) -> bool;

    /// The methods the allowlist allows the normalised origin in `origin`
    /// (see `crate::allow_map`): [`MethodSet::NONE`] when it does not hold it.
    /// Asked at most once per request.
    fn allowed_methods(&self, origin: &mut OriginParse) -> MethodSet;

    /// The settings of the policy generation the packet is judged by.
    fn settings(&self) -> crate::FilterConfig;

    /// The header whose last element names the client in denial events on
    /// the packet's port: a `stream::header` number, `header::NONE` where
    /// none is trusted (the default).
    fn client_header(&self) -> u32 {
        crate::stream::header::NONE
    }
}
