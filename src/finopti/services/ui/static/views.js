// An answer's `data` drawn as its `view` says (the presentation contract in docs/console.md): a time series as
// a line chart, a breakdown as bars with a totals table, rows as a sortable table, one object as details; then
// the view's further tables (an anomaly list under its chart, the resources behind a breakdown).
import { barChart, timeSeries } from "./charts.js";
import { el } from "./common.js";
import { epochSeconds, formatValue, humanLabel } from "./format.js";
import { cellValue, dataTable, inferColumns, keyValues, pick } from "./tables.js";

const isRow = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const isRows = (v) => Array.isArray(v) && v.length > 0 && v.every(isRow);

/** A view's `totals`; as {key: dot path in data}, each path is read (the answer's own unrounded total). */
function totalsOf(data, totals) {
  if (!isRow(totals)) return totals;
  return Object.fromEntries(Object.entries(totals).map(([key, path]) => [key, path ? pick(data, path) ?? null : null]));
}

function rowsOf(data, view) {
  if (view && view.rows !== undefined) return pick(data, view.rows);
  if (Array.isArray(data)) return data;
  if (isRow(data)) return Object.values(data).find(isRows) || null;
  return null;
}

function stats(data, view, rows) {
  return el("div", { class: "stats", "data-testid": "answer-stats" }, view.stats.map((s) => {
    const value = s.value ?? (s.key ? pick(data, s.key) : undefined) ?? (s.of && rows ? aggregate(rows.map((r) => r[s.of]), s.agg) : undefined);
    return el("div", { class: "stat-box" }, el("span", {}, s.label || humanLabel(s.key || s.of || "")),
      el("b", {}, formatValue(typeof value === "number" ? value : value ?? null, s.unit ?? view.unit)));
  }));
}

function aggregate(values, agg = "sum") {
  const xs = values.map(Number).filter(Number.isFinite);
  if (!xs.length) return null;
  if (agg === "max") return Math.max(...xs);
  if (agg === "min") return Math.min(...xs);
  if (agg === "avg") return xs.reduce((a, b) => a + b, 0) / xs.length;
  return xs.reduce((a, b) => a + b, 0);
}

/**
 * `markers` {rows, x, series, label?}: points of interest (an anomaly's day on its service's line) drawn as rings
 * on the line of the row's `series` value (or of the only line), as one more legend entry.
 */
function markers(data, rows, view, x) {
  const m = view.markers;
  const found = m && m.rows !== undefined ? pick(data, m.rows) : null;
  if (!isRows(found)) return null;
  const ys = view.y?.length ? view.y : [];
  const points = found.map((mark) => {
    const key = m.series ? String(mark[m.series]) : ys[0];
    const row = rows.find((r) => String(r[x]) === String(mark[m.x || x]));
    const v = row ? cellValue(row, key) : null;
    return [epochSeconds(mark[m.x || x]), v === null || v === undefined ? null : Number(v)];
  }).filter((p) => p[0] !== null && p[1] !== null);
  return points.length ? { name: m.label || "marked", marker: true, points } : null;
}

function timeseriesView(data, rows, view) {
  const x = view.x || "ts", ys = view.y?.length ? view.y : Object.keys(rows[0]).filter((k) => typeof rows[0][k] === "number");
  let series;
  if (view.series) {
    const groups = new Map();
    for (const r of rows) {
      const name = String(r[view.series]);
      if (!groups.has(name)) groups.set(name, []);
      groups.get(name).push([epochSeconds(r[x]), Number(cellValue(r, ys[0]))]);
    }
    series = [...groups].map(([name, points]) => ({ name, points }));
  } else {
    const value = (r, key) => { const v = cellValue(r, key); return v === null || v === undefined ? null : Number(v); };
    series = ys.map((y) => ({ name: view.labels?.[y] || humanLabel(y), points: rows.map((r) => [epochSeconds(r[x]), value(r, y)]) }));
    // `joins` {forecast: "actual"}: a line that continues another starts at that one's last point (no gap),
    // dashed.
    for (const [line, from] of Object.entries(view.joins || {})) {
      const to = series[ys.indexOf(line)], before = series[ys.indexOf(from)];
      const last = before?.points.filter((pt) => pt[1] !== null).pop();
      const at = last && to?.points.find((pt) => pt[0] === last[0]);
      if (at && at[1] === null) at[1] = last[1];
      if (to) to.dashed = true; // what is projected is drawn dashed, what happened solid
    }
    // An interval (a forecast's 80 % and 95 %): its two edges as series, the area between them shaded.
    for (const band of view.bands || []) {
      for (const edge of ["upper", "lower"]) {
        series.push({ name: `${band.label || "interval"} ${edge}`, band: band.label || "interval",
          points: rows.map((r) => [epochSeconds(r[x]), value(r, band[edge])]) });
      }
    }
  }
  const marks = markers(data, rows, view, x);
  if (marks) series.push(marks);
  series.forEach((s) => s.points.sort((a, b) => a[0] - b[0]));
  const fixedMax = view.unit === "%" && series.some((s) => s.points.some((p) => p[1] > 50)) ? 100 : undefined;
  return timeSeries(series, { unit: view.unit || "", height: 240, fixedMax });
}

function barView(rows, view) {
  const x = view.x || Object.keys(rows[0]).find((k) => typeof rows[0][k] === "string");
  const ys = view.y?.length ? view.y : Object.keys(rows[0]).filter((k) => typeof rows[0][k] === "number").slice(0, 1);
  const limit = view.limit || 30;
  const shown = rows.slice(0, limit);
  const values = (y) => shown.map((r) => cellValue(r, y));
  const chart = barChart(shown.map((r) => String(r[x])),
    ys.map((y) => ({ name: view.labels?.[y] || humanLabel(y.split(".").pop()), values: values(y) })),
    { unit: view.unit || "", stacked: Boolean(view.stacked) });
  return [chart, rows.length > limit ? el("p", { class: "muted small" }, `The chart shows the first ${limit} of ${rows.length}; the table has them all.`) : null];
}

/** data + view -> nodes. Without a view: a table for rows, details for one object, text otherwise. */
export function renderView(data, view, { filename = "answer.csv" } = {}) {
  const v = isRow(view) ? view : {};
  const parts = mainView(data, v, filename);
  for (const [i, t] of (Array.isArray(v.tables) ? v.tables : []).entries()) {
    parts.push(furtherTable(data, t, filename.replace(/\.csv$/, `-${t.rows || i}.csv`)));
  }
  return parts;
}

function mainView(data, v, filename) {
  const rows = rowsOf(data, v);
  const parts = [];
  if (v.title) parts.push(el("h3", { class: "view-title" }, v.title));
  if (Array.isArray(v.stats) && v.stats.length) parts.push(stats(data, v, isRows(rows) ? rows : null));
  const table = () => dataTable(rows, { columns: v.columns, totals: totalsOf(data, v.totals), sort: v.sort, filename });
  if (isRow(data) && (v.type === "detail" || (!v.type && v.rows === undefined))) {
    parts.push(keyValues(Object.fromEntries(Object.entries(data).filter(([, val]) => !isRows(val)))), otherRows(data, null));
    return parts;
  }
  if (isRows(rows)) {
    if (v.type === "timeseries") {
      parts.push(timeseriesView(data, rows, v), el("details", { class: "as-table" },
        el("summary", {}, `Show the ${rows.length} points as a table`), table()));
      return parts;
    }
    if (v.type === "bar") {
      parts.push(barView(rows, v), table());
      return parts;
    }
    parts.push(table());
    return parts;
  }
  if (Array.isArray(rows) && !rows.length && v.empty) parts.push(el("p", { class: "muted", "data-testid": "answer-empty" }, v.empty));
  if (Array.isArray(data) && data.length) parts.push(el("p", {}, data.map((d) => String(d)).join(", ")));
  return parts;
}

/** One of the view's `tables`: {rows, title, columns, totals, sort, empty}, under a heading of its own. */
function furtherTable(data, t, filename) {
  const rows = isRow(t) ? pick(data, t.rows) : null;
  const title = el("h3", { class: "view-title" }, t.title || humanLabel(String(t.rows || "")));
  if (!isRows(rows)) {
    return Array.isArray(rows) && t.empty ? el("section", { "data-testid": "further-table" }, title, el("p", { class: "muted" }, t.empty)) : null;
  }
  return el("section", { "data-testid": "further-table", "data-rows-of": t.rows },
    title, dataTable(rows, { columns: t.columns, totals: totalsOf(data, t.totals), sort: t.sort, filename,
      testid: "answer-subtable" }));
}

/** Further lists of rows inside an object answer (an instance's disks), each as its own table. */
function otherRows(data, shown) {
  return Object.entries(data).filter(([, val]) => isRows(val) && val !== shown)
    .map(([key, val]) => [el("h3", { class: "view-title" }, humanLabel(key)), dataTable(val, { columns: inferColumns(val), testid: "answer-subtable" })]);
}
