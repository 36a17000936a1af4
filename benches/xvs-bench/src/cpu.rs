//! CPU time of tasks (threads and kernel threads), for CPU nanoseconds per packet.
//!
//! Read from `/proc/TID/schedstat`, whose first field is the task's time on a CPU in
//! nanoseconds (the scheduler's sum_exec_runtime), precise where `/proc/TID/stat`'s
//! utime/stime only count 10 ms ticks.

use anyhow::{bail, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs;
use std::time::Instant;

/// A task to account for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Task {
    pub tid: i32,
    /// Its comm (thread name), e.g. `xvs-q0` or `napi/eth0-8193`.
    pub name: String,
}

fn comm(tid: i32) -> Option<String> {
    fs::read_to_string(format!("/proc/{tid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_string())
}

/// Every thread of process `pid`.
pub fn threads_of(pid: i32) -> Result<Vec<Task>> {
    let dir = match fs::read_dir(format!("/proc/{pid}/task")) {
        Ok(d) => d,
        Err(e) => bail!("process {pid}: {e}"),
    };
    let mut v = Vec::new();
    for e in dir.flatten().take(4096) {
        if let Some(tid) = e.file_name().to_str().and_then(|s| s.parse().ok()) {
            if let Some(name) = comm(tid) {
                v.push(Task { tid, name });
            }
        }
    }
    v.sort();
    Ok(v)
}

/// Task `tid` itself (a kernel thread, or one thread).
pub fn task(tid: i32) -> Result<Task> {
    match comm(tid) {
        Some(name) => Ok(Task { tid, name }),
        None => bail!("no task {tid}"),
    }
}

/// Kernel threads whose name starts with `prefix` (e.g. `napi/`, `ksoftirqd/`).
pub fn kthreads(prefix: &str) -> Vec<Task> {
    let mut v = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return v;
    };
    for e in dir.flatten().take(1 << 20) {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        // Kernel threads have an empty cmdline.
        let Ok(cmd) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if !cmd.is_empty() {
            continue;
        }
        if let Some(name) = comm(pid) {
            if name.starts_with(prefix) {
                v.push(Task { tid: pid, name });
            }
        }
    }
    v.sort();
    v
}

/// Nanoseconds task `tid` has run so far; None when it is gone.
pub fn cpu_ns(tid: i32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{tid}/schedstat")).ok()?;
    parse_schedstat(&s)
}

/// First field of a schedstat line.
pub fn parse_schedstat(s: &str) -> Option<u64> {
    s.split_whitespace().next()?.parse().ok()
}

/// CPU times of a set of tasks at one moment.
#[derive(Debug, Clone)]
pub struct CpuSample {
    pub at: Instant,
    pub ns: BTreeMap<i32, u64>,
}

pub fn sample(tasks: &[Task]) -> CpuSample {
    let at = Instant::now();
    let ns = tasks
        .iter()
        .filter_map(|t| cpu_ns(t.tid).map(|n| (t.tid, n)))
        .collect();
    CpuSample { at, ns }
}

/// One task's CPU time over an interval.
#[derive(Debug, Clone, Serialize)]
pub struct TaskCpu {
    pub tid: i32,
    pub name: String,
    pub ns: u64,
    /// Share of one CPU over the interval (1.0 = a whole CPU).
    pub cpu: f64,
}

/// CPU time per task between two samples (tasks present in both), and the total.
pub fn diff(tasks: &[Task], a: &CpuSample, b: &CpuSample) -> (Vec<TaskCpu>, u64) {
    let secs = b.at.duration_since(a.at).as_secs_f64();
    let mut v = Vec::new();
    let mut total = 0;
    for t in tasks {
        if let (Some(x), Some(y)) = (a.ns.get(&t.tid), b.ns.get(&t.tid)) {
            let d = y.saturating_sub(*x);
            total += d;
            v.push(TaskCpu {
                tid: t.tid,
                name: t.name.clone(),
                ns: d,
                cpu: if secs > 0.0 {
                    d as f64 / 1e9 / secs
                } else {
                    0.0
                },
            });
        }
    }
    (v, total)
}

/// Busy and total jiffies of the whole machine (the `cpu` line of /proc/stat: everything
/// but idle and iowait counts as busy).
pub fn machine_jiffies() -> Option<(u64, u64)> {
    let s = fs::read_to_string("/proc/stat").ok()?;
    parse_stat_cpu(s.lines().next()?)
}

/// (busy, total) from a `cpu  user nice system idle iowait irq softirq steal ...` line.
pub fn parse_stat_cpu(line: &str) -> Option<(u64, u64)> {
    let mut it = line.split_whitespace();
    if it.next()? != "cpu" {
        return None;
    }
    let v: Vec<u64> = it.take(8).filter_map(|x| x.parse().ok()).collect();
    if v.len() < 5 {
        return None;
    }
    let total: u64 = v.iter().sum();
    let idle = v[3] + v[4];
    Some((total - idle, total))
}

/// CPUs busy (0..=nproc) between two machine readings.
pub fn busy_cpus(a: (u64, u64), b: (u64, u64), ncpu: usize) -> f64 {
    let total = b.1.saturating_sub(a.1);
    if total == 0 {
        return 0.0;
    }
    b.0.saturating_sub(a.0) as f64 / total as f64 * ncpu as f64
}

#[cfg(test)]
mod tests {
    #[test]
    fn stat_cpu_line() {
        let (b, t) = parse_stat_cpu("cpu  100 5 50 800 10 0 5 0 0 0").unwrap();
        assert_eq!((b, t), (160, 970));
        assert_eq!(parse_stat_cpu("cpu0 1 2 3 4 5"), None);
        assert!((busy_cpus((0, 0), (50, 100), 2) - 1.0).abs() < 1e-9);
        assert_eq!(busy_cpus((5, 5), (5, 5), 2), 0.0);
    }

    use super::*;

    #[test]
    fn schedstat_first_field() {
        assert_eq!(parse_schedstat("76681997 5501652 420\n"), Some(76681997));
        assert_eq!(parse_schedstat(""), None);
        assert_eq!(parse_schedstat("x 1 2"), None);
    }

    #[test]
    fn own_threads_are_sampled() {
        let me = std::process::id() as i32;
        let tasks = threads_of(me).unwrap();
        assert!(tasks.iter().any(|t| t.tid == me));
        let a = sample(&tasks);
        // Burn a little CPU so the difference is positive.
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let b = sample(&tasks);
        let (_, total) = diff(&tasks, &a, &b);
        assert!(total > 0);
    }
}
