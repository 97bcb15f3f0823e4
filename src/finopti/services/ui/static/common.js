// Shared by every page: development sign-in (token in sessionStorage), authorized fetch, the header menu,
// small DOM helpers and log rows. No inline scripts, styles or handlers anywhere (a strict CSP holds).
import { absoluteTime, clockTime, formatDuration } from "./format.js";

const TOKEN = "finopti.token", EMAIL = "finopti.email", ROLES = "finopti.roles";

/** document.createElement with attributes; `style` is an object (set through the CSSOM), `on*` are listeners. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k === "style") Object.assign(node.style, v);  // CSSOM: the CSP forbids inline style attributes
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

export const session = {
  get token() { return sessionStorage.getItem(TOKEN); },
  get email() { return sessionStorage.getItem(EMAIL); },
  get roles() { try { return JSON.parse(sessionStorage.getItem(ROLES) || "[]"); } catch { return []; } },
  set(token, email, roles) {
    sessionStorage.setItem(TOKEN, token); sessionStorage.setItem(EMAIL, email);
    sessionStorage.setItem(ROLES, JSON.stringify(roles || []));
    window.dispatchEvent(new CustomEvent("finopti:auth"));
  },
  clear() {
    for (const k of [TOKEN, EMAIL, ROLES]) sessionStorage.removeItem(k);
    window.dispatchEvent(new CustomEvent("finopti:auth"));
  },
};

/** fetch on the same origin with the user's bearer token; returns {status, ok, body, headers}. */
export async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (session.token) headers.authorization = `Bearer ${session.token}`;
  if (options.json !== undefined) {
    headers["content-type"] = "application/json";
    options = { ...options, body: JSON.stringify(options.json) };
  }
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch (err) {
    return { status: 0, ok: false, body: { message: `the gateway did not answer (${err.message})` }, headers: new Headers() };
  }
  const text = await response.text();
  let body = text;
  try { body = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  return { status: response.status, ok: response.ok, body, headers: response.headers };
}

export function errorMessage(result) {
  const b = result.body;
  if (b && typeof b === "object") return b.message || b.error || JSON.stringify(b);
  return `${result.status}: ${String(b || "").slice(0, 200)}`;
}

/** Which roles each console area needs, from the running mesh (served by the ui service). */
let accessPromise = null;
export function consoleAccess() {
  accessPromise ??= api("/console/access.json").then((r) => (r.ok && r.body ? r.body : {}));
  return accessPromise;
}

/** May the signed-in user use `area` (trace, logs, metrics)? Unknown areas: yes (the gateway decides). */
export async function mayUse(area) {
  const needed = (await consoleAccess())[area];
  if (!Array.isArray(needed) || !needed.length) return Boolean(session.token);
  return session.roles.some((r) => needed.includes(r));
}

/** A link to a trace's view; `fresh`: the request just ended, so the view waits a moment for its lines. */
export function traceLink(id, text, { fresh = false } = {}) {
  if (!id) return document.createTextNode("");
  return el("a", { href: `/console/trace/${encodeURIComponent(id)}${fresh ? "?fresh=1" : ""}`, class: "mono trace-link",
    title: `trace ${id}` }, text || id);
}

/** The development sign-in: a user picker and a button; where it is switched off (identity.dev_sign_in in
 *  mesh.yaml), the reason instead. */
async function devUserPicker(idSuffix = "") {
  const result = await api("/auth/dev-users");
  if (result.status === 404) {
    return [el("span", { class: "roles", "data-testid": `dev-sign-in-off${idSuffix}` }, errorMessage(result))];
  }
  const badge = el("span", { class: "badge dev", "data-testid": `dev-sign-in${idSuffix}`,
    title: "Tokens from the platform's development identity provider, for loopback development only. "
      + "Production signs users in with OIDC." }, "Development sign-in");
  const select = el("select", { "aria-label": "development user", id: `dev-user${idSuffix}`, class: "dev-user" },
    el("option", { value: "" }, "Choose a development user…"));
  for (const u of (result.body && result.body.users) || []) {
    select.append(el("option", { value: u.email }, `${u.email} — ${u.roles.join(", ") || "no role"}`));
  }
  const status = el("span", { class: "signin-error", role: "alert" });
  const button = el("button", { type: "button", id: `sign-in${idSuffix}`, class: "sign-in" }, "Sign in");
  button.addEventListener("click", async () => {
    if (!select.value) return select.focus();
    button.disabled = true;
    const r = await api("/auth/dev-token", { method: "POST", json: { email: select.value } });
    button.disabled = false;
    if (r.ok) session.set(r.body.token, r.body.email, r.body.roles);
    else status.textContent = errorMessage(r);
  });
  return [badge, select, button, status];
}

/** The header: a menu button folds the navigation and the sign-in on narrow screens. */
function mountMenu() {
  const header = document.querySelector("header.top");
  const toggle = document.getElementById("menu-toggle");
  if (!header || !toggle || toggle.dataset.wired) return;
  toggle.dataset.wired = "1";
  toggle.addEventListener("click", () => {
    const open = header.classList.toggle("open");
    toggle.setAttribute("aria-expanded", String(open));
  });
}

/** The sign-in widget in the header: pick a development user, get a token from the development IdP. */
export async function mountSignIn() {
  mountMenu();
  const box = document.getElementById("signin");
  const render = async () => {
    if (session.token) {
      box.replaceChildren(
        el("span", { class: "who", "data-testid": "signed-in" }, session.email),
        el("span", { class: "roles" }, session.roles.join(", ") || "no role"),
        el("button", { class: "secondary", type: "button", onclick: () => session.clear() }, "Sign out"),
      );
      return;
    }
    box.replaceChildren(...(await devUserPicker()));
  };
  window.addEventListener("finopti:auth", render);
  await render();
}

/** A notice with its own sign-in picker (the header's may be folded away on a phone). */
export function signInNotice(role) {
  const picker = el("span", { class: "inline-signin" });
  devUserPicker("-inline").then((nodes) => picker.replaceChildren(...nodes));
  return el("div", { class: "notice warn", "data-testid": "sign-in-notice" },
    el("p", {}, "Sign in with a development user", role ? ` who has the role ${role}` : "",
      ". Development tokens come from the platform's development identity provider; production uses OIDC."),
    picker);
}

/** One page-level notice when the signed-in user lacks the role a page needs. */
export function roleNotice(roles, what) {
  return el("div", { class: "notice denied", "data-testid": "role-notice" },
    el("b", {}, `${session.email} cannot see ${what}: `),
    `it needs the role ${roles.join(" or ")}; you have ${session.roles.join(", ") || "no role"}. `,
    "Sign in as another development user, or ask an administrator for the role.");
}

export function statusClass(status) {
  if (status === null || status === undefined || status === "") return "sx";
  const c = Math.floor(Number(status) / 100);
  return c >= 2 && c <= 5 ? `s${c}` : "sx";
}

/** Request and trace ids of an answer: always shown (denials too), the trace linked only for those who may open it. */
export function answerIds(body, canTrace) {
  const ids = [];
  if (body.request_id) ids.push(el("span", { class: "id-pill", title: "request id (x-request-id)" }, "request ", el("code", {}, body.request_id)));
  if (body.trace_id) {
    ids.push(canTrace ? el("span", { class: "id-pill" }, traceLink(body.trace_id, "view trace ↗", { fresh: true }), " ", el("code", { class: "muted" }, body.trace_id))
      : el("span", { class: "id-pill", title: "opening a trace needs the observability_admin role" }, "trace ", el("code", {}, body.trace_id)));
  }
  return ids;
}

// Fields of a JSON log line that are shown in their own column or are noise in a log view.
export const LOG_BASE_FIELDS = new Set(["ts", "level", "service", "message", "version", "span_id", "trace_id", "color_message", "taskName"]);

/** The fields of a log entry other than the base ones (what the live view offers as columns). */
export function detectedFields(entry) {
  const obj = entry.line && typeof entry.line === "object" ? entry.line : null;
  if (!obj) return {};
  return Object.fromEntries(Object.entries(obj).filter(([k, v]) => !LOG_BASE_FIELDS.has(k) && v !== null && v !== "" && v !== "-"));
}

function fieldText(key, value) {
  if (key === "duration_ms" || key === "upstream_duration_ms") return formatDuration(Number(value));
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

/**
 * One log entry ({ts, service, level, line, metadata}) as a row: time, service, level, message, then either
 * the chosen `columns` (each its own cell) or the remaining fields as key=value chips.
 */
export function logRow(entry, { traceLinks = true, columns = null } = {}) {
  const obj = entry.line && typeof entry.line === "object" ? entry.line : null;
  const level = String(entry.level || (obj && obj.level) || "").toLowerCase();
  const message = obj ? (obj.message || obj.event || "") : String(entry.line ?? "");
  const fields = detectedFields(entry);
  const traceId = (obj && obj.trace_id) || (entry.metadata && entry.metadata.trace_id);
  const link = traceId && traceLinks ? [" ", traceLink(traceId, "trace ↗")] : [];
  const cells = columns
    ? [el("span", { class: "msg" }, message, link),
      ...columns.map((c) => el("span", { class: "col", "data-field": c, title: c }, c in fields ? fieldText(c, fields[c]) : ""))]
    // Without chosen columns, the fields follow the message on its line, as key=value (request ids left out).
    : [el("span", { class: "msg" }, el("span", { class: "text" }, message), " ",
      Object.entries(fields).filter(([k]) => !CHIP_HIDDEN.has(k)).map(([k, v]) => el("span", { class: "f" }, el("i", {}, `${k}=`), fieldText(k, v), " ")),
      link)];
  // A line whose clock was far ahead is stored at the time it was read; it says what it claimed (docs/logs.md).
  const claimed = entry.metadata && entry.metadata.original_ts;
  return el("div", { class: `ln lvl-${level || "none"}`, "data-service": entry.service, "data-level": level, "data-ts": entry.ts_ns ?? "" },
    el("span", { class: "ts", title: claimed ? `read at ${absoluteTime(entry.ts)}; the line says ${claimed}` : absoluteTime(entry.ts) },
      clockTime(entry.ts), claimed ? el("span", { class: "skew", "data-testid": "clock-skew" }, " ⚠") : null),
    el("span", { class: "svc" }, entry.service),
    el("span", { class: "lvl" }, level || "–"),
    cells);
}

const CHIP_HIDDEN = new Set(["request_id", "decision_id"]);
