"""The resolved mesh (IR): mesh.yaml and data.json resolved once, for every renderer."""

import json

import pytest
from conftest import REPO

from finopti.mesh.model import load_mesh, parse_mesh
from finopti.mesh.policy_data import render_route_data
from finopti.mesh.resolved import (
    AuthzDataError,
    load_authz_data,
    most_specific_first,
    parse_authz_data,
    resolve,
)
from finopti.services.agent import COMMON_ACTIONS
from finopti.services.gcloud_agent.app import ACTIONS as GCLOUD_ACTIONS
from finopti.services.monitoring_agent.app import ACTIONS as MONITORING_ACTIONS

POLICIES = REPO / "policies"


def _mesh(routes: list[dict], services: list[dict] | None = None) -> dict:
    services = services or [{"name": "agent", "entrypoint": "m:f"}, {"name": "ui", "entrypoint": "m:f"}]
    return {"services": services, "routes": routes}


def _authz(actions: dict) -> dict:
    return {"finopti": {"roles": {"users": {"a@x": ["admin"], "v@x": ["viewer"]}},
                        "agents": {"agent": {"actions": actions}}}}


ACTIONS = {"read": {"roles": ["admin", "viewer"], "mutates": False}, "write": {"roles": ["admin"], "mutates": True}}


def test_every_route_carries_its_effective_policy():
    spec = load_mesh(REPO / "tests" / "fixtures" / "traffic-mesh.yaml")
    mesh = resolve(spec)
    for route in spec.routes:
        resolved = mesh.route(route.name)
        assert resolved.policy == spec.effective_policy(route)
        assert resolved.versions == tuple(spec.service(route.backend).versions)
        assert (resolved.listener, resolved.path, resolved.exact, resolved.rewrite) == (
            route.listener, route.path, route.exact, route.rewrite)


def test_backend_protection_from_the_service_or_the_first_route_that_sets_it():
    spec = parse_mesh(_mesh(
        [{"name": "a", "listener": "edge", "path": "/a/", "backend": "agent",
          "policy": {"circuit_breaker": {"consecutive_failures": 3}, "retries": {"budget_percent": 30}}},
         {"name": "b", "listener": "edge", "path": "/b/", "backend": "agent",
          "policy": {"circuit_breaker": {"consecutive_failures": 9}}}],
        [{"name": "agent", "entrypoint": "m:f"},
         {"name": "ui", "entrypoint": "m:f", "policy": {"circuit_breaker": {"consecutive_failures": 7}}}],
    ))
    mesh = resolve(spec)
    agent, ui = mesh.backend("agent"), mesh.backend("ui")
    assert agent.circuit_breaker.consecutive_failures == 3 and agent.retry_budget_percent == 30
    assert ui.circuit_breaker.consecutive_failures == 7 and ui.retry_budget_percent is None
    assert [b.name for b in mesh.services] == ["agent", "ui"]


@pytest.mark.parametrize(("route", "prefix"), [
    ({"path": "/agent/", "rewrite": "/"}, "/agent/v1/actions/"),
    ({"path": "/v1/"}, "/v1/actions/"),
    ({"path": "/agent/v1/", "rewrite": "/v1/"}, "/agent/v1/actions/"),
    ({"path": "/x/", "rewrite": "/v1/actions/"}, "/x/"),
    ({"path": "/x/", "rewrite": "/healthz/"}, None),
    ({"path": "/x", "exact": True, "rewrite": "/v1/actions/read"}, None),
])
def test_actions_prefix_follows_the_rewrite(route, prefix):
    spec = parse_mesh(_mesh([{"name": "r", "listener": "mesh", "backend": "agent", **route}]))
    assert resolve(spec).route("r").actions_prefix == prefix


def test_agent_routes_carry_each_action_with_the_roles_allowed_on_that_route():
    spec = parse_mesh(_mesh([
        {"name": "open", "listener": "mesh", "path": "/agent/", "rewrite": "/", "backend": "agent"},
        {"name": "narrow", "listener": "mesh", "path": "/admin/", "rewrite": "/", "backend": "agent",
         "roles": ["admin"]},
        {"name": "star", "listener": "mesh", "path": "/star/", "rewrite": "/", "backend": "agent", "roles": ["*"]},
        {"name": "page", "listener": "edge", "path": "/", "backend": "ui", "auth": "anonymous"},
    ]))
    mesh = resolve(spec, parse_authz_data(_authz(ACTIONS)))
    assert mesh.route("open").action("read").roles == ("admin", "viewer")
    assert mesh.route("narrow").action("read").roles == ("admin",)
    assert mesh.route("star").action("write").roles == ("admin",) and mesh.route("star").any_role
    assert mesh.route("open").action("write").mutates is True
    assert mesh.route("page").actions is None and not mesh.route("page").is_agent
    assert [a.name for a in mesh.backend("agent").actions] == ["read", "write"]
    # Without role data, nothing is known about actions.
    assert resolve(spec).route("open").actions is None


def test_most_specific_first_is_the_gateway_order():
    spec = parse_mesh(_mesh([
        {"name": "root", "listener": "edge", "path": "/", "backend": "ui"},
        {"name": "exact", "listener": "edge", "path": "/home", "exact": True, "backend": "ui"},
        {"name": "long", "listener": "edge", "path": "/api/long/", "backend": "ui"},
        {"name": "short", "listener": "edge", "path": "/api/", "backend": "ui"},
    ]))
    assert [r.name for r in most_specific_first(resolve(spec).routes_on("edge"))] == ["exact", "long", "short", "root"]


def test_role_data_helpers():
    authz = load_authz_data(POLICIES)
    assert "alice@finopti.dev" in authz.users_with("gcloud_admin")
    assert authz.groups_with("observability_admin") == ("sre",)
    assert {"gcloud_admin", "finops_viewer", "observability_admin"} <= set(authz.roles())


@pytest.mark.parametrize(("doc", "problem"), [
    ([], "expected an object with a `finopti` object"),
    ({"finopti": {"agents": {"a": {"actions": {"x": {"roles": ["r"]}}}}}}, "finopti.agents.a.actions.x.mutates"),
    ({"finopti": {"agents": {"a": {"actions": {"x": {"roles": [], "mutates": False}}}}}},
     "finopti.agents.a.actions.x.roles"),
    ({"finopti": {"agents": {"a": {"actions": {"Bad-Name": {"roles": ["r"], "mutates": False}}}}}},
     "finopti.agents.a.actions.Bad-Name: action names match"),
    ({"finopti": {"roles": {"users": {"u@x": ["*"]}}}}, "finopti.roles.users.u@x: role '*'"),
    ({"finopti": {"roles": {"users": {"u@x": "admin"}}}}, "finopti.roles.users.u@x"),
])
def test_bad_role_data_names_the_file_and_field(doc, problem):
    with pytest.raises(AuthzDataError) as exc:
        parse_authz_data(doc, "policies/data.json")
    assert str(exc.value).startswith("policies/data.json: ")
    assert problem in str(exc.value)


def test_missing_or_broken_data_file_is_named(tmp_path):
    with pytest.raises(AuthzDataError, match="data.json: file not found"):
        load_authz_data(tmp_path)
    (tmp_path / "data.json").write_text("{nope")
    with pytest.raises(AuthzDataError, match="data.json: not valid JSON"):
        load_authz_data(tmp_path)


def test_data_json_lists_exactly_the_actions_each_agent_serves():
    """A new agent action must get its roles in data.json (or the gateway refuses it), and data.json must
    not grant actions no agent serves."""
    agents = load_authz_data(POLICIES).agents
    assert sorted(agents["gcloud-agent"]) == sorted([*GCLOUD_ACTIONS, *COMMON_ACTIONS])
    assert sorted(agents["monitoring-agent"]) == sorted([*MONITORING_ACTIONS, *COMMON_ACTIONS])


def test_committed_route_table_is_a_fresh_render():
    """policies/routes.json is rendered from mesh.yaml (the platform renders its own copy at start)."""
    mesh = resolve(load_mesh(REPO / "mesh.yaml"))
    assert json.loads((POLICIES / "routes.json").read_text()) == render_route_data(mesh)
