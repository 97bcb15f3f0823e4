"""monitoring-agent: utilization questions, served by monitoring-tools over MCP."""

from typing import Any

from fastapi import FastAPI

from finopti.services.agent import Action, create_agent_app
from finopti.services.common import ServiceSettings


def _series(data: Any, _: dict) -> str:
    return (f"{data['metric']} of {data['instance']} over {data['days']} day(s): "
            f"avg {data['avg']}%, p95 {data['p95']}%, max {data['max']}%")


def _metrics(data: Any, _: dict) -> str:
    return "available metrics: " + ", ".join(m["name"] for m in data)


def _inventory(data: Any, _: dict) -> str:
    return f"{len(data['instances'])} instances in {len(data['zones'])} zones"


ACTIONS = {
    "inventory": Action("inventory", "Names of every instance, disk, bucket, zone and machine type", _inventory),
    "query_time_series": Action("query_time_series", "CPU or memory utilization of an instance", _series),
    "list_metrics": Action("list_metrics", "List the metrics that can be queried", _metrics),
}


def create_app(settings: ServiceSettings) -> FastAPI:
    return create_agent_app(settings, "monitoring-agent", "monitoring-tools", ACTIONS)
