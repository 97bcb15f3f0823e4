"""Issue 13 figures (operations and health): requests failed during each live operation at a steady load, and
the time from a component's crash to its first successful answer, on the shipped mesh.yaml, with a process
burning one core beside it (a busy machine).

Run: .venv/bin/python -m benchmarks.bench_operations [--rate 5] [--seconds 12]
"""

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import httpx

from benchmarks.common import FINOPTI, REPO, running_platform
from finopti.idp import DevIdentityProvider
from finopti.mesh.model import load_mesh
from finopti.testing.load import send_on_schedule

PROMPT = "list buckets"
USER = "bob@finopti.dev"


async def steady_asks(edge: str, token: str, rate: int, seconds: float) -> list[tuple[float, int, float]]:
    """(sent at, status, seconds to answer) of `rate` questions a second for `seconds` (0: no answer in 30 s)."""
    results: list[tuple[float, int, float]] = []
    async with httpx.AsyncClient(timeout=30, headers={"authorization": f"Bearer {token}"}) as client:
        async def one() -> None:
            sent = time.monotonic()
            try:
                response = await client.post(f"{edge}/api/ask", json={"prompt": PROMPT})
                results.append((sent, response.status_code, time.monotonic() - sent))
            except httpx.HTTPError:
                results.append((sent, 0, time.monotonic() - sent))
        await send_on_schedule(rate, int(rate * seconds), one)
    return sorted(results)


def during_load(edge: str, token: str, rate: int, seconds: float, action) -> tuple[list, float]:
    """Run `action` a third into a steady load; returns the results and how long the action took."""
    async def scenario():
        load = asyncio.create_task(steady_asks(edge, token, rate, seconds))
        await asyncio.sleep(seconds / 3)
        started = time.monotonic()
        await asyncio.to_thread(action)
        took = time.monotonic() - started
        return await load, took
    return asyncio.run(scenario())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=int, default=5, help="questions a second")
    parser.add_argument("--seconds", type=float, default=12)
    args = parser.parse_args()
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        with running_platform() as (state, rt, _, env):
            token = DevIdentityProvider(state.idp, load_mesh(REPO / "mesh.yaml").identity).issue(USER)

            def cli(*command: str) -> subprocess.CompletedProcess:
                return subprocess.run([FINOPTI, *command], cwd=REPO, env=env, capture_output=True, text=True,
                                      check=True)

            operations = {
                "mesh apply": lambda: cli("mesh", "apply"),
                "fault inject (header-scoped abort on gcloud-agent)":
                    lambda: cli("fault", "inject", "gcloud-agent", "--abort", "503", "--percent", "100",
                                "--header", "x-drill=1"),
                "fault clear": lambda: cli("fault", "clear"),
                "canary set gcloud-agent v2=10": lambda: cli("canary", "set", "gcloud-agent", "v2=10"),
                "pki rotate": lambda: cli("pki", "rotate"),
            }
            print(f"{args.rate} questions/s ('{PROMPT}'), {args.seconds:.0f} s around each operation, one core burnt:")
            for name, action in operations.items():
                results, took = during_load(rt.edge_url, token, args.rate, args.seconds, action)
                failed = [s for _, s, _ in results if s != 200]
                print(f"  {name:52} {len(failed)} of {len(results)} failed"
                      + (f" {sorted(set(failed))}" if failed else "")
                      + f"   (took {took:.1f} s; slowest answer {max(d for _, _, d in results):.1f} s)")
            print("SIGKILL of a component under the same load: crash to the first successful answer after it")
            for component in ("gcloud-agent", "gcloud-tools", "orchestrator", "policy"):
                status = json.loads(cli("status", "--json").stdout)["components"]
                pid = next(c["pid"] for c in status if c["name"] == component)
                killed: list[float] = []

                def crash(pid: int = pid, killed: list[float] = killed) -> None:
                    killed.append(time.monotonic())
                    os.kill(pid, signal.SIGKILL)  # the benchmark's own platform, by pid

                results, _ = during_load(rt.edge_url, token, args.rate, args.seconds * 1.5, crash)
                after = [(t, s) for t, s, _ in results if t >= killed[0]]
                first = next((t for t, s in after if s == 200), None)
                failed = sum(s != 200 for _, s in after)
                shown = f"{first - killed[0]:.1f} s" if first else "no answer in the window"
                print(f"  {component:14} {shown:>8}   ({failed} of {len(after)} questions after the crash failed)")
                time.sleep(6)  # supervisord counts the new process started (startsecs) before the next crash
    finally:
        burner.kill()
        burner.wait()


if __name__ == "__main__":
    main()
