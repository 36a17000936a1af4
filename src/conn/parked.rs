//! Connections the director knows but no worker holds yet: received from a sync peer,
//! loaded from a restart's state file, or handed over by a worker whose flow started
//! arriving on another RX queue.
//!
//! Each worker owns its DR/TUN table because a flow normally arrives on one queue. An
//! entry that was *not* created by the worker that now sees its packets has to be found
//! anyway. It waits here, by value (addresses, not `Arc`s: its service and real server may
//! not be configured yet when it arrives, for example before a restart's rules are
//! restored), until the first packet of its flow reaches a worker. That worker takes it
//! out and inserts a full `Conn` into its own table (or the NAT shard), so every later
//! packet is a plain local hit: the lock here is taken once per flow, not per packet.
//!
//! The common path pays nothing: a worker looks here only for a packet that missed its
//! own table and would otherwise start a new connection, and only while the store is not
//! empty (one relaxed load). The store is sharded like `NatConns`, with a keyed hash.

use super::state::ConnState;
use crate::model::Forward;
use crate::packet::FlowKey;
use crossbeam::queue::ArrayQueue;
use crossbeam::utils::CachePadded;
use hashbrown::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

const SHARDS: usize = 64;
/// Replies waiting for a client lookup at once (beyond it, a later reply asks again).
const WANTED_MAX: usize = 1024;

/// A connection waiting for its first packet on some worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parked {
    pub dest_addr: u32,
    pub dest_port: u16,
    pub forward: Forward,
    pub state: ConnState,
    /// Absolute expiry on the millisecond clock (`crate::clock`).
    pub expires_ms: u64,
    /// NAT: where the client's side is (the port and MAC replies go to), when known.
    pub client: ClientSide,
}

/// The client's side of a NAT entry: the port (interface) and MAC its replies go to.
/// A worker learns both from the client's own frame; an entry received from a sync peer
/// has neither, so a real server's reply that arrives first cannot use it until the
/// daemon has looked them up (the kernel's route and neighbour for the client address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientSide {
    pub port: u8,
    pub mac: [u8; 6],
}

impl ClientSide {
    /// Not known, nobody asked.
    pub const UNKNOWN: ClientSide = ClientSide {
        port: u8::MAX,
        mac: [0; 6],
    };
    /// Not known, and a reply is waiting for it: the daemon looks it up.
    pub const WANTED: ClientSide = ClientSide {
        port: u8::MAX - 1,
        mac: [0; 6],
    };

    pub fn known(&self) -> bool {
        self.port < u8::MAX - 1
    }
}

/// The store is full (refused entries are counted by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParkedFull;

type Shard = HashMap<FlowKey, Parked, ahash::RandomState>;

pub struct ParkedConns {
    shards: Box<[CachePadded<Mutex<Shard>>]>,
    per_shard: usize,
    len: AtomicUsize,
    /// Keys of entries a reply marked `ClientSide::WANTED`, for the daemon to resolve
    /// (bounded: when it is full the entry stays unknown and a later reply asks again).
    wanted: ArrayQueue<FlowKey>,
    key: ahash::RandomState,
    /// Next shard the sweep looks at.
    cursor: AtomicUsize,
}

impl ParkedConns {
    /// Room for about `total` entries (each shard gets an equal share, at least 64), all
    /// allocated now: `put` never makes a shard's map grow (it refuses beyond the share),
    /// so neither `put` from a worker nor `take` allocates.
    pub fn with_capacity(total: usize) -> Self {
        let per_shard = total.div_ceil(SHARDS).max(64);
        ParkedConns {
            shards: (0..SHARDS)
                .map(|_| {
                    // Twice the room: hashbrown then rehashes in place when removals
                    // have used up its growth budget, so a shard kept full under churn
                    // never allocates (as the connection tables' index).
                    CachePadded::new(Mutex::new(HashMap::with_capacity_and_hasher(
                        per_shard * 2,
                        ahash::RandomState::new(),
                    )))
                })
                .collect(),
            per_shard,
            len: AtomicUsize::new(0),
            wanted: ArrayQueue::new(WANTED_MAX),
            key: ahash::RandomState::new(),
            cursor: AtomicUsize::new(0),
        }
    }

    fn shard(&self, k: &FlowKey) -> std::sync::MutexGuard<'_, Shard> {
        let i = self.key.hash_one(k) as usize & (SHARDS - 1);
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn len(&self) -> usize {
        self.len.load(Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.per_shard * SHARDS
    }

    /// Adds or replaces the entry of `key`.
    pub fn put(&self, key: FlowKey, p: Parked) -> Result<(), ParkedFull> {
        let mut sh = self.shard(&key);
        if let Some(e) = sh.get_mut(&key) {
            // A refresh from the peer carries no client side: keep one already known
            // or being looked up.
            let client = if p.client.known() { p.client } else { e.client };
            *e = Parked { client, ..p };
            return Ok(());
        }
        if sh.len() >= self.per_shard {
            return Err(ParkedFull);
        }
        let mut p = p;
        // A NAT entry without its client side: ask the daemon now, so that on a failover
        // the real server's first retransmission finds it ready. When the queue is full
        // it is asked for by the first reply instead.
        if p.forward == Forward::Masq
            && p.client == ClientSide::UNKNOWN
            && self.wanted.push(key).is_ok()
        {
            p.client = ClientSide::WANTED;
        }
        sh.insert(key, p);
        self.len.fetch_add(1, Relaxed);
        Ok(())
    }

    /// Takes the entry of `key` out, if any. The packet path calls this on a miss of its
    /// own table; an empty store costs one relaxed load and no lock.
    #[inline]
    pub fn take(&self, key: &FlowKey) -> Option<Parked> {
        if self.is_empty() {
            return None;
        }
        let p = self.shard(key).remove(key);
        if p.is_some() {
            self.len.fetch_sub(1, Relaxed);
        }
        p
    }

    /// A real server's reply for `key` (the client's tuple) found no connection: the
    /// entry is taken if its client side is known; otherwise it is marked wanted (the
    /// daemon resolves it, see `wanted`) and stays. Packet path: one shard lock, only
    /// while the store is not empty.
    #[inline]
    pub fn take_for_reply(&self, key: &FlowKey) -> Option<Parked> {
        if self.is_empty() {
            return None;
        }
        let mut sh = self.shard(key);
        let p = sh.get_mut(key)?;
        if p.client.known() {
            let p = sh.remove(key);
            self.len.fetch_sub(1, Relaxed);
            return p;
        }
        if p.client == ClientSide::UNKNOWN && self.wanted.push(*key).is_ok() {
            p.client = ClientSide::WANTED;
        }
        None
    }

    /// Keys queued for the daemon's lookup.
    pub fn wanted_count(&self) -> usize {
        self.wanted.len()
    }

    /// Moves at most `max` queued keys into `out`. Their entries stay `WANTED` (no
    /// further reply queues them again) until the daemon calls `set_client`, with the
    /// client's side or with `ClientSide::UNKNOWN` when it gives up.
    pub fn take_wanted(&self, out: &mut Vec<FlowKey>, max: usize) {
        for _ in 0..max {
            match self.wanted.pop() {
                Some(k) => out.push(k),
                None => return,
            }
        }
    }

    /// Records where `key`'s client is (the daemon's lookup for a waiting reply).
    pub fn set_client(&self, key: &FlowKey, client: ClientSide) {
        if let Some(p) = self.shard(key).get_mut(key) {
            p.client = client;
        }
    }

    /// Looks without taking (tests, listings).
    pub fn get(&self, key: &FlowKey) -> Option<Parked> {
        self.shard(key).get(key).copied()
    }

    /// Removes entries past their expiry from the next `shards` shards; returns how many.
    /// The daemon calls it about once a second, so one shard's lock is held for one pass
    /// over at most `per_shard` entries, never all of them at once.
    pub fn expire(&self, now_ms: u64, shards: usize) -> usize {
        let mut gone = 0;
        for _ in 0..shards.min(SHARDS) {
            let i = self.cursor.fetch_add(1, Relaxed) & (SHARDS - 1);
            let mut sh = self.shards[i].lock().unwrap_or_else(|e| e.into_inner());
            let before = sh.len();
            sh.retain(|_, p| p.expires_ms > now_ms);
            gone += before - sh.len();
        }
        self.len.fetch_sub(gone, Relaxed);
        gone
    }

    pub fn shards(&self) -> usize {
        SHARDS
    }

    /// Appends shard `i`'s entries to `out` (a listing copies one shard under its lock and
    /// formats it after).
    pub fn copy_shard(&self, i: usize, out: &mut Vec<(FlowKey, Parked)>) {
        let sh = self.shards[i % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        out.extend(sh.iter().map(|(k, p)| (*k, *p)));
    }

    /// Visits every entry, one shard locked at a time (bulk sync, state file, listings).
    pub fn for_each(&self, mut f: impl FnMut(&FlowKey, &Parked)) {
        for s in self.shards.iter() {
            let sh = s.lock().unwrap_or_else(|e| e.into_inner());
            for (k, p) in sh.iter() {
                f(k, p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> FlowKey {
        FlowKey {
            saddr: 0x0a00_0000 + i,
            daddr: 0x0a00_0058,
            sport: 1000 + (i % 50000) as u16,
            dport: 80,
            proto: 6,
        }
    }

    fn parked(exp: u64) -> Parked {
        Parked {
            dest_addr: 0x0a00_0009,
            dest_port: 80,
            forward: Forward::Route,
            state: ConnState::Established,
            expires_ms: exp,
            client: ClientSide::UNKNOWN,
        }
    }

    #[test]
    fn put_take_once() {
        let s = ParkedConns::with_capacity(1000);
        assert!(s.take(&key(1)).is_none());
        s.put(key(1), parked(10)).unwrap();
        s.put(key(1), parked(20)).unwrap();
        assert_eq!(s.len(), 1, "a second put of the same flow replaces it");
        assert_eq!(s.take(&key(1)).map(|p| p.expires_ms), Some(20));
        assert!(s.take(&key(1)).is_none(), "taken once");
        assert!(s.is_empty());
    }

    #[test]
    fn bounded_and_expiring() {
        let s = ParkedConns::with_capacity(64 * 64);
        let cap = s.capacity();
        let mut refused = 0;
        for i in 0..(cap as u32 * 2) {
            if s.put(key(i), parked(100 + (i % 2) as u64)).is_err() {
                refused += 1;
            }
        }
        assert!(s.len() <= cap);
        assert!(refused >= cap, "at least the excess is refused ({refused})");
        let before = s.len();
        let gone = s.expire(100, SHARDS);
        assert_eq!(s.len(), before - gone);
        assert!(gone > 0 && !s.is_empty(), "only the expired half goes");
        s.expire(101, SHARDS);
        assert!(s.is_empty());
    }

    #[test]
    fn a_reply_queues_its_lookup_once_until_the_daemon_answers() {
        let s = ParkedConns::with_capacity(64);
        let k = key(1);
        s.put(k, parked(1000)).unwrap();
        assert!(s.take_for_reply(&k).is_none());
        assert!(
            s.take_for_reply(&k).is_none(),
            "a retransmission does not queue again"
        );
        assert_eq!(s.wanted_count(), 1);
        let mut out = vec![];
        s.take_wanted(&mut out, 16);
        assert_eq!(out, vec![k]);
        assert!(s.take_for_reply(&k).is_none(), "still being looked up");
        assert_eq!(s.wanted_count(), 0);
        // A sync refresh from the peer keeps the lookup in progress, then the answer.
        s.put(k, parked(2000)).unwrap();
        assert_eq!(s.get(&k).unwrap().client, ClientSide::WANTED);
        let c = ClientSide {
            port: 0,
            mac: [2, 0, 0, 0, 0, 1],
        };
        s.set_client(&k, c);
        s.put(k, parked(3000)).unwrap();
        let p = s.take_for_reply(&k).expect("known client side: taken");
        assert_eq!((p.client, p.expires_ms), (c, 3000));
        assert!(s.is_empty());

        // The daemon gives up: the next reply asks again.
        s.put(k, parked(1000)).unwrap();
        assert!(s.take_for_reply(&k).is_none());
        out.clear();
        s.take_wanted(&mut out, 16);
        s.set_client(&k, ClientSide::UNKNOWN);
        assert!(s.take_for_reply(&k).is_none());
        assert_eq!(s.wanted_count(), 1);
    }

    #[test]
    fn a_nat_entry_asks_for_its_client_side_when_parked() {
        let s = ParkedConns::with_capacity(64);
        s.put(key(1), parked(1000)).unwrap();
        assert_eq!(
            s.wanted_count(),
            0,
            "DR/TUN replies never come through the director"
        );
        let nat = Parked {
            forward: Forward::Masq,
            ..parked(1000)
        };
        s.put(key(2), nat).unwrap();
        s.put(key(2), nat).unwrap();
        assert_eq!(s.wanted_count(), 1, "queued once, at its first put");
        assert_eq!(s.get(&key(2)).unwrap().client, ClientSide::WANTED);
    }
}
