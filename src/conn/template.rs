//! Persistence templates of one service (IPVS `IP_VS_CONN_F_TEMPLATE`): a client group
//! (`-M` netmask) sent to one real server until the template times out (`-p`).
//!
//! The table has a capacity (`xvsd --templates-max`, by default twice `--conn-max`: room
//! for every connection the DR/TUN tables and the NAT table can hold): a spoofed flood on
//! a `-p` service cannot grow it beyond that, and it stops allocating once it has grown
//! there. A full table reuses the template that has been unused longest (no connection
//! left; kept on a list in the order they became unused), so a client group with live
//! connections never loses its server; with none unused, the new connection is refused and
//! counted (`template_full`). Because the capacity covers every connection, a template is
//! always free or reusable when the connection itself fits: a SYN flood that makes the
//! connection table evict its half-open entries (see `pressure`) releases their templates
//! too, and cannot lock legitimate persistent clients out.
//!
//! The table lives under the service's persistence lock, taken when a new connection looks
//! up or makes its template and when a connection that used one goes (IPVS takes its
//! connection-table locks at the same two points).

use super::pressure::SlotList;
use crate::dest::{DeadAction, DestRt};
use hashbrown::HashTable;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// The key of a persistence template: client group, virtual port (0 for an all-ports
/// service) and protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TemplateKey {
    pub cnet: u32,
    pub vport: u16,
    pub proto: u8,
}

/// One template.
#[derive(Debug)]
pub struct Template {
    pub key: TemplateKey,
    pub vaddr: Ipv4Addr,
    pub dest: Arc<DestRt>,
    pub expires_ms: u64,
}

/// Why a template could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplatesFull;

pub struct Templates {
    slots: Vec<Option<Template>>,
    /// Connections controlled by each slot's template (`n_control`).
    refs: Vec<u32>,
    free: Vec<u32>,
    /// Live templates with no connection, longest unused first.
    unused: SlotList,
    index: HashTable<u32>,
    /// Entries the index was last grown to hold.
    index_room: usize,
    hasher: ahash::RandomState,
    capacity: usize,
    len: usize,
}

impl Templates {
    /// An empty table that grows up to `capacity` templates.
    pub fn with_capacity(capacity: usize) -> Self {
        Templates {
            slots: Vec::new(),
            refs: Vec::new(),
            free: Vec::new(),
            unused: SlotList::with_capacity(0),
            index: HashTable::new(),
            index_room: 0,
            hasher: ahash::RandomState::new(),
            capacity: capacity.clamp(1, u32::MAX as usize - 1),
            len: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn find(&self, key: &TemplateKey) -> Option<u32> {
        let h = self.hasher.hash_one(key);
        let slots = &self.slots;
        self.index
            .find(h, |&s| {
                slots[s as usize].as_ref().is_some_and(|t| t.key == *key)
            })
            .copied()
    }

    fn acquire(&mut self, slot: u32) {
        let r = &mut self.refs[slot as usize];
        if *r == 0 {
            self.unused.unlink(slot);
        }
        *r += 1;
    }

    /// A connection created through the template in `slot` went away.
    pub fn release(&mut self, slot: u32) {
        let Some(r) = self.refs.get_mut(slot as usize) else {
            return;
        };
        if *r == 0 {
            return;
        }
        *r -= 1;
        if *r == 0 && self.slots[slot as usize].is_some() {
            self.unused.push_back(slot);
        }
    }

    /// Connections the template in `slot` controls.
    pub fn refs(&self, slot: u32) -> u32 {
        self.refs.get(slot as usize).copied().unwrap_or(0)
    }

    /// The template of `key` if it still points into `dests` (a quiesced server keeps its
    /// persistent clients, as with IPVS's default expire_quiescent_template=0): refreshed,
    /// and one more connection counted on it. A template whose server has left the list is
    /// removed once no connection uses it (ip_vs_sched_persist then schedules anew).
    pub fn lookup(
        &mut self,
        key: &TemplateKey,
        dests: &[Arc<DestRt>],
        expires_ms: u64,
    ) -> Option<(u32, Arc<DestRt>)> {
        let slot = self.find(key)?;
        let t = self.slots[slot as usize].as_mut()?;
        // Gone from the service, or declared dead by the health checks under a policy
        // that moves its clients (`--on-dead expire|reassign`): the group is scheduled
        // afresh. A dead server under `ipvs` is quiesced and keeps its templates, as IPVS
        // does for weight 0 without `expire_quiescent_template`.
        let moved = matches!(
            t.dest.on_unavailable(),
            Some(DeadAction::Expire | DeadAction::Reassign)
        );
        if moved || !dests.iter().any(|d| Arc::ptr_eq(d, &t.dest)) {
            self.unindex(slot);
            return None;
        }
        t.expires_ms = expires_ms;
        let dest = t.dest.clone();
        self.acquire(slot);
        Some((slot, dest))
    }

    /// A template received from a sync peer (`ip_vs_proc_conn` for a template): the client
    /// group's template is created, or refreshed and pointed at `t.dest`, controlling no
    /// connection here (so the longest-unused rule may reuse it when the table is full).
    /// A template in use by local connections keeps its server (they were made through it).
    pub fn put_synced(&mut self, t: Template) -> Result<(), TemplatesFull> {
        if let Some(slot) = self.find(&t.key) {
            let in_use = self.refs(slot) > 0;
            if let Some(cur) = self.slots[slot as usize].as_mut() {
                cur.expires_ms = cur.expires_ms.max(t.expires_ms);
                if !in_use && !Arc::ptr_eq(&cur.dest, &t.dest) {
                    cur.dest.load.persist_conns.fetch_sub(1, Relaxed);
                    t.dest.load.persist_conns.fetch_add(1, Relaxed);
                    cur.dest = t.dest;
                }
            }
            return Ok(());
        }
        let slot = self.insert(t)?;
        self.release(slot);
        Ok(())
    }

    /// Makes a template controlling one connection.
    pub fn insert(&mut self, t: Template) -> Result<u32, TemplatesFull> {
        if self.len >= self.capacity {
            let victim = self.unused.front().ok_or(TemplatesFull)?;
            self.remove(victim);
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                // Growing up to the capacity (amortised, as IPVS allocates its templates);
                // the index keeps room for twice its entries so that churn at the capacity
                // rehashes in place instead of allocating.
                self.slots.push(None);
                self.refs.push(0);
                self.unused.grow_to(self.slots.len());
                (self.slots.len() - 1) as u32
            }
        };
        // `index.capacity()` shrinks as deletions leave tombstones, so the room reserved is
        // kept here: entries stay at most half of it, and hashbrown then always rehashes
        // in place when tombstones use up its spare room.
        if 2 * (self.len + 1) > self.index_room {
            self.index_room = (4 * (self.len + 1)).min(2 * self.capacity);
            let (slots, hasher) = (&self.slots, &self.hasher);
            self.index
                .reserve(self.index_room - self.index.len(), |&s| {
                    slots[s as usize]
                        .as_ref()
                        .map_or(0, |t| hasher.hash_one(t.key))
                });
        }
        t.dest.load.persist_conns.fetch_add(1, Relaxed);
        let h = self.hasher.hash_one(t.key);
        self.slots[slot as usize] = Some(t);
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index.insert_unique(h, slot, |&s| {
            slots[s as usize]
                .as_ref()
                .map_or(0, |t| hasher.hash_one(t.key))
        });
        self.refs[slot as usize] = 1;
        self.len += 1;
        Ok(slot)
    }

    /// Takes the template in `slot` out of the index (no new connection finds it); the slot
    /// is freed now if no connection uses it, otherwise when the last one goes.
    fn unindex(&mut self, slot: u32) {
        if self.refs(slot) == 0 {
            self.remove(slot);
            return;
        }
        let Some(t) = self.slots[slot as usize].as_mut() else {
            return;
        };
        // An impossible key (a group address outside its own netmask is never looked up
        // with vport u16::MAX and proto 0) keeps the slot live until its refs drop; expiry
        // then frees it.
        let old = t.key;
        t.key = TemplateKey {
            cnet: u32::MAX,
            vport: u16::MAX,
            proto: 0,
        };
        t.expires_ms = 0;
        let h = self.hasher.hash_one(old);
        if let Ok(e) = self.index.find_entry(h, |&s| s == slot) {
            e.remove();
        }
    }

    fn remove(&mut self, slot: u32) {
        let Some(t) = self.slots[slot as usize].take() else {
            return;
        };
        t.dest.load.persist_conns.fetch_sub(1, Relaxed);
        let h = self.hasher.hash_one(t.key);
        if let Ok(e) = self.index.find_entry(h, |&s| s == slot) {
            e.remove();
        }
        self.unused.unlink(slot);
        self.refs[slot as usize] = 0;
        self.free.push(slot);
        self.len -= 1;
    }

    /// Removes templates past their timeout that control no connection; re-arms expired
    /// ones that still do (ip_vs_conn_expire's "expire later"). Off the packet path.
    pub fn expire(&mut self, now_ms: u64, timeout_ms: u64) {
        for slot in 0..self.slots.len() as u32 {
            let Some(t) = self.slots[slot as usize].as_mut() else {
                continue;
            };
            if t.expires_ms > now_ms {
                continue;
            }
            if self.refs[slot as usize] > 0 {
                t.expires_ms = now_ms + timeout_ms;
            } else {
                self.remove(slot);
            }
        }
    }

    /// Removes every template (persistence switched off). Connections still holding a slot
    /// release it harmlessly later (`release` ignores empty slots).
    pub fn clear(&mut self) {
        for slot in 0..self.slots.len() as u32 {
            self.remove(slot);
        }
    }

    /// Visits every template (listings).
    pub fn for_each(&self, mut f: impl FnMut(&Template)) {
        for t in self.slots.iter().flatten() {
            f(t);
        }
    }
}

impl Drop for Templates {
    fn drop(&mut self) {
        // The servers' template counts (`-L --persistent-conn`) go down with the table.
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Forward;

    fn dest(i: u8) -> Arc<DestRt> {
        Arc::new(DestRt::new(
            Ipv4Addr::new(10, 0, 0, i),
            80,
            Forward::Route,
            1,
        ))
    }

    fn key(cnet: u32) -> TemplateKey {
        TemplateKey {
            cnet,
            vport: 80,
            proto: 6,
        }
    }

    fn tpl(cnet: u32, d: &Arc<DestRt>) -> Template {
        Template {
            key: key(cnet),
            vaddr: Ipv4Addr::new(10, 0, 0, 88),
            dest: d.clone(),
            expires_ms: 1000,
        }
    }

    #[test]
    fn full_table_reuses_the_longest_unused_and_never_one_in_use() {
        let d = [dest(1)];
        let mut t = Templates::with_capacity(4);
        let slots: Vec<u32> = (0..4).map(|i| t.insert(tpl(i, &d[0])).unwrap()).collect();
        assert_eq!(d[0].persistent(), 4);
        // Every template controls a connection: the fifth group is refused.
        assert_eq!(t.insert(tpl(9, &d[0])), Err(TemplatesFull));
        assert_eq!(t.len(), 4);
        // Connections of groups 3 then 1 go: group 3's template is reused first.
        t.release(slots[3]);
        t.release(slots[1]);
        assert_eq!(t.insert(tpl(9, &d[0])), Ok(slots[3]));
        assert!(t.lookup(&key(3), &d, 0).is_none(), "reused group is gone");
        assert_eq!(t.lookup(&key(1), &d, 0).map(|x| x.0), Some(slots[1]));
        assert_eq!(t.refs(slots[1]), 1, "in use again: not reusable");
        assert_eq!(t.insert(tpl(10, &d[0])), Err(TemplatesFull));
        assert_eq!((t.len(), d[0].persistent()), (4, 4));
    }

    #[test]
    fn expiry_waits_for_connections_and_frees_the_server_count() {
        let d = [dest(1)];
        let mut t = Templates::with_capacity(8);
        let s = t.insert(tpl(1, &d[0])).unwrap();
        t.expire(5000, 300);
        assert_eq!(t.len(), 1, "still controls a connection: re-armed");
        t.release(s);
        t.expire(5299, 300);
        assert_eq!(t.len(), 1);
        t.expire(5300, 300);
        assert_eq!(t.len(), 0);
        assert_eq!(d[0].persistent(), 0);
    }

    #[test]
    fn template_of_a_removed_server_is_replaced_and_freed_when_unused() {
        let (a, b) = (dest(1), dest(2));
        let mut t = Templates::with_capacity(8);
        let s = t.insert(tpl(1, &a)).unwrap();
        assert!(t.lookup(&key(1), std::slice::from_ref(&b), 0).is_none());
        // The group gets a new template while the old one's connection lives on.
        let s2 = t.insert(tpl(1, &b)).unwrap();
        assert_ne!(s, s2);
        assert_eq!(
            t.lookup(&key(1), std::slice::from_ref(&b), 0).map(|x| x.0),
            Some(s2)
        );
        t.release(s);
        t.expire(1, 300);
        assert_eq!((t.len(), a.persistent(), b.persistent()), (1, 0, 1));
    }

    #[test]
    fn template_of_a_dead_server_moves_only_under_a_moving_policy() {
        let a = dest(1);
        let mut t = Templates::with_capacity(8);
        t.insert(tpl(1, &a)).unwrap();
        let d = std::slice::from_ref(&a);
        a.set_dead(true);
        // ipvs: quiesced, the group sticks to it.
        assert!(t.lookup(&key(1), d, 0).is_some());
        a.set_on_dead(crate::kconf::OnDead::Reassign);
        assert!(t.lookup(&key(1), d, 0).is_none());
    }

    #[test]
    fn churn_at_capacity_stops_allocating() {
        let d = [dest(1)];
        let mut t = Templates::with_capacity(64);
        for i in 0..64 {
            let s = t.insert(tpl(i, &d[0])).unwrap();
            t.release(s);
        }
        // Allocation sizes, not `capacity()` (which moves with tombstones).
        let (idx, slab) = (t.index.allocation_size(), t.slots.capacity());
        for i in 64..10_000u32 {
            let s = t.insert(tpl(i, &d[0])).unwrap();
            t.release(s);
        }
        assert_eq!(t.len(), 64);
        assert_eq!((t.index.allocation_size(), t.slots.capacity()), (idx, slab));
    }
}
