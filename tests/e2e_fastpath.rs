//! End-to-end tests of the XDP fast path (on by default) on the veth harness: real xvsd,
//! real kernel TCP in the client and real-server namespaces, a real keep-alive HTTP client.
//! What they show: established DR traffic is forwarded by the XDP program itself (its
//! counters), `--stats` counts every packet once whichever path took it, the connection's
//! timer follows the fast path's last-seen time (it outlives its timeout while only the
//! fast path sees it, and `-L -c` shows the expiry from the last packet), deleting the real
//! server stops fast-path forwarding at once, and `--no-fast-path` turns it all off. The
//! same for two-armed NAT (requests and replies both rewritten by the program, counted as
//! InPkts and OutPkts). And a health check (`xvsd --config`, MISC_CHECK) declaring an
//! established flow's server dead cuts the flow off the fast path at once: its next
//! packets go to the workers, which apply the service's `xvs_on_dead` policy (DR with
//! `reassign`: a RST; NAT with `expire`: the entry ends and the packet is dropped).
//!
//! Needs root. Run with `--test-threads=1` (scripts/test.sh does); namespaces under the
//! `netns` lock (see /work/shared: other tests use the same prefixes).

mod common;

use common::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const SVC: &str = "10.0.0.88:80";

fn one_server(lab: &Lab) {
    lab.adm_ok(&["-A", "-t", SVC, "-s", "rr"]);
    lab.adm_line("-a -t 10.0.0.88:80 -r 10.0.0.9 -g -w 1");
}

/// InPkts of the service and of its one server (`-L -n --stats --exact`).
fn in_pkts(lab: &Lab) -> (u64, u64) {
    let l = lab.adm_ok(&["-L", "-n", "--stats", "--exact"]);
    let field = |needle: &str| -> u64 {
        l.lines()
            .find(|x| x.contains(needle))
            .and_then(|x| x.split_whitespace().nth(3))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {needle} row in:\n{l}"))
    };
    (field("TCP  10.0.0.88:80"), field("-> 10.0.0.9:80"))
}

/// (InPkts, OutPkts) of the `-L -n --stats --exact` row containing `needle`.
fn pkts(lab: &Lab, needle: &str) -> (u64, u64) {
    let l = lab.adm_ok(&["-L", "-n", "--stats", "--exact"]);
    let row = l
        .lines()
        .find(|x| x.contains(needle))
        .unwrap_or_else(|| panic!("no {needle} row in:\n{l}"));
    let f: Vec<u64> = row
        .split_whitespace()
        .skip(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    // Conns InPkts OutPkts InBytes OutBytes
    (f[1], f[2])
}

/// Seconds left on the one ESTABLISHED entry of `-L -c -n` ("MM:SS").
fn established_expiry_s(lab: &Lab) -> Option<u64> {
    let l = lab.adm_ok(&["-L", "-c", "-n"]);
    let line = l.lines().find(|x| x.contains("ESTABLISHED"))?;
    let t = line.split_whitespace().nth(1)?;
    let (m, s) = t.split_once(':')?;
    Some(m.parse::<u64>().ok()? * 60 + s.parse::<u64>().ok()?)
}

#[test]
fn established_dr_traffic_takes_the_fast_path_and_is_counted_once() {
    let mut lab = Lab::up("e2efast", 1, 1);
    lab.start_xvsd(&[]);
    one_server(&lab);
    let mut ka = KeepAlive::open(&lab);
    for _ in 0..40 {
        assert_eq!(ka.get(), "rs1", "xvsd log:\n{}", lab.xvsd_log());
    }
    let dp = lab.datapath();
    assert_eq!(counter_in(&dp, "fast_path"), 1);
    assert!(counter_in(&dp, "fast_installs") >= 1, "{dp:?}");
    // 40 requests on one connection: the workers see the handshake; the requests (and the
    // client's ACKs) are the fast path's, but for the few that reached the workers before
    // the entry was in (reinstalled then).
    let fast = counter_in(&dp, "fast_packets");
    assert!(
        fast >= 20,
        "fast path forwarded only {fast} packets: {dp:?}"
    );
    assert_eq!(fast, counter_in(&dp, "fast_forwarded"));
    // --stats: every client packet once, from either path. The workers forwarded exactly
    // tx_frames (this lab has no other traffic through them), the program `fast`.
    let (svc, dest) = in_pkts(&lab);
    let slow = lab.counter("tx_frames");
    assert_eq!(
        svc,
        slow + fast,
        "service InPkts vs workers + fast path: {dp:?}"
    );
    assert_eq!(dest, svc);
    drop(ka);
    assert!(lab.stop_xvsd(), "xvsd did not exit cleanly");
}

#[test]
fn the_timer_follows_last_seen_and_a_deleted_server_stops_the_fast_path() {
    let mut lab = Lab::up("e2efastx", 1, 1);
    lab.start_xvsd(&[]);
    // ESTABLISHED times out after 6 s: the connection below lives three times as long with
    // only the fast path seeing its packets.
    lab.adm_ok(&["--set", "6", "0", "0"]);
    one_server(&lab);
    let mut ka = KeepAlive::open(&lab);
    assert_eq!(ka.get(), "rs1");
    let installs = lab.counter("fast_installs");
    assert!(installs >= 1);
    for _ in 0..18 {
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(
            ka.get(),
            "rs1",
            "the connection expired while the fast path carried it:\n{}",
            lab.xvsd_log()
        );
    }
    // Still the one connection (never re-created: no new install of another connection),
    // its timer re-armed from last-seen at least once.
    let dp = lab.datapath();
    assert_eq!(counter_in(&dp, "new_conns"), 1, "{dp:?}");
    assert!(counter_in(&dp, "fast_refreshed") >= 1, "{dp:?}");
    // -L -c counts from the last packet (a moment ago), not from the last one the workers
    // saw (up to 18 s ago, which would show 0:00 or an expired entry).
    let left = established_expiry_s(&lab).expect("the connection is listed");
    assert!(
        left >= 4,
        "-L -c shows {left} s left of 6 after a packet just now"
    );

    // Deleting the real server stops the fast path at once: the next request's packets go
    // to the workers (stale generation), which drop them as IPVS drops a removed server's.
    let fast_before = lab.counter("fast_packets");
    lab.adm_ok(&["-d", "-t", SVC, "-r", "10.0.0.9"]);
    assert!(
        ka.get().starts_with("ERROR"),
        "a deleted server still served"
    );
    let dp = lab.datapath();
    assert_eq!(
        counter_in(&dp, "fast_packets"),
        fast_before,
        "fast path forwarded after the delete: {dp:?}"
    );
    assert!(counter_in(&dp, "fast_stale") >= 1, "{dp:?}");
    assert!(counter_in(&dp, "dest_unavailable") >= 1, "{dp:?}");
    drop(ka);
    assert!(lab.stop_xvsd(), "xvsd did not exit cleanly");
}

#[test]
fn no_fast_path_sends_everything_to_the_workers() {
    let mut lab = Lab::up("e2efastn", 1, 1);
    lab.start_xvsd(&["--no-fast-path"]);
    one_server(&lab);
    let mut ka = KeepAlive::open(&lab);
    for _ in 0..10 {
        assert_eq!(ka.get(), "rs1");
    }
    let dp = lab.datapath();
    assert_eq!(counter_in(&dp, "fast_path"), 0);
    assert_eq!(counter_in(&dp, "fast_packets"), 0);
    assert_eq!(counter_in(&dp, "fast_installs"), 0);
    let (svc, _) = in_pkts(&lab);
    assert_eq!(svc, lab.counter("tx_frames"));
    drop(ka);
    assert!(lab.stop_xvsd(), "xvsd did not exit cleanly");
}

#[test]
fn established_tun_traffic_is_encapsulated_by_the_fast_path() {
    let mut lab = Lab::up_topology("e2efastt", "tun", 1, 1);
    lab.start_xvsd(&[]);
    lab.adm_ok(&["-A", "-t", SVC, "-s", "rr"]);
    lab.adm_ok(&["-a", "-t", SVC, "-r", "10.0.1.10", "-i"]);
    let mut ka = KeepAlive::open(&lab);
    for _ in 0..30 {
        assert_eq!(ka.get(), "rs1", "xvsd log:\n{}", lab.xvsd_log());
    }
    let dp = lab.datapath();
    let fast = counter_in(&dp, "fast_packets");
    // The real server answered requests that only the fast path's IPIP packets carried.
    assert!(
        fast >= 15,
        "fast path forwarded only {fast} packets: {dp:?}"
    );
    let l = lab.adm_ok(&["-L", "-n", "--stats", "--exact"]);
    let svc: u64 = l
        .lines()
        .find(|x| x.contains("TCP  10.0.0.88:80"))
        .and_then(|x| x.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{l}"));
    assert_eq!(svc, lab.counter("tx_frames") + fast, "{dp:?}");
    drop(ka);
    assert!(lab.stop_xvsd(), "xvsd did not exit cleanly");
}

const NAT_RS: &str = "192.168.80.10";

/// A two-armed NAT lab (client side eth0, real servers eth1) with xvsd on both interfaces
/// and `extra` arguments.
fn nat_lab(prefix: &str, extra: &[&str]) -> Lab {
    let mut lab = Lab::up_topology(prefix, "nat2", 1, 1);
    let mut args = vec!["--interface", "eth0", "--interface", "eth1"];
    args.extend_from_slice(extra);
    lab.start_xvsd_args(&args);
    lab
}

#[test]
fn established_nat_traffic_takes_the_fast_path_both_ways() {
    let mut lab = nat_lab("e2efnat", &[]);
    // ESTABLISHED times out after 6 s (see the DR timer test above).
    lab.adm_ok(&["--set", "6", "0", "0"]);
    // Port mapping: VIP:80 -> RIP:8080, so the rewrite changes addresses and ports.
    lab.adm_ok(&["-A", "-t", SVC, "-s", "rr"]);
    lab.adm_ok(&["-a", "-t", SVC, "-r", &format!("{NAT_RS}:8080"), "-m"]);
    let mut ka = KeepAlive::open(&lab);
    for _ in 0..40 {
        assert_eq!(ka.get(), "rs1", "xvsd log:\n{}", lab.xvsd_log());
    }
    let dp = lab.datapath();
    let fast = counter_in(&dp, "fast_packets");
    let slow = counter_in(&dp, "tx_frames");
    // 40 requests and 40 responses on one connection: the workers see the handshake (and
    // the odd packet before the entries were in); the rest is the program's, both ways.
    assert!(
        fast >= 60,
        "fast path forwarded only {fast} packets: {dp:?}"
    );
    assert!(slow < 20, "the workers forwarded {slow} frames: {dp:?}");
    assert_eq!(fast, counter_in(&dp, "fast_forwarded"));
    assert_eq!(counter_in(&dp, "new_conns"), 1, "{dp:?}");
    // --stats: every packet once, requests as InPkts, replies as OutPkts, whichever path
    // took it; each direction at least the 40 the client saw answered.
    let (svc_in, svc_out) = pkts(&lab, "TCP  10.0.0.88:80");
    let (rs_in, rs_out) = pkts(&lab, &format!("-> {NAT_RS}:8080"));
    assert_eq!(
        svc_in + svc_out,
        slow + fast,
        "--stats vs both paths: {dp:?}"
    );
    assert_eq!((rs_in, rs_out), (svc_in, svc_out));
    assert!(svc_in >= 40 && svc_out >= 40, "{svc_in} in, {svc_out} out");

    // The connection outlives its 6 s timeout while only the fast path sees it, and -L -c
    // counts from its last packet.
    for _ in 0..14 {
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(
            ka.get(),
            "rs1",
            "the NAT connection expired while the fast path carried it:\n{}",
            lab.xvsd_log()
        );
    }
    let dp = lab.datapath();
    assert_eq!(counter_in(&dp, "new_conns"), 1, "{dp:?}");
    assert!(counter_in(&dp, "fast_refreshed") >= 1, "{dp:?}");
    let left = established_expiry_s(&lab).expect("the connection is listed");
    assert!(
        left >= 4,
        "-L -c shows {left} s left of 6 after a packet just now"
    );

    // UDP: a flow's first datagram installs it, so the real server's answer already comes
    // back through the program.
    lab.adm_ok(&["-A", "-u", "10.0.0.88:5353", "-s", "rr"]);
    lab.adm_ok(&[
        "-a",
        "-u",
        "10.0.0.88:5353",
        "-r",
        &format!("{NAT_RS}:5353"),
        "-m",
    ]);
    let before = lab.counter("fast_packets");
    for _ in 0..3 {
        assert_eq!(lab.udp(VIP, 5353), "rs1");
    }
    let (_, udp_out) = pkts(&lab, "UDP  10.0.0.88:5353");
    assert_eq!(udp_out, 3);
    assert!(
        lab.counter("fast_packets") >= before + 3,
        "UDP answers did not take the fast path: {:?}",
        lab.datapath()
    );

    // Deleting the real server stops the fast path at once, both directions: the next
    // request goes to the workers (stale generation), which drop it.
    let fast_before = lab.counter("fast_packets");
    lab.adm_ok(&["-d", "-t", SVC, "-r", &format!("{NAT_RS}:8080")]);
    assert!(
        ka.get().starts_with("ERROR"),
        "a deleted server still served"
    );
    let dp = lab.datapath();
    assert_eq!(
        counter_in(&dp, "fast_packets"),
        fast_before,
        "fast path forwarded after the delete: {dp:?}"
    );
    assert!(counter_in(&dp, "fast_stale") >= 1, "{dp:?}");
    assert!(counter_in(&dp, "dest_unavailable") >= 1, "{dp:?}");
    drop(ka);
    assert!(lab.stop_xvsd(), "xvsd did not exit cleanly");
}

/// A keepalived.conf with one TCP service on VIP:80 and one real server, `rs` `port`
/// (`kind` DR or NAT), whose MISC_CHECK exits with the number in `state` (0 up, 1 down);
/// `inhibit_on_failure` keeps a failed server configured at weight 0, so the service's
/// `xvs_on_dead policy` decides what its connections get.
fn health_conf(lab: &Lab, kind: &str, rs: &str, port: u16, policy: &str) -> (PathBuf, PathBuf) {
    let state = PathBuf::from(format!("/tmp/xvs-test-{}-state", lab.prefix));
    std::fs::write(&state, "0\n").unwrap();
    let misc = PathBuf::from(format!("/tmp/xvs-test-{}-misc.sh", lab.prefix));
    std::fs::write(
        &misc,
        format!("#!/bin/sh\nexit $(cat {})\n", state.display()),
    )
    .unwrap();
    Command::new("chmod").arg("+x").arg(&misc).status().unwrap();
    let conf = PathBuf::from(format!("/tmp/xvs-test-{}-ka.conf", lab.prefix));
    std::fs::write(
        &conf,
        format!(
            r#"
virtual_server {VIP} 80 {{
    delay_loop 1
    lb_algo rr
    lb_kind {kind}
    protocol TCP
    xvs_on_dead {policy}
    real_server {rs} {port} {{
        inhibit_on_failure
        MISC_CHECK {{
            misc_path {misc}
        }}
    }}
}}
"#,
            misc = misc.display()
        ),
    )
    .unwrap();
    (conf, state)
}

/// Marks the one server down through its check and waits until the checks applied it.
fn fail_check(lab: &Lab, state: &PathBuf, rs: &str) {
    std::fs::write(state, "1\n").unwrap();
    poll(
        "the failed server at weight 0",
        Duration::from_secs(10),
        || {
            let l = lab.adm_ok(&["-L", "-n"]);
            l.lines()
                .any(|x| x.contains(rs) && x.split_whitespace().nth(3) == Some("0"))
                .then_some(())
                .ok_or(l)
        },
    );
}

#[test]
fn a_health_check_cuts_a_dr_fast_path_flow_off_and_reassign_resets_it() {
    let mut lab = Lab::up("e2efhc", 1, 1);
    let (conf, state) = health_conf(&lab, "DR", "10.0.0.9", 80, "reassign");
    lab.start_xvsd(&["--config", conf.to_str().unwrap()]);
    wait_for("the service from the file", Duration::from_secs(10), || {
        lab.adm_ok(&["-L", "-n"]).contains("10.0.0.9:80")
    });
    let mut ka = KeepAlive::open(&lab);
    for _ in 0..20 {
        assert_eq!(ka.get(), "rs1", "xvsd log:\n{}", lab.xvsd_log());
    }
    let before = lab.datapath();
    assert!(counter_in(&before, "fast_packets") >= 10, "{before:?}");
    fail_check(&lab, &state, "10.0.0.9:80");
    // The server process is fine: only the check says it is dead. Without the cut-off the
    // fast path would go on forwarding to it and the request would be answered.
    let got = ka.get();
    assert!(
        got.starts_with("ERROR"),
        "a server the checks declared dead still answered on its fast-path flow: {got}"
    );
    let dp = lab.datapath();
    assert_eq!(
        counter_in(&dp, "fast_packets"),
        counter_in(&before, "fast_packets"),
        "fast path forwarded after the check failed: {dp:?}"
    );
    assert!(counter_in(&dp, "fast_stale") >= 1, "{dp:?}");
    // reassign: the client's segment got a RST from the director at once.
    assert!(counter_in(&dp, "dead_reset") >= 1, "{dp:?}");
    assert_eq!(
        lab.adm_ok(&["-L", "-c", "-n"])
            .matches("ESTABLISHED")
            .count(),
        0
    );
    drop(ka);
    assert!(lab.stop_xvsd(), "xvsd did not exit cleanly");
}

#[test]
fn a_health_check_cuts_a_nat_fast_path_flow_off_and_expire_ends_it() {
    let mut lab = Lab::up_topology("e2efhcn", "nat2", 1, 1);
    let (conf, state) = health_conf(&lab, "NAT", NAT_RS, 8080, "expire");
    lab.start_xvsd_args(&[
        "--interface",
        "eth0",
        "--interface",
        "eth1",
        "--config",
        conf.to_str().unwrap(),
    ]);
    wait_for("the service from the file", Duration::from_secs(10), || {
        lab.adm_ok(&["-L", "-n"]).contains("192.168.80.10:8080")
    });
    let mut ka = KeepAlive::open(&lab);
    for _ in 0..20 {
        assert_eq!(ka.get(), "rs1", "xvsd log:\n{}", lab.xvsd_log());
    }
    let before = lab.datapath();
    assert!(counter_in(&before, "fast_packets") >= 20, "{before:?}");
    fail_check(&lab, &state, "192.168.80.10:8080");
    let got = ka.get();
    assert!(
        got.starts_with("ERROR"),
        "a server the checks declared dead still answered on its fast-path flow: {got}"
    );
    let dp = lab.datapath();
    assert_eq!(
        counter_in(&dp, "fast_packets"),
        counter_in(&before, "fast_packets"),
        "fast path forwarded after the check failed: {dp:?}"
    );
    assert!(counter_in(&dp, "fast_stale") >= 1, "{dp:?}");
    // expire: the entry ended at its next packet, which was dropped.
    assert!(counter_in(&dp, "dead_expired") >= 1, "{dp:?}");
    assert!(counter_in(&dp, "dest_unavailable") >= 1, "{dp:?}");
    drop(ka);
    assert!(lab.stop_xvsd(), "xvsd did not exit cleanly");
}

/// `max_entries` of every BPF map xvsd holds with this key and value size, from
/// /proc/PID/fdinfo (the kernel's own account of each map descriptor; a map held through
/// several descriptors counts once, by its id).
fn map_max_entries(pid: u32, key: u32, value: u32) -> Vec<u64> {
    let mut out = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap() {
        let Ok(text) = std::fs::read_to_string(e.unwrap().path()) else {
            continue;
        };
        let field = |name: &str| -> Option<u64> {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
        };
        if field("key_size:") == Some(key.into()) && field("value_size:") == Some(value.into()) {
            if let (Some(id), Some(n)) = (field("map_id:"), field("max_entries:")) {
                out.insert(id, n);
            }
        }
    }
    out.into_values().collect()
}

/// `--fast-path-max` sizes the flow map apart from `--conn-max`; a map far smaller than
/// the live flows is a cache: flows it cannot hold (or evicts) take the workers' path and
/// every one of them keeps working.
#[test]
fn fast_path_max_sizes_the_flow_map_and_a_full_map_breaks_no_flow() {
    let mut lab = Lab::up("e2efastm", 1, 1);
    lab.start_xvsd(&["--fast-path-max", "2"]);
    one_server(&lab);
    let pid = lab.xvsd_pid().unwrap();
    // xvs_flows: 16-byte key, 64-byte value (src/bpf/maps.rs mirrors it).
    assert_eq!(map_max_entries(pid, 16, 64), vec![2], "flow map size");
    let mut conns: Vec<KeepAlive> = (0..6).map(|_| KeepAlive::open(&lab)).collect();
    for round in 0..20 {
        for (i, ka) in conns.iter_mut().enumerate() {
            assert_eq!(ka.get(), "rs1", "connection {i}, request {round}");
        }
    }
    let dp = lab.datapath();
    assert!(counter_in(&dp, "fast_installs") >= 1, "{dp:?}");
    // Six connections through a two-entry map: most requests took the workers' path.
    let (svc, _) = in_pkts(&lab);
    assert!(lab.counter("tx_frames") > 0 && svc > lab.counter("tx_frames"));
    drop(conns);
    assert!(lab.stop_xvsd(), "xvsd did not exit cleanly");

    // The default follows --conn-max.
    lab.start_xvsd(&["--conn-max", "5000"]);
    let pid = lab.xvsd_pid().unwrap();
    assert_eq!(
        map_max_entries(pid, 16, 64),
        vec![5000],
        "default flow map size"
    );
    assert!(lab.stop_xvsd(), "xvsd did not exit cleanly");
}
