"""The chart's gateway configuration on a real Apache APISIX 3.18 (../shared/apisix-runtime): the mesh listener
takes TLS and only clients with a certificate of the mesh CA, and names each caller by its certificate, as the
policy and the access log need (in a cluster, pod addresses say nothing about who calls). Only the site's
addresses and file paths are moved to this machine; everything else is the chart's render."""

import dataclasses
import ssl

import httpx
import pytest
from conftest import REPO
from cryptography.hazmat.primitives import serialization

from finopti.deploy.apisix import (
    CERT_ENV,
    JWT_KEY_ENV,
    KEY_ENV,
    apisix_yaml_text,
    dump_yaml,
    render_apisix_yaml,
    render_config_yaml,
)
from finopti.deploy.kube_workloads import MESH_CA_ENV
from finopti.deploy.kubernetes import kubernetes_site
from finopti.deploy.topology import plan
from finopti.idp import DevIdentityProvider
from finopti.mesh.model import load_mesh
from finopti.mesh.resolved import resolve
from finopti.pki import ensure_pki
from finopti.ports import free_port
from finopti.testing.apisix import ApisixInstance, ApisixUnavailable, find_runtime, short_tempdir
from finopti.testing.apisix import _answers as answers
from finopti.testing.apisix import _wait as wait

LOOPBACK = "127.0.0.1"


@pytest.fixture(scope="module")
def gateway():
    try:
        runtime = find_runtime(REPO)
    except ApisixUnavailable as exc:
        pytest.skip(str(exc))
    spec = load_mesh(REPO / "mesh.yaml")
    topo, mesh = plan(spec), resolve(spec)
    root = short_tempdir("kgw-")
    callers = ensure_pki(root / "callers", ["gateway"])  # the CA services trust: the gateway's certificate
    mesh_ca = ensure_pki(root / "mesh", ["orchestrator", "collector"])  # the CA the gateway trusts
    stranger = ensure_pki(root / "stranger", ["orchestrator"])  # a CA nobody trusts, same names
    site = kubernetes_site(mesh, topo)
    ports = {name: free_port() for name in ("edge", "mesh", "ready", "status", "export")}
    site = dataclasses.replace(
        site,
        listen={name: (LOOPBACK, ports[name]) for name in ("edge", "mesh", "ready")},
        status=(LOOPBACK, ports["status"]), export=(LOOPBACK, ports["export"]),
        nodes={name: (LOOPBACK, free_port()) for name in site.nodes},  # nothing listens there
        ca_file=str(mesh_ca.ca_cert),
        # The chart's SNI is the gateway's Service name; here the certificate's own name (`gateway`) stands in.
        caller_certificates=dataclasses.replace(site.caller_certificates, snis=("gateway",)),
    )
    conf = root / "conf"
    conf.mkdir()
    (conf / "config.yaml").write_text(dump_yaml(render_config_yaml(mesh, topo, site)))
    (conf / "apisix.yaml").write_text(apisix_yaml_text(render_apisix_yaml(mesh, topo, site)))
    idp = DevIdentityProvider(root / "idp", spec.identity)
    idp.ensure()
    public = serialization.load_pem_private_key(idp.key_path.read_bytes(), None).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    cert, key = callers.paths("gateway")
    instance = ApisixInstance(runtime, root / "gw", {
        JWT_KEY_ENV: public, CERT_ENV: cert.read_text(), KEY_ENV: key.read_text(),
        MESH_CA_ENV: mesh_ca.ca_cert.read_text()})
    instance.start(conf / "config.yaml", conf / "apisix.yaml")
    try:
        status = f"http://{LOOPBACK}:{ports['status']}/status/ready"
        wait(lambda: answers(status), f"{status} not 200", 60)
        yield {"instance": instance, "ports": ports, "callers": callers, "mesh": mesh_ca, "stranger": stranger,
               "idp": idp}
    finally:
        instance.stop()


def _mesh_get(gateway, path: str, identity=None, headers: dict | None = None) -> httpx.Response:
    """A call to the mesh listener as a service makes it: TLS to `gateway`, with `identity` = (pki, name)."""
    context = ssl.create_default_context(cafile=str(gateway["callers"].ca_cert))
    if identity is not None:
        pki, name = identity
        context.load_cert_chain(*pki.paths(name))
    with httpx.Client(verify=context) as client:
        return client.get(f"https://{LOOPBACK}:{gateway['ports']['mesh']}{path}",
                          extensions={"sni_hostname": "gateway"}, headers={"host": "gateway", **(headers or {})})


def _source_of(gateway, request_id: str) -> dict:
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in gateway["instance"].access_lines():
            if line.get("request_id") == request_id:
                return line
        time.sleep(0.1)
    raise AssertionError(f"no access log line for request {request_id}")


def test_the_config_loads_whole(gateway):
    assert gateway["instance"].load_failures() == []


def test_a_caller_is_named_by_its_certificate(gateway):
    response = _mesh_get(gateway, "/no-such-route", (gateway["mesh"], "orchestrator"))
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    line = _source_of(gateway, response.json()["request_id"])
    assert (line["listener"], line["source"]) == ("mesh", "spiffe://finopti.local/svc/orchestrator")


def test_a_mesh_route_goes_to_the_policy_as_that_caller_and_fails_closed_without_it(gateway):
    # OPA is not running here: the gateway refuses (fail closed) after naming the caller.
    token = gateway["idp"].issue("alice@finopti.dev", ttl=600)
    response = _mesh_get(gateway, "/gcloud-agent/v1/actions/list_instances", (gateway["mesh"], "orchestrator"),
                         {"authorization": f"Bearer {token}"})
    assert response.status_code == 503 and response.json()["error"] == "policy_unavailable"
    assert _source_of(gateway, response.json()["request_id"])["source"] == "spiffe://finopti.local/svc/orchestrator"


@pytest.mark.parametrize("who", ["no certificate", "a certificate of another CA", "the callers' CA"])
def test_no_one_else_gets_past_the_handshake(gateway, who):
    identity = {"no certificate": None, "a certificate of another CA": (gateway["stranger"], "orchestrator"),
                "the callers' CA": (gateway["callers"], "gateway")}[who]
    with pytest.raises(httpx.HTTPError):
        _mesh_get(gateway, "/no-such-route", identity)


def test_the_edge_stays_plain_http_for_the_ingress_controller(gateway):
    response = httpx.get(f"http://{LOOPBACK}:{gateway['ports']['edge']}/nothing", headers={"host": "localhost"})
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    refused = httpx.get(f"http://{LOOPBACK}:{gateway['ports']['edge']}/", headers={"host": "evil.example"})
    assert refused.status_code == 421
