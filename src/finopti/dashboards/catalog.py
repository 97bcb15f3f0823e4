"""The platform's three dashboards, declared once; Grafana and the built-in console render these."""

from finopti.dashboards.model import Dashboard, GraphQuery, Link, LogQuery, MetricQuery, Panel, Variable
from finopti.observability.traffic import PLATFORM, PLATFORM_SERVICES, USER

OVERVIEW_UID = "finopti-overview"
TRACE_VIEW_UID = "finopti-trace-view"
DEBUG_CONSOLE_UID = "finopti-debug-console"

# The gateway answers these itself; they are in listener metrics, not in route or service metrics.
_GATEWAY_OWN = "401 (token), 404 (no route), 413, 429 (rate limit), 503 (fault, no healthy upstream)"

SERVICE = Variable("service", "label_values", "service", selector="finopti_requests_total")
VERSION = Variable("version", "label_values", "version", selector='finopti_requests_total{service=~"$service"}')
ROUTE = Variable("route", "label_values", "route", selector="envoy_vhost_route_upstream_rq_total")
# User traffic by default: the console's own polling, the log pipeline and the policy checks are the platform's.
TRAFFIC = Variable("traffic", "custom", "traffic", options=(USER, PLATFORM), default=USER)
TRACE_ID = Variable("trace_id", "text", "trace id", multi=False)
LOG_SERVICE = Variable("service", "label_values", "service", values_from="logs", selector='{job="finopti"}')
LEVEL = Variable("level", "custom", "level", options=("debug", "info", "warning", "error", "critical"))
TEXT = Variable("text", "text", "text (regex)", multi=False)


def _quantiles(metric: str, selector: str, legend: str) -> tuple[MetricQuery, ...]:
    return tuple(
        MetricQuery(f"{metric}:{q}{{{selector}{NOT_STREAM}}}", f"{legend} {q}") for q in ("p50", "p95", "p99")
    )


def _count(expr: str, legend: str = "") -> MetricQuery:
    """A count over the window: `increase` extrapolates (1.02 aborts), so round to the events that happened."""
    return MetricQuery(f"round({expr})", legend)


OVERVIEW_LINKS = (Link("Trace View", TRACE_VIEW_UID), Link("Debug Console", DEBUG_CONSOLE_UID))


ROUTE_SEL = 'route=~"$route",traffic=~"$traffic"'
SERVICE_SEL = 'service=~"$service",version=~"$version",traffic=~"$traffic"'
# A stream's duration is how long someone watched (the live tail), not a latency: never in latency panels.
NOT_STREAM = ',traffic!="stream"'

overview = Dashboard(
    uid=OVERVIEW_UID,
    title="FinOptiAgents — Platform Overview",
    description="Who calls whom, RED per mesh route (gateway) and per service (its own metrics), resilience, "
    "canary split. User traffic by default; the traffic variable adds the platform's own (console, log pipeline, "
    "policy checks).",
    variables=(TRAFFIC, SERVICE, VERSION, ROUTE),
    links=OVERVIEW_LINKS,
    panels=(
        Panel("Service graph", "graph", (GraphQuery(exclude_services=PLATFORM_SERVICES),), width=24,
              description="Calls between services in the window, from the gateway's access lines: requests, "
              "errors (5xx, the gateway's own included) and p95 on each edge. Edge requests come from clients.",
              expected_empty_reason="No request went through the gateway in the window."),
        Panel("Requests per route", "timeseries",
              (MetricQuery(f"sum by (listener, route) (finopti:route_requests:rate1m{{{ROUTE_SEL}}})",
                           "{{listener}} {{route}}"),),
              unit="reqps", description="Requests the gateway sent upstream on each mesh route.",
              expected_empty_reason="No traffic on these routes in the window, or the Envoy routes lack "
              "stat_prefix (per-route stats)."),
        Panel("Error ratio", "timeseries",
              (MetricQuery(f"finopti:route_errors:ratio_rate1m{{{ROUTE_SEL}}}", "{{listener}} {{route}}"),
               MetricQuery('finopti:listener_errors:ratio_rate1m{listener=~"edge|mesh"}',
                           "{{listener}} listener, every answer")),
              unit="percentunit",
              description="Per route: 5xx answered by the backend / upstream requests. Per listener: every 5xx, "
              f"the gateway's own answers included ({_GATEWAY_OWN}): injected faults and open circuits show here.",
              expected_empty_reason="A route without traffic in the last minute has no ratio."),
        Panel("Latency per route (upstream)", "timeseries",
              _quantiles("finopti:route_latency_seconds", ROUTE_SEL, "{{listener}} {{route}}"), unit="s",
              description="p50 (solid), p95 (dashed), p99 (dotted). Streams (the live tail) are not latency.",
              expected_empty_reason="No upstream request on these routes in the last minute."),
        Panel("Gateway answers by class", "timeseries",
              (MetricQuery('sum by (listener, envoy_response_code_class) '
                           '(rate(envoy_http_downstream_rq_xx{listener=~"edge|mesh"}[1m]))',
                           "{{listener}} {{envoy_response_code_class}}xx"),),
              unit="reqps",
              description=f"Every request per listener, platform traffic included, and the gateway's own answers: "
              f"{_GATEWAY_OWN}."),
        Panel("Requests per service", "timeseries",
              (MetricQuery(f"sum by (service, version) (finopti:service_requests:rate1m{{{SERVICE_SEL}}})",
                           "{{service}} {{version}}"),),
              unit="reqps", description="Requests each service served (its own /metrics; probes excluded).",
              expected_empty_reason="No request reached these services in the window."),
        Panel("Error ratio per service", "timeseries",
              (MetricQuery(f"finopti:service_errors:ratio_rate1m{{{SERVICE_SEL}}}", "{{service}} {{version}}"),),
              unit="percentunit", expected_empty_reason="A service without traffic in the last minute has no ratio."),
        Panel("Latency per service", "timeseries",
              _quantiles("finopti:service_latency_seconds", SERVICE_SEL, "{{service}} {{version}}"), unit="s",
              description="p50 (solid), p95 (dashed), p99 (dotted) of each service's own answers; streams excluded.",
              expected_empty_reason="No request reached these services in the last minute."),
        Panel("Canary split by version", "timeseries",
              (MetricQuery('sum by (service, version) (finopti:upstream_requests:rate1m{service=~"$service"}) '
                           '/ ignoring (version) group_left '
                           'sum by (service) (finopti:upstream_requests:rate1m{service=~"$service"})',
                           "{{service}} {{version}}"),),
              unit="percentunit", description="Share of each backend's gateway traffic per version.",
              expected_empty_reason="Only one series (100%) per service while it has a single version; "
              "empty for services without traffic."),
        Panel("Circuit state", "timeseries",
              (MetricQuery('finopti:circuit_open{service=~"$service"}', "{{service}} {{version}}"),),
              unit="short",
              description="1 while a circuit is open: the gateway keeps the service version out (consecutive bad "
              "answers, or a failing health check) and answers its callers 503 circuit_open at once; 0 while "
              "closed. Alert: FinoptiCircuitOpen.",
              expected_empty_reason="Empty until Prometheus has scraped the gateway."),
        Panel("Shed requests", "timeseries",
              (MetricQuery('sum by (service) (finopti:upstream_overflows:rate1m{service=~"$service"})',
                           "{{service}} overloaded (503)"),
               MetricQuery('sum by (service) (finopti:circuit_refused:rate1m{service=~"$service"})',
                           "{{service}} circuit open (503)"),
               MetricQuery("sum(finopti:rate_limited:rate1m)", "rate limited (429)")),
              unit="reqps",
              description="Requests the gateway answered itself instead of letting them queue: past a service's "
              "concurrency limit (503 overloaded, Retry-After), while its circuit is open (503 circuit_open), or "
              "past a user's rate limit (429, Retry-After).",
              expected_empty_reason="Nothing was shed in the window."),
        Panel("Retries", "stat",
              (_count('sum(increase(envoy_cluster_upstream_rq_retry{service=~"$service"}[$__range]))'),),
              unit="short", width=6,
              expected_empty_reason="0 unless a route has a retry policy and an upstream attempt failed."),
        Panel("Circuit-breaker ejections", "stat",
              (_count('sum(increase(envoy_cluster_outlier_detection_ejections_enforced_total'
                      '{service=~"$service"}[$__range]))', "ejections"),
               _count('sum(increase(envoy_cluster_upstream_rq_pending_overflow{service=~"$service"}[$__range]))',
                      "overflows")),
              unit="short", width=6,
              expected_empty_reason="0 unless outlier detection ejected a backend or a circuit breaker overflowed."),
        Panel("Rate-limited", "stat",
              (_count('sum(increase(envoy_http_local_rate_limit_rate_limited'
                      '{envoy_local_http_ratelimit_prefix=~"finopti_ratelimit.*"}[$__range]))'),),
              unit="short", width=6,
              expected_empty_reason="0 while no client exceeds the local rate limit; empty until the gateway "
              "has a local rate limit with stat_prefix finopti_ratelimit."),
        Panel("Fault-injected", "stat",
              (_count('sum(increase(envoy_http_fault_aborts_injected{listener=~"edge|mesh"}[$__range]))', "aborts"),
               _count('sum(increase(envoy_http_fault_delays_injected{listener=~"edge|mesh"}[$__range]))',
                      "delays")),
              unit="short", width=6,
              expected_empty_reason="0 unless a fault-injection experiment is active; empty until the gateway "
              "has the fault filter."),
        Panel("Top error messages", "table",
              (LogQuery(services=("$service",), level="error|critical", top_by=("service", "message"),
                        drop_events=("request_completed",)),),
              width=24,
              description="Error lines in the window, counted by service and message; a 5xx answer's own "
              "'request completed' line is left out (the error ratio panels count those).",
              expected_empty_reason="No component logged an error in the window."),
    ),
)

trace_view = Dashboard(
    uid=TRACE_VIEW_UID,
    title="FinOptiAgents — Trace View",
    description="Everything one request did: the log lines of every component and the gateway's hops.",
    variables=(TRACE_ID,),
    links=(Link("Platform Overview", OVERVIEW_UID), Link("Debug Console", DEBUG_CONSOLE_UID)),
    time_from="now-6h",
    refresh="",
    panels=(
        Panel("Gateway hops", "table", (LogQuery(services=("gateway",), trace_var="trace_id"),), width=24,
              columns=("ts", "listener", "method", "path", "route", "upstream_service", "status",
                       "response_flags", "duration_ms", "upstream_duration_ms", "user", "span_id"),
              description="One row per hop; span_id is the parent_span_id of the service request it forwarded.",
              expected_empty_reason="Empty until a trace id is entered, or when the trace is older than the "
              "window."),
        Panel("What each service was asked", "table",
              (LogQuery(trace_var="trace_id", text="request completed"),), width=24,
              columns=("ts", "service", "version", "method", "path", "mcp_method", "mcp_tool", "status",
                       "duration_ms", "parent_span_id"),
              description="Each service's own record of the request it served: tool servers add the MCP method "
              "and tool (tools/call list_instances).",
              expected_empty_reason="Empty until a trace id is entered, or when the trace is older than the "
              "window."),
        Panel("Logs of the trace", "logs", (LogQuery(trace_var="trace_id"),), width=24,
              expected_empty_reason="Empty until a trace id is entered, or when the trace is older than the "
              "window."),
    ),
)

debug_console = Dashboard(
    uid=DEBUG_CONSOLE_UID,
    title="FinOptiAgents — Debug Console",
    description="Live log stream of every component, filtered by service, level and text.",
    variables=(LOG_SERVICE, LEVEL, TEXT),
    links=(Link("Platform Overview", OVERVIEW_UID), Link("Trace View", TRACE_VIEW_UID)),
    time_from="now-15m",
    refresh="5s",
    panels=(
        Panel("Log volume by level", "timeseries",
              (LogQuery(services=("$service",), level="$level", text="$text", volume_by=("level",)),), width=24,
              unit="short", description="Lines per interval, by level, of the lines the filters match.",
              expected_empty_reason="Nothing logged in the window matches the filters."),
        Panel("Live logs", "logs", (LogQuery(services=("$service",), level="$level", text="$text"),), width=24,
              expected_empty_reason="Nothing logged in the window matches the filters."),
    ),
)


def dashboards() -> tuple[Dashboard, ...]:
    return (overview, trace_view, debug_console)
