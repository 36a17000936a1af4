//! xvs-bench: load generator, counting sink, CPU and latency measurement for
//! `scripts/bench.sh`. Thin wiring; the logic lives in the `xvs_bench` library (src/lib.rs).

use clap::Parser;

fn main() {
    let cli = xvs_bench::cli::Cli::parse();
    if let Err(e) = xvs_bench::cli::run(cli) {
        eprintln!("xvs-bench: {e:#}");
        std::process::exit(1);
    }
}
