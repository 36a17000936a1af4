//! The report of `scripts/bench.sh`: reads the JSON lines the run recorded (one per
//! measurement, tagged with `row` and `round`), prints the table and writes it into its own
//! section of `docs/benchmarks.md`, between markers, leaving the rest of the file alone.
//!
//! Every rate is quoted as median and min–max over the rounds. Ratios against a reference
//! row are computed per round (both measured within minutes of each other, in the same VM
//! mode; see docs) and their median is compared with the target.

use super::stats::{self, Spread};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;

pub const BEGIN: &str = "<!-- bench.sh:begin -->";
pub const END: &str = "<!-- bench.sh:end -->";
pub const HEADING: &str = "## Forwarding (scripts/bench.sh)";

/// Rows in table order: id, what is measured, unit of `pps` (frames or connections).
const ROWS: &[(&str, &str, &str)] = &[
    (
        "reflect",
        "xvs reflect: AF_XDP receive and send back, no load balancing",
        "Mpps",
    ),
    (
        "xdptx",
        "in-kernel XDP_TX MAC rewrite (bpf/bench_xdp_tx.bpf.c): this machine's ceiling",
        "Mpps",
    ),
    ("dr", "DR, 4 real servers, rr", "Mpps"),
    (
        "dr_slow",
        "DR, --no-fast-path (AF_XDP slow path only)",
        "Mpps",
    ),
    (
        "health",
        "DR as above, while xvsd health-checks 1000 dead real servers every second",
        "Mpps",
    ),
    ("nat", "NAT two-armed, 4 real servers, rr", "Mpps"),
    ("tun", "TUN (IPIP), 4 real servers, rr", "Mpps"),
    (
        "new",
        "DR, new connections: every frame a TCP SYN of a new flow",
        "M conn/s",
    ),
    (
        "new_slow",
        "DR, new connections, --no-fast-path",
        "M conn/s",
    ),
    (
        "nft",
        "Linux nftables DNAT `numgen inc mod 4` (kernel forwarding)",
        "Mpps",
    ),
    ("mq1", "DR, 2 generator CPUs, 1 queue / 1 worker", "Mpps"),
    ("mq2", "DR, 2 generator CPUs, 2 queues / 2 workers", "Mpps"),
    ("c1k", "DR, 1k live connections", "Mpps"),
    ("c10m", "DR, 10M live connections", "Mpps"),
    (
        "mix",
        "DR, TCP, 20% new flows / 80% established (every 5th frame a SYN of a new flow)",
        "Mpps",
    ),
];

/// (row, reference row, minimum ratio, how the target reads): issue 11's targets first,
/// then the older ones that still say something. A minimum of 0 means "reported, no target".
const TARGETS: &[(&str, &str, f64, &str)] = &[
    (
        "dr",
        "xdptx",
        0.80,
        "DR established ≥ 0.8× the in-kernel XDP_TX reference",
    ),
    ("dr", "nft", 3.0, "DR established ≥ 3× nftables DNAT"),
    ("tun", "nft", 2.0, "TUN established ≥ 2× nftables DNAT"),
    (
        "nat",
        "nft",
        2.0,
        "NAT (two-armed) established ≥ 2× nftables DNAT",
    ),
    (
        "new",
        "reflect",
        0.80,
        "new conn/s (every frame a SYN) ≥ 0.8× the AF_XDP reflect rate",
    ),
    (
        "new_slow",
        "reflect",
        0.80,
        "the same with --no-fast-path (new_slow ≥ 0.8× reflect)",
    ),
    (
        "mix",
        "dr_slow",
        MIX_VS_SLOW_DR,
        "20% new flows / 80% established (mix) ≥ 1.5× the slow-path DR rate (dr_slow, same round; \
         the issue's \"today's DR figure\" was the slow path's 0.32 Mpps)",
    ),
    ("mix", "dr", 0.0, "mix vs DR established (no target)"),
    (
        "mq2",
        "mq1",
        1.8,
        "2 queues / 2 workers ≥ 1.8× one (mq2 vs mq1)",
    ),
    (
        "c10m",
        "c1k",
        0.75,
        "established rate with 10M live connections within 25% of 1k (c10m ≥ 0.75× c1k)",
    ),
    (
        "health",
        "dr",
        0.95,
        "a health-check storm costs forwarding < 5% (health ≥ 95% of dr)",
    ),
    (
        "reflect",
        "xdptx",
        0.0,
        "reflect (AF_XDP copy mode) vs the in-kernel XDP_TX reference (no target)",
    ),
];

/// mix ≥ this × dr_slow (issue 11: "≥ 1.5 x today's DR figure", the slow path's then).
const MIX_VS_SLOW_DR: f64 = 1.5;
/// The issue's "today's DR figure" in packets/s (slow-path DR when the issue was filed),
/// for the absolute comparison of the mix row (reported: another VM phase, another day).
const ISSUE_DR_PPS: f64 = 0.32e6;
/// Flat out ≥ this × the best rate, in every row (no receive livelock).
const FLAT_MIN: f64 = 0.9;
/// Added latency p99 through the director at most this (µs).
const LAT_P99_MAX_US: f64 = 20.0;
/// Memory of xvsd (resident) plus its BPF maps with 10M live connections, at most this.
const MEM_MAX_BYTES: f64 = 2.0 * 1024.0 * 1024.0 * 1024.0;
/// Live connections the memory target is about.
const MEM_ENTRIES: u64 = 10_000_000;

/// All recorded lines, grouped.
#[derive(Debug, Default)]
pub struct Results {
    pub meta: Option<Value>,
    /// row → round → line (kind "rate").
    pub rates: BTreeMap<String, BTreeMap<u32, Value>>,
    pub loss: Vec<Value>,
    /// row → lines (kind "latency").
    pub latency: BTreeMap<String, Vec<Value>>,
    pub conns: Vec<Value>,
    pub notes: Vec<String>,
}

fn round_of(v: &Value) -> u32 {
    v["round"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v["round"].as_u64().map(|x| x as u32))
        .unwrap_or(0)
}

/// Parses JSON lines; lines that are not JSON objects are reported in `notes` and skipped.
pub fn parse(text: &str) -> Results {
    let mut r = Results::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let v: Value = match serde_json::from_str(line) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                r.notes
                    .push(format!("line {}: not a JSON object, skipped", i + 1));
                continue;
            }
        };
        let row = v["row"].as_str().unwrap_or("").to_string();
        match v["kind"].as_str().unwrap_or("") {
            "meta" => r.meta = Some(v),
            "rate" => {
                r.rates.entry(row).or_default().insert(round_of(&v), v);
            }
            "loss" => r.loss.push(v),
            "latency" => r.latency.entry(row).or_default().push(v),
            "conns" => r.conns.push(v),
            "note" => r
                .notes
                .push(v["text"].as_str().unwrap_or_default().to_string()),
            _ => r
                .notes
                .push(format!("line {}: unknown kind, skipped", i + 1)),
        }
    }
    r
}

fn field(rows: &BTreeMap<u32, Value>, f: &str) -> Vec<f64> {
    rows.values().filter_map(|v| v[f].as_f64()).collect()
}

/// Other load (busy CPUs besides the director and the benchmark) above which a measurement
/// window counts as skewed.
pub const FOREIGN_MAX: f64 = 0.15;

/// Rounds (> 0) in which some rate window saw other load on the machine.
pub fn dirty_rounds(r: &Results) -> Vec<u32> {
    let mut v: Vec<u32> = r
        .rates
        .values()
        .flat_map(|rows| rows.iter())
        .filter(|(round, l)| {
            **round > 0
                && l["foreign_busy_max"]
                    .as_f64()
                    .or_else(|| l["foreign_busy"].as_f64())
                    .is_some_and(|f| f > FOREIGN_MAX)
        })
        .map(|(round, _)| *round)
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Drops the given rounds from every row (rate, loss and latency lines).
pub fn without_rounds(r: &Results, drop: &[u32]) -> Results {
    let keep = |v: &Value| !drop.contains(&round_of(v));
    Results {
        meta: r.meta.clone(),
        rates: r
            .rates
            .iter()
            .map(|(k, rows)| {
                (
                    k.clone(),
                    rows.iter()
                        .filter(|(round, _)| !drop.contains(round))
                        .map(|(a, b)| (*a, b.clone()))
                        .collect(),
                )
            })
            .collect(),
        loss: r.loss.iter().filter(|v| keep(v)).cloned().collect(),
        latency: r
            .latency
            .iter()
            .map(|(k, v)| (k.clone(), v.iter().filter(|x| keep(x)).cloned().collect()))
            .collect(),
        conns: r.conns.clone(),
        notes: r.notes.clone(),
    }
}

/// Per-round ratios row/base over the rounds both have.
pub fn ratios(r: &Results, row: &str, base: &str) -> Vec<f64> {
    let (Some(a), Some(b)) = (r.rates.get(row), r.rates.get(base)) else {
        return Vec::new();
    };
    a.iter()
        .filter_map(|(round, v)| {
            let x = v["pps"].as_f64()?;
            let y = b.get(round)?["pps"].as_f64()?;
            (y > 0.0).then_some(x / y)
        })
        .collect()
}

fn met(ok: bool) -> &'static str {
    if ok {
        "**met**"
    } else {
        "**not met**"
    }
}

fn fmt_spread(s: &Spread, scale: f64, prec: usize) -> String {
    if s.n == 1 {
        format!("{:.prec$}", s.median / scale)
    } else {
        format!(
            "{:.prec$} ({:.prec$}–{:.prec$})",
            s.median / scale,
            s.min / scale,
            s.max / scale
        )
    }
}

/// Share of each destination in a row's last round, e.g. "25/25/25/25 %".
fn distribution(v: &Value) -> String {
    let Some(keys) = v["per_key"].as_array() else {
        return String::new();
    };
    let total: f64 = keys
        .iter()
        .filter(|k| k["kind"] != "other")
        .filter_map(|k| k["packets"].as_f64())
        .sum();
    if total <= 0.0 || keys.len() < 2 {
        return String::new();
    }
    let mut shares: Vec<(String, f64)> = keys
        .iter()
        .filter(|k| k["kind"] != "other")
        .map(|k| {
            (
                format!(
                    "{}/{}",
                    k["mac"].as_str().unwrap_or("?"),
                    k["daddr"].as_str().unwrap_or("?")
                ),
                k["packets"].as_f64().unwrap_or(0.0) * 100.0 / total,
            )
        })
        .collect();
    shares.sort_by(|a, b| a.0.cmp(&b.0));
    shares
        .iter()
        .map(|(_, s)| format!("{s:.1}"))
        .collect::<Vec<_>>()
        .join("/")
        + " %"
}

/// The section body (between the markers): machine, table, targets, latency, notes.
/// Rounds skewed by other load are left out when at least two clean rounds remain.
pub fn render(all: &Results) -> String {
    let dirty = dirty_rounds(all);
    let rounds: Vec<u32> = {
        let mut v: Vec<u32> = all
            .rates
            .values()
            .flat_map(|rows| rows.keys().copied())
            .filter(|&x| x > 0)
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let clean = rounds.iter().filter(|x| !dirty.contains(x)).count();
    let filtered;
    let r = if !dirty.is_empty() && clean >= 2 {
        filtered = without_rounds(all, &dirty);
        &filtered
    } else {
        all
    };
    let mut s = String::new();
    let meta = r.meta.clone().unwrap_or(Value::Null);
    let m = |k: &str| meta[k].as_str().unwrap_or("?").to_string();
    let _ = writeln!(
        s,
        "Machine: {} ({} CPUs), kernel {}; {} run of {}, commit {}, {} round(s) per row, \
         interleaved. Frames of {} bytes (FCS included), UDP unless noted, {} flows.",
        m("cpu_model"),
        m("nproc"),
        m("kernel"),
        m("mode"),
        m("date"),
        m("commit"),
        m("rounds"),
        m("size"),
        m("flows")
    );
    let _ = writeln!(s);
    s += "How it is measured (details in the header of `scripts/bench.sh`):\n\
\n\
- Topology (`scripts/bench-topo.sh`): generator namespace `g0` ↔ director `eth0` (and `eth1` ↔ \
sink namespace `s0` for two-armed NAT), veth pairs, no bridge; threaded NAPI everywhere. \
The generator (`xvs-bench gen`: `BPF_PROG_RUN` with live frames) runs on CPU 1, xvsd's \
worker and the director's NAPI kthreads on CPU 0. Real servers are permanent neighbour \
entries: forwarded frames come back to `g0`/`s0`, where an XDP sink counts them per \
destination MAC and address.\n\
- Rate: `xvs-bench peak` sends flat out for one window, then searches the offered rate \
(1.5× steps up, then bisection) and quotes the highest forwarded rate of any window. \
\"Flat out\" is what the director forwards under overload (the generator offers 5+ Mpps): \
for an AF_XDP forwarder whose NAPI shares its core, less than its peak (receive livelock).\n\
- CPU ns/packet: CPU time of xvsd's threads plus the director's NAPI kthreads (and \
ksoftirqd on its CPU) over the window, divided by the packets forwarded in it: the whole \
director, kernel receive and transmit included. For nftables it is the NAPI kthread, which \
does all of the kernel's forwarding.\n\
- The VM alternates between fast and slow phases (cross-CPU wake-ups cost more in the slow \
one): every row runs once per round, rounds are interleaved, ratios are taken within a \
round. Rows `mq1`/`mq2` run a generator thread on each CPU (sharing the CPUs with the \
director); `mq2` has two queues and two workers.\n";
    if !dirty.is_empty() {
        let which = dirty
            .iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        if clean >= 2 {
            let _ = writeln!(
                s,
                "\nRound(s) {which} had other load on the machine (more than {FOREIGN_MAX} CPU \
                 besides the director and the benchmark) and are left out: {clean} clean round(s)."
            );
        } else {
            let _ = writeln!(
                s,
                "\n**Skewed:** round(s) {which} had other load on the machine (more than \
                 {FOREIGN_MAX} CPU besides the director and the benchmark) and fewer than two \
                 rounds were clean; all rounds are shown."
            );
        }
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| row | what | peak rate: median (min–max) | director CPU ns/packet at the peak (medians: NAPI kthreads + xvsd threads) | flat out (overload) | spread over real servers |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    let mut ids: Vec<String> = ROWS.iter().map(|x| x.0.to_string()).collect();
    for k in r.rates.keys() {
        if !ids.contains(k) {
            ids.push(k.clone());
        }
    }
    for id in &ids {
        let Some(rows) = r.rates.get(id) else {
            continue;
        };
        let (what, unit) = ROWS
            .iter()
            .find(|x| x.0 == id)
            .map(|x| (x.1.to_string(), x.2))
            .unwrap_or((id.clone(), "Mpps"));
        let what = rows
            .values()
            .find_map(|v| v["desc"].as_str().map(str::to_string))
            .unwrap_or(what);
        let rate = stats::spread(&field(rows, "pps"))
            .map(|x| format!("{} {unit}", fmt_spread(&x, 1e6, 3)))
            .unwrap_or_else(|| "–".into());
        let ns = stats::spread(&field(rows, "ns_per_pkt"))
            .map(|x| fmt_spread(&x, 1.0, 0))
            .unwrap_or_else(|| "–".into());
        // Where it goes: the NAPI kthreads (kernel receive, XDP) vs the rest (xvsd).
        let split = |napi: bool| -> Vec<f64> {
            rows.values()
                .filter_map(|v| {
                    let pk = v["packets"].as_f64().filter(|&p| p > 0.0)?;
                    let ns: f64 = v["cpu"]
                        .as_array()?
                        .iter()
                        .filter(|t| t["name"].as_str().unwrap_or("").starts_with("napi/") == napi)
                        .filter_map(|t| t["ns"].as_f64())
                        .sum();
                    Some(ns / pk)
                })
                .collect()
        };
        let ns = match (stats::median(&split(true)), stats::median(&split(false))) {
            (Some(k), Some(u)) if u >= 1.0 => format!("{ns}: NAPI {k:.0} + xvsd {u:.0}"),
            (Some(k), _) => format!("{ns}: NAPI {k:.0}"),
            _ => ns,
        };
        // Flat out against the same round's peak: 0.9× or more means no receive livelock.
        let flat_ratio: Vec<f64> = rows
            .values()
            .filter_map(|v| {
                let (f, p) = (v["flat_pps"].as_f64()?, v["pps"].as_f64()?);
                (p > 0.0).then_some(f / p)
            })
            .collect();
        let flat = stats::spread(&field(rows, "flat_pps"))
            .map(|x| {
                let ratio = stats::median(&flat_ratio)
                    .map(|q| format!(" ({q:.2}× peak)"))
                    .unwrap_or_default();
                format!("{} {unit}{ratio}", fmt_spread(&x, 1e6, 3))
            })
            .unwrap_or_else(|| "–".into());
        let dist = rows.values().last().map(distribution).unwrap_or_default();
        let _ = writeln!(s, "| {id} | {what} | {rate} | {ns} | {flat} | {dist} |");
    }
    if !r.loss.is_empty() {
        let get = |f: &str| -> Vec<f64> { r.loss.iter().filter_map(|l| l[f].as_f64()).collect() };
        let (offered, lost) = (get("offered_pps"), get("loss_pct"));
        let (sent, recv): (u64, u64) = r.loss.iter().fold((0, 0), |(a, b), l| {
            (
                a + l["sent"].as_u64().unwrap_or(0),
                b + l["received"].as_u64().unwrap_or(0),
            )
        });
        let pct = r.loss[0]["percent_of_dr"].as_u64().unwrap_or(50);
        let _ = writeln!(
            s,
            "| loss | DR at a fixed offered rate, {pct}% of the round's DR peak ({} Mpps): \
             {sent} frames sent, {recv} arrived, over all rounds | {} % lost | – | – | |",
            stats::spread(&offered).map_or("–".into(), |x| fmt_spread(&x, 1e6, 3)),
            stats::spread(&lost).map_or("–".into(), |x| fmt_spread(&x, 1.0, 3)),
        );
    }
    let _ = writeln!(s);

    // Targets.
    let mut t = String::new();
    for (row, base, min, text) in TARGETS {
        let v = ratios(r, row, base);
        let Some(sp) = stats::spread(&v) else {
            continue;
        };
        let verdict = if *min <= 0.0 {
            "reported"
        } else {
            met(sp.median >= *min)
        };
        let _ = writeln!(t, "| {text} | {}× | {verdict} |", fmt_spread(&sp, 1.0, 2));
    }
    // The mix row against the issue's absolute figure (another day, another VM phase).
    if let Some(sp) = r
        .rates
        .get("mix")
        .and_then(|m| stats::spread(&field(m, "pps")))
    {
        let _ = writeln!(
            t,
            "| mix vs the issue's {:.2} Mpps (absolute: another day, another VM phase; no target) | {:.2}× ({} Mpps) | reported |",
            ISSUE_DR_PPS / 1e6,
            sp.median / ISSUE_DR_PPS,
            fmt_spread(&sp, 1e6, 3)
        );
    }
    // Flat out against the best rate, row by row: the worst row's median decides.
    let flat: Vec<(String, f64)> = r
        .rates
        .iter()
        .filter_map(|(id, rows)| {
            let q: Vec<f64> = rows
                .values()
                .filter_map(|v| {
                    let (f, p) = (v["flat_pps"].as_f64()?, v["pps"].as_f64()?);
                    (p > 0.0).then_some(f / p)
                })
                .collect();
            Some((id.clone(), stats::median(&q)?))
        })
        .collect();
    if let Some((worst, q)) = flat
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(id, q)| (id.clone(), *q))
    {
        let below: Vec<&str> = flat
            .iter()
            .filter(|x| x.1 < FLAT_MIN)
            .map(|x| x.0.as_str())
            .collect();
        let which = if below.is_empty() {
            String::new()
        } else {
            format!("; below {FLAT_MIN}: {}", below.join(", "))
        };
        let _ = writeln!(
            t,
            "| flat out ≥ {FLAT_MIN}× the best rate in every row (median per row; worst row shown) | {q:.2}× ({worst}{which}) | {} |",
            met(q >= FLAT_MIN)
        );
    }
    // Added latency p99 (the lat row's via − direct, medians over rounds).
    let p99 = |row: &str| -> Option<f64> {
        let v: Vec<f64> = r
            .latency
            .get(row)?
            .iter()
            .filter_map(|x| x["p99_us"].as_f64())
            .collect();
        stats::median(&v)
    };
    if let (Some(d), Some(v)) = (p99("lat_direct"), p99("lat_via")) {
        let added = v - d;
        let _ = writeln!(
            t,
            "| latency p99 added by the director (lat row, DR) ≤ {LAT_P99_MAX_US:.0} µs | {added:.1} µs | {} |",
            met(added <= LAT_P99_MAX_US)
        );
    }
    // Memory with 10M live connections: xvsd's resident set plus its BPF maps.
    for c in &r.conns {
        let entries = c["entries"].as_u64().unwrap_or(0);
        let rss = c["rss_after_kb"].as_f64().unwrap_or(0.0) * 1024.0;
        let Some(bpf) = c["bpf_map_bytes"].as_f64() else {
            continue;
        };
        let total = rss + bpf;
        let gib = |b: f64| b / (1024.0 * 1024.0 * 1024.0);
        let short = if entries < MEM_ENTRIES {
            format!(" (only {entries} entries reached: not the target's 10M)")
        } else {
            String::new()
        };
        let _ = writeln!(
            t,
            "| 10M live connections: xvsd resident + BPF maps ≤ 2 GiB | {:.2} GiB = {:.2} RSS + {:.2} BPF{short} | {} |",
            gib(total),
            gib(rss),
            gib(bpf),
            if entries < MEM_ENTRIES {
                "not measured"
            } else {
                met(total <= MEM_MAX_BYTES)
            }
        );
    }
    if !t.is_empty() {
        let _ = writeln!(
            s,
            "| target | ratio: median of per-round ratios (min–max) | |"
        );
        let _ = writeln!(s, "|---|---|---|");
        s += &t;
        let _ = writeln!(s);
    }

    // Latency.
    let lat = |row: &str, f: &str| -> Vec<f64> {
        r.latency
            .get(row)
            .map(|v| v.iter().filter_map(|x| x[f].as_f64()).collect())
            .unwrap_or_default()
    };
    let (d50, d99, v50, v99) = (
        lat("lat_direct", "p50_us"),
        lat("lat_direct", "p99_us"),
        lat("lat_via", "p50_us"),
        lat("lat_via", "p99_us"),
    );
    if !d50.is_empty() || !v50.is_empty() {
        let med = |v: &[f64]| stats::median(v).unwrap_or(f64::NAN);
        let _ = writeln!(
            s,
            "| UDP request/response RTT (µs, median over rounds) | p50 | p99 |"
        );
        let _ = writeln!(s, "|---|---|---|");
        let _ = writeln!(
            s,
            "| direct to a real server | {:.1} | {:.1} |",
            med(&d50),
            med(&d99)
        );
        let _ = writeln!(
            s,
            "| through the director (DR) | {:.1} | {:.1} |",
            med(&v50),
            med(&v99)
        );
        let _ = writeln!(
            s,
            "| added by the director | {:.1} | {:.1} |",
            med(&v50) - med(&d50),
            med(&v99) - med(&d99)
        );
        let _ = writeln!(s);
    }

    for c in &r.conns {
        let _ = writeln!(
            s,
            "Connection table: {} live entries; xvsd resident memory grew by {:.0} bytes per \
             entry ({} → {} KiB); its BPF maps (`memlock` of every map fd xvsd holds, the \
             fast path's flow map included) {}.",
            c["entries"].as_u64().unwrap_or(0),
            c["bytes_per_entry"].as_f64().unwrap_or(f64::NAN),
            c["rss_before_kb"].as_u64().unwrap_or(0),
            c["rss_after_kb"].as_u64().unwrap_or(0),
            c["bpf_map_bytes"]
                .as_f64()
                .map_or("not recorded".to_string(), |b| {
                    let largest = c["bpf_largest_map"].as_str().unwrap_or("?");
                    format!("{:.0} MiB (largest: {largest})", b / (1024.0 * 1024.0))
                }),
        );
        let _ = writeln!(s);
    }
    for n in &r.notes {
        let _ = writeln!(s, "- {n}");
    }
    if !r.notes.is_empty() {
        let _ = writeln!(s);
    }
    s
}

/// Replaces (or appends) the bench.sh section of a benchmarks document, leaving every
/// other section as it is: between the markers when they are there; else the section under
/// `HEADING` (up to the next `## ` heading), e.g. a placeholder; else a new section at the end.
pub fn splice(doc: &str, body: &str) -> String {
    let block = format!("{BEGIN}\n{}{END}", body.trim_end().to_string() + "\n");
    if let (Some(b), Some(e)) = (doc.find(BEGIN), doc.find(END)) {
        if b < e {
            return format!("{}{}{}", &doc[..b], block, &doc[e + END.len()..]);
        }
    }
    let heading_at = doc.match_indices(HEADING).map(|(i, _)| i).find(|&i| {
        (i == 0 || doc[..i].ends_with('\n')) && doc[i + HEADING.len()..].starts_with('\n')
    });
    if let Some(h) = heading_at {
        let after = h + HEADING.len();
        let end = doc[after..]
            .find("\n## ")
            .map_or(doc.len(), |i| after + i + 1);
        let rest = &doc[end..];
        return format!(
            "{}{HEADING}\n\n{block}\n{}{}",
            &doc[..h],
            if rest.is_empty() { "" } else { "\n" },
            rest
        );
    }
    let mut out = if doc.trim().is_empty() {
        "# Benchmarks\n".to_string()
    } else {
        doc.trim_end().to_string() + "\n"
    };
    out += &format!("\n{HEADING}\n\n{block}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(row: &str, round: u32, pps: f64) -> String {
        format!(
            r#"{{"kind":"rate","row":"{row}","round":"{round}","pps":{pps},"ns_per_pkt":1000.0,"per_key":[{{"mac":"02:00:0a:00:00:15","kind":"ipv4","daddr":"10.0.0.88","packets":50}},{{"mac":"02:00:0a:00:00:16","kind":"ipv4","daddr":"10.0.0.88","packets":50}}]}}"#
        )
    }

    #[test]
    fn ratios_are_per_round() {
        let text = [
            line("reflect", 1, 1.0e6),
            line("dr", 1, 0.95e6),
            line("new", 1, 0.95e6),
            line("reflect", 2, 0.5e6),
            line("dr", 2, 0.45e6),
            line("new", 2, 0.45e6),
            line("dr", 3, 0.9e6), // no reflect in round 3: not in the ratio
            "garbage".to_string(),
        ]
        .join("\n");
        let r = parse(&text);
        assert_eq!(r.notes.len(), 1);
        let v = ratios(&r, "dr", "reflect");
        assert_eq!(v.len(), 2);
        assert!((stats::median(&v).unwrap() - 0.925).abs() < 1e-9);
        let out = render(&r);
        assert!(
            out.contains("new conn/s (every frame a SYN) ≥ 0.8× the AF_XDP reflect rate | 0.93 (0.90–0.95)× | **met**"),
            "{out}"
        );
        assert!(out.contains("50.0/50.0 %"));
        assert!(out.contains(
            "| dr | DR, 4 real servers, rr | 0.900 (0.450–0.950) Mpps | 1000 (1000–1000) |"
        ));
    }

    #[test]
    fn rounds_with_other_load_are_left_out() {
        let dirty = r#"{"kind":"rate","row":"dr","round":"2","pps":5.0e5,"foreign_busy_max":0.6}"#;
        let text = [
            line("dr", 1, 0.9e6),
            dirty.to_string(),
            line("dr", 3, 0.7e6),
            r#"{"kind":"loss","row":"loss","round":"2","loss_pct":5.0}"#.to_string(),
        ]
        .join("\n");
        let r = parse(&text);
        assert_eq!(dirty_rounds(&r), vec![2]);
        let out = render(&r);
        assert!(out.contains("Round(s) 2 had other load"), "{out}");
        assert!(out.contains("0.800 (0.700–0.900) Mpps"), "{out}");
        assert!(!out.contains("5.000% lost"), "{out}");
        // Only one clean round: everything is shown, flagged.
        let r = parse(&[line("dr", 1, 0.9e6), dirty.to_string()].join("\n"));
        let out = render(&r);
        assert!(out.contains("**Skewed:**"), "{out}");
        assert!(out.contains("0.700 (0.500–0.900) Mpps"), "{out}");
    }

    #[test]
    fn loss_and_cpu_split_are_summarised() {
        let cpu = r#""packets":1000,"cpu":[{"name":"napi/eth0-7","ns":600000},{"name":"xvs-q0","ns":700000}]"#;
        let text = [
            format!(r#"{{"kind":"rate","row":"dr","round":"1","pps":7.0e5,"ns_per_pkt":1300.0,{cpu}}}"#),
            r#"{"kind":"loss","row":"loss","round":"1","offered_pps":3.5e5,"percent_of_dr":50,"sent":100,"received":100,"loss_pct":0.0}"#.to_string(),
            r#"{"kind":"loss","row":"loss","round":"2","offered_pps":3.0e5,"percent_of_dr":50,"sent":100,"received":98,"loss_pct":2.0}"#.to_string(),
        ]
        .join("\n");
        let out = render(&parse(&text));
        assert!(out.contains("| 1300: NAPI 600 + xvsd 700 |"), "{out}");
        assert!(
            out.contains("(0.325 (0.300–0.350) Mpps): 200 frames sent, 198 arrived"),
            "{out}"
        );
        assert!(out.contains("| 1.000 (0.000–2.000) % lost |"), "{out}");
    }

    #[test]
    fn unmet_targets_say_so() {
        let text = [line("dr", 1, 0.5e6), line("nft", 1, 0.49e6)].join("\n");
        let out = render(&parse(&text));
        assert!(
            out.contains("DR established ≥ 3× nftables DNAT | 1.02× | **not met**"),
            "{out}"
        );
        let text = [line("dr", 1, 1.5e6), line("nft", 1, 0.5e6)].join("\n");
        let out = render(&parse(&text));
        assert!(
            out.contains("DR established ≥ 3× nftables DNAT | 3.00× | **met**"),
            "{out}"
        );
    }

    #[test]
    fn flat_out_is_shown_against_the_best_rate_and_xdptx_is_a_reference() {
        let with_flat = |row: &str, round: u32, pps: f64, flat: f64| {
            line(row, round, pps).replacen(r#""pps":"#, &format!(r#""flat_pps":{flat},"pps":"#), 1)
        };
        let text = [
            with_flat("dr", 1, 0.4e6, 0.2e6),
            with_flat("dr", 2, 0.5e6, 0.5e6),
            with_flat("xdptx", 1, 2.0e6, 2.0e6),
            with_flat("xdptx", 2, 2.5e6, 2.5e6),
        ]
        .join("\n");
        let out = render(&parse(&text));
        // Per-round ratios 0.5 and 1.0: median 0.75.
        assert!(
            out.contains("0.350 (0.200–0.500) Mpps (0.75× peak)"),
            "{out}"
        );
        assert!(out.contains("| xdptx | in-kernel XDP_TX"), "{out}");
        // dr's median flat/peak is 0.75, xdptx's 1.0: the worst row decides.
        assert!(
            out.contains("| 0.75× (dr; below 0.9: dr) | **not met** |"),
            "{out}"
        );
        // 0.4/2.0 and 0.5/2.5: 0.20 in both rounds.
        assert!(
            out.contains(
                "DR established ≥ 0.8× the in-kernel XDP_TX reference | 0.20 (0.20–0.20)× | **not met**"
            ),
            "{out}"
        );
    }

    #[test]
    fn mix_latency_and_memory_targets() {
        let text = [
            line("dr_slow", 1, 0.30e6),
            line("mix", 1, 0.48e6),
            r#"{"kind":"latency","row":"lat_direct","round":"1","p50_us":50.0,"p99_us":100.0}"#.to_string(),
            r#"{"kind":"latency","row":"lat_via","round":"1","p50_us":55.0,"p99_us":125.0}"#.to_string(),
            r#"{"kind":"conns","row":"c10m","round":"0","entries":10000000,"rss_before_kb":1000,"rss_after_kb":1048576,"bytes_per_entry":107.0,"bpf_map_bytes":536870912,"bpf_largest_map":"xvs_flows"}"#.to_string(),
            r#"{"kind":"conns","row":"c10m","round":"0","entries":5000,"rss_before_kb":1000,"rss_after_kb":2000,"bytes_per_entry":107.0,"bpf_map_bytes":1000}"#.to_string(),
        ]
        .join("\n");
        let out = render(&parse(&text));
        assert!(out.contains("(mix) ≥ 1.5× the slow-path DR rate"), "{out}");
        assert!(out.contains("| 1.60× | **met** |"), "{out}");
        assert!(out.contains("| 1.50× (0.480 Mpps) | reported |"), "{out}");
        assert!(out.contains("≤ 20 µs | 25.0 µs | **not met** |"), "{out}");
        assert!(
            out.contains("| 1.50 GiB = 1.00 RSS + 0.50 BPF | **met** |"),
            "{out}"
        );
        assert!(out.contains("(only 5000 entries reached"), "{out}");
        assert!(out.contains("| not measured |"), "{out}");
        assert!(out.contains("512 MiB (largest: xvs_flows)"), "{out}");
    }

    #[test]
    fn splice_replaces_only_our_section() {
        let doc = "# Benchmarks\n\n## Micro (criterion)\n\nfoo\n";
        let a = splice(doc, "table 1\n");
        assert!(a.starts_with(doc.trim_end()));
        assert!(a.contains(&format!("{HEADING}\n\n{BEGIN}\ntable 1\n{END}\n")));
        let b = splice(&(a.clone() + "\n## Later section\n\nbar\n"), "table 2");
        assert!(b.contains("table 2\n"));
        assert!(!b.contains("table 1"));
        assert!(b.contains("## Micro (criterion)\n\nfoo\n"));
        assert!(b.contains("## Later section\n\nbar\n"));
        assert_eq!(b.matches(HEADING).count(), 1);
        let c = splice("", "x");
        assert!(c.starts_with("# Benchmarks\n\n## Forwarding"));
    }

    #[test]
    fn splice_fills_a_placeholder_section() {
        let doc = format!("# B\n\n## A\n\na\n\n{HEADING}\n\nplaceholder text\n\n## Z\n\nz\n");
        let out = splice(&doc, "table");
        assert_eq!(
            out,
            format!("# B\n\n## A\n\na\n\n{HEADING}\n\n{BEGIN}\ntable\n{END}\n\n## Z\n\nz\n")
        );
        // At the end of the file.
        let doc = format!("# B\n\n{HEADING}\n\nplaceholder\n");
        assert_eq!(
            splice(&doc, "t"),
            format!("# B\n\n{HEADING}\n\n{BEGIN}\nt\n{END}\n")
        );
        // Idempotent from then on.
        let once = splice(&doc, "t");
        assert_eq!(splice(&once, "t"), once);
    }
}
