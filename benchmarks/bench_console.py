"""Console benchmark in a real headless Chromium through the real gateway: each page from navigation to drawn
(overview on a desktop and on a phone, trace list), the chat from asking to the answer's chart (a cost breakdown's
bars, a billing forecast's time series), the trace view
rendering a synthetic 50-hop trace, the live tail's delay from a log write to the screen.

    .venv/bin/python -m benchmarks.bench_console [--loads 7]
"""

import argparse
import json
import shutil
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx

from benchmarks.common import running_platform
from finopti.services.ui.browser import launch_chromium


def synthetic_trace(hops: int = 50) -> dict:
    """A trace of `hops` gateway hops (nested edge -> agent -> tools), 3 log lines each, one error."""
    t0 = time.time_ns() - 5_000_000_000
    out_hops, lines = [], []
    for i in range(hops):
        start = t0 + i * 4_000_000
        duration = 200.0 - i * 3.5
        service = ("orchestrator", "gcloud-agent", "gcloud-tools", "monitoring-agent", "monitoring-tools")[i % 5]
        hop_lines = []
        for j in range(3):
            ts = start + (j + 1) * 500_000
            level = "error" if i == 17 and j == 2 else "info"
            entry = {"id": len(lines) + 1, "ts": datetime.fromtimestamp(ts / 1e9, UTC).isoformat(), "ts_ns": ts,
                     "service": service, "level": level, "metadata": {},
                     "line": {"message": f"step {j} of hop {i}", "level": level, "service": service,
                              "trace_id": "b" * 32, "duration_ms": 1.5}}
            hop_lines.append(entry)
            lines.append(entry)
        out_hops.append({
            "listener": "edge" if i == 0 else "mesh", "route": service, "method": "POST", "path": f"/{service}/x",
            "service": service, "version": "v1", "upstream_service": f"{service}.v1", "start": hop_lines[0]["ts"],
            "start_ns": start, "end_ns": start + int(duration * 1e6), "duration_ms": duration, "status": 200 if i != 17
            else 500, "lines": hop_lines, "errors": [e for e in hop_lines if e["level"] == "error"],
            "offset_ms": (start - t0) / 1e6, "depth": min(i, 3),
        })
    return {"trace_id": "b" * 32, "start": lines[0]["ts"], "duration_ms": 400.0, "lines": lines, "hops": out_hops,
            "unattached": [], "errors": 1}


def overview_loads(page, edge: str, count: int) -> list[float]:
    """Milliseconds from navigation to every overview panel drawn, `count` times."""
    loads = []
    for _ in range(count):
        page.goto(f"{edge}/console")
        # Selectors, not wait_for_function: the pages' CSP forbids evaluating strings.
        page.wait_for_selector(".panel", timeout=30000)
        page.wait_for_selector(".panel[data-state=loading]", state="detached", timeout=30000)
        loads.append(page.evaluate("performance.now()"))
    return loads


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--loads", type=int, default=7)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with running_platform() as (state, rt, _, _env):
        edge = rt.edge_url
        token = httpx.post(f"{edge}/auth/dev-token", json={"email": "erin@finopti.dev"}, timeout=10).json()["token"]
        for prompt in ("find idle instances", "list buckets", "list instances in us-central1-a"):
            httpx.post(f"{edge}/api/ask", json={"prompt": prompt}, headers={"authorization": f"Bearer {token}"},
                       timeout=60)
        profile = Path(tempfile.mkdtemp(prefix="finopti-bench-chromium-"))
        try:
            with sync_playwright() as p:
                context = launch_chromium(p, profile)
                context.add_init_script(
                    f"sessionStorage.setItem('finopti.token', {json.dumps(token)});"
                    "sessionStorage.setItem('finopti.email', 'erin@finopti.dev');"
                    "sessionStorage.setItem('finopti.roles', '[\"gcloud_admin\",\"observability_admin\"]');")
                page = context.new_page()

                # 1. Console overview: navigation start -> every panel rendered (charts drawn or empty reasons),
                # on a desktop, then on a phone (390×844) where the panels stack.
                loads = overview_loads(page, edge, args.loads)
                page.set_viewport_size({"width": 390, "height": 844})
                phone_loads = overview_loads(page, edge, args.loads)
                page.set_viewport_size({"width": 1280, "height": 800})
                # 1c. Trace list: navigation -> the table of requests drawn.
                list_loads = []
                for _ in range(args.loads):
                    page.goto(f"{edge}/console/traces")
                    page.wait_for_selector("[data-testid=trace-table], [data-testid=no-traces]", timeout=30000)
                    list_loads.append(page.evaluate("performance.now()"))
                # 1d. Chat: the Ask click -> the answer's bar chart drawn (the request through every hop included).
                page.goto(f"{edge}/")
                page.wait_for_selector("#prompt:not([disabled])")
                asks = []
                for i in range(args.loads):
                    page.fill("#prompt", "monthly cost by team")
                    started = page.evaluate("performance.now()")
                    page.click("#ask")
                    page.wait_for_function(
                        "n => document.querySelectorAll('[data-testid=turn] [data-chart=bar] canvas').length > n",
                        arg=i, timeout=30000)
                    asks.append(page.evaluate("performance.now()") - started)
                # 1e. Chat, a billing forecast: the Ask click -> its time series drawn (fit, intervals, 70+ points).
                forecasts = []
                for i in range(args.loads):
                    page.fill("#prompt", "forecast this month's and next month's cost")
                    started = page.evaluate("performance.now()")
                    page.click("#ask")
                    page.wait_for_function("n => document.querySelectorAll("
                                           "'[data-testid=turn] [data-chart=timeseries] canvas').length > n",
                                           arg=i, timeout=30000)
                    forecasts.append(page.evaluate("performance.now()") - started)
                # 2. Trace view of a synthetic 50-hop trace (the API answer injected by route interception).
                body = json.dumps(synthetic_trace(50))
                page.route("**/api/traces/**", lambda route: route.fulfill(
                    status=200, content_type="application/json", body=body))
                renders, totals = [], []
                for _ in range(args.loads):
                    page.goto(f"{edge}/console/trace/{'b' * 32}")
                    page.wait_for_selector("body[data-rendered]", timeout=30000)
                    assert page.locator(".waterfall .hop[data-status]").count() >= 50
                    renders.append(float(page.evaluate("document.body.dataset.rendered")))
                    totals.append(page.evaluate("performance.now()"))
                page.unroute("**/api/traces/**")
                # 3. Live tail: a line appended to a log file -> its row on screen (collector, logstore, SSE).
                page.goto(f"{edge}/console/live")
                page.wait_for_selector("#stream-status[data-state=on]:has-text('live')")
                delays = []
                log = state.logs / "bench-console.log"
                for _ in range(args.loads):
                    marker = uuid.uuid4().hex
                    line = {"ts": datetime.now(UTC).isoformat(), "level": "info", "service": "bench-console",
                            "message": f"bench marker {marker}"}
                    t0 = time.perf_counter()
                    with log.open("a") as f:
                        f.write(json.dumps(line) + "\n")
                    page.wait_for_selector(f"#live-lines .ln:has-text('{marker}')", timeout=15000)
                    delays.append((time.perf_counter() - t0) * 1000)
                    time.sleep(0.3)
                context.close()
        finally:
            shutil.rmtree(profile, ignore_errors=True)

    med = statistics.median
    print(f"console overview load to interactive (all {args.loads} loads, every panel drawn): "
          f"p50 {med(loads):.0f} ms, max {max(loads):.0f} ms")
    print(f"console overview on a phone (390x844): p50 {med(phone_loads):.0f} ms, max {max(phone_loads):.0f} ms")
    print(f"trace list, navigation to table: p50 {med(list_loads):.0f} ms, max {max(list_loads):.0f} ms")
    print(f"chat, Ask click to the answer's bar chart (monthly cost by team): p50 {med(asks):.0f} ms, "
          f"max {max(asks):.0f} ms")
    print(f"chat, Ask click to the forecast's time series (billing, 80/95% bands): p50 {med(forecasts):.0f} ms, "
          f"max {max(forecasts):.0f} ms")
    print(f"trace view, synthetic 50-hop trace: render p50 {med(renders):.1f} ms (fetch + DOM), "
          f"page load to rendered p50 {med(totals):.0f} ms")
    print(f"live tail, log write to screen: p50 {med(delays):.0f} ms, max {max(delays):.0f} ms")


if __name__ == "__main__":
    main()
