"""Per-request context (trace, request id, caller's identity) and the headers that carry it onward.

The gateway creates `traceparent` and `x-request-id` at the edge; every service continues them so one
request has one trace id on every hop. The end user's token travels with the calls a service makes, so
the gateway authorizes each hop for the same user. The drill header (`x-drill`) and W3C `baggage`
travel the same way, so a fault scoped to a header (`finopti fault inject gcloud-agent --header x-drill=1`)
meets the request a client marked at the edge on every hop, and no other request.
"""

from contextvars import ContextVar
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from finopti.telemetry.traceparent import parse_traceparent

_propagator = TraceContextTextMapPropagator()
# Spans are only used for ids and propagation here; the gateway's access log records the hops.
_provider = TracerProvider()
tracer = _provider.get_tracer("finopti")


DRILL_HEADER = "x-drill"
# Sent on with every call made while serving a request that carries them (the gateway keeps them from services
# outside the platform).
CARRIED_HEADERS = (DRILL_HEADER, "baggage")


def carried_headers(headers: list[tuple[str, str]]) -> dict[str, str]:
    """The drill header and baggage of a request's (lowercase name, value) pairs; a repeated one as one list."""
    carried: dict[str, str] = {}
    for name, value in headers:
        if name in CARRIED_HEADERS:
            carried[name] = f"{carried[name]},{value}" if name in carried else value
    return carried


@dataclass
class RequestContext:
    request_id: str = ""
    authorization: str = ""
    user: str = ""
    groups: list[str] = field(default_factory=list)
    carried: dict[str, str] = field(default_factory=dict)  # the drill header and baggage (carried_headers)
    # Extra fields for this request's `request completed` line, set by whoever learns them (MCP method, tool).
    log_fields: dict = field(default_factory=dict)


_current: ContextVar[RequestContext | None] = ContextVar("finopti_request", default=None)
_NO_REQUEST = RequestContext()


def current_request() -> RequestContext:
    return _current.get() or _NO_REQUEST


def add_log_fields(fields: dict) -> None:
    """Fields for the current request's `request completed` line (nothing outside a request)."""
    ctx = _current.get()
    if ctx is not None:
        ctx.log_fields.update(fields)


def set_request(ctx: RequestContext):
    return _current.set(ctx)


def reset_request(token) -> None:
    _current.reset(token)


def extract_trace(headers: list[tuple[str, str]]) -> Context:
    """The trace a request continues, from all its (lowercase name, value) header pairs; an empty context (a
    new trace) when `traceparent` is absent, repeated or invalid by the W3C rules (see traceparent.py)."""
    parent = parse_traceparent([v for k, v in headers if k == "traceparent"])
    if parent is None:
        return Context()
    states = [v for k, v in headers if k == "tracestate"]
    span_context = SpanContext(trace_id=int(parent.trace_id, 16), span_id=int(parent.parent_id, 16), is_remote=True,
                               trace_flags=TraceFlags(parent.flags), trace_state=TraceState.from_header(states))
    return trace.set_span_in_context(NonRecordingSpan(span_context))


def trace_ids() -> tuple[str, str]:
    """(trace_id, span_id) of the current span as hex, or empty strings outside a request."""
    span_context = trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return "", ""
    return format(span_context.trace_id, "032x"), format(span_context.span_id, "016x")


def outgoing_headers() -> dict[str, str]:
    """Headers for a call made while serving a request: trace context, request id, user's token, drill header
    and baggage."""
    ctx = current_request()
    headers: dict[str, str] = dict(ctx.carried)
    _propagator.inject(headers)
    if ctx.request_id:
        headers["x-request-id"] = ctx.request_id
    if ctx.authorization:
        headers["authorization"] = ctx.authorization
    return headers
