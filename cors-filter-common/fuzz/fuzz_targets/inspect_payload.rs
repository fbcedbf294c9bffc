//! The program's payload parsing (`cors_filter_common::inspect_payload`,
//! run in userspace by `cors_filter_tests::scanner`) against httparse's
//! reading with the filter's bounds: the property of
//! `cors_filter_tests::differential::agrees`, on arbitrary bytes.
//!
//! `cargo xtask fuzz [--seconds N]` runs it with generated seeds and a
//! dictionary; `cargo xtask test` runs it briefly.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// Longest input tried: well past the scan window, so heads that end past
/// it are tried too.
const MAX_INPUT: usize = 4096;

fuzz_target!(|data: &[u8]| {
    if data.is_empty() {
        return;
    }
    let payload = &data[..data.len().min(MAX_INPUT)];
    if let Err(why) = cors_filter_tests::differential::agrees(payload) {
        panic!("the parsing code disagrees with httparse: {why}");
    }
});
