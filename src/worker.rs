//! One AF_XDP worker per RX queue: the batched RX -> forward -> TX loop.
//!
//! A worker serves queue `q` of every interface xvsd runs on (one "port" each: external and
//! internal for a two-armed director). All its sockets share one UMEM, so a frame received
//! on one interface is transmitted on another by handing its descriptor over, without a
//! copy. Each worker owns its UMEM, rings, free-frame list and DR/TUN connection table; it
//! shares the configuration snapshot (read lock-free through `ArcSwap`), the NAT table
//! (sharded locks) and the real servers' load counters.

use crate::conn::{Conn, ConnState, ConnTable, NatConns, PressurePolicy};
use crate::forward::{Forwarder, FwdCounters, PortInfo, Verdict, MAX_PORTS};
use crate::handoff::{HandoffFrame, Handoffs, HANDOFF_PER_ITER};
use crate::model::{ConnStatus, Protocol};
use crate::packet::{DropReason, FlowKey};
use crate::service::Snapshot;
use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use crossbeam::utils::CachePadded;
use std::net::Ipv4Addr;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use xsk_rs::config::{BindFlags, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

/// Frames per port (2 KiB each): half for the fill ring, the rest in flight on TX.
const FRAMES_PER_PORT: u32 = 4096;
const RING_SIZE: u32 = 2048;
/// Frames handled per port per loop iteration.
const BATCH: usize = 64;
/// Frames one sendto() sends in copy mode by default (TX_BATCH_SIZE in the kernel's xsk.c).
/// Linux 6.17+ lets a socket raise it (XDP_MAX_TX_SKB_BUDGET): see [`COPY_TX_BUDGET`].
const COPY_TX_PER_KICK: usize = 32;
/// The copy-mode TX budget per sendto() asked for (one RX batch): half the kicks.
const COPY_TX_BUDGET: usize = BATCH;
/// Connection-table slots examined for expiry per iteration (bounded work, see conn/table.rs).
const EXPIRE_BUDGET: usize = 64;
/// Empty polls before the worker sleeps in poll(2) instead of spinning. Short on purpose:
/// where the interface's NAPI runs on the worker's core (the usual case: one worker per
/// queue, the queue's interrupt on the same CPU), a spinning worker holds the CPU that the
/// kernel needs to deliver the next frames, and the scheduler then switches between the two
/// only at the end of a time slice: the kernel fills the rings and drops for milliseconds,
/// the worker drains them and spins for the rest of its slice (receive livelock, measured in
/// docs/benchmarks.md). Asleep in poll(2), the worker is woken by the kernel's first
/// delivery and takes the CPU back at once (`worker_nice`).
const SPIN_BEFORE_SLEEP: u32 = 16;
/// The same in --busy-poll mode: each empty poll there is a recvfrom() that runs the
/// interface's NAPI itself (preferred busy polling), so spinning feeds the worker; it
/// sleeps only when the link has been quiet for this many polls (a few hundred µs).
const BUSY_SPIN_BEFORE_SLEEP: u32 = 2048;
/// poll(2) timeout when idle, in ms: bounds how late a stop request is noticed.
const IDLE_POLL_MS: i32 = 50;

/// State shared by the control thread and all workers.
pub struct Shared {
    pub snapshot: ArcSwap<Snapshot>,
    pub stop: AtomicBool,
}

/// A worker's counters as published for the control thread (written only by the worker).
#[derive(Default)]
pub struct WorkerStats {
    pub rx_frames: AtomicU64,
    pub tx_frames: AtomicU64,
    pub new_conns: AtomicU64,
    pub icmp_frag_needed: AtomicU64,
    pub evicted: AtomicU64,
    pub nat_other_worker: AtomicU64,
    pub icmp_time_exceeded: AtomicU64,
    pub icmp_relayed: AtomicU64,
    pub icmp_handoff: AtomicU64,
    pub icmp_handoff_relayed: AtomicU64,
    pub dead_expired: AtomicU64,
    pub dead_rescheduled: AtomicU64,
    pub dead_reset: AtomicU64,
    pub imported: AtomicU64,
    pub moved_handoff: AtomicU64,
    pub moved_out: AtomicU64,
    pub mid_flow: AtomicU64,
    pub conns: AtomicU64,
    /// Entries of the worker's own table that have not completed a handshake.
    pub half_open: AtomicU64,
    pub drops: [AtomicU64; DropReason::COUNT],
    /// --busy-poll: a socket of this worker received frames without a NAPI id, so busy
    /// polling cannot work on it and the worker runs the default loop (set once).
    pub no_napi_id: AtomicBool,
}

impl WorkerStats {
    fn publish(&self, c: &FwdCounters, conns: usize, half_open: usize) {
        self.rx_frames.store(c.rx_frames, Relaxed);
        self.tx_frames.store(c.tx_frames, Relaxed);
        self.new_conns.store(c.new_conns, Relaxed);
        self.icmp_frag_needed.store(c.icmp_frag_needed, Relaxed);
        self.evicted.store(c.evicted, Relaxed);
        self.nat_other_worker.store(c.nat_other_worker, Relaxed);
        self.icmp_time_exceeded.store(c.icmp_time_exceeded, Relaxed);
        self.icmp_relayed.store(c.icmp_relayed, Relaxed);
        self.icmp_handoff.store(c.icmp_handoff, Relaxed);
        self.icmp_handoff_relayed
            .store(c.icmp_handoff_relayed, Relaxed);
        self.dead_expired.store(c.dead_expired, Relaxed);
        self.dead_rescheduled.store(c.dead_rescheduled, Relaxed);
        self.dead_reset.store(c.dead_reset, Relaxed);
        self.imported.store(c.imported, Relaxed);
        self.moved_handoff.store(c.moved_handoff, Relaxed);
        self.moved_out.store(c.moved_out, Relaxed);
        self.mid_flow.store(c.mid_flow, Relaxed);
        self.conns.store(conns as u64, Relaxed);
        self.half_open.store(half_open as u64, Relaxed);
        for (a, v) in self.drops.iter().zip(c.drops.iter()) {
            a.store(*v, Relaxed);
        }
    }

    pub fn read(&self) -> FwdCounters {
        let mut c = FwdCounters {
            rx_frames: self.rx_frames.load(Relaxed),
            tx_frames: self.tx_frames.load(Relaxed),
            new_conns: self.new_conns.load(Relaxed),
            icmp_frag_needed: self.icmp_frag_needed.load(Relaxed),
            evicted: self.evicted.load(Relaxed),
            nat_other_worker: self.nat_other_worker.load(Relaxed),
            icmp_time_exceeded: self.icmp_time_exceeded.load(Relaxed),
            icmp_relayed: self.icmp_relayed.load(Relaxed),
            icmp_handoff: self.icmp_handoff.load(Relaxed),
            icmp_handoff_relayed: self.icmp_handoff_relayed.load(Relaxed),
            dead_expired: self.dead_expired.load(Relaxed),
            dead_rescheduled: self.dead_rescheduled.load(Relaxed),
            dead_reset: self.dead_reset.load(Relaxed),
            imported: self.imported.load(Relaxed),
            moved_handoff: self.moved_handoff.load(Relaxed),
            moved_out: self.moved_out.load(Relaxed),
            mid_flow: self.mid_flow.load(Relaxed),
            drops: [0; DropReason::COUNT],
        };
        for (v, a) in c.drops.iter_mut().zip(self.drops.iter()) {
            *v = a.load(Relaxed);
        }
        c
    }
}

/// Table slots one `-L -c` chunk covers at most. Copying them takes a worker some tens of
/// microseconds (4096 slots of 64 bytes, a 32-byte row each), about one batch's worth of
/// forwarding, so a listing never keeps a worker from its rings for long; and a NAT shard is
/// locked no longer than that either.
pub const LIST_CHUNK_SLOTS: usize = 4096;

/// One connection as a listing needs it: plain data, copied out of a table without
/// allocating while a worker (or a NAT shard's lock) is busy with it. The control thread
/// turns it into a [`ConnStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnRow {
    pub key: FlowKey,
    pub state: ConnState,
    /// Absolute expiry on the millisecond clock.
    pub expires_ms: u64,
    pub dest_addr: Ipv4Addr,
    pub dest_port: u16,
    /// The real server's method (connection sync sends it).
    pub forward: crate::model::Forward,
    /// A NAT entry's reply tuple (its second fast-path entry).
    pub reply: Option<FlowKey>,
    /// Installed in the fast path: `expires_ms` is the worker's timer, the listing
    /// corrects it from the fast path's last-seen time (`fast_expiry`).
    pub fast: bool,
}

impl ConnRow {
    pub fn of(c: &Conn) -> Self {
        ConnRow {
            key: c.key,
            state: c.state,
            expires_ms: c.expires_ms,
            dest_addr: c.dest.addr,
            dest_port: c.dest.port,
            forward: c.dest.forward,
            reply: c.reply_key(),
            fast: c.fast,
        }
    }

    /// For an installed connection: the expiry counted from the fast path's last frame
    /// (one map lookup, on the control thread that lists, never on a worker).
    pub fn fast_expiry(&mut self) {
        if let (true, Some(f)) = (self.fast, crate::fastpath::get()) {
            self.expires_ms =
                f.listed_expiry(&self.key, self.reply.as_ref(), self.state, self.expires_ms);
        }
    }

    /// The entry as `-L -c` shows it (same fields as `Conn::status`).
    pub fn status(&self, now_ms: u64) -> ConnStatus {
        ConnStatus {
            proto: Protocol::from_number(self.key.proto).unwrap_or(Protocol::Tcp),
            expires_ms: self.expires_ms.saturating_sub(now_ms),
            state: self.state.name().to_string(),
            client_addr: Ipv4Addr::from(self.key.saddr),
            client_port: self.key.sport,
            virtual_addr: Ipv4Addr::from(self.key.daddr),
            virtual_port: self.key.dport,
            dest_addr: self.dest_addr,
            dest_port: self.dest_port,
            template: false,
        }
    }
}

/// Appends the entries of at most `LIST_CHUNK_SLOTS` slots of `table` from slot `from` on to
/// `rows`, never beyond its spare capacity (so this never allocates), and returns the slot to
/// resume from (`None` at the end of the table).
pub fn copy_rows(table: &ConnTable, from: usize, rows: &mut Vec<ConnRow>) -> Option<usize> {
    let room = (rows.capacity() - rows.len()).clamp(1, LIST_CHUNK_SLOTS);
    table.for_each_from(from, room, |c| rows.push(ConnRow::of(c)))
}

/// A chunk of a worker's table: the rows and the slot to resume from (`None`: the end).
pub type ConnChunk = (Vec<ConnRow>, Option<usize>);

/// A request the control thread sends to a worker, answered between batches.
pub enum WorkerMsg {
    /// `-L -c`: copy one chunk of the connection table from slot `from` into `rows` (emptied
    /// first) and send it back. The buffer travels both ways so that the worker never
    /// allocates for a listing; its capacity bounds the chunk (see [`copy_rows`]).
    ListConns {
        from: usize,
        rows: Vec<ConnRow>,
        reply: crossbeam::channel::Sender<ConnChunk>,
    },
}

impl WorkerMsg {
    /// Answers the message from the worker's own table.
    pub fn answer(self, table: &ConnTable) {
        match self {
            WorkerMsg::ListConns {
                from,
                mut rows,
                reply,
            } => {
                rows.clear();
                let next = copy_rows(table, from, &mut rows);
                // The lister may have given up (its client went away): nothing to do.
                let _ = reply.send((rows, next));
            }
        }
    }
}

/// Per-daemon worker behaviour.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkerOpts {
    /// Benchmark reference mode (see `Forwarder::reflect`).
    pub reflect: bool,
    /// Preferred busy polling (src/busypoll.rs): the worker runs the interface's NAPI from
    /// its own syscalls and spins instead of sleeping until the link has been quiet a while.
    pub busy_poll: Option<crate::busypoll::BusyPoll>,
    /// Nice value of the worker thread (0: unchanged). Negative by default in xvsd: a frame
    /// the kernel has received is worth finishing before the kernel receives the next one,
    /// so the worker must win the CPU over the NAPI thread or softirq that shares its core;
    /// it sleeps whenever its rings are empty, so it cannot starve the kernel that feeds it.
    pub nice: i32,
    /// What the worker's table does when full (see conn::pressure).
    pub table_full: PressurePolicy,
}

/// How a socket was bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMode {
    ZeroCopy,
    Copy,
}

/// One interface's socket and rings.
struct Port {
    fq: FillQueue,
    cq: CompQueue,
    tx: TxQueue,
    rx: RxQueue,
    /// Frames given to the fill ring and not yet taken back from the RX ring: the kernel
    /// holds them (in the fill ring, its pool, or the RX ring). Kept at most `RING_SIZE`
    /// so that the RX ring can never be full (see step 2 of `Worker::run`).
    rx_owed: u32,
}

pub struct Worker {
    pub queue: u32,
    umem: Umem,
    ports: Vec<Port>,
    free: Vec<FrameDesc>,
    fwd: Forwarder,
    shared: Arc<Shared>,
    stats: Arc<CachePadded<WorkerStats>>,
    /// Bind mode per port.
    pub modes: Vec<BindMode>,
    /// Frames one copy-mode sendto() transmits, per port (32, or 64 where the kernel let us
    /// raise it).
    tx_per_kick: Vec<usize>,
    busy_poll: bool,
    nice: i32,
    mailbox: Mailbox,
    /// ICMP errors handed between workers (src/handoff.rs); `None` with one worker.
    handoff: Option<Arc<Handoffs>>,
}

/// Handle the control thread keeps for each worker.
pub struct WorkerHandle {
    pub queue: u32,
    pub stats: Arc<CachePadded<WorkerStats>>,
    inbox: Arc<Inbox>,
    /// The worker's AF_XDP sockets, for the kernel's drop counters (XDP_STATISTICS). The
    /// worker owns them; they live as long as the daemon runs its workers.
    xsk_fds: Vec<RawFd>,
}

/// Messages for one worker: a list behind a flag the worker checks once per loop iteration
/// (no lock unless something is there), and an eventfd that wakes it from its idle poll(2)
/// so that an idle worker answers at once instead of after up to `IDLE_POLL_MS` (a
/// million-entry listing is some 250 chunks per worker).
struct Inbox {
    msgs: Mutex<Vec<WorkerMsg>>,
    flag: AtomicBool,
    wake: OwnedFd,
}

/// The worker's side of its inbox.
pub struct Mailbox {
    inbox: Arc<Inbox>,
}

/// A worker's inbox: the handle for the control thread and the mailbox for the worker.
pub fn mailbox(
    queue: u32,
    stats: Arc<CachePadded<WorkerStats>>,
) -> Result<(WorkerHandle, Mailbox)> {
    // SAFETY: eventfd has no memory preconditions; the result is checked below.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("creating the wake-up eventfd of worker {queue}"));
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let wake = unsafe { OwnedFd::from_raw_fd(fd) };
    let inbox = Arc::new(Inbox {
        msgs: Mutex::new(Vec::new()),
        flag: AtomicBool::new(false),
        wake,
    });
    Ok((
        WorkerHandle {
            queue,
            stats,
            inbox: inbox.clone(),
            xsk_fds: Vec::new(),
        },
        Mailbox { inbox },
    ))
}

impl WorkerHandle {
    /// The kernel's counters of this worker's sockets, summed over its ports: where frames
    /// were lost before the worker saw them (a full RX ring: the worker was too slow; an
    /// empty fill ring: frames stuck elsewhere).
    pub fn xsk_stats(&self) -> XskStats {
        let mut t = XskStats::default();
        for s in self.xsk_fds.iter().filter_map(|&fd| xsk_stats(fd)) {
            t.rx_dropped += s.rx_dropped;
            t.rx_invalid_descs += s.rx_invalid_descs;
            t.tx_invalid_descs += s.tx_invalid_descs;
            t.rx_ring_full += s.rx_ring_full;
            t.rx_fill_ring_empty_descs += s.rx_fill_ring_empty_descs;
            t.tx_ring_empty_descs += s.tx_ring_empty_descs;
        }
        t
    }

    /// The NAPI id of each of the worker's sockets (see [`napi_id`]), comma-separated.
    pub fn napi_ids(&self) -> String {
        self.xsk_fds
            .iter()
            .map(|&fd| napi_id(fd).to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn send(&self, m: WorkerMsg) {
        let inbox = &*self.inbox;
        inbox.msgs.lock().unwrap_or_else(|e| e.into_inner()).push(m);
        inbox.flag.store(true, std::sync::atomic::Ordering::Release);
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd. It only fails when the
        // counter would overflow, and then the worker is due to wake anyway.
        unsafe { libc::write(inbox.wake.as_raw_fd(), &one as *const u64 as *const _, 8) };
    }
}

impl Mailbox {
    /// The messages that arrived since the last call; empty (and lock-free) if none.
    pub fn take(&self) -> Vec<WorkerMsg> {
        if !self
            .inbox
            .flag
            .swap(false, std::sync::atomic::Ordering::Acquire)
        {
            return Vec::new();
        }
        std::mem::take(&mut *self.inbox.msgs.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The eventfd to poll(2) on while idle.
    pub fn wake_fd(&self) -> RawFd {
        self.inbox.wake.as_raw_fd()
    }

    /// Resets the eventfd after poll(2) reported it (otherwise every later poll returns at
    /// once). Messages are found through the flag, so a wake-up read here is never lost.
    fn clear_wake(&self) {
        let mut v: u64 = 0;
        // SAFETY: reads at most 8 bytes into a valid u64; non-blocking.
        unsafe { libc::read(self.wake_fd(), &mut v as *mut u64 as *mut _, 8) };
    }
}

/// Binds one AF_XDP socket on `ifname`/`queue` to `umem`: zero-copy if the driver supports
/// it, copy mode otherwise (veth).
fn bind(umem: &Umem, ifname: &str, queue: u32) -> Result<(Port, BindMode)> {
    let ring = QueueSize::new(RING_SIZE).expect("power of two");
    let iface: Interface = ifname
        .parse()
        .with_context(|| format!("interface name {ifname}"))?;
    let mut last_err = None;
    for (mode, flags) in [
        (
            BindMode::ZeroCopy,
            BindFlags::XDP_ZEROCOPY | BindFlags::XDP_USE_NEED_WAKEUP,
        ),
        (
            BindMode::Copy,
            BindFlags::XDP_COPY | BindFlags::XDP_USE_NEED_WAKEUP,
        ),
    ] {
        let cfg = SocketConfig::builder()
            .rx_queue_size(ring)
            .tx_queue_size(ring)
            // Our own XDP program steers frames; libxdp must not load its default one.
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .bind_flags(flags)
            .build();
        // SAFETY: each (interface, queue) pair is bound once; sharing the UMEM across
        // different interfaces gives every socket its own fill and completion rings.
        match unsafe { Socket::new(cfg, umem, &iface, queue) } {
            Ok((tx, rx, Some((fq, cq)))) => {
                // With a UMEM shared across devices the kernel may accept the zero-copy
                // request yet run in copy mode: ask it what it actually does.
                let actual = match zero_copy_in_use(rx.fd().as_raw_fd()) {
                    Some(true) => BindMode::ZeroCopy,
                    Some(false) => BindMode::Copy,
                    None => mode,
                };
                return Ok((
                    Port {
                        fq,
                        cq,
                        tx,
                        rx,
                        rx_owed: 0,
                    },
                    actual,
                ));
            }
            Ok(_) => {
                return Err(anyhow::anyhow!(
                    "AF_XDP socket on {ifname} queue {queue} came without fill/completion rings"
                ))
            }
            Err(e) => last_err = Some(e),
        }
    }
    Err(anyhow::anyhow!(
        "creating the AF_XDP socket on {ifname} queue {queue}: {last_err:?}"
    ))
}

/// `setsockopt(XDP_MAX_TX_SKB_BUDGET)` (Linux 6.17+): lets one copy-mode sendto() transmit
/// up to `frames` frames instead of 32. False where the kernel does not know the option.
fn set_tx_budget(fd: RawFd, frames: usize) -> bool {
    const SOL_XDP: libc::c_int = 283;
    const XDP_MAX_TX_SKB_BUDGET: libc::c_int = 9;
    let v = frames as u32;
    // SAFETY: passes a valid u32 and its size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            SOL_XDP,
            XDP_MAX_TX_SKB_BUDGET,
            &v as *const u32 as *const libc::c_void,
            std::mem::size_of::<u32>() as libc::socklen_t,
        )
    };
    r == 0
}

/// `getsockopt(XDP_STATISTICS)`: the kernel's drop counters of one AF_XDP socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct XskStats {
    /// Dropped for other reasons (e.g. frame too big, invalid).
    pub rx_dropped: u64,
    pub rx_invalid_descs: u64,
    pub tx_invalid_descs: u64,
    /// The RX ring was full: the kernel received the frame and had nowhere to put it.
    pub rx_ring_full: u64,
    /// The fill ring was empty when a frame arrived.
    pub rx_fill_ring_empty_descs: u64,
    /// sendto() found the TX ring empty.
    pub tx_ring_empty_descs: u64,
}

/// `SO_INCOMING_NAPI_ID` of socket `fd`: the NAPI instance the kernel last delivered to it
/// from (0: none yet, or a device without NAPI ids). Busy polling needs one.
pub fn napi_id(fd: RawFd) -> u32 {
    const SO_INCOMING_NAPI_ID: libc::c_int = 56;
    let mut v: u32 = 0;
    let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
    // SAFETY: v and len are valid for writing, len holds v's size.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_INCOMING_NAPI_ID,
            &mut v as *mut u32 as *mut libc::c_void,
            &mut len,
        )
    };
    if r == 0 {
        v
    } else {
        0
    }
}

/// Reads `XDP_STATISTICS` of socket `fd` (None if the kernel refuses).
pub fn xsk_stats(fd: RawFd) -> Option<XskStats> {
    const SOL_XDP: libc::c_int = 283;
    const XDP_STATISTICS: libc::c_int = 7;
    let mut st = XskStats::default();
    let mut len = std::mem::size_of::<XskStats>() as libc::socklen_t;
    // SAFETY: st is a repr(C) struct of six u64, as the kernel's struct xdp_statistics; len
    // holds its size, so the kernel writes at most that much.
    let r = unsafe {
        libc::getsockopt(
            fd,
            SOL_XDP,
            XDP_STATISTICS,
            &mut st as *mut XskStats as *mut libc::c_void,
            &mut len,
        )
    };
    (r == 0).then_some(st)
}

/// `getsockopt(XDP_OPTIONS)`: whether the socket runs in zero-copy mode.
fn zero_copy_in_use(fd: RawFd) -> Option<bool> {
    const SOL_XDP: libc::c_int = 283;
    const XDP_OPTIONS: libc::c_int = 8;
    const XDP_OPTIONS_ZEROCOPY: u32 = 1;
    let mut flags: u32 = 0;
    let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
    // SAFETY: flags and len are valid for writing and len holds flags' size.
    let r = unsafe {
        libc::getsockopt(
            fd,
            SOL_XDP,
            XDP_OPTIONS,
            &mut flags as *mut u32 as *mut libc::c_void,
            &mut len,
        )
    };
    (r == 0).then_some(flags & XDP_OPTIONS_ZEROCOPY != 0)
}

impl Worker {
    /// Creates the UMEM and one socket per interface for `queue`.
    pub fn new(
        ifaces: &[(String, PortInfo)],
        queue: u32,
        conn_capacity: usize,
        nat: Arc<NatConns>,
        shared: Arc<Shared>,
        opts: WorkerOpts,
    ) -> Result<(Worker, WorkerHandle)> {
        assert!(!ifaces.is_empty() && ifaces.len() <= MAX_PORTS);
        let ring = QueueSize::new(RING_SIZE).expect("power of two");
        let umem_cfg = UmemConfig::builder()
            .fill_queue_size(ring)
            .comp_queue_size(ring)
            .build()
            .context("UMEM configuration")?;
        let frames = FRAMES_PER_PORT * ifaces.len() as u32;
        let (umem, descs) = Umem::new(umem_cfg, NonZeroU32::new(frames).expect("non-zero"), false)
            .with_context(|| {
                format!("creating the UMEM for queue {queue} (locked memory limit?)")
            })?;

        let mut ports = Vec::new();
        let mut modes = Vec::new();
        let mut tx_per_kick = Vec::new();
        for (name, _) in ifaces {
            let (p, m) = bind(&umem, name, queue)?;
            let fd = p.rx.fd().as_raw_fd();
            if let Some(bp) = &opts.busy_poll {
                crate::busypoll::set_socket(fd, bp).with_context(|| {
                    format!("--busy-poll on the AF_XDP socket of {name} queue {queue}")
                })?;
            }
            tx_per_kick.push(
                if m == BindMode::Copy && set_tx_budget(fd, COPY_TX_BUDGET) {
                    COPY_TX_BUDGET
                } else {
                    COPY_TX_PER_KICK
                },
            );
            ports.push(p);
            modes.push(m);
        }

        let mut free = Vec::with_capacity(frames as usize);
        free.extend_from_slice(&descs);
        // Give each fill ring half of its port's frames to receive into.
        for p in ports.iter_mut() {
            let give = (RING_SIZE as usize).min(free.len());
            let start = free.len() - give;
            // SAFETY: these frames belong to this UMEM and are not in use anywhere else.
            let n = unsafe { p.fq.produce(&free[start..]) };
            p.rx_owed += n as u32;
            free.truncate(free.len() - n);
        }

        let infos: Vec<PortInfo> = ifaces.iter().map(|(_, i)| *i).collect();
        let mut fwd = Forwarder::new(queue as usize, conn_capacity, &infos, nat);
        fwd.reflect = opts.reflect;
        fwd.conns.set_policy(opts.table_full);
        let stats = Arc::new(CachePadded::new(WorkerStats::default()));
        let (mut handle, mailbox) = mailbox(queue, stats.clone())?;
        handle.xsk_fds = ports.iter().map(|p| p.rx.fd().as_raw_fd()).collect();
        Ok((
            Worker {
                queue,
                umem,
                ports,
                free,
                fwd,
                shared,
                stats,
                modes,
                tx_per_kick,
                busy_poll: opts.busy_poll.is_some(),
                nice: opts.nice,
                mailbox,
                handoff: None,
            },
            handle,
        ))
    }

    /// Shares the daemon's parked connections and outgoing sync queues (connection sync,
    /// restart, queue moves) with this worker's forwarder.
    pub fn set_shared_conns(
        &mut self,
        parked: Arc<crate::conn::ParkedConns>,
        sync: Arc<crate::sync::out::SyncQueues>,
    ) {
        self.fwd.set_shared(parked, sync);
    }

    /// Joins the ring of workers that hand each other ICMP errors about connections they
    /// do not hold (src/handoff.rs); this worker's queue is `handoffs`' queue `queue`.
    pub fn set_handoff(&mut self, handoffs: Arc<Handoffs>) {
        self.fwd.handoff = handoffs.workers() > 1;
        self.handoff = Some(handoffs);
    }

    /// The socket fd of each port, for the XSKMAP.
    pub fn fds(&self) -> Vec<RawFd> {
        self.ports.iter().map(|p| p.rx.fd().as_raw_fd()).collect()
    }

    /// Sleeps in poll(2) until a port has frames, a control message arrives, another worker
    /// hands over an ICMP error or `IDLE_POLL_MS` passes.
    fn idle_wait(&self) {
        let mut pfds = [libc::pollfd {
            fd: -1,
            events: 0,
            revents: 0,
        }; MAX_PORTS + 2];
        for (pfd, p) in pfds.iter_mut().zip(&self.ports) {
            pfd.fd = p.rx.fd().as_raw_fd();
            pfd.events = libc::POLLIN;
        }
        let mut n = self.ports.len();
        let mailbox_at = n;
        pfds[n].fd = self.mailbox.wake_fd();
        pfds[n].events = libc::POLLIN;
        n += 1;
        let me = self.fwd.worker_id;
        if let Some(h) = &self.handoff {
            if !h.sleep_begin(me) {
                h.sleep_end(me);
                return;
            }
            pfds[n].fd = h.wake_fd(me);
            pfds[n].events = libc::POLLIN;
            n += 1;
        }
        // SAFETY: pfds is a valid array of pollfd with at least n entries.
        unsafe { libc::poll(pfds.as_mut_ptr(), n as libc::nfds_t, IDLE_POLL_MS) };
        if let Some(h) = &self.handoff {
            h.sleep_end(me);
        }
        if pfds[mailbox_at].revents & libc::POLLIN != 0 {
            self.mailbox.clear_wake();
        }
    }

    /// Runs until `shared.stop` is set.
    pub fn run(mut self) {
        if self.nice != 0 {
            // SAFETY: plain syscalls; who = 0 with PRIO_PROCESS is the calling thread on Linux.
            let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, self.nice) };
            if r != 0 {
                tracing::warn!(queue = self.queue, nice = self.nice, error = %std::io::Error::last_os_error(), "could not set the worker's nice value");
            }
        }
        let mut spin_before_sleep = if self.busy_poll {
            BUSY_SPIN_BEFORE_SLEEP
        } else {
            SPIN_BEFORE_SLEEP
        };
        // --busy-poll: whether the sockets' NAPI id has been checked (after the first frames:
        // the kernel records it on delivery).
        let mut napi_checked = !self.busy_poll;
        let nports = self.ports.len();
        let mut rx_descs = [FrameDesc::default(); BATCH];
        let mut tx_descs = [[FrameDesc::default(); BATCH]; MAX_PORTS];
        let mut ntx = [0usize; MAX_PORTS];
        let mut comp = [FrameDesc::default(); BATCH];
        let mut idle: u32 = 0;

        while !self.shared.stop.load(Relaxed) {
            for m in self.mailbox.take() {
                m.answer(&self.fwd.conns);
            }

            let now_ms = crate::clock::now_ms();
            let snap = self.shared.snapshot.load();
            let mut got = 0;
            for pi in 0..nports {
                let p = &mut self.ports[pi];
                // 1. Frames the kernel finished sending come back to the free list.
                // SAFETY: completion descriptors are frames of this UMEM we submitted.
                let n = unsafe { p.cq.consume(&mut comp) };
                self.free.extend_from_slice(&comp[..n]);

                // 2. Keep the fill ring topped up, but never give the kernel more frames
                // than the RX ring holds. Frames still waiting in the RX ring count: with
                // the fill ring refilled regardless (the UMEM has twice RING_SIZE frames),
                // a worker falling behind let the kernel take a frame, copy the packet into
                // it and only then find the RX ring full (`xsk_rx_ring_full`), the copy
                // wasted on the CPU the worker needs. Capped, the kernel finds the fill
                // ring empty first and drops before copying (`xsk_rx_fill_ring_empty`).
                // While the worker keeps up the RX ring is empty and the fill ring full.
                let room = RING_SIZE.saturating_sub(p.rx_owed);
                let want = p.fq.nb_free(self.free.len() as u32).min(room) as usize;
                let k = want.min(self.free.len());
                if k > 0 {
                    let start = self.free.len() - k;
                    // SAFETY: free frames are owned by us and not queued anywhere.
                    let done = unsafe { p.fq.produce(&self.free[start..]) };
                    p.rx_owed += done as u32;
                    self.free.truncate(self.free.len() - done);
                }
                if p.fq.needs_wakeup() {
                    let _ = p.fq.wakeup(p.rx.fd_mut(), 0);
                }

                // 3. Receive a batch and forward it in place.
                // SAFETY: rx_descs are plain descriptors the ring fills in.
                let mut n = unsafe { p.rx.consume(&mut rx_descs) };
                if n == 0 && self.busy_poll {
                    // Preferred busy polling: the kernel leaves NAPI to us while we poll.
                    // recvfrom() runs one NAPI poll (SO_BUSY_POLL_BUDGET frames) for this
                    // socket; sendto() kicks below run one as well.
                    // SAFETY: a zero-length, non-blocking receive on our own socket.
                    unsafe {
                        libc::recvfrom(
                            p.rx.fd().as_raw_fd(),
                            std::ptr::null_mut(),
                            0,
                            libc::MSG_DONTWAIT,
                            std::ptr::null_mut(),
                            std::ptr::null_mut(),
                        )
                    };
                    // SAFETY: as above.
                    n = unsafe { p.rx.consume(&mut rx_descs) };
                }
                p.rx_owed = p.rx_owed.saturating_sub(n as u32);
                if !napi_checked && n > 0 {
                    napi_checked = true;
                    if napi_id(p.rx.fd().as_raw_fd()) == 0 {
                        // No NAPI instance to poll (e.g. copy mode on veth): recvfrom()
                        // would only spin against the kernel's NAPI thread.
                        self.busy_poll = false;
                        spin_before_sleep = SPIN_BEFORE_SLEEP;
                        self.stats.no_napi_id.store(true, Relaxed);
                    }
                }
                got += n;
                for desc in rx_descs.iter_mut().take(n) {
                    // SAFETY: the frame was just handed to us by the RX ring; nothing else
                    // references it until we queue it for TX or back on the fill ring.
                    let verdict = unsafe {
                        let mut data = self.umem.data_mut(desc);
                        let mut len = data.contents().len();
                        // Expose the whole frame buffer: TUN and ICMP change the length.
                        {
                            let mut c = data.cursor();
                            let cap = c.buf_len();
                            c.set_pos(cap);
                        }
                        let v = self.fwd.process(
                            data.contents_mut(),
                            &mut len,
                            pi as u8,
                            &snap,
                            now_ms,
                        );
                        data.cursor().set_pos(len);
                        if v == Verdict::Handoff {
                            let frame = &data.contents()[..len];
                            hand_off(self.handoff.as_deref(), &mut self.fwd, frame, pi as u8);
                        }
                        v
                    };
                    match verdict {
                        Verdict::Tx(out) if (out as usize) < nports => {
                            let o = out as usize;
                            tx_descs[o][ntx[o]] = *desc;
                            ntx[o] += 1;
                            if ntx[o] == BATCH {
                                self.flush_tx(o, &tx_descs[o][..BATCH]);
                                ntx[o] = 0;
                            }
                        }
                        Verdict::Tx(_) => {
                            self.fwd.counters.tx_frames -= 1;
                            self.fwd.counters.drops[DropReason::NoNeighbour as usize] += 1;
                            self.free.push(*desc);
                        }
                        Verdict::Drop(_) | Verdict::Handoff => self.free.push(*desc),
                    }
                }
            }
            drop(snap);
            got += self.drain_handoffs(&mut tx_descs, &mut ntx);

            // 4. Transmit what is pending on each port.
            for (o, pending) in ntx.iter_mut().enumerate().take(nports) {
                if *pending > 0 {
                    let batch = tx_descs[o];
                    self.flush_tx(o, &batch[..*pending]);
                    *pending = 0;
                }
            }

            if got == 0 {
                idle = idle.saturating_add(1);
                if idle > spin_before_sleep {
                    // Also with --busy-poll: after gro_flush_timeout without a poll the
                    // kernel runs NAPI itself again and wakes us (xsk_poll busy-polls once
                    // before sleeping).
                    self.idle_wait();
                    let snap = self.shared.snapshot.load();
                    self.fwd
                        .expire(crate::clock::now_ms(), EXPIRE_BUDGET * 16, &snap);
                    self.publish();
                }
                continue;
            }
            idle = 0;
            let snap = self.shared.snapshot.load();
            self.fwd.expire(now_ms, EXPIRE_BUDGET, &snap);
            drop(snap);
            self.publish();
        }
        self.fwd.conns.clear();
        self.publish();
    }

    /// Copies of ICMP errors that other workers found no connection for (src/handoff.rs),
    /// at most `HANDOFF_PER_ITER` per iteration: each is written into a free frame of this
    /// worker and relayed from there as a local hit would be, or passed to the next worker.
    fn drain_handoffs(
        &mut self,
        tx_descs: &mut [[FrameDesc; BATCH]; MAX_PORTS],
        ntx: &mut [usize; MAX_PORTS],
    ) -> usize {
        let Some(h) = self.handoff.take() else {
            return 0;
        };
        let nports = self.ports.len();
        let snap = self.shared.snapshot.load();
        let now_ms = crate::clock::now_ms();
        let mut n = 0;
        while n < HANDOFF_PER_ITER {
            let Some(mut f) = h.recv(self.fwd.worker_id) else {
                break;
            };
            n += 1;
            let Some(mut desc) = self.free.pop() else {
                self.fwd.counters.drops[DropReason::IcmpHandoffLost as usize] += 1;
                continue;
            };
            // SAFETY: a free frame of this UMEM: not on any ring, referenced nowhere else.
            let verdict = unsafe {
                let mut data = self.umem.data_mut(&mut desc);
                {
                    let mut c = data.cursor();
                    let cap = c.buf_len();
                    c.set_pos(cap);
                }
                let buf = data.contents_mut();
                let mut len = f.len as usize;
                let v = if len <= buf.len() {
                    buf[..len].copy_from_slice(f.frame());
                    self.fwd.process_handoff(
                        buf,
                        &mut len,
                        f.in_port,
                        f.hops_left == 0,
                        &snap,
                        now_ms,
                    )
                } else {
                    self.fwd.counters.drops[DropReason::IcmpHandoffLost as usize] += 1;
                    Verdict::Drop(DropReason::IcmpHandoffLost)
                };
                data.cursor().set_pos(len);
                v
            };
            match verdict {
                Verdict::Tx(out) if (out as usize) < nports => {
                    let o = out as usize;
                    tx_descs[o][ntx[o]] = desc;
                    ntx[o] += 1;
                    if ntx[o] == BATCH {
                        self.flush_tx(o, &tx_descs[o][..BATCH]);
                        ntx[o] = 0;
                    }
                }
                Verdict::Tx(_) => {
                    self.fwd.counters.tx_frames -= 1;
                    self.fwd.counters.drops[DropReason::NoNeighbour as usize] += 1;
                    self.free.push(desc);
                }
                Verdict::Handoff => {
                    self.free.push(desc);
                    f.hops_left -= 1;
                    if !h.send(h.next(self.fwd.worker_id), f) {
                        self.fwd.counters.drops[DropReason::IcmpHandoffLost as usize] += 1;
                    }
                }
                Verdict::Drop(_) => self.free.push(desc),
            }
        }
        self.handoff = Some(h);
        n
    }

    fn publish(&self) {
        self.stats.publish(
            &self.fwd.counters,
            self.fwd.conns.len(),
            self.fwd.conns.half_open(),
        );
    }

    /// Queues frames for TX on port `o`; copy mode needs a sendto() kick for every batch.
    fn flush_tx(&mut self, o: usize, descs: &[FrameDesc]) {
        let p = &mut self.ports[o];
        let room = p.tx.nb_free(descs.len() as u32) as usize;
        let k = room.min(descs.len());
        // SAFETY: these frames are ours and hold the rewritten packets.
        let sent = if k > 0 {
            unsafe { p.tx.produce(&descs[..k]) }
        } else {
            0
        };
        if sent < descs.len() {
            let lost = (descs.len() - sent) as u64;
            self.fwd.counters.tx_frames -= lost;
            self.fwd.counters.drops[DropReason::TxFull as usize] += lost;
            self.free.extend_from_slice(&descs[sent..]);
        }
        // Copy mode needs a sendto() for every batch whatever need_wakeup says, and one
        // sendto() transmits at most tx_per_kick frames (the kernel's TX_BATCH_SIZE, 32,
        // unless XDP_MAX_TX_SKB_BUDGET raised it): kick once per tx_per_kick frames queued,
        // or a full batch leaves part of itself in the ring each time and a sustained load
        // fills it (tx_full). Zero-copy drivers need a kick only when they ask.
        if self.modes[o] == BindMode::Copy {
            for _ in 0..sent.div_ceil(self.tx_per_kick[o]).max(1) {
                if p.tx.wakeup().is_err() {
                    break;
                }
            }
        } else if p.tx.needs_wakeup() {
            let _ = p.tx.wakeup();
        }
    }
}

/// The first handoff of a frame that missed on this worker (`Verdict::Handoff`: an ICMP
/// error, or a TCP segment without SYN whose flow may have moved queues): a copy to the
/// next worker, to go round all the others. One that cannot be queued (full queue, frame
/// too long) is a drop (`icmp_handoff_lost`) instead of a handoff.
fn hand_off(h: Option<&Handoffs>, fwd: &mut Forwarder, frame: &[u8], in_port: u8) {
    let queued = h.is_some_and(|h| {
        let hops = (h.workers() as u16).saturating_sub(2);
        HandoffFrame::copy_of(frame, hops, in_port)
            .is_some_and(|f| h.send(h.next(fwd.worker_id), f))
    });
    if !queued {
        // Undo what `Forwarder::process` counted for the handoff.
        let c = &mut fwd.counters;
        if crate::forward::icmp::is_icmp(frame) {
            c.icmp_handoff = c.icmp_handoff.saturating_sub(1);
        } else {
            c.moved_handoff = c.moved_handoff.saturating_sub(1);
        }
        c.drops[DropReason::IcmpHandoffLost as usize] += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(fd: RawFd) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    }

    #[test]
    fn a_message_wakes_an_idle_worker_and_is_taken_once() {
        let (h, mb) = mailbox(0, Default::default()).unwrap();
        assert!(mb.take().is_empty());
        assert!(!readable(mb.wake_fd()), "nothing sent: poll(2) must sleep");
        let (tx, rx) = crossbeam::channel::bounded(1);
        h.send(WorkerMsg::ListConns {
            from: 0,
            rows: Vec::with_capacity(8),
            reply: tx,
        });
        // What the idle worker's poll(2) waits on becomes readable at once.
        assert!(readable(mb.wake_fd()));
        mb.clear_wake();
        assert!(!readable(mb.wake_fd()), "cleared: later polls sleep again");
        let msgs = mb.take();
        assert_eq!(msgs.len(), 1);
        assert!(mb.take().is_empty());
        for m in msgs {
            m.answer(&ConnTable::with_capacity(4));
        }
        let (rows, next) = rx.recv().unwrap();
        assert!(rows.is_empty() && rows.capacity() >= 8 && next.is_none());
    }
}
