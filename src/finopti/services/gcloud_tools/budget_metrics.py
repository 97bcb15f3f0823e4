"""Budgets as Prometheus metrics, so threshold alerts are Prometheus alerts (rules in observability.prometheus).

Exported on the tool server's /metrics, computed when scraped and kept for `ttl` seconds (a budget's
status needs a forecast; the billing export changes at most daily); creating or deleting a budget
drops the cached values at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("finopti.budgets")


class BudgetCollector(Collector):
    def __init__(self, states: Callable[[], list[dict]], ttl: float = 30.0) -> None:
        self._states = states
        self._ttl = ttl
        self._lock = threading.Lock()
        self._cached: tuple[float, list[dict]] | None = None

    def invalidate(self) -> None:
        with self._lock:
            self._cached = None

    def _current(self) -> list[dict]:
        with self._lock:
            if self._cached is None or time.monotonic() - self._cached[0] > self._ttl:
                self._cached = (time.monotonic(), self._states())
            return self._cached[1]

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Names only, so registering does not compute every budget's status.
        yield from self._families([])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            states = self._current()
        except Exception:  # a scrape must still answer; the error is in the log
            log.exception("budget metrics unavailable")
            states = []
        yield from self._families(states)

    @staticmethod
    def _families(states: list[dict]) -> Iterator[GaugeMetricFamily]:
        amount = GaugeMetricFamily("finopti_budget_amount", "Monthly amount of a budget.",
                                   labels=["budget", "currency"])
        spend = GaugeMetricFamily("finopti_budget_spend", "Spend this month counted against a budget: actual "
                                  "month to date, or the month-end forecast.", labels=["budget", "basis", "currency"])
        thresholds = GaugeMetricFamily("finopti_budget_threshold_ratio", "A budget's alert threshold as a share "
                                       "of its amount.", labels=["budget", "basis", "threshold"])
        probability = GaugeMetricFamily("finopti_budget_exceed_probability", "Chance that this month ends over "
                                        "the budget, from the forecast.", labels=["budget"])
        for s in states:
            amount.add_metric([s["name"], s["currency"]], s["amount"])
            spend.add_metric([s["name"], "actual", s["currency"]], s["actual"])
            spend.add_metric([s["name"], "forecast", s["currency"]], s["forecast"])
            probability.add_metric([s["name"]], s["exceed_probability"])
            for rule in s["thresholds"]:
                thresholds.add_metric([s["name"], rule["basis"], f"{rule['percent']:g}"], rule["percent"] / 100)
        yield from (amount, spend, thresholds, probability)


_registered: BudgetCollector | None = None


def register(collector: BudgetCollector) -> None:
    """Put `collector` on the process's default registry (which /metrics serves), replacing an earlier one."""
    from prometheus_client import REGISTRY

    global _registered
    if _registered is not None:
        REGISTRY.unregister(_registered)
    REGISTRY.register(collector)
    _registered = collector
