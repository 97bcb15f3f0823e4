// Inline-SVG charts for the console (no library, no network).
const NS = "http://www.w3.org/2000/svg";
export const PALETTE = ["#2f6fde", "#1f9d63", "#d9822b", "#8e5bd6", "#d64545", "#0f9fb3", "#b5476f", "#6b8e23",
  "#c9a100", "#4d5d7a", "#e06bb0", "#2aa198"];

function svg(tag, attrs = {}, text) {
  const n = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
  if (text !== undefined) n.textContent = text;
  return n;
}

export function formatValue(v, unit) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  const num = (x, d = 2) => (Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(d));
  switch (unit) {
    case "percentunit": return `${num(v * 100, 1)}%`;
    case "s": return a === 0 ? "0" : a < 1 ? `${num(v * 1000, 1)} ms` : `${num(v)} s`;
    case "reqps": return `${num(v)}/s`;
    default: return a >= 1e6 ? `${num(v / 1e6)}M` : a >= 1e3 ? `${num(v / 1e3)}k` : Number.isInteger(v) ? String(v) : num(v);
  }
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

/** series: [{name, points: [[unixSeconds, value], ...]}] -> <svg> line chart with axes. */
export function lineChart(series, { unit = "short", width = 560, height = 200, start, end } = {}) {
  const pad = { l: 58, r: 10, t: 8, b: 22 };
  const w = width - pad.l - pad.r, h = height - pad.t - pad.b;
  const all = series.flatMap((s) => s.points);
  const t0 = start ?? Math.min(...all.map((p) => p[0])), t1 = end ?? Math.max(...all.map((p) => p[0]));
  let max = Math.max(0, ...all.map((p) => p[1]).filter(Number.isFinite));
  if (unit === "percentunit" && max > 0.5) max = 1;
  max = niceMax(max);
  const x = (t) => pad.l + (t1 === t0 ? w / 2 : ((t - t0) / (t1 - t0)) * w);
  const y = (v) => pad.t + h - (v / max) * h;
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img" });
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    root.append(svg("line", { x1: pad.l, x2: width - pad.r, y1: y(v), y2: y(v), class: "gridline" }));
    root.append(svg("text", { x: pad.l - 6, y: y(v) + 3.5, "text-anchor": "end" }, formatValue(v, unit)));
  }
  const ticks = 5;
  for (let i = 0; i <= ticks; i++) {
    const t = t0 + ((t1 - t0) * i) / ticks;
    const d = new Date(t * 1000);
    const hm = `${String(d.getHours()).padStart(2, "0")}:${String(d.getMinutes()).padStart(2, "0")}`;
    const label = t1 - t0 < 600 ? `${hm}:${String(d.getSeconds()).padStart(2, "0")}` : hm;
    root.append(svg("text", { x: x(t), y: height - 6, "text-anchor": i === 0 ? "start" : i === ticks ? "end" : "middle" }, label));
  }
  series.forEach((s, i) => {
    const color = s.color || PALETTE[i % PALETTE.length];
    // Break the line where samples are missing (a gap longer than 2.5 steps).
    const pts = s.points.filter((p) => Number.isFinite(p[1]));
    const step = pts.length > 1 ? Math.min(...pts.slice(1).map((p, j) => p[0] - pts[j][0])) : 0;
    let d = "";
    pts.forEach((p, j) => {
      const gap = j === 0 || (step && p[0] - pts[j - 1][0] > step * 2.5);
      d += `${gap ? "M" : "L"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`;
    });
    const path = svg("path", { d, fill: "none", stroke: color, "stroke-width": 1.8, "stroke-linejoin": "round" });
    path.append(svg("title", {}, s.name));
    root.append(path);
    if (pts.length === 1) root.append(svg("circle", { cx: x(pts[0][0]), cy: y(pts[0][1]), r: 3, fill: color }));
  });
  root.dataset.series = String(series.length);
  return root;
}

/** A legend for series (name, colour, last value). */
export function legend(series, unit) {
  const box = document.createElement("div");
  box.className = "legend";
  series.forEach((s, i) => {
    const item = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = s.color || PALETTE[i % PALETTE.length];
    const last = s.points.length ? s.points[s.points.length - 1][1] : null;
    item.append(swatch, `${s.name} `);
    const v = document.createElement("b");
    v.textContent = formatValue(last, unit);
    item.append(v);
    box.append(item);
  });
  return box;
}
