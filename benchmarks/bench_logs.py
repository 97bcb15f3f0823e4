"""Log pipeline benchmark: the collector and the log store as real processes, as supervisord runs them.

1. ingest: LINES lines (default 1,000,000) of platform-like traffic written to six log files, then the collector
   started: lines/s until all are queryable.
2. emit-to-queryable latency: lines appended one at a time while a live tail (SSE) is open: p50/p99.
3. with the lines stored: trace lookup (GET /api/traces/{id}), request id lookup, text search over the last hour
   (GET /api/logs?q=&since=1h), filters, paging through the cursor.
4. the store's size, next to the log files' (raw) size.

The queries of 3. are measured once the store has settled (its background merge of the burst done, reported), after
one trace lookup figure taken while it still merges.

Every figure is printed next to the raw size of what was stored, and the targets of issue 14.

    .venv/bin/python benchmarks/bench_logs.py [--lines 1000000]
"""

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import orjson
import psutil

from benchmarks.common import wait_http
from finopti.ports import free_port

SERVICES = ["orchestrator", "gcloud-agent", "gcloud-tools", "monitoring-agent", "monitoring-tools"]
WORDS = ["instances", "zone", "us-central1-a", "idle", "cpu", "bucket", "disk", "price", "quota", "label"]


def iso(ns: int) -> str:
    seconds, rest = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{rest // 1_000_000:03d}Z"


def trace_lines(t0: int, rng: random.Random, marker: str | None = None) -> dict[str, list[bytes]]:
    """One request's lines: an edge hop, mesh hops, each service's own lines and request_completed."""
    trace_id, request_id = uuid.uuid4().hex, str(uuid.uuid4())
    out: dict[str, list[bytes]] = {}
    agent, tools = rng.choice([("gcloud-agent", "gcloud-tools"), ("monitoring-agent", "monitoring-tools")])
    hops = [("edge", "orchestrator", "/api/ask", 0, 40), ("mesh", agent, f"/{agent}/v1/actions/list", 2, 30)]
    hops += [("mesh", tools, f"/{tools}/mcp", 5 + 6 * i, 5) for i in range(rng.randint(1, 3))]
    for listener, service, path, start_ms, duration in hops:
        start = t0 + start_ms * 1_000_000
        out.setdefault("gateway", []).append(orjson.dumps({
            "ts": iso(start), "level": "info", "service": "gateway", "message": "access", "listener": listener,
            "method": "POST", "path": path, "route": service, "upstream_service": f"{service}.v1",
            "upstream_host": "127.0.0.1:40000", "status": 200, "response_flags": "-",
            "response_code_details": "via_upstream", "duration_ms": duration, "upstream_duration_ms": str(duration),
            "bytes_received": 100, "bytes_sent": 2000, "request_id": request_id, "trace_id": trace_id,
            "user": "bob@finopti.dev", "user_agent": "python-httpx/0.28.1"}))
        common = {"level": "info", "service": service, "version": "v1", "trace_id": trace_id,
                  "span_id": uuid.uuid4().hex[:16], "request_id": request_id, "user": "bob@finopti.dev"}
        words = " ".join(rng.sample(WORDS, 3))
        message = f"{marker} {words}" if marker else f"handling {words}"
        out.setdefault(service, []).append(orjson.dumps({"ts": iso(start + 1_000_000), **common, "message": message}))
        out[service].append(orjson.dumps({
            "ts": iso(start + (duration - 1) * 1_000_000), **common, "message": "request completed",
            "event": "request_completed", "method": "POST", "path": path.split("/", 2)[-1], "route": "/x",
            "status": 200, "duration_ms": duration - 1.5}))
    return out


def write_corpus(logs: Path, total: int) -> tuple[int, list[str], list[str]]:
    """Platform-like traffic over the last minutes (3 ms between requests) -> (lines, some trace ids, some
    request ids)."""
    rng = random.Random(7)
    files = {name: open(logs / f"{name}.log", "ab") for name in ["gateway", *SERVICES]}  # noqa: SIM115
    written, traces, requests = 0, [], []
    t = time.time_ns() - total // 12 * 3_000_000 - 60 * 1_000_000_000
    while written < total:
        lines = trace_lines(t, rng)
        for name, chunk in lines.items():
            files[name].write(b"\n".join(chunk) + b"\n")
            written += len(chunk)
        if rng.random() < 0.001:
            first = orjson.loads(lines["gateway"][0])
            traces.append(first["trace_id"])
            requests.append(first["request_id"])
        t += 3_000_000
    for f in files.values():
        f.close()
    return written, traces, requests


def start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(args, env={**os.environ, **env}, stdout=open(log, "ab"), stderr=subprocess.STDOUT)  # noqa: SIM115


def pushed_lines(port: int) -> float:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    except httpx.ConnectError:  # not listening yet
        return 0.0
    for line in text.splitlines():
        if line.startswith("finopti_collector_lines_pushed_total "):
            return float(line.split()[1])
    return 0.0


def print_latency(when: str, store_url: str, logs: Path, count: int = 200) -> str:
    """Lines appended one at a time (10-40 ms apart) while a live tail is open: write -> tail event. Returns the
    lines' tag (one line each: `<tag>-<i>`)."""
    arrived: dict[str, float] = {}
    ready = threading.Event()
    tag = f"latency-{uuid.uuid4().hex[:6]}"

    def tail() -> None:
        with httpx.stream("GET", f"{store_url}/api/logs/tail", params={"service": tag},
                          timeout=httpx.Timeout(5, read=None)) as r:
            ready.set()
            for line in r.iter_lines():
                if line.startswith("data: "):
                    arrived[orjson.loads(line[6:])["line"]["message"]] = time.perf_counter()
                    if len(arrived) >= count:
                        return

    threading.Thread(target=tail, daemon=True).start()
    ready.wait(10)
    time.sleep(0.5)
    sent: dict[str, float] = {}
    with open(logs / f"{tag}.log", "ab", buffering=0) as f:
        for i in range(count):
            marker = f"{tag}-{i}"
            sent[marker] = time.perf_counter()
            f.write(orjson.dumps({"ts": iso(time.time_ns()), "level": "info", "service": tag, "message": marker})
                    + b"\n")
            time.sleep(random.uniform(0.01, 0.04))
    deadline = time.monotonic() + 10
    while len(arrived) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    latencies = sorted((arrived[m] - sent[m]) * 1000 for m in sent if m in arrived)
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(f"emit-to-queryable latency, {when} ({len(latencies)} lines, via the live tail): "
          f"p50 {p50:.0f} ms, p99 {p99:.0f} ms")
    return tag


def timed(fn, repeat: int) -> float:
    """Median seconds of fn over repeat runs."""
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def measured(store: psutil.Process, fn, repeat: int) -> tuple[float, float]:
    """(median wall seconds, the store's mean CPU seconds) per call: on a machine shared with other work the CPU
    time is what the query costs, whatever the wait for a core."""
    before = cpu_seconds(store)
    wall = timed(fn, repeat)
    return wall, (cpu_seconds(store) - before) / repeat


def settle(proc: psutil.Process, limit: float = 300) -> float:
    """Seconds until the store's background work on the burst (merging level-0 parts, the WAL checkpoint) is done:
    its CPU use under 5 % over a second."""
    began = time.perf_counter()
    while time.perf_counter() - began < limit and proc.cpu_percent(interval=1.0) >= 5:
        pass
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--keep", action="store_true", help="keep the temporary FINOPTI_HOME")
    opts = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-logs-"))
    logs = home / "logs"
    logs.mkdir()
    store_port, collector_port = free_port(), free_port()
    store_url = f"http://127.0.0.1:{store_port}"
    procs = []
    try:
        # Written aside first, then moved into the logs directory at once: the ingest is timed from there.
        staging = home / "staging"
        staging.mkdir()
        t = time.perf_counter()
        total, traces, requests = write_corpus(staging, opts.lines)
        size = sum(p.stat().st_size for p in staging.glob("*.log"))
        print(f"corpus: {total:,} lines, {size / 2**20:.0f} MiB in 6 files ({time.perf_counter() - t:.1f} s to write)")

        # The processes' own output goes elsewhere: the store holds what the benchmark writes, only.
        base = {"FINOPTI_HOME": str(home), "PYTHONUNBUFFERED": "1"}
        procs.append(start([sys.executable, "-m", "finopti.services.runner"], {
            **base, "FINOPTI_SERVICE": "logstore", "FINOPTI_PORT": str(store_port),
            "FINOPTI_ENTRYPOINT": "finopti.services.logstore.app:create_app"}, home / "logstore.out"))
        wait_http(f"{store_url}/healthz")
        procs.append(start([sys.executable, "-m", "finopti.logs.collector"], {
            **base, "FINOPTI_SERVICE": "collector", "FINOPTI_PORT": str(collector_port),
            "FINOPTI_LOGSTORE_URL": store_url}, home / "collector.out"))
        wait_http(f"http://127.0.0.1:{collector_port}/healthz")
        tag = print_latency("quiet pipeline", store_url, logs)

        before = pushed_lines(collector_port)
        cpu_before = {name: psutil.Process(p.pid).cpu_times() for name, p in zip(("store", "collector"), procs,
                                                                                  strict=True)}
        began = time.perf_counter()
        for path in staging.glob("*.log"):
            path.rename(logs / path.name)
        stored = 0
        while stored < total:  # acknowledged by the store = committed = queryable
            time.sleep(0.1)
            stored = pushed_lines(collector_port) - before
            if time.perf_counter() - began > 600:
                raise RuntimeError(f"only {stored} of {total} lines stored after 600 s")
        elapsed = time.perf_counter() - began
        load = os.getloadavg()[0]
        cpu = {name: psutil.Process(p.pid).cpu_times() for name, p in zip(("store", "collector"), procs, strict=True)}
        per_line = {name: (c.user + c.system - cpu_before[name].user - cpu_before[name].system) / total * 1e6
                    for name, c in cpu.items()}
        print(f"ingest (collector + store): {total / elapsed:,.0f} lines/s, {size / elapsed / 2**20:.1f} MiB/s of raw "
              f"lines ({total:,} lines in {elapsed:.1f} s; target ≥ 100,000 lines/s; CPU per line: "
              + ", ".join(f"{name} {us:.1f} µs" for name, us in per_line.items())
              + f", i.e. {1e6 / max(per_line.values()):,.0f} lines/s if each had a core of its own"
              + f"; machine: {os.cpu_count()} CPUs, load average {load:.1f} at the end)")

        print_latency("right after that burst", store_url, logs)

        client = httpx.Client(base_url=store_url, timeout=60)
        server = psutil.Process(procs[0].pid)
        wall, cpu = measured(server, lambda: client.get(f"/api/traces/{random.choice(traces)}").raise_for_status(), 20)
        print(f"trace lookup while the store still merges the burst: {wall * 1000:.1f} ms (store CPU "
              f"{cpu * 1000:.1f} ms, its background merge included)")
        print(f"store settled (background merge of the burst done) {settle(server):.0f} s later")
        stats = client.get("/api/stats").json()
        n = stats["lines"]
        trace = random.Random(1).choice(traces)
        hops = len(client.get(f"/api/traces/{trace}").json()["hops"])
        rid = random.Random(2).choice(requests)
        assert client.get("/api/logs", params={"request_id": rid}).json()["lines"]
        hour = {"since": "1h"}
        assert len(client.get("/api/logs", params={"q": f"{tag}-17", **hour}).json()["lines"]) == 1

        def page_through(limit: int = 5000, pages: int = 20) -> int:
            got, cursor = 0, None
            for _ in range(pages):
                page = client.get("/api/logs", params={"limit": limit, **({"cursor": cursor} if cursor else {})})
                got += len(page.json()["lines"])
                if not (cursor := page.json()["next_cursor"]):
                    break
            return got

        figures = [
            (f"trace lookup /api/traces/{{id}} ({hops} hops)", "≤ 20 ms",
             lambda: client.get(f"/api/traces/{random.choice(traces)}").raise_for_status(), 20),
            ("request id lookup, present", "≤ 20 ms",
             lambda: client.get("/api/logs", params={"request_id": random.choice(requests)}), 20),
            ("request id lookup, absent", "≤ 20 ms",
             lambda: client.get("/api/logs", params={"request_id": str(uuid.uuid4())}), 20),
            (f"text search, last hour ({size / 2**20:.0f} MiB of lines), a phrase in one line", "≤ 500 ms",
             lambda: client.get("/api/logs", params={"q": f"{tag}-17", **hour}).raise_for_status(), 5),
            ("text search, last hour, words in no line", "≤ 500 ms",
             lambda: client.get("/api/logs", params={"q": "no such words", **hour}), 5),
            ("text search, last hour, common words (100 newest)", "",
             lambda: client.get("/api/logs", params={"q": "idle cpu", "limit": 100, **hour}), 10),
            ("service filter (100 newest)", "", lambda: client.get(
                "/api/logs", params={"service": "gcloud-tools", "limit": 100}), 10),
            ("level=error (none stored)", "", lambda: client.get("/api/logs", params={"level": "error"}), 10),
            ("20 pages of 5,000 lines through the cursor", "", page_through, 1),
        ]
        print(f"with {n:,} lines stored (raw: {size / 2**20:.0f} MiB of log files); median over HTTP, and the store's "
              "CPU time per call:")
        for name, target, fn, repeat in figures:
            wall, cpu = measured(server, fn, repeat)
            print(f"  {name + ':':72} {wall * 1000:7.1f} ms  (store CPU {cpu * 1000:6.1f} ms)"
                  + (f"   target {target}" if target else ""))
        db = (home / "logstore" / "logstore.db").stat().st_size
        wal = sum(p.stat().st_size for p in (home / "logstore").glob("logstore.db-wal"))
        mib = 2**20
        print(f"store size: {db / mib:.1f} MiB for {n:,} lines = {db / size:.3f} × the raw {size / mib:.0f} MiB "
              f"(target ≤ 0.15 ×; parts {stats['parts']}, write-ahead log {wal / mib:.0f} MiB more, emptied at the "
              "next checkpoint)")
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(15)
        if opts.keep:
            print(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
