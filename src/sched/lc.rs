//! Least-connection (`lc`), as `ip_vs_lc.c`: the available server with the least overhead
//! `(activeconns << 8) + inactconns`; ties go to the first in list order.
//!
//! IPVS lc ignores the weight's size but still honours weight 0 (quiesced) and OVERLOAD.

use super::Scheduler;
use crate::dest::DestRt;
use crate::packet::FlowKey;
use std::sync::Arc;

#[derive(Debug, Default, Clone)]
pub struct LeastConn;

impl Scheduler for LeastConn {
    fn name(&self) -> &'static str {
        "lc"
    }

    fn boxed_clone(&self) -> Box<dyn Scheduler> {
        Box::new(self.clone())
    }

    /// Stateless: every pick reads the live counters.
    fn update(&mut self, _dests: &[Arc<DestRt>]) {}

    fn schedule(&self, dests: &[Arc<DestRt>], _flow: &FlowKey, _now_ms: u64) -> Option<usize> {
        let mut least: Option<(usize, u64)> = None;
        for (i, d) in dests.iter().enumerate() {
            if !d.available() {
                continue;
            }
            let oh = d.overhead();
            // Strict: an equal overhead later in the list does not displace the earlier one.
            if least.is_none_or(|(_, l)| oh < l) {
                least = Some((i, oh));
            }
        }
        least.map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn pick(d: &[Arc<DestRt>]) -> usize {
        picks(&LeastConn, d, 1)[0]
    }

    #[test]
    fn least_overhead_ignoring_weight() {
        let d = dests(&[1, 100, 1]);
        load(&d[0], 2, 0);
        load(&d[1], 3, 0); // a large weight does not help in lc
        load(&d[2], 1, 300); // 556 > 512: the first wins
        assert_eq!(pick(&d), 0);
        load(&d[2], 1, 255); // 511 < 512
        assert_eq!(pick(&d), 2);
    }

    #[test]
    fn ties_go_to_the_first() {
        let d = dests(&[1, 1, 1]);
        load(&d[0], 1, 0);
        load(&d[1], 0, 256); // same overhead as one active
        load(&d[2], 1, 0);
        assert_eq!(pick(&d), 0);
        assert_eq!(pick(&dests(&[3, 2, 1])), 0);
    }

    #[test]
    fn skips_quiesced_and_overloaded() {
        let d = dests(&[0, 1, 1]);
        load(&d[1], 1, 0);
        load(&d[2], 2, 0);
        assert_eq!(pick(&d), 1);
        overload(&d[1], true);
        assert_eq!(pick(&d), 2);
        overload(&d[2], true);
        assert_eq!(pick(&d), usize::MAX);
        assert_eq!(pick(&[]), usize::MAX);
    }
}
