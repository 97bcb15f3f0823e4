"""FinOps analyses over the sandbox data: idle detection, rightsizing, monthly cost and time series."""

from __future__ import annotations

import json
import math
import sqlite3
from collections import defaultdict
from dataclasses import dataclass

from .catalog import (
    DAY,
    DOWNSIZE_CPU_P95,
    DOWNSIZE_MEMORY_P95,
    HOUR,
    HOURS_PER_MONTH,
    SANDBOX_NOW_TS,
    UPSIZE_CPU_P95,
    iso,
)
from .store import Prices, load_values
from .validation import labels_match

UNATTACHED_GROUP = "(unattached disks)"
BUCKETS_GROUP = "(buckets)"


def p95(values: list[float]) -> float:
    """Nearest-rank 95th percentile: a value that really occurred, no interpolation."""
    ordered = sorted(values)
    return ordered[math.ceil(0.95 * len(ordered)) - 1]


def summarize(values: list[float]) -> dict:
    if not values:
        return {"avg": None, "max": None, "p95": None, "samples": 0}
    return {
        "avg": round(sum(values) / len(values), 2),
        "max": round(max(values), 2),
        "p95": round(p95(values), 2),
        "samples": len(values),
    }


def _analysis_start(row: sqlite3.Row, days: int) -> int:
    # Samples taken before a resize describe another machine type, so analyses ignore them.
    start = SANDBOX_NOW_TS - days * DAY
    return max(start, row["last_resize"]) if row["last_resize"] is not None else start


@dataclass(frozen=True)
class Scope:
    """Which instances an analysis looks at: all, or those in one zone and/or carrying some labels."""

    zone: str | None = None
    labels: dict[str, str] | None = None

    def keeps(self, row: sqlite3.Row) -> bool:
        return (self.zone is None or row["zone"] == self.zone) and labels_match(json.loads(row["labels"]), self.labels)


def _running(conn: sqlite3.Connection, scope: Scope = Scope()) -> list[sqlite3.Row]:
    rows = conn.execute("SELECT * FROM instances WHERE state = 'RUNNING' ORDER BY name").fetchall()
    return [row for row in rows if scope.keeps(row)]


def _values(conn: sqlite3.Connection, row: sqlite3.Row, metric: str, days: int) -> list[float]:
    return [v for _, v in load_values(conn, row["name"], metric, _analysis_start(row, days))]


def idle_instances(
    conn: sqlite3.Connection, prices: Prices, cpu_threshold: float, days: int, scope: Scope = Scope()
) -> list[dict]:
    found = []
    for row in _running(conn, scope):
        cpu = _values(conn, row, "cpu", days)
        if not cpu:
            continue  # no data in the window: we cannot call it idle
        avg = sum(cpu) / len(cpu)
        if avg >= cpu_threshold:
            continue
        found.append(
            {
                "name": row["name"],
                "zone": row["zone"],
                "machine_type": row["machine_type"],
                "labels": json.loads(row["labels"]),
                "avg_cpu": round(avg, 2),
                "max_cpu": round(max(cpu), 2),
                "samples": len(cpu),
                "hourly_price_usd": prices.machine_types[row["machine_type"]].hourly_usd,
                # Stopping keeps the disks, so only the compute charge is saved.
                "monthly_saving_usd": prices.monthly_compute(row["machine_type"]),
            }
        )
    return sorted(found, key=lambda item: (-item["monthly_saving_usd"], item["name"]))


def _recommend(cpu_p95: float, mem_p95: float) -> tuple[str, str] | None:
    """(action, reason) per the thresholds in catalog, or None when the size looks right."""
    if cpu_p95 > UPSIZE_CPU_P95:
        return "upsize", f"p95 CPU {cpu_p95}% > {UPSIZE_CPU_P95:g}%"
    if cpu_p95 < DOWNSIZE_CPU_P95 and mem_p95 < DOWNSIZE_MEMORY_P95:
        reason = (
            f"p95 CPU {cpu_p95}% < {DOWNSIZE_CPU_P95:g}% and p95 memory {mem_p95}% < {DOWNSIZE_MEMORY_P95:g}%"
        )
        return "downsize", reason
    return None


def rightsizing(conn: sqlite3.Connection, prices: Prices, days: int, scope: Scope = Scope()) -> list[dict]:
    found = []
    for row in _running(conn, scope):
        cpu, mem = _values(conn, row, "cpu", days), _values(conn, row, "memory", days)
        if not cpu or not mem:
            continue
        cpu_p95, mem_p95 = round(p95(cpu), 2), round(p95(mem), 2)
        advice = _recommend(cpu_p95, mem_p95)
        target = prices.resize_target(row["machine_type"], advice[0]) if advice else None
        if advice is None or target is None:
            continue  # within bounds, or nothing smaller/larger to suggest
        current = prices.monthly_compute(row["machine_type"])
        recommended = prices.monthly_compute(target.name)
        found.append(
            {
                "name": row["name"],
                "zone": row["zone"],
                "labels": json.loads(row["labels"]),
                "machine_type": row["machine_type"],
                "action": advice[0],
                "recommended_machine_type": target.name,
                "cpu_p95": cpu_p95,
                "memory_p95": mem_p95,
                "days": days,
                "reason": f"{advice[1]} over {days} days",
                "current_monthly_usd": current,
                "recommended_monthly_usd": recommended,
                "monthly_saving_usd": round(current - recommended, 2),
            }
        )
    return sorted(found, key=lambda item: (-item["monthly_saving_usd"], item["name"]))


def _cost_lines(conn: sqlite3.Connection, prices: Prices) -> list[tuple[str, dict, str, float]]:
    """Every billable line as (instance group, labels, category, monthly USD rounded to cents)."""
    lines = []
    for row in conn.execute("SELECT * FROM instances"):
        running = row["state"] == "RUNNING"  # TERMINATED instances pay for disks only
        compute = prices.monthly_compute(row["machine_type"]) if running else 0.0
        lines.append((row["name"], json.loads(row["labels"]), "compute", compute))
    for row in conn.execute("SELECT * FROM disks"):
        cost = prices.monthly_disk(row["disk_type"], row["size_gb"])
        lines.append((row["attached_to"] or UNATTACHED_GROUP, json.loads(row["labels"]), "disks", cost))
    for row in conn.execute("SELECT * FROM buckets"):
        cost = prices.monthly_bucket(row["storage_class"], row["size_gb"])
        lines.append((BUCKETS_GROUP, json.loads(row["labels"]), "storage", cost))
    return lines


def _sum_costs(parts: dict[str, float]) -> dict[str, float]:
    compute, disks, storage = (round(parts[k], 2) for k in ("compute", "disks", "storage"))
    return {
        "compute": compute,
        "disks": disks,
        "storage": storage,
        "total": round(compute + disks + storage, 2),
    }


def monthly_cost(
    conn: sqlite3.Connection,
    prices: Prices,
    group_by: str,
    label_key: str,
    instance: str | None = None,
    labels: dict[str, str] | None = None,
) -> dict:
    """`instance` keeps one instance's lines (its compute and attached disks); `labels` keeps the lines of
    resources carrying all of those labels."""
    lines = [
        line
        for line in _cost_lines(conn, prices)
        if (instance is None or line[0] == instance) and labels_match(line[1], labels)
    ]
    totals: dict[str, float] = defaultdict(float)
    groups: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for owner, owner_labels, category, cost in lines:
        totals[category] += cost
        if group_by == "instance":
            groups[owner][category] += cost
        elif group_by == "label":
            groups[owner_labels.get(label_key, f"(no {label_key} label)")][category] += cost
    rows = [{"key": key, **_sum_costs(parts)} for key, parts in groups.items()]
    result = {
        "currency": "USD",
        "hours_per_month": HOURS_PER_MONTH,
        "group_by": group_by,
        "totals": _sum_costs(totals),
        "groups": sorted(rows, key=lambda g: (-g["total"], g["key"])),
        "running_instances": conn.execute("SELECT COUNT(*) FROM instances WHERE state='RUNNING'").fetchone()[
            0
        ],
        "note": "compute counts RUNNING instances only; disks are billed attached or not; "
        "storage is bucket size times its storage-class price",
    }
    if group_by == "label":
        result["label_key"] = label_key
    if instance is not None:
        result["instance"] = instance
    if labels:
        result["labels"] = labels
    return result


def time_series(conn: sqlite3.Connection, instance: str, metric: str, days: int, step_hours: int) -> dict:
    start = SANDBOX_NOW_TS - days * DAY
    samples = load_values(conn, instance, metric, start)
    # Buckets are counted back from SANDBOX_NOW and labelled with their end, so step 1 keeps sample times.
    buckets: dict[int, list[float]] = defaultdict(list)
    for ts, value in samples:
        buckets[(SANDBOX_NOW_TS - ts) // HOUR // step_hours].append(value)
    points = [
        {"ts": iso(SANDBOX_NOW_TS - index * step_hours * HOUR), "value": round(sum(vals) / len(vals), 2)}
        for index, vals in sorted(buckets.items(), reverse=True)
    ]
    result = {
        "instance": instance,
        "metric": metric,
        "unit": "percent",
        "days": days,
        "step_hours": step_hours,
        "start": iso(start),
        "end": iso(SANDBOX_NOW_TS),
        "points": points,
        **summarize([value for _, value in samples]),
    }
    if not samples:
        result["note"] = (
            "no samples in this window: the instance was not running (stopped time has no samples)"
        )
    return result
