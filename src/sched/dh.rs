//! Destination hashing (`dh`), as `ip_vs_dh.c`.
//!
//! 256 buckets are given to the servers round robin in list order (weights ignored:
//! bucket `i` belongs to server `i % n`); a connection goes to the bucket of its
//! destination address, `hash_32(ntohl(daddr), 8)`. If that server is unavailable
//! (weight 0 or OVERLOAD) there is no server: dh has no fallback in IPVS.

use super::{hash_32, Scheduler};
use crate::dest::DestRt;
use crate::packet::FlowKey;
use std::sync::Arc;

/// IP_VS_DH_TAB_BITS (CONFIG_IP_VS_DH_TAB_BITS default).
const TAB_BITS: u32 = 8;
#[cfg(test)]
const TAB_SIZE: usize = 1 << TAB_BITS;

/// Stateless: the table is implicit, `ip_vs_dh_reassign` gives bucket `i` to server
/// `i % n` of the list, so no array is needed and weights never move buckets.
#[derive(Debug, Default, Clone)]
pub struct DestinationHashing;

fn bucket_owner(bucket: usize, n: usize) -> Option<usize> {
    (n > 0).then(|| bucket % n)
}

impl Scheduler for DestinationHashing {
    fn name(&self) -> &'static str {
        "dh"
    }

    fn boxed_clone(&self) -> Box<dyn Scheduler> {
        Box::new(self.clone())
    }

    fn update(&mut self, _dests: &[Arc<DestRt>]) {}

    fn schedule(&self, dests: &[Arc<DestRt>], flow: &FlowKey, _now_ms: u64) -> Option<usize> {
        let i = bucket_owner(hash_32(flow.daddr, TAB_BITS) as usize, dests.len())?;
        dests[i].available().then_some(i)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::Ordering::Relaxed;

    fn pick(s: &mut DestinationHashing, d: &[Arc<DestRt>], daddr: u32) -> usize {
        s.schedule(d, &flow(0x0101_0101, 1000, daddr), 0)
            .unwrap_or(usize::MAX)
    }

    #[test]
    fn buckets_round_robin_weights_ignored() {
        let d = dests(&[5, 1, 1]);
        let mut s = DestinationHashing;
        s.update(&d);
        let owners: Vec<usize> = (0..TAB_SIZE)
            .map(|b| bucket_owner(b, d.len()).unwrap())
            .collect();
        assert_eq!(owners[..7], [0, 1, 2, 0, 1, 2, 0]);
        // 256 = 85 * 3 + 1: the weight-5 server gets one more bucket only by position.
        let count = |k| owners.iter().filter(|&&o| o == k).count();
        assert_eq!((count(0), count(1), count(2)), (86, 85, 85));
    }

    #[test]
    fn kernel_hash_vector() {
        // hash_32(0x0a000001, 8) = 39; 39 % 4 = 3.
        let d = dests(&[1, 1, 1, 1]);
        let mut s = DestinationHashing;
        s.update(&d);
        assert_eq!(pick(&mut s, &d, 0x0a00_0001), 3);
    }

    #[test]
    fn unavailable_means_none() {
        let d = dests(&[1, 1, 1, 1]);
        let mut s = DestinationHashing;
        s.update(&d);
        d[3].weight.store(0, Relaxed);
        assert_eq!(pick(&mut s, &d, 0x0a00_0001), usize::MAX);
        d[3].weight.store(1, Relaxed);
        overload(&d[3], true);
        assert_eq!(pick(&mut s, &d, 0x0a00_0001), usize::MAX);
        assert_eq!(pick(&mut s, &[], 0x0a00_0001), usize::MAX);
    }

    proptest! {
        /// A destination address keeps its server whatever the source and the load.
        #[test]
        fn per_destination_stability(n in 1usize..10, daddr: u32, sources in proptest::collection::vec(any::<u32>(), 1..20)) {
            let d = dests(&vec![1; n]);
            let mut s = DestinationHashing;
            s.update(&d);
            let first = pick(&mut s, &d, daddr);
            prop_assert_eq!(first, hash_32(daddr, 8) as usize % n);
            for (k, saddr) in sources.into_iter().enumerate() {
                load(&d[k % n], k as u32, 3);
                let got = s.schedule(&d, &flow(saddr, k as u16, daddr), 0).unwrap();
                prop_assert_eq!(got, first);
            }
        }
    }
}
