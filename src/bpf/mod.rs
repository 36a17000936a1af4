//! The XDP steering program: skeleton, maps and attachment.

#[allow(clippy::all, dead_code, non_camel_case_types, unused_imports)]
mod skel {
    include!(concat!(env!("OUT_DIR"), "/xvs.skel.rs"));
}
