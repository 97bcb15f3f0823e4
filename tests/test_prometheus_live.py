"""The rendered Prometheus config and rules against a real Envoy, real service processes and a real Prometheus.

A minimal platform built here (the full one comes from the session fixtures later): two services, one with
two versions behind a 50/50 split, served over mTLS by the project's own service app factory (so metric
names are the real ones), and an Envoy with the stats settings `finopti.observability` asks for: the
cluster version tag, route stat_prefix, retries, outlier detection, a local rate limit and the fault filter.
"""

import shutil
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from finopti.dashboards import console_model
from finopti.mesh.model import parse_mesh
from finopti.mesh.resolved import resolve
from finopti.observability import (
    ScrapeTargets,
    ScrapeTls,
    envoy_stats_config,
    prometheus_command,
    render_alert_rules,
    render_prometheus_config,
    render_recording_rules,
    route_stat_prefix,
)
from finopti.pki import ensure_pki
from finopti.platform import envoy_binary
from finopti.ports import free_port

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="prometheus not installed (Debian package 'prometheus'; `make system-deps`)"
)

SPEC = parse_mesh({
    "services": [
        {"name": "orchestrator", "entrypoint": "unused.app:create_app", "versions": ["v1", "v2"]},
        {"name": "gcloud-agent", "entrypoint": "unused.app:create_app", "policy": {"timeout": "5s"}},
    ],
    "routes": [
        {"name": "ask", "listener": "edge", "path": "/api/", "rewrite": "/", "backend": "orchestrator"},
        {"name": "gcloud-agent", "listener": "mesh", "path": "/gcloud-agent/", "rewrite": "/",
         "backend": "gcloud-agent"},
    ],
})

# A service built by the project's own factory, so /metrics and its middleware are the real ones.
SERVICE_APP = """
import asyncio, ssl, sys
import uvicorn
from fastapi import HTTPException
from finopti.services.common import ServiceSettings, create_service_app

service, version, port, cert, key, ca = sys.argv[1:]
app = create_service_app(ServiceSettings(service=service, version=version), service)

@app.get("/v1/actions/{action}")
async def act(action: str) -> dict:
    await asyncio.sleep(0.005)
    if action == "fail":
        raise HTTPException(500, "failing on purpose")
    return {"action": action}

uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=int(port), log_config=None, access_log=False,
                              ssl_certfile=cert, ssl_keyfile=key, ssl_ca_certs=ca,
                              ssl_cert_reqs=ssl.CERT_REQUIRED)).run()
"""


def _wait(what: str, check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
            if result:
                return result
        except (httpx.HTTPError, OSError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def _typed(name: str, kind: str, config: dict) -> dict:
    return {"name": name, "typed_config": {"@type": f"type.googleapis.com/{kind}", **config}}


def _envoy_config(admin: int, edge: int, mesh: int, ports: dict, pki: Path) -> dict:
    tls = {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": {
                "tls_certificates": [{"certificate_chain": {"filename": str(pki / "gateway.crt")},
                                      "private_key": {"filename": str(pki / "gateway.key")}}],
                "validation_context": {"trusted_ca": {"filename": str(pki / "ca.crt")}},
            },
        },
    }
    clusters = [
        {
            "name": f"{s.name}.{v}", "type": "STATIC", "connect_timeout": "1s", "transport_socket": tls,
            "load_assignment": {"cluster_name": f"{s.name}.{v}", "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": ports[s.name][v]}}}}]}]},
            # One host per cluster: without 100% Envoy never ejects it (it counts ejections_overflow instead).
            "outlier_detection": {"consecutive_5xx": 3, "max_ejection_percent": 100},
        }
        for s in SPEC.services for v in s.versions
    ]

    def route(r) -> dict:
        versions = SPEC.service(r.backend).versions
        action: dict = {"prefix_rewrite": r.rewrite, "retry_policy": {"retry_on": "5xx", "num_retries": 1}}
        if len(versions) > 1:
            action["weighted_clusters"] = {"clusters": [
                {"name": f"{r.backend}.{v}", "weight": 100 // len(versions)} for v in versions]}
        else:
            action["cluster"] = f"{r.backend}.{versions[0]}"
        return {"name": r.name, "stat_prefix": route_stat_prefix(r), "match": {"prefix": r.path}, "route": action}

    def listener(name: str, port: int) -> dict:
        filters = [_typed("envoy.filters.http.fault", "envoy.extensions.filters.http.fault.v3.HTTPFault", {
            # Faults only for requests that ask for them (x-envoy-fault-abort-request / -delay-request).
            "abort": {"header_abort": {}, "percentage": {"numerator": 100}},
            "delay": {"header_delay": {}, "percentage": {"numerator": 100}},
        })]
        if name == "mesh":
            filters.insert(0, _typed(
                "envoy.filters.http.local_ratelimit",
                "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit", {
                    "stat_prefix": "finopti_ratelimit",
                    "token_bucket": {"max_tokens": 10, "tokens_per_fill": 10, "fill_interval": "1s"},
                    "filter_enabled": {"default_value": {"numerator": 100}, "runtime_key": "rl_enabled"},
                    "filter_enforced": {"default_value": {"numerator": 100}, "runtime_key": "rl_enforced"},
                }))
        filters.append(_typed("envoy.filters.http.router", "envoy.extensions.filters.http.router.v3.Router", {}))
        hcm = {
            "stat_prefix": name,
            "route_config": {"name": name, "virtual_hosts": [
                {"name": name, "domains": ["*"], "routes": [route(r) for r in SPEC.routes_on(name)]}]},
            "http_filters": filters,
        }
        return {"name": name, "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [_typed(
                    "envoy.filters.network.http_connection_manager",
                    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager", hcm)]}]}

    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "stats_config": envoy_stats_config(),
        "stats_flush_interval": "1s",  # histograms reach /stats/prometheus at each flush
        "static_resources": {"listeners": [listener("edge", edge), listener("mesh", mesh)], "clusters": clusters},
    }


class Stack:
    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []
        self.pki = ensure_pki(tmp / "pki", ["gateway", "prometheus", *(s.name for s in SPEC.services)]).pki_dir
        self.ports = {s.name: {v: free_port() for v in s.versions} for s in SPEC.services}
        self.admin, self.edge, self.mesh, self.prom = free_port(), free_port(), free_port(), free_port()

    def spawn(self, name: str, cmd: list[str]) -> None:
        log = (self.tmp / f"{name}.log").open("w")
        self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.tmp))

    def start(self) -> None:
        app = self.tmp / "service_app.py"
        app.write_text(SERVICE_APP)
        for s in SPEC.services:
            for v, port in self.ports[s.name].items():
                self.spawn(f"{s.name}-{v}", [sys.executable, str(app), s.name, v, str(port),
                                             str(self.pki / f"{s.name}.crt"), str(self.pki / f"{s.name}.key"),
                                             str(self.pki / "ca.crt")])
        envoy_yaml = self.tmp / "envoy.yaml"
        envoy_yaml.write_text(yaml.safe_dump(_envoy_config(self.admin, self.edge, self.mesh, self.ports, self.pki)))
        self.spawn("envoy", [envoy_binary(), "-c", str(envoy_yaml), "--disable-hot-restart", "-l", "warning"])

        rules = {"recording_rules.yml": render_recording_rules(resolve(SPEC), interval="1s"),
                 "alert_rules.yml": render_alert_rules(resolve(SPEC), interval="1s")}
        for name, doc in rules.items():
            (self.tmp / name).write_text(yaml.safe_dump(doc, sort_keys=False))
        targets = ScrapeTargets.local(self.admin, self.ports)
        tls = ScrapeTls(self.pki / "ca.crt", self.pki / "prometheus.crt", self.pki / "prometheus.key")
        config = render_prometheus_config(SPEC, targets, tls=tls, rule_files=[str(self.tmp / n) for n in rules],
                                          scrape_interval="1s", evaluation_interval="1s")
        (self.tmp / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        cmd = prometheus_command(self.tmp / "prometheus.yml", self.tmp / "tsdb", listen=f"127.0.0.1:{self.prom}")
        self.spawn("prometheus", [PROMETHEUS, *cmd[1:]])

        client = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        client.load_cert_chain(self.pki / "gateway.crt", self.pki / "gateway.key")
        for s in SPEC.services:
            for port in self.ports[s.name].values():
                _wait(f"{s.name} on {port}", lambda p=port: httpx.get(
                    f"https://127.0.0.1:{p}/healthz", verify=client).is_success)
        _wait("envoy", lambda: httpx.get(f"http://127.0.0.1:{self.admin}/ready").is_success)
        _wait("prometheus", lambda: httpx.get(f"http://127.0.0.1:{self.prom}/-/ready").is_success)

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def query(self, promql: str) -> dict:
        response = httpx.get(f"http://127.0.0.1:{self.prom}/api/v1/query", params={"query": promql}, timeout=10)
        return response.json()

    def values(self, promql: str) -> dict[tuple, float]:
        body = self.query(promql)
        assert body["status"] == "success", body
        return {tuple(sorted(r["metric"].items())): float(r["value"][1]) for r in body["data"]["result"]}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    s = Stack(tmp_path_factory.mktemp("observability"))
    stop = threading.Event()
    traffic = threading.Thread(target=_traffic, args=(s, stop), daemon=True)
    try:
        s.start()
        # Counters must be scraped before they move, or rate() has nothing to compare against.
        _eventually(s, "up", series=4)
        traffic.start()
        yield s
    finally:
        stop.set()
        if traffic.is_alive():
            traffic.join(timeout=15)
        s.stop()


def _traffic(s: Stack, stop: threading.Event, limit: float = 300.0) -> None:
    """Bounded background traffic while the tests run: steady successes on both routes, and every few
    seconds two failures in a row (retried, then ejected), a burst past the rate limit, an injected abort
    and an injected delay."""
    edge, mesh = f"http://127.0.0.1:{s.edge}", f"http://127.0.0.1:{s.mesh}"
    deadline = time.monotonic() + limit
    with httpx.Client(timeout=10) as client:
        for n in range(100_000):
            if stop.is_set() or time.monotonic() > deadline:
                return
            client.get(f"{edge}/api/v1/actions/list")
            client.get(f"{mesh}/gcloud-agent/v1/actions/list")
            if n % 10 == 0:
                for _ in range(2):
                    client.get(f"{mesh}/gcloud-agent/v1/actions/fail")
                for _ in range(15):
                    client.get(f"{mesh}/gcloud-agent/v1/actions/list")
                client.get(f"{edge}/api/v1/actions/list", headers={"x-envoy-fault-abort-request": "503"})
                client.get(f"{edge}/api/v1/actions/list", headers={"x-envoy-fault-delay-request": "5"})
            time.sleep(0.2)


def _eventually(s: Stack, promql: str, series: int = 1, timeout: float = 40.0) -> dict[tuple, float]:
    """The query's result once it has `series` series, every one above zero."""

    def ready():
        values = s.values(promql)
        return values if len(values) >= series and all(v > 0 for v in values.values()) else None

    return _wait(f"{series} series of {promql} > 0", ready, timeout)


def _labels(values: dict[tuple, float], *names: str) -> set[tuple]:
    return {tuple(dict(key).get(n, "") for n in names) for key in values}


def test_every_target_is_scraped_the_services_over_mtls(stack):
    up = _eventually(stack, "up", series=4)
    assert _labels(up, "job", "service", "version") == {
        ("gateway", "", ""), ("finopti-services", "orchestrator", "v1"), ("finopti-services", "orchestrator", "v2"),
        ("finopti-services", "gcloud-agent", "v1")}


def test_route_red_from_the_gateway(stack):
    requests = _eventually(stack, "finopti:route_requests:rate1m", series=2)
    assert _labels(requests, "listener", "route") == {("edge", "ask"), ("mesh", "gcloud-agent")}
    errors = _eventually(stack, 'finopti:route_errors:ratio_rate1m{route="gcloud-agent"}')
    assert 0 < list(errors.values())[0] < 1
    for q in ("p50", "p95", "p99"):
        latency = _eventually(stack, f"finopti:route_latency_seconds:{q}")
        assert all(v < 5 for v in latency.values()), latency  # seconds, not Envoy's milliseconds
    listeners = _eventually(stack, "finopti:listener_requests:rate1m", series=2)
    assert _labels(listeners, "listener") == {("edge",), ("mesh",)}


def test_service_red_from_the_services_own_metrics(stack):
    requests = _eventually(stack, "finopti:service_requests:rate1m", series=3)
    assert _labels(requests, "service", "version") == {
        ("orchestrator", "v1"), ("orchestrator", "v2"), ("gcloud-agent", "v1")}
    assert _eventually(stack, 'finopti:service_errors:ratio_rate1m{service="gcloud-agent"}')
    assert _eventually(stack, "finopti:service_latency_seconds:p95")


def test_canary_split_and_resilience_counters(stack):
    upstream = _eventually(stack, 'finopti:upstream_requests:rate1m{service="orchestrator"}', series=2)
    assert _labels(upstream, "version") == {("v1",), ("v2",)}
    assert _eventually(stack, 'finopti:upstream_retries:rate1m{service="gcloud-agent"}')
    assert _eventually(stack, "finopti:rate_limited:rate1m")
    assert _eventually(stack, 'finopti:fault_aborts:rate1m{listener="edge"}')
    assert _eventually(stack, 'finopti:fault_delays:rate1m{listener="edge"}')
    ejected = _eventually(stack, "sum by (service) (increase(envoy_cluster_outlier_detection_ejections_enforced_total"
                                 '{service!=""}[5m])) > 0')
    assert _labels(ejected, "service") == {("gcloud-agent",)}


def test_alert_rules_evaluate_without_errors(stack):
    def evaluated():
        groups = httpx.get(f"http://127.0.0.1:{stack.prom}/api/v1/rules").json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if all(r["health"] != "unknown" for r in rules) else None

    rules = _wait("rules evaluated", evaluated)
    assert [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
    firing = {r["name"] for r in rules if r["type"] == "alerting" and r["state"] != "inactive"}
    assert "FinoptiCircuitOpened" in firing  # gcloud-agent was ejected
    assert "FinoptiTargetMissing" not in firing


def test_an_open_circuit_fires_its_alert_and_shows_in_the_console_panel(stack):
    """gcloud-agent is ejected again and again by the background traffic (Envoy's default open period: 30 s)."""
    panel = next(p for d in console_model()["dashboards"] for p in d["panels"] if p["title"] == "Circuit state")
    state = _eventually(stack, panel["queries"][0]["promql"].replace("$service", "gcloud-agent"))
    assert _labels(state, "service", "version") == {("gcloud-agent", "v1")}

    def firing():
        alerts = httpx.get(f"http://127.0.0.1:{stack.prom}/api/v1/alerts").json()["data"]["alerts"]
        return [a for a in alerts if a["labels"]["alertname"] == "FinoptiCircuitOpen" and a["state"] == "firing"]

    alerts = _wait("FinoptiCircuitOpen firing", firing, timeout=60)
    assert {(a["labels"]["service"], a["labels"]["severity"]) for a in alerts} == {("gcloud-agent", "critical")}


def test_error_panel_shows_the_gateways_own_5xx(stack):
    """The edge's only 5xx here are the gateway's injected 503s: the backend never fails on `ask`, so the route
    series stays 0 and the overview's listener series (same panel) is what shows them."""
    panel = next(p for d in console_model()["dashboards"] for p in d["panels"] if p["title"] == "Error ratio")
    listener_query = next(q["promql"] for q in panel["queries"] if "listener_errors" in q["promql"])
    listener = _eventually(stack, listener_query.replace("edge|mesh", "edge"))
    assert _labels(listener, "listener") == {("edge",)}
    _eventually(stack, 'finopti:route_requests:rate1m{route="ask"}')
    route = stack.values('finopti:route_errors:ratio_rate1m{route="ask"}')
    assert route and set(route.values()) == {0.0}, route


SAMPLE = {"$__range": "5m", "$service": ".*", "$version": ".*", "$route": ".*", "$traffic": ".*"}


def test_every_dashboard_promql_runs_on_the_real_prometheus(stack):
    _eventually(stack, "finopti:route_requests:rate1m")
    for dashboard in console_model()["dashboards"]:
        for panel in dashboard["panels"]:
            for q in panel["queries"]:
                if q["type"] != "metric":
                    continue
                promql = q["promql"]
                for var, value in SAMPLE.items():
                    promql = promql.replace(var, value)
                body = stack.query(promql)
                assert body["status"] == "success", (dashboard["uid"], panel["title"], promql, body)
