"""Overload at the edge: a burst of 50 clients asking at once, on a platform of its own, on loopback.

Each client sends `--rounds` asks back to back ("list buckets", a read through edge → orchestrator →
gcloud-agent → gcloud-tools), the clients spread over the four development users who may list buckets, so
mesh.yaml's per-user rate limits and per-service concurrency limits both apply. Printed: the answers by status
and error code, latency of the admitted requests (200) and of the shed ones (429 rate_limited, 503 overloaded),
whether every shed answer carried Retry-After and the JSON error body, and the gateway's own counts of what it
shed. A shed client waits the Retry-After it was given before its next ask (`--ignore-retry-after`: at once).

`--baseline` runs the same burst first on a platform whose mesh.yaml has the protections taken out (no circuit
breaker, rate limit or retries on any route): the queueing the protections replace, measured in the same run.

Bounded: clients x rounds requests, 30 s timeout each. Run:
    .venv/bin/python -m benchmarks.bench_resilience [--clients 50] [--rounds 4] [--baseline] [--ignore-retry-after]
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

from benchmarks.common import REPO, percentile, running_platform
from finopti.idp import DevIdentityProvider
from finopti.mesh.model import load_mesh

PROMPT = {"prompt": "list buckets"}
# The development users whose roles may list buckets (policies/data.json).
USERS = ("alice@finopti.dev", "bob@finopti.dev", "erin@finopti.dev", "fiona@finopti.dev")
PROTECTIONS = ("circuit_breaker", "rate_limit", "retries", "per_try_timeout")
# Gateway counters of what it shed: the concurrency limits' overflow and the per-user rate limits.
SHED_STATS = ("upstream_rq_pending_overflow", "http_local_rate_limit.rate_limited")


async def burst(url: str, tokens: list[str], clients: int, rounds: int, honor_retry_after: bool) -> list[dict]:
    """`clients` concurrent clients, each `rounds` asks back to back (waiting Retry-After after a shed one when
    `honor_retry_after`); one record per answer."""
    records: list[dict] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        start = asyncio.Event()

        async def one_client(index: int) -> None:
            headers = {"authorization": f"Bearer {tokens[index % len(tokens)]}"}
            await start.wait()
            for _ in range(rounds):
                t0 = time.perf_counter()
                try:
                    response = await client.post(url, json=PROMPT, headers=headers)
                    record = {"status": response.status_code, "retry_after": response.headers.get("retry-after")}
                    if response.status_code != 200:
                        try:
                            body = response.json()
                            record["error"] = body.get("error")
                            record["json_body"] = bool(body.get("message")) and body.get("status") == record["status"]
                        except ValueError:
                            record["error"], record["json_body"] = "not-json", False
                except httpx.HTTPError as exc:
                    record = {"status": 0, "error": type(exc).__name__}
                record["seconds"] = time.perf_counter() - t0
                records.append(record)
                if honor_retry_after and (record.get("retry_after") or "").isdigit():
                    await asyncio.sleep(int(record["retry_after"]))  # a well-behaved client comes back later

        tasks = [asyncio.create_task(one_client(i)) for i in range(clients)]
        start.set()  # every client is ready: they all ask at once
        await asyncio.gather(*tasks)
    return records


def gateway_counts(admin_url: str) -> dict[str, int]:
    """The gateway's counters of shed requests, summed over clusters and routes."""
    totals = dict.fromkeys(SHED_STATS, 0)
    for line in httpx.get(f"{admin_url}/stats", timeout=10).text.splitlines():
        name, _, value = line.partition(": ")
        for stat in SHED_STATS:
            if name.endswith(stat) and value.strip().isdigit():
                totals[stat] += int(value)
    return totals


def _ms(values: list[float]) -> dict:
    if not values:
        return {}
    ms = [v * 1000 for v in values]
    return {"p50_ms": round(statistics.median(ms), 1), "p99_ms": round(percentile(ms, 99), 1),
            "max_ms": round(max(ms), 1)}


def summarize(records: list[dict], before: dict, after: dict, wall: float) -> dict:
    by_answer: dict[str, int] = {}
    for r in records:
        key = str(r["status"]) + (f" {r['error']}" if r.get("error") else "")
        by_answer[key] = by_answer.get(key, 0) + 1
    admitted = [r for r in records if r["status"] == 200]
    shed = [r for r in records if r["status"] in (429, 503) and r.get("error") in ("rate_limited", "overloaded")]
    return {
        "requests": len(records),
        "answers": dict(sorted(by_answer.items())),
        "admitted": {"count": len(admitted), **_ms([r["seconds"] for r in admitted])},
        "shed": {"count": len(shed), **_ms([r["seconds"] for r in shed]),
                 "with_retry_after": sum(1 for r in shed if r.get("retry_after")),
                 "with_json_body": sum(1 for r in shed if r.get("json_body"))},
        "gateway_counted": {k: after[k] - before[k] for k in SHED_STATS},
        "wall_s": round(wall, 2),
    }


def run(mesh: Path | None, clients: int, rounds: int, honor_retry_after: bool) -> dict:
    spec = load_mesh(mesh or REPO / "mesh.yaml")
    with running_platform(mesh) as (state, rt, _, _env):
        idp = DevIdentityProvider(state.idp, spec.identity)
        tokens = [idp.issue(user) for user in USERS]
        url = f"{rt.edge_url}/api/ask"
        for token in tokens:  # warm: connections, MCP sessions, caches
            httpx.post(url, json=PROMPT, headers={"authorization": f"Bearer {token}"}, timeout=30).raise_for_status()
        time.sleep(1.5)  # every user's rate-limit bucket full again
        before = gateway_counts(rt.admin_url)
        started = time.perf_counter()
        records = asyncio.run(burst(url, tokens, clients, rounds, honor_retry_after))
        wall = time.perf_counter() - started
        return summarize(records, before, gateway_counts(rt.admin_url), wall)


def unprotected_mesh(directory: Path) -> Path:
    """mesh.yaml with every route's and service's circuit breaker, rate limit and retries taken out."""
    raw = yaml.safe_load((REPO / "mesh.yaml").read_text())
    for item in (*raw["services"], *raw["routes"]):
        policy = dict(item.get("policy") or {})  # a copy: services share theirs through YAML anchors
        for key in PROTECTIONS:
            policy.pop(key, None)
        item["policy"] = policy
    path = directory / "mesh.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--baseline", action="store_true", help="first the same burst without the protections")
    parser.add_argument("--ignore-retry-after", action="store_true",
                        help="a shed client asks again at once instead of after Retry-After")
    args = parser.parse_args()
    honor = not args.ignore_retry_after
    result = {"clients": args.clients, "rounds": args.rounds, "honor_retry_after": honor}
    if args.baseline:
        result["unprotected"] = run(unprotected_mesh(Path(tempfile.mkdtemp(prefix="finopti-bench-mesh-"))),
                                    args.clients, args.rounds, honor)
    result["mesh.yaml"] = run(None, args.clients, args.rounds, honor)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
