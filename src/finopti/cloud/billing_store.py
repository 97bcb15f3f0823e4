"""The sandbox's billing export: the `billing_export` table read through the `BillingExport` interface.

The SQL is what one would run on BigQuery's export table, in SQLite's dialect: labels are a JSON array of
{key, value} (`json_each` plays BigQuery's `UNNEST`), credits likewise.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence

from .catalog import SANDBOX_NOW_TS, iso
from .finops.export import DIMENSIONS, LABEL_PREFIX, CostFilter

COLUMNS = {
    "day": "b.usage_start_time",
    "month": "b.invoice_month",
    "service": "b.service_description",
    "sku": "b.sku_description",
    "project": "b.project_id",
    "region": "COALESCE(b.location_region, b.location_location)",
    "resource": "b.resource_name",
}
HAS_LABEL = ("EXISTS (SELECT 1 FROM json_each(b.labels) j WHERE json_extract(j.value, '$.key') = ?"
             " AND json_extract(j.value, '$.value') = ?)")
LACKS_LABEL = "NOT EXISTS (SELECT 1 FROM json_each(b.labels) j WHERE json_extract(j.value, '$.key') = ?)"


def _where(start: int, end: int, where: CostFilter) -> tuple[str, list]:
    clauses, args = ["b.usage_start_time >= ?", "b.usage_start_time < ?"], [start, end]
    if where.projects:
        clauses.append(f"b.project_id IN ({', '.join('?' * len(where.projects))})")
        args += where.projects
    if where.services:
        clauses.append(f"b.service_description IN ({', '.join('?' * len(where.services))})")
        args += where.services
    for key, value in where.labels:
        clauses.append(HAS_LABEL)
        args += [key, value]
    if where.lacking_any:
        clauses.append("(" + " OR ".join(LACKS_LABEL for _ in where.lacking_any) + ")")
        args += where.lacking_any
    return " AND ".join(clauses), args


class SqliteBillingExport:
    """`BillingExport` over the sandbox database, inside the caller's read transaction."""

    source = "billing_export table of the sandbox (GCP detailed billing export schema, one row per day, " \
             "resource and SKU)"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def today(self) -> int:
        return SANDBOX_NOW_TS

    def first_day(self) -> int:
        first = self.conn.execute("SELECT MIN(usage_start_time) FROM billing_export").fetchone()[0]
        return first if first is not None else SANDBOX_NOW_TS

    def currency(self) -> str:
        row = self.conn.execute("SELECT currency FROM billing_export LIMIT 1").fetchone()
        return row[0] if row else "USD"

    def aggregate(self, start: int, end: int, group_by: Sequence[str], where: CostFilter) -> list[dict]:
        selects, joins, join_args = [], [], []
        for n, dim in enumerate(group_by):
            if dim.startswith(LABEL_PREFIX):
                joins.append(f"LEFT JOIN json_each(b.labels) AS l{n} ON json_extract(l{n}.value, '$.key') = ?")
                join_args.append(dim[len(LABEL_PREFIX):])
                selects.append(f"json_extract(l{n}.value, '$.value')")
            elif dim in DIMENSIONS:
                selects.append(COLUMNS[dim])
            else:
                raise ValueError(f"unknown dimension {dim!r}")
        clause, args = _where(start, end, where)
        keys = ", ".join(f"{expr} AS d{n}" for n, expr in enumerate(selects))
        sql = (f"SELECT {keys + ', ' if keys else ''}SUM(b.cost) AS cost, SUM(b.credits_total) AS credits, "
               f"SUM(b.usage_amount_in_pricing_units) AS usage, COUNT(*) AS rows "
               f"FROM billing_export b {' '.join(joins)} WHERE {clause}"
               + (f" GROUP BY {', '.join(f'd{n}' for n in range(len(selects)))}" if selects else ""))
        out = []
        for row in self.conn.execute(sql, [*join_args, *args]):
            if row["rows"] == 0:
                continue  # an ungrouped sum over no rows
            cell = {dim: row[f"d{n}"] for n, dim in enumerate(group_by)}
            cell.update(cost=row["cost"], credits=row["credits"], usage=row["usage"], rows=row["rows"])
            out.append(cell)
        return out

    def credits_by_type(self, start: int, end: int, where: CostFilter) -> dict[str, float]:
        clause, args = _where(start, end, where)
        sql = ("SELECT json_extract(c.value, '$.type') AS type, SUM(json_extract(c.value, '$.amount')) AS amount "
               f"FROM billing_export b, json_each(b.credits) c WHERE {clause} GROUP BY 1 ORDER BY 1")
        return {row["type"]: row["amount"] for row in self.conn.execute(sql, args)}

    def known(self, dimension: str) -> list[str]:
        if dimension == "label_keys":
            sql = ("SELECT DISTINCT json_extract(j.value, '$.key') FROM billing_export b, json_each(b.labels) j"
                   " ORDER BY 1")
            return [r[0] for r in self.conn.execute(sql)]
        if dimension.startswith(LABEL_PREFIX):
            sql = ("SELECT DISTINCT json_extract(j.value, '$.value') FROM billing_export b, json_each(b.labels) j"
                   " WHERE json_extract(j.value, '$.key') = ? ORDER BY 1")
            return [r[0] for r in self.conn.execute(sql, (dimension[len(LABEL_PREFIX):],))]
        column = COLUMNS[dimension]
        sql = f"SELECT DISTINCT {column} FROM billing_export b WHERE {column} IS NOT NULL ORDER BY 1"
        return [r[0] for r in self.conn.execute(sql)]

    def rows(self, start: int, end: int, where: CostFilter, limit: int) -> list[dict]:
        clause, args = _where(start, end, where)
        sql = f"SELECT * FROM billing_export b WHERE {clause} ORDER BY b.cost DESC, b.rowid LIMIT ?"
        return [export_row(r) for r in self.conn.execute(sql, [*args, limit])]


def export_row(r: sqlite3.Row) -> dict:
    """A stored row in BigQuery's nested shape, as `SELECT *` on the export table returns it."""
    return {
        "billing_account_id": r["billing_account_id"],
        "service": {"id": r["service_id"], "description": r["service_description"]},
        "sku": {"id": r["sku_id"], "description": r["sku_description"]},
        "usage_start_time": iso(r["usage_start_time"]),
        "usage_end_time": iso(r["usage_end_time"]),
        "project": {"id": r["project_id"], "name": r["project_name"], "number": r["project_number"],
                    "labels": []},
        "labels": json.loads(r["labels"]),
        "system_labels": [],
        "location": {"location": r["location_location"], "country": None, "region": r["location_region"],
                     "zone": r["location_zone"]},
        "resource": {"name": r["resource_name"], "global_name": r["resource_global_name"]},
        "export_time": iso(r["export_time"]),
        "cost": r["cost"],
        "currency": r["currency"],
        "currency_conversion_rate": r["currency_conversion_rate"],
        "usage": {"amount": r["usage_amount"], "unit": r["usage_unit"],
                  "amount_in_pricing_units": r["usage_amount_in_pricing_units"],
                  "pricing_unit": r["usage_pricing_unit"]},
        "credits": json.loads(r["credits"]),
        "invoice": {"month": r["invoice_month"]},
        "cost_type": r["cost_type"],
    }
