//! The connection-sync daemons (`--start-daemon master|backup`): sockets and threads, as
//! Linux's `ip_vs_sync.c` runs them, over the [`SyncHooks`] seam.
//!
//! - **Master** (one thread): every [`TICK`] it drains the entries the workers queued, packs
//!   them with a v1 [`SyncWriter`] of `sync_maxlen` bytes and sends each full datagram at
//!   once to the group (IP_MULTICAST_IF by ifindex, the TTL, multicast loop off, no PMTU
//!   discovery, bound to the interface's address, as `make_send_sock`). A partial datagram
//!   goes out when its oldest entry is [`FLUSH_AGE`] old: IPVS waits up to 2 s
//!   (IPVS_SYNC_FLUSH_TIME); xvs flushes sooner so that a failover loses less, and the
//!   datagrams are the same either way.
//! - **Backup** (one thread): bound to the group and port, SO_REUSEADDR, SO_BINDTODEVICE,
//!   the group joined on the interface (`make_receive_sock`), a receive buffer of
//!   `sync_maxlen` (longer datagrams are cut and then fail the size check, as in the
//!   kernel). Each datagram is decoded with the syncid filter and applied.
//! - **xvs extensions.** `peers`: the master also sends every datagram unicast to each
//!   peer's port; a backup with peers binds the wildcard address (IP_MULTICAST_ALL off, so
//!   only its own group arrives) and so also takes unicast datagrams. Bulk sync: each daemon
//!   listens on TCP, interface address and the sync port, and answers a connection that
//!   sends [`BULK_REQUEST`] with the whole table (`SyncHooks::dump`) as back-to-back v1
//!   messages, each delimited by its header's size, then closes. A backup with `bulk_peer`
//!   fetches that table once at start, after joining the group (datagrams sent meanwhile
//!   wait in the socket and are applied after the older bulk entries).
//!
//! None of this runs on the packet path: the threads may allocate, lock and log.

use super::wire::{
    self, backup_maxlen, decode_partial, master_maxlen, SyncConn, SyncWriter, WireError,
    DEFAULT_MCAST_GROUP, DEFAULT_MCAST_PORT, DEFAULT_MCAST_TTL, MESG_V0_HEADER_LEN,
};
use super::{SyncCounters, SyncHooks};
use serde::{Deserialize, Serialize};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, SockAddr, Socket, Type};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the master drains the workers' queues (at most 100 ms, as `SyncHooks::drain`
/// promises the workers).
pub const TICK: Duration = Duration::from_millis(20);
/// A partial datagram is sent when its oldest entry has waited this long (IPVS: 2 s).
pub const FLUSH_AGE: Duration = Duration::from_millis(100);
/// How long a blocked receive or accept waits before looking at the stop flag: bounds how
/// long `stop` takes.
const POLL: Duration = Duration::from_millis(100);
/// Bulk sync: connecting to the peer, and each read or write after that.
pub const BULK_TIMEOUT: Duration = Duration::from_secs(2);
/// What a bulk-sync client sends first.
pub const BULK_REQUEST: &[u8; 4] = b"XVSB";
/// Bulk messages carry up to 255 entries each (the header's count).
const BULK_MAXLEN: usize = 65507;

/// IP_VS_STATE_MASTER / IP_VS_STATE_BACKUP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    Master,
    Backup,
}

impl Role {
    /// As ipvsadm spells it.
    pub fn name(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Backup => "backup",
        }
    }
}

/// What `--start-daemon` asks for (`struct ipvs_sync_daemon_cfg` plus xvs's extensions).
/// Zeros mean "the default", as in the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncDaemonConfig {
    pub role: Role,
    pub mcast_ifn: String,
    pub syncid: u8,
    /// 0: the kernel's default (see `wire::master_maxlen`, `wire::backup_maxlen`).
    pub sync_maxlen: u16,
    /// None: 224.0.0.81.
    pub mcast_group: Option<Ipv4Addr>,
    /// 0: 8848.
    pub mcast_port: u16,
    /// 0: 1.
    pub mcast_ttl: u8,
    /// xvs: unicast peers (master: also send to each; backup: also accept unicast).
    #[serde(default)]
    pub peers: Vec<Ipv4Addr>,
    /// xvs: a director to fetch the whole table from at start (backup only).
    #[serde(default)]
    pub bulk_peer: Option<Ipv4Addr>,
}

impl SyncDaemonConfig {
    /// A daemon with every default, as `--start-daemon ROLE --mcast-interface IFN` asks.
    pub fn new(role: Role, mcast_ifn: &str) -> Self {
        SyncDaemonConfig {
            role,
            mcast_ifn: mcast_ifn.to_string(),
            syncid: 0,
            sync_maxlen: 0,
            mcast_group: None,
            mcast_port: 0,
            mcast_ttl: 0,
            peers: Vec::new(),
            bulk_peer: None,
        }
    }
}

/// Where a backup's start-up bulk sync is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BulkState {
    /// No `bulk_peer`.
    None,
    Running,
    /// Finished: this many entries received.
    Done(u64),
    /// Failed (unreachable peer, cut stream): why. The daemon carries on without it.
    Failed(String),
}

/// One running daemon, with the values the kernel settled on (as `ipvsadm -L --daemon`
/// shows them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub role: Role,
    pub mcast_ifn: String,
    pub syncid: u8,
    pub sync_maxlen: u16,
    pub mcast_group: Ipv4Addr,
    pub mcast_port: u16,
    pub mcast_ttl: u8,
    pub peers: Vec<Ipv4Addr>,
    pub bulk_peer: Option<Ipv4Addr>,
    pub bulk: BulkState,
}

/// `SyncHooks` that hold no table: nothing to send, every received entry refused, nothing to
/// dump. For a daemon built before the real hooks exist, and for tests.
#[derive(Default)]
pub struct NullHooks {
    counters: SyncCounters,
}

impl SyncHooks for NullHooks {
    fn drain(&self, _out: &mut Vec<SyncConn>) {}
    fn apply(&self, conns: &[SyncConn]) {
        SyncCounters::add(&self.counters.refused, conns.len() as u64);
    }
    fn dump(&self, _each: &mut dyn FnMut(&[SyncConn])) {}
    fn counters(&self) -> &SyncCounters {
        &self.counters
    }
}

struct Running {
    status: Arc<Mutex<DaemonStatus>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Running {
    fn halt(self) {
        self.stop.store(true, Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// The director's sync daemons: at most one master and one backup, as IPVS.
pub struct SyncManager {
    hooks: Arc<dyn SyncHooks>,
    /// [master, backup].
    running: Mutex<[Option<Running>; 2]>,
}

fn slot(role: Role) -> usize {
    match role {
        Role::Master => 0,
        Role::Backup => 1,
    }
}

/// The interface facts a daemon needs.
struct Dev {
    index: u32,
    mtu: usize,
    addr: Option<Ipv4Addr>,
}

fn lookup_dev(name: &str) -> Option<Dev> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return None;
    }
    let mtu = iface_mtu(name).unwrap_or(1500);
    Some(Dev {
        index,
        mtu,
        addr: iface_ipv4(name),
    })
}

/// SIOCGIFMTU: asked of the kernel rather than read from /sys, which shows the network
/// namespace it was mounted in, not necessarily the caller's.
fn iface_mtu(name: &str) -> Option<usize> {
    use std::os::fd::AsRawFd;
    if name.len() >= libc::IFNAMSIZ {
        return None;
    }
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, b) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = b as libc::c_char;
    }
    // SAFETY: SIOCGIFMTU reads ifr_name and writes ifru_mtu of the ifreq passed.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFMTU, &mut ifr) } != 0 {
        return None;
    }
    // SAFETY: the ioctl succeeded, so the union holds the MTU.
    usize::try_from(unsafe { ifr.ifr_ifru.ifru_mtu }).ok()
}

/// The interface's first IPv4 address (the kernel's `inet_select_addr(dev, 0, RT_SCOPE_UNIVERSE)`
/// picks the primary one; the first listed is that one).
fn iface_ipv4(name: &str) -> Option<Ipv4Addr> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return None;
    }
    let mut found = None;
    let mut p = head;
    while !p.is_null() {
        // SAFETY: `p` is a node of the list getifaddrs returned, valid until freeifaddrs.
        let ifa = unsafe { &*p };
        p = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string; ifa_addr a sockaddr whose family
        // says how to read it.
        let (ifname, family) = unsafe {
            (
                std::ffi::CStr::from_ptr(ifa.ifa_name),
                (*ifa.ifa_addr).sa_family as i32,
            )
        };
        if family != libc::AF_INET || ifname.to_bytes() != name.as_bytes() {
            continue;
        }
        // SAFETY: AF_INET addresses are sockaddr_in.
        let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
        found = Some(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)));
        break;
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    found
}

/// `strerror(errno)`, which libipvs's `ipvs_strerror` falls back to.
fn errno_text(e: &std::io::Error) -> String {
    let s = e.to_string();
    // "No such device (os error 19)" → "No such device".
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

fn os_text(code: i32) -> String {
    errno_text(&std::io::Error::from_raw_os_error(code))
}

/// xvsd's `--sync-daemon` list, checked before xvsd touches the network: each interface
/// exists, each role at most once. `start` can still fail later (an interface without an
/// address for the master), but not for these.
pub fn precheck(daemons: &[SyncDaemonConfig]) -> Result<(), String> {
    for (i, d) in daemons.iter().enumerate() {
        if daemons[..i].iter().any(|o| o.role == d.role) {
            return Err(format!(
                "--sync-daemon {}: given twice (one master and one backup at most)",
                d.role.name()
            ));
        }
        if lookup_dev(&d.mcast_ifn).is_none() {
            return Err(format!(
                "--sync-daemon {} --mcast-interface {}: {}",
                d.role.name(),
                d.mcast_ifn,
                os_text(libc::ENODEV)
            ));
        }
    }
    Ok(())
}

impl SyncManager {
    pub fn new(hooks: Arc<dyn SyncHooks>) -> Self {
        SyncManager {
            hooks,
            running: Mutex::new([None, None]),
        }
    }

    pub fn counters(&self) -> &SyncCounters {
        self.hooks.counters()
    }

    /// Starts a daemon. Errors are the texts ipvsadm prints for the kernel's answers
    /// ("Daemon has already run", "No such device", ...), checked in the kernel's order.
    pub fn start(&self, cfg: SyncDaemonConfig) -> Result<(), String> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let group = cfg.mcast_group.unwrap_or(DEFAULT_MCAST_GROUP);
        if !group.is_multicast() {
            return Err(os_text(libc::EINVAL));
        }
        let port = if cfg.mcast_port == 0 {
            DEFAULT_MCAST_PORT
        } else {
            cfg.mcast_port
        };
        let ttl = if cfg.mcast_ttl == 0 {
            DEFAULT_MCAST_TTL
        } else {
            cfg.mcast_ttl
        };
        // start_sync_thread: the interface first (ENODEV), then "already running" (EEXIST).
        let Some(dev) = lookup_dev(&cfg.mcast_ifn) else {
            tracing::error!(interface = %cfg.mcast_ifn, "sync daemon: unknown mcast interface");
            return Err(os_text(libc::ENODEV));
        };
        let maxlen = match cfg.role {
            Role::Master => master_maxlen(cfg.sync_maxlen as usize, false),
            Role::Backup => backup_maxlen(cfg.sync_maxlen as usize, dev.mtu, false),
        };
        let i = slot(cfg.role);
        if running[i].is_some() {
            return Err("Daemon has already run".into());
        }
        if cfg.role == Role::Master && cfg.bulk_peer.is_some() {
            return Err(format!(
                "--bulk-peer is for a backup daemon; the {} daemon serves bulk sync to others",
                cfg.role.name()
            ));
        }
        let status = Arc::new(Mutex::new(DaemonStatus {
            role: cfg.role,
            mcast_ifn: cfg.mcast_ifn.clone(),
            syncid: cfg.syncid,
            sync_maxlen: maxlen as u16,
            mcast_group: group,
            mcast_port: port,
            mcast_ttl: ttl,
            peers: cfg.peers.clone(),
            bulk_peer: cfg.bulk_peer,
            bulk: if cfg.bulk_peer.is_some() {
                BulkState::Running
            } else {
                BulkState::None
            },
        }));
        let st = status.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let udp = match cfg.role {
            Role::Master => make_send_sock(&st, &dev),
            Role::Backup => make_receive_sock(&st, &dev),
        }
        .map_err(|e| {
            tracing::error!(interface = %st.mcast_ifn, role = st.role.name(), "sync daemon socket: {e}");
            errno_text(&e)
        })?;
        // Bulk sync is an extension: without an address to listen on, the daemon runs
        // without it (said in the log), as IPVS would.
        let bulk = match dev.addr {
            Some(a) => match bulk_listener(SocketAddrV4::new(a, port)) {
                Ok(l) => Some(l),
                Err(e) => {
                    tracing::warn!(addr = %a, port, "sync daemon: no bulk-sync listener: {e}");
                    None
                }
            },
            None => None,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name)
                .spawn(f)
                .map_err(|e| format!("spawning a sync thread: {e}"))
        };
        let main: Box<dyn FnOnce() + Send> = {
            let (hooks, stop, status) = (self.hooks.clone(), stop.clone(), status.clone());
            match cfg.role {
                Role::Master => Box::new(move || master_loop(udp, &st, &*hooks, &stop)),
                Role::Backup => Box::new(move || backup_loop(udp, &st, &*hooks, &stop, &status)),
            }
        };
        let role = cfg.role.name();
        match spawn(format!("xvs-sync-{}", &role[..1]), main) {
            Ok(t) => threads.push(t),
            Err(e) => return Err(e),
        }
        if let Some(l) = bulk {
            let (hooks, stop2, syncid) = (self.hooks.clone(), stop.clone(), cfg.syncid);
            match spawn(
                format!("xvs-bulk-{}", &role[..1]),
                Box::new(move || bulk_server(l, syncid, &*hooks, &stop2)),
            ) {
                Ok(t) => threads.push(t),
                Err(e) => {
                    Running {
                        status,
                        stop,
                        threads,
                    }
                    .halt();
                    return Err(e);
                }
            }
        }
        tracing::info!(role, interface = %cfg.mcast_ifn, syncid = cfg.syncid, group = %group, port, maxlen, "sync daemon started");
        running[i] = Some(Running {
            status,
            stop,
            threads,
        });
        Ok(())
    }

    /// Stops a daemon and waits for its threads (each notices within [`POLL`]; a bulk
    /// transfer in progress within [`BULK_TIMEOUT`]). "No daemon is running" when none.
    pub fn stop(&self, role: Role) -> Result<(), String> {
        let r = self.running.lock().unwrap_or_else(|e| e.into_inner())[slot(role)].take();
        match r {
            Some(r) => {
                r.halt();
                tracing::info!(role = role.name(), "sync daemon stopped");
                Ok(())
            }
            None => Err("No daemon is running".into()),
        }
    }

    /// The running daemons, master first.
    pub fn status(&self) -> Vec<DaemonStatus> {
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .flatten()
            .map(|r| r.status.lock().unwrap_or_else(|e| e.into_inner()).clone())
            .collect()
    }

    /// Stops every daemon (xvsd's shutdown).
    pub fn stop_all(&self) {
        for role in [Role::Master, Role::Backup] {
            let _ = self.stop(role);
        }
    }
}

impl Drop for SyncManager {
    fn drop(&mut self) {
        self.stop_all();
    }
}

fn set_int(s: &Socket, level: i32, opt: i32, v: i32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: `v` is an int that outlives the call; the option takes an int.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            opt,
            &v as *const i32 as *const libc::c_void,
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `set_mcast_if`: IP_MULTICAST_IF by interface index (`struct ip_mreqn`), so the group is
/// reached through that interface whatever its addresses.
fn set_mcast_if(s: &Socket, ifindex: u32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let m = libc::ip_mreqn {
        imr_multiaddr: libc::in_addr { s_addr: 0 },
        imr_address: libc::in_addr { s_addr: 0 },
        imr_ifindex: ifindex as i32,
    };
    // SAFETY: `m` is a valid ip_mreqn that outlives the call.
    let r = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MULTICAST_IF,
            &m as *const libc::ip_mreqn as *const libc::c_void,
            std::mem::size_of::<libc::ip_mreqn>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `make_send_sock`: multicast out of the interface, loop off, the TTL, fragmentation
/// allowed (IP_PMTUDISC_DONT), bound to the interface's address (`bind_mcastif_addr`:
/// EADDRNOTAVAIL when it has none). Not connected: unicast peers share the socket.
fn make_send_sock(st: &DaemonStatus, dev: &Dev) -> std::io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    set_mcast_if(&s, dev.index)?;
    s.set_multicast_loop_v4(false)?;
    s.set_multicast_ttl_v4(u32::from(st.mcast_ttl))?;
    set_int(
        &s,
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_DONT,
    )?;
    let Some(addr) = dev.addr else {
        return Err(std::io::Error::from_raw_os_error(libc::EADDRNOTAVAIL));
    };
    s.bind(&SockAddr::from(SocketAddrV4::new(addr, 0)))?;
    Ok(s.into())
}

/// `make_receive_sock`: SO_REUSEADDR, SO_BINDTODEVICE, bound to the group and port, the
/// group joined on the interface. With unicast peers (xvs) the wildcard address instead,
/// with IP_MULTICAST_ALL off so that other groups on the port stay out.
fn make_receive_sock(st: &DaemonStatus, dev: &Dev) -> std::io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.bind_device(Some(st.mcast_ifn.as_bytes()))?;
    let bind_ip = if st.peers.is_empty() {
        st.mcast_group
    } else {
        s.set_multicast_all_v4(false)?;
        Ipv4Addr::UNSPECIFIED
    };
    s.bind(&SockAddr::from(SocketAddrV4::new(bind_ip, st.mcast_port)))?;
    s.join_multicast_v4_n(&st.mcast_group, &InterfaceIndexOrAddress::Index(dev.index))?;
    let u: UdpSocket = s.into();
    u.set_read_timeout(Some(POLL))?;
    Ok(u)
}

fn bulk_listener(at: SocketAddrV4) -> std::io::Result<TcpListener> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    // A master and a backup on the same interface and port both listen; either answers
    // with the same table.
    s.set_reuse_port(true)?;
    s.bind(&SockAddr::from(at))?;
    s.listen(8)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// Logs a recurring failure at most every 10 s.
struct Throttle(Option<Instant>);

impl Throttle {
    fn due(&mut self) -> bool {
        if self
            .0
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(10))
        {
            self.0 = Some(Instant::now());
            true
        } else {
            false
        }
    }
}

/// The master's packing and flush rule, apart from the socket (unit-tested).
pub struct Packer {
    writer: SyncWriter,
    /// When the oldest entry of the unfinished datagram was packed.
    oldest: Option<Instant>,
}

impl Packer {
    pub fn new(syncid: u8, maxlen: usize) -> Self {
        Packer {
            writer: SyncWriter::new(syncid, maxlen),
            oldest: None,
        }
    }

    /// Packs `conns`; every datagram that filled up goes to `send`. Entries the format
    /// cannot carry (one-packet, oversized PE data) are counted in `refused` and dropped.
    pub fn push(
        &mut self,
        conns: &[SyncConn],
        now: Instant,
        counters: &SyncCounters,
        send: &mut dyn FnMut(&[u8]),
    ) {
        for c in conns {
            match self.writer.push(c) {
                Ok(done) => {
                    if let Some(d) = done {
                        send(&d);
                        // The entry just pushed opened the next datagram.
                        self.oldest = Some(now);
                    }
                    self.oldest.get_or_insert(now);
                }
                Err(_) => SyncCounters::add(&counters.send_errors, 1),
            }
        }
    }

    /// Sends the partial datagram if its oldest entry is [`FLUSH_AGE`] old (or `force`).
    pub fn flush_due(&mut self, now: Instant, force: bool, send: &mut dyn FnMut(&[u8])) {
        let Some(t) = self.oldest else { return };
        if force || now.duration_since(t) >= FLUSH_AGE {
            if let Some(d) = self.writer.flush() {
                send(&d);
            }
            self.oldest = None;
        }
    }

    /// Entries waiting in the unfinished datagram.
    pub fn pending(&self) -> usize {
        self.writer.pending()
    }
}

fn master_loop(sock: UdpSocket, st: &DaemonStatus, hooks: &dyn SyncHooks, stop: &AtomicBool) {
    let c = hooks.counters();
    let mut dests = vec![SocketAddrV4::new(st.mcast_group, st.mcast_port)];
    dests.extend(
        st.peers
            .iter()
            .map(|p| SocketAddrV4::new(*p, st.mcast_port)),
    );
    let mut packer = Packer::new(st.syncid, st.sync_maxlen as usize);
    let mut queued = Vec::new();
    let mut throttle = Throttle(None);
    let mut send = |d: &[u8]| {
        // nr_conns: byte 4 of a v1 header.
        SyncCounters::add(&c.sent_conns, u64::from(d[4]));
        for to in &dests {
            match sock.send_to(d, to) {
                Ok(_) => SyncCounters::add(&c.sent_msgs, 1),
                Err(e) => {
                    SyncCounters::add(&c.send_errors, 1);
                    if throttle.due() {
                        tracing::warn!(to = %to, "sync master: sending: {e}");
                    }
                }
            }
        }
    };
    loop {
        let stopping = stop.load(Relaxed);
        hooks.drain(&mut queued);
        let now = Instant::now();
        packer.push(&queued, now, c, &mut send);
        queued.clear();
        // On stop, what was packed still goes out (the kernel frees it; sending is kinder).
        packer.flush_due(now, stopping, &mut send);
        if stopping {
            return;
        }
        std::thread::sleep(TICK);
    }
}

/// What the backup does with one datagram (or bulk message): counts it, filters, applies.
/// Returns the entries applied (handed to `apply`).
pub fn receive(d: &[u8], syncid: u8, hooks: &dyn SyncHooks, bulk: bool) -> usize {
    let c = hooks.counters();
    if !bulk {
        SyncCounters::add(&c.recv_msgs, 1);
    }
    let p = decode_partial(d, syncid);
    match p.error {
        None => {}
        Some(WireError::ForeignSyncid) => SyncCounters::add(&c.recv_foreign, 1),
        Some(_) => SyncCounters::add(&c.recv_malformed, 1),
    }
    let dec = p.decoded;
    SyncCounters::add(&c.recv_skipped, dec.skipped.len() as u64);
    let v6 = dec.conns.iter().filter(|e| e.v6).count();
    // xvs has no IPv6: such entries are decoded, counted and skipped.
    SyncCounters::add(&c.recv_skipped, v6 as u64);
    if !bulk {
        SyncCounters::add(&c.recv_conns, dec.conns.len() as u64);
    }
    let conns: Vec<SyncConn> = if v6 == 0 {
        dec.conns
    } else {
        dec.conns.into_iter().filter(|e| !e.v6).collect()
    };
    if !conns.is_empty() {
        if bulk {
            SyncCounters::add(&c.bulk_conns, conns.len() as u64);
        }
        hooks.apply(&conns);
    }
    conns.len()
}

fn backup_loop(
    sock: UdpSocket,
    st: &DaemonStatus,
    hooks: &dyn SyncHooks,
    stop: &AtomicBool,
    status: &Mutex<DaemonStatus>,
) {
    if let Some(peer) = st.bulk_peer {
        let to = SocketAddrV4::new(peer, st.mcast_port);
        let r = bulk_fetch(to, st.syncid, hooks, stop);
        let state = match r {
            Ok(n) => {
                tracing::info!(peer = %to, entries = n, "bulk sync done");
                BulkState::Done(n)
            }
            Err(e) => {
                tracing::warn!(peer = %to, "bulk sync failed, carrying on without it: {e}");
                BulkState::Failed(e)
            }
        };
        status.lock().unwrap_or_else(|e| e.into_inner()).bulk = state;
    }
    let mut buf = vec![0u8; st.sync_maxlen as usize];
    let mut throttle = Throttle(None);
    while !stop.load(Relaxed) {
        match sock.recv_from(&mut buf) {
            Ok((n, _from)) => {
                receive(&buf[..n], st.syncid, hooks, false);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                if throttle.due() {
                    tracing::warn!("sync backup: receiving: {e}");
                }
                std::thread::sleep(POLL);
            }
        }
    }
}

/// Bulk-sync client: asks `to` for its table and applies it. Returns the entries applied.
pub fn bulk_fetch(
    to: SocketAddrV4,
    syncid: u8,
    hooks: &dyn SyncHooks,
    stop: &AtomicBool,
) -> Result<u64, String> {
    let mut s = TcpStream::connect_timeout(&SocketAddr::V4(to), BULK_TIMEOUT)
        .map_err(|e| format!("connecting to {to}: {}", errno_text(&e)))?;
    s.set_read_timeout(Some(BULK_TIMEOUT))
        .and_then(|_| s.set_write_timeout(Some(BULK_TIMEOUT)))
        .and_then(|_| s.write_all(BULK_REQUEST))
        .map_err(|e| format!("asking {to}: {}", errno_text(&e)))?;
    let mut total = 0u64;
    let mut msg = Vec::with_capacity(BULK_MAXLEN);
    loop {
        if stop.load(Relaxed) {
            return Err("stopped".into());
        }
        let mut head = [0u8; MESG_V0_HEADER_LEN];
        // EOF at a message boundary is the end of the table.
        match read_full(&mut s, &mut head) {
            Ok(0) => return Ok(total),
            Ok(n) if n == head.len() => {}
            Ok(_) => return Err(format!("{to}: stream cut inside a message header")),
            Err(e) => return Err(format!("reading from {to}: {}", errno_text(&e))),
        }
        let size = u16::from_be_bytes([head[2], head[3]]) as usize;
        if size < MESG_V0_HEADER_LEN {
            return Err(format!("{to}: bad message size {size}"));
        }
        msg.clear();
        msg.extend_from_slice(&head);
        msg.resize(size, 0);
        match read_full(&mut s, &mut msg[MESG_V0_HEADER_LEN..]) {
            Ok(n) if n == size - MESG_V0_HEADER_LEN => {}
            Ok(_) => return Err(format!("{to}: stream cut inside a message")),
            Err(e) => return Err(format!("reading from {to}: {}", errno_text(&e))),
        }
        let p = wire::decode_partial(&msg, syncid);
        if let Some(e) = p.error {
            SyncCounters::add(&hooks.counters().recv_malformed, 1);
            return Err(format!("{to}: bad message: {}", e.as_str()));
        }
        total += receive(&msg, syncid, hooks, true) as u64;
    }
}

/// Reads until `buf` is full or EOF; the bytes read.
fn read_full(s: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match s.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn bulk_server(l: TcpListener, syncid: u8, hooks: &dyn SyncHooks, stop: &AtomicBool) {
    while !stop.load(Relaxed) {
        match l.accept() {
            Ok((s, from)) => match serve_bulk(s, syncid, hooks) {
                Ok(n) => tracing::info!(peer = %from, entries = n, "bulk sync served"),
                Err(e) => tracing::warn!(peer = %from, "bulk sync: {e}"),
            },
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(e) => {
                tracing::warn!("bulk sync listener: {e}");
                std::thread::sleep(POLL);
            }
        }
    }
}

/// Answers one bulk-sync connection: the request, then the table.
fn serve_bulk(mut s: TcpStream, syncid: u8, hooks: &dyn SyncHooks) -> Result<u64, String> {
    s.set_nonblocking(false)
        .and_then(|_| s.set_read_timeout(Some(BULK_TIMEOUT)))
        .and_then(|_| s.set_write_timeout(Some(BULK_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    let mut req = [0u8; 4];
    match read_full(&mut s, &mut req) {
        Ok(4) if &req == BULK_REQUEST => {}
        Ok(_) => return Err("not a bulk-sync request".into()),
        Err(e) => return Err(format!("reading the request: {e}")),
    }
    let mut w = SyncWriter::new(syncid, BULK_MAXLEN);
    let mut err: Option<String> = None;
    let mut n = 0u64;
    hooks.dump(&mut |chunk| {
        if err.is_some() {
            return;
        }
        for c in chunk {
            match w.push(c) {
                Ok(Some(d)) => {
                    if let Err(e) = s.write_all(&d) {
                        err = Some(format!("writing: {e}"));
                        return;
                    }
                }
                Ok(None) => {}
                // An entry the format cannot carry is left out, as the master leaves it out.
                Err(_) => continue,
            }
            n += 1;
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    if let Some(d) = w.flush() {
        s.write_all(&d).map_err(|e| format!("writing: {e}"))?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::wire::{decode, IPPROTO_TCP, IP_VS_CONN_F_ONE_PACKET};

    fn conn(i: u32) -> SyncConn {
        SyncConn {
            protocol: IPPROTO_TCP,
            state: 1,
            cport: 1000 + i as u16,
            vport: 80,
            dport: 80,
            timeout_s: 900,
            caddr: Ipv4Addr::from(0x0a00_0001 + i),
            vaddr: Ipv4Addr::new(10, 0, 0, 88),
            daddr: Ipv4Addr::new(10, 0, 0, 9),
            ..SyncConn::default()
        }
    }

    #[test]
    fn full_datagrams_go_at_once_and_a_partial_one_after_flush_age() {
        let c = SyncCounters::default();
        let mut out: Vec<Vec<u8>> = Vec::new();
        let t0 = Instant::now();
        // 1472 bytes: 8-byte header + 40 entries of 36 bytes = 1448; the 41st does not fit.
        let mut p = Packer::new(7, 1472);
        let conns: Vec<_> = (0..45).map(conn).collect();
        p.push(&conns, t0, &c, &mut |d| out.push(d.to_vec()));
        assert_eq!(out.len(), 1);
        let d = decode(&out[0], 7).unwrap();
        assert_eq!(d.conns.len(), 40);
        assert_eq!(d.conns[0], conns[0]);
        assert_eq!(p.pending(), 5);
        // Not yet old enough.
        p.flush_due(t0 + FLUSH_AGE / 2, false, &mut |d| out.push(d.to_vec()));
        assert_eq!(out.len(), 1);
        // The partial datagram's clock started with its first entry (the 41st, at t0).
        p.flush_due(t0 + FLUSH_AGE, false, &mut |d| out.push(d.to_vec()));
        assert_eq!(out.len(), 2);
        let d = decode(&out[1], 7).unwrap();
        assert_eq!(d.conns, conns[40..]);
        assert_eq!(p.pending(), 0);
        // Nothing pending: nothing sent, forced or not.
        p.flush_due(t0 + FLUSH_AGE * 10, true, &mut |d| out.push(d.to_vec()));
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn flush_age_counts_from_the_oldest_entry_not_the_newest() {
        let c = SyncCounters::default();
        let mut out = 0;
        let t0 = Instant::now();
        let mut p = Packer::new(0, 1472);
        p.push(&[conn(1)], t0, &c, &mut |_| out += 1);
        // A later entry does not push the deadline back.
        p.push(&[conn(2)], t0 + FLUSH_AGE / 2, &c, &mut |_| out += 1);
        p.flush_due(t0 + FLUSH_AGE, false, &mut |_| out += 1);
        assert_eq!(out, 1);
    }

    #[test]
    fn entries_the_format_refuses_are_counted_not_sent() {
        let c = SyncCounters::default();
        let mut p = Packer::new(0, 1472);
        let mut bad = conn(1);
        bad.flags |= IP_VS_CONN_F_ONE_PACKET;
        p.push(&[bad, conn(2)], Instant::now(), &c, &mut |_| {});
        assert_eq!(c.send_errors.load(Relaxed), 1);
        assert_eq!(p.pending(), 1);
    }

    /// Hooks that record what is applied.
    #[derive(Default)]
    struct Rec {
        applied: Mutex<Vec<SyncConn>>,
        counters: SyncCounters,
    }
    impl SyncHooks for Rec {
        fn drain(&self, _out: &mut Vec<SyncConn>) {}
        fn apply(&self, conns: &[SyncConn]) {
            self.applied.lock().unwrap().extend_from_slice(conns);
        }
        fn dump(&self, _each: &mut dyn FnMut(&[SyncConn])) {}
        fn counters(&self) -> &SyncCounters {
            &self.counters
        }
    }

    #[test]
    fn receive_filters_counts_and_skips_ipv6() {
        let h = Rec::default();
        let mut v6 = conn(9);
        v6.v6 = true;
        v6.v6_addrs = Some(wire::V6Addrs {
            caddr: "2001:db8::1".parse().unwrap(),
            vaddr: "2001:db8::88".parse().unwrap(),
            daddr: "2001:db8::9".parse().unwrap(),
        });
        let d = wire::encode(5, 1472, &[conn(1), v6, conn(2)]).unwrap();
        assert_eq!(receive(&d[0], 5, &h, false), 2);
        assert_eq!(*h.applied.lock().unwrap(), vec![conn(1), conn(2)]);
        assert_eq!(h.counters.recv_skipped.load(Relaxed), 1);
        assert_eq!(h.counters.recv_conns.load(Relaxed), 3);
        // Another group: counted, not applied; syncid 0 takes every group.
        assert_eq!(receive(&d[0], 6, &h, false), 0);
        assert_eq!(h.counters.recv_foreign.load(Relaxed), 1);
        assert_eq!(receive(&d[0], 0, &h, false), 2);
        // Cut short: malformed (the header's size no longer matches).
        assert_eq!(receive(&d[0][..20], 5, &h, false), 0);
        assert_eq!(h.counters.recv_malformed.load(Relaxed), 1);
        assert_eq!(h.counters.recv_msgs.load(Relaxed), 4);
        assert_eq!(h.applied.lock().unwrap().len(), 4);
    }

    #[test]
    fn null_hooks_refuse_everything() {
        let h = NullHooks::default();
        let d = wire::encode(0, 1472, &[conn(1), conn(2)]).unwrap();
        receive(&d[0], 0, &h, false);
        assert_eq!(h.counters().refused.load(Relaxed), 2);
    }

    #[test]
    fn interface_facts_from_the_kernel() {
        assert_eq!(iface_mtu("lo"), Some(65536));
        assert_eq!(iface_ipv4("lo"), Some(Ipv4Addr::LOCALHOST));
        assert!(lookup_dev("xvs-no-such-if0").is_none());
    }

    #[test]
    fn precheck_of_xvsds_daemon_list() {
        let lo = |r| SyncDaemonConfig::new(r, "lo");
        assert!(precheck(&[lo(Role::Master), lo(Role::Backup)]).is_ok());
        assert!(precheck(&[lo(Role::Master), lo(Role::Master)])
            .unwrap_err()
            .contains("given twice"));
        assert_eq!(
            precheck(&[SyncDaemonConfig::new(Role::Backup, "xvs-no-such-if0")]).unwrap_err(),
            "--sync-daemon backup --mcast-interface xvs-no-such-if0: No such device"
        );
    }

    #[test]
    fn start_checks_in_the_kernels_order() {
        let m = SyncManager::new(Arc::new(NullHooks::default()));
        let mut cfg = SyncDaemonConfig::new(Role::Master, "xvs-no-such-if0");
        assert_eq!(m.start(cfg.clone()).unwrap_err(), "No such device");
        cfg.mcast_group = Some(Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(m.start(cfg).unwrap_err(), "Invalid argument");
        assert_eq!(m.stop(Role::Backup).unwrap_err(), "No daemon is running");
        assert!(m.status().is_empty());
    }
}
