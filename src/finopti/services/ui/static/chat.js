// The chat page: ask in natural language as the signed-in development user; answers drawn by their view.
import { answerIds, api, el, errorMessage, mayUse, mountSignIn, session, signInNotice } from "./common.js";
import { planCard } from "./confirm.js";
import { humanLabel } from "./format.js";
import { renderView } from "./views.js";

const state = { suggestions: [], busy: false };

function turn(prompt) {
  const body = el("div", { class: "body" }, el("span", { class: "muted" }, "Thinking…"));
  const node = el("article", { class: "card turn", "data-testid": "turn" }, el("div", { class: "q" }, prompt), body);
  return { node, body };
}

/** How the figure was computed: the answer's parts (data, period, filter, method) as a list when it has them. */
function explanation(b) {
  const parts = b.data && typeof b.data === "object" && !Array.isArray(b.data) ? b.data.explanation : null;
  const listed = parts && typeof parts === "object" && !Array.isArray(parts)
    ? Object.entries(parts).filter(([, v]) => v !== null && v !== undefined && v !== "") : [];
  const body = listed.length
    ? el("dl", { class: "kv-list", "data-testid": "explanation" }, listed.map(([k, v]) => [el("dt", {}, humanLabel(k)), el("dd", {}, String(v))]))
    : el("p", { "data-testid": "explanation" }, b.explanation);
  return el("details", { class: "explanation" }, el("summary", {}, "How this was computed"), body);
}

function argumentChips(args) {
  return Object.entries(args || {}).map(([k, v]) => el("span", { class: "chip", title: "argument" }, el("i", {}, humanLabel(k)),
    typeof v === "boolean" ? (v ? "yes" : "no") : typeof v === "object" ? JSON.stringify(v) : String(v)));
}

function meta(b, canTrace) {
  return el("div", { class: "meta" },
    b.agent ? el("span", { class: "pill agent", title: "agent" }, b.agent) : null,
    b.action ? el("span", { class: "pill action", title: "action" }, b.action) : null,
    argumentChips(b.arguments), answerIds(b, canTrace));
}

/** Prompts the user can click: suggestions, "did you mean" names, clarifying choices. */
function promptChips(prompts, onPick, testid = "suggestions") {
  return el("div", { class: "examples", "data-testid": testid }, prompts.map((p) => {
    const text = typeof p === "string" ? p : p.prompt;
    const chip = el("button", { type: "button", class: "chip-btn", title: typeof p === "object" && p.description ? p.description : text }, text);
    chip.addEventListener("click", () => onPick(text));
    return chip;
  }));
}

function failure(r, b, onPick) {
  if (r.status === 403) {
    return el("div", { class: "notice denied", "data-testid": "denied" }, el("b", {}, "Denied by policy: "), b.message || "forbidden");
  }
  if (r.status === 401) {
    session.clear();
    return el("div", { class: "notice error" }, "Not signed in, or the token expired (401). ", errorMessage(r));
  }
  const parts = [el("div", { class: `notice ${r.status === 422 || r.status === 404 ? "warn" : "error"}`, "data-testid": "answer-error" },
    r.status >= 500 ? `${r.status}: ` : "", errorMessage(r))];
  const options = b.suggestions || b.did_you_mean_prompts || b.options;
  if (Array.isArray(options) && options.length) parts.push(el("div", { class: "muted small" }, "Try:"), promptChips(options, onPick, "answer-suggestions"));
  else if (Array.isArray(b.capabilities) && b.capabilities.length) {
    parts.push(el("div", { class: "muted small" }, "I can answer, for example:"),
      promptChips(b.capabilities.map((c) => (typeof c === "string" ? c : c.example || c.prompt)).filter(Boolean), onPick, "answer-suggestions"));
  }
  return parts;
}

/** An answer (or a refusal) as nodes; `onPick` asks a prompt the assistant offered. */
function outcome(r, onPick, canTrace) {
  const b = r.body && typeof r.body === "object" ? { ...r.body } : {};
  b.request_id ??= r.headers.get("x-request-id") || undefined;
  const parts = [];
  for (const note of b.notes || []) parts.push(el("div", { class: "muted small", "data-testid": "note" }, `(${note})`));
  if (r.ok && b.kind === "plan") {
    // A change waits for Confirm / Cancel (confirm.js); what they answer is drawn like any answer.
    parts.push(planCard(b, (result) => outcome(result, onPick, canTrace)));
  } else if (r.ok && (b.kind === "clarification" || b.question)) {
    // A clarifying question: the choices are prompts to click.
    parts.push(el("div", { class: "answer", "data-testid": "question" }, b.question),
      Array.isArray(b.options) ? promptChips(b.options, onPick, "options") : null);
  } else if (r.ok) {
    parts.push(el("div", { class: "answer", "data-testid": "answer" }, b.answer || "(no summary)"));
    if (b.explanation) parts.push(explanation(b));
    parts.push(renderView(b.data, b.view, { filename: `${b.action || "answer"}.csv` }));
  } else {
    parts.push(failure(r, b, onPick));
  }
  parts.push(meta(b, canTrace));
  return parts;
}

async function ask(prompt, conversation, onPick) {
  const t = turn(prompt);
  conversation.prepend(t.node);
  const [r, canTrace] = await Promise.all([api("/api/ask", { method: "POST", json: { prompt } }), mayUse("trace")]);
  t.body.replaceChildren(...outcome(r, onPick, canTrace).flat(Infinity).filter(Boolean));
  t.node.dataset.status = String(r.status);
}

async function loadSuggestions(box, onPick) {
  box.replaceChildren();
  if (!session.token) return;
  const r = await api("/api/suggestions");
  const items = r.ok && Array.isArray(r.body?.suggestions) ? r.body.suggestions : [];
  state.suggestions = items;
  box.replaceChildren(items.length ? promptChips(items, onPick)
    : el("p", { class: "muted small", "data-testid": "no-suggestions" }, r.ok ? "Your roles allow no action of the assistant." : `No suggestions (${errorMessage(r)}).`));
}

async function main() {
  await mountSignIn();
  const app = document.getElementById("app");
  const conversation = el("div", { class: "conversation", id: "conversation" });
  const input = el("input", { type: "text", id: "prompt", placeholder: "Ask about your cloud costs, e.g. “find idle instances”",
    autocomplete: "off", "aria-label": "prompt", enterkeyhint: "send" });
  const button = el("button", { type: "submit", id: "ask" }, "Ask");
  const submit = async (prompt) => {
    if (!prompt || !session.token || state.busy) return;
    state.busy = button.disabled = true;
    try { await ask(prompt, conversation, pick); } finally { state.busy = button.disabled = false; }
  };
  const pick = (prompt) => { input.value = prompt; submit(prompt); };
  const form = el("form", { class: "ask" }, input, button);
  form.addEventListener("submit", (e) => { e.preventDefault(); submit(input.value.trim()); });
  const gate = el("div", {});
  const examples = el("div", { class: "suggestion-box" });
  const side = el("aside", { class: "card side" },
    el("h2", {}, "How it works"),
    el("p", { class: "small" }, "Your prompt goes to the orchestrator through the gateway, which verifies your token on every hop. "
      + "The policy decides per route and role; a denial shows its reason."),
    el("p", { class: "small" }, "Every answer carries a request id and a trace id; with the observability_admin role, ",
      el("b", {}, "view trace"), " shows each hop and the log lines of every service."),
    el("p", { class: "small muted" }, "Development sign-in mints a token from the platform's development identity provider. In production users sign in with OIDC."),
    el("h2", {}, "Console"),
    el("ul", { class: "small" }, el("li", {}, el("a", { href: "/console" }, "Platform overview")),
      el("li", {}, el("a", { href: "/console/traces" }, "Traces")), el("li", {}, el("a", { href: "/console/live" }, "Live logs"))));
  app.replaceChildren(el("h1", {}, "Ask FinOptiAgents"),
    el("p", { class: "subtitle" }, "A FinOps assistant: idle instances, costs, utilization — answered by agents behind a service mesh."),
    el("div", { class: "chat" }, el("section", {}, gate, form, examples, conversation), side));
  const update = () => {
    gate.replaceChildren(session.token ? "" : signInNotice());
    input.disabled = button.disabled = !session.token;
    loadSuggestions(examples, pick);
    if (session.token && window.matchMedia("(min-width: 721px)").matches) input.focus();
  };
  window.addEventListener("finopti:auth", update);
  update();
}

main();
