"""Health that tells the truth, and self-repair (issue 13): a log store that cannot write says so, is restarted
with backoff until it can, and loses nothing meanwhile; the sandbox cloud, in a directory of its own, keeps
answering."""

import contextlib
import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from conftest import Platform, start_platform

from finopti.platform import supervisor_rpc

LINES_BEFORE, LINES_DURING = 100, 200


@pytest.fixture(scope="module")
def repair(tmp_path_factory) -> Platform:
    plat = start_platform(tmp_path_factory.mktemp("repair"))
    yield plat
    plat.cli("down")


@contextlib.contextmanager
def read_only(directory: Path):
    """`directory` read-only for real. Root is not stopped by permissions: a read-only bind mount of the directory
    over itself (new files and new database connections fail with EROFS; descriptors opened before keep writing,
    so the store's own probe is what notices). Anyone else: its mode."""
    if os.geteuid() != 0:
        mode = directory.stat().st_mode
        directory.chmod(0o555)
        try:
            yield
        finally:
            directory.chmod(mode)
        return
    if subprocess.run(["mount", "--bind", str(directory), str(directory)], capture_output=True).returncode != 0:
        pytest.skip("root without the right to mount: no way here to make a directory read-only for root")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(directory)], check=True, capture_output=True)
        yield
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=True)  # lazy: a process may still hold it


def _states(platform: Platform) -> dict[str, str]:
    components = json.loads(platform.cli("status", "--json").stdout)["components"]
    return {c["name"]: c["state"] for c in components}


def _wait(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"not within {timeout:.0f}s: {what}"
        time.sleep(0.5)
    return result


def _write_lines(path: Path, start: int, count: int) -> None:
    with path.open("a") as f:
        for i in range(start, start + count):
            f.write(json.dumps({"ts": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()), "level": "info",
                                "service": "drill", "message": f"drill line {i}"}) + "\n")


def _stored(platform: Platform) -> list[str]:
    response = httpx.get(f"{platform.edge}/api/logs", params={"service": "drill", "limit": 1000},
                         headers=platform.headers("carol@finopti.dev"), timeout=30)
    lines = response.json()["lines"] if response.status_code == 200 else []
    return [entry["line"]["message"] for entry in lines]


def _collector_metric(platform: Platform, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{platform.runtime.aux_ports['collector']}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


@pytest.mark.timeout(400)
def test_a_store_that_cannot_write_is_unhealthy_restarted_until_it_can_and_loses_nothing(repair):
    drill = repair.state.logs / "drill.log"
    _write_lines(drill, 0, LINES_BEFORE)
    _wait(lambda: len(_stored(repair)) == LINES_BEFORE, 60, "the first lines stored")
    rpc = supervisor_rpc(repair.state)
    first_pid = rpc.getProcessInfo("logstore")["pid"]
    errors_before = _collector_metric(repair, "finopti_collector_push_errors_total")
    seen: set[str] = set()

    with read_only(repair.state.logstore_db.parent):
        _write_lines(drill, LINES_BEFORE, LINES_DURING)
        # It says it cannot do its job, then exits, and its restarts fail (with growing pauses) while it still cannot.
        _wait(lambda: seen.add(_states(repair)["logstore"]) or "unhealthy" in seen, 60, "logstore unhealthy")
        # BACKOFF: it exited within startsecs of a start, and supervisord waits longer before each next try.
        _wait(lambda: rpc.getProcessInfo("logstore")["statename"] == "BACKOFF", 120, "logstore restarting")
        assert rpc.getProcessInfo("logstore")["pid"] != first_pid
        assert _states(repair)["logstore"] != "healthy"
        # The sandbox cloud lives elsewhere: questions are still answered.
        assert repair.ask("list buckets", user="bob@finopti.dev").status_code == 200
        # The collector keeps the lines (in the files, at most two batches in memory) and counts its failed pushes.
        assert _collector_metric(repair, "finopti_collector_push_errors_total") > errors_before

    _wait(lambda: _states(repair)["logstore"] == "healthy", 120, "logstore healthy again once it can write")
    stored = _wait(lambda: (s := _stored(repair)) and len(s) >= LINES_BEFORE + LINES_DURING and s, 60,
                   "the lines written during the fault stored")
    assert sorted(stored) == sorted(f"drill line {i}" for i in range(LINES_BEFORE + LINES_DURING))  # once each
    assert all(state == "healthy" for state in _states(repair).values())


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_watchdog_restarts_what_stays_unhealthy_then_kills_what_ignores_term_and_backs_off():
    from finopti.watchdog import Watchdog

    clock = _Clock()
    dog = Watchdog(restart_after=20, kill_after=10, clock=clock)
    assert dog.tick({"a": ("unhealthy", 1), "b": ("starting", 2), "c": ("down", None)}) == []
    clock.now = 19
    assert dog.tick({"a": ("unhealthy", 1)}) == []
    clock.now = 20
    assert dog.tick({"a": ("unhealthy", 1)}) == [("a", "CONT"), ("a", "TERM")]
    clock.now = 25
    assert dog.tick({"a": ("unhealthy", 1)}) == []  # TERM takes its time
    clock.now = 30
    assert dog.tick({"a": ("unhealthy", 1)}) == [("a", "KILL")]
    clock.now = 31
    assert dog.tick({"a": ("starting", 3)}) == []  # started again by supervisord
    clock.now = 40
    dog.tick({"a": ("unhealthy", 3)})
    clock.now = 79  # unhealthy again without having been healthy: twice as long before the next restart
    assert dog.tick({"a": ("unhealthy", 3)}) == []
    clock.now = 80
    assert dog.tick({"a": ("unhealthy", 3)}) == [("a", "CONT"), ("a", "TERM")]
    clock.now = 81
    dog.tick({"a": ("healthy", 4)})
    clock.now = 82
    dog.tick({"a": ("unhealthy", 4)})
    clock.now = 101  # healthy in between: back to the first pause; a flap resets the count of unhealthy seconds
    assert dog.tick({"a": ("healthy", 4)}) == []
    clock.now = 102
    assert dog.tick({"a": ("unhealthy", 4)}) == []
    clock.now = 122
    assert dog.tick({"a": ("unhealthy", 4)}) == [("a", "CONT"), ("a", "TERM")]


def _component(platform: Platform, name: str) -> dict:
    components = json.loads(platform.cli("status", "--json").stdout)["components"]
    return next(c for c in components if c["name"] == name)


@pytest.mark.timeout(400)
@pytest.mark.parametrize("name", ["monitoring-agent", "gateway"])
def test_a_hung_component_is_reported_unhealthy_and_restarted(repair, name):
    """SIGSTOP (a hang: the process neither answers nor exits): `status` says unhealthy, the watchdog restarts it,
    and it serves again; for the gateway, the edge answers again."""
    import signal

    pid = _component(repair, name)["pid"]
    os.kill(pid, signal.SIGSTOP)  # the platform's process, by its pid
    try:
        _wait(lambda: _component(repair, name)["state"] == "unhealthy", 120, f"{name} reported unhealthy")
        _wait(lambda: _component(repair, name)["pid"] not in (pid, None), 180, f"{name} restarted")
        _wait(lambda: _component(repair, name)["state"] == "healthy", 180, f"{name} healthy again")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    _wait(lambda: all(state == "healthy" for state in _states(repair).values()), 180, "every component healthy")
    assert repair.ask("list instances in us-central1-a").status_code == 200
    restarts = [line for line in repair.log_lines("watchdog") if line.get("event") == "watchdog_restart"]
    assert any(line.get("component") == name and line.get("pid") == pid for line in restarts), restarts
