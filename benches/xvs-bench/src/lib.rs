//! Benchmark tooling: a load generator, a counting sink, CPU and latency measurement, and
//! the report of `scripts/bench.sh`. The `xvs-bench` binary is a thin wrapper over [`cli`].
//!
//! Pieces:
//! - [`gen`]: `bpf/xvs_gen.bpf.c` run with `BPF_PROG_RUN` and live frames (the kernel's pktgen
//!   is missing on the development VMs; `scripts/pktgen.sh` drives it where it exists).
//! - [`sink`]: `bpf/xvs_sink.bpf.c`, counting (and dropping) forwarded frames per
//!   destination MAC and address where they arrive.
//! - [`cpu`], [`napi`], [`measure`]: CPU time of the director's tasks (its threads and its
//!   interfaces' NAPI kthreads) over the same window as the sink counts.
//! - [`latency`]: UDP request/response RTT percentiles.
//! - [`report`]: the table of `scripts/bench.sh` and its section of `docs/benchmarks.md`.

pub mod cli;
pub mod cpu;
pub mod frame;
pub mod gen;
pub mod latency;
pub mod maps;
pub mod measure;
pub mod napi;
pub mod peak;
pub mod report;
pub mod sink;
pub mod stats;
pub mod sys;

#[allow(
    clippy::all,
    dead_code,
    non_camel_case_types,
    unused_imports,
    unsafe_op_in_unsafe_fn
)]
mod gen_skel {
    include!(concat!(env!("OUT_DIR"), "/xvs_gen.skel.rs"));
}

#[allow(
    clippy::all,
    dead_code,
    non_camel_case_types,
    unused_imports,
    unsafe_op_in_unsafe_fn
)]
mod sink_skel {
    include!(concat!(env!("OUT_DIR"), "/xvs_sink.skel.rs"));
}
