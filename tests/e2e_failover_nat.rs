//! A NAT director pair with the real keepalived: two two-armed directors
//! (`harness.sh up --topology nat2 --pair`), each running `xvsd --interface eth0 --interface
//! eth1 --config` and `keepalived -P` on the same keepalived.conf: two vrrp_instances, one on
//! eth0 for the VIP 10.0.0.88 and one on eth1 for the real servers' gateway 192.168.80.1, in
//! one `vrrp_sync_group` so that they move together, and a NAT virtual_server for VIP:9000.
//! Three NAT real servers (default route via 192.168.80.1) run `stream.py server`; 20
//! long-lived TCP flows from the client have every byte checked. The master is crashed
//! (both links down, SIGKILL to xvsd and keepalived) mid-stream:
//!
//! - `nat_no_sync_breaks_flows`: without connection sync both addresses move and new
//!   connections work through the backup, but the flows in progress break: what makes the
//!   other tests real.
//! - `nat_failover_keeps_talking_flows`: with the sync daemons every flow completes intact
//!   when its client keeps sending (a byte every 200 ms).
//! - `nat_failback_keeps_talking_flows`: the crashed master returns, stays FAULT
//!   (`track_file` on xvsd's `--ready-file`) until its bulk sync from the new master is
//!   done, then preempts; again every such flow completes intact.
//! - `nat_failover_keeps_flows`, `nat_failback_keeps_flows`: the same with downloads (the
//!   client sends nothing after its request), where the first packet the new master sees
//!   of a flow is the real server's retransmission.
//!
//! Each test prints what it measured (`MEASURED` lines: time until both addresses moved, the
//! longest gap a client saw, segments the real servers retransmitted); docs/ha.md quotes
//! them. Sync runs on eth1, the real servers' side (see `SYNC_BOTH`).

mod common;
use common::director::Director;
use common::flows::{FlowStatus, StreamReport, StreamSpec, Streams, STREAM_PORT};
use common::*;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One test at a time: each moves addresses with real VRRP timers and measures gaps, which
/// two labs at once on two cores would distort.
static SERIAL: Mutex<()> = Mutex::new(());

/// The real servers' default gateway, a VRRP address of the internal instance.
const GW: &str = "192.168.80.1";
/// b's own address on the real servers' side: the returning a's `--bulk-peer` (a's is
/// 192.168.80.2).
const B_INT: &str = "192.168.80.3";
const NAT_RS: [&str; 3] = ["192.168.80.10", "192.168.80.11", "192.168.80.12"];
const FLOWS: u32 = 20;
/// Bytes per second per flow; with NAT both directions cross the director (1 MB/s of data
/// and the ACKs), still light for a debug build on a shared 2-core VM.
const RATE: u64 = 50_000;
/// Seconds each long flow lasts when nothing goes wrong; spans a crash failover (3-4 s of
/// VRRP timers plus the real servers' retransmission backoff).
const FLOW_SECS: u64 = 14;
const FLOW_TIMEOUT: Duration = Duration::from_secs(FLOW_SECS + 24);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// keepalived.conf of one director: the sync group VG_1 of VI_EXT (eth0, VRID 51, the VIP)
/// and VI_INT (eth1, VRID 52, the gateway), PASS auth, advert_int 1, `state`/`priority` per
/// node; a NAT virtual_server for VIP:9000 that xvsd serves. `ready`: xvsd's
/// `--ready-file`, tracked by both instances with weight 0 (non-zero = FAULT; a FAULT
/// instance takes its whole sync group to FAULT) and created as "1" when missing.
fn keepalived_conf(state: &str, priority: u32, ready: Option<&Path>) -> String {
    let (track_def, track_use) = match ready {
        Some(p) => (
            format!(
                "track_file xvs_ready {{\n    file \"{}\"\n    weight 0\n    init_file 1\n}}\n\n",
                p.display()
            ),
            "    track_file {\n        xvs_ready\n    }\n".to_string(),
        ),
        None => (String::new(), String::new()),
    };
    let instance = |name: &str, dev: &str, vrid: u32, addr: &str| {
        format!(
            "vrrp_instance {name} {{
    state {state}
    interface {dev}
    virtual_router_id {vrid}
    priority {priority}
    advert_int 1
    authentication {{
        auth_type PASS
        auth_pass 1111
    }}
    virtual_ipaddress {{
        {addr}
    }}
{track_use}}}

"
        )
    };
    let mut rs = String::new();
    for ip in NAT_RS {
        rs += &format!(
            "    real_server {ip} {STREAM_PORT} {{\n        weight 1\n        TCP_CHECK {{\n            \
             connect_timeout 3\n            connect_port {STREAM_PORT}\n        }}\n    }}\n"
        );
    }
    format!(
        "{track_def}vrrp_sync_group VG_1 {{
    group {{
        VI_EXT
        VI_INT
    }}
}}

{}{}virtual_server {VIP} {STREAM_PORT} {{
    delay_loop 2
    lb_algo rr
    lb_kind NAT
    persistence_timeout 0
    protocol TCP

{rs}}}
",
        instance("VI_EXT", "eth0", 51, VIP),
        instance("VI_INT", "eth1", 52, GW),
    )
}

/// Both VRRP addresses on `d`: the VIP on eth0, the gateway on eth1.
fn holds_both(d: &Director) -> bool {
    d.holds_on(VIP, "eth0") && d.holds_on(GW, "eth1")
}

/// Neither VRRP address on `d`.
fn holds_none(d: &Director) -> bool {
    !d.holds_on(VIP, "eth0") && !d.holds_on(GW, "eth1")
}

/// Both instances of the sync group entered `state` on `d`.
fn group_entered(d: &Director, state: &str) -> bool {
    d.vrrp_entered("VI_EXT", state) && d.vrrp_entered("VI_INT", state)
}

/// The directors and the lab; fields drop in order, so both directors' processes are gone
/// before the harness deletes the namespaces.
struct Pair {
    a: Director,
    b: Director,
    lab: Lab,
}

impl Pair {
    fn up(prefix: &str) -> Pair {
        let lab = Lab::up_with(prefix, "nat2", 3, 1, &["--pair"]);
        Pair {
            a: Director::new(&lab.ns("dir"), &format!("{prefix}-a")),
            b: Director::new(&lab.ns("dir2"), &format!("{prefix}-b")),
            lab,
        }
    }

    fn file(&self, name: &str) -> PathBuf {
        PathBuf::from(format!("/tmp/xvs-test-{}-{name}", self.lab.prefix))
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.file(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// a MASTER (150), b BACKUP (100), each xvsd with `extra_a`/`extra_b`; waits until a
    /// holds both addresses and both of b's instances are BACKUP.
    fn start(&mut self, extra_a: &[&str], extra_b: &[&str]) {
        let ca = self.write("a.conf", &keepalived_conf("MASTER", 150, None));
        let cb = self.write("b.conf", &keepalived_conf("BACKUP", 100, None));
        start_xvsd(&mut self.a, &ca, extra_a);
        start_xvsd(&mut self.b, &cb, extra_b);
        self.a.start_keepalived(&ca);
        self.b.start_keepalived(&cb);
        let (a, b) = (&self.a, &self.b);
        poll(
            "a to become VRRP master of both instances",
            secs(15),
            || {
                if holds_both(a) && group_entered(a, "MASTER") && group_entered(b, "BACKUP") {
                    Ok(())
                } else {
                    Err(format!(
                        "a holds VIP {} GW {}; a log:\n{}\nb log:\n{}",
                        a.holds_on(VIP, "eth0"),
                        a.holds_on(GW, "eth1"),
                        a.keepalived_log(),
                        b.keepalived_log()
                    ))
                }
            },
        );
        assert!(holds_none(b), "the backup holds a VRRP address too");
    }

    fn client_ns(&self) -> String {
        self.lab.ns("client")
    }

    /// 20 long flows from the client's five addresses through the VIP; returns once every
    /// flow has data.
    fn flows(&self, first_id: u64) -> Streams {
        self.flows_heartbeat(first_id, None)
    }

    /// `flows` whose clients also send a byte every `heartbeat` (stream.py `--heartbeat`).
    fn flows_heartbeat(&self, first_id: u64, heartbeat: Option<Duration>) -> Streams {
        let ns = self.client_ns();
        let spec = StreamSpec {
            client_ns: &ns,
            addr: VIP,
            port: STREAM_PORT,
            flows: FLOWS,
            bytes: RATE * FLOW_SECS,
            rate: RATE,
            timeout: FLOW_TIMEOUT,
            src_ips: &[
                "10.0.0.100",
                "10.0.0.101",
                "10.0.0.102",
                "10.0.0.103",
                "10.0.0.104",
            ],
            first_id,
        };
        let mut s = Streams::spawn_heartbeat(&spec, heartbeat);
        let n = s.wait_flowing(secs(15));
        assert_eq!(n, FLOWS, "not every flow got data before the failure");
        s
    }

    /// TCP segments retransmitted by the real servers so far.
    fn rs_retrans(&self) -> u64 {
        (1..=3)
            .map(|k| {
                let o = self
                    .lab
                    .exec(&format!("rs{k}"), &["nstat", "-asz", "TcpRetransSegs"]);
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .find_map(|l| {
                        let mut it = l.split_whitespace();
                        (it.next()? == "TcpRetransSegs").then_some(())?;
                        it.next()?.parse::<u64>().ok()
                    })
                    .unwrap_or_else(|| panic!("rs{k}: no TcpRetransSegs in nstat's output"))
            })
            .sum()
    }

    /// New connections through whoever holds the addresses now: a few short flows, intact.
    fn new_connections_work(&self, first_id: u64) {
        let ns = self.client_ns();
        let s = Streams::spawn(&StreamSpec {
            client_ns: &ns,
            addr: VIP,
            port: STREAM_PORT,
            flows: 6,
            bytes: 20_000,
            rate: 100_000,
            timeout: secs(10),
            src_ips: &["10.0.0.103", "10.0.0.104"],
            first_id,
        });
        let r = s.finish();
        assert!(
            r.all_ok(),
            "new connections after the failover: {}",
            r.describe()
        );
    }

    /// The MAC the real servers send to for their gateway (rs1's neighbour entry).
    fn rs_gateway_mac(&self) -> String {
        let o = self.lab.exec("rs1", &["ip", "-4", "neigh", "show", GW]);
        let s = String::from_utf8_lossy(&o.stdout).into_owned();
        s.split_whitespace()
            .skip_while(|w| *w != "lladdr")
            .nth(1)
            .unwrap_or("")
            .to_string()
    }
}

/// xvsd on both arms serving `conf`'s virtual_server, plus `extra`; waits until the service
/// lists its three real servers (masquerading).
fn start_xvsd(d: &mut Director, conf: &Path, extra: &[&str]) {
    let mut args = vec![
        "--interface",
        "eth0",
        "--interface",
        "eth1",
        "--config",
        conf.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    d.start_xvsd(&args);
    let svc = format!("{VIP}:{STREAM_PORT}");
    poll(
        "xvsd to serve VIP:9000 with 3 NAT real servers",
        secs(15),
        || {
            let l = d.adm_ok(&["-L", "-n"]);
            let n = l
                .lines()
                .filter(|l| {
                    l.trim_start().starts_with("->")
                        && l.contains(&format!(":{STREAM_PORT}"))
                        && l.contains("Masq")
                })
                .count();
            if l.contains(&svc) && n == 3 {
                Ok(())
            } else {
                Err(l)
            }
        },
    );
}

/// Established connections to VIP:9000 in `-L -c -n` (on a backup: the synced ones).
fn established(d: &Director) -> usize {
    let svc = format!("{VIP}:{STREAM_PORT}");
    d.adm(&["-L", "-c", "-n"])
        .stdout
        .split(|&b| b == b'\n')
        .map(String::from_utf8_lossy)
        .filter(|l| l.contains("ESTABLISHED") && l.contains(&svc))
        .count()
}

fn assert_mid_stream(streams: &Streams, what: &str) {
    let left = secs(FLOW_SECS).saturating_sub(streams.elapsed());
    assert!(
        left >= secs(4),
        "{what} came {:?} into {FLOW_SECS} s flows: too late to test anything",
        streams.elapsed()
    );
}

/// Data-path counter `name` of a director, summed over workers; 0 if absent.
fn counter(d: &Director, name: &str) -> u64 {
    let dp = String::from_utf8_lossy(&d.adm(&["--datapath"]).stdout).into_owned();
    counter_in(
        &dp.lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                let (k, v) = (it.next()?, it.next()?);
                Some((k.trim_end_matches(':').to_string(), v.parse().ok()?))
            })
            .collect::<Vec<_>>(),
        name,
    )
}

/// A director's sync daemons and non-zero sync counters, for messages.
fn sync_state(d: &Director) -> String {
    let daemons = String::from_utf8_lossy(&d.adm(&["-L", "--daemon"]).stdout).into_owned();
    let dp = String::from_utf8_lossy(&d.adm(&["--datapath"]).stdout).into_owned();
    let counters: Vec<&str> = dp
        .lines()
        .map(str::trim)
        .filter(|l| {
            (l.starts_with("sync_") || l.starts_with("imported") || l.starts_with("no_service"))
                && !l.ends_with(" 0")
        })
        .collect();
    format!(
        "{}; {}",
        daemons.trim().replace('\n', "; "),
        counters.join(", ")
    )
}

/// Polls every 20 ms (at most `timeout`) until `d` holds both addresses; the time it took.
fn time_until_holds_both(d: &Director, timeout: Duration) -> Duration {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if holds_both(d) {
            return t0.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "{} did not get both addresses within {timeout:?}; keepalived:\n{}",
        d.ns,
        d.keepalived_log()
    );
}

fn print_measured(what: &str, moved: Duration, r: &StreamReport, retrans: u64) {
    println!(
        "MEASURED {what}: VIP and gateway moved after {:.2} s; longest gap seen by a client \
         {:.0} ms; real servers retransmitted {retrans} segments; {}",
        moved.as_secs_f64(),
        r.max_gap_ms(),
        r.describe()
    );
}

/// Both sync daemons on a director, on eth1: the real servers' side. Sync messages are
/// unauthenticated (IPVS has no authentication either), so they stay off the segment the
/// clients are on, where anyone could inject connection entries; eth1 is also the arm
/// whose loss makes a NAT director useless anyway (its real servers are there).
const SYNC_BOTH: [&str; 4] = [
    "--sync-daemon",
    "master --mcast-interface eth1 --syncid 51",
    "--sync-daemon",
    "backup --mcast-interface eth1 --syncid 51",
];

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn nat_no_sync_breaks_flows() {
    let _g = serial();
    let mut p = Pair::up("xfn-n");
    p.start(&[], &[]);
    let streams = p.flows(1);
    std::thread::sleep(secs(2));
    let retrans0 = p.rs_retrans();
    assert_mid_stream(&streams, "the crash");
    p.a.crash();
    let moved = time_until_holds_both(&p.b, secs(15));
    p.new_connections_work(1001);
    let r = streams.finish();
    print_measured("NAT without sync", moved, &r, p.rs_retrans() - retrans0);
    let broken = r.broken().len();
    assert_eq!(r.flows.len(), FLOWS as usize, "{}", r.describe());
    assert!(
        broken >= (FLOWS as usize) * 3 / 4,
        "without sync most flows must break, {broken} did: {}",
        r.describe()
    );
    assert_eq!(
        r.count(FlowStatus::Corrupt),
        0,
        "a flow got wrong data: {}",
        r.describe()
    );
}

/// A crash failover with the sync daemons on both nodes and 20 flows in progress
/// (`heartbeat`: their clients also send a byte that often); asserts that both addresses
/// moved, the real servers' gateway MAC with them, and that every flow survived.
fn failover_with_sync(prefix: &str, heartbeat: Option<Duration>, what: &str) {
    let mut p = Pair::up(prefix);
    p.start(&SYNC_BOTH, &SYNC_BOTH);
    let streams = p.flows_heartbeat(1, heartbeat);
    // The replies have gone through the gateway by now: the real servers know its MAC.
    let mac_before = p.rs_gateway_mac();
    let (a, b) = (&p.a, &p.b);
    poll(
        "the backup to hold the 20 flows' synced entries",
        secs(15),
        || {
            let (n, listed) = (counter(b, "sync_applied"), established(b));
            if n >= FLOWS as u64 && listed >= FLOWS as usize {
                Ok(())
            } else {
                Err(format!(
                    "{n} applied, {listed} listed by -L -c -n\nmaster a: {}\nbackup b: {}",
                    sync_state(a),
                    sync_state(b)
                ))
            }
        },
    );
    println!("backup before the crash: {}", sync_state(b));
    std::thread::sleep(secs(1));
    let retrans0 = p.rs_retrans();
    assert_mid_stream(&streams, "the crash");
    p.a.crash();
    let moved = time_until_holds_both(&p.b, secs(15));
    p.new_connections_work(1001);
    let r = streams.finish();
    print_measured(what, moved, &r, p.rs_retrans() - retrans0);
    println!("backup after failover: {}", sync_state(&p.b));
    // The real servers now send to b's eth1: keepalived's gratuitous ARP for the gateway
    // updated their neighbour entry (the MACs are the harness's, from each eth1 address).
    assert_eq!(mac_before, "02:00:c0:a8:50:02", "before: a's eth1");
    assert_eq!(p.rs_gateway_mac(), "02:00:c0:a8:50:03", "after: b's eth1");
    assert!(
        r.all_ok(),
        "every flow must survive the failover: {}",
        r.describe()
    );
    assert_eq!(r.count(FlowStatus::Reset), 0);
}

/// Downloads: after the connection's request the client only acknowledges, so after a
/// failover the first packet of each flow to reach the backup is the real server's
/// retransmission (a reply), not a client segment. The backup finds the synced entry from
/// the reply (`nat_rs`), but must learn the client's next hop first: the first such reply
/// is dropped while the daemon looks it up, the next retransmission goes through
/// (docs/architecture.md, "Connection sync: the tables' side").
#[test]
fn nat_failover_keeps_flows() {
    let _g = serial();
    failover_with_sync("xfn-f", None, "NAT failover with sync");
}

/// Flows whose client also speaks (a byte every 200 ms, as an interactive protocol's
/// keep-alive): the client's own retransmission reaches the backup too.
#[test]
fn nat_failover_keeps_talking_flows() {
    let _g = serial();
    failover_with_sync(
        "xfn-t",
        Some(Duration::from_millis(200)),
        "NAT failover with sync, clients sending every 200 ms",
    );
}

/// The crashed master a returns while 20 flows (`heartbeat` as in `failover_with_sync`) run
/// through b: held in FAULT by the ready file until its bulk sync from b is done, then it
/// preempts; asserts that every flow survived.
fn failback_with_sync(prefix: &str, heartbeat: Option<Duration>, what: &str) {
    let mut p = Pair::up(prefix);
    p.start(&SYNC_BOTH, &SYNC_BOTH);
    p.a.crash();
    time_until_holds_both(&p.b, secs(15));
    p.new_connections_work(1001);

    // Flows through the new master, b.
    let streams = p.flows_heartbeat(101, heartbeat);
    let retrans0 = p.rs_retrans();

    // a comes back, keepalived first (the worst order): the tracked file is missing,
    // init_file makes it "1", so the whole sync group must go FAULT and leave both
    // addresses with b.
    p.a.reboot_without(&[(VIP, "eth0"), (GW, "eth1")]);
    let ready = p.file("a-ready");
    let _ = std::fs::remove_file(&ready);
    let ca = p.write("a2.conf", &keepalived_conf("MASTER", 150, Some(&ready)));
    p.a.start_keepalived(&ca);
    let a = &p.a;
    wait_for("the returning master to enter FAULT", secs(10), || {
        group_entered(a, "FAULT")
    });
    std::thread::sleep(secs(2));
    assert!(
        holds_none(&p.a) && holds_both(&p.b),
        "a took an address before it had the table; keepalived:\n{}",
        p.a.keepalived_log()
    );

    // xvsd: "1" at start, the backup daemon fetches b's table over eth1, then "0".
    let ready_s = ready.to_str().unwrap().to_string();
    let bulk = format!("backup --mcast-interface eth1 --syncid 51 --bulk-peer {B_INT}");
    let extra = [
        "--ready-file",
        &ready_s,
        "--sync-daemon",
        &bulk,
        "--sync-daemon",
        "master --mcast-interface eth1 --syncid 51",
    ];
    let t0 = Instant::now();
    start_xvsd(&mut p.a, &ca, &extra);
    time_until_holds_both(&p.a, secs(30));
    let took = t0.elapsed();
    assert_mid_stream(&streams, "the takeover");
    let file_now = std::fs::read_to_string(&ready).unwrap_or_default();
    assert_eq!(
        file_now.trim(),
        "0",
        "a took the addresses while its ready file said {file_now:?}"
    );
    let got = counter(&p.a, "sync_bulk_conns");
    assert!(
        got >= FLOWS as u64,
        "a became master with {got} entries from the bulk sync: {}",
        sync_state(&p.a)
    );
    println!(
        "returning master when it took the addresses: {}",
        sync_state(&p.a)
    );
    let b = &p.b;
    wait_for("b to give both addresses up", secs(10), || holds_none(b));
    let r = streams.finish();
    print_measured(what, took, &r, p.rs_retrans() - retrans0);
    println!("returning master after the flows: {}", sync_state(&p.a));
    assert!(
        r.all_ok(),
        "every flow must survive the failback: {}",
        r.describe()
    );
    assert_eq!(r.count(FlowStatus::Reset), 0);
    p.new_connections_work(2001);
}

/// Downloads, as `nat_failover_keeps_flows`: here the race is between the client's last ACK
/// through b and the first reply the real servers send to a after its gratuitous ARP.
#[test]
fn nat_failback_keeps_flows() {
    let _g = serial();
    failback_with_sync(
        "xfn-b",
        None,
        "NAT failback with sync (time from the returning xvsd's start)",
    );
}

#[test]
fn nat_failback_keeps_talking_flows() {
    let _g = serial();
    failback_with_sync(
        "xfn-bt",
        Some(Duration::from_millis(200)),
        "NAT failback with sync, clients sending every 200 ms (time from the returning \
         xvsd's start)",
    );
}
