//! The per-packet path does not allocate: `Forwarder::process` on SYNs of new flows and on
//! segments of established ones (DR, TUN, and NAT in both directions), plus the bounded
//! expiry sweep, plus ICMP errors handed from one worker to another (src/handoff.rs),
//! under a counting global allocator.
//!
//! Documented exceptions: the persistence template table grows (amortised) until it reaches
//! its capacity, after which it only reuses slots (conn/template.rs; the flood test below
//! checks that steady state), and lblc/lblcr insert into the scheduler's table for a new
//! destination (sched/lblc.rs). The services here are wrr; mh, fo, ovf and twos picks are
//! checked on their own.

use etherparse::PacketBuilder;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use xvs::conn::NatConns;
use xvs::dest::DestRt;
use xvs::forward::{Forwarder, PortInfo, Verdict};
use xvs::model::{Forward, Protocol, ServiceKey};
use xvs::packet::parse_flow;
use xvs::service::{service_lookup_key, ServiceRt, Snapshot};

/// Counts allocations made by the current thread while counting is switched on for it.
/// Per thread, so the test harness's own threads cannot disturb the figure.
struct Counting;

thread_local! {
    /// `Some(n)`: counting, `n` allocations so far; `None`: not counting.
    /// Const-initialised with no destructor, so touching it never allocates.
    static ALLOCS: Cell<Option<u64>> = const { Cell::new(None) };
}

fn note_alloc() {
    // try_with: the slot may be gone while a thread exits; such allocations are not ours.
    let _ = ALLOCS.try_with(|c| {
        if let Some(n) = c.get() {
            c.set(Some(n + 1));
        }
    });
}

// SAFETY: every method forwards to `System` unchanged; the counter is a thread-local Cell
// that does not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc();
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations_in(f: impl FnOnce()) -> u64 {
    ALLOCS.with(|c| c.set(Some(0)));
    f();
    ALLOCS.with(|c| c.replace(None)).expect("counting was on")
}

const LOCAL_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x12];
const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x64];
const DR_VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 88);
const TUN_VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 89);
const NAT_VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 90);
/// Flows per phase; the tables hold all of them.
const FLOWS: usize = 512;
/// Frame buffers, as the worker's UMEM frames: room for IPIP's 20 extra bytes.
const BUF_LEN: usize = 256;

/// A frame in a buffer of its own, built before counting starts.
#[derive(Clone)]
struct Frame {
    buf: [u8; BUF_LEN],
    len: usize,
}

/// A wrr service on `vip:80` with three servers `base+0..2` (weights 1, 2, 3), next hops
/// resolved on port 0.
fn add_service(
    snap: &mut Snapshot,
    vip: Ipv4Addr,
    fwd: Forward,
    base: [u8; 4],
    rport: u16,
) -> Vec<Arc<DestRt>> {
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
    let dests: Vec<_> = (0..3u8)
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
    svc.set_dests(dests.clone(), None);
    snap.insert(svc);
    dests
}

/// DR, TUN and NAT services; returns the DR service's servers.
fn snapshot() -> (Snapshot, Vec<Arc<DestRt>>) {
    let mut snap = Snapshot::default();
    let dr = add_service(&mut snap, DR_VIP, Forward::Route, [10, 0, 0, 9], 80);
    add_service(&mut snap, TUN_VIP, Forward::Tunnel, [10, 0, 1, 9], 80);
    add_service(&mut snap, NAT_VIP, Forward::Masq, [192, 168, 80, 10], 8080);
    (snap, dr)
}

fn forwarder(capacity: usize) -> Forwarder {
    Forwarder::new(
        0,
        capacity,
        &[PortInfo {
            mac: LOCAL_MAC,
            mtu: 1500,
        }],
        // 64 shards of 64: room for 2 * FLOWS however the clients spread.
        Arc::new(NatConns::with_capacity(64 * 64)),
    )
}

/// A TCP segment `src:sport -> dst:dport` with flags from "SAFR", padded to 64 bytes.
fn segment(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: &str) -> Frame {
    let mut b = PacketBuilder::ethernet2(CLIENT_MAC, LOCAL_MAC)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1, 65535);
    for f in flags.chars() {
        b = match f {
            'S' => b.syn(),
            'A' => b.ack(1),
            'F' => b.fin(),
            'R' => b.rst(),
            _ => unreachable!("flag {f}"),
        };
    }
    let mut v = Vec::new();
    b.write(&mut v, &[]).expect("write to a Vec");
    let mut f = Frame {
        buf: [0; BUF_LEN],
        len: 64,
    };
    f.buf[..v.len()].copy_from_slice(&v);
    f
}

/// Client address and port of flow `k`.
fn client(k: usize) -> ([u8; 4], u16) {
    ([172, 16, (k >> 8) as u8, k as u8], 1024 + k as u16)
}

/// Flow `k` to `vip:80`.
fn to_vip(k: usize, vip: Ipv4Addr, flags: &str) -> Frame {
    let (c, p) = client(k);
    segment(c, p, vip.octets(), 80, flags)
}

fn frames(flows: std::ops::Range<usize>, vip: Ipv4Addr, flags: &str) -> Vec<Frame> {
    flows.map(|k| to_vip(k, vip, flags)).collect()
}

/// Processes every frame in place, recording verdicts (into a preallocated Vec).
fn process_all(
    fwd: &mut Forwarder,
    snap: &Snapshot,
    now_ms: u64,
    frames: &mut [Frame],
    verdicts: &mut Vec<Verdict>,
) {
    for f in frames {
        verdicts.push(fwd.process(&mut f.buf, &mut f.len, 0, snap, now_ms));
    }
}

fn all_sent(verdicts: &[Verdict]) -> bool {
    verdicts.iter().all(|v| *v == Verdict::Tx(0))
}

#[test]
fn forwarding_new_and_established_dr_flows_does_not_allocate() {
    let (snap, dests) = snapshot();
    let mut fwd = forwarder(2 * FLOWS);
    // Everything the loop touches is built before counting starts.
    let mut syns = frames(0..FLOWS, DR_VIP, "S");
    let mut acks = frames(0..FLOWS, DR_VIP, "A");
    let mut fins = frames(0..FLOWS, DR_VIP, "FA");
    // Second wave: new flows arriving between segments of established ones.
    let mut mixed: Vec<Frame> = (0..FLOWS)
        .flat_map(|k| [to_vip(FLOWS + k, DR_VIP, "S"), to_vip(k, DR_VIP, "A")])
        .collect();
    let mut verdicts = Vec::with_capacity(5 * FLOWS);

    let n = allocations_in(|| {
        for batch in [&mut syns, &mut acks, &mut mixed, &mut fins] {
            process_all(&mut fwd, &snap, 1_000, batch, &mut verdicts);
        }
        // The bounded expiry sweep also runs on the worker between batches; nothing has
        // expired yet, so it only walks.
        fwd.expire(2_000, 4 * FLOWS, &snap);
    });

    assert_eq!(n, 0, "the per-packet path allocated {n} times");
    // The loop really forwarded: every frame went out, every flow got a connection.
    assert_eq!(verdicts.len(), 5 * FLOWS);
    assert!(all_sent(&verdicts), "{verdicts:?}");
    assert_eq!(fwd.counters.new_conns, 2 * FLOWS as u64);
    assert_eq!(fwd.conns.len(), 2 * FLOWS);
    // Every connection is counted on its server.
    let total: u32 = dests.iter().map(|d| d.total_conns()).sum();
    assert_eq!(total, 2 * FLOWS as u32);
}

#[test]
fn tun_and_nat_do_not_allocate() {
    let (snap, _) = snapshot();
    let mut fwd = forwarder(FLOWS);
    let mut tun = frames(0..FLOWS, TUN_VIP, "S");
    tun.extend(frames(0..FLOWS, TUN_VIP, "A"));
    let mut nat_syns = frames(0..FLOWS, NAT_VIP, "S");
    let mut nat_acks = frames(0..FLOWS, NAT_VIP, "A");
    let mut verdicts = Vec::with_capacity(4 * FLOWS);

    let n = allocations_in(|| {
        process_all(&mut fwd, &snap, 1_000, &mut tun, &mut verdicts);
        process_all(&mut fwd, &snap, 1_000, &mut nat_syns, &mut verdicts);
    });
    assert_eq!(n, 0, "TUN and NAT requests allocated {n} times");
    assert!(all_sent(&verdicts), "{verdicts:?}");
    // TUN frames went out encapsulated.
    assert!(tun
        .iter()
        .all(|f| f.len == 14 + 20 + 40 && f.buf[14 + 9] == 4));

    // Replies come from the server each request was rewritten to: built untimed from the
    // rewritten SYNs.
    let mut replies: Vec<Frame> = nat_syns
        .iter()
        .enumerate()
        .map(|(k, f)| {
            let rs = parse_flow(&f.buf[..f.len]).expect("rewritten SYN").key;
            assert_eq!(rs.dport, 8080);
            let (c, p) = client(k);
            segment(rs.daddr.to_be_bytes(), rs.dport, c, p, "SA")
        })
        .collect();
    verdicts.clear();
    let n = allocations_in(|| {
        process_all(&mut fwd, &snap, 1_000, &mut replies, &mut verdicts);
        process_all(&mut fwd, &snap, 1_000, &mut nat_acks, &mut verdicts);
        fwd.expire(2_000, FLOWS, &snap);
    });
    assert_eq!(n, 0, "NAT replies allocated {n} times");
    assert_eq!(verdicts.len(), 2 * FLOWS);
    assert!(all_sent(&verdicts), "{verdicts:?}");
    assert_eq!(fwd.counters.new_conns, 2 * FLOWS as u64);
}

#[test]
fn expiring_and_reusing_slots_does_not_allocate() {
    let (snap, _dests) = snapshot();
    let mut fwd = forwarder(FLOWS);
    let mut syns = frames(0..FLOWS, DR_VIP, "S");
    let mut acks = frames(0..FLOWS, DR_VIP, "A");
    let mut rsts = frames(0..FLOWS, DR_VIP, "R");
    let mut verdicts = Vec::with_capacity(3 * FLOWS);

    let n = allocations_in(|| {
        // Fill the table to capacity, close and expire everything, and do it again: freed
        // slots and index entries are reused, not reallocated.
        for round in 0..4u64 {
            let t = 1_000 + round * 100_000;
            verdicts.clear();
            // SYN_RECV, ESTABLISHED, then RST: CLOSE (a RST in SYN_RECV would keep
            // SYN_RECV).
            for batch in [&mut syns, &mut acks, &mut rsts] {
                process_all(&mut fwd, &snap, t, batch, &mut verdicts);
            }
            assert!(all_sent(&verdicts));
            // CLOSE times out after 10 s.
            assert_eq!(fwd.conns.expire(t + 10_000, FLOWS), FLOWS);
        }
    });
    assert_eq!(n, 0, "churn allocated {n} times");
    assert!(fwd.conns.is_empty());
}

/// A SYN flood at a full table: every new connection evicts the oldest half-open entry,
/// for DR (the worker's table) and NAT (the shards), and a persistent service reuses the
/// templates the evicted entries released, all without allocating once the template table
/// has grown to its capacity (the first wave, untimed).
#[test]
fn flood_at_a_full_table_evicts_and_reuses_templates_without_allocating() {
    use xvs::service::Persistence;
    let (snap, dests) = snapshot();
    let svc = snap.services[&service_lookup_key(u32::from(DR_VIP), 80, 6)].clone();
    // Twice the table, as xvsd sizes it: a template is free whenever a connection fits.
    svc.set_persistence(
        Some(Persistence {
            timeout_ms: 300_000,
            netmask: u32::MAX,
        }),
        FLOWS,
    );
    let mut fwd = forwarder(FLOWS / 2);
    let mut warm = frames(0..4 * FLOWS, DR_VIP, "S");
    let mut nat_warm = frames(0..4 * FLOWS, NAT_VIP, "S");
    let mut flood = frames(4 * FLOWS..8 * FLOWS, DR_VIP, "S");
    let mut nat_flood = frames(4 * FLOWS..8 * FLOWS, NAT_VIP, "S");
    let mut verdicts = Vec::with_capacity(8 * FLOWS);
    process_all(&mut fwd, &snap, 1_000, &mut warm, &mut verdicts);
    process_all(&mut fwd, &snap, 1_000, &mut nat_warm, &mut verdicts);
    assert!(all_sent(&verdicts), "{verdicts:?}");
    let evicted = fwd.counters.evicted;
    verdicts.clear();
    let n = allocations_in(|| {
        process_all(&mut fwd, &snap, 2_000, &mut flood, &mut verdicts);
        process_all(&mut fwd, &snap, 2_000, &mut nat_flood, &mut verdicts);
    });
    assert_eq!(n, 0, "the flood allocated {n} times");
    assert!(all_sent(&verdicts), "{verdicts:?}");
    // Every DR SYN of the second wave evicted one entry, and NAT shards evicted too.
    assert!(fwd.counters.evicted - evicted > 4 * FLOWS as u64);
    assert_eq!(fwd.conns.len(), FLOWS / 2);
    assert_eq!(svc.templates_len(), FLOWS);
    let persistent: u32 = dests.iter().map(|d| d.persistent()).sum();
    assert_eq!(persistent, FLOWS as u32);
}

/// The instrument itself: an allocation inside the window is seen.
#[test]
fn the_counter_sees_allocations() {
    let n = allocations_in(|| {
        std::hint::black_box(Box::new(7u64));
    });
    assert_eq!(n, 1);
}

/// Churn in a table kept at its capacity: every insert follows a removal, as when a SYN
/// flood keeps the table full and the sweep frees one slot at a time.
///
/// The slab and free list stay within their capacity; the hash index accumulates
/// tombstones, and hashbrown would resize (allocate) if it were more than half full when they
/// use up its spare room. `ConnTable` sizes the index for twice its capacity, so it always
/// rehashes in place instead (this test failed before that).
#[test]
fn churn_at_capacity_does_not_allocate() {
    use std::collections::VecDeque;
    use xvs::conn::{Conn, ConnState, ConnTable};
    use xvs::packet::FlowKey;

    // 896 = 7/8 of 1024: the index gets exactly 1024 buckets, full when the table is.
    const CAP: usize = 896;
    const CHURN: u32 = 100_000;
    let (snap, dests) = snapshot();
    let svc = snap.services[&service_lookup_key(u32::from(DR_VIP), 80, 6)].clone();
    let conn = |id: u32| Conn {
        key: FlowKey {
            saddr: 0xac10_0000 + id,
            daddr: u32::from(DR_VIP),
            sport: 1024,
            dport: 80,
            proto: 6,
        },
        state: ConnState::SynRecv,
        expires_ms: 0,
        svc: svc.clone(),
        dest: dests[id as usize % dests.len()].clone(),
        tpl: xvs::service::NO_TEMPLATE,
        rip: 0,
        rport: 0,
        client_mac: [0; 6],
        in_port: 0,
        worker: 0,
        sync_pkts: 0,
        sync_state: xvs::conn::ConnState::None,
        fast: false,
    };
    let mut t = ConnTable::with_capacity(CAP);
    let mut live = VecDeque::with_capacity(CAP);
    for id in 0..CAP as u32 {
        live.push_back(t.insert(conn(id)).expect("within capacity"));
    }
    let mut fresh = (CAP as u32..CAP as u32 + CHURN)
        .map(conn)
        .collect::<Vec<_>>()
        .into_iter();

    let n = allocations_in(|| {
        for _ in 0..CHURN {
            // The oldest connection goes, a new one takes its slot.
            let s = live.pop_front().expect("table is full");
            t.remove(s);
            let c = fresh.next().expect("prepared");
            live.push_back(t.insert(c).expect("a slot was just freed"));
        }
    });
    assert_eq!(n, 0, "churn at capacity allocated {n} times");
    assert_eq!(t.len(), CAP);
}

/// An ICMP frag needed from a router to the VIP about the DR reply `DR_VIP:80 -> flow k`.
fn frag_needed_about_reply(k: usize) -> Frame {
    let (c, p) = client(k);
    let reply = segment(DR_VIP.octets(), 80, c, p, "SA");
    let mut v = Vec::new();
    PacketBuilder::ethernet2([0x02, 0, 0, 0, 0, 0xaa], LOCAL_MAC)
        .ipv4([10, 0, 0, 2], DR_VIP.octets(), 64)
        .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1400 },
        ))
        .write(&mut v, &reply.buf[14..14 + 28])
        .expect("write to a Vec");
    let mut f = Frame {
        buf: [0; BUF_LEN],
        len: v.len(),
    };
    f.buf[..v.len()].copy_from_slice(&v);
    f
}

#[test]
fn handing_icmp_errors_to_another_worker_does_not_allocate() {
    use xvs::handoff::{HandoffFrame, Handoffs};
    let (snap, _) = snapshot();
    let mut a = forwarder(FLOWS);
    let mut b = forwarder(FLOWS);
    b.worker_id = 1;
    b.nat = a.nat.clone();
    a.handoff = true;
    b.handoff = true;
    let ring = Handoffs::new(2).unwrap();
    let mut syns = frames(0..FLOWS, DR_VIP, "S");
    let mut verdicts = Vec::with_capacity(3 * FLOWS);
    process_all(&mut b, &snap, 1_000, &mut syns, &mut verdicts);
    assert!(all_sent(&verdicts));
    verdicts.clear();
    let mut errors: Vec<Frame> = (0..FLOWS).map(frag_needed_about_reply).collect();
    let mut out = Frame {
        buf: [0; BUF_LEN],
        len: 0,
    };

    let n = allocations_in(|| {
        for e in errors.iter_mut() {
            // Worker A: a miss, handed off as the worker does it.
            let v = a.process(&mut e.buf, &mut e.len, 0, &snap, 1_000);
            verdicts.push(v);
            let copy = HandoffFrame::copy_of(&e.buf[..e.len], 0, 0).expect("short frame");
            assert!(ring.send(ring.next(0), copy));
            // Worker B: its queue, into a frame of its own, relayed.
            let f = ring.recv(1).expect("queued");
            out.len = f.frame().len();
            out.buf[..out.len].copy_from_slice(f.frame());
            verdicts.push(b.process_handoff(
                &mut out.buf,
                &mut out.len,
                f.in_port,
                f.hops_left == 0,
                &snap,
                1_000,
            ));
        }
    });
    assert_eq!(n, 0, "handing ICMP errors over allocated {n} times");
    assert_eq!(verdicts.len(), 2 * FLOWS);
    assert!(verdicts
        .chunks(2)
        .all(|v| v == [Verdict::Handoff, Verdict::Tx(0)]));
    assert_eq!(a.counters.icmp_handoff, FLOWS as u64);
    assert_eq!(b.counters.icmp_handoff_relayed, FLOWS as u64);
}

/// The schedulers added for issue 13 pick without allocating: mh (also when `mh-fallback`
/// rehashes past unavailable owners), fo, ovf and twos (including the first draw on a fresh
/// thread, which seeds its per-thread generator).
#[test]
fn mh_fo_ovf_twos_picks_do_not_allocate() {
    use xvs::packet::FlowKey;
    use xvs::sched::{by_name_with, SchedFlags};
    std::thread::spawn(|| {
        let dests: Vec<Arc<DestRt>> = (0..16u8)
            .map(|i| {
                Arc::new(DestRt::new(
                    Ipv4Addr::new(10, 7, 0, i + 1),
                    80,
                    Forward::Route,
                    1 + i as u32 % 5,
                ))
            })
            .collect();
        // Half the servers overloaded: mh-fallback has to rehash for their sources.
        for d in dests.iter().step_by(2) {
            d.load.overloaded.store(true, Relaxed);
        }
        let flags = SchedFlags {
            fallback: true,
            port: true,
        };
        for name in ["twos", "mh", "fo", "ovf"] {
            let mut s = by_name_with(name, flags).expect("implemented");
            s.update(&dests);
            let mut picked = 0;
            let n = allocations_in(|| {
                for k in 0..2000u32 {
                    let f = FlowKey {
                        saddr: 0xac10_0000 + k * 7919,
                        daddr: 0x0a00_0058,
                        sport: 1024 + k as u16,
                        dport: 80,
                        proto: 6,
                    };
                    picked += s.schedule(&dests, &f, 0).is_some() as u32;
                }
            });
            assert_eq!(n, 0, "{name}");
            assert_eq!(picked, 2000, "{name}");
        }
    })
    .join()
    .unwrap();
}
