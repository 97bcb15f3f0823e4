// Charts for answers and the console, drawn by uPlot (vendored from npm, see vendor/uplot/LICENSE): time series
// with a hover tooltip and a legend that isolates a series on click; horizontal bars for breakdowns.
import uPlot from "./vendor/uplot/uPlot.esm.js";
import { el } from "./common.js";
import { absoluteTime, formatValue } from "./format.js";

// Kelly's colours of maximum contrast (white and black left out): 20 series stay distinguishable.
export const PALETTE = ["#0067a5", "#f38400", "#008856", "#be0032", "#875692", "#a1caf1", "#c2b280", "#e68fac",
  "#848482", "#604e97", "#f6a600", "#b3446c", "#8db600", "#882d17", "#dcd300", "#654522", "#e25822", "#2b3d26",
  "#f99379", "#f3c300"];
const SEMANTIC = [[/\b2xx$/, "#2e8b57"], [/\b3xx$/, "#4a78c2"], [/\b4xx$/, "#d19a00"], [/\b5xx$/, "#cc2936"]];
const QUANTILE = /\s+(p50|p90|p95|p99)$/;
const DASH = { p50: undefined, p90: [8, 3], p95: [6, 3], p99: [2, 3] };
const assigned = new Map();
const ACCENT = "#2f6fde"; // a chart with one series: the page's accent, not a colour that suggests an error
const BAND_STROKE = "#9aa8bd", BAND_FILL = "rgba(47, 111, 222, 0.10)";
const MARKER = "#111827"; // points of interest on a line (an anomaly): rings, no line; no series colour is this dark

/** The same name gets the same colour in every chart of the page (a route in the rate, error and latency panels). */
export function colorFor(name, { single = false } = {}) {
  if (single) return ACCENT;
  const key = String(name).replace(QUANTILE, "");
  for (const [pattern, colour] of SEMANTIC) if (pattern.test(key)) return colour;
  if (!assigned.has(key)) assigned.set(key, PALETTE[assigned.size % PALETTE.length]);
  return assigned.get(key);
}

const dashFor = (name) => DASH[(String(name).match(QUANTILE) || [])[1]];
const WHOLE_STEPS = [1, 2, 5].flatMap((m) => [1, 10, 100, 1e3, 1e4, 1e5, 1e6].map((p) => m * p)).sort((a, b) => a - b);

function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

/** Draw once the host has a width, and follow its width afterwards (phones rotate, panels reflow). */
function mountWhenSized(host, make) {
  let plot = null;
  const observer = new ResizeObserver(() => {
    const width = Math.floor(host.clientWidth);
    if (!width) return;
    if (!plot) plot = make(width);
    else if (Math.abs(plot.width - width) > 1) plot.setSize({ width, height: plot.height });
  });
  observer.observe(host);
  return () => plot;
}

/** The y axis's width from its longest label; at least `min` (a time axis's first date label is centred on the
 * plot's left edge: half of it must fit in the y axis's width, or the canvas cuts it off). */
function axisSize(min = 0) {
  return (u, values) => {
    const longest = Math.max(2, ...(values || []).map((v) => String(v).length));
    return Math.max(min, Math.ceil(longest * 6.6) + 16);
  };
}

/** Values at the cursor, or the last value of each series when the cursor is away. */
function valueAt(u, seriesIndex, idx) {
  const ys = u.data[seriesIndex];
  if (idx !== null && idx !== undefined) return ys[idx];
  for (let i = ys.length - 1; i >= 0; i--) if (ys[i] !== null && ys[i] !== undefined) return ys[i];
  return null;
}

function legend(names, { unit, onToggle, colorOf = colorFor }) {
  const items = names.map((name, i) => {
    const value = el("b", { class: "lg-value" }, "–");
    const item = el("button", { type: "button", class: "lg-item", title: "click: show only this series · ctrl/⌘-click: hide or show it",
      "data-series": name },
    el("i", { class: "swatch", style: { background: colorOf(name) } }), el("span", { class: "lg-name" }, name), value);
    item.addEventListener("click", (event) => onToggle(i + 1, event.ctrlKey || event.metaKey || event.shiftKey));
    return { item, value };
  });
  const box = el("div", { class: `legend${names.length > 8 ? " many" : ""}`, "data-testid": "legend" }, items.map((x) => x.item));
  return {
    box,
    update(u, idx) {
      items.forEach((x, i) => {
        x.value.textContent = formatValue(valueAt(u, i + 1, idx), unit);
        x.item.classList.toggle("off", !u.series[i + 1].show);
      });
    },
  };
}

function tooltip(names, unit, xFormat, colorOf = colorFor) {
  const tip = el("div", { class: "chart-tip", role: "tooltip" });
  tip.hidden = true;
  return {
    tip,
    update(u) {
      const idx = u.cursor.idx;
      if (idx === null || idx === undefined || u.cursor.left < 0) { tip.hidden = true; return; }
      const rows = names.map((name, i) => ({ name, v: u.data[i + 1][idx], show: u.series[i + 1].show }))
        .filter((r) => r.show && r.v !== null && r.v !== undefined).sort((a, b) => b.v - a.v).slice(0, 12);
      if (!rows.length) { tip.hidden = true; return; }
      tip.replaceChildren(el("div", { class: "tip-x" }, xFormat(u.data[0][idx])),
        ...rows.map((r) => el("div", { class: "tip-row" }, el("i", { class: "swatch", style: { background: colorOf(r.name) } }),
          el("span", {}, r.name), el("b", {}, formatValue(r.v, unit)))));
      tip.hidden = false;
      const over = u.over.getBoundingClientRect();
      const w = tip.offsetWidth, h = tip.offsetHeight;
      const left = u.cursor.left + 14 + w > over.width ? Math.max(0, u.cursor.left - w - 14) : u.cursor.left + 14;
      const top = Math.max(0, Math.min(u.cursor.top - h / 2, over.height - h));
      tip.style.transform = `translate(${left}px, ${top}px)`;
    },
  };
}

/** Click isolates a series (click it again: all back); ctrl/⌘/shift-click hides or shows just that one. */
function toggler(getPlot, count) {
  return (seriesIndex, single) => {
    const u = getPlot();
    if (!u) return;
    u.batch(() => {
      if (single) u.setSeries(seriesIndex, { show: !u.series[seriesIndex].show });
      else {
        const alone = u.series.every((s, i) => i === 0 || (i === seriesIndex) === s.show);
        for (let i = 1; i <= count; i++) u.setSeries(i, { show: alone || i === seriesIndex });
      }
    });
  };
}

/**
 * series: [{name, points: [[unixSeconds, value], ...]}] -> a line chart with a tooltip and a legend.
 * Points of all series are aligned on the union of their timestamps; a missing sample is a gap.
 */
export function timeSeries(series, { unit = "", height = 220, start, end, fixedMax } = {}) {
  const xs = [...new Set(series.flatMap((s) => s.points.map((p) => p[0])))].sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  const data = [xs, ...series.map((s) => {
    const ys = new Array(xs.length).fill(null);
    for (const [t, v] of s.points) ys[index.get(t)] = v !== null && Number.isFinite(v) ? v : null;
    return ys;
  })];
  const names = series.map((s) => s.name);
  const bandEdges = new Set(series.filter((s) => s.band).map((s) => s.name));
  const marked = new Set(series.filter((s) => s.marker).map((s) => s.name));
  const lines = series.length - marked.size;
  const colorOf = (name) => (bandEdges.has(name) ? BAND_STROKE : marked.has(name) ? MARKER
    : colorFor(name, { single: lines === 1 }));
  const host = el("div", { class: "plot" });
  const tip = tooltip(names, unit, (x) => absoluteTime(x), colorOf);
  let getPlot = () => null;
  const lg = legend(names, { unit, colorOf, onToggle: (i, single) => toggler(getPlot, names.length)(i, single) });
  const sparse = data.slice(1).every((ys) => ys.filter((v) => v !== null).length <= 3);
  // Whole numbers only (a state that is 0 or 1, a count): whole-number ticks, never "0.25".
  const whole = data.slice(1).every((ys) => ys.every((v) => v === null || Number.isInteger(v)));
  getPlot = mountWhenSized(host, (width) => {
    const u = new uPlot({
      width, height, legend: { show: false },
      cursor: { drag: { x: true, y: false }, points: { size: 7 } },
      scales: {
        x: { time: true, range: (_, min, max) => [start ?? min, end ?? max] },
        y: { range: (_, min, max) => [Math.min(0, min ?? 0), fixedMax ?? niceMax(max)] },
      },
      axes: [
        { stroke: "#5f6b7a", grid: { stroke: "#edf1f6" }, ticks: { stroke: "#dde3ec" }, space: 70 },
        { stroke: "#5f6b7a", grid: { stroke: "#edf1f6" }, ticks: { show: false }, size: axisSize(52),
          ...(whole ? { incrs: WHOLE_STEPS } : {}),
          values: (_, splits) => splits.map((v) => formatValue(v, unit, { axis: true })) },
      ],
      series: [{}, ...series.map(({ name, band, marker, dashed }) => (marker ? {
        label: name, stroke: MARKER, width: 2, paths: () => null,
        points: { show: true, size: 11, width: 2, stroke: MARKER, fill: "#fff" },
      } : {
        label: name, stroke: colorOf(name), width: band ? 1 : 1.8,
        dash: band ? [3, 3] : dashed ? [7, 4] : dashFor(name), spanGaps: false,
        points: { show: sparse && !band, size: 5, fill: colorOf(name) },
      }))],
      // Each interval: the area between its upper and lower edge (series listed upper, then lower).
      bands: series.flatMap((s, i) => (s.band && series[i + 1]?.band === s.band && /upper$/.test(s.name)
        ? [{ series: [i + 1, i + 2], fill: BAND_FILL }] : [])),
      hooks: { setCursor: [(plot) => { tip.update(plot); lg.update(plot, plot.cursor.idx); }],
        setSeries: [(plot) => lg.update(plot, plot.cursor.idx)] },
    }, data, host);
    u.over.append(tip.tip);
    lg.update(u, null);
    return u;
  });
  const markCount = series.filter((s) => s.marker).reduce((n, s) => n + s.points.length, 0);
  return el("div", { class: "chart-box", "data-chart": "timeseries", "data-series": String(lines),
    "data-markers": markCount ? String(markCount) : null }, host, lg.box);
}

const shorten = (text, max = 28) => (text.length > max ? `${text.slice(0, max - 1)}…` : text);

/**
 * Horizontal bars, one row per category: labels[i] with series[k].values[i]. `stacked` piles the series
 * (compute + disks + storage = total); otherwise they sit side by side.
 */
export function barChart(labels, series, { unit = "", stacked = false } = {}) {
  const n = labels.length, xs = labels.map((_, i) => i);
  const raw = series.map((s) => s.values.map((v) => (Number.isFinite(Number(v)) ? Number(v) : 0)));
  // Stacked: draw cumulative sums, the longest first, so each segment shows on top of the ones before it.
  const cumulative = raw.map((_, k) => xs.map((i) => raw.slice(0, k + 1).reduce((s, ys) => s + ys[i], 0)));
  const order = stacked ? series.map((_, k) => series.length - 1 - k) : series.map((_, k) => k);
  const drawn = order.map((k) => (stacked ? cumulative[k] : raw[k]));
  const names = order.map((k) => series[k].name);
  const rowHeight = stacked || series.length === 1 ? 24 : 12 * series.length + 10;
  const height = Math.max(110, n * rowHeight + 40);
  const labelChars = Math.min(28, Math.max(4, ...labels.map((l) => String(l).length)));
  const group = 0.8, each = group / (stacked ? 1 : series.length);
  const host = el("div", { class: "plot" });
  const tip = el("div", { class: "chart-tip", role: "tooltip" });
  tip.hidden = true;
  const showTip = (u) => {
    const idx = u.cursor.idx;
    if (idx === null || idx === undefined) { tip.hidden = true; return; }
    const rows = series.map((s, k) => el("div", { class: "tip-row" },
      el("i", { class: "swatch", style: { background: colorFor(s.name, { single: series.length === 1 }) } }), el("span", {}, s.name), el("b", {}, formatValue(raw[k][idx], unit))));
    const total = stacked && series.length > 1
      ? el("div", { class: "tip-row total" }, el("span", {}, "total"), el("b", {}, formatValue(cumulative[series.length - 1][idx], unit))) : null;
    tip.replaceChildren(el("div", { class: "tip-x" }, String(labels[idx])), ...rows, ...(total ? [total] : []));
    tip.hidden = false;
    const over = u.over.getBoundingClientRect();
    const left = Math.min(Math.max(0, u.cursor.left + 12), Math.max(0, over.width - tip.offsetWidth));
    tip.style.transform = `translate(${left}px, ${Math.max(0, Math.min(u.cursor.top + 12, over.height - tip.offsetHeight))}px)`;
  };
  const key = series.length > 1 ? el("div", { class: "legend", "data-testid": "legend" }, series.map((s) => el("span", { class: "lg-item" },
    el("i", { class: "swatch", style: { background: colorFor(s.name) } }), el("span", { class: "lg-name" }, s.name)))) : null;
  mountWhenSized(host, (width) => {
    const u = new uPlot({
      width, height, legend: { show: false },
      cursor: { drag: { x: false, y: false }, points: { show: false }, y: false },
      scales: {
        x: { time: false, ori: 1, dir: -1, range: [-0.5, n - 0.5] },
        y: { ori: 0, dir: 1, range: (_, min, max) => [Math.min(0, min), niceMax(max * 1.02)] },
      },
      axes: [
        { scale: "x", side: 3, splits: () => xs, values: (_, splits) => splits.map((i) => shorten(String(labels[i] ?? ""))),
          grid: { show: false }, ticks: { show: false }, size: Math.ceil(labelChars * 6.6) + 14, gap: 4, stroke: "#334155" },
        { scale: "y", side: 2, stroke: "#5f6b7a", grid: { stroke: "#edf1f6" }, ticks: { show: false }, space: 80,
          values: (_, splits) => splits.map((v) => formatValue(v, unit, { axis: true })) },
      ],
      series: [{}, ...drawn.map((_, j) => {
        const k = order[j];
        const disp = stacked || series.length === 1 ? undefined : {
          x0: { unit: 1, values: () => xs.map((i) => i - group / 2 + k * each) },
          size: { unit: 1, values: () => xs.map(() => each) },
        };
        const colour = colorFor(names[j], { single: series.length === 1 });
        return { label: names[j], fill: colour, stroke: colour, width: 0,
          paths: uPlot.paths.bars({ size: [disp ? each : 0.7, 40], align: disp ? 1 : 0, disp }),
          points: { show: false } };
      })],
      hooks: { setCursor: [showTip] },
    }, [xs, ...drawn], host);
    u.over.append(tip);
    return u;
  });
  return el("div", { class: "chart-box", "data-chart": "bar", "data-series": String(series.length), "data-bars": String(n) },
    host, key);
}
