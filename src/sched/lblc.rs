//! Locality-based least-connection (`lblc`), as `ip_vs_lblc.c`.
//!
//! A table maps each destination address to the server that last served it. A cached
//! server is kept unless it has weight 0, has left the list, or is overloaded by the lblc
//! rule: `activeconns > weight` while some server has `activeconns * 2 < weight`. Otherwise
//! (and for a new destination) the server is chosen by wlc and cached.
//!
//! IPVS checks only weight and the lblc rule on the cached server, not the OVERLOAD flag
//! (thresholds): a destination stays on its server even above `-x`. New picks do skip
//! OVERLOAD servers. Both are reproduced.
//!
//! Entries are collected by a timer every 60 s (`expire`): when the table holds more than
//! 16 x 1024 entries, entries unused for 6 minutes are removed bucket by bucket until
//! 4/3 of the excess is gone; every 30th tick without such a collection, a full sweep
//! removes entries unused for 24 h (`sysctl lblc_expiration`). While the table is over
//! that size, new destinations are not cached (the pick is still used).

use super::wlc::weighted_least;
use super::{hash_32, StatefulScheduler};
use crate::dest::DestRt;
use crate::packet::FlowKey;
use std::sync::Arc;

/// Timer period of the table collector (CHECK_EXPIRE_INTERVAL, 60 s).
pub(super) const CHECK_EXPIRE_INTERVAL_MS: u64 = 60 * 1000;
/// Idle time after which an entry may go when the table is over-full (ENTRY_TIMEOUT, 6 min).
pub(super) const ENTRY_TIMEOUT_MS: u64 = 6 * 60 * 1000;
/// Idle time after which the full sweep removes an entry; for lblcr also how long a set
/// must stay unchanged before it sheds a member (DEFAULT_EXPIRATION, 24 h).
pub(super) const DEFAULT_EXPIRATION_MS: u64 = 24 * 60 * 60 * 1000;
/// Ticks between full sweeps when no over-full collection runs (COUNT_FOR_FULL_EXPIRATION).
const COUNT_FOR_FULL_EXPIRATION: u32 = 30;
/// IPVS's hash table has 2^10 buckets (CONFIG_IP_VS_LBLC_TAB_BITS); the collector walks
/// them in order, so we keep the bucket function to walk entries in the same order.
const TAB_BITS: u32 = 10;
const TAB_SIZE: usize = 1 << TAB_BITS;
const TAB_MASK: u32 = TAB_SIZE as u32 - 1;
/// Table size above which entries are collected and new ones refused (max_size).
pub(super) const MAX_SIZE: usize = TAB_SIZE * 16;

/// The table: destination address (host order) -> entry. Growing it for a new destination
/// allocates on the scheduling path; IPVS kmallocs each entry there too (GFP_ATOMIC), and
/// the size is bounded by MAX_SIZE + 1.
pub(super) type Table<E> = hashbrown::HashMap<u32, E, ahash::RandomState>;

pub(super) fn new_table<E>() -> Table<E> {
    hashbrown::HashMap::with_hasher(ahash::RandomState::new())
}

/// lblc/lblcr `is_overloaded`: the server has more active connections than its weight
/// while some server in the list is under half its weight.
pub(super) fn is_overloaded(d: &DestRt, dests: &[Arc<DestRt>]) -> bool {
    let active = |d: &DestRt| d.active() as u64;
    active(d) > d.weight() as u64 && dests.iter().any(|m| active(m) * 2 < m.weight() as u64)
}

/// A reference to a server that survives list edits: the server itself plus its index in
/// the list of the last `update` (re-resolved there).
#[derive(Debug, Clone)]
pub(super) struct DestRef {
    pub dest: Arc<DestRt>,
    pub idx: usize,
}

impl DestRef {
    pub fn new(dests: &[Arc<DestRt>], idx: usize) -> Self {
        DestRef {
            dest: dests[idx].clone(),
            idx,
        }
    }

    /// The server's index in `dests`, `None` if it is no longer in the list (IPVS: the
    /// dest is in the trash, !IP_VS_DEST_CF_AVAILABLE). O(1) unless `update` was missed.
    pub fn resolve(&mut self, dests: &[Arc<DestRt>]) -> Option<usize> {
        if dests
            .get(self.idx)
            .is_some_and(|d| Arc::ptr_eq(d, &self.dest))
        {
            return Some(self.idx);
        }
        self.idx = dests.iter().position(|d| Arc::ptr_eq(d, &self.dest))?;
        Some(self.idx)
    }
}

/// Server identity -> index in a new list, for re-resolving entries in `update`.
pub(super) fn index_of(dests: &[Arc<DestRt>]) -> hashbrown::HashMap<usize, usize> {
    dests
        .iter()
        .enumerate()
        .map(|(i, d)| (Arc::as_ptr(d) as usize, i))
        .collect()
}

/// What the collector needs to know about an entry.
pub(super) trait Aged {
    /// Last time (ms) a connection to this destination was scheduled.
    fn lastuse(&self) -> u64;
}

/// The periodic collector (`ip_vs_lblc_check_expire` / `ip_vs_lblcr_check_expire`).
#[derive(Debug, Clone)]
pub(super) struct Collector {
    /// Next timer expiry; `None` until the first `expire` call arms it (IPVS arms it at
    /// service creation; we have no clock before then).
    next_ms: Option<u64>,
    /// Bucket the last over-full collection stopped at.
    rover: u32,
    /// Ticks since the last full sweep (starts at 1, as in IPVS).
    counter: u32,
}

impl Default for Collector {
    fn default() -> Self {
        Collector {
            next_ms: None,
            rover: 0,
            counter: 1,
        }
    }
}

impl Collector {
    /// Runs the 60-second timer handler if it is due at `now_ms`.
    pub fn expire<E: Aged>(&mut self, table: &mut Table<E>, now_ms: u64) {
        match self.next_ms {
            None => {
                self.next_ms = Some(now_ms + CHECK_EXPIRE_INTERVAL_MS);
                return;
            }
            Some(t) if now_ms < t => return,
            Some(_) => self.next_ms = Some(now_ms + CHECK_EXPIRE_INTERVAL_MS),
        }
        if self.counter.is_multiple_of(COUNT_FOR_FULL_EXPIRATION) {
            // Full sweep; it walks every bucket, so the rover ends where it began.
            table.retain(|_, e| now_ms < e.lastuse().saturating_add(DEFAULT_EXPIRATION_MS));
            self.counter = 1;
            return;
        }
        if table.len() <= MAX_SIZE {
            self.counter += 1;
            return;
        }
        let mut goal = ((table.len() - MAX_SIZE) * 4 / 3).min(MAX_SIZE / 2) as i64;
        // Stale entries in the order IPVS visits them: buckets rover+1, rover+2, ...
        let dist = |k: u32| hash_32(k, TAB_BITS).wrapping_sub(self.rover + 1) & TAB_MASK;
        let mut stale: Vec<(u32, u32)> = table
            .iter()
            .filter(|(_, e)| now_ms >= e.lastuse().saturating_add(ENTRY_TIMEOUT_MS))
            .map(|(&k, _)| (dist(k), k))
            .collect();
        stale.sort_unstable();
        // IPVS stops after the bucket that meets the goal; a whole-table walk leaves the
        // rover where it was.
        for group in stale.chunk_by(|a, b| a.0 == b.0) {
            for (_, k) in group {
                table.remove(k);
            }
            goal -= group.len() as i64;
            if goal <= 0 {
                self.rover = (self.rover + 1 + group[0].0) & TAB_MASK;
                break;
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    dest: DestRef,
    lastuse: u64,
}

impl Aged for Entry {
    fn lastuse(&self) -> u64 {
        self.lastuse
    }
}

#[derive(Debug, Clone)]
pub struct LocalityLeastConn {
    table: Table<Entry>,
    gc: Collector,
}

impl Default for LocalityLeastConn {
    fn default() -> Self {
        LocalityLeastConn {
            table: new_table(),
            gc: Collector::default(),
        }
    }
}

impl LocalityLeastConn {
    /// Number of cached destinations.
    pub fn entries(&self) -> usize {
        self.table.len()
    }
}

impl StatefulScheduler for LocalityLeastConn {
    fn name(&self) -> &'static str {
        "lblc"
    }

    fn update(&mut self, dests: &[Arc<DestRt>]) {
        // Entries for servers that left can never be used again (a re-added server is a
        // new DestRt), so drop them now rather than hold the server until expiry. IPVS keeps
        // them until rescheduled or expired; the next pick is the same either way.
        let idx = index_of(dests);
        self.table.retain(
            |_, e| match idx.get(&(Arc::as_ptr(&e.dest.dest) as usize)) {
                Some(&i) => {
                    e.dest.idx = i;
                    true
                }
                None => false,
            },
        );
    }

    fn schedule(&mut self, dests: &[Arc<DestRt>], flow: &FlowKey, now_ms: u64) -> Option<usize> {
        let daddr = flow.daddr;
        if let Some(en) = self.table.get_mut(&daddr) {
            en.lastuse = now_ms;
            if let Some(i) = en.dest.resolve(dests) {
                let d = &dests[i];
                if d.weight() > 0 && !is_overloaded(d, dests) {
                    return Some(i);
                }
            }
        }
        let i = weighted_least(dests, DestRt::overhead)?;
        // ip_vs_lblc_new: keep an entry already on this server, else replace it, unless
        // the table is over-full (then the pick is used uncached).
        let same = self
            .table
            .get(&daddr)
            .is_some_and(|en| Arc::ptr_eq(&en.dest.dest, &dests[i]));
        if !same {
            self.table.remove(&daddr);
            if self.table.len() <= MAX_SIZE {
                let entry = Entry {
                    dest: DestRef::new(dests, i),
                    lastuse: now_ms,
                };
                self.table.insert(daddr, entry);
            }
        }
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

    const MIN: u64 = 60 * 1000;

    fn to(s: &mut LocalityLeastConn, d: &[Arc<DestRt>], daddr: u32, now: u64) -> usize {
        s.schedule(d, &flow(0x0101_0101, 4000, daddr), now)
            .unwrap_or(usize::MAX)
    }

    #[test]
    fn sticks_per_destination() {
        let d = dests(&[1, 1, 1]);
        let mut s = LocalityLeastConn::default();
        s.update(&d);
        assert_eq!(to(&mut s, &d, 100, 0), 0);
        // Server 0 is now the most loaded, but not overloaded by the lblc rule
        // (active 1 is not > weight 1): destination 100 stays, a new one goes by wlc.
        load(&d[0], 1, 50);
        assert_eq!(to(&mut s, &d, 100, 1), 0);
        assert_eq!(to(&mut s, &d, 200, 2), 1);
        assert_eq!(to(&mut s, &d, 100, 3), 0);
        assert_eq!(s.entries(), 2);
    }

    #[test]
    fn lblc_overload_rule_moves_the_destination() {
        let d = dests(&[4, 4, 4]);
        let mut s = LocalityLeastConn::default();
        s.update(&d);
        assert_eq!(to(&mut s, &d, 100, 0), 0);
        // active 5 > weight 4, but no server is under half its weight (2 * 2 < 4 is false):
        // not overloaded, stays.
        load(&d[0], 5, 0);
        load(&d[1], 2, 0);
        load(&d[2], 3, 0);
        assert_eq!(to(&mut s, &d, 100, 1), 0);
        // Server 2 drops to 1 active (1 * 2 < 4): server 0 is overloaded, wlc picks 2.
        load(&d[2], 1, 0);
        assert_eq!(to(&mut s, &d, 100, 2), 2);
        // ... and the entry now points at 2.
        load(&d[0], 0, 0);
        assert_eq!(to(&mut s, &d, 100, 3), 2);
    }

    #[test]
    fn quiesced_or_removed_server_is_abandoned() {
        let d = dests(&[1, 1]);
        let mut s = LocalityLeastConn::default();
        s.update(&d);
        assert_eq!(to(&mut s, &d, 100, 0), 0);
        d[0].weight.store(0, std::sync::atomic::Ordering::Relaxed);
        s.update(&d);
        assert_eq!(to(&mut s, &d, 100, 1), 1);
        d[0].weight.store(1, std::sync::atomic::Ordering::Relaxed);
        s.update(&d);
        assert_eq!(to(&mut s, &d, 100, 2), 1); // cached on 1 now
                                               // Server 1 leaves the list: its entry goes, the destination is rescheduled.
        let d2 = vec![d[0].clone()];
        s.update(&d2);
        assert_eq!(s.entries(), 0);
        assert_eq!(to(&mut s, &d2, 100, 3), 0);
        // A list edit that keeps the server re-resolves its index.
        let d3 = vec![dests(&[1])[0].clone(), d[0].clone()];
        load(&d3[0], 0, 0);
        load(&d3[1], 1, 5); // busier than the new server, but not over its weight
        s.update(&d3);
        assert_eq!(to(&mut s, &d3, 100, 4), 1);
    }

    #[test]
    fn overload_flag_does_not_break_the_cache_but_blocks_new_picks() {
        // As IPVS: the cached server is checked for weight and the lblc rule only.
        let d = dests(&[1, 1]);
        let mut s = LocalityLeastConn::default();
        s.update(&d);
        assert_eq!(to(&mut s, &d, 100, 0), 0);
        overload(&d[0], true);
        assert_eq!(to(&mut s, &d, 100, 1), 0);
        assert_eq!(to(&mut s, &d, 200, 2), 1);
        overload(&d[1], true);
        assert_eq!(to(&mut s, &d, 300, 3), usize::MAX);
        assert_eq!(to(&mut s, &[], 300, 3), usize::MAX);
    }

    #[test]
    fn full_sweep_removes_entries_idle_for_a_day() {
        let d = dests(&[1, 1]);
        let mut s = LocalityLeastConn::default();
        s.update(&d);
        s.expire(0); // arms the 60 s timer
        to(&mut s, &d, 100, 0);
        to(&mut s, &d, 200, 0);
        // Full sweeps run every 30 ticks (30 min). Keep 200 in use.
        let mut now = 0;
        while now < DEFAULT_EXPIRATION_MS - 30 * MIN {
            now += MIN;
            s.expire(now);
            if now % (60 * MIN) == 0 {
                to(&mut s, &d, 200, now);
            }
        }
        assert_eq!(s.entries(), 2);
        // Calls between ticks do nothing.
        s.expire(now + 1000);
        assert_eq!(s.entries(), 2);
        // The sweep at 24 h removes 100 (idle exactly 24 h), not 200.
        for _ in 0..30 {
            now += MIN;
            s.expire(now);
        }
        assert_eq!(now, DEFAULT_EXPIRATION_MS);
        assert_eq!(s.entries(), 1);
        assert!(s.table.contains_key(&200));
    }

    #[test]
    fn over_full_table_collects_one_bucket_of_stale_entries() {
        let d = dests(&[1, 1]);
        let mut s = LocalityLeastConn::default();
        s.update(&d);
        s.expire(0);
        // IPVS caches while entries <= max_size, so the table stops at max_size + 1.
        for a in 0..(MAX_SIZE as u32 + 10) {
            to(&mut s, &d, a, 0);
        }
        assert_eq!(s.entries(), MAX_SIZE + 1);
        // At 1 min nothing is 6 minutes idle: nothing goes, and (over-full) the tick does
        // not count towards the full sweep.
        s.expire(MIN);
        assert_eq!(s.entries(), MAX_SIZE + 1);
        // One entry was used recently.
        let fresh = (0..MAX_SIZE as u32)
            .find(|&k| hash_32(k, TAB_BITS) == 1)
            .unwrap();
        to(&mut s, &d, fresh, 6 * MIN);
        let before: Vec<u32> = s.table.keys().copied().collect();
        s.expire(7 * MIN);
        // Goal (1 * 4 / 3 = 1) is met by the first bucket after the rover (0): bucket 1,
        // all of whose stale entries go; the fresh one stays.
        let gone: Vec<u32> = before
            .into_iter()
            .filter(|k| !s.table.contains_key(k))
            .collect();
        assert!(!gone.is_empty());
        assert!(gone.iter().all(|&k| hash_32(k, TAB_BITS) == 1));
        assert!(s.table.contains_key(&fresh));
        assert_eq!(s.gc.rover, 1);
        assert_eq!(
            s.table
                .keys()
                .filter(|&&k| hash_32(k, TAB_BITS) == 1)
                .count(),
            1
        );
    }
}
