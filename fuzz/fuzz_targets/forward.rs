//! Any bytes as a frame through a `Forwarder` with DR, NAT and TUN services (then again, then
//! the reply to what was sent): never panics; lengths stay within the buffer.
//! The body is `xvs::fuzzing::forward`, shared with tests/fuzz_smoke.rs.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| xvs::fuzzing::forward(data));
