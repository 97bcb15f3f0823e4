"""`/api/ask` under load: a read action ("list buckets", as bob) through the whole path (edge → orchestrator →
gcloud-agent → gcloud-tools over MCP, each hop through the gateway), on a platform of its own, on loopback.

- round trip at concurrency 4 (closed loop): p50 / p99;
- open loop at fixed rates (10, 20, 40 requests/s by default, each for --seconds): requests are sent on
  schedule whether or not earlier ones have answered, as users would; p50 / p99 / errors / achieved rate.

Bounded: at most rate x seconds requests per rate, 30 s timeout each.

The platform runs mesh.yaml without its per-user rate limits (one user is capped at 10 asks/s, and this
measures the path, not the limit); the concurrency limits stay, so past them requests are shed (503).

Run: .venv/bin/python -m benchmarks.bench_ask [--seconds 15] [--rates 10 20 40]
"""

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import yaml

from benchmarks.common import REPO, load, percentile, running_platform
from finopti.idp import DevIdentityProvider
from finopti.mesh.model import load_mesh
from finopti.testing.load import send_on_schedule

PROMPT = {"prompt": "list buckets"}


async def open_loop(url: str, token: str, rate: float, seconds: float) -> dict:
    total = int(rate * seconds)
    latencies: list[float] = []
    errors: dict[str, int] = {}
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=30, limits=limits,
                                 headers={"authorization": f"Bearer {token}"}) as client:
        async def one() -> None:
            t0 = time.perf_counter()
            try:
                response = await client.post(url, json=PROMPT)
                key = None if response.status_code == 200 else str(response.status_code)
            except httpx.HTTPError as exc:
                key = type(exc).__name__
            latencies.append(time.perf_counter() - t0)
            if key:
                errors[key] = errors.get(key, 0) + 1

        wall = await send_on_schedule(rate, total, one)
    ms = [v * 1000 for v in latencies]
    return {"rate": rate, "requests": total, "p50_ms": round(statistics.median(ms), 1),
            "p99_ms": round(percentile(ms, 99), 1), "errors": errors, "completed_per_s": round(total / wall, 1)}


def without_rate_limits(directory: Path) -> Path:
    raw = yaml.safe_load((REPO / "mesh.yaml").read_text())
    for item in (*raw["services"], *raw["routes"]):
        item["policy"] = {k: v for k, v in (item.get("policy") or {}).items() if k != "rate_limit"}
    path = directory / "mesh.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--rates", type=float, nargs="+", default=[10, 20, 40])
    args = parser.parse_args()
    spec = load_mesh("mesh.yaml")
    with running_platform(without_rate_limits(Path(tempfile.mkdtemp(prefix="finopti-bench-mesh-")))) as (
            state, rt, _, _env):
        token = DevIdentityProvider(state.idp, spec.identity).issue("bob@finopti.dev")
        url = f"{rt.edge_url}/api/ask"
        headers = {"authorization": f"Bearer {token}"}
        warm = asyncio.run(open_loop(url, token, 5, 4))  # connections, MCP sessions, caches
        result = {"warm_up": warm,
                  "round_trip_c4": load(url, 200, 4, headers=headers, method="POST", body=PROMPT),
                  "open_loop": [asyncio.run(open_loop(url, token, rate, args.seconds)) for rate in args.rates]}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
