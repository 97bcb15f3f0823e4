// An answer's `data` drawn as its `view` says (the presentation contract in docs/console.md): a time series as
// a line chart, a breakdown as bars with a totals table, rows as a sortable table, one object as details.
import { barChart, timeSeries } from "./charts.js";
import { el } from "./common.js";
import { epochSeconds, formatValue, humanLabel } from "./format.js";
import { dataTable, inferColumns, keyValues } from "./tables.js";

const isRow = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const isRows = (v) => Array.isArray(v) && v.length > 0 && v.every(isRow);

/** A dot path inside data ("points", "totals.total"); "" or absent is data itself. */
export function pick(data, path) {
  if (!path) return data;
  return String(path).split(".").reduce((v, k) => (v === null || v === undefined ? undefined : v[k]), data);
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

function timeseriesView(rows, view) {
  const x = view.x || "ts", ys = view.y?.length ? view.y : Object.keys(rows[0]).filter((k) => typeof rows[0][k] === "number");
  let series;
  if (view.series) {
    const groups = new Map();
    for (const r of rows) {
      const name = String(r[view.series]);
      if (!groups.has(name)) groups.set(name, []);
      groups.get(name).push([epochSeconds(r[x]), Number(r[ys[0]])]);
    }
    series = [...groups].map(([name, points]) => ({ name, points }));
  } else {
    const value = (r, key) => (r[key] === null || r[key] === undefined ? null : Number(r[key]));
    series = ys.map((y) => ({ name: view.labels?.[y] || humanLabel(y), points: rows.map((r) => [epochSeconds(r[x]), value(r, y)]) }));
    // An interval (a forecast's 80 % and 95 %): its two edges as series, the area between them shaded.
    for (const band of view.bands || []) {
      for (const edge of ["upper", "lower"]) {
        series.push({ name: `${band.label || "interval"} ${edge}`, band: band.label || "interval",
          points: rows.map((r) => [epochSeconds(r[x]), value(r, band[edge])]) });
      }
    }
  }
  series.forEach((s) => s.points.sort((a, b) => a[0] - b[0]));
  const fixedMax = view.unit === "%" && series.some((s) => s.points.some((p) => p[1] > 50)) ? 100 : undefined;
  return timeSeries(series, { unit: view.unit || "", height: 240, fixedMax });
}

function barView(rows, view) {
  const x = view.x || Object.keys(rows[0]).find((k) => typeof rows[0][k] === "string");
  const ys = view.y?.length ? view.y : Object.keys(rows[0]).filter((k) => typeof rows[0][k] === "number").slice(0, 1);
  const limit = view.limit || 30;
  const shown = rows.slice(0, limit);
  const chart = barChart(shown.map((r) => String(r[x])),
    ys.map((y) => ({ name: view.labels?.[y] || humanLabel(y), values: shown.map((r) => r[y]) })),
    { unit: view.unit || "", stacked: Boolean(view.stacked) });
  return [chart, rows.length > limit ? el("p", { class: "muted small" }, `The chart shows the first ${limit} of ${rows.length}; the table has them all.`) : null];
}

/** data + view -> nodes. Without a view: a table for rows, details for one object, text otherwise. */
export function renderView(data, view, { filename = "answer.csv" } = {}) {
  const v = isRow(view) ? view : {};
  const rows = rowsOf(data, v);
  const parts = [];
  if (v.title) parts.push(el("h3", { class: "view-title" }, v.title));
  if (Array.isArray(v.stats) && v.stats.length) parts.push(stats(data, v, isRows(rows) ? rows : null));
  const table = () => dataTable(rows, { columns: v.columns, totals: v.totals, sort: v.sort, filename });
  if (isRow(data) && (v.type === "detail" || (!v.type && v.rows === undefined))) {
    parts.push(keyValues(Object.fromEntries(Object.entries(data).filter(([, val]) => !isRows(val)))), otherRows(data, null));
    return parts;
  }
  if (isRows(rows)) {
    if (v.type === "timeseries") {
      parts.push(timeseriesView(rows, v), el("details", { class: "as-table" },
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

/** Further lists of rows inside an object answer (an instance's disks), each as its own table. */
function otherRows(data, shown) {
  return Object.entries(data).filter(([, val]) => isRows(val) && val !== shown)
    .map(([key, val]) => [el("h3", { class: "view-title" }, humanLabel(key)), dataTable(val, { columns: inferColumns(val), testid: "answer-subtable" })]);
}
