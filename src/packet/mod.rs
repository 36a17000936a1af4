//! Zero-copy packet views (smoltcp style) and the flow parser used by the workers.
//!
//! Each header is a view over a caller-owned buffer with a checked constructor: once
//! `new_checked` succeeds, no accessor panics. The data path never copies a frame.

pub mod csum;
pub mod ethernet;
pub mod icmp;
pub mod ipv4;
pub mod l4;

pub use ethernet::EthernetFrame;
pub use ipv4::Ipv4Packet;

/// Why a frame was not forwarded. Small and `Copy`: it indexes per-worker counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum DropReason {
    /// Shorter than the headers it claims to carry.
    Truncated = 0,
    /// Header fields inconsistent (bad version, IHL, total length, TCP data offset).
    Malformed,
    /// Not IPv4 TCP/UDP (should not reach a worker: the XDP program filters these).
    NotIpv4L4,
    /// An IPv4 fragment (not load-balanced, see docs/architecture.md).
    Fragment,
    /// No virtual service for the destination (configuration changed under the frame).
    NoService,
    /// The service has no available real server (all quiesced, overloaded or none).
    NoDest,
    /// The real server's MAC address is not resolved yet.
    NoNeighbour,
    /// The connection table is full; the new connection was refused.
    TableFull,
    /// The TX ring had no room.
    TxFull,
    /// A TCP segment without SYN for an unknown connection (IPVS schedules only on SYN).
    NoConn,
    /// Too big for the egress MTU with DF clear (xvs does not fragment), or an ICMP error
    /// too big to relay.
    TooBig,
    /// A persistent service's template table is full of templates in use.
    TemplateFull,
    /// TTL expired: an ICMP error to relay whose TTL ran out (no ICMP is sent about an
    /// ICMP error). Other packets are answered with ICMP time exceeded instead.
    TtlExpired,
    /// An ICMP error that missed here could not be handed to the other workers (their
    /// queue full, no free frame, or longer than `handoff::MAX_FRAME`).
    IcmpHandoffLost,
    /// A packet of an existing connection whose real server was removed (or declared dead,
    /// under the `expire` policy): dropped without refreshing the entry, as IPVS drops the
    /// packets of a server without `IP_VS_DEST_F_AVAILABLE` (`ip_vs_in`).
    DestUnavailable,
    /// The first packet of a parked connection (synced or restored) whose real server is
    /// not configured (yet): dropped, the entry waits for it.
    Unbound,
}

impl DropReason {
    pub const COUNT: usize = 16;
    pub const ALL: [DropReason; Self::COUNT] = [
        DropReason::Truncated,
        DropReason::Malformed,
        DropReason::NotIpv4L4,
        DropReason::Fragment,
        DropReason::NoService,
        DropReason::NoDest,
        DropReason::NoNeighbour,
        DropReason::TableFull,
        DropReason::TxFull,
        DropReason::NoConn,
        DropReason::TooBig,
        DropReason::TemplateFull,
        DropReason::TtlExpired,
        DropReason::IcmpHandoffLost,
        DropReason::DestUnavailable,
        DropReason::Unbound,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::Malformed => "malformed",
            DropReason::NotIpv4L4 => "not_ipv4_l4",
            DropReason::Fragment => "fragment",
            DropReason::NoService => "no_service",
            DropReason::NoDest => "no_dest",
            DropReason::NoNeighbour => "no_neighbour",
            DropReason::TableFull => "table_full",
            DropReason::TxFull => "tx_full",
            DropReason::NoConn => "no_conn",
            DropReason::TooBig => "too_big",
            DropReason::TemplateFull => "template_full",
            DropReason::TtlExpired => "ttl_expired",
            DropReason::IcmpHandoffLost => "icmp_handoff_lost",
            DropReason::DestUnavailable => "dest_unavailable",
            DropReason::Unbound => "unbound",
        }
    }
}

/// TCP flag bits (RFC 9293 section 3.1).
pub mod tcp_flags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;
}

/// The 5-tuple of a flow as seen on the wire (addresses and ports in host order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub saddr: u32,
    pub daddr: u32,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

/// What a worker needs to know about a frame, extracted in one pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub key: FlowKey,
    /// TCP flags (0 for UDP).
    pub tcp_flags: u8,
    /// Offset of the IPv4 header in the frame.
    pub l3_offset: usize,
    /// Offset of the TCP/UDP header in the frame.
    pub l4_offset: usize,
    /// IPv4 total length (bytes on the wire from the IP header on; the frame may have padding).
    pub ip_len: usize,
}

/// Parses Ethernet + IPv4 + TCP/UDP far enough to schedule and forward the frame.
///
/// Checks every length it relies on; never panics, whatever the input.
pub fn parse_flow(frame: &[u8]) -> Result<Flow, DropReason> {
    let eth = EthernetFrame::new_checked(frame)?;
    if eth.ethertype() != ethernet::ETHERTYPE_IPV4 {
        return Err(DropReason::NotIpv4L4);
    }
    let l3_offset = ethernet::HEADER_LEN;
    let ip = Ipv4Packet::new_checked(eth.payload())?;
    if ip.is_fragment() {
        return Err(DropReason::Fragment);
    }
    let proto = ip.protocol();
    let l4 = ip.payload();
    let (sport, dport, tcp_flags) = match proto {
        ipv4::PROTO_TCP => {
            let tcp = l4::TcpHeader::new_checked(l4)?;
            (tcp.src_port(), tcp.dst_port(), tcp.flags())
        }
        ipv4::PROTO_UDP => {
            let udp = l4::UdpHeader::new_checked(l4)?;
            (udp.src_port(), udp.dst_port(), 0)
        }
        _ => return Err(DropReason::NotIpv4L4),
    };
    Ok(Flow {
        key: FlowKey {
            saddr: ip.src_addr(),
            daddr: ip.dst_addr(),
            sport,
            dport,
            proto,
        },
        tcp_flags,
        l3_offset,
        l4_offset: l3_offset + ip.header_len(),
        ip_len: ip.total_len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn tcp_frame(flags_syn: bool, payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1])
            .ipv4([10, 0, 0, 100], [10, 0, 0, 88], 64)
            .tcp(40000, 80, 1234, 65535);
        let b = if flags_syn { b.syn() } else { b.ack(1) };
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn parses_tcp_syn() {
        let f = tcp_frame(true, b"");
        let flow = parse_flow(&f).unwrap();
        assert_eq!(flow.key.saddr, u32::from_be_bytes([10, 0, 0, 100]));
        assert_eq!(flow.key.daddr, u32::from_be_bytes([10, 0, 0, 88]));
        assert_eq!(
            (flow.key.sport, flow.key.dport, flow.key.proto),
            (40000, 80, 6)
        );
        assert_eq!(flow.tcp_flags & tcp_flags::SYN, tcp_flags::SYN);
        assert_eq!(flow.l4_offset, 34);
        assert_eq!(flow.ip_len, 40);
    }

    #[test]
    fn parses_udp_with_ethernet_padding() {
        let b = PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([10, 0, 0, 100], [10, 0, 0, 88], 64)
            .udp(5000, 5353);
        let mut f = Vec::new();
        b.write(&mut f, b"hi").unwrap();
        f.resize(64, 0); // minimum Ethernet frame: padding after the IP datagram
        let flow = parse_flow(&f).unwrap();
        assert_eq!(
            (flow.key.sport, flow.key.dport, flow.key.proto),
            (5000, 5353, 17)
        );
        assert_eq!(flow.ip_len, 20 + 8 + 2);
    }

    #[test]
    fn every_truncation_is_rejected_without_panic() {
        let f = tcp_frame(false, b"GET / HTTP/1.0\r\n\r\n");
        let full_headers = 14 + 20 + 20;
        for len in 0..full_headers {
            assert!(parse_flow(&f[..len]).is_err(), "len {len} accepted");
        }
    }

    #[test]
    fn rejects_fragments_and_bad_headers() {
        let mut f = tcp_frame(true, b"");
        f[14 + 6] = 0x20; // MF set
        assert_eq!(parse_flow(&f), Err(DropReason::Fragment));

        let mut f = tcp_frame(true, b"");
        f[14] = 0x44; // IHL 4 (< 5)
        assert_eq!(parse_flow(&f), Err(DropReason::Malformed));

        let mut f = tcp_frame(true, b"");
        f[14 + 2] = 0xff; // total length beyond the frame
        assert_eq!(parse_flow(&f), Err(DropReason::Truncated));

        let mut f = tcp_frame(true, b"");
        f[14 + 20 + 12] = 0x10; // TCP data offset 1 word (< 5)
        assert_eq!(parse_flow(&f), Err(DropReason::Malformed));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..128)) {
            let _ = parse_flow(&bytes);
        }
    }
}
