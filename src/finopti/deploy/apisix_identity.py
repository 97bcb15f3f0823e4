"""Users' identity in APISIX's words, the twin of `finopti.mesh.envoy_identity`.

- `dev`: `jwt-auth` with the development identity provider's public key from an environment variable (one key;
  rotating it means editing the variable and restarting APISIX).
- `oidc`: `openid-connect` in bearer-only mode with the provider's JWKS (`use_jwks`), found by discovery from the
  issuer: the discovery document's issuer is the only one trusted, the key set is cached per key for
  `jwks_cache` seconds, and a token signed with a key not yet cached makes APISIX fetch the set again at once
  (lua-resty-openidc), so a rotation needs no restart. The audience must include the configured one
  (`claim_validator`). The verified claims reach the identity function as `X-Userinfo` (base64 JSON).

Either way only `Authorization: Bearer` counts: the edge guard refuses tokens in the query and drops a `jwt`
cookie (`finopti.deploy.edge_controls`), and openid-connect's other input, `X-Access-Token`, is dropped too.
"""

from finopti.mesh.model import Identity
from finopti.oidc import discovery_url

JWT_KEY_ENV = "FINOPTI_JWT_PUBLIC_KEY"
CONSUMER = "finopti_idp"
JWT_CLOCK_SKEW = 60  # seconds


def authentication_plugin(identity: Identity) -> dict:
    """The plugin a route that needs a user carries."""
    if identity.provider == "dev":
        # The consumer is found by the token's issuer; the verified claims go to the identity function.
        return {"jwt-auth": {"key_claim_name": "iss", "store_in_ctx": True}}
    return {"openid-connect": {
        "client_id": identity.audience,
        "discovery": discovery_url(identity.issuer),
        "bearer_only": True,
        "use_jwks": True,
        "jwk_expires_in": max(1, round(identity.jwks_cache)),
        "claim_validator": {"audience": {"required": True, "match_with_client_id": True}},
        "set_userinfo_header": True,
        "set_access_token_header": False,
        "set_id_token_header": False,
        "ssl_verify": identity.issuer.startswith("https://"),
        "realm": "finopti",
    }}


def consumers(identity: Identity) -> list[dict]:
    if identity.provider != "dev":
        return []
    return [{
        "username": CONSUMER,
        "desc": "the identity provider: tokens whose `iss` is its issuer, signed with its key",
        "plugins": {"jwt-auth": {"key": identity.issuer, "algorithm": "RS256", "public_key": f"$env://{JWT_KEY_ENV}",
                                 # nbf/exp leeway, as Envoy's jwt_authn (its default clock skew): without it a
                                 # token is refused in the second it was issued (`nbf` = now).
                                 "lifetime_grace_period": JWT_CLOCK_SKEW}},
    }]


def secret_envs(identity: Identity) -> list[str]:
    """Environment variables APISIX must pass to its workers for this identity."""
    return [JWT_KEY_ENV] if identity.provider == "dev" else []


# The identity function's part: the verified claims, from jwt-auth (dev) or openid-connect (oidc).
CLAIMS_LUA = """local function finopti_claims(ctx, core)
  if ctx.jwt_auth_payload then return ctx.jwt_auth_payload, true end
  local userinfo = core.request.header(ctx, "X-Userinfo")
  core.request.set_header(ctx, "X-Userinfo", nil)
  core.request.set_header(ctx, "X-Access-Token", nil)
  if not userinfo then return nil end
  return core.json.decode(ngx.decode_base64(userinfo) or ""), false
end

local function finopti_claim_text(value)
  if type(value) == "string" then return value end
  if type(value) == "table" then
    local out = {}
    for _, v in ipairs(value) do if type(v) == "string" then out[#out + 1] = v end end
    return table.concat(out, ",")
  end
end
"""
