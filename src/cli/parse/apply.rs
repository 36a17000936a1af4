//! Applying the options, in command-line order, to the parse state (ipvsadm's
//! `parse_options` loop): each value is checked as it is seen.

use super::legality::{Cmd, Col};
use super::options::Tag;
use super::{FormatOpts, ParseError, MAX_TIMEOUT_SECS};
use crate::cli::addr::{self, AddrError};
use crate::cli::services::PortNames;
use crate::kconf::OnDead;
use crate::model::{Forward, Protocol, ServiceKey, DEFAULT_PERSISTENCE_SECS, MAX_WEIGHT};
use crate::sync::daemon::Role;
use std::net::Ipv4Addr;

/// The service selector as given (`-t`, `-u`, or something xvs does not implement).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SvcSel {
    Key(ServiceKey),
    /// `-f`, `--sctp-service`, or an IPv6 address: accepted for the legality checks, refused
    /// afterwards as not implemented.
    Unsupported,
}

/// Everything gathered from the options, like ipvsadm's `ipvs_command_entry` plus flags.
#[derive(Default)]
pub(super) struct State {
    pub(super) cmd: Option<Cmd>,
    /// Bitset of `Col`s seen (each may be given once).
    pub(super) seen: u64,
    pub(super) svc: Option<SvcSel>,
    pub(super) scheduler: Option<String>,
    pub(super) persistent: Option<u32>,
    pub(super) netmask: Option<Ipv4Addr>,
    pub(super) dest: Option<(Ipv4Addr, Option<u16>)>,
    pub(super) forward: Option<Forward>,
    pub(super) weight: Option<u32>,
    pub(super) u_threshold: Option<u32>,
    pub(super) l_threshold: Option<u32>,
    pub(super) sched_flags: Option<String>,
    pub(super) one_packet: bool,
    pub(super) format: FormatOpts,
    /// `--tun-type`: "ipip", "gue" or "gre" (empty when not given: ipip), for ipvsadm's
    /// tunnel_opt_check.
    pub(super) tun_type: &'static str,
    pub(super) socket: Option<String>,
    /// `--on-dead ipvs|expire|reassign` (xvs only, `-A`/`-E`): outside ipvsadm's legality
    /// table, checked in `build`.
    pub(super) on_dead: Option<OnDead>,
    pub(super) words: Vec<String>,
    /// `-f` was given (ipvsadm accepts `-6` only after it).
    pub(super) fwmark: bool,
    /// First not-implemented feature seen; reported after all syntax checks pass.
    pub(super) unsupported: Option<&'static str>,
    /// `--start-daemon`/`--stop-daemon` and their options (ipvsadm's `ce.daemon`), with
    /// xvs's `--sync-peer` (repeatable) and `--bulk-peer`.
    pub(super) daemon: DaemonArgs,
}

#[derive(Default)]
pub(super) struct DaemonArgs {
    pub(super) role: Option<Role>,
    pub(super) mcast_ifn: Option<String>,
    pub(super) syncid: u8,
    pub(super) sync_maxlen: u16,
    pub(super) mcast_group: Option<Ipv4Addr>,
    pub(super) mcast_port: u16,
    pub(super) mcast_ttl: u8,
    pub(super) peers: Vec<Ipv4Addr>,
    pub(super) bulk_peer: Option<Ipv4Addr>,
}

impl State {
    fn set_command(&mut self, c: Cmd) -> Result<(), ParseError> {
        if self.cmd.is_some() {
            return Err(ParseError::invalid("multiple commands specified"));
        }
        self.cmd = Some(c);
        Ok(())
    }

    fn set_option(&mut self, col: Col) -> Result<(), ParseError> {
        if self.seen & col.bit() != 0 {
            return Err(ParseError::invalid(format!(
                "multiple '{}' options specified",
                col.name()
            )));
        }
        self.seen |= col.bit();
        Ok(())
    }

    pub(super) fn has(&self, col: Col) -> bool {
        self.seen & col.bit() != 0
    }

    fn unsupported(&mut self, what: &'static str) {
        self.unsupported.get_or_insert(what);
    }

    /// Protocol used to look up port names for `-r`; TCP until `-t`/`-u` is seen.
    fn name_proto(&self) -> Protocol {
        match self.svc {
            Some(SvcSel::Key(k)) => k.proto,
            _ => Protocol::Tcp,
        }
    }
}

fn value_of(value: Option<String>) -> String {
    // Required values are guaranteed by the tokenizer; an absent one reads as empty and then
    // fails the option's own validation, so this never hides an error.
    value.unwrap_or_default()
}

pub(super) fn parse_timeout(s: &str, min: u32) -> Result<u32, ParseError> {
    addr::string_to_number(s, i64::from(min), i64::from(MAX_TIMEOUT_SECS))
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| ParseError::invalid(format!("invalid timeout value `{s}' specified")))
}

fn parse_u32(s: &str, max: u32, msg: &str) -> Result<u32, ParseError> {
    parse_range(s, 0, max, msg)
}

/// ipvsadm's `string_to_number(s, min, max)`, failing with `msg`.
fn parse_range(s: &str, min: u32, max: u32, msg: &str) -> Result<u32, ParseError> {
    addr::string_to_number(s, i64::from(min), i64::from(max))
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| ParseError::invalid(msg))
}

/// Applies one option, in command-line order, as ipvsadm's `parse_options` loop does.
pub(super) fn apply(
    st: &mut State,
    tag: Tag,
    value: Option<String>,
    names: &PortNames,
) -> Result<(), ParseError> {
    match tag {
        Tag::Cmd(c) => {
            st.set_command(c)?;
            if matches!(c, Cmd::StartDaemon | Cmd::StopDaemon) {
                let v = value_of(value);
                st.daemon.role = Some(match v.as_str() {
                    "master" => Role::Master,
                    "backup" => Role::Backup,
                    // Both messages verbatim from ipvsadm, including the second one's typo.
                    _ if c == Cmd::StartDaemon => {
                        return Err(ParseError::invalid(
                            "illegal start-daemon parameter specified",
                        ))
                    }
                    _ => return Err(ParseError::invalid("illegal start_daemon specified")),
                });
            }
        }
        // Handled before `apply` is called.
        Tag::Help | Tag::Version | Tag::DataPath | Tag::Health | Tag::Reload | Tag::Announce => {}
        Tag::Tcp | Tag::Udp => {
            st.set_option(Col::Service)?;
            let proto = if tag == Tag::Tcp {
                Protocol::Tcp
            } else {
                Protocol::Udp
            };
            match addr::parse_addr_port(&value_of(value), proto, names) {
                Ok((addr, port)) => {
                    st.svc = Some(SvcSel::Key(ServiceKey {
                        proto,
                        addr,
                        port: port.unwrap_or(0),
                    }))
                }
                Err(AddrError::Ipv6) => {
                    st.svc = Some(SvcSel::Unsupported);
                    st.unsupported("IPv6 services");
                }
                Err(AddrError::Invalid) => {
                    return Err(ParseError::invalid(
                        "illegal virtual server address[:port] specified",
                    ))
                }
            }
        }
        Tag::Sctp => {
            st.set_option(Col::Service)?;
            st.svc = Some(SvcSel::Unsupported);
            st.unsupported("SCTP services (--sctp-service)");
        }
        Tag::Fwmark => {
            st.set_option(Col::Service)?;
            let v = value_of(value);
            if addr::string_to_number(&v, 1, i64::from(u32::MAX)).is_none() {
                return Err(ParseError::invalid(format!(
                    "invalid fwmark value `{v}' specified"
                )));
            }
            st.svc = Some(SvcSel::Unsupported);
            st.fwmark = true;
            st.unsupported("firewall-mark services (-f)");
        }
        Tag::Scheduler => {
            st.set_option(Col::Scheduler)?;
            st.scheduler = Some(value_of(value));
        }
        Tag::Persistent => {
            st.set_option(Col::Persistent)?;
            st.persistent = Some(match value {
                Some(v) => parse_timeout(&v, 1)?,
                None => DEFAULT_PERSISTENCE_SECS,
            });
        }
        Tag::Netmask => {
            st.set_option(Col::Netmask)?;
            let mask = addr::inet_aton(&value_of(value)).ok_or_else(|| {
                ParseError::invalid("illegal virtual server persistent mask specified")
            })?;
            st.netmask = Some(mask);
        }
        Tag::Real => {
            st.set_option(Col::RealServer)?;
            match addr::parse_addr_port(&value_of(value), st.name_proto(), names) {
                Ok(d) => st.dest = Some(d),
                Err(AddrError::Ipv6) => {
                    st.dest = Some((Ipv4Addr::UNSPECIFIED, None));
                    st.unsupported("IPv6 real servers");
                }
                Err(AddrError::Invalid) => {
                    return Err(ParseError::invalid(
                        "illegal real server address[:port] specified",
                    ))
                }
            }
        }
        Tag::Masq | Tag::Ipip | Tag::Gate => {
            st.set_option(Col::Forward)?;
            st.forward = Some(match tag {
                Tag::Masq => Forward::Masq,
                Tag::Ipip => Forward::Tunnel,
                _ => Forward::Route,
            });
        }
        Tag::Weight => {
            st.set_option(Col::Weight)?;
            st.weight = Some(parse_u32(
                &value_of(value),
                MAX_WEIGHT,
                "illegal weight specified",
            )?);
        }
        Tag::UThreshold => {
            st.set_option(Col::UThreshold)?;
            st.u_threshold = Some(parse_u32(
                &value_of(value),
                i32::MAX as u32,
                "illegal u_threshold specified",
            )?);
        }
        Tag::LThreshold => {
            st.set_option(Col::LThreshold)?;
            st.l_threshold = Some(parse_u32(
                &value_of(value),
                i32::MAX as u32,
                "illegal l_threshold specified",
            )?);
        }
        Tag::Numeric => {
            st.set_option(Col::Numeric)?;
            st.format.numeric = true;
        }
        Tag::Connection => st.set_option(Col::Connection)?,
        Tag::McastInterface => {
            st.set_option(Col::McastInterface)?;
            st.daemon.mcast_ifn = Some(value_of(value));
        }
        Tag::SyncId => {
            st.set_option(Col::SyncId)?;
            st.daemon.syncid = parse_u32(&value_of(value), 255, "illegal syncid specified")? as u8;
        }
        Tag::Timeout => st.set_option(Col::Timeout)?,
        Tag::Daemon => st.set_option(Col::Daemon)?,
        Tag::Stats => st.set_option(Col::Stats)?,
        Tag::Rate => st.set_option(Col::Rate)?,
        Tag::Thresholds => st.set_option(Col::Thresholds)?,
        Tag::PersistentConn => st.set_option(Col::PersistentConn)?,
        Tag::NoSort => {
            st.set_option(Col::NoSort)?;
            st.format.nosort = true;
        }
        // Sorting is the default; ipvsadm keeps --sort as a no-op for compatibility.
        Tag::Sort => {}
        Tag::Exact => {
            st.set_option(Col::Exact)?;
            st.format.exact = true;
        }
        // ipvsadm: `fail(2, "-6 used before -f\n")`, whose own newline leaves a blank line.
        Tag::Ipv6 if !st.fwmark => return Err(ParseError::invalid("-6 used before -f\n")),
        Tag::Ipv6 => st.unsupported("IPv6 (-6)"),
        Tag::Ops => {
            st.set_option(Col::Ops)?;
            st.one_packet = true;
        }
        Tag::Pe => {
            st.set_option(Col::Pe)?;
            st.unsupported("persistence engines (--pe)");
        }
        Tag::SchedFlags => {
            st.set_option(Col::SchedFlags)?;
            st.sched_flags = Some(value_of(value));
        }
        Tag::McastGroup => {
            st.set_option(Col::McastGroup)?;
            // ipvsadm: an IPv6 group if the value has a colon, else IPv4; multicast either way.
            let v = value_of(value);
            if v.contains(':') {
                if !v
                    .parse::<std::net::Ipv6Addr>()
                    .is_ok_and(|a| a.is_multicast())
                {
                    return Err(ParseError::invalid(format!(
                        "invalid IPv6 mcast-group `{v}'"
                    )));
                }
                st.unsupported("IPv6 sync groups (--mcast-group)");
            } else {
                match v.parse::<Ipv4Addr>() {
                    Ok(a) if a.is_multicast() => st.daemon.mcast_group = Some(a),
                    _ => {
                        return Err(ParseError::invalid(format!(
                            "invalid IPv4 mcast-group `{v}'"
                        )))
                    }
                }
            }
        }
        Tag::McastPort => {
            st.set_option(Col::McastPort)?;
            st.daemon.mcast_port =
                parse_range(&value_of(value), 1, 65535, "illegal mcast-port specified")? as u16;
        }
        Tag::McastTtl => {
            st.set_option(Col::McastTtl)?;
            st.daemon.mcast_ttl =
                parse_range(&value_of(value), 1, 255, "illegal mcast-ttl specified")? as u8;
        }
        Tag::SyncMaxlen => {
            st.set_option(Col::SyncMaxlen)?;
            // IP and UDP headers (20 + 8 bytes) come out of the 64 KiB maximum.
            st.daemon.sync_maxlen = parse_range(
                &value_of(value),
                1,
                65535 - 20 - 8,
                "illegal sync-maxlen specified",
            )? as u16;
        }
        // xvs only, outside ipvsadm's legality table (checked in `build`).
        Tag::SyncPeer => {
            let v = value_of(value);
            let a = v
                .parse::<Ipv4Addr>()
                .ok()
                .filter(|a| !a.is_multicast() && !a.is_unspecified() && !a.is_broadcast())
                .ok_or_else(|| ParseError::invalid(format!("illegal sync-peer `{v}' specified")))?;
            if !st.daemon.peers.contains(&a) {
                st.daemon.peers.push(a);
            }
        }
        Tag::BulkPeer => {
            if st.daemon.bulk_peer.is_some() {
                return Err(ParseError::invalid(
                    "multiple 'bulk-peer' options specified",
                ));
            }
            let v = value_of(value);
            let a = v
                .parse::<Ipv4Addr>()
                .ok()
                .filter(|a| !a.is_multicast() && !a.is_unspecified() && !a.is_broadcast())
                .ok_or_else(|| ParseError::invalid(format!("illegal bulk-peer `{v}' specified")))?;
            st.daemon.bulk_peer = Some(a);
        }
        Tag::TunInfo => {
            st.set_option(Col::TunInfo)?;
            st.unsupported("tunnel information listing (--tun-info)");
        }
        Tag::TunType => {
            st.set_option(Col::TunType)?;
            match value_of(value).as_str() {
                // IPIP is what -i already means; ipvsadm-save 1.31 writes it explicitly.
                "ipip" => st.tun_type = "ipip",
                t @ ("gue" | "gre") => {
                    st.tun_type = if t == "gue" { "gue" } else { "gre" };
                    st.unsupported("GUE and GRE tunnels (--tun-type)");
                }
                _ => return Err(ParseError::invalid("illegal tunnel type specified")),
            }
        }
        Tag::TunPort => {
            st.set_option(Col::TunPort)?;
            let p = parse_u32(&value_of(value), 65535, "illegal tunnel port specified")?;
            if p == 0 {
                return Err(ParseError::invalid("illegal tunnel port specified"));
            }
        }
        Tag::TunNocsum => st.set_option(Col::TunNocsum)?,
        Tag::TunCsum => st.set_option(Col::TunCsum)?,
        Tag::TunRemcsum => st.set_option(Col::TunRemcsum)?,
        Tag::OnDead => {
            if st.on_dead.is_some() {
                return Err(ParseError::invalid("multiple 'on-dead' options specified"));
            }
            st.on_dead = Some(match value_of(value).as_str() {
                "ipvs" => OnDead::Ipvs,
                "expire" => OnDead::Expire,
                "reassign" => OnDead::Reassign,
                _ => return Err(ParseError::invalid("illegal on-dead policy specified")),
            });
        }
        Tag::Socket => {
            if st.socket.is_some() {
                return Err(ParseError::invalid("multiple 'socket' options specified"));
            }
            st.socket = Some(value_of(value));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::ParseErrorKind;
    use crate::model::{Request, ServiceOpts};

    #[test]
    fn persistent_with_and_without_value() {
        let with = |p: Option<u32>, m: Option<&str>| ServiceOpts {
            persistent: p,
            netmask: m.map(ip),
            ..opts("wlc")
        };
        let svc = |r: Request| match r {
            Request::AddService { opts, .. } | Request::EditService { opts, .. } => opts,
            other => panic!("{other:?}"),
        };
        assert_eq!(svc(req("-A -t 10.0.0.1:80 -p")), with(Some(300), None));
        assert_eq!(svc(req("-A -t 10.0.0.1:80 -p 600")), with(Some(600), None));
        assert_eq!(svc(req("-A -t 10.0.0.1:80 -p600")), with(Some(600), None));
        assert_eq!(
            svc(req("-A -t 10.0.0.1:80 --persistent=60")),
            with(Some(60), None)
        );
        assert_eq!(
            svc(req("-A -t 10.0.0.1:80 --persistent 60")),
            with(Some(60), None)
        );
        // The optional value never swallows the next option.
        assert_eq!(
            svc(req("-A -t 10.0.0.1:80 -p -M 255.255.255.0")),
            with(Some(300), Some("255.255.255.0"))
        );
        assert_eq!(
            svc(req("-E -t 10.0.0.1:80 -M 255.255.0.0 -p 1800")),
            with(Some(1800), Some("255.255.0.0"))
        );
        // -p at the end of a cluster.
        assert_eq!(svc(req("-At 10.0.0.1:80 -p")), with(Some(300), None));
        // /32 is the default and is stored as such.
        assert_eq!(
            svc(req("-A -t 10.0.0.1:80 -p -M 255.255.255.255")),
            with(Some(300), None)
        );
        // Port 0 is allowed only when persistent.
        assert_eq!(svc(req("-A -t 10.0.0.1:0 -p")), with(Some(300), None));
        assert_eq!(svc(req("-A -t 10.0.0.1 -p")), with(Some(300), None));
        assert_eq!(
            err("-A -t 10.0.0.1:80 -p 0").message,
            "invalid timeout value `0' specified"
        );
        assert_eq!(
            err("-A -t 10.0.0.1:80 -p 2678401").message,
            "invalid timeout value `2678401' specified"
        );
        assert_eq!(
            err("-A -t 10.0.0.1:80 -p abc").message,
            "invalid timeout value `abc' specified"
        );
    }

    #[test]
    fn address_and_value_errors() {
        let invalid = |args: &str, msg: &str| {
            let e = err(args);
            assert_eq!(e.kind, ParseErrorKind::Invalid, "{args}");
            assert_eq!(e.message, msg, "{args}");
            assert_eq!(e.exit_code(), 2);
        };
        invalid(
            "-A -t 10.0.0.256:80",
            "illegal virtual server address[:port] specified",
        );
        invalid(
            "-A -t 10.0.0.1:99999",
            "illegal virtual server address[:port] specified",
        );
        invalid(
            "-A -t 10.0.0.1:nosuchport",
            "illegal virtual server address[:port] specified",
        );
        invalid(
            "-A -t 80",
            "illegal virtual server address[:port] specified",
        );
        invalid(
            "-A -t web.example:80",
            "illegal virtual server address[:port] specified",
        );
        invalid(
            "-A -u 10.0.0.1:http",
            "illegal virtual server address[:port] specified",
        );
        invalid(
            "-a -t 10.0.0.1:80 -r 10.0.0.x",
            "illegal real server address[:port] specified",
        );
        invalid(
            "-a -t 10.0.0.1:80 -r 10.0.0.9 -w 65536",
            "illegal weight specified",
        );
        invalid(
            "-a -t 10.0.0.1:80 -r 10.0.0.9 -w -1",
            "illegal weight specified",
        );
        invalid(
            "-a -t 10.0.0.1:80 -r 10.0.0.9 -w two",
            "illegal weight specified",
        );
        invalid(
            "-a -t 10.0.0.1:80 -r 10.0.0.9 -x -5",
            "illegal u_threshold specified",
        );
        invalid(
            "-a -t 10.0.0.1:80 -r 10.0.0.9 -y 2147483648",
            "illegal l_threshold specified",
        );
        invalid(
            "-A -t 10.0.0.1:80 -M 255.255.255.999",
            "illegal virtual server persistent mask specified",
        );
        invalid(
            "-A -t 10.0.0.1:0",
            "Zero port specified for non-persistent service",
        );
        invalid(
            "-A",
            "You need to supply the 'service-address' option for the 'add-service' command",
        );
        invalid(
            "-E -s rr",
            "You need to supply the 'service-address' option for the 'edit-service' command",
        );
        invalid(
            "-D",
            "You need to supply the 'service-address' option for the 'delete-service' command",
        );
        invalid(
            "-a -t 10.0.0.1:80",
            "You need to supply the 'real-server' option for the 'add-server' command",
        );
        invalid(
            "-a -r 10.0.0.9",
            "You need to supply the 'service-address' option for the 'add-server' command",
        );
        invalid(
            "-e -t 10.0.0.1:80 -w 3",
            "You need to supply the 'real-server' option for the 'edit-server' command",
        );
        invalid(
            "-A -t 10.0.0.1:80 -w 3",
            "Illegal 'weight' option with the 'add-service' command",
        );
        invalid(
            "-A -t 10.0.0.1:80 -n",
            "Illegal 'numeric' option with the 'add-service' command",
        );
        invalid(
            "-a -t 10.0.0.1:80 -r 10.0.0.9 -s rr",
            "Illegal 'scheduler' option with the 'add-server' command",
        );
        invalid(
            "-C -t 10.0.0.1:80",
            "Illegal 'service-address' option with the 'flush' command",
        );
        // ipvsadm takes the first option as the command; a second is an invalid option.
        invalid("-A -D -t 10.0.0.1:80", "invalid option `-D'");
        invalid(
            "-A -t 10.0.0.1:80 -t 10.0.0.2:80",
            "multiple 'service-address' options specified",
        );
        invalid(
            "-A -t 10.0.0.1:80 -u 10.0.0.2:80",
            "multiple 'service-address' options specified",
        );
        invalid(
            "-a -t 10.0.0.1:80 -r 10.0.0.9 -g -m",
            "multiple 'forwarding-method' options specified",
        );
        invalid("-C extra", "unexpected argument extra");
        invalid(
            "-a -t 10.0.0.1:80 -r 10.0.0.9 -g --tun-type ipip",
            "Tunnel options conflict with forward method",
        );
        invalid(
            "-a -t 10.0.0.1:80 -r 10.0.0.9 -i --tun-port 6080",
            "Illegal 'tun-port' option with the 'ipip' tunnel type",
        );
        invalid(
            "-a -t 10.0.0.1:80 -r 10.0.0.9 -i --tun-type vxlan",
            "illegal tunnel type specified",
        );
        invalid("-f 0 -A", "invalid fwmark value `0' specified");
        invalid(
            "--start-daemon primary",
            "illegal start-daemon parameter specified",
        );
        invalid("--stop-daemon primary", "illegal start_daemon specified");
    }

    #[test]
    fn not_implemented_features() {
        for (args, what) in [
            ("-A -f 1", "firewall-mark"),
            ("--fwmark-service 7 -D", "firewall-mark"),
            (
                "--start-daemon master --mcast-group ff02::81",
                "IPv6 sync groups",
            ),
            ("-A -t [2001:db8::1]:80", "IPv6"),
            ("-A --sctp-service 10.0.0.1:80", "SCTP"),
            ("-A -t 10.0.0.1:80 -p --pe sip", "persistence engines"),
            ("-L --tun-info", "tun-info"),
            (
                "-a -t 10.0.0.1:80 -r 10.0.0.9 -i --tun-type gue --tun-port 6080",
                "GUE",
            ),
        ] {
            let e = err(args);
            assert_eq!(e.kind, ParseErrorKind::NotImplemented, "{args}: {e:?}");
            assert!(e.message.contains(what), "{args}: {}", e.message);
            assert!(
                e.message.ends_with("not implemented in xvs yet"),
                "{}",
                e.message
            );
            assert_ne!(e.exit_code(), 0);
        }
        // Syntax errors still win over "not implemented".
        assert_eq!(
            err("-A -f 1 -w 2").message,
            "Illegal 'weight' option with the 'add-service' command"
        );
    }
}
