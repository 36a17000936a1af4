//! End-to-end tests of schedulers, timeouts and persistence on the veth harness (issue 3).
//! Needs root; run with `--test-threads=1`.

mod common;

use common::*;
use std::time::{Duration, Instant};

/// Rows of `-L -n -c` (after the two header lines).
fn conn_rows(lab: &Lab) -> Vec<String> {
    lab.adm_ok(&["-L", "-n", "-c"])
        .lines()
        .skip(2)
        .map(str::to_string)
        .collect()
}

#[test]
fn wlc_and_lc_steer_new_connections_to_the_least_loaded() {
    for sched in ["wlc", "lc"] {
        let mut lab = Lab::up(&format!("e2e{sched}"), 3, 1);
        lab.start_xvsd(&[]);
        http_service(&lab, sched, [1, 1, 1]);
        // Two long-lived connections land on two different servers (ties go to the first
        // in list order, then that one carries an active connection).
        let mut a = KeepAlive::open(&lab);
        let ra = a.get();
        let mut b = KeepAlive::open(&lab);
        let rb = b.get();
        assert!(
            ra.starts_with("rs") && rb.starts_with("rs") && ra != rb,
            "{ra} {rb}"
        );
        // Every short connection now goes to the third, least loaded server: its closed
        // connections count as inactive (1 each) against 256 for an active one.
        let third = ["rs1", "rs2", "rs3"]
            .into_iter()
            .find(|r| *r != ra && *r != rb)
            .unwrap();
        for _ in 0..6 {
            assert_eq!(lab.curl("http://10.0.0.88/"), third, "{sched}");
        }
        // The long-lived ones still work and stay put.
        assert_eq!(a.get(), ra);
        assert_eq!(b.get(), rb);
    }
}

#[test]
fn sh_keeps_each_client_address_on_one_server() {
    let mut lab = Lab::up("e2esh", 3, 1);
    lab.start_xvsd(&[]);
    http_service(&lab, "sh", [1, 1, 1]);
    let mut servers = std::collections::HashSet::new();
    for src in [
        "10.0.0.100",
        "10.0.0.101",
        "10.0.0.102",
        "10.0.0.103",
        "10.0.0.104",
    ] {
        let got: Vec<String> = (0..4)
            .map(|_| {
                let o = lab.exec(
                    "client",
                    &[
                        "curl",
                        "-s",
                        "--max-time",
                        "3",
                        "--interface",
                        src,
                        "http://10.0.0.88/",
                    ],
                );
                String::from_utf8_lossy(&o.stdout).trim().to_string()
            })
            .collect();
        assert!(got[0].starts_with("rs"), "{src}: {got:?}");
        assert!(got.iter().all(|g| *g == got[0]), "{src} moved: {got:?}");
        servers.insert(got[0].clone());
    }
    assert!(servers.len() >= 2, "five clients all hashed to {servers:?}");
}

#[test]
fn set_timeouts_expire_idle_entries() {
    let mut lab = Lab::up("e2etmo", 3, 1);
    lab.start_xvsd(&[]);
    lab.adm_ok(&["--set", "5", "3", "5"]);
    assert!(lab
        .adm_ok(&["-L", "--timeout"])
        .contains("Timeout (tcp tcpfin udp): 5 3 5"));
    http_service(&lab, "rr", [1, 1, 1]);
    lab.adm_ok(&["-A", "-u", "10.0.0.88:5353", "-s", "rr"]);
    add_dr_servers(&lab, "-u", "10.0.0.88:5353", [1, 1, 1]);

    // An idle established connection, a closed one (FIN_WAIT) and a UDP flow.
    let mut ka = KeepAlive::open(&lab);
    assert!(ka.get().starts_with("rs"));
    assert!(lab.curl("http://10.0.0.88/").starts_with("rs"));
    let o = lab.exec(
        "client",
        &[
            "python3",
            "-c",
            "import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.settimeout(3);\
         s.sendto(b'q',('10.0.0.88',5353));print(s.recvfrom(64)[0].decode())",
        ],
    );
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("rs"));

    let rows = conn_rows(&lab);
    let has = |st: &str| rows.iter().any(|r| r.contains(st));
    assert!(
        has("ESTABLISHED") && has("FIN_WAIT") && has("UDP"),
        "{rows:#?}"
    );
    for r in &rows {
        // "TCP 00:05  ESTABLISHED ..." : nothing may show more than its timeout.
        let mmss = r.split_whitespace().nth(1).unwrap();
        let (m, s) = mmss.split_once(':').unwrap();
        let secs: u32 = m.parse::<u32>().unwrap() * 60 + s.parse::<u32>().unwrap();
        assert!(secs <= 5, "{r}");
    }
    // All of them go away on their own (5 s, 3 s, 5 s; the sweep adds well under a second).
    let t0 = Instant::now();
    wait_for("idle entries to expire", Duration::from_secs(12), || {
        conn_rows(&lab).is_empty()
    });
    assert!(
        t0.elapsed() <= Duration::from_secs(7),
        "took {:?}",
        t0.elapsed()
    );
    let l = lab.adm_ok(&["-L", "-n"]);
    // Counters follow the table: no server counts a connection any more.
    for x in l.lines().filter(|x| x.contains("-> 10.0.0.")) {
        let f: Vec<&str> = x.split_whitespace().collect();
        assert_eq!((f[4], f[5]), ("0", "0"), "{l}");
    }
}

#[test]
fn persistence_keeps_a_client_then_lets_go() {
    let mut lab = Lab::up("e2epers", 3, 1);
    lab.start_xvsd(&[]);
    // Short connection timeouts so the template is the only thing holding the client.
    lab.adm_ok(&["--set", "5", "2", "5"]);
    lab.adm_ok(&["-A", "-t", "10.0.0.88:80", "-s", "rr", "-p", "5"]);
    add_dr_servers(&lab, "-t", "10.0.0.88:80", [1, 1, 1]);
    let first = lab.curl("http://10.0.0.88/");
    assert!(first.starts_with("rs"));
    for _ in 0..5 {
        assert_eq!(lab.curl("http://10.0.0.88/"), first, "persistence broken");
    }
    // The template is listed (state NONE, client port 0) and counted as PersistConn.
    assert!(conn_rows(&lab)
        .iter()
        .any(|r| r.contains("NONE") && r.contains("10.0.0.100:0")));
    assert!(lab
        .adm_ok(&["-L", "-n", "-t", "10.0.0.88:80"])
        .contains("persistent 5"));
    // Once the connections (2 s) and then the template (5 s after its last use) are gone,
    // rr moves the client on.
    wait_for("the template to expire", Duration::from_secs(15), || {
        conn_rows(&lab).is_empty()
    });
    let next = lab.curl("http://10.0.0.88/");
    assert!(next.starts_with("rs") && next != first, "{first} -> {next}");
}

#[test]
fn thresholds_stop_new_connections_at_the_upper_limit() {
    let mut lab = Lab::up("e2ethr", 3, 1);
    lab.start_xvsd(&[]);
    lab.adm_ok(&["-A", "-t", "10.0.0.88:80", "-s", "rr"]);
    lab.adm_line("-a -t 10.0.0.88:80 -r 10.0.0.9 -g -w 1 -x 2");
    lab.adm_line("-a -t 10.0.0.88:80 -r 10.0.0.20 -g -w 1");
    // rs1 takes two connections (rr alternates), then is OVERLOADED at 2 total.
    let mut held = Vec::new();
    let mut got = Vec::new();
    for _ in 0..4 {
        let mut k = KeepAlive::open(&lab);
        got.push(k.get());
        held.push(k);
    }
    assert_eq!(got.iter().filter(|g| *g == "rs1").count(), 2, "{got:?}");
    for _ in 0..4 {
        assert_eq!(lab.curl("http://10.0.0.88/"), "rs2");
    }
    assert!(lab
        .adm_ok(&["-L", "-n", "--thresholds"])
        .contains("10.0.0.9:80"));
}

#[test]
fn stats_count_and_zero() {
    let mut lab = Lab::up("e2estat", 3, 1);
    lab.start_xvsd(&[]);
    http_service(&lab, "rr", [1, 1, 1]);
    for _ in 0..6 {
        assert!(lab.curl("http://10.0.0.88/").starts_with("rs"));
    }
    // The whole `--stats --exact` listing, and the service's line of it.
    let stats = || {
        let s = lab.adm_ok(&["-L", "-n", "--stats", "--exact"]);
        let svc = s
            .lines()
            .find(|l| l.starts_with("TCP"))
            .unwrap()
            .to_string();
        (s, svc)
    };
    let (s, svc) = stats();
    let f: Vec<&str> = svc.split_whitespace().collect();
    assert_eq!(f[2], "6", "{s}"); // Conns
    assert!(f[3].parse::<u64>().unwrap() >= 6 * 5, "{s}"); // InPkts: SYN, ACK, GET, FIN, ACK
    lab.adm_ok(&["-Z"]);
    let (s, svc) = stats();
    assert_eq!(svc.split_whitespace().nth(2), Some("0"), "{s}");
}

/// mh through xvsd: `-b mh-fallback` shows in the listing as ipvsadm prints it, each client
/// address stays on one server, and quiescing one server (weight 0, no table rebuild: the
/// server keeps its `last_weight` slots) moves only the clients that were on it.
#[test]
fn mh_keeps_clients_and_falls_back_past_a_quiesced_server() {
    let mut lab = Lab::up("e2emh", 3, 1);
    lab.start_xvsd(&[]);
    lab.adm_ok(&["-A", "-t", "10.0.0.88:80", "-s", "mh", "-b", "mh-fallback"]);
    add_dr_servers(&lab, "-t", "10.0.0.88:80", [1, 1, 1]);
    let listing = lab.adm_ok(&["-L", "-n"]);
    assert!(
        listing.contains("TCP  10.0.0.88:80 mh (mh-fallback)\n"),
        "{listing}"
    );
    let sources = [
        "10.0.0.100",
        "10.0.0.101",
        "10.0.0.102",
        "10.0.0.103",
        "10.0.0.104",
    ];
    let fetch = |lab: &Lab, src: &str| {
        let o = lab.exec(
            "client",
            &[
                "curl",
                "-s",
                "--max-time",
                "3",
                "--interface",
                src,
                "http://10.0.0.88/",
            ],
        );
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let before: Vec<String> = sources
        .iter()
        .map(|src| {
            let got: Vec<String> = (0..3).map(|_| fetch(&lab, src)).collect();
            assert!(got[0].starts_with("rs"), "{src}: {got:?}");
            assert!(got.iter().all(|g| *g == got[0]), "{src} moved: {got:?}");
            got[0].clone()
        })
        .collect();
    // Quiesce the server of the first client.
    let victim = before[0].clone();
    let idx = ["rs1", "rs2", "rs3"]
        .iter()
        .position(|r| *r == victim)
        .expect("a harness server");
    lab.adm_ok(&[
        "-e",
        "-t",
        "10.0.0.88:80",
        "-r",
        RS_IPS[idx],
        "-g",
        "-w",
        "0",
    ]);
    for (src, b) in sources.iter().zip(&before) {
        let now = fetch(&lab, src);
        assert!(
            now.starts_with("rs"),
            "{src}: no answer after quiescing {victim}"
        );
        if *b == victim {
            assert_ne!(now, victim, "{src} still sent to the quiesced server");
        } else {
            assert_eq!(&now, b, "{src} moved though its server is available");
        }
    }
}
