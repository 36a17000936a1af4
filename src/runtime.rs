//! Runtime objects shared between the control thread and the workers.
//!
//! A `DestRt` (real server) and a `ServiceRt` (virtual service) live as long as any snapshot
//! or connection refers to them, so a worker holding an old snapshot or an old connection
//! never sees freed state (the IPVS "trash list" done with reference counts).

use crate::model::{Forward, ServiceKey};
use crate::sched::Scheduler;
use crate::stats::StatSlots;
use std::collections::HashMap;
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
    /// Packet/byte/connection counters and rates (`--stats`, `--rate`).
    pub stats: StatSlots,
    /// Index of the worker port (interface) leading to this server, from the kernel's
    /// routing table; `NO_PORT` until resolved.
    pub egress: AtomicU32,
    /// TUN: outer source address (the route's preferred source), network-order-free u32.
    pub tun_src: AtomicU32,
}

/// `DestRt::egress` before the route is known.
pub const NO_PORT: u32 = u32::MAX;

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
            stats: StatSlots::default(),
            egress: AtomicU32::new(NO_PORT),
            tun_src: AtomicU32::new(0),
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

/// Persistence settings of a service (`-p timeout -M netmask`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Persistence {
    pub timeout_ms: u64,
    /// Client grouping mask in host order (255.255.255.255 = per client address).
    pub netmask: u32,
}

/// The key of a persistence template: client group, virtual port (0 for an all-ports
/// service) and protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TemplateKey {
    pub cnet: u32,
    pub vport: u16,
    pub proto: u8,
}

/// A persistence template (IPVS `IP_VS_CONN_F_TEMPLATE`): sends a client group to one real
/// server. It lives until `timeout` after it was last used, and never while connections it
/// created (`n_control`) still exist.
#[derive(Debug)]
pub struct Template {
    pub key: TemplateKey,
    pub vaddr: Ipv4Addr,
    pub dest: Arc<DestRt>,
    pub expires_ms: AtomicU64,
    pub n_control: AtomicU32,
}

impl Drop for Template {
    fn drop(&mut self) {
        self.dest.persist_conns.fetch_sub(1, Relaxed);
    }
}

/// What the per-service scheduler lock protects: the server list in IPVS list order, the
/// scheduler's own state and the persistence templates. They change together so a pick is
/// always made against the list the scheduler was last updated with.
pub struct SchedCore {
    pub dests: Vec<Arc<DestRt>>,
    pub sched: Box<dyn Scheduler>,
    /// The `-b` flags `sched` was built with (a change rebuilds it).
    pub sched_flags: crate::sched::SchedFlags,
    pub persist: Option<Persistence>,
    /// Live templates. Growing this map allocates; persistence is a per-new-client event and
    /// IPVS allocates its templates too.
    pub templates: HashMap<TemplateKey, Arc<Template>, ahash::RandomState>,
}

/// A virtual service as the data path sees it.
pub struct ServiceRt {
    pub key: ServiceKey,
    /// Set when the service is deleted: its connections are then dropped, as IPVS does.
    pub deleted: AtomicBool,
    /// IPVS's per-service scheduling lock: taken only to schedule a *new* connection.
    pub core: Mutex<SchedCore>,
    pub stats: StatSlots,
    /// Some real server uses NAT, so established connections may be in the NAT table.
    pub has_nat: AtomicBool,
}

/// A scheduling decision: the server, and the template that chose it (persistent services).
pub type Pick = (Arc<DestRt>, Option<Arc<Template>>);

impl ServiceRt {
    pub fn new(key: ServiceKey, sched: Box<dyn Scheduler>) -> Self {
        ServiceRt {
            key,
            deleted: AtomicBool::new(false),
            core: Mutex::new(SchedCore {
                dests: Vec::new(),
                sched,
                sched_flags: crate::sched::SchedFlags::default(),
                persist: None,
                templates: HashMap::with_hasher(ahash::RandomState::new()),
            }),
            stats: StatSlots::default(),
            has_nat: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SchedCore> {
        // A poisoned lock means a scheduler panicked; the state is still a valid list.
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Schedules a new connection; `None` when no server is available.
    pub fn schedule(&self, flow: &crate::packet::FlowKey, now_ms: u64) -> Option<Pick> {
        let mut core = self.lock();
        let core = &mut *core;
        let Some(p) = core.persist else {
            let i = core.sched.schedule(&core.dests, flow, now_ms)?;
            return core.dests.get(i).map(|d| (d.clone(), None));
        };
        // ip_vs_sched_persist: reuse the client group's template while its server is still
        // in the list (a quiesced server keeps its persistent clients, as with IPVS's default
        // expire_quiescent_template=0); otherwise schedule and make a new template.
        let key = TemplateKey {
            cnet: flow.saddr & p.netmask,
            vport: self.key.port,
            proto: flow.proto,
        };
        if let Some(t) = core.templates.get(&key) {
            if core.dests.iter().any(|d| Arc::ptr_eq(d, &t.dest)) {
                t.expires_ms.store(now_ms + p.timeout_ms, Relaxed);
                t.n_control.fetch_add(1, Relaxed);
                return Some((t.dest.clone(), Some(t.clone())));
            }
            core.templates.remove(&key);
        }
        let i = core.sched.schedule(&core.dests, flow, now_ms)?;
        let dest = core.dests.get(i)?.clone();
        dest.persist_conns.fetch_add(1, Relaxed);
        let t = Arc::new(Template {
            key,
            vaddr: self.key.addr,
            dest: dest.clone(),
            expires_ms: AtomicU64::new(now_ms + p.timeout_ms),
            n_control: AtomicU32::new(1),
        });
        core.templates.insert(key, t.clone());
        Some((dest, Some(t)))
    }

    /// Removes templates past their timeout with no connections left; re-arms expired ones
    /// that still control connections (ip_vs_conn_expire's "expire later"). Also lets the
    /// scheduler expire its own tables. Called by the daemon about once a second.
    pub fn expire(&self, now_ms: u64) {
        let mut core = self.lock();
        let timeout = core.persist.map_or(0, |p| p.timeout_ms);
        core.templates.retain(|_, t| {
            if t.expires_ms.load(Relaxed) > now_ms {
                return true;
            }
            if t.n_control.load(Relaxed) > 0 {
                t.expires_ms.store(now_ms + timeout, Relaxed);
                return true;
            }
            false
        });
        core.sched.expire(now_ms);
    }

    /// Templates for listings (`-L -c`).
    pub fn templates(&self) -> Vec<Arc<Template>> {
        self.lock().templates.values().cloned().collect()
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

#[cfg(test)]
mod persist_tests {
    use super::*;
    use crate::model::Protocol;
    use crate::packet::FlowKey;

    fn svc(dests: &[Arc<DestRt>]) -> ServiceRt {
        let s = ServiceRt::new(
            ServiceKey {
                proto: Protocol::Tcp,
                addr: Ipv4Addr::new(10, 0, 0, 88),
                port: 80,
            },
            crate::sched::by_name("rr").unwrap(),
        );
        {
            let mut c = s.core.lock().unwrap();
            c.dests = dests.to_vec();
            c.persist = Some(Persistence {
                timeout_ms: 5000,
                netmask: 0xffff_ff00,
            });
        }
        s
    }

    fn flow(saddr: u32, sport: u16) -> FlowKey {
        FlowKey {
            saddr,
            daddr: 0x0a00_0058,
            sport,
            dport: 80,
            proto: 6,
        }
    }

    #[test]
    fn template_pins_client_group_until_timeout() {
        let d: Vec<_> = (0..3)
            .map(|i| {
                Arc::new(DestRt::new(
                    Ipv4Addr::new(10, 0, 0, i),
                    80,
                    Forward::Route,
                    1,
                ))
            })
            .collect();
        let s = svc(&d);
        let (a, ta) = s.schedule(&flow(0x0a00_0064, 1000), 0).unwrap();
        // Same /24, other port: same server, same template; rr would have moved on.
        let (b, tb) = s.schedule(&flow(0x0a00_0065, 2000), 100).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(Arc::ptr_eq(ta.as_ref().unwrap(), tb.as_ref().unwrap()));
        assert_eq!(a.persist_conns.load(Relaxed), 1);
        // Another group goes elsewhere.
        let (c, _) = s.schedule(&flow(0x0b00_0001, 1), 100).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        // Connections still controlled: expiry postpones.
        s.expire(10_000);
        assert_eq!(s.templates().len(), 2);
        ta.unwrap().n_control.fetch_sub(1, Relaxed);
        tb.unwrap().n_control.fetch_sub(1, Relaxed);
        // Re-armed at 10_000 + 5000.
        s.expire(14_999);
        assert_eq!(
            s.templates()
                .iter()
                .filter(|t| Arc::ptr_eq(&t.dest, &a))
                .count(),
            1
        );
        s.expire(15_000);
        assert_eq!(
            s.templates()
                .iter()
                .filter(|t| Arc::ptr_eq(&t.dest, &a))
                .count(),
            0
        );
        assert_eq!(a.persist_conns.load(Relaxed), 0);
    }

    #[test]
    fn removed_server_invalidates_template_but_quiesced_keeps_it() {
        let d: Vec<_> = (0..2)
            .map(|i| {
                Arc::new(DestRt::new(
                    Ipv4Addr::new(10, 0, 0, i),
                    80,
                    Forward::Route,
                    1,
                ))
            })
            .collect();
        let s = svc(&d);
        let (a, _) = s.schedule(&flow(1, 1), 0).unwrap();
        a.weight.store(0, Relaxed);
        let (b, _) = s.schedule(&flow(1, 2), 0).unwrap();
        assert!(
            Arc::ptr_eq(&a, &b),
            "quiesced server keeps its persistent client"
        );
        s.core.lock().unwrap().dests.retain(|x| !Arc::ptr_eq(x, &a));
        let (c, _) = s.schedule(&flow(1, 3), 0).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
    }
}
