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
//! NAT is not in the table: the fast path does not carry NAT (docs/architecture.md).
//! Needs root (BPF); no namespaces.

use etherparse::PacketBuilder;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use xvs::bpf::maps::{FlowKeyC, FlowVal, SvcKey, FAST_DR, FAST_TUN};
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
    let last_seen = maps.lookup(&key(frame[23])).map(|e| e.last_seen_ns);
    Run {
        verdict: v,
        frame: f,
        steer_verdict: want_v,
        steer_frame: want_f,
        stats,
        dest: counters(&maps, DEST_SLOT),
        svc: counters(&maps, SVC_SLOT),
        total: counters(&maps, 0),
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
        assert!(
            self.last_seen.is_some_and(|t| t > 0),
            "{desc}: last-seen written"
        );
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
            "unknown method (NAT is not fast-pathed)",
            Some((
                key(6),
                FlowVal {
                    method: 3,
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
