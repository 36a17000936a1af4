//! The exposition and the API documents for a fixed state, against golden files
//! (`tests/golden/web/metrics.golden`, `tests/golden/web/api-status.golden`; regenerate with
//! `XVS_BLESS=1 cargo test --lib web::tests`), and `promtool check metrics` on it.

use super::{api, metrics, Sample};
use crate::model::*;
use crate::sync::daemon::{BulkState, DaemonStatus, Role};

fn sample() -> Sample {
    let key = ServiceKey {
        proto: Protocol::Tcp,
        addr: "10.0.0.88".parse().unwrap(),
        port: 80,
    };
    let udp = ServiceKey {
        proto: Protocol::Udp,
        addr: "10.0.0.88".parse().unwrap(),
        port: 53,
    };
    let dest = |ip: &str, w: u32, act: u32, inact: u32, n: u64| DestStatus {
        addr: ip.parse().unwrap(),
        port: 80,
        forward: Forward::Route,
        weight: w,
        u_threshold: 0,
        l_threshold: 0,
        active_conns: act,
        inactive_conns: inact,
        persist_conns: 0,
        counters: Counters {
            conns: n,
            inpkts: n * 10,
            outpkts: 0,
            inbytes: n * 1000,
            outbytes: 0,
        },
        rates: Rates::default(),
    };
    let mut nat = dest("192.168.1.5", 1, 0, 1, 7);
    nat.port = 5353;
    nat.forward = Forward::Masq;
    nat.u_threshold = 100;
    nat.l_threshold = 50;
    nat.counters.outpkts = 70;
    nat.counters.outbytes = 7000;
    let wk = |q: u32, conns: u64, table_full: u64| WorkerCounters {
        queue: q,
        bind_mode: "copy".into(),
        rx_frames: 1000 + q as u64,
        tx_frames: 990,
        new_conns: 12,
        conns,
        icmp_frag_needed: 0,
        evicted: 1,
        half_open: 2,
        nat_other_worker: 0,
        icmp_time_exceeded: 0,
        icmp_relayed: 0,
        icmp_handoff: 0,
        icmp_handoff_relayed: 0,
        dead_expired: 0,
        dead_rescheduled: 0,
        dead_reset: 0,
        imported: 0,
        moved_handoff: 0,
        moved_out: 0,
        mid_flow: 0,
        xsk_rx_ring_full: 0,
        xsk_rx_fill_ring_empty: 0,
        xsk_rx_dropped: 0,
        xsk_tx_ring_empty: 0,
        napi_ids: String::new(),
        drops: vec![
            ("no_conn".into(), 3),
            ("table_full".into(), table_full),
            ("template_full".into(), 0),
        ],
    };
    let workers = vec![wk(0, 5, 4), wk(1, 6, 0)];
    Sample {
        status: Status {
            conn_table_size: 1 << 20,
            timeouts: Timeouts::default(),
            services: vec![
                ServiceStatus {
                    key,
                    opts: ServiceOpts {
                        scheduler: "wrr".into(),
                        ..Default::default()
                    },
                    counters: Counters {
                        conns: 15,
                        inpkts: 150,
                        outpkts: 0,
                        inbytes: 15000,
                        outbytes: 0,
                    },
                    rates: Rates {
                        cps: 1,
                        inpps: 10,
                        outpps: 0,
                        inbps: 1000,
                        outbps: 0,
                    },
                    dests: vec![dest("10.0.0.9", 2, 3, 1, 5), dest("10.0.0.10", 5, 4, 0, 10)],
                },
                ServiceStatus {
                    key: udp,
                    opts: ServiceOpts {
                        scheduler: "rr".into(),
                        persistent: Some(300),
                        ..Default::default()
                    },
                    counters: nat.counters,
                    rates: Rates::default(),
                    dests: vec![nat],
                },
            ],
        },
        datapath: DataPathStats {
            interface: "eth0".into(),
            nat_conns: 1,
            xdp_mode: "native".into(),
            xdp_redirected: 2000,
            xdp_passed: 40,
            xdp_malformed: 1,
            xdp_no_socket: 0,
            xdp_fragments: 2,
            xdp_held: 0,
            workers,
            sync: vec![
                ("sync_sent_msgs".into(), 9),
                ("sync_refused".into(), 1),
                ("sync_parked".into(), 4),
            ],
            fast: vec![("fast_path".into(), 1), ("fast_packets".into(), 77)],
        },
        health: Some(vec![HealthRow {
            service: key,
            group: String::new(),
            addr: "10.0.0.9".parse().unwrap(),
            port: 80,
            alive: true,
            checker: "TCP_CHECK".into(),
            target: "10.0.0.9:80".into(),
            up: true,
            has_run: true,
            failures: 0,
            last_error: None,
            since_secs: 42,
            last_latency_ms: Some(3),
            checks: 17,
        }]),
        daemons: vec![DaemonStatus {
            role: Role::Master,
            mcast_ifn: "eth1".into(),
            syncid: 51,
            sync_maxlen: 1472,
            mcast_group: "224.0.0.81".parse().unwrap(),
            mcast_port: 8848,
            mcast_ttl: 1,
            peers: vec![],
            bulk_peer: None,
            bulk: BulkState::None,
        }],
    }
}

fn golden(name: &str, got: &str) {
    let path = format!("{}/tests/golden/web/{name}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("XVS_BLESS").is_some() {
        std::fs::write(&path, got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        got == want,
        "{path} differs (XVS_BLESS=1 rewrites it); got:\n{got}"
    );
}

#[test]
fn metrics_exposition_is_golden() {
    golden("metrics.golden", &metrics::encode(sample()));
}

#[test]
fn node_exporter_series_are_there_exactly() {
    let m = metrics::encode(sample());
    // The series node_exporter's ipvs collector produces, byte for byte (its label order;
    // local_mark empty for TCP/UDP services).
    for line in [
        "node_ipvs_connections_total 22",
        "node_ipvs_incoming_packets_total 220",
        "node_ipvs_outgoing_packets_total 70",
        "node_ipvs_incoming_bytes_total 22000",
        "node_ipvs_outgoing_bytes_total 7000",
        "node_ipvs_backend_connections_active{local_address=\"10.0.0.88\",local_port=\"80\",remote_address=\"10.0.0.10\",remote_port=\"80\",proto=\"TCP\",local_mark=\"\"} 4",
        "node_ipvs_backend_connections_inactive{local_address=\"10.0.0.88\",local_port=\"53\",remote_address=\"192.168.1.5\",remote_port=\"5353\",proto=\"UDP\",local_mark=\"\"} 1",
        "node_ipvs_backend_weight{local_address=\"10.0.0.88\",local_port=\"80\",remote_address=\"10.0.0.9\",remote_port=\"80\",proto=\"TCP\",local_mark=\"\"} 2",
        "# TYPE node_ipvs_backend_weight gauge",
        "# TYPE node_ipvs_connections counter",
        "# HELP node_ipvs_backend_connections_active The current active connections by local and remote address.",
        "xvs_conn_table_refused_total{reason=\"table_full\"} 4",
        "xvs_conn_table_entries 12",
        "xvs_sync_parked 4",
        "xvs_health_check_latency_seconds{proto=\"TCP\",local_address=\"10.0.0.88\",local_port=\"80\",group=\"\",remote_address=\"10.0.0.9\",remote_port=\"80\",checker=\"TCP_CHECK\",target=\"10.0.0.9:80\"} 0.003",
    ] {
        assert!(m.lines().any(|l| l == line), "missing {line:?} in\n{m}");
    }
    assert!(m.ends_with("# EOF\n"));
}

#[test]
fn promtool_accepts_the_exposition() {
    // promtool comes with Debian's prometheus package (scripts/deps.sh installs it).
    let m = metrics::encode_text(sample());
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (package prometheus; scripts/deps.sh installs it)");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(m.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool check metrics:\n{said}");
    // Lint findings (naming, help) are printed with success too: none expected.
    assert!(said.trim().is_empty(), "promtool check metrics:\n{said}");
}

#[test]
fn the_text_format_names_counters_by_their_samples() {
    let t = metrics::encode_text(sample());
    golden("metrics-text.golden", &t);
    assert!(t.starts_with(
        "# HELP node_ipvs_connections_total The total number of connections made.\n\
         # TYPE node_ipvs_connections_total counter\n\
         node_ipvs_connections_total 22\n"
    ));
    assert!(t.contains("# TYPE node_ipvs_backend_weight gauge\n"));
    assert!(!t.contains("# EOF"));
}

#[test]
fn api_status_is_golden() {
    let s = sample();
    let v: serde_json::Value = serde_json::from_slice(&api::status(&s)).unwrap();
    golden(
        "api-status.golden",
        &(serde_json::to_string_pretty(&v).unwrap() + "\n"),
    );
    // The health rows land on their server, and only there.
    assert_eq!(v["services"][0]["servers"][0]["health"]["alive"], true);
    assert!(v["services"][0]["servers"][1]["health"].is_null());
    assert_eq!(v["conn_entries"], 12);
}
