//! The daemon's control state: the configuration model, the runtime objects built from it,
//! and the publication of new snapshots to the workers.

use super::config::ConfigModel;
use crate::bpf::maps::SvcKey;
use crate::conn::StateTimeouts;
use crate::dest::DestRt;
use crate::model::*;
use crate::sched::{self, SchedFlags};
use crate::service::{Persistence, ServiceRt, Snapshot, DEFAULT_TEMPLATES_MAX};
use crate::worker::Shared;
use anyhow::{anyhow, Result};
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Where the list of services goes so the XDP program steers their frames.
pub trait ServiceSteer {
    fn add(&self, key: &ServiceKey) -> Result<()>;
    fn remove(&self, key: &ServiceKey) -> Result<()>;
    /// NAT: steer replies from this real server (protocol, RIP, rport) to the workers.
    fn add_nat_rs(&self, key: &ServiceKey) -> Result<()>;
    fn remove_nat_rs(&self, key: &ServiceKey) -> Result<()>;
}

impl ServiceSteer for crate::bpf::Steering {
    fn add(&self, key: &ServiceKey) -> Result<()> {
        self.add_service(&SvcKey::new(key))
    }
    fn remove(&self, key: &ServiceKey) -> Result<()> {
        self.remove_service(&SvcKey::new(key))
    }
    fn add_nat_rs(&self, key: &ServiceKey) -> Result<()> {
        crate::bpf::Steering::add_nat_rs(self, &SvcKey::new(key))
    }
    fn remove_nat_rs(&self, key: &ServiceKey) -> Result<()> {
        crate::bpf::Steering::remove_nat_rs(self, &SvcKey::new(key))
    }
}

/// How long a removed real server stays revivable once nothing uses it: IPVS's
/// `IP_VS_DEST_TRASH_PERIOD` (120 s; `ip_vs_dest_trash_expire` frees a dest that has been
/// unreferenced that long).
pub const TRASH_PERIOD_MS: u64 = 120_000;

/// A real server removed from a live service (IPVS's `dest_trash`): kept while connections
/// or templates use it, and for `TRASH_PERIOD_MS` after, so that adding the same server
/// back revives it with its connections and counters (`ip_vs_trash_get_dest`).
struct Trashed {
    svc: ServiceKey,
    dest: Arc<DestRt>,
    /// When a tick first found it used by nothing but the trash (`idle_start`).
    idle_since_ms: Option<u64>,
}

impl Trashed {
    fn in_use(&self) -> bool {
        Arc::strong_count(&self.dest) > 1
    }
}

pub struct DaemonState {
    pub model: ConfigModel,
    rt: HashMap<ServiceKey, Arc<ServiceRt>>,
    /// NAT real servers whose replies the XDP program steers, as (proto, RIP, rport).
    nat_rs: std::collections::HashSet<ServiceKey>,
    /// Real servers removed from live services (see `Trashed`). Those with NAT connections
    /// still have their replies steered until the connections end: under the IPVS policy
    /// the replies still reach the client (`ip_vs_out` does not look at the server).
    trash: Vec<Trashed>,
    shared: Arc<Shared>,
    steer: Box<dyn ServiceSteer + Send>,
    /// Total connection capacity over all workers (ipvsadm's "size=").
    pub conn_capacity: u64,
    /// Template capacity of each persistent service (`xvsd --templates-max`).
    pub templates_max: usize,
    /// `xvsd --mid-flow`, published in every snapshot.
    mid_flow: crate::service::MidFlow,
}

impl DaemonState {
    pub fn new(
        shared: Arc<Shared>,
        steer: Box<dyn ServiceSteer + Send>,
        conn_capacity: u64,
    ) -> Self {
        DaemonState {
            model: ConfigModel::default(),
            rt: HashMap::new(),
            nat_rs: Default::default(),
            trash: Vec::new(),
            shared,
            steer,
            conn_capacity,
            templates_max: DEFAULT_TEMPLATES_MAX,
            mid_flow: crate::service::MidFlow::default(),
        }
    }

    /// Sets which services schedule mid-flow TCP segments, and publishes it.
    pub fn set_mid_flow(&mut self, m: crate::service::MidFlow) {
        self.mid_flow = m;
        self.publish();
    }

    /// Applies a configuration request; on any error nothing changes.
    pub fn apply(&mut self, req: &Request) -> Response {
        if let Request::Status { service } = req {
            return match self.status(service.as_ref()) {
                Ok(s) => Response::Status(s),
                Err(e) => Response::Error(e),
            };
        }
        if let Request::Zero { service } = req {
            return match self.zero(service.as_ref()) {
                Ok(()) => Response::Ok,
                Err(e) => Response::Error(e),
            };
        }
        let before = self.model.clone();
        if let Err(e) = self.model.apply(req) {
            return Response::Error(e);
        }
        if let Err(e) = self.reconcile() {
            // Put the previous configuration back, runtime included.
            self.model = before;
            let _ = self.reconcile();
            return Response::Error(format!("{e:#}"));
        }
        Response::Ok
    }

    /// `-Z`: counters of one service (and its servers) or of all restart from zero.
    fn zero(&self, only: Option<&ServiceKey>) -> Result<(), String> {
        if let Some(k) = only {
            if !self.rt.contains_key(k) {
                return Err("No such service".into());
            }
        }
        for (k, rt) in &self.rt {
            if only.is_some_and(|o| o != k) {
                continue;
            }
            rt.stats.zero();
            for d in rt.sched_set().dests.iter() {
                d.stats.zero();
            }
        }
        Ok(())
    }

    /// Periodic work off the packet path: persistence-template and scheduler-table expiry
    /// (every call, ~1 s) and a rate-estimator sample (when `sample` is set, every 2 s).
    pub fn tick(&mut self, now_ms: u64, sample: bool) {
        if !self.trash.is_empty() {
            self.prune_trash(now_ms);
            if let Err(e) = self.sync_nat_rs() {
                tracing::warn!("updating the NAT reply map: {e:#}");
            }
        }
        for rt in self.rt.values() {
            rt.expire(now_ms);
            if sample {
                rt.stats.sample(now_ms);
                for d in rt.sched_set().dests.iter() {
                    d.stats.sample(now_ms);
                }
            }
        }
    }

    /// The services' runtime objects (their persistence templates for `-L -c`).
    pub fn services(&self) -> Vec<Arc<ServiceRt>> {
        self.rt.values().cloned().collect()
    }

    /// Every real server currently configured (for neighbour resolution).
    pub fn dests(&self) -> Vec<Arc<DestRt>> {
        let mut out = Vec::new();
        for rt in self.rt.values() {
            out.extend(rt.sched_set().dests.iter().cloned());
        }
        out
    }

    /// `ip_vs_dest_trash_expire`: frees the removed servers nothing has used for
    /// `TRASH_PERIOD_MS`.
    fn prune_trash(&mut self, now_ms: u64) {
        self.trash.retain_mut(|t| {
            if t.in_use() {
                t.idle_since_ms = None;
                return true;
            }
            let since = *t.idle_since_ms.get_or_insert(now_ms);
            now_ms.saturating_sub(since) < TRASH_PERIOD_MS
        });
    }

    /// The health checks' verdict on a configured real server (`DestRt::set_dead`): `true`
    /// while its checkers see it down and it stays configured (`inhibit_on_failure`, weight
    /// 0), `false` when it is back. What its connections get is its service's `on_dead`
    /// policy. Returns false if the service has no such server.
    pub fn set_dead(
        &self,
        svc: &ServiceKey,
        addr: std::net::Ipv4Addr,
        port: u16,
        dead: bool,
    ) -> bool {
        let Some(rt) = self.rt.get(svc) else {
            return false;
        };
        let set = rt.sched_set();
        let mut found = false;
        for d in set
            .dests
            .iter()
            .filter(|d| d.addr == addr && d.port == port)
        {
            d.set_dead(dead);
            found = true;
        }
        found
    }

    /// Number of removed real servers kept in the trash (tests, diagnostics).
    pub fn trash_len(&self) -> usize {
        self.trash.len()
    }

    /// Makes the XDP NAT reply map hold exactly the configured NAT real servers plus the
    /// removed ones that connections still use.
    fn sync_nat_rs(&mut self) -> Result<()> {
        let nat_rs: std::collections::HashSet<ServiceKey> = self
            .model
            .services
            .iter()
            .flat_map(|s| {
                s.dests
                    .iter()
                    .filter(|d| d.forward == Forward::Masq)
                    .map(move |d| ServiceKey {
                        proto: s.key.proto,
                        addr: d.addr,
                        port: d.port,
                    })
            })
            .chain(
                self.trash
                    .iter()
                    .filter(|t| t.dest.forward == Forward::Masq && t.in_use())
                    .map(|t| ServiceKey {
                        proto: t.svc.proto,
                        addr: t.dest.addr,
                        port: t.dest.port,
                    }),
            )
            .collect();
        for k in nat_rs.difference(&self.nat_rs) {
            self.steer.add_nat_rs(k)?;
        }
        for k in self.nat_rs.difference(&nat_rs) {
            self.steer.remove_nat_rs(k)?;
        }
        self.nat_rs = nat_rs;
        Ok(())
    }

    /// Brings the runtime objects, the XDP services map and the workers' snapshot in line
    /// with the model. Existing real servers keep their objects (and so their counters and
    /// connections); the scheduler is told about every list or weight change.
    fn reconcile(&mut self) -> Result<()> {
        let mut next: HashMap<ServiceKey, Arc<ServiceRt>> = HashMap::new();
        for sc in &self.model.services {
            let flags = SchedFlags::parse(&sc.opts.sched_flags).map_err(|e| anyhow!(e))?;
            let new_sched = || {
                sched::by_name_with(&sc.opts.scheduler, flags)
                    .map_err(|e| anyhow!("scheduler {}: {e:?}", sc.opts.scheduler))
            };
            let rt = match self.rt.get(&sc.key) {
                Some(rt) => rt.clone(),
                None => Arc::new(ServiceRt::new(sc.key, new_sched()?)),
            };
            {
                let cur = rt.sched_set();
                let replace = if cur.sched.name() != sc.opts.scheduler || cur.flags != flags {
                    Some((new_sched()?, flags))
                } else {
                    None
                };
                let same = |d: &DestRt, dc: &super::config::DestConf| {
                    d.addr == dc.addr && d.port == dc.port && d.forward == dc.forward
                };
                let dests: Vec<Arc<DestRt>> = sc
                    .dests
                    .iter()
                    .map(|dc| {
                        let d = match cur.dests.iter().find(|d| same(d, dc)) {
                            Some(d) => d.clone(),
                            // ip_vs_add_dest: a server removed earlier comes back out of the
                            // trash, with its connections (which resume) and counters.
                            None => match self
                                .trash
                                .iter()
                                .position(|t| t.svc == sc.key && same(&t.dest, dc))
                            {
                                Some(i) => {
                                    let d = self.trash.swap_remove(i).dest;
                                    // Added back: alive, like a new server (the health
                                    // checks mark it again if they still see it down).
                                    d.set_dead(false);
                                    d
                                }
                                None => {
                                    Arc::new(DestRt::new(dc.addr, dc.port, dc.forward, dc.weight))
                                }
                            },
                        };
                        d.weight.store(dc.weight, Relaxed);
                        d.set_thresholds(dc.u_threshold, dc.l_threshold);
                        d.set_on_dead(sc.opts.on_dead);
                        if d.is_removed() {
                            d.set_removed(false);
                        }
                        d
                    })
                    .collect();
                // __ip_vs_unlink_dest + __ip_vs_del_dest: a server that left the list is
                // no longer available (its connections' packets are dropped, or whatever the
                // service's policy says) and goes to the trash. A server whose forwarding
                // method changed is replaced by a new object, but its old connections keep
                // going the old way, as IPVS's keep the xmit function they were made with.
                for old in &cur.dests {
                    if !dests.iter().any(|d| Arc::ptr_eq(d, old)) {
                        self.trash.push(Trashed {
                            svc: sc.key,
                            dest: old.clone(),
                            idle_since_ms: None,
                        });
                    }
                }
                for t in self.trash.iter().filter(|t| t.svc == sc.key) {
                    let gone = !dests
                        .iter()
                        .any(|d| d.addr == t.dest.addr && d.port == t.dest.port);
                    t.dest.set_removed(gone);
                    t.dest.set_on_dead(sc.opts.on_dead);
                }
                // Sticky: once a service has had NAT servers, their connections may still
                // be in the NAT table, so the workers keep looking there.
                if dests.iter().any(|d| d.forward == Forward::Masq) {
                    rt.has_nat.store(true, Relaxed);
                }
                rt.set_dests(dests, replace);
                let persist = sc.opts.persistent.map(|secs| Persistence {
                    timeout_ms: secs as u64 * 1000,
                    netmask: sc.opts.netmask.map_or(u32::MAX, u32::from),
                });
                rt.set_persistence(persist, self.templates_max);
            }
            next.insert(sc.key, rt);
        }
        for k in next.keys() {
            if !self.rt.contains_key(k) {
                self.steer.add(k)?;
            }
        }
        self.sync_nat_rs()?;
        for (k, rt) in &self.rt {
            if !next.contains_key(k) {
                self.steer.remove(k)?;
                rt.deleted.store(true, Relaxed);
                // Its fast-path flows stop at once (their frames go to the workers, which
                // see the deleted service), not when the entries would be swept.
                for d in rt.sched_set().dests.iter() {
                    d.stats.bump_gen();
                }
            }
        }
        self.rt = next;
        self.publish();
        Ok(())
    }

    fn publish(&self) {
        if let Some(f) = crate::fastpath::get() {
            f.set_timeouts(StateTimeouts::new(&self.model.timeouts));
        }
        let mut snap = Snapshot {
            timeouts: StateTimeouts::new(&self.model.timeouts),
            // Deleted services' NAT entries may outlive them until swept: stay on once set.
            has_nat: self.shared.snapshot.load().has_nat
                || self.rt.values().any(|rt| rt.has_nat.load(Relaxed)),
            mid_flow: self.mid_flow,
            ..Snapshot::default()
        };
        for rt in self.rt.values() {
            snap.insert(rt.clone());
        }
        self.shared.snapshot.store(Arc::new(snap));
    }

    pub fn status(&self, only: Option<&ServiceKey>) -> Result<Status, String> {
        let mut services = Vec::new();
        for sc in &self.model.services {
            if only.is_some_and(|k| *k != sc.key) {
                continue;
            }
            let rt = self.rt.get(&sc.key);
            let rt_dests = rt.map(|rt| rt.dests()).unwrap_or_default();
            let dests = sc
                .dests
                .iter()
                .map(|dc| {
                    let d = rt_dests
                        .iter()
                        .find(|d| d.addr == dc.addr && d.port == dc.port);
                    DestStatus {
                        addr: dc.addr,
                        port: dc.port,
                        forward: dc.forward,
                        weight: dc.weight,
                        u_threshold: dc.u_threshold,
                        l_threshold: dc.l_threshold,
                        active_conns: d.map_or(0, |d| d.active()),
                        inactive_conns: d.map_or(0, |d| d.inactive()),
                        persist_conns: d.map_or(0, |d| d.persistent()),
                        counters: d.map_or(Counters::default(), |d| d.stats.read()),
                        rates: d.map_or(Rates::default(), |d| d.stats.rates()),
                    }
                })
                .collect();
            services.push(ServiceStatus {
                key: sc.key,
                opts: sc.opts.clone(),
                counters: rt.map_or(Counters::default(), |r| r.stats.read()),
                rates: rt.map_or(Rates::default(), |r| r.stats.rates()),
                dests,
            });
        }
        if let Some(k) = only {
            if services.is_empty() {
                let _ = k;
                return Err("No such service".into());
            }
        }
        Ok(Status {
            conn_table_size: self.conn_capacity,
            timeouts: self.model.timeouts,
            services,
        })
    }
}

/// The steering program behind the daemon's mutex (the control socket and stats share it).
pub struct SharedSteer(pub Arc<std::sync::Mutex<crate::bpf::Steering>>);

impl ServiceSteer for SharedSteer {
    fn add(&self, key: &ServiceKey) -> Result<()> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).add(key)
    }
    fn remove(&self, key: &ServiceKey) -> Result<()> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(key)
    }
    fn add_nat_rs(&self, key: &ServiceKey) -> Result<()> {
        ServiceSteer::add_nat_rs(&*self.0.lock().unwrap_or_else(|e| e.into_inner()), key)
    }
    fn remove_nat_rs(&self, key: &ServiceKey) -> Result<()> {
        ServiceSteer::remove_nat_rs(&*self.0.lock().unwrap_or_else(|e| e.into_inner()), key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arc_swap::ArcSwap;
    use std::sync::atomic::AtomicBool;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct FakeSteer(Arc<Mutex<Vec<ServiceKey>>>);
    impl ServiceSteer for FakeSteer {
        fn add(&self, key: &ServiceKey) -> Result<()> {
            self.0.lock().unwrap().push(*key);
            Ok(())
        }
        fn remove(&self, key: &ServiceKey) -> Result<()> {
            self.0.lock().unwrap().retain(|k| k != key);
            Ok(())
        }
        fn add_nat_rs(&self, _key: &ServiceKey) -> Result<()> {
            Ok(())
        }
        fn remove_nat_rs(&self, _key: &ServiceKey) -> Result<()> {
            Ok(())
        }
    }

    fn key() -> ServiceKey {
        ServiceKey {
            proto: Protocol::Tcp,
            addr: "10.0.0.88".parse().unwrap(),
            port: 80,
        }
    }

    fn dest(ip: &str, w: u32) -> Request {
        Request::AddDest {
            service: key(),
            dest: DestSpec {
                addr: ip.parse().unwrap(),
                port: None,
                forward: Forward::Route,
                weight: w,
                u_threshold: 0,
                l_threshold: 0,
            },
        }
    }

    fn state() -> (Arc<Shared>, DaemonState) {
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            stop: AtomicBool::new(false),
        });
        let st = DaemonState::new(shared.clone(), Box::new(FakeSteer::default()), 1024);
        (shared, st)
    }

    fn del(ip: &str) -> Request {
        Request::DeleteDest {
            service: key(),
            addr: ip.parse().unwrap(),
            port: Some(80),
        }
    }

    #[test]
    fn a_removed_server_goes_to_the_trash_and_comes_back_with_its_connections() {
        let (_shared, mut st) = state();
        let opts = ServiceOpts {
            scheduler: "rr".into(),
            on_dead: crate::kconf::OnDead::Reassign,
            ..Default::default()
        };
        assert_eq!(
            st.apply(&Request::AddService { key: key(), opts }),
            Response::Ok
        );
        assert_eq!(st.apply(&dest("10.0.0.9", 1)), Response::Ok);
        assert_eq!(st.apply(&dest("10.0.0.10", 1)), Response::Ok);
        let nine: std::net::Ipv4Addr = "10.0.0.9".parse().unwrap();
        let d0 = st.dests().into_iter().find(|d| d.addr == nine).unwrap();
        assert_eq!(d0.on_dead(), crate::kconf::OnDead::Reassign);
        // A connection holds the object (as a Conn's Arc does) and is counted on it.
        let conn = d0.clone();
        d0.load.active_conns.store(1, Relaxed);
        assert!(st.set_dead(&key(), nine, 80, true));
        assert!(d0.is_dead() && !d0.available());
        assert!(!st.set_dead(&key(), "10.0.0.99".parse().unwrap(), 80, true));
        assert_eq!(st.apply(&del("10.0.0.9")), Response::Ok);
        assert!(d0.is_removed(), "no longer IP_VS_DEST_F_AVAILABLE");
        assert!(!st.dests().iter().any(|d| Arc::ptr_eq(d, &d0)));
        assert_eq!(st.trash_len(), 1);
        // Used by a connection: never pruned.
        st.tick(0, false);
        st.tick(10 * TRASH_PERIOD_MS, false);
        assert_eq!(st.trash_len(), 1);
        // ip_vs_trash_get_dest: the same server added back is the same object, available
        // again, connections and counters intact.
        assert_eq!(st.apply(&dest("10.0.0.9", 3)), Response::Ok);
        let back = st.dests().into_iter().find(|d| d.addr == d0.addr).unwrap();
        assert!(Arc::ptr_eq(&back, &d0));
        assert!(!d0.is_removed());
        assert!(!d0.is_dead(), "added back alive");
        assert_eq!((d0.weight(), d0.active()), (3, 1));
        assert_eq!(st.trash_len(), 0);
        // Removed again and unused: kept for IPVS's trash period, then freed.
        assert_eq!(st.apply(&del("10.0.0.9")), Response::Ok);
        let weak = Arc::downgrade(&d0);
        drop((conn, back, d0));
        st.tick(1_000, false);
        st.tick(1_000 + TRASH_PERIOD_MS - 1, false);
        assert_eq!(st.trash_len(), 1);
        st.tick(1_000 + TRASH_PERIOD_MS, false);
        assert_eq!(st.trash_len(), 0);
        assert!(weak.upgrade().is_none(), "freed");
        // Added back after that: a new object.
        assert_eq!(st.apply(&dest("10.0.0.9", 1)), Response::Ok);
    }

    #[test]
    fn a_changed_forwarding_method_keeps_the_old_connections_going() {
        let (_shared, mut st) = state();
        let opts = ServiceOpts {
            scheduler: "rr".into(),
            ..Default::default()
        };
        assert_eq!(
            st.apply(&Request::AddService { key: key(), opts }),
            Response::Ok
        );
        assert_eq!(st.apply(&dest("10.0.0.9", 1)), Response::Ok);
        let old = st.dests()[0].clone();
        assert_eq!(
            st.apply(&Request::EditDest {
                service: key(),
                dest: DestEdit {
                    addr: "10.0.0.9".parse().unwrap(),
                    port: Some(80),
                    forward: Some(Forward::Tunnel),
                    weight: Some(1),
                    u_threshold: None,
                    l_threshold: None,
                },
            }),
            Response::Ok
        );
        // IPVS: connections keep the xmit they were made with, and the server is available.
        assert!(!Arc::ptr_eq(&st.dests()[0], &old));
        assert!(!old.is_removed());
        // Then deleted: the old object's connections are a removed server's too.
        assert_eq!(st.apply(&del("10.0.0.9")), Response::Ok);
        assert!(old.is_removed());
    }

    #[test]
    fn runtime_follows_model_and_keeps_dest_objects() {
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            stop: AtomicBool::new(false),
        });
        let steer = FakeSteer::default();
        let mut st = DaemonState::new(shared.clone(), Box::new(steer.clone()), 1024);
        let wrr = ServiceOpts {
            scheduler: "wrr".into(),
            ..Default::default()
        };
        assert_eq!(
            st.apply(&Request::AddService {
                key: key(),
                opts: wrr
            }),
            Response::Ok
        );
        assert_eq!(st.apply(&dest("10.0.0.9", 2)), Response::Ok);
        assert_eq!(steer.0.lock().unwrap().len(), 1);
        assert_eq!(shared.snapshot.load().services.len(), 1);
        let d0 = st.dests()[0].clone();
        d0.load.active_conns.store(3, Relaxed);
        assert_eq!(st.apply(&dest("10.0.0.20", 5)), Response::Ok);
        // The existing server object (and its counters) survived the change.
        assert!(st.dests().iter().any(|d| Arc::ptr_eq(d, &d0)));
        let Response::Status(s) = st.apply(&Request::Status { service: None }) else {
            panic!()
        };
        assert_eq!(s.services[0].dests[1].active_conns, 3);
        assert_eq!(s.services[0].dests[0].addr.to_string(), "10.0.0.20");
        // Deleting the service marks it deleted (its connections get dropped) and unsteers it.
        let rt = shared
            .snapshot
            .load()
            .services
            .values()
            .next()
            .unwrap()
            .clone();
        assert_eq!(
            st.apply(&Request::DeleteService { key: key() }),
            Response::Ok
        );
        assert!(rt.deleted.load(Relaxed));
        assert!(steer.0.lock().unwrap().is_empty());
        assert!(shared.snapshot.load().services.is_empty());
    }
}
