//! Compiles the XDP steering program in `bpf/` and generates its libbpf-rs skeleton.

use libbpf_cargo::SkeletonBuilder;
use std::env;
use std::path::PathBuf;

const SRC: &str = "bpf/xvs.bpf.c";

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets the target arch");
    // Debian keeps <asm/types.h> under the multiarch directory, which `clang -target bpf` does
    // not search on its own.
    let multiarch = format!("-I/usr/include/{arch}-linux-gnu");
    SkeletonBuilder::new()
        .source(SRC)
        .clang_args(["-Wall", "-O2", "-Ibpf", multiarch.as_str()])
        .build_and_generate(out.join("xvs.skel.rs"))
        .unwrap_or_else(|e| {
            panic!("building {SRC} failed (are clang and libbpf-dev installed? run scripts/deps.sh): {e:#}")
        });
    println!("cargo:rerun-if-changed={SRC}");
    println!("cargo:rerun-if-changed=bpf/xvs_shared.h");
}
