//! xvsd's command line, in the library so that the man page and the shell completions
//! are generated from the same clap `Command` the binary parses (`tests/dist_files.rs`).

use clap::Parser;
use std::path::PathBuf;

/// XDP Virtual Server daemon: an AF_XDP layer-4 load balancer with IPVS semantics.
#[derive(Parser, Debug)]
#[command(name = "xvsd", version, about)]
pub struct Args {
    /// Interface to serve. Once for DR, TUN and one-armed NAT; twice for a two-armed NAT
    /// director: external (clients, VIPs) first, then internal (real servers).
    #[arg(long, short = 'i', required_unless_present = "config_test")]
    pub interface: Vec<String>,
    /// keepalived.conf to serve: its virtual_server blocks become services, health
    /// checked as keepalived checks them; vrrp_* and global_defs are left to keepalived
    /// (run it with -P on the same file). SIGHUP re-reads it. See docs/keepalived.md.
    #[arg(long, short = 'f', value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Rules to apply at start, in `ipvsadm -S` format (as ipvsadm.service restores
    /// /etc/sysconfig/ipvsadm or Debian's /etc/ipvsadm.rules): one all-or-nothing batch
    /// before xvsd reports ready; a bad line stops xvsd with FILE: line N. `xvsadm --reload`
    /// and SIGHUP re-read it. xvsd never writes it: `xvsadm -S -n > FILE` keeps runtime
    /// changes. With --state-dir the file, not the saved configuration, is the authority.
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    pub rules: Option<PathBuf>,
    /// Check --config FILE and exit: 0 if xvsd would load it, 1 with FILE:LINE: message
    /// if not. Touches nothing (no interface, no socket).
    #[arg(long, requires = "config")]
    pub config_test: bool,
    /// Control socket path (default /run/xvs/xvsd.sock, or $XVS_SOCKET).
    #[arg(long)]
    pub socket: Option<String>,
    /// Number of workers (RX queues served, from queue 0); default: every RX queue.
    #[arg(long)]
    pub workers: Option<u32>,
    /// Connection table capacity over all workers; new connections beyond it are refused.
    #[arg(long, default_value_t = crate::daemon::DEFAULT_CONN_MAX)]
    pub conn_max: usize,
    /// Benchmark reference mode: send every service frame straight back with its MACs
    /// swapped (no load balancing), to measure the AF_XDP I/O ceiling. Not for production.
    #[arg(long)]
    pub reflect: bool,
    /// Preferred busy polling: each worker runs its interfaces' NAPI receive processing from
    /// its own syscalls (SO_PREFER_BUSY_POLL, SO_BUSY_POLL, SO_BUSY_POLL_BUDGET on every
    /// AF_XDP socket) and spins until the link has been quiet a while; xvsd sets the
    /// interfaces' napi_defer_hard_irqs (2) and gro_flush_timeout (200 µs) and puts the old
    /// values back when it stops. Lowest latency and no competition with the NAPI thread,
    /// at the price of a busy core per worker (see docs/appliance.md).
    #[arg(long)]
    pub busy_poll: bool,
    /// Nice value of the worker threads (-20..19). Negative so that a worker wins its core
    /// over the kernel's NAPI thread or softirq that feeds it: frames already received are
    /// forwarded before more are taken in, and an overload no longer halves the rate. A
    /// worker sleeps whenever its rings are empty, so the kernel is never starved. 0 leaves
    /// the threads as started.
    #[arg(long, default_value_t = -10, allow_negative_numbers = true, value_parser = clap::value_parser!(i32).range(-20..=19))]
    pub worker_nice: i32,
    /// Turn the XDP fast path off: every service frame goes to the workers, as before it
    /// existed. By default established DR, TUN and NAT connections (NAT: both directions)
    /// are forwarded by the XDP program itself once a worker has installed them
    /// (docs/architecture.md, "Fast path").
    #[arg(long)]
    pub no_fast_path: bool,
    /// Entries of the fast path's flow map (default: --conn-max). The map is an LRU cache
    /// of kernel memory locked at start, about 300 bytes an entry (NAT takes two per
    /// connection): a smaller map saves memory, and a flow it evicts only goes back to the
    /// workers (slow path), never breaks. Size it for the flows that carry the traffic.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub fast_path_max: Option<u32>,
    /// Mid-flow scheduling (IPVS's sloppy_tcp, per scheduler): a TCP segment without SYN
    /// of a flow no worker holds is scheduled as a new connection instead of dropped, for
    /// services with one of these schedulers: a comma list of mh and sh, or none. For
    /// directors behind ECMP with the same configuration: a flow the router moves here
    /// reaches the real server it already talks to while the server list is unchanged
    /// (docs/scale-out.md). The others (rr, wlc, ...) always drop such segments.
    #[arg(long, value_name = "LIST", default_value = "mh", value_parser = crate::service::MidFlow::parse)]
    pub mid_flow: crate::service::MidFlow,
    /// Persistence templates each persistent (-p) service can hold (default: twice
    /// --conn-max, so a template is free whenever a connection fits). Beyond it the
    /// longest-unused template is reused; with none unused the client is refused
    /// (counted template_full).
    #[arg(long)]
    pub templates_max: Option<usize>,
    /// What a new connection does when the connection table is full: evict-half-open
    /// (the oldest entry that has not completed a handshake makes room; established ones
    /// never do) or refuse (IPVS without drop_entry).
    #[arg(long, default_value = "evict-half-open", value_parser = parse_table_full)]
    pub table_full: crate::conn::PressurePolicy,
    /// Start a connection-sync daemon with xvsd, as `xvsadm --start-daemon WORDS` would
    /// (the same words: 'master --mcast-interface eth0 --syncid 51'); repeatable (one
    /// master and one backup). Makes the daemons survive a restart or reboot.
    #[arg(long, value_name = "WORDS", value_parser = parse_sync_daemon)]
    pub sync_daemon: Vec<crate::sync::daemon::SyncDaemonConfig>,
    /// Readiness file for keepalived's track_file (weight 0: non-zero = FAULT): "1" from
    /// start-up, "0" once xvsd is ready (after a --sync-daemon backup's --bulk-peer sync
    /// has finished or failed), "1" again at exit. Written atomically.
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    /// Restart and upgrade without losing established flows: the XDP program stays
    /// attached through a BPF link pinned in --bpf-pin-dir; on SIGTERM/SIGINT xvsd saves
    /// its configuration and connections here and exits without detaching; the next xvsd
    /// (this binary or another version) restores them and swaps its program into the link.
    /// Without it, exiting detaches and the interface is back to normal.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// With --state-dir: for this many seconds after xvsd stops, service frames are
    /// dropped (clients retransmit) instead of given to the kernel, which would reset
    /// them. After it, or after a crash, they go to the kernel as with no xvsd.
    #[arg(long, value_name = "SECS", default_value_t = 30, requires = "state_dir", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub restart_hold: u64,
    /// With --state-dir: the bpffs directory holding the pinned XDP links (one
    /// subdirectory per interface); mounted at /sys/fs/bpf if needed.
    #[arg(long, value_name = "DIR", default_value = crate::daemon::DEFAULT_BPF_PIN_DIR, requires = "state_dir")]
    pub bpf_pin_dir: PathBuf,
    /// Serve Prometheus metrics (/metrics, node_exporter's ipvs names plus xvs_*), a
    /// read-only status page (/) and JSON API (/api/status, /api/health, /api/datapath,
    /// /api/history) on ADDR:PORT, e.g. a management address. Off unless given.
    #[arg(long, value_name = "ADDR:PORT")]
    pub web_listen: Option<std::net::SocketAddr>,
    /// Announce the VIPs for a routing daemon (scale-out behind ECMP): xvsd creates this
    /// TUN device (it must not exist), keeps on it, as /32 addresses, every VIP with a
    /// service that has a real server of weight > 0 not declared dead, and none while
    /// drained (`xvsadm --announce off`). BIRD (protocol direct) or FRR (redistribute
    /// connected) exports them. The kernel deletes the device when xvsd exits or dies, so
    /// the routes go with it. See docs/scale-out.md.
    #[arg(long, value_name = "NAME")]
    pub announce_dev: Option<String>,
}

pub fn parse_sync_daemon(s: &str) -> Result<crate::sync::daemon::SyncDaemonConfig, String> {
    crate::cli::parse::parse_sync_daemon(s)
}

pub fn parse_table_full(s: &str) -> Result<crate::conn::PressurePolicy, String> {
    crate::conn::PressurePolicy::parse(s)
        .ok_or_else(|| format!("'{s}': expected evict-half-open or refuse"))
}
