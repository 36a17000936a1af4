//! `xvsd`: attaches the steering program, runs one worker per RX queue and serves the
//! control socket. See docs/architecture.md.

pub mod config;
pub mod iface;
pub mod neigh;
pub mod server;
pub mod state;

use crate::bpf::Steering;
use crate::forward::Snapshot;
use crate::model::{DataPathStats, WorkerCounters};
use crate::packet::DropReason;
use crate::worker::{BindMode, Shared, Worker, WorkerHandle};
use anyhow::{bail, Context, Result};
use arc_swap::ArcSwap;
use iface::Iface;
use state::DaemonState;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Default connection capacity over all workers.
pub const DEFAULT_CONN_MAX: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct DaemonOpts {
    pub interface: String,
    pub socket: PathBuf,
    /// Workers = RX queues served; `None` = all queues.
    pub workers: Option<u32>,
    pub conn_max: usize,
}

/// Everything the control socket needs besides the configuration.
pub struct DataPathView {
    pub iface: Iface,
    pub xdp_mode: String,
    pub steering: Arc<Mutex<Steering>>,
    pub workers: Vec<(WorkerHandle, BindMode)>,
}

impl DataPathView {
    /// Every worker's connection table (each answers between two batches).
    pub fn connections(&self) -> Vec<crate::model::ConnStatus> {
        let mut out = Vec::new();
        let mut pending = Vec::new();
        for (h, _) in &self.workers {
            let (tx, rx) = crossbeam::channel::bounded(1);
            h.send(crate::worker::WorkerMsg::ListConns(tx));
            pending.push(rx);
        }
        for rx in pending {
            // A worker sleeps at most IDLE_POLL_MS in poll(); 2 s means it is stuck.
            if let Ok(v) = rx.recv_timeout(Duration::from_secs(2)) {
                out.extend(v);
            }
        }
        out
    }

    pub fn stats(&self) -> DataPathStats {
        let xdp = self
            .steering
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stats()
            .unwrap_or_default();
        DataPathStats {
            interface: self.iface.name.clone(),
            xdp_mode: self.xdp_mode.clone(),
            xdp_redirected: xdp.redirected,
            xdp_passed: xdp.passed,
            xdp_malformed: xdp.malformed,
            xdp_no_socket: xdp.no_socket,
            xdp_fragments: xdp.fragments,
            workers: self
                .workers
                .iter()
                .map(|(h, mode)| {
                    let c = h.stats.read();
                    WorkerCounters {
                        queue: h.queue,
                        bind_mode: match mode {
                            BindMode::ZeroCopy => "zero-copy".into(),
                            BindMode::Copy => "copy".into(),
                        },
                        rx_frames: c.rx_frames,
                        tx_frames: c.tx_frames,
                        new_conns: c.new_conns,
                        conns: h.stats.conns.load(Relaxed),
                        drops: DropReason::ALL
                            .iter()
                            .map(|r| (r.name().to_string(), c.drops[*r as usize]))
                            .collect(),
                    }
                })
                .collect(),
        }
    }
}

/// Copies the kernel's neighbour entries into the real servers, and asks the kernel to
/// resolve missing ones (at most every 500 ms per address: ARP has its own retries).
fn refresh_neighbours(
    neigh: &mut neigh::Neighbours,
    ifindex: u32,
    dests: &[Arc<crate::runtime::DestRt>],
    last_trigger: &mut HashMap<std::net::Ipv4Addr, Instant>,
) {
    let table = match neigh.dump(ifindex) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!("reading the neighbour table: {e:#}");
            return;
        }
    };
    for d in dests {
        d.wants_resolution.store(false, Relaxed);
        match table.get(&d.addr) {
            Some(mac) => d.set_mac(Some(*mac)),
            None => {
                let due = last_trigger
                    .get(&d.addr)
                    .is_none_or(|t| t.elapsed() >= Duration::from_millis(500));
                if due {
                    last_trigger.insert(d.addr, Instant::now());
                    if let Err(e) = neigh.trigger(ifindex, d.addr) {
                        tracing::warn!(rs = %d.addr, "neighbour resolution: {e:#}");
                    }
                }
            }
        }
    }
}

/// Runs the daemon in the foreground until SIGINT or SIGTERM.
pub fn run(opts: DaemonOpts) -> Result<()> {
    let iface = Iface::lookup(&opts.interface)?;
    let nworkers = match opts.workers {
        None => iface.rx_queues,
        Some(0) => bail!("--workers must be at least 1"),
        Some(n) if n > iface.rx_queues => bail!(
            "--workers {n}: {} has only {} RX queue(s); one worker serves one queue",
            iface.name,
            iface.rx_queues
        ),
        Some(n) => {
            if n < iface.rx_queues {
                tracing::warn!(
                    "serving {n} of {} RX queues: service traffic arriving on the others goes to the kernel",
                    iface.rx_queues
                );
            }
            n
        }
    };

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }

    let mut steering = Steering::load()?;
    let mode = steering.attach(iface.index, &iface.name)?;
    tracing::info!(interface = %iface.name, ifindex = iface.index, mode = %mode, queues = iface.rx_queues, "XDP steering program attached");

    let shared = Arc::new(Shared {
        snapshot: ArcSwap::from_pointee(Snapshot::default()),
        stop: AtomicBool::new(false),
    });
    let per_worker = (opts.conn_max / nworkers as usize).max(1);
    let mut threads = Vec::new();
    let mut handles = Vec::new();
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    for q in 0..nworkers {
        let (w, h) = Worker::new(&iface.name, q, iface.mac, per_worker, shared.clone())?;
        steering.set_xsk(q, w.fd())?;
        tracing::info!(queue = q, mode = ?w.mode, "AF_XDP socket bound");
        handles.push((h, w.mode));
        let core = cores.get(q as usize % cores.len().max(1)).copied();
        threads.push(
            std::thread::Builder::new()
                .name(format!("xvs-q{q}"))
                .spawn(move || {
                    if let Some(c) = core {
                        core_affinity::set_for_current(c);
                    }
                    w.run()
                })
                .context("spawning a worker thread")?,
        );
    }

    let steering = Arc::new(Mutex::new(steering));
    let steer_for_state = state::SharedSteer(steering.clone());
    let state = Arc::new(Mutex::new(DaemonState::new(
        shared.clone(),
        Box::new(steer_for_state),
        (per_worker * nworkers as usize) as u64,
    )));
    let view = Arc::new(DataPathView {
        iface: iface.clone(),
        xdp_mode: mode.to_string(),
        steering: steering.clone(),
        workers: handles,
    });
    let listener = server::bind(&opts.socket)?;
    tracing::info!(socket = %opts.socket.display(), "control socket ready");
    {
        let (state, view) = (state.clone(), view.clone());
        std::thread::Builder::new()
            .name("xvs-ctl".into())
            .spawn(move || server::serve(listener, state, view))
            .context("spawning the control thread")?;
    }

    // Housekeeping: neighbour resolution, until a signal arrives.
    let mut neigh = neigh::Neighbours::open()?;
    let mut last_full = Instant::now() - Duration::from_secs(60);
    let mut last_trigger: HashMap<std::net::Ipv4Addr, Instant> = HashMap::new();
    let mut last_tick = Instant::now();
    let mut ticks: u64 = 0;
    while !stop.load(Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if last_tick.elapsed() >= Duration::from_secs(1) {
            last_tick = Instant::now();
            ticks += 1;
            // Template expiry every second, an estimator sample every 2 s (IPVS's period).
            state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .tick(crate::clock::now_ms(), ticks % 2 == 0);
        }
        let dests = state.lock().unwrap_or_else(|e| e.into_inner()).dests();
        // Refresh every second; every 50 ms while some server's MAC is missing or a worker
        // asked for it, so that a newly added server is usable within milliseconds.
        let missing = dests
            .iter()
            .any(|d| d.mac().is_none() || d.wants_resolution.load(Relaxed));
        if !missing && last_full.elapsed() < Duration::from_secs(1) {
            continue;
        }
        last_full = Instant::now();
        refresh_neighbours(&mut neigh, iface.index, &dests, &mut last_trigger);
    }

    tracing::info!("stopping");
    shared.stop.store(true, Relaxed);
    for t in threads {
        let _ = t.join();
    }
    steering.lock().unwrap_or_else(|e| e.into_inner()).detach();
    let _ = std::fs::remove_file(&opts.socket);
    tracing::info!("XDP detached; bye");
    Ok(())
}
