//! `xvsd`: attaches the steering program, runs one worker per RX queue and serves the
//! control socket. See docs/architecture.md.

pub mod announce;
pub mod args;
pub mod config;
pub mod iface;
pub mod kconf;
pub mod listing;
pub mod logging;
pub mod neigh;
pub mod notify;
pub mod server;
pub mod state;
pub mod statefile;
pub mod sync_hooks;

use crate::bpf::Steering;
use crate::conn::{NatConns, PressurePolicy};
use crate::dest::{DestRt, NO_PORT};
use crate::forward::PortInfo;
use crate::model::{DataPathStats, Request, Response, WorkerCounters};
use crate::packet::DropReason;
use crate::service::Snapshot;
use crate::sync::daemon::{BulkState, Role, SyncDaemonConfig, SyncManager};
use crate::sync::SyncHooks;
use crate::worker::{BindMode, Shared, Worker, WorkerHandle};
use anyhow::{bail, Context, Result};
use arc_swap::ArcSwap;
use iface::Iface;
use state::DaemonState;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Default connection capacity over all workers.
pub const DEFAULT_CONN_MAX: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct DaemonOpts {
    /// Interfaces to serve: one for DR, TUN and one-armed NAT; external then internal for a
    /// two-armed NAT director.
    pub interfaces: Vec<String>,
    pub socket: PathBuf,
    /// Workers = RX queues served; `None` = all queues.
    pub workers: Option<u32>,
    pub conn_max: usize,
    /// Benchmark reference: reflect every steered frame back (see `Forwarder::reflect`).
    pub reflect: bool,
    /// Preferred busy polling (src/busypoll.rs): workers drive NAPI and spin.
    pub busy_poll: bool,
    /// Nice value of the worker threads (0: unchanged).
    pub worker_nice: i32,
    /// The XDP fast path for established flows (`--no-fast-path` turns it off).
    pub fast_path: bool,
    /// Entries of the fast path's flow map (`--fast-path-max`, default `--conn-max`).
    pub fast_path_max: u32,
    /// Template capacity of each persistent service.
    pub templates_max: usize,
    /// Which schedulers' services schedule mid-flow TCP segments (`--mid-flow`).
    pub mid_flow: crate::service::MidFlow,
    /// What a full connection table does with a new connection.
    pub table_full: PressurePolicy,
    /// `--config`: a keepalived.conf whose virtual servers xvsd serves and health-checks.
    pub config: Option<PathBuf>,
    /// `--rules`: ipvsadm-save lines applied as one batch at start and on reload.
    pub rules: Option<PathBuf>,
    /// `--sync-daemon`: sync daemons started with xvsd (as `--start-daemon` would).
    pub sync_daemons: Vec<SyncDaemonConfig>,
    /// `--ready-file`: "1" until xvsd is ready (bulk sync included), then "0"; "1" again at
    /// exit. For keepalived's `track_file`.
    pub ready_file: Option<PathBuf>,
    /// `--state-dir`: restart and upgrade without losing established flows (the steering
    /// program stays attached through a pinned link; configuration and connections are
    /// handed to the next xvsd). See docs/architecture.md, "Restart and upgrade".
    pub state_dir: Option<PathBuf>,
    /// `--restart-hold`: how long, after this xvsd stops, service frames are dropped
    /// rather than given to the kernel (with `--state-dir`).
    pub restart_hold: Duration,
    /// `--bpf-pin-dir`: where the XDP links are pinned (with `--state-dir`).
    pub bpf_pin_dir: PathBuf,
    /// `--web-listen`: where `/metrics` and the JSON API are served (off when `None`).
    pub web_listen: Option<std::net::SocketAddr>,
    /// `--announce-dev`: the TUN device holding the VIPs a routing daemon announces
    /// (docs/scale-out.md); `None`: nothing is announced.
    pub announce_dev: Option<String>,
}

/// Writes the readiness file atomically (a temporary file renamed over it), so that
/// keepalived never reads a half-written value.
pub fn write_ready_file(path: &std::path::Path, ready: bool) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, if ready { "0\n" } else { "1\n" })
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// Starts the `--sync-daemon` daemons and marks xvsd ready: at once, or when the bulk sync
/// of a backup daemon with a bulk peer has finished (or failed: the backup then runs on
/// the live updates alone, and holding keepalived back forever would help no one).
fn start_sync_daemons(
    sync: &Arc<SyncManager>,
    daemons: &[SyncDaemonConfig],
    ready_file: Option<&std::path::Path>,
) -> Result<()> {
    // Checked before start-up (`precheck`); what can still fail is logged, and xvsd serves
    // on without that daemon rather than stop forwarding.
    for d in daemons {
        if let Err(e) = sync.start(d.clone()) {
            tracing::error!(
                "--sync-daemon {} --mcast-interface {}: {e}",
                d.role.name(),
                d.mcast_ifn
            );
        }
    }
    let Some(path) = ready_file.map(|p| p.to_path_buf()) else {
        return Ok(());
    };
    let waits = daemons
        .iter()
        .any(|d| d.role == Role::Backup && d.bulk_peer.is_some());
    if !waits {
        return write_ready_file(&path, true);
    }
    let sync = sync.clone();
    std::thread::Builder::new()
        .name("xvs-ready".into())
        .spawn(move || {
            // The bulk fetch is bounded by its timeouts (connect, then each read), so this
            // ends; it also ends if the backup is stopped meanwhile.
            while sync
                .status()
                .iter()
                .any(|s| s.role == Role::Backup && s.bulk == BulkState::Running)
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            match write_ready_file(&path, true) {
                Ok(()) => tracing::info!(file = %path.display(), "ready (bulk sync finished)"),
                Err(e) => tracing::error!("{e:#}"),
            }
        })
        .context("spawning the readiness thread")?;
    Ok(())
}

/// Default `--bpf-pin-dir`.
pub const DEFAULT_BPF_PIN_DIR: &str = "/sys/fs/bpf/xvs";
/// Default `--restart-hold`.
pub const DEFAULT_RESTART_HOLD: Duration = Duration::from_secs(30);

/// Everything the control socket needs besides the configuration.
pub struct DataPathView {
    pub ifaces: Vec<Iface>,
    pub xdp_mode: String,
    pub steering: Arc<Mutex<Steering>>,
    pub workers: Vec<(WorkerHandle, Vec<BindMode>)>,
    pub nat: Arc<NatConns>,
    /// The health checks' state, with `--config`.
    pub health: Option<Arc<Mutex<crate::health::engine::Engine>>>,
    /// Connection sync over the tables (also the restart state file's source).
    pub sync_hooks: Arc<sync_hooks::DataHooks>,
    /// The connection-sync daemons (`--start-daemon`, `--sync-daemon`).
    pub sync: Arc<SyncManager>,
    /// `xvsadm --reload`: the control thread hands the main loop a reply channel and
    /// waits; the main loop reloads as on SIGHUP and answers.
    pub reload: std::sync::mpsc::Sender<ReloadReply>,
    /// `--announce-dev` and `xvsadm --announce` (drain).
    pub announce: Arc<announce::AnnounceCtl>,
}

/// Where the main loop sends a reload's outcome: a one-line summary, or why the file was
/// refused (the running configuration then is unchanged).
pub type ReloadReply = std::sync::mpsc::Sender<Result<String, String>>;

impl DataPathView {
    pub fn stats(&self) -> DataPathStats {
        self.stats_inner()
    }

    fn stats_inner(&self) -> DataPathStats {
        let xdp = self
            .steering
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stats()
            .unwrap_or_default();
        let nat_conns = (0..self.nat.shards())
            .map(|i| self.nat.shard(i).len() as u64)
            .sum();
        DataPathStats {
            interface: self
                .ifaces
                .iter()
                .map(|i| i.name.as_str())
                .collect::<Vec<_>>()
                .join(","),
            nat_conns,
            xdp_mode: self.xdp_mode.clone(),
            xdp_redirected: xdp.redirected,
            xdp_passed: xdp.passed,
            xdp_malformed: xdp.malformed,
            xdp_no_socket: xdp.no_socket,
            xdp_fragments: xdp.fragments,
            sync: self
                .sync
                .counters()
                .pairs()
                .into_iter()
                .chain([("sync_parked", self.sync_hooks.parked().len() as u64)])
                .map(|(n, v)| (n.to_string(), v))
                .collect(),
            xdp_held: xdp.held,
            fast: fast_pairs(&xdp),
            workers: self
                .workers
                .iter()
                .map(|(h, modes)| {
                    let c = h.stats.read();
                    let x = h.xsk_stats();
                    WorkerCounters {
                        queue: h.queue,
                        bind_mode: modes
                            .iter()
                            .map(|m| match m {
                                BindMode::ZeroCopy => "zero-copy",
                                BindMode::Copy => "copy",
                            })
                            .collect::<Vec<_>>()
                            .join(","),
                        rx_frames: c.rx_frames,
                        tx_frames: c.tx_frames,
                        new_conns: c.new_conns,
                        conns: h.stats.conns.load(Relaxed),
                        icmp_frag_needed: c.icmp_frag_needed,
                        evicted: c.evicted,
                        nat_other_worker: c.nat_other_worker,
                        half_open: h.stats.half_open.load(Relaxed),
                        icmp_time_exceeded: c.icmp_time_exceeded,
                        icmp_relayed: c.icmp_relayed,
                        icmp_handoff: c.icmp_handoff,
                        icmp_handoff_relayed: c.icmp_handoff_relayed,
                        dead_expired: c.dead_expired,
                        dead_rescheduled: c.dead_rescheduled,
                        dead_reset: c.dead_reset,
                        imported: c.imported,
                        moved_handoff: c.moved_handoff,
                        moved_out: c.moved_out,
                        mid_flow: c.mid_flow,
                        xsk_rx_ring_full: x.rx_ring_full,
                        xsk_rx_fill_ring_empty: x.rx_fill_ring_empty_descs,
                        xsk_rx_dropped: x.rx_dropped,
                        xsk_tx_ring_empty: x.tx_ring_empty_descs,
                        napi_ids: h.napi_ids(),
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

/// Keeps the real servers' next hops current: the kernel's route to each (which of our
/// interfaces, which gateway, which source address for TUN) and the next hop's MAC from the
/// neighbour table, asking the kernel to resolve missing entries.
struct Resolver {
    neigh: neigh::Neighbours,
    /// ifindex of each port, in port order.
    port_ifindex: Vec<u32>,
    routes: HashMap<Ipv4Addr, (Instant, Option<neigh::RouteInfo>)>,
    last_trigger: HashMap<(u32, Ipv4Addr), Instant>,
    /// Parked NAT entries whose client side is being looked up, since when.
    clients_pending: Vec<(crate::packet::FlowKey, Instant)>,
}

/// How long a client lookup is retried before the key is let go.
const CLIENT_WAIT: Duration = Duration::from_secs(3);
/// Client lookups in progress at once.
const CLIENTS_PENDING_MAX: usize = 1024;

/// How long a route lookup stays valid before it is asked again.
const ROUTE_TTL: Duration = Duration::from_secs(5);

impl Resolver {
    fn route(&mut self, rip: Ipv4Addr) -> Option<neigh::RouteInfo> {
        if let Some((at, r)) = self.routes.get(&rip) {
            if at.elapsed() < ROUTE_TTL && r.is_some() {
                return *r;
            }
        }
        let r = match self.neigh.route_get(rip) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(rs = %rip, "route lookup: {e:#}");
                None
            }
        };
        self.routes.insert(rip, (Instant::now(), r));
        r
    }

    /// The client side of parked NAT entries a reply is waiting for (see
    /// `ParkedConns::take_for_reply`): the port the kernel routes the client through and
    /// the next hop's MAC. A missing MAC is asked for (`NTF_USE`, every 500 ms per next
    /// hop) and the key kept for up to `CLIENT_WAIT`, looked at again every pass of the
    /// main loop, so the real server's next retransmission finds the entry ready (dropping
    /// a key until the next reply would cost a doubled retransmission timeout).
    fn resolve_clients(&mut self, parked: &crate::conn::ParkedConns) {
        let room = CLIENTS_PENDING_MAX.saturating_sub(self.clients_pending.len());
        let mut keys = Vec::new();
        parked.take_wanted(&mut keys, room);
        let now = Instant::now();
        self.clients_pending
            .extend(keys.into_iter().map(|k| (k, now)));
        if self.clients_pending.is_empty() {
            return;
        }
        let table = match self.neigh.dump_all() {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("reading the neighbour table: {e:#}");
                return;
            }
        };
        let mut pending = std::mem::take(&mut self.clients_pending);
        pending.retain(|&(k, since)| {
            let cip = Ipv4Addr::from(k.saddr);
            // Not through `route()`: its cache is for the real servers; clients are many.
            let r = self.neigh.route_get(cip).ok();
            let found = r.and_then(|r| {
                let port = self.port_ifindex.iter().position(|&i| i == r.oif)?;
                let hop = r.next_hop(cip);
                match table.get(&(r.oif, hop)) {
                    Some(mac) => Some(crate::conn::ClientSide {
                        port: port as u8,
                        mac: *mac,
                    }),
                    None => {
                        self.ask_neighbour(r.oif, hop, cip);
                        None
                    }
                }
            });
            match found {
                Some(c) => {
                    parked.set_client(&k, c);
                    false
                }
                None if since.elapsed() >= CLIENT_WAIT => {
                    // Give up for now: a later reply queues it again.
                    parked.set_client(&k, crate::conn::ClientSide::UNKNOWN);
                    false
                }
                None => true,
            }
        });
        self.clients_pending = pending;
    }

    /// Asks the kernel to resolve `hop` on `oif` (`NTF_USE`), at most every 500 ms per
    /// next hop; `for_addr` (a real server or a client) is only for the log line.
    fn ask_neighbour(&mut self, oif: u32, hop: Ipv4Addr, for_addr: Ipv4Addr) {
        let due = self
            .last_trigger
            .get(&(oif, hop))
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(500));
        if due {
            self.last_trigger.insert((oif, hop), Instant::now());
            if let Err(e) = self.neigh.trigger(oif, hop) {
                tracing::warn!(addr = %for_addr, next_hop = %hop, "neighbour resolution: {e:#}");
            }
        }
    }

    fn has_pending_clients(&self) -> bool {
        !self.clients_pending.is_empty()
    }

    fn refresh(&mut self, dests: &[Arc<DestRt>]) {
        let table = match self.neigh.dump_all() {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("reading the neighbour table: {e:#}");
                return;
            }
        };
        // A server whose next hop changes must not keep its fast-path flows on the old
        // one: their entries hold the MACs and the egress (see fastpath).
        let before: Vec<_> = dests.iter().map(|d| d.fast_route()).collect();
        self.refresh_routes(dests, &table);
        for (d, b) in dests.iter().zip(before) {
            if d.fast_route() != b {
                d.stats.bump_gen();
            }
        }
    }

    fn refresh_routes(
        &mut self,
        dests: &[Arc<DestRt>],
        table: &std::collections::HashMap<(u32, std::net::Ipv4Addr), [u8; 6]>,
    ) {
        for d in dests {
            d.load.wants_resolution.store(false, Relaxed);
            let Some(r) = self.route(d.addr) else {
                d.set_mac(None);
                continue;
            };
            let Some(port) = self.port_ifindex.iter().position(|&i| i == r.oif) else {
                // The kernel routes this server through an interface xvsd does not serve.
                d.egress.store(NO_PORT, Relaxed);
                d.set_mac(None);
                continue;
            };
            d.egress.store(port as u32, Relaxed);
            if let Some(src) = r.prefsrc {
                d.tun_src.store(u32::from(src), Relaxed);
            }
            let hop = r.next_hop(d.addr);
            match table.get(&(r.oif, hop)) {
                Some(mac) => d.set_mac(Some(*mac)),
                None => {
                    d.set_mac(None);
                    self.ask_neighbour(r.oif, hop, d.addr);
                }
            }
        }
    }
}

/// How many workers serve `queues` RX queues (`--workers`, default all): one per queue,
/// from queue 0, at most `stats::MAX_WORKERS`.
fn choose_workers(queues: u32, requested: Option<u32>) -> Result<u32> {
    let n = match requested {
        None => queues,
        Some(0) => bail!("--workers must be at least 1"),
        Some(n) if n > queues => {
            bail!("--workers {n}: only {queues} RX queue(s) to serve; one worker serves one queue")
        }
        Some(n) => {
            if n < queues {
                tracing::warn!(
                    "serving {n} of {queues} RX queues: service traffic arriving on the others goes to the kernel"
                );
            }
            n
        }
    };
    if n as usize > crate::stats::MAX_WORKERS {
        bail!(
            "{n} RX queues: xvsd runs at most {} workers; pass --workers N (or reduce the queues with ethtool -L)",
            crate::stats::MAX_WORKERS
        );
    }
    Ok(n)
}

/// Restricts the calling thread (and the threads it creates later) to the CPUs not in
/// `busy`, if any are left; otherwise leaves it as it is.
fn keep_off_cores(busy: &[usize]) {
    // SAFETY: cpu_set_t is plain bits; CPU_* only touch the set passed; sched_*affinity
    // read or write the calling thread's mask from a properly sized set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return;
        }
        for &c in busy {
            if c < libc::CPU_SETSIZE as usize {
                libc::CPU_CLR(c, &mut set);
            }
        }
        if libc::CPU_COUNT(&set) == 0 {
            return;
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            tracing::debug!("keeping control threads off the workers' cores failed");
        }
    }
}

/// `--rules FILE`: the ipvsadm-save lines as the requests of one batch, or FILE: line N:
/// what is wrong.
pub fn load_rules(path: &std::path::Path) -> Result<Vec<Request>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the rules file {}", path.display()))?;
    crate::cli::parse::parse_restore(&text, crate::cli::services::PortNames::system())
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message))
}

/// SIGHUP and `xvsadm --reload`: re-read `--config` (the difference is applied, health
/// states kept) or `--rules` (`-C` plus the file as one batch, so services the file keeps
/// keep their connections and counters). A bad file changes nothing.
fn reload(
    config: Option<&std::path::Path>,
    health: Option<&crate::health::runner::Health>,
    rules: Option<&std::path::Path>,
    state: &Mutex<DaemonState>,
) -> Result<String, String> {
    if let (Some(path), Some(h)) = (config, health) {
        return match kconf::load(path) {
            Ok(conf) => {
                kconf::log_loaded(&conf);
                let n = conf.virtual_servers.len();
                h.reload(conf);
                Ok(format!(
                    "{}: {n} virtual server(s) reloaded",
                    path.display()
                ))
            }
            Err(e) => Err(format!(
                "{e}: reload refused, the running configuration is unchanged"
            )),
        };
    }
    if let Some(path) = rules {
        let refused =
            |e: String| format!("{e}: reload refused, the running configuration is unchanged");
        let reqs = load_rules(path).map_err(|e| refused(format!("{e:#}")))?;
        let n = reqs.len();
        let mut batch = vec![Request::Clear];
        batch.extend(reqs);
        let resp = state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .apply(&Request::Batch(batch));
        return match resp {
            Response::Error(e) => Err(refused(format!("{}: {e}", path.display()))),
            _ => Ok(format!("{}: {n} rule(s) applied", path.display())),
        };
    }
    Ok("nothing to reload: xvsd runs without --config or --rules".into())
}

/// The main loop's side of a reload: systemd hears RELOADING, then READY with the new
/// status line, whatever the outcome (a refused file leaves xvsd serving the old one).
fn reload_notified(
    opts: &DaemonOpts,
    health: Option<&crate::health::runner::Health>,
    state: &Mutex<DaemonState>,
    sync: &SyncManager,
) -> Result<String, String> {
    notify::reloading();
    let r = reload(opts.config.as_deref(), health, opts.rules.as_deref(), state);
    match &r {
        Ok(m) if opts.config.is_some() || opts.rules.is_some() => {
            tracing::info!("configuration reloaded: {m}")
        }
        Ok(m) => tracing::info!("{m}"),
        Err(e) => tracing::error!("{e}"),
    }
    notify::ready(&summary(state, sync).line());
    r
}

/// The counts of the systemd status line.
fn summary(state: &Mutex<DaemonState>, sync: &SyncManager) -> notify::Summary {
    let mut s = notify::Summary::default();
    {
        let st = state.lock().unwrap_or_else(|e| e.into_inner());
        s.services = st.model.services.len();
        s.real_servers = st.model.services.iter().map(|sc| sc.dests.len()).sum();
        for d in st.dests() {
            s.active += u64::from(d.active());
            s.inactive += u64::from(d.inactive());
        }
    }
    for d in sync.status() {
        match d.role {
            Role::Master => s.master = true,
            Role::Backup => s.backup = true,
        }
    }
    s
}

/// Runs the daemon in the foreground until SIGINT or SIGTERM.
pub fn run(opts: DaemonOpts) -> Result<()> {
    // Not ready, before anything else: a keepalived tracking the file must not take
    // MASTER on a director that is still starting (or failed to).
    if let Some(p) = &opts.ready_file {
        write_ready_file(p, false)?;
    }
    if opts.interfaces.is_empty() {
        bail!("at least one --interface is needed");
    }
    crate::sync::daemon::precheck(&opts.sync_daemons).map_err(|e| anyhow::anyhow!(e))?;
    // Bound before anything is attached: an address that is taken or not on this host
    // stops xvsd here, with nothing changed.
    let web = opts.web_listen.map(crate::web::server::bind).transpose()?;
    if opts.interfaces.len() > crate::forward::MAX_PORTS.min(crate::bpf::MAX_IFACES as usize) {
        bail!("at most {} interfaces", crate::forward::MAX_PORTS);
    }
    let ifaces: Vec<Iface> = opts
        .interfaces
        .iter()
        .map(|n| Iface::lookup(n))
        .collect::<Result<_>>()?;
    let queues = ifaces.iter().map(|i| i.rx_queues).min().unwrap_or(1);
    if ifaces.iter().any(|i| i.rx_queues != queues) {
        tracing::warn!(
            "interfaces have different RX queue counts; serving queues 0..{queues} of each: \
             service traffic on higher queues goes to the kernel"
        );
    }
    let nworkers = choose_workers(queues, opts.workers)?;
    // Before any service exists: one counter line per worker.
    crate::stats::set_worker_slots(nworkers as usize);
    if opts.reflect {
        tracing::warn!(
            "--reflect: benchmark mode, every steered frame is sent back with its MACs swapped"
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    let hup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())
        .context("installing the SIGHUP handler")?;
    // Read the file before touching the network: a bad file stops xvsd at once.
    let kconf = match &opts.config {
        Some(path) => Some(kconf::load(path).map_err(|e| anyhow::anyhow!("{e}"))?),
        None => None,
    };
    let rules = opts.rules.as_deref().map(load_rules).transpose()?;

    let saved = match &opts.state_dir {
        Some(dir) => prepare_state_dir(dir, &opts)?,
        None => None,
    };

    // --announce-dev: the device exists (with no address) before anything is attached, so
    // a name that is taken stops xvsd with nothing changed. VIPs appear on it only from the
    // main loop, once the configuration is in.
    let announce_ctl = Arc::new(announce::AnnounceCtl::new(opts.announce_dev.clone()));
    let mut announcer = opts
        .announce_dev
        .as_deref()
        .map(|d| announce::Announcer::open(d, announce_ctl.clone()))
        .transpose()?;

    // --busy-poll: the interfaces' NAPI deferral, written before the sockets exist and put
    // back when this function returns (the value is dropped last). A killed xvsd leaves them
    // set: harmless without busy polling beyond up to gro_flush_timeout more latency.
    let mut busy_poll_tuning = if opts.busy_poll {
        let bp = crate::busypoll::BusyPoll::default();
        let t = crate::busypoll::IfaceTuning::apply(
            std::path::Path::new("/sys/class/net"),
            &opts.interfaces,
            &bp,
        )
        .unwrap_or_else(|e| {
            // E.g. the systemd unit's read-only /sys: the operator sets them (appliance.md).
            tracing::warn!(
                error = %format!("{e:#}"),
                "--busy-poll: could not set napi_defer_hard_irqs={} and gro_flush_timeout={} \
                 on the interfaces; without them the kernel's NAPI keeps competing with the \
                 workers: set them before starting xvsd",
                bp.defer_hard_irqs,
                bp.gro_flush_timeout_ns
            );
            crate::busypoll::IfaceTuning::default()
        });
        tracing::info!(
            defer_hard_irqs = bp.defer_hard_irqs,
            gro_flush_timeout_ns = bp.gro_flush_timeout_ns,
            busy_poll_us = bp.usecs,
            budget = bp.budget,
            "--busy-poll: preferred busy polling on every AF_XDP socket"
        );
        Some(t)
    } else {
        None
    };
    // The fast path's flow map: by default one entry per connection the tables can hold;
    // smaller is a cache (an evicted flow goes back to the workers).
    let mut steering = Steering::load_with(opts.fast_path_max.max(1))?;
    // Before any service or server exists: their counter sets take fast-path slots.
    let fast = opts.fast_path && !opts.reflect;
    if fast {
        let ifindexes: Vec<u32> = ifaces.iter().map(|i| i.index).collect();
        crate::fastpath::init(steering.fast_maps()?, &ifindexes);
    }
    steering.set_fast_path(fast)?;
    tracing::info!(fast_path = fast, "XDP fast path for established flows");
    let mut modes = Vec::new();
    for (slot, i) in ifaces.iter().enumerate() {
        if opts.state_dir.is_some() {
            // Attached (or swapped into the pinned link) only once the maps and the
            // sockets are ready: see the restore below.
            steering.set_iface(slot as u32, i.index, &i.name, i.mac)?;
            continue;
        }
        let mode = steering.attach(slot as u32, i.index, &i.name, i.mac)?;
        tracing::info!(interface = %i.name, ifindex = i.index, mode = %mode, queues = i.rx_queues, mtu = i.mtu, "XDP steering program attached");
        modes.push(mode.to_string());
    }

    let shared = Arc::new(Shared {
        snapshot: ArcSwap::from_pointee(Snapshot::default()),
        stop: AtomicBool::new(false),
    });
    let per_worker = (opts.conn_max / nworkers as usize).max(1);
    let nat = Arc::new(NatConns::with_policy(opts.conn_max, opts.table_full));
    // Synced, restored and moved connections wait here for their first packet.
    let parked = Arc::new(crate::conn::ParkedConns::with_capacity(opts.conn_max));
    let sync_queues = Arc::new(crate::sync::out::SyncQueues::new(nworkers as usize));
    let hooks = Arc::new(sync_hooks::DataHooks::new(
        parked.clone(),
        sync_queues.clone(),
        shared.clone(),
    ));
    let ports: Vec<(String, PortInfo)> = ifaces
        .iter()
        .map(|i| {
            (
                i.name.clone(),
                PortInfo {
                    mac: i.mac,
                    mtu: i.mtu,
                },
            )
        })
        .collect();
    let mut threads = Vec::new();
    let mut handles = Vec::new();
    // ICMP errors about DR/TUN connections of another worker go round the workers.
    let handoffs = Arc::new(
        crate::handoff::Handoffs::new(nworkers as usize)
            .context("creating the ICMP handoff queues")?,
    );
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    for q in 0..nworkers {
        let (mut w, h) = Worker::new(
            &ports,
            q,
            per_worker,
            nat.clone(),
            shared.clone(),
            crate::worker::WorkerOpts {
                reflect: opts.reflect,
                busy_poll: opts.busy_poll.then(crate::busypoll::BusyPoll::default),
                nice: opts.worker_nice,
                table_full: opts.table_full,
            },
        )?;
        if nworkers > 1 {
            w.set_handoff(handoffs.clone());
        }
        w.set_shared_conns(parked.clone(), sync_queues.clone());
        for (slot, fd) in w.fds().into_iter().enumerate() {
            steering.set_xsk(slot as u32, q, fd)?;
        }
        tracing::info!(queue = q, modes = ?w.modes, "AF_XDP sockets bound");
        handles.push((h, w.modes.clone()));
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

    // --busy-poll: a worker whose sockets turn out to have no NAPI id falls back to the
    // default loop (src/worker.rs); the interface deferral then only delays the kernel's
    // own NAPI, so it is put back (checked once a second below).
    let worker_stats: Vec<_> = handles.iter().map(|(h, _)| h.stats.clone()).collect();

    // The control threads (this one, the control socket, the health checks, listings)
    // stay off the workers' cores when there are others: a burst of health checks or a
    // long listing must not take time from forwarding. Threads inherit this mask.
    keep_off_cores(
        &(0..nworkers as usize)
            .filter_map(|q| cores.get(q % cores.len().max(1)).map(|c| c.id))
            .collect::<Vec<_>>(),
    );
    let steering = Arc::new(Mutex::new(steering));
    let state = Arc::new(Mutex::new(DaemonState::new(
        shared.clone(),
        Box::new(state::SharedSteer(steering.clone())),
        (per_worker * nworkers as usize) as u64,
    )));
    {
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        st.templates_max = opts.templates_max.max(1);
        st.set_mid_flow(opts.mid_flow);
    }
    // `--rules` before anything serves (and before a restored connection looks for its
    // service): as ipvsadm.service restores its file before the unit counts as started.
    if let (Some(reqs), Some(path)) = (rules, &opts.rules) {
        let n = reqs.len();
        let resp = state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .apply(&Request::Batch(reqs));
        if let Response::Error(e) = resp {
            bail!("{}: {e}", path.display());
        }
        tracing::info!(file = %path.display(), rules = n, "rules applied");
    }
    // The director's own addresses, kept by the loop below (NAT steering, ha_suspend).
    let local_shared: Arc<Mutex<Vec<Ipv4Addr>>> = Arc::default();
    let health = match kconf {
        Some(conf) => {
            kconf::log_loaded(&conf);
            kconf::init_tracked_files(&conf);
            let sink = kconf::ConfigSink {
                state: state.clone(),
                owned: Default::default(),
            };
            let local = local_shared.clone();
            let h = crate::health::runner::Health::start(
                conf,
                Box::new(sink),
                crate::health::prober(),
                Arc::new(move || local.lock().unwrap_or_else(|e| e.into_inner()).clone()),
            )
            .context("starting the health checks")?;
            Some(h)
        }
        None => None,
    };
    let sync = Arc::new(SyncManager::new(hooks.clone()));
    let (reload_tx, reload_rx) = std::sync::mpsc::channel::<ReloadReply>();
    let mut resolver = Resolver {
        neigh: neigh::Neighbours::open()?,
        port_ifindex: ifaces.iter().map(|i| i.index).collect(),
        routes: HashMap::new(),
        last_trigger: HashMap::new(),
        clients_pending: Vec::new(),
    };
    let mut local_neigh = neigh::Neighbours::open()?;
    let mut saved_model = None;
    if let Some(dir) = &opts.state_dir {
        let restore = Restore {
            dir,
            opts: &opts,
            ifaces: &ifaces,
            state: &state,
            steering: &steering,
            hooks: &*hooks,
            local: &local_shared,
        };
        modes = restore.run(saved, &mut resolver, &mut local_neigh)?;
        saved_model = Some(
            state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .model
                .clone(),
        );
    }
    let view = Arc::new(DataPathView {
        ifaces: ifaces.clone(),
        xdp_mode: modes.join(","),
        steering: steering.clone(),
        workers: handles,
        nat,
        health: health.as_ref().map(|h| h.engine.clone()),
        sync_hooks: hooks.clone(),
        sync: sync.clone(),
        reload: reload_tx,
        announce: announce_ctl.clone(),
    });
    hooks.set_view(&view);
    let listener = server::bind(&opts.socket)?;
    tracing::info!(socket = %opts.socket.display(), "control socket ready");
    {
        let (state, view) = (state.clone(), view.clone());
        std::thread::Builder::new()
            .name("xvs-ctl".into())
            .spawn(move || server::serve(listener, state, view))
            .context("spawning the control thread")?;
    }
    if let Some(listener) = web {
        let addr = listener.local_addr().ok();
        crate::web::server::start(
            listener,
            crate::web::WebCtx {
                state: state.clone(),
                view: view.clone(),
            },
        )?;
        tracing::info!(addr = ?addr, "web listener ready (/metrics, /api/status)");
    }
    start_sync_daemons(&sync, &opts.sync_daemons, opts.ready_file.as_deref())?;
    // The socket serves and the configuration is in: systemd may start what comes After=.
    notify::ready(&summary(&state, &sync).line());

    // Housekeeping until a signal arrives: next hops, local addresses, timers.
    let mut local: Vec<Ipv4Addr> = Vec::new();
    let mut last_local = Instant::now();
    let mut last_full = Instant::now() - Duration::from_secs(60);
    let mut last_tick = Instant::now();
    let mut ticks: u64 = 0;
    let mut last_wanted: Option<Vec<Ipv4Addr>> = None;
    let mut last_announce = Instant::now();
    while !stop.load(Relaxed) {
        std::thread::sleep(Duration::from_millis(50));
        if let Some(a) = announcer.as_mut() {
            // Within 50 ms of a change (a server's weight, a health verdict, a drain); and
            // every second anyway, so an address removed by hand comes back.
            let services = state.lock().unwrap_or_else(|e| e.into_inner()).services();
            let want = announce::wanted(
                announce::service_view(&services),
                announce_ctl.enabled.load(Relaxed),
            );
            if last_wanted.as_ref() != Some(&want)
                || last_announce.elapsed() >= Duration::from_secs(1)
            {
                last_announce = Instant::now();
                a.sync(&want);
                last_wanted = Some(want);
            }
        }
        if hup.swap(false, Relaxed) {
            let _ = reload_notified(&opts, health.as_ref(), &state, &sync);
        }
        while let Ok(reply) = reload_rx.try_recv() {
            let _ = reply.send(reload_notified(&opts, health.as_ref(), &state, &sync));
        }
        if last_tick.elapsed() >= Duration::from_secs(1) {
            last_tick = Instant::now();
            ticks += 1;
            // Template expiry every second, an estimator sample every 2 s (IPVS's period).
            state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .tick(crate::clock::now_ms(), ticks.is_multiple_of(2));
            hooks.tick(crate::clock::now_ms());
            if busy_poll_tuning.as_ref().is_some_and(|t| !t.is_empty())
                && worker_stats.iter().any(|w| w.no_napi_id.load(Relaxed))
            {
                let mut t = busy_poll_tuning.take().expect("checked above");
                let failed = t.restore();
                tracing::warn!(
                    restore_failed = failed.len(),
                    "--busy-poll: the AF_XDP sockets have no NAPI id (copy mode on this \
                     device): busy polling cannot work here; workers use the default loop \
                     and the interfaces' napi_defer_hard_irqs/gro_flush_timeout are restored"
                );
            }
            if ticks.is_multiple_of(5) {
                notify::status(&summary(&state, &sync).line());
            }
            if let (Some(dir), Some(last)) = (&opts.state_dir, saved_model.as_mut()) {
                // Write-through: a crashed xvsd restarts with its last configuration.
                let model = state
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .model
                    .clone();
                if model != *last {
                    match statefile::save_config(dir, &model, &opts.interfaces) {
                        Ok(()) => *last = model,
                        Err(e) => tracing::warn!("saving the configuration: {e:#}"),
                    }
                }
            }
        }
        if local.is_empty() || last_local.elapsed() >= Duration::from_secs(5) {
            last_local = Instant::now();
            // The director's own addresses: NAT-reply steering must leave their traffic
            // (health checks, management) to the kernel.
            match local_neigh.local_addrs() {
                Ok(mut a) => {
                    a.sort();
                    if a != local {
                        if let Err(e) = steering
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .set_local_addrs(&a)
                        {
                            tracing::warn!("{e:#}");
                        }
                        local = a;
                        *local_shared.lock().unwrap_or_else(|e| e.into_inner()) = local.clone();
                    }
                }
                Err(e) => tracing::warn!("listing local addresses: {e:#}"),
            }
        }
        // Replies waiting for a synced NAT entry's client side (route and MAC of the
        // client, as the kernel would send to it), within 50 ms.
        if hooks.parked().wanted_count() > 0 || resolver.has_pending_clients() {
            resolver.resolve_clients(hooks.parked());
        }
        let dests = state.lock().unwrap_or_else(|e| e.into_inner()).dests();
        // Refresh every second; every 50 ms while some server's MAC is missing or a worker
        // asked for it, so that a newly added server is usable within milliseconds.
        let missing = dests
            .iter()
            .any(|d| d.mac().is_none() || d.load.wants_resolution.load(Relaxed));
        if !missing && last_full.elapsed() < Duration::from_secs(1) {
            continue;
        }
        last_full = Instant::now();
        resolver.refresh(&dests);
    }

    tracing::info!("stopping");
    // Withdraw first: the routing daemon moves new traffic to the other directors while
    // this one still forwards what reaches it during the rest of the shutdown.
    drop(announcer.take());
    notify::stopping();
    if let Some(p) = &opts.ready_file {
        if let Err(e) = write_ready_file(p, false) {
            tracing::warn!("{e:#}");
        }
    }
    sync.stop_all();
    if let Some(dir) = &opts.state_dir {
        hand_over(
            dir,
            &opts,
            &state,
            &steering,
            &*hooks,
            (ifaces.len() as u32, nworkers),
        );
    }
    drop(health);
    shared.stop.store(true, Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let _ = std::fs::remove_file(&opts.socket);
    if opts.state_dir.is_some() {
        steering
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .leave_attached();
        tracing::info!(
            hold_s = opts.restart_hold.as_secs_f64(),
            "XDP steering left attached for the next xvsd (service frames dropped until it comes, for the hold at most); bye"
        );
    } else {
        steering.lock().unwrap_or_else(|e| e.into_inner()).detach();
        tracing::info!("XDP detached; bye");
    }
    Ok(())
}

/// `--state-dir` at start: the directory and the bpffs pin root exist, pins of interfaces
/// this xvsd does not serve are gone, and the saved configuration is read (unless
/// `--config` names the authority).
fn prepare_state_dir(
    dir: &std::path::Path,
    opts: &DaemonOpts,
) -> Result<Option<statefile::SavedConfig>> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the state directory {}", dir.display()))?;
    crate::bpf::pinned::ensure_root(&opts.bpf_pin_dir)?;
    let names: Vec<&str> = opts.interfaces.iter().map(String::as_str).collect();
    crate::bpf::pinned::remove_stale(&opts.bpf_pin_dir, &names)?;
    let saved = statefile::load_config(dir)?;
    if saved.is_some() && (opts.config.is_some() || opts.rules.is_some()) {
        tracing::info!(
            "--config or --rules given: the configuration saved in {} is not used (the file is the authority)",
            dir.display()
        );
        return Ok(None);
    }
    Ok(saved)
}

/// The restore at start with `--state-dir`, in the order that keeps flows: configuration,
/// director addresses and next hops, connections, and only then the program swap.
struct Restore<'a> {
    dir: &'a std::path::Path,
    opts: &'a DaemonOpts,
    ifaces: &'a [Iface],
    state: &'a Arc<Mutex<DaemonState>>,
    steering: &'a Arc<Mutex<Steering>>,
    hooks: &'a dyn SyncHooks,
    local: &'a Arc<Mutex<Vec<Ipv4Addr>>>,
}

impl Restore<'_> {
    /// Returns the XDP mode of each interface.
    fn run(
        &self,
        saved: Option<statefile::SavedConfig>,
        resolver: &mut Resolver,
        local_neigh: &mut neigh::Neighbours,
    ) -> Result<Vec<String>> {
        let lock_state = || self.state.lock().unwrap_or_else(|e| e.into_inner());
        let lock_steer = || self.steering.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(saved) = saved {
            let n = saved.requests.len();
            // Bound first: a guard in the match scrutinee would live through the arms.
            let resp = lock_state().apply(&Request::Batch(saved.requests));
            match resp {
                Response::Error(e) => bail!(
                    "restoring the configuration saved in {} by xvs {}: {e} (move the file away to start without it)",
                    self.dir.join(statefile::CONFIG_FILE).display(),
                    saved.xvs_version
                ),
                _ => tracing::info!(
                    requests = n,
                    services = lock_state().model.services.len(),
                    saved_by = %saved.xvs_version,
                    "configuration restored from the state directory"
                ),
            }
        }
        // The director's own addresses and the servers' MACs before the first frame: a
        // restored connection's next packet must find its next hop (500 ms at most).
        match local_neigh.local_addrs() {
            Ok(mut a) => {
                a.sort();
                lock_steer().set_local_addrs(&a)?;
                *self.local.lock().unwrap_or_else(|e| e.into_inner()) = a;
            }
            Err(e) => tracing::warn!("listing local addresses: {e:#}"),
        }
        let deadline = Instant::now() + Duration::from_millis(500);
        loop {
            let dests = lock_state().dests();
            resolver.refresh(&dests);
            if dests.iter().all(|d| d.mac().is_some()) || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let conns = self.dir.join(statefile::CONNS_FILE);
        let had_conns = conns.exists();
        if had_conns {
            match statefile::load_conns(&conns, self.hooks) {
                Ok(l) => tracing::info!(
                    conns = l.conns,
                    expired = l.expired,
                    skipped = l.skipped,
                    age_ms = l.age.as_millis() as u64,
                    "connections restored from the state directory"
                ),
                Err(e) => tracing::warn!("restoring connections: {e:#}; the rest are lost"),
            }
        }
        let mut modes = Vec::new();
        for i in self.ifaces {
            let a = lock_steer().attach_pinned(i.index, &i.name, &self.opts.bpf_pin_dir)?;
            match a.replaced_prog {
                Some(old) => {
                    tracing::info!(interface = %i.name, ifindex = i.index, mode = %a.mode, replaced_prog_id = old, queues = i.rx_queues, mtu = i.mtu, "XDP steering program swapped into the pinned link")
                }
                None => {
                    tracing::info!(interface = %i.name, ifindex = i.index, mode = %a.mode, queues = i.rx_queues, mtu = i.mtu, pin = %self.opts.bpf_pin_dir.display(), "XDP steering program attached and its link pinned")
                }
            }
            modes.push(a.mode.to_string());
        }
        if had_conns {
            if let Err(e) = statefile::retire_conns(self.dir) {
                tracing::warn!("{e:#}");
            }
        }
        let model = lock_state().model.clone();
        if let Err(e) = statefile::save_config(self.dir, &model, &self.opts.interfaces) {
            tracing::warn!("saving the configuration: {e:#}");
        }
        Ok(modes)
    }
}

/// SIGTERM/SIGINT with `--state-dir`: hold service frames in the program (the kernel must
/// not answer them), take the sockets out so the tables stop changing, save configuration
/// and connections. The workers are still running: the hooks walk live tables.
fn hand_over(
    dir: &std::path::Path,
    opts: &DaemonOpts,
    state: &Arc<Mutex<DaemonState>>,
    steering: &Arc<Mutex<Steering>>,
    hooks: &dyn SyncHooks,
    (slots, queues): (u32, u32),
) {
    {
        let mut st = steering.lock().unwrap_or_else(|e| e.into_inner());
        let until = crate::bpf::monotonic_ns() + opts.restart_hold.as_nanos() as u64;
        if let Err(e) = st.set_hold(until) {
            tracing::error!("{e:#}: the kernel will answer service traffic until the next xvsd");
        }
        st.clear_xsks(slots, queues);
    }
    let model = state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .model
        .clone();
    if let Err(e) = statefile::save_config(dir, &model, &opts.interfaces) {
        tracing::error!("saving the configuration: {e:#}");
    }
    match statefile::save_conns(&dir.join(statefile::CONNS_FILE), hooks) {
        Ok(s) => tracing::info!(
            conns = s.conns,
            datagrams = s.datagrams,
            refused = s.refused,
            dir = %dir.display(),
            "state saved for the next xvsd"
        ),
        Err(e) => tracing::error!("saving the connections: {e:#}"),
    }
}

/// The fast path's `--datapath` counters: what the program forwarded (all of it, from the
/// total slot 0) and decided, and the workers' installs and removals.
fn fast_pairs(xdp: &crate::bpf::maps::XdpStats) -> Vec<(String, u64)> {
    let Some(f) = crate::fastpath::get() else {
        return vec![("fast_path".to_string(), 0)];
    };
    let total = f.maps.counters(0);
    let s = f.stats();
    [
        ("fast_path", 1),
        ("fast_packets", total.pkts),
        ("fast_bytes", total.bytes),
        ("fast_forwarded", xdp.fast),
        ("fast_punted", xdp.fast_punt),
        ("fast_stale", xdp.fast_stale),
        ("fast_installs", s.installs),
        ("fast_reinstalls", s.reinstalls),
        ("fast_install_failed", s.install_failed),
        ("fast_removes", s.removes),
        ("fast_refreshed", s.refreshed),
        ("fast_no_slot", s.no_slot),
        ("fast_reinstall_deferred", s.reinstall_deferred),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_string(), v))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_up_to_256_queues_and_a_clear_refusal_beyond() {
        assert_eq!(choose_workers(256, None).unwrap(), 256);
        assert_eq!(choose_workers(300, Some(256)).unwrap(), 256);
        let e = choose_workers(300, None).unwrap_err().to_string();
        assert!(e.contains("at most 256 workers"), "{e}");
        assert!(choose_workers(4, Some(5)).is_err());
        assert!(choose_workers(4, Some(0)).is_err());
    }
}
