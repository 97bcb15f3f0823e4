"""SQLite access for the sandbox: connections, price loading, row lookups and row -> dict conversion."""

from __future__ import annotations

import difflib
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .catalog import HOURS_PER_MONTH, MachineType, iso
from .errors import NotFound


def connect(db_path: Path) -> sqlite3.Connection:
    # Autocommit mode: transactions are opened explicitly below, so their extent is obvious.
    conn = sqlite3.connect(db_path, timeout=30, isolation_level=None)
    conn.row_factory = sqlite3.Row
    return conn


@contextmanager
def transaction(db_path: Path, write: bool = False) -> Iterator[sqlite3.Connection]:
    """A fresh connection per call, so any thread may use the sandbox.

    Reads run in one deferred transaction (a consistent WAL snapshot); writes take the
    write lock up front (BEGIN IMMEDIATE) so read-check-update sequences cannot interleave.
    """
    conn = connect(db_path)
    try:
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        conn.close()


@dataclass(frozen=True)
class Prices:
    machine_types: dict[str, MachineType]
    disk_per_gb_month: dict[str, float]
    storage_per_gb_month: dict[str, float]

    def monthly_compute(self, machine_type: str) -> float:
        return round(self.machine_types[machine_type].hourly_usd * HOURS_PER_MONTH, 2)

    def monthly_disk(self, disk_type: str, size_gb: float) -> float:
        return round(self.disk_per_gb_month[disk_type] * size_gb, 2)

    def monthly_bucket(self, storage_class: str, size_gb: float) -> float:
        return round(self.storage_per_gb_month[storage_class] * size_gb, 2)

    def resize_target(self, machine_type: str, action: str) -> MachineType | None:
        """The type rightsizing suggests for "downsize" or "upsize", if the catalogue has one."""
        current = self.machine_types[machine_type]
        target = current.smaller if action == "downsize" else current.larger
        return self.machine_types.get(target) if target else None


def load_prices(conn: sqlite3.Connection) -> Prices:
    machine_types = {
        row["name"]: MachineType(
            row["name"],
            row["series"],
            row["vcpus"],
            row["memory_gb"],
            row["hourly_usd"],
            row["smaller"],
            row["larger"],
        )
        for row in conn.execute("SELECT * FROM machine_types ORDER BY rowid")  # catalogue order
    }
    disks = {r["disk_type"]: r["usd_per_gb_month"] for r in conn.execute("SELECT * FROM disk_prices")}
    storage = {
        r["storage_class"]: r["usd_per_gb_month"] for r in conn.execute("SELECT * FROM storage_prices")
    }
    return Prices(machine_types, disks, storage)


def not_found(kind: str, name: str, known: list[str], hint: str) -> NotFound:
    close = difflib.get_close_matches(name, known, n=3)
    suggestion = f" Did you mean: {', '.join(close)}?" if close else ""
    return NotFound(f"{kind} '{name}' not found.{suggestion} {hint}")


def get_instance(conn: sqlite3.Connection, name: str) -> sqlite3.Row:
    row = conn.execute("SELECT * FROM instances WHERE name = ?", (name,)).fetchone()
    if row is None:
        known = [r["name"] for r in conn.execute("SELECT name FROM instances")]
        raise not_found("instance", name, known, "Use list_instances to see the instances that exist.")
    return row


def instance_summary(row: sqlite3.Row) -> dict:
    return {
        "name": row["name"],
        "project": row["project"],
        "zone": row["zone"],
        "machine_type": row["machine_type"],
        "state": row["state"],
        "labels": json.loads(row["labels"]),
        "created": iso(row["created"]),
    }


def disk_dict(row: sqlite3.Row, prices: Prices) -> dict:
    return {
        "name": row["name"],
        "project": row["project"],
        "zone": row["zone"],
        "type": row["disk_type"],
        "size_gb": row["size_gb"],
        "boot": bool(row["boot"]),
        "attached_to": row["attached_to"],
        "labels": json.loads(row["labels"]),
        "created": iso(row["created"]),
        "monthly_cost_usd": prices.monthly_disk(row["disk_type"], row["size_gb"]),
    }


def bucket_dict(row: sqlite3.Row, prices: Prices) -> dict:
    return {
        "name": row["name"],
        "project": row["project"],
        "location": row["location"],
        "storage_class": row["storage_class"],
        "size_gb": row["size_gb"],
        "labels": json.loads(row["labels"]),
        "created": iso(row["created"]),
        "monthly_cost_usd": prices.monthly_bucket(row["storage_class"], row["size_gb"]),
    }


def load_values(
    conn: sqlite3.Connection, instance: str, metric: str, after_ts: int
) -> list[tuple[int, float]]:
    """(ts, value) samples strictly after `after_ts`, oldest first."""
    rows = conn.execute(
        "SELECT ts, value FROM samples WHERE instance = ? AND metric = ? AND ts > ? ORDER BY ts",
        (instance, metric, after_ts),
    )
    return [(r["ts"], r["value"]) for r in rows]
