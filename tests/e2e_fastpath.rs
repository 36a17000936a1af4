//! End-to-end tests of the XDP fast path (on by default) on the veth harness: real xvsd,
//! real kernel TCP in the client and real-server namespaces, a real keep-alive HTTP client.
//! What they show: established DR traffic is forwarded by the XDP program itself (its
//! counters), `--stats` counts every packet once whichever path took it, the connection's
//! timer follows the fast path's last-seen time (it outlives its timeout while only the
//! fast path sees it, and `-L -c` shows the expiry from the last packet), deleting the real
//! server stops fast-path forwarding at once, and `--no-fast-path` turns it all off.
//!
//! Needs root. Run with `--test-threads=1` (scripts/test.sh does); namespaces under the
//! `netns` lock (see /work/shared: other tests use the same prefixes).

mod common;

use common::*;
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
