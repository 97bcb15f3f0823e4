"""The compose bundle's gateway configuration on a real Apache APISIX 3.18 (../shared/apisix-runtime): it loads
whole, APISIX rejects exactly what the static validation flags, and readiness means ready. Skipped, with the
reason, when the runtime is absent. The request scenarios are in test_data_planes.py."""

import copy
import json
import shutil
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from conftest import REPO

from finopti.deploy.apisix import READY_ROUTE, apisix_yaml_text, readiness_route, render_apisix_yaml
from finopti.deploy.apisix_checks import check_loadable
from finopti.mesh.model import load_mesh
from finopti.pki import make_foreign_ca_cert
from finopti.testing.apisix import ApisixPlatform, short_tempdir

# error.log lines that mean the configuration did not load as written.
CONFIG_PROBLEMS = ("failed to check item data", "configured across different global rules", "failed to load plugin",
                   "failed to fetch", "failed to load lua code")


def _probe(platform: ApisixPlatform) -> subprocess.CompletedProcess:
    """The compose healthcheck's own command (`readiness_probe`), pointed at this instance."""
    return subprocess.run(platform.ready_probe(), capture_output=True, text=True, timeout=30)


def _status_ready(platform: ApisixPlatform) -> int:
    ip, port = platform.site.status
    return httpx.get(f"http://{ip}:{port}/status/ready", timeout=5).status_code


@pytest.fixture
def gateway_only(apisix_runtime):
    """mesh.yaml's gateway with no service running (every upstream unreachable)."""
    root = short_tempdir("apx-")
    plat = ApisixPlatform(load_mesh(REPO / "mesh.yaml"), apisix_runtime, root=root, repo=REPO)
    plat.prepare()
    yield plat
    plat.stop()
    shutil.rmtree(root, ignore_errors=True)


def test_the_rendered_bundle_loads_whole_and_is_ready(apisix_platform):
    problems = [line for line in apisix_platform.gateway.errors() if any(p in line for p in CONFIG_PROBLEMS)]
    assert problems == []
    ready = httpx.get(apisix_platform.ready_url, timeout=10)
    assert ready.status_code == 200, ready.text
    nodes = {tuple(node) for node in apisix_platform.site.nodes.values()}
    assert ready.json() == {"ready": True, "not_loaded": [], "reachable": len(nodes), "unreachable": []}
    assert _probe(apisix_platform).returncode == 0


def test_the_readiness_listener_answers_only_on_loopback_and_only_ready(apisix_platform):
    """The readiness route lives on its own listener: the edge does not serve it."""
    assert httpx.get(f"{apisix_platform.edge}/ready", timeout=10).status_code == 404


def _broken(doc: dict, cert: str, key: str) -> dict:
    """One item of each kind of problem APISIX only finds in code, each on a different item."""
    doc = copy.deepcopy(doc)
    ups = {u["id"]: u for u in doc["upstreams"]}
    routes = {r["id"]: r for r in doc["routes"]}
    # The form the bundle used to render: secret references inline in an upstream's client certificate.
    ups["ask.orchestrator.v1"]["tls"] = {"client_cert": "$env://FINOPTI_GATEWAY_CERT",
                                         "client_key": "$env://FINOPTI_GATEWAY_KEY"}
    ups["ui.ui.v1"]["tls"] = {"client_cert": "-----BEGIN CERTIFICATE-----\n" + "A" * 200 + "\n-----END "
                              "CERTIFICATE-----\n", "client_key": key}
    ups["logstore.logstore.v1"].pop("upstream_host")  # pass_host: rewrite without a host
    ups["gcloud-tools.gcloud-tools.v1"]["tls"] = {"client_cert": cert, "client_key": key}  # a good PEM: loads
    doc["ssls"].append({"id": "junk", "type": "client", "cert": "x" * 200, "key": key})
    routes["ui-static"]["vars"] = [["finopti_listener", "=~", "edge"]]
    routes["gcloud-agent"]["plugins"]["proxy-rewrite"]["regex_uri"] = ["^/gcloud-agent/(.*", "/$1"]
    routes["logs-api"]["plugins"]["fault-injection"] = {
        "abort": {"http_status": 503, "percentage": 1, "vars": [[["http_x", "~==", "1"]]]}}
    doc["routes"] = [r for r in doc["routes"] if r["id"] != READY_ROUTE]
    doc["routes"].append(readiness_route(doc))
    return doc


def test_apisix_rejects_exactly_what_the_validation_flags_and_readiness_says_so(gateway_only, tmp_path):
    cert, key = (path.read_text() for path in make_foreign_ca_cert(tmp_path, "gateway"))
    doc = _broken(render_apisix_yaml(gateway_only.mesh, gateway_only.topo, gateway_only.site), cert, key)
    flagged = sorted({p.split(":", 1)[0].split("/")[0] for p in check_loadable(doc)})
    assert flagged == ["routes[gcloud-agent]", "routes[logs-api]", "routes[ui-static]", "ssls[junk]",
                       "upstreams[ask.orchestrator.v1]", "upstreams[logstore.logstore.v1]", "upstreams[ui.ui.v1]"]
    gateway_only.start_gateway(routes_text=apisix_yaml_text(doc))
    # APISIX's own readiness only knows its workers are up; ours knows what they refused.
    assert _status_ready(gateway_only) == 200
    ready = httpx.get(gateway_only.ready_url, timeout=10)
    assert ready.status_code == 503
    report = ready.json()
    assert report["error"] == "not_ready" and "failed to load" in report["message"]
    rejected = sorted(f"{item.split('/')[0]}[{item.split('/', 1)[1]}]" for item in report["not_loaded"])
    assert rejected == flagged
    # APISIX's reasons, from error.log (each process that loads the file logs them; keep kind and reason).
    reasons = {(line.split("data of [", 1)[1].split("]", 1)[0], line.split(" err:", 1)[1].split(" ,val:", 1)[0])
               for line in gateway_only.gateway.errors() if "failed to check item data" in line}
    for kind, reason in [("upstreams", "failed to parse cert"), ("ssls", "failed to parse cert"),
                         ("upstreams", "`upstream_host` can't be empty when `pass_host` is `rewrite`"),
                         ("routes", "invalid operator '=~'"), ("routes", "invalid regex_uri"),
                         ("routes", "invalid operator '~=='")]:
        assert any(k == kind and reason in r for k, r in reasons), (kind, reason, reasons)
    probe = _probe(gateway_only)
    assert probe.returncode != 0


def test_readiness_fails_while_no_upstream_is_reachable(gateway_only):
    gateway_only.start(only=set())
    assert _status_ready(gateway_only) == 200
    ready = httpx.get(gateway_only.ready_url, timeout=10)
    assert ready.status_code == 503, ready.text
    report = ready.json()
    assert report["not_loaded"] == [] and report["reachable"] == 0
    assert report["message"] == "no upstream node accepts a connection"
    assert len(report["unreachable"]) == len({tuple(n) for n in gateway_only.site.nodes.values()})
    assert _probe(gateway_only).returncode != 0
    # Routes still answer, in the project's error shape: the policy cannot be asked, so nothing passes.
    refused = httpx.get(f"{gateway_only.edge}/", timeout=10)
    assert refused.status_code == 503 and refused.json()["error"] == "policy_unavailable"


def test_a_backend_that_cannot_be_reached_is_503_unavailable_in_the_error_shape(gateway_only):
    """nginx's own 502 (connection refused: no answer from the backend) becomes the local gateway's 503
    `unavailable` in the global header and body filters, in the access log too."""
    gateway_only.start(only={"opa"})
    response = httpx.get(f"{gateway_only.edge}/", timeout=10)
    assert response.status_code == 503 and response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["error"] == "unavailable" and body["message"] and body["status"] == 503
    assert body["request_id"] == response.headers["x-request-id"] and len(body["trace_id"]) == 32
    assert int(response.headers["content-length"]) == len(response.content)
    assert httpx.get(gateway_only.ready_url, timeout=10).json()["reachable"] == 1  # OPA
    request_id = response.headers["x-request-id"]
    deadline = time.monotonic() + 15  # APISIX writes its access log in batches
    while not (lines := [x for x in gateway_only.gateway.access_lines() if x.get("request_id") == request_id]):
        assert time.monotonic() < deadline, "no access log line"
        time.sleep(0.2)
    assert lines[0]["status"] == 503


class _RecordingOpa(ThreadingHTTPServer):
    """OPA's data API that allows everything and keeps every input it was asked about."""

    def __init__(self, port: int):
        self.inputs: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("content-length") or 0)
                outer.inputs.append(json.loads(self.rfile.read(length))["input"])
                body = json.dumps({"result": {"allow": True}}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", port), Handler)


def test_credentials_stay_out_of_what_apisix_sends_to_opa(gateway_only):
    """OPA is reached over plain HTTP on the internal `policy` network: what crosses it is the verified identity,
    never the user's token or cookies (docs/deploy.md)."""
    opa = _RecordingOpa(gateway_only.site.nodes["opa"][1])
    threading.Thread(target=opa.serve_forever, daemon=True).start()
    try:
        gateway_only.start_gateway()
        secrets = {"authorization": f"Bearer {gateway_only.token('alice@finopti.dev')}", "cookie": "session=secret",
                   "x-api-key": "k-123", "proxy-authorization": "Basic eDp5"}
        httpx.post(f"{gateway_only.edge}/api/ask", json={"prompt": "list buckets"}, timeout=10, headers=secrets)
        with gateway_only.caller_client("orchestrator", timeout=10) as client:  # on the mesh, as a service
            client.post(f"{gateway_only.mesh_url}/gcloud-agent/v1/actions/list_buckets", json={}, headers=secrets)
    finally:
        opa.shutdown()
        opa.server_close()
    assert len(opa.inputs) == 2
    edge, mesh = (given["request"]["headers"] for given in opa.inputs)
    for headers in (edge, mesh):
        assert not {"authorization", "cookie", "x-api-key", "proxy-authorization"} & set(headers), headers
        assert headers["x-user-email"] == "alice@finopti.dev"
    assert edge["x-finopti-listener"] == "edge" and "x-finopti-source" not in edge
    # The caller's name is the policy's (the service itself does not get it: tests/test_data_planes.py).
    assert mesh["x-finopti-listener"] == "mesh" and mesh["x-finopti-source"] == "orchestrator"
    assert [given["route"]["name"] for given in opa.inputs] == ["ask", "gcloud-agent"]
