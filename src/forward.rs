//! Per-frame forwarding logic: parse, find or create the connection, schedule, rewrite.
//!
//! Independent of AF_XDP so that it can be tested on plain buffers. Runs once per frame:
//! no allocation, no lock except the per-service scheduler lock for a *new* connection, no
//! logging; outcomes are counted in plain per-worker counters.

use crate::conn::{tcp_transition, Conn, ConnState, ConnTable, Direction, StateTimeouts};
use crate::packet::{ipv4, parse_flow, tcp_flags, DropReason, EthernetFrame};
use crate::runtime::{DestRt, ServiceRt};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// What the data path needs from the configuration, published as an immutable snapshot.
pub struct Snapshot {
    /// Services by `service_lookup_key(daddr, dport, proto)`.
    pub services: hashbrown::HashMap<u64, Arc<ServiceRt>, ahash::RandomState>,
    pub timeouts: StateTimeouts,
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            services: hashbrown::HashMap::with_hasher(ahash::RandomState::new()),
            timeouts: StateTimeouts::default(),
        }
    }
}

/// Packs (VIP, port, protocol) into one integer key.
pub fn service_lookup_key(daddr: u32, dport: u16, proto: u8) -> u64 {
    ((daddr as u64) << 32) | ((dport as u64) << 16) | proto as u64
}

/// The fate of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Rewritten in place; transmit it.
    Tx,
    Drop(DropReason),
}

/// Plain per-worker counters (single writer); published to shared atomics once per batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FwdCounters {
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub new_conns: u64,
    pub drops: [u64; DropReason::COUNT],
}

pub struct Forwarder {
    /// Which stats slot this worker writes (see stats.rs).
    pub worker_id: usize,
    pub conns: ConnTable,
    /// MAC of the interface frames leave through (the director's).
    pub local_mac: [u8; 6],
    pub counters: FwdCounters,
}

impl Forwarder {
    pub fn new(worker_id: usize, conn_capacity: usize, local_mac: [u8; 6]) -> Self {
        Forwarder {
            worker_id,
            conns: ConnTable::with_capacity(conn_capacity),
            local_mac,
            counters: FwdCounters::default(),
        }
    }

    /// Handles one frame in place.
    pub fn process(&mut self, frame: &mut [u8], snap: &Snapshot, now_ms: u64) -> Verdict {
        self.counters.rx_frames += 1;
        let v = self.process_inner(frame, snap, now_ms);
        match v {
            Verdict::Tx => self.counters.tx_frames += 1,
            Verdict::Drop(r) => self.counters.drops[r as usize] += 1,
        }
        v
    }

    fn process_inner(&mut self, frame: &mut [u8], snap: &Snapshot, now_ms: u64) -> Verdict {
        let flow = match parse_flow(frame) {
            Ok(f) => f,
            Err(r) => return Verdict::Drop(r),
        };
        let is_tcp = flow.key.proto == ipv4::PROTO_TCP;

        let mut slot = self.conns.lookup(&flow.key);
        if let Some(s) = slot {
            // A deleted service's connections die with it (IPVS flushes them).
            if self
                .conns
                .get(s)
                .is_some_and(|c| c.svc.deleted.load(Relaxed))
            {
                self.conns.remove(s);
                slot = None;
            }
        }
        let slot = match slot {
            Some(s) => s,
            None => {
                let k = &flow.key;
                let Some(svc) = snap
                    .services
                    .get(&service_lookup_key(k.daddr, k.dport, k.proto))
                else {
                    return Verdict::Drop(DropReason::NoService);
                };
                // IPVS creates TCP connections only on SYN (sloppy_tcp off).
                if is_tcp && flow.tcp_flags & tcp_flags::SYN == 0 {
                    return Verdict::Drop(DropReason::NoConn);
                }
                let Some((dest, tpl)) = svc.schedule(k, now_ms) else {
                    return Verdict::Drop(DropReason::NoDest);
                };
                let state = if is_tcp {
                    ConnState::None
                } else {
                    ConnState::Udp
                };
                match self.conns.insert(Conn {
                    key: *k,
                    state,
                    expires_ms: now_ms,
                    svc: svc.clone(),
                    dest,
                    tpl,
                }) {
                    Ok(s) => {
                        self.counters.new_conns += 1;
                        if let Some(c) = self.conns.get(s) {
                            c.svc.stats.add_conn(self.worker_id);
                            c.dest.stats.add_conn(self.worker_id);
                        }
                        s
                    }
                    Err(_) => return Verdict::Drop(DropReason::TableFull),
                }
            }
        };

        let Some(conn) = self.conns.get_mut(slot) else {
            return Verdict::Drop(DropReason::NoConn);
        };
        if is_tcp {
            // DR sees only client-to-server packets: IPVS's input-only table.
            let next = tcp_transition(conn.state, flow.tcp_flags, Direction::InputOnly);
            conn.set_state(next);
        }
        conn.expires_ms = now_ms + snap.timeouts.get(conn.state);
        let v = dr_rewrite(frame, &conn.dest, self.local_mac);
        if v == Verdict::Tx {
            conn.svc.stats.add_in(self.worker_id, flow.ip_len as u64);
            conn.dest.stats.add_in(self.worker_id, flow.ip_len as u64);
        }
        v
    }
}

/// Direct routing: the frame goes unchanged to the real server's MAC.
fn dr_rewrite(frame: &mut [u8], dest: &DestRt, local_mac: [u8; 6]) -> Verdict {
    let Some(mac) = dest.mac() else {
        dest.wants_resolution.store(true, Relaxed);
        return Verdict::Drop(DropReason::NoNeighbour);
    };
    // parse_flow already checked the Ethernet header length.
    let mut eth = EthernetFrame::new_unchecked(frame);
    eth.set_dst_mac(mac);
    eth.set_src_mac(local_mac);
    Verdict::Tx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Forward, Protocol, ServiceKey};
    use crate::sched;
    use etherparse::PacketBuilder;

    const LOCAL: [u8; 6] = [0x02, 0, 0, 0, 0, 0x12];
    const CLIENT: [u8; 6] = [0x02, 0, 0, 0, 0, 0x64];

    fn setup(weights: &[u32]) -> (Snapshot, Vec<Arc<DestRt>>, Arc<ServiceRt>) {
        let key = ServiceKey {
            proto: Protocol::Tcp,
            addr: "10.0.0.88".parse().unwrap(),
            port: 80,
        };
        let svc = Arc::new(ServiceRt::new(key, sched::by_name("wrr").unwrap()));
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
                d
            })
            .collect();
        {
            let mut core = svc.core.lock().unwrap();
            core.dests = dests.clone();
            let core = &mut *core;
            core.sched.update(&core.dests);
        }
        let mut snap = Snapshot::default();
        snap.services
            .insert(service_lookup_key(u32::from(key.addr), 80, 6), svc.clone());
        (snap, dests, svc)
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
        let mut f = Forwarder::new(0, 16, LOCAL);
        let mut syn = tcp(1000, "S");
        let orig = syn.clone();
        assert_eq!(f.process(&mut syn, &snap, 0), Verdict::Tx);
        assert_eq!(&syn[0..6], &[0x02, 0, 0, 0, 1, 0]);
        assert_eq!(&syn[6..12], &LOCAL);
        assert_eq!(&syn[12..], &orig[12..], "DR must not touch the IP packet");
        assert_eq!(dests[0].inactive_conns.load(Relaxed), 1);

        // The ACK follows the connection (rr would otherwise pick the other server).
        let mut ack = tcp(1000, "A");
        assert_eq!(f.process(&mut ack, &snap, 1), Verdict::Tx);
        assert_eq!(&ack[0..6], &[0x02, 0, 0, 0, 1, 0]);
        assert_eq!(dests[0].active_conns.load(Relaxed), 1);
        assert_eq!(dests[0].inactive_conns.load(Relaxed), 0);

        // A new connection goes to the next server.
        let mut syn2 = tcp(1001, "S");
        assert_eq!(f.process(&mut syn2, &snap, 2), Verdict::Tx);
        assert_eq!(&syn2[0..6], &[0x02, 0, 0, 0, 1, 1]);
        assert_eq!(f.counters.new_conns, 2);
        let st = dests[0].stats.read();
        assert_eq!((st.conns, st.inpkts, st.inbytes), (1, 2, 80));
    }

    #[test]
    fn drops_are_counted_not_fatal() {
        let (snap, dests, svc) = setup(&[1]);
        let mut f = Forwarder::new(0, 1, LOCAL);
        // Non-SYN for an unknown connection.
        assert_eq!(
            f.process(&mut tcp(7, "A"), &snap, 0),
            Verdict::Drop(DropReason::NoConn)
        );
        // Truncated frame.
        let mut short = tcp(7, "S");
        short.truncate(40);
        assert_eq!(
            f.process(&mut short, &snap, 0),
            Verdict::Drop(DropReason::Truncated)
        );
        // Table full (capacity 1).
        assert_eq!(f.process(&mut tcp(8, "S"), &snap, 0), Verdict::Tx);
        assert_eq!(
            f.process(&mut tcp(9, "S"), &snap, 0),
            Verdict::Drop(DropReason::TableFull)
        );
        // Unresolved MAC: connection kept, frame dropped, resolution requested.
        dests[0].set_mac(None);
        dests[0].wants_resolution.store(false, Relaxed);
        assert_eq!(
            f.process(&mut tcp(8, "A"), &snap, 0),
            Verdict::Drop(DropReason::NoNeighbour)
        );
        assert!(dests[0].wants_resolution.load(Relaxed));
        // Quiesced: no new connections.
        dests[0].weight.store(0, Relaxed);
        f.conns.clear();
        assert_eq!(
            f.process(&mut tcp(10, "S"), &snap, 0),
            Verdict::Drop(DropReason::NoDest)
        );
        // Deleted service: its connection is dropped.
        dests[0].weight.store(1, Relaxed);
        dests[0].set_mac(Some([2, 0, 0, 0, 1, 0]));
        assert_eq!(f.process(&mut tcp(11, "S"), &snap, 0), Verdict::Tx);
        svc.deleted.store(true, Relaxed);
        let empty = Snapshot::default();
        assert_eq!(
            f.process(&mut tcp(11, "A"), &empty, 0),
            Verdict::Drop(DropReason::NoService)
        );
        assert_eq!(f.counters.rx_frames, 8);
        assert_eq!(f.counters.drops.iter().sum::<u64>(), 6);
    }

    #[test]
    fn timeouts_follow_state() {
        let (snap, _d, _s) = setup(&[1]);
        let mut f = Forwarder::new(0, 4, LOCAL);
        f.process(&mut tcp(5, "S"), &snap, 1000);
        let s = f
            .conns
            .lookup(&parse_flow(&tcp(5, "S")).unwrap().key)
            .unwrap();
        assert_eq!(f.conns.get(s).unwrap().state, ConnState::SynRecv);
        assert_eq!(f.conns.get(s).unwrap().expires_ms, 1000 + 60_000);
        f.process(&mut tcp(5, "A"), &snap, 2000);
        assert_eq!(f.conns.get(s).unwrap().expires_ms, 2000 + 900_000);
        f.process(&mut tcp(5, "FA"), &snap, 3000);
        assert_eq!(f.conns.get(s).unwrap().state, ConnState::FinWait);
        assert_eq!(f.conns.get(s).unwrap().expires_ms, 3000 + 120_000);
    }
}
