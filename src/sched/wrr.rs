//! Weighted round robin (`wrr`), as `ip_vs_wrr.c`.
//!
//! `di` = gcd of the positive weights, `mw` = max weight - (di - 1), current weight `cw`
//! starts at `mw`; walk on from the last chosen server and take the first with
//! `weight >= cw`; each wrap past the list end lowers `cw` by `di`, back to `mw` at <= 0.

use super::StatefulScheduler;
use crate::dest::DestRt;
use crate::packet::FlowKey;
use std::sync::Arc;

#[derive(Debug, Default, Clone)]
pub struct WeightedRoundRobin {
    /// Index of the last chosen server; `None` = before the list head (IPVS's `cl` at head).
    pos: Option<usize>,
    cw: i64,
    mw: i64,
    di: i64,
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl WeightedRoundRobin {
    fn recompute(&mut self, dests: &[Arc<DestRt>]) {
        let g = dests
            .iter()
            .map(|d| d.weight())
            .filter(|&w| w > 0)
            .fold(0, gcd);
        self.di = if g == 0 { 1 } else { g as i64 };
        let max = dests.iter().map(|d| d.weight()).max().unwrap_or(0) as i64;
        self.mw = max - (self.di - 1);
    }
}

impl StatefulScheduler for WeightedRoundRobin {
    fn name(&self) -> &'static str {
        "wrr"
    }

    fn update(&mut self, dests: &[Arc<DestRt>]) {
        // ip_vs_wrr_dest_changed: restart from the head, clamp or realign cw.
        self.recompute(dests);
        self.pos = None;
        if self.cw > self.mw || self.cw == 0 {
            self.cw = self.mw;
        } else if self.di > 1 {
            self.cw = (self.cw / self.di) * self.di + 1;
        }
    }

    fn schedule(&mut self, dests: &[Arc<DestRt>], _flow: &FlowKey, _now_ms: u64) -> Option<usize> {
        let n = dests.len();
        if n == 0 {
            return None;
        }
        if self.di == 0 {
            // First use without an update() call.
            self.update(dests);
        }
        // IPVS bounds the walk: if a full pass at cw = mw... finds nothing, no server is
        // eligible. Each wrap lowers cw by di, so mw/di + 1 passes cover every cw level.
        let max_steps = n * ((self.mw.max(1) / self.di) as usize + 2);
        let mut i = self.pos;
        let mut wrapped_without_pick = 0;
        for _ in 0..max_steps {
            let next = match i {
                None => 0,
                Some(k) if k + 1 < n => k + 1,
                Some(_) => {
                    // Wrapped past the end: lower the current weight.
                    self.cw -= self.di;
                    if self.cw <= 0 {
                        self.cw = self.mw;
                        wrapped_without_pick += 1;
                        if self.mw <= 0 || wrapped_without_pick > 1 {
                            return None;
                        }
                    }
                    0
                }
            };
            i = Some(next);
            let d = &dests[next];
            if !d.overloaded() && d.weight() > 0 && d.weight() as i64 >= self.cw {
                self.pos = i;
                return Some(next);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ipvs_test_vector() {
        // The IPVS test vector: A=4, B=3, C=2 give A A B A B C A B C, then repeat.
        let d = dests(&[4, 3, 2]);
        let mut s = WeightedRoundRobin::default();
        s.update(&d);
        let seq = picks_mut(&mut s, &d, 18);
        let one = vec![0, 0, 1, 0, 1, 2, 0, 1, 2];
        assert_eq!(seq[..9], one[..]);
        assert_eq!(seq[9..], one[..]);
    }

    #[test]
    fn weights_2_5_5() {
        // The demo's configuration: a period of 12 with 2/5/5 picks.
        let d = dests(&[2, 5, 5]);
        let mut s = WeightedRoundRobin::default();
        s.update(&d);
        let seq = picks_mut(&mut s, &d, 12);
        assert_eq!(seq, vec![1, 2, 1, 2, 1, 2, 0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn gcd_weights() {
        // gcd 2: behaves like 2:1 with di steps.
        let d = dests(&[4, 2]);
        let mut s = WeightedRoundRobin::default();
        s.update(&d);
        assert_eq!(picks_mut(&mut s, &d, 6), vec![0, 0, 1, 0, 0, 1]);
    }

    #[test]
    fn quiesced_and_empty() {
        let d = dests(&[0, 3, 0]);
        let mut s = WeightedRoundRobin::default();
        s.update(&d);
        assert_eq!(picks_mut(&mut s, &d, 3), vec![1, 1, 1]);
        let d = dests(&[0, 0]);
        s.update(&d);
        assert_eq!(picks_mut(&mut s, &d, 2), vec![usize::MAX, usize::MAX]);
    }

    #[test]
    fn weight_change_mid_sequence_restarts_from_head() {
        let d = dests(&[4, 3, 2]);
        let mut s = WeightedRoundRobin::default();
        s.update(&d);
        assert_eq!(picks_mut(&mut s, &d, 4), vec![0, 0, 1, 0]); // cw is now 3
        d[2].weight.store(3, std::sync::atomic::Ordering::Relaxed);
        s.update(&d);
        // mw = 4, cw stays 3 (di = 1), walk restarts at the head: A(4) B(3) C(3).
        assert_eq!(picks_mut(&mut s, &d, 3), vec![0, 1, 2]);
    }

    proptest! {
        /// Over one whole period (sum of weights / gcd * gcd ...) each server gets exactly its
        /// weight share: counts over sum(weights) picks equal the weights.
        #[test]
        fn exact_counts_over_a_period(weights in proptest::collection::vec(0u32..20, 1..8)) {
            let d = dests(&weights);
            let mut s = WeightedRoundRobin::default();
            s.update(&d);
            let total: u32 = weights.iter().sum();
            let seq = picks_mut(&mut s, &d, total as usize * 2);
            if total == 0 {
                prop_assert!(seq.iter().all(|&i| i == usize::MAX));
            } else {
                for (i, &w) in weights.iter().enumerate() {
                    let c = seq.iter().filter(|&&p| p == i).count() as u32;
                    prop_assert_eq!(c, 2 * w, "server {} weight {}", i, w);
                }
            }
        }
    }
}
