// Slim Scheduler dashboard: polls /api/v1/state every second and draws plain SVG charts.
"use strict";

const POLL_MS = 1000;
const WINDOW_S = 60; // seconds of history on the charts
const WIDTH_COLORS = { "0.25": "#4e79a7", "0.5": "#59a14f", "0.75": "#f28e2b", "1": "#e15759" };
const EXTRA_COLORS = ["#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f"];
const SVG_NS = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);

function esc(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function bytes(n) {
  if (n == null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return n.toFixed(i === 0 ? 0 : 1) + " " + units[i];
}

function num(n, digits) {
  if (n == null || Number.isNaN(n)) return "–";
  return Number(n).toLocaleString("en-US", { maximumFractionDigits: digits ?? 0, minimumFractionDigits: digits ?? 0 });
}

function bar(fraction) {
  if (fraction == null) return '<span class="muted">–</span>';
  const pct = Math.max(0, Math.min(1, fraction)) * 100;
  return `<span class="bar"><span style="width:${pct.toFixed(0)}%"></span></span>${pct.toFixed(0)}%`;
}

function widthColor(w, i) {
  return WIDTH_COLORS[w] || EXTRA_COLORS[i % EXTRA_COLORS.length];
}

function el(tag, attrs, parent) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

// Draws series [{name, color, points: [[t_s, y|null]], area?}] on an SVG with a time axis in
// seconds before now (x in [-WINDOW_S, 0]).
function chart(svg, series, opts) {
  const W = svg.clientWidth || 400, H = svg.clientHeight || 170;
  const pad = { l: 40, r: 8, t: 8, b: 18 };
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.replaceChildren();
  let ymax = opts.ymax;
  if (ymax == null) {
    let m = 0;
    for (const s of series) for (const [, y] of s.points) if (y != null && y > m) m = y;
    ymax = niceMax(m * 1.1);
  }
  const x = (t) => pad.l + ((t + WINDOW_S) / WINDOW_S) * (W - pad.l - pad.r);
  const y = (v) => H - pad.b - (v / ymax) * (H - pad.t - pad.b);
  for (let i = 0; i <= 4; i++) {
    const v = (ymax * i) / 4;
    el("line", { x1: pad.l, x2: W - pad.r, y1: y(v), y2: y(v), class: "grid" }, svg);
    const label = el("text", { x: pad.l - 4, y: y(v) + 3, "text-anchor": "end" }, svg);
    label.textContent = opts.percent ? `${Math.round(v * 100)}%` : num(v, v < 10 && ymax <= 10 ? 1 : 0);
  }
  for (let t = -WINDOW_S; t <= 0; t += 15) {
    const label = el("text", { x: x(t), y: H - 4, "text-anchor": t === 0 ? "end" : "middle" }, svg);
    label.textContent = t === 0 ? "now" : `${t}s`;
  }
  for (const s of series) {
    const shown = s.points.map((p, i) => i).filter((i) => s.points[i][1] != null && s.points[i][0] >= -WINDOW_S);
    if (shown.length === 0) continue;
    const pts = shown.map((i) => s.points[i]);
    const line = pts.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    if (s.area) {
      const lower = shown.map((i) => `${x(s.points[i][0]).toFixed(1)},${y(s.base ? s.base[i] : 0).toFixed(1)}`).reverse().join(" ");
      el("polygon", { points: `${line} ${lower}`, fill: s.color, "fill-opacity": 0.85, stroke: "none" }, svg);
    } else {
      el("polyline", { points: line, fill: "none", stroke: s.color, "stroke-width": 2, "stroke-linejoin": "round" }, svg);
    }
  }
}

function legend(id, items) {
  $(id).innerHTML = items.map(([name, color]) => `<span><i style="background:${color}"></i>${esc(name)}</span>`).join("");
}

function renderCards(s, recent) {
  const c = s.counters;
  const refused = Object.values(c.refused).reduce((a, b) => a + b, 0);
  const done = recent.reduce((a, h) => a + h.completed, 0);
  const lat = recent.filter((h) => h.latency_ms != null);
  const meanLat = lat.length ? lat.reduce((a, h) => a + h.latency_ms * h.completed, 0) / Math.max(1, lat.reduce((a, h) => a + h.completed, 0)) : null;
  const cards = [
    ["Router", s.coordinator.router],
    ["Agents online", `${c.agents_online} / ${s.agents.length}`],
    ["Received", num(c.received)],
    ["Routed", num(c.routed)],
    ["Re-routed", num(c.rerouted)],
    ["Refused", num(refused)],
    ["Throughput (5 s)", `${num(recent.length ? done / recent.length : 0, 1)}/s`],
    ["Latency (5 s)", meanLat == null ? "–" : `${num(meanLat, 1)} ms`],
  ];
  $("cards").innerHTML = cards.map(([l, v]) => `<div class="card"><div class="label">${esc(l)}</div><div class="value">${esc(v)}</div></div>`).join("");
}

function renderFleet(s) {
  const rows = s.agents.map((a) => {
    const t = a.telemetry;
    const emu = a.emulation ? ` <span class="muted">×${num(a.emulation.slowdown, 1)}</span>` : "";
    const status = a.online ? '<span class="status-online">online</span>' : '<span class="status-offline">offline</span>';
    let mem = "–";
    if (t) {
      mem = t.vram_total_bytes != null
        ? `${bytes(t.vram_used_bytes)} / ${bytes(t.vram_total_bytes)} VRAM`
        : `${bytes(t.ram_used_bytes)} / ${bytes(t.ram_total_bytes)}`;
    }
    return `<tr>
      <td><b>${esc(a.id)}</b><br><span class="muted">${esc(a.device.hostname || "")} ${esc(a.models.join(", "))}</span></td>
      <td>${esc(a.backend)}${emu}</td>
      <td>${status}</td>
      <td>${t ? bar(t.cpu_util) : "–"}</td>
      <td>${t ? bar(t.gpu_util) : "–"}</td>
      <td>${mem}</td>
      <td class="num">${t ? num(t.power_w, 1) + " W" : "–"}<br><span class="muted">${t ? esc(t.energy_source) : ""}</span></td>
      <td class="num">${t ? num(t.energy_j, 0) + " J" : "–"}</td>
      <td class="num">${t ? num(t.queue_depth) : "–"}</td>
      <td class="num">${num(a.outstanding)}</td>
      <td class="num">${t ? num(t.completed) : "–"}</td>
      <td class="num">${t ? num(t.errors) : "–"}</td>
    </tr>`;
  });
  $("fleet").tBodies[0].innerHTML = rows.length ? rows.join("") : '<tr><td colspan="12" class="muted">no agents yet</td></tr>';
}

function renderCharts(s) {
  const now = s.coordinator.now_ms;
  const hist = s.history.map((h) => ({ ...h, t: (h.at_ms + 1000 - now) / 1000 }));
  const decided = hist.map((h) => [h.t, Object.values(h.widths).reduce((a, b) => a + b, 0)]);
  chart($("throughput"), [
    { name: "answered", color: "#2f6fde", points: hist.map((h) => [h.t, h.completed]) },
    { name: "routed", color: "#9aa5b8", points: decided },
  ], {});
  legend("throughput-legend", [["answered by agents", "#2f6fde"], ["routed", "#9aa5b8"]]);

  chart($("latency"), [
    { name: "queue + compute", color: "#e15759", points: hist.map((h) => [h.t, h.latency_ms]) },
    { name: "queue", color: "#f28e2b", points: hist.map((h) => [h.t, h.queue_ms]) },
  ], {});
  legend("latency-legend", [["queue + compute", "#e15759"], ["queue", "#f28e2b"]]);

  // Width mix: a stacked area of each width's share of the decisions, smoothed over 5 s.
  const widths = [...new Set(hist.flatMap((h) => Object.keys(h.widths)))].sort((a, b) => Number(a) - Number(b));
  const smooth = hist.map((h, i) => {
    const span = hist.slice(Math.max(0, i - 4), i + 1);
    const counts = {};
    let total = 0;
    for (const p of span) for (const [w, n] of Object.entries(p.widths)) { counts[w] = (counts[w] || 0) + n; total += n; }
    return { t: h.t, counts, total };
  });
  const stacked = [];
  let base = smooth.map(() => 0);
  widths.forEach((w, i) => {
    const top = smooth.map((p, j) => base[j] + (p.total ? (p.counts[w] || 0) / p.total : 0));
    const shown = smooth.map((p, j) => [p.t, p.total ? top[j] : null]);
    stacked.push({ name: w, color: widthColor(w, i), points: shown, area: true, base });
    base = top;
  });
  chart($("widths"), stacked, { ymax: 1, percent: true });
  legend("widths-legend", widths.map((w, i) => [`width ${w}`, widthColor(w, i)]));
}

function renderDecisions(s) {
  const rows = s.decisions.slice(-15).reverse().map((d) => `<tr>
    <td>${new Date(d.at_ms).toISOString().slice(11, 23)}</td>
    <td>${esc(d.request_id.length > 18 ? d.request_id.slice(0, 18) + "…" : d.request_id)}</td>
    <td>${esc(d.model)}</td><td>${esc(d.agent)}</td>
    <td class="num">${num(d.width, 2)}</td><td class="num">${d.batch_size}</td>
    <td class="num">${d.candidates}</td><td class="num">${d.agent_outstanding}</td>
    <td class="num">${d.attempt}</td><td>${esc(d.router)}</td></tr>`);
  $("decisions").tBodies[0].innerHTML = rows.length ? rows.join("") : '<tr><td colspan="10" class="muted">no decisions yet</td></tr>';
}

function render(s) {
  $("coordinator").textContent = `${s.coordinator.id} · router ${s.coordinator.router}`;
  const badge = $("conn");
  if (!s.coordinator.connected) { badge.textContent = "broker disconnected"; badge.className = "badge bad"; }
  else if (!s.coordinator.ready) { badge.textContent = "no agent online"; badge.className = "badge warn"; }
  else { badge.textContent = "ready"; badge.className = "badge ok"; }
  renderCards(s, s.history.slice(-5));
  renderFleet(s);
  renderCharts(s);
  renderDecisions(s);
}

async function poll() {
  try {
    const response = await fetch("api/v1/state", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(await response.json());
  } catch (e) {
    const badge = $("conn");
    badge.textContent = `coordinator unreachable (${e.message})`;
    badge.className = "badge bad";
  } finally {
    setTimeout(poll, POLL_MS);
  }
}

poll();
