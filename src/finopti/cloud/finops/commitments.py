"""Committed use discounts: how well the existing commitments are used, and what to commit to next.

Method (as GCP's Recommender does it for resource-based CUDs, from usage rather than from a list of VMs):
for each machine series and region, the daily average of running vCPUs and GiB of memory is read from
the export's "<SERIES> Instance Core/Ram running in <region group>" usage over the lookback days. The
*baseline* is the lowest daily average in that window: usage that never went away. Recommended
commitment = baseline - already committed, rounded down to whole vCPUs and GB, when at least 1.
Monthly saving = committed amount x on-demand hourly rate (read from the export: cost / usage) x 730 x
the plan's discount (1 year 37 %, 3 years 55 %).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict

from .common import money
from .export import BillingExport, CostFilter
from .periods import DAY, iso_day

HOURS_PER_MONTH = 730
PLANS = {"TWELVE_MONTH": ("1 year", 0.37), "THIRTY_SIX_MONTH": ("3 years", 0.55)}
USAGE_SKU = re.compile(r"^(?P<series>[A-Z0-9]+) Instance (?P<kind>Core|Ram) running in ")


def _usage(export: BillingExport, start: int, end: int) -> tuple[dict, dict]:
    """Daily average vCPUs / GiB per (series, region, kind), and the on-demand rate per (series, region, kind)."""
    cells = export.aggregate(start, end, ["day", "sku", "region"], CostFilter(services=("Compute Engine",)))
    daily: dict[tuple, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    spend: dict[tuple, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for c in cells:
        m = USAGE_SKU.match(c["sku"])
        if not m or not c["region"]:
            continue
        key = (m["series"].lower(), c["region"], "vcpus" if m["kind"] == "Core" else "memory_gb")
        daily[key][c["day"]] += c["usage"] / 24  # hours (or GiB-hours) in a day -> average running amount
        spend[key][0] += c["cost"]
        spend[key][1] += c["usage"]
    rates = {k: cost / usage for k, (cost, usage) in spend.items() if usage}
    return daily, rates


def _utilisation(commitment: dict, daily: dict, days: list[int]) -> dict:
    out = {}
    for kind in ("vcpus", "memory_gb"):
        committed = commitment[kind]
        used = daily.get((commitment["series"], commitment["region"], kind), {})
        covered = [min(used.get(d, 0.0), committed) for d in days]
        out[kind] = round(sum(covered) / (committed * len(days)) * 100, 1) if committed and days else None
    return out


def recommend(export: BillingExport, commitments: list[dict], lookback_days: int = 30) -> dict:
    today = export.today()
    start = max(export.first_day(), today - lookback_days * DAY)
    days = list(range(start, today, DAY))
    daily, rates = _usage(export, start, today)
    active = [c for c in commitments if c["start"] <= iso_day(today) < c["end"]]
    existing = [{**c, "utilisation_percent": _utilisation(c, daily, days)} for c in commitments]
    recommendations = []
    for series, region in sorted({(k[0], k[1]) for k in daily}):
        rec: dict = {"key": f"{series.upper()} {region}", "series": series, "region": region}
        for kind in ("vcpus", "memory_gb"):
            values = [daily[(series, region, kind)].get(d, 0.0) for d in days]
            committed = sum(c[kind] for c in active if c["series"] == series and c["region"] == region)
            baseline = min(values)
            rec[kind] = {"baseline": round(baseline, 2), "average": round(sum(values) / len(values), 2),
                         "peak": round(max(values), 2), "committed": committed,
                         "recommended": max(0, math.floor(baseline - committed + 1e-9)),
                         "on_demand_hourly_rate": round(rates.get((series, region, kind), 0.0), 6)}
        if rec["vcpus"]["recommended"] < 1 and rec["memory_gb"]["recommended"] < 1:
            continue
        hourly = sum(rec[k]["recommended"] * rec[k]["on_demand_hourly_rate"] for k in ("vcpus", "memory_gb"))
        rec["on_demand_monthly"] = money(hourly * HOURS_PER_MONTH)
        rec["plans"] = {plan: {"term": term, "discount_percent": discount * 100,
                               "monthly_commitment_cost": money(hourly * HOURS_PER_MONTH * (1 - discount)),
                               "monthly_saving": money(hourly * HOURS_PER_MONTH * discount)}
                        for plan, (term, discount) in PLANS.items()}
        rec["monthly_saving_1y"] = rec["plans"]["TWELVE_MONTH"]["monthly_saving"]
        rec["reason"] = (f"at least {rec['vcpus']['baseline']:g} vCPUs and {rec['memory_gb']['baseline']:g} GB of "
                         f"{series.upper()} ran in {region} every day of the last {len(days)} days; "
                         f"{rec['vcpus']['committed']} vCPUs / {rec['memory_gb']['committed']} GB already committed")
        recommendations.append(rec)
    recommendations.sort(key=lambda r: (-r["monthly_saving_1y"], r["series"], r["region"]))
    return {
        "lookback": {"start": iso_day(start), "end": iso_day(today - DAY), "days": len(days)},
        "currency": export.currency(),
        "commitments": existing,
        "recommendations": recommendations,
        "total_monthly_saving": {plan: money(sum(r["plans"][plan]["monthly_saving"] for r in recommendations))
                                 for plan in PLANS},
        "explanation": {
            "data": export.source + "; commitments of the billing account",
            "period": f"{iso_day(start)} to {iso_day(today - DAY)} ({len(days)} days)",
            "filter": "Compute Engine instance core and RAM usage",
            "method": "baseline = lowest daily average of running vCPUs and GB per machine series and region; "
                      "recommend baseline - committed, rounded down; saving = amount x on-demand rate (export "
                      "cost / usage) x 730 h x discount (1 year 37 %, 3 years 55 %); utilisation of a "
                      "commitment = average of min(usage, committed) / committed",
        },
    }


def adjust_for_rightsizing(result: dict, downsizes: list[dict]) -> dict:
    """Commit after rightsizing: usage that rightsizing would remove should not be committed to.

    `downsizes`: one entry per recommended downsize, {name, series, region, vcpus, memory_gb} freed in that
    series and region (the whole instance when the recommendation moves it to another series). Each
    recommendation gets `after_rightsizing` with the smaller amounts and their 1-year saving."""
    for rec in result["recommendations"]:
        mine = [d for d in downsizes if d["series"] == rec["series"] and d["region"] == rec["region"]]
        after = {k: max(0, rec[k]["recommended"] - math.ceil(sum(d[k] for d in mine))) for k in ("vcpus", "memory_gb")}
        hourly = sum(after[k] * rec[k]["on_demand_hourly_rate"] for k in ("vcpus", "memory_gb"))
        rec["after_rightsizing"] = {
            "instances": sorted(d["name"] for d in mine),
            "vcpus_freed": sum(d["vcpus"] for d in mine), "memory_gb_freed": sum(d["memory_gb"] for d in mine),
            **after, "monthly_saving_1y": money(hourly * HOURS_PER_MONTH * PLANS["TWELVE_MONTH"][1]),
        }
    result["total_monthly_saving_after_rightsizing_1y"] = money(
        sum(r["after_rightsizing"]["monthly_saving_1y"] for r in result["recommendations"]))
    result["explanation"]["method"] += ("; after_rightsizing subtracts the vCPUs and GB that the rightsizing "
                                        "recommendations would free in the same series and region")
    return result
