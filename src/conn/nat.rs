//! The NAT connection table, shared by all workers.
//!
//! A NAT reply arrives on whatever queue and interface the real server's traffic hashes
//! to, not necessarily the one the request came in on, so NAT entries cannot live in one
//! worker's table. The table is split into shards, each a mutex around a `ConnTable`
//! whose index holds both the request tuple and the reply tuple. The shard is chosen by
//! the client's address and port, which both directions carry (request source, reply
//! destination), so one lock covers both keys of an entry.
//!
//! The shard hash is keyed with a random per-process key (ahash): a client cannot choose
//! addresses and ports that all land in one shard and so fill it, or contend on its lock,
//! while the others stay empty.

use super::pressure::PressurePolicy;
use super::table::ConnTable;
use crossbeam::utils::CachePadded;
use std::sync::Mutex;

/// Number of shards (power of two).
const NAT_SHARDS: usize = 64;

pub struct NatConns {
    shards: Box<[CachePadded<Mutex<ConnTable>>]>,
    key: ahash::RandomState,
}

impl NatConns {
    /// `total` entries split evenly over the shards.
    pub fn with_capacity(total: usize) -> Self {
        Self::with_policy(total, PressurePolicy::default())
    }

    pub fn with_policy(total: usize, policy: PressurePolicy) -> Self {
        let per = (total / NAT_SHARDS).max(1);
        NatConns {
            shards: (0..NAT_SHARDS)
                .map(|_| {
                    let mut t = ConnTable::with_capacity_and_keys(per, 2);
                    t.set_policy(policy);
                    CachePadded::new(Mutex::new(t))
                })
                .collect(),
            key: ahash::RandomState::new(),
        }
    }

    /// The shard of the client `client_addr:client_port` (request source, reply destination).
    pub fn shard_of(&self, client_addr: u32, client_port: u16) -> usize {
        self.key.hash_one((client_addr, client_port)) as usize & (NAT_SHARDS - 1)
    }

    /// Locks one shard. A poisoned shard (a panic while holding it) is still consistent.
    pub fn shard(&self, i: usize) -> std::sync::MutexGuard<'_, ConnTable> {
        self.shards[i & (NAT_SHARDS - 1)]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub fn shards(&self) -> usize {
        NAT_SHARDS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_choice_is_keyed_per_table() {
        // The same clients spread differently in two tables (two keys); with an unkeyed
        // hash an attacker could precompute sources that share one shard everywhere.
        let (a, b) = (NatConns::with_capacity(64), NatConns::with_capacity(64));
        let same = (0..256u32)
            .filter(|&i| a.shard_of(0x0a00_0000 + i, 1000) == b.shard_of(0x0a00_0000 + i, 1000))
            .count();
        assert!(
            same < 64,
            "{same} of 256 clients in the same shard under two keys"
        );
        // And a table spreads sequential clients over (nearly) all shards.
        let mut used = [false; NAT_SHARDS];
        for i in 0..1024u32 {
            used[a.shard_of(0x0a00_0000 + i, 40000)] = true;
        }
        assert!(used.iter().filter(|&&u| u).count() > 56);
    }
}
