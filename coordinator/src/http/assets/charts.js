// Slim Scheduler dashboard: formatting helpers and plain-SVG line charts (no dependencies).
"use strict";

const WINDOW_S = 60; // seconds of history on the charts
const SVG_NS = "http://www.w3.org/2000/svg";
const PALETTE = ["#4e79a7", "#e15759", "#59a14f", "#f28e2b", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7", "#9c755f", "#bab0ac"];

const $ = (id) => document.getElementById(id);

function esc(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function num(n, digits) {
  if (n == null || Number.isNaN(n)) return "–";
  return Number(n).toLocaleString("en-US", { maximumFractionDigits: digits ?? 0, minimumFractionDigits: digits ?? 0 });
}

// A duration in ms with about three significant digits.
function ms(v) {
  if (v == null) return "–";
  const a = Math.abs(v);
  return num(v, a >= 100 ? 0 : a >= 10 ? 1 : a >= 1 ? 2 : 3);
}

// Axis ticks from 0 in the smallest 1-2-5 step that covers `max` in at most `count` intervals.
function niceTicks(max, count) {
  if (!(max > 0)) max = 1;
  const limit = count || 5;
  let p = Math.pow(10, Math.floor(Math.log10(max / limit)));
  let step = null;
  while (step == null) {
    step = [1, 2, 5].map((m) => m * p).find((s) => Math.ceil(max / s - 1e-9) <= limit) ?? null;
    p *= 10;
  }
  const top = Math.ceil(max / step - 1e-9) * step;
  const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  const ticks = [];
  for (let i = 0; i * step <= top + step / 2; i++) ticks.push(Number((i * step).toFixed(decimals)));
  return { ticks, top, decimals };
}

function el(tag, attrs, parent) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (parent) parent.appendChild(node);
  return node;
}

function yAxis(svg, series, opts) {
  if (opts.percent) return { ticks: [0, 0.25, 0.5, 0.75, 1], top: 1, label: (v) => `${Math.round(v * 100)}%` };
  let m = 0;
  for (const s of series) for (const [t, y] of s.points) if (y != null && t >= -WINDOW_S && y > m) m = y;
  const { ticks, top, decimals } = niceTicks(m, 5);
  return { ticks, top, label: (v) => num(v, decimals) };
}

// Draws series [{color, points: [[t_s, y|null]], area?, base?, dash?}] on an SVG with a time
// axis in seconds before now (x in [-WINDOW_S, 0]).
function chart(svg, series, opts) {
  const W = svg.clientWidth || 400, H = svg.clientHeight || 170;
  const pad = { l: 44, r: 8, t: 8, b: 18 };
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.replaceChildren();
  const axis = yAxis(svg, series, opts || {});
  const x = (t) => pad.l + ((t + WINDOW_S) / WINDOW_S) * (W - pad.l - pad.r);
  const y = (v) => H - pad.b - (Math.max(0, v) / axis.top) * (H - pad.t - pad.b);
  for (const v of axis.ticks) {
    el("line", { x1: pad.l, x2: W - pad.r, y1: y(v), y2: y(v), class: "grid" }, svg);
    el("text", { x: pad.l - 4, y: y(v) + 3, "text-anchor": "end" }, svg).textContent = axis.label(v);
  }
  for (let t = -WINDOW_S; t <= 0; t += 15) {
    const label = el("text", { x: x(t), y: H - 4, "text-anchor": t === 0 ? "end" : "middle" }, svg);
    label.textContent = t === 0 ? "now" : `${t}s`;
  }
  for (const s of series) drawSeries(svg, s, x, y);
}

function drawSeries(svg, s, x, y) {
  const shown = s.points.map((p, i) => i).filter((i) => s.points[i][1] != null && s.points[i][0] >= -WINDOW_S);
  if (shown.length === 0) return;
  const line = shown.map((i) => `${x(s.points[i][0]).toFixed(1)},${y(s.points[i][1]).toFixed(1)}`).join(" ");
  if (s.area) {
    const lower = shown.map((i) => `${x(s.points[i][0]).toFixed(1)},${y(s.base ? s.base[i] : 0).toFixed(1)}`).reverse().join(" ");
    el("polygon", { points: `${line} ${lower}`, fill: s.color, "fill-opacity": 0.85, stroke: "none" }, svg);
    return;
  }
  const attrs = { points: line, fill: "none", stroke: s.color, "stroke-width": 2, "stroke-linejoin": "round" };
  if (s.dash) attrs["stroke-dasharray"] = "5 3";
  el("polyline", attrs, svg);
  if (shown.length === 1) {
    const i = shown[0];
    el("circle", { cx: x(s.points[i][0]), cy: y(s.points[i][1]), r: 2.5, fill: s.color }, svg);
  }
}

function legend(id, items) {
  $(id).innerHTML = items.map(([name, color, dash]) =>
    `<span><i style="background:${color}${dash ? ";opacity:.6" : ""}"></i>${esc(name)}</span>`).join("");
}
