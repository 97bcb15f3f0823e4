"""The Rego policies and their evaluation library (finopti.policy)."""

import json
import shutil
import threading
from pathlib import Path

import pytest

from finopti.mesh.model import load_mesh
from finopti.policy import (
    UNDEFINED,
    PolicyEngine,
    PolicyError,
    Route,
    as_route,
    build_input_from_envoy,
    load_route_table,
    match_route,
    run_policy_tests,
    source_from_xfcc,
)

POLICY_DIR = Path(__file__).resolve().parents[1] / "policies"
AGENT = "/gcloud-agent/v1/actions/"
XFCC = "By=spiffe://finopti.local/svc/gateway;Hash=0f3a;URI=spiffe://finopti.local/svc/{}"


@pytest.fixture(scope="module")
def engine() -> PolicyEngine:
    return PolicyEngine(POLICY_DIR)


def local_input(user, route, path, listener="mesh", source=None, groups=()) -> dict:
    """What the local gateway sends: APISIX's shape plus the `finopti` object."""
    headers = {"x-user-email": user} if user else {}
    policy_input = build_input_from_envoy("POST", path, headers, route, listener, source)
    policy_input["finopti"]["groups"] = list(groups)
    return policy_input


def apisix_input(user, route, path, source=None, groups="") -> dict:
    """What APISIX's `opa` plugin sends: no `finopti`, identity in headers, route in route.name."""
    headers = {"host": "finopti.example", "x-user-groups": groups}
    if user:
        headers["x-user-email"] = user
    if source:
        headers["x-finopti-source"] = source
    return {
        "type": "http",
        "request": {"method": "POST", "path": path, "headers": headers, "query": {}, "scheme": "https"},
        "var": {"remote_addr": "10.1.2.3", "server_port": 9443},
        "route": {"name": route, "id": "1"},
    }


EDGE_ROUTES = {"ui", "ask"}

# (user, calling service, route, path) -> (status, words the reason must contain); users are @finopti.dev.
MATRIX = [
    (None, None, "ui", "/", 200, ["public"]),
    (None, None, "ask", "/api/ask", 401, ["ask"]),
    ("bob", None, "ask", "/api/ask", 200, []),
    ("dave", None, "ask", "/api/ask", 403, ["user dave@finopti.dev has no role"]),
    ("bob", "orchestrator", "gcloud-agent", AGENT + "list_instances", 200, []),
    ("bob", "orchestrator", "gcloud-agent", AGENT + "estimate_monthly_cost", 200, []),
    (
        "bob",
        "orchestrator",
        "gcloud-agent",
        AGENT + "stop_instance",
        403,
        ["bob@", "gcloud_admin", "stop_instance"],
    ),
    ("alice", "orchestrator", "gcloud-agent", AGENT + "stop_instance", 200, []),
    ("bob", "orchestrator", "gcloud-agent", AGENT + "forecast_costs", 200, []),
    ("carol", "orchestrator", "gcloud-agent", AGENT + "cost_report", 403, ["carol@", "cost_report"]),
    ("fiona", "orchestrator", "gcloud-agent", AGENT + "create_budget", 200, []),
    ("alice", "orchestrator", "gcloud-agent", AGENT + "create_budget", 403,
     ["alice@", "finops_admin", "create_budget"]),
    ("bob", "orchestrator", "gcloud-agent", AGENT + "delete_budget", 403, ["finops_admin"]),
    ("fiona", "gcloud-agent", "gcloud-tools", "/gcloud-tools/mcp", 200, []),
    ("alice", "orchestrator", "gcloud-agent", AGENT + "format_disk", 403, ["format_disk"]),
    ("dave", "orchestrator", "gcloud-agent", AGENT + "list_instances", 403, ["no role"]),
    (
        "alice",
        "gcloud-agent",
        "orchestrator",
        "/orchestrator/v1/ask",
        403,
        ["service 'gcloud-agent' may not call route 'orchestrator'"],
    ),
    ("alice", "ui", "orchestrator", "/orchestrator/v1/ask", 200, []),
    ("bob", "gcloud-agent", "gcloud-tools", "/gcloud-tools/mcp", 200, []),
    ("carol", "gcloud-agent", "gcloud-tools", "/gcloud-tools/mcp", 403, ["finops_viewer"]),
    ("carol", "orchestrator", "monitoring-agent", "/monitoring-agent/v1/actions/query_time_series", 200, []),
    (
        "alice",
        "orchestrator",
        "monitoring-agent",
        "/monitoring-agent/v1/actions/list_metrics",
        403,
        ["alice@", "observability_admin"],
    ),
    ("carol", "monitoring-agent", "monitoring-tools", "/monitoring-tools/mcp", 200, []),
    ("carol", "cli", "logstore", "/logstore/v1/query", 200, []),
    ("erin", "ui", "logstore", "/logstore/v1/query", 200, []),
    ("bob", "cli", "logstore", "/logstore/v1/query", 403, ["observability_admin"]),
    ("carol", "orchestrator", "logstore", "/logstore/v1/query", 403, ["'orchestrator'"]),
]


def row_inputs(user, source, route, path) -> tuple[dict, dict]:
    """The same request as the local gateway and as APISIX would present it."""
    email = f"{user}@finopti.dev" if user else None
    listener = "edge" if route in EDGE_ROUTES else "mesh"
    return local_input(email, route, path, listener, source), apisix_input(email, route, path, source)


def test_rego_unit_tests_pass():
    results = run_policy_tests(POLICY_DIR)
    assert len(results) >= 12
    assert [r for r in results if not r.passed] == []
    assert all(r.name.startswith("finopti.authz_test.test_") for r in results)


def test_failing_and_broken_test_files_are_reported(tmp_path: Path):
    for name in ("authz.rego", "data.json", "routes.json"):
        shutil.copy(POLICY_DIR / name, tmp_path / name)
    (tmp_path / "wrong_test.rego").write_text(
        "package finopti.wrong_test\nimport rego.v1\nimport data.finopti.authz\n"
        'test_viewer_may_stop if authz.allow with input as {"finopti": {"user": "bob@finopti.dev",'
        ' "route": "gcloud-agent", "source": "orchestrator", "listener": "mesh"},'
        ' "request": {"path": "/gcloud-agent/v1/actions/stop_instance"}}\n'
        "test_ok if true\n"
    )
    (tmp_path / "broken_test.rego").write_text("package broken_test\ntest_x if {\n")
    results = {r.name: r for r in run_policy_tests(tmp_path)}
    assert results["finopti.wrong_test.test_ok"].passed
    assert not results["finopti.wrong_test.test_viewer_may_stop"].passed
    assert results["finopti.wrong_test.test_viewer_may_stop"].error == "undefined"
    assert not results["broken_test.rego"].passed
    assert results["broken_test.rego"].error


@pytest.mark.parametrize("user,source,route,path,status,words", MATRIX)
def test_decision_matrix(engine, user, source, route, path, status, words):
    local, _ = row_inputs(user, source, route, path)
    decision = engine.decide(local)
    assert (decision.allow, decision.status) == (status == 200, status), decision.reason
    for word in words:
        assert word in decision.reason
    assert engine.query("finopti/authz/allow", local) is (status == 200)


@pytest.mark.parametrize("user,source,route,path,status,words", MATRIX)
def test_apisix_shape_gives_the_same_decision(engine, user, source, route, path, status, words):
    local, apisix = row_inputs(user, source, route, path)
    assert "finopti" not in apisix
    assert engine.decide(apisix) == engine.decide(local)


def test_roles_from_groups(engine):
    sre = local_input(
        "zoe@corp.example", "monitoring-tools", "/monitoring-tools/mcp", "mesh", "monitoring-agent", ["sre"]
    )
    assert engine.decide(sre).allow
    ops = apisix_input("zoe@corp.example", "gcloud-agent", AGENT + "delete_instance", "orchestrator", "finops-admins")
    assert engine.decide(ops).allow
    viewers = apisix_input(
        "zoe@corp.example", "gcloud-agent", AGENT + "delete_instance", "orchestrator", "finops-viewers"
    )
    assert not engine.decide(viewers).allow


def test_no_role_user_is_denied_everywhere(engine):
    anonymous = {name for name, r in json.loads((POLICY_DIR / "routes.json").read_text())["finopti"]["routes"].items()
                 if r.get("auth") == "anonymous"}
    for route in load_route_table(POLICY_DIR):
        if route.name in anonymous:  # no user needed (the sign-in page, the collector's push)
            continue
        source = (engine.query(f"finopti/routes/{route.name}/allowed_callers") or [None])[0]
        decision = engine.decide(local_input("dave@finopti.dev", route.name, route.path_prefix, route.listener, source))
        assert (decision.allow, decision.status) == (False, 403), route
        assert decision.reason == "user dave@finopti.dev has no role"


def test_package_document_is_an_apisix_custom_response(engine):
    # APISIX's `opa` plugin with `policy: finopti/authz` reads allow / status_code / reason, and would
    # send a `headers` member back to the client: there must be none.
    doc = engine.query(
        "finopti/authz", apisix_input("bob@finopti.dev", "gcloud-agent", AGENT + "stop_instance", "orchestrator")
    )
    assert (doc["allow"], doc["status_code"]) == (False, 403)
    assert "gcloud_admin" in doc["reason"]
    assert "headers" not in doc


def test_deny_by_default(engine):
    assert engine.decide({}).status == 403
    assert not engine.decide({"finopti": "garbage", "request": []}).allow
    assert engine.query("finopti/authz/allow", {}) is False
    assert engine.query("finopti/authz/nothing_here", {}) is UNDEFINED


def test_query_follows_opa_paths(engine):
    assert engine.query("finopti/routes/gcloud-agent/allowed_callers") == ["orchestrator"]
    assert engine.query("/finopti/roles/users/erin@finopti.dev") == ["gcloud_admin", "observability_admin"]
    decision = engine.query("finopti/authz/decision", local_input(None, "ask", "/api/ask", "edge"))
    assert decision == {"allow": False, "status": 401, "reason": "sign-in required to call route 'ask'"}
    # Sets become sorted arrays, as in OPA's JSON.
    public = engine.query("finopti/authz/public_routes")
    assert public == sorted(public) and "logstore-positions" in public


def test_decisions_from_many_threads(engine):
    # regorus engines are pinned to their thread: each thread must get its own.
    errors: list[BaseException] = []

    def work():
        try:
            for _ in range(20):
                assert (
                    engine.decide(local_input("alice@finopti.dev", "gcloud-agent", AGENT + "stop_instance")).allow
                    is False
                )
                ok = local_input("alice@finopti.dev", "gcloud-agent", AGENT + "stop_instance", source="orchestrator")
                assert engine.decide(ok).allow
        except BaseException as exc:  # noqa: BLE001 - report any failure from the thread
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_reload_picks_up_changes_and_keeps_old_policy_on_error(tmp_path: Path):
    for name in ("authz.rego", "data.json", "routes.json"):
        shutil.copy(POLICY_DIR / name, tmp_path / name)
    eng = PolicyEngine(tmp_path)
    ask = local_input("dave@finopti.dev", "ask", "/api/ask", "edge")
    assert not eng.decide(ask).allow
    (tmp_path / "data.json").write_text(
        (tmp_path / "data.json").read_text().replace('"dave@finopti.dev": []', '"dave@finopti.dev": ["finops_viewer"]')
    )
    eng.reload()
    assert eng.decide(ask).allow
    (tmp_path / "authz.rego").write_text("package finopti.authz\nallow if {\n")
    with pytest.raises(PolicyError, match="authz.rego"):
        eng.reload()
    assert eng.decide(ask).allow


def test_extra_data_overrides_files():
    eng = PolicyEngine(POLICY_DIR, extra_data={"finopti": {"roles": {"users": {"dave@finopti.dev": ["gcloud_admin"]}}}})
    decision = eng.decide(
        local_input("dave@finopti.dev", "gcloud-agent", AGENT + "delete_instance", "mesh", "orchestrator")
    )
    assert decision.allow
    assert eng.decide(local_input("bob@finopti.dev", "ask", "/api/ask", "edge")).allow  # the rest of the file stays


def test_missing_policy_dir_is_an_error(tmp_path: Path):
    with pytest.raises(PolicyError, match="not found"):
        PolicyEngine(tmp_path / "nope")


def test_source_from_xfcc():
    assert source_from_xfcc(XFCC.format("gcloud-agent")) == "gcloud-agent"
    quoted = 'Hash=1;Subject="CN=x,O=finopti";URI=spiffe://finopti.local/svc/ui'
    assert source_from_xfcc(quoted) == "ui"
    assert source_from_xfcc("By=x;Hash=1;URI=spiffe://evil.example/svc/ui") is None
    assert source_from_xfcc("Hash=1;DNS=ui") is None
    assert source_from_xfcc(None) is None
    # Several elements: the last one was appended by the nearest proxy.
    assert source_from_xfcc(f"{XFCC.format('ui')},{XFCC.format('cli')}") == "cli"


def test_match_route_like_envoy():
    routes = load_route_table(POLICY_DIR)
    assert match_route(routes, "edge", "/") == "ui"
    assert match_route(routes, "edge", "/api/ask?q=1") == "ask"
    assert match_route(routes, "edge", "/index.html") is None  # ui is an exact route
    assert match_route(routes, "edge", "/gcloud-agent/v1/actions/list_instances") is None
    assert match_route(routes, "mesh", "/gcloud-agent/v1/actions/list_instances") == "gcloud-agent"
    assert match_route(routes, "mesh", "/elsewhere") is None
    assert match_route(routes, None, "/logstore/v1/query") == "logstore"
    nested = [Route("a", "mesh", "/a/"), Route("ab", "mesh", "/a/b/"), Route("a-root", "mesh", "/a/", exact=True)]
    assert [match_route(nested, "mesh", p) for p in ("/a/", "/a/x", "/a/b/c")] == ["a-root", "a", "ab"]


def test_route_table_agrees_with_mesh_yaml():
    # routes.json is rendered from mesh.yaml: every mesh.yaml route must be there, identical.
    spec = load_mesh(POLICY_DIR.parent / "mesh.yaml")
    data = PolicyEngine(POLICY_DIR).query("finopti/routes")
    for route in spec.routes:
        assert as_route(route) == as_route({"name": route.name, **data[route.name]})
        assert data[route.name].get("allowed_callers") == route.allowed_callers, route.name
        assert data[route.name].get("auth", "required") == route.auth, route.name
        assert match_route(spec.routes, route.listener, route.path) == route.name


def test_build_input_from_envoy_shape():
    headers = {
        "Host": "127.0.0.1:8081",
        "Authorization": "Bearer secret-token",
        "Cookie": "session=secret",
        "x-user-email": "bob@finopti.dev",
        "x-user-groups": "finops-viewers, sre,",
        "x-forwarded-for": "10.0.0.9, 127.0.0.1",
    }
    got = build_input_from_envoy("post", "/api/ask?q=cost&tag=a&tag=b", headers, "ask", "edge", None)
    assert got["type"] == "http"
    assert got["request"]["method"] == "POST"
    assert got["request"]["path"] == "/api/ask"
    assert got["request"]["query"] == {"q": "cost", "tag": ["a", "b"]}
    assert (got["request"]["host"], got["request"]["port"]) == ("127.0.0.1", 8081)
    assert "authorization" not in got["request"]["headers"] and "cookie" not in got["request"]["headers"]
    assert got["request"]["headers"]["x-user-email"] == "bob@finopti.dev"
    assert got["var"]["remote_addr"] == "10.0.0.9"
    assert got["route"] == {"name": "ask"}
    assert got["finopti"] == {
        "user": "bob@finopti.dev",
        "groups": ["finops-viewers", "sre"],
        "source": None,
        "route": "ask",
        "listener": "edge",
    }
    assert "secret" not in str(got)
