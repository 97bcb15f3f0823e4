"""The pipeline as supervisord runs it: the log store (`finopti.services.runner`) and the collector
(`python -m finopti.logs.collector`) as real processes, lines written by a writer process. Every line must be
stored exactly once, in order per file, across a SIGKILLed collector, rotations and a store outage."""

import contextlib
import os
import random
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest

from finopti.ports import free_port

# Writes COUNT numbered JSON lines to each file at RATE lines/s per file, in chunks cut at random bytes (a
# line may straddle two writes). With ROTATE_EVERY > 0 it rotates each file as supervisord does (rename to
# .1, .1 to .2 ... keeping 3, and a new file), right after a chunk that may have ended mid-line.
WRITER = r"""
import os, random, sys, time, orjson
count, rate, rotate_every, paths = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
rng = random.Random(1)
files = {p: open(p, "ab", buffering=0) for p in paths}
def rotate(p):
    files[p].close()
    for n in (2, 1):
        if os.path.exists(f"{p}.{n}"):
            os.replace(f"{p}.{n}", f"{p}.{n + 1}")
    os.replace(p, f"{p}.1")
    files[p] = open(p, "ab", buffering=0)
pending = {p: b"" for p in paths}
started, chunk = time.monotonic(), 200
for first in range(0, count, chunk):
    for p in paths:
        name = os.path.basename(p)[:-4]
        data = pending[p] + b"".join(orjson.dumps({
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()), "level": "info", "service": name,
            "message": "line", "seq": i, "trace_id": os.urandom(16).hex(), "request_id": f"{name}-{i}"}) + b"\n"
            for i in range(first, min(first + chunk, count)))
        cut = rng.randrange(len(data) // 2, len(data)) if first + chunk < count else len(data)
        files[p].write(data[:cut])
        pending[p] = data[cut:]
        if rotate_every and (first // chunk) % (rotate_every // chunk) == rotate_every // chunk - 1:
            rotate(p)
    time.sleep(max(0.0, started + (first + chunk) / rate - time.monotonic()))
for p in paths:
    files[p].write(pending[p])
"""


class Proc:
    def __init__(self, args: list[str], env: dict, out: Path):
        self.args, self.env, self.out = args, env, out
        self.popen: subprocess.Popen | None = None

    def start(self) -> "Proc":
        with open(self.out, "ab") as out:
            self.popen = subprocess.Popen(self.args, env={**os.environ, **self.env}, stdout=out,
                                          stderr=subprocess.STDOUT)
        return self

    def signal(self, sig: int) -> None:
        self.popen.send_signal(sig)
        self.popen.wait(15)


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


class Pipeline:
    def __init__(self, home: Path):
        self.home = home
        self.logs = home / "logs"
        self.logs.mkdir(parents=True)
        self.store_url = f"http://127.0.0.1:{free_port()}"
        base = {"FINOPTI_HOME": str(home), "PYTHONUNBUFFERED": "1"}
        # The processes' own output goes outside the logs dir: the store then holds only the writer's lines.
        self.store = Proc([sys.executable, "-m", "finopti.services.runner"], {
            **base, "FINOPTI_SERVICE": "logstore", "FINOPTI_PORT": self.store_url.rsplit(":", 1)[1],
            "FINOPTI_ENTRYPOINT": "finopti.services.logstore.app:create_app"}, home / "logstore.out")
        self.collector_port = free_port()
        self.collector = Proc([sys.executable, "-m", "finopti.logs.collector"], {
            **base, "FINOPTI_SERVICE": "collector", "FINOPTI_PORT": str(self.collector_port),
            "FINOPTI_LOGSTORE_URL": self.store_url}, home / "collector.out")

    def start_store(self) -> None:
        self.store.start()
        wait_for(lambda: self._up(f"{self.store_url}/healthz"), 20, "the log store")

    def start_collector(self) -> None:
        self.collector.start()
        wait_for(lambda: self._up(f"http://127.0.0.1:{self.collector_port}/healthz"), 20, "the collector")

    @staticmethod
    def _up(url: str) -> bool:
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def write(self, count: int, rate: float, *names: str, rotate_every: int = 0) -> subprocess.Popen:
        paths = [str(self.logs / f"{n}.log") for n in names]
        return subprocess.Popen([sys.executable, "-c", WRITER, str(count), str(rate), str(rotate_every), *paths])

    def stored(self) -> int:
        return httpx.get(f"{self.store_url}/api/stats", timeout=10).json()["lines"]


    def seqs_by_service(self) -> dict[str, list[int]]:
        """Every stored line's seq, per service, in the store's order (time, then arrival), read page by page
        through the query API's cursor."""
        out: dict[str, list[int]] = {}
        for service in httpx.get(f"{self.store_url}/loki/api/v1/label/service/values", timeout=10).json()["data"]:
            cursor = None
            while True:
                params = {"service": service, "limit": 5000, "direction": "forward",
                          **({"cursor": cursor} if cursor else {})}
                page = httpx.get(f"{self.store_url}/api/logs", params=params, timeout=30).json()
                out.setdefault(service, []).extend(line["line"]["seq"] for line in page["lines"])
                if not (cursor := page["next_cursor"]):
                    break
        return out

    def stop(self) -> None:
        for proc in (self.collector, self.store):
            if proc.popen and proc.popen.poll() is None:
                proc.signal(signal.SIGTERM)


@contextlib.contextmanager
def running(home: Path):
    """A store and a collector, started, for the tests of one module."""
    p = Pipeline(home)
    try:
        p.start_store()
        p.start_collector()
        yield p
    finally:
        p.stop()


@pytest.fixture
def pipeline(tmp_path):
    p = Pipeline(tmp_path / "home")
    yield p
    p.stop()


def assert_each_line_once(pipeline: Pipeline, per_file: int, *names: str) -> None:
    """Every line of every file stored exactly once, in order. A sentinel written last to each file is stored
    after everything before it (and after any batch sent twice): once it is there, nothing else will come."""
    for name in names:
        with open(pipeline.logs / f"{name}.log", "ab") as f:
            f.write(orjson.dumps({"service": name, "message": "sentinel", "seq": per_file}) + b"\n")
    wait_for(lambda: pipeline.stored() >= len(names) * (per_file + 1), 120, "every line and the sentinels")
    seqs = pipeline.seqs_by_service()
    assert sorted(seqs) == sorted(names)
    for service, got in seqs.items():
        assert got == list(range(per_file + 1)), f"{service}: {len(got)} lines, first wrong at " + str(
            next((i for i, (a, b) in enumerate(zip(got, range(per_file + 1), strict=False)) if a != b), len(got)))


def kill_repeatedly(proc: Proc, restart, seed: int, kills: int = 6) -> None:
    """SIGKILL the process at random moments (mid-batch, mid-push, mid-transaction, mid-merge: anywhere), then
    start it again; a bounded number of times."""
    rng = random.Random(seed)
    for _ in range(kills):
        time.sleep(rng.uniform(0.1, 0.9))
        proc.signal(signal.SIGKILL)
        restart()


def test_sigkilled_collector_loses_and_repeats_nothing(pipeline):
    pipeline.start_store()
    pipeline.start_collector()
    writer = pipeline.write(50_000, 20_000, "alpha", "beta")  # 100,000 lines over ~2.5 s
    kill_repeatedly(pipeline.collector, pipeline.start_collector, seed=1)
    assert writer.wait(60) == 0
    assert_each_line_once(pipeline, 50_000, "alpha", "beta")


def test_sigkilled_collector_whose_positions_file_never_lands(pipeline):
    """Every SIGKILL lands between a push and the positions file: the file cannot be written (its path is a
    directory: it was also unreadable at start, and the collector did not start). The store's record alone says
    where to resume."""
    (pipeline.home / "collector-positions.json").mkdir()
    pipeline.start_store()
    pipeline.start_collector()
    writer = pipeline.write(20_000, 10_000, "iota")
    kill_repeatedly(pipeline.collector, pipeline.start_collector, seed=3, kills=4)
    assert writer.wait(60) == 0
    assert_each_line_once(pipeline, 20_000, "iota")


def test_sigkilled_store_loses_and_repeats_nothing(pipeline):
    pipeline.start_store()
    pipeline.start_collector()
    writer = pipeline.write(50_000, 20_000, "gamma", "delta")
    kill_repeatedly(pipeline.store, pipeline.start_store, seed=2)
    assert writer.wait(60) == 0
    assert_each_line_once(pipeline, 50_000, "gamma", "delta")


def test_rotation_while_tailing_loses_nothing(pipeline):
    pipeline.start_store()
    pipeline.start_collector()
    # A rotation every 2,000 lines, mid-line, while the collector reads.
    writer = pipeline.write(20_000, 5_000, "gamma", "delta", rotate_every=2_000)
    assert writer.wait(60) == 0
    assert (pipeline.logs / "gamma.log.3").exists()
    assert_each_line_once(pipeline, 20_000, "gamma", "delta")
    rotations = [line for line in httpx.get(f"http://127.0.0.1:{pipeline.collector_port}/metrics").text.splitlines()
                 if line.startswith("finopti_collector_rotations_total ")]
    assert float(rotations[0].split()[1]) >= 10  # 20, unless two came between two looks at a file


def test_store_outage_loses_nothing(pipeline):
    pipeline.start_store()
    pipeline.start_collector()
    assert pipeline.write(2_000, 20_000, "epsilon").wait(30) == 0
    wait_for(lambda: pipeline.stored() == 2_000, 20, "the first 2,000 lines")

    pipeline.store.signal(signal.SIGTERM)
    down_since = time.monotonic()
    # While the store is down: more lines, and a rotation of the file.
    assert pipeline.write(6_000, 5_000, "epsilon", rotate_every=4_000).wait(30) == 0
    health = httpx.get(f"http://127.0.0.1:{pipeline.collector_port}/healthz").json()
    assert health["receiver_up"] is False and health["status"] == "degraded"
    time.sleep(max(0.0, 10 - (time.monotonic() - down_since)))
    pipeline.start_store()

    with open(pipeline.logs / "epsilon.log", "ab") as f:  # last: once it is stored, nothing else will come
        f.write(orjson.dumps({"service": "epsilon", "message": "sentinel", "seq": 6_000}) + b"\n")
    wait_for(lambda: pipeline.stored() >= 8_001, 30, "every line after the outage")
    assert pipeline.seqs_by_service()["epsilon"] == list(range(2_000)) + list(range(6_001))
    metrics = httpx.get(f"http://127.0.0.1:{pipeline.collector_port}/metrics").text
    assert "finopti_collector_push_errors_total" in metrics and 'reason="ConnectError"' in metrics


def test_a_full_disk_loses_nothing(pipeline):
    """The store's disk fills mid-ingest (a file-size limit on the store's process: its writes fail with EFBIG, as
    on a full disk): pushes fail with 503 and are retried; once there is room, every line is stored once. (If the
    store stayed unhealthy long enough to exit, it is started again, as supervisord would.)"""
    pipeline.start_store()
    pid = pipeline.store.popen.pid
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (2_000_000, resource.RLIM_INFINITY))
    pipeline.start_collector()
    writer = pipeline.write(30_000, 30_000, "zeta", "eta")
    wait_for(lambda: not pipeline._up(f"{pipeline.store_url}/healthz"), 60, "the store to find its disk full")
    if pipeline.store.popen.poll() is None:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert writer.wait(60) == 0

    def room_again() -> bool:
        if pipeline.store.popen.poll() is not None:
            pipeline.start_store()
        return pipeline._up(f"{pipeline.store_url}/healthz")

    wait_for(room_again, 60, "the store to write again")
    assert_each_line_once(pipeline, 30_000, "zeta", "eta")


def test_hundreds_of_files_under_a_low_open_files_limit(pipeline):
    """300 files, and a collector allowed 128 descriptors (it can raise its soft limit only to the hard one): it
    died of EMFILE at once, under a process manager again and again. Now it keeps descriptors for its pushes, and
    every line of every file is stored once."""
    limited = ("import resource, runpy; resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128)); "
               "runpy.run_module('finopti.logs.collector', run_name='__main__')")
    pipeline.collector.args = [sys.executable, "-c", limited]
    names = [f"many{n:03d}" for n in range(300)]
    for name in names:
        (pipeline.logs / f"{name}.log").write_bytes(
            b"".join(orjson.dumps({"service": name, "message": "line", "seq": i}) + b"\n" for i in range(10)))
    pipeline.start_store()
    pipeline.start_collector()
    wait_for(lambda: pipeline.stored() == 3_000, 120, "the 3,000 lines")
    assert_each_line_once(pipeline, 10, *names)  # and each file once more, through its closed (parked) file
    health = httpx.get(f"http://127.0.0.1:{pipeline.collector_port}/healthz").json()
    assert health["files"] == 300 and health["files_open"] <= 128 - 64 and health["files_ok"]


def test_text_lines_in_a_zone_of_their_own_on_a_machine_not_on_utc(pipeline, monkeypatch):
    """The collector on a machine 5 hours behind UTC: a text line that names its zone (`…Z`, `+02:00`) is dated by
    it (it was read as local time: 5 hours off); one that names none is local time, as supervisord writes it."""
    monkeypatch.setenv("TZ", "EST+5")  # the store's and the collector's zone
    pipeline.start_store()
    pipeline.start_collector()
    base = time.time_ns() // 10**9 * 10**9 - 60 * 10**9
    utc = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(base / 1e9))
    plus_two = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(base / 1e9 + 7200))
    local = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(base / 1e9 - 5 * 3600))
    text = f"{utc}.250Z INFO one\n{plus_two}+02:00 INFO two\n{local},500 INFO three\n"
    (pipeline.logs / "zoned.log").write_text(text)
    wait_for(lambda: pipeline.stored() == 3, 30, "three lines")
    lines = httpx.get(f"{pipeline.store_url}/api/logs", params={"direction": "forward"}, timeout=10).json()["lines"]
    assert [(line["ts_ns"] - base, line["line"].split()[-1]) for line in lines] == [
        (0, "two"), (250_000_000, "one"), (500_000_000, "three")]


def test_store_stops_promptly_with_a_live_tail_open(pipeline):
    """supervisord stops the store with SIGTERM: an open SSE tail must not hold uvicorn's graceful shutdown."""
    pipeline.start_store()
    opened = threading.Event()

    def tail() -> None:
        try:
            with httpx.stream("GET", f"{pipeline.store_url}/api/logs/tail", timeout=httpx.Timeout(5, read=30)) as r:
                opened.set()
                for _ in r.iter_lines():
                    pass
        except httpx.HTTPError:
            pass

    threading.Thread(target=tail, daemon=True).start()
    assert opened.wait(10)
    started = time.monotonic()
    pipeline.store.popen.send_signal(signal.SIGTERM)
    pipeline.store.popen.wait(10)
    assert time.monotonic() - started < 5
