//! A connection table: a worker's DR/TUN connections, or one shard of the NAT table.
//!
//! Each worker owns its table (no locks on the data path): with DR and TUN a flow always
//! arrives on the same RX queue (the NIC's RSS hash, or veth's per-flow queue), so the worker
//! that created an entry is the one that sees its later packets. Load counters live on the
//! shared `DestRt` so that schedulers see global figures.
//!
//! Storage: a slab of fixed capacity plus a hash index of slab positions, both allocated up
//! front, so inserting never allocates. Expiry is a clock sweep: every call to `expire`
//! examines a bounded number of slots, so there is never a stop-the-world pass. A full
//! table makes room by evicting its oldest half-open entry (see `pressure`).

use super::pressure::{is_half_open, PressurePolicy, SlotList};
use super::state::ConnState;
use crate::dest::DestRt;
use crate::packet::FlowKey;
use crate::service::ServiceRt;
use hashbrown::HashTable;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// One tracked connection.
pub struct Conn {
    pub key: FlowKey,
    pub state: ConnState,
    /// Absolute expiry on the worker's millisecond clock.
    pub expires_ms: u64,
    pub svc: Arc<ServiceRt>,
    pub dest: Arc<DestRt>,
    /// The slot of the persistence template that chose `dest` in `svc`'s templates, or
    /// `NO_TEMPLATE`. Released when the connection is dropped, whatever the reason (also
    /// when it never made it into a table), so a template never stays pinned.
    pub tpl: u32,
    /// NAT: the real server's address and port of the reply tuple (RIP:rport -> CIP:cport,
    /// indexed too); `rip` is 0 for DR and TUN entries. Kept as two small fields rather
    /// than an `Option<FlowKey>` so an entry stays 64 bytes (see `reply_key`).
    pub rip: u32,
    pub rport: u16,
    /// NAT: where replies go back: the request's source MAC (the client or its router) and
    /// the port (interface) the request arrived on.
    pub client_mac: [u8; 6],
    pub in_port: u8,
    /// The worker that created the entry (NAT replies may be handled by another one).
    pub worker: u16,
    /// Connection sync (`sync::out::needed`): client packets seen, modulo a multiple of
    /// the sync period (IPVS `in_pkts`), and the state last sent (IPVS `old_state`).
    /// Small so that an entry stays 64 bytes.
    pub sync_pkts: u16,
    pub sync_state: ConnState,
    /// Installed in the XDP fast path's flow map (src/fastpath.rs): its entry is removed
    /// with the connection, and its expiry consults the fast path's last-seen time. Fills
    /// the entry's last spare byte (64 bytes).
    pub fast: bool,
}

impl Conn {
    /// A DR/TUN entry (no reply tuple).
    pub fn new(
        key: FlowKey,
        state: ConnState,
        expires_ms: u64,
        svc: Arc<ServiceRt>,
        dest: Arc<DestRt>,
        tpl: u32,
    ) -> Self {
        Conn {
            key,
            state,
            expires_ms,
            svc,
            dest,
            tpl,
            rip: 0,
            rport: 0,
            client_mac: [0; 6],
            in_port: 0,
            worker: 0,
            sync_pkts: 0,
            sync_state: ConnState::None,
            fast: false,
        }
    }

    /// The tuple a NAT reply carries, `None` for DR and TUN entries.
    pub fn reply_key(&self) -> Option<FlowKey> {
        (self.rip != 0).then_some(FlowKey {
            saddr: self.rip,
            daddr: self.key.saddr,
            sport: self.rport,
            dport: self.key.sport,
            proto: self.key.proto,
        })
    }

    /// Moves to `new`, keeping the server's active/inactive counters right.
    pub fn set_state(&mut self, new: ConnState) {
        if self.state.is_active() != new.is_active() {
            self.dest.move_conn(new.is_active());
        }
        self.state = new;
    }

    fn count(&self) {
        self.dest.bind_conn(self.state.is_active());
    }

    fn uncount(&self) {
        self.dest.unbind_conn(self.state.is_active());
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.svc.release_template(self.tpl);
    }
}

/// Index entries are slot numbers; this bit marks the entry of a reply tuple.
const REPLY_TAG: u32 = 1 << 31;

fn untag(e: u32) -> (u32, bool) {
    (e & !REPLY_TAG, e & REPLY_TAG != 0)
}

/// The table is full; the new connection is refused (existing ones are never evicted early).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableFull;

pub struct ConnTable {
    slots: Vec<Option<Conn>>,
    /// Half-open entries, oldest first: what a full table evicts.
    half_open: SlotList,
    policy: PressurePolicy,
    /// Entries evicted to make room, since creation.
    evicted: u64,
    free: Vec<u32>,
    index: HashTable<u32>,
    hasher: ahash::RandomState,
    capacity: usize,
    len: usize,
    cursor: usize,
}

impl ConnTable {
    /// Allocates everything up front: inserting up to `capacity` entries never allocates.
    pub fn with_capacity(capacity: usize) -> Self {
        Self::with_capacity_and_keys(capacity, 1)
    }

    /// A table whose entries may carry a reply key too (NAT): the index gets room for
    /// `keys_per_entry` keys per entry so that it never grows.
    pub fn with_capacity_and_keys(capacity: usize, keys_per_entry: usize) -> Self {
        // Slot numbers carry the reply tag in their top bit.
        let capacity = capacity.min(REPLY_TAG as usize - 1);
        ConnTable {
            slots: Vec::with_capacity(capacity),
            half_open: SlotList::with_capacity(capacity),
            policy: PressurePolicy::default(),
            evicted: 0,
            free: Vec::with_capacity(capacity),
            // Twice the keys: hashbrown then always rehashes in place when deletions have
            // used up its growth budget (it only allocates when more than half full), so a
            // table kept full under churn never allocates on the packet path.
            index: HashTable::with_capacity(capacity * keys_per_entry * 2),
            hasher: ahash::RandomState::new(),
            capacity,
            len: 0,
            cursor: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn set_policy(&mut self, p: PressurePolicy) {
        self.policy = p;
    }

    /// Entries evicted to make room for new connections, since the table was made.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Entries that have not completed a handshake.
    pub fn half_open(&self) -> usize {
        self.half_open.len()
    }

    /// Tells the table that the entry in `slot` may have changed state (from `was`), so that
    /// it joins or leaves the half-open list.
    pub fn note_state(&mut self, slot: u32, was: ConnState) {
        let Some(now) = self.get(slot).map(|c| c.state) else {
            return;
        };
        match (is_half_open(was), is_half_open(now)) {
            (true, false) => self.half_open.unlink(slot),
            (false, true) => self.half_open.push_back(slot),
            _ => {}
        }
    }

    fn hash(&self, k: &FlowKey) -> u64 {
        self.hasher.hash_one(k)
    }

    /// The slot of the connection with this key (either direction).
    pub fn lookup(&self, key: &FlowKey) -> Option<u32> {
        self.find(key).map(|(s, _)| s)
    }

    /// The slot of the connection with this key, and whether `key` is its reply tuple.
    pub fn find(&self, key: &FlowKey) -> Option<(u32, bool)> {
        let h = self.hash(key);
        let slots = &self.slots;
        self.index
            .find(h, |&e| {
                let (slot, reply) = untag(e);
                slots[slot as usize].as_ref().is_some_and(|c| {
                    if reply {
                        c.reply_key().as_ref() == Some(key)
                    } else {
                        c.key == *key
                    }
                })
            })
            .map(|&e| untag(e))
    }

    pub fn get_mut(&mut self, slot: u32) -> Option<&mut Conn> {
        self.slots.get_mut(slot as usize)?.as_mut()
    }

    pub fn get(&self, slot: u32) -> Option<&Conn> {
        self.slots.get(slot as usize)?.as_ref()
    }

    /// Makes sure one more entry fits, evicting the oldest half-open entry of a full table
    /// (policy permitting). Called before scheduling a new connection, so that the evicted
    /// entry's template is free again when the new connection looks for one. `false`: the
    /// table is full of entries that may not be evicted.
    pub fn make_room(&mut self) -> bool {
        if self.len < self.capacity {
            return true;
        }
        match (self.policy, self.half_open.front()) {
            (PressurePolicy::EvictHalfOpen, Some(victim)) => {
                self.remove(victim);
                self.evicted += 1;
                true
            }
            _ => false,
        }
    }

    /// Inserts a new connection (the key must not be present) and counts it on its server.
    /// A full table evicts its oldest half-open entry first (unless the policy is
    /// `Refuse`); without one the connection is refused (and dropped, which releases its
    /// template).
    pub fn insert(&mut self, conn: Conn) -> Result<u32, TableFull> {
        if !self.make_room() {
            return Err(TableFull);
        }
        let half_open = is_half_open(conn.state);
        let h = self.hash(&conn.key);
        conn.count();
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = Some(conn);
                s
            }
            None => {
                // Within the preallocated capacity: no reallocation.
                self.slots.push(Some(conn));
                (self.slots.len() - 1) as u32
            }
        };
        let reply = self.slots[slot as usize]
            .as_ref()
            .and_then(|c| c.reply_key());
        let slots = &self.slots;
        let hasher = &self.hasher;
        let rehash = |&e: &u32| {
            // Only called on growth, which capacity rules out; still correct if it happens.
            let (i, r) = untag(e);
            slots[i as usize].as_ref().map_or(0, |c| {
                if r {
                    c.reply_key().map_or(0, |k| hasher.hash_one(k))
                } else {
                    hasher.hash_one(c.key)
                }
            })
        };
        self.index.insert_unique(h, slot, rehash);
        if let Some(rk) = reply {
            let hr = self.hasher.hash_one(rk);
            self.index.insert_unique(hr, slot | REPLY_TAG, rehash);
        }
        if half_open {
            self.half_open.push_back(slot);
        }
        self.len += 1;
        Ok(slot)
    }

    /// Removes the connection in `slot`, uncounting it.
    pub fn remove(&mut self, slot: u32) {
        let Some(conn) = self.slots.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        conn.uncount();
        if conn.fast {
            // Whatever ends the connection (expiry, FIN/RST, its server's removal, an
            // eviction, a move to another queue) ends its fast-path entry: from now on
            // its frames go to the workers, which decide afresh.
            if let Some(f) = crate::fastpath::get() {
                f.remove(&conn.key, conn.reply_key().as_ref());
            }
        }
        self.half_open.unlink(slot);
        let h = self.hash(&conn.key);
        if let Ok(e) = self.index.find_entry(h, |&i| i == slot) {
            e.remove();
        }
        if let Some(rk) = conn.reply_key() {
            let hr = self.hash(&rk);
            if let Ok(e) = self.index.find_entry(hr, |&i| i == slot | REPLY_TAG) {
                e.remove();
            }
        }
        self.free.push(slot);
        self.len -= 1;
    }

    /// Examines up to `budget` slots from the sweep cursor and removes expired entries
    /// (and entries of deleted services). Returns how many were removed.
    pub fn expire(&mut self, now_ms: u64, budget: usize) -> usize {
        self.expire_with(now_ms, budget, |_| false)
    }

    /// `expire`, but an entry installed in the fast path (`Conn::fast`) whose time is up is
    /// first shown to `refresh`, which re-arms it (returns true, having moved
    /// `expires_ms` on) when the fast path forwarded its packets meanwhile.
    pub fn expire_with(
        &mut self,
        now_ms: u64,
        budget: usize,
        mut refresh: impl FnMut(&mut Conn) -> bool,
    ) -> usize {
        let n = self.slots.len();
        if n == 0 {
            return 0;
        }
        let mut removed = 0;
        for _ in 0..budget.min(n) {
            if self.cursor >= n {
                self.cursor = 0;
            }
            let slot = self.cursor as u32;
            self.cursor += 1;
            let dead = match &mut self.slots[slot as usize] {
                Some(c) if c.svc.deleted.load(Relaxed) => true,
                Some(c) if c.expires_ms <= now_ms => !(c.fast && refresh(c)),
                _ => false,
            };
            if dead {
                self.remove(slot);
                removed += 1;
            }
        }
        removed
    }

    /// Visits every live connection (for listings; not on the packet path).
    pub fn for_each(&self, mut f: impl FnMut(&Conn)) {
        for c in self.slots.iter().flatten() {
            f(c);
        }
    }

    /// Visits the live connections in at most `max_slots` slots from slot `from` on, and
    /// returns the slot to resume from (`None` once the end is reached). Bounded work for
    /// listings taken in chunks between packet batches; a slot's entry never moves, so
    /// resuming visits every entry that lived throughout exactly once.
    pub fn for_each_from(
        &self,
        from: usize,
        max_slots: usize,
        mut f: impl FnMut(&Conn),
    ) -> Option<usize> {
        let end = from.saturating_add(max_slots).min(self.slots.len());
        for c in self.slots.get(from..end).unwrap_or(&[]).iter().flatten() {
            f(c);
        }
        (end < self.slots.len()).then_some(end)
    }

    /// Removes everything (daemon shutdown), uncounting each entry.
    pub fn clear(&mut self) {
        for i in 0..self.slots.len() {
            self.remove(i as u32);
        }
    }
}

impl Drop for ConnTable {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Forward, Protocol, ServiceKey};
    use crate::sched;
    use crate::service::NO_TEMPLATE;
    use ConnState::*;

    fn svc() -> Arc<ServiceRt> {
        Arc::new(ServiceRt::new(
            ServiceKey {
                proto: Protocol::Tcp,
                addr: "10.0.0.88".parse().unwrap(),
                port: 80,
            },
            sched::by_name("rr").unwrap(),
        ))
    }

    fn dest() -> Arc<DestRt> {
        Arc::new(DestRt::new(
            "10.0.0.9".parse().unwrap(),
            80,
            Forward::Route,
            1,
        ))
    }

    fn key(sport: u16) -> FlowKey {
        FlowKey {
            saddr: 1,
            daddr: 2,
            sport,
            dport: 80,
            proto: 6,
        }
    }

    #[test]
    fn insert_lookup_counts_and_expire() {
        let (s, d) = (svc(), dest());
        let mut t = ConnTable::with_capacity(4);
        let a = t.insert(entry(&s, &d, 1, SynRecv, 100)).unwrap();
        assert_eq!(d.inactive(), 1);
        t.get_mut(a).unwrap().set_state(Established);
        t.get_mut(a).unwrap().expires_ms = 1000;
        assert_eq!((d.active(), d.inactive()), (1, 0));
        assert_eq!(t.lookup(&key(1)), Some(a));
        assert_eq!(t.lookup(&key(2)), Option::None);
        assert_eq!(t.expire(999, 10), 0);
        assert_eq!(t.expire(1000, 10), 1);
        assert_eq!(t.lookup(&key(1)), Option::None);
        assert_eq!(d.active(), 0);
        assert!(t.is_empty());
    }

    #[test]
    fn full_table_refuses_without_eviction() {
        let (s, d) = (svc(), dest());
        let mut t = ConnTable::with_capacity(2);
        for p in 0..2 {
            t.insert(entry(&s, &d, p, Udp, 10)).unwrap();
        }
        let r = t.insert(entry(&s, &d, 9, Udp, 10));
        assert!(r.is_err());
        assert!(t.lookup(&key(0)).is_some() && t.lookup(&key(1)).is_some());
        assert_eq!(d.inactive(), 2);
        // Freed slots are reused.
        t.remove(t.lookup(&key(0)).unwrap());
        assert!(t.insert(entry(&s, &d, 9, Udp, 10)).is_ok());
        drop(t);
        assert_eq!(d.inactive(), 0);
    }

    /// A DR entry from client port `sport`, expiring at `expires_ms`.
    fn entry(
        s: &Arc<ServiceRt>,
        d: &Arc<DestRt>,
        sport: u16,
        state: ConnState,
        expires_ms: u64,
    ) -> Conn {
        Conn::new(
            key(sport),
            state,
            expires_ms,
            s.clone(),
            d.clone(),
            NO_TEMPLATE,
        )
    }

    fn conn(s: &Arc<ServiceRt>, d: &Arc<DestRt>, sport: u16, state: ConnState, tpl: u32) -> Conn {
        Conn::new(key(sport), state, u64::MAX, s.clone(), d.clone(), tpl)
    }

    #[test]
    fn an_entry_is_one_cache_line() {
        // The slab is the bulk of the table's memory (docs/benchmarks.md, bytes per entry).
        assert!(std::mem::size_of::<Option<Conn>>() <= 64);
    }

    #[test]
    fn full_table_evicts_the_oldest_half_open_never_established() {
        let (s, d) = (svc(), dest());
        let mut t = ConnTable::with_capacity(4);
        // 0 and 2 established, 1 and 3 half-open (1 the older).
        for (p, st) in [(0, SynRecv), (1, SynRecv), (2, Established), (3, SynRecv)] {
            t.insert(conn(&s, &d, p, st, NO_TEMPLATE)).unwrap();
        }
        let s0 = t.lookup(&key(0)).unwrap();
        t.get_mut(s0).unwrap().set_state(Established);
        t.note_state(s0, SynRecv);
        assert_eq!(t.half_open(), 2);
        t.insert(conn(&s, &d, 10, SynRecv, NO_TEMPLATE)).unwrap();
        assert!(t.lookup(&key(1)).is_none(), "oldest half-open evicted");
        t.insert(conn(&s, &d, 11, SynRecv, NO_TEMPLATE)).unwrap();
        assert!(t.lookup(&key(3)).is_none());
        assert_eq!(t.evicted(), 2);
        // Now 10 and 11 are the half-open ones; UDP and established are never evicted.
        t.insert(conn(&s, &d, 12, Udp, NO_TEMPLATE)).unwrap();
        t.insert(conn(&s, &d, 13, Udp, NO_TEMPLATE)).unwrap();
        assert!(t.insert(conn(&s, &d, 14, SynRecv, NO_TEMPLATE)).is_err());
        for p in [0, 2, 12, 13] {
            assert!(t.lookup(&key(p)).is_some(), "entry {p} kept");
        }
        assert_eq!((d.active(), d.inactive()), (2, 2));
        // Refuse policy: IPVS's behaviour without drop_entry.
        let mut r = ConnTable::with_capacity(1);
        r.set_policy(PressurePolicy::Refuse);
        r.insert(conn(&s, &d, 1, SynRecv, NO_TEMPLATE)).unwrap();
        assert!(r.insert(conn(&s, &d, 2, SynRecv, NO_TEMPLATE)).is_err());
        assert_eq!(r.evicted(), 0);
    }

    #[test]
    fn refused_connection_releases_its_template() {
        use crate::service::Persistence;
        let (s, d) = (svc(), dest());
        s.set_dests(vec![d.clone()], Option::None);
        s.set_persistence(
            Some(Persistence {
                timeout_ms: 1000,
                netmask: u32::MAX,
            }),
            16,
        );
        let mut t = ConnTable::with_capacity(1);
        t.insert(conn(&s, &d, 1, Established, NO_TEMPLATE)).unwrap();
        let f = FlowKey { saddr: 7, ..key(2) };
        let (_, tpl) = s.schedule(&f, 0).unwrap();
        assert!(t.insert(conn(&s, &d, 2, SynRecv, tpl)).is_err());
        // The refused connection no longer controls its template: it expires on time.
        s.expire(1000);
        assert_eq!(
            s.templates_len(),
            0,
            "template pinned by a refused connection"
        );
    }

    #[test]
    fn expire_with_asks_only_about_installed_entries_whose_time_is_up() {
        let (s, d) = (svc(), dest());
        let mut t = ConnTable::with_capacity(4);
        let a = t.insert(entry(&s, &d, 1, Established, 100)).unwrap();
        let b = t.insert(entry(&s, &d, 2, Established, 100)).unwrap();
        let c = t.insert(entry(&s, &d, 3, Established, 500)).unwrap();
        for slot in [a, c] {
            t.get_mut(slot).unwrap().fast = true;
        }
        let mut asked = Vec::new();
        // a: installed, expired, re-armed by the fast path; b: not installed, expires;
        // c: installed but not due, never asked.
        let removed = t.expire_with(100, 8, |conn| {
            asked.push(conn.key.sport);
            conn.expires_ms = 900;
            true
        });
        assert_eq!(removed, 1);
        assert_eq!(asked, vec![1]);
        assert_eq!(t.get(a).map(|x| x.expires_ms), Some(900));
        assert!(t.get(b).is_none());
        // The fast path saw nothing: installed entries expire like any other.
        assert_eq!(t.expire_with(900, 8, |_| false), 2);
        assert!(t.is_empty());
    }

    #[test]
    fn deleted_service_entries_are_swept() {
        let (s, d) = (svc(), dest());
        let mut t = ConnTable::with_capacity(2);
        t.insert(entry(&s, &d, 1, Established, u64::MAX)).unwrap();
        s.deleted.store(true, Relaxed);
        assert_eq!(t.expire(0, 8), 1);
        assert_eq!(d.active(), 0);
    }

    #[test]
    fn for_each_from_visits_every_entry_once_in_bounded_steps() {
        let (svc, d) = (svc(), dest());
        let mut t = ConnTable::with_capacity(100);
        for p in 0..100u16 {
            let key = FlowKey {
                saddr: 1,
                daddr: 2,
                sport: p,
                dport: 53,
                proto: 17,
            };
            t.insert(Conn::new(
                key,
                ConnState::Udp,
                10,
                svc.clone(),
                d.clone(),
                NO_TEMPLATE,
            ))
            .unwrap();
        }
        // Holes: every third entry gone.
        for s in (0..100).step_by(3) {
            t.remove(s);
        }
        let mut seen = Vec::new();
        let mut cursor = Some(0);
        let mut steps = 0;
        while let Some(c) = cursor {
            let mut n = 0;
            cursor = t.for_each_from(c, 16, |e| {
                seen.push(e.key.sport);
                n += 1;
            });
            assert!(n <= 16);
            steps += 1;
        }
        assert_eq!(steps, 7, "100 slots in steps of 16");
        let want: Vec<u16> = (0..100).filter(|p| p % 3 != 0).collect();
        assert_eq!(seen, want);
        assert_eq!(t.for_each_from(500, 16, |_| panic!()), Option::None);
        assert_eq!(
            ConnTable::with_capacity(4).for_each_from(0, 16, |_| panic!()),
            Option::None
        );
    }

    #[test]
    fn reply_key_finds_the_same_entry_and_is_removed_with_it() {
        let svc = svc();
        let d = Arc::new(DestRt::new(
            "192.168.80.10".parse().unwrap(),
            8080,
            Forward::Masq,
            1,
        ));
        let req = FlowKey {
            saddr: 1,
            daddr: 2,
            sport: 3000,
            dport: 80,
            proto: 6,
        };
        let rep = FlowKey {
            saddr: 9,
            daddr: 1,
            sport: 8080,
            dport: 3000,
            proto: 6,
        };
        let mut t = ConnTable::with_capacity_and_keys(4, 2);
        let s = t
            .insert(Conn {
                key: req,
                state: ConnState::SynRecv,
                expires_ms: 10,
                svc,
                dest: d,
                tpl: NO_TEMPLATE,
                rip: rep.saddr,
                rport: rep.sport,
                client_mac: [0; 6],
                in_port: 0,
                worker: 0,
                sync_pkts: 0,
                sync_state: ConnState::None,
                fast: false,
            })
            .unwrap();
        assert_eq!(t.find(&req), Some((s, false)));
        assert_eq!(t.find(&rep), Some((s, true)));
        t.remove(s);
        assert_eq!(t.find(&req), Option::None);
        assert_eq!(t.find(&rep), Option::None);
    }
}
