//! IPVS connection synchronisation between directors (active/backup).
//!
//! `wire` is the datagram format of Linux's `net/netfilter/ipvs/ip_vs_sync.c`, byte for
//! byte, so that xvs can talk to kernel IPVS sync daemons (and to itself). It is a pure
//! library: no sockets, no connection table.
//!
//! The seam between the sync daemon (sockets, threads, `--start-daemon`) and the data path
//! (connection tables, workers) is [`SyncHooks`]: the daemon side never sees a connection
//! table, the data-path side never sees a socket.

pub mod daemon;
pub mod out;
pub mod wire;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use wire::SyncConn;

/// What the sync daemon needs from the director's connection tables. Implemented by the
/// daemon (`daemon::sync_hooks`); test doubles implement it in tests.
pub trait SyncHooks: Send + Sync + 'static {
    /// Master: moves the entries the workers queued for sending (IPVS's send rule already
    /// applied, templates after their connections) into `out`. Called by the master
    /// thread at least every 100 ms; never blocks.
    fn drain(&self, out: &mut Vec<SyncConn>);
    /// Backup: applies entries received from a peer (decoded, syncid-filtered, IPv6 and
    /// unknown protocols already skipped and counted by the caller). Counts `applied` and
    /// `refused` in `counters()` itself.
    fn apply(&self, conns: &[SyncConn]);
    /// Bulk sync (beyond IPVS): every current connection and template, in chunks, for a
    /// peer that asks for the whole table. Blocks while the tables are walked (bounded
    /// chunks, workers keep forwarding).
    fn dump(&self, each: &mut dyn FnMut(&[SyncConn]));
    /// The counters the sync daemon and the data path share.
    fn counters(&self) -> &SyncCounters;
}

/// Sync counters, shown by `xvsadm --datapath` (and later in metrics). Plain relaxed
/// atomics: written by the sync threads and the daemon, never on the packet path (the
/// workers count their own queue drops in `FwdCounters`).
#[derive(Default, Debug)]
pub struct SyncCounters {
    /// Datagrams sent by the master (multicast and unicast each count).
    pub sent_msgs: AtomicU64,
    /// Entries sent by the master.
    pub sent_conns: AtomicU64,
    /// Datagrams received by the backup (every one, good or bad).
    pub recv_msgs: AtomicU64,
    /// Entries decoded from received datagrams.
    pub recv_conns: AtomicU64,
    /// Datagrams or the rest of them dropped as malformed (any `WireError` but foreign syncid).
    pub recv_malformed: AtomicU64,
    /// Datagrams of another sync group (syncid filter).
    pub recv_foreign: AtomicU64,
    /// Entries skipped by the decoder (IPv6, unknown protocol, bad state).
    pub recv_skipped: AtomicU64,
    /// Entries applied to the tables (created or updated).
    pub applied: AtomicU64,
    /// Entries refused (no room, or nothing xvs can serve them with).
    pub refused: AtomicU64,
    /// Entries received by bulk sync (also counted in `applied`/`refused`).
    pub bulk_conns: AtomicU64,
    /// Entries the workers could not queue for sending (queue full).
    pub send_dropped: AtomicU64,
    /// Master: datagrams whose send failed, and entries the format cannot carry (one-packet
    /// connections, oversized persistence-engine data), dropped.
    pub send_errors: AtomicU64,
}

impl SyncCounters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }

    /// (name, value) pairs in a fixed order, for `--datapath`.
    pub fn pairs(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("sync_sent_msgs", self.sent_msgs.load(Relaxed)),
            ("sync_sent_conns", self.sent_conns.load(Relaxed)),
            ("sync_recv_msgs", self.recv_msgs.load(Relaxed)),
            ("sync_recv_conns", self.recv_conns.load(Relaxed)),
            ("sync_recv_malformed", self.recv_malformed.load(Relaxed)),
            ("sync_recv_foreign", self.recv_foreign.load(Relaxed)),
            ("sync_recv_skipped", self.recv_skipped.load(Relaxed)),
            ("sync_applied", self.applied.load(Relaxed)),
            ("sync_refused", self.refused.load(Relaxed)),
            ("sync_bulk_conns", self.bulk_conns.load(Relaxed)),
            ("sync_send_dropped", self.send_dropped.load(Relaxed)),
            ("sync_send_errors", self.send_errors.load(Relaxed)),
        ]
    }
}
