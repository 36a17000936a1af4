//! Frame rewrites for the three LVS forwarding methods, in place on a checked frame.
//!
//! Each function takes a frame already validated by `packet::parse_flow` (so the offsets in
//! `Flow` are in bounds) and never panics on such a frame. Checksums are updated
//! incrementally (RFC 1624) where fields change, and computed in full for headers we build.

use crate::packet::{csum, ethernet, ipv4, Flow};

/// Bytes an IPIP outer header adds.
pub const IPIP_OVERHEAD: usize = 20;
/// IP protocol number of IP-in-IP (RFC 2003).
pub const PROTO_IPIP: u8 = 4;
const PROTO_ICMP: u8 = 1;
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

/// IPIP encapsulation in place: the IP packet moves 20 bytes up and an outer header
/// `outer_src -> outer_dst` (protocol 4, DF and TOS copied from the inner header, as IPVS
/// does) goes in front. `buf` is the whole frame buffer; returns the new frame length, or
/// `None` if `buf` has no room.
pub fn tun_encap(buf: &mut [u8], flow: &Flow, outer_src: u32, outer_dst: u32) -> Option<usize> {
    let ip = flow.l3_offset;
    let inner_len = flow.ip_len;
    let new_len = ip + IPIP_OVERHEAD + inner_len;
    if new_len > buf.len() {
        return None;
    }
    let tos = buf[ip + 1];
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
    h[8] = 64;
    h[9] = PROTO_IPIP;
    put16(h, 10, 0);
    put32(h, 12, outer_src);
    put32(h, 16, outer_dst);
    let c = csum::checksum(h);
    put16(h, 10, c);
    Some(new_len)
}

/// Replaces the frame with an ICMP "fragmentation needed" (type 3 code 4, RFC 1191) to the
/// sender, advertising `mtu`, as IPVS does when a tunnelled packet would not fit. The reply
/// goes from `src_ip` (the address the client sent to) back to the frame's source MAC.
/// Returns the new frame length, or `None` if `buf` is too small.
pub fn icmp_frag_needed(
    buf: &mut [u8],
    flow: &Flow,
    src_ip: u32,
    our_mac: [u8; 6],
    mtu: u16,
) -> Option<usize> {
    let ip = flow.l3_offset;
    // RFC 792: the original IP header plus the first 8 bytes of its payload.
    let quote_len = (flow.l4_offset - ip + 8).min(flow.ip_len);
    let mut quote = [0u8; 60 + 8];
    quote[..quote_len].copy_from_slice(&buf[ip..ip + quote_len]);
    let client = flow.key.saddr;
    let client_mac = {
        let mut m = [0u8; 6];
        m.copy_from_slice(&buf[6..12]);
        m
    };
    let icmp_len = 8 + quote_len;
    let total = 20 + icmp_len;
    let new_len = ethernet::HEADER_LEN + total;
    if new_len > buf.len() {
        return None;
    }
    set_macs(buf, client_mac, our_mac);
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
    put32(h, 12, src_ip);
    put32(h, 16, client);
    let c = csum::checksum(h);
    put16(h, 10, c);
    let m = &mut buf[ip + 20..ip + 20 + icmp_len];
    m[0] = 3; // destination unreachable
    m[1] = 4; // fragmentation needed and DF set
    put16(m, 2, 0);
    put16(m, 4, 0); // unused
    put16(m, 6, mtu); // next-hop MTU (RFC 1191)
    m[8..].copy_from_slice(&quote[..quote_len]);
    let c = csum::checksum(m);
    put16(m, 2, c);
    Some(new_len)
}
