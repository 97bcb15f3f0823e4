"""gcloud-agent: compute, cost and billing actions, each served by a tool of gcloud-tools over MCP."""

from typing import Any

from fastapi import FastAPI

from finopti.services.agent import Action, create_agent_app
from finopti.services.common import ServiceSettings
from finopti.services.gcloud_agent.finops_actions import FINOPS_ACTIONS


def _count(noun: str):
    def summarize(data: Any, args: dict) -> str:
        where = " ".join(f"{k}={v}" for k, v in args.items() if not isinstance(v, bool) or v)
        return f"{len(data)} {noun}" + (f" ({where})" if where else "")

    return summarize


def _message(data: Any, _: dict) -> str:
    return data.get("message") or f"{data.get('name')}: {data.get('state')}"


def _describe(data: Any, _: dict) -> str:
    return f"{data['name']} is {data['state']}, {data['machine_type']} in {data['zone']}"


def _idle(data: Any, args: dict) -> str:
    saving = sum(i.get("monthly_saving_usd", 0) for i in data)
    return (f"{len(data)} idle instances (avg CPU under {args.get('cpu_threshold', 5.0)}% over "
            f"{args.get('days', 7)} days); stopping them saves ${saving:,.2f}/month")


def _rightsizing(data: Any, _: dict) -> str:
    saving = sum(max(r.get("monthly_saving_usd", 0), 0) for r in data)
    return f"{len(data)} rightsizing recommendations; downsizing saves ${saving:,.2f}/month"


def _cost(data: Any, _: dict) -> str:
    totals = data["totals"]
    return (f"estimated monthly cost ${totals['total']:,.2f} (compute ${totals['compute']:,.2f}, "
            f"disks ${totals['disks']:,.2f}, storage ${totals['storage']:,.2f})")


ACTIONS = {
    "list_instances": Action("list_instances", "List VM instances (zone, state, label filters)", _count("instances")),
    "describe_instance": Action("describe_instance", "Describe one instance", _describe),
    "start_instance": Action("start_instance", "Start an instance", _message),
    "stop_instance": Action("stop_instance", "Stop an instance", _message),
    "resize_instance": Action("resize_instance", "Change a stopped instance's machine type", _message),
    "delete_instance": Action("delete_instance", "Delete an instance", _message),
    "list_disks": Action("list_disks", "List disks (optionally only unattached ones)", _count("disks")),
    "list_buckets": Action("list_buckets", "List storage buckets", _count("buckets")),
    "find_idle_instances": Action("find_idle_instances", "Find idle running instances", _idle),
    "rightsizing_recommendations": Action(
        "rightsizing_recommendations", "Recommend machine type changes", _rightsizing
    ),
    "estimate_monthly_cost": Action("estimate_monthly_cost", "Estimate the monthly bill", _cost),
    **FINOPS_ACTIONS,
}


def create_app(settings: ServiceSettings) -> FastAPI:
    return create_agent_app(settings, "gcloud-agent", "gcloud-tools", ACTIONS)
