"""gcloud-tools' budget metrics: scrapes never compute (a scrape runs on the server's event loop), a background
thread does, at most every ttl seconds and at once after a change."""

import threading
import time

from prometheus_client import CollectorRegistry, generate_latest

from finopti.services.gcloud_tools.budget_metrics import BudgetCollector

STATE = {"name": "team-a", "currency": "USD", "amount": 1000.0, "actual": 600.0, "forecast": 1150.0,
         "exceed_probability": 0.9, "thresholds": [{"percent": 50.0, "basis": "actual"},
                                                    {"percent": 100.0, "basis": "forecast"}]}


class States:
    def __init__(self, answers):
        self.answers = list(answers)
        self.threads: list[str] = []
        self.release = threading.Event()
        self.release.set()

    def __call__(self) -> list[dict]:
        self.threads.append(threading.current_thread().name)
        self.release.wait(10)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


def scrape(collector: BudgetCollector) -> str:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry).decode()


def test_a_scrape_serves_what_the_background_thread_computed():
    states = States([[STATE]])
    collector = BudgetCollector(states, ttl=3600)
    states.release.clear()
    first = scrape(collector)  # computing has started elsewhere; this scrape does not wait for it
    assert "finopti_budget_amount{" not in first
    states.release.set()
    assert collector.wait_fresh(10)
    text = scrape(collector)
    assert 'finopti_budget_amount{budget="team-a",currency="USD"} 1000.0' in text
    assert 'finopti_budget_spend{basis="forecast",budget="team-a",currency="USD"} 1150.0' in text
    assert 'finopti_budget_threshold_ratio{basis="actual",budget="team-a",threshold="50"} 0.5' in text
    assert states.threads and all(name == "budget-metrics" for name in states.threads)
    scrape(collector)
    assert len(states.threads) == 1  # within the ttl nothing is recomputed


def test_a_change_is_exported_at_once():
    states = States([[STATE], []])
    collector = BudgetCollector(states, ttl=3600)
    assert collector.wait_fresh(10) and "team-a" in scrape(collector)
    collector.invalidate()  # the budget was deleted
    assert collector.wait_fresh(10) and "team-a" not in scrape(collector)


def test_a_failed_computation_keeps_the_last_states():
    states = States([[STATE], RuntimeError("billing export unavailable")])
    collector = BudgetCollector(states, ttl=3600)
    assert collector.wait_fresh(10)
    collector.invalidate()
    deadline = time.monotonic() + 10
    while len(states.threads) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(states.threads) >= 2
    assert 'finopti_budget_amount{budget="team-a",currency="USD"} 1000.0' in scrape(collector)
