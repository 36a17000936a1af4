//! What a full connection table does with a new connection.
//!
//! A spoofed SYN flood creates one entry per forged source; in IPVS each lives 60 s in
//! SYN_RECV, so a flood fills any table and then every legitimate client is refused
//! (IPVS's answers, `drop_entry`, `drop_packet` and `secure_tcp`, trade that for random
//! drops or shorter timeouts). xvs keeps the entries that have not completed a handshake
//! ("half-open": NONE, SYN_RECV, SYN_SENT, SYNACK, LISTEN) on a list in creation order,
//! and a new connection that finds the table full evicts the oldest of them. An attacker
//! then has to refill the whole table faster than a legitimate handshake completes (one
//! RTT) to push a real client out, and established entries are never touched.
//!
//! The list is intrusive (two `u32` links per slot, allocated with the table), so linking,
//! unlinking and evicting are O(1) and never allocate.

use super::state::ConnState;

/// `xvsd --table-full`: what a new connection does when its table is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PressurePolicy {
    /// Evict the oldest half-open entry (the default).
    #[default]
    EvictHalfOpen,
    /// Refuse the new connection (IPVS without `drop_entry`).
    Refuse,
}

impl PressurePolicy {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "evict-half-open" => Some(PressurePolicy::EvictHalfOpen),
            "refuse" => Some(PressurePolicy::Refuse),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            PressurePolicy::EvictHalfOpen => "evict-half-open",
            PressurePolicy::Refuse => "refuse",
        }
    }
}

/// An entry that may make room: it has not completed a handshake. UDP entries, established
/// and closing connections are never evicted.
pub fn is_half_open(s: ConnState) -> bool {
    matches!(
        s,
        ConnState::None
            | ConnState::SynRecv
            | ConnState::SynSent
            | ConnState::SynAck
            | ConnState::Listen
    )
}

const NIL: u32 = u32::MAX;

/// A doubly linked list of slots in insertion order, stored beside a slab (the half-open
/// entries of a connection table, the unused templates of a template table).
#[derive(Debug)]
pub(super) struct SlotList {
    /// (prev, next) per slot; `NIL` ends; a slot not on the list has `linked` false.
    links: Vec<(u32, u32)>,
    linked: Vec<bool>,
    head: u32,
    tail: u32,
    len: usize,
}

impl SlotList {
    pub fn with_capacity(capacity: usize) -> Self {
        SlotList {
            links: vec![(NIL, NIL); capacity],
            linked: vec![false; capacity],
            head: NIL,
            tail: NIL,
            len: 0,
        }
    }

    /// Room for slots `0..n` (a slab that grows).
    pub fn grow_to(&mut self, n: usize) {
        if n > self.links.len() {
            self.links.resize(n, (NIL, NIL));
            self.linked.resize(n, false);
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Appends `slot` (the newest); no-op if already on the list.
    pub fn push_back(&mut self, slot: u32) {
        let i = slot as usize;
        if i >= self.links.len() || self.linked[i] {
            return;
        }
        self.links[i] = (self.tail, NIL);
        if self.tail == NIL {
            self.head = slot;
        } else {
            self.links[self.tail as usize].1 = slot;
        }
        self.tail = slot;
        self.linked[i] = true;
        self.len += 1;
    }

    /// Takes `slot` off the list; no-op if it is not on it.
    pub fn unlink(&mut self, slot: u32) {
        let i = slot as usize;
        if i >= self.links.len() || !self.linked[i] {
            return;
        }
        let (prev, next) = self.links[i];
        if prev == NIL {
            self.head = next;
        } else {
            self.links[prev as usize].1 = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.links[next as usize].0 = prev;
        }
        self.links[i] = (NIL, NIL);
        self.linked[i] = false;
        self.len -= 1;
    }

    /// The oldest slot on the list.
    pub fn front(&self) -> Option<u32> {
        (self.head != NIL).then_some(self.head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn order(l: &SlotList) -> Vec<u32> {
        let mut out = Vec::new();
        let mut s = l.head;
        while s != NIL {
            out.push(s);
            s = l.links[s as usize].1;
        }
        out
    }

    #[test]
    fn fifo_with_unlink_anywhere() {
        let mut l = SlotList::with_capacity(8);
        for s in [3, 1, 4, 5] {
            l.push_back(s);
        }
        l.push_back(1); // already there: order unchanged
        assert_eq!(order(&l), vec![3, 1, 4, 5]);
        l.unlink(4);
        l.unlink(3);
        assert_eq!(l.front(), Some(1));
        l.push_back(3);
        assert_eq!(order(&l), vec![1, 5, 3]);
        l.unlink(5);
        l.unlink(1);
        l.unlink(3);
        assert_eq!((l.front(), l.len()), (None, 0));
    }

    proptest! {
        /// Against a model (a Vec in insertion order): any sequence of pushes and unlinks
        /// leaves the same order.
        #[test]
        fn matches_a_model(ops in proptest::collection::vec((any::<bool>(), 0u32..16), 0..200)) {
            let mut l = SlotList::with_capacity(16);
            let mut m: Vec<u32> = Vec::new();
            for (push, s) in ops {
                if push {
                    l.push_back(s);
                    if !m.contains(&s) { m.push(s); }
                } else {
                    l.unlink(s);
                    m.retain(|&x| x != s);
                }
                prop_assert_eq!(order(&l), m.clone());
                prop_assert_eq!(l.len(), m.len());
            }
        }
    }
}
