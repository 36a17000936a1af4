//! Schedulers: one per file behind one trait, chosen by name as with `ipvsadm -s`.
//!
//! Semantics follow Linux IPVS (`net/netfilter/ipvs/ip_vs_*.c`), see `shared/ipvs-semantics.md`.

mod rr;
mod wrr;

pub use rr::RoundRobin;
pub use wrr::WeightedRoundRobin;

use crate::packet::FlowKey;
use crate::runtime::DestRt;
use std::sync::Arc;

/// A connection scheduler for one virtual service.
///
/// `dests` is the service's server list in IPVS list order; the same list is passed to
/// `update` whenever the list or any weight changes, before the next `schedule`.
pub trait Scheduler: Send {
    /// The ipvsadm name (`rr`, `wrr`, ...).
    fn name(&self) -> &'static str;
    /// IPVS's add_dest/del_dest/upd_dest hooks folded into one: the list or a weight changed.
    fn update(&mut self, dests: &[Arc<DestRt>]);
    /// Picks the server for a new connection (index into `dests`), `None` if none is available.
    /// Runs once per new connection: must not allocate (beyond tables sized at `update`);
    /// O(servers) at most. `now_ms` is a monotonic millisecond clock.
    fn schedule(&mut self, dests: &[Arc<DestRt>], flow: &FlowKey, now_ms: u64) -> Option<usize>;
    /// Periodic housekeeping (lblc/lblcr table expiry), called about once a second by the
    /// daemon, off the packet path.
    fn expire(&mut self, _now_ms: u64) {}
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

/// Every scheduler IPVS knows, for telling "unknown" apart from "not implemented yet".
pub const IPVS_SCHEDULERS: &[&str] = &[
    "rr", "wrr", "lc", "wlc", "lblc", "lblcr", "dh", "sh", "sed", "nq", "fo", "ovf", "mh", "twos",
];

/// Why a scheduler name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchedError {
    /// No such scheduler in IPVS either.
    Unknown(String),
    /// An IPVS scheduler xvs does not implement yet.
    NotImplemented(String),
}

/// Creates a scheduler by its ipvsadm name.
pub fn by_name(name: &str) -> Result<Box<dyn Scheduler>, SchedError> {
    by_name_with(name, SchedFlags::default())
}

/// Creates a scheduler by its ipvsadm name with `-b` flags.
pub fn by_name_with(name: &str, _flags: SchedFlags) -> Result<Box<dyn Scheduler>, SchedError> {
    match name {
        "rr" => Ok(Box::new(RoundRobin::default())),
        "wrr" => Ok(Box::new(WeightedRoundRobin::default())),
        n if IPVS_SCHEDULERS.contains(&n) => Err(SchedError::NotImplemented(n.to_string())),
        n => Err(SchedError::Unknown(n.to_string())),
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

    /// Runs `n` picks and returns the chosen indices (`None` as usize::MAX).
    pub fn picks(s: &mut dyn Scheduler, d: &[Arc<DestRt>], n: usize) -> Vec<usize> {
        let flow = FlowKey::default();
        (0..n)
            .map(|_| s.schedule(d, &flow, 0).unwrap_or(usize::MAX))
            .collect()
    }
}
