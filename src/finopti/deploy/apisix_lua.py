"""The Lua the APISIX rendering runs (serverless functions, `exit-transformer`, an nginx snippet), as templates.

APISIX compiles each function when it loads the configuration (the plugins' `check_schema`), so a syntax error
here rejects the item that carries it; the real-APISIX tests load every template.
"""

import json

from finopti.mesh import replies
from finopti.mesh.edge_rules import CLIENT_REQUEST_ID_CHARS, CLIENT_REQUEST_ID_HEADER, CLIENT_REQUEST_ID_MAX


def lua_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid Lua string literal for the text we put in


def lua_list(values) -> str:
    return "{" + ", ".join(lua_string(v) for v in values) + "}"


def lua_replies() -> str:
    """`finopti.mesh.replies.BY_STATUS` as a Lua table: status -> {error, message, fixed}."""
    rows = [f"[{r.status}] = {{error = {lua_string(r.error)}, message = {lua_string(r.message)}, "
            f"fixed = {'true' if r.fixed else 'false'}}}" for r in replies.BY_STATUS.values()]
    return "{" + ", ".join(rows) + "}"


# Runs after authentication on every mesh.yaml route (rewrite phase), after `apisix_identity.CLAIMS_LUA`: the
# identity the policy and the services see is only what the gateway verified, never what a client sent.
IDENTITY = """return function(conf, ctx)
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
    if email then
      core.request.set_header(ctx, "x-user-email", email)
      ngx.var.finopti_user = email  -- the access log's user: only ever a verified token's
    end
    if groups then core.request.set_header(ctx, "x-user-groups", groups) end
  end
  -- The opa plugin (next, access phase) sends the request's headers to OPA from this cache: credentials stay
  -- out of the policy input, as with the local gateway. The request itself keeps them for the service.
  local seen = core.table.clone(core.request.headers(ctx))
  for _, name in ipairs(%(secret_headers)s) do seen[name] = nil end
  ctx.headers = seen
  -- The caller and the listener are for the policy only: the service gets the user's identity, as from the
  -- local gateway (cleared on the request itself, not in the policy's copy).
  ngx.req.clear_header("x-finopti-source")
  ngx.req.clear_header("x-finopti-listener")
  -- ngx.req's own changes mark APISIX's header cache stale, which would refill the policy's copy from the
  -- request (credentials in, caller out): the copy is meant to differ, so keep it.
  local has_a6, a6_request = pcall(require, "resty.apisix.request")
  if has_a6 then a6_request.clear_request_header() end
end"""

# The access log fields nginx has no variable for, stamped when the answer's headers go out and again when
# its last byte does (a body-less answer never reaches the body filter).
ACCESS_STAMP = """local function stamp(ctx)
  ngx.update_time()
  ngx.var.finopti_route = ctx.var.route_name or ""
  ngx.var.finopti_duration_ms = math.floor((ngx.now() - ngx.req.start_time()) * 1000 + 0.5)
  local upstream = tonumber((ngx.var.upstream_response_time or ""):match("([%d.]+)%s*$"))
  if upstream then ngx.var.finopti_upstream_ms = math.floor(upstream * 1000 + 0.5) end
end"""

# api-breaker names its counters after the request's Host and path, so each path of a route (each agent action)
# would count its failures apart and a failing backend would be cut off path by path. Its `_meta.pre_function`
# (before its access and log phases) names them after the route instead, as Envoy keeps one state per backend
# cluster; limit-conn, which runs right after it in both phases on every route that has a breaker, puts the
# path back before anything else reads it.
BREAKER_KEY = """return function(conf, ctx)
  ctx.var.uri = "/finopti-route/" .. tostring(ctx.route_id)
end"""
BREAKER_KEY_RESTORE = """return function(conf, ctx)
  ctx.var.uri = ngx.var.uri
end"""

# `exit-transformer` (a chunk called with code, body, headers): every answer APISIX's own code gives
# (`core.response.exit`: no route, jwt-auth, opa, limit-count, limit-conn, api-breaker, fault-injection...)
# becomes the project's error body. A plugin's JSON body keeps its `error` and `message` (and other fields);
# a known message names its error; otherwise the status decides.
EXIT_REPLY = """local code, body, headers = ...
if type(code) ~= "number" or code < 400 then return code, body, headers end
local cjson = require("cjson.safe")
local replies = %(replies)s
local known = %(known)s
local reply = replies[code] or {error = "error", message = "the gateway refused the request", fixed = false}
local detail, message = body, nil
if type(detail) == "string" then
  local decoded = cjson.decode(detail)
  if type(decoded) == "table" then
    detail = decoded
  elseif not detail:find("^%%s*<") then
    message = (detail:gsub("%%s+$", ""))
  end
end
local out = {}
if type(detail) == "table" then
  for k, v in pairs(detail) do out[k] = v end
  message = detail.message or detail.error_msg
  out.error_msg = nil
end
local replaced = %(replaced)s
local swap = message and replaced[message]
if swap then code, out.error, message = swap.status, swap.error, swap.message end
local err = type(out.error) == "string" and out.error or known[message] or reply.error
if code == 403 and (body == nil or body == "") then
  -- The opa plugin answers a bare 403 when it cannot ask OPA: refused (fail closed), and said so.
  code, err, message = %(policy_status)d, %(policy_error)s, %(policy_message)s
elseif reply.fixed and type(out.error) ~= "string" then
  message = reply.message
end
if type(message) ~= "string" or message == "" then message = reply.message end
out.error, out.message, out.status = err, message, code
out.trace_id = ngx.var.opentelemetry_trace_id or ""
out.request_id = ngx.var.http_x_request_id or ""
ngx.ctx.finopti_replied = true
headers = headers or {}
headers["content-type"] = "application/json"
local retry_after = %(retry_after)s
if retry_after[err] then headers["retry-after"] = retry_after[err] end
return code, out, headers"""

# request-id's `_meta.pre_function`, which APISIX calls before each of that plugin's phases:
# - rewrite (request-id has no access phase): at the edge the gateway makes the request id, as the local gateway
#   does; a client's own id is kept beside it as x-client-request-id when it is short and plain
#   (`finopti.mesh.edge_rules`), dropped otherwise;
# - header filter: the access log stamp, and errors nginx produced after routing (502 connection refused, 504
#   timeout...), which carry its HTML page: they get the project's body instead (the body filter follows).
#   Upstream answers pass through untouched.
HEADER_FILTER = """return function(conf, ctx)
  local phase = ngx.get_phase()
  if phase == "access" then  -- APISIX runs its rewrite phase in nginx's access phase
    if ngx.var.finopti_listener ~= "edge" then return end
    local core = require("apisix.core")
    local given = core.request.header(ctx, "x-request-id")
    core.request.set_header(ctx, %(client_header)s, nil)
    if type(given) == "string" and #given <= %(client_max)d and given:match("^%(client_chars)s+$") then
      core.request.set_header(ctx, %(client_header)s, given)
    end
    core.request.set_header(ctx, "x-request-id", nil)
    return
  end
  if phase ~= "header_filter" then return end
  stamp(ctx)
  local status = ngx.status
  if status < 400 or ngx.ctx.finopti_replied then return end
  local core = require("apisix.core")
  if core.response.get_response_source(ctx) == "upstream" then return end
  local replies = %(replies)s
  -- No answer ever came from the backend (refused, reset, TLS failure): nginx says 502, the local gateway 503
  -- `unavailable`, which is what it is. 502 stays for a backend that answered something unreadable.
  if status == 502 and ((ngx.var.upstream_header_time or "-"):match("([^%%s,:]+)%%s*$") or "-") == "-" then
    status = %(unavailable)d
    ngx.status = status
  end
  local reply = replies[status] or {error = "error", message = "the gateway could not answer"}
  ctx.finopti_reply = require("cjson.safe").encode({
    error = reply.error, message = reply.message, status = status,
    trace_id = ngx.var.opentelemetry_trace_id or "", request_id = ngx.var.http_x_request_id or "",
  }) .. "\\n"
  core.response.set_header("content-type", "application/json")
  core.response.set_header("content-length", #ctx.finopti_reply)
  core.response.set_header("content-encoding", nil)
end"""

BODY_FILTER = """return function(conf, ctx)
  if ngx.arg[2] then stamp(ctx) end
  if not ctx.finopti_reply then return end
  if ctx.finopti_reply_sent then
    ngx.arg[1] = ""
    return
  end
  ngx.arg[1] = ctx.finopti_reply
  ngx.arg[2] = true
  ctx.finopti_reply_sent = true
end"""



def header_filter() -> str:
    return ACCESS_STAMP + "\n" + HEADER_FILTER % {
        "replies": lua_replies(), "unavailable": replies.UNAVAILABLE.status,
        "client_header": lua_string(CLIENT_REQUEST_ID_HEADER),
        "client_max": CLIENT_REQUEST_ID_MAX, "client_chars": _lua_class(CLIENT_REQUEST_ID_CHARS)}


def _lua_class(chars: str) -> str:
    """A regex character class's content ('A-Za-z0-9._:-') as a Lua pattern class ('[A-Za-z0-9%.%_%:%-]')."""
    out, i = [], 0
    while i < len(chars):
        if i + 2 < len(chars) and chars[i + 1] == "-" and chars[i].isalnum() and chars[i + 2].isalnum():
            out.append(chars[i:i + 3])
            i += 3
        else:
            out.append("%" + chars[i] if not chars[i].isalnum() else chars[i])
            i += 1
    return "[" + "".join(out) + "]"


def body_filter() -> str:
    return ACCESS_STAMP + "\n" + BODY_FILTER


# nginx's own early errors (a body over client_max_body_size, a malformed request) happen before APISIX's
# phases run: `error_page` sends them to this location. No trace context was set up yet: continue the
# client's traceparent, or start a trace id, and keep or make the request id as the request-id plugin would.
# A URI, not a named location: nginx cannot redirect a request whose request line it could not read (a `%00`, a
# URI over its buffers, CONNECT) to a named one ("empty URI"), and answered those with its own HTML 500.
EARLY_ERROR_LOCATION = """error_page 400 413 414 494 501 /__finopti_early_error;
location = /__finopti_early_error {
    internal;
    default_type application/json;
    content_by_lua_block {
        local replies = %(replies)s
        local status = ngx.status
        local reply = replies[status] or {error = "bad_request", message = "the request is malformed"}
        local trace = (ngx.var.http_traceparent or ""):match("^%%x%%x%%-(%%x+)%%-%%x+%%-%%x%%x$")
        if not trace or #trace ~= 32 then trace = ngx.var.request_id end
        local rid = ngx.var.http_x_request_id
        if not rid or rid == "" then
            local r = ngx.var.request_id
            rid = r:sub(1, 8) .. "-" .. r:sub(9, 12) .. "-" .. r:sub(13, 16) .. "-" .. r:sub(17, 20) .. "-" .. r:sub(21)
        end
        ngx.header["x-request-id"] = rid
        ngx.req.set_header("x-request-id", rid)  -- for the access log's request_id
        ngx.var.opentelemetry_trace_id = trace
        ngx.var.opentelemetry_span_id = ngx.var.request_id:sub(17)  -- this answer's own span, as on every line
        ngx.update_time()
        ngx.var.finopti_duration_ms = math.floor((ngx.now() - ngx.req.start_time()) * 1000 + 0.5)
        ngx.say(require("cjson.safe").encode({
            error = reply.error, message = reply.message, status = status, trace_id = trace, request_id = rid,
        }))
    }
}"""

# The readiness check (`GET /ready` on the gateway's loopback-only listener), for the container healthcheck:
# 503 while any configured item failed to load (APISIX skips an item it rejects and serves the rest) or
# while no upstream node accepts a connection; 200 with the same report otherwise.
READY = """return function(conf, ctx)
  local core = require("apisix.core")
  local expected = %(expected)s
  local not_loaded = {}
  for _, kind in ipairs(%(kinds)s) do
    local loaded = {}
    local obj = core.config.fetch_created_obj("/" .. kind)
    for _, item in ipairs(obj and obj.values or {}) do
      if item.value and item.value.id ~= nil then loaded[tostring(item.value.id)] = true end
    end
    for _, id in ipairs(expected[kind]) do
      if not loaded[id] then table.insert(not_loaded, kind .. "/" .. id) end
    end
  end
  local reachable, unreachable = 0, {}
  for _, node in ipairs(%(nodes)s) do
    local sock = ngx.socket.tcp()
    sock:settimeout(%(timeout_ms)d)
    local ok, err = sock:connect(node[1], node[2])
    if ok then
      reachable = reachable + 1
      sock:close()
    else
      table.insert(unreachable, node[1] .. ":" .. node[2] .. " (" .. tostring(err) .. ")")
    end
  end
  local problems = {}
  if #not_loaded > 0 then
    table.insert(problems, #not_loaded .. " configured item(s) failed to load: " .. table.concat(not_loaded, ", "))
  end
  if reachable == 0 and #unreachable > 0 then
    table.insert(problems, "no upstream node accepts a connection")
  end
  local report = {ready = #problems == 0, not_loaded = not_loaded, reachable = reachable, unreachable = unreachable}
  setmetatable(report.not_loaded, core.json.array_mt)
  setmetatable(report.unreachable, core.json.array_mt)
  if #problems > 0 then
    report.error, report.message = "not_ready", table.concat(problems, "; ")
    return 503, report
  end
  return 200, report
end"""
