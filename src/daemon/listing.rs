//! `-L -c`: the connection listing, streamed in bounded chunks.
//!
//! A full table holds a million entries or more, far beyond what one control message may
//! carry (`proto::MAX_MESSAGE_BYTES`) and more than should ever be copied in one go. So the
//! answer is a stream (protocol version 2): `Response::Connections` chunks of at most
//! [`LIST_CHUNK_SLOTS`] entries each, then `Response::ConnectionsEnd` with the total, or an
//! `Error` if the listing cannot be finished. Memory stays bounded by a few chunks whatever
//! the table size.
//!
//! Sources, in the order `-L -c` has always printed them: persistence templates, each
//! worker's DR/TUN table, the NAT shards. Workers copy one chunk of slots per request between
//! two batches ([`WorkerMsg::ListConns`]), into a buffer the lister lends them; a NAT shard is
//! locked for one chunk of slots at a time. Like ipvsadm reading `/proc/net/ip_vs_conn`, the
//! listing is not an atomic snapshot: entries created or expired while it runs may or may not
//! appear; an entry that lives throughout appears exactly once. The order is the tables' slot
//! order (ipvsadm prints the kernel's hash order; neither sorts).

use crate::conn::{NatConns, ParkedConns, Template};
use crate::control::proto;
use crate::model::Protocol;
use crate::model::{ConnStatus, Response};
use crate::service::ServiceRt;
use crate::worker::{copy_rows, ConnRow, WorkerHandle, WorkerMsg, LIST_CHUNK_SLOTS};
use anyhow::{bail, Result};
use std::io::Write;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

/// How long a worker may take to answer a chunk request. A worker looks at its inbox every
/// loop iteration and is woken from its idle poll, so this only trips on a stuck worker.
const WORKER_ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// A template as `-L -c` shows it: client port 0, state NONE (as IPVS lists them).
pub fn template_status(rt: &ServiceRt, t: &Template, now_ms: u64) -> ConnStatus {
    ConnStatus {
        proto: rt.key.proto,
        expires_ms: t.expires_ms.saturating_sub(now_ms),
        state: "NONE".into(),
        client_addr: std::net::Ipv4Addr::from(t.key.cnet),
        client_port: 0,
        virtual_addr: t.vaddr,
        virtual_port: t.key.vport,
        dest_addr: t.dest.addr,
        dest_port: t.dest.port,
        template: true,
    }
}

/// Collects entries and writes them out a chunk at a time.
struct ChunkWriter<'a, W: Write> {
    w: &'a mut W,
    chunk: Vec<ConnStatus>,
    sent: u64,
}

impl<W: Write> ChunkWriter<'_, W> {
    fn push(&mut self, c: ConnStatus) -> Result<()> {
        self.chunk.push(c);
        if self.chunk.len() >= LIST_CHUNK_SLOTS {
            self.flush()?;
        }
        Ok(())
    }

    fn rows(&mut self, rows: &[ConnRow]) -> Result<()> {
        let now = crate::clock::now_ms();
        for r in rows {
            self.push(r.status(now))?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(LIST_CHUNK_SLOTS));
        self.sent += chunk.len() as u64;
        proto::write_message(self.w, &Response::Connections(chunk))
    }
}

/// Streams the whole listing to `w` and returns the number of entries sent. If a worker does
/// not answer, the stream ends with an `Error` instead of the end marker.
pub fn stream<W: Write>(
    w: &mut W,
    services: &[Arc<ServiceRt>],
    workers: &[&WorkerHandle],
    nat: &NatConns,
    parked: &ParkedConns,
) -> Result<u64> {
    let mut out = ChunkWriter {
        w,
        chunk: Vec::with_capacity(LIST_CHUNK_SLOTS),
        sent: 0,
    };
    match stream_sources(&mut out, services, workers, nat, parked) {
        Ok(()) => {
            out.flush()?;
            let entries = out.sent;
            proto::write_message(out.w, &Response::ConnectionsEnd { entries })?;
            Ok(entries)
        }
        Err(e) => {
            // What was already sent stays sent; the client sees the listing fail.
            let _ = out.flush();
            let _ = proto::write_message(out.w, &Response::Error(format!("{e:#}")));
            Err(e)
        }
    }
}

fn stream_sources<W: Write>(
    out: &mut ChunkWriter<'_, W>,
    services: &[Arc<ServiceRt>],
    workers: &[&WorkerHandle],
    nat: &NatConns,
    parked: &ParkedConns,
) -> Result<()> {
    // Templates: few per client group; each service's are collected under its lock in one
    // go, as the once-a-second template expiry walks them all under it too.
    for rt in services {
        let now = crate::clock::now_ms();
        let mut templates = Vec::with_capacity(rt.templates_len());
        rt.for_each_template(|t| templates.push(template_status(rt, t, now)));
        for t in templates {
            out.push(t)?;
        }
    }
    for_each_row(workers, nat, |rows| out.rows(rows))?;
    // Synced or restored entries no worker has taken yet: a backup director's table, as
    // `ipvsadm -L -c` on an IPVS backup lists the connections its sync daemon made.
    let mut entries = Vec::new();
    for i in 0..parked.shards() {
        entries.clear();
        parked.copy_shard(i, &mut entries);
        let now = crate::clock::now_ms();
        for (k, p) in &entries {
            out.push(ConnStatus {
                proto: Protocol::from_number(k.proto).unwrap_or(Protocol::Tcp),
                expires_ms: p.expires_ms.saturating_sub(now),
                state: p.state.name().to_string(),
                client_addr: Ipv4Addr::from(k.saddr),
                client_port: k.sport,
                virtual_addr: Ipv4Addr::from(k.daddr),
                virtual_port: k.dport,
                dest_addr: Ipv4Addr::from(p.dest_addr),
                dest_port: p.dest_port,
                template: false,
            })?;
        }
    }
    Ok(())
}

/// Every connection of the workers' tables and of the NAT shards, chunk by chunk (at
/// most `LIST_CHUNK_SLOTS` slots each), without stopping a worker or holding a shard's
/// lock longer than one chunk's copy: `-L -c`, bulk sync and the restart state file.
pub fn for_each_row(
    workers: &[&WorkerHandle],
    nat: &NatConns,
    mut f: impl FnMut(&[ConnRow]) -> Result<()>,
) -> Result<()> {
    for h in workers {
        worker_rows(h, &mut f)?;
    }
    let mut rows = Vec::with_capacity(LIST_CHUNK_SLOTS);
    for i in 0..nat.shards() {
        let mut from = Some(0);
        while let Some(fr) = from {
            rows.clear();
            // The shard is locked only while one chunk is copied.
            from = copy_rows(&nat.shard(i), fr, &mut rows);
            // Fast-path NAT entries: the expiry from the last frame either way, read
            // after the shard's lock is gone (map lookups).
            for r in rows.iter_mut() {
                r.fast_expiry();
            }
            f(&rows)?;
        }
    }
    Ok(())
}

/// One worker's table, chunk by chunk. The next chunk is asked for before the current one is
/// handled, so the worker copies while this thread formats.
fn worker_rows(h: &WorkerHandle, f: &mut impl FnMut(&[ConnRow]) -> Result<()>) -> Result<()> {
    let (tx, rx) = crossbeam::channel::bounded(1);
    let mut spare: Vec<ConnRow> = Vec::with_capacity(LIST_CHUNK_SLOTS);
    h.send(WorkerMsg::ListConns {
        from: 0,
        rows: Vec::with_capacity(LIST_CHUNK_SLOTS),
        reply: tx.clone(),
    });
    loop {
        let Ok((rows, next)) = rx.recv_timeout(WORKER_ANSWER_TIMEOUT) else {
            bail!(
                "the worker of queue {} did not hand over its connections within {} s",
                h.queue,
                WORKER_ANSWER_TIMEOUT.as_secs()
            );
        };
        if let Some(from) = next {
            h.send(WorkerMsg::ListConns {
                from,
                rows: std::mem::take(&mut spare),
                reply: tx.clone(),
            });
        }
        let mut rows = rows;
        for r in rows.iter_mut() {
            r.fast_expiry();
        }
        f(&rows)?;
        spare = rows;
        if next.is_none() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conn::{Conn, ConnState, ConnTable};
    use crate::dest::DestRt;
    use crate::model::{Forward, Protocol, ServiceKey};
    use crate::packet::FlowKey;
    use crate::service::{Persistence, NO_TEMPLATE};
    use crate::worker::mailbox;
    use std::io::BufReader;
    use std::os::unix::net::UnixStream;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

    fn svc() -> Arc<ServiceRt> {
        Arc::new(ServiceRt::new(
            ServiceKey {
                proto: Protocol::Udp,
                addr: "10.0.0.88".parse().unwrap(),
                port: 53,
            },
            crate::sched::by_name("rr").unwrap(),
        ))
    }

    /// `n` UDP entries from client addresses `base..`, as a worker or NAT shard holds them.
    fn fill(t: &mut ConnTable, base: u32, n: u32, svc: &Arc<ServiceRt>, d: &Arc<DestRt>) {
        for i in 0..n {
            let key = FlowKey {
                saddr: base + i,
                daddr: u32::from(svc.key.addr),
                sport: 40000,
                dport: 53,
                proto: 17,
            };
            let c = Conn::new(
                key,
                ConnState::Udp,
                u64::MAX,
                svc.clone(),
                d.clone(),
                NO_TEMPLATE,
            );
            t.insert(c).unwrap();
        }
    }

    /// A worker without rings: the same mailbox and answer as `Worker::run` uses, serving
    /// its own table from a thread, recording the largest chunk it handed out.
    fn fake_worker(
        q: u32,
        table: ConnTable,
        stop: Arc<AtomicBool>,
        biggest: Arc<AtomicUsize>,
    ) -> (WorkerHandle, std::thread::JoinHandle<()>) {
        let (h, mb) = mailbox(q, Default::default()).unwrap();
        let t = std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                for m in mb.take() {
                    let (tx, rx) = crossbeam::channel::bounded(1);
                    let WorkerMsg::ListConns { from, rows, reply } = m;
                    WorkerMsg::ListConns {
                        from,
                        rows,
                        reply: tx,
                    }
                    .answer(&table);
                    let chunk = rx.recv().unwrap();
                    biggest.fetch_max(chunk.0.len(), Relaxed);
                    let _ = reply.send(chunk);
                }
                std::thread::sleep(Duration::from_micros(50));
            }
        });
        (h, t)
    }

    #[test]
    fn a_listing_far_beyond_one_message_streams_completely_in_bounded_chunks() {
        let svc = svc();
        let d = Arc::new(DestRt::new(
            "10.0.0.9".parse().unwrap(),
            53,
            Forward::Route,
            1,
        ));
        // 2 workers x 40,000 DR entries + 40,000 NAT entries + 3 templates: some 26 MB of
        // JSON, where protocol 1 put everything in one message of at most 16 MiB (and so
        // failed with "control message longer than 16777216 bytes").
        const PER: u32 = 40_000;
        let stop = Arc::new(AtomicBool::new(false));
        let biggest = Arc::new(AtomicUsize::new(0));
        let (mut handles, mut threads) = (Vec::new(), Vec::new());
        for q in 0..2u32 {
            let mut t = ConnTable::with_capacity(PER as usize);
            fill(&mut t, 0x0a00_0000 + q * 0x10_0000, PER, &svc, &d);
            let (h, th) = fake_worker(q, t, stop.clone(), biggest.clone());
            handles.push(h);
            threads.push(th);
        }
        let nat = Arc::new(NatConns::with_capacity(2 * PER as usize));
        for i in 0..PER {
            fill(&mut nat.shard(i as usize), 0x0b00_0000 + i, 1, &svc, &d);
        }
        svc.set_dests(vec![d.clone()], None);
        svc.set_persistence(
            Some(Persistence {
                timeout_ms: 300_000,
                netmask: u32::MAX,
            }),
            16,
        );
        for c in 0..3u32 {
            let f = FlowKey {
                saddr: 0x0c00_0000 + c,
                daddr: u32::from(svc.key.addr),
                sport: 1,
                dport: 53,
                proto: 17,
            };
            svc.schedule(&f, 0).unwrap();
        }
        let (mut a, b) = UnixStream::pair().unwrap();
        let writer = {
            let (svc, nat) = (svc.clone(), nat.clone());
            std::thread::spawn(move || {
                let hs: Vec<&WorkerHandle> = handles.iter().collect();
                // One synced entry no worker has taken yet (client 13.0.0.1).
                let parked = ParkedConns::with_capacity(64);
                let k = FlowKey {
                    saddr: 0x0d00_0001,
                    daddr: u32::from(svc.key.addr),
                    sport: 9,
                    dport: 53,
                    proto: 17,
                };
                let p = crate::conn::Parked {
                    dest_addr: 0x0a00_0009,
                    dest_port: 53,
                    forward: Forward::Route,
                    state: ConnState::Udp,
                    expires_ms: u64::MAX,
                    client: crate::conn::ClientSide::UNKNOWN,
                };
                parked.put(k, p).unwrap();
                stream(&mut a, &[svc], &hs, &nat, &parked).unwrap()
            })
        };
        // Count what the client would read; every message passes read_message's size limit.
        struct Counting<R> {
            inner: R,
            bytes: u64,
        }
        impl<R: std::io::Read> std::io::Read for Counting<R> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.inner.read(buf)?;
                self.bytes += n as u64;
                Ok(n)
            }
        }
        let mut r = BufReader::new(Counting { inner: b, bytes: 0 });
        let (mut n, mut chunks, mut templates, mut last_client) = (0u64, 0, 0, Vec::new());
        let end = proto::read_stream(&mut r, &mut |c| {
            assert!(c.len() <= LIST_CHUNK_SLOTS);
            chunks += 1;
            n += c.len() as u64;
            templates += c.iter().filter(|e| e.template).count();
            last_client.extend(c.iter().map(|e| u32::from(e.client_addr) >> 20));
            Ok(())
        })
        .unwrap();
        let total = 3 * PER as u64 + 3 + 1;
        assert_eq!(end, Response::ConnectionsEnd { entries: total });
        assert_eq!(n, total);
        assert_eq!(writer.join().unwrap(), total);
        assert_eq!(templates, 3);
        assert!(chunks >= total as usize / LIST_CHUNK_SLOTS);
        let bytes = r.get_ref().bytes;
        assert!(
            bytes > proto::MAX_MESSAGE_BYTES as u64,
            "{bytes} bytes: the test must exceed what one message could carry"
        );
        // Sources in order: templates, worker 0, worker 1, NAT, parked; each entry once.
        last_client.dedup();
        assert_eq!(last_client, vec![0x0c0, 0x0a0, 0x0a1, 0x0b0, 0x0d0]);
        // No worker ever copied more than one chunk's worth between two batches.
        assert!(biggest.load(Relaxed) <= LIST_CHUNK_SLOTS);
        assert!(biggest.load(Relaxed) > 0);
        stop.store(true, Relaxed);
        for t in threads {
            t.join().unwrap();
        }
    }
}
