//! An HA pair with the real keepalived: two directors (`harness.sh up --pair`) each running
//! xvsd --config and `keepalived -P` on the same keepalived.conf (the seeds' MASTER/BACKUP
//! instance, the VIP 10.0.0.88, a DR virtual_server on port 9000), three DR real servers
//! running `stream.py server`, and 20 long-lived TCP flows from the client whose every byte
//! is checked. The master is crashed (SIGKILL to xvsd and keepalived, link down) mid-stream:
//!
//! - `no_sync_breaks_flows`: without connection sync the backup takes the VIP and new
//!   connections work through it, but the flows in progress break (the backup has no entry
//!   for them and drops their segments): this is what makes the other two tests real.
//! - `mh_without_sync_keeps_flows`: the same without sync but with `lb_algo mh`: the
//!   backup schedules the flows' segments mid-flow with the master's table; all complete.
//! - `failover_keeps_flows`: with the sync daemons every flow completes intact.
//! - `failback_keeps_flows`: the crashed master returns, stays FAULT (keepalived's
//!   `track_file` on xvsd's `--ready-file`) until its bulk sync from the new master is done,
//!   then preempts; again every flow completes intact.
//!
//! Each test prints what it measured (time until the VIP moved, the longest gap the clients
//! saw, TCP segments the real servers retransmitted); docs/ha.md quotes them.

mod common;
use common::director::Director;
use common::flows::{FlowStatus, StreamReport, StreamSpec, Streams, STREAM_PORT};
use common::*;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The tests of this file run one at a time: each moves a VIP with real VRRP timers and
/// measures gaps, which two labs at once on two cores would distort.
static SERIAL: Mutex<()> = Mutex::new(());

const DIP2: &str = "10.0.0.13";
const FLOWS: u32 = 20;
/// Bytes per second per flow: 20 flows make 1 MB/s through the director's ACK path and
/// from the real servers, light enough for a debug build on a shared 2-core VM.
const RATE: u64 = 50_000;
/// Seconds each long flow lasts when nothing goes wrong; long enough to span a crash
/// failover (about 3-4 s of VRRP timers plus the real servers' retransmission backoff).
const FLOW_SECS: u64 = 14;
/// The whole client run's bound: a flow stalled for good ends as `timeout` here.
const FLOW_TIMEOUT: Duration = Duration::from_secs(FLOW_SECS + 24);

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// keepalived.conf of one director: the seeds' vrrp_instance (PASS auth, VRID 51,
/// advert_int 1; `state`/`priority` per node) with the lab's VIP, and a DR virtual_server
/// for VIP:9000 that xvsd serves. `ready`: the file xvsd's `--ready-file` writes, tracked
/// with weight 0 (non-zero = FAULT) and created as "1" when missing, so keepalived started
/// before xvsd waits for it too.
fn keepalived_conf(state: &str, priority: u32, ready: Option<&Path>) -> String {
    keepalived_conf_algo(state, priority, ready, "rr")
}

/// `keepalived_conf` with scheduler `algo` (`lb_algo`).
fn keepalived_conf_algo(state: &str, priority: u32, ready: Option<&Path>, algo: &str) -> String {
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
    let mut rs = String::new();
    for ip in RS_IPS {
        rs += &format!(
            "    real_server {ip} {STREAM_PORT} {{\n        weight 1\n        TCP_CHECK {{\n            \
             connect_timeout 3\n            connect_port {STREAM_PORT}\n        }}\n    }}\n"
        );
    }
    format!(
        "{track_def}vrrp_instance VI_1 {{
    state {state}
    interface eth0
    virtual_router_id 51
    priority {priority}
    advert_int 1
    authentication {{
        auth_type PASS
        auth_pass 1111
    }}
    virtual_ipaddress {{
        {VIP}
    }}
{track_use}}}

virtual_server {VIP} {STREAM_PORT} {{
    delay_loop 2
    lb_algo {algo}
    lb_kind DR
    persistence_timeout 0
    protocol TCP

{rs}}}
"
    )
}

/// The two directors and the lab; fields drop in order, so both directors' processes are
/// gone before the harness deletes the namespaces.
struct Pair {
    a: Director,
    b: Director,
    lab: Lab,
}

impl Pair {
    fn up(prefix: &str) -> Pair {
        let lab = Lab::up_with(prefix, "dr", 3, 1, &["--pair"]);
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

    /// Director a MASTER (150), b BACKUP (100), each xvsd with `extra_a`/`extra_b`; waits
    /// until a holds the VIP and b is BACKUP.
    fn start(&mut self, extra_a: &[&str], extra_b: &[&str]) {
        self.start_algo(extra_a, extra_b, "rr")
    }

    /// `start` with the virtual_server's `lb_algo` set to `algo`.
    fn start_algo(&mut self, extra_a: &[&str], extra_b: &[&str], algo: &str) {
        let ca = self.write("a.conf", &keepalived_conf_algo("MASTER", 150, None, algo));
        let cb = self.write("b.conf", &keepalived_conf_algo("BACKUP", 100, None, algo));
        start_xvsd(&mut self.a, &ca, extra_a);
        start_xvsd(&mut self.b, &cb, extra_b);
        self.a.start_keepalived(&ca);
        self.b.start_keepalived(&cb);
        let (a, b) = (&self.a, &self.b);
        poll("a to become VRRP master with the VIP", secs(15), || {
            if a.holds(VIP) && a.vrrp_entered("VI_1", "MASTER") && b.vrrp_entered("VI_1", "BACKUP")
            {
                Ok(())
            } else {
                Err(format!(
                    "a holds VIP: {}; a log:\n{}\nb log:\n{}",
                    a.holds(VIP),
                    a.keepalived_log(),
                    b.keepalived_log()
                ))
            }
        });
        assert!(!b.holds(VIP), "the backup holds the VIP too");
    }

    /// 20 long flows from the client's five addresses through the VIP; returns once every
    /// flow has data.
    fn flows(&self, first_id: u64) -> Streams {
        let ns = self.lab.ns("client");
        let mut s = Streams::spawn(&StreamSpec {
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
        });
        let n = s.wait_flowing(secs(15));
        assert_eq!(n, FLOWS, "not every flow got data before the failure");
        s
    }

    /// TCP segments retransmitted by the real servers so far (each one's kernel counter).
    fn rs_retrans(&self) -> u64 {
        (1..=3)
            .map(|k| {
                let o = self
                    .lab
                    .exec(&format!("rs{k}"), &["nstat", "-asz", "TcpRetransSegs"]);
                // "#kernel" then "TcpRetransSegs  N  rate".
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

    /// New connections through whoever holds the VIP now: a few short flows, all intact.
    fn new_connections_work(&self, first_id: u64) {
        let ns = self.lab.ns("client");
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
}

/// xvsd on eth0 serving `conf`'s virtual_server, plus `extra`; waits until the service
/// lists its three real servers (the health checks ran).
fn start_xvsd(d: &mut Director, conf: &Path, extra: &[&str]) {
    let mut args = vec!["--interface", "eth0", "--config", conf.to_str().unwrap()];
    args.extend_from_slice(extra);
    d.start_xvsd(&args);
    let svc = format!("{VIP}:{STREAM_PORT}");
    poll(
        "xvsd to serve VIP:9000 with 3 real servers",
        secs(15),
        || {
            let l = d.adm_ok(&["-L", "-n"]);
            let n = l
                .lines()
                .filter(|l| {
                    l.trim_start().starts_with("->") && l.contains(&format!(":{STREAM_PORT}"))
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

/// Panics unless `streams` still has at least 4 s to run: the event under test must hit the
/// flows mid-stream, not after they ended.
fn assert_mid_stream(streams: &Streams, what: &str) {
    let left = secs(FLOW_SECS).saturating_sub(streams.elapsed());
    assert!(
        left >= secs(4),
        "{what} came {:?} into {FLOW_SECS} s flows: too late to test anything",
        streams.elapsed()
    );
}

/// Data-path counter `name` of a director (summed over lines), 0 if absent.
fn sync_counter(d: &Director, name: &str) -> u64 {
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

/// A director's sync daemons (`-L --daemon`) and its non-zero sync counters, for messages.
fn sync_state(d: &Director) -> String {
    let daemons = String::from_utf8_lossy(&d.adm(&["-L", "--daemon"]).stdout).into_owned();
    let dp = String::from_utf8_lossy(&d.adm(&["--datapath"]).stdout).into_owned();
    let counters: Vec<&str> = dp
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("sync_") && !l.ends_with(" 0"))
        .collect();
    format!(
        "{}; {}",
        daemons.trim().replace('\n', "; "),
        counters.join(", ")
    )
}

/// Polls every 20 ms (at most `timeout`) until `d` holds the VIP; the time it took.
fn time_until_holds(d: &Director, timeout: Duration) -> Duration {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if d.holds(VIP) {
            return t0.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "{} did not get the VIP within {timeout:?}; keepalived:\n{}",
        d.ns,
        d.keepalived_log()
    );
}

fn print_measured(what: &str, vip_moved: Duration, r: &StreamReport, retrans: u64) {
    println!(
        "MEASURED {what}: VIP moved after {:.2} s; longest gap seen by a client {:.0} ms; \
         real servers retransmitted {retrans} segments; {}",
        vip_moved.as_secs_f64(),
        r.max_gap_ms(),
        r.describe()
    );
}

/// Both sync daemons on a director (IPVS runs a master and a backup daemon side by side;
/// whichever director is VRRP master, its master daemon sends and the other receives).
const SYNC_BOTH: [&str; 4] = [
    "--sync-daemon",
    "master --mcast-interface eth0 --syncid 51",
    "--sync-daemon",
    "backup --mcast-interface eth0 --syncid 51",
];

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn no_sync_breaks_flows() {
    let _g = serial();
    let mut p = Pair::up("xfo-n");
    p.start(&[], &[]);
    let streams = p.flows(1);
    std::thread::sleep(secs(2));
    let retrans0 = p.rs_retrans();
    assert_mid_stream(&streams, "the crash");
    p.a.crash();
    let moved = time_until_holds(&p.b, secs(15));
    p.new_connections_work(1001);
    let r = streams.finish();
    print_measured("without sync", moved, &r, p.rs_retrans() - retrans0);
    // The backup has no entry for them: their ACKs are dropped, the real servers' data
    // stalls in retransmission until the client gives up.
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

/// The same crash without sync, with Maglev hashing (`lb_algo mh`): the backup has no entry
/// for the flows either, but it schedules their next segments mid-flow (`xvsd --mid-flow`,
/// mh by default) with the same table as the master, so each reaches the real server it
/// was talking to and every flow completes. `no_sync_breaks_flows` (rr) is the control.
#[test]
fn mh_without_sync_keeps_flows() {
    let _g = serial();
    let mut p = Pair::up("xfo-m");
    p.start_algo(&[], &[], "mh");
    let streams = p.flows(1);
    std::thread::sleep(secs(2));
    assert_eq!(established(&p.b), 0, "no sync: the backup knows no flow");
    let retrans0 = p.rs_retrans();
    assert_mid_stream(&streams, "the crash");
    p.a.crash();
    let moved = time_until_holds(&p.b, secs(15));
    p.new_connections_work(1001);
    let r = streams.finish();
    print_measured("mh without sync", moved, &r, p.rs_retrans() - retrans0);
    let mid = sync_counter(&p.b, "mid_flow");
    println!("backup: {mid} connections scheduled mid-flow");
    assert!(
        r.all_ok(),
        "with mh every flow must survive a failover without sync: {}",
        r.describe()
    );
    assert!(
        mid >= FLOWS as u64,
        "the backup must have scheduled the {FLOWS} flows mid-flow, counted {mid}"
    );
}

#[test]
fn failover_keeps_flows() {
    let _g = serial();
    let mut p = Pair::up("xfo-f");
    p.start(&SYNC_BOTH, &SYNC_BOTH);
    let streams = p.flows(1);
    // Every flow's entry received and applied by the backup's daemon, and listed by
    // `-L -c -n` there, as an operator would check it.
    let (a, b) = (&p.a, &p.b);
    poll(
        "the backup to hold the 20 flows' synced entries",
        secs(15),
        || {
            let (n, listed) = (sync_counter(b, "sync_applied"), established(b));
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
    let moved = time_until_holds(&p.b, secs(15));
    p.new_connections_work(1001);
    let r = streams.finish();
    print_measured("failover with sync", moved, &r, p.rs_retrans() - retrans0);
    println!(
        "backup --datapath after failover:\n{}",
        p.b.adm_ok(&["--datapath"])
    );
    assert!(
        r.all_ok(),
        "every flow must survive the failover: {}",
        r.describe()
    );
    assert_eq!(r.count(FlowStatus::Reset), 0);
}

#[test]
fn failback_keeps_flows() {
    let _g = serial();
    let mut p = Pair::up("xfo-b");
    p.start(&SYNC_BOTH, &SYNC_BOTH);
    // The failover (tested with flows in failover_keeps_flows).
    p.a.crash();
    time_until_holds(&p.b, secs(15));
    p.new_connections_work(1001);

    // Flows through the new master, b.
    let streams = p.flows(101);
    let retrans0 = p.rs_retrans();

    // a comes back. keepalived first (the worst order): the tracked file does not exist
    // (a rebooted host's /run is empty), init_file makes it "1", so a must go FAULT and
    // leave the VIP with b.
    p.a.reboot(VIP);
    let ready = p.file("a-ready");
    let _ = std::fs::remove_file(&ready);
    let ca = p.write("a2.conf", &keepalived_conf("MASTER", 150, Some(&ready)));
    p.a.start_keepalived(&ca);
    let a = &p.a;
    wait_for("the returning master to enter FAULT", secs(10), || {
        a.vrrp_entered("VI_1", "FAULT")
    });
    std::thread::sleep(secs(2));
    assert!(
        !p.a.holds(VIP) && p.b.holds(VIP),
        "a took the VIP before it had the table; keepalived:\n{}",
        p.a.keepalived_log()
    );

    // Now xvsd: "1" at start, its backup daemon fetches the table from b (bulk), then "0".
    let ready_s = ready.to_str().unwrap().to_string();
    let bulk = format!("backup --mcast-interface eth0 --syncid 51 --bulk-peer {DIP2}");
    let extra = [
        "--ready-file",
        &ready_s,
        "--sync-daemon",
        &bulk,
        "--sync-daemon",
        "master --mcast-interface eth0 --syncid 51",
    ];
    let t0 = Instant::now();
    start_xvsd(&mut p.a, &ca, &extra);
    time_until_holds(&p.a, secs(30));
    // From xvsd's start to a holding the VIP: bulk sync, keepalived leaving FAULT, the
    // master-down wait of a BACKUP, preemption.
    let took = t0.elapsed();
    assert_mid_stream(&streams, "the takeover");
    let file_now = std::fs::read_to_string(&ready).unwrap_or_default();
    assert_eq!(
        file_now.trim(),
        "0",
        "a took the VIP while its ready file said {file_now:?}"
    );
    // The flows' entries came by the bulk sync: b's whole table, the 20 flows and the
    // finished short ones.
    let got = sync_counter(&p.a, "sync_bulk_conns");
    assert!(
        got >= FLOWS as u64,
        "a became master with {got} entries from the bulk sync: {}",
        sync_state(&p.a)
    );
    println!(
        "returning master when it took the VIP: {}",
        sync_state(&p.a)
    );
    let b = &p.b;
    wait_for("b to give the VIP up", secs(10), || !b.holds(VIP));
    let (fault, master) = (
        p.a.vrrp_log_pos("VI_1", "FAULT").map(|p| p.0),
        p.a.vrrp_log_pos("VI_1", "MASTER").map(|p| p.1),
    );
    assert!(
        matches!((fault, master), (Some(f), Some(m)) if f < m),
        "expected FAULT, then MASTER:\n{}",
        p.a.keepalived_log()
    );
    let r = streams.finish();
    print_measured(
        "failback with sync (time from the returning xvsd's start)",
        took,
        &r,
        p.rs_retrans() - retrans0,
    );
    assert!(
        r.all_ok(),
        "every flow must survive the failback: {}",
        r.describe()
    );
    assert_eq!(r.count(FlowStatus::Reset), 0);
    p.new_connections_work(2001);
}
