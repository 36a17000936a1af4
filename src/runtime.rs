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

    /// Total connections, as IPVS's `ip_vs_dest_totalconns`.
    pub fn total_conns(&self) -> u32 {
        self.active_conns.load(Relaxed) + self.inactive_conns.load(Relaxed)
    }

    /// A connection was bound to this server (ip_vs_bind_dest): count it and set OVERLOAD
    /// when the upper threshold is reached.
    pub fn bind_conn(&self, active: bool) {
        if active {
            self.active_conns.fetch_add(1, Relaxed);
        } else {
            self.inactive_conns.fetch_add(1, Relaxed);
        }
        let u = self.u_threshold.load(Relaxed);
        if u != 0 && self.total_conns() >= u {
            self.overloaded.store(true, Relaxed);
        }
    }

    /// A connection went away (ip_vs_unbind_dest): uncount it and clear OVERLOAD below the
    /// lower threshold, or below 3/4 of the upper one when no lower threshold is set.
    pub fn unbind_conn(&self, active: bool) {
        if active {
            self.active_conns.fetch_sub(1, Relaxed);
        } else {
            self.inactive_conns.fetch_sub(1, Relaxed);
        }
        if !self.overloaded.load(Relaxed) {
            return;
        }
        let (u, l) = (
            self.u_threshold.load(Relaxed),
            self.l_threshold.load(Relaxed),
        );
        let total = self.total_conns() as u64;
        let clear = if l != 0 {
            total < l as u64
        } else if u != 0 {
            total * 4 < u as u64 * 3
        } else {
            true
        };
        if clear {
            self.overloaded.store(false, Relaxed);
        }
    }

    /// New thresholds from the configuration (__ip_vs_update_dest): OVERLOAD is cleared when
    /// the upper threshold is removed or raised.
    pub fn set_thresholds(&self, u: u32, l: u32) {
        let old_u = self.u_threshold.load(Relaxed);
        if u == 0 || u > old_u {
            self.overloaded.store(false, Relaxed);
        }
        self.u_threshold.store(u, Relaxed);
        self.l_threshold.store(l, Relaxed);
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
    pub fn schedule(&self, flow: &crate::packet::FlowKey, now_ms: u64) -> Option<Arc<DestRt>> {
        // A poisoned lock means a scheduler panicked; the state is still a valid list.
        let mut core = self.core.lock().unwrap_or_else(|e| e.into_inner());
        let SchedCore { dests, sched } = &mut *core;
        let i = sched.schedule(dests, flow, now_ms)?;
        dests.get(i).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(u: u32, l: u32) -> DestRt {
        let d = DestRt::new(Ipv4Addr::new(10, 0, 0, 9), 80, Forward::Route, 1);
        d.set_thresholds(u, l);
        d
    }

    #[test]
    fn overload_set_at_upper_cleared_below_lower() {
        let x = d(4, 2);
        for _ in 0..3 {
            x.bind_conn(false);
        }
        assert!(!x.overloaded.load(Relaxed));
        x.bind_conn(true);
        assert!(x.overloaded.load(Relaxed), "total 4 >= upper 4");
        x.unbind_conn(false);
        x.unbind_conn(false);
        assert!(x.overloaded.load(Relaxed), "total 2 is not < lower 2");
        x.unbind_conn(false);
        assert!(!x.overloaded.load(Relaxed));
    }

    #[test]
    fn overload_cleared_below_three_quarters_without_lower() {
        let x = d(8, 0);
        for _ in 0..8 {
            x.bind_conn(false);
        }
        assert!(x.overloaded.load(Relaxed));
        x.unbind_conn(false); // 7*4 = 28 >= 24
        x.unbind_conn(false); // 6*4 = 24, not < 24
        assert!(x.overloaded.load(Relaxed));
        x.unbind_conn(false); // 5*4 = 20 < 24
        assert!(!x.overloaded.load(Relaxed));
        // Raising the upper threshold clears OVERLOAD at once.
        for _ in 0..3 {
            x.bind_conn(false);
        }
        assert!(x.overloaded.load(Relaxed));
        x.set_thresholds(100, 0);
        assert!(!x.overloaded.load(Relaxed));
    }
}
