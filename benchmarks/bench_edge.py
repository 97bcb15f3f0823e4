"""What the front door costs the gateway per request (issue 11): the edge guard (Lua: credentials in the query),
the early header mutations (CEL: traceparent and request id checks; a new traceparent made from UUIDs when there is
none), the Host allow-list and the Origin routes, the read timeouts and header limits.

Two real Envoys run side by side in one run, each answering a direct response so nothing but the gateway is
measured: one with the edge's front door as `finopti.mesh.envoy_edge` renders it, one with none of it. The same
requests go to both, interleaved; the figure is each Envoy's CPU time per request (psutil), which a busy machine
disturbs far less than wall-clock latency.

The collector's redaction stage (the second line of defence) is timed too, per line, next to the whole parse of
the line it is part of.

Run: .venv/bin/python -m benchmarks.bench_edge [--requests 4000]
"""

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import psutil
import yaml

from benchmarks.common import wait_http
from finopti.mesh.envoy_edge import (
    early_header_mutations,
    edge_guard_filter,
    edge_protocol_options,
    edge_virtual_hosts,
)
from finopti.mesh.model import EdgeListener
from finopti.platform import envoy_binary
from finopti.ports import free_port

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = {"name": "envoy.filters.http.router",
          "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
ANSWER = {"name": "answer", "match": {"prefix": "/"},
          "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}
# (name, path, headers): what a page asks for, and an API call that carries everything the front door checks.
REQUESTS = [
    ("page asset", "/static/common.js", {"user-agent": "bench-edge"}),
    ("traced API call with a query", "/api/logs?limit=10&q=hello&service=ui", {
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "x-request-id": "client-1",
        "origin": "http://127.0.0.1", "user-agent": "bench-edge"}),
]


def bootstrap(port: int, admin: int, front_door: bool) -> dict:
    hcm: dict = {"@type": HCM, "stat_prefix": "edge", "generate_request_id": True,
                 "http_filters": [ROUTER], "route_config": {"virtual_hosts": [
                     {"name": "edge", "domains": ["*"], "routes": [ANSWER]}]}}
    if front_door:
        hcm["early_header_mutation_extensions"] = early_header_mutations("edge")
        hcm.update(edge_protocol_options(EdgeListener()))
        hcm["http_filters"] = [edge_guard_filter(), ROUTER]
        hcm["route_config"] = {"virtual_hosts": edge_virtual_hosts(EdgeListener(), port, [ANSWER], {})}
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {"listeners": [{
            "name": "edge", "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": hcm}]}]}]},
    }


def measure(envoys: dict, clients: dict, path: str, headers: dict, requests: int) -> dict:
    """Each Envoy's CPU time per request for `requests` interleaved requests."""
    for client in clients.values():  # warm up: connections, Lua states, caches
        for _ in range(200):
            assert client.get(path, headers=headers).status_code == 200
    cpu = {name: psutil.Process(p.pid).cpu_times() for name, (p, _) in envoys.items()}
    for _ in range(requests):
        for client in clients.values():
            client.get(path, headers=headers)
    figures = {}
    for name, (process, _) in envoys.items():
        now = psutil.Process(process.pid).cpu_times()
        figures[name] = round(((now.user - cpu[name].user) + (now.system - cpu[name].system)) / requests * 1e6, 1)
    return {"gateway_cpu_us_per_request": figures,
            "front_door_cost_us": round(figures["front door"] - figures["plain"], 1),
            "ratio": round(figures["front door"] / figures["plain"], 2)}


def redaction_per_line(n: int = 20000) -> dict:
    """µs per line: the redaction check alone and the collector's whole parse of the line (which includes it)."""
    from finopti.logs.collector import ParseStats, parse_line
    from finopti.logs.line_guard import redact_bytes

    access = {"ts": "2026-12-01T05:02:02.123Z", "level": "info", "service": "gateway", "message": "access",
              "listener": "mesh", "method": "POST", "path": "/gcloud-agent/v1/actions/list_buckets",
              "route": "gcloud-agent", "status": 200, "duration_ms": 12, "trace_id": "0af7651916cd43dd8448eb211c80319c",
              "request_id": "6cfc20aa-2404-4d4e-8ed5-c4f5c4b90e26", "user": "alice@finopti.dev",
              "source": "spiffe://finopti.local/svc/orchestrator", "user_agent": "python-httpx/0.28.1"}
    lines = {
        "access line": access,
        "access line with a query": {**access, "path": "/api/logs?limit=10&q=hello&service=ui"},
        "access line with a token in the query": {**access, "path": "/api/logs?access_token=eyJhbGciOiJSUzI1NiJ9"
                                                  ".eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl&limit=1"},
    }
    out = {}
    for name, line in lines.items():
        raw, stats = json.dumps(line, separators=(",", ":")).encode(), ParseStats()
        timings = {}
        for label, call in (("redaction", lambda raw=raw: redact_bytes(raw)),
                            ("whole parse", lambda raw=raw, stats=stats: parse_line(raw, "gateway", 0, stats))):
            started = time.perf_counter()
            for _ in range(n):
                call()
            timings[label] = round((time.perf_counter() - started) / n * 1e6, 2)
        out[name] = timings
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=4000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="finopti-bench-edge-"))
    envoys = {}
    for name, front_door in (("plain", False), ("front door", True)):
        port, admin = free_port(), free_port()
        config = work / f"{name.replace(' ', '-')}.yaml"
        config.write_text(yaml.safe_dump(bootstrap(port, admin, front_door)))
        command = [envoy_binary(), "-c", str(config), "--concurrency", "1", "--log-level", "error",
                   "--base-id", str(free_port())]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        envoys[name] = (process, f"http://127.0.0.1:{port}")
        wait_http(f"http://127.0.0.1:{admin}/ready")
    try:
        clients = {name: httpx.Client(base_url=url) for name, (_, url) in envoys.items()}
        results = {kind: measure(envoys, clients, path, headers, args.requests) for kind, path, headers in REQUESTS}
        # The refusals themselves, for scale: a credential in the query answered 400 by the guard.
        refused = clients["front door"].get("/api/logs?access_token=eyJx.eyJy.z")
        results["credential_in_query_status"] = refused.status_code
        results["collector_us_per_line"] = redaction_per_line()
        print(json.dumps(results, indent=2))
    finally:
        for process, _ in envoys.values():
            process.terminate()
            process.wait(10)


if __name__ == "__main__":
    main()
