// Debug Console: every component's log lines as they arrive (Server-Sent Events over fetch, so the bearer
// token can be sent), filtered by service, level and text, with pause.
import { el, errorMessage, logRow, mountSignIn, session, signInNotice } from "./common.js";

const MAX_ROWS = 1500;
const LEVELS = { "": "all levels", "error": "error + critical", "warning": "warning", "info": "info", "debug": "debug" };
const state = { controller: null, paused: false, buffer: [], lastId: null, services: new Set(), count: 0 };

function filters(form) {
  const params = new URLSearchParams();
  const service = form.querySelector("#f-service").value;
  if (service) params.append("service", service);
  const level = form.querySelector("#f-level").value;
  if (level === "error") { params.append("level", "error"); params.append("level", "critical"); }
  else if (level) params.append("level", level);
  const text = form.querySelector("#f-text").value.trim();
  if (text) params.set("q", text);
  return params;
}

function setStatus(kind, text) {
  const s = document.getElementById("stream-status");
  s.replaceChildren(el("span", { class: `status-dot ${kind}` }), " ", text);
  s.dataset.state = kind;
}

function append(out, entries) {
  const atBottom = out.scrollHeight - out.scrollTop - out.clientHeight < 40;
  const frag = document.createDocumentFragment();
  for (const e of entries) {
    const row = logRow(e);
    row.dataset.arrived = String(performance.now());
    frag.append(row);
    if (e.service && !state.services.has(e.service)) addService(e.service);
  }
  out.append(frag);
  while (out.childElementCount > MAX_ROWS) out.firstElementChild.remove();
  state.count += entries.length;
  document.getElementById("count").textContent = `${state.count} lines`;
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

async function stream(form, out) {
  state.controller?.abort();
  const controller = new AbortController();
  state.controller = controller;
  const params = filters(form);
  params.set("start", String(Date.now() - 5 * 60 * 1000)); // the last 5 minutes first
  setStatus("on", "connecting…");
  try {
    const response = await fetch(`/api/logs/tail?${params}`, {
      headers: { authorization: `Bearer ${session.token}`, accept: "text/event-stream" }, signal: controller.signal,
    });
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
      } else append(out, entries);
    }
    if (!controller.signal.aborted) { setStatus("off", "stream ended; reconnecting…"); setTimeout(() => stream(form, out), 1000); }
  } catch (err) {
    if (controller.signal.aborted) return;
    setStatus("off", `disconnected (${err.message}); reconnecting…`);
    setTimeout(() => stream(form, out), 1500);
  }
}

async function main() {
  await mountSignIn();
  const app = document.getElementById("app");
  const out = el("div", { class: "logs live-logs", id: "live-lines", "data-testid": "live-lines" });
  const pause = el("button", { type: "button", id: "pause", class: "secondary" }, "Pause");
  const form = el("form", { class: "toolbar", onsubmit: (e) => e.preventDefault() },
    el("label", {}, "Service", el("select", { id: "f-service" }, el("option", { value: "" }, "all services"))),
    el("label", {}, "Level", el("select", { id: "f-level" }, Object.entries(LEVELS).map(([v, t]) => el("option", { value: v }, t)))),
    el("label", {}, "Text", el("input", { type: "search", id: "f-text", placeholder: "full-text search", size: 28 })),
    pause,
    el("button", { type: "button", class: "secondary", onclick: () => { out.replaceChildren(); state.count = 0; } }, "Clear"),
    el("span", { id: "stream-status", class: "small" }),
    el("span", { id: "count", class: "muted small", style: "margin-left:auto" }));
  const restart = () => { out.replaceChildren(); state.count = 0; state.buffer = []; if (session.token) stream(form, out); };
  form.querySelector("#f-service").addEventListener("change", restart);
  form.querySelector("#f-level").addEventListener("change", restart);
  let debounce;
  form.querySelector("#f-text").addEventListener("input", () => { clearTimeout(debounce); debounce = setTimeout(restart, 400); });
  pause.addEventListener("click", () => {
    state.paused = !state.paused;
    pause.textContent = state.paused ? "Resume" : "Pause";
    setStatus(state.paused ? "paused" : "on", state.paused ? "paused" : "live");
    if (!state.paused && state.buffer.length) { append(out, state.buffer); state.buffer = []; }
  });
  const gate = el("div");
  app.replaceChildren(el("h1", {}, "Debug Console"),
    el("p", { class: "subtitle" }, "Live log stream of every component. Lines with a trace id link to the trace view."),
    gate, form, out);
  const start = () => {
    state.controller?.abort();
    if (!session.token) { gate.replaceChildren(signInNotice("observability_admin")); form.hidden = out.hidden = true; return; }
    gate.replaceChildren(); form.hidden = out.hidden = false;
    restart();
  };
  window.addEventListener("finopti:auth", start);
  start();
}

main();
