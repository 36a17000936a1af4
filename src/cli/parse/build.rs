//! Command-specific checks and defaults after the legality table (ipvsadm's
//! `process_options`), and the resulting [`Invocation`].

use super::apply::{State, SvcSel};
use super::legality::{Cmd, Col};
use super::{invocation, Columns, Command, Invocation, ListOpts, ListView, ParseError};
use crate::model::{
    DestEdit, DestSpec, Forward, Protocol, Request, ServiceKey, ServiceOpts, Timeouts,
    DEFAULT_SCHEDULER,
};
use crate::sync::daemon::{Role, SyncDaemonConfig};
use std::net::Ipv4Addr;

/// ipvsadm's DEF_MCAST_IFN: the interface `--start-daemon` uses without `--mcast-interface`.
pub const DEFAULT_MCAST_IFN: &str = "eth0";

/// ipvsadm's `parse_sched_flags`, checked against the final scheduler (so `-b` may come
/// before `-s`). Returns the flags under their canonical names for that scheduler, in bit
/// order, which is how the kernel stores and ipvsadm lists them: for `sh`, `flag-1` *is*
/// `sh-fallback`.
fn parse_sched_flags(sched: &str, arg: &str) -> Result<Vec<String>, ParseError> {
    let mut bits = [false; 3];
    let mut any = false;
    for flag in arg.split(',').filter(|f| !f.is_empty()) {
        any = true;
        let needs = |s: &str| {
            if sched == s {
                Ok(())
            } else {
                Err(ParseError::invalid(format!(
                    "incompatible scheduler flag `{flag}'"
                )))
            }
        };
        let bit = match flag {
            "flag-1" => 0,
            "flag-2" => 1,
            "flag-3" => 2,
            "sh-fallback" => needs("sh").map(|_| 0)?,
            "sh-port" => needs("sh").map(|_| 1)?,
            "mh-fallback" => needs("mh").map(|_| 0)?,
            "mh-port" => needs("mh").map(|_| 1)?,
            _ => {
                return Err(ParseError::invalid(format!(
                    "invalid scheduler flag `{flag}'"
                )))
            }
        };
        bits[bit] = true;
    }
    if !any {
        return Err(ParseError::invalid(format!(
            "invalid scheduler flag `{arg}'"
        )));
    }
    let canonical: [&str; 3] = match sched {
        "sh" => ["sh-fallback", "sh-port", "flag-3"],
        "mh" => ["mh-fallback", "mh-port", "flag-3"],
        _ => ["flag-1", "flag-2", "flag-3"],
    };
    Ok(canonical
        .iter()
        .zip(bits)
        .filter(|(_, on)| *on)
        .map(|(n, _)| n.to_string())
        .collect())
}

/// ipvsadm's `tunnel_opt_check`: its table of tunnel types against `--tun-port`,
/// `--tun-nocsum`, `--tun-csum`, `--tun-remcsum` ('+' compulsory, 'x' illegal, '1' at most one).
fn tunnel_opt_check(st: &State) -> Result<(), ParseError> {
    let opts = [Col::TunPort, Col::TunNocsum, Col::TunCsum, Col::TunRemcsum];
    // Not given: ipvsadm's default tunnel type, ipip.
    let tun = match st.tun_type {
        "" => "ipip",
        t => t,
    };
    let table: [u8; 4] = match tun {
        "gue" => *b"+111",
        "gre" => *b"x11x",
        _ => *b"xxxx",
    };
    let mut first_exclusive: Option<Col> = None;
    for (col, rule) in opts.into_iter().zip(table) {
        if !st.has(col) {
            if rule == b'+' {
                return Err(ParseError::invalid(format!(
                    "You need to supply the '{}' option for the '{tun}' tunnel type",
                    col.name()
                )));
            }
            continue;
        }
        if rule == b'x' {
            return Err(ParseError::invalid(format!(
                "Illegal '{}' option with the '{tun}' tunnel type",
                col.name()
            )));
        }
        if rule == b'1' {
            if let Some(last) = first_exclusive {
                return Err(ParseError::invalid(format!(
                    "The option '{}' conflicts with the '{}' option in the '{tun}' tunnel type",
                    col.name(),
                    last.name()
                )));
            }
            first_exclusive = Some(col);
        }
    }
    Ok(())
}

/// Command-specific checks and defaults (ipvsadm's `process_options`), then the result.
pub(super) fn build(
    cmd: Cmd,
    mut st: State,
    timeouts: Option<Timeouts>,
) -> Result<Invocation, ParseError> {
    let key = match st.svc {
        Some(SvcSel::Key(k)) => Some(k),
        _ => None,
    };

    let mut service_opts = None;
    if matches!(cmd, Cmd::Add | Cmd::Edit) {
        if let Some(k) = key {
            // A port-0 service matches every port, which only makes sense with persistence.
            if k.port == 0 && st.persistent.is_none() {
                return Err(ParseError::invalid(
                    "Zero port specified for non-persistent service",
                ));
            }
            if st.one_packet && k.proto != Protocol::Udp {
                return Err(ParseError::invalid(
                    "One-Packet Scheduling is only for UDP virtual services",
                ));
            }
        }
        // -E replaces every option: what is not given takes its default, as in ipvsadm.
        let scheduler = st
            .scheduler
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| DEFAULT_SCHEDULER.to_string());
        let sched_flags = match &st.sched_flags {
            Some(arg) => parse_sched_flags(&scheduler, arg)?,
            None => Vec::new(),
        };
        service_opts = Some(ServiceOpts {
            scheduler,
            persistent: st.persistent,
            // /32 is the default granularity; store it as "not given" so listings and
            // save/restore round trips see one canonical form.
            netmask: st.netmask.filter(|m| *m != Ipv4Addr::BROADCAST),
            sched_flags,
            one_packet: st.one_packet,
            // Like every option, -E without it puts the default back.
            on_dead: st.on_dead.unwrap_or_default(),
        });
    } else if st.on_dead.is_some() {
        return Err(ParseError::invalid(format!(
            "Illegal 'on-dead' option with the '{}' command",
            cmd.name()
        )));
    }

    if matches!(cmd, Cmd::AddDest | Cmd::EditDest) {
        let tunnel_opts = [
            Col::TunType,
            Col::TunPort,
            Col::TunNocsum,
            Col::TunCsum,
            Col::TunRemcsum,
        ];
        if tunnel_opts.iter().any(|c| st.has(*c)) && st.forward != Some(Forward::Tunnel) {
            return Err(ParseError::invalid(
                "Tunnel options conflict with forward method",
            ));
        }
        tunnel_opt_check(&st)?;
    }

    if cmd == Cmd::List {
        // ipvsadm 1.31: no column set with -c, --timeout or --daemon, except that -c accepts
        // --persistent-conn (it widens the connection listing's header).
        let any = |cols: &[Col]| cols.iter().any(|c| st.has(*c));
        let columns = [Col::Stats, Col::Rate, Col::Thresholds];
        if (any(&[Col::Connection, Col::Timeout, Col::Daemon]) && any(&columns))
            || (any(&[Col::Timeout, Col::Daemon]) && st.has(Col::PersistentConn))
        {
            return Err(ParseError::invalid("options conflicts in the list command"));
        }
    }

    // xvs's sync options, outside ipvsadm's legality table.
    if cmd != Cmd::StartDaemon {
        for (given, name) in [
            (!st.daemon.peers.is_empty(), "sync-peer"),
            (st.daemon.bulk_peer.is_some(), "bulk-peer"),
        ] {
            if given {
                return Err(ParseError::invalid(format!(
                    "Illegal '{name}' option with the '{}' command",
                    cmd.name()
                )));
            }
        }
    } else if st.daemon.bulk_peer.is_some() && st.daemon.role == Some(Role::Master) {
        return Err(ParseError::invalid(
            "Illegal 'bulk-peer' option with a master daemon: a backup fetches the table",
        ));
    }

    if let Some(what) = st.unsupported {
        return Err(ParseError::not_implemented(what));
    }

    let command = match cmd {
        Cmd::Add | Cmd::Edit => {
            let key = require_key(key)?;
            let opts = service_opts.unwrap_or_default();
            Command::Change(if cmd == Cmd::Add {
                Request::AddService { key, opts }
            } else {
                Request::EditService { key, opts }
            })
        }
        Cmd::Del => Command::Change(Request::DeleteService {
            key: require_key(key)?,
        }),
        Cmd::Flush => Command::Change(Request::Clear),
        Cmd::Zero => Command::Change(Request::Zero { service: key }),
        Cmd::SetTimeout => Command::Change(Request::SetTimeouts(timeouts.unwrap_or_default())),
        Cmd::AddDest | Cmd::EditDest | Cmd::DelDest => {
            let service = require_key(key)?;
            let Some((addr, given_port)) = st.dest else {
                return Err(ParseError::invalid(
                    "You need to supply the 'real-server' option for the 'add-server' command",
                ));
            };
            let forward = st.forward.unwrap_or_default();
            // DR and TUN cannot change the destination port, so IPVS (and ipvsadm) force it
            // to the service port; NAT keeps the given port, defaulting to the service port.
            // Deleting uses the port as given: it only has to match what was added.
            let port = match (cmd, forward) {
                (Cmd::DelDest, _) | (_, Forward::Masq) => given_port.unwrap_or(service.port),
                _ => service.port,
            };
            Command::Change(match cmd {
                Cmd::AddDest => Request::AddDest {
                    service,
                    dest: DestSpec {
                        addr,
                        port: Some(port),
                        forward,
                        weight: st.weight.unwrap_or(1),
                        u_threshold: st.u_threshold.unwrap_or(0),
                        l_threshold: st.l_threshold.unwrap_or(0),
                    },
                },
                // ipvsadm sends a complete destination on -e: any of -g/-i/-m, -w, -x, -y not
                // given is reset to its default (DR, weight 1, no thresholds), not kept.
                Cmd::EditDest => Request::EditDest {
                    service,
                    dest: DestEdit {
                        addr,
                        port: Some(port),
                        forward: Some(forward),
                        weight: Some(st.weight.unwrap_or(1)),
                        u_threshold: Some(st.u_threshold.unwrap_or(0)),
                        l_threshold: Some(st.l_threshold.unwrap_or(0)),
                    },
                },
                _ => Request::DeleteDest {
                    service,
                    addr,
                    port: Some(port),
                },
            })
        }
        Cmd::List => {
            let view = if st.has(Col::Connection) {
                ListView::Connections {
                    persistent_conn: st.has(Col::PersistentConn),
                }
            } else if st.has(Col::Service) {
                ListView::Services {
                    service: Some(require_key(key)?),
                    columns: columns(&st),
                }
            } else if st.has(Col::Timeout) {
                ListView::Timeout
            } else if st.has(Col::Daemon) {
                ListView::Daemon
            } else {
                ListView::Services {
                    service: None,
                    columns: columns(&st),
                }
            };
            Command::List(ListOpts {
                view,
                format: st.format,
            })
        }
        Cmd::Save => Command::Save(st.format),
        Cmd::Restore => Command::Restore,
        Cmd::StartDaemon | Cmd::StopDaemon => {
            // The command's value set the role; the tokenizer demands it.
            let role = st
                .daemon
                .role
                .ok_or_else(|| ParseError::invalid("illegal start-daemon parameter specified"))?;
            if cmd == Cmd::StopDaemon {
                Command::Change(Request::StopDaemon { role })
            } else {
                let d = std::mem::take(&mut st.daemon);
                Command::Change(Request::StartDaemon {
                    config: SyncDaemonConfig {
                        role,
                        // ipvsadm: `strcpy(ce.daemon.mcast_ifn, DEF_MCAST_IFN)` when none
                        // is given.
                        mcast_ifn: d.mcast_ifn.unwrap_or_else(|| DEFAULT_MCAST_IFN.into()),
                        syncid: d.syncid,
                        sync_maxlen: d.sync_maxlen,
                        mcast_group: d.mcast_group,
                        mcast_port: d.mcast_port,
                        mcast_ttl: d.mcast_ttl,
                        peers: d.peers,
                        bulk_peer: d.bulk_peer,
                    },
                })
            }
        }
    };
    Ok(invocation(command, st.socket))
}

fn require_key(key: Option<ServiceKey>) -> Result<ServiceKey, ParseError> {
    // The legality table already demanded a service; this only guards the invariant.
    key.ok_or_else(|| ParseError::invalid("illegal virtual server address[:port] specified"))
}

fn columns(st: &State) -> Columns {
    if st.has(Col::Stats) {
        Columns::Stats
    } else if st.has(Col::Rate) {
        Columns::Rate
    } else if st.has(Col::Thresholds) {
        Columns::Thresholds
    } else if st.has(Col::PersistentConn) {
        Columns::PersistentConn
    } else {
        Columns::Default
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{Columns, Command, FormatOpts, Invocation, ListView};
    use crate::model::{DestEdit, DestSpec, Forward, Protocol, Request, Timeouts};

    #[test]
    fn sync_daemon_commands() {
        use crate::sync::daemon::{Role, SyncDaemonConfig};
        // ipvsadm's defaults: eth0, syncid 0, zeros for the kernel to fill in.
        assert_eq!(
            req("--start-daemon master"),
            Request::StartDaemon {
                config: SyncDaemonConfig::new(Role::Master, "eth0")
            }
        );
        let Request::StartDaemon { config } = req(
            "--start-daemon backup --mcast-interface xsd0 --syncid 51 --sync-maxlen 1400 \
             --mcast-group 239.1.2.3 --mcast-port 9000 --mcast-ttl 4 --sync-peer 10.0.0.2 \
             --sync-peer 10.0.0.3 --bulk-peer 10.0.0.2",
        ) else {
            panic!()
        };
        assert_eq!(
            config,
            SyncDaemonConfig {
                role: Role::Backup,
                mcast_ifn: "xsd0".into(),
                syncid: 51,
                sync_maxlen: 1400,
                mcast_group: Some(ip("239.1.2.3")),
                mcast_port: 9000,
                mcast_ttl: 4,
                peers: vec![ip("10.0.0.2"), ip("10.0.0.3")],
                bulk_peer: Some(ip("10.0.0.2")),
            }
        );
        assert_eq!(
            req("--stop-daemon backup"),
            Request::StopDaemon { role: Role::Backup }
        );
        // ipvsadm accepts --syncid with --stop-daemon (and the kernel ignores it).
        assert_eq!(
            req("--stop-daemon master --syncid 3"),
            Request::StopDaemon { role: Role::Master }
        );
        for (args, msg) in [
            (
                "--start-daemon master --syncid 256",
                "illegal syncid specified",
            ),
            (
                "--start-daemon master --mcast-ttl 0",
                "illegal mcast-ttl specified",
            ),
            (
                "--start-daemon master --mcast-port 65536",
                "illegal mcast-port specified",
            ),
            (
                "--start-daemon master --sync-maxlen 0",
                "illegal sync-maxlen specified",
            ),
            (
                "--start-daemon master --mcast-group 10.0.0.1",
                "invalid IPv4 mcast-group `10.0.0.1'",
            ),
            (
                "--start-daemon master -n",
                "Illegal 'numeric' option with the 'start-daemon' command",
            ),
            (
                "--stop-daemon master --mcast-port 1",
                "Illegal 'mcast-port' option with the 'stop-daemon' command",
            ),
            (
                "--start-daemon master --mcast-ttl 2 --mcast-ttl 3",
                "multiple 'mcast-ttl' options specified",
            ),
            (
                "--stop-daemon master --sync-peer 10.0.0.2",
                "Illegal 'sync-peer' option with the 'stop-daemon' command",
            ),
            (
                "-A -t 10.0.0.1:80 --bulk-peer 10.0.0.2",
                "Illegal 'bulk-peer' option with the 'add-service' command",
            ),
            (
                "--start-daemon master --bulk-peer 10.0.0.2",
                "Illegal 'bulk-peer' option with a master daemon: a backup fetches the table",
            ),
            (
                "--start-daemon master --sync-peer 224.0.0.81",
                "illegal sync-peer `224.0.0.81' specified",
            ),
        ] {
            assert_eq!(err(args).message, msg, "{args}");
            assert_eq!(err(args).exit_code(), 2, "{args}");
        }
        // xvsd --sync-daemon: the same words and messages.
        assert_eq!(
            super::super::parse_sync_daemon("master --mcast-interface eth1 --syncid 51").unwrap(),
            SyncDaemonConfig {
                syncid: 51,
                ..SyncDaemonConfig::new(Role::Master, "eth1")
            }
        );
        assert_eq!(
            super::super::parse_sync_daemon("primary").unwrap_err(),
            "illegal start-daemon parameter specified"
        );
        assert!(super::super::parse_sync_daemon("master --socket /x").is_err());
    }

    #[test]
    fn edit_service_resets_unspecified_options() {
        assert_eq!(
            req("-E -t 10.0.0.88:80"),
            Request::EditService {
                key: tcp("10.0.0.88:80"),
                opts: opts("wlc"),
            }
        );
    }

    #[test]
    fn sched_flags_and_ops() {
        let svc = |r: Request| match r {
            Request::AddService { opts, .. } => opts,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            svc(req("-A -t 10.0.0.1:80 -b sh-port,sh-fallback -s sh")).sched_flags,
            vec!["sh-fallback", "sh-port"]
        );
        assert_eq!(
            svc(req("-A -t 10.0.0.1:80 -s sh --sched-flags flag-1")).sched_flags,
            vec!["sh-fallback"]
        );
        assert_eq!(
            svc(req("-A -t 10.0.0.1:80 -s mh -b mh-port")).sched_flags,
            vec!["mh-port"]
        );
        assert_eq!(
            svc(req("-A -t 10.0.0.1:80 -s rr -b flag-3,flag-1")).sched_flags,
            vec!["flag-1", "flag-3"]
        );
        assert_eq!(
            err("-A -t 10.0.0.1:80 -b sh-port").message,
            "incompatible scheduler flag `sh-port'"
        );
        assert_eq!(
            err("-A -t 10.0.0.1:80 -s sh -b bogus").message,
            "invalid scheduler flag `bogus'"
        );
        assert!(svc(req("-A -u 10.0.0.1:53 -o")).one_packet);
        assert!(svc(req("-A -u 10.0.0.1:53 --ops")).one_packet);
        assert_eq!(
            err("-A -t 10.0.0.1:80 -o").message,
            "One-Packet Scheduling is only for UDP virtual services"
        );
    }

    #[test]
    fn on_dead_policy() {
        use crate::kconf::OnDead;
        let svc = |r| match r {
            Request::AddService { opts, .. } | Request::EditService { opts, .. } => opts,
            other => panic!("{other:?}"),
        };
        assert_eq!(svc(req("-A -t 10.0.0.1:80 -s rr")).on_dead, OnDead::Ipvs);
        for (word, want) in [
            ("ipvs", OnDead::Ipvs),
            ("expire", OnDead::Expire),
            ("reassign", OnDead::Reassign),
        ] {
            let r = req(&format!("-A -u 10.0.0.1:53 --on-dead {word}"));
            assert_eq!(svc(r).on_dead, want);
            let r = req(&format!("-E -t 10.0.0.1:80 -s wrr --on-dead={word}"));
            assert_eq!(svc(r).on_dead, want);
        }
        assert_eq!(
            err("-A -t 10.0.0.1:80 --on-dead drop").message,
            "illegal on-dead policy specified"
        );
        assert_eq!(
            err("-A -t 10.0.0.1:80 --on-dead ipvs --on-dead expire").message,
            "multiple 'on-dead' options specified"
        );
        assert_eq!(
            err("-a -t 10.0.0.1:80 -r 10.0.0.2 --on-dead expire").message,
            "Illegal 'on-dead' option with the 'add-server' command"
        );
        assert_eq!(
            err("-L -n --on-dead expire").message,
            "Illegal 'on-dead' option with the 'list' command"
        );
    }

    #[test]
    fn delete_clear_zero_set() {
        assert_eq!(
            req("-D -t 10.0.0.88:80"),
            Request::DeleteService {
                key: tcp("10.0.0.88:80")
            }
        );
        assert_eq!(
            req("--delete-service --udp-service 10.0.0.53:domain"),
            Request::DeleteService {
                key: key(Protocol::Udp, "10.0.0.53:53")
            }
        );
        assert_eq!(req("-C"), Request::Clear);
        assert_eq!(req("--clear"), Request::Clear);
        assert_eq!(req("-Z"), Request::Zero { service: None });
        assert_eq!(
            req("--zero -t 10.0.0.88:80"),
            Request::Zero {
                service: Some(tcp("10.0.0.88:80"))
            }
        );
        assert_eq!(
            req("--set 900 120 300"),
            Request::SetTimeouts(Timeouts {
                tcp: 900,
                tcp_fin: 120,
                udp: 300
            })
        );
        // 0 = leave unchanged, passed through untouched.
        assert_eq!(
            req("--set 0 60 0"),
            Request::SetTimeouts(Timeouts {
                tcp: 0,
                tcp_fin: 60,
                udp: 0
            })
        );
        assert_eq!(
            err("--set 900 120").message,
            "--set option requires 3 timeout values"
        );
        assert_eq!(err("--set 900 120 300 5").message, "unexpected argument 5");
        assert_eq!(
            err("--set 900 x 300").message,
            "invalid timeout value `x' specified"
        );
        assert_eq!(
            err("--set -n 1 2 3").message,
            "Illegal 'numeric' option with the 'set' command"
        );
    }

    #[test]
    fn add_server_port_rules() {
        let dest = |r: Request| match r {
            Request::AddDest { service, dest } => (service, dest),
            other => panic!("{other:?}"),
        };
        // DR (the default) forces the service port, even over an explicit one.
        let (s, d) = dest(req("-a -t 10.0.0.88:80 -r 10.0.0.9:8080 -w 2"));
        assert_eq!(s, tcp("10.0.0.88:80"));
        assert_eq!(
            d,
            DestSpec {
                addr: ip("10.0.0.9"),
                port: Some(80),
                forward: Forward::Route,
                weight: 2,
                u_threshold: 0,
                l_threshold: 0
            }
        );
        let (_, d) = dest(req("-a -t 10.0.0.88:80 -r 10.0.0.9:8080 -i"));
        assert_eq!(
            (d.port, d.forward, d.weight),
            (Some(80), Forward::Tunnel, 1)
        );
        // NAT keeps the given port, else the service port, whatever the option order.
        let (_, d) = dest(req("-a -t 10.0.0.88:80 -r 10.0.0.9:8080 -m"));
        assert_eq!((d.port, d.forward), (Some(8080), Forward::Masq));
        let (_, d) = dest(req("-a -r 10.0.0.9 -m -t 10.0.0.88:80"));
        assert_eq!(d.port, Some(80));
        let (_, d) = dest(req("--add-server --tcp-service 10.0.0.88:80 --real-server 10.0.0.9:www --masquerading --weight 0 --u-threshold 100 --l-threshold 50"));
        assert_eq!(
            d,
            DestSpec {
                addr: ip("10.0.0.9"),
                port: Some(80),
                forward: Forward::Masq,
                weight: 0,
                u_threshold: 100,
                l_threshold: 50
            }
        );
        let (_, d) = dest(req("-a -t 10.0.0.88:80 -r 10.0.0.9 -g -w 65535 -x 10 -y 5"));
        assert_eq!((d.weight, d.u_threshold, d.l_threshold), (65535, 10, 5));
        // ipvsadm-save 1.31 writes --tun-type ipip for tunnel servers.
        let (_, d) = dest(req(
            "-a -t 10.0.0.88:80 -r 10.0.0.9:80 -i -w 1 --tun-type ipip",
        ));
        assert_eq!(d.forward, Forward::Tunnel);
    }

    #[test]
    fn edit_server_sends_ipvsadm_defaults() {
        assert_eq!(
            req("-e -t 10.0.0.88:80 -r 10.0.0.9 -w 0"),
            Request::EditDest {
                service: tcp("10.0.0.88:80"),
                dest: DestEdit {
                    addr: ip("10.0.0.9"),
                    port: Some(80),
                    forward: Some(Forward::Route),
                    weight: Some(0),
                    u_threshold: Some(0),
                    l_threshold: Some(0),
                }
            }
        );
        assert_eq!(
            req("--edit-server -t 10.0.0.88:80 -r 10.0.0.9:81 -m"),
            Request::EditDest {
                service: tcp("10.0.0.88:80"),
                dest: DestEdit {
                    addr: ip("10.0.0.9"),
                    port: Some(81),
                    forward: Some(Forward::Masq),
                    weight: Some(1),
                    u_threshold: Some(0),
                    l_threshold: Some(0),
                }
            }
        );
    }

    #[test]
    fn delete_server_uses_given_port() {
        assert_eq!(
            req("-d -t 10.0.0.88:80 -r 10.0.0.9"),
            Request::DeleteDest {
                service: tcp("10.0.0.88:80"),
                addr: ip("10.0.0.9"),
                port: Some(80)
            }
        );
        assert_eq!(
            req("--delete-server -t 10.0.0.88:80 -r 10.0.0.9:8080"),
            Request::DeleteDest {
                service: tcp("10.0.0.88:80"),
                addr: ip("10.0.0.9"),
                port: Some(8080)
            }
        );
        assert_eq!(
            err("-d -t 10.0.0.88:80 -r 10.0.0.9 -w 1").message,
            "Illegal 'weight' option with the 'delete-server' command"
        );
    }

    #[test]
    fn list_variants() {
        let list = |args: &str| match p(args) {
            Ok(Invocation {
                command: Command::List(l),
                ..
            }) => l,
            other => panic!("{args}: {other:?}"),
        };
        let all = |columns| ListView::Services {
            service: None,
            columns,
        };
        assert_eq!(list("").view, all(Columns::Default));
        assert!(!list("").format.numeric);
        assert_eq!(list("-L -n").view, all(Columns::Default));
        assert!(list("-Ln").format.numeric);
        assert!(list("-nL").format.numeric);
        assert!(list("-l --numeric").format.numeric);
        assert_eq!(list("--list --stats").view, all(Columns::Stats));
        assert_eq!(list("-L --rate").view, all(Columns::Rate));
        assert_eq!(list("-L --thresholds").view, all(Columns::Thresholds));
        assert_eq!(
            list("-L --persistent-conn").view,
            all(Columns::PersistentConn)
        );
        // Precedence when several column sets are asked for: stats first.
        assert_eq!(list("-L --thresholds --stats").view, all(Columns::Stats));
        let l = list("-L -n --stats --exact --nosort --sort");
        assert_eq!(
            l.format,
            FormatOpts {
                numeric: true,
                exact: true,
                nosort: true
            }
        );
        assert_eq!(list("-L --timeout").view, ListView::Timeout);
        assert_eq!(list("-L --daemon").view, ListView::Daemon);
        let conns = |persistent_conn| ListView::Connections { persistent_conn };
        assert_eq!(list("-L -c").view, conns(false));
        assert_eq!(list("--list --connection").view, conns(false));
        assert!(list("-Lnc").format.numeric);
        assert_eq!(list("-Lnc").view, conns(false));
        assert_eq!(list("-Lcn").view, conns(false));
        // ipvsadm 1.31 accepts these with -c: --persistent-conn widens the header, --exact
        // and --nosort change nothing.
        assert_eq!(list("-L -c --persistent-conn").view, conns(true));
        assert_eq!(list("-L -n -c --exact --nosort").view, conns(false));
        assert_eq!(
            list("-L -t 10.0.0.88:80 -n").view,
            ListView::Services {
                service: Some(tcp("10.0.0.88:80")),
                columns: Columns::Default
            }
        );
        for args in [
            "-L -c --stats",
            "-L -c --rate",
            "-L -c --thresholds",
            "-L --timeout --persistent-conn",
            "-L --daemon --persistent-conn",
            "-L --timeout --rate",
        ] {
            assert_eq!(
                err(args).message,
                "options conflicts in the list command",
                "{args}"
            );
        }
        assert_eq!(list("-L -n --rate --exact").view, all(Columns::Rate));
        assert_eq!(
            err("-L -c -t 10.0.0.88:80").message,
            "The option 'service-address' conflicts with the 'connection' option in the 'list' command"
        );
        assert_eq!(
            err("-L --timeout --daemon").message,
            "The option 'daemon' conflicts with the 'timeout' option in the 'list' command"
        );
        assert_eq!(
            err("-L -s rr").message,
            "Illegal 'scheduler' option with the 'list' command"
        );
    }
}
