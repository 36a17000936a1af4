//! Configuration pieces for the health tests (engine, runner), built directly rather than
//! parsed so that timings can be milliseconds.

use crate::kconf::*;
use crate::model::{Forward, Protocol, ServiceKey};
use std::time::Duration;

pub const VIP: &str = "192.168.0.38";

pub fn script(s: &str) -> Script {
    Script {
        argv: s.split(' ').map(String::from).collect(),
        user: None,
        group: None,
        loc: Loc::default(),
    }
}

pub fn tcp_check(retry: u32) -> Checker {
    Checker {
        loc: Loc::default(),
        kind: CheckKind::Tcp,
        connect_ip: "0.0.0.0".parse().unwrap(),
        connect_port: 80,
        bindto: None,
        bind_port: None,
        alpha: false,
        timing: Timing {
            delay_loop: Duration::from_secs(6),
            connect_timeout: Duration::from_secs(10),
            retry,
            delay_before_retry: Duration::from_secs(3),
            warmup: Duration::ZERO,
        },
    }
}

pub fn rs(ip: &str, weight: u32, checkers: Vec<Checker>) -> RealServer {
    RealServer {
        loc: Loc::default(),
        addr: ip.parse().unwrap(),
        port: Some(80),
        weight,
        method: Forward::Route,
        u_threshold: 0,
        l_threshold: 0,
        inhibit_on_failure: false,
        alpha: false,
        notify_up: Some(script(&format!("/up {ip}"))),
        notify_down: Some(script(&format!("/down {ip}"))),
        checkers,
    }
}

pub fn vs(real_servers: Vec<RealServer>) -> VirtualServer {
    VirtualServer {
        loc: Loc::default(),
        services: vec![ServiceKey {
            proto: Protocol::Tcp,
            addr: VIP.parse().unwrap(),
            port: 80,
        }],
        group: None,
        protocol: Protocol::Tcp,
        scheduler: "rr".into(),
        sched_flags: vec![],
        method: Forward::Route,
        persistence: None,
        granularity: None,
        ha_suspend: false,
        virtualhost: None,
        alpha: false,
        omega: false,
        quorum: 1,
        hysteresis: 0,
        quorum_up: Some(script("/qup")),
        quorum_down: Some(script("/qdown")),
        sorry_server: None,
        sorry_server_inhibit: false,
        on_dead: OnDead::Ipvs,
        real_servers,
    }
}
