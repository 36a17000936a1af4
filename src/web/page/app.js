// The status page's refresh: every 2 s (never faster; not while the tab is hidden) it
// reads /api/status (servers with their checkers), /api/health (for checked servers
// keepalived took out of the pool) and the history's new points, and rebuilds the tables
// the server rendered. Text goes in through textContent only, so nothing is interpreted
// as HTML. Must match page.rs's markup (same classes and columns).
"use strict";
(function () {
  const PERIOD_MS = 2000;
  const POINTS = 300;
  const W = POINTS - 1, H = 22; // as page.rs sparkline: one x unit per sample
  const FIELDS = ["cps", "inpps", "outpps", "inbps", "outbps", "active", "inactive"];
  const LABELS = {
    cps: "connections/s", inpps: "in packets/s", outpps: "out packets/s",
    inbps: "in bytes/s", outbps: "out bytes/s", active: "active connections",
    inactive: "inactive connections",
  };
  const SVG = "http://www.w3.org/2000/svg";
  const history = new Map(); // "service|server" -> {cps: [...], ...}
  let seq = 0;
  let interval = 2;
  const main = document.getElementById("services");
  const updated = document.getElementById("updated");
  const metric = document.getElementById("metric");
  let last = null; // the last [status, health] drawn, to redraw on a metric change

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = String(text);
    return e;
  }

  async function getJSON(url) {
    const r = await fetch(url, { cache: "no-store" });
    if (!r.ok) throw new Error(url + ": HTTP " + r.status);
    return r.json();
  }

  // A service as ipvsadm -L -n, history.rs and /api/health name it: "TCP 10.0.0.88:80".
  function svcName(s) {
    return s.proto + " " + s.address + ":" + s.port;
  }

  function mergeHistory(h) {
    if (h.seq < seq) history.clear(); // the daemon restarted
    interval = h.interval_s || 2;
    const live = new Set();
    for (const s of h.series) {
      const key = s.service + "|" + (s.server || "");
      live.add(key);
      let cur = history.get(key);
      if (!cur) { cur = {}; for (const f of FIELDS) cur[f] = []; history.set(key, cur); }
      for (const f of FIELDS) {
        const a = cur[f].concat(s[f] || []);
        cur[f] = a.length > POINTS ? a.slice(a.length - POINTS) : a;
      }
    }
    for (const k of [...history.keys()]) if (!live.has(k)) history.delete(k);
    seq = h.seq;
  }

  function sparkline(values, label) {
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    svg.setAttribute("preserveAspectRatio", "none");
    const n = Math.min(values.length, POINTS);
    const v = values.slice(values.length - n);
    const max = v.reduce((m, x) => Math.max(m, x), 0);
    const now = n ? v[n - 1] : 0;
    const scale = max ? (H - 2) / max : 0;
    const pts = v.map((x, i) => (W - (n - 1 - i)) + "," + (H - 1 - x * scale).toFixed(1)).join(" ");
    const title = document.createElementNS(SVG, "title");
    title.textContent = label + ": now " + now + ", max " + max + " over the last " + n * interval + " s";
    svg.appendChild(title);
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", pts);
    svg.appendChild(line);
    return svg;
  }

  function graphCell(service, server) {
    const s = history.get(service + "|" + (server || ""));
    if (!s) return el("td", "graph none", "no history");
    const td = el("td", "graph");
    td.appendChild(sparkline(s[metric.value] || [], LABELS[metric.value]));
    return td;
  }

  // keepalived's view of one server ({alive, checkers} or null): see page.rs health_cell.
  function healthOf(checks, h) {
    if (!checks) return { cls: "none", text: "—", title: "no health checks (xvsd runs without --config)" };
    if (!h || !h.checkers.length) return { cls: "none", text: "—", title: "no checker watches this server" };
    const title = h.checkers.map(r => {
      let t = r.checker + " " + r.target + " " + (!r.has_run ? "not run yet" : r.up ? "up" : "down") + " for " + r.since_secs + " s";
      if (r.failures > 0) t += ", " + r.failures + " failures";
      if (r.last_error) t += ", last error: " + r.last_error;
      return t;
    }).join("\n");
    return h.alive ? { cls: "up", text: "UP", title } : { cls: "down", text: "DOWN", title };
  }

  function nums(tr, values) {
    for (const v of values) tr.appendChild(el("td", "num", v));
  }

  function meta(o) { // o: a service of /api/status
    let m = o.scheduler;
    if (o.sched_flags && o.sched_flags.length) m += " (" + o.sched_flags.join(",") + ")";
    if (o.persistent !== null && o.persistent !== undefined) {
      m += " · persistent " + o.persistent + " s";
      if (o.netmask) m += " mask " + o.netmask;
    }
    return m;
  }

  const HEAD = ["Server", "Forward", "Weight", "Health", "ActiveConn", "InActConn", "Conns", "CPS",
    "InPPS", "OutPPS", "InBPS", "OutBPS", "InBytes", "OutBytes", "last 10 min"];

  // s: a service of /api/status; checks: its health_checks; checkers: /api/health's rows.
  function renderService(s, checks, checkers) {
    const name = svcName(s);
    const sec = el("section", "svc");
    sec.dataset.service = name;
    const h2 = el("h2", null, name);
    h2.appendChild(el("span", "meta", meta(s)));
    sec.appendChild(h2);
    const table = el("table");
    const hr = el("tr");
    HEAD.forEach((h, i) => hr.appendChild(el("th", i === 1 ? "fwd" : i === 3 ? "health" : null, h)));
    table.appendChild(el("thead")).appendChild(hr);
    const tb = table.appendChild(el("tbody"));
    let act = 0, inact = 0, weight = 0, up = 0;
    for (const d of s.servers) {
      act += d.active_conns; inact += d.inactive_conns; weight += d.weight;
      if (healthOf(checks, d.health).cls !== "down") up++;
    }
    const tot = el("tr", "total");
    tot.appendChild(el("td", null, "service"));
    tot.appendChild(el("td", "fwd"));
    tot.appendChild(el("td", "num", weight));
    tot.appendChild(el("td", "health", up + "/" + s.servers.length + " in pool"));
    const r = s.rates || {}, c = s.counters || {};
    nums(tot, [act, inact, c.conns, r.cps, r.inpps, r.outpps, r.inbps, r.outbps, c.inbytes, c.outbytes]);
    tot.appendChild(graphCell(name, null));
    tb.appendChild(tot);
    const shown = new Set();
    for (const d of s.servers) {
      const server = d.address + ":" + d.port;
      shown.add(server);
      const tr = el("tr");
      tr.dataset.server = server;
      tr.appendChild(el("td", null, server));
      tr.appendChild(el("td", "fwd", d.forward));
      tr.appendChild(el("td", "num", d.weight));
      const h = healthOf(checks, d.health);
      const hc = el("td", "health " + h.cls, h.text);
      hc.title = h.title;
      tr.appendChild(hc);
      const dr = d.rates || {}, dc = d.counters || {};
      nums(tr, [d.active_conns, d.inactive_conns, dc.conns, dr.cps, dr.inpps, dr.outpps, dr.inbps, dr.outbps, dc.inbytes, dc.outbytes]);
      tr.appendChild(graphCell(name, server));
      tb.appendChild(tr);
    }
    // Checked servers keepalived took out of the pool (see page.rs).
    const out = new Map();
    for (const c of checkers || []) {
      const server = c.address + ":" + c.port;
      if (c.service !== name || shown.has(server)) continue;
      if (!out.has(server)) out.set(server, { alive: true, checkers: [] });
      const o = out.get(server);
      o.alive = o.alive && c.alive;
      o.checkers.push(c);
    }
    for (const [server, hd] of out) {
      const tr = el("tr", "out");
      tr.dataset.server = server;
      tr.appendChild(el("td", null, server));
      tr.appendChild(el("td", "fwd", "out of pool"));
      tr.appendChild(el("td", "num", "—"));
      const h = healthOf(checks, hd);
      const hc = el("td", "health " + h.cls, h.text);
      hc.title = h.title;
      tr.appendChild(hc);
      const rest = el("td");
      rest.colSpan = 11;
      tr.appendChild(rest);
      tb.appendChild(tr);
    }
    sec.appendChild(table);
    return sec;
  }

  function render(status, checkers) {
    last = [status, checkers];
    const frag = document.createDocumentFragment();
    if (!status.services.length) {
      const p = el("p", "empty", "No virtual services (add one with ");
      p.appendChild(el("code", null, "xvsadm -A"));
      p.appendChild(document.createTextNode(")."));
      frag.appendChild(p);
    }
    for (const s of status.services) frag.appendChild(renderService(s, status.health_checks, checkers));
    main.replaceChildren(frag);
  }

  async function tick() {
    try {
      if (!document.hidden) {
        const [status, health, hist] = await Promise.all([
          getJSON("/api/status"),
          // An error here costs only the out-of-pool rows; the tables still refresh.
          getJSON("/api/health").catch(() => null),
          getJSON(seq ? "/page/history/" + seq : "/api/history"),
        ]);
        mergeHistory(hist);
        render(status, health && Array.isArray(health.checkers) ? health.checkers : null);
        updated.textContent = "updated " + new Date().toLocaleTimeString();
        updated.dataset.live = "1";
      }
    } catch (e) {
      updated.textContent = "stale: " + e.message;
      updated.dataset.live = "0";
    } finally {
      // Scheduled after the answer, so a slow director is never asked twice at once.
      setTimeout(tick, PERIOD_MS);
    }
  }

  metric.addEventListener("change", () => { if (last) render(last[0], last[1]); });
  tick();
})();
