"""The optional LLM planner against a local server that speaks OpenAI's chat-completions API (started here),
its calls leaving through the gateway's `llm` route: tool calls become intents, text a question, and every
failure (errors, timeouts, the gateway's circuit breaker and rate limit, unusable answers) falls back to the
deterministic parser. Its own platform: the mesh points the `llm` service at the local server."""

import asyncio
import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn
import yaml
from conftest import REPO, Platform, run_cli

from finopti.cloud import SandboxCloud
from finopti.ports import free_port
from finopti.services.orchestrator.evaluation import sandbox_inventory
from finopti.services.orchestrator.planner import LLMPlanner, PlannerError, PlannerSettings
from finopti.testing.fake_llm import create_app

KEY = "test-key"
ALICE, CAROL = "alice@finopti.dev", "carol@finopti.dev"


class FakeLLM:
    def __init__(self, port: int):
        self.url = f"http://127.0.0.1:{port}"

    def control(self, **control) -> None:
        httpx.post(f"{self.url}/control", json=control, timeout=10).raise_for_status()

    def requests(self) -> list[dict]:
        return httpx.get(f"{self.url}/requests", timeout=10).json()

    def reset(self) -> None:
        httpx.post(f"{self.url}/reset", timeout=10).raise_for_status()


@pytest.fixture(scope="module")
def fake_llm():
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(KEY), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the fake LLM server did not start"
        time.sleep(0.05)
    yield FakeLLM(port)
    server.should_exit = True
    thread.join(10)


def _mesh_file(directory: Path, fake: FakeLLM, **llm_policy) -> Path:
    """The repository's mesh.yaml with the llm service at the local server and a short timeout."""
    spec = yaml.safe_load((REPO / "mesh.yaml").read_text())
    spec["external"] = [e if e == "prometheus" or e.get("name") != "llm" else {"name": "llm", "url": fake.url}
                        for e in spec["external"]]
    route = next(r for r in spec["routes"] if r["name"] == "llm")
    route["policy"] = {**route["policy"], "timeout": "6s", "per_try_timeout": "5s",
                       "circuit_breaker": {"consecutive_failures": 3, "open_for": "1s", "max_open": "1s"},
                       **llm_policy}
    path = directory / "mesh-llm.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def llm_platform(tmp_path_factory, fake_llm):
    home = tmp_path_factory.mktemp("llm-platform")
    port = free_port()
    mesh = _mesh_file(home.parent, fake_llm)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("FINOPTI_PLANNER", "llm")
        env.setenv("FINOPTI_LLM_MODEL", "fake-model")
        env.setenv("FINOPTI_LLM_API_KEY", KEY)
        run_cli("up", "--detach", "--mesh", str(mesh), home=home, edge_port=port, check=True)
    platform = Platform(home=home, edge_port=port)
    yield platform
    platform.cli("down")


@pytest.fixture
def fake(fake_llm):
    fake_llm.reset()
    yield fake_llm
    fake_llm.reset()


IDLE = {"when": "idle", "tool": "find_idle_instances", "arguments": {"cpu_threshold": 3}}


def test_the_llm_plans_through_the_gateway(llm_platform, fake):
    fake.control(rules=[IDLE])
    deadline = time.monotonic() + 60
    while True:  # on a busy machine the first inventory read may fail: the prompt then lists no names yet
        fake.reset()
        fake.control(rules=[IDLE])
        answer = llm_platform.ask("which of our machines sit idle?", user=ALICE)
        [seen] = fake.requests()
        if "ledger-db-prod-01" in seen["body"]["messages"][0]["content"] or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["planner"] == "llm" and "planner_fallback" not in body
    assert (body["action"], body["arguments"]) == ("find_idle_instances", {"cpu_threshold": 3})
    assert body["answer"].startswith("6 idle instances")
    assert seen["path"] == "/v1/chat/completions" and seen["body"]["model"] == "fake-model"
    headers = seen["headers"]
    assert headers["authorization"] == f"Bearer {KEY}"  # the API's key, never the user's token
    assert not {"x-user-email", "x-user-groups", "x-forwarded-client-cert", "x-finopti-source"} & set(headers)
    assert body["trace_id"] in headers["traceparent"]
    tools = {t["function"]["name"]: t["function"] for t in seen["body"]["tools"]}
    # The schema is the MCP tool server's (pydantic's, with its defaults), not the catalogue's fallback.
    assert tools["find_idle_instances"]["parameters"]["properties"]["cpu_threshold"] == {
        "default": 5.0, "title": "Cpu Threshold", "type": "number"}
    assert "query_platform_logs" in tools and "plan_stop_instance" not in tools
    assert "ledger-db-prod-01" in seen["body"]["messages"][0]["content"]
    access = llm_platform.wait_for_log("gateway", lambda line: line.get("route") == "llm"
                                       and body["trace_id"] in json.dumps(line))
    assert access, "the gateway logged no call to the llm route for this trace"


def test_a_change_the_llm_plans_still_needs_a_confirmation(llm_platform, fake):
    fake.control(rules=[{"when": "switch", "tool": "stop_instance", "arguments": {"name": "notebook-dev-01"}}])
    plan = llm_platform.ask("switch the first dev notebook off", user=ALICE)
    assert plan.status_code == 200 and plan.json()["kind"] == "plan" and plan.json()["planner"] == "llm"
    cloud = SandboxCloud(llm_platform.state.sandbox_db)
    assert cloud.describe_instance("notebook-dev-01")["state"] == "RUNNING"
    assert llm_platform.confirm(plan, verb="cancel").status_code == 200


def test_text_from_the_llm_is_a_question(llm_platform, fake):
    fake.control(rules=[{"when": "big one", "text": "Which instance do you mean by “the big one”?"}])
    answer = llm_platform.ask("how is the big one doing", user=ALICE)
    assert answer.status_code == 200
    assert answer.json()["kind"] == "clarification" and "the big one" in answer.json()["question"]


@pytest.mark.parametrize(("rule", "reason"), [
    ({"tool": "no_such_tool"}, "unknown tool 'no_such_tool'"),
    ({"tool": "find_idle_instances", "raw_arguments": "{not json"}, "not JSON"),
    ({"tool": "find_idle_instances", "arguments": {"cpu_threshold": "low"}}, "'low' is not of type 'number'"),
    ({"tool": "find_idle_instances", "arguments": {"colour": "blue"}}, "has no argument colour"),
])
def test_an_unusable_answer_falls_back_to_the_parser(llm_platform, fake, rule, reason):
    fake.control(rules=[{"when": "idle", **rule}])
    answer = llm_platform.ask("find idle instances below 3% over 10 days", user=ALICE)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["planner"] == "parser" and reason in body["planner_fallback"]
    assert body["arguments"] == {"cpu_threshold": 3.0, "days": 10}  # the parser's answer


def test_errors_open_the_gateways_circuit_and_the_parser_answers(llm_platform, fake, tmp_path):
    # Held open for minutes, so a slow machine cannot see it close between two questions.
    held_open = _mesh_file(tmp_path, fake, circuit_breaker={"consecutive_failures": 3, "open_for": "5m",
                                                            "max_open": "5m"})
    llm_platform.cli("mesh", "apply", "--mesh", str(held_open), check=True)
    try:
        fake.control(fail_status=500)
        for _ in range(3):
            body = llm_platform.ask("find idle instances", user=ALICE).json()
            assert body["planner"] == "parser" and "HTTP 500" in body["planner_fallback"]
            assert body["action"] == "find_idle_instances"
        reached = len(fake.requests())
        assert reached == 3  # a 500 is not retried (only connection failures and 503 are)
        body = llm_platform.ask("find idle instances", user=ALICE).json()
        assert "HTTP 503" in body["planner_fallback"] and body["action"] == "find_idle_instances"
        assert len(fake.requests()) == reached  # the open circuit answered without calling the LLM
    finally:
        fake.control()
        # Another breaker setting replaces the cluster, and with it the ejection.
        llm_platform.cli("mesh", "apply", "--mesh", str(_mesh_file(tmp_path, fake)), check=True)
    deadline = time.monotonic() + 30
    while llm_platform.ask("find idle instances", user=ALICE).json()["planner"] != "llm":
        assert time.monotonic() < deadline, "the llm route did not come back"
        time.sleep(0.5)


def test_a_slow_llm_times_out_at_the_gateway(llm_platform, fake):
    fake.control(delay_s=15, rules=[IDLE])
    started = time.monotonic()
    body = llm_platform.ask("find idle instances", user=ALICE).json()
    assert body["planner"] == "parser" and "HTTP 504" in body["planner_fallback"]
    assert time.monotonic() - started < 15  # the route's 6 s timeout, not the LLM's 15 s
    fake.control()
    deadline = time.monotonic() + 20
    while llm_platform.ask("find idle instances", user=ALICE).json()["planner"] != "llm":
        assert time.monotonic() < deadline
        time.sleep(0.5)


def test_the_gateways_rate_limit_applies_to_the_llm(llm_platform, fake, tmp_path):
    fake.control(rules=[IDLE])
    limited = _mesh_file(tmp_path, fake, rate_limit={"requests": 2, "per": "10m", "key": "caller"})
    llm_platform.cli("mesh", "apply", "--mesh", str(limited), check=True)
    try:
        planners = [llm_platform.ask("find idle instances", user=ALICE).json() for _ in range(3)]
        assert [p["planner"] for p in planners] == ["llm", "llm", "parser"]
        assert "HTTP 429" in planners[2]["planner_fallback"] and len(fake.requests()) == 2
    finally:
        llm_platform.cli("mesh", "apply", "--mesh", str(_mesh_file(tmp_path, fake)), check=True)


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="Prometheus is not installed (Debian package "
                    "`prometheus`; make test installs it where apt-get exists)")
def test_tokens_and_llm_calls_are_metrics(llm_platform, fake):
    fake.control(rules=[IDLE])
    assert llm_platform.ask("which machines are idle", user=ALICE).json()["planner"] == "llm"
    queries = {"tokens": 'sum(finopti_llm_tokens_total{kind="prompt"})',
               "planned": 'sum(finopti_llm_requests_total{outcome="planned"})',
               "gateway": 'sum(envoy_cluster_upstream_rq_completed{envoy_cluster_name="llm"})'}
    deadline, values = time.monotonic() + 60, {}
    while time.monotonic() < deadline:
        for name, query in queries.items():
            response = httpx.get(f"{llm_platform.edge}/api/metrics/query", params={"query": query},
                                 headers=llm_platform.headers(CAROL), timeout=20)
            result = response.json()["data"]["result"] if response.status_code == 200 else []
            values[name] = float(result[0]["value"][1]) if result else 0.0
        if all(values.values()):
            break
        time.sleep(1)
    assert all(v > 0 for v in values.values()), values


def test_planner_reads_several_tool_calls_as_a_choice(fake, tmp_path):
    """The planner alone (no gateway) against the same server: two tool calls are two options."""
    fake.control(rules=[{"when": "both", "tool": "find_idle_instances", "arguments": {},
                         "more_calls": [{"tool": "rightsizing_recommendations", "arguments": {"days": 7}}]}])
    inventory = sandbox_inventory(tmp_path)

    async def schemas() -> dict:
        return {}  # the catalogue's own schemas then

    planner = LLMPlanner(f"{fake.url}/v1", PlannerSettings("fake-model", KEY, timeout=5), True, schemas)
    got = asyncio.run(planner.plan("idle ones and oversized ones, both", inventory))
    assert got.kind == "clarify"
    assert [(o.intent.action, o.intent.arguments) for o in got.options] == [
        ("find_idle_instances", {}), ("rightsizing_recommendations", {"days": 7})]
    wrong_key = LLMPlanner(f"{fake.url}/v1", PlannerSettings("fake-model", "bad", timeout=5), True, schemas)
    with pytest.raises(PlannerError, match="HTTP 401"):
        asyncio.run(wrong_key.plan("idle", inventory))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    nobody = LLMPlanner(f"http://127.0.0.1:{closed}/v1", PlannerSettings("m", KEY, timeout=5), True, schemas)
    with pytest.raises(PlannerError, match="APIConnectionError"):
        asyncio.run(nobody.plan("idle", inventory))



def test_an_https_llm_service_renders_to_a_verified_tls_cluster(tmp_path):
    """An external API on the internet: DNS, TLS verified against the system CAs with SNI, its own Host, and
    nothing of the mesh's identity sent to it. The real Envoy validates the cluster."""
    from finopti.mesh.envoy import SYSTEM_CA_BUNDLE, GatewayRuntime, render_envoy
    from finopti.mesh.model import parse_mesh
    from finopti.mesh.resolved import load_authz_data, resolve
    from finopti.platform import envoy_binary

    spec = yaml.safe_load((REPO / "mesh.yaml").read_text())
    spec["external"] = ["prometheus", {"name": "llm", "url": "https://generativelanguage.googleapis.com"}]
    next(r for r in spec["routes"] if r["name"] == "llm")["rewrite"] = "/v1beta/openai/"
    mesh = resolve(parse_mesh(spec), load_authz_data(REPO / "policies"))
    grt = GatewayRuntime(edge_host="127.0.0.1", edge_port=8080, mesh_host="127.0.0.1", mesh_port=8081,
                         admin_port=9901, service_ports={s.name: {v: 10000 + i for v in s.versions}
                                                         for i, s in enumerate(mesh.services)},
                         jwks_path=tmp_path / "jwks.json", xds_dir=tmp_path / "xds", pki_dir=tmp_path / "pki")
    docs = render_envoy(mesh, grt)
    [cluster] = [c for c in docs["cds.yaml"]["resources"] if c["name"] == "llm"]
    assert cluster["type"] == "LOGICAL_DNS"
    assert cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == {
        "socket_address": {"address": "generativelanguage.googleapis.com", "port_value": 443}}
    tls = cluster["transport_socket"]["typed_config"]
    assert tls["sni"] == "generativelanguage.googleapis.com"
    assert tls["common_tls_context"]["validation_context"]["trusted_ca"] == {"filename": SYSTEM_CA_BUNDLE}
    [route] = [r for vh in docs["rds-mesh.yaml"]["resources"][0]["virtual_hosts"] for r in vh["routes"]
               if r["name"] == "llm"]
    assert route["route"]["host_rewrite_literal"] == "generativelanguage.googleapis.com"
    assert route["route"]["prefix_rewrite"] == "/v1beta/openai/"
    assert "x-forwarded-client-cert" in route["request_headers_to_remove"]
    assert route["typed_per_filter_config"]["envoy.filters.http.jwt_authn"]["disabled"] is True
    bootstrap = {"static_resources": {"clusters": [{k: v for k, v in cluster.items() if k != "@type"}]}}
    config = tmp_path / "envoy.yaml"
    config.write_text(yaml.safe_dump(bootstrap))
    result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(config)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(("external", "problem"), [
    ([{"name": "llm", "url": "ftp://example.com"}], r"external\[1\]\.ExternalService\.url"),
    ([{"name": "llm", "url": "https://example.com"}, {"name": "llm", "url": "http://127.0.0.1:1"}], "duplicate"),
    ([{"name": "orchestrator", "url": "http://127.0.0.1:1"}], "already a service"),
])
def test_bad_external_services_are_refused_with_the_field(external, problem):
    from finopti.errors import MeshSpecError
    from finopti.mesh.model import parse_mesh

    spec = yaml.safe_load((REPO / "mesh.yaml").read_text())
    spec["external"] = ["prometheus", *external]
    spec["routes"] = [r for r in spec["routes"] if r["name"] != "llm"]
    with pytest.raises(MeshSpecError, match=problem):
        parse_mesh(spec)
