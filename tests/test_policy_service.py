"""The policy service over real HTTP: Envoy's ext_authz check, the OPA data API, the decision log."""

import json
import logging
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import uvicorn

from finopti.policy import PolicyEngine
from finopti.services.policy.app import create_app, trace_id_from

POLICY_DIR = Path(__file__).resolve().parents[1] / "policies"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXBheWxvYWQ.c2lnbmF0dXJl"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
XFCC = "By=spiffe://finopti.local/svc/gateway;Hash=0f3a;URI=spiffe://finopti.local/svc/{}"


@pytest.fixture(scope="module")
def base_url(tmp_path_factory):
    settings = SimpleNamespace(
        home=tmp_path_factory.mktemp("home"), service="policy", version="v1", policy_dir=POLICY_DIR
    )
    config = uvicorn.Config(
        create_app(settings), host="127.0.0.1", port=0, log_config=None, access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "policy service did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def client(base_url):
    with httpx.Client(base_url=base_url, timeout=10) as c:
        yield c


def edge(user: str | None = None, **extra) -> dict:
    headers = {"x-finopti-listener": "edge", "authorization": f"Bearer {TOKEN}", **extra}
    if user:
        headers["x-user-email"] = user
    return headers


def mesh(user: str, caller: str, **extra) -> dict:
    return edge(user, **{"x-finopti-listener": "mesh", "x-forwarded-client-cert": XFCC.format(caller), **extra})


def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_allowed_request_gets_200_and_marker_header(client):
    response = client.post("/authz/api/ask?stream=1", headers=edge("bob@finopti.dev"))
    assert response.status_code == 200
    assert response.headers["x-finopti-authz"] == "allow"
    uuid.UUID(response.headers["x-finopti-decision-id"])


def test_sign_in_page_is_public(client):
    assert client.get("/authz/", headers=edge()).status_code == 200


def test_anonymous_ask_is_401_with_json_body(client):
    response = client.post("/authz/api/ask", headers=edge())
    assert response.status_code == 401
    body = response.json()
    assert body["error"] == "unauthorized" and body["status"] == 401
    assert "ask" in body["message"]
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_viewer_may_list_but_not_stop(client):
    ok = client.post("/authz/gcloud-agent/v1/actions/list_instances", headers=mesh("bob@finopti.dev", "orchestrator"))
    assert ok.status_code == 200
    denied = client.post(
        "/authz/gcloud-agent/v1/actions/stop_instance", headers=mesh("bob@finopti.dev", "orchestrator")
    )
    assert denied.status_code == 403
    body = denied.json()
    assert body["error"] == "forbidden" and body["status"] == 403
    assert "gcloud_admin" in body["message"] and "bob@finopti.dev" in body["message"]
    assert body["decision_id"] == denied.headers["x-finopti-decision-id"]
    admin = client.post(
        "/authz/gcloud-agent/v1/actions/stop_instance", headers=mesh("alice@finopti.dev", "orchestrator")
    )
    assert admin.status_code == 200


def test_wrong_caller_is_named(client):
    response = client.get("/authz/orchestrator/v1/ask", headers=mesh("alice@finopti.dev", "gcloud-agent"))
    assert response.status_code == 403
    assert response.json()["message"] == "service 'gcloud-agent' may not call route 'orchestrator'"


def test_any_method_is_checked(client):
    for method in ("GET", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"):
        response = client.request(method, "/authz/logstore/v1/query", headers=mesh("carol@finopti.dev", "cli"))
        assert response.status_code == 200, method
        response = client.request(method, "/authz/logstore/v1/query", headers=mesh("bob@finopti.dev", "cli"))
        assert response.status_code == 403, method


def wait_for_log(caplog, decision_id: str) -> logging.LogRecord:
    deadline = time.monotonic() + 5
    while True:
        found = [r for r in caplog.records if getattr(r, "decision_id", None) == decision_id]
        if found:
            assert len(found) == 1
            return found[0]
        assert time.monotonic() < deadline, "no decision log line"
        time.sleep(0.01)


def test_client_certificate_header_counts_only_on_the_mesh(client, caplog):
    caplog.set_level(logging.INFO, logger="finopti.decision")
    # On the edge listener a client could have sent x-forwarded-client-cert itself.
    forged = edge("carol@finopti.dev", **{"x-forwarded-client-cert": XFCC.format("cli")})
    response = client.post("/authz/api/ask", headers=forged)
    assert response.status_code == 200
    record = wait_for_log(caplog, response.headers["x-finopti-decision-id"])
    assert (record.route, record.source, record.listener) == ("ask", None, "edge")
    # Mesh routes do not exist on the edge listener.
    assert client.get("/authz/logstore/v1/query", headers=forged).status_code == 403
    # Without a known listener there is no route, whatever the headers claim.
    no_listener = {
        "x-user-email": "alice@finopti.dev",
        "x-forwarded-client-cert": XFCC.format("orchestrator"),
    }
    response = client.post("/authz/gcloud-agent/v1/actions/stop_instance", headers=no_listener)
    assert response.status_code == 403


def test_opa_data_api_matches_engine(client):
    engine = PolicyEngine(POLICY_DIR)
    policy_input = {
        "request": {
            "path": "/gcloud-agent/v1/actions/stop_instance",
            "headers": {"x-user-email": "bob@finopti.dev"},
        },
        "finopti": {
            "user": "bob@finopti.dev",
            "source": "orchestrator",
            "route": "gcloud-agent",
            "listener": "mesh",
        },
    }
    response = client.post("/v1/data/finopti/authz/decision", json={"input": policy_input})
    assert response.status_code == 200
    body = response.json()
    uuid.UUID(body["decision_id"])
    decision = engine.decide(policy_input)
    assert body["result"] == {"allow": decision.allow, "reason": decision.reason, "status": decision.status}
    assert body["result"]["status"] == 403
    allow = client.post("/v1/data/finopti/authz/allow", json={"input": policy_input}).json()
    assert allow["result"] is False


def test_opa_data_api_without_input_and_undefined(client):
    assert client.post("/v1/data/finopti/routes/ask/path_prefix").json()["result"] == "/api/ask"
    undefined = client.post("/v1/data/finopti/authz/no_such_rule", json={"input": {}}).json()
    assert "result" not in undefined and "decision_id" in undefined


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_opa_data_api_rejects_bad_json(client, body):
    response = client.post("/v1/data/finopti/authz/allow", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"] == "bad_request"


def test_decision_log_line_has_ids_and_no_token(client, caplog):
    caplog.set_level(logging.INFO)  # every logger: no line anywhere may carry the token
    headers = mesh(
        "bob@finopti.dev",
        "orchestrator",
        traceparent=f"00-{TRACE}-00f067aa0ba902b7-01",
        **{"x-request-id": "req-42", "cookie": f"session={TOKEN}"},
    )
    response = client.post("/authz/gcloud-agent/v1/actions/stop_instance", headers=headers)
    assert response.status_code == 403
    record = wait_for_log(caplog, response.json()["decision_id"])
    assert record.name == "finopti.decision" and record.levelno == logging.INFO
    assert record.trace_id == TRACE
    assert record.request_id == "req-42"
    assert (record.user, record.source, record.route, record.listener) == (
        "bob@finopti.dev",
        "orchestrator",
        "gcloud-agent",
        "mesh",
    )
    assert (record.allow, record.status) == (False, 403)
    assert "gcloud_admin" in record.reason
    assert isinstance(record.duration_ms, float)
    assert len(caplog.records) >= 2  # the decision and the service's request line
    for r in caplog.records:
        assert TOKEN not in json.dumps(r.__dict__, default=str) and TOKEN not in r.getMessage()


def test_trace_id_from():
    assert trace_id_from(f"00-{TRACE}-00f067aa0ba902b7-01") == TRACE
    assert trace_id_from("00-" + "0" * 32 + "-00f067aa0ba902b7-01") is None
    assert trace_id_from("garbage") is None
    assert trace_id_from(None) is None
