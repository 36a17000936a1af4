//! Source hashing (`sh`), as `ip_vs_sh.c`.
//!
//! A 256-bucket table is filled by walking the server list, each server taking `weight`
//! consecutive buckets (a weight-0 server still takes one), wrapping round the list until
//! the table is full (`ip_vs_sh_reassign`). A connection goes to the bucket of its source
//! address, `hash_32(ntohs(port) + ntohl(saddr), 8)`, where port is the source port with
//! `sh-port` (TCP/UDP/SCTP only) and 0 otherwise (`ip_vs_sh_hashkey`).
//!
//! If that bucket's server is unavailable (weight 0 or OVERLOAD): without `sh-fallback`
//! there is no server (IPVS returns NULL, the packet is dropped); with it the table is
//! probed from bucket `2 * hash` onwards, one bucket at a time, for 256 buckets
//! (`ip_vs_sh_get_fallback` adds the original hash to an offset that already starts at the
//! hash, hence the factor 2).
//!
//! Because the table is rebuilt from the weights, quiescing a server with weight 0 shifts
//! every later bucket unless all weights are 1, exactly as in IPVS; OVERLOAD does not
//! rebuild the table, so with `sh-fallback` it moves only the sources of that server.

use super::{hash_32, SchedFlags, Scheduler};
use crate::dest::DestRt;
use crate::packet::FlowKey;
use std::sync::Arc;

/// IP_VS_SH_TAB_BITS (CONFIG_IP_VS_SH_TAB_BITS default).
const TAB_BITS: u32 = 8;
const TAB_SIZE: usize = 1 << TAB_BITS;
const TAB_MASK: usize = TAB_SIZE - 1;

/// IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP: the protocols whose port `sh-port` hashes
/// (`ip_vs_sh_get_port`); anything else hashes port 0.
const PORT_PROTOS: [u8; 3] = [6, 17, 132];

#[derive(Debug, Clone)]
pub struct SourceHashing {
    flags: SchedFlags,
    /// Bucket -> index into the server list the table was built from.
    buckets: [u32; TAB_SIZE],
    /// Length of that list; 0 means an empty table (IPVS's NULL buckets).
    built_len: usize,
}

impl SourceHashing {
    pub fn new(flags: SchedFlags) -> Self {
        SourceHashing {
            flags,
            buckets: [0; TAB_SIZE],
            built_len: 0,
        }
    }

    /// `ip_vs_sh_reassign`.
    fn build(&mut self, dests: &[Arc<DestRt>]) {
        self.built_len = dests.len();
        if dests.is_empty() {
            return;
        }
        let (mut p, mut taken) = (0usize, 0u32);
        for b in self.buckets.iter_mut() {
            *b = p as u32;
            taken += 1;
            // Don't move to the next server until it has `weight` buckets; weight 0 gets one.
            if taken >= dests[p].weight() {
                p = (p + 1) % dests.len();
                taken = 0;
            }
        }
    }

    /// `ip_vs_sh_hashkey` with offset 0.
    fn hashkey(&self, flow: &FlowKey) -> usize {
        let port = if self.flags.port && PORT_PROTOS.contains(&flow.proto) {
            flow.sport
        } else {
            0
        };
        // In C, u16 + u32 wraps modulo 2^32 before hash_32 sees it.
        hash_32((port as u32).wrapping_add(flow.saddr), TAB_BITS) as usize & TAB_MASK
    }
}

impl Scheduler for SourceHashing {
    fn name(&self) -> &'static str {
        "sh"
    }

    fn boxed_clone(&self) -> Box<dyn Scheduler> {
        Box::new(self.clone())
    }

    fn update(&mut self, dests: &[Arc<DestRt>]) {
        self.build(dests);
    }

    fn schedule(&self, dests: &[Arc<DestRt>], flow: &FlowKey, _now_ms: u64) -> Option<usize> {
        // The table is published with the list it was built for (service::SchedSet); a
        // different length means update() was skipped: no pick rather than a wrong one.
        if dests.is_empty() || self.built_len != dests.len() {
            return None;
        }
        let ihash = self.hashkey(flow);
        let first = self.buckets[ihash] as usize;
        if dests[first].available() {
            return Some(first);
        }
        if !self.flags.fallback {
            return None;
        }
        // ip_vs_sh_get_fallback: roffset = (offset + ihash) % 256, bucket = roffset + ihash.
        (0..TAB_SIZE)
            .map(|offset| self.buckets[(offset + 2 * ihash) & TAB_MASK] as usize)
            .find(|&i| dests[i].available())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::Ordering::Relaxed;

    fn sh(fallback: bool, port: bool) -> SourceHashing {
        SourceHashing::new(SchedFlags { fallback, port })
    }

    fn built(weights: &[u32]) -> (SourceHashing, Vec<Arc<DestRt>>) {
        let d = dests(weights);
        let mut s = sh(false, false);
        s.update(&d);
        (s, d)
    }

    fn counts(s: &SourceHashing, n: usize) -> Vec<usize> {
        (0..n)
            .map(|i| s.buckets.iter().filter(|&&b| b as usize == i).count())
            .collect()
    }

    fn pick(s: &mut SourceHashing, d: &[Arc<DestRt>], saddr: u32, sport: u16) -> usize {
        s.schedule(d, &flow(saddr, sport, 0x0a00_0064), 0)
            .unwrap_or(usize::MAX)
    }

    #[test]
    fn table_is_weight_runs_in_list_order() {
        let (s, _) = built(&[1, 2, 3]);
        assert_eq!(s.buckets[..8], [0, 1, 1, 2, 2, 2, 0, 1]);
        // 256 = 42 * 6 + 4: the last 4 buckets are 0, 1, 1, 2.
        assert_eq!(counts(&s, 3), vec![43, 86, 127]);
    }

    #[test]
    fn weight_zero_takes_one_bucket_and_big_weights_saturate() {
        let (s, _) = built(&[0, 2, 1]);
        assert_eq!(s.buckets[..5], [0, 1, 1, 2, 0]);
        assert_eq!(counts(&s, 3), vec![64, 128, 64]);
        // A weight above 256 fills the whole table before the walk reaches the next server.
        let (s, _) = built(&[300, 1]);
        assert_eq!(counts(&s, 2), vec![256, 0]);
    }

    #[test]
    fn kernel_hash_vector() {
        // hash_32(0x0a000001, 8) = 0x27: 10.0.0.1 lands in bucket 39, which the all-1
        // weights table gives to server 39 % 3 = 0; sh-port adds the port before hashing.
        let s = sh(false, false);
        assert_eq!(s.hashkey(&flow(0x0a00_0001, 1234, 0)), 0x27);
        let s = sh(false, true);
        assert_eq!(
            s.hashkey(&flow(0x0a00_0001, 1234, 0)),
            hash_32(0x0a00_0001 + 1234, 8) as usize
        );
        let mut s = sh(false, false);
        let d = dests(&[1, 1, 1]);
        s.update(&d);
        assert_eq!(pick(&mut s, &d, 0x0a00_0001, 0), 0);
    }

    #[test]
    fn port_flag_changes_the_key() {
        let d = dests(&[1, 1, 1, 1]);
        let saddr = 0xc0a8_0105;
        let mut plain = sh(false, false);
        plain.update(&d);
        let one: Vec<usize> = (1000..1100)
            .map(|p| pick(&mut plain, &d, saddr, p))
            .collect();
        assert!(one.iter().all(|&i| i == one[0]));
        let mut ported = sh(false, true);
        ported.update(&d);
        let many: Vec<usize> = (1000..1100)
            .map(|p| pick(&mut ported, &d, saddr, p))
            .collect();
        assert!(many.iter().any(|&i| i != many[0]));
        // Protocols without ports (ICMP) hash port 0 even with sh-port.
        let icmp = FlowKey {
            proto: 1,
            ..flow(saddr, 1000, 0)
        };
        assert_eq!(ported.hashkey(&icmp), plain.hashkey(&icmp));
    }

    #[test]
    fn none_when_empty_or_all_unavailable() {
        for fallback in [false, true] {
            let mut s = sh(fallback, false);
            assert_eq!(pick(&mut s, &[], 1, 0), usize::MAX);
            let d = dests(&[0, 0]);
            s.update(&d);
            assert_eq!(pick(&mut s, &d, 1, 0), usize::MAX);
            let d = dests(&[1, 1]);
            overload(&d[0], true);
            overload(&d[1], true);
            s.update(&d);
            assert_eq!(pick(&mut s, &d, 1, 0), usize::MAX);
        }
    }

    #[test]
    fn quiescing_with_unit_weights_moves_only_its_sources() {
        let d = dests(&[1, 1, 1, 1, 1]);
        let sources: Vec<u32> = (0..3000u32).map(|i| 0x0a01_0000 + i * 7919).collect();
        for fallback in [false, true] {
            d[2].weight.store(1, Relaxed);
            let mut s = sh(fallback, false);
            s.update(&d);
            let before: Vec<usize> = sources.iter().map(|&a| pick(&mut s, &d, a, 0)).collect();
            d[2].weight.store(0, Relaxed);
            s.update(&d);
            let after: Vec<usize> = sources.iter().map(|&a| pick(&mut s, &d, a, 0)).collect();
            let mut moved = 0;
            for (b, a) in before.iter().zip(&after) {
                if *b == 2 {
                    moved += 1;
                    if fallback {
                        assert!(*a != 2 && *a != usize::MAX);
                    } else {
                        // IPVS sh without sh-fallback: no server, the packet is dropped.
                        assert_eq!(*a, usize::MAX);
                    }
                } else {
                    assert_eq!(a, b);
                }
            }
            assert!(moved > 0);
        }
    }

    #[test]
    fn weight_zero_reshuffles_when_weights_differ() {
        // As in IPVS: the table is rebuilt from the weights, so quiescing a weight-2 server
        // (one bucket instead of two) shifts the runs of the servers after it.
        let (mut s, d) = built(&[2, 2, 2]);
        let before = s.buckets;
        d[0].weight.store(0, Relaxed);
        s.update(&d);
        assert_eq!(s.buckets[..6], [0, 1, 1, 2, 2, 0]);
        assert_ne!(before[1..], s.buckets[1..]);
    }

    proptest! {
        /// The same source always maps to the same server, across calls and instances.
        #[test]
        fn same_source_same_server(
            weights in proptest::collection::vec(0u32..5, 1..8),
            saddr: u32,
            sport: u16,
            fallback: bool,
            port: bool,
        ) {
            let d = dests(&weights);
            let mut a = sh(fallback, port);
            a.update(&d);
            let mut b = sh(fallback, port);
            b.update(&d);
            let first = pick(&mut a, &d, saddr, sport);
            for _ in 0..3 {
                prop_assert_eq!(pick(&mut a, &d, saddr, sport), first);
                prop_assert_eq!(pick(&mut b, &d, saddr, sport), first);
            }
            if weights.iter().any(|&w| w > 0) && fallback {
                prop_assert!(first != usize::MAX);
            }
        }

        /// Bucket shares follow the weights: over whole rounds of the list each server has
        /// exactly its weight, so counts differ from 256 * w / sum by less than one round.
        #[test]
        fn buckets_proportional_to_weights(weights in proptest::collection::vec(1u32..9, 1..8)) {
            let (s, _) = built(&weights);
            let sum: u32 = weights.iter().sum();
            let rounds = TAB_SIZE as u32 / sum;
            for (i, c) in counts(&s, weights.len()).into_iter().enumerate() {
                let c = c as u32;
                prop_assert!(c >= rounds * weights[i] && c <= (rounds + 1) * weights[i]);
            }
        }

        /// With sh-fallback, overloading one server (no table rebuild) moves only the
        /// sources that were on it, whatever the weights.
        #[test]
        fn overload_moves_only_its_sources(
            weights in proptest::collection::vec(1u32..5, 2..6),
            victim in 0usize..6,
            seed: u32,
        ) {
            let victim = victim % weights.len();
            let d = dests(&weights);
            let mut s = sh(true, false);
            s.update(&d);
            let sources: Vec<u32> =
                (0..500u32).map(|i| seed.wrapping_add(i.wrapping_mul(2654435761))).collect();
            let before: Vec<usize> = sources.iter().map(|&a| pick(&mut s, &d, a, 0)).collect();
            overload(&d[victim], true);
            for (k, &a) in sources.iter().enumerate() {
                let now = pick(&mut s, &d, a, 0);
                if before[k] == victim {
                    prop_assert!(now != victim && now != usize::MAX);
                } else {
                    prop_assert_eq!(now, before[k]);
                }
            }
        }
    }
}
