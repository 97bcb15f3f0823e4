"""Both authorization tiers decide alike: the gateway's native rules (Envoy RBAC rendered from mesh.yaml and
data.json), observed through a real Envoy, against the Rego (policies/authz.rego) asked through the policy
service's OPA API, over every combination of user, caller, route, agent action, method and listener.

They must agree on allow/deny, on 401 vs 403, and on the sentence that explains a refusal. A variant whose
native rules were rendered from different role data must be caught (the test can fail)."""

import copy
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest
from conftest import REPO

from finopti.mesh.model import load_mesh
from finopti.mesh.resolved import ResolvedMesh, load_authz_data, parse_authz_data, resolve
from finopti.policy import build_input_from_envoy, match_route
from finopti.testing.authz_gateway import AuthzGateway

POLICIES = REPO / "policies"
METHODS = ("GET", "POST")


@dataclass(frozen=True)
class User:
    label: str
    email: str | None  # None: the token carries no email claim
    groups: tuple[str, ...] = ()
    signed_in: bool = True


@dataclass(frozen=True)
class Case:
    user: User
    caller: str | None
    listener: str
    method: str
    path: str


def users(data: dict) -> list[User]:
    """Every user of the role data (each role, several roles, none), someone unknown, users known only by
    their groups, a token without an email claim, and nobody signed in."""
    roles = data["finopti"]["roles"]
    found = [User(email, email) for email in sorted(roles["users"])]
    found.append(User("unknown", "mallory@evil.example"))
    found += [User(f"group {g}", "x@corp.example", (g,)) for g in sorted(roles["groups"])]
    found.append(User("groups, spaced", "y@corp.example", (" sre ", "finops-viewers")))
    found.append(User("unknown group", "z@corp.example", ("nobody-group",)))
    found.append(User("no email claim", None, ("sre",)))
    found.append(User("anonymous", None, signed_in=False))
    return found


def paths(mesh: ResolvedMesh) -> list[str]:
    """A path into every route, and into every action of every agent route (and next to them)."""
    found = []
    for route in mesh.routes:
        found.append(route.path if route.exact else route.path + "probe")
        if route.actions_prefix is not None:
            found.append(route.actions_prefix.rstrip("/"))
            found.append(route.actions_prefix + "not_an_action")
            backend = mesh.backend(route.backend)
            for action in backend.actions or ():
                found.append(route.actions_prefix + action.name)
    return sorted(set(found))


def route_table(mesh: ResolvedMesh) -> list[dict]:
    return [{"name": r.name, "listener": r.listener, "path": r.path, "exact": r.exact} for r in mesh.routes]


# For a caller the route refuses, the caller must be refused before the user counts (403, not 401): these
# users stand for each kind of answer the user would otherwise get.
REFUSED_CALLER_USERS = ("anonymous", "dave@finopti.dev", "erin@finopti.dev", "no email claim")


def cases(mesh: ResolvedMesh, data: dict) -> list[Case]:
    """Every path, on the listener that serves it: every user x every caller the route accepts, and every
    other caller (each mesh identity, none) with the users of REFUSED_CALLER_USERS; the method alternating
    along the enumeration (neither tier reads it, both see both). Every path on the other listener too, for
    one user and two callers, with each method."""
    table = route_table(mesh)
    callers = [None, *sorted({b.name for b in mesh.services} | {"cli", "collector", "prometheus"})]
    every: list[Case] = []
    for path in paths(mesh):
        for listener in ("edge", "mesh"):
            listener_callers = callers if listener == "mesh" else [None]
            route_name = match_route(table, listener, path)
            if route_name is None:
                erin = User("erin@finopti.dev", "erin@finopti.dev")
                every += [Case(erin, c, listener, m, path) for c in listener_callers[-2:] for m in METHODS]
                continue
            route = mesh.route(route_name)
            for caller in listener_callers:
                accepted = listener == "edge" or (caller is not None and (
                    route.allowed_callers is None or caller in route.allowed_callers))
                for user in users(data):
                    if accepted or user.label in REFUSED_CALLER_USERS:
                        every.append(Case(user, caller, listener, METHODS[len(every) % 2], path))
    return every


def headers_for(user: User) -> dict:
    """What jwt_authn's claim_to_headers gives the policy for this user's token."""
    if not user.signed_in:
        return {}
    headers = {"x-user-groups": ",".join(user.groups)} if user.groups else {}
    if user.email is not None:
        headers["x-user-email"] = user.email
    return headers


def rego_outcome(gw: AuthzGateway, case: Case, table: list) -> tuple:
    """What the policy service would decide for this request, asked through its OPA API."""
    route = match_route(table, case.listener, case.path)
    if route is None:
        return ("no-route",)
    headers = headers_for(case.user)
    if case.listener == "mesh" and case.caller:
        headers["x-forwarded-client-cert"] = f"URI=spiffe://finopti.local/svc/{case.caller}"
    source = case.caller if case.listener == "mesh" else None
    decision = gw.opa_decision(build_input_from_envoy(case.method, case.path, headers, route, case.listener, source))
    return ("allow",) if decision["allow"] else (decision["status"], decision["reason"])


def native_outcome(gw: AuthzGateway, case: Case, tokens: dict) -> tuple:
    token = tokens.get(case.user.label)
    try:
        response = gw.request(case.listener, case.method, case.path, caller=case.caller, token=token)
    except httpx.TransportError:
        if not (case.listener == "mesh" and case.caller is None):
            raise
        # The mesh listener refuses a client without a mesh certificate before any rule.
        return (403, "an unidentified caller (no client certificate) may not call route")
    if "x-envoy-upstream-service-time" in response.headers:  # it reached a backend (the echo, or the policy)
        return ("allow",)
    if response.status_code == 404:
        return ("no-route",)
    if response.status_code in (401, 403) and response.headers.get("content-type") == "application/json":
        return (response.status_code, response.json()["message"])
    return ("unexpected", response.status_code, response.text[:200])


def agree(native: tuple, rego: tuple) -> bool:
    if native[0] == "allow" or rego[0] == "allow" or native[0] == "no-route":
        return native == rego
    if native[1].startswith("an unidentified caller") and len(native) == 2 and native[0] == rego[0] == 403:
        return rego[1].startswith("an unidentified caller")  # refused at the TLS handshake, for the same reason
    return native == rego


def differences(gw: AuthzGateway, mesh: ResolvedMesh, data: dict, selected: list[Case] | None = None) -> list[str]:
    table = route_table(mesh)
    tokens = {u.label: gw.token(u.email, list(u.groups)) for u in users(data) if u.signed_in}
    todo = selected if selected is not None else cases(mesh, data)

    def compare(case: Case) -> str | None:
        native, rego = native_outcome(gw, case, tokens), rego_outcome(gw, case, table)
        if agree(native, rego):
            return None
        return f"{case.user.label} via {case.caller} {case.method} {case.listener}{case.path}: " \
               f"gateway {native} vs Rego {rego}"

    with ThreadPoolExecutor(8) as pool:
        return [d for d in pool.map(compare, todo) if d]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    mesh = resolve(load_mesh(REPO / "mesh.yaml"), load_authz_data(POLICIES))
    with AuthzGateway(tmp_path_factory.mktemp("authz-diff"), mesh, POLICIES, concurrency=2) as gw:
        yield gw


def test_native_rules_and_rego_decide_alike_for_every_combination(gateway):
    mesh, data = gateway.mesh, json.loads((POLICIES / "data.json").read_text())
    every = cases(mesh, data)
    assert len(every) > 2000  # the enumeration itself is under test: it must stay exhaustive
    found = differences(gateway, mesh, data, every)
    assert not found, f"{len(found)} of {len(every)} disagree:\n" + "\n".join(found[:40])


def test_a_drift_between_the_tiers_is_caught(gateway):
    """Render the native rules from role data where bob is also gcloud_admin, keep the Rego's: the
    comparison must report bob's mutations (and only disagreements, never a crash)."""
    original = gateway.mesh
    data = json.loads((POLICIES / "data.json").read_text())
    drifted = copy.deepcopy(data)
    drifted["finopti"]["roles"]["users"]["bob@finopti.dev"] = ["finops_viewer", "gcloud_admin"]
    native_mesh = resolve(load_mesh(REPO / "mesh.yaml"), parse_authz_data(drifted))
    try:
        gateway.apply(native_mesh, data)  # Envoy gets the drifted roles, the policy service the original
        bob = [c for c in cases(native_mesh, data)
               if c.user.label == "bob@finopti.dev" and c.caller == "orchestrator" and "stop_instance" in c.path]
        found = differences(gateway, native_mesh, data, bob)
        assert found and all("bob@finopti.dev" in d and "gateway ('allow',) vs Rego (403," in d for d in found)
    finally:
        gateway.apply(original)
