//! ns per scheduling decision: one `Scheduler::schedule` call, for every scheduler at 2, 16
//! and 256 real servers.
//!
//! Run with `cargo bench --bench sched`; results are named `sched/<name>/<servers>`.
//! Figures and the machine they came from are in docs/benchmarks.md.
//!
//! Setup, the same for every scheduler:
//! - weights vary from 1 to 13 (coprime mix, so wrr walks several levels per period);
//! - every server carries some active and inactive connections (different per server), so
//!   lc/wlc/sed/nq compare real loads rather than stopping at the first idle server;
//! - flows cycle over 4096 source and 4096 destination addresses (and source ports), so
//!   sh hashes different sources, dh different destinations, and lblc/lblcr keep 4096
//!   cached destinations (their tables are filled during warm-up: the figure is the
//!   steady-state lookup, not the first-sight insert, which allocates).
//!
//! Connection counters are not changed by the benchmark (nothing is bound), so the load
//! picture stays fixed throughout a run.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use xvs::dest::DestRt;
use xvs::model::Forward;
use xvs::packet::FlowKey;
use xvs::sched::{by_name_with, SchedFlags};

/// Every scheduler xvs implements, in ipvsadm's order of the man page.
const SCHEDULERS: &[&str] = &[
    "rr", "wrr", "lc", "wlc", "sed", "nq", "sh", "dh", "lblc", "lblcr", "fo", "ovf", "mh", "twos",
];
/// Server counts measured.
const SIZES: &[usize] = &[2, 16, 256];
/// Distinct flows cycled through (a power of two: the index is masked).
const FLOWS: usize = 4096;
/// A fixed clock: lblc/lblcr only compare it against their own timestamps.
const NOW_MS: u64 = 1_000_000;

/// `n` servers 10.1.x.y:80 with varied weights and loads.
fn servers(n: usize) -> Vec<Arc<DestRt>> {
    (0..n)
        .map(|i| {
            let ip = Ipv4Addr::new(10, 1, (i >> 8) as u8, i as u8);
            // 1..=13; 13 is prime, so the gcd of the set is 1 (the worst case for wrr).
            let weight = 1 + (i as u32 * 7) % 13;
            let d = DestRt::new(ip, 80, Forward::Route, weight);
            // Active 0..=16, inactive 0..=96: no server is idle except by chance, and the
            // overhead ordering differs from the weight ordering.
            d.load.active_conns.store((i as u32 * 5 + 3) % 17, Relaxed);
            d.load
                .inactive_conns
                .store((i as u32 * 31 + 11) % 97, Relaxed);
            Arc::new(d)
        })
        .collect()
}

/// 4096 TCP flows: source 172.16.x.y:port to destination 192.168.x.y:80, with source and
/// destination walking in different orders so that (src, dst) pairs do not repeat in step.
fn flows() -> Vec<FlowKey> {
    (0..FLOWS as u32)
        .map(|i| FlowKey {
            saddr: 0xac10_0000 | i,
            // An odd multiplier permutes 0..4096: every destination appears once per cycle.
            daddr: 0xc0a8_0000 | (i.wrapping_mul(1657) & 0xfff),
            sport: 1024 + (i.wrapping_mul(40_503) & 0x7fff) as u16,
            dport: 80,
            proto: 6,
        })
        .collect()
}

fn bench_schedulers(c: &mut Criterion) {
    let flows = flows();
    for &name in SCHEDULERS {
        let mut g = c.benchmark_group(format!("sched/{name}"));
        for &n in SIZES {
            let dests = servers(n);
            let mut s = by_name_with(name, SchedFlags::default()).expect("known scheduler");
            s.update(&dests);
            // Fill lblc/lblcr tables (and check every scheduler picks something here).
            for f in &flows {
                assert!(
                    s.schedule(&dests, f, NOW_MS).is_some(),
                    "{name}/{n}: no pick"
                );
            }
            let mut i = 0usize;
            g.bench_function(BenchmarkId::from_parameter(n), |b| {
                b.iter(|| {
                    let f = &flows[i & (FLOWS - 1)];
                    i = i.wrapping_add(1);
                    black_box(s.schedule(black_box(&dests), f, NOW_MS))
                })
            });
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    // 42 benchmarks; short windows keep the binary to about three minutes.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = bench_schedulers
}
criterion_main!(benches);
