//! Overflow-connection (`ovf`), as `ip_vs_ovf.c`: new connections go to the available
//! server with the highest weight whose active connections do not exceed its weight
//! (`activeconns <= weight`); once it has more, they overflow to the next-highest weight.
//! Ties go to the first in list order (a later server must have a strictly higher weight).
//! Weight 0 and OVERLOAD servers are skipped. Only active (TCP ESTABLISHED) connections
//! count, so, as the kernel notes, UDP services (all inactive) never overflow.

use super::Scheduler;
use crate::dest::DestRt;
use crate::packet::FlowKey;
use std::sync::Arc;

#[derive(Debug, Default, Clone)]
pub struct OverflowConn;

impl Scheduler for OverflowConn {
    fn name(&self) -> &'static str {
        "ovf"
    }

    fn boxed_clone(&self) -> Box<dyn Scheduler> {
        Box::new(self.clone())
    }

    /// Stateless: every pick reads the live weights and counters.
    fn update(&mut self, _dests: &[Arc<DestRt>]) {}

    fn schedule(&self, dests: &[Arc<DestRt>], _flow: &FlowKey, _now_ms: u64) -> Option<usize> {
        let mut best: Option<(usize, u32)> = None;
        for (i, d) in dests.iter().enumerate() {
            let w = d.weight();
            // The kernel skips OVERLOAD, activeconns > weight and weight 0; available()
            // covers weight 0 and OVERLOAD (and dead servers).
            if !d.available() || d.active() > w {
                continue;
            }
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
        picks(&OverflowConn, d, 1)[0]
    }

    #[test]
    fn overflows_when_active_exceeds_weight() {
        let d = dests(&[2, 4, 3]);
        assert_eq!(pick(&d), 1);
        // active == weight is still within the limit.
        load(&d[1], 4, 100);
        assert_eq!(pick(&d), 1);
        load(&d[1], 5, 0);
        assert_eq!(pick(&d), 2);
        load(&d[2], 4, 0);
        assert_eq!(pick(&d), 0);
        load(&d[0], 3, 0);
        assert_eq!(pick(&d), usize::MAX);
        // Inactive connections never count.
        load(&d[0], 0, 1_000_000);
        assert_eq!(pick(&d), 0);
    }

    #[test]
    fn ties_quiesced_and_overloaded() {
        let d = dests(&[3, 3, 1]);
        assert_eq!(pick(&d), 0);
        load(&d[0], 4, 0);
        assert_eq!(pick(&d), 1);
        overload(&d[1], true);
        assert_eq!(pick(&d), 2);
        d[2].weight.store(0, Relaxed);
        assert_eq!(pick(&d), usize::MAX);
        assert_eq!(pick(&[]), usize::MAX);
    }

    proptest! {
        /// The pick is the first server of maximal weight among those available with
        /// activeconns <= weight.
        #[test]
        fn first_maximal_within_limit(
            spec in proptest::collection::vec((0u32..6, 0u32..8, proptest::bool::weighted(0.2)), 0..10),
        ) {
            let weights: Vec<u32> = spec.iter().map(|s| s.0).collect();
            let d = dests(&weights);
            for (dd, &(_, a, o)) in d.iter().zip(&spec) {
                load(dd, a, 0);
                overload(dd, o);
            }
            let eligible: Vec<usize> = (0..spec.len())
                .filter(|&k| spec[k].0 > 0 && !spec[k].2 && spec[k].1 <= spec[k].0)
                .collect();
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
