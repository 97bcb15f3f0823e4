"""Resources billed for nothing: unattached disks, idle static IPs and old snapshots, with what they cost.

GCP's Recommender calls these idle disks, idle IP addresses and (in the FinOps hub) unused snapshots.
An address is idle when nothing uses it or the VM using it is stopped (GCP then bills it at the unused
rate); a snapshot is old when it is at least `min_age_days` old. The saving of deleting one is its monthly
cost; snapshots of disks that still exist keep their newer snapshots, so nothing here is the last copy
of live data unless `source_exists` is false.
"""

from __future__ import annotations

import json
import sqlite3

from .billing_catalog import IP_UNUSED_USD_PER_HOUR, SNAPSHOT_USD_PER_GB_MONTH, monthly
from .catalog import DAY, SANDBOX_NOW_TS, iso
from .store import Prices, disk_dict


def unused_resources(conn: sqlite3.Connection, prices: Prices, min_age_days: int) -> dict:
    disks = [disk_dict(row, prices) for row in conn.execute(
        "SELECT * FROM disks WHERE attached_to IS NULL ORDER BY name")]
    for disk in disks:
        disk["reason"] = "attached to no instance"
    addresses = []
    rows = conn.execute("SELECT a.*, i.state AS user_state FROM addresses a LEFT JOIN instances i ON i.name = a.user "
                        "ORDER BY a.name")
    for row in rows:
        if row["user"] and row["user_state"] == "RUNNING":
            continue
        reason = (f"its instance {row['user']} is {row['user_state']}" if row["user"] and row["user_state"]
                  else "reserved, used by nothing")
        addresses.append({"name": row["name"], "project": row["project"], "region": row["region"],
                          "address": row["address"], "user": row["user"], "labels": json.loads(row["labels"]),
                          "created": iso(row["created"]), "reason": reason,
                          "monthly_cost_usd": monthly(IP_UNUSED_USD_PER_HOUR)})
    cutoff = SANDBOX_NOW_TS - min_age_days * DAY
    existing = {r["name"] for r in conn.execute("SELECT name FROM disks")}
    snapshots = []
    for row in conn.execute("SELECT * FROM snapshots WHERE created <= ? ORDER BY created", (cutoff,)):
        age = (SANDBOX_NOW_TS - row["created"]) // DAY
        snapshots.append({"name": row["name"], "project": row["project"], "source_disk": row["source_disk"],
                          "source_exists": row["source_disk"] in existing, "size_gb": row["size_gb"],
                          "labels": json.loads(row["labels"]), "created": iso(row["created"]), "age_days": age,
                          "reason": f"{age} days old (at least {min_age_days})",
                          "monthly_cost_usd": round(row["size_gb"] * SNAPSHOT_USD_PER_GB_MONTH, 2)})
    kinds = {"unattached_disks": disks, "idle_addresses": addresses, "old_snapshots": snapshots}
    totals = {kind: round(sum(item["monthly_cost_usd"] for item in items), 2) for kind, items in kinds.items()}
    items = [{"kind": kind, "name": item["name"], "project": item.get("project"), "reason": item["reason"],
              "monthly_cost_usd": item["monthly_cost_usd"]} for kind, group in kinds.items() for item in group]
    items.sort(key=lambda i: (-i["monthly_cost_usd"], i["kind"], i["name"]))
    return {
        **kinds,
        "items": items,
        "monthly_cost_by_kind": totals,
        "monthly_saving_usd": round(sum(totals.values()), 2),
        "currency": "USD",
        "explanation": {
            "data": "the inventory (disks, static addresses, snapshots) and the price table",
            "period": f"as of {iso(SANDBOX_NOW_TS)}; snapshots taken on or before {iso(cutoff)}",
            "filter": "disks attached to nothing; addresses used by nothing or by a stopped VM; snapshots at "
                      f"least {min_age_days} days old",
            "method": "monthly cost = disk GB x its type's price, USD 0.01/hour x 730 for an idle address, stored "
                      f"GB x {SNAPSHOT_USD_PER_GB_MONTH} for a snapshot; the saving of deleting them is that cost",
        },
    }
