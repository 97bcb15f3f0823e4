"""The FinOps backend's speed on the seeded sandbox: seeding the billing history, and each billing analysis
in-process (what a gcloud-tools call spends before MCP and the mesh), median and p95 over repeated calls.

    .venv/bin/python -m benchmarks.bench_finops [--runs 20]

Also prints the share of a budget-metrics scrape (every budget's status) against the scrape interval of the
local Prometheus (5 s), since gcloud-tools computes it when scraped (cached 30 s)."""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from finopti.cloud import SandboxCloud
from finopti.cloud.seed import build_plan

CALLS = {
    "cost_report last_30_days by service": lambda c: c.cost_report(),
    "cost_report last_month by team": lambda c: c.cost_report("last_month", group_by="team"),
    "cost_report last_90_days by resource": lambda c: c.cost_report("last_90_days", group_by="resource"),
    "compare_costs last_week": lambda c: c.compare_costs(),
    "forecast_costs (all spend)": lambda c: c.forecast_costs(),
    "forecast_costs team=payments": lambda c: c.forecast_costs(team="payments"),
    "detect_cost_anomalies last_90_days": lambda c: c.detect_cost_anomalies("last_90_days"),
    "unlabeled_spend last_30_days": lambda c: c.unlabeled_spend(),
    "budget_status 5000 team=payments": lambda c: c.budget_status(amount=5000, team="payments"),
    "list_budgets (3 budgets)": lambda c: c.list_budgets(),
    "commitment_recommendations": lambda c: c.commitment_recommendations(),
    "find_unused_resources": lambda c: c.find_unused_resources(),
    "budget metrics scrape (3 budgets)": lambda c: c.budget_alert_states(),
}


def timed(fn, runs: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU milliseconds per call: on a shared machine the CPU time is the steadier figure."""
    wall, cpu = [], []
    for _ in range(runs):
        started, started_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.process_time() - started_cpu) * 1000)
    return sorted(wall), sorted(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    started = time.perf_counter()
    plan = build_plan()
    _ = plan.export_records
    planned = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        seeds = []
        for n in range(3):
            started = time.perf_counter()
            SandboxCloud(Path(tmp) / f"seed-{n}.db")
            seeds.append(time.perf_counter() - started)
        cloud = SandboxCloud(Path(tmp) / "seed-0.db")
        size = cloud.db_path.stat().st_size / 2**20
        print(f"billing history: {len(plan.export)} rows; plan built in {planned:.2f} s (once per process); "
              f"a fresh database {statistics.median(seeds):.2f} s median of 3 ({size:.1f} MiB)")
        print(f"{'call':<40} {'median ms':>10} {'p95 ms':>8} {'CPU ms':>8}")
        scrape = 0.0
        for name, call in CALLS.items():
            wall, cpu = timed(lambda call=call: call(cloud), args.runs)
            p95 = wall[max(0, int(0.95 * len(wall)) - 1)]
            print(f"{name:<40} {statistics.median(wall):>10.1f} {p95:>8.1f} {statistics.median(cpu):>8.1f}")
            if name.startswith("budget metrics"):
                scrape = statistics.median(cpu)
        print(f"budget metrics: {scrape:.0f} ms of CPU per computation, at most once per 30 s (cache): "
              f"{scrape / 30_000:.2%} of one core")


if __name__ == "__main__":
    main()
