//! Packet table for the XDP fast path (`fast_path` in `bpf/xvs.bpf.c`), run against the real
//! program with `BPF_PROG_RUN`, as `tests/steer_table.rs` does for steering. Each case
//! installs flow-map entries the way a worker does (`xvs::bpf::maps::FlowVal` through the
//! same map fds as xvsd, `Steering::fast_maps`), runs one frame and checks:
//!
//! - a forwarded frame (`XDP_TX` on the ingress interface, `XDP_REDIRECT` to another): its
//!   bytes, rewritten as the workers would (MACs; TTL - 1; TUN: the IPIP header), with every
//!   IPv4 header checksum verified independently (the one's complement sum of the header,
//!   computed here), the per-slot counters and the program's `fast` counter;
//! - a frame the fast path must leave to the workers (miss, SYN/FIN/RST, TTL 1, too big for
//!   the egress MTU, fragment, stale generation, another host's MAC, fast path switched off):
//!   exactly the verdict and the bytes the steering program gives the same frame with the
//!   fast path off (the workers' path, `XDP_REDIRECT` to the queue's socket), and nothing
//!   counted as forwarded.
//!
//! NAT rows: a request (CIP:cport -> VIP:vport becomes -> RIP:rport) and a reply (RIP:rport
//! -> CIP:cport becomes VIP:vport -> CIP:cport), TCP and UDP (with and without a checksum),
//! each compared with the frame etherparse builds from scratch for the rewritten tuple and
//! with the IP and L4 checksums verified here by summing pseudo-header and segment (never
//! with xvs's own checksum code); the reply is counted as OutPkts.
//! Needs root (BPF); no namespaces.

use etherparse::PacketBuilder;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use xvs::bpf::maps::{
    nat_csum_deltas, FlowKeyC, FlowVal, SvcKey, FAST_DR, FAST_NAT_IN, FAST_NAT_OUT, FAST_TUN,
};
use xvs::bpf::Steering;
use xvs::fastpath::FastMaps;

const XDP_TX: u32 = libbpf_sys::XDP_TX;
const XDP_REDIRECT: u32 = libbpf_sys::XDP_REDIRECT;

/// The loopback device: ifindex 1 in every network namespace; frames "arrive" on it.
const LO: u32 = 1;
/// Another interface's ifindex (a two-armed director's internal side): only named in an
/// entry, so a test run returns the redirect verdict without sending.
const OTHER_IF: u32 = 7;

const CLIENT: [u8; 4] = [192, 0, 2, 7];
const VIP: [u8; 4] = [10, 0, 0, 88];
const RS: [u8; 4] = [10, 1, 0, 5];
const DIP: [u8; 4] = [10, 0, 0, 1];

/// The client's router, the director's interface, the real server.
const MAC_ROUTER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const MAC_OURS: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const MAC_RS: [u8; 6] = [0x02, 0, 0, 0, 0, 0x05];
const MAC_OTHER_IF: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0c];

/// The NAT real server's port (the service's is 80).
const RPORT: u16 = 8080;

const DEST_SLOT: u32 = 3;
const SVC_SLOT: u32 = 4;

fn xdp_socket() -> OwnedFd {
    // SAFETY: plain socket(2); the fd is checked and then owned by the OwnedFd.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW, 0) };
    assert!(
        fd >= 0,
        "socket(AF_XDP): {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fd was just returned by socket(2) and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// The program with TCP and UDP services on VIP port 80, `lo` as interface slot 0 with an
/// AF_XDP socket on queue 0 (the workers' path: `XDP_REDIRECT`), fast path `fast`.
fn load(xsk: &OwnedFd, fast: bool) -> (Steering, FastMaps) {
    let mut s = Steering::load().expect("loading the steering program (root?)");
    for proto in [6u8, 17] {
        s.add_service(&SvcKey {
            addr: u32::from_ne_bytes(VIP),
            port: 80u16.to_be(),
            proto,
            pad: 0,
        })
        .expect("services map");
    }
    // NAT replies from RS:8080 are the workers' without the fast path (the reply map).
    for proto in [6u8, 17] {
        s.add_nat_rs(&SvcKey {
            addr: u32::from_ne_bytes(RS),
            port: RPORT.to_be(),
            proto,
            pad: 0,
        })
        .expect("NAT reply map");
    }
    s.set_iface(0, LO, "lo", MAC_OURS).expect("interface map");
    s.set_xsk(0, 0, xsk.as_raw_fd()).expect("XSKMAP");
    s.set_fast_path(fast).expect("config map");
    let m = s.fast_maps().expect("fast-path maps");
    (s, m)
}

fn tcp(flags: &str, ttl: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(MAC_ROUTER, MAC_OURS)
        .ipv4(CLIENT, VIP, ttl)
        .tcp(40000, 80, 1000, 64240);
    for f in flags.chars() {
        b = match f {
            'S' => b.syn(),
            'A' => b.ack(7),
            'F' => b.fin(),
            'R' => b.rst(),
            'P' => b.psh(),
            _ => b,
        };
    }
    let mut f = Vec::new();
    b.write(&mut f, payload).expect("writing a TCP frame");
    f
}

fn udp(ttl: u8, payload: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_ROUTER, MAC_OURS)
        .ipv4(CLIENT, VIP, ttl)
        .udp(40000, 80);
    let mut f = Vec::new();
    b.write(&mut f, payload).expect("writing a UDP frame");
    f
}

fn key(proto: u8) -> FlowKeyC {
    FlowKeyC {
        saddr: u32::from_ne_bytes(CLIENT),
        daddr: u32::from_ne_bytes(VIP),
        sport: 40000u16.to_be(),
        dport: 80u16.to_be(),
        proto,
        pad: [0; 3],
    }
}

fn dr_entry() -> FlowVal {
    FlowVal {
        method: FAST_DR,
        mtu: 1500,
        ifindex: LO,
        dmac: MAC_RS,
        smac: MAC_OURS,
        dest_slot: DEST_SLOT,
        svc_slot: SVC_SLOT,
        gen: 0,
        ..Default::default()
    }
}

fn tun_entry() -> FlowVal {
    FlowVal {
        method: FAST_TUN,
        tun_saddr: u32::from_ne_bytes(DIP),
        tun_daddr: u32::from_ne_bytes(RS),
        ..dr_entry()
    }
}

/// The one's complement sum of an IPv4 header, checksum included, is 0xffff iff the
/// checksum is right (RFC 1071), computed here independently of the program and of xvs.
fn ip_checksum_ok(h: &[u8]) -> bool {
    let ihl = (h[0] & 0x0f) as usize * 4;
    let mut s: u32 = 0;
    for w in h[..ihl].chunks(2) {
        s += u16::from_be_bytes([w[0], w[1]]) as u32;
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s == 0xffff
}

/// What the workers would transmit for a DR frame: MACs rewritten, TTL - 1 with the header
/// checksum recomputed from scratch (not incrementally) here.
fn dr_expected(frame: &[u8]) -> Vec<u8> {
    let mut w = frame.to_vec();
    w[0..6].copy_from_slice(&MAC_RS);
    w[6..12].copy_from_slice(&MAC_OURS);
    w[14 + 8] -= 1;
    w[24] = 0;
    w[25] = 0;
    let mut s: u32 = 0;
    for c in w[14..34].chunks(2) {
        s += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    w[24..26].copy_from_slice(&(!(s as u16)).to_be_bytes());
    w
}

fn counters(m: &FastMaps, slot: u32) -> (u64, u64) {
    let c = m.counters(slot);
    (c.pkts, c.bytes)
}

/// NAT replies counted in a slot (OutPkts, OutBytes).
fn out_counters(m: &FastMaps, slot: u32) -> (u64, u64) {
    let c = m.counters(slot);
    (c.out_pkts, c.out_bytes)
}

/// Runs `frame` with the fast path on and an entry installed (`entry`, under `key`; `gen`:
/// the slot's current generation), and with the fast path off (the steering reference).
fn run(entry: Option<(FlowKeyC, FlowVal)>, gen: u32, frame: &[u8]) -> Run {
    let xsk = xdp_socket();
    let (off, _) = load(&xsk, false);
    let (want_v, want_f) = off.test_run_frame(frame, LO, 0).expect("BPF_PROG_RUN");
    let (on, maps) = load(&xsk, true);
    if let Some((k, v)) = entry {
        maps.install(&k, &v).expect("installing a flow");
    }
    maps.set_gen(DEST_SLOT, gen);
    let (v, f) = on.test_run_frame(frame, LO, 0).expect("BPF_PROG_RUN");
    let stats = on.stats().expect("XDP counters");
    let last_seen = entry
        .and_then(|(k, _)| maps.lookup(&k))
        .map(|e| e.last_seen_ns);
    Run {
        verdict: v,
        frame: f,
        steer_verdict: want_v,
        steer_frame: want_f,
        stats,
        dest: counters(&maps, DEST_SLOT),
        svc: counters(&maps, SVC_SLOT),
        total: counters(&maps, 0),
        dest_out: out_counters(&maps, DEST_SLOT),
        svc_out: out_counters(&maps, SVC_SLOT),
        last_seen,
    }
}

struct Run {
    verdict: u32,
    frame: Vec<u8>,
    steer_verdict: u32,
    steer_frame: Vec<u8>,
    stats: xvs::bpf::maps::XdpStats,
    dest: (u64, u64),
    svc: (u64, u64),
    total: (u64, u64),
    dest_out: (u64, u64),
    svc_out: (u64, u64),
    last_seen: Option<u64>,
}

impl Run {
    /// Forwarded by the fast path: counted once in every slot, last-seen written.
    fn assert_forwarded(&self, desc: &str, verdict: u32, ip_len: u64) {
        assert_eq!(self.verdict, verdict, "{desc}: verdict");
        assert_eq!(self.stats.fast, 1, "{desc}: fast counter");
        assert_eq!(self.stats.redirected, 0, "{desc}: not steered to a worker");
        for (what, c) in [
            ("dest", self.dest),
            ("svc", self.svc),
            ("total", self.total),
        ] {
            assert_eq!(c, (1, ip_len), "{desc}: {what} slot counters");
        }
        assert_eq!(self.dest_out, (0, 0), "{desc}: dest counted as a reply");
        assert_eq!(self.svc_out, (0, 0), "{desc}: svc counted as a reply");
        assert!(
            self.last_seen.is_some_and(|t| t > 0),
            "{desc}: last-seen written"
        );
    }

    /// Forwarded (`verdict`) and counted once in the total, whatever the frame's length.
    fn assert_forwarded_any(&self, desc: &str, verdict: u32) {
        assert_eq!(self.verdict, verdict, "{desc}: verdict");
        assert_eq!(self.stats.fast, 1, "{desc}: fast counter");
        assert_eq!(self.total.0, 1, "{desc}: total");
    }

    /// Left to the workers: the steering verdict, the frame untouched, nothing forwarded.
    fn assert_workers(&self, desc: &str) {
        self.assert_steered(desc, XDP_REDIRECT);
        assert_eq!(self.stats.redirected, 1, "{desc}: steered to the worker");
    }

    /// What the steering program does without the fast path (`want`), unchanged.
    fn assert_steered(&self, desc: &str, want: u32) {
        assert_eq!(self.steer_verdict, want, "{desc}: the reference verdict");
        assert_eq!(self.verdict, self.steer_verdict, "{desc}: verdict");
        assert_eq!(self.frame, self.steer_frame, "{desc}: frame changed");
        assert_eq!(self.stats.fast, 0, "{desc}: counted as forwarded");
        assert_eq!(self.dest, (0, 0), "{desc}: dest slot counted");
        assert_eq!(self.dest_out, (0, 0), "{desc}: dest slot counted (out)");
        assert_eq!(self.total, (0, 0), "{desc}: total counted");
    }
}

#[test]
fn dr_established_tcp_is_rewritten_and_sent_back_out() {
    for (desc, frame) in [
        ("ACK", tcp("A", 64, b"")),
        (
            "PSH ACK with data",
            tcp("PA", 64, b"GET / HTTP/1.1\r\n\r\n"),
        ),
        ("TTL 2 (the lowest forwarded)", tcp("A", 2, b"")),
    ] {
        let r = run(Some((key(6), dr_entry())), 0, &frame);
        r.assert_forwarded(desc, XDP_TX, frame.len() as u64 - 14);
        assert_eq!(r.frame, dr_expected(&frame), "{desc}: rewrite");
        assert!(ip_checksum_ok(&r.frame[14..]), "{desc}: IP checksum");
        // The TCP segment (and its checksum) is untouched: DR changes no L4 byte.
        assert_eq!(&r.frame[34..], &frame[34..], "{desc}: TCP");
    }
}

#[test]
fn dr_udp_and_redirect_to_another_interface() {
    let frame = udp(64, b"hello");
    let r = run(Some((key(17), dr_entry())), 0, &frame);
    r.assert_forwarded("UDP", XDP_TX, frame.len() as u64 - 14);
    assert_eq!(r.frame, dr_expected(&frame));
    assert!(ip_checksum_ok(&r.frame[14..]));

    // Egress through another interface: bpf_redirect, source MAC that interface's.
    let e = FlowVal {
        ifindex: OTHER_IF,
        smac: MAC_OTHER_IF,
        ..dr_entry()
    };
    let frame = tcp("A", 64, b"x");
    let r = run(Some((key(6), e)), 0, &frame);
    r.assert_forwarded("redirect", XDP_REDIRECT, frame.len() as u64 - 14);
    let mut want = dr_expected(&frame);
    want[6..12].copy_from_slice(&MAC_OTHER_IF);
    assert_eq!(r.frame, want);
}

#[test]
fn tun_encapsulates_like_the_workers() {
    // TOS 0xb9: DSCP 46, ECN CE (0b01 ECT(1) would stay): CE becomes ECT(0) outside.
    for (desc, frame, df) in [
        ("TCP with DF", tcp("A", 64, b"data"), true),
        ("UDP without DF", udp(64, b"data"), false),
    ] {
        let mut frame = frame;
        frame[15] = 0xbb;
        if !df {
            frame[20] &= !0x40;
        }
        // Re-checksum the edited header (the input must be a valid packet).
        frame[24] = 0;
        frame[25] = 0;
        let mut s: u32 = 0;
        for c in frame[14..34].chunks(2) {
            s += u16::from_be_bytes([c[0], c[1]]) as u32;
        }
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        frame[24..26].copy_from_slice(&(!(s as u16)).to_be_bytes());
        let inner_len = frame.len() - 14;
        let r = run(Some((key(frame[23]), tun_entry())), 0, &frame);
        r.assert_forwarded(desc, XDP_TX, inner_len as u64);
        let f = &r.frame;
        assert_eq!(f.len(), frame.len() + 20, "{desc}: 20 bytes of IPIP");
        assert_eq!(&f[0..6], &MAC_RS);
        assert_eq!(&f[6..12], &MAC_OURS);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        let o = &f[14..34];
        assert_eq!(o[0], 0x45, "{desc}: outer version/IHL");
        assert_eq!(o[1], 0xba, "{desc}: DSCP copied, CE encapsulated as ECT(0)");
        assert_eq!(
            u16::from_be_bytes([o[2], o[3]]) as usize,
            inner_len + 20,
            "{desc}: outer length"
        );
        assert_eq!(o[6] & 0x40 != 0, df, "{desc}: DF copied");
        assert_eq!(
            o[8], 63,
            "{desc}: outer TTL = inner TTL after the decrement"
        );
        assert_eq!(o[9], 4, "{desc}: IPIP");
        assert_eq!(&o[12..16], &DIP);
        assert_eq!(&o[16..20], &RS);
        assert!(ip_checksum_ok(o), "{desc}: outer checksum");
        // The inner packet: as DR would send it (TTL - 1, checksum right), rest intact.
        let want_inner = dr_expected(&frame);
        assert_eq!(&f[34..], &want_inner[14..], "{desc}: inner packet");
        assert!(ip_checksum_ok(&f[34..]), "{desc}: inner checksum");
    }
}

#[test]
fn tun_trims_ethernet_padding() {
    // A 60-byte minimum frame around a 40-byte packet: the padding must not be tunnelled.
    let mut frame = tcp("A", 64, b"");
    frame.resize(60, 0);
    let r = run(Some((key(6), tun_entry())), 0, &frame);
    r.assert_forwarded("padded", XDP_TX, 40);
    assert_eq!(r.frame.len(), 14 + 20 + 40);
    assert_eq!(u16::from_be_bytes([r.frame[16], r.frame[17]]), 60);
}

#[test]
fn everything_else_takes_the_workers_path() {
    let dr = Some((key(6), dr_entry()));
    let mut mf = udp(64, b"frag");
    mf[20] |= 0x20; // MF: a first fragment
    let big = tcp("A", 64, &[0u8; 1461]); // IP length 1501 > MTU 1500
    let exactly = tcp("A", 64, &[0u8; 1460]);
    let mut other_host = tcp("A", 64, b"");
    other_host[0..6].copy_from_slice(&MAC_RS);
    let tun_big = tcp("A", 64, &[0u8; 1441]); // 1481 + 20 > 1500
    type Case = (&'static str, Option<(FlowKeyC, FlowVal)>, u32, Vec<u8>);
    let cases: Vec<Case> = vec![
        ("miss: no entry", None, 0, tcp("A", 64, b"")),
        (
            "miss: another client port",
            Some((
                FlowKeyC {
                    sport: 40001u16.to_be(),
                    ..key(6)
                },
                dr_entry(),
            )),
            0,
            tcp("A", 64, b""),
        ),
        ("miss: UDP frame, TCP entry", dr, 0, udp(64, b"x")),
        ("SYN", dr, 0, tcp("S", 64, b"")),
        ("SYN ACK", dr, 0, tcp("SA", 64, b"")),
        ("FIN", dr, 0, tcp("FA", 64, b"")),
        ("RST", dr, 0, tcp("R", 64, b"")),
        ("RST ACK", dr, 0, tcp("RA", 64, b"")),
        ("TTL 1", dr, 0, tcp("A", 1, b"")),
        ("TTL 0", dr, 0, tcp("A", 0, b"")),
        ("too big for the egress MTU", dr, 0, big),
        (
            "TUN: too big with the IPIP header",
            Some((key(6), tun_entry())),
            0,
            tun_big,
        ),
        ("first fragment (MF)", Some((key(17), dr_entry())), 0, mf),
        (
            "generation bumped (server removed, dead)",
            dr,
            1,
            tcp("A", 64, b""),
        ),
        (
            "unknown method",
            Some((
                key(6),
                FlowVal {
                    method: 9,
                    ..dr_entry()
                },
            )),
            0,
            tcp("A", 64, b""),
        ),
    ];
    for (desc, entry, gen, frame) in &cases {
        run(*entry, *gen, frame).assert_workers(desc);
    }
    // Another host's frame (a promiscuous NIC): passed to the kernel, as without the fast
    // path, never forwarded.
    run(dr, 0, &other_host).assert_steered("another host's frame", libbpf_sys::XDP_PASS);
    // The MTU boundary itself is forwarded.
    run(dr, 0, &exactly).assert_forwarded("IP length = MTU", XDP_TX, 1500);
}

#[test]
fn stale_and_punted_hits_are_counted() {
    let r = run(Some((key(6), dr_entry())), 5, &tcp("A", 64, b""));
    assert_eq!((r.stats.fast_stale, r.stats.fast_punt), (1, 0));
    let r = run(Some((key(6), dr_entry())), 0, &tcp("FA", 64, b""));
    assert_eq!((r.stats.fast_stale, r.stats.fast_punt), (0, 1));
}

#[test]
fn switched_off_a_hit_is_steered_as_before() {
    let xsk = xdp_socket();
    let (off, maps) = load(&xsk, false);
    maps.install(&key(6), &dr_entry())
        .expect("installing a flow");
    let frame = tcp("A", 64, b"");
    let (v, f) = off.test_run_frame(&frame, LO, 0).expect("BPF_PROG_RUN");
    assert_eq!(v, XDP_REDIRECT);
    assert_eq!(f, frame);
    assert_eq!(off.stats().unwrap().fast, 0);
    assert_eq!(counters(&maps, DEST_SLOT), (0, 0));
}

/// A frame from `mac_src` to `mac_dst`, `src:sport -> dst:dport`, TCP ('A', 'S', 'F', 'R'
/// flags as in `tcp`) or UDP (`flags` None), as etherparse builds it: every checksum computed
/// from scratch.
#[allow(clippy::too_many_arguments)]
fn frame(
    mac_src: [u8; 6],
    mac_dst: [u8; 6],
    src: [u8; 4],
    sport: u16,
    dst: [u8; 4],
    dport: u16,
    ttl: u8,
    flags: Option<&str>,
    payload: &[u8],
) -> Vec<u8> {
    let ip = PacketBuilder::ethernet2(mac_src, mac_dst).ipv4(src, dst, ttl);
    let mut f = Vec::new();
    match flags {
        Some(flags) => {
            let mut b = ip.tcp(sport, dport, 1000, 64240);
            for c in flags.chars() {
                b = match c {
                    'S' => b.syn(),
                    'A' => b.ack(7),
                    'F' => b.fin(),
                    'R' => b.rst(),
                    'P' => b.psh(),
                    _ => b,
                };
            }
            b.write(&mut f, payload).expect("writing a TCP frame");
        }
        None => ip
            .udp(sport, dport)
            .write(&mut f, payload)
            .expect("writing a UDP frame"),
    }
    f
}

/// The one's complement sum of the pseudo-header and the TCP/UDP segment of an IPv4 packet,
/// checksum included, is 0xffff iff the L4 checksum is right (RFC 793, RFC 768; a UDP
/// checksum of 0 means none and is accepted as such).
fn l4_checksum_ok(ip: &[u8]) -> bool {
    let ihl = (ip[0] & 0x0f) as usize * 4;
    let tot = u16::from_be_bytes([ip[2], ip[3]]) as usize;
    let seg = &ip[ihl..tot];
    if ip[9] == 17 && seg[6] == 0 && seg[7] == 0 {
        return true;
    }
    let mut s: u32 = 0;
    let mut add = |b: &[u8]| {
        for w in b.chunks(2) {
            s += u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]) as u32;
        }
    };
    add(&ip[12..20]);
    add(&[0, ip[9]]);
    add(&(seg.len() as u16).to_be_bytes());
    add(seg);
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s == 0xffff
}

/// The L4 checksum field of the packet at `ip` (TCP 16, UDP 6 bytes into the segment).
fn l4_check_at(ip: &[u8]) -> usize {
    20 + if ip[9] == 6 { 16 } else { 6 }
}

fn nat_key(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, proto: u8) -> FlowKeyC {
    FlowKeyC {
        saddr: u32::from_ne_bytes(src),
        daddr: u32::from_ne_bytes(dst),
        sport: sport.to_be(),
        dport: dport.to_be(),
        proto,
        pad: [0; 3],
    }
}

/// The request entry a worker installs for CLIENT:40000 -> VIP:80 NATed to RS:8080, out of
/// `ifindex` (the real servers' side) with `smac`.
fn nat_in_entry(ifindex: u32, smac: [u8; 6]) -> FlowVal {
    let (ip, l4) = nat_csum_deltas(u32::from_be_bytes(VIP), u32::from_be_bytes(RS), 80, RPORT);
    FlowVal {
        method: FAST_NAT_IN,
        ifindex,
        smac,
        nat_addr: u32::from_ne_bytes(RS),
        nat_port: RPORT.to_be(),
        ip_csum_delta: ip,
        l4_csum_delta: l4,
        ..dr_entry()
    }
}

/// Its reply entry: RS:8080 -> CLIENT:40000 becomes VIP:80 -> CLIENT:40000, back to the
/// client's router out of `ifindex` with `smac`.
fn nat_out_entry(ifindex: u32, smac: [u8; 6]) -> FlowVal {
    let (ip, l4) = nat_csum_deltas(u32::from_be_bytes(RS), u32::from_be_bytes(VIP), RPORT, 80);
    FlowVal {
        method: FAST_NAT_OUT,
        ifindex,
        dmac: MAC_ROUTER,
        smac,
        nat_addr: u32::from_ne_bytes(VIP),
        nat_port: 80u16.to_be(),
        ip_csum_delta: ip,
        l4_csum_delta: l4,
        ..dr_entry()
    }
}

/// A client's request (to VIP:80) and the frame the workers would send the real server.
fn request(flags: Option<&str>, ttl: u8, payload: &[u8]) -> (Vec<u8>, Vec<u8>) {
    (
        frame(
            MAC_ROUTER, MAC_OURS, CLIENT, 40000, VIP, 80, ttl, flags, payload,
        ),
        frame(
            MAC_OURS,
            MAC_RS,
            CLIENT,
            40000,
            RS,
            RPORT,
            ttl.wrapping_sub(1),
            flags,
            payload,
        ),
    )
}

/// A real server's reply (to CLIENT:40000) and the frame the workers would send the client.
fn reply(flags: Option<&str>, ttl: u8, payload: &[u8]) -> (Vec<u8>, Vec<u8>) {
    (
        frame(
            MAC_RS, MAC_OURS, RS, RPORT, CLIENT, 40000, ttl, flags, payload,
        ),
        frame(
            MAC_OURS,
            MAC_ROUTER,
            VIP,
            80,
            CLIENT,
            40000,
            ttl.wrapping_sub(1),
            flags,
            payload,
        ),
    )
}

/// Checks a NAT-rewritten frame: byte for byte what etherparse built for the new tuple, and
/// both checksums right by an independent sum.
fn assert_nat_frame(desc: &str, got: &[u8], want: &[u8]) {
    assert!(ip_checksum_ok(&got[14..]), "{desc}: IP checksum");
    assert!(l4_checksum_ok(&got[14..]), "{desc}: L4 checksum");
    assert_eq!(got, want, "{desc}: rewrite");
}

#[test]
fn nat_requests_are_rewritten_to_the_real_server() {
    for (desc, flags, payload) in [
        ("TCP ACK", Some("A"), &b""[..]),
        (
            "TCP PSH ACK with data",
            Some("PA"),
            &b"GET / HTTP/1.1\r\n\r\n"[..],
        ),
        ("UDP", None, &b"query"[..]),
        ("UDP, odd length", None, &b"odd"[..]),
    ] {
        let (input, want) = request(flags, 64, payload);
        let proto = input[23];
        let k = nat_key(CLIENT, 40000, VIP, 80, proto);
        // One-armed: back out of the interface it came in on.
        let r = run(Some((k, nat_in_entry(LO, MAC_OURS))), 0, &input);
        r.assert_forwarded(desc, XDP_TX, input.len() as u64 - 14);
        assert_nat_frame(desc, &r.frame, &want);
        // Two-armed: to the real servers' interface.
        let r = run(Some((k, nat_in_entry(OTHER_IF, MAC_OTHER_IF))), 0, &input);
        r.assert_forwarded(desc, XDP_REDIRECT, input.len() as u64 - 14);
        let mut want2 = want.clone();
        want2[6..12].copy_from_slice(&MAC_OTHER_IF);
        assert_nat_frame(desc, &r.frame, &want2);
    }
}

#[test]
fn nat_replies_are_rewritten_from_the_vip_and_counted_out() {
    for (desc, flags, payload) in [
        ("TCP ACK", Some("A"), &b""[..]),
        ("TCP data", Some("PA"), &b"HTTP/1.1 200 OK\r\n\r\nrs1"[..]),
        ("UDP", None, &b"answer"[..]),
    ] {
        let (input, want) = reply(flags, 64, payload);
        let k = nat_key(RS, RPORT, CLIENT, 40000, input[23]);
        // Two-armed: the reply came in on the real servers' side, leaves on the client's.
        let r = run(Some((k, nat_out_entry(OTHER_IF, MAC_OTHER_IF))), 0, &input);
        let ip_len = input.len() as u64 - 14;
        assert_eq!(r.verdict, XDP_REDIRECT, "{desc}: verdict");
        assert_eq!(r.stats.fast, 1, "{desc}: fast counter");
        assert_eq!(r.stats.redirected, 0, "{desc}: not steered to a worker");
        // IPVS counts a reply in OutPkts/OutBytes only (ip_vs_out_stats); the total (slot
        // 0) counts everything the fast path forwarded.
        assert_eq!(r.dest_out, (1, ip_len), "{desc}: dest OutPkts");
        assert_eq!(r.svc_out, (1, ip_len), "{desc}: svc OutPkts");
        assert_eq!((r.dest, r.svc), ((0, 0), (0, 0)), "{desc}: InPkts");
        assert_eq!(r.total, (1, ip_len), "{desc}: total");
        assert!(r.last_seen.is_some_and(|t| t > 0), "{desc}: last-seen");
        let mut want = want;
        want[6..12].copy_from_slice(&MAC_OTHER_IF);
        assert_nat_frame(desc, &r.frame, &want);
        // One-armed: back out of the same interface.
        let r = run(Some((k, nat_out_entry(LO, MAC_OURS))), 0, &input);
        assert_eq!(r.verdict, XDP_TX, "{desc}: one-armed verdict");
        want[6..12].copy_from_slice(&MAC_OURS);
        assert_nat_frame(desc, &r.frame, &want);
    }
}

#[test]
fn nat_udp_checksums_zero_stays_zero_and_computed_zero_is_all_ones() {
    // No checksum (RFC 768): the rewrite leaves it 0, both directions.
    for (desc, (mut input, mut want), k, e) in [
        (
            "request",
            request(None, 64, b"nocsum"),
            nat_key(CLIENT, 40000, VIP, 80, 17),
            nat_in_entry(LO, MAC_OURS),
        ),
        (
            "reply",
            reply(None, 64, b"nocsum"),
            nat_key(RS, RPORT, CLIENT, 40000, 17),
            nat_out_entry(LO, MAC_OURS),
        ),
    ] {
        let at = 14 + l4_check_at(&input[14..]);
        input[at..at + 2].fill(0);
        want[at..at + 2].fill(0);
        want[6..12].copy_from_slice(&MAC_OURS);
        let r = run(Some((k, e)), 0, &input);
        r.assert_forwarded_any(desc, XDP_TX);
        assert_eq!(&r.frame[at..at + 2], &[0, 0], "{desc}: checksum stays 0");
        assert_nat_frame(desc, &r.frame, &want);
    }

    // A payload word chosen so that the rewritten datagram's checksum computes to 0, which
    // UDP sends as 0xffff: the sum of everything else is then 0xffff already.
    let (_, probe) = request(None, 64, &[0, 0]);
    let at = 14 + l4_check_at(&probe[14..]);
    let c = [probe[at], probe[at + 1]];
    let (input, want) = request(None, 64, &c);
    let r = run(
        Some((
            nat_key(CLIENT, 40000, VIP, 80, 17),
            nat_in_entry(LO, MAC_OURS),
        )),
        0,
        &input,
    );
    r.assert_forwarded("computed 0", XDP_TX, input.len() as u64 - 14);
    assert_eq!(
        &r.frame[at..at + 2],
        &[0xff, 0xff],
        "a computed 0 goes as 0xffff"
    );
    assert_nat_frame("computed 0", &r.frame, &want);
}

#[test]
fn nat_state_changes_and_exceptions_take_the_workers_path() {
    let req = Some((
        nat_key(CLIENT, 40000, VIP, 80, 6),
        nat_in_entry(LO, MAC_OURS),
    ));
    let rep = Some((
        nat_key(RS, RPORT, CLIENT, 40000, 6),
        nat_out_entry(OTHER_IF, MAC_OTHER_IF),
    ));
    let mut frag = request(None, 64, b"frag").0;
    frag[20] |= 0x20; // MF: a first fragment
    let ip = &mut frag[14..34];
    ip[10] = 0;
    ip[11] = 0;
    let mut s: u32 = 0;
    for c in ip.chunks(2) {
        s += u16::from_be_bytes([c[0], c[1]]) as u32;
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    ip[10..12].copy_from_slice(&(!(s as u16)).to_be_bytes());
    type Case = (&'static str, Option<(FlowKeyC, FlowVal)>, u32, Vec<u8>);
    let cases: Vec<Case> = vec![
        ("request SYN", req, 0, request(Some("S"), 64, b"").0),
        ("request FIN", req, 0, request(Some("FA"), 64, b"").0),
        ("request RST", req, 0, request(Some("R"), 64, b"").0),
        ("request TTL 1", req, 0, request(Some("A"), 1, b"").0),
        (
            "request too big for the egress MTU",
            req,
            0,
            request(Some("A"), 64, &[0u8; 1461]).0,
        ),
        (
            "request first fragment",
            Some((
                nat_key(CLIENT, 40000, VIP, 80, 17),
                nat_in_entry(LO, MAC_OURS),
            )),
            0,
            frag,
        ),
        (
            "request, generation bumped",
            req,
            1,
            request(Some("A"), 64, b"").0,
        ),
        ("request miss", None, 0, request(Some("A"), 64, b"").0),
        ("reply SYN ACK", rep, 0, reply(Some("SA"), 64, b"").0),
        ("reply FIN", rep, 0, reply(Some("FA"), 64, b"").0),
        ("reply RST", rep, 0, reply(Some("R"), 64, b"").0),
        ("reply TTL 1", rep, 0, reply(Some("A"), 1, b"").0),
        (
            "reply too big for the client's interface",
            rep,
            0,
            reply(Some("A"), 64, &[0u8; 1461]).0,
        ),
        (
            "reply, generation bumped",
            rep,
            2,
            reply(Some("A"), 64, b"").0,
        ),
        (
            "reply miss (the reply map steers it)",
            None,
            0,
            reply(Some("A"), 64, b"").0,
        ),
    ];
    for (desc, entry, gen, frame) in &cases {
        run(*entry, *gen, frame).assert_workers(desc);
    }
    // A request entry never matches the reply's tuple and the other way round.
    run(req, 0, &reply(Some("A"), 64, b"").0).assert_workers("reply frame, request entry");
    run(rep, 0, &request(Some("A"), 64, b"").0).assert_workers("request frame, reply entry");
    // The MTU boundary itself is forwarded.
    let (big, _) = reply(Some("A"), 64, &[0u8; 1460]);
    let r = run(rep, 0, &big);
    assert_eq!((r.verdict, r.dest_out), (XDP_REDIRECT, (1, 1500)));
}
