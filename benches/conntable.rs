//! Connection table: insert, lookup (hit) and expiry at 1k, 1M and 10M entries, and the
//! memory an entry costs.
//!
//! Run with `cargo bench --bench conntable`; results are named `conntable/<op>/<entries>`.
//! Figures and the machine they came from are in docs/benchmarks.md.
//!
//! One table per size is filled once with `N` live entries and shared by the four
//! measurements, run in this order so each leaves the table as the next expects:
//! - `lookup`: a hit for a present key, keys visited in a scattered order (a stride that is
//!   coprime with `N`), so large tables pay their cache misses as a real worker would;
//! - `sweep`: `expire` over live entries (nothing to remove), per slot examined: the cost
//!   a worker pays every batch for the bounded clock sweep;
//! - `expire`: `expire` where every examined entry has expired, per entry removed
//!   (index removal, free-list push, server uncount); the removed entries are put back
//!   outside the timed region so the table stays at `N`;
//! - `insert`: a new entry into a table holding `N` (up to `N + 64` during a batch),
//!   including building the `Conn` (two `Arc` clones, as the forwarder does); the batch is
//!   removed again outside the timed region.
//!
//! Before the benchmarks, the fill of each table is timed once and its resident-memory
//! growth (`/proc/self/statm`) is printed as bytes per entry, next to the computed figure
//! (`size_of::<Option<Conn>>()` plus the free list and the hash index).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use xvs::conn::{Conn, ConnState, ConnTable};
use xvs::dest::DestRt;
use xvs::model::{Forward, Protocol, ServiceKey};
use xvs::packet::FlowKey;
use xvs::service::ServiceRt;

/// Table sizes measured (entries).
const SIZES: &[usize] = &[1_000, 1_000_000, 10_000_000];
/// Entries per timed batch of the insert and expire measurements; also the budget of one
/// `expire` call, the one the worker uses (worker.rs `EXPIRE_BUDGET`).
const BATCH: usize = 64;
/// Every entry of the tables expires at this time; `expire(LIVE_UNTIL_MS + 1)` finds all
/// of them dead, `expire(0)` none.
const LIVE_UNTIL_MS: u64 = 1_000_000;
/// Servers the entries are spread over (each insert and removal counts on one).
const SERVERS: usize = 4;

/// The service and servers entries point at.
struct Fixture {
    svc: Arc<ServiceRt>,
    dests: Vec<Arc<DestRt>>,
}

impl Fixture {
    fn new() -> Self {
        let svc = Arc::new(ServiceRt::new(
            ServiceKey {
                proto: Protocol::Tcp,
                addr: Ipv4Addr::new(10, 0, 0, 88),
                port: 80,
            },
            xvs::sched::by_name("rr").expect("rr exists"),
        ));
        let dests = (0..SERVERS)
            .map(|i| {
                Arc::new(DestRt::new(
                    Ipv4Addr::new(10, 0, 0, 9 + i as u8),
                    80,
                    Forward::Route,
                    1,
                ))
            })
            .collect();
        Fixture { svc, dests }
    }

    /// The connection with id `id` (ids map one-to-one to keys).
    fn conn(&self, id: u64) -> Conn {
        Conn {
            key: key(id),
            state: ConnState::Established,
            expires_ms: LIVE_UNTIL_MS,
            svc: self.svc.clone(),
            dest: self.dests[id as usize % SERVERS].clone(),
            tpl: xvs::service::NO_TEMPLATE,
            rip: 0,
            rport: 0,
            client_mac: [0; 6],
            in_port: 0,
            worker: 0,
            sync_pkts: 0,
            sync_state: xvs::conn::ConnState::None,
            fast: false,
        }
    }
}

/// A distinct client address and port per id (unique below 2^48): client
/// (10.0.0.0 ^ id>>16):(id & 0xffff) to 10.0.0.88:80.
fn key(id: u64) -> FlowKey {
    FlowKey {
        saddr: 0x0a00_0000 ^ (id >> 16) as u32,
        daddr: 0x0a00_0058,
        sport: id as u16,
        dport: 80,
        proto: 6,
    }
}

/// Resident set size in bytes (second field of /proc/self/statm, in pages).
fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("statm resident field");
    // SAFETY: sysconf has no preconditions; _SC_PAGESIZE is always supported on Linux.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page as u64
}

/// Buckets hashbrown (0.15) allocates for `cap >= 15` items: `cap * 8 / 7` rounded up to a
/// power of two (`capacity_to_buckets`), i.e. a load of at most 7/8.
fn index_buckets(cap: usize) -> usize {
    assert!(cap >= 15, "small tables follow other rules");
    (cap * 8 / 7).next_power_of_two()
}

/// Bytes per entry the table reserves for capacity `cap` holding `n` entries: the slab, the
/// free list (touched only as entries are removed) and the index (a u32 and one control
/// byte per bucket, plus one 16-byte group of trailing control bytes).
fn computed_bytes_per_entry(cap: usize, n: usize) -> f64 {
    let slab = cap * std::mem::size_of::<Option<Conn>>();
    let free = cap * std::mem::size_of::<u32>();
    let b = index_buckets(cap);
    let index = b * (std::mem::size_of::<u32>() + 1) + 16;
    (slab + free + index) as f64 / n as f64
}

/// Fills a new table of capacity `n + BATCH` with ids `0..n`, printing the fill time and
/// the memory it took.
fn filled(fx: &Fixture, n: usize) -> ConnTable {
    let before = rss_bytes();
    let t0 = Instant::now();
    let mut t = ConnTable::with_capacity(n + BATCH);
    for id in 0..n as u64 {
        t.insert(fx.conn(id)).expect("within capacity");
    }
    let fill = t0.elapsed();
    let grown = rss_bytes().saturating_sub(before);
    eprintln!(
        "conntable/{n}: size_of::<Option<Conn>>() = {} B; computed {:.1} B/entry \
         (slab + free list + index of {} buckets, capacity {}); RSS growth {:.1} B/entry \
         ({:.1} MiB); fill {:.1} ns/entry",
        std::mem::size_of::<Option<Conn>>(),
        computed_bytes_per_entry(n + BATCH, n),
        index_buckets(n + BATCH),
        n + BATCH,
        grown as f64 / n as f64,
        grown as f64 / (1 << 20) as f64,
        fill.as_nanos() as f64 / n as f64,
    );
    t
}

/// A stride coprime with `n` and far from 1, so consecutive lookups land far apart.
fn stride(n: usize) -> usize {
    let mut s = (n as f64 * 0.618_033_988_7) as usize | 1;
    while gcd(s, n) != 1 {
        s += 2;
    }
    s
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn bench_size(c: &mut Criterion, fx: &Fixture, n: usize) {
    let mut t = filled(fx, n);
    let mut g = c.benchmark_group("conntable");
    if n >= 1_000_000 {
        // Cold memory makes these noisier: fewer, longer samples (about 25 s per size).
        g.sample_size(30);
        g.warm_up_time(Duration::from_secs(1));
        g.measurement_time(Duration::from_secs(5));
    }

    // lookup: a hit, scattered order.
    let step = stride(n);
    let mut j = 0usize;
    g.bench_function(BenchmarkId::new("lookup", n), |b| {
        b.iter(|| {
            j += step;
            if j >= n {
                j -= n;
            }
            black_box(t.lookup(&key(j as u64)))
        })
    });

    // sweep: expire() over live entries, per slot examined.
    g.bench_function(BenchmarkId::new("sweep", n), |b| {
        b.iter_custom(|iters| {
            let mut left = iters;
            let t0 = Instant::now();
            while left > 0 {
                let k = left.min(BATCH as u64);
                let removed = t.expire(0, k as usize);
                debug_assert_eq!(removed, 0);
                black_box(removed);
                left -= k;
            }
            t0.elapsed()
        })
    });

    // expire: every examined entry is dead, per entry removed; refill untimed.
    let mut next_id = n as u64;
    g.bench_function(BenchmarkId::new("expire", n), |b| {
        b.iter_custom(|iters| {
            let mut left = iters;
            let mut timed = Duration::ZERO;
            while left > 0 {
                let k = left.min(BATCH as u64) as usize;
                let t0 = Instant::now();
                let removed = t.expire(LIVE_UNTIL_MS + 1, k);
                timed += t0.elapsed();
                assert_eq!(removed, k, "a full table: every examined slot is live");
                for _ in 0..removed {
                    t.insert(fx.conn(next_id)).expect("refill a freed slot");
                    next_id += 1;
                }
                left -= k as u64;
            }
            timed
        })
    });

    // insert: into a table of N entries; the batch is removed untimed.
    let mut slots = Vec::with_capacity(BATCH);
    g.bench_function(BenchmarkId::new("insert", n), |b| {
        b.iter_custom(|iters| {
            let mut left = iters;
            let mut timed = Duration::ZERO;
            while left > 0 {
                let k = left.min(BATCH as u64);
                let t0 = Instant::now();
                for _ in 0..k {
                    slots.push(t.insert(fx.conn(next_id)).expect("room for a batch"));
                    next_id += 1;
                }
                timed += t0.elapsed();
                for s in slots.drain(..) {
                    t.remove(s);
                }
                left -= k;
            }
            timed
        })
    });
    g.finish();
    assert_eq!(t.len(), n);
    // Dropping a 10M table uncounts every entry: a second or so, outside any measurement.
    drop(t);
}

fn bench_conntable(c: &mut Criterion) {
    let fx = Fixture::new();
    for &n in SIZES {
        bench_size(c, &fx, n);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50);
    targets = bench_conntable
}
criterion_main!(benches);
