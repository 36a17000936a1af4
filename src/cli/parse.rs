//! argv → [`Invocation`], with ipvsadm 1.31's syntax, checks and messages.
//!
//! ipvsadm parses with popt: short options may be clustered (`-Ln`, `-At 10.0.0.1:80`), an
//! option's value may be glued on (`-w2`, `--weight=2`), `-p` takes an *optional* value (the
//! next word is taken only if it does not start with `-`), and bare words are collected for
//! `--set`. After parsing, a table of legal command/option combinations produces the familiar
//! "Illegal 'weight' option with the 'add-service' command" messages; we keep that table-driven
//! design so every combination answers exactly as ipvsadm does.
//!
//! Deliberate differences (all more lenient, none rejects what ipvsadm accepts):
//! - the command may appear anywhere, not only as the first option (`-nL` works);
//! - a real server's default port is the service port whatever the order of `-r` and `-t`
//!   (ipvsadm copies the port seen *so far*, so `-r` before `-t` gave port 0).

use super::addr::{self, AddrError};
use super::services::PortNames;
use crate::model::{
    DestEdit, DestSpec, Forward, Protocol, Request, ServiceKey, ServiceOpts, Timeouts,
    DEFAULT_PERSISTENCE_SECS, DEFAULT_SCHEDULER, MAX_WEIGHT,
};
use std::fmt;
use std::net::Ipv4Addr;

/// Longest timeout ipvsadm accepts for `-p` and `--set`: 31 days, in seconds.
pub const MAX_TIMEOUT_SECS: u32 = 86400 * 31;

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub command: Command,
    /// `--socket PATH` (xvs only): the daemon's control socket.
    pub socket: Option<String>,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// A configuration change, sent to the daemon as one request.
    Change(Request),
    /// `-L` / `-l` (and no arguments at all).
    List(ListOpts),
    /// `-S [-n]`.
    Save(FormatOpts),
    /// `-R`: read ipvsadm-save lines from stdin and apply them as one batch.
    Restore,
    /// `-h`.
    Help,
    /// `-v`.
    Version,
    /// `--datapath` (xvs only): the data path's counters (XDP verdicts, per-worker frames and
    /// drops).
    DataPath,
}

/// Options that change how addresses and numbers are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FormatOpts {
    /// `-n`: print ports as numbers (addresses are always numeric in xvsadm).
    pub numeric: bool,
    /// `--exact`: print counters in full instead of with K/M/G/T suffixes.
    pub exact: bool,
    /// `--nosort`: keep the daemon's order instead of sorting by protocol, address, port.
    pub nosort: bool,
}

/// `-L` and its options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListOpts {
    pub view: ListView,
    pub format: FormatOpts,
}

/// Which listing `-L` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListView {
    /// The service table, all services (with banner) or one (`-L -t VIP:PORT`, no banner).
    Services {
        service: Option<ServiceKey>,
        columns: Columns,
    },
    /// `--timeout`.
    Timeout,
    /// `--daemon`: sync daemon state.
    Daemon,
    /// `-c`: the connection table. With `--persistent-conn` ipvsadm 1.31 adds "pe name" and
    /// "pe_data" columns to the header (filled only for persistence-engine entries, which xvs
    /// does not have).
    Connections { persistent_conn: bool },
}

/// The column set of a service listing. When several are given, the first in this order wins,
/// as in ipvsadm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Columns {
    Default,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
}

/// How a parse error is reported; decides the exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseErrorKind {
    /// ipvsadm's "Try `ipvsadm -h'" path (no command, unknown option, missing value): exit 255.
    Usage,
    /// ipvsadm's `fail(2, ...)`: a recognised option with a bad value or combination: exit 2.
    Invalid,
    /// A valid ipvsadm command xvs does not implement yet: exit 2.
    NotImplemented,
}

/// A command line that xvsadm refuses, with an ipvsadm-style message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    pub kind: ParseErrorKind,
    pub message: String,
}

impl ParseError {
    fn usage(message: impl Into<String>) -> Self {
        ParseError {
            kind: ParseErrorKind::Usage,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        ParseError {
            kind: ParseErrorKind::Invalid,
            message: message.into(),
        }
    }

    fn not_implemented(what: &str) -> Self {
        ParseError {
            kind: ParseErrorKind::NotImplemented,
            message: format!("{what}: not implemented in xvs yet"),
        }
    }

    /// Exit status ipvsadm uses for this kind of error (`-1` from main is 255).
    pub fn exit_code(&self) -> i32 {
        match self.kind {
            ParseErrorKind::Usage => 255,
            ParseErrorKind::Invalid | ParseErrorKind::NotImplemented => 2,
        }
    }

    /// Whether to follow the message with the "Try `xvsadm -h'" hint.
    pub fn wants_hint(&self) -> bool {
        self.kind != ParseErrorKind::NotImplemented
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ParseError {}

// ---------------------------------------------------------------------------------------------
// Commands and the command/option legality table.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    Add,
    Edit,
    Del,
    Flush,
    List,
    AddDest,
    DelDest,
    EditDest,
    SetTimeout,
    StartDaemon,
    StopDaemon,
    Restore,
    Save,
    Zero,
}

impl Cmd {
    /// The name ipvsadm uses in its messages.
    fn name(self) -> &'static str {
        match self {
            Cmd::Add => "add-service",
            Cmd::Edit => "edit-service",
            Cmd::Del => "delete-service",
            Cmd::Flush => "flush",
            Cmd::List => "list",
            Cmd::AddDest => "add-server",
            Cmd::DelDest => "delete-server",
            Cmd::EditDest => "edit-server",
            Cmd::SetTimeout => "set",
            Cmd::StartDaemon => "start-daemon",
            Cmd::StopDaemon => "stop-daemon",
            Cmd::Restore => "restore",
            Cmd::Save => "save",
            Cmd::Zero => "zero",
        }
    }

    /// Legality of each option column with this command, ipvsadm 1.31's table:
    /// `+` required, `x` illegal, `1` at most one of the `1` options, ` ` optional.
    fn rules(self) -> &'static [u8; NCOL] {
        match self {
            Cmd::Add | Cmd::Edit => b"xx+   xxxxxxxxxxxxxxx   xxxxxxxxxx",
            Cmd::Del => b"xx+xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            Cmd::List => b" 11xxxxxxxxx11       xxxxxxx xxxxx",
            Cmd::AddDest | Cmd::EditDest => b"xx+xxx+    xxxxxxxxxxxxxxxxxx     ",
            Cmd::DelDest => b"xx+xxx+xxxxxxxxxxxxxxxxxxxxxxxxxxx",
            Cmd::StartDaemon => b"xxxxxxxxxxx xxxxxxx xxxx    xxxxxx",
            Cmd::StopDaemon => b"xxxxxxxxxxxxxxxxxxx xxxxxxxxxxxxxx",
            Cmd::Save => b" xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            Cmd::Zero => b"xx xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            Cmd::Flush | Cmd::SetTimeout | Cmd::Restore => b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        }
    }
}

/// Option columns of the legality table, in ipvsadm's order (which decides which error is
/// reported first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Col {
    Numeric,
    Connection,
    Service,
    Scheduler,
    Persistent,
    Netmask,
    RealServer,
    Forward,
    Weight,
    UThreshold,
    LThreshold,
    McastInterface,
    Timeout,
    Daemon,
    Stats,
    Rate,
    Thresholds,
    PersistentConn,
    NoSort,
    SyncId,
    Exact,
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
}

const NCOL: usize = 34;

/// Column names as ipvsadm prints them in messages.
const COL_NAMES: [&str; NCOL] = [
    "numeric",
    "connection",
    "service-address",
    "scheduler",
    "persistent",
    "netmask",
    "real-server",
    "forwarding-method",
    "weight",
    "u-threshold",
    "l-threshold",
    "mcast-interface",
    "timeout",
    "daemon",
    "stats",
    "rate",
    "thresholds",
    "persistent-conn",
    "nosort",
    "syncid",
    "exact",
    "ops",
    "pe",
    "sched-flags",
    "mcast-group",
    "mcast-port",
    "mcast-ttl",
    "sync-maxlen",
    "tun-info",
    "tun-type",
    "tun-port",
    "tun-nocsum",
    "tun-csum",
    "tun-remcsum",
];

impl Col {
    fn bit(self) -> u64 {
        1u64 << (self as u32)
    }

    fn name(self) -> &'static str {
        COL_NAMES[self as usize]
    }
}

// ---------------------------------------------------------------------------------------------
// The option table.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arg {
    None,
    Required,
    /// popt's POPT_ARGFLAG_OPTIONAL: a glued value, or the next word unless it starts with '-'.
    Optional,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
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
    DataPath,
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

/// Every option ipvsadm 1.31 knows, plus xvs's `--socket` and `--datapath`.
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
];

fn find_long(name: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.long == name)
}

fn find_short(c: char) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.short == Some(c))
}

/// One recognised option occurrence, or a bare word.
enum Item {
    Opt { tag: Tag, value: Option<String> },
    Word(String),
}

/// popt-like tokenizer: clusters, glued values, `--long=value`, optional values, `--`.
fn tokenize<S: AsRef<str>>(args: &[S]) -> Result<Vec<Item>, ParseError> {
    let mut items = Vec::new();
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
            });
        } else {
            // A cluster of short options: `-Ln`, `-At10.0.0.1:80`, `-p600`.
            let cluster = &a[1..];
            for (pos, c) in cluster.char_indices() {
                let spec = find_short(c)
                    .ok_or_else(|| ParseError::usage(format!("-{c}: unknown option")))?;
                let rest = &cluster[pos + c.len_utf8()..];
                let glued = (!rest.is_empty()).then(|| rest.to_string());
                let spelled = format!("-{c}");
                let (value, ends_cluster) = match spec.arg {
                    Arg::None => (None, false),
                    Arg::Required => {
                        let v = glued.or_else(|| next_value(&mut i, false)).ok_or_else(|| {
                            ParseError::usage(format!("{spelled}: missing argument"))
                        })?;
                        (Some(v), true)
                    }
                    Arg::Optional => (glued.or_else(|| next_value(&mut i, true)), true),
                };
                items.push(Item::Opt {
                    tag: spec.tag,
                    value,
                });
                if ends_cluster {
                    break;
                }
            }
        }
        i += 1;
    }
    Ok(items)
}

// ---------------------------------------------------------------------------------------------
// Interpreting the options.

/// The service selector as given (`-t`, `-u`, or something xvs does not implement).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SvcSel {
    Key(ServiceKey),
    /// `-f`, `--sctp-service`, or an IPv6 address: accepted for the legality checks, refused
    /// afterwards as not implemented.
    Unsupported,
}

/// Everything gathered from the options, like ipvsadm's `ipvs_command_entry` plus flags.
#[derive(Default)]
struct State {
    cmd: Option<Cmd>,
    /// Bitset of `Col`s seen (each may be given once).
    seen: u64,
    svc: Option<SvcSel>,
    scheduler: Option<String>,
    persistent: Option<u32>,
    netmask: Option<Ipv4Addr>,
    dest: Option<(Ipv4Addr, Option<u16>)>,
    forward: Option<Forward>,
    weight: Option<u32>,
    u_threshold: Option<u32>,
    l_threshold: Option<u32>,
    sched_flags: Option<String>,
    one_packet: bool,
    format: FormatOpts,
    tun_gue_or_gre: bool,
    socket: Option<String>,
    words: Vec<String>,
    /// First not-implemented feature seen; reported after all syntax checks pass.
    unsupported: Option<&'static str>,
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

    fn has(&self, col: Col) -> bool {
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

fn parse_timeout(s: &str, min: u32) -> Result<u32, ParseError> {
    addr::string_to_number(s, i64::from(min), i64::from(MAX_TIMEOUT_SECS))
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| ParseError::invalid(format!("invalid timeout value `{s}' specified")))
}

fn parse_u32(s: &str, max: u32, msg: &str) -> Result<u32, ParseError> {
    addr::string_to_number(s, 0, i64::from(max))
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| ParseError::invalid(msg))
}

/// Applies one option, in command-line order, as ipvsadm's `parse_options` loop does.
fn apply(
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
                if v != "master" && v != "backup" {
                    // Both messages verbatim from ipvsadm, including the second one's typo.
                    return Err(ParseError::invalid(if c == Cmd::StartDaemon {
                        "illegal start-daemon parameter specified"
                    } else {
                        "illegal start_daemon specified"
                    }));
                }
                st.unsupported("connection synchronisation (--start-daemon/--stop-daemon)");
            }
        }
        // Handled before `apply` is called.
        Tag::Help | Tag::Version | Tag::DataPath => {}
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
        Tag::McastInterface => st.set_option(Col::McastInterface)?,
        Tag::SyncId => {
            st.set_option(Col::SyncId)?;
            parse_u32(&value_of(value), 255, "illegal syncid specified")?;
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
        Tag::McastGroup => st.set_option(Col::McastGroup)?,
        Tag::McastPort => {
            st.set_option(Col::McastPort)?;
            parse_u32(&value_of(value), 65535, "illegal mcast-port specified")?;
        }
        Tag::McastTtl => {
            st.set_option(Col::McastTtl)?;
            parse_u32(&value_of(value), 255, "illegal mcast-ttl specified")?;
        }
        Tag::SyncMaxlen => {
            st.set_option(Col::SyncMaxlen)?;
            // IP and UDP headers (20 + 8 bytes) come out of the 64 KiB maximum.
            parse_u32(
                &value_of(value),
                65535 - 20 - 8,
                "illegal sync-maxlen specified",
            )?;
        }
        Tag::TunInfo => {
            st.set_option(Col::TunInfo)?;
            st.unsupported("tunnel information listing (--tun-info)");
        }
        Tag::TunType => {
            st.set_option(Col::TunType)?;
            match value_of(value).as_str() {
                // IPIP is what -i already means; ipvsadm-save 1.31 writes it explicitly.
                "ipip" => {}
                "gue" | "gre" => {
                    st.tun_gue_or_gre = true;
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
        Tag::Socket => {
            if st.socket.is_some() {
                return Err(ParseError::invalid("multiple 'socket' options specified"));
            }
            st.socket = Some(value_of(value));
        }
    }
    Ok(())
}

/// ipvsadm's `generic_opt_check`: walks the columns in order, first violation wins.
fn check_legality(cmd: Cmd, seen: u64) -> Result<(), ParseError> {
    let rules = cmd.rules();
    let mut first_exclusive: Option<usize> = None;
    for (j, rule) in rules.iter().enumerate() {
        let given = seen & (1u64 << j) != 0;
        match (*rule, given) {
            (b'+', false) => {
                return Err(ParseError::invalid(format!(
                    "You need to supply the '{}' option for the '{}' command",
                    COL_NAMES[j],
                    cmd.name()
                )))
            }
            (b'x', true) => {
                return Err(ParseError::invalid(format!(
                    "Illegal '{}' option with the '{}' command",
                    COL_NAMES[j],
                    cmd.name()
                )))
            }
            (b'1', true) => match first_exclusive {
                None => first_exclusive = Some(j),
                Some(last) => {
                    return Err(ParseError::invalid(format!(
                        "The option '{}' conflicts with the '{}' option in the '{}' command",
                        COL_NAMES[j],
                        COL_NAMES[last],
                        cmd.name()
                    )))
                }
            },
            _ => {}
        }
    }
    Ok(())
}

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

/// Parses a command line (without the program name) using the system's `/etc/services`.
pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Invocation, ParseError> {
    parse_with(args, PortNames::system())
}

/// Parses a command line (without the program name) with an explicit port-name table.
pub fn parse_with<S: AsRef<str>>(args: &[S], names: &PortNames) -> Result<Invocation, ParseError> {
    let items = tokenize(args)?;
    // `-h` and `-v` answer at once, as ipvsadm does when they come first.
    for item in &items {
        if let Item::Opt { tag, .. } = item {
            match tag {
                Tag::Help => return Ok(invocation(Command::Help, None)),
                Tag::Version => return Ok(invocation(Command::Version, None)),
                _ => {}
            }
        }
    }

    // `--datapath` is an xvs command outside ipvsadm's table: it takes only `--socket`.
    if items.iter().any(|i| {
        matches!(
            i,
            Item::Opt {
                tag: Tag::DataPath,
                ..
            }
        )
    }) {
        let mut socket = None;
        for item in items {
            match item {
                Item::Opt {
                    tag: Tag::DataPath, ..
                } => {}
                Item::Opt {
                    tag: Tag::Socket,
                    value,
                } => socket = value,
                Item::Word(w) => {
                    return Err(ParseError::invalid(format!("unexpected argument {w}")))
                }
                Item::Opt { .. } => {
                    return Err(ParseError::invalid(
                        "--datapath takes no options other than --socket",
                    ))
                }
            }
        }
        return Ok(invocation(Command::DataPath, socket));
    }

    let mut st = State::default();
    let mut only_socket = true;
    for item in items {
        match item {
            Item::Word(w) => st.words.push(w),
            Item::Opt { tag, value, .. } => {
                only_socket &= tag == Tag::Socket;
                apply(&mut st, tag, value, names)?;
            }
        }
    }
    // No arguments at all lists the table, as ipvsadm does (`--socket` alone counts as none).
    if only_socket && st.words.is_empty() {
        let list = ListOpts {
            view: ListView::Services {
                service: None,
                columns: Columns::Default,
            },
            format: FormatOpts::default(),
        };
        return Ok(invocation(Command::List(list), st.socket));
    }
    let Some(cmd) = st.cmd else {
        return Err(ParseError::usage("no command specified"));
    };

    let mut words = std::mem::take(&mut st.words).into_iter();
    let mut timeouts = None;
    if cmd == Cmd::SetTimeout {
        let (Some(tcp), Some(fin), Some(udp)) = (words.next(), words.next(), words.next()) else {
            return Err(ParseError::invalid(
                "--set option requires 3 timeout values",
            ));
        };
        // 0 means "leave unchanged" and is passed through for the daemon to honour.
        timeouts = Some(Timeouts {
            tcp: parse_timeout(&tcp, 0)?,
            tcp_fin: parse_timeout(&fin, 0)?,
            udp: parse_timeout(&udp, 0)?,
        });
    }
    if let Some(extra) = words.next() {
        return Err(ParseError::invalid(format!("unexpected argument {extra}")));
    }

    check_legality(cmd, st.seen)?;
    build(cmd, st, timeouts)
}

fn invocation(command: Command, socket: Option<String>) -> Invocation {
    Invocation { command, socket }
}

/// Command-specific checks and defaults (ipvsadm's `process_options`), then the result.
fn build(cmd: Cmd, st: State, timeouts: Option<Timeouts>) -> Result<Invocation, ParseError> {
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
        });
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
        // With the (default) IPIP tunnel type, no encapsulation option applies.
        if !st.tun_gue_or_gre {
            let ipip_illegal = [Col::TunPort, Col::TunNocsum, Col::TunCsum, Col::TunRemcsum];
            if let Some(c) = ipip_illegal.iter().find(|c| st.has(**c)) {
                return Err(ParseError::invalid(format!(
                    "Illegal '{}' option with the 'ipip' tunnel type",
                    c.name()
                )));
            }
        }
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
        // Refused above through `unsupported`; kept total so a future change cannot panic.
        Cmd::StartDaemon | Cmd::StopDaemon => {
            return Err(ParseError::not_implemented(
                "connection synchronisation (--start-daemon/--stop-daemon)",
            ))
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

/// Splits one `-R` input line like ipvsadm's `config_stream_read`: whitespace-separated words,
/// everything from `#` on ignored, and a leading program name (`ipvsadm`, `xvsadm`) dropped.
pub fn restore_words(line: &str) -> Vec<&str> {
    let line = line.split('#').next().unwrap_or("");
    line.split_whitespace()
        .filter(|w| *w != "ipvsadm" && *w != "xvsadm")
        .collect()
}

/// Parses `-R` input (ipvsadm-save lines) into the requests of one all-or-nothing batch.
/// Blank and comment lines are skipped. Errors name the offending line.
pub fn parse_restore(input: &str, names: &PortNames) -> Result<Vec<Request>, ParseError> {
    let mut reqs = Vec::new();
    for (n, line) in input.lines().enumerate() {
        let words = restore_words(line);
        if words.is_empty() {
            continue;
        }
        let at = |e: ParseError| ParseError {
            kind: e.kind,
            message: format!("line {}: {}", n + 1, e.message),
        };
        match parse_with(&words, names).map_err(at)? {
            Invocation {
                command: Command::Change(req),
                socket: None,
            } => reqs.push(req),
            _ => {
                return Err(at(ParseError::invalid(
                    "only configuration commands (-A -E -D -C -a -e -d -Z --set) can be restored",
                )))
            }
        }
    }
    Ok(reqs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> PortNames {
        PortNames::parse("http 80/tcp www\nhttps 443/tcp\ndomain 53/udp\n")
    }

    fn p(args: &str) -> Result<Invocation, ParseError> {
        let v: Vec<&str> = args.split_whitespace().collect();
        parse_with(&v, &names())
    }

    fn req(args: &str) -> Request {
        match p(args) {
            Ok(Invocation {
                command: Command::Change(r),
                ..
            }) => r,
            other => panic!("{args}: expected a change, got {other:?}"),
        }
    }

    fn err(args: &str) -> ParseError {
        match p(args) {
            Err(e) => e,
            Ok(i) => panic!("{args}: expected an error, got {i:?}"),
        }
    }

    fn key(proto: Protocol, s: &str) -> ServiceKey {
        let (a, port) = s.split_once(':').unwrap();
        ServiceKey {
            proto,
            addr: a.parse().unwrap(),
            port: port.parse().unwrap(),
        }
    }

    fn tcp(s: &str) -> ServiceKey {
        key(Protocol::Tcp, s)
    }

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn opts(sched: &str) -> ServiceOpts {
        ServiceOpts {
            scheduler: sched.to_string(),
            ..ServiceOpts::default()
        }
    }

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

    #[test]
    fn save_restore_help_version_socket() {
        assert_eq!(
            p("-S").unwrap().command,
            Command::Save(FormatOpts::default())
        );
        assert_eq!(
            p("--save -n").unwrap().command,
            Command::Save(FormatOpts {
                numeric: true,
                ..FormatOpts::default()
            })
        );
        assert_eq!(p("-R").unwrap().command, Command::Restore);
        assert_eq!(p("--restore").unwrap().command, Command::Restore);
        assert_eq!(p("-h").unwrap().command, Command::Help);
        assert_eq!(p("--help").unwrap().command, Command::Help);
        assert_eq!(p("-A -h").unwrap().command, Command::Help);
        assert_eq!(p("-v").unwrap().command, Command::Version);
        assert_eq!(p("--version").unwrap().command, Command::Version);
        let i = p("--socket /tmp/x.sock -C").unwrap();
        assert_eq!(
            (i.command, i.socket.as_deref()),
            (Command::Change(Request::Clear), Some("/tmp/x.sock"))
        );
        let i = p("--datapath --socket /tmp/z.sock").unwrap();
        assert_eq!(
            (i.command, i.socket.as_deref()),
            (Command::DataPath, Some("/tmp/z.sock"))
        );
        assert_eq!(
            err("--datapath -n").message,
            "--datapath takes no options other than --socket"
        );
        assert_eq!(err("--datapath x").message, "unexpected argument x");
        let i = p("--socket=/tmp/y.sock").unwrap();
        assert!(matches!(i.command, Command::List(_)));
        assert_eq!(i.socket.as_deref(), Some("/tmp/y.sock"));
        assert_eq!(
            err("-S -t 10.0.0.88:80").message,
            "Illegal 'service-address' option with the 'save' command"
        );
        assert_eq!(
            err("-R -n").message,
            "Illegal 'numeric' option with the 'restore' command"
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
        invalid("-A -D -t 10.0.0.1:80", "multiple commands specified");
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
    fn usage_errors() {
        for args in [
            "-t 10.0.0.1:80",
            "-n",
            "-Q",
            "--frobnicate",
            "-A -t",
            "-A --tcp-service",
            "--stats=1 -L",
        ] {
            let e = err(args);
            assert_eq!(e.kind, ParseErrorKind::Usage, "{args}: {e:?}");
            assert_eq!(e.exit_code(), 255);
            assert!(e.wants_hint());
        }
        assert_eq!(err("-Q").message, "-Q: unknown option");
        assert_eq!(
            err("--frobnicate=1").message,
            "--frobnicate=1: unknown option"
        );
        assert_eq!(err("-A -t").message, "-t: missing argument");
    }

    #[test]
    fn not_implemented_features() {
        for (args, what) in [
            ("-A -f 1", "firewall-mark"),
            ("--fwmark-service 7 -D", "firewall-mark"),
            ("--start-daemon master", "synchronisation"),
            ("--stop-daemon backup --syncid 3", "synchronisation"),
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

    #[test]
    fn restore_lines() {
        let input = "# saved by ipvsadm\n\
                     -A -t 10.0.0.88:80 -s wrr -p 600\n\
                     \n\
                     ipvsadm -a -t 10.0.0.88:80 -r 10.0.0.9:80 -g -w 2   # web1\n\
                     --set 0 0 60\n";
        let reqs = parse_restore(input, &names()).unwrap();
        assert_eq!(reqs.len(), 3);
        assert!(
            matches!(&reqs[0], Request::AddService { opts, .. } if opts.persistent == Some(600))
        );
        assert!(matches!(&reqs[1], Request::AddDest { dest, .. } if dest.weight == 2));
        assert_eq!(
            reqs[2],
            Request::SetTimeouts(Timeouts {
                tcp: 0,
                tcp_fin: 0,
                udp: 60
            })
        );
        let e =
            parse_restore("-C\n-a -t 10.0.0.88:80 -r 10.0.0.9 -w 70000\n", &names()).unwrap_err();
        assert_eq!(e.message, "line 2: illegal weight specified");
        assert_eq!(e.exit_code(), 2);
        let e = parse_restore("-L -n\n", &names()).unwrap_err();
        assert!(
            e.message.starts_with("line 1: only configuration commands"),
            "{e}"
        );
        let e = parse_restore("-R\n", &names()).unwrap_err();
        assert!(e.message.starts_with("line 1:"), "{e}");
        assert_eq!(parse_restore("\n# nothing\n", &names()).unwrap(), vec![]);
    }
}
