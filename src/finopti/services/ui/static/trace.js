// Trace View: one request's hops through the gateway as a waterfall, with every service's log lines under them.
import { api, el, errorMessage, logRow, mountSignIn, session, signInNotice, statusClass } from "./common.js";

function summary(trace) {
  const services = new Set([...trace.hops.map((h) => h.service), ...trace.lines.map((l) => l.service)].filter(Boolean));
  const errors = typeof trace.errors === "number" ? trace.errors : (trace.errors || []).length;
  const item = (v, label, cls) => el("div", { class: cls || "" }, el("b", {}, v), el("span", {}, label));
  return el("div", { class: "card summary" },
    item(trace.hops.length, "hops"), item(services.size, "services"),
    item(`${Number(trace.duration_ms || 0).toFixed(1)} ms`, "duration"),
    item(trace.lines.length, "log lines"),
    item(errors, "errors", errors ? "err" : ""),
    item(trace.start ? new Date(trace.start).toLocaleString([], { hour12: false }) : "–", "start"));
}

export function waterfall(trace) {
  const t0 = Math.min(...trace.hops.map((h) => h.start_ns));
  const total = Math.max(1e-3, Number(trace.duration_ms) || 0,
    ...trace.hops.map((h) => (h.start_ns - t0) / 1e6 + (h.duration_ms || 0)));
  // The gateway's own decision of each hop (native rules, decided inside the gateway), as a row under it.
  const native = (h) => (h.authz ? [el("div", { class: "hop sub", "data-authz": h.authz.allow ? "allow" : "deny" },
  el("div", { class: "label", style: `padding-left:${((h.depth || 0) + 1) * 14}px` },
    el("span", { class: `status ${h.authz.allow ? "s2" : "s4"}` }, h.authz.allow ? "allow" : "deny"), " ",
    el("span", { class: "svc" }, "gateway"), el("span", { class: "muted" }, ` authz · ${h.authz.rule || "no rule"}`)),
  el("div", { class: "track" }), el("div", { class: "dur" }, "in-gateway"))] : []);
  // The policy service's ext_authz check of each hop (routes decided by Rego), as a row under it.
  const authz = (h) => native(h).concat((h.lines || []).filter((l) => l.service === "policy" && l.line && l.line.event === "request_completed")
    .map((l) => {
      const dur = Number(l.line.duration_ms) || 0, offset = (l.ts_ns - t0) / 1e6 - dur;
      const left = Math.max(0, (offset / total) * 100), width = Math.max(0.3, (dur / total) * 100);
      const sc = statusClass(l.line.status);
      return el("div", { class: "hop sub", "data-service": "policy", "data-status": l.line.status ?? "" },
        el("div", { class: "label", style: `padding-left:${((h.depth || 0) + 1) * 14}px` },
          el("span", { class: `status ${sc}` }, l.line.status ?? "–"), " ", el("span", { class: "svc" }, "policy"),
          el("span", { class: "muted" }, " authz (ext_authz)")),
        el("div", { class: "track" }, el("div", { class: "bar authz", style: `left:${left}%;width:${Math.min(width, 100 - left)}%` })),
        el("div", { class: "dur" }, `${dur.toFixed(1)} ms`));
    }));
  const rows = trace.hops.map((h, i) => {
    const offset = h.offset_ms ?? (h.start_ns - t0) / 1e6;
    const left = (offset / total) * 100, width = Math.max(0.3, ((h.duration_ms || 0) / total) * 100);
    const sc = statusClass(h.status);
    const hasErrors = (h.errors || []).length > 0;
    return el("div", { class: "hop", "data-service": h.service || "", "data-status": h.status ?? "",
      title: `${h.method || ""} ${h.path || ""}\n${h.upstream_service || ""} ${h.upstream_host || ""}\n`
        + `flags ${h.response_flags || "-"} · ${h.response_code_details || ""}`,
      onclick: () => document.getElementById(`hop-${i}`)?.scrollIntoView({ behavior: "smooth", block: "start" }) },
    el("div", { class: "label", style: `padding-left:${(h.depth || 0) * 14}px` },
      el("span", { class: `status ${sc}` }, h.status ?? "–"), " ",
      el("span", { class: "svc" }, h.service || "(gateway)"), h.version ? el("span", { class: "muted" }, ` ${h.version}`) : "",
      el("span", { class: "muted" }, ` ${h.listener || ""}/${h.route || ""}`), hasErrors ? el("span", { class: "status s5" }, " error") : ""),
    el("div", { class: "track" }, el("div", { class: `bar ${sc}`, style: `left:${left}%;width:${Math.min(width, 100 - left)}%` })),
    el("div", { class: "dur" }, `${Number(h.duration_ms || 0).toFixed(1)} ms`));
  }).flatMap((row, i) => [row, ...authz(trace.hops[i])]);
  return el("div", { class: "card waterfall", "data-testid": "waterfall" },
    el("div", { class: "hop", style: "cursor:default;font-size:12px;color:var(--muted)" },
      el("div", {}, "status · service · listener/route"), el("div", {}, `0 — ${total.toFixed(1)} ms`), el("div", { class: "dur" }, "duration")),
    rows);
}

function hopLines(trace) {
  const sections = trace.hops.map((h, i) => el("section", { id: `hop-${i}`, class: "hop-lines" },
    el("h2", {}, el("span", { class: `status ${statusClass(h.status)}` }, h.status ?? "–"), " ", h.service || "gateway",
      el("span", { class: "muted small" }, `  ${h.method || ""} ${h.path || ""} · ${Number(h.duration_ms || 0).toFixed(1)} ms`)),
    (h.lines || []).length ? el("div", { class: "logs" }, h.lines.map((l) => logRow(l, { traceLinks: false })))
      : el("div", { class: "muted small" }, "No service log lines under this hop.")));
  if ((trace.unattached || []).length) {
    sections.push(el("section", { class: "hop-lines" }, el("h2", {}, "Other lines of the trace (gateway and unattached)"),
      el("div", { class: "logs" }, trace.unattached.map((l) => logRow(l, { traceLinks: false })))));
  }
  return sections;
}

async function main() {
  await mountSignIn();
  const app = document.getElementById("app");
  const traceId = document.body.dataset.traceId;
  const head = [el("h1", {}, "Trace ", el("span", { class: "mono", style: "font-size:15px" }, traceId)),
    el("p", { class: "subtitle" }, "Each hop the gateway logged for this request, with the log lines of the service that served it.")];
  let attempts = 0;
  const load = async () => {
    if (!session.token) return app.replaceChildren(...head, signInNotice("observability_admin"));
    const t = performance.now();
    const r = await api(`/api/traces/${encodeURIComponent(traceId)}`);
    if (r.status === 404 && attempts++ < 10) {
      // The collector ships lines within a second or two: a fresh trace may not be stored yet.
      app.replaceChildren(...head, el("p", { class: "muted" }, "Waiting for the trace's log lines…"));
      return setTimeout(load, 700);
    }
    if (!r.ok) {
      return app.replaceChildren(...head, el("div", { class: "notice error", "data-testid": "trace-error" },
        r.status === 404 ? "No log lines for this trace yet (the collector ships lines within a second or two). " : `${r.status}: `,
        errorMessage(r), " ", el("button", { class: "secondary", onclick: load }, "Retry")));
    }
    const trace = r.body;
    app.replaceChildren(...head, summary(trace), el("h2", { style: "margin-top:16px" }, "Waterfall"), waterfall(trace),
      el("h2", { style: "margin-top:16px" }, "Log lines by hop"), ...hopLines(trace));
    document.body.dataset.rendered = String(performance.now() - t);
  };
  window.addEventListener("finopti:auth", load);
  await load();
}

main();
