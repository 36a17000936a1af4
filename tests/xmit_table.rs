//! Packet-level tables for the three forwarding methods: {description, input frame, expected
//! output frame}, run through the rewrites of `xvs::xmit` directly and through
//! `Forwarder::process` end to end (Katran's test layout).
//!
//! Expected frames are built independently of the code under test, with etherparse, which
//! computes every checksum itself; every output is also parsed by etherparse and each of its
//! IP, TCP, UDP and ICMP checksums recomputed. `src/packet/csum.rs` is never used here.
//!
//! The end-to-end fixture (addresses, MACs, two ports with different MTUs) is
//! `xvs::fuzzing::forward_fixture`, shared with the fuzz targets.

use etherparse::{
    icmpv4::DestUnreachableHeader, Icmpv4Header, Icmpv4Type, IpHeaders, IpNumber, Ipv4Dscp,
    Ipv4Ecn, Ipv4Header, Ipv4Options, NetSlice, PacketBuilder, SlicedPacket, TransportSlice,
};
use proptest::prelude::*;
use std::net::Ipv4Addr;
use xvs::forward::{Forwarder, Verdict};
use xvs::fuzzing::fixture::*;
use xvs::fuzzing::{forward_fixture, BUF_LEN};
use xvs::packet::{parse_flow, DropReason};
use xvs::service::Snapshot;
use xvs::xmit;

const CIP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const CPORT: u16 = 40000;

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;
const RST: u8 = 0x04;
const FIN: u8 = 0x01;

// ---------------------------------------------------------------------------------------
// Frames, built with etherparse
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum L4 {
    Tcp {
        flags: u8,
        seq: u32,
        ack: u32,
    },
    Udp,
    /// UDP sent without a checksum (field 0, RFC 768).
    UdpNoCsum,
}

/// An Ethernet + IPv4 + TCP/UDP frame, described field by field.
#[derive(Clone, Debug)]
struct Pkt {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    l4: L4,
    payload: Vec<u8>,
    tos: u8,
    df: bool,
    ttl: u8,
    id: u16,
    /// IPv4 options (a multiple of 4 bytes, at most 40).
    options: Vec<u8>,
    /// Zero padding after the IP datagram up to this frame length (Ethernet minimum: 60).
    frame_len: usize,
}

fn tcp(flags: u8) -> L4 {
    L4::Tcp {
        flags,
        seq: 1000,
        ack: if flags & ACK != 0 { 5000 } else { 0 },
    }
}

/// A client's request to `vip:80`, arriving from the client's MAC on the external port.
fn request(vip: Ipv4Addr, l4: L4) -> Pkt {
    Pkt {
        src_mac: CLIENT_MAC,
        dst_mac: EXT_MAC,
        src: CIP,
        dst: vip,
        sport: CPORT,
        dport: VPORT,
        l4,
        payload: Vec::new(),
        tos: 0,
        df: true,
        ttl: 63,
        id: 0x1234,
        options: Vec::new(),
        frame_len: 0,
    }
}

/// The NAT real server's reply to the client, arriving on the internal port.
fn nat_reply(l4: L4) -> Pkt {
    Pkt {
        src_mac: NAT_RS_MAC,
        dst_mac: INT_MAC,
        src: NAT_RIP,
        dst: CIP,
        sport: NAT_RPORT,
        dport: CPORT,
        ..request(NAT_VIP, l4)
    }
}

impl Pkt {
    fn ip_header(&self, protocol: IpNumber) -> Ipv4Header {
        let mut h = Ipv4Header::new(0, self.ttl, protocol, self.src.octets(), self.dst.octets())
            .expect("empty payload");
        h.dscp = Ipv4Dscp::try_new(self.tos >> 2).expect("6 bits");
        h.ecn = Ipv4Ecn::try_new(self.tos & 3).expect("2 bits");
        h.dont_fragment = self.df;
        h.identification = self.id;
        h.options = Ipv4Options::try_from(&self.options[..]).expect("valid options length");
        h
    }

    fn ihl_bytes(&self) -> usize {
        20 + self.options.len()
    }

    fn frame(&self) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(self.src_mac, self.dst_mac).ip(IpHeaders::Ipv4(
            self.ip_header(IpNumber::TCP),
            Default::default(),
        ));
        let mut out = Vec::new();
        match self.l4 {
            L4::Tcp { flags, seq, ack } => {
                let mut t = b.tcp(self.sport, self.dport, seq, 64240);
                if flags & SYN != 0 {
                    t = t.syn();
                }
                if flags & ACK != 0 {
                    t = t.ack(ack);
                }
                if flags & PSH != 0 {
                    t = t.psh();
                }
                if flags & 0x01 != 0 {
                    t = t.fin();
                }
                if flags & RST != 0 {
                    t = t.rst();
                }
                t.write(&mut out, &self.payload).expect("write TCP");
            }
            L4::Udp | L4::UdpNoCsum => {
                b.udp(self.sport, self.dport)
                    .write(&mut out, &self.payload)
                    .expect("write UDP");
                if self.l4 == L4::UdpNoCsum {
                    let at = 14 + self.ihl_bytes() + 6;
                    out[at..at + 2].fill(0);
                }
            }
        }
        if out.len() < self.frame_len {
            out.resize(self.frame_len, 0);
        }
        out
    }

    /// The IP datagram alone (no Ethernet header, no padding).
    fn ip_packet(&self) -> Vec<u8> {
        let f = self.frame();
        let total = u16::from_be_bytes([f[16], f[17]]) as usize;
        f[14..14 + total].to_vec()
    }

    fn udp_csum(&self) -> u16 {
        let f = self.frame();
        let at = 14 + self.ihl_bytes() + 6;
        u16::from_be_bytes([f[at], f[at + 1]])
    }

    fn with_macs(&self, dst: [u8; 6], src: [u8; 6]) -> Pkt {
        Pkt {
            dst_mac: dst,
            src_mac: src,
            ..self.clone()
        }
    }

    fn with_dst(&self, addr: Ipv4Addr, port: u16) -> Pkt {
        Pkt {
            dst: addr,
            dport: port,
            ..self.clone()
        }
    }

    /// The packet one router hop later: TTL decremented (as every method forwards it).
    fn hop(&self) -> Pkt {
        Pkt {
            ttl: self.ttl - 1,
            ..self.clone()
        }
    }

    fn with_src(&self, addr: Ipv4Addr, port: u16) -> Pkt {
        Pkt {
            src: addr,
            sport: port,
            ..self.clone()
        }
    }
}

/// `p` (UDP, even-length payload) extended by one 16-bit word chosen so that the UDP
/// checksum of `after(p)` computes to 0, which must be sent as 0xffff (RFC 768). The word is
/// the checksum of `after(p)` with the word zero: it complements the rest of the sum, so
/// the whole sums to all ones.
fn udp_checksum_zero_after(p: &Pkt, after: impl Fn(&Pkt) -> Pkt) -> Pkt {
    assert!(
        p.payload.len().is_multiple_of(2),
        "the word must be 16-bit aligned"
    );
    let mut q = p.clone();
    q.payload.extend([0, 0]);
    let c0 = after(&q).udp_csum();
    let n = q.payload.len();
    q.payload[n - 2..].copy_from_slice(&c0.to_be_bytes());
    assert_eq!(after(&q).udp_csum(), 0xffff, "construction: computes to 0");
    assert!(
        q.udp_csum() != 0xffff && q.udp_csum() != 0,
        "construction: the input checksum is an ordinary value"
    );
    q
}

/// The IPIP frame `ip_vs_tunnel_xmit` makes of `inner`: outer header `src -> dst`,
/// protocol 4, DF, DSCP and TTL copied from the inner header, ECN copied except that CE
/// becomes ECT(0) (RFC 6040, `INET_ECN_encapsulate`), identification 0, no padding.
fn ipip(dst_mac: [u8; 6], src_mac: [u8; 6], src: Ipv4Addr, dst: Ipv4Addr, inner: &Pkt) -> Vec<u8> {
    let mut h = Ipv4Header::new(0, inner.ttl, IpNumber::IPV4, src.octets(), dst.octets()).unwrap();
    h.dscp = Ipv4Dscp::try_new(inner.tos >> 2).unwrap();
    let ecn = if inner.tos & 3 == 3 { 2 } else { inner.tos & 3 };
    h.ecn = Ipv4Ecn::try_new(ecn).unwrap();
    h.dont_fragment = inner.df;
    h.identification = 0;
    let mut out = Vec::new();
    PacketBuilder::ethernet2(src_mac, dst_mac)
        .ip(IpHeaders::Ipv4(h, Default::default()))
        .write(&mut out, IpNumber::IPV4, &inner.ip_packet())
        .expect("write IPIP");
    out
}

/// The RST Linux's `tcp_v4_send_reset` sends for `orig`, a segment to a port without a
/// socket (RFC 793 "Reset Generation"): from its destination back to its sender, to its
/// source MAC from `src_mac`; `ack: None` for a segment with ACK (`<SEQ=SEG.ACK><CTL=RST>`),
/// otherwise `<SEQ=0><ACK=ack><CTL=RST,ACK>`. IP: TTL 64, DF, id 0, the segment's DSCP
/// without ECN, no options; TCP: no options, window 0.
fn tcp_rst(src_mac: [u8; 6], orig: &Pkt, seq: u32, ack: Option<u32>) -> Vec<u8> {
    let mut h =
        Ipv4Header::new(0, 64, IpNumber::TCP, orig.dst.octets(), orig.src.octets()).unwrap();
    h.dscp = Ipv4Dscp::try_new(orig.tos >> 2).unwrap();
    h.dont_fragment = true;
    h.identification = 0;
    let mut t = PacketBuilder::ethernet2(src_mac, orig.src_mac)
        .ip(IpHeaders::Ipv4(h, Default::default()))
        .tcp(orig.dport, orig.sport, seq, 0)
        .rst();
    if let Some(a) = ack {
        t = t.ack(a);
    }
    let mut out = Vec::new();
    t.write(&mut out, &[]).expect("write RST");
    out
}

/// ICMP destination unreachable, fragmentation needed (type 3 code 4, RFC 1191) for the
/// sender of `orig`, from `from`, quoting the original IP header and 8 bytes (RFC 792), as
/// Linux sends ICMP errors: TOS 0xc0, DF clear, TTL 64.
fn frag_needed(
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    from: Ipv4Addr,
    mtu: u16,
    orig: &Pkt,
) -> Vec<u8> {
    let mut h = Ipv4Header::new(0, 64, IpNumber::ICMP, from.octets(), orig.src.octets()).unwrap();
    h.dscp = Ipv4Dscp::try_new(0xc0 >> 2).unwrap();
    h.dont_fragment = false;
    h.identification = 0;
    let quote = &orig.ip_packet()[..orig.ihl_bytes() + 8];
    let mut out = Vec::new();
    PacketBuilder::ethernet2(src_mac, dst_mac)
        .ip(IpHeaders::Ipv4(h, Default::default()))
        .icmpv4(Icmpv4Type::DestinationUnreachable(
            DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: mtu },
        ))
        .write(&mut out, quote)
        .expect("write ICMP");
    out
}

// ---------------------------------------------------------------------------------------
// Independent verification of outputs
// ---------------------------------------------------------------------------------------

/// Parses `frame` with etherparse and recomputes every checksum in it (and in an IPIP inner
/// packet).
fn assert_valid(frame: &[u8], what: &str) {
    let p = SlicedPacket::from_ethernet(frame)
        .unwrap_or_else(|e| panic!("{what}: etherparse rejects the output: {e:?}"));
    assert_valid_net(&p, what);
}

fn assert_valid_net(p: &SlicedPacket, what: &str) {
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!("{what}: not IPv4");
    };
    let h = ip.header().to_header();
    assert_eq!(
        h.header_checksum,
        h.calc_header_checksum(),
        "{what}: IPv4 header checksum"
    );
    match &p.transport {
        Some(TransportSlice::Tcp(t)) => assert_eq!(
            t.checksum(),
            t.calc_checksum_ipv4(h.source, h.destination).unwrap(),
            "{what}: TCP checksum"
        ),
        Some(TransportSlice::Udp(u)) => {
            if u.checksum() != 0 {
                let want = u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap();
                assert_eq!(u.checksum(), want, "{what}: UDP checksum");
            }
        }
        Some(TransportSlice::Icmpv4(m)) => {
            let want = Icmpv4Header::with_checksum(m.icmp_type(), m.payload()).checksum;
            assert_eq!(m.checksum(), want, "{what}: ICMP checksum");
        }
        None if h.protocol == IpNumber::IPV4 => {
            let inner = SlicedPacket::from_ip(ip.payload().payload)
                .unwrap_or_else(|e| panic!("{what}: inner packet: {e:?}"));
            assert_valid_net(&inner, &format!("{what} (inner)"));
        }
        other => panic!("{what}: unexpected transport {other:?}"),
    }
}

/// Byte-exact comparison with a readable failure.
///
/// One field is free: the outer identification of an IPIP packet with DF clear, which must
/// vary between packets (RFC 6864 4.1, tested in `tun_outer_id_varies_without_df`). It is
/// taken from `got`, and the expected outer checksum recomputed with etherparse.
fn assert_frame_eq(got: &[u8], want: &[u8], what: &str) {
    let mut want = want.to_vec();
    let ipip_df_clear = want.len() >= 34
        && got.len() >= 34
        && want[12..14] == [0x08, 0x00]
        && want[23] == 4
        && want[20] & 0x40 == 0;
    if ipip_df_clear {
        want[18..20].copy_from_slice(&got[18..20]);
        let (mut h, _) = Ipv4Header::from_slice(&want[14..]).unwrap();
        h.header_checksum = h.calc_header_checksum();
        let hb = h.to_bytes();
        want[14..14 + hb.len()].copy_from_slice(&hb);
    }
    let want = &want[..];
    if got != want {
        let first = got.iter().zip(want).position(|(a, b)| a != b);
        panic!(
            "{what}: output differs (len {} vs expected {}, first difference at byte {:?})\n got: {:02x?}\nwant: {:02x?}",
            got.len(),
            want.len(),
            first,
            got,
            want
        );
    }
}

// ---------------------------------------------------------------------------------------
// Table 1: the rewrites of xmit.rs, called directly
// ---------------------------------------------------------------------------------------

enum Op {
    Macs {
        dst: [u8; 6],
        src: [u8; 6],
    },
    NatIn(Ipv4Addr, u16),
    NatOut(Ipv4Addr, u16),
    Tun {
        src: Ipv4Addr,
        dst: Ipv4Addr,
    },
    FragNeeded {
        from: Ipv4Addr,
        mac: [u8; 6],
        mtu: u16,
    },
    /// `xmit::tcp_reset` from this MAC.
    Reset([u8; 6]),
}

struct XmitCase {
    name: &'static str,
    input: Vec<u8>,
    /// The buffer the frame sits in; 0 = a whole UMEM frame (`BUF_LEN`).
    buf_len: usize,
    op: Op,
    /// `None`: the function must refuse (no room in the buffer).
    expected: Option<Vec<u8>>,
}

fn xmit_cases() -> Vec<XmitCase> {
    let syn = request(NAT_VIP, tcp(SYN));
    let data = Pkt {
        payload: b"GET / HTTP/1.0\r\n\r\n!".to_vec(), // odd length
        ..request(NAT_VIP, tcp(ACK | PSH))
    };
    let with_opts = Pkt {
        options: vec![0x94, 0x04, 0, 0, 1, 1, 1, 0], // router alert, NOP, NOP, NOP, EOL
        ..data.clone()
    };
    let udp = Pkt {
        payload: b"query".to_vec(),
        ..request(NAT_VIP, L4::Udp)
    };
    let udp_none = Pkt {
        l4: L4::UdpNoCsum,
        ..udp.clone()
    };
    let udp_min = Pkt {
        payload: b"hi".to_vec(),
        frame_len: 60,
        ..request(NAT_VIP, L4::Udp)
    };
    let nat_in = |p: &Pkt| p.with_dst(NAT_RIP, NAT_RPORT);
    let udp_zero_in = udp_checksum_zero_after(
        &Pkt {
            payload: b"ab".to_vec(),
            ..udp.clone()
        },
        nat_in,
    );

    let reply = nat_reply(tcp(SYN | ACK));
    let reply_data = Pkt {
        payload: b"HTTP/1.0 200 OK\r\n\r\n".to_vec(),
        ..nat_reply(tcp(ACK | PSH))
    };
    let udp_reply = Pkt {
        payload: b"answer".to_vec(),
        ..nat_reply(L4::Udp)
    };
    let udp_reply_none = Pkt {
        l4: L4::UdpNoCsum,
        ..udp_reply.clone()
    };
    let nat_out = |p: &Pkt| p.with_src(NAT_VIP, VPORT);
    let udp_zero_out = udp_checksum_zero_after(&udp_reply, nat_out);

    let tun_syn = Pkt {
        tos: 0xb8, // DSCP EF
        ..request(TUN_VIP, tcp(SYN))
    };
    let tun_udp_min = Pkt {
        tos: 0x02, // ECT(0)
        df: false,
        payload: b"hi".to_vec(),
        frame_len: 60,
        ..request(TUN_VIP, L4::Udp)
    };
    let tun_opts = Pkt {
        options: vec![1, 1, 1, 0],
        ..request(TUN_VIP, tcp(ACK))
    };
    // 14 + 20 + 8 + 2 = 44 bytes of frame, padded to 64: exactly the room IPIP needs.
    let tun_fit = Pkt {
        payload: b"hi".to_vec(),
        frame_len: 64,
        ..request(TUN_VIP, L4::Udp)
    };
    let icmp_udp = Pkt {
        payload: vec![7; 100],
        ..request(TUN_VIP, L4::Udp)
    };

    vec![
        XmitCase {
            name: "DR: set_macs rewrites both MACs and nothing else",
            input: data.frame(),
            buf_len: 0,
            op: Op::Macs {
                dst: DR_RS_MAC,
                src: INT_MAC,
            },
            expected: Some(data.with_macs(DR_RS_MAC, INT_MAC).frame()),
        },
        XmitCase {
            name: "DR: set_macs keeps Ethernet padding",
            input: udp_min.frame(),
            buf_len: 0,
            op: Op::Macs {
                dst: DR_RS_MAC,
                src: INT_MAC,
            },
            expected: Some(udp_min.with_macs(DR_RS_MAC, INT_MAC).frame()),
        },
        XmitCase {
            name: "NAT in: TCP SYN to VIP:80 becomes RIP:8080",
            input: syn.frame(),
            buf_len: 0,
            op: Op::NatIn(NAT_RIP, NAT_RPORT),
            expected: Some(nat_in(&syn).frame()),
        },
        XmitCase {
            name: "NAT in: TCP data, odd payload length",
            input: data.frame(),
            buf_len: 0,
            op: Op::NatIn(NAT_RIP, NAT_RPORT),
            expected: Some(nat_in(&data).frame()),
        },
        XmitCase {
            name: "NAT in: IPv4 options (IHL 7) move the L4 header",
            input: with_opts.frame(),
            buf_len: 0,
            op: Op::NatIn(NAT_RIP, NAT_RPORT),
            expected: Some(nat_in(&with_opts).frame()),
        },
        XmitCase {
            name: "NAT in: UDP",
            input: udp.frame(),
            buf_len: 0,
            op: Op::NatIn(NAT_RIP, NAT_RPORT),
            expected: Some(nat_in(&udp).frame()),
        },
        XmitCase {
            name: "NAT in: UDP without checksum stays without (0)",
            input: udp_none.frame(),
            buf_len: 0,
            op: Op::NatIn(NAT_RIP, NAT_RPORT),
            expected: Some(nat_in(&udp_none).frame()),
        },
        XmitCase {
            name: "NAT in: UDP checksum computing to 0 is sent as 0xffff",
            input: udp_zero_in.frame(),
            buf_len: 0,
            op: Op::NatIn(NAT_RIP, NAT_RPORT),
            expected: Some(nat_in(&udp_zero_in).frame()),
        },
        XmitCase {
            name: "NAT in: minimum frame, padding untouched",
            input: udp_min.frame(),
            buf_len: 0,
            op: Op::NatIn(NAT_RIP, NAT_RPORT),
            expected: Some(nat_in(&udp_min).frame()),
        },
        XmitCase {
            name: "NAT out: TCP SYN-ACK from RIP:8080 leaves from VIP:80",
            input: reply.frame(),
            buf_len: 0,
            op: Op::NatOut(NAT_VIP, VPORT),
            expected: Some(nat_out(&reply).frame()),
        },
        XmitCase {
            name: "NAT out: TCP data",
            input: reply_data.frame(),
            buf_len: 0,
            op: Op::NatOut(NAT_VIP, VPORT),
            expected: Some(nat_out(&reply_data).frame()),
        },
        XmitCase {
            name: "NAT out: UDP",
            input: udp_reply.frame(),
            buf_len: 0,
            op: Op::NatOut(NAT_VIP, VPORT),
            expected: Some(nat_out(&udp_reply).frame()),
        },
        XmitCase {
            name: "NAT out: UDP without checksum stays without (0)",
            input: udp_reply_none.frame(),
            buf_len: 0,
            op: Op::NatOut(NAT_VIP, VPORT),
            expected: Some(nat_out(&udp_reply_none).frame()),
        },
        XmitCase {
            name: "NAT out: UDP checksum computing to 0 is sent as 0xffff",
            input: udp_zero_out.frame(),
            buf_len: 0,
            op: Op::NatOut(NAT_VIP, VPORT),
            expected: Some(nat_out(&udp_zero_out).frame()),
        },
        XmitCase {
            name: "TUN: TCP SYN, DF and TOS (EF) copied to the outer header",
            input: tun_syn.frame(),
            buf_len: 0,
            op: Op::Tun {
                src: TUN_SRC,
                dst: TUN_RIP,
            },
            expected: Some(ipip(
                tun_syn.dst_mac,
                tun_syn.src_mac,
                TUN_SRC,
                TUN_RIP,
                &tun_syn,
            )),
        },
        XmitCase {
            name: "TUN: UDP, DF clear, ECN bits copied, Ethernet padding removed",
            input: tun_udp_min.frame(),
            buf_len: 0,
            op: Op::Tun {
                src: TUN_SRC,
                dst: TUN_RIP,
            },
            expected: Some(ipip(
                tun_udp_min.dst_mac,
                tun_udp_min.src_mac,
                TUN_SRC,
                TUN_RIP,
                &tun_udp_min,
            )),
        },
        XmitCase {
            name: "TUN: inner IPv4 options carried unchanged",
            input: tun_opts.frame(),
            buf_len: 0,
            op: Op::Tun {
                src: TUN_SRC,
                dst: TUN_RIP,
            },
            expected: Some(ipip(
                tun_opts.dst_mac,
                tun_opts.src_mac,
                TUN_SRC,
                TUN_RIP,
                &tun_opts,
            )),
        },
        XmitCase {
            name: "TUN: 20 bytes of padding are room enough (buffer = frame)",
            input: tun_fit.frame(),
            buf_len: 64,
            op: Op::Tun {
                src: TUN_SRC,
                dst: TUN_RIP,
            },
            expected: Some(ipip(
                tun_fit.dst_mac,
                tun_fit.src_mac,
                TUN_SRC,
                TUN_RIP,
                &tun_fit,
            )),
        },
        XmitCase {
            name: "TUN: no room in the buffer is refused",
            input: tun_syn.frame(),
            buf_len: 14 + 40 + 19,
            op: Op::Tun {
                src: TUN_SRC,
                dst: TUN_RIP,
            },
            expected: None,
        },
        XmitCase {
            name: "ICMP frag needed: TCP, quotes IP header + 8 bytes, to the sender's MAC",
            input: tun_syn.frame(),
            buf_len: 0,
            op: Op::FragNeeded {
                from: TUN_VIP,
                mac: EXT_MAC,
                mtu: 1380,
            },
            expected: Some(frag_needed(CLIENT_MAC, EXT_MAC, TUN_VIP, 1380, &tun_syn)),
        },
        XmitCase {
            name: "ICMP frag needed: IPv4 options are quoted too (24 + 8 bytes)",
            input: tun_opts.frame(),
            buf_len: 0,
            op: Op::FragNeeded {
                from: TUN_VIP,
                mac: EXT_MAC,
                mtu: 576,
            },
            expected: Some(frag_needed(CLIENT_MAC, EXT_MAC, TUN_VIP, 576, &tun_opts)),
        },
        XmitCase {
            name: "ICMP frag needed: UDP, payload beyond 8 bytes not quoted",
            input: icmp_udp.frame(),
            buf_len: 0,
            op: Op::FragNeeded {
                from: TUN_VIP,
                mac: INT_MAC,
                mtu: 1480,
            },
            expected: Some(frag_needed(CLIENT_MAC, INT_MAC, TUN_VIP, 1480, &icmp_udp)),
        },
        XmitCase {
            name: "ICMP frag needed: no room in the buffer is refused",
            input: tun_syn.frame(),
            buf_len: 54,
            op: Op::FragNeeded {
                from: TUN_VIP,
                mac: EXT_MAC,
                mtu: 1380,
            },
            expected: None,
        },
    ]
    .into_iter()
    .chain(reset_cases())
    .map(|mut c| {
        if c.buf_len == 0 {
            c.buf_len = BUF_LEN;
        }
        c
    })
    .collect()
}

/// `xmit::tcp_reset` (`--on-dead reassign`): the client's segment becomes the RST its
/// stack expects from a host without the connection.
fn reset_cases() -> Vec<XmitCase> {
    let data = Pkt {
        payload: b"GET / HTTP/1.0\r\n\r\n".to_vec(),
        ..request(DR_VIP, tcp(ACK | PSH))
    };
    let syn = request(DR_VIP, tcp(SYN));
    let no_ack = Pkt {
        payload: b"abc".to_vec(),
        ..request(DR_VIP, tcp(PSH))
    };
    let fin = Pkt {
        payload: b"xy".to_vec(),
        ..request(DR_VIP, tcp(FIN))
    };
    let marked = Pkt {
        tos: 0xb9, // DSCP EF, ECT(1)
        options: vec![1, 1, 1, 0],
        frame_len: 0,
        ..data.clone()
    };
    let wrapping = Pkt {
        l4: L4::Tcp {
            flags: SYN,
            seq: u32::MAX,
            ack: 0,
        },
        ..syn.clone()
    };
    let min = Pkt {
        frame_len: 60,
        ..request(NAT_VIP, tcp(ACK))
    };
    let case = |name, p: &Pkt, expected| XmitCase {
        name,
        input: p.frame(),
        buf_len: 0,
        op: Op::Reset(EXT_MAC),
        expected,
    };
    vec![
        case(
            "RST: segment with ACK gets SEQ=SEG.ACK, no ACK, from VIP:vport",
            &data,
            Some(tcp_rst(EXT_MAC, &data, 5000, None)),
        ),
        case(
            "RST: SYN gets SEQ=0 ACK=SEG.SEQ+1 (SYN counts)",
            &syn,
            Some(tcp_rst(EXT_MAC, &syn, 0, Some(1001))),
        ),
        case(
            "RST: data without ACK is acknowledged in full",
            &no_ack,
            Some(tcp_rst(EXT_MAC, &no_ack, 0, Some(1003))),
        ),
        case(
            "RST: FIN counts one more",
            &fin,
            Some(tcp_rst(EXT_MAC, &fin, 0, Some(1003))),
        ),
        case(
            "RST: DSCP kept, ECN cleared, IP options not copied",
            &marked,
            Some(tcp_rst(
                EXT_MAC,
                &Pkt {
                    tos: 0xb8,
                    ..marked.clone()
                },
                5000,
                None,
            )),
        ),
        case(
            "RST: the acknowledgment wraps around 2^32",
            &wrapping,
            Some(tcp_rst(EXT_MAC, &wrapping, 0, Some(0))),
        ),
        case(
            "RST: a padded minimum frame becomes a 54-byte RST",
            &min,
            Some(tcp_rst(EXT_MAC, &min, 5000, None)),
        ),
        case(
            "RST: a RST is never answered",
            &request(DR_VIP, tcp(RST | ACK)),
            None,
        ),
        case("RST: not for UDP", &request(DR_VIP, L4::Udp), None),
    ]
}

#[test]
fn xmit_table() {
    for c in xmit_cases() {
        let flow = parse_flow(&c.input).unwrap_or_else(|e| panic!("{}: input: {e:?}", c.name));
        let mut buf = vec![0u8; c.buf_len];
        buf[..c.input.len()].copy_from_slice(&c.input);
        let got = match c.op {
            Op::Macs { dst, src } => {
                xmit::set_macs(&mut buf, dst, src);
                Some(c.input.len())
            }
            Op::NatIn(a, p) => {
                xmit::nat_in(&mut buf, &flow, u32::from(a), p);
                Some(c.input.len())
            }
            Op::NatOut(a, p) => {
                xmit::nat_out(&mut buf, &flow, u32::from(a), p);
                Some(c.input.len())
            }
            Op::Tun { src, dst } => {
                xmit::tun_encap(&mut buf, &flow, u32::from(src), u32::from(dst))
            }
            Op::FragNeeded { from, mac, mtu } => {
                xmit::icmp_frag_needed(&mut buf, &flow, u32::from(from), mac, mtu)
            }
            Op::Reset(mac) => xmit::tcp_reset(&mut buf, &flow, mac),
        };
        match (got, &c.expected) {
            (Some(len), Some(want)) => {
                assert_frame_eq(&buf[..len], want, c.name);
                assert_valid(&buf[..len], c.name);
            }
            (None, None) => {}
            (got, want) => panic!(
                "{}: returned {got:?}, expected {:?}",
                c.name,
                want.as_ref().map(|w| w.len())
            ),
        }
    }
}

#[test]
fn the_expectations_themselves_are_valid() {
    for c in xmit_cases() {
        assert_valid(&c.input, c.name);
        if let Some(want) = &c.expected {
            assert_valid(want, c.name);
        }
    }
}

/// RFC 6040 section 4.1 normal mode (Linux `INET_ECN_encapsulate`): outer ECN = inner,
/// except CE (11) becomes ECT(0) (10); DSCP copied.
#[test]
fn ecn_encapsulation_table() {
    for (inner, outer) in [
        (0x00, 0x00), // Not-ECT
        (0x01, 0x01), // ECT(1)
        (0x02, 0x02), // ECT(0)
        (0x03, 0x02), // CE -> ECT(0)
        (0xb8, 0xb8), // EF, Not-ECT
        (0xbb, 0xba), // EF, CE
    ] {
        assert_eq!(xmit::ecn_encapsulate(inner), outer, "TOS {inner:#04x}");
    }
}

#[test]
fn dont_fragment_reads_the_df_bit() {
    for df in [false, true] {
        let p = Pkt {
            df,
            ..request(TUN_VIP, tcp(SYN))
        };
        let f = p.frame();
        assert_eq!(xmit::dont_fragment(&f, &parse_flow(&f).unwrap()), df);
    }
}

// ---------------------------------------------------------------------------------------
// Table 2: Forwarder::process end to end
// ---------------------------------------------------------------------------------------

enum Expect {
    Tx(u8, Vec<u8>),
    Drop(DropReason),
}

struct Step {
    name: &'static str,
    in_port: u8,
    input: Vec<u8>,
    expect: Expect,
}

fn step(name: &'static str, in_port: u8, input: &Pkt, expect: Expect) -> Step {
    Step {
        name,
        in_port,
        input: input.frame(),
        expect,
    }
}

/// Runs the steps in order through one forwarder built by `forward_fixture`, each frame in
/// its own 2 KiB buffer as a worker would.
fn run_steps(steps: Vec<Step>) -> xvs::forward::FwdCounters {
    let (mut fwd, snap) = forward_fixture();
    for s in steps {
        let mut buf = vec![0u8; BUF_LEN];
        buf[..s.input.len()].copy_from_slice(&s.input);
        let mut len = s.input.len();
        let v = fwd.process(&mut buf, &mut len, s.in_port, &snap, 1_000);
        match s.expect {
            Expect::Tx(port, want) => {
                assert_eq!(v, Verdict::Tx(port), "{}", s.name);
                assert_frame_eq(&buf[..len], &want, s.name);
                assert_valid(&buf[..len], s.name);
            }
            Expect::Drop(r) => {
                assert_eq!(v, Verdict::Drop(r), "{}", s.name);
                assert_eq!(
                    len,
                    s.input.len(),
                    "{}: dropped frame changed length",
                    s.name
                );
                assert_frame_eq(&buf[..len], &s.input, s.name);
            }
        }
    }
    fwd.counters
}

#[test]
fn forward_dr() {
    let syn = request(DR_VIP, tcp(SYN));
    let data = Pkt {
        payload: b"GET / HTTP/1.0\r\n\r\n".to_vec(),
        ..request(DR_VIP, tcp(ACK | PSH))
    };
    let udp_min = Pkt {
        payload: b"hi".to_vec(),
        frame_len: 60,
        ..request(DR_VIP, L4::Udp)
    };
    let other_port = Pkt {
        sport: CPORT + 1,
        ..request(DR_VIP, tcp(SYN)).with_dst(DR_VIP, 443)
    };
    let to_rs = |p: &Pkt| p.hop().with_macs(DR_RS_MAC, INT_MAC).frame();
    run_steps(vec![
        step(
            "DR: SYN goes to the real server's MAC, IP packet untouched",
            0,
            &syn,
            Expect::Tx(1, to_rs(&syn)),
        ),
        step(
            "DR: data follows the connection",
            0,
            &data,
            Expect::Tx(1, to_rs(&data)),
        ),
        step(
            "DR: UDP minimum frame keeps its padding",
            0,
            &udp_min,
            Expect::Tx(1, to_rs(&udp_min)),
        ),
        step(
            "DR: all-ports service (port 0) takes VIP:443",
            0,
            &other_port,
            Expect::Tx(1, to_rs(&other_port)),
        ),
    ]);
}

#[test]
fn forward_nat_tcp() {
    let syn = request(NAT_VIP, tcp(SYN));
    let syn_ack = nat_reply(tcp(SYN | ACK));
    let data = Pkt {
        payload: b"GET / HTTP/1.0\r\n\r\n!".to_vec(),
        ..request(NAT_VIP, tcp(ACK | PSH))
    };
    let reply_data = Pkt {
        payload: b"HTTP/1.0 200 OK\r\n\r\n".to_vec(),
        ..nat_reply(tcp(ACK | PSH))
    };
    let stray = Pkt {
        sport: CPORT + 1,
        ..request(NAT_VIP, tcp(ACK))
    };
    let stray_reply = Pkt {
        dport: CPORT + 2,
        ..nat_reply(tcp(ACK))
    };
    // Requests: VIP:80 -> RIP:8080, to the real server's MAC out of the internal port.
    let to_rs = |p: &Pkt| {
        p.with_dst(NAT_RIP, NAT_RPORT)
            .hop()
            .with_macs(NAT_RS_MAC, INT_MAC)
            .frame()
    };
    // Replies: RIP:8080 -> VIP:80 source, back to the client's MAC out of the port the
    // request came in on (external), whichever port the reply arrived on.
    let to_client = |p: &Pkt| {
        p.with_src(NAT_VIP, VPORT)
            .hop()
            .with_macs(CLIENT_MAC, EXT_MAC)
            .frame()
    };
    run_steps(vec![
        step("NAT: SYN", 0, &syn, Expect::Tx(1, to_rs(&syn))),
        step(
            "NAT: SYN-ACK from the real server",
            1,
            &syn_ack,
            Expect::Tx(0, to_client(&syn_ack)),
        ),
        step("NAT: request data", 0, &data, Expect::Tx(1, to_rs(&data))),
        step(
            "NAT: reply data",
            1,
            &reply_data,
            Expect::Tx(0, to_client(&reply_data)),
        ),
        step(
            "NAT: ACK of an unknown connection",
            0,
            &stray,
            Expect::Drop(DropReason::NoConn),
        ),
        step(
            "NAT: reply of an unknown connection",
            1,
            &stray_reply,
            Expect::Drop(DropReason::NoService),
        ),
    ]);
}

#[test]
fn forward_nat_udp() {
    let udp = Pkt {
        payload: b"query".to_vec(),
        ..request(NAT_VIP, L4::Udp)
    };
    let reply = Pkt {
        payload: b"answer".to_vec(),
        ..nat_reply(L4::Udp)
    };
    let none = Pkt {
        sport: CPORT + 1,
        l4: L4::UdpNoCsum,
        ..udp.clone()
    };
    let none_reply = Pkt {
        dport: CPORT + 1,
        l4: L4::UdpNoCsum,
        ..reply.clone()
    };
    let nat_in = |p: &Pkt| p.with_dst(NAT_RIP, NAT_RPORT);
    let nat_out = |p: &Pkt| p.with_src(NAT_VIP, VPORT);
    let zero = udp_checksum_zero_after(
        &Pkt {
            sport: CPORT + 2,
            payload: b"ab".to_vec(),
            ..udp.clone()
        },
        nat_in,
    );
    let zero_reply = udp_checksum_zero_after(
        &Pkt {
            dport: CPORT + 2,
            ..reply.clone()
        },
        nat_out,
    );
    let to_rs = |p: &Pkt| nat_in(p).hop().with_macs(NAT_RS_MAC, INT_MAC).frame();
    let to_client = |p: &Pkt| nat_out(p).hop().with_macs(CLIENT_MAC, EXT_MAC).frame();
    run_steps(vec![
        step("NAT UDP: request", 0, &udp, Expect::Tx(1, to_rs(&udp))),
        step(
            "NAT UDP: reply",
            1,
            &reply,
            Expect::Tx(0, to_client(&reply)),
        ),
        step(
            "NAT UDP: request without checksum",
            0,
            &none,
            Expect::Tx(1, to_rs(&none)),
        ),
        step(
            "NAT UDP: reply without checksum",
            1,
            &none_reply,
            Expect::Tx(0, to_client(&none_reply)),
        ),
        step(
            "NAT UDP: request whose checksum computes to 0 gets 0xffff",
            0,
            &zero,
            Expect::Tx(1, to_rs(&zero)),
        ),
        step(
            "NAT UDP: reply whose checksum computes to 0 gets 0xffff",
            1,
            &zero_reply,
            Expect::Tx(0, to_client(&zero_reply)),
        ),
    ]);
}

/// A request to the TUN service whose IP datagram is exactly `ip_len` bytes.
fn tun_sized(l4: L4, sport: u16, df: bool, ip_len: usize) -> Pkt {
    let l4_len = if matches!(l4, L4::Tcp { .. }) { 20 } else { 8 };
    Pkt {
        sport,
        df,
        payload: vec![0x5a; ip_len - 20 - l4_len],
        ..request(TUN_VIP, l4)
    }
}

#[test]
fn forward_tun() {
    // The internal port's MTU is 1400: IPIP fits up to a 1380-byte inner datagram.
    assert_eq!(INT_MTU, 1400);
    let max = INT_MTU as usize - 20;
    let syn = Pkt {
        tos: 0x10,
        ..request(TUN_VIP, tcp(SYN))
    };
    let udp_min = Pkt {
        tos: 0x03, // CE
        df: false,
        payload: b"hi".to_vec(),
        frame_len: 60,
        sport: CPORT + 1,
        ..request(TUN_VIP, L4::Udp)
    };
    let fits = tun_sized(tcp(ACK), CPORT, true, max);
    let big_tcp = tun_sized(tcp(ACK), CPORT, true, max + 1);
    let big_udp = tun_sized(L4::Udp, CPORT + 2, true, INT_MTU as usize);
    let big_udp_int = tun_sized(L4::Udp, CPORT + 3, true, max + 1);
    let big_no_df = tun_sized(L4::Udp, CPORT + 4, false, max + 1);
    let encap = |p: &Pkt| ipip(TUN_RS_MAC, INT_MAC, TUN_SRC, TUN_RIP, &p.hop());
    let mtu = INT_MTU - 20;
    let counters = run_steps(vec![
        step(
            "TUN: SYN encapsulated in IPIP to the real server",
            0,
            &syn,
            Expect::Tx(1, encap(&syn)),
        ),
        step(
            "TUN: UDP minimum frame, DF clear, padding removed",
            0,
            &udp_min,
            Expect::Tx(1, encap(&udp_min)),
        ),
        step(
            "TUN: 1380-byte datagram is exactly the egress MTU once encapsulated",
            0,
            &fits,
            Expect::Tx(1, encap(&fits)),
        ),
        step(
            "TUN: 1381 bytes with DF: ICMP frag needed (MTU 1380) back out of the in-port",
            0,
            &big_tcp,
            Expect::Tx(
                0,
                frag_needed(CLIENT_MAC, EXT_MAC, TUN_VIP, mtu, &big_tcp.hop()),
            ),
        ),
        step(
            "TUN: new UDP flow too big with DF: ICMP frag needed",
            0,
            &big_udp,
            Expect::Tx(
                0,
                frag_needed(CLIENT_MAC, EXT_MAC, TUN_VIP, mtu, &big_udp.hop()),
            ),
        ),
        Step {
            name: "TUN: too big arriving on the internal port: ICMP leaves by it",
            in_port: 1,
            input: big_udp_int.with_macs(INT_MAC, CLIENT_MAC).frame(),
            expect: Expect::Tx(
                1,
                frag_needed(CLIENT_MAC, INT_MAC, TUN_VIP, mtu, &big_udp_int.hop()),
            ),
        },
        step(
            "TUN: too big without DF is dropped (xvs does not fragment)",
            0,
            &big_no_df,
            Expect::Drop(DropReason::TooBig),
        ),
    ]);
    assert_eq!(counters.icmp_frag_needed, 3);
    assert_eq!(counters.drops[DropReason::TooBig as usize], 1);
}

// ---------------------------------------------------------------------------------------
// Table 3: TTL and ICMP errors about connections, through Forwarder::process
// ---------------------------------------------------------------------------------------

const ROUTER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xaa];

/// The first `n` bytes of `p`'s IP datagram (an ICMP error's quote).
fn quote(p: &Pkt, n: usize) -> Vec<u8> {
    let ip = p.ip_packet();
    ip[..n.min(ip.len())].to_vec()
}

/// An ICMP error frame as Linux sends it (TOS 0xc0, DF clear, ID 0) with TTL `ttl`.
fn icmp_frame(
    macs: ([u8; 6], [u8; 6]),
    from: Ipv4Addr,
    to: Ipv4Addr,
    ttl: u8,
    t: Icmpv4Type,
    quote: &[u8],
) -> Vec<u8> {
    let (dst_mac, src_mac) = macs;
    let mut h = Ipv4Header::new(0, ttl, IpNumber::ICMP, from.octets(), to.octets()).unwrap();
    h.dscp = Ipv4Dscp::try_new(0xc0 >> 2).unwrap();
    h.dont_fragment = false;
    h.identification = 0;
    let mut out = Vec::new();
    PacketBuilder::ethernet2(src_mac, dst_mac)
        .ip(IpHeaders::Ipv4(h, Default::default()))
        .icmpv4(t)
        .write(&mut out, quote)
        .expect("write ICMP");
    out
}

/// `frame`'s IP datagram inside IPIP as `ip_vs_tunnel_xmit` sends it (TTL, TOS and DF
/// copied; the ICMP errors here have DF clear, so the outer ID is free).
fn ipip_of(macs: ([u8; 6], [u8; 6]), src: Ipv4Addr, dst: Ipv4Addr, frame: &[u8]) -> Vec<u8> {
    let inner = &frame[14..];
    let mut h = Ipv4Header::new(0, inner[8], IpNumber::IPV4, src.octets(), dst.octets()).unwrap();
    h.dscp = Ipv4Dscp::try_new(inner[1] >> 2).unwrap();
    h.ecn = Ipv4Ecn::try_new(inner[1] & 3).unwrap();
    h.dont_fragment = inner[6] & 0x40 != 0;
    let mut out = Vec::new();
    PacketBuilder::ethernet2(macs.1, macs.0)
        .ip(IpHeaders::Ipv4(h, Default::default()))
        .write(&mut out, IpNumber::IPV4, inner)
        .expect("write IPIP");
    out
}

fn frag(mtu: u16) -> Icmpv4Type {
    Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
        next_hop_mtu: mtu,
    })
}

/// ICMP time exceeded in transit for the sender of `orig`, from `from`, quoting the IP
/// header and 8 bytes (Linux's layout, as `frag_needed`).
fn time_exceeded(macs: ([u8; 6], [u8; 6]), from: Ipv4Addr, orig: &Pkt) -> Vec<u8> {
    icmp_frame(
        macs,
        from,
        orig.src,
        64,
        Icmpv4Type::TimeExceeded(etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit),
        &quote(orig, orig.ihl_bytes() + 8),
    )
}

fn raw(name: &'static str, in_port: u8, input: Vec<u8>, expect: Expect) -> Step {
    Step {
        name,
        in_port,
        input,
        expect,
    }
}

#[test]
fn forward_ttl() {
    let dr = Pkt {
        ttl: 1,
        ..request(DR_VIP, tcp(SYN))
    };
    let dr0 = Pkt {
        ttl: 0,
        sport: CPORT + 1,
        ..dr.clone()
    };
    let dr2 = Pkt {
        ttl: 2,
        sport: CPORT + 2,
        ..dr.clone()
    };
    let nat = request(NAT_VIP, tcp(SYN));
    let nat_reply1 = Pkt {
        ttl: 1,
        ..nat_reply(tcp(SYN | ACK))
    };
    let tun = Pkt {
        ttl: 1,
        ..request(TUN_VIP, L4::Udp)
    };
    let nat_big =
        tun_sized(tcp(SYN), CPORT + 3, true, INT_MTU as usize + 1).with_dst(NAT_VIP, VPORT);
    let nat_big_nodf = Pkt {
        df: false,
        sport: CPORT + 4,
        ..nat_big.clone()
    };
    let to_client = (CLIENT_MAC, EXT_MAC);
    let c =
        run_steps(vec![
        step(
            "DR: TTL 1: time exceeded from the VIP back to the client",
            0,
            &dr,
            Expect::Tx(0, time_exceeded(to_client, DR_VIP, &dr)),
        ),
        step(
            "DR: TTL 0 likewise",
            0,
            &dr0,
            Expect::Tx(0, time_exceeded(to_client, DR_VIP, &dr0)),
        ),
        step(
            "DR: TTL 2 goes on with TTL 1",
            0,
            &dr2,
            Expect::Tx(1, dr2.hop().with_macs(DR_RS_MAC, INT_MAC).frame()),
        ),
        step(
            "NAT: request",
            0,
            &nat,
            Expect::Tx(
                1,
                nat.with_dst(NAT_RIP, NAT_RPORT)
                    .hop()
                    .with_macs(NAT_RS_MAC, INT_MAC)
                    .frame(),
            ),
        ),
        step(
            "NAT: reply with TTL 1: time exceeded to the real server, from the director's \
             address towards it, quoting the untranslated reply",
            1,
            &nat_reply1,
            Expect::Tx(1, time_exceeded((NAT_RS_MAC, INT_MAC), TUN_SRC, &nat_reply1)),
        ),
        step(
            "TUN: TTL 1: time exceeded, nothing tunnelled",
            0,
            &tun,
            Expect::Tx(0, time_exceeded(to_client, TUN_VIP, &tun)),
        ),
        step(
            "NAT: request bigger than the internal MTU with DF: frag needed (1400) from the VIP",
            0,
            &nat_big,
            Expect::Tx(
                0,
                frag_needed(CLIENT_MAC, EXT_MAC, NAT_VIP, INT_MTU, &nat_big.hop()),
            ),
        ),
        step(
            "NAT: the same without DF is dropped (xvs does not fragment)",
            0,
            &nat_big_nodf,
            Expect::Drop(DropReason::TooBig),
        ),
    ]);
    assert_eq!(c.icmp_time_exceeded, 4);
    assert_eq!(c.icmp_frag_needed, 1);
}

/// "Fragmentation needed" (MTU 1280) from a router on the client's side about a DR (or TUN)
/// real server's reply, as it reaches the director, and as the director relays it to the
/// real server: unchanged but the TTL (TUN: inside IPIP).
fn client_side_frag_needed(answer: &Pkt, tun: bool) -> (Vec<u8>, Vec<u8>) {
    let (vip, rs_mac) = if tun {
        (TUN_VIP, TUN_RS_MAC)
    } else {
        (DR_VIP, DR_RS_MAC)
    };
    let err = icmp_frame(
        (EXT_MAC, ROUTER_MAC),
        ROUTER,
        vip,
        64,
        frag(1280),
        &quote(answer, 28),
    );
    let relayed = icmp_frame(
        (rs_mac, INT_MAC),
        ROUTER,
        vip,
        63,
        frag(1280),
        &quote(answer, 28),
    );
    let out = if tun {
        ipip_of((TUN_RS_MAC, INT_MAC), TUN_SRC, TUN_RIP, &relayed)
    } else {
        relayed
    };
    (err, out)
}

/// "Fragmentation needed" (MTU 1300) from a router on the tunnel's path about the IPIP
/// packet carrying `tun_syn`, and the error the director sends the client instead
/// (MTU 1280, from the VIP, about the client's own packet).
fn tunnel_path_frag_needed(tun_syn: &Pkt) -> (Vec<u8>, Vec<u8>) {
    let tunnelled = ipip(TUN_RS_MAC, INT_MAC, TUN_SRC, TUN_RIP, &tun_syn.hop());
    let err = icmp_frame(
        (INT_MAC, ROUTER_MAC),
        ROUTER,
        TUN_SRC,
        64,
        frag(1300),
        &tunnelled[14..14 + 20 + 28],
    );
    (
        err,
        frag_needed(CLIENT_MAC, EXT_MAC, TUN_VIP, 1280, &tun_syn.hop()),
    )
}

#[test]
fn forward_icmp_errors() {
    let dr_syn = request(DR_VIP, tcp(SYN));
    let nat_syn = request(NAT_VIP, tcp(SYN));
    // Another client port, so that it is a connection of its own.
    let nat_udp = Pkt {
        payload: b"query".to_vec(),
        sport: CPORT + 5,
        ..request(NAT_VIP, L4::Udp)
    };
    let tun_syn = request(TUN_VIP, tcp(SYN));
    // Replies as they left the real servers (DR/TUN) or the director (NAT) for the client.
    let dr_answer = swapped(&dr_syn);
    let nat_answer = Pkt {
        payload: b"HTTP/1.0 200 OK\r\n".to_vec(),
        ..swapped(&request(NAT_VIP, tcp(ACK)))
    };
    let tun_answer = swapped(&tun_syn);
    let from_client_side = (EXT_MAC, ROUTER_MAC);
    let port_unreach = Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::Port);
    let quench = Icmpv4Type::Unknown {
        type_u8: 4,
        code_u8: 0,
        bytes5to8: [0; 4],
    };

    // DR: an error from a router on the client's side about the real server's reply
    // (quoted VIP:80 -> CIP) arrives for the VIP: to the real server unchanged but the TTL.
    let (dr_err, dr_out) = client_side_frag_needed(&dr_answer, false);
    // NAT, client side: outer destination and quoted source become the real server's; the
    // quote here is long enough to hold the TCP checksum, which is updated too.
    let q = nat_answer.ip_packet().len();
    let nat_in_err = icmp_frame(
        from_client_side,
        ROUTER,
        NAT_VIP,
        64,
        frag(1280),
        &quote(&nat_answer, q),
    );
    let nat_in_out = icmp_frame(
        (NAT_RS_MAC, INT_MAC),
        ROUTER,
        NAT_RIP,
        63,
        frag(1280),
        &quote(&nat_answer.with_src(NAT_RIP, NAT_RPORT), q),
    );
    // NAT, server side: the real server's port unreachable about the request it got
    // (CIP -> RIP:8080, UDP, checksum quoted) goes to the client from the VIP, about VIP:80.
    let at_rs = nat_udp.with_dst(NAT_RIP, NAT_RPORT).hop();
    let nat_out_err = icmp_frame(
        (INT_MAC, NAT_RS_MAC),
        NAT_RIP,
        CIP,
        64,
        port_unreach.clone(),
        &quote(&at_rs, 60),
    );
    let nat_out_out = icmp_frame(
        (CLIENT_MAC, EXT_MAC),
        NAT_VIP,
        CIP,
        63,
        port_unreach,
        &quote(&nat_udp.hop(), 60),
    );
    // Source quench from a router behind the real servers: the source becomes the VIP as
    // well (ip_vs_nat_icmp rewrites it whoever sent the error).
    let quench_err = icmp_frame(
        (INT_MAC, ROUTER_MAC),
        ROUTER,
        CIP,
        64,
        quench.clone(),
        &quote(&at_rs, 28),
    );
    let quench_out = icmp_frame(
        (CLIENT_MAC, EXT_MAC),
        NAT_VIP,
        CIP,
        63,
        quench,
        &quote(&nat_udp.hop(), 28),
    );
    // TUN, client side: the error goes to the real server inside IPIP.
    let (tun_err, tun_out) = client_side_frag_needed(&tun_answer, true);
    // TUN, a router on the tunnel's path: frag needed (1300) about our IPIP packet; the
    // client hears frag needed (1280) about its own packet, from the VIP.
    let (path_err, path_out) = tunnel_path_frag_needed(&tun_syn);

    let unknown = icmp_frame(
        from_client_side,
        ROUTER,
        DR_VIP,
        64,
        frag(1280),
        &quote(&dr_answer.with_dst(CIP, CPORT + 9), 28),
    );
    let echo = icmp_frame(
        from_client_side,
        ROUTER,
        DR_VIP,
        64,
        Icmpv4Type::EchoRequest(etherparse::IcmpEchoHeader { id: 1, seq: 1 }),
        b"ping",
    );
    let param = icmp_frame(
        from_client_side,
        ROUTER,
        DR_VIP,
        64,
        Icmpv4Type::ParameterProblem(
            etherparse::icmpv4::ParameterProblemHeader::PointerIndicatesError(0),
        ),
        &quote(&dr_answer, 28),
    );
    let ttl1 = icmp_frame(
        from_client_side,
        ROUTER,
        DR_VIP,
        1,
        frag(1280),
        &quote(&dr_answer, 28),
    );
    let mut bad_csum = dr_err.clone();
    bad_csum[14 + 20 + 7] ^= 0x55;

    let c = run_steps(vec![
        step(
            "DR: SYN",
            0,
            &dr_syn,
            Expect::Tx(1, dr_syn.hop().with_macs(DR_RS_MAC, INT_MAC).frame()),
        ),
        raw(
            "DR: error about the reply, to the real server",
            0,
            dr_err,
            Expect::Tx(1, dr_out),
        ),
        step(
            "NAT: SYN",
            0,
            &nat_syn,
            Expect::Tx(
                1,
                nat_syn
                    .with_dst(NAT_RIP, NAT_RPORT)
                    .hop()
                    .with_macs(NAT_RS_MAC, INT_MAC)
                    .frame(),
            ),
        ),
        raw(
            "NAT: client-side error, translated to the real server",
            0,
            nat_in_err,
            Expect::Tx(1, nat_in_out),
        ),
        step(
            "NAT: UDP request",
            0,
            &nat_udp,
            Expect::Tx(1, at_rs.with_macs(NAT_RS_MAC, INT_MAC).frame()),
        ),
        raw(
            "NAT: real server's port unreachable, translated to the client",
            1,
            nat_out_err,
            Expect::Tx(0, nat_out_out),
        ),
        raw(
            "NAT: source quench from behind the servers, from the VIP",
            1,
            quench_err,
            Expect::Tx(0, quench_out),
        ),
        step(
            "TUN: SYN",
            0,
            &tun_syn,
            Expect::Tx(
                1,
                ipip(TUN_RS_MAC, INT_MAC, TUN_SRC, TUN_RIP, &tun_syn.hop()),
            ),
        ),
        raw(
            "TUN: client-side error, IPIP to the real server",
            0,
            tun_err,
            Expect::Tx(1, tun_out),
        ),
        raw(
            "TUN: path error about our IPIP, MTU - 20 to the client",
            1,
            path_err,
            Expect::Tx(0, path_out),
        ),
        raw(
            "no connection",
            0,
            unknown,
            Expect::Drop(DropReason::NoConn),
        ),
        raw(
            "echo request: not relayed",
            0,
            echo,
            Expect::Drop(DropReason::NotIpv4L4),
        ),
        raw(
            "parameter problem: not relayed (IPVS neither)",
            0,
            param,
            Expect::Drop(DropReason::NotIpv4L4),
        ),
        raw(
            "error with TTL 1: dropped",
            0,
            ttl1,
            Expect::Drop(DropReason::TtlExpired),
        ),
        raw(
            "bad ICMP checksum",
            0,
            bad_csum,
            Expect::Drop(DropReason::Malformed),
        ),
    ]);
    assert_eq!(c.icmp_relayed, 6);
}

/// One frame through `f` in its own 2 KiB buffer: the verdict and the frame after it.
fn through(f: &mut Forwarder, snap: &Snapshot, frame: &[u8], in_port: u8) -> (Verdict, Vec<u8>) {
    let mut buf = vec![0u8; BUF_LEN];
    buf[..frame.len()].copy_from_slice(frame);
    let mut len = frame.len();
    let v = f.process(&mut buf, &mut len, in_port, snap, 1_000);
    (v, buf[..len].to_vec())
}

/// What the worker that gets a handed-off copy does: write it into a frame of its own and
/// run it through `process_handoff`.
fn handed(f: &mut Forwarder, frame: &[u8], last: bool) -> (Verdict, Vec<u8>) {
    let mut buf = vec![0u8; BUF_LEN];
    buf[..frame.len()].copy_from_slice(frame);
    let mut len = frame.len();
    let v = f.process_handoff(&mut buf, &mut len, 0, last, &Snapshot::default(), 1_000);
    (v, buf[..len].to_vec())
}

/// Two forwarders standing for two workers (one NAT table, a DR/TUN table each): the
/// connections are made on worker B, their ICMP errors arrive on worker A, miss there, are
/// handed off unchanged, and B relays them exactly as it relays a local hit.
#[test]
fn icmp_errors_about_another_workers_connections_are_handed_off() {
    let (mut a, snap) = forward_fixture();
    let (mut b, _) = forward_fixture();
    b.worker_id = 1;
    b.nat = a.nat.clone();
    a.handoff = true;
    b.handoff = true;

    let dr_syn = request(DR_VIP, tcp(SYN));
    let tun_syn = request(TUN_VIP, tcp(SYN));
    let nat_syn = request(NAT_VIP, tcp(SYN));
    for syn in [&dr_syn, &tun_syn, &nat_syn] {
        assert_eq!(through(&mut b, &snap, &syn.frame(), 0).0, Verdict::Tx(1));
    }
    let from_client_side = (EXT_MAC, ROUTER_MAC);
    let dr_answer = swapped(&dr_syn);
    let tun_answer = swapped(&tun_syn);
    let (dr_err, dr_out) = client_side_frag_needed(&dr_answer, false);
    let (tun_err, tun_out) = client_side_frag_needed(&tun_answer, true);
    let (path_err, path_out) = tunnel_path_frag_needed(&tun_syn);
    let unknown = icmp_frame(
        from_client_side,
        ROUTER,
        DR_VIP,
        64,
        frag(1280),
        &quote(&dr_answer.with_dst(CIP, CPORT + 9), 28),
    );

    for (name, err, port_in, want_port, want) in [
        ("DR: MACs of the real server", &dr_err, 0, 1, &dr_out),
        ("TUN: IPIP to the real server", &tun_err, 0, 1, &tun_out),
        ("TUN: path error, to the client", &path_err, 1, 0, &path_out),
    ] {
        // Worker A holds no such connection: the frame is handed off as it arrived.
        let (v, out) = through(&mut a, &snap, err, port_in);
        assert_eq!(v, Verdict::Handoff, "{name}");
        assert_frame_eq(&out, err, name);
        // Worker B (the last to ask, with two workers) relays it.
        let (v, out) = handed(&mut b, &out, true);
        assert_eq!(v, Verdict::Tx(want_port), "{name}");
        assert_frame_eq(&out, want, name);
        assert_valid(&out, name);
    }
    // About nobody's connection: B passes it on while others remain, else drops it, once.
    assert_eq!(through(&mut a, &snap, &unknown, 0).0, Verdict::Handoff);
    assert_eq!(handed(&mut b, &unknown, false).0, Verdict::Handoff);
    assert_eq!(
        handed(&mut b, &unknown, true).0,
        Verdict::Drop(DropReason::NoConn)
    );
    // NAT connections are shared: an error about one made on B is relayed by A itself.
    let nat_answer = Pkt {
        payload: b"HTTP/1.0 200 OK\r\n".to_vec(),
        ..swapped(&request(NAT_VIP, tcp(ACK)))
    };
    let nat_err = icmp_frame(
        from_client_side,
        ROUTER,
        NAT_VIP,
        64,
        frag(1280),
        &quote(&nat_answer, 28),
    );
    assert_eq!(through(&mut a, &snap, &nat_err, 0).0, Verdict::Tx(1));

    assert_eq!((a.counters.icmp_handoff, a.counters.icmp_relayed), (4, 1));
    assert_eq!(
        a.counters.drops.iter().sum::<u64>(),
        0,
        "a handoff is no drop"
    );
    assert_eq!(
        (b.counters.icmp_handoff_relayed, b.counters.icmp_relayed),
        (3, 3)
    );
    assert_eq!(b.counters.drops[DropReason::NoConn as usize], 1);
    assert_eq!(
        b.counters.icmp_handoff, 0,
        "only the first worker counts the handoff"
    );
    // One worker alone has nobody to ask: the miss is a drop there.
    a.handoff = false;
    assert_eq!(
        through(&mut a, &snap, &unknown, 0).0,
        Verdict::Drop(DropReason::NoConn)
    );
}

// ---------------------------------------------------------------------------------------
// Property tests
// ---------------------------------------------------------------------------------------

fn arb_addr() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

fn arb_l4() -> impl Strategy<Value = L4> {
    prop_oneof![
        (any::<u8>(), any::<u32>(), any::<u32>()).prop_map(|(f, seq, ack)| L4::Tcp {
            flags: f & (SYN | ACK | PSH | 0x01),
            seq,
            ack,
        }),
        Just(L4::Udp),
        Just(L4::UdpNoCsum),
    ]
}

prop_compose! {
    fn arb_pkt()(src in arb_addr(), dst in arb_addr(), sport in any::<u16>(),
                 dport in any::<u16>(), l4 in arb_l4(),
                 payload in proptest::collection::vec(any::<u8>(), 0..80),
                 tos in any::<u8>(), df in any::<bool>(), ttl in any::<u8>(), id in any::<u16>(),
                 opt_words in 0usize..3, pad in 0usize..30) -> Pkt {
        let mut p = Pkt {
            src, dst, sport, dport, l4, payload, tos, df, ttl, id,
            options: [1, 1, 1, 0].repeat(opt_words),
            ..request(NAT_VIP, l4)
        };
        p.frame_len = p.frame().len() + pad;
        p
    }
}

/// The server's view of a frame: addresses, ports and MACs swapped.
fn swapped(p: &Pkt) -> Pkt {
    Pkt {
        src_mac: p.dst_mac,
        dst_mac: p.src_mac,
        src: p.dst,
        dst: p.src,
        sport: p.dport,
        dport: p.sport,
        ..p.clone()
    }
}

proptest! {
    /// nat_in's incremental checksums equal etherparse's full recomputation, byte for byte
    /// (UDP: 0 stays 0, a computed 0 is 0xffff).
    #[test]
    fn nat_in_equals_full_recomputation(p in arb_pkt(), rip in arb_addr(), rport in any::<u16>()) {
        let mut f = p.frame();
        let flow = parse_flow(&f).unwrap();
        xmit::nat_in(&mut f, &flow, u32::from(rip), rport);
        prop_assert_eq!(&f, &p.with_dst(rip, rport).frame());
        assert_valid(&f, "nat_in");
    }

    /// decrement_ttl's RFC 1624 update equals etherparse's full recomputation; TTL 1 and 0
    /// are refused and leave the frame as it was.
    #[test]
    fn decrement_ttl_equals_full_recomputation(p in arb_pkt()) {
        let mut f = p.frame();
        let ok = xmit::decrement_ttl(&mut f, 14);
        prop_assert_eq!(ok, p.ttl > 1);
        if ok {
            prop_assert_eq!(&f, &p.hop().frame());
            assert_valid(&f, "decrement_ttl");
        } else {
            prop_assert_eq!(&f, &p.frame());
        }
    }

    /// nat_out likewise.
    #[test]
    fn nat_out_equals_full_recomputation(p in arb_pkt(), vip in arb_addr(), vport in any::<u16>()) {
        let mut f = p.frame();
        let flow = parse_flow(&f).unwrap();
        xmit::nat_out(&mut f, &flow, u32::from(vip), vport);
        prop_assert_eq!(&f, &p.with_src(vip, vport).frame());
        assert_valid(&f, "nat_out");
    }

    /// nat_in is undone by the inverse rewrite: on the same frame (destination back to
    /// VIP:vport) the original bytes come back; on the server's reply, nat_out (source back
    /// to VIP:vport) gives exactly the reply the client would have had from VIP:vport.
    #[test]
    fn nat_in_then_inverse_restores(p in arb_pkt(), rip in arb_addr(), rport in any::<u16>()) {
        let orig = p.frame();
        let mut f = orig.clone();
        let flow = parse_flow(&f).unwrap();
        xmit::nat_in(&mut f, &flow, u32::from(rip), rport);
        let at_rs = parse_flow(&f).unwrap();

        let mut back = f.clone();
        xmit::nat_in(&mut back, &at_rs, u32::from(p.dst), p.dport);
        prop_assert_eq!(&back, &orig);

        let mut reply = swapped(&p.with_dst(rip, rport)).frame();
        let rflow = parse_flow(&reply).unwrap();
        xmit::nat_out(&mut reply, &rflow, u32::from(p.dst), p.dport);
        prop_assert_eq!(&reply, &swapped(&p).frame());
    }
}

// ---------------------------------------------------------------------------------------
// Regressions: bugs these tests found (fixed in src/)
// ---------------------------------------------------------------------------------------

/// A persistent all-ports (port 0) NAT service: the real server's port defaults to the
/// service port, 0 (cli/parse.rs), and IPVS then keeps the port the client asked for
/// (ip_vs_sched_persist: `dport = dst_port; if (dport == svc->port && dest->port) dport =
/// dest->port;`, and `dest->port ? dest->port : vport` in ip_vs_schedule).
#[test]
fn forward_nat_all_ports_keeps_the_client_port() {
    use std::sync::atomic::Ordering::Relaxed;
    use std::sync::Arc;
    use xvs::dest::DestRt;
    use xvs::model::{Forward, Protocol, ServiceKey};
    use xvs::service::{Persistence, ServiceRt};

    let vip = Ipv4Addr::new(10, 0, 0, 4);
    let (mut fwd, _) = forward_fixture();
    let key = ServiceKey {
        proto: Protocol::Tcp,
        addr: vip,
        port: 0,
    };
    let svc = Arc::new(ServiceRt::new(key, xvs::sched::by_name("rr").unwrap()));
    svc.has_nat.store(true, Relaxed);
    let d = Arc::new(DestRt::new(NAT_RIP, 0, Forward::Masq, 1));
    d.set_mac(Some(NAT_RS_MAC));
    d.egress.store(1, Relaxed);
    svc.set_dests(vec![d], None);
    svc.set_persistence(
        Some(Persistence {
            timeout_ms: 300_000,
            netmask: u32::MAX,
        }),
        16,
    );
    let mut snap = xvs::service::Snapshot::default();
    snap.insert(svc);

    let syn = request(vip, tcp(SYN)).with_dst(vip, 443);
    let mut buf = vec![0u8; BUF_LEN];
    let f = syn.frame();
    buf[..f.len()].copy_from_slice(&f);
    let mut len = f.len();
    assert_eq!(
        fwd.process(&mut buf, &mut len, 0, &snap, 1_000),
        Verdict::Tx(1)
    );
    let want = syn
        .with_dst(NAT_RIP, 443)
        .hop()
        .with_macs(NAT_RS_MAC, INT_MAC)
        .frame();
    assert_frame_eq(&buf[..len], &want, "port-0 NAT request keeps port 443");

    let syn_ack = Pkt {
        sport: 443,
        ..nat_reply(tcp(SYN | ACK))
    };
    let f = syn_ack.frame();
    buf[..f.len()].copy_from_slice(&f);
    let mut len = f.len();
    assert_eq!(
        fwd.process(&mut buf, &mut len, 1, &snap, 1_001),
        Verdict::Tx(0)
    );
    let want = syn_ack
        .with_src(vip, 443)
        .hop()
        .with_macs(CLIENT_MAC, EXT_MAC)
        .frame();
    assert_frame_eq(&buf[..len], &want, "port-0 NAT reply from VIP:443");
}

/// RFC 6864 section 4.1: the source of a non-atomic datagram (DF clear: routers may still
/// fragment it) must not repeat an identification within the reassembly lifetime for the
/// same (source, destination, protocol), or fragments of different packets can be
/// reassembled together at the real server. IPVS takes the outer ID from ip_select_ident.
#[test]
fn tun_outer_id_varies_without_df() {
    let mut ids = Vec::new();
    for sport in [1000u16, 1001] {
        let p = Pkt {
            df: false,
            sport,
            ..request(TUN_VIP, L4::Udp)
        };
        let f = p.frame();
        let flow = parse_flow(&f).unwrap();
        let mut buf = vec![0u8; BUF_LEN];
        buf[..f.len()].copy_from_slice(&f);
        let len = xmit::tun_encap(&mut buf, &flow, u32::from(TUN_SRC), u32::from(TUN_RIP)).unwrap();
        assert_valid(&buf[..len], "IPIP");
        ids.push(u16::from_be_bytes([buf[18], buf[19]]));
    }
    assert_ne!(
        ids[0], ids[1],
        "two DF-clear IPIP packets share outer ID {}",
        ids[0]
    );
}

// ---------------------------------------------------------------------------------------
// Table 3: connections of a removed or dead real server (`--on-dead`)
// ---------------------------------------------------------------------------------------

const DR2_RIP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 11);
const DR2_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 0x11];
const NAT2_RIP: Ipv4Addr = Ipv4Addr::new(192, 168, 80, 11);
const NAT2_MAC: [u8; 6] = [0x02, 0, 0, 0, 1, 0x21];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Probe {
    /// The client's next packet.
    Request,
    /// The NAT server's reply.
    Reply,
    /// The server is added back first (trash revival: same object, flag cleared, back in
    /// the list), then the client's next packet.
    ReviveThenRequest,
}

struct DeadRow {
    nat: bool,
    udp: bool,
    policy: xvs::kconf::OnDead,
    /// Removed from the service; else declared dead (weight 0) while configured.
    removed: bool,
    probes: Vec<(Probe, Expect)>,
}

/// The rows: every method x protocol x policy x (removed | dead), with what IPVS (or the
/// xvs policy) does with the next packets. The connection was made to server 1; server 2
/// is the live one.
fn dead_rows() -> Vec<DeadRow> {
    use xvs::kconf::OnDead::*;
    let mut rows = Vec::new();
    for nat in [false, true] {
        for udp in [false, true] {
            let f = DeadFrames::new(nat, udp);
            for policy in [Ipvs, Expire, Reassign] {
                for removed in [true, false] {
                    let drop = || Expect::Drop(DropReason::DestUnavailable);
                    // After the entry went: TCP data has no connection, UDP gets server 2.
                    let gone = || {
                        if udp {
                            Expect::Tx(1, f.to_d2(&f.next))
                        } else {
                            Expect::Drop(DropReason::NoConn)
                        }
                    };
                    let mut probes = match (policy, removed) {
                        // ip_vs_in: not IP_VS_DEST_F_AVAILABLE, silently dropped, the entry
                        // kept (and revived with its server).
                        (Ipvs, true) => vec![
                            (Probe::Request, drop()),
                            (Probe::ReviveThenRequest, Expect::Tx(1, f.to_d1(&f.next))),
                        ],
                        // Quiesced (weight 0): existing connections continue.
                        (Ipvs, false) => vec![(Probe::Request, Expect::Tx(1, f.to_d1(&f.next)))],
                        (Expire, _) => vec![(Probe::Request, drop()), (Probe::Request, gone())],
                        (Reassign, _) if udp => vec![
                            (Probe::Request, Expect::Tx(1, f.to_d2(&f.next))),
                            (Probe::Request, Expect::Tx(1, f.to_d2(&f.next))),
                        ],
                        (Reassign, _) => vec![
                            (Probe::Request, Expect::Tx(0, f.rst())),
                            (Probe::Request, gone()),
                        ],
                    };
                    rows.push(DeadRow {
                        nat,
                        udp,
                        policy,
                        removed,
                        probes: std::mem::take(&mut probes),
                    });
                    if nat {
                        // Replies: ip_vs_out does not look at the server (forwarded under
                        // the IPVS policy); expire and reassign end the entry, no RST.
                        let probes = match policy {
                            Ipvs => vec![(Probe::Reply, Expect::Tx(0, f.reply_to_client()))],
                            _ => vec![(Probe::Reply, drop()), (Probe::Request, gone())],
                        };
                        rows.push(DeadRow {
                            nat,
                            udp,
                            policy,
                            removed,
                            probes,
                        });
                    }
                }
            }
        }
    }
    rows
}

/// The frames of one method and protocol.
struct DeadFrames {
    nat: bool,
    first: Pkt,
    next: Pkt,
    reply: Pkt,
}

impl DeadFrames {
    fn new(nat: bool, udp: bool) -> Self {
        let vip = if nat { NAT_VIP } else { DR_VIP };
        let (first, next, reply) = if udp {
            (
                Pkt {
                    payload: b"q1".to_vec(),
                    ..request(vip, L4::Udp)
                },
                Pkt {
                    payload: b"q2".to_vec(),
                    ..request(vip, L4::Udp)
                },
                Pkt {
                    payload: b"a1".to_vec(),
                    ..nat_reply(L4::Udp)
                },
            )
        } else {
            (
                request(vip, tcp(SYN)),
                Pkt {
                    payload: b"GET / HTTP/1.0\r\n\r\n".to_vec(),
                    ..request(vip, tcp(ACK | PSH))
                },
                nat_reply(tcp(SYN | ACK)),
            )
        };
        DeadFrames {
            nat,
            first,
            next,
            reply,
        }
    }

    fn to(&self, p: &Pkt, rip: Ipv4Addr, mac: [u8; 6]) -> Vec<u8> {
        let p = if self.nat {
            p.with_dst(rip, NAT_RPORT)
        } else {
            p.clone()
        };
        p.hop().with_macs(mac, INT_MAC).frame()
    }

    fn to_d1(&self, p: &Pkt) -> Vec<u8> {
        let (rip, mac) = if self.nat {
            (NAT_RIP, NAT_RS_MAC)
        } else {
            (DR_RIP, DR_RS_MAC)
        };
        self.to(p, rip, mac)
    }

    fn to_d2(&self, p: &Pkt) -> Vec<u8> {
        let (rip, mac) = if self.nat {
            (NAT2_RIP, NAT2_MAC)
        } else {
            (DR2_RIP, DR2_MAC)
        };
        self.to(p, rip, mac)
    }

    fn rst(&self) -> Vec<u8> {
        // `next` carries ACK 5000: <SEQ=5000><CTL=RST>.
        tcp_rst(EXT_MAC, &self.next, 5000, None)
    }

    fn reply_to_client(&self) -> Vec<u8> {
        self.reply
            .with_src(NAT_VIP, VPORT)
            .hop()
            .with_macs(CLIENT_MAC, EXT_MAC)
            .frame()
    }
}

#[test]
fn forward_removed_or_dead_servers() {
    use std::sync::atomic::Ordering::Relaxed;
    use std::sync::Arc;
    use xvs::dest::DestRt;
    use xvs::model::Forward;
    use xvs::service::service_lookup_key;

    let rows = dead_rows();
    assert_eq!(rows.len(), 2 * 2 * 3 * 2 + 2 * 3 * 2);
    for row in rows {
        let what = format!(
            "{} {} {:?} {}",
            if row.nat { "NAT" } else { "DR" },
            if row.udp { "UDP" } else { "TCP" },
            row.policy,
            if row.removed { "removed" } else { "dead" }
        );
        let f = DeadFrames::new(row.nat, row.udp);
        let (mut fwd, snap) = forward_fixture();
        let vip = if row.nat { NAT_VIP } else { DR_VIP };
        let proto = if row.udp { 17 } else { 6 };
        let svc = snap.services[&service_lookup_key(u32::from(vip), VPORT, proto)].clone();
        let d1 = svc.dests()[0].clone();
        let (rip2, mac2, fwd2) = if row.nat {
            (NAT2_RIP, NAT2_MAC, Forward::Masq)
        } else {
            (DR2_RIP, DR2_MAC, Forward::Route)
        };
        let port2 = if row.nat { NAT_RPORT } else { VPORT };
        // Server 2 quiesced while the connection is made, so it goes to server 1.
        let d2 = Arc::new(DestRt::new(rip2, port2, fwd2, 0));
        d2.set_mac(Some(mac2));
        d2.egress.store(1, Relaxed);
        svc.set_dests(vec![d1.clone(), d2.clone()], None);
        let (v, out) = through(&mut fwd, &snap, &f.first.frame(), 0);
        assert_eq!(v, Verdict::Tx(1), "{what}: first packet");
        assert_frame_eq(&out, &f.to_d1(&f.first), &what);
        if row.nat && !row.udp {
            // Complete the handshake (the reply direction) so the probes see ESTABLISHED.
            let (v, _) = through(&mut fwd, &snap, &f.reply.frame(), 1);
            assert_eq!(v, Verdict::Tx(0), "{what}: SYN-ACK");
        }
        // What the daemon (removal) or the health checks (dead, weight 0) do.
        for d in [&d1, &d2] {
            d.set_on_dead(row.policy);
        }
        d2.weight.store(1, Relaxed);
        if row.removed {
            d1.set_removed(true);
            svc.set_dests(vec![d2.clone()], None);
        } else {
            d1.set_dead(true);
            d1.weight.store(0, Relaxed);
            svc.set_dests(vec![d1.clone(), d2.clone()], None);
        }
        let reply_row = row.probes[0].0 == Probe::Reply;
        for (i, (probe, expect)) in row.probes.into_iter().enumerate() {
            let name = format!("{what}: probe {i} {probe:?}");
            if probe == Probe::ReviveThenRequest {
                d1.set_removed(false);
                svc.set_dests(vec![d1.clone(), d2.clone()], None);
            }
            let (input, port) = match probe {
                Probe::Reply => (f.reply.frame(), 1),
                _ => (f.next.frame(), 0),
            };
            let (v, out) = through(&mut fwd, &snap, &input, port);
            match expect {
                Expect::Tx(p, want) => {
                    assert_eq!(v, Verdict::Tx(p), "{name}");
                    assert_frame_eq(&out, &want, &name);
                    assert_valid(&out, &name);
                }
                Expect::Drop(r) => {
                    assert_eq!(v, Verdict::Drop(r), "{name}");
                    assert_frame_eq(&out, &input, &name);
                }
            }
        }
        let c = fwd.counters;
        let dead = (c.dead_expired, c.dead_rescheduled, c.dead_reset);
        use xvs::kconf::OnDead::*;
        let want = match row.policy {
            Ipvs => (0, 0, 0),
            // The entry ended at the server's reply, or at the client's packet (expire).
            _ if reply_row => (1, 0, 0),
            Expire => (1, 0, 0),
            Reassign if row.udp => (0, 1, 0),
            Reassign => (0, 0, 1),
        };
        assert_eq!(dead, want, "{what}: (expired, rescheduled, reset)");
    }
}

/// A NAT connection received from a sync peer (parked: no worker holds it) is picked up by
/// the client's next segment, mid-stream (no SYN), and rewritten exactly as a connection
/// made here; the real server's reply then finds it in the NAT table.
#[test]
fn a_synced_nat_connection_is_translated_both_ways_from_its_first_segment() {
    use std::sync::Arc;
    use xvs::conn::{ClientSide, ConnState, Parked, ParkedConns};
    use xvs::model::Forward;
    use xvs::packet::FlowKey;
    use xvs::sync::out::SyncQueues;

    let (mut fwd, snap) = forward_fixture();
    let parked = Arc::new(ParkedConns::with_capacity(64));
    fwd.set_shared(parked.clone(), Arc::new(SyncQueues::new(1)));
    let key = FlowKey {
        saddr: u32::from(CIP),
        daddr: u32::from(NAT_VIP),
        sport: CPORT,
        dport: VPORT,
        proto: 6,
    };
    let p = Parked {
        dest_addr: u32::from(NAT_RIP),
        dest_port: NAT_RPORT,
        forward: Forward::Masq,
        state: ConnState::Established,
        expires_ms: 900_000,
        client: ClientSide::UNKNOWN,
    };
    parked.put(key, p).unwrap();

    let ack = request(NAT_VIP, tcp(ACK));
    let (v, out) = through(&mut fwd, &snap, &ack.frame(), 0);
    assert_eq!(v, Verdict::Tx(1));
    let want = ack
        .with_dst(NAT_RIP, NAT_RPORT)
        .hop()
        .with_macs(NAT_RS_MAC, INT_MAC)
        .frame();
    assert_frame_eq(&out, &want, "synced NAT request");
    assert!(parked.is_empty(), "taken into the NAT table");
    assert_eq!(fwd.counters.imported, 1);

    let reply = nat_reply(tcp(ACK));
    let (v, out) = through(&mut fwd, &snap, &reply.frame(), 1);
    assert_eq!(v, Verdict::Tx(0));
    let want = reply
        .with_src(NAT_VIP, VPORT)
        .hop()
        .with_macs(CLIENT_MAC, EXT_MAC)
        .frame();
    assert_frame_eq(&out, &want, "synced NAT reply");
}

/// A download after a NAT failover: the real server's retransmission is the first packet
/// of the synced flow. The first reply asks for the client's side (dropped, `unbound`);
/// once the daemon has found it (here: set by hand), the next reply becomes the entry's
/// first packet and reaches the client, and the client's own segments then hit it too.
#[test]
fn a_synced_nat_connection_can_start_with_the_real_servers_reply() {
    use std::sync::Arc;
    use xvs::conn::{ClientSide, ConnState, Parked, ParkedConns};
    use xvs::model::Forward;
    use xvs::packet::{DropReason, FlowKey};
    use xvs::sync::out::SyncQueues;

    let (mut fwd, snap) = forward_fixture();
    let parked = Arc::new(ParkedConns::with_capacity(64));
    fwd.set_shared(parked.clone(), Arc::new(SyncQueues::new(1)));
    let key = FlowKey {
        saddr: u32::from(CIP),
        daddr: u32::from(NAT_VIP),
        sport: CPORT,
        dport: VPORT,
        proto: 6,
    };
    let p = Parked {
        dest_addr: u32::from(NAT_RIP),
        dest_port: NAT_RPORT,
        forward: Forward::Masq,
        state: ConnState::Established,
        expires_ms: 900_000,
        client: ClientSide::UNKNOWN,
    };
    parked.put(key, p).unwrap();

    let reply = nat_reply(tcp(ACK));
    let (v, _) = through(&mut fwd, &snap, &reply.frame(), 1);
    assert_eq!(v, Verdict::Drop(DropReason::Unbound));
    assert_eq!(
        parked.wanted_count(),
        1,
        "the daemon is asked for the client's side"
    );
    let mut wanted = vec![];
    parked.take_wanted(&mut wanted, 16);
    assert_eq!(wanted, vec![key]);
    parked.set_client(
        &key,
        ClientSide {
            port: 0,
            mac: CLIENT_MAC,
        },
    );

    let (v, out) = through(&mut fwd, &snap, &reply.frame(), 1);
    assert_eq!(v, Verdict::Tx(0));
    let want = reply
        .with_src(NAT_VIP, VPORT)
        .hop()
        .with_macs(CLIENT_MAC, EXT_MAC)
        .frame();
    assert_frame_eq(&out, &want, "synced NAT reply first");
    assert!(parked.is_empty());
    assert_eq!(fwd.counters.imported, 1);
    // The client's next segment is a plain hit now.
    let ack = request(NAT_VIP, tcp(ACK));
    let (v, _) = through(&mut fwd, &snap, &ack.frame(), 0);
    assert_eq!(v, Verdict::Tx(1));
    assert_eq!(fwd.counters.imported, 1);
}
