//! `xvsd --config keepalived.conf` on the veth harness: real servers whose HTTP service is
//! stopped and started, checks from the director's own stack, `xvsadm -L -n` as ipvsadm
//! would show keepalived's table, SIGHUP reloads and invalid files.

mod common;
use common::*;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The seeds' keepalived.conf, verbatim but for the addresses: the lab's VIP and real
/// servers instead of 192.168.0.38, .18 and .28.
const SEED: &str = r#"vrrp_instance VI_1 {
    state MASTER
    interface eth0
    virtual_router_id 51
    priority 100
    advert_int 1
    authentication {
        auth_type PASS
        auth_pass 1111
    }
    virtual_ipaddress {
        192.168.0.38
    }
}

virtual_server 192.168.0.38 80 {
    delay_loop 6
    lb_algo rr
    lb_kind DR
    persistence_timeout 0
    protocol TCP

    real_server 192.168.0.18 80 {
        weight 1
        TCP_CHECK {
            connect_timeout 10
            nb_get_retry 3
            delay_before_retry 3
            connect_port 80
        }
    }

    real_server 192.168.0.28 80 {
        weight 1
        TCP_CHECK {
            connect_timeout 10
            nb_get_retry 3
            delay_before_retry 3
            connect_port 80
        }
    }
}
"#;

fn seed_for_lab() -> String {
    SEED.replace("192.168.0.38", VIP)
        .replace("192.168.0.18", RS_IPS[0])
        .replace("192.168.0.28", RS_IPS[1])
}

fn write(lab: &Lab, name: &str, text: &str) -> PathBuf {
    let p = PathBuf::from(format!("/tmp/xvs-test-{}-{name}", lab.prefix));
    std::fs::write(&p, text).unwrap();
    p
}

/// The real servers `-L -n` lists for the lab's service, as (address, weight).
fn table(lab: &Lab) -> Vec<(String, u32)> {
    lab.adm_ok(&["-L", "-n"])
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let rest = l.strip_prefix("-> ")?;
            let mut it = rest.split_whitespace();
            let addr = it.next()?;
            if addr == "RemoteAddress:Port" {
                return None;
            }
            let _fwd = it.next()?;
            let w = it.next()?.parse().ok()?;
            Some((addr.split(':').next()?.to_string(), w))
        })
        .collect()
}

fn has(lab: &Lab, ip: &str) -> bool {
    table(lab).iter().any(|(a, _)| a == ip)
}

/// Stops real server `k`'s HTTP (and UDP) server as the harness started it.
fn stop_rs_http(lab: &Lab, k: u32) {
    let pidfile = format!("/run/xvs-harness/{}/rs{k}.pid", lab.prefix);
    let pid = std::fs::read_to_string(&pidfile).unwrap();
    let _ = Command::new("kill").args(["-TERM", pid.trim()]).status();
    let url = format!("http://{}/", RS_IPS[k as usize - 1]);
    wait_for(
        "the real server's HTTP to stop",
        Duration::from_secs(5),
        || !matches!(lab.http_from("dir", &url), Http::Body(_)),
    );
}

/// A real server's HTTP server the test started; stopped when dropped.
struct RsHttp(Child);

impl Drop for RsHttp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts real server `k`'s HTTP server again.
fn start_rs_http(lab: &Lab, k: u32) -> RsHttp {
    let c = Command::new("ip")
        .args(["netns", "exec", &lab.ns(&format!("rs{k}"))])
        .args([
            "python3",
            root().join("scripts/rs-http.py").to_str().unwrap(),
        ])
        .args([&format!("rs{k}"), "80", "5353"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://{}/", RS_IPS[k as usize - 1]);
    wait_for(
        "the real server's HTTP to start",
        Duration::from_secs(5),
        || matches!(lab.http_from("dir", &url), Http::Body(_)),
    );
    RsHttp(c)
}

fn vip_url() -> String {
    format!("http://{VIP}/")
}

#[test]
fn seed_lab_tcp_check_takes_a_stopped_server_out_and_back_in() {
    let mut lab = Lab::up("xvska1", 2, 1);
    let conf = write(&lab, "seed.conf", &seed_for_lab());
    lab.start_xvsd(&["--config", conf.to_str().unwrap()]);
    // keepalived starts with every server in (no alpha); ipvsadm sorts them.
    assert_eq!(
        table(&lab),
        vec![(RS_IPS[0].to_string(), 1), (RS_IPS[1].to_string(), 1)]
    );
    let log = lab.xvsd_log();
    assert!(log.contains("vrrp_instance ignored"), "{log}");
    // rr over both.
    let mut seen: Vec<String> = (0..4).map(|_| lab.curl(&vip_url())).collect();
    seen.sort();
    assert_eq!(seen, ["rs1", "rs1", "rs2", "rs2"]);

    // keepalived 2.2 does not know `nb_get_retry` in TCP_CHECK (only in HTTP_GET and
    // SSL_GET): it warns and keeps the default retry 1, and so does xvsd.
    assert!(log.contains("Unknown keyword 'nb_get_retry'"), "{log}");
    // Stop rs1's web server: out after retry + 1 = 2 failed checks, delay_before_retry
    // (3 s) apart, the first at most delay_loop (6 s) after the stop.
    stop_rs_http(&lab, 1);
    let t0 = Instant::now();
    wait_for("rs1 to leave -L -n", Duration::from_secs(30), || {
        !has(&lab, RS_IPS[0])
    });
    let down = t0.elapsed();
    eprintln!("detected down after {:.1} s", down.as_secs_f64());
    assert!(
        down >= Duration::from_millis(2500) && down <= Duration::from_secs(11),
        "keepalived's formula: between retry x delay_before_retry (3 s) and delay_loop + \
         retry x delay_before_retry (9 s); took {down:?}"
    );
    // Every request goes to the other server; none fails.
    for _ in 0..10 {
        assert_eq!(lab.curl(&vip_url()), "rs2");
    }
    let health = lab.adm_ok(&["-L", "-n", "--health"]);
    assert!(
        health.contains("TCP_CHECK") && health.contains("down") && health.contains("refused"),
        "{health}"
    );

    // Start it again: back at the next check (at most delay_loop later), rr resumes.
    let _srv = start_rs_http(&lab, 1);
    let t0 = Instant::now();
    wait_for("rs1 back in -L -n", Duration::from_secs(15), || {
        has(&lab, RS_IPS[0])
    });
    let up = t0.elapsed();
    eprintln!("detected up after {:.1} s", up.as_secs_f64());
    assert!(up <= Duration::from_secs(8), "took {up:?}");
    let mut seen: Vec<String> = (0..4).map(|_| lab.curl(&vip_url())).collect();
    seen.sort();
    assert_eq!(seen, ["rs1", "rs1", "rs2", "rs2"]);
    assert!(lab.stop_xvsd());
}

/// A notify script that appends its arguments to a log, one line per run.
fn notify_script(lab: &Lab) -> (PathBuf, PathBuf) {
    let log = PathBuf::from(format!("/tmp/xvs-test-{}-notify.log", lab.prefix));
    let _ = std::fs::remove_file(&log);
    let script = write(
        lab,
        "notify.sh",
        &format!("#!/bin/sh\necho \"$*\" >> {}\n", log.display()),
    );
    Command::new("chmod")
        .arg("+x")
        .arg(&script)
        .status()
        .unwrap();
    (script, log)
}

fn notified(log: &PathBuf) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn http_digest_misc_dynamic_inhibit_quorum_and_the_sorry_server() {
    let mut lab = Lab::up("xvska2", 3, 1);
    let (notify, nlog) = notify_script(&lab);
    let weight_file = write(&lab, "weight", "4\n");
    let misc = write(
        &lab,
        "misc.sh",
        &format!("#!/bin/sh\nexit $(cat {})\n", weight_file.display()),
    );
    Command::new("chmod").arg("+x").arg(&misc).status().unwrap();
    // genhash of rs1's body "rs1\n".
    let digest = "7a6c0d2ef5a9e6e1776090916c66ba3a";
    let n = notify.display();
    let conf = format!(
        r#"
! quick timings so the test is short
virtual_server {VIP} 80 {{
    delay_loop 1
    lb_algo wrr
    lb_kind DR
    protocol TCP
    quorum 2
    sorry_server {rs3} 80
    quorum_up "{n} quorum up"
    quorum_down "{n} quorum down"

    real_server {rs1} 80 {{
        weight 3
        inhibit_on_failure
        notify_up "{n} up rs1"
        notify_down "{n} down rs1"
        HTTP_GET {{
            url {{
                path /
                digest {digest}
                status_code 200
            }}
            connect_timeout 1
            retry 1
            delay_before_retry 1
        }}
    }}
    real_server {rs2} 80 {{
        weight 1
        MISC_CHECK {{
            misc_path "{misc}"
            misc_timeout 2
            misc_dynamic
        }}
    }}
}}
"#,
        rs1 = RS_IPS[0],
        rs2 = RS_IPS[1],
        rs3 = RS_IPS[2],
        misc = misc.display(),
    );
    let conf = write(&lab, "features.conf", &conf);
    lab.start_xvsd(&["--config", conf.to_str().unwrap()]);
    // misc_dynamic: exit 4 = up at weight 2.
    poll("rs2 at weight 2", Duration::from_secs(10), || {
        let t = table(&lab);
        if t.contains(&(RS_IPS[1].to_string(), 2)) && t.contains(&(RS_IPS[0].to_string(), 3)) {
            Ok(())
        } else {
            Err(format!("{t:?}"))
        }
    });
    std::fs::write(&weight_file, "9\n").unwrap();
    poll("rs2 at weight 7", Duration::from_secs(10), || {
        let t = table(&lab);
        t.contains(&(RS_IPS[1].to_string(), 7))
            .then_some(())
            .ok_or(format!("{t:?}"))
    });

    // rs1's HTTP stops: inhibit_on_failure keeps it at weight 0; notify_down ran.
    stop_rs_http(&lab, 1);
    poll("rs1 at weight 0", Duration::from_secs(10), || {
        let t = table(&lab);
        t.contains(&(RS_IPS[0].to_string(), 0))
            .then_some(())
            .ok_or(format!("{t:?}"))
    });
    wait_for("notify_down", Duration::from_secs(5), || {
        notified(&nlog).contains(&"down rs1".to_string())
    });
    // Every request now goes to rs2.
    for _ in 0..5 {
        assert_eq!(lab.curl(&vip_url()), "rs2");
    }

    // rs2's script exits 1: down. Live weight 0 < quorum 2: the sorry server takes over
    // (rs1 stays at weight 0, inhibited), quorum_down ran.
    std::fs::write(&weight_file, "1\n").unwrap();
    poll("the sorry server alone", Duration::from_secs(10), || {
        let t = table(&lab);
        (t.contains(&(RS_IPS[2].to_string(), 1)) && !has(&lab, RS_IPS[1]))
            .then_some(())
            .ok_or(format!("{t:?}"))
    });
    wait_for("quorum_down", Duration::from_secs(5), || {
        notified(&nlog).contains(&"quorum down".to_string())
    });
    assert_eq!(lab.curl(&vip_url()), "rs3");

    // rs2 back at weight 2 (exit 4): quorum regained, the sorry server leaves.
    std::fs::write(&weight_file, "4\n").unwrap();
    poll(
        "rs2 back, sorry server gone",
        Duration::from_secs(10),
        || {
            let t = table(&lab);
            (t.contains(&(RS_IPS[1].to_string(), 2)) && !has(&lab, RS_IPS[2]))
                .then_some(())
                .ok_or(format!("{t:?}"))
        },
    );
    wait_for("quorum_up", Duration::from_secs(5), || {
        notified(&nlog).contains(&"quorum up".to_string())
    });
    // rs1 back: weight 3 again, notify_up.
    let _srv = start_rs_http(&lab, 1);
    poll("rs1 at weight 3", Duration::from_secs(10), || {
        let t = table(&lab);
        t.contains(&(RS_IPS[0].to_string(), 3))
            .then_some(())
            .ok_or(format!("{t:?}"))
    });
    wait_for("notify_up", Duration::from_secs(5), || {
        notified(&nlog).contains(&"up rs1".to_string())
    });
    let health = lab.adm_ok(&["-L", "-n", "--health"]);
    assert!(
        health.contains("HTTP_GET") && health.contains("MISC_CHECK"),
        "{health}"
    );
    assert!(lab.stop_xvsd());
}

fn two_server_conf(weight2: u32) -> String {
    format!(
        r#"
virtual_server {VIP} 80 {{
    delay_loop 1
    lb_algo rr
    lb_kind DR
    protocol TCP
    real_server {rs1} 80 {{
        TCP_CHECK {{
            connect_timeout 1
        }}
    }}
    real_server {rs2} 80 {{
        weight {weight2}
        TCP_CHECK {{
            connect_timeout 1
        }}
    }}
}}
"#,
        rs1 = RS_IPS[0],
        rs2 = RS_IPS[1],
    )
}

#[test]
fn sighup_applies_only_the_difference_and_a_bad_file_changes_nothing() {
    let mut lab = Lab::up("xvska3", 2, 1);
    let conf = write(&lab, "reload.conf", &two_server_conf(1));
    // --config-test: 0 for a good file, 1 and FILE:LINE for a bad one, no network.
    let t = Command::new(env!("CARGO_BIN_EXE_xvsd"))
        .args(["--config", conf.to_str().unwrap(), "--config-test"])
        .output()
        .unwrap();
    assert!(t.status.success(), "{t:?}");
    // An address that is not one: an error at its line (keepalived's parser refuses it).
    let bad_text = two_server_conf(1).replacen(
        "    real_server",
        "    real_server 10.0.0.300 80 {\n    }\n    real_server",
        1,
    );
    let bad = write(&lab, "bad.conf", &bad_text);
    let t = Command::new(env!("CARGO_BIN_EXE_xvsd"))
        .args(["--config", bad.to_str().unwrap(), "--config-test"])
        .output()
        .unwrap();
    assert_eq!(t.status.code(), Some(1), "{t:?}");
    let err = String::from_utf8_lossy(&t.stderr);
    assert!(err.contains(&format!("{}:", bad.display())), "{err}");

    lab.start_xvsd(&["--config", conf.to_str().unwrap()]);
    wait_for("two servers", Duration::from_secs(5), || {
        table(&lab).len() == 2
    });
    // A long-lived connection to one of them.
    let mut ka = KeepAlive::open(&lab);
    let first = ka.get();
    assert!(first == "rs1" || first == "rs2", "{first}");
    let before = lab.adm_ok(&["-L", "-n", "--stats"]);

    // Change rs2's weight and reload: rs2 edited in place, rs1 untouched, the
    // connection carries on with the same server.
    std::fs::write(&conf, two_server_conf(5)).unwrap();
    lab.signal_xvsd("HUP");
    poll("rs2 at weight 5", Duration::from_secs(5), || {
        let t = table(&lab);
        t.contains(&(RS_IPS[1].to_string(), 5))
            .then_some(())
            .ok_or(format!("{t:?}"))
    });
    for _ in 0..5 {
        assert_eq!(ka.get(), first);
    }
    // Counters kept (not reset by the reload): the service's connection count.
    let after = lab.adm_ok(&["-L", "-n", "--stats"]);
    let conns = |s: &str| -> u64 {
        s.lines()
            .find(|l| l.starts_with("TCP"))
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    assert!(
        conns(&after) >= conns(&before) && conns(&before) >= 1,
        "{before}\n{after}"
    );

    // A bad file: refused with FILE:LINE, nothing changes.
    std::fs::write(&conf, &bad_text).unwrap();
    let table_before = table(&lab);
    lab.signal_xvsd("HUP");
    wait_for(
        "the reload refusal in the log",
        Duration::from_secs(5),
        || lab.xvsd_log().contains("reload refused"),
    );
    assert!(lab.xvsd_log().contains(&format!("{}:", conf.display())));
    assert_eq!(table(&lab), table_before);
    assert_eq!(ka.get(), first);
    assert!(lab.stop_xvsd());
}

/// One UDP request from the client's fixed source port `sport` (so that every call is the
/// same flow): the reply text, or `<timeout>`.
fn udp_from_port(lab: &Lab, port: u16, sport: u16) -> String {
    let py = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('0.0.0.0',{sport}))\n\
         s.settimeout(3)\ns.sendto(b'q',('{VIP}',{port}))\n\
         try: print(s.recvfrom(100)[0].decode().strip())\n\
         except socket.timeout: print('<timeout>')"
    );
    let o = lab.exec("client", &["python3", "-c", &py]);
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn udp_conf(lab: &Lab, policy: &str) -> String {
    let misc = |k: u32| format!("/tmp/xvs-test-{}-misc{k}.sh", lab.prefix);
    format!(
        r#"
virtual_server {VIP} 5353 {{
    delay_loop 1
    lb_algo rr
    lb_kind DR
    protocol UDP
    {policy}
    real_server {rs1} 5353 {{
        inhibit_on_failure
        MISC_CHECK {{
            misc_path {m1}
        }}
    }}
    real_server {rs2} 5353 {{
        inhibit_on_failure
        MISC_CHECK {{
            misc_path {m2}
        }}
    }}
}}
"#,
        rs1 = RS_IPS[0],
        rs2 = RS_IPS[1],
        m1 = misc(1),
        m2 = misc(2),
    )
}

#[test]
fn a_failed_servers_udp_flow_stays_by_default_and_moves_with_reassign() {
    let mut lab = Lab::up("xvska4", 2, 1);
    // Each server's check exits with the number in its file: 0 up, 1 down. The servers
    // themselves keep running: only the checks say they are dead.
    let prefix = lab.prefix.clone();
    let state = |k: u32| PathBuf::from(format!("/tmp/xvs-test-{prefix}-state{k}"));
    for k in 1..=2 {
        std::fs::write(state(k), "0\n").unwrap();
        let m = write(
            &lab,
            &format!("misc{k}.sh"),
            &format!("#!/bin/sh\nexit $(cat {})\n", state(k).display()),
        );
        Command::new("chmod").arg("+x").arg(&m).status().unwrap();
    }
    let conf = write(&lab, "udp.conf", &udp_conf(&lab, ""));
    lab.start_xvsd(&["--config", conf.to_str().unwrap()]);
    let first = udp_from_port(&lab, 5353, 40001);
    let k: u32 = match first.as_str() {
        "rs1" => 1,
        "rs2" => 2,
        other => panic!("no answer: {other}"),
    };
    let (dead_ip, other) = if k == 1 {
        (RS_IPS[0], "rs2")
    } else {
        (RS_IPS[1], "rs1")
    };
    // Its checks fail: weight 0 (inhibit_on_failure). IPVS's policy keeps the flow on it.
    std::fs::write(state(k), "1\n").unwrap();
    poll(
        "the failed server at weight 0",
        Duration::from_secs(10),
        || {
            let t = table(&lab);
            t.contains(&(dead_ip.to_string(), 0))
                .then_some(())
                .ok_or(format!("{t:?}"))
        },
    );
    assert_eq!(udp_from_port(&lab, 5353, 40001), first);
    // New flows go to the live server.
    assert_eq!(udp_from_port(&lab, 5353, 40002), other);
    // xvs_on_dead reassign (a reload changes only the policy): the same flow's next
    // datagram is answered by the live server, without loss.
    std::fs::write(&conf, udp_conf(&lab, "xvs_on_dead reassign")).unwrap();
    lab.signal_xvsd("HUP");
    wait_for("the reload", Duration::from_secs(5), || {
        lab.xvsd_log().contains("configuration reloaded")
    });
    assert_eq!(udp_from_port(&lab, 5353, 40001), other);
    assert!(lab.counter("dead_rescheduled") >= 1);
    assert!(lab.stop_xvsd());
}
