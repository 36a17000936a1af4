//! Power of two choices (`twos`), as `ip_vs_twos.c`: two servers are drawn at random, each
//! with probability by weight, and the one with the lower `overhead / weight` wins
//! (overhead = `(activeconns << 8) + inactconns`); on a tie the first draw wins.
//!
//! The draws are the kernel's: `total` = sum of the available servers' weights, plus 1;
//! `r = random % total` (so `0..=sum`); walking the list, each available server's weight is
//! subtracted from `r` and the first server where `r <= 0` is the choice. The first
//! available server therefore has `weight + 1` chances in `sum + 1` and every other exactly
//! `weight`. The second draw replaces the first only if `w2 * overhead1 > w1 * overhead2`.
//!
//! The random source is per thread (each worker is a thread): a SplitMix64 state in a
//! thread-local cell, seeded once per thread from std's per-thread random keys, so a pick
//! takes no lock, shares no cache line and allocates nothing.

use super::Scheduler;
use crate::dest::DestRt;
use crate::packet::FlowKey;
use std::cell::Cell;
use std::sync::Arc;

thread_local! {
    /// SplitMix64 state; 0 = not seeded yet on this thread.
    static RNG: Cell<u64> = const { Cell::new(0) };
}

/// The next 32 random bits of this thread's generator (the kernel's `prandom_u32`/
/// `get_random_u32` role; only uniformity matters here, not unpredictability).
fn random_u32() -> u32 {
    RNG.with(|s| {
        let mut x = s.get();
        if x == 0 {
            use std::hash::{BuildHasher, Hasher};
            // RandomState's keys come from the OS once per thread; no allocation.
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_usize(s as *const _ as usize);
            x = h.finish() | 1;
        }
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        s.set(x);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 32) as u32
    })
}

/// The kernel's pick given its two random numbers `rand1`, `rand2` (reduced mod `sum + 1`).
fn pick_two(dests: &[Arc<DestRt>], rand1: u32, rand2: u32) -> Option<usize> {
    let total: u64 = dests
        .iter()
        .filter(|d| d.available())
        .map(|d| d.weight() as u64)
        .sum();
    if total == 0 {
        return None;
    }
    let total = total + 1;
    let (mut r1, mut r2) = ((rand1 as u64 % total) as i64, (rand2 as u64 % total) as i64);
    // (index, weight) of each draw's server, once found.
    let mut c1: Option<(usize, u64)> = None;
    let mut c2: Option<(usize, u64)> = None;
    for (i, d) in dests.iter().enumerate() {
        if !d.available() {
            continue;
        }
        let w = d.weight() as u64;
        r1 -= w as i64;
        r2 -= w as i64;
        if r1 <= 0 && c1.is_none() {
            c1 = Some((i, w));
        }
        if r2 <= 0 && c2.is_none() {
            c2 = Some((i, w));
        }
        if c1.is_some() && c2.is_some() {
            break;
        }
    }
    // r <= sum, so both draws land on a server by the end of the walk (unless a weight
    // changed under the walk; then the kernel keeps its last available server as choice1,
    // and xvs the last one it saw too).
    let (i1, w1) = c1.or_else(|| {
        dests
            .iter()
            .rposition(|d| d.available())
            .map(|i| (i, dests[i].weight() as u64))
    })?;
    match c2 {
        Some((i2, w2))
            if (w2 as u128) * (dests[i1].overhead() as u128)
                > (w1 as u128) * (dests[i2].overhead() as u128) =>
        {
            Some(i2)
        }
        _ => Some(i1),
    }
}

#[derive(Debug, Default, Clone)]
pub struct TwoChoices;

impl Scheduler for TwoChoices {
    fn name(&self) -> &'static str {
        "twos"
    }

    fn boxed_clone(&self) -> Box<dyn Scheduler> {
        Box::new(self.clone())
    }

    /// Stateless: every pick reads the live weights and counters.
    fn update(&mut self, _dests: &[Arc<DestRt>]) {}

    fn schedule(&self, dests: &[Arc<DestRt>], _flow: &FlowKey, _now_ms: u64) -> Option<usize> {
        pick_two(dests, random_u32(), random_u32())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::Ordering::Relaxed;

    /// Which server each draw `r` in `0..=sum` lands on (both draws equal: no comparison).
    fn landing(d: &[Arc<DestRt>]) -> Vec<usize> {
        let sum: u32 = d.iter().filter(|d| d.available()).map(|d| d.weight()).sum();
        (0..=sum).map(|r| pick_two(d, r, r).unwrap()).collect()
    }

    #[test]
    fn draws_are_weight_proportional_as_in_the_kernel() {
        let d = dests(&[3, 0, 2, 5]);
        // r = 0..=3 -> server 0 (weight + 1), 4..=5 -> 2, 6..=10 -> 3; weight 0 never.
        assert_eq!(landing(&d), vec![0, 0, 0, 0, 2, 2, 3, 3, 3, 3, 3]);
        overload(&d[0], true);
        // The first *available* server gets the extra chance.
        assert_eq!(landing(&d), vec![2, 2, 2, 3, 3, 3, 3, 3]);
        // Random values are reduced mod sum + 1.
        assert_eq!(pick_two(&d, 8, 8), Some(2));
    }

    #[test]
    fn lower_overhead_per_weight_wins_ties_keep_the_first_draw() {
        let d = dests(&[1, 2]);
        // Draw 1 -> server 0 (r = 0), draw 2 -> server 1 (r = 2).
        assert_eq!(pick_two(&d, 0, 2), Some(0));
        load(&d[0], 1, 0); // 256 / 1 vs 0 / 2
        assert_eq!(pick_two(&d, 0, 2), Some(1));
        load(&d[1], 2, 0); // 256 / 1 vs 512 / 2: tie, first draw kept
        assert_eq!(pick_two(&d, 0, 2), Some(0));
        assert_eq!(pick_two(&d, 2, 0), Some(1));
        load(&d[1], 2, 1); // 256 / 1 vs 513 / 2: server 0 wins from either side
        assert_eq!(pick_two(&d, 0, 2), Some(0));
        assert_eq!(pick_two(&d, 2, 0), Some(0));
    }

    #[test]
    fn none_when_nothing_is_available() {
        assert_eq!(pick_two(&[], 5, 7), None);
        let d = dests(&[0, 2]);
        overload(&d[1], true);
        assert_eq!(pick_two(&d, 5, 7), None);
        assert_eq!(picks(&TwoChoices, &d, 3), vec![usize::MAX; 3]);
        overload(&d[1], false);
        d[1].weight.store(0, Relaxed);
        assert_eq!(picks(&TwoChoices, &d, 3), vec![usize::MAX; 3]);
    }

    /// The real random source: every server is reached with idle servers (the first draw
    /// wins every tie), in proportion to the weights within a loose statistical bound
    /// (20000 draws: a share's standard deviation is about 0.003, the bound 0.03).
    #[test]
    fn random_picks_follow_the_weights() {
        let d = dests(&[1, 2, 4]);
        let got = picks(&TwoChoices, &d, 20_000);
        let share = |i: usize| got.iter().filter(|&&g| g == i).count() as f64 / 20_000.0;
        // r in 0..=7: server 0 has 2 of 8 values, server 1 has 2, server 2 has 4.
        for (i, want) in [(0, 0.25), (1, 0.25), (2, 0.5)] {
            assert!((share(i) - want).abs() < 0.03, "server {i}: {}", share(i));
        }
    }

    #[test]
    fn threads_draw_different_sequences() {
        let d = dests(&vec![1; 64]);
        let seq = || picks(&TwoChoices, &d, 32);
        let here = seq();
        let there = std::thread::scope(|s| s.spawn(seq).join().unwrap());
        assert_ne!(here, there);
    }

    proptest! {
        /// Whatever the draws, the pick is one of the two draws' servers, available, and
        /// never a worse overhead/weight than the first draw.
        #[test]
        fn pick_is_the_better_draw(
            spec in proptest::collection::vec((0u32..5, 0u32..50, proptest::bool::weighted(0.2)), 1..8),
            r1: u32,
            r2: u32,
        ) {
            let weights: Vec<u32> = spec.iter().map(|s| s.0).collect();
            let d = dests(&weights);
            for (dd, &(_, a, o)) in d.iter().zip(&spec) {
                load(dd, a, 0);
                overload(dd, o);
            }
            let got = pick_two(&d, r1, r2);
            let a = pick_two(&d, r1, r1);
            let b = pick_two(&d, r2, r2);
            match got {
                None => prop_assert!(d.iter().all(|x| !x.available())),
                Some(g) => {
                    prop_assert!(d[g].available());
                    prop_assert!(Some(g) == a || Some(g) == b);
                    let (a, b) = (a.unwrap(), b.unwrap());
                    let cost = |k: usize| (d[k].overhead() as u128, d[k].weight() as u128);
                    let (ca, cg) = (cost(a), cost(g));
                    prop_assert!(cg.0 * ca.1 <= ca.0 * cg.1);
                    if g == b && a != b {
                        prop_assert!(cg.0 * ca.1 < ca.0 * cg.1, "tie must keep draw 1");
                    }
                }
            }
        }
    }
}
