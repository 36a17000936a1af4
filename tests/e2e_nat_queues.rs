//! NAT with several RX queues: a reply comes back on whatever queue the real server's
//! stack sends it from, usually not the queue its request arrived on, and the worker of that
//! queue must find the connection. This is why NAT connections live in one shared table.
//! Needs root; run with `--test-threads=1`.

mod common;

use common::*;

#[test]
fn nat_replies_on_other_queues_find_their_connections() {
    let mut lab = Lab::up_topology("e2enatq", "nat2", 3, 2);
    lab.start_xvsd_args(&["--interface", "eth0", "--interface", "eth1"]);
    lab.adm_ok(&["-A", "-t", "10.0.0.88:80", "-s", "rr"]);
    for rs in [
        "192.168.80.10:8080",
        "192.168.80.11:8080",
        "192.168.80.12:80",
    ] {
        lab.adm_ok(&["-a", "-t", "10.0.0.88:80", "-r", rs, "-m"]);
    }
    let mut bodies = std::collections::HashMap::new();
    for i in 0..60 {
        match lab.http("http://10.0.0.88/") {
            Http::Body(b) => *bodies.entry(b).or_insert(0) += 1,
            other => panic!("request {i}: {other:?}\n{}", lab.xvsd_log()),
        }
    }
    // rr over three servers, every request answered through the NAT.
    assert!(bodies.values().all(|&n| n == 20), "{bodies:?}");
    let dp = lab.adm_ok(&["--datapath"]);
    // Both workers received frames, and replies were handled by the other worker than the
    // one that made their connection (with two queues, about half of them).
    let per_worker = |name: &str| -> Vec<u64> {
        dp.lines()
            .filter(|l| l.trim_start().starts_with(&format!("{name}:")))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
            .collect()
    };
    let rx = per_worker("rx_frames");
    assert_eq!(rx.len(), 2, "{dp}");
    assert!(rx.iter().all(|&r| r > 0), "a worker saw nothing:\n{dp}");
    let other: u64 = per_worker("nat_other_worker").iter().sum();
    assert!(
        other > 0,
        "no reply crossed workers: the test proves nothing\n{dp}"
    );
}
