//! Shortest expected delay (`sed`), as `ip_vs_sed.c`: the available server minimizing
//! `(activeconns + 1) / weight` — the delay the *new* job would see (Weinrib & Shenker).
//! Inactive connections do not count. Compared without division, ties to the first.

use super::wlc::weighted_least;
use super::Scheduler;
use crate::dest::DestRt;
use crate::packet::FlowKey;
use std::sync::Arc;

/// sed/nq cost: active connections plus the incoming one (`ip_vs_sed_dest_overhead`).
pub(super) fn expected_delay(d: &DestRt) -> u64 {
    d.active() as u64 + 1
}

#[derive(Debug, Default, Clone)]
pub struct ShortestExpectedDelay;

impl Scheduler for ShortestExpectedDelay {
    fn name(&self) -> &'static str {
        "sed"
    }

    fn boxed_clone(&self) -> Box<dyn Scheduler> {
        Box::new(self.clone())
    }

    /// Stateless: every pick reads the live counters.
    fn update(&mut self, _dests: &[Arc<DestRt>]) {}

    fn schedule(&self, dests: &[Arc<DestRt>], _flow: &FlowKey, _now_ms: u64) -> Option<usize> {
        weighted_least(dests, expected_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn pick(d: &[Arc<DestRt>]) -> usize {
        picks(&ShortestExpectedDelay, d, 1)[0]
    }

    #[test]
    fn counts_the_incoming_job() {
        // wlc would pick the idle weight-1 server (0/1 < 1/3); sed compares (0+1)/1 = 1
        // with (1+1)/3 = 0.67 and sends the job to the fast, busier one.
        let d = dests(&[1, 3]);
        load(&d[1], 1, 0);
        assert_eq!(pick(&d), 1);
        load(&d[1], 2, 0); // 3/3 = 1/1: tie -> first
        assert_eq!(pick(&d), 0);
    }

    #[test]
    fn ignores_inactive() {
        let d = dests(&[1, 1]);
        load(&d[0], 0, 1000);
        assert_eq!(pick(&d), 0);
    }

    #[test]
    fn skips_quiesced_and_overloaded() {
        let d = dests(&[0, 1, 2]);
        load(&d[2], 1, 0);
        assert_eq!(pick(&d), 1); // 1/1 vs 2/2: tie -> first available
        overload(&d[1], true);
        assert_eq!(pick(&d), 2);
        d[2].weight.store(0, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(pick(&d), usize::MAX);
        assert_eq!(pick(&[]), usize::MAX);
    }
}
