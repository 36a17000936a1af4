//! The director's side of connection sync: [`SyncHooks`] over the workers' queues, the
//! parked store and the tables.
//!
//! - Sending: workers queue due connections (`sync::out`); `drain` hands them to the
//!   master thread. Workers evaluate the send rule only while a master drains: `drain`
//!   switches it on, and the daemon's tick (`tick`) switches it off when no drain came for
//!   a second (the master was stopped, or its thread died), so nothing piles up unseen.
//! - Receiving: `apply` parks every usable entry (`conn::parked`); the first packet of the
//!   flow on any worker makes it a connection there. Nothing is bound to a service or
//!   server at this point, so entries that arrive before their configuration (a backup
//!   configured later, a restart before `-R`) are kept, as IPVS keeps "unbound" ones.
//! - Bulk sync and the restart state file: `dump` walks the parked store, every worker's
//!   table (chunked messages between batches, as `-L -c`) and the NAT shards.

use super::listing::for_each_row;
use super::DataPathView;
use crate::conn::{ConnState, ParkedConns};
use crate::packet::FlowKey;
use crate::service::service_lookup_key;
use crate::sync::out::{self as sync_out, SyncQueues, SyncRec};
use crate::sync::wire::SyncConn;
use crate::sync::{SyncCounters, SyncHooks};
use crate::worker::{ConnRow, Shared};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, OnceLock, Weak};

/// Entries per chunk handed to `dump`'s callback.
const DUMP_CHUNK: usize = 1024;

/// No drain for this long: no master runs, workers stop queueing.
const MASTER_IDLE_MS: u64 = 1000;

pub struct DataHooks {
    parked: Arc<ParkedConns>,
    queues: Arc<SyncQueues>,
    shared: Arc<Shared>,
    /// The workers and NAT table, for `dump`; set once the data path is up.
    view: OnceLock<Weak<DataPathView>>,
    counters: SyncCounters,
    last_drain_ms: AtomicU64,
}

impl DataHooks {
    pub fn new(parked: Arc<ParkedConns>, queues: Arc<SyncQueues>, shared: Arc<Shared>) -> Self {
        DataHooks {
            parked,
            queues,
            shared,
            view: OnceLock::new(),
            counters: SyncCounters::default(),
            last_drain_ms: AtomicU64::new(0),
        }
    }

    /// Weak: the view holds the hooks.
    pub fn set_view(&self, view: &Arc<DataPathView>) {
        let _ = self.view.set(Arc::downgrade(view));
    }

    pub fn parked(&self) -> &ParkedConns {
        &self.parked
    }

    /// Once a second from the daemon loop: expire parked entries, and stop the workers'
    /// sync queueing when no master has drained for a while.
    pub fn tick(&self, now_ms: u64) {
        self.parked.expire(now_ms, 64);
        if self.queues.enabled()
            && now_ms.saturating_sub(self.last_drain_ms.load(Relaxed)) > MASTER_IDLE_MS
        {
            self.queues.set_enabled(false);
        }
        self.counters
            .send_dropped
            .store(self.queues.dropped(), Relaxed);
    }

    fn row_to_wire(r: &ConnRow, now_ms: u64) -> SyncConn {
        SyncRec {
            key: r.key,
            dest_addr: u32::from(r.dest_addr),
            dest_port: r.dest_port,
            forward: r.forward,
            state: r.state,
            timeout_s: remaining_s(r.expires_ms, now_ms),
            template: false,
        }
        .to_wire()
    }
}

/// Seconds left until `expires_ms`, at least 1 (0 on the wire means "use your default").
fn remaining_s(expires_ms: u64, now_ms: u64) -> u32 {
    (expires_ms.saturating_sub(now_ms).div_ceil(1000)).clamp(1, u32::MAX as u64) as u32
}

impl SyncHooks for DataHooks {
    fn drain(&self, out: &mut Vec<SyncConn>) {
        self.last_drain_ms.store(crate::clock::now_ms(), Relaxed);
        if !self.queues.enabled() {
            self.queues.set_enabled(true);
        }
        let mut recs = Vec::new();
        self.queues.drain(&mut recs);
        out.extend(recs.iter().map(SyncRec::to_wire));
        self.counters
            .send_dropped
            .store(self.queues.dropped(), Relaxed);
    }

    fn apply(&self, conns: &[SyncConn]) {
        let now = crate::clock::now_ms();
        let snap = self.shared.snapshot.load();
        let (mut applied, mut refused) = (0, 0);
        for c in conns {
            if c.is_template() && !c.v6 {
                // Into the service's own template table, as `ip_vs_proc_conn` makes the
                // template a connection entry of its own (v0 and timeout 0: 3 minutes).
                let secs = if c.timeout_s > 0 { c.timeout_s } else { 180 };
                let svc =
                    snap.services
                        .get(&service_lookup_key(u32::from(c.vaddr), c.vport, c.protocol));
                let ok = svc.is_some_and(|svc| {
                    svc.apply_synced_template(
                        u32::from(c.caddr),
                        c.protocol,
                        c.daddr,
                        c.dport,
                        now + secs as u64 * 1000,
                    )
                });
                if ok {
                    applied += 1;
                } else {
                    refused += 1;
                }
                continue;
            }
            match sync_out::from_wire(c, now, |s| snap.timeouts.get(s)) {
                Ok((k, p)) => match self.parked.put(k, p) {
                    Ok(()) => applied += 1,
                    Err(_) => refused += 1,
                },
                Err(_) => refused += 1,
            }
        }
        SyncCounters::add(&self.counters.applied, applied);
        SyncCounters::add(&self.counters.refused, refused);
    }

    fn dump(&self, each: &mut dyn FnMut(&[SyncConn])) {
        let now = crate::clock::now_ms();
        let mut chunk = Vec::with_capacity(DUMP_CHUNK);
        self.parked.for_each(|k, p| {
            chunk.push(
                SyncRec {
                    key: *k,
                    dest_addr: p.dest_addr,
                    dest_port: p.dest_port,
                    forward: p.forward,
                    state: p.state,
                    timeout_s: remaining_s(p.expires_ms, now),
                    template: false,
                }
                .to_wire(),
            );
        });
        // Templates, per service under its persistence lock, as `-L -c` collects them.
        let snap = self.shared.snapshot.load();
        for svc in snap.services.values() {
            if svc.persistence().is_none() {
                continue;
            }
            svc.for_each_template(|t| {
                chunk.push(
                    SyncRec {
                        key: FlowKey {
                            saddr: t.key.cnet,
                            daddr: u32::from(t.vaddr),
                            sport: 0,
                            dport: t.key.vport,
                            proto: t.key.proto,
                        },
                        dest_addr: u32::from(t.dest.addr),
                        dest_port: t.dest.port,
                        forward: t.dest.forward,
                        state: ConnState::None,
                        timeout_s: remaining_s(t.expires_ms, now),
                        template: true,
                    }
                    .to_wire(),
                )
            });
        }
        for c in chunk.chunks(DUMP_CHUNK) {
            each(c);
        }
        let Some(view) = self.view.get().and_then(Weak::upgrade) else {
            return;
        };
        let workers: Vec<_> = view.workers.iter().map(|(h, _)| h).collect();
        let r = for_each_row(&workers, &view.nat, |rows| {
            let now = crate::clock::now_ms();
            let c: Vec<SyncConn> = rows.iter().map(|r| Self::row_to_wire(r, now)).collect();
            if !c.is_empty() {
                each(&c);
            }
            Ok(())
        });
        if let Err(e) = r {
            tracing::warn!("connection dump incomplete: {e:#}");
        }
    }

    fn counters(&self) -> &SyncCounters {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Forward;
    use crate::service::Snapshot;
    use arc_swap::ArcSwap;
    use std::sync::atomic::AtomicBool;

    fn hooks() -> DataHooks {
        DataHooks::new(
            Arc::new(ParkedConns::with_capacity(1000)),
            Arc::new(SyncQueues::new(2)),
            Arc::new(Shared {
                snapshot: ArcSwap::from_pointee(Snapshot::default()),
                stop: AtomicBool::new(false),
            }),
        )
    }

    fn rec(i: u32) -> SyncRec {
        SyncRec {
            key: FlowKey {
                saddr: 0x0a00_0064 + i,
                daddr: 0x0a00_0058,
                sport: 40000,
                dport: 80,
                proto: 6,
            },
            dest_addr: 0x0a00_0009,
            dest_port: 80,
            forward: Forward::Route,
            state: ConnState::Established,
            timeout_s: 900,
            template: false,
        }
    }

    #[test]
    fn drain_switches_sending_on_and_tick_off() {
        let h = hooks();
        assert!(!h.queues.enabled());
        let mut out = vec![];
        h.drain(&mut out);
        assert!(h.queues.enabled() && out.is_empty());
        h.queues.push(1, rec(1));
        h.drain(&mut out);
        assert_eq!(out, vec![rec(1).to_wire()]);
        h.tick(crate::clock::now_ms() + 5000);
        assert!(!h.queues.enabled(), "no master drained for a while");
    }

    #[test]
    fn apply_parks_and_dump_returns_them() {
        let h = hooks();
        let mut bad = rec(2).to_wire();
        bad.flags |= crate::sync::wire::IP_VS_CONN_F_TEMPLATE;
        h.apply(&[rec(1).to_wire(), bad, rec(3).to_wire()]);
        assert_eq!(h.counters.applied.load(Relaxed), 2);
        assert_eq!(h.counters.refused.load(Relaxed), 1);
        let p = h.parked.get(&rec(1).key).expect("parked");
        assert_eq!(p.state, ConnState::Established);
        let mut got = vec![];
        h.dump(&mut |c| got.extend_from_slice(c));
        got.sort_by_key(|c| c.caddr);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].caddr, std::net::Ipv4Addr::from(rec(1).key.saddr));
        assert!(got[0].timeout_s > 890 && got[0].timeout_s <= 900);
    }

    #[test]
    fn templates_go_into_their_service_and_come_back_in_the_dump() {
        use crate::dest::DestRt;
        use crate::model::{Protocol, ServiceKey};
        use crate::service::{Persistence, ServiceRt};
        let h = hooks();
        let key = ServiceKey {
            proto: Protocol::Tcp,
            addr: "10.0.0.88".parse().unwrap(),
            port: 80,
        };
        let svc = Arc::new(ServiceRt::new(key, crate::sched::by_name("rr").unwrap()));
        let d = Arc::new(DestRt::new(
            "10.0.0.9".parse().unwrap(),
            80,
            Forward::Route,
            1,
        ));
        svc.set_dests(vec![d.clone()], None);
        svc.set_persistence(
            Some(Persistence {
                timeout_ms: 300_000,
                netmask: 0xffff_ff00,
            }),
            16,
        );
        let mut snap = Snapshot::default();
        snap.services
            .insert(service_lookup_key(0x0a00_0058, 80, 6), svc.clone());
        h.shared.snapshot.store(Arc::new(snap));
        let tpl = SyncRec {
            key: FlowKey {
                saddr: 0x0a00_0000,
                daddr: 0x0a00_0058,
                sport: 0,
                dport: 80,
                proto: 6,
            },
            state: ConnState::None,
            timeout_s: 300,
            template: true,
            ..rec(0)
        }
        .to_wire();
        assert!(tpl.is_template());
        // One for the service, one for a service that does not exist here.
        let mut other = tpl.clone();
        other.vport = 443;
        h.apply(&[tpl.clone(), other]);
        assert_eq!(h.counters.applied.load(Relaxed), 1);
        assert_eq!(h.counters.refused.load(Relaxed), 1);
        assert_eq!(svc.templates_len(), 1);
        assert_eq!(d.load.persist_conns.load(Relaxed), 1);
        // The same again refreshes, not duplicates.
        h.apply(std::slice::from_ref(&tpl));
        assert_eq!(svc.templates_len(), 1);
        let mut got = vec![];
        h.dump(&mut |c| got.extend_from_slice(c));
        assert_eq!(got.len(), 1);
        assert!(got[0].is_template());
        assert_eq!((got[0].caddr, got[0].daddr), (tpl.caddr, tpl.daddr));
        assert!(got[0].timeout_s > 290);
    }
}
