// A change the assistant planned: what will change, whether it can be undone, what it does to the monthly
// bill, and Confirm / Cancel. Nothing changes until Confirm sends the plan's single-use token back; the
// buttons are wired with listeners (no inline handlers), so the page keeps a strict CSP.
import { api, el } from "./common.js";

function money(value) {
  const sign = value < 0 ? "−" : value > 0 ? "+" : "";
  return `${sign}$${Math.abs(value).toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 })}`;
}

function facts(plan) {
  const rows = [
    ["Changes", el("ul", { class: "plan-changes" }, (plan.changes || []).map((c) => el("li", {}, c)))],
    ["Can be undone", plan.reversible ? `yes — “${plan.undo}”` : el("b", { class: "irreversible" }, "no")],
    ["Monthly bill", `${money(plan.monthly_cost_change_usd || 0)} (${plan.cost_note || ""})`],
  ];
  return el("dl", { class: "plan-facts" }, rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
}

/** The plan card; `outcome(result)` renders what the confirmation or cancellation answered. */
export function planCard(body, outcome) {
  const plan = body.plan || {};
  const expires = new Date(body.confirmation.expires_at);
  const status = el("div", { class: "muted small", "data-testid": "plan-expiry" },
    `Confirm before ${expires.toLocaleTimeString()} — the confirmation works once, for you only.`);
  const result = el("div", { "data-testid": "plan-outcome" });
  const confirm = el("button", { type: "button", class: plan.reversible ? "" : "danger", "data-testid": "confirm" },
    "Confirm");
  const cancel = el("button", { type: "button", class: "secondary", "data-testid": "cancel" }, "Cancel");
  const send = async (verb) => {
    confirm.disabled = cancel.disabled = true;
    status.textContent = verb === "confirm" ? "Confirming…" : "Cancelling…";
    const r = await api(`/api/ask/${verb}`, { method: "POST", json: { token: body.confirmation.token } });
    status.textContent = verb === "confirm" ? "Confirmed." : "Cancelled.";
    result.replaceChildren(...[outcome(r)].flat(Infinity).filter(Boolean));
  };
  confirm.addEventListener("click", () => send("confirm"));
  cancel.addEventListener("click", () => send("cancel"));
  return el("div", { class: "plan", "data-testid": "plan" },
    el("div", { class: "answer" }, body.answer || "This change needs your confirmation."),
    facts(plan), el("div", { class: "plan-actions" }, confirm, cancel), status, result);
}
