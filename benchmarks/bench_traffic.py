"""Issue 4 figures: how fast a caller gets its 503 once the circuit is open (versus the route timeout it
would otherwise wait), and what the traffic policies cost per request (a route with retries, rate limit
and canary split versus a plain route to the same kind of backend, same run).

Run: .venv/bin/python -m benchmarks.bench_traffic [--requests 1000]
"""

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.common import FINOPTI, REPO, load
from finopti.idp import DevIdentityProvider
from finopti.mesh.model import load_mesh
from finopti.meshtls import client_context
from finopti.paths import StateDir
from finopti.platform import Runtime
from finopti.ports import free_port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="finopti-bench-traffic-"))
    mesh = home / "mesh.yaml"
    shutil.copy(REPO / "tests" / "fixtures" / "traffic-mesh.yaml", mesh)
    # A generous rate limit so the benchmark measures the policy's cost, not its refusals.
    mesh.write_text(mesh.read_text().replace("requests: 5, per: 60s", "requests: 1000000, per: 60s"))
    env = {**os.environ, "FINOPTI_HOME": str(home), "FINOPTI_EDGE_PORT": str(free_port())}
    subprocess.run([FINOPTI, "up", "--detach", "--mesh", str(mesh)], env=env, check=True, capture_output=True)
    try:
        state = StateDir(home)
        rt = Runtime.load(state)
        token = DevIdentityProvider(state.idp, load_mesh(mesh).identity).issue("alice@finopti.dev")
        headers = {"authorization": f"Bearer {token}"}
        pki = state.pki
        breaker = httpx.Client(base_url=f"https://127.0.0.1:{rt.service_ports['breaker']['v1']}",
                               verify=client_context(pki / "gateway.crt", pki / "gateway.key", pki / "ca.crt"))
        breaker.post("/control", json={"fail_always": True, "fail_status": 500}).raise_for_status()
        for _ in range(5):
            httpx.get(f"{rt.edge_url}/breaker/x", headers=headers)
        deadline = time.monotonic() + 5
        while "ejections_active: 1" not in httpx.get(
                f"{rt.admin_url}/stats", params={"filter": "breaker.v1.outlier_detection.ejections_active"}).text:
            assert time.monotonic() < deadline, "the circuit did not open"
            time.sleep(0.02)
        samples, reached_backend = [], 0
        with httpx.Client(headers=headers) as client:
            for _ in range(min(args.requests, 500)):  # well inside the 5 s open period
                t0 = time.perf_counter()
                response = client.get(f"{rt.edge_url}/breaker/x")
                if response.status_code == 503:
                    samples.append((time.perf_counter() - t0) * 1000)
                else:
                    reached_backend += 1
        samples.sort()
        circuit = {"answered_503": len(samples), "reached_backend": reached_backend,
                   "p50_ms": round(samples[len(samples) // 2], 2),
                   "p99_ms": round(samples[int(len(samples) * 0.99)], 2),
                   "route_timeout_s": 15.0}
        plain = load(f"{rt.edge_url}/steady/x", args.requests, 8, headers=headers)
        limited = load(f"{rt.edge_url}/limited/x", args.requests, 8, headers=headers)
        retried = load(f"{rt.edge_url}/retry/x", args.requests, 8, headers=headers)
        canary = load(f"{rt.edge_url}/canary/x", args.requests, 8, headers=headers)
        plain_again = load(f"{rt.edge_url}/steady/x", args.requests, 8, headers=headers)
    finally:
        subprocess.run([FINOPTI, "down"], env=env, capture_output=True)
    print(json.dumps({
        "open_circuit_503": circuit,
        "plain_route": plain, "rate_limited_route": limited, "retry_route": retried, "canary_route": canary,
        "plain_route_again": plain_again,
    }, indent=2))


if __name__ == "__main__":
    main()
