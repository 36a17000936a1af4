//! The status page at `/` (issue 12): every service with its real servers, forwarding
//! method, weight, health, connections and rates, and sparklines of the last 10 minutes;
//! plus `/api/history`, the rings behind the sparklines (`history.rs`).
//!
//! One self-contained HTML document (inline CSS and JS from `page/`, no external
//! resource, so it works on an air-gapped director). The server renders the tables, so
//! the page is readable without JavaScript; the script then refreshes them every 2 s from
//! `/api/status`, `/api/health` and the history's increments (`/page/history/SEQ`),
//! never faster, and not at all while the tab is hidden.

use super::history::{self, History, SeriesJson, POINTS};
use super::{HttpResponse, WebCtx};
use crate::model::{HealthRow, ServiceKey, ServiceStatus, Status};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::sync::{Arc, LazyLock, Mutex, Once};

const TEMPLATE: &str = include_str!("page/index.html");
const CSS: &str = include_str!("page/style.css");
const JS: &str = include_str!("page/app.js");

/// The history of this process. A static rather than a `WebCtx` field: a daemon has one
/// web listener, and the page's state stays in the page's files.
static HISTORY: LazyLock<Arc<Mutex<History>>> = LazyLock::new(Default::default);
static SAMPLER: Once = Once::new();

/// The page's answer for `path`, or `None` (the router then answers 404).
pub fn route(path: &str, ctx: &WebCtx) -> Option<HttpResponse> {
    // The router passes the path without its query; accept one anyway, should it come.
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    match path {
        "/" => {
            let st = status(ctx);
            let health = health(ctx);
            let hist = HISTORY.lock().unwrap_or_else(|e| e.into_inner()).json(0);
            let body = render_page(&hostname(), st.as_ref(), health.as_deref(), &hist);
            Some(no_cache(HttpResponse::new(
                200,
                "text/html; charset=utf-8",
                body,
            )))
        }
        "/api/history" => {
            let since = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("since="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            Some(history_response(since))
        }
        _ => {
            // `/page/history/SEQ`: the points after sample SEQ, the page's 2 s increment
            // (a path, because the router keeps the query string to itself).
            let seq = path.strip_prefix("/page/history/")?;
            Some(match seq.parse::<u64>() {
                Ok(since) => history_response(since),
                Err(_) => HttpResponse::text(400, format!("bad sample number: {seq:?}\n")),
            })
        }
    }
}

/// Starts the history sampler (once, however often it is called).
pub fn start(ctx: &WebCtx) {
    SAMPLER.call_once(|| {
        let ctx = ctx.clone();
        let hist = HISTORY.clone();
        if let Err(e) = history::start_sampler(hist, move || status(&ctx)) {
            tracing::warn!("status page: history sampler not started: {e}");
        }
    });
}

fn history_response(since: u64) -> HttpResponse {
    let j = HISTORY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .json(since);
    match serde_json::to_vec(&j) {
        Ok(body) => no_cache(HttpResponse::json(body)),
        Err(e) => HttpResponse::text(500, format!("encoding the history: {e}\n")),
    }
}

/// Live data: never served from a cache.
fn no_cache(mut r: HttpResponse) -> HttpResponse {
    r.headers
        .push(("Cache-Control".to_string(), "no-store".to_string()));
    r
}

fn status(ctx: &WebCtx) -> Option<Status> {
    ctx.state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .status(None)
        .ok()
}

fn health(ctx: &WebCtx) -> Option<Vec<HealthRow>> {
    ctx.view.health.as_ref().map(|e| {
        crate::daemon::kconf::health_rows(
            &e.lock().unwrap_or_else(|e| e.into_inner()),
            crate::clock::now_ms(),
        )
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A server's health cell: CSS class, text and tooltip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCell {
    pub class: &'static str,
    pub text: &'static str,
    pub title: String,
}

/// The health of real server `addr:port` of service `svc` from keepalived's checkers:
/// UP or DOWN as keepalived's "alive", the checkers in the tooltip; "—" without
/// `--config` or for a server no checker watches (one added with xvsadm).
pub fn health_cell(
    svc: &ServiceKey,
    addr: Ipv4Addr,
    port: u16,
    health: Option<&[HealthRow]>,
) -> HealthCell {
    let Some(rows) = health else {
        return HealthCell {
            class: "none",
            text: "—",
            title: "no health checks (xvsd runs without --config)".into(),
        };
    };
    let mine: Vec<&HealthRow> = rows
        .iter()
        .filter(|r| r.service == *svc && r.addr == addr && r.port == port)
        .collect();
    if mine.is_empty() {
        return HealthCell {
            class: "none",
            text: "—",
            title: "no checker watches this server".into(),
        };
    }
    let alive = mine.iter().all(|r| r.alive);
    let mut title = String::new();
    for r in &mine {
        let state = match (r.has_run, r.up) {
            (false, _) => "not run yet",
            (true, true) => "up",
            (true, false) => "down",
        };
        let _ = write!(
            title,
            "{} {} {state} for {} s",
            r.checker, r.target, r.since_secs
        );
        if r.failures > 0 {
            let _ = write!(title, ", {} failures", r.failures);
        }
        if let Some(e) = &r.last_error {
            let _ = write!(title, ", last error: {e}");
        }
        title.push('\n');
    }
    HealthCell {
        class: if alive { "up" } else { "down" },
        text: if alive { "UP" } else { "DOWN" },
        title: title.trim_end().to_string(),
    }
}

/// An inline SVG sparkline of `values` (oldest first) on the fixed 10-minute axis: one x
/// unit per sample, the newest at the right edge, missing history left blank. Integer x
/// and one decimal of y keep a full 300-point line near 2 KB.
pub fn sparkline(values: &[u64], label: &str) -> String {
    const W: usize = POINTS - 1;
    const H: f64 = 22.0;
    let n = values.len().min(POINTS);
    let values = &values[values.len() - n..];
    let max = values.iter().copied().max().unwrap_or(0);
    let now = values.last().copied().unwrap_or(0);
    let scale = if max == 0 {
        0.0
    } else {
        (H - 2.0) / max as f64
    };
    let mut pts = String::with_capacity(n * 8);
    for (i, v) in values.iter().enumerate() {
        let x = W - (n - 1 - i);
        let y = H - 1.0 - *v as f64 * scale;
        let _ = write!(pts, "{x},{y:.1} ");
    }
    format!(
        "<svg class=\"spark\" viewBox=\"0 0 {W} {H}\" preserveAspectRatio=\"none\"><title>{}</title><polyline points=\"{}\"/></svg>",
        escape(&format!(
            "{label}: now {now}, max {max} over the last {} s",
            n as u64 * history::INTERVAL.as_secs()
        )),
        pts.trim_end()
    )
}

fn series_for<'a>(
    hist: &'a [SeriesJson],
    svc: &str,
    server: Option<&str>,
) -> Option<&'a SeriesJson> {
    hist.iter()
        .find(|s| s.service == svc && s.server.as_deref() == server)
}

fn spark_cell(s: Option<&SeriesJson>) -> String {
    match s {
        Some(s) => {
            let v: Vec<u64> = s.cps.iter().map(|&x| x.into()).collect();
            format!(
                "<td class=\"graph\">{}</td>",
                sparkline(&v, "connections/s")
            )
        }
        None => "<td class=\"graph none\">no history</td>".to_string(),
    }
}

fn num(out: &mut String, v: u64) {
    let _ = write!(out, "<td class=\"num\">{v}</td>");
}

const HEAD: &str = "<thead><tr><th>Server</th><th class=\"fwd\">Forward</th><th>Weight</th>\
<th class=\"health\">Health</th><th>ActiveConn</th><th>InActConn</th><th>Conns</th><th>CPS</th>\
<th>InPPS</th><th>OutPPS</th><th>InBPS</th><th>OutBPS</th><th>InBytes</th><th>OutBytes</th>\
<th>last 10 min</th></tr></thead>";

/// The scheduler and persistence of a service, as the section heading shows them.
pub fn service_meta(s: &ServiceStatus) -> String {
    let mut m = s.opts.scheduler.clone();
    if !s.opts.sched_flags.is_empty() {
        let _ = write!(m, " ({})", s.opts.sched_flags.join(","));
    }
    if let Some(p) = s.opts.persistent {
        let _ = write!(m, " · persistent {p} s");
        if let Some(mask) = s.opts.netmask {
            let _ = write!(m, " mask {mask}");
        }
    }
    m
}

/// One service's section: heading, totals row, a row per real server (and, with
/// keepalived, a greyed row per checked server that is out of the pool).
pub fn render_service(
    out: &mut String,
    s: &ServiceStatus,
    health: Option<&[HealthRow]>,
    hist: &[SeriesJson],
) {
    let name = history::service_name(s);
    let _ = write!(
        out,
        "<section class=\"svc\" data-service=\"{n}\"><h2>{n}<span class=\"meta\">{m}</span></h2><table>{HEAD}<tbody>",
        n = escape(&name),
        m = escape(&service_meta(s)),
    );
    let (act, inact, weight) = s.dests.iter().fold((0u64, 0u64, 0u64), |a, d| {
        (
            a.0 + u64::from(d.active_conns),
            a.1 + u64::from(d.inactive_conns),
            a.2 + u64::from(d.weight),
        )
    });
    let up = s
        .dests
        .iter()
        .filter(|d| health_cell(&s.key, d.addr, d.port, health).class != "down")
        .count();
    let _ = write!(
        out,
        "<tr class=\"total\"><td>service</td><td class=\"fwd\"></td><td class=\"num\">{weight}</td><td class=\"health\">{up}/{} in pool</td>",
        s.dests.len()
    );
    for v in [
        act,
        inact,
        s.counters.conns,
        s.rates.cps,
        s.rates.inpps,
        s.rates.outpps,
    ] {
        num(out, v);
    }
    for v in [
        s.rates.inbps,
        s.rates.outbps,
        s.counters.inbytes,
        s.counters.outbytes,
    ] {
        num(out, v);
    }
    out.push_str(&spark_cell(series_for(hist, &name, None)));
    out.push_str("</tr>");
    for d in &s.dests {
        let server = format!("{}:{}", d.addr, d.port);
        let h = health_cell(&s.key, d.addr, d.port, health);
        let _ = write!(
            out,
            "<tr data-server=\"{sv}\"><td>{sv}</td><td class=\"fwd\">{}</td><td class=\"num\">{}</td><td class=\"health {}\" title=\"{}\">{}</td>",
            d.forward.list_name(),
            d.weight,
            h.class,
            escape(&h.title),
            h.text,
            sv = escape(&server),
        );
        for v in [
            d.active_conns.into(),
            d.inactive_conns.into(),
            d.counters.conns,
            d.rates.cps,
            d.rates.inpps,
            d.rates.outpps,
            d.rates.inbps,
            d.rates.outbps,
            d.counters.inbytes,
            d.counters.outbytes,
        ] {
            num(out, v);
        }
        out.push_str(&spark_cell(series_for(hist, &name, Some(&server))));
        out.push_str("</tr>");
    }
    // keepalived takes a failed server out of IPVS (unless inhibit_on_failure): show it
    // anyway, the operator is looking for exactly that one.
    let mut shown: Vec<(Ipv4Addr, u16)> = s.dests.iter().map(|d| (d.addr, d.port)).collect();
    for r in health.unwrap_or_default() {
        if r.service != s.key || shown.contains(&(r.addr, r.port)) {
            continue;
        }
        shown.push((r.addr, r.port));
        let h = health_cell(&s.key, r.addr, r.port, health);
        let _ = write!(
            out,
            "<tr class=\"out\" data-server=\"{sv}\"><td>{sv}</td><td class=\"fwd\">out of pool</td><td class=\"num\">—</td><td class=\"health {}\" title=\"{}\">{}</td><td colspan=\"11\"></td></tr>",
            h.class,
            escape(&h.title),
            h.text,
            sv = escape(&format!("{}:{}", r.addr, r.port)),
        );
    }
    out.push_str("</tbody></table></section>\n");
}

/// The whole page. `st` is `None` when the status could not be read.
pub fn render_page(
    host: &str,
    st: Option<&Status>,
    health: Option<&[HealthRow]>,
    hist: &history::HistoryJson,
) -> String {
    let mut body = String::new();
    match st {
        None => body.push_str("<p class=\"empty\">The daemon's status could not be read.</p>"),
        Some(st) if st.services.is_empty() => body.push_str(
            "<p class=\"empty\">No virtual services (add one with <code>xvsadm -A</code>).</p>",
        ),
        Some(st) => {
            for s in &st.services {
                render_service(&mut body, s, health, &hist.series);
            }
        }
    }
    // Substituted in this order so that nothing inserted is scanned for placeholders again
    // (the script and body come last and are never searched).
    let host = escape(host);
    let (head, rest) = TEMPLATE.split_once("{{BODY}}").unwrap_or((TEMPLATE, ""));
    let head = head
        .replace("{{HOST}}", &host)
        .replace("{{GENERATED}}", "server-rendered")
        .replace("{{CSS}}", CSS);
    let (mid, tail) = rest.split_once("{{JS}}").unwrap_or((rest, ""));
    let mut page = String::with_capacity(head.len() + body.len() + JS.len() + 512);
    page.push_str(&head);
    page.push_str(&body);
    page.push_str(mid);
    page.push_str(JS);
    page.push_str(tail);
    page
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        Counters, DestStatus, Forward, Protocol, Rates, ServiceKey, ServiceOpts, Timeouts,
    };

    fn key() -> ServiceKey {
        ServiceKey {
            proto: Protocol::Tcp,
            addr: Ipv4Addr::new(10, 0, 0, 88),
            port: 80,
        }
    }

    fn dest(last: u8, forward: Forward, weight: u32) -> DestStatus {
        DestStatus {
            addr: Ipv4Addr::new(10, 0, 0, last),
            port: 8080,
            forward,
            weight,
            u_threshold: 0,
            l_threshold: 0,
            active_conns: 3,
            inactive_conns: 4,
            persist_conns: 0,
            counters: Counters {
                conns: 77,
                ..Counters::default()
            },
            rates: Rates {
                cps: 5,
                ..Rates::default()
            },
        }
    }

    fn status() -> Status {
        Status {
            conn_table_size: 1 << 20,
            timeouts: Timeouts::default(),
            services: vec![ServiceStatus {
                key: key(),
                opts: ServiceOpts {
                    scheduler: "wrr".into(),
                    persistent: Some(300),
                    ..ServiceOpts::default()
                },
                counters: Counters::default(),
                rates: Rates::default(),
                dests: vec![dest(9, Forward::Route, 2), dest(10, Forward::Masq, 5)],
            }],
        }
    }

    fn row(last: u8, alive: bool, err: Option<&str>) -> HealthRow {
        HealthRow {
            service: key(),
            group: String::new(),
            addr: Ipv4Addr::new(10, 0, 0, last),
            port: 8080,
            alive,
            checker: "HTTP_GET".into(),
            target: format!("10.0.0.{last}:8080"),
            up: alive,
            has_run: true,
            failures: if alive { 0 } else { 3 },
            last_error: err.map(String::from),
            since_secs: 12,
            last_latency_ms: None,
            checks: 9,
        }
    }

    #[test]
    fn escape_covers_the_five_characters() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(escape("10.0.0.9:80 — ok"), "10.0.0.9:80 — ok");
    }

    #[test]
    fn page_shows_services_servers_methods_and_weights() {
        let mut h = History::new();
        h.record(&status());
        let page = render_page("dir<1>", Some(&status()), None, &h.json(0));
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.contains("<section class=\"svc\" data-service=\"TCP 10.0.0.88:80\">"));
        assert!(page.contains("wrr · persistent 300 s"));
        assert!(
            page.contains(
                "<td>10.0.0.9:8080</td><td class=\"fwd\">Route</td><td class=\"num\">2</td>"
            ),
            "{page}"
        );
        assert!(page.contains(
            "<td>10.0.0.10:8080</td><td class=\"fwd\">Masq</td><td class=\"num\">5</td>"
        ));
        // Totals: weight 7, active 6, inactive 8.
        assert!(page.contains("<td class=\"num\">7</td><td class=\"health\">2/2 in pool</td><td class=\"num\">6</td><td class=\"num\">8</td>"), "{page}");
        assert!(page.contains("<svg class=\"spark\""));
        assert!(page.contains("dir&lt;1&gt;") && !page.contains("dir<1>"));
        // Self-contained: nothing loaded from anywhere.
        for bad in ["<link", "src=\"http", "src='http", "@import", "url(http"] {
            assert!(!page.contains(bad), "external resource: {bad}");
        }
        assert!(!page.contains("{{"), "placeholder left");
    }

    #[test]
    fn health_from_keepalived_checkers_escaped_and_out_of_pool_rows() {
        let mut st = status();
        st.services[0].dests.pop(); // keepalived removed the failed .10
        let rows = vec![
            row(9, true, None),
            row(10, false, Some("<script>alert(1)</script> HTTP 500")),
        ];
        let page = render_page("d", Some(&st), Some(&rows), &History::new().json(0));
        assert!(page.contains("class=\"health up\""));
        assert!(
            page.contains("<tr class=\"out\" data-server=\"10.0.0.10:8080\">"),
            "{page}"
        );
        assert!(page.contains("class=\"health down\""));
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt; HTTP 500"));
        assert!(!page.contains("<script>alert(1)"));
        assert!(page.contains("no history"));
    }

    #[test]
    fn health_cell_without_config_or_checker() {
        let c = health_cell(&key(), Ipv4Addr::new(10, 0, 0, 9), 8080, None);
        assert_eq!((c.class, c.text), ("none", "—"));
        let rows = vec![row(10, true, None)];
        let c = health_cell(&key(), Ipv4Addr::new(10, 0, 0, 9), 8080, Some(&rows));
        assert_eq!(c.title, "no checker watches this server");
        let c = health_cell(&key(), Ipv4Addr::new(10, 0, 0, 10), 8080, Some(&rows));
        assert_eq!((c.class, c.text), ("up", "UP"));
        assert!(
            c.title.starts_with("HTTP_GET 10.0.0.10:8080 up for 12 s"),
            "{}",
            c.title
        );
    }

    #[test]
    fn empty_and_unreadable_status() {
        let h = History::new().json(0);
        assert!(render_page("d", None, None, &h).contains("could not be read"));
        let mut st = status();
        st.services.clear();
        assert!(render_page("d", Some(&st), None, &h).contains("No virtual services"));
    }

    #[test]
    fn sparkline_scales_to_the_max_and_ends_at_the_right_edge() {
        let s = sparkline(&[0, 5, 10], "cps");
        assert!(s.contains("points=\"297,21.0 298,11.0 299,1.0\""), "{s}");
        assert!(
            s.contains("<title>cps: now 10, max 10 over the last 6 s</title>"),
            "{s}"
        );
        // All zero: a flat line at the bottom, no division by zero.
        let z = sparkline(&[0, 0], "cps");
        assert!(z.contains("points=\"298,21.0 299,21.0\""), "{z}");
        assert!(sparkline(&[], "cps").contains("<polyline points=\"\"/>"));
    }
}
