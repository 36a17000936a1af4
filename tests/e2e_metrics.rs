//! End-to-end tests of `xvsd --web-listen`: real xvsd on the veth harness, real traffic
//! through the VIP, `/metrics` read with curl from the client namespace and checked with
//! `promtool check metrics`, and a real Prometheus server (Debian's `prometheus`) scraping
//! xvsd, queried through its HTTP API; the values must be what `xvsadm -L -n` says.
//!
//! Needs root and the prometheus package (scripts/deps.sh installs it). Run with
//! `--test-threads=1` (scripts/test.sh does).

mod common;

use common::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WEB: &str = "10.0.0.12:9109";

/// `xvsadm -L -n` (or with `--stats --exact`): per real server of TCP VIP:80, the columns
/// after the address, as numbers.
fn servers(lab: &Lab, stats: bool) -> Vec<(String, Vec<u64>)> {
    let args: &[&str] = if stats {
        &["-L", "-n", "--stats", "--exact"]
    } else {
        &["-L", "-n"]
    };
    lab.adm_ok(args)
        .lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("-> ")?;
            let mut it = rest.split_whitespace();
            let addr = it.next()?.to_string();
            if !addr.starts_with("10.0.0.") {
                return None;
            }
            let nums = it.filter_map(|x| x.parse().ok()).collect();
            Some((addr, nums))
        })
        .collect()
}

/// The value of the sample whose line starts with `prefix` (name and labels).
fn sample(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix) && l[prefix.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

fn backend(rip: &str) -> String {
    format!(
        "{{local_address=\"10.0.0.88\",local_port=\"80\",remote_address=\"{rip}\",remote_port=\"80\",proto=\"TCP\",local_mark=\"\"}}"
    )
}

fn scrape(lab: &Lab, path: &str) -> (String, String) {
    let o = lab.exec(
        "client",
        &[
            "curl",
            "-sS",
            "--max-time",
            "5",
            "-w",
            "\n%{http_code} %{content_type}",
            &format!("http://{WEB}{path}"),
        ],
    );
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let (body, tail) = out.rsplit_once('\n').unwrap_or(("", &out));
    (body.to_string(), tail.to_string())
}

/// A process killed and reaped when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn prometheus_scrapes_what_xvsadm_says() {
    let mut lab = Lab::up("e2emet", 3, 1);
    lab.start_xvsd(&["--web-listen", WEB]);
    http_service(&lab, "wrr", [1, 2, 3]);
    for _ in 0..12 {
        let b = lab.curl("http://10.0.0.88/");
        assert!(b.starts_with("rs"), "{b}");
    }
    // An open connection: one server has an active connection while we look.
    let mut ka = KeepAlive::open(&lab);
    assert!(ka.get().starts_with("rs"));

    // The exposition as a plain client gets it: the classic text format, valid for promtool.
    let (m, tail) = scrape(&lab, "/metrics");
    assert!(tail.starts_with("200 text/plain; version=0.0.4"), "{tail}");
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (package prometheus; scripts/deps.sh installs it)");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(m.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool: {said}\n{m}"
    );

    // Each backend series is what -L -n says (taken before and after the scrape; entries
    // may expire in between, so only servers whose figures did not move are compared).
    let before = servers(&lab, false);
    let (m, _) = scrape(&lab, "/metrics");
    let after = servers(&lab, false);
    assert_eq!(before.len(), 3, "{before:?}");
    let mut compared = 0;
    for ((rip, b), (_, a)) in before.iter().zip(&after) {
        let rip = rip.trim_end_matches(":80");
        // Columns: Forward is not a number, then Weight ActiveConn InActConn.
        let (w, act, inact) = (b[0], b[1], b[2]);
        assert_eq!(
            sample(&m, &format!("node_ipvs_backend_weight{}", backend(rip))),
            Some(w as f64),
            "{m}"
        );
        if a == b {
            compared += 1;
            assert_eq!(
                sample(
                    &m,
                    &format!("node_ipvs_backend_connections_active{}", backend(rip))
                ),
                Some(act as f64),
                "{rip}\n{m}"
            );
            assert_eq!(
                sample(
                    &m,
                    &format!("node_ipvs_backend_connections_inactive{}", backend(rip))
                ),
                Some(inact as f64),
                "{rip}\n{m}"
            );
        }
    }
    assert!(
        compared >= 2,
        "the table kept changing: {before:?} {after:?}"
    );
    let active: u64 = before.iter().map(|(_, v)| v[1]).sum();
    assert!(
        active >= 1,
        "the keep-alive connection is not active: {before:?}"
    );

    // The totals are the sum of the servers' --stats (no traffic flows meanwhile).
    let stats = servers(&lab, true);
    let conns: u64 = stats.iter().map(|(_, v)| v[0]).sum();
    let inpkts: u64 = stats.iter().map(|(_, v)| v[1]).sum();
    let (m, _) = scrape(&lab, "/metrics");
    assert_eq!(conns, 13);
    assert_eq!(
        sample(&m, "node_ipvs_connections_total"),
        Some(conns as f64),
        "{m}"
    );
    assert_eq!(
        sample(&m, "node_ipvs_incoming_packets_total"),
        Some(inpkts as f64),
        "{m}"
    );
    assert_eq!(sample(&m, "xvs_service_connections_total{proto=\"TCP\",local_address=\"10.0.0.88\",local_port=\"80\"}"), Some(conns as f64), "{m}");
    // Every counted packet reached a worker or was forwarded by the XDP fast path.
    assert!(
        sample(&m, "xvs_worker_rx_frames_total{queue=\"0\"}").unwrap_or(0.0)
            + sample(&m, "xvs_fast_packets_total").unwrap_or(0.0)
            >= inpkts as f64
    );

    // The JSON API says the same.
    let (j, tail) = scrape(&lab, "/api/status");
    assert!(tail.starts_with("200 application/json"), "{tail}");
    let v: serde_json::Value = serde_json::from_str(&j).unwrap_or_else(|e| panic!("{e}: {j}"));
    let svc = &v["services"][0];
    assert_eq!(
        (svc["proto"].as_str(), svc["port"].as_u64()),
        (Some("TCP"), Some(80)),
        "{j}"
    );
    assert_eq!(svc["scheduler"], "wrr");
    assert_eq!(svc["counters"]["conns"].as_u64(), Some(conns), "{j}");
    assert_eq!(svc["servers"].as_array().map(|a| a.len()), Some(3), "{j}");
    let (j, tail) = scrape(&lab, "/api/datapath");
    assert!(tail.starts_with("200 application/json"), "{tail}: {j}");
    assert_eq!(
        scrape(&lab, "/api/health").0.trim(),
        r#"{"health_checks":false,"checkers":[]}"#
    );
    // Unknown paths and other methods.
    assert!(scrape(&lab, "/nope").1.starts_with("404"));
    let o = lab.exec(
        "client",
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            &format!("http://{WEB}/metrics"),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "405");

    // A real Prometheus in the client namespace scrapes xvsd every second.
    let dir = std::env::temp_dir().join(format!("xvs-e2emet-prom-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("prometheus.yml");
    std::fs::write(
        &conf,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: xvs\n    static_configs:\n      - targets: ['{WEB}']\n"
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let _prom = Killed(
        Command::new("ip")
            .args(["netns", "exec", &lab.ns("client"), "prometheus"])
            .arg(format!("--config.file={}", conf.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg("--web.listen-address=127.0.0.1:9190")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus (package prometheus; scripts/deps.sh installs it)"),
    );
    let query = |q: &str| -> serde_json::Value {
        let o = lab.exec(
            "client",
            &[
                "curl",
                "-sS",
                "--max-time",
                "3",
                "-G",
                "http://127.0.0.1:9190/api/v1/query",
                "--data-urlencode",
                &format!("query={q}"),
            ],
        );
        serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null)
    };
    let want = servers(&lab, false);
    let deadline = Instant::now() + Duration::from_secs(60);
    let last = loop {
        let last = query("node_ipvs_backend_connections_active");
        if last["data"]["result"]
            .as_array()
            .is_some_and(|r| r.len() == 3)
        {
            break last;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never got the series: {last}\n{}",
            std::fs::read_to_string(dir.join("prometheus.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let now = servers(&lab, false);
    for r in last["data"]["result"].as_array().unwrap() {
        let rip = r["metric"]["remote_address"].as_str().unwrap();
        assert_eq!(r["metric"]["proto"], "TCP");
        assert_eq!(r["metric"]["local_address"], "10.0.0.88");
        assert_eq!(r["metric"]["job"], "xvs");
        let v: u64 = r["value"][1].as_str().unwrap().parse().unwrap();
        let key = format!("{rip}:80");
        let a = want.iter().find(|(k, _)| *k == key).map(|(_, v)| v[1]);
        let b = now.iter().find(|(k, _)| *k == key).map(|(_, v)| v[1]);
        assert!(
            Some(v) == a || Some(v) == b,
            "{rip}: Prometheus {v}, xvsadm {a:?}/{b:?}"
        );
    }
    let total = query("node_ipvs_connections_total");
    assert_eq!(
        total["data"]["result"][0]["value"][1].as_str(),
        Some(conns.to_string().as_str()),
        "{total}"
    );
    let up = query("up{job=\"xvs\"}");
    assert_eq!(
        up["data"]["result"][0]["value"][1].as_str(),
        Some("1"),
        "{up}"
    );
    drop(ka);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn silent_clients_do_not_hold_up_a_scrape() {
    let mut lab = Lab::up("e2emsl", 1, 1);
    lab.start_xvsd(&["--web-listen", WEB]);
    // 20 connections from 10.0.0.101 that send nothing, held for 8 s; it reports how many
    // were answered 503 at once (beyond its 8 per client address).
    let hold = r#"
import socket, sys, time
socks, refused = [], 0
for i in range(20):
    s = socket.socket(); s.bind(("10.0.0.101", 0)); s.connect(("10.0.0.12", 9109)); socks.append(s)
time.sleep(0.5)
for s in socks:
    s.setblocking(False)
    try:
        if s.recv(100).startswith(b"HTTP/1.1 503"): refused += 1
    except BlockingIOError: pass
print(refused, flush=True)
time.sleep(8)
"#;
    let mut holder = Killed(
        Command::new("ip")
            .args(["netns", "exec", &lab.ns("client"), "python3", "-c", hold])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    use std::io::BufRead;
    std::io::BufReader::new(holder.0.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(
        line.trim(),
        "12",
        "connections refused beyond the per-client limit"
    );
    // Meanwhile scrapes from another address are served at once, several in a row.
    for _ in 0..5 {
        let t = Instant::now();
        let (m, tail) = scrape(&lab, "/metrics");
        assert!(tail.starts_with("200"), "{tail}");
        assert!(m.contains("node_ipvs_connections_total 0"), "{m}");
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
}

#[test]
fn an_address_that_cannot_be_bound_stops_xvsd_at_start() {
    let lab = Lab::up("e2embd", 1, 1);
    let o = lab.exec(
        "dir",
        &[
            env!("CARGO_BIN_EXE_xvsd"),
            "--interface",
            "eth0",
            "--web-listen",
            "10.9.9.9:9109",
            "--socket",
            "/run/xvs-test/e2embd-bad.sock",
        ],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("--web-listen 10.9.9.9:9109"), "{err}");
    // Nothing was attached.
    let link = lab.exec("dir", &["ip", "-d", "link", "show", "eth0"]);
    assert!(!String::from_utf8_lossy(&link.stdout).contains("prog/xdp"));
    // A bad value is clap's error, exit 2.
    let o = lab.exec(
        "dir",
        &[
            env!("CARGO_BIN_EXE_xvsd"),
            "--interface",
            "eth0",
            "--web-listen",
            "nonsense",
        ],
    );
    assert_eq!(o.status.code(), Some(2));
}
