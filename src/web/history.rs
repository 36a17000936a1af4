//! The status page's history: the last minutes of every service's and real server's rates
//! and connection counts, for the page's sparklines and `/api/history`.
//!
//! A sampler thread copies what `Request::Status` returns (the daemon's 2 s rate
//! estimator, the servers' active/inactive counters) into one fixed-size ring per series
//! every [`INTERVAL`]. Memory is bounded whatever the configuration: at most
//! [`MAX_SERIES`] series of [`POINTS`] samples each (a series is allocated whole when it is
//! first seen and never grows). A series whose service or server is deleted is dropped at
//! the next sample, so re-adding it starts a new history.

use crate::model::{ServiceStatus, Status};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Time between samples: the period of the daemon's rate estimator (IPVS's 2 s), so every
/// sample sees a fresh rate and none is wasted.
pub const INTERVAL: Duration = Duration::from_secs(2);

/// Samples kept per series: 10 minutes at [`INTERVAL`].
pub const POINTS: usize = 300;

/// Series tracked at most (services plus real servers). Beyond it, new services and servers
/// get no history (the page shows them without graphs); the bound keeps the rings under
/// `MAX_SERIES * POINTS * size_of::<Sample>()` = 2000 * 300 * 40 bytes, about 24 MB, on a
/// director with thousands of servers (a typical 10 services of 10 servers: about 1.3 MB).
pub const MAX_SERIES: usize = 2000;

/// One sample of one series. Rates are the estimator's per-second values; counts are
/// what `ipvsadm -L` shows as ActiveConn/InActConn (for a service, the sum over its
/// servers). u32 is ample for per-second connection and packet rates; bytes need u64.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sample {
    pub cps: u32,
    pub inpps: u32,
    pub outpps: u32,
    pub active: u32,
    pub inactive: u32,
    pub inbps: u64,
    pub outbps: u64,
}

fn sat(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

impl Sample {
    fn of_service(s: &ServiceStatus) -> Sample {
        Sample {
            cps: sat(s.rates.cps),
            inpps: sat(s.rates.inpps),
            outpps: sat(s.rates.outpps),
            active: s
                .dests
                .iter()
                .fold(0u32, |a, d| a.saturating_add(d.active_conns)),
            inactive: s
                .dests
                .iter()
                .fold(0u32, |a, d| a.saturating_add(d.inactive_conns)),
            inbps: s.rates.inbps,
            outbps: s.rates.outbps,
        }
    }

    fn of_dest(d: &crate::model::DestStatus) -> Sample {
        Sample {
            cps: sat(d.rates.cps),
            inpps: sat(d.rates.inpps),
            outpps: sat(d.rates.outpps),
            active: d.active_conns,
            inactive: d.inactive_conns,
            inbps: d.rates.inbps,
            outbps: d.rates.outbps,
        }
    }
}

/// A fixed ring of the last [`POINTS`] samples.
#[derive(Debug)]
pub struct Ring {
    buf: Box<[Sample]>,
    /// Index of the next write.
    head: usize,
    len: usize,
}

impl Default for Ring {
    fn default() -> Self {
        Ring::new()
    }
}

impl Ring {
    pub fn new() -> Ring {
        Ring {
            buf: vec![Sample::default(); POINTS].into_boxed_slice(),
            head: 0,
            len: 0,
        }
    }

    pub fn push(&mut self, s: Sample) {
        self.buf[self.head] = s;
        self.head = (self.head + 1) % POINTS;
        self.len = (self.len + 1).min(POINTS);
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The last `n` samples (at most `len`), oldest first.
    pub fn last(&self, n: usize) -> impl Iterator<Item = &Sample> {
        let n = n.min(self.len);
        let start = (self.head + POINTS - n) % POINTS;
        (0..n).map(move |i| &self.buf[(start + i) % POINTS])
    }
}

/// What a series is about: a service, or one real server of a service.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeriesKey {
    /// The service as `ipvsadm -L -n` names it: `TCP 10.0.0.88:80`.
    pub service: String,
    /// The real server, `10.0.0.9:80`; `None` for the service's own series.
    pub server: Option<String>,
}

/// All series, and the sample sequence number they are aligned on.
#[derive(Debug, Default)]
pub struct History {
    series: HashMap<SeriesKey, Ring>,
    /// Samples taken so far; the last sample of every series has this number, so a
    /// client that has seen up to `seq` S needs the last `seq - S` points of each series.
    seq: u64,
    /// Series that could not be tracked at the last sample because of [`MAX_SERIES`].
    untracked: usize,
}

/// `/api/history`: per series, parallel arrays oldest first (compact JSON: one number per
/// point and field, no per-point keys).
#[derive(Debug, Serialize, PartialEq)]
pub struct HistoryJson {
    pub interval_s: u64,
    pub points: usize,
    pub max_series: usize,
    /// Sequence number of the newest sample (send it back as `?since=` for only newer ones).
    pub seq: u64,
    /// Services and servers left without history because of `max_series`.
    pub untracked: usize,
    pub series: Vec<SeriesJson>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct SeriesJson {
    pub service: String,
    pub server: Option<String>,
    pub cps: Vec<u32>,
    pub inpps: Vec<u32>,
    pub outpps: Vec<u32>,
    pub inbps: Vec<u64>,
    pub outbps: Vec<u64>,
    pub active: Vec<u32>,
    pub inactive: Vec<u32>,
}

/// The name of a service as the page and the JSON show it (`TCP 10.0.0.88:80`).
pub fn service_name(s: &ServiceStatus) -> String {
    s.key.to_string()
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn tracked(&self) -> usize {
        self.series.len()
    }

    pub fn untracked(&self) -> usize {
        self.untracked
    }

    pub fn get(&self, k: &SeriesKey) -> Option<&Ring> {
        self.series.get(k)
    }

    /// Takes one sample of every service and server in `st`. Series no longer in `st` are
    /// dropped; new ones are added while fewer than [`MAX_SERIES`] are tracked, in the
    /// order of the listing (each service before its servers).
    pub fn record(&mut self, st: &Status) {
        self.seq += 1;
        let mut seen: Vec<(SeriesKey, Sample)> = Vec::new();
        for s in &st.services {
            let name = service_name(s);
            seen.push((
                SeriesKey {
                    service: name.clone(),
                    server: None,
                },
                Sample::of_service(s),
            ));
            for d in &s.dests {
                seen.push((
                    SeriesKey {
                        service: name.clone(),
                        server: Some(format!("{}:{}", d.addr, d.port)),
                    },
                    Sample::of_dest(d),
                ));
            }
        }
        let live: std::collections::HashSet<&SeriesKey> = seen.iter().map(|(k, _)| k).collect();
        self.series.retain(|k, _| live.contains(k));
        let mut untracked = 0;
        for (k, s) in seen {
            if let Some(r) = self.series.get_mut(&k) {
                r.push(s);
            } else if self.series.len() < MAX_SERIES {
                let mut r = Ring::new();
                r.push(s);
                self.series.insert(k, r);
            } else {
                untracked += 1;
            }
        }
        self.untracked = untracked;
    }

    /// The JSON of `/api/history?since=SINCE`: each series' points newer than sample
    /// `since` (all of them for 0, or when `since` is ahead of this history, as after a
    /// daemon restart). Sorted by service then server, the service's own series first.
    pub fn json(&self, since: u64) -> HistoryJson {
        let want = if since == 0 || since > self.seq {
            POINTS
        } else {
            usize::try_from(self.seq - since)
                .unwrap_or(POINTS)
                .min(POINTS)
        };
        let mut keys: Vec<&SeriesKey> = self.series.keys().collect();
        keys.sort_by(|a, b| {
            (&a.service, a.server.is_some(), &a.server).cmp(&(
                &b.service,
                b.server.is_some(),
                &b.server,
            ))
        });
        let series = keys
            .into_iter()
            .map(|k| {
                let r = &self.series[k];
                let pts: Vec<&Sample> = r.last(want).collect();
                SeriesJson {
                    service: k.service.clone(),
                    server: k.server.clone(),
                    cps: pts.iter().map(|p| p.cps).collect(),
                    inpps: pts.iter().map(|p| p.inpps).collect(),
                    outpps: pts.iter().map(|p| p.outpps).collect(),
                    inbps: pts.iter().map(|p| p.inbps).collect(),
                    outbps: pts.iter().map(|p| p.outbps).collect(),
                    active: pts.iter().map(|p| p.active).collect(),
                    inactive: pts.iter().map(|p| p.inactive).collect(),
                }
            })
            .collect();
        HistoryJson {
            interval_s: INTERVAL.as_secs(),
            points: POINTS,
            max_series: MAX_SERIES,
            seq: self.seq,
            untracked: self.untracked,
            series,
        }
    }
}

/// Starts the sampler thread: every [`INTERVAL`] it calls `source` (the daemon's status;
/// `None` skips the tick) and records the result into `hist`. The thread runs for the
/// life of the daemon; it inherits the caller's CPU affinity, so it stays off the
/// workers' cores when started after them as every control thread.
pub fn start_sampler<F>(hist: Arc<Mutex<History>>, source: F) -> std::io::Result<()>
where
    F: Fn() -> Option<Status> + Send + 'static,
{
    std::thread::Builder::new()
        .name("xvs-history".into())
        .spawn(move || {
            // Ticks on a fixed schedule (not sleep-after-work), so the samples stay 2 s
            // apart however long a status takes under a busy daemon mutex.
            let mut next = Instant::now();
            loop {
                if let Some(st) = source() {
                    hist.lock().unwrap_or_else(|e| e.into_inner()).record(&st);
                }
                next += INTERVAL;
                let now = Instant::now();
                if next <= now {
                    // Fell behind (suspended, or a long stall): skip the missed ticks
                    // instead of sampling in a burst.
                    next = now + INTERVAL;
                }
                std::thread::sleep(next - now);
            }
        })
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        Counters, DestStatus, Forward, Protocol, Rates, ServiceKey, ServiceOpts, Timeouts,
    };
    use std::net::Ipv4Addr;

    fn dest(last: u8, active: u32, cps: u64) -> DestStatus {
        DestStatus {
            addr: Ipv4Addr::new(10, 0, 0, last),
            port: 80,
            forward: Forward::Route,
            weight: 1,
            u_threshold: 0,
            l_threshold: 0,
            active_conns: active,
            inactive_conns: 1,
            persist_conns: 0,
            counters: Counters::default(),
            rates: Rates {
                cps,
                inbps: 5_000_000_000,
                ..Rates::default()
            },
        }
    }

    fn status(services: Vec<(u8, Vec<DestStatus>)>) -> Status {
        Status {
            conn_table_size: 1,
            timeouts: Timeouts::default(),
            services: services
                .into_iter()
                .map(|(last, dests)| ServiceStatus {
                    key: ServiceKey {
                        proto: Protocol::Tcp,
                        addr: Ipv4Addr::new(10, 0, 1, last),
                        port: 80,
                    },
                    opts: ServiceOpts::default(),
                    counters: Counters::default(),
                    rates: Rates {
                        cps: 7,
                        ..Rates::default()
                    },
                    dests,
                })
                .collect(),
        }
    }

    fn key(svc: u8, server: Option<u8>) -> SeriesKey {
        SeriesKey {
            service: format!("TCP 10.0.1.{svc}:80"),
            server: server.map(|s| format!("10.0.0.{s}:80")),
        }
    }

    #[test]
    fn ring_keeps_the_last_points_oldest_first() {
        let mut r = Ring::new();
        assert!(r.is_empty());
        for i in 0..(POINTS as u32 + 5) {
            r.push(Sample {
                cps: i,
                ..Sample::default()
            });
        }
        assert_eq!(r.len(), POINTS);
        let all: Vec<u32> = r.last(POINTS + 10).map(|s| s.cps).collect();
        assert_eq!(all.len(), POINTS);
        assert_eq!(all[0], 5);
        assert_eq!(*all.last().unwrap(), POINTS as u32 + 4);
        let tail: Vec<u32> = r.last(3).map(|s| s.cps).collect();
        assert_eq!(
            tail,
            vec![POINTS as u32 + 2, POINTS as u32 + 3, POINTS as u32 + 4]
        );
    }

    #[test]
    fn memory_bound_holds() {
        // The figure MAX_SERIES's comment and the docs give.
        assert_eq!(std::mem::size_of::<Sample>(), 40);
    }

    #[test]
    fn ring_before_wrapping() {
        let mut r = Ring::new();
        r.push(Sample {
            cps: 1,
            ..Sample::default()
        });
        r.push(Sample {
            cps: 2,
            ..Sample::default()
        });
        let v: Vec<u32> = r.last(10).map(|s| s.cps).collect();
        assert_eq!(v, vec![1, 2]);
    }

    #[test]
    fn record_samples_services_and_servers_and_sums_service_counts() {
        let mut h = History::new();
        h.record(&status(vec![(1, vec![dest(2, 3, 4), dest(3, 10, 6)])]));
        assert_eq!(h.seq(), 1);
        assert_eq!(h.tracked(), 3);
        let svc = h.get(&key(1, None)).unwrap();
        let s = svc.last(1).next().unwrap();
        assert_eq!((s.cps, s.active, s.inactive), (7, 13, 2));
        let d = h.get(&key(1, Some(3))).unwrap().last(1).next().unwrap();
        assert_eq!((d.cps, d.active, d.inbps), (6, 10, 5_000_000_000));
    }

    #[test]
    fn deleted_servers_lose_their_series() {
        let mut h = History::new();
        h.record(&status(vec![(1, vec![dest(2, 0, 0), dest(3, 0, 0)])]));
        h.record(&status(vec![(1, vec![dest(2, 0, 0)])]));
        assert!(h.get(&key(1, Some(3))).is_none());
        assert_eq!(h.get(&key(1, Some(2))).unwrap().len(), 2);
        h.record(&status(vec![]));
        assert_eq!(h.tracked(), 0);
    }

    #[test]
    fn series_are_capped_whatever_the_server_count() {
        let mut h = History::new();
        // 30 services of 100 servers: 3030 series, more than MAX_SERIES.
        let big = || {
            status(
                (0..30)
                    .map(|s| (s, (0..100).map(|d| dest(d, 0, 0)).collect()))
                    .collect(),
            )
        };
        h.record(&big());
        assert_eq!(h.tracked(), MAX_SERIES);
        assert_eq!(h.untracked(), 30 * 101 - MAX_SERIES);
        h.record(&big());
        assert_eq!(h.tracked(), MAX_SERIES);
        // The first services are the tracked ones, in listing order.
        assert_eq!(h.get(&key(0, None)).unwrap().len(), 2);
        assert!(h.get(&key(29, Some(99))).is_none());
    }

    #[test]
    fn json_since_returns_only_newer_points() {
        let mut h = History::new();
        for cps in 0..5 {
            h.record(&status(vec![(1, vec![dest(2, 0, cps)])]));
        }
        let all = h.json(0);
        assert_eq!(all.seq, 5);
        assert_eq!(all.series.len(), 2);
        assert_eq!(all.series[0].server, None);
        assert_eq!(all.series[1].cps, vec![0, 1, 2, 3, 4]);
        let newer = h.json(3);
        assert_eq!(newer.series[1].cps, vec![3, 4]);
        assert!(h.json(5).series[1].cps.is_empty());
        // A client ahead of the history (the daemon restarted) gets everything.
        assert_eq!(h.json(99).series[1].cps.len(), 5);
        // A server added later has fewer points than the gap: all of them.
        h.record(&status(vec![(1, vec![dest(2, 0, 9), dest(3, 0, 8)])]));
        let j = h.json(1);
        assert_eq!(j.series[1].cps, vec![1, 2, 3, 4, 9]);
        assert_eq!(j.series[2].cps, vec![8]);
        let text = serde_json::to_string(&j).unwrap();
        assert!(text.contains("\"server\":\"10.0.0.3:80\""), "{text}");
    }
}
