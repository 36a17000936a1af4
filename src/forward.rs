//! Per-frame forwarding logic: parse, find or create the connection, schedule, rewrite.
//!
//! Independent of AF_XDP so that it can be tested on plain buffers. Runs once per frame:
//! no allocation, no logging, no lock except the per-service scheduler lock for a *new*
//! connection and, for NAT, the lock of one shard of the shared NAT table; outcomes are
//! counted in plain per-worker counters.
//!
//! DR and TUN connections live in the worker's own table: their packets always arrive on
//! the same RX queue (ICMP errors about them excepted: `Verdict::Handoff`, src/handoff.rs).
//! NAT connections live in `NatConns`, shared by all workers, because a reply may arrive on
//! another queue or interface than its request (see docs/architecture.md).

pub(crate) mod icmp;

use crate::conn::{
    tcp_transition, ClientSide, Conn, ConnState, ConnTable, Direction, NatConns, Parked,
    ParkedConns,
};
use crate::dest::{DeadAction, DestRt, NO_PORT};
use crate::model::Forward;
use crate::packet::{ipv4, parse_flow, tcp_flags, DropReason, Flow, FlowKey};
use crate::service::{service_lookup_key, ServiceRt, Snapshot, NO_TEMPLATE};
use crate::sync::out::{self as sync_out, SyncQueues, SyncRec};
use crate::xmit;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, MutexGuard};

/// Largest number of interfaces ("ports") one worker serves (external + internal, ...).
pub const MAX_PORTS: usize = 4;

/// An interface a worker transmits on, as the forwarder needs it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortInfo {
    pub mac: [u8; 6],
    /// IP MTU of the interface, for the TUN size check.
    pub mtu: u16,
}

/// The fate of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Rewritten in place; transmit it on this port.
    Tx(u8),
    Drop(DropReason),
    /// An ICMP error about no connection of this worker's or the NAT table: unchanged, to
    /// be handed to the next worker, which may hold the DR/TUN connection (src/handoff.rs).
    Handoff,
}

/// Plain per-worker counters (single writer); published to shared atomics once per batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FwdCounters {
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub new_conns: u64,
    /// ICMP "fragmentation needed" answers sent for packets too big for the egress MTU.
    pub icmp_frag_needed: u64,
    /// Half-open entries evicted to make room for new connections (table pressure, e.g. a
    /// SYN flood); each is a connection the flood made the director create and forget.
    pub evicted: u64,
    /// NAT replies handled by another worker than the one that made the connection (the
    /// reason the NAT table is shared).
    pub nat_other_worker: u64,
    /// ICMP "time exceeded" answers sent for packets whose TTL ran out here.
    pub icmp_time_exceeded: u64,
    /// ICMP errors about connections relayed to the real server or the client.
    pub icmp_relayed: u64,
    /// ICMP errors that missed here and were handed to the other workers (counted once, by
    /// the worker that received the error).
    pub icmp_handoff: u64,
    /// ICMP errors handed over by another worker that this worker relayed (also counted in
    /// `icmp_relayed`).
    pub icmp_handoff_relayed: u64,
    /// Entries of removed or dead real servers expired at their next packet (policy
    /// `expire`, NAT replies under `reassign`, a client's RST under `reassign`); the packet
    /// is dropped and counted `dest_unavailable`.
    pub dead_expired: u64,
    /// UDP datagrams of a removed or dead server's entry scheduled afresh in the same call
    /// (policy `reassign`).
    pub dead_rescheduled: u64,
    /// TCP RSTs sent to clients of a removed or dead server (policy `reassign`).
    pub dead_reset: u64,
    /// Parked connections (synced, restored, moved from another queue) that became this
    /// worker's at their first packet here.
    #[serde(default)]
    pub imported: u64,
    /// TCP segments without a connection here handed to the other workers (their flow may
    /// have moved from another queue); dropped as `no_conn` if nobody holds it.
    #[serde(default)]
    pub moved_handoff: u64,
    /// Connections of this worker whose packets started arriving on another queue, moved
    /// to the parked store for that queue's worker.
    #[serde(default)]
    pub moved_out: u64,
    /// Connections created by a TCP segment without SYN that no worker held, on a service
    /// whose scheduler schedules mid-flow (`xvsd --mid-flow`, mh by default): flows a
    /// router moved here from another director, or that outlived a restart without state.
    #[serde(default)]
    pub mid_flow: u64,
    pub drops: [u64; DropReason::COUNT],
}

/// What to do with the entry of a removed or dead server after `Cx::unavailable`.
enum Dead {
    /// Answer with this verdict; `remove`: the entry goes too.
    Done(Verdict, bool),
    /// Remove the entry and schedule the packet afresh, as a new connection.
    Reschedule,
}

/// Where frames to `dest` leave (port, next-hop MAC, the port's info); `None` while the
/// route or MAC is unresolved, which also asks the daemon to resolve it now.
fn next_hop(ports: &[PortInfo; MAX_PORTS], dest: &DestRt) -> Option<(u8, [u8; 6], PortInfo)> {
    let port = dest.egress.load(Relaxed);
    let Some(mac) = dest
        .mac()
        .filter(|_| port != NO_PORT && (port as usize) < MAX_PORTS)
    else {
        dest.load.wants_resolution.store(true, Relaxed);
        return None;
    };
    Some((port as u8, mac, ports[port as usize]))
}

/// May the fast path carry this connection's packets now (client packets for DR and TUN,
/// both directions for NAT)? TCP once established, UDP from the first datagram.
fn fast_eligible(conn: &Conn) -> bool {
    matches!(conn.state, ConnState::Established | ConnState::Udp)
}

/// The workers saw a packet that took an installed connection out of the states the fast
/// path carries (a FIN or RST, which the fast path never takes): the rest of its life is
/// the workers' again, packet by packet.
fn fast_leave(conn: &mut Conn) {
    if conn.fast && !fast_eligible(conn) {
        if let Some(f) = crate::fastpath::get() {
            f.remove(&conn.key, conn.reply_key().as_ref());
        }
        conn.fast = false;
    }
}

/// Whether a packet the workers forwarded may (re)install its connection: not a fragment
/// or a SYN/FIN/RST, which the fast path never takes (those would otherwise reinstall an
/// installed flow at every such packet).
fn fast_candidate(buf: &[u8], flow: &Flow) -> bool {
    !xmit::is_fragment(buf, flow.l3_offset)
        && flow.tcp_flags & (tcp_flags::SYN | tcp_flags::FIN | tcp_flags::RST) == 0
}

/// Installs `conn`'s forwarding decision (to `mac` out of `pinfo`) into the fast path's flow
/// map. Called after a packet was forwarded on the workers' path in an eligible state: the
/// first time (the handshake's last ACK, a UDP flow's first datagram) and again whenever
/// such a packet reaches the workers anyway, which means the entry was evicted or went
/// stale (a frame the fast path refuses for its size or TTL never gets here: those return
/// earlier). A NAT connection gets two entries: its request (client tuple, rewritten to
/// RIP:rport out of the server's egress) and its reply (the server's tuple, rewritten from
/// VIP:vport back out of the client's port `conn.in_port` to `conn.client_mac`), as
/// `Cx::nat_request` and `Cx::nat_reply` do. A state change, so one syscall (two for NAT),
/// never a per-packet cost.
fn fast_install(
    conn: &mut Conn,
    port: u8,
    mac: [u8; 6],
    pinfo: PortInfo,
    ports: &[PortInfo; MAX_PORTS],
) {
    let Some(f) = crate::fastpath::get() else {
        return;
    };
    let dest = &*conn.dest;
    let (dest_slot, svc_slot) = (dest.stats.fast_slot(), conn.svc.stats.fast_slot());
    let ifindex = f.ifindex(port);
    if dest_slot == 0 || svc_slot == 0 || ifindex == 0 {
        return;
    }
    // The generation first, then the fate: the control thread sets the fate before it
    // bumps the generation, so an entry with the new generation never forwards for a server
    // whose new fate this check missed.
    let gen = dest.stats.fast_gen();
    if conn.svc.deleted.load(Relaxed)
        || dest
            .on_unavailable()
            .is_some_and(|a| a != DeadAction::Forward)
    {
        return;
    }
    let (method, tun_src) = match dest.forward {
        Forward::Route => (crate::bpf::maps::FAST_DR, 0),
        Forward::Tunnel => match dest.tun_src.load(Relaxed) {
            0 => return,
            a => (crate::bpf::maps::FAST_TUN, a),
        },
        Forward::Masq => (crate::bpf::maps::FAST_NAT_IN, 0),
    };
    let mut v = crate::bpf::maps::FlowVal {
        method,
        mtu: pinfo.mtu,
        ifindex,
        dmac: mac,
        smac: pinfo.mac,
        tun_saddr: tun_src.to_be(),
        tun_daddr: u32::from(dest.addr).to_be(),
        dest_slot,
        svc_slot,
        gen,
        // "Seen" now, by the workers: expiry and listings count from the later of this
        // and the fast path's own last frame.
        last_seen_ns: crate::bpf::monotonic_ns(),
        ..Default::default()
    };
    let mut reply = None;
    if dest.forward == Forward::Masq {
        let Some(rk) = conn.reply_key() else {
            return;
        };
        let back = f.ifindex(conn.in_port);
        if back == 0 {
            return;
        }
        // The same rewrite as xmit::nat_in / nat_out, with the deltas computed once here.
        let (vip, vport, rip, rport) = (conn.key.daddr, conn.key.dport, conn.rip, conn.rport);
        let (ip_in, l4_in) = crate::bpf::maps::nat_csum_deltas(vip, rip, vport, rport);
        v.nat_addr = rip.to_be();
        v.nat_port = rport.to_be();
        v.ip_csum_delta = ip_in;
        v.l4_csum_delta = l4_in;
        let cp = ports[conn.in_port as usize % MAX_PORTS];
        let (ip_out, l4_out) = crate::bpf::maps::nat_csum_deltas(rip, vip, rport, vport);
        let rv = crate::bpf::maps::FlowVal {
            method: crate::bpf::maps::FAST_NAT_OUT,
            mtu: cp.mtu,
            ifindex: back,
            dmac: conn.client_mac,
            smac: cp.mac,
            nat_addr: vip.to_be(),
            nat_port: vport.to_be(),
            ip_csum_delta: ip_out,
            l4_csum_delta: l4_out,
            ..v
        };
        reply = Some((rk, rv));
    }
    let again = conn.fast;
    // A failed replace may leave the old entries: still ours to remove later.
    conn.fast = f.install(&conn.key, &v, reply.as_ref().map(|(k, v)| (k, v)), again) || again;
}

/// The timer of an installed connection ran out (`ConnTable::expire_with`): if the fast path
/// forwarded its packets meanwhile, re-arm it from the last one instead of expiring a flow
/// that is alive. The new timer is at most half a timeout away: each re-arm also sends the
/// connection to the sync backup (`sync_refresh`), so a backup's copy, which times out a
/// full timeout after its last record, never lapses while the flow is alive.
fn fast_refresh(
    c: &mut Conn,
    now_ms: u64,
    snap: &Snapshot,
    sync: &SyncQueues,
    worker_id: usize,
) -> bool {
    let Some(f) = crate::fastpath::get() else {
        return false;
    };
    let t = snap.timeouts.get(c.state);
    let Some(seen) = f.last_seen_ms(&c.key, c.reply_key().as_ref()) else {
        return false;
    };
    if seen + t <= now_ms {
        return false;
    }
    c.expires_ms = (seen + t).min(now_ms + t / 2).max(now_ms + 1);
    f.note_refreshed();
    if sync.enabled() {
        push_sync(sync, worker_id, c, snap);
    }
    true
}

/// Queues `conn` (and its persistence template) for the sync backup, as IPVS's
/// `ip_vs_sync_conn` would at a sync point.
fn push_sync(sync: &SyncQueues, worker_id: usize, conn: &Conn, snap: &Snapshot) {
    let (proto, state) = (conn.key.proto, conn.state);
    sync.push(
        worker_id,
        SyncRec {
            key: conn.key,
            dest_addr: u32::from(conn.dest.addr),
            dest_port: if conn.rport != 0 {
                conn.rport
            } else {
                conn.dest.port
            },
            forward: conn.dest.forward,
            state,
            timeout_s: (snap.timeouts.get(state) / 1000) as u32,
            template: false,
        },
    );
    // "synchronize its controller": the template goes with its connection (IPVS
    // sends it at every packet of every connection it controls; xvs at the
    // connection's own sync points, which keeps the peer's copy as fresh).
    if conn.tpl != NO_TEMPLATE {
        if let Some(p) = conn.svc.persistence() {
            sync.push(
                worker_id,
                SyncRec {
                    key: FlowKey {
                        saddr: conn.key.saddr & p.netmask,
                        daddr: u32::from(conn.svc.key.addr),
                        sport: 0,
                        dport: conn.svc.key.port,
                        proto,
                    },
                    dest_addr: u32::from(conn.dest.addr),
                    dest_port: conn.dest.port,
                    forward: conn.dest.forward,
                    state: ConnState::None,
                    timeout_s: (p.timeout_ms / 1000) as u32,
                    template: true,
                },
            );
        }
    }
}

/// Swaps source and destination MAC and sends the frame back.
fn reflect(buf: &mut [u8], len: usize, in_port: u8) -> Verdict {
    if len < 12 {
        return Verdict::Drop(DropReason::Truncated);
    }
    let mut dst = [0u8; 6];
    dst.copy_from_slice(&buf[6..12]);
    buf.copy_within(0..6, 6);
    buf[0..6].copy_from_slice(&dst);
    Verdict::Tx(in_port)
}

pub struct Forwarder {
    /// Which stats slot this worker writes (see stats.rs).
    pub worker_id: usize,
    /// DR and TUN connections of this worker.
    pub conns: ConnTable,
    pub nat: Arc<NatConns>,
    /// Connections no worker holds yet (synced, restored, moved): looked up on a miss.
    pub parked: Arc<ParkedConns>,
    /// Outgoing connection sync (the master daemon drains it).
    pub sync: Arc<SyncQueues>,
    pub ports: [PortInfo; MAX_PORTS],
    pub counters: FwdCounters,
    sweep_shard: usize,
    /// Benchmark reference mode (`xvsd --reflect`): every frame goes back out of the port it
    /// came in on with its MACs swapped, with no parsing or load balancing: the I/O ceiling.
    pub reflect: bool,
    /// Other workers hold DR/TUN tables: an ICMP error that finds no connection here is
    /// handed to them (`Verdict::Handoff`) instead of dropped.
    pub handoff: bool,
}

impl Forwarder {
    pub fn new(
        worker_id: usize,
        conn_capacity: usize,
        ports: &[PortInfo],
        nat: Arc<NatConns>,
    ) -> Self {
        let mut p = [PortInfo::default(); MAX_PORTS];
        for (d, s) in p.iter_mut().zip(ports) {
            *d = *s;
        }
        Forwarder {
            worker_id,
            conns: ConnTable::with_capacity(conn_capacity),
            nat,
            // Placeholders until the daemon hands over the shared ones (`set_shared`).
            parked: Arc::new(ParkedConns::with_capacity(0)),
            sync: Arc::new(SyncQueues::with_len(1, 1)),
            ports: p,
            counters: FwdCounters::default(),
            sweep_shard: worker_id,
            reflect: false,
            handoff: false,
        }
    }

    /// Shares the daemon's parked connections and sync queues with this forwarder.
    pub fn set_shared(&mut self, parked: Arc<ParkedConns>, sync: Arc<SyncQueues>) {
        self.parked = parked;
        self.sync = sync;
    }

    /// Handles one frame in place. `buf` is the whole frame buffer and `len` the frame's
    /// length in it (TUN encapsulation and ICMP answers change it); `in_port` is the port
    /// the frame arrived on.
    pub fn process(
        &mut self,
        buf: &mut [u8],
        len: &mut usize,
        in_port: u8,
        snap: &Snapshot,
        now_ms: u64,
    ) -> Verdict {
        self.counters.rx_frames += 1;
        if self.reflect {
            self.counters.tx_frames += 1;
            return reflect(buf, *len, in_port);
        }
        let v = self.process_inner(buf, len, in_port, snap, now_ms, self.handoff);
        match v {
            Verdict::Tx(_) => self.counters.tx_frames += 1,
            Verdict::Drop(r) => self.counters.drops[r as usize] += 1,
            Verdict::Handoff if icmp::is_icmp(&buf[..*len]) => self.counters.icmp_handoff += 1,
            Verdict::Handoff => self.counters.moved_handoff += 1,
        }
        v
    }

    /// Handles a copy of an ICMP error that another worker found no connection for (see
    /// src/handoff.rs): looked up in this worker's own table only (the NAT table was asked
    /// already) and relayed from `buf`, a frame of this worker, as a local hit is.
    /// `Verdict::Handoff` asks for the next worker, unless `last`: then nobody holds the
    /// connection and the copy is dropped (`no_conn`), once for the error. Not counted in
    /// `rx_frames`: the frame was received by the first worker.
    /// A TCP segment that no worker holds ends, at the last worker asked, on the
    /// new-connection path without handoff: scheduled there if its service schedules
    /// mid-flow (`MidFlow`; the entry then moves to the receiving worker at the next
    /// segment, as a moved flow does), else dropped (`no_conn`). `in_port`: the port the
    /// first worker received it on.
    pub fn process_handoff(
        &mut self,
        buf: &mut [u8],
        len: &mut usize,
        in_port: u8,
        last: bool,
        snap: &Snapshot,
        now_ms: u64,
    ) -> Verdict {
        let is_icmp = icmp::is_icmp(&buf[..*len]);
        let v = if is_icmp {
            self.relay_icmp(buf, len, true)
        } else {
            self.moved_flow(buf, len, snap, now_ms)
        };
        let v = match v {
            Verdict::Handoff if last && !is_icmp => {
                self.process_inner(buf, len, in_port, snap, now_ms, false)
            }
            Verdict::Handoff if last => Verdict::Drop(DropReason::NoConn),
            v => v,
        };
        match v {
            Verdict::Tx(_) if !is_icmp => self.counters.tx_frames += 1,
            Verdict::Tx(_) => {
                self.counters.tx_frames += 1;
                self.counters.icmp_handoff_relayed += 1;
            }
            Verdict::Drop(r) => self.counters.drops[r as usize] += 1,
            Verdict::Handoff => {}
        }
        v
    }

    /// Bounded expiry work for one loop iteration: a slice of the worker's table and, when
    /// some service has NAT servers, of one NAT shard (workers take turns over the shards).
    /// Without NAT no shard lock is taken at all.
    pub fn expire(&mut self, now_ms: u64, budget: usize, snap: &Snapshot) {
        let (sync, wid) = (&*self.sync, self.worker_id);
        self.conns
            .expire_with(now_ms, budget, |c| fast_refresh(c, now_ms, snap, sync, wid));
        if snap.has_nat {
            self.sweep_shard = (self.sweep_shard + 1) % self.nat.shards();
            self.nat
                .shard(self.sweep_shard)
                .expire_with(now_ms, budget, |c| fast_refresh(c, now_ms, snap, sync, wid));
        }
    }

    /// A TCP segment without SYN that found no connection on the worker that received it
    /// (`Cx::new_conn`), handed round the ring: its flow may have moved from this worker's
    /// queue (an RSS indirection change, `ethtool -L`, a sender rehashing its queue after a
    /// retransmit timeout). If this worker holds the connection, it forwards the segment
    /// and moves the entry to the parked store, where the worker now receiving the flow
    /// takes it at its next segment: the entry follows its packets, each later packet is
    /// a local hit again, and no table is shared on the common path.
    fn moved_flow(
        &mut self,
        buf: &mut [u8],
        len: &mut usize,
        snap: &Snapshot,
        now_ms: u64,
    ) -> Verdict {
        let flow = match parse_flow(&buf[..*len]) {
            Ok(f) => f,
            Err(r) => return Verdict::Drop(r),
        };
        let k = flow.key;
        let Some(slot) = self.conns.lookup(&k) else {
            return Verdict::Handoff;
        };
        let Forwarder {
            worker_id,
            conns,
            parked,
            sync,
            ports,
            counters,
            ..
        } = self;
        let Some(conn) = conns.get_mut(slot) else {
            return Verdict::Handoff;
        };
        if conn.svc.deleted.load(Relaxed) {
            conns.remove(slot);
            return Verdict::Drop(DropReason::NoService);
        }
        let mut cx = Cx {
            worker_id: *worker_id,
            ports,
            counters: &mut *counters,
            sync,
            handoff: false,
            buf,
            flow: &flow,
            in_port: conn.in_port,
            snap,
            now_ms,
        };
        let v = match conn.dest.on_unavailable() {
            None | Some(DeadAction::Forward) => cx.forward_local(conn, len),
            // The policies act where the flow now arrives, after the move.
            Some(_) => Verdict::Drop(DropReason::DestUnavailable),
        };
        let p = Parked {
            dest_addr: u32::from(conn.dest.addr),
            dest_port: if conn.rport != 0 {
                conn.rport
            } else {
                conn.dest.port
            },
            forward: conn.dest.forward,
            state: conn.state,
            expires_ms: conn.expires_ms,
            client: ClientSide::UNKNOWN,
        };
        conns.remove(slot);
        if parked.put(k, p).is_ok() {
            counters.moved_out += 1;
        }
        v
    }

    /// `handoff`: a TCP segment without SYN that finds nothing may go to the other
    /// workers (off for the last worker asked, and with one worker).
    fn process_inner(
        &mut self,
        buf: &mut [u8],
        len: &mut usize,
        in_port: u8,
        snap: &Snapshot,
        now_ms: u64,
        handoff: bool,
    ) -> Verdict {
        let flow = match parse_flow(&buf[..*len]) {
            Ok(f) => f,
            // ICMP errors about connections (steered here by the XDP program): their own
            // branch, in forward/icmp.rs.
            Err(DropReason::NotIpv4L4) if icmp::is_icmp(&buf[..*len]) => {
                return self.relay_icmp(buf, len, false)
            }
            Err(r) => return Verdict::Drop(r),
        };
        let k = flow.key;
        // Split the borrows: the NAT shard guard borrows `nat` while `cx` is written.
        let Forwarder {
            worker_id,
            conns,
            nat,
            parked,
            sync,
            ports,
            counters,
            ..
        } = self;
        let mut cx = Cx {
            worker_id: *worker_id,
            ports,
            counters,
            sync,
            handoff,
            buf,
            flow: &flow,
            in_port,
            snap,
            now_ms,
        };

        // 1. An established DR/TUN connection of this worker.
        if let Some(slot) = conns.lookup(&k) {
            if let Some(conn) = conns.get_mut(slot) {
                if !conn.svc.deleted.load(Relaxed) {
                    // ip_vs_in: "Check the server status" (one relaxed load when it is fine).
                    match conn.dest.on_unavailable() {
                        None | Some(DeadAction::Forward) => {
                            let was = conn.state;
                            let v = cx.forward_local(conn, len);
                            conns.note_state(slot, was);
                            return v;
                        }
                        Some(a) => match cx.unavailable(a, len) {
                            Dead::Done(v, false) => return v,
                            Dead::Done(v, true) => {
                                conns.remove(slot);
                                return v;
                            }
                            // Removed below; the datagram then takes the new-connection path.
                            Dead::Reschedule => {}
                        },
                    }
                }
            }
            // A deleted service's connections die with it (IPVS flushes them).
            conns.remove(slot);
        }

        // 2. Addressed to a virtual service: an existing NAT connection or a new one.
        // Exact port first, then an all-ports (port 0) persistent service.
        let svc = snap
            .services
            .get(&service_lookup_key(k.daddr, k.dport, k.proto))
            .or_else(|| snap.services.get(&service_lookup_key(k.daddr, 0, k.proto)));
        if let Some(svc) = svc {
            // A service with NAT servers: the client's shard, locked once for the lookup
            // and, if this is a new connection, for making room and inserting it.
            let mut shard = svc
                .has_nat
                .load(Relaxed)
                .then(|| nat.shard(nat.shard_of(k.saddr, k.sport)));
            if let Some(sh) = shard.as_mut() {
                if let Some((slot, false)) = sh.find(&k) {
                    if let Some(conn) = sh.get_mut(slot) {
                        if !conn.svc.deleted.load(Relaxed) {
                            match conn.dest.on_unavailable() {
                                None | Some(DeadAction::Forward) => {
                                    let was = conn.state;
                                    let v = cx.nat_request(conn, len);
                                    sh.note_state(slot, was);
                                    return v;
                                }
                                Some(a) => match cx.unavailable(a, len) {
                                    Dead::Done(v, false) => return v,
                                    Dead::Done(v, true) => {
                                        sh.remove(slot);
                                        return v;
                                    }
                                    // Removed below, then scheduled under the same lock.
                                    Dead::Reschedule => {}
                                },
                            }
                        }
                    }
                    sh.remove(slot);
                }
            }
            // Not this worker's, not a NAT entry: one that some other source gave the
            // director (sync peer, restart, another queue) becomes this worker's now.
            if let Some(p) = parked.take(&k) {
                return cx.import(svc, p, parked, conns, shard, len);
            }
            return cx.new_conn(svc, conns, shard, len);
        }

        // 3. A NAT reply from a real server (steered here by the XDP reply map).
        if !snap.has_nat {
            return Verdict::Drop(DropReason::NoService);
        }
        let mut shard = nat.shard(nat.shard_of(k.daddr, k.dport));
        let found = shard.find(&k);
        if found.is_none() && !parked.is_empty() {
            // A reply for a synced or restored entry that no client segment has taken yet
            // (a download after a failover: the server retransmits, the client waits).
            if let Some(v) = cx.import_reply(parked, &mut shard, len) {
                return v;
            }
        }
        if let Some((slot, true)) = found {
            if let Some(conn) = shard.get_mut(slot) {
                if !conn.svc.deleted.load(Relaxed) {
                    // ip_vs_out hands a reply to handle_response without looking at the
                    // server's status: a removed server's replies still reach the client
                    // under the IPVS policy (uncounted, as ip_vs_out_stats skips servers
                    // without IP_VS_DEST_F_AVAILABLE). `expire` and `reassign` end the
                    // entry instead; the client needs no RST for a server's packet.
                    let action = conn.dest.on_unavailable();
                    if let Some(DeadAction::Expire | DeadAction::Reassign) = action {
                        cx.counters.dead_expired += 1;
                        shard.remove(slot);
                        return Verdict::Drop(DropReason::DestUnavailable);
                    }
                    let was = conn.state;
                    let v = cx.nat_reply(conn, len, action != Some(DeadAction::Drop));
                    shard.note_state(slot, was);
                    return v;
                }
            }
            shard.remove(slot);
        }
        Verdict::Drop(DropReason::NoService)
    }
}

/// What handling one frame needs, borrowed apart from the connection tables.
struct Cx<'a> {
    worker_id: usize,
    ports: &'a [PortInfo; MAX_PORTS],
    counters: &'a mut FwdCounters,
    sync: &'a SyncQueues,
    /// Other workers hold tables (see `Forwarder::handoff`).
    handoff: bool,
    buf: &'a mut [u8],
    flow: &'a Flow,
    in_port: u8,
    snap: &'a Snapshot,
    now_ms: u64,
}

impl Cx<'_> {
    /// A parked connection's first packet on this worker: it becomes a connection of this
    /// worker's table (DR/TUN) or of the client's NAT shard, with the state and expiry it
    /// was parked with, and the packet is forwarded as a local hit. Its real server must
    /// be in the service's list (IPVS `ip_vs_find_dest`: address, port, method); if it is
    /// not (yet), the entry goes back to wait for the configuration and the packet is
    /// dropped (`unbound`), so a flow restored before its rules survives their restore.
    fn import(
        &mut self,
        svc: &Arc<ServiceRt>,
        p: Parked,
        parked: &ParkedConns,
        conns: &mut ConnTable,
        mut shard: Option<MutexGuard<'_, ConnTable>>,
        len: &mut usize,
    ) -> Verdict {
        let k = self.flow.key;
        let set = svc.sched_set();
        let dest = set
            .dests
            .iter()
            .find(|d| {
                u32::from(d.addr) == p.dest_addr
                    && (d.port == p.dest_port || d.port == 0)
                    && d.forward == p.forward
            })
            .cloned();
        let Some(dest) = dest else {
            // Lost only if the store filled up meanwhile (then counted as refused later).
            let _ = parked.put(k, p);
            return Verdict::Drop(DropReason::Unbound);
        };
        let masq = dest.forward == Forward::Masq;
        let rport = if p.dest_port == 0 {
            k.dport
        } else {
            p.dest_port
        };
        let mut client_mac = [0u8; 6];
        client_mac.copy_from_slice(&self.buf[6..12]);
        let conn = Conn {
            key: k,
            state: p.state,
            expires_ms: p.expires_ms,
            svc: svc.clone(),
            dest: dest.clone(),
            tpl: NO_TEMPLATE,
            rip: if masq { u32::from(dest.addr) } else { 0 },
            rport,
            client_mac,
            in_port: self.in_port,
            worker: self.worker_id as u16,
            // As ip_vs_proc_conn: in_pkts = sync_threshold, old_state = the state.
            sync_pkts: sync_out::SYNC_THRESHOLD as u16,
            sync_state: p.state,
            fast: false,
        };
        self.counters.imported += 1;
        if masq {
            let Some(sh) = shard.as_mut() else {
                return Verdict::Drop(DropReason::NoService);
            };
            return self.admit(sh, conn, len, true, false);
        }
        drop(shard);
        self.admit(conns, conn, len, true, false)
    }

    /// A NAT reply (RIP:rport -> CIP:cport) that found no connection: the parked entry of
    /// the client's tuple for a service with this real server, if any, becomes a NAT entry
    /// of the client's shard (held: `shard`) and the reply goes to the client through it.
    /// The client's side (port, MAC) must be known: a synced entry does not carry it, so
    /// the first reply asks the daemon to look it up (`ParkedConns::take_for_reply`) and
    /// is dropped; the server's retransmission then finds it. `None`: nothing parked.
    fn import_reply(
        &mut self,
        parked: &ParkedConns,
        shard: &mut MutexGuard<'_, ConnTable>,
        len: &mut usize,
    ) -> Option<Verdict> {
        let k = self.flow.key;
        let services = self
            .snap
            .nat_rs
            .get(&service_lookup_key(k.saddr, k.sport, k.proto))?;
        for svc in services {
            let ckey = FlowKey {
                saddr: k.daddr,
                daddr: u32::from(svc.key.addr),
                sport: k.dport,
                dport: svc.key.port,
                proto: k.proto,
            };
            if parked.get(&ckey).is_none() {
                continue;
            }
            let Some(p) = parked.take_for_reply(&ckey) else {
                return Some(Verdict::Drop(DropReason::Unbound));
            };
            let dest = svc
                .sched_set()
                .dests
                .iter()
                .find(|d| {
                    u32::from(d.addr) == p.dest_addr
                        && d.port == p.dest_port
                        && d.forward == Forward::Masq
                })?
                .clone();
            let conn = Conn {
                key: ckey,
                state: p.state,
                expires_ms: p.expires_ms,
                svc: svc.clone(),
                dest,
                tpl: NO_TEMPLATE,
                rip: p.dest_addr,
                rport: p.dest_port,
                client_mac: p.client.mac,
                in_port: p.client.port,
                worker: self.worker_id as u16,
                sync_pkts: sync_out::SYNC_THRESHOLD as u16,
                sync_state: p.state,
                fast: false,
            };
            self.counters.imported += 1;
            if !self.make_room(shard) {
                return Some(Verdict::Drop(DropReason::TableFull));
            }
            let Some(slot) = self.insert(shard, conn) else {
                return Some(Verdict::Drop(DropReason::TableFull));
            };
            let c = shard.get_mut(slot)?;
            let was = c.state;
            let v = self.nat_reply(c, len, true);
            shard.note_state(slot, was);
            return Some(v);
        }
        None
    }

    /// A new connection to `svc`. `shard` is the client's NAT shard, locked, when the service
    /// has NAT servers (`ServiceRt::has_nat`, set before any NAT server is published), so
    /// room, scheduling and insertion happen under one lock (taken before the scheduler's
    /// and the persistence lock, the one order every path uses).
    fn new_conn(
        &mut self,
        svc: &Arc<ServiceRt>,
        conns: &mut ConnTable,
        mut shard: Option<MutexGuard<'_, ConnTable>>,
        len: &mut usize,
    ) -> Verdict {
        let k = self.flow.key;
        let is_tcp = k.proto == ipv4::PROTO_TCP;
        // IPVS creates TCP connections only on SYN (sloppy_tcp off). With several workers
        // the flow may be another worker's whose packets now arrive here: ask them first
        // (the last one asked comes back here with `handoff` off). Nobody has it: a
        // mid-flow service (`MidFlow`, mh by default) schedules the segment as sloppy TCP
        // does, RSTs excepted (tcp_conn_schedule); the others drop it.
        let mid_flow = is_tcp && self.flow.tcp_flags & tcp_flags::SYN == 0;
        if mid_flow {
            if self.handoff {
                return Verdict::Handoff;
            }
            if self.flow.tcp_flags & tcp_flags::RST != 0 || !self.snap.mid_flow.allows(svc) {
                return Verdict::Drop(DropReason::NoConn);
            }
        }
        // Room first, then the scheduler: an evicted half-open entry releases its template
        // before this connection asks for one (conn::template). The table is the NAT shard
        // for a service with NAT servers, else the worker's own; a service mixing both
        // methods gets room in the worker's table from the insert below instead.
        let room = match shard.as_mut() {
            Some(sh) => self.make_room(sh),
            None => self.make_room(conns),
        };
        if !room {
            return Verdict::Drop(DropReason::TableFull);
        }
        let (dest, tpl) = match svc.schedule(&k, self.now_ms) {
            Ok(p) => p,
            Err(r) => return Verdict::Drop(r),
        };
        let state = if is_tcp {
            ConnState::None
        } else {
            ConnState::Udp
        };
        let mut client_mac = [0u8; 6];
        client_mac.copy_from_slice(&self.buf[6..12]);
        let masq = dest.forward == Forward::Masq;
        // The real port: the server's, except for an all-ports service or a server without
        // a port, where the client's destination port is kept (as IPVS does).
        let rport = if svc.key.port == 0 || dest.port == 0 {
            k.dport
        } else {
            dest.port
        };
        let rip = if masq { u32::from(dest.addr) } else { 0 };
        let conn = Conn {
            key: k,
            state,
            expires_ms: self.now_ms,
            svc: svc.clone(),
            dest,
            tpl,
            rip,
            rport,
            client_mac,
            in_port: self.in_port,
            worker: self.worker_id as u16,
            sync_pkts: 0,
            sync_state: ConnState::None,
            fast: false,
        };
        // A refused connection is dropped here, which also releases its template. Room
        // was made above, before scheduling.
        if masq {
            let Some(shard) = shard.as_mut() else {
                // A NAT server in a service not flagged has_nat: cannot happen (the flag is
                // set first); refuse rather than track it where replies would not look.
                return Verdict::Drop(DropReason::NoService);
            };
            let v = self.admit(shard, conn, len, false, true);
            self.count_mid_flow(mid_flow, v);
            return v;
        }
        drop(shard);
        let v = self.admit(conns, conn, len, false, true);
        self.count_mid_flow(mid_flow, v);
        v
    }

    /// `mid_flow` counts connections created by a segment without SYN (`MidFlow`).
    fn count_mid_flow(&mut self, mid_flow: bool, v: Verdict) {
        if mid_flow && !matches!(v, Verdict::Drop(_)) {
            self.counters.mid_flow += 1;
        }
    }

    /// Inserts `conn` into `table` (after making room, if `room`) and forwards the packet
    /// through it: NAT in for a NAT entry, DR/TUN otherwise; `new`: counted as a new
    /// connection (an imported one is not).
    fn admit(
        &mut self,
        table: &mut ConnTable,
        conn: Conn,
        len: &mut usize,
        room: bool,
        new: bool,
    ) -> Verdict {
        if room && !self.make_room(table) {
            return Verdict::Drop(DropReason::TableFull);
        }
        let masq = conn.rip != 0;
        let Some(slot) = self.insert(table, conn) else {
            return Verdict::Drop(DropReason::TableFull);
        };
        let Some(c) = table.get_mut(slot) else {
            return Verdict::Drop(DropReason::NoConn);
        };
        let was = c.state;
        if new {
            self.count_new(c);
        }
        let v = if masq {
            self.nat_request(c, len)
        } else {
            self.forward_local(c, len)
        };
        table.note_state(slot, was);
        v
    }

    /// A client's packet for an entry whose server is removed or dead, and the service's
    /// policy says `a` (never `Forward`, handled by the caller). The entry's timer is never
    /// refreshed here.
    fn unavailable(&mut self, a: DeadAction, len: &mut usize) -> Dead {
        match a {
            // ip_vs_in without expire_nodest_conn: "don't restart its timer, and silently
            // drop the packet".
            DeadAction::Forward | DeadAction::Drop => {
                Dead::Done(Verdict::Drop(DropReason::DestUnavailable), false)
            }
            // expire_nodest_conn=1 as IPVS had it until Linux 5.9 (and still does when the
            // packet has a confirmed conntrack entry): ip_vs_conn_expire_now, then drop.
            DeadAction::Expire => {
                self.counters.dead_expired += 1;
                Dead::Done(Verdict::Drop(DropReason::DestUnavailable), true)
            }
            // Since 5.9, expire_nodest_conn=1 expires the entry and lets the packet go on
            // to ip_vs_try_to_schedule: a UDP datagram (or a new SYN reusing the tuple) gets
            // a new server at once, which is what this does in one call.
            DeadAction::Reassign
                if self.flow.key.proto != ipv4::PROTO_TCP
                    || self.flow.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK)
                        == tcp_flags::SYN =>
            {
                self.counters.dead_rescheduled += 1;
                Dead::Reschedule
            }
            // A TCP segment without SYN is not scheduled; IPVS would leave it to the
            // director's own stack, which resets it (no socket on VIP:vport). xvs sends that
            // RST itself, at once, instead of leaving the client retransmitting into a dead
            // server. A RST from the client is not answered, only its entry ends.
            DeadAction::Reassign => {
                let our = self.ports[self.in_port as usize % MAX_PORTS];
                match xmit::tcp_reset(self.buf, self.flow, our.mac) {
                    Some(n) => {
                        *len = n;
                        self.counters.dead_reset += 1;
                        Dead::Done(Verdict::Tx(self.in_port), true)
                    }
                    None => {
                        self.counters.dead_expired += 1;
                        Dead::Done(Verdict::Drop(DropReason::DestUnavailable), true)
                    }
                }
            }
        }
    }

    /// `ConnTable::make_room`, counting an eviction.
    fn make_room(&mut self, table: &mut ConnTable) -> bool {
        let before = table.evicted();
        let ok = table.make_room();
        self.counters.evicted += table.evicted() - before;
        ok
    }

    /// Inserts into `table`, counting an eviction the insert needed.
    fn insert(&mut self, table: &mut ConnTable, conn: Conn) -> Option<u32> {
        let before = table.evicted();
        let slot = table.insert(conn).ok()?;
        self.counters.evicted += table.evicted() - before;
        Some(slot)
    }

    fn count_new(&mut self, c: &Conn) {
        self.counters.new_conns += 1;
        c.svc.stats.add_conn(self.worker_id);
        c.dest.stats.add_conn(self.worker_id);
    }

    /// Updates state and expiry of `conn` for this packet.
    fn track(&self, conn: &mut Conn, dir: Direction) {
        if self.flow.key.proto == ipv4::PROTO_TCP {
            let next = tcp_transition(conn.state, self.flow.tcp_flags, dir);
            conn.set_state(next);
        }
        conn.expires_ms = self.now_ms + self.snap.timeouts.get(conn.state);
        if dir != Direction::Output {
            self.sync_out(conn);
        }
    }

    /// IPVS `ip_vs_sync_conn` for a client packet (`ip_vs_in`): counts it and, while a
    /// master sync daemon runs and the send rule says so, queues the entry for it. Plain
    /// field writes on the entry being updated anyway, and a bounded queue push.
    #[inline]
    fn sync_out(&self, conn: &mut Conn) {
        // Counted modulo 50000, a multiple of the sync period, so `pkts % 50` is IPVS's.
        conn.sync_pkts = if conn.sync_pkts >= 50_000 {
            1
        } else {
            conn.sync_pkts + 1
        };
        if !self.sync.enabled() {
            return;
        }
        let (proto, state) = (conn.key.proto, conn.state);
        if sync_out::needed(proto, state, &mut conn.sync_state, conn.sync_pkts as u32) {
            push_sync(self.sync, self.worker_id, conn, self.snap);
        }
    }

    /// Where frames to `dest` leave, and with which MACs; `None` while unresolved.
    fn next_hop(&self, dest: &DestRt) -> Option<(u8, [u8; 6], PortInfo)> {
        next_hop(self.ports, dest)
    }

    /// IPVS's `decrement_ttl`, before any rewrite, part 1: `None` if the packet may be
    /// forwarded (the caller then decrements the TTL, see `hop`). At TTL 1 or 0 the frame
    /// becomes an ICMP time exceeded from `from`, quoting the packet as it arrived, back
    /// out of the port it came in on.
    fn ttl_expired(&mut self, len: &mut usize, from: u32) -> Option<Verdict> {
        if self.buf[self.flow.l3_offset + 8] > 1 {
            return None;
        }
        let our = self.ports[self.in_port as usize % MAX_PORTS];
        Some(
            match xmit::icmp_time_exceeded(self.buf, self.flow, from, our.mac) {
                Some(n) => {
                    *len = n;
                    self.counters.icmp_time_exceeded += 1;
                    Verdict::Tx(self.in_port)
                }
                None => Verdict::Drop(DropReason::TtlExpired),
            },
        )
    }

    /// A packet that does not fit the egress MTU (IPVS's `ensure_mtu_is_adequate`): with DF,
    /// ICMP "fragmentation needed" advertising `mtu`, from `from`, back out of the in-port;
    /// without DF dropped and counted (IPVS would fragment; xvs does not).
    /// The quote shows the decremented TTL: IPVS checks the MTU after `decrement_ttl`. A
    /// dropped frame is left unchanged.
    fn too_big(&mut self, len: &mut usize, from: u32, mtu: u16) -> Verdict {
        if !xmit::dont_fragment(self.buf, self.flow) {
            return Verdict::Drop(DropReason::TooBig);
        }
        self.hop();
        let our = self.ports[self.in_port as usize % MAX_PORTS];
        match xmit::icmp_frag_needed(self.buf, self.flow, from, our.mac, mtu) {
            Some(n) => {
                *len = n;
                self.counters.icmp_frag_needed += 1;
                Verdict::Tx(self.in_port)
            }
            None => Verdict::Drop(DropReason::TooBig),
        }
    }

    /// Part 2 of `decrement_ttl`, once `ttl_expired` said the packet may go on.
    fn hop(&mut self) {
        let ok = xmit::decrement_ttl(self.buf, self.flow.l3_offset);
        debug_assert!(ok, "hop() without ttl_expired()");
    }

    /// DR and TUN: client-to-server packets only (IPVS's input-only state table).
    fn forward_local(&mut self, conn: &mut Conn, len: &mut usize) -> Verdict {
        self.track(conn, Direction::InputOnly);
        fast_leave(conn);
        let flow = self.flow;
        let dest = &*conn.dest;
        let Some((port, mac, pinfo)) = self.next_hop(dest) else {
            return Verdict::Drop(DropReason::NoNeighbour);
        };
        // IPVS: route, decrement the TTL, check the MTU, transmit (__ip_vs_get_out_rt).
        // Errors come from the VIP, the address the client sent to.
        if let Some(v) = self.ttl_expired(len, flow.key.daddr) {
            return v;
        }
        let overhead = if dest.forward == Forward::Tunnel {
            xmit::IPIP_OVERHEAD
        } else {
            0
        };
        if flow.ip_len + overhead > pinfo.mtu as usize {
            let mtu = (pinfo.mtu as usize).saturating_sub(overhead) as u16;
            return self.too_big(len, flow.key.daddr, mtu);
        }
        self.hop();
        if dest.forward == Forward::Tunnel {
            let src = dest.tun_src.load(Relaxed);
            match xmit::tun_encap(self.buf, flow, src, u32::from(dest.addr)) {
                Some(n) => *len = n,
                None => return Verdict::Drop(DropReason::TooBig),
            }
        }
        // DR: the IP packet goes unchanged to the real server's MAC.
        xmit::set_macs(self.buf, mac, pinfo.mac);
        conn.svc.stats.add_in(self.worker_id, flow.ip_len as u64);
        dest.stats.add_in(self.worker_id, flow.ip_len as u64);
        if fast_eligible(conn) && fast_candidate(self.buf, flow) {
            self.install(conn, port, mac, pinfo);
        }
        Verdict::Tx(port)
    }

    /// `fast_install`, and the sync record the fast path would otherwise swallow.
    fn install(&mut self, conn: &mut Conn, port: u8, mac: [u8; 6], pinfo: PortInfo) {
        let first = !conn.fast;
        fast_install(conn, port, mac, pinfo, self.ports);
        // IPVS syncs an established connection at its third client packet
        // (sync_threshold), which the workers no longer see once the fast path carries
        // the flow: it is synced when handed over instead, in the state IPVS would send.
        if first && conn.fast && conn.sync_state != conn.state && self.sync.enabled() {
            conn.sync_state = conn.state;
            push_sync(self.sync, self.worker_id, conn, self.snap);
        }
    }

    /// NAT, client to server: VIP:vport becomes RIP:rport.
    fn nat_request(&mut self, conn: &mut Conn, len: &mut usize) -> Verdict {
        self.track(conn, Direction::Input);
        fast_leave(conn);
        let dest = &*conn.dest;
        let Some((port, mac, pinfo)) = self.next_hop(dest) else {
            return Verdict::Drop(DropReason::NoNeighbour);
        };
        // TTL and MTU before the rewrite, as in ip_vs_nat_xmit: errors quote the packet
        // the client sent, from the VIP.
        let vip = self.flow.key.daddr;
        if let Some(v) = self.ttl_expired(len, vip) {
            return v;
        }
        if self.flow.ip_len > pinfo.mtu as usize {
            return self.too_big(len, vip, pinfo.mtu);
        }
        self.hop();
        // The real port chosen at scheduling time.
        let rport = conn.rport;
        xmit::nat_in(self.buf, self.flow, u32::from(dest.addr), rport);
        xmit::set_macs(self.buf, mac, pinfo.mac);
        conn.svc
            .stats
            .add_in(self.worker_id, self.flow.ip_len as u64);
        dest.stats.add_in(self.worker_id, self.flow.ip_len as u64);
        if fast_eligible(conn) && fast_candidate(self.buf, self.flow) {
            self.install(conn, port, mac, pinfo);
        }
        Verdict::Tx(port)
    }

    /// NAT, server to client: RIP:rport becomes VIP:vport, back out of the port the request
    /// came in on, to the MAC it came from. `count`: add to the statistics (not for a
    /// removed server, as `ip_vs_out_stats`).
    fn nat_reply(&mut self, conn: &mut Conn, len: &mut usize, count: bool) -> Verdict {
        self.track(conn, Direction::Output);
        fast_leave(conn);
        if conn.worker as usize != self.worker_id {
            self.counters.nat_other_worker += 1;
        }
        let (vip, vport) = (conn.key.daddr, conn.key.dport);
        let port = conn.in_port;
        // IPVS lets the kernel forward replies (ip_forward: TTL, then MTU, both before the
        // translation), which answers the real server from the director's own address
        // towards it (the route's preferred source; the VIP if that is not known yet).
        let ours = match conn.dest.tun_src.load(Relaxed) {
            0 => vip,
            a => a,
        };
        if let Some(v) = self.ttl_expired(len, ours) {
            return v;
        }
        let mtu = self.ports[port as usize % MAX_PORTS].mtu;
        if self.flow.ip_len > mtu as usize {
            return self.too_big(len, ours, mtu);
        }
        self.hop();
        if count {
            conn.svc
                .stats
                .add_out(self.worker_id, self.flow.ip_len as u64);
            conn.dest
                .stats
                .add_out(self.worker_id, self.flow.ip_len as u64);
        }
        let pinfo = self.ports[port as usize % MAX_PORTS];
        xmit::nat_out(self.buf, self.flow, vip, vport);
        xmit::set_macs(self.buf, conn.client_mac, pinfo.mac);
        // A reply reaching the workers in an eligible state: the connection's entries were
        // evicted or went stale (or it was imported from a reply): put both back, if the
        // request side's next hop is known (`fast_install` checks the server's fate).
        if count && fast_eligible(conn) && fast_candidate(self.buf, self.flow) {
            if let Some((rport, rmac, rinfo)) = self.next_hop(&conn.dest) {
                self.install(conn, rport, rmac, rinfo);
            }
        }
        Verdict::Tx(port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kconf::OnDead;
    use crate::model::{Forward, Protocol, ServiceKey};
    use crate::sched;
    use crate::service::MidFlow;
    use etherparse::PacketBuilder;

    const LOCAL: [u8; 6] = [0x02, 0, 0, 0, 0, 0x12];
    const CLIENT: [u8; 6] = [0x02, 0, 0, 0, 0, 0x64];

    fn setup(weights: &[u32]) -> (Snapshot, Vec<Arc<DestRt>>, Arc<ServiceRt>) {
        setup_sched("wrr", weights)
    }

    /// A DR service 10.0.0.88:80 with scheduler `name` and servers 10.0.0.9, .10, ...
    fn setup_sched(name: &str, weights: &[u32]) -> (Snapshot, Vec<Arc<DestRt>>, Arc<ServiceRt>) {
        let key = ServiceKey {
            proto: Protocol::Tcp,
            addr: "10.0.0.88".parse().unwrap(),
            port: 80,
        };
        let svc = Arc::new(ServiceRt::new(key, sched::by_name(name).unwrap()));
        let dests: Vec<_> = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let d = Arc::new(DestRt::new(
                    std::net::Ipv4Addr::new(10, 0, 0, 9 + i as u8),
                    80,
                    Forward::Route,
                    w,
                ));
                d.set_mac(Some([0x02, 0, 0, 0, 1, i as u8]));
                d.egress.store(0, Relaxed);
                d
            })
            .collect();
        svc.set_dests(dests.clone(), None);
        let mut snap = Snapshot::default();
        snap.services
            .insert(service_lookup_key(u32::from(key.addr), 80, 6), svc.clone());
        (snap, dests, svc)
    }

    fn fwd(cap: usize) -> Forwarder {
        Forwarder::new(
            0,
            cap,
            &[PortInfo {
                mac: LOCAL,
                mtu: 1500,
            }],
            Arc::new(NatConns::with_capacity(64)),
        )
    }

    /// Runs one frame through `f` in a 2 KiB buffer, as a worker would; the frame is
    /// replaced by what would be transmitted.
    fn run(f: &mut Forwarder, frame: &mut Vec<u8>, snap: &Snapshot, now: u64) -> Verdict {
        let mut buf = vec![0u8; 2048];
        buf[..frame.len()].copy_from_slice(frame);
        let mut len = frame.len();
        let v = f.process(&mut buf, &mut len, 0, snap, now);
        frame.clear();
        frame.extend_from_slice(&buf[..len]);
        v
    }

    fn tcp(sport: u16, flags: &str) -> Vec<u8> {
        let mut b = PacketBuilder::ethernet2(CLIENT, LOCAL)
            .ipv4([10, 0, 0, 100], [10, 0, 0, 88], 64)
            .tcp(sport, 80, 1, 65535);
        for f in flags.chars() {
            b = match f {
                'S' => b.syn(),
                'A' => b.ack(1),
                'F' => b.fin(),
                'R' => b.rst(),
                _ => b,
            };
        }
        let mut out = Vec::new();
        b.write(&mut out, &[]).unwrap();
        out
    }

    #[test]
    fn dr_rewrites_only_macs_and_follows_the_connection() {
        let (snap, dests, _svc) = setup(&[1, 1]);
        let mut f = fwd(16);
        let mut syn = tcp(1000, "S");
        let orig = syn.clone();
        assert_eq!(run(&mut f, &mut syn, &snap, 0), Verdict::Tx(0));
        assert_eq!(&syn[0..6], &[0x02, 0, 0, 0, 1, 0]);
        assert_eq!(&syn[6..12], &LOCAL);
        // DR changes nothing in the IP packet but the TTL (and so the header checksum).
        let mut want = orig.clone();
        assert!(xmit::decrement_ttl(&mut want, 14));
        assert_eq!(want[14 + 8], 63);
        assert_eq!(&syn[12..], &want[12..], "DR must only decrement the TTL");
        assert_eq!(dests[0].inactive(), 1);

        // The ACK follows the connection (rr would otherwise pick the other server).
        let mut ack = tcp(1000, "A");
        assert_eq!(run(&mut f, &mut ack, &snap, 1), Verdict::Tx(0));
        assert_eq!(&ack[0..6], &[0x02, 0, 0, 0, 1, 0]);
        assert_eq!(dests[0].active(), 1);
        assert_eq!(dests[0].inactive(), 0);

        // A new connection goes to the next server.
        let mut syn2 = tcp(1001, "S");
        assert_eq!(run(&mut f, &mut syn2, &snap, 2), Verdict::Tx(0));
        assert_eq!(&syn2[0..6], &[0x02, 0, 0, 0, 1, 1]);
        assert_eq!(f.counters.new_conns, 2);
        let st = dests[0].stats.read();
        assert_eq!((st.conns, st.inpkts, st.inbytes), (1, 2, 80));
    }

    fn parked_entry(dest: u32, state: ConnState) -> Parked {
        Parked {
            dest_addr: dest,
            dest_port: 80,
            forward: Forward::Route,
            state,
            expires_ms: 900_000,
            client: ClientSide::UNKNOWN,
        }
    }

    fn client_key(sport: u16) -> crate::packet::FlowKey {
        crate::packet::FlowKey {
            saddr: u32::from(std::net::Ipv4Addr::new(10, 0, 0, 100)),
            daddr: u32::from(std::net::Ipv4Addr::new(10, 0, 0, 88)),
            sport,
            dport: 80,
            proto: 6,
        }
    }

    #[test]
    fn a_parked_connection_becomes_this_workers_at_its_first_packet() {
        let (snap, dests, _svc) = setup(&[1, 1]);
        let mut f = fwd(16);
        f.set_shared(
            Arc::new(ParkedConns::with_capacity(64)),
            Arc::new(SyncQueues::new(1)),
        );
        // Parked on the *second* server: wrr would have picked the first.
        f.parked
            .put(
                client_key(2000),
                parked_entry(0x0a00_000a, ConnState::Established),
            )
            .unwrap();
        // A mid-stream ACK (no SYN): without the entry it would be dropped as no_conn.
        let mut ack = tcp(2000, "A");
        assert_eq!(run(&mut f, &mut ack, &snap, 10), Verdict::Tx(0));
        assert_eq!(&ack[0..6], &[0x02, 0, 0, 0, 1, 1], "to the parked server");
        assert_eq!(f.counters.imported, 1);
        assert_eq!(f.counters.new_conns, 0, "not a new connection");
        assert!(f.parked.is_empty(), "taken, not copied");
        assert_eq!(f.conns.len(), 1);
        assert_eq!(dests[1].active(), 1, "counted on its server");
        // Later packets are local hits.
        let mut ack2 = tcp(2000, "A");
        assert_eq!(run(&mut f, &mut ack2, &snap, 11), Verdict::Tx(0));
        assert_eq!(&ack2[0..6], &[0x02, 0, 0, 0, 1, 1]);
        assert_eq!(f.counters.imported, 1);
    }

    #[test]
    fn a_parked_connection_without_its_server_waits_for_it() {
        let (snap, _dests, _svc) = setup(&[1]);
        let mut f = fwd(16);
        f.set_shared(
            Arc::new(ParkedConns::with_capacity(64)),
            Arc::new(SyncQueues::new(1)),
        );
        // 10.0.0.77 is not a server of the service (rules not restored yet).
        f.parked
            .put(
                client_key(2001),
                parked_entry(0x0a00_004d, ConnState::Established),
            )
            .unwrap();
        assert_eq!(
            run(&mut f, &mut tcp(2001, "A"), &snap, 0),
            Verdict::Drop(DropReason::Unbound)
        );
        assert_eq!(f.parked.len(), 1, "still waiting");
        assert_eq!(f.conns.len(), 0);
    }

    #[test]
    fn a_flow_whose_packets_move_to_another_queue_follows_them() {
        let (snap, _dests, _svc) = setup(&[1, 1]);
        let parked = Arc::new(ParkedConns::with_capacity(64));
        let sync = Arc::new(SyncQueues::new(2));
        let (mut a, mut b) = (fwd(16), fwd(16));
        b.worker_id = 1;
        for f in [&mut a, &mut b] {
            f.set_shared(parked.clone(), sync.clone());
            f.handoff = true;
        }
        // Worker b makes a connection to the second server (wrr: b's first pick is the
        // first server, so burn one pick first)...
        assert_eq!(run(&mut b, &mut tcp(4000, "S"), &snap, 0), Verdict::Tx(0));
        let mut syn = tcp(4001, "S");
        assert_eq!(run(&mut b, &mut syn, &snap, 0), Verdict::Tx(0));
        let server = syn[0..6].to_vec();
        assert_eq!(run(&mut b, &mut tcp(4001, "A"), &snap, 1), Verdict::Tx(0));
        // ... then the flow's segments start arriving on a's queue: a asks the others.
        let mut seg = tcp(4001, "A");
        assert_eq!(run(&mut a, &mut seg, &snap, 2), Verdict::Handoff);
        assert_eq!(a.counters.moved_handoff, 1);
        // b holds it: forwards this copy and parks the entry for a.
        let mut buf = vec![0u8; 2048];
        buf[..seg.len()].copy_from_slice(&seg);
        let mut len = seg.len();
        assert_eq!(
            b.process_handoff(&mut buf, &mut len, 0, true, &snap, 3),
            Verdict::Tx(0)
        );
        assert_eq!(&buf[0..6], &server[..], "same server");
        assert_eq!((b.counters.moved_out, b.conns.len()), (1, 1));
        // The next segment on a is a's own now, to the same server.
        let mut next = tcp(4001, "A");
        assert_eq!(run(&mut a, &mut next, &snap, 4), Verdict::Tx(0));
        assert_eq!(&next[0..6], &server[..]);
        assert_eq!((a.counters.imported, a.conns.len()), (1, 1));
        assert!(parked.is_empty());
        // A segment nobody holds is dropped by the last worker asked.
        let mut stray = tcp(4999, "A");
        assert_eq!(run(&mut a, &mut stray, &snap, 5), Verdict::Handoff);
        let mut len = stray.len();
        buf[..len].copy_from_slice(&stray);
        assert_eq!(
            b.process_handoff(&mut buf, &mut len, 0, true, &snap, 5),
            Verdict::Drop(DropReason::NoConn)
        );
    }

    #[test]
    fn mid_flow_segments_of_mh_services_reach_the_server_the_other_director_chose() {
        // Two directors with the same configuration (built apart, as on two machines).
        let (snap1, _, _) = setup_sched("mh", &[1, 1, 1, 1]);
        let (snap2, _, _) = setup_sched("mh", &[1, 1, 1, 1]);
        let (mut d1, mut d2) = (fwd(256), fwd(256));
        for sport in 3000..3064u16 {
            // Director 1 saw the handshake...
            let mut syn = tcp(sport, "S");
            assert_eq!(run(&mut d1, &mut syn, &snap1, 0), Verdict::Tx(0));
            // ... then the router moved the flow to director 2, which has no entry.
            let mut seg = tcp(sport, "A");
            assert_eq!(run(&mut d2, &mut seg, &snap2, 1), Verdict::Tx(0));
            assert_eq!(seg[0..6], syn[0..6], "flow {sport}: same real server");
            let c = entry(&d2, &seg).expect("an entry was created");
            assert_eq!(c.state, ConnState::Established, "sloppy TCP: ACK from NONE");
        }
        assert_eq!(d2.counters.mid_flow, 64);
        assert_eq!(d2.counters.new_conns, 64);
        // Its next segment is an ordinary hit.
        assert_eq!(run(&mut d2, &mut tcp(3000, "A"), &snap2, 2), Verdict::Tx(0));
        assert_eq!(d2.counters.mid_flow, 64);
        // A RST of an unknown flow is never scheduled (tcp_conn_schedule).
        let v = run(&mut d2, &mut tcp(5000, "AR"), &snap2, 3);
        assert_eq!(v, Verdict::Drop(DropReason::NoConn));
        // Turned off: dropped, as IPVS without sloppy_tcp.
        let mut off = snap2;
        off.mid_flow = MidFlow::NONE;
        let v = run(&mut d2, &mut tcp(5001, "A"), &off, 4);
        assert_eq!(v, Verdict::Drop(DropReason::NoConn));
    }

    #[test]
    fn mid_flow_scheduling_is_for_hashing_schedulers_and_opt_in_for_sh() {
        for name in ["rr", "wrr", "wlc", "lc", "lblc"] {
            let (snap, _, _) = setup_sched(name, &[1, 1]);
            let mut f = fwd(16);
            let v = run(&mut f, &mut tcp(4000, "A"), &snap, 0);
            assert_eq!(v, Verdict::Drop(DropReason::NoConn), "{name}");
            assert_eq!(f.counters.mid_flow, 0);
        }
        let (mut snap, _, _) = setup_sched("sh", &[1, 1]);
        let mut f = fwd(16);
        let v = run(&mut f, &mut tcp(4000, "A"), &snap, 0);
        assert_eq!(v, Verdict::Drop(DropReason::NoConn), "sh: off by default");
        snap.mid_flow = MidFlow::parse("mh,sh").unwrap();
        assert_eq!(run(&mut f, &mut tcp(4000, "A"), &snap, 1), Verdict::Tx(0));
        assert_eq!(f.counters.mid_flow, 1);
        assert_eq!(MidFlow::parse("none").unwrap(), MidFlow::NONE);
        assert!(MidFlow::parse("rr").is_err());
        assert_eq!(MidFlow::default(), MidFlow::parse("mh").unwrap());
    }

    #[test]
    fn with_several_workers_a_mid_flow_segment_is_scheduled_once_nobody_holds_it() {
        let (snap, _, _) = setup_sched("mh", &[1, 1, 1]);
        let (other, _, _) = setup_sched("mh", &[1, 1, 1]);
        let parked = Arc::new(ParkedConns::with_capacity(64));
        let sync = Arc::new(SyncQueues::new(2));
        let (mut a, mut b) = (fwd(16), fwd(16));
        b.worker_id = 1;
        for f in [&mut a, &mut b] {
            f.set_shared(parked.clone(), sync.clone());
            f.handoff = true;
        }
        // Where another director's table sends the flow.
        let mut syn = tcp(4100, "S");
        assert_eq!(run(&mut fwd(16), &mut syn, &other, 0), Verdict::Tx(0));
        // Worker a has nothing: asks b first (the flow may have moved queues).
        let mut seg = tcp(4100, "A");
        assert_eq!(run(&mut a, &mut seg, &snap, 1), Verdict::Handoff);
        // b, the last worker asked, has nothing either: schedules it.
        let mut buf = vec![0u8; 2048];
        buf[..seg.len()].copy_from_slice(&seg);
        let mut len = seg.len();
        assert_eq!(
            b.process_handoff(&mut buf, &mut len, 0, true, &snap, 2),
            Verdict::Tx(0)
        );
        assert_eq!(buf[0..6], syn[0..6], "the same real server");
        assert_eq!((b.counters.mid_flow, b.counters.tx_frames), (1, 1));
        assert_eq!(b.counters.icmp_handoff_relayed, 0);
        // The entry then follows the flow to a, as a moved flow does.
        let mut next = tcp(4100, "A");
        assert_eq!(run(&mut a, &mut next, &snap, 3), Verdict::Handoff);
        let mut len = next.len();
        buf[..len].copy_from_slice(&next);
        assert_eq!(
            b.process_handoff(&mut buf, &mut len, 0, true, &snap, 3),
            Verdict::Tx(0)
        );
        assert_eq!(b.counters.moved_out, 1);
        let mut third = tcp(4100, "A");
        assert_eq!(run(&mut a, &mut third, &snap, 4), Verdict::Tx(0));
        assert_eq!(third[0..6], syn[0..6]);
        assert_eq!(
            (a.counters.imported, a.conns.len(), b.conns.len()),
            (1, 1, 0)
        );
    }

    #[test]
    fn connections_are_queued_for_sync_by_ipvs_rule_only_while_a_master_runs() {
        let (snap, _dests, _svc) = setup(&[1]);
        let mut f = fwd(16);
        let q = Arc::new(SyncQueues::new(1));
        f.set_shared(Arc::new(ParkedConns::with_capacity(64)), q.clone());
        let mut out = vec![];
        // No master: nothing queued.
        for (i, fl) in ["S", "A", "A", "A"].iter().enumerate() {
            run(&mut f, &mut tcp(3000, fl), &snap, i as u64);
        }
        q.drain(&mut out);
        assert!(out.is_empty());
        q.set_enabled(true);
        // Packets 1 (SYN), 2 (ACK: ESTABLISHED), 3 (sent), 4..52, 53 (sent).
        for i in 0..53u64 {
            let fl = if i == 0 { "S" } else { "A" };
            run(&mut f, &mut tcp(3001, fl), &snap, 100 + i);
        }
        q.drain(&mut out);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0].key, client_key(3001));
        assert_eq!(out[0].state, ConnState::Established);
        assert_eq!(out[0].timeout_s, 900);
        assert_eq!(out[0].dest_addr, 0x0a00_0009);
        // A FIN goes at once.
        run(&mut f, &mut tcp(3001, "FA"), &snap, 200);
        q.drain(&mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(out[2].state, ConnState::FinWait);
    }

    #[test]
    fn drops_are_counted_not_fatal() {
        let (snap, dests, svc) = setup(&[1]);
        let mut f = fwd(1);
        // Non-SYN for an unknown connection.
        assert_eq!(
            run(&mut f, &mut tcp(7, "A"), &snap, 0),
            Verdict::Drop(DropReason::NoConn)
        );
        // Truncated frame.
        let mut short = tcp(7, "S");
        short.truncate(40);
        assert_eq!(
            run(&mut f, &mut short, &snap, 0),
            Verdict::Drop(DropReason::Truncated)
        );
        // Table full (capacity 1) of an established connection: refused.
        assert_eq!(run(&mut f, &mut tcp(8, "S"), &snap, 0), Verdict::Tx(0));
        assert_eq!(run(&mut f, &mut tcp(8, "A"), &snap, 0), Verdict::Tx(0));
        assert_eq!(
            run(&mut f, &mut tcp(9, "S"), &snap, 0),
            Verdict::Drop(DropReason::TableFull)
        );
        // Unresolved MAC: connection kept, frame dropped, resolution requested.
        dests[0].set_mac(None);
        dests[0].load.wants_resolution.store(false, Relaxed);
        assert_eq!(
            run(&mut f, &mut tcp(8, "A"), &snap, 0),
            Verdict::Drop(DropReason::NoNeighbour)
        );
        assert!(dests[0].load.wants_resolution.load(Relaxed));
        // Quiesced: no new connections.
        dests[0].weight.store(0, Relaxed);
        f.conns.clear();
        assert_eq!(
            run(&mut f, &mut tcp(10, "S"), &snap, 0),
            Verdict::Drop(DropReason::NoDest)
        );
        // Deleted service: its connection is dropped.
        dests[0].weight.store(1, Relaxed);
        dests[0].set_mac(Some([2, 0, 0, 0, 1, 0]));
        assert_eq!(run(&mut f, &mut tcp(11, "S"), &snap, 0), Verdict::Tx(0));
        svc.deleted.store(true, Relaxed);
        let empty = Snapshot::default();
        assert_eq!(
            run(&mut f, &mut tcp(11, "A"), &empty, 0),
            Verdict::Drop(DropReason::NoService)
        );
        assert_eq!(f.counters.rx_frames, 9);
        assert_eq!(f.counters.drops.iter().sum::<u64>(), 6);
    }

    fn tcp_from(saddr: [u8; 4], sport: u16, flags: &str) -> Vec<u8> {
        let mut b = PacketBuilder::ethernet2(CLIENT, LOCAL)
            .ipv4(saddr, [10, 0, 0, 88], 64)
            .tcp(sport, 80, 1, 65535);
        for f in flags.chars() {
            b = match f {
                'S' => b.syn(),
                'A' => b.ack(1),
                _ => b,
            };
        }
        let mut out = Vec::new();
        b.write(&mut out, &[]).unwrap();
        out
    }

    #[test]
    fn syn_flood_filling_the_table_does_not_lock_clients_out() {
        let (snap, dests, _svc) = setup(&[1, 1]);
        let mut f = fwd(64);
        // An established client.
        assert_eq!(run(&mut f, &mut tcp(1000, "S"), &snap, 0), Verdict::Tx(0));
        assert_eq!(run(&mut f, &mut tcp(1000, "A"), &snap, 1), Verdict::Tx(0));
        // A spoofed flood: ten times the table in SYNs from forged sources.
        for i in 0..640u32 {
            let b = i.to_be_bytes();
            let mut syn = tcp_from([172, b[1], b[2], b[3]], 2000 + (i % 100) as u16, "S");
            assert_eq!(run(&mut f, &mut syn, &snap, 10), Verdict::Tx(0));
        }
        assert_eq!(f.conns.len(), 64);
        assert_eq!(f.counters.evicted, 640 - 63);
        // A legitimate client during the flood completes its handshake...
        assert_eq!(run(&mut f, &mut tcp(1001, "S"), &snap, 20), Verdict::Tx(0));
        assert_eq!(run(&mut f, &mut tcp(1001, "A"), &snap, 21), Verdict::Tx(0));
        // ...and the established ones are still there, still counted.
        assert_eq!(run(&mut f, &mut tcp(1000, "A"), &snap, 22), Verdict::Tx(0));
        let active: u32 = dests.iter().map(|d| d.active()).sum();
        assert_eq!(active, 2);
        assert_eq!(f.conns.half_open(), 62);
        assert_eq!(f.counters.drops[DropReason::TableFull as usize], 0);
    }

    #[test]
    fn ttl_one_is_answered_with_time_exceeded_and_counted() {
        let (snap, dests, _svc) = setup(&[1]);
        let mut f = fwd(4);
        let mut syn = tcp(1000, "S");
        syn[14 + 8] = 1;
        let c = crate::packet::csum::checksum(&{
            let mut h = syn[14..34].to_vec();
            h[10] = 0;
            h[11] = 0;
            h
        });
        syn[24..26].copy_from_slice(&c.to_be_bytes());
        let orig = syn.clone();
        assert_eq!(run(&mut f, &mut syn, &snap, 0), Verdict::Tx(0));
        // To the client's MAC, from the VIP, type 11 code 0, quoting the packet as sent.
        assert_eq!(&syn[0..6], &CLIENT);
        assert_eq!(syn[14 + 9], 1);
        assert_eq!(&syn[14 + 12..14 + 20], &[10, 0, 0, 88, 10, 0, 0, 100]);
        assert_eq!((syn[34], syn[35]), (11, 0));
        assert_eq!(&syn[42..42 + 28], &orig[14..14 + 28]);
        assert_eq!(f.counters.icmp_time_exceeded, 1);
        // The connection exists (IPVS schedules before routing); nothing reached a server.
        assert_eq!(dests[0].stats.read().inpkts, 0);
    }

    #[test]
    fn the_nat_table_is_swept_only_when_some_service_has_nat() {
        let (mut snap, _d, _s) = setup(&[1]);
        // A table big enough for several shards, so that moving on is visible.
        let nat = Arc::new(NatConns::with_capacity(1 << 16));
        assert!(nat.shards() > 1);
        let mut f = Forwarder::new(
            0,
            4,
            &[PortInfo {
                mac: LOCAL,
                mtu: 1500,
            }],
            nat,
        );
        let start = f.sweep_shard;
        f.expire(0, 64, &snap);
        assert_eq!(f.sweep_shard, start, "a NAT shard was swept without NAT");
        snap.has_nat = true;
        f.expire(0, 64, &snap);
        assert_eq!(f.sweep_shard, start + 1);
    }

    fn udp(sport: u16) -> Vec<u8> {
        let mut out = Vec::new();
        PacketBuilder::ethernet2(CLIENT, LOCAL)
            .ipv4([10, 0, 0, 100], [10, 0, 0, 88], 64)
            .udp(sport, 80)
            .write(&mut out, b"q")
            .unwrap();
        out
    }

    /// `setup` for UDP: the same service key on protocol 17.
    fn setup_udp(weights: &[u32]) -> (Snapshot, Vec<Arc<DestRt>>, Arc<ServiceRt>) {
        let (_, dests, _) = setup(weights);
        let key = ServiceKey {
            proto: Protocol::Udp,
            addr: "10.0.0.88".parse().unwrap(),
            port: 80,
        };
        let svc = Arc::new(ServiceRt::new(key, sched::by_name("wrr").unwrap()));
        svc.set_dests(dests.clone(), None);
        let mut snap = Snapshot::default();
        snap.services
            .insert(service_lookup_key(u32::from(key.addr), 80, 17), svc.clone());
        (snap, dests, svc)
    }

    fn entry<'a>(f: &'a Forwarder, frame: &[u8]) -> Option<&'a Conn> {
        let k = parse_flow(frame).unwrap().key;
        f.conns.lookup(&k).and_then(|s| f.conns.get(s))
    }

    #[test]
    fn a_removed_servers_packets_are_dropped_untouched_until_it_comes_back() {
        let (snap, dests, svc) = setup(&[1, 0]);
        let mut f = fwd(16);
        assert_eq!(run(&mut f, &mut tcp(1000, "S"), &snap, 0), Verdict::Tx(0));
        assert_eq!(run(&mut f, &mut tcp(1000, "A"), &snap, 10), Verdict::Tx(0));
        let expires = entry(&f, &tcp(1000, "A")).unwrap().expires_ms;
        // xvsadm -d: out of the list, flagged (what reconcile does).
        dests[0].set_removed(true);
        svc.set_dests(vec![dests[1].clone()], None);
        let sent = tcp(1000, "A");
        let mut ack = sent.clone();
        assert_eq!(
            run(&mut f, &mut ack, &snap, 5_000),
            Verdict::Drop(DropReason::DestUnavailable)
        );
        assert_eq!(ack, sent, "a dropped frame is left as it came");
        // ip_vs_in: "don't restart its timer": the entry keeps its expiry, and its counts.
        let c = entry(&f, &sent).expect("IPVS keeps the entry until it times out");
        assert_eq!(c.expires_ms, expires);
        assert_eq!(c.state, ConnState::Established);
        assert_eq!(dests[0].active(), 1);
        assert_eq!(
            dests[0].stats.read().inpkts,
            2,
            "dropped packets are not counted"
        );
        assert_eq!(f.counters.drops[DropReason::DestUnavailable as usize], 1);
        // A new connection goes to a live server only.
        dests[1].weight.store(1, Relaxed);
        assert_eq!(
            run(&mut f, &mut tcp(1001, "S"), &snap, 5_001),
            Verdict::Tx(0)
        );
        assert_eq!(dests[1].inactive(), 1);
        // Re-added (trash revival: the same object, back in the list): the flow resumes
        // and its timer is refreshed again.
        dests[0].set_removed(false);
        svc.set_dests(dests.clone(), None);
        assert_eq!(
            run(&mut f, &mut tcp(1000, "A"), &snap, 6_000),
            Verdict::Tx(0)
        );
        let c = entry(&f, &sent).unwrap();
        assert!(Arc::ptr_eq(&c.dest, &dests[0]));
        assert_eq!(c.expires_ms, 6_000 + 900_000);
        assert_eq!(dests[0].stats.read().inpkts, 3);
    }

    #[test]
    fn a_dead_server_keeps_its_connections_under_the_ipvs_policy_only() {
        let (snap, dests, _svc) = setup(&[1, 0]);
        let mut f = fwd(16);
        assert_eq!(run(&mut f, &mut tcp(1000, "S"), &snap, 0), Verdict::Tx(0));
        // inhibit_on_failure: weight 0 and the dead flag, still configured.
        dests[0].set_dead(true);
        dests[0].weight.store(0, Relaxed);
        dests[1].weight.store(1, Relaxed);
        assert_eq!(run(&mut f, &mut tcp(1000, "A"), &snap, 1), Verdict::Tx(0));
        let c = entry(&f, &tcp(1000, "A")).unwrap();
        assert!(Arc::ptr_eq(&c.dest, &dests[0]), "still the dead server's");
        // expire: the entry ends at its next packet, which is dropped; the client's next
        // SYN (same tuple) is scheduled to the live server.
        dests[0].set_on_dead(OnDead::Expire);
        assert_eq!(
            run(&mut f, &mut tcp(1000, "A"), &snap, 2),
            Verdict::Drop(DropReason::DestUnavailable)
        );
        assert!(entry(&f, &tcp(1000, "A")).is_none());
        assert_eq!(dests[0].total_conns(), 0, "uncounted with the entry");
        assert_eq!(f.counters.dead_expired, 1);
        let mut syn = tcp(1000, "S");
        assert_eq!(run(&mut f, &mut syn, &snap, 3), Verdict::Tx(0));
        assert_eq!(&syn[0..6], &[0x02, 0, 0, 0, 1, 1]);
    }

    #[test]
    fn reassign_moves_a_udp_flow_at_its_next_datagram_and_resets_tcp() {
        let (usnap, udests, _usvc) = setup_udp(&[1, 0]);
        let mut f = fwd(16);
        let mut q = udp(53);
        assert_eq!(run(&mut f, &mut q, &usnap, 0), Verdict::Tx(0));
        assert_eq!(&q[0..6], &[0x02, 0, 0, 0, 1, 0]);
        for d in &udests {
            d.set_on_dead(OnDead::Reassign);
        }
        udests[0].set_dead(true);
        udests[0].weight.store(0, Relaxed);
        udests[1].weight.store(1, Relaxed);
        // This very datagram goes to the live server, and the flow stays there.
        let mut q = udp(53);
        assert_eq!(run(&mut f, &mut q, &usnap, 1), Verdict::Tx(0));
        assert_eq!(&q[0..6], &[0x02, 0, 0, 0, 1, 1]);
        assert!(Arc::ptr_eq(&entry(&f, &udp(53)).unwrap().dest, &udests[1]));
        assert_eq!((udests[0].total_conns(), udests[1].total_conns()), (0, 1));
        assert_eq!(f.counters.dead_rescheduled, 1);
        assert_eq!(f.counters.new_conns, 2);
        let mut q = udp(53);
        assert_eq!(run(&mut f, &mut q, &usnap, 2), Verdict::Tx(0));
        assert_eq!(&q[0..6], &[0x02, 0, 0, 0, 1, 1]);
        assert_eq!(f.counters.dead_rescheduled, 1);

        // TCP: a RST back to the client, out of the port it came in on, and no entry left.
        let (snap, dests, svc) = setup(&[1, 0]);
        let mut f = fwd(16);
        assert_eq!(run(&mut f, &mut tcp(1000, "S"), &snap, 0), Verdict::Tx(0));
        assert_eq!(run(&mut f, &mut tcp(1000, "A"), &snap, 1), Verdict::Tx(0));
        dests[0].set_on_dead(OnDead::Reassign);
        dests[0].set_removed(true);
        svc.set_dests(vec![dests[1].clone()], None);
        let mut seg = tcp(1000, "A");
        assert_eq!(run(&mut f, &mut seg, &snap, 2), Verdict::Tx(0));
        assert_eq!(seg.len(), 54);
        assert_eq!(&seg[0..6], &CLIENT);
        assert_eq!(&seg[6..12], &LOCAL);
        assert_eq!(seg[14 + 20 + 13], tcp_flags::RST);
        assert!(entry(&f, &tcp(1000, "A")).is_none());
        assert_eq!(f.counters.dead_reset, 1);
        assert_eq!(dests[0].total_conns(), 0);
        // No live server yet: a new connection is refused.
        assert_eq!(
            run(&mut f, &mut tcp(1001, "S"), &snap, 3),
            Verdict::Drop(DropReason::NoDest)
        );
        // A SYN reusing the tuple of a removed server's entry is scheduled afresh in the
        // same call (not reset); the client's own RST is not answered, its entry just ends.
        dests[1].weight.store(1, Relaxed);
        let mut syn = tcp(1002, "S");
        dests[0].set_removed(false);
        svc.set_dests(dests.clone(), None);
        dests[1].weight.store(0, Relaxed);
        assert_eq!(run(&mut f, &mut syn, &snap, 4), Verdict::Tx(0));
        assert_eq!(&syn[0..6], &[0x02, 0, 0, 0, 1, 0]);
        dests[0].set_removed(true);
        svc.set_dests(vec![dests[1].clone()], None);
        dests[1].weight.store(1, Relaxed);
        let mut syn = tcp(1002, "S");
        assert_eq!(run(&mut f, &mut syn, &snap, 5), Verdict::Tx(0));
        assert_eq!(&syn[0..6], &[0x02, 0, 0, 0, 1, 1], "rescheduled, not reset");
        assert_eq!(f.counters.dead_rescheduled, 1);
        dests[1].set_on_dead(OnDead::Reassign);
        dests[1].set_dead(true);
        assert_eq!(
            run(&mut f, &mut tcp(1002, "R"), &snap, 6),
            Verdict::Drop(DropReason::DestUnavailable)
        );
        assert!(entry(&f, &tcp(1002, "A")).is_none());
    }

    #[test]
    fn timeouts_follow_state() {
        let (snap, _d, _s) = setup(&[1]);
        let mut f = fwd(4);
        run(&mut f, &mut tcp(5, "S"), &snap, 1000);
        let s = f
            .conns
            .lookup(&parse_flow(&tcp(5, "S")).unwrap().key)
            .unwrap();
        assert_eq!(f.conns.get(s).unwrap().state, ConnState::SynRecv);
        assert_eq!(f.conns.get(s).unwrap().expires_ms, 1000 + 60_000);
        run(&mut f, &mut tcp(5, "A"), &snap, 2000);
        assert_eq!(f.conns.get(s).unwrap().expires_ms, 2000 + 900_000);
        run(&mut f, &mut tcp(5, "FA"), &snap, 3000);
        assert_eq!(f.conns.get(s).unwrap().state, ConnState::FinWait);
        assert_eq!(f.conns.get(s).unwrap().expires_ms, 3000 + 120_000);
    }
}
