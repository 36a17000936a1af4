//! End-to-end tests of TTL handling and of ICMP errors about connections on the veth
//! harness: path MTU discovery through the director for DR, NAT and TUN with a router whose
//! path is narrower than the real servers think (`harness.sh --client-router`, or the tun
//! topology's router), real curl transfers, and the route caches of the hosts that must
//! learn the smaller MTU. Needs root; run with `--test-threads=1` under
//! `flock /tmp/xvs-netns.lock`.

mod common;

use common::*;

const CLIENT: &str = "10.0.2.100";
/// Bytes of the download: enough full-size segments to need path MTU discovery.
const DOWNLOAD: usize = 2_000_000;

/// Lowers the MTU of the client router's route to the client: full-size packets towards
/// the client are answered with ICMP fragmentation needed (MTU 1400), sent to their source.
fn narrow_client_path(lab: &Lab) {
    let o = lab.exec(
        "crt",
        &[
            "ip",
            "route",
            "replace",
            "10.0.2.0/24",
            "dev",
            "eth1",
            "src",
            "10.0.2.1",
            "mtu",
            "1400",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Downloads `n` bytes from the VIP through curl; the number of bytes received.
fn download(lab: &Lab, n: usize) -> usize {
    let url = format!("http://{VIP}/bytes/{n}");
    let o = lab.exec(
        "client",
        &[
            "curl",
            "-s",
            "--max-time",
            "20",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            &url,
        ],
    );
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// `ip route get DST` in namespace `role` (printed: what the test measured).
fn route_get(lab: &Lab, role: &str, dst: &str) -> String {
    let o = lab.exec(role, &["ip", "route", "get", dst]);
    let r = String::from_utf8_lossy(&o.stdout).into_owned();
    eprintln!("{}: ip route get {dst}: {}", lab.ns(role), r.trim());
    r
}

/// A UDP datagram of `size` payload bytes, DF set, from the client to VIP:port with IP TTL
/// `ttl`; what came back: "ok", "refused" (an ICMP port unreachable), "icmp TYPE CODE FROM
/// INFO" for another ICMP error (from the socket's error queue, IP_RECVERR), or "timeout".
fn udp_probe(lab: &Lab, port: u16, ttl: u32, size: usize) -> String {
    let py = format!(
        r#"
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_IP, 11, 1)  # IP_RECVERR
s.setsockopt(socket.SOL_IP, socket.IP_TTL, {ttl})
s.setsockopt(socket.SOL_IP, 10, 2)  # IP_MTU_DISCOVER = IP_PMTUDISC_DO: DF
s.settimeout(3)
s.connect(("{VIP}", {port}))
s.send(b"q" * {size})
try:
    s.recv(100)
    print("ok")
except ConnectionRefusedError:
    print("refused")
except OSError:
    try:
        _, anc, _, _ = s.recvmsg(100, 512, 0x2000)  # MSG_ERRQUEUE
        for lvl, typ, data in anc:
            ee_errno, origin, t, code, pad, info, dat = struct.unpack("IBBBBII", data[:16])
            print("icmp", t, code, socket.inet_ntoa(data[20:24]), info)
    except OSError:
        print("timeout")
"#
    );
    let o = lab.exec("client", &["python3", "-c", &py]);
    let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
    if out.is_empty() {
        return format!("error: {}", String::from_utf8_lossy(&o.stderr));
    }
    out
}

#[test]
fn dr_path_mtu_and_ttl() {
    let mut lab = Lab::up_with("e2eicmpdr", "dr", 1, 1, &["--client-router"]);
    lab.start_xvsd(&[]);
    lab.adm_ok(&["-A", "-t", "10.0.0.88:80", "-s", "rr"]);
    lab.adm_ok(&["-a", "-t", "10.0.0.88:80", "-r", "10.0.0.9", "-g"]);
    lab.adm_ok(&["-A", "-u", "10.0.0.88:5353", "-s", "rr"]);
    lab.adm_ok(&["-a", "-u", "10.0.0.88:5353", "-r", "10.0.0.9", "-g"]);
    assert_eq!(lab.curl("http://10.0.0.88/"), "rs1", "{}", lab.xvsd_log());

    // The real server's replies go to the client directly; the client's router answers
    // the full-size ones with frag needed to their source, the VIP, i.e. the director,
    // which must pass it on to the real server that sent them.
    narrow_client_path(&lab);
    assert_eq!(download(&lab, DOWNLOAD), DOWNLOAD, "{}", lab.xvsd_log());
    let r = route_get(&lab, "rs1", CLIENT);
    assert!(
        r.contains("mtu 1400"),
        "rs1 did not learn the path MTU: {r}"
    );
    assert!(lab.counter("icmp_relayed") > 0);

    // TTL: 2 from the client, 1 after its router: the director answers time exceeded
    // from the VIP instead of forwarding. TTL 3 goes through.
    assert_eq!(udp_probe(&lab, 5353, 2, 1), format!("icmp 11 0 {VIP} 0"));
    assert!(lab.counter("icmp_time_exceeded") > 0);
    assert_eq!(udp_probe(&lab, 5353, 3, 1), "ok");

    // ICMP to the VIP and the DIP that is not about a connection stays with the kernel.
    for ip in [VIP, DIP] {
        let o = lab.exec("client", &["ping", "-c", "1", "-W", "2", ip]);
        assert!(o.status.success(), "ping {ip} failed while xvsd runs");
    }
}

/// Downloads `n` bytes from the VIP with curl bound to the client address `src`; the bytes
/// received.
fn download_from(lab: &Lab, src: &str, n: usize) -> usize {
    let url = format!("http://{VIP}/bytes/{n}");
    let o = lab.exec(
        "client",
        &[
            "curl",
            "-s",
            "--max-time",
            "20",
            "--interface",
            src,
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            &url,
        ],
    );
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// DR on a director with 4 RX queues: each connection's packets arrive on the queue their
/// 4-tuple hashes to, but the client router's frag needed (router -> VIP) always on the
/// one its own addresses hash to. Errors about connections of the other workers are handed
/// round the workers (src/handoff.rs); every one of 8 downloads, each from its own client
/// address (so each needs its own error), must end with the real server's route to that
/// address at the smaller MTU.
#[test]
fn dr_path_mtu_with_connections_on_every_queue() {
    path_mtu_on_four_queues("e2eicmpq", "dr", "10.0.0.9", "-g");
}

/// The same for TUN: the handed-off errors reach the real server inside IPIP.
#[test]
fn tun_path_mtu_with_connections_on_every_queue() {
    path_mtu_on_four_queues("e2eicmpqt", "tun", "10.0.1.10", "-i");
}

fn path_mtu_on_four_queues(prefix: &str, topology: &str, rip: &str, method: &str) {
    let mut lab = Lab::up_with(prefix, topology, 1, 4, &["--client-router"]);
    lab.start_xvsd(&[]);
    lab.adm_ok(&["-A", "-t", "10.0.0.88:80", "-s", "rr"]);
    lab.adm_ok(&["-a", "-t", "10.0.0.88:80", "-r", rip, method]);
    assert_eq!(lab.curl("http://10.0.0.88/"), "rs1", "{}", lab.xvsd_log());
    // The harness gives the client 10.0.2.100-104; three more make eight.
    for ip in ["10.0.2.105", "10.0.2.106", "10.0.2.107"] {
        let o = lab.exec(
            "client",
            &["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    // One frag needed per download must get through: no ICMP rate limit at the router
    // (its errors all go to one destination, the VIP).
    let o = lab.exec("crt", &["sysctl", "-qw", "net.ipv4.icmp_ratelimit=0"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    narrow_client_path(&lab);

    let clients: Vec<String> = (100..108).map(|i| format!("10.0.2.{i}")).collect();
    for c in &clients {
        assert_eq!(
            download_from(&lab, c, 300_000),
            300_000,
            "download from {c}\n{}\n{}",
            lab.adm_ok(&["--datapath"]),
            lab.xvsd_log()
        );
    }
    for c in &clients {
        let r = route_get(&lab, "rs1", c);
        assert!(
            r.contains("mtu 1400"),
            "rs1 did not learn the path MTU to {c}: {r}"
        );
    }
    let dp = lab.adm_ok(&["--datapath"]);
    eprintln!("{dp}");
    // The case occurred (with 4 queues, about 3 connections in 4 are on another worker
    // than the errors), and every handed-off error was relayed by the worker holding it.
    let handed = lab.counter("icmp_handoff");
    assert!(
        handed > 0,
        "no error was handed off: the test proves nothing\n{dp}"
    );
    assert_eq!(lab.counter("icmp_handoff_relayed"), handed, "{dp}");
    assert_eq!(lab.counter("icmp_handoff_lost"), 0, "{dp}");
    assert_eq!(lab.counter("no_conn"), 0, "{dp}");
}

#[test]
fn nat_path_mtu_and_port_unreachable() {
    let mut lab = Lab::up_with("e2eicmpnat", "nat2", 1, 1, &["--client-router"]);
    // The internal segment takes 1450 bytes (set before xvsd reads the MTUs).
    for (role, dev) in [("dir", "eth1"), ("rs1", "eth0")] {
        let o = lab.exec(role, &["ip", "link", "set", dev, "mtu", "1450"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    lab.start_xvsd_args(&["--interface", "eth0", "--interface", "eth1"]);
    lab.adm_ok(&["-A", "-t", "10.0.0.88:80", "-s", "rr"]);
    lab.adm_ok(&["-a", "-t", "10.0.0.88:80", "-r", "192.168.80.10:80", "-m"]);
    // Nobody listens on 5354 on the real server: it answers port unreachable.
    lab.adm_ok(&["-A", "-u", "10.0.0.88:5354", "-s", "rr"]);
    lab.adm_ok(&["-a", "-u", "10.0.0.88:5354", "-r", "192.168.80.10", "-m"]);
    lab.adm_ok(&["-A", "-u", "10.0.0.88:5353", "-s", "rr"]);
    lab.adm_ok(&["-a", "-u", "10.0.0.88:5353", "-r", "192.168.80.10", "-m"]);
    assert_eq!(lab.curl("http://10.0.0.88/"), "rs1", "{}", lab.xvsd_log());

    // Replies, rewritten to come from the VIP, are too big for the client's router, whose
    // frag needed (to the VIP, about VIP:80 -> client) must reach the real server
    // translated (to RIP, about RIP:80 -> client).
    narrow_client_path(&lab);
    assert_eq!(download(&lab, DOWNLOAD), DOWNLOAD, "{}", lab.xvsd_log());
    let r = route_get(&lab, "rs1", CLIENT);
    assert!(
        r.contains("mtu 1400"),
        "rs1 did not learn the path MTU: {r}"
    );
    let relayed = lab.counter("icmp_relayed");
    assert!(relayed > 0);

    // The real server's port unreachable (RIP -> client, about client -> RIP:5354) reaches
    // the client as from the VIP about VIP:5354: the client's socket sees ECONNREFUSED.
    assert_eq!(
        udp_probe(&lab, 5354, 64, 1),
        "refused",
        "{}",
        lab.xvsd_log()
    );
    assert!(lab.counter("icmp_relayed") > relayed);

    // Requests too big for the internal segment: xvs's own frag needed (1450, from the
    // VIP); the client caches it and its next datagram of that size fits.
    assert_eq!(
        udp_probe(&lab, 5353, 64, 1472),
        format!("icmp 3 4 {VIP} 1450")
    );
    let r = route_get(&lab, "client", VIP);
    assert!(r.contains("mtu 1450"), "the client did not learn 1450: {r}");
    assert_eq!(udp_probe(&lab, 5353, 64, 1450 - 28), "ok");
}

#[test]
fn tun_path_mtu_both_ways() {
    let mut lab = Lab::up_with("e2eicmptun", "tun", 1, 1, &["--client-router"]);
    lab.start_xvsd(&[]);
    lab.adm_ok(&["-A", "-t", "10.0.0.88:80", "-s", "rr"]);
    lab.adm_ok(&["-a", "-t", "10.0.0.88:80", "-r", "10.0.1.10", "-i"]);
    assert_eq!(lab.curl("http://10.0.0.88/"), "rs1", "{}", lab.xvsd_log());

    // Client side: the real server's direct replies are too big for the client's router;
    // its frag needed reaches the director (the VIP) and goes to the server inside IPIP.
    narrow_client_path(&lab);
    assert_eq!(download(&lab, DOWNLOAD), DOWNLOAD, "{}", lab.xvsd_log());
    let r = route_get(&lab, "rs1", CLIENT);
    assert!(
        r.contains("mtu 1400"),
        "rs1 did not learn the path MTU: {r}"
    );

    // Tunnel side: the router in front of the real servers takes at most 1400 bytes to
    // rs1. An upload's 1480-byte segments (after xvs's own frag needed, MTU 1480) become
    // 1500-byte IPIP packets; the router's frag needed (1400, to the director, about the
    // IPIP packet) must reach the client as frag needed 1380 about its own packet.
    let o = lab.exec(
        "rtr",
        &[
            "ip",
            "route",
            "add",
            "10.0.1.10/32",
            "dev",
            "eth1",
            "src",
            "10.0.1.1",
            "mtu",
            "1400",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
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
    let r = route_get(&lab, "client", VIP);
    assert!(r.contains("mtu 1380"), "the client did not learn 1380: {r}");
    assert!(lab.counter("icmp_relayed") > 0);
}
