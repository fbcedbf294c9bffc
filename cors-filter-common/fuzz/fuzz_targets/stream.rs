//! The connection tracking (`cors_filter_common::stream`, run in userspace
//! by `cors_filter_tests::oracles::stream_model`) against the whole-stream
//! reference, on arbitrary bytes: the first byte says whether the port
//! protects unsafe methods and how many of the next bytes choose the cuts
//! (and which segments are sent after the next one); the rest is the
//! connection's stream, delivered by the stream differential's client TCP
//! and checked by `cors_filter_tests::oracles::stream_differential::agrees_on`.
//! Nothing may panic.
//!
//! `cargo xtask fuzz [--seconds N]` runs it with generated seeds and a
//! dictionary; `cargo xtask test` runs it briefly.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// Longest input tried: past the bound on a judged head's bytes
/// (`stream::DEFAULT_MAX_HEAD_BYTES`), so heads over it are tried too.
const MAX_INPUT: usize = 20_000;

fuzz_target!(|data: &[u8]| {
    let data = &data[..data.len().min(MAX_INPUT)];
    if let Err(why) = cors_filter_tests::oracles::stream_differential::agrees_on(data) {
        panic!("the connection tracking disagrees with the reference: {why}");
    }
});
