//! The block parser: logical lines → a tree of `{}` blocks → what each LVS block says, as
//! written (`Raw*`, unset values `None`). Defaults and inheritance are `resolve`'s job.
//!
//! Keywords, aliases, argument ranges and messages follow keepalived 2.2.7
//! (`keepalived/check/check_parser.c` init_check_keywords, `check_api.c`
//! install_checker_common_keywords, the `check_*.c` install_*_keyword functions and
//! `trackers/track_file.c`). keepalived reports a bad value and goes on without it; xvs
//! stops with `FILE:LINE: message` instead, since running with a silently different
//! configuration is worse than not starting. Unknown keywords are warnings, as in keepalived.

use super::lexer::{split_quoted_escaped, Line};
use super::model::{ConfError, Loc, OnDead, Script};
use crate::model::{Forward, Protocol};
use std::net::Ipv4Addr;
use std::time::Duration;

/// A line and the block that followed it, if any.
#[derive(Debug, Clone)]
pub struct Node {
    pub line: Line,
    pub block: Option<Vec<Node>>,
}

impl Node {
    fn loc(&self) -> &Loc {
        &self.line.loc
    }
    fn kw(&self) -> &str {
        &self.line.words[0]
    }
    fn args(&self) -> &[String] {
        &self.line.words[1..]
    }
}

pub(crate) fn err(loc: &Loc, msg: impl Into<String>) -> ConfError {
    ConfError {
        loc: loc.clone(),
        msg: msg.into(),
    }
}

/// Builds the block tree: a `{` line opens the block of the line before it
/// (process_stream's need_bob), `}` closes the innermost one.
pub fn tree(lines: Vec<Line>) -> Result<Vec<Node>, ConfError> {
    // Stack of (opening line's loc, nodes so far).
    let mut stack: Vec<(Option<Loc>, Vec<Node>)> = vec![(None, Vec::new())];
    for line in lines {
        if line.is_open() {
            let top = stack.last_mut().map(|(_, v)| v);
            match top.and_then(|v| v.pop()) {
                Some(node) if node.block.is_none() => {
                    // The node is re-attached when its block closes.
                    let loc = node.line.loc.clone();
                    stack.push((Some(loc), vec![node]));
                }
                other => {
                    if let (Some(n), Some((_, v))) = (other, stack.last_mut()) {
                        v.push(n);
                    }
                    return Err(err(&line.loc, "Unexpected '{'"));
                }
            }
        } else if line.is_close() {
            if stack.len() == 1 {
                return Err(err(&line.loc, "Extra '}' found"));
            }
            let (_, mut nodes) = stack.pop().unwrap_or((None, Vec::new()));
            let mut head = nodes.remove(0);
            head.block = Some(nodes);
            if let Some((_, v)) = stack.last_mut() {
                v.push(head);
            }
        } else {
            if let Some((_, v)) = stack.last_mut() {
                v.push(Node { line, block: None });
            }
        }
    }
    if stack.len() > 1 {
        let missing = stack.len() - 1;
        let loc = stack[1].0.clone().unwrap_or_default();
        let kw = stack[1]
            .1
            .first()
            .map(|n| n.kw().to_string())
            .unwrap_or_default();
        return Err(err(
            &loc,
            format!(
                "There are {missing} missing '}}'s or extra '{{'s (block '{kw}' is not closed)"
            ),
        ));
    }
    Ok(stack.pop().map(|(_, v)| v).unwrap_or_default())
}

/// Timing keywords as written at one level (virtual server, real server or checker).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawTiming {
    pub delay_loop: Option<Duration>,
    pub connect_timeout: Option<Duration>,
    pub retry: Option<u32>,
    pub delay_before_retry: Option<Duration>,
    pub warmup: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum VsTarget {
    Addr(Ipv4Addr, Option<u16>),
    Group(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RawSorry {
    pub loc: Loc,
    pub addr: Ipv4Addr,
    pub port: Option<u16>,
    pub method: Option<Forward>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RawVs {
    pub loc: Loc,
    pub target: VsTarget,
    pub protocol: Option<Protocol>,
    pub scheduler: Option<String>,
    pub sched_flags: Vec<String>,
    pub method: Option<Forward>,
    /// `persistence_timeout` (or set by `persistence_granularity`).
    pub persistence: Option<u32>,
    pub granularity: Option<Ipv4Addr>,
    pub ha_suspend: bool,
    pub virtualhost: Option<String>,
    pub alpha: bool,
    pub omega: bool,
    pub quorum: Option<u32>,
    pub hysteresis: Option<u32>,
    pub quorum_up: Option<Script>,
    pub quorum_down: Option<Script>,
    pub sorry: Option<RawSorry>,
    pub sorry_inhibit: bool,
    pub inhibit: bool,
    /// `weight` of the virtual server: the default weight of its real servers.
    pub weight: Option<u32>,
    pub on_dead: OnDead,
    pub timing: RawTiming,
    pub real_servers: Vec<RawRs>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RawRs {
    pub loc: Loc,
    pub addr: Ipv4Addr,
    pub port: Option<u16>,
    pub weight: Option<u32>,
    pub method: Option<Forward>,
    pub u_threshold: u32,
    pub l_threshold: u32,
    pub inhibit: Option<bool>,
    pub alpha: Option<bool>,
    pub notify_up: Option<Script>,
    pub notify_down: Option<Script>,
    pub virtualhost: Option<String>,
    pub timing: RawTiming,
    pub checkers: Vec<RawChecker>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RawChecker {
    pub loc: Loc,
    pub kind: RawKind,
    pub connect_ip: Option<Ipv4Addr>,
    pub connect_port: Option<u16>,
    pub bindto: Option<Ipv4Addr>,
    pub bind_port: Option<u16>,
    pub alpha: Option<bool>,
    pub timing: RawTiming,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RawKind {
    Tcp,
    Http {
        tls: bool,
        urls: Vec<RawUrl>,
        virtualhost: Option<String>,
        http_protocol: String,
        fast_recovery: bool,
        enable_sni: bool,
    },
    Misc {
        script: Option<Script>,
        timeout: Option<u32>,
        dynamic: bool,
        user: Option<(String, Option<String>)>,
    },
    Udp {
        payload: Vec<u8>,
        require_reply: Option<Vec<u8>>,
        min_reply_length: Option<usize>,
        max_reply_length: Option<usize>,
    },
    Dns {
        qtype: Option<String>,
        name: Option<String>,
    },
    Ping,
    Smtp {
        helo_name: Option<String>,
    },
    File {
        /// The `track_file` block named (looked up when the FILE_CHECK is read).
        track: Option<TrackFile>,
        weight: Option<(i32, bool)>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct RawUrl {
    pub loc: Loc,
    pub path: Option<String>,
    pub digest: Option<String>,
    pub status_codes: Vec<std::ops::RangeInclusive<u16>>,
    pub virtualhost: Option<String>,
    pub regex: Option<String>,
    pub regex_no_match: bool,
}

/// One `virtual_server_group` member, as written.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupEntry {
    pub loc: Loc,
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RawGroup {
    pub loc: Loc,
    pub name: String,
    pub entries: Vec<GroupEntry>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrackFile {
    pub loc: Loc,
    pub name: String,
    pub path: Option<String>,
    pub weight: i32,
    pub reverse: bool,
    pub init_value: Option<i32>,
    pub init_overwrite: bool,
}

/// What the file says, as written.
#[derive(Debug, Clone, Default)]
pub struct RawConfig {
    pub virtual_servers: Vec<RawVs>,
    pub groups: Vec<RawGroup>,
    pub warnings: Vec<ConfError>,
    pub ignored: Vec<(String, Loc)>,
}

/// Top-level blocks and keywords keepalived accepts that are not the LVS part: skipped
/// whole and recorded (install_keyword_root in global_parser.c, vrrp_parser.c,
/// bfd_parser.c; `SSL` is refused instead, below).
const IGNORED_ROOTS: &[&str] = &[
    "global_defs",
    "vrrp_instance",
    "vrrp_sync_group",
    "vrrp_script",
    "vrrp_track_process",
    "vrrp_track_file",
    "static_ipaddress",
    "static_routes",
    "static_rules",
    "static_track_group",
    "track_group",
    "garp_group",
    "linkbeat_use_polling",
    "linkbeat_interfaces",
    "interface_up_down_delays",
    "net_namespace",
    "net_namespace_ipvs",
    "namespace_with_ipsets",
    "instance",
    "use_pid_dir",
    "child_wait_time",
    "bfd_instance",
];

/// Parses the top level.
pub fn parse(nodes: &[Node]) -> Result<RawConfig, ConfError> {
    let mut cfg = RawConfig::default();
    let mut track_files: Vec<TrackFile> = Vec::new();
    for n in nodes {
        let kw = n.kw();
        match kw {
            "virtual_server" => {
                let vs = parse_vs(n, &track_files, &mut cfg.warnings)?;
                cfg.virtual_servers.push(vs);
            }
            "virtual_server_group" => {
                let g = parse_group(n)?;
                if cfg.groups.iter().any(|o| o.name == g.name) {
                    // keepalived keeps both and uses the first it finds (ipvs_get_group_by_name).
                    cfg.warnings.push(err(
                        n.loc(),
                        format!(
                            "virtual server group {} defined twice - using the first",
                            g.name
                        ),
                    ));
                } else if g.entries.is_empty() {
                    // vsg_handler: an empty group is removed; a virtual server using it then
                    // fails as naming an unknown group.
                    cfg.warnings.push(err(
                        n.loc(),
                        format!("virtual server group {} has no entries - removing", g.name),
                    ));
                } else {
                    cfg.groups.push(g);
                }
            }
            "track_file" | "vrrp_track_file" => {
                if kw == "vrrp_track_file" {
                    cfg.warnings.push(err(
                        n.loc(),
                        "\"vrrp_track_file\" is deprecated, please use \"track_file\"",
                    ));
                    // keepalived's VRRP side uses it too; xvs records it as well.
                    cfg.ignored.push((kw.to_string(), n.loc().clone()));
                }
                if let Some(tf) = parse_track_file(n, &mut cfg.warnings)? {
                    if track_files.iter().any(|t| t.name == tf.name) {
                        // find_tracked_file_by_name returns the first of the same name.
                        cfg.warnings.push(err(
                            n.loc(),
                            format!("track_file {} defined twice - using the first", tf.name),
                        ));
                    } else {
                        track_files.push(tf);
                    }
                }
            }
            "SSL" => {
                return Err(err(
                    n.loc(),
                    "SSL (the SSL_GET client certificate and CA) is not supported by xvs",
                ))
            }
            _ if IGNORED_ROOTS.contains(&kw) => cfg.ignored.push((kw.to_string(), n.loc().clone())),
            _ => cfg
                .warnings
                .push(err(n.loc(), format!("Unknown keyword '{kw}'"))),
        }
    }
    Ok(cfg)
}

fn need_block(n: &Node) -> Result<&[Node], ConfError> {
    n.block.as_deref().ok_or_else(|| {
        err(
            n.loc(),
            format!(
                "Missing '{{' at beginning of configuration block '{}'",
                n.kw()
            ),
        )
    })
}

fn no_block(n: &Node) -> Result<(), ConfError> {
    if n.block.is_some() {
        return Err(err(n.loc(), format!("Unexpected '{{' after '{}'", n.kw())));
    }
    Ok(())
}

/// strvec_slot(strvec, i) with keepalived's null_strvec message when the word is missing.
fn arg(n: &Node, i: usize) -> Result<&str, ConfError> {
    n.line.words.get(i).map(String::as_str).ok_or_else(|| {
        err(
            n.loc(),
            format!(
                "Configuration line starting `{}` is missing a parameter after keyword `{}` at word position {}",
                n.kw(),
                n.line.words.get(i.saturating_sub(1)).map(String::as_str).unwrap_or(""),
                i + 1
            ),
        )
    })
}

/// read_unsigned(): decimal, leading blanks allowed, no sign.
pub(crate) fn parse_unsigned(
    n: &Node,
    i: usize,
    min: u64,
    max: u64,
    what: &str,
) -> Result<u64, ConfError> {
    let s = arg(n, i)?;
    let t = s.trim_start();
    let bad = |m: String| err(n.loc(), format!("{what}: {m}"));
    if t.starts_with('-') {
        return Err(bad(format!("negative number '{s}'")));
    }
    let t = t.strip_prefix('+').unwrap_or(t);
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(format!("invalid number '{s}'")));
    }
    let v: u64 = t
        .parse()
        .map_err(|_| bad(format!("number '{s}' outside unsigned integer range")))?;
    if v < min || v > max {
        return Err(bad(format!("number '{s}' outside range [{min}, {max}]")));
    }
    Ok(v)
}

fn parse_int(n: &Node, i: usize, min: i64, max: i64, what: &str) -> Result<i64, ConfError> {
    let s = arg(n, i)?;
    let bad = |m: String| err(n.loc(), format!("{what}: {m}"));
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if body.is_empty() || !body.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(format!("invalid number '{s}'")));
    }
    let v: i64 = body
        .parse::<i64>()
        .map(|v| if neg { -v } else { v })
        .map_err(|_| bad(format!("number '{s}' outside integer range")))?;
    if v < min || v > max {
        return Err(bad(format!("number '{s}' outside range [{min}, {max}]")));
    }
    Ok(v)
}

/// read_timer(): seconds with up to 6 decimals (µs, TIMER_HZ_DIGITS); more decimals are
/// rounded (keepalived warns). `min_us`/`max_us` in µs.
fn parse_timer(
    n: &Node,
    i: usize,
    min_us: u64,
    max_us: u64,
    what: &str,
    warnings: &mut Vec<ConfError>,
) -> Result<Duration, ConfError> {
    let s = arg(n, i)?;
    let bad = |m: String| err(n.loc(), format!("{what}: {m}"));
    if s.starts_with('-') {
        return Err(bad(format!("negative number '{s}'")));
    }
    let (int, frac) = match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    };
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad(format!("invalid number '{s}'")));
    }
    let mut frac6: String = frac.chars().take(6).collect();
    let round_up = frac.len() > 6 && frac.as_bytes()[6] >= b'5';
    if frac.len() > 6 {
        warnings.push(bad(format!("number '{s}' has too many decimal places")));
    }
    while frac6.len() < 6 {
        frac6.push('0');
    }
    let whole: u64 = if int.is_empty() {
        0
    } else {
        int.parse()
            .map_err(|_| bad(format!("number '{s}' outside unsigned decimal range")))?
    };
    let us = whole
        .checked_mul(1_000_000)
        .and_then(|w| w.checked_add(frac6.parse::<u64>().unwrap_or(0)))
        .and_then(|w| w.checked_add(u64::from(round_up)))
        .ok_or_else(|| bad(format!("number '{s}' outside unsigned decimal range")))?;
    if us < min_us || us > max_us {
        return Err(bad(format!(
            "number '{s}' outside range [{}, {}]",
            fmt_us(min_us),
            fmt_us(max_us)
        )));
    }
    Ok(Duration::from_micros(us))
}

fn fmt_us(us: u64) -> String {
    format!("{}.{:06}", us / 1_000_000, us % 1_000_000)
}

/// check_true_false(): an optional on/true/yes or off/false/no; absent = true.
fn parse_bool_opt(n: &Node, what: &str) -> Result<bool, ConfError> {
    match n.line.words.get(1).map(String::as_str) {
        None => Ok(true),
        Some("true" | "on" | "yes") => Ok(true),
        Some("false" | "off" | "no") => Ok(false),
        Some(other) => Err(err(n.loc(), format!("Invalid {what} parameter {other}"))),
    }
}

/// An IPv4 address as inet_pton(AF_INET) reads it; IPv6 (any `:`) is refused.
fn parse_ip(n: &Node, s: &str, what: &str) -> Result<Ipv4Addr, ConfError> {
    if s.contains(':') {
        return Err(err(
            n.loc(),
            format!("{what} {s}: IPv6 is not supported by xvs"),
        ));
    }
    s.parse()
        .map_err(|_| err(n.loc(), format!("Invalid {what} address {s}")))
}

/// A port as alloc_vs/alloc_rs read it: `0` (any number of zeros) means no port
/// ("added v2.0.7 to support legacy configuration"), else 1..=65535.
fn parse_port_opt(n: &Node, i: usize, what: &str) -> Result<Option<u16>, ConfError> {
    match n.line.words.get(i) {
        None => Ok(None),
        Some(s) if !s.is_empty() && s.bytes().all(|b| b == b'0') => Ok(None),
        Some(_) => Ok(Some(parse_unsigned(n, i, 1, 65535, what)? as u16)),
    }
}

/// A script keyword (notify_script_init, lib/notify.c): the line is re-split with quotes and
/// escapes; word 1 is the command line, itself split again into argv; words 2 and 3 are
/// the user and group.
fn parse_script(n: &Node) -> Result<Script, ConfError> {
    let words = split_quoted_escaped(&n.line.raw, n.loc())?;
    let cmd = words.get(1).ok_or_else(|| {
        err(
            n.loc(),
            format!("Configuration line starting `{}` is missing a parameter after keyword `{}` at word position 2", n.kw(), n.kw()),
        )
    })?;
    let argv = split_quoted_escaped(cmd, n.loc())?;
    if argv.is_empty() {
        return Err(err(
            n.loc(),
            format!("Unable to parse script '{cmd}' - ignoring"),
        ));
    }
    if words.len() > 4 {
        return Err(err(
            n.loc(),
            format!(
                "{}: extra words after the user and group: '{}' (quote the command line)",
                n.kw(),
                words[4..].join(" ")
            ),
        ));
    }
    Ok(Script {
        argv,
        user: words.get(2).cloned(),
        group: words.get(3).cloned(),
        loc: n.loc().clone(),
    })
}

/// lvs_method / lb_kind / sorry_server_lvs_method (svr_forwarding_handler).
fn parse_method(n: &Node) -> Result<Forward, ConfError> {
    let m = arg(n, 1)?;
    let f = match m {
        "NAT" => Forward::Masq,
        "DR" => Forward::Route,
        "TUN" => Forward::Tunnel,
        _ => {
            return Err(err(
                n.loc(),
                format!("PARSER : unknown [{m}] routing method."),
            ))
        }
    };
    // TUN [type ipip|gue port N|gre] [nocsum|csum|remcsum]: xvs encapsulates in IPIP
    // without checksums only, which is keepalived's default (type ipip, nocsum).
    let opts = &n.args()[1..];
    let mut i = 0;
    while i < opts.len() {
        let o = opts[i].as_str();
        if f != Forward::Tunnel {
            return Err(err(
                n.loc(),
                format!("Invalid tunnel option {o} for {m} forwarding"),
            ));
        }
        match o {
            "type" => {
                let t = opts
                    .get(i + 1)
                    .map(String::as_str)
                    .ok_or_else(|| err(n.loc(), "Missing tunnel type"))?;
                match t {
                    "ipip" => {}
                    "gue" | "gre" => {
                        return Err(err(
                            n.loc(),
                            format!("tunnel type {t} is not supported by xvs (ipip only)"),
                        ))
                    }
                    _ => return Err(err(n.loc(), format!("Unknown tunnel type {t}"))),
                }
                i += 2;
            }
            "nocsum" => i += 1,
            "port" => {
                return Err(err(
                    n.loc(),
                    "gue tunnels require port, otherwise cannot have port.",
                ))
            }
            "csum" | "remcsum" => {
                return Err(err(n.loc(), "ipip tunnels do not support checksum option."))
            }
            _ => return Err(err(n.loc(), format!("Invalid tunnel option {o}"))),
        }
    }
    Ok(f)
}

/// Keywords keepalived accepts that change nothing xvs does: warned about, then ignored.
fn ignored_kw(n: &Node, warnings: &mut Vec<ConfError>, why: &str) {
    warnings.push(err(n.loc(), format!("{}: {why} - ignored", n.kw())));
}

fn unknown(n: &Node, warnings: &mut Vec<ConfError>) {
    // keepalived: "Unknown keyword" and the line is skipped. A block after an unknown
    // keyword is skipped whole here (keepalived would read its lines as keywords of the
    // enclosing block and end that block at its `}`).
    warnings.push(err(n.loc(), format!("Unknown keyword '{}'", n.kw())));
}

/// The timing keywords at any level; `true` if `n` was one. `min_retry` is 1 at the
/// virtual and real server levels (vs_retry_handler, rs_retry_handler) and 0 in checkers
/// (check_api.c retry_handler).
fn timing_kw(
    n: &Node,
    t: &mut RawTiming,
    min_retry: u64,
    level: &str,
    warnings: &mut Vec<ConfError>,
) -> Result<bool, ConfError> {
    let kw = n.kw();
    let what = if level.is_empty() {
        kw.to_string()
    } else {
        format!("{level} {kw}")
    };
    match kw {
        // delay_loop: read_timer(.., 1, 0 = TIMER_MAXIMUM)
        "delay_loop" => t.delay_loop = Some(parse_timer(n, 1, 1, u64::MAX - 1, &what, warnings)?),
        // connect_timeout: read_timer(.., 1, UINT_MAX)
        "connect_timeout" => {
            t.connect_timeout = Some(parse_timer(n, 1, 1, u64::from(u32::MAX), &what, warnings)?)
        }
        "delay_before_retry" => {
            t.delay_before_retry = Some(parse_timer(n, 1, 0, u64::MAX - 1, &what, warnings)?)
        }
        "warmup" => t.warmup = Some(parse_timer(n, 1, 0, u64::MAX - 1, &what, warnings)?),
        "retry" => {
            t.retry = Some(parse_unsigned(n, 1, min_retry, u64::from(u32::MAX), &what)? as u32)
        }
        _ => return Ok(false),
    }
    no_block(n)?;
    Ok(true)
}

fn parse_vs(
    n: &Node,
    track_files: &[TrackFile],
    warnings: &mut Vec<ConfError>,
) -> Result<RawVs, ConfError> {
    let a1 = arg(n, 1)?;
    let target = match a1 {
        "group" => VsTarget::Group(arg(n, 2)?.to_string()),
        "fwmark" => {
            return Err(err(
                n.loc(),
                "fwmark virtual servers are not supported by xvs",
            ))
        }
        ip => {
            if ip.contains(':') {
                return Err(err(
                    n.loc(),
                    format!("virtual server {ip}: IPv6 is not supported by xvs"),
                ));
            }
            let addr = ip.parse().map_err(|_| {
                err(
                    n.loc(),
                    format!("Invalid virtual server IP address {ip} - skipping"),
                )
            })?;
            VsTarget::Addr(addr, parse_port_opt(n, 2, "virtual server port")?)
        }
    };
    let mut vs = RawVs {
        loc: n.loc().clone(),
        target,
        protocol: None,
        scheduler: None,
        sched_flags: Vec::new(),
        method: None,
        persistence: None,
        granularity: None,
        ha_suspend: false,
        virtualhost: None,
        alpha: false,
        omega: false,
        quorum: None,
        hysteresis: None,
        quorum_up: None,
        quorum_down: None,
        sorry: None,
        sorry_inhibit: false,
        inhibit: false,
        weight: None,
        on_dead: OnDead::default(),
        timing: RawTiming::default(),
        real_servers: Vec::new(),
    };
    for c in need_block(n)? {
        if timing_kw(c, &mut vs.timing, 1, "virtual server", warnings)? {
            continue;
        }
        let kw = c.kw();
        match kw {
            "real_server" => {
                vs.real_servers.push(parse_rs(c, track_files, warnings)?);
                continue;
            }
            "lb_algo" | "lvs_sched" => {
                let s = arg(c, 1)?;
                match crate::sched::by_name(s) {
                    Ok(_) => vs.scheduler = Some(s.to_string()),
                    Err(crate::sched::SchedError::Unknown(_)) => {
                        return Err(err(c.loc(), format!("Invalid lvs_scheduler '{s}'")))
                    }
                }
            }
            "ops" => {
                return Err(err(
                    c.loc(),
                    "ops (one-packet scheduling) is not implemented by xvs",
                ))
            }
            "flag-1" | "flag-2" | "flag-3" => push_flag(&mut vs.sched_flags, kw),
            // lbflags_handler: sh-* only count with lvs_sched sh *given before them*, mh-*
            // with mh; otherwise keepalived ignores them (with a warning, except sh-* under
            // mh and mh-* under sh, which it drops silently).
            "sh-port" | "sh-fallback" | "mh-port" | "mh-fallback" | "hashed" => {
                let sched = vs.scheduler.as_deref().unwrap_or("");
                match (sched, kw) {
                    ("sh", "sh-port" | "sh-fallback") | ("mh", "mh-port" | "mh-fallback") => {
                        push_flag(&mut vs.sched_flags, kw)
                    }
                    ("sh" | "mh", _) => warnings.push(err(
                        c.loc(),
                        format!("{kw} does not apply to scheduler {sched} - ignoring"),
                    )),
                    _ => warnings.push(err(
                        c.loc(),
                        format!("{kw} only applies to sh scheduler - ignoring"),
                    )),
                }
            }
            "lb_kind" | "lvs_method" => vs.method = Some(parse_method(c)?),
            "persistence_engine" => {
                return Err(err(c.loc(), "persistence_engine is not supported by xvs"))
            }
            "persistence_timeout" => {
                if c.args().is_empty() {
                    // IPVS_SVC_PERSISTENT_TIMEOUT (libipvs.h): 6 * 60.
                    vs.persistence = Some(360);
                } else if c.args()[0].trim().bytes().all(|b| b == b'0')
                    && !c.args()[0].trim().is_empty()
                {
                    // pto_handler reads 1..=LVS_MAX_TIMEOUT: 0 is "invalid" and left out, so
                    // the service stays not persistent (the seeds' lab file writes 0).
                    warnings.push(err(
                        c.loc(),
                        "number '0' outside range [1, 2678400]: persistence_timeout invalid - not persistent",
                    ));
                } else {
                    // LVS_MAX_TIMEOUT (global_data.h): 31 days.
                    vs.persistence =
                        Some(parse_unsigned(c, 1, 1, 86400 * 31, "persistence_timeout")? as u32);
                }
            }
            "persistence_granularity" => {
                let s = arg(c, 1)?;
                if !s.contains('.') {
                    return Err(err(
                        c.loc(),
                        format!("IPv6 persistence_granularity {s} is not supported by xvs"),
                    ));
                }
                let m: Ipv4Addr = s.parse().map_err(|_| {
                    err(
                        c.loc(),
                        format!("Invalid IPv4 persistence_granularity specified - {s}"),
                    )
                })?;
                vs.granularity = Some(m);
                // pgr_handler makes the service persistent if it was not yet.
                if vs.persistence.is_none() {
                    vs.persistence = Some(360);
                }
            }
            "protocol" => {
                let p = arg(c, 1)?;
                vs.protocol = Some(match p.to_ascii_uppercase().as_str() {
                    "TCP" => Protocol::Tcp,
                    "UDP" => Protocol::Udp,
                    "SCTP" => return Err(err(c.loc(), "protocol SCTP is not supported by xvs")),
                    _ => return Err(err(c.loc(), format!("Unknown protocol {p}"))),
                });
            }
            "ip_family" => match arg(c, 1)? {
                "inet" => {}
                "inet6" => {
                    return Err(err(
                        c.loc(),
                        "ip_family inet6: IPv6 is not supported by xvs",
                    ))
                }
                f => return Err(err(c.loc(), format!("unknown address family {f}"))),
            },
            "ha_suspend" => vs.ha_suspend = true,
            "virtualhost" => {
                vs.virtualhost = Some(
                    c.args()
                        .first()
                        .cloned()
                        .ok_or_else(|| err(c.loc(), "virtual server virtualhost missing"))?,
                )
            }
            "alpha" => vs.alpha = true,
            "omega" => vs.omega = true,
            "quorum_up" | "quorum_down" => {
                let slot = if kw == "quorum_up" {
                    &mut vs.quorum_up
                } else {
                    &mut vs.quorum_down
                };
                if slot.is_some() {
                    return Err(err(c.loc(), format!("{kw} script already specified")));
                }
                *slot = Some(parse_script(c)?);
            }
            "quorum" => {
                vs.quorum = Some(parse_unsigned(c, 1, 1, u64::from(u32::MAX), "quorum")? as u32)
            }
            "hysteresis" => {
                vs.hysteresis =
                    Some(parse_unsigned(c, 1, 0, u64::from(u32::MAX), "hysteresis")? as u32)
            }
            // vs_weight_handler: 1..=IPVS_WEIGHT_LIMIT; xvs (like ipvsadm) caps weights at 65535.
            "weight" => {
                vs.weight = Some(parse_unsigned(c, 1, 1, 65535, "Virtual server weight")? as u32)
            }
            "inhibit_on_failure" => vs.inhibit = true,
            "sorry_server" => {
                let ip = arg(c, 1)?;
                let addr = parse_ip(c, ip, "sorry server")?;
                let port = parse_port_opt(c, 2, "sorry server port")?;
                vs.sorry = Some(RawSorry {
                    loc: c.loc().clone(),
                    addr,
                    port,
                    method: None,
                });
            }
            "sorry_server_inhibit" => {
                if vs.sorry.is_some() {
                    vs.sorry_inhibit = true;
                } else {
                    // ssvri_handler
                    warnings.push(err(
                        c.loc(),
                        "Ignoring sorry_server inhibit used before or without sorry_server",
                    ));
                }
            }
            "sorry_server_lvs_method" => {
                let m = parse_method(c)?;
                match vs.sorry.as_mut() {
                    Some(s) => s.method = Some(m),
                    None => warnings.push(err(
                        c.loc(),
                        "sorry_server forwarding used without sorry_server",
                    )),
                }
            }
            "xvs_on_dead" => {
                vs.on_dead = match arg(c, 1)? {
                    "ipvs" => OnDead::Ipvs,
                    "expire" => OnDead::Expire,
                    "reassign" => OnDead::Reassign,
                    o => {
                        return Err(err(
                            c.loc(),
                            format!("xvs_on_dead {o}: expected ipvs, expire or reassign"),
                        ))
                    }
                }
            }
            "smtp_alert" => {
                parse_bool_opt(c, "virtual_server smtp_alert")?;
                ignored_kw(c, warnings, "xvs sends no e-mail alerts");
            }
            "snmp_name" => ignored_kw(c, warnings, "xvs has no SNMP agent"),
            _ => {
                unknown(c, warnings);
                continue;
            }
        }
        no_block(c)?;
    }
    Ok(vs)
}

fn push_flag(flags: &mut Vec<String>, f: &str) {
    if !flags.iter().any(|x| x == f) {
        flags.push(f.to_string());
    }
}

fn parse_rs(
    n: &Node,
    track_files: &[TrackFile],
    warnings: &mut Vec<ConfError>,
) -> Result<RawRs, ConfError> {
    let ip = arg(n, 1)?;
    if ip.contains(':') {
        return Err(err(
            n.loc(),
            format!("real server {ip}: IPv6 is not supported by xvs"),
        ));
    }
    let port_word = n.line.words.get(2).map(String::as_str).unwrap_or("");
    let addr: Ipv4Addr = ip.parse().map_err(|_| {
        err(
            n.loc(),
            format!("Invalid real server ip address/port {ip}/{port_word} - skipping"),
        )
    })?;
    let port = parse_port_opt(n, 2, "real server port")?;
    let mut rs = RawRs {
        loc: n.loc().clone(),
        addr,
        port,
        weight: None,
        method: None,
        u_threshold: 0,
        l_threshold: 0,
        inhibit: None,
        alpha: None,
        notify_up: None,
        notify_down: None,
        virtualhost: None,
        timing: RawTiming::default(),
        checkers: Vec::new(),
    };
    for c in need_block(n)? {
        if timing_kw(c, &mut rs.timing, 1, "real server", warnings)? {
            continue;
        }
        let kw = c.kw();
        if let Some(ch) = parse_checker(c, track_files, warnings)? {
            rs.checkers.extend(ch);
            continue;
        }
        match kw {
            // rs_weight_handler: 0..=IPVS_WEIGHT_LIMIT; xvs caps at 65535 (ipvsadm's range).
            "weight" => {
                rs.weight = Some(parse_unsigned(c, 1, 0, 65535, "Real server weight")? as u32)
            }
            "lvs_method" => rs.method = Some(parse_method(c)?),
            "uthreshold" => {
                rs.u_threshold =
                    parse_unsigned(c, 1, 0, u64::from(u32::MAX), "real_server uthreshold")? as u32
            }
            "lthreshold" => {
                rs.l_threshold =
                    parse_unsigned(c, 1, 0, u64::from(u32::MAX), "real_server lthreshold")? as u32
            }
            "inhibit_on_failure" => rs.inhibit = Some(parse_bool_opt(c, "inhibit_on_failure")?),
            "alpha" => rs.alpha = Some(parse_bool_opt(c, "alpha")?),
            "notify_up" | "notify_down" => {
                let slot = if kw == "notify_up" {
                    &mut rs.notify_up
                } else {
                    &mut rs.notify_down
                };
                if slot.is_some() {
                    return Err(err(c.loc(), format!("{kw} script already specified")));
                }
                *slot = Some(parse_script(c)?);
            }
            "virtualhost" => {
                rs.virtualhost = Some(
                    c.args()
                        .first()
                        .cloned()
                        .ok_or_else(|| err(c.loc(), "real server virtualhost missing"))?,
                )
            }
            "smtp_alert" => {
                parse_bool_opt(c, "real_server smtp_alert")?;
                ignored_kw(c, warnings, "xvs sends no e-mail alerts");
            }
            "snmp_name" => ignored_kw(c, warnings, "xvs has no SNMP agent"),
            _ => {
                unknown(c, warnings);
                continue;
            }
        }
        no_block(c)?;
    }
    Ok(rs)
}

fn new_checker(n: &Node, kind: RawKind) -> RawChecker {
    RawChecker {
        loc: n.loc().clone(),
        kind,
        connect_ip: None,
        connect_port: None,
        bindto: None,
        bind_port: None,
        alpha: None,
        timing: RawTiming::default(),
    }
}

/// A checker block, or `None` if `n` is not a checker keyword. SMTP_CHECK's deprecated
/// `host {}` blocks make one checker each, as keepalived does.
fn parse_checker(
    n: &Node,
    track_files: &[TrackFile],
    warnings: &mut Vec<ConfError>,
) -> Result<Option<Vec<RawChecker>>, ConfError> {
    let kind = match n.kw() {
        "TCP_CHECK" => RawKind::Tcp,
        "HTTP_GET" | "SSL_GET" => RawKind::Http {
            tls: n.kw() == "SSL_GET",
            urls: Vec::new(),
            virtualhost: None,
            // alloc_http_get: HTTP_PROTOCOL_1_0.
            http_protocol: "1.0".to_string(),
            fast_recovery: false,
            enable_sni: false,
        },
        "MISC_CHECK" => RawKind::Misc {
            script: None,
            timeout: None,
            dynamic: false,
            user: None,
        },
        "UDP_CHECK" => RawKind::Udp {
            payload: Vec::new(),
            require_reply: None,
            min_reply_length: None,
            max_reply_length: None,
        },
        "DNS_CHECK" => RawKind::Dns {
            qtype: None,
            name: None,
        },
        "PING_CHECK" => RawKind::Ping,
        "SMTP_CHECK" => RawKind::Smtp { helo_name: None },
        "FILE_CHECK" => RawKind::File {
            track: None,
            weight: None,
        },
        "BFD_CHECK" => return Err(err(n.loc(), "BFD_CHECK is not supported by xvs")),
        _ => return Ok(None),
    };
    let mut ch = new_checker(n, kind);
    let mut hosts: Vec<RawChecker> = Vec::new();
    // Which keyword sets this checker type takes (install_checker_common_keywords(bool)):
    // MISC_CHECK has the timing ones only, FILE_CHECK none.
    let (conn_kws, timing_kws) = match ch.kind {
        RawKind::Misc { .. } => (false, true),
        RawKind::File { .. } => (false, false),
        _ => (true, true),
    };
    for c in need_block(n)? {
        let kw = c.kw();
        if timing_kws && kw != "connect_timeout" && timing_kw(c, &mut ch.timing, 0, "", warnings)? {
            continue;
        }
        if conn_kws && conn_kw(c, &mut ch, warnings)? {
            continue;
        }
        if timing_kws && matches!(kw, "alpha" | "log_all_failures") {
            no_block(c)?;
            let v = parse_bool_opt(c, kw)?;
            if kw == "alpha" {
                ch.alpha = Some(v);
            } else {
                ignored_kw(c, warnings, "xvs logs every check failure at debug level");
            }
            continue;
        }
        if kw == "host" && matches!(ch.kind, RawKind::Smtp { .. }) {
            // check_smtp.c smtp_host_handler: each host is a checker of its own whose
            // connection defaults to the real server; the other keywords are shared.
            let mut h = new_checker(c, RawKind::Tcp);
            for hc in need_block(c)? {
                if hc.kw() != "connect_timeout" && timing_kw(hc, &mut ch.timing, 0, "", warnings)? {
                    continue;
                }
                if !conn_kw(hc, &mut h, warnings)? {
                    if matches!(hc.kw(), "alpha" | "log_all_failures") {
                        let v = parse_bool_opt(hc, hc.kw())?;
                        if hc.kw() == "alpha" {
                            ch.alpha = Some(v);
                        }
                    } else {
                        unknown(hc, warnings);
                    }
                }
            }
            hosts.push(h);
            continue;
        }
        if kw == "nb_get_retry" && matches!(ch.kind, RawKind::Http { .. }) {
            // Only HTTP_GET and SSL_GET know nb_get_retry (check_http.c
            // http_get_retry_handler); in other checkers it is an unknown keyword, and
            // keepalived then keeps the default retry.
            no_block(c)?;
            warnings.push(err(
                c.loc(),
                "nb_get_retry is deprecated - please use 'retry'",
            ));
            ch.timing.retry =
                Some(
                    parse_unsigned(c, 1, 0, u64::from(u32::MAX), "Invalid nb_get_retry value")?
                        as u32,
                );
            continue;
        }
        if kind_kw(c, &mut ch.kind, track_files, warnings)? {
            continue;
        }
        unknown(c, warnings);
    }
    // End handlers: what makes keepalived drop the checker is an error here.
    match &ch.kind {
        RawKind::Http { urls, .. } if urls.is_empty() => {
            return Err(err(n.loc(), "HTTP/SSL_GET checker has no urls specified"))
        }
        RawKind::Misc { script: None, .. } => {
            return Err(err(
                n.loc(),
                "No script path has been specified for MISC_CHECKER",
            ))
        }
        RawKind::File { track: None, .. } => {
            return Err(err(n.loc(), "FILE_CHECK has no track_file specified"))
        }
        RawKind::Udp {
            min_reply_length: Some(min),
            max_reply_length,
            ..
        } if *min > max_reply_length.unwrap_or(255) => {
            warnings.push(err(
                n.loc(),
                format!(
                    "UDP_CHECK min_reply length {min} > max_reply_length {} - will always fail",
                    max_reply_length.unwrap_or(255)
                ),
            ));
        }
        _ => {}
    }
    if hosts.is_empty() {
        return Ok(Some(vec![ch]));
    }
    // smtp_check_end_handler: the checker's own connection is used as well only if any of
    // its connection options was set; the hosts share the other settings.
    let own = ch.connect_ip.is_some()
        || ch.connect_port.is_some()
        || ch.bindto.is_some()
        || ch.bind_port.is_some()
        || ch.timing.connect_timeout.is_some();
    warnings.push(err(
        n.loc(),
        "The SMTP_CHECK host block is deprecated. Please define additional checkers.",
    ));
    let mut out = Vec::new();
    if own {
        out.push(ch.clone());
    }
    for h in hosts {
        let mut c = ch.clone();
        c.loc = h.loc;
        c.connect_ip = h.connect_ip;
        c.connect_port = h.connect_port;
        c.bindto = h.bindto;
        c.bind_port = h.bind_port;
        if h.timing.connect_timeout.is_some() {
            c.timing.connect_timeout = h.timing.connect_timeout;
        }
        out.push(c);
    }
    Ok(Some(out))
}

/// connect_ip, connect_port, bindto, bind_port, bind_if, connect_timeout, fwmark.
fn conn_kw(
    n: &Node,
    ch: &mut RawChecker,
    warnings: &mut Vec<ConfError>,
) -> Result<bool, ConfError> {
    let kw = n.kw();
    match kw {
        "connect_ip" => ch.connect_ip = Some(parse_ip(n, arg(n, 1)?, "connect_ip")?),
        "connect_port" => {
            ch.connect_port =
                Some(parse_unsigned(n, 1, 1, 65535, "Invalid checker connect_port")? as u16)
        }
        "bindto" => ch.bindto = Some(parse_ip(n, arg(n, 1)?, "bindto")?),
        "bind_port" => {
            ch.bind_port = Some(parse_unsigned(n, 1, 1, 65535, "Invalid checker bind_port")? as u16)
        }
        "connect_timeout" => {
            ch.timing.connect_timeout = Some(parse_timer(
                n,
                1,
                1,
                u64::from(u32::MAX),
                "connect_timeout",
                warnings,
            )?)
        }
        "bind_if" => return Err(err(n.loc(), "bind_if is not supported by xvs checkers")),
        "fwmark" => {
            return Err(err(
                n.loc(),
                "fwmark (SO_MARK on check connections) is not supported by xvs",
            ))
        }
        _ => return Ok(false),
    }
    no_block(n)?;
    Ok(true)
}

/// The keywords of one checker type; `true` if `n` was one.
fn kind_kw(
    n: &Node,
    kind: &mut RawKind,
    track_files: &[TrackFile],
    warnings: &mut Vec<ConfError>,
) -> Result<bool, ConfError> {
    let kw = n.kw();
    let known = kind_kw_inner(n, kind, track_files, warnings)?;
    if known && kw != "url" {
        no_block(n)?;
    }
    Ok(known)
}

fn kind_kw_inner(
    n: &Node,
    kind: &mut RawKind,
    track_files: &[TrackFile],
    warnings: &mut Vec<ConfError>,
) -> Result<bool, ConfError> {
    let kw = n.kw();
    match kind {
        RawKind::Tcp | RawKind::Ping => return Ok(false),
        RawKind::Http {
            urls,
            virtualhost,
            http_protocol,
            fast_recovery,
            enable_sni,
            ..
        } => match kw {
            "virtualhost" => {
                *virtualhost = Some(
                    n.args()
                        .first()
                        .cloned()
                        .ok_or_else(|| err(n.loc(), "HTTP_GET virtualhost name missing"))?,
                )
            }
            "http_protocol" => {
                *http_protocol = match arg(n, 1)? {
                    "1.0" => "1.0",
                    "1.1" => "1.1",
                    "1.0C" | "1.0c" => "1.0C",
                    v => return Err(err(n.loc(), format!("Invalid http_protocol version {v}"))),
                }
                .to_string()
            }
            "fast_recovery" => *fast_recovery = parse_bool_opt(n, "fast_recovery")?,
            "enable_sni" => *enable_sni = parse_bool_opt(n, "enable_sni")?,
            "url" => urls.push(parse_url(n, warnings)?),
            _ => return Ok(false),
        },
        RawKind::Misc {
            script,
            timeout,
            dynamic,
            user,
        } => match kw {
            "misc_path" => {
                // misc_path_handler: the line re-split with quotes and escapes; word 1 is
                // the command line (extra words are ignored by keepalived).
                let words = split_quoted_escaped(&n.line.raw, n.loc())?;
                let cmd = words.get(1).ok_or_else(|| {
                    err(n.loc(), "Configuration line starting `misc_path` is missing a parameter after keyword `misc_path` at word position 2")
                })?;
                if words.len() > 2 {
                    warnings.push(err(
                        n.loc(),
                        format!("misc_path: words after the command line are ignored: '{}' (quote the command line)", words[2..].join(" ")),
                    ));
                }
                let argv = split_quoted_escaped(cmd, n.loc())?;
                if argv.is_empty() {
                    return Err(err(n.loc(), "misc_path is empty"));
                }
                *script = Some(Script {
                    argv,
                    user: None,
                    group: None,
                    loc: n.loc().clone(),
                });
            }
            // misc_timeout: whole seconds, 0..=UINT_MAX/TIMER_HZ; 0 = the default.
            "misc_timeout" => {
                *timeout = Some(parse_unsigned(
                    n,
                    1,
                    0,
                    u64::from(u32::MAX) / 1_000_000,
                    "Invalid misc_timeout value",
                )? as u32)
            }
            "misc_dynamic" => *dynamic = true,
            "user" => {
                let u = n
                    .args()
                    .first()
                    .cloned()
                    .ok_or_else(|| err(n.loc(), "No user specified for misc checker script"))?;
                *user = Some((u, n.args().get(1).cloned()));
            }
            _ => return Ok(false),
        },
        RawKind::Udp {
            payload,
            require_reply,
            min_reply_length,
            max_reply_length,
        } => match kw {
            "payload" => {
                if n.args().is_empty() {
                    return Err(err(n.loc(), "UDP_CHECK payload requires a payload"));
                }
                *payload = read_hex(n, &n.args().join(" "), false)
                    .ok_or_else(|| err(n.loc(), "Invalid hex string for UDP_CHECK payload"))?;
            }
            "require_reply" => {
                *require_reply = Some(if n.args().is_empty() {
                    Vec::new()
                } else {
                    read_hex(n, &n.args().join(" "), true)
                        .ok_or_else(|| err(n.loc(), "Invalid hex string for UDP_CHECK reply"))?
                })
            }
            "min_reply_length" => {
                *min_reply_length =
                    Some(parse_unsigned(n, 1, 0, 65535, "UDP_CHECK min length")? as usize)
            }
            "max_reply_length" => {
                *max_reply_length =
                    Some(parse_unsigned(n, 1, 0, 65535, "UDP_CHECK max length")? as usize)
            }
            _ => return Ok(false),
        },
        RawKind::Dns { qtype, name } => match kw {
            "type" => {
                let t = arg(n, 1)?;
                // DNS_TYPE[] in check_dns.c, matched case-insensitively.
                const TYPES: &[&str] = &[
                    "A", "NS", "CNAME", "SOA", "MX", "TXT", "AAAA", "RRSIG", "DNSKEY",
                ];
                let up = t.to_ascii_uppercase();
                if !TYPES.contains(&up.as_str()) {
                    return Err(err(n.loc(), format!("Unknown DNS check type {t}")));
                }
                *qtype = Some(up);
            }
            "name" => {
                if name.is_some() {
                    return Err(err(n.loc(), "DNS_CHECK name already specified"));
                }
                let v = arg(n, 1)?;
                // dns_name_handler: no empty label.
                if (v.starts_with('.') && v.len() > 1) || v.contains("..") {
                    return Err(err(
                        n.loc(),
                        format!("DNS_CHECK name '{v}' has empty label"),
                    ));
                }
                *name = Some(v.to_string());
            }
            _ => return Ok(false),
        },
        RawKind::Smtp { helo_name } => match kw {
            "helo_name" => {
                *helo_name = Some(
                    n.args()
                        .first()
                        .cloned()
                        .ok_or_else(|| err(n.loc(), "SMTP_CHECK helo name missing"))?,
                )
            }
            _ => return Ok(false),
        },
        RawKind::File { track, weight } => match kw {
            "track_file" => {
                let t = arg(n, 1)?;
                // track_file_handler (check_file.c): looked up when read, so the track_file
                // block must come first.
                let f = track_files
                    .iter()
                    .find(|f| f.name == t)
                    .ok_or_else(|| err(n.loc(), format!("track_file {t} not found")))?;
                *track = Some(f.clone());
            }
            "weight" => {
                // track_file_weight_handler: ±IPVS_WEIGHT_LIMIT, then reverse|noreverse.
                let w = parse_int(
                    n,
                    1,
                    -i64::from(i32::MAX),
                    i64::from(i32::MAX),
                    "weight for track file",
                )? as i32;
                let rev = match n.args().get(1).map(String::as_str) {
                    None | Some("noreverse") => false,
                    Some("reverse") => true,
                    Some(o) => {
                        return Err(err(
                            n.loc(),
                            format!("unknown track file weight option {o}"),
                        ))
                    }
                };
                *weight = Some((w, rev));
            }
            _ => return Ok(false),
        },
    }
    Ok(true)
}

fn parse_url(n: &Node, warnings: &mut Vec<ConfError>) -> Result<RawUrl, ConfError> {
    let mut u = RawUrl {
        loc: n.loc().clone(),
        path: None,
        digest: None,
        status_codes: Vec::new(),
        virtualhost: None,
        regex: None,
        regex_no_match: false,
    };
    for c in need_block(n)? {
        if c.block.is_some() {
            unknown(c, warnings);
            continue;
        }
        match c.kw() {
            "path" => u.path = Some(arg(c, 1)?.to_string()),
            "digest" => {
                let d = arg(c, 1)?;
                if u.digest.is_some() {
                    return Err(err(c.loc(), format!("Digest '{d}' is a duplicate")));
                }
                if d.len() != 32 {
                    return Err(err(
                        c.loc(),
                        format!(
                            "digest '{d}' character length should be 32 rather than {}",
                            d.len()
                        ),
                    ));
                }
                if !d.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(err(
                        c.loc(),
                        format!("Unable to interpret hex digit in '{d}'"),
                    ));
                }
                u.digest = Some(d.to_ascii_lowercase());
            }
            "status_code" => {
                // status_code_handler: codes and ranges in 100..=599.
                for s in c.args() {
                    let parse = |x: &str| x.parse::<u16>().ok().filter(|v| (100..=599).contains(v));
                    let r = match s.split_once('-') {
                        Some((a, b)) => parse(a).zip(parse(b)),
                        None => parse(s).map(|v| (v, v)),
                    };
                    match r {
                        Some((a, b)) if a <= b => u.status_codes.push(a..=b),
                        _ => {
                            return Err(err(c.loc(), format!("Invalid HTTP_GET status code '{s}'")))
                        }
                    }
                }
            }
            "virtualhost" => {
                u.virtualhost = Some(
                    c.args()
                        .first()
                        .cloned()
                        .ok_or_else(|| err(c.loc(), "Missing HTTP_GET virtualhost name"))?,
                )
            }
            "regex" => {
                // regex_handler: the line re-split with quotes and escapes, exactly 2 words.
                let w = split_quoted_escaped(&c.line.raw, c.loc())?;
                if w.len() != 2 {
                    return Err(err(c.loc(), "regex missing or too many fields"));
                }
                u.regex = Some(w[1].clone());
            }
            "regex_no_match" => u.regex_no_match = true,
            "regex_options" | "regex_min_offset" | "regex_max_offset" => {
                return Err(err(c.loc(), format!("{} is not supported by xvs", c.kw())))
            }
            "regex_stack" => ignored_kw(c, warnings, "PCRE2 JIT stack tuning"),
            _ => unknown(c, warnings),
        }
    }
    if u.path.is_none() {
        return Err(err(n.loc(), "HTTP/SSL_GET checker url has no path"));
    }
    if u.regex.is_none() && u.regex_no_match {
        // url_check: "regex parameters specified without regex" and they are dropped.
        warnings.push(err(n.loc(), "regex parameters specified without regex"));
        u.regex_no_match = false;
    }
    Ok(u)
}

/// read_hex_str(): hex digits in pairs, blanks between bytes allowed, a lone digit before a
/// blank or the end is one byte. `X` wildcards (allowed in require_reply) are refused:
/// the model has no mask for them.
fn read_hex(n: &Node, s: &str, reply: bool) -> Option<Vec<u8>> {
    let _ = n;
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let val = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    while i < b.len() {
        if b[i] == b' ' || b[i] == b'\t' {
            i += 1;
            continue;
        }
        if reply && (b[i] == b'x' || b[i] == b'X') {
            return None;
        }
        let hi = val(b[i])?;
        i += 1;
        if i < b.len() && b[i] != b' ' && b[i] != b'\t' {
            if reply && (b[i] == b'x' || b[i] == b'X') {
                return None;
            }
            let lo = val(b[i])?;
            i += 1;
            out.push((hi << 4) | lo);
        } else {
            out.push(hi);
        }
    }
    (!out.is_empty()).then_some(out)
}

fn parse_group(n: &Node) -> Result<RawGroup, ConfError> {
    let name = arg(n, 1)?.to_string();
    let mut g = RawGroup {
        loc: n.loc().clone(),
        name,
        entries: Vec::new(),
    };
    for c in need_block(n)? {
        no_block(c)?;
        let a = c.kw();
        if a == "fwmark" {
            return Err(err(
                c.loc(),
                format!(
                    "({}): fwmark group members are not supported by xvs",
                    g.name
                ),
            ));
        }
        if a.contains(':') {
            return Err(err(
                c.loc(),
                format!("virtual server group address {a}: IPv6 is not supported by xvs"),
            ));
        }
        let port = parse_port_opt(c, 1, "virtual server group port")?;
        let bad = || {
            err(
                c.loc(),
                format!(
                    "Invalid virtual server group IP address {a}{}",
                    port.map(|p| format!("/port/{p}")).unwrap_or_default()
                ),
            )
        };
        let (first, last) = if let Some((ip, mask)) = a.split_once('/') {
            let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
            let m: u32 = mask
                .parse()
                .ok()
                .filter(|m| (1..=32).contains(m))
                .ok_or_else(|| err(c.loc(), format!("Invalid netmask - {a}")))?;
            let host = if m == 32 { 0 } else { u32::MAX >> m };
            let v = u32::from(ip);
            if v & host != 0 {
                return Err(err(c.loc(), format!("Address mask bits not empty - {a}")));
            }
            (ip, Ipv4Addr::from(v | host))
        } else if let Some((ip, end)) = a.split_once('-') {
            let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
            if end.contains('.') {
                // A.B.C.D-E.F.G.H
                let e: Ipv4Addr = end
                    .parse()
                    .map_err(|_| err(c.loc(), format!("Invalid range end {a}")))?;
                if u32::from(ip) > u32::from(e) {
                    return Err(err(
                        c.loc(),
                        format!("Address range end is less than address range start - {a}"),
                    ));
                }
                (ip, e)
            } else {
                // A.B.C.D-E: the last octet runs D..=E (inet_stor, alloc_vsg_entry).
                let e: u32 = end.parse().map_err(|_| {
                    err(
                        c.loc(),
                        format!("Virtual server group range '{a}' has extra characters at end"),
                    )
                })?;
                if e > 255 {
                    return Err(err(
                        c.loc(),
                        format!("Virtual server group range '{a}' end '{end}' too large"),
                    ));
                }
                let v = u32::from(ip);
                if v & 0xff >= e {
                    return Err(err(
                        c.loc(),
                        format!("Address range end is not greater than address range start - {a}"),
                    ));
                }
                (ip, Ipv4Addr::from((v & !0xff) | e))
            }
        } else {
            let ip: Ipv4Addr = a.parse().map_err(|_| bad())?;
            (ip, ip)
        };
        if c.args().len() > 1 {
            return Err(err(
                c.loc(),
                format!("virtual server group entry '{}': extra words", c.line.raw),
            ));
        }
        g.entries.push(GroupEntry {
            loc: c.loc().clone(),
            first,
            last,
            port,
        });
    }
    Ok(g)
}

fn parse_track_file(
    n: &Node,
    warnings: &mut Vec<ConfError>,
) -> Result<Option<TrackFile>, ConfError> {
    let name = arg(n, 1)?.to_string();
    let mut tf = TrackFile {
        loc: n.loc().clone(),
        name,
        path: None,
        weight: 1,
        reverse: false,
        init_value: None,
        init_overwrite: false,
    };
    let mut weight_set = false;
    for c in need_block(n)? {
        if c.block.is_some() {
            unknown(c, warnings);
            continue;
        }
        match c.kw() {
            "file" => {
                if tf.path.is_some() {
                    return Err(err(
                        c.loc(),
                        format!("File already set for track file {}", tf.name),
                    ));
                }
                tf.path = Some(arg(c, 1)?.to_string());
            }
            "weight" => {
                if weight_set {
                    return Err(err(
                        c.loc(),
                        format!("Weight already set for track file {}", tf.name),
                    ));
                }
                weight_set = true;
                tf.weight = parse_int(
                    c,
                    1,
                    -254,
                    254,
                    &format!("Weight for track_file {}", tf.name),
                )? as i32;
                match c.args().get(1).map(String::as_str) {
                    None => {}
                    Some("reverse") => tf.reverse = true,
                    Some(o) => {
                        return Err(err(
                            c.loc(),
                            format!("track_file {} unknown weight option {o}", tf.name),
                        ))
                    }
                }
            }
            "init_file" => {
                tf.init_value = Some(0);
                for (i, w) in c.args().iter().enumerate() {
                    if w.starts_with(|ch: char| ch.is_ascii_digit() || ch == '-') {
                        let v = parse_int(
                            c,
                            i + 1,
                            i64::from(i32::MIN),
                            i64::from(i32::MAX),
                            &format!("Track file {} init value", tf.name),
                        )?;
                        if !(-254..=254).contains(&v) {
                            warnings.push(err(
                                c.loc(),
                                format!("Track file {} init value {v} is outside sensible range [-254, 254]", tf.name),
                            ));
                        }
                        tf.init_value = Some(v as i32);
                    } else if w == "overwrite" {
                        tf.init_overwrite = true;
                    } else {
                        return Err(err(c.loc(), format!("Unknown track file init option {w}")));
                    }
                }
            }
            _ => unknown(c, warnings),
        }
    }
    if tf.path.is_none() {
        // track_file_end_handler: "No file set for track_file %s - ignoring".
        warnings.push(err(
            n.loc(),
            format!("No file set for track_file {} - ignoring", tf.name),
        ));
        return Ok(None);
    }
    Ok(Some(tf))
}
