"""ASGI middleware every service uses: continue the trace, remember the caller, log and count requests."""

import logging
import time
import uuid

from opentelemetry import context as otel_context
from opentelemetry import trace
from prometheus_client import Counter, Histogram
from starlette.routing import Match, Mount, Router

from finopti.claims import groups_from_header
from finopti.meshtls import source_from_xfcc
from finopti.telemetry.context import (
    RequestContext,
    carried_headers,
    extract_trace,
    reset_request,
    set_request,
    tracer,
)

log = logging.getLogger("finopti.request")

REQUESTS = Counter(
    "finopti_requests_total", "Requests served", ["service", "version", "route", "method", "status"]
)
ERRORS = Counter("finopti_request_errors_total", "Requests answered 5xx", ["service", "version", "route"])
LATENCY = Histogram(
    "finopti_request_duration_seconds",
    "Time to answer a request",
    ["service", "version", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

# Probes and scrapes are not traffic: no log line, no metric.
QUIET_PATHS = {"/healthz", "/metrics"}
# The route label of a request no route of the service matched. Labels hold route templates only: a label
# value per path an anonymous client invents would grow Prometheus without bound (and carry its markup).
UNMATCHED = "unmatched"


def route_template(router: Router | None, scope: dict) -> str:
    """The template of the route that will serve the request (`/console/trace/{trace_id}`, a mount's prefix such
    as `/static`, or a mounted app's own route), or UNMATCHED. Asked before the app runs: routing rewrites the
    scope (a mount's root_path)."""
    return _template(router.routes if router is not None else [], scope, "")


def _template(routes: list, scope: dict, prefix: str) -> str:
    for candidate in routes:
        match, child = candidate.matches(scope)
        if match is Match.NONE:
            continue
        path = prefix + (getattr(candidate, "path", "") or "")
        if isinstance(candidate, Mount) and candidate.routes:  # an app with routes of its own (MCP)
            return _template(candidate.routes, {**scope, **child}, path)
        return path or UNMATCHED
    return UNMATCHED


class TelemetryMiddleware:
    def __init__(self, app, service: str, version: str, quiet_paths: frozenset[str] = frozenset(),
                 router: Router | None = None):
        self.app = app
        self.service = service
        self.version = version
        self.quiet_paths = QUIET_PATHS | quiet_paths
        self.router = router  # the app's routes, to name each request by its route's template

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in self.quiet_paths:
            await self.app(scope, receive, send)
            return
        pairs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
        headers = dict(pairs)
        groups = groups_from_header(headers.get("x-user-groups"))
        ctx = RequestContext(
            request_id=headers.get("x-request-id") or str(uuid.uuid4()),
            authorization=headers.get("authorization", ""),
            user=headers.get("x-user-email", ""),
            groups=groups,
            carried=carried_headers(pairs),
        )
        route = route_template(self.router, scope)
        request_token = set_request(ctx)
        otel_token = otel_context.attach(extract_trace(pairs))
        status = 500
        stream = False
        started = time.perf_counter()

        async def send_with_status(message):
            nonlocal status, stream
            if message["type"] == "http.response.start":
                status = message["status"]
                stream = any(k.lower() == b"content-type" and v.startswith(b"text/event-stream")
                             for k, v in message.get("headers", ()))
            await send(message)

        try:
            with tracer.start_as_current_span(f"{scope['method']} {scope['path']}", kind=trace.SpanKind.SERVER):
                try:
                    await self.app(scope, receive, send_with_status)
                finally:
                    # The caller's span (the gateway hop that forwarded this request): the trace view matches
                    # this line to that hop by it, whatever the two clocks say.
                    parent = headers.get("traceparent", "").split("-")
                    fields = {**ctx.log_fields, **({"parent_span_id": parent[2]} if len(parent) == 4 else {})}
                    self._record(scope, route, status, time.perf_counter() - started, headers, stream, fields)
        finally:
            otel_context.detach(otel_token)
            reset_request(request_token)

    def _record(self, scope: dict, route: str, status: int, seconds: float, headers: dict[str, str],
                stream: bool, fields: dict) -> None:
        REQUESTS.labels(self.service, self.version, route, scope["method"], str(status)).inc()
        # A stream (Server-Sent Events) lasts as long as someone watches: its duration is not a latency.
        if not stream:
            LATENCY.labels(self.service, self.version, route).observe(seconds)
        if status >= 500:
            ERRORS.labels(self.service, self.version, route).inc()
        log.log(
            logging.ERROR if status >= 500 else logging.INFO,
            "request completed",
            extra={
                "event": "request_completed",
                "method": scope["method"],
                "path": scope["path"],
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 2),
                # The calling service, as the gateway verified it (mesh listener only; None from the edge).
                "source": source_from_xfcc(headers.get("x-forwarded-client-cert")),
                **({"stream": True} if stream else {}),
                **fields,
            },
        )
