//! The references the filter is compared with, and the seeded inputs of those
//! comparisons: the per-head reference and the whole-stream one, the
//! userspace model of the connection tracking, the differential that holds
//! one against the other, and the generators of origins and connections.

pub mod generate;
pub mod reference;
pub mod stream_differential;
pub mod stream_generate;
pub mod stream_model;
pub mod stream_reference;
