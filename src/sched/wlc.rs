//! Weighted least-connection (`wlc`, the IPVS default), as `ip_vs_wlc.c`: the available
//! server with the least `overhead / weight`, where overhead = `(activeconns << 8) +
//! inactconns`; ties go to the first in list order.
//!
//! The comparison is done without division, as IPVS does: `d` replaces the current `least`
//! only when `overhead(least) * weight(d) > overhead(d) * weight(least)` (strict, so the
//! earlier server keeps a tie).

use super::Scheduler;
use crate::dest::DestRt;
use crate::packet::FlowKey;
use std::sync::Arc;

/// The first available server (weight > 0, not OVERLOAD) minimizing `cost(d) / weight(d)`.
///
/// Shared by wlc, sed and nq (with their own cost) and by lblc/lblcr for their global pick
/// (`__ip_vs_lblc_schedule` is this very loop). Products are taken in 128 bits: IPVS uses
/// s64, which is exact for weights <= 65535; 128 bits keeps that true for any u32 weight.
pub(super) fn weighted_least(
    dests: &[Arc<DestRt>],
    cost: impl Fn(&DestRt) -> u64,
) -> Option<usize> {
    let mut least: Option<(usize, u128, u128)> = None; // (index, cost, weight)
    for (i, d) in dests.iter().enumerate() {
        if !d.available() {
            continue;
        }
        let (c, w) = (cost(d) as u128, d.weight() as u128);
        match least {
            // Only a strictly lower cost/weight displaces the earlier server.
            Some((_, lc, lw)) if lc * w <= c * lw => {}
            _ => least = Some((i, c, w)),
        }
    }
    least.map(|(i, _, _)| i)
}

#[derive(Debug, Default, Clone)]
pub struct WeightedLeastConn;

impl Scheduler for WeightedLeastConn {
    fn name(&self) -> &'static str {
        "wlc"
    }

    fn boxed_clone(&self) -> Box<dyn Scheduler> {
        Box::new(self.clone())
    }

    /// Stateless: every pick reads the live counters.
    fn update(&mut self, _dests: &[Arc<DestRt>]) {}

    fn schedule(&self, dests: &[Arc<DestRt>], _flow: &FlowKey, _now_ms: u64) -> Option<usize> {
        weighted_least(dests, DestRt::overhead)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use proptest::prelude::*;
    use std::cmp::Ordering;

    fn pick(d: &[Arc<DestRt>]) -> usize {
        picks(&WeightedLeastConn, d, 1)[0]
    }

    #[test]
    fn least_overhead_per_weight() {
        let d = dests(&[1, 2, 3]);
        // overheads 256, 256, 1024: per weight 256, 128, 341 -> the second.
        load(&d[0], 1, 0);
        load(&d[1], 1, 0);
        load(&d[2], 4, 0);
        assert_eq!(pick(&d), 1);
        // Inactive connections count 1/256 of an active one.
        load(&d[1], 1, 200); // (256 + 200) / 2 = 228 < 256: still the second
        assert_eq!(pick(&d), 1);
        load(&d[1], 1, 257); // 513 / 2 = 256.5 > 256: now the first
        assert_eq!(pick(&d), 0);
    }

    #[test]
    fn ties_go_to_the_first() {
        let d = dests(&[2, 1, 2]);
        load(&d[0], 2, 0);
        load(&d[1], 1, 0);
        load(&d[2], 2, 0);
        assert_eq!(pick(&d), 0);
        let d = dests(&[1, 1, 1]);
        assert_eq!(pick(&d), 0);
    }

    #[test]
    fn skips_quiesced_and_overloaded() {
        let d = dests(&[0, 1, 1]);
        load(&d[1], 5, 0);
        load(&d[2], 6, 0);
        // The idle weight-0 server is never chosen.
        assert_eq!(pick(&d), 1);
        overload(&d[1], true);
        assert_eq!(pick(&d), 2);
        overload(&d[2], true);
        assert_eq!(pick(&d), usize::MAX);
        assert_eq!(picks(&WeightedLeastConn, &[], 1), vec![usize::MAX]);
    }

    /// Server description for the property test: (weight, active, inactive, overloaded).
    fn servers() -> impl Strategy<Value = Vec<(u32, u32, u32, bool)>> {
        proptest::collection::vec(
            (
                prop_oneof![Just(0u32), 1u32..4, 1u32..65536],
                0u32..2000,
                0u32..2000,
                proptest::bool::weighted(0.2),
            ),
            0..10,
        )
    }

    proptest! {
        /// The pick minimizes overhead/weight over the available servers and is the first
        /// such, checked by comparing fractions exactly (cross products in u128, never
        /// rounding) against every server.
        #[test]
        fn picks_the_first_minimum(spec in servers()) {
            let weights: Vec<u32> = spec.iter().map(|s| s.0).collect();
            let d = dests(&weights);
            for (dd, &(_, a, i, o)) in d.iter().zip(&spec) {
                load(dd, a, i);
                overload(dd, o);
            }
            let frac = |k: usize| (((spec[k].1 as u128) << 8) + spec[k].2 as u128, spec[k].0 as u128);
            let cmp = |x: (u128, u128), y: (u128, u128)| (x.0 * y.1).cmp(&(y.0 * x.1));
            let eligible: Vec<usize> =
                (0..spec.len()).filter(|&k| spec[k].0 > 0 && !spec[k].3).collect();
            let got = pick(&d);
            if eligible.is_empty() {
                prop_assert_eq!(got, usize::MAX);
            } else {
                prop_assert!(eligible.contains(&got));
                for &k in &eligible {
                    let c = cmp(frac(got), frac(k));
                    prop_assert!(c != Ordering::Greater, "{} beats pick {}", k, got);
                    if k < got {
                        prop_assert!(c == Ordering::Less, "{} ties and comes first", k);
                    }
                }
            }
        }
    }
}
