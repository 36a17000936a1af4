//! The option table (every option ipvsadm 1.31 knows) and the popt-like tokenizer.

use super::legality::Cmd;
use super::ParseError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arg {
    None,
    Required,
    /// popt's POPT_ARGFLAG_OPTIONAL: a glued value, or the next word unless it starts with '-'.
    Optional,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tag {
    Cmd(Cmd),
    Help,
    Version,
    Tcp,
    Udp,
    Sctp,
    Fwmark,
    Scheduler,
    Persistent,
    Netmask,
    Real,
    Masq,
    Ipip,
    Gate,
    Weight,
    UThreshold,
    LThreshold,
    Numeric,
    Connection,
    McastInterface,
    SyncId,
    Timeout,
    Daemon,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
    NoSort,
    Sort,
    Exact,
    Ipv6,
    Ops,
    Pe,
    SchedFlags,
    McastGroup,
    McastPort,
    McastTtl,
    SyncMaxlen,
    TunInfo,
    TunType,
    TunPort,
    TunNocsum,
    TunCsum,
    TunRemcsum,
    Socket,
    Health,
    DataPath,
    Reload,
    Announce,
    OnDead,
    SyncPeer,
    BulkPeer,
}

struct Spec {
    long: &'static str,
    short: Option<char>,
    arg: Arg,
    tag: Tag,
}

const fn spec(long: &'static str, short: Option<char>, arg: Arg, tag: Tag) -> Spec {
    Spec {
        long,
        short,
        arg,
        tag,
    }
}

/// Every option ipvsadm 1.31 knows, plus xvs's `--socket`, `--datapath` and `--on-dead`.
const SPECS: &[Spec] = &[
    spec("add-service", Some('A'), Arg::None, Tag::Cmd(Cmd::Add)),
    spec("edit-service", Some('E'), Arg::None, Tag::Cmd(Cmd::Edit)),
    spec("delete-service", Some('D'), Arg::None, Tag::Cmd(Cmd::Del)),
    spec("clear", Some('C'), Arg::None, Tag::Cmd(Cmd::Flush)),
    spec("list", Some('L'), Arg::None, Tag::Cmd(Cmd::List)),
    spec("list", Some('l'), Arg::None, Tag::Cmd(Cmd::List)),
    spec("zero", Some('Z'), Arg::None, Tag::Cmd(Cmd::Zero)),
    spec("add-server", Some('a'), Arg::None, Tag::Cmd(Cmd::AddDest)),
    spec("edit-server", Some('e'), Arg::None, Tag::Cmd(Cmd::EditDest)),
    spec(
        "delete-server",
        Some('d'),
        Arg::None,
        Tag::Cmd(Cmd::DelDest),
    ),
    spec("set", None, Arg::None, Tag::Cmd(Cmd::SetTimeout)),
    spec("help", Some('h'), Arg::None, Tag::Help),
    spec("version", Some('v'), Arg::None, Tag::Version),
    spec("restore", Some('R'), Arg::None, Tag::Cmd(Cmd::Restore)),
    spec("save", Some('S'), Arg::None, Tag::Cmd(Cmd::Save)),
    spec(
        "start-daemon",
        None,
        Arg::Required,
        Tag::Cmd(Cmd::StartDaemon),
    ),
    spec(
        "stop-daemon",
        None,
        Arg::Required,
        Tag::Cmd(Cmd::StopDaemon),
    ),
    spec("tcp-service", Some('t'), Arg::Required, Tag::Tcp),
    spec("udp-service", Some('u'), Arg::Required, Tag::Udp),
    spec("sctp-service", None, Arg::Required, Tag::Sctp),
    spec("fwmark-service", Some('f'), Arg::Required, Tag::Fwmark),
    spec("scheduler", Some('s'), Arg::Required, Tag::Scheduler),
    spec("persistent", Some('p'), Arg::Optional, Tag::Persistent),
    spec("netmask", Some('M'), Arg::Required, Tag::Netmask),
    spec("real-server", Some('r'), Arg::Required, Tag::Real),
    spec("masquerading", Some('m'), Arg::None, Tag::Masq),
    spec("ipip", Some('i'), Arg::None, Tag::Ipip),
    spec("gatewaying", Some('g'), Arg::None, Tag::Gate),
    spec("weight", Some('w'), Arg::Required, Tag::Weight),
    spec("u-threshold", Some('x'), Arg::Required, Tag::UThreshold),
    spec("l-threshold", Some('y'), Arg::Required, Tag::LThreshold),
    spec("numeric", Some('n'), Arg::None, Tag::Numeric),
    spec("connection", Some('c'), Arg::None, Tag::Connection),
    spec("mcast-interface", None, Arg::Required, Tag::McastInterface),
    spec("syncid", None, Arg::Required, Tag::SyncId),
    spec("timeout", None, Arg::None, Tag::Timeout),
    spec("daemon", None, Arg::None, Tag::Daemon),
    spec("stats", None, Arg::None, Tag::Stats),
    spec("rate", None, Arg::None, Tag::Rate),
    spec("thresholds", None, Arg::None, Tag::Thresholds),
    spec("persistent-conn", None, Arg::None, Tag::PersistentConn),
    spec("nosort", None, Arg::None, Tag::NoSort),
    spec("sort", None, Arg::None, Tag::Sort),
    spec("exact", Some('X'), Arg::None, Tag::Exact),
    spec("ipv6", Some('6'), Arg::None, Tag::Ipv6),
    spec("ops", Some('o'), Arg::None, Tag::Ops),
    spec("pe", None, Arg::Required, Tag::Pe),
    spec("sched-flags", Some('b'), Arg::Required, Tag::SchedFlags),
    spec("mcast-group", None, Arg::Required, Tag::McastGroup),
    spec("mcast-port", None, Arg::Required, Tag::McastPort),
    spec("mcast-ttl", None, Arg::Required, Tag::McastTtl),
    spec("sync-maxlen", None, Arg::Required, Tag::SyncMaxlen),
    spec("tun-info", None, Arg::None, Tag::TunInfo),
    spec("tun-type", None, Arg::Required, Tag::TunType),
    spec("tun-port", None, Arg::Required, Tag::TunPort),
    spec("tun-nocsum", None, Arg::None, Tag::TunNocsum),
    spec("tun-csum", None, Arg::None, Tag::TunCsum),
    spec("tun-remcsum", None, Arg::None, Tag::TunRemcsum),
    spec("socket", None, Arg::Required, Tag::Socket),
    spec("datapath", None, Arg::None, Tag::DataPath),
    spec("health", None, Arg::None, Tag::Health),
    spec("reload", None, Arg::None, Tag::Reload),
    spec("announce", None, Arg::Required, Tag::Announce),
    spec("on-dead", None, Arg::Required, Tag::OnDead),
    spec("sync-peer", None, Arg::Required, Tag::SyncPeer),
    spec("bulk-peer", None, Arg::Required, Tag::BulkPeer),
];

fn find_long(name: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.long == name)
}

fn find_short(c: char) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.short == Some(c))
}

impl Tag {
    /// ipvsadm's commands: what its first `poptGetNextOpt` must return.
    pub(super) fn is_command(self) -> bool {
        matches!(self, Tag::Cmd(_) | Tag::Help | Tag::Version)
    }
}

/// One recognised option occurrence, or a bare word.
pub(super) enum Item {
    /// `word` is the whole argv word the option came from (`-Ln` for both `-L` and `-n`), as
    /// popt's `poptBadOption` names it in messages.
    Opt {
        tag: Tag,
        value: Option<String>,
        word: String,
    },
    Word(String),
}

/// popt-like tokenizer (see [`tokenize_into`]). A popt error before any command is ipvsadm's
/// `tryhelp_exit` path (its first `poptGetNextOpt` failed, or returned a non-command): the
/// hint alone. After a command, the error is printed as `WORD: message`.
pub(super) fn tokenize<S: AsRef<str>>(args: &[S]) -> Result<Vec<Item>, ParseError> {
    let mut items = Vec::new();
    match tokenize_into(args, &mut items) {
        Ok(()) => Ok(items),
        Err(e) => {
            let after_command = items
                .iter()
                .any(|i| matches!(i, Item::Opt { tag, .. } if tag.is_command()));
            if after_command {
                Err(e)
            } else {
                Err(ParseError::try_help(e.message))
            }
        }
    }
}

/// popt-like tokenizer: clusters, glued values, `--long=value`, optional values, `--`.
/// Errors name the whole argv word, as popt does (`-Lq: unknown option`).
fn tokenize_into<S: AsRef<str>>(args: &[S], items: &mut Vec<Item>) -> Result<(), ParseError> {
    let mut i = 0;
    let mut only_words = false;
    // Takes the next word as a value; `optional` refuses words that look like options.
    let next_value = |i: &mut usize, optional: bool| -> Option<String> {
        let w = args.get(*i + 1)?.as_ref();
        if optional && w.starts_with('-') {
            return None;
        }
        *i += 1;
        Some(w.to_string())
    };
    while i < args.len() {
        let a = args[i].as_ref();
        if only_words || a == "-" || !a.starts_with('-') {
            items.push(Item::Word(a.to_string()));
        } else if a == "--" {
            only_words = true;
        } else if let Some(long) = a.strip_prefix("--") {
            let (name, glued) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let spec =
                find_long(name).ok_or_else(|| ParseError::usage(format!("{a}: unknown option")))?;
            let value = match spec.arg {
                Arg::None if glued.is_some() => {
                    return Err(ParseError::usage(format!(
                        "{a}: option does not take an argument"
                    )))
                }
                Arg::None => None,
                Arg::Required => Some(
                    glued
                        .or_else(|| next_value(&mut i, false))
                        .ok_or_else(|| ParseError::usage(format!("{a}: missing argument")))?,
                ),
                Arg::Optional => glued.or_else(|| next_value(&mut i, true)),
            };
            items.push(Item::Opt {
                tag: spec.tag,
                value,
                word: a.to_string(),
            });
        } else {
            // A cluster of short options: `-Ln`, `-At10.0.0.1:80`, `-p600`.
            let cluster = &a[1..];
            for (pos, c) in cluster.char_indices() {
                let spec = find_short(c)
                    .ok_or_else(|| ParseError::usage(format!("{a}: unknown option")))?;
                let rest = &cluster[pos + c.len_utf8()..];
                // popt, like GNU getopt, skips one '=' before a glued value (`-w=5`).
                let glued =
                    (!rest.is_empty()).then(|| rest.strip_prefix('=').unwrap_or(rest).to_string());
                let (value, ends_cluster) = match spec.arg {
                    Arg::None if rest.starts_with('=') => {
                        return Err(ParseError::usage(format!(
                            "{a}: option does not take an argument"
                        )))
                    }
                    Arg::None => (None, false),
                    Arg::Required => {
                        let v = glued
                            .or_else(|| next_value(&mut i, false))
                            .ok_or_else(|| ParseError::usage(format!("{a}: missing argument")))?;
                        (Some(v), true)
                    }
                    Arg::Optional => (glued.or_else(|| next_value(&mut i, true)), true),
                };
                items.push(Item::Opt {
                    tag: spec.tag,
                    value,
                    word: a.to_string(),
                });
                if ends_cluster {
                    break;
                }
            }
        }
        i += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::ParseErrorKind;
    use crate::model::{Protocol, Request};

    #[test]
    fn add_service_short_and_long() {
        let want = Request::AddService {
            key: tcp("10.0.0.88:80"),
            opts: opts("wrr"),
        };
        assert_eq!(req("-A -t 10.0.0.88:80 -s wrr"), want);
        assert_eq!(
            req("--add-service --tcp-service 10.0.0.88:80 --scheduler wrr"),
            want
        );
        assert_eq!(
            req("--add-service --tcp-service=10.0.0.88:80 --scheduler=wrr"),
            want
        );
        assert_eq!(req("-At 10.0.0.88:80 -swrr"), want);
        assert_eq!(req("-At10.0.0.88:http -s wrr"), want);
        // Lenient: the command need not come first.
        assert_eq!(req("-t 10.0.0.88:80 -s wrr -A"), want);
        // Default scheduler.
        assert_eq!(
            req("-A -u 10.0.0.53:53"),
            Request::AddService {
                key: key(Protocol::Udp, "10.0.0.53:53"),
                opts: opts("wlc"),
            }
        );
        // The scheduler name is the daemon's to validate.
        assert_eq!(
            req("-A -t 10.0.0.88:80 -s nosuch"),
            Request::AddService {
                key: tcp("10.0.0.88:80"),
                opts: opts("nosuch"),
            }
        );
    }

    #[test]
    fn usage_errors() {
        // Before any command: ipvsadm's tryhelp_exit, the hint alone.
        for args in ["-t 10.0.0.1:80", "-n", "-Q", "--frobnicate", "--stats=1 -L"] {
            let e = err(args);
            assert_eq!(e.kind, ParseErrorKind::TryHelp, "{args}: {e:?}");
            assert_eq!(e.exit_code(), 255);
            assert!(e.wants_hint() && !e.shows_message());
        }
        // After the command: `WORD: popt message`, no hint.
        for args in ["-A -t", "-A --tcp-service", "-L -Q", "-LQ", "-L --stats=1"] {
            let e = err(args);
            assert_eq!(e.kind, ParseErrorKind::Usage, "{args}: {e:?}");
            assert_eq!(e.exit_code(), 255);
            assert!(!e.wants_hint() && e.shows_message());
        }
        assert_eq!(err("-L -Q").message, "-Q: unknown option");
        assert_eq!(err("-LQ").message, "-LQ: unknown option");
        assert_eq!(
            err("-L --frobnicate=1").message,
            "--frobnicate=1: unknown option"
        );
        assert_eq!(err("-A -t").message, "-t: missing argument");
        assert_eq!(err("-At").message, "-At: missing argument");
    }
}
