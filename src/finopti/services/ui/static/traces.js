// Traces: the requests that entered through the gateway's edge, newest first, searchable by user, route,
// status, time window and trace id prefix (GET /api/traces/ of the log store).
import { api, consoleAccess, el, errorMessage, mayUse, mountSignIn, roleNotice, session, signInNotice, statusClass, traceLink } from "./common.js";
import { absoluteTime, formatDuration, relativeAge } from "./format.js";

const WINDOWS = { "15m": "last 15 minutes", "1h": "last hour", "6h": "last 6 hours", "24h": "last 24 hours", "7d": "last 7 days" };
const STATUSES = { "": "any status", "2xx": "2xx", "4xx": "4xx", "5xx": "5xx", error: "4xx and 5xx" };
const TRAFFIC = { user: "user requests", platform: "console & platform", all: "everything" };

function select(id, label, options, value) {
  const s = el("select", { id, "aria-label": label }, Object.entries(options).map(([v, t]) => el("option", { value: v }, t)));
  s.value = value ?? "";
  return el("label", {}, label, s);
}

function row(t) {
  const sc = statusClass(t.status);
  return el("tr", { "data-trace": t.trace_id, "data-status": t.status ?? "" },
    el("td", { "data-label": "When" }, el("time", { datetime: t.ts, title: absoluteTime(t.ts) }, relativeAge(t.ts))),
    el("td", { "data-label": "User" }, t.user || el("span", { class: "muted" }, "anonymous")),
    el("td", { "data-label": "Request", class: "wrap" }, t.prompt ? `“${t.prompt}”` : el("code", {}, `${t.method || ""} ${t.path || ""}`)),
    el("td", { "data-label": "Route" }, t.route || "–"),
    el("td", { "data-label": "Status" }, el("span", { class: `status ${sc}` }, t.status ?? "–")),
    el("td", { "data-label": "Duration", class: "num" }, formatDuration(t.duration_ms)),
    el("td", { "data-label": "Trace" }, traceLink(t.trace_id, t.trace_id)));
}

async function main() {
  await mountSignIn();
  const app = document.getElementById("app");
  const query = new URLSearchParams(location.search);
  const user = el("input", { type: "search", id: "t-user", placeholder: "email", "aria-label": "user", value: query.get("user") || "" });
  const prefix = el("input", { type: "search", id: "t-prefix", placeholder: "first hex digits", "aria-label": "trace id",
    value: query.get("prefix") || "" });
  const route = el("input", { type: "search", id: "t-route", placeholder: "e.g. ask", "aria-label": "route", value: query.get("route") || "" });
  const form = el("form", { class: "toolbar trace-filters", "data-testid": "trace-filters" },
    el("label", {}, "User", user), el("label", {}, "Route", route),
    select("t-status", "Status", STATUSES, query.get("status")), select("t-window", "Window", WINDOWS, query.get("since") || "1h"),
    select("t-traffic", "Traffic", TRAFFIC, query.get("traffic") || "user"), el("label", {}, "Trace id", prefix),
    el("button", { type: "submit" }, "Search"));
  const results = el("div", { "data-testid": "trace-results" });
  const gate = el("div");
  app.replaceChildren(el("h1", {}, "Traces"),
    el("p", { class: "subtitle" }, "Requests that came in through the gateway, newest first: who asked what, how it ended and how long it took."),
    gate, form, results);

  const search = async () => {
    const params = new URLSearchParams({ since: form.querySelector("#t-window").value, traffic: form.querySelector("#t-traffic").value, limit: "100" });
    for (const [name, node] of [["user", user], ["route", route], ["prefix", prefix]]) if (node.value.trim()) params.set(name, node.value.trim());
    const status = form.querySelector("#t-status").value;
    if (status) params.set("status", status);
    history.replaceState(null, "", `?${params}`);
    results.replaceChildren(el("p", { class: "muted" }, "Searching…"));
    const r = await api(`/api/traces/?${params}`);
    if (!r.ok) return results.replaceChildren(el("div", { class: "notice error", "data-testid": "trace-search-error" }, errorMessage(r)));
    const traces = r.body.traces || [];
    if (!traces.length) {
      return results.replaceChildren(el("div", { class: "notice", "data-testid": "no-traces" },
        "No request matches these filters in the window. Widen the window, clear a filter, or ask something in the ",
        el("a", { href: "/" }, "chat"), "."));
    }
    results.replaceChildren(
      el("p", { class: "muted small" }, `${traces.length} request${traces.length === 1 ? "" : "s"}`,
        r.body.truncated ? ` (from the newest ${r.body.scanned} gateway lines of the window)` : ""),
      el("div", { class: "table-wrap" }, el("table", { class: "data", "data-testid": "trace-table" },
        el("thead", {}, el("tr", {}, ["When", "User", "Request", "Route", "Status", "Duration", "Trace"].map((h) => el("th", {}, el("span", { class: "th" }, h))))),
        el("tbody", {}, traces.map(row)))));
  };
  form.addEventListener("submit", (e) => { e.preventDefault(); search(); });
  for (const id of ["#t-status", "#t-window", "#t-traffic"]) form.querySelector(id).addEventListener("change", search);
  const start = async () => {
    if (!session.token) { gate.replaceChildren(signInNotice((await consoleAccess()).trace?.join(" or "))); form.hidden = results.hidden = true; return; }
    if (!(await mayUse("trace"))) { gate.replaceChildren(roleNotice((await consoleAccess()).trace || [], "traces")); form.hidden = results.hidden = true; return; }
    gate.replaceChildren(); form.hidden = results.hidden = false;
    search();
  };
  window.addEventListener("finopti:auth", start);
  start();
}

main();
