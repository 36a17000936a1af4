//! Never queue (`nq`), as `ip_vs_nq.c`: the first available server with no active
//! connection (an idle server takes the job at once); if none is idle, shortest expected
//! delay (`(activeconns + 1) / weight`, ties to the first).

use super::sed::expected_delay;
use super::wlc::weighted_least;
use super::Scheduler;
use crate::dest::DestRt;
use crate::packet::FlowKey;
use std::sync::Arc;

#[derive(Debug, Default, Clone)]
pub struct NeverQueue;

impl Scheduler for NeverQueue {
    fn name(&self) -> &'static str {
        "nq"
    }

    fn boxed_clone(&self) -> Box<dyn Scheduler> {
        Box::new(self.clone())
    }

    /// Stateless: every pick reads the live counters.
    fn update(&mut self, _dests: &[Arc<DestRt>]) {}

    fn schedule(&self, dests: &[Arc<DestRt>], _flow: &FlowKey, _now_ms: u64) -> Option<usize> {
        // IPVS does both in one pass, returning at the first idle server; two passes choose
        // the same server.
        dests
            .iter()
            .position(|d| d.available() && d.active() == 0)
            .or_else(|| weighted_least(dests, expected_delay))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn pick(d: &[Arc<DestRt>]) -> usize {
        picks(&NeverQueue, d, 1)[0]
    }

    #[test]
    fn first_idle_wins_regardless_of_weight() {
        let d = dests(&[10, 1, 1]);
        load(&d[0], 1, 0);
        load(&d[1], 0, 500); // inactive connections do not make a server busy
        assert_eq!(pick(&d), 1);
    }

    #[test]
    fn otherwise_shortest_expected_delay() {
        let d = dests(&[1, 3, 1]);
        load(&d[0], 1, 0); // 2/1
        load(&d[1], 2, 0); // 3/3
        load(&d[2], 1, 0); // 2/1
        assert_eq!(pick(&d), 1);
        load(&d[1], 5, 0); // 6/3 = 2/1: tie -> first
        assert_eq!(pick(&d), 0);
    }

    #[test]
    fn idle_but_unavailable_is_skipped() {
        let d = dests(&[0, 1, 1]);
        load(&d[2], 4, 0);
        overload(&d[1], true);
        // Idle servers 0 (quiesced) and 1 (overloaded) are skipped; 2 is the only choice.
        assert_eq!(pick(&d), 2);
        overload(&d[2], true);
        assert_eq!(pick(&d), usize::MAX);
        assert_eq!(pick(&[]), usize::MAX);
    }
}
