"""CLI start-up: how long simple commands take from exec to exit, beside a bare Python start in the same run.

    .venv/bin/python -m benchmarks.bench_cli [--runs 15] [--with-platform]

Each command runs `--runs` times interleaved with the others (so a busy neighbour slows them all alike);
printed: median wall time, median CPU time (user + system of the child: what the command itself costs, less
sensitive to a loaded machine than the wall clock), and the ratio to `python -c pass`. `--with-platform` also
times `status` and `token` against a running platform.
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext

from benchmarks.common import FINOPTI, REPO, running_platform


def _run(cmd: list[str], env: dict) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--with-platform", action="store_true")
    args = parser.parse_args()
    stopped_home = tempfile.mkdtemp(prefix="finopti-bench-cli-")
    commands = {
        "python -c pass (baseline)": ([sys.executable, "-c", "pass"], None),
        "finopti --help": ([FINOPTI, "--help"], None),
        "finopti status (platform stopped)": ([FINOPTI, "status"], None),
        "finopti token alice@finopti.dev": ([FINOPTI, "token", "alice@finopti.dev"], None),
    }
    with running_platform() if args.with_platform else nullcontext() as running:
        env = {**os.environ, "FINOPTI_HOME": stopped_home}
        if running:
            commands["finopti status (platform running)"] = ([FINOPTI, "status"], running[3])
        for cmd, _ in commands.values():  # warm the page cache once
            _run(cmd, env)
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, (cmd, own_env) in commands.items():
                results[name].append(_run(cmd, own_env or env))
    base_wall = statistics.median(w for w, _ in results["python -c pass (baseline)"])
    print(f"{'command':<38} {'wall p50':>9} {'cpu p50':>9} {'wall / python':>14}   ({args.runs} runs each)")
    for name, samples in results.items():
        wall = statistics.median(w for w, _ in samples)
        cpu = statistics.median(c for _, c in samples)
        print(f"{name:<38} {wall * 1000:>7.0f}ms {cpu * 1000:>7.0f}ms {wall / base_wall:>13.1f}x")
    print(f"load average while measuring: {os.getloadavg()[0]:.1f} (2 cores)")


if __name__ == "__main__":
    main()
