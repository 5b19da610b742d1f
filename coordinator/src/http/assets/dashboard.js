// Slim Scheduler dashboard: polls /api/v1/state every second and draws tables and plain SVG
// charts (helpers in charts.js).
"use strict";

const POLL_MS = 1000;
const MAX_AGENT_LINES = 10;
const WIDTH_COLORS = { "0.25": "#4e79a7", "0.5": "#59a14f", "0.75": "#f28e2b", "1": "#e15759" };
const SOURCES = { nvml: "measured (NVML)", ina3221: "measured (INA3221)", rapl: "measured (RAPL)", model: "modelled", none: "no reading", mixed: "mixed sources" };

function bytes(n) {
  if (n == null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return n.toFixed(i === 0 ? 0 : 1) + " " + units[i];
}

function bar(fraction) {
  if (fraction == null) return '<span class="muted">–</span>';
  const pct = Math.max(0, Math.min(1, fraction)) * 100;
  return `<span class="bar"><span style="width:${pct.toFixed(0)}%"></span></span>${pct.toFixed(0)}%`;
}

const source = (s) => SOURCES[s] || s;
const widthColor = (w, i) => WIDTH_COLORS[w] || PALETTE[(i + 4) % PALETTE.length];
const widthKey = (w) => String(Number(w));

function telemetryInterval(s) {
  const ms = s.agents.map((a) => a.telemetry_interval_ms).filter((v) => v != null);
  return ms.length ? `${num(Math.max(...ms) / 1000, 1)} s here` : "1 s by default";
}

function renderCards(s, recent) {
  const c = s.counters;
  const refused = Object.values(c.refused).reduce((a, b) => a + b, 0);
  const done = recent.reduce((a, h) => a + h.completed, 0);
  const online = s.agents.filter((a) => a.online && a.telemetry);
  const power = online.reduce((a, x) => a + x.telemetry.power_w, 0);
  const sources = [...new Set(online.map((a) => a.telemetry.energy_source))];
  const cards = [
    ["Router", s.coordinator.router],
    ["Agents online", `${c.agents_online} / ${s.agents.length}`],
    ["Received", num(c.received)],
    ["Routed", num(c.routed)],
    ["Re-routed", num(c.rerouted)],
    ["Refused", num(refused)],
    ["Answered (5 s)", `${num(recent.length ? done / recent.length : 0, 1)}/s`],
    [`Fleet power (${sources.length === 1 ? source(sources[0]) : sources.length ? "mixed" : "–"})`, online.length ? `${num(power, 1)} W` : "–"],
  ];
  $("cards").innerHTML = cards.map(([l, v]) => `<div class="card"><div class="label">${esc(l)}</div><div class="value">${esc(v)}</div></div>`).join("");
}

function latencyParts(s) {
  return [
    ["client_to_coordinator", "client → coordinator", "the client's send time (sent_at_ms, whole ms) to arrival here: one broker hop, read on two clocks"],
    ["in_coordinator", "in coordinator", "arrival here to the assignment published: validation, parking, routing"],
    ["agent_queue", "agent queue", "agent-side: assignment received to its batch starting (batch mean)"],
    ["agent_compute", "agent compute", "agent-side: the batch's run time"],
    ["agent_total", "agent-side total", "agent-side: queue + compute; leaves out the broker hops and the coordinator"],
    ["arrival_to_done_notice", "arrival → done notice", `arrival here to the agent's telemetry saying it answered: an upper bound, up to one telemetry interval (${telemetryInterval(s)}) late`],
  ];
}

function renderLatency(s) {
  const parts = latencyParts(s);
  const rows = s.models.flatMap((m) => [`<tr class="group"><td colspan="5">${esc(m.model)}</td></tr>`].concat(parts.map(([key, name]) => {
    const p = m.latency[key];
    const cls = key === "agent_total" ? ' class="agent-total"' : "";
    return `<tr${cls}><td class="part">${esc(name)}</td><td class="num">${p ? num(p.n) : "–"}</td>
      <td class="num">${p ? ms(p.p50) : "–"}</td><td class="num">${p ? ms(p.p95) : "–"}</td><td class="num">${p ? ms(p.p99) : "–"}</td></tr>`;
  })));
  $("latency-table").tBodies[0].innerHTML = rows.length ? rows.join("") : '<tr><td colspan="5" class="muted">no model announced yet</td></tr>';
  $("latency-parts").innerHTML = parts.map(([, name, what]) => `<dt>${esc(name)}</dt><dd>${esc(what)}</dd>`).join("");
}

function mixBar(m) {
  if (!m.widths.length) return '<span class="muted">no request served in the last minute</span>';
  const parts = m.widths.map((w, i) => {
    const pct = w.share * 100;
    const label = pct >= 12 ? `${widthKey(w.width)}: ${pct.toFixed(0)}%` : "";
    return `<span style="width:${pct}%;background:${widthColor(widthKey(w.width), i)}" title="width ${widthKey(w.width)}: ${num(w.inferences)} (${pct.toFixed(1)}%)">${label}</span>`;
  });
  return `<span class="mix">${parts.join("")}</span>`;
}

function accuracyCell(m) {
  if (m.accuracy != null) return `<b>${num(m.accuracy * 100, 1)}%</b> <span class="muted">measured</span>`;
  return "<b>n/a</b>";
}

function renderMix(s) {
  const rows = s.models.map((m) => `<tr><td><b>${esc(m.model)}</b></td><td class="num">${num(m.inferences)}</td>
    <td class="mixcell">${mixBar(m)}</td><td>${accuracyCell(m)}</td>
    <td class="num">${m.energy_per_result_j == null ? "–" : num(m.energy_per_result_j, 3) + " J"}<br><span class="muted">${esc(source(m.energy_source))}</span></td></tr>`
    + (m.accuracy == null && m.accuracy_note ? `<tr><td></td><td colspan="4" class="note-row">top-1 n/a: ${esc(m.accuracy_note)}</td></tr>` : ""));
  $("mix-table").tBodies[0].innerHTML = rows.length ? rows.join("") : '<tr><td colspan="5" class="muted">no model announced yet</td></tr>';
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
    const lat = a.latency ? `${ms(a.latency.p50)} / ${ms(a.latency.p99)}` : "–";
    return `<tr>
      <td><b>${esc(a.id)}</b><br><span class="muted">${esc(a.device.hostname || "")} ${esc(a.models.join(", "))}</span></td>
      <td>${esc(a.backend)}${emu}</td><td>${status}</td>
      <td>${t ? bar(t.cpu_util) : "–"}</td><td>${t ? bar(t.gpu_util) : "–"}</td><td>${mem}</td>
      <td class="num">${t ? num(t.power_w, 1) + " W" : "–"}<br><span class="muted">${t ? esc(source(t.energy_source)) : ""}</span></td>
      <td class="num">${t ? num(t.energy_j, 0) + " J" : "–"}</td>
      <td class="num">${lat}</td>
      <td class="num">${t ? num(t.queue_depth) : "–"}</td><td class="num">${num(a.outstanding)}</td>
      <td class="num">${t ? num(t.completed) : "–"}</td><td class="num">${t ? num(t.errors) : "–"}</td>
    </tr>`;
  });
  $("fleet").tBodies[0].innerHTML = rows.length ? rows.join("") : '<tr><td colspan="13" class="muted">no agents yet</td></tr>';
}

function renderTimeCharts(s, hist) {
  const decided = hist.map((h) => [h.t, Object.values(h.widths).reduce((a, b) => a + b, 0)]);
  chart($("throughput"), [
    { color: "#2f6fde", points: hist.map((h) => [h.t, h.completed]) },
    { color: "#9aa5b8", points: decided, dash: true },
  ]);
  legend("throughput-legend", [["answered by agents", "#2f6fde"], ["routed", "#9aa5b8", true]]);
  chart($("agent-latency"), [
    { color: "#f28e2b", points: hist.map((h) => [h.t, h.queue_ms]) },
    { color: "#4e79a7", points: hist.map((h) => [h.t, h.compute_ms]) },
  ]);
  legend("agent-latency-legend", [["agent queue", "#f28e2b"], ["agent compute", "#4e79a7"]]);
  chart($("coordinator-latency"), [
    { color: "#59a14f", points: hist.map((h) => [h.t, h.client_hop_ms]) },
    { color: "#b07aa1", points: hist.map((h) => [h.t, h.coordinator_ms]) },
  ]);
  legend("coordinator-latency-legend", [["client → coordinator", "#59a14f"], ["in coordinator", "#b07aa1"]]);
}

// Width mix: a stacked area of each width's share of the decisions, smoothed over 5 s.
function renderWidthChart(hist) {
  const widths = [...new Set(hist.flatMap((h) => Object.keys(h.widths)))].sort((a, b) => Number(a) - Number(b));
  const smooth = hist.map((h, i) => {
    const counts = {};
    let total = 0;
    for (const p of hist.slice(Math.max(0, i - 4), i + 1)) for (const [w, n] of Object.entries(p.widths)) { counts[w] = (counts[w] || 0) + n; total += n; }
    return { t: h.t, counts, total };
  });
  const stacked = [];
  let base = smooth.map(() => 0);
  widths.forEach((w, i) => {
    const top = smooth.map((p, j) => base[j] + (p.total ? (p.counts[w] || 0) / p.total : 0));
    stacked.push({ color: widthColor(w, i), points: smooth.map((p, j) => [p.t, p.total ? top[j] : null]), area: true, base });
    base = top;
  });
  chart($("widths"), stacked, { percent: true });
  legend("widths-legend", widths.map((w, i) => [`width ${w}`, widthColor(w, i)]));
}

// Power per agent, and the energy each used since the left edge of the chart.
function renderPowerCharts(s) {
  const now = s.coordinator.now_ms;
  const shown = s.power.slice(0, MAX_AGENT_LINES);
  const at = (p) => (p.at_ms - now) / 1000;
  const series = shown.map((a, i) => ({ color: PALETTE[i % PALETTE.length], points: a.points.map((p) => [at(p), p.power_w]) }));
  chart($("power"), series);
  const energy = shown.map((a, i) => {
    let used = 0, prev = null;
    const points = a.points.map((p) => {
      if (prev != null && p.energy_j >= prev) used += p.energy_j - prev;
      prev = p.energy_j;
      return [at(p), used];
    });
    return { color: PALETTE[i % PALETTE.length], points };
  });
  chart($("energy"), energy);
  const items = shown.map((a, i) => [`${a.agent} · ${source(a.energy_source)}`, PALETTE[i % PALETTE.length]]);
  if (s.power.length > shown.length) items.push([`${s.power.length - shown.length} more agents not drawn`, "#ccc"]);
  legend("power-legend", items);
  legend("energy-legend", items);
}

function renderDecisions(s) {
  const rows = s.decisions.slice(-10).reverse().map((d) => `<tr>
    <td>${new Date(d.at_ms).toISOString().slice(11, 23)}</td>
    <td>${esc(d.request_id.length > 18 ? d.request_id.slice(0, 18) + "…" : d.request_id)}</td>
    <td>${esc(d.model)}</td><td>${esc(d.agent)}</td>
    <td class="num">${num(d.width, 2)}</td><td class="num">${d.batch_size}</td>
    <td class="num">${d.candidates}</td><td class="num">${d.agent_outstanding}</td>
    <td class="num">${d.attempt}</td><td>${esc(d.router)}</td></tr>`);
  $("decisions").tBodies[0].innerHTML = rows.length ? rows.join("") : '<tr><td colspan="10" class="muted">no decisions yet</td></tr>';
}

function render(s) {
  const others = (s.group || []).filter((m) => m.id !== s.coordinator.id);
  const group = others.length
    ? ` · group: ${others.map((m) => `${m.id} (${m.online ? "online" : "offline"})`).join(", ")}`
    : "";
  $("coordinator").textContent = `${s.coordinator.id} · router ${s.coordinator.router}${group}`;
  const badge = $("conn");
  if (!s.coordinator.connected) { badge.textContent = "broker disconnected"; badge.className = "badge bad"; }
  else if (!s.coordinator.ready) { badge.textContent = "no agent online"; badge.className = "badge warn"; }
  else { badge.textContent = "ready"; badge.className = "badge ok"; }
  const hist = s.history.map((h) => ({ ...h, t: (h.at_ms + 1000 - s.coordinator.now_ms) / 1000 }));
  renderCards(s, s.history.slice(-5));
  renderLatency(s);
  renderMix(s);
  renderFleet(s);
  renderTimeCharts(s, hist);
  renderWidthChart(hist);
  renderPowerCharts(s);
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
