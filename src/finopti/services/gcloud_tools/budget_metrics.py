"""Budgets as Prometheus metrics, so threshold alerts are Prometheus alerts (rules in observability.prometheus).

Exported on the tool server's /metrics. A budget's status needs a forecast (about 50 ms of CPU each), so
a scrape serves the last computed states and a background thread recomputes them at most every `ttl`
seconds (the billing export changes at most daily) and at once after a budget is created or deleted.
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
    """Serves the last computed budget states; computing them happens in a background thread (a scrape runs
    on the server's event loop and must stay quick), at most every `ttl` seconds and at once after a change."""

    def __init__(self, states: Callable[[], list[dict]], ttl: float = 30.0) -> None:
        self._states = states
        self._ttl = ttl
        self._lock = threading.Lock()
        self._snapshot: list[dict] = []
        self._computed_at: float | None = None
        self._refreshing = False
        self._stale = False  # a change arrived while a refresh ran: refresh again after it

    def invalidate(self) -> None:
        """A budget was created or deleted: recompute now rather than at the next expiry."""
        with self._lock:
            self._computed_at = None
            self._stale = self._refreshing
        self._refresh_in_background()

    def _refresh_in_background(self) -> None:
        with self._lock:
            due = self._computed_at is None or time.monotonic() - self._computed_at > self._ttl
            if self._refreshing or not due:
                return
            self._refreshing = True
        threading.Thread(target=self._refresh, name="budget-metrics", daemon=True).start()

    def _refresh(self) -> None:
        try:
            states = self._states()
        except Exception:  # keep serving the last states; the error is in the log
            log.exception("budget metrics unavailable")
            states = None
        with self._lock:
            if states is not None:
                self._snapshot, self._computed_at = states, time.monotonic()
            again, self._stale, self._refreshing = self._stale, False, False
        if again:
            self.invalidate()

    def wait_fresh(self, timeout: float) -> bool:
        """For tests and start-up: wait until a computation has finished (True) or `timeout` passes."""
        deadline = time.monotonic() + timeout
        self._refresh_in_background()
        while time.monotonic() < deadline:
            with self._lock:
                if self._computed_at is not None and not self._refreshing:
                    return True
            time.sleep(0.05)
        return False

    def describe(self) -> Iterator[GaugeMetricFamily]:
        # Names only, so registering does not compute every budget's status.
        yield from self._families([])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        self._refresh_in_background()
        with self._lock:
            states = list(self._snapshot)
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
