"""The front door's controls (`finopti.mesh.edge_rules`) in the compose bundle's words, and their check.

- APISIX: one global rule (`finopti-edge`, rewrite phase, before any route's plugin) that answers, on the edge
  listener, 400 for a header name with `_`, 421 for a Host that is not one of `gateway.edge.hosts`, 400 for a
  credential in the query, 403
  for a state-changing request from another origin or marked cross-site; it also drops a `jwt` cookie
  (jwt-auth would read one) and sets the access log's path with credential values redacted, on every listener.
  Global rules run even when no route matches, so a foreign Host never gets as far as a 404.
- Alloy and Promtail: a redaction stage before anything else reads the line (like the local collector's,
  `finopti.logs.line_guard`), with a counter of the lines it touched.
- `check_edge_controls`: what `finopti verify-compose` checks of all this in a rendered bundle.
"""

import re
from pathlib import Path

import yaml

from finopti.mesh import replies
from finopti.mesh.edge_rules import (
    CREDENTIAL_IN_PATH,
    CREDENTIAL_IN_QUERY,
    CREDENTIAL_MESSAGE,
    CREDENTIAL_PATH_MESSAGE,
    CREDENTIAL_WORDS,
    QUERY_CREDENTIALS_LUA,
    REDACTED,
    STATE_CHANGING_METHODS,
    lua_string,
)
from finopti.mesh.model import EdgeListener

EDGE_RULE = "finopti-edge"
PATH_VARIABLE = "finopti_path"  # the access log's path, with credential values redacted
DEV_SIGN_IN_ENV = "FINOPTI_DEV_SIGN_IN"
REDACTED_LINES = "redacted_lines_total"  # Alloy: loki_process_custom_…; Promtail: promtail_custom_…


def _lua_set(values) -> str:
    return "{" + ", ".join(f"[{lua_string(v)}] = true" for v in values) + "}"


_GUARD = QUERY_CREDENTIALS_LUA + """
local core = require("apisix.core")

local function refuse(status, error, message, extra)
  local body = {error = error, message = message, status = status,
                request_id = core.request.header(nil, "x-request-id"), trace_id = ngx.var.opentelemetry_trace_id}
  for k, v in pairs(extra or {}) do body[k] = v end
  return core.response.exit(status, body)
end

-- The host name of a Host header, lowercased, without its port; nil when something else follows it.
local function host_name(authority)
  local a = (authority or ""):lower()
  local name, rest = a:match("^(%[[%x:.]*%])(.*)$")
  if not name then name, rest = a:match("^([^:]*)(.*)$") end
  if rest ~= "" and not rest:match("^:%d+$") then return nil end
  return name
end

return function(conf, ctx)
  -- Only openid-connect, after verifying a bearer token, may set X-Userinfo (the verified claims); a token
  -- in X-Access-Token is not in the Authorization header.
  core.request.set_header(ctx, "X-Userinfo", nil)
  core.request.set_header(ctx, "X-Access-Token", nil)
  local redacted, name = finopti_scan_query(ngx.var.request_uri or "")
  ngx.var.finopti_path = redacted or ngx.var.request_uri
  if ngx.var.finopti_listener ~= "edge" then return end
  local headers = ngx.req.get_headers(MAX_HEADERS)
  -- nginx passes `x_user_email` on (APISIX turns underscores_in_headers on), and some servers read it as the
  -- identity header the gateway strips: refused, as the local gateway does.
  for header in pairs(headers) do
    if header:find("_", 1, true) then
      return refuse(400, UNDERSCORE.error, UNDERSCORE.message, {reason = "header name " .. header:sub(1, 64)})
    end
  end
  -- nginx's $host drops a trailing dot and takes an absolute URI's host: both it and the header must pass.
  if not (HOSTS[ngx.var.host] and HOSTS[host_name(ngx.var.http_host)]) then
    return refuse(421, "unknown_host", UNKNOWN_HOST_MESSAGE)
  end
  if redacted and not name then
    return refuse(400, PATH_CREDENTIAL_ERROR, PATH_CREDENTIAL_MESSAGE)
  end
  if redacted then
    return refuse(400, CREDENTIAL_ERROR, CREDENTIAL_MESSAGE .. "'" .. name .. "'", {param = name})
  end
  if STATE_CHANGING[ngx.req.get_method()] then
    -- Same origin: the page was served by this edge under the Host it is calling (already one of HOSTS).
    local origin, host = headers["origin"], (headers["host"] or ""):lower()
    if origin ~= nil and (type(origin) ~= "string"
        or (origin:lower() ~= "http://" .. host and origin:lower() ~= "https://" .. host)) then
      return refuse(403, "foreign_origin", FOREIGN_ORIGIN_MESSAGE)
    end
    if headers["sec-fetch-site"] == "cross-site" then
      return refuse(403, "cross_site_request", CROSS_SITE_MESSAGE)
    end
  end
  -- jwt-auth also reads a `jwt` cookie: a token there never counts, only Authorization: Bearer does.
  local cookie = headers["cookie"]
  if type(cookie) == "string" and cookie:lower():find("jwt", 1, true) then
    local kept = {}
    for part in cookie:gmatch("[^;]+") do
      if not part:match("^%s*[Jj][Ww][Tt]%s*=") then kept[#kept + 1] = part end
    end
    core.request.set_header(ctx, "cookie", #kept > 0 and table.concat(kept, ";") or nil)
  end
end
"""


def edge_guard_function(edge: EdgeListener) -> str:
    hosts = ", ".join(edge.hosts)
    constants = {
        "HOSTS": _lua_set(edge.hosts),
        "STATE_CHANGING": _lua_set(STATE_CHANGING_METHODS),
        "MAX_HEADERS": str(replies.MAX_HEADERS),
        "UNDERSCORE": f"{{error = {lua_string(replies.HEADER_WITH_UNDERSCORE.error)}, "
                      f"message = {lua_string(replies.HEADER_WITH_UNDERSCORE.message)}}}",
        "CREDENTIAL_ERROR": lua_string(CREDENTIAL_IN_QUERY),
        "CREDENTIAL_MESSAGE": lua_string(CREDENTIAL_MESSAGE),
        "PATH_CREDENTIAL_ERROR": lua_string(CREDENTIAL_IN_PATH),
        "PATH_CREDENTIAL_MESSAGE": lua_string(CREDENTIAL_PATH_MESSAGE),
        "UNKNOWN_HOST_MESSAGE": lua_string(f"this gateway serves only the hosts {hosts} (gateway.edge.hosts in "
                                           "mesh.yaml); the Host of this request is not one of them"),
        "FOREIGN_ORIGIN_MESSAGE": lua_string("a state-changing request from another origin is refused (CSRF): the "
                                             "page must be served by this edge under one of its host names"),
        "CROSS_SITE_MESSAGE": lua_string("a state-changing request that the browser marks cross-site is refused "
                                         "(CSRF)"),
    }
    return "".join(f"local {k} = {v}\n" for k, v in constants.items()) + _GUARD


def edge_global_rule(edge: EdgeListener) -> dict:
    return {"id": EDGE_RULE, "plugins": {
        "serverless-pre-function": {"phase": "rewrite", "functions": [edge_guard_function(edge)]}}}


# --- log collectors ----------------------------------------------------------------------------------------

_WORDS = "|".join(w.replace("-", "\\-") for w in (*CREDENTIAL_WORDS, "cookie"))
# (kind, RE2 expression): every capture group is a secret, replaced with [REDACTED]. The same forms as the
# local collector's redaction (finopti.logs.line_guard), written for RE2.
REDACTION_RULES = (
    ("query_parameter", rf'(?i)[?&;][^=&;\s"\\#]*(?:{_WORDS})[^=&;\s"\\#]*=([^&;\s"\\#]+)'),
    ("json_field", rf'(?i)"[a-z0-9_.\-]*(?:{_WORDS})[a-z0-9_.\-]*"\s*:\s*"((?:[^"\\]|\\.)+)"'),
    ("authorization", r"(?i)\b(?:bearer|basic) +([A-Za-z0-9._~+/=\-]{8,})"),
    ("url_password", r'://[^/\s"@:]+:([^/\s"@]+)@'),
    ("jwt", r"(eyJ[A-Za-z0-9_\-]{4,}\.eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*)"),
)


def _any_secret() -> str:
    return "|".join(f"(?:{expression.removeprefix('(?i)')})" for _, expression in REDACTION_RULES)


def _alloy_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def alloy_redaction_stages(job: str) -> str:
    """Alloy stages, placed first in `loki.process`: count the lines holding a secret, then replace each."""
    selector = f'{{job="{job}"}} |~ `(?i){_any_secret()}`'  # a raw LogQL string: no second escaping
    replaces = "".join(f"  // {kind}\n  stage.replace {{\n    expression = {_alloy_string(expression)}\n"
                       f"    replace    = {_alloy_string(REDACTED)}\n  }}\n" for kind, expression in REDACTION_RULES)
    return (
        "  // Credentials that reached a line anyway are replaced before anything reads it (second line of\n"
        "  // defence behind the gateway), and the lines are counted.\n"
        f"  stage.match {{\n    selector = {_alloy_string(selector)}\n    stage.metrics {{\n"
        f"      metric.counter {{\n        name        = \"{REDACTED_LINES}\"\n"
        "        description = \"Lines in which a credential was replaced\"\n"
        "        match_all   = true\n        action      = \"inc\"\n      }\n    }\n  }\n" + replaces
    )


def promtail_redaction_stages(job: str) -> list[dict]:
    selector = f'{{job="{job}"}} |~ `(?i){_any_secret()}`'
    return [
        {"match": {"selector": selector, "stages": [{"metrics": {REDACTED_LINES: {
            "type": "Counter", "description": "Lines in which a credential was replaced",
            "config": {"match_all": True, "action": "inc"}}}}]}},
        *({"replace": {"expression": expression, "replace": REDACTED}} for _, expression in REDACTION_RULES),
    ]


# --- verify-compose ------------------------------------------------------------------------------------------

def _load(path: Path):
    try:
        return yaml.safe_load(path.read_text())
    except (FileNotFoundError, yaml.YAMLError):
        return None


_HOSTS_LINE = re.compile(r'^local HOSTS = \{(.*)\}$', re.MULTILINE)


def guard_hosts(function: str) -> list[str] | None:
    """The Host allow-list of a rendered guard function, or None when it is not one of ours unchanged."""
    match = _HOSTS_LINE.search(function)
    if match is None:
        return None
    hosts = re.findall(r'\["([^"]*)"\] = true', match[1])
    try:
        edge = EdgeListener(hosts=hosts)
    except ValueError:  # a wildcard or another name that is not a plain host
        return None
    return hosts if edge_guard_function(edge) == function else None


def check_edge_controls(bundle: Path, compose: dict) -> list[str]:
    """The front door's controls in a rendered bundle: problems found (empty: all there)."""
    problems = []
    apisix = _load(bundle / "apisix" / "apisix.yaml") or {}
    rules = {r.get("id"): r for r in apisix.get("global_rules") or []}
    guard = ((rules.get(EDGE_RULE) or {}).get("plugins") or {}).get("serverless-pre-function") or {}
    functions = guard.get("functions") or []
    if guard.get("phase") != "rewrite" or len(functions) != 1 or guard_hosts(functions[0]) is None:
        problems.append(f"apisix.yaml: global rule '{EDGE_RULE}' (Host allow-list, credentials in the query, "
                        "CSRF) is missing, or is not the one finopti renders for plain host names")
    config = _load(bundle / "apisix" / "config.yaml") or {}
    log_format = str(((config.get("nginx_config") or {}).get("http") or {}).get("access_log_format", ""))
    if f"${PATH_VARIABLE}" not in log_format or "$request_uri" in log_format:
        problems.append(f"apisix/config.yaml: the access log must write the redacted ${PATH_VARIABLE}, not "
                        "$request_uri")
    for route in apisix.get("routes") or []:
        auth = (route.get("plugins") or {}).get("openid-connect")
        if auth is not None and not auth.get("bearer_only"):
            problems.append(f"apisix.yaml: route '{route.get('id')}' takes tokens other than a bearer header")
    alloy = bundle / "alloy" / "config.alloy"
    if alloy.exists() and not all(_alloy_string(e) in alloy.read_text() for _, e in REDACTION_RULES):
        problems.append("alloy/config.alloy: the credential redaction stage is missing")
    promtail = _load(bundle / "promtail" / "config.yml")
    if promtail is not None:
        stages = [s for c in promtail.get("scrape_configs") or [] for s in c.get("pipeline_stages") or []]
        wanted = [{"replace": {"expression": e, "replace": REDACTED}} for _, e in REDACTION_RULES]
        if not all(w in stages for w in wanted):
            problems.append("promtail/config.yml: the credential redaction stage is missing")
    for name, service in (compose.get("services") or {}).items():
        env = service.get("environment") or {}
        if (service.get("labels") or {}).get("finopti.service") == "ui" and str(env.get(DEV_SIGN_IN_ENV)) != "false":
            problems.append(f"service '{name}': development sign-in must be off ({DEV_SIGN_IN_ENV}=false)")
    return problems
