// The chat page: ask in natural language as the signed-in development user.
import { api, el, errorMessage, mountSignIn, session, signInNotice, traceLink } from "./common.js";
import { planCard } from "./confirm.js";

const EXAMPLES = [
  "find idle instances", "list instances in us-central1-a", "monthly cost by team",
  "rightsizing recommendations", "list unattached disks", "cpu utilization of ledger-db-prod-01 over 3 days",
];

function columnsOf(rows) {
  const cols = [];
  for (const row of rows.slice(0, 200)) for (const k of Object.keys(row)) if (!cols.includes(k)) cols.push(k);
  // Scalars first, nested objects last; at most 12 columns.
  const nested = (k) => rows.some((r) => r[k] !== null && typeof r[k] === "object");
  return cols.sort((a, b) => nested(a) - nested(b)).slice(0, 12);
}

function cell(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "number") return Number.isInteger(value) ? value.toLocaleString() : value.toFixed(2);
  if (Array.isArray(value)) return value.map((v) => (typeof v === "object" ? JSON.stringify(v) : v)).join(", ");
  if (typeof value === "object") {
    return Object.entries(value).map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`).join(" ");
  }
  return String(value);
}

export function table(rows) {
  const cols = columnsOf(rows);
  const header = el("tr", {}, cols.map((c) => el("th", {}, c.replaceAll("_", " "))));
  const body = rows.map((r) => el("tr", {}, cols.map((c) => el("td", { class: typeof r[c] === "number" ? "num" : "" }, cell(r[c])))));
  return el("div", { class: "table-wrap" }, el("table", { class: "data", "data-testid": "answer-table" },
    el("thead", {}, header), el("tbody", {}, body)));
}

/** data -> a table when it is (or holds) an array of objects, else a key/value table or nothing. */
function renderData(data) {
  if (Array.isArray(data) && data.length && data.every((r) => r && typeof r === "object" && !Array.isArray(r))) {
    return [el("div", { class: "muted small" }, `${data.length} row${data.length === 1 ? "" : "s"}`), table(data)];
  }
  if (data && typeof data === "object" && !Array.isArray(data)) {
    const parts = [];
    const scalars = Object.entries(data).filter(([, v]) => v === null || typeof v !== "object");
    if (scalars.length) parts.push(table([Object.fromEntries(scalars)]));
    for (const [k, v] of Object.entries(data)) {
      if (Array.isArray(v) && v.length && v.every((r) => r && typeof r === "object")) {
        parts.push(el("h2", { style: "margin-top:12px" }, k.replaceAll("_", " ")), table(v));
      }
    }
    return parts;
  }
  if (Array.isArray(data) && data.length) return el("div", {}, data.map(cell).join(", "));
  return [];
}

function turn(prompt) {
  const body = el("div", { class: "body" }, el("span", { class: "muted" }, "Thinking…"));
  const node = el("div", { class: "card turn", "data-testid": "turn" }, el("div", { class: "q" }, prompt), body);
  return { node, body };
}

function meta(b) {
  return el("div", { class: "meta" },
    b.agent ? el("span", { class: "pill agent", title: "agent" }, b.agent) : null,
    b.action ? el("span", { class: "pill action", title: "action" }, b.action) : null,
    b.arguments && Object.keys(b.arguments).length
      ? el("span", { class: "pill mono" }, Object.entries(b.arguments).map(([k, v]) => `${k}=${v}`).join(" ")) : null,
    b.trace_id ? [el("span", { class: "muted" }, "trace"), traceLink(b.trace_id, "view trace ↗")] : null,
    b.trace_id ? el("span", { class: "mono muted small" }, b.trace_id) : null,
  );
}

/** An answer (or a refusal) as nodes; `onPick` re-asks with a prompt the assistant offered. */
function outcome(r, onPick) {
  const b = r.body && typeof r.body === "object" ? r.body : {};
  const parts = [];
  for (const note of b.notes || []) parts.push(el("div", { class: "muted small", "data-testid": "note" }, `(${note})`));
  if (r.ok && b.kind === "plan") {
    parts.push(planCard(b, (result) => outcome(result, onPick)));
  } else if (r.ok && b.kind === "clarification") {
    parts.push(el("div", { class: "answer", "data-testid": "question" }, b.question),
      el("div", { class: "examples", "data-testid": "options" }, (b.options || []).map((o) =>
        el("button", { type: "button", title: o.description || o.prompt, onclick: () => onPick(o.prompt) }, o.prompt))));
  } else if (r.ok) {
    parts.push(el("div", { class: "answer", "data-testid": "answer" }, b.answer || "(no summary)"), renderData(b.data));
  } else if (r.status === 403) {
    parts.push(el("div", { class: "notice denied", "data-testid": "denied" },
      el("b", {}, "Denied by policy: "), b.message || "forbidden"));
  } else if (r.status === 422 && Array.isArray(b.capabilities)) {
    const offered = (b.suggestions || []).map((s) => s.prompt).filter(Boolean);
    parts.push(el("div", { class: "notice warn" }, b.message || "I cannot map this prompt to an action."),
      el("div", { class: "muted small" }, offered.length ? "Try:" : "I can:"),
      el("div", { class: "examples", "data-testid": "suggestions" }, (offered.length ? offered : b.capabilities).map((c) =>
        el("button", { type: "button", onclick: () => onPick(typeof c === "string" ? c : c.example || c.prompt) },
          typeof c === "string" ? c : c.example || c.prompt))));
  } else if (r.status === 401) {
    parts.push(el("div", { class: "notice error" }, "Not signed in or the token expired (401). ", errorMessage(r)));
    session.clear();
  } else {
    parts.push(el("div", { class: "notice error", "data-testid": "answer-error" }, `${r.status}: `, errorMessage(r)));
  }
  parts.push(meta(b));
  return parts;
}

async function ask(prompt, conversation, onPick) {
  const t = turn(prompt);
  conversation.prepend(t.node);
  const r = await api("/api/ask", { method: "POST", json: { prompt } });
  t.body.replaceChildren(...outcome(r, onPick).flat(Infinity).filter(Boolean));
}

async function main() {
  await mountSignIn();
  const app = document.getElementById("app");
  const conversation = el("div", { class: "conversation", id: "conversation" });
  const input = el("input", { type: "text", id: "prompt", placeholder: "Ask about your cloud costs, e.g. “find idle instances”",
    autocomplete: "off", "aria-label": "prompt" });
  const button = el("button", { type: "submit", id: "ask" }, "Ask");
  const submit = async (prompt) => {
    if (!prompt || !session.token) return;
    button.disabled = true;
    try { await ask(prompt, conversation, pick); } finally { button.disabled = false; }
  };
  const pick = (prompt) => { input.value = prompt; submit(prompt); };
  const form = el("form", { class: "ask", onsubmit: async (e) => {
    e.preventDefault();
    await submit(input.value.trim());
  } }, input, button);
  const gate = el("div", {});
  const examples = el("div", { class: "examples" }, EXAMPLES.map((p) => el("button", { type: "button",
    onclick: () => { input.value = p; input.focus(); } }, p)));
  const side = el("aside", { class: "card side" },
    el("h2", {}, "How it works"),
    el("p", { class: "small" }, "Your prompt goes to the orchestrator through the gateway, which verifies your token on every hop. "
      + "The policy decides per route and role; a denial shows its reason."),
    el("p", { class: "small" }, "Every answer has a trace: follow ", el("b", {}, "view trace"), " to see each hop and the log lines of every service."),
    el("p", { class: "small muted" }, "Development sign-in mints a token from the platform's development identity provider. In production users sign in with OIDC."),
    el("h2", {}, "Console"),
    el("ul", { class: "small" }, el("li", {}, el("a", { href: "/console" }, "Platform overview")),
      el("li", {}, el("a", { href: "/console/live" }, "Live logs"))));
  app.replaceChildren(el("h1", {}, "Ask FinOptiAgents"),
    el("p", { class: "subtitle" }, "A FinOps assistant: idle instances, costs, utilization — answered by agents behind a service mesh."),
    el("div", { class: "chat" }, el("section", {}, gate, form, examples, conversation), side));
  const update = () => {
    gate.replaceChildren(session.token ? "" : signInNotice());
    input.disabled = button.disabled = !session.token;
    if (session.token) input.focus();
  };
  window.addEventListener("finopti:auth", update);
  update();
}

main();
