//! Scale-out behind ECMP (docs/scale-out.md): directors announce the VIP with a real
//! routing daemon (BIRD 2; FRR on one director in `frr_director_announces_and_withdraws`)
//! to a router namespace running BIRD with ECMP and L4 hashing (`scripts/ecmp-lab.sh`).
//!
//! - `announce_follows_xvsd_health_and_drain`: the router's route for the VIP loses a
//!   director's next hop when its xvsd is drained, loses every live real server (weight 0,
//!   deleted, health checks failing), stops (SIGTERM, SIGKILL) or its host dies, within the
//!   timers, and gets it back when it is healthy again.
//! - `mh_keeps_flows_when_a_director_leaves_and_returns_rr_does_not`: 30 long-lived TCP
//!   flows checked byte by byte while a director is withdrawn from the ECMP set and added
//!   back: with mh (and mid-flow scheduling on the director that inherits a flow) none
//!   breaks or stalls; with rr on the same lab some do, which shows the check can fail.
//!
//! Run under the netns lock on shared machines:
//!   flock /tmp/xvs-netns.lock cargo test --test e2e_ecmp -- --test-threads=1

mod common;

use common::ecmp::{rs_ip, EcmpLab, VIP};
use common::flows::{FlowResult, StreamReport, StreamSpec, Streams, STREAM_PORT};
use std::sync::Mutex;
use std::time::Duration;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// What xvsd itself withdraws (drain, no live server, exit): its 50 ms loop, then BIRD's
/// netlink event and a BGP UPDATE; generous for a loaded CI machine.
const WITHDRAW_WITHIN: Duration = Duration::from_secs(3);
/// A dead director host: the router's BGP hold timer (3 s in the lab's configuration)
/// plus margin.
const HOLD_WITHIN: Duration = Duration::from_secs(6);

fn measured(what: &str, took: Duration) {
    eprintln!("measured: {what}: {} ms", took.as_millis());
}

#[test]
fn announce_follows_xvsd_health_and_drain() {
    let _g = serial();
    let mut lab = EcmpLab::up("xea", 2, 2, None);
    for k in 1..=2 {
        lab.start_xvsd(k, &[]);
        lab.add_service(k, 80, "mh", None);
    }
    measured("both announced", lab.wait_next_hops(&[1, 2], secs(10)));
    assert!(lab.http_get().is_some(), "no answer through the ECMP route");

    // Drain: every VIP withdrawn, forwarding untouched.
    let out = lab.dir(2).adm_ok(&["--announce", "off"]);
    assert!(out.contains("off (drained)"), "{out}");
    measured("drain", lab.wait_next_hops(&[1], WITHDRAW_WITHIN));
    let show = lab.dir(2).adm_ok(&["--announce", "show"]);
    assert!(!show.contains(VIP), "drained, yet announced: {show}");
    lab.dir(2).adm_ok(&["--announce", "on"]);
    measured("undrain", lab.wait_next_hops(&[1, 2], WITHDRAW_WITHIN));
    assert!(lab.dir(2).adm_ok(&["--announce", "show"]).contains(VIP));

    // Every real server at weight 0, then back.
    let svc = format!("{VIP}:80");
    for r in 1..=2 {
        let rip = format!("{}:80", rs_ip(r));
        lab.dir(2)
            .adm_ok(&["-e", "-t", &svc, "-r", &rip, "-g", "-w", "0"]);
        if r == 1 {
            // One server left with weight: still announced.
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(
                lab.next_hops().len(),
                2,
                "withdrawn with a live server left"
            );
        }
    }
    measured("weight 0", lab.wait_next_hops(&[1], WITHDRAW_WITHIN));
    lab.dir(2).adm_ok(&[
        "-e",
        "-t",
        &svc,
        "-r",
        &format!("{}:80", rs_ip(1)),
        "-g",
        "-w",
        "1",
    ]);
    lab.wait_next_hops(&[1, 2], WITHDRAW_WITHIN);

    // Every real server deleted, then added back.
    for r in 1..=2 {
        lab.dir(2)
            .adm_ok(&["-d", "-t", &svc, "-r", &format!("{}:80", rs_ip(r))]);
    }
    measured("servers deleted", lab.wait_next_hops(&[1], WITHDRAW_WITHIN));
    lab.dir(2)
        .adm_ok(&["-a", "-t", &svc, "-r", &format!("{}:80", rs_ip(2)), "-g"]);
    lab.wait_next_hops(&[1, 2], WITHDRAW_WITHIN);

    // xvsd stops (SIGTERM): the device goes, and the route with it.
    lab.dir(2).stop_xvsd();
    measured("SIGTERM", lab.wait_next_hops(&[1], WITHDRAW_WITHIN));

    // Health checks (keepalived.conf, TCP_CHECK on :80): both servers down -> withdrawn.
    let conf = std::env::temp_dir().join("xvs-test-xea-keepalived.conf");
    std::fs::write(&conf, health_conf()).unwrap();
    lab.start_xvsd(2, &["--config", conf.to_str().unwrap()]);
    measured("start with --config", lab.wait_next_hops(&[1, 2], secs(10)));
    lab.stop_http(1);
    lab.stop_http(2);
    // delay_loop 1, connect_timeout 1, retry 0: down within about 2 s of the failure.
    measured(
        "health checks fail",
        lab.wait_next_hops(&[1], secs(4) + WITHDRAW_WITHIN),
    );
    lab.start_http(1);
    measured(
        "health checks pass again",
        lab.wait_next_hops(&[1, 2], secs(4) + WITHDRAW_WITHIN),
    );
    lab.start_http(2);

    // SIGKILL: no code of xvsd runs, the kernel deletes the device.
    lab.dir(2).kill_xvsd();
    measured("SIGKILL", lab.wait_next_hops(&[1], WITHDRAW_WITHIN));
    lab.start_xvsd(2, &[]);
    lab.add_service(2, 80, "mh", None);
    lab.wait_next_hops(&[1, 2], secs(10));

    // The whole director dies (links down, xvsd and BIRD killed): the router's hold
    // timer removes its routes.
    lab.dir(2).crash();
    measured(
        "host crash (hold timer)",
        lab.wait_next_hops(&[1], HOLD_WITHIN),
    );
    assert!(lab.http_get().is_some(), "no answer through the survivor");
    let _ = std::fs::remove_file(&conf);
}

/// keepalived.conf for director 2's health-checked run: the lab's service, TCP_CHECK on
/// each real server's :80, fast timers.
fn health_conf() -> String {
    let mut s = format!(
        "virtual_server {VIP} 80 {{\n    delay_loop 1\n    lb_algo mh\n    lb_kind DR\n    \
         protocol TCP\n"
    );
    for r in 1..=2 {
        s += &format!(
            "    real_server {} 80 {{\n        weight 1\n        TCP_CHECK {{\n            \
             connect_timeout 1\n            retry 0\n        }}\n    }}\n",
            rs_ip(r)
        );
    }
    s + "}\n"
}

const FLOWS: u32 = 30;
const RATE: u64 = 50_000;
const FLOW_SECS: u64 = 14;
/// Longest silence a flow may have and still count as unbroken: far above a route change
/// here (milliseconds) plus one retransmission timeout, far below what a flow whose
/// packets are dropped for the whole withdrawal waits (the withdrawal lasts `AWAY`).
const MAX_GAP_MS: f64 = 2_000.0;
const AWAY: Duration = Duration::from_secs(4);

/// Flows that did not end cleanly with every byte, or stalled longer than `MAX_GAP_MS`.
fn broken_or_stalled(r: &StreamReport) -> Vec<&FlowResult> {
    let mut v = r.broken();
    for f in &r.flows {
        if f.max_gap_ms > MAX_GAP_MS && !v.iter().any(|b| b.id == f.id) {
            v.push(f);
        }
    }
    v
}

/// 30 flows through the router; director 2 withdrawn (drain) for `AWAY`, then added back,
/// while they run. Returns the report and each director's established connections before.
fn flows_across_a_withdrawal(lab: &mut EcmpLab, first_id: u64) -> (StreamReport, [usize; 2]) {
    lab.wait_next_hops(&[1, 2], secs(10));
    let ns = lab.ns("client");
    let mut s = Streams::spawn(&StreamSpec {
        client_ns: &ns,
        addr: VIP,
        port: STREAM_PORT,
        flows: FLOWS,
        bytes: RATE * FLOW_SECS,
        rate: RATE,
        timeout: secs(FLOW_SECS + 12),
        src_ips: &[],
        first_id,
    });
    assert_eq!(s.wait_flowing(secs(15)), FLOWS, "not every flow got data");
    std::thread::sleep(secs(1));
    // The router's L4 hash spreads the flows over both directors.
    let before = [
        lab.established(1, STREAM_PORT),
        lab.established(2, STREAM_PORT),
    ];
    lab.dir(2).adm_ok(&["--announce", "off"]);
    measured("withdrawn", lab.wait_next_hops(&[1], WITHDRAW_WITHIN));
    std::thread::sleep(AWAY);
    lab.dir(2).adm_ok(&["--announce", "on"]);
    measured("back", lab.wait_next_hops(&[1, 2], WITHDRAW_WITHIN));
    assert!(
        s.elapsed() + secs(3) < secs(FLOW_SECS),
        "the withdrawal ended {:?} into {FLOW_SECS} s flows: too late to test anything",
        s.elapsed()
    );
    (s.finish(), before)
}

fn datapath(lab: &mut EcmpLab, k: usize) -> String {
    String::from_utf8_lossy(&lab.dir(k).adm(&["--datapath"]).stdout).into_owned()
}

/// The `mid_flow` counters of a `--datapath` listing, summed over the workers.
fn mid_flow(dp: &str) -> u64 {
    dp.lines()
        .filter_map(|l| l.trim().strip_prefix("mid_flow:"))
        .filter_map(|v| v.trim().parse::<u64>().ok())
        .sum()
}

#[test]
fn mh_keeps_flows_when_a_director_leaves_and_returns_rr_does_not() {
    let _g = serial();
    let mut lab = EcmpLab::up("xec", 2, 3, None);
    for k in 1..=2 {
        lab.start_xvsd(k, &[]);
        // mh-port: the source port counts too, so one client's flows spread over the
        // real servers and a director that schedules a moved flow differently would send
        // it to another server (where it breaks).
        lab.add_service(k, STREAM_PORT, "mh", Some("mh-port"));
    }
    let (r, before) = flows_across_a_withdrawal(&mut lab, 1);
    eprintln!(
        "mh: established before the withdrawal: dir1 {} dir2 {}; max gap {:.0} ms; {}",
        before[0],
        before[1],
        r.max_gap_ms(),
        r.describe()
    );
    assert!(
        before[0] > 0 && before[1] > 0,
        "ECMP did not spread the flows: {before:?}"
    );
    assert_eq!(r.flows.len(), FLOWS as usize, "{}", r.describe());
    let bad = broken_or_stalled(&r);
    assert!(
        bad.is_empty(),
        "mh: {} flows broke or stalled: {bad:?}\n{}\ndir1 datapath:\n{}",
        bad.len(),
        r.describe(),
        datapath(&mut lab, 1)
    );

    // Director 1 took director 2's flows over mid-flow (scheduled with the same table).
    let mid = mid_flow(&datapath(&mut lab, 1));
    eprintln!("mh: dir1 mid_flow {mid}");
    assert!(
        mid > 0,
        "dir1 scheduled nothing mid-flow: the flows never moved?"
    );

    // The same lab, rr: a director that inherits a flow has no entry for it and drops its
    // packets (IPVS schedules only on SYN) until the flow goes back.
    for k in 1..=2 {
        let d = lab.dir(k);
        d.adm_ok(&["-C"]);
    }
    for k in 1..=2 {
        lab.add_service(k, STREAM_PORT, "rr", None);
    }
    let (r, before) = flows_across_a_withdrawal(&mut lab, 1001);
    let bad = broken_or_stalled(&r);
    eprintln!(
        "rr: established before the withdrawal: dir1 {} dir2 {}; {} broken or stalled; {}",
        before[0],
        before[1],
        bad.len(),
        r.describe()
    );
    assert!(before[1] > 0, "no flow on director 2: nothing to move");
    assert!(
        !bad.is_empty(),
        "rr: no flow broke or stalled: the check cannot tell: {}",
        r.describe()
    );
}

/// FRR instead of BIRD on director 2 (docs/scale-out/frr-director.conf: zebra + bgpd,
/// `redistribute connected` with a route-map matching the announce device): the router
/// (BIRD) gets the VIP from both daemons, and FRR withdraws it when xvsd drains, stops
/// or is killed, and announces it again when xvsd is back.
#[test]
fn frr_director_announces_and_withdraws() {
    let _g = serial();
    let mut lab = EcmpLab::up("xef", 2, 2, Some(2));
    for k in 1..=2 {
        lab.start_xvsd(k, &[]);
        lab.add_service(k, 80, "mh", None);
    }
    measured(
        "FRR and BIRD announced",
        lab.wait_next_hops(&[1, 2], secs(10)),
    );
    // FRR itself has the VIP as a connected route from the device, and sends it.
    let bgp = lab.vtysh(2, &format!("show ip bgp {VIP}/32"));
    assert!(
        bgp.contains("10.20.0.1"),
        "FRR does not advertise {VIP} to the router:\n{bgp}"
    );
    assert!(lab.http_get().is_some(), "no answer through the ECMP route");

    lab.dir(2).adm_ok(&["--announce", "off"]);
    measured("FRR: drain", lab.wait_next_hops(&[1], WITHDRAW_WITHIN));
    lab.dir(2).adm_ok(&["--announce", "on"]);
    measured("FRR: undrain", lab.wait_next_hops(&[1, 2], WITHDRAW_WITHIN));

    lab.dir(2).kill_xvsd();
    measured("FRR: SIGKILL", lab.wait_next_hops(&[1], WITHDRAW_WITHIN));
    let rib = lab.vtysh(2, "show ip route connected");
    assert!(
        !rib.contains(VIP),
        "the VIP outlived xvsd in FRR's RIB:\n{rib}"
    );
    // A new xvsd creates the device anew; FRR (zebra) picks the new interface up.
    lab.start_xvsd(2, &[]);
    lab.add_service(2, 80, "mh", None);
    measured(
        "FRR: restarted xvsd announced",
        lab.wait_next_hops(&[1, 2], secs(10)),
    );
    lab.dir(2).stop_xvsd();
    measured("FRR: SIGTERM", lab.wait_next_hops(&[1], WITHDRAW_WITHIN));
    assert!(lab.http_get().is_some(), "no answer through the survivor");
}
