//! Whole-file tests: the fixtures in `tests/kconf/`, every checker, errors with their exact
//! `FILE:LINE: message`, and a never-panics property.

use super::*;
use crate::model::{Forward, Protocol, ServiceKey};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/kconf")
        .join(name)
}

fn opts() -> ReadOptions {
    ReadOptions {
        config_id: Some("main".to_string()),
    }
}

fn parse(text: &str) -> KConfig {
    match parse_str_with(text, Path::new("k.conf"), &opts()) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

fn parse_err(text: &str) -> String {
    match parse_str_with(text, Path::new("k.conf"), &opts()) {
        Ok(c) => panic!("parsed: {c:?}"),
        Err(e) => e.to_string(),
    }
}

fn warnings(c: &KConfig) -> Vec<String> {
    c.warnings.iter().map(|w| w.to_string()).collect()
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// The seeds' lab file (keepalived-semantics.md), verbatim.
#[test]
fn seed_lab_file() {
    let path = fixture("seed-lab.conf");
    let c = load_with(&path, &opts()).unwrap();
    assert_eq!(c.ignored.len(), 1);
    assert_eq!(c.ignored[0].0, "vrrp_instance");
    assert_eq!(c.ignored[0].1.line, 1);
    assert_eq!(c.virtual_servers.len(), 1);
    let vs = &c.virtual_servers[0];
    assert_eq!(
        vs.services,
        vec![ServiceKey {
            proto: Protocol::Tcp,
            addr: ip("192.168.0.38"),
            port: 80
        }]
    );
    assert_eq!(vs.protocol, Protocol::Tcp);
    assert_eq!(vs.scheduler, "rr");
    assert_eq!(vs.method, Forward::Route);
    // `persistence_timeout 0` is out of keepalived's range [1, 2678400]: not persistent.
    assert_eq!(vs.persistence, None);
    assert_eq!(vs.quorum, 1);
    assert_eq!(vs.hysteresis, 0);
    assert_eq!(vs.real_servers.len(), 2);
    for (rs, addr) in vs.real_servers.iter().zip(["192.168.0.18", "192.168.0.28"]) {
        assert_eq!(rs.addr, ip(addr));
        assert_eq!(rs.port, Some(80));
        assert_eq!(rs.weight, 1);
        assert_eq!(rs.method, Forward::Route);
        assert_eq!(rs.checkers.len(), 1);
        let ch = &rs.checkers[0];
        assert_eq!(ch.kind, CheckKind::Tcp);
        assert_eq!(ch.connect_ip, ip(addr));
        assert_eq!(ch.connect_port, 80);
        assert_eq!(
            ch.timing,
            Timing {
                delay_loop: Duration::from_secs(6),
                connect_timeout: Duration::from_secs(10),
                // keepalived 2.2.7 knows nb_get_retry only in HTTP_GET/SSL_GET; in TCP_CHECK it
                // is an unknown keyword (`keepalived -t`: "Unknown keyword 'nb_get_retry'"),
                // so the TCP_CHECK default retry of 1 stays.
                retry: 1,
                delay_before_retry: Duration::from_secs(3),
                warmup: Duration::from_secs(6),
            }
        );
    }
    let p = path.display();
    assert_eq!(
        warnings(&c),
        vec![
            format!("{p}:20: number '0' outside range [1, 2678400]: persistence_timeout invalid - not persistent"),
            format!("{p}:27: Unknown keyword 'nb_get_retry'"),
            format!("{p}:37: Unknown keyword 'nb_get_retry'"),
        ]
    );
}

#[test]
fn defaults_and_keepalived_warnings() {
    let c = parse(
        "virtual_server 10.0.0.1 80 {\n\
         real_server 10.0.0.2 80 {\n\
         TCP_CHECK {\n}\n}\n}\n",
    );
    let vs = &c.virtual_servers[0];
    assert_eq!(vs.protocol, Protocol::Udp);
    assert_eq!(vs.scheduler, "wlc");
    assert_eq!(vs.method, Forward::Masq);
    assert_eq!(vs.persistence, None);
    assert_eq!(vs.on_dead, OnDead::Ipvs);
    let rs = &vs.real_servers[0];
    assert_eq!(
        (rs.weight, rs.method, rs.inhibit_on_failure, rs.alpha),
        (1, Forward::Masq, false, false)
    );
    let t = rs.checkers[0].timing;
    assert_eq!(t.delay_loop, Duration::from_secs(60));
    assert_eq!(t.connect_timeout, Duration::from_secs(5));
    assert_eq!(t.retry, 1);
    assert_eq!(t.delay_before_retry, Duration::from_secs(1));
    assert_eq!(t.warmup, Duration::from_secs(60));
    // The texts `keepalived -t` prints for the same file.
    assert_eq!(
        warnings(&c),
        vec![
            "k.conf:1: Virtual server [10.0.0.1]:none:80: no protocol set - defaulting to UDP",
            "k.conf:1: Virtual server [10.0.0.1]:udp:80: no scheduler set, setting default 'wlc'",
            "k.conf:1: Virtual server [10.0.0.1]:udp:80: no forwarding method set, setting default NAT",
        ]
    );
}

#[test]
fn inheritance_vs_rs_checker() {
    let c = parse(
        "virtual_server 10.0.0.1 80 {\n\
           protocol TCP\n lb_algo wrr\n lb_kind NAT\n\
           delay_loop 10\n connect_timeout 2.5\n retry 4\n delay_before_retry 7\n warmup 0\n\
           alpha\n inhibit_on_failure\n weight 3\n virtualhost vs.example\n\
           real_server 10.0.0.2 8080 {\n\
             delay_loop 20\n retry 2\n alpha no\n\
             HTTP_GET {\n url {\n path /\n }\n delay_loop 30\n }\n\
             TCP_CHECK {\n retry 0\n connect_timeout 1\n connect_ip 10.9.9.9\n connect_port 99\n\
               bindto 10.0.0.100\n bind_port 5000\n alpha\n }\n\
             DNS_CHECK {\n }\n\
             MISC_CHECK {\n misc_path /bin/true\n }\n\
           }\n\
           real_server 10.0.0.3 {\n weight 0\n inhibit_on_failure false\n TCP_CHECK {\n }\n }\n\
         }\n",
    );
    let vs = &c.virtual_servers[0];
    let rs = &vs.real_servers[0];
    assert_eq!(
        (rs.weight, rs.alpha, rs.inhibit_on_failure),
        (3, false, true)
    );
    let [http, tcp, dns, misc] = &rs.checkers[..] else {
        panic!("{:?}", rs.checkers)
    };
    assert_eq!(
        http.timing,
        Timing {
            delay_loop: Duration::from_secs(30),
            connect_timeout: Duration::from_millis(2500),
            retry: 2,
            delay_before_retry: Duration::from_secs(7),
            warmup: Duration::ZERO,
        }
    );
    assert!(!http.alpha);
    let CheckKind::Http(h) = &http.kind else {
        panic!()
    };
    assert_eq!(h.virtualhost.as_deref(), Some("vs.example"));
    assert_eq!(h.urls[0].status_codes, vec![200..=299]);
    assert_eq!(h.http_protocol, "1.0");
    assert_eq!((http.connect_ip, http.connect_port), (ip("10.0.0.2"), 8080));
    assert_eq!(tcp.timing.retry, 0);
    assert_eq!(tcp.timing.connect_timeout, Duration::from_secs(1));
    assert_eq!((tcp.connect_ip, tcp.connect_port), (ip("10.9.9.9"), 99));
    assert_eq!(
        (tcp.bindto, tcp.bind_port),
        (Some(ip("10.0.0.100")), Some(5000))
    );
    assert!(tcp.alpha);
    assert_eq!(
        dns.timing.retry, 2,
        "the real server's retry beats DNS's default"
    );
    assert_eq!(misc.timing.delay_loop, Duration::from_secs(20));
    let CheckKind::Misc(m) = &misc.kind else {
        panic!()
    };
    assert_eq!(
        m.timeout,
        Duration::from_secs(10),
        "misc_timeout defaults to the VS delay_loop"
    );
    // NAT real server without port: the service's.
    let rs2 = &vs.real_servers[1];
    assert_eq!(
        (rs2.port, rs2.weight, rs2.inhibit_on_failure, rs2.alpha),
        (Some(80), 0, false, true)
    );
    assert_eq!(rs2.checkers[0].connect_port, 80);
    // Quorum 1 fits the weight sum 3.
    assert_eq!(vs.quorum, 1);
}

#[test]
fn checker_kind_defaults() {
    let c = parse(
        "virtual_server 10.0.0.1 53 {\n protocol UDP\n lb_algo rr\n lb_kind DR\n delay_loop 9\n\
           real_server 10.0.0.2 53 {\n\
             DNS_CHECK {\n }\n MISC_CHECK {\n misc_path \"/bin/check -x\"\n }\n\
             HTTP_GET {\n url {\n path /\n }\n }\n UDP_CHECK {\n }\n PING_CHECK {\n }\n SMTP_CHECK {\n }\n\
           }\n}\n",
    );
    let ch = &c.virtual_servers[0].real_servers[0].checkers;
    let r: Vec<(u32, Duration)> = ch
        .iter()
        .map(|c| (c.timing.retry, c.timing.delay_before_retry))
        .collect();
    assert_eq!(
        r,
        vec![
            (3, Duration::from_secs(9)),
            (0, Duration::from_secs(1)),
            (1, Duration::from_secs(3)),
            (1, Duration::from_secs(1)),
            (1, Duration::from_secs(1)),
            (1, Duration::from_secs(1)),
        ]
    );
    let CheckKind::Dns(d) = &ch[0].kind else {
        panic!()
    };
    assert_eq!((d.qtype.as_str(), d.name.as_str()), ("SOA", "."));
    let CheckKind::Misc(m) = &ch[1].kind else {
        panic!()
    };
    assert_eq!(m.script.argv, vec!["/bin/check", "-x"]);
    assert_eq!(m.script.user, None);
    let CheckKind::Udp(u) = &ch[3].kind else {
        panic!()
    };
    assert_eq!((u.min_reply_length, u.max_reply_length), (0, Some(255)));
    assert_eq!(u.payload, b"keepalived check - keepalived ch");
    assert_eq!(u.payload.len(), 32);
    let CheckKind::Smtp(s) = &ch[5].kind else {
        panic!()
    };
    assert_eq!(s.helo_name.as_deref(), Some("smtpchecker.keepalived.org"));
}

#[test]
fn every_checker_fixture() {
    let path = fixture("checkers.conf");
    let c = load_with(&path, &opts()).unwrap();
    let vs = &c.virtual_servers[0];
    let ch = &vs.real_servers[0].checkers;
    assert_eq!(ch.len(), 9, "{ch:#?}");
    let CheckKind::Http(h) = &ch[0].kind else {
        panic!()
    };
    assert!(!h.tls);
    assert_eq!(h.http_protocol, "1.1");
    assert!(h.fast_recovery);
    assert_eq!(h.virtualhost.as_deref(), Some("check.example"));
    assert_eq!(h.urls.len(), 2);
    assert_eq!(h.urls[0].path, "/health");
    assert_eq!(
        h.urls[0].digest.as_deref(),
        Some("9b3a0c85a887a256d6939da88aabd8cd")
    );
    assert_eq!(
        h.urls[0].status_codes,
        vec![200..=200, 300..=302, 404..=404]
    );
    assert_eq!(h.urls[1].virtualhost.as_deref(), Some("other.example"));
    assert_eq!(h.urls[1].regex.as_deref(), Some("ok|fine"));
    assert!(h.urls[1].regex_no_match);
    assert_eq!(ch[0].timing.retry, 2, "nb_get_retry works in HTTP_GET");
    let CheckKind::Http(s) = &ch[1].kind else {
        panic!()
    };
    assert!(s.tls && s.enable_sni);
    assert_eq!(
        s.virtualhost.as_deref(),
        Some("rs.example"),
        "real server virtualhost"
    );
    let CheckKind::Misc(m) = &ch[2].kind else {
        panic!()
    };
    assert_eq!(m.script.argv, vec!["/usr/local/bin/check", "a b", "c"]);
    assert_eq!(
        (m.script.user.as_deref(), m.script.group.as_deref()),
        (Some("nobody"), Some("nogroup"))
    );
    assert_eq!(m.timeout, Duration::from_secs(15));
    assert!(m.dynamic);
    let CheckKind::Udp(u) = &ch[3].kind else {
        panic!()
    };
    assert_eq!(u.payload, vec![0xab, 0x12, 0x0f, 0x03]);
    assert_eq!(u.require_reply, Some(vec![0xca, 0xfe]));
    assert_eq!((u.min_reply_length, u.max_reply_length), (2, Some(512)));
    let CheckKind::Dns(d) = &ch[4].kind else {
        panic!()
    };
    assert_eq!((d.qtype.as_str(), d.name.as_str()), ("AAAA", "example.com"));
    assert_eq!(ch[5].kind, CheckKind::Ping);
    let CheckKind::Smtp(sm) = &ch[6].kind else {
        panic!()
    };
    assert_eq!(sm.helo_name.as_deref(), Some("me.example"));
    assert_eq!((ch[6].connect_ip, ch[6].connect_port), (ip("10.0.0.2"), 25));
    let CheckKind::File(f) = &ch[7].kind else {
        panic!()
    };
    assert_eq!(
        (f.name.as_str(), f.path.as_path()),
        ("flag", Path::new("/run/xvs/flag"))
    );
    assert_eq!(
        (f.weight, f.reverse, f.init_value, f.init_overwrite),
        (-10, true, Some(5), true)
    );
    assert_eq!(ch[8].kind, CheckKind::Tcp);
    let rs = &vs.real_servers[0];
    assert_eq!(
        rs.notify_up.as_ref().unwrap().argv,
        vec!["/bin/echo", "up", "it's"]
    );
    assert_eq!(rs.notify_up.as_ref().unwrap().user.as_deref(), Some("root"));
    assert_eq!(rs.notify_down.as_ref().unwrap().argv, vec!["/bin/down"]);
    assert_eq!((rs.u_threshold, rs.l_threshold), (100, 10));
    assert_eq!(vs.quorum_up.as_ref().unwrap().argv, vec!["/bin/q", "up"]);
    assert_eq!(
        vs.sched_flags,
        vec!["sh-port".to_string(), "flag-3".to_string()]
    );
    assert_eq!(vs.on_dead, OnDead::Reassign);
    let s = vs.sorry_server.as_ref().unwrap();
    assert_eq!(
        (s.addr, s.port, s.method),
        (ip("10.0.0.250"), Some(8080), Forward::Masq)
    );
    assert!(vs.sorry_server_inhibit);
    assert_eq!(vs.granularity, Some(ip("255.255.255.0")));
    assert_eq!(vs.persistence, Some(360));
    assert!(vs.ha_suspend && vs.omega);
    assert_eq!((vs.quorum, vs.hysteresis), (2, 1));
    assert_eq!(
        warnings(&c),
        vec![format!(
            "{}:38: nb_get_retry is deprecated - please use 'retry'",
            path.display()
        )]
    );
}

#[test]
fn groups_expand_with_ranges_and_cidr() {
    let c = parse(
        "virtual_server_group WEB {\n 10.0.0.1-3 80\n 10.0.1.8/30 443\n 10.0.2.250-10.0.3.1 8080\n}\n\
         virtual_server group WEB {\n protocol TCP\n lb_algo rr\n lb_kind DR\n\
           real_server 10.1.0.1 {\n TCP_CHECK {\n connect_port 80\n }\n }\n}\n",
    );
    let vs = &c.virtual_servers[0];
    assert_eq!(vs.group.as_deref(), Some("WEB"));
    let got: Vec<String> = vs
        .services
        .iter()
        .map(|s| format!("{}:{}", s.addr, s.port))
        .collect();
    assert_eq!(
        got,
        vec![
            "10.0.0.1:80",
            "10.0.0.2:80",
            "10.0.0.3:80",
            "10.0.1.8:443",
            "10.0.1.9:443",
            "10.0.1.10:443",
            "10.0.1.11:443",
            "10.0.2.250:8080",
            "10.0.2.251:8080",
            "10.0.2.252:8080",
            "10.0.2.253:8080",
            "10.0.2.254:8080",
            "10.0.2.255:8080",
            "10.0.3.0:8080",
            "10.0.3.1:8080",
        ]
    );
    assert_eq!(vs.real_servers[0].port, None);
    assert_eq!(vs.real_servers[0].checkers[0].connect_port, 80);
    assert_eq!(vs.persistence, None);
    // A group whose ports differ gives a port-less checker nothing to connect to.
    let e = parse_err(
        "virtual_server_group G {\n 10.0.0.1 80\n 10.0.0.2 81\n}\n\
         virtual_server group G {\n protocol TCP\n real_server 10.1.0.1 {\n TCP_CHECK {\n }\n }\n}\n",
    );
    assert_eq!(
        e,
        "k.conf:8: checker of real server 10.1.0.1: no port to check (the real server has none and the virtual server group more than one): set connect_port"
    );
}

#[test]
fn includes_fixture() {
    let path = fixture("includes/main.conf");
    let c = load_with(&path, &opts()).unwrap();
    let names: Vec<String> = c
        .virtual_servers
        .iter()
        .map(|v| v.services[0].to_string())
        .collect();
    assert_eq!(
        names,
        vec!["TCP 10.0.0.10:80", "TCP 10.0.0.11:80", "UDP 10.0.0.12:53"]
    );
    // The included file's lines carry its own name.
    let inc = &c.virtual_servers[0].loc;
    assert!(inc.file.ends_with("includes/conf.d/10-web.conf"), "{inc}");
    assert_eq!(inc.line, 2);
    let ign: Vec<&str> = c.ignored.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(ign, vec!["global_defs", "vrrp_instance"]);
    let w = warnings(&c);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].ends_with(": Config files missing 'missing.conf'."),
        "{w:?}"
    );
}

#[test]
fn top_level_blocks_skipped_and_recorded() {
    let c = parse(
        "global_defs {\n router_id x\n lvs_sync_daemon eth0 VI_1\n nested { a { b } }\n}\n\
         vrrp_script chk {\n script \"/bin/true\"\n}\nvrrp_sync_group G {\n group {\n VI_1\n }\n}\n\
         static_ipaddress {\n 10.0.0.1/24 dev eth0\n}\nlinkbeat_use_polling\nnet_namespace blue\n\
         bfd_instance b {\n}\nfrobnicate {\n x\n}\n",
    );
    let ign: Vec<(&str, u32)> = c
        .ignored
        .iter()
        .map(|(k, l)| (k.as_str(), l.line))
        .collect();
    assert_eq!(
        ign,
        vec![
            ("global_defs", 1),
            ("vrrp_script", 6),
            ("vrrp_sync_group", 9),
            ("static_ipaddress", 14),
            ("linkbeat_use_polling", 17),
            ("net_namespace", 18),
            ("bfd_instance", 19),
        ]
    );
    assert_eq!(
        warnings(&c),
        vec!["k.conf:21: Unknown keyword 'frobnicate'"]
    );
}

#[test]
fn unknown_keywords_warn_and_skip_their_blocks() {
    let c = parse(
        "virtual_server 10.0.0.1 80 {\n protocol TCP\n lb_algo rr\n lb_kind DR\n bogus 1\n\
           real_server 10.0.0.2 80 {\n weird\n FOO_CHECK {\n connect_port 1\n }\n TCP_CHECK {\n nope\n }\n }\n}\n",
    );
    assert_eq!(
        warnings(&c),
        vec![
            "k.conf:5: Unknown keyword 'bogus'",
            "k.conf:7: Unknown keyword 'weird'",
            "k.conf:8: Unknown keyword 'FOO_CHECK'",
            "k.conf:12: Unknown keyword 'nope'",
        ]
    );
    assert_eq!(c.virtual_servers[0].real_servers[0].checkers.len(), 1);
}

#[test]
fn same_line_blocks_and_next_line_braces() {
    let c = parse(
        "virtual_server 10.0.0.1 80\n{\n protocol TCP\n lb_algo rr\n lb_kind DR\n\
         real_server 10.0.0.2 80 { weight 5 }\n real_server 10.0.0.3 80\n {\n weight 7\n }\n }\n",
    );
    let w: Vec<u32> = c.virtual_servers[0]
        .real_servers
        .iter()
        .map(|r| r.weight)
        .collect();
    assert_eq!(w, vec![5, 7]);
}

#[test]
fn persistence_rules() {
    let base = |extra: &str, vs: &str| {
        parse(&format!(
            "virtual_server {vs} {{\n protocol TCP\n lb_algo rr\n lb_kind DR\n{extra}\n real_server 10.0.0.2 80 {{\n }}\n}}\n"
        ))
        .virtual_servers[0]
            .clone()
    };
    assert_eq!(
        base("persistence_timeout", "10.0.0.1 80").persistence,
        Some(360)
    );
    assert_eq!(
        base("persistence_timeout 50", "10.0.0.1 80").persistence,
        Some(50)
    );
    assert_eq!(
        base("persistence_granularity 255.255.0.0", "10.0.0.1 80").persistence,
        Some(360)
    );
    // No port: made persistent, and DR real server ports reset to the service's (0).
    let vs = base("", "10.0.0.1");
    assert_eq!(vs.persistence, Some(360));
    assert_eq!(vs.services[0].port, 0);
    assert_eq!(vs.real_servers[0].port, None);
    let vs = base("", "10.0.0.1 0");
    assert_eq!(vs.services[0].port, 0);
}

#[test]
fn quorum_and_hysteresis_corrections() {
    let c = parse(
        "virtual_server 10.0.0.1 80 {\n protocol TCP\n lb_algo rr\n lb_kind NAT\n quorum 5\n hysteresis 9\n\
           real_server 10.0.0.2 80 {\n }\n real_server 10.0.0.2 80 {\n }\n real_server 10.0.0.3 81 {\n weight 0\n }\n}\n",
    );
    let vs = &c.virtual_servers[0];
    assert_eq!(vs.real_servers.len(), 2);
    assert_eq!((vs.quorum, vs.hysteresis), (1, 0));
    assert_eq!(
        warnings(&c),
        vec![
            "k.conf:9: VS [10.0.0.1]:tcp:80: real server [10.0.0.2]:tcp:80 is duplicated - removing second rs",
            "k.conf:1: Warning - quorum 5 for [10.0.0.1]:tcp:80 exceeds total weight of real servers 1, reducing quorum to 1",
            "k.conf:1: Virtual server [10.0.0.1]:tcp:80: hysteresis 9 >= quorum 1; setting hysteresis to 0",
        ]
    );
}

#[test]
fn vs_without_real_servers_is_dropped() {
    let c = parse("virtual_server 10.0.0.9 80 {\n protocol TCP\n}\n");
    assert!(c.virtual_servers.is_empty());
    assert_eq!(
        warnings(&c),
        vec!["k.conf:1: Virtual server [10.0.0.9]:tcp:80 has no real servers - ignoring"]
    );
}

#[test]
fn dr_port_mismatch_is_reset() {
    let c = parse(
        "virtual_server 10.0.0.1 80 {\n protocol TCP\n lb_algo rr\n lb_kind DR\n real_server 10.0.0.2 8080 {\n }\n}\n",
    );
    assert_eq!(c.virtual_servers[0].real_servers[0].port, Some(80));
    assert_eq!(
        warnings(&c),
        vec!["k.conf:5: WARNING - virtual server [10.0.0.1]:tcp:80 and real server [10.0.0.2]:tcp:8080 ports don't match - resetting"]
    );
}

#[test]
fn scheduler_flags_follow_keepalived() {
    let c = parse(
        "virtual_server 10.0.0.1 80 {\n protocol TCP\n sh-port\n lb_algo sh\n sh-fallback\n mh-port\n flag-1\n lb_kind DR\n\
         real_server 10.0.0.2 80 {\n }\n}\n",
    );
    assert_eq!(
        c.virtual_servers[0].sched_flags,
        vec!["sh-fallback", "flag-1"]
    );
    assert_eq!(
        warnings(&c),
        vec![
            "k.conf:3: sh-port only applies to sh scheduler - ignoring",
            "k.conf:6: mh-port does not apply to scheduler sh - ignoring",
        ]
    );
}

/// What xvs cannot do is refused, with the place.
#[test]
fn refusals() {
    let vs = |body: &str| {
        format!("virtual_server 10.0.0.1 80 {{\n{body}\n real_server 10.0.0.2 80 {{\n }}\n}}\n")
    };
    let rs = |body: &str| {
        format!("virtual_server 10.0.0.1 80 {{\n protocol TCP\n real_server 10.0.0.2 80 {{\n{body}\n }}\n}}\n")
    };
    let cases: Vec<(String, &str)> = vec![
        (
            "virtual_server fwmark 1 {\n}\n".into(),
            "k.conf:1: fwmark virtual servers are not supported by xvs",
        ),
        (
            "virtual_server fe80::1 80 {\n}\n".into(),
            "k.conf:1: virtual server fe80::1: IPv6 is not supported by xvs",
        ),
        (
            vs("protocol SCTP"),
            "k.conf:2: protocol SCTP is not supported by xvs",
        ),
        (
            vs("ops"),
            "k.conf:2: ops (one-packet scheduling) is not implemented by xvs",
        ),
        (
            vs("lvs_method TUN type gue port 6080"),
            "k.conf:2: tunnel type gue is not supported by xvs (ipip only)",
        ),
        (
            vs("lvs_method TUN csum"),
            "k.conf:2: ipip tunnels do not support checksum option.",
        ),
        (
            vs("persistence_engine sip"),
            "k.conf:2: persistence_engine is not supported by xvs",
        ),
        (
            vs("ip_family inet6"),
            "k.conf:2: ip_family inet6: IPv6 is not supported by xvs",
        ),
        (
            rs("BFD_CHECK {\n name b\n }"),
            "k.conf:4: BFD_CHECK is not supported by xvs",
        ),
        (
            rs("TCP_CHECK {\n fwmark 3\n }"),
            "k.conf:5: fwmark (SO_MARK on check connections) is not supported by xvs",
        ),
        (
            rs("TCP_CHECK {\n bind_if eth0\n }"),
            "k.conf:5: bind_if is not supported by xvs checkers",
        ),
        (
            rs("UDP_CHECK {\n require_reply 12xX\n }"),
            "k.conf:5: Invalid hex string for UDP_CHECK reply",
        ),
        (
            "virtual_server_group G {\n fwmark 7\n}\n".into(),
            "k.conf:2: (G): fwmark group members are not supported by xvs",
        ),
        (
            "virtual_server_group G {\n 2001:db8::1 80\n}\n".into(),
            "k.conf:2: virtual server group address 2001:db8::1: IPv6 is not supported by xvs",
        ),
        (
            "SSL {\n ca /x\n}\n".into(),
            "k.conf:1: SSL (the SSL_GET client certificate and CA) is not supported by xvs",
        ),
        (
            "~LST(a, 1) x\n".into(),
            "k.conf:1: ~LST is not supported by xvs",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(parse_err(&text), want, "{text}");
    }
}

/// Malformed values and structure: errors with the place.
#[test]
fn errors_with_locations() {
    let rs = |body: &str| {
        format!("virtual_server 10.0.0.1 80 {{\n protocol TCP\n real_server 10.0.0.2 80 {{\n{body}\n }}\n}}\n")
    };
    let cases: Vec<(String, &str)> = vec![
        ("virtual_server 10.0.0.300 80 {\n}\n".into(), "k.conf:1: Invalid virtual server IP address 10.0.0.300 - skipping"),
        ("virtual_server 10.0.0.1 99999 {\n}\n".into(), "k.conf:1: virtual server port: number '99999' outside range [1, 65535]"),
        (rs("weight 65536"), "k.conf:4: Real server weight: number '65536' outside range [0, 65535]"),
        (rs("weight -1"), "k.conf:4: Real server weight: negative number '-1'"),
        (rs("weight many"), "k.conf:4: Real server weight: invalid number 'many'"),
        (rs("delay_loop 0"), "k.conf:4: real server delay_loop: number '0' outside range [0.000001, 18446744073709.551614]"),
        (rs("connect_timeout abc"), "k.conf:4: real server connect_timeout: invalid number 'abc'"),
        (rs("retry 0"), "k.conf:4: real server retry: number '0' outside range [1, 4294967295]"),
        (rs("delay_loop"), "k.conf:4: Configuration line starting `delay_loop` is missing a parameter after keyword `delay_loop` at word position 2"),
        (rs("lvs_method FOO"), "k.conf:4: PARSER : unknown [FOO] routing method."),
        (rs("TCP_CHECK {\n connect_port 0\n }"), "k.conf:5: Invalid checker connect_port: number '0' outside range [1, 65535]"),
        (rs("TCP_CHECK {\n connect_ip 1.2.3\n }"), "k.conf:5: Invalid connect_ip address 1.2.3"),
        (rs("HTTP_GET {\n }"), "k.conf:4: HTTP/SSL_GET checker has no urls specified"),
        (rs("HTTP_GET {\n url {\n status_code 200\n }\n }"), "k.conf:5: HTTP/SSL_GET checker url has no path"),
        (rs("HTTP_GET {\n url {\n path /\n status_code 200-100\n }\n }"), "k.conf:7: Invalid HTTP_GET status code '200-100'"),
        (rs("HTTP_GET {\n url {\n path /\n digest 123\n }\n }"), "k.conf:7: digest '123' character length should be 32 rather than 3"),
        (rs("MISC_CHECK {\n misc_timeout 5\n }"), "k.conf:4: No script path has been specified for MISC_CHECKER"),
        (rs("FILE_CHECK {\n track_file nope\n }"), "k.conf:5: track_file nope not found"),
        (rs("notify_up \"/bin/x\" u g extra"), "k.conf:4: notify_up: extra words after the user and group: 'extra' (quote the command line)"),
        (rs("DNS_CHECK {\n type BOGUS\n }"), "k.conf:5: Unknown DNS check type BOGUS"),
        ("virtual_server 10.0.0.1 80 {\n protocol TCP\n".into(), "k.conf:1: There are 1 missing '}'s or extra '{'s (block 'virtual_server' is not closed)"),
        ("}\n".into(), "k.conf:1: Extra '}' found"),
        ("virtual_server 10.0.0.1 80\n real_server 10.0.0.2 80 {\n}\n".into(), "k.conf:1: Missing '{' at beginning of configuration block 'virtual_server'"),
        ("virtual_server group NOPE {\n protocol TCP\n real_server 10.0.0.2 80 {\n }\n}\n".into(), "k.conf:1: Virtual server group NOPE specified but not configured"),
        ("virtual_server_group G {\n 10.0.0.5-3 80\n}\n".into(), "k.conf:2: Address range end is not greater than address range start - 10.0.0.5-3"),
        ("virtual_server_group G {\n 10.0.0.1/24 80\n}\n".into(), "k.conf:2: Address mask bits not empty - 10.0.0.1/24"),
        ("virtual_server_group G {\n 10.0.0.0/0 80\n}\n".into(), "k.conf:2: Invalid netmask - 10.0.0.0/0"),
        ("virtual_server 10.0.0.1 80 {\n xvs_on_dead maybe\n}\n".into(), "k.conf:2: xvs_on_dead maybe: expected ipvs, expire or reassign"),
    ];
    for (text, want) in cases {
        assert_eq!(parse_err(&text), want, "{text}");
    }
}

#[test]
fn xvs_on_dead() {
    for (w, want) in [
        ("ipvs", OnDead::Ipvs),
        ("expire", OnDead::Expire),
        ("reassign", OnDead::Reassign),
    ] {
        let c = parse(&format!(
            "virtual_server 10.0.0.1 80 {{\n protocol TCP\n xvs_on_dead {w}\n real_server 10.0.0.2 80 {{\n }}\n}}\n"
        ));
        assert_eq!(c.virtual_servers[0].on_dead, want);
    }
}

#[test]
fn smtp_host_blocks_make_checkers() {
    let c = parse(
        "virtual_server 10.0.0.1 25 {\n protocol TCP\n lb_algo rr\n lb_kind DR\n real_server 10.0.0.2 25 {\n\
           SMTP_CHECK {\n helo_name h\n retry 4\n host {\n connect_ip 10.0.0.7\n connect_port 2525\n }\n host {\n }\n }\n }\n}\n",
    );
    let ch = &c.virtual_servers[0].real_servers[0].checkers;
    let dst: Vec<(Ipv4Addr, u16, u32)> = ch
        .iter()
        .map(|c| (c.connect_ip, c.connect_port, c.timing.retry))
        .collect();
    assert_eq!(
        dst,
        vec![(ip("10.0.0.7"), 2525, 4), (ip("10.0.0.2"), 25, 4)]
    );
}

#[test]
fn definitions_and_seq_in_a_config() {
    let c = parse(
        "$VIP=10.0.0.1\n$PORT=80\n@main $W=5\n@backup $W=9\n\
         virtual_server $VIP $PORT {\n protocol TCP\n lb_algo rr\n lb_kind DR\n\
         ~SEQ(i, 2, 4) real_server 10.0.1.$i $PORT { weight $W }\n}\n",
    );
    let rs: Vec<(Ipv4Addr, u32)> = c.virtual_servers[0]
        .real_servers
        .iter()
        .map(|r| (r.addr, r.weight))
        .collect();
    assert_eq!(
        rs,
        vec![
            (ip("10.0.1.2"), 5),
            (ip("10.0.1.3"), 5),
            (ip("10.0.1.4"), 5)
        ]
    );
}

#[test]
fn sorry_server() {
    let c = parse(
        "virtual_server 10.0.0.1 80 {\n protocol TCP\n lb_algo rr\n lb_kind DR\n sorry_server 10.0.0.9 81\n sorry_server_lvs_method NAT\n\
         real_server 10.0.0.2 80 {\n }\n}\n",
    );
    let s = c.virtual_servers[0].sorry_server.as_ref().unwrap();
    assert_eq!(
        (s.addr, s.port, s.method),
        (ip("10.0.0.9"), Some(81), Forward::Masq)
    );
    let c = parse(
        "virtual_server 10.0.0.1 80 {\n protocol TCP\n lb_algo rr\n lb_kind DR\n sorry_server 10.0.0.9\n\
         real_server 10.0.0.2 80 {\n }\n}\n",
    );
    let s = c.virtual_servers[0].sorry_server.as_ref().unwrap();
    assert_eq!((s.port, s.method), (Some(80), Forward::Route));
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn token() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("{".to_string()),
            Just("}".to_string()),
            Just("\n".to_string()),
            Just("\"".to_string()),
            Just("#".to_string()),
            Just("!".to_string()),
            Just("$X=1".to_string()),
            Just("$X".to_string()),
            Just("${X}".to_string()),
            Just("~SEQ(i, 1, 3)".to_string()),
            Just("@main".to_string()),
            Just("include".to_string()),
            Just("/nonexistent/*.conf".to_string()),
            Just("\\".to_string()),
            prop::sample::select(vec![
                "virtual_server",
                "virtual_server_group",
                "real_server",
                "group",
                "fwmark",
                "TCP_CHECK",
                "HTTP_GET",
                "SSL_GET",
                "MISC_CHECK",
                "UDP_CHECK",
                "DNS_CHECK",
                "PING_CHECK",
                "SMTP_CHECK",
                "FILE_CHECK",
                "url",
                "path",
                "digest",
                "status_code",
                "track_file",
                "weight",
                "protocol",
                "TCP",
                "UDP",
                "lb_algo",
                "rr",
                "sh",
                "lb_kind",
                "DR",
                "NAT",
                "TUN",
                "persistence_timeout",
                "quorum",
                "hysteresis",
                "retry",
                "delay_loop",
                "connect_port",
                "connect_ip",
                "sorry_server",
                "notify_up",
                "misc_path",
                "payload",
                "require_reply",
                "host",
                "global_defs",
                "vrrp_instance",
            ])
            .prop_map(str::to_string),
            prop::sample::select(vec![
                "10.0.0.1",
                "10.0.0.1-5",
                "10.0.0.0/30",
                "80",
                "0",
                "65536",
                "-1",
                "1.5",
                "x",
                "::1",
                "ab12",
                "200-299",
            ])
            .prop_map(str::to_string),
            "[ -~]{0,6}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
        #[test]
        fn token_soup_never_panics(tokens in prop::collection::vec(token(), 0..60)) {
            let text = tokens.join(" ");
            let _ = parse_str_with(&text, Path::new("soup.conf"), &opts());
        }

        #[test]
        fn byte_soup_never_panics(text in "\\PC{0,300}") {
            let _ = parse_str_with(&text, Path::new("soup.conf"), &opts());
        }
    }
}

/// Each `tests/kconf/errors/*.conf` says on its first line what xvs must answer:
/// `# expect: LINE: MESSAGE` (`{DIR}` = the fixture's directory).
#[test]
fn error_fixtures() {
    let dir = fixture("errors");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    files.sort();
    assert!(files.len() >= 8, "{files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{}: no '# expect:' line", f.display()))
            .replace("{DIR}", &dir.display().to_string());
        let got = load_with(&f, &opts())
            .map(|c| format!("{c:?}"))
            .map_err(|e| e.to_string());
        assert_eq!(
            got,
            Err(format!("{}:{expect}", f.display())),
            "{}",
            f.display()
        );
    }
}

#[test]
fn groups_fixture() {
    let c = load_with(&fixture("groups.conf"), &opts()).unwrap();
    assert_eq!(warnings(&c), Vec::<String>::new());
    let web = &c.virtual_servers[0];
    let got: Vec<String> = web.services.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        got,
        vec![
            "TCP 10.0.0.1:80",
            "TCP 10.0.0.10:80",
            "TCP 10.0.0.11:80",
            "TCP 10.0.0.12:80",
            "TCP 10.0.1.254:80",
            "TCP 10.0.1.255:80",
            "TCP 10.0.2.0:80",
            "TCP 10.0.2.1:80",
            "TCP 10.0.3.0:80",
            "TCP 10.0.3.1:80",
        ]
    );
    assert_eq!(web.real_servers[0].checkers[0].connect_port, 80);
    let any = &c.virtual_servers[1];
    assert_eq!(
        any.services,
        vec![ServiceKey {
            proto: Protocol::Udp,
            addr: ip("10.0.9.1"),
            port: 0
        }]
    );
    assert_eq!(any.persistence, Some(60));
    assert_eq!(any.method, Forward::Tunnel);
    assert_eq!(any.real_servers[0].port, None);
    assert_eq!(any.real_servers[0].checkers[0].kind, CheckKind::Ping);
}
