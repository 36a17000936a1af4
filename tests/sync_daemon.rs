//! The sync daemons over real sockets: two network namespaces of this test's own (prefix
//! `xsd`), joined by a veth pair, a `SyncManager` in each with Vec-backed hooks. Multicast,
//! unicast peers, the syncid filter, raw datagrams (malformed, a v0 golden), bulk sync over
//! TCP and prompt stops. Needs root; the namespaces are deleted in `Drop`, also on failure.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use xvs::sync::daemon::{BulkState, Role, SyncDaemonConfig, SyncManager};
use xvs::sync::wire::{self, SyncConn, IPPROTO_TCP, IP_VS_CONN_F_DROUTE};
use xvs::sync::{SyncCounters, SyncHooks};

const A_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 1);
const B_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 77, 2);

fn sh(args: &[&str]) {
    let o = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        o.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Two namespaces `xsd<pid><tag>a` / `...b`, veth `xsda`/`xsdb` (both called so inside
/// their namespace), 192.168.77.1 and .2.
struct Pair {
    a: String,
    b: String,
}

impl Pair {
    fn up(tag: &str) -> Pair {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "sync_daemon tests need root");
        let base = format!("xsd{}{tag}", std::process::id());
        let p = Pair {
            a: format!("{base}a"),
            b: format!("{base}b"),
        };
        let _ = Command::new("ip").args(["netns", "del", &p.a]).output();
        let _ = Command::new("ip").args(["netns", "del", &p.b]).output();
        sh(&["ip", "netns", "add", &p.a]);
        sh(&["ip", "netns", "add", &p.b]);
        let (va, vb) = (format!("{base}x"), format!("{base}y"));
        sh(&[
            "ip", "link", "add", &va, "netns", &p.a, "type", "veth", "peer", "name", &vb, "netns",
            &p.b,
        ]);
        for (ns, v, ip) in [
            (&p.a, &va, "192.168.77.1/24"),
            (&p.b, &vb, "192.168.77.2/24"),
        ] {
            sh(&["ip", "-n", ns, "link", "set", v, "name", "xsd0"]);
            sh(&["ip", "-n", ns, "addr", "add", ip, "dev", "xsd0"]);
            sh(&["ip", "-n", ns, "link", "set", "xsd0", "up"]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        p
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.a]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.b]).output();
    }
}

/// Runs `f` on a thread inside namespace `ns`; threads it spawns (the sync daemons) stay in
/// that namespace.
fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let fd = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
            // SAFETY: setns on a namespace fd changes only this thread's namespace.
            assert_eq!(
                unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) },
                0,
                "setns {ns}"
            );
            f()
        })
        .join()
        .unwrap()
    })
}

/// Test hooks: `queue` is what the workers would have queued, `table` what a dump returns,
/// `applied` what arrived.
#[derive(Default)]
struct VecHooks {
    queue: Mutex<Vec<SyncConn>>,
    table: Vec<SyncConn>,
    applied: Mutex<Vec<SyncConn>>,
    counters: SyncCounters,
}

impl SyncHooks for VecHooks {
    fn drain(&self, out: &mut Vec<SyncConn>) {
        out.append(&mut self.queue.lock().unwrap());
    }
    fn apply(&self, conns: &[SyncConn]) {
        SyncCounters::add(&self.counters.applied, conns.len() as u64);
        self.applied.lock().unwrap().extend_from_slice(conns);
    }
    fn dump(&self, each: &mut dyn FnMut(&[SyncConn])) {
        for chunk in self.table.chunks(100) {
            each(chunk);
        }
    }
    fn counters(&self) -> &SyncCounters {
        &self.counters
    }
}

fn conn(i: u32) -> SyncConn {
    SyncConn {
        protocol: IPPROTO_TCP,
        flags: IP_VS_CONN_F_DROUTE,
        state: 1,
        cport: (1024 + i % 60000) as u16,
        vport: 80,
        dport: 80,
        timeout_s: 900,
        caddr: Ipv4Addr::from(0x0a01_0000 + i),
        vaddr: Ipv4Addr::new(10, 0, 0, 88),
        daddr: Ipv4Addr::new(10, 0, 0, 9),
        ..SyncConn::default()
    }
}

fn cfg(role: Role, syncid: u8, port: u16) -> SyncDaemonConfig {
    SyncDaemonConfig {
        syncid,
        mcast_port: port,
        ..SyncDaemonConfig::new(role, "xsd0")
    }
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}

fn start(ns: &str, m: &SyncManager, c: SyncDaemonConfig) {
    in_ns(ns, || m.start(c)).unwrap();
}

#[test]
fn master_to_backup_over_multicast_with_the_syncid_filter() {
    let p = Pair::up("m");
    let mh = Arc::new(VecHooks::default());
    let bh = Arc::new(VecHooks::default());
    let master = SyncManager::new(mh.clone());
    let backup = SyncManager::new(bh.clone());
    start(&p.b, &backup, cfg(Role::Backup, 9, 18848));
    start(&p.a, &master, cfg(Role::Master, 9, 18848));

    // 100 entries: two full datagrams of 40 and a partial one the flush rule sends.
    let sent: Vec<_> = (0..100).map(conn).collect();
    mh.queue.lock().unwrap().extend(sent.iter().cloned());
    wait_for("100 entries applied", Duration::from_secs(5), || {
        bh.applied.lock().unwrap().len() >= 100
    });
    assert_eq!(*bh.applied.lock().unwrap(), sent);
    // The master counts a datagram after its send returns, which may be after the backup
    // has it.
    wait_for("3 datagrams counted", Duration::from_secs(1), || {
        mh.counters.sent_msgs.load(Relaxed) >= 3
    });
    assert_eq!(mh.counters.sent_msgs.load(Relaxed), 3);
    assert_eq!(mh.counters.sent_conns.load(Relaxed), 100);
    assert_eq!(bh.counters.recv_msgs.load(Relaxed), 3);
    assert_eq!(bh.counters.recv_conns.load(Relaxed), 100);

    // One lone entry goes out by the 100 ms flush rule, well before IPVS's 2 s.
    let t = Instant::now();
    mh.queue.lock().unwrap().push(conn(500));
    wait_for("the lone entry", Duration::from_secs(2), || {
        bh.applied.lock().unwrap().len() == 101
    });
    assert!(
        t.elapsed() < Duration::from_millis(1000),
        "{:?}",
        t.elapsed()
    );

    // The kernel's answers for a role that already runs; the status as the kernel settles it.
    assert_eq!(
        in_ns(&p.a, || master.start(cfg(Role::Master, 1, 18848))).unwrap_err(),
        "Daemon has already run"
    );
    let st = master.status();
    assert_eq!(st.len(), 1);
    assert_eq!(
        (st[0].sync_maxlen, st[0].mcast_group, st[0].mcast_ttl),
        (1472, Ipv4Addr::new(224, 0, 0, 81), 1)
    );

    // Another sync group: counted as foreign, not applied.
    master.stop(Role::Master).unwrap();
    start(&p.a, &master, cfg(Role::Master, 10, 18848));
    mh.queue.lock().unwrap().push(conn(600));
    wait_for("the foreign datagram", Duration::from_secs(2), || {
        bh.counters.recv_foreign.load(Relaxed) == 1
    });
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(bh.applied.lock().unwrap().len(), 101);
}

#[test]
fn raw_datagrams_malformed_v0_and_unicast() {
    let p = Pair::up("r");
    let bh = Arc::new(VecHooks::default());
    let backup = SyncManager::new(bh.clone());
    // With a peer the backup also takes unicast datagrams.
    let mut c = cfg(Role::Backup, 5, 18849);
    c.peers = vec![A_IP];
    start(&p.b, &backup, c);

    let v0_golden: Vec<u8> = vec![
        0x01, 0x05, 0x00, 0x1c, // nr_conns 1, syncid 5, size 28
        0x00, 0x06, 0x9c, 0x40, 0x00, 0x50, 0x00, 0x50, // reserved, TCP, cport, vport, dport
        192, 0, 2, 1, 10, 0, 0, 1, 10, 0, 1, 10, // caddr, vaddr, daddr
        0x00, 0x03, 0x00, 0x01, // flags DROUTE, ESTABLISHED
    ];
    let v1 = wire::encode(5, 1472, &[conn(1)]).unwrap().remove(0);
    let counters = &bh.counters;
    in_ns(&p.a, || {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        s.set_multicast_if_v4(&A_IP).unwrap();
        s.bind(&SocketAddrV4::new(A_IP, 0).into()).unwrap();
        let s: UdpSocket = s.into();
        let group = SocketAddrV4::new(Ipv4Addr::new(224, 0, 0, 81), 18849);
        // Malformed: the header's size says more than was sent.
        let mut bad = v1.clone();
        bad.truncate(20);
        s.send_to(&bad, group).unwrap();
        s.send_to(&v0_golden, group).unwrap();
        // Unicast, straight to the backup's address.
        s.send_to(&v1, SocketAddrV4::new(B_IP, 18849)).unwrap();
    });
    wait_for("three datagrams", Duration::from_secs(3), || {
        counters.recv_msgs.load(Relaxed) == 3
    });
    assert_eq!(counters.recv_malformed.load(Relaxed), 1);
    let got = bh.applied.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "{got:?}");
    let v0 = &got[0];
    assert_eq!(
        (v0.caddr, v0.cport, v0.daddr, v0.flags, v0.timeout_s),
        (
            Ipv4Addr::new(192, 0, 2, 1),
            40000,
            Ipv4Addr::new(10, 0, 1, 10),
            IP_VS_CONN_F_DROUTE,
            0
        )
    );
    assert_eq!(got[1], conn(1));
}

#[test]
fn a_master_with_a_peer_reaches_a_backup_on_another_group_by_unicast() {
    let p = Pair::up("u");
    let mh = Arc::new(VecHooks::default());
    let bh = Arc::new(VecHooks::default());
    let master = SyncManager::new(mh.clone());
    let backup = SyncManager::new(bh.clone());
    // Different groups: only the unicast copy can arrive.
    let mut b = cfg(Role::Backup, 0, 18850);
    b.mcast_group = Some(Ipv4Addr::new(239, 2, 2, 2));
    b.peers = vec![A_IP];
    start(&p.b, &backup, b);
    let mut m = cfg(Role::Master, 3, 18850);
    m.mcast_group = Some(Ipv4Addr::new(239, 1, 1, 1));
    m.peers = vec![B_IP];
    start(&p.a, &master, m);
    mh.queue.lock().unwrap().extend((0..3).map(conn));
    wait_for("unicast entries", Duration::from_secs(3), || {
        bh.applied.lock().unwrap().len() == 3
    });
    // One datagram, sent twice: to the group and to the peer.
    wait_for("2 sends counted", Duration::from_secs(1), || {
        mh.counters.sent_msgs.load(Relaxed) >= 2
    });
    assert_eq!(mh.counters.sent_msgs.load(Relaxed), 2);
    assert_eq!(bh.counters.recv_msgs.load(Relaxed), 1);
}

#[test]
fn bulk_sync_at_backup_start_and_an_unreachable_peer() {
    let p = Pair::up("b");
    let table: Vec<_> = (0..600).map(conn).collect();
    let mh = Arc::new(VecHooks {
        table: table.clone(),
        ..VecHooks::default()
    });
    let bh = Arc::new(VecHooks::default());
    let master = SyncManager::new(mh.clone());
    let backup = SyncManager::new(bh.clone());
    start(&p.a, &master, cfg(Role::Master, 4, 18851));
    let mut b = cfg(Role::Backup, 4, 18851);
    b.bulk_peer = Some(A_IP);
    start(&p.b, &backup, b);
    wait_for("bulk sync", Duration::from_secs(5), || {
        backup.status()[0].bulk != BulkState::Running
    });
    assert_eq!(backup.status()[0].bulk, BulkState::Done(600));
    assert_eq!(*bh.applied.lock().unwrap(), table);
    assert_eq!(bh.counters.bulk_conns.load(Relaxed), 600);
    assert_eq!(bh.counters.recv_msgs.load(Relaxed), 0);
    // Live sync still works after it.
    mh.queue.lock().unwrap().push(conn(7000));
    wait_for("a live entry", Duration::from_secs(2), || {
        bh.applied.lock().unwrap().len() == 601
    });

    // No bulk listener on that port (nothing runs on 18852 in a): refused, logged, and the
    // backup runs on.
    backup.stop(Role::Backup).unwrap();
    let mut b = cfg(Role::Backup, 4, 18852);
    b.bulk_peer = Some(A_IP);
    start(&p.b, &backup, b);
    wait_for("bulk failure", Duration::from_secs(5), || {
        backup.status()[0].bulk != BulkState::Running
    });
    let st = backup.status();
    assert!(
        matches!(&st[0].bulk, BulkState::Failed(e) if e.contains("Connection refused")),
        "{st:?}"
    );
}

#[test]
fn stop_is_prompt_and_frees_the_port() {
    let p = Pair::up("s");
    let h = Arc::new(VecHooks::default());
    let m = SyncManager::new(h.clone());
    start(&p.b, &m, cfg(Role::Backup, 0, 18853));
    start(&p.b, &m, cfg(Role::Master, 0, 18853));
    assert_eq!(m.status().len(), 2);
    for role in [Role::Backup, Role::Master] {
        let t = Instant::now();
        m.stop(role).unwrap();
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
    }
    assert!(m.status().is_empty());
    assert_eq!(m.stop(Role::Master).unwrap_err(), "No daemon is running");
    // Sockets closed: the same daemon starts again.
    start(&p.b, &m, cfg(Role::Backup, 0, 18853));
    assert_eq!(
        in_ns(&p.b, || m
            .start(SyncDaemonConfig::new(Role::Backup, "nosuch0")))
        .unwrap_err(),
        "No such device"
    );
}
