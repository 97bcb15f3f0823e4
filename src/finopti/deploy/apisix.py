"""mesh.yaml in Apache APISIX's words (3.x, standalone: `apisix.yaml` + `config.yaml`), the semantic twin of
`finopti.mesh.envoy`. Each policy maps to one plugin or upstream field; what APISIX cannot express the
same way is listed in docs/deploy.md.

Pure functions returning data; `compose.render_compose_bundle` turns them into files.
"""

import copy
import json
import re

import yaml

from finopti.deploy.apisix_identity import (  # noqa: F401 - JWT_KEY_ENV, CONSUMER: this module's API
    CLAIMS_LUA,
    CONSUMER,
    JWT_KEY_ENV,
    authentication_plugin,
    consumers,
    secret_envs,
)
from finopti.deploy.edge_controls import PATH_VARIABLE, edge_global_rule
from finopti.deploy.topology import (
    ENGINES,
    EXPORT_PORT,
    LISTENERS,
    SERVICE_PORT,
    Topology,
)
from finopti.mesh.envoy import DEFAULT_TIMEOUT, IDENTITY_HEADERS
from finopti.mesh.model import CircuitBreaker, Fault, Identity, RateLimit, RoutePolicy
from finopti.mesh.resolved import ResolvedMesh, ResolvedRoute

PLUGIN_CONFIG = "finopti-gateway"
OPA_URL = f"http://{ENGINES['policy'].container}:{ENGINES['policy'].port}"
OPA_POLICY = "finopti/authz"  # data.finopti.authz, as the local gateway asks it
OPA_TIMEOUT_MS = 1000  # the local ext_authz timeout
# PEMs reach APISIX as environment variables (secret references, resolved by APISIX at run time).
CERT_ENV = "FINOPTI_GATEWAY_CERT"
KEY_ENV = "FINOPTI_GATEWAY_KEY"
PKI_DIR = "/pki"  # the gateway's certificate, key and the mesh CA, written by the `pki` service
RATE_LIMIT_KEYS = {"user": "http_x_user_email", "caller": "http_x_finopti_source"}
BREAKER_STATUSES = [500, 502, 503, 504]
# Answers that count as healthy for api-breaker: one of them resets the failure count, like Envoy's
# *consecutive* 5xx counter (4xx are the client's fault, not the backend's).
HEALTHY_STATUSES = [200, 201, 202, 204, 301, 302, 304, 400, 401, 403, 404, 409, 422]
# Envoy's connect_timeout on every cluster.
CONNECT_TIMEOUT = 1.0
METRICS_TIMEOUT = 5.0

# Runs after jwt-auth on every mesh.yaml route (rewrite phase): the identity the policy and the services
# see is only what the gateway verified, never what a client sent.
IDENTITY_LUA = CLAIMS_LUA + """return function(conf, ctx)
  local core = require("apisix.core")
  for _, name in ipairs(%(headers)s) do
    core.request.set_header(ctx, name, nil)
  end
  local listener = ngx.var.finopti_listener
  core.request.set_header(ctx, "x-finopti-listener", listener)
  -- The caller is the network the request came from: each service is alone with the gateway on its own.
  if listener == "mesh" and ngx.var.finopti_caller ~= "" then
    core.request.set_header(ctx, "x-finopti-source", ngx.var.finopti_caller)
  end
  local claims, from_jwt_auth = finopti_claims(ctx, core)
  if claims then
    local aud, ok = claims.aud, not from_jwt_auth  -- openid-connect checks the audience itself
    if type(aud) == "table" then
      for _, a in ipairs(aud) do ok = ok or a == %(audience)s end
    else
      ok = ok or aud == %(audience)s
    end
    if not ok then
      return core.response.exit(401, {error = "unauthorized", message = "token audience is not " .. %(audience)s})
    end
    local email, groups = finopti_claim_text(claims[%(email_claim)s]), finopti_claim_text(claims[%(groups_claim)s])
    if email then core.request.set_header(ctx, "x-user-email", email) end
    if groups then core.request.set_header(ctx, "x-user-groups", groups) end
  end
end"""

# Fills the access log fields nginx has no variable for (log phase runs before the access log is written).
ACCESS_LOG_LUA = """return function(conf, ctx)
  ngx.var.finopti_route = ctx.var.route_name or ""
  ngx.var.finopti_duration_ms = math.floor((ngx.now() - ngx.req.start_time()) * 1000 + 0.5)
  local upstream = tonumber(ngx.var.upstream_response_time)
  if upstream then ngx.var.finopti_upstream_ms = math.floor(upstream * 1000 + 0.5) end
end"""

# One JSON object per request on stdout, with the fields of the local gateway's access log.
ACCESS_LOG_FIELDS = {
    "ts": "$time_iso8601",
    "level": "info",
    "service": "gateway",
    "message": "access",
    "listener": "$finopti_listener",
    "method": "$request_method",
    "path": f"${PATH_VARIABLE}",  # $request_uri with credential values redacted (edge_controls)
    "route": "$finopti_route",
    "upstream_host": "$upstream_addr",
    "status": "$status",
    "duration_ms": "$finopti_duration_ms",
    "upstream_duration_ms": "$finopti_upstream_ms",
    "bytes_received": "$request_length",
    "bytes_sent": "$bytes_sent",
    "request_id": "$http_x_request_id",
    "trace_id": "$opentelemetry_trace_id",
    "span_id": "$opentelemetry_span_id",
    "user": "$http_x_user_email",
    "source": "$http_x_finopti_source",
    "user_agent": "$http_user_agent",
}
LOG_VARIABLES = (PATH_VARIABLE, "finopti_route", "finopti_duration_ms", "finopti_upstream_ms",
                 "opentelemetry_trace_id", "opentelemetry_span_id", "opentelemetry_context_traceparent")

PLUGINS = [
    "request-id", "opentelemetry", "prometheus", "serverless-pre-function", "serverless-post-function",
    "jwt-auth", "opa", "proxy-rewrite", "fault-injection", "api-breaker", "limit-conn", "limit-count",
    "response-rewrite", "traffic-split",
]


def upstream_id(route: str, service: str, version: str) -> str:
    return f"{route}.{service}.{version}"


def _num(seconds: float) -> float | int:
    return int(seconds) if float(seconds).is_integer() else round(seconds, 3)


def _node(topo: Topology, service: str, version: str) -> dict:
    """Where a service version listens, and how the gateway talks to it."""
    engine = ENGINES.get(service)
    if engine is not None:
        return {"nodes": [{"host": engine.container, "port": engine.port, "weight": 1}], "scheme": "http"}
    backend = topo.backend(service, version)
    return {
        "nodes": [{"host": backend.name, "port": SERVICE_PORT, "weight": 1}],
        # mTLS: the gateway presents its certificate (services accept only it); nginx checks the service's
        # certificate against the mesh CA for this host name (config.yaml's location snippet).
        "scheme": "https",
        "pass_host": "rewrite",
        "upstream_host": backend.name,
        "tls": {"client_cert": f"$env://{CERT_ENV}", "client_key": f"$env://{KEY_ENV}"},
    }


def route_upstream(topo: Topology, route: str, service: str, version: str, policy: RoutePolicy) -> dict:
    """Timeouts and retries live on the upstream, so each route gets its own upstream per version."""
    per_try = policy.per_try_timeout or policy.timeout or DEFAULT_TIMEOUT
    upstream = {
        "id": upstream_id(route, service, version),
        "type": "roundrobin",
        **_node(topo, service, version),
        # APISIX's timeouts are per try; the whole request is bounded by retry_timeout below.
        "timeout": {"connect": _num(min(CONNECT_TIMEOUT, per_try)), "send": _num(per_try), "read": _num(per_try)},
        "retries": policy.retries.attempts if policy.retries else 0,
    }
    if policy.retries:
        upstream["retry_timeout"] = _num(policy.timeout or DEFAULT_TIMEOUT)
    return upstream


def rate_limit(limit: RateLimit) -> dict:
    return {
        "count": limit.requests,
        "time_window": max(1, round(limit.per)),
        "key_type": "var",
        "key": RATE_LIMIT_KEYS[limit.key],
        # limit-count answers 503 by default; the local gateway answers 429.
        "rejected_code": 429,
        "rejected_msg": "too many requests; retry after the time in Retry-After",
        "policy": "local",
        "show_limit_quota_header": True,
    }


def retry_after(limit: RateLimit) -> dict:
    """limit-count sends no Retry-After; the local gateway does."""
    return {"vars": [["status", "==", 429]], "headers": {"set": {"retry-after": str(max(1, round(limit.per)))}}}


def circuit_breaker(breaker: CircuitBreaker) -> dict:
    return {
        "break_response_code": 503,
        "break_response_body": json.dumps({"error": "circuit_open", "message": "circuit open: the backend is "
                                           "taken out after consecutive failures; retry later"}),
        "break_response_headers": [{"key": "content-type", "value": "application/json"}],
        "unhealthy": {"http_statuses": BREAKER_STATUSES, "failures": breaker.consecutive_failures},
        "healthy": {"http_statuses": HEALTHY_STATUSES, "successes": 1},
        # api-breaker opens for 2, 4, 8 ... seconds up to this; Envoy for open_for x trips up to max_open.
        "max_breaker_sec": max(3, round(breaker.max_open)),
    }


def concurrency_limit(breaker: CircuitBreaker) -> dict:
    """Envoy's max_requests / max_pending as limit-conn: `conn` in flight, `burst` more waiting, then 503."""
    return {
        "conn": breaker.max_requests,
        "burst": breaker.max_pending,
        "default_conn_delay": 0.1,
        "key_type": "var",
        "key": "route_id",  # one counter per route
        "rejected_code": 503,
        "rejected_msg": "too many requests in flight to the backend",
    }


def _percent(value: float) -> int:
    return int(value + 0.5)  # fault-injection takes whole percents


def fault(f: Fault) -> dict:
    match = [[[f"http_{f.header.name.replace('-', '_')}", "==", f.header.value]]] if f.header else None
    config: dict = {}
    if f.delay is not None:
        config["delay"] = {"duration": _num(f.delay.duration), "percentage": _percent(f.delay.percent)}
    if f.abort is not None:
        config["abort"] = {
            "http_status": f.abort.status,
            "percentage": _percent(f.abort.percent),
            "body": json.dumps({"error": "fault_injected", "message": "fault injected by the gateway"}),
        }
    for part in config.values():
        if match:
            part["vars"] = copy.deepcopy(match)
    # After jwt-auth (2510) like Envoy's fault filter after authentication; still before OPA (access phase).
    config["_meta"] = {"priority": 2000}
    return config


def canary(route: str, service: str, policy: RoutePolicy) -> dict:
    assert policy.canary is not None
    pin = policy.canary.pin_header.replace("-", "_")
    rules = [
        {"match": [{"vars": [[f"http_{pin}", "==", version]]}],
         "weighted_upstreams": [{"upstream_id": upstream_id(route, service, version), "weight": 1}]}
        for version in policy.canary.weights
    ]
    rules.append({"weighted_upstreams": [
        {"upstream_id": upstream_id(route, service, v), "weight": w} for v, w in policy.canary.weights.items()
    ]})
    return {"rules": rules}


def _uris(route: ResolvedRoute) -> dict:
    if route.exact:
        return {"uri": route.path}
    return {"uris": [route.path, route.path + "*"]}


def _rewrite(route: ResolvedRoute) -> dict | None:
    if route.rewrite is None:
        return None
    if route.exact:
        return {"uri": route.rewrite}
    # Envoy's prefix_rewrite: the matched prefix becomes `rewrite`, the rest of the path stays.
    return {"regex_uri": [f"^{re.escape(route.path)}(.*)", f"{route.rewrite}$1"]}


def render_route(topo: Topology, route: ResolvedRoute, identity: Identity = Identity()) -> tuple[dict, list[dict]]:
    """One mesh.yaml route -> an APISIX route and its upstreams (one per version of the backend)."""
    policy = route.policy
    upstreams = [route_upstream(topo, route.name, route.backend, v, policy) for v in route.versions]
    plugins: dict = {}
    if route.auth == "required":
        plugins.update(authentication_plugin(identity))
    if (rewrite := _rewrite(route)) is not None:
        plugins["proxy-rewrite"] = rewrite
    if policy.fault is not None:
        plugins["fault-injection"] = fault(policy.fault)
    if policy.circuit_breaker is not None:
        plugins["api-breaker"] = circuit_breaker(policy.circuit_breaker)
        plugins["limit-conn"] = concurrency_limit(policy.circuit_breaker)
    if policy.rate_limit is not None:
        plugins["limit-count"] = rate_limit(policy.rate_limit)
        plugins["response-rewrite"] = retry_after(policy.rate_limit)
    if policy.canary is not None:
        plugins["traffic-split"] = canary(route.name, route.backend, policy)
    rendered = {
        "id": route.name,
        "name": route.name,  # the policy looks the route up by this name (`with_route`)
        **_uris(route),
        # Like Envoy's ordering: exact paths, then longer prefixes first.
        "priority": len(route.path) + (1000 if route.exact else 0),
        "vars": [["server_port", "==", str(LISTENERS[route.listener])]],
        "upstream_id": upstream_id(route.name, route.backend, route.versions[0]),
        "plugin_config_id": PLUGIN_CONFIG,
        "plugins": plugins,
    }
    return rendered, upstreams


def _metrics(mesh: ResolvedMesh, topo: Topology) -> tuple[list[dict], list[dict]]:
    """Prometheus scrapes each service version through the gateway too, from its own network only."""
    routes, upstreams = [], []
    for service in mesh.services:
        for version in service.versions:
            up = upstream_id("metrics", service.name, version)
            upstreams.append({
                "id": up, "type": "roundrobin", **_node(topo, service.name, version),
                "timeout": {"connect": _num(CONNECT_TIMEOUT), "send": _num(METRICS_TIMEOUT),
                            "read": _num(METRICS_TIMEOUT)},
                "retries": 0,
            })
            routes.append({
                "id": f"metrics.{service.name}.{version}",
                "name": f"metrics.{service.name}.{version}",
                "uri": metrics_path(service.name, version),
                "vars": [["server_port", "==", str(LISTENERS["metrics"])],
                         ["remote_addr", "ipmatch", [str(topo.metrics_subnet)]]],
                "upstream_id": up,
                "plugins": {"proxy-rewrite": {"uri": "/metrics"}},
            })
    return routes, upstreams


def metrics_path(service: str, version: str) -> str:
    return f"/metrics/{service}/{version}"


def render_apisix_yaml(mesh: ResolvedMesh, topo: Topology) -> dict:
    routes, upstreams = [], []
    # Routes to local-only components (the console's Prometheus proxy) have no place in compose, where
    # Grafana reads Prometheus itself.
    for route in [r for r in mesh.routes if not r.external]:
        r, ups = render_route(topo, route, mesh.identity)
        routes.append(r)
        upstreams.extend(ups)
    metric_routes, metric_upstreams = _metrics(mesh, topo)
    identity = IDENTITY_LUA % {"headers": "{" + ", ".join(json.dumps(h) for h in (*IDENTITY_HEADERS,
                                                                                 "x-finopti-listener")) + "}",
                               "audience": json.dumps(mesh.identity.audience),
                               "email_claim": json.dumps(mesh.identity.email_claim),
                               "groups_claim": json.dumps(mesh.identity.groups_claim)}
    return {
        "routes": routes + metric_routes,
        "upstreams": upstreams + metric_upstreams,
        "plugin_configs": [{
            "id": PLUGIN_CONFIG,
            "desc": "every mesh.yaml route: verified identity headers, then the Rego policy in OPA",
            "plugins": {
                "serverless-post-function": {"phase": "rewrite", "functions": [identity]},
                # Fail closed: APISIX's opa plugin denies (403) when OPA cannot be asked.
                "opa": {"host": OPA_URL, "policy": OPA_POLICY, "with_route": True, "timeout": OPA_TIMEOUT_MS},
            },
        }],
        "consumers": consumers(mesh.identity),
        "global_rules": [{
            "id": "finopti",
            "plugins": {
                # Kept when the client sends one, like the local gateway.
                "request-id": {"header_name": "x-request-id", "include_in_response": True, "algorithm": "uuid"},
                # Creates or continues W3C traceparent; sampler off: ids and propagation, no span export.
                "opentelemetry": {"sampler": {"name": "always_off"}},
                "prometheus": {"prefer_name": True},
                "serverless-pre-function": {"phase": "log", "functions": [ACCESS_LOG_LUA]},
            },
        }, edge_global_rule(mesh.gateway.edge)],
        "plugin_metadata": [{"id": "opentelemetry", "set_ngx_var": True, "resource": {"service.name": "gateway"}}],
    }


def _next_upstream(mesh: ResolvedMesh) -> str:
    """nginx retries on connection errors and timeouts; status codes are one list for the whole gateway."""
    codes = sorted({c for r in mesh.routes if r.policy.retries for c in r.policy.retries.conditions if c.isdigit()})
    return " ".join(["error", "timeout", *(f"http_{c}" for c in codes)])


def render_config_yaml(mesh: ResolvedMesh, topo: Topology) -> dict:
    listeners = "\n".join(f"    {port} {name};" for name, port in LISTENERS.items())
    callers = "\n".join(f"    {subnet} {caller};" for subnet, caller in topo.callers().items())
    log_vars = "\n".join(f"set ${name} '';" for name in LOG_VARIABLES)
    return {
        "apisix": {
            "node_listen": list(LISTENERS.values()),
            "enable_ipv6": False,
            "status": {"ip": "127.0.0.1", "port": 7085},  # /status/ready for the healthcheck
        },
        "deployment": {"role": "data_plane", "role_data_plane": {"config_provider": "yaml"}},
        "plugins": PLUGINS,
        "plugin_attr": {
            "prometheus": {"export_uri": "/apisix/prometheus/metrics",
                           "export_addr": {"ip": "0.0.0.0", "port": EXPORT_PORT}},
            "opentelemetry": {"set_ngx_var": True},
        },
        "nginx_config": {
            "error_log_level": "warn",
            # Secret references ($env://) resolve only variables nginx passes to its workers.
            "envs": [*secret_envs(mesh.identity), CERT_ENV, KEY_ENV],
            "http": {
                "access_log_format": json.dumps(ACCESS_LOG_FIELDS).replace('"$status"', "$status"),
                "access_log_format_escape": "json",
                # Envoy's buffer filter: a larger body is refused with 413.
                "client_max_body_size": mesh.gateway.max_request_bytes,
            },
            "http_configuration_snippet": (
                f"map $server_port $finopti_listener {{\n    default \"\";\n{listeners}\n}}\n"
                f"geo $finopti_caller {{\n    default \"\";\n{callers}\n}}\n"
            ),
            "http_server_location_configuration_snippet": (
                f"{log_vars}\n"
                f"proxy_next_upstream {_next_upstream(mesh)};\n"
                # Verify every service's certificate against the mesh CA, for the name APISIX sends as SNI.
                "proxy_ssl_verify on;\n"
                "proxy_ssl_server_name on;\n"
                "proxy_ssl_name $upstream_host;\n"
                f"proxy_ssl_trusted_certificate {PKI_DIR}/ca.crt;\n"
                "proxy_ssl_verify_depth 2;\n"
            ),
        },
    }


def apisix_yaml_text(doc: dict) -> str:
    """APISIX loads a standalone file only once it ends with `#END`."""
    header = "# Rendered from mesh.yaml by `finopti render compose`; do not edit.\n"
    return header + dump_yaml(doc) + "#END\n"


class _NoAliases(yaml.SafeDumper):
    """Plain YAML for every reader (APISIX's parser included): repeated values are written out, not aliased."""

    def ignore_aliases(self, data) -> bool:
        return True


def _string(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Multi-line values (Lua, nginx snippets) as literal blocks: readable, and byte-for-byte what is loaded.
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_NoAliases.add_representer(str, _string)


def dump_yaml(doc: dict) -> str:
    return yaml.dump(doc, Dumper=_NoAliases, sort_keys=False, width=1000)

