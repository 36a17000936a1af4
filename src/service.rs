//! A virtual service as the data path sees it (`ServiceRt`), and the configuration
//! snapshot the workers read (`Snapshot`).
//!
//! The control thread builds a service's scheduler for each new server list and publishes
//! the two together (`SchedSet`, swapped through `ArcSwap`), so a worker scheduling a new
//! connection loads one consistent pair without a lock. Persistence templates live under
//! the service's persistence lock (see `conn::template`).

use crate::conn::{StateTimeouts, Template, TemplateKey, Templates};
use crate::dest::DestRt;
use crate::model::ServiceKey;
use crate::packet::{DropReason, FlowKey};
use crate::sched::{SchedFlags, Scheduler};
use crate::stats::StatSlots;
use arc_swap::ArcSwap;
use crossbeam::utils::CachePadded;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Persistence settings of a service (`-p timeout -M netmask`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Persistence {
    pub timeout_ms: u64,
    /// Client grouping mask in host order (255.255.255.255 = per client address).
    pub netmask: u32,
}

/// Templates per persistent service when the daemon is not told (`xvsd --templates-max`
/// defaults to twice `--conn-max`, see `conn::template`).
pub const DEFAULT_TEMPLATES_MAX: usize = 2 << 20;

/// A connection made without a persistence template.
pub const NO_TEMPLATE: u32 = u32::MAX;

/// The server list in IPVS list order and the scheduler built for exactly that list.
pub struct SchedSet {
    pub dests: Vec<Arc<DestRt>>,
    pub sched: Box<dyn Scheduler>,
    /// The `-b` flags `sched` was built with (a change rebuilds it).
    pub flags: SchedFlags,
}

/// What the persistence lock protects.
struct PersistCore {
    settings: Option<Persistence>,
    /// Allocated when the service first becomes persistent, then kept (connections refer
    /// to its slots).
    templates: Option<Templates>,
}

/// A scheduling decision: the server, and the template slot that chose it (`NO_TEMPLATE`
/// for a service without persistence).
pub type Pick = (Arc<DestRt>, u32);

/// `repr(C)`: the flags every packet reads come first; the persistence lock that workers
/// write sits on lines of its own (checked in a test).
#[repr(C)]
pub struct ServiceRt {
    pub key: ServiceKey,
    /// Set when the service is deleted: its connections are then dropped, as IPVS does.
    pub deleted: AtomicBool,
    /// Some real server uses NAT, so established connections may be in the NAT table.
    pub has_nat: AtomicBool,
    /// `persist` holds settings: new connections look for a template first.
    persistent: AtomicBool,
    sched: ArcSwap<SchedSet>,
    /// Taken for a new connection of a persistent service, and when a connection made
    /// through a template goes; own cache line because every worker writes it.
    persist: CachePadded<Mutex<PersistCore>>,
    pub stats: StatSlots,
}

impl ServiceRt {
    pub fn new(key: ServiceKey, sched: Box<dyn Scheduler>) -> Self {
        ServiceRt {
            key,
            deleted: AtomicBool::new(false),
            has_nat: AtomicBool::new(false),
            persistent: AtomicBool::new(false),
            sched: ArcSwap::from_pointee(SchedSet {
                dests: Vec::new(),
                sched,
                flags: SchedFlags::default(),
            }),
            persist: CachePadded::new(Mutex::new(PersistCore {
                settings: None,
                templates: None,
            })),
            stats: StatSlots::default(),
        }
    }

    fn persist_lock(&self) -> std::sync::MutexGuard<'_, PersistCore> {
        // A poisoned lock means a panic while holding it; the table is still consistent.
        self.persist.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The published server list and scheduler.
    pub fn sched_set(&self) -> Arc<SchedSet> {
        self.sched.load_full()
    }

    /// The current server list.
    pub fn dests(&self) -> Vec<Arc<DestRt>> {
        self.sched.load().dests.clone()
    }

    /// Publishes a new server list (or new weights: call it after changing them). The
    /// scheduler is copied with its state and updated for the list, or replaced by `sched`
    /// (a new scheduler name or new flags). Control thread only.
    pub fn set_dests(
        &self,
        dests: Vec<Arc<DestRt>>,
        sched: Option<(Box<dyn Scheduler>, SchedFlags)>,
    ) {
        let cur = self.sched.load();
        let (mut s, flags) = match sched {
            Some(x) => x,
            None => (cur.sched.boxed_clone(), cur.flags),
        };
        s.update(&dests);
        self.sched.store(Arc::new(SchedSet {
            dests,
            sched: s,
            flags,
        }));
    }

    /// Turns persistence on (with a table of up to `capacity` templates, made the first
    /// time) or off (templates dropped). Control thread only.
    pub fn set_persistence(&self, p: Option<Persistence>, capacity: usize) {
        let mut core = self.persist_lock();
        match p {
            Some(_) => {
                core.templates
                    .get_or_insert_with(|| Templates::with_capacity(capacity));
            }
            None => {
                if let Some(t) = core.templates.as_mut() {
                    t.clear();
                }
            }
        }
        core.settings = p;
        self.persistent.store(p.is_some(), Relaxed);
    }

    pub fn persistence(&self) -> Option<Persistence> {
        self.persist_lock().settings
    }

    /// A connection created through template `slot` went away.
    pub fn release_template(&self, slot: u32) {
        if slot == NO_TEMPLATE {
            return;
        }
        if let Some(t) = self.persist_lock().templates.as_mut() {
            t.release(slot);
        }
    }

    /// Schedules a new connection: `NoDest` when no server is available, `TemplateFull`
    /// when a persistent service has no room for the client group's template.
    pub fn schedule(&self, flow: &FlowKey, now_ms: u64) -> Result<Pick, DropReason> {
        let set = self.sched.load();
        let pick = || {
            let i = set.sched.schedule(&set.dests, flow, now_ms);
            i.and_then(|i| set.dests.get(i).cloned())
                .ok_or(DropReason::NoDest)
        };
        if !self.persistent.load(Relaxed) {
            return Ok((pick()?, NO_TEMPLATE));
        }
        let mut core = self.persist_lock();
        let core = &mut *core;
        let (Some(p), Some(tpls)) = (core.settings, core.templates.as_mut()) else {
            // Persistence was switched off under us: schedule plainly.
            return Ok((pick()?, NO_TEMPLATE));
        };
        // ip_vs_sched_persist: reuse the client group's template while its server is still
        // in the list; otherwise schedule and make a new template.
        let key = TemplateKey {
            cnet: flow.saddr & p.netmask,
            vport: self.key.port,
            proto: flow.proto,
        };
        let expires = now_ms + p.timeout_ms;
        if let Some((slot, dest)) = tpls.lookup(&key, &set.dests, expires) {
            return Ok((dest, slot));
        }
        let dest = pick()?;
        let slot = tpls
            .insert(Template {
                key,
                vaddr: self.key.addr,
                dest: dest.clone(),
                expires_ms: expires,
            })
            .map_err(|_| DropReason::TemplateFull)?;
        Ok((dest, slot))
    }

    /// Applies a persistence template received from a sync peer: client group `cnet`
    /// (already masked by the peer) to the real server `dest_addr:dest_port` of this
    /// service. `false` if the service is not persistent or has no such server.
    pub fn apply_synced_template(
        &self,
        cnet: u32,
        proto: u8,
        dest_addr: Ipv4Addr,
        dest_port: u16,
        expires_ms: u64,
    ) -> bool {
        let set = self.sched.load();
        let Some(dest) = set
            .dests
            .iter()
            .find(|d| d.addr == dest_addr && (d.port == dest_port || d.port == 0))
            .cloned()
        else {
            return false;
        };
        let mut core = self.persist_lock();
        let Some(tpls) = core.templates.as_mut() else {
            return false;
        };
        tpls.put_synced(Template {
            key: TemplateKey {
                cnet,
                vport: self.key.port,
                proto,
            },
            vaddr: self.key.addr,
            dest,
            expires_ms,
        })
        .is_ok()
    }

    /// Removes templates past their timeout with no connections left and lets the
    /// scheduler expire its own tables. Called by the daemon about once a second.
    pub fn expire(&self, now_ms: u64) {
        {
            let mut core = self.persist_lock();
            let timeout = core.settings.map_or(0, |p| p.timeout_ms);
            if let Some(t) = core.templates.as_mut() {
                t.expire(now_ms, timeout);
            }
        }
        self.sched.load().sched.expire(now_ms);
    }

    /// Visits the templates (listings), under the persistence lock.
    pub fn for_each_template(&self, f: impl FnMut(&Template)) {
        if let Some(t) = self.persist_lock().templates.as_ref() {
            t.for_each(f);
        }
    }

    /// Number of live templates.
    pub fn templates_len(&self) -> usize {
        self.persist_lock()
            .templates
            .as_ref()
            .map_or(0, |t| t.len())
    }
}

/// What the data path needs from the configuration, published as an immutable snapshot.
pub struct Snapshot {
    /// Services by `service_lookup_key(daddr, dport, proto)`.
    pub services: hashbrown::HashMap<u64, Arc<ServiceRt>, ahash::RandomState>,
    pub timeouts: StateTimeouts,
    /// Some service has (or had) NAT real servers: the NAT table may hold entries, so
    /// workers sweep it.
    pub has_nat: bool,
    /// Services by NAT real server, `service_lookup_key(rip, rport, proto)`: a reply that
    /// finds no connection looks here for the service whose parked (synced) entry it
    /// belongs to.
    pub nat_rs: hashbrown::HashMap<u64, Vec<Arc<ServiceRt>>, ahash::RandomState>,
    /// Which services schedule a TCP segment without SYN that has no connection
    /// (`xvsd --mid-flow`).
    pub mid_flow: MidFlow,
}

/// Mid-flow scheduling (`xvsd --mid-flow`, IPVS's `sloppy_tcp` for chosen schedulers): a
/// TCP segment without SYN (and without RST) of a flow this director has no entry for is
/// scheduled as a new connection instead of dropped. Meant for behind-ECMP directors that
/// all hold the same configuration: a flow the router moves here (a director added,
/// removed or rehashed) was scheduled elsewhere by the same hash over the same server
/// list, so the table gives the same real server here. Only hashing schedulers can say
/// that; `rr`, `wlc` and the rest would pick an arbitrary server and break the flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MidFlow {
    /// Maglev hashing (`mh`): on by default.
    pub mh: bool,
    /// Source hashing (`sh`): opt-in, its table moves more flows when the list changes.
    pub sh: bool,
}

impl Default for MidFlow {
    fn default() -> Self {
        MidFlow {
            mh: true,
            sh: false,
        }
    }
}

impl MidFlow {
    pub const NONE: MidFlow = MidFlow {
        mh: false,
        sh: false,
    };

    /// `--mid-flow` values: a comma-separated list of `mh` and `sh`, or `none`.
    pub fn parse(s: &str) -> Result<MidFlow, String> {
        let mut m = MidFlow::NONE;
        if s == "none" {
            return Ok(m);
        }
        for w in s.split(',') {
            match w.trim() {
                "mh" => m.mh = true,
                "sh" => m.sh = true,
                other => {
                    return Err(format!(
                        "mid-flow scheduling is for the hashing schedulers mh and sh (or none), not {other:?}"
                    ))
                }
            }
        }
        Ok(m)
    }

    /// Whether `svc`'s current scheduler schedules mid-flow segments.
    pub fn allows(&self, svc: &ServiceRt) -> bool {
        let set = svc.sched.load();
        // mh and sh are lock-free; a locked scheduler's name() would take its lock, per
        // segment of an ACK flood.
        if set.sched.takes_lock() {
            return false;
        }
        match set.sched.name() {
            "mh" => self.mh,
            "sh" => self.sh,
            _ => false,
        }
    }
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            services: hashbrown::HashMap::with_hasher(ahash::RandomState::new()),
            timeouts: StateTimeouts::default(),
            has_nat: false,
            nat_rs: hashbrown::HashMap::with_hasher(ahash::RandomState::new()),
            mid_flow: MidFlow::default(),
        }
    }
}

impl Snapshot {
    /// Adds a service under its key (the daemon's publish, and fixtures).
    pub fn insert(&mut self, svc: Arc<ServiceRt>) {
        let k = svc.key;
        self.has_nat |= svc.has_nat.load(Relaxed);
        for d in svc.dests() {
            if d.forward == crate::model::Forward::Masq {
                let rs = service_lookup_key(u32::from(d.addr), d.port, k.proto.number());
                self.nat_rs.entry(rs).or_default().push(svc.clone());
            }
        }
        self.services.insert(
            service_lookup_key(u32::from(k.addr), k.port, k.proto.number()),
            svc,
        );
    }
}

/// Packs (VIP, port, protocol) into one integer key.
pub fn service_lookup_key(daddr: u32, dport: u16, proto: u8) -> u64 {
    ((daddr as u64) << 32) | ((dport as u64) << 16) | proto as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Forward, Protocol};
    use std::net::Ipv4Addr;

    fn svc(dests: &[Arc<DestRt>], sched: &str, cap: usize) -> ServiceRt {
        let s = ServiceRt::new(
            ServiceKey {
                proto: Protocol::Tcp,
                addr: Ipv4Addr::new(10, 0, 0, 88),
                port: 80,
            },
            crate::sched::by_name(sched).unwrap(),
        );
        s.set_dests(dests.to_vec(), None);
        s.set_persistence(
            Some(Persistence {
                timeout_ms: 5000,
                netmask: 0xffff_ff00,
            }),
            cap,
        );
        s
    }

    fn dests(n: u8) -> Vec<Arc<DestRt>> {
        (0..n)
            .map(|i| {
                Arc::new(DestRt::new(
                    Ipv4Addr::new(10, 0, 0, i),
                    80,
                    Forward::Route,
                    1,
                ))
            })
            .collect()
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

    fn templates_of(s: &ServiceRt, d: &Arc<DestRt>) -> usize {
        let mut n = 0;
        s.for_each_template(|t| n += Arc::ptr_eq(&t.dest, d) as usize);
        n
    }

    #[test]
    fn hot_read_flags_do_not_share_a_line_with_the_persistence_lock() {
        use std::mem::offset_of;
        let lock = offset_of!(ServiceRt, persist);
        assert_eq!(lock % 128, 0);
        for off in [
            offset_of!(ServiceRt, key),
            offset_of!(ServiceRt, deleted),
            offset_of!(ServiceRt, has_nat),
            offset_of!(ServiceRt, persistent),
            offset_of!(ServiceRt, sched),
        ] {
            assert!(off < lock, "hot field at {off} after the lock");
        }
        assert!(offset_of!(ServiceRt, stats) >= lock + 128);
    }

    #[test]
    fn template_pins_client_group_until_timeout() {
        let d = dests(3);
        let s = svc(&d, "rr", 16);
        let (a, ta) = s.schedule(&flow(0x0a00_0064, 1000), 0).unwrap();
        // Same /24, other port: same server, same template; rr would have moved on.
        let (b, tb) = s.schedule(&flow(0x0a00_0065, 2000), 100).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(ta, tb);
        assert_eq!(a.persistent(), 1);
        // Another group goes elsewhere.
        let (c, _) = s.schedule(&flow(0x0b00_0001, 1), 100).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        // Connections still controlled: expiry postpones.
        s.expire(10_000);
        assert_eq!(s.templates_len(), 2);
        s.release_template(ta);
        s.release_template(tb);
        // Re-armed at 10_000 + 5000.
        s.expire(14_999);
        assert_eq!(templates_of(&s, &a), 1);
        s.expire(15_000);
        assert_eq!(templates_of(&s, &a), 0);
        assert_eq!(a.persistent(), 0);
    }

    #[test]
    fn removed_server_invalidates_template_but_quiesced_keeps_it() {
        let d = dests(2);
        let s = svc(&d, "rr", 16);
        let (a, _) = s.schedule(&flow(1, 1), 0).unwrap();
        a.weight.store(0, Relaxed);
        s.set_dests(d.clone(), None);
        let (b, _) = s.schedule(&flow(1, 2), 0).unwrap();
        assert!(
            Arc::ptr_eq(&a, &b),
            "quiesced server keeps its persistent client"
        );
        let rest: Vec<_> = d.iter().filter(|x| !Arc::ptr_eq(x, &a)).cloned().collect();
        s.set_dests(rest, None);
        let (c, _) = s.schedule(&flow(1, 3), 0).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
    }

    #[test]
    fn templates_are_bounded_and_refusals_reported() {
        let d = dests(2);
        let s = svc(&d, "wlc", 8);
        // A spoofed flood: every source its own group, every connection still alive.
        let mut refused = 0;
        for i in 0..100u32 {
            if matches!(
                s.schedule(&flow(i << 8, 1), 0),
                Err(DropReason::TemplateFull)
            ) {
                refused += 1;
            }
        }
        assert_eq!(s.templates_len(), 8);
        assert_eq!(refused, 92);
    }

    #[test]
    fn lock_free_schedulers_pick_the_published_list() {
        let d = dests(3);
        let s = ServiceRt::new(
            ServiceKey {
                proto: Protocol::Tcp,
                addr: Ipv4Addr::new(10, 0, 0, 88),
                port: 80,
            },
            crate::sched::by_name("wlc").unwrap(),
        );
        assert_eq!(s.schedule(&flow(1, 1), 0).err(), Some(DropReason::NoDest));
        s.set_dests(d[1..].to_vec(), None);
        let (x, t) = s.schedule(&flow(1, 1), 0).unwrap();
        assert!(Arc::ptr_eq(&x, &d[1]));
        assert_eq!(t, NO_TEMPLATE);
    }
}
