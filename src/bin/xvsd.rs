//! xvsd: the xvs daemon. Thin wiring; the logic lives in `xvs::daemon`.

use clap::Parser;
use std::io::IsTerminal;
use std::path::PathBuf;
use xvs::control::proto;

/// XDP Virtual Server daemon: an AF_XDP layer-4 load balancer with IPVS semantics.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Interface to serve. Once for DR, TUN and one-armed NAT; twice for a two-armed NAT
    /// director: external (clients, VIPs) first, then internal (real servers).
    #[arg(long, short = 'i', required_unless_present = "config_test")]
    interface: Vec<String>,
    /// keepalived.conf to serve: its virtual_server blocks become services, health
    /// checked as keepalived checks them; vrrp_* and global_defs are left to keepalived
    /// (run it with -P on the same file). SIGHUP re-reads it. See docs/keepalived.md.
    #[arg(long, short = 'f', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check --config FILE and exit: 0 if xvsd would load it, 1 with FILE:LINE: message
    /// if not. Touches nothing (no interface, no socket).
    #[arg(long, requires = "config")]
    config_test: bool,
    /// Control socket path (default /run/xvs/xvsd.sock, or $XVS_SOCKET).
    #[arg(long)]
    socket: Option<String>,
    /// Number of workers (RX queues served, from queue 0); default: every RX queue.
    #[arg(long)]
    workers: Option<u32>,
    /// Connection table capacity over all workers; new connections beyond it are refused.
    #[arg(long, default_value_t = xvs::daemon::DEFAULT_CONN_MAX)]
    conn_max: usize,
    /// Benchmark reference mode: send every service frame straight back with its MACs
    /// swapped (no load balancing), to measure the AF_XDP I/O ceiling. Not for production.
    #[arg(long)]
    reflect: bool,
    /// Workers never sleep in poll(2) when idle: lowest latency, but each worker keeps its
    /// core busy (the usual choice on a dedicated director).
    #[arg(long)]
    busy_poll: bool,
    /// Persistence templates each persistent (-p) service can hold (default: twice
    /// --conn-max, so a template is free whenever a connection fits). Beyond it the
    /// longest-unused template is reused; with none unused the client is refused
    /// (counted template_full).
    #[arg(long)]
    templates_max: Option<usize>,
    /// What a new connection does when the connection table is full: evict-half-open
    /// (the oldest entry that has not completed a handshake makes room; established ones
    /// never do) or refuse (IPVS without drop_entry).
    #[arg(long, default_value = "evict-half-open", value_parser = parse_table_full)]
    table_full: xvs::conn::PressurePolicy,
    /// Start a connection-sync daemon with xvsd, as `xvsadm --start-daemon WORDS` would
    /// (the same words: 'master --mcast-interface eth0 --syncid 51'); repeatable (one
    /// master and one backup). Makes the daemons survive a restart or reboot.
    #[arg(long, value_name = "WORDS", value_parser = parse_sync_daemon)]
    sync_daemon: Vec<xvs::sync::daemon::SyncDaemonConfig>,
    /// Readiness file for keepalived's track_file (weight 0: non-zero = FAULT): "1" from
    /// start-up, "0" once xvsd is ready (after a --sync-daemon backup's --bulk-peer sync
    /// has finished or failed), "1" again at exit. Written atomically.
    #[arg(long, value_name = "PATH")]
    ready_file: Option<PathBuf>,
    /// Restart and upgrade without losing established flows: the XDP program stays
    /// attached through a BPF link pinned in --bpf-pin-dir; on SIGTERM/SIGINT xvsd saves
    /// its configuration and connections here and exits without detaching; the next xvsd
    /// (this binary or another version) restores them and swaps its program into the link.
    /// Without it, exiting detaches and the interface is back to normal.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// With --state-dir: for this many seconds after xvsd stops, service frames are
    /// dropped (clients retransmit) instead of given to the kernel, which would reset
    /// them. After it, or after a crash, they go to the kernel as with no xvsd.
    #[arg(long, value_name = "SECS", default_value_t = 30, requires = "state_dir", value_parser = clap::value_parser!(u64).range(1..=3600))]
    restart_hold: u64,
    /// With --state-dir: the bpffs directory holding the pinned XDP links (one
    /// subdirectory per interface); mounted at /sys/fs/bpf if needed.
    #[arg(long, value_name = "DIR", default_value = xvs::daemon::DEFAULT_BPF_PIN_DIR, requires = "state_dir")]
    bpf_pin_dir: PathBuf,
    /// Serve Prometheus metrics (/metrics, node_exporter's ipvs names plus xvs_*) and a
    /// read-only JSON API (/api/status, /api/health, /api/datapath) on ADDR:PORT, e.g. a
    /// management address. Off unless given.
    #[arg(long, value_name = "ADDR:PORT")]
    web_listen: Option<std::net::SocketAddr>,
}

fn parse_sync_daemon(s: &str) -> Result<xvs::sync::daemon::SyncDaemonConfig, String> {
    xvs::cli::parse::parse_sync_daemon(s)
}

fn parse_table_full(s: &str) -> Result<xvs::conn::PressurePolicy, String> {
    xvs::conn::PressurePolicy::parse(s)
        .ok_or_else(|| format!("'{s}': expected evict-half-open or refuse"))
}

fn main() {
    // The log goes to stderr, in colour only on a terminal: written to a file (demo.sh,
    // bench.sh, systemd) it stays plain text.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let a = Args::parse();
    if a.config_test {
        let path = a.config.as_deref().unwrap_or(std::path::Path::new(""));
        match xvs::daemon::kconf::load(path) {
            Ok(c) => {
                for w in &c.warnings {
                    eprintln!("{w}");
                }
                println!(
                    "{}: {} virtual server(s), configuration OK",
                    path.display(),
                    c.virtual_servers.len()
                );
                std::process::exit(0);
            }
            Err(e) => {
                eprintln!("{e}");
                std::process::exit(1);
            }
        }
    }
    let opts = xvs::daemon::DaemonOpts {
        interfaces: a.interface,
        socket: PathBuf::from(proto::socket_path(a.socket.as_deref())),
        workers: a.workers,
        conn_max: a.conn_max,
        reflect: a.reflect,
        busy_poll: a.busy_poll,
        templates_max: a.templates_max.unwrap_or(a.conn_max.saturating_mul(2)),
        table_full: a.table_full,
        config: a.config,
        sync_daemons: a.sync_daemon,
        ready_file: a.ready_file,
        state_dir: a.state_dir,
        restart_hold: std::time::Duration::from_secs(a.restart_hold),
        bpf_pin_dir: a.bpf_pin_dir,
        web_listen: a.web_listen,
    };
    if let Err(e) = xvs::daemon::run(opts) {
        eprintln!("xvsd: {e:#}");
        std::process::exit(1);
    }
}
