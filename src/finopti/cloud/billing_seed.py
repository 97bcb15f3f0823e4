"""The sandbox's billing history, computed from the seed plan: what GCP's detailed billing export to
BigQuery would hold for this inventory from BILLING_START to SANDBOX_NOW, one row per day, resource and SKU.

What is derived from the inventory (so it agrees with the price table and the start/stop history):
instance cores and RAM for every hour an instance ran, disks, snapshots, static IPs and buckets for every
hour they existed. What is drawn from a seeded generator (bounded noise, weekday pattern): internet
egress per instance, Cloud Storage operations. The documented events on top: the C2 commitment
(fee rows and COMMITTED_USAGE_DISCOUNT credits from its start), BigQuery appearing on NEW_SERVICE_DAY
with no team label (and its FREE_TIER credit), and one day of egress 25 times the usual (SPIKE).
"""

from __future__ import annotations

import functools
import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime

from . import billing_catalog as bc
from .catalog import DAY, DISK_PRICES, HOUR, HOURS_PER_MONTH, MACHINE_TYPES, SANDBOX_NOW_TS, STORAGE_PRICES, ZONES


def _utc(year: int, month: int, day: int) -> int:
    return int(datetime(year, month, day, tzinfo=UTC).timestamp())


BILLING_START_TS = _utc(2026, 8, 1)  # 107 days before SANDBOX_NOW: three whole months and half of November

PROJECT_NUMBERS = {"finopti-prod": "418203377201", "finopti-staging": "418203377202", "finopti-dev": "418203377203"}

# Egress per instance: GiB per running day by utilisation profile (stopped ones behaved "steady").
EGRESS_GIB_PER_DAY = {"busy": 20.0, "steady": 8.0, "overprovisioned": 3.0, "idle": 0.2, "stopped": 8.0}
WEEKEND_FACTOR = 0.6  # Saturdays and Sundays carry less traffic
NOISE = 0.10  # egress, operations and queries vary uniformly within +-10 % of their level
BUCKET_GROWTH_PER_DAY = 0.001  # buckets were 0.1 % smaller for every day before SANDBOX_NOW

# The spike: one resource sends 25 times its usual egress on one day.
SPIKE_DAY = _utc(2026, 11, 12)
SPIKE_RESOURCE = "search-frontend-prod-01"
SPIKE_GIB = 7680.0
# The new service: BigQuery on-demand queries in finopti-prod from this day, labelled env=prod only.
NEW_SERVICE_DAY = _utc(2026, 11, 10)
NEW_SERVICE_PROJECT = "finopti-prod"
NEW_SERVICE_LABELS = {"env": "prod"}
BIGQUERY_TIB_WEEKDAY, BIGQUERY_TIB_WEEKEND = 7.0, 2.5


@dataclass
class ExportRow:
    service: str  # key of billing_catalog.SERVICES
    sku: str
    day: int  # usage_start_time; the row covers [day, day + 1 day)
    project: str
    labels: dict[str, str]
    region: str | None
    zone: str | None
    resource: str | None
    global_name: str | None
    cost: float
    usage_amount: float
    usage_unit: str
    pricing_amount: float
    pricing_unit: str
    credits: list[dict] = field(default_factory=list)

    def as_record(self, billing_account: str, currency: str) -> tuple:
        """The row as the billing_export table stores it (column order of the table)."""
        service_id, service_name = bc.SERVICES[self.service]
        credits = [{**c, "amount": round(c["amount"], 6)} for c in self.credits]
        return (
            billing_account, service_id, service_name, _sku_id(self.sku), self.sku,
            self.day, self.day + DAY, self.project, self.project, PROJECT_NUMBERS[self.project],
            _labels_json(tuple(sorted(self.labels.items()))),
            self.zone or self.region or "global", self.region, self.zone,
            self.resource, self.global_name, self.day + DAY + 4 * HOUR,
            round(self.cost, 6), currency, 1.0,
            self.usage_amount, self.usage_unit, round(self.pricing_amount, 6), self.pricing_unit,
            json.dumps(credits) if credits else "[]", round(sum(c["amount"] for c in credits), 6),
            _invoice_month(self.day), "regular",
        )


# Seeding writes ~25,000 rows: the per-row conversions repeat a few hundred distinct values.
_sku_id = functools.cache(bc.sku_id)


@functools.cache
def _labels_json(items: tuple[tuple[str, str], ...]) -> str:
    return json.dumps([{"key": k, "value": v} for k, v in items])


@functools.cache
def _invoice_month(day: int) -> str:
    return datetime.fromtimestamp(day, UTC).strftime("%Y%m")


def _days() -> list[int]:
    return list(range(BILLING_START_TS, SANDBOX_NOW_TS, DAY))


def _overlap_hours(day: int, start: int, end: int | None) -> float:
    """Hours of [day, day + 1 day) inside [start, end)."""
    lo, hi = max(day, start), min(day + DAY, end if end is not None else day + DAY)
    return max(0, hi - lo) / HOUR


def _weekend(day: int) -> bool:
    return datetime.fromtimestamp(day, UTC).weekday() >= 5


def _instance_rows(plan, day: int) -> list[ExportRow]:
    machines = {m.name: m for m in MACHINE_TYPES}
    rows = []
    for inst in plan.instances:
        hours = _overlap_hours(day, inst.created, inst.stopped_at)
        if not hours:
            continue
        machine = machines[inst.machine_type]
        series = bc.series_of(machine.name)
        core_rate, _ = bc.SERIES_RATES[series]
        vcpus = bc.billable_vcpus(machine)
        core_cost = vcpus * hours * core_rate
        name = f"//compute.googleapis.com/projects/{inst.project}/zones/{inst.zone}/instances/{inst.name}"
        common = dict(day=day, project=inst.project, labels=inst.labels, region=inst.region, zone=inst.zone,
                      resource=inst.name, global_name=name)
        rows.append(ExportRow("compute", bc.core_sku(series, inst.region), cost=core_cost,
                              usage_amount=vcpus * hours * 3600, usage_unit="seconds",
                              pricing_amount=vcpus * hours, pricing_unit="hour", **common))
        # The RAM line is the rest of the machine type's price, so the two add up to it exactly.
        rows.append(ExportRow("compute", bc.ram_sku(series, inst.region),
                              cost=machine.hourly_usd * hours - core_cost,
                              usage_amount=machine.memory_gb * bc.GIB * hours * 3600, usage_unit="byte-seconds",
                              pricing_amount=machine.memory_gb * hours, pricing_unit="gibibyte hour", **common))
    return rows


def _egress_rows(plan, day: int, rng: random.Random) -> list[ExportRow]:
    rows = []
    weekday = WEEKEND_FACTOR if _weekend(day) else 1.0
    for inst in plan.instances:
        noise = rng.uniform(1 - NOISE, 1 + NOISE)  # drawn every day, so one instance's stop moves no other draw
        hours = _overlap_hours(day, inst.created, inst.stopped_at)
        if not hours:
            continue
        gib = EGRESS_GIB_PER_DAY[inst.profile] * weekday * noise * hours / 24
        if inst.name == SPIKE_RESOURCE and day == SPIKE_DAY:
            gib = SPIKE_GIB
        name = f"//compute.googleapis.com/projects/{inst.project}/zones/{inst.zone}/instances/{inst.name}"
        rows.append(ExportRow("networking", bc.egress_sku(inst.region), day, inst.project, inst.labels,
                              inst.region, inst.zone, inst.name, name, gib * bc.EGRESS_USD_PER_GIB,
                              round(gib * bc.GIB), "bytes", gib, "gibibyte"))
    return rows


def _capacity_row(service: str, sku: str, day: int, project: str, labels: dict, region: str | None,
                  zone: str | None, resource: str, global_name: str, size_gb: float, usd_per_gb_month: float,
                  hours: float) -> ExportRow:
    """A GiB-month priced line (disks, snapshots, buckets) prorated by the hours it existed that day."""
    gib_months = size_gb * hours / HOURS_PER_MONTH
    return ExportRow(service, sku, day, project, labels, region, zone, resource, global_name,
                     gib_months * usd_per_gb_month, round(size_gb * bc.GIB * hours * 3600), "byte-seconds",
                     gib_months, "gibibyte month")


def _storage_rows(plan, day: int, rng: random.Random, ops_levels: dict[str, float]) -> list[ExportRow]:
    rows = []
    for disk in plan.disks:
        hours = _overlap_hours(day, disk.created, None)
        if hours:
            region = ZONES[disk.zone]
            name = f"//compute.googleapis.com/projects/{disk.project}/zones/{disk.zone}/disks/{disk.name}"
            rows.append(_capacity_row("compute", bc.DISK_SKUS[disk.disk_type], day, disk.project, disk.labels,
                                      region, disk.zone, disk.name, name, disk.size_gb,
                                      DISK_PRICES[disk.disk_type], hours))
    for snap in plan.snapshots:
        hours = _overlap_hours(day, snap.created, None)
        if hours:
            name = f"//compute.googleapis.com/projects/{snap.project}/global/snapshots/{snap.name}"
            rows.append(_capacity_row("compute", bc.SNAPSHOT_SKU, day, snap.project, snap.labels, None, None,
                                      snap.name, name, snap.size_gb, bc.SNAPSHOT_USD_PER_GB_MONTH, hours))
    weekday = WEEKEND_FACTOR if _weekend(day) else 1.0
    for bucket in plan.buckets:
        noise = rng.uniform(1 - NOISE, 1 + NOISE)
        hours = _overlap_hours(day, bucket.created, None)
        if not hours:
            continue
        days_before_now = (SANDBOX_NOW_TS - day) // DAY
        size = round(bucket.size_gb * (1 - BUCKET_GROWTH_PER_DAY * days_before_now), 1)
        region = bucket.location if bucket.location.islower() else None
        name = f"//storage.googleapis.com/projects/_/buckets/{bucket.name}"
        rows.append(_capacity_row("storage", bc.bucket_sku(bucket.storage_class, bucket.location), day,
                                  bucket.project, bucket.labels, region, None, bucket.name, name, size,
                                  STORAGE_PRICES[bucket.storage_class], hours))
        if bucket.name in ops_levels:
            ops = round(ops_levels[bucket.name] * weekday * noise * hours / 24)
            rows.append(ExportRow("storage", bc.STORAGE_OPS_SKU, day, bucket.project, bucket.labels, region,
                                  None, bucket.name, name, ops * bc.STORAGE_OPS_USD_PER_10K / 10_000,
                                  ops, "requests", ops, "count"))
    return rows


def _address_rows(plan, day: int) -> list[ExportRow]:
    instances = {i.name: i for i in plan.instances}
    rows = []
    for addr in plan.addresses:
        hours = _overlap_hours(day, addr.created, None)
        if not hours:
            continue
        user = instances.get(addr.user) if addr.user else None
        in_use = _overlap_hours(day, max(addr.created, user.created), user.stopped_at) if user else 0.0
        name = f"//compute.googleapis.com/projects/{addr.project}/regions/{addr.region}/addresses/{addr.name}"
        # GCP bills an address on a running VM at the in-use rate, and any other reserved hour as unused.
        for sku, rate, used in ((bc.IP_IN_USE_SKU, bc.IP_IN_USE_USD_PER_HOUR, in_use),
                                (bc.IP_UNUSED_SKU, bc.IP_UNUSED_USD_PER_HOUR, hours - in_use)):
            if used:
                rows.append(ExportRow("compute", sku, day, addr.project, addr.labels, addr.region, None,
                                      addr.name, name, used * rate, used * 3600, "seconds", used, "hour"))
    return rows


def _bigquery_rows(day: int, rng: random.Random, free_left: dict[str, float]) -> list[ExportRow]:
    if day < NEW_SERVICE_DAY:
        return []
    level = BIGQUERY_TIB_WEEKEND if _weekend(day) else BIGQUERY_TIB_WEEKDAY
    tib = round(level * rng.uniform(1 - NOISE, 1 + NOISE), 3)
    row = ExportRow("bigquery", bc.BIGQUERY_SKU, day, NEW_SERVICE_PROJECT, NEW_SERVICE_LABELS, "US", None, None,
                    None, tib * bc.BIGQUERY_USD_PER_TIB, round(tib * 2**40), "bytes", tib, "tebibyte")
    month = datetime.fromtimestamp(day, UTC).strftime("%Y%m")
    free = min(tib, free_left.setdefault(month, bc.BIGQUERY_FREE_TIB_PER_MONTH))
    if free > 0:
        free_left[month] -= free
        row.credits.append({"name": "FreeTier", "full_name": "Free tier: BigQuery analysis, 1 TiB per month",
                            "id": "free-tier/bigquery-analysis", "type": "FREE_TIER",
                            "amount": -free * bc.BIGQUERY_USD_PER_TIB})
    return [row]


def _apply_commitments(plan, day: int, rows: list[ExportRow]) -> list[ExportRow]:
    """Fee rows for each active commitment, and COMMITTED_USAGE_DISCOUNT credits on the usage it covers.

    Covered usage is credited at its on-demand cost; when usage exceeds the commitment, every eligible row
    gets the same share of credit (GCP spreads a commitment proportionally over eligible usage)."""
    fees = []
    for commitment in plan.commitments:
        hours = _overlap_hours(day, commitment.start, commitment.end)
        if not hours:
            continue
        term, discount = bc.CUD_PLANS[commitment.plan]
        core_rate, ram_rate = bc.SERIES_RATES[commitment.series]
        name = (f"//compute.googleapis.com/projects/{commitment.project}/regions/{commitment.region}"
                f"/commitments/{commitment.name}")
        for resource, amount, rate, usage_sku, unit in (
            ("Cpu", commitment.vcpus, core_rate, bc.core_sku(commitment.series, commitment.region), "hour"),
            ("Ram", commitment.memory_gb, ram_rate, bc.ram_sku(commitment.series, commitment.region),
             "gibibyte hour"),
        ):
            committed = amount * hours
            fees.append(ExportRow("compute", bc.commitment_sku(commitment.series, resource, commitment.region,
                                                               commitment.plan),
                                  day, commitment.project, {}, commitment.region, None, commitment.name, name,
                                  committed * rate * (1 - discount), committed * 3600, "seconds", committed, unit))
            eligible = [r for r in rows if r.sku == usage_sku and r.region == commitment.region]
            used = sum(r.pricing_amount for r in eligible)
            share = min(1.0, committed / used) if used else 0.0
            for r in eligible:
                r.credits.append({
                    "name": f"Committed use discount: {commitment.series.upper()} {resource}",
                    "full_name": f"Committed use discount {commitment.name} ({term})",
                    "id": f"commitments/{commitment.name}", "type": "COMMITTED_USAGE_DISCOUNT",
                    "amount": -share * r.cost,
                })
    return fees


def build_export(plan, rng: random.Random) -> list[ExportRow]:
    """Every billing row from BILLING_START to SANDBOX_NOW, in a stable order."""
    standard = sorted(b.name for b in plan.buckets if b.storage_class == "STANDARD")
    ops_levels = {name: rng.choice((200_000, 500_000, 1_000_000, 2_000_000)) for name in standard}
    free_left: dict[str, float] = {}
    export = []
    for day in _days():
        rows = _instance_rows(plan, day)
        rows += _apply_commitments(plan, day, rows)
        rows += _egress_rows(plan, day, rng)
        rows += _storage_rows(plan, day, rng, ops_levels)
        rows += _address_rows(plan, day)
        rows += _bigquery_rows(day, rng, free_left)
        export.extend(rows)
    return export
