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

/// Most shards (power of two): enough that two workers rarely meet on one lock.
const NAT_SHARDS: usize = 64;

/// Fewest entries per shard. The shard hash is random, so shards fill unevenly: with
/// `n` entries per shard the first one is full when the table holds about
/// `1 - 3/sqrt(n)` of its total (90% at 1024). A small table therefore gets fewer
/// shards rather than a few entries each, and a table of at most this size has one
/// shard and holds exactly its total.
const MIN_PER_SHARD: usize = 1024;

pub struct NatConns {
    shards: Box<[CachePadded<Mutex<ConnTable>>]>,
    /// `shards.len() - 1` (the length is a power of two).
    mask: usize,
    key: ahash::RandomState,
}

impl NatConns {
    /// `total` entries split evenly over up to `NAT_SHARDS` shards of at least
    /// `MIN_PER_SHARD` entries.
    pub fn with_capacity(total: usize) -> Self {
        Self::with_policy(total, PressurePolicy::default())
    }

    pub fn with_policy(total: usize, policy: PressurePolicy) -> Self {
        let n = Self::shard_count(total);
        let per = total.div_ceil(n).max(1);
        NatConns {
            mask: n - 1,
            shards: (0..n)
                .map(|_| {
                    let mut t = ConnTable::with_capacity_and_keys(per, 2);
                    t.set_policy(policy);
                    CachePadded::new(Mutex::new(t))
                })
                .collect(),
            key: ahash::RandomState::new(),
        }
    }

    fn shard_count(total: usize) -> usize {
        let n = (total / MIN_PER_SHARD).clamp(1, NAT_SHARDS);
        // Round down to a power of two so that a mask picks the shard.
        1 << (usize::BITS - 1 - n.leading_zeros())
    }

    /// The shard of the client `client_addr:client_port` (request source, reply destination).
    pub fn shard_of(&self, client_addr: u32, client_port: u16) -> usize {
        self.key.hash_one((client_addr, client_port)) as usize & self.mask
    }

    /// Locks one shard. A poisoned shard (a panic while holding it) is still consistent.
    pub fn shard(&self, i: usize) -> std::sync::MutexGuard<'_, ConnTable> {
        self.shards[i & self.mask]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// Entries the table can hold in all (each shard's share, summed).
    pub fn capacity(&self) -> usize {
        self.shards.len() * self.shard(0).capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_choice_is_keyed_per_table() {
        // The same clients spread differently in two tables (two keys); with an unkeyed
        // hash an attacker could precompute sources that share one shard everywhere.
        let (a, b) = (
            NatConns::with_capacity(1 << 20),
            NatConns::with_capacity(1 << 20),
        );
        assert_eq!(a.shards(), NAT_SHARDS);
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

    #[test]
    fn a_small_table_has_fewer_shards_and_holds_its_total() {
        for (total, shards) in [
            (1, 1),
            (64, 1),
            (1024, 1),
            (2047, 1),
            (2048, 2),
            (3 * 1024, 2),
            (65536, 64),
            (1 << 20, 64),
        ] {
            let t = NatConns::with_capacity(total);
            assert_eq!(t.shards(), shards, "{total} entries");
            assert!(t.capacity() >= total, "{total} entries");
            assert!(t.capacity() < total + shards, "{total} entries");
        }
    }
}
