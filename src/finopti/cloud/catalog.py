"""Static facts of the sandbox cloud: its frozen clock, zones, machine types, prices and metrics.

These constants are what the seed writes into a fresh database; at run time the
sandbox reads prices back from the database so the DB file is self-describing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

# The sandbox clock never moves: every timestamp is relative to this instant so
# answers are the same whenever the product runs. It is a Monday at midnight, half-way
# through a month: "last week" is a whole calendar week and "this month" has 15 days of
# billing behind it and 15 to forecast.
SANDBOX_NOW = datetime(2026, 11, 16, tzinfo=UTC)
SANDBOX_NOW_TS = int(SANDBOX_NOW.timestamp())

SEED = 42
BILLING_ACCOUNT_ID = "01F1E2-A3B4C5-D6E7F8"
HOURS_PER_MONTH = 730  # the usual GCP billing convention
HISTORY_DAYS = 14  # hourly samples kept per instance, ending at SANDBOX_NOW
HOUR = 3600
DAY = 24 * HOUR

# zone -> region, in the order used by the seed and by list_zones().
ZONES: dict[str, str] = {
    "us-central1-a": "us-central1",
    "us-central1-b": "us-central1",
    "us-east1-b": "us-east1",
    "europe-west1-b": "europe-west1",
    "asia-southeast1-a": "asia-southeast1",
}

STATES = ("RUNNING", "TERMINATED")

# Three projects, one per environment; resources without an env label say which project they are in.
PROJECTS: dict[str, str] = {"prod": "finopti-prod", "staging": "finopti-staging", "dev": "finopti-dev"}


@dataclass(frozen=True)
class MachineType:
    name: str
    series: str
    vcpus: int
    memory_gb: float
    hourly_usd: float
    smaller: str | None  # what rightsizing suggests for a downsize (None: nothing smaller)
    larger: str | None  # ... and for an upsize


# Approximate us-central1 on-demand prices (USD/hour); the sandbox charges the same in every zone.
# smaller/larger are one step along the series; at the bottom of n2/c2 they step to the
# cheaper family with the same shape (as GCP's recommender tends to suggest e2 for idle n2).
MACHINE_TYPES: tuple[MachineType, ...] = (
    MachineType("e2-micro", "e2", 2, 1, 0.008376, None, "e2-small"),
    MachineType("e2-small", "e2", 2, 2, 0.016751, "e2-micro", "e2-medium"),
    MachineType("e2-medium", "e2", 2, 4, 0.033503, "e2-small", "e2-standard-2"),
    MachineType("e2-standard-2", "e2", 2, 8, 0.067006, "e2-medium", "e2-standard-4"),
    MachineType("e2-standard-4", "e2", 4, 16, 0.134012, "e2-standard-2", "e2-standard-8"),
    MachineType("e2-standard-8", "e2", 8, 32, 0.268024, "e2-standard-4", None),
    MachineType("n2-standard-2", "n2", 2, 8, 0.097118, "e2-standard-2", "n2-standard-4"),
    MachineType("n2-standard-4", "n2", 4, 16, 0.194236, "n2-standard-2", "n2-standard-8"),
    MachineType("n2-standard-8", "n2", 8, 32, 0.388472, "n2-standard-4", "n2-standard-16"),
    MachineType("n2-standard-16", "n2", 16, 64, 0.776944, "n2-standard-8", None),
    MachineType("n2-highmem-2", "n2", 2, 16, 0.131014, "n2-standard-2", "n2-highmem-4"),
    MachineType("n2-highmem-4", "n2", 4, 32, 0.262028, "n2-highmem-2", "n2-highmem-8"),
    MachineType("n2-highmem-8", "n2", 8, 64, 0.524056, "n2-highmem-4", None),
    MachineType("c2-standard-4", "c2", 4, 16, 0.208808, "n2-standard-4", "c2-standard-8"),
    MachineType("c2-standard-8", "c2", 8, 32, 0.417616, "c2-standard-4", "c2-standard-16"),
    MachineType("c2-standard-16", "c2", 16, 64, 0.835232, "c2-standard-8", None),
)

# The seeded fleet only uses these; the others exist as resize targets.
SEEDED_MACHINE_TYPES = (
    "e2-small",
    "e2-medium",
    "e2-standard-2",
    "e2-standard-4",
    "n2-standard-2",
    "n2-standard-4",
    "n2-standard-8",
    "n2-highmem-4",
    "c2-standard-8",
)

DISK_PRICES: dict[str, float] = {"pd-standard": 0.04, "pd-balanced": 0.10, "pd-ssd": 0.17}  # USD/GB-month
STORAGE_PRICES: dict[str, float] = {  # USD/GB-month
    "STANDARD": 0.020,
    "NEARLINE": 0.010,
    "COLDLINE": 0.004,
    "ARCHIVE": 0.0012,
}

METRICS: tuple[dict[str, str], ...] = (
    {
        "name": "cpu",
        "unit": "percent",
        "description": "Average CPU utilisation of the instance over each hour, 0-100.",
        "gcp_metric": "compute.googleapis.com/instance/cpu/utilization",
    },
    {
        "name": "memory",
        "unit": "percent",
        "description": "Average share of the instance's memory in use over each hour, 0-100.",
        "gcp_metric": "agent.googleapis.com/memory/percent_used",
    },
)

# Rightsizing thresholds on p95 utilisation (percent).
DOWNSIZE_CPU_P95 = 30.0
DOWNSIZE_MEMORY_P95 = 40.0
UPSIZE_CPU_P95 = 85.0


def iso(ts: int | None) -> str | None:
    """Epoch seconds -> RFC 3339 UTC string, as the GCP APIs print timestamps."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
