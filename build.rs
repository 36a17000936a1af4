//! Compiles the steering XDP program (`bpf/xvs.bpf.c`) and generates its libbpf-rs skeleton.
//! The bench tool's programs are built by its own crate (`benches/xvs-bench/build.rs`), and
//! `bpf/xvs_decap.bpf.c` by the harness scripts (it runs in a real server's namespace).

use libbpf_cargo::SkeletonBuilder;
use std::env;
use std::path::PathBuf;

/// (source, skeleton file in OUT_DIR, headers it includes).
const PROGRAMS: &[(&str, &str, &[&str])] =
    &[("bpf/xvs.bpf.c", "xvs.skel.rs", &["bpf/xvs_shared.h"])];

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets the target arch");
    // Debian keeps <asm/types.h> under the multiarch directory, which `clang -target bpf` does
    // not search on its own.
    let multiarch = format!("-I/usr/include/{arch}-linux-gnu");
    for (src, skel, headers) in PROGRAMS {
        SkeletonBuilder::new()
            .source(src)
            .clang_args(["-Wall", "-O2", "-Ibpf", multiarch.as_str()])
            .build_and_generate(out.join(skel))
            .unwrap_or_else(|e| {
                panic!("building {src} failed (are clang and libbpf-dev installed? run scripts/deps.sh): {e:#}")
            });
        println!("cargo:rerun-if-changed={src}");
        for h in *headers {
            println!("cargo:rerun-if-changed={h}");
        }
    }
}
