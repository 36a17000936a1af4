//! Any bytes as one IPVS sync datagram through `xvs::sync::wire::decode_partial`, with and
//! without a syncid filter: never panics; whatever it accepts re-encodes (v1 or v0) and
//! decodes to the same entries. The body is `xvs::sync::wire::fuzz_decode`, shared with
//! tests/sync_wire.rs.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| xvs::sync::wire::fuzz_decode(data));
