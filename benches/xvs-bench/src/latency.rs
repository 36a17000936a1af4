//! UDP request/response round-trip times: one request in flight, timed by busy-waiting on
//! a non-blocking socket (sleeping wake-ups cost about a millisecond on these VMs).

use super::stats;
use anyhow::{ensure, Context, Result};
use serde::Serialize;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

/// At most this many requests per run.
pub const MAX_COUNT: u32 = 1_000_000;

#[derive(Debug, Clone)]
pub struct LatencyOpts {
    pub dst: SocketAddr,
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

/// Sends `count` requests one after the other and reports the RTT distribution.
pub fn run(o: &LatencyOpts) -> Result<LatencyResult> {
    ensure!(
        o.count >= 1 && o.count <= MAX_COUNT,
        "count must be 1..={MAX_COUNT}"
    );
    ensure!(o.timeout <= Duration::from_secs(5), "timeout at most 5 s");
    ensure!(o.gap <= Duration::from_secs(1), "gap at most 1 s");
    ensure!(
        o.payload >= 1 && o.payload <= 1400,
        "payload 1..=1400 bytes"
    );
    let bind: SocketAddr = if o.dst.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let s = UdpSocket::bind(bind).context("binding a UDP socket")?;
    s.connect(o.dst)
        .with_context(|| format!("connecting the UDP socket to {}", o.dst))?;
    s.set_nonblocking(true).context("non-blocking socket")?;
    let req = vec![b'x'; o.payload];
    let mut buf = [0u8; 2048];
    let mut rtts = Vec::with_capacity(o.count as usize);
    let mut lost = 0u32;
    let total = o.warmup + o.count;
    for i in 0..total {
        // Drop anything late from an earlier (lost) request first.
        while s.recv(&mut buf).is_ok() {}
        let t0 = Instant::now();
        if let Err(e) = s.send(&req) {
            // ICMP unreachable from an earlier request surfaces here: count it lost.
            if e.kind() != std::io::ErrorKind::WouldBlock {
                if i >= o.warmup {
                    lost += 1;
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
        if i >= o.warmup {
            if answered {
                rtts.push(rtt.as_nanos() as f64 / 1000.0);
            } else {
                lost += 1;
            }
        }
        spin_until(Instant::now() + o.gap);
    }
    let n = rtts.len();
    let mean = if n > 0 {
        rtts.iter().sum::<f64>() / n as f64
    } else {
        0.0
    };
    let v = stats::sorted(rtts);
    let p = |q| stats::percentile(&v, q).unwrap_or(f64::NAN);
    Ok(LatencyResult {
        dst: o.dst.to_string(),
        sent: o.count,
        answered: n as u32,
        lost,
        p50_us: p(50.0),
        p90_us: p(90.0),
        p99_us: p(99.0),
        min_us: v.first().copied().unwrap_or(f64::NAN),
        max_us: v.last().copied().unwrap_or(f64::NAN),
        mean_us: mean,
    })
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
            dst: addr,
            count: 50,
            timeout: Duration::from_millis(500),
            gap: Duration::ZERO,
            payload: 32,
            warmup: 10,
        })
        .unwrap();
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
            dst: quiet.local_addr().unwrap(),
            count: 3,
            timeout: Duration::from_millis(5),
            gap: Duration::ZERO,
            payload: 8,
            warmup: 0,
        })
        .unwrap();
        assert_eq!(r.answered, 0);
        assert_eq!(r.lost, 3);
        assert!(r.p50_us.is_nan());
    }
}
