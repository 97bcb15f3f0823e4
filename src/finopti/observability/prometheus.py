"""Prometheus configuration, recording rules and alert rules, rendered from the mesh.

Pure functions returning data; the CLI writes the files. Label conventions after scraping:

- gateway metrics (job `gateway`, Envoy's `/stats/prometheus`) get `listener` (edge|mesh), `route` (the
  mesh route's name), `service` and `version` (the backend cluster) through `metric_relabel_configs`;
- service metrics (job `finopti-services`) already carry `service` and `version`; their `route` label is
  the service's own path template (e.g. `/v1/actions/{action}`), not a mesh route.
"""

from dataclasses import dataclass
from pathlib import Path

from finopti.mesh.model import MeshSpec
from finopti.mesh.resolved import ResolvedMesh
from finopti.observability.traffic import PLATFORM, STREAM, USER, classify_routes, regex, service_traffic

GATEWAY_JOB = "gateway"
SERVICES_JOB = "finopti-services"
QUANTILES = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
ERROR_RATIO_THRESHOLD = 0.05
RATE_LIMITED_THRESHOLD = 1.0  # requests refused per second
LATENCY_NEAR_TIMEOUT = 0.8  # alert when p99 passes this share of the route's timeout


@dataclass(frozen=True)
class ScrapeTls:
    """Prometheus's mesh identity: services accept only certificates the mesh CA issued to known callers."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    server_name: str | None = None  # None: verify the address scraped (service certs carry 127.0.0.1)


@dataclass(frozen=True)
class ScrapeTargets:
    gateway_admin: str  # host:port of Envoy's admin listener
    services: dict[str, dict[str, str]]  # service -> version -> host:port

    @classmethod
    def local(cls, admin_port: int, service_ports: dict[str, dict[str, int]]) -> "ScrapeTargets":
        """Everything on 127.0.0.1, from the ports the platform chose (Runtime.service_ports)."""
        return cls(f"127.0.0.1:{admin_port}",
                   {s: {v: f"127.0.0.1:{p}" for v, p in versions.items()} for s, versions in service_ports.items()})


def render_prometheus_config(
    spec: MeshSpec,
    targets: ScrapeTargets,
    *,
    tls: ScrapeTls | None = None,
    rule_files: list[str] | tuple[str, ...] = (),
    scrape_interval: str = "15s",
    evaluation_interval: str = "15s",
) -> dict:
    """prometheus.yml: the gateway job and one job with a target per service version of the mesh."""
    service_targets = []
    for service in spec.services:
        for version in service.versions:
            try:
                address = targets.services[service.name][version]
            except KeyError:
                raise ValueError(f"no scrape target for service '{service.name}' version '{version}'") from None
            service_targets.append({"targets": [address], "labels": {"service": service.name, "version": version}})
    known = {(s.name, v) for s in spec.services for v in s.versions}
    extra = sorted(f"{s}/{v}" for s, versions in targets.services.items() for v in versions if (s, v) not in known)
    if extra:
        raise ValueError(f"scrape targets for services not in the mesh: {', '.join(extra)}")

    services_job: dict = {
        "job_name": SERVICES_JOB,
        "metrics_path": "/metrics",
        # The services label their own metrics with service and version; keep theirs (no exported_*).
        "honor_labels": True,
        "static_configs": service_targets,
    }
    if tls is not None:
        services_job["scheme"] = "https"
        tls_config = {"ca_file": str(tls.ca_file), "cert_file": str(tls.cert_file), "key_file": str(tls.key_file)}
        if tls.server_name:
            tls_config["server_name"] = tls.server_name
        services_job["tls_config"] = tls_config
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval},
        "rule_files": list(rule_files),
        "scrape_configs": [
            {
                "job_name": GATEWAY_JOB,
                "metrics_path": "/stats/prometheus",
                "static_configs": [{"targets": [targets.gateway_admin]}],
                "metric_relabel_configs": _gateway_relabeling(),
            },
            services_job,
        ],
    }


def _gateway_relabeling() -> list[dict]:
    """Envoy's tag labels -> the platform's labels, so one dashboard variable filters both sources."""

    def copy(source: str, target: str) -> dict:
        return {"source_labels": [source], "regex": "(.+)", "target_label": target, "replacement": "$1"}

    return [
        copy("envoy_http_conn_manager_prefix", "listener"),
        copy("envoy_virtual_host", "listener"),
        copy("envoy_route", "route"),
        copy("envoy_rbac_policy_name", "rule"),  # the gateway's authorization rule that decided
        # Only clusters named <service>.<version> get service/version (not Envoy's own, e.g. trace-sink).
        {
            "source_labels": ["envoy_cluster_name", "finopti_version"],
            "regex": "(.+);(.+)",
            "target_label": "service",
            "replacement": "$1",
        },
        copy("finopti_version", "version"),
        {"action": "labeldrop", "regex": "finopti_version"},
    ]


def _listeners(mesh: ResolvedMesh) -> str:
    return "|".join(sorted({r.listener for r in mesh.routes}))


def _ratio(errors: str, total: str, by: str) -> str:
    # `or ... * 0`: a route with no 5xx yet has no error series; its ratio is 0, not missing.
    return f"(sum by ({by}) ({errors}) or sum by ({by}) ({total}) * 0) / sum by ({by}) ({total})"


def _traffic_label(expr: str, label: str, classes: dict[str, str]) -> str:
    """`expr` with a `traffic` label (user | platform | stream, finopti.observability.traffic) chosen by the value
    of `label`: dashboards show user traffic by default and never draw a stream's duration as latency."""
    out = f'label_replace({expr}, "traffic", "{USER}", "{label}", ".*")'
    for kind in (PLATFORM, STREAM):
        names = [name for name, traffic in classes.items() if traffic == kind]
        if names:
            out = f'label_replace({out}, "traffic", "{kind}", "{label}", "{regex(names)}")'
    return out


def _red_rules(prefix: str, by: str, total: str, errors: str, bucket: str, per_seconds: float,
               traffic: tuple[str, dict[str, str]] | None = None) -> list[dict]:
    """Requests per second, error ratio and latency quantiles for one level of aggregation; `traffic` is
    (label, value -> class) when its series get a `traffic` label."""

    def classified(expr: str) -> str:
        return _traffic_label(expr, *traffic) if traffic else expr

    rules = [
        {"record": f"finopti:{prefix}_requests:rate1m", "expr": classified(f"sum by ({by}) (rate({total}[1m]))")},
        {"record": f"finopti:{prefix}_errors:ratio_rate1m",
         "expr": classified(_ratio(f"rate({errors}[1m])", f"rate({total}[1m])", by))},
    ]
    scale = "" if per_seconds == 1 else f" / {per_seconds:g}"
    for name, q in QUANTILES.items():
        rules.append({
            "record": f"finopti:{prefix}_latency_seconds:{name}",
            "expr": classified(f"histogram_quantile({q}, sum by ({by}, le) (rate({bucket}[1m]))){scale}"),
        })
    return rules


def render_recording_rules(mesh: ResolvedMesh, interval: str | None = None) -> dict:
    """RED per mesh route, per gateway listener, per backend (as the gateway sees it) and per service."""
    listeners = f'listener=~"{_listeners(mesh)}"'
    envoy_ms = 1000  # Envoy's request-time histograms are in milliseconds
    gateway = [
        # Per mesh route: needs `stat_prefix: <route name>` on each Envoy route (envoy_stats.route_stat_prefix).
        *_red_rules(
            "route", "listener, route",
            f"envoy_vhost_route_upstream_rq_total{{{listeners}}}",
            f'envoy_vhost_route_upstream_rq_xx{{{listeners},envoy_response_code_class="5"}}',
            f"envoy_vhost_route_upstream_rq_time_bucket{{{listeners}}}", envoy_ms,
            traffic=("route", classify_routes(mesh)),
        ),
        # Per listener: every request, including the gateway's own answers (401, 404, 429, 503).
        *_red_rules(
            "listener", "listener",
            f"envoy_http_downstream_rq_total{{{listeners}}}",
            f'envoy_http_downstream_rq_xx{{{listeners},envoy_response_code_class="5"}}',
            f"envoy_http_downstream_rq_time_bucket{{{listeners}}}", envoy_ms,
        ),
        # Per backend service and version (Envoy cluster): the canary split.
        *_red_rules(
            "upstream", "service, version",
            'envoy_cluster_upstream_rq_total{service!=""}',
            'envoy_cluster_upstream_rq_xx{service!="",envoy_response_code_class="5"}',
            'envoy_cluster_upstream_rq_time_bucket{service!=""}', envoy_ms,
        ),
    ]
    resilience = [
        {"record": "finopti:upstream_retries:rate1m",
         "expr": 'sum by (service, version) (rate(envoy_cluster_upstream_rq_retry{service!=""}[1m]))'},
        {"record": "finopti:upstream_ejections:rate1m",
         "expr": 'sum by (service, version) '
                 '(rate(envoy_cluster_outlier_detection_ejections_enforced_total{service!=""}[1m]))'},
        {"record": "finopti:upstream_overflows:rate1m",
         "expr": 'sum by (service, version) (rate(envoy_cluster_upstream_rq_pending_overflow{service!=""}[1m]))'},
        # 1 while the gateway keeps a service version out (its circuit is open: ejected after consecutive bad
        # answers, or failing its health check), else 0; callers get 503 circuit_open at once meanwhile.
        {"record": "finopti:circuit_open",
         "expr": 'max by (service, version) (envoy_cluster_membership_total{service!=""} '
                 '- envoy_cluster_membership_healthy{service!=""})'},
        # Requests answered 503 at once because no backend was in (an open circuit, or a failing health check).
        {"record": "finopti:circuit_refused:rate1m",
         "expr": 'sum by (service, version) (rate(envoy_cluster_upstream_cx_none_healthy{service!=""}[1m]))'},
        # Local rate limit stats are named by the filter's stat_prefix (finopti_ratelimit*), not by listener.
        {"record": "finopti:rate_limited:rate1m",
         "expr": "sum by (envoy_local_http_ratelimit_prefix) "
                 '(rate(envoy_http_local_rate_limit_rate_limited{envoy_local_http_ratelimit_prefix=~"finopti_ratelimit.*"}[1m]))'},
        {"record": "finopti:fault_aborts:rate1m",
         "expr": f"sum by (listener) (rate(envoy_http_fault_aborts_injected{{{listeners}}}[1m]))"},
        {"record": "finopti:fault_delays:rate1m",
         "expr": f"sum by (listener) (rate(envoy_http_fault_delays_injected{{{listeners}}}[1m]))"},
    ]
    # The gateway's own authorization (RBAC, see finopti.mesh.envoy_authz): requests granted per rule, and
    # requests refused per reason (exactly one reason rule matches each refusal).
    authorization = [
        {"record": "finopti:authz_allowed:rate1m",
         "expr": "sum by (listener, rule) "
                 '(rate(envoy_http_rbac_policy_allowed{envoy_rbac_http_prefix="authz_"}[1m]))'},
        {"record": "finopti:authz_refused:rate1m",
         "expr": "sum by (listener, rule) "
                 '(rate(envoy_http_rbac_policy_shadow_denied{envoy_rbac_http_prefix="authz_reason_"}[1m]))'},
    ]
    services = _red_rules(
        "service", "service, version",
        "finopti_requests_total", "finopti_request_errors_total", "finopti_request_duration_seconds_bucket", 1,
        traffic=("service", {s.name: service_traffic(s.name) for s in mesh.services}),
    )
    groups = [
        {"name": "finopti-gateway-red", "rules": gateway},
        {"name": "finopti-gateway-resilience", "rules": resilience},
        {"name": "finopti-gateway-authorization", "rules": authorization},
        {"name": "finopti-services-red", "rules": services},
        {"name": "finopti-budgets", "rules": _budget_rules()},
    ]
    if interval:
        for group in groups:
            group["interval"] = interval
    return {"groups": groups}


def _budget_rules() -> list[dict]:
    """Each budget's spend as a share of its amount, by basis (actual month to date, month-end forecast).

    The tool server exports the raw figures (finopti_budget_amount, finopti_budget_spend,
    finopti_budget_threshold_ratio); `max by` folds the copies two scraped versions of it would export."""
    return [{
        "record": "finopti:budget_spend:ratio",
        "expr": "max by (budget, basis) (finopti_budget_spend) / on (budget) group_left "
                "max by (budget) (finopti_budget_amount)",
    }]


def render_alert_rules(mesh: ResolvedMesh, interval: str | None = None) -> dict:
    """Error ratio high, circuit opened (in the last 5 minutes) and open (now), load shed, rate limiting spike,
    targets down or missing, latency near timeout, budget thresholds crossed."""
    pct = f"{ERROR_RATIO_THRESHOLD:.0%}"
    rules: list[dict] = [
        _alert("FinoptiRouteErrorRatioHigh", f"finopti:route_errors:ratio_rate1m > {ERROR_RATIO_THRESHOLD}", "2m",
               "warning", "Route {{ $labels.route }} on {{ $labels.listener }}: {{ $value | humanizePercentage }} "
               f"of upstream requests answer 5xx (over {pct})"),
        _alert("FinoptiServiceErrorRatioHigh", f"finopti:service_errors:ratio_rate1m > {ERROR_RATIO_THRESHOLD}",
               "2m", "warning", "{{ $labels.service }} {{ $labels.version }} answers "
               f"{{{{ $value | humanizePercentage }}}} of its requests with 5xx (over {pct})"),
        _alert("FinoptiCircuitOpened",
               'sum by (service, version) (increase(envoy_cluster_outlier_detection_ejections_enforced_total'
               '{service!=""}[5m])) > 0', "0m", "critical",
               "The gateway ejected {{ $labels.service }} {{ $labels.version }} (outlier detection) "
               "in the last 5 minutes"),
        _alert("FinoptiCircuitOpen", "finopti:circuit_open > 0", "0m", "critical",
               "The circuit of {{ $labels.service }} {{ $labels.version }} is open: the gateway keeps it out "
               "(consecutive bad answers, or its health check fails) and answers its callers 503 circuit_open"),
        _alert("FinoptiLoadShedding", "finopti:upstream_overflows:rate1m > 0", "1m", "warning",
               "The gateway sheds {{ $value | humanize }} requests/s to {{ $labels.service }} "
               "{{ $labels.version }} (503 overloaded: its concurrency limit is reached)"),
        _alert("FinoptiRateLimitingSpike", f"sum(finopti:rate_limited:rate1m) > {RATE_LIMITED_THRESHOLD:g}", "1m",
               "warning", "The gateway refuses {{ $value | humanize }} requests/s with 429 (local rate limit)"),
        _alert("FinoptiTargetDown", f'up{{job=~"{GATEWAY_JOB}|{SERVICES_JOB}"}} == 0', "1m", "critical",
               "Prometheus cannot scrape {{ $labels.job }} {{ $labels.service }} {{ $labels.version }} "
               "at {{ $labels.instance }}"),
        # One alert per budget, basis and threshold crossed; its value is the spend ratio (the left side).
        _alert("FinoptiBudgetThresholdCrossed",
               "finopti:budget_spend:ratio >= on (budget, basis) group_right "
               "max by (budget, basis, threshold) (finopti_budget_threshold_ratio)", "0m", "warning",
               "Budget {{ $labels.budget }}: {{ $labels.basis }} spend is {{ $value | humanizePercentage }} of "
               "its amount, past the {{ $labels.threshold }}% threshold"),
    ]
    # Rendered from the mesh: every declared service version must be scraped at all.
    for service in mesh.services:
        for version in service.versions:
            rules.append(_alert(
                "FinoptiTargetMissing",
                f'absent(up{{job="{SERVICES_JOB}",service="{service.name}",version="{version}"}})', "5m",
                "warning", f"No scrape target for {service.name} {version}, which mesh.yaml declares",
                {"service": service.name, "version": version},
            ))
    traffic = classify_routes(mesh)
    for route in mesh.routes:
        timeout = route.policy.timeout
        if not timeout or traffic[route.name] == STREAM:
            continue  # no timeout declared: nothing to be near; a stream ends when its watcher leaves
        limit = round(timeout * LATENCY_NEAR_TIMEOUT, 3)
        rules.append(_alert(
            "FinoptiRouteLatencyNearTimeout",
            f'finopti:route_latency_seconds:p99{{listener="{route.listener}",route="{route.name}"}} > {limit:g}',
            "5m", "warning",
            f"p99 of route {route.name} is {{{{ $value | humanizeDuration }}}}, near its {timeout:g}s timeout",
        ))
    group: dict = {"name": "finopti-alerts", "rules": rules}
    if interval:
        group["interval"] = interval
    return {"groups": [group]}


def _alert(name: str, expr: str, for_: str, severity: str, summary: str, labels: dict | None = None) -> dict:
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity, **(labels or {})},
        "annotations": {"summary": summary},
    }


def prometheus_command(
    config_file: Path, data_dir: Path, listen: str = "127.0.0.1:9090", retention: str = "2d"
) -> list[str]:
    """The command line the process manager runs (Debian's `prometheus`, 2.42 or later)."""
    return [
        "prometheus",
        f"--config.file={config_file}",
        f"--storage.tsdb.path={data_dir}",
        f"--storage.tsdb.retention.time={retention}",
        f"--web.listen-address={listen}",
        "--web.enable-lifecycle",  # POST /-/reload after `finopti mesh apply` re-renders the config
    ]
