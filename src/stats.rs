//! Packet, byte and connection counters of services and real servers (`-L --stats`), and the
//! IPVS rate estimator (`-L --rate`).
//!
//! Each worker writes only its own cache line of a `StatSlots` (single writer: a plain load
//! and store, no locked instruction), the control thread sums the lines when asked.

use crate::model::{Counters, Rates};
use crossbeam::utils::CachePadded;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Mutex;

/// Most workers (RX queues) a daemon runs: real NICs have up to 256 queues per port, and
/// the XSKMAP slot of a socket is `interface * 256 + queue` (bpf/xvs_shared.h). xvsd
/// refuses more at start.
pub const MAX_WORKERS: usize = 256;

/// Worker slots in each counter set made from now on: the daemon sets its worker count
/// before it builds any service, so every worker has a line of its own and a counter set
/// costs one line per worker, not `MAX_WORKERS`.
static SLOTS: AtomicUsize = AtomicUsize::new(MAX_WORKERS);

/// Sets the number of worker slots (1..=MAX_WORKERS) of counter sets created afterwards.
pub fn set_worker_slots(n: usize) {
    SLOTS.store(n.clamp(1, MAX_WORKERS), Relaxed);
}

#[derive(Default)]
struct Slot {
    conns: AtomicU64,
    inpkts: AtomicU64,
    inbytes: AtomicU64,
    outpkts: AtomicU64,
    outbytes: AtomicU64,
}

#[inline]
fn bump(a: &AtomicU64, by: u64) {
    // Single writer per slot: no read-modify-write needed.
    a.store(a.load(Relaxed).wrapping_add(by), Relaxed);
}

/// Rate estimator state (ip_vs_est.c): a sample every 2 s, `avg += (rate - avg) / 4`.
#[derive(Debug, Default, Clone, Copy)]
struct Est {
    last: Counters,
    last_ms: u64,
    started: bool,
    cps: f64,
    inpps: f64,
    outpps: f64,
    inbps: f64,
    outbps: f64,
}

pub struct StatSlots {
    slots: Box<[CachePadded<Slot>]>,
    /// Counter values at the last `-Z`: reported counters are relative to it.
    base: Mutex<Counters>,
    est: Mutex<Est>,
    /// The fast path's counter slot of this set (0: none), and the generation its flows are
    /// installed with (src/fastpath.rs): the program counts fast-path packets there, and
    /// `raw` adds them, so `--stats` and `--rate` see every packet once.
    fast_slot: u32,
    fast_gen: AtomicU32,
}

impl Drop for StatSlots {
    fn drop(&mut self) {
        if self.fast_slot != 0 {
            let g = self.bump_gen();
            crate::fastpath::free_slot(self.fast_slot, g);
        }
    }
}

impl Default for StatSlots {
    fn default() -> Self {
        let (fast_slot, gen) = crate::fastpath::alloc_slot();
        StatSlots {
            fast_slot,
            fast_gen: AtomicU32::new(gen),
            slots: (0..SLOTS.load(Relaxed))
                .map(|_| CachePadded::new(Slot::default()))
                .collect(),
            base: Mutex::new(Counters::default()),
            est: Mutex::new(Est::default()),
        }
    }
}

impl std::fmt::Debug for StatSlots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StatSlots({:?})", self.raw())
    }
}

impl StatSlots {
    /// The worker's own line. Worker ids are below the slot count in the daemon (it sizes
    /// the sets); an id beyond it (a test building sets before sizing) shares the last line.
    #[inline]
    fn slot(&self, worker: usize) -> &Slot {
        let last = self.slots.len() - 1;
        &self.slots[worker.min(last)]
    }

    /// A new connection (called by the worker that created it).
    #[inline]
    pub fn add_conn(&self, worker: usize) {
        bump(&self.slot(worker).conns, 1);
    }

    /// A client-to-server packet of `bytes` (IP length).
    #[inline]
    pub fn add_in(&self, worker: usize, bytes: u64) {
        let s = self.slot(worker);
        bump(&s.inpkts, 1);
        bump(&s.inbytes, bytes);
    }

    /// A server-to-client packet (NAT replies).
    #[inline]
    pub fn add_out(&self, worker: usize, bytes: u64) {
        let s = self.slot(worker);
        bump(&s.outpkts, 1);
        bump(&s.outbytes, bytes);
    }

    /// The fast path's stat slot (0: none).
    pub fn fast_slot(&self) -> u32 {
        self.fast_slot
    }

    /// The generation flows are installed with now.
    pub fn fast_gen(&self) -> u32 {
        self.fast_gen.load(SeqCst)
    }

    /// Cuts the fast path off for every flow installed under this set (a server removed,
    /// declared dead, its policy changed; its service deleted): their frames go to the
    /// workers from now on, which apply the server's fate. Returns the new generation.
    pub fn bump_gen(&self) -> u32 {
        let g = self.fast_gen.fetch_add(1, SeqCst).wrapping_add(1);
        if let (Some(f), true) = (crate::fastpath::get(), self.fast_slot != 0) {
            f.maps.set_gen(self.fast_slot, g);
        }
        g
    }

    fn raw(&self) -> Counters {
        let mut c = Counters::default();
        if let (Some(f), true) = (crate::fastpath::get(), self.fast_slot != 0) {
            // Packets the XDP fast path forwarded (client to server, and NAT replies as
            // OutPkts): one map read, on
            // the control thread only (listings, the 2 s estimator).
            let fc = f.maps.counters(self.fast_slot);
            c.inpkts += fc.pkts;
            c.inbytes += fc.bytes;
            c.outpkts += fc.out_pkts;
            c.outbytes += fc.out_bytes;
        }
        for s in self.slots.iter() {
            c.conns += s.conns.load(Relaxed);
            c.inpkts += s.inpkts.load(Relaxed);
            c.inbytes += s.inbytes.load(Relaxed);
            c.outpkts += s.outpkts.load(Relaxed);
            c.outbytes += s.outbytes.load(Relaxed);
        }
        c
    }

    /// Counters since the last `zero`.
    pub fn read(&self) -> Counters {
        let r = self.raw();
        let b = *self.base.lock().unwrap_or_else(|e| e.into_inner());
        Counters {
            conns: r.conns.wrapping_sub(b.conns),
            inpkts: r.inpkts.wrapping_sub(b.inpkts),
            inbytes: r.inbytes.wrapping_sub(b.inbytes),
            outpkts: r.outpkts.wrapping_sub(b.outpkts),
            outbytes: r.outbytes.wrapping_sub(b.outbytes),
        }
    }

    /// `-Z`: counters restart from zero, and so do the rates (as ip_vs_zero_stats).
    pub fn zero(&self) {
        *self.base.lock().unwrap_or_else(|e| e.into_inner()) = self.raw();
        *self.est.lock().unwrap_or_else(|e| e.into_inner()) = Est::default();
    }

    /// Takes one estimator sample; the daemon calls this every 2 s.
    pub fn sample(&self, now_ms: u64) {
        let cur = self.raw();
        let mut e = self.est.lock().unwrap_or_else(|e| e.into_inner());
        if e.started && now_ms > e.last_ms {
            let secs = (now_ms - e.last_ms) as f64 / 1000.0;
            let rate = |a: u64, b: u64| a.wrapping_sub(b) as f64 / secs;
            let avg = |avg: &mut f64, r: f64| *avg += (r - *avg) / 4.0;
            let l = e.last;
            avg(&mut e.cps, rate(cur.conns, l.conns));
            avg(&mut e.inpps, rate(cur.inpkts, l.inpkts));
            avg(&mut e.outpps, rate(cur.outpkts, l.outpkts));
            avg(&mut e.inbps, rate(cur.inbytes, l.inbytes));
            avg(&mut e.outbps, rate(cur.outbytes, l.outbytes));
        }
        e.started = true;
        e.last = cur;
        e.last_ms = now_ms;
    }

    /// Smoothed rates per second. "BPS" is bytes per second, as IPVS's estimator reports it.
    pub fn rates(&self) -> Rates {
        let e = *self.est.lock().unwrap_or_else(|e| e.into_inner());
        Rates {
            cps: e.cps.round() as u64,
            inpps: e.inpps.round() as u64,
            outpps: e.outpps.round() as u64,
            inbps: e.inbps.round() as u64,
            outbps: e.outbps.round() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_zero_and_rates() {
        let s = StatSlots::default();
        s.add_conn(0);
        s.add_in(0, 100);
        s.add_in(65, 100); // another worker
        let c = s.read();
        assert_eq!((c.conns, c.inpkts, c.inbytes), (1, 2, 200));
        s.zero();
        assert_eq!(s.read(), Counters::default());

        s.sample(0);
        for _ in 0..40 {
            s.add_in(0, 10);
        }
        s.sample(2000); // 20 pps over 2 s; first smoothed value is 20/4 = 5
        assert_eq!(s.rates().inpps, 5);
        assert_eq!(s.rates().inbps, 5 * 10);
        s.sample(4000); // 0 pps now: 5 + (0 - 5)/4 = 3.75
        assert_eq!(s.rates().inpps, 4);
    }

    #[test]
    fn every_worker_up_to_the_maximum_has_its_own_line() {
        let s = StatSlots::default();
        for a in 0..MAX_WORKERS {
            for b in [a + 1, a + 64, a + 128] {
                if b < MAX_WORKERS {
                    assert!(!std::ptr::eq(s.slot(a), s.slot(b)), "workers {a} and {b}");
                }
            }
        }
        // Workers 0, 64, 128 and 192 writing at once (single-writer stores) lose nothing.
        let s = std::sync::Arc::new(s);
        let threads: Vec<_> = [0usize, 64, 128, 192]
            .into_iter()
            .map(|w| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..100_000 {
                        s.add_in(w, 1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(s.read().inpkts, 400_000);
    }
}
