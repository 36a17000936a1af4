//! Bodies of the fuzz targets in `fuzz/fuzz_targets/`, kept in the library so that
//! `tests/fuzz_smoke.rs` runs them on stable (seed corpus plus seeded random inputs) while
//! cargo-fuzz runs them under libFuzzer where a nightly toolchain exists. Not an API.
//!
//! A body panics only when an invariant breaks; that panic is the finding. Checksums are
//! verified with the naive byte-at-a-time sum below, not with `packet::csum`, so that a
//! bug there cannot hide itself.

use crate::conn::NatConns;
use crate::dest::DestRt;
use crate::forward::{Forwarder, PortInfo, Verdict};
use crate::model::{Forward, Protocol, ServiceKey};
use crate::packet::{ethernet, ipv4, parse_flow as parse, Flow, Ipv4Packet};
use crate::service::{ServiceRt, Snapshot};
use crate::xmit;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Frame buffer size: the xsk-rs default UMEM frame (2 KiB), which the workers use.
pub const BUF_LEN: usize = 2048;

/// The `forward` fixture: addresses, ports and MACs, also used to build the seed corpus.
pub mod fixture {
    use std::net::Ipv4Addr;

    /// Port 0: the external interface, where clients' frames arrive.
    pub const EXT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xe0];
    pub const EXT_MTU: u16 = 1500;
    /// Port 1: the internal interface towards the real servers; a smaller MTU so that
    /// large TUN packets take the "fragmentation needed" path.
    pub const INT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xe1];
    pub const INT_MTU: u16 = 1400;
    pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xc1];

    /// DR service, TCP and UDP, port 80 and (another entry) all ports.
    pub const DR_VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    pub const DR_RIP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 10);
    pub const DR_RS_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 0x10];
    /// NAT service, TCP and UDP, VIP:80 to RIP:8080.
    pub const NAT_VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    pub const NAT_RIP: Ipv4Addr = Ipv4Addr::new(192, 168, 80, 10);
    pub const NAT_RPORT: u16 = 8080;
    pub const NAT_RS_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 0x20];
    /// TUN service, TCP and UDP, port 80.
    pub const TUN_VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
    pub const TUN_RIP: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 10);
    pub const TUN_SRC: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 1);
    pub const TUN_RS_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 0x30];
    pub const VPORT: u16 = 80;
}

/// One's-complement sum of `data` continuing from `s` (`data` starts on an even offset).
/// Deliberately naive (a byte at a time, end-around carry at each step): an independent
/// check of `packet::csum`.
fn ones_add(mut s: u32, data: &[u8]) -> u32 {
    for (i, &b) in data.iter().enumerate() {
        s += if i % 2 == 0 {
            (b as u32) << 8
        } else {
            b as u32
        };
        if s > 0xffff {
            s = (s & 0xffff) + 1;
        }
    }
    s
}

/// Does `data`, checksum field included, sum to all ones (RFC 1071 verification)?
fn sums_ok(s: u32) -> bool {
    s == 0xffff
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Validity of the IPv4 header checksum of a parsed frame.
fn ip_csum_ok(frame: &[u8], l3: usize) -> bool {
    let hl = ((frame[l3] & 0x0f) as usize) * 4;
    sums_ok(ones_add(0, &frame[l3..l3 + hl]))
}

/// Validity of the TCP/UDP checksum of a parsed frame; `None` for UDP without a checksum.
fn l4_csum_ok(frame: &[u8], flow: &Flow) -> Option<bool> {
    let ip = flow.l3_offset;
    let l4 = flow.l4_offset;
    let seg_len = match flow.key.proto {
        ipv4::PROTO_UDP => {
            if be16(frame, l4 + 6) == 0 {
                return None;
            }
            be16(frame, l4 + 4) as usize
        }
        _ => ip + flow.ip_len - l4,
    };
    let mut s = ones_add(0, &frame[ip + 12..ip + 20]);
    s = ones_add(s, &[0, flow.key.proto]);
    s = ones_add(s, &(seg_len as u16).to_be_bytes());
    s = ones_add(s, &frame[l4..l4 + seg_len]);
    Some(sums_ok(s))
}

/// A cheap hash of the input, to vary the rewrite parameters with it.
fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `parse_flow` and the ICMP error parser on any bytes: never panic, and what they accept
/// is in bounds.
pub fn parse_flow(data: &[u8]) {
    parse_icmp_error(data);
    let Ok(f) = parse(data) else {
        return;
    };
    let l4_min = match f.key.proto {
        ipv4::PROTO_TCP => 20,
        ipv4::PROTO_UDP => 8,
        p => panic!("parse_flow accepted protocol {p}"),
    };
    assert_eq!(f.l3_offset, ethernet::HEADER_LEN);
    assert!(f.l4_offset >= f.l3_offset + ipv4::MIN_HEADER_LEN);
    assert!(f.l4_offset + l4_min <= f.l3_offset + f.ip_len);
    assert!(f.l3_offset + f.ip_len <= data.len());
}

/// `packet::icmp::parse_error`: every offset it returns is in bounds, in order, and the
/// relay rewrites of xmit.rs on it keep the ICMP checksum valid and never panic.
fn parse_icmp_error(data: &[u8]) {
    let Ok(e) = crate::packet::icmp::parse_error(data) else {
        return;
    };
    assert_eq!(e.l3_offset, ethernet::HEADER_LEN);
    assert!(e.icmp_offset >= e.l3_offset + ipv4::MIN_HEADER_LEN);
    assert!(e.quote_offset == e.icmp_offset + 8);
    assert!(e.inner_ip >= e.quote_offset);
    assert!(e.inner_l4 >= e.inner_ip + ipv4::MIN_HEADER_LEN);
    assert!(e.inner_l4 + 4 <= e.ip_end && e.ip_end <= data.len());
    assert!(sums_ok(ones_add(0, &data[e.icmp_offset..e.ip_end])));
    for to_rs in [false, true] {
        let mut f = data.to_vec();
        if to_rs {
            xmit::icmp_nat_to_rs(&mut f, &e, 0x0a00_0001, 8080);
        } else {
            xmit::icmp_nat_to_client(&mut f, &e, 0x0a00_0001, 80);
        }
        if ip_csum_ok(data, e.l3_offset) {
            assert!(ip_csum_ok(&f, e.l3_offset), "outer IP checksum after relay");
        }
        assert!(
            sums_ok(ones_add(0, &f[e.icmp_offset..e.ip_end])),
            "ICMP checksum after relay"
        );
        assert!(crate::packet::icmp::parse_error(&f).is_ok());
    }
}

/// Which address/port pair a NAT rewrite changes.
#[derive(Clone, Copy)]
enum Side {
    /// Destination (`nat_in`).
    Dst,
    /// Source (`nat_out`).
    Src,
}

fn nat(frame: &mut [u8], flow: &Flow, side: Side, addr: u32, port: u16) {
    match side {
        Side::Dst => xmit::nat_in(frame, flow, addr, port),
        Side::Src => xmit::nat_out(frame, flow, addr, port),
    }
}

/// A checksum field after a round trip: equal, or the other zero of one's complement.
fn same_csum(a: u16, b: u16) -> bool {
    a == b || (a == 0 && b == 0xffff) || (a == 0xffff && b == 0)
}

/// `nat_in` and `nat_out` on a parsed frame: the result parses with the new tuple, checksum
/// validity is preserved (UDP: "none" stays none, a computed one never becomes 0), and
/// the inverse rewrite restores the frame.
fn check_nat(data: &[u8], flow: &Flow, side: Side, addr: u32, port: u16) {
    let mut f = data.to_vec();
    nat(&mut f, flow, side, addr, port);
    let g = parse(&f).expect("a NAT-rewritten frame parses");
    let mut want = flow.key;
    match side {
        Side::Dst => (want.daddr, want.dport) = (addr, port),
        Side::Src => (want.saddr, want.sport) = (addr, port),
    }
    assert_eq!(g.key, want);
    assert_eq!(
        (g.l3_offset, g.l4_offset, g.ip_len, g.tcp_flags),
        (flow.l3_offset, flow.l4_offset, flow.ip_len, flow.tcp_flags)
    );
    assert_eq!(
        ip_csum_ok(&f, g.l3_offset),
        ip_csum_ok(data, flow.l3_offset)
    );
    match (l4_csum_ok(data, flow), l4_csum_ok(&f, &g)) {
        (None, None) => {}
        (Some(a), Some(b)) => assert_eq!(a, b, "L4 checksum validity changed"),
        (a, b) => panic!("UDP checksum presence changed: {a:?} -> {b:?}"),
    }
    let (old_addr, old_port) = match side {
        Side::Dst => (flow.key.daddr, flow.key.dport),
        Side::Src => (flow.key.saddr, flow.key.sport),
    };
    nat(&mut f, &g, side, old_addr, old_port);
    let ip_csum = flow.l3_offset + 10;
    let l4_csum = flow.l4_offset
        + if flow.key.proto == ipv4::PROTO_TCP {
            16
        } else {
            6
        };
    for (i, (&a, &b)) in data.iter().zip(&f).enumerate() {
        if i == ip_csum || i == ip_csum + 1 || i == l4_csum || i == l4_csum + 1 {
            continue;
        }
        assert_eq!(a, b, "byte {i} not restored");
    }
    assert!(same_csum(be16(data, ip_csum), be16(&f, ip_csum)));
    let (a, b) = (be16(data, l4_csum), be16(&f, l4_csum));
    if flow.key.proto == ipv4::PROTO_UDP {
        assert_eq!(a, b, "UDP checksum not restored");
    } else {
        assert!(same_csum(a, b), "TCP checksum not restored: {a:#x} {b:#x}");
    }
}

/// `tun_encap` into `buf` (holding `data`): either the IPIP packet described in xmit.rs or
/// `None` exactly when it does not fit.
fn check_tun(data: &[u8], flow: &Flow, buf: &mut [u8], src: u32, dst: u32) {
    let ip = flow.l3_offset;
    let inner = &data[ip..ip + flow.ip_len];
    let need = ip + xmit::IPIP_OVERHEAD + flow.ip_len;
    let Some(len) = xmit::tun_encap(buf, flow, src, dst) else {
        assert!(need > buf.len(), "tun_encap refused a packet that fits");
        return;
    };
    assert_eq!(len, need);
    assert!(len <= buf.len());
    let out = &buf[..len];
    assert_eq!(
        out[..ip],
        data[..ip],
        "tun_encap changed the Ethernet header"
    );
    let outer = Ipv4Packet::new_checked(&out[ip..]).expect("outer header parses");
    assert_eq!(outer.protocol(), xmit::PROTO_IPIP);
    assert_eq!(outer.header_len(), 20);
    assert_eq!(outer.total_len(), flow.ip_len + 20);
    assert_eq!((outer.src_addr(), outer.dst_addr()), (src, dst));
    assert!(!outer.is_fragment());
    assert!(ip_csum_ok(out, ip), "outer header checksum");
    let tos = data[ip + 1];
    let want_tos = if tos & 3 == 3 { (tos & !3) | 2 } else { tos };
    assert_eq!(out[ip + 1], want_tos, "TOS not copied (CE becomes ECT(0))");
    assert_eq!(out[ip + 8], data[ip + 8], "TTL not copied");
    assert_eq!(out[ip + 6] & 0x40, data[ip + 6] & 0x40, "DF not copied");
    assert_eq!(outer.payload(), inner, "inner packet changed");
    // The inner packet, behind the same Ethernet header, is the original flow.
    let mut again = out[..ip].to_vec();
    again.extend_from_slice(inner);
    assert_eq!(parse(&again), Ok(*flow));
}

/// `icmp_frag_needed` into `buf` (holding `data`): a well-formed RFC 1191 message quoting
/// the IP header and 8 bytes, or `None` exactly when it does not fit.
fn check_icmp(data: &[u8], flow: &Flow, buf: &mut [u8], src: u32, mac: [u8; 6], mtu: u16) {
    let ip = flow.l3_offset;
    let quote_len = (flow.l4_offset - ip + 8).min(flow.ip_len);
    let need = ethernet::HEADER_LEN + 20 + 8 + quote_len;
    let Some(len) = xmit::icmp_frag_needed(buf, flow, src, mac, mtu) else {
        assert!(
            need > buf.len(),
            "icmp_frag_needed refused a message that fits"
        );
        return;
    };
    assert_eq!(len, need);
    let out = &buf[..len];
    assert_eq!(out[0..6], data[6..12], "not addressed to the sender's MAC");
    assert_eq!(out[6..12], mac);
    assert_eq!(be16(out, 12), ethernet::ETHERTYPE_IPV4);
    let h = Ipv4Packet::new_checked(&out[ip..]).expect("ICMP IP header parses");
    assert_eq!(h.protocol(), 1);
    assert_eq!(h.total_len(), len - ip);
    assert_eq!((h.src_addr(), h.dst_addr()), (src, flow.key.saddr));
    assert!(ip_csum_ok(out, ip), "ICMP IP header checksum");
    let m = &out[ip + 20..];
    assert_eq!((m[0], m[1]), (3, 4));
    assert_eq!(be16(m, 6), mtu);
    assert!(sums_ok(ones_add(0, m)), "ICMP checksum");
    assert_eq!(m[8..], data[ip..ip + quote_len], "quote");
}

/// Every rewrite of xmit.rs on a frame that parses: never panics, and the outputs are what
/// xmit.rs documents (see the `check_*` helpers).
pub fn xmit(data: &[u8]) {
    let data = &data[..data.len().min(BUF_LEN)];
    let Ok(flow) = parse(data) else {
        return;
    };
    let h = fnv(data);
    let (addr, port, mtu) = (h as u32, (h >> 32) as u16, (h >> 48) as u16);
    let mac = [
        2,
        h as u8,
        (h >> 8) as u8,
        (h >> 16) as u8,
        (h >> 24) as u8,
        1,
    ];

    let mut f = data.to_vec();
    xmit::set_macs(&mut f, mac, [2, 0, 0, 0, 0, 9]);
    assert_eq!(f[0..6], mac);
    assert_eq!(f[12..], data[12..]);
    assert_eq!(parse(&f), Ok(flow));

    assert_eq!(
        xmit::dont_fragment(data, &flow),
        data[flow.l3_offset + 6] & 0x40 != 0
    );

    check_nat(data, &flow, Side::Dst, addr, port);
    check_nat(data, &flow, Side::Src, addr, port);

    // Whole UMEM frames, and buffers no larger than the frame itself.
    let mut big = [0u8; BUF_LEN];
    big[..data.len()].copy_from_slice(data);
    check_tun(data, &flow, &mut big, addr, !addr);
    check_tun(data, &flow, &mut data.to_vec(), addr, !addr);
    big[..data.len()].copy_from_slice(data);
    check_icmp(data, &flow, &mut big, addr, mac, mtu);
    check_icmp(data, &flow, &mut data.to_vec(), addr, mac, mtu);
}

fn dest(addr: Ipv4Addr, port: u16, fwd: Forward, mac: [u8; 6]) -> Arc<DestRt> {
    let d = Arc::new(DestRt::new(addr, port, fwd, 1));
    d.set_mac(Some(mac));
    d.egress.store(1, Relaxed);
    d.tun_src.store(u32::from(fixture::TUN_SRC), Relaxed);
    d
}

fn add_service(snap: &mut Snapshot, vip: Ipv4Addr, vport: u16, proto: Protocol, d: Arc<DestRt>) {
    let key = ServiceKey {
        proto,
        addr: vip,
        port: vport,
    };
    let svc = Arc::new(ServiceRt::new(
        key,
        crate::sched::by_name("rr").expect("rr is built in"),
    ));
    svc.has_nat.store(d.forward == Forward::Masq, Relaxed);
    svc.set_dests(vec![d], None);
    snap.insert(svc);
}

/// A forwarder with two ports (see `fixture`) and a snapshot with DR (port 80 and all
/// ports), NAT and TUN services for TCP and UDP, every real server resolved on port 1.
pub fn forward_fixture() -> (Forwarder, Snapshot) {
    (forwarder(), snapshot())
}

/// The fixture's snapshot (see `forward_fixture`).
fn snapshot() -> Snapshot {
    use fixture::*;
    let mut snap = Snapshot::default();
    for proto in [Protocol::Tcp, Protocol::Udp] {
        let dr = dest(DR_RIP, VPORT, Forward::Route, DR_RS_MAC);
        add_service(&mut snap, DR_VIP, VPORT, proto, dr.clone());
        add_service(&mut snap, DR_VIP, 0, proto, dr);
        let nat = dest(NAT_RIP, NAT_RPORT, Forward::Masq, NAT_RS_MAC);
        add_service(&mut snap, NAT_VIP, VPORT, proto, nat);
        let tun = dest(TUN_RIP, VPORT, Forward::Tunnel, TUN_RS_MAC);
        add_service(&mut snap, TUN_VIP, VPORT, proto, tun);
    }
    snap
}

/// The fixture's forwarder (see `forward_fixture`), with empty connection tables.
fn forwarder() -> Forwarder {
    use fixture::*;
    let ports = [
        PortInfo {
            mac: EXT_MAC,
            mtu: EXT_MTU,
        },
        PortInfo {
            mac: INT_MAC,
            mtu: INT_MTU,
        },
    ];
    Forwarder::new(0, 16, &ports, Arc::new(NatConns::with_capacity(64)))
}

thread_local! {
    /// Built once: its services and servers hold 8 KiB of statistics slots each, which
    /// dominated the cost of an input. What an input changes in it (connection counts)
    /// is undone when that input's forwarder, and so its connections, are dropped;
    /// only the statistics grow.
    static SNAPSHOT: Snapshot = snapshot();
}

/// What a transmitted frame must look like: a TCP/UDP frame that parses, or an IPv4
/// packet xvs built itself (IPIP or ICMP) with a valid header checksum.
fn check_tx(out: &[u8]) {
    if parse(out).is_ok() {
        return;
    }
    assert!(out.len() >= ethernet::HEADER_LEN, "short Tx frame");
    assert_eq!(be16(out, 12), ethernet::ETHERTYPE_IPV4);
    let ip = Ipv4Packet::new_checked(&out[ethernet::HEADER_LEN..]).expect("Tx frame is IPv4");
    assert!(
        ip.protocol() == xmit::PROTO_IPIP || ip.protocol() == 1,
        "Tx frame that does not parse: protocol {}",
        ip.protocol()
    );
    assert!(ip_csum_ok(out, ethernet::HEADER_LEN));
}

/// One frame through `fwd`: the verdict, with the length checked against the buffer.
fn step(
    fwd: &mut Forwarder,
    snap: &Snapshot,
    buf: &mut [u8],
    len: &mut usize,
    port: u8,
) -> Verdict {
    let before = *len;
    let v = fwd.process(buf, len, port, snap, 1_000);
    assert!(*len <= buf.len(), "length {} beyond the buffer", *len);
    match v {
        Verdict::Tx(p) => {
            assert!((p as usize) < 2, "Tx on unconfigured port {p}");
            check_tx(&buf[..*len]);
        }
        Verdict::Drop(_) | Verdict::Handoff => {
            assert_eq!(*len, before, "a dropped or handed-off frame changed length")
        }
    }
    v
}

/// Turns a transmitted TCP/UDP frame into the reply its receiver would send (addresses,
/// ports and MACs swapped; the checksums stay valid because the sums do not change).
fn make_reply(frame: &mut [u8]) -> bool {
    let Ok(f) = parse(frame) else {
        return false;
    };
    for i in 0..6 {
        frame.swap(i, 6 + i);
    }
    for i in 0..4 {
        frame.swap(f.l3_offset + 12 + i, f.l3_offset + 16 + i);
    }
    for i in 0..2 {
        frame.swap(f.l4_offset + i, f.l4_offset + 2 + i);
    }
    true
}

/// Any bytes as a frame, through a forwarder with DR, NAT and TUN services: arriving on the
/// external port, then again (the connection now exists), then, if it was transmitted, the
/// reply its receiver would send back on the port it left by. Never panics; lengths stay
/// within the buffer; transmitted frames are well formed.
pub fn forward(data: &[u8]) {
    SNAPSHOT.with(|snap| forward_with(data, snap));
}

fn forward_with(data: &[u8], snap: &Snapshot) {
    let mut fwd = forwarder();
    let n = data.len().min(BUF_LEN);
    let mut buf = [0u8; BUF_LEN];

    buf[..n].copy_from_slice(&data[..n]);
    let mut len = n;
    let first = step(&mut fwd, snap, &mut buf, &mut len, 0);

    let mut again = [0u8; BUF_LEN];
    again[..n].copy_from_slice(&data[..n]);
    let mut len2 = n;
    step(&mut fwd, snap, &mut again, &mut len2, 0);

    if let Verdict::Tx(port) = first {
        if make_reply(&mut buf[..len]) {
            step(&mut fwd, snap, &mut buf, &mut len, port);
        }
    }
    let c = fwd.counters;
    assert_eq!(c.rx_frames, c.tx_frames + c.drops.iter().sum::<u64>());
}
