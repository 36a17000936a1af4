//! End-to-end: what happens to the connections of a real server that is removed
//! (`xvsadm -d`), under each `--on-dead` policy, on the veth harness (real xvsd, real
//! xvsadm, real kernel TCP and UDP in the client and real-server namespaces).
//!
//! - `ipvs` (default): a removed server's packets are dropped (its TCP connection stalls,
//!   its UDP flow goes unanswered) until it is added back, when they resume: the same
//!   entries, kept with the server in the trash (IPVS `dest_trash`).
//! - `reassign`: the UDP flow's next datagram is answered by the other server; the TCP
//!   client gets a RST for its next segment at once.
//! - `expire`: the entries end at their next packet (dropped); the UDP flow's following
//!   datagram and new connections go to the other server.
//!
//! Needs root. Run with `--test-threads=1` under `flock /tmp/xvs-netns.lock`.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

const SVC: &str = "10.0.0.88:80";
const USVC: &str = "10.0.0.88:5353";
const RS1: &str = "10.0.0.9";
const RS2: &str = "10.0.0.20";

/// A keep-alive HTTP connection from the client that tolerates long stalls (20 s socket
/// timeout, so TCP retransmissions can carry a request across a removal and re-add).
/// Each `send` asks for one response; answers arrive on a channel, so a stall is observed
/// with a bounded wait instead of a blocked test.
struct Conn {
    child: Child,
    rx: Receiver<String>,
}

const CONN_PY: &str = r#"
import http.client, sys, time
c = http.client.HTTPConnection(sys.argv[1], 80, timeout=20)
for line in sys.stdin:
    t = time.monotonic()
    try:
        c.request("GET", "/")
        body = c.getresponse().read().decode().strip()
    except Exception as e:
        body = "ERROR " + type(e).__name__
    print(body, int((time.monotonic() - t) * 1000), flush=True)
"#;

impl Conn {
    fn open(lab: &Lab) -> Conn {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &lab.ns("client"),
                "python3",
                "-c",
                CONN_PY,
                VIP,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawning the client");
        let out = BufReader::new(child.stdout.take().unwrap());
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Conn { child, rx }
    }

    fn send(&mut self) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"x\n").unwrap();
        stdin.flush().unwrap();
    }

    /// The next answer ("BODY MS" or "ERROR Kind MS") within `t`, or `None`.
    fn answer(&mut self, t: Duration) -> Option<(String, u64)> {
        match self.rx.recv_timeout(t) {
            Ok(l) => {
                let (body, ms) = l.rsplit_once(' ').unwrap();
                Some((body.to_string(), ms.parse().unwrap()))
            }
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => panic!("the client died"),
        }
    }

    fn get(&mut self, t: Duration) -> Option<(String, u64)> {
        self.send();
        self.answer(t)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One datagram from the client's UDP port `sport` (so repeated calls are one flow) to the
/// UDP service: the answering server's name, or `<timeout>` after `secs`.
fn udp_from(lab: &Lab, sport: u16, secs: f32) -> String {
    let py = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('0.0.0.0',{sport}))\n\
         s.settimeout({secs})\ns.sendto(b'q',('{VIP}',5353))\n\
         try: print(s.recvfrom(100)[0].decode().strip())\n\
         except socket.timeout: print('<timeout>')"
    );
    let o = lab.exec("client", &["python3", "-c", &py]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// A DR lab with TCP and UDP services (`opts` appended to `-A`), RS1 alone at first so the
/// long-lived TCP connection and the UDP flow are both on it, then RS2 added.
fn lab_with_flows(prefix: &str, opts: &str) -> (Lab, Conn) {
    let mut lab = Lab::up(prefix, 2, 1);
    lab.start_xvsd(&[]);
    lab.adm_line(&format!("-A -t {SVC} -s rr {opts}"));
    lab.adm_line(&format!("-A -u {USVC} -s rr {opts}"));
    lab.adm_line(&format!("-a -t {SVC} -r {RS1} -g -w 1"));
    lab.adm_line(&format!("-a -u {USVC} -r {RS1} -g -w 1"));
    let mut conn = Conn::open(&lab);
    let first = conn.get(Duration::from_secs(10));
    assert_eq!(
        first.map(|a| a.0).as_deref(),
        Some("rs1"),
        "{}",
        lab.xvsd_log()
    );
    assert_eq!(udp_from(&lab, 40001, 3.0), "rs1");
    lab.adm_line(&format!("-a -t {SVC} -r {RS2} -g -w 1"));
    lab.adm_line(&format!("-a -u {USVC} -r {RS2} -g -w 1"));
    // The flows stay with RS1 while it is there.
    assert_eq!(
        conn.get(Duration::from_secs(10)).map(|a| a.0).as_deref(),
        Some("rs1")
    );
    assert_eq!(udp_from(&lab, 40001, 3.0), "rs1");
    (lab, conn)
}

fn remove_rs1(lab: &Lab) {
    lab.adm_line(&format!("-d -t {SVC} -r {RS1}"));
    lab.adm_line(&format!("-d -u {USVC} -r {RS1}"));
    let list = lab.adm_ok(&["-L", "-n"]);
    assert!(!list.contains(RS1), "{list}");
}

#[test]
fn removed_server_stalls_its_flows_until_it_is_added_back() {
    let (lab, mut conn) = lab_with_flows("e2edeadipvs", "");
    remove_rs1(&lab);

    // IPVS: the request (and its retransmissions) are dropped; nothing answers.
    conn.send();
    assert_eq!(
        conn.answer(Duration::from_secs(3)),
        None,
        "the connection went on"
    );
    assert!(lab.counter("dest_unavailable") >= 1);
    assert_eq!(udp_from(&lab, 40001, 1.0), "<timeout>");
    let dropped = lab.counter("dest_unavailable");

    // Added back at weight 0 (quiesced): no new connection could go there, so an answer
    // from RS1 is the old entries resuming with the revived server.
    lab.adm_line(&format!("-a -t {SVC} -r {RS1} -g -w 0"));
    lab.adm_line(&format!("-a -u {USVC} -r {RS1} -g -w 0"));
    let (body, ms) = conn
        .answer(Duration::from_secs(15))
        .expect("the stalled request was not answered after the re-add");
    assert_eq!(body, "rs1");
    assert!(ms >= 3000, "answered after {ms} ms, before the re-add?");
    assert_eq!(udp_from(&lab, 40001, 3.0), "rs1");
    assert_eq!(
        conn.get(Duration::from_secs(10)).map(|a| a.0).as_deref(),
        Some("rs1")
    );
    assert!(lab.counter("dest_unavailable") >= dropped);
    // The revived server kept its counters: its active connection is listed again.
    let list = lab.adm_ok(&["-L", "-n"]);
    let rs1 = list
        .lines()
        .find(|l| l.contains(&format!("{RS1}:80")))
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(rs1.split_whitespace().nth(4), Some("1"), "{list}");
    assert_eq!(lab.counter("dead_expired"), 0);
}

#[test]
fn reassign_moves_udp_at_once_and_resets_tcp() {
    let (lab, mut conn) = lab_with_flows("e2edeadre", "--on-dead reassign");
    remove_rs1(&lab);

    // The flow's very next datagram is answered, by RS2.
    assert_eq!(udp_from(&lab, 40001, 3.0), "rs2");
    assert_eq!(udp_from(&lab, 40001, 3.0), "rs2");
    assert_eq!(lab.counter("dead_rescheduled"), 1);

    // The TCP client's next segment is answered with a RST at once, not after
    // retransmission timeouts (the first RTO alone is 200 ms or more).
    let t = Instant::now();
    let (body, ms) = conn
        .get(Duration::from_secs(10))
        .expect("no answer to the client");
    assert_eq!(body, "ERROR ConnectionResetError", "{}", lab.xvsd_log());
    assert!(ms < 150, "reset after {ms} ms");
    assert!(t.elapsed() < Duration::from_secs(2));
    assert_eq!(lab.counter("dead_reset"), 1);
    // And new connections go to RS2.
    assert_eq!(lab.curl("http://10.0.0.88/"), "rs2");
}

#[test]
fn expire_ends_the_entries_at_their_next_packet() {
    let (lab, mut conn) = lab_with_flows("e2edeadexp", "--on-dead expire");
    remove_rs1(&lab);

    // The datagram that finds the entry is dropped with it; the next one is a new flow,
    // scheduled to RS2.
    assert_eq!(udp_from(&lab, 40001, 1.0), "<timeout>");
    assert_eq!(udp_from(&lab, 40001, 3.0), "rs2");
    // TCP: the segment that finds the entry is dropped with it; the retransmissions find
    // no connection (IPVS schedules only on SYN), so the client is left to time out...
    conn.send();
    assert_eq!(conn.answer(Duration::from_secs(2)), None);
    poll(
        "both entries expired",
        Duration::from_secs(5),
        || match lab.counter("dead_expired") {
            2 => Ok(()),
            n => Err(format!("dead_expired {n}")),
        },
    );
    assert!(
        lab.counter("no_conn") >= 1,
        "retransmissions after the expiry"
    );
    // ...while the next new connection succeeds, to RS2.
    assert_eq!(lab.curl("http://10.0.0.88/"), "rs2");
    assert_eq!(lab.counter("dead_reset"), 0);
}
