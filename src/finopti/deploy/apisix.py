"""mesh.yaml in Apache APISIX's words (3.x, standalone: `apisix.yaml` + `config.yaml`), the semantic twin of
`finopti.mesh.envoy`. Each policy maps to one plugin or upstream field; what APISIX cannot express the
same way is listed in docs/deploy.md.

Pure functions returning data; `compose.render_compose_bundle` turns them into files. Where the gateway runs
(addresses, ports, file paths) is an `ApisixSite`: compose's by default, another for a local run of the same
configuration (`finopti.deploy.apisix_local`), so the two renders differ only in those facts.
"""

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

import yaml

from finopti.deploy import apisix_lua as lua
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
    READY_PORT,
    SERVICE_PORT,
    STATUS_PORT,
    Topology,
)
from finopti.mesh import replies
from finopti.mesh.envoy import DEFAULT_TIMEOUT, IDENTITY_HEADERS
from finopti.mesh.model import CircuitBreaker, Fault, Identity, RateLimit, RoutePolicy
from finopti.mesh.resolved import ResolvedMesh, ResolvedRoute
from finopti.pki import TRUST_DOMAIN
from finopti.policy.envoy import SECRET_HEADERS

PLUGIN_CONFIG = "finopti-gateway"
READY_ROUTE = "finopti-ready"
READY_PATH = "/ready"
READY_CONNECT_TIMEOUT_MS = 500
OPA_URL = f"http://{ENGINES['policy'].container}:{ENGINES['policy'].port}"
OPA_POLICY = "finopti/authz"  # data.finopti.authz, as the local gateway asks it
OPA_TIMEOUT_MS = 1000  # the local ext_authz timeout
# PEMs reach APISIX as environment variables (secret references, resolved by APISIX at run time).
CERT_ENV = "FINOPTI_GATEWAY_CERT"
KEY_ENV = "FINOPTI_GATEWAY_KEY"
PKI_DIR = "/pki"  # the gateway's certificate, key and the mesh CA, written by the `pki` service
# The certificate the gateway presents to services. APISIX resolves secret references in `ssls` objects, not
# in an upstream's inline `tls.client_cert` (it would parse "$env://..." as a PEM and reject the upstream),
# so upstreams refer to one `ssls` object of type `client` by id.
GATEWAY_CLIENT_SSL = "gateway-client"
# The caller by the gateway's own variable (its network or its certificate), not a header a service never gets.
RATE_LIMIT_KEYS = {"user": "http_x_user_email", "caller": "finopti_caller"}
# What api-breaker counts as a failure. It sees statuses only: "unreachable" takes nginx's own answers when the
# backend could not be reached (502) or did not answer in time (504), and so also a backend's own 502 or 504.
BREAKER_STATUSES = {"5xx": [500, 502, 503, 504], "unreachable": [502, 504]}
# Answers that count as healthy for api-breaker: one of them resets the failure count, like Envoy's
# *consecutive* 5xx counter (4xx are the client's fault, not the backend's).
HEALTHY_STATUSES = [200, 201, 202, 204, 301, 302, 304, 400, 401, 403, 404, 409, 422]
# Envoy's connect_timeout on every cluster.
CONNECT_TIMEOUT = 1.0
METRICS_TIMEOUT = 5.0
METRICS_REFRESH = 5  # seconds between the Prometheus exporter's snapshots

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
    "client_request_id": "$http_x_client_request_id",
    "trace_id": "$opentelemetry_trace_id",
    "span_id": "$opentelemetry_span_id",
    # Set only from verified claims: a request refused before the identity headers are cleared (the edge
    # guard's refusals, nginx's own) would otherwise be logged as whoever its x-user-email names.
    "user": "$finopti_user",
    "source": "$finopti_source_id",
    "user_agent": "$http_user_agent",
    "drill": "$http_x_drill",
}
LOG_VARIABLES = (PATH_VARIABLE, "finopti_route", "finopti_duration_ms", "finopti_upstream_ms", "finopti_user",
                 "opentelemetry_trace_id", "opentelemetry_span_id", "opentelemetry_context_traceparent")

PLUGINS = [
    "request-id", "opentelemetry", "prometheus", "serverless-pre-function", "serverless-post-function",
    "exit-transformer", "jwt-auth", "opa", "proxy-rewrite", "fault-injection", "api-breaker", "limit-conn",
    "limit-count", "response-rewrite", "traffic-split",
]


@dataclass(frozen=True)
class CallerCertificates:
    """Callers known by their certificate instead of their network (Kubernetes: pod addresses come and go).

    The `listeners` are TLS; a client must present a certificate of the CA in `ca_env` (checked in the handshake)
    and its subject's common name is the caller's name (the mesh issuer writes it, with the SPIFFE id beside it)."""

    listeners: tuple[str, ...]  # which of ApisixSite.listen take TLS with client certificates
    snis: tuple[str, ...]  # the gateway's host names as callers dial them
    ca_env: str  # the environment variable holding the callers' CA (PEM)


@dataclass(frozen=True)
class ApisixSite:
    """Where the gateway runs: every address, port and path the rendering needs, and nothing else."""

    listen: Mapping[str, tuple[str, int]]  # edge, mesh, metrics (optional), ready -> (ip, port)
    status: tuple[str, int]  # APISIX's status API (/status/ready)
    export: tuple[str, int]  # APISIX's Prometheus exporter
    nodes: Mapping[str, tuple[str, int]]  # a backend's container name (or an engine's) -> where to reach it
    callers: Mapping[str, str]  # network (CIDR) -> the caller name of requests arriving from it
    ca_file: str  # the mesh CA, to verify services' certificates
    opa_url: str
    caller_certificates: CallerCertificates | None = None  # callers by certificate instead of `callers`
    # Where rate-limit counters live: None, in each gateway (one gateway); (host, port) of a Redis shared by
    # every replica, so a limit holds across them.
    rate_limit_store: tuple[str, int] | None = None


def compose_site(topo: Topology) -> ApisixSite:
    """The compose bundle: listeners on every interface of the container (the readiness one on loopback),
    services by container name, callers by their network's subnet, certificates from the `pki` volume."""
    nodes = {b.name: (b.name, SERVICE_PORT) for b in topo.backends}
    nodes.update({e.container: (e.container, e.port) for e in ENGINES.values()})
    return ApisixSite(
        listen={**{name: ("0.0.0.0", port) for name, port in LISTENERS.items()}, "ready": ("127.0.0.1", READY_PORT)},
        status=("127.0.0.1", STATUS_PORT),
        export=("0.0.0.0", EXPORT_PORT),
        nodes=nodes,
        callers=topo.callers(),
        ca_file=f"{PKI_DIR}/ca.crt",
        opa_url=OPA_URL,
    )


def upstream_id(route: str, service: str, version: str) -> str:
    return f"{route}.{service}.{version}"


def _num(seconds: float) -> float | int:
    return int(seconds) if float(seconds).is_integer() else round(seconds, 3)


def _node(topo: Topology, site: ApisixSite, service: str, version: str) -> dict:
    """Where a service version listens, and how the gateway talks to it."""
    engine = ENGINES.get(service)
    if engine is not None:
        host, port = site.nodes[engine.container]
        return {"nodes": [{"host": host, "port": port, "weight": 1}], "scheme": "http"}
    backend = topo.backend(service, version)
    host, port = site.nodes[backend.name]
    return {
        "nodes": [{"host": host, "port": port, "weight": 1}],
        # mTLS: the gateway presents its certificate (services accept only it); nginx checks the service's
        # certificate against the mesh CA for this host name (config.yaml's location snippet).
        "scheme": "https",
        "pass_host": "rewrite",
        "upstream_host": backend.name,
        "tls": {"client_cert_id": GATEWAY_CLIENT_SSL},
    }


def gateway_client_ssl() -> dict:
    """The gateway's client certificate for upstream mTLS, from the environment at run time."""
    return {"id": GATEWAY_CLIENT_SSL, "type": "client",
            "desc": "the gateway's mesh certificate, presented to every service (they accept only it)",
            "cert": f"$env://{CERT_ENV}", "key": f"$env://{KEY_ENV}"}


GATEWAY_SERVER_SSL = "gateway-server"


def gateway_server_ssl(callers: CallerCertificates) -> dict:
    """The gateway's certificate on its TLS listeners, and the CA its callers' certificates must come from."""
    return {"id": GATEWAY_SERVER_SSL, "type": "server", "snis": list(callers.snis),
            "desc": "the gateway's mesh certificate on its TLS listeners; callers must present one of the mesh CA",
            "cert": f"$env://{CERT_ENV}", "key": f"$env://{KEY_ENV}",
            "client": {"ca": f"$env://{callers.ca_env}", "depth": 2}}


def route_upstream(topo: Topology, site: ApisixSite, route: str, service: str, version: str,
                   policy: RoutePolicy) -> dict:
    """Timeouts and retries live on the upstream, so each route gets its own upstream per version."""
    per_try = policy.per_try_timeout or policy.timeout or DEFAULT_TIMEOUT
    upstream = {
        "id": upstream_id(route, service, version),
        "type": "roundrobin",
        **_node(topo, site, service, version),
        # APISIX's timeouts are per try; the whole request is bounded by retry_timeout below.
        "timeout": {"connect": _num(min(CONNECT_TIMEOUT, per_try)), "send": _num(per_try), "read": _num(per_try)},
        "retries": policy.retries.attempts if policy.retries else 0,
    }
    if policy.retries:
        upstream["retry_timeout"] = _num(policy.timeout or DEFAULT_TIMEOUT)
    return upstream


def rate_limit(limit: RateLimit, store: tuple[str, int] | None = None, route: str = "") -> dict:
    counters = {"policy": "local"} if store is None else {
        # One counter per key across every gateway replica. Fail closed: no store, no request.
        "policy": "redis", "redis_host": store[0], "redis_port": store[1], "redis_timeout": 500,
        "allow_degradation": False,
        # The counter's name: without a group, limit-count names it after the version of the configuration
        # each replica loaded, which differs between replicas (and they would count apart).
        "group": f"finopti.{route}"}
    return {
        "count": limit.requests,
        "time_window": max(1, round(limit.per)),
        "key_type": "var",
        "key": RATE_LIMIT_KEYS[limit.key],
        # limit-count answers 503 by default; the local gateway answers 429.
        "rejected_code": 429,
        "rejected_msg": replies.RATE_LIMITED.message,
        **counters,
        "show_limit_quota_header": True,
    }


# Answers of APISIX's plugins said in their own words, in the project's instead (only APISIX has these cases).
RATE_LIMIT_UNAVAILABLE = replies.Reply(503, "rate_limit_unavailable", "the rate-limit counters could not be "
                                       "reached; the request is refused (fail closed)")
REPLACED_REPLIES = {"failed to limit count": RATE_LIMIT_UNAVAILABLE}  # limit-count without its store


def retry_after(limit: RateLimit) -> dict:
    """limit-count sends no Retry-After; the local gateway does."""
    return {"vars": [["status", "==", 429]], "headers": {"set": {"retry-after": str(max(1, round(limit.per)))}}}


def circuit_breaker(breaker: CircuitBreaker) -> dict:
    return {
        "break_response_code": 503,
        "break_response_body": json.dumps({"error": replies.CIRCUIT_OPEN.error,
                                           "message": replies.CIRCUIT_OPEN.message}),
        "break_response_headers": [{"key": "content-type", "value": "application/json"}],
        "unhealthy": {"http_statuses": BREAKER_STATUSES[breaker.failures], "failures": breaker.consecutive_failures},
        "healthy": {"http_statuses": HEALTHY_STATUSES, "successes": 1},
        # api-breaker opens for 2, 4, 8 ... seconds up to this; Envoy for open_for x trips up to max_open.
        "max_breaker_sec": max(3, round(breaker.max_open)),
        "_meta": {"pre_function": lua.BREAKER_KEY},  # one state per route, not per path
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
        "rejected_msg": replies.OVERLOADED.message,
        "_meta": {"pre_function": lua.BREAKER_KEY_RESTORE},  # after api-breaker (see BREAKER_KEY)
    }


def _percent(value: float) -> int:
    return int(value + 0.5)  # fault-injection takes whole percents


def fault(f: Fault) -> dict:
    match = None
    if f.header is not None:
        variable, regex = f"http_{f.header.name.replace('-', '_')}", f.header.member_regex()
        match = [[[variable, "~~", regex] if regex else [variable, "==", f.header.value]]]
    config: dict = {}
    if f.delay is not None:
        config["delay"] = {"duration": _num(f.delay.duration), "percentage": _percent(f.delay.percent)}
    if f.abort is not None:
        config["abort"] = {
            "http_status": f.abort.status,
            "percentage": _percent(f.abort.percent),
            "body": json.dumps({"error": replies.FAULT_INJECTED.error, "message": replies.FAULT_INJECTED.message}),
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


def render_route(topo: Topology, site: ApisixSite, route: ResolvedRoute,
                 identity: Identity = Identity()) -> tuple[dict, list[dict]]:
    """One mesh.yaml route -> an APISIX route and its upstreams (one per version of the backend)."""
    policy = route.policy
    upstreams = [route_upstream(topo, site, route.name, route.backend, v, policy) for v in route.versions]
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
        plugins["limit-count"] = rate_limit(policy.rate_limit, site.rate_limit_store, route.name)
        plugins["response-rewrite"] = retry_after(policy.rate_limit)
    if policy.canary is not None:
        plugins["traffic-split"] = canary(route.name, route.backend, policy)
    rendered = {
        "id": route.name,
        "name": route.name,  # the policy looks the route up by this name (`with_route`)
        **_uris(route),
        # Like Envoy's ordering: exact paths, then longer prefixes first.
        "priority": len(route.path) + (1000 if route.exact else 0),
        "vars": listener_vars(route.listener),
        "upstream_id": upstream_id(route.name, route.backend, route.versions[0]),
        "plugin_config_id": PLUGIN_CONFIG,
        "plugins": plugins,
    }
    return rendered, upstreams


def listener_vars(listener: str) -> list:
    """Which listener a request arrived on, by name (config.yaml's `map` of ports), not by port."""
    return [["finopti_listener", "==", listener]]


def _metrics(mesh: ResolvedMesh, topo: Topology, site: ApisixSite) -> tuple[list[dict], list[dict]]:
    """Prometheus scrapes each service version through the gateway too, from its own network only."""
    routes, upstreams = [], []
    for service in mesh.services:
        for version in service.versions:
            up = upstream_id("metrics", service.name, version)
            upstreams.append({
                "id": up, "type": "roundrobin", **_node(topo, site, service.name, version),
                "timeout": {"connect": _num(CONNECT_TIMEOUT), "send": _num(METRICS_TIMEOUT),
                            "read": _num(METRICS_TIMEOUT)},
                "retries": 0,
            })
            routes.append({
                "id": f"metrics.{service.name}.{version}",
                "name": f"metrics.{service.name}.{version}",
                "uri": metrics_path(service.name, version),
                "vars": [*listener_vars("metrics"), ["finopti_caller", "==", "prometheus"]],
                "upstream_id": up,
                "plugins": {"proxy-rewrite": {"uri": "/metrics"}},
            })
    return routes, upstreams


def metrics_path(service: str, version: str) -> str:
    return f"/metrics/{service}/{version}"


def identity_function(identity: Identity) -> str:
    """The plugin configuration's rewrite function: verified identity headers (after authentication)."""
    return CLAIMS_LUA + lua.IDENTITY % {
        "headers": lua.lua_list((*IDENTITY_HEADERS, "x-finopti-listener")),
        "audience": lua.lua_string(identity.audience),
        "email_claim": lua.lua_string(identity.email_claim),
        "groups_claim": lua.lua_string(identity.groups_claim),
        "secret_headers": lua.lua_list(sorted(SECRET_HEADERS)),
    }


def global_plugins() -> dict:
    """The global rule's plugins: request ids, trace context, metrics, and the project's error body on every
    answer the gateway gives itself (`replies`), as the local gateway's: APISIX's own exits through
    `exit-transformer`; nginx's errors after routing (502, 504) in the header and body filters, which also stamp
    the access log's fields; nginx's early ones (413) in config.yaml's `error_page` location.

    APISIX runs a plugin at most once across all global rules (a plugin in two rules runs in neither), and a
    serverless plugin in one phase: the edge's rule holds serverless-pre-function (rewrite), this one
    serverless-post-function (body filter); the header filter rides on request-id's `_meta.pre_function`."""
    table = lua.lua_replies()
    known = "{" + ", ".join(f"[{lua.lua_string(r.message)}] = {lua.lua_string(r.error)}"
                            for r in (replies.OVERLOADED, replies.RATE_LIMITED)) + "}"
    # A shed request says when to come back (limit-conn's 503), as the local gateway's does.
    retry_after = "{" + ", ".join(f"[{lua.lua_string(r.error)}] = {lua.lua_string(str(r.retry_after))}"
                                  for r in (replies.OVERLOADED,) if r.retry_after is not None) + "}"
    policy = replies.POLICY_UNAVAILABLE
    replaced = "{" + ", ".join(f"[{lua.lua_string(said)}] = {{status = {r.status}, error = {lua.lua_string(r.error)}, "
                               f"message = {lua.lua_string(r.message)}}}" for said, r in REPLACED_REPLIES.items()) + "}"
    exit_reply = lua.EXIT_REPLY % {"replies": table, "known": known, "replaced": replaced, "retry_after": retry_after,
                                   "policy_status": policy.status,
                                   "policy_error": lua.lua_string(policy.error),
                                   "policy_message": lua.lua_string(policy.message)}
    return {
        # Made by the gateway at the edge (a client's id is set aside first), kept inside the mesh.
        "request-id": {"header_name": "x-request-id", "include_in_response": True, "algorithm": "uuid",
                       "_meta": {"pre_function": lua.header_filter()}},
        # Creates or continues W3C traceparent; sampler off: ids and propagation, no span export.
        "opentelemetry": {"sampler": {"name": "always_off"}},
        "prometheus": {"prefer_name": True},
        "exit-transformer": {"functions": [exit_reply]},
        "serverless-post-function": {"phase": "body_filter", "functions": [lua.body_filter()]},
    }


READY_KINDS = ("routes", "upstreams", "ssls", "plugin_configs", "consumers", "global_rules")


def readiness_route(doc: dict) -> dict:
    """`GET /ready` on the loopback-only `ready` listener: 200 only when every item of `doc` (this route
    included) loaded and some upstream node accepts a connection (see apisix_lua.READY)."""
    expected = {kind: [str(item.get("id", item.get("username"))) for item in doc.get(kind) or []]
                for kind in READY_KINDS}
    expected["routes"].append(READY_ROUTE)
    nodes = sorted({(n["host"], n["port"]) for u in doc.get("upstreams") or [] for n in u.get("nodes") or []})
    function = lua.READY % {
        "expected": "{" + ", ".join(f"{kind} = {lua.lua_list(ids)}" for kind, ids in expected.items()) + "}",
        "kinds": lua.lua_list(READY_KINDS),
        "nodes": "{" + ", ".join(f"{{{lua.lua_string(h)}, {p}}}" for h, p in nodes) + "}",
        "timeout_ms": READY_CONNECT_TIMEOUT_MS,
    }
    return {
        "id": READY_ROUTE,
        "name": READY_ROUTE,
        "uri": READY_PATH,
        "methods": ["GET", "HEAD"],
        "vars": listener_vars("ready"),
        "plugins": {"serverless-pre-function": {"phase": "access", "functions": [function]}},
    }


def render_apisix_yaml(mesh: ResolvedMesh, topo: Topology, site: ApisixSite | None = None) -> dict:
    site = site or compose_site(topo)
    routes, upstreams = [], []
    # Routes to local-only components (the console's Prometheus proxy) have no place in compose, where
    # Grafana reads Prometheus itself.
    for route in [r for r in mesh.routes if not r.external]:
        r, ups = render_route(topo, site, route, mesh.identity)
        routes.append(r)
        upstreams.extend(ups)
    # Prometheus scrapes services through the gateway where it has a metrics listener (compose).
    metric_routes, metric_upstreams = _metrics(mesh, topo, site) if "metrics" in site.listen else ([], [])
    doc = {
        "routes": routes + metric_routes,
        "upstreams": upstreams + metric_upstreams,
        "ssls": [gateway_client_ssl(), *([gateway_server_ssl(site.caller_certificates)]
                                         if site.caller_certificates else [])],
        "plugin_configs": [{
            "id": PLUGIN_CONFIG,
            "desc": "every mesh.yaml route: verified identity headers, then the Rego policy in OPA",
            "plugins": {
                "serverless-post-function": {"phase": "rewrite", "functions": [identity_function(mesh.identity)]},
                # Fail closed: the opa plugin refuses when OPA cannot be asked (503, see error_replies).
                "opa": {"host": site.opa_url, "policy": OPA_POLICY, "with_route": True, "timeout": OPA_TIMEOUT_MS},
            },
        }],
        "consumers": consumers(mesh.identity),
        "global_rules": [{"id": "finopti", "plugins": global_plugins()}, edge_global_rule(mesh.gateway.edge)],
        "plugin_metadata": [{"id": "opentelemetry", "set_ngx_var": True, "resource": {"service.name": "gateway"}}],
    }
    doc["routes"].append(readiness_route(doc))
    return doc


def readiness_probe(site: ApisixSite) -> str:
    """The gateway's container healthcheck, in bash (no curl in APISIX's image): APISIX's workers are up
    (/status/ready) and its readiness route says every item loaded and some backend accepts connections."""
    probes = [(site.status, "/status/ready"), (site.listen["ready"], READY_PATH)]
    return " && ".join(
        f"(exec 3<>/dev/tcp/{ip}/{port} && printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' >&3 "
        "&& head -n 1 <&3 | grep -q ' 200 ')"
        for (ip, port), path in probes)


def _next_upstream(mesh: ResolvedMesh) -> str:
    """nginx retries on connection errors and timeouts; status codes are one list for the whole gateway."""
    # External routes are not rendered here (see render_apisix_yaml), so their conditions do not count.
    codes = sorted({c for r in mesh.routes if r.policy.retries and not r.external
                    for c in r.policy.retries.conditions if c.isdigit()})
    return " ".join(["error", "timeout", *(f"http_{c}" for c in codes)])


def _listen(address: tuple[str, int]) -> dict:
    return {"ip": address[0], "port": address[1]}


def _caller_variable(site: ApisixSite) -> str:
    """nginx's $finopti_caller: the caller's name, by the network it comes from or by its certificate."""
    if site.caller_certificates is None:
        callers = "\n".join(f"    {network} {caller};" for network, caller in site.callers.items())
        return f"geo $finopti_caller {{\n    default \"\";\n{callers}\n}}\n"
    # Only a certificate verified against the callers' CA names a caller (APISIX refuses others in the handshake).
    return ("map \"$ssl_client_verify:$ssl_client_s_dn\" $finopti_caller {\n    default \"\";\n"
            "    \"~^SUCCESS:(.*,)?CN=(?<caller>[a-z0-9-]+)(,.*)?$\" $caller;\n}\n")


def render_config_yaml(mesh: ResolvedMesh, topo: Topology, site: ApisixSite | None = None) -> dict:
    site = site or compose_site(topo)
    listeners = "\n".join(f"    {port} {name};" for name, (_, port) in site.listen.items())
    tls = site.caller_certificates
    tls_listeners = set(tls.listeners) if tls else set()
    ssl = {"enable": False} if tls is None else {
        "enable": True, "listen": [_listen(site.listen[name]) for name in tls.listeners]}
    log_vars = "\n".join(f"set ${name} '';" for name in LOG_VARIABLES)
    early_errors = lua.EARLY_ERROR_LOCATION % {"replies": lua.lua_replies()}
    return {
        "apisix": {
            "node_listen": [_listen(address) for name, address in site.listen.items() if name not in tls_listeners],
            "enable_ipv6": False,
            # HTTP/1.1 only, as the local gateway's edge: APISIX's default turns `http2 on`, which also served
            # HTTP/2 with prior knowledge (h2c) on the plain listeners, a protocol no client of ours speaks.
            "enable_http2": False,
            # Nothing here uses APISIX's control API; TLS listeners only where callers are known by certificate.
            "enable_control": False,
            "ssl": ssl,
            "status": _listen(site.status),  # /status/ready, with /ready, for the healthcheck
        },
        "deployment": {"role": "data_plane", "role_data_plane": {"config_provider": "yaml"}},
        "plugins": PLUGINS,
        "stream_plugins": [],
        "plugin_attr": {
            # The exporter serves a snapshot refreshed on a timer (APISIX's default: every 15 s).
            "prometheus": {"export_uri": "/apisix/prometheus/metrics", "export_addr": _listen(site.export),
                           "refresh_interval": METRICS_REFRESH},
            "opentelemetry": {"set_ngx_var": True},
        },
        "nginx_config": {
            "error_log_level": "warn",
            # Secret references ($env://) resolve only variables nginx passes to its workers.
            "envs": [*secret_envs(mesh.identity), CERT_ENV, KEY_ENV, *([tls.ca_env] if tls else [])],
            "http": {
                "access_log_format": json.dumps(ACCESS_LOG_FIELDS).replace('"$status"', "$status"),
                "access_log_format_escape": "json",
                # Envoy's buffer filter: a larger body is refused with 413.
                "client_max_body_size": mesh.gateway.max_request_bytes,
                # The edge's read bounds (gateway.edge in mesh.yaml), as nginx has them: headers within the
                # header timeout (else 408); a body may pause at most the request timeout between two reads
                # (nginx has no whole-body deadline as Envoy does); an idle keep-alive connection is closed.
                "client_header_timeout": _nginx_time(mesh.gateway.edge.header_timeout),
                "client_body_timeout": _nginx_time(mesh.gateway.edge.request_timeout),
                "keepalive_timeout": _nginx_time(mesh.gateway.edge.idle_timeout),
            },
            "http_configuration_snippet": (
                f"map $server_port $finopti_listener {{\n    default \"\";\n{listeners}\n}}\n"
                + _caller_variable(site)
                # The access log names a mesh caller as the local gateway does: by its SPIFFE id.
                + f"map $finopti_listener:$finopti_caller $finopti_source_id {{\n    default \"\";\n"
                f"    \"~^mesh:(?<caller>.+)$\" \"spiffe://{TRUST_DOMAIN}/svc/$caller\";\n}}\n"
            ),
            "http_server_configuration_snippet": early_errors.replace(
                "    default_type application/json;\n",
                "    default_type application/json;\n" + "".join(f"    {line}\n" for line in log_vars.splitlines()),
                1),
            "http_server_location_configuration_snippet": (
                f"{log_vars}\n"
                f"proxy_next_upstream {_next_upstream(mesh)};\n"
                # Verify every service's certificate against the mesh CA, for the name APISIX sends as SNI.
                "proxy_ssl_verify on;\n"
                "proxy_ssl_server_name on;\n"
                "proxy_ssl_name $upstream_host;\n"
                f"proxy_ssl_trusted_certificate {site.ca_file};\n"
                "proxy_ssl_verify_depth 2;\n"
            ),
        },
    }


def _nginx_time(seconds: float) -> str:
    return f"{round(seconds * 1000)}ms"


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

