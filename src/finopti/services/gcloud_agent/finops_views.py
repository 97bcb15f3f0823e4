"""How the chat draws gcloud-agent's billing answers (the presentation contract of docs/console.md): trends and
forecasts as time series, breakdowns as bars, money in the answer's currency, a totals row wherever the rows add
up to the answer's figure, headline numbers above the chart and the rows behind a figure as further tables."""

from __future__ import annotations

from typing import Any

from finopti.services.views import band, bar, col, markers, stat, table, timeseries

PERCENT_OF_ONE = "percentunit"  # a share stored as 0-1, shown as 8.83%


def _currency(data: Any) -> str:
    return data.get("currency", "USD") if isinstance(data, dict) else "USD"


def dimension_label(group_by: str) -> str:
    """"service" -> "Service", "label:team" -> "Team", "sku" -> "SKU"."""
    name = group_by.removeprefix("label:")
    return {"sku": "SKU", "day": "Day", "month": "Month"}.get(name, name.replace("_", " ").capitalize())


def _money_columns(cur: str, *keys: tuple[str, str]) -> list[dict]:
    return [col(key, label, cur) for key, label in keys]


def cost_report(data: Any, _: dict) -> dict:
    cur = _currency(data)
    columns = [col("key", dimension_label(data["group_by"])),
               *_money_columns(cur, ("cost", "Cost"), ("credits", "Credits"), ("net", "Net cost")),
               col("share", "Share", PERCENT_OF_ONE)]
    stats = [stat("Net cost", "totals.net", cur), stat("Cost", "totals.cost", cur),
             stat("Credits", "totals.credits", cur)]
    sums = {"cost": "totals.cost", "credits": "totals.credits", "net": "totals.net"}
    if data["group_by"] == "day":  # a trend; months (the last one partial) read better as bars
        return timeseries(rows="groups", x="key", y=["net"], unit=cur, labels={"net": "Net cost"}, columns=columns,
                          totals=sums, stats=stats)
    return bar(rows="groups", x="key", y=["net"], unit=cur, labels={"net": "Net cost"}, columns=columns, totals=sums,
               stats=stats)


def _span(period: dict) -> str:
    return period["start"] if period["start"] == period["end"] else f"{period['start']} to {period['end']}"


def compare_costs(data: Any, _: dict) -> dict:
    cur = _currency(data)
    before, now = _span(data["previous"]["period"]), _span(data["current"]["period"])
    return bar(rows="drivers", x="key", y=["previous", "current"], unit=cur,
               labels={"previous": before, "current": now},
               columns=[col("key", dimension_label(data["group_by"])),
                        *_money_columns(cur, ("previous", before), ("current", now), ("change", "Change")),
                        col("change_pct", "Change %", "%"), col("status", "Status")],
               totals={"previous": "previous.net", "current": "current.net", "change": "change"},
               stats=[stat("Previous", "previous.net", cur), stat("Current", "current.net", cur),
                      stat("Change", "change", cur), stat("Change %", "change_pct", "%")])


def forecast_costs(data: Any, _: dict) -> dict:
    cur = _currency(data)
    return timeseries(
        rows="series", x="date", y=["actual", "forecast"], unit=cur, joins={"forecast": "actual"},
        bands=[band("lower_80", "upper_80", "80%"), band("lower_95", "upper_95", "95%")],
        columns=[col("date", "Date"), *_money_columns(cur, ("actual", "Actual"), ("forecast", "Forecast"),
                                                        ("lower_80", "80% low"), ("upper_80", "80% high"),
                                                        ("lower_95", "95% low"), ("upper_95", "95% high"))],
        stats=[stat("Month-end forecast", "month_end.forecast", cur),
               stat("Spent so far", "month_end.actual_to_date", cur), stat("Next month", "next_month.forecast", cur)])


def _anomaly_table(cur: str) -> dict:
    return table(rows="anomalies", title="Anomalies", totals=["excess"],
                 columns=[col("date", "Date"), col("service", "Service"), col("kind", "Kind"),
                          *_money_columns(cur, ("actual", "Actual"), ("expected", "Expected"), ("excess", "Excess")),
                          col("times_expected", "× usual"), col("reason", "Why")])


def detect_cost_anomalies(data: Any, _: dict) -> dict:
    cur = _currency(data)
    flagged = sorted({a["service"] for a in data["anomalies"]})
    if not flagged:
        return table(rows="anomalies", empty=f"No cost anomalies {_span(data['period'])}.")
    return timeseries(rows="series", x="date", y=flagged, unit=cur,
                      marks=markers(rows="anomalies", x="date", series="service", label="anomaly"),
                      columns=[col("date", "Date"), *_money_columns(cur, *((s, s) for s in flagged))],
                      tables=[_anomaly_table(cur)])


def _budget(prefix: str, cur: str) -> dict:
    return timeseries(
        rows=f"{prefix}series", x="date", y=["actual", "forecast", "budget"], unit=cur, joins={"forecast": "actual"},
        columns=[col("date", "Date"), *_money_columns(cur, ("actual", "Spent"), ("forecast", "Forecast"),
                                                        ("budget", "Budget"))],
        stats=[stat("Spent", f"{prefix}actual", cur), stat("Forecast", f"{prefix}forecast", cur),
               stat("Budget", f"{prefix}amount", cur),
               stat("Chance of going over", f"{prefix}exceed_probability", PERCENT_OF_ONE)],
        tables=[table(rows=f"{prefix}thresholds", title="Alert thresholds",
                      columns=[col("percent", "Threshold", "%"), col("basis", "Of"), col("amount", "At", cur),
                               col("crossed", "Crossed"), col("crossed_on", "On")])])


def budget_status(data: Any, _: dict) -> dict:
    return _budget("", _currency(data))


def create_budget(data: Any, _: dict) -> dict:
    return _budget("status.", _currency(data.get("status")))


def list_budgets(data: Any, _: dict) -> dict:
    cur = "USD"
    return bar(x="name", y=["actual", "forecast", "amount"], unit=cur,
               labels={"actual": "Spent", "forecast": "Forecast", "amount": "Budget"},
               columns=[col("name", "Budget"), *_money_columns(cur, ("amount", "Amount"), ("actual", "Spent")),
                        col("actual_percent", "Spent %", "%"), col("forecast", "Forecast", cur),
                        col("forecast_percent", "Forecast %", "%"),
                        col("exceed_probability", "Chance over", PERCENT_OF_ONE), col("state", "State")])


def unlabeled_spend(data: Any, _: dict) -> dict:
    cur = _currency(data)
    return bar(rows="by_service", x="key", y=["net"], unit=cur, labels={"net": "Unlabelled net cost"},
               columns=[col("key", "Service"), col("net", "Net cost", cur)], totals={"net": "unlabeled.net"},
               stats=[stat("Without labels", "unlabeled.net", cur), stat("Share of spend", "share", PERCENT_OF_ONE),
                      stat("All spend", "total_net", cur)],
               tables=[table(rows="resources", title="Resources without labels", totals={"net": "unlabeled.net"},
                             sort=("net", True),
                             columns=[col("resource", "Resource"), col("service", "Service"),
                                      col("project", "Project"), col("missing", "Missing"),
                                      col("net", "Net cost", cur)])])


def commitment_recommendations(data: Any, _: dict) -> dict:
    cur = _currency(data)
    one, three = "monthly_saving_1y", "plans.THIRTY_SIX_MONTH.monthly_saving"
    saving = {one: "Saving per month, 1 year", three: "Saving per month, 3 years"}
    return bar(
        rows="recommendations", x="key", y=[one, three], unit=cur, labels=saving,
        columns=[col("key", "Commitment"), col("vcpus.recommended", "vCPU"),
                 col("memory_gb.recommended", "Memory", "GB"),
                 *_money_columns(cur, ("on_demand_monthly", "On demand per month"), *saving.items()),
                 col("reason", "Why")],
        totals={"on_demand_monthly": None, one: "total_monthly_saving.TWELVE_MONTH",
                three: "total_monthly_saving.THIRTY_SIX_MONTH"},
        stats=[stat("Saving per month, 1 year", "total_monthly_saving.TWELVE_MONTH", cur),
               stat("Saving per month, 3 years", "total_monthly_saving.THIRTY_SIX_MONTH", cur)],
        tables=[table(rows="commitments", title="Commitments already bought",
                      columns=[col("name", "Commitment"), col("project", "Project"), col("region", "Region"),
                               col("plan", "Plan"), col("vcpus", "vCPU"), col("memory_gb", "Memory", "GB"),
                               col("utilisation_percent.vcpus", "vCPU used", "%"), col("end", "Ends")])])


def find_unused_resources(data: Any, _: dict) -> dict:
    return table(rows="items", totals={"monthly_cost_usd": "monthly_saving_usd"}, sort=("monthly_cost_usd", True),
                 columns=[col("kind", "Kind"), col("name", "Resource"), col("project", "Project"), col("reason", "Why"),
                          col("monthly_cost_usd", "Monthly cost", "USD")],
                 stats=[stat("Saving per month", "monthly_saving_usd", "USD")])


def billing_export_rows(data: Any, _: dict) -> dict:
    """The export's nested record (BigQuery schema) read through dot paths: what a person scans for."""
    return table(rows="rows", totals=["cost"],
                 columns=[col("usage_start_time", "Usage from"), col("service.description", "Service"),
                          col("sku.description", "SKU"), col("project.id", "Project"),
                          col("resource.name", "Resource"), col("location.region", "Region"),
                          col("usage.amount_in_pricing_units", "Usage"), col("usage.pricing_unit", "Unit"),
                          col("cost_type", "Type"), col("cost", "Cost", _currency(data))])
