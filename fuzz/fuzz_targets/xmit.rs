//! Frames that parse, through every rewrite of `xvs::xmit`: never panics; outputs are well
//! formed.
//! The body is `xvs::fuzzing::xmit`, shared with tests/fuzz_smoke.rs.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| xvs::fuzzing::xmit(data));
