"""Cost anomalies: days on which a service cost far more than it usually does, and what drove it.

Method (per service, on daily net cost): the baseline of a day is the median of the service's previous
`baseline_days` days (only days since the service first appeared), its spread the median absolute
deviation scaled to a standard deviation (x 1.4826), floored at 5 % of the median and at 1 unit of currency
so a flat series does not make every cent unusual. A day is a *spike* when its robust score
(actual - median) / spread reaches `threshold` and it exceeds the median by at least `min_excess`. A service
with no cost at all in the baseline window that costs at least `min_excess` is a *new service* that day.
A service needs 7 days of history before its days are scored. Drops are not anomalies here.
"""

from __future__ import annotations

import statistics
from collections import defaultdict

from .common import format_money, money, net
from .export import LABEL_PREFIX, BillingExport, CostFilter
from .periods import DAY, Period, iso_day

MAD_TO_SD = 1.4826
RELATIVE_FLOOR = 0.05
ABSOLUTE_FLOOR = 1.0
MIN_HISTORY_DAYS = 7


def _dense(cells: list[dict], days: list[int]) -> dict[str, list[float]]:
    series: dict[str, list[float]] = defaultdict(lambda: [0.0] * len(days))
    index = {d: i for i, d in enumerate(days)}
    for c in cells:
        series[c["service"]][index[c["day"]]] += net(c)
    return dict(series)


def _drivers(export: BillingExport, service: str, day: int, history: list[int], where: CostFilter) -> list[dict]:
    """The SKU/resource lines of the service whose cost that day moved furthest from their own median."""
    scoped = CostFilter(where.projects, (service,), where.labels, where.lacking_any)
    dims = ["day", "sku", "resource", "project", LABEL_PREFIX + "team"]
    cells = export.aggregate(min(history + [day]), day + DAY, dims, scoped)
    lines: dict[tuple, dict[int, float]] = defaultdict(dict)
    for c in cells:
        lines[(c["sku"], c["resource"], c["project"], c[LABEL_PREFIX + "team"])][c["day"]] = net(c)
    out = []
    for (sku, resource, project, team), values in lines.items():
        typical = statistics.median(values.get(d, 0.0) for d in history)
        actual = values.get(day, 0.0)
        out.append({"sku": sku, "resource": resource, "project": project, "team": team,
                    "actual": money(actual), "expected": money(typical), "excess": money(actual - typical)})
    out.sort(key=lambda d: (-d["excess"], d["sku"], d["resource"] or ""))
    total = sum(d["excess"] for d in out if d["excess"] > 0)
    # The lines that explain the day: at least the largest, then any carrying 5 % or more of the excess.
    return [d for n, d in enumerate(out[:3]) if n == 0 or (total and d["excess"] >= 0.05 * total)]


def _reason(a: dict, currency: str) -> str:
    top = a["drivers"][0] if a["drivers"] else None
    line = ""
    if top:
        what = f"{top['resource']} ({top['sku']})" if top["resource"] else top["sku"]
        line = f"; mostly {what} in {top['project']}, +{format_money(top['excess'], currency)}"
    if a["kind"] == "new_service":
        return (f"{a['service']} had no cost in the {a['baseline']['days']} days before and cost "
                f"{format_money(a['actual'], currency)} on {a['date']}{line}")
    return (f"{a['service']} cost {format_money(a['actual'], currency)} on {a['date']}, {a['times_expected']}x its "
            f"usual {format_money(a['expected'], currency)} (score {a['score']}){line}")


def detect(export: BillingExport, period: Period, where: CostFilter, threshold: float = 3.5,
           min_excess: float = 5.0, baseline_days: int = 14) -> dict:
    first = export.first_day()
    fetch_start = max(first, period.start - baseline_days * DAY)
    days = list(range(fetch_start, period.end, DAY))
    series = _dense(export.aggregate(fetch_start, period.end, ["day", "service"], where), days)
    anomalies = []
    for service, values in sorted(series.items()):
        seen = next((i for i, v in enumerate(values) if abs(v) > 0.005), None)
        for i, day in enumerate(days):
            if day < period.start or seen is None or i < seen:
                continue
            window = list(range(max(0, i - baseline_days), i))
            if len(window) < MIN_HISTORY_DAYS:
                continue  # not enough data before this day to judge it
            value = values[i]
            if i == seen:
                kind, expected, spread, score = "new_service", 0.0, None, None
                if value < min_excess:
                    continue
            else:
                history = [values[j] for j in window if j >= seen]
                if len(history) < MIN_HISTORY_DAYS:
                    continue  # a young service: wait for a week of its own history
                expected = statistics.median(history)
                mad = statistics.median(abs(h - expected) for h in history)
                spread = max(MAD_TO_SD * mad, RELATIVE_FLOOR * abs(expected), ABSOLUTE_FLOOR)
                score = (value - expected) / spread
                if score < threshold or value - expected < min_excess:
                    continue
                kind = "spike"
            history_days = [days[j] for j in window if j >= (seen if kind == "spike" else 0)]
            anomaly = {
                "date": iso_day(day), "service": service, "kind": kind,
                "actual": money(value), "expected": money(expected), "excess": money(value - expected),
                "excess_pct": round((value - expected) / expected * 100, 1) if expected else None,
                "times_expected": round(value / expected, 1) if expected else None,
                "score": round(score, 1) if score is not None else None,
                "baseline": {"days": len(history_days), "from": iso_day(history_days[0]),
                             "to": iso_day(history_days[-1]), "median": money(expected),
                             "spread": money(spread) if spread is not None else None},
                "drivers": _drivers(export, service, day, history_days, where),
            }
            anomaly["reason"] = _reason(anomaly, export.currency())
            anomalies.append(anomaly)
    anomalies.sort(key=lambda a: (a["date"], -a["excess"]))
    flagged = sorted({a["service"] for a in anomalies})
    chart = [{"date": iso_day(d), **{s: money(series[s][i]) for s in flagged}}
             for i, d in enumerate(days) if d >= period.start]
    return {
        "period": period.describe(),
        "filter": where.describe(),
        "currency": export.currency(),
        "threshold": threshold,
        "min_excess": min_excess,
        "anomalies": anomalies,
        "services_checked": sorted(series),
        "series": chart,
        "explanation": {
            "data": export.source,
            "period": f"{period.describe()['start']} to {period.describe()['end']}, each day judged against "
                      f"up to {baseline_days} days before it (from {iso_day(fetch_start)})",
            "filter": where.text(),
            "method": f"daily net cost per service; spike when (actual - median) / spread >= {threshold:g} and "
                      f"the excess is at least {min_excess:g}; spread = 1.4826 x median absolute deviation, at "
                      "least 5 % of the median and 1.00; new service when it had no cost in the baseline; "
                      "drivers are the SKU/resource lines furthest above their own median",
        },
    }
