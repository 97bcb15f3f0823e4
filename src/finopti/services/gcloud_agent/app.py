"""gcloud-agent: compute, cost and billing actions, each served by a tool of gcloud-tools over MCP."""

from typing import Any

from fastapi import FastAPI

from finopti.services.agent import Action, create_agent_app, plural
from finopti.services.common import ServiceSettings
from finopti.services.gcloud_agent.finops_actions import FINOPS_ACTIONS
from finopti.services.views import bar, col, detail, stat, table


def _filters(args: dict) -> str:
    """The arguments of a listing in words: "running, in us-central1-a, labelled team=data"."""
    words = []
    if args.get("state"):
        words.append(str(args["state"]).lower())
    if args.get("zone"):
        words.append(f"in {args['zone']}")
    if args.get("label"):
        words.append(f"labelled {args['label']}")
    return ", ".join(words)


def _count(noun: str):
    def summarize(data: Any, args: dict) -> str:
        kind = f"unattached {noun}" if args.get("unattached_only") else noun
        where = _filters(args)
        return plural(len(data), kind) + (f" ({where})" if where else "")

    return summarize


def _message(data: Any, _: dict) -> str:
    return data.get("message") or f"{data.get('name')}: {data.get('state')}"


def _describe(data: Any, _: dict) -> str:
    return f"{data['name']} is {data['state']}, {data['machine_type']} in {data['zone']}"


def _idle(data: Any, args: dict) -> str:
    saving = sum(i.get("monthly_saving_usd", 0) for i in data)
    return (f"{plural(len(data), 'idle instance')} (average CPU under {args.get('cpu_threshold', 5.0):g}% over "
            f"{plural(args.get('days', 7), 'day')}); stopping them saves ${saving:,.2f}/month")


def _rightsizing(data: Any, _: dict) -> str:
    saving = sum(max(r.get("monthly_saving_usd", 0), 0) for r in data)
    return f"{plural(len(data), 'rightsizing recommendation')}; downsizing saves ${saving:,.2f}/month"


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


INSTANCE_COLUMNS = [col("name"), col("zone"), col("machine_type", "Machine type"), col("state"), col("labels"),
                    col("created", unit="datetime")]
MONEY_SORT = ("monthly_cost_usd", True)


def _cost_view(data: Any, args: dict) -> dict:
    group = {"instance": "Instance", "label": str(args.get("label_key") or data.get("label_key") or "label").title()}
    stats = [stat("Total per month", "totals.total", "USD"), stat("Compute", "totals.compute", "USD"),
             stat("Disks", "totals.disks", "USD"), stat("Storage", "totals.storage", "USD")]
    if not data.get("groups"):
        return detail(stats=stats)
    return bar(rows="groups", x="key", y=["compute", "disks", "storage"], unit="USD", stacked=True,
               columns=[col("key", group.get(data.get("group_by"), "Group")), col("compute", unit="USD"),
                        col("disks", unit="USD"), col("storage", unit="USD"), col("total", unit="USD")],
               totals=True, sort=("total", True), stats=stats)


def _explain_cost(data: Any, _: dict) -> str:
    return (f"Monthly estimate over {data.get('hours_per_month', 730)} hours from the sandbox price table: "
            f"{data.get('note', '')}.").replace("..", ".")


ACTIONS = {
    "inventory": Action("inventory", "Names of every instance, disk, bucket, zone and machine type", _inventory),
    "list_instances": Action("list_instances", "List VM instances (zone, state, label filters)", _count("instance"),
                             view=table(columns=INSTANCE_COLUMNS, sort=("name", False))),
    "describe_instance": Action("describe_instance", "Describe one instance", _describe, view=detail()),
    "start_instance": Action("start_instance", "Start an instance", _message, view=detail(), mutates=True),
    "stop_instance": Action("stop_instance", "Stop an instance", _message, view=detail(), mutates=True),
    "resize_instance": Action("resize_instance", "Change a stopped instance's machine type", _message,
                              view=detail(), mutates=True),
    "delete_instance": Action("delete_instance", "Delete an instance", _message, view=detail(), mutates=True),
    # Planning is its own action to the gateway's policy: a role may see what a change would do without
    # being allowed to make it.
    **{f"plan_{change}": Action("plan_change", f"What {change} would do (nothing changes)", _plan,
                                fixed={"action": change})
       for change in ("start_instance", "stop_instance", "resize_instance", "delete_instance")},
    "list_disks": Action("list_disks", "List disks (optionally only unattached ones)", _count("disk"),
                         view=table(columns=[col("name"), col("zone"), col("type"), col("size_gb", "Size", "GB"),
                                             col("attached_to", "Attached to"), col("labels"),
                                             col("created", unit="datetime"),
                                             col("monthly_cost_usd", "Monthly cost", "USD")],
                                    totals=True, sort=MONEY_SORT)),
    "list_buckets": Action("list_buckets", "List storage buckets", _count("bucket"),
                           view=table(columns=[col("name"), col("location"), col("storage_class", "Storage class"),
                                               col("size_gb", "Size", "GB"), col("labels"),
                                               col("created", unit="datetime"),
                                               col("monthly_cost_usd", "Monthly cost", "USD")],
                                      totals=True, sort=MONEY_SORT)),
    "find_idle_instances": Action(
        "find_idle_instances", "Find idle running instances", _idle,
        view=bar(x="name", y=["monthly_saving_usd"], unit="USD", labels={"monthly_saving_usd": "Monthly saving"},
                 columns=[col("name"), col("zone"), col("machine_type", "Machine type"),
                          col("avg_cpu", "Average CPU", "%"), col("max_cpu", "Max CPU", "%"),
                          col("hourly_price_usd", "Hourly price", "USD"),
                          col("monthly_saving_usd", "Monthly saving", "USD"), col("labels")],
                 totals=["monthly_saving_usd"], sort=("monthly_saving_usd", True)),
        explain=lambda data, args: (
            f"Running instances whose average CPU over the last {plural(args.get('days', 7), 'day')} is under "
            f"{args.get('cpu_threshold', 5.0):g}%; stopping one saves its compute price for 730 hours "
            "(disks are still billed)."),
    ),
    "rightsizing_recommendations": Action(
        "rightsizing_recommendations", "Recommend machine type changes", _rightsizing,
        view=bar(x="name", y=["monthly_saving_usd"], unit="USD", labels={"monthly_saving_usd": "Monthly saving"},
                 columns=[col("name"), col("machine_type", "Machine type"),
                          col("recommended_machine_type", "Recommended"), col("action"),
                          col("cpu_p95", "CPU p95", "%"), col("memory_p95", "Memory p95", "%"),
                          col("current_monthly_usd", "Current", "USD"),
                          col("recommended_monthly_usd", "Recommended cost", "USD"),
                          col("monthly_saving_usd", "Monthly saving", "USD"), col("zone"), col("reason")],
                 totals=["current_monthly_usd", "recommended_monthly_usd", "monthly_saving_usd"],
                 sort=("monthly_saving_usd", True)),
    ),
    "estimate_monthly_cost": Action("estimate_monthly_cost", "Estimate the monthly bill", _cost,
                                    view=_cost_view, explain=_explain_cost),
    **FINOPS_ACTIONS,
}


def create_app(settings: ServiceSettings) -> FastAPI:
    return create_agent_app(settings, "gcloud-agent", "gcloud-tools", ACTIONS)
