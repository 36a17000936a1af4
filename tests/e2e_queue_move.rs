//! A DR flow whose packets start arriving on another RX queue keeps working: the worker
//! of the new queue finds no entry, asks the others, the owner forwards the segment and
//! parks the entry, and the new worker takes it at the next segment.
//!
//! The director's RX queue on veth is the TX queue the bridge port toward it picks, so the
//! test pins the client's frames to a queue with a tc BPF program on the bridge
//! (bpf/test_queue_pin.bpf.c), then moves them mid-transfer, as an RSS indirection change or a
//! sender's rehash after a retransmit timeout would. Real iperf3 on both ends. Needs root;
//! run with `--test-threads=1`.

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

/// Builds bpf/test_queue_pin.bpf.c for `queue` (once per test run).
fn pin_object(queue: u32) -> String {
    let dir = std::env::temp_dir().join("xvs-test-queue-pin");
    std::fs::create_dir_all(&dir).expect("temp dir");
    let obj = dir.join(format!("pin{queue}.o"));
    let arch = std::env::consts::ARCH;
    let out = Command::new("clang")
        .args([
            "-O2",
            "-target",
            "bpf",
            &format!("-I/usr/include/{arch}-linux-gnu"),
        ])
        .arg(format!("-DQUEUE={queue}"))
        .arg("-c")
        .arg(root().join("bpf/test_queue_pin.bpf.c"))
        .arg("-o")
        .arg(&obj)
        .output()
        .expect("clang");
    assert!(
        out.status.success(),
        "clang: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    obj.display().to_string()
}

/// Every frame from the client to the director arrives on the director's RX queue `queue`
/// (see bpf/test_queue_pin.bpf.c).
fn pin_to_queue(lab: &Lab, obj: &str, verb: &str) {
    let sw = lab.ns("sw");
    let out = Command::new("ip")
        .args([
            "netns", "exec", &sw, "tc", "filter", verb, "dev", "client", "ingress",
        ])
        .args([
            "pref", "10", "handle", "1", "bpf", "da", "obj", obj, "sec", "tc",
        ])
        .output()
        .expect("tc");
    assert!(
        out.status.success(),
        "tc filter {verb}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn per_worker(dp: &str, name: &str) -> Vec<u64> {
    dp.lines()
        .filter(|l| l.trim_start().starts_with(&format!("{name}:")))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect()
}

/// A download through the director whose client frames move from queue 0 to queue 1 mid-way
/// (`fast`: xvsd with its fast path, else `--no-fast-path`); returns iperf3's output, the
/// final `--datapath` and the xvsd log.
fn moved_download(prefix: &str, fast: bool) -> (std::process::Output, String, String) {
    let mut lab = Lab::up_with(prefix, "dr", 2, 2, &["--extras"]);
    // The mechanism under test is the workers' path. With the fast path an established
    // flow's segments do not reach the workers at all (its flow-map entry is not per
    // queue, so a queue move changes nothing for it) and this flow would never show the
    // traffic on queue 0 the test waits for; the move of an entry between workers is what
    // still happens to every flow the fast path does not carry (evicted, NAT, ...).
    lab.start_xvsd(if fast { &[] } else { &["--no-fast-path"] });
    // iperf3 opens a control and a data connection, which must meet one server: sh.
    lab.adm_ok(&["-A", "-t", "10.0.0.88:5201", "-s", "sh"]);
    for rs in ["10.0.0.9", "10.0.0.20"] {
        lab.adm_ok(&["-a", "-t", "10.0.0.88:5201", "-r", rs, "-g"]);
    }
    let sw = lab.ns("sw");
    let (pin0, pin1) = (pin_object(0), pin_object(1));
    let out = Command::new("ip")
        .args([
            "netns", "exec", &sw, "tc", "qdisc", "add", "dev", "client", "clsact",
        ])
        .output()
        .expect("tc");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    pin_to_queue(&lab, &pin0, "add");

    // A 6 s download (the real server sends, the client's ACKs go through the director),
    // bounded by iperf3's own timeouts.
    let client = lab.ns("client");
    let iperf = Command::new("ip")
        .args([
            "netns", "exec", &client, "timeout", "30", "iperf3", "-c", VIP,
        ])
        .args([
            "-p",
            "5201",
            "-t",
            "6",
            "-R",
            "-b",
            "20M",
            "--connect-timeout",
            "3000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("iperf3");
    // Wait until the flow is established on queue 0 (through the fast path: its packets),
    // then move it to queue 1.
    wait_for("the flow on queue 0", Duration::from_secs(5), || {
        let dp = lab.adm_ok(&["--datapath"]);
        if fast {
            per_worker(&dp, "fast_packets")
                .first()
                .is_some_and(|&n| n > 20)
        } else {
            per_worker(&dp, "rx_frames")
                .first()
                .is_some_and(|&n| n > 20)
        }
    });
    std::thread::sleep(Duration::from_millis(1500));
    pin_to_queue(&lab, &pin1, "replace");
    let out = iperf.wait_with_output().expect("iperf3");
    let dp = lab.adm_ok(&["--datapath"]);
    (out, dp, lab.xvsd_log())
}

#[test]
fn with_the_fast_path_a_moved_flow_needs_nothing() {
    let (out, dp, log) = moved_download("e2eqmvf", true);
    assert!(
        out.status.success(),
        "the download broke after the queue move:\n{}\n{dp}\n{log}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The flow-map entry is not per queue: the moved frames stayed on the fast path (only
    // the FIN at the end reaches the workers, on the new queue, and moves the entry then).
    let fast: u64 = per_worker(&dp, "fast_packets").iter().sum();
    assert!(fast > 100, "{dp}");
}

#[test]
fn a_flow_moved_to_another_queue_keeps_its_connection() {
    let (out, dp, log) = moved_download("e2eqmv", false);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the download broke after the queue move:\n{stdout}\n{}\n{dp}\n{}",
        String::from_utf8_lossy(&out.stderr),
        log
    );
    // The move really happened and was handled by the mechanism under test.
    let rx = per_worker(&dp, "rx_frames");
    assert!(rx.len() == 2 && rx[1] > 20, "queue 1 saw no traffic:\n{dp}");
    let moved: u64 = per_worker(&dp, "moved_out").iter().sum();
    let imported: u64 = per_worker(&dp, "imported").iter().sum();
    assert!(moved >= 1 && imported >= 1, "no entry moved:\n{dp}");
    // Segments that were already handed off when the entry moved find it nowhere and are
    // dropped once (TCP retransmits them): a few at most, never the flow.
    let lost: u64 = per_worker(&dp, "no_conn").iter().sum();
    assert!(
        lost <= 4,
        "{lost} segments dropped for want of their connection:\n{dp}"
    );
}
