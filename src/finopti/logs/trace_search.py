"""Finding traces: one row per request that entered through the edge (the gateway's access line on the edge
listener), with its user, route, status and duration, and the prompt when the orchestrator logged one.

Filters: user, route, status (`2xx`, `4xx`, `5xx`, `error` for 4xx and 5xx, or a code), trace id prefix,
time window, and traffic (`user` by default: the console's own polling and the log pipeline are left out).
The newest requests come first. At most `SCAN_LINES` gateway lines of the window are read per search: enough
for a machine's recent traffic, and bounded however busy the gateway is.
"""

from dataclasses import dataclass

from finopti.logs.store import MAX_LIMIT, LogQuery, LogStore
from finopti.observability.traffic import service_traffic

SCAN_LINES = MAX_LIMIT
STATUS_CLASSES = ("2xx", "3xx", "4xx", "5xx", "error")


@dataclass
class TraceFilter:
    start: int | None = None  # ns
    end: int | None = None
    user: str | None = None
    route: str | None = None
    status: str | None = None
    prefix: str | None = None  # a trace id's first characters
    traffic: str = "user"  # user | platform | all
    limit: int = 50


def status_matches(status: int | None, wanted: str) -> bool:
    if status is None:
        return wanted in ("5xx", "error")  # no status: the gateway gave up on it
    if wanted == "error":
        return status >= 400
    if wanted.endswith("xx"):
        return str(status).startswith(wanted[0])
    return str(status) == wanted


def _number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def request_row(entry: dict) -> dict | None:
    """An edge access line -> a row of the trace list; None for anything else."""
    obj = entry.get("line")
    if entry.get("service") != "gateway" or not isinstance(obj, dict) or obj.get("message") != "access":
        return None
    if obj.get("listener") != "edge" or not obj.get("trace_id"):
        return None
    service = str(obj.get("upstream_service") or "").partition(".")[0] or None
    status = _number(obj.get("status"))
    return {
        "trace_id": obj["trace_id"],
        "request_id": obj.get("request_id"),
        "ts": entry["ts"],
        "ts_ns": entry["ts_ns"],
        "user": obj.get("user") or None,
        "route": obj.get("route") or None,
        "method": obj.get("method"),
        "path": obj.get("path"),
        "service": service,
        "status": int(status) if status else None,
        "duration_ms": _number(obj.get("duration_ms")),
        "traffic": service_traffic(service),
        "prompt": None,
    }


def matches(row: dict, f: TraceFilter) -> bool:
    if f.traffic != "all" and row["traffic"] != f.traffic:
        return False
    if f.user and (row["user"] or "").lower() != f.user.lower():
        return False
    if f.route and row["route"] != f.route:
        return False
    if f.status and not status_matches(row["status"], f.status):
        return False
    return not f.prefix or row["trace_id"].startswith(f.prefix.lower())


def search_traces(store: LogStore, f: TraceFilter) -> dict:
    """{"traces": [rows, newest first], "scanned": gateway lines read, "truncated": whether the window held more}."""
    lines = store.query(LogQuery(start=f.start, end=f.end, services=["gateway"], limit=SCAN_LINES))
    rows, seen = [], set()
    for entry in lines:
        row = request_row(entry)
        # One row per request, not per trace: a client may send a valid traceparent of a trace it has seen,
        # and a row per trace would list its request under another one (a change under a later harmless ask).
        key = row and (row["request_id"] or row["trace_id"])
        if row is None or key in seen or not matches(row, f):
            continue
        seen.add(key)
        rows.append(row)
        if len(rows) >= f.limit:
            break
    if rows:
        # The prompt of each request, from the orchestrator's `ask` line of its trace (same window).
        first = min(r["ts_ns"] for r in rows)
        asks = store.query(LogQuery(start=first, end=f.end, services=["orchestrator"], text="ask", limit=SCAN_LINES))
        prompts = {key: a["line"].get("prompt") for a in asks
                   if isinstance(a["line"], dict) and a["line"].get("event") == "ask"
                   for key in (a["line"].get("trace_id"), a["line"].get("request_id")) if key}
        for row in rows:  # the request's own prompt; its trace's for lines without a request id
            row["prompt"] = prompts.get(row["request_id"], prompts.get(row["trace_id"]))
    return {"traces": rows, "scanned": len(lines), "truncated": len(lines) >= SCAN_LINES}
