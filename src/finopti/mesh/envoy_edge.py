"""Front-door security in Envoy's words (the rules are in `edge_rules`): `envoy.py` places these fragments.

- The edge route configuration has two virtual hosts: the declared host names (with and without the port),
  and a catch-all answering 421 for any other Host before any other filter acts on the request.
- A Lua filter, first on the edge, refuses credentials in the URL (a query parameter, a JWT in the path) with 400
  and rewrites `:path` with the values redacted, so the access log never holds them (on the catch-all host it
  only redacts).
- State-changing requests whose Origin is not one of the edge's own, or that a browser marks cross-site,
  meet a route answering 403 before the application routes.
- Early header mutations run before Envoy's tracer and request-id generation: an invalid W3C `traceparent`
  is dropped and the gateway makes a new one (so a fresh trace starts, every line of the request carries its
  id, and the gateway's own error answers can name it), and at the edge a client's `x-request-id` is moved to
  `x-client-request-id` when it is short and plain, dropped otherwise; the gateway always makes its own
  request id there.
- The edge reads requests with bounds: HTTP/1.1 only, at most `max_connections` connections (the rest of the
  gateway's are the mesh listener's), headers and the whole request must arrive in time (408), an idle connection
  is closed, header count and size are limited (431), and header names with `_` are refused.
"""

from finopti.mesh import replies
from finopti.mesh.edge_rules import (
    CLIENT_REQUEST_ID_CHARS,
    CLIENT_REQUEST_ID_HEADER,
    CLIENT_REQUEST_ID_MAX,
    CREDENTIAL_IN_PATH,
    CREDENTIAL_IN_QUERY,
    CREDENTIAL_MESSAGE,
    CREDENTIAL_PATH_MESSAGE,
    QUERY_CREDENTIALS_LUA,
    STATE_CHANGING_METHODS,
    authorities,
    lua_string,
    origins,
)
from finopti.mesh.envoy_authz import EXT_AUTHZ_FILTER, FILTER_CONFIG, RBAC_FILTER, RBAC_PER_ROUTE, RULES_PREFIX
from finopti.mesh.model import EdgeListener

EDGE_GUARD_FILTER = "finopti.edge_guard"
JWT_AUTHN_FILTER = "envoy.filters.http.jwt_authn"
EDGE_METADATA = "finopti.edge"
LUA = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"
WITH_MATCHER = "type.googleapis.com/envoy.extensions.common.matching.v3.ExtensionWithMatcher"
HEADER_INPUT = "type.googleapis.com/envoy.type.matcher.v3.HttpRequestHeaderMatchInput"
SKIP_FILTER = "type.googleapis.com/envoy.extensions.filters.common.matcher.action.v3.SkipFilter"
LUA_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute"
EARLY_HEADER_MUTATION = ("type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3."
                         "HeaderMutation")
CEL_FILTER = "type.googleapis.com/envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter"

# Routes the gateway answers itself; each name is also the `error` code of its JSON answer. Names with `_`
# cannot clash with mesh.yaml's route names (lowercase letters, digits and `-`).
UNKNOWN_HOST = "unknown_host"
FOREIGN_ORIGIN = "foreign_origin"
CROSS_SITE = "cross_site_request"
CONNECT_REFUSED = "connect_refused"
REFUSAL_ROUTES = (UNKNOWN_HOST, FOREIGN_ORIGIN, CROSS_SITE, CONNECT_REFUSED)
BUFFER_FILTER = "envoy.filters.http.buffer"
BUFFER_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.BufferPerRoute"
# CONNECT matches only routes with a connect matcher, never a path. With one, the connection manager refuses
# the tunnel at once (no upgrade is configured: 403 upgrade_refused); without, the request went unrouted
# through the filters and waited for a body that never ends, until request_timeout.
CONNECT = {"connect_matcher": {}}
REDACT_ONLY = "redact_only"

_GUARD = QUERY_CREDENTIALS_LUA + """
function envoy_on_request(request)
  local headers = request:headers()
  local redacted, name = finopti_scan_query(headers:get(":path") or "")
  if not redacted then return end
  headers:replace(":path", redacted)
  if FINOPTI_REFUSE then
    local meta = request:streamInfo():dynamicMetadata()
    if not name then
      meta:set(NAMESPACE, "error", PATH_ERROR)
      return request:respond({[":status"] = "400"}, PATH_MESSAGE)
    end
    meta:set(NAMESPACE, "error", ERROR)
    meta:set(NAMESPACE, "param", name)
    request:respond({[":status"] = "400"}, MESSAGE .. "'" .. name .. "'")
  end
end
"""


def _guard_source(refuse: bool) -> str:
    constants = {"FINOPTI_REFUSE": "true" if refuse else "false", "NAMESPACE": lua_string(EDGE_METADATA),
                 "ERROR": lua_string(CREDENTIAL_IN_QUERY), "MESSAGE": lua_string(CREDENTIAL_MESSAGE),
                 "PATH_ERROR": lua_string(CREDENTIAL_IN_PATH), "PATH_MESSAGE": lua_string(CREDENTIAL_PATH_MESSAGE)}
    return "".join(f"local {k} = {v}\n" for k, v in constants.items()) + _GUARD


def edge_guard_filter() -> dict:
    """Runs first on the edge: refuse (and redact) credentials in the URL. A request whose path has no query and
    nothing that could begin a JWT (`eyJ`) is not handed to Lua at all (a matcher skips the filter): most requests
    pay nothing for the guard."""
    lua = {
        "@type": LUA,
        "default_source_code": {"inline_string": _guard_source(refuse=True)},
        "source_codes": {REDACT_ONLY: {"inline_string": _guard_source(refuse=False)}},
    }
    def lacks(text: str) -> dict:
        return {"not_matcher": {"single_predicate": {
            "input": {"name": "path", "typed_config": {"@type": HEADER_INPUT, "header_name": ":path"}},
            "value_match": {"contains": text}}}}

    no_query = {"and_matcher": {"predicate": [lacks("?"), lacks("eyJ")]}}
    return {
        "name": EDGE_GUARD_FILTER,
        "typed_config": {
            "@type": WITH_MATCHER,
            "extension_config": {"name": EDGE_GUARD_FILTER, "typed_config": lua},
            "xds_matcher": {"matcher_list": {"matchers": [{"predicate": no_query, "on_match": {"action": {
                "name": "skip", "typed_config": {"@type": SKIP_FILTER}}}}]}},
        },
    }


# --- trace context and request ids, before the tracer runs ------------------------------------------------

_TP = "request.headers['traceparent']"
# W3C Trace Context, traceparent: lowercase hex; version ff is invalid; trace and parent ids not all zero;
# version 00 is exactly 55 characters; a higher version is read by its first four fields, which must be
# followed by the end or a dash. Several traceparent headers arrive joined by commas and fail these checks.
# (Envoy's regex size limit keeps each pattern small, hence several.)
TRACEPARENT_VALID = (
    f"'traceparent' in request.headers"
    f" && {_TP}.matches('^[0-9a-f]{{2}}-[0-9a-f]{{32}}-')"
    f" && {_TP}.matches('^[^-]+-[^-]+-[0-9a-f]{{16}}-[0-9a-f]{{2}}(-|$)')"
    f" && !{_TP}.startsWith('ff-')"
    f" && !{_TP}.matches('^[^-]+-0+-')"
    f" && !{_TP}.matches('^[^-]+-[^-]+-0+-')"
    f" && (!{_TP}.startsWith('00-') || size({_TP}) == 55)"
)
_RID = "request.headers['x-request-id']"
CLIENT_REQUEST_ID_VALID = (f"'x-request-id' in request.headers && {_RID}.matches('^[{CLIENT_REQUEST_ID_CHARS}]+$')"
                           f" && size({_RID}) <= {CLIENT_REQUEST_ID_MAX}")
_CHECKED = "x-finopti-checked-"


def _set(header: str, value: str) -> dict:
    # An empty value adds nothing (keep_empty_value is off), which is how a failed check drops a header.
    return {"append": {"header": {"key": header, "value": value}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}}


def _keep_if(header: str, condition: str) -> str:
    return f"%CEL({condition} ? request.headers['{header}'] : '')%"


def _replace_checked(header: str, condition: str, max_length: int | None = None) -> list[dict]:
    """Keep `header` only where `condition` holds: copy it aside if valid, remove it, copy it back."""
    aside = _CHECKED + header
    cut = f":{max_length}" if max_length else ""
    return [{"remove": aside}, _set(aside, _keep_if(header, condition)), {"remove": header},
            _set(header, f"%REQ({aside}){cut}%"), {"remove": aside}]


# Random hex for a new trace: the first 8 characters of a UUID each (a formatter can only cut a value's end).
_RANDOM = [f"x-finopti-random-{i}" for i in range(6)]
NEW_TRACEPARENT = ("00-" + "".join(f"%REQ({h}):8%" for h in _RANDOM[:4]) + "-"
                   + "".join(f"%REQ({h}):8%" for h in _RANDOM[4:]) + "-00")


def _new_trace() -> list[dict]:
    """A request without a valid traceparent gets a new one here rather than from Envoy's tracer, which then
    continues it (same trace id, not sampled, as before): so the trace id is in the request's headers, where
    the gateway's own error answers can read it (a local reply cannot see the tracer's span)."""
    return [*(_set(h, "%UNIQUE_ID%") for h in _RANDOM),
            {"append": {"header": {"key": "traceparent", "value": NEW_TRACEPARENT}, "append_action": "ADD_IF_ABSENT"}},
            *({"remove": h} for h in _RANDOM)]


def early_header_mutations(listener: str) -> list[dict]:
    # A higher version's extra fields are cut: Envoy's tracer reads exactly 55 characters. tracestate means
    # nothing without the valid traceparent it came with; it goes first, while traceparent is unchecked.
    mutations = [
        *_replace_checked("tracestate", f"'tracestate' in request.headers && {TRACEPARENT_VALID}"),
        *_replace_checked("traceparent", TRACEPARENT_VALID, max_length=55),
        *_new_trace(),
    ]
    if listener == "edge":
        mutations += [
            {"remove": CLIENT_REQUEST_ID_HEADER},
            _set(CLIENT_REQUEST_ID_HEADER, _keep_if("x-request-id", CLIENT_REQUEST_ID_VALID)),
        ]
    return [{
        "name": "envoy.http.early_header_mutation.header_mutation",
        "typed_config": {"@type": EARLY_HEADER_MUTATION, "mutations": mutations},
    }]


# --- reading requests: slow and malformed clients ------------------------------------------------------------

def _seconds(value: float) -> str:
    return f"{value:g}s"


def edge_protocol_options(edge: EdgeListener) -> dict:
    """The edge's connection manager settings for reading requests. Envoy's defaults wait for ever for headers
    and body (a client at 1 byte/s holds a connection as long as it likes) and accept `_` in header names."""
    return {
        # HTTP/1.1 only, as browsers speak to a plain-HTTP origin and as the compose bundle's nginx serves: by
        # default Envoy also took HTTP/2 with prior knowledge (h2c), a second protocol and its own refusals (a
        # header name with `_` was a stream reset, no JSON, no request id) for no client of ours.
        "codec_type": "HTTP1",
        # `%2F` and `%5C` are refused: Envoy routes on the path with them escaped, a backend may read them as `/` and
        # `\` (Prometheus answered `/api/metrics/..%2F..%2F-%2Freload` with a redirect to its lifecycle API). No
        # path of ours has one, so the gateway and every backend see the same path segments.
        "path_with_escaped_slashes_action": "REJECT_REQUEST",
        "request_headers_timeout": _seconds(edge.header_timeout),
        "request_timeout": _seconds(edge.request_timeout),
        "max_request_headers_kb": replies.MAX_HEADERS_KB,
        "common_http_protocol_options": {
            "idle_timeout": _seconds(edge.idle_timeout),
            "max_headers_count": replies.MAX_HEADERS,
            # `x_user_email` is not stripped as `x-user-email` is, and some servers (CGI, nginx's
            # underscores_in_headers, WSGI) read the two as one: refused, not guessed at.
            "headers_with_underscores_action": "REJECT_REQUEST",
        },
    }


def edge_connection_limit(edge: EdgeListener) -> dict:
    """The edge's own share of the gateway's connections. The overload manager's limit counts both listeners:
    10,000 idle connections opened at the edge (1 s of work for one local client) left the mesh listener refusing
    every service's call, the whole platform down, while they stayed open."""
    return {"name": "envoy.filters.network.connection_limit", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit",
        "stat_prefix": "edge", "max_connections": edge.max_connections}}


# --- host names and origins ---------------------------------------------------------------------------------

def _answered_by_gateway() -> dict:
    """Per-route config for a route the gateway answers itself with a refusal: no token check, no policy call,
    and the gateway's authorization lets everyone through to that refusal (an explicit rule, like every route's,
    so a route without rules still stands out as closed)."""
    everyone = {"permissions": [{"any": True}], "principals": [{"any": True}]}
    return {
        **{name: {"@type": FILTER_CONFIG, "disabled": True} for name in (JWT_AUTHN_FILTER, EXT_AUTHZ_FILTER)},
        # Answered without waiting for a body (a CONNECT's never ends).
        BUFFER_FILTER: {"@type": BUFFER_PER_ROUTE, "disabled": True},
        RBAC_FILTER: {"@type": RBAC_PER_ROUTE, "rbac": {"rules": {"action": "ALLOW", "policies": {
            "refusal": everyone}}, "rules_stat_prefix": RULES_PREFIX}},
    }


def _refusal(name: str, match: dict, status: int, message: str) -> dict:
    return {"name": name, "match": match, "direct_response": {"status": status, "body": {"inline_string": message}},
            "typed_per_filter_config": _answered_by_gateway()}


def _methods() -> dict:
    return {"name": ":method", "string_match": {"safe_regex": {"regex": "|".join(STATE_CHANGING_METHODS)}}}


def origin_refusals(edge: EdgeListener, port: int) -> list[dict]:
    """Placed before the application routes: a state-changing request from a page of another origin (CSRF,
    or DNS rebinding that got past the Host check) is refused. Requests without Origin (CLI, scripts) pass.
    CONNECT is refused at once (see `CONNECT`)."""
    foreign = [{"name": "origin", "string_match": {"exact": o, "ignore_case": True}, "invert_match": True}
               for o in origins(edge, port)]
    return [
        _refusal(CONNECT_REFUSED, CONNECT, 405, "CONNECT is not served: this gateway is not a proxy"),
        _refusal(FOREIGN_ORIGIN, {"prefix": "/", "headers": [_methods(), {"name": "origin", "present_match": True},
                                                            *foreign]},
                 403, "a state-changing request from another origin is refused (CSRF): the page must be served "
                 "by this edge under one of its host names"),
        _refusal(CROSS_SITE, {"prefix": "/", "headers": [_methods(), {"name": "sec-fetch-site",
                                                                      "string_match": {"exact": "cross-site"}}]},
                 403, "a state-changing request that the browser marks cross-site is refused (CSRF)"),
    ]


def edge_virtual_hosts(edge: EdgeListener, port: int, routes: list[dict], vhost_config: dict) -> list[dict]:
    """The declared hosts get the routes (and `vhost_config`); any other Host (DNS rebinding, a forged Host)
    gets 421."""
    hosts = ", ".join(edge.hosts)
    return [
        {"name": "edge", "domains": authorities(edge, port), "routes": origin_refusals(edge, port) + routes,
         **vhost_config},
        {
            "name": "edge-unknown-host",
            "domains": ["*"],
            "routes": [_refusal(UNKNOWN_HOST, match, 421,
                                f"this gateway serves only the hosts {hosts} (gateway.edge.hosts in mesh.yaml), "
                                "with or without its port; the Host of this request is not one of them")
                       for match in ({"prefix": "/"}, CONNECT)],
            "typed_per_filter_config": {**vhost_config.get("typed_per_filter_config", {}),
                                        EDGE_GUARD_FILTER: {"@type": LUA_PER_ROUTE, "name": REDACT_ONLY}},
        },
    ]


# --- JSON answers --------------------------------------------------------------------------------------------

CEL_FORMATTER = "type.googleapis.com/envoy.extensions.formatter.cel.v3.Cel"
# Ids for every answer the gateway gives itself. The request id is the request's, or, for a request refused
# before its headers were read (no id yet), the one the reply mapper put on the answer; the access log reads
# it the same way. The trace id is read from the request's traceparent (always valid by then, see
# `_new_trace`); a request that was never read has none.
REQUEST_ID = ("%CEL('x-request-id' in request.headers ? request.headers['x-request-id'] "
              ": response.headers['x-request-id'])%")
TRACE_ID = "%CEL(request.headers['traceparent'].substring(3, 35))%"
NEW_REQUEST_ID = {"header": {"key": "x-request-id", "value": "%UNIQUE_ID%"}, "append_action": "ADD_IF_ABSENT"}


def reply_body(fields: dict) -> dict:
    """A local reply's JSON body format (CEL's string functions on, for TRACE_ID)."""
    return {"json_format": fields, "formatters": [{"name": "envoy.formatter.cel", "typed_config": {
        "@type": CEL_FORMATTER, "cel_config": {"enable_string_functions": True}}}]}


def cel_filter(expression: str) -> dict:
    return {"extension_filter": {"name": "envoy.access_loggers.extension_filters.cel", "typed_config": {
        "@type": CEL_FILTER, "expression": expression}}}


def refusal_reply_mappers(reply_fields: dict) -> list[dict]:
    """Local-reply mappers for the edge's own refusals; they come before the generic per-status ones."""
    credential = {
        "filter": {"metadata_filter": {
            "matcher": {"filter": EDGE_METADATA, "path": [{"key": "error"}], "value": {"present_match": True}},
            "match_if_key_not_found": False}},
        "body_format_override": reply_body({**reply_fields, "error": f"%DYNAMIC_METADATA({EDGE_METADATA}:error)%",
                                            "param": f"%DYNAMIC_METADATA({EDGE_METADATA}:param)%"}),
    }
    names = ", ".join(f"'{n}'" for n in REFUSAL_ROUTES)
    routes = {
        "filter": cel_filter(f"xds.route_name in [{names}]"),
        "body_format_override": reply_body({**reply_fields, "error": "%ROUTE_NAME%"}),
    }
    return [credential, routes]
