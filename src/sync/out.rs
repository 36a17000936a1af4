//! The data-path side of connection sync: IPVS's send rule, evaluated by the worker for
//! each client packet of a connection, and the bounded per-worker queues the master sync
//! thread drains.
//!
//! A worker never touches a socket or the sync daemon's buffers: when the rule says a
//! connection is due, it copies a small plain record into its own queue (a crossbeam
//! `ArrayQueue`, allocated at start). A full queue drops the record and counts it; the
//! connection is offered again at its next due packet. The sync thread turns records into
//! `wire::SyncConn`s and packs them into datagrams.

use super::wire::{self, SyncConn};
use crate::conn::{ClientSide, ConnState, Parked};
use crate::model::Forward;
use crate::packet::FlowKey;
use crossbeam::queue::ArrayQueue;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// `net.ipv4.vs.sync_threshold` default (first of the two values): a connection is sent
/// at its 3rd packet...
pub const SYNC_THRESHOLD: u32 = 3;
/// ... and then every `sync_period` (50) packets (the second value).
pub const SYNC_PERIOD: u32 = 50;

/// Records per worker queue: a full datagram holds 40 entries; the master drains every
/// 100 ms at the latest, so this is room for about 16k new connections per second per
/// worker between two drains.
pub const QUEUE_LEN: usize = 2048;

/// IPVS `ip_vs_sync_conn_needed` with the default sysctls (`sync_threshold 3 50`,
/// `sync_refresh_period 0`, `sync_persist_mode 0`), for a connection (templates are
/// sent with their connections by the caller). `pkts` counts the connection's client
/// packets including this one (IPVS `in_pkts`); `old_state` is the state last sent.
///
/// TCP is sent only in ESTABLISHED, FIN_WAIT, CLOSE, CLOSE_WAIT and TIME_WAIT: a change to
/// one of those other than ESTABLISHED at once, otherwise at packets 3, 53, 103, ... (a
/// change to ESTABLISHED waits for the next of those, as in the kernel, where `force` is
/// lost when the period check returns first). UDP: packets 3, 53, ...
pub fn needed(proto: u8, state: ConnState, old_state: &mut ConnState, pkts: u32) -> bool {
    use ConnState::*;
    if proto == wire::IPPROTO_TCP {
        if !matches!(state, Established | FinWait | Close | CloseWait | TimeWait) {
            return false;
        }
        if state != *old_state && state != Established {
            *old_state = state;
            return true;
        }
    }
    if pkts % SYNC_PERIOD != SYNC_THRESHOLD {
        return false;
    }
    *old_state = state;
    true
}

/// One connection to send, as the worker saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncRec {
    pub key: FlowKey,
    pub dest_addr: u32,
    pub dest_port: u16,
    pub forward: Forward,
    pub state: ConnState,
    /// The state's full timeout in seconds (IPVS sends `cp->timeout / HZ`).
    pub timeout_s: u32,
    /// A persistence template: `key.saddr` is the client group (masked), `key.sport` 0,
    /// `key.dport` the service's port; `state` is ignored.
    pub template: bool,
}

fn fwd_flags(f: Forward) -> u32 {
    match f {
        Forward::Masq => wire::IP_VS_CONN_F_MASQ,
        Forward::Tunnel => wire::IP_VS_CONN_F_TUNNEL,
        Forward::Route => wire::IP_VS_CONN_F_DROUTE,
    }
}

/// The IPVS state number of a connection state (`IP_VS_TCP_S_*`, UDP's single state 0).
pub fn ipvs_state(s: ConnState) -> u16 {
    match s {
        ConnState::Udp => wire::IP_VS_UDP_S_NORMAL,
        // ConnState's TCP discriminants are IPVS's numbers.
        s => s as u16,
    }
}

/// The connection state of an IPVS state number for `proto`, `None` if out of range.
pub fn conn_state(proto: u8, n: u16) -> Option<ConnState> {
    use ConnState::*;
    match proto {
        wire::IPPROTO_UDP => (n < wire::IP_VS_UDP_S_LAST).then_some(Udp),
        wire::IPPROTO_TCP => Some(match n {
            0 => None,
            1 => Established,
            2 => SynSent,
            3 => SynRecv,
            4 => FinWait,
            5 => TimeWait,
            6 => Close,
            7 => CloseWait,
            8 => LastAck,
            9 => Listen,
            10 => SynAck,
            _ => return Option::None,
        }),
        _ => Option::None,
    }
}

impl SyncRec {
    /// The entry as `ip_vs_sync_conn` writes it.
    pub fn to_wire(&self) -> SyncConn {
        let mut flags = fwd_flags(self.forward);
        if self.template {
            flags |= wire::IP_VS_CONN_F_TEMPLATE;
        } else if !self.state.is_active() {
            flags |= wire::IP_VS_CONN_F_INACTIVE;
        }
        SyncConn {
            protocol: self.key.proto,
            flags,
            state: if self.template {
                wire::IP_VS_CTPL_S_NONE
            } else {
                ipvs_state(self.state)
            },
            cport: self.key.sport,
            vport: self.key.dport,
            dport: self.dest_port,
            timeout_s: self.timeout_s,
            caddr: Ipv4Addr::from(self.key.saddr),
            vaddr: Ipv4Addr::from(self.key.daddr),
            daddr: Ipv4Addr::from(self.dest_addr),
            ..SyncConn::default()
        }
    }
}

/// Why a received entry is not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// IPv6, or a protocol xvs does not balance (SCTP, AH, ESP).
    Family,
    /// A persistence template (not applied yet, see docs/architecture.md).
    Template,
    /// LOCALNODE, BYPASS or an undefined method: nothing xvs forwards that way.
    Method,
    /// A state number out of range for the protocol.
    State,
}

/// A received entry as a parked connection: its flow key and what a worker needs to make
/// it a connection. `default_timeout_ms` gives the per-state timeout for entries without
/// one (v0 messages, timeout 0), as `ip_vs_proc_conn` uses the protocol's table.
pub fn from_wire(
    c: &SyncConn,
    now_ms: u64,
    default_timeout_ms: impl Fn(ConnState) -> u64,
) -> Result<(FlowKey, Parked), Unusable> {
    if c.v6 || !matches!(c.protocol, wire::IPPROTO_TCP | wire::IPPROTO_UDP) {
        return Err(Unusable::Family);
    }
    if c.is_template() {
        return Err(Unusable::Template);
    }
    let forward = match c.fwd_method() {
        wire::FwdMethod::Masq => Forward::Masq,
        wire::FwdMethod::Tunnel => Forward::Tunnel,
        wire::FwdMethod::DirectRoute => Forward::Route,
        _ => return Err(Unusable::Method),
    };
    let state = conn_state(c.protocol, c.state).ok_or(Unusable::State)?;
    let timeout_ms = if c.timeout_s > 0 {
        c.timeout_s as u64 * 1000
    } else {
        default_timeout_ms(state)
    };
    Ok((
        FlowKey {
            saddr: u32::from(c.caddr),
            daddr: u32::from(c.vaddr),
            sport: c.cport,
            dport: c.vport,
            proto: c.protocol,
        },
        Parked {
            dest_addr: u32::from(c.daddr),
            dest_port: c.dport,
            forward,
            state,
            expires_ms: now_ms + timeout_ms,
            client: ClientSide::UNKNOWN,
        },
    ))
}

/// The workers' outgoing queues, one per worker, and the switch the master daemon sets.
pub struct SyncQueues {
    enabled: AtomicBool,
    queues: Box<[ArrayQueue<SyncRec>]>,
    dropped: AtomicU64,
}

impl SyncQueues {
    pub fn new(workers: usize) -> Self {
        Self::with_len(workers, QUEUE_LEN)
    }

    pub fn with_len(workers: usize, len: usize) -> Self {
        SyncQueues {
            enabled: AtomicBool::new(false),
            queues: (0..workers.max(1)).map(|_| ArrayQueue::new(len)).collect(),
            dropped: AtomicU64::new(0),
        }
    }

    /// A master sync daemon runs: workers evaluate the send rule.
    #[inline]
    pub fn enabled(&self) -> bool {
        self.enabled.load(Relaxed)
    }

    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Relaxed);
        if !on {
            // Nothing will drain them: forget what is queued.
            for q in self.queues.iter() {
                while q.pop().is_some() {}
            }
        }
    }

    /// Queues `rec` from worker `worker`; a full queue drops it (counted).
    #[inline]
    pub fn push(&self, worker: usize, rec: SyncRec) {
        let q = &self.queues[worker % self.queues.len()];
        if q.push(rec).is_err() {
            self.dropped.fetch_add(1, Relaxed);
        }
    }

    /// Moves every queued record into `out` (the master sync thread).
    pub fn drain(&self, out: &mut Vec<SyncRec>) {
        for q in self.queues.iter() {
            while let Some(r) = q.pop() {
                out.push(r);
            }
        }
    }

    /// Records dropped because a queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ConnState::*;

    #[test]
    fn tcp_send_rule_as_ipvs() {
        // SYN (1: SYN_RECV), ACK (2: ESTABLISHED), data (3...): sent at 3, 53, 103.
        let mut old = None;
        let states = [SynRecv, Established];
        let mut sent = vec![];
        for pkts in 1..=110u32 {
            let st = states
                .get(pkts as usize - 1)
                .copied()
                .unwrap_or(Established);
            if needed(6, st, &mut old, pkts) {
                sent.push(pkts);
            }
        }
        assert_eq!(sent, vec![3, 53, 103]);
        // A FIN at packet 60 (FIN_WAIT) goes at once, then the period again.
        let mut old = Established;
        assert!(needed(6, FinWait, &mut old, 60));
        assert!(!needed(6, FinWait, &mut old, 61));
        assert!(needed(6, FinWait, &mut old, 103));
        // Half-open states are never sent.
        let mut old = None;
        assert!(!needed(6, SynRecv, &mut old, 3));
        // A change to ESTABLISHED waits for the period.
        let mut old = SynRecv;
        assert!(!needed(6, Established, &mut old, 4));
        assert_eq!(old, SynRecv);
        assert!(needed(6, Established, &mut old, 53));
        assert_eq!(old, Established);
    }

    #[test]
    fn udp_send_rule() {
        let mut old = Udp;
        let sent: Vec<u32> = (1..=60).filter(|&p| needed(17, Udp, &mut old, p)).collect();
        assert_eq!(sent, vec![3, 53]);
    }

    #[test]
    fn wire_round_trip() {
        let rec = SyncRec {
            key: FlowKey {
                saddr: 0x0a00_0064,
                daddr: 0x0a00_0058,
                sport: 40000,
                dport: 80,
                proto: 6,
            },
            dest_addr: 0x0a00_0009,
            dest_port: 8080,
            forward: Forward::Route,
            state: Established,
            timeout_s: 900,
            template: false,
        };
        let w = rec.to_wire();
        assert_eq!(w.flags, wire::IP_VS_CONN_F_DROUTE);
        assert_eq!(w.state, wire::IP_VS_TCP_S_ESTABLISHED);
        let (k, p) = from_wire(&w, 1000, |_| 0).unwrap();
        assert_eq!(k, rec.key);
        assert_eq!(p.dest_addr, rec.dest_addr);
        assert_eq!(p.dest_port, 8080);
        assert_eq!(p.forward, Forward::Route);
        assert_eq!(p.expires_ms, 1000 + 900_000);
        // Inactive flag for everything but ESTABLISHED; UDP state 0.
        let udp = SyncRec {
            state: Udp,
            key: FlowKey {
                proto: 17,
                ..rec.key
            },
            forward: Forward::Masq,
            ..rec
        }
        .to_wire();
        assert_eq!(udp.state, 0);
        assert_eq!(udp.flags, wire::IP_VS_CONN_F_INACTIVE);
        // v0 / timeout 0: the per-state default.
        let mut v0 = w.clone();
        v0.timeout_s = 0;
        assert_eq!(from_wire(&v0, 0, |s| s as u64).unwrap().1.expires_ms, 1);
    }

    #[test]
    fn unusable_entries() {
        let base = SyncConn {
            flags: wire::IP_VS_CONN_F_DROUTE,
            ..SyncConn::default()
        };
        let f = |c: SyncConn| from_wire(&c, 0, |_| 1).unwrap_err();
        assert_eq!(
            f(SyncConn {
                v6: true,
                ..base.clone()
            }),
            Unusable::Family
        );
        assert_eq!(
            f(SyncConn {
                protocol: 132,
                ..base.clone()
            }),
            Unusable::Family
        );
        assert_eq!(
            f(SyncConn {
                flags: wire::IP_VS_CONN_F_TEMPLATE,
                ..base.clone()
            }),
            Unusable::Template
        );
        assert_eq!(
            f(SyncConn {
                flags: wire::IP_VS_CONN_F_LOCALNODE,
                ..base.clone()
            }),
            Unusable::Method
        );
        assert_eq!(f(SyncConn { state: 11, ..base }), Unusable::State);
    }

    #[test]
    fn queues_bounded() {
        let q = SyncQueues::with_len(2, 4);
        let rec = SyncRec {
            key: FlowKey {
                saddr: 1,
                daddr: 2,
                sport: 3,
                dport: 4,
                proto: 6,
            },
            dest_addr: 5,
            dest_port: 6,
            forward: Forward::Route,
            state: Established,
            timeout_s: 900,
            template: false,
        };
        for _ in 0..6 {
            q.push(0, rec);
        }
        q.push(1, rec);
        assert_eq!(q.dropped(), 2);
        let mut out = vec![];
        q.drain(&mut out);
        assert_eq!(out.len(), 5);
    }
}
