//! Peak forwarding rate: the generator runs once and its rate is changed between
//! measurement windows, searching for the offered rate the forwarder handles best.
//!
//! Why not simply "flat out": on a shared core an AF_XDP forwarder under overload spends
//! its CPU on receiving frames it must then drop (the kernel's NAPI fills the socket's RX
//! ring faster than the worker empties it), so the rate it forwards at 5+ Mpps offered is
//! well below the rate it forwards at, say, 0.8 Mpps: receive livelock. The flat-out figure
//! is kept (it is what an overload does to the director), the peak is what the director can
//! forward.
//!
//! Search: one window flat out (F0); then offered rates from 1.1 × F0, growing by 1.5× while
//! the loss stays within `loss_ok`, then bisecting between the highest rate within it and the
//! lowest beyond it, until they are within 4% or the steps run out. The peak is the highest
//! forwarded rate of any window (its CPU ns/packet is quoted with it); the lossless rate is
//! the highest offered rate whose loss stayed within `loss_ok`.

use super::gen::Generator;
use super::measure::{Meter, Window};
use anyhow::{bail, Result};
use serde::Serialize;
use serde_json::{json, Value};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct PeakOpts {
    /// Flat-out warm-up before the first window.
    pub warmup: Duration,
    /// After a rate change, before the window.
    pub settle: Duration,
    pub window: Duration,
    /// Windows after the flat-out one.
    pub max_steps: u32,
    /// Loss (fraction of offered) still counted as "handled".
    pub loss_ok: f64,
    /// Lowest rate tried (frames/s).
    pub min_rate: u64,
}

impl Default for PeakOpts {
    fn default() -> Self {
        PeakOpts {
            warmup: Duration::from_millis(500),
            settle: Duration::from_millis(300),
            window: Duration::from_secs(1),
            max_steps: 7,
            loss_ok: 0.01,
            min_rate: 10_000,
        }
    }
}

/// One window of the search.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Target rate (0 = flat out).
    pub rate: u64,
    /// Frames the generator sent per second during the window.
    pub offered_pps: f64,
    pub fwd_pps: f64,
    pub loss: f64,
    pub ns_per_pkt: Option<f64>,
    pub cpus_busy: f64,
}

/// Where the search goes next: (lowest rate beyond loss_ok, highest within it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bracket {
    pub ok: Option<u64>,
    pub over: Option<u64>,
}

impl Bracket {
    /// Records a window at `rate` and returns the next rate, or None when done.
    pub fn next(&mut self, rate: u64, within: bool) -> Option<u64> {
        if within {
            self.ok = Some(self.ok.map_or(rate, |o| o.max(rate)));
        } else {
            self.over = Some(self.over.map_or(rate, |o| o.min(rate)));
        }
        match (self.ok, self.over) {
            (_, None) => Some(rate + rate / 2),
            (None, Some(h)) => Some(h * 2 / 3),
            (Some(l), Some(h)) if h <= l => None, // inconsistent (noise): stop here
            (Some(l), Some(h)) if (h - l) * 25 <= l => None, // within 4%
            (Some(l), Some(h)) => Some(l + (h - l) / 2),
        }
    }
}

fn step(g: &Generator, meter: &Meter, rate: u64, window: Duration) -> Result<(Step, Window)> {
    let s0 = g.sent();
    let a = meter.sample()?;
    std::thread::sleep(window);
    let b = meter.sample()?;
    let s1 = g.sent();
    let w = meter.window(&a, &b);
    let offered = if w.interval_s > 0.0 {
        s1.saturating_sub(s0) as f64 / w.interval_s
    } else {
        0.0
    };
    let loss = if offered > 0.0 {
        (1.0 - w.pps / offered).max(0.0)
    } else {
        0.0
    };
    Ok((
        Step {
            rate,
            offered_pps: offered,
            fwd_pps: w.pps,
            loss,
            ns_per_pkt: w.ns_per_pkt,
            cpus_busy: w.cpus_busy,
        },
        w,
    ))
}

/// Runs the search with a loaded generator (not running yet). Returns the `rate` record.
pub fn run(
    g: &Generator,
    meter: &Meter,
    o: &PeakOpts,
    log: &mut dyn FnMut(&Step),
) -> Result<Value> {
    if o.window.is_zero() || o.max_steps > 50 {
        bail!("window must be > 0 and steps at most 50");
    }
    g.set_rate(0);
    let running = g.start()?;
    let out = (|| -> Result<Value> {
        std::thread::sleep(o.warmup);
        let (flat, flat_w) = step(g, meter, 0, o.window)?;
        log(&flat);
        let mut steps_foreign = vec![flat_w.foreign_busy.unwrap_or(0.0)];
        let mut best = (flat.clone(), flat_w.clone());
        let mut steps = vec![flat.clone()];
        let mut br = Bracket {
            ok: None,
            over: None,
        };
        let mut lossless: Option<Step> = None;
        let mut rate = ((flat.fwd_pps * 1.1) as u64).max(o.min_rate);
        for _ in 0..o.max_steps {
            if running.all_finished() {
                bail!("the generator stopped (duration over, or it failed)");
            }
            g.set_rate(rate);
            std::thread::sleep(o.settle);
            let (s, w) = step(g, meter, rate, o.window)?;
            log(&s);
            steps_foreign.push(w.foreign_busy.unwrap_or(0.0));
            let within = s.loss <= o.loss_ok;
            if within && lossless.as_ref().is_none_or(|l| s.rate > l.rate) {
                lossless = Some(s.clone());
            }
            if s.fwd_pps > best.0.fwd_pps {
                best = (s.clone(), w);
            }
            steps.push(s);
            match br.next(rate, within) {
                Some(r) => rate = r.max(o.min_rate),
                None => break,
            }
        }
        let (b, bw) = best;
        let foreign_max = steps_foreign.iter().copied().fold(0.0f64, f64::max);
        let mut v = serde_json::to_value(&bw)?;
        v["foreign_busy_max"] = json!(foreign_max);
        v["kind"] = json!("rate");
        v["pps"] = json!(b.fwd_pps);
        v["offered_pps"] = json!(b.offered_pps);
        v["flat_pps"] = json!(flat.fwd_pps);
        v["flat_offered_pps"] = json!(flat.offered_pps);
        v["flat_ns_per_pkt"] = json!(flat.ns_per_pkt);
        v["lossless_pps"] = json!(lossless.as_ref().map(|l| l.fwd_pps));
        v["steps"] = serde_json::to_value(&steps)?;
        Ok(v)
    })();
    let stopped = running.stop();
    let v = out?;
    stopped?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Simulates a forwarder with capacity `cap`: the search must bracket it within 4%.
    #[test]
    fn bracket_converges_on_capacity() {
        for cap in [50_000u64, 700_000, 3_000_000] {
            let mut br = Bracket {
                ok: None,
                over: None,
            };
            let mut rate = 20_000u64;
            let mut n = 0;
            while let Some(r) = br.next(rate, rate <= cap) {
                rate = r;
                n += 1;
                assert!(n < 40, "no convergence for {cap}");
            }
            let (l, h) = (br.ok.unwrap(), br.over.unwrap());
            assert!(l <= cap && cap < h, "{l} {cap} {h}");
            assert!((h - l) * 25 <= l);
        }
    }

    #[test]
    fn bracket_starting_above_capacity_comes_down() {
        let mut br = Bracket {
            ok: None,
            over: None,
        };
        assert_eq!(br.next(900, false), Some(600));
        assert_eq!(br.next(600, true), Some(750));
        assert_eq!(br.next(750, false), Some(675));
        // Noise: a rate above a failed one succeeds; stop rather than loop.
        let mut br = Bracket {
            ok: None,
            over: None,
        };
        br.next(500, false);
        assert_eq!(br.next(600, true), None);
    }
}
