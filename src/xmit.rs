//! Frame rewrites for the three LVS forwarding methods, in place on a checked frame.
//!
//! Each function takes a frame already validated by `packet::parse_flow` (so the offsets in
//! `Flow` are in bounds) and never panics on such a frame. Checksums are updated
//! incrementally (RFC 1624) where fields change, and computed in full for headers we build.

use crate::packet::icmp::{self, IcmpError};
use crate::packet::{csum, ethernet, ipv4, Flow};

/// Bytes an IPIP outer header adds.
pub const IPIP_OVERHEAD: usize = 20;
/// IP protocol number of IP-in-IP (RFC 2003).
pub const PROTO_IPIP: u8 = 4;
const PROTO_ICMP: u8 = icmp::PROTO_ICMP;
/// The IPv4 "don't fragment" bit in the flags/offset word.
const DF: u16 = 0x4000;

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

thread_local! {
    /// Per-thread IPv4 identification counter for packets we originate without DF (each
    /// worker is one thread: no shared cache line on the data path).
    static IP_ID: std::cell::Cell<u16> = std::cell::Cell::new(
        // Different threads start at different points of the 16-bit space.
        (std::process::id() as u16) ^ ((crate::clock::now_ms() as u16).rotate_left(7))
    );
}

fn next_ip_id() -> u16 {
    IP_ID.with(|c| {
        let v = c.get().wrapping_add(1);
        c.set(v);
        v
    })
}

/// Sets destination and source MAC.
pub fn set_macs(frame: &mut [u8], dst: [u8; 6], src: [u8; 6]) {
    frame[0..6].copy_from_slice(&dst);
    frame[6..12].copy_from_slice(&src);
}

/// Offset of the L4 checksum field from the L4 header, and whether 0 means "none" (UDP).
fn l4_csum_field(proto: u8) -> Option<(usize, bool)> {
    match proto {
        ipv4::PROTO_TCP => Some((16, false)),
        ipv4::PROTO_UDP => Some((6, true)),
        _ => None,
    }
}

/// Rewrites one address (at `addr_at`, an IPv4 header offset 12 or 16) and the matching
/// port (at `port_at` from the L4 header: 0 source, 2 destination), fixing both checksums.
fn rewrite_addr_port(
    frame: &mut [u8],
    flow: &Flow,
    addr_at: usize,
    port_at: usize,
    addr: u32,
    port: u16,
) {
    let ip = flow.l3_offset;
    let l4 = flow.l4_offset;
    let old_addr = be32(frame, ip + addr_at);
    let old_port = be16(frame, l4 + port_at);
    put32(frame, ip + addr_at, addr);
    let c = be16(frame, ip + 10);
    put16(frame, ip + 10, csum::replace4(c, old_addr, addr));
    put16(frame, l4 + port_at, port);
    if let Some((off, zero_is_none)) = l4_csum_field(flow.key.proto) {
        let at = l4 + off;
        let c = be16(frame, at);
        // UDP checksum 0 means "not computed" (RFC 768): leave it so.
        if zero_is_none && c == 0 {
            return;
        }
        // The pseudo-header covers the address; the port is in the header itself.
        let mut n = csum::replace4(c, old_addr, addr);
        n = csum::replace2(n, old_port, port);
        if zero_is_none && n == 0 {
            n = 0xffff; // a computed UDP checksum of 0 is sent as all ones
        }
        put16(frame, at, n);
    }
}

/// NAT, client to server: destination VIP:vport becomes RIP:rport.
pub fn nat_in(frame: &mut [u8], flow: &Flow, rip: u32, rport: u16) {
    rewrite_addr_port(frame, flow, 16, 2, rip, rport);
}

/// NAT, server to client: source RIP:rport becomes VIP:vport.
pub fn nat_out(frame: &mut [u8], flow: &Flow, vip: u32, vport: u16) {
    rewrite_addr_port(frame, flow, 12, 0, vip, vport);
}

/// Does the IPv4 packet have DF set?
pub fn dont_fragment(frame: &[u8], flow: &Flow) -> bool {
    be16(frame, flow.l3_offset + 6) & DF != 0
}

/// Whether the IPv4 packet at `l3` is a fragment (MF set or a non-zero offset).
pub fn is_fragment(frame: &[u8], l3: usize) -> bool {
    be16(frame, l3 + 6) & 0x3fff != 0
}

/// IPIP encapsulation in place: the IP packet moves 20 bytes up and an outer header
/// `outer_src -> outer_dst` goes in front, as `ip_vs_tunnel_xmit` builds it: protocol 4, DF
/// copied, TTL copied from the inner header (which the caller has already decremented,
/// see `decrement_ttl`), DSCP copied and ECN encapsulated per RFC 6040 (`ecn_encapsulate`).
/// `buf` is the whole frame buffer; returns the new frame length, or `None` if `buf` has
/// no room.
pub fn tun_encap(buf: &mut [u8], flow: &Flow, outer_src: u32, outer_dst: u32) -> Option<usize> {
    tun_encap_packet(buf, flow.l3_offset, flow.ip_len, outer_src, outer_dst)
}

/// `tun_encap` for any IPv4 packet of `inner_len` bytes at `ip` in `buf` (an ICMP error
/// relayed to a TUN real server, for one).
pub fn tun_encap_packet(
    buf: &mut [u8],
    ip: usize,
    inner_len: usize,
    outer_src: u32,
    outer_dst: u32,
) -> Option<usize> {
    let new_len = ip + IPIP_OVERHEAD + inner_len;
    if inner_len < ipv4::MIN_HEADER_LEN || new_len > buf.len() {
        return None;
    }
    let tos = ecn_encapsulate(buf[ip + 1]);
    let ttl = buf[ip + 8];
    let df = be16(buf, ip + 6) & DF;
    // Ethernet padding after the inner packet is dropped (new_len counts only the packet).
    buf.copy_within(ip..ip + inner_len, ip + IPIP_OVERHEAD);
    let h = &mut buf[ip..ip + IPIP_OVERHEAD];
    h[0] = 0x45;
    h[1] = tos;
    put16(h, 2, (inner_len + IPIP_OVERHEAD) as u16);
    // Identification: any value for an atomic (DF) datagram; a fragmentable one needs an ID
    // unique per source/destination for the reassembly lifetime (RFC 6864 section 4.1).
    put16(h, 4, if df != 0 { 0 } else { next_ip_id() });
    put16(h, 6, df);
    h[8] = ttl;
    h[9] = PROTO_IPIP;
    put16(h, 10, 0);
    put32(h, 12, outer_src);
    put32(h, 16, outer_dst);
    let c = csum::checksum(h);
    put16(h, 10, c);
    Some(new_len)
}

/// Replaces the frame with an ICMP "fragmentation needed" (type 3 code 4, RFC 1191) to the
/// sender, advertising `mtu`, as IPVS does when a packet would not fit. The reply goes from
/// `src_ip` (the address the client sent to) back to the frame's source MAC. Returns the
/// new frame length, or `None` if `buf` is too small.
pub fn icmp_frag_needed(
    buf: &mut [u8],
    flow: &Flow,
    src_ip: u32,
    our_mac: [u8; 6],
    mtu: u16,
) -> Option<usize> {
    icmp_reply(
        buf,
        flow,
        src_ip,
        our_mac,
        icmp::TYPE_DEST_UNREACH,
        icmp::CODE_FRAG_NEEDED,
        mtu as u32,
    )
}

/// Replaces the frame with an ICMP "time exceeded in transit" (type 11 code 0) to the
/// sender, from `src_ip`, back to the frame's source MAC: what IPVS (`decrement_ttl`) and
/// every router send instead of forwarding a packet whose TTL is 1 or 0.
pub fn icmp_time_exceeded(
    buf: &mut [u8],
    flow: &Flow,
    src_ip: u32,
    our_mac: [u8; 6],
) -> Option<usize> {
    icmp_reply(
        buf,
        flow,
        src_ip,
        our_mac,
        icmp::TYPE_TIME_EXCEEDED,
        icmp::CODE_TTL_EXCEEDED,
        0,
    )
}

/// An ICMP error about the frame's TCP/UDP packet, to its sender and source MAC.
fn icmp_reply(
    buf: &mut [u8],
    flow: &Flow,
    src_ip: u32,
    our_mac: [u8; 6],
    icmp_type: u8,
    code: u8,
    info: u32,
) -> Option<usize> {
    let ip = flow.l3_offset;
    // RFC 792: the original IP header plus the first 8 bytes of its payload.
    let quote_len = (flow.l4_offset - ip + 8).min(flow.ip_len);
    let mut client_mac = [0u8; 6];
    client_mac.copy_from_slice(&buf[6..12]);
    let m = IcmpMsg {
        dst_mac: client_mac,
        src_mac: our_mac,
        src_ip,
        dst_ip: flow.key.saddr,
        icmp_type,
        code,
        info,
    };
    icmp_error(buf, ip, quote_len, &m)
}

/// The headers of an ICMP error xvs originates.
#[derive(Debug, Clone, Copy)]
pub struct IcmpMsg {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub src_ip: u32,
    pub dst_ip: u32,
    pub icmp_type: u8,
    pub code: u8,
    /// The 4 type-specific bytes (the next-hop MTU in the low 16 bits for frag needed).
    pub info: u32,
}

/// Longest quote `icmp_error` sends: a full IPv4 header and 8 bytes (RFC 792).
pub const MAX_QUOTE: usize = 60 + 8;

/// Replaces the frame in `buf` with the ICMP error `m` quoting `quote_len` bytes (at most
/// `MAX_QUOTE`, cut to it) found at `quote_at` in `buf`. Returns the new frame length, or
/// `None` if the quote is not within `buf` or the message does not fit.
pub fn icmp_error(buf: &mut [u8], quote_at: usize, quote_len: usize, m: &IcmpMsg) -> Option<usize> {
    let quote_len = quote_len.min(MAX_QUOTE);
    let mut quote = [0u8; MAX_QUOTE];
    quote[..quote_len].copy_from_slice(buf.get(quote_at..quote_at.checked_add(quote_len)?)?);
    let ip = ethernet::HEADER_LEN;
    let icmp_len = icmp::HEADER_LEN + quote_len;
    let total = 20 + icmp_len;
    let new_len = ip + total;
    if new_len > buf.len() {
        return None;
    }
    set_macs(buf, m.dst_mac, m.src_mac);
    put16(buf, 12, ethernet::ETHERTYPE_IPV4);
    let h = &mut buf[ip..ip + 20];
    h[0] = 0x45;
    h[1] = 0xc0; // internetwork control, as Linux sends ICMP errors
    put16(h, 2, total as u16);
    put16(h, 4, 0);
    put16(h, 6, 0);
    h[8] = 64;
    h[9] = PROTO_ICMP;
    put16(h, 10, 0);
    put32(h, 12, m.src_ip);
    put32(h, 16, m.dst_ip);
    let c = csum::checksum(h);
    put16(h, 10, c);
    let b = &mut buf[ip + 20..ip + 20 + icmp_len];
    b[0] = m.icmp_type;
    b[1] = m.code;
    put16(b, 2, 0);
    put32(b, 4, m.info);
    b[8..].copy_from_slice(&quote[..quote_len]);
    let c = csum::checksum(b);
    put16(b, 2, c);
    Some(new_len)
}

/// Replaces the frame's TCP segment with the RST a host sends for a segment that belongs to
/// no connection (RFC 9293 3.10.7.1, RFC 793 "Reset Generation"; Linux's
/// `tcp_v4_send_reset`): from the segment's destination (the VIP:vport the client sent to)
/// back to its sender and source MAC, `our_mac` as source. A segment with ACK gets
/// `<SEQ=SEG.ACK><CTL=RST>`, one without `<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>`, where
/// SEG.LEN counts SYN and FIN. No options, window 0; IP as Linux sends it: TTL 64, DF, id 0,
/// the segment's DSCP without ECN bits (`ip_send_unicast_reply`). Returns the new frame
/// length (54 bytes: no padding), or `None` for a RST (never answered, RFC 9293) or a frame
/// that is not a complete TCP segment.
pub fn tcp_reset(buf: &mut [u8], flow: &Flow, our_mac: [u8; 6]) -> Option<usize> {
    const RST: u8 = 0x04;
    const SYN: u8 = 0x02;
    const FIN: u8 = 0x01;
    const ACK: u8 = 0x10;
    if flow.key.proto != ipv4::PROTO_TCP || flow.tcp_flags & RST != 0 {
        return None;
    }
    let (ip, l4) = (flow.l3_offset, flow.l4_offset);
    let hdr = buf.get(l4..l4 + 20)?;
    let (seq, ack) = (be32(hdr, 4), be32(hdr, 8));
    let doff = (hdr[12] >> 4) as usize * 4;
    let tos = buf[ip + 1] & !3;
    let seg_len = flow.ip_len.checked_sub(l4 - ip + doff)? as u32
        + (flow.tcp_flags & SYN != 0) as u32
        + (flow.tcp_flags & FIN != 0) as u32;
    let (rseq, rack, rflags) = if flow.tcp_flags & ACK != 0 {
        (ack, 0, RST)
    } else {
        (0, seq.wrapping_add(seg_len), RST | ACK)
    };
    let new_len = ethernet::HEADER_LEN + 40;
    if new_len > buf.len() {
        return None;
    }
    let mut client_mac = [0u8; 6];
    client_mac.copy_from_slice(&buf[6..12]);
    set_macs(buf, client_mac, our_mac);
    put16(buf, 12, ethernet::ETHERTYPE_IPV4);
    let ip = ethernet::HEADER_LEN;
    let (src, dst) = (flow.key.daddr, flow.key.saddr);
    let h = &mut buf[ip..ip + 20];
    h[0] = 0x45;
    h[1] = tos;
    put16(h, 2, 40);
    put16(h, 4, 0);
    put16(h, 6, DF);
    h[8] = 64;
    h[9] = ipv4::PROTO_TCP;
    put16(h, 10, 0);
    put32(h, 12, src);
    put32(h, 16, dst);
    let c = csum::checksum(h);
    put16(h, 10, c);
    let t = &mut buf[ip + 20..ip + 40];
    put16(t, 0, flow.key.dport);
    put16(t, 2, flow.key.sport);
    put32(t, 4, rseq);
    put32(t, 8, rack);
    t[12] = 5 << 4;
    t[13] = rflags;
    put16(t, 14, 0);
    put16(t, 16, 0);
    put16(t, 18, 0);
    // Pseudo-header (RFC 9293 3.1): source, destination, protocol, TCP length.
    let pseudo = (src >> 16) + (src & 0xffff) + (dst >> 16) + (dst & 0xffff) + 6 + 20;
    let c = csum::fold(csum::sum(t, pseudo));
    put16(t, 16, c);
    Some(new_len)
}

/// RFC 6040 section 4.1 (normal mode), Linux's `INET_ECN_encapsulate`: the outer TOS is the
/// inner one, except that a CE mark becomes ECT(0) outside (congestion is re-marked on the
/// outer header by the tunnel's own path and propagated at decapsulation).
pub fn ecn_encapsulate(tos: u8) -> u8 {
    const CE: u8 = 3;
    const ECT0: u8 = 2;
    if tos & 3 == CE {
        (tos & !3) | ECT0
    } else {
        tos
    }
}

/// Decrements the TTL of the IPv4 header at `l3` with an RFC 1624 checksum update, as
/// IPVS's `decrement_ttl` does for every packet it forwards (DR, TUN, NAT) and the kernel's
/// `ip_forward` for NAT replies. Returns false, leaving the header unchanged, when the TTL
/// is 1 or 0: the packet must not be forwarded (answer ICMP time exceeded instead).
///
/// Panics if the frame is shorter than `l3 + 20` (callers pass a parsed frame).
pub fn decrement_ttl(frame: &mut [u8], l3: usize) -> bool {
    let ttl = frame[l3 + 8];
    if ttl <= 1 {
        return false;
    }
    let old = be16(frame, l3 + 8);
    let new = old - 0x0100;
    put16(frame, l3 + 8, new);
    let c = be16(frame, l3 + 10);
    put16(frame, l3 + 10, csum::replace2(c, old, new));
    true
}

/// Relays an ICMP error from the real server's side to the client, as IPVS's
/// `ip_vs_nat_icmp` (out) does: the outer source becomes the VIP, the quoted request's
/// destination RIP:rport becomes VIP:vport. Checksums: outer IP, quoted IP and quoted
/// TCP/UDP (when the quote reaches its checksum field) incrementally, ICMP in full.
pub fn icmp_nat_to_client(frame: &mut [u8], e: &IcmpError, vip: u32, vport: u16) {
    icmp_nat(frame, e, 12, 16, 2, vip, vport);
}

/// Relays an ICMP error from the client's side to the NAT real server (IPVS's
/// `ip_vs_nat_icmp`, in): the outer destination becomes the RIP, the quoted reply's source
/// VIP:vport becomes RIP:rport; checksums as in `icmp_nat_to_client`.
pub fn icmp_nat_to_rs(frame: &mut [u8], e: &IcmpError, rip: u32, rport: u16) {
    icmp_nat(frame, e, 16, 12, 0, rip, rport);
}

/// Rewrites the outer address at `outer_at` and the quoted packet's address at `inner_at`
/// (IPv4 header offsets) and port at `port_at` (L4 offset) to `addr` and `port`.
fn icmp_nat(
    frame: &mut [u8],
    e: &IcmpError,
    outer_at: usize,
    inner_at: usize,
    port_at: usize,
    addr: u32,
    port: u16,
) {
    let (l3, q, l4) = (e.l3_offset, e.inner_ip, e.inner_l4);
    let old = be32(frame, l3 + outer_at);
    put32(frame, l3 + outer_at, addr);
    let c = be16(frame, l3 + 10);
    put16(frame, l3 + 10, csum::replace4(c, old, addr));

    let old_addr = be32(frame, q + inner_at);
    put32(frame, q + inner_at, addr);
    let c = be16(frame, q + 10);
    put16(frame, q + 10, csum::replace4(c, old_addr, addr));
    let old_port = be16(frame, l4 + port_at);
    put16(frame, l4 + port_at, port);
    if let Some((off, zero_is_none)) = l4_csum_field(e.inner.proto) {
        let at = l4 + off;
        if at + 2 <= e.ip_end {
            let c = be16(frame, at);
            if !(zero_is_none && c == 0) {
                let mut n = csum::replace4(c, old_addr, addr);
                n = csum::replace2(n, old_port, port);
                if zero_is_none && n == 0 {
                    n = 0xffff;
                }
                put16(frame, at, n);
            }
        }
    }
    let m = e.icmp_offset;
    put16(frame, m + 2, 0);
    let c = csum::checksum(&frame[m..e.ip_end]);
    put16(frame, m + 2, c);
}
