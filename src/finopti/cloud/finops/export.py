"""The one thing every FinOps analysis reads: a billing export, as GCP writes it to BigQuery.

`BillingExport` is the interface; the sandbox implements it over SQLite (`cloud.billing_store`), a GCP
backend would implement it with queries on the real `gcp_billing_export_resource_v1_*` table. The
analyses in this package only call these methods, so they run unchanged on either.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

# Dimensions a cost can be grouped by; `label:<key>` groups by the value of a resource label.
DIMENSIONS = ("day", "month", "service", "sku", "project", "region", "resource")
LABEL_PREFIX = "label:"


@dataclass(frozen=True)
class CostFilter:
    """Which rows count: every given condition must hold (an empty filter takes every row)."""

    projects: tuple[str, ...] = ()  # project.id in these
    services: tuple[str, ...] = ()  # service.description in these
    labels: tuple[tuple[str, str], ...] = ()  # each key=value present on the row
    lacking_any: tuple[str, ...] = field(default=())  # the row misses at least one of these label keys

    def describe(self) -> dict:
        out: dict = {}
        if self.projects:
            out["project"] = list(self.projects)
        if self.services:
            out["service"] = list(self.services)
        if self.labels:
            out["labels"] = {k: v for k, v in self.labels}
        if self.lacking_any:
            out["missing_any_label"] = list(self.lacking_any)
        return out

    def text(self) -> str:
        parts = [f"project {', '.join(self.projects)}" if self.projects else "",
                 f"service {', '.join(self.services)}" if self.services else "",
                 ", ".join(f"{k}={v}" for k, v in self.labels),
                 f"missing a {' or '.join(self.lacking_any)} label" if self.lacking_any else ""]
        return "; ".join(p for p in parts if p) or "all spend"


@runtime_checkable
class BillingExport(Protocol):
    """Read access to a billing export. Times are epoch seconds at UTC midnight; costs in the export's currency."""

    source: str  # one line naming the table the figures come from

    def today(self) -> int:
        """The first day without complete data: every analysis treats it as now."""

    def first_day(self) -> int:
        """The first day with data."""

    def currency(self) -> str: ...

    def aggregate(self, start: int, end: int, group_by: Sequence[str], where: CostFilter) -> list[dict]:
        """One dict per group in [start, end): the group_by dimensions, `cost` (before credits), `credits`
        (negative), `usage` (in pricing units; meaningful within one SKU), `rows` (rows summed)."""

    def credits_by_type(self, start: int, end: int, where: CostFilter) -> dict[str, float]:
        """Sum of credits in [start, end) per credit type (COMMITTED_USAGE_DISCOUNT, FREE_TIER, ...)."""

    def known(self, dimension: str) -> list[str]:
        """The values a dimension takes in the export (services, projects, label keys): for checking input."""

    def rows(self, start: int, end: int, where: CostFilter, limit: int) -> list[dict]:
        """Raw rows in the export's own nested shape (service.description, credits[], ...), costliest first."""
