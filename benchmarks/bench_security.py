"""What identity (mTLS) and authorization add per hop, per tier, measured side by side in one run.

Three gateways rendered from the same mesh.yaml and data.json, in front of the same echo backend (a tiny
Envoy, so the backend's cost does not blur the gateway's):

- off:    mTLS and authorization off (the JWT is still verified when sent)
- native: the platform's default: mTLS, and every route decided by the gateway's own rules (Envoy RBAC)
- rego:   mTLS, and every route decided by the Rego (ext_authz to the policy service)

Two hops: the edge's public page (GET /, no token) and a mesh hop with both identities (the orchestrator's
certificate, bob's token, POST /gcloud-agent/v1/actions/list_buckets). Each at concurrency 1 and 8; the
variants take turns, twice, so a busy machine weighs on all alike. Also: one Rego decision in-process.

Run: .venv/bin/python -m benchmarks.bench_security [--requests 1000]
"""

import argparse
import json
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from benchmarks.common import REPO, load
from finopti.mesh.model import load_mesh, parse_mesh
from finopti.mesh.resolved import load_authz_data, resolve
from finopti.meshtls import client_context
from finopti.policy import PolicyEngine
from finopti.testing.authz_gateway import AuthzGateway

POLICIES = REPO / "policies"
MESH_HOP = "/gcloud-agent/v1/actions/list_buckets"


def policy_eval_times(n: int = 2000) -> dict:
    engine = PolicyEngine(POLICIES)
    policy_input = {
        "type": "http", "request": {"method": "POST", "path": MESH_HOP, "headers": {}},
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


def meshes() -> dict:
    raw = load_mesh(REPO / "mesh.yaml").model_dump(mode="json", exclude_none=True)
    for route in raw["routes"]:
        route["authz"] = "rego"
    authz = load_authz_data(POLICIES)
    native = resolve(load_mesh(REPO / "mesh.yaml"), authz)
    return {"off": (native, False, False), "native": (native, True, True),
            "rego": (resolve(parse_mesh(raw), authz), True, True)}


def hop(gw: AuthzGateway, name: str, requests: int, concurrency: int) -> dict:
    if name == "edge":
        return load(gw.url("edge", "/"), requests, concurrency)
    scheme_kwargs = {"verify": client_context(*gw.pki.paths("orchestrator"), gw.pki.pki_dir / "ca.crt")} \
        if gw.mtls else {}
    return load(gw.url("mesh", MESH_HOP), requests, concurrency, method="POST",
                headers={"authorization": f"Bearer {gw.token('bob@finopti.dev')}"}, **scheme_kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=1000)
    args = parser.parse_args()
    results: dict = {}
    with ExitStack() as stack:
        gateways = {}
        for name, (mesh, mtls, authz) in meshes().items():
            work = Path(tempfile.mkdtemp(prefix=f"finopti-bench-{name}-"))
            gateways[name] = stack.enter_context(AuthzGateway(work, mesh, POLICIES, mtls=mtls, authz=authz))
        for gw in gateways.values():  # warm up: connections, the policy service's first decisions
            for h in ("edge", "mesh"):
                hop(gw, h, 200, 4)
        for h in ("edge", "mesh"):
            for concurrency in (1, 8):
                runs: dict = {name: [] for name in gateways}
                for _ in range(2):
                    for name, gw in gateways.items():
                        runs[name].append(hop(gw, h, args.requests, concurrency))
                key = f"{h}_c{concurrency}"
                results[key] = {name: {"p50_ms": round(statistics.median(r["p50_ms"] for r in rs), 2),
                                       "p99_ms": round(statistics.median(r["p99_ms"] for r in rs), 2),
                                       "rps": round(statistics.median(r["rps"] for r in rs), 1)}
                                for name, rs in runs.items()}
                off = results[key]["off"]
                for tier in ("native", "rego"):
                    results[key][f"{tier}_added_p50_ms"] = round(results[key][tier]["p50_ms"] - off["p50_ms"], 2)
                    results[key][f"{tier}_added_p99_ms"] = round(results[key][tier]["p99_ms"] - off["p99_ms"], 2)
    results["policy_evaluation_in_process"] = policy_eval_times()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
