"""Deterministic seed data for the sandbox cloud.

`build_plan()` turns a fixed `random.Random(42)` into a fleet of instances, disks,
buckets and 14 days of hourly metrics. Every instance is given a *profile* that
decides how its utilisation looks, so analyses have predictable answers:

- idle: running, CPU about 1-3 % (always below 5 %)      -> find_idle_instances, downsize
- overprovisioned: running, CPU p95 < 30 %, memory p95 < 40 %, but not idle -> downsize
- busy: running, CPU around 80 % with daily peaks above 85 % -> upsize
- steady: running, CPU 30-80 % -> no recommendation
- stopped: TERMINATED; half were stopped inside the 14-day window (samples end at
  the stop), half before it (no samples at all). Stopped time has *no* samples, not zeros.

Snapshots, static IP addresses and the commitment are fixed tables below; the billing history is
computed from all of it by `billing_seed.build_export`.
"""

from __future__ import annotations

import functools
import json
import math
import random
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .billing_catalog import CUD_TYPES, CURRENCY, SERVICES, sku_catalogue, sku_id
from .catalog import (
    BILLING_ACCOUNT_ID,
    DAY,
    DISK_PRICES,
    HISTORY_DAYS,
    HOUR,
    MACHINE_TYPES,
    PROJECTS,
    SANDBOX_NOW_TS,
    SEED,
    SEEDED_MACHINE_TYPES,
    STORAGE_PRICES,
    ZONES,
)

SCHEMA_VERSION = "2"

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS machine_types (
    name TEXT PRIMARY KEY, series TEXT NOT NULL, vcpus INTEGER NOT NULL, memory_gb REAL NOT NULL,
    hourly_usd REAL NOT NULL, smaller TEXT, larger TEXT);
CREATE TABLE IF NOT EXISTS disk_prices (disk_type TEXT PRIMARY KEY, usd_per_gb_month REAL NOT NULL);
CREATE TABLE IF NOT EXISTS storage_prices (storage_class TEXT PRIMARY KEY, usd_per_gb_month REAL NOT NULL);
CREATE TABLE IF NOT EXISTS instances (
    name TEXT PRIMARY KEY, zone TEXT NOT NULL, machine_type TEXT NOT NULL, state TEXT NOT NULL,
    labels TEXT NOT NULL, created INTEGER NOT NULL,
    last_start INTEGER, last_stop INTEGER, last_resize INTEGER, project TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS disks (
    name TEXT PRIMARY KEY, zone TEXT NOT NULL, disk_type TEXT NOT NULL, size_gb INTEGER NOT NULL,
    attached_to TEXT, boot INTEGER NOT NULL, labels TEXT NOT NULL, created INTEGER NOT NULL, project TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS buckets (
    name TEXT PRIMARY KEY, location TEXT NOT NULL, storage_class TEXT NOT NULL,
    size_gb REAL NOT NULL, labels TEXT NOT NULL, created INTEGER NOT NULL, project TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS snapshots (
    name TEXT PRIMARY KEY, project TEXT NOT NULL, source_disk TEXT NOT NULL, size_gb INTEGER NOT NULL,
    labels TEXT NOT NULL, created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS addresses (
    name TEXT PRIMARY KEY, project TEXT NOT NULL, region TEXT NOT NULL, address TEXT NOT NULL,
    user TEXT, labels TEXT NOT NULL, created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS samples (
    instance TEXT NOT NULL, metric TEXT NOT NULL, ts INTEGER NOT NULL, value REAL NOT NULL,
    PRIMARY KEY (instance, metric, ts)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS commitments (
    name TEXT PRIMARY KEY, project TEXT NOT NULL, region TEXT NOT NULL, type TEXT NOT NULL, plan TEXT NOT NULL,
    vcpus INTEGER NOT NULL, memory_gb INTEGER NOT NULL, start INTEGER NOT NULL, end INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS budgets (
    name TEXT PRIMARY KEY, amount REAL NOT NULL, filter TEXT NOT NULL, thresholds TEXT NOT NULL,
    created INTEGER NOT NULL, created_by TEXT);
CREATE TABLE IF NOT EXISTS skus (
    sku_id TEXT PRIMARY KEY, service_id TEXT NOT NULL, service_description TEXT NOT NULL,
    sku_description TEXT NOT NULL, pricing_unit TEXT NOT NULL, usd_per_pricing_unit REAL NOT NULL);
-- GCP's detailed (resource-level) billing export to BigQuery, one row per day, resource and SKU.
-- Nested columns are flattened with `_` (service.id -> service_id), arrays are JSON text.
CREATE TABLE IF NOT EXISTS billing_export (
    billing_account_id TEXT NOT NULL, service_id TEXT NOT NULL, service_description TEXT NOT NULL,
    sku_id TEXT NOT NULL, sku_description TEXT NOT NULL,
    usage_start_time INTEGER NOT NULL, usage_end_time INTEGER NOT NULL,
    project_id TEXT NOT NULL, project_name TEXT NOT NULL, project_number TEXT NOT NULL,
    labels TEXT NOT NULL, location_location TEXT, location_region TEXT, location_zone TEXT,
    resource_name TEXT, resource_global_name TEXT, export_time INTEGER NOT NULL,
    cost REAL NOT NULL, currency TEXT NOT NULL, currency_conversion_rate REAL NOT NULL,
    usage_amount REAL NOT NULL, usage_unit TEXT NOT NULL,
    usage_amount_in_pricing_units REAL NOT NULL, usage_pricing_unit TEXT NOT NULL,
    credits TEXT NOT NULL, credits_total REAL NOT NULL, invoice_month TEXT NOT NULL, cost_type TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS billing_export_day ON billing_export (usage_start_time);
"""

# How many instances each zone gets, and how many instances get each profile (both sum to 48).
ZONE_COUNTS = {
    "us-central1-a": 14,
    "us-central1-b": 10,
    "us-east1-b": 10,
    "europe-west1-b": 8,
    "asia-southeast1-a": 6,
}
PROFILE_COUNTS = {"idle": 6, "overprovisioned": 10, "busy": 5, "steady": 18, "stopped": 9}

TEAM_APPS = {
    "payments": ("payments-api", "ledger-db", "fraud-scorer"),
    "search": ("search-frontend", "indexer", "query-cache"),
    "data": ("etl-worker", "warehouse-loader", "notebook"),
    "platform": ("ci-runner", "monitoring", "bastion"),
}
ENVS = ("prod", "staging", "dev")
ENV_WEIGHTS = (45, 30, 25)

# Over-provisioned instances are big, busy ones are smallish: that is what makes them interesting.
PROFILE_MACHINE_TYPES = {
    "idle": SEEDED_MACHINE_TYPES,
    "overprovisioned": (
        "e2-standard-2",
        "e2-standard-4",
        "n2-standard-4",
        "n2-standard-8",
        "n2-highmem-4",
        "c2-standard-8",
    ),
    "busy": ("e2-medium", "e2-standard-2", "n2-standard-2", "n2-standard-4", "c2-standard-8"),
    "steady": SEEDED_MACHINE_TYPES,
    "stopped": SEEDED_MACHINE_TYPES,
}

# Disks nobody deleted: (name, zone, team label or None, project). They carry no env label.
ORPHAN_DISKS = (
    ("etl-scratch-old", "us-central1-a", "data", "finopti-staging"),
    ("ledger-db-restore-test", "us-central1-b", "payments", "finopti-staging"),
    ("search-reindex-tmp", "us-east1-b", "search", "finopti-prod"),
    ("ci-cache-2025", "us-central1-a", "platform", "finopti-prod"),
    ("notebook-home-jdoe", "europe-west1-b", None, "finopti-dev"),
    ("monitoring-archive", "asia-southeast1-a", "platform", "finopti-prod"),
    ("warehouse-export-2025q3", "us-east1-b", "data", "finopti-prod"),
    ("bastion-old-boot", "europe-west1-b", None, "finopti-dev"),
)

# Snapshots: (source disk, days before SANDBOX_NOW it was taken, stored GB). Recent ones (a snapshot
# schedule) copy the disk's labels; the old manual ones carry only a team label, or none.
SNAPSHOTS = (
    ("ledger-db-prod-01-data", 2, 620, None),
    ("search-frontend-prod-01-data", 5, 710, None),
    ("notebook-staging-01-data", 30, 880, None),
    ("monitoring-prod-02-data", 120, 60, {"team": "platform"}),
    ("payments-api-prod-03-data", 175, 1450, {}),
    ("ledger-db-prod-01-data", 190, 540, {"team": "payments"}),
    ("etl-worker-prod-01-data", 260, 1320, {"team": "data"}),
    ("bastion-old-boot", 400, 35, {}),
)

# Static external IPs: (name, region, instance using it or None, days since reserved, labels, project).
ADDRESSES = (
    ("search-frontend-prod-01-ip", "us-east1", "search-frontend-prod-01", 300, None, None),
    ("payments-api-prod-01-ip", "us-central1", "payments-api-prod-01", 400, None, None),
    ("bastion-staging-01-ip", "us-central1", "bastion-staging-01", 420, None, None),
    ("payments-api-prod-02-ip", "us-east1", "payments-api-prod-02", 220, None, None),  # its VM was stopped
    ("legacy-vpn-gateway", "us-central1", None, 200, {}, "finopti-prod"),
    ("old-lb-frontend", "europe-west1", None, 60, {"team": "search"}, "finopti-prod"),
)

BUCKETS = (  # (name, location, storage class, team)
    ("finopti-app-logs", "US", "STANDARD", "platform"),
    ("finopti-logs-archive", "US", "ARCHIVE", "platform"),
    ("finopti-ml-datasets", "us-central1", "STANDARD", "data"),
    ("finopti-warehouse-exports", "us-east1", "NEARLINE", "data"),
    ("finopti-db-backups", "us-central1", "NEARLINE", "payments"),
    ("finopti-compliance-archive", "EU", "COLDLINE", "payments"),
    ("finopti-search-snapshots", "europe-west1", "STANDARD", "search"),
    ("finopti-static-assets", "ASIA", "STANDARD", "search"),
)


@dataclass(frozen=True)
class Curve:
    """Utilisation shape: base level + daily sine wave + gaussian noise, clamped to [lo, hi]."""

    base: tuple[float, float]
    amp: tuple[float, float]
    noise: float
    lo: float
    hi: float


CPU_CURVES = {
    "idle": Curve((0.8, 2.5), (0.3, 0.8), 0.4, 0.1, 4.5),
    "overprovisioned": Curve((9, 15), (4, 7), 1.5, 5.5, 27),
    "busy": Curve((76, 82), (12, 16), 3, 40, 99.5),
    "steady": Curve((38, 55), (8, 15), 3, 15, 80),
}
MEMORY_CURVES = {
    "idle": Curve((12, 30), (0.5, 2), 1, 5, 38),
    "overprovisioned": Curve((15, 30), (1, 3), 1.5, 5, 38),
    "busy": Curve((55, 75), (3, 8), 2, 30, 95),
    "steady": Curve((40, 65), (2, 6), 2, 25, 90),
}


@dataclass
class InstanceSeed:
    name: str
    zone: str
    machine_type: str
    profile: str
    labels: dict[str, str]
    created: int
    stopped_at: int | None  # None while RUNNING

    @property
    def project(self) -> str:
        return PROJECTS[self.labels["env"]]

    @property
    def region(self) -> str:
        return ZONES[self.zone]


@dataclass
class DiskSeed:
    name: str
    zone: str
    disk_type: str
    size_gb: int
    attached_to: str | None
    boot: bool
    labels: dict[str, str]
    created: int
    project: str


@dataclass
class BucketSeed:
    name: str
    location: str
    storage_class: str
    size_gb: float
    labels: dict[str, str]
    created: int
    project: str


@dataclass
class SnapshotSeed:
    name: str
    project: str
    source_disk: str
    size_gb: int
    labels: dict[str, str]
    created: int


@dataclass
class AddressSeed:
    name: str
    project: str
    region: str
    address: str
    user: str | None
    labels: dict[str, str]
    created: int


@dataclass(frozen=True)
class CommitmentSeed:
    """A resource-based committed use discount (GCP `regionCommitments`)."""

    name: str
    project: str
    region: str
    series: str
    plan: str
    vcpus: int
    memory_gb: int
    start: int
    end: int


def _utc(year: int, month: int, day: int) -> int:
    return int(datetime(year, month, day, tzinfo=UTC).timestamp())


# The commitment event: 16 vCPUs and 64 GB of C2 in us-central1 for a year, from 2026-09-01.
COMMITMENT = CommitmentSeed("c2-us-central1-1y", "finopti-prod", "us-central1", "c2", "TWELVE_MONTH",
                            16, 64, _utc(2026, 9, 1), _utc(2027, 9, 1))

# Budgets that exist from the start (see docs/sandbox.md for where each stands).
DEFAULT_BUDGET_THRESHOLDS = [{"percent": 50.0, "basis": "actual"}, {"percent": 90.0, "basis": "actual"},
                             {"percent": 100.0, "basis": "actual"}, {"percent": 100.0, "basis": "forecast"}]
SEEDED_BUDGETS: tuple[dict, ...] = (
    {"name": "monthly-total", "amount": 10000.0, "filter": {"labels": {}},
     "thresholds": DEFAULT_BUDGET_THRESHOLDS},
    {"name": "payments", "amount": 2000.0, "filter": {"labels": {"team": "payments"}},
     "thresholds": DEFAULT_BUDGET_THRESHOLDS},
    {"name": "search-prod", "amount": 2000.0, "filter": {"project": "finopti-prod", "labels": {"team": "search"}},
     "thresholds": DEFAULT_BUDGET_THRESHOLDS},
)



@dataclass
class SeedPlan:
    instances: list[InstanceSeed] = field(default_factory=list)
    disks: list[DiskSeed] = field(default_factory=list)
    buckets: list[BucketSeed] = field(default_factory=list)
    samples: list[tuple[str, str, int, float]] = field(default_factory=list)  # instance, metric, ts, value
    snapshots: list[SnapshotSeed] = field(default_factory=list)
    addresses: list[AddressSeed] = field(default_factory=list)
    commitments: list[CommitmentSeed] = field(default_factory=list)
    export: list = field(default_factory=list)  # billing_seed.ExportRow, the billing history

    @functools.cached_property
    def export_records(self) -> list[tuple]:
        """The billing history as billing_export table rows."""
        return [row.as_record(BILLING_ACCOUNT_ID, CURRENCY) for row in self.export]


def _days_ago(rng: random.Random, lo: int, hi: int) -> int:
    """A whole-hour timestamp between lo and hi days before SANDBOX_NOW."""
    return SANDBOX_NOW_TS - rng.randint(lo, hi) * DAY - rng.randint(0, 23) * HOUR


def _plan_instances(rng: random.Random) -> list[InstanceSeed]:
    zones = [zone for zone, count in ZONE_COUNTS.items() for _ in range(count)]
    profiles = [profile for profile, count in PROFILE_COUNTS.items() for _ in range(count)]
    rng.shuffle(profiles)
    counters: dict[tuple[str, str], int] = {}
    instances = []
    stopped_seen = 0
    for zone, profile in zip(zones, profiles, strict=True):
        team = rng.choice(sorted(TEAM_APPS))
        app = rng.choice(TEAM_APPS[team])
        env = rng.choices(ENVS, weights=ENV_WEIGHTS)[0]
        counters[(app, env)] = counters.get((app, env), 0) + 1
        stopped_at = None
        if profile == "stopped":
            # Alternate so both kinds exist: stopped inside the metric window, and long before it.
            inside = stopped_seen % 2 == 0
            stopped_at = _days_ago(rng, 2, 11) if inside else _days_ago(rng, 20, 120)
            stopped_seen += 1
        instances.append(
            InstanceSeed(
                name=f"{app}-{env}-{counters[(app, env)]:02d}",
                zone=zone,
                machine_type=rng.choice(PROFILE_MACHINE_TYPES[profile]),
                profile=profile,
                labels={"env": env, "team": team, "app": app},
                created=_days_ago(rng, 130, 540),  # always older than any stop and the metric window
                stopped_at=stopped_at,
            )
        )
    return instances


def _plan_disks(rng: random.Random, instances: list[InstanceSeed]) -> list[DiskSeed]:
    disks = []
    for inst in instances:
        boot_type = rng.choices(("pd-balanced", "pd-standard", "pd-ssd"), weights=(6, 3, 1))[0]
        disks.append(
            DiskSeed(
                inst.name,
                inst.zone,
                boot_type,
                rng.choice((10, 20, 50, 100)),
                inst.name,
                True,
                dict(inst.labels),
                inst.created,
                inst.project,
            )
        )
        if rng.random() < 0.35:
            data_type = rng.choices(("pd-balanced", "pd-standard", "pd-ssd"), weights=(4, 3, 3))[0]
            disks.append(
                DiskSeed(
                    f"{inst.name}-data",
                    inst.zone,
                    data_type,
                    rng.choice((100, 200, 500, 1000, 2000)),
                    inst.name,
                    False,
                    dict(inst.labels),
                    inst.created,
                    inst.project,
                )
            )
    for name, zone, team, project in ORPHAN_DISKS:
        disk_type = rng.choice(sorted(DISK_PRICES))
        labels = {"team": team} if team else {}
        disks.append(
            DiskSeed(
                name,
                zone,
                disk_type,
                rng.choice((50, 100, 200, 500, 1000)),
                None,
                False,
                labels,
                _days_ago(rng, 40, 400),
                project,
            )
        )
    return disks


def _plan_buckets(rng: random.Random) -> list[BucketSeed]:
    return [
        BucketSeed(
            name,
            location,
            storage_class,
            round(rng.uniform(20, 8000), 1),
            {"team": team, "env": "prod"},
            _days_ago(rng, 100, 900),
            PROJECTS["prod"],
        )
        for name, location, storage_class, team in BUCKETS
    ]


def _plan_snapshots(disks: list[DiskSeed]) -> list[SnapshotSeed]:
    by_name = {d.name: d for d in disks}
    snapshots = []
    for source, days_old, size_gb, labels in SNAPSHOTS:
        disk = by_name[source]
        created = SANDBOX_NOW_TS - days_old * DAY + 3 * HOUR  # snapshots run at 03:00 UTC
        day = datetime.fromtimestamp(created, UTC).strftime("%Y%m%d")
        snapshots.append(SnapshotSeed(f"{source}-{day}", disk.project, source, size_gb,
                                      dict(disk.labels) if labels is None else dict(labels), created))
    return snapshots


def _plan_addresses(instances: list[InstanceSeed]) -> list[AddressSeed]:
    by_name = {i.name: i for i in instances}
    addresses = []
    for n, (name, region, user, days_old, labels, project) in enumerate(ADDRESSES):
        owner = by_name.get(user) if user else None
        addresses.append(AddressSeed(
            name, owner.project if owner else project, region, f"203.0.113.{10 + n}", user,
            dict(owner.labels) if owner and labels is None else dict(labels or {}),
            SANDBOX_NOW_TS - days_old * DAY,
        ))
    return addresses


def _series(rng: random.Random, curve: Curve, timestamps: list[int]) -> list[float]:
    base = rng.uniform(*curve.base)
    amp = rng.uniform(*curve.amp)
    values = []
    for ts in timestamps:
        hour_of_day = (ts // HOUR) % 24
        daily = math.sin(2 * math.pi * (hour_of_day - 9) / 24)  # peaks at 15:00 UTC
        value = base + amp * daily + rng.gauss(0, curve.noise)
        values.append(round(min(curve.hi, max(curve.lo, value)), 2))
    return values


def _plan_samples(rng: random.Random, instances: list[InstanceSeed]) -> list[tuple[str, str, int, float]]:
    window = [SANDBOX_NOW_TS - k * HOUR for k in reversed(range(HISTORY_DAYS * 24))]
    samples = []
    for inst in instances:
        # A stopped instance behaved "steady" while it ran; nothing is recorded once it stopped.
        shape = "steady" if inst.profile == "stopped" else inst.profile
        timestamps = [ts for ts in window if inst.stopped_at is None or ts <= inst.stopped_at]
        for metric, curves in (("cpu", CPU_CURVES), ("memory", MEMORY_CURVES)):
            values = _series(rng, curves[shape], timestamps)
            samples.extend((inst.name, metric, ts, v) for ts, v in zip(timestamps, values, strict=True))
    return samples


@functools.lru_cache(maxsize=2)
def build_plan(seed: int = SEED) -> SeedPlan:
    """The full seed, computed in memory; the same seed always gives the same plan (built once per process,
    so treat it as read-only)."""
    from .billing_seed import build_export  # it reads the plan's dataclasses

    rng = random.Random(seed)
    instances = _plan_instances(rng)
    disks = _plan_disks(rng, instances)
    buckets = _plan_buckets(rng)
    samples = _plan_samples(rng, instances)
    plan = SeedPlan(instances, disks, buckets, samples, _plan_snapshots(disks), _plan_addresses(instances),
                    [COMMITMENT])
    plan.export = build_export(plan, random.Random(f"{seed}/billing"))
    return plan


def write_plan(conn: sqlite3.Connection, plan: SeedPlan, seed: int = SEED) -> None:
    """Insert the catalogue and the plan; the caller owns the transaction."""
    conn.executemany(
        "INSERT INTO machine_types VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(m.name, m.series, m.vcpus, m.memory_gb, m.hourly_usd, m.smaller, m.larger) for m in MACHINE_TYPES],
    )
    conn.executemany("INSERT INTO disk_prices VALUES (?, ?)", DISK_PRICES.items())
    conn.executemany("INSERT INTO storage_prices VALUES (?, ?)", STORAGE_PRICES.items())
    conn.executemany(
        "INSERT INTO instances VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)",
        [
            (
                i.name,
                i.zone,
                i.machine_type,
                "TERMINATED" if i.stopped_at else "RUNNING",
                json.dumps(i.labels),
                i.created,
                i.created,
                i.stopped_at,
                i.project,
            )
            for i in plan.instances
        ],
    )
    conn.executemany(
        "INSERT INTO disks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                d.name,
                d.zone,
                d.disk_type,
                d.size_gb,
                d.attached_to,
                int(d.boot),
                json.dumps(d.labels),
                d.created,
                d.project,
            )
            for d in plan.disks
        ],
    )
    conn.executemany(
        "INSERT INTO buckets VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (b.name, b.location, b.storage_class, b.size_gb, json.dumps(b.labels), b.created, b.project)
            for b in plan.buckets
        ],
    )
    conn.executemany("INSERT INTO samples VALUES (?, ?, ?, ?)", plan.samples)
    conn.executemany(
        "INSERT INTO snapshots VALUES (?, ?, ?, ?, ?, ?)",
        [(s.name, s.project, s.source_disk, s.size_gb, json.dumps(s.labels), s.created) for s in plan.snapshots],
    )
    conn.executemany(
        "INSERT INTO addresses VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(a.name, a.project, a.region, a.address, a.user, json.dumps(a.labels), a.created) for a in plan.addresses],
    )
    conn.executemany(
        "INSERT INTO commitments VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [(c.name, c.project, c.region, CUD_TYPES[c.series], c.plan, c.vcpus, c.memory_gb, c.start, c.end)
         for c in plan.commitments],
    )
    conn.executemany(
        "INSERT INTO skus VALUES (?, ?, ?, ?, ?, ?)",
        [(sku_id(k.description), *SERVICES[k.service], k.description, k.pricing_unit, k.usd_per_unit)
         for k in sku_catalogue(STORAGE_PRICES)],
    )
    conn.executemany(f"INSERT INTO billing_export VALUES ({', '.join('?' * 28)})",
                     plan.export_records)
    conn.executemany(
        "INSERT INTO budgets VALUES (?, ?, ?, ?, ?, ?)",
        [(b["name"], b["amount"], json.dumps(b["filter"]), json.dumps(b["thresholds"]), SANDBOX_NOW_TS, "seed")
         for b in SEEDED_BUDGETS],
    )
    conn.executemany(
        "INSERT INTO meta VALUES (?, ?)",
        [("schema_version", SCHEMA_VERSION), ("seed", str(seed)), ("seeded", "1")],
    )
