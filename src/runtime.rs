//! Runtime objects shared between the control thread and the workers.
//!
//! A `DestRt` (real server) and a `ServiceRt` (virtual service) live as long as any snapshot
//! or connection refers to them, so a worker holding an old snapshot or an old connection
//! never sees freed state (the IPVS "trash list" done with reference counts).

use crate::model::{Forward, ServiceKey};
use crate::sched::Scheduler;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// A real server as the data path sees it. Counters are shared by all workers because the
/// schedulers' load figures (active/inactive connections) must be global, as in IPVS.
#[derive(Debug)]
pub struct DestRt {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub forward: Forward,
    /// IPVS weight; 0 = quiesced (no new connections).
    pub weight: AtomicU32,
    pub u_threshold: AtomicU32,
    pub l_threshold: AtomicU32,
    /// IP_VS_DEST_F_OVERLOAD.
    pub overloaded: AtomicBool,
    /// Connections in TCP ESTABLISHED.
    pub active_conns: AtomicU32,
    /// All other connections (every UDP entry, TCP in any other state).
    pub inactive_conns: AtomicU32,
    /// Persistence templates pointing at this server.
    pub persist_conns: AtomicU32,
    /// Next-hop MAC as a u64 (low 48 bits); 0 = unresolved. Written by the neighbour refresher.
    mac: AtomicU64,
    /// Set by a worker that found the MAC missing; the refresher then resolves it promptly.
    pub wants_resolution: AtomicBool,
}

impl DestRt {
    pub fn new(addr: Ipv4Addr, port: u16, forward: Forward, weight: u32) -> Self {
        DestRt {
            addr,
            port,
            forward,
            weight: AtomicU32::new(weight),
            u_threshold: AtomicU32::new(0),
            l_threshold: AtomicU32::new(0),
            overloaded: AtomicBool::new(false),
            active_conns: AtomicU32::new(0),
            inactive_conns: AtomicU32::new(0),
            persist_conns: AtomicU32::new(0),
            mac: AtomicU64::new(0),
            wants_resolution: AtomicBool::new(true),
        }
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Relaxed)
    }

    /// IPVS: weight 0 (quiesced) or OVERLOAD means "no new connections".
    pub fn available(&self) -> bool {
        self.weight() > 0 && !self.overloaded.load(Relaxed)
    }

    /// IPVS load figure: `(activeconns << 8) + inactconns`.
    pub fn overhead(&self) -> u64 {
        ((self.active_conns.load(Relaxed) as u64) << 8) + self.inactive_conns.load(Relaxed) as u64
    }

    pub fn mac(&self) -> Option<[u8; 6]> {
        let v = self.mac.load(Relaxed);
        if v == 0 {
            return None;
        }
        let b = v.to_be_bytes();
        Some([b[2], b[3], b[4], b[5], b[6], b[7]])
    }

    pub fn set_mac(&self, mac: Option<[u8; 6]>) {
        let v = match mac {
            Some(m) => u64::from_be_bytes([0, 0, m[0], m[1], m[2], m[3], m[4], m[5]]),
            None => 0,
        };
        self.mac.store(v, Relaxed);
    }
}

/// What the per-service scheduler lock protects: the server list in IPVS list order and the
/// scheduler's own state. They change together so a pick is always made against the list the
/// scheduler was last updated with.
pub struct SchedCore {
    pub dests: Vec<Arc<DestRt>>,
    pub sched: Box<dyn Scheduler>,
}

/// A virtual service as the data path sees it.
pub struct ServiceRt {
    pub key: ServiceKey,
    /// Set when the service is deleted: its connections are then dropped, as IPVS does.
    pub deleted: AtomicBool,
    /// IPVS's per-service scheduling lock: taken only to schedule a *new* connection.
    pub core: Mutex<SchedCore>,
}

impl ServiceRt {
    pub fn new(key: ServiceKey, sched: Box<dyn Scheduler>) -> Self {
        ServiceRt {
            key,
            deleted: AtomicBool::new(false),
            core: Mutex::new(SchedCore {
                dests: Vec::new(),
                sched,
            }),
        }
    }

    /// Schedules a new connection; `None` when no server is available.
    pub fn schedule(&self, flow: &crate::packet::FlowKey) -> Option<Arc<DestRt>> {
        // A poisoned lock means a scheduler panicked; the state is still a valid list.
        let mut core = self.core.lock().unwrap_or_else(|e| e.into_inner());
        let SchedCore { dests, sched } = &mut *core;
        let i = sched.schedule(dests, flow)?;
        dests.get(i).cloned()
    }
}
