//! Compiles the two benchmark XDP programs in `bpf/` (the load generator and the counting
//! sink) and generates their libbpf-rs skeletons. Only this crate builds them: xvsd's build
//! (the root build.rs) compiles the steering program alone.

use libbpf_cargo::SkeletonBuilder;
use std::env;
use std::path::PathBuf;

/// (source, skeleton file in OUT_DIR); both include `bpf/xvs_bench.h`.
const PROGRAMS: &[(&str, &str)] = &[
    ("bpf/xvs_gen.bpf.c", "xvs_gen.skel.rs"),
    ("bpf/xvs_sink.bpf.c", "xvs_sink.skel.rs"),
];

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets the target arch");
    // Debian keeps <asm/types.h> under the multiarch directory, which `clang -target bpf` does
    // not search on its own.
    let multiarch = format!("-I/usr/include/{arch}-linux-gnu");
    for (src, skel) in PROGRAMS {
        SkeletonBuilder::new()
            .source(src)
            .clang_args(["-Wall", "-O2", "-Ibpf", multiarch.as_str()])
            .build_and_generate(out.join(skel))
            .unwrap_or_else(|e| {
                panic!("building {src} failed (are clang and libbpf-dev installed? run scripts/deps.sh): {e:#}")
            });
        println!("cargo:rerun-if-changed={src}");
    }
    println!("cargo:rerun-if-changed=bpf/xvs_bench.h");
}
