// Trace View: one request — what was asked, by whom, how it ended — and its hops through the gateway as a
// waterfall (agent actions and MCP methods named, authorization checks folded under the hop they decided),
// then every service's log lines by hop.
import { api, el, errorMessage, logRow, mayUse, mountSignIn, roleNotice, session, signInNotice, statusClass, consoleAccess } from "./common.js";
import { absoluteTime, formatDuration, relativeAge } from "./format.js";

const TRACE_ID = /^[0-9a-f]{32}$/i;
// A fresh trace's lines reach the store within a second or two (collector -> logstore): look that long, no longer.
const FRESH_WAIT_MS = 6000;

const isAuthz = (l) => l.service === "policy";

/** What a hop did, in words: the agent action, the MCP method and tool, or method and path. */
export function operation(hop) {
  const served = hop.served || {};
  if (served.mcp_method) return { kind: "mcp", text: served.mcp_tool ? `${served.mcp_method} ${served.mcp_tool}` : served.mcp_method };
  const path = String(hop.path || "").split("?")[0];
  const action = path.match(/\/v1\/actions\/([\w-]+)$/);
  if (action) return { kind: "action", text: action[1] };
  return { kind: "http", text: `${hop.method || ""} ${path}`.trim() };
}

/** The header facts: prompt and user (the orchestrator's `ask` line, the edge hop), status, total time. */
export function traceFacts(trace) {
  const edge = trace.hops.find((h) => h.listener === "edge") || trace.hops[0] || {};
  const ask = trace.lines.find((l) => l.service === "orchestrator" && l.line && l.line.event === "ask");
  const services = new Set([...trace.hops.map((h) => h.service), ...trace.lines.map((l) => l.service)].filter(Boolean));
  const errors = typeof trace.errors === "number" ? trace.errors : (trace.errors || []).length;
  return {
    prompt: ask ? ask.line.prompt : null,
    user: edge.user || (ask && ask.line.user) || null,
    status: edge.status ?? (ask ? ask.line.status : null),
    request: `${edge.method || ""} ${edge.path || ""}`.trim(),
    route: edge.route,
    requestId: edge.request_id || (ask && ask.line.request_id) || null,
    duration: Number(edge.duration_ms ?? trace.duration_ms ?? 0),
    hops: trace.hops.length, services: services.size, lines: trace.lines.length, errors,
    start: trace.start,
    authz: trace.hops.reduce((n, h) => n + (h.authz ? 1 : 0)
      + (h.lines || []).filter((l) => isAuthz(l) && l.line && l.line.event === "authz_decision").length, 0),
  };
}

function header(trace) {
  const f = traceFacts(trace);
  const item = (v, label, cls, testid) => el("div", { class: cls || "", "data-testid": testid }, el("b", {}, v), el("span", {}, label));
  const sc = statusClass(f.status);
  return el("div", { class: "card summary", "data-testid": "trace-header" },
    f.prompt ? item(`“${f.prompt}”`, "prompt", "prompt", "trace-prompt") : item(f.request || "–", "request", "prompt", "trace-request"),
    item(f.user || "anonymous", "user", "", "trace-user"),
    item(f.status ?? "–", "answer status", sc === "s2" ? "ok" : sc === "s4" || sc === "s5" || sc === "sx" ? "err" : "", "trace-status"),
    item(formatDuration(f.duration), "total time", "", "trace-duration"),
    item(f.hops, `hops · ${f.services} services`), item(f.authz, "authorization checks"),
    item(f.errors, "error lines", f.errors ? "err" : ""),
    item(f.start ? relativeAge(f.start) : "–", f.start ? absoluteTime(f.start) : "start"),
    f.requestId ? item(el("code", {}, f.requestId), "request id") : null);
}

function bar(left, width, cls) {
  const b = el("div", { class: `bar ${cls}` });
  b.style.left = `${left}%`;
  b.style.width = `${Math.min(width, 100 - left)}%`;
  return el("div", { class: "track" }, b);
}

function indent(node, depth) {
  node.style.paddingLeft = `${depth * 14}px`;
  return node;
}

export function waterfall(trace, { showAuthz = false } = {}) {
  const t0 = Math.min(...trace.hops.map((h) => h.start_ns));
  const total = Math.max(1e-3, Number(trace.duration_ms) || 0,
    ...trace.hops.map((h) => (h.start_ns - t0) / 1e6 + (h.duration_ms || 0)));
  const place = (offset, dur) => [Math.max(0, (offset / total) * 100), Math.max(0.4, (dur / total) * 100)];
  // The gateway's own decision of each hop (native rules, decided inside the gateway), as a row under it.
  const native = (h) => (h.authz ? [el("div", { class: "hop sub authz-row", "data-authz": h.authz.allow ? "allow" : "deny" },
    indent(el("div", { class: "label" }, el("span", { class: `status ${h.authz.allow ? "s2" : "s4"}` }, h.authz.allow ? "allow" : "deny"),
      " ", el("span", { class: "svc" }, "gateway"), el("span", { class: "muted" }, ` authz · ${h.authz.rule || "no rule"}`)), (h.depth || 0) + 2),
    el("div", { class: "track" }), el("div", { class: "dur" }, "in-gateway"))] : []);
  // The policy service's decision of each hop (routes decided by Rego), as rows folded under it.
  const authzRows = (h) => native(h).concat((h.lines || []).filter((l) => isAuthz(l) && l.line && l.line.event === "request_completed")
    .map((l) => {
      const dur = Number(l.line.duration_ms) || 0;
      const decision = (h.lines || []).find((d) => isAuthz(d) && d.line && d.line.event === "authz_decision");
      const allowed = decision ? decision.line.allow !== false : Number(l.line.status) < 400;
      const [left, width] = place((l.ts_ns - t0) / 1e6 - dur, dur);
      return el("div", { class: "hop sub authz-row", "data-service": "policy", "data-status": l.line.status ?? "" },
        indent(el("div", { class: "label" }, el("span", { class: `status ${statusClass(l.line.status)}` }, allowed ? "allow" : "deny"),
          " ", el("span", { class: "svc" }, "policy"), el("span", { class: "muted" }, " authorization check"),
          decision && decision.line.reason ? el("span", { class: "muted" }, ` · ${decision.line.reason}`) : ""), (h.depth || 0) + 2),
        bar(left, width, "authz"), el("div", { class: "dur" }, formatDuration(dur)));
    }));
  const rows = trace.hops.flatMap((h, i) => {
    const [left, width] = place(h.offset_ms ?? (h.start_ns - t0) / 1e6, h.duration_ms || 0);
    const sc = statusClass(h.status);
    const op = operation(h);
    const checks = authzRows(h);
    const group = el("div", { class: "authz-group", "data-hop": String(i) }, checks);
    group.hidden = !showAuthz;
    const fold = checks.length ? el("button", { type: "button", class: "fold", "aria-expanded": String(showAuthz),
      title: "show or hide the authorization check of this hop" }, showAuthz ? "▾" : "▸") : el("span", { class: "fold" }, " ");
    if (checks.length) {
      fold.addEventListener("click", (event) => {
        event.stopPropagation();
        group.hidden = !group.hidden;
        fold.textContent = group.hidden ? "▸" : "▾";
        fold.setAttribute("aria-expanded", String(!group.hidden));
      });
    }
    const row = el("div", { class: "hop", "data-service": h.service || "", "data-status": h.status ?? "", "data-op": op.text,
      "data-hop": String(i), tabindex: "0",
      title: `${h.method || ""} ${h.path || ""}\n${h.upstream_service || ""} ${h.upstream_host || ""}\n`
        + `flags ${h.response_flags || "-"} · ${h.response_code_details || ""}` },
    indent(el("div", { class: "label" }, fold,
      el("span", { class: `status ${sc}` }, h.status ?? "–"), " ",
      el("span", { class: "svc" }, h.service || "(gateway)"), h.version ? el("span", { class: "muted" }, ` ${h.version}`) : "", " ",
      el("span", { class: op.kind === "mcp" ? "mcp" : "op" }, op.text),
      el("span", { class: "muted" }, ` · ${h.listener || ""}/${h.route || "no route"}`),
      checks.length ? el("span", { class: "authz-tag" }, h.authz && !h.authz.allow ? "· authz ✗" : "· authz ✓") : "",
      (h.errors || []).length ? el("span", { class: "status s5" }, " error") : ""), h.depth || 0),
    bar(left, width, sc),
    el("div", { class: "dur" }, formatDuration(h.duration_ms)));
    const open = () => {
      document.querySelectorAll(".hop.selected").forEach((n) => n.classList.remove("selected"));
      row.classList.add("selected");
      document.getElementById(`hop-${i}`)?.scrollIntoView({ behavior: "smooth", block: "start" });
    };
    row.addEventListener("click", open);
    row.addEventListener("keydown", (e) => { if (e.key === "Enter") open(); });
    return [row, group];
  });
  return el("div", { class: "card waterfall", "data-testid": "waterfall" },
    el("div", { class: "hop head" }, el("div", {}, "status · service · operation · listener/route"),
      el("div", {}, `0 — ${formatDuration(total)}`), el("div", { class: "dur" }, "duration")),
    rows);
}

function hopLines(trace) {
  const sections = trace.hops.map((h, i) => {
    const own = (h.lines || []).filter((l) => !isAuthz(l));
    return el("section", { id: `hop-${i}`, class: "hop-lines" },
      el("h2", {}, el("span", { class: `status ${statusClass(h.status)}` }, h.status ?? "–"), " ", h.service || "gateway", " ",
        el("span", { class: "muted small" }, `${operation(h).text} · ${formatDuration(h.duration_ms)}`)),
      own.length ? el("div", { class: "logs" }, own.map((l) => logRow(l, { traceLinks: false })))
        : el("div", { class: "muted small" }, "No service log lines under this hop."));
  });
  if ((trace.unattached || []).length) {
    sections.push(el("section", { class: "hop-lines" }, el("h2", {}, "Other lines of the trace (gateway and unattached)"),
      el("div", { class: "logs" }, trace.unattached.map((l) => logRow(l, { traceLinks: false })))));
  }
  return sections;
}

function notFound(traceId, message) {
  return el("div", { class: "notice warn", "data-testid": "trace-not-found" },
    el("p", {}, el("b", {}, "Trace not found. "), message),
    el("p", {}, "Lines are kept for the log store's retention (7 days by default). ",
      el("a", { href: `/console/traces?prefix=${encodeURIComponent(traceId.slice(0, 8))}` }, "Search the trace list"), " for recent requests."));
}

async function main() {
  await mountSignIn();
  const app = document.getElementById("app");
  const traceId = document.body.dataset.traceId;
  const head = [el("p", { class: "small" }, el("a", { href: "/console/traces" }, "← all traces")),
    el("h1", {}, "Trace ", el("span", { class: "mono" }, traceId)),
    el("p", { class: "subtitle" }, "Each hop the gateway logged for this request, with the log lines of the service that served it.")];
  let showAuthz = false;
  const load = async () => {
    if (!session.token) return app.replaceChildren(...head, signInNotice((await consoleAccess()).trace?.join(" or ")));
    if (!(await mayUse("trace"))) return app.replaceChildren(...head, roleNotice((await consoleAccess()).trace || [], "traces"));
    if (!TRACE_ID.test(traceId)) {
      return app.replaceChildren(...head, notFound(traceId, `“${traceId}” is not a trace id (32 hexadecimal digits).`));
    }
    const t = performance.now();
    // Only a request that just ended (linked from its answer) may not be stored yet; any other id is looked up once.
    const deadline = Date.now() + (new URLSearchParams(location.search).has("fresh") ? FRESH_WAIT_MS : 0);
    let r;
    for (;;) {
      r = await api(`/api/traces/${encodeURIComponent(traceId)}`);
      if (r.status !== 404 || Date.now() > deadline) break;
      app.replaceChildren(...head, el("p", { class: "muted", "data-testid": "trace-looking" }, "Looking for the trace's log lines…"));
      await new Promise((resolve) => setTimeout(resolve, 600));
    }
    if (r.status === 404) return app.replaceChildren(...head, notFound(traceId, "No log line of any component carries this trace id."));
    if (!r.ok) {
      const retry = el("button", { type: "button", class: "secondary" }, "Retry");
      retry.addEventListener("click", load);
      return app.replaceChildren(...head, el("div", { class: "notice error", "data-testid": "trace-error" }, `${r.status}: `, errorMessage(r), " ",
        r.status >= 500 || r.status === 0 ? retry : null));
    }
    const trace = r.body;
    const toggle = el("label", { class: "small" }, el("input", { type: "checkbox", id: "show-authz" }), " show authorization checks");
    const fall = el("div", {}, waterfall(trace, { showAuthz }));
    toggle.querySelector("input").checked = showAuthz;
    toggle.querySelector("input").addEventListener("change", (e) => {
      showAuthz = e.target.checked;
      fall.replaceChildren(waterfall(trace, { showAuthz }));
    });
    app.replaceChildren(...head, header(trace),
      el("div", { class: "toolbar section-title" }, el("h2", {}, "Waterfall"), toggle), fall,
      el("h2", { class: "section-title" }, "Log lines by hop"), ...hopLines(trace));
    document.body.dataset.rendered = String(performance.now() - t);
  };
  window.addEventListener("finopti:auth", load);
  await load();
}

main();
