//! The control-plane model shared by `xvsadm`, the control protocol and `xvsd`.
//!
//! These types describe *configuration* (what the operator asked for) and *status* (what the
//! daemon reports back). They never appear on the per-packet path: the daemon compiles them into
//! the data-path snapshot (`crate::service::Snapshot`).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::Ipv4Addr;

/// Transport protocol of a virtual service (`-t` / `-u`; `-f` fwmark is not implemented).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// IP protocol number (IANA).
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }

    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            6 => Some(Protocol::Tcp),
            17 => Some(Protocol::Udp),
            _ => None,
        }
    }

    /// The name ipvsadm prints in listings (`TCP`, `UDP`).
    pub fn list_name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
        }
    }

    /// The ipvsadm option selecting this protocol (`-t`, `-u`).
    pub fn flag(self) -> &'static str {
        match self {
            Protocol::Tcp => "-t",
            Protocol::Udp => "-u",
        }
    }
}

/// A virtual service is identified by protocol, virtual address and port, as in IPVS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServiceKey {
    pub proto: Protocol,
    pub addr: Ipv4Addr,
    pub port: u16,
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}:{}", self.proto.list_name(), self.addr, self.port)
    }
}

/// Packet forwarding method of a real server (`-g`, `-i`, `-m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Forward {
    /// Direct routing (`-g`, "gatewaying"): rewrite MACs only. The ipvsadm default.
    #[default]
    Route,
    /// IPIP tunnelling (`-i`).
    Tunnel,
    /// NAT (`-m`, "masquerading").
    Masq,
}

impl Forward {
    /// The word in the "Forward" column of `ipvsadm -L`.
    pub fn list_name(self) -> &'static str {
        match self {
            Forward::Route => "Route",
            Forward::Tunnel => "Tunnel",
            Forward::Masq => "Masq",
        }
    }

    /// The ipvsadm option selecting this method.
    pub fn flag(self) -> &'static str {
        match self {
            Forward::Route => "-g",
            Forward::Tunnel => "-i",
            Forward::Masq => "-m",
        }
    }
}

/// Default persistence timeout in seconds (`-p` without a value), as in ipvsadm.
pub const DEFAULT_PERSISTENCE_SECS: u32 = 300;
/// Default scheduler when `-s` is omitted, as in ipvsadm.
pub const DEFAULT_SCHEDULER: &str = "wlc";
/// Largest weight IPVS accepts.
pub const MAX_WEIGHT: u32 = 65535;

/// Options of a virtual service as given to `-A` / `-E`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceOpts {
    /// Scheduler name as typed (`rr`, `wrr`, ...). Validated by the daemon.
    pub scheduler: String,
    /// Persistence timeout in seconds; `None` = not persistent.
    pub persistent: Option<u32>,
    /// Persistence granularity netmask (`-M`); `None` = 255.255.255.255.
    pub netmask: Option<Ipv4Addr>,
    /// Scheduler flags (`-b sh-fallback,sh-port`), as typed.
    pub sched_flags: Vec<String>,
    /// One-packet scheduling (`-o`, UDP only).
    pub one_packet: bool,
    /// What the connections of a removed or dead real server get (`--on-dead`, an xvs
    /// extension; `Ipvs` by default). Absent in requests from older clients.
    #[serde(default)]
    pub on_dead: crate::kconf::OnDead,
}

impl Default for ServiceOpts {
    fn default() -> Self {
        ServiceOpts {
            scheduler: DEFAULT_SCHEDULER.to_string(),
            persistent: None,
            netmask: None,
            sched_flags: Vec::new(),
            one_packet: false,
            on_dead: crate::kconf::OnDead::Ipvs,
        }
    }
}

/// A real server as given to `-a` / `-e`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestSpec {
    pub addr: Ipv4Addr,
    /// Real port. For DR and TUN IPVS forces it to the service port; `None` = not given.
    pub port: Option<u16>,
    pub forward: Forward,
    pub weight: u32,
    /// Upper connection threshold (`-x`), 0 = none.
    pub u_threshold: u32,
    /// Lower connection threshold (`-y`), 0 = none.
    pub l_threshold: u32,
}

/// Fields of `-e` (edit real server); `None` keeps the current value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestEdit {
    pub addr: Ipv4Addr,
    pub port: Option<u16>,
    pub forward: Option<Forward>,
    pub weight: Option<u32>,
    pub u_threshold: Option<u32>,
    pub l_threshold: Option<u32>,
}

/// IPVS connection timeouts in seconds, as `--set tcp tcpfin udp` sets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    pub tcp: u32,
    pub tcp_fin: u32,
    pub udp: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        // IPVS defaults: ESTABLISHED 15 min, FIN_WAIT 2 min, UDP 5 min.
        Timeouts {
            tcp: 900,
            tcp_fin: 120,
            udp: 300,
        }
    }
}

/// One control request. `xvsadm` builds these from ipvsadm syntax; `xvsd` applies them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    AddService {
        key: ServiceKey,
        opts: ServiceOpts,
    },
    /// `-E`: replaces the service options (ipvsadm semantics: unspecified options take defaults).
    EditService {
        key: ServiceKey,
        opts: ServiceOpts,
    },
    DeleteService {
        key: ServiceKey,
    },
    /// `-C`: remove every service.
    Clear,
    AddDest {
        service: ServiceKey,
        dest: DestSpec,
    },
    EditDest {
        service: ServiceKey,
        dest: DestEdit,
    },
    DeleteDest {
        service: ServiceKey,
        addr: Ipv4Addr,
        port: Option<u16>,
    },
    /// `-Z [service]`: zero packet/byte/connection counters.
    Zero {
        service: Option<ServiceKey>,
    },
    /// `--set tcp tcpfin udp`; 0 leaves a value unchanged.
    SetTimeouts(Timeouts),
    /// `-L`/`-S`: the daemon returns `Response::Status` for one service or all.
    Status {
        service: Option<ServiceKey>,
    },
    /// `-R`: apply all or nothing.
    Batch(Vec<Request>),
    /// xvs-only: data-path counters (XDP verdicts, per-worker frames and drops).
    DataPath,
    /// `-L -c`: the connection table, persistence templates included.
    Connections,
    /// xvs-only `-L --health`: every checker of every real server (`--config`).
    Health,
    /// `--start-daemon master|backup`: start a connection-sync daemon.
    StartDaemon {
        config: crate::sync::daemon::SyncDaemonConfig,
    },
    /// `--stop-daemon master|backup`.
    StopDaemon {
        role: crate::sync::daemon::Role,
    },
    /// `-L --daemon`: answered by `Response::Daemons`.
    Daemons,
    /// xvs-only `--reload`: re-read `xvsd --config` or `--rules` as SIGHUP does, and answer
    /// when done (`Response::Reloaded`, or an `Error` when the file is refused).
    Reload,
    /// xvs-only `--announce on|off|show` (`xvsd --announce-dev`): `Some(false)` drains the
    /// director (every VIP withdrawn, forwarding untouched), `Some(true)` announces again,
    /// `None` only asks. Answered by `Response::Announce`.
    Announce {
        set: Option<bool>,
    },
}

/// What `Request::Announce` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnounceStatus {
    /// `xvsd --announce-dev`.
    pub device: String,
    /// False while drained (`xvsadm --announce off`).
    pub enabled: bool,
    /// The VIPs on the device now (an `--announce` change shows within 50 ms).
    pub announced: Vec<Ipv4Addr>,
}

/// One checker of one real server, as `xvsadm -L -n --health` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthRow {
    /// The virtual server's first service (its group's, for `virtual_server group`).
    pub service: ServiceKey,
    /// `group NAME` of a `virtual_server group`, else empty.
    pub group: String,
    pub addr: Ipv4Addr,
    pub port: u16,
    /// The real server is in the pool (keepalived's "alive").
    pub alive: bool,
    /// `TCP_CHECK`, `HTTP_GET`, ...
    pub checker: String,
    /// Where it connects, `IP:PORT`.
    pub target: String,
    /// The checker's state: true = up.
    pub up: bool,
    /// The checker has run at least once (before that, `up` is the start state).
    pub has_run: bool,
    /// Consecutive failed checks.
    pub failures: u32,
    pub last_error: Option<String>,
    /// Seconds since `up` last changed (or the checker started).
    pub since_secs: u64,
    /// Duration of the last check in ms.
    pub last_latency_ms: Option<u64>,
    pub checks: u64,
}

/// Packet, byte and connection counters of a service or real server (`--stats`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Counters {
    pub conns: u64,
    pub inpkts: u64,
    pub outpkts: u64,
    pub inbytes: u64,
    pub outbytes: u64,
}

/// Smoothed rates per second (`--rate`): connections, packets, bytes (ipvsadm's "BPS" is bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Rates {
    pub cps: u64,
    pub inpps: u64,
    pub outpps: u64,
    pub inbps: u64,
    pub outbps: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DestStatus {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub forward: Forward,
    pub weight: u32,
    pub u_threshold: u32,
    pub l_threshold: u32,
    pub active_conns: u32,
    pub inactive_conns: u32,
    pub persist_conns: u32,
    pub counters: Counters,
    #[serde(default)]
    pub rates: Rates,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub key: ServiceKey,
    pub opts: ServiceOpts,
    pub counters: Counters,
    #[serde(default)]
    pub rates: Rates,
    pub dests: Vec<DestStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// Connection table capacity (the `size=` of ipvsadm's banner).
    pub conn_table_size: u64,
    pub timeouts: Timeouts,
    pub services: Vec<ServiceStatus>,
}

/// The daemon's answer to one `Request`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Ok,
    Status(Status),
    /// An ipvsadm-style message ("No such service", ...); the configuration is unchanged.
    Error(String),
    /// Boxed: the counters are the largest variant by far (serde encodes a Box as its value).
    DataPath(Box<DataPathStats>),
    /// One chunk of the `-L -c` stream (see `control::proto`): a request for `Connections`
    /// is answered by any number of these, then `ConnectionsEnd` (or an `Error`).
    Connections(Vec<ConnStatus>),
    /// The end of the `-L -c` stream and how many entries it carried, so that a stream cut
    /// short is told apart from a complete one.
    ConnectionsEnd {
        entries: u64,
    },
    /// `Request::Health`; `None` when xvsd runs without `--config`.
    Health(Option<Vec<HealthRow>>),
    /// `Request::Daemons`: the running sync daemons, master first.
    Daemons(Vec<crate::sync::daemon::DaemonStatus>),
    /// `Request::Reload` done: what was reloaded, one line.
    Reloaded(String),
    /// `Request::Announce`.
    Announce(AnnounceStatus),
}

/// One connection-table entry as `ipvsadm -L -c` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnStatus {
    pub proto: Protocol,
    /// Milliseconds until the entry expires if nothing refreshes it.
    pub expires_ms: u64,
    /// IPVS state name (`ESTABLISHED`, `FIN_WAIT`, `UDP`, `NONE` for templates, ...).
    pub state: String,
    pub client_addr: Ipv4Addr,
    /// 0 for persistence templates.
    pub client_port: u16,
    pub virtual_addr: Ipv4Addr,
    pub virtual_port: u16,
    pub dest_addr: Ipv4Addr,
    pub dest_port: u16,
    /// A persistence template rather than a connection.
    pub template: bool,
}

/// Counters of one worker (one RX queue).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerCounters {
    pub queue: u32,
    /// "zero-copy" or "copy".
    pub bind_mode: String,
    pub rx_frames: u64,
    pub tx_frames: u64,
    pub new_conns: u64,
    pub conns: u64,
    /// ICMP "fragmentation needed" answers sent for packets too big for the egress MTU.
    #[serde(default)]
    pub icmp_frag_needed: u64,
    /// Half-open entries evicted to make room for new connections (table pressure).
    #[serde(default)]
    pub evicted: u64,
    /// Entries of the worker's own table that have not completed a handshake.
    #[serde(default)]
    pub half_open: u64,
    /// NAT replies this worker handled for connections another worker made.
    #[serde(default)]
    pub nat_other_worker: u64,
    /// ICMP "time exceeded" answers sent for packets whose TTL ran out at the director.
    #[serde(default)]
    pub icmp_time_exceeded: u64,
    /// ICMP errors about connections relayed to the real server or the client.
    #[serde(default)]
    pub icmp_relayed: u64,
    /// ICMP errors this worker found no connection for and handed to the other workers.
    #[serde(default)]
    pub icmp_handoff: u64,
    /// ICMP errors handed over by another worker that this worker relayed.
    #[serde(default)]
    pub icmp_handoff_relayed: u64,
    /// Entries of removed or dead real servers expired at their next packet (`--on-dead`).
    #[serde(default)]
    pub dead_expired: u64,
    /// UDP datagrams of a removed or dead server moved to a live one (`--on-dead reassign`).
    #[serde(default)]
    pub dead_rescheduled: u64,
    /// Kernel counters of the worker's AF_XDP sockets (XDP_STATISTICS, summed over its
    /// ports): frames received while the RX ring was full (the worker fell behind) ...
    #[serde(default)]
    pub xsk_rx_ring_full: u64,
    /// ... frames that found the fill ring empty (no free frame to receive into) ...
    #[serde(default)]
    pub xsk_rx_fill_ring_empty: u64,
    /// ... other receive drops, and sendto() calls that found the TX ring empty.
    #[serde(default)]
    pub xsk_rx_dropped: u64,
    #[serde(default)]
    pub xsk_tx_ring_empty: u64,
    /// NAPI id of each socket (SO_INCOMING_NAPI_ID), comma-separated; 0: none (busy
    /// polling cannot work on that socket).
    #[serde(default)]
    pub napi_ids: String,
    /// TCP RSTs sent to clients of a removed or dead server (`--on-dead reassign`).
    #[serde(default)]
    pub dead_reset: u64,
    /// Parked connections (synced, restored, from another queue) this worker took over.
    #[serde(default)]
    pub imported: u64,
    /// TCP segments without a connection here asked of the other workers (moved flows).
    #[serde(default)]
    pub moved_handoff: u64,
    /// Connections whose packets moved to another queue, parked for its worker.
    #[serde(default)]
    pub moved_out: u64,
    /// Connections created by a TCP segment without SYN (`xvsd --mid-flow`).
    #[serde(default)]
    pub mid_flow: u64,
    /// (reason, count) for every drop reason, zeros included.
    pub drops: Vec<(String, u64)>,
}

/// What `Request::DataPath` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPathStats {
    /// The interfaces served, comma-separated (external first).
    pub interface: String,
    /// NAT connections (shared by all workers).
    #[serde(default)]
    pub nat_conns: u64,
    /// "native" or "generic".
    pub xdp_mode: String,
    pub xdp_redirected: u64,
    pub xdp_passed: u64,
    pub xdp_malformed: u64,
    pub xdp_no_socket: u64,
    pub xdp_fragments: u64,
    /// Service frames the program dropped while xvsd restarted (the restart hold).
    #[serde(default)]
    pub xdp_held: u64,
    pub workers: Vec<WorkerCounters>,
    /// The connection-sync counters (`SyncCounters::pairs`).
    #[serde(default)]
    pub sync: Vec<(String, u64)>,
    /// The XDP fast path's counters (`fast_*`, see src/fastpath.rs); empty from an xvsd
    /// without one.
    #[serde(default)]
    pub fast: Vec<(String, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_opts_without_on_dead_still_decode() {
        // What an xvsadm from before `--on-dead` sends.
        let old = r#"{"scheduler":"rr","persistent":null,"netmask":null,"sched_flags":[],"one_packet":false}"#;
        let o: ServiceOpts = serde_json::from_str(old).unwrap();
        assert_eq!(o.on_dead, crate::kconf::OnDead::Ipvs);
        let o = ServiceOpts {
            on_dead: crate::kconf::OnDead::Reassign,
            ..Default::default()
        };
        let back: ServiceOpts = serde_json::from_str(&serde_json::to_string(&o).unwrap()).unwrap();
        assert_eq!(back, o);
    }
}
