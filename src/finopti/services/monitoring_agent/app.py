"""monitoring-agent: utilization questions, served by monitoring-tools over MCP."""

from typing import Any

from fastapi import FastAPI

from finopti.services.agent import Action, create_agent_app, plural
from finopti.services.common import ServiceSettings
from finopti.services.views import col, stat, table, timeseries

METRIC_LABELS = {"cpu": "CPU", "memory": "memory"}


def _series(data: Any, _: dict) -> str:
    metric = METRIC_LABELS.get(data["metric"], data["metric"])
    return (f"{metric} utilization of {data['instance']} over {plural(data['days'], 'day')}: "
            f"average {data['avg']}%, p95 {data['p95']}%, max {data['max']}%")


def _series_view(data: Any, _: dict) -> dict:
    metric = METRIC_LABELS.get(data.get("metric"), data.get("metric", "value"))
    return timeseries(rows="points", x="ts", y=["value"], unit="%", labels={"value": f"{metric} %"},
                      columns=[col("ts", "Time", "datetime"), col("value", f"{metric} %".capitalize(), "%")],
                      stats=[stat("Average", "avg", "%"), stat("p95", "p95", "%"), stat("Max", "max", "%")])


def _explain_series(data: Any, _: dict) -> str:
    step = data.get("step_hours", 1)
    return (f"{plural(len(data.get('points', [])), 'point')} of the hourly average, one every "
            f"{plural(step, 'hour')}, from {data.get('start')} to {data.get('end')}; p95 is the nearest-rank 95th "
            "percentile of those points.")


def _metrics(data: Any, _: dict) -> str:
    return "available metrics: " + ", ".join(m["name"] for m in data)


def _inventory(data: Any, _: dict) -> str:
    return f"{len(data['instances'])} instances in {len(data['zones'])} zones"


ACTIONS = {
    "inventory": Action("inventory", "Names of every instance, disk, bucket, zone and machine type", _inventory),
    "query_time_series": Action("query_time_series", "CPU or memory utilization of an instance", _series,
                                view=_series_view, explain=_explain_series),
    "list_metrics": Action("list_metrics", "List the metrics that can be queried", _metrics,
                           view=table(columns=[col("name"), col("unit"), col("description"),
                                               col("gcp_metric", "Cloud Monitoring metric")])),
}


def create_app(settings: ServiceSettings) -> FastAPI:
    return create_agent_app(settings, "monitoring-agent", "monitoring-tools", ACTIONS)
