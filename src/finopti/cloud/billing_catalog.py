"""What the billing export calls things: services, SKUs and their list prices (the Cloud Billing Catalog).

Machine-type prices in `catalog.MACHINE_TYPES` split exactly into a per-vCPU and a per-GiB rate per
series, which is how GCP bills instances: one "Instance Core" and one "Instance Ram" SKU per series and
region group. The other SKUs are the ones the sandbox's resources and events use. Prices are approximate
public on-demand list prices; the sandbox charges the same in every region of a group.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .catalog import DISK_PRICES, HOURS_PER_MONTH, MachineType

CURRENCY = "USD"

# key -> (service.id, service.description), with GCP's real service ids.
SERVICES: dict[str, tuple[str, str]] = {
    "compute": ("6F81-5844-456A", "Compute Engine"),
    "storage": ("95FF-2EF5-5EA1", "Cloud Storage"),
    "networking": ("E505-1604-58F8", "Networking"),
    "bigquery": ("24E6-581D-38E5", "BigQuery"),
}

# USD per vCPU-hour and per GiB-hour of each machine series (on-demand).
SERIES_RATES: dict[str, tuple[float, float]] = {
    "e2": (0.021811, 0.002923),
    "n2": (0.031611, 0.004237),
    "c2": (0.033982, 0.004555),
}
# Shared-core E2 types are billed for a fraction of a vCPU.
SHARED_CORE_VCPUS: dict[str, float] = {"e2-micro": 0.25, "e2-small": 0.5, "e2-medium": 1.0}

REGION_GROUPS: dict[str, str] = {
    "us-central1": "Americas",
    "us-east1": "Americas",
    "europe-west1": "EMEA",
    "asia-southeast1": "APAC",
}

DISK_SKUS: dict[str, str] = {
    "pd-standard": "Storage PD Capacity",
    "pd-balanced": "Balanced PD Capacity",
    "pd-ssd": "SSD backed PD Capacity",
}
BUCKET_LOCATION_NAMES: dict[str, str] = {
    "US": "US Multi-region",
    "EU": "EU Multi-region",
    "ASIA": "Asia Multi-region",
    "us-central1": "Iowa",
    "us-east1": "South Carolina",
    "europe-west1": "Belgium",
}

SNAPSHOT_SKU, SNAPSHOT_USD_PER_GB_MONTH = "Storage PD Snapshot", 0.05
IP_UNUSED_SKU, IP_UNUSED_USD_PER_HOUR = "Static Ip Charge", 0.01
IP_IN_USE_SKU, IP_IN_USE_USD_PER_HOUR = "External IP Charge on a Standard VM", 0.005
EGRESS_USD_PER_GIB = 0.12
STORAGE_OPS_SKU, STORAGE_OPS_USD_PER_10K = "Standard Storage Class A Operations", 0.05
BIGQUERY_SKU, BIGQUERY_USD_PER_TIB, BIGQUERY_FREE_TIB_PER_MONTH = "Analysis", 6.25, 1.0

# Resource-based committed use discounts: share of the on-demand price saved, by plan.
CUD_PLANS: dict[str, tuple[str, float]] = {"TWELVE_MONTH": ("1 Year", 0.37), "THIRTY_SIX_MONTH": ("3 Year", 0.55)}
CUD_TYPES: dict[str, str] = {"e2": "GENERAL_PURPOSE_E2", "n2": "GENERAL_PURPOSE_N2", "c2": "COMPUTE_OPTIMIZED_C2"}

GIB = 2**30


def sku_id(description: str) -> str:
    """A stable, GCP-looking SKU id (XXXX-XXXX-XXXX) derived from the description."""
    digest = hashlib.sha1(description.encode()).hexdigest().upper()
    return f"{digest[0:4]}-{digest[4:8]}-{digest[8:12]}"


def series_of(machine_type: str) -> str:
    return machine_type.split("-", 1)[0]


def billable_vcpus(machine: MachineType) -> float:
    return SHARED_CORE_VCPUS.get(machine.name, float(machine.vcpus))


def core_sku(series: str, region: str) -> str:
    return f"{series.upper()} Instance Core running in {REGION_GROUPS[region]}"


def ram_sku(series: str, region: str) -> str:
    return f"{series.upper()} Instance Ram running in {REGION_GROUPS[region]}"


def egress_sku(region: str) -> str:
    group = REGION_GROUPS[region]
    return f"Network Internet Egress from {group} to {group}"


def bucket_sku(storage_class: str, location: str) -> str:
    return f"{storage_class.title()} Storage {BUCKET_LOCATION_NAMES[location]}"


def commitment_sku(series: str, resource: str, region: str, plan: str) -> str:
    """e.g. 'Commitment v1: C2 Cpu in Americas for 1 Year' (resource: Cpu or Ram)."""
    return f"Commitment v1: {series.upper()} {resource} in {REGION_GROUPS[region]} for {CUD_PLANS[plan][0]}"


@dataclass(frozen=True)
class Sku:
    """One line of the price catalogue: what a unit of the SKU costs."""

    service: str  # key of SERVICES
    description: str
    pricing_unit: str
    usd_per_unit: float


def sku_catalogue(storage_prices: dict[str, float]) -> list[Sku]:
    """Every SKU the sandbox bills, with its list price, for the `skus` table."""
    skus = []
    for series, (core, ram) in SERIES_RATES.items():
        for group_region in ("us-central1", "europe-west1", "asia-southeast1"):
            skus.append(Sku("compute", core_sku(series, group_region), "hour", core))
            skus.append(Sku("compute", ram_sku(series, group_region), "gibibyte hour", ram))
            for plan, (_, discount) in CUD_PLANS.items():
                skus.append(Sku("compute", commitment_sku(series, "Cpu", group_region, plan), "hour",
                                round(core * (1 - discount), 6)))
                skus.append(Sku("compute", commitment_sku(series, "Ram", group_region, plan), "gibibyte hour",
                                round(ram * (1 - discount), 6)))
    for group_region in ("us-central1", "europe-west1", "asia-southeast1"):
        skus.append(Sku("networking", egress_sku(group_region), "gibibyte", EGRESS_USD_PER_GIB))
    for disk_type, sku in DISK_SKUS.items():
        skus.append(Sku("compute", sku, "gibibyte month", DISK_PRICES[disk_type]))
    skus.append(Sku("compute", SNAPSHOT_SKU, "gibibyte month", SNAPSHOT_USD_PER_GB_MONTH))
    skus.append(Sku("compute", IP_UNUSED_SKU, "hour", IP_UNUSED_USD_PER_HOUR))
    skus.append(Sku("compute", IP_IN_USE_SKU, "hour", IP_IN_USE_USD_PER_HOUR))
    for location in BUCKET_LOCATION_NAMES:
        for storage_class, price in storage_prices.items():
            skus.append(Sku("storage", bucket_sku(storage_class, location), "gibibyte month", price))
    skus.append(Sku("storage", STORAGE_OPS_SKU, "count", STORAGE_OPS_USD_PER_10K / 10_000))
    skus.append(Sku("bigquery", BIGQUERY_SKU, "tebibyte", BIGQUERY_USD_PER_TIB))
    return sorted(skus, key=lambda s: (s.service, s.description))


def monthly(usd_per_hour: float) -> float:
    return round(usd_per_hour * HOURS_PER_MONTH, 2)
