//! UDP request/response round-trip times: one request in flight, timed by busy-waiting on
//! a non-blocking socket (sleeping wake-ups cost about a millisecond on these VMs).
//!
//! Several destinations are measured in one run by alternating requests between them
//! (request i goes to destination i mod n): "direct to the real server" and "through the
//! director" then see the same client, the same responder, the same CPU and VM state over
//! the same seconds, so their difference is the director's hop and nothing else. Measured
//! one after the other instead, a smoke run once showed the director "lowering" latency by
//! 24 µs (the machine's state had changed between the two runs).

use super::stats;
use anyhow::{ensure, Context, Result};
use serde::Serialize;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// At most this many requests per run.
pub const MAX_COUNT: u32 = 1_000_000;

#[derive(Debug, Clone)]
pub struct LatencyOpts {
    /// Destinations, requests alternating between them.
    pub dsts: Vec<SocketAddr>,
    pub count: u32,
    /// Requests not answered within this are counted lost.
    pub timeout: Duration,
    /// Pause between an answer and the next request.
    pub gap: Duration,
    pub payload: usize,
    /// Requests before measuring (fill caches, connection entries, neighbour entries).
    pub warmup: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyResult {
    pub dst: String,
    pub sent: u32,
    pub answered: u32,
    pub lost: u32,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub min_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

fn spin_until(t: Instant) {
    while Instant::now() < t {
        std::hint::spin_loop();
    }
}

/// Sends `count` requests to each destination, one request in flight, alternating between
/// the destinations, and reports each one's RTT distribution (in the order given).
pub fn run(o: &LatencyOpts) -> Result<Vec<LatencyResult>> {
    ensure!(
        o.count >= 1 && o.count <= MAX_COUNT,
        "count must be 1..={MAX_COUNT}"
    );
    ensure!(
        !o.dsts.is_empty() && o.dsts.len() <= 8,
        "1 to 8 destinations"
    );
    ensure!(o.timeout <= Duration::from_secs(5), "timeout at most 5 s");
    ensure!(o.gap <= Duration::from_secs(1), "gap at most 1 s");
    ensure!(
        o.payload >= 1 && o.payload <= 1400,
        "payload 1..=1400 bytes"
    );
    let mut socks = Vec::with_capacity(o.dsts.len());
    for dst in &o.dsts {
        let bind: SocketAddr = if dst.is_ipv4() {
            "0.0.0.0:0".parse().expect("literal")
        } else {
            "[::]:0".parse().expect("literal")
        };
        let s = UdpSocket::bind(bind).context("binding a UDP socket")?;
        s.connect(dst)
            .with_context(|| format!("connecting the UDP socket to {dst}"))?;
        s.set_nonblocking(true).context("non-blocking socket")?;
        socks.push(s);
    }
    let req = vec![b'x'; o.payload];
    let mut buf = [0u8; 2048];
    let n_dst = socks.len();
    let mut rtts: Vec<Vec<f64>> = (0..n_dst)
        .map(|_| Vec::with_capacity(o.count as usize))
        .collect();
    let mut lost = vec![0u32; n_dst];
    let total = (o.warmup + o.count) as usize * n_dst;
    for i in 0..total {
        let d = i % n_dst;
        let measured = i / n_dst >= o.warmup as usize;
        let s = &socks[d];
        // Drop anything late from an earlier (lost) request first.
        while s.recv(&mut buf).is_ok() {}
        let t0 = Instant::now();
        if let Err(e) = s.send(&req) {
            // ICMP unreachable from an earlier request surfaces here: count it lost.
            if e.kind() != std::io::ErrorKind::WouldBlock {
                if measured {
                    lost[d] += 1;
                }
                spin_until(t0 + o.gap);
                continue;
            }
        }
        let deadline = t0 + o.timeout;
        let mut answered = false;
        loop {
            match s.recv(&mut buf) {
                Ok(_) => {
                    answered = true;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => break, // refused: nobody listens
            }
            if Instant::now() >= deadline {
                break;
            }
            std::hint::spin_loop();
        }
        let rtt = t0.elapsed();
        if measured {
            if answered {
                rtts[d].push(rtt.as_nanos() as f64 / 1000.0);
            } else {
                lost[d] += 1;
            }
        }
        spin_until(Instant::now() + o.gap);
    }
    Ok(o.dsts
        .iter()
        .zip(rtts)
        .zip(lost)
        .map(|((dst, rtts), lost)| summarise(dst, o.count, rtts, lost))
        .collect())
}

fn summarise(dst: &SocketAddr, sent: u32, rtts: Vec<f64>, lost: u32) -> LatencyResult {
    let n = rtts.len();
    let mean = if n > 0 {
        rtts.iter().sum::<f64>() / n as f64
    } else {
        0.0
    };
    let v = stats::sorted(rtts);
    let p = |q| stats::percentile(&v, q).unwrap_or(f64::NAN);
    LatencyResult {
        dst: dst.to_string(),
        sent,
        answered: n as u32,
        lost,
        p50_us: p(50.0),
        p90_us: p(90.0),
        p99_us: p(99.0),
        min_us: v.first().copied().unwrap_or(f64::NAN),
        max_us: v.last().copied().unwrap_or(f64::NAN),
        mean_us: mean,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A local echo responder: the RTT machinery end to end over loopback.
    #[test]
    fn loopback_echo() {
        let srv = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = srv.local_addr().unwrap();
        srv.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let t = std::thread::spawn(move || {
            let mut b = [0u8; 2048];
            for _ in 0..60 {
                let Ok((n, from)) = srv.recv_from(&mut b) else {
                    break;
                };
                srv.send_to(&b[..n], from).unwrap();
            }
        });
        let r = run(&LatencyOpts {
            dsts: vec![addr],
            count: 50,
            timeout: Duration::from_millis(500),
            gap: Duration::ZERO,
            payload: 32,
            warmup: 10,
        })
        .unwrap()
        .remove(0);
        t.join().unwrap();
        assert_eq!(r.answered, 50);
        assert_eq!(r.lost, 0);
        assert!(r.p50_us > 0.0 && r.p50_us <= r.p99_us && r.p99_us <= r.max_us);
    }

    #[test]
    fn unanswered_requests_are_lost() {
        // A bound socket that never answers.
        let quiet = UdpSocket::bind("127.0.0.1:0").unwrap();
        let r = run(&LatencyOpts {
            dsts: vec![quiet.local_addr().unwrap()],
            count: 3,
            timeout: Duration::from_millis(5),
            gap: Duration::ZERO,
            payload: 8,
            warmup: 0,
        })
        .unwrap()
        .remove(0);
        assert_eq!(r.answered, 0);
        assert_eq!(r.lost, 3);
        assert!(r.p50_us.is_nan());
    }

    /// Two destinations in one run: requests alternate, each is summarised on its own (an
    /// answering one and a silent one cannot be mixed up).
    #[test]
    fn alternating_destinations_are_kept_apart() {
        let srv = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = srv.local_addr().unwrap();
        srv.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let t = std::thread::spawn(move || {
            let mut b = [0u8; 2048];
            let mut n_seen = 0;
            while let Ok((n, from)) = srv.recv_from(&mut b) {
                srv.send_to(&b[..n], from).unwrap();
                n_seen += 1;
                if n_seen == 12 {
                    break;
                }
            }
            n_seen
        });
        let quiet = UdpSocket::bind("127.0.0.1:0").unwrap();
        let r = run(&LatencyOpts {
            dsts: vec![addr, quiet.local_addr().unwrap()],
            count: 10,
            timeout: Duration::from_millis(200), // a loaded CI machine missed 5 ms once
            gap: Duration::ZERO,
            payload: 8,
            warmup: 2,
        })
        .unwrap();
        assert_eq!(
            t.join().unwrap(),
            12,
            "warm-up and measured requests to the echo"
        );
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].dst, addr.to_string());
        assert_eq!((r[0].answered, r[0].lost), (10, 0));
        assert_eq!((r[1].answered, r[1].lost), (0, 10));
    }
}
