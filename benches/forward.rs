//! `Forwarder::process` per frame, on prepared 64-byte TCP frames.
//!
//! Run with `cargo bench --bench forward`; results are named `forward/<case>/<flows>`.
//! Figures and the machine they came from are in docs/benchmarks.md.
//!
//! Three services, wrr over three servers each (weights 1, 2, 3), every next hop resolved:
//! DR on 10.0.0.88:80, TUN on 10.0.0.89:80, NAT on 10.0.0.90:80.
//!
//! - `dr_established/N`: ACKs of N flows whose DR connections exist (lookup hit, TCP state
//!   transition, timeout refresh, counters, MAC rewrite). Flows are visited in order; with
//!   N = 4096 everything stays in cache, N = 1M walks memory as a busy worker would.
//! - `dr_new/65536`: SYNs of flows the table has never seen (lookup miss, service lookup,
//!   wrr under the service lock, insert, counters, rewrite). When all 65536 have been sent,
//!   the table is cleared outside the timed region so that every SYN is new again.
//! - `dr_new_8m/1048576`: the same SYNs, 1M per pass, into a table of 8M capacity (what
//!   `scripts/bench.sh`'s `new` row gives xvsd: `--conn-max 8388608`): the index is then
//!   80 MiB and every SYN's lookup and insert land on a cold, random part of it.
//! - `tun_established/4096`: as `dr_established`, plus IPIP encapsulation (the packet moves
//!   20 bytes, a new outer header and its checksum).
//! - `nat_request/4096`, `nat_reply/4096`: client-to-server and server-to-client segments
//!   of established NAT connections (the shared NAT table's shard lock, address and port
//!   rewrite with incremental checksum updates).
//!
//! Frames are processed in batches of 64 (the worker's batch): before each batch, outside
//! the timed region, the batch's buffers are refreshed from pristine copies, because the
//! TUN and NAT rewrites are not idempotent. One `Instant::now` pair per batch adds about
//! 0.3 ns per frame here. No XDP, no rings: the per-frame logic only.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use etherparse::PacketBuilder;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use xvs::conn::NatConns;
use xvs::dest::DestRt;
use xvs::forward::{Forwarder, PortInfo, Verdict};
use xvs::model::{Forward, Protocol, ServiceKey};
use xvs::packet::parse_flow;
use xvs::service::{ServiceRt, Snapshot};

const LOCAL_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x12];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x64];
const DR_VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 88);
const TUN_VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 89);
const NAT_VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 90);
/// Minimum Ethernet frame without FCS is 60 bytes; 64 is the customary "small packet"
/// figure. 54 bytes of headers, the rest padding after the IP datagram.
const FRAME_LEN: usize = 64;
/// Frame buffers leave room for IPIP's 20 bytes.
const BUF_LEN: usize = 128;
/// Frames per timed batch, as the worker's RX batch.
const BATCH: usize = 64;
const NOW_MS: u64 = 1_000;
/// Flows of the cached cases.
const FLOWS: usize = 4096;
/// Flows of the memory-bound DR case.
const MANY_FLOWS: usize = 1 << 20;
/// SYNs per pass of the new-flow case (and the table's capacity there).
const NEW_FLOWS: usize = 65_536;
/// The big new-flow case: table capacity (bench.sh's --conn-max) and SYNs per pass.
const BIG_CAPACITY: usize = 8 << 20;
const BIG_NEW_FLOWS: usize = 1 << 20;

type Frame = [u8; FRAME_LEN];

/// Adds a wrr service on `vip:80` with three servers `base+0..2` on `rport`.
fn add_service(snap: &mut Snapshot, vip: Ipv4Addr, fwd: Forward, base: [u8; 4], rport: u16) {
    let key = ServiceKey {
        proto: Protocol::Tcp,
        addr: vip,
        port: 80,
    };
    let svc = Arc::new(ServiceRt::new(
        key,
        xvs::sched::by_name("wrr").expect("wrr exists"),
    ));
    svc.has_nat.store(fwd == Forward::Masq, Relaxed);
    let dests = (0..3u8)
        .map(|i| {
            let addr = Ipv4Addr::new(base[0], base[1], base[2], base[3] + i);
            let d = DestRt::new(addr, rport, fwd, 1 + i as u32);
            d.set_mac(Some([0x02, 0, 0, base[2], 1, i]));
            d.egress.store(0, Relaxed);
            d.tun_src
                .store(u32::from(Ipv4Addr::new(10, 0, 0, 1)), Relaxed);
            Arc::new(d)
        })
        .collect();
    svc.set_dests(dests, None);
    snap.insert(svc);
}

fn snapshot() -> Snapshot {
    let mut snap = Snapshot::default();
    add_service(&mut snap, DR_VIP, Forward::Route, [10, 0, 0, 9], 80);
    add_service(&mut snap, TUN_VIP, Forward::Tunnel, [10, 0, 1, 9], 80);
    add_service(&mut snap, NAT_VIP, Forward::Masq, [192, 168, 80, 10], 8080);
    snap
}

fn forwarder(capacity: usize) -> Forwarder {
    Forwarder::new(
        0,
        capacity,
        &[PortInfo {
            mac: LOCAL_MAC,
            mtu: 1500,
        }],
        // Shards are sized total/64; the flows do not spread perfectly evenly.
        Arc::new(NatConns::with_capacity(64 * 2 * FLOWS)),
    )
}

/// Client address and port of flow `k` (a distinct address per flow).
fn client(k: usize) -> ([u8; 4], u16) {
    (
        [172, 16 + (k >> 16) as u8, (k >> 8) as u8, k as u8],
        1024 + (k & 0x7fff) as u16,
    )
}

/// A 64-byte TCP segment `src:sport -> dst:dport`, SYN or ACK.
fn segment(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, syn: bool) -> Frame {
    let b = PacketBuilder::ethernet2(CLIENT_MAC, LOCAL_MAC)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1, 65535);
    let b = if syn { b.syn() } else { b.ack(1) };
    let mut v = Vec::with_capacity(FRAME_LEN);
    b.write(&mut v, &[]).expect("write to a Vec");
    let mut out = [0u8; FRAME_LEN];
    out[..v.len()].copy_from_slice(&v);
    out
}

/// Flow `k` to `vip:80`.
fn to_vip(k: usize, vip: Ipv4Addr, syn: bool) -> Frame {
    let (c, p) = client(k);
    segment(c, p, vip.octets(), 80, syn)
}

/// Runs one frame as the worker does; returns the verdict and the frame as sent.
fn run(fwd: &mut Forwarder, snap: &Snapshot, f: &Frame) -> (Verdict, [u8; BUF_LEN]) {
    let mut buf = [0u8; BUF_LEN];
    buf[..FRAME_LEN].copy_from_slice(f);
    let mut len = FRAME_LEN;
    (fwd.process(&mut buf, &mut len, 0, snap, NOW_MS), buf)
}

/// Opens flows `0..n` to `vip` (SYN, then ACK: ESTABLISHED), untimed. Returns, per flow,
/// the frame the real server received for its ACK.
fn establish(fwd: &mut Forwarder, snap: &Snapshot, vip: Ipv4Addr, n: usize) -> Vec<[u8; BUF_LEN]> {
    (0..n)
        .map(|k| {
            assert!(matches!(
                run(fwd, snap, &to_vip(k, vip, true)).0,
                Verdict::Tx(0)
            ));
            let (v, out) = run(fwd, snap, &to_vip(k, vip, false));
            assert!(matches!(v, Verdict::Tx(0)));
            out
        })
        .collect()
}

/// Times `process` over `frames` in batches, cycling; `on_wrap` runs (untimed) each time
/// the cycle starts over.
fn bench_frames(
    c: &mut Criterion,
    name: &str,
    flows: usize,
    fwd: &mut Forwarder,
    snap: &Snapshot,
    frames: &[Frame],
    mut on_wrap: impl FnMut(&mut Forwarder),
) {
    let mut g = c.benchmark_group(format!("forward/{name}"));
    if frames.len() > 100_000 {
        // Cold memory makes this one noisier: fewer, longer samples.
        g.sample_size(20).measurement_time(Duration::from_secs(4));
    }
    let mut bufs = vec![[0u8; BUF_LEN]; BATCH];
    let mut i = 0;
    let drops_before = fwd.counters.drops.iter().sum::<u64>();
    g.bench_function(BenchmarkId::from_parameter(flows), |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                if i == frames.len() {
                    on_wrap(fwd);
                    i = 0;
                }
                let k = (left as usize).min(BATCH).min(frames.len() - i);
                for (b, f) in bufs.iter_mut().zip(&frames[i..i + k]) {
                    b[..FRAME_LEN].copy_from_slice(f);
                }
                let t0 = Instant::now();
                for b in &mut bufs[..k] {
                    let mut len = FRAME_LEN;
                    black_box(fwd.process(b, &mut len, 0, snap, NOW_MS));
                }
                timed += t0.elapsed();
                i += k;
                left -= k as u64;
            }
            timed
        })
    });
    g.finish();
    assert_eq!(
        fwd.counters.drops.iter().sum::<u64>(),
        drops_before,
        "{name}: every frame must be forwarded"
    );
}

fn bench_forward(c: &mut Criterion) {
    let snap = snapshot();

    for n in [FLOWS, MANY_FLOWS] {
        let mut fwd = forwarder(n);
        establish(&mut fwd, &snap, DR_VIP, n);
        let acks: Vec<Frame> = (0..n).map(|k| to_vip(k, DR_VIP, false)).collect();
        let opened = fwd.counters.new_conns;
        bench_frames(c, "dr_established", n, &mut fwd, &snap, &acks, |_| {});
        assert_eq!(
            fwd.counters.new_conns, opened,
            "an ACK created a connection"
        );
    }

    let mut fwd = forwarder(NEW_FLOWS);
    let syns: Vec<Frame> = (0..NEW_FLOWS).map(|k| to_vip(k, DR_VIP, true)).collect();
    bench_frames(c, "dr_new", NEW_FLOWS, &mut fwd, &snap, &syns, |f| {
        f.conns.clear()
    });
    drop(fwd);

    let mut fwd = forwarder(BIG_CAPACITY);
    let syns: Vec<Frame> = (0..BIG_NEW_FLOWS)
        .map(|k| to_vip(k, DR_VIP, true))
        .collect();
    bench_frames(c, "dr_new_8m", BIG_NEW_FLOWS, &mut fwd, &snap, &syns, |f| {
        f.conns.clear()
    });
    drop(fwd);

    let mut fwd = forwarder(FLOWS);
    establish(&mut fwd, &snap, TUN_VIP, FLOWS);
    let acks: Vec<Frame> = (0..FLOWS).map(|k| to_vip(k, TUN_VIP, false)).collect();
    bench_frames(c, "tun_established", FLOWS, &mut fwd, &snap, &acks, |_| {});

    let mut fwd = forwarder(0);
    let sent = establish(&mut fwd, &snap, NAT_VIP, FLOWS);
    let requests: Vec<Frame> = (0..FLOWS).map(|k| to_vip(k, NAT_VIP, false)).collect();
    // Each reply comes from the server the request was rewritten to.
    let replies: Vec<Frame> = sent
        .iter()
        .enumerate()
        .map(|(k, out)| {
            let rs = parse_flow(&out[..FRAME_LEN])
                .expect("a rewritten TCP frame")
                .key;
            let (c, p) = client(k);
            segment(rs.daddr.to_be_bytes(), rs.dport, c, p, false)
        })
        .collect();
    bench_frames(c, "nat_request", FLOWS, &mut fwd, &snap, &requests, |_| {});
    bench_frames(c, "nat_reply", FLOWS, &mut fwd, &snap, &replies, |_| {});
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = bench_forward
}
criterion_main!(benches);
