//! Real-server MAC addresses from the kernel's neighbour table, over rtnetlink.
//!
//! The director never runs ARP itself: it reads what the kernel knows, and when an entry is
//! missing asks the kernel to resolve it (`NTF_USE`, as `ip neigh replace ... use` does), so
//! neighbour state stays the kernel's, visible with `ip neigh`.

use anyhow::{bail, Context, Result};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::collections::HashMap;
use std::net::Ipv4Addr;

/// What `ip route get` says about a destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteInfo {
    pub oif: u32,
    pub gateway: Option<Ipv4Addr>,
    pub prefsrc: Option<Ipv4Addr>,
}

impl RouteInfo {
    /// The address whose MAC a frame to the destination needs.
    pub fn next_hop(&self, dst: Ipv4Addr) -> Ipv4Addr {
        self.gateway.unwrap_or(dst)
    }
}

pub struct Neighbours {
    sock: Socket,
    seq: u32,
}

impl Neighbours {
    pub fn open() -> Result<Self> {
        let mut sock = Socket::new(NETLINK_ROUTE).context("opening rtnetlink socket")?;
        sock.bind_auto().context("binding rtnetlink socket")?;
        sock.connect(&SocketAddr::new(0, 0))
            .context("connecting rtnetlink socket")?;
        // Bounded waits: a control thread must never hang on netlink.
        let tv = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        // SAFETY: setsockopt with a valid fd, a valid pointer to a timeval and its size.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&sock),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            );
        }
        Ok(Neighbours { sock, seq: 1 })
    }

    fn send(&mut self, flags: u16, msg: RouteNetlinkMessage) -> Result<u32> {
        let mut hdr = NetlinkHeader::default();
        hdr.flags = flags;
        self.seq = self.seq.wrapping_add(1);
        hdr.sequence_number = self.seq;
        let mut req = NetlinkMessage::new(hdr, NetlinkPayload::from(msg));
        req.finalize();
        let mut buf = vec![0; req.header.length as usize];
        req.serialize(&mut buf[..]);
        self.sock
            .send(&buf, 0)
            .context("sending rtnetlink request")?;
        Ok(self.seq)
    }

    /// Reads replies to `seq` until DONE / ACK, handing each message to `f`.
    fn recv_until_done(&mut self, seq: u32, f: impl FnMut(RouteNetlinkMessage)) -> Result<()> {
        self.recv(seq, false, f)
    }

    /// Reads replies to `seq`, handing each message to `f`, until DONE / ACK or, for a
    /// request answered in one message (`single`), after the first datagram.
    fn recv(
        &mut self,
        seq: u32,
        single: bool,
        mut f: impl FnMut(RouteNetlinkMessage),
    ) -> Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        // Bounded: a dump of a huge table still ends; 10k datagrams is far beyond any.
        for _ in 0..10_000 {
            let n = self
                .sock
                .recv(&mut &mut buf[..], 0)
                .context("reading rtnetlink reply")?;
            let mut off = 0;
            while off < n {
                let msg: NetlinkMessage<RouteNetlinkMessage> =
                    NetlinkMessage::deserialize(&buf[off..n])
                        .context("decoding rtnetlink reply")?;
                let len = msg.header.length as usize;
                if msg.header.sequence_number == seq {
                    match msg.payload {
                        NetlinkPayload::Done(_) => return Ok(()),
                        NetlinkPayload::Error(e) => {
                            if e.code.is_none() {
                                return Ok(()); // an ACK
                            }
                            bail!("rtnetlink error: {e}");
                        }
                        NetlinkPayload::InnerMessage(m) => f(m),
                        _ => {}
                    }
                }
                if len == 0 {
                    break;
                }
                off += len;
            }
            if single {
                return Ok(());
            }
        }
        bail!("rtnetlink reply did not end")
    }

    /// The kernel's route to `dst` (`ip route get`): output interface, gateway if any, and
    /// the preferred source address.
    pub fn route_get(&mut self, dst: Ipv4Addr) -> Result<RouteInfo> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.destination_prefix_length = 32;
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::Inet(dst)));
        let seq = self.send(NLM_F_REQUEST, RouteNetlinkMessage::GetRoute(msg))?;
        let mut info = None;
        self.recv(seq, true, |m| {
            if let RouteNetlinkMessage::NewRoute(r) = m {
                let mut ri = RouteInfo::default();
                for a in &r.attributes {
                    match a {
                        RouteAttribute::Oif(i) => ri.oif = *i,
                        RouteAttribute::Gateway(RouteAddress::Inet(g)) => ri.gateway = Some(*g),
                        RouteAttribute::PrefSource(RouteAddress::Inet(p)) => ri.prefsrc = Some(*p),
                        _ => {}
                    }
                }
                info = Some(ri);
            }
        })
        .with_context(|| format!("looking up the route to {dst}"))?;
        info.with_context(|| format!("no route to {dst}"))
    }

    /// Every IPv4 address configured on this host (namespace).
    pub fn local_addrs(&mut self) -> Result<Vec<Ipv4Addr>> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        let seq = self.send(
            NLM_F_REQUEST | NLM_F_DUMP,
            RouteNetlinkMessage::GetAddress(msg),
        )?;
        let mut out = Vec::new();
        self.recv_until_done(seq, |m| {
            if let RouteNetlinkMessage::NewAddress(a) = m {
                for at in &a.attributes {
                    if let AddressAttribute::Local(std::net::IpAddr::V4(v4))
                    | AddressAttribute::Address(std::net::IpAddr::V4(v4)) = at
                    {
                        if !out.contains(v4) {
                            out.push(*v4);
                        }
                    }
                }
            }
        })?;
        Ok(out)
    }

    /// The IPv4 addresses on interface `ifindex` (the announce device's VIPs).
    pub fn addrs_on(&mut self, ifindex: u32) -> Result<Vec<Ipv4Addr>> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        let seq = self.send(
            NLM_F_REQUEST | NLM_F_DUMP,
            RouteNetlinkMessage::GetAddress(msg),
        )?;
        let mut out = Vec::new();
        self.recv_until_done(seq, |m| {
            if let RouteNetlinkMessage::NewAddress(a) = m {
                if a.header.index != ifindex {
                    return;
                }
                for at in &a.attributes {
                    if let AddressAttribute::Local(std::net::IpAddr::V4(v4)) = at {
                        if !out.contains(v4) {
                            out.push(*v4);
                        }
                    }
                }
            }
        })?;
        Ok(out)
    }

    /// `ip addr add|del ADDR/32 dev IFINDEX` (scope global: routing daemons skip host- and
    /// link-scope addresses).
    pub fn addr_change(&mut self, ifindex: u32, addr: Ipv4Addr, add: bool) -> Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = 32;
        msg.header.index = ifindex;
        let ip = std::net::IpAddr::V4(addr);
        msg.attributes.push(AddressAttribute::Local(ip));
        msg.attributes.push(AddressAttribute::Address(ip));
        let (flags, req) = if add {
            (
                NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
                RouteNetlinkMessage::NewAddress(msg),
            )
        } else {
            (
                NLM_F_REQUEST | NLM_F_ACK,
                RouteNetlinkMessage::DelAddress(msg),
            )
        };
        let seq = self.send(flags, req)?;
        self.recv_until_done(seq, |_| {}).with_context(|| {
            format!(
                "{} {addr}/32 on interface {ifindex}",
                if add { "adding" } else { "removing" }
            )
        })
    }

    /// Resolved IPv4 neighbours on every interface: (ifindex, address) -> MAC.
    pub fn dump_all(&mut self) -> Result<HashMap<(u32, Ipv4Addr), [u8; 6]>> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        let seq = self.send(
            NLM_F_REQUEST | NLM_F_DUMP,
            RouteNetlinkMessage::GetNeighbour(msg),
        )?;
        let mut out = HashMap::new();
        self.recv_until_done(seq, |m| {
            let RouteNetlinkMessage::NewNeighbour(n) = m else {
                return;
            };
            let ifindex = n.header.ifindex;
            let usable = matches!(
                n.header.state,
                NeighbourState::Reachable
                    | NeighbourState::Stale
                    | NeighbourState::Delay
                    | NeighbourState::Probe
                    | NeighbourState::Permanent
                    | NeighbourState::Noarp
            );
            if !usable {
                return;
            }
            let mut ip = None;
            let mut mac = None;
            for a in &n.attributes {
                match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => ip = Some(*v4),
                    NeighbourAttribute::LinkLocalAddress(l) if l.len() == 6 => {
                        let mut m = [0u8; 6];
                        m.copy_from_slice(l);
                        mac = Some(m);
                    }
                    _ => {}
                }
            }
            if let (Some(ip), Some(mac)) = (ip, mac) {
                out.insert((ifindex, ip), mac);
            }
        })?;
        Ok(out)
    }

    /// Asks the kernel to resolve `ip` on `ifindex` (sends ARP if it has no entry).
    pub fn trigger(&mut self, ifindex: u32, ip: Ipv4Addr) -> Result<()> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.ifindex = ifindex;
        msg.header.state = NeighbourState::None;
        msg.header.flags = NeighbourFlags::Use;
        msg.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        let seq = self.send(
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            RouteNetlinkMessage::NewNeighbour(msg),
        )?;
        self.recv_until_done(seq, |_| {})
            .with_context(|| format!("asking the kernel to resolve {ip}"))
    }
}
