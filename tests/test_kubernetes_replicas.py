"""N gateway replicas, as the chart runs them (no cluster): two real APISIX 3.18 with the chart's gateway
configuration in front of the same pods, their rate-limit counters in one Redis-protocol store as the chart's
Valkey holds them. A limit is the whole gateway's, not each replica's; without its store the limited route fails
closed. A circuit breaker is each replica's own (docs/deploy.md, Scale). Skipped with the reason when the APISIX
runtime (../shared/apisix-runtime) or a Redis server is absent."""

import time

import httpx
import pytest
from conftest import REPO
from meshes import MESHES
from planes import Backend

from finopti.deploy.compose import write_bundle
from finopti.deploy.kubernetes import render_kubernetes_chart
from finopti.testing.apisix import ApisixUnavailable, find_runtime
from finopti.testing.apisix_store import StoreUnavailable, find_server
from finopti.testing.kubernetes import LOOPBACK, KubePlatform

ALICE, BOB, CAROL = "alice@finopti.dev", "bob@finopti.dev", "carol@finopti.dev"
LIMIT = 5  # tests/fixtures/traffic-mesh.yaml: route `limited`, 5 per 60 s per user
FAILURES = 5  # and service `breaker`: consecutive_failures 5


@pytest.fixture(scope="module")
def gateways(tmp_path_factory):
    try:
        runtime = find_runtime(REPO)
        find_server()
    except (ApisixUnavailable, StoreUnavailable) as exc:
        pytest.skip(f"needs the real APISIX and a Redis-protocol counter store: {exc}")
    spec = MESHES["traffic"]()
    chart = tmp_path_factory.mktemp("chart")
    write_bundle(render_kubernetes_chart(spec, REPO), chart)
    platform = KubePlatform(spec, chart, runtime, replicas=2).start({"steady-v1", "breaker-v1"})
    try:
        yield platform
    finally:
        platform.stop()


def get(platform: KubePlatform, replica: int, path: str, user: str) -> httpx.Response:
    token = platform.idp.issue(user)
    return httpx.get(f"{platform.edge_of(replica)}{path}", headers={"authorization": f"Bearer {token}"}, timeout=30)


def _body(response: httpx.Response) -> dict:
    assert response.headers["content-type"].startswith("application/json"), response.headers
    return response.json()


def test_both_replicas_count_in_the_chart_s_store(gateways):
    """The configuration each replica runs is the chart's: limit-count on the shared store, fail closed."""
    for replica in range(2):
        _, site = gateways.site(replica)
        assert site.rate_limit_store == gateways.store.address
    chart = (gateways.chart / "files" / "apisix" / "apisix.yaml").read_text()
    assert "policy: redis" in chart and "allow_degradation: false" in chart


def test_a_rate_limit_holds_across_gateway_replicas(gateways):
    """Requests of one user spread over both replicas: the limit is reached once for the gateway, on both."""
    codes = [get(gateways, i % 2, "/limited/x", CAROL).status_code for i in range(LIMIT)]
    assert codes == [200] * LIMIT  # a per-replica count would allow 2 x LIMIT
    for replica in range(2):
        refused = get(gateways, replica, "/limited/x", CAROL)
        assert refused.status_code == 429, refused.text
        assert _body(refused)["error"] == "rate_limited" and int(refused.headers["retry-after"]) > 0
    assert get(gateways, 1, "/limited/x", BOB).status_code == 200  # the same window, another user's counter


def test_without_its_store_a_limited_route_fails_closed(gateways):
    """No counter, no request: 503 `rate_limit_unavailable` from every replica; other routes go on."""
    gateways.store.stop()
    try:
        for replica in range(2):
            refused = get(gateways, replica, "/limited/x", ALICE)
            assert refused.status_code == 503, refused.text
            body = _body(refused)
            assert (body["error"], body["status"]) == ("rate_limit_unavailable", 503), body
            assert get(gateways, replica, "/steady/x", ALICE).status_code == 200  # routes without a limit
    finally:
        gateways.store.start()
    for replica in range(2):  # a connection pooled before the restart may fail once: wait for the condition
        deadline = time.monotonic() + 30
        while (back := get(gateways, replica, "/limited/x", ALICE)).status_code != 200:
            assert time.monotonic() < deadline, back.text
            time.sleep(0.2)


def test_each_replica_keeps_its_own_circuit(gateways):
    """A failing backend is cut off by each replica after failures of its own: while one replica's circuit is
    open, the other still lets requests reach the backend (up to N x consecutive_failures in all, as N Envoys)."""
    tls = gateways.client_tls("finopti-gateway-tls", "finopti-mesh-ca")  # as the gateway, to steer the backend
    tls.check_hostname = False
    backend = Backend(f"https://{LOOPBACK}:{gateways.pods['breaker-v1'].port}", tls)
    backend.control(fail_always=True, fail_status=500)
    try:
        for replica in range(2):
            for attempt in range(FAILURES):
                hits = backend.hits
                assert get(gateways, replica, f"/breaker/{attempt}", ALICE).status_code == 500
                assert backend.hits == hits + 1  # not cut off by the other replica's open circuit
            _wait_open(gateways, replica)
    finally:
        backend.control()


def _wait_open(gateways: KubePlatform, replica: int) -> None:
    deadline = time.monotonic() + 30  # a request after an open period is a probe (500) and reopens it
    while (answer := get(gateways, replica, "/breaker/x", ALICE)).status_code != 503:
        assert answer.status_code == 500 and time.monotonic() < deadline, answer.text
    assert _body(answer)["error"] == "circuit_open"
