"""Resilience by default (issue 13): the protections mesh.yaml ships on every agent and tool-server route, in
both renderings; drills that follow one request through every hop; a burst at the edge answered or shed, never
queued without bound. Through the real Envoy of the shared platform."""

import asyncio
import re
import time
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import REPO, Platform

from finopti.mesh.envoy import GatewayRuntime, cluster_name, render_envoy
from finopti.mesh.model import load_mesh
from finopti.mesh.resolved import ResolvedMesh, load_authz_data, resolve
from finopti.platform import plan_placeholder_runtime
from finopti.telemetry import outgoing_headers
from finopti.telemetry.context import RequestContext, carried_headers, reset_request, set_request

ASK = {"prompt": "list buckets"}
# Users whose roles may list buckets (data.json): the burst's answers are then the gateway's doing alone.
READERS = ("alice@finopti.dev", "bob@finopti.dev", "erin@finopti.dev", "fiona@finopti.dev")


def _shipped() -> ResolvedMesh:
    return resolve(load_mesh(REPO / "mesh.yaml"), load_authz_data(REPO / "policies"))


def _protected_routes(mesh: ResolvedMesh) -> list:
    """Routes to an agent, and to a tool server (a service only agents call)."""
    agents = {r.backend for r in mesh.routes if r.is_agent}
    tools = {r.backend for r in mesh.routes if r.allowed_callers and set(r.allowed_callers) <= agents}
    return [r for r in mesh.routes if r.backend in agents | tools]


def test_mesh_yaml_protects_every_agent_and_tool_server_route():
    mesh = _shipped()
    routes = _protected_routes(mesh)
    assert {r.backend for r in routes} == {"gcloud-agent", "monitoring-agent", "gcloud-tools", "monitoring-tools"}
    for route in routes:
        policy = route.policy
        assert policy.circuit_breaker and policy.rate_limit and policy.retries, route.name
        assert policy.per_try_timeout and policy.timeout and policy.per_try_timeout < policy.timeout, route.name
        assert policy.idempotent is None, route.name  # a POST is retried only when nothing reached the backend
        assert policy.retries.budget_percent <= 20, route.name
        breaker = policy.circuit_breaker
        assert breaker.max_requests <= 16 and breaker.max_pending <= 32, route.name  # shed, not queued
    # An agent is taken out only when it cannot answer, never for a tool server's failure it passes on.
    assert {r.policy.circuit_breaker.failures for r in routes if r.is_agent} == {"unreachable"}
    # Per user at the edge, below the agents' and tool servers' own limits: a user is stopped before the mesh.
    ask = mesh.route("ask").policy.rate_limit
    assert ask.key == "user" and all(ask.requests / ask.per < r.policy.rate_limit.requests / r.policy.rate_limit.per
                                     for r in routes)


def test_envoy_renders_the_protections():
    spec = load_mesh(REPO / "mesh.yaml")
    mesh = _shipped()
    rt = plan_placeholder_runtime(spec, REPO / "mesh.yaml")
    docs = render_envoy(mesh, GatewayRuntime(
        edge_host=rt.edge_host, edge_port=8080, mesh_host=rt.mesh_host, mesh_port=rt.mesh_port,
        admin_port=rt.admin_port, service_ports=rt.service_ports, jwks_path=Path("/j"), xds_dir=Path("/x"),
        pki_dir=Path("/p")))
    clusters = {c["name"]: c for c in docs["cds.yaml"]["resources"]}
    mesh_routes = [e for vh in docs["rds-mesh.yaml"]["resources"][0]["virtual_hosts"] for e in vh["routes"]]
    for route in _protected_routes(mesh):
        for version in route.versions:
            cluster = clusters[cluster_name(route.backend, version)]
            threshold = cluster["circuit_breakers"]["thresholds"][0]
            breaker = route.policy.circuit_breaker
            assert threshold["max_requests"] == threshold["max_connections"] == breaker.max_requests
            assert threshold["max_pending_requests"] == breaker.max_pending and threshold["retry_budget"]
            assert cluster["outlier_detection"]["max_ejection_percent"] == 100
        entries = [e for e in mesh_routes if e["name"] == route.name]
        safe, other = entries[0]["route"]["retry_policy"], entries[-1]["route"]["retry_policy"]
        assert "reset" in safe["retry_on"] and safe["retriable_status_codes"] == [503]
        assert other["retry_on"] == "connect-failure,refused-stream"  # a POST: only when nothing reached it
        assert safe["per_try_timeout"] == other["per_try_timeout"] == f"{route.policy.per_try_timeout:.3f}s"
        assert all("envoy.filters.http.local_ratelimit" in e["typed_per_filter_config"] for e in entries)


def test_apisix_renders_the_protections():
    """The committed compose bundle (its drift test keeps it mesh.yaml's render)."""
    doc = yaml.safe_load((REPO / "deploy" / "compose" / "apisix" / "apisix.yaml").read_text())
    routes = {r["id"]: r for r in doc["routes"]}
    upstreams = {u["id"]: u for u in doc["upstreams"]}
    for route in _protected_routes(_shipped()):
        plugins = routes[route.name]["plugins"]
        breaker = route.policy.circuit_breaker
        assert plugins["api-breaker"]["unhealthy"]["failures"] == breaker.consecutive_failures
        assert (plugins["limit-conn"]["conn"], plugins["limit-conn"]["burst"]) == (breaker.max_requests,
                                                                                   breaker.max_pending)
        assert plugins["limit-count"]["key"] == "http_x_user_email"
        assert plugins["limit-count"]["count"] == route.policy.rate_limit.requests
        upstream = upstreams[routes[route.name]["upstream_id"]]
        assert upstream["retries"] == route.policy.retries.attempts
        assert upstream["timeout"]["read"] == route.policy.per_try_timeout
    # nginx never sends a POST again once it reached the backend (no `non_idempotent`).
    config = (REPO / "deploy" / "compose" / "apisix" / "config.yaml").read_text()
    assert "proxy_next_upstream error timeout http_503;" in config


# --- drills -------------------------------------------------------------------------------------------------


def test_the_drill_header_and_baggage_are_carried_to_every_call_a_service_makes():
    pairs = [("x-drill", "1"), ("baggage", "drill=1"), ("baggage", "team=ops"), ("x-other", "no")]
    token = set_request(RequestContext(request_id="r1", carried=carried_headers(pairs)))
    try:
        headers = outgoing_headers()
    finally:
        reset_request(token)
    assert headers["x-drill"] == "1" and headers["baggage"] == "drill=1,team=ops"
    assert "x-other" not in headers and headers["x-request-id"] == "r1"
    assert "x-drill" not in outgoing_headers()  # outside a request nothing is carried


def _ask(platform: Platform, user: str = "alice@finopti.dev", **headers: str) -> httpx.Response:
    return httpx.post(f"{platform.edge}/api/ask", json=ASK, headers={**platform.headers(user), **headers},
                      timeout=60)


def _hop(platform: Platform, response: httpx.Response, route: str) -> dict:
    request_id = response.headers["x-request-id"]
    lines = platform.wait_for_log("gateway", lambda line: line.get("request_id") == request_id
                                  and line.get("route") == route, timeout=20)
    assert lines, f"no {route} hop logged for {request_id}"
    return lines[-1]


@pytest.mark.timeout(180)
def test_a_drill_marked_at_the_edge_meets_its_fault_on_the_agent_and_tool_hops(platform):
    """`fault inject gcloud-agent --header x-drill=1` aborts the gcloud-agent hop of an /api/ask that carried
    `x-drill: 1` at the edge, and no other request; the same for a fault one hop deeper, on gcloud-tools."""
    try:
        platform.cli("fault", "inject", "gcloud-agent", "--abort", "503", "--percent", "100",
                     "--header", "x-drill=1", check=True)
        drilled = _ask(platform, **{"x-drill": "1"})
        assert drilled.status_code == 503 and drilled.json()["error"] == "fault_injected", drilled.text
        assert _hop(platform, drilled, "gcloud-agent")["response_flags"] == "FI"
        assert _hop(platform, drilled, "gcloud-agent")["drill"] == "1"
        for other in (_ask(platform), _ask(platform, **{"x-drill": "2"}), _ask(platform, "bob@finopti.dev")):
            assert other.status_code == 200, other.text
            assert _hop(platform, other, "gcloud-agent")["status"] == 200
        # The mark travelled every hop of its request: the edge, the agent, the tool server.
        marked = _ask(platform, **{"x-drill": "2"})
        assert [_hop(platform, marked, r)["drill"] for r in ("ask", "gcloud-agent", "gcloud-tools")] == ["2"] * 3
        assert _hop(platform, _ask(platform), "gcloud-tools")["drill"] is None

        platform.cli("fault", "inject", "gcloud-tools", "--abort", "503", "--percent", "100",
                     "--header", "x-drill=deep", check=True)
        deep = _ask(platform, **{"x-drill": "deep"})
        assert deep.status_code == 503 and deep.json()["error"] == "fault_injected", deep.text
        assert _hop(platform, deep, "gcloud-agent")["status"] == 503  # reached the agent, which passed it on
        assert _hop(platform, deep, "gcloud-tools")["response_flags"] == "FI"
        assert _ask(platform).status_code == 200
        # W3C baggage marks a drill too: the fault matches one member, among others and with properties.
        platform.cli("fault", "inject", "gcloud-agent", "--abort", "503", "--percent", "100",
                     "--header", "baggage=drill=b1", check=True)
        assert _ask(platform, baggage="team=ops, drill=b1;ttl=30").json()["error"] == "fault_injected"
        for unmarked in ("drill=b10", "team=ops;drill=b1", "xdrill=b1"):
            assert _ask(platform, baggage=unmarked).status_code == 200, unmarked
        # A header no service carries on cannot mark a drill for a mesh route: the CLI says so.
        noted = platform.cli("fault", "inject", "monitoring-agent", "--abort", "503", "--header", "x-mine=1",
                             check=True)
        assert "services carry only x-drill and baggage" in " ".join(noted.stdout.split()), noted.stdout
    finally:
        platform.cli("fault", "clear", check=True)
    # Drilled 503s passed on by the orchestrator and the agent opened no circuit (failures: unreachable).
    assert _ask(platform, **{"x-drill": "1"}).status_code == 200


def test_a_baggage_match_is_one_member_in_both_renderings():
    from finopti.deploy.apisix import fault as apisix_fault
    from finopti.mesh.envoy_traffic import route_fault
    from finopti.mesh.model import Fault

    drill = Fault.model_validate({"abort": {"status": 503}, "header": {"name": "baggage", "value": "drill=1"}})
    regex = route_fault(drill)["headers"][0]["string_match"]["safe_regex"]["regex"]
    assert apisix_fault(drill)["abort"]["vars"] == [[["http_baggage", "~~", regex]]]
    for value, marked in (("drill=1", True), ("a=b, drill = 1;p=q, c=d", True), ("drill=10", False),
                          ("a=drill=1", False), ("a=b;drill=1", False)):
        assert (re.fullmatch(regex, value) is not None) == marked, value
    with pytest.raises(ValueError, match="one member key=value"):
        Fault.model_validate({"abort": {"status": 503}, "header": {"name": "baggage", "value": "drill"}})


# --- a burst at the edge ------------------------------------------------------------------------------------


def _stats(platform: Platform) -> dict[str, int]:
    text = httpx.get(f"{platform.runtime.admin_url}/stats", timeout=10).text
    totals = {"overflow": 0, "rate_limited": 0, "ejections": 0}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if not value.strip().isdigit():
            continue
        if name.endswith(".upstream_rq_pending_overflow"):
            totals["overflow"] += int(value)
        elif name == "finopti_ratelimit.http_local_rate_limit.rate_limited":
            totals["rate_limited"] += int(value)
        elif name.endswith(".outlier_detection.ejections_enforced_total"):
            totals["ejections"] += int(value)
    return totals


@pytest.mark.timeout(180)
def test_a_50_client_burst_on_ask_is_answered_or_shed_with_retry_after(platform):
    """50 asks at once from four users: each is answered, or shed by the gateway (429 past a user's rate limit,
    503 overloaded past the orchestrator's 10 in flight and 10 waiting) with Retry-After and the JSON error
    body, and the gateway counted every shed one. How many are shed depends on the machine's speed."""
    tokens = [platform.token(user) for user in READERS]
    for user in READERS:  # warm: connections and MCP sessions
        assert _ask(platform, user).status_code == 200
    before = _stats(platform)

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=50)) as client:
            start = asyncio.Event()

            async def one(index: int) -> httpx.Response:
                await start.wait()
                return await client.post(f"{platform.edge}/api/ask", json=ASK, headers={
                    "authorization": f"Bearer {tokens[index % len(tokens)]}"})

            tasks = [asyncio.create_task(one(i)) for i in range(50)]
            start.set()
            return await asyncio.gather(*tasks)

    answers = asyncio.run(burst())
    after = _stats(platform)
    kinds = {(a.status_code, a.json().get("error") if a.status_code != 200 else None) for a in answers}
    assert kinds <= {(200, None), (429, "rate_limited"), (503, "overloaded")}, kinds
    shed = [a for a in answers if a.status_code != 200]
    for answer in shed:
        body = answer.json()
        assert int(answer.headers["retry-after"]) >= 1 and body["message"] and body["status"] == answer.status_code
        assert body["request_id"] == answer.headers["x-request-id"]
    assert sum(a.status_code == 429 for a in answers) == after["rate_limited"] - before["rate_limited"]
    assert sum(a.status_code == 503 for a in answers) == after["overflow"] - before["overflow"]
    assert after["ejections"] == before["ejections"]  # shedding opens no circuit
    # Every user's bucket refills within a second: the platform answers everyone again.
    for user in READERS:
        for _ in range(60):
            if (response := _ask(platform, user)).status_code == 200:
                break
            assert response.status_code in (429, 503), response.text
            time.sleep(0.5)
        else:
            pytest.fail(f"{user} still shed after the burst")
