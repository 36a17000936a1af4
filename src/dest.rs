//! A real server as the data path sees it (`DestRt`).
//!
//! This sits below the schedulers and the connection tables: schedulers read the load
//! figures, connections bind to a server and forward to its next hop. A `DestRt` lives as
//! long as any snapshot or connection refers to it, so a worker holding an old snapshot or
//! an old connection never sees freed state (the IPVS "trash list" done with reference
//! counts).
//!
//! Layout: the fields every forwarded packet reads (next-hop MAC, egress port, TUN source,
//! weight) are written only by the control thread; the load counters are written by every
//! worker on every new connection and state change. They live on separate cache lines
//! (`CachePadded`), so a worker creating connections does not keep invalidating the line
//! other workers read for each packet. `DestRt` is then 128-byte aligned, which also keeps
//! the `Arc` reference counts (written when a connection is created or removed) off the
//! hot-read line.

use crate::kconf::OnDead;
use crate::model::Forward;
use crate::stats::StatSlots;
use crossbeam::utils::CachePadded;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};

/// `DestRt::fate` bits. Removed from its service (IPVS clears `IP_VS_DEST_F_AVAILABLE` in
/// `__ip_vs_unlink_dest`; the object lives on in the trash while connections use it).
const REMOVED: u8 = 1;
/// Declared down by the health checks while still configured (`set_dead`).
const DEAD: u8 = 2;
/// The service's `OnDead` policy, in bits 2-3.
const POLICY_SHIFT: u8 = 2;

/// What the packet of an existing connection to a removed or dead server gets
/// (`DestRt::on_unavailable`), according to the service's `OnDead` policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadAction {
    /// Forwarded as usual: the server is only dead (not removed) and the policy is IPVS's,
    /// which keeps a quiesced (weight 0) server's connections.
    Forward,
    /// Dropped without refreshing the entry's timer (`ip_vs_in`: "don't restart its timer,
    /// and silently drop the packet"); the entry times out.
    Drop,
    /// The entry is removed and the packet dropped (IPVS `expire_nodest_conn=1`,
    /// `ip_vs_conn_expire_now`): the client's next attempt is scheduled afresh.
    Expire,
    /// The entry is removed; a UDP datagram is scheduled afresh at once, a TCP segment is
    /// answered with a RST (xvs extension).
    Reassign,
}

/// Load figures of a server, shared by all workers because the schedulers' figures must be
/// global, as in IPVS. Written by every worker (atomics).
#[derive(Debug, Default)]
pub struct DestLoad {
    /// Connections in TCP ESTABLISHED.
    pub active_conns: AtomicU32,
    /// All other connections (every UDP entry, TCP in any other state).
    pub inactive_conns: AtomicU32,
    /// Persistence templates pointing at this server.
    pub persist_conns: AtomicU32,
    /// IP_VS_DEST_F_OVERLOAD.
    pub overloaded: AtomicBool,
    /// Set by a worker that found the MAC missing; the refresher then resolves it promptly.
    pub wants_resolution: AtomicBool,
}

/// `repr(C)`: the field order below is the cache-line layout (see the module comment).
#[derive(Debug)]
#[repr(C)]
pub struct DestRt {
    // Read on every packet, written by the control thread only.
    pub addr: Ipv4Addr,
    pub port: u16,
    pub forward: Forward,
    /// REMOVED | DEAD | policy << POLICY_SHIFT: read once (one relaxed load) per packet of
    /// an existing connection, written only when a server is removed, revived, declared
    /// dead or alive, or its service's policy changes. It fills the padding byte after
    /// `forward`, on the line those packets read anyway: a separate line would cost every
    /// packet a second cache miss, and its writes are as rare as configuration changes.
    fate: AtomicU8,
    /// IPVS weight; 0 = quiesced (no new connections).
    pub weight: AtomicU32,
    pub u_threshold: AtomicU32,
    pub l_threshold: AtomicU32,
    /// Next-hop MAC as a u64 (low 48 bits); 0 = unresolved. Written by the neighbour refresher.
    mac: AtomicU64,
    /// Index of the worker port (interface) leading to this server, from the kernel's
    /// routing table; `NO_PORT` until resolved.
    pub egress: AtomicU32,
    /// TUN: outer source address (the route's preferred source), host order.
    pub tun_src: AtomicU32,
    /// Written by the workers: a cache line of its own.
    pub load: CachePadded<DestLoad>,
    /// Packet/byte/connection counters and rates (`--stats`, `--rate`): one line per worker.
    pub stats: StatSlots,
}

/// `DestRt::egress` before the route is known.
pub const NO_PORT: u32 = u32::MAX;

impl DestRt {
    pub fn new(addr: Ipv4Addr, port: u16, forward: Forward, weight: u32) -> Self {
        let load = DestLoad::default();
        load.wants_resolution.store(true, Relaxed);
        DestRt {
            addr,
            port,
            forward,
            fate: AtomicU8::new(0),
            weight: AtomicU32::new(weight),
            u_threshold: AtomicU32::new(0),
            l_threshold: AtomicU32::new(0),
            mac: AtomicU64::new(0),
            egress: AtomicU32::new(NO_PORT),
            tun_src: AtomicU32::new(0),
            load: CachePadded::new(load),
            stats: StatSlots::default(),
        }
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Relaxed)
    }

    pub fn active(&self) -> u32 {
        self.load.active_conns.load(Relaxed)
    }

    pub fn inactive(&self) -> u32 {
        self.load.inactive_conns.load(Relaxed)
    }

    pub fn persistent(&self) -> u32 {
        self.load.persist_conns.load(Relaxed)
    }

    pub fn overloaded(&self) -> bool {
        self.load.overloaded.load(Relaxed)
    }

    /// IPVS: weight 0 (quiesced) or OVERLOAD means "no new connections"; so does a server
    /// the health checks declared dead (`set_dead`), whatever its weight.
    pub fn available(&self) -> bool {
        self.weight() > 0 && !self.overloaded() && !self.is_dead()
    }

    /// Sets or clears `bit`; a change cuts the server's fast-path flows off (they go to the
    /// workers, which apply the new fate and reinstall what is still forwarded). The fate
    /// is written first: a worker that reads the new generation sees it too. Unchanged
    /// (a health check confirming what is known): nothing is bumped.
    fn set_bit(&self, bit: u8, on: bool) {
        let old = if on {
            self.fate.fetch_or(bit, Relaxed)
        } else {
            self.fate.fetch_and(!bit, Relaxed)
        };
        if (old & bit != 0) != on {
            self.stats.bump_gen();
        }
    }

    /// The health checks declare this server down (`true`) or up again, while it stays
    /// configured (keepalived's `inhibit_on_failure`: weight 0 instead of removal). It then
    /// gets no new connections; what its existing connections get is the service's
    /// `OnDead` policy (`on_unavailable`).
    pub fn set_dead(&self, dead: bool) {
        self.set_bit(DEAD, dead);
    }

    pub fn is_dead(&self) -> bool {
        self.fate.load(Relaxed) & DEAD != 0
    }

    /// Removed from its service (`true`, the daemon's reconcile) or revived from the trash
    /// (`false`, `ip_vs_trash_get_dest`); IPVS's `IP_VS_DEST_F_AVAILABLE` cleared or set.
    pub fn set_removed(&self, removed: bool) {
        self.set_bit(REMOVED, removed);
    }

    pub fn is_removed(&self) -> bool {
        self.fate.load(Relaxed) & REMOVED != 0
    }

    /// The policy of the service this server belongs to (each `DestRt` belongs to one).
    pub fn set_on_dead(&self, p: OnDead) {
        let bits = (match p {
            OnDead::Ipvs => 0u8,
            OnDead::Expire => 1,
            OnDead::Reassign => 2,
        }) << POLICY_SHIFT;
        let mask = 3 << POLICY_SHIFT;
        let old = self
            .fate
            .fetch_update(Relaxed, Relaxed, |f| Some((f & !mask) | bits));
        if old.is_ok_and(|f| f & mask != bits) {
            self.stats.bump_gen();
        }
    }

    pub fn on_dead(&self) -> OnDead {
        match (self.fate.load(Relaxed) >> POLICY_SHIFT) & 3 {
            1 => OnDead::Expire,
            2 => OnDead::Reassign,
            _ => OnDead::Ipvs,
        }
    }

    /// What a packet of an existing connection to this server gets; `None` (the usual case,
    /// decided by one relaxed load) when the server is neither removed nor dead.
    #[inline]
    pub fn on_unavailable(&self) -> Option<DeadAction> {
        let f = self.fate.load(Relaxed);
        if f & (REMOVED | DEAD) == 0 {
            return None;
        }
        Some(match (f >> POLICY_SHIFT) & 3 {
            1 => DeadAction::Expire,
            2 => DeadAction::Reassign,
            // IPVS: only a removed server is unavailable to its connections; a dead one still
            // configured is quiesced (weight 0), and quiesced servers keep their connections.
            _ if f & REMOVED != 0 => DeadAction::Drop,
            _ => DeadAction::Forward,
        })
    }

    /// IPVS load figure: `(activeconns << 8) + inactconns`.
    pub fn overhead(&self) -> u64 {
        ((self.active() as u64) << 8) + self.inactive() as u64
    }

    /// Total connections, as IPVS's `ip_vs_dest_totalconns`.
    pub fn total_conns(&self) -> u32 {
        self.active() + self.inactive()
    }

    /// A connection was bound to this server (ip_vs_bind_dest): count it and set OVERLOAD
    /// when the upper threshold is reached.
    pub fn bind_conn(&self, active: bool) {
        if active {
            self.load.active_conns.fetch_add(1, Relaxed);
        } else {
            self.load.inactive_conns.fetch_add(1, Relaxed);
        }
        let u = self.u_threshold.load(Relaxed);
        if u != 0 && self.total_conns() >= u {
            self.load.overloaded.store(true, Relaxed);
        }
    }

    /// A connection went away (ip_vs_unbind_dest): uncount it and clear OVERLOAD below the
    /// lower threshold, or below 3/4 of the upper one when no lower threshold is set.
    pub fn unbind_conn(&self, active: bool) {
        if active {
            self.load.active_conns.fetch_sub(1, Relaxed);
        } else {
            self.load.inactive_conns.fetch_sub(1, Relaxed);
        }
        if !self.overloaded() {
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
            self.load.overloaded.store(false, Relaxed);
        }
    }

    /// A connection moved between ESTABLISHED and any other state.
    pub fn move_conn(&self, to_active: bool) {
        let (from, to) = if to_active {
            (&self.load.inactive_conns, &self.load.active_conns)
        } else {
            (&self.load.active_conns, &self.load.inactive_conns)
        };
        from.fetch_sub(1, Relaxed);
        to.fetch_add(1, Relaxed);
    }

    /// New thresholds from the configuration (__ip_vs_update_dest): OVERLOAD is cleared when
    /// the upper threshold is removed or raised.
    pub fn set_thresholds(&self, u: u32, l: u32) {
        let old_u = self.u_threshold.load(Relaxed);
        if u == 0 || u > old_u {
            self.load.overloaded.store(false, Relaxed);
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

    /// What a fast-path entry copies from the server's route: egress port, TUN source and
    /// next-hop MAC (a change bumps the server's generation).
    pub fn fast_route(&self) -> (u32, u32, Option<[u8; 6]>) {
        (
            self.egress.load(Relaxed),
            self.tun_src.load(Relaxed),
            self.mac(),
        )
    }

    pub fn set_mac(&self, mac: Option<[u8; 6]>) {
        let v = match mac {
            Some(m) => u64::from_be_bytes([0, 0, m[0], m[1], m[2], m[3], m[4], m[5]]),
            None => 0,
        };
        self.mac.store(v, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    fn d(u: u32, l: u32) -> DestRt {
        let d = DestRt::new(Ipv4Addr::new(10, 0, 0, 9), 80, Forward::Route, 1);
        d.set_thresholds(u, l);
        d
    }

    #[test]
    fn hot_read_fields_do_not_share_a_line_with_counters() {
        // Every field the packet path reads lies before the load counters, which start on
        // a line of their own; DestRt itself is line-aligned so the Arc counts precede it
        // on another line.
        let load = offset_of!(DestRt, load);
        assert_eq!(load % 128, 0);
        for off in [
            offset_of!(DestRt, addr),
            offset_of!(DestRt, fate),
            offset_of!(DestRt, weight),
            offset_of!(DestRt, mac),
            offset_of!(DestRt, egress),
            offset_of!(DestRt, tun_src),
        ] {
            assert!(off < load, "hot-read field at {off} after the counters");
        }
        assert!(offset_of!(DestRt, stats) >= load + 128);
        assert_eq!(std::mem::align_of::<DestRt>(), 128);
    }

    #[test]
    fn fate_bits_decide_the_action_per_policy() {
        let x = d(0, 0);
        assert_eq!(x.on_unavailable(), None);
        assert!(x.available());
        x.set_dead(true);
        assert!(!x.available(), "a dead server gets no new connections");
        assert_eq!(x.on_unavailable(), Some(DeadAction::Forward));
        x.set_removed(true);
        assert_eq!(x.on_unavailable(), Some(DeadAction::Drop));
        x.set_dead(false);
        assert_eq!(x.on_unavailable(), Some(DeadAction::Drop));
        x.set_on_dead(OnDead::Expire);
        assert_eq!(x.on_unavailable(), Some(DeadAction::Expire));
        assert!(x.is_removed() && !x.is_dead());
        x.set_on_dead(OnDead::Reassign);
        assert_eq!(x.on_dead(), OnDead::Reassign);
        assert_eq!(x.on_unavailable(), Some(DeadAction::Reassign));
        x.set_removed(false);
        assert_eq!(x.on_unavailable(), None);
        x.set_dead(true);
        assert_eq!(x.on_unavailable(), Some(DeadAction::Reassign));
        x.set_on_dead(OnDead::Ipvs);
        assert_eq!(x.on_unavailable(), Some(DeadAction::Forward));
        assert!(x.is_dead());
    }

    #[test]
    fn overload_set_at_upper_cleared_below_lower() {
        let x = d(4, 2);
        for _ in 0..3 {
            x.bind_conn(false);
        }
        assert!(!x.overloaded());
        x.bind_conn(true);
        assert!(x.overloaded(), "total 4 >= upper 4");
        x.unbind_conn(false);
        x.unbind_conn(false);
        assert!(x.overloaded(), "total 2 is not < lower 2");
        x.unbind_conn(false);
        assert!(!x.overloaded());
    }

    #[test]
    fn overload_cleared_below_three_quarters_without_lower() {
        let x = d(8, 0);
        for _ in 0..8 {
            x.bind_conn(false);
        }
        assert!(x.overloaded());
        x.unbind_conn(false); // 7*4 = 28 >= 24
        x.unbind_conn(false); // 6*4 = 24, not < 24
        assert!(x.overloaded());
        x.unbind_conn(false); // 5*4 = 20 < 24
        assert!(!x.overloaded());
        // Raising the upper threshold clears OVERLOAD at once.
        for _ in 0..3 {
            x.bind_conn(false);
        }
        assert!(x.overloaded());
        x.set_thresholds(100, 0);
        assert!(!x.overloaded());
    }
}
