"""Render the mesh to Envoy: a bootstrap plus listener, cluster and route files that Envoy watches
(file-based xDS), so `finopti mesh apply` can change them on a running gateway.

A pure function of the model and the runtime facts (ports, file paths); only the CLI writes files.
"""

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from finopti.mesh import replies
from finopti.mesh.edge_rules import CLIENT_REQUEST_ID_HEADER
from finopti.mesh.envoy_authz import (
    EXT_AUTHZ_FILTER,
    JWT_NAMESPACE,
    JWT_PAYLOAD,
    RBAC_NAMESPACE,
    REASON,
    REASONS_RESULT,
    access_log_fields,
    rbac_filters,
    reason_messages,
    route_authz,
    uses_rego,
    virtual_host_authz,
)
from finopti.mesh.envoy_edge import (
    NEW_REQUEST_ID,
    REQUEST_ID,
    TRACE_ID,
    cel_filter,
    early_header_mutations,
    edge_connection_limit,
    edge_guard_filter,
    edge_protocol_options,
    edge_virtual_hosts,
    refusal_reply_mappers,
    reply_body,
)
from finopti.mesh.envoy_identity import jwks_cluster, jwt_provider
from finopti.mesh.envoy_traffic import (
    FAULT_FILTER,
    RATE_LIMIT_FILTER,
    SAFE_METHODS,
    circuit_breakers,
    fault_filter,
    outlier_detection,
    rate_limit_filter,
    retry_policy,
    route_fault,
    route_rate_limit,
)
from finopti.mesh.model import GATEWAY_MAX_CONNECTIONS, RoutePolicy
from finopti.mesh.resolved import ResolvedBackend, ResolvedMesh, ResolvedRoute, most_specific_first
from finopti.observability.envoy_stats import envoy_stats_config, route_stat_prefix
from finopti.pki import TRUST_DOMAIN

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
JWT_AUTHN = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
JWT_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.PerRouteConfig"

# Identity headers only the gateway may set; anything a client sends under these names is dropped.
IDENTITY_HEADERS = ("x-user-email", "x-user-groups", "x-finopti-source", "x-jwt-payload")
JWT_PROVIDER = "finopti-idp"
JWT_REQUIREMENT = "user"
JWT_FAILURE_KEY = "jwt_failure"
DEFAULT_TIMEOUT = 15.0
UPSTREAM_IDLE_SECONDS = 60


@dataclass(frozen=True)
class GatewayRuntime:
    """Facts the renderer needs that only exist once the platform starts."""

    edge_host: str
    edge_port: int
    mesh_host: str
    mesh_port: int
    admin_port: int
    service_ports: dict[str, dict[str, int]]  # service -> version -> port
    jwks_path: Path
    xds_dir: Path
    pki_dir: Path  # mesh CA and the gateway's certificate (see finopti.pki)
    external_ports: dict[str, int] = field(default_factory=dict)  # e.g. prometheus -> its loopback port
    jwks_uri: str = ""  # an OpenID Connect provider's key set (identity.provider: oidc), found by discovery
    # Both on for the platform; a benchmark turns them off to measure what they cost.
    mtls: bool = True
    authz: bool = True


def cluster_name(service: str, version: str) -> str:
    return f"{service}.{version}"


def render_envoy(mesh: ResolvedMesh, rt: GatewayRuntime) -> dict[str, dict]:
    """File name -> Envoy resource document, from the resolved mesh (`finopti.mesh.resolved.resolve`)."""
    return {
        "bootstrap.yaml": _bootstrap(rt),
        "lds.yaml": {"resources": [_listener("edge", mesh, rt), _listener("mesh", mesh, rt)]},
        "cds.yaml": {"resources": _clusters(mesh, rt)},
        "rds-edge.yaml": {"resources": [_route_config("edge", mesh, rt)]},
        "rds-mesh.yaml": {"resources": [_route_config("mesh", mesh, rt)]},
        **({SDS_FILE: {"resources": [_gateway_secret(rt)]}} if rt.mtls else {}),
    }


def _file_source(rt: GatewayRuntime, name: str) -> dict:
    return {
        "resource_api_version": "V3",
        "path_config_source": {"path": str(rt.xds_dir / name), "watched_directory": {"path": str(rt.xds_dir)}},
    }


def _bootstrap(rt: GatewayRuntime) -> dict:
    return {
        "node": {"id": "finopti-gateway", "cluster": "finopti"},
        "admin": {"address": _address("127.0.0.1", rt.admin_port)},
        "dynamic_resources": {
            "lds_config": _file_source(rt, "lds.yaml"),
            "cds_config": _file_source(rt, "cds.yaml"),
        },
        "static_resources": {"clusters": [_trace_sink(rt)]},
        # Cluster names carry the version after a dot; this keeps it a label instead of part of metric names.
        "stats_config": envoy_stats_config(),
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.resource_monitors."
                        "downstream_connections.v3.DownstreamConnectionsConfig",
                        "max_active_downstream_connections": GATEWAY_MAX_CONNECTIONS,
                    },
                }
            ]
        },
    }


def _trace_sink(rt: GatewayRuntime) -> dict:
    # Envoy's OpenTelemetry tracer needs an exporter; sampling is 0%, so nothing is ever sent. The tracer
    # is there to create and continue W3C `traceparent` and to put %TRACE_ID% in the access log.
    return _static_cluster("trace-sink", "127.0.0.1", rt.admin_port)


def _address(host: str, port: int) -> dict:
    return {"socket_address": {"address": host, "port_value": port}}


def _static_cluster(name: str, host: str, port: int) -> dict:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(host, port)}}]}],
        },
    }


GATEWAY_SECRET = "gateway"
SDS_FILE = f"sds-{GATEWAY_SECRET}.yaml"


def _gateway_secret(rt: GatewayRuntime) -> dict:
    """The gateway's certificate as an SDS secret: Envoy watches the PKI directory and, when a rotation moves a
    new pair into place, serves it on new connections at once, with no listener or cluster replaced."""
    return {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
        "name": GATEWAY_SECRET,
        "tls_certificate": {
            "certificate_chain": {"filename": str(rt.pki_dir / "gateway.crt")},
            "private_key": {"filename": str(rt.pki_dir / "gateway.key")},
            "watched_directory": {"path": str(rt.pki_dir)},
        },
    }


def _tls_files(rt: GatewayRuntime) -> dict:
    return {"tls_certificate_sds_secret_configs": [{"name": GATEWAY_SECRET, "sds_config": _file_source(rt, SDS_FILE)}]}


def _spiffe(name: str) -> str:
    return f"spiffe://{TRUST_DOMAIN}/svc/{name}"


def _upstream_tls(rt: GatewayRuntime, service: str) -> dict:
    """The gateway presents its identity to the service and checks the service is who it should be."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": {
                **_tls_files(rt),
                "validation_context": {
                    "trusted_ca": {"filename": str(rt.pki_dir / "ca.crt")},
                    "match_typed_subject_alt_names": [
                        {"san_type": "URI", "matcher": {"exact": _spiffe(service)}}
                    ],
                },
            },
        },
    }


def _downstream_tls(rt: GatewayRuntime) -> dict:
    """The mesh listener only talks to clients holding a certificate from the mesh CA."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
            "require_client_certificate": True,
            "common_tls_context": {
                **_tls_files(rt),
                "validation_context": {
                    "trusted_ca": {"filename": str(rt.pki_dir / "ca.crt")},
                    "match_typed_subject_alt_names": [
                        {"san_type": "URI", "matcher": {"prefix": f"spiffe://{TRUST_DOMAIN}/svc/"}}
                    ],
                },
            },
        },
    }


def _clusters(mesh: ResolvedMesh, rt: GatewayRuntime) -> list[dict]:
    clusters = []
    for service in mesh.services:
        for version in service.versions:
            cluster = {
                "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
                **_static_cluster(cluster_name(service.name, version), "127.0.0.1",
                                  rt.service_ports[service.name][version]),
                **({"transport_socket": _upstream_tls(rt, service.name)} if rt.mtls else {}),
                # Active health checks tell `finopti status` (through the admin API) whether each service
                # answers, without any client other than the gateway talking to services.
                # The check is also what takes a crashed or hung service out of the pool and puts it back
                # (see envoy_traffic.outlier_detection): every second, 2 s to answer (a busy machine), out
                # after 2 failures, back after 1 pass.
                "health_checks": [{
                    "timeout": "2s",
                    "interval": "1s",
                    "no_traffic_interval": "1s",
                    "unhealthy_threshold": 2,
                    "healthy_threshold": 1,
                    "http_health_check": {"path": service.health},
                }],
                # Envoy's default (50%) keeps sending to a lone unhealthy host ("panic"); we want a fast 503.
                # Health changes (an opened circuit) reach the workers at once, not merged over Envoy's
                # default 1 s window during which requests would still reach the ejected backend.
                "common_lb_config": {"healthy_panic_threshold": {"value": 0.0}, "update_merge_window": "0s"},
                # The gateway closes an idle connection before the service would (UPSTREAM_IDLE_SECONDS <
                # runner.KEEP_ALIVE_SECONDS): a request is never sent on a connection the service is closing,
                # which a busy machine answers with a 503 (UC).
                "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "common_http_protocol_options": {"idle_timeout": f"{UPSTREAM_IDLE_SECONDS}s"},
                    "explicit_http_config": {"http_protocol_options": {}},
                }},
            }
            breaker, budget = service.circuit_breaker, service.retry_budget_percent
            if breaker is not None:
                cluster["outlier_detection"] = outlier_detection(breaker)
            if breaker is not None or budget is not None:
                cluster["circuit_breakers"] = circuit_breakers(breaker, budget)
            clusters.append(cluster)
    for backend in (b for b in mesh.backends if b.external):
        if backend.url is not None:
            clusters.append(_external_cluster(backend))
        elif backend.name in rt.external_ports:
            # A platform component on loopback that speaks plain HTTP (Prometheus): no mesh identity to check.
            clusters.append({"@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
                             **_static_cluster(backend.name, "127.0.0.1", rt.external_ports[backend.name])})
    if mesh.identity.provider == "oidc":
        clusters.append(jwks_cluster(rt.jwks_uri))
    return clusters


SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
EXTERNAL_STRIPPED_HEADERS = ("x-forwarded-client-cert", "x-user-email", "x-user-groups", "x-finopti-source",
                             "x-finopti-listener", "x-envoy-expected-rq-timeout-ms", "x-drill", "baggage")


def _external_cluster(backend: ResolvedBackend) -> dict:
    """A service outside the platform (an LLM API) at its declared address: resolved by DNS unless it is an IP,
    TLS verified against the system's CAs with SNI for https, protected by its routes' circuit breaker."""
    url = urlsplit(backend.url)
    host, tls = url.hostname or "", url.scheme == "https"
    port = url.port or (443 if tls else 80)
    try:
        ipaddress.ip_address(host)
        kind = "STATIC"
    except ValueError:
        kind = "LOGICAL_DNS"
    cluster: dict = {
        "@type": "type.googleapis.com/envoy.config.cluster.v3.Cluster",
        **_static_cluster(backend.name, host, port),
        "type": kind,
        "connect_timeout": "5s",
        # One upstream: when the breaker ejects it, answer 503 at once rather than keep sending ("panic").
        "common_lb_config": {"healthy_panic_threshold": {"value": 0.0}},
    }
    if kind == "LOGICAL_DNS":
        cluster["dns_lookup_family"] = "V4_PREFERRED"
    if tls:
        cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": host,
            "common_tls_context": {"validation_context": {
                "trusted_ca": {"filename": SYSTEM_CA_BUNDLE},
                "match_typed_subject_alt_names": [{"san_type": "DNS", "matcher": {"exact": host}}],
            }},
        }}
    if backend.circuit_breaker is not None:
        cluster["outlier_detection"] = outlier_detection(backend.circuit_breaker)
    if backend.circuit_breaker is not None or backend.retry_budget_percent is not None:
        cluster["circuit_breakers"] = circuit_breakers(backend.circuit_breaker, backend.retry_budget_percent)
    return cluster


def _access_log(listener: str, email_claim: str) -> list[dict]:
    fields = {
        "ts": "%START_TIME(%Y-%m-%dT%H:%M:%S.%3fZ)%",
        "level": "info",
        "service": "gateway",
        "message": "access",
        "listener": listener,
        "method": "%REQ(:METHOD)%",
        "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
        "route": "%ROUTE_NAME%",
        "upstream_service": "%UPSTREAM_CLUSTER%",
        "upstream_host": "%UPSTREAM_HOST%",
        "status": "%RESPONSE_CODE%",
        "response_flags": "%RESPONSE_FLAGS%",
        "response_code_details": "%RESPONSE_CODE_DETAILS%",
        "duration_ms": "%DURATION%",
        "upstream_duration_ms": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
        "bytes_received": "%BYTES_RECEIVED%",
        "bytes_sent": "%BYTES_SENT%",
        "request_id": REQUEST_ID,  # a request refused before it had one: the id its answer carries
        "trace_id": "%TRACE_ID%",
        # This hop's span: the traceparent the upstream gets names it as parent (the trace view's exact match).
        "span_id": "%SPAN_ID%",
        # Only a verified token names the user: a request refused before the gateway strips the identity
        # headers (a credential in the query, a path it cannot read) still carries a client's x-user-email.
        "user": f"%CEL(metadata.filter_metadata['{JWT_NAMESPACE}']['{JWT_PAYLOAD}']['{email_claim}'])%",
        "source": "%DOWNSTREAM_PEER_URI_SAN%",
        "user_agent": "%REQ(USER-AGENT)%",
        "drill": "%REQ(X-DRILL)%",  # a drill's mark, carried on by every service: which hops a drill request made
        **access_log_fields(),
        # Never a credential: no Authorization or Cookie value is logged, and the edge redacts the query.
    }
    if listener == "edge":  # what the client called its request, if short and plain (see envoy_edge)
        fields["client_request_id"] = f"%REQ({CLIENT_REQUEST_ID_HEADER.upper()})%"
    return [
        {
            "name": "envoy.access_loggers.stdout",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                "log_format": {"json_format": fields},
            },
        }
    ]


def _local_replies(mesh: ResolvedMesh, listener: str) -> dict:
    """Errors the gateway answers itself become JSON like every service's errors (`finopti.mesh.replies`, shared
    with the APISIX rendering). There is no catch-all format: a 403 from the policy service already carries its
    JSON reason and passes through as is."""

    def mapper(reply: replies.Reply, status: int | None = None) -> dict:
        code = status or reply.status
        m: dict = {
            "filter": {"status_code_filter": {"comparison": {"op": "EQ", "value": {
                "default_value": code, "runtime_key": f"finopti.local_reply.{code}"}}}},
        }
        if reply.fixed:
            m["body"] = {"inline_string": reply.message}
        # A backend's failure names the service the request was for (the message says what failed).
        backend = {"backend": "%UPSTREAM_CLUSTER%"} if code >= 500 else {}
        m["body_format_override"] = reply_body({**_reply_fields(), "error": reply.error, **backend})
        if reply.retry_after is not None:
            m["headers_to_add"] = [{"header": {"key": "retry-after", "value": str(reply.retry_after)},
                                    "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]
        return m

    def unread(reply: replies.Reply, details: str | None = None) -> dict:
        """A request refused while it was read: it may have no request id yet, so its answer gets a new one."""
        m = mapper(reply)
        if details is not None:
            m["filter"] = {"and_filter": {"filters": [m["filter"], cel_filter(details)]}}
        m["headers_to_add"] = [NEW_REQUEST_ID]
        return m

    # jwt_authn answers 403 for a token with the wrong audience; any token failure is a 401 for us.
    jwt_refused = mapper(replies.UNAUTHORIZED, status=403)
    jwt_refused["filter"] = {"and_filter": {"filters": [jwt_refused["filter"], {"metadata_filter": {
        "matcher": {"filter": "envoy.filters.http.jwt_authn", "path": [{"key": JWT_FAILURE_KEY}],
                    "value": {"present_match": True}},
        "match_if_key_not_found": False}}]}}
    jwt_refused["status_code"] = 401
    # Refused by the codec, or before the gateway gave the request its id (a `#` or an encoded NUL in the path,
    # no Host, a Host that is no authority): nothing of it was handled.
    codec = "response.code_details.startsWith('http1.') || response.code_details.startsWith('http2.')"
    not_handled = f"{codec} || !('x-request-id' in request.headers)"
    # The codec's refusals with a status of their own: an https URL on this plain listener (403) is as
    # malformed as the rest.
    other_codec = unread(replies.MALFORMED)
    other_codec["filter"] = cel_filter(f"response.code != 501 && ({codec})")
    other_codec["status_code"] = replies.MALFORMED.status
    upgrade = mapper(replies.UPGRADE_REFUSED)
    upgrade["filter"] = {"and_filter": {"filters": [upgrade["filter"], cel_filter(
        "response.code_details == 'upgrade_failed'")]}}
    return {
        "mappers": [
            unread(replies.HEADER_WITH_UNDERSCORE, "response.code_details == 'http1.unexpected_underscore'"),
            unread(replies.MALFORMED, not_handled),
            unread(replies.HEADERS_TOO_LARGE),
            unread(replies.REQUEST_TIMEOUT),
            unread(replies.UNSUPPORTED_TRANSFER_ENCODING),
            unread(replies.UPGRADE_REQUIRED),
            other_codec,
            upgrade,
            *refusal_reply_mappers(_reply_fields()),
            # Then: a token that is missing leaves a jwt_failure too (the route may allow that), so the
            # authorization's own refusals must not be taken for token failures.
            *_refusals(mesh, listener),
            jwt_refused,
            mapper(replies.BAD_REQUEST),
            mapper(replies.UNAUTHORIZED),
            mapper(replies.NOT_FOUND),
            mapper(replies.PAYLOAD_TOO_LARGE),
            mapper(replies.RATE_LIMITED),
            mapper(replies.BAD_GATEWAY),
            _flagged(mapper(replies.CIRCUIT_OPEN), "UH"),
            _flagged(mapper(replies.OVERLOADED), "UO"),
            _flagged(mapper(replies.FAULT_INJECTED), "FI"),
            # ext_authz could not ask the policy service (status_on_error): refused, and said so.
            _flagged(mapper(replies.POLICY_UNAVAILABLE), "UAEX"),
            mapper(replies.UNAVAILABLE),
            mapper(replies.TIMEOUT),
        ],
    }


def _refusals(mesh: ResolvedMesh, listener: str) -> list[dict]:
    """The gateway's own authorization refused: the reason rule that matched gives the status and the
    sentence (the Rego's), so a refusal reads the same whichever tier decided."""
    def refused(key: str, value: str) -> dict:
        return {"and_filter": {"filters": [
            {"status_code_filter": {"comparison": {"op": "EQ", "value": {
                "default_value": 403, "runtime_key": "finopti.local_reply.403"}}}},
            {"metadata_filter": {"matcher": {"filter": RBAC_NAMESPACE, "path": [{"key": key}],
                                             "value": {"string_match": {"exact": value}}},
                                 "match_if_key_not_found": False}},
        ]}}

    mappers = []
    for rule, (status, message) in reason_messages(mesh, listener).items():
        error = "unauthorized" if status == 401 else "forbidden"
        mapper: dict = {
            "filter": refused(REASON, rule),
            "body_format_override": reply_body({**_reply_fields(), "message": message, "error": error,
                                                "rule": rule}),
        }
        if status != 403:
            mapper["status_code"] = status
            mapper["headers_to_add"] = [{"header": {"key": "www-authenticate", "value": 'Bearer realm="finopti"'},
                                         "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]
        mappers.append(mapper)
    if mappers:
        # Refused with no reason rule matching: the rule sets disagree (a renderer bug), still a JSON 403.
        mappers.append({"filter": refused(REASONS_RESULT, "allowed"), "body_format_override": reply_body({
            **_reply_fields(), "message": "no rule of the gateway allows this request", "error": "forbidden",
            "rule": "none"})})
    return mappers


def _flagged(mapper: dict, flag: str) -> dict:
    """Narrow a mapper to local replies carrying an Envoy response flag (UH: no healthy host, i.e. the
    circuit is open; UO: overflow; FI: injected fault; UAEX: external authorization refused or failed)."""
    mapper["filter"] = {"and_filter": {"filters": [
        mapper["filter"], {"response_flag_filter": {"flags": [flag]}}]}}
    return mapper


def _reply_fields() -> dict:
    return {
        "message": "%LOCAL_REPLY_BODY%",
        "status": "%RESPONSE_CODE%",
        "reason": "%RESPONSE_CODE_DETAILS%",
        "request_id": REQUEST_ID,
        "trace_id": TRACE_ID,
    }


POLICY_CLUSTER = "policy.v1"
POLICY_TIMEOUT = "1s"
# What the policy service sees of a request besides method and path (Envoy always adds authorization/host).
AUTHZ_HEADERS = ("x-user-email", "x-user-groups", "x-forwarded-client-cert", "traceparent", "x-request-id")


def _ext_authz(listener: str) -> dict:
    """Routes that declare `authz: rego` are decided by the policy service; the filter is off elsewhere.
    Fail closed: if it is down or slower than its timeout, the request is refused with 503, never let
    through."""
    return {
        "name": EXT_AUTHZ_FILTER,
        "disabled": True,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
            "transport_api_version": "V3",
            "failure_mode_allow": False,
            "status_on_error": {"code": 503},
            "http_service": {
                "server_uri": {"uri": "https://policy", "cluster": POLICY_CLUSTER, "timeout": POLICY_TIMEOUT},
                "path_prefix": "/authz",
                "authorization_request": {
                    "allowed_headers": {"patterns": [{"exact": h} for h in AUTHZ_HEADERS]},
                    "headers_to_add": [{"key": "x-finopti-listener", "value": listener}],
                },
                "authorization_response": {
                    "allowed_client_headers": {"patterns": [{"exact": "content-type"},
                                                            {"exact": "www-authenticate"}]},
                },
            },
        },
    }


def _http_filters(mesh: ResolvedMesh, rt: GatewayRuntime, listener: str) -> list[dict]:
    return [
        *([edge_guard_filter()] if listener == "edge" else []),
        {
            "name": "finopti.strip_identity",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
                "mutations": {"request_mutations": [{"remove": h} for h in IDENTITY_HEADERS]},
            },
        },
        {
            "name": "envoy.filters.http.jwt_authn",
            "typed_config": {
                "@type": JWT_AUTHN,
                "providers": {
                    # The verified claims also go to the gateway's own authorization (RBAC).
                    JWT_PROVIDER: {**jwt_provider(mesh.identity, str(rt.jwks_path), rt.jwks_uri, JWT_FAILURE_KEY),
                                   "payload_in_metadata": JWT_PAYLOAD},
                },
                # A token, when sent, must be valid (401 otherwise); whether a route needs one at all is the
                # authorization's call, so a caller refused is told so before being asked to sign in.
                "requirement_map": {JWT_REQUIREMENT: {"requires_any": {"requirements": [
                    {"provider_name": JWT_PROVIDER}, {"allow_missing": {}}]}}},
            },
        },
        # The body limit comes before authorization: ext_authz pausing the stream would defer the 413.
        {
            "name": "envoy.filters.http.buffer",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer",
                "max_request_bytes": mesh.gateway.max_request_bytes,
            },
        },
        *(rbac_filters() if rt.authz else []),
        *([_ext_authz(listener)] if rt.authz and uses_rego(mesh, listener) else []),
        # Only authorized requests spend tokens or meet injected faults.
        rate_limit_filter(),
        fault_filter(),
        {
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        },
    ]


def _listener(name: str, mesh: ResolvedMesh, rt: GatewayRuntime) -> dict:
    host, port = (rt.edge_host, rt.edge_port) if name == "edge" else (rt.mesh_host, rt.mesh_port)
    hcm = {
        "@type": HCM,
        "stat_prefix": name,
        "generate_request_id": True,
        # At the edge the gateway always makes the request id (a client's, if plain, is kept next to it);
        # inside the mesh the id travels on from hop to hop.
        "preserve_external_request_id": name != "edge",
        # Before the tracer and the request id: drop invalid trace context, set the client's id aside.
        "early_header_mutation_extensions": early_header_mutations(name),
        # Clients get the request id back, so a problem report can name the request.
        "always_set_request_id_in_response": True,
        "use_remote_address": name == "edge",
        # On the mesh listener the caller's verified SPIFFE id travels as x-forwarded-client-cert (URI=...),
        # replacing anything the client sent; the edge strips the header.
        "forward_client_cert_details": "SANITIZE_SET" if name == "mesh" else "SANITIZE",
        **({"set_current_client_cert_details": {"uri": True}} if name == "mesh" else {}),
        "tracing": {
            "random_sampling": {"value": 0},
            "provider": {
                "name": "envoy.tracers.opentelemetry",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                    "service_name": "gateway",
                    "http_service": {
                        "http_uri": {"uri": "http://127.0.0.1/v1/traces", "cluster": "trace-sink",
                                     "timeout": "1s"},
                    },
                },
            },
        },
        "rds": {"route_config_name": name, "config_source": _file_source(rt, f"rds-{name}.yaml")},
        "access_log": _access_log(name, mesh.identity.email_claim),
        "local_reply_config": _local_replies(mesh, name),
        "http_filters": _http_filters(mesh, rt, name),
        # Envoy and the policy see the same path: no `..` or `//` tricks around a route's prefix.
        "normalize_path": True,
        "merge_slashes": True,
        # Bounds on reading a request from outside: timeouts for slow clients, header limits, no `_` in names.
        **(edge_protocol_options(mesh.gateway.edge) if name == "edge" else {}),
    }
    hcm_filter = {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
    limit = [edge_connection_limit(mesh.gateway.edge)] if name == "edge" else []
    chain: dict = {"filters": [*limit, hcm_filter]}
    if name == "mesh" and rt.mtls:
        chain["transport_socket"] = _downstream_tls(rt)
    return {
        "@type": "type.googleapis.com/envoy.config.listener.v3.Listener",
        "name": name,
        "address": _address(host, port),
        "filter_chains": [chain],
    }


def _per_route_authz(route: ResolvedRoute, mesh: ResolvedMesh, authz: bool) -> dict:
    return route_authz(route, mesh) if authz else {}


def _route_config(listener: str, mesh: ResolvedMesh, rt: GatewayRuntime) -> dict:
    routes = [e for route in most_specific_first(mesh.routes_on(listener))
              for e in _routes(route, _per_route_authz(route, mesh, rt.authz))]
    vhost_authz = {"typed_per_filter_config": virtual_host_authz()} if rt.authz else {}
    if listener == "edge":
        virtual_hosts = edge_virtual_hosts(mesh.gateway.edge, rt.edge_port, routes, vhost_authz)
    else:  # services call the mesh listener by address; their identity is the certificate, not a name
        virtual_hosts = [{"name": listener, "domains": ["*"], "routes": routes, **vhost_authz}]
    return {
        "@type": "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        "name": listener,
        "virtual_hosts": virtual_hosts,
    }


def _routes(route: ResolvedRoute, authz: dict) -> list[dict]:
    """One mesh.yaml route becomes up to a few Envoy routes, tried in order: a pinned version per canary
    header value, then (when retries are on and the route is not marked idempotent) safe methods with the
    full retry policy before the other methods with retries only where nothing reached the backend."""
    policy = route.policy
    if route.external:
        target: dict = {"cluster": route.backend}
        if route.external_url:  # the service outside expects its own name as Host (and as SNI, see the cluster)
            target["host_rewrite_literal"] = urlsplit(route.external_url).netloc
        entry = _route_entry(route, policy, [], target, authz, mutations=False)
        if route.external_url:  # and learns nothing of the mesh: no caller certificate, no identity headers
            entry["request_headers_to_remove"] = list(EXTERNAL_STRIPPED_HEADERS)
        return [entry]
    targets: list[tuple[list[dict], dict]] = []
    if policy.canary is not None:
        for version in policy.canary.weights:
            header = [{"name": policy.canary.pin_header, "string_match": {"exact": version}}]
            targets.append((header, {"cluster": cluster_name(route.backend, version)}))
    targets.append(([], _split(route.backend, route.versions, policy)))
    entries = []
    for headers, target in targets:
        split_by_method = policy.retries is not None and policy.idempotent is None
        if split_by_method:
            safe = [{"name": ":method", "string_match": {"safe_regex": {"regex": "|".join(SAFE_METHODS)}}}]
            entries.append(_route_entry(route, policy, headers + safe, target, authz, mutations=False))
        entries.append(_route_entry(route, policy, headers, target, authz, mutations=split_by_method))
    return entries


def _split(service: str, versions: tuple[str, ...], policy: RoutePolicy) -> dict:
    if len(versions) == 1:
        return {"cluster": cluster_name(service, versions[0])}
    weights = policy.canary.weights if policy.canary else {versions[0]: 100}
    # Envoy wants every weighted cluster listed; versions without a weight get none of the traffic.
    return {"weighted_clusters": {"clusters": [
        {"name": cluster_name(service, v), "weight": weights.get(v, 0)} for v in versions
    ]}}


def _route_entry(route: ResolvedRoute, policy: RoutePolicy, headers: list[dict], target: dict, authz: dict,
                 mutations: bool) -> dict:
    match: dict = {"path": route.path} if route.exact else {"prefix": route.path}
    if headers:
        match["headers"] = headers
    action: dict = dict(target)
    if route.rewrite is not None:
        action["prefix_rewrite"] = route.rewrite
    action["timeout"] = f"{policy.timeout if policy.timeout is not None else DEFAULT_TIMEOUT}s"
    if policy.retries is not None:
        retry = retry_policy(policy.retries, policy.per_try_timeout, mutations=mutations)
        if retry:
            action["retry_policy"] = retry
    per_filter: dict = {"envoy.filters.http.jwt_authn": {
        "@type": JWT_PER_ROUTE,
        **({"disabled": True} if route.auth == "anonymous" else {"requirement_name": JWT_REQUIREMENT}),
    }, **authz}
    if policy.fault is not None:
        per_filter[FAULT_FILTER] = route_fault(policy.fault)
    if policy.rate_limit is not None:
        per_filter[RATE_LIMIT_FILTER] = route_rate_limit(policy.rate_limit)
    return {"name": route.name, "match": match, "route": action, "typed_per_filter_config": per_filter,
            # Per-route request, error and latency stats (envoy_vhost_route_* in Prometheus).
            "stat_prefix": route_stat_prefix(route)}
