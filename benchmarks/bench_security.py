"""Issue 3 figures: what mTLS + ext_authz add per hop, and policy evaluation time alone.

Two gateways run side by side in one run: the platform's own (mTLS to services, ext_authz to the Rego
policy service) and a second Envoy rendered from the same mesh.yaml with both off, in front of a
plaintext copy of the `ui` service. The same page is fetched through each edge.

Run: .venv/bin/python -m benchmarks.bench_security [--requests 2000] [--concurrency 8]
"""

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, load, running_platform, wait_http
from finopti.mesh.envoy import render_envoy
from finopti.mesh.model import load_mesh
from finopti.platform import envoy_binary, gateway_runtime, resolve_for, write_envoy_files
from finopti.policy import PolicyEngine
from finopti.ports import free_port


def policy_eval_times(n: int = 2000) -> dict:
    engine = PolicyEngine(REPO / "policies")
    policy_input = {
        "type": "http", "request": {"method": "POST", "path": "/gcloud-agent/v1/actions/list_buckets", "headers": {}},
        "finopti": {"user": "bob@finopti.dev", "groups": [], "source": "orchestrator", "route": "gcloud-agent",
                    "listener": "mesh"},
    }
    engine.decide(policy_input)
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        engine.decide(policy_input)
        samples.append((time.perf_counter() - t0) * 1000)
    samples.sort()
    return {"decisions": n, "p50_ms": round(statistics.median(samples), 3), "p99_ms": round(samples[int(n * 0.99)], 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    spec = load_mesh(REPO / "mesh.yaml")
    with running_platform() as (state, rt, _, env):
        work = Path(tempfile.mkdtemp(prefix="finopti-bench-plain-"))
        plain_ui_port = free_port()
        ui = subprocess.Popen(
            [sys.executable, "-m", "finopti.services.runner"],
            env={**{k: v for k, v in env.items() if not k.startswith("FINOPTI_TLS")}, "FINOPTI_SERVICE": "ui",
                 "FINOPTI_PORT": str(plain_ui_port), "FINOPTI_ENTRYPOINT": "finopti.services.ui.app:create_app",
                 "FINOPTI_HOME": str(work)},
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        plain_rt = dataclasses.replace(rt, edge_port=free_port(), mesh_port=free_port(), admin_port=free_port(),
                                       service_ports={**rt.service_ports, "ui": {"v1": plain_ui_port}})
        grt = dataclasses.replace(gateway_runtime(state, plain_rt), xds_dir=work / "xds", mtls=False, authz=False)
        write_envoy_files(render_envoy(resolve_for(spec, plain_rt), grt), work, work / "xds")
        envoy = subprocess.Popen([envoy_binary(), "-c", str(work / "bootstrap.yaml"), "--use-dynamic-base-id",
                                  "--log-level", "error"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_http(f"http://127.0.0.1:{plain_ui_port}/healthz")
            wait_http(f"http://127.0.0.1:{plain_rt.edge_port}/")
            load(f"{rt.edge_url}/", total=200)
            load(f"http://127.0.0.1:{plain_rt.edge_port}/", total=200)
            secured = load(f"{rt.edge_url}/", args.requests, args.concurrency)
            plain = load(f"http://127.0.0.1:{plain_rt.edge_port}/", args.requests, args.concurrency)
            secured_again = load(f"{rt.edge_url}/", args.requests, args.concurrency)
        finally:
            envoy.terminate()
            ui.terminate()
            envoy.wait(10)
            ui.wait(10)
    print(json.dumps({
        "hop": "edge -> ui (GET /)",
        "mtls_and_ext_authz_on": secured,
        "both_off": plain,
        "mtls_and_ext_authz_on_again": secured_again,
        "added_p50_ms": round(secured["p50_ms"] - plain["p50_ms"], 2),
        "added_p99_ms": round(secured["p99_ms"] - plain["p99_ms"], 2),
        "p50_ratio": round(secured["p50_ms"] / plain["p50_ms"], 2),
        "policy_evaluation_in_process": policy_eval_times(),
    }, indent=2))


if __name__ == "__main__":
    main()
