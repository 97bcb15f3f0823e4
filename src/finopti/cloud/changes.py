"""What a change to an instance would do, worked out without doing it: the plan a person confirms.

A plan says what changes (before and after), whether it can be undone and how, what it does to the monthly
bill, and whether it can be done at all now (`blocked`, with the reason the change itself would give).
`changed: false` means there is nothing to do (stopping a stopped instance)."""

from __future__ import annotations

import sqlite3

from .errors import InvalidArgument
from .store import Prices, get_instance, instance_summary

MUTATIONS = ("start_instance", "stop_instance", "resize_instance", "delete_instance")


def _disks(conn: sqlite3.Connection, prices: Prices, name: str) -> list[dict]:
    rows = conn.execute("SELECT * FROM disks WHERE attached_to = ? ORDER BY boot DESC, name", (name,))
    return [{"name": r["name"], "boot": bool(r["boot"]), "monthly_cost_usd": prices.monthly_disk(r["disk_type"],
                                                                                                   r["size_gb"])}
            for r in rows]


def _money(value: float) -> str:
    sign = "-" if value < 0 else "+"
    return f"{sign}${abs(value):,.2f}"


def plan_change(conn: sqlite3.Connection, prices: Prices, action: str, name: str,
                machine_type: str | None = None) -> dict:
    if action not in MUTATIONS:
        raise InvalidArgument(f"action must be one of {', '.join(MUTATIONS)}; got {action!r}.")
    row = get_instance(conn, name)
    before = instance_summary(row)
    running = row["state"] == "RUNNING"
    compute = prices.monthly_compute(row["machine_type"])
    disks = _disks(conn, prices, name)
    plan: dict = {"action": action, "name": name, "zone": row["zone"], "before": before, "blocked": None,
                  "changed": True, "disks": disks}
    if action in ("start_instance", "stop_instance"):
        target = "RUNNING" if action == "start_instance" else "TERMINATED"
        plan["after"] = {**before, "state": target}
        plan["changed"] = row["state"] != target
        delta = 0.0 if not plan["changed"] else (compute if target == "RUNNING" else -compute)
        plan["changes"] = [f"state {row['state']} → {target}"] if plan["changed"] else []
        plan["reversible"] = True
        plan["undo"] = f"{'stop' if target == 'RUNNING' else 'start'} instance {name}"
        plan["monthly_cost_change_usd"] = round(delta, 2)
        plan["cost_note"] = (f"compute {row['machine_type']} {_money(delta)}/month; disks are billed either way"
                             if plan["changed"] else "no change")
    elif action == "resize_instance":
        if not isinstance(machine_type, str) or machine_type not in prices.machine_types:
            raise InvalidArgument(f"unknown machine type {machine_type!r}; valid machine types: "
                                  f"{', '.join(prices.machine_types)}.")
        plan["after"] = {**before, "machine_type": machine_type}
        plan["changed"] = row["machine_type"] != machine_type
        per_month = round(prices.monthly_compute(machine_type) - compute, 2)
        plan["changes"] = [f"machine type {row['machine_type']} → {machine_type}"] if plan["changed"] else []
        plan["reversible"] = True
        plan["undo"] = f"resize instance {name} to {row['machine_type']}"
        # A resized instance is stopped (GCP resizes only TERMINATED ones): the bill moves once it runs again.
        plan["monthly_cost_change_usd"] = per_month if running else 0.0
        plan["monthly_cost_change_when_running_usd"] = per_month
        plan["cost_note"] = f"compute {_money(per_month)}/month while it runs"
        if running and plan["changed"]:
            plan["blocked"] = (f"instance {name} is RUNNING; stop it before changing its machine type "
                               "(GCP only resizes TERMINATED instances).")
    else:  # delete
        boot = [d for d in disks if d["boot"]]
        data = [d for d in disks if not d["boot"]]
        plan["after"] = None
        plan["changes"] = ["instance deleted", *(f"boot disk {d['name']} deleted" for d in boot),
                           *(f"data disk {d['name']} kept, unattached (still billed)" for d in data)]
        plan["reversible"] = False
        plan["undo"] = None
        saved = (compute if running else 0.0) + sum(d["monthly_cost_usd"] for d in boot)
        plan["monthly_cost_change_usd"] = round(-saved, 2)
        plan["cost_note"] = (f"compute {_money(-compute if running else 0.0)}/month, boot disk "
                             f"{_money(-sum(d['monthly_cost_usd'] for d in boot))}/month; data disks stay billed")
    return plan
