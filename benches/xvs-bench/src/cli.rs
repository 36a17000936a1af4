//! `xvs-bench` command line: parsing (clap) and dispatch. Every command is bounded in time
//! and count.

use super::frame::{FrameSpec, Mac, Mode, Proto};
use super::gen::{self, GenOpts, Generator};
use super::latency::{self, LatencyOpts};
use super::measure::{self, MeasureOpts, Meter};
use super::peak::{self, PeakOpts};
use super::sys::{self, NsIf};
use super::{cpu, napi, report, sink};
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::{json, Map, Value};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Benchmark tools for xvs: load generator, counting sink, CPU, latency and the report of
/// scripts/bench.sh.
#[derive(Parser, Debug)]
#[command(name = "xvs-bench", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Generate frames with BPF_PROG_RUN live frames out of an interface (run it in the
    /// interface's namespace, e.g. under `ip netns exec`).
    Gen(GenArgs),
    /// Attach, detach or read the counting sink.
    #[command(subcommand)]
    Sink(SinkCmd),
    /// UDP request/response round-trip times (p50/p99).
    Latency(LatencyArgs),
    /// CPU time of processes, threads and kernel threads over an interval.
    Cpu(CpuArgs),
    /// NAPI instances of an interface and their kthreads; optionally pin them.
    Napi(NapiArgs),
    /// One measurement window: sink rates and director CPU together.
    Measure(MeasureArgs),
    /// Peak forwarding rate: generate, and search the offered rate forwarded best.
    Peak(PeakArgs),
    /// Table of a bench.sh results file; optionally written into docs/benchmarks.md.
    Report(ReportArgs),
    /// Wait (bounded) until the machine is nearly idle: other load skews every figure.
    Quiet(QuietArgs),
}

#[derive(Args, Debug)]
pub struct QuietArgs {
    /// Busy CPUs (summed over the machine) below which it counts as quiet.
    #[arg(long, default_value_t = 0.3)]
    pub max_busy: f64,
    /// Give up after this many seconds (exit 0 anyway, saying so).
    #[arg(long, default_value = "60", value_parser = parse_secs)]
    pub timeout: Duration,
}

/// `--tag k=v` and `--out FILE`: record a result as one JSON line.
#[derive(Args, Debug, Default, Clone)]
pub struct Record {
    /// Extra key=value pair in the JSON result (repeatable), e.g. --tag row=dr.
    #[arg(long = "tag", value_parser = parse_tag)]
    pub tags: Vec<(String, String)>,
    /// Append the JSON result as one line to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print the JSON result instead of the human summary.
    #[arg(long)]
    pub json: bool,
    /// Print only these top-level fields (comma-separated) of the JSON result, space
    /// separated, `-` for a missing one (for scripts); the human summary then goes to
    /// stderr.
    #[arg(long)]
    pub value: Option<String>,
}

fn parse_tag(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("tag must be key=value (got '{s}')")),
    }
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let x: f64 = s
        .parse()
        .map_err(|_| format!("bad number of seconds '{s}'"))?;
    if !(x.is_finite() && (0.0..=600.0).contains(&x)) {
        return Err(format!("seconds must be 0..=600 (got {s})"));
    }
    Ok(Duration::from_secs_f64(x))
}

/// A list of CPUs (clap treats a bare `Vec` as repeated values, hence the wrapper).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuList(pub Vec<usize>);

fn parse_cpus(s: &str) -> Result<CpuList, String> {
    sys::parse_cpus(s).map(CpuList)
}

/// Numbers with an optional k/M suffix: 1000, 50k, 1.5M.
fn parse_count(s: &str) -> Result<u64, String> {
    let (num, mul) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1e3),
        Some('M') => (&s[..s.len() - 1], 1e6),
        Some('G') => (&s[..s.len() - 1], 1e9),
        _ => (s, 1.0),
    };
    let x: f64 = num.parse().map_err(|_| format!("bad number '{s}'"))?;
    let v = x * mul;
    if !(v.is_finite() && (0.0..1.8e19).contains(&v)) {
        return Err(format!("bad number '{s}'"));
    }
    Ok(v.round() as u64)
}

/// What the generator sends (shared by `gen` and `peak`).
#[derive(Args, Debug)]
pub struct FrameArgs {
    /// Interface to send from (its peer receives the frames).
    #[arg(long)]
    pub ifname: String,
    /// Network namespace of the interface (default: ours, e.g. under ip netns exec).
    #[arg(long)]
    pub netns: Option<String>,
    /// Destination MAC (the director's interface).
    #[arg(long)]
    pub dst_mac: Mac,
    /// Source MAC (default: the interface's own).
    #[arg(long)]
    pub src_mac: Option<Mac>,
    /// Destination address (the VIP).
    #[arg(long)]
    pub dst_ip: Ipv4Addr,
    #[arg(long, default_value_t = 80)]
    pub dst_port: u16,
    /// Source addresses: this /16, host parts 1..65534.
    #[arg(long, default_value = "10.1.0.0")]
    pub src_net: Ipv4Addr,
    #[arg(long, default_value = "udp")]
    pub proto: Proto,
    /// Frame size on the wire, FCS included: 64..1518.
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Flows (established mode), spread over the generator CPUs; k/M suffixes allowed.
    #[arg(long, default_value = "1024", value_parser = parse_count)]
    pub flows: u64,
    /// established: cycle over the flows; new: every frame a new flow; mix: every 5th frame a
    /// new flow, the others cycling over the flows (20% new / 80% established).
    #[arg(long, default_value = "established")]
    pub mode: Mode,
    /// CPUs to generate on, one thread each: e.g. 1 or 0,1.
    #[arg(long, default_value = "1", value_parser = parse_cpus)]
    pub cpus: CpuList,
    /// Pacing: frames sent back to back at most after falling behind.
    #[arg(long, default_value_t = 32)]
    pub burst: u32,
}

#[derive(Args, Debug)]
pub struct GenArgs {
    #[command(flatten)]
    pub frame: FrameArgs,
    /// Frames per second over all CPUs; 0 = as fast as possible. k/M suffixes allowed.
    #[arg(long, default_value = "0", value_parser = parse_count)]
    pub rate: u64,
    /// Seconds to send (at most 600).
    #[arg(long, default_value = "5", value_parser = parse_secs)]
    pub duration: Duration,
    /// No progress lines.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub record: Record,
}

#[derive(Args, Debug)]
pub struct PeakArgs {
    #[command(flatten)]
    pub frame: FrameArgs,
    /// Sink [NETNS:]IFNAME whose IPv4 frames are the forwarded traffic (repeatable).
    #[arg(long = "sink", required = true)]
    pub sinks: Vec<NsIf>,
    #[command(flatten)]
    pub tasks: TaskArgs,
    /// Seconds per measurement window.
    #[arg(long, default_value = "1", value_parser = parse_secs)]
    pub window: Duration,
    /// Seconds flat out before the first window.
    #[arg(long, default_value = "0.5", value_parser = parse_secs)]
    pub warmup: Duration,
    /// Seconds after a rate change before its window.
    #[arg(long, default_value = "0.3", value_parser = parse_secs)]
    pub settle: Duration,
    /// Windows after the flat-out one.
    #[arg(long, default_value_t = 7)]
    pub steps: u32,
    /// Loss (percent of offered) still counted as handled.
    #[arg(long, default_value_t = 1.0)]
    pub loss_ok: f64,
    /// Print each window.
    #[arg(long, short)]
    pub verbose: bool,
    #[command(flatten)]
    pub record: Record,
}

#[derive(Subcommand, Debug)]
pub enum SinkCmd {
    /// Load the sink and attach it (native XDP); it stays attached after we exit.
    Attach {
        /// [NETNS:]IFNAME
        at: NsIf,
        /// Pass frames on to the kernel after counting (default: drop).
        #[arg(long)]
        pass: bool,
    },
    /// Detach the sink (only a program named xvs_sink is ever detached).
    Detach { at: NsIf },
    /// Print the counters: totals, or rates over --interval seconds.
    Read {
        /// [NETNS:]IFNAME (repeatable: several sinks are summed).
        #[arg(required = true)]
        at: Vec<NsIf>,
        /// Seconds between two readings (0: print the cumulative counters).
        #[arg(long, default_value = "0", value_parser = parse_secs)]
        interval: Duration,
        #[command(flatten)]
        record: Record,
    },
}

#[derive(Args, Debug)]
pub struct LatencyArgs {
    /// IP:PORT of the UDP responder (e.g. the VIP, or a real server directly). Repeatable:
    /// requests then alternate between the destinations (like with like: same client, same
    /// seconds) and each gets its own result line.
    #[arg(long, required = true)]
    pub dst: Vec<SocketAddr>,
    /// The `row` tag of each destination's result, in --dst order (repeatable; default: none).
    #[arg(long = "row")]
    pub rows: Vec<String>,
    #[arg(long, default_value_t = 2000)]
    pub count: u32,
    /// Requests before measuring.
    #[arg(long, default_value_t = 100)]
    pub warmup: u32,
    /// Milliseconds before a request counts as lost.
    #[arg(long, default_value_t = 200)]
    pub timeout_ms: u64,
    /// Microseconds between an answer and the next request.
    #[arg(long, default_value_t = 100)]
    pub gap_us: u64,
    #[arg(long, default_value_t = 32)]
    pub payload: usize,
    #[command(flatten)]
    pub record: Record,
}

#[derive(Args, Debug, Clone)]
pub struct TaskArgs {
    /// Every thread of this process (repeatable).
    #[arg(long = "pid")]
    pub pids: Vec<i32>,
    /// This thread or kernel thread (repeatable).
    #[arg(long = "tid")]
    pub tids: Vec<i32>,
    /// The NAPI kthreads of [NETNS:]IFNAME (repeatable).
    #[arg(long = "napi")]
    pub napis: Vec<NsIf>,
    /// Kernel threads whose name starts with this, e.g. napi/ or ksoftirqd/0 (repeatable).
    #[arg(long = "kthread")]
    pub kthreads: Vec<String>,
    /// A process of the benchmark itself, e.g. a separate generator (repeatable): not
    /// accounted to the director, not counted as other load.
    #[arg(long = "bench-pid")]
    pub bench_pids: Vec<i32>,
}

#[derive(Args, Debug)]
pub struct CpuArgs {
    #[command(flatten)]
    pub tasks: TaskArgs,
    /// Seconds to sample over.
    #[arg(long, default_value = "1", value_parser = parse_secs)]
    pub interval: Duration,
    #[command(flatten)]
    pub record: Record,
}

#[derive(Args, Debug)]
pub struct NapiArgs {
    /// [NETNS:]IFNAME
    pub at: NsIf,
    /// Pin the NAPI kthreads: one CPU for all, or one per NAPI instance in id order (0,1).
    #[arg(long, value_parser = parse_cpus_ordered)]
    pub pin: Option<CpuList>,
    /// Wait (bounded) for every NAPI instance to have a kthread.
    #[arg(long)]
    pub threaded: bool,
    /// Also make the kthreads SCHED_FIFO at this priority (the sink side of the bench
    /// topology: it must keep up however busy its CPU is).
    #[arg(long)]
    pub fifo: Option<i32>,
}

/// A CPU list in the given order (per-queue pinning).
fn parse_cpus_ordered(s: &str) -> Result<CpuList, String> {
    s.split(',')
        .map(|p| {
            p.trim()
                .parse::<usize>()
                .ok()
                .filter(|&c| c < 1024)
                .ok_or_else(|| format!("bad CPU list '{s}' (want e.g. 1 or 0,1)"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(CpuList)
}

#[derive(Args, Debug)]
pub struct MeasureArgs {
    /// Sink [NETNS:]IFNAME whose IPv4 frames are the forwarded traffic (repeatable).
    #[arg(long = "sink", required = true)]
    pub sinks: Vec<NsIf>,
    #[command(flatten)]
    pub tasks: TaskArgs,
    /// Seconds to measure over.
    #[arg(long, default_value = "2", value_parser = parse_secs)]
    pub interval: Duration,
    #[command(flatten)]
    pub record: Record,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// JSON lines recorded by bench.sh.
    #[arg(long)]
    pub results: PathBuf,
    /// Write the table into this file's bench.sh section (e.g. docs/benchmarks.md).
    #[arg(long)]
    pub write_docs: Option<PathBuf>,
}

/// Emits a JSON result: stdout (JSON or the summary) and optionally a results file.
fn emit(rec: &Record, mut v: Value, summary: &str) -> Result<()> {
    if let Value::Object(m) = &mut v {
        for (k, val) in &rec.tags {
            m.insert(k.clone(), Value::String(val.clone()));
        }
    }
    let line = serde_json::to_string(&v)?;
    if let Some(fields) = &rec.value {
        eprintln!("{summary}");
        let mut out = Vec::new();
        for f in fields.split(',') {
            out.push(match &v[f] {
                Value::Null => "-".to_string(),
                Value::String(x) => x.clone(),
                x => x.to_string(),
            });
        }
        println!("{}", out.join(" "));
    } else if rec.json {
        println!("{line}");
    } else {
        println!("{summary}");
    }
    if let Some(p) = &rec.out {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .with_context(|| format!("opening {}", p.display()))?;
        writeln!(f, "{line}").with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

fn measure_opts(t: &TaskArgs, sinks: Vec<NsIf>, interval: Duration) -> MeasureOpts {
    MeasureOpts {
        sinks,
        pids: t.pids.clone(),
        tids: t.tids.clone(),
        napis: t.napis.clone(),
        kthreads: t.kthreads.clone(),
        bench_pids: t.bench_pids.clone(),
        interval,
    }
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Gen(a) => cmd_gen(a),
        Cmd::Peak(a) => cmd_peak(a),
        Cmd::Sink(c) => cmd_sink(c),
        Cmd::Latency(a) => {
            if !a.rows.is_empty() && a.rows.len() != a.dst.len() {
                bail!(
                    "give one --row per --dst ({} vs {})",
                    a.rows.len(),
                    a.dst.len()
                );
            }
            let results = latency::run(&LatencyOpts {
                dsts: a.dst.clone(),
                count: a.count,
                timeout: Duration::from_millis(a.timeout_ms),
                gap: Duration::from_micros(a.gap_us),
                payload: a.payload,
                warmup: a.warmup,
            })?;
            for (i, r) in results.iter().enumerate() {
                let summary = format!(
                    "{}: {} answered, {} lost; RTT p50 {:.1} µs, p90 {:.1} µs, p99 {:.1} µs (min {:.1}, max {:.1})",
                    r.dst, r.answered, r.lost, r.p50_us, r.p90_us, r.p99_us, r.min_us, r.max_us
                );
                let mut v = serde_json::to_value(r)?;
                v["kind"] = json!("latency");
                if let Some(row) = a.rows.get(i) {
                    v["row"] = json!(row);
                }
                emit(&a.record, v, &summary)?;
            }
            Ok(())
        }
        Cmd::Cpu(a) => {
            let o = measure_opts(&a.tasks, Vec::new(), a.interval);
            let tasks = measure::resolve_tasks(&o)?;
            if tasks.is_empty() {
                bail!("no tasks to sample (give --pid, --tid, --napi or --kthread)");
            }
            let c0 = cpu::sample(&tasks);
            std::thread::sleep(a.interval);
            let c1 = cpu::sample(&tasks);
            let (per, total) = cpu::diff(&tasks, &c0, &c1);
            let secs = c1.at.duration_since(c0.at).as_secs_f64();
            let mut summary = format!(
                "{:.3} s: {} ns total ({:.2} CPUs)",
                secs,
                total,
                total as f64 / 1e9 / secs
            );
            for t in &per {
                summary += &format!(
                    "\n  {:>7} {:<16} {:>12} ns  {:.2} CPU",
                    t.tid, t.name, t.ns, t.cpu
                );
            }
            let v = json!({"kind": "cpu", "interval_s": secs, "cpu_ns": total, "tasks": per});
            emit(&a.record, v, &summary)
        }
        Cmd::Napi(a) => {
            let list = if a.threaded || a.pin.is_some() || a.fifo.is_some() {
                napi::napis_threaded(a.at.netns.as_deref(), &a.at.ifname)?
            } else {
                napi::napis(a.at.netns.as_deref(), &a.at.ifname)?
            };
            if list.is_empty() {
                bail!("{}: no NAPI instances", a.at);
            }
            for (i, n) in list.iter().enumerate() {
                let mut line = format!("{} napi {} pid {}", a.at, n.id, n.pid);
                if let Some(CpuList(cpus)) = &a.pin {
                    let c = cpus[i.min(cpus.len() - 1)];
                    sys::pin(n.pid, c)?;
                    line += &format!(" pinned to CPU {c}");
                }
                if let Some(prio) = a.fifo {
                    sys::set_fifo(n.pid, prio)?;
                    line += &format!(" SCHED_FIFO {prio}");
                }
                println!("{line}");
            }
            Ok(())
        }
        Cmd::Measure(a) => {
            let o = measure_opts(&a.tasks, a.sinks, a.interval);
            let v = measure::measure(&o)?;
            let summary = measure::summary(&v);
            emit(&a.record, v, &summary)
        }
        Cmd::Quiet(a) => {
            let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
            let t0 = std::time::Instant::now();
            let mut busy;
            loop {
                let a0 = cpu::machine_jiffies().context("reading /proc/stat")?;
                std::thread::sleep(Duration::from_millis(500));
                let a1 = cpu::machine_jiffies().context("reading /proc/stat")?;
                busy = cpu::busy_cpus(a0, a1, ncpu);
                if busy <= a.max_busy || t0.elapsed() >= a.timeout {
                    break;
                }
            }
            if busy <= a.max_busy {
                println!(
                    "quiet: {busy:.2} CPUs busy after {:.1} s",
                    t0.elapsed().as_secs_f64()
                );
            } else {
                println!(
                    "not quiet: {busy:.2} CPUs busy after waiting {:.0} s (other load skews the figures)",
                    t0.elapsed().as_secs_f64()
                );
            }
            Ok(())
        }
        Cmd::Report(a) => {
            let text = std::fs::read_to_string(&a.results)
                .with_context(|| format!("reading {}", a.results.display()))?;
            let body = report::render(&report::parse(&text));
            println!("{body}");
            if let Some(p) = a.write_docs {
                let doc = std::fs::read_to_string(&p).unwrap_or_default();
                let new = report::splice(&doc, &body);
                // Write next to it and rename: a concurrent reader never sees half a file.
                let tmp = p.with_extension("md.tmp");
                std::fs::write(&tmp, new).with_context(|| format!("writing {}", tmp.display()))?;
                std::fs::rename(&tmp, &p).with_context(|| format!("replacing {}", p.display()))?;
                eprintln!("wrote the bench.sh section of {}", p.display());
            }
            Ok(())
        }
    }
}

/// Generator options from the command line.
fn gen_opts(f: &FrameArgs, rate: u64, duration: Duration) -> Result<GenOpts> {
    let src_mac = match f.src_mac {
        Some(m) => m,
        None => {
            let _ns = sys::NetnsGuard::enter(f.netns.as_deref())?;
            sys::if_mac(&f.ifname)?
        }
    };
    Ok(GenOpts {
        netns: f.netns.clone(),
        ifname: f.ifname.clone(),
        spec: FrameSpec {
            dst_mac: f.dst_mac,
            src_mac,
            src_net: f.src_net,
            dst_ip: f.dst_ip,
            dst_port: f.dst_port,
            proto: f.proto,
            wire_size: f.size,
        },
        mode: f.mode,
        flows: f.flows,
        rate,
        duration,
        cpus: f.cpus.0.clone(),
        burst: f.burst,
    })
}

fn cmd_peak(a: PeakArgs) -> Result<()> {
    let po = PeakOpts {
        warmup: a.warmup,
        settle: a.settle,
        window: a.window,
        max_steps: a.steps,
        loss_ok: a.loss_ok / 100.0,
        ..PeakOpts::default()
    };
    // The generator stops on its own after this, whatever happens to us.
    let bound = po.warmup + (po.settle + po.window) * (po.max_steps + 1) + Duration::from_secs(5);
    let opts = gen_opts(&a.frame, 0, bound.min(gen::MAX_DURATION))?;
    let g = Generator::load(opts)?;
    let meter = Meter::new(&measure_opts(&a.tasks, a.sinks, a.window))?;
    let verbose = a.verbose;
    let v =
        peak::run(&g, &meter, &po, &mut |s| {
            if verbose {
                eprintln!(
                "  rate {:>9} offered {:>9.0} forwarded {:>9.0} loss {:>6.2}% cpu ns/pkt {:>6.0}",
                if s.rate == 0 { "flat".to_string() } else { s.rate.to_string() },
                s.offered_pps,
                s.fwd_pps,
                s.loss * 100.0,
                s.ns_per_pkt.unwrap_or(f64::NAN)
            );
            }
        })?;
    let summary = format!(
        "peak {:.3} Mpps (offered {:.3}), {:.0} ns/pkt; flat out {:.3} Mpps; lossless {} | {}",
        v["pps"].as_f64().unwrap_or(0.0) / 1e6,
        v["offered_pps"].as_f64().unwrap_or(0.0) / 1e6,
        v["ns_per_pkt"].as_f64().unwrap_or(f64::NAN),
        v["flat_pps"].as_f64().unwrap_or(0.0) / 1e6,
        v["lossless_pps"]
            .as_f64()
            .map_or("-".to_string(), |x| format!("{:.3} Mpps", x / 1e6)),
        measure::summary(&v)
    );
    emit(&a.record, v, &summary)
}

fn cmd_gen(a: GenArgs) -> Result<()> {
    let opts = gen_opts(&a.frame, a.rate, a.duration)?;
    let g = Generator::load(opts.clone())?;
    if !a.quiet {
        eprintln!("xvs-bench gen: {}", gen::describe(&opts));
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    let mut last = 0u64;
    let quiet = a.quiet;
    let r = g.run(&stop, |t, sent| {
        if !quiet {
            eprintln!(
                "  {:5.1} s  {:>12} sent  {:.3} Mpps",
                t.as_secs_f64(),
                sent,
                (sent - last) as f64 / 1e6
            );
        }
        last = sent;
    })?;
    if stop.load(Relaxed) && !a.quiet {
        eprintln!("xvs-bench gen: interrupted");
    }
    let summary = format!(
        "sent {} frames in {:.3} s: {:.0} pps ({:.3} Mpps){}",
        r.sent,
        r.duration_s,
        r.pps,
        r.pps / 1e6,
        if r.skipped > 0 {
            format!(", {} pacing slots skipped (generator CPU busy)", r.skipped)
        } else {
            String::new()
        }
    );
    let mut v = serde_json::to_value(&r)?;
    v["kind"] = json!("gen");
    emit(&a.record, v, &summary)
}

fn cmd_sink(c: SinkCmd) -> Result<()> {
    match c {
        SinkCmd::Attach { at, pass } => {
            let id = sink::attach(&at, pass)?;
            println!(
                "sink attached to {at} (program {id}, {})",
                if pass { "pass" } else { "drop" }
            );
            Ok(())
        }
        SinkCmd::Detach { at } => {
            if sink::detach(&at)? {
                println!("sink detached from {at}");
            } else {
                println!("no XDP program on {at}");
            }
            Ok(())
        }
        SinkCmd::Read {
            at,
            interval,
            record,
        } => {
            let sinks: Vec<sink::Sink> = at.iter().map(sink::Sink::open).collect::<Result<_>>()?;
            let r0: Vec<_> = sinks.iter().map(|s| s.read()).collect::<Result<_>>()?;
            if interval.is_zero() {
                // Cumulative counters.
                let mut keys = Vec::new();
                let (mut ipv4, mut all) = (0u64, 0u64);
                let mut summary = String::new();
                for (s, r) in sinks.iter().zip(&r0) {
                    ipv4 += r.ipv4_packets();
                    all += r.total.packets;
                    summary += &format!(
                        "{}: {} frames ({} IPv4), {} bytes, {} unkeyed\n",
                        s.at,
                        r.total.packets,
                        r.ipv4_packets(),
                        r.total.bytes,
                        r.total.unkeyed
                    );
                    for (k, v) in &r.keys {
                        summary += &format!(
                            "  {} {:<5} {:<15} {:>12} frames {:>14} bytes\n",
                            k.mac(),
                            k.kind_name(),
                            k.daddr(),
                            v.packets,
                            v.bytes
                        );
                        keys.push(json!({"sink": s.at.to_string(), "mac": k.mac().to_string(),
                            "kind": k.kind_name(), "daddr": k.daddr().to_string(),
                            "packets": v.packets, "bytes": v.bytes}));
                    }
                }
                let v =
                    json!({"kind": "sink", "packets": ipv4, "all_packets": all, "per_key": keys});
                return emit(&record, v, summary.trim_end());
            }
            std::thread::sleep(interval);
            let r1: Vec<_> = sinks.iter().map(|s| s.read()).collect::<Result<_>>()?;
            let mut keys = Vec::new();
            let (mut ipv4, mut all, mut secs) = (0u64, 0u64, 0f64);
            for (i, s) in sinks.iter().enumerate() {
                let (k, p, a, t) = sink::diff(&s.at.to_string(), &r0[i], &r1[i]);
                keys.extend(k);
                ipv4 += p;
                all += a;
                secs = secs.max(t);
            }
            let pps = if secs > 0.0 { ipv4 as f64 / secs } else { 0.0 };
            let mut summary = format!(
                "{:.3} s: {:.0} pps IPv4 ({:.3} Mpps), {} frames in all",
                secs,
                pps,
                pps / 1e6,
                all
            );
            for k in &keys {
                summary += &format!(
                    "\n  {} {:<5} {:<15} {:>12.0} pps",
                    k.mac, k.kind, k.daddr, k.pps
                );
            }
            let mut m = Map::new();
            m.insert("kind".into(), json!("sink_rate"));
            m.insert("interval_s".into(), json!(secs));
            m.insert("packets".into(), json!(ipv4));
            m.insert("all_packets".into(), json!(all));
            m.insert("pps".into(), json!(pps));
            m.insert("per_key".into(), serde_json::to_value(&keys)?);
            emit(&record, Value::Object(m), &summary)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("xvs-bench").chain(args.iter().copied()))
    }

    /// The frame options every `gen` and `peak` needs.
    const FRAME: [&str; 6] = [
        "--ifname",
        "g0",
        "--dst-mac",
        "02:00:0a:00:00:0c",
        "--dst-ip",
        "10.0.0.88",
    ];

    /// `cmd` with the `FRAME` options, then `extra`.
    fn parse_frame(cmd: &str, extra: &[&str]) -> Result<Cli, clap::Error> {
        let mut v = vec![cmd];
        v.extend_from_slice(&FRAME);
        v.extend_from_slice(extra);
        parse(&v)
    }

    #[test]
    fn gen_defaults_and_options() {
        let c = parse_frame("gen", &[]).unwrap();
        let Cmd::Gen(g) = c.cmd else { panic!() };
        assert_eq!(g.frame.proto, Proto::Udp);
        assert_eq!(g.frame.size, 64);
        assert_eq!(g.frame.flows, 1024);
        assert_eq!(g.frame.mode, Mode::Established);
        assert_eq!(g.rate, 0);
        assert_eq!(g.duration, Duration::from_secs(5));
        assert_eq!(g.frame.cpus, CpuList(vec![1]));
        assert_eq!(g.frame.dst_port, 80);

        let c = parse_frame(
            "gen",
            &[
                "--proto",
                "tcp",
                "--mode",
                "new",
                "--rate",
                "1.5M",
                "--flows",
                "10M",
                "--duration",
                "2.5",
                "--cpus",
                "0,1",
                "--size",
                "1518",
                "--tag",
                "row=dr",
                "--json",
            ],
        )
        .unwrap();
        let Cmd::Gen(g) = c.cmd else { panic!() };
        assert_eq!(g.frame.proto, Proto::Tcp);
        assert_eq!(g.frame.mode, Mode::New);
        assert_eq!(g.rate, 1_500_000);
        assert_eq!(g.frame.flows, 10_000_000);
        assert_eq!(g.duration, Duration::from_millis(2500));
        assert_eq!(g.frame.cpus, CpuList(vec![0, 1]));
        assert_eq!(g.record.tags, vec![("row".to_string(), "dr".to_string())]);
        assert!(g.record.json);
    }

    #[test]
    fn gen_rejects_bad_values() {
        for extra in [
            &["--proto", "icmp"][..],
            &["--mode", "old"],
            &["--rate", "fast"],
            &["--duration", "601"],
            &["--duration", "-1"],
            &["--cpus", ""],
            &["--dst-mac", "02:00"],
            &["--tag", "novalue"],
        ] {
            assert!(parse_frame("gen", extra).is_err(), "accepted {extra:?}");
        }
        assert!(
            parse(&["gen", "--ifname", "g0"]).is_err(),
            "missing --dst-mac/--dst-ip"
        );
    }

    #[test]
    fn gen_opts_validation() {
        let spec = FrameSpec {
            dst_mac: Mac::default(),
            src_mac: Mac::default(),
            src_net: Ipv4Addr::new(10, 1, 0, 0),
            dst_ip: Ipv4Addr::new(10, 0, 0, 88),
            dst_port: 80,
            proto: Proto::Udp,
            wire_size: 64,
        };
        let ok = GenOpts {
            netns: None,
            ifname: "g0".into(),
            spec,
            mode: Mode::Established,
            flows: 1024,
            rate: 0,
            duration: Duration::from_secs(1),
            cpus: vec![1],
            burst: 32,
        };
        assert!(ok.validate().is_ok());
        assert!(GenOpts {
            rate: 30_000_000,
            ..ok.clone()
        }
        .validate()
        .is_err());
        assert!(GenOpts {
            rate: 30_000_000,
            cpus: vec![0, 1],
            ..ok.clone()
        }
        .validate()
        .is_ok());
        assert!(GenOpts {
            flows: 0,
            ..ok.clone()
        }
        .validate()
        .is_err());
        assert!(GenOpts {
            duration: Duration::ZERO,
            ..ok.clone()
        }
        .validate()
        .is_err());
        assert!(GenOpts {
            cpus: vec![],
            ..ok.clone()
        }
        .validate()
        .is_err());
        assert!(GenOpts { burst: 0, ..ok }.validate().is_err());
    }

    #[test]
    fn peak_parses() {
        let c = parse_frame(
            "peak",
            &[
                "--netns",
                "xb-gen",
                "--sink",
                "xb-gen:g0",
                "--pid",
                "7",
                "--napi",
                "xb-dir:eth0",
                "--window",
                "0.5",
                "--steps",
                "3",
                "--tag",
                "row=dr",
            ],
        )
        .unwrap();
        let Cmd::Peak(p) = c.cmd else { panic!() };
        assert_eq!(p.frame.netns.as_deref(), Some("xb-gen"));
        assert_eq!(p.window, Duration::from_millis(500));
        assert_eq!(p.steps, 3);
        assert_eq!(p.loss_ok, 1.0);
        assert!(parse_frame("peak", &[]).is_err(), "--sink is required");
    }

    #[test]
    fn other_commands_parse() {
        let c = parse(&["sink", "attach", "xb-gen:g0", "--pass"]).unwrap();
        assert!(matches!(
            c.cmd,
            Cmd::Sink(SinkCmd::Attach { pass: true, .. })
        ));
        let c = parse(&[
            "sink",
            "read",
            "xb-gen:g0",
            "xb-sink:s0",
            "--interval",
            "1.5",
        ])
        .unwrap();
        let Cmd::Sink(SinkCmd::Read { at, interval, .. }) = c.cmd else {
            panic!()
        };
        assert_eq!(at.len(), 2);
        assert_eq!(interval, Duration::from_millis(1500));
        assert!(parse(&["sink", "read"]).is_err());
        let c = parse(&["latency", "--dst", "10.0.0.88:5353", "--count", "10"]).unwrap();
        let Cmd::Latency(l) = c.cmd else { panic!() };
        assert_eq!(l.count, 10);
        assert_eq!(l.dst.len(), 1);
        assert!(parse(&["latency", "--dst", "10.0.0.88"]).is_err());
        assert!(parse(&["latency"]).is_err(), "a destination is required");
        let c = parse(&[
            "latency",
            "--dst",
            "10.0.0.9:5353",
            "--row",
            "lat_direct",
            "--dst",
            "10.0.0.88:5353",
            "--row",
            "lat_via",
        ])
        .unwrap();
        let Cmd::Latency(l) = c.cmd else { panic!() };
        assert_eq!(l.dst.len(), 2);
        assert_eq!(l.rows, ["lat_direct", "lat_via"]);
        let c = parse(&[
            "measure",
            "--sink",
            "xb-gen:g0",
            "--pid",
            "42",
            "--napi",
            "xb-dir:eth0",
            "--kthread",
            "ksoftirqd/0",
            "--interval",
            "3",
        ])
        .unwrap();
        let Cmd::Measure(m) = c.cmd else { panic!() };
        assert_eq!(m.tasks.pids, vec![42]);
        assert_eq!(m.tasks.napis[0].ifname, "eth0");
        let c = parse(&["napi", "xb-dir:eth0", "--pin", "1,0"]).unwrap();
        let Cmd::Napi(n) = c.cmd else { panic!() };
        assert_eq!(n.pin, Some(CpuList(vec![1, 0])));
        assert!(parse(&["cpu", "--interval", "1000"]).is_err());
    }

    #[test]
    fn counts_with_suffixes() {
        assert_eq!(parse_count("1000"), Ok(1000));
        assert_eq!(parse_count("50k"), Ok(50_000));
        assert_eq!(parse_count("1.5M"), Ok(1_500_000));
        assert_eq!(parse_count("2G"), Ok(2_000_000_000));
        assert!(parse_count("-1").is_err());
        assert!(parse_count("M").is_err());
    }
}
