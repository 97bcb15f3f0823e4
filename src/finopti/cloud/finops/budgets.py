"""Budgets: a monthly amount for a slice of spend (project, service, labels) with alert thresholds on actual
or forecast spend, as in GCP's Budget API (calendar month, credits included), and their status.

Status of a budget = month-to-date net cost of its slice, the month-end forecast of that slice (see
`forecast`), each threshold crossed or not, and the chance of ending the month over the amount.
"""

from __future__ import annotations

import re
from datetime import timedelta

from ..errors import InvalidArgument
from ..validation import parse_labels
from . import forecast as forecasting
from .common import cost_filter, money, net
from .export import BillingExport, CostFilter
from .periods import DAY, day_of, iso_day, month_start, next_month_start, ts_of

NAME = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
BASES = ("actual", "forecast")
DEFAULT_THRESHOLDS = ({"percent": 50.0, "basis": "actual"}, {"percent": 90.0, "basis": "actual"},
                      {"percent": 100.0, "basis": "actual"}, {"percent": 100.0, "basis": "forecast"})
MAX_AMOUNT = 1e9


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME.match(name.strip()):
        raise InvalidArgument(f"budget name must be lowercase letters, digits and '-', starting with a letter "
                              f"(at most 63), got {name!r}.")
    return name.strip()


def check_amount(amount: object) -> float:
    if isinstance(amount, bool) or not isinstance(amount, int | float) or not 0 < amount <= MAX_AMOUNT \
            or amount != amount:
        raise InvalidArgument(f"amount must be a number above 0 and at most {MAX_AMOUNT:,.0f}, got {amount!r}.")
    return float(amount)


def check_thresholds(thresholds: object) -> list[dict]:
    """Threshold rules: [{"percent": 90, "basis": "actual"|"forecast"}] or plain percents (actual)."""
    if thresholds is None:
        return [dict(t) for t in DEFAULT_THRESHOLDS]
    if not isinstance(thresholds, list) or not 1 <= len(thresholds) <= 10:
        raise InvalidArgument(f"thresholds must be a list of 1 to 10 rules, got {thresholds!r}.")
    rules = []
    for rule in thresholds:
        if isinstance(rule, int | float) and not isinstance(rule, bool):
            rule = {"percent": rule, "basis": "actual"}
        if not isinstance(rule, dict) or set(rule) - {"percent", "basis"}:
            raise InvalidArgument(f"a threshold is a percent or {{'percent': 90, 'basis': 'actual'}}, got {rule!r}.")
        percent, basis = rule.get("percent"), rule.get("basis", "actual")
        if isinstance(percent, bool) or not isinstance(percent, int | float) or not 0 < percent <= 1000:
            raise InvalidArgument(f"threshold percent must be above 0 and at most 1000, got {percent!r}.")
        if basis not in BASES:
            raise InvalidArgument(f"threshold basis must be one of {', '.join(BASES)}, got {basis!r}.")
        rules.append({"percent": float(percent), "basis": basis})
    unique = {(r["basis"], r["percent"]): r for r in rules}
    return sorted(unique.values(), key=lambda r: (r["basis"], r["percent"]))


def budget_filter(export: BillingExport, project: object = None, service: object = None, team: object = None,
                  labels: object = None) -> dict:
    """The slice a budget covers, stored as {"project"?, "service"?, "labels": {k: v}}; project and service
    must exist in the billing data, label values need not (a new team may have no spend yet)."""
    if labels is not None and not isinstance(labels, dict | str):
        raise InvalidArgument(f"labels must be an object {{key: value}} or 'key=value', got {labels!r}.")
    pairs = parse_labels(labels) if isinstance(labels, str) else dict(labels or {})
    for key, value in pairs.items():
        if not isinstance(key, str) or not isinstance(value, str) or not key.strip() or not value.strip():
            raise InvalidArgument(f"labels must map names to non-empty values, got {labels!r}.")
    where = cost_filter(export, project=project, service=service, team=team)
    merged = {k.strip(): v.strip() for k, v in pairs.items()} | dict(where.labels)
    out: dict = {"labels": dict(sorted(merged.items()))}
    if where.projects:
        out["project"] = where.projects[0]
    if where.services:
        out["service"] = where.services[0]
    return out


def as_cost_filter(scope: dict) -> CostFilter:
    return CostFilter(projects=(scope["project"],) if scope.get("project") else (),
                      services=(scope["service"],) if scope.get("service") else (),
                      labels=tuple(sorted(scope.get("labels", {}).items())))


def scope_text(scope: dict) -> str:
    return as_cost_filter(scope).text()


def _cumulative(export: BillingExport, where: CostFilter, start: int, today: int) -> dict[int, float]:
    """For each day of the month so far, the cumulative net spend: when a threshold was crossed, and the chart."""
    by_day = {c["day"]: net(c) for c in export.aggregate(start, today, ["day"], where)}
    running, out = 0.0, {}
    for day in range(start, today, DAY):
        running += by_day.get(day, 0.0)
        out[day] = running
    return out


def status(export: BillingExport, budget: dict) -> dict:
    """Where a budget stands this month: actual, forecast, thresholds crossed, chance of going over."""
    where = as_cost_filter(budget["filter"])
    today = export.today()
    first = month_start(day_of(today))
    start, end = ts_of(first), ts_of(next_month_start(first))
    amount = budget["amount"]
    outlook = forecasting.forecast(export, where)
    month = outlook["month_end"]
    cumulative = _cumulative(export, where, start, today)
    actual = month["actual_to_date"]
    thresholds = []
    for rule in budget["thresholds"]:
        limit = amount * rule["percent"] / 100
        if rule["basis"] == "actual":
            crossed_day = next((d for d, v in cumulative.items() if v >= limit), None)
            crossed, when = crossed_day is not None, iso_day(crossed_day) if crossed_day is not None else None
        else:
            crossed, when = month["forecast"] >= limit, None
        thresholds.append({**rule, "amount": money(limit), "crossed": crossed, "crossed_on": when})
    over_probability = forecasting.exceed_probability(month, amount)
    state = "over" if actual >= amount else "forecast_over" if month["forecast"] >= amount else "on_track"
    remaining_days = (end - today) // DAY
    series = [{"date": iso_day(d), "actual": money(v), "budget": money(amount)} for d, v in cumulative.items()]
    running = actual
    for point in outlook["series"]:
        if point["date"] >= iso_day(today) and point["date"] < iso_day(end):
            running += point["forecast"]
            series.append({"date": point["date"], "forecast": money(running), "budget": money(amount)})
    last = (day_of(today) - timedelta(days=1)).isoformat()
    return {
        "name": budget["name"],
        "amount": money(amount),
        "currency": export.currency(),
        "filter": budget["filter"],
        "month": first.strftime("%Y-%m"),
        "actual": actual,
        "actual_percent": round(actual / amount * 100, 1),
        "forecast": month["forecast"],
        "forecast_percent": round(month["forecast"] / amount * 100, 1),
        "interval_80": month["interval_80"],
        "interval_95": month["interval_95"],
        "exceed_probability": over_probability,
        "state": state,
        "remaining": money(amount - actual),
        "daily_allowance": money((amount - actual) / remaining_days) if remaining_days else None,
        "thresholds": thresholds,
        "series": series,
        "explanation": {
            "data": export.source,
            "period": f"month to date {first.isoformat()} to {last} ({(today - start) // DAY} days); forecast "
                      f"to {iso_day(end - DAY)}",
            "filter": scope_text(budget["filter"]),
            "method": "actual = net cost (credits included, as GCP budgets count them) of the budget's slice "
                      "this month; forecast = " + outlook["explanation"]["method"] + "; chance of going over "
                      "from the forecast's normal distribution; an actual threshold is crossed on the first day "
                      "cumulative spend reached it",
        },
    }
