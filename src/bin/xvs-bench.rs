//! xvs-bench: load generator, counting sink, CPU and latency measurement for
//! `scripts/bench.sh`. Thin wiring; the logic lives in `xvs::bench`.

use clap::Parser;

fn main() {
    let cli = xvs::bench::cli::Cli::parse();
    if let Err(e) = xvs::bench::cli::run(cli) {
        eprintln!("xvs-bench: {e:#}");
        std::process::exit(1);
    }
}
