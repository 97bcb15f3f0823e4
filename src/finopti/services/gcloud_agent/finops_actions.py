"""gcloud-agent's billing actions: one sentence that answers the question; how the chat charts it is in
finops_views.py (the presentation contract of docs/console.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from finopti.cloud.finops.common import format_money
from finopti.services.agent import Action
from finopti.services.gcloud_agent import finops_views as views

_money = format_money


def _signed(value: float, currency: str = "USD") -> str:
    return ("+" if value >= 0 else "") + _money(value, currency)


def _span(period: dict) -> str:
    return period["start"] if period["start"] == period["end"] else f"{period['start']} to {period['end']}"


def _filter(data: dict) -> str:
    where = data.get("filter") or {}
    parts = [*(f"project {p}" for p in where.get("project", [])), *(f"service {s}" for s in where.get("service", [])),
             *(f"{k}={v}" for k, v in where.get("labels", {}).items())]
    return f" for {', '.join(parts)}" if parts else ""


def _report(data: Any, _: dict) -> str:
    cur, t = data["currency"], data["totals"]
    top = ", ".join(f"{g['key']} {_money(g['net'], cur)} ({g['share']:.0%})" for g in data["groups"][:3])
    dim = data["group_by"].removeprefix("label:")
    by = "" if dim in ("day", "month") else f"; largest by {dim}: {top}" if top else \
        "; nothing was billed to this slice in the period"  # a team with no resources, a service not used
    return (f"net cost {_span(data['period'])}{_filter(data)}: {_money(t['net'], cur)} (cost {_money(t['cost'], cur)},"
            f" credits {_money(t['credits'], cur)}){by}")


def _compare(data: Any, _: dict) -> str:
    cur, now, before = data["currency"], data["current"], data["previous"]
    verb = "rose" if data["change"] > 0 else "fell" if data["change"] < 0 else "did not change"
    pct = f" ({data['change_pct']:+.1f}%)" if data["change_pct"] is not None else ""
    drivers = []
    for d in data["drivers"][:3]:
        if abs(d["change"]) < 0.005:
            continue
        detail = d["details"][0] if d.get("details") else None
        why = f": {detail['key']} {_signed(detail['change'], cur)}" if detail and detail["key"] != d["key"] else ""
        drivers.append(f"{d['key']} {_signed(d['change'], cur)}{' (new)' if d['status'] == 'new' else ''}{why}")
    return (f"net cost{_filter(data)} {verb} {_money(abs(data['change']), cur)}{pct}, from "
            f"{_money(before['net'], cur)} ({_span(before['period'])}) to {_money(now['net'], cur)} "
            f"({_span(now['period'])})" + (f"; drivers: {'; '.join(drivers)}" if drivers else ""))


def _month(month: str) -> str:
    return datetime.strptime(month, "%Y-%m").strftime("%B %Y")


def _forecast(data: Any, _: dict) -> str:
    cur, m, n = data["currency"], data["month_end"], data["next_month"]
    lo80, hi80 = m["interval_80"]
    nlo, nhi = n["interval_80"]
    return (f"{_month(m['month'])}{_filter(data)} should end at {_money(m['forecast'], cur)} (80% interval "
            f"{_money(lo80, cur)} to {_money(hi80, cur)}), {_money(m['actual_to_date'], cur)} spent in the first "
            f"{m['days_elapsed']} days; {_month(n['month'])}: {_money(n['forecast'], cur)} (80% {_money(nlo, cur)} to "
            f"{_money(nhi, cur)})")


def _anomalies(data: Any, _: dict) -> str:
    found = data["anomalies"]
    if not found:
        return f"no cost anomalies {_span(data['period'])}{_filter(data)}"
    return f"{len(found)} cost anomal{'y' if len(found) == 1 else 'ies'} {_span(data['period'])}: " + "; ".join(
        a["reason"] for a in found)


def _budget_line(s: dict) -> str:
    state = {"over": "over budget", "forecast_over": "forecast over budget", "on_track": "on track"}[s["state"]]
    return (f"{s['name']}: {_money(s['actual'])} of {_money(s['amount'])} spent ({s['actual_percent']}%), forecast "
            f"{_money(s['forecast'])} ({s['forecast_percent']}%), {state}, "
            f"{s['exceed_probability']:.0%} chance of going over")


def _budget_status(data: Any, _: dict) -> str:
    crossed = [f"{t['percent']:g}% of {t['basis']}" for t in data["thresholds"] if t["crossed"]]
    return _budget_line(data) + (f"; thresholds crossed: {', '.join(crossed)}" if crossed else "")


def _budget_created(data: Any, _: dict) -> str:
    return f"{data['message']}; {_budget_status(data['status'], {})}"


def _budgets(data: Any, _: dict) -> str:
    return f"{len(data)} budget{'s' if len(data) != 1 else ''}" + (": " if data else "") + "; ".join(
        _budget_line(b) for b in data)


def _explain_budgets(data: Any, _: dict) -> str:
    months = sorted({b["month"] for b in data})
    return ("Data: the budgets and the billing export of the sandbox. Period: month to date "
            f"({', '.join(months) or 'this month'}). Filter: each budget's own (project, service or labels). "
            "Method: each budget's actual = net cost (credits included) of "
            "its slice this month; forecast = actual + a least-squares forecast of the remaining days; chance of "
            "going over from the forecast's interval (ask for one budget's status for its intervals and thresholds).")


def _commitments(data: Any, _: dict) -> str:
    cur = data["currency"]
    used = "; ".join(f"{c['name']} ({c['vcpus']} vCPU, {c['memory_gb']} GB {c['series'].upper()} in {c['region']}) "
                     f"{c['utilisation_percent']['vcpus']}% used" for c in data["commitments"])
    recs = data["recommendations"]
    if not recs:
        return (f"no new commitment recommended from the last {data['lookback']['days']} days"
                + (f"; existing: {used}" if used else ""))
    top = recs[0]
    return (f"{len(recs)} commitment{'s' if len(recs) != 1 else ''} recommended, saving "
            f"{_money(data['total_monthly_saving']['TWELVE_MONTH'], cur)}/month on 1-year plans or "
            f"{_money(data['total_monthly_saving']['THIRTY_SIX_MONTH'], cur)} on 3-year; largest: "
            f"{top['vcpus']['recommended']} vCPU + {top['memory_gb']['recommended']} GB {top['series'].upper()} in "
            f"{top['region']} ({_money(top['monthly_saving_1y'], cur)}/month)"
            + (f"; existing: {used}" if used else ""))


def _unlabeled(data: Any, _: dict) -> str:
    cur = data["currency"]
    services = ", ".join(f"{s['key']} {_money(s['net'], cur)}" for s in data["by_service"][:3])
    return (f"{_money(data['unlabeled']['net'], cur)} ({data['share']:.1%}) of {_money(data['total_net'], cur)} spent "
            f"{_span(data['period'])} has no {' or no '.join(data['keys'])} label, on {data['resource_count']} "
            f"resources" + (f"; by service: {services}" if services else ""))


def _unused(data: Any, _: dict) -> str:
    kinds = data["monthly_cost_by_kind"]
    count = {k: len(data[k]) for k in kinds}
    return (f"{len(data['items'])} unused resources cost {_money(data['monthly_saving_usd'])}/month: "
            f"{count['unattached_disks']} unattached disks {_money(kinds['unattached_disks'])}, "
            f"{count['idle_addresses']} idle external IPs {_money(kinds['idle_addresses'])}, "
            f"{count['old_snapshots']} old snapshots {_money(kinds['old_snapshots'])}")


def _rows(data: Any, _: dict) -> str:
    return f"{len(data['rows'])} billing export rows {_span(data['period'])}{_filter(data)}, costliest first"


def _message(data: Any, _: dict) -> str:
    return data["message"]


def _budget_plan(data: Any, _: dict) -> str:
    if data.get("blocked"):
        return f"cannot {data['action'].replace('_budget', '')} budget {data['name']}: {data['blocked']}"
    return f"{'; '.join(data['changes'])}; undo with “{data['undo']}”"


FINOPS_ACTIONS = {
    "billing_export_rows": Action("billing_export_rows", "Raw billing export rows (BigQuery schema)", _rows,
                                  views.billing_export_rows),
    "cost_report": Action("cost_report", "Cost over a period by service, project, SKU, team, label or day",
                          _report, views.cost_report),
    "compare_costs": Action("compare_costs", "Compare two periods' cost and find what drove the change", _compare,
                            views.compare_costs),
    "forecast_costs": Action("forecast_costs", "Forecast this month's and next month's cost with intervals",
                             _forecast, views.forecast_costs),
    "detect_cost_anomalies": Action("detect_cost_anomalies", "Find days and services with unusual cost",
                                    _anomalies, views.detect_cost_anomalies),
    "unlabeled_spend": Action("unlabeled_spend", "Spend on resources without a team or env label", _unlabeled,
                              views.unlabeled_spend),
    "create_budget": Action("create_budget", "Create a monthly budget with alert thresholds", _budget_created,
                            views.create_budget, mutates=True),
    "delete_budget": Action("delete_budget", "Delete a budget", _message, mutates=True),
    # A budget change is confirmed like any change: first its plan (allowed to whoever may see costs).
    **{f"plan_{change}": Action("plan_budget_change", f"What {change} would do (nothing changes)", _budget_plan,
                                fixed={"action": change})
       for change in ("create_budget", "delete_budget")},
    "list_budgets": Action("list_budgets", "List budgets with actual and forecast spend", _budgets,
                           views.list_budgets, explain=_explain_budgets),
    "budget_status": Action("budget_status", "Will a budget hold: actual, forecast, thresholds crossed",
                            _budget_status, views.budget_status),
    "commitment_recommendations": Action("commitment_recommendations",
                                         "Committed use discounts to buy, from steady usage", _commitments,
                                         views.commitment_recommendations),
    "find_unused_resources": Action(
        "find_unused_resources", "Unattached disks, idle external IPs and old snapshots with their cost", _unused,
        views.find_unused_resources),
}
