//! Generated frames: the template the generator program copies into every live frame, the
//! one's-complement sums it patches checksums from, and a Rust reference of that patching
//! (mirrors `bpf/xvs_gen.bpf.c`, checked against etherparse in the tests).
//!
//! Layout (fixed, see `bpf/xvs_bench.h`): Ethernet II, IPv4 without options (DF set, TTL 64),
//! then UDP or TCP (no options). The payload fills the frame, so the IPv4 total length is
//! always `frame length - 14`.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// Ethernet header length (no VLAN tag).
pub const ETH_LEN: usize = 14;
/// Offset of the IPv4 header.
pub const IP_OFF: usize = ETH_LEN;
/// Offset of the TCP/UDP header (IPv4 without options).
pub const L4_OFF: usize = IP_OFF + 20;
/// Smallest wire frame (bytes, with the 4-byte FCS the NIC appends).
pub const MIN_WIRE: usize = 64;
/// Largest wire frame for a 1500-byte MTU (with FCS).
pub const MAX_WIRE: usize = 1518;
/// FCS bytes: counted in the wire size, never written by software.
pub const FCS: usize = 4;
/// Template buffer size in the program (`XVS_GEN_MAX_FRAME`).
pub const MAX_FRAME: usize = 1536;
/// Source host parts used: 1..=65534 of the /16 (`XVS_GEN_HOSTS`).
pub const HOSTS: u64 = 65534;
/// First source port (`XVS_GEN_PORT_BASE`) and how many are used (`XVS_GEN_PORTS`).
pub const PORT_BASE: u64 = 1024;
pub const PORTS: u64 = 64512;

const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// Transport protocol of generated frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Udp,
    Tcp,
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Proto::Udp => IPPROTO_UDP,
            Proto::Tcp => IPPROTO_TCP,
        }
    }
    fn header_len(self) -> usize {
        match self {
            Proto::Udp => 8,
            Proto::Tcp => 20,
        }
    }
}

impl FromStr for Proto {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "udp" => Ok(Proto::Udp),
            "tcp" => Ok(Proto::Tcp),
            _ => Err(format!("protocol must be udp or tcp (got '{s}')")),
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Udp => "udp",
            Proto::Tcp => "tcp",
        })
    }
}

/// Which flows the frames belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Cycle over a fixed set of flows (TCP: SYN on the first pass, then ACK).
    Established,
    /// Every frame opens a flow never seen before (TCP: every frame a SYN).
    New,
    /// 20% new flows, 80% established: of every 5 frames, 4 cycle over the established
    /// flows and the 5th opens a flow never seen before.
    Mix,
}

impl Mode {
    /// `XVS_GEN_MODE_*`.
    pub fn number(self) -> u32 {
        match self {
            Mode::Established => 0,
            Mode::New => 1,
            Mode::Mix => 2,
        }
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "established" | "est" => Ok(Mode::Established),
            "new" => Ok(Mode::New),
            "mix" => Ok(Mode::Mix),
            _ => Err(format!("mode must be established, new or mix (got '{s}')")),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Established => "established",
            Mode::New => "new",
            Mode::Mix => "mix",
        })
    }
}

/// A MAC address, parsed from `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Mac(pub [u8; 6]);

impl FromStr for Mac {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut m = [0u8; 6];
        let mut n = 0;
        for part in s.split(':') {
            if n == 6 || part.is_empty() || part.len() > 2 {
                return Err(format!("bad MAC address '{s}' (want aa:bb:cc:dd:ee:ff)"));
            }
            m[n] = u8::from_str_radix(part, 16)
                .map_err(|_| format!("bad MAC address '{s}' (want aa:bb:cc:dd:ee:ff)"))?;
            n += 1;
        }
        if n != 6 {
            return Err(format!("bad MAC address '{s}' (want aa:bb:cc:dd:ee:ff)"));
        }
        Ok(Mac(m))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// What every generated frame has in common.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameSpec {
    pub dst_mac: Mac,
    pub src_mac: Mac,
    /// Source addresses are this /16 with host parts 1..=65534 (its low 16 bits are ignored).
    pub src_net: Ipv4Addr,
    pub dst_ip: Ipv4Addr,
    pub dst_port: u16,
    pub proto: Proto,
    /// Frame size on the wire in bytes, FCS included: 64..=1518.
    pub wire_size: usize,
}

/// A built template and the checksum sums the program patches from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// The frame as written (wire size minus FCS), host part 0, source port 0, checksums 0.
    pub bytes: Vec<u8>,
    /// One's-complement sum (folded to 16 bits, not inverted) of the IPv4 header.
    pub ip_sum: u32,
    /// Sum of the UDP datagram, or of the TCP segment with `tcp_flags_new`, with pseudo header.
    pub l4_sum: u32,
    /// TCP: the same with `tcp_flags_est` (UDP: equal to `l4_sum`).
    pub l4_sum_est: u32,
    pub tcp_flags_new: u8,
    pub tcp_flags_est: u8,
}

/// Adds 16-bit big-endian words of `b` (odd length padded with a zero byte) to `sum`.
pub fn sum_words(mut sum: u64, b: &[u8]) -> u64 {
    let mut chunks = b.chunks_exact(2);
    for c in &mut chunks {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

/// Folds a sum of 16-bit words to 16 bits (not inverted).
pub fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// The checksum of a sum (RFC 1071): folded and inverted.
pub fn finish(s: u64) -> u16 {
    !fold(s)
}

impl FrameSpec {
    /// Bytes written per frame (the wire size without FCS).
    pub fn frame_len(&self) -> usize {
        self.wire_size - FCS
    }

    /// Checks the size and builds the template.
    pub fn build(&self) -> Result<Template, String> {
        if !(MIN_WIRE..=MAX_WIRE).contains(&self.wire_size) {
            return Err(format!(
                "frame size must be {MIN_WIRE}..={MAX_WIRE} bytes on the wire, FCS included (got {})",
                self.wire_size
            ));
        }
        let len = self.frame_len();
        let mut f = vec![0u8; len];
        f[0..6].copy_from_slice(&self.dst_mac.0);
        f[6..12].copy_from_slice(&self.src_mac.0);
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());

        let ip_len = (len - ETH_LEN) as u16;
        let mut src = self.src_net.octets();
        src[2] = 0;
        src[3] = 0;
        {
            let ip = &mut f[IP_OFF..IP_OFF + 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
            ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes()); // DF: TUN gets no fragments
            ip[8] = 64;
            ip[9] = self.proto.number();
            ip[12..16].copy_from_slice(&src);
            ip[16..20].copy_from_slice(&self.dst_ip.octets());
        }
        let ip_sum = fold(sum_words(0, &f[IP_OFF..IP_OFF + 20])) as u32;

        let l4_len = len - L4_OFF;
        debug_assert!(l4_len >= self.proto.header_len());
        let (flags_new, flags_est) = match self.proto {
            Proto::Udp => {
                let u = &mut f[L4_OFF..L4_OFF + 8];
                u[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
                u[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
                (0, 0)
            }
            Proto::Tcp => {
                let t = &mut f[L4_OFF..L4_OFF + 20];
                t[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
                t[4..8].copy_from_slice(&1u32.to_be_bytes()); // seq
                t[8..12].copy_from_slice(&1u32.to_be_bytes()); // ack (meaningful with ACK)
                t[12] = 5 << 4; // data offset: 20 bytes
                t[13] = TCP_SYN;
                t[14..16].copy_from_slice(&65535u16.to_be_bytes()); // window
                (TCP_SYN, TCP_ACK)
            }
        };
        // Pseudo header (RFC 768 / RFC 793): source, destination, zero, protocol, length.
        let mut pseudo = sum_words(0, &src);
        pseudo = sum_words(pseudo, &self.dst_ip.octets());
        pseudo += u64::from(self.proto.number());
        pseudo += l4_len as u64;
        let l4_sum = fold(sum_words(pseudo, &f[L4_OFF..])) as u32;
        let l4_sum_est = match self.proto {
            Proto::Udp => l4_sum,
            Proto::Tcp => {
                // Only the flags byte (low byte of the word at offset 12) differs.
                let s = u64::from(l4_sum) + 0xffff - u64::from(flags_new) + u64::from(flags_est);
                fold(s) as u32
            }
        };
        Ok(Template {
            bytes: f,
            ip_sum,
            l4_sum,
            l4_sum_est,
            tcp_flags_new: flags_new,
            tcp_flags_est: flags_est,
        })
    }
}

/// Source host part and port of flow number `g` (`g = f * stride + cpu`), as the program
/// computes them.
pub fn flow_addr(g: u64) -> (u16, u16) {
    let host = (g % HOSTS + 1) as u16;
    let port = (PORT_BASE + (g / HOSTS) % PORTS) as u16;
    (host, port)
}

/// The flow number of a CPU's `n`-th frame (mirrors the program).
pub fn flow_number(n: u64, mode: Mode, flows: u64, stride: u64, cpu: u64) -> u64 {
    let flows = flows.max(1);
    let f = match mode {
        Mode::Established => n % flows,
        Mode::New => n,
        Mode::Mix if n % 5 == 4 => flows + n / 5,
        Mode::Mix => (n / 5 * 4 + n % 5) % flows,
    };
    f * stride + cpu
}

/// Whether a CPU's `n`-th frame is its flow's first (TCP: a SYN; mirrors the program).
pub fn opening(n: u64, mode: Mode, flows: u64) -> bool {
    match mode {
        Mode::Established => n < flows,
        Mode::New => true,
        Mode::Mix => n % 5 == 4 || n / 5 * 4 + n % 5 < flows,
    }
}

impl Template {
    /// Reference of the program's per-frame rewrite: a fresh copy of the template with the
    /// flow's source host part and port, TCP flags, and checksums patched incrementally.
    pub fn frame(&self, proto: Proto, host: u16, port: u16, opening: bool) -> Vec<u8> {
        let mut f = self.bytes.clone();
        f[IP_OFF + 14..IP_OFF + 16].copy_from_slice(&host.to_be_bytes());
        let ip = finish(u64::from(self.ip_sum) + u64::from(host));
        f[IP_OFF + 10..IP_OFF + 12].copy_from_slice(&ip.to_be_bytes());
        f[L4_OFF..L4_OFF + 2].copy_from_slice(&port.to_be_bytes());
        let add = u64::from(host) + u64::from(port);
        match proto {
            Proto::Udp => {
                let c = finish(u64::from(self.l4_sum) + add);
                let c = if c == 0 { 0xffff } else { c };
                f[L4_OFF + 6..L4_OFF + 8].copy_from_slice(&c.to_be_bytes());
            }
            Proto::Tcp => {
                let (flags, sum) = if opening {
                    (self.tcp_flags_new, self.l4_sum)
                } else {
                    (self.tcp_flags_est, self.l4_sum_est)
                };
                f[L4_OFF + 13] = flags;
                let c = finish(u64::from(sum) + add);
                f[L4_OFF + 16..L4_OFF + 18].copy_from_slice(&c.to_be_bytes());
            }
        }
        f
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use etherparse::{SlicedPacket, TransportSlice};

    fn spec(proto: Proto, wire: usize) -> FrameSpec {
        FrameSpec {
            dst_mac: "02:00:0a:00:00:0c".parse().unwrap(),
            src_mac: "02:00:0a:00:00:01".parse().unwrap(),
            src_net: Ipv4Addr::new(10, 1, 2, 3),
            dst_ip: Ipv4Addr::new(10, 0, 0, 88),
            dst_port: 80,
            proto,
            wire_size: wire,
        }
    }

    /// Parses with etherparse and checks every field and both checksums.
    pub(crate) fn check_frame(f: &[u8], s: &FrameSpec, host: u16, port: u16, flags: Option<u8>) {
        assert_eq!(f.len(), s.wire_size - FCS);
        let p = SlicedPacket::from_ethernet(f).expect("etherparse accepts the frame");
        let eth = p.link.as_ref().unwrap().to_header().unwrap();
        let eth = match eth {
            etherparse::LinkHeader::Ethernet2(e) => e,
            other => panic!("not Ethernet II: {other:?}"),
        };
        assert_eq!(eth.destination, s.dst_mac.0);
        assert_eq!(eth.source, s.src_mac.0);
        let ip = match p.net.as_ref().unwrap() {
            etherparse::NetSlice::Ipv4(ip) => ip.header().to_header(),
            other => panic!("not IPv4: {other:?}"),
        };
        assert_eq!(
            ip.header_checksum,
            ip.calc_header_checksum(),
            "IPv4 checksum"
        );
        let o = s.src_net.octets();
        let h = host.to_be_bytes();
        assert_eq!(ip.source, [o[0], o[1], h[0], h[1]]);
        assert_eq!(ip.destination, s.dst_ip.octets());
        assert_eq!(usize::from(ip.total_len), f.len() - ETH_LEN);
        assert!(ip.dont_fragment);
        let payload = &f[L4_OFF..];
        match p.transport.as_ref().unwrap() {
            TransportSlice::Udp(u) => {
                let uh = u.to_header();
                assert_eq!(uh.source_port, port);
                assert_eq!(uh.destination_port, s.dst_port);
                let want = uh
                    .calc_checksum_ipv4(&ip, &payload[8..])
                    .expect("checksum computable");
                assert_eq!(uh.checksum, want, "UDP checksum");
                assert_ne!(uh.checksum, 0);
            }
            TransportSlice::Tcp(t) => {
                let th = t.to_header();
                assert_eq!(th.source_port, port);
                assert_eq!(th.destination_port, s.dst_port);
                let want = th
                    .calc_checksum_ipv4(&ip, &payload[20..])
                    .expect("checksum computable");
                assert_eq!(th.checksum, want, "TCP checksum");
                let fl = flags.unwrap();
                assert_eq!(th.syn, fl & TCP_SYN != 0);
                assert_eq!(th.ack, fl & TCP_ACK != 0);
            }
            other => panic!("unexpected transport {other:?}"),
        }
    }

    #[test]
    fn sizes_are_checked() {
        assert!(spec(Proto::Udp, 63).build().is_err());
        assert!(spec(Proto::Udp, 1519).build().is_err());
        assert_eq!(spec(Proto::Udp, 64).build().unwrap().bytes.len(), 60);
        assert_eq!(spec(Proto::Tcp, 1518).build().unwrap().bytes.len(), 1514);
    }

    #[test]
    fn udp_frames_have_valid_checksums() {
        for wire in [64, 65, 128, 513, 1500, 1518] {
            let s = spec(Proto::Udp, wire);
            let t = s.build().unwrap();
            for g in [0u64, 1, 2, 65533, 65534, 1_000_000, 4_000_000_000] {
                let (h, p) = flow_addr(g);
                let f = t.frame(Proto::Udp, h, p, true);
                check_frame(&f, &s, h, p, None);
            }
        }
    }

    #[test]
    fn tcp_frames_have_valid_checksums_for_syn_and_ack() {
        for wire in [64, 99, 1518] {
            let s = spec(Proto::Tcp, wire);
            let t = s.build().unwrap();
            for g in [0u64, 7, 65534 * 3 + 5, 123_456_789] {
                let (h, p) = flow_addr(g);
                check_frame(&t.frame(Proto::Tcp, h, p, true), &s, h, p, Some(TCP_SYN));
                check_frame(&t.frame(Proto::Tcp, h, p, false), &s, h, p, Some(TCP_ACK));
            }
        }
    }

    #[test]
    fn udp_checksum_zero_is_sent_as_ones() {
        // Search a flow whose UDP checksum computes to 0; it must go out as 0xffff.
        let s = spec(Proto::Udp, 64);
        let t = s.build().unwrap();
        let found = (0..HOSTS * 3)
            .map(flow_addr)
            .find(|&(h, p)| finish(u64::from(t.l4_sum) + u64::from(h) + u64::from(p)) == 0);
        let (h, p) = found.expect("some flow sums to zero");
        let f = t.frame(Proto::Udp, h, p, true);
        assert_eq!(&f[L4_OFF + 6..L4_OFF + 8], &[0xff, 0xff]);
        check_frame(&f, &s, h, p, None);
    }

    #[test]
    fn flows_are_distinct_and_cycle() {
        use std::collections::HashSet;
        let mut seen = HashSet::new();
        for n in 0..200_000u64 {
            let g = flow_number(n, Mode::New, 0, 2, 1);
            assert!(seen.insert(flow_addr(g)), "new mode repeated a flow at {n}");
        }
        // Established: period `flows`, CPUs disjoint.
        let a: Vec<_> = (0..8)
            .map(|n| flow_addr(flow_number(n, Mode::Established, 4, 2, 0)))
            .collect();
        assert_eq!(a[0..4], a[4..8]);
        let b: Vec<_> = (0..4)
            .map(|n| flow_addr(flow_number(n, Mode::Established, 4, 2, 1)))
            .collect();
        assert!(a.iter().all(|x| !b.contains(x)));
        // Mix: every 5th frame a flow never seen (nor among the established ones), the
        // others cycling over the established flows, each opened once.
        let flows = 8u64;
        let mut est = HashSet::new();
        let mut new = HashSet::new();
        let mut opened = 0;
        for n in 0..1000u64 {
            let g = flow_number(n, Mode::Mix, flows, 2, 1);
            if opening(n, Mode::Mix, flows) {
                opened += 1;
            }
            if n % 5 == 4 {
                assert!(opening(n, Mode::Mix, flows));
                assert!(new.insert(g), "mix repeated a new flow at {n}");
            } else {
                est.insert(g);
            }
        }
        assert_eq!(est.len(), flows as usize);
        assert!(est.is_disjoint(&new));
        assert_eq!(new.len(), 200);
        assert_eq!(opened, 200 + flows);
        let (h, p) = flow_addr(0);
        assert_eq!((h, p), (1, 1024));
        let (h, p) = flow_addr(HOSTS);
        assert_eq!((h, p), (1, 1025));
    }

    #[test]
    fn mac_parse_and_print() {
        let m: Mac = "02:00:0A:00:00:0c".parse().unwrap();
        assert_eq!(m.to_string(), "02:00:0a:00:00:0c");
        assert!("02:00:0a:00:00".parse::<Mac>().is_err());
        assert!("02:00:0a:00:00:0c:01".parse::<Mac>().is_err());
        assert!("02:00:0a:00:00:zz".parse::<Mac>().is_err());
        assert!("".parse::<Mac>().is_err());
    }
}
