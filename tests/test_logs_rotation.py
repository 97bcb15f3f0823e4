"""Rotation as logrotate and supervisord do it, against the real collector and log store (both as processes):
every line that was in a file is stored exactly once.

C1-C3 are the cases seen losing lines before the collector knew files by fingerprint: a truncation followed at
once by as many bytes as were read (C1), by more (C2), and a copytruncate while a writer appends (C3)."""

import os
import shutil
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest
from test_logs_pipeline import Pipeline, running, wait_for

STATUSES = ["ok", "slow", "retry", "done"]


def line(service: str, n: int) -> bytes:
    """A line of a fixed size for every n < 1000, as the issue's cases need."""
    return orjson.dumps({"ts": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()), "level": "info",
                         "service": service, "message": f"line {n:03d}"}) + b"\n"


def append(path: Path, service: str, numbers: range) -> None:
    with open(path, "ab") as f:
        f.write(b"".join(line(service, n) for n in numbers))


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    with running(tmp_path_factory.mktemp("rotation") / "home") as p:
        yield p


def stored(pipeline: Pipeline, service: str) -> list[str]:
    r = httpx.get(f"{pipeline.store_url}/api/logs", params={"service": service, "limit": 5000,
                                                            "direction": "forward"}, timeout=10)
    return [entry["line"]["message"] for entry in r.json()["lines"]]


def settled(pipeline: Pipeline, service: str, path: Path, expected: int) -> list[str]:
    """Every line stored once the sentinel, written last, is: lines of one file are delivered in order."""
    with open(path, "ab") as f:
        f.write(orjson.dumps({"service": service, "message": "sentinel"}) + b"\n")
    wait_for(lambda: "sentinel" in stored(pipeline, service), 30, f"{service}: the sentinel")
    wait_for(lambda: len(stored(pipeline, service)) >= expected + 1, 30, f"{service}: {expected} lines")
    return sorted(m for m in stored(pipeline, service) if m != "sentinel")


def read_by_collector(pipeline: Pipeline, service: str, count: int) -> None:
    wait_for(lambda: len(stored(pipeline, service)) == count, 30, f"{service}: the first {count} lines stored")


def numbers(*ranges: range) -> list[str]:
    return sorted(f"line {n:03d}" for r in ranges for n in r)


def test_c1_truncated_and_rewritten_to_the_same_size_at_once(pipeline):
    log = pipeline.logs / "c1.log"
    append(log, "c1", range(5))
    read_by_collector(pipeline, "c1", 5)
    shutil.copyfile(log, pipeline.logs / "c1.log.1")
    os.truncate(log, 0)
    append(log, "c1", range(5, 10))  # at once, and as many bytes as were read
    assert settled(pipeline, "c1", log, 10) == numbers(range(10))


def test_c2_truncated_and_rewritten_longer_at_once(pipeline):
    log = pipeline.logs / "c2.log"
    append(log, "c2", range(1))
    read_by_collector(pipeline, "c2", 1)
    os.truncate(log, 0)
    append(log, "c2", range(1, 21))
    assert settled(pipeline, "c2", log, 21) == numbers(range(21))


def test_c3_copytruncate_while_a_writer_appends(pipeline):
    """The writer appends (O_APPEND, as loggers do) without pause while the file is copied and truncated. The copy
    and the truncation hold the writer's lock, so no line falls between them (logrotate's own window, where a line
    written after the copy and before the truncation is lost to everyone)."""
    log = pipeline.logs / "c3.log"
    append(log, "c3", range(3))
    read_by_collector(pipeline, "c3", 3)
    lock = threading.Lock()
    written = threading.Event()

    def writer() -> None:
        fd = os.open(log, os.O_WRONLY | os.O_APPEND)
        for n in range(3, 40):
            with lock:
                os.write(fd, line("c3", n))
            if n == 15:
                written.set()
            time.sleep(0.002)
        os.close(fd)

    thread = threading.Thread(target=writer)
    thread.start()
    assert written.wait(10)
    with lock:
        shutil.copyfile(log, pipeline.logs / "c3.log.1")
        os.truncate(log, 0)
    thread.join(10)
    assert settled(pipeline, "c3", log, 40) == numbers(range(40))


def test_copytruncate_under_a_writer_that_does_not_append(pipeline):
    """The writer (no O_APPEND) goes on at its offset after the truncation: the file is a hole of NULs as long as it
    was (here over 256 KiB, the line limit) and then its lines. The first of them was skipped with the hole."""
    log = pipeline.logs / "holey.log"
    fd = os.open(log, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"".join(line("holey", n) for n in range(3_500)))
        assert os.lseek(fd, 0, os.SEEK_CUR) > 256 * 1024
        read_by_collector(pipeline, "holey", 3_500)
        shutil.copyfile(log, pipeline.logs / "holey.log.1")
        os.truncate(log, 0)
        os.write(fd, b"".join(line("holey", n) for n in range(3_500, 3_510)))
    finally:
        os.close(fd)
    assert settled(pipeline, "holey", log, 3_510) == numbers(range(3_510))


def test_rename_rotation_mid_stream(pipeline):
    log = pipeline.logs / "renamed.log"
    append(log, "renamed", range(1))
    read_by_collector(pipeline, "renamed", 1)  # the collector knows the file
    append(log, "renamed", range(1, 30))
    os.rename(log, pipeline.logs / "renamed.log.1")
    append(log, "renamed", range(30, 60))
    assert settled(pipeline, "renamed", log, 60) == numbers(range(60))


def test_a_rotated_file_still_being_written(pipeline):
    """A writer that keeps its file open across the rotation goes on writing to the renamed file."""
    log = pipeline.logs / "lingering.log"
    old_writer = open(log, "ab", buffering=0)  # noqa: SIM115
    old_writer.write(b"".join(line("lingering", n) for n in range(10)))
    read_by_collector(pipeline, "lingering", 10)
    os.rename(log, pipeline.logs / "lingering.log.1")
    append(log, "lingering", range(100, 110))  # the new file
    read_by_collector(pipeline, "lingering", 20)
    old_writer.write(b"".join(line("lingering", n) for n in range(10, 20)))  # the old writer, later
    old_writer.close()
    assert settled(pipeline, "lingering", log, 30) == numbers(range(20), range(100, 110))


def test_a_file_replaced_by_another_of_the_same_size(pipeline):
    log = pipeline.logs / "replaced.log"
    append(log, "replaced", range(5))
    read_by_collector(pipeline, "replaced", 5)
    other = pipeline.logs / "replaced.next"
    append(other, "replaced", range(5, 10))
    assert other.stat().st_size == log.stat().st_size
    os.replace(other, log)
    assert settled(pipeline, "replaced", log, 10) == numbers(range(10))


def test_counters(pipeline):
    """Runs last: the cases above were counted (`truncations_total` stayed 0 before fingerprints)."""
    metrics = httpx.get(f"http://127.0.0.1:{pipeline.collector_port}/metrics").text
    values = {line.split()[0]: float(line.split()[1]) for line in metrics.splitlines()
              if line.startswith(("finopti_collector_truncations_total ", "finopti_collector_rotations_total "))}
    assert values["finopti_collector_truncations_total"] >= 3  # C1, C2, C3
    assert values["finopti_collector_rotations_total"] >= 3  # renamed, lingering, replaced
