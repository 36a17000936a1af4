//! Schedulers: one per file behind one trait, chosen by name as with `ipvsadm -s`.
//!
//! Semantics follow Linux IPVS (`net/netfilter/ipvs/ip_vs_*.c`, each file names its source).

mod dh;
mod fo;
mod lblc;
mod lblcr;
mod lc;
mod mh;
mod nq;
mod ovf;
mod rr;
mod sed;
mod sh;
mod twos;
mod wlc;
mod wrr;

pub use dh::DestinationHashing;
pub use fo::WeightedFailover;
pub use lblc::LocalityLeastConn;
pub use lblcr::LocalityLeastConnReplicated;
pub use lc::LeastConn;
pub use mh::MaglevHashing;
pub use nq::NeverQueue;
pub use ovf::OverflowConn;
pub use rr::RoundRobin;
pub use sed::ShortestExpectedDelay;
pub use sh::SourceHashing;
pub use twos::TwoChoices;
pub use wlc::WeightedLeastConn;
pub use wrr::WeightedRoundRobin;

use crate::dest::DestRt;
use crate::packet::FlowKey;
use std::sync::{Arc, Mutex};

/// A connection scheduler for one virtual service.
///
/// `dests` is the service's server list in IPVS list order. A scheduler is built (or
/// copied and `update`d) by the control thread for each new list or weight change and then
/// published together with that list (`service::SchedSet`), so `schedule` always sees the
/// list its tables were built from.
///
/// `schedule` takes `&self`: workers pick concurrently. lc, wlc, sed, nq, sh and dh read
/// only the live load counters and tables fixed at `update`, so their picks take no lock,
/// as in IPVS. rr, wrr, lblc and lblcr move their own state on every pick; IPVS serialises
/// those with a per-service lock, and so does `Locked` here.
pub trait Scheduler: Send + Sync {
    /// The ipvsadm name (`rr`, `wrr`, ...).
    fn name(&self) -> &'static str;
    /// IPVS's add_dest/del_dest/upd_dest hooks folded into one: the list or a weight changed.
    /// Called on a private copy, off the data path.
    fn update(&mut self, dests: &[Arc<DestRt>]);
    /// Picks the server for a new connection (index into `dests`), `None` if none is available.
    /// Runs once per new connection: must not allocate (beyond tables sized at `update`);
    /// O(servers) at most. `now_ms` is a monotonic millisecond clock.
    fn schedule(&self, dests: &[Arc<DestRt>], flow: &FlowKey, now_ms: u64) -> Option<usize>;
    /// Periodic housekeeping (lblc/lblcr table expiry), called about once a second by the
    /// daemon, off the packet path.
    fn expire(&self, _now_ms: u64) {}
    /// A copy carrying the current state (wrr's position and weight, lblc's table), which
    /// the control thread then `update`s for a new list.
    fn boxed_clone(&self) -> Box<dyn Scheduler>;
    /// Whether a pick takes a lock (`Locked`); IPVS takes none for lc wlc sed nq sh dh.
    fn takes_lock(&self) -> bool {
        false
    }
}

/// A scheduler whose pick changes its own state (rr, wrr, lblc, lblcr). Wrapped in `Locked`
/// to become a `Scheduler`.
pub trait StatefulScheduler: Send + Clone + 'static {
    fn name(&self) -> &'static str;
    fn update(&mut self, dests: &[Arc<DestRt>]);
    fn schedule(&mut self, dests: &[Arc<DestRt>], flow: &FlowKey, now_ms: u64) -> Option<usize>;
    fn expire(&mut self, _now_ms: u64) {}
}

/// IPVS's per-service scheduler lock (`svc->sched_lock`) around a stateful scheduler: taken
/// for one pick of a new connection, never for packets of existing connections.
pub struct Locked<S>(Mutex<S>);

impl<S> Locked<S> {
    pub fn new(s: S) -> Self {
        Locked(Mutex::new(s))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, S> {
        // A poisoned lock means a pick panicked; the state is still usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<S: StatefulScheduler> Scheduler for Locked<S> {
    fn name(&self) -> &'static str {
        self.lock().name()
    }

    fn update(&mut self, dests: &[Arc<DestRt>]) {
        self.0
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .update(dests)
    }

    fn schedule(&self, dests: &[Arc<DestRt>], flow: &FlowKey, now_ms: u64) -> Option<usize> {
        self.lock().schedule(dests, flow, now_ms)
    }

    fn expire(&self, now_ms: u64) {
        self.lock().expire(now_ms)
    }

    fn boxed_clone(&self) -> Box<dyn Scheduler> {
        Box::new(Locked::new(self.lock().clone()))
    }

    fn takes_lock(&self) -> bool {
        true
    }
}

/// Scheduler flags (`-b`), as IPVS defines them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedFlags {
    /// `sh-fallback`: an unavailable bucket falls through to the next ones.
    pub fallback: bool,
    /// `sh-port`: hash the source port too.
    pub port: bool,
}

impl SchedFlags {
    /// Parses ipvsadm's `-b` words (`sh-fallback`, `sh-port`; `flag-1`/`flag-2` aliases).
    pub fn parse(words: &[String]) -> Result<Self, String> {
        let mut f = SchedFlags::default();
        for w in words {
            match w.as_str() {
                "sh-fallback" | "mh-fallback" | "flag-1" => f.fallback = true,
                "sh-port" | "mh-port" | "flag-2" => f.port = true,
                "flag-3" => {}
                other => return Err(format!("Invalid scheduler flag '{other}'")),
            }
        }
        Ok(f)
    }
}

/// Every scheduler IPVS knows; xvs implements all of them (checked in a test).
pub const IPVS_SCHEDULERS: &[&str] = &[
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos",
];

/// Why a scheduler name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchedError {
    /// No such scheduler in IPVS either.
    Unknown(String),
}

/// Creates a scheduler by its ipvsadm name.
pub fn by_name(name: &str) -> Result<Box<dyn Scheduler>, SchedError> {
    by_name_with(name, SchedFlags::default())
}

/// Creates a scheduler by its ipvsadm name with `-b` flags.
pub fn by_name_with(name: &str, flags: SchedFlags) -> Result<Box<dyn Scheduler>, SchedError> {
    match name {
        "rr" => Ok(Box::new(Locked::new(RoundRobin::default()))),
        "wrr" => Ok(Box::new(Locked::new(WeightedRoundRobin::default()))),
        "lc" => Ok(Box::new(LeastConn)),
        "wlc" => Ok(Box::new(WeightedLeastConn)),
        "sed" => Ok(Box::new(ShortestExpectedDelay)),
        "nq" => Ok(Box::new(NeverQueue)),
        "sh" => Ok(Box::new(SourceHashing::new(flags))),
        "dh" => Ok(Box::new(DestinationHashing)),
        "mh" => Ok(Box::new(MaglevHashing::new(flags))),
        "fo" => Ok(Box::new(WeightedFailover)),
        "ovf" => Ok(Box::new(OverflowConn)),
        "twos" => Ok(Box::new(TwoChoices)),
        "lblc" => Ok(Box::new(Locked::new(LocalityLeastConn::default()))),
        "lblcr" => Ok(Box::new(
            Locked::new(LocalityLeastConnReplicated::default()),
        )),
        n => Err(SchedError::Unknown(n.to_string())),
    }
}

/// The kernel's `hash_32` (`include/linux/hash.h`, Linux >= 4.7): multiply by
/// `GOLDEN_RATIO_32` modulo 2^32 and keep the top `bits` bits. sh, dh, lblc and lblcr index
/// their tables with it, so bucket choice matches IPVS for the same address.
pub(crate) fn hash_32(val: u32, bits: u32) -> u32 {
    const GOLDEN_RATIO_32: u32 = 0x61C8_8647;
    debug_assert!((1..=32).contains(&bits));
    val.wrapping_mul(GOLDEN_RATIO_32) >> (32 - bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_name_knows_the_implemented_and_refuses_the_rest() {
        for n in [
            "rr", "wrr", "lc", "wlc", "sed", "nq", "sh", "dh", "lblc", "lblcr", "mh", "fo", "ovf",
            "twos",
        ] {
            let s = by_name(n).unwrap_or_else(|e| panic!("{n}: {e:?}"));
            assert_eq!(s.name(), n);
        }
        assert_eq!(
            by_name("nope").err(),
            Some(SchedError::Unknown("nope".to_string()))
        );
    }

    #[test]
    fn only_the_schedulers_ipvs_serialises_take_a_lock() {
        for n in [
            "lc", "wlc", "sed", "nq", "sh", "dh", "mh", "fo", "ovf", "twos",
        ] {
            assert!(!by_name(n).unwrap().takes_lock(), "{n}");
        }
        for n in ["rr", "wrr", "lblc", "lblcr"] {
            assert!(by_name(n).unwrap().takes_lock(), "{n}");
        }
    }

    /// Lock-free picks from many threads at once see the same list and counters.
    #[test]
    fn lock_free_picks_from_many_threads() {
        let d = testutil::dests(&[1, 2, 3]);
        testutil::load(&d[0], 1, 0);
        testutil::load(&d[1], 1, 0);
        testutil::load(&d[2], 1, 0);
        let s: Arc<dyn Scheduler> = Arc::from(by_name("wlc").unwrap());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (s, d) = (s.clone(), d.clone());
                std::thread::spawn(move || {
                    (0..1000).all(|_| s.schedule(&d, &FlowKey::default(), 0) == Some(2))
                })
            })
            .collect();
        assert!(threads.into_iter().all(|t| t.join().unwrap()));
    }

    #[test]
    fn hash_32_vectors() {
        // 0x0a000001 * 0x61c88647 = 0x27c88647 (mod 2^32): top 8 bits 0x27, top 10 bits 0x9f.
        assert_eq!(hash_32(0x0a00_0001, 8), 0x27);
        assert_eq!(hash_32(0x0a00_0001, 10), 0x9f);
        assert_eq!(hash_32(0, 8), 0);
        assert_eq!(hash_32(1, 32), 0x61C8_8647);
    }

    #[test]
    fn every_ipvs_scheduler_is_implemented() {
        for n in IPVS_SCHEDULERS {
            assert_eq!(by_name(n).map(|s| s.name()).ok(), Some(*n));
        }
        assert_eq!(
            by_name("xyz").err(),
            Some(SchedError::Unknown("xyz".into()))
        );
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;
    use crate::model::Forward;

    /// Servers 10.0.0.1.. with the given weights, in list order.
    pub fn dests(weights: &[u32]) -> Vec<Arc<DestRt>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                Arc::new(DestRt::new(
                    std::net::Ipv4Addr::new(10, 0, 0, i as u8 + 1),
                    80,
                    Forward::Route,
                    w,
                ))
            })
            .collect()
    }

    /// Sets a server's connection counters (IPVS activeconns / inactconns).
    pub fn load(d: &DestRt, active: u32, inactive: u32) {
        use std::sync::atomic::Ordering::Relaxed;
        d.load.active_conns.store(active, Relaxed);
        d.load.inactive_conns.store(inactive, Relaxed);
    }

    /// Sets a server's OVERLOAD flag.
    pub fn overload(d: &DestRt, on: bool) {
        d.load
            .overloaded
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// A TCP flow from `saddr:sport` to `daddr:80` (host-order addresses).
    pub fn flow(saddr: u32, sport: u16, daddr: u32) -> FlowKey {
        FlowKey {
            saddr,
            daddr,
            sport,
            dport: 80,
            proto: 6,
        }
    }

    /// Runs `n` picks and returns the chosen indices (`None` as usize::MAX).
    pub fn picks(s: &dyn Scheduler, d: &[Arc<DestRt>], n: usize) -> Vec<usize> {
        let flow = FlowKey::default();
        (0..n)
            .map(|_| s.schedule(d, &flow, 0).unwrap_or(usize::MAX))
            .collect()
    }

    /// `picks` for a stateful scheduler used directly (without `Locked`).
    pub fn picks_mut<S: StatefulScheduler>(s: &mut S, d: &[Arc<DestRt>], n: usize) -> Vec<usize> {
        let flow = FlowKey::default();
        (0..n)
            .map(|_| s.schedule(d, &flow, 0).unwrap_or(usize::MAX))
            .collect()
    }
}
