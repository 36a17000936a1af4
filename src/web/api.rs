//! The read-only JSON API. Field names are part of the interface (the status page and
//! operators' automation read them): they are defined here, apart from the control
//! protocol's internal model, and documented in docs/architecture.md ("Metrics and web").
//! New fields may be added; existing ones keep their names and meaning.

use super::Sample;
use crate::model::{Counters, DataPathStats, HealthRow, Rates};
use serde::Serialize;

/// `GET /api/status`.
#[derive(Debug, Serialize)]
pub struct StatusDoc<'a> {
    /// Connection table capacity (`--conn-max`, ipvsadm's `size=`).
    pub conn_table_size: u64,
    /// Entries now: the workers' DR/TUN tables plus the NAT table.
    pub conn_entries: u64,
    /// `--set tcp tcpfin udp`, seconds.
    pub timeouts: Timeouts,
    /// Whether health checks run (`--config`); without them every `health` is null.
    pub health_checks: bool,
    pub services: Vec<ServiceDoc<'a>>,
}

#[derive(Debug, Serialize)]
pub struct Timeouts {
    pub tcp: u32,
    pub tcp_fin: u32,
    pub udp: u32,
}

#[derive(Debug, Serialize)]
pub struct ServiceDoc<'a> {
    /// "TCP" or "UDP".
    pub proto: &'static str,
    pub address: String,
    pub port: u16,
    pub scheduler: &'a str,
    /// `-b` flags as given.
    pub sched_flags: &'a [String],
    /// Persistence timeout in seconds, null when not persistent.
    pub persistent: Option<u32>,
    /// Persistence netmask (`-M`), null for the default 255.255.255.255.
    pub netmask: Option<String>,
    /// "ipvs", "expire" or "reassign" (`--on-dead`).
    pub on_dead: &'static str,
    pub counters: Counters,
    pub rates: Rates,
    pub servers: Vec<ServerDoc<'a>>,
}

#[derive(Debug, Serialize)]
pub struct ServerDoc<'a> {
    pub address: String,
    pub port: u16,
    /// "Route", "Tunnel" or "Masq", as ipvsadm's Forward column.
    pub forward: &'static str,
    pub weight: u32,
    /// `-x`, 0 = none.
    pub u_threshold: u32,
    /// `-y`, 0 = none.
    pub l_threshold: u32,
    pub active_conns: u32,
    pub inactive_conns: u32,
    pub persist_conns: u32,
    pub counters: Counters,
    pub rates: Rates,
    /// The server's health checkers, null without `--config` or when the server has none.
    pub health: Option<HealthDoc<'a>>,
}

#[derive(Debug, Serialize)]
pub struct HealthDoc<'a> {
    /// The server is in the pool (keepalived's "alive").
    pub alive: bool,
    pub checkers: Vec<CheckerDoc<'a>>,
}

/// One checker; also the rows of `GET /api/health`.
#[derive(Debug, Serialize)]
pub struct CheckerDoc<'a> {
    /// The virtual server's first service ("TCP 10.0.0.88:80"); its group's first for a
    /// `virtual_server group`.
    pub service: String,
    /// The `virtual_server group` name, or empty.
    pub group: &'a str,
    pub address: String,
    pub port: u16,
    pub alive: bool,
    /// "TCP_CHECK", "HTTP_GET", ...
    pub checker: &'a str,
    /// Where it connects, "IP:PORT".
    pub target: &'a str,
    pub up: bool,
    /// The checker has run at least once (before that, `up` is its start state).
    pub has_run: bool,
    /// Consecutive failed checks.
    pub failures: u32,
    pub last_error: Option<&'a str>,
    /// Seconds since `up` last changed.
    pub since_secs: u64,
    pub last_latency_ms: Option<u64>,
    pub checks: u64,
}

fn checker(h: &HealthRow) -> CheckerDoc<'_> {
    CheckerDoc {
        service: h.service.to_string(),
        group: &h.group,
        address: h.addr.to_string(),
        port: h.port,
        alive: h.alive,
        checker: &h.checker,
        target: &h.target,
        up: h.up,
        has_run: h.has_run,
        failures: h.failures,
        last_error: h.last_error.as_deref(),
        since_secs: h.since_secs,
        last_latency_ms: h.last_latency_ms,
        checks: h.checks,
    }
}

fn on_dead_name(o: crate::kconf::OnDead) -> &'static str {
    match o {
        crate::kconf::OnDead::Ipvs => "ipvs",
        crate::kconf::OnDead::Expire => "expire",
        crate::kconf::OnDead::Reassign => "reassign",
    }
}

/// The `/api/status` document of a sample.
pub fn status_doc(s: &Sample) -> StatusDoc<'_> {
    let rows = s.health.as_deref().unwrap_or(&[]);
    StatusDoc {
        conn_table_size: s.status.conn_table_size,
        conn_entries: s.datapath.workers.iter().map(|w| w.conns).sum::<u64>()
            + s.datapath.nat_conns,
        timeouts: Timeouts {
            tcp: s.status.timeouts.tcp,
            tcp_fin: s.status.timeouts.tcp_fin,
            udp: s.status.timeouts.udp,
        },
        health_checks: s.health.is_some(),
        services: s
            .status
            .services
            .iter()
            .map(|sv| ServiceDoc {
                proto: sv.key.proto.list_name(),
                address: sv.key.addr.to_string(),
                port: sv.key.port,
                scheduler: &sv.opts.scheduler,
                sched_flags: &sv.opts.sched_flags,
                persistent: sv.opts.persistent,
                netmask: sv.opts.netmask.map(|m| m.to_string()),
                on_dead: on_dead_name(sv.opts.on_dead),
                counters: sv.counters,
                rates: sv.rates,
                servers: sv
                    .dests
                    .iter()
                    .map(|d| {
                        let mine: Vec<&HealthRow> = rows
                            .iter()
                            .filter(|h| h.service == sv.key && h.addr == d.addr && h.port == d.port)
                            .collect();
                        ServerDoc {
                            address: d.addr.to_string(),
                            port: d.port,
                            forward: d.forward.list_name(),
                            weight: d.weight,
                            u_threshold: d.u_threshold,
                            l_threshold: d.l_threshold,
                            active_conns: d.active_conns,
                            inactive_conns: d.inactive_conns,
                            persist_conns: d.persist_conns,
                            counters: d.counters,
                            rates: d.rates,
                            health: (!mine.is_empty()).then(|| HealthDoc {
                                alive: mine.iter().all(|h| h.alive),
                                checkers: mine.into_iter().map(checker).collect(),
                            }),
                        }
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn to_json<T: Serialize>(v: &T) -> Vec<u8> {
    // Plain structs of strings and numbers: serialization cannot fail.
    let mut out = serde_json::to_vec(v).expect("serializing an API document");
    out.push(b'\n');
    out
}

/// `GET /api/status`.
pub fn status(s: &Sample) -> Vec<u8> {
    to_json(&status_doc(s))
}

/// `GET /api/health`: `{"health_checks": bool, "checkers": [...]}`.
pub fn health(rows: Option<&[HealthRow]>) -> Vec<u8> {
    #[derive(Serialize)]
    struct Doc<'a> {
        health_checks: bool,
        checkers: Vec<CheckerDoc<'a>>,
    }
    to_json(&Doc {
        health_checks: rows.is_some(),
        checkers: rows.unwrap_or(&[]).iter().map(checker).collect(),
    })
}

/// `GET /api/datapath`: the figures of `xvsadm --datapath`, with the field names of its
/// model (`DataPathStats`): interface, xdp_mode, xdp_* counters, nat_conns, sync pairs and
/// one object per worker with its counters and `drops` as [reason, count] pairs.
pub fn datapath(d: &DataPathStats) -> Vec<u8> {
    to_json(d)
}
