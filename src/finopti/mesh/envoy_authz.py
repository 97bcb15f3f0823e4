"""The gateway's own authorization: what mesh.yaml and policies/data.json declare, rendered into Envoy's RBAC
filter (as Istio renders its AuthorizationPolicy), so a request is decided inside the gateway with no network
call. Routes that declare `authz: rego` are decided by the policy service (ext_authz) instead.

Per route, two RBAC filters with rule sets over the same facts:

- `finopti.authz.reasons` (shadow rules only, DENY): mutually exclusive policies, one per reason to refuse,
  in the order the Rego states them (`caller:<service>`, `sign-in`, `no-role`, `unknown-action:<agent>`,
  `needs-role:<route>[:<action>]`, `no-rule`). They decide nothing; the matching one's name says why a
  request would be refused, which the local reply turns into the same JSON answer (401 or 403, same
  sentence) as the Rego. (A filter of its own: Envoy writes the shadow result after the enforced one's
  refusal has been formatted.)
- `finopti.authz` (enforced rules, ALLOW): one policy per way a request may be granted (`public`,
  `any-role`, `role:<r>`, `action:<a>:role:<r>`). Nothing else passes: a request no policy grants is
  refused, and a route without rules is refused by the listener's empty default (fail closed).

Facts: the caller is the verified SPIFFE id of the client certificate (mesh listener); the user's claims
come from jwt_authn's `payload_in_metadata`; roles of users and groups are expanded from data.json here,
at render time (a change of data.json re-renders the rules).

Every decision lands in the access log (`authz`, `authz_rule`, `authz_reason`) and in Envoy's RBAC
counters; `finopti.logs.trace` shows it under each hop.
"""

from __future__ import annotations

import re

from finopti.errors import FinoptiError
from finopti.mesh.model import EXTERNAL_CALLERS
from finopti.mesh.resolved import ResolvedMesh, ResolvedRoute
from finopti.pki import TRUST_DOMAIN

RBAC_FILTER = "finopti.authz"
REASONS_FILTER = "finopti.authz.reasons"
RBAC = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
RBAC_PER_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute"
FILTER_CONFIG = "type.googleapis.com/envoy.config.route.v3.FilterConfig"
EXT_AUTHZ_FILTER = "envoy.filters.http.ext_authz"
RBAC_NAMESPACE = "envoy.filters.http.rbac"  # where the RBAC filter writes its dynamic metadata
JWT_NAMESPACE = "envoy.filters.http.jwt_authn"
JWT_PAYLOAD = "jwt_payload"  # jwt_authn's payload_in_metadata key
RULES_PREFIX = "authz_"
REASONS_PREFIX = "authz_reason_"
# Dynamic metadata keys the RBAC filter writes (prefixed with the rules' stat prefixes).
ENGINE_RESULT = f"{RULES_PREFIX}enforced_engine_result"
GRANTING_RULE = f"{RULES_PREFIX}enforced_effective_policy_id"
REASON = f"{REASONS_PREFIX}shadow_effective_policy_id"
REASONS_RESULT = f"{REASONS_PREFIX}shadow_engine_result"
NO_ROUTE = "no-route"  # a request no route serves: it goes on to the router's 404

SPIFFE_PREFIX = f"spiffe://{TRUST_DOMAIN}/svc/"
# Any mesh identity (finopti.pki: a DNS label); the policy reads the same from x-forwarded-client-cert.
ANY_IDENTITY = re.escape(SPIFFE_PREFIX) + r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"


class AuthzRenderError(FinoptiError):
    """A rule of mesh.yaml or data.json cannot be rendered into the gateway's authorization."""

    exit_code = 2


# ---------------------------------------------------------------- principals (who asks)

NOBODY: dict = {"not_id": {"any": True}}
ANYONE: dict = {"any": True}


def _any_of(ids: list[dict]) -> dict:
    if not ids:
        return NOBODY
    return ids[0] if len(ids) == 1 else {"or_ids": {"ids": ids}}


def _all_of(ids: list[dict]) -> dict:
    ids = [i for i in ids if i is not ANYONE]
    if not ids:
        return ANYONE
    return ids[0] if len(ids) == 1 else {"and_ids": {"ids": ids}}


def _not(principal: dict) -> dict:
    return {"not_id": principal}


def _claim(name: str, value: dict) -> dict:
    return {"metadata": {"filter": JWT_NAMESPACE, "path": [{"key": JWT_PAYLOAD}, {"key": name}], "value": value}}


def _email(email: str) -> dict:
    return _claim("email", {"string_match": {"exact": email}})


def _group(group: str) -> dict:
    # The groups claim is one comma-separated string (the policy splits it on commas and trims spaces) or,
    # from some identity providers, a list.
    listed = r"^(?:.*,)?\s*" + re.escape(group) + r"\s*(?:,.*)?$"
    return _any_of([
        _claim("groups", {"string_match": {"safe_regex": {"regex": listed}}}),
        _claim("groups", {"list_match": {"one_of": {"string_match": {"exact": group}}}}),
    ])


def _caller(identity: str) -> dict:
    return {"authenticated": {"principal_name": {"exact": SPIFFE_PREFIX + identity}}}


class _Facts:
    """The principals a route's rules are made of, from the resolved mesh and its role data."""

    def __init__(self, mesh: ResolvedMesh):
        if mesh.authz is None:
            raise AuthzRenderError("the gateway's authorization needs the role data (policies/data.json): "
                                   "resolve the mesh with load_authz_data(policy_dir)")
        self.authz = mesh.authz
        self.identities = sorted({b.name for b in mesh.services} | EXTERNAL_CALLERS)
        self.signed_in = _all_of([_claim("email", {"present_match": True}),
                                  _not(_claim("email", {"string_match": {"exact": ""}}))])

    def holds(self, role: str) -> dict:
        return _any_of([_email(u) for u in self.authz.users_with(role)]
                       + [_group(g) for g in self.authz.groups_with(role)])

    def holds_any(self, roles: tuple[str, ...] | None = None) -> dict:
        roles = self.authz.roles() if roles is None else roles
        users = sorted({u for r in roles for u in self.authz.users_with(r)})
        groups = sorted({g for r in roles for g in self.authz.groups_with(r)})
        return _any_of([_email(u) for u in users] + [_group(g) for g in groups])

    def caller_ok(self, route: ResolvedRoute) -> dict:
        if route.listener != "mesh":
            return ANYONE
        if route.allowed_callers is None:
            return {"authenticated": {"principal_name": {"safe_regex": {"regex": ANY_IDENTITY}}}}
        return _any_of([_caller(c) for c in route.allowed_callers])


def _path(path: str) -> dict:
    return {"url_path": {"path": {"exact": path}}}


def _policy(principal: dict) -> dict:
    return {"permissions": [{"any": True}], "principals": [principal]}


# ---------------------------------------------------------------- the rules of one route


def _grants(route: ResolvedRoute, facts: _Facts) -> dict[str, dict]:
    """Policy name -> principal, for every way a request on this route may be allowed."""
    caller = facts.caller_ok(route)
    if route.auth == "anonymous":
        return {"public": caller}
    signed_in = _all_of([caller, facts.signed_in])
    if route.is_agent:
        return {f"action:{a.name}:role:{r}": _all_of([signed_in, _path(route.actions_prefix + a.name), facts.holds(r)])
                for a in route.actions or () for r in a.roles if route.actions_prefix is not None}
    if route.any_role:
        return {"any-role": _all_of([signed_in, facts.holds_any()])}
    return {f"role:{r}": _all_of([signed_in, facts.holds(r)]) for r in route.roles or ()}


def _reasons(route: ResolvedRoute, facts: _Facts) -> dict[str, dict]:
    """Policy name -> principal, one per reason to refuse, mutually exclusive, in the policy's order."""
    reasons: dict[str, dict] = {}
    caller = facts.caller_ok(route)
    if route.listener == "mesh":
        allowed = set(route.allowed_callers) if route.allowed_callers is not None else set(facts.identities)
        for identity in facts.identities:
            if identity not in allowed:
                reasons[f"caller:{identity}"] = _caller(identity)
        known = _any_of([_caller(i) for i in facts.identities])
        reasons["caller"] = _all_of([_not(caller), _not(known)])  # no certificate, or an identity we do not know
    if route.auth == "anonymous":
        return reasons
    reasons["sign-in"] = _all_of([caller, _not(facts.signed_in)])
    has_role = facts.holds_any()
    reasons["no-role"] = _all_of([caller, facts.signed_in, _not(has_role)])
    user_with_role = _all_of([caller, facts.signed_in, has_role])
    if route.is_agent:
        paths = {a.name: _path(route.actions_prefix + a.name) for a in route.actions or ()
                 if route.actions_prefix is not None}
        reasons[f"unknown-action:{route.backend}"] = _all_of([user_with_role, _not(_any_of(list(paths.values())))])
        for action in route.actions or ():
            if action.name in paths:
                reasons[f"needs-role:{route.name}:{action.name}"] = _all_of(
                    [user_with_role, paths[action.name], _not(facts.holds_any(action.roles))])
    elif route.roles is None:
        reasons["no-rule"] = user_with_role
    elif not route.any_role:
        reasons[f"needs-role:{route.name}"] = _all_of([user_with_role, _not(facts.holds_any(route.roles))])
    return reasons


def _policies(principals: dict[str, dict]) -> dict:
    return {name: _policy(p) for name, p in principals.items()}


def virtual_host_authz() -> dict:
    """The rules of a route that has none of its own (Envoy looks at the route, then its virtual host):
    nothing is granted, so a route whose rules were lost is closed."""
    return {RBAC_FILTER: {"@type": RBAC_PER_ROUTE, "rbac": {
        "rules": {"action": "ALLOW", "policies": {}}, "rules_stat_prefix": RULES_PREFIX}}}


def route_authz(route: ResolvedRoute, mesh: ResolvedMesh) -> dict:
    """The route's `typed_per_filter_config` entries: its RBAC rules, or (for `authz: rego`) the policy
    service's check instead."""
    if route.authz == "rego":
        return {REASONS_FILTER: {"@type": FILTER_CONFIG, "disabled": True},
                RBAC_FILTER: {"@type": FILTER_CONFIG, "disabled": True},
                EXT_AUTHZ_FILTER: {"@type": FILTER_CONFIG, "config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
                    "check_settings": {}}}}
    facts = _Facts(mesh)
    reasons = {"shadow_rules": {"action": "DENY", "policies": _policies(_reasons(route, facts))},
               "shadow_rules_stat_prefix": REASONS_PREFIX, "track_per_rule_stats": True}
    grants = {"rules": {"action": "ALLOW", "policies": _policies(_grants(route, facts))},
              "rules_stat_prefix": RULES_PREFIX, "track_per_rule_stats": True}
    return {REASONS_FILTER: {"@type": RBAC_PER_ROUTE, "rbac": reasons},
            RBAC_FILTER: {"@type": RBAC_PER_ROUTE, "rbac": grants}}


def rbac_filters() -> list[dict]:
    """The listener's two RBAC filters. Their own rules apply only where no route matched (Envoy then finds
    no per-route or virtual-host rules): such a request goes on to the router's 404."""
    return [
        {"name": REASONS_FILTER, "typed_config": {"@type": RBAC, "shadow_rules_stat_prefix": REASONS_PREFIX}},
        {"name": RBAC_FILTER, "typed_config": {
            "@type": RBAC, "rules": {"action": "ALLOW", "policies": {NO_ROUTE: _policy(ANYONE)}},
            "rules_stat_prefix": RULES_PREFIX, "track_per_rule_stats": True}},
    ]


def uses_rego(mesh: ResolvedMesh, listener: str) -> bool:
    return any(r.authz == "rego" for r in mesh.routes_on(listener))


# ---------------------------------------------------------------- answers and log fields


def _role_phrase(roles: tuple[str, ...]) -> str:
    if len(roles) == 1:
        return f"role {roles[0]}"
    return "one of the roles " + ", ".join(sorted(roles))


USER = "%REQ(X-USER-EMAIL)%"


def reason_messages(mesh: ResolvedMesh, listener: str) -> dict[str, tuple[int, str]]:
    """Reason rule -> (status, message) for the routes of one listener: the same sentences as
    policies/authz.rego's, with the user and the route filled in by the gateway."""
    routes = [r for r in mesh.routes_on(listener) if r.authz == "native"]
    if not routes:
        return {}
    messages: dict[str, tuple[int, str]] = {}
    facts = _Facts(mesh)
    if listener == "mesh":
        for identity in facts.identities:
            messages[f"caller:{identity}"] = (403, f"service '{identity}' may not call route '%ROUTE_NAME%'")
        messages["caller"] = (403, "an unidentified caller (no client certificate) may not call route "
                                   "'%ROUTE_NAME%'")
    messages["sign-in"] = (401, "sign-in required to call route '%ROUTE_NAME%'")
    messages["no-role"] = (403, f"user {USER} has no role")
    messages["no-rule"] = (403, "no rule allows call route '%ROUTE_NAME%'")
    for route in routes:
        if route.auth == "anonymous":
            continue
        if route.is_agent:
            messages[f"unknown-action:{route.backend}"] = (
                403, f"'%PATH(NQ:PATH)%' is not a known {route.backend} action")
            for action in route.actions or ():
                messages[f"needs-role:{route.name}:{action.name}"] = (
                    403, f"user {USER} needs {_role_phrase(action.roles)} to run {action.name} on {route.backend}")
        elif route.roles is not None and not route.any_role:
            messages[f"needs-role:{route.name}"] = (
                403, f"user {USER} needs {_role_phrase(route.roles)} to call route '{route.name}'")
    return messages


def access_log_fields() -> dict[str, str]:
    """The decision of each request, in the gateway's access line (empty on routes decided by Rego)."""
    return {
        "authz": f"%DYNAMIC_METADATA({RBAC_NAMESPACE}:{ENGINE_RESULT})%",
        "authz_rule": f"%DYNAMIC_METADATA({RBAC_NAMESPACE}:{GRANTING_RULE})%",
        "authz_reason": f"%DYNAMIC_METADATA({RBAC_NAMESPACE}:{REASON})%",
    }
