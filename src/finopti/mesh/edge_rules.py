"""The front door's rules in engine-neutral terms, shared by the Envoy and APISIX renderings.

- Credentials travel only in `Authorization: Bearer`. A query parameter whose (decoded, case-folded) name
  contains a credential word, or whose value is a JWT, and a JWT in the path itself, are refused with 400 and
  redacted from the access log.
  Both data planes run Lua, so the scanner is one Lua chunk (`QUERY_CREDENTIALS_LUA`) used by both.
- The edge serves only the host names of `gateway.edge.hosts`, with or without the listener's port, and a
  state-changing browser request must come from one of those origins.
- Client-chosen request ids are kept only when they are short and plain, next to the gateway's own id.
"""

from finopti.mesh.model import EdgeListener

# A parameter name containing one of these (after percent-decoding and lower-casing) is a credential.
CREDENTIAL_WORDS = ("token", "jwt", "apikey", "api_key", "api-key", "password", "passwd", "secret",
                    "authorization", "bearer", "credential", "session_id", "sessionid")
REDACTED = "[REDACTED]"
STATE_CHANGING_METHODS = ("POST", "PUT", "PATCH", "DELETE")
CLIENT_REQUEST_ID_HEADER = "x-client-request-id"
# Kept only if made of these characters and at most this long; anything else is dropped.
CLIENT_REQUEST_ID_CHARS = "A-Za-z0-9._:-"
CLIENT_REQUEST_ID_MAX = 128

CREDENTIAL_IN_QUERY = "credential_in_query"
CREDENTIAL_IN_PATH = "credential_in_path"
_WHERE = ("credentials belong in the Authorization header (Authorization: Bearer <token>), never in the URL, where "
          "logs, browser history and Referer headers keep them; ")
CREDENTIAL_MESSAGE = _WHERE + "remove the query parameter "
CREDENTIAL_PATH_MESSAGE = _WHERE + "this request's path holds a token (a JWT)"


def authorities(edge: EdgeListener, port: int) -> list[str]:
    """Every Host value the edge answers: each declared host alone and with the listener's port."""
    return [a for host in edge.hosts for a in (host, f"{host}:{port}")]


def origins(edge: EdgeListener, port: int) -> list[str]:
    """The browser origins allowed to change state: the edge's own authorities, over http or https."""
    return [f"{scheme}://{a}" for a in authorities(edge, port) for scheme in ("http", "https")]


def lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# The scanner: `finopti_scan_query(path)` -> (path with credential values redacted, first credential's
# name) or nil; the name is nil when only the path itself held a credential (a JWT in a segment: a magic link,
# a token pasted into a URL). Names are percent-decoded up to three times (a double-encoded `access%255Ftoken`
# is still `access_token` to some parser down the line), `+` is a space, and `&` and `;` both separate pairs.
QUERY_CREDENTIALS_LUA = """
local FINOPTI_CREDENTIAL_WORDS = {FINOPTI_WORDS}
local FINOPTI_REDACTED = FINOPTI_REDACTED_TEXT

-- JWTs replaced, and how many: a header and a payload of base64url JSON ("eyJ" and at least four more characters,
-- the header's "eyJ" anywhere in its segment), a dot after each, then the signature. Found in one pass over runs of
-- the token alphabet split at their dots, never by a pattern tried at every "eyJ": on a path of "eyJeyJ..." that was
-- quadratic (5 s of a gateway worker for one 57 KB request).
local function finopti_redact_jwts(s)
  if not s:find("eyJ", 1, true) then return s, 0 end  -- most paths and values: no walk over their runs
  local count = 0
  local redacted = s:gsub("[%w_%.%-]+", function(run)
    if not run:find("eyJ", 1, true) then return nil end
    local parts, out, i = {}, {}, 1
    for part in (run .. "."):gmatch("([^.]*)%.") do parts[#parts + 1] = part end
    while i <= #parts do
      local at = parts[i]:find("eyJ", 1, true)
      if at and #parts[i] - at >= 6 and i + 2 <= #parts and parts[i + 1]:sub(1, 3) == "eyJ"
          and #parts[i + 1] >= 7 then
        out[#out + 1] = parts[i]:sub(1, at - 1) .. FINOPTI_REDACTED
        count = count + 1
        i = i + 3
      else
        out[#out + 1] = parts[i]
        i = i + 1
      end
    end
    return table.concat(out, ".")
  end)
  return redacted, count
end

local function finopti_unescape(s)
  for _ = 1, 3 do
    local decoded = s:gsub("%+", " "):gsub("%%(%x%x)", function(hex)
      return string.char(tonumber(hex, 16))
    end)
    if decoded == s then break end
    s = decoded
  end
  return s
end

local function finopti_is_credential(name, value)
  local lower = name:lower()
  for _, word in ipairs(FINOPTI_CREDENTIAL_WORDS) do
    if lower:find(word, 1, true) then return true end
  end
  local _, jwts = finopti_redact_jwts(value)
  return jwts > 0
end

function finopti_scan_query(path)
  local mark = path:find("?", 1, true)
  local segments, in_path = finopti_redact_jwts(mark and path:sub(1, mark - 1) or path)
  if not mark then
    if in_path == 0 then return nil end
    return segments, nil
  end
  local out, found = {segments .. "?"}, nil
  for pair, sep in path:sub(mark + 1):gmatch("([^&;]*)([&;]?)") do
    local eq = pair:find("=", 1, true)
    local name = finopti_unescape(eq and pair:sub(1, eq - 1) or pair)
    local value = finopti_unescape(eq and pair:sub(eq + 1) or "")
    if pair ~= "" and finopti_is_credential(name, value) then
      -- Only the name's plain characters are kept: a decoded name may carry the token itself.
      local shown = name:match("^[^=]*"):gsub("[^%w._-]", ""):sub(1, 64)
      if shown == "" then shown = "(unnamed)" end
      found = found or shown
      pair = shown .. "=" .. FINOPTI_REDACTED
    end
    out[#out + 1] = pair .. sep
  end
  if not found and in_path == 0 then return nil end
  return table.concat(out), found
end
""".replace("{FINOPTI_WORDS}", "{" + ", ".join(lua_string(w) for w in CREDENTIAL_WORDS) + "}").replace(
    "FINOPTI_REDACTED_TEXT", lua_string(REDACTED))
