"""Issue 2 figures: cold start to all-healthy, gateway overhead (direct vs through the edge), platform memory.

Run: .venv/bin/python benchmarks/bench_platform.py [--requests 2000] [--concurrency 8] [--starts 3]
"""

import argparse
import json

import psutil

from benchmarks.common import load, running_platform
from finopti.meshtls import client_context
from finopti.platform import platform_pids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--starts", type=int, default=3)
    args = parser.parse_args()

    start_times = []
    for i in range(args.starts):
        with running_platform() as (state, rt, elapsed, _):
            start_times.append(round(elapsed, 2))
            if i < args.starts - 1:
                continue
            processes = len(platform_pids(state))
            rss = sum(psutil.Process(pid).memory_info().rss for pid in platform_pids(state))
            ui_port = rt.service_ports["ui"]["v1"]
            # Only the gateway may talk to a service: the direct calls present the gateway's certificate.
            pki = state.pki
            tls = {"verify": client_context(pki / "gateway.crt", pki / "gateway.key", pki / "ca.crt")}
            direct_url = f"https://127.0.0.1:{ui_port}/"
            load(direct_url, total=200, **tls)  # warm-up
            direct = load(direct_url, args.requests, args.concurrency, **tls)
            edge = load(f"{rt.edge_url}/", args.requests, args.concurrency)
            direct_again = load(direct_url, args.requests, args.concurrency, **tls)

    print(json.dumps({
        "cold_up_to_healthy_s": start_times,
        "platform_rss_mib": round(rss / 2**20, 1),
        "platform_processes": processes,
        "direct": direct,
        "through_edge": edge,
        "direct_again": direct_again,
        "edge_vs_direct_p50_ratio": round(edge["p50_ms"] / direct["p50_ms"], 2),
        "added_p50_ms": round(edge["p50_ms"] - direct["p50_ms"], 2),
        "added_p99_ms": round(edge["p99_ms"] - direct["p99_ms"], 2),
        "rps_ratio": round(edge["rps"] / direct["rps"], 2),
    }, indent=2))


if __name__ == "__main__":
    main()
