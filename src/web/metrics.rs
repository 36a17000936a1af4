//! `/metrics`: Prometheus exposition, collected at scrape time from the counters the
//! daemon already keeps (no bookkeeping of its own on the data path).
//!
//! Two groups:
//! - node_exporter's `ipvs` collector, names, types, help texts and labels exactly
//!   (`collector/ipvs_linux.go`), so dashboards and alerts written for a kernel IPVS
//!   director work unchanged. The five totals are node_exporter's `/proc/net/ip_vs_stats`
//!   figures, which count every packet IPVS handled: here the sum over the services.
//! - xvs's own, under `xvs_`: per-service and per-server traffic, health checkers, worker
//!   and XDP counters, the connection table, sync.
//!
//! The output is OpenMetrics (prometheus-client's encoder): a counter `foo` is the sample
//! `foo_total` with `# TYPE foo counter`, so it is served as
//! `application/openmetrics-text; version=1.0.0`, which Prometheus asks for first.

use super::Sample;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// The content type of the OpenMetrics exposition (what Prometheus asks for first).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of the classic text format, for every other client (curl,
/// `promtool check metrics`, older scrapers).
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether a request's `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(accept: &str) -> bool {
    accept.contains("application/openmetrics-text")
}

/// The exposition in the classic text format (version 0.0.4), as node_exporter serves it
/// to a plain `curl`: the same samples, with a counter's HELP and TYPE naming the sample
/// (`foo_total`) rather than the OpenMetrics family (`foo`), and no `# EOF`.
pub fn encode_text(sample: Sample) -> String {
    to_text(&encode(sample))
}

/// OpenMetrics output of `encode` → the classic text format.
fn to_text(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    // HELP precedes TYPE: held until TYPE says whether the family is a counter.
    let mut help: Option<&str> = None;
    for line in om.lines() {
        if line == "# EOF" {
            continue;
        }
        if line.starts_with("# HELP ") {
            help = Some(line);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap_or((rest, ""));
            let suffix = if ty == "counter" { "_total" } else { "" };
            if let Some(h) = help.take() {
                let text = h[7..].split_once(' ').map_or("", |(_, t)| t);
                out.push_str(&format!("# HELP {name}{suffix} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name}{suffix} {ty}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

type Labels = Vec<(&'static str, String)>;

/// The exposition of one sample.
pub fn encode(sample: Sample) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SampleCollector(sample)));
    let mut out = String::new();
    // Writing into a String cannot fail, and every value is finite.
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .expect("encoding metrics into a String");
    out
}

#[derive(Debug)]
struct SampleCollector(Sample);

/// One metric family: descriptor and its rows.
fn family<V: Copy>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    ty: MetricType,
    rows: impl IntoIterator<Item = (Labels, V)>,
) -> Result<(), std::fmt::Error>
where
    ConstCounter<V>: EncodeMetric,
    ConstGauge<V>: EncodeMetric,
{
    let one = |e: MetricEncoder, v: V| match ty {
        MetricType::Counter => ConstCounter::new(v).encode(e),
        _ => ConstGauge::new(v).encode(e),
    };
    let mut m = enc.encode_descriptor(name, help, None, ty)?;
    let mut rows = rows.into_iter().peekable();
    // A metric without labels has one sample, encoded bare (`name 1`): through
    // `encode_family` an empty label set would print `name{} 1`.
    if let Some((_, v)) = rows.next_if(|(l, _)| l.is_empty()) {
        return one(m, v);
    }
    for (labels, v) in rows {
        one(m.encode_family(&labels)?, v)?;
    }
    Ok(())
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, u64)>,
) -> Result<(), std::fmt::Error> {
    family(enc, name, help, MetricType::Counter, rows)
}

fn gauge<V: Copy>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (Labels, V)>,
) -> Result<(), std::fmt::Error>
where
    ConstCounter<V>: EncodeMetric,
    ConstGauge<V>: EncodeMetric,
{
    family(enc, name, help, MetricType::Gauge, rows)
}

fn none() -> Labels {
    Vec::new()
}

impl Collector for SampleCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let services = &s.status.services;

        // node_exporter: the totals (no labels).
        let total = |f: fn(&crate::model::Counters) -> u64| {
            [(
                none(),
                services.iter().map(|sv| f(&sv.counters)).sum::<u64>(),
            )]
        };
        counter(
            &mut enc,
            "node_ipvs_connections",
            "The total number of connections made.",
            total(|c| c.conns),
        )?;
        counter(
            &mut enc,
            "node_ipvs_incoming_packets",
            "The total number of incoming packets.",
            total(|c| c.inpkts),
        )?;
        counter(
            &mut enc,
            "node_ipvs_outgoing_packets",
            "The total number of outgoing packets.",
            total(|c| c.outpkts),
        )?;
        counter(
            &mut enc,
            "node_ipvs_incoming_bytes",
            "The total amount of incoming data.",
            total(|c| c.inbytes),
        )?;
        counter(
            &mut enc,
            "node_ipvs_outgoing_bytes",
            "The total amount of outgoing data.",
            total(|c| c.outbytes),
        )?;

        // node_exporter: one series per (service, real server), its label order; proto is
        // TCP or UDP and local_mark empty (it is a hex fwmark only for FWM services, which
        // xvs does not have).
        let backends = || {
            services.iter().flat_map(|sv| {
                sv.dests.iter().map(move |d| {
                    let labels: Labels = vec![
                        ("local_address", sv.key.addr.to_string()),
                        ("local_port", sv.key.port.to_string()),
                        ("remote_address", d.addr.to_string()),
                        ("remote_port", d.port.to_string()),
                        ("proto", sv.key.proto.list_name().to_string()),
                        ("local_mark", String::new()),
                    ];
                    (labels, d)
                })
            })
        };
        gauge(
            &mut enc,
            "node_ipvs_backend_connections_active",
            "The current active connections by local and remote address.",
            backends().map(|(l, d)| (l, d.active_conns as u64)),
        )?;
        gauge(
            &mut enc,
            "node_ipvs_backend_connections_inactive",
            "The current inactive connections by local and remote address.",
            backends().map(|(l, d)| (l, d.inactive_conns as u64)),
        )?;
        gauge(
            &mut enc,
            "node_ipvs_backend_weight",
            "The current backend weight by local and remote address.",
            backends().map(|(l, d)| (l, d.weight as u64)),
        )?;

        // xvs: services.
        let svc_labels = |sv: &crate::model::ServiceStatus| -> Labels {
            vec![
                ("proto", sv.key.proto.list_name().to_string()),
                ("local_address", sv.key.addr.to_string()),
                ("local_port", sv.key.port.to_string()),
            ]
        };
        gauge(
            &mut enc,
            "xvs_service_info",
            "A virtual service (1), its scheduler and persistence timeout in seconds (0 = none).",
            services.iter().map(|sv| {
                let mut l = svc_labels(sv);
                l.push(("scheduler", sv.opts.scheduler.clone()));
                l.push(("persistent", sv.opts.persistent.unwrap_or(0).to_string()));
                (l, 1u64)
            }),
        )?;
        type Pick = fn(&crate::model::Counters) -> u64;
        let traffic: [(&str, &str, Pick); 5] = [
            ("connections", "Connections scheduled", |c| c.conns),
            ("incoming_packets", "Packets from clients", |c| c.inpkts),
            (
                "outgoing_packets",
                "Packets to clients (NAT replies)",
                |c| c.outpkts,
            ),
            ("incoming_bytes", "Bytes from clients", |c| c.inbytes),
            ("outgoing_bytes", "Bytes to clients (NAT replies)", |c| {
                c.outbytes
            }),
        ];
        for (what, help, pick) in traffic {
            counter(
                &mut enc,
                &format!("xvs_service_{what}"),
                &format!("{help} by this virtual service (ipvsadm -L --stats)."),
                services
                    .iter()
                    .map(|sv| (svc_labels(sv), pick(&sv.counters))),
            )?;
        }

        // xvs: real servers.
        let servers = || {
            services.iter().flat_map(move |sv| {
                sv.dests.iter().map(move |d| {
                    let mut l = svc_labels(sv);
                    l.push(("remote_address", d.addr.to_string()));
                    l.push(("remote_port", d.port.to_string()));
                    l.push(("forward", d.forward.list_name().to_string()));
                    (l, d)
                })
            })
        };
        for (what, help, pick) in traffic {
            counter(
                &mut enc,
                &format!("xvs_server_{what}"),
                &format!("{help} by this real server of the service (ipvsadm -L --stats)."),
                servers().map(|(l, d)| (l, pick(&d.counters))),
            )?;
        }
        gauge(
            &mut enc,
            "xvs_server_connections_persistent",
            "Connections of the real server made through persistence templates.",
            servers().map(|(l, d)| (l, d.persist_conns as u64)),
        )?;
        gauge(
            &mut enc,
            "xvs_server_upper_threshold",
            "The real server's upper connection threshold (-x), 0 = none.",
            servers().map(|(l, d)| (l, d.u_threshold as u64)),
        )?;
        gauge(
            &mut enc,
            "xvs_server_lower_threshold",
            "The real server's lower connection threshold (-y), 0 = none.",
            servers().map(|(l, d)| (l, d.l_threshold as u64)),
        )?;

        // xvs: health checkers (with --config).
        let checks = || {
            s.health.iter().flatten().map(|h| {
                let l: Labels = vec![
                    ("proto", h.service.proto.list_name().to_string()),
                    ("local_address", h.service.addr.to_string()),
                    ("local_port", h.service.port.to_string()),
                    ("group", h.group.clone()),
                    ("remote_address", h.addr.to_string()),
                    ("remote_port", h.port.to_string()),
                    ("checker", h.checker.clone()),
                    ("target", h.target.clone()),
                ];
                (l, h)
            })
        };
        gauge(
            &mut enc,
            "xvs_health_check_up",
            "The checker's state: 1 up, 0 down (keepalived's checker state).",
            checks().map(|(l, h)| (l, h.up as u64)),
        )?;
        gauge(
            &mut enc,
            "xvs_health_server_alive",
            "The checked real server is in the pool (1) or out of it (0).",
            checks().map(|(l, h)| (l, h.alive as u64)),
        )?;
        gauge(
            &mut enc,
            "xvs_health_check_latency_seconds",
            "Duration of the checker's last check.",
            checks().filter_map(|(l, h)| Some((l, h.last_latency_ms? as f64 / 1000.0))),
        )?;
        gauge(
            &mut enc,
            "xvs_health_check_failures",
            "Consecutive failed checks.",
            checks().map(|(l, h)| (l, h.failures as u64)),
        )?;
        counter(
            &mut enc,
            "xvs_health_checks",
            "Checks run by the checker.",
            checks().map(|(l, h)| (l, h.checks)),
        )?;

        // xvs: workers and their drops.
        let dp = &s.datapath;
        let wl =
            |w: &crate::model::WorkerCounters| -> Labels { vec![("queue", w.queue.to_string())] };
        gauge(
            &mut enc,
            "xvs_worker_info",
            "A worker (one RX queue) and how its AF_XDP sockets are bound.",
            dp.workers.iter().map(|w| {
                let mut l = wl(w);
                l.push(("bind_mode", w.bind_mode.clone()));
                (l, 1u64)
            }),
        )?;
        type WPick = fn(&crate::model::WorkerCounters) -> u64;
        let worker_counters: [(&str, &str, WPick); 17] = [
            (
                "rx_frames",
                "Frames received from the AF_XDP sockets.",
                |w| w.rx_frames,
            ),
            ("tx_frames", "Frames sent.", |w| w.tx_frames),
            ("new_connections", "Connections created.", |w| w.new_conns),
            (
                "icmp_frag_needed",
                "ICMP fragmentation-needed answers sent.",
                |w| w.icmp_frag_needed,
            ),
            (
                "evicted",
                "Half-open entries evicted to make room (full table).",
                |w| w.evicted,
            ),
            (
                "nat_other_worker",
                "NAT replies for another worker's connections.",
                |w| w.nat_other_worker,
            ),
            (
                "icmp_time_exceeded",
                "ICMP time-exceeded answers sent.",
                |w| w.icmp_time_exceeded,
            ),
            (
                "icmp_relayed",
                "ICMP errors about connections relayed.",
                |w| w.icmp_relayed,
            ),
            (
                "icmp_handoff",
                "ICMP errors handed to the other workers.",
                |w| w.icmp_handoff,
            ),
            (
                "icmp_handoff_relayed",
                "ICMP errors from other workers relayed.",
                |w| w.icmp_handoff_relayed,
            ),
            (
                "dead_expired",
                "Entries of removed or dead servers expired (--on-dead).",
                |w| w.dead_expired,
            ),
            (
                "dead_rescheduled",
                "UDP datagrams moved off a dead server (--on-dead reassign).",
                |w| w.dead_rescheduled,
            ),
            (
                "dead_reset",
                "TCP resets sent for a dead server (--on-dead reassign).",
                |w| w.dead_reset,
            ),
            (
                "imported",
                "Parked connections (synced, restored, moved) taken over.",
                |w| w.imported,
            ),
            (
                "moved_handoff",
                "TCP segments asked of the other workers (moved flows).",
                |w| w.moved_handoff,
            ),
            (
                "moved_out",
                "Connections parked for the worker their packets moved to.",
                |w| w.moved_out,
            ),
            (
                "mid_flow",
                "Connections created by a TCP segment without SYN (mid-flow scheduling).",
                |w| w.mid_flow,
            ),
        ];
        for (what, help, pick) in worker_counters {
            counter(
                &mut enc,
                &format!("xvs_worker_{what}"),
                help,
                dp.workers.iter().map(|w| (wl(w), pick(w))),
            )?;
        }
        counter(
            &mut enc,
            "xvs_worker_drops",
            "Frames dropped by the worker, by reason (xvsadm --datapath).",
            dp.workers.iter().flat_map(|w| {
                w.drops.iter().map(move |(reason, n)| {
                    let mut l = wl(w);
                    l.push(("reason", reason.clone()));
                    (l, *n)
                })
            }),
        )?;
        gauge(
            &mut enc,
            "xvs_worker_connections",
            "Entries in the worker's own (DR/TUN) connection table.",
            dp.workers.iter().map(|w| (wl(w), w.conns)),
        )?;
        gauge(
            &mut enc,
            "xvs_worker_connections_half_open",
            "Entries of the worker's table that have not completed a handshake.",
            dp.workers.iter().map(|w| (wl(w), w.half_open)),
        )?;

        // xvs: the connection table as a whole.
        gauge(
            &mut enc,
            "xvs_conn_table_capacity",
            "Connection table capacity (--conn-max, ipvsadm's size=).",
            [(none(), s.status.conn_table_size)],
        )?;
        gauge(
            &mut enc,
            "xvs_conn_table_entries",
            "Connection entries: the workers' DR/TUN tables plus the shared NAT table.",
            [(
                none(),
                dp.workers.iter().map(|w| w.conns).sum::<u64>() + dp.nat_conns,
            )],
        )?;
        gauge(
            &mut enc,
            "xvs_conn_table_nat_entries",
            "Entries of the shared NAT connection table.",
            [(none(), dp.nat_conns)],
        )?;
        let drops_of = |reason: &str| -> u64 {
            dp.workers
                .iter()
                .flat_map(|w| w.drops.iter())
                .filter(|(r, _)| r == reason)
                .map(|(_, n)| *n)
                .sum()
        };
        counter(
            &mut enc,
            "xvs_conn_table_refused",
            "New connections refused: the table was full (table_full) or the service's \
             persistence templates were (template_full).",
            ["table_full", "template_full"].map(|r| (vec![("reason", r.to_string())], drops_of(r))),
        )?;
        counter(
            &mut enc,
            "xvs_conn_table_evicted",
            "Half-open entries evicted to make room for new connections.",
            [(none(), dp.workers.iter().map(|w| w.evicted).sum::<u64>())],
        )?;

        // xvs: the steering program.
        gauge(
            &mut enc,
            "xvs_xdp_info",
            "The XDP attach mode of the interfaces served.",
            [(
                vec![
                    ("interface", dp.interface.clone()),
                    ("mode", dp.xdp_mode.clone()),
                ],
                1u64,
            )],
        )?;
        let xdp: [(&str, &str, u64); 6] = [
            (
                "redirected",
                "Frames the XDP program redirected to the workers.",
                dp.xdp_redirected,
            ),
            (
                "passed",
                "Frames the XDP program passed to the kernel.",
                dp.xdp_passed,
            ),
            (
                "malformed",
                "Malformed frames the XDP program passed to the kernel.",
                dp.xdp_malformed,
            ),
            (
                "no_socket",
                "Service frames for a queue without a worker socket.",
                dp.xdp_no_socket,
            ),
            (
                "fragments",
                "IP fragments to a virtual service (passed, not balanced).",
                dp.xdp_fragments,
            ),
            (
                "held",
                "Service frames dropped while xvsd restarted (the restart hold).",
                dp.xdp_held,
            ),
        ];
        for (what, help, v) in xdp {
            counter(&mut enc, &format!("xvs_xdp_{what}"), help, [(none(), v)])?;
        }

        // xvs: connection sync. sync_parked is a level (entries waiting for a worker); the
        // others count events.
        for (name, v) in &dp.sync {
            if name == "sync_parked" {
                gauge(
                    &mut enc,
                    "xvs_sync_parked",
                    "Synced, restored or moved connections no worker has taken yet.",
                    [(none(), *v)],
                )?;
            } else {
                counter(
                    &mut enc,
                    &format!("xvs_{name}"),
                    sync_help(name),
                    [(none(), *v)],
                )?;
            }
        }
        // xvs: the XDP fast path. fast_path is a level (1: on); the others count.
        for (name, v) in &dp.fast {
            if name == "fast_path" {
                gauge(
                    &mut enc,
                    "xvs_fast_path",
                    "1 when the XDP fast path for established flows is on (xvsd without --no-fast-path).",
                    [(none(), *v)],
                )?;
            } else {
                counter(
                    &mut enc,
                    &format!("xvs_{name}"),
                    fast_help(name),
                    [(none(), *v)],
                )?;
            }
        }
        gauge(
            &mut enc,
            "xvs_sync_daemon_info",
            "A running connection-sync daemon (xvsadm -L --daemon).",
            s.daemons.iter().map(|d| {
                let l: Labels = vec![
                    ("role", d.role.name().to_string()),
                    ("mcast_interface", d.mcast_ifn.clone()),
                    ("syncid", d.syncid.to_string()),
                ];
                (l, 1u64)
            }),
        )?;
        Ok(())
    }
}

/// Help texts of the fast-path counters (`xvsadm --datapath`, `fast_*`).
fn fast_help(name: &str) -> &'static str {
    match name {
        "fast_packets" => "Packets the XDP fast path forwarded itself (established flows).",
        "fast_bytes" => "Bytes (IP length) the XDP fast path forwarded itself.",
        "fast_forwarded" => {
            "Frames the XDP program forwarded by the fast path (XDP_TX or redirect)."
        }
        "fast_punted" => {
            "Fast-path flow hits sent to the workers (SYN/FIN/RST, TTL, MTU, fragment)."
        }
        "fast_stale" => "Fast-path flow hits of an older server generation, sent to the workers.",
        "fast_installs" => "Connections installed in the fast path by the workers.",
        "fast_reinstalls" => {
            "Connections installed again after their entry was evicted or went stale."
        }
        "fast_install_failed" => {
            "Fast-path installs the kernel refused (the flow stays on the workers)."
        }
        "fast_removes" => "Connections removed from the fast path (FIN/RST, expiry, removal).",
        "fast_refreshed" => "Expiry checks re-armed by fast-path traffic (last-seen).",
        "fast_no_slot" => "Services or servers without a fast-path counter slot (not fast-pathed).",
        "fast_reinstall_deferred" => {
            "Reinstalls of evicted flows skipped for the per-millisecond budget (flow map thrashing)."
        }
        _ => "XDP fast-path counter (xvsadm --datapath).",
    }
}

/// Help texts of the sync counters (`SyncCounters::pairs`).
fn sync_help(name: &str) -> &'static str {
    match name {
        "sync_sent_msgs" => "Sync datagrams sent by the master (multicast and unicast each count).",
        "sync_sent_conns" => "Connection entries sent by the master.",
        "sync_recv_msgs" => "Sync datagrams received by the backup.",
        "sync_recv_conns" => "Connection entries decoded from received datagrams.",
        "sync_recv_malformed" => "Received sync datagrams (or their rest) dropped as malformed.",
        "sync_recv_foreign" => "Received sync datagrams of another sync group (syncid).",
        "sync_recv_skipped" => "Received entries skipped (IPv6, unknown protocol, bad state).",
        "sync_applied" => "Received entries applied to the tables.",
        "sync_refused" => "Received entries refused (no room, nothing to serve them with).",
        "sync_bulk_conns" => "Entries received by bulk sync.",
        "sync_send_dropped" => "Entries the workers could not queue for sending (queue full).",
        "sync_send_errors" => {
            "Sync datagrams whose send failed, and entries the format cannot carry."
        }
        _ => "Connection-sync counter (xvsadm --datapath).",
    }
}
