"""A trace's waterfall from its log lines: one hop per gateway access entry (Envoy logs every hop, its `ts`
is when the request started), joined with the `request_completed` event and the other lines of the service
that served it, with the gateway's own authorization decision (from the access line) and, for routes decided by
Rego, the policy service's lines that authorized it."""

ERROR_LEVELS = {"error", "critical", "fatal"}
# Envoy's timestamps and durations are whole milliseconds (truncated); a service line of a hop may fall
# just outside the hop's window by that much.
SLACK_NS = 2_000_000


def _number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _is_access(entry: dict) -> bool:
    obj = entry["line"]
    return entry["service"] == "gateway" and isinstance(obj, dict) and obj.get("message") == "access"


def _decision(obj: dict) -> dict | None:
    """The gateway's native authorization decision of this hop, as its access line records it."""
    if not obj.get("authz"):
        return None
    allowed = obj["authz"] == "allowed"
    return {"by": "gateway", "allow": allowed, "rule": obj.get("authz_rule") if allowed else obj.get("authz_reason")}


def _hop(entry: dict) -> dict:
    obj = entry["line"]
    service, _, version = str(obj.get("upstream_service") or "").partition(".")
    duration = _number(obj.get("duration_ms")) or 0.0
    status = _number(obj.get("status"))
    return {
        "listener": obj.get("listener"),
        "route": obj.get("route"),
        "method": obj.get("method"),
        "path": obj.get("path"),
        "service": service or None,
        "version": version or None,
        "upstream_service": obj.get("upstream_service"),
        "upstream_host": obj.get("upstream_host"),
        "start": entry["ts"],
        "start_ns": entry["ts_ns"],
        "end_ns": entry["ts_ns"] + int(duration * 1e6),
        "duration_ms": duration,
        "upstream_duration_ms": _number(obj.get("upstream_duration_ms")),
        "status": int(status) if status is not None else None,
        "response_flags": obj.get("response_flags"),
        "response_code_details": obj.get("response_code_details"),
        "request_id": obj.get("request_id"),
        "span_id": obj.get("span_id") or None,
        "user": obj.get("user"),
        "authz": _decision(obj),
        "served": None,
        "lines": [],
        "errors": [],
    }


def _serves(hop: dict, entry: dict, start_ns: int, end_ns: int) -> bool:
    """Could this service line have been written while serving this hop?"""
    obj = entry["line"] if isinstance(entry["line"], dict) else {}
    if hop["service"] != entry["service"]:
        return False
    if hop["version"] and obj.get("version") and obj["version"] != hop["version"]:
        return False
    return hop["start_ns"] - SLACK_NS <= start_ns and end_ns <= hop["end_ns"] + SLACK_NS


def _authorizes(hop: dict, entry: dict) -> bool:
    """A line of the gateway's ext_authz call for this hop: the policy service's decision (same listener and
    route) or its request_completed (path `/authz` + the hop's path)."""
    obj = entry["line"] if isinstance(entry["line"], dict) else {}
    if not hop["start_ns"] - SLACK_NS <= entry["ts_ns"] <= hop["end_ns"] + SLACK_NS:
        return False
    if obj.get("event") == "authz_decision":
        return obj.get("route") == hop["route"] and obj.get("listener") == hop["listener"]
    return obj.get("path") == "/authz" + str(hop["path"] or "").split("?")[0]


def build_trace(trace_id: str, lines: list[dict]) -> dict:
    """`lines` in time order -> {"trace_id", "start", "duration_ms", "lines", "hops", "errors"}."""
    hops = sorted((_hop(e) for e in lines if _is_access(e)), key=lambda h: (h["start_ns"], -h["duration_ms"]))
    others = [e for e in lines if not _is_access(e)]

    # Each hop's own request_completed event: the unclaimed hop whose window holds the whole request,
    # closest in start time (a service called several times in one trace has one hop per call).
    for entry in others:
        obj = entry["line"]
        if not isinstance(obj, dict) or obj.get("event") != "request_completed":
            continue
        end_ns = entry["ts_ns"]
        start_ns = end_ns - int((_number(obj.get("duration_ms")) or 0) * 1e6)
        # Exactly: the hop whose span is the service's parent span. Else (lines without span ids), by time: the
        # service's clock and timing are not the gateway's, so this is a guess under load.
        candidates = [h for h in hops if h["served"] is None and h.get("span_id")
                      and h["span_id"] == obj.get("parent_span_id") and h["service"] == entry["service"]]
        candidates = candidates or [
            h for h in hops
            if h["served"] is None and _serves(h, entry, start_ns, end_ns)
            and (not obj.get("path") or str(h["path"] or "").split("?")[0].endswith(obj["path"]))
        ]
        if candidates:
            hop = min(candidates, key=lambda h: abs(h["start_ns"] - start_ns))
            hop["served"] = {k: obj.get(k) for k in ("service", "version", "route", "status", "duration_ms")}
            # What a tool server was asked over MCP (JSON-RPC method and tool), when it says.
            hop["served"].update({k: obj[k] for k in ("mcp_method", "mcp_tool") if obj.get(k)})
            hop["lines"].append(entry)
            entry["_hop"] = True

    # The service's own span of each served hop: its other lines carry it.
    by_span = {(h["service"], h["lines"][0]["line"].get("span_id")): h for h in hops if h["served"] and h["lines"]}
    # Every other service line goes under the hop of its span, else the latest-started hop to that service that
    # was open at the time; the authorization of a hop goes under that hop.
    unattached = []
    for entry in others:
        if entry.pop("_hop", False):
            continue
        obj = entry["line"] if isinstance(entry["line"], dict) else {}
        hop = by_span.get((entry["service"], obj.get("span_id"))) if obj.get("span_id") else None
        if hop is not None:
            hop["lines"].append(entry)
            continue
        candidates = [h for h in hops if _serves(h, entry, entry["ts_ns"], entry["ts_ns"])]
        candidates = candidates or [h for h in hops if _authorizes(h, entry)]
        if candidates:
            max(candidates, key=lambda h: h["start_ns"])["lines"].append(entry)
        else:
            unattached.append(entry)

    first = min((e["ts_ns"] for e in lines), default=0)
    last = max([e["ts_ns"] for e in lines] + [h["end_ns"] for h in hops], default=0)
    for hop in hops:
        hop["lines"].sort(key=lambda e: (e["ts_ns"], e["id"]))
        hop["errors"] = [e for e in hop["lines"] if e["level"] in ERROR_LEVELS]
        hop["offset_ms"] = round((hop["start_ns"] - first) / 1e6, 3)
        # Depth: how many other hops enclose this one (edge -> agent -> tool server).
        hop["depth"] = sum(
            1 for other in hops
            if other is not hop and other["start_ns"] <= hop["start_ns"] and hop["end_ns"] <= other["end_ns"]
            and (other["start_ns"], -other["duration_ms"]) < (hop["start_ns"], -hop["duration_ms"])
        )
    return {
        "trace_id": trace_id,
        "start": lines[0]["ts"] if lines else None,
        "duration_ms": round((last - first) / 1e6, 3),
        "lines": lines,
        "hops": hops,
        "unattached": unattached,
        "errors": sum(1 for e in lines if e["level"] in ERROR_LEVELS),
    }
