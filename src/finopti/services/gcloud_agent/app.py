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


def _money(value: float) -> str:
    return f"${value:,.2f}"


def _cost(data: Any, args: dict) -> str:
    totals = data["totals"]
    parts = (f"compute {_money(totals['compute'])}, disks {_money(totals['disks'])}, "
             f"storage {_money(totals['storage'])}")
    if data.get("instance"):
        return f"{data['instance']} costs {_money(totals['total'])} a month ({parts})"
    labels = data.get("labels") or {}
    subject = "resources labelled " + ", ".join(f"{k}={v}" for k, v in labels.items()) if labels else "the project"
    if data.get("group_by") == "label" and data.get("groups"):
        shares = ", ".join(f"{g['key']} {_money(g['total'])}" for g in data["groups"][:6])
        return f"monthly cost of {subject} by {data['label_key']}: {shares} (total {_money(totals['total'])})"
    if data.get("group_by") == "instance" and data.get("groups"):
        top = ", ".join(f"{g['key']} {_money(g['total'])}" for g in data["groups"][:3])
        return f"monthly cost of {subject} {_money(totals['total'])}; the most expensive: {top}"
    return f"estimated monthly cost of {subject} {_money(totals['total'])} ({parts})"


def _plan(data: Any, _: dict) -> str:
    if data.get("blocked"):
        return f"cannot {data['action'].replace('_instance', '')} {data['name']}: {data['blocked']}"
    if not data.get("changed"):
        now = data["before"]["machine_type"] if data["action"] == "resize_instance" else data["before"]["state"]
        return f"nothing to change: {data['name']} already is {now}"
    undo = "cannot be undone" if not data.get("reversible") else f"undo with “{data['undo']}”"
    delta = data.get("monthly_cost_change_usd", 0.0)
    bill = (f"the monthly bill goes {'down' if delta < 0 else 'up'} by {_money(abs(delta))}" if delta
            else "no change to the monthly bill now")
    return f"{data['action'].replace('_instance', '')} {data['name']}: {'; '.join(data['changes'])}; {bill}; {undo}"


def _inventory(data: Any, _: dict) -> str:
    return (f"{len(data['instances'])} instances, {len(data['disks'])} disks, {len(data['buckets'])} buckets "
            f"in {len(data['zones'])} zones")


ACTIONS = {
    "inventory": Action("inventory", "Names of every instance, disk, bucket, zone and machine type", _inventory),
    "list_instances": Action("list_instances", "List VM instances (zone, state, label filters)", _count("instances")),
    "describe_instance": Action("describe_instance", "Describe one instance", _describe),
    "start_instance": Action("start_instance", "Start an instance", _message, mutates=True),
    "stop_instance": Action("stop_instance", "Stop an instance", _message, mutates=True),
    "resize_instance": Action("resize_instance", "Change a stopped instance's machine type", _message,
                              mutates=True),
    "delete_instance": Action("delete_instance", "Delete an instance", _message, mutates=True),
    # Planning is its own action to the gateway's policy: a role may see what a change would do without
    # being allowed to make it.
    **{f"plan_{change}": Action("plan_change", f"What {change} would do (nothing changes)", _plan,
                                fixed={"action": change})
       for change in ("start_instance", "stop_instance", "resize_instance", "delete_instance")},
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
