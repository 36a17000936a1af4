//! End-to-end tests of NAT (one- and two-armed) and TUN forwarding on the veth harness:
//! real curl, UDP and iperf3 through the VIP, real kernel TCP on the real servers.
//! Needs root; run with `--test-threads=1`.

mod common;

use common::*;

const NAT2_RS: [&str; 3] = ["192.168.80.10", "192.168.80.11", "192.168.80.12"];
const TUN_RS: [&str; 3] = ["10.0.1.10", "10.0.1.11", "10.0.1.12"];

/// Six new connections through the VIP and the set of servers that answered.
fn spread(lab: &Lab, url: &str) -> Vec<String> {
    let mut v: Vec<String> = (0..6).map(|_| lab.curl(url)).collect();
    v.sort();
    v
}

fn iperf_ok(lab: &Lab, secs: &str) -> bool {
    let o = lab.exec(
        "client",
        &[
            "iperf3",
            "-c",
            VIP,
            "-t",
            secs,
            "-J",
            "--connect-timeout",
            "3000",
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout);
    o.status.success() && out.contains("\"sum_received\"")
}

#[test]
fn nat_two_armed_http_port_mapping_udp_and_bulk() {
    let mut lab = Lab::up_topology("e2enat2", "nat2", 3, 1);
    lab.start_xvsd_args(&["--interface", "eth0", "--interface", "eth1"]);
    // Port mapping: the service is on port 80, two real servers answer on 8080.
    lab.adm_ok(&["-A", "-t", "10.0.0.88:80", "-s", "rr"]);
    lab.adm_ok(&["-a", "-t", "10.0.0.88:80", "-r", "192.168.80.10:8080", "-m"]);
    lab.adm_ok(&["-a", "-t", "10.0.0.88:80", "-r", "192.168.80.11:8080", "-m"]);
    lab.adm_ok(&["-a", "-t", "10.0.0.88:80", "-r", "192.168.80.12:80", "-m"]);
    let list = lab.adm_ok(&["-L", "-n"]);
    assert!(
        list.contains("-> 192.168.80.10:8080") && list.contains("Masq"),
        "{list}"
    );
    assert_eq!(
        spread(&lab, "http://10.0.0.88/"),
        ["rs1", "rs1", "rs2", "rs2", "rs3", "rs3"],
        "{}",
        lab.xvsd_log()
    );

    lab.adm_ok(&["-A", "-u", "10.0.0.88:5353", "-s", "rr"]);
    for rs in NAT2_RS {
        lab.adm_ok(&[
            "-a",
            "-u",
            "10.0.0.88:5353",
            "-r",
            &format!("{rs}:5353"),
            "-m",
        ]);
    }
    let mut u: Vec<String> = (0..3).map(|_| lab.udp(VIP, 5353)).collect();
    u.sort();
    assert_eq!(u, ["rs1", "rs2", "rs3"]);

    // Bulk TCP both ways through the NAT: iperf3 (control and data connections must reach
    // the same server, so this service has one).
    lab.adm_ok(&["-A", "-t", "10.0.0.88:5201", "-s", "rr"]);
    lab.adm_ok(&["-a", "-t", "10.0.0.88:5201", "-r", "192.168.80.10", "-m"]);
    assert!(
        iperf_ok(&lab, "2"),
        "iperf3 through NAT failed\n{}",
        lab.xvsd_log()
    );

    // Connections are listed with their real server, and the NAT table holds them.
    let conns = lab.adm_ok(&["-L", "-n", "-c"]);
    assert!(
        conns.contains("10.0.0.88:80") && conns.contains("192.168.80.1"),
        "{conns}"
    );
    assert!(lab.counter("nat_conns") > 0);

    // An established NAT connection survives its real server's deletion and re-addition
    // (the trash, ip_vs_trash_get_dest): its packets are rewritten as before. In between
    // they are dropped (tests/e2e_dead.rs).
    let mut ka = KeepAlive::open(&lab);
    let who = ka.get();
    let rip = match who.as_str() {
        "rs1" => "192.168.80.10:8080",
        "rs2" => "192.168.80.11:8080",
        "rs3" => "192.168.80.12:80",
        other => panic!("keep-alive got {other:?}"),
    };
    lab.adm_ok(&["-d", "-t", "10.0.0.88:80", "-r", rip]);
    lab.adm_ok(&["-a", "-t", "10.0.0.88:80", "-r", rip, "-m", "-w", "0"]);
    for _ in 0..3 {
        assert_eq!(
            ka.get(),
            who,
            "NAT connection broke when its server was deleted"
        );
    }
    drop(ka);

    // Without xvsd nothing passes: the director does not forward on its own. The VIP is one
    // of its own addresses and nothing on it listens on port 80, so its kernel refuses the
    // connection; a forwarded request would get a real server's body.
    assert!(lab.stop_xvsd());
    assert_eq!(lab.http("http://10.0.0.88/"), Http::Refused);
}

#[test]
fn nat_one_armed() {
    let mut lab = Lab::up_topology("e2enat1", "nat1", 3, 1);
    lab.start_xvsd(&[]);
    lab.adm_ok(&["-A", "-t", "10.0.0.88:80", "-s", "rr"]);
    for rs in RS_IPS {
        lab.adm_ok(&[
            "-a",
            "-t",
            "10.0.0.88:80",
            "-r",
            &format!("{rs}:8080"),
            "-m",
        ]);
    }
    assert_eq!(
        spread(&lab, "http://10.0.0.88/"),
        ["rs1", "rs1", "rs2", "rs2", "rs3", "rs3"],
        "{}",
        lab.xvsd_log()
    );
    lab.adm_ok(&["-A", "-t", "10.0.0.88:5201", "-s", "rr"]);
    lab.adm_ok(&["-a", "-t", "10.0.0.88:5201", "-r", "10.0.0.9", "-m"]);
    assert!(iperf_ok(&lab, "2"), "iperf3 through one-armed NAT failed");
    // The director's own traffic with a real server stays with its kernel even though the
    // real server's port is in the NAT reply map.
    let o = lab.exec(
        "dir",
        &["curl", "-s", "--max-time", "3", "http://10.0.0.9:8080/"],
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "rs1");
}

#[test]
fn tun_http_udp_and_path_mtu() {
    let mut lab = Lab::up_topology("e2etun", "tun", 3, 1);
    lab.start_xvsd(&[]);
    lab.adm_ok(&["-A", "-t", "10.0.0.88:80", "-s", "rr"]);
    for rs in TUN_RS {
        lab.adm_ok(&["-a", "-t", "10.0.0.88:80", "-r", rs, "-i"]);
    }
    let list = lab.adm_ok(&["-L", "-n"]);
    assert!(list.contains("Tunnel"), "{list}");
    assert_eq!(
        spread(&lab, "http://10.0.0.88/"),
        ["rs1", "rs1", "rs2", "rs2", "rs3", "rs3"],
        "{}",
        lab.xvsd_log()
    );
    lab.adm_ok(&["-A", "-u", "10.0.0.88:5353", "-s", "rr"]);
    lab.adm_ok(&["-a", "-u", "10.0.0.88:5353", "-r", "10.0.1.10", "-i"]);
    assert_eq!(lab.udp(VIP, 5353), "rs1");

    // An upload with full-size segments: 1500 + 20 bytes do not fit the 1500-byte path, so
    // xvsd answers ICMP "fragmentation needed" (MTU 1480) and the client's TCP shrinks its
    // segments and completes.
    let before: u64 = lab.counter("icmp_frag_needed");
    let o = lab.exec(
        "client",
        &[
            "sh",
            "-c",
            "head -c 300000 /dev/zero | curl -s --max-time 20 --data-binary @- http://10.0.0.88/",
        ],
    );
    let body = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(
        body.ends_with(" 300000"),
        "upload through the tunnel: {body:?}\n{}",
        lab.xvsd_log()
    );
    assert!(
        lab.counter("icmp_frag_needed") > before,
        "no ICMP fragmentation-needed was sent"
    );
    // The client learnt the path MTU for the VIP.
    let r = lab.exec("client", &["ip", "route", "get", VIP]);
    assert!(
        String::from_utf8_lossy(&r.stdout).contains("mtu 1480"),
        "{}",
        String::from_utf8_lossy(&r.stdout)
    );

    // Bulk transfer (client to server, through the tunnel).
    lab.adm_ok(&["-A", "-t", "10.0.0.88:5201", "-s", "rr"]);
    lab.adm_ok(&["-a", "-t", "10.0.0.88:5201", "-r", "10.0.1.11", "-i"]);
    assert!(iperf_ok(&lab, "2"), "iperf3 through TUN failed");
}

#[test]
fn dr_nat_and_tun_services_at_once() {
    let mut lab = Lab::up("e2emix", 3, 1);
    lab.start_xvsd(&[]);
    // rs2 decapsulates IPIP (tc-BPF here, no ipip module); rs3 sends replies for the
    // client through the director, as a NAT real server must.
    let script = format!("{}/scripts/rs-tun.sh", root().display());
    let tun = lab.exec(
        "rs2",
        &["env", "XVS_RS_TUN_DEV=eth0", "bash", &script, "start", VIP],
    );
    assert!(
        tun.status.success(),
        "{}",
        String::from_utf8_lossy(&tun.stderr)
    );
    let rt = lab.exec("rs3", &["ip", "route", "add", "10.0.0.100/32", "via", DIP]);
    assert!(rt.status.success());
    // NAT rewrites rs3's replies, so they must carry full checksums, as on a wire.
    let off = lab.exec("rs3", &["ethtool", "-K", "eth0", "tx", "off"]);
    assert!(off.status.success());

    lab.adm_ok(&["-A", "-t", "10.0.0.88:80", "-s", "rr"]);
    lab.adm_ok(&["-a", "-t", "10.0.0.88:80", "-r", "10.0.0.9", "-g"]);
    lab.adm_ok(&["-A", "-u", "10.0.0.88:5353", "-s", "rr"]);
    lab.adm_ok(&["-a", "-u", "10.0.0.88:5353", "-r", "10.0.0.20", "-i"]);
    lab.adm_ok(&["-A", "-t", "10.0.0.88:8080", "-s", "rr"]);
    lab.adm_ok(&["-a", "-t", "10.0.0.88:8080", "-r", "10.0.0.21:80", "-m"]);
    let list = lab.adm_ok(&["-L", "-n"]);
    for w in ["Route", "Tunnel", "Masq"] {
        assert!(list.contains(w), "{list}");
    }
    for _ in 0..3 {
        assert_eq!(lab.curl("http://10.0.0.88/"), "rs1");
        assert_eq!(lab.udp(VIP, 5353), "rs2");
        assert_eq!(
            lab.curl("http://10.0.0.88:8080/"),
            "rs3",
            "{}",
            lab.xvsd_log()
        );
    }
    // The connection listing shows the three methods' connections, each with its server.
    let conns = lab.adm_ok(&["-L", "-n", "-c"]);
    for (proto, dest) in [
        ("TCP", "10.0.0.9:80"),
        ("UDP", "10.0.0.20:5353"),
        ("TCP", "10.0.0.21:80"),
    ] {
        assert!(
            conns
                .lines()
                .any(|l| l.starts_with(proto) && l.split_whitespace().last() == Some(dest)),
            "no {proto} connection to {dest}:\n{conns}"
        );
    }
}
