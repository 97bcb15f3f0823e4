// Platform Overview: rendered from the dashboard model (/console/model.json), the same model Grafana renders.
import { api, el, errorMessage, mountSignIn, session, signInNotice } from "./common.js";
import { formatValue, legend, lineChart } from "./charts.js";

const WINDOWS = { "5m": 300, "15m": 900, "1h": 3600, "6h": 21600 };
const state = { window: "5m", timer: null, model: null };

function interpolate(query, values) {
  return query.replace(/\$(\w+)/g, (m, name) => (name in values ? values[name] : m));
}

function legendName(template, metric) {
  if (!template) return Object.entries(metric).filter(([k]) => k !== "__name__").map(([k, v]) => `${k}=${v}`).join(" ") || "value";
  return template.replace(/\{\{\s*(\w+)\s*\}\}/g, (_, k) => metric[k] ?? "").trim() || "value";
}

const selected = {}; // variable name -> chosen value ("" is All)
// Regex-escaped, and each backslash doubled for the PromQL string literal.
const escapeRegex = (v) => v.replace(/[.*+?^${}()|[\]\\]/g, "\\\\$&");

function values() {
  // A chosen value as an exact regex, All as a regex that matches anything (as Grafana does).
  const out = { __range: state.window };
  for (const [name, v] of Object.entries(selected)) out[name] = v ? escapeRegex(v) : ".*";
  return out;
}

async function variableSelect(variable, onChange) {
  const select = el("select", { "aria-label": variable.label || variable.name, "data-variable": variable.name },
    el("option", { value: "" }, "All"));
  selected[variable.name] = "";
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
    const r = await api(`/api/metrics/query_range?${params}`);
    if (!r.ok) throw new Error(errorMessage(r));
    for (const s of r.body.data.result || []) {
      series.push({ name: legendName(q.legend, s.metric), points: s.values.map(([t, v]) => [Number(t), Number(v)]) });
    }
  }
  if (!series.some((s) => s.points.length)) return body.replaceChildren(emptyReason(panel));
  series.sort((a, b) => a.name.localeCompare(b.name));
  const width = panel.width >= 24 ? 1160 : 560;
  // A young platform has data only at the end of the window: start the axis near the first sample.
  const first = Math.min(...series.flatMap((s) => s.points.map((p) => p[0])));
  const from = Math.max(start, Math.min(end - 60, first - 2 * step));
  body.replaceChildren(lineChart(series, { unit: panel.unit, start: from, end, width }), legend(series, panel.unit));
}

async function stat(panel, body) {
  const items = [];
  for (const q of panel.queries.filter((q) => q.type === "metric")) {
    const params = new URLSearchParams({ query: interpolate(q.promql, values()) });
    const r = await api(`/api/metrics/query?${params}`);
    if (!r.ok) throw new Error(errorMessage(r));
    const result = r.body.data.result || [];
    const v = result.length ? Number(result[0].value[1]) : null;
    items.push({ label: q.legend, value: v });
  }
  if (items.every((i) => i.value === null)) return body.replaceChildren(emptyReason(panel, "No series."));
  body.replaceChildren(...items.map((i) => el("div", { class: "stat" }, formatValue(i.value ?? 0, panel.unit),
    i.label ? el("small", {}, i.label) : null)));
}

async function logTable(panel, body) {
  const q = panel.queries.find((q) => q.type === "log");
  const params = new URLSearchParams({ limit: "1000", start: String(Date.now() - WINDOWS[state.window] * 1000) });
  for (const s of q.services || []) {
    const v = s.startsWith("$") ? selected[s.slice(1)] : s;
    if (v) params.append("service", v);
  }
  for (const l of (q.level || "").split("|")) if (l && !l.startsWith("$")) params.append("level", l);
  const r = await api(`/api/logs?${params}`);
  if (!r.ok) throw new Error(errorMessage(r));
  const lines = r.body.lines || [];
  const by = q.top_by && q.top_by.length ? q.top_by : ["service", "message"];
  const counts = new Map();
  for (const line of lines) {
    const obj = line.line && typeof line.line === "object" ? line.line : { message: String(line.line) };
    const key = by.map((k) => (k === "service" ? line.service : obj[k] ?? "")).map(String);
    const id = JSON.stringify(key);
    const item = counts.get(id) || { key, count: 0, last: line.ts };
    item.count += 1;
    counts.set(id, item);
  }
  if (!counts.size) return body.replaceChildren(emptyReason(panel));
  const rows = [...counts.values()].sort((a, b) => b.count - a.count).slice(0, q.limit || 20);
  body.replaceChildren(el("div", { class: "table-wrap" }, el("table", { class: "data" },
    el("thead", {}, el("tr", {}, by.map((k) => el("th", {}, k)), el("th", {}, "count"))),
    el("tbody", {}, rows.map((r) => el("tr", {}, r.key.map((v) => el("td", { style: "white-space:normal" }, v)),
      el("td", { class: "num" }, r.count)))))));
}

async function renderPanel(panel, node) {
  const body = node.querySelector(".panel-body");
  try {
    if (panel.kind === "timeseries") await timeseries(panel, body);
    else if (panel.kind === "stat") await stat(panel, body);
    else await logTable(panel, body);
    node.dataset.state = body.querySelector(".empty") ? "empty" : "data";
  } catch (err) {
    node.dataset.state = "error";
    body.replaceChildren(el("div", { class: "notice error small" }, String(err.message || err)));
  }
}

async function refresh(panels) {
  await Promise.all(panels.map(([panel, node]) => renderPanel(panel, node)));
  document.getElementById("updated").textContent = `updated ${new Date().toLocaleTimeString([], { hour12: false })}`;
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
    const node = el("section", { class: "panel", style: `grid-column: span ${p.width || 12}`, "data-kind": p.kind,
      "data-title": p.title, "data-state": "loading" },
      el("h3", {}, p.title), p.description ? el("p", { class: "desc" }, p.description) : null,
      el("div", { class: "panel-body" }, el("span", { class: "muted small" }, "Loading…")));
    grid.append(node);
    return [p, node];
  });
  const variables = await Promise.all(dash.variables.map((v) => variableSelect(v, () => refreshAll())));
  const refreshAll = async () => {
    for (const v of variables) await v.fill();
    await refresh(panels);
  };
  const toolbar = el("div", { class: "toolbar" }, el("label", {}, "Window", windowSelect), variables.map((v) => v.node),
    el("button", { class: "secondary", onclick: () => refreshAll() }, "Refresh"),
    el("span", { class: "muted small", id: "updated" }),
    el("span", { class: "muted small", style: "margin-left:auto" },
      el("a", { href: "/console/model.json" }, "dashboard model"), " · Grafana renders the same model"));
  windowSelect.addEventListener("change", () => { state.window = windowSelect.value; refresh(panels); });
  app.replaceChildren(el("h1", {}, dash.title.replace(/^FinOptiAgents — /, "")),
    el("p", { class: "subtitle" }, dash.description), gate, toolbar, grid);
  const start = () => {
    clearInterval(state.timer);
    if (!session.token) { gate.replaceChildren(signInNotice("observability_admin")); grid.hidden = true; return; }
    gate.replaceChildren(); grid.hidden = false;
    refreshAll();
    state.timer = setInterval(() => refresh(panels), 30000);
  };
  window.addEventListener("finopti:auth", start);
  start();
}

main();
