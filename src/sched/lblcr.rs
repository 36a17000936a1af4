//! Locality-based least-connection with replication (`lblcr`), as `ip_vs_lblcr.c`.
//!
//! A table maps each destination address to a *set* of servers. A connection goes to the
//! set's weighted least-connection member (`ip_vs_dest_set_min`: skipping OVERLOAD and
//! weight-0 members, ties to the first in set order, newest member first). If the set has
//! no such member, or that member is overloaded by the lblc rule (`activeconns > weight`
//! while some server has `activeconns * 2 < weight`), a server is picked over the whole
//! list by wlc and added to the set.
//!
//! A set with more than one member that has not changed for 24 h (`sysctl
//! lblcr_expiration`) drops its most loaded member (`ip_vs_dest_set_max`: highest
//! overhead/weight among weight > 0 members, ties to the first) when next used.
//! Whole entries expire as in lblc (see `lblc::Collector`).

use super::lblc::{
    index_of, is_overloaded, new_table, Aged, Collector, DestRef, Table, DEFAULT_EXPIRATION_MS,
    MAX_SIZE,
};
use super::wlc::weighted_least;
use super::StatefulScheduler;
use crate::dest::DestRt;
use crate::packet::FlowKey;
use std::sync::Arc;

#[derive(Debug, Clone)]
struct Entry {
    /// The server set in IPVS order: members are added at the head.
    set: Vec<DestRef>,
    /// Last time the set gained or lost a member.
    lastmod: u64,
    /// Last time a connection to this destination was scheduled.
    lastuse: u64,
}

impl Aged for Entry {
    fn lastuse(&self) -> u64 {
        self.lastuse
    }
}

impl Entry {
    /// `ip_vs_dest_set_min`: the first available member (weight > 0, not OVERLOAD, still in
    /// the list) with the least overhead/weight.
    fn min(&mut self, dests: &[Arc<DestRt>]) -> Option<usize> {
        let mut least: Option<(usize, u128, u128)> = None;
        for m in self.set.iter_mut() {
            let Some(i) = m.resolve(dests) else { continue };
            let d = &dests[i];
            if !d.available() {
                continue;
            }
            let (c, w) = (d.overhead() as u128, d.weight() as u128);
            match least {
                Some((_, lc, lw)) if lc * w <= c * lw => {}
                _ => least = Some((i, c, w)),
            }
        }
        least.map(|(i, _, _)| i)
    }

    /// `ip_vs_dest_set_max`: position in the set of the member with weight > 0 and the
    /// highest overhead/weight (OVERLOAD does not matter here).
    fn max(&self) -> Option<usize> {
        let mut most: Option<(usize, u128, u128)> = None;
        for (k, m) in self.set.iter().enumerate() {
            let (c, w) = (m.dest.overhead() as u128, m.dest.weight() as u128);
            if w == 0 {
                continue;
            }
            match most {
                Some((_, mc, mw)) if mc * w >= c * mw => {}
                _ => most = Some((k, c, w)),
            }
        }
        most.map(|(k, _, _)| k)
    }

    /// `ip_vs_dest_set_insert` with the duplicate check. Allocates when the set grows, as
    /// IPVS kmallocs the member.
    fn insert(&mut self, dests: &[Arc<DestRt>], i: usize, now_ms: u64) {
        if self.set.iter().any(|m| Arc::ptr_eq(&m.dest, &dests[i])) {
            return;
        }
        self.set.insert(0, DestRef::new(dests, i));
        self.lastmod = now_ms;
    }
}

#[derive(Debug, Clone)]
pub struct LocalityLeastConnReplicated {
    table: Table<Entry>,
    gc: Collector,
}

impl Default for LocalityLeastConnReplicated {
    fn default() -> Self {
        LocalityLeastConnReplicated {
            table: new_table(),
            gc: Collector::default(),
        }
    }
}

impl LocalityLeastConnReplicated {
    /// Number of cached destinations.
    pub fn entries(&self) -> usize {
        self.table.len()
    }
}

impl StatefulScheduler for LocalityLeastConnReplicated {
    fn name(&self) -> &'static str {
        "lblcr"
    }

    fn update(&mut self, dests: &[Arc<DestRt>]) {
        // Members that left the list can never be chosen again (a re-added server is a new
        // DestRt): drop them from their sets, keeping lastmod. IPVS keeps them (unusable)
        // until the set sheds them or the entry expires.
        let idx = index_of(dests);
        for en in self.table.values_mut() {
            en.set
                .retain_mut(|m| match idx.get(&(Arc::as_ptr(&m.dest) as usize)) {
                    Some(&i) => {
                        m.idx = i;
                        true
                    }
                    None => false,
                });
        }
    }

    fn schedule(&mut self, dests: &[Arc<DestRt>], flow: &FlowKey, now_ms: u64) -> Option<usize> {
        let daddr = flow.daddr;
        let Some(en) = self.table.get_mut(&daddr) else {
            let i = weighted_least(dests, DestRt::overhead)?;
            // ip_vs_lblcr_new: no caching while the table is over-full.
            if self.table.len() <= MAX_SIZE {
                let entry = Entry {
                    set: vec![DestRef::new(dests, i)],
                    lastmod: now_ms,
                    lastuse: now_ms,
                };
                self.table.insert(daddr, entry);
            }
            return Some(i);
        };
        en.lastuse = now_ms;
        let min = en.min(dests);
        // A replicated set that has been stable for the expiration time sheds its most
        // loaded member. IPVS picked `min` before this and still returns it if it was the
        // one shed.
        if en.set.len() > 1 && now_ms > en.lastmod.saturating_add(DEFAULT_EXPIRATION_MS) {
            if let Some(k) = en.max() {
                en.set.remove(k);
                en.lastmod = now_ms;
            }
        }
        if let Some(i) = min {
            if !is_overloaded(&dests[i], dests) {
                return Some(i);
            }
        }
        let i = weighted_least(dests, DestRt::overhead)?;
        en.insert(dests, i, now_ms);
        Some(i)
    }

    fn expire(&mut self, now_ms: u64) {
        self.gc.expire(&mut self.table, now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    const MIN: u64 = 60 * 1000;

    fn to(s: &mut LocalityLeastConnReplicated, d: &[Arc<DestRt>], daddr: u32, now: u64) -> usize {
        s.schedule(d, &flow(0x0101_0101, 4000, daddr), now)
            .unwrap_or(usize::MAX)
    }

    /// The set of `daddr` as list indices, in set order.
    fn set_of(s: &LocalityLeastConnReplicated, daddr: u32) -> Vec<usize> {
        s.table
            .get(&daddr)
            .map(|en| en.set.iter().map(|m| m.idx).collect())
            .unwrap_or_default()
    }

    #[test]
    fn sticks_per_destination() {
        let d = dests(&[1, 1, 1]);
        let mut s = LocalityLeastConnReplicated::default();
        s.update(&d);
        assert_eq!(to(&mut s, &d, 100, 0), 0);
        load(&d[0], 1, 50); // busiest, but not overloaded by the lblc rule
        assert_eq!(to(&mut s, &d, 100, 1), 0);
        assert_eq!(to(&mut s, &d, 200, 2), 1);
        assert_eq!(set_of(&s, 100), vec![0]);
        assert_eq!(set_of(&s, 200), vec![1]);
    }

    #[test]
    fn overload_replicates_then_wlc_within_the_set() {
        let d = dests(&[1, 1, 1]);
        let mut s = LocalityLeastConnReplicated::default();
        s.update(&d);
        assert_eq!(to(&mut s, &d, 100, 0), 0);
        // Server 0 over its weight while others are idle: a global wlc pick joins the set.
        load(&d[0], 2, 0);
        load(&d[2], 0, 10);
        assert_eq!(to(&mut s, &d, 100, 1), 1);
        assert_eq!(set_of(&s, 100), vec![1, 0]);
        // Now the set is used by wlc: server 1 busier than 0 -> 0.
        load(&d[0], 0, 0);
        load(&d[1], 1, 0);
        assert_eq!(to(&mut s, &d, 100, 2), 0);
        // Tie within the set: the newest member (set head) wins.
        load(&d[1], 0, 0);
        assert_eq!(to(&mut s, &d, 100, 3), 1);
        // Server 2 is never used for 100 while the set serves it well.
        assert_eq!(set_of(&s, 100), vec![1, 0]);
    }

    #[test]
    fn unavailable_members_are_skipped() {
        let d = dests(&[1, 1, 1]);
        let mut s = LocalityLeastConnReplicated::default();
        s.update(&d);
        assert_eq!(to(&mut s, &d, 100, 0), 0);
        // lblcr does honour OVERLOAD and weight 0 within the set.
        overload(&d[0], true);
        assert_eq!(to(&mut s, &d, 100, 1), 1);
        assert_eq!(set_of(&s, 100), vec![1, 0]);
        d[1].weight.store(0, Relaxed);
        assert_eq!(to(&mut s, &d, 100, 2), 2);
        assert_eq!(set_of(&s, 100), vec![2, 1, 0]);
        d[2].weight.store(0, Relaxed);
        assert_eq!(to(&mut s, &d, 100, 3), usize::MAX);
        // A member that leaves the list leaves the set.
        let d2 = vec![d[2].clone(), d[0].clone()];
        s.update(&d2);
        assert_eq!(set_of(&s, 100), vec![0, 1]);
    }

    #[test]
    fn stable_set_sheds_most_loaded_after_a_day() {
        let d = dests(&[1, 2, 1]);
        let mut s = LocalityLeastConnReplicated::default();
        s.update(&d);
        assert_eq!(to(&mut s, &d, 100, 0), 0);
        load(&d[0], 2, 0);
        assert_eq!(to(&mut s, &d, 100, 10), 1);
        load(&d[2], 0, 0);
        assert_eq!(set_of(&s, 100), vec![1, 0]);
        // Loads: 0 -> 512/1, 1 -> 768/2 = 384. Not changed for exactly 24 h: kept.
        load(&d[0], 2, 0);
        load(&d[1], 3, 0);
        load(&d[2], 1, 0);
        assert_eq!(to(&mut s, &d, 100, 10 + DEFAULT_EXPIRATION_MS), 1);
        assert_eq!(set_of(&s, 100), vec![1, 0]);
        // One ms later: server 0 (highest overhead/weight) is shed; the pick is 1.
        assert_eq!(to(&mut s, &d, 100, 11 + DEFAULT_EXPIRATION_MS), 1);
        assert_eq!(set_of(&s, 100), vec![1]);
        // A single member is never shed.
        assert_eq!(to(&mut s, &d, 100, 3 * DEFAULT_EXPIRATION_MS), 1);
        assert_eq!(set_of(&s, 100), vec![1]);
    }

    #[test]
    fn shed_member_can_still_be_the_pick() {
        // IPVS chooses the set minimum before shedding; with one weight-0 member the
        // minimum is also the only sheddable member.
        let d = dests(&[1, 1]);
        let mut s = LocalityLeastConnReplicated::default();
        s.update(&d);
        to(&mut s, &d, 100, 0);
        load(&d[0], 2, 0);
        assert_eq!(to(&mut s, &d, 100, 0), 1);
        load(&d[0], 0, 0);
        d[0].weight.store(0, Relaxed);
        let t = DEFAULT_EXPIRATION_MS + 1;
        assert_eq!(to(&mut s, &d, 100, t), 1);
        assert_eq!(set_of(&s, 100), vec![0]);
        // Now {0} only, and 0 is quiesced: a global pick rejoins 1.
        assert_eq!(to(&mut s, &d, 100, t + 1), 1);
        assert_eq!(set_of(&s, 100), vec![1, 0]);
    }

    #[test]
    fn entries_expire() {
        let d = dests(&[1, 1]);
        let mut s = LocalityLeastConnReplicated::default();
        s.update(&d);
        s.expire(0);
        to(&mut s, &d, 100, 0);
        to(&mut s, &d, 200, 0);
        let mut now = 0;
        while now < DEFAULT_EXPIRATION_MS {
            now += MIN;
            if now == 12 * 60 * MIN {
                to(&mut s, &d, 200, now);
            }
            s.expire(now);
        }
        assert_eq!(s.entries(), 1);
        assert_eq!(set_of(&s, 200), vec![0]);
        assert_eq!(to(&mut s, &[], 300, now), usize::MAX);
    }
}
