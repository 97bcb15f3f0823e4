// Platform Overview: rendered from the dashboard model (/console/model.json), the same model Grafana renders.
import { timeSeries } from "./charts.js";
import { api, consoleAccess, el, errorMessage, mayUse, mountSignIn, roleNotice, session, signInNotice } from "./common.js";
import { formatDuration, formatValue } from "./format.js";
import { serviceGraph } from "./graph.js";

const WINDOWS = { "5m": 300, "15m": 900, "1h": 3600, "6h": 21600 };
const state = { window: "5m", timer: null, model: null };
const selected = {}; // variable name -> chosen value ("" is All)

class Denied extends Error {}

function interpolate(query, values) {
  return query.replace(/\$(\w+)/g, (m, name) => (name in values ? values[name] : m));
}

function legendName(template, metric) {
  if (!template) return Object.entries(metric).filter(([k]) => k !== "__name__").map(([k, v]) => `${k}=${v}`).join(" ") || "value";
  return template.replace(/\{\{\s*(\w+)\s*\}\}/g, (_, k) => metric[k] ?? "").replace(/\s+/g, " ").trim() || "value";
}

// Regex-escaped, and each backslash doubled for the PromQL string literal.
const escapeRegex = (v) => v.replace(/[.*+?^${}()|[\]\\]/g, "\\\\$&");

function values() {
  // A chosen value as an exact regex, All as a regex that matches anything (as Grafana does).
  const out = { __range: state.window };
  for (const [name, v] of Object.entries(selected)) out[name] = v ? escapeRegex(v) : ".*";
  return out;
}

async function query(path) {
  const r = await api(path);
  if (r.status === 401 || r.status === 403) throw new Denied(errorMessage(r));
  if (!r.ok) throw new Error(errorMessage(r));
  return r.body;
}

async function variableSelect(variable, onChange) {
  const select = el("select", { "aria-label": variable.label || variable.name, "data-variable": variable.name },
    el("option", { value: "" }, "All"), (variable.options || []).map((o) => el("option", { value: o }, o)));
  select.value = variable.default || "";
  selected[variable.name] = select.value;
  const fill = async () => {
    if (variable.kind !== "label_values" || variable.values_from !== "metrics") return;
    const label = variable.values_label || variable.name;
    const params = new URLSearchParams();
    params.append("match[]", interpolate(variable.selector, values()));
    const r = await api(`/api/metrics/label/${encodeURIComponent(label)}/values?${params}`);
    const current = select.value;
    const options = r.ok && r.body && Array.isArray(r.body.data) ? r.body.data : [];
    select.replaceChildren(el("option", { value: "" }, "All"), ...options.map((o) => el("option", { value: o }, o)));
    select.value = options.includes(current) ? current : "";
    selected[variable.name] = select.value;
  };
  select.addEventListener("change", () => { selected[variable.name] = select.value; onChange(); });
  return { node: el("label", {}, variable.label || variable.name, select), fill };
}

function emptyReason(panel, extra) {
  return el("div", { class: "empty", "data-testid": "empty" }, extra ? `${extra} ` : "",
    panel.expected_empty_reason || "No data in the window.");
}

async function timeseries(panel, body) {
  const end = Math.floor(Date.now() / 1000), start = end - WINDOWS[state.window];
  const step = Math.max(5, Math.round((end - start) / 120));
  const series = [];
  for (const q of panel.queries.filter((q) => q.type === "metric")) {
    const params = new URLSearchParams({ query: interpolate(q.promql, values()), start, end, step });
    const data = await query(`/api/metrics/query_range?${params}`);
    for (const s of data.data.result || []) {
      series.push({ name: legendName(q.legend, s.metric), points: s.values.map(([t, v]) => [Number(t), Number(v)]) });
    }
  }
  if (!series.some((s) => s.points.length)) return body.replaceChildren(emptyReason(panel));
  series.sort((a, b) => a.name.localeCompare(b.name));
  // Series that stayed at 0 the whole window (a closed circuit, a service nothing was shed from) are named in one
  // line rather than given a legend entry and a flat line each; when every series did, the line is the panel.
  const moved = series.filter((s) => s.points.some((p) => p[1] !== 0));
  const still = series.filter((s) => !moved.includes(s));
  const zeros = el("details", { class: "muted small zero-series", "data-testid": "zero-series" },
    el("summary", {}, `${moved.length ? `${still.length} more` : `All ${still.length}`} series at `
      + `${formatValue(0, panel.unit)} throughout the window`),
    el("p", { "data-testid": "zero-names" }, still.map((s) => s.name).join(", ")));
  if (!moved.length && still.length > 3) return body.replaceChildren(zeros);
  const drawn = moved.length ? moved : series;
  // A young platform has data only at the end of the window: start the axis near the first sample.
  const first = Math.min(...drawn.flatMap((s) => s.points.map((p) => p[0])));
  const from = Math.max(start, Math.min(end - 60, first - 2 * step));
  const fixedMax = panel.unit === "percentunit" && drawn.some((s) => s.points.some((p) => p[1] > 0.5)) ? 1 : undefined;
  body.replaceChildren(timeSeries(drawn, { unit: panel.unit, start: from, end, height: 200, fixedMax }),
    ...(moved.length && still.length ? [zeros] : []));
}

async function stat(panel, body) {
  const items = [];
  for (const q of panel.queries.filter((q) => q.type === "metric")) {
    const params = new URLSearchParams({ query: interpolate(q.promql, values()) });
    const data = await query(`/api/metrics/query?${params}`);
    const result = data.data.result || [];
    items.push({ label: q.legend, value: result.length ? Number(result[0].value[1]) : null });
  }
  if (items.every((i) => i.value === null)) return body.replaceChildren(emptyReason(panel, "No series."));
  // Counts of events are whole numbers (the model rounds increase()).
  body.replaceChildren(...items.map((i) => el("div", { class: "stat" }, formatValue(i.value ?? 0, panel.unit === "short" ? "count" : panel.unit),
    i.label ? el("small", {}, i.label) : null)));
}

async function logLines(q, services = []) {
  const params = new URLSearchParams({ limit: "5000", start: String(Date.now() - WINDOWS[state.window] * 1000) });
  for (const s of services) params.append("service", s);
  for (const l of (q.level || "").split("|")) if (l && !l.startsWith("$")) params.append("level", l);
  return (await query(`/api/logs?${params}`)).lines || [];
}

// A text line's own time (Envoy's `[2026-11-26 12:08:17.666]`, supervisord's `2026-11-26 12:07:43,954`): the line
// is dated by it already, and left in the message it would make every repeat of a message a message of its own.
const LEADING_TIME = /^\[?\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d{1,9})?\]?\s*/;

async function logTable(panel, body) {
  const q = panel.queries.find((q) => q.type === "log");
  const services = (q.services || []).map((s) => (s.startsWith("$") ? selected[s.slice(1)] : s)).filter(Boolean);
  const drop = new Set(q.drop_events || []);
  const lines = (await logLines(q, services)).filter((l) => !(l.line && typeof l.line === "object" && drop.has(l.line.event)));
  const by = q.top_by && q.top_by.length ? q.top_by : ["service", "message"];
  const counts = new Map();
  for (const line of lines) {
    const obj = line.line && typeof line.line === "object" ? line.line : { message: String(line.line).replace(LEADING_TIME, "") };
    const key = by.map((k) => (k === "service" ? line.service : obj[k] ?? "")).map(String);
    const id = JSON.stringify(key);
    const item = counts.get(id) || { key, count: 0 };
    item.count += 1;
    counts.set(id, item);
  }
  if (!counts.size) return body.replaceChildren(emptyReason(panel));
  const rows = [...counts.values()].sort((a, b) => b.count - a.count).slice(0, q.limit || 20);
  body.replaceChildren(el("div", { class: "table-wrap" }, el("table", { class: "data" },
    el("thead", {}, el("tr", {}, by.map((k) => el("th", {}, el("span", { class: "th" }, k))), el("th", { class: "num" }, el("span", { class: "th" }, "count")))),
    el("tbody", {}, rows.map((r) => el("tr", {}, r.key.map((v, i) => el("td", { class: "wrap", "data-label": by[i] }, v)),
      el("td", { class: "num", "data-label": "count" }, r.count)))))));
}

/** Edges of the service graph from the gateway's access lines (what the model's graph query describes). */
export function graphEdges(lines, exclude) {
  const edges = new Map();
  for (const entry of lines) {
    const o = entry.line;
    if (entry.service !== "gateway" || !o || typeof o !== "object" || o.message !== "access") continue;
    const target = String(o.upstream_service || "").split(".")[0] || "gateway";
    if (exclude.has(target)) continue;
    const source = o.source ? String(o.source).split("/").pop() : "clients";
    const key = `${source}→${target}`;
    const edge = edges.get(key) || { source, target, requests: 0, errors: 0, durations: [] };
    edge.requests += 1;
    const status = Number(o.status);
    if (!status || status >= 500) edge.errors += 1;
    edge.durations.push(Number(o.duration_ms) || 0);
    edges.set(key, edge);
  }
  return [...edges.values()].map((e) => {
    const sorted = e.durations.sort((a, b) => a - b);
    return { source: e.source, target: e.target, requests: e.requests, errors: e.errors,
      p95_ms: sorted[Math.max(0, Math.ceil(0.95 * sorted.length) - 1)] };
  });
}

// The graph runs left to right on a desktop, top to bottom on a phone: redrawn when the width crosses over (a
// rotation, a resized window), so its labels keep their size instead of being scaled down to fit.
const PHONE = window.matchMedia("(max-width: 720px)");
let shownGraph = null; // {node, edges, seconds}
PHONE.addEventListener("change", () => {
  if (!shownGraph?.node.isConnected) return;
  const node = serviceGraph(shownGraph.edges, { seconds: shownGraph.seconds, vertical: PHONE.matches });
  shownGraph.node.replaceWith(node);
  shownGraph.node = node;
});

async function graph(panel, body) {
  const q = panel.queries.find((q) => q.type === "graph");
  const platform = selected.traffic === "" || selected.traffic === "platform";
  const lines = await logLines(q, ["gateway"]);
  const edges = graphEdges(lines, new Set(platform ? [] : q.exclude_services || []));
  if (!edges.length) return body.replaceChildren(emptyReason(panel));
  const seconds = WINDOWS[state.window];
  shownGraph = { node: serviceGraph(edges, { seconds, vertical: PHONE.matches }), edges, seconds };
  body.replaceChildren(shownGraph.node,
    el("details", { class: "as-table" }, el("summary", {}, `The ${edges.length} edges as a table`),
      el("div", { class: "table-wrap" }, el("table", { class: "data graph-edges", "data-testid": "graph-edges" },
        el("thead", {}, el("tr", {}, ["caller", "callee", "requests", "req/s", "errors", "p95"].map((h) => el("th", {}, el("span", { class: "th" }, h))))),
        el("tbody", {}, edges.sort((a, b) => b.requests - a.requests).map((e) => el("tr", {},
          el("td", { "data-label": "caller" }, e.source), el("td", { "data-label": "callee" }, e.target),
          el("td", { class: "num", "data-label": "requests" }, e.requests.toLocaleString()),
          el("td", { class: "num", "data-label": "req/s" }, formatValue(e.requests / seconds, "reqps")),
          el("td", { class: `num${e.errors ? " err" : ""}`, "data-label": "errors" }, e.errors.toLocaleString()),
          el("td", { class: "num", "data-label": "p95" }, formatDuration(e.p95_ms)))))))));
}

async function renderPanel(panel, node) {
  const body = node.querySelector(".panel-body");
  try {
    if (panel.kind === "timeseries") await timeseries(panel, body);
    else if (panel.kind === "stat") await stat(panel, body);
    else if (panel.kind === "graph") await graph(panel, body);
    else await logTable(panel, body);
    node.dataset.state = body.querySelector(".empty") ? "empty" : "data";
  } catch (err) {
    if (err instanceof Denied) throw err;
    node.dataset.state = "error";
    body.replaceChildren(el("div", { class: "notice error small" }, String(err.message || err)));
  }
}

async function main() {
  await mountSignIn();
  const app = document.getElementById("app");
  const model = (await api("/console/model.json")).body;
  const dash = model.dashboards.find((d) => d.uid === "finopti-overview");
  const gate = el("div");
  const windowSelect = el("select", { "aria-label": "time window" },
    Object.keys(WINDOWS).map((k) => el("option", { value: k, selected: k === state.window }, `last ${k}`)));
  const grid = el("div", { class: "grid" });
  const panels = dash.panels.map((p) => {
    const node = el("section", { class: "panel", style: { gridColumn: `span ${p.width || 12}` }, "data-kind": p.kind,
      "data-title": p.title, "data-state": "loading" },
    el("h3", {}, p.title), p.description ? el("p", { class: "desc" }, p.description) : null,
    el("div", { class: "panel-body" }, el("span", { class: "muted small" }, "Loading…")));
    grid.append(node);
    return [p, node];
  });
  const refresh = async () => {
    try {
      await Promise.all(panels.map(([panel, node]) => renderPanel(panel, node)));
    } catch (err) {
      // One notice for the page, not a denial in every panel.
      if (!(err instanceof Denied)) throw err;
      clearInterval(state.timer);
      gate.replaceChildren(roleNotice((await consoleAccess()).metrics || ["observability_admin"], "the platform's metrics"));
      grid.hidden = toolbar.hidden = true;
      return;
    }
    document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString([], { hour12: false })}`;
  };
  const variables = await Promise.all(dash.variables.map((v) => variableSelect(v, () => refreshAll())));
  const refreshAll = async () => {
    for (const v of variables) await v.fill();
    await refresh();
  };
  const refreshButton = el("button", { type: "button", class: "secondary" }, "Refresh");
  refreshButton.addEventListener("click", () => refreshAll());
  const links = { "finopti-trace-view": "/console/traces", "finopti-debug-console": "/console/live" };
  const toolbar = el("div", { class: "toolbar" }, el("label", {}, "Window", windowSelect), variables.map((v) => v.node),
    refreshButton, el("span", { class: "muted small", id: "updated" }),
    el("span", { class: "muted small grow" }, (dash.links || []).map((l) => [el("a", { href: links[l.uid] || "#" }, l.title), " · "]),
      el("a", { href: "/console/model.json" }, "dashboard model"), " · Grafana renders the same model"));
  windowSelect.addEventListener("change", () => { state.window = windowSelect.value; refresh(); });
  app.replaceChildren(el("h1", {}, dash.title.replace(/^FinOptiAgents — /, "")),
    el("p", { class: "subtitle" }, dash.description), gate, toolbar, grid);
  const start = async () => {
    clearInterval(state.timer);
    if (!session.token) { gate.replaceChildren(signInNotice("observability_admin")); grid.hidden = toolbar.hidden = true; return; }
    if (!(await mayUse("metrics"))) {
      gate.replaceChildren(roleNotice((await consoleAccess()).metrics || [], "the platform's metrics"));
      grid.hidden = toolbar.hidden = true;
      return;
    }
    gate.replaceChildren(); grid.hidden = toolbar.hidden = false;
    refreshAll();
    state.timer = setInterval(refresh, 30000);
  };
  window.addEventListener("finopti:auth", start);
  start();
}

main();
