//! Any bytes through `xvs::packet::parse_flow`: never panics; accepted frames are in bounds.
//! The body is `xvs::fuzzing::parse_flow`, shared with tests/fuzz_smoke.rs.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| xvs::fuzzing::parse_flow(data));
