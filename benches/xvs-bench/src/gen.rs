//! The load generator: `bpf/xvs_gen.bpf.c` run with `BPF_PROG_RUN` and live frames
//! (`BPF_F_TEST_XDP_LIVE_FRAMES`) on the generator's veth, one long call per CPU.
//!
//! Each CPU's thread pins itself and makes one call with a huge `repeat`; the program paces
//! and stops on its own after the duration (so the sent count covers exactly that window),
//! and the tool then interrupts the call with a signal (the kernel checks for pending
//! signals between batches and returns EINTR).

use super::frame::{FrameSpec, Mode, Template};
use super::gen_skel::{self, XvsGenSkelBuilder};
use super::maps::{GenState, Pod};
use super::sys;
use anyhow::{bail, ensure, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::MapCore;
use serde::Serialize;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::thread::JoinHandleExt;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `BPF_F_TEST_XDP_LIVE_FRAMES` (uapi linux/bpf.h).
const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
/// Frames per live-frame batch (the kernel's default, NAPI_POLL_WEIGHT).
const BATCH: u32 = 64;
/// Largest per-CPU rate the program's pacing arithmetic is exact for (see `pace()`).
pub const MAX_RATE_PER_CPU: u64 = 20_000_000;
/// Longest run (the pacing arithmetic and the bounded-everything rule).
pub const MAX_DURATION: Duration = Duration::from_secs(600);
/// Most flows per CPU in established mode.
pub const MAX_FLOWS: u64 = u32::MAX as u64;

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenOpts {
    /// Network namespace of the interface (None: the caller's).
    pub netns: Option<String>,
    pub ifname: String,
    pub spec: FrameSpec,
    pub mode: Mode,
    /// Established mode: flows over all CPUs (each CPU gets flows / cpus).
    pub flows: u64,
    /// Frames per second over all CPUs; 0 = as fast as possible.
    pub rate: u64,
    pub duration: Duration,
    /// One generator thread per CPU listed.
    pub cpus: Vec<usize>,
    /// Pacing: frames sent back to back at most when a CPU fell behind.
    pub burst: u32,
}

impl GenOpts {
    pub fn validate(&self) -> Result<()> {
        ensure!(!self.cpus.is_empty(), "at least one CPU");
        ensure!(
            self.duration > Duration::ZERO && self.duration <= MAX_DURATION,
            "duration must be in (0, {} s]",
            MAX_DURATION.as_secs()
        );
        ensure!(
            self.rate / self.cpus.len() as u64 <= MAX_RATE_PER_CPU,
            "rate: at most {MAX_RATE_PER_CPU} frames/s per CPU"
        );
        ensure!(
            self.rate == 0 || self.rate >= self.cpus.len() as u64,
            "rate must be 0 (flat out) or at least 1 frame/s per CPU"
        );
        ensure!(self.flows >= 1, "at least one flow");
        ensure!(
            self.flows / self.cpus.len() as u64 <= MAX_FLOWS,
            "at most {MAX_FLOWS} flows per CPU"
        );
        ensure!(self.burst >= 1, "burst must be at least 1");
        Ok(())
    }
}

/// One CPU's result.
#[derive(Debug, Clone, Serialize)]
pub struct CpuResult {
    pub cpu: usize,
    pub sent: u64,
    pub pps: f64,
    pub skipped: u64,
    /// The thread's BPF_PROG_RUN calls ended with this (EINTR when stopped by us).
    pub exit: String,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct GenResult {
    pub ifname: String,
    pub proto: String,
    pub mode: String,
    pub wire_size: usize,
    pub flows: u64,
    pub rate: u64,
    pub duration_s: f64,
    pub sent: u64,
    pub bytes: u64,
    /// Sent frames per second of the configured duration (wall clock of the send window).
    pub pps: f64,
    pub skipped: u64,
    pub cpus: Vec<CpuResult>,
}

extern "C" fn on_sigusr1(_: libc::c_int) {}

/// Installs a no-op SIGUSR1 handler without SA_RESTART, so a signal ends a blocked
/// BPF_PROG_RUN with EINTR instead of killing the process.
fn install_wakeup_signal() -> Result<()> {
    // SAFETY: sigaction is plain data; the handler is async-signal-safe (it does nothing).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigusr1 as *const () as usize;
        sa.sa_flags = 0;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error()).context("installing the SIGUSR1 handler");
        }
    }
    Ok(())
}

/// The loaded generator program.
pub struct Generator {
    skel: gen_skel::XvsGenSkel<'static>,
    template: Template,
    ifindex: u32,
    /// The control block in the skeleton's mmap'ed .bss (see `set_rate`).
    ctl: *mut gen_skel::types::xvs_gen_ctl,
    opts: GenOpts,
}

impl Generator {
    /// Builds the template and loads the program with its configuration.
    pub fn load(opts: GenOpts) -> Result<Generator> {
        opts.validate()?;
        let template = opts.spec.build().map_err(anyhow::Error::msg)?;
        let ifindex = {
            let _ns = sys::NetnsGuard::enter(opts.netns.as_deref())?;
            sys::ifindex(&opts.ifname)?
        };
        let ncpus = sys::possible_cpus()?;
        for &c in &opts.cpus {
            ensure!(c < ncpus, "CPU {c}: only {ncpus} CPUs");
        }
        // The skeleton borrows its object storage for its whole life; one generator runs
        // per process, so leaking this small allocation once is the simple sound option.
        let storage: &'static mut MaybeUninit<libbpf_rs::OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let mut open = XvsGenSkelBuilder::default()
            .open(storage)
            .context("opening the generator BPF object")?;
        {
            let ro = open
                .maps
                .rodata_data
                .as_deref_mut()
                .context("generator object has no .rodata")?;
            let nthreads = opts.cpus.len() as u64;
            let c = &mut ro.xvs_gen_cfg;
            c.len = template.bytes.len() as u32;
            c.proto = u32::from(opts.spec.proto.number());
            c.mode = opts.mode.number();
            c.flows = (opts.flows / nthreads).clamp(1, u32::MAX as u64) as u32;
            c.cpu_stride = ncpus as u32;
            c.burst = opts.burst;
            c.duration_ns = opts.duration.as_nanos() as u64;
            c.ip_sum = template.ip_sum;
            c.l4_sum = template.l4_sum;
            c.l4_sum_est = template.l4_sum_est;
            c.tcp_flags_new = template.tcp_flags_new;
            c.tcp_flags_est = template.tcp_flags_est;
            ro.xvs_gen_tmpl[..template.bytes.len()].copy_from_slice(&template.bytes);
        }
        let mut skel = open
            .load()
            .context("loading the generator XDP program (root? BPF available?)")?;
        let ctl: *mut gen_skel::types::xvs_gen_ctl = &mut skel
            .maps
            .bss_data
            .as_deref_mut()
            .context("generator object has no .bss")?
            .xvs_gen_ctl;
        let g = Generator {
            skel,
            template,
            ifindex,
            ctl,
            opts,
        };
        g.set_rate(g.opts.rate);
        Ok(g)
    }

    /// Changes the rate (frames per second over all generator CPUs; 0 = flat out) while
    /// the generator runs; each CPU restarts its pacing when it sees the change.
    pub fn set_rate(&self, total: u64) {
        let per_cpu = (total / self.opts.cpus.len() as u64).min(MAX_RATE_PER_CPU);
        let per_cpu = if total > 0 { per_cpu.max(1) } else { 0 };
        // SAFETY: ctl points into the skeleton's memory-mapped .bss, which lives as long as
        // self.skel; the program only reads it. Volatile: the kernel reads it concurrently.
        unsafe {
            let epoch = std::ptr::read_volatile(&(*self.ctl).epoch);
            std::ptr::write_volatile(&mut (*self.ctl).rate, per_cpu);
            std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
            std::ptr::write_volatile(&mut (*self.ctl).epoch, epoch + 1);
        }
    }

    /// Frames sent so far, summed over CPUs.
    pub fn sent(&self) -> u64 {
        self.states()
            .map(|v| v.iter().map(|s| s.sent).sum())
            .unwrap_or(0)
    }

    pub fn template(&self) -> &Template {
        &self.template
    }

    /// Per-CPU state, indexed by CPU.
    pub fn states(&self) -> Result<Vec<GenState>> {
        let v = self
            .skel
            .maps
            .xvs_gen_state
            .lookup_percpu(&0u32.to_ne_bytes(), libbpf_rs::MapFlags::ANY)
            .context("reading generator counters")?
            .unwrap_or_default();
        Ok(v.iter().map(|b| GenState::from_bytes(b)).collect())
    }

    /// Runs the program once on `frame` without live frames and returns the verdict and
    /// the frame it produced (tests: the rewrite as the kernel executes it).
    pub fn test_run_once(&self, frame: &[u8]) -> Result<(u32, Vec<u8>)> {
        let fd = self.skel.progs.xvs_gen.as_fd().as_raw_fd();
        let mut out = vec![0u8; frame.len() + 256];
        let mut o = libbpf_sys::bpf_test_run_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_test_run_opts>() as _,
            data_in: frame.as_ptr().cast(),
            data_size_in: frame.len() as u32,
            data_out: out.as_mut_ptr().cast(),
            data_size_out: out.len() as u32,
            repeat: 1,
            ..Default::default()
        };
        // SAFETY: the buffers outlive the call and their sizes are passed with them.
        let r = unsafe { libbpf_sys::bpf_prog_test_run_opts(fd, &mut o) };
        if r != 0 {
            return Err(std::io::Error::from_raw_os_error(-r)).context("BPF_PROG_RUN");
        }
        out.truncate(o.data_size_out as usize);
        Ok((o.retval, out))
    }

    /// Starts one generator thread per CPU; they send until `Running::stop`, or until the
    /// configured duration has passed (after which the program only drops).
    pub fn start(&self) -> Result<Running> {
        install_wakeup_signal()?;
        let prog_fd = self.skel.progs.xvs_gen.as_fd().as_raw_fd();
        let frame = Arc::new(self.template.bytes.clone());
        let done = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for &cpu in &self.opts.cpus {
            let (frame, done) = (frame.clone(), done.clone());
            let ifindex = self.ifindex;
            let netns = self.opts.netns.clone();
            let h = std::thread::Builder::new()
                .name(format!("xvs-gen{cpu}"))
                .spawn(move || -> Result<String> {
                    sys::pin(0, cpu)?;
                    let _ns = sys::NetnsGuard::enter(netns.as_deref())?;
                    live_loop(prog_fd, ifindex, &frame, &done)
                })
                .context("spawning a generator thread")?;
            threads.push(h);
        }
        Ok(Running { threads, done })
    }

    /// Generates for the configured duration (or until `stop` is set), calling `progress`
    /// about once a second with (elapsed, frames sent so far).
    pub fn run(
        &self,
        stop: &AtomicBool,
        mut progress: impl FnMut(Duration, u64),
    ) -> Result<GenResult> {
        let running = self.start()?;
        let t0 = Instant::now();
        // The program stops sending after the duration; give the threads a moment to start.
        let limit = self.opts.duration + Duration::from_millis(300);
        let mut next_report = Duration::from_secs(1);
        while t0.elapsed() < limit && !stop.load(Relaxed) {
            if running.all_finished() {
                break; // every thread failed early
            }
            std::thread::sleep(Duration::from_millis(20));
            if t0.elapsed() >= next_report {
                next_report += Duration::from_secs(1);
                progress(t0.elapsed(), self.sent());
            }
        }
        let exits = running.stop()?;
        self.result(&exits)
    }

    /// Totals since load.
    pub fn result(&self, exits: &[String]) -> Result<GenResult> {
        let states = self.states()?;
        let mut cpus = Vec::new();
        let mut total = GenState::default();
        for (i, &cpu) in self.opts.cpus.iter().enumerate() {
            let s = states.get(cpu).copied().unwrap_or_default();
            total.add(&s);
            let window = s.last_ns.saturating_sub(s.start_ns) as f64 / 1e9;
            cpus.push(CpuResult {
                cpu,
                sent: s.sent,
                pps: if window > 0.0 {
                    s.sent as f64 / window
                } else {
                    0.0
                },
                skipped: s.skipped,
                exit: exits.get(i).cloned().unwrap_or_default(),
            });
        }
        let window = total.last_ns.saturating_sub(total.start_ns) as f64 / 1e9;
        Ok(GenResult {
            ifname: self.opts.ifname.clone(),
            proto: self.opts.spec.proto.to_string(),
            mode: self.opts.mode.to_string(),
            wire_size: self.opts.spec.wire_size,
            flows: self.opts.flows,
            rate: self.opts.rate,
            duration_s: window,
            sent: total.sent,
            bytes: total.bytes,
            pps: if window > 0.0 {
                total.sent as f64 / window
            } else {
                0.0
            },
            skipped: total.skipped,
            cpus,
        })
    }
}

/// Generator threads at work.
pub struct Running {
    threads: Vec<std::thread::JoinHandle<Result<String>>>,
    done: Arc<AtomicBool>,
}

impl Running {
    pub fn all_finished(&self) -> bool {
        self.threads.iter().all(|t| t.is_finished())
    }

    /// Stops the threads: flag, then signal each until its call returns (bounded). Returns
    /// how each thread's calls ended.
    pub fn stop(self) -> Result<Vec<String>> {
        self.done.store(true, Relaxed);
        for _ in 0..200 {
            if self.all_finished() {
                break;
            }
            for t in &self.threads {
                if !t.is_finished() {
                    // SAFETY: the thread is alive (not finished, not joined), so its
                    // pthread_t is valid; SIGUSR1 has our no-op handler.
                    unsafe { libc::pthread_kill(t.as_pthread_t(), libc::SIGUSR1) };
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if !self.all_finished() {
            bail!("generator threads did not stop within 2 s of being signalled");
        }
        let mut exits = Vec::new();
        for t in self.threads {
            match t.join() {
                Ok(Ok(e)) => exits.push(e),
                Ok(Err(e)) => return Err(e),
                Err(_) => bail!("a generator thread panicked"),
            }
        }
        Ok(exits)
    }
}

/// One thread's calls: BPF_PROG_RUN with live frames until told to stop. Returns how the
/// last call ended.
fn live_loop(prog_fd: i32, ifindex: u32, frame: &[u8], done: &AtomicBool) -> Result<String> {
    // xdp_md as the kernel wants it for live frames: data 0, data_end = frame length, the
    // ingress interface (the frames go out of it with XDP_TX) and queue 0.
    let ctx = libbpf_sys::xdp_md {
        data_end: frame.len() as u32,
        ingress_ifindex: ifindex,
        ..Default::default()
    };
    let mut last = String::from("not run");
    // Bounded: each call lasts until signalled or 2^31-1 runs; at most 10000 calls.
    for _ in 0..10_000 {
        if done.load(Relaxed) {
            break;
        }
        let mut o = libbpf_sys::bpf_test_run_opts {
            sz: std::mem::size_of::<libbpf_sys::bpf_test_run_opts>() as _,
            data_in: frame.as_ptr().cast(),
            data_size_in: frame.len() as u32,
            ctx_in: (&ctx as *const libbpf_sys::xdp_md).cast(),
            ctx_size_in: std::mem::size_of::<libbpf_sys::xdp_md>() as u32,
            repeat: i32::MAX,
            flags: BPF_F_TEST_XDP_LIVE_FRAMES,
            batch_size: BATCH,
            ..Default::default()
        };
        // SAFETY: frame and ctx outlive the call; their sizes are passed with them.
        let r = unsafe { libbpf_sys::bpf_prog_test_run_opts(prog_fd, &mut o) };
        if r == 0 {
            last = "done".into();
            continue; // repeat exhausted: call again unless told to stop
        }
        let e = std::io::Error::from_raw_os_error(-r);
        if e.raw_os_error() == Some(libc::EINTR) {
            last = "stopped".into();
            continue;
        }
        return Err(e).context(
            "BPF_PROG_RUN with live frames (kernel >= 5.18 and an XDP-capable interface needed)",
        );
    }
    Ok(last)
}

/// One line describing a run, for the CLI.
pub fn describe(o: &GenOpts) -> String {
    format!(
        "{} {} B frames, {}, {}, on {} from CPUs {:?}",
        o.spec.proto,
        o.spec.wire_size,
        match o.mode {
            Mode::Established => format!("{} established flows", o.flows),
            Mode::New => "a new flow every frame".to_string(),
            Mode::Mix => format!(
                "every 5th frame a new flow, the others over {} established flows",
                o.flows
            ),
        },
        if o.rate == 0 {
            "flat out".to_string()
        } else {
            format!("{} frames/s", o.rate)
        },
        o.ifname,
        o.cpus
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{flow_addr, flow_number, Mac, Proto};
    use std::net::Ipv4Addr;

    const XDP_DROP: u32 = 1;
    const XDP_TX: u32 = 3;

    fn opts(proto: Proto, mode: Mode, flows: u64, rate: u64, size: usize) -> GenOpts {
        GenOpts {
            netns: None,
            ifname: "lo".into(),
            spec: FrameSpec {
                dst_mac: "02:00:0a:00:00:0c".parse::<Mac>().unwrap(),
                src_mac: "02:00:0a:00:00:01".parse().unwrap(),
                src_net: Ipv4Addr::new(10, 1, 0, 0),
                dst_ip: Ipv4Addr::new(10, 0, 0, 88),
                dst_port: 80,
                proto,
                wire_size: size,
            },
            mode,
            flows,
            rate,
            duration: Duration::from_secs(60),
            cpus: vec![0],
            burst: 4,
        }
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    /// The rewrite as the kernel executes it equals the Rust reference, whose checksums
    /// etherparse verifies (frame.rs tests): flows, TCP flags, both checksums, every size.
    #[test]
    fn program_rewrites_like_the_reference() {
        if !is_root() {
            eprintln!("skipped: loading BPF needs root");
            return;
        }
        sys::pin(0, 0).unwrap(); // the program reads its CPU id: stay on CPU 0
        let ncpus = sys::possible_cpus().unwrap() as u64;
        for (proto, mode, flows, size) in [
            (Proto::Udp, Mode::Established, 3, 64),
            (Proto::Udp, Mode::New, 1, 1518),
            (Proto::Tcp, Mode::Established, 2, 64),
            (Proto::Tcp, Mode::New, 1, 300),
            (Proto::Tcp, Mode::Mix, 2, 64),
            (Proto::Udp, Mode::Mix, 3, 64),
        ] {
            let g = Generator::load(opts(proto, mode, flows, 0, size)).unwrap();
            // Garbage in: the program must write the whole frame.
            let junk = vec![0xa5u8; g.template().bytes.len()];
            for n in 0..12u64 {
                let (ret, out) = g.test_run_once(&junk).unwrap();
                assert_eq!(ret, XDP_TX);
                let (h, p) = flow_addr(flow_number(n, mode, flows, ncpus, 0));
                let opening = crate::frame::opening(n, mode, flows);
                let want = g.template().frame(proto, h, p, opening);
                assert_eq!(out, want, "{proto} {mode} frame {n}");
                crate::frame::tests::check_frame(
                    &out,
                    &opts(proto, mode, flows, 0, size).spec,
                    h,
                    p,
                    (proto == Proto::Tcp).then_some(if opening { 0x02 } else { 0x10 }),
                );
            }
            let st = g.states().unwrap()[0];
            assert_eq!(st.sent, 12);
            assert_eq!(st.bytes, 12 * (size as u64 - 4));
        }
    }

    #[test]
    fn program_paces() {
        if !is_root() {
            eprintln!("skipped: loading BPF needs root");
            return;
        }
        sys::pin(0, 0).unwrap();
        // 1 frame per second: the first run sends, the next ones (immediately after) wait.
        let g = Generator::load(opts(Proto::Udp, Mode::Established, 4, 1, 64)).unwrap();
        let f = g.template().bytes.clone();
        assert_eq!(g.test_run_once(&f).unwrap().0, XDP_TX);
        for _ in 0..5 {
            assert_eq!(g.test_run_once(&f).unwrap().0, XDP_DROP);
        }
        let st = g.states().unwrap()[0];
        assert_eq!((st.sent, st.idle, st.paced), (1, 5, 1));
        // A new rate restarts the pacing: the next frame goes at once.
        g.set_rate(1);
        assert_eq!(g.test_run_once(&f).unwrap().0, XDP_TX);
        assert_eq!(g.test_run_once(&f).unwrap().0, XDP_DROP);
    }
}
