"""The platform's own logs, for the monitoring agent: read from the log store through the mesh as the asking
user, so the gateway decides who may read them (the `logstore` route needs `observability_admin`) like every
other call, then summarised: how many lines, from which services, at which levels, the messages that repeat."""

import time
from collections import Counter
from typing import Any

import httpx
from fastapi import HTTPException

from finopti.cloud import InvalidArgument
from finopti.cloud.windows import bounds, describe
from finopti.logs.times import ns_to_rfc3339
from finopti.services.common import ServiceSettings
from finopti.services.meshclient import mesh_client, unanswered

LEVELS = ("debug", "info", "warning", "error", "critical")
# Cloud Logging's severities (what the assistant says) onto the log store's levels.
AT_LEAST = {"DEFAULT": "debug", "DEBUG": "debug", "INFO": "info", "NOTICE": "warning", "WARNING": "warning",
            "ERROR": "error", "CRITICAL": "critical", "ALERT": "critical", "EMERGENCY": "critical"}
FETCH = 1000  # lines read per question; the answer says when there were more
DEFAULT_WINDOW = "1h"
PLATFORM_LOGS_SCHEMA = {
    "type": "object",
    "properties": {
        "service": {"type": "string", "description": "a platform service (gateway, orchestrator, gcloud-agent, "
                    "monitoring-agent, gcloud-tools, monitoring-tools, ui, logstore, policy, collector)"},
        "min_severity": {"type": "string", "enum": list(AT_LEAST), "description": "this level and worse"},
        "window": {"type": "string", "description": "30m, 6h, 2d, today, yesterday, this_morning or this_week",
                   "default": DEFAULT_WINDOW},
        "text": {"type": "string", "description": "text the lines contain"},
    },
    "additionalProperties": False,
}


def _message(line: dict) -> str:
    body = line.get("line")
    if isinstance(body, dict):
        return str(body.get("message") or body.get("msg") or "")[:300]
    return str(body or "")[:300]


def summarise(lines: list[dict], args: dict, window: str, start: float, end: float) -> dict:
    repeated = Counter((line["service"], line["level"], _message(line)) for line in lines)
    return {
        "window": {"said": window, "description": describe(window), "start": ns_to_rfc3339(int(start * 1e9)),
                   "end": ns_to_rfc3339(int(end * 1e9))},
        "filter": {k: v for k, v in args.items() if k in ("service", "min_severity", "text") and v},
        "total": len(lines),
        "more": len(lines) >= FETCH,
        "by_service": dict(Counter(line["service"] for line in lines).most_common()),
        "by_level": dict(sorted(Counter(line["level"] for line in lines).items(),
                                key=lambda kv: -LEVELS.index(kv[0]) if kv[0] in LEVELS else 0)),
        "messages": [{"service": service, "level": level, "message": message, "count": count}
                     for (service, level, message), count in repeated.most_common(10)],
        "entries": [{"timestamp": line["ts"], "service": line["service"], "level": line["level"],
                     "message": _message(line), "trace_id": (line.get("metadata") or {}).get("trace_id", "")}
                    for line in lines[:100]],
    }


async def platform_logs(settings: ServiceSettings, args: dict) -> Any:
    """The handler of the monitoring agent's `query_platform_logs` action."""
    window = str(args.get("window") or DEFAULT_WINDOW)
    severity = str(args.get("min_severity") or "DEFAULT").upper()
    if severity not in AT_LEAST:
        raise HTTPException(400, {"error": "InvalidArgument", "message": f"min_severity must be one of "
                                  f"{', '.join(AT_LEAST)}; got {args.get('min_severity')!r}."})
    try:
        start, end = bounds(window, time.time())
    except InvalidArgument as exc:
        raise HTTPException(400, {"error": "InvalidArgument", "message": exc.message}) from None
    lowest = LEVELS.index(AT_LEAST[severity])
    params: list[tuple[str, str]] = [("start", ns_to_rfc3339(int(start * 1e9))),
                                     ("end", ns_to_rfc3339(int(end * 1e9) + 1)), ("limit", str(FETCH))]
    params += [("level", level) for level in LEVELS[lowest:]] if lowest else []
    if args.get("service"):
        params.append(("service", str(args["service"])))
    if args.get("text"):
        params.append(("q", str(args["text"])))
    try:
        async with mesh_client(settings.mesh_url, verify=settings.mesh_ssl(), source=settings.mesh_source) as mesh:
            response = await mesh.get("/logstore/api/logs", params=params)
    except httpx.HTTPError as exc:
        status, error, message = unanswered("the log store", exc)
        raise HTTPException(status, {"error": error, "message": message}) from None
    if not response.is_success:
        # The gateway's decision (a role that may not read logs) or the store's own error, as it is.
        try:
            body = response.json()
        except ValueError:
            body = {}
        raise HTTPException(response.status_code, {**body, "error": body.get("error", "logstore_error"),
                                                   "message": body.get("message") or response.text[:300]})
    return summarise(response.json().get("lines", []), args, window, start, end)
