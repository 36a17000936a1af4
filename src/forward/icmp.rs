//! The ICMP branch of the forwarder: ICMP errors about connections, relayed as IPVS relays
//! them (`ip_vs_in_icmp`, `ip_vs_out_icmp`, `ip_vs_icmp_xmit`, `ip_vs_nat_icmp`).
//!
//! The XDP program steers an ICMP error here only when the packet it quotes belongs to a
//! service (see bpf/xvs.bpf.c); the quote is then matched against the connection tables
//! with its addresses reversed (a quote is the packet the error is *about*, which went the
//! other way):
//!
//! | quoted packet | who sent the error | connection | relayed as |
//! |---|---|---|---|
//! | VIP:vport → CIP:cport (our or the RS's reply) | client side | DR/TUN, own table | unchanged, DR: MACs; TUN: IPIP to the RS |
//! | same | client side | NAT (request key) | outer dst → RIP, quoted src → RIP:rport, to the RS |
//! | CIP:cport → RIP:rport (a request we forwarded) | NAT real server's side | NAT (reply key) | outer src → VIP, quoted dst → VIP:vport, to the client |
//! | IPIP DIP → RIP around CIP:cport → VIP:vport | router on the tunnel's path | TUN, own table | a new error of the same type to the client, from the VIP; frag needed: MTU − 20 |
//!
//! The relayed error's TTL is decremented like any forwarded packet; an error whose TTL runs
//! out is dropped (nobody answers an ICMP error with another). Connection state and timers
//! are not touched, as in IPVS.

use super::{next_hop, Conn, Forwarder, PortInfo, Verdict, MAX_PORTS};
use crate::model::Forward;
use crate::packet::icmp::{self, IcmpError};
use crate::packet::{ethernet, DropReason, FlowKey};
use crate::xmit;
use std::sync::atomic::Ordering::Relaxed;

/// Is the frame an IPv4 ICMP packet? (Cheap pre-check; `icmp::parse_error` validates.)
pub(crate) fn is_icmp(frame: &[u8]) -> bool {
    frame.len() > ethernet::HEADER_LEN + 9
        && frame[12..14] == ethernet::ETHERTYPE_IPV4.to_be_bytes()
        && frame[ethernet::HEADER_LEN + 9] == icmp::PROTO_ICMP
}

fn reversed(k: &FlowKey) -> FlowKey {
    FlowKey {
        saddr: k.daddr,
        daddr: k.saddr,
        sport: k.dport,
        dport: k.sport,
        proto: k.proto,
    }
}

impl Forwarder {
    /// Handles one ICMP frame (see the module comment). `handed`: a copy another worker
    /// found no connection for, to be looked up in this worker's own table only. No
    /// connection here: `Verdict::Handoff` when there are other workers to ask (the frame
    /// is then unchanged), else dropped (`no_conn`).
    pub(super) fn relay_icmp(&mut self, buf: &mut [u8], len: &mut usize, handed: bool) -> Verdict {
        let e = match icmp::parse_error(&buf[..*len]) {
            Ok(e) => e,
            Err(r) => return Verdict::Drop(r),
        };
        let v = if e.tunnel {
            self.icmp_about_tunnel(buf, len, &e)
        } else {
            self.icmp_about_conn(buf, len, &e, handed)
        };
        match v {
            Some(v @ Verdict::Tx(_)) => {
                self.counters.icmp_relayed += 1;
                v
            }
            Some(v) => v,
            None if self.handoff => Verdict::Handoff,
            None => Verdict::Drop(DropReason::NoConn),
        }
    }

    /// `None`: no connection for the error here (the frame is unchanged).
    fn icmp_about_conn(
        &mut self,
        buf: &mut [u8],
        len: &mut usize,
        e: &IcmpError,
        handed: bool,
    ) -> Option<Verdict> {
        let rev = reversed(&e.inner);
        // About a reply to the client (VIP:vport -> CIP:cport): a DR/TUN connection of this
        // worker (or of another one: Verdict::Handoff, src/handoff.rs)...
        if let Some(conn) = self
            .conns
            .lookup(&rev)
            .and_then(|s| self.conns.get(s))
            .filter(|c| !c.svc.deleted.load(Relaxed))
        {
            return Some(relay_local(&self.ports, self.worker_id, buf, len, e, conn));
        }
        // The NAT table is shared: the worker that handed the error over asked it already.
        if handed {
            return None;
        }
        // ... or a NAT one, whose request key it is ...
        {
            let mut shard = self.nat.shard(self.nat.shard_of(rev.saddr, rev.sport));
            if let Some((slot, false)) = shard.find(&rev) {
                if let Some(conn) = shard.get_mut(slot).filter(|c| !c.svc.deleted.load(Relaxed)) {
                    return Some(relay_nat_to_rs(&self.ports, self.worker_id, buf, e, conn));
                }
            }
        }
        // ... or about a request forwarded to a NAT real server (CIP:cport -> RIP:rport),
        // whose reversal is the connection's reply key.
        let mut shard = self.nat.shard(self.nat.shard_of(rev.daddr, rev.dport));
        if let Some((slot, true)) = shard.find(&rev) {
            if let Some(conn) = shard.get_mut(slot).filter(|c| !c.svc.deleted.load(Relaxed)) {
                return Some(relay_nat_to_client(
                    &self.ports,
                    self.worker_id,
                    buf,
                    e,
                    conn,
                ));
            }
        }
        None
    }

    /// An error about an IPIP packet xvs sent to a TUN real server, from a router on the
    /// way: IPVS tells the client instead (`ip_vs_in_icmp`, "tunnel"), with an error of the
    /// same type about the client's own packet, from the VIP. For "fragmentation needed"
    /// the advertised MTU loses the 20 bytes of the IPIP header, and the error is only
    /// passed on when the client set DF (it does path MTU discovery). `None`: no
    /// connection here (the frame is unchanged).
    fn icmp_about_tunnel(
        &mut self,
        buf: &mut [u8],
        len: &mut usize,
        e: &IcmpError,
    ) -> Option<Verdict> {
        let conn = self
            .conns
            .lookup(&e.inner)
            .and_then(|s| self.conns.get(s))
            .filter(|c| !c.svc.deleted.load(Relaxed))?;
        Some(self.tunnel_error(buf, len, e, conn))
    }

    /// The rest of `icmp_about_tunnel`, for the connection found.
    fn tunnel_error(&self, buf: &mut [u8], len: &mut usize, e: &IcmpError, conn: &Conn) -> Verdict {
        // Only for our tunnel to this connection's real server (IPVS: ip_vs_find_tunnel).
        let tunnel_dst = u32::from_be_bytes([
            buf[e.quote_offset + 16],
            buf[e.quote_offset + 17],
            buf[e.quote_offset + 18],
            buf[e.quote_offset + 19],
        ]);
        if conn.dest.forward != Forward::Tunnel || tunnel_dst != u32::from(conn.dest.addr) {
            return Verdict::Drop(DropReason::NoConn);
        }
        let at = e.icmp_offset + 4;
        let mut info = u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
        if e.icmp_type == icmp::TYPE_DEST_UNREACH && e.code == icmp::CODE_FRAG_NEEDED {
            if !e.inner_df {
                return Verdict::Drop(DropReason::NoConn);
            }
            let mut mtu = info & 0xffff;
            if mtu > 68 + xmit::IPIP_OVERHEAD as u32 {
                mtu -= xmit::IPIP_OVERHEAD as u32;
            }
            info = mtu;
        }
        let port = conn.in_port;
        let m = xmit::IcmpMsg {
            dst_mac: conn.client_mac,
            src_mac: self.ports[port as usize % MAX_PORTS].mac,
            src_ip: e.inner.daddr,
            dst_ip: e.inner.saddr,
            icmp_type: e.icmp_type,
            code: e.code,
            info,
        };
        let quote_len = (e.inner_l4 + 8).min(e.ip_end) - e.inner_ip;
        match xmit::icmp_error(buf, e.inner_ip, quote_len, &m) {
            Some(n) => {
                *len = n;
                conn.dest.stats.add_out(self.worker_id, n as u64);
                Verdict::Tx(port)
            }
            None => Verdict::Drop(DropReason::TooBig),
        }
    }
}

/// DR and TUN: the error goes to the real server as it is, like the connection's packets
/// (IPVS: `cp->packet_xmit` on the ICMP packet): DR with the real server's MAC, TUN inside
/// IPIP. The real server holds the VIP, the error's destination.
fn relay_local(
    ports: &[super::PortInfo; MAX_PORTS],
    worker: usize,
    buf: &mut [u8],
    len: &mut usize,
    e: &IcmpError,
    conn: &Conn,
) -> Verdict {
    let dest = &*conn.dest;
    let Some((port, mac, PortInfo { mtu, .. })) = next_hop(ports, dest) else {
        return Verdict::Drop(DropReason::NoNeighbour);
    };
    let ip_len = e.ip_end - e.l3_offset;
    let tunnel = dest.forward == Forward::Tunnel;
    let overhead = if tunnel { xmit::IPIP_OVERHEAD } else { 0 };
    if ip_len + overhead > mtu as usize {
        return Verdict::Drop(DropReason::TooBig);
    }
    if !xmit::decrement_ttl(buf, e.l3_offset) {
        return Verdict::Drop(DropReason::TtlExpired);
    }
    if tunnel {
        let src = dest.tun_src.load(Relaxed);
        match xmit::tun_encap_packet(buf, e.l3_offset, ip_len, src, u32::from(dest.addr)) {
            Some(n) => *len = n,
            None => return Verdict::Drop(DropReason::TooBig),
        }
    }
    xmit::set_macs(buf, mac, ports[port as usize].mac);
    conn.svc.stats.add_in(worker, ip_len as u64);
    dest.stats.add_in(worker, ip_len as u64);
    Verdict::Tx(port)
}

/// NAT, an error from the client's side about a reply: to the real server, translated.
fn relay_nat_to_rs(
    ports: &[super::PortInfo; MAX_PORTS],
    worker: usize,
    buf: &mut [u8],
    e: &IcmpError,
    conn: &Conn,
) -> Verdict {
    let dest = &*conn.dest;
    let Some((port, mac, PortInfo { mtu, .. })) = next_hop(ports, dest) else {
        return Verdict::Drop(DropReason::NoNeighbour);
    };
    let ip_len = e.ip_end - e.l3_offset;
    if ip_len > mtu as usize {
        return Verdict::Drop(DropReason::TooBig);
    }
    if !xmit::decrement_ttl(buf, e.l3_offset) {
        return Verdict::Drop(DropReason::TtlExpired);
    }
    xmit::icmp_nat_to_rs(buf, e, u32::from(dest.addr), conn.rport);
    xmit::set_macs(buf, mac, ports[port as usize].mac);
    conn.svc.stats.add_in(worker, ip_len as u64);
    dest.stats.add_in(worker, ip_len as u64);
    Verdict::Tx(port)
}

/// NAT, an error from the real server's side about a request: to the client, translated,
/// out of the port the connection's requests come in on, to the MAC they come from.
fn relay_nat_to_client(
    ports: &[super::PortInfo; MAX_PORTS],
    worker: usize,
    buf: &mut [u8],
    e: &IcmpError,
    conn: &Conn,
) -> Verdict {
    let port = conn.in_port;
    let pinfo = ports[port as usize % MAX_PORTS];
    let ip_len = e.ip_end - e.l3_offset;
    if ip_len > pinfo.mtu as usize {
        return Verdict::Drop(DropReason::TooBig);
    }
    if !xmit::decrement_ttl(buf, e.l3_offset) {
        return Verdict::Drop(DropReason::TtlExpired);
    }
    xmit::icmp_nat_to_client(buf, e, conn.key.daddr, conn.key.dport);
    xmit::set_macs(buf, conn.client_mac, pinfo.mac);
    conn.svc.stats.add_out(worker, ip_len as u64);
    conn.dest.stats.add_out(worker, ip_len as u64);
    Verdict::Tx(port)
}
