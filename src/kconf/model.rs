//! What a keepalived.conf says about LVS, resolved: keepalived's defaults applied, values
//! inherited (virtual server → real server → checker), aliases folded, groups expanded.
//!
//! The parser (`kconf::parse`) produces these; the health engine (`crate::health`) runs them
//! and the daemon turns the live result into services and real servers. Every item keeps
//! where it came from (`Loc`) so that later errors can say `FILE:LINE: message`.

use crate::model::{Forward, Protocol, ServiceKey};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

/// Where an item was written.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Loc {
    pub file: PathBuf,
    pub line: u32,
}

impl std::fmt::Display for Loc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// A load error: `FILE:LINE: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfError {
    pub loc: Loc,
    pub msg: String,
}

impl std::fmt::Display for ConfError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.loc, self.msg)
    }
}

impl std::error::Error for ConfError {}

/// The LVS part of a keepalived.conf.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct KConfig {
    pub virtual_servers: Vec<VirtualServer>,
    /// Warnings keepalived would log (unknown keyword, missing `protocol`, ...), in order.
    pub warnings: Vec<ConfError>,
    /// Top-level blocks accepted and ignored (`global_defs`, `vrrp_instance`, ...): the
    /// keyword and where it was, logged once each by the daemon.
    pub ignored: Vec<(String, Loc)>,
}

/// A script as keepalived runs it (`notify_up`, `quorum_down`, `misc_path`): the words of
/// the command line after keepalived's quoting rules; `argv[0]` is the program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    pub argv: Vec<String>,
    /// `user USER [GROUP]` given with the script, if any (`notify_up SCRIPT USER [GROUP]`
    /// on the same line; `user USER [GROUP]` in MISC_CHECK). Unset: keepalived's default
    /// script user (`keepalived_script` if it exists, else root; lib/notify.c).
    pub user: Option<String>,
    /// The GROUP of `user USER GROUP` (unset: USER's primary group).
    pub group: Option<String>,
    pub loc: Loc,
}

/// What xvs does with the connections of a real server that its checks declare dead
/// (removed, or at weight 0 with `inhibit_on_failure`). An xvs extension
/// (`xvs_on_dead` in a `virtual_server`, `--on-dead` in xvsadm).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum OnDead {
    /// IPVS: a removed server's packets are dropped until its entries time out; an
    /// inhibited (weight 0) server keeps its connections.
    #[default]
    Ipvs,
    /// IPVS with `expire_nodest_conn=1`: the entry is expired at its next packet (which is
    /// dropped), so the client's next attempt is scheduled afresh.
    Expire,
    /// Beyond IPVS: UDP datagrams move to a live server at once (the entry is rescheduled);
    /// TCP clients get a RST for their next segment instead of retransmitting into a dead
    /// host.
    Reassign,
}

/// One `virtual_server` block (or `virtual_server group NAME`).
#[derive(Debug, Clone, PartialEq)]
pub struct VirtualServer {
    pub loc: Loc,
    /// `IP PORT`, or every member of the group (protocol applied). IPVS services created.
    pub services: Vec<ServiceKey>,
    /// The group name for `virtual_server group NAME`.
    pub group: Option<String>,
    pub protocol: Protocol,
    /// `lvs_sched` / `lb_algo`; default wlc.
    pub scheduler: String,
    /// `lvs_flags`-style scheduler flags (`sh-port`, `sh-fallback`, `mh-port`, ...).
    pub sched_flags: Vec<String>,
    /// `lvs_method` / `lb_kind`; default NAT. Real servers inherit it.
    pub method: Forward,
    /// `persistence_timeout` in seconds (bare keyword = 360); `None` = not persistent.
    /// keepalived treats 0 as "not persistent".
    pub persistence: Option<u32>,
    /// `persistence_granularity` netmask.
    pub granularity: Option<Ipv4Addr>,
    /// `ha_suspend`: checks only run while the VIP is configured on this host.
    pub ha_suspend: bool,
    /// `virtualhost` for HTTP_GET/SSL_GET of this service's real servers.
    pub virtualhost: Option<String>,
    /// `alpha`: checkers start failed (server added after its first success).
    pub alpha: bool,
    /// `omega`: run `quorum_down` (and remove servers) when the service is removed.
    pub omega: bool,
    /// `quorum` (default 1) and `hysteresis` (default 0).
    pub quorum: u32,
    pub hysteresis: u32,
    pub quorum_up: Option<Script>,
    pub quorum_down: Option<Script>,
    pub sorry_server: Option<SorryServer>,
    /// `sorry_server_inhibit`: the sorry server is set to weight 0 instead of removed.
    pub sorry_server_inhibit: bool,
    /// xvs extension, see `OnDead`.
    pub on_dead: OnDead,
    pub real_servers: Vec<RealServer>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SorryServer {
    pub loc: Loc,
    pub addr: Ipv4Addr,
    /// `None`: the service port (DR/TUN ignore it anyway).
    pub port: Option<u16>,
    /// `sorry_server_lvs_method`; default: the virtual server's method.
    pub method: Forward,
}

/// One `real_server IP PORT` block.
#[derive(Debug, Clone, PartialEq)]
pub struct RealServer {
    pub loc: Loc,
    pub addr: Ipv4Addr,
    /// `None` when omitted (persistent services, DR/TUN).
    pub port: Option<u16>,
    /// Default 1; 0 allowed.
    pub weight: u32,
    pub method: Forward,
    /// `uthreshold` / `lthreshold` (ipvsadm -x / -y); 0 = none.
    pub u_threshold: u32,
    pub l_threshold: u32,
    /// `inhibit_on_failure` (real server or inherited from the virtual server).
    pub inhibit_on_failure: bool,
    /// `alpha` (inherited from the virtual server unless set here).
    pub alpha: bool,
    pub notify_up: Option<Script>,
    pub notify_down: Option<Script>,
    pub checkers: Vec<Checker>,
}

/// One checker block of a real server, its parameters fully resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Checker {
    pub loc: Loc,
    pub kind: CheckKind,
    /// Where to connect: `connect_ip` (default the real server's address) and
    /// `connect_port` (default the real server's port, or the service's).
    pub connect_ip: Ipv4Addr,
    pub connect_port: u16,
    /// `bindto` / `bind_port`: the local address and port the check uses.
    pub bindto: Option<Ipv4Addr>,
    pub bind_port: Option<u16>,
    /// `alpha` of the checker, else of the real server, else of the virtual server
    /// (check_data.c validate_check_config): this checker starts failed.
    pub alpha: bool,
    pub timing: Timing,
}

/// Check timing after inheritance (virtual server → real server → checker).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// `delay_loop`, default 60 s: the interval between checks of a healthy server.
    pub delay_loop: Duration,
    /// `connect_timeout`, default 5 s: the whole check's deadline.
    pub connect_timeout: Duration,
    /// `retry` / `nb_get_retry`: failures beyond the first before the server goes down
    /// (down after `retry + 1` consecutive failures). Default 1; DNS 3; MISC 0.
    pub retry: u32,
    /// `delay_before_retry`: the interval after a failure. Default 3 s for HTTP/SSL,
    /// delay_loop for DNS, 1 s otherwise.
    pub delay_before_retry: Duration,
    /// `warmup`: the first check waits a random time up to this. Default: the checker's
    /// delay_loop (check_data.c validate_check_config); `warmup 0` disables it.
    pub warmup: Duration,
}

/// The checker types and their own keywords.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    Tcp,
    /// HTTP_GET (`tls` false) and SSL_GET (`tls` true).
    Http(HttpCheck),
    Misc(MiscCheck),
    Udp(UdpCheck),
    Dns(DnsCheck),
    Ping,
    Smtp(SmtpCheck),
    File(FileCheck),
}

#[derive(Debug, Clone, PartialEq)]
pub struct HttpCheck {
    pub tls: bool,
    pub urls: Vec<Url>,
    /// `virtualhost` of the checker, else of the real server, else of the virtual server:
    /// the Host header (check_http.c http_request_thread). A url's own overrides it.
    pub virtualhost: Option<String>,
    /// `http_protocol` (default 1.0; `1.0C` = 1.0 with Connection: close, `1.1`).
    pub http_protocol: String,
    /// `fast_recovery`: while the checker has not run yet, or is down with no url failing
    /// (recovering), the urls are checked back to back instead of delay_loop apart
    /// (check_http.c http_handle_response; keepalived.conf(5)). Default off.
    pub fast_recovery: bool,
    /// `enable_sni` (SSL_GET; accepted by HTTP_GET too), default off. keepalived sends as
    /// SNI the url's virtualhost, else the checker's, else the virtual server's (not the
    /// real server's: check_ssl.c ssl_connect).
    pub enable_sni: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Url {
    pub path: String,
    /// `digest`: genhash-compatible MD5 of the body, lower-case hex.
    pub digest: Option<String>,
    /// `status_code`: accepted codes and ranges (100..=599); none given = `[200..=299]`,
    /// filled in by the parser (check_http.c url_check).
    pub status_codes: Vec<std::ops::RangeInclusive<u16>>,
    /// `virtualhost` of this url, overriding the checker's.
    pub virtualhost: Option<String>,
    /// `regex` the body must match (and `regex_no_match` inverts it).
    pub regex: Option<String>,
    pub regex_no_match: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MiscCheck {
    pub script: Script,
    /// `misc_timeout` (whole seconds), default the *virtual server's* delay_loop
    /// (check_misc.c misc_check_thread); then SIGTERM, then SIGKILL 2 s later.
    pub timeout: Duration,
    /// `misc_dynamic`: exit 0 up, 1 down, 2..=255 up with weight = code - 2.
    pub dynamic: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UdpCheck {
    /// `payload` as hex bytes. Not given: keepalived's 32 bytes
    /// `keepalived check - keepalived ch` (layer4.c udp_bind_connect/set_buf), filled in
    /// by the parser.
    pub payload: Vec<u8>,
    /// `require_reply [HEX]`: a reply must come (and start with these bytes when given);
    /// without it, only an ICMP port unreachable fails the check.
    pub require_reply: Option<Vec<u8>>,
    /// `min_reply_length` (default 0) / `max_reply_length` (default 255, keepalived's
    /// UINT8_MAX in check_udp.c udp_check_handler; always `Some` after resolution). Checked,
    /// with the bytes, only when `require_reply` has bytes (check_udp.c check_udp_reply),
    /// and only the first min(reply length, pattern length) bytes are compared.
    pub min_reply_length: usize,
    pub max_reply_length: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DnsCheck {
    /// `type`, default SOA.
    pub qtype: String,
    /// `name`, default "." (keepalived's DNS_DEFAULT_NAME is "", the same root name).
    pub name: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SmtpCheck {
    /// `helo_name`; default `smtpchecker.keepalived.org` (SMTP_DEFAULT_HELO,
    /// check_smtp.h), always `Some` after resolution.
    pub helo_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FileCheck {
    /// The `track_file NAME { file PATH ... }` this checker names (`track_file NAME`).
    pub name: String,
    pub path: PathBuf,
    /// `weight W [reverse]` of the FILE_CHECK (default: the track_file's weight, 1).
    pub weight: i32,
    pub reverse: bool,
    /// `init_file [VALUE] [overwrite]` of the track_file: create the file with VALUE
    /// (default 0) if it is missing, or always with `overwrite` (not on reload); keepalived
    /// does this while loading (track_file.c track_file_end_handler). `None`: not given.
    pub init_value: Option<i32>,
    pub init_overwrite: bool,
}
