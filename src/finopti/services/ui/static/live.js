// Live logs: every component's lines as they arrive (Server-Sent Events over fetch, so the bearer token can be
// sent), kept in time order whatever order they arrive in, with a volume histogram by level, detected fields as
// columns to pick, filters by service, level and text, and pause.
import uPlot from "./vendor/uplot/uPlot.esm.js";
import { consoleAccess, detectedFields, el, errorMessage, logRow, mayUse, mountSignIn, roleNotice, session, signInNotice } from "./common.js";

const MAX_ROWS = 2000;
const BACKLOG_MS = 5 * 60 * 1000;
const BACKLOG_LINES = 1000;
const BUCKET_S = 10;
const LEVELS = { "": "all levels", error: "error + critical", warning: "warning and worse", info: "info and worse", debug: "debug" };
const LEVEL_SETS = { error: ["error", "critical"], warning: ["warning", "error", "critical"], info: ["info", "warning", "error", "critical"], debug: ["debug"] };
const LEVEL_COLOURS = { debug: "#8a97ad", info: "#3f8f6b", warning: "#d49a1c", error: "#d64545", critical: "#8b1a1a" };
const COLUMNS_KEY = "finopti.live.columns";
const state = { controller: null, paused: false, buffer: [], services: new Set(), rows: [], fields: new Map(), columns: [],
  lastId: null, histogram: null, dirty: false };

function loadColumns() {
  try { return JSON.parse(localStorage.getItem(COLUMNS_KEY) || "[]").filter((c) => typeof c === "string"); } catch { return []; }
}

function filters(form) {
  const params = new URLSearchParams();
  const service = form.querySelector("#f-service").value;
  if (service) params.append("service", service);
  for (const l of LEVEL_SETS[form.querySelector("#f-level").value] || []) params.append("level", l);
  const text = form.querySelector("#f-text").value.trim();
  if (text) params.set("q", text);
  return params;
}

function describeFilters(form) {
  const parts = [];
  const service = form.querySelector("#f-service").value, level = form.querySelector("#f-level").value;
  const text = form.querySelector("#f-text").value.trim();
  if (service) parts.push(`service ${service}`);
  if (level) parts.push(LEVELS[level]);
  if (text) parts.push(`text “${text}”`);
  return parts.length ? parts.join(", ") : "no filter";
}

function setStatus(kind, text) {
  const s = document.getElementById("stream-status");
  s.replaceChildren(el("span", { class: `status-dot ${kind}` }), " ", text);
  s.dataset.state = kind;
}

function tsOf(entry) {
  return Number(entry.ts_ns) || Date.parse(entry.ts) * 1e6 || 0;
}

/** Insert each entry's row at its place in time (lines of different components arrive out of order). */
function insert(out, entries) {
  const atBottom = out.scrollHeight - out.scrollTop - out.clientHeight < 40;
  document.getElementById("live-empty")?.remove();
  for (const e of entries) {
    if (e.service && !state.services.has(e.service)) addService(e.service);
    for (const key of Object.keys(detectedFields(e))) state.fields.set(key, (state.fields.get(key) || 0) + 1);
  }
  // A backlog larger than the screen keeps: draw only the newest lines, never rows trimmed at once.
  if (entries.length > MAX_ROWS) entries = [...entries].sort((a, b) => tsOf(a) - tsOf(b)).slice(-MAX_ROWS);
  for (const e of entries) {
    const ts = tsOf(e);
    if (state.rows.length >= MAX_ROWS && ts < state.rows[0].ts) continue;
    const row = logRow(e, { columns: state.columns.length ? state.columns : null });
    row.dataset.arrived = String(performance.now());
    let lo = 0, hi = state.rows.length;
    while (lo < hi) { const mid = (lo + hi) >> 1; if (state.rows[mid].ts <= ts) lo = mid + 1; else hi = mid; }
    const item = { ts, node: row, entry: e };
    if (lo === state.rows.length) out.append(row);
    else out.insertBefore(row, state.rows[lo].node);
    state.rows.splice(lo, 0, item);
  }
  while (state.rows.length > MAX_ROWS) state.rows.shift().node.remove();
  document.getElementById("count").textContent = `${state.rows.length.toLocaleString()} line${state.rows.length === 1 ? "" : "s"} shown`;
  state.dirty = true;
  if (atBottom) out.scrollTop = out.scrollHeight;
}

function addService(name) {
  state.services.add(name);
  const select = document.getElementById("f-service");
  const options = [...select.options].slice(1).map((o) => o.value).concat(name).sort();
  const current = select.value;
  select.replaceChildren(el("option", { value: "" }, "all services"), ...options.map((s) => el("option", { value: s }, s)));
  select.value = current;
}

function emptyState(out, form) {
  if (state.rows.length) return;
  out.replaceChildren(el("div", { id: "live-empty", class: "live-empty", "data-testid": "live-empty" },
    `No line in the last 5 minutes matches ${describeFilters(form)}. New lines appear here as they arrive.`));
}

/** Lines per 10 s by level, stacked, over the lines on screen. */
function histogram(host) {
  const levels = Object.keys(LEVEL_COLOURS);
  const draw = () => {
    if (!state.dirty || !host.clientWidth) return;
    state.dirty = false;
    const now = Math.floor(Date.now() / 1000 / BUCKET_S) * BUCKET_S;
    const first = state.rows.length ? Math.floor(state.rows[0].ts / 1e9 / BUCKET_S) * BUCKET_S : now - 300;
    const start = Math.min(first, now - 300);
    const xs = [];
    for (let t = start; t <= now; t += BUCKET_S) xs.push(t);
    const counts = levels.map(() => new Array(xs.length).fill(0));
    for (const r of state.rows) {
      const i = Math.floor((r.ts / 1e9 - start) / BUCKET_S);
      const l = levels.indexOf(String(r.entry.level || "info").toLowerCase());
      if (i >= 0 && i < xs.length) counts[l < 0 ? 1 : l][i] += 1;
    }
    // Stacked: each level drawn as the running total up to it, the highest first.
    const stacked = counts.map((_, k) => xs.map((__, i) => counts.slice(k).reduce((s, c) => s + c[i], 0)));
    const data = [xs, ...stacked];
    if (state.histogram && state.histogram.data[0].length === xs.length) { state.histogram.setData(data); return; }
    state.histogram?.destroy();
    state.histogram = new uPlot({
      width: host.clientWidth, height: 76, legend: { show: false }, cursor: { show: false },
      scales: { x: { time: true }, y: { range: (_, min, max) => [0, Math.max(4, max)] } },
      axes: [{ stroke: "#5f6b7a", size: 22, grid: { show: false }, ticks: { size: 3 } },
        { show: false }],
      series: [{}, ...levels.map((l) => ({ label: l, fill: LEVEL_COLOURS[l], stroke: LEVEL_COLOURS[l], width: 0,
        paths: uPlot.paths.bars({ size: [0.9, 40], align: 1 }), points: { show: false } }))],
    }, data, host);
  };
  new ResizeObserver(() => { if (state.histogram && host.clientWidth) state.histogram.setSize({ width: host.clientWidth, height: 76 }); }).observe(host);
  setInterval(draw, 1000);
  return draw;
}

/** The newest lines of the last 5 minutes that match the filters (at most BACKLOG_LINES), newest first. */
async function backlog(form, signal) {
  const params = filters(form);
  params.set("start", String(Date.now() - BACKLOG_MS));
  params.set("limit", String(BACKLOG_LINES));
  params.set("direction", "backward");
  const r = await fetch(`/api/logs?${params}`, { headers: { authorization: `Bearer ${session.token}` }, signal });
  const text = await r.text();
  let body = text; try { body = JSON.parse(text); } catch { /* text */ }
  if (!r.ok) throw new Error(`${r.status}: ${errorMessage({ status: r.status, body })}`);
  return body.lines || [];
}

/** The backlog once, then the tail from the newest line shown (after a dropped connection: from the last line). */
async function stream(form, out, resume = false) {
  state.controller?.abort();
  const controller = new AbortController();
  state.controller = controller;
  setStatus("on", "connecting…");
  try {
    if (!resume) {
      const lines = await backlog(form, controller.signal);
      if (state.controller !== controller) return;
      state.lastId = lines.reduce((m, l) => Math.max(m, Number(l.id) || 0), 0) || null;
      if (lines.length) insert(out, lines);
      else emptyState(out, form);
    }
    const headers = { authorization: `Bearer ${session.token}`, accept: "text/event-stream" };
    if (state.lastId) headers["last-event-id"] = String(state.lastId);
    const response = await fetch(`/api/logs/tail?${filters(form)}`, { headers, signal: controller.signal });
    if (!response.ok) {
      const text = await response.text();
      let body = text; try { body = JSON.parse(text); } catch { /* text */ }
      setStatus("off", `${response.status}: ${errorMessage({ status: response.status, body })}`);
      return;
    }
    setStatus(state.paused ? "paused" : "on", state.paused ? "paused" : "live");
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let pending = "";
    for (;;) {
      const { value, done } = await reader.read();
      // A chunk read just before the filters changed belongs to the old stream: drop it.
      if (state.controller !== controller) return;
      if (done) break;
      // SSE lines end in CRLF, LF or CR; a CR at the end of a chunk may be the first half of a CRLF.
      let text = pending + value, carry = "";
      if (text.endsWith("\r")) { carry = "\r"; text = text.slice(0, -1); }
      const events = text.replace(/\r\n?/g, "\n").split("\n\n");
      pending = events.pop() + carry;
      const entries = [];
      for (const ev of events) {
        const data = ev.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
        if (!data) continue;
        try { const e = JSON.parse(data); state.lastId = e.id; entries.push(e); } catch { /* ignore */ }
      }
      if (!entries.length) continue;
      if (state.paused) {
        state.buffer.push(...entries);
        document.getElementById("pause").textContent = `Resume (${state.buffer.length} new)`;
      } else insert(out, entries);
    }
    if (!controller.signal.aborted) { setStatus("off", "stream ended; reconnecting…"); setTimeout(() => stream(form, out, true), 1000); }
  } catch (err) {
    if (controller.signal.aborted) return;
    setStatus("off", `disconnected (${err.message}); reconnecting…`);
    setTimeout(() => stream(form, out, true), 1500);
  }
}

function columnsHeader(head, out) {
  head.replaceChildren(...["time", "service", "level", "message"].map((t) => el("span", {}, t)), ...state.columns.map((c) => el("span", {}, c)));
  for (const node of [head, out]) node.style.setProperty("--cols", String(Math.max(1, state.columns.length)));
  out.classList.toggle("with-columns", state.columns.length > 0);
  head.hidden = !state.columns.length;
}

function fieldPicker(onChange) {
  const list = el("div", { class: "menu-list", "data-testid": "field-list" });
  list.hidden = true;
  const button = el("button", { type: "button", class: "secondary", id: "fields", "aria-expanded": "false" }, "Fields");
  const render = () => {
    const fields = [...state.fields].sort((a, b) => b[1] - a[1]).map(([k]) => k);
    list.replaceChildren(...(fields.length ? fields.map((k) => {
      const box = el("input", { type: "checkbox", value: k, "data-field": k });
      box.checked = state.columns.includes(k);
      box.addEventListener("change", () => {
        state.columns = box.checked ? [...state.columns, k] : state.columns.filter((c) => c !== k);
        localStorage.setItem(COLUMNS_KEY, JSON.stringify(state.columns));
        onChange();
      });
      return el("label", {}, box, k, el("span", { class: "muted" }, ` ${state.fields.get(k)}`));
    }) : [el("span", { class: "muted small" }, "No fields seen yet.")]));
  };
  button.addEventListener("click", () => {
    list.hidden = !list.hidden;
    button.setAttribute("aria-expanded", String(!list.hidden));
    if (!list.hidden) render();
  });
  return el("span", { class: "field-picker" }, button, list);
}

async function main() {
  await mountSignIn();
  const app = document.getElementById("app");
  state.columns = loadColumns();
  const out = el("div", { class: "logs live-logs", id: "live-lines", "data-testid": "live-lines" });
  const head = el("div", { class: "logs-head" });
  const pause = el("button", { type: "button", id: "pause", class: "secondary" }, "Pause");
  const clear = el("button", { type: "button", class: "secondary" }, "Clear");
  const redraw = () => {
    columnsHeader(head, out);
    const entries = state.rows.map((r) => r.entry);
    state.rows = [];
    out.replaceChildren();
    insert(out, entries);
  };
  const form = el("form", { class: "toolbar" },
    el("label", {}, "Service", el("select", { id: "f-service" }, el("option", { value: "" }, "all services"))),
    el("label", {}, "Level", el("select", { id: "f-level" }, Object.entries(LEVELS).map(([v, t]) => el("option", { value: v }, t)))),
    el("label", {}, "Text", el("input", { type: "search", id: "f-text", placeholder: "full-text search", size: 24 })),
    pause, clear, fieldPicker(redraw),
    el("span", { id: "stream-status", class: "small" }),
    el("span", { id: "count", class: "muted small grow" }));

  const histogramHost = el("div", { class: "histogram", "data-testid": "histogram" });
  const key = el("div", { class: "level-legend" }, Object.entries(LEVEL_COLOURS).map(([l, c]) => el("span", {}, el("i", { class: "swatch", style: { background: c } }), ` ${l}`)));
  let debounce;
  const restart = () => {
    clearTimeout(debounce); // a pending text change is applied now, with the other filters: one stream, not two
    state.rows = []; state.buffer = []; state.dirty = true; state.lastId = null;
    out.replaceChildren(el("div", { id: "live-empty", class: "live-empty" }, "Connecting…"));
    document.getElementById("count").textContent = "";
    if (session.token) stream(form, out);
  };
  clear.addEventListener("click", () => { state.rows = []; out.replaceChildren(); state.dirty = true; emptyState(out, form); });
  form.addEventListener("submit", (e) => { e.preventDefault(); restart(); }); // Enter in the text box: now
  form.querySelector("#f-service").addEventListener("change", restart);
  form.querySelector("#f-level").addEventListener("change", restart);
  form.querySelector("#f-text").addEventListener("input", () => { clearTimeout(debounce); debounce = setTimeout(restart, 400); });
  pause.addEventListener("click", () => {
    state.paused = !state.paused;
    pause.textContent = state.paused ? "Resume" : "Pause";
    setStatus(state.paused ? "paused" : "on", state.paused ? "paused" : "live");
    if (!state.paused && state.buffer.length) { insert(out, state.buffer); state.buffer = []; }
  });
  const gate = el("div");
  const body = el("div", {}, form, histogramHost, key, head, out);
  app.replaceChildren(el("h1", {}, "Live logs"),
    el("p", { class: "subtitle" }, "Every component's log lines in time order as they arrive; lines with a trace id link to the trace view."),
    gate, body);
  histogram(histogramHost);
  columnsHeader(head, out);
  const start = async () => {
    state.controller?.abort();
    if (!session.token) { gate.replaceChildren(signInNotice((await consoleAccess()).logs?.join(" or "))); body.hidden = true; return; }
    if (!(await mayUse("logs"))) { gate.replaceChildren(roleNotice((await consoleAccess()).logs || [], "the platform's logs")); body.hidden = true; return; }
    gate.replaceChildren(); body.hidden = false;
    restart();
  };
  window.addEventListener("finopti:auth", start);
  start();
}

main();
