// Shared by every page: development sign-in (token in sessionStorage), authorized fetch, small DOM helpers.
const TOKEN = "finopti.token", EMAIL = "finopti.email", ROLES = "finopti.roles";

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k === "style") node.style.cssText = v;  // CSSOM: the CSP forbids inline style attributes
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
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

/** fetch on the same origin with the user's bearer token; returns {status, ok, body}. */
export async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (session.token) headers.authorization = `Bearer ${session.token}`;
  if (options.json !== undefined) {
    headers["content-type"] = "application/json";
    options = { ...options, body: JSON.stringify(options.json) };
  }
  const response = await fetch(path, { ...options, headers });
  const text = await response.text();
  let body = text;
  try { body = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  return { status: response.status, ok: response.ok, body };
}

export function errorMessage(result) {
  const b = result.body;
  if (b && typeof b === "object") return b.message || b.error || JSON.stringify(b);
  return `${result.status}: ${String(b || "").slice(0, 200)}`;
}

export function traceLink(id, text) {
  if (!id) return document.createTextNode("");
  return el("a", { href: `/console/trace/${encodeURIComponent(id)}`, class: "mono trace-link", title: "view trace" },
    text || id);
}

/** The sign-in widget in the header: pick a development user, get a token from the development IdP. */
export async function mountSignIn() {
  const box = document.getElementById("signin");
  const render = async () => {
    box.replaceChildren();
    if (session.token) {
      box.append(
        el("span", { class: "who", "data-testid": "signed-in" }, session.email),
        el("span", { class: "roles" }, session.roles.join(", ") || "no role"),
        el("button", { class: "secondary", onclick: () => session.clear() }, "Sign out"),
      );
      return;
    }
    const result = await api("/auth/dev-users");
    if (result.status === 404) {  // development sign-in switched off (identity.dev_sign_in in mesh.yaml)
      box.append(el("span", { class: "roles", "data-testid": "dev-sign-in-off" }, errorMessage(result)));
      return;
    }
    const select = el("select", { "aria-label": "development user", id: "dev-user" },
      el("option", { value: "" }, "Choose a development user…"));
    for (const u of (result.body && result.body.users) || []) {
      select.append(el("option", { value: u.email }, `${u.email} — ${u.roles.join(", ") || "no role"}`));
    }
    const button = el("button", {
      id: "sign-in",
      onclick: async () => {
        if (!select.value) return select.focus();
        button.disabled = true;
        const r = await api("/auth/dev-token", { method: "POST", json: { email: select.value } });
        button.disabled = false;
        if (r.ok) session.set(r.body.token, r.body.email, r.body.roles);
        else alert(errorMessage(r));
      },
    }, "Sign in");
    box.append(el("span", { class: "badge dev", "data-testid": "dev-sign-in",
      title: "Tokens from the platform's development identity provider, for loopback development only. "
        + "Production signs users in with OIDC." }, "Development sign-in"), select, button);
  };
  window.addEventListener("finopti:auth", render);
  await render();
}

/** A notice asking to sign in (with the role a page needs). */
export function signInNotice(role) {
  return el("div", { class: "notice warn" },
    "Sign in with a development user (top right)", role ? ` who has the role ${role}` : "",
    ". Development tokens come from the platform's development identity provider; production uses OIDC.");
}

export function fmtTime(ts) {
  if (!ts) return "";
  const d = new Date(ts);
  if (isNaN(d)) return String(ts);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

export function statusClass(status) {
  if (status === null || status === undefined) return "sx";
  const c = Math.floor(Number(status) / 100);
  return c >= 2 && c <= 5 ? `s${c}` : "sx";
}

/** One log entry ({ts, service, level, line, metadata}) as a row of a .logs block. */
export function logRow(entry, { traceLinks = true } = {}) {
  const obj = entry.line && typeof entry.line === "object" ? entry.line : null;
  const level = (entry.level || (obj && obj.level) || "").toLowerCase();
  const message = obj ? (obj.message || obj.event || "") : String(entry.line || "");
  const skip = new Set(["ts", "level", "service", "message", "version", "span_id", "trace_id"]);
  const extra = obj ? Object.entries(obj).filter(([k, v]) => !skip.has(k) && v !== null && v !== "")
    .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ") : "";
  const traceId = obj && obj.trace_id;
  return el("div", { class: `ln ${level}`, "data-service": entry.service, "data-level": level },
    el("span", { class: "ts" }, fmtTime(entry.ts)),
    el("span", { class: "svc" }, entry.service),
    el("span", { class: "lvl" }, level),
    el("span", {}, message, " ", el("span", { class: "kv" }, extra),
      traceId && traceLinks ? [" ", traceLink(traceId, "trace ↗")] : []),
  );
}
