//! Packet table for the XDP steering program (`bpf/xvs.bpf.c`), run against the real program
//! with `BPF_PROG_RUN` (as Katran tests its balancer): every case is {description, input
//! frame, map setup, expected verdict, expected counter}. The program is loaded by the same
//! code as xvsd (`xvs::bpf::Steering`), afresh for every case, so cases are independent.
//!
//! Maps of every case (the fixture): services TCP 10.0.0.88:80, UDP 10.0.0.88:53 and the
//! persistent port-0 service TCP 10.0.0.89:0; NAT real servers TCP 10.1.0.5:8080,
//! UDP 10.1.0.7:53 and TCP 10.1.0.6:0 (a real server of a port-0 service); director
//! addresses 10.0.0.1 and 10.1.0.1. Per case: which interface slot `lo` has (frames are
//! run as if received on `lo`, RX queue 0: test runs need an existing device and queue) and
//! which XSKMAP entry holds an AF_XDP socket.
//!
//! What the kernel returns for a redirect in a test run: `bpf_redirect_map` only looks the
//! entry up (a test run without live frames does not carry the redirect out). With a socket
//! in the entry it is `XDP_REDIRECT`; with an empty entry it is the low bits of the flags,
//! which the program sets to `XDP_PASS` (a queue without a worker degrades to the kernel).
//! So the slot the program computes (`slot * 256 + queue`) is observable: only the expected
//! entry holds a socket, and any other index yields `XDP_PASS` + `no_socket`. The socket
//! does not need to be bound for the XSKMAP to take it.
//!
//! Not in the table: frames shorter than an Ethernet header (the kernel refuses to run
//! them, EINVAL; the 14-byte case is the shortest) and RX queues above 0 (`lo` has one).
//!
//! `restart_hold_table` is the same kind of table for the restart hold (`struct xvs_config`).
//!
//! Needs root (BPF); no namespaces.

use etherparse::PacketBuilder;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use xvs::bpf::maps::{SvcKey, XdpStats};
use xvs::bpf::{Steering, MAX_QUEUES};

const XDP_DROP: u32 = libbpf_sys::XDP_DROP;
const XDP_PASS: u32 = libbpf_sys::XDP_PASS;
const XDP_REDIRECT: u32 = libbpf_sys::XDP_REDIRECT;

/// The loopback device: ifindex 1 in every network namespace.
const LO: u32 = 1;

const TCP: u8 = 6;
const UDP: u8 = 17;

const CLIENT: [u8; 4] = [192, 0, 2, 7];
const VIP: [u8; 4] = [10, 0, 0, 88];
const VIP_PORT0: [u8; 4] = [10, 0, 0, 89];
const RS: [u8; 4] = [10, 1, 0, 5];
const RS_UDP: [u8; 4] = [10, 1, 0, 7];
const RS_PORT0: [u8; 4] = [10, 1, 0, 6];
const DIP_EXT: [u8; 4] = [10, 0, 0, 1];
const DIP_INT: [u8; 4] = [10, 1, 0, 1];

const MAC_A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const MAC_B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];

fn key(addr: [u8; 4], port: u16, proto: u8) -> SvcKey {
    SvcKey {
        addr: u32::from_ne_bytes(addr),
        port: port.to_be(),
        proto,
        pad: 0,
    }
}

/// Which counter of `struct xvs_xdp_stats` the case must bump (by exactly one, the others
/// staying at zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counter {
    Redirected,
    Passed,
    Malformed,
    NoSocket,
    Fragments,
    Held,
}

impl Counter {
    fn stats(self) -> XdpStats {
        let mut s = XdpStats::default();
        match self {
            Counter::Redirected => s.redirected = 1,
            Counter::Passed => s.passed = 1,
            Counter::Malformed => s.malformed = 1,
            Counter::NoSocket => s.no_socket = 1,
            Counter::Fragments => s.fragments = 1,
            Counter::Held => s.held = 1,
        }
        s
    }
}

/// Per-case map setup beyond the fixture.
#[derive(Debug, Clone, Copy)]
struct Setup {
    /// Interface slot of `lo` in `xvs_ifaces` (None: not registered).
    lo_slot: Option<u32>,
    /// (interface slot, queue) of the one XSKMAP entry holding a socket (None: empty map).
    xsk: Option<(u32, u32)>,
}

/// `lo` as interface slot 1 with a socket for its queue 0: entry 1 * 256 + 0. A slot other
/// than 0 so that a program ignoring the slot (or the multiplier) misses the socket.
const SERVED: Setup = Setup {
    lo_slot: Some(1),
    xsk: Some((1, 0)),
};

struct Case {
    desc: &'static str,
    frame: Vec<u8>,
    setup: Setup,
    verdict: u32,
    counter: Counter,
}

fn case(desc: &'static str, frame: Vec<u8>, verdict: u32, counter: Counter) -> Case {
    Case {
        desc,
        frame,
        setup: SERVED,
        verdict,
        counter,
    }
}

fn tcp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src, dst, 64)
        .tcp(sport, dport, 1, 64240)
        .syn();
    let mut f = Vec::with_capacity(b.size(0));
    b.write(&mut f, &[]).expect("writing a TCP frame");
    f
}

fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(src, dst, 64)
        .udp(sport, dport);
    let mut f = Vec::with_capacity(b.size(4));
    b.write(&mut f, b"ping").expect("writing a UDP frame");
    f
}

/// The IPv4 flags/fragment-offset field (frame bytes 20..22), host order value.
fn with_frag(mut f: Vec<u8>, flags_offset: u16) -> Vec<u8> {
    f[20..22].copy_from_slice(&flags_offset.to_be_bytes());
    f
}

fn with_byte(mut f: Vec<u8>, at: usize, v: u8) -> Vec<u8> {
    f[at] = v;
    f
}

fn truncated(mut f: Vec<u8>, len: usize) -> Vec<u8> {
    f.truncate(len);
    f
}

/// An Ethernet frame with this ethertype and a payload of zeros.
fn ether(ethertype: u16, payload: usize) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&MAC_B);
    f.extend_from_slice(&MAC_A);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.resize(14 + payload, 0);
    f
}

fn arp_request() -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&MAC_A);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    // htype 1, ptype IPv4, hlen 6, plen 4, op 1 (request)
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&MAC_A);
    f.extend_from_slice(&CLIENT);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&VIP);
    f
}

fn ipv6_udp() -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv6([0xfd; 16], [0xfe; 16], 64)
        .udp(40000, 80);
    let mut f = Vec::with_capacity(b.size(4));
    b.write(&mut f, b"ping").expect("writing an IPv6 frame");
    f
}

/// A VLAN-tagged (802.1Q, VID 10) copy of an untagged frame.
fn vlan(f: Vec<u8>) -> Vec<u8> {
    let mut t = f[..12].to_vec();
    t.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a]);
    t.extend_from_slice(&f[12..]);
    t
}

fn icmp_echo(dst: [u8; 4]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(MAC_A, MAC_B)
        .ipv4(CLIENT, dst, 64)
        .icmpv4_echo_request(1, 1);
    let mut f = Vec::with_capacity(b.size(8));
    b.write(&mut f, &[0; 8]).expect("writing an ICMP frame");
    f
}

fn table() -> Vec<Case> {
    use Counter::*;
    vec![
        // Services.
        case(
            "TCP SYN to VIP:80 (TCP service) -> worker",
            tcp(CLIENT, 40000, VIP, 80),
            XDP_REDIRECT,
            Redirected,
        ),
        case(
            "UDP to VIP:53 (UDP service) -> worker",
            udp(CLIENT, 40000, VIP, 53),
            XDP_REDIRECT,
            Redirected,
        ),
        case(
            "TCP SYN to VIP:80 for another host's MAC (promiscuous NIC, flooding bridge) -> kernel",
            {
                let mut f = tcp(CLIENT, 40000, VIP, 80);
                f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x0c]);
                f
            },
            XDP_PASS,
            Passed,
        ),
        case(
            "UDP to VIP:53 sent to the broadcast MAC -> kernel",
            {
                let mut f = udp(CLIENT, 40000, VIP, 53);
                f[0..6].copy_from_slice(&[0xff; 6]);
                f
            },
            XDP_PASS,
            Passed,
        ),
        case(
            "TCP to VIP:81 (no service on that port) -> kernel",
            tcp(CLIENT, 40000, VIP, 81),
            XDP_PASS,
            Passed,
        ),
        case(
            "UDP to VIP:80 (the service on port 80 is TCP) -> kernel",
            udp(CLIENT, 40000, VIP, 80),
            XDP_PASS,
            Passed,
        ),
        case(
            "TCP to VIP:53 (the service on port 53 is UDP) -> kernel",
            tcp(CLIENT, 40000, VIP, 53),
            XDP_PASS,
            Passed,
        ),
        case(
            "TCP to another address on port 80 -> kernel",
            tcp(CLIENT, 40000, [10, 0, 0, 87], 80),
            XDP_PASS,
            Passed,
        ),
        case(
            "TCP to the port-0 persistent service's VIP, port 443 -> worker",
            tcp(CLIENT, 40000, VIP_PORT0, 443),
            XDP_REDIRECT,
            Redirected,
        ),
        case(
            "TCP to the port-0 persistent service's VIP, port 1 -> worker",
            tcp(CLIENT, 40000, VIP_PORT0, 1),
            XDP_REDIRECT,
            Redirected,
        ),
        case(
            "UDP to the port-0 service's VIP (the service is TCP) -> kernel",
            udp(CLIENT, 40000, VIP_PORT0, 443),
            XDP_PASS,
            Passed,
        ),
        // NAT replies.
        case(
            "NAT reply: TCP from real server 10.1.0.5:8080 to a client -> worker",
            tcp(RS, 8080, CLIENT, 40000),
            XDP_REDIRECT,
            Redirected,
        ),
        case(
            "NAT reply: UDP from real server 10.1.0.7:53 to a client -> worker",
            udp(RS_UDP, 53, CLIENT, 40000),
            XDP_REDIRECT,
            Redirected,
        ),
        case(
            "NAT reply from a port-0 service's real server, any source port -> worker",
            tcp(RS_PORT0, 5555, CLIENT, 40000),
            XDP_REDIRECT,
            Redirected,
        ),
        case(
            "real server 10.1.0.5 from another port (9999) -> kernel",
            tcp(RS, 9999, CLIENT, 40000),
            XDP_PASS,
            Passed,
        ),
        case(
            "real server 10.1.0.5:8080 over UDP (its NAT entry is TCP) -> kernel",
            udp(RS, 8080, CLIENT, 40000),
            XDP_PASS,
            Passed,
        ),
        case(
            "director's own traffic: real server 10.1.0.5:8080 to the DIP 10.1.0.1 -> kernel",
            tcp(RS, 8080, DIP_INT, 40000),
            XDP_PASS,
            Passed,
        ),
        case(
            "director's own traffic: port-0 real server to the DIP 10.0.0.1 -> kernel",
            tcp(RS_PORT0, 5555, DIP_EXT, 40000),
            XDP_PASS,
            Passed,
        ),
        case(
            "a client to the director's own address (ssh) -> kernel",
            tcp(CLIENT, 40000, DIP_EXT, 22),
            XDP_PASS,
            Passed,
        ),
        // Not IPv4 TCP/UDP.
        case(
            "ARP request for the VIP -> kernel",
            arp_request(),
            XDP_PASS,
            Passed,
        ),
        case(
            "IPv6 UDP to port 80 -> kernel",
            ipv6_udp(),
            XDP_PASS,
            Passed,
        ),
        case(
            "LLDP (non-IP ethertype 0x88cc) -> kernel",
            ether(0x88cc, 46),
            XDP_PASS,
            Passed,
        ),
        case(
            "VLAN-tagged TCP to VIP:80 -> kernel",
            vlan(tcp(CLIENT, 40000, VIP, 80)),
            XDP_PASS,
            Passed,
        ),
        case(
            "ICMP echo request to the VIP -> kernel",
            icmp_echo(VIP),
            XDP_PASS,
            Passed,
        ),
        // Fragments (frag_off: 0x2000 MF, 0x4000 DF, low 13 bits the offset in 8 bytes).
        case(
            "non-first fragment (offset 1480 B, MF) to VIP:80 -> kernel, counted",
            with_frag(tcp(CLIENT, 40000, VIP, 80), 0x2000 | 185),
            XDP_PASS,
            Fragments,
        ),
        case(
            "last fragment (offset 1480 B, no MF) to VIP:53 UDP -> kernel, counted",
            with_frag(udp(CLIENT, 40000, VIP, 53), 185),
            XDP_PASS,
            Fragments,
        ),
        case(
            "fragment at offset 32768 B (only the top offset bit) -> kernel, counted",
            with_frag(tcp(CLIENT, 40000, VIP, 80), 0x1000),
            XDP_PASS,
            Fragments,
        ),
        case(
            "non-first fragment to an address without a service -> kernel, counted",
            with_frag(udp(CLIENT, 40000, [10, 9, 9, 9], 53), 0x2000 | 1),
            XDP_PASS,
            Fragments,
        ),
        case(
            "first fragment (MF, offset 0) to VIP:80 -> worker (which drops it)",
            with_frag(tcp(CLIENT, 40000, VIP, 80), 0x2000),
            XDP_REDIRECT,
            Redirected,
        ),
        case(
            "DF set, offset 0 to VIP:80 -> worker",
            with_frag(tcp(CLIENT, 40000, VIP, 80), 0x4000),
            XDP_REDIRECT,
            Redirected,
        ),
        // Truncated and malformed.
        case(
            "Ethernet header only, ethertype IPv4 -> kernel, malformed",
            ether(0x0800, 0),
            XDP_PASS,
            Malformed,
        ),
        case(
            "IPv4 header cut at 19 bytes -> kernel, malformed",
            truncated(tcp(CLIENT, 40000, VIP, 80), 14 + 19),
            XDP_PASS,
            Malformed,
        ),
        case(
            "IPv4 header complete, ports cut after 3 bytes -> kernel, malformed",
            truncated(tcp(CLIENT, 40000, VIP, 80), 14 + 20 + 3),
            XDP_PASS,
            Malformed,
        ),
        case(
            "UDP: ports complete (4 bytes), rest of the header missing -> worker validates",
            truncated(udp(CLIENT, 40000, VIP, 53), 14 + 20 + 4),
            XDP_REDIRECT,
            Redirected,
        ),
        case(
            "IP version 6 inside an IPv4 ethertype -> kernel, malformed",
            with_byte(tcp(CLIENT, 40000, VIP, 80), 14, 0x65),
            XDP_PASS,
            Malformed,
        ),
        case(
            "IHL 4 (16-byte header) -> kernel, malformed",
            with_byte(tcp(CLIENT, 40000, VIP, 80), 14, 0x44),
            XDP_PASS,
            Malformed,
        ),
        case(
            "IHL 15 (60-byte header) in a 54-byte frame: ports beyond the end -> kernel, malformed",
            with_byte(tcp(CLIENT, 40000, VIP, 80), 14, 0x4f),
            XDP_PASS,
            Malformed,
        ),
        // Interface slots and sockets.
        Case {
            desc: "VIP:80, lo not registered as an interface -> kernel, no_socket",
            frame: tcp(CLIENT, 40000, VIP, 80),
            setup: Setup {
                lo_slot: None,
                xsk: Some((1, 0)),
            },
            verdict: XDP_PASS,
            counter: NoSocket,
        },
        Case {
            desc: "VIP:80, lo is slot 1 but the socket is in slot 0's entry -> kernel, no_socket",
            frame: tcp(CLIENT, 40000, VIP, 80),
            setup: Setup {
                lo_slot: Some(1),
                xsk: Some((0, 0)),
            },
            verdict: XDP_PASS,
            counter: NoSocket,
        },
        Case {
            desc: "VIP:80, lo is slot 1, its queue 0 has no socket -> kernel (XDP_PASS fallback)",
            frame: tcp(CLIENT, 40000, VIP, 80),
            setup: Setup {
                lo_slot: Some(1),
                xsk: None,
            },
            verdict: XDP_PASS,
            counter: NoSocket,
        },
        Case {
            desc: "NAT reply, lo is slot 3 with its socket (entry 768) -> worker",
            frame: tcp(RS, 8080, CLIENT, 40000),
            setup: Setup {
                lo_slot: Some(3),
                xsk: Some((3, 0)),
            },
            verdict: XDP_REDIRECT,
            counter: Redirected,
        },
        Case {
            desc: "non-service frame, no socket at all -> kernel, passed (not no_socket)",
            frame: tcp(CLIENT, 40000, VIP, 81),
            setup: Setup {
                lo_slot: None,
                xsk: None,
            },
            verdict: XDP_PASS,
            counter: Passed,
        },
    ]
}

/// An AF_XDP socket, unbound: enough for the XSKMAP to hold it.
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

fn load(setup: Setup, xsk: &OwnedFd) -> Steering {
    let s = Steering::load().expect("loading the steering program (root?)");
    for k in [key(VIP, 80, TCP), key(VIP, 53, UDP), key(VIP_PORT0, 0, TCP)] {
        s.add_service(&k).expect("services map");
    }
    for k in [
        key(RS, 8080, TCP),
        key(RS_UDP, 53, UDP),
        key(RS_PORT0, 0, TCP),
    ] {
        s.add_nat_rs(&k).expect("NAT reply map");
    }
    s.set_local_addrs(&[DIP_EXT.into(), DIP_INT.into()])
        .expect("local address map");
    if let Some(slot) = setup.lo_slot {
        s.set_iface(slot, LO, "lo", MAC_B).expect("interface map");
    }
    if let Some((slot, queue)) = setup.xsk {
        s.set_xsk(slot, queue, xsk.as_raw_fd()).expect("XSKMAP");
    }
    s
}

fn verdict_name(v: u32) -> &'static str {
    match v {
        0 => "XDP_ABORTED",
        1 => "XDP_DROP",
        2 => "XDP_PASS",
        3 => "XDP_TX",
        4 => "XDP_REDIRECT",
        _ => "?",
    }
}

#[test]
fn steering_table() {
    let xsk = xdp_socket();
    let mut failures = Vec::new();
    let cases = table();
    for c in &cases {
        let s = load(c.setup, &xsk);
        let verdict = s.test_run(&c.frame, LO, 0).expect("BPF_PROG_RUN");
        let stats = s.stats().expect("reading the counters");
        let want = c.counter.stats();
        if verdict != c.verdict || stats != want {
            failures.push(format!(
                "{}: got {} {:?}, want {} {:?} (frame {} bytes)",
                c.desc,
                verdict_name(verdict),
                stats,
                verdict_name(c.verdict),
                want,
                c.frame.len()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The slot arithmetic the table relies on: entry `slot * MAX_QUEUES + queue`, and every
/// other entry misses. A socket in each entry of slot 1 but queue 0 in turn: only queue 0's
/// entry redirects a frame received on queue 0.
#[test]
fn only_the_receiving_queue_entry_redirects() {
    let xsk = xdp_socket();
    let frame = tcp(CLIENT, 40000, VIP, 80);
    for (slot, queue, want) in [
        (1, 0, XDP_REDIRECT),
        (1, 1, XDP_PASS),
        (1, MAX_QUEUES - 1, XDP_PASS),
        (0, 0, XDP_PASS),
        (2, 0, XDP_PASS),
    ] {
        let s = load(
            Setup {
                lo_slot: Some(1),
                xsk: Some((slot, queue)),
            },
            &xsk,
        );
        let got = s.test_run(&frame, LO, 0).expect("BPF_PROG_RUN");
        assert_eq!(
            verdict_name(got),
            verdict_name(want),
            "socket in slot {slot} queue {queue}, frame on lo (slot 1) queue 0"
        );
    }
}

/// The restart hold (`struct xvs_config`, `xvsd --state-dir`): while it is in the future a
/// service frame whose socket is missing is dropped (the kernel would reset it); a hold in
/// the past or never set passes it, as does a frame that is not a service's whatever the
/// hold; a frame with its socket is redirected whatever the hold.
/// {description, frame, setup, hold (None: never set), verdict, counter}.
type HoldCase = (&'static str, Vec<u8>, Setup, Option<u64>, u32, Counter);

#[test]
fn restart_hold_table() {
    use Counter::*;
    let xsk = xdp_socket();
    let now = xvs::bpf::monotonic_ns();
    let future = now + 60_000_000_000;
    let past = now.saturating_sub(1_000_000_000).max(1);
    let no_socket = Setup {
        lo_slot: Some(1),
        xsk: None,
    };
    let svc = tcp(CLIENT, 40000, VIP, 80);
    let cases: Vec<HoldCase> = vec![
        (
            "VIP:80, no socket, hold in the future -> drop, held",
            svc.clone(),
            no_socket,
            Some(future),
            XDP_DROP,
            Held,
        ),
        (
            "VIP:80, no socket, hold in the past -> kernel, no_socket",
            svc.clone(),
            no_socket,
            Some(past),
            XDP_PASS,
            NoSocket,
        ),
        (
            "VIP:80, no socket, hold never set (a crashed xvsd) -> kernel, no_socket",
            svc.clone(),
            no_socket,
            None,
            XDP_PASS,
            NoSocket,
        ),
        (
            "VIP:80, no socket, hold cleared to 0 -> kernel, no_socket",
            svc.clone(),
            no_socket,
            Some(0),
            XDP_PASS,
            NoSocket,
        ),
        (
            "UDP VIP:53, no socket, hold in the future -> drop, held",
            udp(CLIENT, 40000, VIP, 53),
            no_socket,
            Some(future),
            XDP_DROP,
            Held,
        ),
        (
            "NAT reply, no socket, hold in the future -> drop, held",
            tcp(RS, 8080, CLIENT, 40000),
            no_socket,
            Some(future),
            XDP_DROP,
            Held,
        ),
        (
            "VIP:80 with its socket, hold in the future -> worker",
            svc.clone(),
            SERVED,
            Some(future),
            XDP_REDIRECT,
            Redirected,
        ),
        (
            "non-service TCP (VIP:81), no socket, hold in the future -> kernel, passed",
            tcp(CLIENT, 40000, VIP, 81),
            no_socket,
            Some(future),
            XDP_PASS,
            Passed,
        ),
        (
            "to the director (DIP:22), hold in the future -> kernel, passed",
            tcp(CLIENT, 40000, DIP_EXT, 22),
            no_socket,
            Some(future),
            XDP_PASS,
            Passed,
        ),
        (
            "ARP, hold in the future -> kernel, passed",
            arp_request(),
            no_socket,
            Some(future),
            XDP_PASS,
            Passed,
        ),
        (
            "ping to the VIP, hold in the future -> kernel, passed",
            icmp_echo(VIP),
            no_socket,
            Some(future),
            XDP_PASS,
            Passed,
        ),
        (
            "NAT reply to the director itself, hold in the future -> kernel, passed",
            tcp(RS, 8080, DIP_INT, 40000),
            no_socket,
            Some(future),
            XDP_PASS,
            Passed,
        ),
        (
            "VIP:80, lo not registered, hold in the future -> kernel, no_socket",
            svc.clone(),
            Setup {
                lo_slot: None,
                xsk: None,
            },
            Some(future),
            XDP_PASS,
            NoSocket,
        ),
    ];
    let mut failures = Vec::new();
    for (desc, frame, setup, hold, verdict, counter) in &cases {
        let mut s = load(*setup, &xsk);
        if let Some(h) = hold {
            s.set_hold(*h).expect("config map");
        }
        let got = s.test_run(frame, LO, 0).expect("BPF_PROG_RUN");
        let stats = s.stats().expect("reading the counters");
        if got != *verdict || stats != counter.stats() {
            failures.push(format!(
                "{desc}: got {} {stats:?}, want {} {:?}",
                verdict_name(got),
                verdict_name(*verdict),
                counter.stats()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The kernel's own limit, stated in the module comment: no test run under 14 bytes.
#[test]
fn frames_shorter_than_ethernet_are_refused_by_the_kernel() {
    let xsk = xdp_socket();
    let s = load(SERVED, &xsk);
    assert!(s.test_run(&[0u8; 13], LO, 0).is_err());
    assert_eq!(s.stats().expect("counters"), XdpStats::default());
}
