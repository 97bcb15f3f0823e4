// Tables of answer rows: columns with units (money, percent, relative ages), sortable headers, a totals row,
// CSV export; on a phone each row becomes a card of label/value pairs, so no column is lost.
import { el } from "./common.js";
import { absoluteTime, formatValue, guessUnit, humanLabel, isCurrency } from "./format.js";

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

/** A dot path inside data ("points", "totals.total", "plans.TWELVE_MONTH.monthly_saving"); "" or absent is data. */
export function pick(data, path) {
  if (!path) return data;
  return String(path).split(".").reduce((v, k) => (v === null || v === undefined ? undefined : v[k]), data);
}

/** A row's value for a column key: the key itself, else a dot path into nested objects. */
export const cellValue = (row, key) => (row !== null && typeof row === "object" && key in row ? row[key] : pick(row, key));

// Text longer than this wraps in its cell instead of widening the table (a recommendation's reason).
const LONG_TEXT = 48;

/** Columns of `rows`: scalars first, nested objects last, at most `max`; units guessed from names and values. */
export function inferColumns(rows, max = 14) {
  const keys = [];
  for (const row of rows.slice(0, 200)) for (const k of Object.keys(row)) if (!keys.includes(k)) keys.push(k);
  const nested = (k) => rows.some((r) => isObject(r[k]) || Array.isArray(r[k]));
  return keys.sort((a, b) => nested(a) - nested(b)).slice(0, max)
    .map((key) => ({ key, label: humanLabel(key), unit: guessUnit(key, rows.map((r) => r[key])) }));
}

function normalizeColumns(columns, rows) {
  if (!Array.isArray(columns) || !columns.length) return inferColumns(rows);
  const guessed = new Map(inferColumns(rows, 100).map((c) => [c.key, c]));
  return columns.map((c) => (typeof c === "string" ? { key: c } : c)).map((c) => ({
    key: c.key, label: c.label || humanLabel(c.key.split(".").pop()),
    unit: c.unit ?? guessed.get(c.key)?.unit ?? guessUnit(c.key, rows.map((r) => cellValue(r, c.key))),
  }));
}

function plain(value) {
  if (value === null || value === undefined) return "";
  if (Array.isArray(value)) return value.map((v) => (isObject(v) ? JSON.stringify(v) : String(v))).join(", ");
  if (isObject(value)) return Object.entries(value).map(([k, v]) => `${k}=${isObject(v) ? JSON.stringify(v) : v}`).join(" ");
  return String(value);
}

function cellContent(value, unit) {
  if (value === null || value === undefined) return "";
  if (isObject(value)) {
    return Object.entries(value).map(([k, v]) => el("span", { class: "chip" }, el("i", {}, k), isObject(v) ? JSON.stringify(v) : String(v)));
  }
  if (Array.isArray(value)) return value.map((v) => (isObject(v) ? (v.name || JSON.stringify(v)) : String(v))).join(", ");
  if (unit === "datetime") return el("time", { datetime: String(value), title: absoluteTime(value) }, formatValue(value, "datetime"));
  if (typeof value === "boolean") return value ? "yes" : "no";
  if (typeof value === "number") return formatValue(value, unit || "", { precise: true });
  return String(value);
}

function compare(a, b) {
  const na = a === null || a === undefined || a === "", nb = b === null || b === undefined || b === "";
  if (na || nb) return na - nb; // empty cells last either way
  if (typeof a === "number" && typeof b === "number") return a - b;
  return plain(a).localeCompare(plain(b), undefined, { numeric: true });
}

function csvCell(value) {
  const text = plain(value);
  return /[",\n\r]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

/** CSV of every row (not only the visible page), raw values, a header of column keys. */
export function toCsv(rows, columns) {
  const lines = [columns.map((c) => csvCell(c.key)).join(",")];
  for (const row of rows) lines.push(columns.map((c) => csvCell(cellValue(row, c.key))).join(","));
  return lines.join("\r\n") + "\r\n";
}

function download(filename, text) {
  const url = URL.createObjectURL(new Blob([text], { type: "text/csv;charset=utf-8" }));
  const a = el("a", { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

/**
 * rows -> a sortable table. options: columns [{key, label, unit}], totals (true: every money column, keys, or
 * {key: figure}),
 * sort {key, desc}, filename for the CSV.
 */
export function dataTable(rows, { columns, totals, sort, filename = "answer.csv", testid = "answer-table" } = {}) {
  const cols = normalizeColumns(columns, rows);
  // totals: true (every money column), [keys] (summed), or {key: figure} (the answer's own total, unrounded;
  // a null figure is summed).
  const given = isObject(totals) ? totals : {};
  const totalKeys = totals === true ? cols.filter((c) => isCurrency(c.unit)).map((c) => c.key)
    : Array.isArray(totals) ? totals : Object.keys(given);
  const state = { key: sort?.key ?? null, desc: sort?.desc ?? false };
  const tbody = el("tbody");
  const numeric = (key) => typeof rows.map((r) => cellValue(r, key)).find((v) => v !== null && v !== undefined) === "number";
  const long = new Set(cols.filter((c) => rows.some((r) => plain(cellValue(r, c.key)).length > LONG_TEXT)).map((c) => c.key));
  const heads = cols.map((c) => {
    const button = el("button", { type: "button", class: "sort", title: `sort by ${c.label}` }, c.label);
    const th = el("th", { scope: "col", "data-key": c.key, class: numeric(c.key) ? "num" : "" }, button);
    button.addEventListener("click", () => {
      state.desc = state.key === c.key ? !state.desc : numeric(c.key);
      state.key = c.key;
      draw();
    });
    return th;
  });
  const draw = () => {
    const sorted = state.key
      ? [...rows].sort((a, b) => compare(cellValue(a, state.key), cellValue(b, state.key)) * (state.desc ? -1 : 1)) : rows;
    heads.forEach((th) => {
      th.setAttribute("aria-sort", th.dataset.key === state.key ? (state.desc ? "descending" : "ascending") : "none");
    });
    tbody.replaceChildren(...sorted.map((r) => el("tr", {}, cols.map((c) => {
      const value = cellValue(r, c.key);
      return el("td", { class: typeof value === "number" ? "num" : long.has(c.key) ? "wrap" : "", "data-label": c.label,
        "data-key": c.key }, el("span", { class: "cell" }, cellContent(value, c.unit)));
    }))));
  };
  draw();
  const foot = totalKeys.length ? el("tfoot", {}, el("tr", { class: "totals", "data-testid": "totals" }, cols.map((c, i) => {
    if (totalKeys.includes(c.key)) {
      const sum = typeof given[c.key] === "number" ? given[c.key]
        : rows.reduce((s, r) => s + (Number(cellValue(r, c.key)) || 0), 0);
      return el("td", { class: "num", "data-label": `Total ${c.label.toLowerCase()}`, "data-key": c.key },
        formatValue(Math.round(sum * 100) / 100, c.unit));
    }
    return el("td", { "data-label": "", class: i === 0 ? "total-label" : "empty" }, i === 0 ? `Total (${rows.length})` : "");
  }))) : null;
  const csv = el("button", { type: "button", class: "secondary small-btn", "data-testid": "csv" }, "Download CSV");
  csv.addEventListener("click", () => download(filename, toCsv(rows, cols)));
  const table = el("table", { class: "data", "data-testid": testid, "data-rows": String(rows.length) },
    el("thead", {}, el("tr", {}, heads)), tbody, foot);
  return el("div", { class: "table-block" },
    el("div", { class: "table-tools" }, el("span", { class: "muted small" }, `${rows.length} row${rows.length === 1 ? "" : "s"}`), csv),
    el("div", { class: "table-wrap" }, table));
}

/** An object's scalar fields as a two-column list (an instance's details). */
export function keyValues(obj) {
  const entries = Object.entries(obj).filter(([, v]) => !Array.isArray(v) || !v.every(isObject));
  return el("dl", { class: "kv-list", "data-testid": "answer-kv" }, entries.map(([k, v]) => [
    el("dt", {}, humanLabel(k)), el("dd", {}, cellContent(v, guessUnit(k, [v]))),
  ]));
}
