//! The XDP fast path's userspace side: the maps the workers install established flows into,
//! the stat slots the program counts them in, and the generations that cut them off.
//!
//! Userspace stays the authority (docs/architecture.md, "Fast path"): a worker installs a
//! connection's forwarding decision into the flow map when the connection becomes
//! established (TCP) or at its first datagram (UDP), and removes it when the connection
//! leaves (FIN/RST, expiry, removal). All map writes happen at those state changes, never per
//! packet. The program writes only `last_seen_ns` and the per-CPU counters.
//!
//! One process-wide instance (`init`), set by the daemon before it builds any service or
//! server; without it (unit tests, `--no-fast-path`) everything here is a no-op and no stat
//! slot is handed out.

use crate::bpf::maps::{FastCtr, FlowKeyC, FlowVal, MAX_STAT_SLOTS};
use crate::packet::FlowKey;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock};

/// The fast path's maps, as fds of the loaded steering program's maps.
pub struct FastMaps {
    pub flows: OwnedFd,
    pub ctr: OwnedFd,
    pub gen: OwnedFd,
}

fn errno(rc: i32) -> io::Result<()> {
    if rc < 0 {
        // libbpf returns -errno.
        Err(io::Error::from_raw_os_error(-rc))
    } else {
        Ok(())
    }
}

fn ncpus() -> usize {
    // SAFETY: a plain libbpf query without arguments.
    let n = unsafe { libbpf_sys::libbpf_num_possible_cpus() };
    n.max(1) as usize
}

impl FastMaps {
    /// Installs (or replaces) a flow.
    pub fn install(&self, k: &FlowKeyC, v: &FlowVal) -> io::Result<()> {
        // SAFETY: key and value point at repr(C) structs of the map's key and value sizes
        // (checked against the program's BTF in src/bpf/mod.rs), valid during the call.
        errno(unsafe {
            libbpf_sys::bpf_map_update_elem(
                self.flows.as_raw_fd(),
                k.as_bytes().as_ptr().cast(),
                v.as_bytes().as_ptr().cast(),
                libbpf_sys::BPF_ANY as u64,
            )
        })
    }

    /// Removes a flow; a missing one (evicted) is not an error.
    pub fn remove(&self, k: &FlowKeyC) {
        // SAFETY: as in `install`.
        let _ = unsafe {
            libbpf_sys::bpf_map_delete_elem(self.flows.as_raw_fd(), k.as_bytes().as_ptr().cast())
        };
    }

    pub fn lookup(&self, k: &FlowKeyC) -> Option<FlowVal> {
        let mut v = FlowVal::default();
        // SAFETY: as in `install`; the value buffer is a FlowVal the kernel writes.
        let rc = unsafe {
            libbpf_sys::bpf_map_lookup_elem(
                self.flows.as_raw_fd(),
                k.as_bytes().as_ptr().cast(),
                (&mut v as *mut FlowVal).cast(),
            )
        };
        (rc == 0).then_some(v)
    }

    /// What the fast path forwarded in stat slot `slot`, summed over CPUs.
    pub fn counters(&self, slot: u32) -> FastCtr {
        let n = ncpus();
        let mut buf = vec![0u8; n * std::mem::size_of::<FastCtr>()];
        // SAFETY: a per-CPU array's value is one (8-byte aligned) value per possible CPU:
        // `buf` has room for all of them.
        let rc = unsafe {
            libbpf_sys::bpf_map_lookup_elem(
                self.ctr.as_raw_fd(),
                (&slot as *const u32).cast(),
                buf.as_mut_ptr().cast(),
            )
        };
        let mut t = FastCtr::default();
        if rc == 0 {
            for c in buf.chunks(std::mem::size_of::<FastCtr>()) {
                let c = FastCtr::from_bytes(c);
                t.pkts += c.pkts;
                t.bytes += c.bytes;
                t.out_pkts += c.out_pkts;
                t.out_bytes += c.out_bytes;
            }
        }
        t
    }

    /// Zeroes stat slot `slot` on every CPU (a slot handed out afresh).
    pub fn zero_counters(&self, slot: u32) {
        let buf = vec![0u8; ncpus() * std::mem::size_of::<FastCtr>()];
        // SAFETY: as in `counters`.
        let _ = unsafe {
            libbpf_sys::bpf_map_update_elem(
                self.ctr.as_raw_fd(),
                (&slot as *const u32).cast(),
                buf.as_ptr().cast(),
                libbpf_sys::BPF_ANY as u64,
            )
        };
    }

    /// Writes the generation of stat slot `slot`.
    pub fn set_gen(&self, slot: u32, gen: u32) {
        // SAFETY: u32 key and value of an array map.
        let _ = unsafe {
            libbpf_sys::bpf_map_update_elem(
                self.gen.as_raw_fd(),
                (&slot as *const u32).cast(),
                (&gen as *const u32).cast(),
                libbpf_sys::BPF_ANY as u64,
            )
        };
    }
}

/// Fast-path bookkeeping of the userspace side (`xvsadm -L --datapath`, metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FastStats {
    /// Flows installed (first install of a connection).
    pub installs: u64,
    /// Flows installed again because their entry was gone: evicted from the LRU map (or
    /// stale after a generation bump, for a server still forwarded).
    pub reinstalls: u64,
    /// Installs the kernel refused (the flow stays on the workers' path).
    pub install_failed: u64,
    /// Flows removed (FIN/RST, expiry, removal).
    pub removes: u64,
    /// Expiry checks that found fast-path traffic and re-armed the timer.
    pub refreshed: u64,
    /// Servers or services without a stat slot (all in use): not fast-pathed.
    pub no_slot: u64,
    /// Reinstalls skipped for the reinstall budget (`REINSTALLS_PER_MS`): the packet went
    /// the workers' way and the flow stays there until a later packet finds budget.
    #[serde(default)]
    pub reinstall_deferred: u64,
}

/// Reinstalls allowed per millisecond over all workers. A flow map smaller than the live
/// flows (`--fast-path-max`) with traffic spread over all of them would otherwise thrash:
/// every worker packet reinstalls its flow, which evicts another one, whose next packet
/// comes to a worker and reinstalls it, at about 10 us a packet (measured), three times
/// the cost of leaving the flow on the workers' path. 16 per ms (16k/s) keeps ordinary
/// evictions of a busy map re-cached within milliseconds.
pub const REINSTALLS_PER_MS: u32 = 16;

/// A per-millisecond budget shared by the workers (approximate under races, which only
/// lets a few more through; no lock).
#[derive(Debug, Default)]
pub struct ReinstallBudget {
    ms: AtomicU64,
    used: AtomicU32,
}

impl ReinstallBudget {
    /// Whether one more reinstall may happen at `now_ns` (monotonic).
    pub fn allow(&self, now_ns: u64) -> bool {
        let ms = now_ns / 1_000_000;
        if self.ms.load(Relaxed) != ms {
            self.ms.store(ms, Relaxed);
            self.used.store(0, Relaxed);
        }
        self.used.fetch_add(1, Relaxed) < REINSTALLS_PER_MS
    }
}

pub struct FastPath {
    pub maps: FastMaps,
    /// The ifindex of each worker port (interface), as entries name their egress.
    ifindex: [u32; crate::forward::MAX_PORTS],
    slots: Mutex<Slots>,
    installs: AtomicU64,
    reinstalls: AtomicU64,
    install_failed: AtomicU64,
    removes: AtomicU64,
    refreshed: AtomicU64,
    no_slot: AtomicU64,
    reinstall_budget: ReinstallBudget,
    reinstall_deferred: AtomicU64,
    /// The published state timeouts, for listings' expiry of installed flows (control
    /// threads only; the workers have their snapshot).
    timeouts: Mutex<crate::conn::StateTimeouts>,
}

struct Slots {
    next: u32,
    /// Freed slots with their last generation: a reused slot goes on counting generations
    /// from there, so its previous owner's entries never match again.
    free: Vec<(u32, u32)>,
}

static FAST: OnceLock<FastPath> = OnceLock::new();

/// Turns the fast path on for this process (once; later calls are ignored).
pub fn init(maps: FastMaps, port_ifindex: &[u32]) {
    let mut ifindex = [0; crate::forward::MAX_PORTS];
    for (d, s) in ifindex.iter_mut().zip(port_ifindex) {
        *d = *s;
    }
    let _ = FAST.set(FastPath {
        maps,
        ifindex,
        slots: Mutex::new(Slots {
            next: 1,
            free: Vec::new(),
        }),
        installs: AtomicU64::new(0),
        reinstalls: AtomicU64::new(0),
        install_failed: AtomicU64::new(0),
        removes: AtomicU64::new(0),
        refreshed: AtomicU64::new(0),
        no_slot: AtomicU64::new(0),
        reinstall_budget: ReinstallBudget::default(),
        reinstall_deferred: AtomicU64::new(0),
        timeouts: Mutex::new(crate::conn::StateTimeouts::default()),
    });
}

/// The process's fast path, if on.
#[inline]
pub fn get() -> Option<&'static FastPath> {
    FAST.get()
}

/// A stat slot for a new counter set, and its current generation ((0, 0): none: the fast
/// path is off or the slots are all taken; then that server's flows are never installed).
/// Its counters are zeroed.
pub fn alloc_slot() -> (u32, u32) {
    let Some(f) = get() else { return (0, 0) };
    let (slot, gen) = {
        let mut s = f.slots.lock().unwrap_or_else(|e| e.into_inner());
        match s.free.pop() {
            Some(x) => x,
            None if s.next < MAX_STAT_SLOTS => {
                s.next += 1;
                (s.next - 1, 0)
            }
            None => {
                f.no_slot.fetch_add(1, Relaxed);
                return (0, 0);
            }
        }
    };
    f.maps.zero_counters(slot);
    f.maps.set_gen(slot, gen);
    (slot, gen)
}

/// Gives a slot back (its counter set is gone) with its last generation, which the caller
/// bumped: no entry installed under the slot matches any more.
pub fn free_slot(slot: u32, gen: u32) {
    if slot == 0 {
        return;
    }
    if let Some(f) = get() {
        f.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .free
            .push((slot, gen));
    }
}

impl FastPath {
    /// The ifindex of worker port `port` (0: unknown).
    pub fn ifindex(&self, port: u8) -> u32 {
        self.ifindex.get(port as usize).copied().unwrap_or(0)
    }

    pub fn stats(&self) -> FastStats {
        FastStats {
            installs: self.installs.load(Relaxed),
            reinstalls: self.reinstalls.load(Relaxed),
            install_failed: self.install_failed.load(Relaxed),
            removes: self.removes.load(Relaxed),
            refreshed: self.refreshed.load(Relaxed),
            no_slot: self.no_slot.load(Relaxed),
            reinstall_deferred: self.reinstall_deferred.load(Relaxed),
        }
    }

    /// Installs `v` for the client tuple `k` and, for a NAT connection, `reply` (the real
    /// server's tuple and its entry); `again`: the connection had been installed before (an
    /// entry was evicted or went stale). Returns whether it is installed: for NAT both
    /// entries, or neither (a request rewritten by the fast path whose replies went to the
    /// workers would work, but half an install is harder to reason about than none).
    pub fn install(
        &self,
        k: &FlowKey,
        v: &FlowVal,
        reply: Option<(&FlowKey, &FlowVal)>,
        again: bool,
    ) -> bool {
        if again && !self.reinstall_budget.allow(v.last_seen_ns) {
            self.reinstall_deferred.fetch_add(1, Relaxed);
            return false;
        }
        let ok = self.maps.install(&FlowKeyC::of(k), v).is_ok()
            && match reply {
                None => true,
                Some((rk, rv)) => {
                    let ok = self.maps.install(&FlowKeyC::of(rk), rv).is_ok();
                    if !ok {
                        self.maps.remove(&FlowKeyC::of(k));
                    }
                    ok
                }
            };
        if !ok {
            self.install_failed.fetch_add(1, Relaxed);
        } else if again {
            self.reinstalls.fetch_add(1, Relaxed);
        } else {
            self.installs.fetch_add(1, Relaxed);
        }
        ok
    }

    /// Removes a connection's entry (and its NAT reply entry, `reply`).
    pub fn remove(&self, k: &FlowKey, reply: Option<&FlowKey>) {
        self.maps.remove(&FlowKeyC::of(k));
        if let Some(rk) = reply {
            self.maps.remove(&FlowKeyC::of(rk));
        }
        self.removes.fetch_add(1, Relaxed);
    }

    /// When the fast path last forwarded a frame of the connection `k` (either direction
    /// of a NAT one: its reply tuple `reply`), on the process's millisecond clock
    /// (`clock::now_ms`); `None` if never (or the entries are gone).
    pub fn last_seen_ms(&self, k: &FlowKey, reply: Option<&FlowKey>) -> Option<u64> {
        let ns = |k: &FlowKey| {
            self.maps
                .lookup(&FlowKeyC::of(k))
                .map_or(0, |v| v.last_seen_ns)
        };
        let last = ns(k).max(reply.map_or(0, ns));
        if last == 0 {
            return None;
        }
        // Both clocks are CLOCK_MONOTONIC (bpf_ktime_get_ns; Instant on Linux): convert by
        // the age of the sample.
        let age_ms = crate::bpf::monotonic_ns().saturating_sub(last) / 1_000_000;
        Some(crate::clock::now_ms().saturating_sub(age_ms))
    }

    /// The daemon published new timeouts.
    pub fn set_timeouts(&self, t: crate::conn::StateTimeouts) {
        *self.timeouts.lock().unwrap_or_else(|e| e.into_inner()) = t;
    }

    /// The expiry a listing (`-L -c`, bulk sync, the restart state file) shows for an
    /// installed connection in `state` whose worker timer says `expires_ms`: the later of
    /// that and a full timeout after the fast path's last frame (either direction).
    pub fn listed_expiry(
        &self,
        k: &FlowKey,
        reply: Option<&FlowKey>,
        state: crate::conn::ConnState,
        expires_ms: u64,
    ) -> u64 {
        let t = self
            .timeouts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(state);
        match self.last_seen_ms(k, reply) {
            Some(seen) => expires_ms.max(seen + t),
            None => expires_ms,
        }
    }

    pub fn note_refreshed(&self) {
        self.refreshed.fetch_add(1, Relaxed);
    }
}

/// Fast-path bookkeeping for listings: zeros when the fast path is off.
pub fn stats() -> FastStats {
    get().map(|f| f.stats()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reinstall_budget_refills_every_millisecond() {
        let b = ReinstallBudget::default();
        let t0 = 5_000_000_123;
        let allowed = (0..100).filter(|_| b.allow(t0)).count();
        assert_eq!(allowed, REINSTALLS_PER_MS as usize);
        // Later in the same millisecond: still spent.
        assert!(!b.allow(t0 + 500_000));
        // The next millisecond has a full budget again.
        let allowed = (0..100).filter(|_| b.allow(t0 + 1_000_000)).count();
        assert_eq!(allowed, REINSTALLS_PER_MS as usize);
    }
}
