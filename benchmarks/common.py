"""Helpers the benchmarks share: a throwaway platform and a fixed-concurrency HTTP load."""

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

from finopti.paths import StateDir
from finopti.platform import Runtime
from finopti.ports import free_port

REPO = Path(__file__).resolve().parent.parent
FINOPTI = str(Path(sys.executable).with_name("finopti"))


@contextmanager
def running_platform(mesh: Path | None = None):
    """Start a platform (mesh.yaml, or `mesh`) in a temporary state dir; yields (state, runtime, seconds to
    healthy, environment)."""
    home = Path(tempfile.mkdtemp(prefix="finopti-bench-"))
    env = {**os.environ, "FINOPTI_HOME": str(home), "FINOPTI_EDGE_PORT": str(free_port())}
    started = time.perf_counter()
    mesh_args = ["--mesh", str(mesh)] if mesh is not None else []
    up = subprocess.run([FINOPTI, "up", "--detach", *mesh_args], cwd=REPO, env=env, capture_output=True, text=True)
    if up.returncode != 0:
        subprocess.run([FINOPTI, "down"], cwd=REPO, env=env, capture_output=True)
        raise RuntimeError(f"finopti up failed ({up.returncode}):\n{up.stdout}\n{up.stderr}")
    elapsed = time.perf_counter() - started
    state = StateDir(home)
    try:
        yield state, Runtime.load(state), elapsed, env
    finally:
        subprocess.run([FINOPTI, "down"], cwd=REPO, env=env, capture_output=True)


def wait_http(url: str, timeout: float = 20) -> None:
    """Until `url` answers 200 (a server the benchmark started)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def _load(
    url: str, total: int, concurrency: int, client_kwargs: dict, headers: dict, method: str = "GET",
    body: dict | None = None,
) -> tuple[list[float], float]:
    latencies: list[float] = []
    counter = iter(range(total))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30, **client_kwargs) as client:

        async def worker():
            for _ in counter:
                t0 = time.perf_counter()
                response = await client.request(method, url, headers=headers, json=body)
                latencies.append(time.perf_counter() - t0)
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return latencies, wall


def load(url: str, total: int = 2000, concurrency: int = 8, headers: dict | None = None, method: str = "GET",
         body: dict | None = None, **client_kwargs) -> dict:
    latencies, wall = asyncio.run(_load(url, total, concurrency, client_kwargs, headers or {}, method, body))
    ms = [v * 1000 for v in latencies]
    return {
        "requests": total,
        "concurrency": concurrency,
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "rps": round(total / wall, 1),
    }
