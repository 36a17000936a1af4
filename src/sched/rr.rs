//! Round robin (`rr`), as `ip_vs_rr.c`: continue after the last chosen server, skipping
//! quiesced (weight 0) and overloaded ones.

use super::StatefulScheduler;
use crate::dest::DestRt;
use crate::packet::FlowKey;
use std::sync::Arc;

#[derive(Debug, Default, Clone)]
pub struct RoundRobin {
    /// The server chosen last: its index and its identity (address of its `DestRt`, only
    /// compared, never dereferenced), so that list edits keep the position as IPVS does (it
    /// keeps a pointer into the list) while a pick stays O(1). `None`: start from the head.
    last: Option<(usize, usize)>,
}

fn ident(d: &Arc<DestRt>) -> usize {
    Arc::as_ptr(d) as usize
}

impl StatefulScheduler for RoundRobin {
    fn name(&self) -> &'static str {
        "rr"
    }

    fn update(&mut self, dests: &[Arc<DestRt>]) {
        // ip_vs_rr_del_dest moves the pointer back when its server goes; we approximate by
        // restarting from the head only when the last server left the list.
        if let Some((_, id)) = self.last {
            self.last = dests.iter().position(|d| ident(d) == id).map(|i| (i, id));
        }
    }

    fn schedule(&mut self, dests: &[Arc<DestRt>], _flow: &FlowKey, _now_ms: u64) -> Option<usize> {
        let n = dests.len();
        if n == 0 {
            return None;
        }
        let start = match self.last {
            // The list is the one `update` saw, so the index is normally still right.
            Some((i, id)) if dests.get(i).is_some_and(|d| ident(d) == id) => i + 1,
            Some((_, id)) => dests
                .iter()
                .position(|d| ident(d) == id)
                .map_or(0, |i| i + 1),
            None => 0,
        };
        let pick = (0..n)
            .map(|k| (start + k) % n)
            .find(|&i| dests[i].available())?;
        self.last = Some((pick, ident(&dests[pick])));
        Some(pick)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    #[test]
    fn cycles_and_skips_quiesced() {
        let d = dests(&[1, 0, 3]);
        let mut s = RoundRobin::default();
        assert_eq!(picks_mut(&mut s, &d, 5), vec![0, 2, 0, 2, 0]);
    }

    #[test]
    fn none_when_all_quiesced_or_empty() {
        let mut s = RoundRobin::default();
        assert_eq!(s.schedule(&[], &FlowKey::default(), 0), None);
        let d = dests(&[0, 0]);
        assert_eq!(s.schedule(&d, &FlowKey::default(), 0), None);
    }

    #[test]
    fn keeps_position_across_additions() {
        let mut d = dests(&[1, 1, 1]);
        let mut s = RoundRobin::default();
        assert_eq!(picks_mut(&mut s, &d, 2), vec![0, 1]);
        // IPVS adds new servers at the list head.
        d.insert(0, dests(&[1])[0].clone());
        s.update(&d);
        assert_eq!(picks_mut(&mut s, &d, 3), vec![3, 0, 1]);
    }
}
