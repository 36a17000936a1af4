//! Resolution: keepalived's defaults, inheritance (virtual server → real server → checker),
//! group expansion and the corrections keepalived makes after parsing, reimplemented from
//! keepalived 2.2.7 `check/check_data.c` (alloc_vs, alloc_rs, validate_check_config),
//! `check/check_api.c` (queue_checker) and the checkers' handlers. Warnings carry
//! keepalived's own text where it has one, with its `[ADDR]:proto:PORT` naming of services.

use super::model::*;
use super::parse::{err, RawChecker, RawConfig, RawGroup, RawKind, RawRs, RawVs, VsTarget};
use crate::model::{Forward, Protocol, ServiceKey};
use std::net::Ipv4Addr;
use std::time::Duration;

/// A group may name at most this many addresses (over all its entries). keepalived has no
/// limit, but a stray `/8` would make sixteen million services.
pub const MAX_GROUP_SERVICES: usize = 65536;

/// alloc_vs: `connection_to = 5 * TIMER_HZ`, `delay_loop = KEEPALIVED_DEFAULT_DELAY`
/// (60 s, check_data.h).
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_DELAY_LOOP: Duration = Duration::from_secs(60);
/// IPVS_DEF_SCHED (ipvswrapper.h).
const DEFAULT_SCHEDULER: &str = "wlc";
/// IPVS_SVC_PERSISTENT_TIMEOUT (libipvs.h).
const DEFAULT_PERSISTENCE: u32 = 360;

fn proto_name(p: Option<Protocol>) -> &'static str {
    match p {
        Some(Protocol::Tcp) => "tcp",
        Some(Protocol::Udp) => "udp",
        None => "none",
    }
}

/// format_vs(): `[10.0.0.1]:tcp:80`, or `[GROUP]:0` for a group.
fn fmt_vs(vs: &RawVs, proto: Option<Protocol>, port: Option<u16>) -> String {
    match &vs.target {
        VsTarget::Addr(a, _) => format!("[{a}]:{}:{}", proto_name(proto), port.unwrap_or(0)),
        VsTarget::Group(g) => format!("[{g}]:0"),
    }
}

fn fmt_rs(addr: Ipv4Addr, port: Option<u16>, proto: Protocol) -> String {
    format!("[{addr}]:{}:{}", proto_name(Some(proto)), port.unwrap_or(0))
}

/// checker_t defaults set by each checker's handler: `default_retry` (queue_checker 1;
/// MISC_CHECK 0, check_misc.c; DNS_CHECK DNS_DEFAULT_RETRY 3, check_dns.h) and
/// `default_delay_before_retry` (1 s; HTTP_GET/SSL_GET 3 s, check_http.c; DNS_CHECK 0 =
/// delay_loop, check_dns.c).
fn kind_defaults(k: &RawKind) -> (u32, Option<Duration>) {
    match k {
        RawKind::Misc { .. } => (0, Some(Duration::from_secs(1))),
        RawKind::Dns { .. } => (3, None),
        RawKind::Http { .. } => (1, Some(Duration::from_secs(3))),
        _ => (1, Some(Duration::from_secs(1))),
    }
}

pub fn resolve(raw: RawConfig) -> Result<KConfig, ConfError> {
    let mut out = KConfig {
        virtual_servers: Vec::new(),
        warnings: raw.warnings,
        ignored: raw.ignored,
    };
    for vs in &raw.virtual_servers {
        if let Some(v) = resolve_vs(vs, &raw.groups, &mut out.warnings)? {
            out.virtual_servers.push(v);
        }
    }
    Ok(out)
}

/// The addresses and ports of a group, in order (an entry's range expanded).
fn group_members(g: &RawGroup) -> Result<Vec<(Ipv4Addr, Option<u16>)>, ConfError> {
    let mut out = Vec::new();
    for e in &g.entries {
        let (a, b) = (u32::from(e.first), u32::from(e.last));
        let n = (b - a) as usize + 1;
        if out.len() + n > MAX_GROUP_SERVICES {
            return Err(err(
                &e.loc,
                format!(
                    "virtual server group {} names more than {MAX_GROUP_SERVICES} addresses",
                    g.name
                ),
            ));
        }
        out.extend((a..=b).map(|v| (Ipv4Addr::from(v), e.port)));
    }
    Ok(out)
}

fn resolve_vs(
    vs: &RawVs,
    groups: &[RawGroup],
    w: &mut Vec<ConfError>,
) -> Result<Option<VirtualServer>, ConfError> {
    let (members, group) = match &vs.target {
        VsTarget::Addr(a, p) => (vec![(*a, *p)], None),
        VsTarget::Group(name) => {
            // link_vsg_to_vs (ipwrapper.c): keepalived logs and ignores the virtual server.
            let g = groups.iter().find(|g| &g.name == name).ok_or_else(|| {
                err(
                    &vs.loc,
                    format!("Virtual server group {name} specified but not configured"),
                )
            })?;
            (group_members(g)?, Some(name.clone()))
        }
    };
    let vs_port = match &vs.target {
        VsTarget::Addr(_, p) => *p,
        VsTarget::Group(_) => None,
    };

    if vs.real_servers.is_empty() {
        w.push(err(
            &vs.loc,
            format!(
                "Virtual server {} has no real servers - ignoring",
                fmt_vs(vs, vs.protocol, vs_port)
            ),
        ));
        return Ok(None);
    }

    // validate_check_config: "If the protocol is 0, the kernel defaults to UDP, so set it
    // explicitly".
    let protocol = match vs.protocol {
        Some(p) => p,
        None => {
            w.push(err(
                &vs.loc,
                format!(
                    "Virtual server {}: no protocol set - defaulting to UDP",
                    fmt_vs(vs, None, vs_port)
                ),
            ));
            Protocol::Udp
        }
    };
    let name = fmt_vs(vs, Some(protocol), vs_port);

    // A port may be left out only by persistent services; keepalived makes them persistent.
    let mut persistence = vs.persistence;
    if persistence.is_none() && members.iter().any(|(_, p)| p.is_none()) {
        w.push(err(
            &vs.loc,
            format!(
                "Virtual server {name}: zero port only valid for persistent services - setting"
            ),
        ));
        persistence = Some(DEFAULT_PERSISTENCE);
    }

    let scheduler = match &vs.scheduler {
        Some(s) => s.clone(),
        None => {
            w.push(err(
                &vs.loc,
                format!("Virtual server {name}: no scheduler set, setting default '{DEFAULT_SCHEDULER}'"),
            ));
            DEFAULT_SCHEDULER.to_string()
        }
    };

    // The virtual server's method; NAT (with keepalived's warning) if unset and needed.
    let mut method = vs.method;
    let mut vs_method = |w: &mut Vec<ConfError>| -> Forward {
        *method.get_or_insert_with(|| {
            w.push(err(
                &vs.loc,
                format!("Virtual server {name}: no forwarding method set, setting default NAT"),
            ));
            Forward::Masq
        })
    };

    let vs_delay_loop = vs.timing.delay_loop.unwrap_or(DEFAULT_DELAY_LOOP);
    let vs_connect_timeout = vs.timing.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let vs_weight = vs.weight.unwrap_or(1);

    // Duplicates: rs_iseq compares address and port as written; the second goes.
    let mut kept: Vec<&RawRs> = Vec::new();
    for rs in &vs.real_servers {
        if kept.iter().any(|k| k.addr == rs.addr && k.port == rs.port) {
            w.push(err(
                &rs.loc,
                format!(
                    "VS {name}: real server {} is duplicated - removing second rs",
                    fmt_rs(rs.addr, rs.port, protocol)
                ),
            ));
            continue;
        }
        kept.push(rs);
    }

    let single_port = {
        let mut ports = members.iter().map(|(_, p)| *p);
        let first = ports.next().flatten();
        if ports.all(|p| p == first) {
            first
        } else {
            None
        }
    };

    let mut real_servers = Vec::new();
    let mut weight_sum: u64 = 0;
    for rs in kept {
        let rs_method = match rs.method {
            Some(m) => m,
            None => vs_method(w),
        };
        let weight = rs.weight.unwrap_or(vs_weight);
        weight_sum += u64::from(weight);
        // Port corrections (validate_check_config): a real server without port takes the
        // service's; DR/TUN cannot change the port, so a different one is reset.
        let port = match (&vs.target, rs_method) {
            (VsTarget::Group(_), Forward::Masq) => rs.port,
            (VsTarget::Group(_), _) => {
                if let Some(p) = rs.port {
                    for (_, mp) in &members {
                        if mp.is_some() && *mp != Some(p) {
                            w.push(err(
                                &rs.loc,
                                format!(
                                    "virtual server {name} and real server {} ports don't match",
                                    fmt_rs(rs.addr, rs.port, protocol)
                                ),
                            ));
                            break;
                        }
                    }
                }
                rs.port
            }
            (VsTarget::Addr(..), Forward::Masq) => rs.port.or(vs_port),
            (VsTarget::Addr(..), _) => {
                if rs.port.is_some() && rs.port != vs_port {
                    w.push(err(
                        &rs.loc,
                        format!(
                            "WARNING - virtual server {name} and real server {} ports don't match - resetting",
                            fmt_rs(rs.addr, rs.port, protocol)
                        ),
                    ));
                }
                vs_port
            }
        };
        let alpha = rs.alpha.unwrap_or(vs.alpha);
        let inhibit = rs.inhibit.unwrap_or(vs.inhibit);
        let ctx = RsCtx {
            vs,
            rs,
            port: port.or(single_port),
            alpha,
            vs_delay_loop,
            rs_delay_loop: rs.timing.delay_loop.unwrap_or(vs_delay_loop),
            rs_connect_timeout: rs.timing.connect_timeout.unwrap_or(vs_connect_timeout),
            rs_retry: rs.timing.retry.or(vs.timing.retry),
            rs_dbr: rs
                .timing
                .delay_before_retry
                .or(vs.timing.delay_before_retry),
            rs_warmup: rs.timing.warmup.or(vs.timing.warmup),
        };
        let checkers = rs
            .checkers
            .iter()
            .map(|c| resolve_checker(c, &ctx))
            .collect::<Result<Vec<_>, _>>()?;
        real_servers.push(RealServer {
            loc: rs.loc.clone(),
            addr: rs.addr,
            port,
            weight,
            method: rs_method,
            u_threshold: rs.u_threshold,
            l_threshold: rs.l_threshold,
            inhibit_on_failure: inhibit,
            alpha,
            notify_up: rs.notify_up.clone(),
            notify_down: rs.notify_down.clone(),
            checkers,
        });
    }

    let mut sorry_server_inhibit = vs.sorry_inhibit;
    let sorry_server = match &vs.sorry {
        None => None,
        Some(s) => {
            let m = match s.method {
                Some(m) => m,
                None => vs_method(w),
            };
            let port = match (&vs.target, m) {
                (_, Forward::Masq) | (VsTarget::Group(_), _) => s.port,
                (VsTarget::Addr(..), _) => {
                    if s.port.is_some() && s.port != vs_port {
                        w.push(err(
                            &s.loc,
                            format!("WARNING - virtual server {name} and sorry server ports don't match - resetting"),
                        ));
                    }
                    vs_port
                }
            };
            // A sorry server that is also a real server must agree on inhibit_on_failure;
            // keepalived takes the real server's.
            if let Some(rs) = real_servers
                .iter()
                .find(|r| r.addr == s.addr && r.port == s.port.or(port))
            {
                if rs.inhibit_on_failure != sorry_server_inhibit {
                    w.push(err(
                        &s.loc,
                        format!(
                            "Virtual server {name}: real server {} matches sorry server, but inhibit setting differs, {}ing on sorry server",
                            fmt_rs(rs.addr, rs.port, protocol),
                            if rs.inhibit_on_failure { "sett" } else { "clear" }
                        ),
                    ));
                    sorry_server_inhibit = rs.inhibit_on_failure;
                }
            }
            Some(SorryServer {
                loc: s.loc.clone(),
                addr: s.addr,
                port,
                method: m,
            })
        }
    };

    // Quorum: at most the sum of the weights; hysteresis below the quorum.
    let mut quorum = vs.quorum.unwrap_or(1);
    if u64::from(quorum) > weight_sum {
        let ws = weight_sum as u32;
        w.push(err(
            &vs.loc,
            format!(
                "Warning - quorum {quorum} for {name} exceeds total weight of real servers {ws}, reducing quorum to {ws}"
            ),
        ));
        quorum = ws;
    }
    let mut hysteresis = vs.hysteresis.unwrap_or(0);
    if hysteresis >= quorum && !(hysteresis == 0 && quorum == 0) {
        // keepalived computes quorum - 1 in unsigned arithmetic; with quorum 0 that wraps,
        // xvs stops at 0.
        let h = quorum.saturating_sub(1);
        w.push(err(
            &vs.loc,
            format!("Virtual server {name}: hysteresis {hysteresis} >= quorum {quorum}; setting hysteresis to {h}"),
        ));
        hysteresis = h;
    }

    let services = members
        .iter()
        .map(|(a, p)| ServiceKey {
            proto: protocol,
            addr: *a,
            port: p.unwrap_or(0),
        })
        .collect();

    Ok(Some(VirtualServer {
        loc: vs.loc.clone(),
        services,
        group,
        protocol,
        scheduler,
        sched_flags: vs.sched_flags.clone(),
        // Only consulted if a real or sorry server needed it; NAT otherwise (alloc_vs's
        // "not set" value is resolved the same way).
        method: method.unwrap_or(Forward::Masq),
        persistence,
        granularity: vs.granularity,
        ha_suspend: vs.ha_suspend,
        virtualhost: vs.virtualhost.clone(),
        alpha: vs.alpha,
        omega: vs.omega,
        quorum,
        hysteresis,
        quorum_up: vs.quorum_up.clone(),
        quorum_down: vs.quorum_down.clone(),
        sorry_server,
        sorry_server_inhibit,
        on_dead: vs.on_dead,
        real_servers,
    }))
}

/// What a checker inherits from its real server (already merged with the virtual server's).
struct RsCtx<'a> {
    vs: &'a RawVs,
    rs: &'a RawRs,
    /// The real server's port after correction, else the group's single port.
    port: Option<u16>,
    alpha: bool,
    vs_delay_loop: Duration,
    rs_delay_loop: Duration,
    rs_connect_timeout: Duration,
    rs_retry: Option<u32>,
    rs_dbr: Option<Duration>,
    rs_warmup: Option<Duration>,
}

fn resolve_checker(c: &RawChecker, ctx: &RsCtx) -> Result<Checker, ConfError> {
    let (default_retry, default_dbr) = kind_defaults(&c.kind);
    // validate_check_config, "Take default values from real server".
    let delay_loop = c.timing.delay_loop.unwrap_or(ctx.rs_delay_loop);
    let timing = Timing {
        delay_loop,
        connect_timeout: c.timing.connect_timeout.unwrap_or(ctx.rs_connect_timeout),
        retry: c.timing.retry.or(ctx.rs_retry).unwrap_or(default_retry),
        delay_before_retry: c
            .timing
            .delay_before_retry
            .or(ctx.rs_dbr)
            .or(default_dbr)
            .unwrap_or(delay_loop),
        warmup: c.timing.warmup.or(ctx.rs_warmup).unwrap_or(delay_loop),
    };
    let needs_port = !matches!(
        c.kind,
        RawKind::Ping | RawKind::Misc { .. } | RawKind::File { .. }
    );
    // queue_checker sets the destination to the real server's address and port as written
    // (so a real server without a port gives keepalived a check of port 0); xvs uses the
    // port the real server ends up with, which is what such a configuration means.
    let connect_port = match c.connect_port.or(ctx.port) {
        Some(p) => p,
        None if !needs_port => 0,
        None => {
            return Err(err(
                &c.loc,
                format!(
                    "checker of real server {}: no port to check (the real server has none and the virtual server group more than one): set connect_port",
                    ctx.rs.addr
                ),
            ))
        }
    };
    let kind = match &c.kind {
        RawKind::Tcp => CheckKind::Tcp,
        RawKind::Ping => CheckKind::Ping,
        RawKind::Http {
            tls,
            urls,
            virtualhost,
            http_protocol,
            fast_recovery,
            enable_sni,
        } => CheckKind::Http(HttpCheck {
            tls: *tls,
            urls: urls
                .iter()
                .map(|u| Url {
                    path: u.path.clone().unwrap_or_default(),
                    digest: u.digest.clone(),
                    // url_check: none given = HTTP_DEFAULT_STATUS_CODE_MIN..=MAX (200-299).
                    status_codes: if u.status_codes.is_empty() {
                        vec![200..=299]
                    } else {
                        u.status_codes.clone()
                    },
                    virtualhost: u.virtualhost.clone(),
                    regex: u.regex.clone(),
                    regex_no_match: u.regex_no_match,
                })
                .collect(),
            virtualhost: virtualhost
                .clone()
                .or_else(|| ctx.rs.virtualhost.clone())
                .or_else(|| ctx.vs.virtualhost.clone()),
            http_protocol: http_protocol.clone(),
            fast_recovery: *fast_recovery,
            enable_sni: *enable_sni,
        }),
        RawKind::Misc {
            script,
            timeout,
            dynamic,
            user,
        } => {
            let mut s = script
                .clone()
                .ok_or_else(|| err(&c.loc, "No script path has been specified for MISC_CHECKER"))?;
            if let Some((u, g)) = user {
                s.user = Some(u.clone());
                s.group = g.clone();
            }
            CheckKind::Misc(MiscCheck {
                script: s,
                timeout: match timeout {
                    Some(t) if *t > 0 => Duration::from_secs(u64::from(*t)),
                    _ => ctx.vs_delay_loop,
                },
                dynamic: *dynamic,
            })
        }
        RawKind::Udp {
            payload,
            require_reply,
            min_reply_length,
            max_reply_length,
        } => CheckKind::Udp(UdpCheck {
            // udp_bind_connect: no payload = UDP_BUFSIZE (32) bytes of "keepalived check - "
            // repeated (set_buf).
            payload: if payload.is_empty() {
                b"keepalived check - keepalived ch".to_vec()
            } else {
                payload.clone()
            },
            require_reply: require_reply.clone(),
            min_reply_length: min_reply_length.unwrap_or(0),
            max_reply_length: Some(max_reply_length.unwrap_or(255)),
        }),
        RawKind::Dns { qtype, name } => CheckKind::Dns(DnsCheck {
            qtype: qtype.clone().unwrap_or_else(|| "SOA".to_string()),
            name: name.clone().unwrap_or_else(|| ".".to_string()),
        }),
        RawKind::Smtp { helo_name } => CheckKind::Smtp(SmtpCheck {
            helo_name: Some(
                helo_name
                    .clone()
                    .unwrap_or_else(|| "smtpchecker.keepalived.org".to_string()),
            ),
        }),
        RawKind::File { track, weight } => {
            let t = track
                .as_ref()
                .ok_or_else(|| err(&c.loc, "FILE_CHECK has no track_file specified"))?;
            // file_end_handler: no weight given = the track_file's weight and reverse.
            let (weight, reverse) = weight.unwrap_or((t.weight, t.reverse));
            CheckKind::File(FileCheck {
                name: t.name.clone(),
                path: t.path.clone().unwrap_or_default().into(),
                weight,
                reverse,
                init_value: t.init_value,
                init_overwrite: t.init_overwrite,
            })
        }
    };
    Ok(Checker {
        loc: c.loc.clone(),
        kind,
        connect_ip: c.connect_ip.unwrap_or(ctx.rs.addr),
        connect_port,
        bindto: c.bindto,
        bind_port: c.bind_port,
        alpha: c.alpha.unwrap_or(ctx.alpha),
        timing,
    })
}
