//! End-to-end tests of DR load balancing on the veth harness: real xvsd (XDP + AF_XDP),
//! real xvsadm, real kernel TCP/UDP in the real-server namespaces, real curl.
//!
//! Needs root. Run with `--test-threads=1` (scripts/test.sh does): each test builds its own
//! namespaces under its own prefix and tears them down even when it fails.

mod common;

use common::*;
use std::time::Duration;

#[test]
fn wrr_2_5_5_follows_the_ipvs_sequence() {
    let mut lab = Lab::up("e2ewrr", 3, 1);
    lab.start_xvsd(&[]);
    http_service(&lab, "wrr", [2, 5, 5]);

    // IPVS puts each new server at the list head: the list is rs3(5), rs2(5), rs1(2).
    // The current weight cw carries over from the configuration steps, as in IPVS: with
    // rs1 alone (gcd 2) mw = 1 and cw = 1; adding rs2 and rs3 keeps cw = 1 (<= mw = 5, gcd 1).
    // So the first pass runs at cw = 1 (rs3 rs2 rs1), then whole periods with cw = 5..1:
    // rs3 rs2 | rs3 rs2 | rs3 rs2 | rs3 rs2 rs1 | rs3 rs2 rs1.
    let head = ["rs3", "rs2", "rs1"];
    let period = [
        "rs3", "rs2", "rs3", "rs2", "rs3", "rs2", "rs3", "rs2", "rs1", "rs3", "rs2", "rs1",
    ];
    let got: Vec<String> = (0..3 + 36).map(|_| lab.curl("http://10.0.0.88/")).collect();
    let want: Vec<&str> = head
        .iter()
        .chain(period.iter().cycle().take(36))
        .copied()
        .collect();
    assert_eq!(got, want, "xvsd log:\n{}", lab.xvsd_log());
    // Over the whole periods the split is exactly 2:5:5.
    for (rs, n) in [("rs1", 6), ("rs2", 15), ("rs3", 15)] {
        assert_eq!(got[3..].iter().filter(|g| *g == rs).count(), n);
    }

    let list = lab.adm_ok(&["-L", "-n"]);
    assert!(list.contains("TCP  10.0.0.88:80 wrr"), "{list}");
    for rs in RS_IPS {
        assert!(list.contains(&format!("-> {rs}:80")), "{list}");
    }
    assert!(lab.stop_xvsd(), "xvsd did not exit cleanly");
    // The BPF link went away with the daemon: no XDP program left on the interface.
    let link = lab.exec("dir", &["ip", "-d", "link", "show", "eth0"]);
    assert!(!String::from_utf8_lossy(&link.stdout).contains("prog/xdp"));
}

#[test]
fn established_connection_survives_runtime_changes() {
    let mut lab = Lab::up("e2elive", 3, 1);
    lab.start_xvsd(&[]);
    lab.adm_ok(&["-A", "-t", "10.0.0.88:80", "-s", "rr"]);
    lab.adm_line("-a -t 10.0.0.88:80 -r 10.0.0.9 -g -w 1");

    let mut ka = KeepAlive::open(&lab);
    assert_eq!(ka.get(), "rs1");
    wait_for(
        "rs1 to count one active connection",
        Duration::from_secs(5),
        || {
            let l = lab.adm_ok(&["-L", "-n"]);
            l.lines()
                .any(|x| x.contains("10.0.0.9:80") && x.split_whitespace().nth(4) == Some("1"))
        },
    );

    // Add servers: the live connection stays, new ones spread.
    lab.adm_line("-a -t 10.0.0.88:80 -r 10.0.0.20 -g -w 1");
    lab.adm_line("-a -t 10.0.0.88:80 -r 10.0.0.21 -g -w 1");
    assert_eq!(ka.get(), "rs1");
    let fresh: Vec<String> = (0..6).map(|_| lab.curl("http://10.0.0.88/")).collect();
    for rs in ["rs2", "rs3"] {
        assert!(fresh.iter().any(|b| b == rs), "{fresh:?}");
    }

    // Re-weight and delete other servers.
    lab.adm_line("-e -t 10.0.0.88:80 -r 10.0.0.20 -g -w 3");
    assert_eq!(ka.get(), "rs1");
    lab.adm_ok(&["-d", "-t", "10.0.0.88:80", "-r", "10.0.0.21"]);
    assert_eq!(ka.get(), "rs1");

    // Quiesce the live connection's server: it keeps that connection, gets no new ones.
    lab.adm_line("-e -t 10.0.0.88:80 -r 10.0.0.9 -g -w 0");
    let fresh: Vec<String> = (0..8).map(|_| lab.curl("http://10.0.0.88/")).collect();
    assert!(
        fresh.iter().all(|b| b == "rs2"),
        "quiesced rs1 got new connections: {fresh:?}"
    );
    assert_eq!(ka.get(), "rs1");

    // Deleting its server stops its packets (IPVS drops a removed server's packets, see
    // tests/e2e_dead.rs); adding it straight back revives it from the trash with the
    // connection (ip_vs_trash_get_dest).
    lab.adm_ok(&["-d", "-t", "10.0.0.88:80", "-r", "10.0.0.9"]);
    lab.adm_line("-a -t 10.0.0.88:80 -r 10.0.0.9 -g -w 0");
    for _ in 0..5 {
        assert_eq!(ka.get(), "rs1");
    }

    // Deleting the service ends it.
    lab.adm_ok(&["-D", "-t", "10.0.0.88:80"]);
    assert!(
        ka.get().starts_with("ERROR"),
        "connection outlived its service"
    );
    assert!(lab.xvsd_alive());
}

#[test]
fn udp_is_balanced_per_flow() {
    let mut lab = Lab::up("e2eudp", 3, 1);
    lab.start_xvsd(&[]);
    lab.adm_ok(&["-A", "-u", "10.0.0.88:5353", "-s", "rr"]);
    for ip in RS_IPS {
        lab.adm_ok(&["-a", "-u", "10.0.0.88:5353", "-r", ip, "-g"]);
    }
    // Six flows (new source port each) then three datagrams on one flow.
    let py = r#"
import socket
out = []
for i in range(6):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
    s.sendto(b"q", ("10.0.0.88", 5353)); out.append(s.recvfrom(100)[0].decode().strip())
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
for i in range(3):
    s.sendto(b"q", ("10.0.0.88", 5353)); out.append(s.recvfrom(100)[0].decode().strip())
print(" ".join(out))
"#;
    let o = lab.exec("client", &["python3", "-c", py]);
    let got = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Vec<&str> = got.split(' ').collect();
    // rr over the list rs3, rs2, rs1 (newest first), then one flow sticks to one server.
    assert_eq!(
        &v[..6],
        &["rs3", "rs2", "rs1", "rs3", "rs2", "rs1"],
        "{got}"
    );
    assert!(v[6..].iter().all(|x| *x == v[6]), "{got}");
    let list = lab.adm_ok(&["-L", "-n"]);
    assert!(list.contains("UDP  10.0.0.88:5353 rr"), "{list}");
}

#[test]
fn non_vip_traffic_reaches_the_director_kernel() {
    let mut lab = Lab::up("e2epass", 3, 1);
    lab.start_xvsd(&[]);
    http_service(&lab, "rr", [1, 1, 1]);
    // An SSH-like TCP service on the DIP, served by the director's own kernel.
    let mut srv = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.ns("dir"),
            "python3",
            "-m",
            "http.server",
            "2222",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the DIP listener", Duration::from_secs(10), || {
        let o = lab.exec("dir", &["ss", "-Hltn", "sport = :2222"]);
        !o.stdout.is_empty()
    });
    let passed_before = lab.counter("xdp_passed");
    for ip in [DIP, VIP] {
        let o = lab.exec("client", &["ping", "-c", "2", "-W", "2", ip]);
        assert!(o.status.success(), "ping {ip} failed while xvsd runs");
    }
    let o = lab.exec(
        "client",
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
            "http://10.0.0.12:2222/",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "200");
    // The VIP's ports that are not a service belong to the kernel too: the director's own
    // server answers on VIP:2222 (the real servers have nothing there), and on VIP:8080,
    // where nothing listens, the director's kernel refuses the connection (a request
    // steered to the workers and dropped would time out instead).
    match lab.http("http://10.0.0.88:2222/") {
        Http::Body(b) if b.contains("Directory listing") => {}
        other => panic!("VIP:2222 did not reach the director's server: {other:?}"),
    }
    assert_eq!(lab.http("http://10.0.0.88:8080/"), Http::Refused);
    assert!(lab.counter("xdp_passed") > passed_before);
    // And the service still works.
    assert!(lab.curl("http://10.0.0.88/").starts_with("rs"));
    let _ = srv.kill();
    let _ = srv.wait();
}

#[test]
fn malformed_frames_are_counted_and_harmless() {
    let mut lab = Lab::up("e2ebad", 3, 1);
    lab.start_xvsd(&[]);
    http_service(&lab, "rr", [1, 1, 1]);
    let dmac = String::from_utf8_lossy(
        &lab.exec("dir", &["cat", "/sys/class/net/eth0/address"])
            .stdout,
    )
    .trim()
    .to_string();
    // Raw frames at the VIP from the client: bad IHL, L4 cut short, total length beyond the
    // frame, TCP data offset < 5, a non-first fragment, random bytes after a valid header.
    let py = r#"
import socket, struct, sys, random
dmac = bytes.fromhex(sys.argv[1].replace(":", ""))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind(("eth0", 0))
smac = s.getsockname()[4]
eth = dmac + smac + b"\x08\x00"
src, dst = socket.inet_aton("10.0.0.100"), socket.inet_aton("10.0.0.88")
def ip(total, ihl=5, frag=0, proto=6):
    return struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, total, 1, frag, 64, proto, 0, src, dst)
tcp = struct.pack("!HHIIBBHHH", 40000, 80, 1, 0, 5 << 4, 0x02, 65535, 0, 0)
bad_doff = struct.pack("!HHIIBBHHH", 40001, 80, 1, 0, 2 << 4, 0x02, 65535, 0, 0)
frames = [
    eth + ip(40, ihl=4) + tcp,            # IHL 4: malformed in XDP
    eth + ip(30) + tcp[:10],              # TCP header cut to 10 bytes
    eth + ip(400) + tcp,                  # total length beyond the frame
    eth + ip(40) + bad_doff,              # data offset 2 words
    eth + ip(40, frag=100) + tcp,         # non-first fragment
    eth + b"\x45",                        # IPv4 header cut to 1 byte
]
random.seed(7)
for i in range(200):
    frames.append(eth + ip(40) + bytes(random.getrandbits(8) for _ in range(random.randint(4, 40))))
for f in frames:
    s.send(f.ljust(60, b"\0") if len(f) < 60 and f is frames[-1] else f)
print(len(frames))
"#;
    let o = lab.exec("client", &["python3", "-c", py, &dmac]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // The counters are published once per worker batch: poll until they show the frames.
    poll(
        "the malformed frames to be counted",
        Duration::from_secs(5),
        || {
            let dp = lab.datapath();
            let get = |k: &str| counter_in(&dp, k);
            let ok = get("xdp_malformed") >= 2
                && get("xdp_fragments") >= 1
                && get("truncated") >= 2
                && get("malformed") >= 1;
            if ok {
                Ok(())
            } else {
                Err(format!("{dp:?}"))
            }
        },
    );
    assert!(lab.xvsd_alive(), "xvsd died:\n{}", lab.xvsd_log());
    // Still serving.
    for _ in 0..3 {
        assert!(lab.curl("http://10.0.0.88/").starts_with("rs"));
    }
}

#[test]
fn cli_errors_leave_configuration_unchanged_and_save_restores() {
    let mut lab = Lab::up("e2ecli", 3, 1);
    lab.start_xvsd(&[]);
    http_service(&lab, "wrr", [2, 5, 5]);
    let before = lab.adm_ok(&["-L", "-n"]);

    let cases: &[&[&str]] = &[
        &["-A", "-t", "10.0.0.88:80", "-s", "wrr"], // duplicate service
        &["-A", "-t", "10.0.0.88:81", "-s", "nosuch"], // unknown scheduler
        &["-a", "-t", "10.0.0.88:80", "-r", "10.0.0.9", "-g"], // duplicate server
        &["-d", "-t", "10.0.0.88:80", "-r", "10.0.0.99"], // missing server
        &["-e", "-t", "10.0.0.88:99", "-r", "10.0.0.9", "-w", "1"], // missing service
        &["-a", "-t", "10.0.0.300:80", "-r", "10.0.0.9"], // bad address
        &["-a", "-t", "10.0.0.88:80", "-r", "10.0.0.30", "-w", "70000"], // bad weight
    ];
    for args in cases {
        let o = lab.adm(args);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(!o.stderr.is_empty(), "{args:?} printed no error");
        assert_eq!(
            lab.adm_ok(&["-L", "-n"]),
            before,
            "{args:?} changed the configuration"
        );
    }

    // ipvsadm-save output restores to the same configuration.
    let saved = lab.adm_ok(&["-S", "-n"]);
    assert!(saved.contains("-A -t 10.0.0.88:80 -s wrr"), "{saved}");
    lab.adm_ok(&["-C"]);
    assert!(!lab.adm_ok(&["-L", "-n"]).contains("10.0.0.88"));
    let o = lab.adm_stdin(&["-R"], &saved);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // -R adds servers in saved order, and IPVS lists newest first: the order reverses,
    // exactly as with ipvsadm. Compare as sets of lines.
    let mut a: Vec<String> = before.lines().map(str::to_string).collect();
    let mut b: Vec<String> = lab
        .adm_ok(&["-L", "-n"])
        .lines()
        .map(str::to_string)
        .collect();
    a.sort();
    b.sort();
    assert_eq!(a, b);
    // The restored service forwards.
    assert!(lab.curl("http://10.0.0.88/").starts_with("rs"));
}

#[test]
fn every_rx_queue_gets_a_worker() {
    let mut lab = Lab::up("e2emq", 3, 2);
    lab.start_xvsd(&[]);
    http_service(&lab, "rr", [1, 1, 1]);
    let mut seen = std::collections::HashMap::new();
    for _ in 0..48 {
        let b = lab.curl("http://10.0.0.88/");
        assert!(
            b.starts_with("rs"),
            "request failed: {b:?}\n{}",
            lab.xvsd_log()
        );
        *seen.entry(b).or_insert(0) += 1;
    }
    // rr with three servers: 16 each, whichever queue each connection arrived on.
    assert!(seen.values().all(|&c| c == 16), "{seen:?}");
    let dp = lab.adm_ok(&["--datapath"]);
    let rx: Vec<u64> = dp
        .lines()
        .filter(|l| l.trim_start().starts_with("rx_frames"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect();
    assert_eq!(rx.len(), 2, "expected two workers:\n{dp}");
    assert!(
        rx.iter().all(|&r| r > 0),
        "a queue's worker saw no traffic:\n{dp}"
    );
}

/// xvsd's log written to a file (here stdout and stderr both go to the lab's log file, as
/// in demo.sh and bench.sh) carries no ANSI colour codes: colour is for terminals only.
#[test]
fn xvsd_log_in_a_file_is_plain_text() {
    let mut lab = Lab::up("e2elog", 1, 1);
    lab.start_xvsd(&[]);
    lab.adm_ok(&["-A", "-t", "10.0.0.88:80", "-s", "rr"]);
    assert!(lab.stop_xvsd(), "xvsd did not exit cleanly");
    let log = lab.xvsd_log();
    // The lines that must be there: start-up, the configuration change, shutdown.
    for want in [
        "XDP steering program attached",
        "configuration changed",
        "bye",
    ] {
        assert!(log.contains(want), "no {want:?} in the log:\n{log}");
    }
    assert!(
        !log.contains('\x1b'),
        "escape sequences in the log file:\n{}",
        log.escape_debug()
    );
}

#[test]
fn adding_a_server_does_not_wait_for_an_unrelated_dead_one() {
    use std::time::Instant;
    let mut lab = Lab::up("e2enbr", 3, 1);
    lab.start_xvsd(&[]);
    lab.adm_ok(&["-A", "-t", "10.0.0.88:80", "-s", "rr"]);
    // 10.0.0.77 is on the lab's subnet but nothing answers ARP for it: its MAC never
    // resolves. Weight 0, so that no client is sent there.
    let t = Instant::now();
    lab.adm_ok(&[
        "-a",
        "-t",
        "10.0.0.88:80",
        "-r",
        "10.0.0.77",
        "-g",
        "-w",
        "0",
    ]);
    let dead = t.elapsed();
    // Adding it waits (up to 500 ms) for its own MAC: the wait itself is still there.
    assert!(dead >= Duration::from_millis(450), "{dead:?}");
    // Adding live servers, and editing, no longer waits for the dead one (before: at
    // least 500 ms each, every time). The minimum over several changes is robust to a
    // busy machine.
    let mut took = Vec::new();
    for ip in RS_IPS {
        let t = Instant::now();
        lab.adm_ok(&["-a", "-t", "10.0.0.88:80", "-r", ip, "-g", "-w", "1"]);
        took.push(t.elapsed());
    }
    for w in ["2", "1", "3"] {
        let t = Instant::now();
        lab.adm_ok(&["-e", "-t", "10.0.0.88:80", "-r", RS_IPS[0], "-g", "-w", w]);
        took.push(t.elapsed());
    }
    let fastest = took.iter().min().unwrap();
    assert!(*fastest < Duration::from_millis(450), "{took:?}");
    // The added servers were resolved when -a returned: they serve at once.
    let mut seen: Vec<String> = (0..6).map(|_| lab.curl("http://10.0.0.88/")).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen, ["rs1", "rs2", "rs3"], "{}", lab.xvsd_log());
}

#[test]
fn connection_listing_streams_a_large_table_while_serving() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    const ENTRIES: u64 = 200_000;
    let mut lab = Lab::up("e2elistc", 3, 2);
    lab.start_xvsd(&["--conn-max", "400000"]);
    http_service(&lab, "rr", [1, 1, 1]);
    // A UDP service nothing listens on: every datagram from a new source is a new entry
    // (UDP entries live 300 s, long enough for the test), and the real servers only
    // answer with (rate-limited) ICMP.
    lab.adm_ok(&["-A", "-u", "10.0.0.88:9999", "-s", "rr"]);
    add_dr_servers(&lab, "-u", "10.0.0.88:9999", [1, 1, 1]);

    let mut gen = Command::new("ip")
        .args(["netns", "exec", &lab.ns("client"), "timeout", "120"])
        .args([
            "hping3",
            "--udp",
            "--flood",
            "--rand-source",
            "-p",
            "9999",
            VIP,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning hping3");
    let filled = (0..240).any(|_| {
        std::thread::sleep(Duration::from_millis(500));
        lab.counter("conns") >= ENTRIES
    });
    // SIGTERM to timeout(1) stops hping3 too.
    let _ = Command::new("kill")
        .args(["-TERM", &gen.id().to_string()])
        .status();
    let _ = gen.wait();
    assert!(
        filled,
        "the generator did not make {ENTRIES} entries in 120 s"
    );
    std::thread::sleep(Duration::from_millis(300));
    let before = lab.counter("conns");

    // The listing, read as it streams, while clients keep being served.
    let mut ls = Command::new(env!("CARGO_BIN_EXE_xvsadm"))
        .arg("--socket")
        .arg(&lab.socket)
        .args(["-L", "-c", "-n"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = ls.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut lines, mut udp, mut first) = (0u64, 0u64, Vec::new());
        for l in std::io::BufReader::new(out).lines() {
            let l = l.unwrap();
            lines += 1;
            if l.starts_with("UDP ") {
                udp += 1;
            }
            if first.len() < 3 {
                first.push(l);
            }
        }
        (lines, udp, first)
    });
    let mut served = Vec::new();
    loop {
        served.push(lab.curl("http://10.0.0.88/"));
        if ls.try_wait().unwrap().is_some() {
            break;
        }
    }
    let status = ls.wait().unwrap();
    let (lines, udp, first) = reader.join().unwrap();
    let mut err = String::new();
    std::io::Read::read_to_string(&mut ls.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "xvsadm -L -c -n failed: {err}");
    let after = lab.counter("conns");
    assert_eq!(first[0], "IPVS connection entries");
    assert_eq!(
        first[1],
        "pro expire state       source             virtual            destination"
    );
    // Every entry that lived throughout is listed once; the curls' own entries may or may
    // not be (the listing is no snapshot, as with /proc/net/ip_vs_conn).
    let entries = lines - 2;
    assert!(
        entries >= before && entries <= after,
        "{entries} entries listed; the table held {before} before and {after} after"
    );
    assert!(udp >= before, "{udp} UDP lines of {before}");
    assert!(
        served.iter().all(|b| b.starts_with("rs")),
        "requests failed during the listing: {served:?}"
    );
    eprintln!(
        "listed {entries} entries; {} requests served meanwhile",
        served.len()
    );
}
