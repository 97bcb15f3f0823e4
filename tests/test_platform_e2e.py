"""End to end through the real Envoy gateway and the real service processes (issue 2)."""

import json
import os
import signal
import time
import xmlrpc.client

import httpx
import jwt
import pytest

from finopti.cloud import SandboxCloud
from finopti.idp import generate_key
from finopti.platform import supervisor_rpc

ZONE = "us-central1-a"


def test_status_json_lists_every_component_healthy(platform):
    result = platform.cli("status", "--json", check=True)
    components = json.loads(result.stdout)["components"]
    names = {c["name"] for c in components}
    assert {"gateway", "ui", "orchestrator", "gcloud-agent", "monitoring-agent", "gcloud-tools",
            "monitoring-tools"} <= names
    for c in components:
        assert set(c) == {"name", "state", "pid", "address"}
        assert c["state"] == "healthy", c
        host, port = c["address"].rsplit(":", 1)
        assert host == "127.0.0.1" and port.isdigit() and c["pid"] > 0
    gateway = next(c for c in components if c["name"] == "gateway")
    assert gateway["address"] == f"127.0.0.1:{platform.edge_port}"


def test_the_process_manager_starts_without_a_critical_line_and_its_socket_wants_a_password(platform):
    """supervisord logs CRIT when it runs as root without saying so and when its control socket has no
    password; a fresh platform's console would list those among its top errors."""
    log = (platform.state.logs / "supervisord.log").read_text()
    assert [line for line in log.splitlines() if " CRIT " in line] == []
    assert platform.state.supervisor_secret.stat().st_mode & 0o077 == 0
    assert platform.state.supervisor_conf.stat().st_mode & 0o077 == 0
    from supervisor.xmlrpc import SupervisorTransport

    anonymous = SupervisorTransport(None, None, f"unix://{platform.state.supervisor_socket}")
    with pytest.raises(xmlrpc.client.ProtocolError) as refused:
        xmlrpc.client.ServerProxy("http://127.0.0.1", transport=anonymous).supervisor.getState()
    assert refused.value.errcode == 401
    assert supervisor_rpc(platform.state).getState()["statename"] == "RUNNING"


def test_ask_lists_instances_of_one_zone_only(platform):
    result = platform.cli("ask", f"list instances in {ZONE}", "--user", "alice@finopti.dev", "--json", check=True)
    answer = json.loads(result.stdout)
    for key in ("answer", "agent", "action", "data", "trace_id", "request_id"):
        assert key in answer
    assert (answer["agent"], answer["action"]) == ("gcloud-agent", "list_instances")
    expected = {i["name"] for i in SandboxCloud(platform.state.sandbox_db).list_instances(zone=ZONE)}
    assert expected and {i["name"] for i in answer["data"]} == expected
    assert {i["zone"] for i in answer["data"]} == {ZONE}
    assert len(answer["trace_id"]) == 32


def test_one_trace_id_on_every_hop(platform):
    answer = platform.ask(f"list instances in {ZONE}").json()
    trace_id, request_id = answer["trace_id"], answer["request_id"]
    # edge -> orchestrator, orchestrator -> gcloud-agent, gcloud-agent -> gcloud-tools: each through the gateway.
    expected = {("edge", "ask"), ("mesh", "gcloud-agent"), ("mesh", "gcloud-tools")}
    hops = platform.wait_for_log("gateway", lambda line: line.get("trace_id") == trace_id,
                                 until=lambda found: expected <= {(h["listener"], h["route"]) for h in found})
    assert expected <= {(h["listener"], h["route"]) for h in hops}
    assert {h["request_id"] for h in hops} == {request_id}
    for service in ("orchestrator", "gcloud-agent", "gcloud-tools"):
        lines = platform.wait_for_log(service, lambda line: line.get("trace_id") == trace_id)
        assert lines, f"{service} logged nothing for trace {trace_id}"
        assert {line["request_id"] for line in lines} == {request_id}
        for line in lines:
            assert {"ts", "level", "service", "version", "message", "span_id"} <= set(line)
            assert line["service"] == service and line["ts"].endswith("Z")


def test_a_stop_is_visible_in_the_next_list(platform):
    running = SandboxCloud(platform.state.sandbox_db).list_instances(zone="us-east1-b", state="RUNNING")
    target = running[0]["name"]
    stopped = platform.confirm(platform.ask(f"stop instance {target}"))
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["data"]["state"] == "TERMINATED"
    listed = platform.ask("list stopped instances in us-east1-b").json()["data"]
    assert target in {i["name"] for i in listed}
    assert platform.confirm(platform.ask(f"start instance {target}")).json()["data"]["state"] == "RUNNING"


def test_missing_token_is_401_json(platform):
    response = httpx.post(f"{platform.edge}/api/ask", json={"prompt": "list buckets"})
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


def test_token_signed_by_another_key_is_401(platform):
    now = int(time.time())
    forged = jwt.encode(
        {"iss": "https://idp.finopti.local", "aud": "finopti", "email": "alice@finopti.dev", "iat": now,
         "exp": now + 600},
        generate_key(), algorithm="RS256", headers={"kid": "finopti-dev-1"},
    )
    response = httpx.post(f"{platform.edge}/api/ask", json={"prompt": "list buckets"},
                          headers={"authorization": f"Bearer {forged}"})
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


def test_client_sent_identity_header_does_not_change_the_user(platform):
    headers = {**platform.headers("bob@finopti.dev"), "x-user-email": "mallory@evil.example",
               "x-user-groups": "finops-admins"}
    response = httpx.post(f"{platform.edge}/api/ask", json={"prompt": "list buckets"}, headers=headers, timeout=30)
    assert response.status_code == 200
    request_id = response.json()["request_id"]
    for service in ("orchestrator", "gcloud-agent", "gcloud-tools"):
        lines = platform.wait_for_log(service, lambda line: line.get("request_id") == request_id)
        assert lines and {line["user"] for line in lines} == {"bob@finopti.dev"}


def test_malformed_json_is_400(platform):
    response = httpx.post(f"{platform.edge}/api/ask", content=b'{"prompt": ', headers={
        **platform.headers(), "content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"


def test_unknown_path_is_404_from_the_gateway(platform):
    response = httpx.get(f"{platform.edge}/no/such/path", headers=platform.headers())
    assert response.status_code == 404
    body = response.json()
    assert body["error"] == "not_found" and body["reason"] == "route_not_found"


def test_body_over_one_mebibyte_is_413(platform):
    prompt = "x" * (1024 * 1024 + 10)
    response = httpx.post(f"{platform.edge}/api/ask", json={"prompt": prompt}, headers=platform.headers(), timeout=30)
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


def test_unparseable_prompt_is_422_with_capabilities(platform):
    response = platform.ask("sing me a song about clouds")
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "unrecognised_prompt"
    assert any("list instances" in c for c in body["capabilities"])


def test_ui_page_is_served_through_the_edge(platform):
    response = httpx.get(f"{platform.edge}/")
    assert response.status_code == 200 and "FinOptiAgents" in response.text


def _status(platform) -> dict:
    components = json.loads(platform.cli("status", "--json").stdout)["components"]
    return {c["name"]: c for c in components}


@pytest.mark.timeout(120)
def test_a_killed_service_is_restarted(platform):
    before = _status(platform)["gcloud-agent"]
    os.kill(before["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = _status(platform)["gcloud-agent"]
        if now["state"] == "healthy" and now["pid"] != before["pid"]:
            break
        time.sleep(0.3)
    else:
        pytest.fail(f"gcloud-agent was not restarted healthy: {now}")
    assert platform.ask("list buckets").status_code == 200
