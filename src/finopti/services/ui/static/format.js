// Numbers, money, units and times as people read them. One place, used by charts, tables and log rows.

const CURRENCY = /^[A-Z]{3}$/;
const ISO_TIME = /^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}/;

export const isCurrency = (unit) => typeof unit === "string" && CURRENCY.test(unit);
export const isTimestamp = (value) => typeof value === "string" && ISO_TIME.test(value) && !Number.isNaN(Date.parse(value));

/** Seconds since the epoch from an ISO 8601 string, epoch seconds or epoch milliseconds. */
export function epochSeconds(value) {
  if (typeof value === "number") return value > 1e11 ? value / 1000 : value;
  const t = Date.parse(value);
  return Number.isNaN(t) ? null : t / 1000;
}

function compact(x) {
  const a = Math.abs(x);
  return a >= 100 ? x.toFixed(0) : a >= 10 ? x.toFixed(1) : x.toFixed(2).replace(/\.?0+$/, "") || "0";
}

const moneyFormats = new Map();
export function formatMoney(v, currency = "USD", { whole = false } = {}) {
  const key = `${currency}:${whole}`;
  if (!moneyFormats.has(key)) {
    moneyFormats.set(key, new Intl.NumberFormat(undefined, { style: "currency", currency,
      minimumFractionDigits: whole ? 0 : 2, maximumFractionDigits: whole ? 0 : 2 }));
  }
  return moneyFormats.get(key).format(v);
}

/**
 * A value in its unit. Units: Grafana's ids (reqps, percentunit, s, ms, short), ISO 4217 currency codes
 * (USD), "%" (0-100), "count" (whole numbers), "datetime" (relative age), or any other suffix (GB, vCPU).
 */
const decimals = new Intl.NumberFormat(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });

/** `precise`: a table cell keeps the data's two decimals ("2.50%"); charts and stats read shorter ("2.5%"). */
export function formatValue(v, unit, { axis = false, precise = false } = {}) {
  if (v === null || v === undefined || (typeof v === "number" && Number.isNaN(v))) return "–";
  if (unit === "datetime") return relativeAge(v);
  if (typeof v !== "number") return String(v);
  const a = Math.abs(v);
  if (isCurrency(unit)) return formatMoney(v, unit, { whole: axis && Number.isInteger(v) });
  const exact = (x) => (Number.isInteger(x) ? x.toLocaleString() : decimals.format(x));
  if (precise && (unit === "%" || unit === "percent")) return `${exact(v)}%`;
  if (precise && !["percentunit", "s", "ms", "reqps", "count", "datetime"].includes(unit)) {
    return unit && unit !== "short" ? `${exact(v)} ${unit}` : exact(v);
  }
  switch (unit) {
    case "percentunit": return `${compact(v * 100)}%`;
    case "%": case "percent": return `${compact(v)}%`;
    case "s": return a === 0 ? "0 s" : a < 1 ? `${compact(v * 1000)} ms` : `${compact(v)} s`;
    case "ms": return a >= 1000 ? `${compact(v / 1000)} s` : `${compact(v)} ms`;
    case "reqps": return `${compact(v)}/s`;
    case "count": return Math.round(v).toLocaleString();
    case "short": case "": case undefined: case null:
      if (a >= 1e6) return `${compact(v / 1e6)}M`;
      if (a >= 1e4) return `${compact(v / 1e3)}k`;
      return Number.isInteger(v) ? v.toLocaleString() : compact(v);
    default: return `${Number.isInteger(v) ? v.toLocaleString() : compact(v)} ${unit}`;
  }
}

const UNITS = [["year", 365 * 86400], ["month", 30 * 86400], ["week", 7 * 86400], ["day", 86400], ["hour", 3600],
  ["minute", 60], ["second", 1]];
const relative = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });

/** "3 days ago", "in 2 hours"; `now` in epoch seconds (default: the browser's clock). */
export function relativeAge(ts, now = Date.now() / 1000) {
  const t = epochSeconds(ts);
  if (t === null) return String(ts);
  const diff = t - now;
  for (const [unit, seconds] of UNITS) {
    if (Math.abs(diff) >= seconds || unit === "second") return relative.format(Math.round(diff / seconds), unit);
  }
  return "";
}

/** Local date and time, to the second (tooltips next to relative ages). */
export function absoluteTime(ts) {
  const t = epochSeconds(ts);
  if (t === null) return String(ts);
  return new Date(t * 1000).toLocaleString([], { hour12: false });
}

/** Clock time with milliseconds, for log lines. */
export function clockTime(ts) {
  if (!ts) return "";
  const d = new Date(ts);
  if (Number.isNaN(d.getTime())) return String(ts);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

/** Duration in milliseconds as "850 ms", "2.4 s", "3 min 5 s". */
export function formatDuration(ms) {
  if (ms === null || ms === undefined || Number.isNaN(Number(ms))) return "–";
  const v = Number(ms);
  if (v < 1) return `${v.toFixed(2)} ms`;
  if (v < 1000) return `${v < 10 ? v.toFixed(1) : Math.round(v)} ms`;
  if (v < 60_000) return `${(v / 1000).toFixed(v < 10_000 ? 2 : 1)} s`;
  return `${Math.floor(v / 60_000)} min ${Math.round((v % 60_000) / 1000)} s`;
}

/** "monthly_saving_usd" -> "Monthly saving"; the unit goes in the cell, not the header. */
export function humanLabel(key) {
  const text = String(key).replace(/_(usd|eur|gbp|pct|percent)$/i, "").replaceAll("_", " ").trim();
  return text.charAt(0).toUpperCase() + text.slice(1);
}

/** The unit a column probably has, from its name and values, when the answer's view does not say. */
export function guessUnit(key, values) {
  const k = String(key).toLowerCase();
  const m = k.match(/_(usd|eur|gbp)$/);
  if (m) return m[1].toUpperCase();
  if (values.some((v) => v !== null && v !== undefined) && values.every((v) => v === null || v === undefined || isTimestamp(v))) {
    return "datetime";
  }
  if (/(^|_)(cpu|memory)(_|$)|_pct$|_percent$/.test(k) && values.every((v) => v === null || typeof v === "number")) return "%";
  if (/_gb$/.test(k)) return "GB";
  return "";
}
