//! The sync daemons through a real xvsd and xvsadm (the harness's DR lab, prefix `xsd`):
//! `--start-daemon`/`-L --daemon`/`--stop-daemon` with ipvsadm 1.31's output, errors and
//! exit codes; a datagram from another namespace reaching xvsd's backup; `--sync-daemon`
//! and `--ready-file` waiting for a bulk sync.

mod common;

use common::{counter_in, poll, wait_for, Lab};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};
use xvs::sync::wire::{self, SyncConn, IPPROTO_TCP, IP_VS_CONN_F_DROUTE};

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 100);

/// Runs `f` on a thread in the lab's namespace `ns`.
fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let fd = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
            // SAFETY: setns on a namespace fd changes only this thread's namespace.
            assert_eq!(
                unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) },
                0
            );
            f()
        })
        .join()
        .unwrap()
    })
}

fn conn() -> SyncConn {
    SyncConn {
        protocol: IPPROTO_TCP,
        flags: IP_VS_CONN_F_DROUTE,
        state: 1,
        cport: 40000,
        vport: 80,
        dport: 80,
        timeout_s: 900,
        caddr: CLIENT,
        vaddr: Ipv4Addr::new(10, 0, 0, 88),
        daddr: Ipv4Addr::new(10, 0, 0, 9),
        ..SyncConn::default()
    }
}

fn mtu(lab: &Lab) -> u32 {
    let o = lab.exec("dir", &["cat", "/sys/class/net/eth0/mtu"]);
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

#[test]
fn start_list_stop_through_xvsd_as_ipvsadm() {
    let mut lab = Lab::up("xsde2e", 1, 1);
    lab.start_xvsd(&[]);
    // Nothing runs: nothing printed.
    assert_eq!(lab.adm_ok(&["-L", "--daemon"]), "");
    lab.adm_ok(&[
        "--start-daemon",
        "backup",
        "--mcast-interface",
        "eth0",
        "--syncid",
        "7",
    ]);
    lab.adm_ok(&["--start-daemon", "master", "--mcast-interface", "eth0"]);
    let backup_maxlen = mtu(&lab).max(1500) - 28;
    assert_eq!(
        lab.adm_ok(&["-L", "--daemon"]),
        format!(
            "master sync daemon (mcast=eth0, syncid=0, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n\
             backup sync daemon (mcast=eth0, syncid=7, maxlen={backup_maxlen}, group=224.0.0.81, port=8848, ttl=1)\n"
        )
    );

    // The kernel's refusals, as ipvsadm prints them.
    let o = lab.adm(&["--start-daemon", "master", "--mcast-interface", "eth0"]);
    assert_eq!(o.status.code(), Some(255));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "Daemon has already run\n"
    );
    let o = lab.adm(&["--start-daemon", "master", "--mcast-interface", "nosuch0"]);
    assert_eq!(String::from_utf8_lossy(&o.stderr), "No such device\n");
    // A bad value changes nothing.
    let o = lab.adm(&["--start-daemon", "backup", "--mcast-ttl", "0"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "illegal mcast-ttl specified\n"
    );

    // A datagram of sync group 7 from the client's namespace reaches the backup.
    let d = wire::encode(7, 1472, &[conn()]).unwrap().remove(0);
    in_ns(&lab.ns("client"), || {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
        s.set_multicast_if_v4(&CLIENT).unwrap();
        s.bind(&SocketAddrV4::new(CLIENT, 0).into()).unwrap();
        let s: UdpSocket = s.into();
        s.send_to(&d, (Ipv4Addr::new(224, 0, 0, 81), 8848)).unwrap();
    });
    let dp = poll("the datagram counted", Duration::from_secs(3), || {
        let dp = lab.datapath();
        if counter_in(&dp, "sync_recv_msgs") == 1 {
            Ok(dp)
        } else {
            Err(format!("{dp:?}"))
        }
    });
    assert_eq!(counter_in(&dp, "sync_recv_conns"), 1);
    // Applied or refused by the tables, never lost between them.
    assert_eq!(
        counter_in(&dp, "sync_applied") + counter_in(&dp, "sync_refused"),
        1
    );

    lab.adm_ok(&["--stop-daemon", "master"]);
    let o = lab.adm(&["--stop-daemon", "master"]);
    assert_eq!(o.status.code(), Some(255));
    assert_eq!(String::from_utf8_lossy(&o.stderr), "No daemon is running\n");
    assert_eq!(
        lab.adm_ok(&["-L", "--daemon"]),
        format!(
            "backup sync daemon (mcast=eth0, syncid=7, maxlen={backup_maxlen}, group=224.0.0.81, port=8848, ttl=1)\n"
        )
    );
    assert!(lab.stop_xvsd());
}

#[test]
fn sync_daemon_option_and_ready_file_wait_for_the_bulk_sync() {
    let mut lab = Lab::up("xsdready", 1, 1);
    let ready = std::path::PathBuf::from("/tmp/xvs-test-xsdready.ready");
    let _ = std::fs::remove_file(&ready);
    // A bulk peer in the client namespace that takes its time: 1.5 s before the table.
    let table = wire::encode(0, 65507, &[conn()]).unwrap().remove(0);
    let client_ns = lab.ns("client");
    let listener = in_ns(&client_ns, || {
        TcpListener::bind(SocketAddrV4::new(CLIENT, 8848)).unwrap()
    });
    listener.set_nonblocking(true).unwrap();
    let server = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut s = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("no bulk request: {e}"),
            }
        };
        s.set_nonblocking(false).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut req = [0u8; 4];
        s.read_exact(&mut req).unwrap();
        assert_eq!(&req, b"XVSB");
        std::thread::sleep(Duration::from_millis(1500));
        s.write_all(&table).unwrap();
    });
    let ready_s = ready.to_str().unwrap();
    lab.start_xvsd(&[
        "--sync-daemon",
        "backup --mcast-interface eth0 --bulk-peer 10.0.0.100",
        "--ready-file",
        ready_s,
    ]);
    // Up and answering, but not ready while the table is on its way.
    assert_eq!(std::fs::read_to_string(&ready).unwrap(), "1\n");
    assert!(lab
        .adm_ok(&["-L", "--daemon"])
        .starts_with("backup sync daemon (mcast=eth0, syncid=0"));
    wait_for("readiness", Duration::from_secs(10), || {
        std::fs::read_to_string(&ready).is_ok_and(|s| s == "0\n")
    });
    server.join().unwrap();
    assert_eq!(lab.counter("sync_bulk_conns"), 1);
    // Not ready any more once xvsd is gone.
    assert!(lab.stop_xvsd());
    assert_eq!(std::fs::read_to_string(&ready).unwrap(), "1\n");
    let _ = std::fs::remove_file(&ready);
}
