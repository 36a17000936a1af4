//! ICMP error view (RFC 792): the outer IPv4 header, the ICMP header and the packet it
//! quotes, far enough to find the connection the error is about.
//!
//! IPVS (`ip_vs_in_icmp`, `ip_vs_out_icmp`) relays three ICMP types for its connections:
//! destination unreachable (fragmentation needed included), source quench and time
//! exceeded. Everything else (echo, parameter problem, redirects, ...) is the director's
//! own business. The quoted packet is an IPv4 header plus at least 8 bytes of its payload
//! (RFC 792; Linux quotes up to 576 bytes in all), enough for the TCP/UDP ports.

use super::{csum, ethernet, ipv4, DropReason, EthernetFrame, FlowKey, Ipv4Packet};

pub const PROTO_ICMP: u8 = 1;
/// IP-in-IP (RFC 2003): an error about a packet xvs tunnelled to a TUN real server.
pub const PROTO_IPIP: u8 = 4;

pub const TYPE_DEST_UNREACH: u8 = 3;
pub const TYPE_SOURCE_QUENCH: u8 = 4;
pub const TYPE_TIME_EXCEEDED: u8 = 11;
/// Destination unreachable: fragmentation needed and DF set (RFC 1191).
pub const CODE_FRAG_NEEDED: u8 = 4;
/// Time exceeded: TTL exceeded in transit.
pub const CODE_TTL_EXCEEDED: u8 = 0;

/// ICMP header length: type, code, checksum, 4 bytes of type-specific data.
pub const HEADER_LEN: usize = 8;

/// Is this ICMP type one of the errors IPVS relays for its connections?
pub fn is_relayed_error(icmp_type: u8) -> bool {
    matches!(
        icmp_type,
        TYPE_DEST_UNREACH | TYPE_SOURCE_QUENCH | TYPE_TIME_EXCEEDED
    )
}

/// A parsed ICMP error. Offsets are from the start of the frame and all in bounds of the
/// frame that was parsed; `quoted` is the packet the error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpError {
    pub icmp_type: u8,
    pub code: u8,
    /// Offset of the outer IPv4 header.
    pub l3_offset: usize,
    /// Offset of the ICMP header.
    pub icmp_offset: usize,
    /// End of the outer IP datagram (Ethernet padding excluded).
    pub ip_end: usize,
    pub outer_src: u32,
    pub outer_dst: u32,
    /// Offset of the quoted IPv4 header (for a tunnel error: of the quoted IPIP header).
    pub quote_offset: usize,
    /// The quoted TCP/UDP packet: offset of its IPv4 header and of its L4 header, and its
    /// 5-tuple as written in it (source and destination as the packet had them).
    pub inner_ip: usize,
    pub inner_l4: usize,
    pub inner: FlowKey,
    /// The quoted packet's DF bit.
    pub inner_df: bool,
    /// The quoted packet was IPIP and `inner_*` describe the packet inside it.
    pub tunnel: bool,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// A quoted IPv4 header at `at` in `b` (which ends where the ICMP message ends): its header
/// length, protocol and whether it is a non-first fragment. The quote is truncated by
/// design, so its total length is not checked against `b`.
fn quoted_ip(b: &[u8], at: usize) -> Result<(usize, u8, bool), DropReason> {
    if b.len() < at + ipv4::MIN_HEADER_LEN {
        return Err(DropReason::Truncated);
    }
    let hl = ((b[at] & 0x0f) as usize) * 4;
    if b[at] >> 4 != 4 || hl < ipv4::MIN_HEADER_LEN {
        return Err(DropReason::Malformed);
    }
    if b.len() < at + hl {
        return Err(DropReason::Truncated);
    }
    let non_first = be16(b, at + 6) & 0x1fff != 0;
    Ok((hl, b[at + 9], non_first))
}

/// Parses an ICMP error about a TCP or UDP packet (or an IPIP packet carrying one).
///
/// `Err(NotIpv4L4)` for anything that is not such an error (not ICMP, another type, a quote
/// of another protocol or of a non-first fragment); `Truncated`/`Malformed` for errors cut
/// short or inconsistent, including a wrong ICMP checksum (IPVS drops those as well).
/// Never panics.
pub fn parse_error(frame: &[u8]) -> Result<IcmpError, DropReason> {
    let eth = EthernetFrame::new_checked(frame)?;
    if eth.ethertype() != ethernet::ETHERTYPE_IPV4 {
        return Err(DropReason::NotIpv4L4);
    }
    let l3 = ethernet::HEADER_LEN;
    let ip = Ipv4Packet::new_checked(eth.payload())?;
    if ip.protocol() != PROTO_ICMP {
        return Err(DropReason::NotIpv4L4);
    }
    if ip.is_fragment() {
        return Err(DropReason::Fragment);
    }
    let icmp_offset = l3 + ip.header_len();
    let ip_end = l3 + ip.total_len();
    // Everything below indexes `b`, which ends with the ICMP message.
    let b = &frame[..ip_end];
    if b.len() < icmp_offset + HEADER_LEN {
        return Err(DropReason::Truncated);
    }
    let (icmp_type, code) = (b[icmp_offset], b[icmp_offset + 1]);
    if !is_relayed_error(icmp_type) {
        return Err(DropReason::NotIpv4L4);
    }
    if csum::checksum(&b[icmp_offset..]) != 0 {
        return Err(DropReason::Malformed);
    }
    let quote_offset = icmp_offset + HEADER_LEN;
    let (hl, proto, non_first) = quoted_ip(b, quote_offset)?;
    if non_first {
        return Err(DropReason::NotIpv4L4);
    }
    let (mut inner_ip, mut hl, mut proto, mut tunnel) = (quote_offset, hl, proto, false);
    if proto == PROTO_IPIP {
        let at = quote_offset + hl;
        let (hl2, proto2, non_first2) = quoted_ip(b, at)?;
        if non_first2 {
            return Err(DropReason::NotIpv4L4);
        }
        (inner_ip, hl, proto, tunnel) = (at, hl2, proto2, true);
    }
    if proto != ipv4::PROTO_TCP && proto != ipv4::PROTO_UDP {
        return Err(DropReason::NotIpv4L4);
    }
    let inner_l4 = inner_ip + hl;
    // The ports: the first 4 bytes of TCP and UDP (RFC 792 guarantees 8).
    if b.len() < inner_l4 + 4 {
        return Err(DropReason::Truncated);
    }
    Ok(IcmpError {
        icmp_type,
        code,
        l3_offset: l3,
        icmp_offset,
        ip_end,
        outer_src: ip.src_addr(),
        outer_dst: ip.dst_addr(),
        quote_offset,
        inner_ip,
        inner_l4,
        inner: FlowKey {
            saddr: be32(b, inner_ip + 12),
            daddr: be32(b, inner_ip + 16),
            sport: be16(b, inner_l4),
            dport: be16(b, inner_l4 + 2),
            proto,
        },
        inner_df: be16(b, inner_ip + 6) & 0x4000 != 0,
        tunnel,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{icmpv4::DestUnreachableHeader, Icmpv4Type, PacketBuilder};

    /// The first 28 bytes of a UDP packet 10.0.0.88:53 -> 10.0.0.100:4000 (DF set).
    fn quoted_udp() -> Vec<u8> {
        let mut q = Vec::new();
        PacketBuilder::ipv4([10, 0, 0, 88], [10, 0, 0, 100], 64)
            .udp(53, 4000)
            .write(&mut q, b"0123456789")
            .unwrap();
        q[6] |= 0x40;
        q.truncate(28);
        q
    }

    fn error(t: Icmpv4Type, quote: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 88], 64)
            .icmpv4(t)
            .write(&mut f, quote)
            .unwrap();
        f
    }

    fn frag_needed(quote: &[u8]) -> Vec<u8> {
        error(
            Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
                next_hop_mtu: 1400,
            }),
            quote,
        )
    }

    #[test]
    fn parses_a_frag_needed_about_udp() {
        let f = frag_needed(&quoted_udp());
        let e = parse_error(&f).unwrap();
        assert_eq!((e.icmp_type, e.code), (3, 4));
        assert_eq!((e.icmp_offset, e.quote_offset, e.inner_l4), (34, 42, 62));
        assert_eq!(e.outer_dst, u32::from_be_bytes([10, 0, 0, 88]));
        assert_eq!(e.inner.saddr, u32::from_be_bytes([10, 0, 0, 88]));
        assert_eq!(
            (e.inner.sport, e.inner.dport, e.inner.proto),
            (53, 4000, 17)
        );
        assert!(e.inner_df && !e.tunnel);
    }

    #[test]
    fn parses_an_error_about_ipip() {
        let inner = quoted_udp();
        let mut q = Vec::new();
        PacketBuilder::ipv4([10, 0, 0, 12], [10, 0, 1, 10], 64)
            .write(&mut q, etherparse::IpNumber::IPV4, &inner)
            .unwrap();
        let f = frag_needed(&q);
        let e = parse_error(&f).unwrap();
        assert!(e.tunnel);
        assert_eq!((e.quote_offset, e.inner_ip, e.inner_l4), (42, 62, 82));
        assert_eq!((e.inner.sport, e.inner.dport), (53, 4000));
    }

    #[test]
    fn ignores_what_ipvs_does_not_relay() {
        let echo = error(
            Icmpv4Type::EchoRequest(etherparse::IcmpEchoHeader { id: 1, seq: 1 }),
            b"ping",
        );
        assert_eq!(parse_error(&echo), Err(DropReason::NotIpv4L4));
        let pp = error(
            Icmpv4Type::ParameterProblem(
                etherparse::icmpv4::ParameterProblemHeader::PointerIndicatesError(0),
            ),
            &quoted_udp(),
        );
        assert_eq!(parse_error(&pp), Err(DropReason::NotIpv4L4));
    }

    #[test]
    fn rejects_bad_checksums_and_every_truncation() {
        let mut f = frag_needed(&quoted_udp());
        f[36] ^= 1;
        assert_eq!(parse_error(&f), Err(DropReason::Malformed));
        // Quotes shorter than IP header + ports: the outer lengths are fixed up so that
        // only the quote is short.
        for cut in 0..24 {
            let q = &quoted_udp()[..cut];
            assert!(parse_error(&frag_needed(q)).is_err(), "cut {cut}");
        }
        let f = frag_needed(&quoted_udp());
        for len in 0..f.len() {
            assert!(parse_error(&f[..len]).is_err(), "len {len}");
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..160)) {
            let _ = parse_error(&bytes);
        }
    }
}
