//! Daemon answers → the text ipvsadm 1.31 prints for `-L` (services, `--stats`, `--rate`,
//! `--thresholds`, `--persistent-conn`, `--timeout`, `-c`) and `-S`.
//!
//! Widths follow ipvsadm's printf formats exactly, including the trailing blanks that
//! left-aligned last columns (`%-10u`) leave at the end of real-server lines, because scripts
//! parse this output with `awk`, `cut` and fixed offsets.
//!
//! Differences from ipvsadm, both because xvsadm never does DNS lookups:
//! - addresses are always printed as numbers, with or without `-n`;
//! - without `-n`, ports are named from `/etc/services` (as ipvsadm does), with `-n` numeric.

use super::parse::{Columns, FormatOpts};
use super::services::PortNames;
use crate::model::{
    ConnStatus, DataPathStats, DestStatus, Forward, Protocol, Rates, ServiceKey, ServiceStatus,
    Status, Timeouts,
};
use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// The IPVS version ipvsadm prints in its banner; xvs implements its semantics.
pub const IPVS_VERSION: &str = "1.2.1";

/// `ADDR:PORT`, the port named unless numeric output was asked for.
fn addr_port(
    addr: Ipv4Addr,
    port: u16,
    proto: Protocol,
    fmt: FormatOpts,
    names: &PortNames,
) -> String {
    match names.name(proto, port).filter(|_| !fmt.numeric) {
        Some(name) => format!("{addr}:{name}"),
        None => format!("{addr}:{port}"),
    }
}

/// Truncates to at most `max` characters, as ipvsadm does by writing a NUL into its buffers.
fn truncate(mut s: String, max: usize) -> String {
    if let Some((i, _)) = s.char_indices().nth(max) {
        s.truncate(i);
    }
    s
}

/// `TCP  10.0.0.88:80` (ipvsadm's `"%-4s %s"`, cut at 33 characters for IPv4).
fn list_service_name(key: &ServiceKey, fmt: FormatOpts, names: &PortNames) -> String {
    let vname = addr_port(key.addr, key.port, key.proto, fmt, names);
    truncate(format!("{:<4} {vname}", key.proto.list_name()), 33)
}

/// `-t 10.0.0.88:80`.
fn rule_service_name(key: &ServiceKey, fmt: FormatOpts, names: &PortNames) -> String {
    let vname = addr_port(key.addr, key.port, key.proto, fmt, names);
    format!("{} {vname}", key.proto.flag())
}

/// Services in ipvsadm's order (protocol, address, port) unless `--nosort`.
fn sorted_services<'a>(
    services: impl Iterator<Item = &'a ServiceStatus>,
    fmt: FormatOpts,
) -> Vec<&'a ServiceStatus> {
    let mut v: Vec<_> = services.collect();
    if !fmt.nosort {
        // ipvsadm's comparator subtracts unsigned addresses into an int, which misorders
        // addresses more than 2^31 apart; we sort numerically instead.
        v.sort_by_key(|s| (s.key.proto.number(), u32::from(s.key.addr), s.key.port));
    }
    v
}

fn sorted_dests(svc: &ServiceStatus, fmt: FormatOpts) -> Vec<&DestStatus> {
    let mut v: Vec<_> = svc.dests.iter().collect();
    if !fmt.nosort {
        v.sort_by_key(|d| (u32::from(d.addr), d.port));
    }
    v
}

/// ipvsadm's `print_largenum`: right-aligned in 9 columns, scaled with K/M/G/T unless exact.
fn largenum(out: &mut String, n: u64, exact: bool) {
    // Writing into a String cannot fail.
    let _ = if exact {
        let width = n.to_string().len();
        let w = if width <= 8 { 9 } else { width + 1 };
        write!(out, "{n:>w$}")
    } else if n < 100_000_000 {
        write!(out, "{n:>9}")
    } else if n < 1_000_000_000 {
        write!(out, "{:>8}K", n / 1_000)
    } else if n < 100_000_000_000 {
        write!(out, "{:>8}M", n / 1_000_000)
    } else if n < 100_000_000_000_000 {
        write!(out, "{:>8}G", n / 1_000_000_000)
    } else {
        write!(out, "{:>8}T", n / 1_000_000_000_000)
    };
}

fn title(out: &mut String, columns: Columns) {
    let head = "Prot LocalAddress:Port";
    let line = match columns {
        Columns::Stats => format!(
            "{head:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port\n",
            "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes"
        ),
        Columns::Rate => format!(
            "{head:<33} {:>8} {:>8} {:>8} {:>8} {:>8}\n  -> RemoteAddress:Port\n",
            "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"
        ),
        Columns::Thresholds => format!(
            "{head:<33} {:<10} {:<10} {:<10} {:<10}\n  -> RemoteAddress:Port\n",
            "Uthreshold", "Lthreshold", "ActiveConn", "InActConn"
        ),
        Columns::PersistentConn => format!(
            "{head:<33} {:<9} {:<11} {:<10} {:<10}\n  -> RemoteAddress:Port\n",
            "Weight", "PersistConn", "ActiveConn", "InActConn"
        ),
        Columns::Default => "Prot LocalAddress:Port Scheduler Flags\n  \
             -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
            .to_string(),
    };
    out.push_str(&line);
}

fn is_default_mask(m: Option<Ipv4Addr>) -> bool {
    m.is_none_or(|m| m == Ipv4Addr::BROADCAST)
}

/// ipvsadm's `print_sched_flags`: the flags named for the service's scheduler only (`sh-*`
/// for sh, `mh-*` for mh, `flag-N` otherwise), comma-separated. A flag set without a name
/// for that scheduler (`-s sh -b flag-3`) prints nothing, though the caller still writes
/// ipvsadm's `" ("`...`")"` or `" -b "` around it.
fn sched_flags(o: &crate::model::ServiceOpts) -> String {
    let named: &[&str] = match o.scheduler.as_str() {
        "sh" => &["sh-fallback", "sh-port"],
        "mh" => &["mh-fallback", "mh-port"],
        _ => &["flag-1", "flag-2", "flag-3"],
    };
    let shown: Vec<&str> = named
        .iter()
        .copied()
        .filter(|n| o.sched_flags.iter().any(|f| f == n))
        .collect();
    shown.join(",")
}

/// The service line of the default, thresholds and persistent-conn listings:
/// `TCP  10.0.0.88:80 sh (sh-fallback) persistent 600 mask 255.255.255.0 ops`.
fn service_line(out: &mut String, svc: &ServiceStatus, fmt: FormatOpts, names: &PortNames) {
    let o = &svc.opts;
    out.push_str(&list_service_name(&svc.key, fmt, names));
    out.push(' ');
    out.push_str(&o.scheduler);
    if !o.sched_flags.is_empty() {
        let _ = write!(out, " ({})", sched_flags(o));
    }
    if let Some(timeout) = o.persistent {
        let _ = write!(out, " persistent {timeout}");
        if !is_default_mask(o.netmask) {
            if let Some(m) = o.netmask {
                let _ = write!(out, " mask {m}");
            }
        }
    }
    if o.one_packet {
        out.push_str(" ops");
    }
    out.push('\n');
}

fn dest_name(d: &DestStatus, proto: Protocol, fmt: FormatOpts, names: &PortNames) -> String {
    truncate(addr_port(d.addr, d.port, proto, fmt, names), 28)
}

fn counters(out: &mut String, c: &crate::model::Counters, exact: bool) {
    for n in [c.conns, c.inpkts, c.outpkts, c.inbytes, c.outbytes] {
        largenum(out, n, exact);
    }
}

/// A service's `--rate` columns: all five through `print_largenum`, as ipvsadm does.
fn service_rates(out: &mut String, r: &Rates, exact: bool) {
    for n in [r.cps, r.inpps, r.outpps, r.inbps, r.outbps] {
        largenum(out, n, exact);
    }
}

/// A real server's `--rate` columns. ipvsadm 1.31 prints CPS, InPPS and OutPPS with a plain
/// `" %8llu"` (never scaled, with or without `--exact`) and only the two byte rates through
/// `print_largenum`; we copy that asymmetry so the columns line up the same way.
fn dest_rates(out: &mut String, r: &Rates, exact: bool) {
    let _ = write!(out, " {:>8} {:>8} {:>8}", r.cps, r.inpps, r.outpps);
    largenum(out, r.inbps, exact);
    largenum(out, r.outbps, exact);
}

fn service_block(
    out: &mut String,
    svc: &ServiceStatus,
    columns: Columns,
    fmt: FormatOpts,
    names: &PortNames,
) {
    let proto = svc.key.proto;
    match columns {
        Columns::Stats => {
            let _ = write!(out, "{:<33}", list_service_name(&svc.key, fmt, names));
            counters(out, &svc.counters, fmt.exact);
            out.push('\n');
        }
        Columns::Rate => {
            let _ = write!(out, "{:<33}", list_service_name(&svc.key, fmt, names));
            service_rates(out, &svc.rates, fmt.exact);
            out.push('\n');
        }
        Columns::Default | Columns::Thresholds | Columns::PersistentConn => {
            service_line(out, svc, fmt, names)
        }
    }
    for d in sorted_dests(svc, fmt) {
        let name = dest_name(d, proto, fmt, names);
        let _ = match columns {
            Columns::Stats => {
                let _ = write!(out, "  -> {name:<28}");
                counters(out, &d.counters, fmt.exact);
                writeln!(out)
            }
            Columns::Rate => {
                let _ = write!(out, "  -> {name:<28}");
                dest_rates(out, &d.rates, fmt.exact);
                writeln!(out)
            }
            Columns::Thresholds => writeln!(
                out,
                "  -> {name:<28} {:<10} {:<10} {:<10} {:<10}",
                d.u_threshold, d.l_threshold, d.active_conns, d.inactive_conns
            ),
            Columns::PersistentConn => writeln!(
                out,
                "  -> {name:<28} {:<9} {:<11} {:<10} {:<10}",
                d.weight, d.persist_conns, d.active_conns, d.inactive_conns
            ),
            Columns::Default => writeln!(
                out,
                "  -> {name:<28} {:<7} {:<6} {:<10} {:<10}",
                d.forward.list_name(),
                d.weight,
                d.active_conns,
                d.inactive_conns
            ),
        };
    }
}

/// `-L` (and its column options): the banner (whole table only), column titles, then each
/// service and its real servers. With `service: Some(key)` only that service is printed and
/// there is no banner, as in ipvsadm; the caller reports "No such service" if it is missing.
pub fn format_services(
    status: &Status,
    service: Option<ServiceKey>,
    columns: Columns,
    fmt: FormatOpts,
    names: &PortNames,
) -> String {
    let mut out = String::new();
    if service.is_none() {
        let _ = writeln!(
            out,
            "IP Virtual Server version {IPVS_VERSION} (size={})",
            status.conn_table_size
        );
    }
    title(&mut out, columns);
    let selected = status
        .services
        .iter()
        .filter(|s| service.is_none_or(|k| s.key == k));
    for svc in sorted_services(selected, fmt) {
        service_block(&mut out, svc, columns, fmt, names);
    }
    out
}

/// `mm:ss` of ipvsadm's expire column. The kernel hands ipvsadm whole seconds, truncated
/// (`/proc/net/ip_vs_conn` prints `(expires - jiffies) / HZ`, or `msecs / 1000` in newer
/// kernels), and ipvsadm prints `"%02d:%02d"` of `secs / 60` and `secs % 60`: so we truncate
/// the milliseconds too (a fresh 900 s connection reads `14:59`, one with 999 ms left `00:00`)
/// and let the minutes grow past two digits (`1440:00` for a one-day template).
fn expire(ms: u64) -> String {
    let secs = ms / 1000;
    format!("{:02}:{:02}", secs / 60, secs % 60)
}

/// `-L -c`: ipvsadm 1.31's `list_conn`/`print_conn`, one line per entry in the daemon's order
/// (ipvsadm does not sort: it prints the kernel's hash-table order).
///
/// `"%-3s %-6s %-11s %-18s %-18s %s"`: protocol, expire `mm:ss`, state, then client, virtual
/// and real `ADDR:PORT` (port named unless `-n`, address always numeric; wider values are not
/// cut, they push the next column). Persistence templates come out as IPVS shows them: client
/// port 0 and state `NONE`. With `--persistent-conn` the header gains ipvsadm's "pe name" and
/// "pe_data" columns; lines keep the short format, since ipvsadm fills those columns only for
/// persistence-engine entries and xvs has no persistence engines. `--exact` and `--nosort`
/// change nothing, as in ipvsadm.
pub fn format_connections(
    conns: &[ConnStatus],
    persistent_conn: bool,
    fmt: FormatOpts,
    names: &PortNames,
) -> String {
    let mut out = connections_header(persistent_conn);
    for c in conns {
        push_connection_line(&mut out, c, fmt, names);
    }
    out
}

/// The banner and column header of `-L -c` (see [`format_connections`]).
pub fn connections_header(persistent_conn: bool) -> String {
    let mut out = String::from("IPVS connection entries\n");
    let _ = if persistent_conn {
        writeln!(
            out,
            "pro expire {:<11} {:<18} {:<18} {:<18} {:<16} pe_data",
            "state", "source", "virtual", "destination", "pe name"
        )
    } else {
        writeln!(
            out,
            "pro expire {:<11} {:<18} {:<18} destination",
            "state", "source", "virtual"
        )
    };
    out
}

/// Appends one `-L -c` line (see [`format_connections`]); the streamed listing prints a
/// chunk of these at a time.
pub fn push_connection_line(out: &mut String, c: &ConnStatus, fmt: FormatOpts, names: &PortNames) {
    let p = c.proto;
    // IPVS names every template's state NONE, whatever its protocol.
    let state = if c.template { "NONE" } else { c.state.as_str() };
    let _ = writeln!(
        out,
        "{:<3} {:<6} {:<11} {:<18} {:<18} {}",
        p.list_name(),
        expire(c.expires_ms),
        state,
        addr_port(c.client_addr, c.client_port, p, fmt, names),
        addr_port(c.virtual_addr, c.virtual_port, p, fmt, names),
        addr_port(c.dest_addr, c.dest_port, p, fmt, names),
    );
}

/// `-L --timeout`.
pub fn format_timeout(t: &Timeouts) -> String {
    format!(
        "Timeout (tcp tcpfin udp): {} {} {}\n",
        t.tcp, t.tcp_fin, t.udp
    )
}

/// `--datapath` (xvs only): one `name: value` per line so scripts can pick counters with
/// `awk`; each worker's counters are indented under a `queue N (mode):` header, and drop
/// reasons are listed by name, zeros included.
/// `--announce on|off|show`: the device, whether announcing is on, and the VIPs on the
/// device, one per line (a change made by this command shows at the next `show`).
pub fn format_announce(a: &crate::model::AnnounceStatus) -> String {
    let mut out = format!(
        "announce device {}: {}\n",
        a.device,
        if a.enabled { "on" } else { "off (drained)" }
    );
    for v in &a.announced {
        out.push_str(&format!("  {v}\n"));
    }
    out
}

/// `-L -n --health`: per virtual server, per real server, one line per checker.
pub fn format_health(rows: &[crate::model::HealthRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Prot LocalAddress:Port\n  -> RemoteAddress:Port           Server Checker    Target                 State Fails Since    Last error"
    );
    let mut last: Option<(ServiceKey, &str)> = None;
    for r in rows {
        if last != Some((r.service, r.group.as_str())) {
            last = Some((r.service, r.group.as_str()));
            let name = format!("{}:{}", r.service.addr, r.service.port);
            if r.group.is_empty() {
                let _ = writeln!(out, "{:<4} {name}", r.service.proto.list_name());
            } else {
                let _ = writeln!(
                    out,
                    "{:<4} {name} (group {})",
                    r.service.proto.list_name(),
                    r.group
                );
            }
        }
        let state = match (r.has_run, r.up) {
            (false, true) => "init",
            (false, false) => "init-down",
            (true, true) => "up",
            (true, false) => "down",
        };
        let _ = writeln!(
            out,
            "  -> {:<28} {:<6} {:<10} {:<22} {:<5} {:<5} {:<8} {}",
            format!("{}:{}", r.addr, r.port),
            if r.alive { "alive" } else { "dead" },
            r.checker,
            r.target,
            state,
            r.failures,
            format!("{}s", r.since_secs),
            r.last_error.as_deref().unwrap_or("-"),
        );
    }
    out
}

/// `-L --daemon`: ipvsadm 1.31's `list_daemon`, one line per running daemon, master first:
/// `%s sync daemon (mcast=%s, syncid=%d`, then `, maxlen=%u`, `, group=%s`, `, port=%u`,
/// `, ttl=%u` (each printed when the kernel reports it, which current kernels always do,
/// with the values start_sync_thread settled on), then `)`. Nothing when none runs.
/// xvs's peers are not shown (ipvsadm has no place for them).
pub fn format_daemons(ds: &[crate::sync::daemon::DaemonStatus]) -> String {
    let mut out = String::new();
    for d in ds {
        let _ = write!(
            out,
            "{} sync daemon (mcast={}, syncid={}",
            d.role.name(),
            d.mcast_ifn,
            d.syncid
        );
        if d.sync_maxlen != 0 {
            let _ = write!(out, ", maxlen={}", d.sync_maxlen);
        }
        let _ = write!(out, ", group={}", d.mcast_group);
        if d.mcast_port != 0 {
            let _ = write!(out, ", port={}", d.mcast_port);
        }
        if d.mcast_ttl != 0 {
            let _ = write!(out, ", ttl={}", d.mcast_ttl);
        }
        out.push_str(")\n");
    }
    out
}

pub fn format_datapath(d: &DataPathStats) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "interface: {}", d.interface);
    let _ = writeln!(out, "xdp_mode: {}", d.xdp_mode);
    for (name, v) in [
        ("xdp_redirected", d.xdp_redirected),
        ("xdp_passed", d.xdp_passed),
        ("xdp_malformed", d.xdp_malformed),
        ("xdp_no_socket", d.xdp_no_socket),
        ("xdp_fragments", d.xdp_fragments),
        ("xdp_held", d.xdp_held),
        ("nat_conns", d.nat_conns),
    ] {
        let _ = writeln!(out, "{name}: {v}");
    }
    for (name, v) in d.sync.iter().chain(&d.fast) {
        let _ = writeln!(out, "{name}: {v}");
    }
    for w in &d.workers {
        let _ = writeln!(out, "queue {} ({}):", w.queue, w.bind_mode);
        for (name, v) in [
            ("rx_frames", w.rx_frames),
            ("tx_frames", w.tx_frames),
            ("new_conns", w.new_conns),
            ("conns", w.conns),
            ("half_open", w.half_open),
            ("evicted", w.evicted),
            ("nat_other_worker", w.nat_other_worker),
            ("icmp_frag_needed", w.icmp_frag_needed),
            ("icmp_time_exceeded", w.icmp_time_exceeded),
            ("icmp_relayed", w.icmp_relayed),
            ("icmp_handoff", w.icmp_handoff),
            ("icmp_handoff_relayed", w.icmp_handoff_relayed),
            ("dead_expired", w.dead_expired),
            ("dead_rescheduled", w.dead_rescheduled),
            ("dead_reset", w.dead_reset),
            ("imported", w.imported),
            ("moved_handoff", w.moved_handoff),
            ("moved_out", w.moved_out),
            ("mid_flow", w.mid_flow),
            ("xsk_rx_ring_full", w.xsk_rx_ring_full),
            ("xsk_rx_fill_ring_empty", w.xsk_rx_fill_ring_empty),
            ("xsk_rx_dropped", w.xsk_rx_dropped),
            ("xsk_tx_ring_empty", w.xsk_tx_ring_empty),
        ] {
            let _ = writeln!(out, "  {name}: {v}");
        }
        for (reason, v) in &w.drops {
            let _ = writeln!(out, "  {reason}: {v}");
        }
        if !w.napi_ids.is_empty() {
            let _ = writeln!(out, "  napi_ids: {}", w.napi_ids);
        }
    }
    out
}

/// `-S [-n]`: ipvsadm-save lines that `-R` (ours or ipvsadm's) reads back.
///
/// Service: `-A -t VIP:PORT -s SCHED [-p T [-M MASK]] [-o] [-b FLAGS]`.
/// Real server: `-a -t VIP:PORT -r RIP:PORT -g|-i|-m -w W`, plus `--tun-type ipip` for tunnel
/// servers as ipvsadm 1.31 writes. Byte for byte ipvsadm's output: like ipvsadm, no `-x`/`-y`
/// (thresholds are not saved, so a restore drops them, as with ipvsadm-restore).
pub fn format_save(status: &Status, fmt: FormatOpts, names: &PortNames) -> String {
    let mut out = String::new();
    for svc in sorted_services(status.services.iter(), fmt) {
        let o = &svc.opts;
        let svc_name = rule_service_name(&svc.key, fmt, names);
        let _ = write!(out, "-A {svc_name} -s {}", o.scheduler);
        if let Some(timeout) = o.persistent {
            let _ = write!(out, " -p {timeout}");
            if !is_default_mask(o.netmask) {
                if let Some(m) = o.netmask {
                    let _ = write!(out, " -M {m}");
                }
            }
        }
        if o.one_packet {
            out.push_str(" -o");
        }
        if !o.sched_flags.is_empty() {
            let _ = write!(out, " -b {}", sched_flags(o));
        }
        out.push('\n');
        for d in sorted_dests(svc, fmt) {
            let dname = addr_port(d.addr, d.port, svc.key.proto, fmt, names);
            let _ = write!(
                out,
                "-a {svc_name} -r {dname} {} -w {}",
                d.forward.flag(),
                d.weight
            );
            if d.forward == Forward::Tunnel {
                out.push_str(" --tun-type ipip");
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_listing_groups_checkers_under_their_service() {
        let row =
            |addr: &str, checker: &str, up: bool, err: Option<&str>| crate::model::HealthRow {
                service: ServiceKey {
                    proto: Protocol::Tcp,
                    addr: "10.0.0.88".parse().unwrap(),
                    port: 80,
                },
                group: String::new(),
                addr: addr.parse().unwrap(),
                port: 80,
                alive: up,
                checker: checker.into(),
                target: format!("{addr}:80"),
                up,
                has_run: true,
                failures: if up { 0 } else { 2 },
                last_error: err.map(String::from),
                since_secs: 12,
                last_latency_ms: Some(1),
                checks: 9,
            };
        let out = format_health(&[
            row("10.0.0.9", "TCP_CHECK", true, None),
            row(
                "10.0.0.20",
                "HTTP_GET",
                false,
                Some("connect: Connection refused"),
            ),
        ]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 5, "{out}");
        assert_eq!(lines[2], "TCP  10.0.0.88:80");
        assert!(lines[4].starts_with("  -> 10.0.0.20:80"), "{out}");
        let cols: Vec<&str> = lines[4].split_whitespace().collect();
        assert_eq!(
            &cols[2..8],
            ["dead", "HTTP_GET", "10.0.0.20:80", "down", "2", "12s"],
            "{out}"
        );
        assert!(lines[4].ends_with("connect: Connection refused"));
        assert!(lines[1].contains("Server Checker"));
    }
    use crate::cli::parse::{parse_restore, parse_with, Command, ListView};
    use crate::model::{Counters, Request, ServiceOpts};

    fn names() -> PortNames {
        PortNames::parse("http 80/tcp www\nhttps 443/tcp\ndomain 53/udp\n")
    }

    fn key(proto: Protocol, a: &str, port: u16) -> ServiceKey {
        ServiceKey {
            proto,
            addr: a.parse().unwrap(),
            port,
        }
    }

    fn dest(
        a: &str,
        port: u16,
        forward: Forward,
        weight: u32,
        active: u32,
        inactive: u32,
    ) -> DestStatus {
        DestStatus {
            addr: a.parse().unwrap(),
            port,
            forward,
            weight,
            u_threshold: 0,
            l_threshold: 0,
            active_conns: active,
            inactive_conns: inactive,
            persist_conns: 0,
            counters: Counters::default(),
            rates: Rates::default(),
        }
    }

    fn opts(sched: &str) -> ServiceOpts {
        ServiceOpts {
            scheduler: sched.to_string(),
            ..ServiceOpts::default()
        }
    }

    /// A table exercising every service option, listed out of order on purpose.
    fn status() -> Status {
        Status {
            conn_table_size: 4096,
            timeouts: Timeouts::default(),
            services: vec![
                ServiceStatus {
                    key: key(Protocol::Udp, "10.0.0.53", 53),
                    opts: ServiceOpts {
                        one_packet: true,
                        ..opts("rr")
                    },
                    counters: Counters::default(),
                    rates: Rates {
                        cps: 0,
                        inpps: 7,
                        outpps: 7,
                        inbps: 3_920,
                        outbps: 12_345,
                    },
                    dests: vec![DestStatus {
                        rates: Rates {
                            cps: 0,
                            inpps: 7,
                            outpps: 7,
                            inbps: 3_920,
                            outbps: 12_345,
                        },
                        ..dest("10.0.0.21", 5353, Forward::Masq, 1, 0, 12)
                    }],
                },
                ServiceStatus {
                    key: key(Protocol::Tcp, "10.0.0.88", 80),
                    opts: ServiceOpts {
                        persistent: Some(600),
                        ..opts("wrr")
                    },
                    counters: Counters {
                        conns: 3549,
                        inpkts: 123_456_789,
                        outpkts: 0,
                        inbytes: 98_765_432_100,
                        outbytes: 5,
                    },
                    rates: Rates {
                        cps: 123_456_789,
                        inpps: 99_999_999,
                        outpps: 1_000_000_000,
                        inbps: 100_000_000_000,
                        outbps: 100_000_000_000_000,
                    },
                    dests: vec![
                        dest("10.0.0.10", 80, Forward::Tunnel, 1, 0, 0),
                        DestStatus {
                            u_threshold: 5000,
                            l_threshold: 4000,
                            persist_conns: 17,
                            counters: Counters {
                                conns: 3162,
                                inpkts: 1_000_000_000_000,
                                outpkts: 100_000_000_000_000,
                                inbytes: 99_999_999,
                                outbytes: 100_000_000,
                            },
                            rates: Rates {
                                cps: 123_456_789,
                                inpps: 99_999_999,
                                outpps: 1_000_000_000,
                                inbps: 100_000_000_000,
                                outbps: 99_999_999,
                            },
                            ..dest("10.0.0.9", 80, Forward::Route, 2, 3162, 387)
                        },
                    ],
                },
                ServiceStatus {
                    key: key(Protocol::Tcp, "10.0.0.88", 443),
                    opts: ServiceOpts {
                        persistent: Some(300),
                        netmask: Some("255.255.255.0".parse().unwrap()),
                        sched_flags: vec!["sh-fallback".into(), "sh-port".into()],
                        ..opts("sh")
                    },
                    counters: Counters::default(),
                    rates: Rates::default(),
                    dests: vec![],
                },
            ],
        }
    }

    fn list(view: ListView, numeric: bool, exact: bool) -> String {
        let fmt = FormatOpts {
            numeric,
            exact,
            nosort: false,
        };
        match view {
            ListView::Services { service, columns } => {
                format_services(&status(), service, columns, fmt, &names())
            }
            other => panic!("not a service listing: {other:?}"),
        }
    }

    fn all(columns: Columns) -> ListView {
        ListView::Services {
            service: None,
            columns,
        }
    }

    /// ipvsadm 1.31's print_sched_flags: mh names its own two flags, in that order.
    #[test]
    fn mh_flags_print_as_ipvsadm() {
        let o = ServiceOpts {
            sched_flags: vec!["mh-port".into(), "mh-fallback".into()],
            ..opts("mh")
        };
        assert_eq!(sched_flags(&o), "mh-fallback,mh-port");
        let o = ServiceOpts {
            sched_flags: vec!["mh-port".into()],
            ..opts("mh")
        };
        assert_eq!(sched_flags(&o), "mh-port");
    }

    #[test]
    fn default_listing() {
        let want = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.0.0.88:80 wrr persistent 600
  -> 10.0.0.9:80                  Route   2      3162       387       
  -> 10.0.0.10:80                 Tunnel  1      0          0         
TCP  10.0.0.88:443 sh (sh-fallback,sh-port) persistent 300 mask 255.255.255.0
UDP  10.0.0.53:53 rr ops
  -> 10.0.0.21:5353               Masq    1      0          12        
";
        assert_eq!(list(all(Columns::Default), true, false), want);
    }

    #[test]
    fn listing_without_numeric_names_ports() {
        let out = list(all(Columns::Default), false, false);
        assert!(
            out.contains("\nTCP  10.0.0.88:http wrr persistent 600\n"),
            "{out}"
        );
        assert!(
            out.contains("\n  -> 10.0.0.9:http                Route   2"),
            "{out}"
        );
        assert!(out.contains("\nTCP  10.0.0.88:https sh"), "{out}");
        assert!(out.contains("\nUDP  10.0.0.53:domain rr ops\n"), "{out}");
        assert!(out.contains("\n  -> 10.0.0.21:5353 "), "{out}");
    }

    #[test]
    fn one_service_has_no_banner() {
        let view = ListView::Services {
            service: Some(key(Protocol::Udp, "10.0.0.53", 53)),
            columns: Columns::Default,
        };
        let want = "\
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
UDP  10.0.0.53:53 rr ops
  -> 10.0.0.21:5353               Masq    1      0          12        
";
        assert_eq!(list(view, true, false), want);
    }

    #[test]
    fn stats_listing_scaled_and_exact() {
        let want = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes
  -> RemoteAddress:Port
TCP  10.0.0.88:80                     3549  123456K        0   98765M        5
  -> 10.0.0.9:80                      3162    1000G     100T 99999999  100000K
  -> 10.0.0.10:80                        0        0        0        0        0
TCP  10.0.0.88:443                       0        0        0        0        0
UDP  10.0.0.53:53                        0        0        0        0        0
  -> 10.0.0.21:5353                      0        0        0        0        0
";
        assert_eq!(list(all(Columns::Stats), true, false), want);
        let exact = list(all(Columns::Stats), true, true);
        assert!(
            exact.contains("\nTCP  10.0.0.88:80                     3549 123456789        0 98765432100        5\n"),
            "{exact}"
        );
        assert!(
            exact.contains("\n  -> 10.0.0.9:80                      3162 1000000000000 100000000000000 99999999 100000000\n"),
            "{exact}"
        );
    }

    #[test]
    fn rate_listing_scaled_and_exact() {
        // Real-server CPS/InPPS/OutPPS are never scaled (ipvsadm prints them with "%8llu"),
        // the byte rates and every service column go through print_largenum.
        let want = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS
  -> RemoteAddress:Port
TCP  10.0.0.88:80                  123456K 99999999    1000M     100G     100T
  -> 10.0.0.9:80                  123456789 99999999 1000000000     100G 99999999
  -> 10.0.0.10:80                        0        0        0        0        0
TCP  10.0.0.88:443                       0        0        0        0        0
UDP  10.0.0.53:53                        0        7        7     3920    12345
  -> 10.0.0.21:5353                      0        7        7     3920    12345
";
        assert_eq!(list(all(Columns::Rate), true, false), want);
        let want = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS
  -> RemoteAddress:Port
TCP  10.0.0.88:80                 123456789 99999999 1000000000 100000000000 100000000000000
  -> 10.0.0.9:80                  123456789 99999999 1000000000 100000000000 99999999
  -> 10.0.0.10:80                        0        0        0        0        0
TCP  10.0.0.88:443                       0        0        0        0        0
UDP  10.0.0.53:53                        0        7        7     3920    12345
  -> 10.0.0.21:5353                      0        7        7     3920    12345
";
        assert_eq!(list(all(Columns::Rate), true, true), want);
        // Named ports without -n, and one service without the banner.
        let out = list(all(Columns::Rate), false, false);
        assert!(
            out.contains("\nUDP  10.0.0.53:domain                    0        7"),
            "{out}"
        );
        let one = ListView::Services {
            service: Some(key(Protocol::Udp, "10.0.0.53", 53)),
            columns: Columns::Rate,
        };
        let want = "\
Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS
  -> RemoteAddress:Port
UDP  10.0.0.53:53                        0        7        7     3920    12345
  -> 10.0.0.21:5353                      0        7        7     3920    12345
";
        assert_eq!(list(one, true, false), want);
    }

    fn conn(
        proto: Protocol,
        expires_ms: u64,
        state: &str,
        client: (&str, u16),
        virt: (&str, u16),
        dest: (&str, u16),
    ) -> ConnStatus {
        ConnStatus {
            proto,
            expires_ms,
            state: state.to_string(),
            client_addr: client.0.parse().unwrap(),
            client_port: client.1,
            virtual_addr: virt.0.parse().unwrap(),
            virtual_port: virt.1,
            dest_addr: dest.0.parse().unwrap(),
            dest_port: dest.1,
            template: false,
        }
    }

    /// Entries in the daemon's order, which the listing keeps (ipvsadm does not sort).
    fn conns() -> Vec<ConnStatus> {
        let vip = ("10.0.0.88", 80);
        vec![
            conn(
                Protocol::Tcp,
                899_999,
                "ESTABLISHED",
                ("10.0.0.100", 53216),
                vip,
                ("10.0.0.9", 80),
            ),
            conn(
                Protocol::Tcp,
                119_000,
                "FIN_WAIT",
                ("192.168.200.201", 65535),
                vip,
                ("10.0.0.10", 80),
            ),
            conn(
                Protocol::Udp,
                999,
                "UDP",
                ("10.0.0.100", 40000),
                ("10.0.0.53", 53),
                ("10.0.0.21", 5353),
            ),
            // A template: IPVS shows state NONE whatever the daemon filled in.
            ConnStatus {
                template: true,
                ..conn(
                    Protocol::Tcp,
                    86_400_000,
                    "",
                    ("10.0.0.0", 0),
                    ("10.0.0.88", 443),
                    ("10.0.0.9", 443),
                )
            },
        ]
    }

    #[test]
    fn connection_listing() {
        let numeric = FormatOpts {
            numeric: true,
            ..FormatOpts::default()
        };
        // "%-3s %-6s %-11s %-18s %-18s %s"; expire is whole seconds, truncated, as mm:ss.
        let want = "\
IPVS connection entries
pro expire state       source             virtual            destination
TCP 14:59  ESTABLISHED 10.0.0.100:53216   10.0.0.88:80       10.0.0.9:80
TCP 01:59  FIN_WAIT    192.168.200.201:65535 10.0.0.88:80       10.0.0.10:80
UDP 00:00  UDP         10.0.0.100:40000   10.0.0.53:53       10.0.0.21:5353
TCP 1440:00 NONE        10.0.0.0:0         10.0.0.88:443      10.0.0.9:443
";
        assert_eq!(format_connections(&conns(), false, numeric, &names()), want);
        // --exact and --nosort change nothing.
        let all_flags = FormatOpts {
            numeric: true,
            exact: true,
            nosort: true,
        };
        assert_eq!(
            format_connections(&conns(), false, all_flags, &names()),
            want
        );
        // Without -n: ports named per protocol; unknown ports (and 0) stay numeric.
        let want = "\
IPVS connection entries
pro expire state       source             virtual            destination
TCP 14:59  ESTABLISHED 10.0.0.100:53216   10.0.0.88:http     10.0.0.9:http
TCP 01:59  FIN_WAIT    192.168.200.201:65535 10.0.0.88:http     10.0.0.10:http
UDP 00:00  UDP         10.0.0.100:40000   10.0.0.53:domain   10.0.0.21:5353
TCP 1440:00 NONE        10.0.0.0:0         10.0.0.88:https    10.0.0.9:https
";
        assert_eq!(
            format_connections(&conns(), false, FormatOpts::default(), &names()),
            want
        );
        // --persistent-conn: the wider header only.
        let out = format_connections(&conns()[..1], true, numeric, &names());
        assert_eq!(
            out,
            "IPVS connection entries\n\
             pro expire state       source             virtual            destination        \
             pe name          pe_data\n\
             TCP 14:59  ESTABLISHED 10.0.0.100:53216   10.0.0.88:80       10.0.0.9:80\n"
        );
    }

    #[test]
    fn expire_truncates_to_whole_seconds() {
        assert_eq!(expire(0), "00:00");
        assert_eq!(expire(999), "00:00");
        assert_eq!(expire(1_000), "00:01");
        assert_eq!(expire(59_999), "00:59");
        assert_eq!(expire(60_000), "01:00");
        assert_eq!(expire(900_000), "15:00");
        assert_eq!(expire(899_001), "14:59");
        assert_eq!(expire(6_000_000), "100:00");
    }

    #[test]
    fn thresholds_and_persistent_conn_listings() {
        let want = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn 
  -> RemoteAddress:Port
TCP  10.0.0.88:80 wrr persistent 600
  -> 10.0.0.9:80                  5000       4000       3162       387       
  -> 10.0.0.10:80                 0          0          0          0         
TCP  10.0.0.88:443 sh (sh-fallback,sh-port) persistent 300 mask 255.255.255.0
UDP  10.0.0.53:53 rr ops
  -> 10.0.0.21:5353               0          0          0          12        
";
        assert_eq!(list(all(Columns::Thresholds), true, false), want);
        let want = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port            Weight    PersistConn ActiveConn InActConn 
  -> RemoteAddress:Port
TCP  10.0.0.88:80 wrr persistent 600
  -> 10.0.0.9:80                  2         17          3162       387       
  -> 10.0.0.10:80                 1         0           0          0         
TCP  10.0.0.88:443 sh (sh-fallback,sh-port) persistent 300 mask 255.255.255.0
UDP  10.0.0.53:53 rr ops
  -> 10.0.0.21:5353               1         0           0          12        
";
        assert_eq!(list(all(Columns::PersistentConn), true, false), want);
    }

    #[test]
    fn timeout_listing() {
        assert_eq!(
            format_timeout(&status().timeouts),
            "Timeout (tcp tcpfin udp): 900 120 300\n"
        );
    }

    #[test]
    fn nosort_keeps_daemon_order() {
        let fmt = FormatOpts {
            numeric: true,
            exact: false,
            nosort: true,
        };
        let out = format_services(&status(), None, Columns::Default, fmt, &names());
        let udp = out.find("UDP  10.0.0.53:53").unwrap();
        let tcp = out.find("TCP  10.0.0.88:80").unwrap();
        assert!(udp < tcp);
        assert!(out.find("10.0.0.10:80").unwrap() < out.find("10.0.0.9:80").unwrap());
    }

    #[test]
    fn long_names_are_truncated_like_ipvsadm() {
        let long = PortNames::parse("a-very-long-service-name-indeed 8080/tcp\n");
        let st = Status {
            conn_table_size: 4096,
            timeouts: Timeouts::default(),
            services: vec![ServiceStatus {
                key: key(Protocol::Tcp, "192.168.100.200", 8080),
                opts: opts("rr"),
                counters: Counters::default(),
                rates: Rates::default(),
                dests: vec![dest("192.168.100.201", 8080, Forward::Masq, 1, 0, 0)],
            }],
        };
        let out = format_services(&st, None, Columns::Default, FormatOpts::default(), &long);
        // 33 characters of "TCP  192.168.100.200:a-very-long-service-name-indeed".
        assert!(
            out.contains("\nTCP  192.168.100.200:a-very-long- rr\n"),
            "{out}"
        );
        // 28 characters of the destination, then the usual columns.
        assert!(
            out.contains("\n  -> 192.168.100.201:a-very-long- Masq    1"),
            "{out}"
        );
    }

    #[test]
    fn save_format() {
        let want = "\
-A -t 10.0.0.88:80 -s wrr -p 600
-a -t 10.0.0.88:80 -r 10.0.0.9:80 -g -w 2
-a -t 10.0.0.88:80 -r 10.0.0.10:80 -i -w 1 --tun-type ipip
-A -t 10.0.0.88:443 -s sh -p 300 -M 255.255.255.0 -b sh-fallback,sh-port
-A -u 10.0.0.53:53 -s rr -o
-a -u 10.0.0.53:53 -r 10.0.0.21:5353 -m -w 1
";
        let fmt = FormatOpts {
            numeric: true,
            ..FormatOpts::default()
        };
        assert_eq!(format_save(&status(), fmt, &names()), want);
        let named = format_save(&status(), FormatOpts::default(), &names());
        assert!(
            named.starts_with("-A -t 10.0.0.88:http -s wrr -p 600\n"),
            "{named}"
        );
        assert!(
            named.contains("\n-A -u 10.0.0.53:domain -s rr -o\n"),
            "{named}"
        );
    }

    /// Applies requests to an empty table the way the daemon would (enough for round trips).
    fn apply(reqs: &[Request]) -> Status {
        let mut st = Status {
            conn_table_size: 4096,
            timeouts: Timeouts::default(),
            services: vec![],
        };
        for r in reqs {
            match r {
                Request::AddService { key, opts } => st.services.push(ServiceStatus {
                    key: *key,
                    opts: opts.clone(),
                    counters: Counters::default(),
                    rates: Rates::default(),
                    dests: vec![],
                }),
                Request::AddDest { service, dest: d } => {
                    let svc = st.services.iter_mut().find(|s| s.key == *service).unwrap();
                    svc.dests.push(DestStatus {
                        addr: d.addr,
                        port: d.port.unwrap(),
                        forward: d.forward,
                        weight: d.weight,
                        u_threshold: d.u_threshold,
                        l_threshold: d.l_threshold,
                        active_conns: 0,
                        inactive_conns: 0,
                        persist_conns: 0,
                        counters: Counters::default(),
                        rates: Rates::default(),
                    });
                }
                other => panic!("unexpected request in a save: {other:?}"),
            }
        }
        st
    }

    /// A real server as -S saves it: address, port, method, weight.
    type DestConfig = (Ipv4Addr, u16, Forward, u32);

    /// The configuration part of a status, in sorted order, for comparison.
    /// What `-S` saves: like ipvsadm, not the thresholds.
    fn config(st: &Status) -> Vec<(ServiceKey, ServiceOpts, Vec<DestConfig>)> {
        let mut v: Vec<_> = st
            .services
            .iter()
            .map(|s| {
                let mut d: Vec<_> = s
                    .dests
                    .iter()
                    .map(|d| (d.addr, d.port, d.forward, d.weight))
                    .collect();
                d.sort_by_key(|x| (u32::from(x.0), x.1));
                (s.key, s.opts.clone(), d)
            })
            .collect();
        v.sort_by_key(|(k, _, _)| (k.proto.number(), u32::from(k.addr), k.port));
        v
    }

    #[test]
    fn save_then_restore_round_trips() {
        let original = status();
        for numeric in [true, false] {
            let fmt = FormatOpts {
                numeric,
                ..FormatOpts::default()
            };
            let saved = format_save(&original, fmt, &names());
            let reqs = parse_restore(&saved, &names()).unwrap();
            let rebuilt = apply(&reqs);
            assert_eq!(
                config(&rebuilt),
                config(&original),
                "numeric={numeric}\n{saved}"
            );
            // And saving again gives the same text.
            assert_eq!(format_save(&rebuilt, fmt, &names()), saved);
        }
    }

    #[test]
    fn command_line_to_listing() {
        // Build a table from ipvsadm commands, then list it: the whole pipeline in one test.
        let cmds = [
            "-A -t 10.0.0.88:80 -s wrr -p 600",
            "-a -t 10.0.0.88:80 -r 10.0.0.9:80 -g -w 2",
        ];
        let reqs: Vec<Request> = cmds
            .iter()
            .map(|c| {
                let words: Vec<&str> = c.split_whitespace().collect();
                match parse_with(&words, &names()).unwrap().command {
                    Command::Change(r) => r,
                    other => panic!("{other:?}"),
                }
            })
            .collect();
        let st = apply(&reqs);
        let fmt = FormatOpts {
            numeric: true,
            ..FormatOpts::default()
        };
        let want = "\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.0.0.88:80 wrr persistent 600
  -> 10.0.0.9:80                  Route   2      0          0         
";
        assert_eq!(
            format_services(&st, None, Columns::Default, fmt, &names()),
            want
        );
    }

    #[test]
    fn datapath_format() {
        use crate::model::WorkerCounters;
        let d = DataPathStats {
            interface: "veth0".into(),
            xdp_mode: "native".into(),
            xdp_redirected: 10,
            xdp_passed: 3,
            xdp_malformed: 2,
            xdp_no_socket: 0,
            xdp_fragments: 1,
            xdp_held: 2,
            nat_conns: 5,
            sync: vec![("sync_applied".into(), 12)],
            fast: vec![("fast_path".into(), 1), ("fast_packets".into(), 40)],
            workers: vec![WorkerCounters {
                queue: 0,
                bind_mode: "zero-copy".into(),
                rx_frames: 10,
                tx_frames: 9,
                new_conns: 2,
                conns: 1,
                icmp_frag_needed: 3,
                evicted: 7,
                half_open: 6,
                nat_other_worker: 8,
                icmp_time_exceeded: 6,
                icmp_relayed: 7,
                icmp_handoff: 5,
                icmp_handoff_relayed: 4,
                dead_expired: 3,
                dead_rescheduled: 2,
                dead_reset: 1,
                imported: 9,
                moved_handoff: 10,
                moved_out: 11,
                mid_flow: 16,
                xsk_rx_ring_full: 12,
                xsk_rx_fill_ring_empty: 13,
                xsk_rx_dropped: 14,
                xsk_tx_ring_empty: 15,
                napi_ids: "0,8193".into(),
                drops: vec![("truncated".into(), 4), ("malformed".into(), 0)],
            }],
        };
        let want = "\
interface: veth0
xdp_mode: native
xdp_redirected: 10
xdp_passed: 3
xdp_malformed: 2
xdp_no_socket: 0
xdp_fragments: 1
xdp_held: 2
nat_conns: 5
sync_applied: 12
fast_path: 1
fast_packets: 40
queue 0 (zero-copy):
  rx_frames: 10
  tx_frames: 9
  new_conns: 2
  conns: 1
  half_open: 6
  evicted: 7
  nat_other_worker: 8
  icmp_frag_needed: 3
  icmp_time_exceeded: 6
  icmp_relayed: 7
  icmp_handoff: 5
  icmp_handoff_relayed: 4
  dead_expired: 3
  dead_rescheduled: 2
  dead_reset: 1
  imported: 9
  moved_handoff: 10
  moved_out: 11
  mid_flow: 16
  xsk_rx_ring_full: 12
  xsk_rx_fill_ring_empty: 13
  xsk_rx_dropped: 14
  xsk_tx_ring_empty: 15
  truncated: 4
  malformed: 0
  napi_ids: 0,8193
";
        assert_eq!(format_datapath(&d), want);
    }

    #[test]
    fn largenum_boundaries() {
        let f = |n, exact| {
            let mut s = String::new();
            largenum(&mut s, n, exact);
            s
        };
        assert_eq!(f(0, false), "        0");
        assert_eq!(f(99_999_999, false), " 99999999");
        assert_eq!(f(100_000_000, false), "  100000K");
        assert_eq!(f(999_999_999, false), "  999999K");
        assert_eq!(f(1_000_000_000, false), "    1000M");
        assert_eq!(f(99_999_999_999, false), "   99999M");
        assert_eq!(f(100_000_000_000, false), "     100G");
        assert_eq!(f(100_000_000_000_000, false), "     100T");
        assert_eq!(f(12_345_678, true), " 12345678");
        assert_eq!(f(123_456_789, true), " 123456789");
        assert_eq!(f(u64::MAX, true), " 18446744073709551615");
    }
}
