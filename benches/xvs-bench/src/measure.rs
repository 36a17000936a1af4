//! One measurement window: forwarded frames at the sinks and CPU time of the director's
//! tasks over the same interval, hence the forwarded rate, its spread over real servers and
//! CPU nanoseconds per forwarded packet.

use super::cpu::{self, Task};
use super::napi;
use super::sink::{self, Sink, SinkReading};
use super::sys::NsIf;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};
use std::time::Duration;

#[derive(Debug, Clone, Default)]
pub struct MeasureOpts {
    /// Sinks whose IPv4 frames are the forwarded traffic.
    pub sinks: Vec<NsIf>,
    /// Processes whose threads are all accounted (xvsd).
    pub pids: Vec<i32>,
    /// Single tasks (threads, kernel threads).
    pub tids: Vec<i32>,
    /// Interfaces whose NAPI kthreads are accounted.
    pub napis: Vec<NsIf>,
    /// Kernel threads by name prefix (e.g. `ksoftirqd/0`).
    pub kthreads: Vec<String>,
    /// Processes of the benchmark itself (a generator run separately): with this process
    /// and the sinks' NAPI kthreads, what the machine spends besides the director, so that
    /// other load ("foreign") can be told apart.
    pub bench_pids: Vec<i32>,
    pub interval: Duration,
}

/// The tasks to account for, resolved once.
pub fn resolve_tasks(o: &MeasureOpts) -> Result<Vec<Task>> {
    let mut tasks = Vec::new();
    for &p in &o.pids {
        tasks.extend(cpu::threads_of(p)?);
    }
    for &t in &o.tids {
        tasks.push(cpu::task(t)?);
    }
    for at in &o.napis {
        for n in napi::napis_threaded(at.netns.as_deref(), &at.ifname)? {
            tasks.push(cpu::task(n.pid).with_context(|| format!("NAPI thread of {at}"))?);
        }
    }
    for k in &o.kthreads {
        let found = cpu::kthreads(k);
        if found.is_empty() {
            bail!("no kernel thread named {k}*");
        }
        tasks.extend(found);
    }
    tasks.sort();
    tasks.dedup();
    Ok(tasks)
}

/// Sinks and tasks, resolved once, sampled at the start and end of windows.
pub struct Meter {
    sinks: Vec<Sink>,
    tasks: Vec<Task>,
    /// The sinks' NAPI kthreads (benchmark work, not the director's).
    sink_tasks: Vec<Task>,
    bench_pids: Vec<i32>,
    ncpu: usize,
}

/// Everything read at one moment.
pub struct Sample {
    sinks: Vec<SinkReading>,
    cpu: cpu::CpuSample,
    machine: Option<(u64, u64)>,
    /// CPU time of the benchmark's own work so far (ns).
    bench_ns: u64,
}

/// CPU time of this whole process (all threads, also finished ones), in ns.
fn own_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// What happened between two samples.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    pub interval_s: f64,
    /// IPv4 frames the sinks counted.
    pub packets: u64,
    /// Every frame the sinks counted.
    pub all_packets: u64,
    pub pps: f64,
    pub per_key: Vec<sink::KeyRate>,
    pub cpu: Vec<cpu::TaskCpu>,
    pub cpu_ns: u64,
    /// Director CPUs busy (the accounted tasks).
    pub cpus_busy: f64,
    /// The whole machine's busy CPUs (generator and sink included; other load shows here).
    pub machine_busy: Option<f64>,
    /// CPUs busy with the benchmark itself (generator, sinks, this tool).
    pub bench_busy: f64,
    /// Busy CPUs that are neither the director nor the benchmark: other load, which skews
    /// the window (a few hundredths are interrupts and housekeeping).
    pub foreign_busy: Option<f64>,
    pub ns_per_pkt: Option<f64>,
}

impl Meter {
    pub fn new(o: &MeasureOpts) -> Result<Meter> {
        let mut sink_tasks = Vec::new();
        for at in &o.sinks {
            // A sink without threaded NAPI simply is not accounted.
            for n in napi::napis(at.netns.as_deref(), &at.ifname).unwrap_or_default() {
                if n.pid > 0 {
                    if let Ok(t) = cpu::task(n.pid) {
                        sink_tasks.push(t);
                    }
                }
            }
        }
        Ok(Meter {
            sinks: o.sinks.iter().map(Sink::open).collect::<Result<_>>()?,
            tasks: resolve_tasks(o)?,
            sink_tasks,
            bench_pids: o.bench_pids.clone(),
            ncpu: std::thread::available_parallelism().map_or(1, |n| n.get()),
        })
    }

    pub fn sample(&self) -> Result<Sample> {
        let mut bench_ns = own_cpu_ns();
        bench_ns += self
            .sink_tasks
            .iter()
            .filter_map(|t| cpu::cpu_ns(t.tid))
            .sum::<u64>();
        for &p in &self.bench_pids {
            if let Ok(ts) = cpu::threads_of(p) {
                bench_ns += ts.iter().filter_map(|t| cpu::cpu_ns(t.tid)).sum::<u64>();
            }
        }
        Ok(Sample {
            sinks: self.sinks.iter().map(|s| s.read()).collect::<Result<_>>()?,
            cpu: cpu::sample(&self.tasks),
            machine: cpu::machine_jiffies(),
            bench_ns,
        })
    }

    pub fn window(&self, a: &Sample, b: &Sample) -> Window {
        let mut per_key = Vec::new();
        let (mut packets, mut all, mut secs) = (0u64, 0u64, 0f64);
        for (i, s) in self.sinks.iter().enumerate() {
            let (k, ipv4, n, t) = sink::diff(&s.at.to_string(), &a.sinks[i], &b.sinks[i]);
            per_key.extend(k);
            packets += ipv4;
            all += n;
            secs = secs.max(t);
        }
        let (cpu, cpu_ns) = cpu::diff(&self.tasks, &a.cpu, &b.cpu);
        let cpu_secs = b.cpu.at.duration_since(a.cpu.at).as_secs_f64();
        let per_sec = |ns: u64| {
            if cpu_secs > 0.0 {
                ns as f64 / 1e9 / cpu_secs
            } else {
                0.0
            }
        };
        let cpus_busy = per_sec(cpu_ns);
        let bench_busy = per_sec(b.bench_ns.saturating_sub(a.bench_ns));
        let machine_busy = match (a.machine, b.machine) {
            (Some(x), Some(y)) => Some(cpu::busy_cpus(x, y, self.ncpu)),
            _ => None,
        };
        Window {
            interval_s: secs,
            packets,
            all_packets: all,
            pps: if secs > 0.0 {
                packets as f64 / secs
            } else {
                0.0
            },
            per_key,
            cpu,
            cpu_ns,
            cpus_busy,
            machine_busy,
            bench_busy,
            foreign_busy: machine_busy.map(|m| (m - cpus_busy - bench_busy).max(0.0)),
            ns_per_pkt: (packets > 0 && !self.tasks.is_empty())
                .then(|| cpu_ns as f64 / packets as f64),
        }
    }
}

/// Measures one window; returns a JSON object (`kind: "rate"`).
pub fn measure(o: &MeasureOpts) -> Result<Value> {
    if o.interval.is_zero() || o.interval > Duration::from_secs(600) {
        bail!("interval must be in (0, 600] s");
    }
    let m = Meter::new(o)?;
    let a = m.sample()?;
    std::thread::sleep(o.interval);
    let b = m.sample()?;
    let mut v = serde_json::to_value(m.window(&a, &b))?;
    v["kind"] = json!("rate");
    Ok(v)
}

/// One line for people: rate, CPU and the spread over destinations.
pub fn summary(v: &Value) -> String {
    let pps = v["pps"].as_f64().unwrap_or(0.0);
    let mut s = format!("pps={:.0} ({:.3} Mpps)", pps, pps / 1e6);
    if let Some(ns) = v["ns_per_pkt"].as_f64() {
        s += &format!(
            " cpu_ns_per_pkt={:.0} cpus_busy={:.2}",
            ns,
            v["cpus_busy"].as_f64().unwrap_or(0.0)
        );
    }
    if let Some(keys) = v["per_key"].as_array() {
        for k in keys {
            s += &format!(
                " [{} {} {}: {:.0} pps]",
                k["mac"].as_str().unwrap_or("?"),
                k["kind"].as_str().unwrap_or("?"),
                k["daddr"].as_str().unwrap_or("?"),
                k["pps"].as_f64().unwrap_or(0.0)
            );
        }
    }
    s
}
