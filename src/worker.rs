//! One AF_XDP worker per RX queue: the batched RX -> forward -> TX loop.
//!
//! Each worker owns its UMEM, rings, free-frame list and connection table; it shares only the
//! configuration snapshot (read lock-free through `ArcSwap`) and the real servers' load
//! counters. Frames are forwarded in place: the RX descriptor goes straight to the TX ring.

use crate::forward::{Forwarder, FwdCounters, Snapshot, Verdict};
use crate::model::ConnStatus;
use crate::packet::DropReason;
use anyhow::{Context, Result};
use arc_swap::ArcSwap;
use crossbeam::utils::CachePadded;
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use xsk_rs::config::{BindFlags, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

/// Frames per UMEM (2 KiB each): half for the fill ring, the rest in flight on TX.
const FRAME_COUNT: u32 = 4096;
const RING_SIZE: u32 = 2048;
/// Frames handled per loop iteration.
const BATCH: usize = 64;
/// Connection-table slots examined for expiry per iteration (bounded work, see conn.rs).
const EXPIRE_BUDGET: usize = 64;
/// Empty polls before the worker sleeps in poll(2) instead of spinning.
const SPIN_BEFORE_SLEEP: u32 = 2048;
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
    pub conns: AtomicU64,
    pub drops: [AtomicU64; DropReason::COUNT],
}

impl WorkerStats {
    fn publish(&self, c: &FwdCounters, conns: usize) {
        self.rx_frames.store(c.rx_frames, Relaxed);
        self.tx_frames.store(c.tx_frames, Relaxed);
        self.new_conns.store(c.new_conns, Relaxed);
        self.conns.store(conns as u64, Relaxed);
        for (a, v) in self.drops.iter().zip(c.drops.iter()) {
            a.store(*v, Relaxed);
        }
    }

    pub fn read(&self) -> FwdCounters {
        let mut c = FwdCounters {
            rx_frames: self.rx_frames.load(Relaxed),
            tx_frames: self.tx_frames.load(Relaxed),
            new_conns: self.new_conns.load(Relaxed),
            drops: [0; DropReason::COUNT],
        };
        for (v, a) in c.drops.iter_mut().zip(self.drops.iter()) {
            *v = a.load(Relaxed);
        }
        c
    }
}

/// A request the control thread sends to a worker, answered between batches.
pub enum WorkerMsg {
    /// Drop every connection (service cleared / daemon stopping).
    Flush,
    /// Send a copy of the connection table (`-L -c`).
    ListConns(crossbeam::channel::Sender<Vec<ConnStatus>>),
}

/// How the socket was bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMode {
    ZeroCopy,
    Copy,
}

pub struct Worker {
    pub queue: u32,
    umem: Umem,
    fq: FillQueue,
    cq: CompQueue,
    tx: TxQueue,
    rx: RxQueue,
    free: Vec<FrameDesc>,
    fwd: Forwarder,
    shared: Arc<Shared>,
    stats: Arc<CachePadded<WorkerStats>>,
    pub mode: BindMode,
    inbox: Arc<Mutex<Vec<WorkerMsg>>>,
    inbox_flag: Arc<AtomicBool>,
}

/// Handle the control thread keeps for each worker.
pub struct WorkerHandle {
    pub queue: u32,
    pub stats: Arc<CachePadded<WorkerStats>>,
    inbox: Arc<Mutex<Vec<WorkerMsg>>>,
    inbox_flag: Arc<AtomicBool>,
}

impl WorkerHandle {
    pub fn send(&self, m: WorkerMsg) {
        self.inbox.lock().unwrap_or_else(|e| e.into_inner()).push(m);
        self.inbox_flag
            .store(true, std::sync::atomic::Ordering::Release);
    }
}

impl Worker {
    /// Creates the UMEM and AF_XDP socket for `queue` of `ifname`: zero-copy if the driver
    /// supports it, copy mode otherwise (veth).
    pub fn new(
        ifname: &str,
        queue: u32,
        local_mac: [u8; 6],
        conn_capacity: usize,
        shared: Arc<Shared>,
    ) -> Result<(Worker, WorkerHandle)> {
        let ring = QueueSize::new(RING_SIZE).expect("power of two");
        let umem_cfg = UmemConfig::builder()
            .fill_queue_size(ring)
            .comp_queue_size(ring)
            .build()
            .context("UMEM configuration")?;
        let (umem, descs) = Umem::new(
            umem_cfg,
            NonZeroU32::new(FRAME_COUNT).expect("non-zero"),
            false,
        )
        .with_context(|| {
            format!("creating the UMEM for {ifname} queue {queue} (locked memory limit?)")
        })?;
        let iface: Interface = ifname
            .parse()
            .with_context(|| format!("interface name {ifname}"))?;

        let mut last_err = None;
        let mut made = None;
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
            // SAFETY: the UMEM is not shared with another socket on this queue.
            match unsafe { Socket::new(cfg, &umem, &iface, queue) } {
                Ok(s) => {
                    made = Some((mode, s));
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        let Some((mode, (tx, rx, fq_cq))) = made else {
            return Err(anyhow::anyhow!(
                "creating the AF_XDP socket on {ifname} queue {queue}: {last_err:?}"
            ));
        };
        let (mut fq, cq) = fq_cq.context("AF_XDP socket came without fill/completion rings")?;

        let mut free = Vec::with_capacity(FRAME_COUNT as usize);
        free.extend_from_slice(&descs);
        // Give the kernel half the frames to receive into.
        let give = (RING_SIZE as usize).min(free.len());
        let start = free.len() - give;
        // SAFETY: these frames belong to this UMEM and are not in use anywhere else.
        let n = unsafe { fq.produce(&free[start..]) };
        free.truncate(free.len() - n);

        let stats = Arc::new(CachePadded::new(WorkerStats::default()));
        let inbox = Arc::new(Mutex::new(Vec::new()));
        let inbox_flag = Arc::new(AtomicBool::new(false));
        let handle = WorkerHandle {
            queue,
            stats: stats.clone(),
            inbox: inbox.clone(),
            inbox_flag: inbox_flag.clone(),
        };
        Ok((
            Worker {
                queue,
                umem,
                fq,
                cq,
                tx,
                rx,
                free,
                fwd: Forwarder::new(queue as usize, conn_capacity, local_mac),
                shared,
                stats,
                mode,
                inbox,
                inbox_flag,
            },
            handle,
        ))
    }

    /// The socket fd, for the XSKMAP.
    pub fn fd(&self) -> RawFd {
        self.rx.fd().as_raw_fd()
    }

    /// Runs until `shared.stop` is set.
    pub fn run(mut self) {
        let mut rx_descs = [FrameDesc::default(); BATCH];
        let mut tx_descs = [FrameDesc::default(); BATCH];
        let mut comp = [FrameDesc::default(); BATCH];
        let mut idle: u32 = 0;

        while !self.shared.stop.load(Relaxed) {
            if self
                .inbox_flag
                .swap(false, std::sync::atomic::Ordering::Acquire)
            {
                self.drain_inbox();
            }

            // 1. Frames the kernel finished sending come back to the free list.
            // SAFETY: completion descriptors are frames of this UMEM we submitted for TX.
            let n = unsafe { self.cq.consume(&mut comp) };
            self.free.extend_from_slice(&comp[..n]);

            // 2. Keep the fill ring topped up.
            if !self.free.is_empty() {
                let want = self.fq.nb_free(self.free.len() as u32) as usize;
                let k = want.min(self.free.len());
                if k > 0 {
                    let start = self.free.len() - k;
                    // SAFETY: free frames are owned by us and not queued anywhere.
                    let done = unsafe { self.fq.produce(&self.free[start..]) };
                    self.free.truncate(self.free.len() - done);
                }
            }

            // 3. Receive a batch.
            // SAFETY: rx_descs are plain descriptors the ring fills in.
            let n = unsafe { self.rx.consume(&mut rx_descs) };
            let now_ms = crate::clock::now_ms();
            if n == 0 {
                idle = idle.saturating_add(1);
                if self.fq.needs_wakeup() || idle > SPIN_BEFORE_SLEEP {
                    // Sleep in the kernel until frames arrive (also kicks the fill ring).
                    let _ = self.rx.poll(IDLE_POLL_MS);
                }
                if idle > SPIN_BEFORE_SLEEP {
                    self.fwd.conns.expire(now_ms, EXPIRE_BUDGET * 16);
                    self.stats.publish(&self.fwd.counters, self.fwd.conns.len());
                }
                continue;
            }
            idle = 0;

            // 4. Forward in place.
            let snap = self.shared.snapshot.load();
            let mut ntx = 0;
            for desc in rx_descs.iter_mut().take(n) {
                // SAFETY: the frame was just handed to us by the RX ring; nothing else
                // references it until we queue it for TX or back on the fill ring.
                let verdict = unsafe {
                    let mut data = self.umem.data_mut(desc);
                    self.fwd.process(data.contents_mut(), &snap, now_ms)
                };
                match verdict {
                    Verdict::Tx => {
                        tx_descs[ntx] = *desc;
                        ntx += 1;
                    }
                    Verdict::Drop(_) => self.free.push(*desc),
                }
            }
            drop(snap);

            // 5. Transmit. Copy mode needs a sendto() kick for every batch.
            if ntx > 0 {
                let room = self.tx.nb_free(ntx as u32) as usize;
                let k = room.min(ntx);
                // SAFETY: these frames are ours and hold the rewritten packets.
                let sent = if k > 0 {
                    unsafe { self.tx.produce(&tx_descs[..k]) }
                } else {
                    0
                };
                if sent < ntx {
                    self.fwd.counters.tx_frames -= (ntx - sent) as u64;
                    self.fwd.counters.drops[DropReason::TxFull as usize] += (ntx - sent) as u64;
                    self.free.extend_from_slice(&tx_descs[sent..ntx]);
                }
                let _ = self.tx.wakeup();
            }

            self.fwd.conns.expire(now_ms, EXPIRE_BUDGET);
            self.stats.publish(&self.fwd.counters, self.fwd.conns.len());
        }
        self.fwd.conns.clear();
        self.stats.publish(&self.fwd.counters, 0);
    }

    fn drain_inbox(&mut self) {
        let msgs: Vec<WorkerMsg> =
            std::mem::take(&mut *self.inbox.lock().unwrap_or_else(|e| e.into_inner()));
        for m in msgs {
            match m {
                WorkerMsg::Flush => self.fwd.conns.clear(),
                WorkerMsg::ListConns(tx) => {
                    let now = crate::clock::now_ms();
                    let mut out = Vec::with_capacity(self.fwd.conns.len());
                    self.fwd.conns.for_each(|c| out.push(c.status(now)));
                    let _ = tx.send(out);
                }
            }
        }
    }
}
