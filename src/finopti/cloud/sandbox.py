"""SandboxCloud: a small, offline, GCP-like cloud kept in one SQLite file.

The tool servers call these methods instead of real GCP APIs. Every method returns
plain JSON-serialisable data and raises NotFound / InvalidArgument (both
SandboxError) with a message that can be shown as-is.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping
from pathlib import Path

from . import analysis, changes, instance_logs
from .catalog import HOURS_PER_MONTH, METRICS, SANDBOX_NOW_TS, ZONES, iso
from .errors import InvalidArgument, SandboxError
from .sandbox_finops import SandboxFinOps
from .seed import SCHEMA, SCHEMA_VERSION, build_plan, write_plan
from .store import (
    bucket_dict,
    disk_dict,
    get_instance,
    instance_summary,
    load_prices,
    not_found,
    transaction,
)
from .validation import (
    check_choice,
    check_days,
    check_int,
    check_name,
    check_percent,
    check_state,
    check_zone,
    labels_match,
    parse_labels,
)

METRIC_NAMES = tuple(m["name"] for m in METRICS)
GROUP_BY = ("instance", "label", "total")


def _scope(zone: str | None, label: str | None) -> analysis.Scope:
    return analysis.Scope(
        zone=check_zone(zone) if zone is not None else None,
        labels=parse_labels(label) if label is not None else None,
    )


def default_db_path(env: Mapping[str, str] = os.environ) -> Path:
    """Where the services keep the sandbox: $FINOPTI_HOME/cloud/sandbox.db (FINOPTI_HOME defaults to ./.finopti)."""
    from finopti.paths import StateDir

    return StateDir(Path(env.get("FINOPTI_HOME") or ".finopti")).sandbox_db


class SandboxCloud(SandboxFinOps):
    """One sandbox billing account (three projects) stored at `db_path`; the file is created and seeded on
    first use.

    Safe to share between threads: every call opens its own short-lived connection.
    """

    def __init__(self, db_path: Path | str) -> None:
        self.db_path = Path(db_path)
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self._open_or_seed()

    # -- setup -----------------------------------------------------------------------------------

    def _open_or_seed(self) -> None:
        try:
            self._create_and_seed()
        except sqlite3.DatabaseError as exc:  # e.g. some other file at that path
            raise SandboxError(
                f"{self.db_path} is not a usable sandbox database ({exc}); delete it to get a fresh seed."
            ) from exc

    def _create_and_seed(self) -> None:
        conn = sqlite3.connect(self.db_path, timeout=30)
        try:
            conn.execute("PRAGMA journal_mode=WAL")  # persistent: readers never block the writer
        finally:
            conn.close()
        # Under the write lock, so two processes opening a fresh file seed it only once.
        with transaction(self.db_path, write=True) as conn:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            if conn.execute("SELECT 1 FROM meta WHERE key = 'seeded'").fetchone() is None:
                write_plan(conn, build_plan())
            instance_logs.ensure(conn, build_plan)
            version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if version is None or version[0] != SCHEMA_VERSION:
                raise SandboxError(
                    f"{self.db_path} was seeded by an older sandbox (schema {version[0] if version else '?'}, "
                    f"this one is {SCHEMA_VERSION}); delete it (and any -wal/-shm next to it) to re-seed."
                )

    # -- catalogue -------------------------------------------------------------------------------

    def list_zones(self) -> list[dict]:
        with transaction(self.db_path) as conn:
            counts = dict(conn.execute("SELECT zone, COUNT(*) FROM instances GROUP BY zone").fetchall())
        return [
            {"name": zone, "region": region, "instances": counts.get(zone, 0)}
            for zone, region in ZONES.items()
        ]

    def list_machine_types(self) -> list[dict]:
        with transaction(self.db_path) as conn:
            prices = load_prices(conn)
        return [
            {
                "name": m.name,
                "series": m.series,
                "downsize_to": m.smaller,
                "upsize_to": m.larger,
                "vcpus": m.vcpus,
                "memory_gb": m.memory_gb,
                "hourly_usd": m.hourly_usd,
                "monthly_usd": prices.monthly_compute(m.name),
            }
            for m in prices.machine_types.values()
        ]

    def price_table(self) -> dict:
        """Every price the sandbox charges; the basis of all cost figures."""
        with transaction(self.db_path) as conn:
            prices = load_prices(conn)
        return {
            "currency": "USD",
            "hours_per_month": HOURS_PER_MONTH,
            "machine_types_per_hour": {m.name: m.hourly_usd for m in prices.machine_types.values()},
            "disks_per_gb_month": dict(prices.disk_per_gb_month),
            "storage_per_gb_month": dict(prices.storage_per_gb_month),
        }

    def list_metrics(self) -> list[dict]:
        return [dict(m) for m in METRICS]

    # -- instances -------------------------------------------------------------------------------

    def inventory(self) -> dict:
        """The names of everything in the project, for understanding what people type (no prices, no metrics)."""
        with transaction(self.db_path) as conn:
            instances = [instance_summary(row) for row in conn.execute("SELECT * FROM instances ORDER BY name")]
            disks = [
                {"name": r["name"], "zone": r["zone"], "attached_to": r["attached_to"]}
                for r in conn.execute("SELECT name, zone, attached_to FROM disks ORDER BY name")
            ]
            buckets = [
                {"name": r["name"], "location": r["location"]}
                for r in conn.execute("SELECT name, location FROM buckets ORDER BY name")
            ]
            prices = load_prices(conn)
            projects = [r[0] for r in conn.execute(
                "SELECT project FROM instances UNION SELECT project FROM disks UNION SELECT project FROM buckets "
                "ORDER BY 1")]
        return {
            "instances": [{k: i[k] for k in ("name", "zone", "machine_type", "state", "labels")} for i in instances],
            "disks": disks,
            "buckets": buckets,
            "zones": [{"name": zone, "region": region} for zone, region in ZONES.items()],
            "machine_types": [
                {"name": m.name, "downsize_to": m.smaller, "upsize_to": m.larger}
                for m in prices.machine_types.values()
            ],
            "projects": projects,
        }

    def list_instances(
        self,
        zone: str | None = None,
        state: str | None = None,
        label: str | None = None,
        machine_type: str | None = None,
    ) -> list[dict]:
        """`label` is 'key=value' or several pairs joined by commas, all of which must hold."""
        where, args = [], []
        if zone is not None:
            where.append("zone = ?")
            args.append(check_zone(zone))
        if state is not None:
            where.append("state = ?")
            args.append(check_state(state))
        if machine_type is not None:
            where.append("machine_type = ?")
            args.append(check_name("machine_type", machine_type))
        wanted = parse_labels(label) if label is not None else None
        sql = (
            "SELECT * FROM instances" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY name"
        )
        with transaction(self.db_path) as conn:
            rows = conn.execute(sql, args).fetchall()
        return [i for i in (instance_summary(row) for row in rows) if labels_match(i["labels"], wanted)]

    def describe_instance(self, name: str) -> dict:
        name = check_name("instance name", name)
        with transaction(self.db_path) as conn:
            row = get_instance(conn, name)
            prices = load_prices(conn)
            disks = conn.execute(
                "SELECT * FROM disks WHERE attached_to = ? ORDER BY boot DESC, name", (name,)
            )
            disk_list = [disk_dict(d, prices) for d in disks]
        machine = prices.machine_types[row["machine_type"]]
        running = row["state"] == "RUNNING"
        return {
            **instance_summary(row),
            "region": ZONES[row["zone"]],
            "vcpus": machine.vcpus,
            "memory_gb": machine.memory_gb,
            "hourly_price_usd": machine.hourly_usd,
            "monthly_compute_usd": prices.monthly_compute(machine.name) if running else 0.0,
            "monthly_disks_usd": round(sum(d["monthly_cost_usd"] for d in disk_list), 2),
            "disks": disk_list,
            "last_start": iso(row["last_start"]),
            "last_stop": iso(row["last_stop"]),
            "last_resize": iso(row["last_resize"]),
        }

    def start_instance(self, name: str) -> dict:
        return self._set_state(check_name("instance name", name), "RUNNING")

    def stop_instance(self, name: str) -> dict:
        return self._set_state(check_name("instance name", name), "TERMINATED")

    def _set_state(self, name: str, target: str) -> dict:
        with transaction(self.db_path, write=True) as conn:
            row = get_instance(conn, name)
            previous = row["state"]
            if previous != target:
                column = "last_start" if target == "RUNNING" else "last_stop"
                conn.execute(
                    f"UPDATE instances SET state = ?, {column} = ? WHERE name = ?",
                    (target, SANDBOX_NOW_TS, name),
                )
        verb = "started" if target == "RUNNING" else "stopped"
        changed = previous != target
        message = (
            f"instance {name} {verb}" if changed else f"instance {name} was already {target}; nothing to do"
        )
        before = instance_summary(row)
        return {
            "name": name,
            "zone": row["zone"],
            "previous_state": previous,
            "state": target,
            "changed": changed,
            "message": message,
            "before": before,
            "after": {**before, "state": target},
        }

    def resize_instance(self, name: str, machine_type: str) -> dict:
        name = check_name("instance name", name)
        with transaction(self.db_path, write=True) as conn:
            row = get_instance(conn, name)
            prices = load_prices(conn)
            if not isinstance(machine_type, str) or machine_type not in prices.machine_types:
                raise InvalidArgument(
                    f"unknown machine type {machine_type!r}; valid machine types: "
                    f"{', '.join(prices.machine_types)}."
                )
            if row["state"] != "TERMINATED":
                raise InvalidArgument(
                    f"instance {name} is {row['state']}; stop it before changing its machine "
                    "type (GCP only resizes TERMINATED instances)."
                )
            previous = row["machine_type"]
            if previous != machine_type:
                conn.execute(
                    "UPDATE instances SET machine_type = ?, last_resize = ? WHERE name = ?",
                    (machine_type, SANDBOX_NOW_TS, name),
                )
        changed = previous != machine_type
        before = instance_summary(row)
        return {
            "name": name,
            "zone": row["zone"],
            "before": before,
            "after": {**before, "machine_type": machine_type},
            "previous_machine_type": previous,
            "machine_type": machine_type,
            "changed": changed,
            "monthly_compute_change_usd": round(
                prices.monthly_compute(machine_type) - prices.monthly_compute(previous), 2
            ),
            "message": f"instance {name} resized from {previous} to {machine_type}"
            if changed
            else f"instance {name} already is {machine_type}; nothing to do",
        }

    def delete_instance(self, name: str) -> dict:
        name = check_name("instance name", name)
        with transaction(self.db_path, write=True) as conn:
            row = get_instance(conn, name)
            disks = conn.execute(
                "SELECT name, boot FROM disks WHERE attached_to = ? ORDER BY name", (name,)
            ).fetchall()
            boot = [d["name"] for d in disks if d["boot"]]
            detached = [d["name"] for d in disks if not d["boot"]]
            # Like GCP's default auto-delete: the boot disk goes, data disks stay (now unattached).
            conn.execute("DELETE FROM disks WHERE attached_to = ? AND boot = 1", (name,))
            conn.execute("UPDATE disks SET attached_to = NULL WHERE attached_to = ?", (name,))
            conn.execute("DELETE FROM samples WHERE instance = ?", (name,))
            conn.execute("UPDATE addresses SET user = NULL WHERE user = ?", (name,))
            conn.execute("DELETE FROM instances WHERE name = ?", (name,))
        unattached = f"{len(detached)} data disk{'' if len(detached) == 1 else 's'} now unattached"
        return {
            "name": name,
            "zone": row["zone"],
            "deleted": True,
            "deleted_disks": boot,
            "detached_disks": detached,
            "before": instance_summary(row),
            "after": None,
            "message": f"deleted {name} and its boot disk; {unattached}",
        }

    def query_instance_logs(
        self,
        instance: str | None = None,
        zone: str | None = None,
        label: str | None = None,
        min_severity: str | None = None,
        window: str = "24h",
        text: str | None = None,
        limit: int = 100,
    ) -> dict:
        """The instances' log entries (Cloud Logging's shape) in a window before SANDBOX_NOW, newest first, with
        counts per severity and per instance; `min_severity` keeps that level and worse."""
        if zone is not None:
            check_zone(zone)
        with transaction(self.db_path) as conn:
            return instance_logs.query(conn, instance, zone, label, min_severity, window, text, limit)

    def plan_change(self, action: str, name: str, machine_type: str | None = None) -> dict:
        """What `action` (start/stop/resize/delete_instance) would do to `name`, without doing it."""
        name = check_name("instance name", name)
        with transaction(self.db_path) as conn:
            return changes.plan_change(conn, load_prices(conn), action, name, machine_type)

    # -- disks and buckets -----------------------------------------------------------------------

    def list_disks(
        self, unattached_only: bool = False, zone: str | None = None, name: str | None = None
    ) -> list[dict]:
        where, args = [], []
        if name is not None:
            where.append("name = ?")
            args.append(check_name("disk name", name))
        if unattached_only:
            where.append("attached_to IS NULL")
        if zone is not None:
            where.append("zone = ?")
            args.append(check_zone(zone))
        sql = "SELECT * FROM disks" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY name"
        with transaction(self.db_path) as conn:
            prices = load_prices(conn)
            found = [disk_dict(row, prices) for row in conn.execute(sql, args)]
            if name is not None and not found:
                known = [r["name"] for r in conn.execute("SELECT name FROM disks")]
                raise not_found("disk", name, known, "Use list_disks to see the disks that exist.")
        return found

    def list_buckets(self, name: str | None = None) -> list[dict]:
        with transaction(self.db_path) as conn:
            prices = load_prices(conn)
            found = [bucket_dict(row, prices) for row in conn.execute("SELECT * FROM buckets ORDER BY name")]
        if name is None:
            return found
        name = check_name("bucket name", name)
        matching = [b for b in found if b["name"] == name]
        if not matching:
            raise not_found("bucket", name, [b["name"] for b in found], "Use list_buckets to see the buckets.")
        return matching

    # -- analyses --------------------------------------------------------------------------------

    def find_idle_instances(
        self, cpu_threshold: float = 5.0, days: int = 7, zone: str | None = None, label: str | None = None
    ) -> list[dict]:
        threshold, days = check_percent("cpu_threshold", cpu_threshold), check_days(days)
        scope = _scope(zone, label)
        with transaction(self.db_path) as conn:
            return analysis.idle_instances(conn, load_prices(conn), threshold, days, scope)

    def rightsizing_recommendations(
        self, days: int = 14, zone: str | None = None, label: str | None = None
    ) -> list[dict]:
        days = check_days(days)
        scope = _scope(zone, label)
        with transaction(self.db_path) as conn:
            return analysis.rightsizing(conn, load_prices(conn), days, scope)

    def estimate_monthly_cost(
        self,
        group_by: str | None = None,
        label_key: str = "team",
        instance: str | None = None,
        label: str | None = None,
    ) -> dict:
        """`instance`: one instance's cost (its compute and disks), grouped by instance unless told otherwise;
        `label`: only resources carrying those labels ('team=payments')."""
        group_by = check_choice("group_by", group_by or ("instance" if instance else "total"), GROUP_BY)
        if group_by == "label":
            label_key = check_name("label_key", label_key)
        wanted = parse_labels(label) if label is not None else None
        with transaction(self.db_path) as conn:
            if instance is not None:
                get_instance(conn, check_name("instance name", instance))  # NotFound with suggestions
            return analysis.monthly_cost(conn, load_prices(conn), group_by, label_key, instance, wanted)

    def query_time_series(self, instance: str, metric: str, days: int = 1, step_hours: int = 1) -> dict:
        instance = check_name("instance name", instance)
        metric = check_choice("metric", metric, METRIC_NAMES)
        days = check_days(days)
        step_hours = check_int("step_hours", step_hours, 1, days * 24)
        with transaction(self.db_path) as conn:
            get_instance(conn, instance)  # NotFound for unknown names rather than an empty series
            return analysis.time_series(conn, instance, metric, days, step_hours)

    def __repr__(self) -> str:
        return f"SandboxCloud({str(self.db_path)!r})"
