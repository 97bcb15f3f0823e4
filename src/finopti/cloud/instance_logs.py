"""The instances' logs, shaped like Cloud Logging entries: seeded from the plan, so every answer about them can
be predicted from docs/sandbox.md ("Instance logs").

- Routine entries (INFO): every instance, while it runs, logs `<app>: health check passed` at 03:00, 09:00,
  15:00 and 21:00 UTC and `systemd: Started Daily apt upgrade and clean activities.` at 06:25, over the
  14 days before SANDBOX_NOW; a stop inside that window is a NOTICE from the audit log.
- Designed entries (`DESIGNED`, most of them WARNING or worse) tell small stories with known answers.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

from .catalog import DAY, HISTORY_DAYS, HOUR, SANDBOX_NOW_TS, iso
from .errors import InvalidArgument
from .seed import SeedPlan
from .store import get_instance
from .validation import check_int, labels_match, parse_labels
from .windows import bounds, describe

SCHEMA = """
CREATE TABLE IF NOT EXISTS log_entries (
    ts INTEGER NOT NULL, instance TEXT NOT NULL, zone TEXT NOT NULL, project TEXT NOT NULL,
    severity TEXT NOT NULL, severity_rank INTEGER NOT NULL, log_name TEXT NOT NULL, message TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS log_entries_ts ON log_entries (ts);
"""
# Cloud Logging's LogSeverity, with its numbers.
SEVERITIES = {"DEFAULT": 0, "DEBUG": 100, "INFO": 200, "NOTICE": 300, "WARNING": 400, "ERROR": 500,
              "CRITICAL": 600, "ALERT": 700, "EMERGENCY": 800}
HEARTBEAT_HOURS = (3, 9, 15, 21)
MAX_LIMIT = 500


@dataclass(frozen=True)
class Designed:
    instance: str
    days_before: int  # the day: 1 is the day before SANDBOX_NOW ("yesterday")
    at: str  # HH:MM UTC
    severity: str
    log_name: str
    message: str

    @property
    def ts(self) -> int:
        hours, minutes = (int(x) for x in self.at.split(":"))
        return SANDBOX_NOW_TS - self.days_before * DAY + hours * HOUR + minutes * 60


BUSY = ("ci-runner-prod-04", "etl-worker-prod-02", "indexer-dev-02", "payments-api-prod-01", "search-frontend-prod-01")
DESIGNED: tuple[Designed, ...] = (
    *(Designed(name, day, "15:10", "WARNING", "ops-agent", "high CPU: above 90% for 15 minutes")
      for name in BUSY for day in (1, 2, 3)),
    Designed("payments-api-prod-01", 1, "15:12", "ERROR", "app",
             "upstream timeout after 30 s calling ledger-db-prod-01:5432"),
    Designed("payments-api-prod-01", 1, "15:14", "ERROR", "app",
             "upstream timeout after 30 s calling ledger-db-prod-01:5432"),
    Designed("ledger-db-prod-01", 1, "15:11", "WARNING", "postgres", "slow query: 4.2 s on SELECT from ledger_entries"),
    Designed("ledger-db-prod-01", 1, "21:40", "WARNING", "postgres", "slow query: 3.8 s on SELECT from ledger_entries"),
    Designed("etl-worker-prod-02", 2, "03:05", "ERROR", "syslog", "Out of memory: Killed process 4121 (etl-job)"),
    Designed("etl-worker-prod-02", 2, "03:20", "CRITICAL", "app",
             "etl-job failed 3 times in a row; giving up until the next schedule"),
    Designed("ci-runner-prod-04", 1, "10:30", "ERROR", "app",
             "build 8812 failed: no space left on device (disk full) on /var/lib/docker"),
    Designed("search-frontend-prod-01", 1, "15:20", "WARNING", "app", "5xx rate 3.2% over 5 minutes (threshold 1%)"),
    Designed("fraud-scorer-prod-01", 4, "12:00", "WARNING", "app", "model latency p95 420 ms above the 300 ms SLO"),
    Designed("monitoring-prod-02", 3, "14:05", "ERROR", "app", "scrape target ci-runner-prod-01:9100 down"),
    Designed("bastion-dev-01", 1, "04:10", "WARNING", "syslog",
             "sshd: 42 failed login attempts from 203.0.113.7 in 10 minutes"),
    Designed("notebook-prod-02", 1, "08:00", "INFO", "app", "jupyter: kernel idle for 24 h"),
    Designed("query-cache-prod-02", 6, "09:30", "WARNING", "app", "cache hit ratio 61% below the 80% target"),
)


def build_entries(plan: SeedPlan) -> list[tuple]:
    """Every seeded entry as a log_entries row; the same plan always gives the same rows."""
    rows: list[tuple] = []
    start = SANDBOX_NOW_TS - HISTORY_DAYS * DAY
    by_name = {i.name: i for i in plan.instances}
    for inst in plan.instances:
        app = inst.labels["app"]
        end = inst.stopped_at if inst.stopped_at is not None else SANDBOX_NOW_TS  # nothing logged once stopped
        for day in range(HISTORY_DAYS):
            midnight = start + day * DAY
            routine = [(midnight + hour * HOUR, "app", f"{app}: health check passed") for hour in HEARTBEAT_HOURS]
            routine.append((midnight + 6 * HOUR + 25 * 60, "syslog",
                            "systemd: Started Daily apt upgrade and clean activities."))
            rows.extend((ts, inst, "INFO", log_name, message) for ts, log_name, message in routine if ts < end)
        if inst.stopped_at is not None and start <= inst.stopped_at < SANDBOX_NOW_TS:
            rows.append((inst.stopped_at, inst, "NOTICE", "cloudaudit.googleapis.com/activity",
                         "compute.instances.stop: instance stopped by a user"))
    for event in DESIGNED:
        rows.append((event.ts, by_name[event.instance], event.severity, event.log_name, event.message))
    return sorted(
        ((ts, i.name, i.zone, i.project, sev, SEVERITIES[sev], log_name, message)
         for ts, i, sev, log_name, message in rows),
        key=lambda r: (r[0], r[1], r[6]),
    )


def ensure(conn: sqlite3.Connection, plan_for_seed) -> None:
    """Create and seed the table once (older sandbox files gain it on their next open)."""
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    if conn.execute("SELECT 1 FROM meta WHERE key = 'log_entries_seeded'").fetchone() is None:
        conn.executemany("INSERT INTO log_entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)", build_entries(plan_for_seed()))
        conn.execute("INSERT INTO meta VALUES ('log_entries_seeded', '1')")


def _entry(row: sqlite3.Row, labels: dict) -> dict:
    return {
        "timestamp": iso(row["ts"]),
        "severity": row["severity"],
        "instance": row["instance"],
        "zone": row["zone"],
        "log_name": row["log_name"],
        "message": row["message"],
        # As Cloud Logging's LogEntry has them.
        "logName": f"projects/{row['project']}/logs/{row['log_name'].replace('/', '%2F')}",
        "resource": {"type": "gce_instance", "labels": {"instance_id": row["instance"], "zone": row["zone"],
                                                        "project_id": row["project"]}},
        "labels": labels,
    }


def query(conn: sqlite3.Connection, instance: str | None, zone: str | None, label: str | None,
          min_severity: str | None, window: str, text: str | None, limit: int) -> dict:
    start, end = bounds(window, SANDBOX_NOW_TS)
    severity = (min_severity or "DEFAULT").upper()
    if severity not in SEVERITIES:
        raise InvalidArgument(f"min_severity must be one of {', '.join(SEVERITIES)}; got {min_severity!r}.")
    if instance is not None:
        get_instance(conn, instance)  # NotFound with suggestions for a name that does not exist
    wanted = parse_labels(label) if label is not None else None
    limit = check_int("limit", limit, 1, MAX_LIMIT)
    # A window ends now (an entry stamped now is in it), except yesterday, which ends at midnight.
    end_exclusive = int(end) if str(window).lower() == "yesterday" else int(end) + 1
    where = ["ts >= ?", "ts < ?", "severity_rank >= ?"]
    args: list = [int(start), end_exclusive, SEVERITIES[severity]]
    for column, value in (("instance", instance), ("zone", zone)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    if text:
        where.append("message LIKE ? ESCAPE '\\'")
        args.append("%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%")
    labels = {r["name"]: json.loads(r["labels"]) for r in conn.execute("SELECT name, labels FROM instances")}
    rows = conn.execute(f"SELECT * FROM log_entries WHERE {' AND '.join(where)} ORDER BY ts DESC, instance", args)
    found = [r for r in rows if labels_match(labels.get(r["instance"], {}), wanted)]
    per_instance: dict[str, dict] = {}
    per_severity: dict[str, int] = {}
    for r in found:
        item = per_instance.setdefault(r["instance"], {"instance": r["instance"], "zone": r["zone"], "entries": 0,
                                                       "worst_severity": r["severity"], "first": iso(r["ts"]),
                                                       "last": iso(r["ts"])})
        item["entries"] += 1
        item["first"] = iso(r["ts"])  # rows come newest first
        if SEVERITIES[r["severity"]] > SEVERITIES[item["worst_severity"]]:
            item["worst_severity"] = r["severity"]
        per_severity[r["severity"]] = per_severity.get(r["severity"], 0) + 1
    return {
        "window": {"said": window, "description": describe(window), "start": iso(int(start)), "end": iso(int(end))},
        "filter": {k: v for k, v in (("instance", instance), ("zone", zone), ("label", label),
                                     ("min_severity", severity if min_severity else None), ("text", text)) if v},
        "total": len(found),
        "by_severity": dict(sorted(per_severity.items(), key=lambda kv: -SEVERITIES[kv[0]])),
        "instances": sorted(per_instance.values(), key=lambda i: (-SEVERITIES[i["worst_severity"]],
                                                                  -i["entries"], i["instance"])),
        "entries": [_entry(r, labels.get(r["instance"], {})) for r in found[:limit]],
        "clock": iso(SANDBOX_NOW_TS),
    }
