//! Weighted failover (`fo`), as `ip_vs_fo.c`: every new connection goes to the available
//! server with the highest weight; ties go to the first in list order (the kernel keeps the
//! current pick unless a later weight is strictly higher). Weight 0 (quiesced) and OVERLOAD
//! servers are skipped, so traffic fails over to the next-highest weight when the top server
//! is quiesced, overloaded by its `-x` threshold, or declared dead by the health checks.

use super::Scheduler;
use crate::dest::DestRt;
use crate::packet::FlowKey;
use std::sync::Arc;

#[derive(Debug, Default, Clone)]
pub struct WeightedFailover;

impl Scheduler for WeightedFailover {
    fn name(&self) -> &'static str {
        "fo"
    }

    fn boxed_clone(&self) -> Box<dyn Scheduler> {
        Box::new(self.clone())
    }

    /// Stateless: every pick reads the live weights and flags.
    fn update(&mut self, _dests: &[Arc<DestRt>]) {}

    fn schedule(&self, dests: &[Arc<DestRt>], _flow: &FlowKey, _now_ms: u64) -> Option<usize> {
        let mut best: Option<(usize, u32)> = None;
        for (i, d) in dests.iter().enumerate() {
            // available(): weight > 0 (the kernel's `weight > hw` with hw starting at 0),
            // not OVERLOAD, not dead.
            if !d.available() {
                continue;
            }
            let w = d.weight();
            if best.is_none_or(|(_, hw)| w > hw) {
                best = Some((i, w));
            }
        }
        best.map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::Ordering::Relaxed;

    fn pick(d: &[Arc<DestRt>]) -> usize {
        picks(&WeightedFailover, d, 1)[0]
    }

    #[test]
    fn highest_weight_first_in_list_on_ties() {
        let d = dests(&[2, 5, 3, 5]);
        // Load does not matter: the top server takes everything.
        load(&d[1], 1000, 1000);
        assert_eq!(picks(&WeightedFailover, &d, 5), vec![1; 5]);
        d[1].weight.store(1, Relaxed);
        assert_eq!(pick(&d), 3);
    }

    #[test]
    fn fails_over_past_quiesced_and_overloaded() {
        let d = dests(&[1, 3, 2]);
        assert_eq!(pick(&d), 1);
        overload(&d[1], true);
        assert_eq!(pick(&d), 2);
        d[2].weight.store(0, Relaxed);
        assert_eq!(pick(&d), 0);
        overload(&d[0], true);
        assert_eq!(pick(&d), usize::MAX);
        overload(&d[1], false);
        assert_eq!(pick(&d), 1);
        assert_eq!(pick(&dests(&[0, 0])), usize::MAX);
        assert_eq!(pick(&[]), usize::MAX);
    }

    proptest! {
        /// The pick is an available server of maximal weight, and no earlier one has it.
        #[test]
        fn first_maximal_available(spec in proptest::collection::vec((0u32..6, proptest::bool::weighted(0.3)), 0..10)) {
            let weights: Vec<u32> = spec.iter().map(|s| s.0).collect();
            let d = dests(&weights);
            for (dd, &(_, o)) in d.iter().zip(&spec) {
                overload(dd, o);
            }
            let eligible: Vec<usize> = (0..spec.len()).filter(|&k| spec[k].0 > 0 && !spec[k].1).collect();
            let got = pick(&d);
            match eligible.iter().map(|&k| spec[k].0).max() {
                None => prop_assert_eq!(got, usize::MAX),
                Some(top) => {
                    let first = eligible.iter().copied().find(|&k| spec[k].0 == top).unwrap();
                    prop_assert_eq!(got, first);
                }
            }
        }
    }
}
