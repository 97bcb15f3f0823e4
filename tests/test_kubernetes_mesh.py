"""The chart's mesh end to end on one machine (no cluster): pods with the chart's environment and the certificates
cert-manager would issue from the chart's Certificates, behind the chart's gateway configuration on a real APISIX
3.18, with the chart's OPA files. A question asked at the edge crosses three services over mTLS both ways; each
hop's caller is named by its certificate and decided by the policy; nothing but the gateway gets into a service."""

import ssl

import httpx
import pytest
from conftest import REPO

from finopti.deploy import CHART_DIR
from finopti.mesh.model import load_mesh
from finopti.pki import ensure_pki
from finopti.testing.apisix import ApisixUnavailable, find_runtime
from finopti.testing.apisix_store import StoreUnavailable
from finopti.testing.kubernetes import LOOPBACK, KubePlatform

PODS = {"orchestrator-v1", "gcloud-agent-v1", "gcloud-tools-v1"}


@pytest.fixture(scope="module")
def cluster():
    try:
        runtime = find_runtime(REPO)
        # Where mesh.yaml has rate limits, they count in the gateway replicas' shared store.
        platform = KubePlatform(load_mesh(REPO / "mesh.yaml"), REPO / CHART_DIR, runtime).start(PODS)
    except (ApisixUnavailable, StoreUnavailable) as exc:
        pytest.skip(f"needs the real APISIX and a Redis-protocol counter store: {exc}")
    try:
        yield platform
    finally:
        platform.stop()


def _hops(cluster, request_id: str, count: int) -> list[dict]:
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        hops = [line for line in cluster.gateway.access_lines() if line.get("request_id") == request_id]
        if len(hops) >= count:
            return hops
        time.sleep(0.1)
    return hops


def test_a_question_crosses_the_mesh_with_every_caller_named_by_its_certificate(cluster):
    token = cluster.idp.issue("alice@finopti.dev", ttl=600)
    response = httpx.post(f"{cluster.edge}/api/ask", json={"prompt": "list instances in us-central1-a"},
                          headers={"authorization": f"Bearer {token}", "host": "localhost"}, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["agent"] == "gcloud-agent" and response.json()["data"]
    request_id = response.headers["x-request-id"]
    hops = _hops(cluster, request_id, 3)
    assert all(int(h["status"]) < 400 for h in hops), hops
    assert {(h["listener"], h["route"], h["source"]) for h in hops} >= {
        ("edge", "ask", ""),
        ("mesh", "gcloud-agent", "spiffe://finopti.local/svc/orchestrator"),
        ("mesh", "gcloud-tools", "spiffe://finopti.local/svc/gcloud-agent"),  # MCP: several calls
    }


def test_a_caller_the_route_does_not_allow_is_refused_by_the_policy(cluster):
    token = cluster.idp.issue("alice@finopti.dev", ttl=600)
    # gcloud-tools' certificate on a route only the orchestrator may call.
    with cluster.mesh_client("finopti-gcloud-tools-v1-tls") as client:
        refused = client.post("/gcloud-agent/v1/actions/list_instances", json={},
                              headers={"authorization": f"Bearer {token}"})
    assert refused.status_code == 403, refused.text
    with cluster.mesh_client("finopti-orchestrator-v1-tls") as client:
        allowed = client.post("/gcloud-agent/v1/actions/list_instances", json={"zone": "us-central1-a"},
                              headers={"authorization": f"Bearer {token}"})
    assert allowed.status_code == 200, allowed.text


@pytest.mark.parametrize("who", ["finopti-orchestrator-v1-tls", "finopti-collector-tls", None])
def test_a_service_accepts_no_one_but_the_gateway(cluster, who):
    """Direct to gcloud-tools' port: another service's certificate (mesh CA), the collector's, or none."""
    context = ssl.create_default_context(cafile=str(cluster.secrets.secret("finopti-mesh-ca") / "tls.crt"))
    context.check_hostname = False
    if who is not None:
        secret = cluster.secrets.secret(who)
        context.load_cert_chain(secret / "tls.crt", secret / "tls.key")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"https://{LOOPBACK}:{cluster.pods['gcloud-tools-v1'].port}/healthz", verify=context, timeout=5)
    # The gateway's certificate (the callers' CA) gets in.
    gateway = cluster.client_tls("finopti-gateway-tls", "finopti-mesh-ca")
    gateway.check_hostname = False
    ok = httpx.get(f"https://{LOOPBACK}:{cluster.pods['gcloud-tools-v1'].port}/healthz", verify=gateway, timeout=5)
    assert ok.status_code == 200


def test_each_pod_passes_its_own_readiness_probe(cluster):
    assert all(cluster.probe(name) for name in PODS)


@pytest.mark.parametrize("who", ["no certificate", "a certificate of another CA", "the callers' CA"])
def test_no_one_else_gets_past_the_mesh_listeners_handshake(cluster, tmp_path, who):
    """The gateway's mesh listener takes only certificates of the mesh CA, checked in the TLS handshake."""
    context = ssl.create_default_context(cafile=str(cluster.secrets.secret("finopti-callers-ca") / "tls.crt"))
    if who == "a certificate of another CA":
        stranger = ensure_pki(tmp_path, ["orchestrator"])  # same name, another CA
        context.load_cert_chain(*stranger.paths("orchestrator"))
    elif who == "the callers' CA":
        secret = cluster.secrets.secret("finopti-prometheus-tls")
        context.load_cert_chain(secret / "tls.crt", secret / "tls.key")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{cluster.mesh_url}/gcloud-agent/healthz", verify=context, timeout=5)
    assert cluster.gateway.load_failures() == []


def test_the_edge_stays_plain_http_behind_the_ingress_with_its_host_allow_list(cluster):
    assert httpx.get(f"{cluster.edge}/nothing", headers={"host": "localhost"}).json()["error"] == "not_found"
    assert httpx.get(f"{cluster.edge}/", headers={"host": "evil.example"}).status_code == 421
